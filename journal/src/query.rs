//! Queries: which entries match, and which blocks cannot hold any that do.

use crate::bloom::{self, Domain, Probes};
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

    /// The query with its filter probes hashed once, for testing many blocks.
    pub(crate) fn prepare(&self) -> Prepared<'_> {
        let bucket = self.bucket.as_deref();
        let prefix = bucket.zip(self.key_prefix.as_deref().and_then(bloom::indexed_prefix));
        Prepared {
            query: self,
            upload: self.upload_id.map(|id| Probes::new(Domain::UploadId, &id)),
            bucket: bucket.map(|b| Probes::new(Domain::Bucket, b.as_bytes())),
            prefix: prefix.map(|(b, p)| Probes::new(Domain::Prefix, &composite_key(b, p))),
            low: bucket.map(|b| composite_key(b, self.key_prefix.as_deref().unwrap_or(""))),
        }
    }

    /// Whether the scan may stop, having found `found` entries.
    pub(crate) fn is_full(&self, found: usize) -> bool {
        self.limit.is_some_and(|limit| found >= limit)
    }
}

/// A query ready to test block summaries.
#[derive(Debug)]
pub(crate) struct Prepared<'a> {
    pub query: &'a Query,
    upload: Option<Probes>,
    bucket: Option<Probes>,
    /// The longest `/`-ending prefix of the key prefix, with the bucket.
    prefix: Option<Probes>,
    /// `bucket 0x00 key_prefix`: every matching entry's composite key starts with it.
    low: Option<Vec<u8>>,
}

impl Prepared<'_> {
    /// Whether a block with this header may hold a matching entry (`false`: skip it unread).
    pub fn may_match(&self, header: &BlockHeader) -> bool {
        if header.entry_count == 0 {
            return false;
        }
        let (query, summary) = (self.query, &header.summary);
        if query.time_from_ms.is_some_and(|from| header.time_max_ms < from)
            || query.time_until_ms.is_some_and(|until| header.time_min_ms >= until)
        {
            return false;
        }
        let filtered_out =
            |probes: &Option<Probes>| probes.is_some_and(|p| !p.may_be_in(&summary.bloom));
        if filtered_out(&self.upload) || filtered_out(&self.bucket) || filtered_out(&self.prefix) {
            return false;
        }
        if let Some(low) = &self.low {
            // Every matching `bucket 0x00 key` lies in [low, low's successor): the block's
            // range must reach into it.
            if summary.key_max.is_empty()
                || summary.key_max < *low
                || (summary.key_min > *low && !summary.key_min.starts_with(low))
            {
                return false;
            }
        }
        true
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
