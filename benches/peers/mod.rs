//! The peers of the "mpu-transitions" benchmark: what a user would otherwise pick to keep
//! multipart-upload state (SQLite, redb, Redis with fsync on every write), each storing a
//! part's bytes in the same durable transaction as its metadata, driven by one workload
//! ([`workload::run`]). Shared by the benchmarks that `mod peers;` it (`peers_only`, and the
//! engine's, which runs them side by side with the engine): no `main` here.
//!
//! No setting anywhere disables or defers an fsync: SQLite runs `synchronous=FULL` in WAL mode,
//! redb commits with `Durability::Immediate`, Redis with `appendfsync always`.

pub mod group_log;
pub mod redb;
pub mod redis;
pub mod sqlite;
pub mod workload;

use std::path::{Path, PathBuf};
use std::time::Duration;

use serde_json::{Map, Value};

use self::workload::{BoxError, RunFigures};

/// Client counts every benchmark point is measured at.
pub const CLIENT_COUNTS: [usize; 3] = [1, 8, 64];

/// The workload's seed: every store sees the same uploads.
pub const SEED: u64 = 0x7E55_E7A0_0000_0001;

/// A peer.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Peer {
    /// SQLite (WAL, synchronous=FULL), one connection per client.
    Sqlite,
    /// redb, one write transaction per transition.
    Redb,
    /// Redis (appendfsync always), one connection per client, MULTI/EXEC per transition.
    Redis,
    /// Not a store a user would pick: the ceiling, a bare group-committed log
    /// ([`group_log`]).
    GroupLog,
}

impl Peer {
    /// Every peer, in the order benchmarks run and print them.
    pub const ALL: [Peer; 4] = [Peer::Sqlite, Peer::Redb, Peer::Redis, Peer::GroupLog];

    /// Its name, also the prefix of its JSON keys.
    pub fn name(self) -> &'static str {
        match self {
            Peer::Sqlite => "sqlite",
            Peer::Redb => "redb",
            Peer::Redis => "redis",
            Peer::GroupLog => "group_log",
        }
    }

    /// Whether it can run on this machine (Redis needs `redis-server`).
    pub fn available(self) -> bool {
        match self {
            Peer::Sqlite | Peer::Redb | Peer::GroupLog => true,
            Peer::Redis => redis::find_redis_server().is_some(),
        }
    }

    /// One point: a fresh store in a new directory under `base`, `clients` clients for
    /// `duration`. `Ok(None)` if the peer is not available.
    pub fn run_point(
        self,
        base: &Path,
        clients: usize,
        duration: Duration,
        seed: u64,
    ) -> Result<Option<RunFigures>, BoxError> {
        let dir = tempfile::Builder::new().prefix(&format!("{}-", self.name())).tempdir_in(base)?;
        let figures = match self {
            Peer::Sqlite => {
                workload::run(&sqlite::SqliteStore::open(dir.path())?, clients, duration, seed)?
            }
            Peer::Redb => {
                workload::run(&redb::RedbStore::open(dir.path())?, clients, duration, seed)?
            }
            Peer::Redis => match redis::RedisStore::start(dir.path())? {
                Some(store) => workload::run(&store, clients, duration, seed)?,
                None => return Ok(None),
            },
            Peer::GroupLog => workload::run(
                &group_log::GroupLogStore::open(dir.path())?,
                clients,
                duration,
                seed,
            )?,
        };
        Ok(Some(figures))
    }
}

/// The workspace's `target/` directory (`CARGO_TARGET_DIR` if set): on the build's disk,
/// unlike a tmpfs `/tmp`.
pub fn target_dir() -> PathBuf {
    if let Some(dir) = std::env::var_os("CARGO_TARGET_DIR") {
        return PathBuf::from(dir);
    }
    let manifest = Path::new(env!("CARGO_MANIFEST_DIR"));
    let root = manifest.ancestors().find(|d| d.join("Cargo.lock").is_file()).unwrap_or(manifest);
    root.join("target")
}

/// Where the benchmarks' stores go: `TESSERA_BENCH_DIR` if set, else `target/`.
pub fn scratch_base() -> Result<PathBuf, BoxError> {
    let base = std::env::var_os("TESSERA_BENCH_DIR").map_or_else(target_dir, PathBuf::from);
    std::fs::create_dir_all(&base)?;
    Ok(base)
}

/// The client counts to measure: `TESSERA_BENCH_CLIENTS` (comma-separated, for profiling one
/// point), default [`CLIENT_COUNTS`].
pub fn client_counts() -> Vec<usize> {
    let wanted = std::env::var("TESSERA_BENCH_CLIENTS").ok();
    let parsed: Vec<usize> = wanted
        .iter()
        .flat_map(|s| s.split(','))
        .filter_map(|n| n.trim().parse::<usize>().ok())
        .filter(|&n| n > 0)
        .collect();
    if parsed.is_empty() { CLIENT_COUNTS.to_vec() } else { parsed }
}

/// Seconds each point runs: `TESSERA_BENCH_SECS`, default 5.
pub fn seconds_per_point() -> f64 {
    std::env::var("TESSERA_BENCH_SECS")
        .ok()
        .and_then(|s| s.parse::<f64>().ok())
        .filter(|s| s.is_finite() && *s > 0.0)
        .unwrap_or(5.0)
}

/// The figures one point records, each under `<prefix>_<figure>_c<clients>`.
pub const FIGURES: [&str; 7] = [
    "transitions_per_s",
    "p50_us",
    "p99_us",
    "max_us",
    "transitions",
    "uploads_completed",
    "uploads_aborted",
];

/// Records one point under `<prefix>_<figure>_c<clients>` (see [`FIGURES`]); every figure is
/// JSON null when the point was not measured (`None`: the peer is missing).
pub fn record(
    json: &mut Map<String, Value>,
    prefix: &str,
    clients: usize,
    figures: Option<&RunFigures>,
) {
    let number = |x: f64| {
        serde_json::Number::from_f64((x * 1000.0).round() / 1000.0)
            .map_or(Value::Null, Value::Number)
    };
    let values: [Value; 7] = match figures {
        None => Default::default(),
        Some(f) => [
            number(f.transitions_per_s),
            number(f.p50_us),
            number(f.p99_us),
            number(f.max_us),
            f.transitions.into(),
            f.uploads_completed.into(),
            f.uploads_aborted.into(),
        ],
    };
    for (name, value) in FIGURES.iter().zip(values) {
        json.insert(format!("{prefix}_{name}_c{clients}"), value);
    }
}

/// The disk's reference rate: one thread appending `PART_BYTES` and calling fdatasync after
/// each, for `duration`, in a new file under `base`. Syncs per second.
pub fn disk_fdatasync_per_s(base: &Path, duration: Duration) -> Result<f64, BoxError> {
    use std::io::Write as _;
    use std::time::Instant;

    let dir = tempfile::Builder::new().prefix("fdatasync-").tempdir_in(base)?;
    let mut file = std::fs::File::create(dir.path().join("append.log"))?;
    let block = vec![0x5a_u8; workload::PART_BYTES];
    let start = Instant::now();
    let mut syncs = 0u64;
    while start.elapsed() < duration {
        file.write_all(&block)?;
        file.sync_data()?;
        syncs += 1;
    }
    Ok(syncs as f64 / start.elapsed().as_secs_f64())
}
