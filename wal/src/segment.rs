//! Log segment files: docs/format.md §2 "Segment file".
//!
//! A segment is named after the LSN of its first record, `{first_lsn:020}.wal`, and starts with
//! a 32-byte header; frames follow from offset 32. A segment is created under a temporary name
//! (`.wal.tmp`), its header synced, then renamed into place and the directory synced, so a
//! segment under its real name always has a durable header.
//!
//! ```text
//! offset size field            meaning
//!      0    8 magic            "tssr.wal"
//!      8    4 format_version   u32 LE, 1
//!     12    4 batch_bytes_max  u32 LE, the writer's batch bound: the torn window of this segment
//!     16    8 first_lsn        u64 LE, >= 1: the LSN of the segment's first record
//!     24    4 salt             u32 LE, random per segment: the initial value of its frame CRCs
//!     28    4 crc32            crc32 of bytes 0..28
//! ```

use crate::Lsn;
use crate::error::Corruption;
use crate::frame::{FRAME_HEADER_BYTES_U32, FrameRules, read_u32, read_u64};
use crate::limits::{BATCH_BYTES_LIMIT, BATCH_BYTES_MIN, FRAME_ALIGN_BYTES, LSN_MAX};

/// docs/format.md §2: the magic number of a segment file.
pub const SEGMENT_MAGIC: [u8; 8] = *b"tssr.wal";
/// docs/format.md §1: the format version this build writes and reads.
pub const FORMAT_VERSION: u32 = 1;
/// docs/format.md §2: size of a segment header; frames start here.
pub const SEGMENT_HEADER_BYTES: usize = 32;
const _: () = assert!(SEGMENT_HEADER_BYTES == 8 + 4 + 4 + 8 + 4 + 4);
const _: () = assert!(SEGMENT_HEADER_BYTES.is_multiple_of(FRAME_ALIGN_BYTES));

/// Suffix of a segment file's name.
pub const SEGMENT_SUFFIX: &str = ".wal";
/// Suffix of a file being prepared (a segment or a checkpoint) before its rename.
pub const TEMP_SUFFIX: &str = ".tmp";

/// docs/format.md §2: a segment's header.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct SegmentHeader {
    /// The LSN of the segment's first record.
    pub first_lsn: Lsn,
    /// The batch bound of the writer: no batch in this segment is longer.
    pub batch_bytes_max: u32,
    /// Random per segment, the initial value of every frame CRC in it: a frame copied from
    /// elsewhere (another segment, or a record's payload) does not check out here.
    pub salt: u32,
}

impl SegmentHeader {
    /// The largest record payload a frame in this segment can carry.
    pub fn payload_bytes_max(&self) -> u32 {
        self.batch_bytes_max - FRAME_HEADER_BYTES_U32
    }

    /// What this segment's frames are checked against.
    pub fn frame_rules(&self) -> FrameRules {
        FrameRules { payload_bytes_max: self.payload_bytes_max(), salt: self.salt }
    }

    /// The header's bytes.
    pub fn encode(&self) -> [u8; SEGMENT_HEADER_BYTES] {
        debug_assert!(valid_batch_bytes_max(self.batch_bytes_max) && self.first_lsn >= Lsn::FIRST);
        let mut out = [0u8; SEGMENT_HEADER_BYTES];
        out[0..8].copy_from_slice(&SEGMENT_MAGIC);
        out[8..12].copy_from_slice(&FORMAT_VERSION.to_le_bytes());
        out[12..16].copy_from_slice(&self.batch_bytes_max.to_le_bytes());
        out[16..24].copy_from_slice(&self.first_lsn.0.to_le_bytes());
        out[24..28].copy_from_slice(&self.salt.to_le_bytes());
        let crc = crc32fast::hash(&out[0..28]);
        out[28..32].copy_from_slice(&crc.to_le_bytes());
        out
    }

