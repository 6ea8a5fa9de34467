//! The gateway's benchmark: one `tessera serve` child process driven by the AWS SDK over
//! plain HTTP, SigV4-signed as a real client sends it (the SDK hashes every payload for
//! `x-amz-content-sha256` and adds its default CRC32 checksum), in one run:
//!
//! 1. Upload: 1 GiB as 8 MiB parts of one multipart upload, 4 parts in flight on 4
//!    connections, timed from CreateMultipartUpload to the answer of
//!    CompleteMultipartUpload: `upload_bytes_per_s`.
//! 2. Baseline: the same bytes written sequentially to a file on the same file system as the
//!    server's data directory, one `fdatasync` (`File::sync_data`) per 8 MiB:
//!    `baseline_bytes_per_s`. Upload and baseline alternate (ABBA order) for a few rounds, so
//!    that a drift of the shared machine hits both alike; the medians give
//!    `ratio_upload_vs_baseline` (the goal is at least 0.6). Every round uploads different
//!    bytes (pseudo-random from the round's seed, every part distinct), and its ETag is
//!    checked against the MD5s of what was sent.
//! 3. Small objects: PutObject of 4 KiB bodies (each distinct) from 64 connections, 64 in
//!    flight, for a fixed time or count: `small_puts_per_s` and latency percentiles.
//!
//! The CPU time of this process (the client) and of the server during each phase shows which
//! side a phase is bound by on a small machine. Writes `target/bench/gateway.json`.
//! Environment:
//! - `TESSERA_BENCH_GATEWAY_ROUNDS`: upload/baseline rounds (default 3);
//! - `TESSERA_BENCH_GATEWAY_UPLOAD_MIB`: bytes of each upload, in MiB, rounded up to whole
//!   8 MiB parts (default 1024);
//! - `TESSERA_BENCH_GATEWAY_SMALL_SECS`: the small-object phase's time limit (default 10);
//! - `TESSERA_BENCH_GATEWAY_SMALL_PUTS`: its count limit (default 20,000), whichever is first;
//! - `TESSERA_BENCH_DIR`: where the data directory and the baseline file go (default
//!   `target/`, on the build's disk);
//! - `TESSERA_BENCH_SERVER`: the `tessera` binary to serve (default: this build's), so that
//!   two builds can be measured in turn by one client.
//!
//! Run it with `cargo bench -p tessera-gateway --bench gateway` (or `scripts/bench --bench
//! gateway`). With the defaults the runs take under a minute on 2 cores and need 4 GiB of
//! disk (three uploads kept, one baseline file at a time) and 1 GiB of memory for the bytes;
//! `TESSERA_BENCH_GATEWAY_ROUNDS=1 TESSERA_BENCH_GATEWAY_UPLOAD_MIB=64
//! TESSERA_BENCH_GATEWAY_SMALL_SECS=2` takes seconds.

#![allow(missing_docs, clippy::unwrap_used, clippy::expect_used, clippy::indexing_slicing)]
#![allow(clippy::cast_possible_truncation, clippy::panic)]

use std::fs::OpenOptions;
use std::io::{BufRead, BufReader, Write};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, ExitCode, Stdio};
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use aws_sdk_s3::Client;
use aws_sdk_s3::config::retry::RetryConfig;
use aws_sdk_s3::config::{Credentials, Region};
use aws_sdk_s3::error::DisplayErrorContext;
use aws_sdk_s3::primitives::ByteStream;
use aws_sdk_s3::types::{CompletedMultipartUpload, CompletedPart};
use bytes::Bytes;
use md5::Digest;
use serde_json::{Map, Value};
use tokio::runtime::Runtime;
use tokio::task::JoinSet;

type BoxError = Box<dyn std::error::Error + Send + Sync>;

