//! The S3 requests' figures: a service around s3s's that counts each request by operation and
//! HTTP status and times it, and the access hook through which s3s names the operation.
//!
//! The operation's name is s3s's own (the name of the `S3` method it routes to, such as
//! `CreateMultipartUpload` or `UploadPartCopy`): s3s hands it to [`S3Access::check`] once it
//! has resolved the route, and [`RecordOperation`] leaves it in the request's extensions,
//! where [`Metered`] finds it when the response is ready. A request refused before s3s
//! resolved an operation (a bad signature, a malformed request) counts as
//! [`UNRESOLVED_OPERATION`].

use std::collections::BTreeMap;
use std::future::Future;
use std::pin::Pin;
use std::sync::{Arc, Mutex, OnceLock, PoisonError};
use std::time::{Duration, Instant};

use hyper::body::Incoming;
use s3s::access::{S3Access, S3AccessContext};
use s3s::service::S3Service;
use s3s::{HttpError, HttpResponse, S3Result, s3_error};

use crate::s3::{keep_alive, unread_body};

/// The operation label of requests refused before s3s resolved an operation.
pub const UNRESOLVED_OPERATION: &str = "unknown";

/// The status label of requests that ended without a response (s3s failed to write one).
pub(crate) const NO_RESPONSE_STATUS: &str = "none";

/// Upper bounds (inclusive) of the request-latency histogram's buckets, in microseconds.
pub(crate) const LATENCY_BUCKET_BOUNDS_US: [u64; 16] = [
    500, 1_000, 2_500, 5_000, 10_000, 25_000, 50_000, 100_000, 250_000, 500_000, 1_000_000,
    2_500_000, 5_000_000, 10_000_000, 30_000_000, 60_000_000,
];
#[expect(
    clippy::indexing_slicing,
    reason = "evaluated at compile time: a bad index fails the build"
)]
const _: () = {
    let mut i = 1;
    while i < LATENCY_BUCKET_BOUNDS_US.len() {
        assert!(LATENCY_BUCKET_BOUNDS_US[i - 1] < LATENCY_BUCKET_BOUNDS_US[i]);
        i += 1;
    }
};

/// The figures of one operation.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub(crate) struct OperationFigures {
    /// Requests by status label (the HTTP status, or [`NO_RESPONSE_STATUS`]).
    pub by_status: BTreeMap<String, u64>,
    /// Requests whose latency fell in each bucket (not cumulative); the last slot counts
    /// those above every bound.
    pub latency_buckets: [u64; LATENCY_BUCKET_BOUNDS_US.len() + 1],
    /// Their latencies, summed.
    pub latency_sum: Duration,
    /// Requests timed.
    pub latency_count: u64,
}

/// The S3 requests' figures since the server started, by operation.
#[derive(Debug, Default)]
pub struct RequestMetrics {
    operations: Mutex<BTreeMap<String, OperationFigures>>,
}

impl RequestMetrics {
    /// No requests yet.
    pub fn new() -> RequestMetrics {
        RequestMetrics::default()
    }

    /// Counts one request of `operation` that ended with `status` (`None`: no response)
    /// after `latency`.
    pub fn record(&self, operation: &str, status: Option<u16>, latency: Duration) {
        let status = status.map_or_else(|| NO_RESPONSE_STATUS.to_owned(), |s| s.to_string());
        let bucket = LATENCY_BUCKET_BOUNDS_US
            .iter()
            .position(|&bound_us| latency <= Duration::from_micros(bound_us))
            .unwrap_or(LATENCY_BUCKET_BOUNDS_US.len());
        let mut operations = self.operations.lock().unwrap_or_else(PoisonError::into_inner);
        let figures = match operations.get_mut(operation) {
            Some(figures) => figures,
            None => operations.entry(operation.to_owned()).or_default(),
        };
        *figures.by_status.entry(status).or_default() += 1;
        if let Some(count) = figures.latency_buckets.get_mut(bucket) {
            *count += 1;
        }
        figures.latency_sum = figures.latency_sum.saturating_add(latency);
        figures.latency_count += 1;
    }

