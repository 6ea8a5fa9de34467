//! Simulated power loss at scale: random engine workloads (uploads, parts inline and in
//! segments, completes, aborts, objects, copies, deletes, checkpoints, compactions, expiry) on
//! the simulated file system, each crashed at a random I/O call (dropping unsynced writes, or
//! keeping a random subset of sectors), or failed by ENOSPC at a random write or EIO at a
//! random fsync and then crashed. After recovery the engine must show exactly the state and
//! history after the acknowledged operations, or after those and the one in flight: same
//! buckets, uploads, parts, objects, bytes and journal. Every payload reads back; the engine
//! takes new work.
//!
//! Seeded and reproducible: `TESSERA_CRASH_POINTS` (default 3,000) crash points, from
//! `TESSERA_SEED` (default drawn); a failure prints its seed and the command that replays it.
//! Ends with `crash points: N, acknowledged: N, lost: N, failed: N, corruption reports: N`:
//! `lost` counts points whose recovered state missed acknowledged work, `failed` every point
//! that failed any check (an unexplained error, damage reported without its file, ...).
//! A long run: `TESSERA_CRASH_POINTS=100000 cargo test --release --test crash_sim -- --nocapture`.

#![allow(
    missing_docs,
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::indexing_slicing,
    clippy::panic,
    clippy::cast_possible_truncation
)]

#[path = "../engine/tests/shared/observe.rs"]
mod observe;

use std::sync::Arc;

use observe::{Observed, observe};
use tessera::payload::PayloadOptions;
use tessera::{
    AbortRule, CompletePart, Completion, Engine, EngineConfig, EngineError, EtagMatch, ManualClock,
    ObjectMeta, ObjectPut, PartUpload, WriteCondition,
};
use tessera_engine::journal::JournalOptions;
use tessera_wal::{CrashMode, SimFs, WalOptions};

const START_MS: u64 = 1_700_000_000_000;
const TTL_MS: u64 = 50_000;
/// Crash points per generated workload (one dry run serves them all).
const POINTS_PER_WORKLOAD: u64 = 10;

struct Rng(u64);

impl Rng {
    fn next(&mut self) -> u64 {
        self.0 = self.0.wrapping_add(0x9E37_79B9_7F4A_7C15);
        let mut z = self.0;
        z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
        z ^ (z >> 31)
    }

    fn below(&mut self, n: u64) -> u64 {
        if n == 0 { 0 } else { self.next() % n }
    }
}

#[derive(Clone, Debug)]
enum Op {
    CreateUpload {
        key: u8,
    },
    PutPart {
        upload: u8,
        number: u32,
        len: usize,
        seed: u8,
    },
    Complete {
        upload: u8,
        condition: u8,
    },
    Abort {
        upload: u8,
    },
    PutObject {
        key: u8,
        len: usize,
        seed: u8,
    },
    DeleteObject {
        key: u8,
    },
    CopyObject {
        from: u8,
        to: u8,
    },
    Checkpoint,
    Compact,
    Expire,
    /// Abort rules for the bucket: uploads whose key starts with `u/{prefix}` after `days`
    /// (no rules when `days` is 0).
    Lifecycle {
        prefix: u8,
        days: u8,
    },
}

fn workload(rng: &mut Rng) -> Vec<Op> {
    let count = 25 + rng.below(20);
    (0..count)
        .map(|_| {
            let small = rng.below(6) as u8;
            let len = if rng.below(2) == 0 {
                rng.below(900) as usize
            } else {
                1_000 + rng.below(6_000) as usize
            };
            match rng.below(21) {
                0..=3 => Op::CreateUpload { key: small },
                4..=9 => Op::PutPart {
                    upload: small,
                    number: 1 + rng.below(3) as u32,
                    len,
                    seed: rng.next() as u8,
                },
                10..=11 => Op::Complete { upload: small, condition: rng.next() as u8 },
                12 => Op::Abort { upload: small },
                13..=14 => Op::PutObject { key: small, len, seed: rng.next() as u8 },
                15 => Op::DeleteObject { key: small },
                16 => Op::CopyObject { from: small, to: rng.below(6) as u8 },
                17 => Op::Checkpoint,
                18 => Op::Compact,
                19 => Op::Lifecycle { prefix: small, days: rng.below(3) as u8 },
                _ => Op::Expire,
            }
        })
        .collect()
}