/// Bytes of every part of the upload.
const PART_BYTES: usize = 8 << 20;
/// Parts in flight during the upload, each on its own connection.
const UPLOAD_CONNECTIONS: usize = 4;
/// Bytes of each small object.
const SMALL_BODY_BYTES: usize = 4 << 10;
/// Small PutObjects in flight, each on its own connection.
const SMALL_CONNECTIONS: usize = 64;
/// The ratio of upload to baseline throughput the gateway aims for.
const RATIO_GOAL: f64 = 0.6;
const BUCKET: &str = "bench";
const ACCESS_KEY: &str = "tessera-bench";
const SECRET_KEY: &str = "tessera-bench-secret-key";
/// Seed of the pseudo-random bytes; a round's upload and a small object's body mix in their
/// own number.
const SEED: u64 = 0x7e55_e4a0_6a7e_3a1b;
/// How long the server may take to print its address, and to stop after SIGTERM.
const START_TIMEOUT: Duration = Duration::from_secs(60);
const STOP_TIMEOUT: Duration = Duration::from_secs(120);

fn main() -> ExitCode {
    // `cargo bench` passes `--bench`; a filter argument that does not match skips this harness.
    if std::env::args().skip(1).any(|a| !a.starts_with('-') && !"gateway".contains(a.as_str())) {
        return ExitCode::SUCCESS;
    }
    match bench() {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("gateway bench: {e}");
            ExitCode::FAILURE
        }
    }
}

/// The run's parameters, from the environment.
struct Knobs {
    rounds: u64,
    parts: usize,
    small_duration: Duration,
    small_puts_max: u64,
}

impl Knobs {
    fn from_env() -> Knobs {
        let upload_mib = env_f64("TESSERA_BENCH_GATEWAY_UPLOAD_MIB", 1024.0);
        let part_mib = (PART_BYTES >> 20) as f64;
        Knobs {
            rounds: env_f64("TESSERA_BENCH_GATEWAY_ROUNDS", 3.0).ceil() as u64,
            parts: (upload_mib / part_mib).ceil() as usize,
            small_duration: Duration::from_secs_f64(env_f64(
                "TESSERA_BENCH_GATEWAY_SMALL_SECS",
                10.0,
            )),
            small_puts_max: env_f64("TESSERA_BENCH_GATEWAY_SMALL_PUTS", 20_000.0).ceil() as u64,
        }
    }

    fn upload_bytes(&self) -> usize {
        self.parts * PART_BYTES
    }
}

/// A positive number from the environment, else `default`.
fn env_f64(name: &str, default: f64) -> f64 {
    std::env::var(name)
        .ok()
        .and_then(|s| s.parse::<f64>().ok())
        .filter(|x| x.is_finite() && *x > 0.0)
        .unwrap_or(default)
}

/// The workspace's target directory, resolved as the root package's benches do.
fn target_dir() -> PathBuf {
    if let Some(dir) = std::env::var_os("CARGO_TARGET_DIR") {
        return PathBuf::from(dir);
    }
    let manifest = Path::new(env!("CARGO_MANIFEST_DIR"));
    let root = manifest.ancestors().find(|d| d.join("Cargo.lock").is_file()).unwrap_or(manifest);
    root.join("target")
}

fn number(x: f64) -> Value {
    serde_json::Number::from_f64((x * 1000.0).round() / 1000.0).map_or(Value::Null, Value::Number)
}

fn numbers(xs: &[f64]) -> Value {
    Value::Array(xs.iter().map(|&x| number(x)).collect())
}

