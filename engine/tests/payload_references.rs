//! References across compaction and recovery (each case found by a review, each failing on the
//! code before its fix): a pending ingest's entry does not move, so its record's location holds;
//! a recorded move applies only where the payload was; a failed hook keeps the copy its records
//! may point to; checkpoints carry committed references only; damaged or crafted locations in
//! records are refused, not trusted; a damaged segment does not stop compaction of the others;
//! uploading the bytes of a damaged payload again heals it.

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
use std::sync::Arc;

use common::*;
use tessera_engine::payload::{
    ContentAddress, Expected, Location, PayloadError, PayloadStore, SegmentId,
};
use tessera_wal::{CrashMode, OpenMode, SimFs};

fn root() -> &'static Path {
    Path::new("/data")
}

#[test]
fn a_pending_ingest_is_not_moved_so_its_committed_location_holds() {
    let sim = SimFs::new(1);
    let fs = sim.shared();
    let h = Harness::open(Arc::clone(&fs), root(), &small_options()).unwrap();
    let mut model = Model::default();
    let big = h.put(&mut model, &payload(1, 40_000)).unwrap();
    h.release(&mut model, big).unwrap();
    let bytes = payload(2, 1_000);
    let pending = h.store.ingest(&mut &bytes[..], None, Expected::default()).unwrap();
    let receipt = pending.receipt().clone();
    // A compaction runs before the caller's record is written: the pinned segment stays.
    h.compact().unwrap();
    let op = Op::Ref { address: receipt.address, location: receipt.location.clone() };
    h.wal.append_durable(&op.encode()).unwrap();
    pending.commit();
    model.bytes.insert(receipt.address, bytes);
    *model.refs.entry(receipt.address).or_default() += 1;
    drop(h);
    sim.crash(CrashMode::DropUnsynced);
    let h = Harness::open(fs, root(), &small_options()).unwrap();
    model.check(&h).unwrap();
    // Once committed it moves like any other.
    h.compact().unwrap();
    model.check(&h).unwrap();
}

#[test]
fn a_recorded_move_applies_only_where_the_payload_was() {
    let sim = SimFs::new(2);
    let fs = sim.shared();
    let h = Harness::open(Arc::clone(&fs), root(), &small_options()).unwrap();
    let mut model = Model::default();
    let a = h.put(&mut model, &payload(2, 1_000)).unwrap();
    let old = h.store.lookup(&a).unwrap().0;
    h.put(&mut model, &payload(3, 70_000)).unwrap(); // the next copy of A goes elsewhere
    h.release(&mut model, a).unwrap();
    h.put(&mut model, &payload(2, 1_000)).unwrap();
    assert_ne!(h.store.lookup(&a).unwrap().0, old);
    // A move of the old copy recorded after the new reference (a compaction that raced with
    // them), towards a segment that does not exist: replay must not follow it.
    let stale = Op::Move {
        address: a,
        from: old,
        to: Location::Segment { segment: SegmentId(99), offset: 32, len: 1_000 },
    };
    h.wal.append_durable(&stale.encode()).unwrap();
    drop(h);
    sim.crash(CrashMode::DropUnsynced);
    let h = Harness::open(fs, root(), &small_options()).unwrap();
    model.check(&h).unwrap();
}

#[test]
fn a_failed_compaction_hook_keeps_the_copy_its_records_may_point_to() {
    for seed in 0..64 {
        let sim = SimFs::new(seed);
        let fs = sim.shared();
        let h = Harness::open(Arc::clone(&fs), root(), &small_options()).unwrap();
        let mut model = Model::default();
        let big = h.put(&mut model, &payload(1, 40_000)).unwrap();
        h.put(&mut model, &payload(2, 1_000)).unwrap();
        h.release(&mut model, big).unwrap();
        // The next syncs: the new segment's header, the copy, then the hook's WAL fdatasync,
        // which fails after persisting some of its sectors (or none).
        sim.eio_at_sync(sim.sync_calls() + 2);
        let err = h.compact().unwrap_err();
        assert!(matches!(err, PayloadError::CompactionHook { .. }), "{err}");
        drop(h);
        sim.crash(CrashMode::KeepRandom { seed: !seed });
        let h = Harness::open(Arc::clone(&fs), root(), &small_options())
            .unwrap_or_else(|e| panic!("seed {seed}: after `{err}`, reopen failed: {e}"));
        model.check(&h).unwrap_or_else(|e| panic!("seed {seed}: {e}"));
    }
}

#[test]
fn a_checkpoint_snapshot_carries_committed_references_only() {
    let fs = SimFs::new(4).shared();
    let store = PayloadStore::open(Arc::clone(&fs), "/p", small_options()).unwrap();
    store.finish_recovery().unwrap();
    let committed =
        store.ingest(&mut &payload(1, 500)[..], None, Expected::default()).unwrap().commit();
    let pending = store.ingest(&mut &payload(2, 500)[..], None, Expected::default()).unwrap();
    let checkpoint = store.snapshot();
    assert_eq!(checkpoint.len(), 1);
    assert_eq!(checkpoint[0].0, committed.address);
    drop(pending);
    drop(store);
    let store = PayloadStore::open(fs, "/p", small_options()).unwrap();
    for (address, location, refs) in &checkpoint {
        store.restore_entry(*address, location, *refs).unwrap();
    }
    store.finish_recovery().unwrap();
    assert_eq!(store.space().payloads, 1);
}

