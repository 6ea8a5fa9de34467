//! Every file of the fuzz targets' corpora (`fuzz/corpus/<target>/`: the seeds, and every input
//! a fuzzer found a failure with) runs through the same target bodies as the fuzzers, on stable
//! Rust: a fixed crash stays fixed. `TESSERA_FUZZ_WRITE_SEEDS=1` rewrites the seeds from a small
//! engine scenario's real files (`cargo test --test fuzz_corpus write_seeds -- --ignored`).

#![allow(
    missing_docs,
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::indexing_slicing,
    clippy::panic
)]

#[path = "../fuzz/targets/mod.rs"]
mod targets;

use std::path::{Path, PathBuf};

fn corpus_dir(target: &str) -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("fuzz/corpus").join(target)
}

#[test]
fn every_corpus_file_runs_through_its_target() {
    let mut total = 0;
    for (name, target) in targets::TARGETS {
        let dir = corpus_dir(name);
        let mut files: Vec<PathBuf> = std::fs::read_dir(&dir)
            .unwrap_or_else(|e| panic!("{}: {e}", dir.display()))
            .map(|entry| entry.unwrap().path())
            .collect();
        files.sort();
        assert!(!files.is_empty(), "{name}: the corpus has seeds");
        for file in &files {
            let data = std::fs::read(file).unwrap();
            let outcome = std::panic::catch_unwind(|| target(&data));
            assert!(outcome.is_ok(), "{name}: {} panicked", file.display());
        }
        total += files.len();
    }
    eprintln!("{total} corpus files ran");
}

#[test]
fn targets_survive_simple_damage_of_every_seed() {
    // A smoke test of the bodies themselves: each seed truncated and bit-flipped at a few
    // places (the fuzzers do this at scale).
    for (name, target) in targets::TARGETS {
        for entry in std::fs::read_dir(corpus_dir(name)).unwrap() {
            let data = std::fs::read(entry.unwrap().path()).unwrap();
            for cut in [0, 1, data.len() / 3, data.len() / 2, data.len().saturating_sub(1)] {
                target(&data[..cut.min(data.len())]);
            }
            for at in (0..data.len()).step_by((data.len() / 16).max(1)) {
                let mut flipped = data.clone();
                flipped[at] ^= 0x5a;
                target(&flipped);
            }
        }
    }
}

#[test]
#[ignore = "rewrites the seeds: run with TESSERA_FUZZ_WRITE_SEEDS=1"]
fn write_seeds() {
    if std::env::var_os("TESSERA_FUZZ_WRITE_SEEDS").is_none() {
        return;
    }
    seeds::write_all(&|target, name, bytes| {
        let dir = corpus_dir(target);
        std::fs::create_dir_all(&dir).unwrap();
        std::fs::write(dir.join(name), bytes).unwrap();
    });
}

mod seeds {
    use std::path::Path;
    use std::sync::Arc;

    use tessera::{
        CompletePart, Completion, Engine, EngineConfig, ManualClock, ObjectMeta, PartUpload,
    };
    use tessera_wal::{Fs, OpenMode, SimFs, WalOptions};

    fn read(fs: &dyn Fs, path: &Path) -> Vec<u8> {
        let file = fs.open(path, OpenMode::Read).unwrap();
        let mut bytes = vec![0u8; usize::try_from(file.len().unwrap()).unwrap()];
        file.read_exact_at(&mut bytes, 0).unwrap();
        bytes
    }

    fn files(fs: &dyn Fs, dir: &str, suffix: &str) -> Vec<std::path::PathBuf> {
        let mut names: Vec<String> =
            fs.list(Path::new(dir)).unwrap().into_iter().filter(|n| n.ends_with(suffix)).collect();
        names.sort();
        names.into_iter().map(|n| Path::new(dir).join(n)).collect()
    }

    /// Runs a small scenario on the simulated file system and hands over its real files.
    pub fn write_all(put: &dyn Fn(&str, &str, &[u8])) {
        let fs = SimFs::new(7);
        let clock = ManualClock::new(1_700_000_000_000);
        let config = EngineConfig {
            wal: WalOptions {
                segment_bytes: 16 << 10,
                batch_bytes_max: 4 << 10,
                preallocate: false,
                ..WalOptions::default()
            },
            clock: Arc::new(clock.clone()),
            min_part_bytes: 1,
            inline_payload_bytes_max: 256,
            ..EngineConfig::default()
        };
        let engine = Engine::open_with_fs(fs.shared(), "/data", config).unwrap();
        engine.create_bucket("alice", "bkt").unwrap();
        for i in 0..6u8 {
            let key = format!("dir/sub/key-{i}");
            let id = engine
                .create_upload("alice", "bkt", &key, ObjectMeta::default())
                .unwrap()
                .upload_id
                .to_string();
            let body = vec![i; 100 + usize::from(i) * 150];
            let request = PartUpload {
                bucket: "bkt",
                key: &key,
                upload_id: &id,
                part_number: 1,
                content_length: Some(body.len() as u64),
                ..PartUpload::default()
            };
            let part = engine.put_part("alice", &request, &mut &body[..]).unwrap().part;
            if i % 3 == 2 {
                engine.abort_upload("alice", "bkt", &key, &id, None).unwrap();
            } else {
                let parts =
                    vec![CompletePart { part_number: 1, etag: part.etag.md5, checksum: None }];
                let done = Completion {
                    bucket: "bkt",
                    key: &key,
                    upload_id: &id,
                    parts,
                    ..Completion::default()
                };
                engine.complete_upload("alice", &done).unwrap();
            }
            if i == 3 {
                engine.checkpoint().unwrap();
            }
        }
        engine.checkpoint().unwrap();
        drop(engine);
        let fs = fs.shared();
        for (i, path) in files(&*fs, "/data/wal", ".wal").iter().enumerate() {
            put("wal_segment", &format!("seed-{i}"), &read(&*fs, path));
        }
        for (i, path) in files(&*fs, "/data/wal", ".ckpt").iter().enumerate() {
            let bytes = read(&*fs, path);
            put("wal_checkpoint", &format!("seed-{i}"), &bytes);
            // The blob, after the checkpoint file header.
            put(
                "engine_checkpoint",
                &format!("seed-{i}"),
                bytes.get(tessera_wal::CHECKPOINT_HEADER_BYTES..).unwrap_or(&[]),
            );
        }
        for (i, path) in files(&*fs, "/data/payload", ".seg").iter().enumerate() {
            put("payload_segment", &format!("seed-{i}"), &read(&*fs, path));
        }
        for (i, path) in files(&*fs, "/data/journal", ".tjl").iter().enumerate() {
            put("journal_file", &format!("seed-{i}"), &read(&*fs, path));
        }
        // Records: replayed from the log's first segment.
        let opened =
            tessera_wal::Wal::open(Arc::clone(&fs), "/data/wal", WalOptions::default()).unwrap();
        let from = opened.wal.segments().first().unwrap().first_lsn;
        let records: Vec<Vec<u8>> =
            opened.wal.replay(from).unwrap().map(|r| r.unwrap().bytes.to_vec()).collect();
        for (i, record) in records.iter().enumerate() {
            put("engine_record", &format!("seed-{i}"), record);
        }
    }
}
