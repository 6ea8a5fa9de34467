//! The tokio paths (feature `tokio`): ingest from an `AsyncRead` and read into an `AsyncRead`
//! without blocking the runtime. Disk work and hashing run on tokio's blocking pool; the
//! runtime's threads only move chunks.

use std::io::{self, Read};
use std::ops::Range;
use std::pin::Pin;
use std::task::{Context, Poll};

use tokio::io::{AsyncRead, AsyncReadExt, ReadBuf};
use tokio::sync::mpsc;

use crate::payload::address::ContentAddress;
use crate::payload::digest::Expected;
use crate::payload::error::PayloadError;
use crate::payload::ingest::{IngestWriter, Pending};
use crate::payload::read::PayloadReader;
use crate::payload::{INGEST_CHUNK_BYTES, PayloadStore};

/// Chunks a reader keeps in flight ahead of the consumer.
const READ_AHEAD_CHUNKS: usize = 2;

fn joined<T>(result: Result<T, tokio::task::JoinError>) -> Result<T, PayloadError> {
    result.map_err(|e| PayloadError::Background { source: Box::new(e) })
}

impl PayloadStore {
    /// Ingests a payload from `reader` without blocking the runtime: chunks are read on the
    /// runtime, hashed and written on the blocking pool.
    pub async fn ingest_async<R: AsyncRead + Unpin>(
        &self,
        reader: &mut R,
        declared_len: Option<u64>,
        expected: Expected,
    ) -> Result<Pending, PayloadError> {
        let mut writer = self.writer(declared_len, expected);
        let mut buf = vec![0u8; INGEST_CHUNK_BYTES];
        loop {
            let n = match reader.read(&mut buf).await {
                Ok(0) => break,
                Ok(n) => n,
                Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
                Err(source) => {
                    return Err(PayloadError::Stream { received: writer.received(), source });
                }
            };
            let task = tokio::task::spawn_blocking(move || {
                let written = writer.write(buf.get(..n).unwrap_or(&[]));
                (writer, buf, written)
            });
            let (w, b, written): (IngestWriter, Vec<u8>, _) = joined(task.await)?;
            (writer, buf) = (w, b);
            written?;
        }
        joined(tokio::task::spawn_blocking(move || writer.finish()).await)?
    }

    /// A reader over a live payload (or `range` of it) that does not block the runtime: the
    /// first-read check and the disk reads run on the blocking pool, a few chunks ahead.
    pub async fn reader_async(
        &self,
        address: ContentAddress,
        range: Option<Range<u64>>,
    ) -> Result<AsyncPayloadReader, PayloadError> {
        let store = self.clone();
        let opened = tokio::task::spawn_blocking(move || {
            let reader = store.reader(&address)?;
            match range {
                Some(range) => reader.with_range(range),
                None => Ok(reader),
            }
        });
        let reader: PayloadReader = joined(opened.await)??;
        let len = reader.len();
        let (tx, rx) = mpsc::channel(READ_AHEAD_CHUNKS);
        tokio::task::spawn_blocking(move || pump(reader, &tx));
        Ok(AsyncPayloadReader { rx, chunk: Vec::new(), pos: 0, len })
    }
}

/// Reads a payload in chunks and sends them until the receiver goes away.
fn pump(mut reader: PayloadReader, tx: &mpsc::Sender<io::Result<Vec<u8>>>) {
    loop {
        let mut chunk = vec![0u8; INGEST_CHUNK_BYTES];
        let message = match reader.read(&mut chunk) {
            Ok(0) => return,
            Ok(n) => {
                chunk.truncate(n);
                Ok(chunk)
            }
            Err(e) => Err(e),
        };
        let failed = message.is_err();
        if tx.blocking_send(message).is_err() || failed {
            return;
        }
    }
}

/// A payload as a tokio `AsyncRead`.
#[derive(Debug)]
pub struct AsyncPayloadReader {
    rx: mpsc::Receiver<io::Result<Vec<u8>>>,
    chunk: Vec<u8>,
    pos: usize,
    len: u64,
}

impl AsyncPayloadReader {
    /// The bytes it serves in all.
    pub fn len(&self) -> u64 {
        self.len
    }

    /// Whether it serves nothing.
    pub fn is_empty(&self) -> bool {
        self.len == 0
    }
}

impl AsyncRead for AsyncPayloadReader {
    fn poll_read(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        loop {
            let this = &mut *self;
            if let Some(left) = this.chunk.get(this.pos..).filter(|left| !left.is_empty()) {
                let n = left.len().min(buf.remaining());
                buf.put_slice(left.get(..n).unwrap_or(&[]));
                this.pos += n;
                return Poll::Ready(Ok(()));
            }
            match this.rx.poll_recv(cx) {
                Poll::Ready(Some(Ok(chunk))) => {
                    this.chunk = chunk;
                    this.pos = 0;
                }
                Poll::Ready(Some(Err(e))) => return Poll::Ready(Err(e)),
                Poll::Ready(None) => return Poll::Ready(Ok(())),
                Poll::Pending => return Poll::Pending,
            }
        }
    }
}
