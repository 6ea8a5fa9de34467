//! Applying one transition to the state.

use std::sync::Arc;

use arcstr::ArcStr;
use md5::{Digest as _, Md5};

use crate::error::EngineError;
use crate::model::{
    AbortReason, AbortRule, BucketInfo, ChecksumType, Etag, ObjectChecksum, ObjectInfo, ObjectMeta,
    PartInfo, UploadId, UploadInfo, WriteCondition,
};
use crate::payload::{Checksum, ChecksumAlgorithm, PayloadHandle};
use crate::record::{CompletePart, MoveRecord, Op, PartRecord, PayloadRecord, Transition};
use crate::state::{Bucket, InlinePayload, Key, Object, Part, PartData, PartTable, State, Upload};

/// What a transition did, for its caller.
#[derive(Clone, Debug, PartialEq)]
pub enum Outcome {
    /// A bucket was created.
    BucketCreated(BucketInfo),
    /// A bucket was deleted.
    BucketDeleted,
    /// A bucket's lifecycle rule was set.
    LifecycleSet,
    /// An upload was created.
    UploadCreated(UploadInfo),
    /// A part was stored; the upload's new version.
    PartStored(PartInfo, u64),
    /// An upload was completed into an object (or had been, with the same parts).
    Completed(ObjectInfo),
    /// An upload was aborted or expired: parts and bytes released.
    Aborted {
        /// Its parts.
        parts: u64,
        /// Their bytes.
        bytes: u64,
    },
    /// An object was written (put or copied).
    ObjectWritten(ObjectInfo),
    /// An object was deleted (or was not there).
    ObjectDeleted {
        /// Whether there was one.
        existed: bool,
    },
    /// Compaction moves were recorded.
    Moved,
}

/// A change of payload-store references that a transition makes.
#[derive(Clone, Debug, PartialEq)]
pub enum Effect {
    /// Keep the reference the transition's own payload holds (live: commit the pending
    /// reference; recovery: count it).
    KeepOwn,
    /// Take one more reference on a stored payload (a copy).
    AddRef(PayloadHandle),
    /// Give one back (a replaced part or object, an abort, a deletion).
    Release(PayloadHandle),
    /// A payload moved (recovery only: live, the store moved it when it was recorded).
    Move(MoveRecord),
}

/// The outcome of a transition that succeeded, with its payload effects.
#[derive(Debug)]
pub struct Applied {
    /// For the caller.
    pub outcome: Outcome,
    /// For the payload store, in order.
    pub effects: Vec<Effect>,
}

impl Applied {
    fn plain(outcome: Outcome) -> Applied {
        Applied { outcome, effects: Vec::new() }
    }
}

/// When a bucket's lifecycle rules abort an upload at `key` initiated at `initiated_ms`.
/// The abort date the bucket's rules give an upload of `key` initiated at `initiated_ms`: never
/// zero (see `Upload::abort_ms`).
fn abort_date(
    initiated_ms: u64,
    key: &str,
    rules: &[AbortRule],
    day_ms: u64,
) -> Option<std::num::NonZeroU64> {
    AbortRule::first_for(rules, key).map(|rule| {
        let date = initiated_ms.saturating_add(u64::from(rule.days).saturating_mul(day_ms));
        std::num::NonZeroU64::new(date).unwrap_or(std::num::NonZeroU64::MIN)
    })
}

fn check_version(upload: &Upload, expected: Option<u64>) -> Result<(), EngineError> {
    match expected {
        Some(expected) if expected != upload.version => {
            Err(EngineError::VersionMismatch { expected, actual: upload.version })
        }
        _ => Ok(()),
    }
}

