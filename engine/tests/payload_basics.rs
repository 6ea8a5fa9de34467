//! The payload store's everyday behaviour: ingest and read back (whole, by range, by seek),
//! digests and BadDigest, bad streams, limits, the empty payload, dedupe and reference counts,
//! verified reads and `verify`, compaction giving space back to the file system.

#![allow(
    missing_docs,
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::indexing_slicing,
    clippy::panic,
    clippy::cast_possible_truncation
)]

mod common;

use std::io::{self, Read, Seek, SeekFrom};
use std::path::Path;
use std::sync::Arc;

use common::*;
use tessera_engine::payload::{
    Checksum, ChecksumAlgorithm, ContentAddress, Expected, Location, PayloadError, PayloadOptions,
    PayloadStore,
};
use tessera_wal::{CrashMode, Fs, OpenMode, SimFs, StdFs};

fn sim() -> (SimFs, Arc<dyn Fs>) {
    let fs = SimFs::new(1);
    let shared = fs.shared();
    (fs, shared)
}

fn open(fs: &Arc<dyn Fs>) -> Harness {
    Harness::open(Arc::clone(fs), Path::new("/data"), &small_options()).unwrap()
}

#[test]
fn payloads_read_back_whole_by_range_and_by_seek_on_sim_and_std() {
    let dir = tempfile::tempdir().unwrap();
    for fs in [sim().1, StdFs::shared()] {
        let root = if format!("{fs:?}").contains("Sim") { Path::new("/data") } else { dir.path() };
        let h = Harness::open(Arc::clone(&fs), root, &small_options()).unwrap();
        let mut model = Model::default();
        let bytes = payload(1, 200_000);
        let address = h.put(&mut model, &bytes).unwrap();
        assert_eq!(h.read(&address).unwrap(), bytes);
        let mut part = Vec::new();
        h.store
            .reader(&address)
            .unwrap()
            .with_range(1000..1500)
            .unwrap()
            .read_to_end(&mut part)
            .unwrap();
        assert_eq!(part, bytes[1000..1500]);
        let mut reader = h.store.reader(&address).unwrap();
        reader.seek(SeekFrom::End(-10)).unwrap();
        let mut tail = Vec::new();
        reader.read_to_end(&mut tail).unwrap();
        assert_eq!(tail, bytes[bytes.len() - 10..]);
        let err = h.store.reader(&address).unwrap().with_range(200_000..200_010).unwrap_err();
        assert!(matches!(err, PayloadError::RangeNotSatisfiable { start: 200_000, len: 200_000 }));
        drop(h);
        let h = Harness::open(fs, root, &small_options()).unwrap();
        model.check(&h).unwrap();
    }
}

#[test]
fn an_ingest_returns_every_digest_asked_for_and_refuses_a_bad_one() {
    let (_, fs) = sim();
    let h = open(&fs);
    let bytes = b"123456789";
    let compute = ChecksumAlgorithm::ALL.to_vec();
    let pending = h
        .store
        .ingest(&mut &bytes[..], Some(9), Expected { compute, ..Expected::default() })
        .unwrap();
    let receipt = pending.receipt().clone();
    assert_eq!(hex::encode(receipt.md5), "25f9e794323b453885f5181f1b624d0b");
    assert_eq!(receipt.checksums.len(), 5);
    let crc32c =
        receipt.checksums.iter().find(|c| c.algorithm == ChecksumAlgorithm::Crc32c).unwrap();
    assert_eq!(crc32c.value, 0xE306_9283u32.to_be_bytes());
    drop(pending);

    let space = h.store.space();
    let wrong_md5 = Expected { md5: Some([0; 16]), ..Expected::default() };
    let err = h.store.ingest(&mut &b"other bytes"[..], None, wrong_md5).unwrap_err();
    assert!(matches!(err, PayloadError::BadDigest { algorithm: "MD5", .. }), "{err}");
    let wrong_crc = Expected {
        checksums: vec![Checksum { algorithm: ChecksumAlgorithm::Crc32, value: vec![1, 2, 3, 4] }],
        ..Expected::default()
    };
    let err = h.store.ingest(&mut &b"more bytes"[..], None, wrong_crc).unwrap_err();
    assert!(matches!(err, PayloadError::BadDigest { algorithm: "CRC32", .. }), "{err}");
    assert_eq!(h.store.space().payloads, 0, "nothing half-live");
    assert_eq!(h.store.space().live_bytes, space.live_bytes);
}

struct FailingReader {
    left: usize,
}

