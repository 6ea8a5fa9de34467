//! Concurrency: threads racing CompleteMultipartUpload, AbortMultipartUpload and UploadPart on
//! the same uploads, and uploading the same part number with different bytes. Whatever the
//! interleaving, the outcomes must be those of one serial order of the calls: of a complete
//! and an abort exactly one wins and the other meets NoSuchUpload; of racing part uploads the
//! one applied last is the part (listed once, and the object's bytes if completed); the
//! upload's version counts the successful part uploads; a reopen sees the same state; an
//! expiry and part uploads (activity) racing on a due upload: either it expired and no part
//! upload succeeded, or one came first and all did. And a subscriber sees every committed
//! transition once, in strictly increasing LSN order, each thread's in the order it made them.
//! And writers racing with If-None-Match / If-Match on one key: exactly one wins.
//!
//! `TESSERA_RACE_ROUNDS` scales the number of raced uploads.

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
use std::path::Path;
use std::sync::{Arc, Barrier};

use md5::{Digest as _, Md5};
use sha2::Sha256;
use tessera_engine::payload::{ContentAddress, PayloadOptions};
use tessera_engine::{
    AbortReason, CompletePart, Completion, Engine, EngineConfig, EngineError, Etag, EtagMatch,
    Event, EventKind, ListParts, ManualClock, ObjectInfo, ObjectMeta, ObjectPut, PartUpload,
    UploadId, WriteCondition,
};
use tessera_wal::WalOptions;

const THREADS: usize = 8;
const BUCKET: &str = "race-bkt";

fn config(clock: &ManualClock) -> EngineConfig {
    EngineConfig {
        wal: WalOptions {
            segment_bytes: 256 << 10,
            batch_bytes_max: 16 << 10,
            pending_bytes_max: 64 << 10,
            preallocate: false,
            salt_seed: Some(11),
        },
        payload: PayloadOptions { segment_bytes: 8 << 10, ..PayloadOptions::default() },
        clock: Arc::new(clock.clone()),
        min_part_bytes: 16,
        inline_payload_bytes_max: 64,
        // Checkpoints (and with them the move of inline payloads into segments) happen while
        // the threads race.
        checkpoint_wal_bytes: 8 << 10,
        ..EngineConfig::default()
    }
}

fn open(dir: &Path, clock: &ManualClock) -> Arc<Engine> {
    Arc::new(Engine::open(dir, config(clock)).unwrap())
}

fn rounds(default: usize) -> usize {
    std::env::var("TESSERA_RACE_ROUNDS").ok().and_then(|s| s.parse().ok()).unwrap_or(default)
}

fn md5_of(bytes: &[u8]) -> [u8; 16] {
    Md5::digest(bytes).into()
}

/// Distinct bytes for each (round, thread, attempt): 20 to 150 long, so some ride inline in
/// their record and some go to a payload segment.
fn part_bytes(round: usize, thread: usize, attempt: usize) -> Vec<u8> {
    let len = 20 + (round * 31 + thread * 17 + attempt * 53) % 131;
    let mut bytes = vec![0u8; len];
    for (i, b) in bytes.iter_mut().enumerate() {
        *b = (i as u8) ^ (round as u8).wrapping_mul(7) ^ (thread as u8).wrapping_mul(29);
    }
    bytes[0] = thread as u8;
    bytes[1] = attempt as u8;
    bytes[2] = round as u8;
    bytes
}

fn put(
    engine: &Engine,
    actor: &str,
    key: &str,
    id: &str,
    number: u32,
    bytes: &[u8],
) -> Result<tessera_engine::PartStored, EngineError> {
    let request = PartUpload {
        bucket: BUCKET,
        key,
        upload_id: id,
        part_number: number,
        content_length: Some(bytes.len() as u64),
        ..PartUpload::default()
    };
    engine.put_part(actor, &request, &mut &bytes[..])
}

fn complete(
    engine: &Engine,
    actor: &str,
    key: &str,
    id: &str,
    parts: &[(u32, [u8; 16])],
) -> Result<ObjectInfo, EngineError> {
    let parts = parts
        .iter()
        .map(|(n, etag)| CompletePart { part_number: *n, etag: *etag, checksum: None })
        .collect();
    engine.complete_upload(
        actor,
        &Completion { bucket: BUCKET, key, upload_id: id, parts, ..Completion::default() },
    )
}

fn read(engine: &Engine, key: &str) -> Vec<u8> {
    let (_, mut reader) = engine.open_object(BUCKET, key, None).unwrap();
    let mut out = Vec::new();
    reader.read_to_end(&mut out).unwrap();
    out
}

/// The payload store's references are exactly one per part of the objects, given as their
/// parts' bytes.
fn check_payload_references<'a>(engine: &Engine, parts: impl IntoIterator<Item = &'a Vec<u8>>) {
    // A checkpoint moves the inline payloads into segments: then every non-empty part holds
    // one reference on its bytes' address.
    engine.checkpoint().unwrap();
    let mut want: BTreeMap<ContentAddress, u64> = BTreeMap::new();
    for bytes in parts.into_iter().filter(|b| !b.is_empty()) {
        *want.entry(ContentAddress(Sha256::digest(bytes).into())).or_insert(0) += 1;
    }
    let have: BTreeMap<ContentAddress, u64> =
        engine.payload_store().snapshot().into_iter().map(|(a, _, refs)| (a, refs)).collect();
    assert_eq!(have, want, "payload references");
    let report = engine.payload_store().verify().unwrap();
    assert!(report.corrupt.is_empty(), "{:?}", report.corrupt);
}

