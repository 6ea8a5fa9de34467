//! Retries: which failures are worth another attempt (5xx, throttling, connection errors,
//! timeouts), exponential backoff with jitter between attempts, and a line on stderr for each
//! retry. A 4xx that cannot succeed stops at once with S3's code and message.

use std::fmt;
use std::future::Future;
use std::time::Duration;

use aws_sdk_s3::config::http::HttpResponse;
use aws_sdk_s3::error::{ProvideErrorMetadata, SdkError};

use super::adapt::Adapt;

/// Attempts per request, the first included.
pub const ATTEMPTS_MAX: u32 = 10;
/// The backoff before the second attempt; it doubles up to `BACKOFF_MS_MAX`.
pub const BACKOFF_MS_BASE: u64 = 100;
/// The longest backoff.
pub const BACKOFF_MS_MAX: u64 = 5_000;
/// One attempt's time limit (a stalled connection counts as a failed attempt).
pub const ATTEMPT_TIMEOUT: Duration = Duration::from_secs(300);

/// S3 codes that mean "later", whatever the status.
const RETRY_CODES: [&str; 8] = [
    "SlowDown",
    "Throttling",
    "ThrottlingException",
    "RequestTimeout",
    "RequestTimeoutException",
    "InternalError",
    "ServiceUnavailable",
    // Content-MD5 or a checksum did not match what arrived: bytes were damaged on the way.
    "BadDigest",
];

/// How a request failed.
#[derive(Debug)]
pub enum Failure {
    /// Another attempt may succeed.
    Transient(String),
    /// The server refused the request; another attempt cannot succeed.
    Refused {
        /// The HTTP status.
        status: u16,
        /// S3's error code (empty if the response had none, as a HEAD's has not).
        code: String,
        /// S3's message.
        message: String,
    },
    /// Anything else that stops the transfer (a local error, a bad request).
    Fatal(String),
}

impl Failure {
    /// S3's code if the server refused the request.
    pub fn code(&self) -> Option<&str> {
        match self {
            Failure::Refused { code, .. } => Some(code),
            _ => None,
        }
    }

    /// The HTTP status if the server refused the request.
    pub fn status(&self) -> Option<u16> {
        match self {
            Failure::Refused { status, .. } => Some(*status),
            _ => None,
        }
    }
}

impl fmt::Display for Failure {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Failure::Transient(why) | Failure::Fatal(why) => f.write_str(why),
            Failure::Refused { status, code, message } => {
                write!(f, "{status} {code}")?;
                if !message.is_empty() {
                    write!(f, ": {message}")?;
                }
                Ok(())
            }
        }
    }
}

impl std::error::Error for Failure {}

/// Sorts an SDK error into a [`Failure`].
pub fn classify<E>(error: SdkError<E, HttpResponse>) -> Failure
where
    E: ProvideErrorMetadata + std::error::Error + Send + Sync + 'static,
{
    match &error {
        SdkError::TimeoutError(_) => Failure::Transient("timed out".into()),
        SdkError::DispatchFailure(d) if d.is_user() => Failure::Fatal(chain(&error)),
        SdkError::DispatchFailure(_) | SdkError::ResponseError(_) => {
            let why = chain(&error);
            // A certificate the client does not trust fails the same way every time; the
            // connector reports it as an I/O error, so only its words tell it apart.
            if why.contains("invalid peer certificate") {
                Failure::Fatal(format!(
                    "{why} (SSL_CERT_FILE or SSL_CERT_DIR can name certificates to trust besides \
                     the system's)"
                ))
            } else {
                Failure::Transient(why)
            }
        }
        SdkError::ServiceError(service) => {
            let status = service.raw().status().as_u16();
            let code = error.code().unwrap_or("").to_owned();
            let message = error.message().unwrap_or("").to_owned();
            if status >= 500 || status == 429 || RETRY_CODES.contains(&code.as_str()) {
                Failure::Transient(format!("{status} {code} {message}").trim_end().to_owned())
            } else {
                Failure::Refused { status, code, message }
            }
        }
        _ => Failure::Fatal(chain(&error)),
    }
}

