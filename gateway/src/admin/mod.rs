//! The admin listener of `tessera serve`: `/metrics` (the Prometheus text format), `/healthz`
//! and `/events` (the engine's committed transitions as Server-Sent Events), in plain hyper on
//! the server's runtime, on an address of its own (127.0.0.1:9001 unless moved or `off`).
//!
//! It starts before the S3 listener's address is printed and stops with it: on SIGINT or
//! SIGTERM it stops accepting, ends its event streams, and lets requests in flight finish.
//!
//! **Architecture Invariant:** the admin listener only reads. It never makes a transition, so
//! exposing it cannot change what the engine holds.

mod events;
mod health;
mod metrics;
mod requests;

use std::convert::Infallible;
use std::net::SocketAddr;
use std::str::FromStr;
use std::sync::Arc;
use std::time::Duration;

use anyhow::Context;
use bytes::Bytes;
use http::header::{ALLOW, CONTENT_TYPE, HeaderValue};
use http::{Method, Request, Response, StatusCode};
use http_body_util::BodyExt;
use http_body_util::combinators::UnsyncBoxBody;
use hyper::body::Incoming;
use hyper::service::service_fn;
use hyper_util::rt::{TokioExecutor, TokioIo};
use hyper_util::server::conn::auto;
use hyper_util::server::graceful::GracefulShutdown;
use tessera_engine::AsyncEngine;
use tokio::net::TcpListener;
use tokio::sync::watch;
use tokio::task::JoinHandle;

pub use self::requests::{Metered, RecordOperation, RequestMetrics, UNRESOLVED_OPERATION};

/// The admin listener's default address.
pub const ADMIN_LISTEN_DEFAULT: &str = "127.0.0.1:9001";

/// How long a stop waits for admin requests in flight (event streams end at once).
const ADMIN_DRAIN_TIMEOUT: Duration = Duration::from_secs(5);

/// Where the admin listener listens: `--admin-listen ADDR`, or `off`.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum AdminListen {
    /// No admin listener.
    Off,
    /// This address (port 0 picks a free port; the bound address is printed).
    At(SocketAddr),
}

impl FromStr for AdminListen {
    type Err = String;

    fn from_str(s: &str) -> Result<AdminListen, String> {
        if s.eq_ignore_ascii_case("off") {
            return Ok(AdminListen::Off);
        }
        s.parse()
            .map(AdminListen::At)
            .map_err(|e| format!("{s:?} is neither an address (HOST:PORT) nor `off`: {e}"))
    }
}

/// The body of every admin response: whole texts, and the event stream.
type AdminBody = UnsyncBoxBody<Bytes, Infallible>;

/// What every admin request may use.
#[derive(Clone)]
struct AdminState {
    engine: AsyncEngine,
    metrics: Arc<RequestMetrics>,
    /// Turns `true` when the server stops: event streams end.
    stopping: watch::Receiver<bool>,
}

/// A running admin listener.
#[derive(Debug)]
pub struct AdminServer {
    local: SocketAddr,
    stop: watch::Sender<bool>,
    task: JoinHandle<()>,
}

impl AdminServer {
    /// Binds `listen` and serves it on the current runtime (`None` if it is `off`).
    pub async fn start(
        listen: AdminListen,
        engine: AsyncEngine,
        metrics: Arc<RequestMetrics>,
    ) -> anyhow::Result<Option<AdminServer>> {
        let AdminListen::At(addr) = listen else { return Ok(None) };
        let listener = TcpListener::bind(addr).await.with_context(|| {
            format!("admin listener on {addr} (--admin-listen moves it; `off` disables it)")
        })?;
        let local = listener.local_addr().context("reading the admin listener's address")?;
        let (stop, stopping) = watch::channel(false);
        let state = AdminState { engine, metrics, stopping };
        let task = tokio::spawn(serve(listener, state));
        Ok(Some(AdminServer { local, stop, task }))
    }

    /// The bound address.
    pub fn local_addr(&self) -> SocketAddr {
        self.local
    }

    /// Stops accepting and ends the event streams now; the handle resolves once the admin
    /// connections have closed (or after a timeout).
    pub fn shutdown(self) -> JoinHandle<()> {
        // No receiver left means the server task has already ended: nothing to stop.
        let _ = self.stop.send(true);
        self.task
    }
}

async fn serve(listener: TcpListener, state: AdminState) {
    let http = auto::Builder::new(TokioExecutor::new());
    let graceful = GracefulShutdown::new();
    let mut stopping = state.stopping.clone();
    loop {
        tokio::select! {
            accepted = listener.accept() => {
                let (socket, peer) = match accepted {
                    Ok(accepted) => accepted,
                    Err(e) => {
                        // Out of descriptors and the like: back off instead of spinning.
                        tracing::warn!(error = %e, "admin accept failed");
                        tokio::time::sleep(Duration::from_millis(50)).await;
                        continue;
                    }
                };
                let state = state.clone();
                let service = service_fn(move |request| {
                    let state = state.clone();
                    async move { Ok::<_, Infallible>(route(&state, request).await) }
                });
                let connection =
                    graceful.watch(http.serve_connection(TokioIo::new(socket), service).into_owned());
                tokio::spawn(async move {
                    if let Err(e) = connection.await {
                        tracing::debug!(%peer, error = %e, "admin connection ended with an error");
                    }
                });
            }
            () = until_stopped(&mut stopping) => break,
        }
    }
    drop(listener);
    if tokio::time::timeout(ADMIN_DRAIN_TIMEOUT, graceful.shutdown()).await.is_err() {
        tracing::warn!(timeout = ?ADMIN_DRAIN_TIMEOUT, "admin requests still in flight at stop");
    }
}

/// Resolves once the server stops (or is gone: a dropped sender stops everything too).
async fn until_stopped(stopping: &mut watch::Receiver<bool>) {
    // The guard `wait_for` returns must not live across an await (it is not `Send`).
    let _ = stopping.wait_for(|stop| *stop).await.map(drop);
}

async fn route(state: &AdminState, request: Request<Incoming>) -> Response<AdminBody> {
    if request.method() != Method::GET {
        let mut response =
            text(StatusCode::METHOD_NOT_ALLOWED, "the admin listener answers GET only\n");
        response.headers_mut().insert(ALLOW, HeaderValue::from_static("GET"));
        return response;
    }
    match request.uri().path() {
        "/metrics" => metrics::render(&state.engine, &state.metrics),
        "/healthz" => health::check(&state.engine),
        "/events" => events::stream(state, &request).await,
        _ => text(
            StatusCode::NOT_FOUND,
            "not found: the admin listener serves /metrics, /healthz and /events\n",
        ),
    }
}

/// A whole response of `content_type`.
fn whole(
    status: StatusCode,
    content_type: &'static str,
    body: impl Into<Bytes>,
) -> Response<AdminBody> {
    let body = http_body_util::Full::new(body.into()).boxed_unsync();
    let mut response = Response::new(body);
    *response.status_mut() = status;
    response.headers_mut().insert(CONTENT_TYPE, HeaderValue::from_static(content_type));
    response
}

/// A plain-text response.
fn text(status: StatusCode, body: impl Into<Bytes>) -> Response<AdminBody> {
    whole(status, "text/plain; charset=utf-8", body)
}
