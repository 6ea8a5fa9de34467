//! The engine's state: buckets, uploads in progress, objects, and the transitions that change
//! them. [`State::apply`] is deterministic: applying the same records to the same state gives
//! the same state and the same outcomes, whether live or during recovery.

pub(crate) mod addresses;
mod apply;
mod listing;
mod part_table;

use std::borrow::Borrow;
use std::collections::{BTreeMap, BTreeSet};
use std::num::NonZeroU64;
use std::sync::Arc;

use arcstr::ArcStr;
use serde::{Deserialize, Serialize};

use crate::model::{
    AbortRule, BucketInfo, Etag, ObjectChecksum, ObjectInfo, ObjectMeta, PartInfo, UploadId,
    UploadInfo,
};
use crate::payload::{Checksum, ContentAddress, DenseMap, PayloadHandle, SegmentId};

pub(crate) use self::apply::part_number;
pub use self::apply::{Applied, Effect, Outcome};
pub use self::listing::{
    ListObjects, ListParts, ListUploads, ObjectSummary, ObjectsPage, PAGE_ENTRIES_MAX, PartsPage,
    UploadSummary, UploadsPage,
};
pub use self::part_table::PartTable;

/// An object key (or a bucket's key index entry): UTF-8, ordered by its bytes. It borrows as
/// bytes so that a listing can seek to a byte string that is not itself a valid key (the first
/// key after every key under a prefix). An `ArcStr` is one pointer wide (its length lives beside
/// its bytes), where an `Arc<str>` is two: a key is held by its upload and by its bucket's key
/// index, and memory per upload is a benchmark figure.
#[derive(Clone, Debug, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
pub struct Key(#[serde(deserialize_with = "decode::fresh_str")] pub ArcStr);

impl Borrow<[u8]> for Key {
    fn borrow(&self) -> &[u8] {
        self.0.as_bytes()
    }
}

/// The uploads in progress of one key, in id order. Nearly always one: it is held inline then,
/// with no allocation of its own (memory per upload is a benchmark figure).
pub type KeyUploads = smallvec::SmallVec<[UploadId; 1]>;

/// Where a part's bytes are.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub enum PartData {
    /// Zero bytes.
    Empty,
    /// In the payload store, holding one reference on the payload its handle names. Written
    /// in a checkpoint as the payload's position in the checkpoint's list (see `addresses`).
    Stored(#[serde(with = "addresses")] PayloadHandle),
    /// Carried in memory (it arrived inline in its record), until the next checkpoint moves it
    /// into a payload segment. Boxed: most parts are stored, and a part stays small.
    Inline(Box<InlinePayload>),
}

/// A payload held in memory.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct InlinePayload {
    /// SHA-256.
    pub address: ContentAddress,
    /// The bytes.
    #[serde(with = "arc_bytes")]
    pub bytes: Arc<[u8]>,
}

/// Decoding a checkpoint's uploads without the allocations a derived `Deserialize` makes: a
/// string straight into its `Arc` (not through a `String`), and the names and metadata most
/// uploads repeat shared from their first decoding (recovery time and memory per upload are
/// benchmark figures). The wire format is a derived one's.
pub(crate) mod decode {
    use std::cell::RefCell;
    use std::sync::Arc;

    use arcstr::ArcStr;
    use serde::de::{Deserialize, Deserializer, Error, Visitor};

    use crate::model::ObjectMeta;

    /// Strings this thread decoded lately (bucket and owner names), at most this many.
    const RECENT_MAX: usize = 8;

    thread_local! {
        static RECENT: RefCell<Vec<ArcStr>> = const { RefCell::new(Vec::new()) };
        static DEFAULT_META: Arc<ObjectMeta> = Arc::default();
    }

    /// Forgets what this thread shared (a decoded state owns its values).
    pub fn forget_recent() {
        RECENT.with_borrow_mut(Vec::clear);
    }

    struct StrVisitor {
        shared: bool,
    }

    impl Visitor<'_> for StrVisitor {
        type Value = ArcStr;

        fn expecting(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
            f.write_str("a string")
        }

