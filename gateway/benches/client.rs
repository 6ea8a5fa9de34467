//! `tessera cp` against the aws cli, both against one `tessera serve` child process on
//! loopback, in one run:
//!
//! 1. Upload: a file (1 GiB by default, pseudo-random) with `tessera cp FILE s3://...` and
//!    with `aws s3 cp FILE s3://...`, both in 8 MiB parts with 8 in flight (the aws cli's
//!    `multipart_chunksize`, `multipart_threshold` and `max_concurrent_requests` set to the
//!    same in a config file of the run's own, through `AWS_CONFIG_FILE`), in ABBA order over
//!    the rounds so that a drift of the shared machine hits both alike. Each run is timed
//!    from the process's start to its exit, and every object's ETag is checked against the
//!    MD5s of the file's parts. `upload_bytes_per_s`, `awscli_upload_bytes_per_s` and their
//!    ratio are medians over the rounds.
//! 2. Download: the object `tessera cp` uploaded, back to a file, with each client the same
//!    way; every download's MD5 is checked against the file's. `download_bytes_per_s`,
//!    `awscli_download_bytes_per_s`, their ratio. `tessera cp` makes the file durable
//!    (fdatasync before it records a part as done and before the rename) and the aws cli does
//!    not, so the run also times an fdatasync of the aws cli's file after it exits
//!    (`awscli_download_synced_bytes_per_s`, `ratio_download_vs_awscli_synced`).
//! 3. Resume: `tessera cp` uploads the file through a TCP relay that counts the bytes the
//!    client sends; when half the file has gone through, the client is killed (SIGKILL) and
//!    run again to the end. `resume_sent_multiple` is every byte sent by both runs (HTTP
//!    heads included) over the file's size: 1.0 would be a resume that sends nothing twice;
//!    the parts in flight at the kill are what it costs above that.
//!
//! The CPU seconds of the server and of the client in each run show where the machine's time
//! goes: on a small machine the two share the cores. Writes
//! `target/bench/client.json`. The aws cli comes from the virtual environment the client
//! tests make (`target/client-tests-venv`, from `gateway/tests/clients/requirements.txt`),
//! made here the same way when it is missing. Environment:
//! - `TESSERA_BENCH_CLIENT_MIB`: the file's size in MiB (default 1024);
//! - `TESSERA_BENCH_CLIENT_ROUNDS`: upload and download rounds per client (default 2);
//! - `TESSERA_BENCH_DIR`: where the server's data, the file and the downloads go (default
//!   `target/`, on the build's disk).
//!
//! Run it with `cargo bench -p tessera-gateway --bench client`. With the defaults it takes
//! about a minute on 2 cores and needs about 4 GiB of disk (the server keeps identical parts
//! once, so the uploads of the same file share their bytes); `TESSERA_BENCH_CLIENT_MIB=64
//! TESSERA_BENCH_CLIENT_ROUNDS=1` takes seconds.

#![allow(missing_docs, clippy::unwrap_used, clippy::expect_used, clippy::indexing_slicing)]
#![allow(clippy::cast_possible_truncation, clippy::panic)]

use std::io::{BufRead, BufReader, Read, Write};
use std::net::{TcpListener, TcpStream};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, ExitCode, Stdio};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use aws_sdk_s3::Client;
use aws_sdk_s3::config::{Credentials, Region};
use md5::Digest;
use serde_json::{Map, Value};

type BoxError = Box<dyn std::error::Error + Send + Sync>;

/// The part size and the parts in flight of both clients.
const PART_BYTES: u64 = 8 << 20;
const CONCURRENCY: u32 = 8;
const BUCKET: &str = "bench";
const ACCESS_KEY: &str = "tessera-bench";
const SECRET_KEY: &str = "tessera-bench-secret-key";
const SEED: u64 = 0x0c11_e47b_e4c4_0001;
/// The goals of issue 9.
const RATIO_GOAL: f64 = 2.0;
const RESUME_GOAL: f64 = 1.1;
const START_TIMEOUT: Duration = Duration::from_secs(60);
const STOP_TIMEOUT: Duration = Duration::from_secs(120);
/// One client run's time limit.
const RUN_TIMEOUT: Duration = Duration::from_secs(900);

