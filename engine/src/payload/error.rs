//! The payload store's errors.

use std::error::Error as StdError;
use std::io;
use std::path::PathBuf;

use crate::payload::address::{ContentAddress, SegmentId};
use crate::payload::digest::ChecksumAlgorithm;

/// Everything the payload store can fail with.
#[derive(Debug, thiserror::Error)]
pub enum PayloadError {
    /// A file operation failed.
    #[error("{}: {op} failed: {source}", .path.display())]
    Io {
        /// The file or directory.
        path: PathBuf,
        /// The operation.
        op: &'static str,
        /// What the operating system (or the simulator) said.
        #[source]
        source: io::Error,
    },
    /// Stored bytes are damaged; they are never served.
    #[error("{}: corrupt payload entry at offset {offset_bytes}: {reason}", .path.display())]
    Corrupt {
        /// The segment.
        path: PathBuf,
        /// The entry's offset in the segment.
        offset_bytes: u64,
        /// What was wrong.
        reason: PayloadCorruption,
    },
    /// The stream delivered more bytes than the store accepts for one payload.
    #[error("the payload exceeds the limit of {max_bytes} bytes")]
    TooLarge {
        /// `PayloadOptions::payload_bytes_max`.
        max_bytes: u64,
    },
    /// The stream ended before its declared length.
    #[error("the stream delivered {received} bytes, fewer than the declared {declared}")]
    ShortStream {
        /// The declared length.
        declared: u64,
        /// Bytes received.
        received: u64,
    },
    /// The stream delivered more than its declared length.
    #[error("the stream delivered more than the declared {declared} bytes")]
    LongStream {
        /// The declared length.
        declared: u64,
    },
    /// The stream failed while it was read.
    #[error("the stream failed after {received} bytes: {source}")]
    Stream {
        /// Bytes received before the failure.
        received: u64,
        /// The stream's error.
        #[source]
        source: io::Error,
    },
    /// The payload does not hash to what the caller expected (S3's BadDigest).
    #[error("the {algorithm} of the payload is {computed}, the client sent {expected}")]
    BadDigest {
        /// Which digest ("MD5" or an S3 checksum name).
        algorithm: &'static str,
        /// What the client sent, hex.
        expected: String,
        /// What the payload hashes to, hex.
        computed: String,
    },
    /// No live payload has this address.
    #[error("no payload with address {address}")]
    UnknownAddress {
        /// The address asked for.
        address: ContentAddress,
    },
    /// A handle names no live payload: a part's reference was given back while the part
    /// still held it (a bug; the handle's slot may since hold another payload).
    #[error("payload handle {handle} names no live payload")]
    UnknownHandle {
        /// The slot asked for.
        handle: u32,
    },
    /// A checkpoint's list of payloads cannot be loaded as it is.
    #[error("the checkpoint's list of payloads is invalid: {reason}")]
    InvalidListing {
        /// What is wrong with it.
        reason: &'static str,
    },
    /// A checkpoint's part names a payload the checkpoint does not list.
    #[error("a part names payload {handle}, which the checkpoint does not list")]
    UnlistedPart {
        /// The position (slot) it names.
        handle: u32,
    },
    /// A checkpoint's part and the payload it names disagree on their size.
    #[error("a part of {part_bytes} bytes names payload {handle}, of {payload_bytes} bytes")]
    PartSizeDisagrees {
        /// The payload's slot.
        handle: u32,
        /// The part's size.
        part_bytes: u64,
        /// The payload's.
        payload_bytes: u64,
    },
    /// A checkpoint's parts hold another number of references on a payload than the
    /// checkpoint records.
    #[error(
        "payload handle {handle}: the checkpoint's parts hold {counted} references, its list \
         of payloads {recorded}"
    )]
    ReferencesDisagree {
        /// The payload's slot.
        handle: u32,
        /// References the parts hold.
        counted: u32,
        /// References the list records.
        recorded: u32,
    },
    /// A reference names a segment that does not exist.
    #[error(
        "payload {address} is referenced in segment {segment} ({}), which does not exist",
        .path.display()
    )]
    MissingSegment {
        /// The payload.
        address: ContentAddress,
        /// The segment.
        segment: SegmentId,
        /// Where the segment's file would be.
        path: PathBuf,
    },
    /// A range starts past the payload's end.
    #[error("range start {start} is past the payload's end ({len} bytes)")]
    RangeNotSatisfiable {
        /// The range's start.
        start: u64,
        /// The payload's length.
        len: u64,
    },
    /// The compaction hook refused a move; the old segment is kept.
    #[error("the compaction hook failed; segment {segment} is kept: {source}")]
    CompactionHook {
        /// The segment being compacted.
        segment: SegmentId,
        /// The hook's error.
        #[source]
        source: Box<dyn StdError + Send + Sync>,
    },
    /// A recovery call came after `finish_recovery`.
    #[error("the payload store has finished recovering: references now come from live calls")]
    NotRecovering,
    /// A record gives a location no entry can have (a damaged or crafted record).
    #[error(
        "a record places payload {address} at segment {segment}, offset {offset}, {len} bytes: no entry can be there"
    )]
    BadLocation {
        /// The payload.
        address: ContentAddress,
        /// The segment named.
        segment: SegmentId,
        /// The offset named.
        offset: u64,
        /// The length named.
        len: u64,
    },
    /// Every segment id this build can keep was given out (ids never repeat).
    #[error("no segment id is left: ids above {max} cannot be kept")]
    SegmentIdsExhausted {
        /// The largest id.
        max: u64,
    },
    /// A checkpoint or the log gives a payload more references than a live state can hold
    /// (each is a part in memory; the count is kept in 32 bits).
    #[error("payload {address} has {refs} references: more than {max}, the most a state can hold")]
    TooManyReferences {
        /// The payload.
        address: ContentAddress,
        /// The references counted so far.
        refs: u64,
        /// The most there can be.
        max: u32,
    },
    /// A background task of the store (on tokio's blocking pool) panicked or was cancelled.
    #[error("a background task of the payload store failed: {source}")]
    Background {
        /// What the runtime said.
        #[source]
        source: Box<dyn StdError + Send + Sync>,
    },
    /// The store is still recovering: `finish_recovery` has not run.
    #[error(
        "the payload store is recovering: replay the engine's records, then call finish_recovery"
    )]
    Recovering,
    /// The options cannot work.
    #[error("invalid payload store options: {reason}")]
    InvalidOptions {
        /// Which option, and why.
        reason: &'static str,
    },
}

