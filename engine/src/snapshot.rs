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
struct ImageRef<'a> {
    state: &'a State,
    uploads: UploadsInOrder<'a>,
    payloads: &'a [PayloadEntry],
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

/// A decoded checkpoint.
#[derive(Deserialize)]
pub struct Image {
    /// The engine's state, less its uploads.
    pub state: State,
    /// The uploads in progress, in (bucket, key, id) order.
    pub uploads: Vec<(UploadId, Upload)>,
    /// The payload store's live entries.
    pub payloads: Vec<PayloadEntry>,
}

/// Encodes a checkpoint blob.
pub fn encode(state: &State, payloads: &[PayloadEntry]) -> Result<Vec<u8>, EngineError> {
    let image = ImageRef { state, uploads: UploadsInOrder(state), payloads };
    postcard::to_extend(&image, vec![SNAPSHOT_VERSION]).map_err(|e| EngineError::Undecodable {
        what: "checkpoint (encoding)",
        lsn: state.applied_lsn,
        reason: e.to_string(),
    })
}

/// Decodes a checkpoint blob taken at `lsn`.
pub fn decode(lsn: u64, blob: &[u8]) -> Result<Image, EngineError> {
    let undecodable = |reason: String| EngineError::Undecodable { what: "checkpoint", lsn, reason };
    match blob.split_first() {
        Some((&SNAPSHOT_VERSION, body)) => {
            postcard::from_bytes(body).map_err(|e| undecodable(e.to_string()))
        }
        Some((version, _)) => Err(undecodable(format!("unknown checkpoint version {version}"))),
        None => Err(undecodable("empty checkpoint".to_owned())),
    }
}