        fn visit_str<E: Error>(self, s: &str) -> Result<ArcStr, E> {
            if !self.shared {
                return Ok(ArcStr::from(s));
            }
            Ok(RECENT.with_borrow_mut(|recent| {
                if let Some(found) = recent.iter().find(|r| ***r == *s) {
                    return ArcStr::clone(found);
                }
                let fresh: ArcStr = ArcStr::from(s);
                if recent.len() == RECENT_MAX {
                    recent.remove(0);
                }
                recent.push(ArcStr::clone(&fresh));
                fresh
            }))
        }
    }

    /// A string in one allocation of its own.
    pub fn fresh_str<'de, D: Deserializer<'de>>(deserializer: D) -> Result<ArcStr, D::Error> {
        deserializer.deserialize_str(StrVisitor { shared: false })
    }

    /// A string shared with the same string decoded lately on this thread.
    pub fn shared_str<'de, D: Deserializer<'de>>(deserializer: D) -> Result<ArcStr, D::Error> {
        deserializer.deserialize_str(StrVisitor { shared: true })
    }

    /// An abort date, the epoch itself read as 1 ms after it (see `Upload::abort_ms`).
    pub fn abort_date<'de, D: Deserializer<'de>>(
        deserializer: D,
    ) -> Result<Option<std::num::NonZeroU64>, D::Error> {
        let date = Option::<u64>::deserialize(deserializer)?;
        Ok(date.map(|ms| std::num::NonZeroU64::new(ms).unwrap_or(std::num::NonZeroU64::MIN)))
    }

    /// Metadata, shared if it is the default.
    pub fn shared_meta<'de, D: Deserializer<'de>>(
        deserializer: D,
    ) -> Result<Arc<ObjectMeta>, D::Error> {
        let meta = ObjectMeta::deserialize(deserializer)?;
        if meta == ObjectMeta::default() {
            return Ok(DEFAULT_META.with(Arc::clone));
        }
        Ok(Arc::new(meta))
    }
}

/// Shared bytes as one byte string (the wire format of a sequence of `u8`, in one copy).
pub(crate) mod arc_bytes {
    use std::sync::Arc;

    use serde::{Deserialize, Deserializer, Serializer};

    pub fn serialize<S: Serializer>(bytes: &Arc<[u8]>, serializer: S) -> Result<S::Ok, S::Error> {
        serializer.serialize_bytes(bytes)
    }

    pub fn deserialize<'de, D: Deserializer<'de>>(deserializer: D) -> Result<Arc<[u8]>, D::Error> {
        let bytes = serde_bytes::ByteBuf::deserialize(deserializer)?;
        Ok(Arc::from(bytes.into_vec()))
    }
}

impl PartData {
    /// The payload this part holds a reference on, if any.
    pub fn stored(&self) -> Option<PayloadHandle> {
        match self {
            PartData::Stored(handle) => Some(*handle),
            _ => None,
        }
    }
}

/// A part of an upload or of an object.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Part {
    /// 1..=10000.
    pub number: u16,
    /// Length.
    pub size_bytes: u64,
    /// MD5 of the bytes.
    pub md5: [u8; 16],
    /// The additional checksum, if any.
    pub checksum: Option<Box<Checksum>>,
    /// When uploaded.
    pub time_ms: u64,
    /// The bytes.
    pub data: PartData,
}

impl Part {
    /// As the API shows it.
    pub fn info(&self) -> PartInfo {
        PartInfo {
            part_number: u32::from(self.number),
            size_bytes: self.size_bytes,
            etag: Etag { md5: self.md5, parts: None },
            checksum: self.checksum.as_deref().cloned(),
            last_modified_ms: self.time_ms,
        }
    }
}

/// An upload in progress.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Upload {
    /// Its bucket.
    #[serde(deserialize_with = "decode::shared_str")]
    pub bucket: ArcStr,
    /// Its key.
    pub key: Key,
    /// Who created it.
    #[serde(deserialize_with = "decode::shared_str")]
    pub owner: ArcStr,
    /// When.
    pub initiated_ms: u64,
    /// Expiry by TTL, extended by activity.
    pub ttl_expires_ms: u64,
    /// Abort date by the bucket's lifecycle rule. Never zero (the epoch itself is read as 1 ms
    /// after it), so that the option takes no word of its own (memory per upload is a
    /// benchmark figure); the wire format is an `Option<u64>`'s.
    #[serde(deserialize_with = "decode::abort_date")]
    pub abort_ms: Option<NonZeroU64>,
    /// Bumped by every transition on it.
    pub version: u64,
    /// What the object will carry.
    #[serde(deserialize_with = "decode::shared_meta")]
    pub meta: Arc<ObjectMeta>,
    /// Its parts, by ascending number.
    pub parts: PartTable,
}