/// What was wrong with stored bytes.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
pub enum PayloadCorruption {
    /// The file does not start with the payload segment magic.
    #[error("bad magic number {found:02x?}")]
    BadMagic {
        /// The bytes found.
        found: [u8; 8],
    },
    /// The format version is not one this build reads.
    #[error("format version {found} is not supported (this build reads version {supported})")]
    UnsupportedVersion {
        /// The version found.
        found: u32,
        /// The version this build reads.
        supported: u32,
    },
    /// A header's CRC does not match its bytes.
    #[error("header crc mismatch: stored {stored:#010x}, computed {computed:#010x}")]
    HeaderCrc {
        /// The stored CRC.
        stored: u32,
        /// The computed CRC.
        computed: u32,
    },
    /// A header field is out of range or disagrees with what references it.
    #[error("header field {field} holds {found}, expected {expected}")]
    HeaderField {
        /// The field.
        field: &'static str,
        /// What was read.
        found: String,
        /// What was expected.
        expected: String,
    },
    /// The file ends inside the entry.
    #[error("the entry of {entry_bytes} bytes runs past the end of the file ({file_bytes} bytes)")]
    PastEnd {
        /// The entry's end.
        entry_bytes: u64,
        /// The file's length.
        file_bytes: u64,
    },
    /// The payload's bytes do not hash to its address.
    #[error("payload bytes hash to {computed}, not to their address {address}")]
    Sha256Mismatch {
        /// The address (what they should hash to).
        address: ContentAddress,
        /// What they hash to.
        computed: ContentAddress,
    },
}

impl PayloadError {
    pub(crate) fn io(path: impl Into<PathBuf>, op: &'static str, source: io::Error) -> Self {
        PayloadError::Io { path: path.into(), op, source }
    }

    pub(crate) fn bad_digest(
        algorithm: ChecksumAlgorithm,
        expected: &[u8],
        computed: &[u8],
    ) -> Self {
        PayloadError::BadDigest {
            algorithm: algorithm.name(),
            expected: hex::encode(expected),
            computed: hex::encode(computed),
        }
    }
}
