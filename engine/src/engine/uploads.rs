//! Multipart upload operations.

use std::io::Read;

use crate::engine::Engine;
use crate::engine::buckets::unexpected;
use crate::error::EngineError;
use crate::model::{
    AbortReason, ChecksumSpec, ObjectChecksum, ObjectInfo, ObjectMeta, PartInfo, UploadId,
    UploadInfo, WriteCondition,
};
use crate::names::{check_key, check_meta};
use crate::payload::Checksum;
use crate::record::{CompletePart, Op, Transition};
use crate::state::{ListParts, ListUploads, Outcome, PartsPage, UploadsPage, part_number};

/// A part to upload.
#[derive(Clone, Debug, Default)]
pub struct PartUpload<'a> {
    /// The upload's bucket.
    pub bucket: &'a str,
    /// Its key.
    pub key: &'a str,
    /// Its id.
    pub upload_id: &'a str,
    /// 1..=10000.
    pub part_number: u32,
    /// `Content-Length`, if known (a payload this small rides inline in its record).
    pub content_length: Option<u64>,
    /// `Content-MD5`, if sent.
    pub content_md5: Option<[u8; 16]>,
    /// `x-amz-checksum-*` values sent.
    pub checksums: Vec<Checksum>,
    /// Compare-and-set on the upload's version.
    pub expected_version: Option<u64>,
}

/// A part made by copying (a range of) an existing object: UploadPartCopy.
#[derive(Clone, Debug, Default)]
pub struct PartCopy<'a> {
    /// The upload's bucket.
    pub bucket: &'a str,
    /// Its key.
    pub key: &'a str,
    /// Its id.
    pub upload_id: &'a str,
    /// 1..=10000.
    pub part_number: u32,
    /// The source object's bucket.
    pub source_bucket: &'a str,
    /// Its key.
    pub source_key: &'a str,
    /// `x-amz-copy-source-range` as (first, last) byte, inclusive; `None` copies the whole
    /// object.
    pub range: Option<(u64, u64)>,
    /// Compare-and-set on the upload's version.
    pub expected_version: Option<u64>,
}

/// A part stored, and the upload's version after it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct PartStored {
    /// The part.
    pub part: PartInfo,
    /// The upload's version.
    pub version: u64,
}

/// A completion: CompleteMultipartUpload.
#[derive(Clone, Debug, Default)]
pub struct Completion<'a> {
    /// The upload's bucket.
    pub bucket: &'a str,
    /// Its key.
    pub key: &'a str,
    /// Its id.
    pub upload_id: &'a str,
    /// The parts, as the client lists them.
    pub parts: Vec<CompletePart>,
    /// `x-amz-mp-object-size`, if sent.
    pub object_size_bytes: Option<u64>,
    /// Compare-and-set on the upload's version.
    pub expected_version: Option<u64>,
    /// `If-Match` / `If-None-Match` on the object the completion replaces, decided as it applies.
    pub condition: Option<WriteCondition>,
    /// The object's checksum as the client computed it (`x-amz-checksum-*` of the completion:
    /// the full-object value, or the composite one without its `-N`): the completion fails
    /// with BadDigest unless the object's own checksum is this one.
    pub object_checksum: Option<Checksum>,
}

/// What an abort released.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Aborted {
    /// Parts.
    pub parts: u64,
    /// Their bytes.
    pub bytes: u64,
}

impl Engine {
    /// The upload `upload_id` of `bucket`/`key`, or NoSuchUpload (also for an id of another
    /// key, or text that is no id).
    pub(crate) fn find_upload(
        &self,
        bucket: &str,
        key: &str,
        upload_id: &str,
    ) -> Result<(UploadId, Option<ChecksumSpec>), EngineError> {
        let no_such = || EngineError::NoSuchUpload { upload_id: upload_id.to_owned() };
        let id: UploadId = upload_id.parse().map_err(|_| no_such())?;
        self.read_state(|state| {
            if !state.buckets.contains_key(bucket) {
                return Err(EngineError::no_such_bucket(bucket));
            }
            match state.uploads.get(&id) {
                Some(u) if &*u.bucket == bucket && &*u.key.0 == key => Ok((id, u.meta.checksum)),
                _ => Err(no_such()),
            }
        })
    }

