//! The uploads of a checkpoint's state section, encoded and decoded by hand: the same bytes as
//! postcard gives for a `Vec<(UploadId, Upload)>` (docs/format.md §11), each array one slice
//! copy.
//!
//! Encoding runs under the state's read lock, so commits wait for it (a checkpoint of 200K
//! uploads held the lock for ~150 ms), and decoding is most of recovery. Through serde, each
//! 16-byte MD5 and 32-byte address is handled byte by byte, as a tuple of `u8`s. Rare values
//! (an upload's non-default metadata, a part's additional checksum, an inline payload) still go
//! through postcard, which encodes a value the same standing alone as inside a struct.
//!
//! The decoder takes untrusted bytes: every length is checked against the bytes left before
//! anything is allocated, and every malformed input is an error, never a panic.

use std::num::NonZeroU64;
use std::sync::Arc;

use arcstr::ArcStr;
use serde::Serialize;
use serde::de::DeserializeOwned;

use crate::model::{ObjectMeta, UploadId};
use crate::payload::{Checksum, ContentAddress, PayloadHandle};
use crate::state::{InlinePayload, Key, Part, PartData, PartTable, Upload, addresses};

/// Why the uploads could not be encoded.
#[derive(Debug, thiserror::Error)]
pub enum EncodeError {
    /// A value encoded through postcard failed.
    #[error(transparent)]
    Postcard(#[from] postcard::Error),
    /// The upload index and the uploads disagree: a checkpoint would drop or repeat uploads.
    #[error("the upload index lists {listed} uploads where there are {count}")]
    IndexDisagrees {
        /// Pairs the index gave.
        listed: usize,
        /// Uploads there are.
        count: usize,
    },
}

/// Appends `value` as postcard's varint: 7 bits a byte, least significant first.
fn varint(out: &mut Vec<u8>, mut value: u64) {
    while value >= 0x80 {
        out.push(low_byte(value) | 0x80);
        value >>= 7;
    }
    out.push(low_byte(value));
}

/// The low 8 bits of `value`.
fn low_byte(value: u64) -> u8 {
    value.to_le_bytes()[0]
}

/// Appends a string: its length as a varint, then its bytes.
fn string(out: &mut Vec<u8>, text: &str) {
    varint(out, text.len() as u64);
    out.extend_from_slice(text.as_bytes());
}

/// Appends `value` through postcard.
fn postcard_value<T: Serialize + ?Sized>(
    out: &mut Vec<u8>,
    value: &T,
) -> Result<(), postcard::Error> {
    let taken = std::mem::take(out);
    *out = postcard::to_extend(value, taken)?;
    Ok(())
}

/// Appends the sequence of `uploads` (postcard's `Vec<(UploadId, Upload)>`), which must yield
/// exactly `count` pairs; fails if it yields another number.
pub fn encode<'a>(
    out: &mut Vec<u8>,
    count: usize,
    uploads: impl Iterator<Item = (&'a UploadId, &'a Upload)>,
) -> Result<(), EncodeError> {
    varint(out, count as u64);
    let mut written = 0usize;
    // The positions are looked up once: a thread-local access per part took a fifth of the
    // encoding, which holds the state's lock.
    addresses::with_positions(|positions| -> Result<(), EncodeError> {
        for (id, upload) in uploads {
            encode_upload(out, id, upload, positions)?;
            written += 1;
        }
        Ok(())
    })?;
    if written == count {
        Ok(())
    } else {
        Err(EncodeError::IndexDisagrees { listed: written, count })
    }
}

