//! A hash map laid out for memory (the resident bytes per live upload are a benchmark figure):
//! the payload index (content address -> entry, 3 per live upload of 3 parts) and the uploads
//! in progress (upload id -> upload) are ones.
//!
//! A `HashMap<K, V>` keeps each pair in a slot of a table whose slot count is a power of two
//! (50–88% full): every empty slot costs a whole pair. Here the pairs sit densely in a vector,
//! and the table's slots hold only a 4-byte position in it, so an empty slot costs 5 bytes
//! (with its control byte). Removal moves the last pair into the hole and repoints that pair's
//! slot. Keys must be prehashed ([`PrehashedHasher`]: random bytes, hashed from eight of them).

use std::hash::Hash;

use hashbrown::HashTable;

use crate::payload::address::PrehashedHasher;

/// A map of prehashed keys whose pairs are stored densely, with the subset of a `HashMap`'s
/// interface the engine uses.
#[derive(Clone)]
pub struct DenseMap<K, V> {
    /// Positions in `pairs`, hashed by the key at that position.
    table: HashTable<u32>,
    /// Every pair, in no particular order.
    pairs: Vec<(K, V)>,
}

impl<K, V> Default for DenseMap<K, V> {
    fn default() -> Self {
        DenseMap { table: HashTable::new(), pairs: Vec::new() }
    }
}

impl<K: std::fmt::Debug, V: std::fmt::Debug> std::fmt::Debug for DenseMap<K, V> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_map().entries(self.pairs.iter().map(|(k, v)| (k, v))).finish()
    }
}

impl<K: Hash + Eq, V: PartialEq> PartialEq for DenseMap<K, V> {
    fn eq(&self, other: &Self) -> bool {
        self.len() == other.len() && self.iter().all(|(k, v)| other.get(k) == Some(v))
    }
}

impl<K: Hash + Eq, V: Eq> Eq for DenseMap<K, V> {}

fn hash<K: Hash>(key: &K) -> u64 {
    use std::hash::{BuildHasher as _, BuildHasherDefault};
    BuildHasherDefault::<PrehashedHasher>::default().hash_one(key)
}

/// A position in `pairs` as the table holds it.
fn slot(position: usize) -> u32 {
    // Invariant: fewer than 2^32 pairs. Each takes at least 69 bytes (a payload's), so 2^32
    // of them would need more than 270 GiB for one map alone.
    #[expect(clippy::expect_used, reason = "a map of 2^32 pairs cannot fit in memory")]
    u32::try_from(position).expect("fewer than 2^32 pairs")
}

impl<K: Hash + Eq, V> DenseMap<K, V> {
    /// A map of these pairs, kept as its storage (no pair moves); a later pair of an equal key
    /// replaces an earlier one's value.
    pub fn from_pairs(pairs: Vec<(K, V)>) -> Self {
        let mut map = DenseMap { table: HashTable::with_capacity(pairs.len()), pairs };
        for position in 0..map.pairs.len() {
            let Some((key, _)) = map.pairs.get(position) else { break };
            if map.position(key).is_some() {
                // A repeated key: build again, pair by pair.
                let pairs = std::mem::take(&mut map.pairs);
                let mut map = DenseMap { table: HashTable::new(), pairs: Vec::new() };
                for (key, value) in pairs {
                    map.insert(key, value);
                }
                return map;
            }
            let hashed = hash(key);
            let pairs = &map.pairs;
            map.table.insert_unique(hashed, slot(position), |&p| {
                pairs.get(p as usize).map_or(0, |(k, _)| hash(k))
            });
        }
        map
    }

    /// A map of these pairs, kept as its storage, whose keys the caller knows to be distinct
    /// (say, strictly ascending): no lookup per pair. Repeated keys would make a map in which
    /// a lookup finds one of them.
    pub fn from_distinct_pairs(pairs: Vec<(K, V)>) -> Self {
        let mut table = HashTable::with_capacity(pairs.len());
        for (position, (key, _)) in pairs.iter().enumerate() {
            table.insert_unique(hash(key), slot(position), |&p| {
                pairs.get(p as usize).map_or(0, |(k, _)| hash(k))
            });
        }
        DenseMap { table, pairs }
    }

    fn position(&self, key: &K) -> Option<usize> {
        let pairs = &self.pairs;
        let found = self
            .table
            .find(hash(key), |&p| pairs.get(p as usize).is_some_and(|(k, _)| k == key))?;
        Some(*found as usize)
    }

    /// The value of `key`.
    pub fn get(&self, key: &K) -> Option<&V> {
        self.get_key_value(key).map(|(_, v)| v)
    }

    /// The stored key equal to `key`, and its value.
    pub fn get_key_value(&self, key: &K) -> Option<(&K, &V)> {
        let position = self.position(key)?;
        self.pairs.get(position).map(|(k, v)| (k, v))
    }

