//! The journal's benchmark, in one run:
//!
//! 1. What keeping history costs the engine: the "mpu-transitions" workload (as in the engine's
//!    benchmark) at 64 clients on an engine with the journal (the default configuration) and
//!    without (`journal: None`), alternating with and without (ABBA order) so that a drift of
//!    the shared machine hits both alike; the mean of each and `journal_slowdown_ratio`
//!    (without / with: 1.25 means the journal costs a fifth of the throughput). The journal's
//!    files, bytes and entries after each run with it show that it really journalled.
//! 2. Query latency over a journal of 10M entries built with the `Journal` API directly
//!    (uploads of create, up to 3 parts, complete or abort, 64 of them in flight at a time, in
//!    4 buckets; staged and flushed every 4 MiB as the engine does): the time to open it (cold,
//!    its files dropped from the page cache first, then warm), then the history of one upload
//!    (median and p99 of random uploads), warm (page cache hot) and cold (the files dropped
//!    from the page cache before each query), and of an upload it never saw (the in-memory
//!    filtering by the blocks' summaries alone). Every result is checked.
//! 3. Export (JSON lines of every entry, to a sink) in entries per second; a query by bucket
//!    and key prefix (all matches, and the newest 100), one by a narrow time range, and one
//!    that no summary can rule out (every block read).
//!
//! Writes `target/bench/journal.json`. Environment:
//! - `TESSERA_BENCH_SECS`: seconds per throughput run (default 5);
//! - `TESSERA_BENCH_JOURNAL_PAIRS`: with/without pairs of runs (default 3);
//! - `TESSERA_BENCH_JOURNAL_ENTRIES`: entries of the query journal (default 10,000,000);
//! - `TESSERA_BENCH_JOURNAL_QUERIES`: upload histories queried, warm and cold (default 200);
//! - `TESSERA_BENCH_DIR`: where the stores go (default `target/`, on the build's disk);
//! - `TESSERA_BENCH_CHECKPOINT_BYTES`: the engine's checkpoint interval in log bytes.
//!
//! With the defaults it takes about a minute and a half on 2 cores and 1.3 GB of disk for the
//! query journal; `TESSERA_BENCH_SECS=1 TESSERA_BENCH_JOURNAL_ENTRIES=200000` takes seconds.

#![allow(missing_docs, clippy::unwrap_used, clippy::expect_used, clippy::indexing_slicing)]
#![allow(clippy::cast_possible_truncation, clippy::panic)]

#[path = "peers/mod.rs"]
#[allow(dead_code, reason = "shared with the engine's benchmark: this one runs no peer")]
mod peers;

#[path = "engine_store/mod.rs"]
mod engine_store;

use std::fs::File;
use std::os::unix::io::AsRawFd;
use std::path::Path;
use std::process::ExitCode;
use std::time::{Duration, Instant};

use serde_json::{Map, Value};
use tessera::Engine;
use tessera::config::JOURNAL_STAGED_BYTES_DEFAULT;
use tessera::journal::{
    Entry, Journal, JournalEtag, JournalOptions, Operation, Query, UPLOAD_ID_BYTES,
};
use tessera::wal::StdFs;

use engine_store::{ACTOR, EngineStore, workload_config};
use peers::SEED;
use peers::workload::{self, BoxError, RunFigures, SplitMix64};

/// Clients of the throughput runs.
const CLIENTS: usize = 64;
/// Buckets of the query journal; every upload goes to one of them.
const BUCKETS: [&str; 4] = ["logs-prod", "logs-staging", "backups", "media"];
/// Hosts naming the query journal's keys (`.../host-17/...`).
const HOSTS: u64 = 64;
/// Uploads in flight at a time while the query journal is built: their entries interleave.
const IN_FLIGHT: usize = 64;
/// The query journal's first entry: 2026-11-24T08:00:00Z.
const START_MS: u64 = 1_795_507_200_000;
/// The bucket and key prefix of the prefix query (1/256 of the uploads match).
const PREFIX_BUCKET: &str = "logs-prod";
const PREFIX: &str = "logs/2026/11/24/host-17/";
/// The narrow time range's length.
const TIME_RANGE_MS: u64 = 1000;

