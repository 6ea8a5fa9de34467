//! Redis peer: a `redis-server` the benchmark starts itself on 127.0.0.1 (a free port, a
//! temporary directory) with `--appendonly yes --appendfsync always --save ""`: every write is
//! in the append-only file and fsynced before Redis replies (no RDB snapshots). One connection
//! per client; one MULTI/EXEC per transition.
//!
//! Layout, after the seed's Redis design:
//! - `upload:<id>`: hash (bucket, key, initiated_ms);
//! - `upload:<id>:parts`: sorted set of the part numbers (score = part number);
//! - `upload:<id>:part:<n>`: hash (size, etag, last_modified_ms, data = the part's bytes);
//! - `bucket:<bucket>:uploads`: sorted set, score 0, member `<key>\0<id>` (ListMultipartUploads'
//!   order);
//! - `object:<bucket>:<key>`: hash (etag, size, last_modified_ms, upload_id).
//!
//! MULTI/EXEC cannot read inside the transaction, so put and abort do not check that the upload
//! exists; complete and abort check the counts EXEC returns.

use std::fs::File;
use std::net::TcpListener;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use ::redis::io::tcp::TcpSettings;
use ::redis::{ConnectionAddr, ConnectionInfo, IntoConnectionInfo as _};

use super::workload::{
    Abort, BoxError, Complete, Create, PartRef, PutPart, TransitionClient, TransitionStore,
};

/// The `redis-server` to run: `TESSERA_REDIS_SERVER` if set, else the first on `PATH`.
pub fn find_redis_server() -> Option<PathBuf> {
    if let Some(explicit) = std::env::var_os("TESSERA_REDIS_SERVER") {
        return Some(PathBuf::from(explicit));
    }
    let path = std::env::var_os("PATH")?;
    std::env::split_paths(&path).map(|dir| dir.join("redis-server")).find(|p| p.is_file())
}

/// A running `redis-server`, killed (and waited for) when dropped, also while a panic unwinds.
pub struct RedisServer {
    child: Child,
    port: u16,
    dir: tempfile::TempDir,
}

impl RedisServer {
    /// Starts `binary` in a new temporary directory under `base` and waits until it answers.
    pub fn start(binary: &Path, base: &Path) -> Result<RedisServer, BoxError> {
        let mut last_error: BoxError = "redis-server did not start".into();
        // The free port is found by binding and releasing it; another process may take it
        // meanwhile, so a failed start is retried on a new port.
        for _ in 0..3 {
            match RedisServer::start_once(binary, base) {
                Ok(server) => return Ok(server),
                Err(e) => last_error = e,
            }
        }
        Err(last_error)
    }

    fn start_once(binary: &Path, base: &Path) -> Result<RedisServer, BoxError> {
        let dir = tempfile::Builder::new().prefix("redis-").tempdir_in(base)?;
        let port = TcpListener::bind("127.0.0.1:0")?.local_addr()?.port();
        let log = File::create(dir.path().join("redis.log"))?;
        let child = Command::new(binary)
            .args(["--bind", "127.0.0.1", "--port", &port.to_string()])
            .arg("--dir")
            .arg(dir.path())
            .args(["--appendonly", "yes", "--appendfsync", "always", "--save", ""])
            .args(["--daemonize", "no", "--protected-mode", "yes"])
            .current_dir(dir.path())
            .stdin(Stdio::null())
            .stdout(log.try_clone()?)
            .stderr(log)
            .spawn()
            .map_err(|e| format!("cannot run {}: {e}", binary.display()))?;
        let mut server = RedisServer { child, port, dir };
        server.wait_ready(Duration::from_secs(10))?;
        Ok(server)
    }

    fn wait_ready(&mut self, limit: Duration) -> Result<(), BoxError> {
        let deadline = Instant::now() + limit;
        loop {
            if let Some(status) = self.child.try_wait()? {
                return Err(format!("redis-server exited ({status}): {}", self.log_tail()).into());
            }
            let ping = ::redis::Client::open(self.connection_info()?)
                .and_then(|c| c.get_connection())
                .and_then(|mut c| ::redis::cmd("PING").query::<String>(&mut c));
            if ping.is_ok() {
                return self.check_durability();
            }
            if Instant::now() >= deadline {
                return Err(format!("redis-server did not answer: {}", self.log_tail()).into());
            }
            std::thread::sleep(Duration::from_millis(20));
        }
    }

    /// Asks the server what it runs with, rather than trusting the command line.
    fn check_durability(&self) -> Result<(), BoxError> {
        let mut conn = ::redis::Client::open(self.connection_info()?)?.get_connection()?;
        for (name, wanted) in [("appendonly", "yes"), ("appendfsync", "always"), ("save", "")] {
            let got: Vec<String> = ::redis::cmd("CONFIG").arg("GET").arg(name).query(&mut conn)?;
            if got.get(1).map(String::as_str) != Some(wanted) {
                return Err(format!("redis-server runs with {name} = {got:?}").into());
            }
        }
        Ok(())
    }

    fn log_tail(&self) -> String {
        let log = std::fs::read_to_string(self.dir.path().join("redis.log")).unwrap_or_default();
        let lines: Vec<&str> = log.lines().collect();
        lines.get(lines.len().saturating_sub(5)..).unwrap_or_default().join(" | ")
    }

