//! The operator's offline commands, run as the built `tessera` binary on data directories the
//! engine made directly: what inspect, uploads and journal show; that verify passes a clean
//! directory and names the file and offset of a flipped byte in a payload or log segment; that
//! gc, compact, checkpoint and repair do their work and say what they did; that the reading
//! commands leave the directory as it was; and that every command refuses a directory a
//! running `tessera serve` holds, or one that is missing or not Tessera's.

#![allow(
    missing_docs,
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::indexing_slicing,
    clippy::panic,
    clippy::cast_possible_truncation
)]

use std::collections::BTreeMap;
use std::ffi::OsStr;
use std::io::{BufRead, BufReader};
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use tessera_engine::{
    CompletePart, Completion, Engine, EngineConfig, ObjectMeta, ObjectPut, PartUpload,
};

const WAL_SEGMENT: &str = "wal/00000000000000000001.wal";
const PAYLOAD_SEGMENT: &str = "payload/00000000000000000001.seg";
/// The test engine's lifecycle "day": uploads in the bucket `scratch` are due after it.
const DAY_MS: u64 = 300;

struct Run {
    code: Option<i32>,
    stdout: String,
    stderr: String,
}

impl Run {
    fn ok(&self) -> bool {
        self.code == Some(0)
    }
}

impl std::fmt::Display for Run {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "exit {:?}\n--- stdout\n{}--- stderr\n{}", self.code, self.stdout, self.stderr)
    }
}

fn tessera<S: AsRef<OsStr>>(args: &[S]) -> Run {
    let output = Command::new(env!("CARGO_BIN_EXE_tessera"))
        .args(args)
        .env_remove("TESSERA_DATA")
        .env("RUST_LOG", "warn")
        .stdin(Stdio::null())
        .output()
        .unwrap();
    Run {
        code: output.status.code(),
        stdout: String::from_utf8(output.stdout).unwrap(),
        stderr: String::from_utf8(output.stderr).unwrap(),
    }
}

/// `tessera <command> <dir> <extra...>`.
fn cmd(command: &str, dir: &Path, extra: &[&str]) -> Run {
    let mut args: Vec<&OsStr> = vec![OsStr::new(command), dir.as_os_str()];
    args.extend(extra.iter().map(OsStr::new));
    tessera(&args)
}

fn body(seed: u8, len: usize) -> Vec<u8> {
    (0..len).map(|i| ((i as u64).wrapping_mul(2_654_435_761) >> 7) as u8 ^ seed).collect()
}

/// What the fixture made.
struct Fixture {
    _root: tempfile::TempDir,
    data: PathBuf,
    /// The upload `photos/2025/a.jpg` (two parts).
    upload_a: String,
    /// The LSN of the checkpoint taken part-way.
    checkpoint_lsn: u64,
    /// The last LSN.
    last_lsn: u64,
}

fn create(engine: &Engine, bucket: &str, key: &str) -> String {
    engine.create_upload("alice", bucket, key, ObjectMeta::default()).unwrap().upload_id.to_string()
}

fn part(engine: &Engine, bucket: &str, key: &str, id: &str, number: u32, bytes: &[u8]) -> [u8; 16] {
    let request = PartUpload {
        bucket,
        key,
        upload_id: id,
        part_number: number,
        content_length: Some(bytes.len() as u64),
        ..PartUpload::default()
    };
    engine.put_part("alice", &request, &mut &bytes[..]).unwrap().part.etag.md5
}