    /// Starts an upload of `bucket`/`key` that will carry `meta`. Returns its id (128 random
    /// bits), initiation and expiry times.
    pub fn create_upload(
        &self,
        actor: &str,
        bucket: &str,
        key: &str,
        meta: ObjectMeta,
    ) -> Result<UploadInfo, EngineError> {
        check_key(key)?;
        check_meta(&meta)?;
        let now_ms = self.now_ms();
        self.head_bucket(bucket)?;
        let upload_id = UploadId::generate(now_ms).map_err(|e| EngineError::Io {
            path: self.dir.clone(),
            op: "getrandom",
            source: std::io::Error::other(e.to_string()),
        })?;
        let op = Op::CreateUpload {
            upload_id,
            bucket: bucket.to_owned(),
            key: key.to_owned(),
            meta,
            expires_ms: now_ms.saturating_add(self.config.upload_ttl_ms),
        };
        let transition = crate::record::Transition {
            time_ms: now_ms,
            actor: actor.to_owned(),
            op,
            condition: None,
        };
        match self.commit(transition, None)? {
            Outcome::UploadCreated(info) => Ok(info),
            other => Err(unexpected(other)),
        }
    }

    /// Stores a part, streamed from `body`: replaces an earlier part of that number once
    /// committed. Content-MD5 or checksum mismatches are BadDigest.
    pub fn put_part(
        &self,
        actor: &str,
        request: &PartUpload<'_>,
        body: &mut dyn Read,
    ) -> Result<PartStored, EngineError> {
        part_number(request.part_number)?;
        let (upload_id, spec) = self.find_upload(request.bucket, request.key, request.upload_id)?;
        let payload = self.take_payload(
            body,
            request.content_length,
            request.content_md5,
            &request.checksums,
            spec.map(|s| s.algorithm),
        )?;
        let op = Op::PutPart {
            upload_id,
            part_number: request.part_number,
            part: payload.record,
            expires_ms: self.now_ms().saturating_add(self.config.upload_ttl_ms),
            expected_version: request.expected_version,
        };
        match self.commit(self.transition(actor, op), payload.pending)? {
            Outcome::PartStored(part, version) => Ok(PartStored { part, version }),
            other => Err(unexpected(other)),
        }
    }

    /// Makes a part from (a byte range of) an existing object: by reference to the source's
    /// payload when the range is exactly one of its parts (no byte is copied), else by reading
    /// the range and storing it as a new payload.
    pub fn copy_part(
        &self,
        actor: &str,
        request: &PartCopy<'_>,
    ) -> Result<PartStored, EngineError> {
        part_number(request.part_number)?;
        let (upload_id, spec) = self.find_upload(request.bucket, request.key, request.upload_id)?;
        let source = self.read_state(|state| {
            state.object(request.source_bucket, request.source_key).map(|object| {
                // Each part's length and checksum algorithm.
                let spans: Vec<(u64, Option<crate::payload::ChecksumAlgorithm>)> = object
                    .parts
                    .iter()
                    .map(|p| (p.size_bytes, p.checksum.as_ref().map(|c| c.algorithm)))
                    .collect();
                (object.etag, object.size_bytes, spans)
            })
        })?;
        let (source_etag, size_bytes, parts) = source;
        let (first, last) = match request.range {
            None => (0, size_bytes.saturating_sub(1)),
            Some((first, last)) if first <= last && last < size_bytes => (first, last),
            Some((first, last)) => {
                return Err(EngineError::InvalidRange { first, last, len: size_bytes });
            }
        };
        let whole = (first, last + 1);
        let mut start = 0u64;
        let mut by_reference = None;
        for (index, (len, algorithm)) in parts.iter().enumerate() {
            let span = (start, start + len);
            let checksum_fits = spec.is_none_or(|s| Some(s.algorithm) == *algorithm);
            if (span == whole || (size_bytes == 0 && parts.len() == 1)) && checksum_fits {
                by_reference = u32::try_from(index).ok();
                break;
            }
            start += len;
        }
        let expires_ms = self.now_ms().saturating_add(self.config.upload_ttl_ms);
        let Some(source_index) = by_reference else {
            let mut reader =
                self.open_object(request.source_bucket, request.source_key, request.range)?.1;
            let upload = PartUpload {
                bucket: request.bucket,
                key: request.key,
                upload_id: request.upload_id,
                part_number: request.part_number,
                content_length: Some(reader.len()),
                content_md5: None,
                checksums: Vec::new(),
                expected_version: request.expected_version,
            };
            return self.put_part(actor, &upload, &mut reader);
        };
        let op = Op::CopyPart {
            upload_id,
            part_number: request.part_number,
            source_bucket: request.source_bucket.to_owned(),
            source_key: request.source_key.to_owned(),
            source_etag,
            source_index,
            expires_ms,
            expected_version: request.expected_version,
        };
        match self.commit(self.transition(actor, op), None)? {
            Outcome::PartStored(part, version) => Ok(PartStored { part, version }),
            other => Err(unexpected(other)),
        }
    }

