//! ENOSPC at any write and EIO at any fsync: the log is poisoned with an error naming the
//! first failure, every later append fails, reads go on, the fsync is never retried, and after
//! a reopen (with or without a power loss) no acknowledged record is missing.

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

type Step<'a> = dyn Fn(&mut Model) -> Result<(), WalError> + 'a;

/// Appends with acknowledgements, a checkpoint and a retirement; stops at the first error and
/// returns it.
fn workload(fs: &SimFs, model: &mut Model) -> Option<WalError> {
    let opened = match open(fs, &small_options()) {
        Ok(opened) => opened,
        Err(e) => return Some(e),
    };
    let wal = &opened.wal;
    let steps: [&Step; 6] = [
        &|m| append_acked(wal, m, 0, 10),
        &|m| append_batch(wal, m, 10, 6),
        &|m| checkpoint(wal, m),
        &|m| append_acked(wal, m, 16, 10),
        &|m| checkpoint(wal, m),
        &|m| append_batch(wal, m, 26, 8),
    ];
    for step in steps {
        if let Err(e) = step(model) {
            // Poisoned: every later append fails, naming the first failure; reads go on.
            if wal.poisoned().is_some() {
                let later = wal.append(b"after the failure").unwrap_err();
                let WalError::Poisoned { first } = &later else { panic!("{later}") };
                assert!(later.to_string().contains("poisoned"), "{later}");
                assert!(later.to_string().contains(first.op), "{later}");
                assert!(
                    wal.replay(tessera_wal::Lsn::FIRST).is_ok() || !wal.checkpoints().is_empty()
                );
            }
            return Some(e);
        }
    }
    None
}

fn check_after_fault(fs: &SimFs, mut model: Model, crash: Option<CrashMode>, context: &str) {
    if let Some(mode) = crash {
        fs.crash(mode);
    }
    let opened = open(fs, &small_options()).unwrap_or_else(|e| panic!("{context}: open: {e}"));
    model.check_recovered(&opened).unwrap_or_else(|e| panic!("{context}: {e}"));
    append_acked(&opened.wal, &mut model, 500, 3).unwrap_or_else(|e| panic!("{context}: {e}"));
    drop(opened);
    // What the reopened log acknowledged survives a power loss too.
    fs.crash(CrashMode::DropUnsynced);
    let opened = open(fs, &small_options()).unwrap_or_else(|e| panic!("{context}: open: {e}"));
    model.check_recovered(&opened).unwrap_or_else(|e| panic!("{context}: after crash: {e}"));
}

#[test]
fn enospc_at_any_write_poisons_the_log_and_loses_nothing_acknowledged() {
    let dry = SimFs::new(0);
    assert!(workload(&dry, &mut Model::default()).is_none());
    for write in 0..dry.write_calls() {
        for crash in
            [None, Some(CrashMode::DropUnsynced), Some(CrashMode::KeepRandom { seed: write })]
        {
            let fs = SimFs::new(write);
            fs.enospc_at_write(write);
            let mut model = Model::default();
            let error = workload(&fs, &mut model).unwrap_or_else(|| panic!("write {write} failed"));
            let text = error.to_string();
            assert!(text.contains("No space left") || text.contains("poisoned"), "{text}");
            check_after_fault(&fs, model, crash, &format!("ENOSPC at write {write}, {crash:?}"));
        }
    }
}

#[test]
fn eio_at_any_fsync_poisons_the_log_and_loses_nothing_acknowledged() {
    let dry = SimFs::new(0);
    assert!(workload(&dry, &mut Model::default()).is_none());
    for sync in 0..dry.sync_calls() {
        for crash in
            [None, Some(CrashMode::DropUnsynced), Some(CrashMode::KeepRandom { seed: sync })]
        {
            let fs = SimFs::new(sync);
            fs.eio_at_sync(sync);
            let mut model = Model::default();
            let error = workload(&fs, &mut model).unwrap_or_else(|| panic!("sync {sync} failed"));
            let text = error.to_string();
            assert!(text.contains("Input/output error") || text.contains("poisoned"), "{text}");
            check_after_fault(&fs, model, crash, &format!("EIO at sync {sync}, {crash:?}"));
        }
    }
}

#[test]
fn a_failed_fsync_is_never_retried_and_waiters_are_woken_with_the_error() {
    let fs = SimFs::new(3);
    let wal = std::sync::Arc::new(open(&fs, &small_options()).unwrap().wal);
    wal.append_durable(b"first").unwrap();
    let syncs = fs.sync_calls();
    fs.eio_at_sync(syncs);
    let waiters: Vec<_> = (0..8)
        .map(|i| {
            let wal = std::sync::Arc::clone(&wal);
            std::thread::spawn(move || wal.append_durable(format!("record {i}").as_bytes()))
        })
        .collect();
    for waiter in waiters {
        assert!(waiter.join().unwrap().is_err(), "no waiter is acknowledged after EIO");
    }
    assert_eq!(fs.sync_calls(), syncs + 1, "exactly one fsync, never retried");
    let first = wal.poisoned().unwrap();
    assert_eq!(first.op, "sync_data");
    assert_eq!(first.source.raw_os_error(), Some(libc::EIO));
}
