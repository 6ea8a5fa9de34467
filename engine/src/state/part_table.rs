//! An upload's or an object's parts, packed for memory (the resident bytes per live upload are
//! a benchmark figure, and an upload's parts are most of them).
//!
//! A [`Part`] takes 56 bytes: its `PartData` enum is 16 (a 4-byte handle shares it with a
//! pointer, the inline bytes), and the optional checksum is one more pointer. Here a part is a
//! 40-byte row with no padding: number, kind, payload handle, size, time and MD5. The rare
//! extras (an S3 checksum, an inline payload) live apart, in one boxed list for the whole table
//! that is absent when there are none. Rows are in the order given (ascending part numbers, for
//! uploads and objects alike); a part is handed out as a [`Part`], by value.

use serde::{Deserialize, Deserializer, Serialize, Serializer};

use crate::payload::{Checksum, ContentAddress, PayloadHandle};
use crate::state::{InlinePayload, Part, PartData, addresses};

/// Bytes of a row: number (2), kind (1), reserved (1), payload handle (4), size (8), time (8),
/// MD5 (16), little-endian.
const ROW_BYTES: usize = 40;

type Row = [u8; ROW_BYTES];

const KIND_EMPTY: u8 = 0;
const KIND_STORED: u8 = 1;
const KIND_INLINE: u8 = 2;

/// What a row cannot hold, for the row at `index`.
#[derive(Clone, Debug, PartialEq, Eq)]
struct Extra {
    index: usize,
    checksum: Option<Box<Checksum>>,
    inline: Option<Box<InlinePayload>>,
}

/// Parts in rows of 40 bytes; see the module's documentation.
#[derive(Clone, Default, PartialEq, Eq)]
pub struct PartTable {
    rows: Vec<Row>,
    /// By ascending row index; `None` when no part has an extra.
    #[expect(clippy::box_collection, reason = "one word where a Vec is three: most have none")]
    extras: Option<Box<Vec<Extra>>>,
}

fn row_of(part: &Part) -> (Row, Option<Extra>) {
    let mut row = [0u8; ROW_BYTES];
    row[0..2].copy_from_slice(&part.number.to_le_bytes());
    row[8..16].copy_from_slice(&part.size_bytes.to_le_bytes());
    row[16..24].copy_from_slice(&part.time_ms.to_le_bytes());
    row[24..40].copy_from_slice(&part.md5);
    let (kind, inline) = match &part.data {
        PartData::Empty => (KIND_EMPTY, None),
        PartData::Stored(handle) => {
            row[4..8].copy_from_slice(&handle.get().to_le_bytes());
            (KIND_STORED, None)
        }
        PartData::Inline(payload) => (KIND_INLINE, Some(payload.clone())),
    };
    row[2] = kind;
    let extra = (part.checksum.is_some() || inline.is_some()).then(|| Extra {
        index: 0,
        checksum: part.checksum.clone(),
        inline,
    });
    (row, extra)
}

fn u64_at(row: &Row, at: usize) -> u64 {
    let mut bytes = [0u8; 8];
    if let Some(field) = row.get(at..at + 8) {
        bytes.copy_from_slice(field);
    }
    u64::from_le_bytes(bytes)
}

fn number_of(row: &Row) -> u16 {
    u16::from_le_bytes([row[0], row[1]])
}

fn handle_of(row: &Row) -> PayloadHandle {
    PayloadHandle(u32::from_le_bytes([row[4], row[5], row[6], row[7]]))
}

fn md5_of(row: &Row) -> [u8; 16] {
    let mut md5 = [0u8; 16];
    md5.copy_from_slice(&row[24..40]);
    md5
}

impl PartTable {
    /// A table of these parts, in this order.
    pub fn from_parts(parts: Vec<Part>) -> PartTable {
        let mut table = PartTable { rows: Vec::with_capacity(parts.len()), extras: None };
        for part in &parts {
            table.push(part);
        }
        table
    }

    /// An empty table with room for `count` parts.
    pub fn with_capacity(count: usize) -> PartTable {
        PartTable { rows: Vec::with_capacity(count), extras: None }
    }

    /// How many parts.
    pub fn len(&self) -> usize {
        self.rows.len()
    }