/// What one thread did in a round.
#[derive(Debug, Default)]
struct Outcomes {
    /// Each part upload that succeeded: its bytes and the upload's version after it.
    puts: Vec<(Vec<u8>, u64)>,
    /// Part uploads that met NoSuchUpload (the upload had ended).
    puts_refused: usize,
    completes: Vec<Result<ObjectInfo, String>>,
    aborts: Vec<Result<tessera_engine::Aborted, String>>,
}

#[derive(Clone, Copy, Debug)]
enum Role {
    Putter,
    Completer,
    Aborter,
}

/// The roles of the threads of a round: kind 0 only uploads parts; kind 1 also completes;
/// kind 2 completes and aborts; kind 3 aborts. In kinds 2 and 3 the upload has a part before
/// the race starts, so that completions and aborts race from the first instant.
fn roles(kind: usize) -> [Role; THREADS] {
    use Role::{Aborter as A, Completer as C, Putter as P};
    match kind {
        0 => [P, P, P, P, P, P, P, P],
        1 => [P, C, P, P, C, P, P, P],
        2 => [P, C, A, P, P, C, A, P],
        _ => [P, A, P, P, P, A, P, P],
    }
}

/// A completer: lists the parts, completes with part 1 as listed; if a racing part upload
/// replaced it meanwhile (InvalidPart), tries again. Stops at success or NoSuchUpload.
fn complete_as_listed(engine: &Engine, key: &str, id: &str) -> Result<ObjectInfo, String> {
    for _ in 0..100_000 {
        let page = match engine.list_parts(BUCKET, key, id, &ListParts::default()) {
            Ok(page) => page,
            Err(e) => return Err(e.s3_code().to_owned()),
        };
        let Some(part) = page.parts.first() else {
            std::thread::yield_now();
            continue;
        };
        match complete(engine, "completer", key, id, &[(1, part.etag.md5)]) {
            Ok(object) => return Ok(object),
            Err(EngineError::InvalidPart { .. }) => continue,
            Err(e) => return Err(e.s3_code().to_owned()),
        }
    }
    panic!("{key}: the completion never settled");
}

/// One raced upload: what the threads saw.
fn race_round(engine: &Engine, round: usize, kind: usize) -> (String, String, Vec<Outcomes>) {
    let key = format!("race/{round}");
    let id = engine
        .create_upload("creator", BUCKET, &key, ObjectMeta::default())
        .unwrap()
        .upload_id
        .to_string();
    let mut setup = Outcomes::default();
    if kind >= 2 {
        let bytes = part_bytes(round, THREADS, 0);
        let stored = put(engine, "creator", &key, &id, 1, &bytes).unwrap();
        setup.puts.push((bytes, stored.version));
    }
    let barrier = Barrier::new(THREADS);
    let mut outcomes: Vec<Outcomes> = std::thread::scope(|scope| {
        let handles: Vec<_> = roles(kind)
            .into_iter()
            .enumerate()
            .map(|(thread, role)| {
                let (barrier, key, id) = (&barrier, &key, &id);
                scope.spawn(move || {
                    let mut out = Outcomes::default();
                    barrier.wait();
                    match role {
                        Role::Putter => {
                            for attempt in 0..2 {
                                let bytes = part_bytes(round, thread, attempt);
                                match put(engine, "putter", key, id, 1, &bytes) {
                                    Ok(stored) => {
                                        assert_eq!(stored.part.etag.md5, md5_of(&bytes));
                                        out.puts.push((bytes, stored.version));
                                    }
                                    Err(EngineError::NoSuchUpload { .. }) => out.puts_refused += 1,
                                    Err(e) => panic!("part upload: {e}"),
                                }
                            }
                        }
                        Role::Completer => out.completes.push(complete_as_listed(engine, key, id)),
                        Role::Aborter => out.aborts.push({
                            // As long a path as a completer's (which lists the parts first),
                            // so that either may win.
                            let _ = engine.list_parts(BUCKET, key, id, &ListParts::default());
                            engine
                                .abort_upload("aborter", BUCKET, key, id, None)
                                .map_err(|e| e.s3_code().to_owned())
                        }),
                    }
                    out
                })
            })
            .collect();
        handles.into_iter().map(|h| h.join().unwrap()).collect()
    });
    outcomes.push(setup);
    (key, id, outcomes)
}

