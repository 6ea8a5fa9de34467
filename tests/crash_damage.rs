//! Damage on disk, in every kind of file of a data directory (log segments, checkpoints,
//! payload segments, journal files): a byte flipped, or the file cut, at offsets spread over
//! each file (its header among them). Opening then either recovers or fails with an error that
//! names the damaged file; an object reads back with its own bytes or fails, never with other
//! bytes; the journal answers (with warnings); an engine that opened takes new work; nothing
//! panics.

#![allow(
    missing_docs,
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::indexing_slicing,
    clippy::panic,
    clippy::cast_possible_truncation
)]

use std::collections::BTreeMap;
use std::io::Read;
use std::path::{Path, PathBuf};

use tessera::journal::{JournalOptions, Query};
use tessera::payload::PayloadOptions;
use tessera::{CompletePart, Completion, Engine, EngineConfig, ObjectMeta, ObjectPut, PartUpload};
use tessera_wal::WalOptions;

/// Offsets damaged per file.
const OFFSETS_PER_FILE: usize = 12;

fn config() -> EngineConfig {
    EngineConfig {
        wal: WalOptions {
            segment_bytes: 24 << 10,
            batch_bytes_max: 4 << 10,
            preallocate: false,
            ..WalOptions::default()
        },
        payload: PayloadOptions { segment_bytes: 32 << 10, ..PayloadOptions::default() },
        min_part_bytes: 1,
        inline_payload_bytes_max: 512,
        checkpoint_wal_bytes: 1 << 40,
        journal: Some(JournalOptions { file_bytes: 4 << 10, ..JournalOptions::default() }),
        ..EngineConfig::default()
    }
}

fn body(seed: u64, len: usize) -> Vec<u8> {
    (0..len).map(|i| (seed as usize * 131 + i * 17 % 253) as u8).collect()
}

/// Builds a directory with every kind of file; returns the objects it holds.
fn build(dir: &Path) -> BTreeMap<String, Vec<u8>> {
    let engine = Engine::open(dir, config()).unwrap();
    engine.create_bucket("alice", "bkt").unwrap();
    let mut objects = BTreeMap::new();
    for i in 0..12u64 {
        let key = format!("multi/{i}");
        let id = engine
            .create_upload("alice", "bkt", &key, ObjectMeta::default())
            .unwrap()
            .upload_id
            .to_string();
        let mut parts = Vec::new();
        let mut whole = Vec::new();
        for number in 1..=2u32 {
            let bytes = body(i * 10 + u64::from(number), if number == 1 { 300 } else { 3_000 });
            let request = PartUpload {
                bucket: "bkt",
                key: &key,
                upload_id: &id,
                part_number: number,
                content_length: Some(bytes.len() as u64),
                ..PartUpload::default()
            };
            let stored = engine.put_part("alice", &request, &mut &bytes[..]).unwrap();
            parts.push(CompletePart {
                part_number: number,
                etag: stored.part.etag.md5,
                checksum: None,
            });
            whole.extend_from_slice(&bytes);
        }
        let done =
            Completion { bucket: "bkt", key: &key, upload_id: &id, parts, ..Completion::default() };
        engine.complete_upload("alice", &done).unwrap();
        objects.insert(key, whole);
        let single = format!("single/{i}");
        let bytes = body(1000 + i, 200 + i as usize * 100);
        let put = ObjectPut {
            bucket: "bkt",
            key: &single,
            content_length: Some(bytes.len() as u64),
            ..ObjectPut::default()
        };
        engine.put_object("alice", &put, &mut &bytes[..]).unwrap();
        objects.insert(single, bytes);
        if i % 4 == 3 {
            engine.checkpoint().unwrap();
        }
    }
    objects
}

fn files(dir: &Path) -> Vec<PathBuf> {
    let mut out = Vec::new();
    for sub in ["wal", "payload", "journal"] {
        for entry in std::fs::read_dir(dir.join(sub)).unwrap() {
            out.push(entry.unwrap().path());
        }
    }
    out.sort();
    out
}

fn copy_dir(from: &Path, to: &Path) {
    for entry in std::fs::read_dir(from).unwrap() {
        let entry = entry.unwrap();
        let target = to.join(entry.file_name());
        if entry.file_type().unwrap().is_dir() {
            std::fs::create_dir_all(&target).unwrap();
            copy_dir(&entry.path(), &target);
        } else if entry.file_name() != "LOCK" {
            std::fs::copy(entry.path(), target).unwrap();
        }
    }
}

