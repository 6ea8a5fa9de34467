//! The journal wired into the engine: every committed transition becomes one entry (who, what,
//! when, which upload, sizes, ETag, outcome), kept across checkpoints that retire the log's
//! segments and across reopens; queried by upload, bucket and prefix, time, either order;
//! exported as JSON lines. And the power cut at every I/O call of a scenario that checkpoints
//! and retires segments several times (and flushes the journal on its own, and rotates its
//! files): after recovery the journal holds exactly the acknowledged transitions (or those and
//! the one in flight), in LSN order, each once.

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

use tessera_engine::journal::{Entry, JournalOptions, Operation, Query};
use tessera_engine::payload::PayloadOptions;
use tessera_engine::{
    Completion, Engine, EngineConfig, EngineError, ManualClock, ObjectMeta, UploadId,
};
use tessera_wal::{CrashMode, SimFs, WalOptions};

const START_MS: u64 = 1_700_000_000_000;
const TTL_MS: u64 = 60_000;

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
        upload_ttl_ms: TTL_MS,
        min_part_bytes: 1,
        inline_payload_bytes_max: 1 << 10,
        // Checkpoints (and with them journal flushes and segment retirement) every few
        // uploads, from the commit path.
        checkpoint_wal_bytes: 6 << 10,
        journal: Some(JournalOptions { file_bytes: 2 << 10, ..JournalOptions::default() }),
        // And flushes of their own between checkpoints.
        journal_staged_bytes_max: 2 << 10,
        ..EngineConfig::default()
    }
}

fn bytes(seed: u64, len: usize) -> Vec<u8> {
    (0..len).map(|i| (seed as usize * 31 + i * 7) as u8).collect()
}

fn all(engine: &Engine) -> Vec<Entry> {
    let result = engine.journal().unwrap().query(&Query::default());
    assert!(result.warnings.is_empty(), "{:?}", result.warnings);
    result.entries
}

/// An entry without its upload id (random per run) and LSN (compaction's records take some).
type Signature =
    (Operation, Option<String>, Option<String>, Option<u32>, Option<u64>, u64, Option<String>);

fn signature(entry: &Entry) -> Signature {
    (
        entry.op,
        entry.bucket.clone(),
        entry.key.clone(),
        entry.part_number,
        entry.size_bytes,
        entry.time_ms,
        entry.error.clone(),
    )
}

/// Checks what every journal must be: LSNs strictly ascending, and each upload's entries
/// naming one key.
fn check_shape(entries: &[Entry], context: &str) {
    for pair in entries.windows(2) {
        assert!(
            pair[0].lsn < pair[1].lsn,
            "{context}: LSNs ascend: {:?} then {:?}",
            pair[0],
            pair[1]
        );
    }
    let mut keys = std::collections::HashMap::new();
    for entry in entries {
        if let (Some(id), Some(key)) = (entry.upload_id, &entry.key) {
            let first = keys.entry(id).or_insert_with(|| key.clone());
            assert_eq!(first, key, "{context}: one upload, one key");
        }
    }
}

