//! The reference model and the runner that drives an engine and the model side by side (see
//! `engine_model.rs`), on the real file system or the simulated one (`run_on`). Shared with the
//! fuzz target `engine_ops` (`fuzz/targets/mod.rs`, `run_from_bytes`).

#![allow(dead_code)]

use std::collections::{BTreeMap, BTreeSet};
use std::fmt::Debug;
use std::io::Read;
use std::sync::Arc;

use md5::Md5;
use proptest::prelude::*;
use proptest::test_runner::{Config as ProptestConfig, TestCaseError};
use sha2::{Digest as _, Sha256};
use tessera_engine::payload::{
    Checksum, ChecksumAlgorithm, ContentAddress, ENTRY_HEADER_BYTES, PayloadOptions,
};
use tessera_engine::{
    AbortRule, Aborted, BucketInfo, ChecksumSpec, ChecksumType, CompletePart, Completion, Engine,
    EngineConfig, EngineError, Etag, EtagMatch, ExpiryReport, ListObjects, ListParts, ListUploads,
    ManualClock, ObjectChecksum, ObjectInfo, ObjectMeta, ObjectPut, ObjectSummary, ObjectsPage,
    PartCopy, PartInfo, PartStored, PartUpload, PartsPage, UploadId, UploadInfo, UploadSummary,
    UploadsPage, WriteCondition,
};
use tessera_wal::WalOptions;

// ---------------------------------------------------------------------------------------------
// Configuration and fixed vocabularies.

const MIN_PART_BYTES: u64 = 16;
const INLINE_BYTES_MAX: u64 = 64;
const TTL_MS: u64 = 1_000;
const DAY_MS: u64 = 200;
const START_MS: u64 = 1_000_000;
const ACTORS: [&str; 2] = ["alice", "bob"];
/// Two valid bucket names and one invalid one.
const BUCKETS: [&str; 3] = ["bkt-a", "bkt-b", "Bad_Bucket"];
const KEYS: [&str; 6] = ["a/b/c", "a/b/d", "a/x", "a/b", "b/1", "top"];
const PREFIXES: [&str; 7] = ["", "a/", "a/b", "a/b/", "b", "t", "zz"];
const DELIMITERS: [Option<&str>; 4] = [None, Some("/"), Some("b/"), Some("")];
/// Markers a listing may start after: keys, prefixes, and in-between strings.
const MARKERS: [&str; 8] = ["", "a/", "a/b", "a/b/", "a/b/c", "a/y", "b/", "top"];
/// Text that is no upload id at all.
const GARBAGE_ID: &str = "not-an-upload-id";

fn config(clock: &ManualClock) -> EngineConfig {
    EngineConfig {
        wal: WalOptions {
            segment_bytes: 64 << 10,
            batch_bytes_max: 4096,
            pending_bytes_max: 16 << 10,
            preallocate: false,
            salt_seed: Some(7),
        },
        payload: PayloadOptions { segment_bytes: 1024, ..PayloadOptions::default() },
        clock: Arc::new(clock.clone()),
        upload_ttl_ms: TTL_MS,
        day_ms: DAY_MS,
        min_part_bytes: MIN_PART_BYTES,
        inline_payload_bytes_max: INLINE_BYTES_MAX,
        checkpoint_wal_bytes: 4096,
        ..EngineConfig::default()
    }
}

fn md5_of(bytes: &[u8]) -> [u8; 16] {
    Md5::digest(bytes).into()
}

fn crc_of(bytes: &[u8]) -> [u8; 4] {
    crc32c::crc32c(bytes).to_be_bytes()
}

fn crc_checksum(value: [u8; 4]) -> Checksum {
    Checksum { algorithm: ChecksumAlgorithm::Crc32c, value: value.to_vec() }
}

/// Deterministic bytes: the same (seed, len) gives the same bytes (so payloads deduplicate).
fn payload_bytes(seed: u8, len: usize) -> Vec<u8> {
    (0..len).map(|i| (i as u8).wrapping_mul(13).wrapping_add(seed.wrapping_mul(101))).collect()
}

/// An error as the comparison sees it: S3's code, and the part number where the error names
/// one.
fn code(e: &EngineError) -> String {
    match e {
        EngineError::InvalidPart { part_number, .. }
        | EngineError::InvalidPartOrder { part_number, .. }
        | EngineError::EntityTooSmall { part_number, .. } => {
            format!("{}:{part_number}", e.s3_code())
        }
        _ => e.s3_code().to_owned(),
    }
}

/// A well-formed id that no upload has: `id` with its last (random) hex digit changed.
fn unknown_id(id: UploadId) -> String {
    let mut text = id.to_string();
    let last = if text.ends_with('0') { '1' } else { '0' };
    text.pop();
    text.push(last);
    text
}

fn fail<T>(code: &str) -> Result<T, String> {
    Err(code.to_owned())
}

/// Asserts that the engine's result equals the model's, and returns it.
fn agree<T: PartialEq + Debug>(
    what: &dyn Debug,
    got: Result<T, EngineError>,
    want: Result<T, String>,
) -> Result<T, String> {
    let got = got.map_err(|e| code(&e));
    assert_eq!(got, want, "engine and model disagree on {what:?}");
    if std::env::var_os("TESSERA_MODEL_STATS").is_some() {
        let op = format!("{what:?}");
        let op = op.split([' ', '{']).next().unwrap_or_default().to_owned();
        let outcome = got.as_ref().err().map_or("Ok", |e| e.split(':').next().unwrap_or_default());
        *OUTCOMES.lock().entry(format!("{op} -> {outcome}")).or_insert(0) += 1;
    }
    got
}

/// How often each operation had each outcome (printed with `TESSERA_MODEL_STATS` set).
static OUTCOMES: parking_lot::Mutex<BTreeMap<String, u64>> =
    parking_lot::Mutex::new(BTreeMap::new());

fn read_all(mut reader: impl Read) -> Vec<u8> {
    let mut out = Vec::new();
    reader.read_to_end(&mut out).unwrap();
    out
}

// ---------------------------------------------------------------------------------------------
// The model.

#[derive(Clone, Debug)]
struct MPart {
    number: u32,
    bytes: Arc<[u8]>,
    md5: [u8; 16],
    checksum: Option<[u8; 4]>,
    time_ms: u64,
    /// Held in the payload store (one reference); else inline in its record, or empty.
    stored: bool,
}

impl MPart {
    fn size(&self) -> u64 {
        self.bytes.len() as u64
    }

    fn info(&self) -> PartInfo {
        PartInfo {
            part_number: self.number,
            size_bytes: self.size(),
            etag: Etag { md5: self.md5, parts: None },
            checksum: self.checksum.map(crc_checksum),
            last_modified_ms: self.time_ms,
        }
    }
}

#[derive(Clone, Debug)]
struct MObject {
    parts: Vec<MPart>,
    etag: Etag,
    meta: ObjectMeta,
    checksum: Option<ObjectChecksum>,
    last_modified_ms: u64,
    upload_id: Option<UploadId>,
}

impl MObject {
    fn size(&self) -> u64 {
        self.parts.iter().map(MPart::size).sum()
    }

    fn bytes(&self) -> Vec<u8> {
        self.parts.iter().flat_map(|p| p.bytes.iter().copied()).collect()
    }

    fn info(&self, bucket: &str, key: &str) -> ObjectInfo {
        ObjectInfo {
            bucket: bucket.to_owned(),
            key: key.to_owned(),
            size_bytes: self.size(),
            etag: self.etag,
            last_modified_ms: self.last_modified_ms,
            meta: self.meta.clone(),
            checksum: self.checksum.clone(),
            // A multipart object's ETag carries its part count (a copy's too).
            parts_count: self.etag.parts,
            upload_id: self.upload_id,
        }
    }

    fn summary(&self, key: &str) -> ObjectSummary {
        ObjectSummary {
            key: key.into(),
            size_bytes: self.size(),
            etag: self.etag,
            last_modified_ms: self.last_modified_ms,
            checksum: self.meta.checksum,
        }
    }
}

/// When the rules abort an upload at `key` initiated at `initiated_ms`, and which rule: of
/// those whose prefix the key starts with, the one with the fewest days, the first of equals.
fn abort_by(rules: &[AbortRule], key: &str, initiated_ms: u64) -> (Option<u64>, Option<String>) {
    let mut first: Option<&AbortRule> = None;
    for rule in rules.iter().filter(|r| key.starts_with(&r.prefix)) {
        if first.is_none_or(|f| rule.days < f.days) {
            first = Some(rule);
        }
    }
    (first.map(|r| initiated_ms + u64::from(r.days) * DAY_MS), first.map(|r| r.id.clone()))
}

#[derive(Clone, Debug)]
struct MBucket {
    created_ms: u64,
    lifecycle: Vec<AbortRule>,
    objects: BTreeMap<String, MObject>,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Status {
    Live,
    Completed,
    /// Aborted or expired.
    Ended,
}

#[derive(Clone, Debug)]
struct MUpload {
    id: UploadId,
    bucket: String,
    key: String,
    owner: String,
    initiated_ms: u64,
    ttl_expires_ms: u64,
    abort_ms: Option<u64>,
    /// The id of the lifecycle rule that set `abort_ms`.
    abort_rule_id: Option<String>,
    version: u64,
    meta: ObjectMeta,
    /// Its parts (frozen once it ended).
    parts: BTreeMap<u32, MPart>,
    status: Status,
    /// The part numbers it completed with.
    completed: Option<Vec<u32>>,
}

impl MUpload {
    fn expires_ms(&self) -> u64 {
        self.abort_ms.map_or(self.ttl_expires_ms, |a| a.min(self.ttl_expires_ms))
    }

    fn info(&self) -> UploadInfo {
        UploadInfo {
            upload_id: self.id,
            bucket: self.bucket.clone(),
            key: self.key.clone(),
            owner: self.owner.clone(),
            initiated_ms: self.initiated_ms,
            expires_ms: self.expires_ms(),
            abort_ms: self.abort_ms,
            abort_rule_id: self.abort_rule_id.clone(),
            version: self.version,
            meta: self.meta.clone(),
        }
    }

