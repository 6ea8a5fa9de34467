//! Steps the journal suites take again and again, as user "alice" in bucket "bkt".

#![allow(dead_code)]

use tessera_engine::{CompletePart, Engine, EngineError, PartUpload};

/// Uploads part `number` of upload `id` at `key`; returns what a completion names it by.
pub fn part(
    engine: &Engine,
    key: &str,
    id: &str,
    number: u32,
    content: &[u8],
) -> Result<CompletePart, EngineError> {
    let request = PartUpload {
        bucket: "bkt",
        key,
        upload_id: id,
        part_number: number,
        content_length: Some(content.len() as u64),
        ..PartUpload::default()
    };
    let stored = engine.put_part("alice", &request, &mut &content[..])?;
    Ok(CompletePart { part_number: number, etag: stored.part.etag.md5, checksum: None })
}
