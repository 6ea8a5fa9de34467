//! The log's benchmark: durable appends per second of 128-byte records with 1, 8 and 64 writer
//! threads (and their latency), side by side with a naive baseline measured in the same run
//! (one write and one fdatasync per record, no batching); and replay speed of a 1M-record log
//! (replay alone, warm; open, which checks every frame, plus replay, warm and cold). Prints a
//! table and writes `target/bench/wal.json`.
//!
//! Environment: `TESSERA_BENCH_SECS` (seconds per configuration, default 3),
//! `TESSERA_BENCH_REPLAY_RECORDS` (default 1,000,000), `TESSERA_BENCH_DIR` (where the logs go;
//! default a temporary directory under `target/`, on the same disk as the build).

#![allow(missing_docs, clippy::unwrap_used, clippy::expect_used, clippy::indexing_slicing)]
#![allow(clippy::cast_possible_truncation, clippy::panic)]

use std::fs::OpenOptions;
use std::io::Write;
use std::os::unix::io::AsRawFd;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Barrier};
use std::time::{Duration, Instant};

use tessera_wal::{Lsn, StdFs, Wal, WalOptions};

const RECORD_BYTES: usize = 128;

struct Run {
    appends_per_s: f64,
    p50_us: f64,
    p99_us: f64,
}

fn env_f64(name: &str, default: f64) -> f64 {
    std::env::var(name).ok().and_then(|s| s.parse().ok()).unwrap_or(default)
}

fn target_dir() -> PathBuf {
    std::env::var_os("CARGO_TARGET_DIR")
        .map(PathBuf::from)
        .unwrap_or_else(|| Path::new(env!("CARGO_MANIFEST_DIR")).join("../target"))
}

fn scratch_dir() -> tempfile::TempDir {
    let base = std::env::var_os("TESSERA_BENCH_DIR").map(PathBuf::from).unwrap_or_else(target_dir);
    std::fs::create_dir_all(&base).unwrap();
    tempfile::Builder::new().prefix("wal-bench-").tempdir_in(base).unwrap()
}

fn percentile_us(sorted_ns: &[u64], fraction: f64) -> f64 {
    if sorted_ns.is_empty() {
        return 0.0;
    }
    let index = ((sorted_ns.len() as f64 - 1.0) * fraction).round() as usize;
    sorted_ns[index] as f64 / 1000.0
}

fn summarize(count: u64, elapsed: Duration, mut latencies_ns: Vec<u64>) -> Run {
    latencies_ns.sort_unstable();
    Run {
        appends_per_s: count as f64 / elapsed.as_secs_f64(),
        p50_us: percentile_us(&latencies_ns, 0.50),
        p99_us: percentile_us(&latencies_ns, 0.99),
    }
}

/// One write and one fdatasync per record, appending to a plain file: what a log without
/// batching does. With `preallocated`, the file is allocated first and records overwrite it.
fn naive(secs: f64, preallocated: bool) -> Run {
    let dir = scratch_dir();
    let path = dir.path().join("naive.log");
    let mut file =
        OpenOptions::new().create(true).truncate(true).read(true).write(true).open(&path).unwrap();
    if preallocated {
        let rc = unsafe_fallocate(&file, 256 << 20);
        assert_eq!(rc, 0, "posix_fallocate failed");
        file.sync_all().unwrap();
    }
    let record = [0x5au8; RECORD_BYTES];
    let mut latencies = Vec::new();
    let start = Instant::now();
    let deadline = start + Duration::from_secs_f64(secs);
    let mut offset = 0u64;
    while Instant::now() < deadline {
        let t0 = Instant::now();
        if preallocated {
            std::os::unix::fs::FileExt::write_all_at(&file, &record, offset).unwrap();
            offset += RECORD_BYTES as u64;
        } else {
            file.write_all(&record).unwrap();
        }
        file.sync_data().unwrap();
        latencies.push(t0.elapsed().as_nanos() as u64);
    }
    summarize(latencies.len() as u64, start.elapsed(), latencies)
}

#[expect(unsafe_code, reason = "posix_fallocate takes only integers and a descriptor we hold")]
fn unsafe_fallocate(file: &std::fs::File, len: i64) -> i32 {
    // SAFETY: the descriptor is open for writing for the duration of the call.
    unsafe { libc::posix_fallocate(file.as_raw_fd(), 0, len) }
}

