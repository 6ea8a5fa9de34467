//! The journal's errors, and its reports of damage found on disk.

use std::path::PathBuf;

/// What is wrong with some bytes of a journal file.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
pub enum Damage {
    /// A CRC does not match.
    #[error("{what}: CRC {stored:#010x} stored, {computed:#010x} computed")]
    Crc {
        /// Which bytes.
        what: &'static str,
        /// The CRC the file holds.
        stored: u32,
        /// The CRC of the bytes.
        computed: u32,
    },
    /// A field holds a value the format does not allow.
    #[error("bad {field}: {found}")]
    Field {
        /// Which field.
        field: &'static str,
        /// What it holds.
        found: String,
    },
    /// A file of a version this build does not read.
    #[error("unsupported format version {found}")]
    Version {
        /// The version the file declares.
        found: u32,
    },
    /// Bytes that do not decode.
    #[error("{what} does not decode: {reason}")]
    Decode {
        /// Which bytes.
        what: &'static str,
        /// Why.
        reason: String,
    },
    /// The file ends inside a block.
    #[error("the file ends inside a block (needs {needed} bytes, has {len})")]
    Truncated {
        /// Bytes the block needs from the file's start.
        needed: u64,
        /// The file's length.
        len: u64,
    },
    /// The file could not be read there.
    #[error("read failed: {0}")]
    Read(String),
}

/// Damage found in a journal file: which file, where, and what. Queries skip what it makes
/// unreadable and carry it as a warning; it never stops the engine.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
#[error("{}: offset {offset}: {damage}", path.display())]
pub struct Corruption {
    /// The file.
    pub path: PathBuf,
    /// Where in it.
    pub offset: u64,
    /// What.
    pub damage: Damage,
}

/// A failure of the journal.
#[derive(Debug, thiserror::Error)]
pub enum JournalError {
    /// A file operation failed.
    #[error("{}: {op}: {source}", path.display())]
    Io {
        /// The file or directory.
        path: PathBuf,
        /// The operation.
        op: &'static str,
        /// The error.
        #[source]
        source: std::io::Error,
    },
    /// Entries must be staged in ascending LSN order, after what is already covered.
    #[error("entry at LSN {lsn} staged after LSN {after}: the journal takes ascending LSNs")]
    OutOfOrder {
        /// The entry's LSN.
        lsn: u64,
        /// The LSN it had to exceed.
        after: u64,
    },
    /// A query or option the journal cannot serve.
    #[error("invalid request: {reason}")]
    Invalid {
        /// Why.
        reason: &'static str,
    },
    /// Writing export lines failed.
    #[error("export: {0}")]
    Export(#[source] std::io::Error),
}

impl JournalError {
    pub(crate) fn io(path: impl Into<PathBuf>, op: &'static str, source: std::io::Error) -> Self {
        JournalError::Io { path: path.into(), op, source }
    }
}