impl Read for FailingReader {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        if self.left == 0 {
            return Err(io::Error::new(io::ErrorKind::ConnectionReset, "client went away"));
        }
        let n = self.left.min(buf.len()).min(1000);
        buf[..n].fill(7);
        self.left -= n;
        Ok(n)
    }
}

#[test]
fn bad_streams_and_limits_get_clear_errors_and_leave_nothing_live() {
    let (_, fs) = sim();
    let options = PayloadOptions { payload_bytes_max: 10_000, ..small_options() };
    let h = Harness::open(Arc::clone(&fs), Path::new("/data"), &options).unwrap();
    let err =
        h.store.ingest(&mut FailingReader { left: 5000 }, None, Expected::default()).unwrap_err();
    assert!(matches!(err, PayloadError::Stream { received: 5000, .. }), "{err}");
    let err = h.store.ingest(&mut &[1u8; 100][..], Some(200), Expected::default()).unwrap_err();
    assert!(matches!(err, PayloadError::ShortStream { declared: 200, received: 100 }), "{err}");
    let err = h.store.ingest(&mut &[1u8; 300][..], Some(200), Expected::default()).unwrap_err();
    assert!(matches!(err, PayloadError::LongStream { declared: 200 }), "{err}");
    let err = h.store.ingest(&mut &[1u8; 10_001][..], None, Expected::default()).unwrap_err();
    assert!(matches!(err, PayloadError::TooLarge { max_bytes: 10_000 }), "{err}");
    assert!(err.to_string().contains("10000"), "{err}");
    let space = h.store.space();
    assert_eq!((space.payloads, space.live_bytes), (0, 0));
    // The segment is reused from where it was: the failed ingests took no space.
    let mut model = Model::default();
    let address = h.put(&mut model, &payload(2, 777)).unwrap();
    assert_eq!(h.store.space().file_bytes, 32 + tessera_engine_entry_bytes(777));
    assert_eq!(h.read(&address).unwrap(), payload(2, 777));
}

#[test]
fn a_full_disk_fails_the_ingest_cleanly() {
    let (sim, fs) = sim();
    let h = open(&fs);
    let mut model = Model::default();
    let kept = h.put(&mut model, &payload(3, 5000)).unwrap();
    // ENOSPC at each write of an ingest in turn (the payload's, then the header's), until one
    // lands after the ingest's last write.
    let mut failures = 0;
    for write in 0.. {
        sim.enospc_at_write(sim.write_calls() + write);
        match h.store.ingest(&mut &payload(4, 300_000)[..], None, Expected::default()) {
            Err(e) => {
                assert!(e.to_string().contains("No space left"), "{e}");
                assert_eq!(h.store.space().payloads, 1, "nothing half-live");
                failures += 1;
            }
            Ok(pending) => {
                drop(pending);
                break;
            }
        }
    }
    assert!(failures >= 2, "the payload's write and the header's, at least");
    assert_eq!(h.read(&kept).unwrap(), payload(3, 5000));
    drop(h);
    sim.crash(CrashMode::DropUnsynced);
    let h = open(&fs);
    model.check(&h).unwrap();
}

#[test]
fn the_empty_payload_is_valid_and_takes_no_segment_space() {
    let (_, fs) = sim();
    let h = open(&fs);
    let pending = h.store.ingest(&mut &[][..], Some(0), Expected::default()).unwrap();
    let receipt = pending.commit();
    assert_eq!(receipt.location, Location::Empty);
    assert_eq!(receipt.address, ContentAddress::of_empty());
    assert_eq!(hex::encode(receipt.md5), "d41d8cd98f00b204e9800998ecf8427e");
    assert_eq!(h.store.space().segments, 0);
    assert_eq!(h.read(&receipt.address).unwrap(), b"");
}

#[test]
fn identical_bytes_are_stored_once_and_live_while_referenced() {
    let (_, fs) = sim();
    let h = open(&fs);
    let mut model = Model::default();
    let bytes = payload(5, 50_000);
    let a = h.put(&mut model, &bytes).unwrap();
    let space = h.store.space();
    let b = h.put(&mut model, &bytes).unwrap();
    assert_eq!(a, b);
    assert_eq!(h.store.space().file_bytes, space.file_bytes, "the copy took no space");
    assert_eq!(h.store.lookup(&a).unwrap().1, 2);
    h.release(&mut model, a).unwrap();
    assert_eq!(h.read(&a).unwrap(), bytes, "one reference left");
    h.release(&mut model, a).unwrap();
    assert!(matches!(h.store.reader(&a), Err(PayloadError::UnknownAddress { .. })));
    assert_eq!(h.store.space().live_bytes, 0);
    // A dropped (uncommitted) ingest releases its reference too.
    drop(h.store.ingest(&mut &payload(6, 100)[..], None, Expected::default()).unwrap());
    assert_eq!(h.store.space().payloads, 0);
}