fn bench() -> Result<(), BoxError> {
    let started = Instant::now();
    let knobs = Knobs::from_env();
    let base = std::env::var_os("TESSERA_BENCH_DIR").map_or_else(target_dir, PathBuf::from);
    std::fs::create_dir_all(&base)?;
    let scratch = tempfile::Builder::new().prefix("gateway-bench-").tempdir_in(&base)?;
    let load_start = load_average_1m();
    println!(
        "gateway bench: {} rounds of a {} MiB upload ({} parts of {} MiB, {UPLOAD_CONNECTIONS} \
         in flight) against a file with fdatasync per part, then {SMALL_BODY_BYTES}-byte \
         PutObjects at {SMALL_CONNECTIONS} in flight for {:?} or {} puts; under {} \
         (load average {load_start:.2})",
        knobs.rounds,
        knobs.upload_bytes() >> 20,
        knobs.parts,
        PART_BYTES >> 20,
        knobs.small_duration,
        knobs.small_puts_max,
        scratch.path().display()
    );
    let mut json = Map::new();
    let server = Server::start(&scratch.path().join("data"))?;
    let runtime = tokio::runtime::Builder::new_multi_thread().enable_all().build()?;
    let client = client(&server.endpoint);
    runtime.block_on(client.create_bucket().bucket(BUCKET).send()).map_err(sdk("CreateBucket"))?;

    let mut summary = Vec::new();
    rounds(&runtime, &client, &server, scratch.path(), &knobs, &mut json, &mut summary)?;
    small_objects(&runtime, &client, &server, &knobs, &mut json, &mut summary)?;

    drop(client);
    drop(runtime);
    let stop_s = server.stop()?;
    json.insert("server_stop_s".into(), number(stop_s));
    summary.push(format!("server stopped (SIGTERM) in {stop_s:.2} s"));

    let (unix_s, utc) = timestamp();
    json.insert("timestamp_unix_s".into(), unix_s.into());
    json.insert("timestamp_utc".into(), utc.into());
    let cores = std::thread::available_parallelism().map_or(0, std::num::NonZero::get);
    json.insert("machine_cores".into(), cores.into());
    json.insert("load_average_1m_start".into(), number(load_start));
    json.insert("load_average_1m_end".into(), number(load_average_1m()));
    let total_s = started.elapsed().as_secs_f64();
    json.insert("bench_s".into(), number(total_s));
    println!(
        "\nsummary ({total_s:.0} s in all, load average {:.2} at the end):",
        load_average_1m()
    );
    for line in &summary {
        println!("  {line}");
    }
    let out = target_dir().join("bench");
    std::fs::create_dir_all(&out)?;
    let path = out.join("gateway.json");
    std::fs::write(&path, serde_json::to_string_pretty(&Value::Object(json))?)?;
    println!("wrote {}", path.display());
    scratch.close()?;
    Ok(())
}

// ---------------------------------------------------------------------------------------------
// The server and the client.

/// A `tessera serve` child process; killed if dropped without [`Server::stop`].
struct Server {
    child: Option<Child>,
    pid: u32,
    endpoint: String,
    stdout: Option<std::thread::JoinHandle<()>>,
}

impl Server {
    fn start(data: &Path) -> Result<Server, BoxError> {
        let exe = std::env::var_os("TESSERA_BENCH_SERVER")
            .unwrap_or_else(|| env!("CARGO_BIN_EXE_tessera").into());
        let mut command = Command::new(&exe);
        command
            .arg("serve")
            .arg("--data")
            .arg(data)
            .arg("--listen")
            .arg("127.0.0.1:0")
            .arg("--access-key")
            .arg(ACCESS_KEY)
            .arg("--secret-key")
            .arg(SECRET_KEY)
            .env_remove("TESSERA_DATA")
            .env_remove("TESSERA_LISTEN")
            .env_remove("TESSERA_ACCESS_KEY")
            .env_remove("TESSERA_SECRET_KEY")
            .env("RUST_LOG", "warn")
            .stdout(Stdio::piped())
            .stderr(Stdio::inherit());
        // The admin listener (when this build has one) would take a fixed port that another
        // server on the machine may hold; the benchmark does not need it.
        let help = Command::new(&exe).args(["serve", "--help"]).output()?;
        if String::from_utf8_lossy(&help.stdout).contains("--admin-listen") {
            command.arg("--admin-listen").arg("off");
        }
        let mut child = command.spawn()?;
        let pid = child.id();
        let stdout = child.stdout.take().ok_or("no stdout of the server")?;
        let (tx, rx) = std::sync::mpsc::channel();
        // Reads the lines up to the address, then drains the rest so the server never blocks.
        let reader = std::thread::spawn(move || {
            for line in BufReader::new(stdout).lines() {
                let Ok(line) = line else { break };
                let _ = tx.send(line);
            }
        });
        let mut server = Server { child: Some(child), pid, endpoint: String::new(), stdout: None };
        let deadline = Instant::now() + START_TIMEOUT;
        loop {
            let left = deadline.saturating_duration_since(Instant::now());
            let line = rx.recv_timeout(left).map_err(|e| format!("server address: {e}"))?;
            if let Some(url) = line.strip_prefix("listening on ") {
                server.endpoint = url.to_owned();
                break;
            }
        }
        server.stdout = Some(reader);
        Ok(server)
    }