#[test]
fn damaged_or_crafted_locations_in_records_are_refused() {
    let fs = SimFs::new(5).shared();
    let store = PayloadStore::open(fs, "/p", small_options()).unwrap();
    let address = ContentAddress([9; 32]);
    let beyond_32_bits = 1 << 32;
    for (segment, offset, len) in [
        (1, u64::MAX - 8, 100),
        (1, 33, 100),
        (1, 0, 100),
        (1, 32, 0),
        (1, 32, u64::MAX),
        // Ids and offsets are kept in 32 bits: larger ones cannot have been written.
        (1, beyond_32_bits, 100),
        (beyond_32_bits, 32, 100),
    ] {
        let bad = Location::Segment { segment: SegmentId(segment), offset, len };
        let err = store.recover_ref(address, &bad).unwrap_err();
        assert!(matches!(err, PayloadError::BadLocation { .. }), "{segment}/{offset}/{len}: {err}");
        let err = store.recover_move(&address, &bad, &bad).unwrap_err();
        assert!(matches!(err, PayloadError::BadLocation { .. }), "{err}");
    }
    // A checkpoint with more references than a state can hold is refused, not cut; as many
    // as fit are taken, and replay cannot push them past that.
    let fine = Location::Segment { segment: SegmentId(1), offset: 32, len: 10 };
    let err = store.restore_entry(address, &fine, u64::MAX).unwrap_err();
    assert!(matches!(err, PayloadError::TooManyReferences { refs: u64::MAX, .. }), "{err}");
    store.restore_entry(address, &fine, u64::from(u32::MAX)).unwrap();
    let err = store.recover_ref(address, &fine).unwrap_err();
    assert!(matches!(err, PayloadError::TooManyReferences { .. }), "{err}");
    // Releasing it all leaves nothing live; the missing segment is then reported at the end.
    store.recover_release(&address).unwrap();
    let err = store.finish_recovery().unwrap_err();
    assert!(matches!(err, PayloadError::MissingSegment { .. }), "{err}");
}

#[test]
fn recovery_calls_after_recovery_are_refused() {
    let fs = SimFs::new(6).shared();
    let store = PayloadStore::open(fs, "/p", small_options()).unwrap();
    store.finish_recovery().unwrap();
    let any = Location::Segment { segment: SegmentId(1), offset: 32, len: 10 };
    let address = ContentAddress([1; 32]);
    assert!(matches!(store.recover_ref(address, &any), Err(PayloadError::NotRecovering)));
    assert!(matches!(store.recover_release(&address), Err(PayloadError::NotRecovering)));
    assert!(matches!(store.finish_recovery(), Err(PayloadError::NotRecovering)));
}

#[test]
fn a_damaged_segment_does_not_stop_the_others_from_being_compacted() {
    let sim = SimFs::new(6);
    let fs = sim.shared();
    let h = Harness::open(Arc::clone(&fs), root(), &small_options()).unwrap();
    let mut model = Model::default();
    let mut dead = Vec::new();
    let mut kept = Vec::new();
    for n in 0..2 {
        dead.push(h.put(&mut model, &payload(10 + n, 64_000)).unwrap());
        kept.push(h.put(&mut model, &payload(20 + n, 2_000)).unwrap());
    }
    for a in dead {
        h.release(&mut model, a).unwrap();
    }
    let Location::Segment { segment, offset, .. } = h.store.lookup(&kept[0]).unwrap().0 else {
        panic!()
    };
    let path = Path::new("/data/payload").join(format!("{:020}.seg", segment.0));
    let file = fs.open(&path, OpenMode::ReadWrite).unwrap();
    file.write_all_at(&[0xAA], offset + 48 + 10).unwrap();
    let before = h.store.space().file_bytes;
    let report = h.compact().unwrap();
    assert_eq!(report.skipped.len(), 1, "{report:?}");
    assert!(matches!(report.skipped[0].1, PayloadError::Corrupt { .. }));
    let after = h.store.space().file_bytes;
    assert!(
        after < before - 50_000,
        "the healthy segment's dead bytes return ({before} -> {after})"
    );
}

#[test]
fn uploading_the_bytes_of_a_damaged_payload_again_heals_it() {
    let sim = SimFs::new(7);
    let fs = sim.shared();
    let h = Harness::open(Arc::clone(&fs), root(), &small_options()).unwrap();
    let mut model = Model::default();
    let a = h.put(&mut model, &payload(1, 5_000)).unwrap();
    let Location::Segment { segment, offset, .. } = h.store.lookup(&a).unwrap().0 else { panic!() };
    drop(h);
    let path = Path::new("/data/payload").join(format!("{:020}.seg", segment.0));
    let file = fs.open(&path, OpenMode::ReadWrite).unwrap();
    file.write_all_at(&[0xAA], offset + 48 + 10).unwrap();
    file.sync_data().unwrap();
    let h = Harness::open(Arc::clone(&fs), root(), &small_options()).unwrap();
    assert!(matches!(h.store.reader(&a), Err(PayloadError::Corrupt { .. })));
    h.put(&mut model, &payload(1, 5_000)).unwrap(); // the client uploads the part again
    assert_eq!(h.read(&a).unwrap(), payload(1, 5_000));
    assert_eq!(h.store.lookup(&a).unwrap().1, 2);
    drop(h);
    sim.crash(CrashMode::DropUnsynced);
    let h = Harness::open(fs, root(), &small_options()).unwrap();
    model.check(&h).unwrap();
}