    fn summary(&self) -> UploadSummary {
        UploadSummary {
            upload_id: self.id,
            key: self.key.as_str().into(),
            owner: self.owner.as_str().into(),
            initiated_ms: self.initiated_ms,
            checksum: self.meta.checksum,
        }
    }

    fn live(&self) -> bool {
        self.status == Status::Live
    }
}

#[derive(Default)]
struct Model {
    buckets: BTreeMap<String, MBucket>,
    /// Every upload ever created, in creation order.
    uploads: Vec<MUpload>,
}

enum Item {
    Prefix(String),
    Upload(UploadSummary),
    Object(ObjectSummary),
}

impl Model {
    /// The engine's `find_upload`: the live upload with this id at this bucket and key.
    fn find_live(&self, bucket: &str, key: &str, id: &str) -> Result<usize, String> {
        let Ok(id) = id.parse::<UploadId>() else { return fail("NoSuchUpload") };
        if !self.buckets.contains_key(bucket) {
            return fail("NoSuchBucket");
        }
        self.uploads
            .iter()
            .position(|u| u.id == id && u.live() && u.bucket == bucket && u.key == key)
            .ok_or_else(|| "NoSuchUpload".to_owned())
    }

    fn object(&self, bucket: &str, key: &str) -> Result<&MObject, String> {
        let found = self.buckets.get(bucket).ok_or_else(|| "NoSuchBucket".to_owned())?;
        found.objects.get(key).ok_or_else(|| "NoSuchKey".to_owned())
    }

    fn live_in(&self, bucket: &str) -> Vec<&MUpload> {
        let mut live: Vec<&MUpload> =
            self.uploads.iter().filter(|u| u.live() && u.bucket == bucket).collect();
        // ListMultipartUploads: by key, then initiation time, then id.
        live.sort_by(|a, b| {
            (a.key.as_bytes(), a.initiated_ms, a.id).cmp(&(b.key.as_bytes(), b.initiated_ms, b.id))
        });
        live
    }

    /// The common prefix `key` rolls up into, if any.
    fn common_prefix(key: &str, prefix: &str, delimiter: Option<&str>) -> Option<String> {
        let d = delimiter.filter(|d| !d.is_empty())?;
        let rest = key.strip_prefix(prefix)?;
        let at = rest.find(d)?;
        Some(key[..prefix.len() + at + d.len()].to_owned())
    }

    /// Every entry a ListMultipartUploads with these arguments shows, in order, before paging.
    fn upload_items(&self, bucket: &str, args: &ListUploads) -> Vec<Item> {
        let key_marker = args.key_marker.as_deref().filter(|m| !m.is_empty());
        let id_marker = key_marker.and(args.upload_id_marker.as_deref()).filter(|m| !m.is_empty());
        let live = self.live_in(bucket);
        let mut items = Vec::new();
        let mut prefixes = BTreeSet::new();
        for u in &live {
            if !u.key.starts_with(args.prefix.as_str()) {
                continue;
            }
            if let Some(common) =
                Model::common_prefix(&u.key, &args.prefix, args.delimiter.as_deref())
            {
                // A common prefix at or before the marker was listed on an earlier page.
                if key_marker.is_some_and(|m| common.as_str() <= m)
                    || !prefixes.insert(common.clone())
                {
                    continue;
                }
                items.push(Item::Prefix(common));
                continue;
            }
            let include = match key_marker {
                None => true,
                Some(m) if u.key.as_str() > m => true,
                // The marker's key: only its uploads with an id lexicographically greater than
                // the marker (S3's words; ids start with their initiation time, so these are
                // the ones initiated after the marker's upload, whether or not it still runs).
                Some(m) if u.key == m => {
                    id_marker.is_some_and(|marker| u.id.to_string().as_str() > marker)
                }
                Some(_) => false,
            };
            if include {
                items.push(Item::Upload(u.summary()));
            }
        }
        items
    }

    fn uploads_page(&self, bucket: &str, args: &ListUploads) -> Result<UploadsPage, String> {
        if !self.buckets.contains_key(bucket) {
            return fail("NoSuchBucket");
        }
        let max = match args.max_uploads {
            None => 1000,
            Some(0) => return fail("InvalidArgument"),
            Some(n) => n.min(1000) as usize,
        };
        let mut items = self.upload_items(bucket, args);
        let truncated = items.len() > max;
        items.truncate(max);
        let mut page = UploadsPage::default();
        for item in &items {
            match item {
                Item::Prefix(p) => page.common_prefixes.push(p.clone()),
                Item::Upload(u) => page.uploads.push(u.clone()),
                Item::Object(_) => unreachable!(),
            }
        }
        if truncated {
            page.is_truncated = true;
            match items.last() {
                Some(Item::Prefix(p)) => page.next_key_marker = Some(p.clone()),
                Some(Item::Upload(u)) => {
                    page.next_key_marker = Some(u.key.to_string());
                    page.next_upload_id_marker = Some(u.upload_id.to_string());
                }
                _ => unreachable!(),
            }
        }
        Ok(page)
    }

    fn objects_page(&self, bucket: &str, args: &ListObjects) -> Result<ObjectsPage, String> {
        let found = self.buckets.get(bucket).ok_or_else(|| "NoSuchBucket".to_owned())?;
        let max = args.max_keys.map_or(1000, |n| n.min(1000) as usize);
        let marker = args.start_after.as_deref().filter(|m| !m.is_empty());
        let mut items = Vec::new();
        let mut prefixes = BTreeSet::new();
        for (key, object) in &found.objects {
            if !key.starts_with(args.prefix.as_str()) {
                continue;
            }
            match Model::common_prefix(key, &args.prefix, args.delimiter.as_deref()) {
                Some(common) => {
                    if marker.is_some_and(|m| common.as_str() <= m)
                        || !prefixes.insert(common.clone())
                    {
                        continue;
                    }
                    items.push(Item::Prefix(common));
                }
                None => {
                    if marker.is_none_or(|m| key.as_str() > m) {
                        items.push(Item::Object(object.summary(key)));
                    }
                }
            }
        }
        let truncated = items.len() > max;
        items.truncate(max);
        let mut page = ObjectsPage::default();
        for item in &items {
            match item {
                Item::Prefix(p) => page.common_prefixes.push(p.clone()),
                Item::Object(o) => page.objects.push(o.clone()),
                Item::Upload(_) => unreachable!(),
            }
        }
        if truncated {
            page.is_truncated = true;
            page.next_start_after = match items.last() {
                Some(Item::Prefix(p)) => Some(p.clone()),
                Some(Item::Object(o)) => Some(o.key.to_string()),
                _ => unreachable!(),
            };
        }
        Ok(page)
    }

    fn parts_page(&self, index: usize, args: &ListParts) -> PartsPage {
        let upload = &self.uploads[index];
        let max = args.max_parts.map_or(1000, |n| n.min(1000) as usize);
        let rest: Vec<&MPart> =
            upload.parts.values().filter(|p| p.number > args.part_number_marker).collect();
        let parts: Vec<PartInfo> = rest.iter().take(max).map(|p| p.info()).collect();
        let is_truncated = rest.len() > parts.len();
        PartsPage {
            upload: upload.info(),
            next_part_number_marker: if is_truncated {
                parts.last().map(|p| p.part_number)
            } else {
                None
            },
            parts,
            is_truncated,
        }
    }

    /// Live parts and objects that hold a payload-store reference, by their content address.
    fn stored_refs(&self) -> BTreeMap<ContentAddress, u64> {
        let mut refs = BTreeMap::new();
        for part in self.live_parts().filter(|p| p.stored) {
            *refs.entry(ContentAddress(Sha256::digest(&part.bytes[..]).into())).or_insert(0) += 1;
        }
        refs
    }

    fn live_parts(&self) -> impl Iterator<Item = &MPart> {
        let uploads = self.uploads.iter().filter(|u| u.live()).flat_map(|u| u.parts.values());
        let objects = self.buckets.values().flat_map(|b| b.objects.values()).flat_map(|o| &o.parts);
        uploads.chain(objects)
    }

    /// A checkpoint moves every inline payload of a live part or object into the payload store.
    fn checkpointed(&mut self) {
        let uploads =
            self.uploads.iter_mut().filter(|u| u.live()).flat_map(|u| u.parts.values_mut());
        let objects = self
            .buckets
            .values_mut()
            .flat_map(|b| b.objects.values_mut())
            .flat_map(|o| o.parts.iter_mut());
        for part in uploads.chain(objects) {
            part.stored = !part.bytes.is_empty();
        }
    }
}

// ---------------------------------------------------------------------------------------------
// Operations.

#[derive(Clone, Copy, Debug)]
enum Target {
    /// The upload's own bucket, key and id.
    Own,
    /// Its id, another key.
    WrongKey,
    /// A well-formed id no upload has.
    UnknownId,
    /// Text that is no id.
    Garbage,
}

/// Which upload an operation addresses.
#[derive(Clone, Copy, Debug)]
struct Pick {
    index: usize,
    /// Pick among live uploads (if any) rather than among all ever created.
    live: bool,
    target: Target,
    /// Compare-and-set on the upload's version (part uploads, completions, aborts): the right
    /// version, or a wrong one.
    cas: Option<bool>,
}

#[derive(Clone, Copy, Debug)]
enum Md5Choice {
    Absent,
    Right,
    Wrong,
}

#[derive(Clone, Copy, Debug)]
enum LengthChoice {
    Declared,
    Unknown,
    /// Declared one byte longer than sent.
    Short,
}

#[derive(Clone, Copy, Debug)]
struct Body {
    seed: u8,
    len: usize,
    md5: Md5Choice,
    length: LengthChoice,
}

impl Body {
    fn bytes(&self) -> Vec<u8> {
        payload_bytes(self.seed, self.len)
    }

