//! Many small payloads stored with one fdatasync: how the engine moves payloads that arrived
//! inline in WAL records into segments before a checkpoint (after which those records may be
//! retired).

use std::sync::Arc;

use crate::payload::address::{ContentAddress, Location, SegmentId};
use crate::payload::error::PayloadError;
use crate::payload::format::{self, ENTRY_HEADER_BYTES};
use crate::payload::ingest::{Pending, Receipt};
use crate::payload::read::verify_entry;
use crate::payload::segments::Claim;
use crate::payload::{Entry, PayloadStore};

/// Bytes gathered before one write.
const WRITE_BYTES: usize = 1 << 20;

impl PayloadStore {
    /// Stores `payloads` (each at most `payload_bytes_max`), entries back to back, one
    /// fdatasync per segment used; returns one pending reference per payload, in order. Each
    /// payload comes with its MD5, known already (its part's ETag, computed when the bytes
    /// arrived): only its address, which the caller checks, is computed here. Bytes
    /// that are live already (and checked) are referenced where they are, and the empty payload
    /// is stored nowhere, as with [`PayloadStore::ingest`]. A live copy not checked since open
    /// is checked first; a payload whose live copy is damaged gets `None`: the caller keeps
    /// its bytes (a damaged copy must not stand in for good ones).
    pub fn ingest_batch(
        &self,
        payloads: &[(&[u8], [u8; 16])],
    ) -> Result<Vec<Option<Pending>>, PayloadError> {
        let inner = &self.inner;
        let mut receipts = Vec::with_capacity(payloads.len());
        for &(bytes, md5) in payloads {
            if bytes.len() as u64 > inner.options.payload_bytes_max {
                return Err(PayloadError::TooLarge { max_bytes: inner.options.payload_bytes_max });
            }
            receipts.push(Receipt {
                address: ContentAddress::of(bytes),
                location: Location::Empty,
                len: bytes.len() as u64,
                md5,
                checksums: Vec::new(),
                healed_from: None,
            });
        }
        // No compaction meanwhile: the segments written here hold no live entry until the end.
        let _no_compaction = inner.compacting.lock();
        // Live copies not checked since open are checked first (outside the store's lock; each
        // is small); a damaged one stays unused.
        type Unchecked =
            (ContentAddress, Location, Arc<dyn tessera_wal::FsFile>, std::path::PathBuf);
        let unchecked: Vec<Unchecked> = {
            let state = inner.state.lock();
            let mut seen = std::collections::HashSet::new();
            receipts
                .iter()
                .filter(|r| r.len > 0 && seen.insert(r.address))
                .filter_map(|r| {
                    let entry = state.entries.get(&r.address).filter(|e| !e.is_verified())?;
                    let segment = state.segments.get(&entry.segment())?;
                    Some((
                        r.address,
                        entry.location(),
                        Arc::clone(&segment.file),
                        segment.path.clone(),
                    ))
                })
                .collect()
        };
        let mut checked = Vec::with_capacity(unchecked.len());
        for (address, location, file, path) in unchecked {
            let Location::Segment { offset, len, .. } = location else { continue };
            match verify_entry(&*file, &path, offset, len, &address) {
                Ok(()) => checked.push((address, location)),
                Err(PayloadError::Corrupt { .. }) => {}
                Err(e) => return Err(e),
            }
        }
        // What each payload becomes. Live, checked copies are pinned at once (a pending
        // reference), so they cannot go while the others are written.
        let mut fate = vec![Fate::Write; receipts.len()];
        {
            let mut state = inner.state.lock();
            for (address, location) in &checked {
                if let Some(entry) =
                    state.entries.get_mut(address).filter(|e| e.location() == *location)
                {
                    entry.set_verified();
                }
            }
            for (receipt, fate) in receipts.iter_mut().zip(fate.iter_mut()) {
                if receipt.len == 0 {
                    *fate = Fate::Ready;
                } else if let Some(entry) = state.entries.get_mut(&receipt.address) {
                    if entry.is_verified() {
                        entry.add_pending();
                        receipt.location = entry.location();
                        *fate = Fate::Ready;
                    } else {
                        *fate = Fate::Unchecked;
                    }
                }
            }
        }
        // Pinned references are released by their `Pending` if anything below fails.
        let mut pendings: Vec<Option<Pending>> = receipts
            .iter()
            .zip(&fate)
            .map(|(receipt, fate)| {
                (*fate == Fate::Ready).then(|| Pending::new(Arc::clone(inner), receipt.clone()))
            })
            .collect();
        // Write every payload not live yet (once each), then make them live.
        // (payload index, segment, offset, length) of each entry written.
        let mut written: Vec<(usize, SegmentId, u64, u64)> = Vec::new();
        let mut claim: Option<Claim> = None;
        let mut end = 0u64;
        // Entries are gathered into large writes: one syscall per `WRITE_BYTES`, not two per entry.
        let mut buffer: Vec<u8> = Vec::new();
        let flush = |claim: &Claim, buffer: &mut Vec<u8>, end: u64| {
            let at = end - buffer.len() as u64;
            let result = claim.file.write_all_at(buffer, at);
            buffer.clear();
            result.map_err(|e| PayloadError::io(claim.path.clone(), "write", e))
        };
        let result = (|| {
            let mut seen = std::collections::HashSet::new();
            for (index, ((bytes, _), receipt)) in payloads.iter().zip(&receipts).enumerate() {
                if fate.get(index) != Some(&Fate::Write) || !seen.insert(receipt.address) {
                    continue;
                }
                if claim.is_none() {
                    let fresh = inner.claim()?;
                    end = fresh.start;
                    claim = Some(fresh);
                }
                let Some(current) = &claim else { continue };
                let span = format::entry_bytes(receipt.len);
                buffer
                    .extend_from_slice(&format::encode_entry_header(receipt.len, &receipt.address));
                buffer.extend_from_slice(bytes);
                let padding = usize::try_from(span - ENTRY_HEADER_BYTES - receipt.len).unwrap_or(0);
                buffer.resize(buffer.len() + padding, 0);
                written.push((index, current.id, end, receipt.len));
                end += span;
                if buffer.len() >= WRITE_BYTES {
                    flush(current, &mut buffer, end)?;
                }
                if end >= inner.options.segment_bytes
                    && let Some(full) = claim.take()
                {
                    let synced = flush(&full, &mut buffer, end).and_then(|()| {
                        full.file
                            .sync_data()
                            .map_err(|e| PayloadError::io(full.path.clone(), "sync_data", e))
                    });
                    inner.give_back(full.id, if synced.is_ok() { end } else { full.start }, true);
                    synced?;
                }
            }
            if let Some(last) = &claim {
                flush(last, &mut buffer, end)?;
                last.file
                    .sync_data()
                    .map_err(|e| PayloadError::io(last.path.clone(), "sync_data", e))?;
            }
            Ok(())
        })();
        if let Some(last) = claim.take() {
            // On failure the segment's state on disk is unknown: seal it.
            inner.give_back(
                last.id,
                if result.is_ok() { end } else { last.start },
                result.is_err(),
            );
        }
        result?;
        let mut state = inner.state.lock();
        for (index, segment, offset, len) in written {
            let Some(receipt) = receipts.get(index) else { continue };
            if state.entries.contains_key(&receipt.address) {
                // Live meanwhile (another ingest): this copy is dead space.
                continue;
            }
            let mut entry = Entry::new(segment, offset, len, 0, 0);
            entry.set_verified();
            let span = entry.span();
            state.entries.insert(receipt.address, entry);
            if let Some(segment) = state.segments.get_mut(&segment) {
                segment.live_bytes += span;
            }
        }
        let mut written_receipts = Vec::new();
        for ((index, receipt), fate) in receipts.into_iter().enumerate().zip(&fate) {
            if *fate != Fate::Write {
                continue;
            }
            // Every written address is live now (inserted above, or by another ingest).
            if let Some(entry) = state.entries.get_mut(&receipt.address) {
                entry.add_pending();
                let location = entry.location();
                written_receipts.push((index, Receipt { location, ..receipt }));
            }
        }
        // No `Pending` is made or dropped while the store's lock is held: both take it.
        drop(state);
        for (index, receipt) in written_receipts {
            if let Some(slot) = pendings.get_mut(index) {
                *slot = Some(Pending::new(Arc::clone(inner), receipt));
            }
        }
        Ok(pendings)
    }
}

/// What a payload of a batch becomes.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Fate {
    /// Referenced as it is: empty, or live and checked (pinned).
    Ready,
    /// Live but unchecked since open: left to the caller.
    Unchecked,
    /// Written by this batch.
    Write,
}
