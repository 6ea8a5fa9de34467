//! `write_through` moves staged entries into the file without syncing: a crash may lose them
//! (the engine re-derives them from its log), never what `flush_through` made durable, and a
//! file is synced before the next one starts, so an older file is never torn.

#![allow(
    missing_docs,
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::indexing_slicing,
    clippy::panic,
    clippy::cast_possible_truncation
)]

use tessera_journal::{Entry, Journal, JournalOptions, Operation, Query};
use tessera_wal::{CrashMode, SimFs};

fn entry(lsn: u64) -> Entry {
    Entry {
        lsn,
        time_ms: lsn,
        actor: "alice".into(),
        op: Operation::CreateUpload,
        bucket: Some("bkt".into()),
        key: Some(format!("k/{lsn}")),
        upload_id: Some([lsn as u8; 24]),
        part_number: None,
        size_bytes: None,
        etag: None,
        error: None,
    }
}

fn open(fs: &SimFs, file_bytes: u64) -> (Journal, tessera_journal::JournalOpenReport) {
    Journal::open(fs.shared(), "/j", JournalOptions { file_bytes, ..JournalOptions::default() })
        .unwrap()
}

fn lsns(journal: &Journal) -> Vec<u64> {
    journal.query(&Query::default()).entries.iter().map(|e| e.lsn).collect()
}

#[test]
fn a_crash_loses_written_entries_never_flushed_ones() {
    for mode in [CrashMode::DropUnsynced, CrashMode::KeepRandom { seed: 5 }] {
        let fs = SimFs::new(1);
        let (journal, _) = open(&fs, 1 << 20);
        for lsn in 1..=10 {
            journal.stage(entry(lsn)).unwrap();
        }
        journal.flush_through(10).unwrap();
        for lsn in 11..=20 {
            journal.stage(entry(lsn)).unwrap();
        }
        journal.write_through(20).unwrap();
        assert_eq!(journal.stats().staged_entries, 0, "out of memory");
        assert_eq!(lsns(&journal), (1..=20).collect::<Vec<_>>(), "and readable");
        drop(journal);
        fs.crash(mode);
        let (journal, report) = open(&fs, 1 << 20);
        assert!(report.corruptions.is_empty(), "{mode:?}: {report:?}");
        let covered = journal.covered_lsn();
        assert!((10..=20).contains(&covered), "{mode:?}: {covered}");
        assert_eq!(lsns(&journal), (1..=covered).collect::<Vec<_>>(), "{mode:?}");
        if mode == CrashMode::DropUnsynced {
            assert_eq!(covered, 10);
        }
    }
}

#[test]
fn flush_through_syncs_what_write_through_left_even_with_nothing_new() {
    let fs = SimFs::new(2);
    let (journal, _) = open(&fs, 1 << 20);
    for lsn in 1..=10 {
        journal.stage(entry(lsn)).unwrap();
    }
    journal.write_through(10).unwrap();
    // Nothing new to write through 8: the blocks up to 10 must become durable all the same.
    journal.flush_through(8).unwrap();
    drop(journal);
    fs.crash(CrashMode::DropUnsynced);
    let (journal, _) = open(&fs, 1 << 20);
    assert_eq!(journal.covered_lsn(), 10);
}

#[test]
fn a_file_is_synced_before_the_next_one_starts() {
    let fs = SimFs::new(3);
    // Small files: every write starts a new one.
    let (journal, _) = open(&fs, 64);
    for lsn in 1..=30 {
        journal.stage(entry(lsn)).unwrap();
        journal.write_through(lsn).unwrap();
    }
    assert!(journal.stats().files >= 10);
    drop(journal);
    fs.crash(CrashMode::DropUnsynced);
    let (journal, report) = open(&fs, 64);
    // Only the newest file's last write may be gone; every older file is whole.
    assert!(report.corruptions.is_empty(), "{report:?}");
    assert!(journal.covered_lsn() >= 29, "{}", journal.covered_lsn());
    assert_eq!(lsns(&journal), (1..=journal.covered_lsn()).collect::<Vec<_>>());
}

/// LSNs 1..=8 written through, then a flush through 12 whose fdatasync fails with EIO, on
/// files of 2,048 bytes.
fn write_through_then_fail_a_flush(seed: u64) -> (SimFs, Journal) {
    let fs = SimFs::new(seed);
    let (journal, _) = open(&fs, 2048);
    for lsn in 1..=8 {
        journal.stage(entry(lsn)).unwrap();
    }
    journal.write_through(8).unwrap();
    for lsn in 9..=12 {
        journal.stage(entry(lsn)).unwrap();
    }
    fs.eio_at_sync(fs.sync_calls());
    assert!(journal.flush_through(12).is_err(), "seed {seed}");
    fs.eio_at_sync(u64::MAX);
    (fs, journal)
}