    /// SIGTERM, then waits for the graceful shutdown (checkpoint included): its seconds.
    fn stop(mut self) -> Result<f64, BoxError> {
        let mut child = self.child.take().ok_or("the server is gone")?;
        let started = Instant::now();
        let sent = Command::new("kill").arg("-TERM").arg(self.pid.to_string()).status()?;
        if !sent.success() {
            return Err(format!("kill -TERM {} failed: {sent}", self.pid).into());
        }
        while started.elapsed() < STOP_TIMEOUT {
            if let Some(status) = child.try_wait()? {
                let stop_s = started.elapsed().as_secs_f64();
                if let Some(reader) = self.stdout.take() {
                    let _ = reader.join();
                }
                if !status.success() {
                    return Err(format!("the server exited with {status} after SIGTERM").into());
                }
                return Ok(stop_s);
            }
            std::thread::sleep(Duration::from_millis(20));
        }
        let _ = child.kill();
        let _ = child.wait();
        Err(format!("the server did not stop within {STOP_TIMEOUT:?} of SIGTERM").into())
    }
}

impl Drop for Server {
    fn drop(&mut self) {
        if let Some(mut child) = self.child.take() {
            let _ = child.kill();
            let _ = child.wait();
        }
    }
}

/// An SDK client as an application would configure one, with a connection pool big enough
/// for the small objects' connections, and without retries (a failed request fails the run).
fn client(endpoint: &str) -> Client {
    let http = aws_smithy_http_client::Builder::new()
        .pool_max_idle_per_host(SMALL_CONNECTIONS)
        .build_http();
    let config = aws_sdk_s3::Config::builder()
        .behavior_version_latest()
        .region(Region::new("us-east-1"))
        .endpoint_url(endpoint)
        .credentials_provider(Credentials::new(ACCESS_KEY, SECRET_KEY, None, None, "bench"))
        .force_path_style(true)
        .retry_config(RetryConfig::disabled())
        .http_client(http)
        .build();
    Client::from_conf(config)
}

/// Turns an SDK error into one that names the operation and the whole cause.
fn sdk<E: std::error::Error>(operation: &'static str) -> impl Fn(E) -> BoxError {
    move |e| format!("{operation}: {}", DisplayErrorContext(&e)).into()
}

// ---------------------------------------------------------------------------------------------
// 1 and 2. Upload against the baseline.

/// One timed upload.
struct UploadRun {
    seconds: f64,
    part_latencies_ms: Vec<f64>,
    client_cpu_cores: f64,
    server_cpu_cores: f64,
}

/// One timed baseline write.
struct BaselineRun {
    seconds: f64,
    fdatasync_ms: Vec<f64>,
}

/// Figures of every round, in order.
#[derive(Default)]
struct Rounds {
    upload_bytes_per_s: Vec<f64>,
    baseline_bytes_per_s: Vec<f64>,
    upload_s: Vec<f64>,
    baseline_s: Vec<f64>,
    client_cpu_cores: Vec<f64>,
    server_cpu_cores: Vec<f64>,
    part_latencies_ms: Vec<f64>,
    fdatasync_ms: Vec<f64>,
}

fn rounds(
    runtime: &Runtime,
    client: &Client,
    server: &Server,
    scratch: &Path,
    knobs: &Knobs,
    json: &mut Map<String, Value>,
    summary: &mut Vec<String>,
) -> Result<(), BoxError> {
    let bytes = knobs.upload_bytes() as f64;
    let mut all = Rounds::default();
    println!("\nupload vs baseline, MB/s (10^6 bytes per second)");
    println!(
        "{:<6} {:>10} {:>10} {:>7} {:>12} {:>12}",
        "round", "upload", "baseline", "ratio", "client cores", "server cores"
    );
    for round in 0..knobs.rounds {
        // Untimed: fresh bytes, so no round repeats a part of an earlier one.
        let data = Bytes::from(pseudo_random(
            knobs.upload_bytes(),
            SEED ^ round.wrapping_mul(0x9e37_79b9),
        ));
        let key = format!("upload/round-{round}");
        let baseline_path = scratch.join(format!("baseline-{round}.bin"));
        let (upload, base) = if round % 2 == 0 {
            let upload = runtime.block_on(upload(client, server.pid, &key, &data))?;
            (upload, baseline(&baseline_path, &data)?)
        } else {
            let base = baseline(&baseline_path, &data)?;
            (runtime.block_on(upload(client, server.pid, &key, &data))?, base)
        };
        runtime.block_on(check_upload(client, &key, &data))?;
        let (up, bl) = (bytes / upload.seconds, bytes / base.seconds);
        println!(
            "{round:<6} {:>10.1} {:>10.1} {:>7.3} {:>12.2} {:>12.2}",
            up / 1e6,
            bl / 1e6,
            up / bl,
            upload.client_cpu_cores,
            upload.server_cpu_cores
        );
        all.upload_bytes_per_s.push(up);
        all.baseline_bytes_per_s.push(bl);
        all.upload_s.push(upload.seconds);
        all.baseline_s.push(base.seconds);
        all.client_cpu_cores.push(upload.client_cpu_cores);
        all.server_cpu_cores.push(upload.server_cpu_cores);
        all.part_latencies_ms.extend(upload.part_latencies_ms);
        all.fdatasync_ms.extend(base.fdatasync_ms);
    }
    record_rounds(knobs, all, json, summary);
    Ok(())
}