/// Three buckets; five uploads in progress holding five parts (104 KiB); three objects; one
/// aborted upload (dead payload bytes); a checkpoint part-way, so the journal has a file and
/// later history is in the log only.
fn fixture() -> Fixture {
    let root = tempfile::tempdir().unwrap();
    let data = root.path().join("data");
    let config = EngineConfig { min_part_bytes: 1, day_ms: DAY_MS, ..EngineConfig::default() };
    let engine = Engine::open(&data, config).unwrap();
    for bucket in ["photos", "logs", "scratch"] {
        engine.create_bucket("alice", bucket).unwrap();
    }
    let rule = tessera_engine::AbortRule { id: "r".to_owned(), prefix: String::new(), days: 1 };
    engine.set_lifecycle("alice", "scratch", vec![rule]).unwrap();
    let a = create(&engine, "photos", "2025/a.jpg");
    part(&engine, "photos", "2025/a.jpg", &a, 1, &body(1, 20 << 10));
    part(&engine, "photos", "2025/a.jpg", &a, 2, &body(2, 20 << 10));
    let checkpoint_lsn = engine.checkpoint().unwrap().unwrap().lsn;
    let b = create(&engine, "photos", "2025/b.jpg");
    part(&engine, "photos", "2025/b.jpg", &b, 1, &body(3, 24 << 10));
    create(&engine, "photos", "raw/c.raw");
    let x = create(&engine, "logs", "x.log");
    part(&engine, "logs", "x.log", &x, 1, &body(4, 20 << 10));
    let t = create(&engine, "scratch", "tmp1");
    part(&engine, "scratch", "tmp1", &t, 1, &body(5, 20 << 10));
    // Dead bytes between live entries.
    let gone = create(&engine, "photos", "aborted");
    part(&engine, "photos", "aborted", &gone, 1, &body(10, 20 << 10));
    engine.abort_upload("alice", "photos", "aborted", &gone, None).unwrap();
    let d = create(&engine, "photos", "done.jpg");
    let parts = (1..=2)
        .map(|n| CompletePart {
            part_number: n,
            etag: part(&engine, "photos", "done.jpg", &d, n, &body(5 + n as u8, 20 << 10)),
            checksum: None,
        })
        .collect();
    let completion = Completion {
        bucket: "photos",
        key: "done.jpg",
        upload_id: &d,
        parts,
        ..Completion::default()
    };
    engine.complete_upload("alice", &completion).unwrap();
    for (key, bytes) in [("put.txt", body(8, 30 << 10)), ("small.txt", body(9, 100))] {
        let put = ObjectPut {
            bucket: "logs",
            key,
            content_length: Some(bytes.len() as u64),
            ..ObjectPut::default()
        };
        engine.put_object("alice", &put, &mut &bytes[..]).unwrap();
    }
    let last_lsn = engine.stats().applied_lsn;
    drop(engine);
    Fixture { _root: root, data, upload_a: a, checkpoint_lsn, last_lsn }
}

/// Every file's bytes but the lock file's (which names its holder).
fn snapshot(dir: &Path) -> BTreeMap<PathBuf, Vec<u8>> {
    let mut files = BTreeMap::new();
    let mut stack = vec![dir.to_path_buf()];
    while let Some(d) = stack.pop() {
        for entry in std::fs::read_dir(&d).unwrap() {
            let entry = entry.unwrap();
            if entry.file_type().unwrap().is_dir() {
                stack.push(entry.path());
            } else if entry.file_name() != "LOCK" {
                files.insert(entry.path(), std::fs::read(entry.path()).unwrap());
            }
        }
    }
    files
}

/// The frames of a log segment: (offset, lsn, bytes), read as docs/format.md §3 lays them out.
fn frames(segment: &[u8]) -> Vec<(usize, u64, usize)> {
    let mut out = Vec::new();
    let mut at = 32;
    while at + 24 <= segment.len() {
        let len = u32::from_le_bytes(segment[at + 4..at + 8].try_into().unwrap()) as usize;
        let lsn = u64::from_le_bytes(segment[at + 8..at + 16].try_into().unwrap());
        if len == 0 || segment[at + 20] == 0 {
            break;
        }
        let bytes = (24 + len).next_multiple_of(8);
        out.push((at, lsn, bytes));
        at += bytes;
    }
    out
}

fn flip(path: &Path, offset: usize) {
    let mut bytes = std::fs::read(path).unwrap();
    bytes[offset] ^= 0x5a;
    std::fs::write(path, bytes).unwrap();
}

/// Flips a payload byte of the frame holding `lsn`; returns the frame's offset.
fn corrupt_frame(data: &Path, lsn: u64) -> usize {
    let path = data.join(WAL_SEGMENT);
    let (offset, _, _) = *frames(&std::fs::read(&path).unwrap())
        .iter()
        .find(|(_, l, _)| *l == lsn)
        .expect("the frame is in the first segment");
    flip(&path, offset + 24 + 1);
    offset
}

fn json(run: &Run) -> serde_json::Value {
    assert!(run.ok(), "{run}");
    serde_json::from_str(&run.stdout).unwrap()
}

