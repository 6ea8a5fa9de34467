//! Tessera: a durable, write-ahead-logged state layer for S3 multipart uploads.
//!
//! This facade is what applications depend on. For now it re-exports the write-ahead log
//! ([`wal`]); the engine joins it as it is built.

pub use tessera_wal as wal;
pub use tessera_wal::{Lsn, Opened, Record, Wal, WalError, WalOptions};
