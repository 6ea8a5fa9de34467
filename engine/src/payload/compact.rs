//! Compaction: segments whose live bytes fell below a fraction of their size are rewritten.
//!
//! For each such segment: its live entries are copied into a new segment (each checked
//! against its SHA-256 on the way: damage is never copied) and the new segment is synced. Then,
//! with the index locked, the caller's hook makes the moves durable (a WAL record) and the index
//! points at the copies; the old file is removed once nothing live is left in it.
//!
//! The hook runs with the index locked (it must not call back into the store) so that no
//! reference is taken, committed or released while the moves are recorded: the WAL's order of
//! references and moves is then the store's. Only entries with committed references and no
//! pending one move: an ingest's pending reference names the location its record will carry,
//! so that entry (and its segment) stays until the record is committed.
//!
//! A crash before the hook leaves the copies dead (the WAL still points at the old segment); a
//! crash after it leaves the old segment with nothing live, removed at the next recovery. If the
//! hook fails, the moves may or may not be durable: the copy stays on disk (out of the index) and
//! the next recovery keeps it if a committed record points there.

use std::error::Error as StdError;

use crate::payload::address::{ContentAddress, Location, SegmentId};
use crate::payload::error::PayloadError;
use crate::payload::format::{self, ENTRY_HEADER_BYTES, PAYLOAD_SEGMENT_HEADER_BYTES};
use crate::payload::read::hash_payload;
use crate::payload::{Entry, PayloadStore, Segment};

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
#[derive(Debug, Default)]
pub struct CompactReport {
    /// Segments rewritten or removed.
    pub segments_compacted: u64,
    /// Payloads moved.
    pub payloads_moved: u64,
    /// Segment bytes before, minus segment bytes after: space returned.
    pub bytes_reclaimed: u64,
    /// Segments left as they were, and why (damage found while copying, for example); the
    /// other segments were still compacted.
    pub skipped: Vec<(SegmentId, PayloadError)>,
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
            match self.compact_segment(id, &mut hook) {
                Ok(Some((moves, after))) => {
                    report.segments_compacted += 1;
                    report.payloads_moved += moves;
                    report.bytes_reclaimed += before.saturating_sub(after);
                }
                Ok(None) => {}
                // A hook that failed may have left the log poisoned: stop there.
                Err(e @ PayloadError::CompactionHook { .. }) => return Err(e),
                Err(e) => {
                    tracing::warn!(segment = id.0, error = %e, "segment not compacted");
                    report.skipped.push((id, e));
                }
            }
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

    /// Rewrites one segment; returns the payloads moved and the bytes of the copy, or `None`
    /// if the segment must wait (an entry in it is pinned by a pending ingest).
    fn compact_segment(
        &self,
        id: SegmentId,
        hook: &mut impl FnMut(&[Move]) -> Result<(), HookError>,
    ) -> Result<Option<(u64, u64)>, PayloadError> {
        let inner = &self.inner;
        let (live, old) = {
            let state = inner.state.lock();
            let Some(segment) = state.segments.get(&id) else { return Ok(None) };
            let in_segment = || state.entries.iter().filter(|(_, e)| e.segment() == id);
            if in_segment().any(|(_, e)| e.pending() > 0) {
                return Ok(None);
            }
            let live: Vec<(ContentAddress, u64, u64)> =
                in_segment().map(|(a, e)| (*a, e.offset(), e.len)).collect();
            (live, (std::sync::Arc::clone(&segment.file), segment.path.clone()))
        };
        if live.is_empty() {
            inner.remove_segment(id)?;
            return Ok(Some((0, 0)));
        }
        let new_id = inner.state.lock().next_segment_id()?;
        let (file, path) = inner.create_segment(new_id)?;
        let mut copies = Vec::with_capacity(live.len());
        let mut end = PAYLOAD_SEGMENT_HEADER_BYTES;
        let copied = live.into_iter().try_for_each(|(address, offset, len)| {
            copy_entry(&*old.0, &old.1, offset, len, &address, &*file, &path, end)?;
            let from = Location::Segment { segment: id, offset, len };
            let to = Location::Segment { segment: new_id, offset: end, len };
            copies.push(Move { address, from, to });
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
        let (moved, emptied) = {
            let mut state = inner.state.lock();
            // Only what is still where it was, with committed references and no pending one.
            let moves: Vec<Move> = copies
                .into_iter()
                .filter(|m| {
                    state
                        .entries
                        .get(&m.address)
                        .is_some_and(|e| e.location() == m.from && e.refs > 0 && e.pending() == 0)
                })
                .collect();
            if !moves.is_empty()
                && let Err(source) = hook(&moves)
            {
                // The moves may be durable: keep the copy's file, out of the index.
                return Err(PayloadError::CompactionHook { segment: id, source });
            }
            let mut moved_bytes = 0;
            for m in &moves {
                if let (Some(entry), Location::Segment { offset, .. }) =
                    (state.entries.get_mut(&m.address), &m.to)
                {
                    entry.relocate(new_id, *offset);
                    moved_bytes += entry.span();
                }
            }
            let segment =
                Segment { file, path, end_bytes: end, live_bytes: moved_bytes, sealed: true };
            state.segments.insert(new_id, segment);
            let left: u64 =
                state.entries.values().filter(|e| e.segment() == id).map(Entry::span).sum();
            if let Some(old) = state.segments.get_mut(&id) {
                old.live_bytes = left;
            }
            (moves.len() as u64, left == 0)
        };
        if emptied {
            inner.remove_segment(id)?;
        }
        if moved == 0 {
            // Nothing moved after all: the copy holds nothing live.
            inner.remove_segment(new_id)?;
            return Ok(Some((0, 0)));
        }
        Ok(Some((moved, end)))
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
    hash_payload(from, from_path, offset, len, address, |done, chunk| {
        let target = to_offset + ENTRY_HEADER_BYTES + done;
        to.write_all_at(chunk, target).map_err(|e| PayloadError::io(to_path, "write", e))
    })?;
    let header = format::encode_entry_header(len, address);
    to.write_all_at(&header, to_offset).map_err(|e| PayloadError::io(to_path, "write", e))
}