fn main() -> ExitCode {
    // `cargo bench` passes `--bench`; a filter argument that does not match skips this harness.
    if std::env::args().skip(1).any(|a| !a.starts_with('-') && !"journal".contains(a.as_str())) {
        return ExitCode::SUCCESS;
    }
    match bench() {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("journal bench: {e}");
            ExitCode::FAILURE
        }
    }
}

fn env_u64(name: &str, default: u64) -> u64 {
    std::env::var(name).ok().and_then(|s| s.parse().ok()).filter(|&n| n > 0).unwrap_or(default)
}

fn number(x: f64) -> Value {
    serde_json::Number::from_f64((x * 1000.0).round() / 1000.0).map_or(Value::Null, Value::Number)
}

fn bench() -> Result<(), BoxError> {
    let started = Instant::now();
    let secs = peers::seconds_per_point();
    let pairs = env_u64("TESSERA_BENCH_JOURNAL_PAIRS", 3);
    let entries = env_u64("TESSERA_BENCH_JOURNAL_ENTRIES", 10_000_000);
    let queries = env_u64("TESSERA_BENCH_JOURNAL_QUERIES", 200);
    let base = peers::scratch_base()?;
    let scratch = tempfile::Builder::new().prefix("journal-bench-").tempdir_in(&base)?;
    let mut json = Map::new();
    json.insert("seconds_per_point".into(), number(secs));
    json.insert("clients".into(), CLIENTS.into());
    println!(
        "journal bench: {pairs} pairs of {secs} s runs at {CLIENTS} clients, then a journal of \
         {entries} entries; stores under {}",
        scratch.path().display()
    );
    let mut summary = Vec::new();
    overhead(scratch.path(), pairs, Duration::from_secs_f64(secs), &mut json, &mut summary)?;
    queries_10m(scratch.path(), entries, queries, &mut json, &mut summary)?;
    let total_s = started.elapsed().as_secs_f64();
    json.insert("bench_s".into(), number(total_s));
    println!("\nsummary ({total_s:.0} s in all):");
    for line in &summary {
        println!("  {line}");
    }
    let out = peers::target_dir().join("bench");
    std::fs::create_dir_all(&out)?;
    let path = out.join("journal.json");
    std::fs::write(&path, serde_json::to_string_pretty(&Value::Object(json))?)?;
    println!("wrote {}", path.display());
    scratch.close()?;
    Ok(())
}

// ---------------------------------------------------------------------------------------------
// 1. The journal's cost on the engine's throughput.

/// What a run with the journal left in it.
struct JournalAfterRun {
    files: u64,
    bytes: u64,
    covered_lsn: u64,
    staged_entries: u64,
    entries: u64,
}

/// One run: a fresh engine (with or without its journal) in a new directory under `base`.
fn engine_run(
    base: &Path,
    with_journal: bool,
    duration: Duration,
) -> Result<(RunFigures, Option<JournalAfterRun>, String), BoxError> {
    let prefix = if with_journal { "with-journal-" } else { "without-journal-" };
    let dir = tempfile::Builder::new().prefix(prefix).tempdir_in(base)?;
    let mut config = workload_config();
    if !with_journal {
        config.journal = None;
    }
    let engine = Engine::open(dir.path(), config)?;
    engine.create_bucket(ACTOR, workload::BUCKET)?;
    let store = EngineStore { engine: std::sync::Arc::new(engine) };
    let cpu_before = cpu_seconds()?;
    let wall = Instant::now();
    let figures = workload::run(&store, CLIENTS, duration, SEED)?;
    let cores = (cpu_seconds()? - cpu_before) / wall.elapsed().as_secs_f64();
    let wal = store.engine.wal().stats();
    let detail = format!(
        "  {cores:.2} cores busy; log: {:.1} records per batch, {:.0} us per fdatasync, \
         {:.0} KiB per batch",
        wal.records_per_batch(),
        wal.sync_time.as_secs_f64() * 1e6 / wal.batches.max(1) as f64,
        wal.bytes as f64 / 1024.0 / wal.batches.max(1) as f64,
    );
    let after = match (with_journal, store.engine.journal()) {
        (false, None) => None,
        (false, Some(_)) => return Err("the engine kept a journal with `journal: None`".into()),
        (true, None) => {
            let report = store.engine.journal_report();
            return Err(format!("the engine has no journal (open report: {report:?})").into());
        }
        (true, Some(journal)) => {
            let stats = journal.stats();
            let export = journal.export(&Query::default(), &mut std::io::sink())?;
            // Every acknowledged transition (and the bucket's creation) is history.
            if export.entries < figures.transitions + 1 || !export.warnings.is_empty() {
                return Err(format!(
                    "the journal holds {} entries ({} warnings) after {} transitions",
                    export.entries,
                    export.warnings.len(),
                    figures.transitions
                )
                .into());
            }
            Some(JournalAfterRun {
                files: stats.files,
                bytes: stats.bytes,
                covered_lsn: stats.covered_lsn,
                staged_entries: stats.staged_entries,
                entries: export.entries,
            })
        }
    };
    drop(store);
    dir.close()?;
    Ok((figures, after, detail))
}

