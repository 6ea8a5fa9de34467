//! Where a segment's records end, and whether the bytes after them are a torn write or damage.
//!
//! The writer keeps one batch in flight: it writes a batch at the synced end of the last
//! segment, fdatasyncs it, and only then writes the next. So after a crash only the last batch
//! of the last segment can be torn, and that batch is at most the segment's `batch_bytes_max`
//! long (the torn window). Within it, sectors may have reached the disk in any order: a valid
//! frame can follow an invalid one. Every frame records its position in its batch, hence the
//! first LSN of its batch, before which everything was synced when it was written.
//!
//! Decision table, for the first offset `o` (expecting LSN `e`) that holds no valid frame
//! with LSN `e`:
//!
//! | what the bytes from `o` on hold                                    | last segment | other |
//! |--------------------------------------------------------------------|--------------|-------|
//! | nothing, or only zeros                                             | end          | end   |
//! | a valid frame with an LSN other than `e`                           | corrupt      | corrupt |
//! | anything nonzero at or past `o + window`                            | corrupt      | corrupt |
//! | within the window, a valid frame whose batch starts after `e`       | corrupt      | corrupt |
//! | otherwise (invalid bytes, maybe valid frames of `e`'s own batch)   | torn: zero it | corrupt |
//!
//! "Corrupt" fails `open` with the file, `o`, and the reason; "torn" is an unacknowledged
//! write: recovery zeroes it (and fdatasyncs) before anything is appended after `o`.
//! Damage that stays indistinguishable from a torn write: anything inside the last batch of the
//! last segment when no later batch follows it (docs/format.md §5 says so).

use crate::Lsn;
use crate::error::Corruption;
use crate::frame::{self, Parsed};
use crate::limits::FRAME_ALIGN_BYTES;
use crate::segment::{SEGMENT_HEADER_BYTES, SegmentHeader};

/// Where a segment's valid frames end.
#[derive(Clone, Debug, PartialEq, Eq)]
pub(crate) struct SegmentEnd {
    /// Offset just past the last valid frame (the header's end if there is none).
    pub end_offset: u64,
    /// LSN of the last valid frame (`first_lsn - 1` if there is none).
    pub last_lsn: Lsn,
    /// Offset of the first frame of the last batch (the header's end if there is no frame).
    pub last_batch_offset: u64,
    /// The torn write after `end_offset`, if any.
    pub torn: Option<TornBytes>,
}

/// A torn, unacknowledged write after a segment's last valid frame.
#[derive(Clone, Debug, PartialEq, Eq)]
pub(crate) struct TornBytes {
    /// From the end of the last valid frame to just past the last nonzero byte.
    pub bytes: u64,
    /// What the first invalid bytes were.
    pub damage: Corruption,
}

/// Damage that cannot be a torn write: where, which LSN the damaged frame should have had,
/// and what was wrong.
#[derive(Clone, Debug, PartialEq, Eq)]
pub(crate) struct Damage {
    pub offset_bytes: u64,
    pub lsn: Lsn,
    pub reason: Corruption,
}

/// Whether a segment is the last one, whose final batch may be torn.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum Position {
    Last,
    Sealed,
}

/// Scans a whole segment (`bytes`, header included) for the end of its records.
pub(crate) fn find_end(
    bytes: &[u8],
    header: &SegmentHeader,
    position: Position,
) -> Result<SegmentEnd, Damage> {
    let rules = header.frame_rules();
    let mut offset = SEGMENT_HEADER_BYTES;
    let mut expected = header.first_lsn;
    let mut last_batch = offset;
    loop {
        // `None`: the segment ends here cleanly.
        let damage = match frame::parse(bytes, offset, rules) {
            Parsed::Frame(f) if f.lsn == expected => {
                if f.batch_index == 0 {
                    last_batch = offset;
                }
                offset = f.end_offset;
                expected = expected.next();
                continue;
            }
            Parsed::Frame(f) => {
                let reason = Corruption::LsnOutOfOrder { expected, found: f.lsn };
                return Err(Damage { offset_bytes: offset as u64, lsn: expected, reason });
            }
            Parsed::Unwritten => first_nonzero(bytes, offset)
                .map(|data| Corruption::DataAfterEnd { data_offset_bytes: data as u64 }),
            Parsed::Invalid(damage) => Some(damage),
        };
        let at = |reason| Damage { offset_bytes: offset as u64, lsn: expected, reason };
        let torn = match (damage, position) {
            (None, _) => None,
            (Some(reason), Position::Sealed) => return Err(at(reason)),
            (Some(damage), Position::Last) => {
                Some(classify_tail(bytes, header, offset, expected, damage).map_err(at)?)
            }
        };
        return Ok(SegmentEnd {
            end_offset: offset as u64,
            last_lsn: expected.prev(),
            last_batch_offset: last_batch as u64,
            torn,
        });
    }
}

