//! The engine's benchmark, every figure beside its baseline in the same run:
//!
//! - the "mpu-transitions" workload (create, 3 parts of 4 KiB, complete 90% / abort 10%, each
//!   transition durable before the next) on the engine and on SQLite, redb and Redis, at 1, 8
//!   and 64 clients, and on the ceiling: a bare group-committed log with no state
//!   (`peers/group_log.rs`), which no store here can be expected to beat;
//! - an engine holding 1M live uploads of 3 parts each (`TESSERA_BENCH_UPLOADS`): recovery time
//!   after the process ends without a checkpoint and with a recent one, one ListMultipartUploads
//!   page of 1000 by prefix, the resident (anonymous) memory per live upload, key bytes
//!   excluded, and how long a checkpoint taken after 1000 new uploads holds the state's lock
//!   (`checkpoint_locked_ms_1m`: commits wait that long), each measured in a fresh process.
//!
//! Writes `target/bench/engine.json`. Environment: `TESSERA_BENCH_SECS` (seconds per
//! throughput point, default 5), `TESSERA_BENCH_UPLOADS` (default 1,000,000),
//! `TESSERA_BENCH_DIR` (where stores go, default `target/`), `TESSERA_BENCH_ONLY=state` (only
//! the 1M-upload figures: recovery, listing, memory; written to `engine-state.json`) or
//! `TESSERA_BENCH_ONLY=throughput` (only the workload's points; `engine-throughput.json`),
//! `TESSERA_BENCH_KEEP_STATE=<dir>` (keep the loaded state there; a later run given the same
//! directory reuses it, skipping the load and the figures that need a log without checkpoint),
//! `TESSERA_BENCH_CHECKPOINTS=inline` (the engine takes its checkpoints in the commits that make
//! them due, rather than on its checkpoint thread as the gateway runs it).
//! `./scripts/bench` installs redis-server first when it is missing.

#![allow(missing_docs, clippy::unwrap_used, clippy::expect_used, clippy::indexing_slicing)]
#![allow(clippy::cast_possible_truncation, clippy::panic)]

#[path = "peers/mod.rs"]
mod peers;

#[path = "engine_store/mod.rs"]
mod engine_store;

use std::collections::HashMap;
use std::path::Path;
use std::process::{Command, ExitCode};
use std::time::{Duration, Instant};

use serde_json::{Map, Value};
use tessera::{Engine, EngineConfig, ListUploads, ObjectMeta, PartUpload};

use engine_store::{ACTOR, EngineStore, workload_config};
use peers::workload::{self, BoxError, RunFigures};
use peers::{Peer, SEED};

/// Bytes of each part of the 1M-upload state (distinct bytes per part).
const STATE_PART_BYTES: usize = 64;

fn engine_point(base: &Path, clients: usize, duration: Duration) -> Result<RunFigures, BoxError> {
    let dir = tempfile::Builder::new().prefix("engine-").tempdir_in(base)?;
    let engine = std::sync::Arc::new(Engine::open(dir.path(), workload_config())?);
    engine.create_bucket(ACTOR, workload::BUCKET)?;
    // As the gateway runs it: automatic checkpoints on their own thread, unless
    // `TESSERA_BENCH_CHECKPOINTS=inline` (the commit that makes one due takes it).
    let inline = std::env::var("TESSERA_BENCH_CHECKPOINTS").is_ok_and(|v| v == "inline");
    let checkpointer = if inline { None } else { Some(Engine::start_checkpointer(&engine)?) };
    let store = EngineStore { engine };
    let figures = workload::run(&store, clients, duration, SEED)?;
    if let Some(checkpointer) = checkpointer {
        checkpointer.stop();
    }
    let wal = store.engine.wal().stats();
    println!(
        "engine at {clients} clients: {:.1} records per batch, {:.0} us per fdatasync (max {:.1} ms), {:.0} KiB per batch",
        wal.records_per_batch(),
        wal.sync_time.as_secs_f64() * 1e6 / wal.batches.max(1) as f64,
        wal.sync_time_max.as_secs_f64() * 1e3,
        wal.bytes as f64 / 1024.0 / wal.batches.max(1) as f64,
    );
    Ok(figures)
}

fn main() -> ExitCode {
    if let Ok(role) = std::env::var("TESSERA_BENCH_CHILD") {
        return match child(&role) {
            Ok(()) => ExitCode::SUCCESS,
            Err(e) => {
                eprintln!("engine bench child {role}: {e}");
                ExitCode::FAILURE
            }
        };
    }
    if std::env::args().skip(1).any(|a| !a.starts_with('-') && !"engine".contains(a.as_str())) {
        return ExitCode::SUCCESS;
    }
    match bench() {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("engine bench: {e}");
            ExitCode::FAILURE
        }
    }
}

