//! The WAL record of a transition: a version byte, then the transition in postcard.
//!
//! A record holds everything its application needs (times, limits in force, the payload's
//! location), so that applying the log again after a crash reaches the same state and the same
//! outcome whatever the configuration of the process that replays it. Layout: docs/format.md,
//! section 10.

use std::sync::Arc;

use serde::{Deserialize, Serialize};

use crate::error::EngineError;
use crate::model::{AbortReason, AbortRule, Etag, ObjectMeta, UploadId, WriteCondition};
use crate::payload::{Checksum, ContentAddress, SegmentId};

/// The version byte of a record of a transition without a condition (docs/format.md §10).
/// A change of layout bumps the versions; replay rejects versions it does not know.
pub const RECORD_VERSION: u8 = 1;

/// The version byte of a record of a conditional transition: version 1's layout followed by
/// the [`WriteCondition`]. Written only when there is a condition, so that every other record
/// keeps version 1's bytes.
pub const RECORD_VERSION_CONDITIONAL: u8 = 2;

/// The version byte of a record of an operation versions 1 and 2 do not have
/// ([`Op::SetLifecycleRules`]): the transition, then an optional [`WriteCondition`]. Records
/// versions 1 and 2 can express keep their version, so a build that predates version 3 reads
/// every log that never used what version 3 added.
pub const RECORD_VERSION_EXTENDED: u8 = 3;

/// One transition: when, by whom, what.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct Transition {
    /// The engine's clock when the transition was made.
    pub time_ms: u64,
    /// Who asked for it (the owner or access key the caller named).
    pub actor: String,
    /// What it does.
    pub op: Op,
    /// Preconditions on the object it replaces (PutObject and Complete only); encoded apart,
    /// after the rest (version 2).
    #[serde(skip)]
    pub condition: Option<WriteCondition>,
}

/// What a transition does.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub enum Op {
    /// Creates a bucket.
    CreateBucket {
        /// Its name.
        bucket: String,
    },
    /// Deletes an empty bucket.
    DeleteBucket {
        /// Its name.
        bucket: String,
    },
    /// Sets or clears a bucket's `AbortIncompleteMultipartUpload` rule.
    SetLifecycle {
        /// The bucket.
        bucket: String,
        /// `DaysAfterInitiation`, or `None` to clear.
        abort_after_days: Option<u32>,
        /// The length of a day when it was set.
        day_ms: u64,
    },
    /// Starts an upload.
    CreateUpload {
        /// Its id.
        upload_id: UploadId,
        /// The bucket.
        bucket: String,
        /// The key.
        key: String,
        /// What the object will carry.
        meta: ObjectMeta,
        /// Expiry by TTL. (The lifecycle rule's abort date comes from the bucket's rule as the
        /// record applies: a rule set just before counts.)
        expires_ms: u64,
    },
    /// Adds or replaces a part.
    PutPart {
        /// The upload.
        upload_id: UploadId,
        /// 1..=10000.
        part_number: u32,
        /// The part.
        part: PartRecord,
        /// The upload's new expiry by TTL (activity extends it).
        expires_ms: u64,
        /// Compare-and-set on the upload's version.
        expected_version: Option<u64>,
    },
    /// Makes a part of an upload by reference to a part of an existing object.
    CopyPart {
        /// The upload.
        upload_id: UploadId,
        /// 1..=10000.
        part_number: u32,
        /// The source object's bucket.
        source_bucket: String,
        /// Its key.
        source_key: String,
        /// Its ETag when the copy was prepared: the copy fails if the object changed since.
        source_etag: Etag,
        /// Which of its parts (its index in the object's part table).
        source_index: u32,
        /// The upload's new expiry by TTL.
        expires_ms: u64,
        /// Compare-and-set on the upload's version.
        expected_version: Option<u64>,
    },
    /// Completes an upload into an object.
    Complete {
        /// The upload.
        upload_id: UploadId,
        /// Its bucket (to recognise a repeated completion once the upload is gone).
        bucket: String,
        /// Its key.
        key: String,
        /// The parts the client listed.
        parts: Vec<CompletePart>,
        /// The minimum size of every part but the last, in force when completed.
        min_part_bytes: u64,
        /// `x-amz-mp-object-size`, if the client sent it.
        object_size_bytes: Option<u64>,
        /// Compare-and-set on the upload's version.
        expected_version: Option<u64>,
    },
    /// Ends an upload, releasing its parts.
    Abort {
        /// The upload.
        upload_id: UploadId,
        /// Aborted by a client, or expired.
        reason: AbortReason,
        /// Compare-and-set on the upload's version.
        expected_version: Option<u64>,
    },
    /// Writes an object from one payload.
    PutObject {
        /// The bucket.
        bucket: String,
        /// The key.
        key: String,
        /// Its metadata.
        meta: ObjectMeta,
        /// Its bytes.
        part: PartRecord,
    },
    /// Copies an object by reference to its payloads.
    CopyObject {
        /// The source's bucket.
        source_bucket: String,
        /// The source's key.
        source_key: String,
        /// The source's ETag when prepared: the copy fails if the object changed since.
        source_etag: Etag,
        /// The destination's bucket.
        bucket: String,
        /// The destination's key.
        key: String,
        /// New metadata (`REPLACE`), or `None` to keep the source's (`COPY`).
        meta: Option<ObjectMeta>,
    },
    /// Deletes an object.
    DeleteObject {
        /// The bucket.
        bucket: String,
        /// The key.
        key: String,
    },
    /// Payloads moved by compaction. The payload store applies moves when they are made; the
    /// record is there for replay.
    Moves {
        /// Each move.
        moves: Vec<MoveRecord>,
    },
    // Variants are numbered by their place: new ones go last (docs/format.md §10).
    /// Sets a bucket's `AbortIncompleteMultipartUpload` rules (none: clears them). Only in
    /// records of version 3 (docs/format.md §10).
    SetLifecycleRules {
        /// The bucket.
        bucket: String,
        /// The rules, in the order given.
        rules: Vec<AbortRule>,
        /// The length of a day when they were set.
        day_ms: u64,
    },
}

