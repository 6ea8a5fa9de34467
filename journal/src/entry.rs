//! One journal entry: a committed transition as history (who, what, when, on which upload,
//! with which outcome), and its JSON line.

use serde::{Deserialize, Serialize};

/// Bytes of an upload id (the engine's: 8 bytes of initiation time, 16 random).
pub const UPLOAD_ID_BYTES: usize = 24;

/// What a transition did. The variant order is part of the format (docs/format.md §12.4):
/// new operations go at the end.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub enum Operation {
    /// CreateBucket.
    CreateBucket,
    /// DeleteBucket.
    DeleteBucket,
    /// PutBucketLifecycleConfiguration.
    SetLifecycle,
    /// CreateMultipartUpload.
    CreateUpload,
    /// UploadPart.
    PutPart,
    /// UploadPartCopy.
    CopyPart,
    /// CompleteMultipartUpload.
    Complete,
    /// AbortMultipartUpload, by a client.
    Abort,
    /// The end of an upload by its TTL or its bucket's lifecycle rule.
    Expire,
    /// PutObject.
    PutObject,
    /// CopyObject.
    CopyObject,
    /// DeleteObject.
    DeleteObject,
}

impl Operation {
    /// Every operation, in format order.
    pub const ALL: [Operation; 12] = [
        Operation::CreateBucket,
        Operation::DeleteBucket,
        Operation::SetLifecycle,
        Operation::CreateUpload,
        Operation::PutPart,
        Operation::CopyPart,
        Operation::Complete,
        Operation::Abort,
        Operation::Expire,
        Operation::PutObject,
        Operation::CopyObject,
        Operation::DeleteObject,
    ];

    /// Its name in JSON lines (stable).
    pub fn name(self) -> &'static str {
        match self {
            Operation::CreateBucket => "create_bucket",
            Operation::DeleteBucket => "delete_bucket",
            Operation::SetLifecycle => "set_lifecycle",
            Operation::CreateUpload => "create_upload",
            Operation::PutPart => "put_part",
            Operation::CopyPart => "copy_part",
            Operation::Complete => "complete",
            Operation::Abort => "abort",
            Operation::Expire => "expire",
            Operation::PutObject => "put_object",
            Operation::CopyObject => "copy_object",
            Operation::DeleteObject => "delete_object",
        }
    }
}

/// An S3 ETag: the MD5 of a part or single-PUT object, or for a multipart object the MD5 of
/// its parts' MD5s and the part count.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub struct JournalEtag {
    /// The MD5.
    pub md5: [u8; 16],
    /// The part count of a multipart object's ETag.
    pub parts: Option<u32>,
}

impl std::fmt::Display for JournalEtag {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&hex::encode(self.md5))?;
        match self.parts {
            Some(n) => write!(f, "-{n}"),
            None => Ok(()),
        }
    }
}

/// A committed transition, as history. Field order is part of the format (§12.4).
#[derive(Clone, Debug, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub struct Entry {
    /// The transition's LSN in the engine's log.
    pub lsn: u64,
    /// When it was made (milliseconds since the Unix epoch, by the engine's clock).
    pub time_ms: u64,
    /// Who made it: the owner or access key the engine was given.
    pub actor: String,
    /// What it did.
    pub op: Operation,
    /// The bucket.
    pub bucket: Option<String>,
    /// The object key.
    pub key: Option<String>,
    /// The upload.
    pub upload_id: Option<[u8; UPLOAD_ID_BYTES]>,
    /// The part number.
    pub part_number: Option<u32>,
    /// Bytes stored (a part, an object), or released (an abort, an expiry).
    pub size_bytes: Option<u64>,
    /// The part's or object's ETag.
    pub etag: Option<JournalEtag>,
    /// `None` if it took effect; else the S3 error code it failed with when applied in commit
    /// order (a complete that lost to an abort, say).
    pub error: Option<String>,
}

/// The stable JSON object of one entry (`export`'s lines).
#[derive(Serialize)]
struct JsonLine<'a> {
    lsn: u64,
    time_ms: u64,
    actor: &'a str,
    op: &'static str,
    bucket: Option<&'a str>,
    key: Option<&'a str>,
    upload_id: Option<String>,
    part_number: Option<u32>,
    size_bytes: Option<u64>,
    etag: Option<String>,
    outcome: &'a str,
}

impl Entry {
    /// The upload id as clients see it (48 lowercase hex digits).
    pub fn upload_id_hex(&self) -> Option<String> {
        self.upload_id.map(hex::encode)
    }

    /// One JSON object (no newline), with the field names of docs/format.md §12.7.
    pub fn to_json_line(&self) -> String {
        let line = JsonLine {
            lsn: self.lsn,
            time_ms: self.time_ms,
            actor: &self.actor,
            op: self.op.name(),
            bucket: self.bucket.as_deref(),
            key: self.key.as_deref(),
            upload_id: self.upload_id_hex(),
            part_number: self.part_number,
            size_bytes: self.size_bytes,
            etag: self.etag.map(|e| e.to_string()),
            outcome: self.error.as_deref().unwrap_or("ok"),
        };
        // Serializing plain strings and numbers cannot fail.
        serde_json::to_string(&line).unwrap_or_default()
    }

    /// Bytes this entry takes in memory, roughly (for the bound on staged entries).
    pub(crate) fn memory_bytes(&self) -> usize {
        let strings =
            [Some(&self.actor), self.bucket.as_ref(), self.key.as_ref(), self.error.as_ref()];
        size_of::<Entry>() + strings.into_iter().flatten().map(String::len).sum::<usize>()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_json_line_has_the_documented_fields() {
        let entry = Entry {
            lsn: 7,
            time_ms: 1_700_000_000_000,
            actor: "alice".into(),
            op: Operation::Complete,
            bucket: Some("bkt".into()),
            key: Some("a/\"b\"".into()),
            upload_id: Some([0xab; UPLOAD_ID_BYTES]),
            part_number: None,
            size_bytes: Some(10),
            etag: Some(JournalEtag { md5: [1; 16], parts: Some(3) }),
            error: None,
        };
        let value: serde_json::Value = serde_json::from_str(&entry.to_json_line()).unwrap();
        let expected = serde_json::json!({
            "lsn": 7,
            "time_ms": 1_700_000_000_000u64,
            "actor": "alice",
            "op": "complete",
            "bucket": "bkt",
            "key": "a/\"b\"",
            "upload_id": "ab".repeat(UPLOAD_ID_BYTES),
            "part_number": null,
            "size_bytes": 10,
            "etag": format!("{}-3", "01".repeat(16)),
            "outcome": "ok",
        });
        assert_eq!(value, expected);
        let failed = Entry { error: Some("NoSuchUpload".into()), ..entry };
        let value: serde_json::Value = serde_json::from_str(&failed.to_json_line()).unwrap();
        assert_eq!(value["outcome"], "NoSuchUpload");
    }

    #[test]
    fn operation_names_are_distinct() {
        let names: std::collections::HashSet<_> = Operation::ALL.iter().map(|o| o.name()).collect();
        assert_eq!(names.len(), Operation::ALL.len());
    }
}