    fn content_length(&self) -> Option<u64> {
        match self.length {
            LengthChoice::Declared => Some(self.len as u64),
            LengthChoice::Unknown => None,
            LengthChoice::Short => Some(self.len as u64 + 1),
        }
    }

    fn content_md5(&self) -> Option<[u8; 16]> {
        let right = md5_of(&self.bytes());
        match self.md5 {
            Md5Choice::Absent => None,
            Md5Choice::Right => Some(right),
            Md5Choice::Wrong => {
                let mut wrong = right;
                wrong[0] ^= 0xFF;
                Some(wrong)
            }
        }
    }

    /// The error taking this body in fails with, if any.
    fn error(&self) -> Option<&'static str> {
        match (self.length, self.md5) {
            (LengthChoice::Short, _) => Some("IncompleteBody"),
            (_, Md5Choice::Wrong) => Some("BadDigest"),
            _ => None,
        }
    }

    /// Whether the payload goes to the payload store (a known small length rides inline).
    fn stored(&self) -> bool {
        let inline =
            matches!(self.length, LengthChoice::Declared) && self.len as u64 <= INLINE_BYTES_MAX;
        !inline && self.len > 0
    }
}

#[derive(Clone, Copy, Debug)]
enum Ck {
    Right,
    Omit,
    Wrong,
}

#[derive(Clone, Copy, Debug)]
enum CompletePick {
    Empty,
    /// The parts it completed with, if it did; else all its parts.
    Repeat,
    Listed {
        mask: u8,
        swap: Option<usize>,
        bad_etag: Option<usize>,
        missing: bool,
        ck: Ck,
    },
}

#[derive(Clone, Copy, Debug)]
enum CopyRange {
    Whole,
    /// Exactly the span of the source's part with this index (modulo its part count).
    Part(usize),
    Bytes(u64, u64),
}

#[derive(Clone, Copy, Debug)]
enum UploadMarker {
    None,
    Key(usize),
    /// The key and id of an upload the bucket had, in progress or ended (modulo their count).
    KeyAndId(usize),
}

#[derive(Clone, Copy, Debug)]
struct Meta {
    content: u8,
    /// 0: none; 1: CRC32C composite; 2: CRC32C full-object.
    checksum: u8,
}

impl Meta {
    fn object_meta(self) -> ObjectMeta {
        let kind = match self.checksum {
            1 => Some(ChecksumType::Composite),
            2 => Some(ChecksumType::FullObject),
            _ => None,
        };
        ObjectMeta {
            content_type: Some(format!("type/{}", self.content)),
            user: vec![("m".to_owned(), self.content.to_string())],
            checksum: kind.map(|kind| ChecksumSpec { algorithm: ChecksumAlgorithm::Crc32c, kind }),
        }
    }
}

#[derive(Clone, Debug)]
enum Op {
    CreateBucket {
        b: usize,
    },
    DeleteBucket {
        b: usize,
    },
    /// Rules as (id index, prefix index, days).
    SetLifecycle {
        b: usize,
        rules: Vec<(u8, usize, u32)>,
    },
    /// `count` uploads at once (at one clock time): of one key (`step` 0) or of consecutive
    /// keys.
    CreateUpload {
        b: usize,
        k: usize,
        count: usize,
        step: usize,
        meta: Meta,
        actor: usize,
    },
    PutPart {
        pick: Pick,
        number: u32,
        body: Body,
    },
    CopyPart {
        pick: Pick,
        number: u32,
        src_b: usize,
        src_k: ObjKey,
        range: CopyRange,
    },
    ListParts {
        pick: Pick,
        marker: u32,
        max: Option<u32>,
    },
    ListUploads {
        b: usize,
        prefix: usize,
        delimiter: usize,
        max: Option<u32>,
        start: UploadMarker,
    },
    Complete {
        pick: Pick,
        parts: CompletePick,
        /// `x-amz-mp-object-size`: the listed parts' total, or a wrong one.
        declared: Option<bool>,
    },
    Abort {
        pick: Pick,
    },
    PutObject {
        b: usize,
        k: usize,
        body: Body,
        checksum: bool,
        /// 0..=2 none, 3 If-None-Match `*`, 4 If-Match `*`, 5 If-Match the current ETag, 6
        /// If-Match another ETag, 7 If-None-Match the current ETag.
        cond: u8,
    },
    CopyObject {
        src_b: usize,
        src_k: ObjKey,
        b: usize,
        k: usize,
        replace: bool,
    },
    DeleteObject {
        b: usize,
        k: ObjKey,
    },
    ListObjects {
        b: usize,
        prefix: usize,
        delimiter: usize,
        max: Option<u32>,
        start: Option<usize>,
    },
    Read {
        b: usize,
        k: ObjKey,
        range: Option<(u64, u64)>,
        part: Option<u32>,
    },
    Advance {
        ms: u64,
    },
    Expire,
    Checkpoint,
    Compact,
    Restart,
    /// The power cut between operations, dropping the unsynced state (`None`) or keeping a
    /// random part of it: everything acknowledged must be there. On the real file system, a
    /// restart.
    Crash {
        keep_seed: Option<u64>,
    },
}

/// A key of an object operation: mostly one of the bucket's objects (if it has any).
#[derive(Clone, Copy, Debug)]
struct ObjKey {
    existing: bool,
    index: usize,
}

fn obj_key() -> impl Strategy<Value = ObjKey> {
    (prop::bool::weighted(0.8), any::<usize>())
        .prop_map(|(existing, index)| ObjKey { existing, index })
}

/// Mostly the prefixes with something under them.
fn prefix_index() -> impl Strategy<Value = usize> {
    prop_oneof![3 => Just(0usize), 3 => Just(1usize), 2 => 0..PREFIXES.len()]
}

/// Mostly "/".
fn delimiter_index() -> impl Strategy<Value = usize> {
    prop_oneof![2 => Just(1usize), 2 => 0..DELIMITERS.len()]
}

fn bucket_index() -> impl Strategy<Value = usize> {
    prop_oneof![14 => Just(0usize), 5 => Just(1usize), 1 => Just(2usize)]
}

fn pick() -> impl Strategy<Value = Pick> {
    let target = prop_oneof![
        24 => Just(Target::Own),
        1 => Just(Target::WrongKey),
        1 => Just(Target::UnknownId),
        1 => Just(Target::Garbage),
    ];
    (any::<usize>(), prop::bool::weighted(0.85), target, prop::option::weighted(0.1, any::<bool>()))
        .prop_map(|(index, live, target, cas)| Pick { index, live, target, cas })
}

fn part_number() -> impl Strategy<Value = u32> {
    prop_oneof![30 => 1u32..=5, 1 => Just(0u32), 1 => Just(10_001u32)]
}

fn body() -> impl Strategy<Value = Body> {
    let len = prop_oneof![1 => 0usize..MIN_PART_BYTES as usize, 4 => 16usize..200];
    let md5 = prop_oneof![
        14 => Just(Md5Choice::Absent),
        4 => Just(Md5Choice::Right),
        1 => Just(Md5Choice::Wrong),
    ];
    let length = prop_oneof![
        16 => Just(LengthChoice::Declared),
        4 => Just(LengthChoice::Unknown),
        1 => Just(LengthChoice::Short),
    ];
    (0u8..4, len, md5, length).prop_map(|(seed, len, md5, length)| Body { seed, len, md5, length })
}

fn complete_pick() -> impl Strategy<Value = CompletePick> {
    let ck = prop_oneof![12 => Just(Ck::Right), 1 => Just(Ck::Omit), 1 => Just(Ck::Wrong)];
    let listed = (
        prop_oneof![3 => Just(0xFFu8), 1 => any::<u8>()],
        prop::option::weighted(0.1, any::<usize>()),
        prop::option::weighted(0.1, any::<usize>()),
        prop::bool::weighted(0.05),
        ck,
    )
        .prop_map(|(mask, swap, bad_etag, missing, ck)| CompletePick::Listed {
            mask,
            swap,
            bad_etag,
            missing,
            ck,
        });
    prop_oneof![1 => Just(CompletePick::Empty), 4 => Just(CompletePick::Repeat), 12 => listed]
}

fn max_entries() -> impl Strategy<Value = Option<u32>> {
    prop_oneof![
        1 => Just(None),
        2 => Just(Some(1u32)),
        2 => Just(Some(2u32)),
        1 => (3u32..=4).prop_map(Some),
    ]
}