/// `writers` threads, each appending a 128-byte record and waiting until it is durable.
fn wal_appends(secs: f64, writers: usize) -> Run {
    let dir = scratch_dir();
    let wal = Arc::new(Wal::open(StdFs::shared(), dir.path(), WalOptions::default()).unwrap().wal);
    let barrier = Arc::new(Barrier::new(writers + 1));
    let threads: Vec<_> = (0..writers)
        .map(|t| {
            let (wal, barrier) = (Arc::clone(&wal), Arc::clone(&barrier));
            std::thread::spawn(move || {
                let record = [t as u8; RECORD_BYTES];
                let mut latencies = Vec::with_capacity(1 << 16);
                barrier.wait();
                let deadline = Instant::now() + Duration::from_secs_f64(secs);
                while Instant::now() < deadline {
                    let t0 = Instant::now();
                    wal.append_durable(&record).unwrap();
                    latencies.push(t0.elapsed().as_nanos() as u64);
                }
                latencies
            })
        })
        .collect();
    barrier.wait();
    let start = Instant::now();
    let latencies: Vec<u64> = threads.into_iter().flat_map(|t| t.join().unwrap()).collect();
    let elapsed = start.elapsed();
    assert_eq!(wal.lsn_durable(), Lsn(latencies.len() as u64), "every append was acknowledged");
    summarize(latencies.len() as u64, elapsed, latencies)
}

struct ReplayRun {
    /// Replay alone (the log already open), page cache warm.
    replay_per_s_warm: f64,
    /// Open (which checks every frame) plus replay, page cache warm and cold.
    recovery_per_s_warm: f64,
    recovery_per_s_cold: f64,
    open_ms_warm: f64,
    open_ms_cold: f64,
    cold_is_cold: bool,
}

/// Builds a log of `records` 128-byte records, then times opening it (which checks every frame)
/// and replaying it whole, with the page cache warm and then with the log's pages dropped.
fn replay(records: u64) -> ReplayRun {
    let dir = scratch_dir();
    {
        let wal = Wal::open(StdFs::shared(), dir.path(), WalOptions::default()).unwrap().wal;
        for i in 0..records {
            let mut record = [0u8; RECORD_BYTES];
            record[..8].copy_from_slice(&i.to_le_bytes());
            wal.append(&record).unwrap();
            if i % 4096 == 4095 {
                wal.sync().unwrap();
            }
        }
        wal.sync().unwrap();
    }
    let timed = |label: &str| {
        let t0 = Instant::now();
        let opened = Wal::open(StdFs::shared(), dir.path(), WalOptions::default()).unwrap();
        let open_ms = t0.elapsed().as_secs_f64() * 1000.0;
        let t1 = Instant::now();
        let mut count = 0u64;
        let mut checksum = 0u64;
        for record in opened.wal.replay(Lsn::FIRST).unwrap() {
            let record = record.unwrap();
            checksum = checksum.wrapping_add(u64::from(record.bytes[0]));
            count += 1;
        }
        let secs = t1.elapsed().as_secs_f64();
        assert_eq!(count, records, "{label}: replay returns every record");
        std::hint::black_box(checksum);
        (count as f64 / secs, count as f64 / (secs + open_ms / 1000.0), open_ms)
    };
    timed("warm-up");
    let (replay_per_s_warm, recovery_per_s_warm, open_ms_warm) = timed("warm");
    let cold_is_cold = drop_page_cache(dir.path());
    let (_, recovery_per_s_cold, open_ms_cold) = timed("cold");
    ReplayRun {
        replay_per_s_warm,
        recovery_per_s_warm,
        recovery_per_s_cold,
        open_ms_warm,
        open_ms_cold,
        cold_is_cold,
    }
}

/// Evicts the log's (clean, synced) pages from the page cache; false if the kernel refused.
fn drop_page_cache(dir: &Path) -> bool {
    let mut all = true;
    for entry in std::fs::read_dir(dir).unwrap() {
        let file = std::fs::File::open(entry.unwrap().path()).unwrap();
        file.sync_all().unwrap();
        all &= fadvise_dontneed(&file) == 0;
    }
    all
}

#[expect(unsafe_code, reason = "posix_fadvise takes only integers and a descriptor we hold")]
fn fadvise_dontneed(file: &std::fs::File) -> i32 {
    // SAFETY: the descriptor is open for the duration of the call; no memory is passed.
    unsafe { libc::posix_fadvise(file.as_raw_fd(), 0, 0, libc::POSIX_FADV_DONTNEED) }
}