#[derive(Clone, Copy, Debug)]
enum Harm {
    Flip,
    Cut,
}

#[derive(Default, Debug)]
struct Tally {
    cases: u64,
    refused: u64,
    opened: u64,
    objects_missing: u64,
    reads_failed: u64,
}

fn damage_case(
    pristine: &Path,
    objects: &BTreeMap<String, Vec<u8>>,
    file: &Path,
    offset: u64,
    harm: Harm,
    tally: &mut Tally,
) {
    let scratch = tempfile::tempdir().unwrap();
    copy_dir(pristine, scratch.path());
    let relative = file.strip_prefix(pristine).unwrap();
    let victim = scratch.path().join(relative);
    let mut bytes = std::fs::read(&victim).unwrap();
    match harm {
        Harm::Flip => bytes[offset as usize] ^= 0x24,
        Harm::Cut => bytes.truncate(offset as usize),
    }
    std::fs::write(&victim, &bytes).unwrap();
    let context = format!("{harm:?} at {offset} of {}", relative.display());
    tally.cases += 1;
    let opened = std::panic::catch_unwind(|| Engine::open(scratch.path(), config()));
    let engine = match opened {
        Err(_) => panic!("{context}: open panicked"),
        Ok(Err(e)) => {
            let name = victim.file_name().unwrap().to_string_lossy().into_owned();
            assert!(e.to_string().contains(&name), "{context}: the error names the file: {e}");
            tally.refused += 1;
            return;
        }
        Ok(Ok(engine)) => engine,
    };
    tally.opened += 1;
    for (key, expected) in objects {
        match engine.open_object("bkt", key, None) {
            Ok((_, mut reader)) => {
                let mut content = Vec::new();
                match reader.read_to_end(&mut content) {
                    Ok(_) => {
                        assert_eq!(&content, expected, "{context}: {key} read back other bytes")
                    }
                    Err(_) => tally.reads_failed += 1,
                }
            }
            Err(tessera::EngineError::NoSuchKey { .. }) => {
                // Only the log's torn-tail rule may drop acknowledged records, and only from
                // the log's last batch.
                assert!(relative.starts_with("wal"), "{context}: {key} vanished");
                tally.objects_missing += 1;
            }
            Err(e) => {
                // Damage found on the way: the error names the damaged file.
                let name = victim.file_name().unwrap().to_string_lossy().into_owned();
                assert!(e.to_string().contains(&name), "{context}: {key}: {e}");
                tally.reads_failed += 1;
            }
        }
    }
    let _ = engine.journal().map(|j| j.query(&Query::default()));
    if engine.head_bucket("bkt").is_err() {
        engine.create_bucket("alice", "bkt").unwrap();
    }
    engine
        .create_upload("alice", "bkt", "after/damage", ObjectMeta::default())
        .unwrap_or_else(|e| panic!("{context}: new work: {e}"));
}

#[test]
fn damage_in_any_file_is_recovered_or_reported_never_served() {
    let pristine = tempfile::tempdir().unwrap();
    let objects = build(pristine.path());
    let files = files(pristine.path());
    for kind in ["wal/", "payload/", "journal/"] {
        assert!(
            files.iter().any(|f| f
                .strip_prefix(pristine.path())
                .unwrap()
                .to_string_lossy()
                .starts_with(kind)),
            "the directory has {kind} files: {files:?}"
        );
    }
    assert!(files.iter().any(|f| f.extension().is_some_and(|e| e == "ckpt")), "and checkpoints");
    let mut tally = Tally::default();
    for file in &files {
        let len = std::fs::metadata(file).unwrap().len();
        if len == 0 {
            continue;
        }
        let step = (len / OFFSETS_PER_FILE as u64).max(1);
        let offsets = (0..len).step_by(step as usize).chain([1, 17, 40, len - 1]);
        for offset in offsets.filter(|&o| o < len) {
            damage_case(pristine.path(), &objects, file, offset, Harm::Flip, &mut tally);
            damage_case(pristine.path(), &objects, file, offset, Harm::Cut, &mut tally);
        }
    }
    eprintln!("{tally:?}");
    assert!(tally.refused > 0 && tally.opened > 0 && tally.reads_failed > 0, "{tally:?}");
}
