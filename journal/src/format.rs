//! The bytes of a journal file (docs/format.md §12): its header, and blocks of entries, each
//! with a summary that lets queries skip it.

use serde::{Deserialize, Serialize};

use crate::bloom::{BloomBuilder, Domain, slash_prefixes};
use crate::entry::Entry;
use crate::error::Damage;
use tessera_wal::LSN_MAX;

/// `tssr.jnl`.
pub const FILE_MAGIC: [u8; 8] = *b"tssr.jnl";
/// The version of journal files this build writes and reads.
pub const JOURNAL_FORMAT_VERSION: u32 = 1;
/// Bytes of a file's header.
pub const FILE_HEADER_BYTES: u64 = 32;
/// Bytes of a block's fixed header.
pub const BLOCK_HEADER_BYTES: usize = 64;
/// The kind of a block of entries.
pub const KIND_BLOCK: u32 = 1;
/// The largest summary a reader accepts.
pub const SUMMARY_BYTES_LIMIT: u32 = 1 << 20;
/// The largest entries section a reader accepts.
pub const ENTRIES_BYTES_LIMIT: u32 = 16 << 20;
/// A writer cuts a block once its entries reach this size.
pub const BLOCK_ENTRIES_BYTES_TARGET: usize = 64 << 10;
/// The largest entry `stage` takes, encoded: the engine's largest is about 1.3 KiB (key 1024,
/// bucket 63, actor 256 bytes), so a block cut at `BLOCK_ENTRIES_BYTES_TARGET` stays far
/// below `ENTRIES_BYTES_LIMIT`, which readers enforce.
pub const ENTRY_BYTES_MAX: usize = 64 << 10;
const _: () = assert!(BLOCK_ENTRIES_BYTES_TARGET + ENTRY_BYTES_MAX <= ENTRIES_BYTES_LIMIT as usize);
/// File names: `{first_lsn:020}` and this suffix.
pub const FILE_SUFFIX: &str = ".tjl";
/// A file being created.
pub const TEMP_SUFFIX: &str = ".tmp";

fn le_u32(bytes: &[u8], at: usize) -> u32 {
    let mut b = [0u8; 4];
    if let Some(s) = bytes.get(at..at + 4) {
        b.copy_from_slice(s);
    }
    u32::from_le_bytes(b)
}

fn le_u64(bytes: &[u8], at: usize) -> u64 {
    let mut b = [0u8; 8];
    if let Some(s) = bytes.get(at..at + 8) {
        b.copy_from_slice(s);
    }
    u64::from_le_bytes(b)
}

fn put(out: &mut [u8], at: usize, bytes: &[u8]) {
    if let Some(slot) = out.get_mut(at..at + bytes.len()) {
        slot.copy_from_slice(bytes);
    }
}

/// The name of the file whose first block starts at `first_lsn`.
pub fn file_name(first_lsn: u64) -> String {
    format!("{first_lsn:020}{FILE_SUFFIX}")
}

/// The first LSN a file name declares, if it is a journal file's name.
pub fn parse_file_name(name: &str) -> Option<u64> {
    let digits = name.strip_suffix(FILE_SUFFIX)?;
    // LSNs start at 1: a name of 0 is no journal file's.
    (digits.len() == 20 && digits.bytes().all(|b| b.is_ascii_digit()))
        .then(|| digits.parse().ok())
        .flatten()
        .filter(|&lsn| (1..=LSN_MAX).contains(&lsn))
}

/// A file's header.
pub fn encode_file_header(first_lsn: u64) -> [u8; 32] {
    let mut out = [0u8; 32];
    put(&mut out, 0, &FILE_MAGIC);
    put(&mut out, 8, &JOURNAL_FORMAT_VERSION.to_le_bytes());
    put(&mut out, 16, &first_lsn.to_le_bytes());
    let crc = crc32fast::hash(out.get(..28).unwrap_or(&[]));
    put(&mut out, 28, &crc.to_le_bytes());
    out
}