#[test]
fn inspect_shows_counts_bytes_and_log_checkpoint_and_journal_state() {
    let f = fixture();
    let run = cmd("inspect", &f.data, &[]);
    assert!(run.ok(), "{run}");
    let line = |label: &str| {
        run.stdout
            .lines()
            .find(|l| l.split("  ").next() == Some(label))
            .unwrap_or_else(|| panic!("no {label} line:\n{run}"))
            .to_owned()
    };
    assert!(line("buckets").ends_with("  3"), "{run}");
    assert!(line("uploads").ends_with("5 in progress, 5 parts"), "{run}");
    assert!(line("objects").ends_with("  3"), "{run}");
    assert!(line("log").contains(&format!("LSNs 1..={}", f.last_lsn)), "{run}");
    assert!(line("log").contains("no torn tail"), "{run}");
    assert!(line("checkpoint").contains(&format!("LSN {} (1 kept)", f.checkpoint_lsn)), "{run}");
    assert!(line("journal").contains(&format!("covers LSN {}", f.checkpoint_lsn)), "{run}");
    assert!(line("journal").contains("no damage"), "{run}");
    // Values start in one column.
    let columns: Vec<usize> = run
        .stdout
        .lines()
        .map(|l| l.find("  ").unwrap() + l[l.find("  ").unwrap()..].find(|c| c != ' ').unwrap())
        .collect();
    assert!(columns.windows(2).all(|w| w[0] == w[1]), "{run}");

    let j = json(&cmd("inspect", &f.data, &["--json"]));
    assert_eq!((j["buckets"].as_u64(), j["uploads"].as_u64()), (Some(3), Some(5)));
    assert_eq!((j["parts"].as_u64(), j["objects"].as_u64()), (Some(5), Some(3)));
    // Live: the five parts in progress, done.jpg's two, put.txt (small.txt rides in the log).
    let live = (20 + 20 + 24 + 20 + 20 + 20 + 20 + 30) << 10;
    let live_bytes = j["payload"]["live_bytes"].as_u64().unwrap();
    assert!(live_bytes >= live && live_bytes < live + 8 * 48 + 8 * 8, "{j}");
    assert!(j["payload"]["dead_bytes"].as_u64().unwrap() >= 20 << 10, "the aborted part: {j}");
    assert_eq!(j["wal"]["last_lsn"].as_u64(), Some(f.last_lsn));
    assert_eq!(j["wal"]["segments"].as_u64(), Some(1));
    assert!(j["wal"]["torn_tail"].is_null());
    assert_eq!(j["checkpoint"]["lsn"].as_u64(), Some(f.checkpoint_lsn));
    assert_eq!(j["checkpoint"]["records_after"].as_u64(), Some(f.last_lsn - f.checkpoint_lsn));
    assert_eq!(j["journal"]["covered_lsn"].as_u64(), Some(f.checkpoint_lsn));
    assert_eq!(j["journal"]["files"].as_u64(), Some(1));
}

#[test]
fn reading_commands_leave_the_directory_as_it_was_even_with_a_torn_tail() {
    let f = fixture();
    // Garbage after the log's last frame: a torn write, which any open zeroes.
    let wal = f.data.join(WAL_SEGMENT);
    let segment = std::fs::read(&wal).unwrap();
    let (last, _, bytes) = *frames(&segment).last().unwrap();
    let end = last + bytes;
    let mut torn = segment.clone();
    torn[end..end + 40].fill(0xee);
    std::fs::write(&wal, &torn).unwrap();
    let before = snapshot(&f.data);

    let inspected = json(&cmd("inspect", &f.data, &["--json"]));
    assert!(!inspected["wal"]["torn_tail"].is_null(), "{inspected}");
    assert!(inspected["next_open"]["payload_tail_bytes_cut"].as_u64().is_some());
    let verified = cmd("verify", &f.data, &[]);
    assert!(verified.ok(), "a torn tail is not damage: {verified}");
    assert!(
        verified.stdout.contains("note:") && verified.stdout.contains("torn tail"),
        "{verified}"
    );
    assert!(cmd("uploads", &f.data, &[]).ok());
    assert!(cmd("journal", &f.data, &["--json"]).ok());
    assert_eq!(snapshot(&f.data), before, "no file changed");
}

