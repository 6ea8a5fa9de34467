//! The tokio paths: ingest from an `AsyncRead` and read back into an `AsyncRead`, without
//! blocking the runtime (a single-threaded runtime keeps running its other tasks meanwhile).

#![cfg(feature = "tokio")]
#![allow(
    missing_docs,
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::indexing_slicing,
    clippy::panic,
    clippy::cast_possible_truncation
)]

mod common;

use std::io;
use std::pin::Pin;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::task::{Context, Poll};

use common::payload;
use tessera_engine::payload::{Expected, PayloadError, PayloadOptions, PayloadStore};
use tessera_wal::SimFs;
use tokio::io::{AsyncRead, AsyncReadExt, ReadBuf};

fn store() -> PayloadStore {
    let store =
        PayloadStore::open(SimFs::new(1).shared(), "/p", PayloadOptions::default()).unwrap();
    store.finish_recovery().unwrap();
    store
}

#[tokio::test(flavor = "current_thread")]
async fn an_async_ingest_reads_back_whole_and_by_range() {
    let store = store();
    let bytes = payload(1, 3_000_000);
    let pending = store
        .ingest_async(&mut &bytes[..], Some(bytes.len() as u64), Expected::default())
        .await
        .unwrap();
    let address = pending.commit().address;
    let mut back = Vec::new();
    store.reader_async(address, None).await.unwrap().read_to_end(&mut back).await.unwrap();
    assert_eq!(back, bytes);
    let mut part = Vec::new();
    let mut reader = store.reader_async(address, Some(1_000_000..2_500_000)).await.unwrap();
    assert_eq!(reader.len(), 1_500_000);
    reader.read_to_end(&mut part).await.unwrap();
    assert_eq!(part, bytes[1_000_000..2_500_000]);
}

#[tokio::test(flavor = "current_thread")]
async fn an_async_ingest_does_not_block_the_runtime() {
    let store = store();
    let ticks = Arc::new(AtomicU64::new(0));
    let ticker = {
        let ticks = Arc::clone(&ticks);
        tokio::spawn(async move {
            loop {
                ticks.fetch_add(1, Ordering::Relaxed);
                tokio::task::yield_now().await;
            }
        })
    };
    let bytes = payload(2, 32 << 20);
    let before = ticks.load(Ordering::Relaxed);
    store.ingest_async(&mut &bytes[..], None, Expected::default()).await.unwrap().commit();
    let during = ticks.load(Ordering::Relaxed) - before;
    ticker.abort();
    // 32 chunks were hashed and written on the blocking pool; the one runtime thread kept
    // polling the other task meanwhile.
    assert!(during > 32, "the ticker ran {during} times during the ingest");
}

struct Broken {
    left: usize,
}

impl AsyncRead for Broken {
    fn poll_read(
        mut self: Pin<&mut Self>,
        _: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        if self.left == 0 {
            return Poll::Ready(Err(io::Error::new(io::ErrorKind::ConnectionReset, "reset")));
        }
        let n = self.left.min(buf.remaining()).min(4096);
        buf.put_slice(&vec![9u8; n]);
        self.left -= n;
        Poll::Ready(Ok(()))
    }
}

#[tokio::test(flavor = "current_thread")]
async fn a_failing_async_stream_leaves_nothing_live() {
    let store = store();
    let err = store
        .ingest_async(&mut Broken { left: 100_000 }, None, Expected::default())
        .await
        .unwrap_err();
    assert!(matches!(err, PayloadError::Stream { received: 100_000, .. }), "{err}");
    assert_eq!(store.space().payloads, 0);
}

#[tokio::test(flavor = "current_thread")]
async fn a_damaged_payload_is_an_error_through_the_async_reader() {
    let fs = SimFs::new(3);
    let store = PayloadStore::open(fs.shared(), "/p", PayloadOptions::default()).unwrap();
    store.finish_recovery().unwrap();
    let bytes = payload(3, 10_000);
    let receipt =
        store.ingest_async(&mut &bytes[..], None, Expected::default()).await.unwrap().commit();
    let snapshot = store.snapshot();
    drop(store);
    let file = tessera_wal::Fs::open(
        &fs,
        std::path::Path::new("/p/00000000000000000001.seg"),
        tessera_wal::OpenMode::ReadWrite,
    )
    .unwrap();
    file.write_all_at(b"\xff", 32 + 48 + 100).unwrap();
    let store = PayloadStore::open(fs.shared(), "/p", PayloadOptions::default()).unwrap();
    for (address, location, refs) in &snapshot {
        store.restore_entry(*address, location, *refs).unwrap();
    }
    store.finish_recovery().unwrap();
    let err = store.reader_async(receipt.address, None).await.unwrap_err();
    assert!(matches!(err, PayloadError::Corrupt { offset_bytes: 32, .. }), "{err}");
}
