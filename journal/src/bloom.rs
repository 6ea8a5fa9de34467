//! The Bloom filter of a block (docs/format.md §12.5): which upload ids and buckets its
//! entries name, so that a query skips blocks that cannot match without reading them.
//!
//! The hash is written down here, not borrowed from `std` (whose hasher may change between
//! Rust releases): FNV-1a over a domain byte and the item, then SplitMix64's finaliser, and
//! `BLOOM_HASHES` probes by double hashing.

/// Probes per item.
pub const BLOOM_HASHES: u64 = 8;
/// Filter bytes per item: 16 bits, for a false-positive rate near 0.06% with 8 probes.
pub const BLOOM_BYTES_PER_ITEM: usize = 2;
/// The smallest filter.
pub const BLOOM_BYTES_MIN: usize = 8;

/// What an item is, so that an upload id and a bucket with the same bytes differ.
#[derive(Clone, Copy, Debug)]
pub enum Domain {
    /// An upload id's 24 bytes.
    UploadId = 1,
    /// A bucket name.
    Bucket = 2,
    /// `bucket 0x00 prefix`, for a key's prefixes that end at a `/` (§12.5).
    Prefix = 3,
}

fn mix(mut z: u64) -> u64 {
    z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
    z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
    z ^ (z >> 31)
}

/// An item's hashes, computed once and tested against any number of filters.
#[derive(Clone, Copy, Debug)]
pub struct Probes {
    first: u64,
    step: u64,
}

impl Probes {
    /// The probes of `item` in `domain`.
    pub fn new(domain: Domain, item: &[u8]) -> Probes {
        let mut hash: u64 = 0xcbf2_9ce4_8422_2325;
        for &byte in std::iter::once(&(domain as u8)).chain(item) {
            hash ^= u64::from(byte);
            hash = hash.wrapping_mul(0x0100_0000_01b3);
        }
        let first = mix(hash);
        Probes { first, step: mix(first ^ 0x9E37_79B9_7F4A_7C15) | 1 }
    }

    /// The bit positions in a filter of `bits` bits.
    fn positions(self, bits: u64) -> impl Iterator<Item = u64> {
        (0..BLOOM_HASHES).map(move |i| self.first.wrapping_add(i.wrapping_mul(self.step)) % bits)
    }

    /// Whether the filter `bits` may hold the item (`false`: it certainly does not). An empty
    /// filter (as damage might leave) holds everything.
    pub fn may_be_in(self, bits: &[u8]) -> bool {
        if bits.is_empty() {
            return true;
        }
        let total = bits.len() as u64 * 8;
        self.positions(total).all(|bit| {
            usize::try_from(bit / 8)
                .ok()
                .and_then(|i| bits.get(i))
                .is_some_and(|byte| byte & (1 << (bit % 8)) != 0)
        })
    }
}

/// A filter being filled.
#[derive(Debug)]
pub struct BloomBuilder {
    bits: Vec<u8>,
}

impl BloomBuilder {
    /// A filter sized for `items` items.
    pub fn new(items: usize) -> BloomBuilder {
        BloomBuilder { bits: vec![0; (items * BLOOM_BYTES_PER_ITEM).max(BLOOM_BYTES_MIN)] }
    }

    /// Adds an item.
    pub fn insert(&mut self, domain: Domain, item: &[u8]) {
        let bits = self.bits.len() as u64 * 8;
        for bit in Probes::new(domain, item).positions(bits) {
            if let Some(byte) = usize::try_from(bit / 8).ok().and_then(|i| self.bits.get_mut(i)) {
                *byte |= 1 << (bit % 8);
            }
        }
    }

    /// The filter's bytes.
    pub fn finish(self) -> Vec<u8> {
        self.bits
    }
}

#[cfg(test)]
/// Whether the filter `bits` may hold the item (see [`Probes::may_be_in`]).
pub fn may_contain(bits: &[u8], domain: Domain, item: &[u8]) -> bool {
    Probes::new(domain, item).may_be_in(bits)
}

/// Most `/`-ending prefixes of one key a block's filter holds: deeper ones are not indexed.
pub const PREFIX_LEVELS_MAX: usize = 8;

/// The prefixes of `key` that end at a `/`, shortest first, at most [`PREFIX_LEVELS_MAX`].
pub fn slash_prefixes(key: &str) -> impl Iterator<Item = &str> {
    key.match_indices('/').take(PREFIX_LEVELS_MAX).filter_map(|(at, _)| key.get(..=at))
}

/// The longest indexed prefix of a query's `prefix`: the filter holds it for every key that
/// starts with `prefix` (`None` if `prefix` has no `/`).
pub fn indexed_prefix(prefix: &str) -> Option<&str> {
    slash_prefixes(prefix).last()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn inserted_items_are_found_and_others_mostly_not() {
        let mut builder = BloomBuilder::new(1000);
        for i in 0u32..1000 {
            builder.insert(Domain::UploadId, &i.to_le_bytes());
        }
        let bits = builder.finish();
        assert!((0u32..1000).all(|i| may_contain(&bits, Domain::UploadId, &i.to_le_bytes())));
        let false_positives =
            (1000u32..101_000).filter(|i| may_contain(&bits, Domain::UploadId, &i.to_le_bytes()));
        // 0.06% expected; allow four times that.
        assert!(false_positives.count() < 250);
        // Domains separate items with the same bytes.
        let in_other_domain =
            (0u32..1000).filter(|i| may_contain(&bits, Domain::Bucket, &i.to_le_bytes())).count();
        assert!(in_other_domain < 10, "{in_other_domain}");
    }

    #[test]
    fn slash_prefixes_are_the_directories_of_a_key() {
        assert_eq!(slash_prefixes("a/b/c").collect::<Vec<_>>(), ["a/", "a/b/"]);
        assert_eq!(slash_prefixes("a/b/").collect::<Vec<_>>(), ["a/", "a/b/"]);
        assert_eq!(slash_prefixes("plain").count(), 0);
        let deep = "x/".repeat(20);
        assert_eq!(slash_prefixes(&deep).count(), PREFIX_LEVELS_MAX);
        assert_eq!(indexed_prefix("logs/2026/ho"), Some("logs/2026/"));
        assert_eq!(indexed_prefix("logs"), None);
        // Any key with the query's prefix has the indexed prefix among its own.
        for key in ["logs/2026/host-1/f", "logs/2026/ho/x", "logs/2026/host"] {
            assert!(slash_prefixes(key).any(|p| p == "logs/2026/"));
        }
    }

    #[test]
    fn the_hash_is_pinned() {
        // docs/format.md §12.5: a change here makes old filters lie.
        let mut builder = BloomBuilder::new(0);
        builder.insert(Domain::Bucket, b"bucket");
        assert_eq!(hex::encode(builder.finish()), "0104104820800002");
    }
}
