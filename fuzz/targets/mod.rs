//! The fuzz targets' bodies: disk bytes as hostile input to every decoder, through the public
//! API on the simulated file system. Each must return (an error is fine) and never panic,
//! allocate without bound, or hang.
//!
//! Shared by the libFuzzer binaries (`fuzz/fuzz_targets/`) and the stable test suite
//! (`tests/fuzz_corpus.rs`), which runs every file of `fuzz/corpus/<target>/` through them, so
//! a crash once found stays fixed.

use std::path::Path;
use std::sync::Arc;

use tessera_engine::journal::{Journal, JournalOptions, Query};
use tessera_engine::payload::{PayloadOptions, PayloadStore, SegmentId, scan_segment};
use tessera_engine::{Engine, EngineConfig, ListUploads};
use tessera_wal::{Fs, Lsn, OpenMode, SimFs, Wal, WalOptions};

/// The engine's reference model (`engine/tests/model/`), for `engine_ops`. Only in the fuzz
/// build: the stable suite replays that target's corpus from `engine/tests/` (the model's own
/// test binary).
#[cfg(fuzzing)]
#[path = "../../engine/tests/model/mod.rs"]
#[allow(clippy::all, missing_docs, reason = "the engine's test code, linted there")]
mod model;

/// Operations drawn from the bytes, run against the engine on the simulated file system and
/// against the reference model, restarts, checkpoints and compactions included: every result,
/// listing page and byte must agree.
#[cfg(fuzzing)]
pub fn engine_ops(data: &[u8]) {
    model::run_from_bytes(data);
}

/// A target's body.
pub type Target = fn(&[u8]);

/// Every target, by name (the corpus directories and the fuzz binaries have these names).
pub const TARGETS: [(&str, Target); 6] = [
    ("wal_segment", wal_segment),
    ("wal_checkpoint", wal_checkpoint),
    ("engine_record", engine_record),
    ("engine_checkpoint", engine_checkpoint),
    ("payload_segment", payload_segment),
    ("journal_file", journal_file),
];

/// A log that allocates little: a fuzzer runs thousands of opens a second.
fn small_wal() -> WalOptions {
    WalOptions {
        segment_bytes: 256 << 10,
        batch_bytes_max: 64 << 10,
        pending_bytes_max: 256 << 10,
        preallocate: false,
        ..WalOptions::default()
    }
}

/// Puts `bytes` at `path` on the simulated file system, durably.
pub fn put_file(fs: &dyn Fs, path: &Path, bytes: &[u8]) {
    let dir = path.parent().unwrap_or(Path::new("/"));
    let written = fs.create_dir_all(dir).and_then(|()| {
        let file = fs.open(path, OpenMode::CreateNew)?;
        file.write_all_at(bytes, 0)?;
        file.sync_data()?;
        fs.sync_dir(dir)
    });
    // The simulated file system fails only when told to.
    if let Err(e) = written {
        unreachable!("the simulated file system failed: {e}");
    }
}

/// A log segment's bytes: open the log (which checks every frame and settles the tail), then
/// replay what it kept.
pub fn wal_segment(data: &[u8]) {
    let fs = SimFs::new(0);
    put_file(&fs, Path::new("/wal/00000000000000000001.wal"), data);
    if let Ok(opened) = Wal::open(fs.shared(), "/wal", small_wal()) {
        if let Ok(replay) = opened.wal.replay(Lsn::FIRST) {
            for record in replay {
                if record.is_err() {
                    break;
                }
            }
        }
        // An opened log takes appends.
        let _ = opened.wal.append_durable(b"after");
    }
}

/// A log checkpoint file's bytes (beside an empty log).
pub fn wal_checkpoint(data: &[u8]) {
    let fs = SimFs::new(0);
    put_file(&fs, Path::new("/wal/00000000000000000001.ckpt"), data);
    match Wal::open(fs.shared(), "/wal", small_wal()) {
        Ok(opened) => drop(std::hint::black_box(opened.checkpoint)),
        Err(e) => drop(e.to_string()),
    }
}

/// An engine record's bytes (what a log frame carries).
pub fn engine_record(data: &[u8]) {
    match tessera_engine::record::decode(1, data) {
        Ok(transition) => drop(tessera_engine::record::encode(&transition)),
        Err(e) => drop(e.to_string()),
    }
}

/// An engine checkpoint blob: written as the log's checkpoint (properly framed, so the bytes
/// reach the engine's decoder), then the engine opens on it.
pub fn engine_checkpoint(data: &[u8]) {
    let fs = SimFs::new(0);
    {
        let Ok(opened) = Wal::open(fs.shared(), "/data/wal", small_wal()) else {
            return;
        };
        let Ok(lsn) = opened.wal.append_durable(b"covered by the checkpoint") else { return };
        if opened.wal.write_checkpoint(lsn, data).is_err() {
            return;
        }
    }
    let config = EngineConfig { wal: small_wal(), ..EngineConfig::default() };
    match Engine::open_with_fs(fs.shared(), "/data", config) {
        Ok(engine) => {
            // Whatever it decoded must list, and take new work.
            for bucket in engine.list_buckets() {
                let _ = engine.list_uploads(&bucket.name, &ListUploads::default());
            }
            let _ = engine.create_bucket("fuzz", "fuzz-bucket");
        }
        Err(e) => drop(e.to_string()),
    }
}

/// A payload segment's bytes: scanned on its own (every payload hashed), and opened as a
/// store.
pub fn payload_segment(data: &[u8]) {
    let fs = SimFs::new(0);
    let path = Path::new("/payload/00000000000000000001.seg");
    put_file(&fs, path, data);
    if let Ok(scan) = scan_segment(&*fs.shared(), path, SegmentId(1), true) {
        std::hint::black_box(scan.entries.len());
    }
    let options = PayloadOptions::default();
    if let Ok(store) = PayloadStore::open(fs.shared(), "/payload", options) {
        let _ = store.finish_recovery();
    }
}

/// A journal file's bytes: opened (the newest file: checked, a torn tail cut), every entry
/// queried both ways and exported, then new history written and read back.
pub fn journal_file(data: &[u8]) {
    let fs: Arc<dyn Fs> = SimFs::new(0).shared();
    put_file(&*fs, Path::new("/journal/00000000000000000001.tjl"), data);
    let Ok((journal, _report)) =
        Journal::open(Arc::clone(&fs), "/journal", JournalOptions::default())
    else {
        return;
    };
    for newest_first in [false, true] {
        let _ = journal.query(&Query { newest_first, ..Query::default() });
    }
    let _ = journal.query(&Query {
        bucket: Some("b".into()),
        key_prefix: Some("a/".into()),
        ..Query::default()
    });
    let _ = journal.export(&Query::default(), &mut std::io::sink());
    let _ = journal.apply_retention(u64::MAX);
}