#[test]
fn every_transition_is_history_across_checkpoints_and_reopens() {
    let dir = tempfile::tempdir().unwrap();
    let clock = ManualClock::new(START_MS);
    let open = || Engine::open(dir.path(), config(&clock)).unwrap();
    let engine = open();
    engine.create_bucket("alice", "bkt").unwrap();
    let mut ids = Vec::new();
    for i in 0..40u64 {
        clock.advance_ms(10);
        let key = format!("logs/{i:02}");
        let id = engine.create_upload("bob", "bkt", &key, ObjectMeta::default()).unwrap().upload_id;
        let text = id.to_string();
        let p1 = part(&engine, &key, &text, 1, &bytes(i, 700)).unwrap();
        let p2 = part(&engine, &key, &text, 2, &bytes(i + 100, 300)).unwrap();
        if i % 4 == 3 {
            engine.abort_upload("carol", "bkt", &key, &text, None).unwrap();
        } else {
            let parts = vec![p1, p2];
            let done = Completion {
                bucket: "bkt",
                key: &key,
                upload_id: &text,
                parts,
                ..Completion::default()
            };
            engine.complete_upload("bob", &done).unwrap();
        }
        ids.push((key, id));
    }
    // One that expires.
    let expiring = engine.create_upload("bob", "bkt", "tmp/x", ObjectMeta::default()).unwrap();
    clock.advance_ms(TTL_MS + 1);
    assert_eq!(engine.expire_due().unwrap().uploads, 1);
    let before = all(&engine);
    check_shape(&before, "live");
    // 1 bucket + 40 × (create, 2 parts, complete or abort) + create + expire.
    assert_eq!(before.len(), 1 + 40 * 4 + 2);
    assert!(
        engine.wal().segments().first().unwrap().first_lsn.0 > 1,
        "checkpoints retired the oldest log segments: the history is the journal's own"
    );
    assert!(engine.journal().unwrap().stats().files > 2, "journal files rotated");
    drop(engine);

    let engine = open();
    let after = all(&engine);
    assert_eq!(after, before, "the same history after a reopen");

    // One upload's history, oldest first, with what each step did.
    let (key, id) = &ids[5];
    let query = Query { upload_id: Some(id.0), ..Query::default() };
    let history = engine.journal().unwrap().query(&query).entries;
    let ops: Vec<Operation> = history.iter().map(|e| e.op).collect();
    assert_eq!(
        ops,
        [Operation::CreateUpload, Operation::PutPart, Operation::PutPart, Operation::Complete]
    );
    assert!(
        history
            .iter()
            .all(|e| e.key.as_deref() == Some(key.as_str()) && e.bucket.as_deref() == Some("bkt"))
    );
    assert_eq!(history[1].size_bytes, Some(700));
    assert_eq!(history[1].part_number, Some(1));
    assert_eq!(history[3].size_bytes, Some(1000));
    assert_eq!(history[3].etag.unwrap().parts, Some(2));
    assert_eq!(history[0].actor, "bob");
    // Newest first, limited.
    let newest =
        Query { upload_id: Some(id.0), newest_first: true, limit: Some(2), ..Query::default() };
    let newest = engine.journal().unwrap().query(&newest).entries;
    assert_eq!(newest, vec![history[3].clone(), history[2].clone()]);
    // The aborted and the expired: who ended them, and how.
    let aborted =
        engine.journal().unwrap().query(&Query { upload_id: Some(ids[3].1.0), ..Query::default() });
    let last = aborted.entries.last().unwrap();
    assert_eq!((last.op, last.actor.as_str()), (Operation::Abort, "carol"));
    let expired = engine
        .journal()
        .unwrap()
        .query(&Query { upload_id: Some(expiring.upload_id.0), ..Query::default() });
    assert_eq!(expired.entries.last().unwrap().op, Operation::Expire);
    // By bucket and key prefix, and by time.
    let prefix =
        Query { bucket: Some("bkt".into()), key_prefix: Some("logs/0".into()), ..Query::default() };
    let by_prefix = engine.journal().unwrap().query(&prefix).entries;
    assert_eq!(by_prefix.len(), 10 * 4);
    assert!(by_prefix.iter().all(|e| e.key.as_deref().unwrap().starts_with("logs/0")));
    let window = Query {
        time_from_ms: Some(START_MS + 100),
        time_until_ms: Some(START_MS + 200),
        ..Query::default()
    };
    let in_window = engine.journal().unwrap().query(&window).entries;
    let expected: Vec<Entry> = before
        .iter()
        .filter(|e| (START_MS + 100..START_MS + 200).contains(&e.time_ms))
        .cloned()
        .collect();
    assert_eq!(in_window, expected);
    assert!(!expected.is_empty());
    // Export: one JSON object per line, in LSN order.
    let mut out = Vec::new();
    let report = engine.journal().unwrap().export(&Query::default(), &mut out).unwrap();
    assert_eq!(report.entries as usize, before.len());
    let lines: Vec<serde_json::Value> =
        String::from_utf8(out).unwrap().lines().map(|l| serde_json::from_str(l).unwrap()).collect();
    assert_eq!(lines.len(), before.len());
    assert_eq!(lines[1]["op"], "create_upload");
    assert_eq!(lines[1]["upload_id"], before[1].upload_id_hex().unwrap());
    assert_eq!(lines[1]["outcome"], "ok");
}

