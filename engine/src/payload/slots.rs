//! The payload index: content address -> entry, in slots that never move while they are
//! occupied, so that a part can name its payload by a 4-byte [`PayloadHandle`] where the address
//! takes 32 (the resident bytes per live upload are a benchmark figure, and each upload holds
//! three parts).
//!
//! Laid out like [`DenseMap`](super::DenseMap): the pairs sit in a vector, and a hash table holds
//! 4-byte positions in it. Where a `DenseMap` fills a removal's hole with its last pair, here the
//! hole stays vacant (its stale pair unreachable from the table) until an insert reuses it, so
//! the slot count never exceeds the most pairs held at once.

use std::hash::Hash;

use hashbrown::HashTable;

use crate::payload::address::PrehashedHasher;

/// A slot of the payload index: valid from the insert of its payload until that payload dies
/// (no reference left, committed or pending), and then given to another payload. Whoever holds
/// one must hold a reference on its payload, which keeps it valid.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct PayloadHandle(pub(crate) u32);

impl PayloadHandle {
    /// The handle as a number (for encodings; meaningless to another process).
    pub fn get(self) -> u32 {
        self.0
    }
}

/// A map of prehashed keys whose pairs keep their slots; see the module's documentation.
#[derive(Clone)]
pub struct SlotMap<K, V> {
    /// Occupied slots, hashed by their keys.
    table: HashTable<u32>,
    /// Every slot: occupied or vacant (a vacant one holds a stale pair).
    slots: Vec<(K, V)>,
    /// One bit per slot: set while it is occupied.
    occupied: Vec<u64>,
    /// Vacant slots, reused last-freed first.
    vacant: Vec<u32>,
}

impl<K, V> Default for SlotMap<K, V> {
    fn default() -> Self {
        SlotMap {
            table: HashTable::new(),
            slots: Vec::new(),
            occupied: Vec::new(),
            vacant: Vec::new(),
        }
    }
}

impl<K: std::fmt::Debug, V: std::fmt::Debug> std::fmt::Debug for SlotMap<K, V> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_map().entries(self.iter()).finish()
    }
}

fn hash<K: Hash>(key: &K) -> u64 {
    use std::hash::{BuildHasher as _, BuildHasherDefault};
    BuildHasherDefault::<PrehashedHasher>::default().hash_one(key)
}

/// A slot's number as the table and handles hold it.
fn slot_number(slot: usize) -> u32 {
    // Invariant: fewer than 2^32 slots. Each pair takes at least 56 bytes (a payload's), so
    // 2^32 of them would need more than 220 GiB for the index alone.
    #[expect(clippy::expect_used, reason = "an index of 2^32 slots cannot fit in memory")]
    u32::try_from(slot).expect("fewer than 2^32 slots")
}

/// The occupancy bits of `count` slots, all occupied.
fn occupied_bits(count: usize) -> Vec<u64> {
    let mut occupied = vec![u64::MAX; count / 64];
    if !count.is_multiple_of(64) {
        occupied.push((1 << (count % 64)) - 1);
    }
    occupied
}

impl<K, V> SlotMap<K, V> {
    fn is_occupied(&self, slot: usize) -> bool {
        self.occupied.get(slot / 64).is_some_and(|word| word & (1 << (slot % 64)) != 0)
    }

    fn mark(&mut self, slot: usize, occupied: bool) {
        let word = slot / 64;
        if self.occupied.len() <= word {
            self.occupied.resize(word + 1, 0);
        }
        if let Some(bits) = self.occupied.get_mut(word) {
            if occupied {
                *bits |= 1 << (slot % 64);
            } else {
                *bits &= !(1 << (slot % 64));
            }
        }
    }

    /// Occupied slots.
    pub fn len(&self) -> usize {
        self.slots.len() - self.vacant.len()
    }

    /// Whether none is occupied.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// Slots, occupied or vacant: every handle given out is below this.
    pub fn slot_count(&self) -> usize {
        self.slots.len()
    }

    /// The pair in `handle`'s slot, if it is occupied.
    pub fn at(&self, handle: PayloadHandle) -> Option<(&K, &V)> {
        let slot = handle.0 as usize;
        if !self.is_occupied(slot) {
            return None;
        }
        self.slots.get(slot).map(|(k, v)| (k, v))
    }

