//! The part-size rule of `tessera cp`: how a file of a given size is cut into parts.
//!
//! S3 allows parts of 5 MiB to 5 GiB (all but the last) and at most 10,000 of them. Within
//! those bounds the rule takes the preferred size (8 MiB, as the aws cli does, or
//! `--part-size`), grows it until the file fits in 10,000 parts, and keeps
//! `part size × concurrency` within `--max-memory`, lowering the concurrency first and the part
//! size second. A file smaller than one part goes up with one PutObject.

use std::fmt;

/// S3's smallest part (all parts but the last).
pub const PART_BYTES_MIN_S3: u64 = 5 << 20;
/// S3's largest part.
pub const PART_BYTES_MAX: u64 = 5 << 30;
/// S3's largest part number, and so the most parts an object can have.
pub const PART_COUNT_MAX: u64 = 10_000;
/// The part size taken when nothing forces another (the aws cli's default chunk size).
pub const PART_BYTES_PREFERRED: u64 = 8 << 20;
/// `--max-memory`'s default: part size × concurrency never exceeds it.
pub const MEMORY_BYTES_MAX_DEFAULT: u64 = 256 << 20;
/// `--concurrency`'s default.
pub const CONCURRENCY_DEFAULT: u32 = 8;
/// Parts above this size are rounded to whole multiples of it (below it, of the minimum).
const PART_ROUNDING_BYTES: u64 = 1 << 20;

const _: () = assert!(PART_BYTES_MIN_S3 <= PART_BYTES_PREFERRED);
const _: () = assert!(PART_BYTES_PREFERRED <= PART_BYTES_MAX);
const _: () =
    assert!(PART_BYTES_PREFERRED * CONCURRENCY_DEFAULT as u64 <= MEMORY_BYTES_MAX_DEFAULT);

/// What the rule works within.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Limits {
    /// The smallest part the server takes (S3: 5 MiB; `--min-part-size` for tests).
    pub part_bytes_min: u64,
    /// The part size wanted (`--part-size`), if any; otherwise `PART_BYTES_PREFERRED`.
    pub part_bytes_wanted: Option<u64>,
    /// `--max-memory`.
    pub memory_bytes_max: u64,
    /// `--concurrency`: at most this many parts in flight.
    pub concurrency_max: u32,
}

impl Default for Limits {
    fn default() -> Self {
        Limits {
            part_bytes_min: PART_BYTES_MIN_S3,
            part_bytes_wanted: None,
            memory_bytes_max: MEMORY_BYTES_MAX_DEFAULT,
            concurrency_max: CONCURRENCY_DEFAULT,
        }
    }
}

/// How a file is cut.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Plan {
    /// The size of every part but the last.
    pub part_bytes: u64,
    /// How many parts (1 for a single PutObject, even of 0 bytes).
    pub part_count: u32,
    /// Parts in flight at most (never more than `part_count`).
    pub concurrency: u32,
    /// True when the file goes up with one PutObject: it is smaller than one part.
    pub single: bool,
}

impl Plan {
    /// The byte range `offset..offset + len` of part `number` (1-based) of a file of
    /// `size_bytes`.
    pub fn part_range(&self, number: u32, size_bytes: u64) -> (u64, u64) {
        part_range(self.part_bytes, number, size_bytes)
    }
}

/// The range of part `number` (1-based) when parts are `part_bytes` long.
pub fn part_range(part_bytes: u64, number: u32, size_bytes: u64) -> (u64, u64) {
    let offset = part_bytes.saturating_mul(u64::from(number.saturating_sub(1)));
    let offset = offset.min(size_bytes);
    (offset, part_bytes.min(size_bytes - offset))
}

/// Why no plan fits.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum PlanError {
    /// A limit is out of range (zero concurrency, a minimum part above S3's maximum...).
    BadLimits {
        /// Which limit.
        what: &'static str,
    },
    /// Even 10,000 parts of 5 GiB cannot hold the file.
    TooLarge {
        /// The file's size.
        size_bytes: u64,
    },
    /// The smallest part that fits the file does not fit in `--max-memory`.
    MemoryTooSmall {
        /// The smallest part size that keeps the file within 10,000 parts.
        part_bytes_needed: u64,
        /// `--max-memory`.
        memory_bytes_max: u64,
    },
}

impl fmt::Display for PlanError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            PlanError::BadLimits { what } => write!(f, "{what} is out of range"),
            PlanError::TooLarge { size_bytes } => write!(
                f,
                "{size_bytes} bytes do not fit in {PART_COUNT_MAX} parts of at most \
                 {PART_BYTES_MAX} bytes"
            ),
            PlanError::MemoryTooSmall { part_bytes_needed, memory_bytes_max } => write!(
                f,
                "the file needs parts of at least {part_bytes_needed} bytes, more than \
                 --max-memory ({memory_bytes_max} bytes) holds"
            ),
        }
    }
}

