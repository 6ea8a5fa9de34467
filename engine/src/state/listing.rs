//! Listings: uploads of a bucket, parts of an upload, objects of a bucket. Each costs
//! O(log n + page): a seek to the first entry, then a walk that skips each common prefix with one
//! more seek instead of walking the keys under it.

use std::collections::BTreeMap;
use std::collections::btree_map;
use std::ops::Bound;

use arcstr::ArcStr;

use crate::error::EngineError;
use crate::model::{ChecksumSpec, Etag, PartInfo, UploadId, UploadInfo};
use crate::state::{Key, State};

/// Most entries one page holds (S3's cap for every listing).
pub const PAGE_ENTRIES_MAX: u32 = 1000;

/// Arguments of a ListMultipartUploads.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct ListUploads {
    /// Only keys starting with this.
    pub prefix: String,
    /// Group keys by what follows the prefix up to this string.
    pub delimiter: Option<String>,
    /// Start after this key...
    pub key_marker: Option<String>,
    /// ... or, for that key, after this upload (ignored without `key_marker`).
    pub upload_id_marker: Option<String>,
    /// Entries (uploads and common prefixes) per page: 1..=1000; `None` is 1000.
    pub max_uploads: Option<u32>,
}

/// An upload as a listing shows it. Key and owner are shared with the state: a page of 1000
/// allocates nothing per entry.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct UploadSummary {
    /// Its id.
    pub upload_id: UploadId,
    /// Its key.
    pub key: ArcStr,
    /// Who created it.
    pub owner: ArcStr,
    /// When.
    pub initiated_ms: u64,
    /// Its checksum spec.
    pub checksum: Option<ChecksumSpec>,
}

/// A page of uploads.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct UploadsPage {
    /// Uploads, by key then initiation time.
    pub uploads: Vec<UploadSummary>,
    /// Common prefixes (with a delimiter), in key order.
    pub common_prefixes: Vec<String>,
    /// Whether more follow.
    pub is_truncated: bool,
    /// Where the next page starts (when truncated).
    pub next_key_marker: Option<String>,
    /// Where the next page starts, within `next_key_marker`'s uploads.
    pub next_upload_id_marker: Option<String>,
}

/// Arguments of a ListParts.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct ListParts {
    /// Only parts numbered above this.
    pub part_number_marker: u32,
    /// Parts per page: capped at 1000; `None` is 1000.
    pub max_parts: Option<u32>,
}

/// A page of parts.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct PartsPage {
    /// The upload.
    pub upload: UploadInfo,
    /// Its parts, ascending.
    pub parts: Vec<PartInfo>,
    /// Whether more follow.
    pub is_truncated: bool,
    /// The marker of the next page (the last part number listed), when truncated.
    pub next_part_number_marker: Option<u32>,
}

/// Arguments of a ListObjectsV2.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct ListObjects {
    /// Only keys starting with this.
    pub prefix: String,
    /// Group keys by what follows the prefix up to this string.
    pub delimiter: Option<String>,
    /// Start after this key (or common prefix): `start-after`, or a continuation token.
    pub start_after: Option<String>,
    /// Entries (objects and common prefixes) per page: capped at 1000; `None` is 1000.
    pub max_keys: Option<u32>,
}

/// An object as a listing shows it (its key shared with the state).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ObjectSummary {
    /// Its key.
    pub key: ArcStr,
    /// Its length.
    pub size_bytes: u64,
    /// Its ETag.
    pub etag: Etag,
    /// When written.
    pub last_modified_ms: u64,
    /// Its checksum spec.
    pub checksum: Option<ChecksumSpec>,
}

/// A page of objects.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct ObjectsPage {
    /// Objects, by key.
    pub objects: Vec<ObjectSummary>,
    /// Common prefixes (with a delimiter).
    pub common_prefixes: Vec<String>,
    /// Whether more follow.
    pub is_truncated: bool,
    /// Where the next page starts (`start_after` of the next call), when truncated.
    pub next_start_after: Option<String>,
}

/// The smallest byte string above every string that starts with `prefix`; `None` if there is
/// none (the prefix is all 0xFF, which UTF-8 never holds).
fn successor(prefix: &[u8]) -> Option<Vec<u8>> {
    let mut bytes = prefix.to_vec();
    while let Some(last) = bytes.pop() {
        if last < u8::MAX {
            bytes.push(last + 1);
            return Some(bytes);
        }
    }
    None
}

enum Item<'a, V> {
    Prefix(String),
    Entry(&'a Key, &'a V),
}