/// A failed fdatasync may drop pages written before it (`write_through`'s blocks): the journal
/// once undid the failed flush, carried on, synced again when the file filled and sealed it,
/// and after a crash a query met a block whose entries failed their CRC in that sealed file.
/// Now the failure poisons the journal until a reopen, which finds the newest file whole up to
/// its first damaged block: every query after it is clean.
#[test]
fn a_failed_fdatasync_poisons_and_nothing_damaged_is_sealed() {
    for seed in 0..32 {
        let (fs, journal) = write_through_then_fail_a_flush(seed);
        assert!(journal.poisoned().is_some(), "seed {seed}");
        // Enough to fill the file, then one more flush: the old code sealed the file there.
        for lsn in 13..=60 {
            journal.stage(entry(lsn)).unwrap();
        }
        assert!(journal.flush_through(60).is_err(), "seed {seed}: a poisoned journal flushed");
        journal.stage(entry(61)).unwrap();
        assert!(journal.flush_through(61).is_err(), "seed {seed}: a poisoned journal flushed");
        drop(journal);
        fs.crash(CrashMode::DropUnsynced);
        let (journal, report) = open(&fs, 2048);
        assert!(report.corruptions.is_empty(), "seed {seed}: {report:?}");
        let result = journal.query(&Query::default());
        assert!(result.warnings.is_empty(), "seed {seed}: {:?}", result.warnings);
        let covered = journal.covered_lsn();
        let found: Vec<u64> = result.entries.iter().map(|e| e.lsn).collect();
        assert_eq!(found, (1..=covered).collect::<Vec<_>>(), "seed {seed}");
    }
}

/// The same failure, then a reopen without a reboot. The page cache still shows the blocks the
/// failed fdatasync may have dropped from the disk, so a reopen would take them for durable,
/// and a later fdatasync would seal the file over the hole. The journal cuts them off the file
/// when the fdatasync fails (their entries staged again, still queryable): the reopen finds
/// only what was synced, and the history written after it survives a crash whole.
#[test]
fn after_a_failed_fdatasync_a_reopen_without_a_crash_finds_only_what_was_synced() {
    for seed in 0..32 {
        let (fs, journal) = write_through_then_fail_a_flush(seed);
        assert_eq!(journal.covered_lsn(), 0, "seed {seed}: nothing was synced");
        assert_eq!(lsns(&journal), (1..=12).collect::<Vec<_>>(), "seed {seed}: still queryable");
        drop(journal);
        let (journal, report) = open(&fs, 2048);
        assert!(report.corruptions.is_empty(), "seed {seed}: {report:?}");
        assert_eq!(report.covered_lsn, 0, "seed {seed}: {report:?}");
        // The engine stages again, from its log, what the journal lacks; enough to seal a file.
        for lsn in 1..=61 {
            journal.stage(entry(lsn)).unwrap();
        }
        journal.flush_through(60).unwrap();
        journal.flush_through(61).unwrap();
        drop(journal);
        fs.crash(CrashMode::DropUnsynced);
        let (journal, report) = open(&fs, 2048);
        assert!(report.corruptions.is_empty(), "seed {seed}: {report:?}");
        let result = journal.query(&Query::default());
        assert!(result.warnings.is_empty(), "seed {seed}: {:?}", result.warnings);
        assert_eq!(journal.covered_lsn(), 61, "seed {seed}");
        let found: Vec<u64> = result.entries.iter().map(|e| e.lsn).collect();
        assert_eq!(found, (1..=61).collect::<Vec<_>>(), "seed {seed}");
    }
}

/// A file started by `mark_gap` is where the next fdatasync's "last good end" lies: a failure
/// after writing through into it cuts back to its header, not to another file's end.
#[test]
fn a_failed_fdatasync_after_a_gap_cuts_back_to_the_gap_files_header() {
    let fs = SimFs::new(3);
    let (journal, _) = open(&fs, 1 << 20);
    journal.mark_gap(10).unwrap();
    for lsn in 11..=14 {
        journal.stage(entry(lsn)).unwrap();
    }
    journal.write_through(14).unwrap();
    fs.eio_at_sync(fs.sync_calls());
    assert!(journal.flush_through(14).is_err());
    fs.eio_at_sync(u64::MAX);
    assert_eq!(lsns(&journal), (11..=14).collect::<Vec<_>>(), "staged again");
    drop(journal);
    let (journal, report) = open(&fs, 1 << 20);
    assert_eq!(report.covered_lsn, 10, "{report:?}");
    assert!(report.torn_tail.is_none(), "{report:?}");
    assert!(report.corruptions.is_empty(), "{report:?}");
    assert!(lsns(&journal).is_empty());
}
