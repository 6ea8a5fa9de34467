//! Damage on disk: the last segment truncated at every byte offset, every bit flipped in the
//! last records and in records before the torn window, damaged headers. Each case is either
//! recovered correctly (a torn tail: the whole frames before it) or reported as corruption at
//! the damaged frame's offset; never a panic, never a wrong record. Then repair.

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

use common::*;
use tessera_wal::{
    Corruption, CrashMode, FRAME_HEADER_BYTES, FsFile, Lsn, OpenMode, SEGMENT_HEADER_BYTES, SimFs,
    WalError, WalOptions,
};

/// Options whose segments hold everything these tests write.
fn one_segment() -> WalOptions {
    WalOptions { segment_bytes: 16 << 10, ..small_options() }
}

fn frame_bytes(payload: usize) -> u64 {
    (FRAME_HEADER_BYTES + payload).next_multiple_of(8) as u64
}

/// A log of batches (record counts), everything in one segment. Returns the model and each
/// LSN's frame start and end offsets.
fn build(fs: &SimFs, batches: &[u64]) -> (Model, Vec<(u64, u64)>) {
    let mut model = Model::default();
    let opened = open(fs, &one_segment()).unwrap();
    let mut n = 0;
    for &count in batches {
        append_batch(&opened.wal, &mut model, n, count).unwrap();
        n += count;
    }
    let mut offset = SEGMENT_HEADER_BYTES as u64;
    let frames = model
        .appended
        .values()
        .map(|bytes| {
            let start = offset;
            offset += frame_bytes(bytes.len());
            (start, offset)
        })
        .collect();
    (model, frames)
}

fn segment_path(lsn: u64) -> PathBuf {
    Path::new(DIR).join(format!("{lsn:020}.wal"))
}

fn durable_write(fs: &SimFs, path: &Path, change: impl FnOnce(&dyn FsFile)) {
    let file = fs.open_for_test(path);
    change(&*file);
    file.sync_data().unwrap();
}

trait OpenForTest {
    fn open_for_test(&self, path: &Path) -> Box<dyn FsFile>;
}

impl OpenForTest for SimFs {
    fn open_for_test(&self, path: &Path) -> Box<dyn FsFile> {
        tessera_wal::Fs::open(self, path, OpenMode::ReadWrite).unwrap()
    }
}

fn flip(fs: &SimFs, path: &Path, bit: u64) {
    durable_write(fs, path, |file| {
        let mut byte = [0u8];
        file.read_exact_at(&mut byte, bit / 8).unwrap();
        byte[0] ^= 1 << (bit % 8);
        file.write_all_at(&byte, bit / 8).unwrap();
    });
}

fn expect_corrupt_at(result: Result<(), WalError>, path: &Path, offset: u64, context: &str) {
    match result {
        Err(WalError::Corrupt { path: p, offset_bytes, reason }) => {
            assert_eq!((p.as_path(), offset_bytes), (path, offset), "{context}: {reason}");
        }
        other => panic!("{context}: expected corruption at {offset}, got {other:?}"),
    }
}

const BATCHES: [u64; 5] = [3, 4, 2, 3, 3];

#[test]
fn truncating_the_last_segment_at_every_offset_keeps_the_whole_frames_before_the_cut() {
    let (_, frames) = build(&SimFs::new(0), &BATCHES);
    let data_end = frames.last().unwrap().1;
    let path = segment_path(1);
    for cut in 0..=data_end {
        let fs = SimFs::new(0);
        let (mut model, _) = build(&fs, &BATCHES);
        durable_write(&fs, &path, |file| file.set_len(cut).unwrap());
        let context = format!("cut at {cut}");
        let opened = open(&fs, &one_segment());
        if cut < SEGMENT_HEADER_BYTES as u64 {
            expect_corrupt_at(opened.map(drop), &path, 0, &context);
            continue;
        }
        let opened = opened.unwrap_or_else(|e| panic!("{context}: {e}"));
        let whole = frames.iter().filter(|(_, end)| *end <= cut).count() as u64;
        model.acked = Lsn(whole);
        assert_eq!(model.check_recovered(&opened), Ok(Lsn(whole)), "{context}");
        let at_boundary = cut == SEGMENT_HEADER_BYTES as u64 || frames.iter().any(|f| f.1 == cut);
        assert_eq!(opened.report.torn_tail.is_none(), at_boundary, "{context}");
    }
}

