//! `tessera cp` against `tessera serve` on 127.0.0.1 (small parts allowed): round trips of
//! several sizes, the part-size rule at 10,001 minimum parts, the client killed with SIGKILL at
//! random points and resumed, the server killed and restarted under a running upload, a
//! changed source, a damaged state file, SIGINT, --abort and --list-pending, a 4xx that stops
//! at once, and injected 503s and dropped connections (a fault-injecting proxy in this file)
//! that the client rides out, every retry in its log.
//!
//! The random kill points come from a seed printed at the start of each test that uses one;
//! `TESSERA_CP_TEST_SEED=<n>` replays it.

#![allow(
    missing_docs,
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::indexing_slicing,
    clippy::panic,
    clippy::cast_possible_truncation
)]

mod common;

use std::io::{BufRead, BufReader, Read, Write};
use std::net::{TcpListener, TcpStream};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Output, Stdio};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use common::{Options, Server, md5_hex};

/// The smallest part the test servers take, and the part size the tests upload with.
const MIN_PART: u64 = 1024;
const PART: usize = 64 << 10;
const BUCKET: &str = "cp-tests";
/// How long one `tessera cp` may take before the test gives up on it.
const CP_TIMEOUT: Duration = Duration::from_secs(120);

fn runtime() -> tokio::runtime::Runtime {
    tokio::runtime::Builder::new_current_thread().enable_all().build().unwrap()
}

/// A server allowing parts of `MIN_PART` bytes, with the test bucket.
fn server() -> (tempfile::TempDir, Server) {
    let (dir, server) = common::start(&Options { min_part_size: MIN_PART, ..Options::default() });
    runtime().block_on(server.client().create_bucket().bucket(BUCKET).send()).unwrap();
    (dir, server)
}

/// What a finished `tessera cp` printed.
struct Ran {
    code: Option<i32>,
    stdout: String,
    stderr: String,
}

impl Ran {
    fn from(output: Output) -> Ran {
        Ran {
            code: output.status.code(),
            stdout: String::from_utf8_lossy(&output.stdout).into_owned(),
            stderr: String::from_utf8_lossy(&output.stderr).into_owned(),
        }
    }

    /// Asserts exit 0 and returns self.
    #[track_caller]
    fn ok(self) -> Ran {
        assert_eq!(self.code, Some(0), "stdout:\n{}\nstderr:\n{}", self.stdout, self.stderr);
        self
    }

    /// Asserts a plain failure (exit 1: an error, never a panic's 101) and returns self.
    #[track_caller]
    fn failed(self) -> Ran {
        assert_eq!(self.code, Some(1), "stdout:\n{}\nstderr:\n{}", self.stdout, self.stderr);
        assert!(!self.stderr.contains("panicked"), "{}", self.stderr);
        self
    }

    /// The value of a `name: value` line on stdout.
    fn field(&self, name: &str) -> String {
        let prefix = format!("{name}: ");
        self.stdout
            .lines()
            .find_map(|l| l.strip_prefix(&prefix))
            .unwrap_or_else(|| panic!("no {name:?} line in:\n{}", self.stdout))
            .to_owned()
    }

    /// (sent, already on the server) from the `parts:` line of an upload.
    fn parts(&self) -> (u64, u64) {
        let line = self.field("parts");
        let number = |after: &str| -> u64 {
            let rest = &line[line.find(after).unwrap() + after.len()..];
            rest.split(|c: char| !c.is_ascii_digit()).next().unwrap().parse().unwrap()
        };
        (number("sent "), number("already on the server "))
    }

    fn retries(&self) -> usize {
        self.stderr.lines().filter(|l| l.starts_with("retry: ")).count()
    }
}

/// `tessera cp` pointed at one endpoint, with its own state directory and no AWS files.
struct Cp {
    endpoint: String,
    access_key: String,
    secret_key: String,
    home: tempfile::TempDir,
}

impl Cp {
    fn new(server: &Server, endpoint: &str) -> Cp {
        Cp {
            endpoint: endpoint.to_owned(),
            access_key: server.access_key.clone(),
            secret_key: server.secret_key.clone(),
            home: tempfile::tempdir().unwrap(),
        }
    }

    fn state_dir(&self) -> PathBuf {
        self.home.path().join("state")
    }

    /// The state files (`*.state`) in the state directory.
    fn state_files(&self) -> Vec<PathBuf> {
        let Ok(entries) = std::fs::read_dir(self.state_dir()) else { return Vec::new() };
        let mut files: Vec<PathBuf> = entries
            .map(|e| e.unwrap().path())
            .filter(|p| p.extension().is_some_and(|e| e == "state"))
            .collect();
        files.sort();
        files
    }

    fn command(&self, args: &[&str]) -> Command {
        let mut command = Command::new(env!("CARGO_BIN_EXE_tessera"));
        command
            .arg("cp")
            .args(["--endpoint-url", &self.endpoint, "--min-part-size", &MIN_PART.to_string()])
            .args(args)
            .env_clear()
            .env("PATH", std::env::var_os("PATH").unwrap_or_default())
            .env("HOME", self.home.path())
            .env("AWS_ACCESS_KEY_ID", &self.access_key)
            .env("AWS_SECRET_ACCESS_KEY", &self.secret_key)
            .env("AWS_REGION", "us-east-1")
            .env("AWS_CONFIG_FILE", self.home.path().join("no-config"))
            .env("AWS_SHARED_CREDENTIALS_FILE", self.home.path().join("no-credentials"))
            .env("TESSERA_CP_STATE_DIR", self.state_dir())
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped());
        command
    }

    fn spawn(&self, args: &[&str]) -> Child {
        self.command(args).spawn().expect("spawn tessera cp")
    }

    fn run(&self, args: &[&str]) -> Ran {
        wait(self.spawn(args))
    }

    /// Uploads `file` to `key` in `PART`-byte parts.
    fn upload(&self, file: &Path, key: &str, extra: &[&str]) -> Ran {
        let to = format!("s3://{BUCKET}/{key}");
        let part = PART.to_string();
        let mut args = vec![file.to_str().unwrap(), &to, "--part-size", &part];
        args.extend_from_slice(extra);
        self.run(&args)
    }

    fn download(&self, key: &str, file: &Path, extra: &[&str]) -> Ran {
        let from = format!("s3://{BUCKET}/{key}");
        let mut args = vec![from.as_str(), file.to_str().unwrap()];
        args.extend_from_slice(extra);
        self.run(&args)
    }
}

