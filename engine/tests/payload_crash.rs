//! Cuts the power at every I/O call of an ingest + release + compaction scenario (the
//! references recorded in a real WAL, as the engine will), for several ways a crash can keep
//! unsynced sectors. After each crash the store recovers without complaint, every payload the
//! caller was told is durable reads back bit for bit with its reference count, nothing else is
//! live, the space accounts for the live bytes, and the store takes new work.

#![allow(
    missing_docs,
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::indexing_slicing,
    clippy::panic,
    clippy::cast_possible_truncation
)]

mod common;

use std::path::Path;

use common::*;
use tessera_wal::{CrashMode, SimFs};

/// The scenario; stops at the first error (the power went off).
fn scenario(fs: &SimFs, model: &mut Model) -> Result<(), String> {
    let h = Harness::open(fs.shared(), Path::new("/data"), &small_options())?;
    let sizes = [1_000usize, 20_000, 7, 30_000, 12_345, 40_000];
    let mut addresses = Vec::new();
    for (n, &len) in sizes.iter().enumerate() {
        addresses.push(h.put(model, &payload(n as u64, len))?);
    }
    // A duplicate of the second payload: stored once, referenced twice.
    h.put(model, &payload(1, 20_000))?;
    for &i in &[0usize, 3, 1] {
        h.release(model, addresses[i])?;
    }
    h.compact().map_err(|e| format!("compact: {e}"))?;
    h.put(model, &payload(10, 25_000))?;
    h.release(model, addresses[4])?;
    h.release(model, addresses[1])?;
    h.compact().map_err(|e| format!("compact: {e}"))?;
    h.put(model, &payload(11, 3_000))?;
    Ok(())
}

fn crash_and_check(call: u64, mode: CrashMode) {
    let fs = SimFs::new(call);
    fs.power_off_at_call(call);
    let mut model = Model::default();
    let outcome = scenario(&fs, &mut model);
    fs.crash(mode);
    let context = format!("power off at call {call}, {mode:?}, scenario {outcome:?}");
    let h = Harness::open(fs.shared(), Path::new("/data"), &small_options())
        .unwrap_or_else(|e| panic!("{context}: {e}"));
    model.check(&h).unwrap_or_else(|e| panic!("{context}: {e}"));
    // New work, then another crash: it survives too.
    h.put(&mut model, &payload(99, 9_999)).unwrap_or_else(|e| panic!("{context}: {e}"));
    drop(h);
    fs.crash(CrashMode::KeepRandom { seed: !call });
    let h = Harness::open(fs.shared(), Path::new("/data"), &small_options())
        .unwrap_or_else(|e| panic!("{context}: reopen: {e}"));
    model.check(&h).unwrap_or_else(|e| panic!("{context}: after new work: {e}"));
}

#[test]
fn crash_at_every_io_call_of_ingest_and_compaction_keeps_every_acknowledged_payload() {
    let dry = SimFs::new(0);
    let mut model = Model::default();
    scenario(&dry, &mut model).unwrap();
    let calls = dry.io_calls();
    let seeds =
        std::env::var("TESSERA_SEEDS_PER_CALL").ok().and_then(|s| s.parse().ok()).unwrap_or(2u64);
    for call in 0..=calls {
        crash_and_check(call, CrashMode::DropUnsynced);
        for k in 0..seeds {
            crash_and_check(call, CrashMode::KeepRandom { seed: call.rotate_left(20) ^ k });
        }
    }
    eprintln!("crash points: {} over {calls} I/O calls", (calls + 1) * (1 + seeds));
}
