//! The engine's errors: each S3 rule broken has its own variant, which the gateway maps to
//! S3's error code and HTTP status ([`EngineError::s3_code`], [`EngineError::http_status`]).

use std::path::PathBuf;

use tessera_wal::WalError;

use crate::payload::PayloadError;

/// Everything the engine can fail with.
#[derive(Debug, thiserror::Error)]
pub enum EngineError {
    /// No bucket of that name.
    #[error("the bucket {bucket:?} does not exist")]
    NoSuchBucket {
        /// The bucket asked for.
        bucket: String,
    },
    /// The bucket exists already (there is one owner: the engine's user).
    #[error("the bucket {bucket:?} exists already")]
    BucketAlreadyOwnedByYou {
        /// The bucket.
        bucket: String,
    },
    /// Objects or uploads remain in the bucket.
    #[error("the bucket {bucket:?} still holds {objects} objects and {uploads} uploads")]
    BucketNotEmpty {
        /// The bucket.
        bucket: String,
        /// Objects in it.
        objects: u64,
        /// Uploads in progress in it.
        uploads: u64,
    },
    /// The name breaks S3's bucket naming rules.
    #[error("invalid bucket name {bucket:?}: {reason}")]
    InvalidBucketName {
        /// The name.
        bucket: String,
        /// Which rule.
        reason: &'static str,
    },
    /// No upload in progress with that id (never created, completed, aborted or expired).
    #[error("no upload in progress with id {upload_id:?}")]
    NoSuchUpload {
        /// The id asked for.
        upload_id: String,
    },
    /// No object at that key.
    #[error("no object at {bucket}/{key}")]
    NoSuchKey {
        /// The bucket.
        bucket: String,
        /// The key.
        key: String,
    },
    /// An argument is out of range or malformed (part numbers, listing limits, ranges).
    #[error("invalid argument: {reason}")]
    InvalidArgument {
        /// What was wrong.
        reason: String,
    },
    /// A part named in a completion does not exist, or its ETag or checksum differs; or a
    /// part number asked of an object is beyond its part count.
    #[error("invalid part {part_number}: {reason}")]
    InvalidPart {
        /// The part number.
        part_number: u32,
        /// What was wrong.
        reason: &'static str,
    },
    /// The completion's part numbers do not ascend strictly.
    #[error(
        "the parts of a completion must be in ascending order (part {part_number} follows {previous})"
    )]
    InvalidPartOrder {
        /// The offending part number.
        part_number: u32,
        /// The one before it.
        previous: u32,
    },
    /// A part other than the last is smaller than the minimum part size.
    #[error(
        "part {part_number} is {size_bytes} bytes; every part but the last must be at least {min_bytes}"
    )]
    EntityTooSmall {
        /// The part.
        part_number: u32,
        /// Its size.
        size_bytes: u64,
        /// The minimum.
        min_bytes: u64,
    },
    /// A payload is larger than allowed.
    #[error("the payload exceeds the limit of {max_bytes} bytes")]
    EntityTooLarge {
        /// The limit.
        max_bytes: u64,
    },
    /// A completion named no parts.
    #[error("a completion must name at least one part")]
    MalformedXml,
    /// The bytes do not match the Content-MD5 or checksum sent with them, or a completion's
    /// checksum is wrong or missing.
    #[error("bad digest: {reason}")]
    BadDigest {
        /// What did not match.
        reason: String,
    },
    /// The request is inconsistent in a way S3 calls InvalidRequest.
    #[error("invalid request: {reason}")]
    InvalidRequest {
        /// What was wrong.
        reason: String,
    },
    /// The key is longer than 1024 bytes.
    #[error("the key is {bytes} bytes; the limit is {max_bytes}")]
    KeyTooLong {
        /// Its length.
        bytes: usize,
        /// The limit.
        max_bytes: usize,
    },
    /// The user metadata (names and values) exceeds 2 KiB.
    #[error("the user metadata is {bytes} bytes; the limit is {max_bytes}")]
    MetadataTooLarge {
        /// Its size.
        bytes: usize,
        /// The limit.
        max_bytes: usize,
    },
    /// The upload's version differs from the one the caller expected (compare-and-set).
    #[error("version precondition failed: expected {expected}, found {actual}")]
    VersionMismatch {
        /// The version the caller named.
        expected: u64,
        /// The upload's version.
        actual: u64,
    },
    /// A write's `If-Match` or `If-None-Match` did not hold when it applied.
    #[error("precondition failed: {reason}")]
    PreconditionFailed {
        /// Which one.
        reason: &'static str,
    },
    /// A copy's source object changed between the copy's preparation and its commit.
    #[error("the copy source changed while it was copied")]
    SourceChanged,
    /// An expiry raced with activity that extended the upload: it is no longer due.
    #[error("upload {upload_id} is not due to expire")]
    NotDue {
        /// The upload.
        upload_id: String,
    },
    /// A byte range lies outside the object.
    #[error("the range {first}-{last} is not satisfiable for {len} bytes")]
    InvalidRange {
        /// First byte asked for.
        first: u64,
        /// Last byte asked for (inclusive).
        last: u64,
        /// The object's length.
        len: u64,
    },
    /// The stream delivered fewer bytes than declared.
    #[error("the body ended after {received} of {declared} bytes")]
    IncompleteBody {
        /// Declared length.
        declared: u64,
        /// Bytes received.
        received: u64,
    },
    /// The request's body failed or ran past its declared length.
    #[error("the request body failed after {received} bytes: {reason}")]
    BodyFailed {
        /// Bytes received.
        received: u64,
        /// What happened.
        reason: String,
    },
    /// Another process or handle holds the data directory.
    #[error("{} is in use: {holder}", .path.display())]
    Locked {
        /// The lock file.
        path: PathBuf,
        /// Who holds it, as the holder wrote it (process id), or the OS's error.
        holder: String,
    },
    /// A file operation of the engine's own (its lock file) failed.
    #[error("{}: {op} failed: {source}", .path.display())]
    Io {
        /// The file.
        path: PathBuf,
        /// The operation.
        op: &'static str,
        /// What the operating system said.
        #[source]
        source: std::io::Error,
    },
    /// A WAL record or checkpoint failed to decode although its CRC checked out: written by a
    /// newer or broken build.
    #[error("undecodable {what} at LSN {lsn}: {reason}")]
    Undecodable {
        /// "record" or "checkpoint".
        what: &'static str,
        /// Where.
        lsn: u64,
        /// The decoder's complaint.
        reason: String,
    },
    /// Invalid configuration.
    #[error("invalid configuration: {reason}")]
    InvalidConfig {
        /// What was wrong.
        reason: &'static str,
    },
    /// The log failed (I/O, corruption, poisoned after a failed fsync).
    #[error(transparent)]
    Wal(#[from] WalError),
    /// Opening cut the log's last batch as a torn write, and then found a payload segment
    /// missing that the state still references. Within the engine, a segment goes only after
    /// a durable record released or moved its last payload: so either that record was in the
    /// cut batch (acknowledged, and damaged on the medium rather than torn by the crash), or
    /// the segment was removed outside the engine. The open refuses either way.
    #[error(
        "{cause}: the log's last batch ({} from offset {}, LSN {}) failed its check ({}) and was cut as a torn write; either that batch had been acknowledged and was damaged on the medium (its record had emptied the segment), or the segment was removed outside the engine",
        .torn.path.display(),
        .torn.offset_bytes,
        .torn.lsn,
        .torn.damage
    )]
    AcknowledgedTailCut {
        /// What the log cut.
        torn: Box<tessera_wal::TornTail>,
        /// What showed the batch had been acknowledged.
        cause: PayloadError,
    },
    /// The payload store failed.
    #[error(transparent)]
    Payload(PayloadError),
    /// The journal failed (a checkpoint waits for it: the log keeps the history meanwhile).
    #[error(transparent)]
    Journal(#[from] tessera_journal::JournalError),
    /// The journal cannot be trusted to hold every transition: checkpoints wait for a reopen.
    #[error("journal unavailable: {reason}")]
    JournalUnavailable {
        /// Why.
        reason: String,
    },
}