fn record_rounds(
    knobs: &Knobs,
    mut all: Rounds,
    json: &mut Map<String, Value>,
    summary: &mut Vec<String>,
) {
    let upload = median(&all.upload_bytes_per_s);
    let baseline = median(&all.baseline_bytes_per_s);
    let ratio = upload / baseline;
    let ratios: Vec<f64> =
        all.upload_bytes_per_s.iter().zip(&all.baseline_bytes_per_s).map(|(u, b)| u / b).collect();
    json.insert("upload_bytes_per_s".into(), number(upload));
    json.insert("baseline_bytes_per_s".into(), number(baseline));
    json.insert("ratio_upload_vs_baseline".into(), number(ratio));
    json.insert("ratio_goal".into(), number(RATIO_GOAL));
    json.insert("rounds".into(), knobs.rounds.into());
    json.insert("upload_bytes".into(), knobs.upload_bytes().into());
    json.insert("part_bytes".into(), PART_BYTES.into());
    json.insert("parts".into(), knobs.parts.into());
    json.insert("upload_connections".into(), UPLOAD_CONNECTIONS.into());
    json.insert("upload_bytes_per_s_rounds".into(), numbers(&all.upload_bytes_per_s));
    json.insert("baseline_bytes_per_s_rounds".into(), numbers(&all.baseline_bytes_per_s));
    json.insert("ratio_upload_vs_baseline_rounds".into(), numbers(&ratios));
    json.insert("upload_s_rounds".into(), numbers(&all.upload_s));
    json.insert("baseline_s_rounds".into(), numbers(&all.baseline_s));
    json.insert("upload_client_cpu_cores_rounds".into(), numbers(&all.client_cpu_cores));
    json.insert("upload_server_cpu_cores_rounds".into(), numbers(&all.server_cpu_cores));
    let (part_p50, part_p99) = p50_p99(&mut all.part_latencies_ms);
    json.insert("upload_part_latency_ms_p50".into(), number(part_p50));
    json.insert("upload_part_latency_ms_p99".into(), number(part_p99));
    let (sync_p50, sync_p99) = p50_p99(&mut all.fdatasync_ms);
    json.insert("baseline_fdatasync_ms_p50".into(), number(sync_p50));
    json.insert("baseline_fdatasync_ms_p99".into(), number(sync_p99));
    let verdict = if ratio >= RATIO_GOAL { "meets" } else { "misses" };
    summary.push(format!(
        "upload {:.1} MB/s, baseline {:.1} MB/s (medians of {} rounds): ratio {ratio:.3}, \
         {verdict} the goal of {RATIO_GOAL}",
        upload / 1e6,
        baseline / 1e6,
        knobs.rounds
    ));
    summary.push(format!(
        "upload part latency p50 {part_p50:.0} ms, p99 {part_p99:.0} ms; baseline fdatasync \
         p50 {sync_p50:.1} ms, p99 {sync_p99:.1} ms; cores busy during uploads: client {:.2}, \
         server {:.2} (medians)",
        median(&all.client_cpu_cores),
        median(&all.server_cpu_cores)
    ));
}