/// Walks a key-ordered map from a start bound, in key order, folding keys that share a
/// prefix up to the delimiter into one common prefix.
struct Walk<'a, V> {
    map: &'a BTreeMap<Key, V>,
    prefix: &'a str,
    delimiter: Option<&'a str>,
    /// Common prefixes at or before this were listed on an earlier page.
    marker: Option<&'a str>,
    range: Option<btree_map::Range<'a, Key, V>>,
}

impl<'a, V> Walk<'a, V> {
    fn new(
        map: &'a BTreeMap<Key, V>,
        prefix: &'a str,
        delimiter: Option<&'a str>,
        marker: Option<&'a str>,
        start: Bound<&[u8]>,
    ) -> Walk<'a, V> {
        let prefix_bound = Bound::Included(prefix.as_bytes());
        let start = match (start, prefix_bound) {
            (Bound::Unbounded, p) => p,
            (Bound::Included(s) | Bound::Excluded(s), Bound::Included(p)) if s < p => {
                Bound::Included(p)
            }
            (s, _) => s,
        };
        let range = Some(map.range::<[u8], _>((start, Bound::Unbounded)));
        let delimiter = delimiter.filter(|d| !d.is_empty());
        Walk { map, prefix, delimiter, marker, range }
    }
}

impl<'a, V> Iterator for Walk<'a, V> {
    type Item = Item<'a, V>;

    fn next(&mut self) -> Option<Self::Item> {
        loop {
            let (key, value) = self.range.as_mut()?.next()?;
            let Some(rest) = key.0.strip_prefix(self.prefix) else {
                // Keys are in order and the walk started at or after the prefix: past it now.
                self.range = None;
                return None;
            };
            let Some(delimiter) = self.delimiter else { return Some(Item::Entry(key, value)) };
            let Some(at) = rest.find(delimiter) else { return Some(Item::Entry(key, value)) };
            let common_end = self.prefix.len() + at + delimiter.len();
            let common = key.0.get(..common_end).unwrap_or(&key.0);
            self.range = successor(common.as_bytes()).map(|next| {
                self.map.range::<[u8], _>((Bound::Included(next.as_slice()), Bound::Unbounded))
            });
            if self.marker.is_some_and(|m| common <= m) {
                continue;
            }
            return Some(Item::Prefix(common.to_owned()));
        }
    }
}

fn page_size(asked: Option<u32>, what: &str) -> Result<usize, EngineError> {
    match asked {
        None => Ok(PAGE_ENTRIES_MAX as usize),
        Some(0) if what == "max-uploads" => {
            Err(EngineError::invalid_argument("max-uploads must be between 1 and 1000"))
        }
        Some(n) => Ok(n.min(PAGE_ENTRIES_MAX) as usize),
    }
}

