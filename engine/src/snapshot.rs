//! The engine's checkpoint: the whole state at an LSN, and the payload store's committed
//! references, in one blob (a version byte, then postcard). Layout: docs/format.md, section 11.

use serde::Deserialize;
#[cfg(test)]
use serde::Serialize;

use crate::error::EngineError;
#[cfg(test)]
use crate::model::AbortRule;
use crate::model::UploadId;
use crate::payload::{ContentAddress, Location};
use crate::state::{State, Upload};

/// The version byte of the checkpoint blobs this build writes: the payloads are listed in the
/// order of their slots, and a stored part names its payload by its position in that list
/// (docs/format.md §11).
pub const SNAPSHOT_VERSION: u8 = 3;

/// The version of checkpoints in which the payloads were listed by ascending address and a
/// stored part named its payload by address; this build still reads them.
pub const SNAPSHOT_VERSION_ADDRESSES: u8 = 2;

/// The version of checkpoints in which a bucket had at most one lifecycle rule, for every key
/// and without an id; this build still reads them.
pub const SNAPSHOT_VERSION_ONE_RULE: u8 = 1;

/// A live payload as the store had it: address, location, committed references.
pub type PayloadEntry = (ContentAddress, Location, u64);

/// A payload entry to fill buffers with.
pub const NO_PAYLOAD: PayloadEntry = (ContentAddress([0; 32]), Location::Empty, 0);

/// The state section as serde would encode it (what `encode_state` must equal).
#[cfg(test)]
#[derive(Serialize)]
struct StateRef<'a> {
    state: &'a State,
    uploads: UploadsInOrder<'a>,
}

/// The uploads as a sequence in (bucket, key, id) order: loading rebuilds the indexes from
/// sorted input.
#[cfg(test)]
struct UploadsInOrder<'a>(&'a State);

#[cfg(test)]
impl Serialize for UploadsInOrder<'_> {
    fn serialize<S: serde::Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        use serde::ser::SerializeSeq as _;
        let mut seq = serializer.serialize_seq(Some(self.0.uploads.len()))?;
        let mut count = 0usize;
        for entry in self.0.uploads_in_order() {
            seq.serialize_element(&entry)?;
            count += 1;
        }
        // Every upload is in its bucket's index; a checkpoint that would drop one fails.
        if count != self.0.uploads.len() {
            return Err(serde::ser::Error::custom("the upload index disagrees with the uploads"));
        }
        seq.end()
    }
}

/// The state section of a checkpoint, decoded.
#[derive(Deserialize)]
pub struct StateImage {
    /// The engine's state, less its uploads.
    pub state: State,
    /// The uploads in progress, in (bucket, key, id) order.
    pub uploads: Vec<(UploadId, Upload)>,
}

/// Bytes before the sections: the version, then the payload section's length (u64).
const PREFIX_BYTES: usize = 9;

/// Encodes the state section of a checkpoint (the part that needs the state's lock): the
/// state less its uploads, then the uploads in (bucket, key, id) order, from which loading
/// rebuilds the indexes. Appended to `buffer` (which should have room: growing it by doubling
/// would copy it meanwhile).
pub fn encode_state(state: &State, buffer: Vec<u8>) -> Result<Vec<u8>, EngineError> {
    let lsn = state.applied_lsn;
    let mut section = postcard::to_extend(state, buffer).map_err(|e| encoding_failed(lsn, &e))?;
    crate::snapshot_uploads::encode(&mut section, state.uploads.len(), state.uploads_in_order())
        .map_err(|e| encoding_failed(lsn, &e))?;
    Ok(section)
}

/// Encodes a checkpoint blob taken at `lsn` from the payload references and the encoded state
/// section: the payload section, then the state section, each decodable on its own (recovery
/// decodes them on two threads).
pub fn encode(
    lsn: u64,
    payloads: &[PayloadEntry],
    state_section: &[u8],
) -> Result<Vec<u8>, EngineError> {
    let mut blob = vec![SNAPSHOT_VERSION, 0, 0, 0, 0, 0, 0, 0, 0];
    blob = postcard::to_extend(payloads, blob).map_err(|e| encoding_failed(lsn, &e))?;
    let payload_bytes = (blob.len() - PREFIX_BYTES) as u64;
    if let Some(length) = blob.get_mut(1..PREFIX_BYTES) {
        length.copy_from_slice(&payload_bytes.to_le_bytes());
    }
    blob.extend_from_slice(state_section);
    Ok(blob)
}

fn encoding_failed(lsn: u64, e: &dyn std::fmt::Display) -> EngineError {
    EngineError::Undecodable { what: "checkpoint (encoding)", lsn, reason: e.to_string() }
}

/// A checkpoint blob's two sections, and the version they are in.
#[derive(Clone, Copy, Debug)]
pub struct Sections<'b> {
    /// The blob's version byte.
    pub version: u8,
    /// The payload section.
    pub payloads: &'b [u8],
    /// The state section.
    pub state: &'b [u8],
}

