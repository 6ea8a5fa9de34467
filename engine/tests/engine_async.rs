//! The async facade: parts streamed from async readers, expiry in a background task.

#![cfg(feature = "tokio")]
#![allow(
    missing_docs,
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::indexing_slicing,
    clippy::panic,
    clippy::cast_possible_truncation
)]

use std::sync::Arc;
use std::time::Duration;

use tessera_engine::{
    AsyncEngine, CompletePart, Completion, Engine, EngineConfig, EventKind, ManualClock,
    ObjectMeta, OwnedPartUpload,
};

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn async_facade_streams_parts_and_expires_in_the_background() {
    let dir = tempfile::tempdir().unwrap();
    let clock = ManualClock::new(1_000_000);
    let config = EngineConfig {
        clock: Arc::new(clock.clone()),
        upload_ttl_ms: 1_000,
        min_part_bytes: 1,
        ..EngineConfig::default()
    };
    let engine = AsyncEngine::new(Arc::new(Engine::open(dir.path(), config).unwrap()));
    let mut events = engine.engine().subscribe();
    engine.call(|e| e.create_bucket("alice", "bkt")).await.unwrap();
    let upload =
        engine.call(|e| e.create_upload("alice", "bkt", "k", ObjectMeta::default())).await.unwrap();
    // A stored part (beyond the inline limit) and an inline one, from async readers.
    let mut etags = Vec::new();
    for (n, len) in [(1u32, 200_000usize), (2, 10)] {
        let body: Vec<u8> = (0..len).map(|i| (i % 7) as u8).collect();
        let request = OwnedPartUpload {
            bucket: "bkt".into(),
            key: "k".into(),
            upload_id: upload.upload_id.to_string(),
            part_number: n,
            content_length: Some(len as u64),
            ..OwnedPartUpload::default()
        };
        let stored =
            engine.put_part("alice".into(), request, std::io::Cursor::new(body)).await.unwrap();
        assert_eq!(stored.part.size_bytes, len as u64);
        etags.push(CompletePart { part_number: n, etag: stored.part.etag.md5, checksum: None });
    }
    let id = upload.upload_id.to_string();
    let object = engine
        .call(move |e| {
            e.complete_upload(
                "alice",
                &Completion {
                    bucket: "bkt",
                    key: "k",
                    upload_id: &id,
                    parts: etags,
                    ..Completion::default()
                },
            )
        })
        .await
        .unwrap();
    assert_eq!(object.size_bytes, 200_010);
    // Expiry in the background.
    engine.call(|e| e.create_upload("alice", "bkt", "stale", ObjectMeta::default())).await.unwrap();
    let task = engine.start_expiry(Duration::from_millis(10));
    clock.advance_ms(1_001);
    let mut expired = false;
    for _ in 0..500 {
        let event = tokio::time::timeout(Duration::from_secs(5), events.recv_async())
            .await
            .unwrap()
            .unwrap();
        if event.kind == EventKind::Abort(tessera_engine::AbortReason::Expired) {
            assert_eq!(event.key.as_deref(), Some("stale"));
            expired = true;
            break;
        }
    }
    assert!(expired);
    let report = task.shutdown().await.unwrap();
    assert_eq!(report.uploads, 1);
    assert_eq!(engine.engine().stats().live_uploads, 0);
}
