//! `tessera serve`: opens the engine, listens, serves S3 until SIGINT or SIGTERM, then stops
//! accepting, lets requests in flight finish, checkpoints and closes the engine.

use std::sync::Arc;
use std::time::Duration;

use anyhow::Context;
use hyper_util::rt::{TokioExecutor, TokioIo};
use hyper_util::server::conn::auto;
use hyper_util::server::graceful::GracefulShutdown;
use s3s::auth::SimpleAuth;
use s3s::service::S3ServiceBuilder;
use tessera_engine::{AsyncEngine, Engine, EngineConfig};
use tokio::net::TcpListener;

use crate::admin::{AdminServer, Metered, RecordOperation, RequestMetrics};
use crate::cli::ServeArgs;
use crate::keys::{self, KeyPair, KeySource};
use crate::s3::Gateway;

/// How long shutdown waits for requests in flight before it closes the engine anyway.
const DRAIN_TIMEOUT: Duration = Duration::from_secs(30);
/// Bounds of the expiry task's interval (a tenth of a lifecycle day, within these).
const EXPIRY_INTERVAL_MIN: Duration = Duration::from_millis(100);
const EXPIRY_INTERVAL_MAX: Duration = Duration::from_secs(60);

/// Runs the server until a shutdown signal.
pub fn run(args: ServeArgs) -> anyhow::Result<()> {
    init_tracing();
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .context("starting the tokio runtime")?;
    runtime.block_on(serve(args))
}

fn init_tracing() {
    let filter = tracing_subscriber::EnvFilter::try_from_default_env()
        .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("info"));
    // Logs go to stderr: stdout carries the lines scripts read (keys, listening address).
    let _ =
        tracing_subscriber::fmt().with_env_filter(filter).with_writer(std::io::stderr).try_init();
}

/// The engine's configuration for these flags.
pub fn engine_config(args: &ServeArgs) -> EngineConfig {
    engine_config_with(args.min_part_size, args.lifecycle_day_seconds)
}

/// The engine's configuration for a minimum part size and a lifecycle "day" (the offline
/// commands pass serve's defaults).
pub fn engine_config_with(min_part_bytes: u64, lifecycle_day_seconds: u64) -> EngineConfig {
    EngineConfig {
        min_part_bytes,
        day_ms: lifecycle_day_seconds.saturating_mul(1000),
        ..EngineConfig::default()
    }
}

