//! Before a checkpoint: payloads that arrived inline in WAL records move into payload segments,
//! so that the checkpoint (and the memory of the state) holds their addresses, not their bytes,
//! and inline bytes in memory never exceed what the log holds since the last checkpoint.
//!
//! The move is no transition: the state after it reads the same bytes. The entries are synced
//! before the state points at them; until a checkpoint records them, a crash leaves them
//! unreferenced (recovery replays the records, which carry the bytes inline again, and cuts
//! the entries).

use std::collections::HashMap;
use std::sync::Arc;

use crate::engine::Engine;
use crate::error::EngineError;
use crate::payload::ContentAddress;
use crate::state::{PartData, State};

/// An inline payload's bytes, and their MD5 (its part's ETag).
type InlineBytes = (Arc<[u8]>, [u8; 16]);

/// Every part of every upload and object.
fn parts(state: &State) -> impl Iterator<Item = &crate::state::Part> {
    let State { buckets, uploads, .. } = state;
    let in_uploads = uploads.values().flat_map(|u| u.parts.iter());
    let in_objects = buckets.values().flat_map(|b| b.objects.values()).flat_map(|o| o.parts.iter());
    in_uploads.chain(in_objects)
}

/// Every part of every upload and object, mutably.
fn parts_mut(state: &mut State) -> impl Iterator<Item = &mut crate::state::Part> {
    let State { buckets, uploads, .. } = state;
    let in_uploads = uploads.values_mut().flat_map(|u| u.parts.iter_mut());
    let in_objects =
        buckets.values_mut().flat_map(|b| b.objects.values_mut()).flat_map(|o| o.parts.iter_mut());
    in_uploads.chain(in_objects)
}

impl Engine {
    /// Moves the inline payloads of the state into the payload store; returns how many.
    pub(super) fn migrate_inline(&self) -> Result<usize, EngineError> {
        // Each with its MD5, from its part (equal bytes, equal MD5).
        let inline: HashMap<ContentAddress, InlineBytes> = {
            let core = self.core.read();
            parts(&core.state)
                .filter_map(|p| match &p.data {
                    PartData::Inline(inline) => {
                        Some((inline.address, (Arc::clone(&inline.bytes), p.md5)))
                    }
                    _ => None,
                })
                .collect()
        };
        if inline.is_empty() {
            return Ok(0);
        }
        let items: Vec<(&ContentAddress, &InlineBytes)> = inline.iter().collect();
        let payloads: Vec<(&[u8], [u8; 16])> =
            items.iter().map(|(_, (bytes, md5))| (&bytes[..], *md5)).collect();
        let pendings = self.payload.ingest_batch(&payloads)?;
        let mut pending_of: HashMap<ContentAddress, crate::payload::Pending> = HashMap::new();
        for ((address, _), pending) in items.iter().zip(pendings) {
            // `None`: its stored copy is unchecked since open; it stays inline for now.
            let Some(pending) = pending else { continue };
            if pending.receipt().address == **address && !pending.receipt().location.is_empty() {
                pending_of.insert(**address, pending);
            } else {
                tracing::error!(%address, "an inline payload does not hash to its address; kept inline");
            }
        }
        let mut core = self.core.write();
        let mut references: HashMap<ContentAddress, u64> = HashMap::new();
        for part in parts_mut(&mut core.state) {
            if let PartData::Inline(inline) = &part.data
                && pending_of.contains_key(&inline.address)
            {
                let address = inline.address;
                *references.entry(address).or_default() += 1;
                part.data = PartData::Stored(address);
            }
        }
        let mut moved = 0;
        for (address, pending) in pending_of {
            let Some(&count) = references.get(&address) else { continue };
            pending.commit();
            for _ in 1..count {
                self.payload.add_ref(&address)?;
            }
            moved += 1;
        }
        Ok(moved)
    }
}
