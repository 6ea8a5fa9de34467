//! Retention drops whole files, oldest first, never the newest: by age (of a file's newest
//! entry) and by total bytes; what it keeps still answers queries, across a reopen, and
//! writers go on while it runs.

#![allow(
    missing_docs,
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::indexing_slicing,
    clippy::panic,
    clippy::cast_possible_truncation
)]

use std::sync::Arc;

use tessera_journal::{Entry, Journal, JournalOptions, Operation, Query, Retention};
use tessera_wal::SimFs;

const DIR: &str = "/journal";

fn entry(lsn: u64, time_ms: u64) -> Entry {
    Entry {
        lsn,
        time_ms,
        actor: "alice".into(),
        op: Operation::PutPart,
        bucket: Some("bkt".into()),
        key: Some(format!("key/{lsn:05}")),
        upload_id: Some([(lsn % 7) as u8; 24]),
        part_number: Some(1),
        size_bytes: Some(lsn),
        etag: None,
        error: None,
    }
}

fn open(fs: &SimFs, retention: Retention) -> Journal {
    let options = JournalOptions { file_bytes: 2 << 10, retention };
    Journal::open(fs.shared(), DIR, options).unwrap().0
}

/// Stages and flushes `count` entries from `first`, one second apart from `first_ms`, a flush
/// every 10; returns them.
fn fill(journal: &Journal, first: u64, count: u64, first_ms: u64) -> Vec<Entry> {
    let entries: Vec<Entry> =
        (first..first + count).map(|lsn| entry(lsn, first_ms + (lsn - first) * 1000)).collect();
    for chunk in entries.chunks(10) {
        for e in chunk {
            journal.stage(e.clone()).unwrap();
        }
        journal.flush_through(chunk.last().unwrap().lsn).unwrap();
    }
    entries
}

fn file_names(fs: &SimFs) -> Vec<String> {
    let mut names = fs.shared().list(DIR.as_ref()).unwrap();
    names.sort();
    names
}

fn all(journal: &Journal) -> Vec<Entry> {
    journal.query(&Query::default()).entries
}

#[test]
fn retention_by_bytes_drops_the_oldest_files_only() {
    let fs = SimFs::new(1);
    let unlimited = open(&fs, Retention::default());
    let written = fill(&unlimited, 1, 300, 1_000_000);
    let names_before = file_names(&fs);
    assert!(names_before.len() >= 6, "{names_before:?}");
    let total = unlimited.stats().bytes;
    drop(unlimited);

    let max_bytes = total / 2;
    let journal = open(&fs, Retention { max_bytes: Some(max_bytes), ..Retention::default() });
    let report = journal.apply_retention(0).unwrap();
    assert!(report.files > 0);
    let names_after = file_names(&fs);
    // Exactly the oldest files went: what is left is a suffix of the list.
    assert_eq!(names_after[..], names_before[names_before.len() - names_after.len()..]);
    assert_eq!(names_before.len() - names_after.len(), report.files as usize);
    assert!(journal.stats().bytes <= max_bytes, "{:?}", journal.stats());
    // What is left is the newest history, whole and in order.
    let left = all(&journal);
    assert_eq!(left[..], written[written.len() - left.len()..]);
    assert_eq!(left.last().unwrap().lsn, 300);
    // And again after a reopen.
    drop(journal);
    let journal = open(&fs, Retention::default());
    assert_eq!(all(&journal), left);
    assert!(journal.query(&Query::default()).warnings.is_empty(), "a dropped prefix is no damage");
}

#[test]
fn retention_by_age_drops_old_files_and_never_the_newest() {
    let fs = SimFs::new(2);
    let hour_ms = 3_600_000;
    let journal = open(&fs, Retention { max_age_ms: Some(hour_ms), ..Retention::default() });
    // Old history, then recent history.
    let old = fill(&journal, 1, 100, 0);
    let recent = fill(&journal, 101, 100, 10 * hour_ms);
    let now_ms = 10 * hour_ms + 200_000;
    let report = journal.apply_retention(now_ms).unwrap();
    assert!(report.files > 0);
    let left = all(&journal);
    // Every recent entry is kept; of the old ones at most those sharing a file with a recent.
    assert!(left.ends_with(&recent));
    assert!(left.len() - recent.len() < old.len());
    let kept_old = left.len() - recent.len();
    assert_eq!(left[..kept_old], old[old.len() - kept_old..], "only the oldest went");
    // Long after everything: every file but the newest goes.
    let report = journal.apply_retention(1000 * hour_ms).unwrap();
    assert!(report.files > 0);
    assert_eq!(journal.stats().files, 1, "the newest file stays");
    let left = all(&journal);
    assert!(left.ends_with(&recent[recent.len() - left.len()..]) && !left.is_empty());
    // Writing goes on after retention.
    journal.stage(entry(500, 1000 * hour_ms)).unwrap();
    journal.flush_through(500).unwrap();
    assert_eq!(all(&journal).last().unwrap().lsn, 500);
}

#[test]
fn retention_runs_while_entries_are_staged_and_queried() {
    let fs = SimFs::new(3);
    let journal =
        Arc::new(open(&fs, Retention { max_bytes: Some(6 << 10), ..Retention::default() }));
    fill(&journal, 1, 200, 0);
    std::thread::scope(|scope| {
        let writer = scope.spawn(|| {
            for lsn in 201..=600u64 {
                journal.stage(entry(lsn, lsn * 1000)).unwrap();
                if lsn % 25 == 0 {
                    journal.flush_through(lsn).unwrap();
                }
            }
        });
        let cleaner = scope.spawn(|| {
            for _ in 0..50 {
                journal.apply_retention(0).unwrap();
                let seen = all(&journal);
                // Whatever a query sees is one run of consecutive entries: no hole, no repeat.
                for pair in seen.windows(2) {
                    assert_eq!(pair[0].lsn + 1, pair[1].lsn);
                }
            }
        });
        writer.join().unwrap();
        cleaner.join().unwrap();
    });
    journal.apply_retention(0).unwrap();
    assert!(journal.stats().bytes <= 6 << 10);
    assert_eq!(all(&journal).last().unwrap().lsn, 600);
}