/// CPU time this process used so far (user and system), from /proc.
fn cpu_seconds() -> Result<f64, BoxError> {
    let stat = std::fs::read_to_string("/proc/self/stat")?;
    // utime and stime: the 12th and 13th fields after the command name (in parentheses).
    let rest = stat.rsplit_once(')').ok_or("malformed /proc/self/stat")?.1;
    let mut fields = rest.split_whitespace().skip(11);
    let mut ticks = || -> Result<f64, BoxError> {
        Ok(fields.next().ok_or("short /proc/self/stat")?.parse::<f64>()?)
    };
    Ok((ticks()? + ticks()?) / 100.0)
}

fn mean(values: &[f64]) -> f64 {
    values.iter().sum::<f64>() / values.len().max(1) as f64
}

fn overhead(
    base: &Path,
    pairs: u64,
    duration: Duration,
    json: &mut Map<String, Value>,
    summary: &mut Vec<String>,
) -> Result<(), BoxError> {
    println!("\n1. mpu-transitions at {CLIENTS} clients, with and without the journal");
    println!("{:<16} {:>14} {:>10} {:>10}", "engine", "transitions/s", "p50 us", "p99 us");
    let (mut with, mut without) = (Vec::new(), Vec::new());
    let (mut with_p99, mut without_p99) = (Vec::new(), Vec::new());
    for pair in 0..pairs {
        // ABBA: a drift that is linear in time weighs on both alike.
        let order = if pair % 2 == 0 { [true, false] } else { [false, true] };
        for with_journal in order {
            let (figures, after, detail) = engine_run(base, with_journal, duration)?;
            let name = if with_journal { "with journal" } else { "without journal" };
            println!(
                "{name:<16} {:>14.0} {:>10.0} {:>10.0}",
                figures.transitions_per_s, figures.p50_us, figures.p99_us
            );
            println!("{detail}");
            if let Some(a) = after {
                println!(
                    "  journal after the run: {} files, {:.1} MiB, {} entries ({} staged, \
                     durable through LSN {})",
                    a.files,
                    a.bytes as f64 / f64::from(1 << 20),
                    a.entries,
                    a.staged_entries,
                    a.covered_lsn
                );
                json.insert("journal_files_after_run".into(), a.files.into());
                json.insert("journal_bytes_after_run".into(), a.bytes.into());
                json.insert("journal_entries_after_run".into(), a.entries.into());
            }
            if with_journal {
                with.push(figures.transitions_per_s);
                with_p99.push(figures.p99_us);
            } else {
                without.push(figures.transitions_per_s);
                without_p99.push(figures.p99_us);
            }
        }
    }
    let (with_mean, without_mean) = (mean(&with), mean(&without));
    let ratio = without_mean / with_mean;
    let line = format!(
        "transitions/s at {CLIENTS} clients: {with_mean:.0} with the journal, {without_mean:.0} \
         without (means of {pairs}); slowdown ratio (without / with) {ratio:.3}"
    );
    println!("{line}");
    summary.push(line);
    summary.push(format!(
        "  runs with: {:?}; without: {:?}; p99 us with {:.0}, without {:.0}",
        with.iter().map(|r| r.round() as u64).collect::<Vec<_>>(),
        without.iter().map(|r| r.round() as u64).collect::<Vec<_>>(),
        mean(&with_p99),
        mean(&without_p99)
    ));
    json.insert("transitions_per_s_with_journal".into(), number(with_mean));
    json.insert("transitions_per_s_without_journal".into(), number(without_mean));
    json.insert("journal_slowdown_ratio".into(), number(ratio));
    let runs = |rates: &[f64]| Value::Array(rates.iter().map(|&r| number(r)).collect());
    json.insert("transitions_per_s_with_journal_runs".into(), runs(&with));
    json.insert("transitions_per_s_without_journal_runs".into(), runs(&without));
    json.insert("p99_us_with_journal".into(), number(mean(&with_p99)));
    json.insert("p99_us_without_journal".into(), number(mean(&without_p99)));
    Ok(())
}