fn main() -> ExitCode {
    // `cargo bench` passes `--bench`; a filter argument that does not match skips this harness.
    if std::env::args().skip(1).any(|a| !a.starts_with('-') && !"client".contains(a.as_str())) {
        return ExitCode::SUCCESS;
    }
    match bench() {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("client bench: {e}");
            ExitCode::FAILURE
        }
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

/// The workspace's target directory, resolved as the other benches do.
fn target_dir() -> PathBuf {
    if let Some(dir) = std::env::var_os("CARGO_TARGET_DIR") {
        return PathBuf::from(dir);
    }
    workspace_target()
}

/// `<workspace>/target`, where the client tests keep their virtual environment whatever
/// `CARGO_TARGET_DIR` says (`gateway/tests/clients.rs`).
fn workspace_target() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../target")
}

fn number(x: f64) -> Value {
    serde_json::Number::from_f64((x * 1000.0).round() / 1000.0).map_or(Value::Null, Value::Number)
}

fn numbers(xs: &[f64]) -> Value {
    Value::Array(xs.iter().map(|&x| number(x)).collect())
}

fn bench() -> Result<(), BoxError> {
    let started = Instant::now();
    let size = (env_f64("TESSERA_BENCH_CLIENT_MIB", 1024.0) * 1_048_576.0).ceil() as u64;
    let rounds = env_f64("TESSERA_BENCH_CLIENT_ROUNDS", 2.0).ceil() as usize;
    let base = std::env::var_os("TESSERA_BENCH_DIR").map_or_else(target_dir, PathBuf::from);
    std::fs::create_dir_all(&base)?;
    let scratch = tempfile::Builder::new().prefix("client-bench-").tempdir_in(&base)?;
    let aws = venv()?.join("bin/aws");
    let load_start = load_average_1m();
    println!(
        "client bench: {} MiB up and down with tessera cp and the aws cli, {} MiB parts, {} in \
         flight, {rounds} rounds each; then a resume killed at half; under {} (load average \
         {load_start:.2})",
        size >> 20,
        PART_BYTES >> 20,
        CONCURRENCY,
        scratch.path().display()
    );

    let file = scratch.path().join("source.bin");
    let expected = write_source(&file, size)?;
    let server = Server::start(&scratch.path().join("data"))?;
    let runtime = tokio::runtime::Builder::new_current_thread().enable_all().build()?;
    let client = sdk_client(&server.endpoint);
    runtime.block_on(client.create_bucket().bucket(BUCKET).send())?;
    let clients = Clients::new(scratch.path(), &server.endpoint, &aws)?;
    let mut json = Map::new();
    let mut summary = Vec::new();

    // 1. Uploads, ABBA.
    let mut up = Figures::default();
    println!("\nuploads, MB/s (10^6 bytes per second)");
    for round in 0..rounds {
        for tool in abba(round) {
            let key = format!("{}/{round}", tool.name());
            let run = clients.upload(tool, &file, &key, server.pid)?;
            let etag = runtime.block_on(client.head_object().bucket(BUCKET).key(&key).send())?;
            let etag = etag.e_tag().unwrap_or_default().trim_matches('"').to_owned();
            if etag != expected.etag {
                return Err(format!("{key}: ETag {etag}, expected {}", expected.etag).into());
            }
            up.push(tool, size, &run);
            println!("{round} {:<12} {}", tool.name(), run.line(size));
        }
    }
    up.record("upload", &mut json, &mut summary);

    // 2. Downloads of the object tessera cp uploaded, ABBA. tessera cp makes the file durable
    // (fdatasync before it records a part and before the rename); the aws cli does not, so
    // its file's fdatasync after it exits is timed too.
    let mut down = Figures::default();
    let mut synced = Vec::new();
    println!("\ndownloads, MB/s");
    let object = format!("{}/0", Tool::Tessera.name());
    for round in 0..rounds {
        for tool in abba(round) {
            let target = scratch.path().join("download.bin");
            let run = clients.download(tool, &object, &target, server.pid)?;
            println!("{round} {:<12} {}", tool.name(), run.line(size));
            if tool == Tool::AwsCli {
                let sync_s = fdatasync_seconds(&target)?;
                synced.push(size as f64 / (run.seconds + sync_s));
                println!("  the aws cli's file synced afterwards in {sync_s:.2} s");
            }
            let md5 = md5_file(&target)?;
            if md5 != expected.md5 {
                let name = tool.name();
                return Err(
                    format!("{name}: downloaded MD5 {md5}, expected {}", expected.md5).into()
                );
            }
            std::fs::remove_file(&target)?;
            down.push(tool, size, &run);
        }
    }
    down.record("download", &mut json, &mut summary);
    let (ours, synced_m) = (median(&down.tessera), median(&synced));
    json.insert("awscli_download_synced_bytes_per_s".into(), number(synced_m));
    json.insert("ratio_download_vs_awscli_synced".into(), number(ours / synced_m));
    summary.push(format!(
        "download made durable as tessera cp makes it: the aws cli plus an fdatasync of its \
         file {:.1} MB/s, ratio {:.2}",
        synced_m / 1e6,
        ours / synced_m
    ));

    // 3. Resume.
    let multiple = resume(&clients, &server, &file, size, &expected, &runtime, &client, &mut json)?;
    let verdict = if multiple <= RESUME_GOAL { "meets" } else { "misses" };
    summary.push(format!(
        "resume after a SIGKILL at half: {multiple:.3} times the file's bytes sent in all, \
         {verdict} the goal of {RESUME_GOAL}"
    ));

    drop(client);
    drop(runtime);
    server.stop()?;
    let (unix_s, utc) = timestamp();
    json.insert("timestamp_unix_s".into(), unix_s.into());
    json.insert("timestamp_utc".into(), utc.into());
    let cores = std::thread::available_parallelism().map_or(0, std::num::NonZero::get);
    json.insert("machine_cores".into(), cores.into());
    json.insert("file_bytes".into(), size.into());
    json.insert("part_bytes".into(), PART_BYTES.into());
    json.insert("concurrency".into(), CONCURRENCY.into());
    json.insert("rounds".into(), rounds.into());
    json.insert("awscli_version".into(), clients.aws_version()?.into());
    json.insert("ratio_goal".into(), number(RATIO_GOAL));
    json.insert("resume_goal".into(), number(RESUME_GOAL));
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
    let path = out.join("client.json");
    std::fs::write(&path, serde_json::to_string_pretty(&Value::Object(json))?)?;
    println!("wrote {}", path.display());
    scratch.close()?;
    Ok(())
}

