//! Opening the store and rebuilding its index from the engine's replay.
//!
//! The index is what the engine's committed records say: a payload is live if a committed
//! record references it, at the location that record gives. Bytes no committed record points to
//! are dead: an ingest that was synced but whose WAL record never committed, a torn ingest, the
//! copy of an interrupted compaction. `finish_recovery` cuts every segment after its last live
//! entry and removes segments with nothing live, so that space returns at once.

use std::path::{Path, PathBuf};
use std::sync::Arc;

use parking_lot::Mutex;
use tessera_wal::{Fs, OpenMode};

use crate::payload::address::{ContentAddress, Location, SegmentId};
use crate::payload::error::{PayloadCorruption, PayloadError};
use crate::payload::format::{self, PAYLOAD_SEGMENT_HEADER_BYTES};
use crate::payload::segments::check_segment_file;
use crate::payload::{
    Entry, Inner, PayloadHandle, PayloadOptions, PayloadStore, SEGMENT_ID_MAX, SEGMENT_OFFSET_MAX,
    Segment, SlotMap, State, unknown,
};

/// What `finish_recovery` did.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct RecoveryReport {
    /// Segments removed because nothing live was left in them.
    pub segments_removed: u64,
    /// Bytes cut from segment tails after their last live entry.
    pub tail_bytes_cut: u64,
    /// Live payloads.
    pub payloads: u64,
    /// Bytes of the segments that remain, and of their live entries.
    pub file_bytes: u64,
    /// Of which live (the rest is dead space between live entries, for compaction).
    pub live_bytes: u64,
}

impl PayloadStore {
    /// Opens the store in `dir`: checks every segment header, removes leftovers of interrupted
    /// segment creations. The index starts empty: replay the engine's checkpoint and WAL into it
    /// (`restore_entry`, `recover_ref`, `recover_release`, `recover_move`), then call
    /// `finish_recovery` before anything else.
    pub fn open(
        fs: Arc<dyn Fs>,
        dir: impl Into<PathBuf>,
        options: PayloadOptions,
    ) -> Result<PayloadStore, PayloadError> {
        options.validate()?;
        let dir = dir.into();
        tessera_wal::create_dir_all_durable(&*fs, &dir)
            .map_err(|e| PayloadError::io(&dir, "create_dir_all", e))?;
        let mut state = State { recovering: true, next_id: 1, ..State::default() };
        for name in fs.list(&dir).map_err(|e| PayloadError::io(&dir, "list", e))? {
            if let Some(stem) = name.strip_suffix(".tmp")
                && format::parse_segment_name(stem).is_some()
            {
                let path = dir.join(&name);
                fs.remove(&path).map_err(|e| PayloadError::io(&path, "remove", e))?;
            } else if let Some(id) = format::parse_segment_name(&name) {
                let segment = open_segment(&*fs, &dir.join(&name), id)?;
                state.next_id = state.next_id.max(id.0 + 1);
                state.segments.insert(id, segment);
            }
        }
        fs.sync_dir(&dir).map_err(|e| PayloadError::io(&dir, "sync_dir", e))?;
        let inner =
            Inner { fs, dir, options, state: Mutex::new(state), compacting: Mutex::new(()) };
        Ok(PayloadStore { inner: Arc::new(inner) })
    }

    /// Recovery: a live payload as a checkpoint recorded it, with its committed references.
    pub fn restore_entry(
        &self,
        address: ContentAddress,
        location: &Location,
        refs: u64,
    ) -> Result<(), PayloadError> {
        self.inner.state.lock().recover_ref(address, location, refs)
    }

    /// Recovery: the live payloads of a checkpoint at once (one lock, the index sized once).
    pub fn restore_entries(
        &self,
        entries: &[(ContentAddress, Location, u64)],
    ) -> Result<(), PayloadError> {
        let mut state = self.inner.state.lock();
        let ascending = entries.windows(2).all(|pair| matches!(pair, [a, b] if a.0 < b.0));
        if !ascending || !state.entries.is_empty() {
            state.entries.reserve(entries.len());
            for (address, location, refs) in entries {
                state.recover_ref(*address, location, *refs)?;
            }
            return Ok(());
        }
        // A checkpoint lists each address once, in ascending order (`snapshot`): into an empty
        // index, each entry goes as `recover_ref` would put it, without a lookup.
        state.check_recovering()?;
        let mut pairs = Vec::with_capacity(entries.len());
        for (address, location, refs) in entries {
            if let Location::Segment { segment, offset, len } = *location {
                check_location(address, location)?;
                state.note_segment(segment);
                if *refs > 0 {
                    let entry =
                        Entry::new(segment, offset, len, reference_count(address, *refs)?, 0);
                    pairs.push((*address, entry));
                }
            }
        }
        state.entries = SlotMap::from_distinct_pairs(pairs);
        Ok(())
    }