// ---------------------------------------------------------------------------------------------
// 2 and 3. A journal of 10M entries: open, queries, export.

/// An upload of the query journal, as the checks need it.
struct Upload {
    id: [u8; UPLOAD_ID_BYTES],
    /// Entries it has in the journal.
    entries: u32,
}

/// An upload in flight.
struct Slot {
    upload: usize,
    bucket: &'static str,
    key: String,
    actor: String,
    /// Parts it puts before it ends.
    parts: u32,
    /// Parts put so far.
    put: u32,
    /// Bytes put so far.
    bytes: u64,
    abort: bool,
}

/// Makes the query journal's entries: `IN_FLIGHT` uploads at a time, each of create, up to 3
/// parts and complete (90%) or abort (10%, after 0 to 3 parts); times advance 0 or 1 ms per
/// entry (about 2000 transitions a second).
struct History {
    random: SplitMix64,
    lsn: u64,
    time_ms: u64,
    files_named: u64,
    slots: Vec<Option<Slot>>,
    uploads: Vec<Upload>,
    /// Entries the prefix query must find.
    prefix_matches: u64,
    /// The narrow time range, and the entries in it.
    time_range: (u64, u64),
    time_range_matches: u64,
}

impl History {
    fn new(seed: u64, entries: u64) -> History {
        // Halfway through, as the times go.
        let from = START_MS + entries / 4;
        History {
            random: SplitMix64::new(seed),
            lsn: 0,
            time_ms: START_MS,
            files_named: 0,
            slots: (0..IN_FLIGHT).map(|_| None).collect(),
            uploads: Vec::new(),
            prefix_matches: 0,
            time_range: (from, from + TIME_RANGE_MS),
            time_range_matches: 0,
        }
    }

    fn below(&mut self, n: u64) -> u64 {
        self.random.next_u64() % n
    }

    fn md5(&mut self) -> [u8; 16] {
        let mut md5 = [0u8; 16];
        self.random.fill(&mut md5);
        md5
    }

    /// A new upload, at the current time.
    fn start_upload(&mut self) -> Slot {
        let mut id = [0u8; UPLOAD_ID_BYTES];
        // The engine's ids begin with the initiation time (ms, big-endian).
        id[..8].copy_from_slice(&self.time_ms.to_be_bytes());
        self.random.fill(&mut id[8..]);
        let host = self.below(HOSTS);
        self.files_named += 1;
        let abort = self.below(100) < workload::ABORT_PERCENT;
        let slot = Slot {
            upload: self.uploads.len(),
            bucket: BUCKETS[self.below(BUCKETS.len() as u64) as usize],
            key: format!("logs/2026/11/24/host-{host:02}/file-{:06}.gz", self.files_named),
            actor: format!("AKIAHOST{host:02}EXAMPLE"),
            parts: if abort { self.below(4) as u32 } else { 3 },
            put: 0,
            bytes: 0,
            abort,
        };
        self.uploads.push(Upload { id, entries: 0 });
        slot
    }

    fn next_entry(&mut self) -> Entry {
        self.lsn += 1;
        self.time_ms += self.below(2);
        let index = self.below(IN_FLIGHT as u64) as usize;
        let (slot, op, part_number, size_bytes, etag) = match self.slots[index].take() {
            None => (self.start_upload(), Operation::CreateUpload, None, None, None),
            Some(mut slot) if slot.put < slot.parts => {
                slot.put += 1;
                let size = (5 << 20) + self.below(3 << 20);
                slot.bytes += size;
                let etag = JournalEtag { md5: self.md5(), parts: None };
                let part = slot.put;
                (slot, Operation::PutPart, Some(part), Some(size), Some(etag))
            }
            Some(slot) if slot.abort => {
                let released = slot.bytes;
                (slot, Operation::Abort, None, Some(released), None)
            }
            Some(slot) => {
                let etag = JournalEtag { md5: self.md5(), parts: Some(slot.parts) };
                let stored = slot.bytes;
                (slot, Operation::Complete, None, Some(stored), Some(etag))
            }
        };
        let upload = &mut self.uploads[slot.upload];
        upload.entries += 1;
        if slot.bucket == PREFIX_BUCKET && slot.key.starts_with(PREFIX) {
            self.prefix_matches += 1;
        }
        if (self.time_range.0..self.time_range.1).contains(&self.time_ms) {
            self.time_range_matches += 1;
        }
        let entry = Entry {
            lsn: self.lsn,
            time_ms: self.time_ms,
            actor: slot.actor.clone(),
            op,
            bucket: Some(slot.bucket.to_owned()),
            key: Some(slot.key.clone()),
            upload_id: Some(upload.id),
            part_number,
            size_bytes,
            etag,
            error: None,
        };
        if !matches!(op, Operation::Abort | Operation::Complete) {
            self.slots[index] = Some(slot);
        }
        entry
    }
}