/// The order of the clients in a round: A B, then B A.
fn abba(round: usize) -> [Tool; 2] {
    if round.is_multiple_of(2) {
        [Tool::Tessera, Tool::AwsCli]
    } else {
        [Tool::AwsCli, Tool::Tessera]
    }
}

// ---------------------------------------------------------------------------------------------
// The source file.

/// What the source file's objects and downloads must match.
struct Expected {
    /// S3's ETag of the file in `PART_BYTES` parts, without quotes.
    etag: String,
    /// MD5 of the whole file, hex.
    md5: String,
}

/// Writes `size` pseudo-random bytes (every part distinct) and syncs them.
fn write_source(path: &Path, size: u64) -> Result<Expected, BoxError> {
    let mut file = std::fs::File::create(path)?;
    let mut whole = md5::Md5::new();
    let mut part_md5s = Vec::new();
    let mut written = 0u64;
    let mut part = 0u64;
    while written < size {
        let len = PART_BYTES.min(size - written);
        let bytes = pseudo_random(len as usize, SEED ^ (part << 32));
        whole.update(&bytes);
        part_md5s.extend_from_slice(&md5::Md5::digest(&bytes));
        file.write_all(&bytes)?;
        written += len;
        part += 1;
    }
    file.sync_all()?;
    let md5 = hex::encode(whole.finalize());
    // Below one part both clients use one PutObject, whose ETag is the MD5.
    let etag = if size < PART_BYTES {
        md5.clone()
    } else {
        format!("{}-{part}", hex::encode(md5::Md5::digest(&part_md5s)))
    };
    Ok(Expected { etag, md5 })
}

