//! Tessera: a durable, write-ahead-logged state layer for S3 multipart uploads.
//!
//! This facade is what applications depend on. For now it re-exports the write-ahead log
//! ([`wal`]); the engine joins it as it is built.
//!
//! ```
//! use tessera::wal::{Lsn, StdFs, Wal, WalOptions};
//!
//! # fn main() -> Result<(), Box<dyn std::error::Error>> {
//! # let dir = tempfile::tempdir()?;
//! let opened = Wal::open(StdFs::shared(), dir.path(), WalOptions::default())?;
//! // Rebuild state: the newest checkpoint, then every record after it.
//! let from = opened.checkpoint.as_ref().map_or(Lsn::FIRST, |c| c.lsn.next());
//! for record in opened.wal.replay(from)? {
//!     let record = record?; // corruption comes back as an error with file and offset
//!     println!("{}: {} bytes", record.lsn, record.bytes.len());
//! }
//! // Append: Ok means the record survives a crash.
//! let lsn = opened.wal.append_durable(b"transition")?;
//! assert_eq!(lsn, Lsn(1));
//! # Ok(())
//! # }
//! ```

pub use tessera_wal as wal;
pub use tessera_wal::{Lsn, Opened, Record, Wal, WalError, WalOptions};
