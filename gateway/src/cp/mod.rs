//! `tessera cp`: a resumable multipart uploader and downloader for any S3 endpoint.
//!
//! Code map:
//! - `plan.rs`: the part-size rule (S3's limits, `--max-memory`, `--concurrency`).
//! - `checksum.rs`: Content-MD5, the additional checksum, composite checksums and ETags.
//! - `state.rs`: the crash-safe state file of a transfer (docs/format.md §13).
//! - `identity.rs`: what tells a resumed upload its source did not change.
//! - `retry.rs`: which failures are retried, backoff with jitter, the retry log lines.
//! - `adapt.rs`: adaptive concurrency (AIMD).
//! - `transfer.rs`: running parts with bounded concurrency, stopping cleanly on SIGINT.
//! - `progress.rs`: the progress bar or lines.
//! - `upload.rs`, `download.rs`: the two directions.
//!
//! **Architecture invariant:** the server is trusted over the state file. The file only says
//! which upload to resume and what the local bytes' digests were; which parts exist is asked
//! of the server (ListParts) on every resume, and a part whose ETag is not the local MD5 is
//! sent again.

mod adapt;
pub mod checksum;
pub mod identity;
pub mod plan;
pub mod progress;
pub mod retry;
pub mod state;
mod transfer;

mod download;
mod upload;

use std::path::{Path, PathBuf};
use std::time::Duration;

use anyhow::{Context as _, bail};
use aws_config::meta::credentials::CredentialsProviderChain;
use aws_config::meta::region::RegionProviderChain;
use aws_config::profile::{ProfileFileCredentialsProvider, ProfileFileRegionProvider};
use aws_config::provider_config::ProviderConfig;
use aws_sdk_s3::Client;
use aws_sdk_s3::config::timeout::TimeoutConfig;
use aws_sdk_s3::config::{Region, RequestChecksumCalculation, ResponseChecksumValidation};
use aws_smithy_http_client::tls;
use clap::Args;
use tokio_util::sync::CancellationToken;

use self::checksum::Algorithm;
use self::plan::{CONCURRENCY_DEFAULT, Limits, parse_bytes};
use self::state::{Direction, StateDir};

/// The region taken when neither the flags, the environment nor the profile name one.
const REGION_DEFAULT: &str = "us-east-1";
/// How long a connection may take to open.
const CONNECT_TIMEOUT: Duration = Duration::from_secs(10);
/// The exit status after SIGINT (128 + 2, as shells report it).
const EXIT_INTERRUPTED: i32 = 130;

/// `tessera cp`.
#[derive(Debug, Clone, Args)]
pub struct CpArgs {
    /// What to copy: a local file or s3://BUCKET/KEY.
    #[arg(value_name = "SOURCE", required_unless_present = "list_pending")]
    pub source: Option<String>,
    /// Where to: s3://BUCKET/KEY (or s3://BUCKET/PREFIX/ to keep the file's name) or a local
    /// path (a directory keeps the key's last segment).
    #[arg(value_name = "DEST", required_unless_present = "list_pending")]
    pub dest: Option<String>,
    /// The S3 endpoint, as the aws cli takes it (also AWS_ENDPOINT_URL).
    #[arg(long, env = "AWS_ENDPOINT_URL")]
    pub endpoint_url: Option<String>,
    /// The region (else AWS_REGION, AWS_DEFAULT_REGION, the profile, us-east-1).
    #[arg(long)]
    pub region: Option<String>,
    /// The profile of ~/.aws/credentials and ~/.aws/config (also AWS_PROFILE).
    #[arg(long, env = "AWS_PROFILE")]
    pub profile: Option<String>,
    /// Parts in flight at most.
    #[arg(long, default_value_t = CONCURRENCY_DEFAULT,
          value_parser = clap::value_parser!(u32).range(1..=1024))]
    pub concurrency: u32,
    /// Part size × concurrency never exceeds this (e.g. 256MiB).
    #[arg(long, default_value = "256MiB", value_parser = parse_bytes)]
    pub max_memory: u64,
    /// The part size wanted (raised if the file would need more than 10,000 parts).
    #[arg(long, value_parser = parse_bytes)]
    pub part_size: Option<u64>,
    /// The checksum every part carries besides Content-MD5.
    #[arg(long, value_enum, default_value_t = Algorithm::Crc32c)]
    pub checksum_algorithm: Algorithm,
    /// Where state files of unfinished transfers live (default: ~/.cache/tessera/cp).
    #[arg(long, env = "TESSERA_CP_STATE_DIR")]
    pub state_dir: Option<PathBuf>,
    /// Start over when the state of an earlier run cannot be resumed (source changed, upload
    /// gone, state file damaged); an upload still on the server is aborted first.
    #[arg(long)]
    pub restart: bool,
    /// Abort the unfinished transfer of SOURCE to DEST (on the server too) and forget it.
    #[arg(long, conflicts_with = "restart")]
    pub abort: bool,
    /// List the unfinished transfers that running the same command again would resume.
    #[arg(long, conflicts_with_all = ["restart", "abort"])]
    pub list_pending: bool,
    /// No progress output.
    #[arg(long, short)]
    pub quiet: bool,
    /// The smallest part the server takes: S3's 5 MiB, unless the server allows smaller ones
    /// (`tessera serve --min-part-size`, as its tests run it).
    #[arg(long, default_value = "5MiB", value_parser = parse_bytes)]
    pub min_part_size: u64,
}