impl Upload {
    /// When it expires: the TTL or the lifecycle rule, whichever comes first.
    pub fn expires_ms(&self) -> u64 {
        self.abort_ms.map_or(self.ttl_expires_ms, |abort| abort.get().min(self.ttl_expires_ms))
    }

    /// As the API shows it; `rules` are its bucket's lifecycle rules (the one that sets its
    /// abort date is named).
    pub fn info(&self, upload_id: UploadId, rules: &[AbortRule]) -> UploadInfo {
        let abort_rule_id = self
            .abort_ms
            .and_then(|_| AbortRule::first_for(rules, &self.key.0))
            .map(|rule| rule.id.clone());
        UploadInfo {
            upload_id,
            bucket: self.bucket.to_string(),
            key: self.key.0.to_string(),
            owner: self.owner.to_string(),
            initiated_ms: self.initiated_ms,
            expires_ms: self.expires_ms(),
            abort_ms: self.abort_ms.map(NonZeroU64::get),
            abort_rule_id,
            version: self.version,
            meta: ObjectMeta::clone(&self.meta),
        }
    }

    /// Its part with this number.
    pub fn part(&self, number: u32) -> Option<Part> {
        self.parts.find(u16::try_from(number).ok()?)
    }
}

/// An object.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Object {
    /// Length.
    pub size_bytes: u64,
    /// ETag.
    pub etag: Etag,
    /// When written.
    pub last_modified_ms: u64,
    /// Metadata.
    pub meta: Arc<ObjectMeta>,
    /// The additional checksum.
    pub checksum: Option<ObjectChecksum>,
    /// Its parts in order (one for a single PUT).
    pub parts: PartTable,
    /// The upload it was completed from.
    pub upload_id: Option<UploadId>,
}

impl Object {
    /// Its part with this number, and where that part starts in the object.
    pub fn part_with_offset(&self, number: u32) -> Option<(Part, u64)> {
        let index =
            (0..self.parts.len()).find(|&i| self.parts.number(i).map(u32::from) == Some(number))?;
        Some((self.parts.get(index)?, self.parts.sizes().take(index).sum()))
    }

    /// As the API shows it.
    pub fn info(&self, bucket: &str, key: &str) -> ObjectInfo {
        ObjectInfo {
            bucket: bucket.to_owned(),
            key: key.to_owned(),
            size_bytes: self.size_bytes,
            etag: self.etag,
            last_modified_ms: self.last_modified_ms,
            meta: ObjectMeta::clone(&self.meta),
            checksum: self.checksum.clone(),
            // A multipart object's ETag carries its part count; a copy keeps both.
            parts_count: self.etag.parts,
            upload_id: self.upload_id,
        }
    }
}

/// A bucket: its objects and the index of its uploads.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Bucket {
    /// Its name (shared with its uploads).
    pub name: ArcStr,
    /// When created.
    pub created_ms: u64,
    /// Its `AbortIncompleteMultipartUpload` rules, in the order they were given.
    pub lifecycle: Vec<AbortRule>,
    /// The length of a day for those rules.
    pub day_ms: u64,
    /// Objects by key.
    pub objects: BTreeMap<Key, Object>,
    /// Uploads in progress by key, each key's in id order (initiation order). Not part of a
    /// checkpoint: rebuilt from the uploads by `rebuild_indexes`.
    #[serde(skip)]
    pub uploads: BTreeMap<Key, KeyUploads>,
    /// Uploads in progress.
    pub upload_count: u64,
}

impl Bucket {
    /// As the API shows it.
    pub fn info(&self) -> BucketInfo {
        BucketInfo {
            name: self.name.to_string(),
            created_ms: self.created_ms,
            lifecycle: self.lifecycle.clone(),
        }
    }
}

