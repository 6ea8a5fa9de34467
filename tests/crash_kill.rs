//! Real processes killed with SIGKILL: a child process (this test binary, re-run in a child
//! role) runs a mixed multipart workload on an engine directory from several threads, with
//! checkpoints, compaction and a journal under retention, and prints each transition the
//! moment it is acknowledged (and, before it, the one it starts). The parent kills it at a
//! random moment (every other cycle while checkpoints run on their own thread), reopens the
//! directory, and checks that every transition acknowledged in any
//! cycle so far is there (the one in flight per thread may or may not be), that every object
//! reads back with its ETag, that listings agree, and that the journal holds every acknowledged
//! transition once; then the next cycle's child continues on the recovered directory.
//!
//! `TESSERA_KILL_CYCLES` (default 50) cycles, from `TESSERA_SEED` (default drawn). Ends with
//! `kills: N, acknowledged: N, lost: N, recoveries: N`.

#![allow(
    missing_docs,
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::indexing_slicing,
    clippy::panic,
    clippy::cast_possible_truncation
)]

use std::collections::{BTreeMap, BTreeSet};
use std::io::{BufRead, BufReader, Read};
use std::path::Path;
use std::process::{Command, Stdio};
use std::sync::Arc;
use std::time::{Duration, Instant};

use md5::{Digest as _, Md5};
use tessera::journal::{JournalOptions, Query, Retention};
use tessera::payload::PayloadOptions;
use tessera::{
    CompletePart, Completion, Engine, EngineConfig, EngineError, ListParts, ListUploads,
    ObjectMeta, ObjectPut, PartUpload,
};
use tessera_wal::WalOptions;

const CHILD_ENV: &str = "TESSERA_KILL_CHILD_DIR";
const THREADS: usize = 4;

fn config() -> EngineConfig {
    EngineConfig {
        wal: WalOptions {
            segment_bytes: 256 << 10,
            batch_bytes_max: 64 << 10,
            ..WalOptions::default()
        },
        payload: PayloadOptions {
            segment_bytes: 256 << 10,
            compact_live_fraction: 0.7,
            ..PayloadOptions::default()
        },
        min_part_bytes: 1,
        checkpoint_wal_bytes: 128 << 10,
        journal: Some(JournalOptions {
            file_bytes: 16 << 10,
            retention: Retention { max_bytes: Some(1 << 30), ..Retention::default() },
        }),
        journal_staged_bytes_max: 8 << 10,
        ..EngineConfig::default()
    }
}

fn body(seed: u64, len: usize) -> Vec<u8> {
    let mut x = seed.wrapping_mul(0x9E37_79B9_7F4A_7C15) | 1;
    (0..len)
        .map(|_| {
            x ^= x << 13;
            x ^= x >> 7;
            x ^= x << 17;
            x as u8
        })
        .collect()
}

fn md5_hex(bytes: &[u8]) -> String {
    hex::encode(Md5::digest(bytes))
}

// ---- the child ----

