//! Checkpoints and retirement: the newest valid checkpoint is loaded and a damaged one falls
//! back to the previous (whose records are still there); segments leave only after two
//! checkpoints cover them and the hook has taken them; the log never ends before its
//! checkpoint.

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
use tessera_wal::{Corruption, Lsn, OpenMode, SimFs, WalError};

fn checkpoint_path(lsn: Lsn) -> std::path::PathBuf {
    Path::new(DIR).join(format!("{:020}.ckpt", lsn.0))
}

#[test]
fn the_newest_checkpoint_is_loaded_and_replay_continues_after_it() {
    let fs = SimFs::new(1);
    let mut model = Model::default();
    let opened = open(&fs, &small_options()).unwrap();
    append_acked(&opened.wal, &mut model, 0, 20).unwrap();
    checkpoint(&opened.wal, &mut model).unwrap();
    append_acked(&opened.wal, &mut model, 20, 5).unwrap();
    drop(opened);
    let opened = open(&fs, &small_options()).unwrap();
    let cp = opened.checkpoint.as_ref().unwrap();
    assert_eq!((cp.lsn, cp.blob.as_slice()), (Lsn(20), blob(Lsn(20)).as_slice()));
    assert_eq!(model.check_recovered(&opened), Ok(Lsn(25)));
}

#[test]
fn a_damaged_checkpoint_falls_back_to_the_previous_one_whose_records_remain() {
    let fs = SimFs::new(2);
    let mut model = Model::default();
    let opened = open(&fs, &small_options()).unwrap();
    for round in 0..4 {
        append_acked(&opened.wal, &mut model, round * 20, 20).unwrap();
        checkpoint(&opened.wal, &mut model).unwrap();
    }
    assert_eq!(opened.wal.checkpoints(), vec![Lsn(60), Lsn(80)], "two checkpoints are kept");
    drop(opened);
    let newest = checkpoint_path(Lsn(80));
    let file = tessera_wal::Fs::open(&fs, &newest, OpenMode::ReadWrite).unwrap();
    file.write_all_at(b"!", 45).unwrap();
    file.sync_data().unwrap();

    let opened = open(&fs, &small_options()).unwrap();
    assert_eq!(opened.checkpoint.as_ref().unwrap().lsn, Lsn(60));
    let skipped = &opened.report.skipped_checkpoints;
    assert_eq!(skipped.len(), 1);
    assert_eq!((skipped[0].path.as_path(), skipped[0].offset_bytes), (newest.as_path(), 40));
    assert!(matches!(skipped[0].reason, Corruption::BlobCrc { .. }));
    assert!(opened.report.set_aside[0].to_string_lossy().ends_with(".ckpt.broken"));
    assert_eq!(model.check_recovered(&opened), Ok(Lsn(80)), "replay from 61 still works");
    // The log goes on: a new checkpoint replaces the damaged one.
    append_acked(&opened.wal, &mut model, 80, 3).unwrap();
    checkpoint(&opened.wal, &mut model).unwrap();
    assert_eq!(opened.wal.checkpoints(), vec![Lsn(60), Lsn(83)]);
}

#[test]
fn segments_retire_only_below_the_older_of_two_checkpoints_after_the_hook() {
    let fs = SimFs::new(3);
    let mut model = Model::default();
    let opened = open(&fs, &small_options()).unwrap();
    let wal = &opened.wal;
    append_acked(wal, &mut model, 0, 40).unwrap();
    wal.write_checkpoint(Lsn(40), &blob(Lsn(40))).unwrap();
    let offered = wal.retire_segments(|_| panic!("one checkpoint retires nothing")).unwrap();
    assert!(offered.is_empty());

    append_acked(wal, &mut model, 40, 40).unwrap();
    wal.write_checkpoint(Lsn(80), &blob(Lsn(80))).unwrap();
    let before = wal.segments();
    let mut seen = Vec::new();
    let retired = wal
        .retire_segments(|segment| {
            let lsns: Vec<Lsn> = segment.records().map(|r| r.unwrap().lsn).collect();
            let expected: Vec<Lsn> =
                (segment.first_lsn().0..=segment.last_lsn().0).map(Lsn).collect();
            assert_eq!(lsns, expected, "the hook sees every record of the segment");
            assert!(segment.last_lsn() <= Lsn(40), "only what both checkpoints cover");
            seen.extend(lsns);
            Ok(())
        })
        .unwrap();
    assert!(!retired.is_empty());
    assert_eq!(seen.first(), Some(&Lsn(1)));
    assert_eq!(wal.segments(), before[retired.len()..]);
    for segment in &retired {
        assert!(tessera_wal::Fs::open(&fs, &segment.path, OpenMode::Read).is_err(), "removed");
    }
    let oldest = wal.segments()[0].first_lsn;
    assert!(
        matches!(wal.replay(Lsn(1)), Err(WalError::Retired { lsn: Lsn(1), oldest: o }) if o == oldest)
    );
    assert!(oldest <= Lsn(41), "the fallback checkpoint's records remain");
}

