//! Object operations, and taking a payload in (inline or into the payload store).

use std::io::Read;
use std::sync::Arc;

use crate::engine::Engine;
use crate::engine::buckets::unexpected;
use crate::error::EngineError;
use crate::model::{ChecksumSpec, ChecksumType, ObjectInfo, ObjectMeta, WriteCondition};
use crate::names::{check_key, check_meta};
use crate::payload::{
    Checksum, ChecksumAlgorithm, Digester, Expected, Location, Pending, check_expected,
};
use crate::record::{Op, PartRecord, PayloadRecord, Transition};
use crate::state::{ListObjects, ObjectsPage, Outcome};

/// An object to write from one payload: PutObject.
#[derive(Clone, Debug, Default)]
pub struct ObjectPut<'a> {
    /// The bucket.
    pub bucket: &'a str,
    /// The key.
    pub key: &'a str,
    /// Content type and user metadata; `checksum` names the algorithm to compute and keep
    /// (`x-amz-checksum-algorithm`), else the first of `checksums` is kept.
    pub meta: ObjectMeta,
    /// `Content-Length`, if known.
    pub content_length: Option<u64>,
    /// `Content-MD5`, if sent.
    pub content_md5: Option<[u8; 16]>,
    /// `x-amz-checksum-*` values sent.
    pub checksums: Vec<Checksum>,
    /// `If-Match` / `If-None-Match` on the object it replaces, decided as it applies.
    pub condition: Option<WriteCondition>,
}

/// A payload taken in: its record, and the pending reference of a stored one.
pub(crate) struct TakenPayload {
    pub record: PartRecord,
    pub pending: Option<Pending>,
}

impl Engine {
    /// Takes a payload from `body`: a small one with a known length into memory (it rides in
    /// its record), any other into the payload store (synced before this returns). Checked
    /// against `md5` and `checksums`; `keep` is the checksum algorithm the part records.
    pub(crate) fn take_payload(
        &self,
        body: &mut dyn Read,
        declared_len: Option<u64>,
        md5: Option<[u8; 16]>,
        checksums: &[Checksum],
        keep: Option<ChecksumAlgorithm>,
    ) -> Result<TakenPayload, EngineError> {
        let keep = keep.or_else(|| checksums.first().map(|c| c.algorithm));
        let expected =
            Expected { md5, checksums: checksums.to_vec(), compute: keep.into_iter().collect() };
        let pick = |computed: &[Checksum]| {
            keep.and_then(|a| computed.iter().find(|c| c.algorithm == a).cloned())
        };
        match declared_len {
            Some(len) if len <= self.config.inline_payload_bytes_max => {
                let bytes = read_exactly(body, len)?;
                let mut wanted: Vec<_> = checksums.iter().map(|c| c.algorithm).collect();
                wanted.extend(keep);
                let mut digester = Digester::new(wanted);
                digester.update(&bytes);
                let digests = digester.finish();
                check_expected(&expected, &digests)?;
                let payload = if bytes.is_empty() {
                    PayloadRecord::Empty
                } else {
                    PayloadRecord::Inline { address: digests.address, bytes: Arc::from(bytes) }
                };
                let record = PartRecord {
                    size_bytes: len,
                    md5: digests.md5,
                    checksum: pick(&digests.checksums),
                    payload,
                };
                Ok(TakenPayload { record, pending: None })
            }
            _ => {
                let pending = self.payload.ingest(body, declared_len, expected)?;
                let receipt = pending.receipt();
                let payload = match &receipt.location {
                    Location::Segment { segment, offset, .. } => PayloadRecord::Stored {
                        address: receipt.address,
                        segment: *segment,
                        offset: *offset,
                        healed_from: receipt.healed_from.as_ref().and_then(|from| match from {
                            Location::Segment { segment, offset, .. } => Some((*segment, *offset)),
                            _ => None,
                        }),
                    },
                    Location::Empty | Location::Inline(_) => PayloadRecord::Empty,
                };
                let record = PartRecord {
                    size_bytes: receipt.len,
                    md5: receipt.md5,
                    checksum: pick(&receipt.checksums),
                    payload,
                };
                let pending =
                    matches!(record.payload, PayloadRecord::Stored { .. }).then_some(pending);
                Ok(TakenPayload { record, pending })
            }
        }
    }