impl CpArgs {
    fn limits(&self) -> Limits {
        Limits {
            part_bytes_min: self.min_part_size,
            part_bytes_wanted: self.part_size,
            memory_bytes_max: self.max_memory,
            concurrency_max: self.concurrency,
        }
    }
}

/// An `s3://BUCKET/KEY` argument.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct S3Url {
    /// The bucket.
    pub bucket: String,
    /// The key (may be empty or end in `/`: a prefix).
    pub key: String,
}

impl S3Url {
    /// Parses `s3://BUCKET/KEY`; None if the text is not an s3:// URL.
    pub fn parse(text: &str) -> Option<Result<S3Url, String>> {
        let rest = text.strip_prefix("s3://")?;
        let (bucket, key) = rest.split_once('/').unwrap_or((rest, ""));
        if bucket.is_empty() {
            return Some(Err(format!("{text}: no bucket")));
        }
        Some(Ok(S3Url { bucket: bucket.to_owned(), key: key.to_owned() }))
    }
}

impl std::fmt::Display for S3Url {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "s3://{}/{}", self.bucket, self.key)
    }
}

/// SIGINT stopped the transfer; its state is saved.
#[derive(Debug)]
pub struct Interrupted;

impl std::fmt::Display for Interrupted {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("interrupted")
    }
}

impl std::error::Error for Interrupted {}

/// What every transfer needs.
pub(crate) struct Ctx {
    pub client: Client,
    /// The endpoint as state files record it.
    pub endpoint: String,
    pub args: CpArgs,
    pub state_dir: StateDir,
    /// Cancelled by the first SIGINT or SIGTERM: the parts stop, the state is saved.
    pub stop: CancellationToken,
}

/// Runs `tessera cp`.
pub fn run(args: CpArgs) -> anyhow::Result<()> {
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .context("starting the runtime")?;
    let stop = CancellationToken::new();
    runtime.spawn(watch_signals(stop.clone()));
    match runtime.block_on(run_async(args, stop)) {
        Err(e) if e.downcast_ref::<Interrupted>().is_some() => {
            eprintln!("{e:#}");
            std::process::exit(EXIT_INTERRUPTED);
        }
        other => other,
    }
}

