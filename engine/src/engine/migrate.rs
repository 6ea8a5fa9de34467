//! Before a checkpoint: payloads that arrived inline in WAL records move into payload segments,
//! so that the checkpoint (and the memory of the state) names them by handle, not by their bytes,
//! and inline bytes in memory never exceed what the log holds since the last checkpoint.
//!
//! The move is no transition: the state after it reads the same bytes. The entries are synced
//! before the state points at them; until a checkpoint records them, a crash leaves them
//! unreferenced (recovery replays the records, which carry the bytes inline again, and cuts
//! the entries).
//!
//! Only the uploads and objects that transitions may have given an inline part since the last
//! move are looked at (`InlineOwners`), not the whole state: the second look takes the state's
//! write lock, and the state may hold millions of parts. After recovery the owners are not
//! known, and the first move looks at every part.

use std::collections::HashMap;
use std::sync::Arc;
use std::time::{Duration, Instant};

use crate::engine::Engine;
use crate::error::EngineError;
use crate::model::UploadId;
use crate::payload::ContentAddress;
use crate::record::{Op, PayloadRecord};
use crate::state::{PartTable, State};

/// An inline payload's bytes, and their MD5 (its part's ETag).
type InlineBytes = (Arc<[u8]>, [u8; 16]);

/// An upload or object a transition may have given an inline part.
#[derive(Clone, Debug, PartialEq, Eq)]
pub(crate) enum InlineOwner {
    /// An upload in progress.
    Upload(UploadId),
    /// An object, by bucket and key.
    Object(String, String),
}

/// The owners noted since the last move; `None` when not known (after recovery): then every
/// part is looked at.
pub(crate) type InlineOwners = Option<Vec<InlineOwner>>;

/// Which upload or object `op`, applied, may have given an inline part: the one a part or an
/// object was written into, copied into or completed into.
pub(crate) fn inline_owner(op: &Op) -> Option<InlineOwner> {
    match op {
        Op::PutPart { upload_id, part, .. } => matches!(part.payload, PayloadRecord::Inline { .. })
            .then_some(InlineOwner::Upload(*upload_id)),
        Op::CopyPart { upload_id, .. } => Some(InlineOwner::Upload(*upload_id)),
        Op::PutObject { bucket, key, part, .. } => {
            matches!(part.payload, PayloadRecord::Inline { .. })
                .then(|| InlineOwner::Object(bucket.clone(), key.clone()))
        }
        Op::Complete { bucket, key, .. } | Op::CopyObject { bucket, key, .. } => {
            Some(InlineOwner::Object(bucket.clone(), key.clone()))
        }
        _ => None,
    }
}

/// The parts of `owner`, if it still exists.
fn parts_of<'s>(state: &'s State, owner: &InlineOwner) -> Option<&'s PartTable> {
    match owner {
        InlineOwner::Upload(id) => state.uploads.get(id).map(|u| &u.parts),
        InlineOwner::Object(bucket, key) => state.object(bucket, key).ok().map(|o| &o.parts),
    }
}

/// The parts of `owner`, to change, if it still exists.
fn parts_of_mut<'s>(state: &'s mut State, owner: &InlineOwner) -> Option<&'s mut PartTable> {
    match owner {
        InlineOwner::Upload(id) => state.uploads.get_mut(id).map(|u| &mut u.parts),
        InlineOwner::Object(bucket, key) => state
            .buckets
            .get_mut(bucket.as_str())
            .and_then(|b| b.objects.get_mut(key.as_bytes()))
            .map(|o| &mut o.parts),
    }
}

/// The parts of every upload and object.
fn all_tables(state: &State) -> impl Iterator<Item = &PartTable> {
    let State { buckets, uploads, .. } = state;
    let in_uploads = uploads.values().map(|u| &u.parts);
    let in_objects = buckets.values().flat_map(|b| b.objects.values()).map(|o| &o.parts);
    in_uploads.chain(in_objects)
}

/// The parts of every upload and object, to change.
fn all_tables_mut(state: &mut State) -> impl Iterator<Item = &mut PartTable> {
    let State { buckets, uploads, .. } = state;
    let in_uploads = uploads.values_mut().map(|u| &mut u.parts);
    let in_objects =
        buckets.values_mut().flat_map(|b| b.objects.values_mut()).map(|o| &mut o.parts);
    in_uploads.chain(in_objects)
}

/// The parts `owners` name (every part when `None`).
fn tables<'s>(
    state: &'s State,
    owners: Option<&'s [InlineOwner]>,
) -> Box<dyn Iterator<Item = &'s PartTable> + 's> {
    match owners {
        None => Box::new(all_tables(state)),
        Some(owners) => Box::new(owners.iter().filter_map(|owner| parts_of(state, owner))),
    }
}

