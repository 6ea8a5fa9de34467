//! The values the engine's API takes and returns: ids, metadata, ETags, what a listing shows.

use std::fmt;
use std::str::FromStr;

use serde::{Deserialize, Serialize};

use crate::payload::{Checksum, ChecksumAlgorithm};

/// An upload's id: its initiation time (milliseconds, 8 bytes big-endian) then 128 random bits,
/// shown as 48 lowercase hex digits. The time prefix makes the ids of one key sort in
/// initiation order, as ListMultipartUploads lists them, so an upload-id marker keeps its place
/// even after its upload ended; the random bits make it unguessable.
#[derive(Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
pub struct UploadId(pub [u8; 24]);

impl UploadId {
    /// A fresh id for an upload initiated at `initiated_ms`, its random part from the operating
    /// system's random source.
    pub fn generate(initiated_ms: u64) -> Result<UploadId, getrandom::Error> {
        let mut bytes = [0u8; 24];
        let (time, random) = bytes.split_at_mut(8);
        time.copy_from_slice(&initiated_ms.to_be_bytes());
        getrandom::fill(random)?;
        Ok(UploadId(bytes))
    }
}

impl fmt::Display for UploadId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&hex::encode(self.0))
    }
}

impl fmt::Debug for UploadId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "UploadId({self})")
    }
}

/// The text is not an id this engine gave out.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("not an upload id: {0:?}")]
pub struct BadUploadId(pub String);

impl FromStr for UploadId {
    type Err = BadUploadId;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        let mut bytes = [0u8; 24];
        match hex::decode_to_slice(s, &mut bytes) {
            Ok(()) => Ok(UploadId(bytes)),
            Err(_) => Err(BadUploadId(s.to_owned())),
        }
    }
}

/// How an object's checksum covers it (`x-amz-checksum-type`).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub enum ChecksumType {
    /// A checksum of the parts' checksums, with `-N`.
    Composite,
    /// The checksum of the whole object's bytes (CRCs only).
    FullObject,
}

impl ChecksumType {
    /// S3's name (`COMPOSITE`, `FULL_OBJECT`).
    pub fn name(self) -> &'static str {
        match self {
            ChecksumType::Composite => "COMPOSITE",
            ChecksumType::FullObject => "FULL_OBJECT",
        }
    }
}

/// An upload's (and its object's) additional checksum: which algorithm, which type.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub struct ChecksumSpec {
    /// The algorithm.
    pub algorithm: ChecksumAlgorithm,
    /// Composite or full-object.
    pub kind: ChecksumType,
}

impl ChecksumSpec {
    /// The spec S3 assumes when a client names only the algorithm: composite, except for
    /// CRC-64/NVME, which has only a full-object form.
    pub fn default_for(algorithm: ChecksumAlgorithm) -> ChecksumSpec {
        let kind = match algorithm {
            ChecksumAlgorithm::Crc64Nvme => ChecksumType::FullObject,
            _ => ChecksumType::Composite,
        };
        ChecksumSpec { algorithm, kind }
    }

    /// Whether S3 allows this combination (full-object: CRCs only; composite: not CRC-64).
    pub fn is_allowed(self) -> bool {
        match self.kind {
            ChecksumType::FullObject => {
                !matches!(self.algorithm, ChecksumAlgorithm::Sha1 | ChecksumAlgorithm::Sha256)
            }
            ChecksumType::Composite => self.algorithm != ChecksumAlgorithm::Crc64Nvme,
        }
    }
}

/// What an object carries beside its bytes. Completion gives the object the upload's
/// metadata, replacing all of the old object's.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct ObjectMeta {
    /// `Content-Type`.
    pub content_type: Option<String>,
    /// `x-amz-meta-*` pairs, names without the prefix.
    pub user: Vec<(String, String)>,
    /// The additional checksum asked for at creation.
    pub checksum: Option<ChecksumSpec>,
}

impl ObjectMeta {
    /// Bytes S3 counts against the 2 KiB user-metadata limit: names and values.
    pub fn user_bytes(&self) -> usize {
        self.user.iter().map(|(name, value)| name.len() + value.len()).sum()
    }
}

/// An S3 ETag: the MD5 of the bytes, or for a multipart object the MD5 of the parts' MD5s
/// and the part count. Displayed without quotes.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub struct Etag {
    /// The digest.
    pub md5: [u8; 16],
    /// The part count of a multipart object.
    pub parts: Option<u32>,
}

/// What a write's precondition compares the object at its key with.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub enum EtagMatch {
    /// Any object (`*`).
    Any,
    /// An object with this ETag.
    Etag(Etag),
}

impl EtagMatch {
    /// Whether `object`'s ETag (`None`: no object at the key) matches.
    pub fn matches(&self, object: Option<&Etag>) -> bool {
        match (self, object) {
            (_, None) => false,
            (EtagMatch::Any, Some(_)) => true,
            (EtagMatch::Etag(wanted), Some(etag)) => wanted == etag,
        }
    }
}

