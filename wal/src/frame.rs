//! Record framing: docs/format.md §3 "Frame".
//!
//! ```text
//! offset size field          meaning
//!      0    4 crc32          crc32 (crc32fast, initial value: the segment's salt) of bytes
//!                            4..24 and of the payload
//!      4    4 payload_bytes  u32 LE, 1..=the segment's record limit (0 reserved: unwritten)
//!      8    8 lsn            u64 LE, the previous frame's LSN + 1
//!     16    4 batch_index    u32 LE, the frame's position in its batch (0 for the first)
//!     20    1 kind           1 = record (0 reserved: unwritten)
//!     21    3 reserved       zero
//!     24    n payload        the record's bytes
//!   24+n    p padding        zeros, up to the next multiple of 8
//! ```
//!
//! `lsn - batch_index` is the first LSN of the frame's batch: every record before it was synced
//! when the frame was written. That is what lets recovery tell a torn batch from damage to a
//! synced one (see `tail.rs`).

use crate::Lsn;
use crate::error::Corruption;
use crate::limits::{FRAME_ALIGN_BYTES, LSN_MAX};

/// docs/format.md §3: size of a frame header.
pub const FRAME_HEADER_BYTES: usize = 24;
const _: () = assert!(FRAME_HEADER_BYTES == 4 + 4 + 8 + 4 + 1 + 3);
/// [`FRAME_HEADER_BYTES`] as the u32 that batch bounds are counted in.
pub const FRAME_HEADER_BYTES_U32: u32 = 24;
const _: () = assert!(FRAME_HEADER_BYTES_U32 as usize == FRAME_HEADER_BYTES);
const _: () = assert!(FRAME_HEADER_BYTES.is_multiple_of(FRAME_ALIGN_BYTES));

/// docs/format.md §3: the kind of a frame that carries a record.
pub const KIND_RECORD: u8 = 1;

/// Bytes a frame with `payload_bytes` of payload takes, header and padding included.
pub fn frame_bytes(payload_bytes: usize) -> usize {
    (FRAME_HEADER_BYTES + payload_bytes).next_multiple_of(FRAME_ALIGN_BYTES)
}

/// A frame that checked out: its header fields and where its payload lies in the segment.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Frame {
    /// The record's LSN.
    pub lsn: Lsn,
    /// The frame's position in its batch.
    pub batch_index: u32,
    /// Offset of the payload in the segment.
    pub payload_offset: usize,
    /// Length of the payload.
    pub payload_bytes: usize,
    /// Offset just past the frame (and its padding): where the next frame starts.
    pub end_offset: usize,
}

impl Frame {
    /// The first LSN of the frame's batch.
    pub fn batch_first_lsn(&self) -> Lsn {
        Lsn(self.lsn.0 - u64::from(self.batch_index))
    }
}

/// What lies at an offset of a segment.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Parsed {
    /// A valid frame.
    Frame(Frame),
    /// Zeros where a frame header would be (or no bytes at all): space never written.
    Unwritten,
    /// Bytes that are not a valid frame.
    Invalid(Corruption),
}

/// Appends a frame for `payload` with LSN `lsn` to `out`, as the appender queues it: the batch
/// index and the CRC are filled in by [`seal`] when the batch is cut.
pub fn encode_provisional(out: &mut Vec<u8>, lsn: Lsn, payload: &[u8]) {
    debug_assert!(!payload.is_empty() && u32::try_from(payload.len()).is_ok());
    let start = out.len();
    let payload_bytes = u32::try_from(payload.len()).unwrap_or(u32::MAX);
    out.extend_from_slice(&[0; 4]);
    out.extend_from_slice(&payload_bytes.to_le_bytes());
    out.extend_from_slice(&lsn.0.to_le_bytes());
    out.extend_from_slice(&[0; 4]);
    out.extend_from_slice(&[KIND_RECORD, 0, 0, 0]);
    out.extend_from_slice(payload);
    out.resize(start + frame_bytes(payload.len()), 0);
}

/// Stamps each frame of a batch (frames as [`encode_provisional`] wrote them, back to back)
/// with its batch index and its CRC salted with the segment's `salt`. Returns the number of
/// frames.
pub fn seal(batch: &mut [u8], salt: u32) -> u32 {
    let mut index = 0u32;
    let mut rest = batch;
    while let Some((header, tail)) = rest.split_first_chunk_mut::<FRAME_HEADER_BYTES>() {
        let payload_bytes = read_u32(header, 4) as usize;
        let frame_len = frame_bytes(payload_bytes);
        header[16..20].copy_from_slice(&index.to_le_bytes());
        let payload = tail.get(..payload_bytes).unwrap_or(&[]);
        debug_assert_eq!(payload.len(), payload_bytes, "a queued frame is whole");
        let crc = frame_crc(salt, header, payload);
        header[0..4].copy_from_slice(&crc.to_le_bytes());
        rest = tail.get_mut(frame_len - FRAME_HEADER_BYTES..).unwrap_or(&mut []);
        index += 1;
    }
    index
}

