//! Checksums sent after the body (`aws-chunked` with `x-amz-trailer`, as the AWS SDKs send
//! streamed uploads): the value is known only once the body has ended, after the engine has
//! started taking it in. So the body is hashed on its way to the engine, and at its end the
//! trailer's value is compared: a mismatch fails the read itself, so the engine never commits
//! the payload, and the gateway answers BadDigest.

use std::io;
use std::pin::Pin;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::task::{Context, Poll};

use base64::Engine as _;
use base64::engine::general_purpose::STANDARD as BASE64;
use s3s::S3Error;
use s3s::TrailingHeaders;
use sha1::Digest as _;
use tessera_engine::EngineError;
use tessera_engine::payload::ChecksumAlgorithm;
use tokio::io::{AsyncRead, ReadBuf};

use crate::s3::body::BodyReader;
use crate::s3::errors::{engine_error, s3_error};

/// A running checksum of one algorithm.
enum Hasher {
    Crc32(crc32fast::Hasher),
    Crc32c(u32),
    Crc64(crc64fast_nvme::Digest),
    Sha1(sha1::Sha1),
    Sha256(sha2::Sha256),
}

impl Hasher {
    fn new(algorithm: ChecksumAlgorithm) -> Hasher {
        match algorithm {
            ChecksumAlgorithm::Crc32 => Hasher::Crc32(crc32fast::Hasher::new()),
            ChecksumAlgorithm::Crc32c => Hasher::Crc32c(0),
            ChecksumAlgorithm::Crc64Nvme => Hasher::Crc64(crc64fast_nvme::Digest::new()),
            ChecksumAlgorithm::Sha1 => Hasher::Sha1(sha1::Sha1::new()),
            ChecksumAlgorithm::Sha256 => Hasher::Sha256(sha2::Sha256::new()),
        }
    }

    fn update(&mut self, bytes: &[u8]) {
        match self {
            Hasher::Crc32(h) => h.update(bytes),
            Hasher::Crc32c(crc) => *crc = crc32c::crc32c_append(*crc, bytes),
            Hasher::Crc64(h) => h.write(bytes),
            Hasher::Sha1(h) => h.update(bytes),
            Hasher::Sha256(h) => h.update(bytes),
        }
    }

    /// The digest as S3 base64-encodes it (CRCs big-endian).
    fn finish(&mut self) -> Vec<u8> {
        match self {
            Hasher::Crc32(h) => h.clone().finalize().to_be_bytes().to_vec(),
            Hasher::Crc32c(crc) => crc.to_be_bytes().to_vec(),
            Hasher::Crc64(h) => h.sum64().to_be_bytes().to_vec(),
            Hasher::Sha1(h) => h.clone().finalize().to_vec(),
            Hasher::Sha256(h) => h.clone().finalize().to_vec(),
        }
    }
}

/// Set when the trailer's checksum did not match (or was announced and never came).
#[derive(Clone, Debug, Default)]
pub(crate) struct Mismatch(Arc<AtomicBool>);

impl Mismatch {
    /// The S3 error for an engine error of a body checked by this flag: BadDigest if the
    /// trailer's checksum failed the body.
    pub fn error(&self, e: EngineError) -> S3Error {
        if self.0.load(Ordering::Acquire) {
            s3_error(
                s3s::S3ErrorCode::BadDigest,
                400,
                "the trailing x-amz-checksum value does not match the body",
            )
        } else {
            engine_error(e)
        }
    }
}

/// The algorithm a request announces in `x-amz-trailer`, if it is a checksum.
pub(crate) fn announced(headers: &http::HeaderMap) -> Option<(ChecksumAlgorithm, String)> {
    let name = headers.get("x-amz-trailer")?.to_str().ok()?.trim().to_ascii_lowercase();
    let algorithm = ChecksumAlgorithm::ALL
        .into_iter()
        .find(|a| name == format!("x-amz-checksum-{}", a.name().to_ascii_lowercase()))?;
    Some((algorithm, name))
}