impl From<PayloadError> for EngineError {
    fn from(e: PayloadError) -> Self {
        match e {
            PayloadError::BadDigest { .. } => EngineError::BadDigest { reason: e.to_string() },
            PayloadError::TooLarge { max_bytes } => EngineError::EntityTooLarge { max_bytes },
            PayloadError::ShortStream { declared, received } => {
                EngineError::IncompleteBody { declared, received }
            }
            PayloadError::RangeNotSatisfiable { .. } => {
                EngineError::InvalidArgument { reason: e.to_string() }
            }
            PayloadError::LongStream { declared } => {
                EngineError::BodyFailed { received: declared, reason: e.to_string() }
            }
            PayloadError::Stream { received, .. } => {
                EngineError::BodyFailed { received, reason: e.to_string() }
            }
            other => EngineError::Payload(other),
        }
    }
}

impl EngineError {
    /// S3's error code for this error.
    pub fn s3_code(&self) -> &'static str {
        match self {
            EngineError::NoSuchBucket { .. } => "NoSuchBucket",
            EngineError::BucketAlreadyOwnedByYou { .. } => "BucketAlreadyOwnedByYou",
            EngineError::BucketNotEmpty { .. } => "BucketNotEmpty",
            EngineError::InvalidBucketName { .. } => "InvalidBucketName",
            EngineError::NoSuchUpload { .. } => "NoSuchUpload",
            EngineError::NoSuchKey { .. } => "NoSuchKey",
            EngineError::InvalidArgument { .. } => "InvalidArgument",
            EngineError::InvalidPart { .. } => "InvalidPart",
            EngineError::InvalidPartOrder { .. } => "InvalidPartOrder",
            EngineError::EntityTooSmall { .. } => "EntityTooSmall",
            EngineError::EntityTooLarge { .. } => "EntityTooLarge",
            EngineError::MalformedXml => "MalformedXML",
            EngineError::BadDigest { .. } => "BadDigest",
            EngineError::InvalidRequest { .. } => "InvalidRequest",
            EngineError::KeyTooLong { .. } => "KeyTooLongError",
            EngineError::MetadataTooLarge { .. } => "MetadataTooLarge",
            EngineError::VersionMismatch { .. } | EngineError::PreconditionFailed { .. } => {
                "PreconditionFailed"
            }
            EngineError::InvalidRange { .. } => "InvalidRange",
            EngineError::SourceChanged | EngineError::NotDue { .. } => "OperationAborted",
            EngineError::IncompleteBody { .. } | EngineError::BodyFailed { .. } => "IncompleteBody",
            EngineError::Locked { .. }
            | EngineError::Io { .. }
            | EngineError::Undecodable { .. }
            | EngineError::InvalidConfig { .. }
            | EngineError::Payload(_)
            | EngineError::AcknowledgedTailCut { .. }
            | EngineError::Journal(_)
            | EngineError::JournalUnavailable { .. } => "InternalError",
            EngineError::Wal(WalError::Poisoned { .. }) => "ServiceUnavailable",
            EngineError::Wal(_) => "InternalError",
        }
    }

    /// The HTTP status S3 answers this error with.
    pub fn http_status(&self) -> u16 {
        match self {
            EngineError::NoSuchBucket { .. }
            | EngineError::NoSuchUpload { .. }
            | EngineError::NoSuchKey { .. } => 404,
            EngineError::BucketAlreadyOwnedByYou { .. }
            | EngineError::BucketNotEmpty { .. }
            | EngineError::SourceChanged
            | EngineError::NotDue { .. } => 409,
            EngineError::VersionMismatch { .. } | EngineError::PreconditionFailed { .. } => 412,
            EngineError::InvalidRange { .. } => 416,
            EngineError::Wal(WalError::Poisoned { .. }) => 503,
            EngineError::Locked { .. }
            | EngineError::Io { .. }
            | EngineError::Undecodable { .. }
            | EngineError::InvalidConfig { .. }
            | EngineError::Payload(_)
            | EngineError::AcknowledgedTailCut { .. }
            | EngineError::Journal(_)
            | EngineError::JournalUnavailable { .. }
            | EngineError::Wal(_) => 500,
            _ => 400,
        }
    }

    pub(crate) fn no_such_upload(upload_id: impl std::fmt::Display) -> EngineError {
        EngineError::NoSuchUpload { upload_id: upload_id.to_string() }
    }

    pub(crate) fn no_such_bucket(bucket: &str) -> EngineError {
        EngineError::NoSuchBucket { bucket: bucket.to_owned() }
    }

    pub(crate) fn invalid_argument(reason: impl Into<String>) -> EngineError {
        EngineError::InvalidArgument { reason: reason.into() }
    }
}