/// The first SIGINT or SIGTERM cancels `stop`: parts in flight are dropped and the state file
/// is written, so that the same command resumes. Outside the parts (creating, completing,
/// checking) a transfer finishes its step; a second signal exits at once, which is safe at any
/// point because the state file is only ever replaced whole.
async fn watch_signals(stop: CancellationToken) {
    use tokio::signal::unix::{SignalKind, signal};
    let (Ok(mut int), Ok(mut term)) =
        (signal(SignalKind::interrupt()), signal(SignalKind::terminate()))
    else {
        eprintln!("warning: cannot watch SIGINT and SIGTERM; they stop tessera cp at once");
        return;
    };
    tokio::select! {
        _ = int.recv() => {}
        _ = term.recv() => {}
    }
    eprintln!("interrupted: saving the state (a second signal stops at once)");
    stop.cancel();
    tokio::select! {
        _ = int.recv() => {}
        _ = term.recv() => {}
    }
    std::process::exit(EXIT_INTERRUPTED);
}

async fn run_async(args: CpArgs, stop: CancellationToken) -> anyhow::Result<()> {
    let state_dir = StateDir::locate(args.state_dir.clone());
    if args.list_pending {
        return list_pending(&state_dir);
    }
    let (Some(source), Some(dest)) = (args.source.clone(), args.dest.clone()) else {
        bail!("tessera cp needs SOURCE and DEST");
    };
    let (client, endpoint) = client(&args).await?;
    let ctx = Ctx { client, endpoint, args, state_dir, stop };
    match (S3Url::parse(&source), S3Url::parse(&dest)) {
        (None, Some(to)) => {
            let mut to = to.map_err(anyhow::Error::msg)?;
            let local = PathBuf::from(&source);
            if to.key.is_empty() || to.key.ends_with('/') {
                let name =
                    local.file_name().with_context(|| format!("{source} has no file name"))?;
                to.key.push_str(&name.to_string_lossy());
            }
            upload::run(&ctx, &local, &to).await
        }
        (Some(from), None) => {
            let from = from.map_err(anyhow::Error::msg)?;
            if from.key.is_empty() || from.key.ends_with('/') {
                bail!("{from} names no object");
            }
            let mut local = PathBuf::from(&dest);
            if local.is_dir() || dest.ends_with('/') {
                let name = from.key.rsplit('/').next().unwrap_or(&from.key);
                local = local.join(name);
            }
            download::run(&ctx, &from, &local).await
        }
        (Some(_), Some(_)) => {
            bail!("copying from s3:// to s3:// is not supported; one side is a local file")
        }
        (None, None) => bail!("one of SOURCE and DEST must be s3://BUCKET/KEY"),
    }
}