fn op() -> impl Strategy<Value = Op> {
    let meta = (0u8..3, prop_oneof![3 => Just(0u8), 1 => Just(1u8), 1 => Just(2u8)])
        .prop_map(|(content, checksum)| Meta { content, checksum });
    let copy_range = prop_oneof![
        2 => Just(CopyRange::Whole),
        3 => any::<usize>().prop_map(CopyRange::Part),
        2 => (0u64..250, 0u64..250).prop_map(|(a, b)| CopyRange::Bytes(a, b)),
    ];
    let upload_marker = prop_oneof![
        3 => Just(UploadMarker::None),
        1 => (0..MARKERS.len()).prop_map(UploadMarker::Key),
        1 => any::<usize>().prop_map(UploadMarker::KeyAndId),
    ];
    let key = 0..KEYS.len();
    prop_oneof![
        1 => bucket_index().prop_map(|b| Op::CreateBucket { b }),
        1 => bucket_index().prop_map(|b| Op::DeleteBucket { b }),
        1 => (bucket_index(), prop::collection::vec((0u8..4, 0..PREFIXES.len(), 0u32..=4), 0..3))
            .prop_map(|(b, rules)| Op::SetLifecycle { b, rules }),
        9 => (
            (bucket_index(), key.clone(), meta, 0..ACTORS.len()),
            (prop_oneof![2 => Just(1usize), 1 => 2usize..=3], 0usize..=1)
        )
            .prop_map(|((b, k, meta, actor), (count, step))| Op::CreateUpload {
                b,
                k,
                count,
                step,
                meta,
                actor
            }),
        16 => (pick(), part_number(), body())
            .prop_map(|(pick, number, body)| Op::PutPart { pick, number, body }),
        3 => (pick(), part_number(), bucket_index(), obj_key(), copy_range)
            .prop_map(|(pick, number, src_b, src_k, range)| Op::CopyPart {
                pick,
                number,
                src_b,
                src_k,
                range
            }),
        3 => (pick(), 0u32..=5, max_entries())
            .prop_map(|(pick, marker, max)| Op::ListParts { pick, marker, max }),
        6 => (
            bucket_index(),
            prefix_index(),
            delimiter_index(),
            prop_oneof![1 => Just(Some(0u32)), 12 => max_entries()],
            upload_marker
        )
            .prop_map(|(b, prefix, delimiter, max, start)| Op::ListUploads {
                b,
                prefix,
                delimiter,
                max,
                start
            }),
        10 => (pick(), complete_pick(), prop::option::weighted(0.1, any::<bool>()))
            .prop_map(|(pick, parts, declared)| Op::Complete { pick, parts, declared }),
        3 => pick().prop_map(|pick| Op::Abort { pick }),
        6 => (bucket_index(), key.clone(), body(), prop::bool::weighted(0.3), 0u8..8)
            .prop_map(|(b, k, body, checksum, cond)| Op::PutObject { b, k, body, checksum, cond }),
        2 => (bucket_index(), obj_key(), bucket_index(), key.clone(), any::<bool>())
            .prop_map(|(src_b, src_k, b, k, replace)| Op::CopyObject {
                src_b,
                src_k,
                b,
                k,
                replace
            }),
        2 => (bucket_index(), obj_key()).prop_map(|(b, k)| Op::DeleteObject { b, k }),
        3 => (
            bucket_index(),
            prefix_index(),
            delimiter_index(),
            max_entries(),
            prop::option::weighted(0.3, 0..MARKERS.len())
        )
            .prop_map(|(b, prefix, delimiter, max, start)| Op::ListObjects {
                b,
                prefix,
                delimiter,
                max,
                start
            }),
        4 => (
            bucket_index(),
            obj_key(),
            prop::option::of((0u64..250, 0u64..250)),
            prop::option::of(0u32..=4)
        )
            .prop_map(|(b, k, range, part)| Op::Read { b, k, range, part }),
        3 => prop_oneof![
            12 => 0u64..300,
            2 => Just(DAY_MS),
            2 => Just(TTL_MS),
            1 => Just(5 * TTL_MS),
        ]
        .prop_map(|ms| Op::Advance { ms }),
        3 => Just(Op::Expire),
        1 => Just(Op::Checkpoint),
        1 => Just(Op::Compact),
        2 => Just(Op::Restart),
        2 => proptest::option::of(any::<u64>()).prop_map(|keep_seed| Op::Crash { keep_seed }),
    ]
}

// ---------------------------------------------------------------------------------------------
// The runner.

struct Run {
    /// A temporary directory on the real file system, or the simulated one.
    dir: tempfile::TempDir,
    sim: Option<tessera_wal::SimFs>,
    clock: ManualClock,
    engine: Option<Engine>,
    model: Model,
    /// The newest checkpoint seen.
    checkpoint_lsn: u64,
}

impl Run {
    fn new() -> Run {
        Run::on(None)
    }

    /// A run on the real file system (`None`) or on a simulated one.
    fn on(sim: Option<tessera_wal::SimFs>) -> Run {
        let dir = tempfile::tempdir().unwrap();
        let clock = ManualClock::new(START_MS);
        let engine = open_engine(dir.path(), sim.as_ref(), &clock);
        let mut run = Run {
            dir,
            sim,
            clock,
            engine: Some(engine),
            model: Model::default(),
            checkpoint_lsn: 0,
        };
        // Most operations want a bucket; the sequences create and delete them too.
        run.step(&Op::CreateBucket { b: 0 });
        run.step(&Op::CreateBucket { b: 1 });
        // A few uploads to start with, so that the listings have something to page through.
        for (b, k, count, checksum) in [(0, 0, 2, 0), (0, 2, 1, 1), (0, 5, 1, 2), (1, 4, 1, 0)] {
            let meta = Meta { content: 0, checksum };
            run.step(&Op::CreateUpload { b, k, count, step: 0, meta, actor: 0 });
        }
        run
    }

    fn engine(&self) -> &Engine {
        self.engine.as_ref().unwrap()
    }

    fn now(&self) -> u64 {
        use tessera_engine::Clock as _;
        self.clock.now_ms()
    }

    fn restart(&mut self) {
        self.engine = None;
        self.engine = Some(open_engine(self.dir.path(), self.sim.as_ref(), &self.clock));
    }

    /// Cuts the power (the engine dies with every call failing, as a process would), restarts
    /// the machine keeping what `keep_seed` says of the unsynced state, and recovers.
    fn crash(&mut self, keep_seed: Option<u64>) {
        let Some(sim) = self.sim.clone() else { return self.restart() };
        sim.power_off_at_call(sim.io_calls());
        self.engine = None;
        sim.crash(match keep_seed {
            None => tessera_wal::CrashMode::DropUnsynced,
            Some(seed) => tessera_wal::CrashMode::KeepRandom { seed },
        });
        self.engine = Some(open_engine(self.dir.path(), Some(&sim), &self.clock));
    }

    /// The (bucket, key, id text) an upload operation addresses.
    fn address(&self, pick: Pick) -> (String, String, String) {
        self.address_among(pick, |_| true)
    }

    /// As [`Run::address`], picking among the live uploads that pass `prefer` if there are any.
    fn address_among(
        &self,
        pick: Pick,
        prefer: impl Fn(&MUpload) -> bool,
    ) -> (String, String, String) {
        let uploads = &self.model.uploads;
        let mut live: Vec<usize> = (0..uploads.len()).filter(|&i| uploads[i].live()).collect();
        if live.iter().any(|&i| prefer(&uploads[i])) {
            live.retain(|&i| prefer(&uploads[i]));
        }
        let index = if pick.live && !live.is_empty() {
            Some(live[pick.index % live.len()])
        } else if !uploads.is_empty() {
            Some(pick.index % uploads.len())
        } else {
            None
        };
        let Some(index) = index else {
            return (BUCKETS[0].to_owned(), KEYS[0].to_owned(), GARBAGE_ID.to_owned());
        };
        let u = &uploads[index];
        let other_key = || {
            let at = KEYS.iter().position(|k| *k == u.key).unwrap_or(0);
            KEYS[(at + 1) % KEYS.len()].to_owned()
        };
        match pick.target {
            Target::Own => (u.bucket.clone(), u.key.clone(), u.id.to_string()),
            Target::WrongKey => (u.bucket.clone(), other_key(), u.id.to_string()),
            Target::UnknownId => (u.bucket.clone(), u.key.clone(), unknown_id(u.id)),
            Target::Garbage => (u.bucket.clone(), u.key.clone(), GARBAGE_ID.to_owned()),
        }
    }

    /// Notes a checkpoint (taken when asked, or automatically once enough log was written):
    /// it moved the inline payloads into the payload store.
    fn after_step(&mut self) {
        let lsn = self.engine().stats().checkpoint_lsn;
        if lsn != self.checkpoint_lsn {
            self.checkpoint_lsn = lsn;
            self.model.checkpointed();
        }
    }

    /// The key an object operation names: one of the bucket's objects, or any key.
    fn object_key(&self, bucket: &str, k: ObjKey) -> String {
        let existing: Vec<&String> =
            self.model.buckets.get(bucket).map(|b| b.objects.keys().collect()).unwrap_or_default();
        if k.existing && !existing.is_empty() {
            existing[k.index % existing.len()].clone()
        } else {
            KEYS[k.index % KEYS.len()].to_owned()
        }
    }