/// Creates, uploads every part with [`UPLOAD_CONNECTIONS`] in flight, completes: timed from
/// the create to the completion's answer.
async fn upload(
    client: &Client,
    server_pid: u32,
    key: &str,
    data: &Bytes,
) -> Result<UploadRun, BoxError> {
    let parts = data.len() / PART_BYTES;
    let cpu_before = (cpu_seconds("self")?, cpu_seconds(&server_pid.to_string())?);
    let started = Instant::now();
    let created = client
        .create_multipart_upload()
        .bucket(BUCKET)
        .key(key)
        .send()
        .await
        .map_err(sdk("CreateMultipartUpload"))?;
    let upload_id: Arc<str> = created.upload_id().ok_or("no upload id")?.into();
    let next = Arc::new(AtomicU64::new(0));
    let mut tasks = JoinSet::new();
    for _ in 0..UPLOAD_CONNECTIONS {
        let (client, data, key) = (client.clone(), data.clone(), key.to_owned());
        let (upload_id, next) = (Arc::clone(&upload_id), Arc::clone(&next));
        tasks.spawn(async move {
            let mut done = Vec::new();
            loop {
                let index = next.fetch_add(1, Ordering::Relaxed) as usize;
                if index >= parts {
                    return Ok::<_, BoxError>(done);
                }
                let body = data.slice(index * PART_BYTES..(index + 1) * PART_BYTES);
                let number = i32::try_from(index + 1)?;
                let sent = Instant::now();
                let out = client
                    .upload_part()
                    .bucket(BUCKET)
                    .key(&key)
                    .upload_id(&*upload_id)
                    .part_number(number)
                    .body(ByteStream::from(body))
                    .send()
                    .await
                    .map_err(sdk("UploadPart"))?;
                let latency_ms = sent.elapsed().as_secs_f64() * 1e3;
                done.push((number, out.e_tag().ok_or("no part ETag")?.to_owned(), latency_ms));
            }
        });
    }
    let mut uploaded = Vec::with_capacity(parts);
    while let Some(joined) = tasks.join_next().await {
        uploaded.extend(joined??);
    }
    uploaded.sort_by_key(|(number, _, _)| *number);
    let completed = CompletedMultipartUpload::builder()
        .set_parts(Some(
            uploaded
                .iter()
                .map(|(n, etag, _)| CompletedPart::builder().part_number(*n).e_tag(etag).build())
                .collect(),
        ))
        .build();
    client
        .complete_multipart_upload()
        .bucket(BUCKET)
        .key(key)
        .upload_id(&*upload_id)
        .multipart_upload(completed)
        .send()
        .await
        .map_err(sdk("CompleteMultipartUpload"))?;
    let seconds = started.elapsed().as_secs_f64();
    let cpu_after = (cpu_seconds("self")?, cpu_seconds(&server_pid.to_string())?);
    Ok(UploadRun {
        seconds,
        part_latencies_ms: uploaded.iter().map(|(_, _, ms)| *ms).collect(),
        client_cpu_cores: (cpu_after.0 - cpu_before.0) / seconds,
        server_cpu_cores: (cpu_after.1 - cpu_before.1) / seconds,
    })
}

/// Untimed: the stored object has the upload's length and the multipart ETag of its bytes.
async fn check_upload(client: &Client, key: &str, data: &Bytes) -> Result<(), BoxError> {
    let head =
        client.head_object().bucket(BUCKET).key(key).send().await.map_err(sdk("HeadObject"))?;
    let mut md5s = Vec::new();
    for part in data.chunks(PART_BYTES) {
        md5s.extend_from_slice(&md5::Md5::digest(part));
    }
    let expected =
        format!("\"{}-{}\"", hex::encode(md5::Md5::digest(&md5s)), data.len() / PART_BYTES);
    let length = head.content_length().unwrap_or(-1);
    if head.e_tag() != Some(expected.as_str())
        || u64::try_from(length).ok() != Some(data.len() as u64)
    {
        return Err(format!(
            "{key}: stored {length} bytes with ETag {:?}; sent {} bytes, ETag {expected}",
            head.e_tag(),
            data.len()
        )
        .into());
    }
    Ok(())
}