/// Runs until killed: each thread loops over its own uploads and objects, printing `begin`
/// before a transition and `ack` once it returned `Ok`.
fn child(dir: &Path, cycle: u64) {
    let engine = Arc::new(Engine::open(dir, config()).unwrap());
    if engine.head_bucket("bkt").is_err() {
        engine.create_bucket("child", "bkt").unwrap();
    }
    // Every other cycle, checkpoints run on their own thread (as the gateway runs them), so
    // kills land in them while commits go on; else in the commits that make them due.
    let _checkpointer = (cycle % 2 == 1).then(|| Engine::start_checkpointer(&engine).unwrap());
    println!("ready");
    let out = Arc::new(std::sync::Mutex::new(std::io::stdout()));
    let say = move |line: String| {
        use std::io::Write;
        let mut out = out.lock().unwrap();
        writeln!(out, "{line}").unwrap();
        out.flush().unwrap();
    };
    std::thread::scope(|scope| {
        for t in 0..THREADS {
            let (engine, say) = (Arc::clone(&engine), say.clone());
            scope.spawn(move || {
                for n in 0.. {
                    let key = format!("c{cycle}/t{t}/k{n}");
                    say(format!("begin {t} create {key}"));
                    let id = engine
                        .create_upload("child", "bkt", &key, ObjectMeta::default())
                        .unwrap()
                        .upload_id
                        .to_string();
                    say(format!("ack {t} create {key} {id}"));
                    let mut parts = Vec::new();
                    for number in 1..=3u32 {
                        let len = if number == 2 { 40_000 } else { 500 + (n as usize % 7) * 300 };
                        let bytes =
                            body(cycle << 40 | (t as u64) << 32 | n << 8 | u64::from(number), len);
                        let request = PartUpload {
                            bucket: "bkt",
                            key: &key,
                            upload_id: &id,
                            part_number: number,
                            content_length: Some(bytes.len() as u64),
                            ..PartUpload::default()
                        };
                        say(format!("begin {t} part {key} {id} {number}"));
                        let stored = engine.put_part("child", &request, &mut &bytes[..]).unwrap();
                        say(format!("ack {t} part {key} {id} {number} {}", md5_hex(&bytes)));
                        parts.push(CompletePart {
                            part_number: number,
                            etag: stored.part.etag.md5,
                            checksum: None,
                        });
                    }
                    if n % 5 == 4 {
                        say(format!("begin {t} abort {key} {id}"));
                        engine.abort_upload("child", "bkt", &key, &id, None).unwrap();
                        say(format!("ack {t} abort {key} {id}"));
                    } else {
                        let done = Completion {
                            bucket: "bkt",
                            key: &key,
                            upload_id: &id,
                            parts,
                            ..Completion::default()
                        };
                        say(format!("begin {t} complete {key} {id}"));
                        let object = engine.complete_upload("child", &done).unwrap();
                        say(format!("ack {t} complete {key} {id} {}", object.etag));
                    }
                    let small = format!("c{cycle}/t{t}/small");
                    let bytes = body(n, 100 + n as usize % 50);
                    let put = ObjectPut {
                        bucket: "bkt",
                        key: &small,
                        content_length: Some(bytes.len() as u64),
                        ..ObjectPut::default()
                    };
                    say(format!("begin {t} put {small}"));
                    engine.put_object("child", &put, &mut &bytes[..]).unwrap();
                    say(format!("ack {t} put {small} {}", md5_hex(&bytes)));
                    if t == 0 && n % 3 == 2 {
                        engine.compact().unwrap();
                    }
                }
            });
        }
    });
}

// ---- the parent ----

/// What the acknowledged transitions say the directory holds.
#[derive(Default, Debug)]
struct Model {
    /// Open uploads: key → (id, parts number → MD5).
    uploads: BTreeMap<String, (String, BTreeMap<u32, String>)>,
    /// Objects: key → ETag (as S3 shows it, unquoted).
    objects: BTreeMap<String, String>,
    /// Keys whose state the transition in flight may have changed (either way is right).
    in_flight: BTreeSet<String>,
    /// Acknowledged transitions, as (op, key) in order, for the journal check.
    acknowledged: Vec<(String, String)>,
}

impl Model {
    fn ack(&mut self, words: &[&str]) {
        let (op, key) = (words[2], words[3].to_owned());
        match op {
            "create" => {
                drop(self.uploads.insert(key.clone(), (words[4].to_owned(), BTreeMap::new())))
            }
            "part" => {
                let number: u32 = words[5].parse().unwrap();
                if let Some((_, parts)) = self.uploads.get_mut(&key) {
                    parts.insert(number, words[6].to_owned());
                }
            }
            "abort" => drop(self.uploads.remove(&key)),
            "complete" => {
                self.uploads.remove(&key);
                self.objects.insert(key.clone(), words[5].to_owned());
            }
            "put" => drop(self.objects.insert(key.clone(), words[4].to_owned())),
            other => panic!("unknown op {other}"),
        }
        self.acknowledged.push((op.to_owned(), key));
    }
}