    fn step(&mut self, op: &Op) {
        let now = self.now();
        match *op {
            Op::CreateBucket { b } => {
                let name = BUCKETS[b];
                let want = if b == 2 {
                    fail("InvalidBucketName")
                } else if self.model.buckets.contains_key(name) {
                    fail("BucketAlreadyOwnedByYou")
                } else {
                    Ok(BucketInfo { name: name.to_owned(), created_ms: now, lifecycle: Vec::new() })
                };
                let got = self.engine().create_bucket("alice", name);
                if agree(op, got, want).is_ok() {
                    let bucket = MBucket {
                        created_ms: now,
                        lifecycle: Vec::new(),
                        objects: BTreeMap::new(),
                    };
                    self.model.buckets.insert(name.to_owned(), bucket);
                }
            }
            Op::DeleteBucket { b } => {
                let name = BUCKETS[b];
                let want = match self.model.buckets.get(name) {
                    None => fail("NoSuchBucket"),
                    Some(found)
                        if !found.objects.is_empty()
                            || self.model.uploads.iter().any(|u| u.live() && u.bucket == name) =>
                    {
                        fail("BucketNotEmpty")
                    }
                    Some(_) => Ok(()),
                };
                if agree(op, self.engine().delete_bucket("alice", name), want).is_ok() {
                    self.model.buckets.remove(name);
                }
            }
            Op::SetLifecycle { b, ref rules } => {
                let name = BUCKETS[b];
                // Rule ids "r0", "r1", ...: one index twice is a repeated id.
                let rules: Vec<AbortRule> = rules
                    .iter()
                    .map(|&(id, prefix, days)| AbortRule {
                        id: format!("r{id}"),
                        prefix: PREFIXES[prefix].to_owned(),
                        days,
                    })
                    .collect();
                let ids: std::collections::BTreeSet<&str> =
                    rules.iter().map(|r| r.id.as_str()).collect();
                let want = if !self.model.buckets.contains_key(name) {
                    fail("NoSuchBucket")
                } else if rules.iter().any(|r| r.days == 0) || ids.len() < rules.len() {
                    fail("InvalidArgument")
                } else {
                    Ok(())
                };
                let got = self.engine().set_lifecycle("alice", name, rules.clone());
                if agree(op, got, want).is_ok() {
                    // The rules apply to uploads in progress too, from their initiation.
                    for u in self.model.uploads.iter_mut().filter(|u| u.live() && u.bucket == name)
                    {
                        (u.abort_ms, u.abort_rule_id) = abort_by(&rules, &u.key, u.initiated_ms);
                    }
                    self.model.buckets.get_mut(name).unwrap().lifecycle = rules;
                }
            }
            Op::CreateUpload { b, k, count, step, meta, actor } => {
                for i in 0..count {
                    self.create_upload(
                        op,
                        BUCKETS[b],
                        KEYS[(k + i * step) % KEYS.len()],
                        meta,
                        actor,
                    );
                }
            }
            Op::PutPart { pick, number, body } => self.put_part(op, pick, number, body),
            Op::CopyPart { pick, number, src_b, src_k, range } => {
                let src_key = self.object_key(BUCKETS[src_b], src_k);
                self.copy_part(op, pick, number, (BUCKETS[src_b], &src_key), range);
            }
            Op::ListParts { pick, marker, max } => {
                let (bucket, key, id) = self.address(pick);
                let found = self.model.find_live(&bucket, &key, &id);
                let mut args = ListParts { part_number_marker: marker, max_parts: max };
                let mut listed = Vec::new();
                for _ in 0..20 {
                    let want = found.clone().map(|i| self.model.parts_page(i, &args));
                    let got = self.engine().list_parts(&bucket, &key, &id, &args);
                    let Ok(page) = agree(op, got, want) else { return };
                    listed.extend(page.parts.iter().map(|p| p.part_number));
                    if !page.is_truncated {
                        let index = found.unwrap();
                        let all: Vec<u32> = self.model.uploads[index]
                            .parts
                            .keys()
                            .copied()
                            .filter(|n| *n > marker)
                            .collect();
                        assert_eq!(listed, all, "{op:?}: the pages together");
                        return;
                    }
                    args.part_number_marker = page.next_part_number_marker.unwrap();
                }
                panic!("{op:?}: ListParts never ended");
            }
            Op::ListUploads { b, prefix, delimiter, max, start } => {
                let bucket = BUCKETS[b];
                let mut args = ListUploads {
                    prefix: PREFIXES[prefix].to_owned(),
                    delimiter: DELIMITERS[delimiter].map(str::to_owned),
                    max_uploads: max,
                    ..ListUploads::default()
                };
                match start {
                    UploadMarker::None => {}
                    UploadMarker::Key(m) => args.key_marker = Some(MARKERS[m].to_owned()),
                    UploadMarker::KeyAndId(i) => {
                        // Any upload the bucket had: in progress, or ended since.
                        let had: Vec<&MUpload> =
                            self.model.uploads.iter().filter(|u| u.bucket == bucket).collect();
                        if !had.is_empty() {
                            let u = had[i % had.len()];
                            args.key_marker = Some(u.key.clone());
                            args.upload_id_marker = Some(u.id.to_string());
                        }
                    }
                }
                let all = self
                    .model
                    .uploads_page(bucket, &ListUploads { max_uploads: None, ..args.clone() });
                let (mut uploads, mut prefixes) = (Vec::new(), Vec::new());
                for _ in 0..100 {
                    let want = self.model.uploads_page(bucket, &args);
                    let Ok(page) = agree(op, self.engine().list_uploads(bucket, &args), want)
                    else {
                        return;
                    };
                    uploads.extend(page.uploads);
                    prefixes.extend(page.common_prefixes);
                    if !page.is_truncated {
                        let all = all.unwrap();
                        assert_eq!(uploads, all.uploads, "{op:?}: the pages' uploads together");
                        assert_eq!(prefixes, all.common_prefixes, "{op:?}: the pages' prefixes");
                        return;
                    }
                    args.key_marker = page.next_key_marker;
                    args.upload_id_marker = page.next_upload_id_marker;
                }
                panic!("{op:?}: ListMultipartUploads never ended");
            }
            Op::Complete { pick, parts, declared } => self.complete(op, pick, parts, declared),
            Op::Abort { pick } => {
                let (bucket, key, id) = self.address(pick);
                let expected = self.expected_version(pick, &bucket, &key, &id);
                let found = self.model.find_live(&bucket, &key, &id);
                let want = found.clone().and_then(|i| {
                    let u = &self.model.uploads[i];
                    if expected.is_some_and(|v| v != u.version) {
                        return fail("PreconditionFailed");
                    }
                    Ok(Aborted {
                        parts: u.parts.len() as u64,
                        bytes: u.parts.values().map(MPart::size).sum(),
                    })
                });
                let got = self.engine().abort_upload("carol", &bucket, &key, &id, expected);
                if agree(op, got, want).is_ok() {
                    self.model.uploads[found.unwrap()].status = Status::Ended;
                }
            }
            Op::PutObject { b, k, body, checksum, cond } => {
                let (bucket, key) = (BUCKETS[b], KEYS[k]);
                let current =
                    self.model.buckets.get(bucket).and_then(|found| found.objects.get(key));
                let current_etag = current.map(|o| o.etag);
                let other = Etag { md5: [0xEE; 16], parts: None };
                let condition = match cond {
                    3 => Some(WriteCondition {
                        if_none_match: Some(EtagMatch::Any),
                        ..Default::default()
                    }),
                    4 => Some(WriteCondition {
                        if_match: Some(EtagMatch::Any),
                        ..Default::default()
                    }),
                    5 => Some(WriteCondition {
                        if_match: Some(EtagMatch::Etag(current_etag.unwrap_or(other))),
                        ..Default::default()
                    }),
                    6 => Some(WriteCondition {
                        if_match: Some(EtagMatch::Etag(other)),
                        ..Default::default()
                    }),
                    7 => Some(WriteCondition {
                        if_none_match: Some(EtagMatch::Etag(current_etag.unwrap_or(other))),
                        ..Default::default()
                    }),
                    _ => None,
                };
                // What the condition says of the object the key holds now.
                let refused = condition.and_then(|c| {
                    if c.if_match.is_some_and(|m| !m.matches(current_etag.as_ref())) {
                        Some(if current.is_none() { "NoSuchKey" } else { "PreconditionFailed" })
                    } else if c.if_none_match.is_some_and(|m| m.matches(current_etag.as_ref())) {
                        Some("PreconditionFailed")
                    } else {
                        None
                    }
                });
                let spec = checksum.then_some(ChecksumSpec {
                    algorithm: ChecksumAlgorithm::Crc32c,
                    kind: ChecksumType::FullObject,
                });
                let meta = ObjectMeta {
                    content_type: Some(format!("put/{}", body.seed)),
                    checksum: spec,
                    ..ObjectMeta::default()
                };
                let bytes = body.bytes();
                let request = ObjectPut {
                    bucket,
                    key,
                    meta: meta.clone(),
                    content_length: body.content_length(),
                    content_md5: body.content_md5(),
                    checksums: Vec::new(),
                    condition,
                };
                let got = self.engine().put_object("alice", &request, &mut &bytes[..]);
                let crc = crc_of(&bytes);
                let object = MObject {
                    parts: vec![MPart {
                        number: 1,
                        md5: md5_of(&bytes),
                        checksum: checksum.then_some(crc),
                        time_ms: now,
                        stored: body.stored(),
                        bytes: Arc::from(bytes),
                    }],
                    etag: Etag { md5: md5_of(&body.bytes()), parts: None },
                    meta,
                    checksum: checksum.then(|| ObjectChecksum {
                        checksum: crc_checksum(crc),
                        kind: ChecksumType::FullObject,
                        parts: None,
                    }),
                    last_modified_ms: now,
                    upload_id: None,
                };
                let want = if !self.model.buckets.contains_key(bucket) {
                    fail("NoSuchBucket")
                } else if let Some(e) = body.error() {
                    fail(e)
                } else if let Some(e) = refused {
                    fail(e)
                } else {
                    Ok(object.info(bucket, key))
                };
                if agree(op, got, want).is_ok() {
                    let found = self.model.buckets.get_mut(bucket).unwrap();
                    found.objects.insert(key.to_owned(), object);
                }
            }
            Op::CopyObject { src_b, src_k, b, k, replace } => {
                let (bucket, key) = (BUCKETS[b], KEYS[k]);
                let (src_bucket, src_key) =
                    (BUCKETS[src_b], self.object_key(BUCKETS[src_b], src_k));
                let src_key = src_key.as_str();
                let meta = replace.then(|| ObjectMeta {
                    content_type: Some("replaced".to_owned()),
                    ..ObjectMeta::default()
                });
                let got = self.engine().copy_object(
                    "alice",
                    (src_bucket, src_key),
                    (bucket, key),
                    meta.clone(),
                );
                let want = if !self.model.buckets.contains_key(bucket) {
                    fail("NoSuchBucket")
                } else {
                    self.model.object(src_bucket, src_key).map(|source| {
                        let mut copy = source.clone();
                        copy.last_modified_ms = now;
                        // A copy is a new object: a repeated completion of the source's upload
                        // names the source's key only.
                        copy.upload_id = None;
                        if let Some(meta) = meta {
                            // The bytes keep their checksum spec whatever metadata replaces
                            // the source's.
                            copy.meta = ObjectMeta { checksum: copy.meta.checksum, ..meta };
                        }
                        copy
                    })
                };
                let info = want.as_ref().map(|o| o.info(bucket, key)).map_err(Clone::clone);
                if agree(op, got, info).is_ok() {
                    let found = self.model.buckets.get_mut(bucket).unwrap();
                    found.objects.insert(key.to_owned(), want.unwrap());
                }
            }
            Op::DeleteObject { b, k } => {
                let (bucket, key) = (BUCKETS[b], self.object_key(BUCKETS[b], k));
                let want = match self.model.buckets.get_mut(bucket) {
                    None => fail("NoSuchBucket"),
                    Some(found) => Ok(found.objects.remove(&key).is_some()),
                };
                agree(op, self.engine().delete_object("alice", bucket, &key), want).ok();
            }
            Op::ListObjects { b, prefix, delimiter, max, start } => {
                let bucket = BUCKETS[b];
                let mut args = ListObjects {
                    prefix: PREFIXES[prefix].to_owned(),
                    delimiter: DELIMITERS[delimiter].map(str::to_owned),
                    start_after: start.map(|m| MARKERS[m].to_owned()),
                    max_keys: max,
                };
                let all = self
                    .model
                    .objects_page(bucket, &ListObjects { max_keys: None, ..args.clone() });
                let (mut objects, mut prefixes) = (Vec::new(), Vec::new());
                for _ in 0..100 {
                    let want = self.model.objects_page(bucket, &args);
                    let Ok(page) = agree(op, self.engine().list_objects(bucket, &args), want)
                    else {
                        return;
                    };
                    objects.extend(page.objects);
                    prefixes.extend(page.common_prefixes);
                    if !page.is_truncated {
                        let all = all.unwrap();
                        assert_eq!(objects, all.objects, "{op:?}: the pages' objects together");
                        assert_eq!(prefixes, all.common_prefixes, "{op:?}: the pages' prefixes");
                        return;
                    }
                    args.start_after = page.next_start_after;
                }
                panic!("{op:?}: ListObjects never ended");
            }
            Op::Read { b, k, range, part } => {
                let key = self.object_key(BUCKETS[b], k);
                self.read(op, BUCKETS[b], &key, range, part);
            }
            Op::Advance { ms } => self.clock.advance_ms(ms),
            Op::Expire => {
                let mut want = ExpiryReport::default();
                for u in self.model.uploads.iter_mut().filter(|u| u.live()) {
                    if u.expires_ms() <= now {
                        u.status = Status::Ended;
                        want.uploads += 1;
                        want.bytes_freed += u.parts.values().map(MPart::size).sum::<u64>();
                    }
                }
                agree(op, self.engine().expire_due(), Ok(want)).ok();
            }
            Op::Checkpoint => {
                let before = self.engine().stats();
                // The distinct inline payloads of live parts and objects move to segments.
                let inline: BTreeSet<&[u8]> = self
                    .model
                    .live_parts()
                    .filter(|p| !p.stored && !p.bytes.is_empty())
                    .map(|p| &p.bytes[..])
                    .collect();
                let report = self.engine().checkpoint().unwrap();
                if before.applied_lsn == before.checkpoint_lsn {
                    assert!(report.is_none(), "nothing changed: {report:?}");
                    assert!(inline.is_empty(), "the last checkpoint moved them");
                } else {
                    let report = report.unwrap();
                    assert_eq!(report.lsn, before.applied_lsn);
                    assert_eq!(report.inline_payloads_moved, inline.len() as u64, "{report:?}");
                }
                assert_eq!(
                    self.engine().checkpoint().unwrap(),
                    None,
                    "nothing changed since the last checkpoint"
                );
            }
            Op::Compact => {
                let report = self.engine().compact().unwrap();
                assert!(report.skipped.is_empty(), "{report:?}");
            }
            Op::Restart => self.restart(),
            Op::Crash { keep_seed } => self.crash(keep_seed),
        }
    }

