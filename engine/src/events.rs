//! Subscriptions: the committed transitions as they become durable.

use std::sync::Arc;

use tokio::sync::broadcast;

use crate::model::{AbortReason, Etag, UploadId};

/// What kind of transition an event reports.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum EventKind {
    /// A bucket was created.
    CreateBucket,
    /// A bucket was deleted.
    DeleteBucket,
    /// A bucket's lifecycle rule was set.
    SetLifecycle,
    /// An upload was created.
    CreateUpload,
    /// A part was uploaded.
    PutPart,
    /// A part was copied from an object (UploadPartCopy).
    CopyPart,
    /// An upload was completed.
    Complete,
    /// An upload ended: aborted by a client, or expired.
    Abort(AbortReason),
    /// An object was written by a single PUT.
    PutObject,
    /// An object was copied.
    CopyObject,
    /// An object was deleted.
    DeleteObject,
    /// Payloads were moved by compaction.
    Compaction,
}

/// One committed transition. Published only once durable, in LSN order.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Event {
    /// Its LSN.
    pub lsn: u64,
    /// When it was made.
    pub time_ms: u64,
    /// Who made it.
    pub actor: String,
    /// What it was.
    pub kind: EventKind,
    /// The bucket.
    pub bucket: Option<String>,
    /// The key.
    pub key: Option<String>,
    /// The upload.
    pub upload_id: Option<UploadId>,
    /// The part number.
    pub part_number: Option<u32>,
    /// Bytes stored, or released by an abort.
    pub size_bytes: Option<u64>,
    /// The ETag of the part or object.
    pub etag: Option<Etag>,
    /// `None` if it took effect; else the S3 error code it failed with (it was durable, and
    /// failed when applied in commit order: a complete that lost to an abort, say).
    pub error: Option<&'static str>,
}

/// Why [`Subscription::recv`] returned no event.
#[derive(Clone, Copy, Debug, PartialEq, Eq, thiserror::Error)]
pub enum SubscriptionError {
    /// The subscriber fell behind and this many events were dropped for it; it may go on
    /// receiving newer ones.
    #[error("the subscriber lagged: {0} events were skipped")]
    Lagged(u64),
    /// The engine was dropped.
    #[error("the engine is closed")]
    Closed,
}

/// A stream of committed transitions (see [`crate::Engine::subscribe`]).
#[derive(Debug)]
pub struct Subscription {
    pub(crate) receiver: broadcast::Receiver<Arc<Event>>,
}

fn convert(e: broadcast::error::RecvError) -> SubscriptionError {
    match e {
        broadcast::error::RecvError::Lagged(n) => SubscriptionError::Lagged(n),
        broadcast::error::RecvError::Closed => SubscriptionError::Closed,
    }
}

impl Subscription {
    /// Waits for the next event (blocking the thread; not for use inside an async runtime).
    pub fn recv(&mut self) -> Result<Arc<Event>, SubscriptionError> {
        self.receiver.blocking_recv().map_err(convert)
    }

    /// The next event if one is waiting.
    pub fn try_recv(&mut self) -> Result<Option<Arc<Event>>, SubscriptionError> {
        match self.receiver.try_recv() {
            Ok(event) => Ok(Some(event)),
            Err(broadcast::error::TryRecvError::Empty) => Ok(None),
            Err(broadcast::error::TryRecvError::Lagged(n)) => Err(SubscriptionError::Lagged(n)),
            Err(broadcast::error::TryRecvError::Closed) => Err(SubscriptionError::Closed),
        }
    }

    /// Waits for the next event (async, any runtime).
    pub async fn recv_async(&mut self) -> Result<Arc<Event>, SubscriptionError> {
        self.receiver.recv().await.map_err(convert)
    }
}

/// The bucket and key a transition concerns, looked up before it applies (an abort's upload
/// is gone afterwards).
#[derive(Debug, Default)]
pub(crate) struct Subject {
    bucket: Option<String>,
    key: Option<String>,
}

pub(crate) fn subject(
    state: &crate::state::State,
    transition: &crate::record::Transition,
) -> Subject {
    use crate::record::Op;
    let upload = |id: &UploadId| {
        state.uploads.get(id).map_or_else(Subject::default, |u| Subject {
            bucket: Some(u.bucket.to_string()),
            key: Some(u.key.0.to_string()),
        })
    };
    let named = |bucket: &str, key: Option<&str>| Subject {
        bucket: Some(bucket.to_owned()),
        key: key.map(str::to_owned),
    };
    match &transition.op {
        Op::CreateBucket { bucket }
        | Op::DeleteBucket { bucket }
        | Op::SetLifecycle { bucket, .. }
        | Op::SetLifecycleRules { bucket, .. } => named(bucket, None),
        Op::CreateUpload { bucket, key, .. }
        | Op::Complete { bucket, key, .. }
        | Op::PutObject { bucket, key, .. }
        | Op::CopyObject { bucket, key, .. }
        | Op::DeleteObject { bucket, key } => named(bucket, Some(key)),
        Op::PutPart { upload_id, .. }
        | Op::CopyPart { upload_id, .. }
        | Op::Abort { upload_id, .. } => upload(upload_id),
        Op::Moves { .. } => Subject::default(),
    }
}

pub(crate) fn event(
    lsn: u64,
    transition: &crate::record::Transition,
    subject: Subject,
    result: &Result<crate::state::Outcome, crate::error::EngineError>,
) -> Event {
    use crate::record::Op;
    use crate::state::Outcome;
    let (kind, upload_id, part_number) = match &transition.op {
        Op::CreateBucket { .. } => (EventKind::CreateBucket, None, None),
        Op::DeleteBucket { .. } => (EventKind::DeleteBucket, None, None),
        Op::SetLifecycle { .. } | Op::SetLifecycleRules { .. } => {
            (EventKind::SetLifecycle, None, None)
        }
        Op::CreateUpload { upload_id, .. } => (EventKind::CreateUpload, Some(*upload_id), None),
        Op::PutPart { upload_id, part_number, .. } => {
            (EventKind::PutPart, Some(*upload_id), Some(*part_number))
        }
        Op::CopyPart { upload_id, part_number, .. } => {
            (EventKind::CopyPart, Some(*upload_id), Some(*part_number))
        }
        Op::Complete { upload_id, .. } => (EventKind::Complete, Some(*upload_id), None),
        Op::Abort { upload_id, reason, .. } => (EventKind::Abort(*reason), Some(*upload_id), None),
        Op::PutObject { .. } => (EventKind::PutObject, None, None),
        Op::CopyObject { .. } => (EventKind::CopyObject, None, None),
        Op::DeleteObject { .. } => (EventKind::DeleteObject, None, None),
        Op::Moves { .. } => (EventKind::Compaction, None, None),
    };
    let (size_bytes, etag) = match result {
        Ok(Outcome::PartStored(part, _)) => (Some(part.size_bytes), Some(part.etag)),
        Ok(Outcome::Completed(object) | Outcome::ObjectWritten(object)) => {
            (Some(object.size_bytes), Some(object.etag))
        }
        Ok(Outcome::Aborted { bytes, .. }) => (Some(*bytes), None),
        _ => (None, None),
    };
    Event {
        lsn,
        time_ms: transition.time_ms,
        actor: transition.actor.clone(),
        kind,
        bucket: subject.bucket,
        key: subject.key,
        upload_id,
        part_number,
        size_bytes,
        etag,
        error: result.as_ref().err().map(|e| e.s3_code()),
    }
}