/// Where building the query journal spent its time.
struct Build {
    seconds: f64,
    /// Making the entries (the generator's own cost, not the journal's).
    generate_s: f64,
    /// `Journal::stage`.
    stage_s: f64,
    /// `Journal::flush_through`: encoding, writing, fdatasync.
    flush_s: f64,
    flushes: u64,
    files: u64,
    bytes: u64,
}

/// Entries made at a time, then staged.
const BUILD_CHUNK: u64 = 4096;

/// Builds the query journal in `dir` the way the engine fills its journal: entries staged one
/// by one in LSN order, flushed through the last once the staged entries take
/// `JOURNAL_STAGED_BYTES_DEFAULT` (4 MiB), and through the very last at the end.
fn build(dir: &Path, history: &mut History, entries: u64) -> Result<Build, BoxError> {
    let (journal, _) = Journal::open(StdFs::shared(), dir, JournalOptions::default())?;
    let started = Instant::now();
    let (mut generate, mut stage, mut flush) = (Duration::ZERO, Duration::ZERO, Duration::ZERO);
    let mut flushes = 0;
    let mut chunk = Vec::with_capacity(BUILD_CHUNK as usize);
    let mut next_report = 1_000_000;
    while history.lsn < entries {
        let at = Instant::now();
        let n = BUILD_CHUNK.min(entries - history.lsn);
        chunk.extend((0..n).map(|_| history.next_entry()));
        generate += at.elapsed();
        for entry in chunk.drain(..) {
            let lsn = entry.lsn;
            let at = Instant::now();
            journal.stage(entry)?;
            stage += at.elapsed();
            if journal.staged_bytes() >= JOURNAL_STAGED_BYTES_DEFAULT {
                let at = Instant::now();
                journal.flush_through(lsn)?;
                flush += at.elapsed();
                flushes += 1;
            }
        }
        if history.lsn >= next_report {
            let s = started.elapsed().as_secs_f64();
            println!(
                "  {} entries staged in {s:.1} s ({:.0}/s; flushes {:.1} s)",
                history.lsn,
                history.lsn as f64 / s,
                flush.as_secs_f64()
            );
            next_report += 1_000_000;
        }
    }
    let at = Instant::now();
    journal.flush_through(history.lsn)?;
    flush += at.elapsed();
    flushes += 1;
    let stats = journal.stats();
    if stats.covered_lsn != history.lsn || stats.staged_entries != 0 {
        return Err(format!("after the last flush: {stats:?}, {} entries made", history.lsn).into());
    }
    Ok(Build {
        seconds: started.elapsed().as_secs_f64(),
        generate_s: generate.as_secs_f64(),
        stage_s: stage.as_secs_f64(),
        flush_s: flush.as_secs_f64(),
        flushes,
        files: stats.files,
        bytes: stats.bytes,
    })
}

/// The journal's files (`*.tjl`) in `dir`.
fn journal_files(dir: &Path) -> Result<Vec<std::path::PathBuf>, BoxError> {
    let mut files = Vec::new();
    for entry in std::fs::read_dir(dir)? {
        let path = entry?.path();
        if path.extension().is_some_and(|e| e == "tjl") {
            files.push(path);
        }
    }
    files.sort();
    Ok(files)
}