    fn create_upload(&mut self, op: &Op, bucket: &str, key: &str, meta: Meta, actor: usize) {
        let now = self.now();
        let meta = meta.object_meta();
        let got = self.engine().create_upload(ACTORS[actor], bucket, key, meta.clone());
        let Some(found) = self.model.buckets.get(bucket) else {
            agree(op, got, fail("NoSuchBucket")).ok();
            return;
        };
        let Ok(info) = &got else {
            panic!("{op:?}: the engine failed: {got:?}");
        };
        let upload = MUpload {
            id: info.upload_id,
            bucket: bucket.to_owned(),
            key: key.to_owned(),
            owner: ACTORS[actor].to_owned(),
            initiated_ms: now,
            ttl_expires_ms: now + TTL_MS,
            abort_ms: abort_by(&found.lifecycle, key, now).0,
            abort_rule_id: abort_by(&found.lifecycle, key, now).1,
            version: 1,
            meta,
            parts: BTreeMap::new(),
            status: Status::Live,
            completed: None,
        };
        assert!(self.model.uploads.iter().all(|u| u.id != info.upload_id), "upload ids are unique");
        assert_eq!(
            info.upload_id.0[..8],
            now.to_be_bytes(),
            "ids start with their initiation time"
        );
        agree(op, got, Ok(upload.info())).ok();
        self.model.uploads.push(upload);
    }

    fn put_part(&mut self, op: &Op, pick: Pick, number: u32, body: Body) {
        let now = self.now();
        let (bucket, key, id) = self.address(pick);
        let bytes = body.bytes();
        let request = PartUpload {
            bucket: &bucket,
            key: &key,
            upload_id: &id,
            part_number: number,
            content_length: body.content_length(),
            content_md5: body.content_md5(),
            checksums: Vec::new(),
            expected_version: self.expected_version(pick, &bucket, &key, &id),
        };
        let got = self.engine().put_part("alice", &request, &mut &bytes[..]);
        let found = if (1..=10_000).contains(&number) {
            self.model.find_live(&bucket, &key, &id)
        } else {
            fail("InvalidArgument")
        };
        let want = found.and_then(|index| match body.error() {
            Some(e) => fail(e),
            // The version is compared when the part's record applies, after its bytes arrived.
            None if request
                .expected_version
                .is_some_and(|v| v != self.model.uploads[index].version) =>
            {
                fail("PreconditionFailed")
            }
            None => Ok(index),
        });
        let want = want.map(|index| {
            let u = &mut self.model.uploads[index];
            let part = MPart {
                number,
                md5: md5_of(&bytes),
                checksum: u.meta.checksum.map(|_| crc_of(&bytes)),
                time_ms: now,
                stored: body.stored(),
                bytes: Arc::from(bytes.as_slice()),
            };
            (index, part)
        });
        self.store_part(op, got, want);
    }

    /// Compares a part put's result and applies it to the model.
    fn store_part(
        &mut self,
        op: &Op,
        got: Result<PartStored, EngineError>,
        want: Result<(usize, MPart), String>,
    ) {
        let now = self.now();
        let expected = want.as_ref().map_err(Clone::clone).map(|(index, part)| PartStored {
            part: part.info(),
            version: self.model.uploads[*index].version + 1,
        });
        if agree(op, got, expected).is_ok() {
            let (index, part) = want.unwrap();
            let u = &mut self.model.uploads[index];
            u.version += 1;
            u.ttl_expires_ms = u.ttl_expires_ms.max(now + TTL_MS);
            u.parts.insert(part.number, part);
        }
    }

    fn copy_part(
        &mut self,
        op: &Op,
        pick: Pick,
        number: u32,
        (src_bucket, src_key): (&str, &str),
        range: CopyRange,
    ) {
        let now = self.now();
        let (bucket, key, id) = self.address(pick);
        // The range asked for, from the source as it is.
        let source = self.model.object(src_bucket, src_key).ok();
        let range = match (range, source) {
            (CopyRange::Whole, _) | (CopyRange::Part(_), None) => None,
            (CopyRange::Part(i), Some(source)) => {
                let i = i % source.parts.len();
                let first: u64 = source.parts[..i].iter().map(MPart::size).sum();
                let last = (first + source.parts[i].size()).max(first + 1) - 1;
                Some((first, last))
            }
            (CopyRange::Bytes(a, b), _) => Some((a, b)),
        };
        let request = PartCopy {
            bucket: &bucket,
            key: &key,
            upload_id: &id,
            part_number: number,
            source_bucket: src_bucket,
            source_key: src_key,
            range,
            expected_version: None,
        };
        let got = self.engine().copy_part("alice", &request);
        let want = (|| {
            if !(1..=10_000).contains(&number) {
                return fail("InvalidArgument");
            }
            let index = self.model.find_live(&bucket, &key, &id)?;
            let spec = self.model.uploads[index].meta.checksum;
            let source = self.model.object(src_bucket, src_key)?;
            let size = source.size();
            let (first, last) = match range {
                None => (0, size.saturating_sub(1)),
                Some((first, last)) if first <= last && last < size => (first, last),
                Some(_) => return fail("InvalidRange"),
            };
            // By reference when the range is exactly one of the source's parts (and its
            // checksum fits the upload's): the part keeps its payload, size, MD5 and checksum.
            let mut start = 0;
            for part in &source.parts {
                let exact = (start, start + part.size()) == (first, last + 1)
                    || (size == 0 && source.parts.len() == 1);
                let fits = spec.is_none() || part.checksum.is_some();
                if exact && fits {
                    return Ok((index, MPart { number, time_ms: now, ..part.clone() }));
                }
                start += part.size();
            }
            // Else the range's bytes are read and stored as a new part of known length.
            let bytes = source.bytes()[first as usize..(last + 1).min(size) as usize].to_vec();
            let part = MPart {
                number,
                md5: md5_of(&bytes),
                checksum: spec.map(|_| crc_of(&bytes)),
                time_ms: now,
                stored: bytes.len() as u64 > INLINE_BYTES_MAX,
                bytes: Arc::from(bytes),
            };
            Ok((index, part))
        })();
        self.store_part(op, got, want);
    }

    /// The version a compare-and-set names: the upload's own (1 if the pick names none), or
    /// one past it.
    fn expected_version(&self, pick: Pick, bucket: &str, key: &str, id: &str) -> Option<u64> {
        let right = pick.cas?;
        let version = match self.model.find_live(bucket, key, id) {
            Ok(index) => self.model.uploads[index].version,
            Err(_) => 1,
        };
        Some(if right { version } else { version + 1 })
    }