/// Decides whether invalid bytes at `offset` of the last segment are a torn write; if not,
/// says why they are corruption.
fn classify_tail(
    bytes: &[u8],
    header: &SegmentHeader,
    offset: usize,
    expected: Lsn,
    damage: Corruption,
) -> Result<TornBytes, Corruption> {
    let window_bytes = header.batch_bytes_max as usize;
    let window_end = offset.saturating_add(window_bytes);
    if let Some(data) = first_nonzero(bytes, window_end) {
        return Err(Corruption::BeyondTornWindow {
            damage: Box::new(damage),
            data_offset_bytes: data as u64,
            window_bytes: window_bytes as u64,
        });
    }
    // A frame of a later batch was written only after `expected`'s batch was synced: then the
    // invalid bytes were once valid and acknowledged. The salt keeps record payloads (which may
    // hold frame-shaped bytes) and stale bytes from passing as such a frame.
    // Only a frame of a later batch within the window matters, and its LSN can be at most
    // one per smallest frame past `expected`: check that before the CRC, so that frame-shaped
    // bytes (say, in a client's data) cannot make this search cost a CRC per offset.
    let rules = header.frame_rules();
    let align = FRAME_ALIGN_BYTES;
    let lsn_bound = expected.0 + (window_bytes / frame::FRAME_BYTES_MIN) as u64;
    for candidate in (offset + align..window_end.min(bytes.len())).step_by(align) {
        let Some((lsn, batch_index)) = frame::peek(bytes, candidate, rules) else { continue };
        let batch_first = lsn.0.saturating_sub(u64::from(batch_index));
        if lsn.0 > lsn_bound || batch_first <= expected.0 {
            continue;
        }
        if let Parsed::Frame(f) = frame::parse(bytes, candidate, rules)
            && f.batch_first_lsn() > expected
        {
            return Err(Corruption::SyncedFrameDamaged {
                damage: Box::new(damage),
                later_lsn: f.lsn,
                later_offset_bytes: candidate as u64,
            });
        }
    }
    let data_end = last_nonzero(bytes, offset).map_or(offset, |last| last + 1);
    Ok(TornBytes { bytes: (data_end - offset) as u64, damage })
}

/// The offset of the first nonzero byte at or after `from`.
pub(crate) fn first_nonzero(bytes: &[u8], from: usize) -> Option<usize> {
    let rest = bytes.get(from..)?;
    // Word-sized steps: a preallocated segment can be mostly zeros.
    let words = rest.chunks_exact(8);
    let tail_start = rest.len() - words.remainder().len();
    for (i, word) in words.enumerate() {
        if word.iter().fold(0u8, |acc, &b| acc | b) != 0 {
            let within = word.iter().position(|&b| b != 0).unwrap_or(0);
            return Some(from + i * 8 + within);
        }
    }
    rest.get(tail_start..)?.iter().position(|&b| b != 0).map(|p| from + tail_start + p)
}

