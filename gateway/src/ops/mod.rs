//! The operator's offline commands: `tessera inspect`, `verify`, `uploads`, `journal` (which
//! only read) and `gc`, `compact`, `checkpoint`, `repair` (which change the directory).
//!
//! Every command first checks that DIR is a Tessera data directory (it never creates one), then
//! takes the engine's lock on it (`DirLock`, the one `tessera serve` holds), so that it refuses
//! to run beside a server. The reading commands open the engine on an [`overlay::OverlayFs`]:
//! recovery runs exactly as at any open, but whatever it would repair is repaired in memory
//! only, and the directory is left as it was (the lock file aside, which names its holder).

mod fmt;
mod inspect;
mod journal;
mod maintenance;
pub mod overlay;
mod repair;
mod uploads;
mod verify;

use std::path::{Path, PathBuf};
use std::sync::Arc;

use anyhow::{Context, bail};
use clap::{Args, Subcommand};
use tessera_engine::{DirLock, Engine, EngineConfig, EngineError, WAL_DIR};
use tessera_wal::{Fs, StdFs};

use self::overlay::OverlayFs;
use crate::cli::{LIFECYCLE_DAY_SECONDS_DEFAULT, MIN_PART_BYTES_DEFAULT};

/// The offline subcommands (flattened into `tessera`'s).
#[derive(Debug, Subcommand)]
pub enum OpsCommand {
    /// Show what a data directory holds: counts, payload bytes, log, checkpoint and journal
    /// state (reads only).
    Inspect(InspectArgs),
    /// Check every CRC and every payload's SHA-256 (reads only); exits non-zero on damage.
    Verify(DirArgs),
    /// List the uploads in progress (reads only).
    Uploads(UploadsArgs),
    /// Show the history of committed transitions from the journal (reads only).
    Journal(JournalArgs),
    /// Expire the uploads that are due now.
    Gc(DirArgs),
    /// Compact the payload segments whose live fraction is low.
    Compact(DirArgs),
    /// Take a checkpoint now.
    Checkpoint(DirArgs),
    /// Cut the log at its first corruption, keeping a copy of what is cut.
    Repair(DirArgs),
}

/// A command that takes only the data directory.
#[derive(Debug, Clone, Args)]
pub struct DirArgs {
    /// The data directory (no server may hold it).
    #[arg(value_name = "DIR")]
    pub dir: PathBuf,
}

/// `tessera inspect`.
#[derive(Debug, Clone, Args)]
pub struct InspectArgs {
    /// The data directory (no server may hold it).
    #[arg(value_name = "DIR")]
    pub dir: PathBuf,
    /// One JSON object instead of lines for people.
    #[arg(long)]
    pub json: bool,
}

/// `tessera uploads`.
#[derive(Debug, Clone, Args)]
pub struct UploadsArgs {
    /// The data directory (no server may hold it).
    #[arg(value_name = "DIR")]
    pub dir: PathBuf,
    /// Only this bucket's uploads (default: every bucket's).
    #[arg(long)]
    pub bucket: Option<String>,
    /// Only uploads whose key starts with this.
    #[arg(long)]
    pub prefix: Option<String>,
}

/// `tessera journal`.
#[derive(Debug, Clone, Args)]
pub struct JournalArgs {
    /// The data directory (no server may hold it).
    #[arg(value_name = "DIR")]
    pub dir: PathBuf,
    /// Only this upload's history (its upload id).
    #[arg(long, conflicts_with_all = ["bucket", "prefix"])]
    pub upload: Option<String>,
    /// Only entries naming this bucket.
    #[arg(long)]
    pub bucket: Option<String>,
    /// Only entries whose key starts with this (in `--bucket`, or in any bucket).
    #[arg(long)]
    pub prefix: Option<String>,
    /// Only entries at or after this time: RFC 3339 (2025-01-31T12:00:00Z) or Unix
    /// milliseconds.
    #[arg(long, value_name = "T", value_parser = fmt::parse_time_ms)]
    pub since: Option<u64>,
    /// Only entries before this time (same forms as `--since`).
    #[arg(long, value_name = "T", value_parser = fmt::parse_time_ms)]
    pub until: Option<u64>,
    /// Newest first (default: oldest first).
    #[arg(long)]
    pub newest_first: bool,
    /// At most this many entries.
    #[arg(long)]
    pub limit: Option<usize>,
    /// JSON lines, the journal's export format (docs/format.md §12.7).
    #[arg(long)]
    pub json: bool,
}

/// Runs an offline command. On failure it prints the error (and its causes) on one line on
/// stderr, `tessera: ...`, and exits with status 1.
pub fn run(command: OpsCommand) -> anyhow::Result<()> {
    if let Err(e) = run_command(command) {
        eprintln!("tessera: {e:#}");
        std::process::exit(1);
    }
    Ok(())
}