/// Waits for a `tessera cp` child, killing it after `CP_TIMEOUT`.
fn wait(mut child: Child) -> Ran {
    let mut stdout = child.stdout.take().unwrap();
    let mut stderr = child.stderr.take().unwrap();
    let out = std::thread::spawn(move || {
        let mut s = Vec::new();
        stdout.read_to_end(&mut s).unwrap();
        s
    });
    let err = std::thread::spawn(move || {
        let mut s = Vec::new();
        stderr.read_to_end(&mut s).unwrap();
        s
    });
    let deadline = Instant::now() + CP_TIMEOUT;
    let status = loop {
        if let Some(status) = child.try_wait().unwrap() {
            break status;
        }
        if Instant::now() > deadline {
            let _ = child.kill();
            let _ = child.wait();
            panic!("tessera cp ran longer than {CP_TIMEOUT:?}");
        }
        std::thread::sleep(Duration::from_millis(10));
    };
    Ran::from(Output { status, stdout: out.join().unwrap(), stderr: err.join().unwrap() })
}

/// Sends `signal` to a child (SIGKILL through `Child::kill`, others through kill(1)).
fn signal(child: &Child, name: &str) {
    let status = Command::new("kill").arg(format!("-{name}")).arg(child.id().to_string()).status();
    assert!(status.unwrap().success());
}

/// Distinct pseudo-random bytes (every part differs from every other).
fn data(len: usize, seed: u64) -> Vec<u8> {
    let mut x = seed | 1;
    let mut out = Vec::with_capacity(len + 8);
    while out.len() < len {
        x ^= x << 13;
        x ^= x >> 7;
        x ^= x << 17;
        out.extend_from_slice(&x.to_le_bytes());
    }
    out.truncate(len);
    out
}

/// S3's ETag of `bytes` uploaded in `part`-byte parts (one PutObject when `single`).
fn etag_of(bytes: &[u8], part: usize, single: bool) -> String {
    if single {
        return format!("\"{}\"", md5_hex(bytes));
    }
    let parts: Vec<&[u8]> = bytes.chunks(part).collect();
    common::multipart_etag(&parts)
}

/// The object's ETag (HeadObject), and the multipart uploads still open in the bucket.
fn server_view(server: &Server, key: &str) -> (String, usize) {
    let rt = runtime();
    let client = server.client();
    let head = rt.block_on(client.head_object().bucket(BUCKET).key(key).send()).unwrap();
    let uploads = rt.block_on(client.list_multipart_uploads().bucket(BUCKET).send()).unwrap();
    (head.e_tag().unwrap().to_owned(), uploads.uploads().len())
}

/// Every multipart upload still open in the bucket: its id and how many parts it holds.
fn open_upload_parts(server: &Server) -> Vec<(String, usize)> {
    let rt = runtime();
    let client = server.client();
    let uploads = rt.block_on(client.list_multipart_uploads().bucket(BUCKET).send()).unwrap();
    let mut out = Vec::new();
    for u in uploads.uploads() {
        let (key, id) = (u.key().unwrap(), u.upload_id().unwrap());
        let parts =
            rt.block_on(client.list_parts().bucket(BUCKET).key(key).upload_id(id).send()).unwrap();
        out.push((id.to_owned(), parts.parts().len()));
    }
    out
}

fn open_uploads(server: &Server) -> usize {
    let rt = runtime();
    let uploads =
        rt.block_on(server.client().list_multipart_uploads().bucket(BUCKET).send()).unwrap();
    uploads.uploads().len()
}

/// Downloads `key` with `tessera cp` and checks the bytes.
fn assert_downloads_as(cp: &Cp, dir: &Path, key: &str, expected: &[u8]) {
    let local = dir.join(format!("{}.down", key.replace('/', "_")));
    let ran = cp.download(key, &local, &["--concurrency", "4"]).ok();
    let got = std::fs::read(&local).unwrap();
    assert!(got == expected, "{key}: {} bytes back, {} expected", got.len(), expected.len());
    assert!(ran.stdout.contains("download: "), "{}", ran.stdout);
}

fn seed() -> u64 {
    let seed = std::env::var("TESSERA_CP_TEST_SEED")
        .ok()
        .and_then(|s| s.parse().ok())
        .unwrap_or_else(|| {
            std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).unwrap().as_nanos()
                as u64
        });
    println!("seed: {seed} (TESSERA_CP_TEST_SEED={seed} replays it)");
    seed
}

/// xorshift: a number in `low..high`.
fn next_in(state: &mut u64, low: u64, high: u64) -> u64 {
    *state ^= *state << 13;
    *state ^= *state >> 7;
    *state ^= *state << 17;
    low + *state % (high - low)
}

// ---------------------------------------------------------------------------------------------
// The fault-injecting proxy.

/// What the proxy does with one request.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Fault {
    /// Passes it to the server.
    Forward,
    /// Answers this status with this S3 error code itself.
    Answer(u16, &'static str),
    /// Closes the connection without an answer.
    Drop,
    /// Passes it to the server and flips one bit near the start of the answer's body.
    Corrupt,
    /// Passes it to the server and closes the connection without relaying the answer (the
    /// request took effect; the client cannot know).
    LoseAnswer,
}

/// A request as the proxy's policy sees it.
struct Seen<'a> {
    method: &'a str,
    target: &'a str,
    /// How many requests the proxy saw before this one.
    index: u64,
}

impl Seen<'_> {
    /// The value of a query parameter.
    fn query(&self, name: &str) -> Option<&str> {
        let (_, query) = self.target.split_once('?')?;
        query.split('&').find_map(|kv| kv.strip_prefix(name)?.strip_prefix('='))
    }

    fn is_upload_part(&self) -> bool {
        self.method == "PUT" && self.query("partNumber").is_some()
    }

    fn is_get(&self) -> bool {
        self.method == "GET" && self.query("uploadId").is_none() && self.target.contains('/')
    }
}

