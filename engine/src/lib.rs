//! Tessera's engine: the S3 multipart state machine on the write-ahead log ([`Engine`]), and
//! the payload store where part bytes live in content-addressed segment files ([`payload`]).
//!
//! Every transition (create, part, complete, abort, expire, and the bucket and object
//! operations) is one WAL record, acknowledged only once durable and visible to readers only
//! once durable. Opening recovers from the newest checkpoint and the log after it.

#![cfg_attr(test, allow(clippy::cast_possible_truncation))]

#[cfg(feature = "tokio")]
mod async_engine;
mod checksum_combine;
pub mod clock;
pub mod config;
mod engine;
pub mod error;
pub mod events;
mod history;
mod lock;
pub mod model;
pub mod names;
pub mod payload;
pub mod record;
mod snapshot;
mod snapshot_uploads;
pub mod state;

#[cfg(feature = "tokio")]
pub use crate::async_engine::{AsyncEngine, ExpiryTask, OwnedObjectPut, OwnedPartUpload};
pub use crate::clock::{Clock, ManualClock, SystemClock};
pub use crate::config::EngineConfig;
pub use crate::engine::{
    ACTOR_BYTES_MAX, Aborted, CheckpointReport, Checkpointer, Completion, Engine, ExpiryReport,
    JOURNAL_DIR, JournalView, ObjectPut, ObjectReader, OpenReport, OpenedPart, PAYLOAD_DIR,
    PartCopy, PartStored, PartUpload, Stats, WAL_DIR,
};
pub use crate::error::EngineError;
pub use crate::events::{Event, EventKind, Subscription, SubscriptionError};
pub use crate::lock::{DirLock, LOCK_FILE_NAME};
pub use crate::model::{
    AbortReason, AbortRule, BucketInfo, ChecksumSpec, ChecksumType, Etag, EtagMatch,
    ObjectChecksum, ObjectInfo, ObjectMeta, PartInfo, UploadId, UploadInfo, WriteCondition,
};
pub use crate::record::CompletePart;
pub use crate::state::{
    ListObjects, ListParts, ListUploads, ObjectSummary, ObjectsPage, PartsPage, UploadSummary,
    UploadsPage,
};
/// The journal (history of committed transitions): its queries, options and reports.
pub use tessera_journal as journal;