    /// Whether there are none.
    pub fn is_empty(&self) -> bool {
        self.rows.is_empty()
    }

    /// The part at `index`.
    pub fn get(&self, index: usize) -> Option<Part> {
        self.rows.get(index).map(|row| self.decode(index, row))
    }

    /// The part in `row`, at `index`.
    fn decode(&self, index: usize, row: &Row) -> Part {
        let extra = self.extra(index);
        let data = match row[2] {
            KIND_STORED => PartData::Stored(handle_of(row)),
            KIND_INLINE => match extra.and_then(|e| e.inline.clone()) {
                Some(inline) => PartData::Inline(inline),
                // Invariant: an inline row has its payload among the extras.
                None => PartData::Empty,
            },
            _ => PartData::Empty,
        };
        Part {
            number: number_of(row),
            size_bytes: u64_at(row, 8),
            md5: md5_of(row),
            checksum: extra.and_then(|e| e.checksum.clone()),
            time_ms: u64_at(row, 16),
            data,
        }
    }

    /// Every part, in order.
    pub fn iter(&self) -> impl ExactSizeIterator<Item = Part> + '_ {
        self.rows.iter().enumerate().map(|(index, row)| self.decode(index, row))
    }

    /// The part number at `index`.
    pub fn number(&self, index: usize) -> Option<u16> {
        self.rows.get(index).map(number_of)
    }

    /// The sizes of all parts, in order.
    pub fn sizes(&self) -> impl Iterator<Item = u64> + '_ {
        self.rows.iter().map(|row| u64_at(row, 8))
    }

    /// The payload handle of each stored part (each holds one reference on it).
    pub fn stored(&self) -> impl Iterator<Item = PayloadHandle> + '_ {
        self.rows.iter().filter(|row| row[2] == KIND_STORED).map(handle_of)
    }

    /// The payload handle and size of each stored part.
    pub fn stored_sizes(&self) -> impl Iterator<Item = (PayloadHandle, u64)> + '_ {
        let stored = self.rows.iter().filter(|row| row[2] == KIND_STORED);
        stored.map(|row| (handle_of(row), u64_at(row, 8)))
    }

    /// The inline payloads: the address, bytes and MD5 of each inline part, in order.
    pub fn inline_payloads(
        &self,
    ) -> impl Iterator<Item = (ContentAddress, std::sync::Arc<[u8]>, [u8; 16])> + '_ {
        self.rows.iter().enumerate().filter(|(_, row)| row[2] == KIND_INLINE).filter_map(
            |(index, row)| {
                let inline = self.extra(index)?.inline.as_deref()?;
                Some((inline.address, std::sync::Arc::clone(&inline.bytes), md5_of(row)))
            },
        )
    }

    /// Makes each inline part whose address `store` gives a handle for a stored part of that
    /// handle (its bytes are dropped, its checksum kept); returns their addresses, one per part.
    pub fn store_inline(
        &mut self,
        mut store: impl FnMut(&ContentAddress) -> Option<PayloadHandle>,
    ) -> Vec<ContentAddress> {
        let mut stored = Vec::new();
        let Some(extras) = self.extras.as_mut() else { return stored };
        for extra in extras.iter_mut() {
            let Some(row) = self.rows.get_mut(extra.index) else { continue };
            let Some(inline) = extra.inline.as_deref().filter(|_| row[2] == KIND_INLINE) else {
                continue;
            };
            if let Some(handle) = store(&inline.address) {
                row[2] = KIND_STORED;
                row[4..8].copy_from_slice(&handle.get().to_le_bytes());
                stored.push(inline.address);
                extra.inline = None;
            }
        }
        if !stored.is_empty() {
            extras.retain(|e| e.checksum.is_some() || e.inline.is_some());
            if extras.is_empty() {
                self.extras = None;
            }
        }
        stored
    }

    /// Where the part numbered `number` is (`Ok`), or where it would go (`Err`), in a table of
    /// ascending numbers.
    pub fn search(&self, number: u16) -> Result<usize, usize> {
        self.rows.binary_search_by_key(&number, number_of)
    }

    /// The part numbered `number`, in a table of ascending numbers.
    pub fn find(&self, number: u16) -> Option<Part> {
        self.search(number).ok().and_then(|index| self.get(index))
    }

    /// How many leading parts satisfy `before` (the rows must be partitioned by it).
    pub fn partition_point(&self, mut before: impl FnMut(u16) -> bool) -> usize {
        self.rows.partition_point(|row| before(number_of(row)))
    }

    /// Appends `part`.
    pub fn push(&mut self, part: &Part) {
        let index = self.rows.len();
        let (row, extra) = row_of(part);
        self.rows.push(row);
        if let Some(extra) = extra {
            self.extras.get_or_insert_with(Box::default).push(Extra { index, ..extra });
        }
    }

    /// Inserts `part` at `index` (at most the length), moving the rows after it.
    pub fn insert(&mut self, index: usize, part: &Part) {
        let index = index.min(self.rows.len());
        // Most tables hold a few parts: no spare capacity for those.
        if self.rows.len() < 16 {
            self.rows.reserve_exact(1);
        }
        let (row, extra) = row_of(part);
        self.rows.insert(index, row);
        // Extras are sorted by index: only those from the insertion point move.
        let at =
            self.extras.as_ref().map_or(0, |extras| extras.partition_point(|e| e.index < index));
        if let Some(later) = self.extras.as_mut().and_then(|extras| extras.get_mut(at..)) {
            for e in later {
                e.index += 1;
            }
        }
        if let Some(extra) = extra {
            self.extras.get_or_insert_with(Box::default).insert(at, Extra { index, ..extra });
        }
    }

    /// Puts `part` in the place of the part at `index`; returns that part.
    pub fn replace(&mut self, index: usize, part: &Part) -> Option<Part> {
        let old = self.get(index)?;
        let (row, extra) = row_of(part);
        if let Some(slot) = self.rows.get_mut(index) {
            *slot = row;
        }
        self.set_extra(index, extra);
        Some(old)
    }

    /// Takes every part out, in order, leaving the table empty.
    pub fn take(&mut self) -> Vec<Part> {
        let parts = self.iter().collect();
        *self = PartTable::default();
        parts
    }

    fn extra(&self, index: usize) -> Option<&Extra> {
        let extras = self.extras.as_deref()?;
        extras.binary_search_by_key(&index, |e| e.index).ok().and_then(|at| extras.get(at))
    }

    fn set_extra(&mut self, index: usize, extra: Option<Extra>) {
        let extras = self.extras.get_or_insert_with(Box::default);
        match (extras.binary_search_by_key(&index, |e| e.index), extra) {
            (Ok(at), Some(extra)) => {
                if let Some(slot) = extras.get_mut(at) {
                    *slot = Extra { index, ..extra };
                }
            }
            (Ok(at), None) => {
                extras.remove(at);
            }
            (Err(at), Some(extra)) => extras.insert(at, Extra { index, ..extra }),
            (Err(_), None) => {}
        }
        if extras.is_empty() {
            self.extras = None;
        }
    }
}