fn number(x: f64) -> Value {
    serde_json::Number::from_f64((x * 1000.0).round() / 1000.0).map_or(Value::Null, Value::Number)
}

fn bench() -> Result<(), BoxError> {
    let secs = peers::seconds_per_point();
    let duration = Duration::from_secs_f64(secs);
    let base = peers::scratch_base()?;
    let scratch = tempfile::Builder::new().prefix("engine-bench-").tempdir_in(&base)?;
    let mut json = Map::new();
    println!("mpu-transitions, {secs} s per point, stores under {}", scratch.path().display());
    let fdatasync_per_s = peers::disk_fdatasync_per_s(scratch.path(), Duration::from_secs(1))?;
    println!("disk reference: {fdatasync_per_s:.0} fdatasync/s");
    json.insert("fdatasync_per_s".into(), number(fdatasync_per_s));
    if !Peer::Redis.available() {
        println!("redis-server not found: Redis figures are null (./scripts/bench installs it)");
    }
    println!(
        "{:<8} {:>7} {:>14} {:>10} {:>10} {:>10}",
        "store", "clients", "transitions/s", "p50 us", "p99 us", "max us"
    );
    let mut rates: HashMap<(String, usize), f64> = HashMap::new();
    // Interleaved per client count, so that a drift of the shared disk hits every store alike.
    let only_engine = std::env::var_os("TESSERA_BENCH_ENGINE_ONLY").is_some();
    let only = std::env::var("TESSERA_BENCH_ONLY").unwrap_or_default();
    let only_state = only == "state";
    let client_counts = if only_state { Vec::new() } else { peers::client_counts() };
    for clients in client_counts {
        let cpu_before = cpu_seconds()?;
        let wall = Instant::now();
        let figures = engine_point(scratch.path(), clients, duration)?;
        let cores = (cpu_seconds()? - cpu_before) / wall.elapsed().as_secs_f64();
        println!(
            "engine at {clients} clients used {cores:.2} cores (of the machine's {})",
            std::thread::available_parallelism().map_or(0, |n| n.get())
        );
        json.insert(format!("engine_cpu_cores_c{clients}"), number(cores));
        print_row("engine", &figures);
        rates.insert(("engine".into(), clients), figures.transitions_per_s);
        json.insert(format!("transitions_per_s_c{clients}"), number(figures.transitions_per_s));
        peers::record(&mut json, "engine", clients, Some(&figures));
        for peer in Peer::ALL.into_iter().filter(|_| !only_engine) {
            let cpu_before = cpu_seconds()?;
            let wall = Instant::now();
            let figures = peer.run_point(scratch.path(), clients, duration, SEED)?;
            // The bench process's share: the clients, and the store when it is embedded (not
            // redis-server's own process).
            let cores = (cpu_seconds()? - cpu_before) / wall.elapsed().as_secs_f64();
            json.insert(format!("{}_cpu_cores_c{clients}", peer.name()), number(cores));
            match &figures {
                Some(f) => {
                    println!(
                        "{} at {clients} clients used {cores:.2} cores in this process",
                        peer.name()
                    );
                    print_row(peer.name(), f);
                    rates.insert((peer.name().into(), clients), f.transitions_per_s);
                }
                None => println!("{:<8} {clients:>7} {:>14}", peer.name(), "absent"),
            }
            peers::record(&mut json, peer.name(), clients, figures.as_ref());
        }
    }
    for (peer, clients) in [("sqlite", 64), ("redb", 64), ("redis", 64), ("sqlite", 1)]
        .into_iter()
        .filter(|_| !only_state)
    {
        let ratio =
            match (rates.get(&("engine".into(), clients)), rates.get(&(peer.into(), clients))) {
                (Some(engine), Some(peer)) if *peer > 0.0 => number(engine / peer),
                _ => Value::Null,
            };
        println!("ratio vs {peer} at {clients} clients: {ratio}");
        json.insert(format!("ratio_vs_{peer}_c{clients}"), ratio);
    }
    // How much of the ceiling (a bare group-committed log: no state, no index) the engine
    // reaches, per client count.
    for clients in peers::client_counts().into_iter().filter(|_| !only_state) {
        let share = match (
            rates.get(&("engine".into(), clients)),
            rates.get(&(Peer::GroupLog.name().into(), clients)),
        ) {
            (Some(engine), Some(ceiling)) if *ceiling > 0.0 => number(engine / ceiling),
            _ => Value::Null,
        };
        println!("engine's share of the group-log ceiling at {clients} clients: {share}");
        json.insert(format!("engine_share_of_group_log_c{clients}"), share);
    }

    json.insert("seconds_per_point".into(), number(secs));
    let out = peers::target_dir().join("bench");
    std::fs::create_dir_all(&out)?;
    if only == "throughput" {
        // A partial run does not overwrite the full run's figures.
        let path = out.join("engine-throughput.json");
        std::fs::write(&path, serde_json::to_string_pretty(&Value::Object(json))?)?;
        println!("wrote {}", path.display());
        return Ok(());
    }

    let uploads: u64 = std::env::var("TESSERA_BENCH_UPLOADS")
        .ok()
        .and_then(|s| s.parse().ok())
        .unwrap_or(1_000_000);
    // `TESSERA_BENCH_KEEP_STATE=<dir>` keeps the loaded state there (for profiling the
    // recovery children on their own); a run given a directory that holds a finished load
    // reuses it.
    let state_dir = std::env::var_os("TESSERA_BENCH_KEEP_STATE")
        .map_or_else(|| scratch.path().join("state"), std::path::PathBuf::from);
    let loaded_marker = state_dir.join("bench-loaded");
    let reused = std::fs::read_to_string(&loaded_marker)
        .ok()
        .and_then(|s| s.trim().split_once(' ').map(|(u, k)| (u.parse::<u64>(), k.parse::<u64>())))
        .and_then(|(u, k)| Some((u.ok()?, k.ok()?)))
        .filter(|&(u, _)| u == uploads);
    let (key_bytes, cold, full_log) = if let Some((_, key_bytes)) = reused {
        println!("reusing the state of {uploads} uploads in {}", state_dir.display());
        (key_bytes, None, None)
    } else {
        let started = Instant::now();
        let key_bytes = load_state(&state_dir, uploads)?;
        let load_s = started.elapsed().as_secs_f64();
        println!(
            "loaded {uploads} live uploads of 3 parts in {load_s:.1} s ({:.0} transitions/s)",
            (uploads * 4) as f64 / load_s
        );
        json.insert("state_load_s".into(), number(load_s));
        // A fresh process per measure: its memory and timings are the recovery's alone.
        let cold = run_child("recover-and-checkpoint", &state_dir)?;
        // Recovery right after that first checkpoint: the whole log is still on disk (segments
        // go once two checkpoints cover them) and open checks every frame of it.
        let full_log = run_child("recover", &state_dir)?;
        std::fs::write(&loaded_marker, format!("{uploads} {key_bytes}"))?;
        (key_bytes, Some(cold), Some(full_log))
    };
    json.insert("state_uploads".into(), uploads.into());
    // An engine that has run a while: a second checkpoint has retired the covered segments.
    let again = run_child("checkpoint-again", &state_dir)?;
    let warm = run_child("recover", &state_dir)?;
    let checkpoint_locked_ms = again.get("checkpoint_locked_ms").cloned().unwrap_or(Value::Null);
    println!(
        "a checkpoint of {uploads} uploads after {CHECKPOINT_PROBE_UPLOADS} new ones held the state's lock {checkpoint_locked_ms} ms"
    );
    json.insert("checkpoint_locked_ms_1m".into(), checkpoint_locked_ms);
    let get = |v: &Value, k: &str| {
        v.get(k).and_then(Value::as_f64).ok_or_else(|| format!("child gave no {k}"))
    };
    let recovery = get(&warm, "recovery_s")?;
    let rss_delta = get(&warm, "rss_anon_delta_bytes")?;
    let per_upload = rss_delta / uploads as f64 - key_bytes as f64 / uploads as f64;
    println!("recovery of {uploads} uploads: {recovery:.2} s with a recent checkpoint");
    if let (Some(cold), Some(full_log)) = (&cold, &full_log) {
        let recovery_no_checkpoint = get(cold, "recovery_s")?;
        let recovery_full_log = get(full_log, "recovery_s")?;
        println!(
            "recovery of {uploads} uploads: {recovery_full_log:.2} s with one checkpoint and the whole log still on disk, {recovery_no_checkpoint:.2} s from the log alone"
        );
        println!("checkpoint of {uploads} uploads: {:.2} s", get(cold, "checkpoint_s")?);
        json.insert("recovery_s_1m_no_checkpoint".into(), number(recovery_no_checkpoint));
        json.insert("recovery_s_1m_full_log".into(), number(recovery_full_log));
        json.insert(
            "checkpoint_s_1m".into(),
            cold.get("checkpoint_s").cloned().unwrap_or(Value::Null),
        );
    }
    println!("list-uploads page of 1000 by prefix: {:.3} ms (median)", get(&warm, "list_page_ms")?);
    println!(
        "resident memory per live upload: {per_upload:.0} bytes (key bytes excluded; {} bytes of anonymous memory in all)",
        rss_delta
    );
    json.insert("recovery_s_1m".into(), number(recovery));
    json.insert("list_page_ms_1m".into(), warm.get("list_page_ms").cloned().unwrap_or(Value::Null));
    json.insert("rss_bytes_per_upload".into(), number(per_upload));
    // A partial run does not overwrite the full run's figures.
    let path = out.join(if only_state { "engine-state.json" } else { "engine.json" });
    std::fs::write(&path, serde_json::to_string_pretty(&Value::Object(json))?)?;
    println!("wrote {}", path.display());
    Ok(())
}