    fn complete(&mut self, op: &Op, pick: Pick, choice: CompletePick, declared: Option<bool>) {
        let now = self.now();
        let (bucket, key, id) = self.address_among(pick, |u| !u.parts.is_empty());
        // The upload the id names, if any (whatever its state).
        let named = id
            .parse::<UploadId>()
            .ok()
            .and_then(|id| self.model.uploads.iter().position(|u| u.id == id));
        let mut list: Vec<CompletePart> = Vec::new();
        if let Some(index) = named {
            let u = &self.model.uploads[index];
            let entry = |p: &MPart, ck: Ck| CompletePart {
                part_number: p.number,
                etag: p.md5,
                checksum: match ck {
                    Ck::Right => p.checksum.map(|c| c.to_vec()),
                    Ck::Omit => None,
                    Ck::Wrong => Some(vec![0xDE, 0xAD, 0xBE, 0xEF]),
                },
            };
            match choice {
                CompletePick::Empty => {}
                CompletePick::Repeat => {
                    let numbers: Vec<u32> = match &u.completed {
                        Some(numbers) => numbers.clone(),
                        None => u.parts.keys().copied().collect(),
                    };
                    list = numbers.iter().map(|n| entry(&u.parts[n], Ck::Right)).collect();
                }
                CompletePick::Listed { mask, swap, bad_etag, missing, ck } => {
                    for (i, p) in u.parts.values().enumerate() {
                        if mask & (1 << (i % 8)) != 0 {
                            // A wrong checksum on the first entry only.
                            let ck = if matches!(ck, Ck::Wrong) && !list.is_empty() {
                                Ck::Right
                            } else {
                                ck
                            };
                            list.push(entry(p, ck));
                        }
                    }
                    if list.is_empty()
                        && let Some(last) = u.parts.values().last()
                    {
                        // A mask that picks nothing picks the last part.
                        list.push(entry(last, ck));
                    }
                    if missing {
                        list.push(CompletePart { part_number: 7, etag: [7; 16], checksum: None });
                    }
                    if let Some(s) = swap
                        && list.len() >= 2
                    {
                        let at = s % (list.len() - 1);
                        list.swap(at, at + 1);
                    }
                    if let Some(b) = bad_etag
                        && !list.is_empty()
                    {
                        let at = b % list.len();
                        list[at].etag[0] ^= 0xFF;
                    }
                }
            }
        } else if !matches!(choice, CompletePick::Empty) {
            list.push(CompletePart { part_number: 1, etag: [1; 16], checksum: None });
        }
        let request = Completion {
            bucket: &bucket,
            key: &key,
            upload_id: &id,
            parts: list.clone(),
            object_size_bytes: declared.map(|right| {
                let total: u64 = named.map_or(0, |index| {
                    let parts = &self.model.uploads[index].parts;
                    list.iter().filter_map(|p| parts.get(&p.part_number)).map(MPart::size).sum()
                });
                if right { total } else { total + 1 }
            }),
            expected_version: self.expected_version(pick, &bucket, &key, &id),
            condition: None,
            object_checksum: None,
        };
        let got = self.engine().complete_upload("alice", &request);
        let want = self.model_complete(&request, now);
        if agree(op, got, want.as_ref().map(|(info, _)| info.clone()).map_err(Clone::clone)).is_ok()
            && let Ok((_, Some((index, object)))) = want
        {
            let u = &mut self.model.uploads[index];
            u.status = Status::Completed;
            u.completed = Some(list.iter().map(|p| p.part_number).collect());
            let found = self.model.buckets.get_mut(&bucket).unwrap();
            found.objects.insert(key, object);
        }
    }

    /// The model's CompleteMultipartUpload: the object info, and the object to install (none
    /// for a repeated completion).
    #[allow(clippy::type_complexity)]
    fn model_complete(
        &self,
        request: &Completion<'_>,
        now: u64,
    ) -> Result<(ObjectInfo, Option<(usize, MObject)>), String> {
        let (bucket, key, id, list) =
            (request.bucket, request.key, request.upload_id, &request.parts[..]);
        if list.is_empty() {
            return fail("MalformedXML");
        }
        let index = match self.model.find_live(bucket, key, id) {
            Ok(index) => index,
            Err(e) if e == "NoSuchUpload" => {
                // Not in progress: a repeat of a completion of this upload, at its key, with
                // the same parts, returns the same object.
                let Ok(id) = id.parse::<UploadId>() else { return fail("NoSuchUpload") };
                let Some(u) = self.model.uploads.iter().find(|u| u.id == id) else {
                    return fail("NoSuchUpload");
                };
                let Ok(object) = self.model.object(bucket, key) else {
                    return fail("NoSuchUpload");
                };
                let same = u.bucket == bucket
                    && u.key == key
                    && object.upload_id == Some(id)
                    && object.parts.len() == list.len()
                    && object.parts.iter().zip(list).all(|(have, asked)| {
                        have.number == asked.part_number && have.md5 == asked.etag
                    });
                return if same {
                    Ok((object.info(bucket, key), None))
                } else {
                    fail("NoSuchUpload")
                };
            }
            Err(e) => return Err(e),
        };
        let u = &self.model.uploads[index];
        // The version precondition first, then the list, each part, the sizes, the declared
        // object size, the checksums.
        if request.expected_version.is_some_and(|v| v != u.version) {
            return fail("PreconditionFailed");
        }
        let mut previous = 0;
        for asked in list {
            if asked.part_number <= previous {
                return Err(format!("InvalidPartOrder:{}", asked.part_number));
            }
            previous = asked.part_number;
        }
        let mut chosen = Vec::new();
        for asked in list {
            match u.parts.get(&asked.part_number) {
                Some(p) if p.md5 == asked.etag => chosen.push(p.clone()),
                _ => return Err(format!("InvalidPart:{}", asked.part_number)),
            }
        }
        for p in &chosen[..chosen.len() - 1] {
            if p.size() < MIN_PART_BYTES {
                return Err(format!("EntityTooSmall:{}", p.number));
            }
        }
        let size: u64 = chosen.iter().map(MPart::size).sum();
        if request.object_size_bytes.is_some_and(|declared| declared != size) {
            return fail("InvalidRequest");
        }
        let checksum = match u.meta.checksum {
            None => None,
            Some(spec) => {
                for (p, asked) in chosen.iter().zip(list) {
                    let Some(stored) = p.checksum else { return fail("BadDigest") };
                    if asked.checksum.as_deref() != Some(&stored[..]) {
                        return fail("BadDigest");
                    }
                }
                Some(match spec.kind {
                    ChecksumType::Composite => {
                        let raw: Vec<u8> =
                            chosen.iter().flat_map(|p| p.checksum.unwrap()).collect();
                        ObjectChecksum {
                            checksum: crc_checksum(crc_of(&raw)),
                            kind: ChecksumType::Composite,
                            parts: Some(chosen.len() as u32),
                        }
                    }
                    ChecksumType::FullObject => {
                        let all: Vec<u8> =
                            chosen.iter().flat_map(|p| p.bytes.iter().copied()).collect();
                        ObjectChecksum {
                            checksum: crc_checksum(crc_of(&all)),
                            kind: ChecksumType::FullObject,
                            parts: None,
                        }
                    }
                })
            }
        };
        let mut md5s = Vec::new();
        for p in &chosen {
            md5s.extend_from_slice(&p.md5);
        }
        let object = MObject {
            etag: Etag { md5: md5_of(&md5s), parts: Some(chosen.len() as u32) },
            parts: chosen,
            meta: u.meta.clone(),
            checksum,
            last_modified_ms: now,
            upload_id: Some(u.id),
        };
        Ok((object.info(bucket, key), Some((index, object))))
    }

    fn read(
        &mut self,
        op: &Op,
        bucket: &str,
        key: &str,
        range: Option<(u64, u64)>,
        part: Option<u32>,
    ) {
        let want = self.model.object(bucket, key).cloned();
        let got = self.engine().open_object(bucket, key, None).map(|(info, r)| (info, read_all(r)));
        let expected =
            want.as_ref().map(|o| (o.info(bucket, key), o.bytes())).map_err(Clone::clone);
        agree(op, got, expected).ok();
        if let Some((first, last)) = range {
            let got = self
                .engine()
                .open_object(bucket, key, Some((first, last)))
                .map(|(info, r)| (info, read_all(r)));
            let expected = want.as_ref().map_err(Clone::clone).and_then(|o| {
                let bytes = o.bytes();
                if first <= last && first < bytes.len() as u64 {
                    let end = (last + 1).min(bytes.len() as u64);
                    Ok((o.info(bucket, key), bytes[first as usize..end as usize].to_vec()))
                } else {
                    fail("InvalidRange")
                }
            });
            agree(op, got, expected).ok();
        }
        if let Some(n) = part {
            let got = self
                .engine()
                .open_object_part(bucket, key, n)
                .map(|o| (o.object, o.part, o.offset_bytes, read_all(o.reader)));
            // Parts keep the numbers they were uploaded with, which may skip.
            let expected = want.as_ref().map_err(Clone::clone).and_then(|o| {
                match o.parts.iter().position(|p| p.number == n) {
                    Some(i) => {
                        let offset = o.parts[..i].iter().map(|p| p.bytes.len() as u64).sum();
                        let p = &o.parts[i];
                        Ok((o.info(bucket, key), p.info(), offset, p.bytes.to_vec()))
                    }
                    None => Err(format!("InvalidPart:{n}")),
                }
            });
            agree(op, got, expected).ok();
        }
    }

