//! Counters of the log's batches, for metrics and benchmarks: how well group commit groups,
//! and what the disk's syncs cost.

use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

/// What the log has written since it opened.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
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
    }

    pub fn snapshot(&self) -> WalStats {
        WalStats {
            batches: self.batches.load(Ordering::Relaxed),
            records: self.records.load(Ordering::Relaxed),
            bytes: self.bytes.load(Ordering::Relaxed),
            sync_time: Duration::from_nanos(self.sync_ns.load(Ordering::Relaxed)),
            sync_time_max: Duration::from_nanos(self.sync_ns_max.load(Ordering::Relaxed)),
        }
    }
}
