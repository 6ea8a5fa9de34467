//! A `tessera serve` child process on 127.0.0.1 with a temporary data directory, and an AWS
//! SDK client signed with its keys. The server is stopped (SIGTERM, then SIGKILL after a
//! timeout) when the handle drops.

#![allow(
    dead_code,
    missing_docs,
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::indexing_slicing,
    clippy::panic,
    clippy::cast_possible_truncation
)]

use std::io::{BufRead, BufReader, Read, Write};
use std::net::TcpStream;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use aws_sdk_s3::Client;
use aws_sdk_s3::config::{Credentials, Region};

/// How long a server may take to print its address, or to stop.
const START_TIMEOUT: Duration = Duration::from_secs(60);
const STOP_TIMEOUT: Duration = Duration::from_secs(30);

/// Options for a test server.
#[derive(Clone, Debug)]
pub struct Options {
    pub min_part_size: u64,
    pub lifecycle_day_seconds: Option<u64>,
    pub keys: Option<(String, String)>,
    pub complete_keep_alive_ms: Option<u64>,
    /// Start the admin listener (on a free port); `false` passes `--admin-listen off`.
    pub admin_listener: bool,
}

impl Default for Options {
    fn default() -> Self {
        Options {
            min_part_size: 5 << 20,
            lifecycle_day_seconds: None,
            keys: None,
            complete_keep_alive_ms: None,
            admin_listener: true,
        }
    }
}

/// A running server.
pub struct Server {
    child: Option<Child>,
    pub endpoint: String,
    pub addr: String,
    pub access_key: String,
    pub secret_key: String,
    /// Every stdout line read up to the address.
    pub banner: Vec<String>,
    rest: Option<std::thread::JoinHandle<Vec<String>>>,
}

impl Server {
    /// Starts a server on `data` (a fresh temporary directory by default).
    pub fn start(data: &Path, options: &Options) -> Server {
        let mut command = Command::new(env!("CARGO_BIN_EXE_tessera"));
        command
            .arg("serve")
            .arg("--data")
            .arg(data)
            .arg("--listen")
            .arg("127.0.0.1:0")
            .arg("--admin-listen")
            .arg(if options.admin_listener { "127.0.0.1:0" } else { "off" })
            .arg("--min-part-size")
            .arg(options.min_part_size.to_string())
            .env_remove("TESSERA_ACCESS_KEY")
            .env_remove("TESSERA_SECRET_KEY")
            .env_remove("TESSERA_DATA")
            .env_remove("TESSERA_LISTEN")
            .env_remove("TESSERA_ADMIN_LISTEN")
            .env("RUST_LOG", "warn")
            .stdout(Stdio::piped())
            .stderr(Stdio::inherit());
        if let Some(days) = options.lifecycle_day_seconds {
            command.arg("--lifecycle-day-seconds").arg(days.to_string());
        }
        if let Some(ms) = options.complete_keep_alive_ms {
            command.arg("--complete-keep-alive-ms").arg(ms.to_string());
        }
        if let Some((access, secret)) = &options.keys {
            command.arg("--access-key").arg(access).arg("--secret-key").arg(secret);
        }
        let mut child = command.spawn().expect("spawn tessera serve");
        let stdout = child.stdout.take().expect("stdout");
        let (tx, rx) = std::sync::mpsc::channel();
        let rest = std::thread::spawn(move || {
            let mut after = Vec::new();
            let mut listening = false;
            for line in BufReader::new(stdout).lines() {
                let Ok(line) = line else { break };
                if listening {
                    after.push(line);
                } else {
                    listening = line.starts_with("listening on ");
                    let _ = tx.send(line);
                }
            }
            after
        });
        let deadline = Instant::now() + START_TIMEOUT;
        let mut banner = Vec::new();
        let endpoint = loop {
            let left = deadline.saturating_duration_since(Instant::now());
            let line = rx.recv_timeout(left).expect("the server printed its address in time");
            banner.push(line.clone());
            if let Some(url) = line.strip_prefix("listening on ") {
                break url.to_owned();
            }
        };
        let field = |name: &str| {
            banner.iter().find_map(|l| l.strip_prefix(name)).map(str::to_owned).unwrap_or_default()
        };
        let (access_key, secret_key) = match &options.keys {
            Some((a, s)) => (a.clone(), s.clone()),
            None => (field("access key: "), field("secret key: ")),
        };
        let addr = endpoint.trim_start_matches("http://").to_owned();
        Server {
            child: Some(child),
            endpoint,
            addr,
            access_key,
            secret_key,
            banner,
            rest: Some(rest),
        }
    }

