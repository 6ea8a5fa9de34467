//! The log's errors: each variant is a situation a caller can act on.

use std::error::Error as StdError;
use std::fmt;
use std::io;
use std::path::PathBuf;
use std::sync::Arc;

use crate::Lsn;

/// Everything the log can fail with.
#[derive(Debug, thiserror::Error)]
pub enum WalError {
    /// A file operation failed.
    #[error("{}: {op} failed: {source}", .path.display())]
    Io {
        /// The file or directory operated on.
        path: PathBuf,
        /// The operation, in the seam's words (`open`, `write`, `sync_data`, ...).
        op: &'static str,
        /// What the operating system (or the simulator) said.
        #[source]
        source: io::Error,
    },
    /// Bytes on disk are damaged where they cannot be a torn, unacknowledged write.
    #[error("{}: corrupt at offset {offset_bytes}: {reason}", .path.display())]
    Corrupt {
        /// The damaged file.
        path: PathBuf,
        /// Where the damage starts.
        offset_bytes: u64,
        /// What was wrong.
        reason: Corruption,
    },
    /// An earlier write or fsync failed; the log accepts no more appends until it is reopened.
    #[error("the log is poisoned by an earlier failure ({first}); reopen it to recover from disk")]
    Poisoned {
        /// The first failure, which poisoned the log.
        first: Arc<PoisonCause>,
    },
    /// A record is larger than the log's limit.
    #[error("a record of {bytes} bytes exceeds this log's limit of {max_bytes} bytes")]
    RecordTooLarge {
        /// The record's size.
        bytes: u64,
        /// The limit (the batch bound less one frame header).
        max_bytes: u64,
    },
    /// A record must carry at least one byte (length 0 is reserved for unwritten space).
    #[error("a record must carry at least one byte")]
    EmptyRecord,
    /// A caller waited for an LSN that was never appended.
    #[error("lsn {lsn} was never appended (the last appended is {last})")]
    NotAppended {
        /// The LSN asked for.
        lsn: Lsn,
        /// The last LSN appended so far.
        last: Lsn,
    },
    /// Replay asked for records that were retired with their segments.
    #[error("lsn {lsn} is no longer in the log: its oldest segment starts at lsn {oldest}")]
    Retired {
        /// The LSN asked for.
        lsn: Lsn,
        /// The first LSN still in the log.
        oldest: Lsn,
    },
    /// A checkpoint was offered for records that are not durable.
    #[error("a checkpoint at lsn {lsn} covers records that are not durable (durable: {durable})")]
    CheckpointBeyondDurable {
        /// The checkpoint's LSN.
        lsn: Lsn,
        /// The log's durable LSN.
        durable: Lsn,
    },
    /// A checkpoint was offered that is not newer than the newest one.
    #[error("a checkpoint at lsn {lsn} is not newer than the newest checkpoint, at lsn {newest}")]
    CheckpointNotNewer {
        /// The checkpoint's LSN.
        lsn: Lsn,
        /// The newest checkpoint's LSN.
        newest: Lsn,
    },
    /// A checkpoint blob is larger than the format allows.
    #[error("a checkpoint blob of {bytes} bytes exceeds the limit of {max_bytes} bytes")]
    CheckpointTooLarge {
        /// The blob's size.
        bytes: u64,
        /// `CHECKPOINT_BLOB_BYTES_MAX`.
        max_bytes: u64,
    },
    /// The options given to `open` cannot work.
    #[error("invalid log options: {reason}")]
    InvalidOptions {
        /// Which option is wrong, and why.
        reason: &'static str,
    },
    /// The retirement hook refused a segment; it was kept.
    #[error("{}: the retirement hook failed, the segment is kept: {source}", .path.display())]
    RetireHook {
        /// The segment the hook was given.
        path: PathBuf,
        /// The hook's error.
        #[source]
        source: Box<dyn StdError + Send + Sync>,
    },
}

impl WalError {
    pub(crate) fn io(path: impl Into<PathBuf>, op: &'static str, source: io::Error) -> WalError {
        WalError::Io { path: path.into(), op, source }
    }