#[test]
fn verify_passes_a_clean_directory_with_a_summary() {
    let f = fixture();
    let run = cmd("verify", &f.data, &[]);
    assert!(run.ok(), "{run}");
    let summary = run.stdout.lines().last().unwrap();
    assert!(summary.ends_with(", no damage"), "{run}");
    assert!(summary.starts_with(&format!("{} frames, 1 checkpoint, ", f.last_lsn)), "{run}");
    // Every entry of the payload segment: 8 live parts and objects and the aborted part.
    assert!(summary.contains(", 9 payloads, "), "{run}");
    // Every committed transition but none of the engine's own: one journal entry each.
    assert!(summary.contains(&format!(", {} journal entries, ", f.last_lsn)), "{run}");
    assert!(!run.stdout.contains("damage:"), "{run}");
}

#[test]
fn verify_names_the_file_and_offset_of_a_flipped_payload_byte() {
    let f = fixture();
    // The first entry (offset 32) is part 1 of photos/2025/a.jpg: live.
    flip(&f.data.join(PAYLOAD_SEGMENT), 32 + 48 + 1000);
    let run = cmd("verify", &f.data, &[]);
    assert_eq!(run.code, Some(1), "{run}");
    let path = f.data.join(PAYLOAD_SEGMENT);
    let expected = format!("damage: {} offset 32: ", path.display());
    let line =
        run.stdout.lines().find(|l| l.starts_with(&expected)).unwrap_or_else(|| panic!("{run}"));
    assert!(line.contains("hash") && line.contains("a live payload"), "{line}");
    assert_eq!(run.stdout.matches("damage:").count(), 1, "{run}");
    assert!(run.stdout.lines().last().unwrap().ends_with(", 1 damaged"), "{run}");

    // A damaged entry header: the scan stops there, and the live payloads after it are named.
    let g = fixture();
    flip(&g.data.join(PAYLOAD_SEGMENT), 32 + 4);
    let run = cmd("verify", &g.data, &[]);
    assert_eq!(run.code, Some(1), "{run}");
    let expected = format!("damage: {} offset 32: ", g.data.join(PAYLOAD_SEGMENT).display());
    let line =
        run.stdout.lines().find(|l| l.starts_with(&expected)).unwrap_or_else(|| panic!("{run}"));
    assert!(line.contains("live payload(s) from offset 32"), "{line}");
}

#[test]
fn verify_names_the_file_and_offset_of_a_flipped_log_byte_and_repair_cuts_there() {
    let f = fixture();
    let lsn = f.checkpoint_lsn + 2;
    let offset = corrupt_frame(&f.data, lsn);
    let wal = f.data.join(WAL_SEGMENT);
    let run = cmd("verify", &f.data, &[]);
    assert_eq!(run.code, Some(1), "{run}");
    assert!(run.stdout.contains(&format!("damage: {} offset {offset}: ", wal.display())), "{run}");
    // The payload segments were still checked.
    assert!(run.stdout.contains(", 9 payloads, "), "{run}");
    assert!(run.stderr.contains("damaged item(s)"), "{run}");

    let repaired = cmd("repair", &f.data, &[]);
    assert!(repaired.ok(), "{repaired}");
    let broken = format!("{}.broken", wal.display());
    assert!(
        repaired.stdout.contains(&format!("cut {} at offset {offset}: removed ", wal.display())),
        "{repaired}"
    );
    assert!(repaired.stdout.contains(&format!("LSN {lsn} on (")), "{repaired}");
    assert!(repaired.stdout.contains(&format!("kept as {broken}")), "{repaired}");
    assert!(
        repaired.stdout.contains(&format!("the log now ends at LSN {}", lsn - 1)),
        "{repaired}"
    );
    assert!(
        repaired.stdout.contains(&format!("the directory opens: LSNs up to {}", lsn - 1)),
        "{repaired}"
    );
    assert!(Path::new(&broken).exists());
    assert_eq!(std::fs::metadata(&wal).unwrap().len(), offset as u64, "cut at the damaged frame");

    // Now clean; and a second repair changes nothing.
    let run = cmd("verify", &f.data, &[]);
    assert!(run.ok(), "{run}");
    assert!(run.stdout.starts_with(&format!("{} frames, ", lsn - 1)), "{run}");
    let before = snapshot(&f.data);
    let again = cmd("repair", &f.data, &[]);
    assert!(again.ok(), "{again}");
    assert!(again.stdout.contains("no corruption in the log"), "{again}");
    assert!(again.stdout.contains("nothing changed"), "{again}");
    assert_eq!(snapshot(&f.data), before);
}

