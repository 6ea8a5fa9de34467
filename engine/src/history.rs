//! The journal's view of a committed transition: its event, as a journal entry.

use tessera_journal::{Entry, JournalEtag, Operation};

use crate::events::{Event, EventKind};
use crate::model::AbortReason;

/// The journal entry of an applied transition, or `None` for the engine's own bookkeeping
/// (compaction's moves change no state and are not history).
pub(crate) fn entry(event: Event) -> Option<Entry> {
    let op = match event.kind {
        EventKind::CreateBucket => Operation::CreateBucket,
        EventKind::DeleteBucket => Operation::DeleteBucket,
        EventKind::SetLifecycle => Operation::SetLifecycle,
        EventKind::CreateUpload => Operation::CreateUpload,
        EventKind::PutPart => Operation::PutPart,
        EventKind::CopyPart => Operation::CopyPart,
        EventKind::Complete => Operation::Complete,
        EventKind::Abort(AbortReason::Aborted) => Operation::Abort,
        EventKind::Abort(AbortReason::Expired) => Operation::Expire,
        EventKind::PutObject => Operation::PutObject,
        EventKind::CopyObject => Operation::CopyObject,
        EventKind::DeleteObject => Operation::DeleteObject,
        EventKind::Compaction => return None,
    };
    Some(Entry {
        lsn: event.lsn,
        time_ms: event.time_ms,
        actor: event.actor,
        op,
        bucket: event.bucket,
        key: event.key,
        upload_id: event.upload_id.map(|id| id.0),
        part_number: event.part_number,
        size_bytes: event.size_bytes,
        etag: event.etag.map(|e| JournalEtag { md5: e.md5, parts: e.parts }),
        error: event.error.map(str::to_owned),
    })
}