/// A part's bytes as a record carries them.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct PartRecord {
    /// Length.
    pub size_bytes: u64,
    /// MD5 (the part's ETag).
    pub md5: [u8; 16],
    /// The additional checksum, if the upload or object has one.
    pub checksum: Option<Checksum>,
    /// Where the bytes are.
    pub payload: PayloadRecord,
}

/// Where a payload's bytes are.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub enum PayloadRecord {
    /// Zero bytes.
    Empty,
    /// In a payload segment, synced before the record was appended.
    Stored {
        /// SHA-256.
        address: ContentAddress,
        /// The segment.
        segment: SegmentId,
        /// Offset of the entry's header.
        offset: u64,
        /// Where a damaged copy of the same bytes was, which this one replaces.
        healed_from: Option<(SegmentId, u64)>,
    },
    /// In the record itself (small payloads: one fsync for bytes and state).
    Inline {
        /// SHA-256.
        address: ContentAddress,
        /// The bytes (serialised as one byte string: the same wire format as a sequence of
        /// `u8`, written and read in one copy). Shared, so that applying the record hands
        /// them to the state without a copy under the state's lock.
        #[serde(with = "crate::state::arc_bytes")]
        bytes: Arc<[u8]>,
    },
}

/// One part of a completion's list.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct CompletePart {
    /// The part number.
    pub part_number: u32,
    /// The ETag the client has for it.
    pub etag: [u8; 16],
    /// The checksum the client has for it, if any.
    pub checksum: Option<Vec<u8>>,
}

/// A payload moved by compaction.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct MoveRecord {
    /// SHA-256.
    pub address: ContentAddress,
    /// Length.
    pub len: u64,
    /// Old segment and offset.
    pub from: (SegmentId, u64),
    /// New segment and offset.
    pub to: (SegmentId, u64),
}

/// Encodes a transition as a record.
pub fn encode(transition: &Transition) -> Vec<u8> {
    // Serialising plain data into a Vec cannot fail: postcard fails only on a full buffer or on
    // types it cannot represent, and these types have none.
    let encoded = match (&transition.condition, transition.op.needs_extended_record()) {
        (_, true) => {
            postcard::to_extend(&(transition, &transition.condition), vec![RECORD_VERSION_EXTENDED])
        }
        (None, false) => postcard::to_extend(transition, vec![RECORD_VERSION]),
        (Some(condition), false) => {
            postcard::to_extend(&(transition, condition), vec![RECORD_VERSION_CONDITIONAL])
        }
    };
    encoded.unwrap_or_else(|_| unreachable_encoding())
}