/// Checks a round's outcomes against the serial orders that could explain them, and returns
/// the object's bytes if the upload ended completed (completing it serially first if no thread
/// tried to).
fn check_round(
    engine: &Engine,
    round: usize,
    kind: usize,
    key: &str,
    id: &str,
    outcomes: &[Outcomes],
) -> Option<Vec<u8>> {
    let what = format!("round {round} (kind {kind})");
    let mut puts: Vec<&(Vec<u8>, u64)> = outcomes.iter().flat_map(|o| &o.puts).collect();
    puts.sort_by_key(|(_, version)| *version);
    // Each successful part upload bumped the version once, in one order: 2, 3, ...
    let versions: Vec<u64> = puts.iter().map(|(_, v)| *v).collect();
    let serial: Vec<u64> = (2..2 + puts.len() as u64).collect();
    assert_eq!(versions, serial, "{what}: the versions of the successful part uploads");
    // The part is the one applied last.
    let last = puts.last().map(|(bytes, _)| bytes.clone());
    let completes: Vec<&Result<ObjectInfo, String>> =
        outcomes.iter().flat_map(|o| &o.completes).collect();
    let aborts: Vec<&Result<tessera_engine::Aborted, String>> =
        outcomes.iter().flat_map(|o| &o.aborts).collect();
    let completed: Vec<&ObjectInfo> = completes.iter().filter_map(|r| r.as_ref().ok()).collect();
    let aborted: Vec<&tessera_engine::Aborted> =
        aborts.iter().filter_map(|r| r.as_ref().ok()).collect();
    for failed in completes.iter().filter_map(|r| r.as_ref().err()) {
        assert_eq!(failed, "NoSuchUpload", "{what}: a losing completion");
    }
    for failed in aborts.iter().filter_map(|r| r.as_ref().err()) {
        assert_eq!(failed, "NoSuchUpload", "{what}: a losing abort");
    }
    let refused: usize = outcomes.iter().map(|o| o.puts_refused).sum();
    if kind == 0 {
        // Nobody ended it: every part upload succeeded; one part is listed, the last one.
        assert_eq!(refused, 0, "{what}");
        let info = engine.get_upload(BUCKET, key, id).unwrap();
        assert_eq!(info.version, 1 + puts.len() as u64, "{what}: the upload's version");
        let page = engine.list_parts(BUCKET, key, id, &ListParts::default()).unwrap();
        let last = last.unwrap();
        assert_eq!(page.parts.len(), 1, "{what}: {page:?}");
        assert_eq!(page.parts[0].etag.md5, md5_of(&last), "{what}: the part listed");
        assert_eq!(page.parts[0].size_bytes, last.len() as u64, "{what}");
        let object = complete(engine, "creator", key, id, &[(1, md5_of(&last))]).unwrap();
        assert_eq!(read(engine, key), last, "{what}: the object's bytes");
        assert_eq!(object.upload_id.map(|u| u.to_string()).as_deref(), Some(id));
        return Some(last);
    }
    // Of the completions and aborts, exactly one kind won, and at most one abort.
    assert!(
        completed.is_empty() != aborted.is_empty(),
        "{what}: completions {completes:?}, aborts {aborts:?}"
    );
    assert!(aborted.len() <= 1, "{what}: {aborts:?}");
    assert!(
        matches!(engine.get_upload(BUCKET, key, id), Err(EngineError::NoSuchUpload { .. })),
        "{what}: the upload ended"
    );
    // Part uploads that came after the end were refused, not lost: every attempt is counted.
    let putters = roles(kind).iter().filter(|r| matches!(r, Role::Putter)).count();
    let before = usize::from(kind >= 2);
    assert_eq!(puts.len() + refused, 2 * putters + before, "{what}");
    if let Some(first) = completed.first() {
        // Every successful completion returned the same object: the last part applied.
        for other in &completed {
            assert_eq!(other, first, "{what}: the completions' objects");
        }
        let last = last.expect("a completion needs a part");
        assert_eq!(first.etag, multipart_etag(&[md5_of(&last)]), "{what}");
        assert_eq!(first.size_bytes, last.len() as u64, "{what}");
        assert_eq!(engine.head_object(BUCKET, key).unwrap(), **first, "{what}");
        assert_eq!(read(engine, key), last, "{what}: the object's bytes");
        Some(last)
    } else {
        let aborted = aborted[0];
        let (parts, bytes) = last.map_or((0, 0), |b| (1, b.len() as u64));
        assert_eq!((aborted.parts, aborted.bytes), (parts, bytes), "{what}: what the abort freed");
        assert!(
            matches!(engine.head_object(BUCKET, key), Err(EngineError::NoSuchKey { .. })),
            "{what}: no object"
        );
        None
    }
}

fn multipart_etag(md5s: &[[u8; 16]]) -> Etag {
    let mut all = Vec::new();
    for md5 in md5s {
        all.extend_from_slice(md5);
    }
    Etag { md5: md5_of(&all), parts: Some(md5s.len() as u32) }
}

#[test]
fn completes_aborts_and_part_uploads_race_to_one_serial_order() {
    let dir = tempfile::tempdir().unwrap();
    let clock = ManualClock::new(1_700_000_000_000);
    let mut engine = open(dir.path(), &clock);
    engine.create_bucket("creator", BUCKET).unwrap();
    let mut objects: BTreeMap<String, Vec<u8>> = BTreeMap::new();
    let mut ended: Vec<(String, String)> = Vec::new();
    for round in 0..rounds(64) {
        let kind = round % 4;
        let (key, id, outcomes) = race_round(&engine, round, kind);
        if let Some(bytes) = check_round(&engine, round, kind, &key, &id, &outcomes) {
            objects.insert(key.clone(), bytes);
        }
        ended.push((key, id));
        clock.advance_ms(1);
    }
    check_payload_references(&engine, objects.values());
    let before: Vec<ObjectInfo> =
        objects.keys().map(|key| engine.head_object(BUCKET, key).unwrap()).collect();
    // A reopen sees the same state.
    drop(engine);
    engine = open(dir.path(), &clock);
    let after: Vec<ObjectInfo> =
        objects.keys().map(|key| engine.head_object(BUCKET, key).unwrap()).collect();
    assert_eq!(after, before);
    for (key, bytes) in &objects {
        assert_eq!(&read(&engine, key), bytes, "{key} after reopen");
    }
    for (key, id) in &ended {
        assert!(
            matches!(engine.get_upload(BUCKET, key, id), Err(EngineError::NoSuchUpload { .. })),
            "{key}: ended before the reopen"
        );
        if !objects.contains_key(key) {
            assert!(matches!(engine.head_object(BUCKET, key), Err(EngineError::NoSuchKey { .. })));
        }
    }
    assert_eq!(engine.stats().live_uploads, 0);
    assert_eq!(engine.stats().objects, objects.len() as u64);
    check_payload_references(&engine, objects.values());
}