/// Splits a checkpoint blob taken at `lsn` into its payload and state sections.
pub fn split(lsn: u64, blob: &[u8]) -> Result<Sections<'_>, EngineError> {
    let undecodable = |reason: String| EngineError::Undecodable { what: "checkpoint", lsn, reason };
    let (&version, rest) =
        blob.split_first().ok_or_else(|| undecodable("empty checkpoint".into()))?;
    if !(SNAPSHOT_VERSION_ONE_RULE..=SNAPSHOT_VERSION).contains(&version) {
        return Err(undecodable(format!("unknown checkpoint version {version}")));
    }
    let (length, rest) = rest.split_at_checked(8).ok_or_else(|| undecodable("truncated".into()))?;
    let mut word = [0u8; 8];
    word.copy_from_slice(length);
    let payload_bytes = usize::try_from(u64::from_le_bytes(word)).unwrap_or(usize::MAX);
    let (payloads, state) = rest.split_at_checked(payload_bytes).ok_or_else(|| {
        undecodable(format!("a payload section of {payload_bytes} bytes overruns the blob"))
    })?;
    Ok(Sections { version, payloads, state })
}

/// Decodes one section, which must hold nothing after its value.
fn decode_section<T: serde::de::DeserializeOwned>(
    lsn: u64,
    bytes: &[u8],
) -> Result<T, EngineError> {
    let undecodable = |reason: String| EngineError::Undecodable { what: "checkpoint", lsn, reason };
    match postcard::take_from_bytes(bytes) {
        Ok((value, [])) => Ok(value),
        Ok((_, rest)) => Err(undecodable(format!("{} bytes after a section", rest.len()))),
        Err(e) => Err(undecodable(e.to_string())),
    }
}

/// Decodes the payload section of a blob of `version`. From version 3 on, every payload listed
/// is in a segment and has references (its position is the slot its parts name).
pub fn decode_payloads(
    lsn: u64,
    version: u8,
    bytes: &[u8],
) -> Result<Vec<PayloadEntry>, EngineError> {
    let entries: Vec<PayloadEntry> = decode_section(lsn, bytes)?;
    if version >= SNAPSHOT_VERSION
        && let Some(at) = entries.iter().position(|(_, location, refs)| {
            *refs == 0 || !matches!(location, Location::Segment { .. })
        })
    {
        return Err(EngineError::Undecodable {
            what: "checkpoint",
            lsn,
            reason: format!("payload {at} of the list has no references or no segment"),
        });
    }
    Ok(entries)
}

/// Whether the parts of a blob of `version` name their payloads by address (else by position).
pub fn names_payloads_by_address(version: u8) -> bool {
    version <= SNAPSHOT_VERSION_ADDRESSES
}

/// Decodes the state section of a blob of `version`: the state less its uploads through
/// postcard, then the uploads by hand (`snapshot_uploads`, most of the section).
pub fn decode_state(lsn: u64, version: u8, bytes: &[u8]) -> Result<StateImage, EngineError> {
    let undecodable = |reason: String| EngineError::Undecodable { what: "checkpoint", lsn, reason };
    let image = if version == SNAPSHOT_VERSION_ONE_RULE {
        decode_section::<one_rule::StateImage>(lsn, bytes).map(StateImage::from)
    } else {
        postcard::take_from_bytes::<State>(bytes).map_err(|e| undecodable(e.to_string())).and_then(
            |(state, rest)| {
                let uploads = crate::snapshot_uploads::decode(rest)
                    .map_err(|e| undecodable(e.to_string()))?;
                Ok(StateImage { state, uploads })
            },
        )
    };
    crate::state::decode::forget_recent();
    image
}

/// The state section of version 1, field for field, and what it is in this version.
mod one_rule {
    use std::collections::BTreeMap;

    use serde::Deserialize;

    use arcstr::ArcStr;

    use crate::model::{AbortRule, UploadId};
    use crate::state::{self, Key, Object, Upload};

    #[derive(Deserialize)]
    pub struct StateImage {
        state: State,
        uploads: Vec<(UploadId, Upload)>,
    }

    #[derive(Deserialize)]
    struct State {
        buckets: BTreeMap<ArcStr, Bucket>,
        part_count: u64,
        object_count: u64,
        applied_lsn: u64,
    }

    #[derive(Deserialize)]
    struct Bucket {
        name: ArcStr,
        created_ms: u64,
        abort_after_days: Option<u32>,
        day_ms: u64,
        objects: BTreeMap<Key, Object>,
        upload_count: u64,
    }