#[cold]
fn unreachable_encoding() -> Vec<u8> {
    // Never reached (see above); an empty record would be refused by the log.
    Vec::new()
}

/// Decodes a record.
pub fn decode(lsn: u64, bytes: &[u8]) -> Result<Transition, EngineError> {
    let undecodable = |reason: String| EngineError::Undecodable { what: "record", lsn, reason };
    let whole = |rest: &[u8]| {
        if rest.is_empty() {
            Ok(())
        } else {
            Err(undecodable(format!("{} bytes after the transition", rest.len())))
        }
    };
    // Versions 1 and 2 predate the operations of version 3: a record that says otherwise
    // was not written by any build.
    let older = |version: u8, transition: Transition| {
        if transition.op.needs_extended_record() {
            Err(undecodable(format!("record version {version} holds a version 3 operation")))
        } else {
            Ok(transition)
        }
    };
    match bytes.split_first() {
        Some((&RECORD_VERSION, body)) => match postcard::take_from_bytes::<Transition>(body) {
            Ok((transition, rest)) => whole(rest).and_then(|()| older(RECORD_VERSION, transition)),
            Err(e) => Err(undecodable(e.to_string())),
        },
        Some((&RECORD_VERSION_CONDITIONAL, body)) => {
            match postcard::take_from_bytes::<(Transition, WriteCondition)>(body) {
                Ok(((transition, condition), rest)) => whole(rest).and_then(|()| {
                    older(
                        RECORD_VERSION_CONDITIONAL,
                        Transition { condition: Some(condition), ..transition },
                    )
                }),
                Err(e) => Err(undecodable(e.to_string())),
            }
        }
        Some((&RECORD_VERSION_EXTENDED, body)) => {
            match postcard::take_from_bytes::<(Transition, Option<WriteCondition>)>(body) {
                Ok(((transition, condition), rest)) => {
                    whole(rest).map(|()| Transition { condition, ..transition })
                }
                Err(e) => Err(undecodable(e.to_string())),
            }
        }
        Some((version, _)) => Err(undecodable(format!("unknown record version {version}"))),
        None => Err(undecodable("empty record".to_owned())),
    }
}