#[test]
fn repair_of_a_clean_directory_changes_nothing() {
    let f = fixture();
    let before = snapshot(&f.data);
    let run = cmd("repair", &f.data, &[]);
    assert!(run.ok(), "{run}");
    assert!(run.stdout.starts_with("no corruption in the log of "), "{run}");
    assert!(
        run.stdout.contains(&format!("the directory opens: LSNs up to {}", f.last_lsn)),
        "{run}"
    );
    assert_eq!(snapshot(&f.data), before);
}

fn upload_lines(run: &Run) -> Vec<String> {
    assert!(run.ok(), "{run}");
    // Upload lines start with the initiation time (24 characters, ending in Z).
    run.stdout.lines().filter(|l| l.get(23..24) == Some("Z")).map(str::to_owned).collect()
}

#[test]
fn uploads_lists_uploads_in_progress_with_filters() {
    let f = fixture();
    let all = cmd("uploads", &f.data, &[]);
    assert!(all.stdout.starts_with("INITIATED "), "{all}");
    let lines = upload_lines(&all);
    assert_eq!(lines.len(), 5, "{all}");
    assert!(all.stdout.trim_end().ends_with("5 uploads, 5 parts, 104.0 KiB"), "{all}");
    let a = lines.iter().find(|l| l.ends_with("  2025/a.jpg")).unwrap();
    assert!(a.contains(&f.upload_a), "{a}");
    let columns: Vec<&str> = a.split_whitespace().collect();
    assert_eq!(columns[2..], ["2", "40.0", "KiB", &f.upload_a, "photos", "2025/a.jpg"], "{a}");
    let c = lines.iter().find(|l| l.ends_with("  raw/c.raw")).unwrap();
    assert_eq!(c.split_whitespace().nth(2), Some("0"), "{c}");

    let photos = upload_lines(&cmd("uploads", &f.data, &["--bucket", "photos"]));
    assert_eq!(photos.len(), 3);
    assert!(photos.iter().all(|l| l.contains("  photos  ")));
    let prefixed =
        upload_lines(&cmd("uploads", &f.data, &["--bucket", "photos", "--prefix", "2025/"]));
    let keys: Vec<&str> = prefixed.iter().map(|l| l.rsplit("  ").next().unwrap()).collect();
    assert_eq!(keys, ["2025/a.jpg", "2025/b.jpg"]);
    let anywhere = upload_lines(&cmd("uploads", &f.data, &["--prefix", "x."]));
    assert_eq!(anywhere.len(), 1);
    let columns: Vec<&str> = anywhere[0].split_whitespace().collect();
    assert_eq!(columns[columns.len() - 2..], ["logs", "x.log"], "{anywhere:?}");
    let none = cmd("uploads", &f.data, &["--prefix", "nothing/"]);
    assert_eq!(none.stdout, "no uploads in progress\n", "{none}");
    let missing = cmd("uploads", &f.data, &["--bucket", "nope"]);
    assert!(!missing.ok() && missing.stderr.contains("nope"), "{missing}");
}