/// Seconds an fdatasync of a file takes (what a download left unsynced).
fn fdatasync_seconds(path: &Path) -> Result<f64, BoxError> {
    let file = std::fs::File::open(path)?;
    let started = Instant::now();
    file.sync_data()?;
    Ok(started.elapsed().as_secs_f64())
}

fn md5_file(path: &Path) -> Result<String, BoxError> {
    let mut file = std::fs::File::open(path)?;
    let mut h = md5::Md5::new();
    let mut buf = vec![0u8; 8 << 20];
    loop {
        let n = file.read(&mut buf)?;
        if n == 0 {
            break;
        }
        h.update(&buf[..n]);
    }
    Ok(hex::encode(h.finalize()))
}

/// `len` pseudo-random bytes (SplitMix64 from `seed`).
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

// ---------------------------------------------------------------------------------------------
// The clients.

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Tool {
    Tessera,
    AwsCli,
}

impl Tool {
    fn name(self) -> &'static str {
        match self {
            Tool::Tessera => "tessera-cp",
            Tool::AwsCli => "aws-cli",
        }
    }
}

/// One timed client run.
struct Run {
    seconds: f64,
    /// CPU seconds (user and system) the server spent meanwhile.
    server_cpu_s: f64,
    /// CPU seconds the client process spent, all its threads.
    client_cpu_s: f64,
}

impl Run {
    fn line(&self, size: u64) -> String {
        format!(
            "{:>8.1} MB/s in {:>6.2} s; CPU s: server {:.2}, client {:.2}",
            size as f64 / self.seconds / 1e6,
            self.seconds,
            self.server_cpu_s,
            self.client_cpu_s
        )
    }
}

/// How both clients are run.
struct Clients {
    endpoint: String,
    aws: PathBuf,
    aws_config: PathBuf,
    state_dir: PathBuf,
}

impl Clients {
    fn new(scratch: &Path, endpoint: &str, aws: &Path) -> Result<Clients, BoxError> {
        let aws_config = scratch.join("aws-config");
        let mib = PART_BYTES >> 20;
        std::fs::write(
            &aws_config,
            format!(
                "[default]\nregion = us-east-1\ns3 =\n    multipart_chunksize = {mib}MB\n    \
                 multipart_threshold = {mib}MB\n    max_concurrent_requests = {CONCURRENCY}\n"
            ),
        )?;
        Ok(Clients {
            endpoint: endpoint.to_owned(),
            aws: aws.to_path_buf(),
            aws_config,
            state_dir: scratch.join("cp-state"),
        })
    }

    fn command(&self, tool: Tool, endpoint: &str, from: &str, to: &str) -> Command {
        let mut command = match tool {
            Tool::Tessera => {
                let mut c = Command::new(env!("CARGO_BIN_EXE_tessera"));
                c.arg("cp")
                    .args([from, to, "--endpoint-url", endpoint, "--quiet"])
                    .args(["--part-size", &PART_BYTES.to_string()])
                    .args(["--concurrency", &CONCURRENCY.to_string()])
                    .arg("--state-dir")
                    .arg(&self.state_dir);
                c
            }
            Tool::AwsCli => {
                let mut c = Command::new(&self.aws);
                c.args(["--endpoint-url", endpoint, "s3", "cp", from, to, "--no-progress"]);
                c
            }
        };
        command
            .env("AWS_ACCESS_KEY_ID", ACCESS_KEY)
            .env("AWS_SECRET_ACCESS_KEY", SECRET_KEY)
            .env("AWS_REGION", "us-east-1")
            .env("AWS_DEFAULT_REGION", "us-east-1")
            .env("AWS_CONFIG_FILE", &self.aws_config)
            .env("AWS_SHARED_CREDENTIALS_FILE", "/dev/null")
            .env_remove("AWS_PROFILE")
            .env_remove("AWS_ENDPOINT_URL")
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped());
        command
    }

    fn upload(&self, tool: Tool, file: &Path, key: &str, server: u32) -> Result<Run, BoxError> {
        let to = format!("s3://{BUCKET}/{key}");
        let command = self.command(tool, &self.endpoint, file.to_str().unwrap(), &to);
        timed(command, server)
    }

    fn download(&self, tool: Tool, key: &str, file: &Path, server: u32) -> Result<Run, BoxError> {
        let from = format!("s3://{BUCKET}/{key}");
        let command = self.command(tool, &self.endpoint, &from, file.to_str().unwrap());
        timed(command, server)
    }

    fn aws_version(&self) -> Result<String, BoxError> {
        let out = Command::new(&self.aws).arg("--version").output()?;
        let text = format!(
            "{}{}",
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        );
        Ok(text.trim().to_owned())
    }
}