#[test]
fn a_transition_that_fails_in_commit_order_is_history_with_its_error() {
    let dir = tempfile::tempdir().unwrap();
    let clock = ManualClock::new(START_MS);
    let engine = Arc::new(Engine::open(dir.path(), config(&clock)).unwrap());
    engine.create_bucket("alice", "bkt").unwrap();
    // Completes racing aborts: the loser of each pair is durable and fails when applied.
    let mut failures = 0;
    for round in 0..40 {
        let key = format!("race/{round}");
        let id = engine
            .create_upload("alice", "bkt", &key, ObjectMeta::default())
            .unwrap()
            .upload_id
            .to_string();
        let p = part(&engine, &key, &id, 1, &bytes(round, 10)).unwrap();
        let barrier = std::sync::Barrier::new(2);
        std::thread::scope(|scope| {
            scope.spawn(|| {
                barrier.wait();
                let done = Completion {
                    bucket: "bkt",
                    key: &key,
                    upload_id: &id,
                    parts: vec![p.clone()],
                    ..Completion::default()
                };
                let _ = engine.complete_upload("alice", &done);
            });
            barrier.wait();
            let _ = engine.abort_upload("alice", "bkt", &key, &id, None);
        });
        let id: UploadId = id.parse().unwrap();
        let history = engine
            .journal()
            .unwrap()
            .query(&Query { upload_id: Some(id.0), ..Query::default() })
            .entries;
        let ends: Vec<&Entry> = history
            .iter()
            .filter(|e| matches!(e.op, Operation::Complete | Operation::Abort))
            .collect();
        // Each end is there once; at most one took effect; a loser says why.
        assert!(ends.iter().filter(|e| e.error.is_none()).count() == 1, "{history:?}");
        for loser in ends.iter().filter(|e| e.error.is_some()) {
            assert_eq!(loser.error.as_deref(), Some("NoSuchUpload"));
            failures += 1;
        }
    }
    eprintln!("{failures} of 40 races had a loser that was durable");
}

/// The journal's signatures after each step of a run without a crash.
fn scenario(
    engine: &Engine,
    clock: &ManualClock,
    steps: &mut dyn FnMut(&Engine),
) -> Result<(), EngineError> {
    engine.create_bucket("alice", "bkt")?;
    steps(engine);
    for i in 0..20u64 {
        clock.advance_ms(1);
        let key = format!("k/{i:02}");
        let id = engine
            .create_upload("alice", "bkt", &key, ObjectMeta::default())?
            .upload_id
            .to_string();
        steps(engine);
        clock.advance_ms(1);
        let p1 = part(engine, &key, &id, 1, &bytes(i, 900))?;
        steps(engine);
        clock.advance_ms(1);
        let p2 = part(engine, &key, &id, 2, &bytes(i + 50, 2_000))?;
        steps(engine);
        clock.advance_ms(1);
        if i % 3 == 2 {
            engine.abort_upload("alice", "bkt", &key, &id, None)?;
        } else {
            let done = Completion {
                bucket: "bkt",
                key: &key,
                upload_id: &id,
                parts: vec![p1, p2],
                ..Completion::default()
            };
            engine.complete_upload("alice", &done)?;
        }
        steps(engine);
        if i % 4 == 3 {
            engine.checkpoint()?;
            steps(engine);
        }
    }
    engine.create_upload("alice", "bkt", "late", ObjectMeta::default())?;
    steps(engine);
    clock.advance_ms(TTL_MS + 1);
    engine.expire_due()?;
    steps(engine);
    Ok(())
}