    /// Recovery: the live payloads of a checkpoint that lists them in slot order, into an
    /// empty index: each takes the slot of its position, which is how the checkpoint's parts
    /// name it. Each must be in a segment, with references, and listed once.
    pub fn restore_listed(
        &self,
        entries: &[(ContentAddress, Location, u64)],
    ) -> Result<(), PayloadError> {
        let mut state = self.inner.state.lock();
        state.check_recovering()?;
        if !state.entries.is_empty() {
            return Err(PayloadError::InvalidListing { reason: "the index is not empty" });
        }
        let mut pairs = Vec::with_capacity(entries.len());
        for (address, location, refs) in entries {
            let Location::Segment { segment, offset, len } = *location else {
                return Err(PayloadError::InvalidListing { reason: "a payload in no segment" });
            };
            if *refs == 0 {
                return Err(PayloadError::InvalidListing { reason: "a payload with no reference" });
            }
            check_location(address, location)?;
            state.note_segment(segment);
            let entry = Entry::new(segment, offset, len, reference_count(address, *refs)?, 0);
            pairs.push((*address, entry));
        }
        state.entries = SlotMap::from_pairs_checked(pairs)
            .ok_or(PayloadError::InvalidListing { reason: "a payload listed twice" })?;
        Ok(())
    }

    /// Recovery: checks the stored parts of a loaded checkpoint, each given as its handle and
    /// size, against the payloads loaded with it: each names a live payload of its size, and
    /// each payload has as many committed references as parts name it.
    pub fn check_references(
        &self,
        parts: impl IntoIterator<Item = (PayloadHandle, u64)>,
    ) -> Result<(), PayloadError> {
        let state = self.inner.state.lock();
        // Bounded by the slots (each a payload the checkpoint lists), not by what parts name.
        let mut counts = vec![0u32; state.entries.slot_count()];
        for (handle, size_bytes) in parts {
            let (count, entry) = match counts.get_mut(handle.get() as usize) {
                Some(count) => (count, state.entries.at(handle).map(|(_, e)| e)),
                None => return Err(PayloadError::UnlistedPart { handle: handle.get() }),
            };
            let Some(entry) = entry else {
                return Err(PayloadError::UnlistedPart { handle: handle.get() });
            };
            if entry.len != size_bytes {
                return Err(PayloadError::PartSizeDisagrees {
                    handle: handle.get(),
                    part_bytes: size_bytes,
                    payload_bytes: entry.len,
                });
            }
            *count = count.saturating_add(1);
        }
        for (slot, &counted) in counts.iter().enumerate() {
            let handle = PayloadHandle(u32::try_from(slot).unwrap_or(u32::MAX));
            let recorded = state.entries.at(handle).map_or(0, |(_, e)| e.refs);
            if counted != recorded {
                return Err(PayloadError::ReferencesDisagree {
                    handle: handle.get(),
                    counted,
                    recorded,
                });
            }
        }
        Ok(())
    }

    /// Recovery: a committed record that references a payload (at the location its ingest
    /// got; if the payload is live already, where it is now stands).
    pub fn recover_ref(
        &self,
        address: ContentAddress,
        location: &Location,
    ) -> Result<(), PayloadError> {
        self.inner.state.lock().recover_ref(address, location, 1)
    }

    /// Recovery: a committed record whose own payload is at `location` (where its ingest put
    /// it; if the payload is live already, where it is now stands), before the record is
    /// applied. Holds a pending reference, which [`PayloadStore::recover_keep`] commits if the
    /// record applies and [`PayloadStore::recover_drop`] gives back if not. `None` if the
    /// location is no segment's.
    pub fn recover_hold(
        &self,
        address: ContentAddress,
        location: &Location,
    ) -> Result<Option<PayloadHandle>, PayloadError> {
        let mut state = self.inner.state.lock();
        state.check_recovering()?;
        if let Some(handle) = state.entries.handle(&address)
            && let Some((_, entry)) = state.entries.at_mut(handle)
        {
            entry.add_pending();
            return Ok(Some(handle));
        }
        let Location::Segment { segment, offset, len } = *location else { return Ok(None) };
        check_location(&address, location)?;
        state.note_segment(segment);
        Ok(Some(state.entries.insert(address, Entry::new(segment, offset, len, 0, 1))))
    }

