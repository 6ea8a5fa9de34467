//! Compaction: segments whose live bytes fell below a fraction of their size are rewritten.
//!
//! For each such segment: its live entries are copied into a new segment (each checked
//! against its SHA-256 on the way: damage is never copied), the new segment is synced, the
//! caller's hook makes the moves durable (a WAL record), the index points at the copies, and the
//! old file is removed. A crash before the hook leaves the copies dead (the WAL still points
//! at the old segment); a crash after it leaves the old segment with nothing live, removed at
//! the next recovery.

use std::error::Error as StdError;

use sha2::{Digest as _, Sha256};

use crate::payload::address::{ContentAddress, Location, SegmentId};
use crate::payload::error::{PayloadCorruption, PayloadError};
use crate::payload::format::{self, ENTRY_HEADER_BYTES, PAYLOAD_SEGMENT_HEADER_BYTES};
use crate::payload::{Entry, INGEST_CHUNK_BYTES, PayloadStore, Segment};

/// A payload moved by compaction.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Move {
    /// The payload.
    pub address: ContentAddress,
    /// Where it was.
    pub from: Location,
    /// Where it is now.
    pub to: Location,
}

/// The error type of a compaction hook.
pub type HookError = Box<dyn StdError + Send + Sync>;

/// What a compaction did.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct CompactReport {
    /// Segments rewritten or removed.
    pub segments_compacted: u64,
    /// Payloads moved.
    pub payloads_moved: u64,
    /// Segment bytes before, minus segment bytes after: space returned.
    pub bytes_reclaimed: u64,
}

impl PayloadStore {
    /// Compacts every segment (not held by an ingest) whose live fraction is below
    /// `compact_live_fraction`. `hook` gets each segment's moves and must make them durable
    /// (a WAL record) before returning `Ok`; on `Err` the segment is kept as it was.
    pub fn compact(
        &self,
        mut hook: impl FnMut(&[Move]) -> Result<(), HookError>,
    ) -> Result<CompactReport, PayloadError> {
        let _one_at_a_time = self.inner.compacting.lock();
        let mut report = CompactReport::default();
        for id in self.compaction_candidates() {
            let before = self.inner.state.lock().segments.get(&id).map_or(0, |s| s.end_bytes);
            let (moves, after) = self.compact_segment(id, &mut hook)?;
            report.segments_compacted += 1;
            report.payloads_moved += moves;
            report.bytes_reclaimed += before.saturating_sub(after);
        }
        Ok(report)
    }

    /// Segments below the live fraction, taken out of the active pool.
    fn compaction_candidates(&self) -> Vec<SegmentId> {
        let threshold = self.inner.options.compact_live_fraction;
        let mut state = self.inner.state.lock();
        let held: Vec<SegmentId> = state
            .segments
            .iter()
            .filter(|(id, s)| !s.sealed && !state.idle.contains(id))
            .map(|(id, _)| *id)
            .collect();
        let candidates: Vec<SegmentId> = state
            .segments
            .iter()
            .filter(|(id, s)| {
                let size = s.end_bytes.saturating_sub(PAYLOAD_SEGMENT_HEADER_BYTES);
                !held.contains(id) && size > 0 && (s.live_bytes as f64) < threshold * size as f64
            })
            .map(|(id, _)| *id)
            .collect();
        for id in &candidates {
            state.idle.retain(|idle| idle != id);
            if let Some(segment) = state.segments.get_mut(id) {
                segment.sealed = true;
            }
        }
        candidates
    }

