//! Tessera's journal: the retained, queryable history of every committed transition.
//!
//! The engine derives each entry from a WAL record once it is durable and applied (so an entry
//! carries the transition's outcome and the bucket and key it concerned), and stages it here.
//! Before a checkpoint lets the log retire the segments that held those records, the engine
//! makes the history durable with [`Journal::flush_through`]: so every committed transition is
//! either in a journal file or still in the log, where recovery re-derives it. The journal is
//! never a second, separately failing log: nothing is in it that the log did not commit.
//!
//! On disk (docs/format.md §12): files of CRC-checked blocks, each block covering a range of
//! LSNs and carrying a summary (time range, a Bloom filter of upload ids and buckets, the key
//! range) that lets a query skip it unread. Queries go by upload id, bucket and key prefix,
//! time range, oldest or newest first, with a limit; [`Journal::export`] writes JSON lines.
//! Retention drops whole files, oldest first. Damage is reported with the file and offset and
//! skipped by queries; it never stops the engine.

#![cfg_attr(test, allow(clippy::cast_possible_truncation))]

mod bloom;
mod entry;
mod error;
mod file;
mod format;
mod journal;
mod query;

pub use crate::entry::{Entry, JournalEtag, Operation, UPLOAD_ID_BYTES};
pub use crate::error::{Corruption, Damage, JournalError};
pub use crate::file::TORN_SUFFIX;
pub use crate::format::{BLOCK_ENTRIES_BYTES_TARGET, ENTRY_BYTES_MAX, JOURNAL_FORMAT_VERSION};
pub use crate::journal::{
    CUT_SUFFIX, DAMAGED_SUFFIX, FlushReport, JOURNAL_FILE_BYTES_DEFAULT, Journal,
    JournalOpenReport, JournalOptions, JournalStats, Retention, RetentionReport,
};
pub use crate::query::{ExportReport, Query, QueryResult};
