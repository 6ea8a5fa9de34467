//! What a client can see of an engine, compared across runs: buckets, uploads (ids replaced by
//! key and initiation time, since ids are random while a manual clock makes times the same in
//! every run), objects with their bytes, and the journal's history. Shared by the crash suites
//! (`engine/tests/engine_crash.rs`, `tests/crash_sim.rs`).

#![allow(dead_code)]

use std::io::Read;

use tessera_engine::journal::Query;
use tessera_engine::{AbortRule, Engine, EngineError, ListObjects, ListParts, ListUploads};

/// Key, initiation time, version, and parts (number, size, ETag).
pub type ObservedUpload = (String, u64, u64, Vec<(u32, u64, String)>);

/// What a client can see, with upload ids replaced by (key, initiation time): ids are random,
/// times come from the manual clock and are the same in every run.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Observed {
    pub buckets: Vec<(String, Vec<AbortRule>)>,
    pub uploads: Vec<ObservedUpload>,
    pub objects: Vec<(String, String, u64, Vec<u8>)>,
    /// The journal's entries as (operation, bucket, key, part number, size, time, error).
    pub history: Vec<HistoryEntry>,
}

/// A journal entry without its upload id (random) and LSN (compaction takes some).
pub type HistoryEntry =
    (String, Option<String>, Option<String>, Option<u32>, Option<u64>, u64, Option<String>);

impl Observed {
    pub fn without_contents(&self) -> Observed {
        let mut copy = self.clone();
        for object in &mut copy.objects {
            object.3.clear();
        }
        copy.history.clear();
        copy
    }
}

pub fn observe(engine: &Engine) -> Result<Observed, EngineError> {
    observe_with(engine, true)
}

pub fn observe_with(engine: &Engine, contents: bool) -> Result<Observed, EngineError> {
    let mut observed =
        Observed { buckets: vec![], uploads: vec![], objects: vec![], history: vec![] };
    for bucket in engine.list_buckets() {
        observed.buckets.push((bucket.name.clone(), bucket.lifecycle.clone()));
        let uploads = engine.list_uploads(&bucket.name, &ListUploads::default())?;
        assert!(!uploads.is_truncated);
        for u in uploads.uploads {
            let id = u.upload_id.to_string();
            let info = engine.get_upload(&bucket.name, &u.key, &id)?;
            let parts = engine.list_parts(&bucket.name, &u.key, &id, &ListParts::default())?;
            let parts = parts
                .parts
                .iter()
                .map(|p| (p.part_number, p.size_bytes, p.etag.to_string()))
                .collect();
            observed.uploads.push((u.key.to_string(), u.initiated_ms, info.version, parts));
        }
        let objects = engine.list_objects(&bucket.name, &ListObjects::default())?;
        for o in objects.objects {
            let info = engine.head_object(&bucket.name, &o.key)?;
            let mut content = Vec::new();
            if contents {
                let (_, mut reader) = engine.open_object(&bucket.name, &o.key, None)?;
                reader
                    .read_to_end(&mut content)
                    .map_err(|e| EngineError::InvalidRequest { reason: e.to_string() })?;
            }
            observed.objects.push((
                o.key.to_string(),
                info.etag.to_string(),
                info.size_bytes,
                content,
            ));
        }
    }
    // The journal reads its blocks from disk: only with the contents.
    if let Some(journal) = engine.journal().filter(|_| contents) {
        let result = journal.query(&Query::default());
        if let Some(warning) = result.warnings.first() {
            return Err(EngineError::InvalidRequest { reason: format!("journal: {warning}") });
        }
        observed.history = result
            .entries
            .iter()
            .map(|e| {
                let op = e.op.name().to_owned();
                (
                    op,
                    e.bucket.clone(),
                    e.key.clone(),
                    e.part_number,
                    e.size_bytes,
                    e.time_ms,
                    e.error.clone(),
                )
            })
            .collect();
    }
    Ok(observed)
}
