//! Random workloads from 1 to 16 threads, the power cut at a random I/O call, a random subset of
//! unsynced sectors kept: the reopened log holds a prefix of the appended records containing
//! every acknowledged one, and nothing that was never appended. `PROPTEST_CASES` scales it.

#![allow(
    missing_docs,
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::indexing_slicing,
    clippy::panic,
    clippy::cast_possible_truncation
)]

mod common;

use std::sync::Arc;

use common::*;
use parking_lot::Mutex;
use proptest::prelude::*;
use tessera_wal::{CrashMode, SimFs, WalOptions};

fn options() -> WalOptions {
    WalOptions {
        segment_bytes: 8192,
        batch_bytes_max: 1024,
        pending_bytes_max: 4096,
        ..small_options()
    }
}

/// Record `i` of thread `t`: its size drawn from `sizes`, its bytes naming it.
fn thread_record(sizes: u64, t: u64, i: u64) -> Vec<u8> {
    let len = 1 + ((sizes ^ (t << 32) ^ i).wrapping_mul(0x9E37_79B9_7F4A_7C15) >> 55) as usize;
    (0..len).map(|k| (t * 97 + i * 13 + k as u64) as u8).collect()
}

fn run(threads: u64, per_thread: u64, sizes: u64, wait_every: u64, call: u64, crash_seed: u64) {
    // The simulator's own draws (EIO, ENOSPC) stay apart from the crash's.
    let fs = SimFs::new(crash_seed.rotate_left(17));
    fs.power_off_at_call(call);
    let model = Arc::new(Mutex::new(Model::default()));
    if let Ok(opened) = open(&fs, &options()) {
        let wal = Arc::new(opened.wal);
        let workers: Vec<_> = (0..threads)
            .map(|t| {
                let (wal, model) = (Arc::clone(&wal), Arc::clone(&model));
                std::thread::spawn(move || {
                    for i in 0..per_thread {
                        let bytes = thread_record(sizes, t, i);
                        let Ok(lsn) = wal.append(&bytes) else { return };
                        model.lock().appended.insert(lsn, bytes);
                        let last = lsn;
                        if (i + 1) % wait_every == 0 || i + 1 == per_thread {
                            if wal.wait_durable(last).is_err() {
                                return;
                            }
                            model.lock().ack(last);
                        }
                    }
                })
            })
            .collect();
        for worker in workers {
            worker.join().unwrap();
        }
    }
    let mode = if crash_seed.is_multiple_of(5) {
        CrashMode::DropUnsynced
    } else {
        CrashMode::KeepRandom { seed: crash_seed }
    };
    fs.crash(mode);
    let mut model = model.lock().clone();
    let context = format!("call {call}, {mode:?}");
    let opened = open(&fs, &options()).unwrap_or_else(|e| panic!("{context}: open: {e}"));
    model.check_recovered(&opened).unwrap_or_else(|e| panic!("{context}: {e}"));
    append_acked(&opened.wal, &mut model, 1000, 2).unwrap();
    drop(opened);
    fs.crash(CrashMode::KeepRandom { seed: !crash_seed });
    let opened = open(&fs, &options()).unwrap();
    model.check_recovered(&opened).unwrap_or_else(|e| panic!("{context}: after new work: {e}"));
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(
        std::env::var("PROPTEST_CASES").ok().and_then(|s| s.parse().ok()).unwrap_or(256)
    ))]

    #[test]
    fn crash_at_a_random_call_keeps_a_prefix_with_every_acknowledged_record(
        threads in 1u64..=16,
        per_thread in 1u64..12,
        sizes in any::<u64>(),
        wait_every in 1u64..4,
        call in 0u64..500,
        crash_seed in any::<u64>(),
    ) {
        run(threads, per_thread, sizes, wait_every, call, crash_seed);
    }
}