impl State {
    /// One page of a bucket's uploads in progress.
    pub fn list_uploads(
        &self,
        bucket: &str,
        args: &ListUploads,
    ) -> Result<UploadsPage, EngineError> {
        let found = self.buckets.get(bucket).ok_or_else(|| EngineError::no_such_bucket(bucket))?;
        let max = page_size(args.max_uploads, "max-uploads")?;
        let key_marker = args.key_marker.as_deref().filter(|m| !m.is_empty());
        // With an upload-id marker, the marker's key is listed from that upload on; without
        // one, listing starts after the key.
        let id_marker = key_marker.and(args.upload_id_marker.as_deref()).filter(|m| !m.is_empty());
        let start = match (key_marker, id_marker) {
            (Some(k), Some(_)) => Bound::Included(k.as_bytes()),
            (Some(k), None) => Bound::Excluded(k.as_bytes()),
            (None, _) => Bound::Unbounded,
        };
        let walk =
            Walk::new(&found.uploads, &args.prefix, args.delimiter.as_deref(), key_marker, start);
        let mut page = UploadsPage { uploads: Vec::with_capacity(max), ..UploadsPage::default() };
        // Whether the last entry listed was a common prefix (else an upload): the next page's
        // markers, if this one is truncated.
        let mut last_was_prefix = false;
        let mut count = 0usize;
        'walk: for item in walk {
            match item {
                Item::Prefix(common) => {
                    if count == max {
                        page.is_truncated = true;
                        break 'walk;
                    }
                    last_was_prefix = true;
                    page.common_prefixes.push(common);
                    count += 1;
                }
                Item::Entry(key, ids) => {
                    // The marker's key lists from the first id above the marker: ids sort as
                    // their hex does, and in initiation order, so this holds even if the
                    // marker's upload ended since.
                    let skip = match (key_marker, id_marker) {
                        (Some(k), Some(marker)) if k == &*key.0 => match marker.parse::<UploadId>()
                        {
                            Ok(marker) => ids.partition_point(|id| *id <= marker),
                            // Not an id this engine gave out: compare as text.
                            Err(_) => ids.partition_point(|id| id.to_string().as_str() <= marker),
                        },
                        _ => 0,
                    };
                    for id in ids.iter().skip(skip) {
                        let Some(upload) = self.uploads.get(id) else { continue };
                        if count == max {
                            page.is_truncated = true;
                            break 'walk;
                        }
                        page.uploads.push(UploadSummary {
                            upload_id: *id,
                            key: ArcStr::clone(&key.0),
                            owner: ArcStr::clone(&upload.owner),
                            initiated_ms: upload.initiated_ms,
                            checksum: upload.meta.checksum,
                        });
                        last_was_prefix = false;
                        count += 1;
                    }
                }
            }
        }
        if page.is_truncated {
            if last_was_prefix {
                page.next_key_marker = page.common_prefixes.last().cloned();
            } else if let Some(upload) = page.uploads.last() {
                page.next_key_marker = Some(upload.key.to_string());
                page.next_upload_id_marker = Some(upload.upload_id.to_string());
            }
        }
        Ok(page)
    }

    /// One page of an upload's parts.
    pub fn list_parts(
        &self,
        upload_id: UploadId,
        args: &ListParts,
    ) -> Result<PartsPage, EngineError> {
        let upload =
            self.uploads.get(&upload_id).ok_or_else(|| EngineError::no_such_upload(upload_id))?;
        let max = page_size(args.max_parts, "max-parts")?;
        if max == 0 {
            // Nothing asked for: an empty page, not a truncated one a client would follow
            // forever.
            return Ok(PartsPage {
                upload: self.upload_info(upload_id, upload),
                parts: Vec::new(),
                is_truncated: false,
                next_part_number_marker: None,
            });
        }
        let start = upload.parts.partition_point(|n| u32::from(n) <= args.part_number_marker);
        let rest = upload.parts.len().saturating_sub(start);
        // Only the page's parts are unpacked: O(log n + page).
        let parts: Vec<PartInfo> =
            (start..).map_while(|i| upload.parts.get(i)).take(max).map(|p| p.info()).collect();
        let is_truncated = rest > parts.len();
        let next_part_number_marker =
            if is_truncated { parts.last().map(|p| p.part_number) } else { None };
        Ok(PartsPage {
            upload: self.upload_info(upload_id, upload),
            parts,
            is_truncated,
            next_part_number_marker,
        })
    }

    /// One page of a bucket's objects.
    pub fn list_objects(
        &self,
        bucket: &str,
        args: &ListObjects,
    ) -> Result<ObjectsPage, EngineError> {
        let found = self.buckets.get(bucket).ok_or_else(|| EngineError::no_such_bucket(bucket))?;
        let max = page_size(args.max_keys, "max-keys")?;
        if max == 0 {
            // As for ListParts: an empty page, not truncated.
            return Ok(ObjectsPage::default());
        }
        let marker = args.start_after.as_deref().filter(|m| !m.is_empty());
        let start = marker.map_or(Bound::Unbounded, |m| Bound::Excluded(m.as_bytes()));
        let walk =
            Walk::new(&found.objects, &args.prefix, args.delimiter.as_deref(), marker, start);
        let mut page = ObjectsPage::default();
        let mut last_was_prefix = false;
        for item in walk {
            if page.objects.len() + page.common_prefixes.len() == max {
                page.is_truncated = true;
                break;
            }
            match item {
                Item::Prefix(common) => {
                    last_was_prefix = true;
                    page.common_prefixes.push(common);
                }
                Item::Entry(key, object) => {
                    last_was_prefix = false;
                    page.objects.push(ObjectSummary {
                        key: ArcStr::clone(&key.0),
                        size_bytes: object.size_bytes,
                        etag: object.etag,
                        last_modified_ms: object.last_modified_ms,
                        checksum: object.meta.checksum,
                    });
                }
            }
        }
        if page.is_truncated {
            page.next_start_after = if last_was_prefix {
                page.common_prefixes.last().cloned()
            } else {
                page.objects.last().map(|o| o.key.to_string())
            };
        }
        Ok(page)
    }
}

#[cfg(test)]
mod tests {
    use super::successor;

    #[test]
    fn successor_is_the_first_string_above_a_prefix() {
        assert_eq!(successor(b"a/"), Some(b"a0".to_vec()));
        assert_eq!(successor(&[b'a', 0xFF]), Some(b"b".to_vec()));
        assert_eq!(successor(&[0xFF, 0xFF]), None);
        assert_eq!(successor(b""), None);
    }
}