/// The offset of the last nonzero byte at or after `from`.
fn last_nonzero(bytes: &[u8], from: usize) -> Option<usize> {
    bytes.get(from..)?.iter().rposition(|&b| b != 0).map(|p| from + p)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::frame::{encode_provisional, seal};

    const HEADER: SegmentHeader =
        SegmentHeader { first_lsn: Lsn(1), batch_bytes_max: 1024, salt: 77 };

    /// A segment holding `batches` (record sizes per batch), preallocated to `len` bytes.
    fn segment(batches: &[&[usize]], len: usize) -> (Vec<u8>, Vec<usize>) {
        let mut bytes = HEADER.encode().to_vec();
        let mut starts = Vec::new();
        let mut lsn = 1;
        for batch in batches {
            let mut queued = Vec::new();
            for &size in *batch {
                starts.push(bytes.len() + queued.len());
                encode_provisional(&mut queued, Lsn(lsn), &vec![lsn as u8; size]);
                lsn += 1;
            }
            seal(&mut queued, HEADER.salt);
            bytes.extend_from_slice(&queued);
        }
        bytes.resize(len.max(bytes.len()), 0);
        (bytes, starts)
    }

    #[test]
    fn clean_segment_ends_at_its_last_frame() {
        let (bytes, starts) = segment(&[&[10, 20], &[30]], 4096);
        let end = find_end(&bytes, &HEADER, Position::Last).unwrap();
        assert_eq!(end.last_lsn, Lsn(3));
        assert_eq!(end.end_offset as usize, starts[2] + 56);
        assert_eq!(end.torn, None);
    }

    #[test]
    fn torn_frame_in_the_last_batch_is_torn_even_with_valid_frames_after_it() {
        let (mut bytes, starts) = segment(&[&[10], &[40, 40, 40]], 4096);
        bytes[starts[2] + 30] ^= 0xff; // second frame of the last batch
        let end = find_end(&bytes, &HEADER, Position::Last).unwrap();
        assert_eq!(end.last_lsn, Lsn(2));
        assert_eq!(end.end_offset as usize, starts[2]);
        let torn = end.torn.unwrap();
        assert!(matches!(torn.damage, Corruption::FrameCrc { .. }));
        assert_eq!(torn.bytes as usize, starts[3] + 64 - starts[2]);
    }

    #[test]
    fn damaged_frame_followed_by_a_later_batch_is_corruption() {
        let (mut bytes, starts) = segment(&[&[10], &[40, 40], &[40]], 4096);
        bytes[starts[1] + 30] ^= 0xff;
        let damage = find_end(&bytes, &HEADER, Position::Last).unwrap_err();
        assert_eq!((damage.offset_bytes as usize, damage.lsn), (starts[1], Lsn(2)));
        let reason = damage.reason;
        assert!(
            matches!(reason, Corruption::SyncedFrameDamaged { later_lsn: Lsn(4), .. }),
            "{reason}"
        );
    }

    #[test]
    fn damage_before_the_torn_window_is_corruption() {
        let many: Vec<usize> = vec![100; 20];
        let (mut bytes, starts) = segment(&[&[10], &many[..6], &many[..6], &many[..6]], 8192);
        bytes[starts[0] + 30] ^= 1; // first batch, more than 1024 bytes before the end
        let damage = find_end(&bytes, &HEADER, Position::Last).unwrap_err();
        assert_eq!((damage.offset_bytes as usize, damage.lsn), (starts[0], Lsn(1)));
        let reason = damage.reason;
        assert!(matches!(reason, Corruption::BeyondTornWindow { .. }), "{reason}");
    }

    #[test]
    fn any_damage_in_a_sealed_segment_is_corruption() {
        let (mut bytes, starts) = segment(&[&[10], &[40]], 4096);
        bytes[starts[1] + 30] ^= 1;
        let damage = find_end(&bytes, &HEADER, Position::Sealed).unwrap_err();
        assert_eq!((damage.offset_bytes as usize, damage.lsn), (starts[1], Lsn(2)));
    }

    #[test]
    fn a_frame_shaped_payload_cannot_prove_a_later_batch() {
        // The last batch carries, inside a record, a frame sealed with another salt and a far
        // later batch; tearing the batch's first frame must still read as a torn write.
        let mut forged = Vec::new();
        encode_provisional(&mut forged, Lsn(1000), b"forged");
        seal(&mut forged, HEADER.salt ^ 1);
        let mut bytes = HEADER.encode().to_vec();
        let mut queued = Vec::new();
        encode_provisional(&mut queued, Lsn(1), b"first");
        let second_start = SEGMENT_HEADER_BYTES + queued.len();
        encode_provisional(&mut queued, Lsn(2), &forged);
        seal(&mut queued, HEADER.salt);
        bytes.extend_from_slice(&queued);
        bytes.resize(4096, 0);
        bytes[second_start + 4] ^= 0x40; // tear the second frame's length
        let end = find_end(&bytes, &HEADER, Position::Last).unwrap();
        assert_eq!(end.last_lsn, Lsn(1));
        assert!(end.torn.is_some());
    }

    #[test]
    fn first_nonzero_finds_bytes_in_words_and_tail() {
        let mut bytes = vec![0u8; 37];
        assert_eq!(first_nonzero(&bytes, 0), None);
        bytes[35] = 1;
        assert_eq!(first_nonzero(&bytes, 3), Some(35));
        bytes[9] = 1;
        assert_eq!(first_nonzero(&bytes, 3), Some(9));
        assert_eq!(first_nonzero(&bytes, 40), None);
    }
}