fn print_row(name: &str, f: &RunFigures) {
    println!(
        "{name:<8} {:>7} {:>14.0} {:>10.0} {:>10.0} {:>10.0}",
        f.clients, f.transitions_per_s, f.p50_us, f.p99_us, f.max_us
    );
}

/// Fills `dir` with `uploads` live uploads of 3 parts each, from 64 threads, with no
/// checkpoint (so that the log holds every transition). Returns the key bytes in all.
fn load_state(dir: &Path, uploads: u64) -> Result<u64, BoxError> {
    let config = EngineConfig { checkpoint_wal_bytes: u64::MAX / 2, ..EngineConfig::default() };
    let engine = Engine::open(dir, config)?;
    engine.create_bucket(ACTOR, workload::BUCKET)?;
    const THREADS: u64 = 64;
    let key_bytes = std::sync::atomic::AtomicU64::new(0);
    std::thread::scope(|scope| -> Result<(), BoxError> {
        let threads: Vec<_> = (0..THREADS)
            .map(|thread| {
                let (engine, key_bytes) = (&engine, &key_bytes);
                scope.spawn(move || -> Result<(), String> {
                    let mut random = workload::SplitMix64::new(SEED ^ thread);
                    let mut payload = vec![0u8; STATE_PART_BYTES];
                    for n in (thread..uploads).step_by(THREADS as usize) {
                        let key = format!("k/{:02}/{n:010}", thread % 100);
                        let info = engine
                            .create_upload(ACTOR, workload::BUCKET, &key, ObjectMeta::default())
                            .map_err(|e| e.to_string())?;
                        key_bytes.fetch_add(key.len() as u64, std::sync::atomic::Ordering::Relaxed);
                        let id = info.upload_id.to_string();
                        put_state_parts(engine, &key, &id, &mut random, &mut payload)
                            .map_err(|e| e.to_string())?;
                    }
                    Ok(())
                })
            })
            .collect();
        for thread in threads {
            thread.join().map_err(|_| "a loader thread panicked")??;
        }
        Ok(())
    })?;
    Ok(key_bytes.into_inner())
}