/// The part's data: `own` is the handle of the record's stored payload, which the caller holds
/// a reference on (live: its ingest's; recovery: one held for the record).
fn part_data(payload: &PayloadRecord, own: Option<PayloadHandle>) -> Result<PartData, EngineError> {
    Ok(match payload {
        PayloadRecord::Empty => PartData::Empty,
        PayloadRecord::Stored { address, .. } => {
            PartData::Stored(own.ok_or_else(|| EngineError::InvalidRequest {
                reason: format!("payload {address} is stored, but no reference is held on it"),
            })?)
        }
        PayloadRecord::Inline { address, bytes } => PartData::Inline(Box::new(InlinePayload {
            address: *address,
            bytes: Arc::clone(bytes),
        })),
    })
}

fn part_from_record(
    number: u16,
    record: &PartRecord,
    time_ms: u64,
    own: Option<PayloadHandle>,
) -> Result<Part, EngineError> {
    Ok(Part {
        number,
        size_bytes: record.size_bytes,
        md5: record.md5,
        checksum: record.checksum.clone().map(Box::new),
        time_ms,
        data: part_data(&record.payload, own)?,
    })
}

fn release_parts<'a>(parts: impl IntoIterator<Item = &'a Part>, effects: &mut Vec<Effect>) {
    effects.extend(parts.into_iter().filter_map(|p| p.data.stored()).map(Effect::Release));
}

fn release_table(parts: &PartTable, effects: &mut Vec<Effect>) {
    effects.extend(parts.stored().map(Effect::Release));
}

/// A part number S3 accepts (1..=10000), or InvalidArgument.
pub(crate) fn part_number(number: u32) -> Result<u16, EngineError> {
    match u16::try_from(number) {
        Ok(n) if (1..=10_000).contains(&n) => Ok(n),
        _ => Err(EngineError::invalid_argument(
            "Part number must be an integer between 1 and 10000, inclusive",
        )),
    }
}

/// The multipart ETag: MD5 of the concatenated binary part MD5s, and the part count.
pub fn multipart_etag<'a>(md5s: impl IntoIterator<Item = &'a [u8; 16]>) -> Etag {
    let mut hasher = Md5::new();
    let mut parts = 0u32;
    for md5 in md5s {
        hasher.update(md5);
        parts += 1;
    }
    Etag { md5: hasher.finalize().into(), parts: Some(parts) }
}

/// A composite checksum: the algorithm over the concatenated part checksums.
pub fn composite_checksum(algorithm: ChecksumAlgorithm, part_values: &[&[u8]]) -> Checksum {
    let mut digester = crate::payload::Digester::new([algorithm]);
    for value in part_values {
        digester.update(value);
    }
    let digests = digester.finish();
    let value = digests
        .checksums
        .into_iter()
        .find(|c| c.algorithm == algorithm)
        .map_or_else(Vec::new, |c| c.value);
    Checksum { algorithm, value }
}

