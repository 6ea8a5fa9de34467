//! The log's everyday behaviour, on the simulated and the real file system: appends come back
//! from replay in order, segments rotate, reopening continues, group commit carries many
//! threads, bad input gets clear errors.

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
use tessera_wal::{Lsn, SimFs, Wal, WalError, WalOptions};

fn round_trip(open: impl Fn() -> tessera_wal::Opened) {
    let mut model = Model::default();
    {
        let opened = open();
        assert_eq!(opened.wal.lsn_durable(), Lsn::ZERO);
        append_acked(&opened.wal, &mut model, 0, 30).unwrap();
        append_batch(&opened.wal, &mut model, 30, 20).unwrap();
        assert!(opened.wal.segments().len() > 2, "small segments rotate");
        assert_eq!(replay_from(&opened.wal, Lsn(1)).unwrap().len(), 50);
    }
    let opened = open();
    assert_eq!(opened.report.torn_tail, None);
    assert_eq!(model.check_recovered(&opened).unwrap(), Lsn(50));
    append_acked(&opened.wal, &mut model, 50, 5).unwrap();
    drop(opened);
    assert_eq!(model.check_recovered(&open()).unwrap(), Lsn(55));
}

#[test]
fn appended_records_replay_in_order_across_rotation_and_reopen_sim() {
    let fs = SimFs::new(1);
    round_trip(|| open(&fs, &small_options()).unwrap());
}

#[test]
fn appended_records_replay_in_order_across_rotation_and_reopen_std() {
    let dir = tempfile::tempdir().unwrap();
    round_trip(|| open_std(dir.path(), &small_options()).unwrap());
}

#[test]
fn appended_records_survive_a_power_loss_once_acknowledged() {
    let fs = SimFs::new(2);
    let mut model = Model::default();
    let opened = open(&fs, &small_options()).unwrap();
    append_acked(&opened.wal, &mut model, 0, 40).unwrap();
    opened.wal.append(b"never waited for").unwrap();
    drop(opened);
    fs.crash(tessera_wal::CrashMode::DropUnsynced);
    let reopened = open(&fs, &small_options()).unwrap();
    assert_eq!(model.check_recovered(&reopened).unwrap(), Lsn(40));
}

#[test]
fn replay_starts_at_any_lsn() {
    let fs = SimFs::new(3);
    let opened = open(&fs, &small_options()).unwrap();
    append_acked(&opened.wal, &mut Model::default(), 0, 40).unwrap();
    for from in 1..=41 {
        let records = replay_from(&opened.wal, Lsn(from)).unwrap();
        assert_eq!(records.len() as u64, 41 - from);
        if let Some((lsn, bytes)) = records.first() {
            assert_eq!(*lsn, Lsn(from));
            assert_eq!(*bytes, record(from - 1));
        }
    }
}

#[test]
fn many_threads_share_batches_and_lose_nothing() {
    for (name, fs) in [("sim", Some(SimFs::new(4))), ("std", None)] {
        let dir = tempfile::tempdir().unwrap();
        let options = WalOptions {
            segment_bytes: 64 << 10,
            batch_bytes_max: 4096,
            pending_bytes_max: 16 << 10,
            ..small_options()
        };
        let reopen = || match &fs {
            Some(fs) => open(fs, &options).unwrap(),
            None => open_std(dir.path(), &options).unwrap(),
        };
        let wal = Arc::new(reopen().wal);
        let threads: Vec<_> = (0..16u64)
            .map(|t| {
                let wal = Arc::clone(&wal);
                std::thread::spawn(move || {
                    (0..50u64)
                        .map(|i| {
                            let bytes = record(t * 1000 + i);
                            (wal.append_durable(&bytes).unwrap(), bytes)
                        })
                        .collect::<Vec<_>>()
                })
            })
            .collect();
        let mut model = Model::default();
        for thread in threads {
            for (lsn, bytes) in thread.join().unwrap() {
                model.appended.insert(lsn, bytes);
                model.ack(lsn);
            }
        }
        assert_eq!(model.acked, Lsn(800), "{name}: LSNs are dense");
        let stats = wal.stats();
        assert_eq!(stats.records, 800, "{name}");
        assert!((1..=800).contains(&stats.batches), "{name}: {stats:?}");
        drop(wal);
        model.check_recovered(&reopen()).unwrap();
    }
}