    /// Completes an upload into the object at its key, by moving the listed parts' references
    /// (no byte is copied); parts not listed are released; the object replaces any other at the
    /// key, metadata included. Completing again with the same parts returns the same object.
    pub fn complete_upload(
        &self,
        actor: &str,
        request: &Completion<'_>,
    ) -> Result<ObjectInfo, EngineError> {
        if request.parts.is_empty() {
            return Err(EngineError::MalformedXml);
        }
        let upload_id = match self.find_upload(request.bucket, request.key, request.upload_id) {
            Ok((id, _)) => id,
            Err(EngineError::NoSuchUpload { .. }) => {
                let id = request.upload_id.parse().map_err(|_| EngineError::NoSuchUpload {
                    upload_id: request.upload_id.to_owned(),
                })?;
                let object = self.read_state(|state| {
                    state.repeat_completion(id, request.bucket, request.key, &request.parts)
                })?;
                check_object_checksum(request.object_checksum.as_ref(), object.checksum.as_ref())?;
                return Ok(object);
            }
            Err(e) => return Err(e),
        };
        if let Some(sent) = &request.object_checksum {
            let made = self.read_state(|state| {
                state.completion_checksum(upload_id, request.bucket, request.key, &request.parts)
            })?;
            check_object_checksum(Some(sent), made.as_ref())?;
        }
        let op = Op::Complete {
            upload_id,
            bucket: request.bucket.to_owned(),
            key: request.key.to_owned(),
            parts: request.parts.clone(),
            min_part_bytes: self.config.min_part_bytes,
            object_size_bytes: request.object_size_bytes,
            expected_version: request.expected_version,
        };
        let transition = Transition { condition: request.condition, ..self.transition(actor, op) };
        match self.commit(transition, None)? {
            Outcome::Completed(object) => Ok(object),
            other => Err(unexpected(other)),
        }
    }

    /// Aborts an upload, releasing its parts.
    pub fn abort_upload(
        &self,
        actor: &str,
        bucket: &str,
        key: &str,
        upload_id: &str,
        expected_version: Option<u64>,
    ) -> Result<Aborted, EngineError> {
        let (upload_id, _) = self.find_upload(bucket, key, upload_id)?;
        let op = Op::Abort { upload_id, reason: AbortReason::Aborted, expected_version };
        match self.commit(self.transition(actor, op), None)? {
            Outcome::Aborted { parts, bytes } => Ok(Aborted { parts, bytes }),
            other => Err(unexpected(other)),
        }
    }

    /// An upload in progress.
    pub fn get_upload(
        &self,
        bucket: &str,
        key: &str,
        upload_id: &str,
    ) -> Result<UploadInfo, EngineError> {
        let (id, _) = self.find_upload(bucket, key, upload_id)?;
        self.read_state(|s| s.uploads.get(&id).map(|u| s.upload_info(id, u)))
            .ok_or_else(|| EngineError::no_such_upload(id))
    }

    /// One page of an upload's parts (ListParts).
    pub fn list_parts(
        &self,
        bucket: &str,
        key: &str,
        upload_id: &str,
        args: &ListParts,
    ) -> Result<PartsPage, EngineError> {
        let (id, _) = self.find_upload(bucket, key, upload_id)?;
        self.read_state(|s| s.list_parts(id, args))
    }

    /// One page of a bucket's uploads in progress (ListMultipartUploads).
    pub fn list_uploads(
        &self,
        bucket: &str,
        args: &ListUploads,
    ) -> Result<UploadsPage, EngineError> {
        self.read_state(|s| s.list_uploads(bucket, args))
    }
}

/// Checks the object checksum a client sent with its completion against the object's.
fn check_object_checksum(
    sent: Option<&Checksum>,
    made: Option<&ObjectChecksum>,
) -> Result<(), EngineError> {
    let Some(sent) = sent else { return Ok(()) };
    let Some(made) = made else {
        return Err(EngineError::InvalidRequest {
            reason: format!(
                "the upload was created without a checksum algorithm, so its object has no {} \
                 checksum to compare",
                sent.algorithm.name()
            ),
        });
    };
    if made.checksum.algorithm != sent.algorithm {
        return Err(EngineError::BadDigest {
            reason: format!(
                "the upload's checksum algorithm is {}, not {}",
                made.checksum.algorithm.name(),
                sent.algorithm.name()
            ),
        });
    }
    if made.checksum.value != sent.value {
        return Err(EngineError::BadDigest {
            reason: format!("the object's {} checksum differs", sent.algorithm.name()),
        });
    }
    Ok(())
}