/// Runs a client to its end: wall time from spawn to exit, the CPU the server used meanwhile,
/// and the client's own (this process's reaped children's, from /proc/self/stat).
fn timed(mut command: Command, server: u32) -> Result<Run, BoxError> {
    let server_before = cpu_seconds(&server.to_string())?;
    let children_before = children_cpu_seconds()?;
    let started = Instant::now();
    let child = command.spawn()?;
    let (status, stdout, stderr) = wait(child)?;
    let seconds = started.elapsed().as_secs_f64();
    if !status {
        return Err(format!("{command:?} failed:\n{stdout}\n{stderr}").into());
    }
    let server_s = cpu_seconds(&server.to_string())? - server_before;
    let client_cpu_s = children_cpu_seconds()? - children_before;
    Ok(Run { seconds, server_cpu_s: server_s, client_cpu_s })
}

/// Waits for a child (killing it after `RUN_TIMEOUT`): success, stdout, stderr.
fn wait(mut child: Child) -> Result<(bool, String, String), BoxError> {
    let mut stdout = child.stdout.take().ok_or("no stdout")?;
    let mut stderr = child.stderr.take().ok_or("no stderr")?;
    let out = std::thread::spawn(move || {
        let mut s = String::new();
        let _ = stdout.read_to_string(&mut s);
        s
    });
    let err = std::thread::spawn(move || {
        let mut s = String::new();
        let _ = stderr.read_to_string(&mut s);
        s
    });
    let deadline = Instant::now() + RUN_TIMEOUT;
    let status = loop {
        if let Some(status) = child.try_wait()? {
            break status;
        }
        if Instant::now() > deadline {
            let _ = child.kill();
            let _ = child.wait();
            return Err(format!("a client ran longer than {RUN_TIMEOUT:?}").into());
        }
        std::thread::sleep(Duration::from_millis(5));
    };
    Ok((status.success(), out.join().unwrap_or_default(), err.join().unwrap_or_default()))
}

/// Median and per-round figures of both clients in one direction.
#[derive(Default)]
struct Figures {
    tessera: Vec<f64>,
    awscli: Vec<f64>,
    tessera_s: Vec<f64>,
    awscli_s: Vec<f64>,
    tessera_server_cpu_s: Vec<f64>,
    awscli_server_cpu_s: Vec<f64>,
    tessera_client_cpu_s: Vec<f64>,
    awscli_client_cpu_s: Vec<f64>,
}

impl Figures {
    fn push(&mut self, tool: Tool, size: u64, run: &Run) {
        let rate = size as f64 / run.seconds;
        let (rates, seconds, server, client) = match tool {
            Tool::Tessera => (
                &mut self.tessera,
                &mut self.tessera_s,
                &mut self.tessera_server_cpu_s,
                &mut self.tessera_client_cpu_s,
            ),
            Tool::AwsCli => (
                &mut self.awscli,
                &mut self.awscli_s,
                &mut self.awscli_server_cpu_s,
                &mut self.awscli_client_cpu_s,
            ),
        };
        rates.push(rate);
        seconds.push(run.seconds);
        server.push(run.server_cpu_s);
        client.push(run.client_cpu_s);
    }

