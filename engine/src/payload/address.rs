//! Content addresses and where a payload lives.

use std::fmt;
use std::sync::Arc;

/// A payload's content address: the SHA-256 of its bytes.
#[derive(
    Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, serde::Serialize, serde::Deserialize,
)]
pub struct ContentAddress(pub [u8; 32]);

impl ContentAddress {
    /// The address of zero bytes.
    pub fn of_empty() -> ContentAddress {
        use sha2::Digest as _;
        ContentAddress(sha2::Sha256::digest([]).into())
    }
}

impl fmt::Display for ContentAddress {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&hex::encode(self.0))
    }
}

impl fmt::Debug for ContentAddress {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "ContentAddress({self})")
    }
}

/// Identifies a payload segment file (`{id:020}.seg`); ids only grow.
#[derive(
    Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord, serde::Serialize, serde::Deserialize,
)]
pub struct SegmentId(pub u64);

impl fmt::Display for SegmentId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        self.0.fmt(f)
    }
}

/// Where a payload's bytes are.
#[derive(Clone, Debug, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub enum Location {
    /// Zero bytes: stored nowhere.
    Empty,
    /// An entry of a payload segment: its header starts at `offset`, its `len` payload bytes
    /// follow the header.
    Segment {
        /// The segment file.
        segment: SegmentId,
        /// Offset of the entry's header in the segment.
        offset: u64,
        /// Payload bytes.
        len: u64,
    },
    /// Small payloads carried inside the WAL record that references them (the engine decides
    /// when; the store only reads them).
    Inline(Arc<[u8]>),
}

impl Location {
    /// The payload's length.
    pub fn len(&self) -> u64 {
        match self {
            Location::Empty => 0,
            Location::Segment { len, .. } => *len,
            Location::Inline(bytes) => bytes.len() as u64,
        }
    }

    /// Whether the payload is empty.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }
}