fn flip_byte(fs: &Arc<dyn Fs>, path: &Path, offset: u64) {
    let file = fs.open(path, OpenMode::ReadWrite).unwrap();
    let mut byte = [0u8];
    file.read_exact_at(&mut byte, offset).unwrap();
    byte[0] ^= 0x10;
    file.write_all_at(&byte, offset).unwrap();
    file.sync_data().unwrap();
}

#[test]
fn a_flipped_bit_in_a_payload_is_caught_on_first_read_and_by_verify() {
    let (_, fs) = sim();
    let h = open(&fs);
    let mut model = Model::default();
    let bad = h.put(&mut model, &payload(7, 10_000)).unwrap();
    let good = h.put(&mut model, &payload(8, 10_000)).unwrap();
    let Location::Segment { segment, offset, .. } = h.store.lookup(&bad).unwrap().0 else {
        panic!()
    };
    let path = Path::new("/data/payload").join(format!("{:020}.seg", segment.0));
    drop(h);
    flip_byte(&fs, &path, offset + 48 + 5000);
    let h = open(&fs);
    match h.store.reader(&bad) {
        Err(PayloadError::Corrupt { path: p, offset_bytes, .. }) => {
            assert_eq!((p.as_path(), offset_bytes), (path.as_path(), offset));
        }
        other => panic!("expected corruption, got {other:?}"),
    }
    assert_eq!(h.read(&good).unwrap(), payload(8, 10_000));
    let report = h.store.verify().unwrap();
    assert_eq!((report.payloads, report.corrupt.len()), (2, 1));
    assert!(report.corrupt[0].to_string().contains(&format!("offset {offset}")));
}

#[test]
fn damage_after_the_first_read_fails_every_whole_read_and_never_passes_as_data() {
    let (_, fs) = sim();
    let h = open(&fs);
    let mut model = Model::default();
    let bytes = payload(9, 150_000);
    let address = h.put(&mut model, &bytes).unwrap();
    let Location::Segment { segment, offset, .. } = h.store.lookup(&address).unwrap().0 else {
        panic!()
    };
    let path = Path::new("/data/payload").join(format!("{:020}.seg", segment.0));
    drop(h);
    let h = open(&fs);
    assert_eq!(h.read(&address).unwrap(), bytes, "the first read checks and passes");
    // A latent sector error appears now, under a payload already checked.
    flip_byte(&fs, &path, offset + 48 + 149_000);
    let mut served = Vec::new();
    let err = h.store.reader(&address).unwrap().read_to_end(&mut served).unwrap_err();
    assert_eq!(err.kind(), io::ErrorKind::InvalidData);
    let message = err.to_string();
    assert!(message.contains(&path.display().to_string()), "{message}");
    assert!(message.contains(&format!("offset {offset}")), "{message}");
    assert!(served.len() < bytes.len(), "the last bytes are held back: {}", served.len());
    // Read in small pieces, the last piece still fails.
    let mut reader = h.store.reader(&address).unwrap();
    let mut buf = [0u8; 4096];
    let mut total = 0;
    let failed = loop {
        match reader.read(&mut buf) {
            Ok(0) => break false,
            Ok(n) => total += n,
            Err(_) => break true,
        }
    };
    assert!(failed && total < bytes.len(), "{total} bytes served");
    // A range cannot be checked as it is served: once the payload passed its first read it is
    // trusted (and `verify` finds the damage).
    let mut part = Vec::new();
    h.store.reader(&address).unwrap().with_range(0..1000).unwrap().read_to_end(&mut part).unwrap();
    assert_eq!(part, bytes[..1000]);
    assert_eq!(h.store.verify().unwrap().corrupt.len(), 1);
}

fn segment_file_bytes(dir: &Path) -> u64 {
    std::fs::read_dir(dir).unwrap().map(|e| e.unwrap().metadata().unwrap().len()).sum()
}

