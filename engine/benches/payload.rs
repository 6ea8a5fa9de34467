//! The payload store's benchmark: 2 GiB ingested as 8 MiB parts from 4 concurrent writers
//! (SHA-256 and MD5 computed, one fdatasync per part), side by side with the same bytes written
//! by the same 4 writers with plain `write` and one `fdatasync` per 8 MiB (the disk's
//! baseline), measured before and after the ingest; then read throughput of those parts with
//! the page cache warm, and again after a reopen, where each part's first read checks its
//! SHA-256. Prints a table and writes `target/bench/payload.json`.
//!
//! Environment: `TESSERA_BENCH_PAYLOAD_MIB` (total, default 2048), `TESSERA_BENCH_DIR`.

#![allow(missing_docs, clippy::unwrap_used, clippy::expect_used, clippy::indexing_slicing)]
#![allow(clippy::cast_possible_truncation, clippy::panic)]

use std::io::{Read, Write};
use std::path::{Path, PathBuf};
use std::sync::Barrier;
use std::time::Instant;

use tessera_engine::payload::{ContentAddress, Expected, PayloadOptions, PayloadStore};
use tessera_wal::StdFs;

const PART_BYTES: usize = 8 << 20;
const WRITERS: usize = 4;

fn target_dir() -> PathBuf {
    std::env::var_os("CARGO_TARGET_DIR")
        .map(PathBuf::from)
        .unwrap_or_else(|| Path::new(env!("CARGO_MANIFEST_DIR")).join("../target"))
}

fn scratch_dir() -> tempfile::TempDir {
    let base = std::env::var_os("TESSERA_BENCH_DIR").map(PathBuf::from).unwrap_or_else(target_dir);
    std::fs::create_dir_all(&base).unwrap();
    tempfile::Builder::new().prefix("payload-bench-").tempdir_in(base).unwrap()
}

/// Random bytes (so that nothing compresses or deduplicates by accident).
fn random_part(seed: u64) -> Vec<u8> {
    let mut x = seed.wrapping_mul(0x9E37_79B9_7F4A_7C15) | 1;
    let mut out = Vec::with_capacity(PART_BYTES);
    while out.len() < PART_BYTES {
        x ^= x << 13;
        x ^= x >> 7;
        x ^= x << 17;
        out.extend_from_slice(&x.to_le_bytes());
    }
    out
}

/// Part `n` of writer `w`: the writer's random part with the part number stamped in front, so
/// every part is distinct.
fn stamp(base: &mut [u8], n: u64) {
    base[..8].copy_from_slice(&n.to_le_bytes());
}

/// Runs `work(writer, part)` for `parts_per_writer` parts on each of the writers; returns bytes/s.
fn run_writers(parts_per_writer: u64, work: impl Fn(usize, u64, &[u8]) + Sync) -> f64 {
    let barrier = Barrier::new(WRITERS + 1);
    let start = std::thread::scope(|scope| {
        for w in 0..WRITERS {
            let (barrier, work) = (&barrier, &work);
            scope.spawn(move || {
                let mut part = random_part(w as u64 + 1);
                barrier.wait();
                for n in 0..parts_per_writer {
                    stamp(&mut part, (w as u64) << 32 | n);
                    work(w, n, &part);
                }
            });
        }
        barrier.wait();
        Instant::now()
    });
    let bytes = (WRITERS as u64 * parts_per_writer * PART_BYTES as u64) as f64;
    bytes / start.elapsed().as_secs_f64()
}

/// The disk's baseline: each writer appends to its own file, one fdatasync per part.
fn baseline(parts_per_writer: u64) -> f64 {
    let dir = scratch_dir();
    let files: Vec<_> = (0..WRITERS)
        .map(|w| {
            let path = dir.path().join(format!("baseline-{w}"));
            parking_lot::Mutex::new(std::fs::File::create(path).unwrap())
        })
        .collect();
    run_writers(parts_per_writer, |w, _, part| {
        let mut file = files[w].lock();
        file.write_all(part).unwrap();
        file.sync_data().unwrap();
    })
}

