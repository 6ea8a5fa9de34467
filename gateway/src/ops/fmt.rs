//! How the offline commands write times and sizes, and read times.

use time::OffsetDateTime;
use time::format_description::well_known::Rfc3339;
use time::macros::format_description;

/// A time given on the command line: RFC 3339 (`2025-01-31T12:00:00Z`, any offset, optional
/// fraction) or Unix milliseconds.
pub fn parse_time_ms(text: &str) -> Result<u64, String> {
    if !text.is_empty() && text.bytes().all(|b| b.is_ascii_digit()) {
        return text.parse::<u64>().map_err(|e| format!("{text:?}: {e}"));
    }
    let at = OffsetDateTime::parse(text, &Rfc3339).map_err(|e| {
        format!("{text:?} is neither RFC 3339 (2025-01-31T12:00:00Z) nor Unix milliseconds: {e}")
    })?;
    u64::try_from(at.unix_timestamp_nanos() / 1_000_000)
        .map_err(|_| format!("{text:?} is before 1970"))
}

/// Milliseconds since the epoch as `2025-01-31T12:00:00.000Z` (always 24 characters, so
/// columns line up).
pub fn time_ms(ms: u64) -> String {
    let nanos = i128::from(ms) * 1_000_000;
    let format =
        format_description!("[year]-[month]-[day]T[hour]:[minute]:[second].[subsecond digits:3]Z");
    OffsetDateTime::from_unix_timestamp_nanos(nanos)
        .ok()
        .and_then(|at| at.format(format).ok())
        .unwrap_or_else(|| format!("{ms} ms"))
}

/// A size for people: `512 B`, `12.3 KiB`, `4.0 GiB`.
pub fn bytes(n: u64) -> String {
    const UNITS: [&str; 5] = ["KiB", "MiB", "GiB", "TiB", "PiB"];
    if n < 1024 {
        return format!("{n} B");
    }
    #[expect(clippy::cast_precision_loss, reason = "a size shown with one decimal")]
    let mut value = n as f64 / 1024.0;
    let mut unit = UNITS.first().copied().unwrap_or("KiB");
    for next in UNITS.iter().skip(1) {
        if value < 1024.0 {
            break;
        }
        value /= 1024.0;
        unit = next;
    }
    format!("{value:.1} {unit}")
}

/// Lines of `label  value`, the values aligned in one column.
#[derive(Debug, Default)]
pub struct Lines {
    rows: Vec<(String, String)>,
}

impl Lines {
    /// Adds a line.
    pub fn add(&mut self, label: impl Into<String>, value: impl Into<String>) {
        self.rows.push((label.into(), value.into()));
    }

    /// The lines, each ending in a newline.
    pub fn render(&self) -> String {
        let width = self.rows.iter().map(|(label, _)| label.chars().count()).max().unwrap_or(0);
        let mut out = String::new();
        for (label, value) in &self.rows {
            out.push_str(&format!("{label:<width$}  {value}\n"));
        }
        out
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]

    use super::*;

    #[test]
    fn times_read_as_rfc3339_or_unix_ms_and_print_as_utc() {
        assert_eq!(parse_time_ms("1700000000123").unwrap(), 1_700_000_000_123);
        assert_eq!(parse_time_ms("2023-11-14T22:13:20.123Z").unwrap(), 1_700_000_000_123);
        assert_eq!(parse_time_ms("2023-11-14T23:13:20.123+01:00").unwrap(), 1_700_000_000_123);
        assert!(parse_time_ms("yesterday").is_err());
        assert!(parse_time_ms("").is_err());
        assert_eq!(time_ms(1_700_000_000_123), "2023-11-14T22:13:20.123Z");
        assert_eq!(time_ms(0), "1970-01-01T00:00:00.000Z");
    }

    #[test]
    fn sizes_print_with_binary_units() {
        assert_eq!(bytes(0), "0 B");
        assert_eq!(bytes(1023), "1023 B");
        assert_eq!(bytes(1536), "1.5 KiB");
        assert_eq!(bytes(5 << 30), "5.0 GiB");
    }

    #[test]
    fn lines_align_their_values() {
        let mut lines = Lines::default();
        lines.add("a", "1");
        lines.add("longer", "2");
        assert_eq!(lines.render(), "a       1\nlonger  2\n");
    }
}