#[test]
fn compaction_returns_the_space_of_released_payloads_to_the_file_system() {
    let dir = tempfile::tempdir().unwrap();
    let options = PayloadOptions { segment_bytes: 1 << 20, ..PayloadOptions::default() };
    let h = Harness::open(StdFs::shared(), dir.path(), &options).unwrap();
    let mut model = Model::default();
    let addresses: Vec<_> =
        (0..40).map(|n| h.put(&mut model, &payload(100 + n, 100_000)).unwrap()).collect();
    let before = segment_file_bytes(&dir.path().join("payload"));
    assert!(before >= 40 * 100_000);
    // Abort three quarters of the uploads.
    for (i, address) in addresses.iter().enumerate() {
        if i % 4 != 0 {
            h.release(&mut model, *address).unwrap();
        }
    }
    let report = h.compact().unwrap();
    let after = segment_file_bytes(&dir.path().join("payload"));
    assert!(report.segments_compacted > 0);
    assert!(after <= before / 4 + (2 << 20), "{before} -> {after} bytes on disk");
    assert!(report.bytes_reclaimed >= before - after - 4096, "{report:?}");
    for address in addresses.iter().step_by(4) {
        assert_eq!(h.read(address).unwrap(), model.bytes[address]);
    }
    drop(h);
    let h = Harness::open(StdFs::shared(), dir.path(), &options).unwrap();
    model.check(&h).unwrap();
    eprintln!("segment files: {before} bytes before, {after} after compaction");
}

#[test]
fn a_payload_stays_readable_while_compaction_moves_it() {
    let (_, fs) = sim();
    let h = open(&fs);
    let mut model = Model::default();
    let keep = h.put(&mut model, &payload(9, 30_000)).unwrap();
    let gone = h.put(&mut model, &payload(10, 60_000)).unwrap();
    let mut reader = h.store.reader(&keep).unwrap();
    h.release(&mut model, gone).unwrap();
    // Fill the segment so it is not the active one, then compact.
    for n in 0..3 {
        h.put(&mut model, &payload(20 + n, 30_000)).unwrap();
    }
    h.compact().unwrap();
    let mut bytes = Vec::new();
    reader.read_to_end(&mut bytes).unwrap();
    assert_eq!(bytes, payload(9, 30_000), "an open reader keeps the old file");
    assert_eq!(h.read(&keep).unwrap(), payload(9, 30_000));
}

#[test]
fn ingests_wait_for_the_end_of_recovery() {
    let (_, fs) = sim();
    let store = PayloadStore::open(Arc::clone(&fs), "/p", PayloadOptions::default()).unwrap();
    let err = store.ingest(&mut &b"early"[..], None, Expected::default()).unwrap_err();
    assert!(matches!(err, PayloadError::Recovering), "{err}");
    store.finish_recovery().unwrap();
    store.ingest(&mut &b"in time"[..], None, Expected::default()).unwrap().commit();
}

#[test]
fn invalid_options_are_refused() {
    let (_, fs) = sim();
    for options in [
        PayloadOptions { segment_bytes: 10, ..PayloadOptions::default() },
        PayloadOptions { compact_live_fraction: 1.5, ..PayloadOptions::default() },
        PayloadOptions { payload_bytes_max: u64::MAX, ..PayloadOptions::default() },
    ] {
        let err = PayloadStore::open(Arc::clone(&fs), "/x", options).unwrap_err();
        assert!(matches!(err, PayloadError::InvalidOptions { .. }), "{err}");
    }
}

#[test]
fn a_segment_scanned_on_its_own_lists_its_entries_and_their_damage() {
    let (_, fs) = sim();
    let h = open(&fs);
    let mut model = Model::default();
    let sizes = [100usize, 5_000, 33];
    let addresses: Vec<_> = sizes
        .iter()
        .enumerate()
        .map(|(n, &len)| h.put(&mut model, &payload(50 + n as u64, len)).unwrap())
        .collect();
    let path = Path::new("/data/payload/00000000000000000001.seg");
    let scan = tessera_engine::payload::scan_segment(
        &*fs,
        path,
        tessera_engine::payload::SegmentId(1),
        true,
    )
    .unwrap();
    let found: Vec<_> = scan.entries.iter().map(|e| (e.address, e.len, e.damage.clone())).collect();
    let expected: Vec<_> =
        addresses.iter().zip(sizes).map(|(a, len)| (*a, len as u64, None)).collect();
    assert_eq!(found, expected);
    let second = scan.entries[1].offset;
    drop(h);
    flip_byte(&fs, path, second + 48 + 10);
    let scan = tessera_engine::payload::scan_segment(
        &*fs,
        path,
        tessera_engine::payload::SegmentId(1),
        true,
    )
    .unwrap();
    assert_eq!(scan.entries.len(), 3, "damage inside a payload does not stop the walk");
    assert!(matches!(
        scan.entries[1].damage,
        Some(tessera_engine::payload::PayloadCorruption::Sha256Mismatch { .. })
    ));
}