/// Appends one `(UploadId, Upload)` pair, its fields in declaration order.
fn encode_upload(
    out: &mut Vec<u8>,
    id: &UploadId,
    upload: &Upload,
    positions: &[u32],
) -> Result<(), postcard::Error> {
    let Upload { bucket, key, owner, initiated_ms, ttl_expires_ms, abort_ms, version, meta, parts } =
        upload;
    out.extend_from_slice(&id.0);
    string(out, bucket);
    string(out, &key.0);
    string(out, owner);
    varint(out, *initiated_ms);
    varint(out, *ttl_expires_ms);
    match abort_ms {
        None => out.push(0),
        Some(date) => {
            out.push(1);
            varint(out, date.get());
        }
    }
    varint(out, *version);
    postcard_value(out, &**meta)?;
    varint(out, parts.len() as u64);
    for part in parts.iter() {
        encode_part(out, &part, positions)?;
    }
    Ok(())
}

/// Appends one part, its fields in declaration order.
fn encode_part(out: &mut Vec<u8>, part: &Part, positions: &[u32]) -> Result<(), postcard::Error> {
    let Part { number, size_bytes, md5, checksum, time_ms, data } = part;
    varint(out, u64::from(*number));
    varint(out, *size_bytes);
    out.extend_from_slice(md5);
    match checksum {
        None => out.push(0),
        Some(checksum) => {
            out.push(1);
            postcard_value(out, &**checksum)?;
        }
    }
    varint(out, *time_ms);
    // The enum's variant index, then its field.
    match data {
        PartData::Empty => varint(out, 0),
        PartData::Stored(handle) => {
            varint(out, 1);
            let position = addresses::listed(positions, *handle).ok_or_else(|| {
                <postcard::Error as serde::ser::Error>::custom("a payload handle is not listed")
            })?;
            varint(out, u64::from(position));
        }
        PartData::Inline(inline) => {
            varint(out, 2);
            postcard_value(out, &**inline)?;
        }
    }
    Ok(())
}

/// Why the uploads could not be decoded.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum DecodeError {
    /// The bytes end inside a value.
    #[error("the uploads end early, in {0}")]
    Truncated(&'static str),
    /// A value is malformed.
    #[error("malformed {0} in the uploads")]
    Malformed(&'static str),
    /// A value decoded through postcard failed.
    #[error("{what} in the uploads: {reason}")]
    Postcard {
        /// Which value.
        what: &'static str,
        /// What postcard said.
        reason: String,
    },
}

/// The least bytes one upload takes: its id, three empty strings, four one-byte numbers and
/// tags (initiation, expiry, no abort date, version), default metadata (three) and no parts
/// (one). A count beyond `bytes / this` cannot be honest.
const UPLOAD_BYTES_MIN: usize = 24 + 3 + 4 + 3 + 1;

/// Reads from a byte slice, front to back.
struct Reader<'b> {
    bytes: &'b [u8],
}