async fn serve(args: ServeArgs) -> anyhow::Result<()> {
    std::fs::create_dir_all(&args.data)
        .with_context(|| format!("creating the data directory {}", args.data.display()))?;
    let config = engine_config(&args);
    let day_ms = config.day_ms;
    let dir = args.data.clone();
    let engine = tokio::task::spawn_blocking(move || Engine::open(dir, config))
        .await
        .context("opening the engine")?
        .with_context(|| format!("opening the data directory {}", args.data.display()))?;
    let engine = Arc::new(engine);
    // Automatic checkpoints on their own thread: no request waits for a whole checkpoint.
    let checkpointer = Engine::start_checkpointer(&engine).context("starting checkpoints")?;
    let engine = AsyncEngine::new(engine);

    let configured = match (&args.access_key, &args.secret_key) {
        (Some(access_key), Some(secret_key)) => {
            Some(KeyPair { access_key: access_key.clone(), secret_key: secret_key.clone() })
        }
        _ => None,
    };
    let (pair, source) = keys::load_or_generate(&args.data, configured)?;

    let listener = TcpListener::bind(args.listen)
        .await
        .with_context(|| format!("listening on {}", args.listen))?;
    let local = listener.local_addr().context("reading the bound address")?;

    let mut builder = S3ServiceBuilder::new(Gateway::new(
        engine.clone(),
        Duration::from_millis(args.complete_keep_alive_ms),
    ));
    builder.set_auth(SimpleAuth::from_single(pair.access_key.clone(), pair.secret_key.clone()));
    // The access check names each request's operation for the request metrics.
    builder.set_access(RecordOperation);
    let metrics = Arc::new(RequestMetrics::new());
    // Always on the path, admin listener or not: besides counting, it mends keep-alive
    // CompleteMultipartUpload error bodies (`s3::keep_alive`).
    let service = Metered::new(builder.build(), Arc::clone(&metrics));
    let admin = AdminServer::start(args.admin_listen, engine.clone(), metrics).await?;

    let expiry_interval =
        Duration::from_millis(day_ms / 10).clamp(EXPIRY_INTERVAL_MIN, EXPIRY_INTERVAL_MAX);
    let expiry = engine.start_expiry(expiry_interval);

    // Handlers first: a signal right after the address is printed must stop the server
    // gracefully, not kill it by the default action.
    let shutdown = shutdown_signal();
    // These lines are the interface scripts and tests read: keep their shape.
    println!("data directory: {}", args.data.display());
    println!("access key: {}", pair.access_key);
    match source {
        KeySource::Configured => println!("secret key: (as configured)"),
        KeySource::Stored | KeySource::Generated => {
            println!("secret key: {}", pair.secret_key);
            println!("keys file: {}", keys::keys_path(&args.data).display());
        }
    }
    // Before the S3 address: whoever waits for that line can use both.
    if let Some(admin) = &admin {
        println!("admin listening on http://{}", admin.local_addr());
    }
    println!("listening on http://{local}");
    tracing::info!(address = %local, data = %args.data.display(), "serving S3");

    let http = auto::Builder::new(TokioExecutor::new());
    let graceful = GracefulShutdown::new();
    tokio::pin!(shutdown);
    loop {
        tokio::select! {
            accepted = listener.accept() => {
                let (socket, peer) = match accepted {
                    Ok(accepted) => accepted,
                    Err(e) => {
                        // Out of descriptors and the like: back off instead of spinning.
                        tracing::warn!(error = %e, "accept failed");
                        tokio::time::sleep(Duration::from_millis(50)).await;
                        continue;
                    }
                };
                let connection = http.serve_connection(TokioIo::new(socket), service.clone()).into_owned();
                let connection = graceful.watch(connection);
                tokio::spawn(async move {
                    if let Err(e) = connection.await {
                        tracing::debug!(%peer, error = %e, "connection ended with an error");
                    }
                });
            }
            signal = &mut shutdown => {
                tracing::info!(signal, "shutting down: no new connections");
                break;
            }
        }
    }
    drop(listener);
    let admin_stopped = admin.map(AdminServer::shutdown);
    tokio::select! {
        () = graceful.shutdown() => tracing::info!("requests in flight finished"),
        () = tokio::time::sleep(DRAIN_TIMEOUT) => {
            tracing::warn!(timeout = ?DRAIN_TIMEOUT, "requests still in flight; closing anyway");
        }
    }
    drop(service);
    if let Some(stopped) = admin_stopped
        && let Err(e) = stopped.await
    {
        tracing::warn!(error = %e, "the admin listener ended with an error");
    }
    if let Err(e) = expiry.shutdown().await {
        tracing::warn!(error = %e, "expiry task ended with an error");
    }
    // After the checkpoint in progress, if any (joining blocks: off the reactor).
    if tokio::task::spawn_blocking(move || checkpointer.stop()).await.is_err() {
        tracing::warn!("the checkpoint thread could not be stopped");
    }
    match engine.call(|e| e.checkpoint()).await {
        Ok(Some(report)) => tracing::info!(lsn = report.lsn, "checkpoint at shutdown"),
        Ok(None) => tracing::info!("nothing to checkpoint at shutdown"),
        Err(e) => {
            tracing::warn!(error = %e, "checkpoint at shutdown failed; the log keeps everything")
        }
    }
    drop(engine);
    println!("stopped");
    Ok(())
}

/// Resolves with the signal's name at the first SIGINT or SIGTERM. The handlers are installed
/// by this call, not when the future is first polled.
fn shutdown_signal() -> impl std::future::Future<Output = &'static str> {
    use tokio::signal::unix::{SignalKind, signal};
    let handlers = (signal(SignalKind::terminate()), signal(SignalKind::interrupt()));
    async move {
        let (Ok(mut term), Ok(mut int)) = handlers else {
            tracing::error!("cannot listen for SIGTERM/SIGINT; stop the server with SIGKILL");
            return std::future::pending().await;
        };
        tokio::select! {
            _ = term.recv() => "SIGTERM",
            _ = int.recv() => "SIGINT",
        }
    }
}