impl State {
    /// Applies a transition recorded at `lsn`. `Err` is the transition's outcome (a rule it
    /// broke given the state it met); the state is then unchanged. `own` is the handle of the
    /// transition's own stored payload (a part's or an object's), on which the caller holds a
    /// reference that `Effect::KeepOwn` keeps.
    pub fn apply(
        &mut self,
        lsn: u64,
        transition: &Transition,
        own: Option<PayloadHandle>,
    ) -> Result<Applied, EngineError> {
        self.applied_lsn = self.applied_lsn.max(lsn);
        let time_ms = transition.time_ms;
        if let Some(condition) = &transition.condition {
            self.check_write_condition(condition, &transition.op)?;
        }
        match &transition.op {
            Op::CreateBucket { bucket } => self.create_bucket(bucket, time_ms),
            Op::DeleteBucket { bucket } => self.delete_bucket(bucket),
            Op::SetLifecycle { bucket, abort_after_days, day_ms } => {
                let rules = abort_after_days.map(|days| AbortRule {
                    id: AbortRule::UNNAMED_ID.to_owned(),
                    prefix: String::new(),
                    days,
                });
                self.set_lifecycle(bucket, rules.into_iter().collect(), *day_ms)
            }
            Op::SetLifecycleRules { bucket, rules, day_ms } => {
                self.set_lifecycle(bucket, rules.clone(), *day_ms)
            }
            Op::CreateUpload { upload_id, bucket, key, meta, expires_ms } => {
                let owner = transition.actor.as_str();
                let created = NewUpload { bucket, key, owner, meta, time_ms };
                self.create_upload(*upload_id, created, *expires_ms)
            }
            Op::PutPart { upload_id, part_number, part, expires_ms, expected_version } => {
                let number = self::part_number(*part_number)?;
                let new = part_from_record(number, part, time_ms, own)?;
                let own = matches!(part.payload, PayloadRecord::Stored { .. });
                self.put_part(*upload_id, new, own, *expires_ms, *expected_version)
            }
            Op::CopyPart {
                upload_id,
                part_number,
                source_bucket,
                source_key,
                source_etag,
                source_index,
                expires_ms,
                expected_version,
            } => {
                let number = self::part_number(*part_number)?;
                let source = self.object(source_bucket, source_key)?;
                if source.etag != *source_etag {
                    return Err(EngineError::SourceChanged);
                }
                let index = usize::try_from(*source_index).unwrap_or(usize::MAX);
                let Some(from) = source.parts.get(index) else {
                    return Err(EngineError::SourceChanged);
                };
                let new = Part { number, time_ms, ..from.clone() };
                let mut applied =
                    self.put_part(*upload_id, new, false, *expires_ms, *expected_version)?;
                if let Some(handle) = from.data.stored() {
                    applied.effects.insert(0, Effect::AddRef(handle));
                }
                Ok(applied)
            }
            Op::Complete {
                upload_id,
                bucket,
                key,
                parts,
                min_part_bytes,
                object_size_bytes,
                expected_version,
            } => {
                let complete = Completion {
                    upload_id: *upload_id,
                    bucket,
                    key,
                    parts,
                    min_part_bytes: *min_part_bytes,
                    object_size_bytes: *object_size_bytes,
                    expected_version: *expected_version,
                    time_ms,
                };
                self.complete(&complete)
            }
            Op::Abort { upload_id, reason, expected_version } => {
                self.abort(*upload_id, *reason, *expected_version, time_ms)
            }
            Op::PutObject { bucket, key, meta, part } => {
                let new = part_from_record(1, part, time_ms, own)?;
                let checksum = part.checksum.clone().map(|checksum| ObjectChecksum {
                    checksum,
                    kind: ChecksumType::FullObject,
                    parts: None,
                });
                let object = Object {
                    size_bytes: part.size_bytes,
                    etag: Etag { md5: part.md5, parts: None },
                    last_modified_ms: time_ms,
                    meta: self.interned.meta(meta),
                    checksum,
                    parts: PartTable::from_parts(vec![new]),
                    upload_id: None,
                };
                let own = matches!(part.payload, PayloadRecord::Stored { .. });
                let mut applied = self.write_object(bucket, key, object)?;
                if own {
                    applied.effects.insert(0, Effect::KeepOwn);
                }
                Ok(applied)
            }
            Op::CopyObject { source_bucket, source_key, source_etag, bucket, key, meta } => {
                let source = self.object(source_bucket, source_key)?;
                if source.etag != *source_etag {
                    return Err(EngineError::SourceChanged);
                }
                let mut object = source.clone();
                object.last_modified_ms = time_ms;
                // The copy is a new object: a repeated completion of the source's upload names
                // the source's key, not this one.
                object.upload_id = None;
                if let Some(meta) = meta {
                    // The bytes keep their checksum whatever metadata replaces the source's.
                    let meta = ObjectMeta { checksum: object.meta.checksum, ..meta.clone() };
                    object.meta = self.interned.meta(&meta);
                }
                let add: Vec<Effect> = object.parts.stored().map(Effect::AddRef).collect();
                let mut applied = self.write_object(bucket, key, object)?;
                // References are taken before the replaced object's are given back: copying an
                // object onto itself must not drop its payloads to zero on the way.
                applied.effects.splice(0..0, add);
                Ok(applied)
            }
            Op::DeleteObject { bucket, key } => self.delete_object(bucket, key),
            Op::Moves { moves } => Ok(Applied {
                outcome: Outcome::Moved,
                effects: moves.iter().cloned().map(Effect::Move).collect(),
            }),
        }
    }