/// Checks the reopened directory against the model; returns the problems found.
fn check(engine: &Engine, model: &Model) -> Vec<String> {
    let mut problems = Vec::new();
    for (key, (id, parts)) in &model.uploads {
        if model.in_flight.contains(key) {
            continue;
        }
        match engine.list_parts("bkt", key, id, &ListParts::default()) {
            Ok(page) => {
                let seen: BTreeMap<u32, String> =
                    page.parts.iter().map(|p| (p.part_number, hex::encode(p.etag.md5))).collect();
                if &seen != parts {
                    problems.push(format!("{key}: parts {seen:?}, acknowledged {parts:?}"));
                }
            }
            Err(e) => problems.push(format!("{key}: upload {id} lost: {e}")),
        }
    }
    for (key, etag) in &model.objects {
        if model.in_flight.contains(key) {
            continue;
        }
        match engine.open_object("bkt", key, None) {
            Ok((info, mut reader)) => {
                let mut content = Vec::new();
                if let Err(e) = reader.read_to_end(&mut content) {
                    problems.push(format!("{key}: read failed: {e}"));
                }
                if info.etag.to_string() != *etag {
                    problems.push(format!("{key}: ETag {}, acknowledged {etag}", info.etag));
                } else if info.etag.parts.is_none() && md5_hex(&content) != *etag {
                    problems.push(format!("{key}: bytes do not match their ETag"));
                }
            }
            Err(e) => problems.push(format!("{key}: object lost: {e}")),
        }
    }
    // Listings agree: every open upload of the model is listed, and nothing else is, but for
    // keys in flight.
    let listed = engine.list_uploads("bkt", &ListUploads::default());
    let mut listed_keys = BTreeSet::new();
    let mut marker: Option<(String, String)> = None;
    if listed.is_ok() {
        loop {
            let request = ListUploads {
                key_marker: marker.as_ref().map(|m| m.0.clone()),
                upload_id_marker: marker.as_ref().map(|m| m.1.clone()),
                ..ListUploads::default()
            };
            let page = engine.list_uploads("bkt", &request).unwrap();
            for u in &page.uploads {
                listed_keys.insert(u.key.to_string());
            }
            match (page.is_truncated, page.next_key_marker, page.next_upload_id_marker) {
                (true, Some(k), Some(u)) => marker = Some((k.to_string(), u.to_string())),
                _ => break,
            }
        }
    }
    let expected: BTreeSet<String> = model.uploads.keys().cloned().collect();
    for key in listed_keys.symmetric_difference(&expected) {
        if !model.in_flight.contains(key) {
            problems
                .push(format!("{key}: listing disagrees (listed: {})", listed_keys.contains(key)));
        }
    }
    // The journal holds every acknowledged transition once, in order.
    let history = engine.journal().unwrap().query(&Query::default());
    if !history.warnings.is_empty() {
        problems.push(format!("journal warnings: {:?}", history.warnings));
    }
    let mut journalled: BTreeMap<(String, String), usize> = BTreeMap::new();
    for entry in &history.entries {
        let op = match entry.op.name() {
            "create_upload" => "create",
            "put_part" => "part",
            "complete" => "complete",
            "abort" => "abort",
            "put_object" => "put",
            _ => continue,
        };
        *journalled.entry((op.to_owned(), entry.key.clone().unwrap_or_default())).or_default() += 1;
    }
    let mut wanted: BTreeMap<(String, String), usize> = BTreeMap::new();
    for pair in &model.acknowledged {
        *wanted.entry(pair.clone()).or_default() += 1;
    }
    for (pair, count) in &wanted {
        let found = journalled.get(pair).copied().unwrap_or(0);
        if found < *count && !model.in_flight.contains(&pair.1) {
            problems
                .push(format!("journal: {pair:?} acknowledged {count} times, journalled {found}"));
        }
    }
    problems
}