    /// Reads and checks a header from the start of a segment's bytes.
    pub fn decode(bytes: &[u8]) -> Result<SegmentHeader, Corruption> {
        let Some(header) = bytes.first_chunk::<SEGMENT_HEADER_BYTES>() else {
            return Err(Corruption::ShortHeader {
                file_bytes: bytes.len() as u64,
                header_bytes: SEGMENT_HEADER_BYTES as u64,
            });
        };
        let mut magic = [0; 8];
        magic.copy_from_slice(&header[0..8]);
        if magic != SEGMENT_MAGIC {
            return Err(Corruption::BadMagic { found: magic });
        }
        let stored = read_u32(header, 28);
        let computed = crc32fast::hash(&header[0..28]);
        if stored != computed {
            return Err(Corruption::HeaderCrc { stored, computed });
        }
        let version = read_u32(header, 8);
        if version != FORMAT_VERSION {
            return Err(Corruption::UnsupportedVersion {
                found: version,
                supported: FORMAT_VERSION,
            });
        }
        let batch_bytes_max = read_u32(header, 12);
        if !valid_batch_bytes_max(batch_bytes_max) {
            return Err(Corruption::HeaderField {
                field: "batch_bytes_max",
                found: u64::from(batch_bytes_max),
            });
        }
        let first_lsn = read_u64(header, 16);
        if first_lsn == 0 || first_lsn > LSN_MAX {
            return Err(Corruption::HeaderField { field: "first_lsn", found: first_lsn });
        }
        let salt = read_u32(header, 24);
        Ok(SegmentHeader { first_lsn: Lsn(first_lsn), batch_bytes_max, salt })
    }
}

/// Whether a batch bound is one the format allows.
pub fn valid_batch_bytes_max(bytes: u32) -> bool {
    (BATCH_BYTES_MIN..=BATCH_BYTES_LIMIT).contains(&bytes)
        && (bytes as usize).is_multiple_of(FRAME_ALIGN_BYTES)
}

/// The file name of the segment whose first record is `first_lsn`.
pub fn segment_name(first_lsn: Lsn) -> String {
    format!("{:020}{SEGMENT_SUFFIX}", first_lsn.0)
}

/// The first LSN a segment file name stands for, if it is a segment's name.
pub fn parse_segment_name(name: &str) -> Option<Lsn> {
    parse_numbered_name(name, SEGMENT_SUFFIX)
}

/// The number in a `{n:020}{suffix}` file name.
pub fn parse_numbered_name(name: &str, suffix: &str) -> Option<Lsn> {
    let digits = name.strip_suffix(suffix)?;
    if digits.len() != 20 || !digits.bytes().all(|b| b.is_ascii_digit()) {
        return None;
    }
    digits.parse().ok().filter(|&n| n <= LSN_MAX).map(Lsn)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn header_round_trips() {
        let header = SegmentHeader { first_lsn: Lsn(42), batch_bytes_max: 1 << 20, salt: 9 };
        assert_eq!(SegmentHeader::decode(&header.encode()), Ok(header));
    }

    #[test]
    fn every_bit_flip_in_a_header_is_detected() {
        let good = SegmentHeader { first_lsn: Lsn(42), batch_bytes_max: 4096, salt: 9 }.encode();
        for bit in 0..SEGMENT_HEADER_BYTES * 8 {
            let mut bad = good;
            bad[bit / 8] ^= 1 << (bit % 8);
            assert!(SegmentHeader::decode(&bad).is_err(), "bit {bit}");
        }
    }

    #[test]
    fn short_header_is_reported() {
        assert_eq!(
            SegmentHeader::decode(&[0; 10]),
            Err(Corruption::ShortHeader { file_bytes: 10, header_bytes: 32 })
        );
    }

    #[test]
    fn names_round_trip_and_strangers_are_ignored() {
        assert_eq!(segment_name(Lsn(7)), "00000000000000000007.wal");
        assert_eq!(parse_segment_name(&segment_name(Lsn(7))), Some(Lsn(7)));
        assert_eq!(parse_segment_name("00000000000000000007.wal.tmp"), None);
        assert_eq!(parse_segment_name("7.wal"), None);
        assert_eq!(parse_segment_name("0000000000000000000x.wal"), None);
    }
}