    /// A client signing with the server's keys.
    pub fn client(&self) -> Client {
        self.client_with(&self.access_key, &self.secret_key)
    }

    /// A client signing with other keys.
    pub fn client_with(&self, access_key: &str, secret_key: &str) -> Client {
        let config = aws_sdk_s3::Config::builder()
            .behavior_version_latest()
            .region(Region::new("us-east-1"))
            .endpoint_url(&self.endpoint)
            .credentials_provider(Credentials::new(access_key, secret_key, None, None, "test"))
            .force_path_style(true)
            .http_client(aws_smithy_http_client::Builder::new().build_http())
            .build();
        Client::from_conf(config)
    }

    /// The admin listener's address (host:port), from the line printed before the S3 one.
    pub fn admin_addr(&self) -> String {
        self.banner
            .iter()
            .find_map(|l| l.strip_prefix("admin listening on http://"))
            .expect("the server printed its admin address")
            .to_owned()
    }

    /// Sends raw bytes and returns the response's status code and text.
    pub fn raw(&self, request: &str) -> (u16, String) {
        let mut stream = TcpStream::connect(&self.addr).expect("connect");
        stream.set_read_timeout(Some(Duration::from_secs(10))).unwrap();
        stream.write_all(request.as_bytes()).unwrap();
        let mut response = String::new();
        let _ = stream.read_to_string(&mut response);
        let status =
            response.split_whitespace().nth(1).and_then(|s| s.parse().ok()).expect("a status line");
        (status, response)
    }

    /// Stops the server with SIGTERM and returns the stdout lines after the address.
    pub fn stop(mut self) -> Vec<String> {
        self.terminate();
        self.rest.take().map(|t| t.join().unwrap_or_default()).unwrap_or_default()
    }

    /// Kills the server with SIGKILL (no shutdown at all).
    pub fn kill(mut self) {
        if let Some(mut child) = self.child.take() {
            let _ = child.kill();
            let _ = child.wait();
        }
    }

    fn terminate(&mut self) {
        let Some(mut child) = self.child.take() else { return };
        let _ = Command::new("kill").arg("-TERM").arg(child.id().to_string()).status();
        let deadline = Instant::now() + STOP_TIMEOUT;
        while Instant::now() < deadline {
            if let Ok(Some(status)) = child.try_wait() {
                assert!(status.success(), "the server exited with {status}");
                return;
            }
            std::thread::sleep(Duration::from_millis(20));
        }
        let _ = child.kill();
        let _ = child.wait();
        panic!("the server did not stop within {STOP_TIMEOUT:?} of SIGTERM");
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

/// A server on a fresh temporary directory (kept alive by the returned guard).
pub fn start(options: &Options) -> (tempfile::TempDir, Server) {
    let dir = tempfile::tempdir().expect("tempdir");
    let server = Server::start(&dir.path().join("data"), options);
    (dir, server)
}

/// The S3 error code of an SDK error.
pub fn code<E, R>(error: &aws_sdk_s3::error::SdkError<E, R>) -> String
where
    E: aws_sdk_s3::error::ProvideErrorMetadata,
{
    aws_sdk_s3::error::ProvideErrorMetadata::code(error).unwrap_or("<none>").to_owned()
}

/// The HTTP status of an SDK error's response.
pub fn status<E>(
    error: &aws_sdk_s3::error::SdkError<E, aws_sdk_s3::config::http::HttpResponse>,
) -> u16 {
    error.raw_response().map(|r| r.status().as_u16()).unwrap_or(0)
}

/// `len` bytes of a pattern that differs by `seed`.
pub fn bytes(len: usize, seed: u8) -> Vec<u8> {
    (0..len).map(|i| (i as u8).wrapping_mul(31).wrapping_add(seed)).collect()
}

/// Hex MD5.
pub fn md5_hex(data: &[u8]) -> String {
    use md5::Digest;
    hex::encode(md5::Md5::digest(data))
}

/// S3's multipart ETag of these parts.
pub fn multipart_etag(parts: &[&[u8]]) -> String {
    use md5::Digest;
    let mut all = Vec::new();
    for p in parts {
        all.extend_from_slice(&md5::Md5::digest(p));
    }
    format!("\"{}-{}\"", hex::encode(md5::Md5::digest(&all)), parts.len())
}

pub fn data_dir(dir: &tempfile::TempDir) -> PathBuf {
    dir.path().join("data")
}