#[test]
fn racing_uploads_of_one_part_number_keep_the_one_applied_last() {
    let dir = tempfile::tempdir().unwrap();
    let clock = ManualClock::new(1_700_000_000_000);
    let mut engine = open(dir.path(), &clock);
    engine.create_bucket("creator", BUCKET).unwrap();
    let mut live = Vec::new();
    for round in 0..rounds(32) {
        // Three part numbers at once: each thread uploads each of them, in its own order.
        let key = format!("parts/{round}");
        let id = engine
            .create_upload("creator", BUCKET, &key, ObjectMeta::default())
            .unwrap()
            .upload_id
            .to_string();
        let barrier = Barrier::new(THREADS);
        let results: Vec<Vec<(u32, Vec<u8>, u64)>> = std::thread::scope(|scope| {
            let handles: Vec<_> = (0..THREADS)
                .map(|thread| {
                    let (barrier, key, id, engine) = (&barrier, &key, &id, &engine);
                    scope.spawn(move || {
                        barrier.wait();
                        let mut done = Vec::new();
                        for step in 0..3 {
                            let number = ((thread + step) % 3 + 1) as u32;
                            let bytes = part_bytes(round, thread, step);
                            let stored = put(engine, "putter", key, id, number, &bytes).unwrap();
                            assert_eq!(stored.part.part_number, number);
                            done.push((number, bytes, stored.version));
                        }
                        done
                    })
                })
                .collect();
            handles.into_iter().map(|h| h.join().unwrap()).collect()
        });
        let mut all: Vec<&(u32, Vec<u8>, u64)> = results.iter().flatten().collect();
        all.sort_by_key(|(_, _, version)| *version);
        let versions: Vec<u64> = all.iter().map(|(_, _, v)| *v).collect();
        assert_eq!(versions, (2..2 + all.len() as u64).collect::<Vec<_>>(), "round {round}");
        // Each part number's part is its upload with the highest version.
        let mut last: BTreeMap<u32, Vec<u8>> = BTreeMap::new();
        for (number, bytes, _) in &all {
            last.insert(*number, bytes.clone());
        }
        let info = engine.get_upload(BUCKET, &key, &id).unwrap();
        assert_eq!(info.version, 1 + all.len() as u64, "round {round}");
        let page = engine.list_parts(BUCKET, &key, &id, &ListParts::default()).unwrap();
        let listed: Vec<(u32, [u8; 16], u64)> =
            page.parts.iter().map(|p| (p.part_number, p.etag.md5, p.size_bytes)).collect();
        let want: Vec<(u32, [u8; 16], u64)> =
            last.iter().map(|(n, b)| (*n, md5_of(b), b.len() as u64)).collect();
        assert_eq!(listed, want, "round {round}: one version of each part, the last applied");
        live.push((key, id, info.version, want, last));
    }
    // A reopen sees the same uploads and parts; completing them gives the last bytes.
    drop(engine);
    engine = open(dir.path(), &clock);
    let mut parts = Vec::new();
    for (key, id, version, want, last) in live {
        assert_eq!(engine.get_upload(BUCKET, &key, &id).unwrap().version, version, "{key}");
        let page = engine.list_parts(BUCKET, &key, &id, &ListParts::default()).unwrap();
        let listed: Vec<(u32, [u8; 16], u64)> =
            page.parts.iter().map(|p| (p.part_number, p.etag.md5, p.size_bytes)).collect();
        assert_eq!(listed, want, "{key} after reopen");
        // Parts are 20..150 bytes; the minimum part size of the test is 16.
        let etags: Vec<(u32, [u8; 16])> = want.iter().map(|(n, m, _)| (*n, *m)).collect();
        complete(&engine, "creator", &key, &id, &etags).unwrap();
        let bytes: Vec<u8> = last.values().flatten().copied().collect();
        assert_eq!(read(&engine, &key), bytes, "{key}");
        parts.extend(last.into_values());
    }
    check_payload_references(&engine, &parts);
}