fn open(fs: &SimFs, clock: &ManualClock) -> Result<Engine, EngineError> {
    Engine::open_with_fs(fs.shared(), "/data", config(clock))
}

fn signatures(engine: &Engine) -> Vec<Signature> {
    all(engine).iter().map(signature).collect()
}

#[test]
fn crash_at_every_io_call_keeps_exactly_the_acknowledged_history() {
    // A run without a crash: the history after each acknowledged step.
    let fs = SimFs::new(0);
    let clock = ManualClock::new(START_MS);
    let engine = open(&fs, &clock).unwrap();
    let mut expected = vec![signatures(&engine)];
    scenario(&engine, &clock, &mut |e| expected.push(signatures(e))).unwrap();
    assert!(engine.wal().segments().first().unwrap().first_lsn.0 > 1, "segments were retired");
    assert!(engine.journal().unwrap().stats().files > 2, "journal files rotated");
    let calls = fs.io_calls();
    drop(engine);
    let mut points = 0;
    for call in 0..=calls {
        for mode in [CrashMode::DropUnsynced, CrashMode::KeepRandom { seed: call.rotate_left(9) }] {
            points += 1;
            let fs = SimFs::new(call);
            let clock = ManualClock::new(START_MS);
            let mut acknowledged = 0;
            let outcome = match open(&fs, &clock) {
                Ok(engine) => {
                    fs.power_off_at_call(call);
                    scenario(&engine, &clock, &mut |_| acknowledged += 1)
                }
                Err(e) => Err(e),
            };
            fs.crash(mode);
            let context = format!(
                "power off at call {call}, {mode:?}, {acknowledged} acknowledged, {outcome:?}"
            );
            let engine = open(&fs, &clock).unwrap_or_else(|e| panic!("{context}: reopen: {e}"));
            let entries = all(&engine);
            check_shape(&entries, &context);
            let seen: Vec<Signature> = entries.iter().map(signature).collect();
            let allowed = &expected[acknowledged..(acknowledged + 2).min(expected.len())];
            assert!(
                allowed.contains(&seen),
                "{context}: the history is neither the acknowledged one nor the next:\n{seen:#?}\nexpected one of\n{allowed:#?}"
            );
            // New history after recovery is kept too, through a checkpoint and another crash.
            clock.advance_ms(1_000_000);
            if engine.head_bucket("bkt").is_err() {
                engine.create_bucket("alice", "bkt").unwrap();
            }
            engine.create_upload("alice", "bkt", "after", ObjectMeta::default()).unwrap();
            engine.checkpoint().unwrap_or_else(|e| panic!("{context}: checkpoint: {e}"));
            let with_new = all(&engine);
            drop(engine);
            fs.crash(CrashMode::KeepRandom { seed: !call });
            let engine =
                open(&fs, &clock).unwrap_or_else(|e| panic!("{context}: second reopen: {e}"));
            assert_eq!(all(&engine), with_new, "{context}: after the second crash");
        }
    }
    eprintln!("crash points: {points} over {calls} I/O calls");
}