    fn bucket_mut(&mut self, bucket: &str) -> Result<&mut Bucket, EngineError> {
        self.buckets.get_mut(bucket).ok_or_else(|| EngineError::no_such_bucket(bucket))
    }

    /// Checks a write's preconditions against the object its key holds now.
    fn check_write_condition(
        &self,
        condition: &WriteCondition,
        op: &Op,
    ) -> Result<(), EngineError> {
        let (bucket, key, completing) = match op {
            Op::PutObject { bucket, key, .. } => (bucket, key, None),
            Op::Complete { bucket, key, upload_id, .. } => (bucket, key, Some(*upload_id)),
            _ => {
                return Err(EngineError::InvalidRequest {
                    reason: "only PutObject and CompleteMultipartUpload take write conditions"
                        .to_owned(),
                });
            }
        };
        // A missing bucket is the operation's own error.
        let Some(found) = self.buckets.get(bucket.as_str()) else { return Ok(()) };
        let current = found.objects.get(key.as_bytes());
        // A repeated completion answers as the first did, whose conditions held then.
        if let (Some(id), Some(object)) = (completing, current)
            && object.upload_id == Some(id)
        {
            return Ok(());
        }
        let etag = current.map(|object| &object.etag);
        if let Some(wanted) = &condition.if_match
            && !wanted.matches(etag)
        {
            return Err(match current {
                None => EngineError::NoSuchKey { bucket: bucket.clone(), key: key.clone() },
                Some(_) => EngineError::PreconditionFailed { reason: "If-Match" },
            });
        }
        if let Some(unwanted) = &condition.if_none_match
            && unwanted.matches(etag)
        {
            return Err(EngineError::PreconditionFailed { reason: "If-None-Match" });
        }
        Ok(())
    }

    /// The object at `bucket`/`key`.
    pub fn object(&self, bucket: &str, key: &str) -> Result<&Object, EngineError> {
        let found = self.buckets.get(bucket).ok_or_else(|| EngineError::no_such_bucket(bucket))?;
        found.objects.get(key.as_bytes()).ok_or_else(|| EngineError::NoSuchKey {
            bucket: bucket.to_owned(),
            key: key.to_owned(),
        })
    }

    fn create_bucket(&mut self, bucket: &str, time_ms: u64) -> Result<Applied, EngineError> {
        if self.buckets.contains_key(bucket) {
            return Err(EngineError::BucketAlreadyOwnedByYou { bucket: bucket.to_owned() });
        }
        let name: ArcStr = ArcStr::from(bucket);
        let created = Bucket {
            name: ArcStr::clone(&name),
            created_ms: time_ms,
            lifecycle: Vec::new(),
            day_ms: 0,
            objects: Default::default(),
            uploads: Default::default(),
            upload_count: 0,
        };
        let info = created.info();
        self.buckets.insert(name, created);
        Ok(Applied::plain(Outcome::BucketCreated(info)))
    }

    fn delete_bucket(&mut self, bucket: &str) -> Result<Applied, EngineError> {
        let found = self.bucket_mut(bucket)?;
        if !found.objects.is_empty() || found.upload_count > 0 {
            return Err(EngineError::BucketNotEmpty {
                bucket: bucket.to_owned(),
                objects: found.objects.len() as u64,
                uploads: found.upload_count,
            });
        }
        self.buckets.remove(bucket);
        Ok(Applied::plain(Outcome::BucketDeleted))
    }