#[test]
fn expiry_races_part_uploads_to_one_serial_order() {
    let dir = tempfile::tempdir().unwrap();
    let clock = ManualClock::new(1_700_000_000_000);
    let ttl_ms = EngineConfig::default().upload_ttl_ms;
    let engine = open(dir.path(), &clock);
    engine.create_bucket("creator", BUCKET).unwrap();
    let (mut expired_rounds, mut kept_rounds) = (0, 0);
    for round in 0..rounds(64) {
        let key = format!("expiry/{round}");
        let upload = engine.create_upload("creator", BUCKET, &key, ObjectMeta::default()).unwrap();
        let id = upload.upload_id.to_string();
        // Due now: an expiry and part uploads (activity, which extends the upload's life) race.
        clock.advance_ms(ttl_ms);
        let barrier = Barrier::new(THREADS);
        let (puts, refused, expired): (Vec<u64>, usize, u64) = std::thread::scope(|scope| {
            let handles: Vec<_> = (0..THREADS)
                .map(|thread| {
                    let (barrier, key, id, engine) = (&barrier, &key, &id, &engine);
                    scope.spawn(move || {
                        barrier.wait();
                        if thread < 2 {
                            let report = engine.expire_due().unwrap();
                            return (Vec::new(), 0, report.uploads);
                        }
                        let bytes = part_bytes(round, thread, 0);
                        match put(engine, "putter", key, id, thread as u32, &bytes) {
                            Ok(stored) => (vec![stored.version], 0, 0),
                            Err(EngineError::NoSuchUpload { .. }) => (Vec::new(), 1, 0),
                            Err(e) => panic!("{e}"),
                        }
                    })
                })
                .collect();
            handles.into_iter().map(|h| h.join().unwrap()).fold(
                (Vec::new(), 0, 0),
                |(mut puts, refused, expired), (p, r, e)| {
                    puts.extend(p);
                    (puts, refused + r, expired + e)
                },
            )
        });
        let what = format!("round {round}: {} puts, {refused} refused, {expired}", puts.len());
        assert!(expired <= 1, "{what}");
        if expired == 1 {
            // The expiry came first: a part upload before it would have made it not due.
            assert!(puts.is_empty(), "{what}");
            assert!(
                matches!(
                    engine.get_upload(BUCKET, &key, &id),
                    Err(EngineError::NoSuchUpload { .. })
                ),
                "{what}"
            );
            expired_rounds += 1;
        } else {
            // A part upload came first and extended the upload: every one then succeeded.
            assert_eq!(refused, 0, "{what}");
            let mut versions = puts.clone();
            versions.sort_unstable();
            assert_eq!(versions, (2..2 + puts.len() as u64).collect::<Vec<_>>(), "{what}");
            let info = engine.get_upload(BUCKET, &key, &id).unwrap();
            assert_eq!(info.version, 1 + puts.len() as u64, "{what}");
            assert_eq!(info.expires_ms, upload.initiated_ms + 2 * ttl_ms, "{what}");
            engine.abort_upload("creator", BUCKET, &key, &id, None).unwrap();
            kept_rounds += 1;
        }
    }
    assert_eq!(engine.stats().live_uploads, 0);
    assert_eq!(engine.stats().parts, 0);
    // For the record: how often each side won (both usually do over the rounds).
    eprintln!("expiry won {expired_rounds} rounds, part uploads {kept_rounds}");
}

/// What a worker expects the subscriber to see for one of its calls.
#[derive(Clone, Debug, PartialEq, Eq)]
struct Seen {
    kind: EventKind,
    actor: String,
    key: Option<String>,
    upload_id: Option<UploadId>,
    part_number: Option<u32>,
    size_bytes: Option<u64>,
    etag: Option<Etag>,
    error: Option<&'static str>,
}

impl Seen {
    fn of(event: &Event) -> Seen {
        Seen {
            kind: event.kind,
            actor: event.actor.clone(),
            key: event.key.clone(),
            upload_id: event.upload_id,
            part_number: event.part_number,
            size_bytes: event.size_bytes,
            etag: event.etag,
            error: event.error,
        }
    }

    fn new(kind: EventKind, actor: &str, key: &str) -> Seen {
        Seen {
            kind,
            actor: actor.to_owned(),
            key: Some(key.to_owned()),
            upload_id: None,
            part_number: None,
            size_bytes: None,
            etag: None,
            error: None,
        }
    }
}

/// One worker's calls on its own keys, each logged as the event it must produce.
fn worker(engine: &Engine, thread: usize, rounds: usize) -> Vec<Seen> {
    let actor = format!("t{thread}");
    let mut log = Vec::new();
    for round in 0..rounds {
        let key = format!("t{thread}/u{round}");
        let upload = engine.create_upload(&actor, BUCKET, &key, ObjectMeta::default()).unwrap();
        let id = upload.upload_id;
        log.push(Seen { upload_id: Some(id), ..Seen::new(EventKind::CreateUpload, &actor, &key) });
        let mut listed = Vec::new();
        let mut total = 0;
        for number in 1..=2u32 {
            let bytes = part_bytes(round, thread, number as usize);
            let stored = put(engine, &actor, &key, &id.to_string(), number, &bytes).unwrap();
            total += bytes.len() as u64;
            listed.push((number, stored.part.etag.md5));
            log.push(Seen {
                upload_id: Some(id),
                part_number: Some(number),
                size_bytes: Some(bytes.len() as u64),
                etag: Some(stored.part.etag),
                ..Seen::new(EventKind::PutPart, &actor, &key)
            });
        }
        if round % 3 == 0 {
            engine.abort_upload(&actor, BUCKET, &key, &id.to_string(), None).unwrap();
            log.push(Seen {
                upload_id: Some(id),
                size_bytes: Some(total),
                ..Seen::new(EventKind::Abort(AbortReason::Aborted), &actor, &key)
            });
        } else {
            let object = complete(engine, &actor, &key, &id.to_string(), &listed).unwrap();
            log.push(Seen {
                upload_id: Some(id),
                size_bytes: Some(object.size_bytes),
                etag: Some(object.etag),
                ..Seen::new(EventKind::Complete, &actor, &key)
            });
        }
        let key = format!("t{thread}/o{round}");
        let bytes = part_bytes(round, thread, 9);
        let request = ObjectPut {
            bucket: BUCKET,
            key: &key,
            content_length: Some(bytes.len() as u64),
            ..ObjectPut::default()
        };
        let object = engine.put_object(&actor, &request, &mut &bytes[..]).unwrap();
        log.push(Seen {
            size_bytes: Some(bytes.len() as u64),
            etag: Some(object.etag),
            ..Seen::new(EventKind::PutObject, &actor, &key)
        });
        if round % 2 == 1 {
            assert!(engine.delete_object(&actor, BUCKET, &key).unwrap());
            log.push(Seen::new(EventKind::DeleteObject, &actor, &key));
        }
    }
    log
}