type Policy = dyn Fn(&Seen<'_>) -> Fault + Send + Sync;

/// An HTTP/1.1 proxy on 127.0.0.1 in front of a server: each request is read whole, shown to
/// the policy, then answered by the proxy or sent to the server on a connection of its own
/// (with `Connection: close`) and the answer relayed byte for byte. The server's address can
/// change (a restarted server); while it is down, requests are dropped like a dead server's.
/// It stops accepting when dropped.
struct Proxy {
    endpoint: String,
    shared: Arc<Shared>,
}

/// What the proxy's threads share.
struct Shared {
    backend: Mutex<String>,
    /// Requests answered or dropped by the proxy itself.
    injected: AtomicU64,
    /// Requests seen.
    seen: AtomicU64,
    /// Added before every forwarded request.
    delay_ms: AtomicU64,
    stop: AtomicBool,
}

impl Proxy {
    fn start(backend: &str, policy: impl Fn(&Seen<'_>) -> Fault + Send + Sync + 'static) -> Proxy {
        let listener = TcpListener::bind("127.0.0.1:0").unwrap();
        let endpoint = format!("http://{}", listener.local_addr().unwrap());
        let shared = Arc::new(Shared {
            backend: Mutex::new(backend.to_owned()),
            injected: AtomicU64::new(0),
            seen: AtomicU64::new(0),
            delay_ms: AtomicU64::new(0),
            stop: AtomicBool::new(false),
        });
        let policy: Arc<Policy> = Arc::new(policy);
        let accepting = Arc::clone(&shared);
        listener.set_nonblocking(true).unwrap();
        std::thread::spawn(move || {
            while !accepting.stop.load(Ordering::Relaxed) {
                match listener.accept() {
                    Ok((stream, _)) => {
                        stream.set_nonblocking(false).unwrap();
                        let shared = Arc::clone(&accepting);
                        let policy = Arc::clone(&policy);
                        std::thread::spawn(move || shared.serve(stream, &*policy));
                    }
                    Err(_) => std::thread::sleep(Duration::from_millis(2)),
                }
            }
        });
        Proxy { endpoint, shared }
    }

    fn set_backend(&self, addr: &str) {
        *self.shared.backend.lock().unwrap() = addr.to_owned();
    }

    fn seen(&self) -> u64 {
        self.shared.seen.load(Ordering::Relaxed)
    }

    fn injected(&self) -> u64 {
        self.shared.injected.load(Ordering::Relaxed)
    }

    fn delay_ms(&self, ms: u64) {
        self.shared.delay_ms.store(ms, Ordering::Relaxed);
    }
}

/// A request as the proxy sends it on: its head without `Connection` and `Expect`, then
/// `Connection: close`, then its body.
fn request_bytes(head: &[String], body: &[u8]) -> Vec<u8> {
    let mut out = Vec::with_capacity(1024 + body.len());
    for line in head.iter().take(head.len() - 1) {
        let name = line.split(':').next().unwrap_or("").trim();
        if name.eq_ignore_ascii_case("connection") || name.eq_ignore_ascii_case("expect") {
            continue;
        }
        out.extend_from_slice(line.as_bytes());
    }
    out.extend_from_slice(b"Connection: close\r\n\r\n");
    out.extend_from_slice(body);
    out
}

impl Drop for Proxy {
    fn drop(&mut self) {
        self.shared.stop.store(true, Ordering::Relaxed);
    }
}

impl Shared {
    /// Serves one client connection until it closes (or a forwarded request closes it).
    fn serve(&self, client: TcpStream, policy: &Policy) {
        let mut reader = BufReader::new(client.try_clone().unwrap());
        let mut client = client;
        loop {
            let mut head = Vec::new();
            loop {
                let mut line = String::new();
                match reader.read_line(&mut line) {
                    Ok(0) | Err(_) => return,
                    Ok(_) => {}
                }
                let end = line == "\r\n";
                head.push(line);
                if end {
                    break;
                }
            }
            let header = |name: &str| {
                head.iter().find_map(|l| {
                    let (n, v) = l.split_once(':')?;
                    n.trim().eq_ignore_ascii_case(name).then(|| v.trim().to_owned())
                })
            };
            if header("expect").is_some_and(|v| v.eq_ignore_ascii_case("100-continue"))
                && client.write_all(b"HTTP/1.1 100 Continue\r\n\r\n").is_err()
            {
                return;
            }
            let len: usize = header("content-length").map_or(0, |v| v.parse().unwrap());
            let mut body = vec![0; len];
            if reader.read_exact(&mut body).is_err() {
                return;
            }
            let mut words = head[0].split_whitespace();
            let (method, target) = (words.next().unwrap_or(""), words.next().unwrap_or(""));
            let index = self.seen.fetch_add(1, Ordering::Relaxed);
            match policy(&Seen { method, target, index }) {
                Fault::Forward => {
                    self.forward(&head, &body, &mut client, false);
                    return;
                }
                Fault::Corrupt => {
                    self.injected.fetch_add(1, Ordering::Relaxed);
                    self.forward(&head, &body, &mut client, true);
                    return;
                }
                Fault::LoseAnswer => {
                    self.injected.fetch_add(1, Ordering::Relaxed);
                    let mut sink = std::io::sink();
                    self.forward_to(&head, &body, &mut sink);
                    return;
                }
                Fault::Drop => {
                    self.injected.fetch_add(1, Ordering::Relaxed);
                    return;
                }
                Fault::Answer(status, code) => {
                    self.injected.fetch_add(1, Ordering::Relaxed);
                    let xml = format!(
                        "<?xml version=\"1.0\" encoding=\"UTF-8\"?>\n<Error><Code>{code}</Code>\
                         <Message>injected by the test proxy</Message></Error>"
                    );
                    let answer = format!(
                        "HTTP/1.1 {status} Injected\r\nContent-Type: application/xml\r\n\
                         Content-Length: {}\r\n\r\n{xml}",
                        xml.len()
                    );
                    if client.write_all(answer.as_bytes()).is_err() {
                        return;
                    }
                }
            }
        }
    }

    /// Sends one request to the server and relays its answer; the client connection closes
    /// after it (the server's answer to `Connection: close` says so).
    /// Sends one request to the server and copies its whole answer to `out`.
    fn forward_to(&self, head: &[String], body: &[u8], out: &mut impl Write) {
        let backend = self.backend.lock().unwrap().clone();
        let Ok(mut upstream) = TcpStream::connect(&backend) else { return };
        if upstream.write_all(&request_bytes(head, body)).is_ok() {
            let _ = std::io::copy(&mut upstream, out);
        }
    }

    fn forward(&self, head: &[String], body: &[u8], client: &mut TcpStream, corrupt: bool) {
        let delay = self.delay_ms.load(Ordering::Relaxed);
        if delay > 0 {
            std::thread::sleep(Duration::from_millis(delay));
        }
        let backend = self.backend.lock().unwrap().clone();
        let Ok(mut upstream) = TcpStream::connect(&backend) else { return };
        if upstream.write_all(&request_bytes(head, body)).is_err() {
            return;
        }
        if !corrupt {
            let _ = std::io::copy(&mut upstream, client);
            return;
        }
        let mut answer = Vec::new();
        if upstream.read_to_end(&mut answer).is_err() {
            return;
        }
        let body_at = answer.windows(4).position(|w| w == b"\r\n\r\n").map_or(0, |i| i + 4);
        // 100 bytes in: past a chunked body's first size line, inside its first chunk.
        if answer.len() > body_at + 200 {
            answer[body_at + 100] ^= 0x04;
        }
        let _ = client.write_all(&answer);
    }
}

// ---------------------------------------------------------------------------------------------
// The tests.

#[test]
fn files_of_every_size_go_up_and_come_back_whole() {
    let (dir, server) = server();
    let cp = Cp::new(&server, &server.endpoint);
    // 0 bytes, 1 byte, one byte short of a part (one PutObject), exactly one part, a part
    // and a byte, several parts and a tail.
    let sizes = [0, 1, PART - 1, PART, PART + 1, 5 * PART + 123];
    for (i, size) in sizes.into_iter().enumerate() {
        let bytes = data(size, 100 + i as u64);
        let file = dir.path().join(format!("f{size}"));
        std::fs::write(&file, &bytes).unwrap();
        let key = format!("sizes/{size}");
        let ran = cp.upload(&file, &key, &[]).ok();
        let expected = etag_of(&bytes, PART, size < PART);
        assert_eq!(ran.field("etag"), expected, "{size} bytes");
        let (etag, open) = server_view(&server, &key);
        assert_eq!((etag, open), (expected, 0), "{size} bytes");
        assert!(ran.field("checksum").starts_with("CRC32C "), "{}", ran.stdout);
        assert_downloads_as(&cp, dir.path(), &key, &bytes);
    }
    assert!(cp.state_files().is_empty(), "finished transfers leave no state");
}

#[test]
fn ten_thousand_and_one_minimum_parts_go_up_as_fewer_larger_ones() {
    let (dir, server) = server();
    let cp = Cp::new(&server, &server.endpoint);
    let size = 10_001 * MIN_PART as usize;
    let bytes = data(size, 7);
    let file = dir.path().join("many");
    std::fs::write(&file, &bytes).unwrap();
    // Asked for parts of the minimum, the rule takes the smallest size that fits 10,000 parts.
    let ran = cp
        .run(&[
            file.to_str().unwrap(),
            &format!("s3://{BUCKET}/many"),
            "--part-size",
            "1KiB",
            "--concurrency",
            "32",
        ])
        .ok();
    let part = size.div_ceil(10_000);
    assert_eq!(part, 1025);
    let count = size.div_ceil(part);
    assert!(count <= 10_000);
    assert_eq!(ran.parts(), (count as u64, 0));
    assert_eq!(ran.field("etag"), etag_of(&bytes, part, false));
    let local = dir.path().join("many.down");
    cp.download("many", &local, &["--concurrency", "32"]).ok();
    assert!(std::fs::read(&local).unwrap() == bytes);
}

#[test]
fn a_client_killed_at_random_points_resumes_and_sends_only_what_is_missing() {
    let mut rng = seed();
    let (dir, server) = server();
    // A proxy that only slows every request, so that the kills land mid-transfer.
    let proxy = Proxy::start(&server.addr, |_| Fault::Forward);
    let cp = Cp::new(&server, &proxy.endpoint);
    let bytes = data(128 * PART, 11);
    let file = dir.path().join("killed");
    std::fs::write(&file, &bytes).unwrap();
    let to = format!("s3://{BUCKET}/killed");
    let part = PART.to_string();
    let args = [file.to_str().unwrap(), &to, "--part-size", &part, "--concurrency", "2"];
    // About 15 ms a request, 2 at a time: the whole upload takes over a second, each run is
    // killed within a third of that (the runs add up; one may finish before its kill).
    proxy.delay_ms(15);
    let mut finished = None;
    for round in 0..4 {
        let mut child = cp.spawn(&args);
        let at = next_in(&mut rng, 50, 350);
        std::thread::sleep(Duration::from_millis(at));
        child.kill().unwrap();
        let ran = wait(child);
        println!("upload round {round}: SIGKILL after {at} ms (exit {:?})", ran.code);
        if ran.code == Some(0) {
            finished = Some((round, ran));
            break;
        }
    }
    proxy.delay_ms(0);
    let (round, ran) = finished.unwrap_or_else(|| (4, cp.run(&args).ok()));
    assert_eq!(ran.field("etag"), etag_of(&bytes, PART, false));
    let (sent, kept) = ran.parts();
    assert_eq!(sent + kept, 128);
    println!("the run that finished (round {round}) sent {sent} parts; {kept} were on the server");
    if round > 0 {
        assert!(kept > 0, "the killed runs left parts that the last run did not send again");
    }
    let (etag, _) = server_view(&server, "killed");
    assert_eq!(etag, etag_of(&bytes, PART, false));
    // A kill between CreateMultipartUpload's answer and the first write of the state file
    // (a few milliseconds) leaves an upload no state names; it never holds a part, since
    // parts are sent only once the state file names their upload.
    for (id, parts) in open_upload_parts(&server) {
        assert_eq!(parts, 0, "upload {id} was left with parts");
    }
    assert!(cp.state_files().is_empty());

    // The download, killed the same way.
    let local = dir.path().join("killed.down");
    let from = format!("s3://{BUCKET}/killed");
    let down = [from.as_str(), local.to_str().unwrap(), "--concurrency", "2"];
    // A download's state is its only record (the server holds no "parts received"), written
    // at most once a second (`SAVE_INTERVAL`): each run lives past its first write. About
    // 40 ms a GET, 2 at a time: the whole download takes over 2.5 s.
    proxy.delay_ms(40);
    let mut finished = None;
    for round in 0..4 {
        let mut child = cp.spawn(&down);
        let at = next_in(&mut rng, 1100, 1500);
        std::thread::sleep(Duration::from_millis(at));
        child.kill().unwrap();
        let ran = wait(child);
        println!("download round {round}: SIGKILL after {at} ms (exit {:?})", ran.code);
        if ran.code == Some(0) {
            finished = Some((round, ran));
            break;
        }
        assert!(!local.exists(), "a partial download never sits under the target's name");
    }
    proxy.delay_ms(0);
    let (round, ran) = finished.unwrap_or_else(|| (4, wait(cp.spawn(&down)).ok()));
    assert!(std::fs::read(&local).unwrap() == bytes, "{}", ran.stdout);
    let line = ran.field("parts");
    println!("the download that finished (round {round}): parts {line}");
    if round > 0 {
        assert!(!line.ends_with("already here 0)"), "{line}");
    }
    assert!(cp.state_files().is_empty());
    let leftovers: Vec<_> = std::fs::read_dir(dir.path())
        .unwrap()
        .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
        .filter(|n| n.contains("tessera-partial"))
        .collect();
    assert!(leftovers.is_empty(), "{leftovers:?}");
}

#[test]
fn the_server_killed_and_restarted_under_a_running_upload() {
    let (dir, server) = server();
    let data_dir = common::data_dir(&dir);
    let proxy = Proxy::start(&server.addr, |_| Fault::Forward);
    let cp = Cp::new(&server, &proxy.endpoint);
    let bytes = data(96 * PART, 13);
    let file = dir.path().join("restart");
    std::fs::write(&file, &bytes).unwrap();
    let to = format!("s3://{BUCKET}/restart");
    let part = PART.to_string();
    proxy.delay_ms(5);
    let child =
        cp.spawn(&[file.to_str().unwrap(), &to, "--part-size", &part, "--concurrency", "2"]);
    // Half-way (about 48 requests through), the server dies without a chance to flush.
    let deadline = Instant::now() + Duration::from_secs(60);
    while proxy.seen() < 48 {
        assert!(Instant::now() < deadline, "the upload made no progress");
        std::thread::sleep(Duration::from_millis(5));
    }
    server.kill();
    std::thread::sleep(Duration::from_millis(300));
    let server =
        Server::start(&data_dir, &Options { min_part_size: MIN_PART, ..Options::default() });
    proxy.set_backend(&server.addr);
    proxy.delay_ms(0);
    let ran = wait(child).ok();
    assert!(ran.retries() > 0, "the client retried while the server was down:\n{}", ran.stderr);
    assert_eq!(ran.field("etag"), etag_of(&bytes, PART, false));
    assert_eq!(server_view(&server, "restart"), (etag_of(&bytes, PART, false), 0));
    assert_downloads_as(&Cp::new(&server, &server.endpoint), dir.path(), "restart", &bytes);
}

/// A proxy that refuses UploadPart for parts above 5 with 403 while `refuse` is set, so that
/// an upload stops half-way at a known point, and passes everything otherwise.
fn refusing_proxy(server: &Server) -> (Proxy, Arc<AtomicBool>) {
    let refuse = Arc::new(AtomicBool::new(true));
    let flag = Arc::clone(&refuse);
    let proxy = Proxy::start(&server.addr, move |seen| {
        let number: u32 = seen.query("partNumber").map_or(0, |n| n.parse().unwrap());
        if flag.load(Ordering::Relaxed) && seen.is_upload_part() && number > 5 {
            Fault::Answer(403, "AccessDenied")
        } else {
            Fault::Forward
        }
    });
    (proxy, refuse)
}

#[test]
fn a_refused_part_stops_at_once_and_a_changed_source_is_not_resumed_without_restart() {
    let (dir, server) = server();
    let (proxy, refuse) = refusing_proxy(&server);
    let cp = Cp::new(&server, &proxy.endpoint);
    let file = dir.path().join("changing");
    std::fs::write(&file, data(16 * PART, 17)).unwrap();
    // A 4xx stops the upload at once, with S3's code and message, and no retry.
    let ran = cp.upload(&file, "changing", &["--concurrency", "1"]).failed();
    assert!(ran.stderr.contains("403 AccessDenied: injected by the test proxy"), "{}", ran.stderr);
    assert_eq!(ran.retries(), 0, "{}", ran.stderr);
    assert_eq!(cp.state_files().len(), 1);
    assert_eq!(open_uploads(&server), 1);
    refuse.store(false, Ordering::Relaxed);

    // The file changes (same size, new bytes in its first MiB).
    let changed = data(16 * PART, 18);
    std::fs::write(&file, &changed).unwrap();
    let ran = cp.upload(&file, "changing", &[]).failed();
    assert!(ran.stderr.contains("changed since its upload"), "{}", ran.stderr);
    assert!(ran.stderr.contains("--restart"), "{}", ran.stderr);
    assert_eq!(open_uploads(&server), 1, "nothing changed on the server");

    // --restart aborts the old upload and sends the new bytes.
    let ran = cp.upload(&file, "changing", &["--restart"]).ok();
    assert_eq!(ran.parts(), (16, 0));
    assert_eq!(server_view(&server, "changing"), (etag_of(&changed, PART, false), 0));
    assert!(cp.state_files().is_empty());
}

#[test]
fn a_damaged_state_file_is_named_and_never_guessed_at() {
    let (dir, server) = server();
    let (proxy, refuse) = refusing_proxy(&server);
    let cp = Cp::new(&server, &proxy.endpoint);
    let bytes = data(16 * PART, 19);
    let file = dir.path().join("damaged");
    std::fs::write(&file, &bytes).unwrap();
    cp.upload(&file, "damaged", &["--concurrency", "1"]).failed();
    refuse.store(false, Ordering::Relaxed);
    let [state] = cp.state_files().try_into().unwrap();
    let mut raw = std::fs::read(&state).unwrap();
    let middle = raw.len() / 2;
    raw[middle] ^= 0x10;
    std::fs::write(&state, &raw).unwrap();

    let ran = cp.upload(&file, "damaged", &[]).failed();
    let name = state.display().to_string();
    assert!(ran.stderr.contains(&name) && ran.stderr.contains("damaged"), "{}", ran.stderr);
    assert!(ran.stderr.contains("crc mismatch"), "{}", ran.stderr);
    let listed = cp.run(&["--list-pending"]).ok();
    assert!(
        listed.stdout.contains("damaged") && listed.stdout.contains(&name),
        "{}",
        listed.stdout
    );

    // A truncated file is refused as well.
    std::fs::write(&state, &raw[..10]).unwrap();
    let ran = cp.upload(&file, "damaged", &[]).failed();
    assert!(ran.stderr.contains(&name), "{}", ran.stderr);

    let ran = cp.upload(&file, "damaged", &["--restart"]).ok();
    assert_eq!(ran.field("etag"), etag_of(&bytes, PART, false));
    assert!(cp.state_files().is_empty());
}

#[test]
fn sigint_leaves_a_resumable_state_that_list_pending_shows_and_abort_drops() {
    let (dir, server) = server();
    let proxy = Proxy::start(&server.addr, |_| Fault::Forward);
    proxy.delay_ms(20);
    let cp = Cp::new(&server, &proxy.endpoint);
    let bytes = data(64 * PART, 23);
    let file = dir.path().join("interrupted");
    std::fs::write(&file, &bytes).unwrap();
    let to = format!("s3://{BUCKET}/interrupted");
    let part = PART.to_string();
    let args = [file.to_str().unwrap(), to.as_str(), "--part-size", &part, "--concurrency", "2"];

    let interrupt = |cp: &Cp| {
        let child = cp.spawn(&args);
        let start = proxy.seen();
        let deadline = Instant::now() + Duration::from_secs(60);
        while proxy.seen() < start + 10 {
            assert!(Instant::now() < deadline, "the upload made no progress");
            std::thread::sleep(Duration::from_millis(5));
        }
        signal(&child, "INT");
        let ran = wait(child);
        assert_eq!(ran.code, Some(130), "{}", ran.stderr);
        assert!(ran.stderr.contains("run the same command again to resume"), "{}", ran.stderr);
        ran
    };
    interrupt(&cp);
    let listed = cp.run(&["--list-pending"]).ok();
    assert!(listed.stdout.contains(&to), "{}", listed.stdout);
    assert!(listed.stdout.contains("upload "), "{}", listed.stdout);
    assert_eq!(open_uploads(&server), 1);

    // --abort drops the upload on the server and the state here.
    let ran = cp.run(&[file.to_str().unwrap(), &to, "--abort"]).ok();
    assert!(ran.stdout.contains("aborted upload"), "{}", ran.stdout);
    assert_eq!(open_uploads(&server), 0);
    assert!(cp.state_files().is_empty());
    assert!(cp.run(&["--list-pending"]).ok().stdout.contains("no unfinished transfers"));

    // Interrupted again, then resumed to the end.
    interrupt(&cp);
    proxy.delay_ms(0);
    let ran = cp.run(&args).ok();
    let (sent, kept) = ran.parts();
    assert!(kept > 0 && sent + kept == 64, "{}", ran.stdout);
    assert_eq!(server_view(&server, "interrupted"), (etag_of(&bytes, PART, false), 0));
}

#[test]
fn an_unknown_bucket_stops_at_once_with_s3s_code() {
    let (dir, server) = server();
    let cp = Cp::new(&server, &server.endpoint);
    let file = dir.path().join("small");
    std::fs::write(&file, b"hello").unwrap();
    let ran = cp.run(&[file.to_str().unwrap(), "s3://no-such-bucket/k"]).failed();
    assert!(ran.stderr.contains("NoSuchBucket"), "{}", ran.stderr);
    assert_eq!(ran.retries(), 0, "{}", ran.stderr);
    let big = dir.path().join("big");
    std::fs::write(&big, data(4 * PART, 29)).unwrap();
    let part = PART.to_string();
    let ran = cp.run(&[big.to_str().unwrap(), "s3://no-such-bucket/k", "--part-size", &part]);
    let ran = ran.failed();
    assert!(ran.stderr.contains("NoSuchBucket"), "{}", ran.stderr);
    let ran = cp.run(&["s3://no-such-bucket/k", dir.path().join("x").to_str().unwrap()]).failed();
    assert!(ran.stderr.contains("no such object") || ran.stderr.contains("404"), "{}", ran.stderr);
}

#[test]
fn injected_503s_and_dropped_connections_are_retried_and_logged() {
    let (dir, server) = server();
    // Every third UploadPart or GET gets a 503 SlowDown, every seventh is dropped unanswered.
    let proxy = Proxy::start(&server.addr, |seen| {
        if !(seen.is_upload_part() || seen.is_get()) {
            return Fault::Forward;
        }
        match seen.index {
            i if i % 3 == 1 => Fault::Answer(503, "SlowDown"),
            i if i % 7 == 2 => Fault::Drop,
            _ => Fault::Forward,
        }
    });
    let cp = Cp::new(&server, &proxy.endpoint);
    let bytes = data(32 * PART + 7, 31);
    let file = dir.path().join("flaky");
    std::fs::write(&file, &bytes).unwrap();
    let ran = cp.upload(&file, "flaky", &["--concurrency", "4"]).ok();
    let injected_up = proxy.injected();
    assert!(injected_up > 5, "{injected_up}");
    assert_eq!(ran.retries() as u64, injected_up, "one retry line per fault:\n{}", ran.stderr);
    assert!(ran.stderr.contains("SlowDown"), "{}", ran.stderr);
    assert!(ran.stderr.lines().any(|l| l.starts_with("retry: UploadPart")), "{}", ran.stderr);
    assert_eq!(ran.field("etag"), etag_of(&bytes, PART, false));
    assert_eq!(server_view(&server, "flaky"), (etag_of(&bytes, PART, false), 0));

    let local = dir.path().join("flaky.down");
    let ran = cp.download("flaky", &local, &["--concurrency", "4"]).ok();
    let injected_down = proxy.injected() - injected_up;
    assert!(injected_down > 3, "{injected_down}");
    assert_eq!(ran.retries() as u64, injected_down, "{}", ran.stderr);
    assert!(std::fs::read(&local).unwrap() == bytes);
}

#[test]
fn downloads_check_each_part_or_the_whole_against_what_the_server_gives() {
    let (dir, server) = server();
    let rt = runtime();
    // A client that adds no checksum of its own (the SDK's default adds a CRC32).
    let client = aws_sdk_s3::Client::from_conf(
        server
            .client()
            .config()
            .to_builder()
            .request_checksum_calculation(
                aws_sdk_s3::config::RequestChecksumCalculation::WhenRequired,
            )
            .build(),
    );
    // An object of one PutObject without a checksum (its ETag a plain MD5), fetched in three
    // ranges; an object of three parts without checksums (ETag the MD5 of their MD5s).
    let whole = data(3 * PART + 5, 41);
    rt.block_on(client.put_object().bucket(BUCKET).key("plain").body(whole.clone().into()).send())
        .unwrap();
    let parts = data(3 * PART, 43);
    let id = rt
        .block_on(client.create_multipart_upload().bucket(BUCKET).key("parted").send())
        .unwrap()
        .upload_id()
        .unwrap()
        .to_owned();
    let mut done = Vec::new();
    for (i, chunk) in parts.chunks(PART).enumerate() {
        let n = i as i32 + 1;
        let out = rt
            .block_on(
                client
                    .upload_part()
                    .bucket(BUCKET)
                    .key("parted")
                    .upload_id(&id)
                    .part_number(n)
                    .body(chunk.to_vec().into())
                    .send(),
            )
            .unwrap();
        done.push(
            aws_sdk_s3::types::CompletedPart::builder()
                .part_number(n)
                .e_tag(out.e_tag().unwrap())
                .build(),
        );
    }
    rt.block_on(
        client
            .complete_multipart_upload()
            .bucket(BUCKET)
            .key("parted")
            .upload_id(&id)
            .multipart_upload(
                aws_sdk_s3::types::CompletedMultipartUpload::builder()
                    .set_parts(Some(done))
                    .build(),
            )
            .send(),
    )
    .unwrap();
    // And one tessera cp uploaded, whose parts carry CRC32C checksums.
    let checked = data(3 * PART, 47);
    let file = dir.path().join("checked");
    std::fs::write(&file, &checked).unwrap();
    let cp = Cp::new(&server, &server.endpoint);
    cp.upload(&file, "checked", &[]).ok();

    // Through a proxy that flips a bit in the answer to the second GetObject from now.
    let corrupt_next = Arc::new(AtomicU64::new(u64::MAX));
    let target = Arc::clone(&corrupt_next);
    let proxy = Proxy::start(&server.addr, move |seen| {
        if seen.is_get() && !seen.target.contains("?attributes") {
            let n = target.fetch_sub(1, Ordering::Relaxed);
            if n == 1 {
                return Fault::Corrupt;
            }
        }
        Fault::Forward
    });
    let cp = Cp::new(&server, &proxy.endpoint);
    let part = PART.to_string();
    let one_at_a_time = ["--concurrency", "1", "--part-size", part.as_str()];

    // Each part checked against its checksum: the damaged one is fetched again.
    corrupt_next.store(2, Ordering::Relaxed);
    let local = dir.path().join("checked.down");
    let ran = cp.download("checked", &local, &one_at_a_time).ok();
    assert_eq!(ran.retries(), 1, "{}", ran.stderr);
    assert!(ran.stderr.contains("checksum mismatch"), "{}", ran.stderr);
    assert!(std::fs::read(&local).unwrap() == checked);

    // Parts without checksums: the MD5 of their MD5s against the ETag catches the damage.
    corrupt_next.store(2, Ordering::Relaxed);
    let local = dir.path().join("parted.down");
    let ran = cp.download("parted", &local, &one_at_a_time).failed();
    assert!(ran.stderr.contains("do not match the object's ETag"), "{}", ran.stderr);
    assert!(!local.exists());
    cp.download("parted", &local, &[]).ok();
    assert!(std::fs::read(&local).unwrap() == parts);

    // Ranges of a plain object: the whole file's MD5 against the ETag.
    corrupt_next.store(2, Ordering::Relaxed);
    let local = dir.path().join("plain.down");
    let ran = cp.download("plain", &local, &one_at_a_time).failed();
    assert!(ran.stderr.contains("do not match the object's ETag"), "{}", ran.stderr);
    assert!(!local.exists());
    let ran = cp.download("plain", &local, &["--part-size", part.as_str()]).ok();
    assert!(ran.stdout.contains("ranges: 4 "), "{}", ran.stdout);
    assert!(std::fs::read(&local).unwrap() == whole);
}

#[test]
fn a_vanished_upload_is_not_resumed_without_restart_and_a_lost_completion_is_recognised() {
    let (dir, server) = server();
    let (proxy, refuse) = refusing_proxy(&server);
    let cp = Cp::new(&server, &proxy.endpoint);
    let bytes = data(16 * PART, 53);
    let file = dir.path().join("vanished");
    std::fs::write(&file, &bytes).unwrap();
    cp.upload(&file, "vanished", &["--concurrency", "1"]).failed();
    refuse.store(false, Ordering::Relaxed);
    // The upload goes away on the server (an operator, or its expiry).
    let rt = runtime();
    let client = server.client();
    let listed = rt.block_on(client.list_multipart_uploads().bucket(BUCKET).send()).unwrap();
    let [upload] = listed.uploads() else { panic!("{listed:?}") };
    rt.block_on(
        client
            .abort_multipart_upload()
            .bucket(BUCKET)
            .key("vanished")
            .upload_id(upload.upload_id().unwrap())
            .send(),
    )
    .unwrap();
    let ran = cp.upload(&file, "vanished", &[]).failed();
    assert!(ran.stderr.contains("is gone from the server"), "{}", ran.stderr);
    assert!(ran.stderr.contains("--restart"), "{}", ran.stderr);
    let ran = cp.upload(&file, "vanished", &["--restart"]).ok();
    assert_eq!(ran.parts(), (16, 0));
    assert_eq!(server_view(&server, "vanished"), (etag_of(&bytes, PART, false), 0));

    // CompleteMultipartUpload takes effect but its answer is lost, and the retry is answered
    // NoSuchUpload, as S3 answers once an upload is complete (tessera serve answers a repeat
    // as the first; the proxy plays S3): the client finds the object its parts make.
    let completes = Arc::new(AtomicU64::new(0));
    let counted = Arc::clone(&completes);
    let proxy = Proxy::start(&server.addr, move |seen| {
        if !(seen.method == "POST" && seen.query("uploadId").is_some()) {
            return Fault::Forward;
        }
        match counted.fetch_add(1, Ordering::Relaxed) {
            0 => Fault::LoseAnswer,
            1 => Fault::Answer(404, "NoSuchUpload"),
            _ => Fault::Forward,
        }
    });
    let cp = Cp::new(&server, &proxy.endpoint);
    let bytes = data(8 * PART, 59);
    std::fs::write(&file, &bytes).unwrap();
    let ran = cp.upload(&file, "completed", &[]).ok();
    assert_eq!(completes.load(Ordering::Relaxed), 2, "{}", ran.stderr);
    assert!(ran.stderr.contains("retry: CompleteMultipartUpload"), "{}", ran.stderr);
    assert_eq!(ran.field("etag"), etag_of(&bytes, PART, false));
    assert_eq!(server_view(&server, "completed"), (etag_of(&bytes, PART, false), 0));
    assert!(cp.state_files().is_empty());
}

// ---------------------------------------------------------------------------------------------
// https:// endpoints, through a TLS-terminating relay in Python (python3 runs the client tests
// too). The certificates were made once with openssl for this test alone (EC P-256, valid to
// 2126): a CA, and a certificate for the address 127.0.0.1 that it signed.

const TEST_CA_PEM: &str = "-----BEGIN CERTIFICATE-----\n\
MIIBkDCCATegAwIBAgIUIiLkiqw6efSJgjW0j3LXtEvDRKMwCgYIKoZIzj0EAwIw\n\
HTEbMBkGA1UEAwwSdGVzc2VyYSBjcCB0ZXN0IENBMCAXDTI2MTEyNDE1NTQxMVoY\n\
DzIxMjYxMDMxMTU1NDExWjAdMRswGQYDVQQDDBJ0ZXNzZXJhIGNwIHRlc3QgQ0Ew\n\
WTATBgcqhkjOPQIBBggqhkjOPQMBBwNCAASDdNTObbTpDC1b7cAoM35X8Te+lXjJ\n\
HTysFjb+8YQRA5xrAB7ROX2J0EtQTNw+Rddoo/+4xsZ5P+nPzYrca8Quo1MwUTAd\n\
BgNVHQ4EFgQUTERTIxyl3uBUGTcbHwe/WjcKnM0wHwYDVR0jBBgwFoAUTERTIxyl\n\
3uBUGTcbHwe/WjcKnM0wDwYDVR0TAQH/BAUwAwEB/zAKBggqhkjOPQQDAgNHADBE\n\
AiAvgpSpTuuAkicyfVgRcSXQZXFXM9v5/6ky66k3WCqoUwIgYf36vtv+jUEpZHc9\n\
/6aTo9xJzSvFWc6nrULGGNJ7ShE=\n\
-----END CERTIFICATE-----
";
const TEST_CERT_PEM: &str = "-----BEGIN CERTIFICATE-----\n\
MIIBkjCCATmgAwIBAgIUZ+6mhqMCKwcOAg6PY6s0uR/xrhkwCgYIKoZIzj0EAwIw\n\
HTEbMBkGA1UEAwwSdGVzc2VyYSBjcCB0ZXN0IENBMCAXDTI2MTEyNDE1NTQxMVoY\n\
DzIxMjYxMDMxMTU1NDExWjAUMRIwEAYDVQQDDAkxMjcuMC4wLjEwWTATBgcqhkjO\n\
PQIBBggqhkjOPQMBBwNCAARn8ryEJ6lYcaqMNWoas3N3p9u2je6FgWf4MZQzjuDg\n\
v7Utzyjk14fAYMU3P5IFIVvheimbKKtp7rSqsMW7ffyLo14wXDAPBgNVHREECDAG\n\
hwR/AAABMAkGA1UdEwQCMAAwHQYDVR0OBBYEFAEV3qqereuoyIRPMv30fPE+2gD7\n\
MB8GA1UdIwQYMBaAFExEUyMcpd7gVBk3Gx8Hv1o3CpzNMAoGCCqGSM49BAMCA0cA\n\
MEQCID43y6SWtjaVKhZlUT/KQCpCN8IWQWlE7kUumMn6idx4AiBE4D3r7dLaqJ58\n\
x2DYdN8H/MBStFgCpL3NwR/YAqT0/g==\n\
-----END CERTIFICATE-----
";
const TEST_KEY_PEM: &str = "-----BEGIN PRIVATE KEY-----\n\
MIGHAgEAMBMGByqGSM49AgEGCCqGSM49AwEHBG0wawIBAQQgK3V4Qwj8CCjjgepw\n\
nZTtj3UhPtm/RpHn5Ovspt2f6IyhRANCAARn8ryEJ6lYcaqMNWoas3N3p9u2je6F\n\
gWf4MZQzjuDgv7Utzyjk14fAYMU3P5IFIVvheimbKKtp7rSqsMW7ffyL\n\
-----END PRIVATE KEY-----
";

/// Accepts TLS on a free 127.0.0.1 port (printed first), relays each connection to the port
/// given as argv[1].
const TLS_RELAY_PY: &str = r#"
import socket, ssl, sys, threading
ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
ctx.load_cert_chain("cert.pem", "key.pem")
srv = socket.socket()
srv.bind(("127.0.0.1", 0))
srv.listen(64)
print(srv.getsockname()[1], flush=True)
def pipe(a, b):
    try:
        while True:
            d = a.recv(65536)
            if not d:
                break
            b.sendall(d)
    except Exception:
        pass
    finally:
        try:
            b.shutdown(socket.SHUT_WR)
        except Exception:
            pass
def handle(c):
    try:
        s = ctx.wrap_socket(c, server_side=True)
    except Exception:
        c.close()
        return
    u = socket.create_connection(("127.0.0.1", int(sys.argv[1])))
    threading.Thread(target=pipe, args=(s, u), daemon=True).start()
    pipe(u, s)
while True:
    c, _ = srv.accept()
    threading.Thread(target=handle, args=(c,), daemon=True).start()
"#;

/// The TLS relay, killed when dropped.
struct TlsRelay {
    child: Child,
    endpoint: String,
}

impl TlsRelay {
    fn start(dir: &Path, backend: &str) -> TlsRelay {
        std::fs::write(dir.join("cert.pem"), TEST_CERT_PEM).unwrap();
        std::fs::write(dir.join("key.pem"), TEST_KEY_PEM).unwrap();
        std::fs::write(dir.join("relay.py"), TLS_RELAY_PY).unwrap();
        let port = backend.rsplit(':').next().unwrap();
        let mut child = Command::new("python3")
            .arg("relay.py")
            .arg(port)
            .current_dir(dir)
            .stdout(Stdio::piped())
            .spawn()
            .expect("python3 for the TLS relay");
        let mut line = String::new();
        BufReader::new(child.stdout.take().unwrap()).read_line(&mut line).unwrap();
        TlsRelay { child, endpoint: format!("https://127.0.0.1:{}", line.trim()) }
    }
}

impl Drop for TlsRelay {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

#[test]
fn an_https_endpoint_works_with_a_trusted_certificate_and_fails_at_once_without() {
    let (dir, server) = server();
    let relay_dir = dir.path().join("tls");
    std::fs::create_dir_all(&relay_dir).unwrap();
    let relay = TlsRelay::start(&relay_dir, &server.addr);
    let cp = Cp::new(&server, &relay.endpoint);
    let bytes = data(3 * PART + 9, 61);
    let file = dir.path().join("tls.bin");
    std::fs::write(&file, &bytes).unwrap();

    // The system does not trust the test CA: refused at once, no retry.
    let ran = cp.upload(&file, "tls", &[]).failed();
    assert!(ran.stderr.contains("invalid peer certificate"), "{}", ran.stderr);
    assert_eq!(ran.retries(), 0, "{}", ran.stderr);

    // Trusted through SSL_CERT_FILE: up and down.
    let ca = dir.path().join("ca.pem");
    std::fs::write(&ca, TEST_CA_PEM).unwrap();
    let trusting = |args: &[&str]| {
        let mut command = cp.command(args);
        command.env("SSL_CERT_FILE", &ca);
        wait(command.spawn().unwrap())
    };
    let to = format!("s3://{BUCKET}/tls");
    let part = PART.to_string();
    let ran = trusting(&[file.to_str().unwrap(), &to, "--part-size", &part]).ok();
    assert_eq!(ran.field("etag"), etag_of(&bytes, PART, false));
    let local = dir.path().join("tls.down");
    trusting(&[&to, local.to_str().unwrap()]).ok();
    assert!(std::fs::read(&local).unwrap() == bytes);
}

#[test]
fn a_source_written_to_during_its_upload_is_not_completed() {
    let (dir, server) = server();
    let proxy = Proxy::start(&server.addr, |_| Fault::Forward);
    proxy.delay_ms(20);
    let cp = Cp::new(&server, &proxy.endpoint);
    let file = dir.path().join("growing");
    std::fs::write(&file, data(32 * PART, 67)).unwrap();
    let to = format!("s3://{BUCKET}/growing");
    let part = PART.to_string();
    let child =
        cp.spawn(&[file.to_str().unwrap(), &to, "--part-size", &part, "--concurrency", "2"]);
    let deadline = Instant::now() + Duration::from_secs(60);
    while proxy.seen() < 6 {
        assert!(Instant::now() < deadline, "the upload made no progress");
        std::thread::sleep(Duration::from_millis(5));
    }
    // Written in place (the same inode the client reads), its size unchanged.
    let changed = data(32 * PART, 71);
    let mut f = std::fs::OpenOptions::new().write(true).open(&file).unwrap();
    f.write_all(&changed).unwrap();
    f.sync_all().unwrap();
    drop(f);
    let ran = wait(child).failed();
    assert!(ran.stderr.contains("changed during its upload"), "{}", ran.stderr);
    proxy.delay_ms(0);
    let ran = cp.upload(&file, "growing", &["--restart"]).ok();
    assert_eq!(ran.field("etag"), etag_of(&changed, PART, false));
    assert_eq!(server_view(&server, "growing"), (etag_of(&changed, PART, false), 0));
}