    /// Rewrites one segment; returns the payloads moved and the bytes of the copy.
    fn compact_segment(
        &self,
        id: SegmentId,
        hook: &mut impl FnMut(&[Move]) -> Result<(), HookError>,
    ) -> Result<(u64, u64), PayloadError> {
        let inner = &self.inner;
        let (live, old) = {
            let state = inner.state.lock();
            let Some(segment) = state.segments.get(&id) else { return Ok((0, 0)) };
            let live: Vec<(ContentAddress, u64, u64)> = state
                .entries
                .iter()
                .filter(|(_, e)| e.segment == id)
                .map(|(a, e)| (*a, e.offset, e.len))
                .collect();
            (live, (std::sync::Arc::clone(&segment.file), segment.path.clone()))
        };
        if live.is_empty() {
            inner.remove_segment(id)?;
            return Ok((0, 0));
        }
        let new_id = {
            let mut state = inner.state.lock();
            let new_id = SegmentId(state.next_id);
            state.next_id += 1;
            new_id
        };
        let (file, path) = inner.create_segment(new_id)?;
        let mut moves = Vec::with_capacity(live.len());
        let mut end = PAYLOAD_SEGMENT_HEADER_BYTES;
        let copied = live.into_iter().try_for_each(|(address, offset, len)| {
            copy_entry(&*old.0, &old.1, offset, len, &address, &*file, &path, end)?;
            let from = Location::Segment { segment: id, offset, len };
            let to = Location::Segment { segment: new_id, offset: end, len };
            moves.push(Move { address, from, to });
            end += format::entry_bytes(len);
            Ok(())
        });
        let synced = copied
            .and_then(|()| file.sync_data().map_err(|e| PayloadError::io(&path, "sync_data", e)));
        if let Err(e) = synced {
            // Best effort: an orphan copy has nothing live and is removed at the next recovery.
            let _ = inner.fs.remove(&path);
            return Err(e);
        }
        let segment =
            Segment { file, path: path.clone(), end_bytes: end, live_bytes: 0, sealed: true };
        inner.state.lock().segments.insert(new_id, segment);
        if let Err(source) = hook(&moves) {
            inner.remove_segment(new_id)?;
            return Err(PayloadError::CompactionHook { segment: id, source });
        }
        {
            let mut state = inner.state.lock();
            let mut moved_bytes = 0;
            for m in &moves {
                if let (Some(entry), Location::Segment { offset, .. }) =
                    (state.entries.get_mut(&m.address), &m.to)
                    && entry.location() == m.from
                {
                    *entry = Entry { segment: new_id, offset: *offset, ..*entry };
                    moved_bytes += entry.span();
                }
            }
            if let Some(old) = state.segments.get_mut(&id) {
                old.live_bytes = 0;
            }
            if let Some(new) = state.segments.get_mut(&new_id) {
                new.live_bytes = moved_bytes;
            }
        }
        inner.remove_segment(id)?;
        Ok((moves.len() as u64, end))
    }
}

/// Copies one entry, checking its header and SHA-256 on the way.
#[expect(clippy::too_many_arguments, reason = "a source and a target, each file, path, offset")]
fn copy_entry(
    from: &dyn tessera_wal::FsFile,
    from_path: &std::path::Path,
    offset: u64,
    len: u64,
    address: &ContentAddress,
    to: &dyn tessera_wal::FsFile,
    to_path: &std::path::Path,
    to_offset: u64,
) -> Result<(), PayloadError> {
    let corrupt = |reason| PayloadError::Corrupt {
        path: from_path.to_path_buf(),
        offset_bytes: offset,
        reason,
    };
    let mut hasher = Sha256::new();
    let mut buf = vec![0u8; INGEST_CHUNK_BYTES.min(usize::try_from(len).unwrap_or(usize::MAX))];
    let mut done = 0u64;
    while done < len {
        let n = usize::try_from(len - done).unwrap_or(usize::MAX).min(buf.len());
        let chunk = buf.get_mut(..n).unwrap_or(&mut []);
        let at = offset + ENTRY_HEADER_BYTES + done;
        from.read_exact_at(chunk, at).map_err(|e| PayloadError::io(from_path, "read", e))?;
        hasher.update(&*chunk);
        let target = to_offset + ENTRY_HEADER_BYTES + done;
        to.write_all_at(chunk, target).map_err(|e| PayloadError::io(to_path, "write", e))?;
        done += n as u64;
    }
    let computed = ContentAddress(hasher.finalize().into());
    if computed != *address {
        return Err(corrupt(PayloadCorruption::Sha256Mismatch { address: *address, computed }));
    }
    let header = format::encode_entry_header(len, address);
    to.write_all_at(&header, to_offset).map_err(|e| PayloadError::io(to_path, "write", e))
}