/// Puts the 3 parts of a state upload: `payload`'s length each, fresh random bytes.
fn put_state_parts(
    engine: &Engine,
    key: &str,
    upload_id: &str,
    random: &mut workload::SplitMix64,
    payload: &mut [u8],
) -> Result<(), tessera::EngineError> {
    for part_number in 1..=3 {
        random.fill(payload);
        let request = PartUpload {
            bucket: workload::BUCKET,
            key,
            upload_id,
            part_number,
            content_length: Some(payload.len() as u64),
            ..PartUpload::default()
        };
        engine.put_part(ACTOR, &request, &mut &payload[..])?;
    }
    Ok(())
}

/// Uploads of 3 inline parts written before the checkpoint whose lock is measured.
const CHECKPOINT_PROBE_UPLOADS: u64 = 1000;

/// Writes `uploads` new uploads of 3 parts each (inline, like the loaded ones); returns their
/// keys and ids.
fn put_inline_uploads(engine: &Engine, uploads: u64) -> Result<Vec<(String, String)>, BoxError> {
    let mut random = workload::SplitMix64::new(SEED ^ 0xC4EC);
    let mut payload = vec![0u8; STATE_PART_BYTES];
    let mut made = Vec::new();
    for n in 0..uploads {
        let key = format!("probe/{}/{n:06}", std::process::id());
        let id = engine
            .create_upload(ACTOR, workload::BUCKET, &key, ObjectMeta::default())?
            .upload_id
            .to_string();
        put_state_parts(engine, &key, &id, &mut random, &mut payload)?;
        made.push((key, id));
    }
    Ok(made)
}