/// Drops the journal's files from the page cache, so that the next read of any of their
/// blocks goes to the disk. (They were fdatasynced: no page is dirty, so all can go.)
fn drop_from_page_cache(dir: &Path) -> Result<(), BoxError> {
    for path in journal_files(dir)? {
        let file = File::open(&path)?;
        #[expect(unsafe_code, reason = "std has no posix_fadvise; the call takes only integers")]
        // SAFETY: the descriptor stays open for the call, which reads and writes no memory.
        let rc = unsafe { libc::posix_fadvise(file.as_raw_fd(), 0, 0, libc::POSIX_FADV_DONTNEED) };
        if rc != 0 {
            return Err(format!("posix_fadvise {}: {}", path.display(), rc).into());
        }
    }
    Ok(())
}

/// Reads the journal's files whole, so that the page cache holds them.
fn warm_page_cache(dir: &Path) -> Result<(), BoxError> {
    for path in journal_files(dir)? {
        std::io::copy(&mut File::open(&path)?, &mut std::io::sink())?;
    }
    Ok(())
}

/// Opens the journal, checks that it holds all `lsn` entries undamaged; returns it and the
/// seconds the open took.
fn open_journal(dir: &Path, lsn: u64) -> Result<(Journal, f64), BoxError> {
    let started = Instant::now();
    let (journal, report) = Journal::open(StdFs::shared(), dir, JournalOptions::default())?;
    let seconds = started.elapsed().as_secs_f64();
    if report.covered_lsn != lsn || report.torn_tail.is_some() || !report.corruptions.is_empty() {
        return Err(format!("reopened journal: {report:?}, {lsn} entries written").into());
    }
    Ok((journal, seconds))
}

/// Queries one upload's history and checks it: every entry the upload has, all of it, in LSN
/// order, beginning with its creation. Returns the milliseconds and the blocks read.
fn history_query(journal: &Journal, upload: &Upload) -> Result<(f64, u64), BoxError> {
    let query = Query { upload_id: Some(upload.id), ..Query::default() };
    let started = Instant::now();
    let result = journal.query(&query);
    let ms = started.elapsed().as_secs_f64() * 1e3;
    let entries = &result.entries;
    let right = entries.len() == upload.entries as usize
        && entries.iter().all(|e| e.upload_id == Some(upload.id))
        && entries.windows(2).all(|w| w[0].lsn < w[1].lsn)
        && entries.first().is_some_and(|e| e.op == Operation::CreateUpload)
        && result.warnings.is_empty();
    if !right {
        return Err(format!(
            "history of upload {}: {} entries (expected {}), ops {:?}, {} warnings",
            hex::encode(upload.id),
            entries.len(),
            upload.entries,
            entries.iter().map(|e| (e.lsn, e.op.name())).collect::<Vec<_>>(),
            result.warnings.len()
        )
        .into());
    }
    Ok((ms, result.blocks_read))
}

/// The median and the 99th percentile of `values`.
fn median_p99(values: &mut [f64]) -> (f64, f64) {
    values.sort_by(f64::total_cmp);
    let at = |q: f64| {
        let rank = ((values.len() as f64 * q).ceil() as usize).clamp(1, values.len().max(1));
        values.get(rank - 1).copied().unwrap_or(f64::NAN)
    };
    (at(0.5), at(0.99))
}

/// Runs one upload history query per target (in the page cache's given state, or dropping
/// the files from it before each when `cold`): median and p99 ms, mean blocks read.
fn history_queries(
    journal: &Journal,
    dir: &Path,
    uploads: &[Upload],
    targets: &[usize],
    cold: bool,
) -> Result<(f64, f64, f64), BoxError> {
    let mut times = Vec::with_capacity(targets.len());
    let mut blocks = 0;
    for &target in targets {
        if cold {
            drop_from_page_cache(dir)?;
        }
        let (ms, read) = history_query(journal, &uploads[target])?;
        times.push(ms);
        blocks += read;
    }
    let (median, p99) = median_p99(&mut times);
    Ok((median, p99, blocks as f64 / targets.len().max(1) as f64))
}