    fn set_lifecycle(
        &mut self,
        bucket: &str,
        rules: Vec<AbortRule>,
        day_ms: u64,
    ) -> Result<Applied, EngineError> {
        let found = self.bucket_mut(bucket)?;
        found.lifecycle = rules;
        found.day_ms = day_ms;
        let ids: Vec<UploadId> = found.uploads.values().flatten().copied().collect();
        let Some(found) = self.buckets.get(bucket) else {
            return Err(EngineError::no_such_bucket(bucket));
        };
        // The rules apply to uploads already in progress too, from their initiation.
        for id in ids {
            if let Some(upload) = self.uploads.get_mut(&id) {
                self.expiry.remove(&(upload.expires_ms(), id));
                upload.abort_ms =
                    abort_date(upload.initiated_ms, &upload.key.0, &found.lifecycle, day_ms);
                self.expiry.insert((upload.expires_ms(), id));
            }
        }
        Ok(Applied::plain(Outcome::LifecycleSet))
    }

    fn create_upload(
        &mut self,
        upload_id: UploadId,
        new: NewUpload<'_>,
        expires_ms: u64,
    ) -> Result<Applied, EngineError> {
        if self.uploads.contains_key(&upload_id) {
            // 128 random bits do not collide; a record that says so was replayed twice.
            return Err(EngineError::InvalidRequest { reason: "upload id in use".to_owned() });
        }
        if !self.buckets.contains_key(new.bucket) {
            return Err(EngineError::no_such_bucket(new.bucket));
        }
        let owner = self.interned.owner(new.owner);
        let meta = self.interned.meta(new.meta);
        let found = self.bucket_mut(new.bucket)?;
        let abort_ms = abort_date(new.time_ms, new.key, &found.lifecycle, found.day_ms);
        let key = Key(ArcStr::from(new.key));
        let upload = Upload {
            bucket: ArcStr::clone(&found.name),
            key: key.clone(),
            owner: ArcStr::clone(&owner),
            initiated_ms: new.time_ms,
            ttl_expires_ms: expires_ms,
            abort_ms,
            version: 1,
            meta,
            parts: PartTable::default(),
        };
        // Ordered by initiation time, then id; records apply in time order as a rule, so
        // this is nearly always a push.
        let same_key = found.uploads.entry(key).or_default();
        let position = same_key.len();
        same_key.insert(position, upload_id);
        found.upload_count = found.upload_count.saturating_add(1);
        let info = upload.info(upload_id, &found.lifecycle);
        self.expiry.insert((upload.expires_ms(), upload_id));
        self.uploads.insert(upload_id, upload);
        self.sort_key_uploads(&info.bucket, &info.key);
        Ok(Applied::plain(Outcome::UploadCreated(info)))
    }

    /// Keeps one key's uploads in id order, which is initiation order (ids start with their
    /// initiation time), whatever order their records came in.
    fn sort_key_uploads(&mut self, bucket: &str, key: &str) {
        if let Some(ids) =
            self.buckets.get_mut(bucket).and_then(|b| b.uploads.get_mut(key.as_bytes()))
        {
            ids.sort_unstable();
        }
    }

    fn put_part(
        &mut self,
        upload_id: UploadId,
        new: Part,
        own: bool,
        expires_ms: u64,
        expected_version: Option<u64>,
    ) -> Result<Applied, EngineError> {
        let upload = self
            .uploads
            .get_mut(&upload_id)
            .ok_or_else(|| EngineError::no_such_upload(upload_id))?;
        check_version(upload, expected_version)?;
        let mut effects = Vec::new();
        if own {
            effects.push(Effect::KeepOwn);
        }
        let info = new.info();
        match upload.parts.search(new.number) {
            Ok(index) => {
                if let Some(old) = upload.parts.replace(index, &new) {
                    release_parts([&old], &mut effects);
                }
            }
            Err(index) => {
                upload.parts.insert(index, &new);
                self.part_count = self.part_count.saturating_add(1);
            }
        }
        upload.version = upload.version.saturating_add(1);
        let old_expiry = upload.expires_ms();
        upload.ttl_expires_ms = upload.ttl_expires_ms.max(expires_ms);
        let new_expiry = upload.expires_ms();
        let version = upload.version;
        if new_expiry != old_expiry {
            self.expiry.remove(&(old_expiry, upload_id));
            self.expiry.insert((new_expiry, upload_id));
        }
        Ok(Applied { outcome: Outcome::PartStored(info, version), effects })
    }