/// Everything the engine knows, as of `applied_lsn`.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct State {
    /// Buckets by name.
    pub buckets: BTreeMap<ArcStr, Bucket>,
    /// Uploads in progress, stored densely (memory per upload is a benchmark figure). A
    /// checkpoint stores them apart, in key order (`uploads_in_order`).
    #[serde(skip)]
    pub uploads: DenseMap<UploadId, Upload>,
    /// Uploads by when they expire. Not part of a checkpoint: rebuilt from the uploads.
    #[serde(skip)]
    pub expiry: BTreeSet<(u64, UploadId)>,
    /// Parts of uploads in progress.
    pub part_count: u64,
    /// Objects.
    pub object_count: u64,
    /// The last record applied.
    pub applied_lsn: u64,
    /// Owner names and the default metadata, shared by the uploads that use them (memory per
    /// upload is a benchmark figure). Not part of a checkpoint: rebuilt by `intern_all`.
    #[serde(skip)]
    pub interned: Interned,
}

/// Values many uploads share.
#[derive(Clone, Debug, Default)]
pub struct Interned {
    owners: std::collections::HashSet<ArcStr>,
    default_meta: Arc<ObjectMeta>,
}

impl PartialEq for Interned {
    fn eq(&self, _: &Interned) -> bool {
        // A cache: two states are equal whatever they share.
        true
    }
}

impl Eq for Interned {}

impl Interned {
    /// The shared copy of `owner`.
    pub fn owner(&mut self, owner: &str) -> ArcStr {
        if let Some(shared) = self.owners.get(owner) {
            return ArcStr::clone(shared);
        }
        let shared: ArcStr = ArcStr::from(owner);
        self.owners.insert(ArcStr::clone(&shared));
        shared
    }

    /// `meta`, shared if it is the default.
    pub fn meta(&self, meta: &ObjectMeta) -> Arc<ObjectMeta> {
        if *meta == *self.default_meta {
            Arc::clone(&self.default_meta)
        } else {
            Arc::new(meta.clone())
        }
    }
}

impl State {
    /// An upload as the API shows it, with its bucket's lifecycle rule.
    pub fn upload_info(&self, upload_id: UploadId, upload: &Upload) -> UploadInfo {
        let rules = self.buckets.get(&upload.bucket).map_or(&[][..], |b| &b.lifecycle[..]);
        upload.info(upload_id, rules)
    }

    /// The uploads in (bucket, key, id) order, as a checkpoint stores them.
    pub fn uploads_in_order(&self) -> impl Iterator<Item = (&UploadId, &Upload)> {
        self.buckets
            .values()
            .flat_map(|b| b.uploads.values().flatten())
            .filter_map(|id| self.uploads.get_key_value(id))
    }

