//! Conversions between s3s's DTO fields and the engine's values: times, ETags, checksums,
//! metadata, digests sent by clients.

use std::time::{Duration, SystemTime};

use base64::Engine as _;
use base64::engine::general_purpose::STANDARD as BASE64;
use s3s::S3Result;
use s3s::dto::{self, ETag, Timestamp};
use tessera_engine::payload::{Checksum, ChecksumAlgorithm};
use tessera_engine::{ChecksumSpec, ChecksumType, Etag, ObjectChecksum, ObjectMeta};

use crate::s3::errors::{invalid_request, s3_error};

/// The storage class every object and upload reports.
pub(crate) const STORAGE_CLASS: &str = "STANDARD";

/// An engine time (milliseconds since the epoch) as an s3s timestamp.
pub(crate) fn timestamp(ms: u64) -> Timestamp {
    Timestamp::from(SystemTime::UNIX_EPOCH + Duration::from_millis(ms))
}

/// Seconds since the epoch of an s3s timestamp (HTTP dates have whole seconds), or `None`
/// before the epoch.
pub(crate) fn epoch_seconds(ts: &Timestamp) -> Option<u64> {
    let time: SystemTime = time_of(ts);
    time.duration_since(SystemTime::UNIX_EPOCH).ok().map(|d| d.as_secs())
}

fn time_of(ts: &Timestamp) -> SystemTime {
    let odt: time::OffsetDateTime = ts.clone().into();
    SystemTime::from(odt)
}

/// An engine ETag as S3 shows it.
pub(crate) fn etag(etag: &Etag) -> ETag {
    ETag::Strong(etag.to_string())
}

/// A client's ETag, or `None` if it is none this store makes.
pub(crate) fn parse_etag(etag: &ETag) -> Option<Etag> {
    Etag::parse(etag.value())
}

/// A byte count as S3's signed integer.
pub(crate) fn size(bytes: u64) -> i64 {
    i64::try_from(bytes).unwrap_or(i64::MAX)
}

/// A count as S3's 32-bit integer.
pub(crate) fn count(n: u32) -> i32 {
    i32::try_from(n).unwrap_or(i32::MAX)
}

/// An engine checksum algorithm as S3 names it.
pub(crate) fn algorithm_dto(algorithm: ChecksumAlgorithm) -> dto::ChecksumAlgorithm {
    dto::ChecksumAlgorithm::from_static(algorithm.name())
}

/// An S3 checksum algorithm name, or InvalidRequest.
pub(crate) fn algorithm(name: &str) -> S3Result<ChecksumAlgorithm> {
    ChecksumAlgorithm::ALL
        .into_iter()
        .find(|a| a.name().eq_ignore_ascii_case(name))
        .ok_or_else(|| invalid_request(format!("unknown checksum algorithm {name:?}")))
}

/// An engine checksum type as S3 names it.
pub(crate) fn checksum_type_dto(kind: ChecksumType) -> dto::ChecksumType {
    dto::ChecksumType::from_static(kind.name())
}

/// An S3 checksum type name, or InvalidRequest.
pub(crate) fn checksum_type(name: &str) -> S3Result<ChecksumType> {
    [ChecksumType::Composite, ChecksumType::FullObject]
        .into_iter()
        .find(|k| k.name().eq_ignore_ascii_case(name))
        .ok_or_else(|| invalid_request(format!("unknown checksum type {name:?}")))
}

/// The checksum spec of `x-amz-checksum-algorithm` and `x-amz-checksum-type`.
pub(crate) fn checksum_spec(
    algorithm_name: Option<&dto::ChecksumAlgorithm>,
    type_name: Option<&dto::ChecksumType>,
) -> S3Result<Option<ChecksumSpec>> {
    let Some(algorithm_name) = algorithm_name else {
        if type_name.is_some() {
            return Err(invalid_request("x-amz-checksum-type requires x-amz-checksum-algorithm"));
        }
        return Ok(None);
    };
    let algorithm = algorithm(algorithm_name.as_str())?;
    let spec = match type_name {
        Some(name) => ChecksumSpec { algorithm, kind: checksum_type(name.as_str())? },
        None => ChecksumSpec::default_for(algorithm),
    };
    Ok(Some(spec))
}

/// The five `x-amz-checksum-*` fields of a request or response.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub(crate) struct ChecksumFields {
    pub crc32: Option<String>,
    pub crc32c: Option<String>,
    pub crc64nvme: Option<String>,
    pub sha1: Option<String>,
    pub sha256: Option<String>,
}