    impl From<StateImage> for super::StateImage {
        fn from(image: StateImage) -> super::StateImage {
            let buckets = image
                .state
                .buckets
                .into_iter()
                .map(|(name, b)| {
                    let lifecycle = b.abort_after_days.map(|days| AbortRule {
                        id: AbortRule::UNNAMED_ID.to_owned(),
                        prefix: String::new(),
                        days,
                    });
                    let bucket = state::Bucket {
                        name: b.name,
                        created_ms: b.created_ms,
                        lifecycle: lifecycle.into_iter().collect(),
                        day_ms: b.day_ms,
                        objects: b.objects,
                        uploads: BTreeMap::new(),
                        upload_count: b.upload_count,
                    };
                    (name, bucket)
                })
                .collect();
            let state = state::State {
                buckets,
                part_count: image.state.part_count,
                object_count: image.state.object_count,
                applied_lsn: image.state.applied_lsn,
                ..state::State::default()
            };
            super::StateImage { state, uploads: image.uploads }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::model::ObjectMeta;
    use crate::record::{Op, Transition};

    /// The section `encode_state` writes by hand is the one serde writes, for a state with
    /// buckets, lifecycle rules and uploads in several keys (parts: `snapshot_uploads`).
    #[test]
    fn the_state_section_is_what_serde_would_write() {
        let mut state = State::default();
        let mut lsn = 0;
        let mut apply = |state: &mut State, op: Op| {
            lsn += 1;
            let transition =
                Transition { time_ms: lsn, actor: "alice".into(), op, condition: None };
            state.apply(lsn, &transition, None).unwrap();
        };
        for bucket in ["b", "a"] {
            apply(&mut state, Op::CreateBucket { bucket: bucket.into() });
        }
        let rule = Op::SetLifecycle { bucket: "a".into(), abort_after_days: Some(2), day_ms: 1000 };
        apply(&mut state, rule);
        for (n, (bucket, key)) in
            [("b", "z"), ("a", "k"), ("a", "k"), ("b", "é")].into_iter().enumerate()
        {
            let meta = ObjectMeta { content_type: Some(format!("t/{n}")), ..ObjectMeta::default() };
            let upload_id = UploadId([u8::try_from(n).unwrap(); 24]);
            let create = Op::CreateUpload {
                upload_id,
                bucket: bucket.into(),
                key: key.into(),
                meta,
                expires_ms: 1_000_000,
            };
            apply(&mut state, create);
        }
        let by_serde =
            postcard::to_allocvec(&StateRef { state: &state, uploads: UploadsInOrder(&state) })
                .unwrap();
        assert_eq!(encode_state(&state, Vec::new()).unwrap(), by_serde);
        assert_eq!(encode_state(&state, Vec::with_capacity(1 << 16)).unwrap(), by_serde);
        let image: StateImage = decode_section(lsn, &by_serde).unwrap();
        assert_eq!(image.uploads.len(), 4);
    }

    /// Checkpoints written by version 1 (blobs a build before version 2 wrote, kept in
    /// `engine/fixtures/`) still load.
    #[test]
    fn version_1_checkpoints_load() {
        for seed in [
            &include_bytes!("../fixtures/checkpoint-v1-a.bin")[..],
            &include_bytes!("../fixtures/checkpoint-v1-b.bin")[..],
        ] {
            let sections = split(7, seed).unwrap();
            assert_eq!(sections.version, SNAPSHOT_VERSION_ONE_RULE);
            let payloads = decode_payloads(7, sections.version, sections.payloads).unwrap();
            let handle_of: crate::state::addresses::HandleOf = Box::new(move |address| {
                let slot = payloads.iter().position(|(a, ..)| a == address)?;
                Some(crate::payload::PayloadHandle(u32::try_from(slot).ok()?))
            });
            let image = crate::state::addresses::decoding_addresses(handle_of, || {
                decode_state(7, sections.version, sections.state)
            })
            .unwrap();
            assert!(!image.state.buckets.is_empty());
        }
    }

    /// A version 1 bucket's one rule (days, for every key) becomes a rule of that many days
    /// for every key, under the id it was shown with.
    #[test]
    fn a_version_1_rule_becomes_an_unnamed_rule_for_every_key() {
        // The state section of version 1 (docs/format.md §11): one bucket "b" created at 9,
        // abort after 3 days of 1000 ms, no objects, no uploads; counters 0, 0, applied LSN 4.
        let section = [1, 1, b'b', 1, b'b', 9, 1, 3, 0xE8, 0x07, 0, 0, 0, 0, 4, 0];
        let image = decode_state(4, SNAPSHOT_VERSION_ONE_RULE, &section).unwrap();
        let bucket = &image.state.buckets["b"];
        let rule =
            AbortRule { id: AbortRule::UNNAMED_ID.to_owned(), prefix: String::new(), days: 3 };
        assert_eq!(bucket.lifecycle, [rule]);
        assert_eq!((bucket.created_ms, bucket.day_ms), (9, 1000));
        assert_eq!(image.state.applied_lsn, 4);
        // The same bytes are not a version 2 section.
        assert!(decode_state(4, SNAPSHOT_VERSION, &section).is_err());
    }
}