impl std::fmt::Debug for PartTable {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_list().entries(self.iter()).finish()
    }
}

impl FromIterator<Part> for PartTable {
    fn from_iter<I: IntoIterator<Item = Part>>(parts: I) -> PartTable {
        let mut table = PartTable::default();
        for part in parts {
            table.push(&part);
        }
        table
    }
}

/// On the wire, a sequence of parts, as a `Vec<Part>` is.
impl Serialize for PartTable {
    fn serialize<S: Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        // The positions are looked up once per table, not per part (a thread-local access per
        // part took a fifth of a checkpoint's encoding, which holds the state's lock).
        addresses::with_positions(|positions| {
            serializer.collect_seq(self.iter().map(|part| Listed { part, positions }))
        })
    }
}

/// A part as the derived `Serialize` of `Part` writes it, its payload's position taken from
/// `positions`.
struct Listed<'a> {
    part: Part,
    positions: &'a [u32],
}

impl Serialize for Listed<'_> {
    fn serialize<S: Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        use serde::ser::{Error as _, SerializeStruct as _};
        let Part { number, size_bytes, md5, checksum, time_ms, data } = &self.part;
        let mut fields = serializer.serialize_struct("Part", 6)?;
        fields.serialize_field("number", number)?;
        fields.serialize_field("size_bytes", size_bytes)?;
        fields.serialize_field("md5", md5)?;
        fields.serialize_field("checksum", checksum)?;
        fields.serialize_field("time_ms", time_ms)?;
        let data = match data {
            PartData::Stored(handle) => {
                let position = addresses::listed(self.positions, *handle).ok_or_else(|| {
                    S::Error::custom(format!("payload handle {} is not listed", handle.get()))
                })?;
                ListedData::Stored(position)
            }
            PartData::Empty => ListedData::Empty,
            PartData::Inline(inline) => ListedData::Inline(inline),
        };
        fields.serialize_field("data", &data)?;
        fields.end()
    }
}

