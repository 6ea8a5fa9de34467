//! How a log is configured.

use crate::error::WalError;
use crate::limits::{
    BATCH_BYTES_DEFAULT, PENDING_BYTES_DEFAULT, SEGMENT_BYTES_DEFAULT, SEGMENT_BYTES_MAX,
};
use crate::segment::{SEGMENT_HEADER_BYTES, valid_batch_bytes_max};

/// Options of [`crate::Wal::open`].
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct WalOptions {
    /// Size at which a segment is full and the next batch starts a new one.
    pub segment_bytes: u64,
    /// Upper bound on one batch (one write, one fdatasync); also the torn window recovery
    /// believes, and, less a frame header, the largest record.
    pub batch_bytes_max: u32,
    /// Bound on bytes appended but not yet taken by a batch: appends wait beyond it.
    pub pending_bytes_max: u64,
    /// Whether a new segment reserves its full size up front (`fallocate`): overwriting
    /// reserved space needs no size update at each fdatasync, which is faster on most disks.
    pub preallocate: bool,
    /// Seed of the segments' salts; `None` draws one at each open. Tests fix it so that a run
    /// writes the same bytes each time.
    pub salt_seed: Option<u64>,
}

impl Default for WalOptions {
    fn default() -> Self {
        WalOptions {
            segment_bytes: SEGMENT_BYTES_DEFAULT,
            batch_bytes_max: BATCH_BYTES_DEFAULT,
            pending_bytes_max: PENDING_BYTES_DEFAULT,
            preallocate: true,
            salt_seed: None,
        }
    }
}

impl WalOptions {
    pub(crate) fn validate(&self) -> Result<(), WalError> {
        let reason = if !valid_batch_bytes_max(self.batch_bytes_max) {
            "batch_bytes_max must be a multiple of 8 within BATCH_BYTES_MIN..=BATCH_BYTES_LIMIT"
        } else if self.segment_bytes < SEGMENT_HEADER_BYTES as u64 + u64::from(self.batch_bytes_max)
        {
            "segment_bytes must hold a segment header and one full batch"
        } else if self.segment_bytes > SEGMENT_BYTES_MAX {
            "segment_bytes must not exceed SEGMENT_BYTES_MAX"
        } else if self.pending_bytes_max < u64::from(self.batch_bytes_max) {
            "pending_bytes_max must hold at least one full batch"
        } else {
            return Ok(());
        };
        Err(WalError::InvalidOptions { reason })
    }
}