    /// The handle and size of every stored part of uploads and objects (each holds a
    /// reference on its payload).
    pub fn stored_parts(&self) -> impl Iterator<Item = (PayloadHandle, u64)> + '_ {
        let in_uploads = self.uploads.values().map(|u| &u.parts);
        let in_objects = self.buckets.values().flat_map(|b| b.objects.values()).map(|o| &o.parts);
        in_uploads.chain(in_objects).flat_map(PartTable::stored_sizes)
    }

    /// Completes a state just decoded from a checkpoint with its uploads (in the order
    /// `uploads_in_order` gave them): rebuilds the indexes a checkpoint does not hold (each
    /// bucket's upload index, sharing the uploads' keys, and the expiry index), and shares
    /// bucket names, owners and default metadata (decoding gives each its own copy).
    ///
    /// Fails (naming what is wrong) if the uploads are not in strictly increasing (bucket, key,
    /// id) order or name a bucket the state lacks: such a checkpoint was not written by
    /// `uploads_in_order`.
    pub fn restore(&mut self, uploads: Vec<(UploadId, Upload)>) -> Result<(), &'static str> {
        for pair in uploads.windows(2) {
            if let [(id_a, a), (id_b, b)] = pair
                && (&a.bucket, &a.key, id_a) >= (&b.bucket, &b.key, id_b)
            {
                return Err("the uploads are not in (bucket, key, id) order");
            }
        }
        if uploads.iter().any(|(_, u)| !self.buckets.contains_key(&u.bucket)) {
            return Err("an upload names a bucket the checkpoint lacks");
        }
        let mut by_expiry = Vec::with_capacity(uploads.len());
        // Runs of one bucket's uploads, each in key order: the index is built from sorted input.
        let mut index: Vec<(Key, KeyUploads)> = Vec::new();
        let mut bucket_of_run: Option<ArcStr> = None;
        let mut uploads = uploads;
        for (id, upload) in &mut uploads {
            if let Some(bucket) = self.buckets.get(&upload.bucket) {
                upload.bucket = ArcStr::clone(&bucket.name);
            }
            upload.owner = self.interned.owner(&upload.owner);
            if *upload.meta == *self.interned.default_meta {
                upload.meta = Arc::clone(&self.interned.default_meta);
            }
            if bucket_of_run.as_ref() != Some(&upload.bucket) {
                self.finish_index(bucket_of_run.take(), std::mem::take(&mut index));
                bucket_of_run = Some(ArcStr::clone(&upload.bucket));
            }
            match index.last_mut() {
                Some((key, ids)) if *key == upload.key => ids.push(*id),
                _ => index.push((upload.key.clone(), smallvec::smallvec![*id])),
            }
            by_expiry.push((upload.expires_ms(), *id));
        }
        self.finish_index(bucket_of_run, index);
        // The expiry index builds on a second thread (recovery time is a benchmark figure),
        // while the decoded vector becomes the uploads' storage: no upload moves or is
        // allocated again.
        let (uploads, expiry) = std::thread::scope(|scope| {
            let expiry = scope.spawn(move || expiry_index(by_expiry));
            let uploads = DenseMap::from_pairs(uploads);
            (uploads, expiry.join())
        });
        self.uploads = uploads;
        self.expiry = match expiry {
            Ok(expiry) => expiry,
            Err(panic) => std::panic::resume_unwind(panic),
        };
        self.intern_objects();
        Ok(())
    }

    fn finish_index(&mut self, bucket: Option<ArcStr>, index: Vec<(Key, KeyUploads)>) {
        let Some(bucket) = bucket.and_then(|name| self.buckets.get_mut(&name)) else { return };
        bucket.upload_count = index.iter().map(|(_, ids)| ids.len() as u64).sum();
        // Sorted input: `collect` checks the order in one pass and builds the tree in bulk.
        bucket.uploads = index.into_iter().collect();
    }

    /// Shares the default metadata between the objects.
    fn intern_objects(&mut self) {
        let State { buckets, interned, .. } = self;
        for object in buckets.values_mut().flat_map(|b| b.objects.values_mut()) {
            if *object.meta == *interned.default_meta {
                object.meta = Arc::clone(&interned.default_meta);
            }
        }
    }
}

/// The expiry index of these (expiry, id) pairs, built from sorted input.
fn expiry_index(mut by_expiry: Vec<(u64, UploadId)>) -> BTreeSet<(u64, UploadId)> {
    // An id orders as its bytes do, which is the order of its three big-endian words: compared
    // as integers, not with a call to memcmp each.
    by_expiry.sort_unstable_by_key(|(expires_ms, id)| {
        let word = |at: usize| {
            let mut bytes = [0u8; 8];
            if let Some(part) = id.0.get(at..at + 8) {
                bytes.copy_from_slice(part);
            }
            u64::from_be_bytes(bytes)
        };
        (*expires_ms, word(0), word(8), word(16))
    });
    by_expiry.into_iter().collect()
}

/// Payload-store segment and offset of a stored payload, as records name them.
pub type StoredAt = (SegmentId, u64);

#[cfg(test)]
mod tests {
    use serde::{Deserialize, Serialize};

    /// An abort date as a checkpoint carries it (`Upload::abort_ms`).
    #[derive(Debug, Deserialize)]
    struct Read(
        #[serde(deserialize_with = "super::decode::abort_date")] Option<std::num::NonZeroU64>,
    );

    #[derive(Serialize)]
    struct Written(Option<u64>);

    /// The wire format is an `Option<u64>`'s: every date reads back as written, except the
    /// epoch itself, which an older build could write and which reads as 1 ms after it.
    #[test]
    fn abort_dates_read_as_written_and_the_epoch_as_one_millisecond() {
        for (written, read) in
            [(None, None), (Some(0), Some(1)), (Some(1), Some(1)), (Some(u64::MAX), Some(u64::MAX))]
        {
            let bytes = postcard::to_allocvec(&Written(written)).unwrap();
            let Read(date) = postcard::from_bytes(&bytes).unwrap();
            assert_eq!(date.map(std::num::NonZeroU64::get), read, "{written:?}");
        }
    }
}