/// Wraps `body` to check the trailing checksum the request announced, if any.
pub(crate) fn checked(
    body: BodyReader,
    headers: &http::HeaderMap,
    trailers: Option<TrailingHeaders>,
) -> (BodyReader, Mismatch) {
    let mismatch = Mismatch::default();
    let (Some((algorithm, header)), Some(trailers)) = (announced(headers), trailers) else {
        return (body, mismatch);
    };
    let trailer = Box::new(move || {
        trailers
            .read(|h| h.get(header.as_str()).and_then(|v| v.to_str().ok()).map(str::to_owned))
            .flatten()
    });
    (Box::new(TrailerCheck::new(body, algorithm, trailer, mismatch.clone())), mismatch)
}

/// The trailer's value, once the body has ended (`None` if it never came).
type TrailerValue = Box<dyn Fn() -> Option<String> + Send + Sync>;

struct TrailerCheck {
    inner: BodyReader,
    hasher: Hasher,
    trailer: TrailerValue,
    mismatch: Mismatch,
    done: bool,
}

impl TrailerCheck {
    fn new(
        inner: BodyReader,
        algorithm: ChecksumAlgorithm,
        trailer: TrailerValue,
        mismatch: Mismatch,
    ) -> TrailerCheck {
        TrailerCheck { inner, hasher: Hasher::new(algorithm), trailer, mismatch, done: false }
    }

    /// At the body's end: whether the trailer holds the checksum of the bytes read.
    fn matches(&mut self) -> bool {
        let Some(sent) = (self.trailer)() else { return false };
        BASE64.decode(sent.trim()).is_ok_and(|value| value == self.hasher.finish())
    }
}

impl AsyncRead for TrailerCheck {
    fn poll_read(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        let this = &mut *self;
        let before = buf.filled().len();
        match Pin::new(&mut this.inner).poll_read(cx, buf) {
            Poll::Ready(Ok(())) => {
                let new = buf.filled().get(before..).unwrap_or(&[]);
                if !new.is_empty() {
                    this.hasher.update(new);
                } else if buf.remaining() > 0 && !this.done {
                    this.done = true;
                    if !this.matches() {
                        this.mismatch.0.store(true, Ordering::Release);
                        return Poll::Ready(Err(io::Error::new(
                            io::ErrorKind::InvalidData,
                            "the trailing checksum does not match the body",
                        )));
                    }
                }
                Poll::Ready(Ok(()))
            }
            other => other,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use tokio::io::AsyncReadExt;

    async fn read_through(value: Option<&'static str>) -> (io::Result<Vec<u8>>, bool) {
        let body: BodyReader = Box::new(&b"hello world"[..]);
        let mismatch = Mismatch::default();
        let trailer: TrailerValue = Box::new(move || value.map(str::to_owned));
        let mut check =
            TrailerCheck::new(body, ChecksumAlgorithm::Crc32, trailer, mismatch.clone());
        let mut out = Vec::new();
        let result = check.read_to_end(&mut out).await.map(|_| out);
        (result, mismatch.0.load(Ordering::Acquire))
    }

    #[tokio::test]
    async fn a_matching_trailer_lets_the_body_end() {
        let crc = BASE64.encode(crc32fast::hash(b"hello world").to_be_bytes());
        let crc: &'static str = Box::leak(crc.into_boxed_str());
        let (result, mismatch) = read_through(Some(crc)).await;
        assert_eq!(result.unwrap(), b"hello world");
        assert!(!mismatch);
    }

    #[tokio::test]
    async fn a_wrong_or_missing_trailer_fails_the_body() {
        for value in [Some("AAAAAA=="), Some("not base64"), None] {
            let (result, mismatch) = read_through(value).await;
            assert_eq!(result.unwrap_err().kind(), io::ErrorKind::InvalidData);
            assert!(mismatch);
        }
    }

    #[test]
    fn the_announced_algorithm_is_read_from_the_header() {
        let mut headers = http::HeaderMap::new();
        headers.insert("x-amz-trailer", "x-amz-checksum-crc32c".parse().unwrap());
        assert_eq!(announced(&headers).map(|a| a.0), Some(ChecksumAlgorithm::Crc32c));
        headers.insert("x-amz-trailer", "x-amz-meta-other".parse().unwrap());
        assert_eq!(announced(&headers), None);
    }
}