    /// The pair in `handle`'s slot, its value to change, if it is occupied.
    pub fn at_mut(&mut self, handle: PayloadHandle) -> Option<(&K, &mut V)> {
        let slot = handle.0 as usize;
        if !self.is_occupied(slot) {
            return None;
        }
        self.slots.get_mut(slot).map(|(k, v)| (&*k, v))
    }

    /// Every occupied slot's pair, in slot order.
    pub fn iter(&self) -> impl Iterator<Item = (&K, &V)> {
        let occupied = self.slots.iter().enumerate().filter(|(slot, _)| self.is_occupied(*slot));
        occupied.map(|(_, (k, v))| (k, v))
    }

    /// Every slot in slot order: its key (stale if vacant), and its value if occupied.
    pub fn all_slots(&self) -> impl Iterator<Item = (&K, Option<&V>)> {
        self.slots.iter().enumerate().map(|(slot, (k, v))| (k, self.is_occupied(slot).then_some(v)))
    }

    /// Every occupied slot's value, in slot order.
    pub fn values(&self) -> impl Iterator<Item = &V> {
        self.iter().map(|(_, v)| v)
    }
}

impl<K: Hash + Eq, V> SlotMap<K, V> {
    /// A map of these pairs, each in the slot of its position, whose keys the caller knows to
    /// be distinct (say, strictly ascending): no lookup per pair. Repeated keys would make a map
    /// in which a lookup finds one of them.
    pub fn from_distinct_pairs(pairs: Vec<(K, V)>) -> Self {
        let mut table = HashTable::with_capacity(pairs.len());
        for (slot, (key, _)) in pairs.iter().enumerate() {
            table.insert_unique(hash(key), slot_number(slot), |&p| {
                pairs.get(p as usize).map_or(0, |(k, _)| hash(k))
            });
        }
        let occupied = occupied_bits(pairs.len());
        SlotMap { table, slots: pairs, occupied, vacant: Vec::new() }
    }

    /// A map of these pairs, each in the slot of its position; `None` if a key repeats.
    pub fn from_pairs_checked(pairs: Vec<(K, V)>) -> Option<Self> {
        let mut table = HashTable::with_capacity(pairs.len());
        for (slot, (key, _)) in pairs.iter().enumerate() {
            let hashed = hash(key);
            let eq = |&p: &u32| pairs.get(p as usize).is_some_and(|(k, _)| k == key);
            if table.find(hashed, eq).is_some() {
                return None;
            }
            table.insert_unique(hashed, slot_number(slot), |&p| {
                pairs.get(p as usize).map_or(0, |(k, _)| hash(k))
            });
        }
        let occupied = occupied_bits(pairs.len());
        Some(SlotMap { table, slots: pairs, occupied, vacant: Vec::new() })
    }

    /// The handle of `key`'s slot.
    pub fn handle(&self, key: &K) -> Option<PayloadHandle> {
        let slots = &self.slots;
        let found = self
            .table
            .find(hash(key), |&p| slots.get(p as usize).is_some_and(|(k, _)| k == key))?;
        Some(PayloadHandle(*found))
    }

    /// The value of `key`.
    pub fn get(&self, key: &K) -> Option<&V> {
        self.handle(key).and_then(|h| self.at(h)).map(|(_, v)| v)
    }

    /// The value of `key`, to change.
    pub fn get_mut(&mut self, key: &K) -> Option<&mut V> {
        let handle = self.handle(key)?;
        self.at_mut(handle).map(|(_, v)| v)
    }

    /// Whether `key` has a value.
    pub fn contains_key(&self, key: &K) -> bool {
        self.handle(key).is_some()
    }

    /// Sets the value of `key`, in the slot it has or a vacant one; returns its handle.
    pub fn insert(&mut self, key: K, value: V) -> PayloadHandle {
        if let Some(handle) = self.handle(&key)
            && let Some((_, old)) = self.at_mut(handle)
        {
            *old = value;
            return handle;
        }
        let hashed = hash(&key);
        let slot = match self.vacant.pop() {
            Some(slot) => {
                if let Some(pair) = self.slots.get_mut(slot as usize) {
                    *pair = (key, value);
                }
                slot
            }
            None => {
                self.slots.push((key, value));
                slot_number(self.slots.len() - 1)
            }
        };
        self.mark(slot as usize, true);
        let slots = &self.slots;
        self.table
            .insert_unique(hashed, slot, |&p| slots.get(p as usize).map_or(0, |(k, _)| hash(k)));
        PayloadHandle(slot)
    }