    fn record(&self, direction: &str, json: &mut Map<String, Value>, summary: &mut Vec<String>) {
        let (ours, theirs) = (median(&self.tessera), median(&self.awscli));
        let ratio = ours / theirs;
        let mut put = |name: String, value: Value| {
            json.insert(name, value);
        };
        put(format!("{direction}_bytes_per_s"), number(ours));
        put(format!("awscli_{direction}_bytes_per_s"), number(theirs));
        put(format!("ratio_{direction}_vs_awscli"), number(ratio));
        put(format!("{direction}_bytes_per_s_rounds"), numbers(&self.tessera));
        put(format!("awscli_{direction}_bytes_per_s_rounds"), numbers(&self.awscli));
        put(format!("{direction}_s_rounds"), numbers(&self.tessera_s));
        put(format!("awscli_{direction}_s_rounds"), numbers(&self.awscli_s));
        put(format!("{direction}_server_cpu_s_rounds"), numbers(&self.tessera_server_cpu_s));
        put(format!("awscli_{direction}_server_cpu_s_rounds"), numbers(&self.awscli_server_cpu_s));
        put(format!("{direction}_client_cpu_s_rounds"), numbers(&self.tessera_client_cpu_s));
        put(format!("awscli_{direction}_client_cpu_s_rounds"), numbers(&self.awscli_client_cpu_s));
        let verdict = if ratio >= RATIO_GOAL { "meets" } else { "misses" };
        summary.push(format!(
            "{direction}: tessera cp {:.1} MB/s, aws cli {:.1} MB/s (medians): ratio {ratio:.2}, \
             {verdict} the goal of {RATIO_GOAL}; CPU seconds: server {:.2} vs {:.2}, client \
             {:.2} vs {:.2}",
            ours / 1e6,
            theirs / 1e6,
            median(&self.tessera_server_cpu_s),
            median(&self.awscli_server_cpu_s),
            median(&self.tessera_client_cpu_s),
            median(&self.awscli_client_cpu_s),
        ));
    }
}

// ---------------------------------------------------------------------------------------------
// 3. Resume.

/// Uploads through a counting relay, kills the client once half the file went through, runs
/// it again to the end: the bytes sent by both runs over the file's size.
#[expect(clippy::too_many_arguments, reason = "the bench's shared pieces, once")]
fn resume(
    clients: &Clients,
    server: &Server,
    file: &Path,
    size: u64,
    expected: &Expected,
    runtime: &tokio::runtime::Runtime,
    client: &Client,
    json: &mut Map<String, Value>,
) -> Result<f64, BoxError> {
    let relay = Relay::start(server.endpoint.trim_start_matches("http://"))?;
    let key = "resume/0";
    let to = format!("s3://{BUCKET}/{key}");
    let from = file.to_str().unwrap();
    let mut first = clients.command(Tool::Tessera, &relay.endpoint, from, &to).spawn()?;
    let deadline = Instant::now() + RUN_TIMEOUT;
    while relay.sent.load(Ordering::Relaxed) < size / 2 {
        if first.try_wait()?.is_some() {
            return Err("the resume phase's first run ended before half the file was sent".into());
        }
        if Instant::now() > deadline {
            let _ = first.kill();
            return Err("the resume phase's first run made no progress".into());
        }
        std::thread::sleep(Duration::from_millis(1));
    }
    first.kill()?;
    first.wait()?;
    let sent_first = relay.sent.load(Ordering::Relaxed);
    let second = clients.command(Tool::Tessera, &relay.endpoint, from, &to).spawn()?;
    let (ok, stdout, stderr) = wait(second)?;
    if !ok {
        return Err(format!("the resumed upload failed:\n{stdout}\n{stderr}").into());
    }
    let sent_total = relay.sent.load(Ordering::Relaxed);
    let etag = runtime.block_on(client.head_object().bucket(BUCKET).key(key).send())?;
    let etag = etag.e_tag().unwrap_or_default().trim_matches('"').to_owned();
    if etag != expected.etag {
        return Err(format!("{key}: ETag {etag}, expected {}", expected.etag).into());
    }
    let parts_line = stdout.lines().find(|l| l.starts_with("parts: ")).unwrap_or("").to_owned();
    let multiple = sent_total as f64 / size as f64;
    println!(
        "\nresume: killed after {sent_first} bytes, {sent_total} sent in all ({multiple:.3} \
         times the file); the second run's {parts_line}"
    );
    json.insert("resume_sent_multiple".into(), number(multiple));
    json.insert("resume_sent_first_run_bytes".into(), sent_first.into());
    json.insert("resume_sent_total_bytes".into(), sent_total.into());
    json.insert("resume_second_run_parts".into(), parts_line.into());
    Ok(multiple)
}

