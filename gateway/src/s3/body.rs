//! Request and response bodies as streams: a request body reaches the engine as an
//! `AsyncRead` read chunk by chunk, and an object's bytes leave as a stream fed from the
//! blocking pool a few chunks ahead. Neither holds a whole part in memory.

use std::io::{self, Read};
use std::pin::Pin;
use std::task::{Context, Poll};

use bytes::Bytes;
use futures_util::{Stream, TryStreamExt};
use s3s::StdError;
use s3s::dto::StreamingBlob;
use s3s::stream::{ByteStream, RemainingLength};
use tessera_engine::ObjectReader;
use tokio::io::AsyncRead;
use tokio::sync::mpsc;
use tokio_util::io::StreamReader;

/// Bytes read from an object per chunk sent.
const READ_CHUNK_BYTES: usize = 1 << 20;
/// Chunks in flight between the reading thread and the connection.
const READ_AHEAD_CHUNKS: usize = 2;

/// A request body as an `AsyncRead` (an absent body reads as empty).
pub(crate) type BodyReader = Box<dyn AsyncRead + Unpin + Send + 'static>;

/// The request body as a reader.
pub(crate) fn request_body(body: Option<StreamingBlob>) -> BodyReader {
    match body {
        Some(blob) => Box::new(StreamReader::new(blob.map_err(io::Error::other))),
        None => Box::new(tokio::io::empty()),
    }
}

/// An object's bytes as a response body of known length.
pub(crate) fn object_body(reader: ObjectReader) -> StreamingBlob {
    let remaining = reader.len();
    let (tx, rx) = mpsc::channel(READ_AHEAD_CHUNKS);
    tokio::task::spawn_blocking(move || pump(reader, &tx));
    StreamingBlob::new(ObjectStream { rx, remaining })
}

/// Reads the object on a blocking thread and sends its chunks until it ends, fails, or the
/// connection goes away.
fn pump(mut reader: ObjectReader, tx: &mpsc::Sender<io::Result<Bytes>>) {
    loop {
        let mut chunk = vec![0u8; READ_CHUNK_BYTES];
        let message = match reader.read(&mut chunk) {
            Ok(0) => return,
            Ok(n) => {
                chunk.truncate(n);
                Ok(Bytes::from(chunk))
            }
            Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
            Err(e) => {
                tracing::error!(error = %e, "object read failed mid-response");
                Err(e)
            }
        };
        let failed = message.is_err();
        if tx.blocking_send(message).is_err() || failed {
            return;
        }
    }
}

struct ObjectStream {
    rx: mpsc::Receiver<io::Result<Bytes>>,
    remaining: u64,
}

impl Stream for ObjectStream {
    type Item = Result<Bytes, StdError>;

    fn poll_next(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Option<Self::Item>> {
        match self.rx.poll_recv(cx) {
            Poll::Ready(Some(Ok(chunk))) => {
                self.remaining = self.remaining.saturating_sub(chunk.len() as u64);
                Poll::Ready(Some(Ok(chunk)))
            }
            Poll::Ready(Some(Err(e))) => Poll::Ready(Some(Err(Box::new(e)))),
            Poll::Ready(None) if self.remaining > 0 => {
                // The reader ended early: a short body must not look complete.
                let e = io::Error::new(io::ErrorKind::UnexpectedEof, "object ended early");
                self.remaining = 0;
                Poll::Ready(Some(Err(Box::new(e))))
            }
            Poll::Ready(None) => Poll::Ready(None),
            Poll::Pending => Poll::Pending,
        }
    }

    fn size_hint(&self) -> (usize, Option<usize>) {
        (0, None)
    }
}

impl ByteStream for ObjectStream {
    fn remaining_length(&self) -> RemainingLength {
        RemainingLength::new_exact(usize::try_from(self.remaining).unwrap_or(usize::MAX))
    }
}