    /// Vacates `key`'s slot (its handle may be given to another key from now on); returns the
    /// handle it had.
    pub fn remove(&mut self, key: &K) -> Option<PayloadHandle> {
        let slots = &self.slots;
        let found = self
            .table
            .find_entry(hash(key), |&p| slots.get(p as usize).is_some_and(|(k, _)| k == key))
            .ok()?;
        let slot = *found.get();
        found.remove();
        self.mark(slot as usize, false);
        self.vacant.push(slot);
        Some(PayloadHandle(slot))
    }

    /// Makes room for `additional` more pairs, exactly (a checkpoint's count is final).
    pub fn reserve(&mut self, additional: usize) {
        let more = additional.saturating_sub(self.vacant.len());
        self.slots.reserve_exact(more);
        let slots = &self.slots;
        self.table.reserve(additional, |&p| slots.get(p as usize).map_or(0, |(k, _)| hash(k)));
    }
}

#[cfg(test)]
mod tests {
    use std::collections::HashMap;

    use super::*;
    use crate::payload::ContentAddress;

    fn address(n: u64) -> ContentAddress {
        use sha2::Digest as _;
        ContentAddress(sha2::Sha256::digest(n.to_le_bytes()).into())
    }

    /// Inserts and removals in an interleaved order agree with a plain map at every step; a
    /// key keeps its handle for as long as it is in the map, and slots are reused.
    #[test]
    fn slots_agree_with_a_map_and_never_move() {
        let mut index: SlotMap<ContentAddress, u64> = SlotMap::default();
        let mut model: HashMap<u64, (u64, PayloadHandle)> = HashMap::new();
        let mut most = 0;
        for step in 0..3000u64 {
            let n = step.wrapping_mul(0x9E37_79B9) % 500;
            if step % 3 == 2 {
                let removed = index.remove(&address(n));
                assert_eq!(removed, model.remove(&n).map(|(_, h)| h));
            } else {
                let handle = index.insert(address(n), step);
                let kept = model.get(&n).map(|(_, h)| *h);
                assert!(kept.is_none_or(|h| h == handle), "a key moved slots");
                model.insert(n, (step, handle));
            }
            most = most.max(model.len());
            assert_eq!(index.len(), model.len());
            assert!(index.slot_count() <= most, "vacant slots are reused");
        }
        for n in 0..500 {
            let expected = model.get(&n);
            assert_eq!(index.get(&address(n)), expected.map(|(v, _)| v));
            assert_eq!(index.handle(&address(n)), expected.map(|(_, h)| *h));
            if let Some((value, handle)) = expected {
                assert_eq!(index.at(*handle), Some((&address(n), value)));
            }
        }
        assert_eq!(index.iter().count(), model.len());
        let vacant = (0..index.slot_count())
            .filter(|&slot| index.at(PayloadHandle(slot_number(slot))).is_none())
            .count();
        assert_eq!(vacant, index.slot_count() - model.len(), "a vacant slot reads as none");
    }

    #[test]
    fn a_repeated_key_is_refused_when_pairs_are_given_at_once() {
        let pairs = vec![(address(1), 1), (address(2), 2), (address(1), 3)];
        assert!(SlotMap::from_pairs_checked(pairs).is_none());
    }

    #[test]
    fn pairs_given_at_once_take_the_slots_of_their_positions() {
        for (count, checked) in
            [0u64, 1, 63, 64, 65, 200].into_iter().flat_map(|c| [(c, false), (c, true)])
        {
            let pairs: Vec<_> = (0..count).map(|n| (address(n), n)).collect();
            let index = if checked {
                SlotMap::from_pairs_checked(pairs).unwrap()
            } else {
                SlotMap::from_distinct_pairs(pairs)
            };
            assert_eq!(index.len() as u64, count);
            for n in 0..count {
                let handle = PayloadHandle(u32::try_from(n).unwrap());
                assert_eq!(index.handle(&address(n)), Some(handle));
                assert_eq!(index.at(handle), Some((&address(n), &n)));
            }
            assert_eq!(index.at(PayloadHandle(u32::try_from(count).unwrap())), None);
        }
    }
}