/// The offset just past each frame of a queued batch (frames back to back, from offset 0).
pub fn frame_ends(batch: &[u8]) -> impl Iterator<Item = usize> + '_ {
    let mut offset = 0usize;
    std::iter::from_fn(move || {
        let header = batch.get(offset..)?.first_chunk::<FRAME_HEADER_BYTES>()?;
        offset += frame_bytes(read_u32(header, 4) as usize);
        Some(offset)
    })
}

/// The limits and salt a segment's frames are checked against (from its header).
#[derive(Clone, Copy, Debug)]
pub struct FrameRules {
    /// The largest payload a frame may carry.
    pub payload_bytes_max: u32,
    /// The segment's salt, the initial value of every frame CRC.
    pub salt: u32,
}

/// The smallest frame: a header and one byte of payload, padded.
pub const FRAME_BYTES_MIN: usize = (FRAME_HEADER_BYTES + 1).next_multiple_of(FRAME_ALIGN_BYTES);

/// The LSN and batch index a frame header at `offset` claims, read without checking the CRC
/// (cheap, for recovery's search of the torn window); `None` if the header is not even
/// plausible (kind, reserved bytes, length).
pub fn peek(segment: &[u8], offset: usize, rules: FrameRules) -> Option<(Lsn, u32)> {
    let header = segment.get(offset..)?.first_chunk::<FRAME_HEADER_BYTES>()?;
    let payload_bytes = read_u32(header, 4);
    let plausible = header[20] == KIND_RECORD
        && header[21..24] == [0, 0, 0]
        && (1..=rules.payload_bytes_max).contains(&payload_bytes);
    plausible.then(|| (Lsn(read_u64(header, 8)), read_u32(header, 16)))
}

/// Parses the frame at `offset` of `segment`.
pub fn parse(segment: &[u8], offset: usize, rules: FrameRules) -> Parsed {
    let rest = segment.get(offset..).unwrap_or(&[]);
    let Some((header, tail)) = rest.split_first_chunk::<FRAME_HEADER_BYTES>() else {
        return if rest.iter().all(|&b| b == 0) {
            Parsed::Unwritten
        } else {
            Parsed::Invalid(Corruption::TruncatedHeader { left_bytes: rest.len() as u64 })
        };
    };
    if header.iter().all(|&b| b == 0) {
        return Parsed::Unwritten;
    }
    match check(header, tail, rules) {
        Ok((lsn, batch_index, payload_bytes)) => Parsed::Frame(Frame {
            lsn,
            batch_index,
            payload_offset: offset + FRAME_HEADER_BYTES,
            payload_bytes,
            end_offset: offset + frame_bytes(payload_bytes),
        }),
        Err(corruption) => Parsed::Invalid(corruption),
    }
}

fn check(
    header: &[u8; FRAME_HEADER_BYTES],
    tail: &[u8],
    rules: FrameRules,
) -> Result<(Lsn, u32, usize), Corruption> {
    let payload_bytes_max = rules.payload_bytes_max;
    let kind = header[20];
    if kind != KIND_RECORD {
        return Err(Corruption::UnknownKind { kind });
    }
    if header[21..24] != [0, 0, 0] {
        return Err(Corruption::ReservedNotZero);
    }
    let payload_bytes = read_u32(header, 4);
    if payload_bytes == 0 || payload_bytes > payload_bytes_max {
        return Err(Corruption::LengthOutOfRange {
            payload_bytes: u64::from(payload_bytes),
            max_bytes: u64::from(payload_bytes_max),
        });
    }
    let payload_bytes = payload_bytes as usize;
    let padded_bytes = frame_bytes(payload_bytes) - FRAME_HEADER_BYTES;
    let Some(body) = tail.get(..padded_bytes) else {
        return Err(Corruption::PastEnd {
            frame_bytes: frame_bytes(payload_bytes) as u64,
            left_bytes: (FRAME_HEADER_BYTES + tail.len()) as u64,
        });
    };
    let (payload, padding) = body.split_at(payload_bytes);
    let stored = read_u32(header, 0);
    let computed = frame_crc(rules.salt, header, payload);
    if stored != computed {
        return Err(Corruption::FrameCrc { stored, computed });
    }
    if padding.iter().any(|&b| b != 0) {
        return Err(Corruption::PaddingNotZero);
    }
    let lsn = Lsn(read_u64(header, 8));
    let batch_index = read_u32(header, 16);
    if lsn == Lsn::ZERO || lsn.0 > LSN_MAX || u64::from(batch_index) >= lsn.0 {
        return Err(Corruption::BatchIndexOutOfRange { batch_index, lsn });
    }
    Ok((lsn, batch_index, payload_bytes))
}