#[test]
fn journal_queries_by_upload_bucket_prefix_and_time_and_exports_json_lines() {
    let f = fixture();
    let by_upload = cmd("journal", &f.data, &["--upload", &f.upload_a]);
    assert!(by_upload.ok(), "{by_upload}");
    let ops: Vec<&str> =
        by_upload.stdout.lines().map(|l| l.split_whitespace().nth(3).unwrap()).collect();
    assert_eq!(ops, ["create_upload", "put_part", "put_part"], "{by_upload}");
    assert!(
        by_upload
            .stdout
            .lines()
            .all(|l| l.contains("photos/2025/a.jpg") && l.contains("  ok  by alice"))
    );

    let lines = cmd("journal", &f.data, &["--bucket", "photos", "--prefix", "2025/", "--json"]);
    assert!(lines.ok(), "{lines}");
    let entries: Vec<serde_json::Value> =
        lines.stdout.lines().map(|l| serde_json::from_str(l).unwrap()).collect();
    // a.jpg: create and two parts; b.jpg: create and a part.
    assert_eq!(entries.len(), 5, "{lines}");
    let mut lsns = Vec::new();
    for e in &entries {
        assert_eq!(e["bucket"], "photos");
        assert!(e["key"].as_str().unwrap().starts_with("2025/"));
        assert_eq!(e["outcome"], "ok");
        lsns.push(e["lsn"].as_u64().unwrap());
    }
    assert!(lsns.is_sorted(), "oldest first: {lsns:?}");
    // History before and after the checkpoint (journal file, and re-derived from the log).
    assert!(lsns.first().unwrap() <= &f.checkpoint_lsn && lsns.last().unwrap() > &f.checkpoint_lsn);

    let newest = cmd("journal", &f.data, &["--newest-first", "--limit", "1", "--json"]);
    let newest: serde_json::Value = serde_json::from_str(newest.stdout.trim()).unwrap();
    assert_eq!(
        (newest["lsn"].as_u64(), newest["op"].as_str()),
        (Some(f.last_lsn), Some("put_object"))
    );

    let all = cmd("journal", &f.data, &["--json"]);
    assert_eq!(all.stdout.lines().count() as u64, f.last_lsn, "{all}");
    let first: serde_json::Value =
        serde_json::from_str(all.stdout.lines().next().unwrap()).unwrap();
    let since = first["time_ms"].as_u64().unwrap();
    let future = (since + 3_600_000).to_string();
    assert_eq!(cmd("journal", &f.data, &["--since", &future]).stdout, "");
    let rfc = cmd("journal", &f.data, &["--since", "2000-01-01T00:00:00Z", "--json"]);
    assert_eq!(rfc.stdout.lines().count() as u64, f.last_lsn, "{rfc}");
    let bad = cmd("journal", &f.data, &["--since", "yesterday"]);
    assert!(!bad.ok() && bad.stderr.contains("RFC 3339"), "{bad}");
    let conflicting = cmd("journal", &f.data, &["--upload", &f.upload_a, "--bucket", "photos"]);
    assert!(!conflicting.ok(), "{conflicting}");
}

#[test]
fn gc_expires_due_uploads_and_says_how_much_it_freed() {
    let f = fixture();
    // The scratch bucket's rule aborts its uploads one (test) day after initiation.
    std::thread::sleep(Duration::from_millis(DAY_MS + 50));
    let run = cmd("gc", &f.data, &[]);
    assert!(run.ok(), "{run}");
    assert_eq!(run.stdout.trim(), "expired 1 upload, freed 20.0 KiB (20480 bytes)", "{run}");
    let lines = upload_lines(&cmd("uploads", &f.data, &[]));
    assert_eq!(lines.len(), 4);
    assert!(!lines.iter().any(|l| l.contains("scratch")));
    let expired =
        cmd("journal", &f.data, &["--bucket", "scratch", "--newest-first", "--limit", "1"]);
    assert!(
        expired.stdout.contains("  expire ") && expired.stdout.contains("by tessera"),
        "{expired}"
    );
    let again = cmd("gc", &f.data, &[]);
    assert_eq!(again.stdout.trim(), "expired 0 uploads, freed 0 B (0 bytes)", "{again}");
}

#[test]
fn compact_and_checkpoint_print_their_reports() {
    let f = fixture();
    {
        // Most of the payload segment dead: abort every upload but one, delete the objects.
        let engine =
            Engine::open(&f.data, EngineConfig { min_part_bytes: 1, ..EngineConfig::default() })
                .unwrap();
        for bucket in ["photos", "logs", "scratch"] {
            let page = engine.list_uploads(bucket, &Default::default()).unwrap();
            for upload in page.uploads.iter().filter(|u| &*u.key != "2025/b.jpg") {
                let id = upload.upload_id.to_string();
                engine.abort_upload("alice", bucket, &upload.key, &id, None).unwrap();
            }
        }
        for (bucket, key) in [("photos", "done.jpg"), ("logs", "put.txt"), ("logs", "small.txt")] {
            engine.delete_object("alice", bucket, key).unwrap();
        }
    }
    let before = json(&cmd("inspect", &f.data, &["--json"]));
    // a.jpg's parts lie before b.jpg's (the entries after it are cut by any open).
    assert!(before["payload"]["dead_bytes"].as_u64().unwrap() >= 2 * (20 << 10), "{before}");
    let run = cmd("compact", &f.data, &[]);
    assert!(run.ok(), "{run}");
    assert!(run.stdout.starts_with("compacted 1 segment: moved 1 payload, reclaimed "), "{run}");
    let after = json(&cmd("inspect", &f.data, &["--json"]));
    assert_eq!(after["payload"]["live_bytes"].as_u64(), Some((24 << 10) + 48), "{after}");
    // Nothing dead but the new segment's 32-byte header (the engine counts it as not live).
    assert_eq!(after["payload"]["dead_bytes"].as_u64(), Some(32), "{after}");
    assert_eq!(after["payload"]["segments"].as_u64(), Some(1), "{after}");
    assert!(cmd("verify", &f.data, &[]).ok());

    let last = after["wal"]["last_lsn"].as_u64().unwrap();
    let run = cmd("checkpoint", &f.data, &[]);
    assert!(run.ok(), "{run}");
    assert!(run.stdout.starts_with(&format!("checkpoint at LSN {last}: ")), "{run}");
    assert!(run.stdout.contains(" bytes), written in "), "{run}");
    let again = cmd("checkpoint", &f.data, &[]);
    assert_eq!(
        again.stdout.trim(),
        format!("nothing to checkpoint: the checkpoint at LSN {last} covers every record"),
        "{again}"
    );
    let inspected = json(&cmd("inspect", &f.data, &["--json"]));
    assert_eq!(inspected["checkpoint"]["lsn"].as_u64(), Some(last));
    assert_eq!(inspected["checkpoint"]["records_after"].as_u64(), Some(0));
}

