//! The journal lined up with the log when either lost something: a log repaired below what
//! the journal covers (the journal is cut back, and new transitions are journalled under the
//! reused LSNs), history lost below a checkpoint (recorded as a gap that every later open and
//! query reports, never covered over by a flush), and a journal that cannot open (checkpoints
//! are refused, so the log keeps the history, and a reopen re-derives all of it). Found in
//! review.
#![allow(
    missing_docs,
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::indexing_slicing,
    clippy::panic,
    clippy::cast_possible_truncation
)]

#[path = "shared/steps.rs"]
mod steps;
use steps::part;

use std::sync::Arc;

use tessera_engine::journal::{Entry, JournalOptions, Query};
use tessera_engine::payload::PayloadOptions;
use tessera_engine::{Completion, Engine, EngineConfig, EngineError, ManualClock, ObjectMeta};
use tessera_wal::{Fs, StdFs, WalOptions};

const START_MS: u64 = 1_700_000_000_000;

fn config(clock: &ManualClock) -> EngineConfig {
    EngineConfig {
        wal: WalOptions {
            segment_bytes: 10 << 10,
            batch_bytes_max: 4 << 10,
            pending_bytes_max: 16 << 10,
            preallocate: false,
            ..WalOptions::default()
        },
        payload: PayloadOptions { segment_bytes: 64 << 10, ..PayloadOptions::default() },
        clock: Arc::new(clock.clone()),
        upload_ttl_ms: 60_000,
        min_part_bytes: 1,
        inline_payload_bytes_max: 1 << 10,
        checkpoint_wal_bytes: 1 << 40,
        journal: Some(JournalOptions::default()),
        journal_staged_bytes_max: 1,
        ..EngineConfig::default()
    }
}

fn some_uploads(engine: &Engine, prefix: &str, count: u64) {
    for i in 0..count {
        let key = format!("{prefix}/{i:03}");
        let id =
            engine.create_upload("alice", "bkt", &key, ObjectMeta::default()).unwrap().upload_id;
        let text = id.to_string();
        let p = part(engine, &key, &text, 1, &[i as u8; 900]).unwrap();
        let done = Completion {
            bucket: "bkt",
            key: &key,
            upload_id: &text,
            parts: vec![p],
            ..Completion::default()
        };
        engine.complete_upload("alice", &done).unwrap();
    }
}

fn with_prefix(engine: &Engine, prefix: &str) -> Vec<Entry> {
    let q =
        Query { bucket: Some("bkt".into()), key_prefix: Some(prefix.into()), ..Query::default() };
    engine.journal().unwrap().query(&q).entries
}

#[test]
fn after_a_wal_repair_the_journal_is_cut_back_and_new_transitions_are_journalled() {
    let dir = tempfile::tempdir().unwrap();
    let clock = ManualClock::new(START_MS);
    let engine = Engine::open(dir.path(), config(&clock)).unwrap();
    engine.create_bucket("alice", "bkt").unwrap();
    some_uploads(&engine, "a", 3);
    engine.checkpoint().unwrap();
    some_uploads(&engine, "b", 40);
    let checkpoint_lsn = engine.stats().checkpoint_lsn;
    assert!(
        engine.journal().unwrap().covered_lsn() > checkpoint_lsn,
        "flushed past the checkpoint"
    );
    let segments = engine.wal().segments();
    // A sealed segment after the checkpoint.
    let victim = segments.iter().rev().nth(2).unwrap().clone();
    assert!(victim.first_lsn.0 > checkpoint_lsn);
    drop(engine);
    let mut content = std::fs::read(&victim.path).unwrap();
    content[2000] ^= 0x20;
    std::fs::write(&victim.path, &content).unwrap();
    assert!(Engine::open(dir.path(), config(&clock)).is_err(), "corruption refuses open");
    let fs: Arc<dyn Fs> = Arc::new(StdFs);
    tessera_wal::repair(&fs, &dir.path().join("wal")).unwrap();
    let engine = Engine::open(dir.path(), config(&clock)).unwrap();
    let log_end = engine.wal().lsn_last_appended().0;
    let journal = engine.journal().unwrap();
    assert!(journal.covered_lsn() <= log_end, "no history beyond the log's end");
    assert!(
        engine
            .journal_report()
            .corruptions
            .iter()
            .any(|c| c.damage.to_string().contains("beyond the log's end")),
        "the cut is reported: {:?}",
        engine.journal_report().corruptions
    );
    // Nothing past the log's end is history any more; what the log holds is, once each.
    let entries = journal.query(&Query::default()).entries;
    assert!(entries.iter().all(|e| e.lsn <= log_end));
    some_uploads(&engine, "new", 3);
    engine.checkpoint().unwrap();
    assert_eq!(with_prefix(&engine, "new/").len(), 9, "committed after the repair, journalled");
    assert!(engine.journal_fault().is_none());
    drop(engine);
    let engine = Engine::open(dir.path(), config(&clock)).unwrap();
    assert_eq!(with_prefix(&engine, "new/").len(), 9, "and after a reopen");
}