#[test]
fn a_failing_hook_keeps_the_segment() {
    let fs = SimFs::new(4);
    let opened = open(&fs, &small_options()).unwrap();
    append_acked(&opened.wal, &mut Model::default(), 0, 60).unwrap();
    opened.wal.write_checkpoint(Lsn(30), b"a").unwrap();
    opened.wal.write_checkpoint(Lsn(60), b"b").unwrap();
    let before = opened.wal.segments();
    let err = opened.wal.retire_segments(|_| Err("journal is full".into())).unwrap_err();
    assert!(matches!(&err, WalError::RetireHook { path, .. } if *path == before[0].path));
    assert!(
        err.to_string().contains("journal is full")
            || format!("{err:?}").contains("journal is full")
    );
    assert_eq!(opened.wal.segments(), before);
}

#[test]
fn a_log_that_ends_before_its_checkpoint_is_reported() {
    let fs = SimFs::new(5);
    let opened = open(&fs, &small_options()).unwrap();
    append_acked(&opened.wal, &mut Model::default(), 0, 10).unwrap();
    opened.wal.write_checkpoint(Lsn(10), b"state").unwrap();
    let last = opened.wal.segments().last().unwrap().path.clone();
    drop(opened);
    let file = tessera_wal::Fs::open(&fs, &last, OpenMode::ReadWrite).unwrap();
    file.set_len(tessera_wal::SEGMENT_HEADER_BYTES as u64 + 8).unwrap();
    file.sync_data().unwrap();
    let err = open(&fs, &small_options()).unwrap_err();
    let (path, _, reason) = err.corruption().unwrap();
    assert_eq!(path, last);
    assert!(
        matches!(reason, Corruption::LogBehindCheckpoint { checkpoint: Lsn(10), .. }),
        "{reason}"
    );
}

#[test]
fn a_checkpoint_interrupted_at_any_call_leaves_the_previous_one_or_the_new_one() {
    let dry = SimFs::new(0);
    let opened = open(&dry, &small_options()).unwrap();
    append_acked(&opened.wal, &mut Model::default(), 0, 10).unwrap();
    opened.wal.write_checkpoint(Lsn(5), b"five").unwrap();
    let before = dry.io_calls();
    opened.wal.write_checkpoint(Lsn(10), b"ten").unwrap();
    let after = dry.io_calls();
    drop(opened);
    for call in before..after {
        for mode in [
            tessera_wal::CrashMode::DropUnsynced,
            tessera_wal::CrashMode::KeepRandom { seed: call },
        ] {
            let fs = SimFs::new(0);
            let opened = open(&fs, &small_options()).unwrap();
            append_acked(&opened.wal, &mut Model::default(), 0, 10).unwrap();
            opened.wal.write_checkpoint(Lsn(5), b"five").unwrap();
            fs.power_off_at_call(call);
            let result = opened.wal.write_checkpoint(Lsn(10), b"ten");
            drop(opened);
            fs.crash(mode);
            let opened = open(&fs, &small_options()).unwrap();
            let cp = opened.checkpoint.unwrap();
            match cp.lsn {
                Lsn(5) => assert_eq!(cp.blob.as_slice(), b"five"),
                Lsn(10) => assert_eq!(cp.blob.as_slice(), b"ten"),
                other => panic!("call {call}: checkpoint at {other}"),
            }
            if result.is_ok() {
                assert_eq!(cp.lsn, Lsn(10), "call {call}: an acknowledged checkpoint survives");
            }
            assert!(
                opened.report.skipped_checkpoints.is_empty(),
                "call {call}: {:?}",
                opened.report
            );
        }
    }
}