fn config(clock: &ManualClock) -> EngineConfig {
    EngineConfig {
        wal: WalOptions {
            segment_bytes: 16 << 10,
            batch_bytes_max: 4 << 10,
            pending_bytes_max: 16 << 10,
            preallocate: false,
            ..WalOptions::default()
        },
        payload: PayloadOptions {
            segment_bytes: 16 << 10,
            compact_live_fraction: 0.8,
            ..PayloadOptions::default()
        },
        clock: Arc::new(clock.clone()),
        upload_ttl_ms: TTL_MS,
        // Lifecycle rules of a day or two fire within a workload's expiries.
        day_ms: 10_000,
        min_part_bytes: 1,
        inline_payload_bytes_max: 1 << 10,
        checkpoint_wal_bytes: 8 << 10,
        journal: Some(JournalOptions { file_bytes: 2 << 10, ..JournalOptions::default() }),
        journal_staged_bytes_max: 1 << 10,
        ..EngineConfig::default()
    }
}

/// A write's precondition from a random byte: `If-None-Match: *` or `If-Match: *` one time in
/// four each (conditional writes are version 2 records, docs/format.md §10).
fn condition(n: u8) -> Option<WriteCondition> {
    match n % 4 {
        0 => Some(WriteCondition { if_none_match: Some(EtagMatch::Any), if_match: None }),
        1 => Some(WriteCondition { if_match: Some(EtagMatch::Any), if_none_match: None }),
        _ => None,
    }
}

fn bytes(seed: u8, len: usize) -> Vec<u8> {
    (0..len).map(|i| seed.wrapping_mul(31).wrapping_add((i * 7 % 251) as u8)).collect()
}

/// Runs `ops`, one result per operation; stops at the first that `keep_going` refuses.
struct Runner<'a> {
    engine: &'a Engine,
    clock: &'a ManualClock,
    uploads: Vec<(String, String, Vec<CompletePart>)>,
}

impl Runner<'_> {
    fn run(&mut self, op: &Op) -> Result<(), EngineError> {
        self.clock.advance_ms(10);
        let engine = self.engine;
        let upload = |uploads: &[(String, String, Vec<CompletePart>)], n: u8| {
            (!uploads.is_empty()).then(|| uploads[usize::from(n) % uploads.len()].clone())
        };
        match op {
            Op::CreateUpload { key } => {
                let key = format!("u/{key}");
                let id = engine
                    .create_upload("alice", "bkt", &key, ObjectMeta::default())?
                    .upload_id
                    .to_string();
                self.uploads.push((key, id, Vec::new()));
            }
            Op::PutPart { upload: n, number, len, seed } => {
                let Some((key, id, _)) = upload(&self.uploads, *n) else { return Ok(()) };
                let body = bytes(*seed, *len);
                let request = PartUpload {
                    bucket: "bkt",
                    key: &key,
                    upload_id: &id,
                    part_number: *number,
                    content_length: Some(body.len() as u64),
                    ..PartUpload::default()
                };
                let stored = engine.put_part("alice", &request, &mut &body[..])?;
                let index = usize::from(*n) % self.uploads.len();
                let parts = &mut self.uploads[index].2;
                parts.retain(|p| p.part_number != *number);
                parts.push(CompletePart {
                    part_number: *number,
                    etag: stored.part.etag.md5,
                    checksum: None,
                });
                parts.sort_by_key(|p| p.part_number);
            }
            Op::Complete { upload: n, condition: c } => {
                let Some((key, id, parts)) = upload(&self.uploads, *n) else { return Ok(()) };
                let done = Completion {
                    bucket: "bkt",
                    key: &key,
                    upload_id: &id,
                    parts,
                    condition: condition(*c),
                    ..Completion::default()
                };
                engine.complete_upload("alice", &done)?;
            }
            Op::Abort { upload: n } => {
                let Some((key, id, _)) = upload(&self.uploads, *n) else { return Ok(()) };
                engine.abort_upload("alice", "bkt", &key, &id, None)?;
            }
            Op::PutObject { key, len, seed } => {
                let key = format!("o/{key}");
                let body = bytes(*seed, *len);
                let put = ObjectPut {
                    bucket: "bkt",
                    key: &key,
                    content_length: Some(body.len() as u64),
                    condition: condition(*seed),
                    ..ObjectPut::default()
                };
                engine.put_object("alice", &put, &mut &body[..])?;
            }
            Op::DeleteObject { key } => {
                engine.delete_object("alice", "bkt", &format!("o/{key}"))?;
            }
            Op::CopyObject { from, to } => {
                engine.copy_object(
                    "alice",
                    ("bkt", &format!("o/{from}")),
                    ("bkt", &format!("o/{to}")),
                    None,
                )?;
            }
            Op::Checkpoint => {
                engine.checkpoint()?;
            }
            Op::Compact => {
                engine.compact()?;
            }
            Op::Lifecycle { prefix, days } => {
                let rules = (*days > 0).then(|| AbortRule {
                    id: format!("rule-{prefix}"),
                    prefix: format!("u/{prefix}"),
                    days: u32::from(*days),
                });
                engine.set_lifecycle("alice", "bkt", rules.into_iter().collect())?;
            }
            Op::Expire => {
                self.clock.advance_ms(TTL_MS / 2);
                engine.expire_due()?;
            }
        }
        Ok(())
    }
}

