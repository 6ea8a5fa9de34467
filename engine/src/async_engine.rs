//! The async facade (feature `tokio`): every engine call runs on tokio's blocking pool, so an
//! async server never blocks its reactor on an fsync; request bodies stream from an `AsyncRead`;
//! expiry runs on an interval in a background task that stops cleanly.

use std::sync::Arc;
use std::time::Duration;

use tokio::io::AsyncRead;
use tokio::sync::watch;
use tokio::task::JoinHandle;
use tokio_util::io::SyncIoBridge;

use crate::engine::{Engine, ExpiryReport, ObjectPut, PartStored, PartUpload};
use crate::error::EngineError;
use crate::model::{ObjectInfo, ObjectMeta, WriteCondition};
use crate::payload::{Checksum, PayloadError};

/// An engine for async code. Cheap to clone.
#[derive(Clone, Debug)]
pub struct AsyncEngine {
    engine: Arc<Engine>,
}

fn joined<T>(result: Result<T, tokio::task::JoinError>) -> Result<T, EngineError> {
    result.map_err(|e| EngineError::Payload(PayloadError::Background { source: Box::new(e) }))
}

/// A part upload with owned fields (it crosses to the blocking pool).
#[derive(Clone, Debug, Default)]
pub struct OwnedPartUpload {
    /// The upload's bucket.
    pub bucket: String,
    /// Its key.
    pub key: String,
    /// Its id.
    pub upload_id: String,
    /// 1..=10000.
    pub part_number: u32,
    /// `Content-Length`, if known.
    pub content_length: Option<u64>,
    /// `Content-MD5`, if sent.
    pub content_md5: Option<[u8; 16]>,
    /// `x-amz-checksum-*` values sent.
    pub checksums: Vec<Checksum>,
    /// Compare-and-set on the upload's version.
    pub expected_version: Option<u64>,
}

/// An object put with owned fields.
#[derive(Clone, Debug, Default)]
pub struct OwnedObjectPut {
    /// The bucket.
    pub bucket: String,
    /// The key.
    pub key: String,
    /// Metadata.
    pub meta: ObjectMeta,
    /// `Content-Length`, if known.
    pub content_length: Option<u64>,
    /// `Content-MD5`, if sent.
    pub content_md5: Option<[u8; 16]>,
    /// `x-amz-checksum-*` values sent.
    pub checksums: Vec<Checksum>,
    /// `If-Match` / `If-None-Match` on the object it replaces, decided as it applies.
    pub condition: Option<WriteCondition>,
}

impl AsyncEngine {
    /// Wraps an engine.
    pub fn new(engine: Arc<Engine>) -> AsyncEngine {
        AsyncEngine { engine }
    }

    /// The engine, for calls that never block (reads of the state).
    pub fn engine(&self) -> &Arc<Engine> {
        &self.engine
    }

    /// Runs any engine call on the blocking pool: `engine.call(|e| e.create_bucket(..)).await`.
    pub async fn call<T, F>(&self, f: F) -> Result<T, EngineError>
    where
        T: Send + 'static,
        F: FnOnce(&Engine) -> Result<T, EngineError> + Send + 'static,
    {
        let engine = Arc::clone(&self.engine);
        joined(tokio::task::spawn_blocking(move || f(&engine)).await)?
    }

    /// Stores a part streamed from an async body (read on the runtime, hashed, written and
    /// synced on the blocking pool).
    pub async fn put_part<R>(
        &self,
        actor: String,
        request: OwnedPartUpload,
        body: R,
    ) -> Result<PartStored, EngineError>
    where
        R: AsyncRead + Unpin + Send + 'static,
    {
        let handle = tokio::runtime::Handle::current();
        self.call(move |engine| {
            let mut body = SyncIoBridge::new_with_handle(body, handle);
            let borrowed = PartUpload {
                bucket: &request.bucket,
                key: &request.key,
                upload_id: &request.upload_id,
                part_number: request.part_number,
                content_length: request.content_length,
                content_md5: request.content_md5,
                checksums: request.checksums.clone(),
                expected_version: request.expected_version,
            };
            engine.put_part(&actor, &borrowed, &mut body)
        })
        .await
    }

    /// Writes an object streamed from an async body.
    pub async fn put_object<R>(
        &self,
        actor: String,
        request: OwnedObjectPut,
        body: R,
    ) -> Result<ObjectInfo, EngineError>
    where
        R: AsyncRead + Unpin + Send + 'static,
    {
        let handle = tokio::runtime::Handle::current();
        self.call(move |engine| {
            let mut body = SyncIoBridge::new_with_handle(body, handle);
            let borrowed = ObjectPut {
                bucket: &request.bucket,
                key: &request.key,
                meta: request.meta.clone(),
                content_length: request.content_length,
                content_md5: request.content_md5,
                checksums: request.checksums.clone(),
                condition: request.condition,
            };
            engine.put_object(&actor, &borrowed, &mut body)
        })
        .await
    }

    /// Starts the expiry task: `expire_due` every `interval` until [`ExpiryTask::shutdown`].
    pub fn start_expiry(&self, interval: Duration) -> ExpiryTask {
        let (stop, mut stopped) = watch::channel(false);
        let engine = self.clone();
        let task = tokio::spawn(async move {
            let mut ticks = tokio::time::interval(interval);
            ticks.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
            let mut total = ExpiryReport::default();
            loop {
                tokio::select! {
                    _ = ticks.tick() => {}
                    _ = stopped.changed() => break,
                }
                match engine.call(|e| e.expire_due()).await {
                    Ok(report) => {
                        if report.uploads > 0 {
                            tracing::info!(
                                uploads = report.uploads,
                                bytes = report.bytes_freed,
                                "expired uploads"
                            );
                        }
                        total.uploads += report.uploads;
                        total.bytes_freed += report.bytes_freed;
                    }
                    Err(e) => tracing::warn!(error = %e, "expiry failed"),
                }
            }
            total
        });
        ExpiryTask { stop, task }
    }
}

/// The background expiry task.
#[derive(Debug)]
pub struct ExpiryTask {
    stop: watch::Sender<bool>,
    task: JoinHandle<ExpiryReport>,
}

impl ExpiryTask {
    /// Stops the task after the expiry pass in progress, if any; returns what it expired in all.
    pub async fn shutdown(self) -> Result<ExpiryReport, EngineError> {
        // The task holds the receiver until it ends; a send error means it ended already.
        let _ = self.stop.send(true);
        joined(self.task.await)
    }
}
