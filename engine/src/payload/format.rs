//! Payload segment files: docs/format.md §8 "Payload segment".
//!
//! ```text
//! segment header (32 bytes)
//!   0   8 magic          "tssr.pay"
//!   8   4 format_version u32 LE, 1
//!  12   4 reserved       zero
//!  16   8 segment_id     u64 LE, the number in the file name
//!  24   4 reserved       zero
//!  28   4 crc32          crc32 of bytes 0..28
//! entry (from offset 32, back to back, each at a multiple of 8)
//!   0   4 header_crc32   crc32 of bytes 4..48
//!   4   4 kind           u32 LE, 1 = payload
//!   8   8 payload_bytes  u64 LE, 1..=PAYLOAD_BYTES_LIMIT
//!  16  32 sha256         the payload's SHA-256 (its content address)
//!  48   n payload
//! 48+n  p padding        up to the next multiple of 8; never written or read
//! ```

use crate::payload::address::{ContentAddress, SegmentId};
use crate::payload::error::PayloadCorruption;

/// docs/format.md §8: magic of a payload segment file.
pub const PAYLOAD_MAGIC: [u8; 8] = *b"tssr.pay";
/// docs/format.md §8: the payload segment format version this build writes and reads.
pub const PAYLOAD_FORMAT_VERSION: u32 = 1;
/// docs/format.md §8: size of a payload segment header.
pub const PAYLOAD_SEGMENT_HEADER_BYTES: u64 = 32;
/// docs/format.md §8: size of an entry header.
pub const ENTRY_HEADER_BYTES: u64 = 48;
/// [`ENTRY_HEADER_BYTES`] as an array length.
pub const ENTRY_HEADER_LEN: usize = 48;
const _: () = assert!(ENTRY_HEADER_LEN as u64 == ENTRY_HEADER_BYTES);
/// Entries start at multiples of this.
pub const ENTRY_ALIGN_BYTES: u64 = 8;
/// The largest payload the format can describe (1 TiB); the store's configured limit is lower.
pub const PAYLOAD_BYTES_LIMIT: u64 = 1 << 40;
/// Kind of an entry holding a payload.
pub const KIND_PAYLOAD: u32 = 1;

const _: () = assert!(PAYLOAD_SEGMENT_HEADER_BYTES == 8 + 4 + 4 + 8 + 4 + 4);
const _: () = assert!(ENTRY_HEADER_BYTES == 4 + 4 + 8 + 32);
const _: () = assert!(PAYLOAD_SEGMENT_HEADER_BYTES.is_multiple_of(ENTRY_ALIGN_BYTES));
const _: () = assert!(ENTRY_HEADER_BYTES.is_multiple_of(ENTRY_ALIGN_BYTES));

/// Bytes an entry of `payload_bytes` takes, header and padding included.
pub fn entry_bytes(payload_bytes: u64) -> u64 {
    (ENTRY_HEADER_BYTES + payload_bytes).next_multiple_of(ENTRY_ALIGN_BYTES)
}

fn le_u32(bytes: &[u8], at: usize) -> u32 {
    let mut word = [0; 4];
    if let Some(field) = bytes.get(at..at + 4) {
        word.copy_from_slice(field);
    }
    u32::from_le_bytes(word)
}

fn le_u64(bytes: &[u8], at: usize) -> u64 {
    let mut word = [0; 8];
    if let Some(field) = bytes.get(at..at + 8) {
        word.copy_from_slice(field);
    }
    u64::from_le_bytes(word)
}

/// A segment header's bytes.
pub fn encode_segment_header(id: SegmentId) -> [u8; 32] {
    let mut out = [0u8; 32];
    out[0..8].copy_from_slice(&PAYLOAD_MAGIC);
    out[8..12].copy_from_slice(&PAYLOAD_FORMAT_VERSION.to_le_bytes());
    out[16..24].copy_from_slice(&id.0.to_le_bytes());
    let crc = crc32fast::hash(&out[0..28]);
    out[28..32].copy_from_slice(&crc.to_le_bytes());
    out
}

