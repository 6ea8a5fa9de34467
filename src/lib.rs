//! Tessera: a durable, write-ahead-logged state layer for S3 multipart uploads.
//!
//! This facade is what applications depend on: the engine ([`Engine`]: buckets, multipart
//! uploads, objects, recovery, expiry, subscriptions), and the layers under it ([`engine`]'s
//! payload store, the write-ahead log [`wal`], the history of transitions [`journal`]).
//!
//! ```
//! use std::io::Read;
//! use tessera::{CompletePart, Completion, Engine, EngineConfig, ObjectMeta, PartUpload};
//!
//! # fn main() -> Result<(), Box<dyn std::error::Error>> {
//! # let dir = tempfile::tempdir()?;
//! let config = EngineConfig { min_part_bytes: 1, ..EngineConfig::default() };
//! let engine = Engine::open(dir.path(), config)?; // recovers whatever the directory holds
//! engine.create_bucket("alice", "photos")?;
//! let upload = engine.create_upload("alice", "photos", "cat.jpg", ObjectMeta::default())?;
//! let upload_id = upload.upload_id.to_string();
//! let body = b"meow";
//! let request = PartUpload {
//!     bucket: "photos",
//!     key: "cat.jpg",
//!     upload_id: &upload_id,
//!     part_number: 1,
//!     content_length: Some(body.len() as u64),
//!     ..PartUpload::default()
//! };
//! // Ok means durable: the part survives a crash from here on.
//! let part = engine.put_part("alice", &request, &mut &body[..])?.part;
//! let parts = vec![CompletePart { part_number: 1, etag: part.etag.md5, checksum: None }];
//! let completion =
//!     Completion { bucket: "photos", key: "cat.jpg", upload_id: &upload_id, parts, ..Completion::default() };
//! let object = engine.complete_upload("alice", &completion)?;
//! assert!(object.etag.to_string().ends_with("-1"));
//! let (_, mut reader) = engine.open_object("photos", "cat.jpg", None)?;
//! let mut bytes = Vec::new();
//! reader.read_to_end(&mut bytes)?;
//! assert_eq!(bytes, body);
//!
//! // The history of the upload, from the journal: who did what, when, with which outcome.
//! let query = tessera::journal::Query { upload_id: Some(upload.upload_id.0), ..Default::default() };
//! let history = engine.journal().expect("kept by default").query(&query).entries;
//! let ops: Vec<&str> = history.iter().map(|e| e.op.name()).collect();
//! assert_eq!(ops, ["create_upload", "put_part", "complete"]);
//! # Ok(())
//! # }
//! ```

pub use tessera_engine as engine;
pub use tessera_engine::*;
pub use tessera_wal as wal;
pub use tessera_wal::{Lsn, Wal, WalError, WalOptions};