    /// Recovery: the record that [`PayloadStore::recover_hold`] held `handle` for applied.
    pub fn recover_keep(&self, handle: PayloadHandle) -> Result<(), PayloadError> {
        let mut state = self.inner.state.lock();
        state.check_recovering()?;
        let address = state.address_at(handle)?;
        state.commit_pending(&address);
        Ok(())
    }

    /// Recovery: the record that [`PayloadStore::recover_hold`] held `handle` for did not apply.
    pub fn recover_drop(&self, handle: PayloadHandle) -> Result<(), PayloadError> {
        let mut state = self.inner.state.lock();
        state.check_recovering()?;
        let address = state.address_at(handle)?;
        state.release_pending(&address);
        Ok(())
    }

    /// Recovery: a committed record that takes one more reference on a live payload.
    pub fn recover_ref_at(&self, handle: PayloadHandle) -> Result<(), PayloadError> {
        let mut state = self.inner.state.lock();
        state.check_recovering()?;
        let (address, entry) = state.entries.at_mut(handle).ok_or(unknown(handle))?;
        entry.refs = reference_count(address, u64::from(entry.refs).saturating_add(1))?;
        Ok(())
    }

    /// Recovery: a committed record that gives a reference back, by handle.
    pub fn recover_release_at(&self, handle: PayloadHandle) -> Result<(), PayloadError> {
        let mut state = self.inner.state.lock();
        state.check_recovering()?;
        let address = state.address_at(handle)?;
        state.release(&address);
        Ok(())
    }

    /// Recovery: a committed record that gives a reference back.
    pub fn recover_release(&self, address: &ContentAddress) -> Result<(), PayloadError> {
        let mut state = self.inner.state.lock();
        state.check_recovering()?;
        state.release(address);
        Ok(())
    }

    /// Recovery: a committed record of a compaction move (or of a heal). It applies only if
    /// the payload is live where the move says it was, as it did when it was recorded.
    pub fn recover_move(
        &self,
        address: &ContentAddress,
        from: &Location,
        to: &Location,
    ) -> Result<(), PayloadError> {
        let mut state = self.inner.state.lock();
        state.check_recovering()?;
        let Location::Segment { segment, offset, .. } = *to else { return Ok(()) };
        check_location(address, to)?;
        state.note_segment(segment);
        if let Some(entry) = state.entries.get_mut(address).filter(|e| e.location() == *from) {
            entry.relocate(segment, offset);
        }
        Ok(())
    }

