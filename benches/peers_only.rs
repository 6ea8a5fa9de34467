//! The peers of the "mpu-transitions" workload alone: SQLite, redb and Redis (each storing a
//! part's 4 KiB in the same durable transaction as its metadata) and the ceiling (a bare
//! group-committed log) at 1, 8 and 64 clients, with the disk's fdatasync rate as the
//! reference. Prints a table and writes
//! `target/bench/peers.json` (`<peer>_transitions_per_s_c<clients>` and more; the Redis figures
//! are null when `redis-server` is missing: `./scripts/bench` installs it).
//!
//! Environment: `TESSERA_BENCH_SECS` (seconds per point, default 5), `TESSERA_BENCH_DIR`
//! (where the stores go; default `target/`, on the build's disk), `TESSERA_REDIS_SERVER` (the
//! `redis-server` to run; default the one on `PATH`).

#![allow(missing_docs, clippy::unwrap_used, clippy::expect_used, clippy::indexing_slicing)]
#![allow(clippy::cast_possible_truncation, clippy::panic)]

#[path = "peers/mod.rs"]
mod peers;

use std::process::ExitCode;
use std::time::Duration;

use serde_json::{Map, Value};

use peers::workload::{ABORT_PERCENT, BoxError, PART_BYTES, PARTS_PER_UPLOAD, RunFigures};
use peers::{Peer, SEED};

fn main() -> ExitCode {
    // `cargo bench` passes `--bench`; a filter argument that does not match skips this harness.
    if std::env::args().skip(1).any(|a| !a.starts_with('-') && !"peers_only".contains(a.as_str())) {
        return ExitCode::SUCCESS;
    }
    match bench() {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("peers_only: {e}");
            ExitCode::FAILURE
        }
    }
}

fn row(name: &str, clients: usize, figures: Option<&RunFigures>) {
    match figures {
        Some(f) => println!(
            "{name:<8} {:>7} {:>14.0} {:>10.0} {:>10.0} {:>10} {:>8}",
            f.clients,
            f.transitions_per_s,
            f.p50_us,
            f.p99_us,
            f.uploads_completed,
            f.uploads_aborted,
        ),
        None => println!("{name:<8} {clients:>7} {:>14}", "absent"),
    }
}

fn header() {
    println!(
        "{:<8} {:>7} {:>14} {:>10} {:>10} {:>10} {:>8}",
        "peer", "clients", "transitions/s", "p50 us", "p99 us", "completed", "aborted"
    );
}

fn bench() -> Result<(), BoxError> {
    let secs = peers::seconds_per_point();
    let duration = Duration::from_secs_f64(secs);
    let base = peers::scratch_base()?;
    let scratch = tempfile::Builder::new().prefix("peers-bench-").tempdir_in(&base)?;
    println!(
        "peers bench (mpu-transitions): create, {PARTS_PER_UPLOAD} parts of {PART_BYTES} bytes, \
         complete ({}%) or abort ({ABORT_PERCENT}%); {secs} s per point; stores under {}",
        100 - ABORT_PERCENT,
        scratch.path().display()
    );

    // The disk's reference rate is measured before and after the peers; its mean is the
    // reference, so a drift of the shared disk during the run biases no peer.
    let reference = duration.min(Duration::from_secs(2));
    let fdatasync_before = peers::disk_fdatasync_per_s(scratch.path(), reference)?;
    println!(
        "disk reference (before): {fdatasync_before:.0} fdatasync/s \
         ({PART_BYTES}-byte appends, 1 thread)"
    );
    let redis_available = Peer::Redis.available();
    if !redis_available {
        println!(
            "redis-server not found on PATH (nor TESSERA_REDIS_SERVER): Redis is skipped and its \
             figures are recorded as null; ./scripts/bench installs it"
        );
    }
    println!();
    header();

    let mut json = Map::new();
    let mut measured = Vec::new();
    for peer in Peer::ALL {
        for clients in peers::client_counts() {
            let figures = if peer.available() {
                peer.run_point(scratch.path(), clients, duration, SEED)
                    .map_err(|e| format!("{} at {clients} clients: {e}", peer.name()))?
            } else {
                None
            };
            row(peer.name(), clients, figures.as_ref());
            peers::record(&mut json, peer.name(), clients, figures.as_ref());
            measured.push((peer, figures));
        }
    }

    let fdatasync_after = peers::disk_fdatasync_per_s(scratch.path(), reference)?;
    let fdatasync_per_s = f64::midpoint(fdatasync_before, fdatasync_after);
    println!();
    println!(
        "disk reference: {fdatasync_per_s:.0} fdatasync/s (before {fdatasync_before:.0}, \
         after {fdatasync_after:.0})"
    );
    println!("transitions per second (x the disk's fdatasync rate):");
    println!("{:<8} {:>18} {:>18} {:>18}", "peer", "1 client", "8 clients", "64 clients");
    for peer in Peer::ALL {
        let cells: Vec<String> = measured
            .iter()
            .filter(|(p, _)| *p == peer)
            .map(|(_, f)| match f {
                Some(f) => {
                    format!(
                        "{:.0} ({:.2}x)",
                        f.transitions_per_s,
                        f.transitions_per_s / fdatasync_per_s
                    )
                }
                None => "null".to_owned(),
            })
            .collect();
        print!("{:<8}", peer.name());
        for cell in cells {
            print!(" {cell:>18}");
        }
        println!();
    }

    let number = |x: f64| serde_json::Number::from_f64(x).map_or(Value::Null, Value::Number);
    json.insert("fdatasync_per_s".into(), number(fdatasync_per_s.round()));
    json.insert("fdatasync_per_s_before".into(), number(fdatasync_before.round()));
    json.insert("fdatasync_per_s_after".into(), number(fdatasync_after.round()));
    json.insert("redis_available".into(), Value::Bool(redis_available));
    json.insert("seconds_per_point".into(), number(secs));
    json.insert("part_bytes".into(), PART_BYTES.into());
    json.insert("parts_per_upload".into(), PARTS_PER_UPLOAD.into());
    json.insert("abort_percent".into(), ABORT_PERCENT.into());
    json.insert("seed".into(), SEED.into());
    let out = peers::target_dir().join("bench");
    std::fs::create_dir_all(&out)?;
    let path = out.join("peers.json");
    std::fs::write(&path, serde_json::to_string_pretty(&Value::Object(json))? + "\n")?;
    println!();
    println!("wrote {}", path.display());
    Ok(())
}