fn run_child(role: &str, dir: &Path) -> Result<Value, BoxError> {
    let output = Command::new(std::env::current_exe()?)
        .env("TESSERA_BENCH_CHILD", role)
        .env("TESSERA_BENCH_CHILD_DIR", dir)
        .output()?;
    eprint!("{}", String::from_utf8_lossy(&output.stderr));
    if !output.status.success() {
        return Err(
            format!("child {role} failed: {}", String::from_utf8_lossy(&output.stderr)).into()
        );
    }
    let stdout = String::from_utf8(output.stdout)?;
    let line = stdout.lines().last().ok_or("child printed nothing")?;
    Ok(serde_json::from_str(line)?)
}

/// CPU time this process used so far (user and system), from /proc.
fn cpu_seconds() -> Result<f64, BoxError> {
    let stat = std::fs::read_to_string("/proc/self/stat")?;
    // Fields after the command name (which is in parentheses and may hold spaces).
    let rest = stat.rsplit_once(')').ok_or("malformed /proc/self/stat")?.1;
    let fields: Vec<&str> = rest.split_whitespace().collect();
    // utime and stime are fields 14 and 15 of the whole line: 12 and 13 after the name.
    let ticks: f64 = fields.get(11).ok_or("no utime")?.parse::<f64>()?
        + fields.get(12).ok_or("no stime")?.parse::<f64>()?;
    Ok(ticks / 100.0)
}

/// Anonymous resident memory of this process (heap, not mapped files), from /proc.
fn rss_anon_bytes() -> Result<u64, BoxError> {
    let status = std::fs::read_to_string("/proc/self/status")?;
    let line = status
        .lines()
        .find(|l| l.starts_with("RssAnon:"))
        .ok_or("no RssAnon in /proc/self/status")?;
    let kib: u64 = line.split_whitespace().nth(1).ok_or("malformed RssAnon")?.parse()?;
    Ok(kib * 1024)
}

fn child(role: &str) -> Result<(), BoxError> {
    let dir = std::env::var("TESSERA_BENCH_CHILD_DIR")?;
    let before = rss_anon_bytes()?;
    let started = Instant::now();
    let engine = Engine::open(&dir, EngineConfig::default())?;
    let recovery_s = started.elapsed().as_secs_f64();
    let mut out = Map::new();
    out.insert("recovery_s".into(), number(recovery_s));
    out.insert("uploads".into(), engine.stats().live_uploads.into());
    if role == "checkpoint-again" {
        engine.create_bucket(ACTOR, &format!("bench-after-{}", std::process::id()))?;
        let report = engine.checkpoint()?.ok_or("no checkpoint taken")?;
        eprintln!("second checkpoint: {report:?}");
        // A checkpoint of an engine taking writes: how long it stops commits.
        let ids = put_inline_uploads(&engine, CHECKPOINT_PROBE_UPLOADS)?;
        let report = engine.checkpoint()?.ok_or("no checkpoint taken")?;
        eprintln!("checkpoint after {CHECKPOINT_PROBE_UPLOADS} new uploads: {report:?}");
        let locked = report.state_locked + report.migrate_locked;
        out.insert("checkpoint_locked_ms".into(), number(locked.as_secs_f64() * 1000.0));
        // The state goes back to the loaded one (the figures of later children are per upload).
        for (key, id) in &ids {
            engine.abort_upload(ACTOR, workload::BUCKET, key, id, None)?;
        }
    } else if role == "recover-and-checkpoint" {
        let started = Instant::now();
        let report = engine.checkpoint()?.ok_or("no checkpoint taken")?;
        out.insert("checkpoint_s".into(), number(started.elapsed().as_secs_f64()));
        eprintln!("checkpoint: {report:?}");
    } else {
        out.insert("rss_anon_delta_bytes".into(), rss_anon_bytes()?.saturating_sub(before).into());
        let mut times = Vec::new();
        for i in 0..200u64 {
            let args = ListUploads {
                prefix: format!("k/{:02}/", i % 64),
                max_uploads: Some(1000),
                ..ListUploads::default()
            };
            let started = Instant::now();
            let page = engine.list_uploads(workload::BUCKET, &args)?;
            times.push(started.elapsed().as_secs_f64() * 1000.0);
            if page.uploads.is_empty() {
                return Err("an empty listing page".into());
            }
        }
        times.sort_by(f64::total_cmp);
        out.insert("list_page_ms".into(), number(times[times.len() / 2]));
    }
    println!("{}", Value::Object(out));
    Ok(())
}