fn open(fs: &SimFs, clock: &ManualClock) -> Result<Engine, EngineError> {
    Engine::open_with_fs(fs.shared(), "/data", config(clock))
}

/// A run without a fault: the observed state after each operation, and each one's outcome.
struct DryRun {
    states: Vec<Observed>,
    /// The last LSN applied to the state at each of `states` (records that change no state,
    /// a compaction's moves, aside).
    applied: Vec<u64>,
    /// Each operation's outcome: `Ok`, or the S3 error code it failed with.
    outcomes: Vec<Result<(), &'static str>>,
    calls: u64,
    writes: u64,
    syncs: u64,
    /// Reads made by a recovery after the whole workload, and the checks after it.
    recovery_reads: u64,
}

fn dry_run(ops: &[Op]) -> DryRun {
    let fs = SimFs::new(0);
    let clock = ManualClock::new(START_MS);
    let engine = open(&fs, &clock).unwrap();
    engine.create_bucket("alice", "bkt").unwrap();
    let mut states = vec![observe(&engine).unwrap()];
    let mut applied = vec![engine.stats().applied_lsn];
    let mut outcomes = Vec::new();
    let mut runner = Runner { engine: &engine, clock: &clock, uploads: Vec::new() };
    for op in ops {
        outcomes.push(runner.run(op).map_err(|e| e.s3_code()));
        states.push(observe(&engine).unwrap());
        applied.push(engine.stats().applied_lsn);
    }
    drop(engine);
    let (calls, writes, syncs) = (fs.io_calls(), fs.write_calls(), fs.sync_calls());
    fs.crash(CrashMode::DropUnsynced);
    let reads_before = fs.read_calls();
    let engine = open(&fs, &clock).unwrap();
    observe(&engine).unwrap();
    engine.payload_store().verify().unwrap();
    let recovery_reads = fs.read_calls() - reads_before;
    DryRun { states, applied, outcomes, calls, writes, syncs, recovery_reads }
}

#[derive(Clone, Copy, Debug)]
enum Fault {
    PowerOff {
        call: u64,
        mode: CrashMode,
    },
    Enospc {
        write: u64,
    },
    Eio {
        sync: u64,
    },
    /// The whole workload, a crash, and a bit flipped on the medium by a read of recovery or
    /// of the checks after it (a latent sector error).
    Rot {
        read: u64,
    },
}