#[test]
fn subscribers_see_every_transition_once_in_lsn_order() {
    let dir = tempfile::tempdir().unwrap();
    let clock = ManualClock::new(1_700_000_000_000);
    let engine = open(dir.path(), &clock);
    engine.create_bucket("setup", BUCKET).unwrap();
    // Uploads every worker races to complete or abort at the end.
    let mut shared = Vec::new();
    for j in 0..4 {
        let key = format!("shared/{j}");
        let id = engine.create_upload("setup", BUCKET, &key, ObjectMeta::default()).unwrap();
        let bytes = part_bytes(99, j, 0);
        let id = id.upload_id;
        let stored = put(&engine, "setup", &key, &id.to_string(), 1, &bytes).unwrap();
        shared.push((key, id, stored.part.etag.md5));
    }
    let mut subscription = engine.subscribe();
    let collector = {
        let engine = Arc::clone(&engine);
        std::thread::spawn(move || {
            let mut events = Vec::new();
            loop {
                let event = subscription.recv().unwrap();
                // Published only once durable.
                assert!(engine.wal().lsn_durable().0 >= event.lsn, "{event:?}");
                let sentinel = event.kind == EventKind::CreateBucket;
                events.push(event);
                if sentinel {
                    return events;
                }
            }
        })
    };
    let rounds = rounds(24);
    let barrier = Barrier::new(THREADS);
    #[allow(clippy::type_complexity)]
    let results: Vec<(Vec<Seen>, Vec<(UploadId, bool, Result<(), String>)>)> =
        std::thread::scope(|scope| {
            let handles: Vec<_> = (0..THREADS)
                .map(|thread| {
                    let (engine, barrier, shared) = (&engine, &barrier, &shared);
                    scope.spawn(move || {
                        let log = worker(engine, thread, rounds);
                        barrier.wait();
                        let actor = format!("t{thread}");
                        let mut ends = Vec::new();
                        for (j, (key, id, etag)) in shared.iter().enumerate() {
                            let is_complete = (thread + j) % 2 == 0;
                            let result = if is_complete {
                                complete(engine, &actor, key, &id.to_string(), &[(1, *etag)])
                                    .map(|_| ())
                            } else {
                                engine
                                    .abort_upload(&actor, BUCKET, key, &id.to_string(), None)
                                    .map(|_| ())
                            };
                            ends.push((*id, is_complete, result.map_err(|e| code(&e))));
                        }
                        (log, ends)
                    })
                })
                .collect();
            handles.into_iter().map(|h| h.join().unwrap()).collect()
        });
    // The sentinel: the last event.
    engine.create_bucket("setup", "sentinel").unwrap();
    let events = collector.join().unwrap();

    // Strictly increasing LSNs, with no gap: every committed transition was published once.
    for pair in events.windows(2) {
        assert_eq!(pair[1].lsn, pair[0].lsn + 1, "{:?} then {:?}", pair[0], pair[1]);
    }
    assert_eq!(events.last().map(|e| e.lsn), Some(engine.stats().applied_lsn));
    // Each worker's calls appear, in the order it made them.
    for (thread, (log, _)) in results.iter().enumerate() {
        let actor = format!("t{thread}");
        let mine: Vec<Seen> = events
            .iter()
            .filter(|e| {
                e.actor == actor
                    && e.key.as_deref().is_some_and(|k| k.starts_with(&format!("t{thread}/")))
            })
            .map(|e| Seen::of(e.as_ref()))
            .collect();
        assert_eq!(&mine, log, "the events of thread {thread}");
    }
    // The shared uploads: one serial order. Calls that reached the log and lost are events
    // with their error; a winning abort is one event; completions after a winning completion
    // with the same parts succeed (as repeats), and some of them are events too.
    let shared_events: Vec<&Arc<Event>> = events
        .iter()
        .filter(|e| shared.iter().any(|(_, id, _)| e.upload_id == Some(*id)))
        .collect();
    let per_thread: usize = results.iter().map(|(log, _)| log.len()).sum();
    assert_eq!(events.len(), per_thread + shared_events.len() + 1, "no other events");
    for (key, id, _) in &shared {
        let calls: Vec<&(UploadId, bool, Result<(), String>)> =
            results.iter().flat_map(|(_, ends)| ends).filter(|(u, _, _)| u == id).collect();
        let completed = calls.iter().filter(|(_, c, r)| *c && r.is_ok()).count();
        let aborted = calls.iter().filter(|(_, c, r)| !*c && r.is_ok()).count();
        for (_, _, result) in &calls {
            if let Err(e) = result {
                assert_eq!(e, "NoSuchUpload", "{key}");
            }
        }
        let mine: Vec<&&Arc<Event>> =
            shared_events.iter().filter(|e| e.upload_id == Some(*id)).collect();
        let won_complete =
            mine.iter().filter(|e| e.kind == EventKind::Complete && e.error.is_none()).count();
        let won_abort = mine
            .iter()
            .filter(|e| e.kind == EventKind::Abort(AbortReason::Aborted) && e.error.is_none())
            .count();
        for e in &mine {
            assert!(e.error.is_none() || e.error == Some("NoSuchUpload"), "{e:?}");
        }
        if completed > 0 {
            assert_eq!((aborted, won_abort), (0, 0), "{key}: completed, so no abort won");
            assert!((1..=completed).contains(&won_complete), "{key}: {mine:?}");
            assert!(engine.head_object(BUCKET, key).is_ok(), "{key}");
        } else {
            assert_eq!((aborted, won_abort, won_complete), (1, 1, 0), "{key}: one abort won");
            assert!(engine.head_object(BUCKET, key).is_err(), "{key}");
        }
        let failed = calls.iter().filter(|(_, _, r)| r.is_err()).count();
        let failed_events = mine.iter().filter(|e| e.error.is_some()).count();
        assert!(failed_events <= failed, "{key}: {mine:?}");
    }
}

