//! Logs written by format version 1, kept in `tests/fixtures/`, must open and replay in every
//! later build: a clean log (three segments, two checkpoints, one retirement), the same log
//! with a torn tail, and with a flipped bit in a sealed segment.
//!
//! The fixtures are written once, by this test with `TESSERA_REGENERATE_FIXTURES=1`, only when
//! the format version changes (and then as a new directory beside the old ones).

#![allow(
    missing_docs,
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::indexing_slicing,
    clippy::panic,
    clippy::cast_possible_truncation
)]

mod common;

use std::path::{Path, PathBuf};

use common::record;
use tessera_wal::{Corruption, Lsn, StdFs, Wal, WalError, WalOptions};

fn fixture(name: &str) -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures").join(name)
}

fn options() -> WalOptions {
    WalOptions {
        segment_bytes: 1024,
        batch_bytes_max: 256,
        pending_bytes_max: 1024,
        preallocate: false,
        salt_seed: Some(1),
    }
}

const RECORDS: u64 = 24;

/// Opens a copy of a fixture (opening may zero a torn tail: the original stays as it was).
fn open_copy(name: &str) -> (tempfile::TempDir, Result<tessera_wal::Opened, WalError>) {
    static REGENERATE: std::sync::Once = std::sync::Once::new();
    REGENERATE.call_once(|| {
        if std::env::var_os("TESSERA_REGENERATE_FIXTURES").is_some() {
            regenerate();
        }
    });
    let copy = tempfile::tempdir().unwrap();
    for entry in std::fs::read_dir(fixture(name)).unwrap() {
        let entry = entry.unwrap();
        std::fs::copy(entry.path(), copy.path().join(entry.file_name())).unwrap();
    }
    let opened = Wal::open(StdFs::shared(), copy.path(), options());
    (copy, opened)
}

fn write_v1(dir: &Path) {
    let _ = std::fs::remove_dir_all(dir);
    let wal = Wal::open(StdFs::shared(), dir, options()).unwrap().wal;
    for n in 0..RECORDS {
        wal.append_durable(&record(n)).unwrap();
        if n == 9 || n == 17 {
            let lsn = Lsn(n + 1);
            wal.write_checkpoint(lsn, format!("state after lsn {lsn}").as_bytes()).unwrap();
            wal.retire_segments(|_| Ok(())).unwrap();
        }
    }
}

fn regenerate() {
    let clean = fixture("v1-clean");
    write_v1(&clean);
    let torn = fixture("v1-torn-tail");
    write_v1(&torn);
    let last = last_segment(&torn);
    let mut bytes = std::fs::read(&last).unwrap();
    bytes.extend_from_slice(&[0xee; 40]);
    std::fs::write(&last, bytes).unwrap();
    let corrupt = fixture("v1-corrupt-sealed");
    write_v1(&corrupt);
    let sealed = segments(&corrupt)[0].clone();
    let mut bytes = std::fs::read(&sealed).unwrap();
    bytes[32 + 30] ^= 0x01;
    std::fs::write(&sealed, bytes).unwrap();
}

fn segments(dir: &Path) -> Vec<PathBuf> {
    let mut paths: Vec<PathBuf> = std::fs::read_dir(dir)
        .unwrap()
        .map(|e| e.unwrap().path())
        .filter(|p| p.extension().is_some_and(|e| e == "wal"))
        .collect();
    paths.sort();
    paths
}

fn last_segment(dir: &Path) -> PathBuf {
    segments(dir).pop().unwrap()
}

#[test]
fn version_1_logs_open_and_replay() {
    let (_dir, opened) = open_copy("v1-clean");
    let opened = opened.unwrap();
    let checkpoint = opened.checkpoint.as_ref().unwrap();
    assert_eq!(checkpoint.lsn, Lsn(18));
    assert_eq!(checkpoint.blob.as_slice(), b"state after lsn 18");
    assert_eq!(opened.report.torn_tail, None);
    let first = opened.wal.segments()[0].first_lsn;
    let records: Vec<_> = opened.wal.replay(first).unwrap().collect();
    assert!(first > Lsn(1), "the fixture retired its oldest segments");
    for (i, r) in records.into_iter().enumerate() {
        let r = r.unwrap();
        assert_eq!(r.lsn, Lsn(first.0 + i as u64));
        assert_eq!(r.bytes.as_slice(), record(r.lsn.0 - 1));
    }
    assert_eq!(opened.wal.lsn_durable(), Lsn(RECORDS));
    assert_eq!(opened.wal.checkpoints(), vec![Lsn(10), Lsn(18)]);
}

#[test]
fn a_version_1_torn_tail_is_cut_and_reported() {
    let (_dir, opened) = open_copy("v1-torn-tail");
    let opened = opened.unwrap();
    let torn = opened.report.torn_tail.unwrap();
    assert_eq!((torn.lsn, torn.bytes), (Lsn(RECORDS + 1), 40));
    assert_eq!(opened.wal.lsn_durable(), Lsn(RECORDS));
}

#[test]
fn a_version_1_flipped_bit_in_a_sealed_segment_is_reported_with_its_offset() {
    let (_dir, opened) = open_copy("v1-corrupt-sealed");
    let error = opened.unwrap_err();
    let sealed = segments(&fixture("v1-corrupt-sealed")).remove(0);
    let (path, offset, reason) = error.corruption().unwrap();
    assert_eq!((path.file_name(), offset), (sealed.file_name(), 32));
    assert!(matches!(reason, Corruption::FrameCrc { .. }), "{reason}");
}