impl ChecksumFields {
    fn slot(&mut self, algorithm: ChecksumAlgorithm) -> &mut Option<String> {
        match algorithm {
            ChecksumAlgorithm::Crc32 => &mut self.crc32,
            ChecksumAlgorithm::Crc32c => &mut self.crc32c,
            ChecksumAlgorithm::Crc64Nvme => &mut self.crc64nvme,
            ChecksumAlgorithm::Sha1 => &mut self.sha1,
            ChecksumAlgorithm::Sha256 => &mut self.sha256,
        }
    }

    /// The fields showing a part's checksum.
    pub fn of_part(checksum: Option<&Checksum>) -> ChecksumFields {
        let mut fields = ChecksumFields::default();
        if let Some(c) = checksum {
            *fields.slot(c.algorithm) = Some(BASE64.encode(&c.value));
        }
        fields
    }

    /// The fields showing an object's checksum (a composite one with its `-N`).
    pub fn of_object(checksum: Option<&ObjectChecksum>) -> ChecksumFields {
        let mut fields = ChecksumFields::default();
        if let Some(c) = checksum {
            let mut text = BASE64.encode(&c.checksum.value);
            if let (ChecksumType::Composite, Some(n)) = (c.kind, c.parts) {
                text.push_str(&format!("-{n}"));
            }
            *fields.slot(c.checksum.algorithm) = Some(text);
        }
        fields
    }

    /// The values a client sent, decoded (InvalidRequest if one is not base64 of the
    /// algorithm's digest length).
    pub fn decode(&self) -> S3Result<Vec<Checksum>> {
        let sent = [
            (ChecksumAlgorithm::Crc32, &self.crc32, 4),
            (ChecksumAlgorithm::Crc32c, &self.crc32c, 4),
            (ChecksumAlgorithm::Crc64Nvme, &self.crc64nvme, 8),
            (ChecksumAlgorithm::Sha1, &self.sha1, 20),
            (ChecksumAlgorithm::Sha256, &self.sha256, 32),
        ];
        let mut out = Vec::new();
        for (algorithm, text, len) in sent {
            let Some(text) = text else { continue };
            let value =
                BASE64.decode(text.trim()).ok().filter(|v| v.len() == len).ok_or_else(|| {
                    invalid_request(format!(
                        "the value of x-amz-checksum-{} is not a base64 {} checksum",
                        algorithm.name().to_ascii_lowercase(),
                        algorithm.name()
                    ))
                })?;
            out.push(Checksum { algorithm, value });
        }
        Ok(out)
    }

    /// The object checksum a CompleteMultipartUpload sent: at most one field, whose value may
    /// end in a composite checksum's `-N`, N being the number of parts listed (else BadDigest).
    pub fn decode_object(&self, parts_listed: usize) -> S3Result<Option<Checksum>> {
        let mut values = self.clone();
        for algorithm in ChecksumAlgorithm::ALL {
            let Some(text) = values.slot(algorithm) else { continue };
            // Base64 has no '-': a '-' can only start the part count.
            if let Some((value, count)) = text.trim().rsplit_once('-') {
                if count.parse::<usize>().ok() != Some(parts_listed) {
                    return Err(s3_error(
                        s3s::S3ErrorCode::BadDigest,
                        400,
                        format!(
                            "x-amz-checksum-{} names {count} parts but the completion lists \
                             {parts_listed}",
                            algorithm.name().to_ascii_lowercase()
                        ),
                    ));
                }
                *text = value.to_owned();
            }
        }
        let mut sent = values.decode()?;
        if sent.len() > 1 {
            return Err(invalid_request("a completion may carry one object checksum, not several"));
        }
        Ok(sent.pop())
    }
}

/// Fills the checksum fields of any output DTO that has the five of them.
macro_rules! set_checksums {
    ($out:expr, $fields:expr) => {{
        let fields = $fields;
        $out.checksum_crc32 = fields.crc32;
        $out.checksum_crc32c = fields.crc32c;
        $out.checksum_crc64nvme = fields.crc64nvme;
        $out.checksum_sha1 = fields.sha1;
        $out.checksum_sha256 = fields.sha256;
    }};
}
pub(crate) use set_checksums;

/// Reads the checksum fields of any input DTO that has the five of them.
macro_rules! checksums_of {
    ($input:expr) => {
        $crate::s3::convert::ChecksumFields {
            crc32: $input.checksum_crc32.clone(),
            crc32c: $input.checksum_crc32c.clone(),
            crc64nvme: $input.checksum_crc64nvme.clone(),
            sha1: $input.checksum_sha1.clone(),
            sha256: $input.checksum_sha256.clone(),
        }
    };
}
pub(crate) use checksums_of;

