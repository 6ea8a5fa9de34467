//! Content addresses and where a payload lives.

use std::fmt;
use std::sync::Arc;

/// A payload's content address: the SHA-256 of its bytes.
#[derive(
    Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, serde::Serialize, serde::Deserialize,
)]
pub struct ContentAddress(pub [u8; 32]);

impl ContentAddress {
    /// The address of `bytes` (held whole in memory; a stream goes through the ingest's
    /// digester instead).
    pub fn of(bytes: &[u8]) -> ContentAddress {
        use sha2::Digest as _;
        ContentAddress(sha2::Sha256::digest(bytes).into())
    }

    /// The address of zero bytes.
    pub fn of_empty() -> ContentAddress {
        ContentAddress::of(&[])
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

/// Hashes a key that is already uniformly random (a SHA-256, the random bytes of an upload id)
/// from eight of its bytes, mixed with a secret drawn once per process (a folded multiply):
/// one multiply instead of SipHash over the whole key. The secret keeps clients from choosing
/// payloads whose addresses crowd one part of a table: which bits of an address pick a slot
/// depends on a value they cannot see.
#[derive(Clone, Copy, Debug, Default)]
pub struct PrehashedHasher {
    word: u64,
}

/// The per-process secret of [`PrehashedHasher`].
fn hash_secret() -> u64 {
    static SECRET: std::sync::OnceLock<u64> = std::sync::OnceLock::new();
    *SECRET.get_or_init(|| {
        use std::hash::BuildHasher as _;
        // std's RandomState is seeded from the OS's random source once per process.
        std::collections::hash_map::RandomState::new().hash_one(0x7E55_E7A0_u64)
    })
}

impl std::hash::Hasher for PrehashedHasher {
    #[allow(clippy::cast_possible_truncation, reason = "the halves of a 128-bit product")]
    fn finish(&self) -> u64 {
        let product = u128::from(self.word ^ hash_secret()) * 0x9E37_79B9_7F4A_7C15_u128;
        // Fold the high half in: every output bit depends on every input bit.
        let [low, high] = [product as u64, (product >> 64) as u64];
        low ^ high
    }

    fn write(&mut self, bytes: &[u8]) {
        // The last eight bytes: an upload id's time prefix comes first, its random bytes last.
        let mut word = [0u8; 8];
        let tail = bytes.len().saturating_sub(8);
        for (w, b) in word.iter_mut().zip(bytes.get(tail..).unwrap_or(&[])) {
            *w = *b;
        }
        self.word ^= u64::from_le_bytes(word);
    }

    fn write_usize(&mut self, _: usize) {
        // The length prefix of a fixed-size key carries nothing.
    }
}

/// A map keyed by prehashed keys: only keys whose `Hash` feeds one byte string whose last
/// eight bytes are uniformly random (a [`ContentAddress`], an upload id). Any other key (a
/// tuple, a string) would hash badly.
pub type PrehashedMap<K, V> =
    std::collections::HashMap<K, V, std::hash::BuildHasherDefault<PrehashedHasher>>;

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