/// Checks a segment header against the id its file name gives.
pub fn check_segment_header(bytes: &[u8], id: SegmentId) -> Result<(), PayloadCorruption> {
    let mut magic = [0u8; 8];
    magic.copy_from_slice(bytes.get(0..8).unwrap_or(&[0; 8]));
    if magic != PAYLOAD_MAGIC {
        return Err(PayloadCorruption::BadMagic { found: magic });
    }
    let header = bytes.get(0..28).unwrap_or(&[]);
    let (stored, computed) = (le_u32(bytes, 28), crc32fast::hash(header));
    if header.len() < 28 || stored != computed {
        return Err(PayloadCorruption::HeaderCrc { stored, computed });
    }
    let version = le_u32(bytes, 8);
    if version != PAYLOAD_FORMAT_VERSION {
        let supported = PAYLOAD_FORMAT_VERSION;
        return Err(PayloadCorruption::UnsupportedVersion { found: version, supported });
    }
    let found = le_u64(bytes, 16);
    if found != id.0 {
        let (found, expected) = (found.to_string(), id.0.to_string());
        return Err(PayloadCorruption::HeaderField { field: "segment_id", found, expected });
    }
    Ok(())
}

/// An entry header's bytes.
pub fn encode_entry_header(payload_bytes: u64, address: &ContentAddress) -> [u8; 48] {
    debug_assert!((1..=PAYLOAD_BYTES_LIMIT).contains(&payload_bytes));
    let mut out = [0u8; 48];
    out[4..8].copy_from_slice(&KIND_PAYLOAD.to_le_bytes());
    out[8..16].copy_from_slice(&payload_bytes.to_le_bytes());
    out[16..48].copy_from_slice(&address.0);
    let crc = crc32fast::hash(&out[4..48]);
    out[0..4].copy_from_slice(&crc.to_le_bytes());
    out
}

/// A checked entry header: its payload length and address.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct EntryHeader {
    /// Payload bytes after the header.
    pub payload_bytes: u64,
    /// The payload's SHA-256.
    pub address: ContentAddress,
}

/// Checks an entry header's CRC, kind and length bound.
pub fn decode_entry_header(bytes: &[u8; 48]) -> Result<EntryHeader, PayloadCorruption> {
    let (stored, computed) = (le_u32(bytes, 0), crc32fast::hash(&bytes[4..48]));
    if stored != computed {
        return Err(PayloadCorruption::HeaderCrc { stored, computed });
    }
    let kind = le_u32(bytes, 4);
    if kind != KIND_PAYLOAD {
        let (found, expected) = (kind.to_string(), KIND_PAYLOAD.to_string());
        return Err(PayloadCorruption::HeaderField { field: "kind", found, expected });
    }
    let payload_bytes = le_u64(bytes, 8);
    if !(1..=PAYLOAD_BYTES_LIMIT).contains(&payload_bytes) {
        let found = payload_bytes.to_string();
        let expected = format!("1..={PAYLOAD_BYTES_LIMIT}");
        return Err(PayloadCorruption::HeaderField { field: "payload_bytes", found, expected });
    }
    let mut address = [0u8; 32];
    address.copy_from_slice(&bytes[16..48]);
    Ok(EntryHeader { payload_bytes, address: ContentAddress(address) })
}

/// The file name of payload segment `id`.
pub fn segment_name(id: SegmentId) -> String {
    format!("{:020}.seg", id.0)
}

/// The segment id a file name stands for, if it is a payload segment's name.
pub fn parse_segment_name(name: &str) -> Option<SegmentId> {
    let digits = name.strip_suffix(".seg")?;
    if digits.len() != 20 || !digits.bytes().all(|b| b.is_ascii_digit()) {
        return None;
    }
    digits.parse().ok().map(SegmentId)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_bit_flip_of_an_entry_header_is_detected() {
        let good = encode_entry_header(1234, &ContentAddress([7; 32]));
        assert_eq!(
            decode_entry_header(&good),
            Ok(EntryHeader { payload_bytes: 1234, address: ContentAddress([7; 32]) })
        );
        for bit in 0..48 * 8 {
            let mut bad = good;
            bad[bit / 8] ^= 1 << (bit % 8);
            assert!(decode_entry_header(&bad).is_err(), "bit {bit}");
        }
        assert!(decode_entry_header(&[0; 48]).is_err(), "zeros are not an entry");
    }

    #[test]
    fn every_bit_flip_of_a_segment_header_is_detected() {
        let good = encode_segment_header(SegmentId(9));
        assert_eq!(check_segment_header(&good, SegmentId(9)), Ok(()));
        assert!(check_segment_header(&good, SegmentId(8)).is_err());
        for bit in 0..32 * 8 {
            let mut bad = good;
            bad[bit / 8] ^= 1 << (bit % 8);
            assert!(check_segment_header(&bad, SegmentId(9)).is_err(), "bit {bit}");
        }
        assert!(check_segment_header(&good[..10], SegmentId(9)).is_err());
    }
}