#[test]
fn flipping_any_bit_of_the_last_records_recovers_the_torn_batch_or_reports_its_offset() {
    let (_, frames) = build(&SimFs::new(0), &BATCHES);
    let path = segment_path(1);
    let last_batch_first = BATCHES[..BATCHES.len() - 1].iter().sum::<u64>(); // index of its first frame
    let second_last_first = last_batch_first - BATCHES[BATCHES.len() - 2];
    for (index, &(start, end)) in frames.iter().enumerate().skip(second_last_first as usize) {
        for bit in start * 8..end * 8 {
            let fs = SimFs::new(0);
            let (mut model, _) = build(&fs, &BATCHES);
            flip(&fs, &path, bit);
            let context = format!("lsn {} bit {bit}", index + 1);
            let opened = open(&fs, &one_segment());
            if index as u64 >= last_batch_first {
                // The final batch: indistinguishable from a torn write, so cut there.
                let opened = opened.unwrap_or_else(|e| panic!("{context}: {e}"));
                let torn = opened.report.torn_tail.clone().unwrap();
                assert_eq!(
                    (torn.offset_bytes, torn.lsn),
                    (start, Lsn(index as u64 + 1)),
                    "{context}"
                );
                model.acked = Lsn(index as u64);
                assert_eq!(model.check_recovered(&opened), Ok(Lsn(index as u64)), "{context}");
            } else {
                // A later batch was written after this one was synced: corruption.
                expect_corrupt_at(opened.map(drop), &path, start, &context);
            }
        }
    }
}

#[test]
fn flipping_any_bit_before_the_torn_window_is_corruption_at_its_offset() {
    let batches = [2, 6, 6, 6, 6];
    let (_, frames) = build(&SimFs::new(0), &batches);
    let path = segment_path(1);
    let (start, end) = frames[1];
    for bit in start * 8..end * 8 {
        let fs = SimFs::new(0);
        build(&fs, &batches);
        flip(&fs, &path, bit);
        let result = open(&fs, &one_segment()).map(drop);
        expect_corrupt_at(result, &path, start, &format!("bit {bit}"));
    }
}

#[test]
fn flipping_any_bit_of_a_sealed_segment_fails_open_at_its_offset() {
    let fs = SimFs::new(0);
    let opened = open(&fs, &small_options()).unwrap();
    append_acked(&opened.wal, &mut Model::default(), 0, 60).unwrap();
    let segments = opened.wal.segments();
    assert!(segments.len() > 2);
    drop(opened);
    let sealed = &segments[1].path;
    let first_frame = (
        SEGMENT_HEADER_BYTES as u64,
        SEGMENT_HEADER_BYTES as u64 + frame_bytes(record(segments[1].first_lsn.0 - 1).len()),
    );
    for bit in 0..first_frame.1 * 8 {
        let fs = SimFs::new(0);
        let opened = open(&fs, &small_options()).unwrap();
        append_acked(&opened.wal, &mut Model::default(), 0, 60).unwrap();
        drop(opened);
        flip(&fs, sealed, bit);
        let context = format!("bit {bit}");
        let offset = if bit < SEGMENT_HEADER_BYTES as u64 * 8 { 0 } else { first_frame.0 };
        expect_corrupt_at(open(&fs, &small_options()).map(drop), sealed, offset, &context);
    }
}

#[test]
fn damage_opening_a_full_batch_with_a_batch_after_the_window_is_corruption() {
    // Four frames of 128 bytes fill a 512-byte batch exactly: the next batch starts right at
    // the end of the torn window of the first frame, so no frame inside the window proves the
    // damage was synced; only the data beyond the window does.
    let fs = SimFs::new(0);
    let opened = open(&fs, &one_segment()).unwrap();
    let payload = 128 - FRAME_HEADER_BYTES;
    for lsn in 1..=4 {
        opened.wal.append(&vec![lsn as u8; payload]).unwrap();
    }
    opened.wal.sync().unwrap();
    opened.wal.append_durable(b"next batch").unwrap();
    drop(opened);
    let path = segment_path(1);
    flip(&fs, &path, (SEGMENT_HEADER_BYTES as u64 + 40) * 8);
    match open(&fs, &one_segment()).map(drop) {
        Err(WalError::Corrupt {
            path: p,
            offset_bytes: 32,
            reason: Corruption::BeyondTornWindow { data_offset_bytes: 544, .. },
        }) if p == path => {}
        other => panic!("expected corruption beyond the window at 32, got {other:?}"),
    }
}