/// A client for the endpoint, region and credentials the aws cli would use: flags, then the
/// environment, then the profile. The instance metadata service is not asked unless a profile
/// names it (`credential_source`): no network beyond the endpoint by default. Retries are ours
/// (`retry.rs`), and so are checksums.
async fn client(args: &CpArgs) -> anyhow::Result<(Client, String)> {
    // rustls with ring for https:// endpoints (AWS), trusting the system's certificates
    // (`SSL_CERT_FILE` and `SSL_CERT_DIR` are honoured); http:// goes without TLS.
    let http = aws_smithy_http_client::Builder::new()
        .tls_provider(tls::Provider::Rustls(tls::rustls_provider::CryptoMode::Ring))
        .build_https();
    // The profile providers get our HTTP client too (a profile may assume a role through
    // STS); without one they panic on first use.
    let provider_config = ProviderConfig::without_region().with_http_client(http.clone());
    let profile_creds = {
        let mut b = ProfileFileCredentialsProvider::builder().configure(&provider_config);
        if let Some(p) = &args.profile {
            b = b.profile_name(p);
        }
        b.build()
    };
    let env_creds = aws_config::environment::EnvironmentVariableCredentialsProvider::new();
    // A named profile wins over the environment, as in the aws cli.
    let credentials = if args.profile.is_some() {
        CredentialsProviderChain::first_try("Profile", profile_creds)
            .or_else("Environment", env_creds)
    } else {
        CredentialsProviderChain::first_try("Environment", env_creds)
            .or_else("Profile", profile_creds)
    };
    let profile_region = {
        let mut b = ProfileFileRegionProvider::builder().configure(&provider_config);
        if let Some(p) = &args.profile {
            b = b.profile_name(p);
        }
        b.build()
    };
    let region = RegionProviderChain::first_try(args.region.clone().map(Region::new))
        .or_else(aws_config::environment::EnvironmentVariableRegionProvider::new())
        .or_else(profile_region)
        .or_else(Region::new(REGION_DEFAULT));
    let mut loader = aws_config::defaults(aws_config::BehaviorVersion::latest())
        .http_client(http)
        .credentials_provider(credentials)
        .region(region);
    if let Some(p) = &args.profile {
        loader = loader.profile_name(p);
    }
    if let Some(url) = &args.endpoint_url {
        loader = loader.endpoint_url(url);
    }
    let sdk = loader.load().await;
    let region = sdk.region().map(ToString::to_string).unwrap_or_else(|| REGION_DEFAULT.into());
    let endpoint = match sdk.endpoint_url() {
        Some(url) => url.trim_end_matches('/').to_owned(),
        None => format!("aws:{region}"),
    };
    // Path-style addressing (`endpoint/bucket/key`) for an endpoint of one's own, as the aws
    // cli uses for one: an address such as 127.0.0.1 has no bucket subdomains. AWS itself
    // gets virtual-hosted style (`bucket.s3.region.amazonaws.com`), as it prefers.
    let path_style = sdk.endpoint_url().is_some();
    let config = aws_sdk_s3::config::Builder::from(&sdk)
        .force_path_style(path_style)
        .retry_config(aws_sdk_s3::config::retry::RetryConfig::disabled())
        .request_checksum_calculation(RequestChecksumCalculation::WhenRequired)
        .response_checksum_validation(ResponseChecksumValidation::WhenRequired)
        .timeout_config(TimeoutConfig::builder().connect_timeout(CONNECT_TIMEOUT).build())
        .build();
    Ok((Client::from_conf(config), endpoint))
}

/// `--list-pending`: the state files, one line each.
fn list_pending(dir: &StateDir) -> anyhow::Result<()> {
    let entries = dir.list()?;
    if entries.is_empty() {
        println!("no unfinished transfers in {}", dir.path.display());
    }
    for (path, state) in entries {
        match state {
            Ok(s) => {
                let url = S3Url { bucket: s.bucket.clone(), key: s.key.clone() };
                let (from, to) = match s.direction {
                    Direction::Upload => (s.local_path.clone(), url.to_string()),
                    Direction::Download => (url.to_string(), s.local_path.clone()),
                };
                let done: u64 = s.parts.values().map(|p| p.size_bytes).sum();
                let id = if s.upload_id.is_empty() {
                    String::new()
                } else {
                    format!(" upload {}", s.upload_id)
                };
                println!(
                    "{} {from} -> {to} at {}: {} parts, {} of {} bytes acknowledged{id} ({})",
                    s.direction.word(),
                    s.endpoint,
                    s.parts.len(),
                    done,
                    s.source.size_bytes,
                    path.display()
                );
            }
            Err(e) => println!("damaged: {e}"),
        }
    }
    Ok(())
}

/// The absolute form of a local path (without resolving links), as state files record it.
pub(crate) fn absolute(path: &Path) -> anyhow::Result<PathBuf> {
    std::path::absolute(path)
        .with_context(|| format!("{}: cannot make the path absolute", path.display()))
}

/// Milliseconds since the epoch.
pub(crate) fn now_ms() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| u64::try_from(d.as_millis()).unwrap_or(u64::MAX))
        .unwrap_or(0)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn s3_urls_parse_with_and_without_keys() {
        let u = |b: &str, k: &str| Some(Ok(S3Url { bucket: b.into(), key: k.into() }));
        assert_eq!(S3Url::parse("s3://b/k/x"), u("b", "k/x"));
        assert_eq!(S3Url::parse("s3://b"), u("b", ""));
        assert_eq!(S3Url::parse("s3://b/"), u("b", ""));
        assert_eq!(S3Url::parse("./file"), None);
        assert!(matches!(S3Url::parse("s3:///k"), Some(Err(_))));
    }
}