fn frame_crc(salt: u32, header: &[u8; FRAME_HEADER_BYTES], payload: &[u8]) -> u32 {
    let mut hasher = crc32fast::Hasher::new_with_initial(salt);
    hasher.update(&header[4..]);
    hasher.update(payload);
    hasher.finalize()
}

pub(crate) fn read_u32<const N: usize>(bytes: &[u8; N], at: usize) -> u32 {
    let mut word = [0; 4];
    if let Some(field) = bytes.get(at..at + 4) {
        word.copy_from_slice(field);
    }
    u32::from_le_bytes(word)
}

pub(crate) fn read_u64<const N: usize>(bytes: &[u8; N], at: usize) -> u64 {
    let mut word = [0; 8];
    if let Some(field) = bytes.get(at..at + 8) {
        word.copy_from_slice(field);
    }
    u64::from_le_bytes(word)
}

#[cfg(test)]
mod tests {
    use super::*;

    const RULES: FrameRules = FrameRules { payload_bytes_max: 1 << 20, salt: 0x5eed };

    fn rules(payload_bytes_max: u32) -> FrameRules {
        FrameRules { payload_bytes_max, salt: RULES.salt }
    }

    fn batch(records: &[&[u8]], first_lsn: u64) -> Vec<u8> {
        let mut out = Vec::new();
        for (i, r) in records.iter().enumerate() {
            encode_provisional(&mut out, Lsn(first_lsn + i as u64), r);
        }
        assert_eq!(seal(&mut out, RULES.salt), records.len() as u32);
        out
    }

    #[test]
    fn frames_round_trip_with_batch_index_and_padding() {
        let bytes = batch(&[b"a", b"hello world", &[7u8; 16]], 5);
        let mut offset = 0;
        for (i, expected) in [&b"a"[..], b"hello world", &[7u8; 16]].iter().enumerate() {
            let Parsed::Frame(frame) = parse(&bytes, offset, RULES) else { panic!() };
            assert_eq!(frame.lsn, Lsn(5 + i as u64));
            assert_eq!(frame.batch_index, i as u32);
            assert_eq!(frame.batch_first_lsn(), Lsn(5));
            assert_eq!(&bytes[frame.payload_offset..][..frame.payload_bytes], *expected);
            assert_eq!(frame.end_offset % 8, 0);
            offset = frame.end_offset;
        }
        assert_eq!(offset, bytes.len());
        assert_eq!(parse(&bytes, offset, RULES), Parsed::Unwritten);
    }

    #[test]
    fn zero_filled_bytes_never_parse_as_a_frame() {
        for len in 0..64 {
            assert_eq!(parse(&vec![0; len], 0, RULES), Parsed::Unwritten);
        }
    }

    #[test]
    fn every_single_bit_flip_in_a_frame_is_detected() {
        let good = batch(&[b"some record bytes"], 1);
        for bit in 0..good.len() * 8 {
            let mut bad = good.clone();
            bad[bit / 8] ^= 1 << (bit % 8);
            match parse(&bad, 0, RULES) {
                Parsed::Invalid(_) => {}
                other => panic!("bit {bit}: {other:?}"),
            }
        }
    }

    #[test]
    fn length_beyond_the_limit_is_rejected_before_reading_the_payload() {
        let bytes = batch(&[&[1u8; 100]], 1);
        assert!(matches!(
            parse(&bytes, 0, rules(99)),
            Parsed::Invalid(Corruption::LengthOutOfRange { payload_bytes: 100, max_bytes: 99 })
        ));
    }

    #[test]
    fn truncated_frame_reports_past_end() {
        let bytes = batch(&[&[1u8; 100]], 1);
        assert!(matches!(
            parse(&bytes[..60], 0, RULES),
            Parsed::Invalid(Corruption::PastEnd { .. })
        ));
        assert!(matches!(
            parse(&bytes[..10], 0, RULES),
            Parsed::Invalid(Corruption::TruncatedHeader { left_bytes: 10 })
        ));
    }

    #[test]
    fn a_frame_does_not_check_out_under_another_salt() {
        let bytes = batch(&[b"record"], 1);
        let other = FrameRules { salt: RULES.salt + 1, ..RULES };
        assert!(matches!(parse(&bytes, 0, other), Parsed::Invalid(Corruption::FrameCrc { .. })));
    }

    #[test]
    fn frame_ends_walks_a_queued_batch() {
        let bytes = batch(&[b"a", &[2u8; 30]], 1);
        let ends: Vec<usize> = frame_ends(&bytes).collect();
        assert_eq!(ends, vec![32, 32 + 56]);
    }
}