#[test]
fn a_torn_tail_is_zeroed_so_its_valid_frames_never_come_back() {
    let fs = SimFs::new(0);
    let (mut model, frames) = build(&fs, &[1, 2]);
    let path = segment_path(1);
    // Damage the first frame of the last batch: torn, and the valid frame after it too.
    flip(&fs, &path, frames[1].0 * 8 + 8 * 30);
    let opened = open(&fs, &one_segment()).unwrap();
    assert_eq!(opened.report.torn_tail.as_ref().map(|t| t.lsn), Some(Lsn(2)));
    model.acked = Lsn(1);
    model.check_recovered(&opened).unwrap();
    // Append a record the size of the torn one: it takes LSN 2 and ends where the torn one
    // ended, right where the old (valid) frame of LSN 3 began.
    let same_size = vec![0xab; record(1).len()];
    let lsn = opened.wal.append_durable(&same_size).unwrap();
    assert_eq!(lsn, Lsn(2));
    model.appended.insert(lsn, same_size);
    model.ack(lsn);
    drop(opened);
    fs.crash(CrashMode::DropUnsynced);
    let opened = open(&fs, &one_segment()).unwrap();
    assert_eq!(model.check_recovered(&opened), Ok(Lsn(2)), "the old LSN 3 must not return");
}

#[test]
fn a_damaged_header_of_any_segment_fails_open_at_offset_zero() {
    for segment in 0..3 {
        for bit in 0..SEGMENT_HEADER_BYTES as u64 * 8 {
            let fs = SimFs::new(0);
            let opened = open(&fs, &small_options()).unwrap();
            append_acked(&opened.wal, &mut Model::default(), 0, 60).unwrap();
            assert!(opened.wal.segments().len() > 3);
            let path = opened.wal.segments()[segment].path.clone();
            drop(opened);
            flip(&fs, &path, bit);
            expect_corrupt_at(
                open(&fs, &small_options()).map(drop),
                &path,
                0,
                &format!("bit {bit}"),
            );
        }
    }
}

#[test]
fn repair_cuts_at_the_corruption_keeps_a_copy_and_says_what_it_removed() {
    let fs = SimFs::new(0);
    let mut model = Model::default();
    let opened = open(&fs, &small_options()).unwrap();
    append_acked(&opened.wal, &mut model, 0, 80).unwrap();
    let segments = opened.wal.segments();
    assert!(segments.len() > 4);
    drop(opened);
    let damaged = &segments[2];
    let frame_start =
        SEGMENT_HEADER_BYTES as u64 + frame_bytes(record(damaged.first_lsn.0 - 1).len());
    flip(&fs, &damaged.path, (frame_start + 30) * 8);
    let before = read(&fs, &damaged.path);
    expect_corrupt_at(open(&fs, &small_options()).map(drop), &damaged.path, frame_start, "open");

    let report = tessera_wal::repair(&fs.shared(), Path::new(DIR)).unwrap();
    let cut = &report.cuts[0];
    assert_eq!((&cut.path, cut.offset_bytes), (&damaged.path, frame_start));
    assert_eq!(cut.first_lsn_removed, damaged.first_lsn.next());
    assert_eq!(cut.bytes_removed, before.len() as u64 - frame_start);
    assert!(matches!(cut.reason, Corruption::FrameCrc { .. }));
    assert_eq!(read(&fs, &cut.kept_copy), before, "the copy holds the segment as it was");
    assert_eq!(report.cuts.len(), 1 + segments.len() - 3, "later segments are set aside");
    for (aside, segment) in report.cuts[1..].iter().zip(&segments[3..]) {
        assert_eq!((&aside.path, aside.offset_bytes), (&segment.path, 0));
    }

    let opened = open(&fs, &small_options()).unwrap();
    model.acked = damaged.first_lsn;
    assert_eq!(model.check_recovered(&opened), Ok(damaged.first_lsn));
    append_acked(&opened.wal, &mut model, 100, 3).unwrap();
    assert!(tessera_wal::repair(&fs.shared(), Path::new(DIR)).unwrap().cuts.is_empty());
}

#[test]
fn repair_cuts_damage_before_the_torn_window_of_the_last_segment() {
    let fs = SimFs::new(0);
    let (mut model, frames) = build(&fs, &[2, 6, 6, 6, 6]);
    let path = segment_path(1);
    flip(&fs, &path, (frames[1].0 + 26) * 8);
    assert!(open(&fs, &one_segment()).is_err());
    let report = tessera_wal::repair(&fs.shared(), Path::new(DIR)).unwrap();
    assert_eq!(report.cuts.len(), 1);
    assert_eq!(
        (report.cuts[0].offset_bytes, report.cuts[0].first_lsn_removed),
        (frames[1].0, Lsn(2))
    );
    let opened = open(&fs, &one_segment()).unwrap();
    model.acked = Lsn(1);
    assert_eq!(model.check_recovered(&opened), Ok(Lsn(1)));
}

