//! Cuts the power at every I/O call of a multi-upload scenario (parts inline and in payload
//! segments, part replacement, completion, copies, overwrites, deletions, abort, expiry,
//! checkpoints and payload compaction), for several ways a crash can keep unsynced sectors.
//! After each crash the engine opens, and what it holds is exactly the state after the
//! acknowledged operations, or after those and the one in flight (never a part of it): same
//! buckets, uploads, parts, objects and bytes. Every payload reads back intact, and the engine
//! takes new work that survives the next crash.

#![allow(
    missing_docs,
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::indexing_slicing,
    clippy::panic,
    clippy::cast_possible_truncation
)]

use std::io::Read;
use std::sync::Arc;

#[path = "shared/observe.rs"]
mod observe;
use observe::{Observed, observe, observe_with};

use tessera_engine::payload::PayloadOptions;
use tessera_engine::{
    CompletePart, Completion, Engine, EngineConfig, EngineError, ManualClock, ObjectMeta,
    ObjectPut, PartUpload,
};
use tessera_wal::{CrashMode, SimFs, WalOptions};

const START_MS: u64 = 1_700_000_000_000;
const TTL_MS: u64 = 60_000;

fn config(clock: &ManualClock) -> EngineConfig {
    EngineConfig {
        wal: WalOptions {
            segment_bytes: 64 << 10,
            batch_bytes_max: 16 << 10,
            ..WalOptions::default()
        },
        payload: PayloadOptions {
            segment_bytes: 48 << 10,
            compact_live_fraction: 0.9,
            ..PayloadOptions::default()
        },
        clock: Arc::new(clock.clone()),
        upload_ttl_ms: TTL_MS,
        min_part_bytes: 1,
        inline_payload_bytes_max: 1 << 10,
        checkpoint_wal_bytes: 1 << 40,
        ..EngineConfig::default()
    }
}

fn bytes(seed: u64, len: usize) -> Vec<u8> {
    let mut x = seed.wrapping_mul(0x9E37_79B9_7F4A_7C15) | 1;
    (0..len)
        .map(|_| {
            x ^= x << 13;
            x ^= x >> 7;
            x ^= x << 17;
            x as u8
        })
        .collect()
}

struct Run<'a> {
    engine: &'a Engine,
    clock: &'a ManualClock,
    /// States after each acknowledged operation (index 0: before the first), in a dry run.
    states: Option<Vec<Observed>>,
    acknowledged: usize,
}

impl Run<'_> {
    fn step<T>(&mut self, result: Result<T, EngineError>) -> Result<T, String> {
        let value = result.map_err(|e| e.to_string())?;
        self.acknowledged += 1;
        if let Some(states) = &mut self.states {
            states.push(observe(self.engine).map_err(|e| format!("observe: {e}"))?);
        }
        self.clock.advance_ms(1);
        Ok(value)
    }

    fn part(
        &mut self,
        key: &str,
        id: &str,
        number: u32,
        content: &[u8],
    ) -> Result<CompletePart, String> {
        let request = PartUpload {
            bucket: "bkt",
            key,
            upload_id: id,
            part_number: number,
            content_length: Some(content.len() as u64),
            ..PartUpload::default()
        };
        let stored = self.step(self.engine.put_part("alice", &request, &mut &content[..]))?;
        Ok(CompletePart { part_number: number, etag: stored.part.etag.md5, checksum: None })
    }

    fn put(&mut self, key: &str, content: &[u8]) -> Result<(), String> {
        let put = ObjectPut {
            bucket: "bkt",
            key,
            content_length: Some(content.len() as u64),
            ..ObjectPut::default()
        };
        self.step(self.engine.put_object("alice", &put, &mut &content[..])).map(drop)
    }

    fn create(&mut self, key: &str) -> Result<String, String> {
        let info =
            self.step(self.engine.create_upload("alice", "bkt", key, ObjectMeta::default()))?;
        Ok(info.upload_id.to_string())
    }

    fn maintain(&mut self, what: &str) -> Result<(), String> {
        let result = match what {
            "checkpoint" => self.engine.checkpoint().map(drop),
            _ => self.engine.compact().map(drop),
        };
        self.step(result)
    }
}

fn scenario(run: &mut Run<'_>) -> Result<(), String> {
    run.step(run.engine.create_bucket("alice", "bkt"))?;
    let u1 = run.create("a/one")?;
    let p1 = run.part("a/one", &u1, 1, &bytes(1, 20_000))?;
    let p2 = run.part("a/one", &u1, 2, &bytes(2, 100))?;
    let u2 = run.create("b/two")?;
    run.part("b/two", &u2, 1, &bytes(3, 30_000))?;
    run.put("c", &bytes(4, 10_000))?;
    let parts = vec![p1, p2];
    let done =
        Completion { bucket: "bkt", key: "a/one", upload_id: &u1, parts, ..Completion::default() };
    run.step(run.engine.complete_upload("alice", &done))?;
    run.maintain("checkpoint")?;
    run.part("b/two", &u2, 1, &bytes(5, 25_000))?;
    run.step(run.engine.delete_object("alice", "bkt", "c"))?;
    run.step(run.engine.abort_upload("alice", "bkt", "b/two", &u2, None))?;
    run.maintain("compact")?;
    run.step(run.engine.copy_object("alice", ("bkt", "a/one"), ("bkt", "d"), None))?;
    run.put("a/one", &bytes(6, 15_000))?;
    run.maintain("checkpoint")?;
    let u3 = run.create("e")?;
    run.part("e", &u3, 1, &bytes(7, 12_000))?;
    run.clock.advance_ms(TTL_MS);
    run.step(run.engine.expire_due())?;
    run.maintain("compact")?;
    run.put("f", &bytes(8, 50))?;
    Ok(())
}