#[test]
fn history_lost_below_the_checkpoint_is_reported_at_every_open() {
    let dir = tempfile::tempdir().unwrap();
    let clock = ManualClock::new(START_MS);
    let cfg = EngineConfig { journal_staged_bytes_max: 1 << 30, ..config(&clock) };
    let engine = Engine::open(dir.path(), cfg.clone()).unwrap();
    engine.create_bucket("alice", "bkt").unwrap();
    some_uploads(&engine, "a", 10);
    engine.checkpoint().unwrap();
    some_uploads(&engine, "b", 10);
    engine.checkpoint().unwrap();
    drop(engine);
    let jdir = dir.path().join("journal");
    let mut files: Vec<_> = std::fs::read_dir(&jdir).unwrap().map(|e| e.unwrap().path()).collect();
    files.sort();
    assert_eq!(files.len(), 1);
    let mut content = std::fs::read(&files[0]).unwrap();
    content[32 + 64 + 40] ^= 0x01; // inside the first block
    std::fs::write(&files[0], &content).unwrap();
    for round in 0..3 {
        let engine = Engine::open(dir.path(), cfg.clone()).unwrap();
        let result = engine.journal().unwrap().query(&Query::default());
        let reported = engine.journal_report().corruptions.iter().chain(&result.warnings);
        assert!(
            reported.clone().any(|c| c.damage.to_string().contains("are in no file")),
            "round {round}: the lost history is reported: {:?}",
            reported.collect::<Vec<_>>()
        );
        // New history is kept after the gap.
        some_uploads(&engine, &format!("c{round}"), 1);
        engine.checkpoint().unwrap();
        assert_eq!(with_prefix(&engine, &format!("c{round}/")).len(), 3);
    }
}

#[test]
fn a_journal_that_cannot_open_refuses_checkpoints_and_loses_nothing() {
    let dir = tempfile::tempdir().unwrap();
    let clock = ManualClock::new(START_MS);
    let cfg = EngineConfig {
        journal_staged_bytes_max: 1 << 30,
        checkpoint_wal_bytes: 4 << 10,
        ..config(&clock)
    };
    std::fs::write(dir.path().join("journal"), b"not a directory").unwrap();
    let engine = Engine::open(dir.path(), cfg.clone()).unwrap();
    assert!(engine.journal().is_none());
    assert!(engine.journal_fault().is_some());
    // Writes go on (automatic checkpoints fail quietly); an explicit checkpoint says why not.
    engine.create_bucket("alice", "bkt").unwrap();
    some_uploads(&engine, "a", 20);
    assert!(matches!(engine.checkpoint(), Err(EngineError::JournalUnavailable { .. })));
    assert_eq!(engine.wal().segments().first().unwrap().first_lsn.0, 1, "the log keeps it all");
    drop(engine);
    std::fs::remove_file(dir.path().join("journal")).unwrap();
    let engine = Engine::open(dir.path(), cfg.clone()).unwrap();
    assert!(engine.journal_fault().is_none());
    engine.checkpoint().unwrap();
    let result = engine.journal().unwrap().query(&Query::default());
    assert!(result.warnings.is_empty(), "{:?}", result.warnings);
    assert_eq!(result.entries.len(), 1 + 20 * 3, "every transition, re-derived from the log");
    assert_eq!(result.entries[0].lsn, 1);
}