#[test]
fn kill_9_at_random_moments_loses_no_acknowledged_transition() {
    if let Ok(dir) = std::env::var(CHILD_ENV) {
        let cycle = std::env::var("TESSERA_KILL_CYCLE").unwrap().parse().unwrap();
        child(Path::new(&dir), cycle);
        return;
    }
    let cycles: u64 =
        std::env::var("TESSERA_KILL_CYCLES").ok().and_then(|s| s.parse().ok()).unwrap_or(50);
    let seed: u64 =
        std::env::var("TESSERA_SEED").ok().and_then(|s| s.parse().ok()).unwrap_or_else(|| {
            std::time::SystemTime::now()
                .duration_since(std::time::UNIX_EPOCH)
                .map_or(1, |d| d.as_nanos() as u64)
        });
    let dir = tempfile::tempdir().unwrap();
    let mut model = Model::default();
    let (mut kills, mut recoveries, mut lost) = (0u64, 0u64, 0u64);
    let mut first_problem = None;
    let mut rng = seed | 1;
    for cycle in 0..cycles {
        rng ^= rng << 13;
        rng ^= rng >> 7;
        rng ^= rng << 17;
        let run_for = Duration::from_millis(30 + rng % 400);
        let mut child = Command::new(std::env::current_exe().unwrap())
            .args([
                "--exact",
                "kill_9_at_random_moments_loses_no_acknowledged_transition",
                "--nocapture",
                "--test-threads=1",
            ])
            .env(CHILD_ENV, dir.path())
            .env("TESSERA_KILL_CYCLE", cycle.to_string())
            .stdout(Stdio::piped())
            .stderr(Stdio::null())
            .spawn()
            .unwrap();
        let stdout = child.stdout.take().unwrap();
        let reader = std::thread::spawn(move || {
            BufReader::new(stdout).lines().map_while(Result::ok).collect::<Vec<String>>()
        });
        let started = Instant::now();
        // Killed at a random moment after it is up (opening included: a kill during recovery
        // must be survived too, so the wait starts at spawn).
        while started.elapsed() < run_for {
            std::thread::sleep(Duration::from_millis(5));
        }
        child.kill().unwrap();
        child.wait().unwrap();
        kills += 1;
        let lines = reader.join().unwrap();
        // Only whole lines count: the last may be cut by the kill.
        let mut in_flight: BTreeMap<String, String> = BTreeMap::new();
        for line in &lines {
            let words: Vec<&str> = line.split_whitespace().collect();
            match words.first() {
                Some(&"begin") if words.len() >= 4 => {
                    drop(in_flight.insert(words[1].to_owned(), words[3].to_owned()))
                }
                Some(&"ack") if words.len() >= 5 => {
                    in_flight.remove(words[1]);
                    model.ack(&words);
                }
                _ => {}
            }
        }
        model.in_flight = in_flight.into_values().collect();
        let engine = match Engine::open(dir.path(), config()) {
            Ok(engine) => engine,
            Err(e) => {
                lost += 1;
                first_problem.get_or_insert_with(|| format!("cycle {cycle}: reopen failed: {e}"));
                break;
            }
        };
        recoveries += 1;
        let problems = check(&engine, &model);
        if !problems.is_empty() {
            lost += problems.len() as u64;
            first_problem.get_or_insert_with(|| format!("cycle {cycle}: {}", problems.join("; ")));
        }
        // The in-flight transitions settled one way or the other: take what recovery kept as
        // the truth for the next cycles.
        for key in std::mem::take(&mut model.in_flight) {
            settle(&engine, &mut model, &key);
        }
        drop(engine);
        if (cycle + 1) % 100 == 0 {
            eprintln!("{} kill cycles, {lost} lost so far", cycle + 1);
        }
    }
    println!(
        "kills: {kills}, acknowledged: {}, lost: {lost}, recoveries: {recoveries}",
        model.acknowledged.len()
    );
    if let Some(problem) = first_problem {
        panic!(
            "{problem}\nreplay: TESSERA_SEED={seed} TESSERA_KILL_CYCLES={cycles} cargo test --release --test crash_kill"
        );
    }
}

/// Replaces the model's view of a key the killed transition touched by what recovery kept.
fn settle(engine: &Engine, model: &mut Model, key: &str) {
    model.uploads.remove(key);
    if let Ok(page) = engine
        .list_uploads("bkt", &ListUploads { prefix: key.to_owned(), ..ListUploads::default() })
    {
        for u in page.uploads.iter().filter(|u| &*u.key == key) {
            let id = u.upload_id.to_string();
            let parts = engine.list_parts("bkt", key, &id, &ListParts::default()).unwrap();
            let parts =
                parts.parts.iter().map(|p| (p.part_number, hex::encode(p.etag.md5))).collect();
            model.uploads.insert(key.to_owned(), (id, parts));
        }
    }
    match engine.head_object("bkt", key) {
        Ok(info) => drop(model.objects.insert(key.to_owned(), info.etag.to_string())),
        Err(EngineError::NoSuchKey { .. }) => drop(model.objects.remove(key)),
        Err(e) => panic!("{key}: {e}"),
    }
}
