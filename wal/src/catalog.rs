//! The log's list of segment files and checkpoints, shared by the writer (rotation), replay,
//! checkpointing and retirement.

use std::path::PathBuf;

use crate::Lsn;
use crate::limits::CHECKPOINTS_KEPT;

/// A segment file of the log.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct SegmentInfo {
    /// LSN of the segment's first record.
    pub first_lsn: Lsn,
    /// The segment's file.
    pub path: PathBuf,
}

/// Segments and checkpoints, oldest first.
#[derive(Debug, Default)]
pub(crate) struct Catalog {
    /// Every segment of the log; the last one is being appended to.
    pub segments: Vec<SegmentInfo>,
    /// LSNs of the checkpoint files kept, oldest first.
    pub checkpoints: Vec<Lsn>,
}

impl Catalog {
    /// The first LSN still in the log.
    pub fn oldest_lsn(&self) -> Lsn {
        self.segments.first().map_or(Lsn::FIRST, |s| s.first_lsn)
    }

    /// The index of the segment that holds `lsn` (the last one whose first LSN is `<= lsn`).
    pub fn segment_index(&self, lsn: Lsn) -> Option<usize> {
        self.segments.partition_point(|s| s.first_lsn <= lsn).checked_sub(1)
    }

    /// Records up to this LSN may leave the log: every kept checkpoint covers them, so a
    /// fallback from the newest checkpoint to the one before still finds its records.
    pub fn retire_watermark(&self) -> Option<Lsn> {
        let kept = self.checkpoints.len();
        kept.checked_sub(CHECKPOINTS_KEPT).and_then(|i| self.checkpoints.get(i)).copied()
    }
}
