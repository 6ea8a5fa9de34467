//! Tessera's write-ahead log.
//!
//! A log is a directory of segment files holding framed records (each with an LSN and a
//! CRC), plus checkpoint files holding a caller's snapshot at an LSN. Appends from many threads
//! share one write and one fdatasync per batch (group commit); a caller gets `Ok` from
//! [`Wal::append_durable`] (or [`Wal::wait_durable`]) only once its record is synced. Opening a
//! log loads the newest valid checkpoint, checks every frame of every segment and settles the
//! end of the last one: a torn, unacknowledged write there is zeroed, while damage that cannot
//! be one (or a missing segment) fails `open` with the file, the offset and the reason.
//! [`Wal::replay`] checks every frame again as it reads it. [`repair`] is the explicit way past
//! such damage.
//!
//! All file I/O goes through the [`Fs`] seam: [`StdFs`] for the real file system, [`SimFs`] to
//! simulate power loss, ENOSPC and EIO at any call.
//!
//! The bytes on disk are specified in docs/format.md; the recovery argument in docs/design.md.

#![cfg_attr(test, allow(clippy::cast_possible_truncation))]

mod bytes;
mod catalog;
mod checkpoint;
mod error;
mod frame;
mod group_commit;
mod io;
mod io_sim;
mod io_std;
mod limits;
mod lsn;
mod options;
mod recovery;
mod repair;
mod replay;
mod segment;
mod stats;
mod tail;
mod wal;
mod writer;

pub use crate::bytes::SharedBytes;
pub use crate::catalog::SegmentInfo;
pub use crate::checkpoint::{
    CHECKPOINT_HEADER_BYTES, Checkpoint, SkippedCheckpoint, check_checkpoint,
};
pub use crate::error::{Corruption, PoisonCause, WalError};
pub use crate::frame::{FRAME_HEADER_BYTES, frame_bytes};
pub use crate::group_commit::OnDurable;
pub use crate::io::{Fs, FsFile, Mapping, OpenMode, create_dir_all_durable};
pub use crate::io_sim::{CrashMode, SimFs};
pub use crate::io_std::StdFs;
pub use crate::limits::*;
pub use crate::lsn::Lsn;
pub use crate::options::WalOptions;
pub use crate::recovery::{OpenReport, TornTail};
pub use crate::repair::{BROKEN_SUFFIX, RepairCut, RepairReport, repair};
pub use crate::replay::{Record, Replay};
pub use crate::segment::{FORMAT_VERSION, SEGMENT_HEADER_BYTES};
pub use crate::stats::{HISTOGRAM_BUCKETS, WalStats, histogram_bucket_bound};
pub use crate::wal::{HookError, Opened, SealedSegment, Wal};