    /// Compares everything the engine holds with the model.
    fn audit(&self) {
        let e = self.engine();
        let model = &self.model;
        let buckets: Vec<BucketInfo> = model
            .buckets
            .iter()
            .map(|(name, b)| BucketInfo {
                name: name.clone(),
                created_ms: b.created_ms,
                lifecycle: b.lifecycle.clone(),
            })
            .collect();
        assert_eq!(e.list_buckets(), buckets, "buckets");
        let stats = e.stats();
        let live: Vec<&MUpload> = model.uploads.iter().filter(|u| u.live()).collect();
        assert_eq!(stats.buckets, model.buckets.len() as u64, "stats: buckets");
        assert_eq!(stats.live_uploads, live.len() as u64, "stats: uploads");
        let parts: usize = live.iter().map(|u| u.parts.len()).sum();
        assert_eq!(stats.parts, parts as u64, "stats: parts");
        let objects: usize = model.buckets.values().map(|b| b.objects.len()).sum();
        assert_eq!(stats.objects, objects as u64, "stats: objects");
        for (name, found) in &model.buckets {
            assert_eq!(
                e.list_uploads(name, &ListUploads::default()).map_err(|e| code(&e)),
                model.uploads_page(name, &ListUploads::default()),
                "uploads of {name}"
            );
            assert_eq!(
                e.list_objects(name, &ListObjects::default()).map_err(|e| code(&e)),
                model.objects_page(name, &ListObjects::default()),
                "objects of {name}"
            );
            for (key, object) in &found.objects {
                assert_eq!(e.head_object(name, key).unwrap(), object.info(name, key), "{key}");
                let parts: Vec<PartInfo> = object.parts.iter().map(MPart::info).collect();
                assert_eq!(e.object_parts(name, key).unwrap(), parts, "{key}");
                let (_, reader) = e.open_object(name, key, None).unwrap();
                assert_eq!(read_all(reader), object.bytes(), "bytes of {name}/{key}");
            }
        }
        for (index, u) in model.uploads.iter().enumerate() {
            let id = u.id.to_string();
            let got = e.get_upload(&u.bucket, &u.key, &id).map_err(|e| code(&e));
            if u.live() {
                assert_eq!(got, Ok(u.info()), "upload {index}");
                let page = e.list_parts(&u.bucket, &u.key, &id, &ListParts::default()).unwrap();
                assert_eq!(
                    page,
                    model.parts_page(index, &ListParts::default()),
                    "parts of {index}"
                );
            } else {
                let want = model.find_live(&u.bucket, &u.key, &id).map(|_| u.info());
                assert_eq!(got, want, "upload {index}");
            }
        }
    }

    /// The payload store's references match the live parts' and objects' stored payloads, its
    /// space accounting adds up, and (with `verify`) every payload hashes right.
    fn audit_payloads(&self, verify: bool) {
        let store = self.engine().payload_store();
        let snapshot = store.snapshot();
        let have: BTreeMap<ContentAddress, u64> =
            snapshot.iter().map(|(address, _, refs)| (*address, *refs)).collect();
        assert_eq!(have, self.model.stored_refs(), "payload references");
        let spans: u64 =
            snapshot
                .iter()
                .map(|(_, l, _)| {
                    if l.is_empty() {
                        0
                    } else {
                        (ENTRY_HEADER_BYTES + l.len()).next_multiple_of(8)
                    }
                })
                .sum();
        assert_eq!(store.space().live_bytes, spans, "live bytes");
        if verify {
            let report = store.verify().unwrap();
            assert!(report.corrupt.is_empty(), "{:?}", report.corrupt);
        }
    }
}

/// Opens the engine on the real file system in `dir`, or on the simulated one.
fn open_engine(
    dir: &std::path::Path,
    sim: Option<&tessera_wal::SimFs>,
    clock: &ManualClock,
) -> Engine {
    match sim {
        Some(sim) => Engine::open_with_fs(sim.shared(), "/model", config(clock)).unwrap(),
        None => Engine::open(dir, config(clock)).unwrap(),
    }
}

/// Runs `ops` against an engine and the model, checking after each; `sim` runs it on the
/// simulated file system.
fn run_on(ops: &[Op], sim: Option<tessera_wal::SimFs>) {
    let mut run = Run::on(sim);
    for op in ops {
        run.step(op);
        run.after_step();
        run.audit();
        // Hash every payload again after the operations that move or recover them.
        run.audit_payloads(matches!(op, Op::Compact | Op::Restart | Op::Crash { .. }));
    }
    run.restart();
    run.audit();
    run.audit_payloads(true);
}

fn run(ops: &[Op]) {
    run_on(ops, None);
}

/// A fuzz target's body: a sequence of operations drawn from `data`, run against the engine on
/// the simulated file system and the model. The bytes seed proptest's ChaCha RNG (through
/// SHA-256): the pass-through RNG would let the fuzzer steer each draw, but its forks (every
/// collection strategy forks) start dry, and a dry stream of zeros makes range sampling loop.
pub(crate) fn run_from_bytes(data: &[u8]) {
    use proptest::strategy::ValueTree as _;
    use proptest::test_runner::{RngAlgorithm, TestRng, TestRunner};
    let seed: [u8; 32] = Sha256::digest(data).into();
    let rng = TestRng::from_seed(RngAlgorithm::ChaCha, &seed);
    let mut runner = TestRunner::new_with_rng(ProptestConfig::default(), rng);
    let Ok(tree) = prop::collection::vec(op(), 1..=40).new_tree(&mut runner) else { return };
    run_on(&tree.current(), Some(tessera_wal::SimFs::new(0)));
}

#[test]
fn operations_drawn_from_bytes_agree_with_the_model_on_the_simulated_file_system() {
    // The fuzz target's body, on a few inputs (the fuzzer runs it on millions).
    for n in 0..8u8 {
        run_from_bytes(&[n; 16]);
    }
    // And every input of its corpus (seeds, and inputs it found failures with).
    let corpus = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("../fuzz/corpus/engine_ops");
    let mut count = 0;
    for entry in std::fs::read_dir(&corpus).unwrap() {
        run_from_bytes(&std::fs::read(entry.unwrap().path()).unwrap());
        count += 1;
    }
    assert!(count > 0, "the corpus has seeds");
}

fn cases() -> u32 {
    std::env::var("TESSERA_MODEL_CASES").ok().and_then(|s| s.parse().ok()).unwrap_or(64)
}

#[test]
fn random_operation_sequences_agree_with_the_model() {
    let config =
        ProptestConfig { cases: cases(), failure_persistence: None, ..ProptestConfig::default() };
    let mut runner = proptest::test_runner::TestRunner::new(config);
    // Half the cases on the simulated file system, where `Op::Crash` cuts the power.
    let cases = (prop::collection::vec(op(), 1..=60), proptest::option::of(any::<u64>()));
    let result = runner.run(&cases, |(ops, sim_seed)| {
        run_on(&ops, sim_seed.map(tessera_wal::SimFs::new));
        Ok::<(), TestCaseError>(())
    });
    if std::env::var_os("TESSERA_MODEL_STATS").is_some() {
        for (outcome, count) in OUTCOMES.lock().iter() {
            println!("{count:>7}  {outcome}");
        }
    }
    if let Err(e) = result {
        panic!("{e}");
    }
}

// ---------------------------------------------------------------------------------------------
// Regression tests of engine bugs the model found (both failed on fab7be0; the fixes are
// time-prefixed upload ids with a lexicographic upload-id marker, and copies that drop the
// source's upload id).

/// An engine with one bucket, "bkt-a", on the model's configuration.
fn small_engine() -> (tempfile::TempDir, ManualClock, Engine) {
    let dir = tempfile::tempdir().unwrap();
    let clock = ManualClock::new(START_MS);
    let engine = Engine::open(dir.path(), config(&clock)).unwrap();
    engine.create_bucket("alice", "bkt-a").unwrap();
    (dir, clock, engine)
}

/// Paging ListMultipartUploads with the markers of the previous page must not skip the
/// marker key's other uploads when the marker upload ended between the two pages (it did: the
/// marker was looked up among the key's live uploads, and "not found" skipped them all). A
/// cleanup script that lists a page and aborts what it lists (the Harbor workaround in S3.md)
/// never saw the key's other uploads.
#[test]
fn paging_uploads_survives_the_marker_upload_ending() {
    let (_dir, clock, engine) = small_engine();
    let mut ids = Vec::new();
    for _ in 0..3 {
        ids.push(engine.create_upload("alice", "bkt-a", "k", ObjectMeta::default()).unwrap());
        clock.advance_ms(1);
    }
    let first = ListUploads { max_uploads: Some(1), ..ListUploads::default() };
    let page = engine.list_uploads("bkt-a", &first).unwrap();
    assert_eq!(page.uploads[0].upload_id, ids[0].upload_id);
    assert!(page.is_truncated);
    // The client aborts what it listed, then asks for the next page.
    engine.abort_upload("alice", "bkt-a", "k", &ids[0].upload_id.to_string(), None).unwrap();
    let next = ListUploads {
        key_marker: page.next_key_marker,
        upload_id_marker: page.next_upload_id_marker,
        ..ListUploads::default()
    };
    let rest: Vec<UploadId> =
        engine.list_uploads("bkt-a", &next).unwrap().uploads.iter().map(|u| u.upload_id).collect();
    // Both uploads initiated after the marker's were in progress during the whole listing.
    assert_eq!(rest, vec![ids[1].upload_id, ids[2].upload_id]);
}

/// A repeated CompleteMultipartUpload names the upload's own key: once the completed object
/// is copied to another key, completing the upload again "at" that key is NoSuchUpload, as for
/// a live upload of another key. (It succeeded: the copy kept the source's upload id, and a
/// repeat is answered from the object at the requested key that carries the id.)
#[test]
fn a_repeated_completion_names_the_uploads_own_key() {
    let (_dir, _clock, engine) = small_engine();
    let id = engine.create_upload("alice", "bkt-a", "src", ObjectMeta::default()).unwrap();
    let id = id.upload_id.to_string();
    let bytes = payload_bytes(1, 40);
    let request = PartUpload {
        bucket: "bkt-a",
        key: "src",
        upload_id: &id,
        part_number: 1,
        content_length: Some(40),
        ..PartUpload::default()
    };
    let part = engine.put_part("alice", &request, &mut &bytes[..]).unwrap().part;
    let parts = vec![CompletePart { part_number: 1, etag: part.etag.md5, checksum: None }];
    let completion = |key| Completion {
        bucket: "bkt-a",
        key,
        upload_id: &id,
        parts: parts.clone(),
        ..Completion::default()
    };
    engine.complete_upload("alice", &completion("src")).unwrap();
    engine.copy_object("alice", ("bkt-a", "src"), ("bkt-a", "dst"), None).unwrap();
    let again = engine.complete_upload("alice", &completion("dst"));
    assert_eq!(again.map_err(|e| code(&e)).map(|o| o.key), fail("NoSuchUpload"));
}