fn open(fs: &SimFs, clock: &ManualClock) -> Result<Engine, EngineError> {
    Engine::open_with_fs(fs.shared(), "/data", config(clock))
}

/// The states of a run without a crash.
fn dry_run() -> (Vec<Observed>, u64) {
    let fs = SimFs::new(0);
    let clock = ManualClock::new(START_MS);
    let engine = open(&fs, &clock).unwrap();
    let states = Some(vec![observe(&engine).unwrap()]);
    let mut run = Run { engine: &engine, clock: &clock, states, acknowledged: 0 };
    scenario(&mut run).unwrap();
    let states = run.states.unwrap();
    drop(engine);
    (states, fs.io_calls())
}

fn crash_and_check(call: u64, mode: CrashMode, expected: &[Observed]) {
    let fs = SimFs::new(call);
    let clock = ManualClock::new(START_MS);
    let acknowledged;
    let outcome;
    {
        let engine = open(&fs, &clock);
        fs.power_off_at_call(call);
        match engine {
            Ok(engine) => {
                let mut run = Run { engine: &engine, clock: &clock, states: None, acknowledged: 0 };
                outcome = scenario(&mut run);
                acknowledged = run.acknowledged;
                // A transition that failed (never durable) was never visible either.
                if outcome.is_err() {
                    let visible = observe_with(&engine, false).unwrap();
                    assert_eq!(
                        visible,
                        expected[acknowledged].without_contents(),
                        "power off at call {call}, {mode:?}: visible before the crash: {outcome:?}"
                    );
                }
            }
            Err(e) => {
                outcome = Err(e.to_string());
                acknowledged = 0;
            }
        }
    }
    fs.crash(mode);
    let context =
        format!("power off at call {call}, {mode:?}, {acknowledged} acknowledged, {outcome:?}");
    let engine = open(&fs, &clock).unwrap_or_else(|e| panic!("{context}: reopen: {e}"));
    let seen = observe(&engine).unwrap_or_else(|e| panic!("{context}: observe: {e}"));
    let allowed = &expected[acknowledged..(acknowledged + 2).min(expected.len())];
    assert!(
        allowed.contains(&seen),
        "{context}: state after recovery is neither the acknowledged one nor the next:\n{seen:#?}\nexpected one of\n{allowed:#?}"
    );
    let report =
        engine.payload_store().verify().unwrap_or_else(|e| panic!("{context}: verify: {e}"));
    drop(report);
    // New work survives the next crash.
    clock.advance_ms(1_000_000);
    let new_work = (|| -> Result<(), EngineError> {
        if engine.head_bucket("bkt").is_err() {
            engine.create_bucket("alice", "bkt")?;
        }
        let put = ObjectPut {
            bucket: "bkt",
            key: "after",
            content_length: Some(5_000),
            ..ObjectPut::default()
        };
        engine.put_object("alice", &put, &mut &bytes(99, 5_000)[..])?;
        Ok(())
    })();
    new_work.unwrap_or_else(|e| panic!("{context}: new work: {e}"));
    drop(engine);
    fs.crash(CrashMode::KeepRandom { seed: !call });
    let engine = open(&fs, &clock).unwrap_or_else(|e| panic!("{context}: second reopen: {e}"));
    let (_, mut reader) =
        engine.open_object("bkt", "after", None).unwrap_or_else(|e| panic!("{context}: {e}"));
    let mut content = Vec::new();
    reader.read_to_end(&mut content).unwrap();
    assert_eq!(content, bytes(99, 5_000), "{context}");
}

#[test]
fn crash_at_every_io_call_keeps_exactly_the_acknowledged_transitions() {
    let (expected, calls) = dry_run();
    assert!(expected.len() > 20, "the scenario ran: {} states", expected.len());
    let seeds =
        std::env::var("TESSERA_SEEDS_PER_CALL").ok().and_then(|s| s.parse().ok()).unwrap_or(1u64);
    for call in 0..=calls {
        crash_and_check(call, CrashMode::DropUnsynced, &expected);
        for k in 0..seeds {
            crash_and_check(
                call,
                CrashMode::KeepRandom { seed: call.rotate_left(17) ^ k },
                &expected,
            );
        }
    }
    eprintln!("crash points: {} over {calls} I/O calls", (calls + 1) * (1 + seeds));
}