/// A TCP relay on 127.0.0.1 that counts the bytes clients send through it.
struct Relay {
    endpoint: String,
    sent: Arc<AtomicU64>,
    stop: Arc<AtomicBool>,
}

impl Relay {
    fn start(backend: &str) -> Result<Relay, BoxError> {
        let listener = TcpListener::bind("127.0.0.1:0")?;
        listener.set_nonblocking(true)?;
        let endpoint = format!("http://{}", listener.local_addr()?);
        let sent = Arc::new(AtomicU64::new(0));
        let stop = Arc::new(AtomicBool::new(false));
        let (counter, stopping, backend) =
            (Arc::clone(&sent), Arc::clone(&stop), backend.to_owned());
        std::thread::spawn(move || {
            while !stopping.load(Ordering::Relaxed) {
                let Ok((client, _)) = listener.accept() else {
                    std::thread::sleep(Duration::from_millis(1));
                    continue;
                };
                let _ = client.set_nonblocking(false);
                let Ok(server) = TcpStream::connect(&backend) else { continue };
                let counter = Arc::clone(&counter);
                pipe(client.try_clone().unwrap(), server.try_clone().unwrap(), Some(counter));
                pipe(server, client, None);
            }
        });
        Ok(Relay { endpoint, sent, stop })
    }
}

impl Drop for Relay {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::Relaxed);
    }
}

/// Copies `from` to `to` on a thread until either side closes, counting into `counter`.
fn pipe(mut from: TcpStream, mut to: TcpStream, counter: Option<Arc<AtomicU64>>) {
    std::thread::spawn(move || {
        let mut buf = vec![0u8; 256 << 10];
        loop {
            let n = match from.read(&mut buf) {
                Ok(0) | Err(_) => break,
                Ok(n) => n,
            };
            if let Some(c) = &counter {
                c.fetch_add(n as u64, Ordering::Relaxed);
            }
            if to.write_all(&buf[..n]).is_err() {
                break;
            }
        }
        let _ = to.shutdown(std::net::Shutdown::Write);
    });
}

// ---------------------------------------------------------------------------------------------
// The server, the SDK client and the aws cli's environment.

/// A `tessera serve` child process; killed if dropped without [`Server::stop`].
struct Server {
    child: Option<Child>,
    pid: u32,
    endpoint: String,
}

impl Server {
    fn start(data: &Path) -> Result<Server, BoxError> {
        let mut command = Command::new(env!("CARGO_BIN_EXE_tessera"));
        command
            .arg("serve")
            .arg("--data")
            .arg(data)
            .args(["--listen", "127.0.0.1:0", "--admin-listen", "off"])
            .args(["--access-key", ACCESS_KEY, "--secret-key", SECRET_KEY])
            .env_remove("TESSERA_DATA")
            .env_remove("TESSERA_LISTEN")
            .env_remove("TESSERA_ADMIN_LISTEN")
            .env_remove("TESSERA_ACCESS_KEY")
            .env_remove("TESSERA_SECRET_KEY")
            .env("RUST_LOG", "warn")
            .stdout(Stdio::piped())
            .stderr(Stdio::inherit());
        let mut child = command.spawn()?;
        let pid = child.id();
        let stdout = child.stdout.take().ok_or("no stdout of the server")?;
        let (tx, rx) = std::sync::mpsc::channel();
        std::thread::spawn(move || {
            for line in BufReader::new(stdout).lines() {
                let Ok(line) = line else { break };
                let _ = tx.send(line);
            }
        });
        let mut server = Server { child: Some(child), pid, endpoint: String::new() };
        let deadline = Instant::now() + START_TIMEOUT;
        loop {
            let left = deadline.saturating_duration_since(Instant::now());
            let line = rx.recv_timeout(left).map_err(|e| format!("server address: {e}"))?;
            if let Some(url) = line.strip_prefix("listening on ") {
                server.endpoint = url.to_owned();
                return Ok(server);
            }
        }
    }