impl<'b> Reader<'b> {
    fn take(&mut self, n: usize, what: &'static str) -> Result<&'b [u8], DecodeError> {
        let (taken, rest) = self.bytes.split_at_checked(n).ok_or(DecodeError::Truncated(what))?;
        self.bytes = rest;
        Ok(taken)
    }

    fn array<const N: usize>(&mut self, what: &'static str) -> Result<[u8; N], DecodeError> {
        let mut array = [0u8; N];
        array.copy_from_slice(self.take(N, what)?);
        Ok(array)
    }

    fn byte(&mut self, what: &'static str) -> Result<u8, DecodeError> {
        Ok(self.array::<1>(what)?[0])
    }

    /// A varint of at most `bits` bits, as postcard writes it: 7 bits a byte, at most
    /// `ceil(bits / 7)` bytes, and no bit beyond `bits`.
    fn varint(&mut self, bits: u32, what: &'static str) -> Result<u64, DecodeError> {
        let mut value = 0u64;
        for shift in (0..bits).step_by(7) {
            let byte = self.byte(what)?;
            let low = u64::from(byte & 0x7F);
            if shift + 7 > bits && low >> (bits - shift) != 0 {
                return Err(DecodeError::Malformed(what));
            }
            value |= low << shift;
            if byte & 0x80 == 0 {
                return Ok(value);
            }
        }
        Err(DecodeError::Malformed(what))
    }

    fn u64(&mut self, what: &'static str) -> Result<u64, DecodeError> {
        self.varint(64, what)
    }

    /// A length that cannot exceed the bytes left (each counted thing takes at least
    /// `min_bytes_each`).
    fn length(&mut self, min_bytes_each: usize, what: &'static str) -> Result<usize, DecodeError> {
        let length = usize::try_from(self.u64(what)?).map_err(|_| DecodeError::Malformed(what))?;
        if length > self.bytes.len() / min_bytes_each.max(1) {
            return Err(DecodeError::Truncated(what));
        }
        Ok(length)
    }

    fn str(&mut self, what: &'static str) -> Result<&'b str, DecodeError> {
        let length = self.length(1, what)?;
        std::str::from_utf8(self.take(length, what)?).map_err(|_| DecodeError::Malformed(what))
    }

    /// An option's tag: false for `None`, true for `Some`.
    fn option(&mut self, what: &'static str) -> Result<bool, DecodeError> {
        match self.byte(what)? {
            0 => Ok(false),
            1 => Ok(true),
            _ => Err(DecodeError::Malformed(what)),
        }
    }

    /// A value through postcard.
    fn postcard<T: DeserializeOwned>(&mut self, what: &'static str) -> Result<T, DecodeError> {
        let (value, rest) = postcard::take_from_bytes(self.bytes)
            .map_err(|e| DecodeError::Postcard { what, reason: e.to_string() })?;
        self.bytes = rest;
        Ok(value)
    }
}

/// A string shared with the last one decoded in its place, when equal: most uploads repeat
/// their bucket and owner (`State::restore` interns them in any case; this spares the
/// allocations).
#[derive(Default)]
struct LastStr(Option<ArcStr>);

impl LastStr {
    fn share(&mut self, text: &str) -> ArcStr {
        match &self.0 {
            Some(last) if **last == *text => ArcStr::clone(last),
            _ => {
                let fresh = ArcStr::from(text);
                self.0 = Some(ArcStr::clone(&fresh));
                fresh
            }
        }
    }
}

/// Decodes a sequence of uploads that must fill `bytes` exactly.
pub fn decode(bytes: &[u8]) -> Result<Vec<(UploadId, Upload)>, DecodeError> {
    let mut reader = Reader { bytes };
    let count = reader.length(UPLOAD_BYTES_MIN, "the upload count")?;
    let mut uploads = Vec::with_capacity(count);
    let (mut bucket, mut owner) = (LastStr::default(), LastStr::default());
    let default_meta = Arc::new(ObjectMeta::default());
    for _ in 0..count {
        let id = UploadId(reader.array("an upload id")?);
        let upload = Upload {
            bucket: bucket.share(reader.str("a bucket name")?),
            key: Key(ArcStr::from(reader.str("a key")?)),
            owner: owner.share(reader.str("an owner")?),
            initiated_ms: reader.u64("an initiation time")?,
            ttl_expires_ms: reader.u64("an expiry time")?,
            abort_ms: match reader.option("an abort date")? {
                false => None,
                // An older build could write 0 (see `Upload::abort_ms`).
                true => {
                    Some(NonZeroU64::new(reader.u64("an abort date")?).unwrap_or(NonZeroU64::MIN))
                }
            },
            version: reader.u64("a version")?,
            meta: {
                let meta: ObjectMeta = reader.postcard("metadata")?;
                if meta == *default_meta { Arc::clone(&default_meta) } else { Arc::new(meta) }
            },
            parts: decode_parts(&mut reader)?,
        };
        uploads.push((id, upload));
    }
    if reader.bytes.is_empty() {
        Ok(uploads)
    } else {
        Err(DecodeError::Malformed("bytes after the last upload"))
    }
}

/// The least bytes one part takes (number, size, MD5, checksum tag, time, data tag).
const PART_BYTES_MIN: usize = 1 + 1 + 16 + 1 + 1 + 1;

fn decode_parts(reader: &mut Reader<'_>) -> Result<PartTable, DecodeError> {
    let count = reader.length(PART_BYTES_MIN, "a part count")?;
    let mut parts = PartTable::with_capacity(count);
    for _ in 0..count {
        let number = u16::try_from(reader.varint(16, "a part number")?)
            .map_err(|_| DecodeError::Malformed("a part number"))?;
        let size_bytes = reader.u64("a part size")?;
        let md5 = reader.array("a part's MD5")?;
        let checksum = match reader.option("a part's checksum")? {
            false => None,
            true => Some(Box::new(reader.postcard::<Checksum>("a part's checksum")?)),
        };
        let time_ms = reader.u64("a part's time")?;
        let data = match reader.varint(32, "a part's data")? {
            0 => PartData::Empty,
            1 if addresses::by_address() => {
                let address = ContentAddress(reader.array("a part's address")?);
                let handle = addresses::handle_of(&address)
                    .ok_or(DecodeError::Malformed("a part's payload, absent from the payloads"))?;
                PartData::Stored(handle)
            }
            1 => {
                let position = u32::try_from(reader.varint(32, "a part's payload")?)
                    .map_err(|_| DecodeError::Malformed("a part's payload"))?;
                PartData::Stored(PayloadHandle(position))
            }
            2 => PartData::Inline(Box::new(reader.postcard::<InlinePayload>("inline bytes")?)),
            _ => return Err(DecodeError::Malformed("a part's data")),
        };
        parts.push(&Part { number, size_bytes, md5, checksum, time_ms, data });
    }
    Ok(parts)
}

#[cfg(test)]
mod tests {
    use std::num::NonZeroU64;
    use std::sync::Arc;

    use proptest::prelude::*;
    use proptest::strategy::ValueTree as _;

    use super::*;
    use crate::model::{ChecksumSpec, ChecksumType, ObjectMeta};
    use crate::payload::{Checksum, ChecksumAlgorithm, ContentAddress, PayloadHandle};
    use crate::state::{InlinePayload, Key};

    /// Handles the strategies give out are below this.
    const SLOTS: u32 = 16;

    fn slot_address(n: u32) -> ContentAddress {
        let mut address = [0x5A; 32];
        address[..4].copy_from_slice(&n.to_le_bytes());
        ContentAddress(address)
    }

    /// Runs `f` with the positions of slots `0..SLOTS` at hand (each its own), to encode.
    fn with_slots<R>(f: impl FnOnce() -> R) -> R {
        addresses::encoding((0..SLOTS).collect(), f).0
    }

    /// Uploads whose parts name payloads by address (version 2) decode to the handles of
    /// those addresses.
    #[test]
    fn addresses_of_version_2_decode_to_their_handles() {
        let mut runner = proptest::test_runner::TestRunner::deterministic();
        let mut one = upload().new_tree(&mut runner).unwrap().current();
        let part = Part {
            number: 1,
            size_bytes: 3,
            md5: [7; 16],
            checksum: None,
            time_ms: 9,
            data: PartData::Stored(PayloadHandle(5)),
        };
        one.1.parts = PartTable::from_parts(vec![part.clone()]);
        let mut bytes = Vec::new();
        with_slots(|| encode(&mut bytes, 1, std::iter::once((&one.0, &one.1)))).unwrap();
        // The part is the last thing written: its position (one byte) becomes an address.
        assert_eq!(bytes.pop(), Some(5));
        bytes.extend_from_slice(&slot_address(11).0);
        let handle_of: addresses::HandleOf =
            Box::new(|a: &ContentAddress| (*a == slot_address(11)).then_some(PayloadHandle(5)));
        let decoded = addresses::decoding_addresses(handle_of, || decode(&bytes)).unwrap();
        assert_eq!(decoded, vec![one.clone()]);
        let unknown: addresses::HandleOf = Box::new(|_: &ContentAddress| None);
        assert!(addresses::decoding_addresses(unknown, || decode(&bytes)).is_err());
    }

    fn part_data() -> impl Strategy<Value = PartData> {
        prop_oneof![
            Just(PartData::Empty),
            (0..SLOTS).prop_map(|n| PartData::Stored(PayloadHandle(n))),
            (any::<[u8; 32]>(), proptest::collection::vec(any::<u8>(), 0..300)).prop_map(
                |(a, bytes)| {
                    PartData::Inline(Box::new(InlinePayload {
                        address: ContentAddress(a),
                        bytes: Arc::from(bytes),
                    }))
                }
            ),
        ]
    }

    fn part() -> impl Strategy<Value = Part> {
        let checksum = proptest::option::of(proptest::collection::vec(any::<u8>(), 0..40));
        (any::<u16>(), any::<u64>(), any::<[u8; 16]>(), checksum, any::<u64>(), part_data())
            .prop_map(|(number, size_bytes, md5, checksum, time_ms, data)| Part {
                number,
                size_bytes,
                md5,
                checksum: checksum.map(|value| {
                    Box::new(Checksum { algorithm: ChecksumAlgorithm::Sha256, value })
                }),
                time_ms,
                data,
            })
    }

    fn meta() -> impl Strategy<Value = ObjectMeta> {
        let user = proptest::collection::vec(("[a-z]{0,8}", "\\PC{0,12}"), 0..3);
        (proptest::option::of("\\PC{0,20}"), user, any::<bool>()).prop_map(
            |(content_type, user, checksum)| ObjectMeta {
                content_type,
                user,
                checksum: checksum.then_some(ChecksumSpec {
                    algorithm: ChecksumAlgorithm::Crc32,
                    kind: ChecksumType::FullObject,
                }),
            },
        )
    }

    fn upload() -> impl Strategy<Value = (UploadId, Upload)> {
        let texts = ("\\PC{0,10}", "\\PC{0,40}", "\\PC{0,10}");
        let numbers = (any::<u64>(), any::<u64>(), any::<Option<NonZeroU64>>(), any::<u64>());
        let parts = proptest::collection::vec(part(), 0..5);
        (any::<[u8; 24]>(), texts, numbers, meta(), parts).prop_map(
            |(id, (bucket, key, owner), (initiated_ms, ttl, abort_ms, version), meta, parts)| {
                let upload = Upload {
                    bucket: ArcStr::from(bucket.as_str()),
                    key: Key(ArcStr::from(key.as_str())),
                    owner: ArcStr::from(owner.as_str()),
                    initiated_ms,
                    ttl_expires_ms: ttl,
                    abort_ms,
                    version,
                    meta: Arc::new(meta),
                    parts: PartTable::from_parts(parts),
                };
                (UploadId(id), upload)
            },
        )
    }

    proptest! {
        /// The hand-written bytes are postcard's, for every field's every shape.
        #[test]
        fn uploads_encode_as_postcard_encodes_them(
            uploads in proptest::collection::vec(upload(), 0..6)
        ) {
            let (by_hand, by_postcard) = with_slots(|| {
                let mut by_hand = vec![0xAA];
                encode(&mut by_hand, uploads.len(), uploads.iter().map(|(id, u)| (id, u)))
                    .unwrap();
                (by_hand, postcard::to_extend(&uploads, vec![0xAA]).unwrap())
            });
            prop_assert_eq!(by_hand, by_postcard);
        }
    }

    proptest! {
        /// What the encoder writes decodes to what it was given, and decodes as postcard
        /// decodes it.
        #[test]
        fn uploads_decode_as_postcard_decodes_them(
            uploads in proptest::collection::vec(upload(), 0..6)
        ) {
            let (decoded, by_postcard) = with_slots(|| {
                let mut bytes = Vec::new();
                encode(&mut bytes, uploads.len(), uploads.iter().map(|(id, u)| (id, u)))
                    .unwrap();
                let by_postcard: Vec<(UploadId, Upload)> = postcard::from_bytes(&bytes).unwrap();
                (decode(&bytes).unwrap(), by_postcard)
            });
            prop_assert_eq!(&decoded, &uploads);
            prop_assert_eq!(decoded, by_postcard);
        }

        /// Every cut of a valid sequence, and every byte changed, gives an error or a value,
        /// never a panic; a cut never decodes, and neither does a byte added at the end.
        #[test]
        fn damaged_sequences_fail_cleanly(
            uploads in proptest::collection::vec(upload(), 1..3),
            flip in any::<(usize, u8)>(),
        ) {
            with_slots(|| {
                let mut bytes = Vec::new();
                encode(&mut bytes, uploads.len(), uploads.iter().map(|(id, u)| (id, u)))
                    .unwrap();
                for cut in 0..bytes.len() {
                    assert!(decode(&bytes[..cut]).is_err(), "cut at {cut}");
                }
                let mut longer = bytes.clone();
                longer.push(0);
                assert!(decode(&longer).is_err());
                let mut flipped = bytes;
                let at = flip.0 % flipped.len();
                flipped[at] ^= flip.1 | 1;
                let _ = decode(&flipped);
            });
        }

        /// Arbitrary bytes never panic the decoder, and it accepts no more than postcard does.
        #[test]
        fn arbitrary_bytes_fail_cleanly(bytes in proptest::collection::vec(any::<u8>(), 0..400)) {
            let (by_hand, by_postcard) = with_slots(|| {
                (decode(&bytes), postcard::from_bytes::<Vec<(UploadId, Upload)>>(&bytes))
            });
            if by_hand.is_ok() {
                prop_assert!(by_postcard.is_ok());
            }
        }
    }

    /// A sequence of the smallest uploads there can be decodes (the count's bound is exact).
    #[test]
    fn the_smallest_uploads_decode() {
        let smallest = Upload {
            bucket: ArcStr::from(""),
            key: Key(ArcStr::from("")),
            owner: ArcStr::from(""),
            initiated_ms: 0,
            ttl_expires_ms: 0,
            abort_ms: None,
            version: 0,
            meta: Arc::default(),
            parts: PartTable::default(),
        };
        let uploads: Vec<_> = (0..10u8).map(|n| (UploadId([n; 24]), smallest.clone())).collect();
        let mut bytes = Vec::new();
        encode(&mut bytes, uploads.len(), uploads.iter().map(|(id, u)| (id, u))).unwrap();
        assert_eq!(bytes.len(), 1 + 10 * UPLOAD_BYTES_MIN);
        assert_eq!(decode(&bytes).unwrap(), uploads);
    }

    /// Varints: the largest value of each width decodes, one bit more does not.
    #[test]
    fn varints_are_bounded_by_their_width() {
        let read = |bytes: &[u8], bits| Reader { bytes }.varint(bits, "a test varint");
        assert_eq!(read(&[0xFF, 0xFF, 0x03], 16), Ok(u64::from(u16::MAX)));
        assert!(read(&[0xFF, 0xFF, 0x07], 16).is_err());
        assert!(read(&[0x80, 0x80, 0x80], 16).is_err());
        let mut max = vec![0xFF; 9];
        max.push(0x01);
        assert_eq!(read(&max, 64), Ok(u64::MAX));
        max[9] = 0x02;
        assert!(read(&max, 64).is_err());
        assert_eq!(read(&[0x00], 64), Ok(0));
        assert!(read(&[], 64).is_err());
    }

    /// An index that lists fewer or more uploads than there are fails the checkpoint.
    #[test]
    fn a_sequence_shorter_or_longer_than_its_count_fails() {
        let mut runner = proptest::test_runner::TestRunner::deterministic();
        let one = upload().new_tree(&mut runner).unwrap().current();
        let pairs = [one];
        for (count, listed) in [(1, 0), (0, 1), (2, 1)] {
            let mut out = Vec::new();
            let err = with_slots(|| {
                encode(&mut out, count, pairs.iter().take(listed).map(|(id, u)| (id, u)))
            });
            assert!(
                matches!(err, Err(EncodeError::IndexDisagrees { listed: l, count: c }) if l == listed && c == count),
                "{count}/{listed}: {err:?}"
            );
        }
    }
}
