//! The uploads of a checkpoint's state section, encoded by hand: the same bytes as postcard
//! gives for `(UploadId, Upload)` pairs (docs/format.md §11), written with one copy per array.
//!
//! Encoding runs under the state's read lock, so commits wait for it (a checkpoint of 200K
//! uploads held the lock for ~150 ms). Through serde, each 16-byte MD5 and 32-byte address is
//! written byte by byte, as a tuple of `u8`s; here each is one slice copy. Rare values (an
//! upload's non-default metadata, a part's additional checksum, an inline payload) still go
//! through postcard, which encodes a value the same standing alone as inside a struct.

use serde::Serialize;

use crate::model::UploadId;
use crate::state::{Part, PartData, Upload};

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
    for (id, upload) in uploads {
        encode_upload(out, id, upload)?;
        written += 1;
    }
    if written == count {
        Ok(())
    } else {
        Err(EncodeError::IndexDisagrees { listed: written, count })
    }
}

/// Appends one `(UploadId, Upload)` pair, its fields in declaration order.
fn encode_upload(out: &mut Vec<u8>, id: &UploadId, upload: &Upload) -> Result<(), postcard::Error> {
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
    for part in parts {
        encode_part(out, part)?;
    }
    Ok(())
}

/// Appends one part, its fields in declaration order.
fn encode_part(out: &mut Vec<u8>, part: &Part) -> Result<(), postcard::Error> {
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
        PartData::Stored(address) => {
            varint(out, 1);
            out.extend_from_slice(&address.0);
        }
        PartData::Inline(inline) => {
            varint(out, 2);
            postcard_value(out, &**inline)?;
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use std::num::NonZeroU64;
    use std::sync::Arc;

    use proptest::prelude::*;
    use proptest::strategy::ValueTree as _;

    use super::*;
    use crate::model::{ChecksumSpec, ChecksumType, ObjectMeta};
    use crate::payload::{Checksum, ChecksumAlgorithm, ContentAddress};
    use crate::state::{InlinePayload, Key};

    fn part_data() -> impl Strategy<Value = PartData> {
        prop_oneof![
            Just(PartData::Empty),
            any::<[u8; 32]>().prop_map(|a| PartData::Stored(ContentAddress(a))),
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
                    bucket: Arc::from(bucket.as_str()),
                    key: Key(Arc::from(key.as_str())),
                    owner: Arc::from(owner.as_str()),
                    initiated_ms,
                    ttl_expires_ms: ttl,
                    abort_ms,
                    version,
                    meta: Arc::new(meta),
                    parts,
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
            let mut by_hand = vec![0xAA];
            encode(&mut by_hand, uploads.len(), uploads.iter().map(|(id, u)| (id, u))).unwrap();
            let by_postcard = postcard::to_extend(&uploads, vec![0xAA]).unwrap();
            prop_assert_eq!(by_hand, by_postcard);
        }
    }

    /// An index that lists fewer or more uploads than there are fails the checkpoint.
    #[test]
    fn a_sequence_shorter_or_longer_than_its_count_fails() {
        let mut runner = proptest::test_runner::TestRunner::deterministic();
        let one = upload().new_tree(&mut runner).unwrap().current();
        let pairs = [one];
        for (count, listed) in [(1, 0), (0, 1), (2, 1)] {
            let mut out = Vec::new();
            let err = encode(&mut out, count, pairs.iter().take(listed).map(|(id, u)| (id, u)));
            assert!(
                matches!(err, Err(EncodeError::IndexDisagrees { listed: l, count: c }) if l == listed && c == count),
                "{count}/{listed}: {err:?}"
            );
        }
    }
}