/// `Content-MD5`: base64 of 16 bytes, else InvalidDigest.
pub(crate) fn content_md5(text: Option<&String>) -> S3Result<Option<[u8; 16]>> {
    let Some(text) = text else { return Ok(None) };
    let bytes = BASE64.decode(text.trim()).ok();
    match bytes.and_then(|b| <[u8; 16]>::try_from(b.as_slice()).ok()) {
        Some(md5) => Ok(Some(md5)),
        None => Err(s3_error(
            s3s::S3ErrorCode::InvalidDigest,
            400,
            "the Content-MD5 you specified is not valid",
        )),
    }
}

/// A declared body length, if the client declared one.
pub(crate) fn content_length(length: Option<i64>) -> S3Result<Option<u64>> {
    match length {
        None => Ok(None),
        Some(n) => u64::try_from(n)
            .map(Some)
            .map_err(|_| invalid_request("Content-Length must not be negative")),
    }
}

/// Object metadata from a request's content type, user metadata and checksum spec. Names are
/// sorted so that the stored metadata does not depend on hash order.
pub(crate) fn object_meta(
    content_type: Option<&dto::ContentType>,
    metadata: Option<&dto::Metadata>,
    checksum: Option<ChecksumSpec>,
) -> ObjectMeta {
    let mut user: Vec<(String, String)> = metadata
        .map(|m| m.iter().map(|(k, v)| (k.to_ascii_lowercase(), v.clone())).collect())
        .unwrap_or_default();
    user.sort();
    ObjectMeta { content_type: content_type.map(|c| c.to_string()), user, checksum }
}

/// User metadata as an output DTO's map (`None` when there is none).
pub(crate) fn metadata_dto(meta: &ObjectMeta) -> Option<dto::Metadata> {
    (!meta.user.is_empty()).then(|| meta.user.iter().cloned().collect())
}

/// A stored content type as an output DTO's value.
pub(crate) fn content_type_dto(meta: &ObjectMeta) -> Option<dto::ContentType> {
    meta.content_type.as_deref().and_then(|t| t.parse().ok())
}

/// The owner an actor (access key) is shown as.
pub(crate) fn owner(actor: &str) -> dto::Owner {
    dto::Owner { display_name: Some(actor.to_owned()), id: Some(actor.to_owned()) }
}

/// The initiator an actor is shown as.
pub(crate) fn initiator(actor: &str) -> dto::Initiator {
    dto::Initiator { display_name: Some(actor.to_owned()), id: Some(actor.to_owned()) }
}

/// A page size argument: at most 1000 (the engine caps it), never negative.
pub(crate) fn page_size(asked: Option<i32>, name: &str) -> S3Result<Option<u32>> {
    match asked {
        None => Ok(None),
        Some(n) => u32::try_from(n).map(Some).map_err(|_| {
            crate::s3::errors::invalid_argument(format!("{name} must not be negative"))
        }),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn checksum_values_decode_by_their_lengths() {
        let fields = ChecksumFields { crc32: Some("AAAAAA==".into()), ..Default::default() };
        let sent = fields.decode().unwrap();
        assert_eq!(sent, vec![Checksum { algorithm: ChecksumAlgorithm::Crc32, value: vec![0; 4] }]);
        let bad = ChecksumFields { sha256: Some("AAAAAA==".into()), ..Default::default() };
        assert!(bad.decode().is_err());
    }

    #[test]
    fn content_md5_is_16_bytes_of_base64() {
        assert_eq!(content_md5(Some(&"AAAAAAAAAAAAAAAAAAAAAA==".into())).unwrap(), Some([0; 16]));
        assert!(content_md5(Some(&"nope".into())).is_err());
        assert!(content_md5(Some(&"AAAA".into())).is_err());
    }

    #[test]
    fn composite_checksums_show_their_part_count() {
        let c = ObjectChecksum {
            checksum: Checksum { algorithm: ChecksumAlgorithm::Crc32, value: vec![0, 0, 0, 1] },
            kind: ChecksumType::Composite,
            parts: Some(3),
        };
        assert_eq!(ChecksumFields::of_object(Some(&c)).crc32.as_deref(), Some("AAAAAQ==-3"));
    }

    #[test]
    fn timestamps_round_trip_to_seconds() {
        assert_eq!(epoch_seconds(&timestamp(1_700_000_000_999)), Some(1_700_000_000));
    }
}
