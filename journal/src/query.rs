//! Queries: which entries match, and which blocks cannot hold any that do.

use crate::bloom::{self, Domain};
use crate::entry::{Entry, UPLOAD_ID_BYTES};
use crate::error::Corruption;
use crate::format::{BlockHeader, composite_key};

/// Which entries a query wants. Every condition given must hold; none given matches all.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Query {
    /// Entries of this upload.
    pub upload_id: Option<[u8; UPLOAD_ID_BYTES]>,
    /// Entries naming this bucket.
    pub bucket: Option<String>,
    /// Entries whose key starts with this (with `bucket`, or in any bucket).
    pub key_prefix: Option<String>,
    /// Entries at or after this time (ms since the epoch).
    pub time_from_ms: Option<u64>,
    /// Entries before this time.
    pub time_until_ms: Option<u64>,
    /// Newest first (descending LSN) instead of oldest first.
    pub newest_first: bool,
    /// At most this many entries (`None`: all).
    pub limit: Option<usize>,
}

impl Query {
    /// Whether `entry` matches.
    pub fn matches(&self, entry: &Entry) -> bool {
        self.upload_id.is_none_or(|id| entry.upload_id == Some(id))
            && self.bucket.as_ref().is_none_or(|b| entry.bucket.as_ref() == Some(b))
            && self.key_prefix.as_ref().is_none_or(|prefix| {
                entry.key.as_ref().is_some_and(|key| key.starts_with(prefix.as_str()))
            })
            && self.time_from_ms.is_none_or(|from| entry.time_ms >= from)
            && self.time_until_ms.is_none_or(|until| entry.time_ms < until)
    }

    /// Whether a block with this header may hold a matching entry (`false`: skip it unread).
    pub(crate) fn may_match(&self, header: &BlockHeader) -> bool {
        if header.entry_count == 0 {
            return false;
        }
        let summary = &header.summary;
        if self.time_from_ms.is_some_and(|from| header.time_max_ms < from)
            || self.time_until_ms.is_some_and(|until| header.time_min_ms >= until)
        {
            return false;
        }
        if let Some(id) = &self.upload_id
            && !bloom::may_contain(&summary.bloom, Domain::UploadId, id)
        {
            return false;
        }
        if let Some(bucket) = &self.bucket {
            if !bloom::may_contain(&summary.bloom, Domain::Bucket, bucket.as_bytes()) {
                return false;
            }
            // Every `bucket 0x00 key` with the prefix lies in [low, low's successor): the
            // block's range must reach into it.
            let low = composite_key(bucket, self.key_prefix.as_deref().unwrap_or(""));
            if summary.key_max.is_empty()
                || summary.key_max < low
                || (summary.key_min > low && !summary.key_min.starts_with(&low))
            {
                return false;
            }
        }
        true
    }

    /// Whether the scan may stop, having found `found` entries.
    pub(crate) fn is_full(&self, found: usize) -> bool {
        self.limit.is_some_and(|limit| found >= limit)
    }
}

/// What a query found.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct QueryResult {
    /// The matching entries, in the order asked for, at most `limit`.
    pub entries: Vec<Entry>,
    /// Damage met on the way: the entries behind it were skipped.
    pub warnings: Vec<Corruption>,
    /// Blocks read (the rest were skipped by their summaries).
    pub blocks_read: u64,
}

/// What an export wrote.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct ExportReport {
    /// Lines (entries) written.
    pub entries: u64,
    /// Damage met on the way: the entries behind it were skipped.
    pub warnings: Vec<Corruption>,
}