    /// Removes an upload from every index; the caller releases its parts.
    fn remove_upload(&mut self, upload_id: UploadId) -> Option<Upload> {
        let upload = self.uploads.remove(&upload_id)?;
        self.expiry.remove(&(upload.expires_ms(), upload_id));
        self.part_count = self.part_count.saturating_sub(upload.parts.len() as u64);
        if let Some(bucket) = self.buckets.get_mut(&upload.bucket) {
            bucket.upload_count = bucket.upload_count.saturating_sub(1);
            let key: &[u8] = upload.key.0.as_bytes();
            if let Some(ids) = bucket.uploads.get_mut(key) {
                ids.retain(|id| *id != upload_id);
                if ids.is_empty() {
                    bucket.uploads.remove(key);
                }
            }
        }
        Some(upload)
    }

    fn complete(&mut self, c: &Completion<'_>) -> Result<Applied, EngineError> {
        let Some(upload) = self.uploads.get(&c.upload_id) else {
            return self.completed_before(c);
        };
        if &*upload.bucket != c.bucket || &*upload.key.0 != c.key {
            return Err(EngineError::no_such_upload(c.upload_id));
        }
        check_version(upload, c.expected_version)?;
        let chosen = choose_parts(upload, c)?;
        let size_bytes = chosen.iter().fold(0u64, |sum, p| sum.saturating_add(p.size_bytes));
        if let Some(declared) = c.object_size_bytes
            && declared != size_bytes
        {
            return Err(EngineError::InvalidRequest {
                reason: format!(
                    "x-amz-mp-object-size is {declared} but the parts hold {size_bytes} bytes"
                ),
            });
        }
        let checksum = object_checksum(upload.meta.checksum, &chosen, c.parts)?;
        let etag = multipart_etag(chosen.iter().map(|p| &p.md5));
        let meta = Arc::clone(&upload.meta);
        let listed: Vec<u16> = chosen.iter().map(|p| p.number).collect();
        let Some(mut upload) = self.remove_upload(c.upload_id) else {
            return Err(EngineError::no_such_upload(c.upload_id));
        };
        let mut effects = Vec::new();
        let (kept, dropped): (Vec<Part>, Vec<Part>) =
            upload.parts.take().into_iter().partition(|p| listed.binary_search(&p.number).is_ok());
        release_parts(&dropped, &mut effects);
        let object = Object {
            size_bytes,
            etag,
            last_modified_ms: c.time_ms,
            meta,
            checksum,
            parts: PartTable::from_parts(kept),
            upload_id: Some(c.upload_id),
        };
        let written = self.write_object(c.bucket, c.key, object)?;
        effects.extend(written.effects);
        let Outcome::ObjectWritten(info) = written.outcome else {
            return Err(EngineError::InvalidRequest { reason: "unexpected outcome".to_owned() });
        };
        Ok(Applied { outcome: Outcome::Completed(info), effects })
    }

    /// A completion of an upload that is gone: the same result again if it completed into the
    /// object at its key with the same parts, else NoSuchUpload.
    fn completed_before(&self, c: &Completion<'_>) -> Result<Applied, EngineError> {
        let object = self
            .buckets
            .get(c.bucket)
            .and_then(|b| b.objects.get(c.key.as_bytes()))
            .filter(|o| o.upload_id == Some(c.upload_id))
            .filter(|o| {
                o.parts.len() == c.parts.len()
                    && o.parts.iter().zip(c.parts).all(|(have, asked)| {
                        u32::from(have.number) == asked.part_number && have.md5 == asked.etag
                    })
            });
        match object {
            Some(object) => Ok(Applied::plain(Outcome::Completed(object.info(c.bucket, c.key)))),
            None => Err(EngineError::no_such_upload(c.upload_id)),
        }
    }