    pub(crate) fn corrupt(path: impl Into<PathBuf>, offset_bytes: u64, reason: Corruption) -> Self {
        WalError::Corrupt { path: path.into(), offset_bytes, reason }
    }

    /// The corruption reason, if this is a corruption report.
    pub fn corruption(&self) -> Option<(&std::path::Path, u64, &Corruption)> {
        match self {
            WalError::Corrupt { path, offset_bytes, reason } => Some((path, *offset_bytes, reason)),
            _ => None,
        }
    }
}

/// The failed write or fsync that poisoned the log.
#[derive(Debug)]
pub struct PoisonCause {
    /// The file or directory.
    pub path: PathBuf,
    /// The operation that failed.
    pub op: &'static str,
    /// What the operating system said.
    pub source: io::Error,
}

impl fmt::Display for PoisonCause {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{} of {} failed: {}", self.op, self.path.display(), self.source)
    }
}

impl StdError for PoisonCause {
    fn source(&self) -> Option<&(dyn StdError + 'static)> {
        Some(&self.source)
    }
}

/// What was wrong with damaged bytes. Offsets and LSNs inside are those of the file named by the
/// enclosing [`WalError::Corrupt`].
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
pub enum Corruption {
    /// The file does not start with the magic number of its kind.
    #[error("bad magic number {found:02x?}")]
    BadMagic {
        /// The bytes found.
        found: [u8; 8],
    },
    /// The file's format version is not one this build reads.
    #[error("format version {found} is not supported (this build reads version {supported})")]
    UnsupportedVersion {
        /// The version found.
        found: u32,
        /// The version this build reads and writes.
        supported: u32,
    },
    /// A file header's CRC does not match its bytes.
    #[error("header crc mismatch: stored {stored:#010x}, computed {computed:#010x}")]
    HeaderCrc {
        /// The CRC stored in the header.
        stored: u32,
        /// The CRC of the bytes read.
        computed: u32,
    },
    /// A header field holds a value outside its valid range.
    #[error("header field {field} holds {found}, outside its valid range")]
    HeaderField {
        /// The field's name in docs/format.md.
        field: &'static str,
        /// The value read.
        found: u64,
    },
    /// The file is shorter than its header.
    #[error("file of {file_bytes} bytes is shorter than its {header_bytes}-byte header")]
    ShortHeader {
        /// The file's length.
        file_bytes: u64,
        /// The header's length.
        header_bytes: u64,
    },
    /// A segment's file name and header disagree on its first LSN.
    #[error("file name says first lsn {name}, header says {header}")]
    NameMismatch {
        /// LSN from the file name.
        name: Lsn,
        /// LSN from the header.
        header: Lsn,
    },
    /// Fewer bytes than a frame header remain, and they are not all zero.
    #[error("truncated frame header: {left_bytes} bytes left, not all zero")]
    TruncatedHeader {
        /// Bytes left in the file.
        left_bytes: u64,
    },
    /// A frame's kind is not a known kind.
    #[error("unknown frame kind {kind}")]
    UnknownKind {
        /// The kind byte read.
        kind: u8,
    },
    /// A frame's reserved bytes are not zero.
    #[error("nonzero reserved bytes in frame header")]
    ReservedNotZero,
    /// A frame's payload length is outside 1..=the segment's record limit.
    #[error("frame payload length {payload_bytes} is outside 1..={max_bytes}")]
    LengthOutOfRange {
        /// The length read.
        payload_bytes: u64,
        /// The limit for this segment.
        max_bytes: u64,
    },
    /// A frame's length runs past the end of the file.
    #[error("frame of {frame_bytes} bytes runs past the end of the file ({left_bytes} bytes left)")]
    PastEnd {
        /// The frame's length, header and padding included.
        frame_bytes: u64,
        /// Bytes left in the file.
        left_bytes: u64,
    },
    /// A frame's batch index is impossible for its LSN or batch bound.
    #[error("frame batch index {batch_index} is impossible for lsn {lsn}")]
    BatchIndexOutOfRange {
        /// The index read.
        batch_index: u32,
        /// The frame's LSN.
        lsn: Lsn,
    },
    /// A frame's CRC does not match its header and payload.
    #[error("frame crc mismatch: stored {stored:#010x}, computed {computed:#010x}")]
    FrameCrc {
        /// The CRC stored in the frame.
        stored: u32,
        /// The CRC of the bytes read.
        computed: u32,
    },
    /// A frame's padding is not zero.
    #[error("nonzero padding after the frame's payload")]
    PaddingNotZero,
    /// A valid frame carries an LSN other than the next one.
    #[error("frame carries lsn {found}, expected lsn {expected}")]
    LsnOutOfOrder {
        /// The LSN that should come next.
        expected: Lsn,
        /// The LSN the frame carries.
        found: Lsn,
    },
    /// Unwritten (zero) space is followed by data in a segment that was closed cleanly.
    #[error("data at offset {data_offset_bytes} follows the segment's end (zeros)")]
    DataAfterEnd {
        /// The first nonzero byte after the end.
        data_offset_bytes: u64,
    },
    /// A damaged frame that a later batch proves was synced (and so acknowledged).
    #[error(
        "{damage}; the batch of lsn {later_lsn} at offset {later_offset_bytes} was written after this frame was synced"
    )]
    SyncedFrameDamaged {
        /// What was wrong with the frame.
        damage: Box<Corruption>,
        /// LSN of the later frame.
        later_lsn: Lsn,
        /// Offset of the later frame.
        later_offset_bytes: u64,
    },
    /// A damaged frame with data beyond the torn window after it, so it was synced.
    #[error(
        "{damage}; data at offset {data_offset_bytes} lies beyond the {window_bytes}-byte torn window"
    )]
    BeyondTornWindow {
        /// What was wrong with the frame.
        damage: Box<Corruption>,
        /// The first nonzero byte beyond the window.
        data_offset_bytes: u64,
        /// The torn window (the segment's batch bound).
        window_bytes: u64,
    },
    /// Two consecutive segments do not continue each other.
    #[error("segment ends at lsn {last}, but the next segment starts at lsn {next_first}")]
    SegmentGap {
        /// Last LSN of this segment.
        last: Lsn,
        /// First LSN of the next segment.
        next_first: Lsn,
    },
    /// The log ended before the LSN that was durable when replay began (a segment vanished).
    #[error("the log ends at lsn {last}, but lsn {expected_until} was durable")]
    LogEndsEarly {
        /// The last LSN found.
        last: Lsn,
        /// The LSN replay was to reach.
        expected_until: Lsn,
    },
    /// A checkpoint exists but no segment file does.
    #[error("no segment files, but a checkpoint covers lsn {checkpoint}")]
    NoSegments {
        /// The newest checkpoint's LSN (0 if every checkpoint was damaged).
        checkpoint: Lsn,
    },
    /// The log ends before the checkpoint it must continue.
    #[error("the checkpoint covers lsn {checkpoint}, but the log ends at lsn {log_end}")]
    LogBehindCheckpoint {
        /// The checkpoint's LSN.
        checkpoint: Lsn,
        /// The last LSN in the log.
        log_end: Lsn,
    },
    /// The log's oldest segment starts after the first record the checkpoint needs.
    #[error("the checkpoint needs lsn {needed}, but the oldest segment starts at lsn {oldest}")]
    MissingSegments {
        /// The first LSN replay needs.
        needed: Lsn,
        /// The first LSN of the oldest segment.
        oldest: Lsn,
    },
    /// A checkpoint's blob does not match its CRC.
    #[error("checkpoint blob crc mismatch: stored {stored:#010x}, computed {computed:#010x}")]
    BlobCrc {
        /// The CRC stored in the header.
        stored: u32,
        /// The CRC of the blob read.
        computed: u32,
    },
    /// A checkpoint's length does not match its header.
    #[error("checkpoint file holds {file_bytes} bytes, its header says {expected_bytes}")]
    BlobLength {
        /// The file's length.
        file_bytes: u64,
        /// Header plus blob length.
        expected_bytes: u64,
    },
    /// Every checkpoint file failed its checks.
    #[error("no valid checkpoint among {count} checkpoint files")]
    NoValidCheckpoint {
        /// How many were tried.
        count: u64,
    },
}