fn run_command(command: OpsCommand) -> anyhow::Result<()> {
    // The reading commands' recovery runs in memory: the engine's warnings ("torn tail
    // zeroed") would describe what did not happen on disk; the commands say what they found.
    let reads_only = matches!(
        command,
        OpsCommand::Inspect(_)
            | OpsCommand::Verify(_)
            | OpsCommand::Uploads(_)
            | OpsCommand::Journal(_)
    );
    init_tracing(if reads_only { "error" } else { "warn" });
    match command {
        OpsCommand::Inspect(args) => inspect::run(&args),
        OpsCommand::Verify(args) => verify::run(&args.dir),
        OpsCommand::Uploads(args) => uploads::run(&args),
        OpsCommand::Journal(args) => journal::run(&args),
        OpsCommand::Gc(args) => maintenance::gc(&args.dir),
        OpsCommand::Compact(args) => maintenance::compact(&args.dir),
        OpsCommand::Checkpoint(args) => maintenance::checkpoint(&args.dir),
        OpsCommand::Repair(args) => repair::run(&args.dir),
    }
}

/// Logs go to stderr, at `default` unless `RUST_LOG` says otherwise: the commands report what
/// matters themselves, on stdout.
fn init_tracing(default: &str) {
    let filter = tracing_subscriber::EnvFilter::try_from_default_env()
        .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new(default));
    let _ =
        tracing_subscriber::fmt().with_env_filter(filter).with_writer(std::io::stderr).try_init();
}

/// The engine's configuration: `tessera serve`'s defaults.
fn engine_config() -> EngineConfig {
    crate::serve::engine_config_with(MIN_PART_BYTES_DEFAULT, LIFECYCLE_DAY_SECONDS_DEFAULT)
}

/// Fails unless `dir` is a Tessera data directory: a directory whose `wal/` holds a log
/// segment or a checkpoint. Nothing is created.
fn check_data_dir(dir: &Path) -> anyhow::Result<()> {
    match std::fs::metadata(dir) {
        Ok(meta) if meta.is_dir() => {}
        Ok(_) => bail!("{} is not a directory", dir.display()),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
            bail!("{}: no such data directory", dir.display())
        }
        Err(e) => return Err(e).with_context(|| format!("reading {}", dir.display())),
    }
    let wal = dir.join(WAL_DIR);
    let is_log_file = |name: &str| {
        let digits = name.strip_suffix(".wal").or_else(|| name.strip_suffix(".ckpt"));
        digits.is_some_and(|d| d.len() == 20 && d.bytes().all(|b| b.is_ascii_digit()))
    };
    let has_log = std::fs::read_dir(&wal).is_ok_and(|entries| {
        entries.filter_map(Result::ok).any(|e| e.file_name().to_str().is_some_and(is_log_file))
    });
    if !has_log {
        bail!(
            "{} is not a Tessera data directory: {} holds no log segment or checkpoint",
            dir.display(),
            wal.display()
        );
    }
    Ok(())
}

/// Takes the data directory's lock, or fails saying who holds it.
fn lock_dir(dir: &Path) -> anyhow::Result<DirLock> {
    check_data_dir(dir)?;
    DirLock::acquire(dir).map_err(|e| match e {
        EngineError::Locked { holder, .. } => anyhow::anyhow!(
            "the data directory {} is in use ({holder}): a running `tessera serve`, or another \
             tessera command, holds its lock; stop it and try again",
            dir.display()
        ),
        e => anyhow::Error::new(e).context(format!("locking {}", dir.display())),
    })
}

/// An engine opened by an offline command, with the directory's lock.
struct Opened {
    engine: Engine,
    _lock: DirLock,
}

/// Opens the engine without changing the directory: recovery runs on an overlay.
fn open_read_only(dir: &Path) -> anyhow::Result<Opened> {
    let lock = lock_dir(dir)?;
    let engine = open_on(OverlayFs::shared(), dir)?;
    Ok(Opened { engine, _lock: lock })
}

/// Opens the engine on the directory itself (recovery repairs what it repairs at any open).
fn open_writable(dir: &Path) -> anyhow::Result<Opened> {
    let lock = lock_dir(dir)?;
    let engine = open_on(StdFs::shared(), dir)?;
    Ok(Opened { engine, _lock: lock })
}

fn open_on(fs: Arc<dyn Fs>, dir: &Path) -> anyhow::Result<Engine> {
    Engine::open_with_fs(fs, dir, engine_config()).map_err(|e| {
        anyhow::anyhow!(
            "opening the data directory {}: {e} (`tessera verify DIR` lists all damage; \
             `tessera repair DIR` cuts a corrupt log)",
            dir.display()
        )
    })
}