    fn abort(
        &mut self,
        upload_id: UploadId,
        reason: AbortReason,
        expected_version: Option<u64>,
        time_ms: u64,
    ) -> Result<Applied, EngineError> {
        let upload =
            self.uploads.get(&upload_id).ok_or_else(|| EngineError::no_such_upload(upload_id))?;
        check_version(upload, expected_version)?;
        if reason == AbortReason::Expired && upload.expires_ms() > time_ms {
            return Err(EngineError::NotDue { upload_id: upload_id.to_string() });
        }
        let Some(upload) = self.remove_upload(upload_id) else {
            return Err(EngineError::no_such_upload(upload_id));
        };
        let mut effects = Vec::new();
        release_table(&upload.parts, &mut effects);
        let bytes = upload.parts.sizes().fold(0u64, u64::saturating_add);
        let parts = upload.parts.len() as u64;
        Ok(Applied { outcome: Outcome::Aborted { parts, bytes }, effects })
    }

    /// Puts `object` at `key`, releasing the payloads of the one it replaces.
    fn write_object(
        &mut self,
        bucket: &str,
        key: &str,
        object: Object,
    ) -> Result<Applied, EngineError> {
        let found = self.bucket_mut(bucket)?;
        let info = object.info(bucket, key);
        let mut effects = Vec::new();
        match found.objects.insert(Key(ArcStr::from(key)), object) {
            Some(old) => release_table(&old.parts, &mut effects),
            None => self.object_count = self.object_count.saturating_add(1),
        }
        Ok(Applied { outcome: Outcome::ObjectWritten(info), effects })
    }

    fn delete_object(&mut self, bucket: &str, key: &str) -> Result<Applied, EngineError> {
        let found = self.bucket_mut(bucket)?;
        let mut effects = Vec::new();
        let existed = match found.objects.remove(key.as_bytes()) {
            Some(old) => {
                release_table(&old.parts, &mut effects);
                self.object_count = self.object_count.saturating_sub(1);
                true
            }
            None => false,
        };
        Ok(Applied { outcome: Outcome::ObjectDeleted { existed }, effects })
    }
}

struct NewUpload<'a> {
    bucket: &'a str,
    key: &'a str,
    owner: &'a str,
    meta: &'a ObjectMeta,
    time_ms: u64,
}

struct Completion<'a> {
    upload_id: UploadId,
    bucket: &'a str,
    key: &'a str,
    parts: &'a [CompletePart],
    min_part_bytes: u64,
    object_size_bytes: Option<u64>,
    expected_version: Option<u64>,
    time_ms: u64,
}

/// Checks a completion's list against the upload's parts (S3's order of checks: the list, then
/// each part, then sizes) and returns the parts it names.
fn choose_parts(upload: &Upload, c: &Completion<'_>) -> Result<Vec<Part>, EngineError> {
    if c.parts.is_empty() {
        return Err(EngineError::MalformedXml);
    }
    let mut previous = 0u32;
    for asked in c.parts {
        if asked.part_number <= previous {
            return Err(EngineError::InvalidPartOrder { part_number: asked.part_number, previous });
        }
        previous = asked.part_number;
    }
    let mut chosen = Vec::with_capacity(c.parts.len());
    for asked in c.parts {
        let part_number = asked.part_number;
        let part = upload
            .part(part_number)
            .ok_or(EngineError::InvalidPart { part_number, reason: "no such part was uploaded" })?;
        if part.md5 != asked.etag {
            return Err(EngineError::InvalidPart { part_number, reason: "the ETag differs" });
        }
        chosen.push(part);
    }
    let all_but_last = chosen.split_last().map_or(&[][..], |(_, rest)| rest);
    for part in all_but_last {
        if part.size_bytes < c.min_part_bytes {
            return Err(EngineError::EntityTooSmall {
                part_number: u32::from(part.number),
                size_bytes: part.size_bytes,
                min_bytes: c.min_part_bytes,
            });
        }
    }
    Ok(chosen)
}