impl Op {
    /// Whether only a record of version 3 can hold it.
    fn needs_extended_record(&self) -> bool {
        matches!(self, Op::SetLifecycleRules { .. })
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::model::EtagMatch;

    fn transition(op: Op) -> Transition {
        Transition { time_ms: 300, actor: "a".to_owned(), op, condition: None }
    }

    #[test]
    fn records_have_the_documented_bytes() {
        // docs/format.md §10: version 1, time 300 as a varint (0xAC 0x02), actor "a", then the
        // variant index and fields.
        let bytes = encode(&transition(Op::CreateBucket { bucket: "bkt".to_owned() }));
        assert_eq!(bytes, [1, 0xAC, 0x02, 1, b'a', 0, 3, b'b', b'k', b't']);
        let bytes = encode(&transition(Op::Moves { moves: Vec::new() }));
        assert_eq!(bytes, [1, 0xAC, 0x02, 1, b'a', 11, 0]);
        let abort = Op::Abort {
            upload_id: UploadId([7; 24]),
            reason: AbortReason::Expired,
            expected_version: Some(2),
        };
        let mut expected = vec![1, 0xAC, 0x02, 1, b'a', 7];
        expected.extend([7; 24]);
        expected.extend([1, 1, 2]);
        assert_eq!(encode(&transition(abort)), expected);
    }

    #[test]
    fn inline_bytes_are_a_length_and_the_bytes() {
        let part = PartRecord {
            size_bytes: 3,
            md5: [9; 16],
            checksum: None,
            payload: PayloadRecord::Inline {
                address: ContentAddress([5; 32]),
                bytes: Arc::from(&[1u8, 2, 3][..]),
            },
        };
        let op = Op::PutObject {
            bucket: "b".to_owned(),
            key: "k".to_owned(),
            meta: ObjectMeta::default(),
            part,
        };
        let mut expected = vec![1, 0xAC, 0x02, 1, b'a', 8, 1, b'b', 1, b'k', 0, 0, 0, 3];
        expected.extend([9; 16]);
        expected.extend([0, 2]);
        expected.extend([5; 32]);
        expected.extend([3, 1, 2, 3]);
        let t = transition(op);
        assert_eq!(encode(&t), expected);
        assert_eq!(decode(1, &expected).unwrap(), t);
    }

    #[test]
    fn conditional_records_are_version_2_with_the_condition_after_the_transition() {
        // docs/format.md §10: version 2, version 1's transition, then the `WriteCondition`.
        let op = Op::DeleteObject { bucket: "b".to_owned(), key: "k".to_owned() };
        let unconditional = transition(op.clone());
        let etag = Etag { md5: [4; 16], parts: Some(3) };
        let conditional = Transition {
            condition: Some(WriteCondition {
                if_match: Some(EtagMatch::Etag(etag)),
                if_none_match: Some(EtagMatch::Any),
            }),
            ..transition(op)
        };
        let v1 = encode(&unconditional);
        assert_eq!(v1, [1, 0xAC, 0x02, 1, b'a', 10, 1, b'b', 1, b'k']);
        let mut expected = vec![2];
        expected.extend(&v1[1..]);
        expected.extend([1, 1]);
        expected.extend([4; 16]);
        expected.extend([1, 3, 1, 0]);
        assert_eq!(encode(&conditional), expected);
        assert_eq!(decode(1, &expected).unwrap(), conditional);
        // Version 1 bytes still decode, without a condition.
        assert_eq!(decode(1, &v1).unwrap(), unconditional);
        // A version 2 record without its condition, or with bytes after it, is damage; so is
        // a version 1 record followed by a condition.
        let mut trailing = expected.clone();
        trailing.push(0);
        let mut v1_with_condition = expected.clone();
        v1_with_condition[0] = 1;
        for bad in [&expected[..v1.len()], &trailing[..], &v1_with_condition[..]] {
            match decode(9, bad) {
                Err(EngineError::Undecodable { lsn: 9, what: "record", .. }) => {}
                other => panic!("{bad:?}: {other:?}"),
            }
        }
    }

    #[test]
    fn lifecycle_rules_are_version_3_and_older_versions_cannot_hold_them() {
        // docs/format.md §10: version 3, the transition with variant 12, then the optional
        // condition (none).
        let op = Op::SetLifecycleRules {
            bucket: "b".to_owned(),
            rules: vec![AbortRule { id: "r".to_owned(), prefix: "t/".to_owned(), days: 2 }],
            day_ms: 5,
        };
        let t = transition(op);
        let expected = [3, 0xAC, 0x02, 1, b'a', 12, 1, b'b', 1, 1, b'r', 2, b't', b'/', 2, 5, 0];
        assert_eq!(encode(&t), expected);
        assert_eq!(decode(1, &expected).unwrap(), t);
        // The same transition under version 1 or 2 was written by no build: damage.
        let mut as_v1 = expected.to_vec();
        as_v1[0] = 1;
        as_v1.pop();
        let mut as_v2 = expected.to_vec();
        as_v2[0] = 2;
        as_v2.pop();
        as_v2.extend([0, 0]);
        for bad in [as_v1, as_v2] {
            match decode(4, &bad) {
                Err(EngineError::Undecodable { lsn: 4, what: "record", reason }) => {
                    assert!(reason.contains("version 3 operation"), "{reason}");
                }
                other => panic!("{bad:?}: {other:?}"),
            }
        }
        // Version 1's SetLifecycle still decodes.
        let old = Op::SetLifecycle { bucket: "b".to_owned(), abort_after_days: Some(2), day_ms: 5 };
        let bytes = [1, 0xAC, 0x02, 1, b'a', 2, 1, b'b', 1, 2, 5];
        assert_eq!(decode(1, &bytes).unwrap(), transition(old));
    }

    #[test]
    fn records_round_trip_and_bad_ones_fail_with_their_lsn() {
        let t = transition(Op::DeleteObject { bucket: "bkt".to_owned(), key: "k".to_owned() });
        assert_eq!(decode(5, &encode(&t)).unwrap(), t);
        let mut trailing = encode(&t);
        trailing.push(0);
        for bad in [&[][..], &[2, 0][..], &[3, 0][..], &[1, 0xFF][..], &trailing[..]] {
            match decode(5, bad) {
                Err(EngineError::Undecodable { lsn: 5, what: "record", .. }) => {}
                other => panic!("{bad:?}: {other:?}"),
            }
        }
    }
}