fn main() {
    if std::env::args().skip(1).any(|a| !a.starts_with('-') && !"payload".contains(a.as_str())) {
        return;
    }
    let total_mib: u64 = std::env::var("TESSERA_BENCH_PAYLOAD_MIB")
        .ok()
        .and_then(|s| s.parse().ok())
        .unwrap_or(2048);
    let parts_per_writer = (total_mib / 8 / WRITERS as u64).max(1);
    let total_bytes = parts_per_writer * WRITERS as u64 * PART_BYTES as u64;
    println!(
        "payload bench: {} MiB as 8 MiB parts from {WRITERS} writers (SHA-256 + MD5, one fdatasync per part)",
        total_bytes >> 20
    );

    let baseline_before = baseline(parts_per_writer);

    let dir = scratch_dir();
    let store = PayloadStore::open(StdFs::shared(), dir.path(), PayloadOptions::default()).unwrap();
    store.finish_recovery().unwrap();
    let addresses = parking_lot::Mutex::new(Vec::new());
    let ingest = run_writers(parts_per_writer, |_, _, part| {
        let pending =
            store.ingest(&mut &part[..], Some(part.len() as u64), Expected::default()).unwrap();
        addresses.lock().push(pending.commit().address);
    });
    let addresses: Vec<ContentAddress> = addresses.into_inner();

    let baseline_after = baseline(parts_per_writer);
    let baseline = (baseline_before + baseline_after) / 2.0;

    let read_all = |store: &PayloadStore| {
        let mut buf = Vec::with_capacity(PART_BYTES);
        let start = Instant::now();
        for address in &addresses {
            buf.clear();
            store.reader(address).unwrap().read_to_end(&mut buf).unwrap();
            assert_eq!(buf.len(), PART_BYTES);
        }
        total_bytes as f64 / start.elapsed().as_secs_f64()
    };
    let read_warm = read_all(&store);
    // Reopen: the index comes back from a snapshot (as from a checkpoint); first reads verify.
    let snapshot = store.snapshot();
    drop(store);
    let store = PayloadStore::open(StdFs::shared(), dir.path(), PayloadOptions::default()).unwrap();
    for (address, location, refs) in &snapshot {
        store.restore_entry(*address, location, *refs).unwrap();
    }
    store.finish_recovery().unwrap();
    let read_verified = read_all(&store);

    let mib = |b: f64| b / (1 << 20) as f64;
    println!();
    println!("{:<52} {:>10}", "configuration", "MiB/s");
    println!(
        "{:<52} {:>10.0}",
        "baseline: write + fdatasync per 8 MiB (before)",
        mib(baseline_before)
    );
    println!(
        "{:<52} {:>10.0}",
        "baseline: write + fdatasync per 8 MiB (after)",
        mib(baseline_after)
    );
    println!("{:<52} {:>10.0}", "ingest (SHA-256 + MD5, fdatasync per part)", mib(ingest));
    println!("{:<52} {:>10.2}", "ratio ingest / baseline", ingest / baseline);
    println!("{:<52} {:>10.0}", "read, page cache warm", mib(read_warm));
    println!(
        "{:<52} {:>10.0}",
        "read after reopen (first read checks SHA-256)",
        mib(read_verified)
    );

    let figures = [
        ("ingest_bytes_per_s", ingest),
        ("baseline_bytes_per_s", baseline),
        ("baseline_bytes_per_s_before", baseline_before),
        ("baseline_bytes_per_s_after", baseline_after),
        ("ratio_ingest_vs_baseline", ingest / baseline),
        ("read_bytes_per_s", read_warm),
        ("read_verified_bytes_per_s", read_verified),
        ("total_bytes", total_bytes as f64),
        ("part_bytes", PART_BYTES as f64),
        ("writers", WRITERS as f64),
    ];
    let body: Vec<String> = figures.iter().map(|(k, v)| format!("  \"{k}\": {v:.3}")).collect();
    let out = target_dir().join("bench");
    std::fs::create_dir_all(&out).unwrap();
    std::fs::write(out.join("payload.json"), format!("{{\n{}\n}}\n", body.join(",\n"))).unwrap();
    println!("wrote {}", out.join("payload.json").display());
}
