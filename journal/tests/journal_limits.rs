//! Limits on what the journal writes and reads: an entry too large for a block is refused at
//! `stage` (never written as a block the reader would cut), and LSNs from disk are bounded, so a
//! block claiming to end at `u64::MAX` is damage, not a panic or a journal stuck forever.
//! Found in review.
#![allow(
    missing_docs,
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::indexing_slicing,
    clippy::panic,
    clippy::cast_possible_truncation
)]

use std::sync::Arc;

use tessera_journal::{
    ENTRY_BYTES_MAX, Entry, Journal, JournalError, JournalOptions, Operation, Query,
};
use tessera_wal::{Fs, StdFs};

fn entry(lsn: u64, actor: String) -> Entry {
    Entry {
        lsn,
        time_ms: 1_700_000_000_000 + lsn,
        actor,
        op: Operation::CreateBucket,
        bucket: Some("bkt".into()),
        key: None,
        upload_id: None,
        part_number: None,
        size_bytes: None,
        etag: None,
        error: None,
    }
}

#[test]
fn an_entry_too_large_for_a_block_is_refused_at_stage() {
    let dir = tempfile::tempdir().unwrap();
    let fs: Arc<dyn Fs> = Arc::new(StdFs);
    let (journal, _) =
        Journal::open(Arc::clone(&fs), dir.path(), JournalOptions::default()).unwrap();
    journal.stage(entry(1, "alice".into())).unwrap();
    journal.flush_through(1).unwrap();
    let refused = journal.stage(entry(2, "x".repeat(ENTRY_BYTES_MAX + 1)));
    assert!(matches!(refused, Err(JournalError::Invalid { .. })), "{refused:?}");
    journal.stage(entry(3, "carol".into())).unwrap();
    journal.flush_through(3).unwrap();
    drop(journal);
    let (journal, report) = Journal::open(fs, dir.path(), JournalOptions::default()).unwrap();
    assert!(report.torn_tail.is_none());
    assert_eq!(journal.covered_lsn(), 3, "flushed history survives the reopen");
    let lsns: Vec<u64> = journal.query(&Query::default()).entries.iter().map(|e| e.lsn).collect();
    assert_eq!(lsns, [1, 3]);
}

#[test]
fn a_block_ending_at_u64_max_is_damage() {
    let dir = tempfile::tempdir().unwrap();
    let mut file = Vec::new();
    let mut header = [0u8; 32];
    header[..8].copy_from_slice(b"tssr.jnl");
    header[8..12].copy_from_slice(&1u32.to_le_bytes());
    header[16..24].copy_from_slice(&1u64.to_le_bytes());
    let crc = crc32fast::hash(&header[..28]);
    header[28..].copy_from_slice(&crc.to_le_bytes());
    file.extend_from_slice(&header);
    let summary = [0u8, 0, 0]; // three empty byte strings
    let mut block = [0u8; 64];
    block[4..8].copy_from_slice(&1u32.to_le_bytes());
    block[8..12].copy_from_slice(&(summary.len() as u32).to_le_bytes());
    block[16..20].copy_from_slice(&crc32fast::hash(&[]).to_le_bytes());
    block[24..32].copy_from_slice(&1u64.to_le_bytes());
    block[32..40].copy_from_slice(&u64::MAX.to_le_bytes());
    let mut h = crc32fast::Hasher::new();
    h.update(&block[4..]);
    h.update(&summary);
    block[..4].copy_from_slice(&h.finalize().to_le_bytes());
    file.extend_from_slice(&block);
    file.extend_from_slice(&summary);
    std::fs::write(dir.path().join("00000000000000000001.tjl"), &file).unwrap();
    let fs: Arc<dyn Fs> = Arc::new(StdFs);
    let (journal, report) = Journal::open(fs, dir.path(), JournalOptions::default()).unwrap();
    assert_eq!(journal.covered_lsn(), 0, "the block is not believed");
    let torn = report.torn_tail.expect("the newest file's bad block is cut");
    assert_eq!(torn.offset, 32);
    journal.stage(entry(1, "alice".into())).unwrap();
    journal.flush_through(1).unwrap();
}