    /// The value of `key`, to change.
    pub fn get_mut(&mut self, key: &K) -> Option<&mut V> {
        let position = self.position(key)?;
        self.pairs.get_mut(position).map(|(_, v)| v)
    }

    /// Whether `key` has a value.
    pub fn contains_key(&self, key: &K) -> bool {
        self.position(key).is_some()
    }

    /// Sets the value of `key`; returns the one it replaces.
    pub fn insert(&mut self, key: K, value: V) -> Option<V> {
        if let Some(old) = self.get_mut(&key) {
            return Some(std::mem::replace(old, value));
        }
        let position = slot(self.pairs.len());
        let hashed = hash(&key);
        self.pairs.push((key, value));
        let pairs = &self.pairs;
        self.table.insert_unique(hashed, position, |&p| {
            pairs.get(p as usize).map_or(0, |(k, _)| hash(k))
        });
        None
    }

    /// Removes the value of `key`.
    pub fn remove(&mut self, key: &K) -> Option<V> {
        let pairs = &self.pairs;
        let found = self
            .table
            .find_entry(hash(key), |&p| pairs.get(p as usize).is_some_and(|(k, _)| k == key))
            .ok()?;
        let position = *found.get() as usize;
        found.remove();
        let last = self.pairs.len().checked_sub(1)?;
        let (_, value) = self.pairs.swap_remove(position);
        if position != last {
            // The last pair moved into the hole: its slot points at its new position.
            let moved = self.pairs.get(position).map(|(k, _)| hash(k)).unwrap_or_default();
            if let Some(p) = self.table.find_mut(moved, |&p| p as usize == last) {
                *p = slot(position);
            }
        }
        Some(value)
    }

    /// Makes room for `additional` more pairs, exactly (a checkpoint's count is final).
    pub fn reserve(&mut self, additional: usize) {
        self.pairs.reserve_exact(additional);
        let pairs = &self.pairs;
        self.table.reserve(additional, |&p| pairs.get(p as usize).map_or(0, |(k, _)| hash(k)));
    }
}

impl<K: Hash + Eq, V> std::ops::Index<&K> for DenseMap<K, V> {
    type Output = V;

    /// The value of `key`; panics if there is none, as a `HashMap`'s index does.
    fn index(&self, key: &K) -> &V {
        #[expect(clippy::expect_used, reason = "indexing a map by a missing key is a bug")]
        self.get(key).expect("a key of the map")
    }
}

impl<K, V> DenseMap<K, V> {
    /// Removes every pair.
    pub fn clear(&mut self) {
        self.table.clear();
        self.pairs.clear();
    }

    /// Pairs.
    pub fn len(&self) -> usize {
        self.pairs.len()
    }

    /// Whether there are none.
    pub fn is_empty(&self) -> bool {
        self.pairs.is_empty()
    }

    /// Every pair, in no particular order.
    pub fn iter(&self) -> impl Iterator<Item = (&K, &V)> {
        self.pairs.iter().map(|(k, v)| (k, v))
    }

    /// Every value, in no particular order.
    pub fn values(&self) -> impl Iterator<Item = &V> {
        self.pairs.iter().map(|(_, v)| v)
    }

    /// Every value, to change, in no particular order.
    pub fn values_mut(&mut self) -> impl Iterator<Item = &mut V> {
        self.pairs.iter_mut().map(|(_, v)| v)
    }
}

#[cfg(test)]
mod tests {
    use std::collections::HashMap;

    use super::*;
    use crate::payload::{ContentAddress, Entry, SegmentId};

    fn entry(n: u64) -> Entry {
        Entry::new(SegmentId(n), n, n, u32::try_from(n).unwrap_or(u32::MAX), 0)
    }

    fn address(n: u64) -> ContentAddress {
        use sha2::Digest as _;
        ContentAddress(sha2::Sha256::digest(n.to_le_bytes()).into())
    }

    /// Inserts and removes in an interleaved order agree with a plain map at every step: a
    /// removal that moves the last pair keeps that pair findable.
    #[test]
    fn the_index_agrees_with_a_map_through_inserts_and_removals() {
        let mut index: DenseMap<ContentAddress, Entry> = DenseMap::default();
        let mut model = HashMap::new();
        for step in 0..3000u64 {
            let n = step.wrapping_mul(0x9E37_79B9) % 500;
            if step % 3 == 2 {
                assert_eq!(index.remove(&address(n)).map(|e| u64::from(e.refs)), model.remove(&n));
            } else {
                let old = index.insert(address(n), entry(step)).map(|e| u64::from(e.refs));
                assert_eq!(old, model.insert(n, step));
            }
            assert_eq!(index.len(), model.len());
        }
        for n in 0..500 {
            assert_eq!(index.get(&address(n)).map(|e| u64::from(e.refs)), model.get(&n).copied());
            assert_eq!(index.contains_key(&address(n)), model.contains_key(&n));
        }
        assert_eq!(index.iter().count(), model.len());
    }
}