/// The same bytes to a new file, one `fdatasync` per part, sequentially; timed from the open
/// to the last `fdatasync`. The file is removed afterwards.
fn baseline(path: &Path, data: &[u8]) -> Result<BaselineRun, BoxError> {
    let started = Instant::now();
    let mut file = OpenOptions::new().write(true).create_new(true).open(path)?;
    let mut fdatasync_ms = Vec::with_capacity(data.len() / PART_BYTES);
    for chunk in data.chunks(PART_BYTES) {
        file.write_all(chunk)?;
        let synced = Instant::now();
        file.sync_data()?;
        fdatasync_ms.push(synced.elapsed().as_secs_f64() * 1e3);
    }
    let seconds = started.elapsed().as_secs_f64();
    drop(file);
    std::fs::remove_file(path)?;
    Ok(BaselineRun { seconds, fdatasync_ms })
}

// ---------------------------------------------------------------------------------------------
// 3. Small objects.

fn small_objects(
    runtime: &Runtime,
    client: &Client,
    server: &Server,
    knobs: &Knobs,
    json: &mut Map<String, Value>,
    summary: &mut Vec<String>,
) -> Result<(), BoxError> {
    println!(
        "\nsmall objects: PutObject of {SMALL_BODY_BYTES} bytes, {SMALL_CONNECTIONS} in \
         flight, for {:?} or {} puts",
        knobs.small_duration, knobs.small_puts_max
    );
    let server_pid = server.pid.to_string();
    let cpu_before = (cpu_seconds("self")?, cpu_seconds(&server_pid)?);
    let started = Instant::now();
    let mut latencies_ms = runtime.block_on(small_puts(client, knobs))?;
    let seconds = started.elapsed().as_secs_f64();
    let cpu_after = (cpu_seconds("self")?, cpu_seconds(&server_pid)?);
    let (client_cores, server_cores) =
        ((cpu_after.0 - cpu_before.0) / seconds, (cpu_after.1 - cpu_before.1) / seconds);
    let puts = latencies_ms.len();
    let per_s = puts as f64 / seconds;
    let (p50, p99) = p50_p99(&mut latencies_ms);
    let max = latencies_ms.last().copied().unwrap_or(f64::NAN);
    println!(
        "{puts} puts in {seconds:.2} s: {per_s:.0}/s, latency p50 {p50:.2} ms, p99 {p99:.2} ms, \
         max {max:.2} ms; cores busy: client {client_cores:.2}, server {server_cores:.2}"
    );
    json.insert("small_puts_per_s".into(), number(per_s));
    json.insert("small_puts".into(), puts.into());
    json.insert("small_puts_s".into(), number(seconds));
    json.insert("small_body_bytes".into(), SMALL_BODY_BYTES.into());
    json.insert("small_connections".into(), SMALL_CONNECTIONS.into());
    json.insert("small_put_latency_ms_p50".into(), number(p50));
    json.insert("small_put_latency_ms_p99".into(), number(p99));
    json.insert("small_put_latency_ms_max".into(), number(max));
    json.insert("small_client_cpu_cores".into(), number(client_cores));
    json.insert("small_server_cpu_cores".into(), number(server_cores));
    summary.push(format!(
        "small PutObject ({SMALL_BODY_BYTES} B, {SMALL_CONNECTIONS} in flight): {per_s:.0}/s, \
         p50 {p50:.2} ms, p99 {p99:.2} ms; cores busy: client {client_cores:.2}, server \
         {server_cores:.2}"
    ));
    Ok(())
}