/// Checks a file's header; returns its first LSN.
pub fn decode_file_header(bytes: &[u8; 32]) -> Result<u64, Damage> {
    let (stored, computed) = (le_u32(bytes, 28), crc32fast::hash(bytes.get(..28).unwrap_or(&[])));
    if stored != computed {
        return Err(Damage::Crc { what: "file header", stored, computed });
    }
    if bytes.get(..8) != Some(&FILE_MAGIC[..]) {
        return Err(Damage::Field { field: "magic", found: hex::encode(&bytes[..8]) });
    }
    let version = le_u32(bytes, 8);
    if version != JOURNAL_FORMAT_VERSION {
        return Err(Damage::Version { found: version });
    }
    match le_u64(bytes, 16) {
        lsn @ 1..=LSN_MAX => Ok(lsn),
        lsn => Err(Damage::Field { field: "first_lsn", found: lsn.to_string() }),
    }
}

/// What a block's summary carries (postcard, §12.5).
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct SummaryBody {
    /// The Bloom filter of the entries' upload ids and buckets.
    #[serde(with = "serde_bytes_vec")]
    pub bloom: Vec<u8>,
    /// The least `bucket 0x00 key` of the entries that name a bucket (empty: none does).
    #[serde(with = "serde_bytes_vec")]
    pub key_min: Vec<u8>,
    /// The greatest.
    #[serde(with = "serde_bytes_vec")]
    pub key_max: Vec<u8>,
}

/// A `Vec<u8>` as one byte string.
mod serde_bytes_vec {
    use serde::{Deserializer, Serializer};

    pub fn serialize<S: Serializer>(bytes: &[u8], serializer: S) -> Result<S::Ok, S::Error> {
        serializer.serialize_bytes(bytes)
    }

    pub fn deserialize<'de, D: Deserializer<'de>>(deserializer: D) -> Result<Vec<u8>, D::Error> {
        struct Visitor;
        impl serde::de::Visitor<'_> for Visitor {
            type Value = Vec<u8>;
            fn expecting(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
                f.write_str("a byte string")
            }
            fn visit_bytes<E: serde::de::Error>(self, v: &[u8]) -> Result<Vec<u8>, E> {
                Ok(v.to_vec())
            }
        }
        deserializer.deserialize_bytes(Visitor)
    }
}

/// The composite `bucket 0x00 key` a block's key range is over.
pub fn composite_key(bucket: &str, key: &str) -> Vec<u8> {
    let mut out = Vec::with_capacity(bucket.len() + 1 + key.len());
    out.extend_from_slice(bucket.as_bytes());
    out.push(0);
    out.extend_from_slice(key.as_bytes());
    out
}

/// A block's fixed header fields and summary, as read back.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct BlockHeader {
    /// Bytes of the summary.
    pub summary_bytes: u32,
    /// Bytes of the entries section.
    pub entries_bytes: u32,
    /// CRC of the entries section.
    pub entries_crc: u32,
    /// Entries in it.
    pub entry_count: u32,
    /// The LSNs this block covers: every journalled transition in `first_lsn..=last_lsn` is
    /// among its entries.
    pub first_lsn: u64,
    /// See `first_lsn`.
    pub last_lsn: u64,
    /// The entries' earliest time (0 with no entries).
    pub time_min_ms: u64,
    /// Their latest time.
    pub time_max_ms: u64,
    /// The summary.
    pub summary: SummaryBody,
}

impl BlockHeader {
    /// Bytes of the whole block.
    pub fn block_bytes(&self) -> u64 {
        BLOCK_HEADER_BYTES as u64 + u64::from(self.summary_bytes) + u64::from(self.entries_bytes)
    }
}