#[derive(Default)]
struct Tally {
    points: u64,
    acknowledged: u64,
    /// Points whose state after recovery missed acknowledged work (or held half a transition).
    lost: u64,
    /// Points that failed any check (those above among them).
    failed: u64,
    corruption_reports: u64,
    /// Latent sector errors armed, fired (the read happened), and reported.
    rot_armed: u64,
    rot_fired: u64,
    rot_reported: u64,
    first_failure: Option<String>,
}

fn crash_point(ops: &[Op], dry: &DryRun, fault: Fault, tally: &mut Tally) -> Result<(), String> {
    let fs = SimFs::new(7);
    let clock = ManualClock::new(START_MS);
    let mut acknowledged = 0;
    {
        let engine = open(&fs, &clock).map_err(|e| format!("first open: {e}"))?;
        engine.create_bucket("alice", "bkt").map_err(|e| format!("bucket: {e}"))?;
        match fault {
            Fault::PowerOff { call, .. } => fs.power_off_at_call(fs.io_calls() + call),
            Fault::Enospc { write } => fs.enospc_at_write(fs.write_calls() + write),
            Fault::Eio { sync } => fs.eio_at_sync(fs.sync_calls() + sync),
            Fault::Rot { .. } => {}
        }
        let mut runner = Runner { engine: &engine, clock: &clock, uploads: Vec::new() };
        // An operation that failed otherwise than in the dry run (an I/O error where the dry
        // run had a rule's error, say) was in flight: it may have happened or not.
        for (op, expected) in ops.iter().zip(&dry.outcomes) {
            if runner.run(op).map_err(|e| e.s3_code()) != *expected {
                break;
            }
            acknowledged += 1;
        }
    }
    let mode = match fault {
        Fault::PowerOff { mode, .. } => mode,
        _ => CrashMode::DropUnsynced,
    };
    fs.crash(mode);
    tally.acknowledged += acknowledged as u64;
    if let Fault::Rot { read } = fault {
        fs.rot_at_read(fs.read_calls() + read);
        tally.rot_armed += 1;
    }
    let reports_before = tally.corruption_reports;
    let result = recover_and_check(ops, dry, &fs, &clock, acknowledged, tally);
    if fs.bits_rotted() > 0 {
        tally.rot_fired += 1;
        tally.rot_reported += u64::from(tally.corruption_reports > reports_before);
    }
    result
}

fn recover_and_check(
    ops: &[Op],
    dry: &DryRun,
    fs: &SimFs,
    clock: &ManualClock,
    acknowledged: usize,
    tally: &mut Tally,
) -> Result<(), String> {
    // Damage found on the medium must be reported, naming the file; then the checks stop.
    let rotted = || fs.bits_rotted() > 0;
    let engine = match open(fs, clock) {
        Ok(engine) => engine,
        Err(e) if rotted() => return reported(tally, "reopen", &e.to_string()),
        Err(e) => return Err(format!("reopen: {e}")),
    };
    tally.corruption_reports += engine.journal_report().corruptions.len() as u64;
    let seen = match observe(&engine) {
        Ok(seen) => seen,
        Err(e) if rotted() => return reported(tally, "a read", &e.to_string()),
        Err(e) => return Err(format!("observe: {e}")),
    };
    let allowed = &dry.states[acknowledged..(acknowledged + 2).min(dry.states.len())];
    // An expiry is one transition per due upload: a fault may stop it part of the way.
    let partial_expiry = matches!(ops.get(acknowledged), Some(Op::Expire))
        && allowed.len() == 2
        && between(&allowed[0], &seen, &allowed[1]);
    if !allowed.contains(&seen) && !partial_expiry {
        if rotted() && explained_by_reports(&engine, ops, dry, allowed.len() + acknowledged, &seen)
        {
            tally.corruption_reports += 1;
        } else {
            tally.lost += 1;
            let differences: Vec<String> =
                allowed.iter().map(|state| difference(state, &seen)).collect();
            let rot = if rotted() { format!("{:?}", engine.open_report()) } else { String::new() };
            return Err(format!(
                "{acknowledged} acknowledged: the state after recovery is neither the acknowledged one nor the next; what differs from each: {differences:#?} {rot}"
            ));
        }
    }
    let verified = engine.payload_store().verify().map_err(|e| format!("verify: {e}"))?;
    for damage in &verified.corrupt {
        if !rotted() {
            return Err(format!("verify found damage no fault made: {damage}"));
        }
        reported(tally, "verify", &damage.to_string())?;
    }
    engine
        .create_upload("alice", "bkt", "after/crash", ObjectMeta::default())
        .map_err(|e| format!("new work: {e}"))?;
    Ok(())
}

