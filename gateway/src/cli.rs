//! The command line: `tessera serve` and its flags (environment variables override defaults,
//! flags override both).

use std::net::SocketAddr;
use std::path::PathBuf;

use clap::{Args, Parser, Subcommand};

/// S3's minimum size of every part but the last.
pub const MIN_PART_BYTES_DEFAULT: u64 = 5 << 20;
/// A lifecycle "day", in seconds.
pub const LIFECYCLE_DAY_SECONDS_DEFAULT: u64 = 24 * 60 * 60;

/// How long a completion may run before its answer switches to keep-alive whitespace.
pub const COMPLETE_KEEP_ALIVE_MS_DEFAULT: u64 = 1000;

/// Tessera: a write-ahead-logged store for S3 multipart uploads.
#[derive(Debug, Parser)]
#[command(name = "tessera", version, about)]
pub struct Cli {
    /// What to do.
    #[command(subcommand)]
    pub command: Command,
}

/// The subcommands.
#[derive(Debug, Subcommand)]
pub enum Command {
    /// Serve the S3 API over HTTP on a data directory.
    Serve(ServeArgs),
    /// Copy a file to or from any S3 endpoint in parts, resumably (`tessera cp FILE
    /// s3://BUCKET/KEY`, `tessera cp s3://BUCKET/KEY FILE`).
    Cp(crate::cp::CpArgs),
    /// The offline commands (inspect, verify, uploads, journal, gc, compact, checkpoint,
    /// repair): each refuses to run while a server holds the directory.
    #[command(flatten)]
    Ops(crate::ops::OpsCommand),
}

/// `tessera serve`.
#[derive(Debug, Clone, Args)]
pub struct ServeArgs {
    /// The data directory (created if missing; one server at a time).
    #[arg(long, env = "TESSERA_DATA", default_value = "./tessera-data")]
    pub data: PathBuf,
    /// The address to listen on (port 0 picks a free port; the bound address is printed).
    #[arg(long, env = "TESSERA_LISTEN", default_value = "127.0.0.1:9000")]
    pub listen: SocketAddr,
    /// The access key clients sign with. Without keys, a pair is generated and kept in the
    /// data directory.
    #[arg(long, env = "TESSERA_ACCESS_KEY", requires = "secret_key")]
    pub access_key: Option<String>,
    /// The secret key clients sign with.
    #[arg(long, env = "TESSERA_SECRET_KEY", hide_env_values = true, requires = "access_key")]
    pub secret_key: Option<String>,
    /// The admin listener's address (/metrics, /healthz, /events), or `off`.
    #[arg(long, env = "TESSERA_ADMIN_LISTEN", default_value = crate::admin::ADMIN_LISTEN_DEFAULT)]
    pub admin_listen: crate::admin::AdminListen,
    /// The minimum size in bytes of every part but the last at completion (EntityTooSmall).
    #[arg(long, default_value_t = MIN_PART_BYTES_DEFAULT)]
    pub min_part_size: u64,
    /// The length of a lifecycle "day" in seconds (AbortIncompleteMultipartUpload), shorter
    /// for tests.
    #[arg(long, hide = true, default_value_t = LIFECYCLE_DAY_SECONDS_DEFAULT,
          value_parser = clap::value_parser!(u64).range(1..))]
    pub lifecycle_day_seconds: u64,
    /// A CompleteMultipartUpload still running after this many milliseconds answers 200 at
    /// once and keeps the connection alive until it ends (0: always; for tests).
    #[arg(long, hide = true, default_value_t = COMPLETE_KEEP_ALIVE_MS_DEFAULT)]
    pub complete_keep_alive_ms: u64,
}