/// Runs `query` (warm), checks every entry matches and the count; returns ms and blocks read.
fn timed_query(
    journal: &Journal,
    query: &Query,
    expected: Option<usize>,
) -> Result<(f64, usize, u64), BoxError> {
    let started = Instant::now();
    let result = journal.query(query);
    let ms = started.elapsed().as_secs_f64() * 1e3;
    let ordered = if query.newest_first {
        result.entries.windows(2).all(|w| w[0].lsn > w[1].lsn)
    } else {
        result.entries.windows(2).all(|w| w[0].lsn < w[1].lsn)
    };
    let counted = expected.is_none_or(|n| n == result.entries.len());
    if !ordered || !counted || !result.entries.iter().all(|e| query.matches(e)) {
        return Err(format!(
            "{query:?}: {} entries (expected {expected:?}), in order: {ordered}",
            result.entries.len()
        )
        .into());
    }
    Ok((ms, result.entries.len(), result.blocks_read))
}

fn queries_10m(
    base: &Path,
    entries: u64,
    queries: u64,
    json: &mut Map<String, Value>,
    summary: &mut Vec<String>,
) -> Result<(), BoxError> {
    println!("\n2. a journal of {entries} entries ({IN_FLIGHT} uploads in flight at a time)");
    let dir = tempfile::Builder::new().prefix("journal-").tempdir_in(base)?;
    let mut history = History::new(SEED, entries);
    let build = build(dir.path(), &mut history, entries)?;
    let per_entry = build.bytes as f64 / entries as f64;
    let line = format!(
        "built {entries} entries ({} uploads) in {:.1} s ({:.0} entries/s): making them {:.2} s, \
         stage {:.2} s, {} flushes {:.2} s; {} files, {:.0} MiB ({per_entry:.0} bytes/entry)",
        history.uploads.len(),
        build.seconds,
        entries as f64 / build.seconds,
        build.generate_s,
        build.stage_s,
        build.flushes,
        build.flush_s,
        build.files,
        build.bytes as f64 / f64::from(1 << 20),
    );
    println!("{line}");
    summary.push(line);
    json.insert("journal_entries".into(), entries.into());
    json.insert("journal_uploads".into(), history.uploads.len().into());
    json.insert("journal_files".into(), build.files.into());
    json.insert("journal_bytes".into(), build.bytes.into());
    json.insert("journal_build_s".into(), number(build.seconds));
    json.insert("journal_build_generate_s".into(), number(build.generate_s));
    json.insert("journal_build_stage_s".into(), number(build.stage_s));
    json.insert("journal_build_flush_s".into(), number(build.flush_s));
    json.insert("journal_build_flushes".into(), build.flushes.into());

    // Open reads every block's header and summary (and checks the newest file whole). Cold:
    // nothing in the page cache, as after a reboot; then again, warm.
    drop_from_page_cache(dir.path())?;
    let (journal, open_s) = open_journal(dir.path(), history.lsn)?;
    drop(journal);
    let (journal, open_warm_s) = open_journal(dir.path(), history.lsn)?;
    let line = format!("open: {open_s:.3} s cold (page cache dropped), {open_warm_s:.3} s warm");
    println!("{line}");
    summary.push(line);
    json.insert("journal_open_s".into(), number(open_s));
    json.insert("journal_open_s_warm".into(), number(open_warm_s));

    // Upload histories. The blocks' summaries (time range, Bloom filter, key range) are in
    // memory after open, so a query's filtering never touches the disk; "cold" means the
    // blocks of entries it reads come from the disk (the files are dropped from the page cache
    // before each query), "warm" that they come from the page cache.
    let mut random = SplitMix64::new(SEED ^ 0x51);
    let uploads = &history.uploads;
    let mut targets = |n: u64| -> Vec<usize> {
        (0..n).map(|_| (random.next_u64() % uploads.len() as u64) as usize).collect()
    };
    let (warm_targets, cold_targets) = (targets(queries), targets(queries));
    warm_page_cache(dir.path())?;
    history_queries(&journal, dir.path(), uploads, &warm_targets, false)?;
    let (warm, warm_p99, warm_blocks) =
        history_queries(&journal, dir.path(), uploads, &warm_targets, false)?;
    let (cold, cold_p99, cold_blocks) =
        history_queries(&journal, dir.path(), uploads, &cold_targets, true)?;
    // An upload the journal never saw: every summary is consulted, (almost) no block read. What
    // this costs is the in-memory filtering part of every history query.
    let mut absent_ms = Vec::new();
    for _ in 0..queries {
        let mut id = [0u8; UPLOAD_ID_BYTES];
        random.fill(&mut id);
        let query = Query { upload_id: Some(id), ..Query::default() };
        let started = Instant::now();
        let result = journal.query(&query);
        absent_ms.push(started.elapsed().as_secs_f64() * 1e3);
        if !result.entries.is_empty() {
            return Err(format!("entries for an unknown upload {}", hex::encode(id)).into());
        }
    }
    let (absent, _) = median_p99(&mut absent_ms);
    let line = format!(
        "one upload's history ({queries} random uploads): warm {warm:.3} ms median, \
         {warm_p99:.3} ms p99; cold {cold:.3} ms median, {cold_p99:.3} ms p99; \
         {warm_blocks:.1} / {cold_blocks:.1} blocks read on average; an unknown upload \
         {absent:.3} ms (no block read: the summaries' filtering alone)"
    );
    println!("{line}");
    summary.push(line);
    json.insert("query_ms_10m_warm".into(), number(warm));
    json.insert("query_ms_10m_warm_p99".into(), number(warm_p99));
    json.insert("query_ms_10m_cold".into(), number(cold));
    json.insert("query_ms_10m_cold_p99".into(), number(cold_p99));
    json.insert("query_ms_10m_unknown_upload".into(), number(absent));
    json.insert("query_blocks_read_mean".into(), number((warm_blocks + cold_blocks) / 2.0));

    // 3. Export and the other queries, warm.
    println!("\n3. export and other queries (warm)");
    warm_page_cache(dir.path())?;
    let started = Instant::now();
    let export = journal.export(&Query::default(), &mut std::io::sink())?;
    let export_s = started.elapsed().as_secs_f64();
    if export.entries != entries || !export.warnings.is_empty() {
        return Err(format!("export: {export:?}, {entries} entries written").into());
    }
    let export_rate = entries as f64 / export_s;
    let line =
        format!("export (JSON lines to a sink): {export_s:.2} s, {export_rate:.0} entries/s");
    println!("{line}");
    summary.push(line);
    json.insert("export_s".into(), number(export_s));
    json.insert("export_entries_per_s".into(), number(export_rate));

    let prefix = Query {
        bucket: Some(PREFIX_BUCKET.into()),
        key_prefix: Some(PREFIX.into()),
        ..Query::default()
    };
    let expected = usize::try_from(history.prefix_matches)?;
    let (prefix_ms, found, prefix_blocks) = timed_query(&journal, &prefix, Some(expected))?;
    let newest = Query { newest_first: true, limit: Some(100), ..prefix.clone() };
    let (newest_ms, _, newest_blocks) = timed_query(&journal, &newest, Some(expected.min(100)))?;
    let (from, until) = history.time_range;
    let range = Query { time_from_ms: Some(from), time_until_ms: Some(until), ..Query::default() };
    let expected_range = usize::try_from(history.time_range_matches)?;
    let (range_ms, in_range, range_blocks) = timed_query(&journal, &range, Some(expected_range))?;
    // A condition no summary can rule out: every block is read, nothing matches.
    let nothing = Query { key_prefix: Some("no/such/prefix/".into()), ..Query::default() };
    let (scan_ms, _, all_blocks) = timed_query(&journal, &nothing, Some(0))?;
    let lines = [
        format!(
            "bucket + key prefix ({PREFIX_BUCKET}, {PREFIX}): {prefix_ms:.1} ms, {found} \
             entries, {prefix_blocks} blocks read"
        ),
        format!("  the same, newest 100: {newest_ms:.1} ms, {newest_blocks} blocks read"),
        format!(
            "time range of {TIME_RANGE_MS} ms: {range_ms:.2} ms, {in_range} entries, \
             {range_blocks} blocks read"
        ),
        format!(
            "key prefix alone, matching nothing (reads every block): {scan_ms:.1} ms, \
             {all_blocks} blocks"
        ),
    ];
    for line in lines {
        println!("{line}");
        summary.push(line);
    }
    json.insert("query_ms_prefix".into(), number(prefix_ms));
    json.insert("query_entries_prefix".into(), found.into());
    json.insert("query_ms_prefix_newest_100".into(), number(newest_ms));
    json.insert("query_ms_time_range".into(), number(range_ms));
    json.insert("query_entries_time_range".into(), in_range.into());
    json.insert("query_ms_full_scan".into(), number(scan_ms));
    json.insert("journal_blocks".into(), all_blocks.into());
    drop(journal);
    dir.close()?;
    Ok(())
}