/// Encodes a block covering `first_lsn..=last_lsn` that holds `entries` (in LSN order, inside
/// that range), appending it to `out`; returns its header as a reader will decode it.
pub fn encode_block<'a>(
    out: &mut Vec<u8>,
    first_lsn: u64,
    last_lsn: u64,
    entries: impl IntoIterator<Item = &'a Entry> + Clone,
) -> BlockHeader {
    let entries: Vec<&Entry> = entries.into_iter().collect();
    let mut entries_section = Vec::new();
    for entry in &entries {
        // Plain structs and strings always encode.
        if let Ok(bytes) = postcard::to_extend(entry, std::mem::take(&mut entries_section)) {
            entries_section = bytes;
        }
    }
    let buckets: std::collections::BTreeSet<&str> =
        entries.iter().filter_map(|e| e.bucket.as_deref()).collect();
    let prefixes: std::collections::BTreeSet<(&str, &str)> = entries
        .iter()
        .filter_map(|e| Some((e.bucket.as_deref()?, e.key.as_deref()?)))
        .flat_map(|(bucket, key)| slash_prefixes(key).map(move |p| (bucket, p)))
        .collect();
    let mut bloom = BloomBuilder::new(entries.len() + buckets.len() + prefixes.len());
    // `bucket 0x00 key` orders as (bucket, key) does: bucket names hold no 0x00.
    let named = || {
        entries.iter().filter_map(|e| Some((e.bucket.as_deref()?, e.key.as_deref().unwrap_or(""))))
    };
    let key_range = named().min().zip(named().max());
    for entry in &entries {
        if let Some(id) = &entry.upload_id {
            bloom.insert(Domain::UploadId, id);
        }
    }
    for bucket in buckets {
        bloom.insert(Domain::Bucket, bucket.as_bytes());
    }
    for (bucket, prefix) in prefixes {
        bloom.insert(Domain::Prefix, &composite_key(bucket, prefix));
    }
    let key_range =
        key_range.map(|((b0, k0), (b1, k1))| (composite_key(b0, k0), composite_key(b1, k1)));
    let (key_min, key_max) = key_range.unwrap_or_default();
    let body = SummaryBody { bloom: bloom.finish(), key_min, key_max };
    let summary = postcard::to_stdvec(&body).unwrap_or_default();
    let time_min = entries.iter().map(|e| e.time_ms).min().unwrap_or(0);
    let time_max = entries.iter().map(|e| e.time_ms).max().unwrap_or(0);
    let mut header = [0u8; BLOCK_HEADER_BYTES];
    put(&mut header, 4, &KIND_BLOCK.to_le_bytes());
    put(&mut header, 8, &u32::try_from(summary.len()).unwrap_or(u32::MAX).to_le_bytes());
    put(&mut header, 12, &u32::try_from(entries_section.len()).unwrap_or(u32::MAX).to_le_bytes());
    put(&mut header, 16, &crc32fast::hash(&entries_section).to_le_bytes());
    put(&mut header, 20, &u32::try_from(entries.len()).unwrap_or(u32::MAX).to_le_bytes());
    put(&mut header, 24, &first_lsn.to_le_bytes());
    put(&mut header, 32, &last_lsn.to_le_bytes());
    put(&mut header, 40, &time_min.to_le_bytes());
    put(&mut header, 48, &time_max.to_le_bytes());
    let mut crc = crc32fast::Hasher::new();
    crc.update(header.get(4..).unwrap_or(&[]));
    crc.update(&summary);
    put(&mut header, 0, &crc.finalize().to_le_bytes());
    out.extend_from_slice(&header);
    out.extend_from_slice(&summary);
    out.extend_from_slice(&entries_section);
    BlockHeader {
        summary_bytes: le_u32(&header, 8),
        entries_bytes: le_u32(&header, 12),
        entries_crc: le_u32(&header, 16),
        entry_count: le_u32(&header, 20),
        first_lsn,
        last_lsn,
        time_min_ms: time_min,
        time_max_ms: time_max,
        summary: body,
    }
}