fn code(e: &EngineError) -> String {
    e.s3_code().to_owned()
}

#[test]
fn compaction_runs_while_transitions_commit() {
    // Compaction logs its moves and waits for them while it holds the payload store's
    // compaction lock; committing threads' group-commit leaders apply their batches (which
    // takes that store's locks) before waking their batch. Neither may wait for the other.
    let dir = tempfile::tempdir().unwrap();
    let clock = ManualClock::new(1_700_000_000_000);
    let engine = open(dir.path(), &clock);
    engine.create_bucket("creator", BUCKET).unwrap();
    let writers_done = std::sync::atomic::AtomicBool::new(false);
    let (done_tx, done_rx) = std::sync::mpsc::channel();
    let worker = {
        let engine = Arc::clone(&engine);
        std::thread::spawn(move || {
            let compacted = std::thread::scope(|scope| {
                let writers: Vec<_> = (0..THREADS)
                    .map(|thread| {
                        let engine = &engine;
                        scope.spawn(move || {
                            for round in 0..rounds(64) {
                                // Not inline (over 64 bytes): each lands in a payload segment,
                                // and the delete leaves it dead for compaction.
                                let mut bytes = part_bytes(round, thread, 1);
                                bytes.resize(100 + round % 50, thread as u8);
                                let key = format!("compact/{thread}/{round}");
                                let put = ObjectPut {
                                    bucket: BUCKET,
                                    key: &key,
                                    content_length: Some(bytes.len() as u64),
                                    ..ObjectPut::default()
                                };
                                engine.put_object("writer", &put, &mut &bytes[..]).unwrap();
                                if round % 4 != 0 {
                                    engine.delete_object("writer", BUCKET, &key).unwrap();
                                }
                            }
                        })
                    })
                    .collect();
                let compactor = scope.spawn(|| {
                    let mut segments = 0;
                    while !writers_done.load(std::sync::atomic::Ordering::Relaxed) {
                        segments += engine.compact().unwrap().segments_compacted;
                    }
                    segments
                });
                for writer in writers {
                    writer.join().unwrap();
                }
                writers_done.store(true, std::sync::atomic::Ordering::Relaxed);
                compactor.join().unwrap()
            });
            done_tx.send(compacted).unwrap();
        })
    };
    let compacted = done_rx
        .recv_timeout(std::time::Duration::from_secs(120))
        .expect("commits and compaction deadlocked");
    worker.join().unwrap();
    assert!(compacted > 0, "compaction ran while the writers did");
    // What is left reads back, before and after a reopen.
    let kept: Vec<(String, Vec<u8>)> = (0..THREADS)
        .flat_map(|thread| {
            (0..rounds(64)).filter(|round| round % 4 == 0).map(move |round| {
                let mut bytes = part_bytes(round, thread, 1);
                bytes.resize(100 + round % 50, thread as u8);
                (format!("compact/{thread}/{round}"), bytes)
            })
        })
        .collect();
    for (key, bytes) in &kept {
        assert_eq!(&read(&engine, key), bytes, "{key}");
    }
    drop(engine);
    let engine = open(dir.path(), &clock);
    for (key, bytes) in &kept {
        assert_eq!(&read(&engine, key), bytes, "{key} after reopen");
    }
}

/// One racer's conditional write: a PutObject, or the completion of its own upload (whose one
/// part it uploaded before the race).
fn conditional_write(
    engine: &Engine,
    key: &str,
    thread: usize,
    upload: Option<&(String, [u8; 16])>,
    bytes: &[u8],
    condition: WriteCondition,
) -> Result<ObjectInfo, EngineError> {
    let actor = format!("writer-{thread}");
    match upload {
        Some((id, md5)) => engine.complete_upload(
            &actor,
            &Completion {
                bucket: BUCKET,
                key,
                upload_id: id,
                parts: vec![CompletePart { part_number: 1, etag: *md5, checksum: None }],
                condition: Some(condition),
                ..Completion::default()
            },
        ),
        None => {
            let put = ObjectPut {
                bucket: BUCKET,
                key,
                content_length: Some(bytes.len() as u64),
                condition: Some(condition),
                ..ObjectPut::default()
            };
            engine.put_object(&actor, &put, &mut &bytes[..])
        }
    }
}

