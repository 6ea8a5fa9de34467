//! The engine as a store of the "mpu-transitions" workload ([`crate::peers::workload`]):
//! [`EngineStore`] and its clients, shared by the benchmarks that `mod engine_store;` it (the
//! engine's and the journal's). No `main` here. The including crate must also declare
//! `mod peers;` at its root.

use std::collections::HashMap;

use tessera::{CompletePart, Completion, Engine, EngineConfig, ObjectMeta, PartUpload};

use crate::peers::workload::{self, Abort, BoxError, Complete, Create, PutPart};
use crate::peers::workload::{TransitionClient, TransitionStore};

/// The actor every benchmark transition is made as.
pub const ACTOR: &str = "bench";

/// An engine under the workload: every client borrows it.
pub struct EngineStore {
    pub engine: std::sync::Arc<Engine>,
}

/// One client of the workload on the engine.
pub struct EngineClient<'s> {
    engine: &'s Engine,
    /// The workload's upload ids, to the engine's.
    ids: HashMap<[u8; 16], String>,
}

impl TransitionStore for EngineStore {
    type Client<'s> = EngineClient<'s>;

    fn client(&self, _index: usize) -> Result<EngineClient<'_>, BoxError> {
        Ok(EngineClient { engine: &self.engine, ids: HashMap::new() })
    }
}

impl EngineClient<'_> {
    fn id(&self, upload: &workload::UploadId) -> Result<&str, BoxError> {
        Ok(self.ids.get(&upload.0).ok_or("unknown upload")?.as_str())
    }
}

impl TransitionClient for EngineClient<'_> {
    fn create(&mut self, t: &Create<'_>) -> Result<(), BoxError> {
        let info = self.engine.create_upload(ACTOR, t.bucket, t.key, ObjectMeta::default())?;
        self.ids.insert(t.upload.0, info.upload_id.to_string());
        Ok(())
    }

    fn put_part(&mut self, t: &PutPart<'_>) -> Result<[u8; 16], BoxError> {
        let request = PartUpload {
            bucket: t.bucket,
            key: t.key,
            upload_id: self.id(t.upload)?,
            part_number: t.part_number,
            content_length: Some(t.payload.len() as u64),
            ..PartUpload::default()
        };
        let stored = self.engine.put_part(ACTOR, &request, &mut &t.payload[..])?;
        Ok(stored.part.etag.md5)
    }

    fn complete(&mut self, t: &Complete<'_>) -> Result<(), BoxError> {
        let parts = t
            .parts
            .iter()
            .map(|p| CompletePart { part_number: p.part_number, etag: p.md5, checksum: None })
            .collect();
        let request = Completion {
            bucket: t.bucket,
            key: t.key,
            upload_id: self.id(t.upload)?,
            parts,
            ..Completion::default()
        };
        let object = self.engine.complete_upload(ACTOR, &request)?;
        if object.etag.to_string() != t.etag {
            return Err(
                format!("ETag {} where the workload computed {}", object.etag, t.etag).into()
            );
        }
        self.ids.remove(&t.upload.0);
        Ok(())
    }

    fn abort(&mut self, t: &Abort<'_>) -> Result<(), BoxError> {
        self.engine.abort_upload(ACTOR, t.bucket, t.key, self.id(t.upload)?, None)?;
        self.ids.remove(&t.upload.0);
        Ok(())
    }
}

/// The engine's configuration for the workload. Its parts are 4 KiB: S3's 5 MiB minimum would
/// refuse their completion (the peers check no sizes either). `TESSERA_BENCH_CHECKPOINT_BYTES`
/// overrides how many log bytes trigger a checkpoint.
pub fn workload_config() -> EngineConfig {
    let mut config = EngineConfig { min_part_bytes: 0, ..EngineConfig::default() };
    if let Some(bytes) =
        std::env::var("TESSERA_BENCH_CHECKPOINT_BYTES").ok().and_then(|s| s.parse().ok())
    {
        config.checkpoint_wal_bytes = bytes;
    }
    config
}