impl std::error::Error for PlanError {}

/// The plan for a file of `size_bytes` within `limits`.
pub fn plan(size_bytes: u64, limits: &Limits) -> Result<Plan, PlanError> {
    if limits.part_bytes_min == 0 || limits.part_bytes_min > PART_BYTES_MAX {
        return Err(PlanError::BadLimits { what: "the minimum part size" });
    }
    if limits.concurrency_max == 0 {
        return Err(PlanError::BadLimits { what: "the concurrency" });
    }
    if limits.part_bytes_wanted == Some(0) {
        return Err(PlanError::BadLimits { what: "the part size" });
    }
    // The smallest part that keeps the file within 10,000 parts.
    let lower = limits.part_bytes_min.max(size_bytes.div_ceil(PART_COUNT_MAX));
    if lower > PART_BYTES_MAX {
        return Err(PlanError::TooLarge { size_bytes });
    }
    // One part must fit in memory; `concurrency` of them should.
    let upper = PART_BYTES_MAX.min(limits.memory_bytes_max);
    if lower > upper {
        return Err(PlanError::MemoryTooSmall {
            part_bytes_needed: lower,
            memory_bytes_max: limits.memory_bytes_max,
        });
    }
    let per_connection = limits.memory_bytes_max / u64::from(limits.concurrency_max);
    let wanted = limits.part_bytes_wanted.unwrap_or(PART_BYTES_PREFERRED);
    let mut part_bytes = wanted.clamp(lower, upper);
    if limits.part_bytes_wanted.is_none() {
        // Without a wanted size, memory lowers the part size before it lowers concurrency.
        part_bytes = part_bytes.min(per_connection).max(lower);
        let rounding = limits.part_bytes_min.min(PART_ROUNDING_BYTES);
        let rounded = part_bytes.div_ceil(rounding).saturating_mul(rounding);
        if rounded <= upper && (rounded <= per_connection || part_bytes > per_connection) {
            part_bytes = rounded;
        }
    }
    let single = size_bytes < part_bytes;
    let part_count = if single { 1 } else { size_bytes.div_ceil(part_bytes) };
    let part_count = u32::try_from(part_count).map_err(|_| PlanError::TooLarge { size_bytes })?;
    let memory_parts = u32::try_from(limits.memory_bytes_max / part_bytes).unwrap_or(u32::MAX);
    let concurrency = limits.concurrency_max.min(memory_parts).min(part_count).max(1);
    let plan = Plan { part_bytes, part_count, concurrency, single };
    // Invariants the server and the memory budget rely on.
    assert!(part_bytes >= limits.part_bytes_min && part_bytes <= PART_BYTES_MAX);
    assert!(u64::from(part_count) <= PART_COUNT_MAX);
    assert!(part_bytes.saturating_mul(u64::from(concurrency)) <= limits.memory_bytes_max);
    Ok(plan)
}