/// Writers racing with `If-None-Match: *` (create only if absent), then with `If-Match` of the
/// object they all saw (replace only if unchanged): each race has exactly one winner, the
/// others fail with PreconditionFailed, and the key holds the winner's bytes, before and after
/// a reopen. Half the racers put an object, half complete an upload; a completion repeated
/// after it won answers as it did, though its condition no longer holds.
#[test]
fn conditional_writes_race_to_one_winner() {
    let dir = tempfile::tempdir().unwrap();
    let clock = ManualClock::new(1_700_000_000_000);
    let mut engine = open(dir.path(), &clock);
    engine.create_bucket("creator", BUCKET).unwrap();
    let mut kept: BTreeMap<String, Vec<u8>> = BTreeMap::new();
    for round in 0..rounds(16) {
        let key = format!("conditional/{round}");
        let mut current: Option<Etag> = None;
        for stage in 0..2 {
            let condition = match current {
                None => WriteCondition { if_none_match: Some(EtagMatch::Any), if_match: None },
                Some(etag) => {
                    WriteCondition { if_match: Some(EtagMatch::Etag(etag)), if_none_match: None }
                }
            };
            let attempt = stage + 1;
            // Odd threads complete an upload prepared before the race.
            let uploads: Vec<Option<(String, [u8; 16])>> = (0..THREADS)
                .map(|thread| {
                    (thread % 2 == 1).then(|| {
                        let bytes = part_bytes(round, thread, attempt);
                        let id = engine
                            .create_upload("creator", BUCKET, &key, ObjectMeta::default())
                            .unwrap()
                            .upload_id
                            .to_string();
                        put(&engine, "creator", &key, &id, 1, &bytes).unwrap();
                        (id, md5_of(&bytes))
                    })
                })
                .collect();
            let barrier = Barrier::new(THREADS);
            let results: Vec<Result<ObjectInfo, EngineError>> = std::thread::scope(|scope| {
                let handles: Vec<_> = (0..THREADS)
                    .map(|thread| {
                        let (barrier, key, engine) = (&barrier, &key, &engine);
                        let upload = uploads[thread].as_ref();
                        scope.spawn(move || {
                            let bytes = part_bytes(round, thread, attempt);
                            barrier.wait();
                            conditional_write(engine, key, thread, upload, &bytes, condition)
                        })
                    })
                    .collect();
                handles.into_iter().map(|h| h.join().unwrap()).collect()
            });
            let winners: Vec<usize> = (0..THREADS).filter(|&t| results[t].is_ok()).collect();
            assert_eq!(winners.len(), 1, "round {round} stage {stage}: {results:?}");
            let winner = winners[0];
            for (thread, result) in results.iter().enumerate() {
                if let Err(e) = result {
                    assert_eq!(code(e), "PreconditionFailed", "round {round} thread {thread}");
                }
            }
            let object = results[winner].as_ref().unwrap().clone();
            let bytes = part_bytes(round, winner, attempt);
            assert_eq!(read(&engine, &key), bytes, "round {round} stage {stage}");
            assert_eq!(engine.head_object(BUCKET, &key).unwrap().etag, object.etag);
            if let Some(upload) = uploads[winner].as_ref() {
                let again = conditional_write(&engine, &key, winner, Some(upload), &[], condition);
                assert_eq!(again.unwrap().etag, object.etag, "a repeated completion");
            }
            // The losers' uploads are still open: a conditional write that fails changes nothing.
            for (id, _) in
                uploads.iter().enumerate().filter(|(t, _)| *t != winner).flat_map(|(_, u)| u)
            {
                engine.get_upload(BUCKET, &key, id).unwrap();
                engine.abort_upload("creator", BUCKET, &key, id, None).unwrap();
            }
            current = Some(object.etag);
            kept.insert(key.clone(), bytes);
            clock.advance_ms(1);
        }
    }
    drop(engine);
    engine = open(dir.path(), &clock);
    for (key, bytes) in &kept {
        assert_eq!(&read(&engine, key), bytes, "{key} after reopen");
    }
    assert_eq!(engine.stats().live_uploads, 0);
    check_payload_references(&engine, kept.values());
}

/// Retries of one completion racing with `If-None-Match: *`: the first to commit creates the
/// object, and those that commit after it are repeats, answered as it was (their condition,
/// no object at the key, held when the first applied; it no longer holds, and must not count).
#[test]
fn racing_retries_of_a_conditional_completion_all_succeed() {
    let dir = tempfile::tempdir().unwrap();
    let clock = ManualClock::new(1_700_000_000_000);
    let engine = open(dir.path(), &clock);
    engine.create_bucket("creator", BUCKET).unwrap();
    let condition = WriteCondition { if_none_match: Some(EtagMatch::Any), if_match: None };
    for round in 0..rounds(16) {
        let key = format!("retried/{round}");
        let bytes = part_bytes(round, 0, 0);
        let id = engine
            .create_upload("creator", BUCKET, &key, ObjectMeta::default())
            .unwrap()
            .upload_id
            .to_string();
        put(&engine, "creator", &key, &id, 1, &bytes).unwrap();
        let upload = (id, md5_of(&bytes));
        let barrier = Barrier::new(THREADS);
        let results: Vec<Result<ObjectInfo, EngineError>> = std::thread::scope(|scope| {
            let handles: Vec<_> = (0..THREADS)
                .map(|thread| {
                    let (barrier, key, engine, upload) = (&barrier, &key, &engine, &upload);
                    scope.spawn(move || {
                        barrier.wait();
                        conditional_write(engine, key, thread, Some(upload), &[], condition)
                    })
                })
                .collect();
            handles.into_iter().map(|h| h.join().unwrap()).collect()
        });
        let expected = multipart_etag(&[upload.1]);
        for (thread, result) in results.iter().enumerate() {
            assert_eq!(
                result.as_ref().map(|o| o.etag).map_err(code),
                Ok(expected),
                "round {round} thread {thread}"
            );
        }
        assert_eq!(read(&engine, &key), bytes);
        clock.advance_ms(1);
    }
}