fn main() {
    // `cargo bench` passes `--bench`; a filter argument other than "wal" skips this harness.
    if std::env::args().skip(1).any(|a| !a.starts_with('-') && !"wal".contains(a.as_str())) {
        return;
    }
    let secs = env_f64("TESSERA_BENCH_SECS", 3.0);
    let replay_records = env_f64("TESSERA_BENCH_REPLAY_RECORDS", 1_000_000.0) as u64;
    println!(
        "wal bench: {RECORD_BYTES}-byte records, {secs} s per configuration, replay of {replay_records} records"
    );
    println!("logs under {}", scratch_dir().path().parent().unwrap().display());

    // The naive baseline runs before and after the log's runs; its mean is the reference, so a
    // drift of the shared disk during the run biases neither side.
    let naive_before = naive(secs, false);
    let w1 = wal_appends(secs, 1);
    let w8 = wal_appends(secs, 8);
    let w64 = wal_appends(secs, 64);
    let naive_after = naive(secs, false);
    let naive_prealloc = naive(secs, true);
    let naive_per_s = (naive_before.appends_per_s + naive_after.appends_per_s) / 2.0;
    let replayed = replay(replay_records);

    println!();
    println!(
        "{:<34} {:>12} {:>10} {:>10} {:>9}",
        "configuration", "appends/s", "p50 us", "p99 us", "x naive"
    );
    let row = |name: &str, run: &Run| {
        println!(
            "{:<34} {:>12.0} {:>10.1} {:>10.1} {:>9.2}",
            name,
            run.appends_per_s,
            run.p50_us,
            run.p99_us,
            run.appends_per_s / naive_per_s
        );
    };
    row("naive write+fdatasync (before)", &naive_before);
    row("naive write+fdatasync (after)", &naive_after);
    row("naive overwrite+fdatasync", &naive_prealloc);
    row("wal, 1 writer", &w1);
    row("wal, 8 writers", &w8);
    row("wal, 64 writers", &w64);
    println!();
    println!(
        "{replay_records} records: replay {:.2} M records/s (warm); open + replay {:.2} M records/s warm (open {:.1} ms), {:.2} M records/s cold (open {:.1} ms){}",
        replayed.replay_per_s_warm / 1e6,
        replayed.recovery_per_s_warm / 1e6,
        replayed.open_ms_warm,
        replayed.recovery_per_s_cold / 1e6,
        replayed.open_ms_cold,
        if replayed.cold_is_cold { "" } else { " [page cache could not be dropped]" }
    );

    let figures = [
        ("naive_appends_per_s", naive_per_s),
        ("naive_overwrite_appends_per_s", naive_prealloc.appends_per_s),
        ("appends_per_s_w1", w1.appends_per_s),
        ("appends_per_s_w8", w8.appends_per_s),
        ("appends_per_s_w64", w64.appends_per_s),
        ("ratio_w1_vs_naive", w1.appends_per_s / naive_per_s),
        ("ratio_w8_vs_naive", w8.appends_per_s / naive_per_s),
        ("ratio_w64_vs_naive", w64.appends_per_s / naive_per_s),
        ("p50_us_w1", w1.p50_us),
        ("p99_us_w1", w1.p99_us),
        ("p50_us_w8", w8.p50_us),
        ("p99_us_w8", w8.p99_us),
        ("p50_us_w64", w64.p50_us),
        ("p99_us_w64", w64.p99_us),
        ("p99_us_naive", naive_before.p99_us.max(naive_after.p99_us)),
        ("replay_records_per_s", replayed.replay_per_s_warm),
        ("recovery_records_per_s_warm", replayed.recovery_per_s_warm),
        ("recovery_records_per_s_cold", replayed.recovery_per_s_cold),
        ("open_ms_1m_warm", replayed.open_ms_warm),
        ("open_ms_1m_cold", replayed.open_ms_cold),
        ("replay_records", replay_records as f64),
        ("record_bytes", RECORD_BYTES as f64),
        ("seconds_per_configuration", secs),
    ];
    let body: Vec<String> = figures.iter().map(|(k, v)| format!("  \"{k}\": {v:.3}")).collect();
    let json = format!("{{\n{}\n}}\n", body.join(",\n"));
    let out = target_dir().join("bench");
    std::fs::create_dir_all(&out).unwrap();
    std::fs::write(out.join("wal.json"), json).unwrap();
    println!("wrote {}", out.join("wal.json").display());
}