/// Parses a byte count: a number with an optional unit (`K`, `M`, `G`, `T`, with or without
/// `iB`/`B`, all powers of 1024), as `--max-memory 256MiB`.
pub fn parse_bytes(text: &str) -> Result<u64, String> {
    let text = text.trim();
    let digits = text.find(|c: char| !c.is_ascii_digit()).unwrap_or(text.len());
    let (number, unit) = text.split_at(digits);
    let number: u64 = number.parse().map_err(|_| format!("{text:?} is not a byte count"))?;
    let shift = match unit.trim().to_ascii_lowercase().as_str() {
        "" | "b" => 0,
        "k" | "kb" | "kib" => 10,
        "m" | "mb" | "mib" => 20,
        "g" | "gb" | "gib" => 30,
        "t" | "tb" | "tib" => 40,
        other => return Err(format!("unknown unit {other:?} in {text:?}")),
    };
    number.checked_mul(1 << shift).ok_or_else(|| format!("{text:?} is too large"))
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used, clippy::indexing_slicing, clippy::panic)]

    use proptest::prelude::*;

    use super::*;

    const MIB: u64 = 1 << 20;

    #[test]
    fn one_gib_goes_up_in_eight_mib_parts_from_eight_connections() {
        let p = plan(1 << 30, &Limits::default()).unwrap();
        assert_eq!(p, Plan { part_bytes: 8 * MIB, part_count: 128, concurrency: 8, single: false });
    }

    #[test]
    fn a_file_below_one_part_goes_up_in_one_put() {
        for size in [0, 1, 8 * MIB - 1] {
            let p = plan(size, &Limits::default()).unwrap();
            assert!(p.single, "{size}");
            assert_eq!((p.part_count, p.concurrency), (1, 1));
        }
        let p = plan(8 * MIB, &Limits::default()).unwrap();
        assert!(!p.single);
        assert_eq!(p.part_count, 1);
    }

    #[test]
    fn a_large_file_takes_larger_parts_to_stay_within_ten_thousand() {
        let p = plan(100 << 30, &Limits::default()).unwrap();
        assert_eq!(p.part_bytes, 11 * MIB);
        assert_eq!(p.part_count, 9310);
        // 11 MiB × 8 fits in 256 MiB; 1 TiB needs 105 MiB parts, so two at a time.
        let p = plan(1 << 40, &Limits::default()).unwrap();
        assert_eq!((p.part_bytes, p.concurrency), (105 * MIB, 2));
    }

    #[test]
    fn ten_thousand_and_one_minimum_parts_are_cut_into_larger_ones() {
        let limits =
            Limits { part_bytes_min: 1024, part_bytes_wanted: Some(1024), ..Limits::default() };
        let p = plan(10_001 * 1024, &limits).unwrap();
        assert_eq!(p.part_bytes, 1025);
        assert_eq!(p.part_count, 9992);
        // Without a wanted size, the preferred 8 MiB applies.
        let limits = Limits { part_bytes_min: 1024, ..Limits::default() };
        let p = plan(10_001 * 1024, &limits).unwrap();
        assert_eq!((p.part_bytes, p.part_count), (8 * MIB, 2));
    }

    #[test]
    fn memory_lowers_parts_then_concurrency_and_refuses_what_cannot_fit() {
        let limits = Limits { memory_bytes_max: 20 * MIB, ..Limits::default() };
        let p = plan(1 << 30, &limits).unwrap();
        assert_eq!((p.part_bytes, p.concurrency), (5 * MIB, 4));
        let limits = Limits { memory_bytes_max: 4 * MIB, ..Limits::default() };
        assert_eq!(
            plan(1 << 30, &limits),
            Err(PlanError::MemoryTooSmall {
                part_bytes_needed: 5 * MIB,
                memory_bytes_max: 4 * MIB
            })
        );
        let size = 10_000 * PART_BYTES_MAX + 1;
        assert_eq!(plan(size, &Limits::default()), Err(PlanError::TooLarge { size_bytes: size }));
    }

    #[test]
    fn byte_counts_parse_with_binary_units() {
        assert_eq!(parse_bytes("256MiB"), Ok(256 * MIB));
        assert_eq!(parse_bytes("8m"), Ok(8 * MIB));
        assert_eq!(parse_bytes("1024"), Ok(1024));
        assert_eq!(parse_bytes("1 G"), Ok(1 << 30));
        assert!(parse_bytes("12 parsecs").is_err());
        assert!(parse_bytes("").is_err());
    }

    proptest! {
        /// Every plan keeps S3's limits and the memory budget, covers the file exactly, and a
        /// refusal happens only when no plan could fit.
        #[test]
        fn every_plan_keeps_the_limits(
            size in prop_oneof![0u64..=64 * MIB, 0u64..=10_000 * PART_BYTES_MAX + 1],
            min_shift in 0u32..=23,
            memory in prop_oneof![1u64..=64 * MIB, 1u64..=64 << 30],
            concurrency in 1u32..=64,
            wanted in proptest::option::of(1u64..=64 * MIB),
        ) {
            let part_bytes_min = (1u64 << min_shift).min(PART_BYTES_MIN_S3);
            let limits = Limits {
                part_bytes_min,
                part_bytes_wanted: wanted,
                memory_bytes_max: memory,
                concurrency_max: concurrency,
            };
            let lower = part_bytes_min.max(size.div_ceil(PART_COUNT_MAX));
            match plan(size, &limits) {
                Ok(p) => {
                    prop_assert!(p.part_bytes >= part_bytes_min);
                    prop_assert!(p.part_bytes <= PART_BYTES_MAX);
                    prop_assert!(u64::from(p.part_count) <= PART_COUNT_MAX);
                    prop_assert!(p.part_bytes * u64::from(p.concurrency) <= memory);
                    prop_assert!(p.concurrency >= 1 && p.concurrency <= concurrency);
                    prop_assert!(p.concurrency <= p.part_count);
                    prop_assert_eq!(p.single, size < p.part_bytes);
                    if !p.single {
                        let n = u64::from(p.part_count);
                        prop_assert!(n * p.part_bytes >= size && (n - 1) * p.part_bytes < size);
                        let (offset, len) = p.part_range(p.part_count, size);
                        prop_assert_eq!(offset + len, size);
                        prop_assert!(len > 0);
                    }
                }
                Err(PlanError::TooLarge { .. }) => prop_assert!(lower > PART_BYTES_MAX),
                Err(PlanError::MemoryTooSmall { part_bytes_needed, .. }) => {
                    prop_assert_eq!(part_bytes_needed, lower);
                    prop_assert!(lower > memory);
                }
                Err(e) => prop_assert!(false, "unexpected {e}"),
            }
        }
    }
}