/// [`SMALL_CONNECTIONS`] tasks put distinct 4 KiB objects until the time or the count runs
/// out: the latency of every put, in ms.
async fn small_puts(client: &Client, knobs: &Knobs) -> Result<Vec<f64>, BoxError> {
    let next = Arc::new(AtomicU64::new(0));
    let deadline = Instant::now() + knobs.small_duration;
    let count_max = knobs.small_puts_max;
    let mut tasks = JoinSet::new();
    for _ in 0..SMALL_CONNECTIONS {
        let (client, next) = (client.clone(), Arc::clone(&next));
        tasks.spawn(async move {
            let mut latencies_ms = Vec::new();
            loop {
                let n = next.fetch_add(1, Ordering::Relaxed);
                if n >= count_max || Instant::now() >= deadline {
                    return Ok::<_, BoxError>(latencies_ms);
                }
                let mut body = pseudo_random(SMALL_BODY_BYTES, SEED ^ ((n + 1) << 20));
                // The put's number in its first bytes: no two bodies are equal.
                body[..8].copy_from_slice(&n.to_le_bytes());
                let body = Bytes::from(body);
                let sent = Instant::now();
                client
                    .put_object()
                    .bucket(BUCKET)
                    .key(format!("small/{n:08}"))
                    .body(ByteStream::from(body))
                    .send()
                    .await
                    .map_err(sdk("PutObject"))?;
                latencies_ms.push(sent.elapsed().as_secs_f64() * 1e3);
            }
        });
    }
    let mut all = Vec::new();
    while let Some(joined) = tasks.join_next().await {
        all.extend(joined??);
    }
    Ok(all)
}

// ---------------------------------------------------------------------------------------------
// Helpers.

/// `len` pseudo-random bytes (SplitMix64 from `seed`): incompressible, and distinct for
/// distinct seeds.
fn pseudo_random(len: usize, seed: u64) -> Vec<u8> {
    let mut out = vec![0u8; len];
    let mut state = seed;
    for chunk in out.chunks_mut(8) {
        state = state.wrapping_add(0x9e37_79b9_7f4a_7c15);
        let mut z = state;
        z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
        z ^= z >> 31;
        chunk.copy_from_slice(&z.to_le_bytes()[..chunk.len()]);
    }
    out
}

/// User plus system CPU seconds of a process (`self` or a pid) so far.
fn cpu_seconds(pid: &str) -> Result<f64, BoxError> {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat"))?;
    // utime and stime: the 12th and 13th fields after the command name (in parentheses).
    let rest = stat.rsplit_once(')').ok_or("malformed /proc/PID/stat")?.1;
    let mut fields = rest.split_whitespace().skip(11);
    let mut ticks = || -> Result<f64, BoxError> {
        Ok(fields.next().ok_or("short /proc/PID/stat")?.parse::<f64>()?)
    };
    // Linux reports clock ticks of USER_HZ, 100 on every architecture it runs on here.
    Ok((ticks()? + ticks()?) / 100.0)
}

fn load_average_1m() -> f64 {
    std::fs::read_to_string("/proc/loadavg")
        .ok()
        .and_then(|s| s.split_whitespace().next().and_then(|x| x.parse().ok()))
        .unwrap_or(f64::NAN)
}

fn median(values: &[f64]) -> f64 {
    let mut sorted = values.to_vec();
    sorted.sort_by(f64::total_cmp);
    match sorted.len() {
        0 => f64::NAN,
        n if n % 2 == 1 => sorted[n / 2],
        n => (sorted[n / 2 - 1] + sorted[n / 2]) / 2.0,
    }
}

/// The median and the 99th percentile (nearest rank) of `values`, which it sorts.
fn p50_p99(values: &mut [f64]) -> (f64, f64) {
    values.sort_by(f64::total_cmp);
    let at = |q: f64| {
        let rank = ((values.len() as f64 * q).ceil() as usize).clamp(1, values.len().max(1));
        values.get(rank - 1).copied().unwrap_or(f64::NAN)
    };
    (at(0.5), at(0.99))
}

/// Seconds since the epoch, and the same instant as `YYYY-MM-DDTHH:MM:SSZ`.
fn timestamp() -> (u64, String) {
    let unix_s = SystemTime::now().duration_since(UNIX_EPOCH).map_or(0, |d| d.as_secs());
    let (days, secs) = (unix_s / 86_400, unix_s % 86_400);
    // Civil date from days since 1970-01-01 (Howard Hinnant's algorithm).
    let z = days as i64 + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z.rem_euclid(146_097);
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let day = doy - (153 * mp + 2) / 5 + 1;
    let month = if mp < 10 { mp + 3 } else { mp - 9 };
    let year = yoe + era * 400 + i64::from(month <= 2);
    let utc = format!(
        "{year:04}-{month:02}-{day:02}T{:02}:{:02}:{:02}Z",
        secs / 3600,
        secs % 3600 / 60,
        secs % 60
    );
    (unix_s, utc)
}