/// Preconditions on the object a write replaces (`If-Match`, `If-None-Match` of PutObject and
/// CompleteMultipartUpload). They are decided as the write applies, in commit order, so two
/// writers racing with `If-None-Match: *` cannot both win.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct WriteCondition {
    /// The key must hold a matching object: else NoSuchKey (no object) or PreconditionFailed.
    pub if_match: Option<EtagMatch>,
    /// The key must not hold a matching object: else PreconditionFailed.
    pub if_none_match: Option<EtagMatch>,
}

impl fmt::Display for Etag {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&hex::encode(self.md5))?;
        match self.parts {
            Some(n) => write!(f, "-{n}"),
            None => Ok(()),
        }
    }
}

impl Etag {
    /// Parses an ETag as clients send it (quotes optional); `None` if malformed.
    pub fn parse(text: &str) -> Option<Etag> {
        let text = text.trim().trim_matches('"');
        let (digest, parts) = match text.split_once('-') {
            Some((digest, n)) => (digest, Some(n.parse().ok()?)),
            None => (text, None),
        };
        let mut md5 = [0u8; 16];
        hex::decode_to_slice(digest, &mut md5).ok()?;
        Some(Etag { md5, parts })
    }
}

/// An object's additional checksum as S3 reports it.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct ObjectChecksum {
    /// Algorithm and value.
    pub checksum: Checksum,
    /// Composite or full-object.
    pub kind: ChecksumType,
    /// For a composite checksum, the part count (the `-N` suffix).
    pub parts: Option<u32>,
}

/// Why an upload ended without completing.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub enum AbortReason {
    /// A client aborted it.
    Aborted,
    /// It expired (TTL or the bucket's lifecycle rule).
    Expired,
}

/// A part of an upload, or of an object made by completion.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct PartInfo {
    /// 1..=10000.
    pub part_number: u32,
    /// Its length.
    pub size_bytes: u64,
    /// Its ETag (the MD5 of its bytes).
    pub etag: Etag,
    /// Its additional checksum, when the upload has one.
    pub checksum: Option<Checksum>,
    /// When it was uploaded.
    pub last_modified_ms: u64,
}

/// An upload in progress.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct UploadInfo {
    /// Its id.
    pub upload_id: UploadId,
    /// The bucket.
    pub bucket: String,
    /// The object key it will complete to.
    pub key: String,
    /// Who created it.
    pub owner: String,
    /// When it was created.
    pub initiated_ms: u64,
    /// When it expires unless activity extends it (the TTL or the lifecycle rule, whichever
    /// comes first).
    pub expires_ms: u64,
    /// When the bucket's lifecycle rule aborts it, if one applies to its key.
    pub abort_ms: Option<u64>,
    /// The id of that rule.
    pub abort_rule_id: Option<String>,
    /// Bumped by each of its transitions.
    pub version: u64,
    /// Metadata the object will get.
    pub meta: ObjectMeta,
}

/// An object.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ObjectInfo {
    /// The bucket.
    pub bucket: String,
    /// The key.
    pub key: String,
    /// Its length.
    pub size_bytes: u64,
    /// Its ETag.
    pub etag: Etag,
    /// When it was written.
    pub last_modified_ms: u64,
    /// Content type, user metadata, checksum spec.
    pub meta: ObjectMeta,
    /// Its additional checksum, if it has one.
    pub checksum: Option<ObjectChecksum>,
    /// Its part count, when it was completed from an upload.
    pub parts_count: Option<u32>,
    /// The upload it was completed from.
    pub upload_id: Option<UploadId>,
}

/// A bucket's lifecycle rule that aborts incomplete multipart uploads
/// (`AbortIncompleteMultipartUpload.DaysAfterInitiation`) under a key prefix.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct AbortRule {
    /// The rule's `ID`, unique in its bucket (at most [`AbortRule::ID_BYTES_MAX`] bytes).
    pub id: String,
    /// The keys it applies to: those that start with it (empty: every key).
    pub prefix: String,
    /// Lifecycle days after initiation (at least 1).
    pub days: u32,
}

impl AbortRule {
    /// S3's bound on a rule's id.
    pub const ID_BYTES_MAX: usize = 255;
    /// S3's bound on the rules of a bucket's configuration.
    pub const RULES_MAX: usize = 1000;
    /// The id of a rule set before rules had ids (record 1's `SetLifecycle`): the id they
    /// were shown with.
    pub const UNNAMED_ID: &'static str = "abort-incomplete-multipart-upload";

    /// Whether it applies to `key`.
    pub fn applies_to(&self, key: &str) -> bool {
        key.starts_with(&self.prefix)
    }

    /// Of `rules`, the one that aborts an upload at `key` first (the fewest days; of equals,
    /// the first listed), if any applies.
    pub fn first_for<'r>(rules: &'r [AbortRule], key: &str) -> Option<&'r AbortRule> {
        rules.iter().filter(|r| r.applies_to(key)).min_by_key(|r| r.days)
    }
}

/// A bucket.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct BucketInfo {
    /// Its name.
    pub name: String,
    /// When it was created.
    pub created_ms: u64,
    /// Its lifecycle rules (`AbortIncompleteMultipartUpload`), in the order they were given.
    pub lifecycle: Vec<AbortRule>,
}
