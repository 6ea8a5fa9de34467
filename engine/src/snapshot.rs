//! The engine's checkpoint: the whole state at an LSN, and the payload store's committed
//! references, in one blob (a version byte, then postcard). Layout: docs/format.md, section 11.

use serde::{Deserialize, Serialize};

use crate::error::EngineError;
use crate::model::UploadId;
use crate::payload::{ContentAddress, Location};
use crate::state::{State, Upload};

/// The version byte of the checkpoint blobs this build writes.
pub const SNAPSHOT_VERSION: u8 = 1;

/// A live payload as the store had it: address, location, committed references.
pub type PayloadEntry = (ContentAddress, Location, u64);

#[derive(Serialize)]
struct StateRef<'a> {
    state: &'a State,
    uploads: UploadsInOrder<'a>,
}

/// The uploads as a sequence in (bucket, key, id) order: loading rebuilds the indexes from
/// sorted input.
struct UploadsInOrder<'a>(&'a State);

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

/// Encodes the state section of a checkpoint (the part that needs the state's lock).
pub fn encode_state(state: &State) -> Result<Vec<u8>, EngineError> {
    postcard::to_allocvec(&StateRef { state, uploads: UploadsInOrder(state) })
        .map_err(|e| encoding_failed(state.applied_lsn, &e))
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

fn encoding_failed(lsn: u64, e: &postcard::Error) -> EngineError {
    EngineError::Undecodable { what: "checkpoint (encoding)", lsn, reason: e.to_string() }
}

/// Splits a checkpoint blob taken at `lsn` into its payload and state sections.
pub fn split(lsn: u64, blob: &[u8]) -> Result<(&[u8], &[u8]), EngineError> {
    let undecodable = |reason: String| EngineError::Undecodable { what: "checkpoint", lsn, reason };
    let (version, rest) =
        blob.split_first().ok_or_else(|| undecodable("empty checkpoint".into()))?;
    if *version != SNAPSHOT_VERSION {
        return Err(undecodable(format!("unknown checkpoint version {version}")));
    }
    let (length, rest) = rest.split_at_checked(8).ok_or_else(|| undecodable("truncated".into()))?;
    let mut word = [0u8; 8];
    word.copy_from_slice(length);
    let payload_bytes = usize::try_from(u64::from_le_bytes(word)).unwrap_or(usize::MAX);
    rest.split_at_checked(payload_bytes).ok_or_else(|| {
        undecodable(format!("a payload section of {payload_bytes} bytes overruns the blob"))
    })
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

/// Decodes the payload section.
pub fn decode_payloads(lsn: u64, bytes: &[u8]) -> Result<Vec<PayloadEntry>, EngineError> {
    decode_section(lsn, bytes)
}

/// Decodes the state section.
pub fn decode_state(lsn: u64, bytes: &[u8]) -> Result<StateImage, EngineError> {
    decode_section(lsn, bytes)
}