    /// Writes an object from one payload, streamed from `body`; replaces any object at the key.
    pub fn put_object(
        &self,
        actor: &str,
        request: &ObjectPut<'_>,
        body: &mut dyn Read,
    ) -> Result<ObjectInfo, EngineError> {
        check_key(request.key)?;
        check_meta(&request.meta)?;
        self.head_bucket(request.bucket)?;
        let keep = request
            .meta
            .checksum
            .map(|s| s.algorithm)
            .or_else(|| request.checksums.first().map(|c| c.algorithm));
        let payload = self.take_payload(
            body,
            request.content_length,
            request.content_md5,
            &request.checksums,
            keep,
        )?;
        let mut meta = request.meta.clone();
        meta.checksum =
            keep.map(|algorithm| ChecksumSpec { algorithm, kind: ChecksumType::FullObject });
        let op = Op::PutObject {
            bucket: request.bucket.to_owned(),
            key: request.key.to_owned(),
            meta,
            part: payload.record,
        };
        let transition = Transition { condition: request.condition, ..self.transition(actor, op) };
        match self.commit(transition, payload.pending)? {
            Outcome::ObjectWritten(object) => Ok(object),
            other => Err(unexpected(other)),
        }
    }

    /// Copies an object by reference to its payloads (no byte is copied). `meta` replaces the
    /// source's metadata (`REPLACE`); `None` keeps it (`COPY`).
    pub fn copy_object(
        &self,
        actor: &str,
        (source_bucket, source_key): (&str, &str),
        (bucket, key): (&str, &str),
        meta: Option<ObjectMeta>,
    ) -> Result<ObjectInfo, EngineError> {
        check_key(key)?;
        if let Some(meta) = &meta {
            check_meta(meta)?;
        }
        self.head_bucket(bucket)?;
        let source_etag = self.head_object(source_bucket, source_key)?.etag;
        let op = Op::CopyObject {
            source_bucket: source_bucket.to_owned(),
            source_key: source_key.to_owned(),
            source_etag,
            bucket: bucket.to_owned(),
            key: key.to_owned(),
            meta,
        };
        match self.commit(self.transition(actor, op), None)? {
            Outcome::ObjectWritten(object) => Ok(object),
            other => Err(unexpected(other)),
        }
    }

    /// Deletes an object, releasing its payloads. Deleting a missing key succeeds (S3's 204);
    /// returns whether there was one.
    pub fn delete_object(&self, actor: &str, bucket: &str, key: &str) -> Result<bool, EngineError> {
        self.head_bucket(bucket)?;
        let exists = self.read_state(|s| s.object(bucket, key).is_ok());
        if !exists {
            return Ok(false);
        }
        let op = Op::DeleteObject { bucket: bucket.to_owned(), key: key.to_owned() };
        match self.commit(self.transition(actor, op), None)? {
            Outcome::ObjectDeleted { existed } => Ok(existed),
            other => Err(unexpected(other)),
        }
    }

    /// An object's metadata, or NoSuchBucket / NoSuchKey.
    pub fn head_object(&self, bucket: &str, key: &str) -> Result<ObjectInfo, EngineError> {
        self.read_state(|s| s.object(bucket, key).map(|o| o.info(bucket, key)))
    }

    /// An object's parts (for GetObjectAttributes), in order.
    pub fn object_parts(
        &self,
        bucket: &str,
        key: &str,
    ) -> Result<Vec<crate::model::PartInfo>, EngineError> {
        self.read_state(|s| {
            s.object(bucket, key).map(|o| o.parts.iter().map(|p| p.info()).collect())
        })
    }

    /// One page of a bucket's objects (ListObjectsV2).
    pub fn list_objects(
        &self,
        bucket: &str,
        args: &ListObjects,
    ) -> Result<ObjectsPage, EngineError> {
        self.read_state(|s| s.list_objects(bucket, args))
    }
}

/// Reads exactly `len` bytes: fewer is IncompleteBody, more is an error too.
fn read_exactly(body: &mut dyn Read, len: u64) -> Result<Vec<u8>, EngineError> {
    let capacity = usize::try_from(len).unwrap_or(0);
    let mut bytes = Vec::with_capacity(capacity);
    let mut limited = body.take(len.saturating_add(1));
    limited.read_to_end(&mut bytes).map_err(|source| {
        EngineError::from(crate::payload::PayloadError::Stream {
            received: bytes.len() as u64,
            source,
        })
    })?;
    let received = bytes.len() as u64;
    if received < len {
        return Err(EngineError::IncompleteBody { declared: len, received });
    }
    if received > len {
        return Err(EngineError::from(crate::payload::PayloadError::LongStream { declared: len }));
    }
    Ok(bytes)
}