/// What differs between an expected state and the one seen, briefly.
fn difference(expected: &Observed, seen: &Observed) -> String {
    let mut out = String::new();
    if expected.buckets != seen.buckets {
        out += &format!("buckets {:?} / {:?}; ", expected.buckets, seen.buckets);
    }
    for u in expected.uploads.iter().filter(|u| !seen.uploads.contains(u)) {
        out += &format!("upload missing {u:?}; ");
    }
    for u in seen.uploads.iter().filter(|u| !expected.uploads.contains(u)) {
        out += &format!("upload extra {u:?}; ");
    }
    let brief = |o: &Observed| -> Vec<(String, String, u64, u64)> {
        o.objects
            .iter()
            .map(|(k, e, n, bytes)| {
                let sum =
                    bytes.iter().fold(0u64, |a, &b| a.wrapping_mul(31).wrapping_add(b.into()));
                (k.clone(), e.clone(), *n, sum)
            })
            .collect()
    };
    if brief(expected) != brief(seen) {
        out += &format!("objects {:?} / {:?}; ", brief(expected), brief(seen));
    }
    if expected.history != seen.history {
        let common = expected.history.iter().zip(&seen.history).take_while(|(a, b)| a == b).count();
        out += &format!(
            "history differs from entry {common} of {} / {}: {:?} / {:?}",
            expected.history.len(),
            seen.history.len(),
            expected.history.get(common),
            seen.history.get(common)
        );
    }
    out
}

/// Counts a report of damage, which must name the damaged file.
fn reported(tally: &mut Tally, what: &str, message: &str) -> Result<(), String> {
    if !message.contains("/data/") {
        return Err(format!("{what} found a flipped bit but did not name the file: {message}"));
    }
    tally.corruption_reports += 1;
    Ok(())
}

/// Whether a state that differs from every allowed one is what recovery said it did with a
/// flipped bit. A log tail cut as torn at LSN `L` (a flipped bit in the last batch cannot be
/// told from a torn write) leaves exactly the records before `L`: the state after the last
/// operation whose transitions all precede `L` (the dry run's LSNs are the crashed run's, the
/// workload being deterministic), or, if the expiry after it was cut, exactly its aborts
/// before `L` (one transition per upload it ends). A damaged journal block loses history but
/// no state.
/// `reachable` states (those of the acknowledged operations and the one in flight) count.
fn explained_by_reports(
    engine: &Engine,
    ops: &[Op],
    dry: &DryRun,
    reachable: usize,
    seen: &Observed,
) -> bool {
    let report = engine.open_report();
    let history_damaged = !engine.journal_report().corruptions.is_empty();
    let same = |state: &Observed| {
        let without_history = |o: &Observed| Observed { history: Vec::new(), ..o.clone() };
        without_history(state) == without_history(seen)
            && (history_damaged || state.history == seen.history)
    };
    let states = &dry.states[..reachable.min(dry.states.len())];
    let Some(cut) = report.wal.torn_tail.as_ref().map(|torn| torn.lsn.0) else {
        // No cut: the history alone may differ.
        return history_damaged && states.last().is_some_and(same);
    };
    let Some(at) = dry.applied.iter().take(states.len()).rposition(|&lsn| lsn < cut) else {
        return false;
    };
    // Inside an expiry (only aborts, one LSN each), exactly the aborts before the cut stand.
    let expired_before_cut = (cut - 1).saturating_sub(dry.applied[at]) as usize;
    if matches!(ops.get(at), Some(Op::Expire)) && expired_before_cut > 0 {
        return states.get(at + 1).is_some_and(|after| between(&states[at], seen, after))
            && seen.uploads.len() + expired_before_cut == states[at].uploads.len();
    }
    same(&states[at])
}