    /// A copy of the figures, by operation name.
    pub(crate) fn snapshot(&self) -> BTreeMap<String, OperationFigures> {
        self.operations.lock().unwrap_or_else(PoisonError::into_inner).clone()
    }
}

/// Where [`RecordOperation`] leaves the operation's name for [`Metered`] (a request extension).
#[derive(Clone, Debug, Default)]
struct OperationSlot(Arc<OnceLock<String>>);

/// s3s's access check, which also records the operation's name for the metrics. It keeps s3s's
/// default rule (which a custom check replaces): only signed requests pass.
#[derive(Clone, Copy, Debug, Default)]
pub struct RecordOperation;

#[async_trait::async_trait]
impl S3Access for RecordOperation {
    async fn check(&self, cx: &mut S3AccessContext<'_>) -> S3Result<()> {
        let name = cx.s3_op().name().to_owned();
        if let Some(slot) = cx.extensions_mut().get::<OperationSlot>() {
            // Set once per request: s3s checks access once.
            let _ = slot.0.set(name);
        }
        match cx.credentials() {
            Some(_) => Ok(()),
            None => Err(s3_error!(AccessDenied, "Signature is required")),
        }
    }
}

/// s3s's service, counted and timed: each request by operation and status, its latency up to
/// the response's head (a body streamed after it, such as a GetObject's, is not timed). It also
/// mends a keep-alive CompleteMultipartUpload's body, which needs the operation's name
/// ([`keep_alive::one_declaration`]).
#[derive(Clone, Debug)]
pub struct Metered {
    inner: S3Service,
    metrics: Arc<RequestMetrics>,
}

impl Metered {
    /// Wraps `inner` (built with [`RecordOperation`] as its access check, so that operations
    /// are named) and counts into `metrics`.
    pub fn new(inner: S3Service, metrics: Arc<RequestMetrics>) -> Metered {
        Metered { inner, metrics }
    }
}

type ResponseFuture = Pin<Box<dyn Future<Output = Result<HttpResponse, HttpError>> + Send>>;

impl hyper::service::Service<http::Request<Incoming>> for Metered {
    type Response = HttpResponse;
    type Error = HttpError;
    type Future = ResponseFuture;

    fn call(&self, mut request: http::Request<Incoming>) -> ResponseFuture {
        let started = Instant::now();
        let slot = OperationSlot::default();
        request.extensions_mut().insert(slot.clone());
        let had_body = unread_body::has_body(request.headers());
        let response = hyper::service::Service::call(&self.inner, request);
        let metrics = Arc::clone(&self.metrics);
        Box::pin(async move {
            let result = response.await;
            let status = result.as_ref().ok().map(|r| r.status().as_u16());
            let operation = slot.0.get().map_or(UNRESOLVED_OPERATION, String::as_str);
            metrics.record(operation, status, started.elapsed());
            // Here because this is where the operation's name is known.
            result.map(|r| {
                unread_body::close_after_error(had_body, keep_alive::one_declaration(operation, r))
            })
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_latency_counts_in_the_first_bucket_whose_bound_it_does_not_exceed() {
        let metrics = RequestMetrics::new();
        metrics.record("GetObject", Some(200), Duration::from_micros(500));
        metrics.record("GetObject", Some(404), Duration::from_micros(501));
        metrics.record("GetObject", Some(200), Duration::from_secs(61));
        metrics.record("PutObject", None, Duration::ZERO);
        let figures = metrics.snapshot();
        let get = &figures["GetObject"];
        assert_eq!(get.latency_buckets[0], 1);
        assert_eq!(get.latency_buckets[1], 1);
        assert_eq!(get.latency_buckets[LATENCY_BUCKET_BOUNDS_US.len()], 1);
        assert_eq!(get.latency_count, 3);
        assert_eq!(get.by_status["200"], 2);
        assert_eq!(get.by_status["404"], 1);
        assert_eq!(figures["PutObject"].by_status[NO_RESPONSE_STATUS], 1);
    }
}