/// `PartData` as its derived `Serialize` writes it, a stored payload by its position.
#[derive(Serialize)]
#[serde(rename = "PartData")]
enum ListedData<'a> {
    Empty,
    Stored(u32),
    Inline(&'a InlinePayload),
}

impl<'de> Deserialize<'de> for PartTable {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<PartTable, D::Error> {
        Vec::<Part>::deserialize(deserializer).map(PartTable::from_parts)
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used, clippy::indexing_slicing)]

    use std::sync::Arc;

    use proptest::prelude::*;

    use super::*;
    use crate::payload::ChecksumAlgorithm;
    use crate::state::addresses;

    /// Handles the strategies give out are below this.
    const SLOTS: u32 = 16;

    /// The handle the tests give the inline payload at `address`, once stored.
    fn handle_for(address: &ContentAddress) -> PayloadHandle {
        PayloadHandle(u32::from(address.0[1]) % SLOTS)
    }

    fn part() -> impl Strategy<Value = Part> {
        let data = prop_oneof![
            Just(PartData::Empty),
            (0..SLOTS).prop_map(|n| PartData::Stored(PayloadHandle(n))),
            (any::<[u8; 32]>(), proptest::collection::vec(any::<u8>(), 0..8)).prop_map(
                |(a, bytes)| {
                    PartData::Inline(Box::new(InlinePayload {
                        address: ContentAddress(a),
                        bytes: Arc::from(bytes),
                    }))
                }
            ),
        ];
        let checksum =
            proptest::option::of(proptest::collection::vec(any::<u8>(), 4)).prop_map(|value| {
                value.map(|value| Box::new(Checksum { algorithm: ChecksumAlgorithm::Crc32, value }))
            });
        (any::<u16>(), any::<u64>(), any::<[u8; 16]>(), checksum, any::<u64>(), data).prop_map(
            |(number, size_bytes, md5, checksum, time_ms, data)| Part {
                number,
                size_bytes,
                md5,
                checksum,
                time_ms,
                data,
            },
        )
    }

    #[derive(Clone, Debug)]
    enum Step {
        Insert(usize, Part),
        Replace(usize, Part),
        Push(Part),
        Take,
        /// Stores the inline parts whose address's first byte is even.
        StoreInline,
    }

    fn step() -> impl Strategy<Value = Step> {
        prop_oneof![
            4 => (any::<usize>(), part()).prop_map(|(i, p)| Step::Insert(i, p)),
            3 => (any::<usize>(), part()).prop_map(|(i, p)| Step::Replace(i, p)),
            2 => part().prop_map(Step::Push),
            1 => Just(Step::Take),
            1 => Just(Step::StoreInline),
        ]
    }

    proptest! {
        /// Every change leaves the table holding exactly what a `Vec<Part>` would.
        #[test]
        fn a_table_holds_what_a_vector_would(steps in proptest::collection::vec(step(), 0..40)) {
            let mut table = PartTable::default();
            let mut model: Vec<Part> = Vec::new();
            for step in steps {
                match step {
                    Step::Insert(i, part) => {
                        let i = i % (model.len() + 1);
                        table.insert(i, &part);
                        model.insert(i, part);
                    }
                    Step::Replace(i, part) => {
                        if model.is_empty() {
                            prop_assert!(table.replace(i, &part).is_none());
                        } else {
                            let i = i % model.len();
                            let old = table.replace(i, &part);
                            prop_assert_eq!(old, Some(std::mem::replace(&mut model[i], part)));
                        }
                    }
                    Step::Push(part) => {
                        table.push(&part);
                        model.push(part);
                    }
                    Step::Take => {
                        prop_assert_eq!(table.take(), std::mem::take(&mut model));
                        prop_assert!(table.extras.is_none());
                    }
                    Step::StoreInline => {
                        let even = |a: &ContentAddress| a.0[0].is_multiple_of(2);
                        let mut want = Vec::new();
                        for part in &mut model {
                            if let PartData::Inline(inline) = &part.data
                                && even(&inline.address)
                            {
                                want.push(inline.address);
                                part.data = PartData::Stored(handle_for(&inline.address));
                            }
                        }
                        let stored = table.store_inline(|a| even(a).then(|| handle_for(a)));
                        prop_assert_eq!(stored, want);
                    }
                }
                let inline: Vec<(ContentAddress, Arc<[u8]>, [u8; 16])> = model
                    .iter()
                    .filter_map(|p| match &p.data {
                        PartData::Inline(i) => Some((i.address, Arc::clone(&i.bytes), p.md5)),
                        _ => None,
                    })
                    .collect();
                prop_assert_eq!(table.inline_payloads().collect::<Vec<_>>(), inline);
                prop_assert_eq!(table.iter().collect::<Vec<_>>(), model.clone());
                prop_assert_eq!(table.len(), model.len());
                let stored: Vec<PayloadHandle> =
                    model.iter().filter_map(|p| p.data.stored()).collect();
                prop_assert_eq!(table.stored().collect::<Vec<_>>(), stored);
                let sizes: Vec<u64> = model.iter().map(|p| p.size_bytes).collect();
                prop_assert_eq!(table.sizes().collect::<Vec<_>>(), sizes);
                let with_extras = model
                    .iter()
                    .filter(|p| p.checksum.is_some() || matches!(p.data, PartData::Inline(_)))
                    .count();
                prop_assert_eq!(table.extras.as_ref().map_or(0, |e| e.len()), with_extras);
            }
        }

        /// On the wire a table is the sequence of its parts, a stored part's payload named by
        /// its position in the checkpoint's list of payloads.
        #[test]
        fn a_table_encodes_as_its_parts(parts in proptest::collection::vec(part(), 0..6)) {
            let table = PartTable::from_parts(parts.clone());
            // Slot n is listed at position SLOTS - 1 - n.
            let positions = (0..SLOTS).rev().collect();
            let ((bytes, by_parts), _) = addresses::encoding(positions, || {
                (postcard::to_allocvec(&table).unwrap(), postcard::to_allocvec(&parts).unwrap())
            });
            prop_assert_eq!(&bytes, &by_parts);
            let listed = |part: &Part| match part.data {
                PartData::Stored(handle) => Part {
                    data: PartData::Stored(PayloadHandle(SLOTS - 1 - handle.get())),
                    ..part.clone()
                },
                _ => part.clone(),
            };
            let decoded = postcard::from_bytes::<PartTable>(&bytes).unwrap();
            prop_assert_eq!(decoded, PartTable::from_parts(parts.iter().map(listed).collect()));
        }
    }

    #[test]
    fn a_row_is_40_bytes_and_a_table_four_words() {
        assert_eq!(std::mem::size_of::<Row>(), 40);
        assert_eq!(std::mem::size_of::<PartTable>(), 32);
    }

    /// A stored part's handle is no position: outside `addresses::encoding` it does not encode.
    #[test]
    fn a_stored_part_does_not_encode_without_its_position() {
        let part = Part {
            number: 1,
            size_bytes: 5,
            md5: [0; 16],
            checksum: None,
            time_ms: 0,
            data: PartData::Stored(PayloadHandle(3)),
        };
        let table = PartTable::from_parts(vec![part]);
        assert!(postcard::to_allocvec(&table).is_err());
        let ((), _) = addresses::encoding(vec![0, 1, 2, addresses::UNLISTED], || {
            assert!(postcard::to_allocvec(&table).is_err(), "slot 3 is not listed");
        });
        let ((), _) = addresses::encoding(vec![0, 1], || {
            assert!(postcard::to_allocvec(&table).is_err(), "slot 3 is past the positions");
        });
    }
}