#[test]
fn a_lone_writer_does_not_wait_for_company() {
    // One writer, each append waited for: every batch carries exactly one record, and each
    // wait returns as soon as its own batch is synced (no timer would let this finish quickly
    // with 200 round trips otherwise; the count of syncs proves one batch per record).
    let fs = SimFs::new(5);
    let opened = open(&fs, &small_options()).unwrap();
    let syncs_before = fs.sync_calls();
    append_acked(&opened.wal, &mut Model::default(), 0, 200).unwrap();
    let segments = opened.wal.segments().len() as u64;
    // One fdatasync per record, plus one per new segment (its header, before the rename).
    assert_eq!(fs.sync_calls() - syncs_before, 200 + segments - 1);
    let stats = opened.wal.stats();
    assert_eq!((stats.batches, stats.records), (200, 200));
    assert_eq!(stats.records_per_batch(), 1.0);
    let frame_bytes: u64 =
        (0..200u64).map(|i| tessera_wal::frame_bytes(record(i).len()) as u64).sum();
    assert_eq!(stats.bytes, frame_bytes, "the stats count every frame byte");
    assert!(stats.sync_time >= stats.sync_time_max);
}

#[test]
fn bad_input_gets_clear_errors() {
    let fs = SimFs::new(6);
    let wal = open(&fs, &small_options()).unwrap().wal;
    assert!(matches!(wal.append(b""), Err(WalError::EmptyRecord)));
    let max = wal.record_bytes_max();
    assert_eq!(max, 512 - 24);
    wal.append_durable(&vec![1; max]).unwrap();
    let err = wal.append(&vec![1; max + 1]).unwrap_err();
    assert!(
        matches!(err, WalError::RecordTooLarge { bytes, max_bytes } if bytes == max as u64 + 1 && max_bytes == max as u64)
    );
    assert!(err.to_string().contains("exceeds this log's limit"), "{err}");
    assert!(matches!(
        wal.wait_durable(Lsn(9)),
        Err(WalError::NotAppended { lsn: Lsn(9), last: Lsn(1) })
    ));
    let checkpoint_ahead = wal.write_checkpoint(Lsn(2), b"x").unwrap_err();
    assert!(matches!(checkpoint_ahead, WalError::CheckpointBeyondDurable { .. }));
    wal.write_checkpoint(Lsn(1), b"x").unwrap();
    assert!(matches!(wal.write_checkpoint(Lsn(1), b"y"), Err(WalError::CheckpointNotNewer { .. })));
}

#[test]
fn invalid_options_are_refused() {
    let fs = SimFs::new(7);
    for options in [
        WalOptions { batch_bytes_max: 100, ..small_options() },
        WalOptions { batch_bytes_max: 8, ..small_options() },
        WalOptions { segment_bytes: 500, ..small_options() },
        WalOptions { pending_bytes_max: 10, ..small_options() },
    ] {
        let err = Wal::open(fs.shared(), DIR, options).unwrap_err();
        assert!(matches!(err, WalError::InvalidOptions { .. }), "{err}");
    }
}

#[test]
fn changing_the_batch_bound_starts_a_new_segment() {
    let fs = SimFs::new(8);
    let mut model = Model::default();
    let opened = open(&fs, &small_options()).unwrap();
    append_acked(&opened.wal, &mut model, 0, 3).unwrap();
    let segments = opened.wal.segments().len();
    drop(opened);
    let larger = WalOptions { batch_bytes_max: 1024, ..small_options() };
    let opened = open(&fs, &larger).unwrap();
    append_acked(&opened.wal, &mut model, 3, 1).unwrap();
    assert_eq!(opened.wal.segments().len(), segments + 1);
    drop(opened);
    model.check_recovered(&open(&fs, &larger).unwrap()).unwrap();
}

#[test]
fn unpreallocated_segments_work_the_same() {
    let fs = SimFs::new(9);
    let options = WalOptions { preallocate: false, ..small_options() };
    let mut model = Model::default();
    let opened = open(&fs, &options).unwrap();
    append_acked(&opened.wal, &mut model, 0, 40).unwrap();
    drop(opened);
    fs.crash(tessera_wal::CrashMode::KeepRandom { seed: 3 });
    model.check_recovered(&open(&fs, &options).unwrap()).unwrap();
}

#[test]
fn a_log_in_new_nested_directories_survives_a_power_loss() {
    // `create_dir_all` may create several levels; each level's entry must reach the disk.
    let fs = SimFs::new(10);
    let mut model = Model::default();
    let opened = Wal::open(fs.shared(), "/srv/tessera/wal", small_options()).unwrap();
    append_acked(&opened.wal, &mut model, 0, 5).unwrap();
    drop(opened);
    fs.crash(tessera_wal::CrashMode::DropUnsynced);
    let opened = Wal::open(fs.shared(), "/srv/tessera/wal", small_options()).unwrap();
    assert_eq!(model.check_recovered(&opened), Ok(Lsn(5)));
}
