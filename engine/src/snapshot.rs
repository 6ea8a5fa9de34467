//! The engine's checkpoint: the whole state at an LSN, and the payload store's committed
//! references, in one blob (a version byte, then postcard). Layout: docs/format.md, section 11.

use serde::{Deserialize, Serialize};

use crate::error::EngineError;
use crate::payload::{ContentAddress, Location};
use crate::state::State;

/// The version byte of the checkpoint blobs this build writes.
pub const SNAPSHOT_VERSION: u8 = 1;

/// A live payload as the store had it: address, location, committed references.
pub type PayloadEntry = (ContentAddress, Location, u64);

#[derive(Serialize)]
struct ImageRef<'a> {
    state: &'a State,
    payloads: &'a [PayloadEntry],
}

/// A decoded checkpoint.
#[derive(Deserialize)]
pub struct Image {
    /// The engine's state.
    pub state: State,
    /// The payload store's live entries.
    pub payloads: Vec<PayloadEntry>,
}

/// Encodes a checkpoint blob.
pub fn encode(state: &State, payloads: &[PayloadEntry]) -> Result<Vec<u8>, EngineError> {
    let image = ImageRef { state, payloads };
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