/// The completed object's checksum, checking the parts' checksums the client listed.
fn object_checksum(
    spec: Option<crate::model::ChecksumSpec>,
    chosen: &[Part],
    asked: &[CompletePart],
) -> Result<Option<ObjectChecksum>, EngineError> {
    let Some(spec) = spec else { return Ok(None) };
    let mut values = Vec::with_capacity(chosen.len());
    for (part, asked) in chosen.iter().zip(asked) {
        let stored = part.checksum.as_deref().filter(|c| c.algorithm == spec.algorithm);
        let Some(stored) = stored else {
            return Err(EngineError::BadDigest {
                reason: format!("part {} has no {} checksum", part.number, spec.algorithm.name()),
            });
        };
        match &asked.checksum {
            Some(value) if *value == stored.value => {}
            Some(_) => {
                return Err(EngineError::BadDigest {
                    reason: format!("part {}: the checksum differs", part.number),
                });
            }
            None => {
                return Err(EngineError::BadDigest {
                    reason: format!(
                        "part {}: the completion names no {} checksum",
                        part.number,
                        spec.algorithm.name()
                    ),
                });
            }
        }
        values.push((stored.value.as_slice(), part.size_bytes));
    }
    let parts = u32::try_from(chosen.len()).unwrap_or(u32::MAX);
    let checksum = match spec.kind {
        ChecksumType::Composite => {
            let raw: Vec<&[u8]> = values.iter().map(|(v, _)| *v).collect();
            ObjectChecksum {
                checksum: composite_checksum(spec.algorithm, &raw),
                kind: ChecksumType::Composite,
                parts: Some(parts),
            }
        }
        ChecksumType::FullObject => ObjectChecksum {
            checksum: crate::checksum_combine::full_object(spec.algorithm, &values).ok_or_else(
                || EngineError::InvalidRequest {
                    reason: format!("{} has no full-object form", spec.algorithm.name()),
                },
            )?,
            kind: ChecksumType::FullObject,
            parts: None,
        },
    };
    Ok(Some(checksum))
}

impl State {
    /// A completion of an upload that is no longer in progress, answered from the state alone:
    /// the object it made, if it completed with these parts; else NoSuchUpload.
    pub fn repeat_completion(
        &self,
        upload_id: UploadId,
        bucket: &str,
        key: &str,
        parts: &[CompletePart],
    ) -> Result<ObjectInfo, EngineError> {
        let c = Completion {
            upload_id,
            bucket,
            key,
            parts,
            min_part_bytes: 0,
            object_size_bytes: None,
            expected_version: None,
            time_ms: 0,
        };
        match self.completed_before(&c)?.outcome {
            Outcome::Completed(object) => Ok(object),
            _ => Err(EngineError::no_such_upload(upload_id)),
        }
    }

    /// The checksum a completion of `upload_id` with `parts` would give its object now, with
    /// the completion's own errors (the list, the parts, their checksums; not the version or
    /// the part sizes, which its commit checks).
    ///
    /// It is decided before the commit and still holds when the commit applies: the commit
    /// fails unless every listed part still has the listed ETag and checksum, and the object
    /// checksum is a function of those checksums and the parts' sizes.
    pub fn completion_checksum(
        &self,
        upload_id: UploadId,
        bucket: &str,
        key: &str,
        parts: &[CompletePart],
    ) -> Result<Option<ObjectChecksum>, EngineError> {
        let c = Completion {
            upload_id,
            bucket,
            key,
            parts,
            min_part_bytes: 0,
            object_size_bytes: None,
            expected_version: None,
            time_ms: 0,
        };
        let upload =
            self.uploads.get(&upload_id).ok_or_else(|| EngineError::no_such_upload(upload_id))?;
        let chosen = choose_parts(upload, &c)?;
        object_checksum(upload.meta.checksum, &chosen, parts)
    }
}