impl Engine {
    /// Moves the inline payloads of the state into the payload store; returns how many, and
    /// how long the state's write lock was held.
    pub(super) fn migrate_inline(&self) -> Result<(usize, Duration), EngineError> {
        // From here on, transitions note their owners in a fresh list; those noted before are
        // this move's (a transition noted twice is looked at twice, harmlessly).
        let owners: InlineOwners = self.inline_owners.lock().replace(Vec::new());
        let owners = owners.as_deref();
        let moved = self.move_inline(owners);
        if moved.is_err() {
            // What was noted may not have moved: the next move looks at every part.
            *self.inline_owners.lock() = None;
        }
        moved
    }

    /// Moves the inline payloads of the parts `owners` name (of every part when `None`).
    fn move_inline(
        &self,
        owners: Option<&[InlineOwner]>,
    ) -> Result<(usize, Duration), EngineError> {
        // Each with its MD5, from its part (equal bytes, equal MD5).
        let inline: HashMap<ContentAddress, InlineBytes> = {
            let core = self.core.read();
            tables(&core.state, owners)
                .flat_map(PartTable::inline_payloads)
                .map(|(address, bytes, md5)| (address, (bytes, md5)))
                .collect()
        };
        if inline.is_empty() {
            return Ok((0, Duration::ZERO));
        }
        let items: Vec<(&ContentAddress, &InlineBytes)> = inline.iter().collect();
        let payloads: Vec<(&[u8], [u8; 16])> =
            items.iter().map(|(_, (bytes, md5))| (&bytes[..], *md5)).collect();
        let pendings = self.payload.ingest_batch(&payloads)?;
        let mut pending_of: HashMap<ContentAddress, crate::payload::Pending> = HashMap::new();
        for ((address, _), pending) in items.iter().zip(pendings) {
            // `None`: its stored copy is unchecked since open; it stays inline for now.
            let Some(pending) = pending else { continue };
            if pending.receipt().address == **address && !pending.receipt().location.is_empty() {
                pending_of.insert(**address, pending);
            } else {
                tracing::error!(%address, "an inline payload does not hash to its address; kept inline");
            }
        }
        let mut core = self.core.write();
        let locked_at = Instant::now();
        let mut references: HashMap<ContentAddress, u64> = HashMap::new();
        // Points parts at their stored copies; true if one was inline when looked at above and
        // stays so (a part made inline since was noted by its own transition, for the next move).
        let mut convert = |table: &mut PartTable| -> bool {
            let handle_of = |address: &ContentAddress| pending_of.get(address)?.handle();
            for address in table.store_inline(handle_of) {
                *references.entry(address).or_default() += 1;
            }
            table.inline_payloads().any(|(address, ..)| inline.contains_key(&address))
        };
        match owners {
            None => {
                let mut stays_inline = false;
                for table in all_tables_mut(&mut core.state) {
                    stays_inline |= convert(table);
                }
                if stays_inline {
                    // Not all moved: the next move looks at every part again.
                    *self.inline_owners.lock() = None;
                }
            }
            Some(owners) => {
                let mut kept = Vec::new();
                for owner in owners {
                    let stays_inline =
                        parts_of_mut(&mut core.state, owner).is_some_and(&mut convert);
                    if stays_inline {
                        kept.push(owner.clone());
                    }
                }
                // Parts left inline (their copies could not be made now) are tried again.
                if let Some(noted) = self.inline_owners.lock().as_mut() {
                    noted.extend(kept);
                }
            }
        }
        // The references are taken before the lock goes: a transition that drops one of these
        // parts must find its reference there to release. Every pending one is kept before any
        // step that can fail: the parts name their payloads' slots, which a dropped pending
        // reference could leave vacant.
        let mut more = Vec::new();
        for (address, pending) in pending_of {
            let Some(&count) = references.get(&address) else { continue };
            pending.commit();
            more.push((address, count - 1));
        }
        let moved = more.len();
        for (address, extra) in more {
            for _ in 0..extra {
                self.payload.add_ref(&address)?;
            }
        }
        let locked = locked_at.elapsed();
        drop(core);
        Ok((moved, locked))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::engine::{Completion, ObjectPut, PartCopy, PartUpload};
    use crate::model::ObjectMeta;
    use crate::record::CompletePart;
    use crate::{Engine, EngineConfig};

    fn config() -> EngineConfig {
        EngineConfig {
            min_part_bytes: 0,
            checkpoint_wal_bytes: u64::MAX / 2,
            ..EngineConfig::default()
        }
    }

    /// Parts of every upload and object that are still inline.
    fn inline_parts(engine: &Engine) -> usize {
        let core = engine.core.read();
        all_tables(&core.state).map(|t| t.inline_payloads().count()).sum()
    }

    fn put_object(engine: &Engine, key: &str, byte: u8) {
        let bytes = [byte; 100];
        let request = ObjectPut {
            bucket: "bkt",
            key,
            content_length: Some(bytes.len() as u64),
            ..ObjectPut::default()
        };
        engine.put_object("alice", &request, &mut &bytes[..]).unwrap();
    }

    /// Uploads a part of `byte`s; returns its ETag.
    fn put_part(
        engine: &Engine,
        key: &str,
        upload_id: &str,
        part_number: u32,
        byte: u8,
    ) -> [u8; 16] {
        let bytes = [byte; 100];
        let request = PartUpload {
            bucket: "bkt",
            key,
            upload_id,
            part_number,
            content_length: Some(bytes.len() as u64),
            ..PartUpload::default()
        };
        engine.put_part("alice", &request, &mut &bytes[..]).unwrap().part.etag.md5
    }

    /// Every kind of transition that leaves an inline part (a part, an object, a completion, an
    /// object copy, a part copy) names its owner, so a checkpoint moves every inline payload
    /// while looking only at those; after a restart, at every part.
    #[test]
    fn checkpoints_move_every_inline_payload_made_since_the_last() {
        let dir = tempfile::tempdir().unwrap();
        let engine = Engine::open(dir.path(), config()).unwrap();
        engine.create_bucket("alice", "bkt").unwrap();
        // Nothing noted yet: after opening, the first move looks at every part.
        engine.checkpoint().unwrap();
        put_object(&engine, "a", 1);
        engine.copy_object("alice", ("bkt", "a"), ("bkt", "a-copy"), None).unwrap();
        let completed =
            engine.create_upload("alice", "bkt", "c", ObjectMeta::default()).unwrap().upload_id;
        let completed = completed.to_string();
        let etags =
            [put_part(&engine, "c", &completed, 1, 3), put_part(&engine, "c", &completed, 2, 4)];
        let parts = etags
            .iter()
            .zip(1..)
            .map(|(etag, part_number)| CompletePart { part_number, etag: *etag, checksum: None })
            .collect();
        let completion = Completion {
            bucket: "bkt",
            key: "c",
            upload_id: &completed,
            parts,
            object_size_bytes: None,
            expected_version: None,
            condition: None,
            object_checksum: None,
        };
        engine.complete_upload("alice", &completion).unwrap();
        let open = engine.create_upload("alice", "bkt", "o", ObjectMeta::default()).unwrap();
        let open = open.upload_id.to_string();
        put_part(&engine, "o", &open, 1, 5);
        // An upload whose only part is a copy.
        let copied = engine.create_upload("alice", "bkt", "p", ObjectMeta::default()).unwrap();
        let copied = copied.upload_id.to_string();
        let copy = PartCopy {
            bucket: "bkt",
            key: "p",
            upload_id: &copied,
            part_number: 1,
            source_bucket: "bkt",
            source_key: "a",
            range: None,
            expected_version: None,
        };
        engine.copy_part("alice", &copy).unwrap();
        assert_eq!(inline_parts(&engine), 6);
        let report = engine.checkpoint().unwrap().unwrap();
        // Distinct bytes: 1 (the object, its copy and the copied part), 3, 4, 5.
        assert_eq!(report.inline_payloads_moved, 4, "{report:?}");
        assert_eq!(inline_parts(&engine), 0);
        // Nothing inline since: the next checkpoint moves nothing.
        engine.create_bucket("alice", "other").unwrap();
        assert_eq!(engine.checkpoint().unwrap().unwrap().inline_payloads_moved, 0);
        // Replayed after a restart, and so not noted: the first move looks at every part.
        put_object(&engine, "b", 2);
        drop(engine);
        let engine = Engine::open(dir.path(), config()).unwrap();
        assert_eq!(inline_parts(&engine), 1);
        assert_eq!(engine.checkpoint().unwrap().unwrap().inline_payloads_moved, 1);
        assert_eq!(inline_parts(&engine), 0);
        drop(engine);
        let engine = Engine::open(dir.path(), config()).unwrap();
        for (key, bytes) in [("a", vec![1; 100]), ("a-copy", vec![1; 100]), ("b", vec![2; 100])] {
            let (_, mut reader) = engine.open_object("bkt", key, None).unwrap();
            let mut read = Vec::new();
            std::io::Read::read_to_end(&mut reader, &mut read).unwrap();
            assert_eq!(read, bytes, "{key}");
        }
        let (info, _) = engine.open_object("bkt", "c", None).unwrap();
        assert_eq!(info.size_bytes, 200);
    }

    /// Each transition that can leave an inline part names where; the others name nothing.
    #[test]
    fn owners_are_the_uploads_and_objects_written_into() {
        let id = UploadId([7; 24]);
        let complete = Op::Complete {
            upload_id: id,
            bucket: "b".into(),
            key: "k".into(),
            parts: Vec::new(),
            min_part_bytes: 0,
            object_size_bytes: None,
            expected_version: None,
        };
        assert_eq!(inline_owner(&complete), Some(InlineOwner::Object("b".into(), "k".into())));
        let abort = Op::Abort {
            upload_id: id,
            reason: crate::model::AbortReason::Aborted,
            expected_version: None,
        };
        assert_eq!(inline_owner(&abort), None);
        assert_eq!(inline_owner(&Op::CreateBucket { bucket: "b".into() }), None);
    }
}