/// Whether `seen` lies between `before` and `after` an expiry: some of the uploads it ended are
/// gone, with their history, and nothing else changed.
fn between(before: &Observed, seen: &Observed, after: &Observed) -> bool {
    let subset = |small: &[observe::ObservedUpload], big: &[observe::ObservedUpload]| {
        small.iter().all(|u| big.contains(u))
    };
    seen.buckets == before.buckets
        && seen.objects == before.objects
        && subset(&seen.uploads, &before.uploads)
        && subset(&after.uploads, &seen.uploads)
        && seen.history.starts_with(&before.history)
        && after.history.starts_with(&seen.history)
}

#[test]
fn random_workloads_crashed_at_random_keep_exactly_the_acknowledged_state() {
    let points: u64 =
        std::env::var("TESSERA_CRASH_POINTS").ok().and_then(|s| s.parse().ok()).unwrap_or(3000);
    let base: u64 =
        std::env::var("TESSERA_SEED").ok().and_then(|s| s.parse().ok()).unwrap_or_else(|| {
            std::time::SystemTime::now()
                .duration_since(std::time::UNIX_EPOCH)
                .map_or(1, |d| d.as_nanos() as u64)
        });
    let mut tally = Tally::default();
    // The dry runs' outcomes by S3 error code ("none": it succeeded).
    let mut rule_errors: std::collections::BTreeMap<&str, u64> = Default::default();
    let workloads = points.div_ceil(POINTS_PER_WORKLOAD);
    for w in 0..workloads {
        let seed = base.wrapping_add(w);
        let mut rng = Rng(seed);
        let ops = workload(&mut rng);
        let dry = dry_run(&ops);
        for outcome in &dry.outcomes {
            *rule_errors.entry(outcome.err().unwrap_or("none")).or_default() += 1;
        }
        for _ in 0..POINTS_PER_WORKLOAD {
            let fault = match rng.below(7) {
                0..=2 => Fault::PowerOff {
                    call: rng.below(dry.calls + 1),
                    mode: CrashMode::DropUnsynced,
                },
                3 => Fault::PowerOff {
                    call: rng.below(dry.calls + 1),
                    mode: CrashMode::KeepRandom { seed: rng.next() },
                },
                4 => Fault::Enospc { write: rng.below(dry.writes + 1) },
                5 => Fault::Eio { sync: rng.below(dry.syncs + 1) },
                _ => Fault::Rot { read: rng.below(dry.recovery_reads) },
            };
            tally.points += 1;
            if let Err(e) = crash_point(&ops, &dry, fault, &mut tally) {
                tally.first_failure.get_or_insert_with(|| {
                    format!(
                        "seed {seed}, {fault:?}: {e}\nreplay: TESSERA_SEED={seed} TESSERA_CRASH_POINTS={POINTS_PER_WORKLOAD} cargo test --release --test crash_sim"
                    )
                });
                tally.failed += 1;
            }
        }
    }
    println!("operations by outcome (dry runs): {rule_errors:?}");
    // Conditional writes are exercised both ways (the chance of missing either in a thousand
    // points is negligible).
    if points >= 1000 {
        assert!(rule_errors.contains_key("PreconditionFailed"), "{rule_errors:?}");
    }
    println!(
        "bit flips on read: {} armed, {} fired, {} reported, {} unreported with every check passed",
        tally.rot_armed,
        tally.rot_fired,
        tally.rot_reported,
        tally.rot_fired - tally.rot_reported
    );
    println!(
        "crash points: {}, acknowledged: {}, lost: {}, failed: {}, corruption reports: {}",
        tally.points, tally.acknowledged, tally.lost, tally.failed, tally.corruption_reports
    );
    if let Some(failure) = tally.first_failure {
        panic!("{failure}");
    }
}