    /// How to connect to it (TCP_NODELAY on).
    pub fn connection_info(&self) -> Result<ConnectionInfo, BoxError> {
        Ok(ConnectionAddr::Tcp("127.0.0.1".to_owned(), self.port)
            .into_connection_info()?
            .set_tcp_settings(TcpSettings::default().set_nodelay(true)))
    }
}

impl Drop for RedisServer {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// The Redis peer: a server of its own.
pub struct RedisStore {
    /// Kept for its `Drop`, which kills the server after the clients are gone.
    _server: RedisServer,
    info: ConnectionInfo,
}

impl RedisStore {
    /// Starts a server under `base`; `Ok(None)` if no `redis-server` is installed.
    pub fn start(base: &Path) -> Result<Option<RedisStore>, BoxError> {
        let Some(binary) = find_redis_server() else {
            return Ok(None);
        };
        let server = RedisServer::start(&binary, base)?;
        let info = server.connection_info()?;
        Ok(Some(RedisStore { _server: server, info }))
    }
}

impl TransitionStore for RedisStore {
    type Client<'s> = RedisClient;

    fn client(&self, _index: usize) -> Result<RedisClient, BoxError> {
        let conn = ::redis::Client::open(self.info.clone())?.get_connection()?;
        Ok(RedisClient { conn })
    }
}

/// One client's connection.
pub struct RedisClient {
    conn: ::redis::Connection,
}

fn upload_key(upload: &str) -> String {
    format!("upload:{upload}")
}

fn index_key(bucket: &str) -> String {
    format!("bucket:{bucket}:uploads")
}

fn index_member(key: &str, upload: &str) -> String {
    format!("{key}\0{upload}")
}

/// The keys of an upload and its parts.
fn upload_keys(upload: &str, parts: &[PartRef]) -> Vec<String> {
    let mut keys = vec![upload_key(upload), format!("upload:{upload}:parts")];
    keys.extend(parts.iter().map(|p| format!("upload:{upload}:part:{}", p.part_number)));
    keys
}

impl RedisClient {
    /// Deletes an upload and its parts in `pipe`; EXEC's replies are (deleted keys, removed
    /// index members).
    fn delete_upload(
        pipe: &mut ::redis::Pipeline,
        upload: &str,
        bucket: &str,
        key: &str,
        parts: &[PartRef],
    ) -> usize {
        let keys = upload_keys(upload, parts);
        pipe.del(&keys).zrem(index_key(bucket), index_member(key, upload));
        keys.len()
    }
}

impl TransitionClient for RedisClient {
    fn create(&mut self, t: &Create<'_>) -> Result<(), BoxError> {
        let upload = t.upload.to_hex();
        ::redis::pipe()
            .atomic()
            .cmd("HSET")
            .arg(upload_key(&upload))
            .arg("bucket")
            .arg(t.bucket)
            .arg("key")
            .arg(t.key)
            .arg("initiated_ms")
            .arg(t.initiated_ms)
            .ignore()
            .zadd(index_key(t.bucket), index_member(t.key, &upload), 0)
            .ignore()
            .exec(&mut self.conn)?;
        Ok(())
    }

    fn put_part(&mut self, t: &PutPart<'_>) -> Result<[u8; 16], BoxError> {
        let (md5, md5_hex) = super::workload::part_etag(t.payload);
        let upload = t.upload.to_hex();
        ::redis::pipe()
            .atomic()
            .cmd("HSET")
            .arg(format!("upload:{upload}:part:{}", t.part_number))
            .arg("size")
            .arg(t.payload.len())
            .arg("etag")
            .arg(md5_hex)
            .arg("last_modified_ms")
            .arg(t.now_ms)
            .arg("data")
            .arg(t.payload)
            .ignore()
            .zadd(format!("upload:{upload}:parts"), t.part_number, t.part_number)
            .ignore()
            .exec(&mut self.conn)?;
        Ok(md5)
    }

    fn complete(&mut self, t: &Complete<'_>) -> Result<(), BoxError> {
        let upload = t.upload.to_hex();
        let mut pipe = ::redis::pipe();
        pipe.atomic();
        let keys = RedisClient::delete_upload(&mut pipe, &upload, t.bucket, t.key, t.parts);
        pipe.cmd("HSET")
            .arg(format!("object:{}:{}", t.bucket, t.key))
            .arg("etag")
            .arg(t.etag)
            .arg("size")
            .arg(t.size)
            .arg("last_modified_ms")
            .arg(t.now_ms)
            .arg("upload_id")
            .arg(&upload)
            .ignore();
        let (deleted, unindexed): (usize, usize) = pipe.query(&mut self.conn)?;
        if deleted != keys || unindexed != 1 {
            return Err(format!(
                "complete of {upload} deleted {deleted} of {keys} keys, {unindexed} index entries"
            )
            .into());
        }
        Ok(())
    }

    fn abort(&mut self, t: &Abort<'_>) -> Result<(), BoxError> {
        let upload = t.upload.to_hex();
        let mut pipe = ::redis::pipe();
        pipe.atomic();
        let keys = RedisClient::delete_upload(&mut pipe, &upload, t.bucket, t.key, t.parts);
        let (deleted, unindexed): (usize, usize) = pipe.query(&mut self.conn)?;
        if deleted != keys || unindexed != 1 {
            return Err(format!(
                "abort of {upload} deleted {deleted} of {keys} keys, {unindexed} index entries"
            )
            .into());
        }
        Ok(())
    }
}