fn read(fs: &SimFs, path: &Path) -> Vec<u8> {
    let file = tessera_wal::Fs::open(fs, path, OpenMode::Read).unwrap();
    (*file.map().unwrap()).as_ref().to_vec()
}

#[test]
fn lsns_at_the_edge_of_u64_in_names_and_headers_are_refused_without_a_panic() {
    // A checkpoint whose name and header claim a huge LSN, with valid CRCs (docs/format.md §4).
    for lsn in [tessera_wal::LSN_MAX, tessera_wal::LSN_MAX + 1, u64::MAX - 1, u64::MAX] {
        let fs = SimFs::new(0);
        let opened = open(&fs, &small_options()).unwrap();
        append_acked(&opened.wal, &mut Model::default(), 0, 3).unwrap();
        drop(opened);
        let blob = b"forged";
        let mut header = [0u8; 40];
        header[0..8].copy_from_slice(b"tssr.ckp");
        header[8..12].copy_from_slice(&1u32.to_le_bytes());
        header[16..24].copy_from_slice(&lsn.to_le_bytes());
        header[24..32].copy_from_slice(&(blob.len() as u64).to_le_bytes());
        header[32..36].copy_from_slice(&crc32(blob).to_le_bytes());
        let crc = crc32(&header[..36]);
        header[36..40].copy_from_slice(&crc.to_le_bytes());
        let path = Path::new(DIR).join(format!("{lsn:020}.ckpt"));
        let file = tessera_wal::Fs::open(&fs, &path, OpenMode::CreateNew).unwrap();
        file.write_all_at(&header, 0).unwrap();
        file.write_all_at(blob, 40).unwrap();
        file.sync_data().unwrap();
        tessera_wal::Fs::sync_dir(&fs, Path::new(DIR)).unwrap();
        match open(&fs, &small_options()) {
            // Beyond LSN_MAX the name is not a checkpoint's: ignored, the log opens as it was.
            Ok(opened) => {
                assert!(lsn > tessera_wal::LSN_MAX, "lsn {lsn}");
                assert!(opened.checkpoint.is_none());
                assert_eq!(opened.wal.lsn_durable(), Lsn(3));
            }
            // At LSN_MAX it is one, and the log is far behind it: a clear error.
            Err(e) => {
                assert_eq!(lsn, tessera_wal::LSN_MAX, "{e}");
                assert!(
                    matches!(e.corruption(), Some((_, _, Corruption::LogBehindCheckpoint { .. }))),
                    "{e}"
                );
            }
        }
    }
}

fn crc32(bytes: &[u8]) -> u32 {
    // CRC-32 (IEEE), bit by bit: an independent check of what docs/format.md specifies.
    let mut crc = !0u32;
    for &byte in bytes {
        crc ^= u32::from(byte);
        for _ in 0..8 {
            crc = if crc & 1 == 1 { (crc >> 1) ^ 0xEDB8_8320 } else { crc >> 1 };
        }
    }
    !crc
}

#[test]
fn a_missing_middle_segment_fails_open_and_repair_sets_the_rest_aside() {
    let fs = SimFs::new(0);
    let mut model = Model::default();
    let opened = open(&fs, &small_options()).unwrap();
    append_acked(&opened.wal, &mut model, 0, 80).unwrap();
    let segments = opened.wal.segments();
    drop(opened);
    assert!(segments.len() > 4);
    tessera_wal::Fs::remove(&fs, &segments[2].path).unwrap();
    tessera_wal::Fs::sync_dir(&fs, Path::new(DIR)).unwrap();
    let error = open(&fs, &small_options()).unwrap_err();
    let (path, _, reason) = error.corruption().unwrap();
    assert_eq!(path, segments[3].path);
    assert!(matches!(reason, Corruption::SegmentGap { .. }), "{reason}");

    let report = tessera_wal::repair(&fs.shared(), Path::new(DIR)).unwrap();
    assert_eq!(report.cuts[0].path, segments[3].path);
    assert_eq!(report.cuts[0].offset_bytes, 0, "a segment past a gap is set aside whole");
    let opened = open(&fs, &small_options()).unwrap();
    model.acked = segments[2].first_lsn.prev();
    assert_eq!(model.check_recovered(&opened), Ok(segments[2].first_lsn.prev()));
}