    /// Ends recovery: checks that every live payload lies inside an existing segment, cuts each
    /// segment after its last live entry, removes segments with nothing live, and opens the
    /// store for ingests (which go to new segments).
    pub fn finish_recovery(&self) -> Result<RecoveryReport, PayloadError> {
        let inner = &self.inner;
        let mut report = RecoveryReport::default();
        let (cuts, empty) = {
            let mut state = inner.state.lock();
            state.check_recovering()?;
            let State { entries, segments, .. } = &mut *state;
            for segment in segments.values_mut() {
                segment.live_bytes = 0;
            }
            let mut last_end: std::collections::BTreeMap<SegmentId, u64> = Default::default();
            for (address, entry) in entries.iter() {
                let segment = segments.get_mut(&entry.segment()).ok_or_else(|| {
                    PayloadError::MissingSegment {
                        address: *address,
                        segment: entry.segment(),
                        path: inner.dir.join(format::segment_name(entry.segment())),
                    }
                })?;
                // Locations were checked when replayed, so these sums stay far from u64::MAX.
                let end = entry.offset() + entry.span();
                let data_end = entry.offset() + format::ENTRY_HEADER_BYTES + entry.len;
                if data_end > segment.end_bytes {
                    return Err(PayloadError::Corrupt {
                        path: segment.path.clone(),
                        offset_bytes: entry.offset(),
                        reason: PayloadCorruption::PastEnd {
                            entry_bytes: data_end,
                            file_bytes: segment.end_bytes,
                        },
                    });
                }
                segment.live_bytes += entry.span();
                let last = last_end.entry(entry.segment()).or_insert(0);
                *last = (*last).max(end.min(segment.end_bytes));
            }
            let mut cuts = Vec::new();
            let mut empty = Vec::new();
            for (id, segment) in segments.iter_mut() {
                segment.sealed = true;
                match last_end.get(id) {
                    None => empty.push(*id),
                    Some(&end) if end < segment.end_bytes => {
                        report.tail_bytes_cut += segment.end_bytes - end;
                        segment.end_bytes = end;
                        cuts.push((Arc::clone(&segment.file), segment.path.clone(), end));
                    }
                    Some(_) => {}
                }
            }
            (cuts, empty)
        };
        for (file, path, end) in cuts {
            file.set_len(end).map_err(|e| PayloadError::io(&path, "set_len", e))?;
            file.sync_data().map_err(|e| PayloadError::io(&path, "sync_data", e))?;
        }
        for id in empty {
            inner.remove_segment(id)?;
            report.segments_removed += 1;
        }
        let mut state = inner.state.lock();
        state.recovering = false;
        report.payloads = state.entries.len() as u64;
        report.file_bytes = state.segments.values().map(|s| s.end_bytes).sum();
        report.live_bytes = state.segments.values().map(|s| s.live_bytes).sum();
        Ok(report)
    }
}

impl State {
    fn check_recovering(&self) -> Result<(), PayloadError> {
        if self.recovering { Ok(()) } else { Err(PayloadError::NotRecovering) }
    }

    /// Segment ids only grow: one that a record names must never be handed out again, even
    /// if its file is gone.
    fn note_segment(&mut self, segment: SegmentId) {
        self.next_id = self.next_id.max(segment.0.saturating_add(1));
    }

    fn recover_ref(
        &mut self,
        address: ContentAddress,
        location: &Location,
        refs: u64,
    ) -> Result<(), PayloadError> {
        self.check_recovering()?;
        if let Some(entry) = self.entries.get_mut(&address) {
            entry.refs = reference_count(&address, u64::from(entry.refs).saturating_add(refs))?;
            return Ok(());
        }
        if let Location::Segment { segment, offset, len } = *location {
            check_location(&address, location)?;
            self.note_segment(segment);
            if refs > 0 {
                let entry = Entry::new(segment, offset, len, reference_count(&address, refs)?, 0);
                self.entries.insert(address, entry);
            }
        }
        Ok(())
    }
}

/// A reference count read from a checkpoint or summed in replay, as an entry keeps it.
fn reference_count(address: &ContentAddress, refs: u64) -> Result<u32, PayloadError> {
    u32::try_from(refs).map_err(|_| PayloadError::TooManyReferences {
        address: *address,
        refs,
        max: u32::MAX,
    })
}

/// Checks a location read from a record: an entry's header at an aligned offset past the
/// segment header, a length the format allows. Damaged or crafted records fail here, not later.
fn check_location(address: &ContentAddress, location: &Location) -> Result<(), PayloadError> {
    let Location::Segment { segment, offset, len } = *location else { return Ok(()) };
    let aligned = offset.is_multiple_of(format::ENTRY_ALIGN_BYTES);
    let in_range = (PAYLOAD_SEGMENT_HEADER_BYTES..=SEGMENT_OFFSET_MAX).contains(&offset)
        && segment.0 <= SEGMENT_ID_MAX;
    let len_ok = (1..=format::PAYLOAD_BYTES_LIMIT).contains(&len);
    if aligned && in_range && len_ok {
        Ok(())
    } else {
        Err(PayloadError::BadLocation { address: *address, segment, offset, len })
    }
}

fn open_segment(fs: &dyn Fs, path: &Path, id: SegmentId) -> Result<Segment, PayloadError> {
    let file = fs.open(path, OpenMode::ReadWrite).map_err(|e| PayloadError::io(path, "open", e))?;
    let len = check_segment_file(&*file, path, id)?;
    Ok(Segment {
        file: Arc::from(file),
        path: path.to_path_buf(),
        end_bytes: len,
        live_bytes: 0,
        sealed: true,
    })
}