    fn stop(mut self) -> Result<(), BoxError> {
        let mut child = self.child.take().ok_or("the server is gone")?;
        Command::new("kill").arg("-TERM").arg(self.pid.to_string()).status()?;
        let started = Instant::now();
        while started.elapsed() < STOP_TIMEOUT {
            if let Some(status) = child.try_wait()? {
                return if status.success() {
                    Ok(())
                } else {
                    Err(format!("the server exited with {status}").into())
                };
            }
            std::thread::sleep(Duration::from_millis(20));
        }
        let _ = child.kill();
        Err("the server did not stop after SIGTERM".into())
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

fn sdk_client(endpoint: &str) -> Client {
    let config = aws_sdk_s3::Config::builder()
        .behavior_version_latest()
        .region(Region::new("us-east-1"))
        .endpoint_url(endpoint)
        .credentials_provider(Credentials::new(ACCESS_KEY, SECRET_KEY, None, None, "bench"))
        .force_path_style(true)
        .http_client(aws_smithy_http_client::Builder::new().build_http())
        .build();
    Client::from_conf(config)
}

/// The client tests' virtual environment with the pinned aws cli, made as
/// `gateway/tests/clients.rs` makes it when missing or stale.
fn venv() -> Result<PathBuf, BoxError> {
    let requirements = Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/clients/requirements.txt");
    let venv = workspace_target().join("client-tests-venv");
    let wanted = std::fs::read(&requirements)?;
    if std::fs::read(venv.join("requirements.txt")).ok().as_deref() != Some(&wanted[..]) {
        println!("making {} (pip install -r {})", venv.display(), requirements.display());
        let _ = std::fs::remove_dir_all(&venv);
        let ok = Command::new("python3").arg("-m").arg("venv").arg(&venv).status()?.success()
            && Command::new(venv.join("bin/pip"))
                .args(["install", "--quiet", "--disable-pip-version-check", "-r"])
                .arg(&requirements)
                .status()?
                .success();
        if !ok {
            return Err(format!("could not make {}", venv.display()).into());
        }
        std::fs::write(venv.join("requirements.txt"), wanted)?;
    }
    Ok(venv)
}

// ---------------------------------------------------------------------------------------------
// Helpers.

/// User plus system CPU seconds of a process so far.
fn cpu_seconds(pid: &str) -> Result<f64, BoxError> {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat"))?;
    let rest = stat.rsplit_once(')').ok_or("malformed /proc/PID/stat")?.1;
    let mut fields = rest.split_whitespace().skip(11);
    let mut ticks = || -> Result<f64, BoxError> {
        Ok(fields.next().ok_or("short /proc/PID/stat")?.parse::<f64>()?)
    };
    // USER_HZ is 100 on every architecture Linux runs on here.
    Ok((ticks()? + ticks()?) / 100.0)
}

/// User plus system CPU seconds of this process's children that it waited for.
fn children_cpu_seconds() -> Result<f64, BoxError> {
    let stat = std::fs::read_to_string("/proc/self/stat")?;
    let rest = stat.rsplit_once(')').ok_or("malformed /proc/self/stat")?.1;
    // cutime and cstime: the 16th and 17th fields, 14th and 15th after the command name.
    let mut fields = rest.split_whitespace().skip(13);
    let mut ticks = || -> Result<f64, BoxError> {
        Ok(fields.next().ok_or("short /proc/self/stat")?.parse::<f64>()?)
    };
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