/// The summary length a fixed header declares (checked against the limit), so that a reader
/// knows how much to read before it can check the header's CRC.
pub fn declared_summary_bytes(fixed: &[u8; BLOCK_HEADER_BYTES]) -> Result<u32, Damage> {
    let summary_bytes = le_u32(fixed, 8);
    if summary_bytes > SUMMARY_BYTES_LIMIT {
        return Err(Damage::Field { field: "summary_bytes", found: summary_bytes.to_string() });
    }
    Ok(summary_bytes)
}

/// Checks and decodes a block's header: `bytes` is its fixed header then its summary.
pub fn decode_block_header(bytes: &[u8]) -> Result<BlockHeader, Damage> {
    let stored = le_u32(bytes, 0);
    let computed = crc32fast::hash(bytes.get(4..).unwrap_or(&[]));
    if stored != computed {
        return Err(Damage::Crc { what: "block header", stored, computed });
    }
    let kind = le_u32(bytes, 4);
    if kind != KIND_BLOCK {
        return Err(Damage::Field { field: "kind", found: kind.to_string() });
    }
    let entries_bytes = le_u32(bytes, 12);
    if entries_bytes > ENTRIES_BYTES_LIMIT {
        return Err(Damage::Field { field: "entries_bytes", found: entries_bytes.to_string() });
    }
    let (first_lsn, last_lsn) = (le_u64(bytes, 24), le_u64(bytes, 32));
    if first_lsn == 0 || first_lsn > last_lsn || last_lsn > LSN_MAX {
        return Err(Damage::Field {
            field: "lsn range",
            found: format!("{first_lsn}..={last_lsn}"),
        });
    }
    let summary_bytes = le_u32(bytes, 8);
    let summary_section = bytes.get(BLOCK_HEADER_BYTES..).unwrap_or(&[]);
    if summary_section.len() != summary_bytes as usize {
        return Err(Damage::Field { field: "summary_bytes", found: summary_bytes.to_string() });
    }
    let summary = postcard::from_bytes(summary_section)
        .map_err(|e| Damage::Decode { what: "block summary", reason: e.to_string() })?;
    Ok(BlockHeader {
        summary_bytes,
        entries_bytes,
        entries_crc: le_u32(bytes, 16),
        entry_count: le_u32(bytes, 20),
        first_lsn,
        last_lsn,
        time_min_ms: le_u64(bytes, 40),
        time_max_ms: le_u64(bytes, 48),
        summary,
    })
}