/// Creates `count` uploads of one small part each (three entries apiece).
fn some_uploads(engine: &Engine, prefix: &str, count: u64) {
    for i in 0..count {
        let key = format!("{prefix}/{i:03}");
        let id =
            engine.create_upload("alice", "bkt", &key, ObjectMeta::default()).unwrap().upload_id;
        let text = id.to_string();
        let p = part(engine, &key, &text, 1, &bytes(i, 50)).unwrap();
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

#[test]
fn a_failing_journal_fails_checkpoints_not_writes_and_loses_nothing() {
    let dir = tempfile::tempdir().unwrap();
    let clock = ManualClock::new(START_MS);
    let config = EngineConfig {
        checkpoint_wal_bytes: 1 << 40,
        journal_staged_bytes_max: 1 << 30,
        ..config(&clock)
    };
    let engine = Engine::open(dir.path(), config.clone()).unwrap();
    engine.create_bucket("alice", "bkt").unwrap();
    some_uploads(&engine, "before", 10);
    engine.checkpoint().unwrap();
    // The journal's directory goes away: its open file still takes appends, but no new file
    // can be made once that one is full.
    let journal_dir = dir.path().join("journal");
    let moved = dir.path().join("journal.moved");
    std::fs::rename(&journal_dir, &moved).unwrap();
    let mut failed = None;
    for round in 0..20 {
        some_uploads(&engine, &format!("during/{round}"), 5);
        if let Err(e) = engine.checkpoint() {
            failed = Some(e);
            break;
        }
    }
    let failed = failed.expect("a checkpoint needing a new journal file failed");
    assert!(matches!(failed, EngineError::Journal(_)), "{failed}");
    // Writes go on; queries still see everything (staged history).
    some_uploads(&engine, "still", 3);
    let staged = all(&engine);
    assert!(engine.journal().unwrap().stats().staged_entries > 0);
    // The directory comes back: the next checkpoint makes all of it durable.
    std::fs::rename(&moved, &journal_dir).unwrap();
    engine.checkpoint().unwrap();
    assert_eq!(engine.journal().unwrap().stats().staged_entries, 0);
    assert_eq!(all(&engine), staged);
    drop(engine);
    let engine = Engine::open(dir.path(), config).unwrap();
    let reopened = all(&engine);
    assert_eq!(reopened, staged, "nothing lost");
    check_shape(&reopened, "after the failure");
    assert_eq!(
        reopened.len(),
        1 + 3 * reopened.iter().filter(|e| e.op == Operation::CreateUpload).count()
    );
}

#[test]
fn a_damaged_journal_file_is_reported_and_never_stops_the_engine() {
    let dir = tempfile::tempdir().unwrap();
    let clock = ManualClock::new(START_MS);
    let engine = Engine::open(dir.path(), config(&clock)).unwrap();
    engine.create_bucket("alice", "bkt").unwrap();
    some_uploads(&engine, "a", 30);
    engine.checkpoint().unwrap();
    let before = all(&engine);
    drop(engine);
    let journal_dir = dir.path().join("journal");
    let mut files: Vec<_> =
        std::fs::read_dir(&journal_dir).unwrap().map(|e| e.unwrap().path()).collect();
    files.sort();
    assert!(files.len() >= 3, "{files:?}");
    // A byte in the middle of the second file flips.
    let victim = &files[1];
    let mut content = std::fs::read(victim).unwrap();
    let at = content.len() / 2;
    content[at] ^= 0x10;
    std::fs::write(victim, &content).unwrap();

    let engine = Engine::open(dir.path(), config(&clock)).unwrap();
    let report = engine.journal_report().clone();
    let result = engine.journal().unwrap().query(&Query::default());
    let warned: Vec<_> = report.corruptions.iter().chain(&result.warnings).collect();
    assert!(warned.iter().any(|c| &c.path == victim && c.offset <= at as u64), "{warned:?}");
    // Everything outside the damaged file is still there, in order.
    assert!(result.entries.len() < before.len());
    assert!(result.entries.iter().all(|e| before.contains(e)));
    let first_file_lsn: u64 =
        files[2].file_name().unwrap().to_str().unwrap().trim_end_matches(".tjl").parse().unwrap();
    let after_damage: Vec<&Entry> = before.iter().filter(|e| e.lsn >= first_file_lsn).collect();
    assert!(after_damage.iter().all(|e| result.entries.contains(e)));
    // The engine writes, checkpoints, and journals on.
    some_uploads(&engine, "b", 3);
    engine.checkpoint().unwrap();
    let latest = all_with_warnings(&engine);
    assert_eq!(
        latest.iter().filter(|e| e.key.as_deref().is_some_and(|k| k.starts_with("b/"))).count(),
        9
    );
}

fn all_with_warnings(engine: &Engine) -> Vec<Entry> {
    engine.journal().unwrap().query(&Query::default()).entries
}