/// A `tessera serve` on `data`, killed when dropped.
struct Serving(std::process::Child);

impl Drop for Serving {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

fn serve(data: &Path) -> Serving {
    let mut child = Command::new(env!("CARGO_BIN_EXE_tessera"))
        .arg("serve")
        .args(["--listen", "127.0.0.1:0", "--data"])
        .arg(data)
        // `--admin-listen off`, as the environment says it: a build without the admin
        // listener ignores the variable.
        .env("TESSERA_ADMIN_LISTEN", "off")
        .env_remove("TESSERA_ACCESS_KEY")
        .env_remove("TESSERA_SECRET_KEY")
        .env("RUST_LOG", "warn")
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    let stdout = child.stdout.take().unwrap();
    let serving = Serving(child);
    let started = Instant::now();
    for line in BufReader::new(stdout).lines() {
        if line.unwrap().starts_with("listening on ") {
            return serving;
        }
        assert!(started.elapsed() < Duration::from_secs(60), "the server did not start");
    }
    panic!("the server exited before listening");
}

#[test]
fn every_command_refuses_a_directory_a_server_holds() {
    let f = fixture();
    let server = serve(&f.data);
    for command in
        ["inspect", "verify", "uploads", "journal", "gc", "compact", "checkpoint", "repair"]
    {
        let run = cmd(command, &f.data, &[]);
        assert_eq!(run.code, Some(1), "{command}: {run}");
        assert!(
            run.stderr.contains(&format!("the data directory {} is in use", f.data.display())),
            "{command}: {run}"
        );
        assert!(run.stderr.contains("`tessera serve`"), "{command}: {run}");
        assert!(run.stdout.is_empty(), "{command}: {run}");
    }
    drop(server);
    let run = cmd("inspect", &f.data, &[]);
    assert!(run.ok(), "free again once the server is gone: {run}");
}

#[test]
fn a_missing_or_foreign_directory_is_a_clear_error_and_is_not_created() {
    let root = tempfile::tempdir().unwrap();
    let missing = root.path().join("missing");
    let empty = root.path().join("empty");
    std::fs::create_dir(&empty).unwrap();
    std::fs::create_dir(empty.join("wal")).unwrap();
    let file = root.path().join("file");
    std::fs::write(&file, b"not a directory").unwrap();
    for command in
        ["inspect", "verify", "uploads", "journal", "gc", "compact", "checkpoint", "repair"]
    {
        let run = cmd(command, &missing, &[]);
        assert_eq!(run.code, Some(1), "{command}: {run}");
        assert!(
            run.stderr.contains(&format!("{}: no such data directory", missing.display())),
            "{run}"
        );
        assert!(!missing.exists(), "{command} created it");
        let run = cmd(command, &empty, &[]);
        assert_eq!(run.code, Some(1), "{command}: {run}");
        assert!(run.stderr.contains("is not a Tessera data directory"), "{run}");
        let run = cmd(command, &file, &[]);
        assert!(run.stderr.contains("is not a directory"), "{run}");
        assert!(!run.stderr.contains("panicked"), "{run}");
    }
    let names: Vec<_> =
        std::fs::read_dir(&empty).unwrap().map(|e| e.unwrap().file_name()).collect();
    assert_eq!(names, ["wal"], "nothing created in a foreign directory");
    assert_eq!(std::fs::read_dir(empty.join("wal")).unwrap().count(), 0);
}