/// Checks and decodes a block's entries section against its header: the CRC, the count,
/// and that the LSNs ascend inside the block's range.
pub fn decode_entries(header: &BlockHeader, bytes: &[u8]) -> Result<Vec<Entry>, Damage> {
    let computed = crc32fast::hash(bytes);
    if computed != header.entries_crc {
        return Err(Damage::Crc { what: "block entries", stored: header.entries_crc, computed });
    }
    // An entry takes at least 8 bytes: the count alone never sizes an allocation.
    let mut entries = Vec::with_capacity((header.entry_count as usize).min(bytes.len() / 8));
    let mut rest = bytes;
    let mut previous = header.first_lsn - 1;
    while !rest.is_empty() {
        let (entry, tail): (Entry, &[u8]) = postcard::take_from_bytes(rest)
            .map_err(|e| Damage::Decode { what: "entry", reason: e.to_string() })?;
        if entry.lsn <= previous || entry.lsn > header.last_lsn {
            let found =
                format!("LSN {} after {previous}, in a block up to {}", entry.lsn, header.last_lsn);
            return Err(Damage::Field { field: "entry lsn", found });
        }
        previous = entry.lsn;
        entries.push(entry);
        rest = tail;
    }
    if entries.len() != header.entry_count as usize {
        let found = format!("{} entries, header says {}", entries.len(), header.entry_count);
        return Err(Damage::Field { field: "entry_count", found });
    }
    Ok(entries)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::entry::Operation;

    fn entry(lsn: u64) -> Entry {
        Entry {
            lsn,
            time_ms: 1000 + lsn,
            actor: "a".into(),
            op: Operation::PutPart,
            bucket: Some("bkt".into()),
            key: Some(format!("k{lsn}")),
            upload_id: Some([lsn as u8; 24]),
            part_number: Some(1),
            size_bytes: Some(5),
            etag: None,
            error: None,
        }
    }

    #[test]
    fn a_block_round_trips() {
        let entries = vec![entry(3), entry(5)];
        let mut out = Vec::new();
        let written = encode_block(&mut out, 2, 6, &entries);
        let fixed: [u8; BLOCK_HEADER_BYTES] = out[..BLOCK_HEADER_BYTES].try_into().unwrap();
        let summary_bytes = declared_summary_bytes(&fixed).unwrap() as usize;
        let header = decode_block_header(&out[..BLOCK_HEADER_BYTES + summary_bytes]).unwrap();
        assert_eq!((header.first_lsn, header.last_lsn, header.entry_count), (2, 6, 2));
        assert_eq!((header.time_min_ms, header.time_max_ms), (1003, 1005));
        assert_eq!(header.summary.key_min, composite_key("bkt", "k3"));
        assert_eq!(header.summary.key_max, composite_key("bkt", "k5"));
        assert_eq!(header.block_bytes(), out.len() as u64);
        assert_eq!(header, written);
        let section = &out[BLOCK_HEADER_BYTES + summary_bytes..];
        assert_eq!(decode_entries(&header, section).unwrap(), entries);
    }

    #[test]
    fn every_flipped_byte_of_a_block_is_caught() {
        let mut out = Vec::new();
        encode_block(&mut out, 1, 2, &[entry(1), entry(2)]);
        for at in 0..out.len() {
            let mut damaged = out.clone();
            damaged[at] ^= 0x40;
            let fixed: [u8; BLOCK_HEADER_BYTES] = damaged[..BLOCK_HEADER_BYTES].try_into().unwrap();
            let Ok(summary_bytes) = declared_summary_bytes(&fixed) else { continue };
            let end = (BLOCK_HEADER_BYTES + summary_bytes as usize).min(damaged.len());
            let Ok(header) = decode_block_header(&damaged[..end]) else { continue };
            let section = damaged.get(end..).unwrap_or(&[]);
            assert!(decode_entries(&header, section).is_err(), "flip at {at} went unnoticed");
        }
    }

    #[test]
    fn an_entry_encodes_as_documented() {
        // docs/format.md §12.4, byte for byte.
        let entry = Entry {
            lsn: 300,
            time_ms: 5,
            actor: "al".into(),
            op: Operation::Complete,
            bucket: Some("b".into()),
            key: None,
            upload_id: None,
            part_number: Some(2),
            size_bytes: None,
            etag: Some(crate::entry::JournalEtag { md5: [0xee; 16], parts: Some(3) }),
            error: Some("X".into()),
        };
        let expected =
            format!("ac02 05 02616c 06 010162 00 00 0102 00 01{} 0103 010158", "ee".repeat(16));
        assert_eq!(hex::encode(postcard::to_stdvec(&entry).unwrap()), expected.replace(' ', ""));
    }

    #[test]
    fn a_file_header_round_trips_and_names_parse() {
        let header = encode_file_header(42);
        assert_eq!(decode_file_header(&header).unwrap(), 42);
        assert_eq!(&header[..8], b"tssr.jnl");
        assert_eq!(header[8..12], 1u32.to_le_bytes());
        assert_eq!(header[16..24], 42u64.to_le_bytes());
        assert_eq!(header[28..], crc32fast::hash(&header[..28]).to_le_bytes());
        let mut damaged = header;
        damaged[17] ^= 1;
        assert!(decode_file_header(&damaged).is_err());
        assert_eq!(parse_file_name(&file_name(42)), Some(42));
        assert_eq!(parse_file_name("42.tjl"), None);
        assert_eq!(parse_file_name(&file_name(0)), None, "LSNs start at 1");
        assert!(decode_file_header(&encode_file_header(0)).is_err());
        assert_eq!(parse_file_name("00000000000000000042.tjl.tmp"), None);
    }
}
