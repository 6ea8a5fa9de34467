//! Cuts the power at every I/O call of a fixed scenario (appends one by one and in batches,
//! segment rotation, checkpoints, retirement, a reopen) and checks, after each crash and for
//! several ways a crash can keep unsynced sectors, that the log reopens without complaint,
//! holds a prefix of what was appended with every acknowledged record, and accepts new work.

#![allow(
    missing_docs,
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::indexing_slicing,
    clippy::panic,
    clippy::cast_possible_truncation
)]

mod common;

use common::*;
use tessera_wal::{CrashMode, SimFs, WalError};

/// The scenario; stops at the first error (the power went off).
fn scenario(fs: &SimFs, model: &mut Model) -> Result<(), WalError> {
    let options = small_options();
    let opened = open(fs, &options)?;
    let wal = &opened.wal;
    append_acked(wal, model, 0, 6)?;
    append_batch(wal, model, 6, 5)?;
    checkpoint(wal, model)?;
    append_acked(wal, model, 11, 8)?;
    checkpoint(wal, model)?;
    append_batch(wal, model, 19, 7)?;
    checkpoint(wal, model)?;
    append_acked(wal, model, 26, 4)?;
    drop(opened);
    let opened = open(fs, &options)?;
    if let Err(e) = model.check_recovered(&opened) {
        assert!(fs.is_powered_off(), "reopen without a crash: {e}");
        return Ok(());
    }
    append_batch(&opened.wal, model, 30, 4)?;
    checkpoint(&opened.wal, model)?;
    append_acked(&opened.wal, model, 34, 3)?;
    Ok(())
}

fn crash_and_check(call: u64, mode: CrashMode) {
    let fs = SimFs::new(call);
    fs.power_off_at_call(call);
    let mut model = Model::default();
    let outcome = scenario(&fs, &mut model);
    fs.crash(mode);
    let context = format!("power off at call {call}, {mode:?}, scenario {outcome:?}");
    let opened = open(&fs, &small_options()).unwrap_or_else(|e| panic!("{context}: open: {e}"));
    model.check_recovered(&opened).unwrap_or_else(|e| panic!("{context}: {e}"));
    // The recovered log accepts new work, and that work survives the next crash too.
    append_acked(&opened.wal, &mut model, 100, 3).unwrap_or_else(|e| panic!("{context}: {e}"));
    drop(opened);
    fs.crash(CrashMode::KeepRandom { seed: !call });
    let opened = open(&fs, &small_options()).unwrap_or_else(|e| panic!("{context}: reopen: {e}"));
    model.check_recovered(&opened).unwrap_or_else(|e| panic!("{context}: after new work: {e}"));
}

#[test]
fn crash_at_every_io_call_keeps_every_acknowledged_record() {
    let dry = SimFs::new(0);
    scenario(&dry, &mut Model::default()).unwrap();
    let calls = dry.io_calls();
    assert!(calls > 50, "the scenario exercises the log ({calls} calls)");
    let base = seed("crash_every_call");
    let seeds_per_call = env_count("TESSERA_SEEDS_PER_CALL", 20);
    let mut crash_points = 0;
    for call in 0..=calls {
        crash_and_check(call, CrashMode::DropUnsynced);
        for k in 0..seeds_per_call {
            crash_and_check(call, CrashMode::KeepRandom { seed: base ^ (call << 8) ^ k });
        }
        crash_points += 1 + seeds_per_call;
    }
    eprintln!("crash points: {crash_points} over {calls} I/O calls");
}