/// An error and its sources in one line (`dispatch failure: io error: ... Connection
/// refused (os error 111)`), each message once: the SDK's own Display of the whole chain
/// (`DisplayErrorContext`) ends in a Debug dump too long for a log line per retry.
pub(crate) fn chain(error: &(dyn std::error::Error + 'static)) -> String {
    let mut text = error.to_string();
    let mut source = error.source();
    // Bounded: error chains are short; a cycle would be a bug in a library.
    for _ in 0..16 {
        let Some(e) = source else { break };
        let message = e.to_string();
        if !text.contains(&message) {
            text.push_str(": ");
            text.push_str(&message);
        }
        source = e.source();
    }
    text
}

/// The wait before attempt `attempt + 1` (attempt counts from 1): `BACKOFF_MS_BASE × 2^(n-1)`
/// capped at `BACKOFF_MS_MAX`, then a random point in its upper half (jitter keeps parts that
/// failed together from retrying together).
pub fn backoff(attempt: u32) -> Duration {
    let exp = BACKOFF_MS_BASE.saturating_mul(1u64 << attempt.saturating_sub(1).min(20));
    let ceiling = exp.min(BACKOFF_MS_MAX);
    let half = ceiling / 2;
    Duration::from_millis(half + random_below(ceiling - half + 1))
}

fn random_below(n: u64) -> u64 {
    let mut bytes = [0u8; 8];
    // Jitter needs no strong randomness; without it the backoff is simply not jittered.
    if getrandom::fill(&mut bytes).is_err() {
        return 0;
    }
    u64::from_le_bytes(bytes) % n.max(1)
}

/// Runs `op` until it succeeds, fails for good, or `ATTEMPTS_MAX` attempts have failed. Each
/// retry prints one line on stderr naming `what` and the failure, and tells `adapt`.
pub async fn retry<T, F, Fut>(what: &str, adapt: Option<&Adapt>, mut op: F) -> Result<T, Failure>
where
    F: FnMut() -> Fut,
    Fut: Future<Output = Result<T, Failure>>,
{
    let mut attempt = 1;
    loop {
        let failure = match tokio::time::timeout(ATTEMPT_TIMEOUT, op()).await {
            Ok(Ok(value)) => return Ok(value),
            Ok(Err(f)) => f,
            Err(_) => Failure::Transient(format!("no answer within {ATTEMPT_TIMEOUT:?}")),
        };
        let Failure::Transient(why) = failure else { return Err(failure) };
        if attempt >= ATTEMPTS_MAX {
            return Err(Failure::Transient(format!(
                "{what}: gave up after {attempt} attempts; the last failed with {why}"
            )));
        }
        if let Some(adapt) = adapt {
            adapt.on_error();
        }
        let wait = backoff(attempt);
        eprintln!(
            "retry: {what}: attempt {attempt} of {ATTEMPTS_MAX} failed ({why}); next in {} ms",
            wait.as_millis()
        );
        tokio::time::sleep(wait).await;
        attempt += 1;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn backoff_doubles_within_its_cap_and_jitters_in_the_upper_half() {
        for attempt in 1..=12 {
            let ceiling = (BACKOFF_MS_BASE << (attempt - 1)).min(BACKOFF_MS_MAX);
            for _ in 0..20 {
                let ms = u64::try_from(backoff(attempt).as_millis()).unwrap_or(u64::MAX);
                assert!(ms >= ceiling / 2 && ms <= ceiling, "attempt {attempt}: {ms}");
            }
        }
    }

    #[tokio::test]
    async fn a_refusal_stops_at_once_and_a_transient_failure_is_retried() {
        let mut calls = 0;
        let r: Result<(), _> = retry("x", None, || {
            calls += 1;
            async {
                Err(Failure::Refused {
                    status: 403,
                    code: "AccessDenied".into(),
                    message: "no".into(),
                })
            }
        })
        .await;
        assert_eq!(calls, 1);
        assert_eq!(r.err().map(|e| e.to_string()).as_deref(), Some("403 AccessDenied: no"));
        let mut calls = 0;
        let r = retry("x", None, || {
            calls += 1;
            let n = calls;
            async move { if n < 3 { Err(Failure::Transient("503".into())) } else { Ok(n) } }
        })
        .await;
        assert_eq!(r.ok(), Some(3));
    }
}
