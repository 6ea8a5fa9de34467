//! Counters of the log's batches, for metrics and benchmarks: how well group commit groups,
//! and what the disk's syncs cost.

use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

/// Buckets of the histograms: bucket `i` counts values `v` with `2^(i-1) <= v < 2^i` (bucket 0
/// counts zeros), the last one everything from `2^(BUCKETS-2)` up.
pub const HISTOGRAM_BUCKETS: usize = 28;

/// A log2 histogram's bucket for `value`.
fn bucket(value: u64) -> usize {
    let bits = (u64::BITS - value.leading_zeros()) as usize;
    bits.min(HISTOGRAM_BUCKETS - 1)
}

/// The exclusive upper bound of bucket `i` of a log2 histogram (`None` for the last one, which
/// has none).
pub fn histogram_bucket_bound(i: usize) -> Option<u64> {
    (i + 1 < HISTOGRAM_BUCKETS).then(|| 1u64 << i)
}

/// What the log has written since it opened.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct WalStats {
    /// Batches written (one write and one fdatasync each).
    pub batches: u64,
    /// Records in them.
    pub records: u64,
    /// Frame bytes in them.
    pub bytes: u64,
    /// Time spent in the batches' fdatasyncs, in all.
    pub sync_time: Duration,
    /// The longest fdatasync.
    pub sync_time_max: Duration,
    /// The fdatasyncs by duration in microseconds (log2 buckets: [`histogram_bucket_bound`]).
    pub sync_us_histogram: [u64; HISTOGRAM_BUCKETS],
    /// The batches by their number of records (log2 buckets: [`histogram_bucket_bound`]).
    pub batch_records_histogram: [u64; HISTOGRAM_BUCKETS],
}

impl Default for WalStats {
    fn default() -> WalStats {
        WalStats {
            batches: 0,
            records: 0,
            bytes: 0,
            sync_time: Duration::ZERO,
            sync_time_max: Duration::ZERO,
            sync_us_histogram: [0; HISTOGRAM_BUCKETS],
            batch_records_histogram: [0; HISTOGRAM_BUCKETS],
        }
    }
}

impl WalStats {
    /// Records per batch, on average (0 before the first batch).
    pub fn records_per_batch(&self) -> f64 {
        if self.batches == 0 { 0.0 } else { self.records as f64 / self.batches as f64 }
    }
}

/// The live counters (written by the leader, read by anyone).
#[derive(Debug, Default)]
pub(crate) struct Counters {
    batches: AtomicU64,
    records: AtomicU64,
    bytes: AtomicU64,
    sync_ns: AtomicU64,
    sync_ns_max: AtomicU64,
    sync_us_histogram: [AtomicU64; HISTOGRAM_BUCKETS],
    batch_records_histogram: [AtomicU64; HISTOGRAM_BUCKETS],
}

impl Counters {
    /// Counts one batch of `records` records and `bytes` bytes whose fdatasync took `sync`.
    pub fn batch(&self, records: u64, bytes: u64, sync: Duration) {
        let sync_ns = u64::try_from(sync.as_nanos()).unwrap_or(u64::MAX);
        self.batches.fetch_add(1, Ordering::Relaxed);
        self.records.fetch_add(records, Ordering::Relaxed);
        self.bytes.fetch_add(bytes, Ordering::Relaxed);
        self.sync_ns.fetch_add(sync_ns, Ordering::Relaxed);
        self.sync_ns_max.fetch_max(sync_ns, Ordering::Relaxed);
        let sync_us = u64::try_from(sync.as_micros()).unwrap_or(u64::MAX);
        for (histogram, value) in
            [(&self.sync_us_histogram, sync_us), (&self.batch_records_histogram, records)]
        {
            if let Some(count) = histogram.get(bucket(value)) {
                count.fetch_add(1, Ordering::Relaxed);
            }
        }
    }

    pub fn snapshot(&self) -> WalStats {
        WalStats {
            batches: self.batches.load(Ordering::Relaxed),
            records: self.records.load(Ordering::Relaxed),
            bytes: self.bytes.load(Ordering::Relaxed),
            sync_time: Duration::from_nanos(self.sync_ns.load(Ordering::Relaxed)),
            sync_time_max: Duration::from_nanos(self.sync_ns_max.load(Ordering::Relaxed)),
            sync_us_histogram: self.sync_us_histogram.each_ref().map(|c| c.load(Ordering::Relaxed)),
            batch_records_histogram: self
                .batch_records_histogram
                .each_ref()
                .map(|c| c.load(Ordering::Relaxed)),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn log2_buckets_hold_their_bounds() {
        assert_eq!(bucket(0), 0);
        assert_eq!(bucket(1), 1);
        for i in 1..HISTOGRAM_BUCKETS - 1 {
            let bound = histogram_bucket_bound(i).unwrap();
            assert_eq!(bucket(bound - 1), i, "below the bound of {i}");
            assert_eq!(bucket(bound), i + 1, "at the bound of {i}");
        }
        assert_eq!(bucket(u64::MAX), HISTOGRAM_BUCKETS - 1);
        assert_eq!(histogram_bucket_bound(HISTOGRAM_BUCKETS - 1), None);
    }

    #[test]
    fn a_batch_lands_in_one_bucket_of_each_histogram() {
        let counters = Counters::default();
        counters.batch(5, 100, Duration::from_micros(300));
        counters.batch(1, 10, Duration::from_micros(0));
        let stats = counters.snapshot();
        assert_eq!(stats.batch_records_histogram[bucket(5)], 1);
        assert_eq!(stats.batch_records_histogram[1], 1);
        assert_eq!(stats.sync_us_histogram[bucket(300)], 1);
        assert_eq!(stats.sync_us_histogram[0], 1);
        assert_eq!(stats.sync_us_histogram.iter().sum::<u64>(), 2);
        assert_eq!((stats.batches, stats.records, stats.bytes), (2, 6, 110));
    }
}
