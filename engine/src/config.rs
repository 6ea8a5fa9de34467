//! The engine's configuration.

use std::sync::Arc;

use tessera_journal::JournalOptions;
use tessera_wal::WalOptions;

use crate::clock::{Clock, SystemClock};
use crate::error::EngineError;
use crate::payload::PayloadOptions;

/// S3's minimum size of every part but the last.
pub const MIN_PART_BYTES_DEFAULT: u64 = 5 << 20;
/// How long an upload lives without activity, by default: 7 days.
pub const UPLOAD_TTL_MS_DEFAULT: u64 = 7 * DAY_MS_DEFAULT;
/// A day.
pub const DAY_MS_DEFAULT: u64 = 24 * 60 * 60 * 1000;
/// Payloads up to this size ride inline in their WAL record by default.
pub const INLINE_PAYLOAD_BYTES_DEFAULT: u64 = 16 << 10;
/// WAL bytes after which a checkpoint is taken, by default.
pub const CHECKPOINT_WAL_BYTES_DEFAULT: u64 = 64 << 20;
/// The smallest WAL batch the engine accepts: its records (a compaction move, a bucket's
/// creation, a small completion) must fit.
pub const WAL_BATCH_BYTES_MIN: u32 = 4 << 10;
/// Events a slow subscriber may fall behind by before it lags.
pub const EVENTS_CAPACITY_DEFAULT: usize = 4096;
/// Journal entries staged in memory (approximate bytes) before a commit flushes them.
pub const JOURNAL_STAGED_BYTES_DEFAULT: usize = 4 << 20;

/// Options of [`crate::Engine::open`].
#[derive(Clone, Debug)]
pub struct EngineConfig {
    /// The log's options.
    pub wal: WalOptions,
    /// The payload store's options.
    pub payload: PayloadOptions,
    /// Where time comes from.
    pub clock: Arc<dyn Clock>,
    /// An upload expires this long after its creation or its last part.
    pub upload_ttl_ms: u64,
    /// The length of a lifecycle "day" (shorter in tests).
    pub day_ms: u64,
    /// The minimum size of every part but the last at completion.
    pub min_part_bytes: u64,
    /// Payloads of at most this many bytes (with a known length) are carried in their WAL
    /// record instead of a payload segment: one fsync instead of two. 0 turns it off.
    pub inline_payload_bytes_max: u64,
    /// A checkpoint is taken once this many record bytes were logged since the last one.
    pub checkpoint_wal_bytes: u64,
    /// How far a subscriber may fall behind.
    pub events_capacity: usize,
    /// The journal's options; `None` keeps no history (the log's segments then go as soon as
    /// checkpoints cover them).
    pub journal: Option<JournalOptions>,
    /// Journal entries staged in memory (approximate bytes) before a commit makes them
    /// durable; checkpoints make them durable in any case.
    pub journal_staged_bytes_max: usize,
}

impl Default for EngineConfig {
    fn default() -> Self {
        EngineConfig {
            wal: WalOptions::default(),
            payload: PayloadOptions::default(),
            clock: Arc::new(SystemClock),
            upload_ttl_ms: UPLOAD_TTL_MS_DEFAULT,
            day_ms: DAY_MS_DEFAULT,
            min_part_bytes: MIN_PART_BYTES_DEFAULT,
            inline_payload_bytes_max: INLINE_PAYLOAD_BYTES_DEFAULT,
            checkpoint_wal_bytes: CHECKPOINT_WAL_BYTES_DEFAULT,
            events_capacity: EVENTS_CAPACITY_DEFAULT,
            journal: Some(JournalOptions::default()),
            journal_staged_bytes_max: JOURNAL_STAGED_BYTES_DEFAULT,
        }
    }
}

impl EngineConfig {
    pub(crate) fn validate(&self) -> Result<(), EngineError> {
        let reason = if self.day_ms == 0 {
            "day_ms must be positive"
        } else if self.events_capacity == 0 {
            "events_capacity must be positive"
        } else if self.checkpoint_wal_bytes == 0 {
            "checkpoint_wal_bytes must be positive"
        } else if self.wal.batch_bytes_max < WAL_BATCH_BYTES_MIN {
            "the WAL's batch_bytes_max must be at least 4 KiB (a record of the engine must fit)"
        } else if self.inline_payload_bytes_max > u64::from(self.wal.batch_bytes_max) / 2 {
            "inline_payload_bytes_max must be at most half of the WAL's batch_bytes_max"
        } else {
            return Ok(());
        };
        Err(EngineError::InvalidConfig { reason })
    }
}
