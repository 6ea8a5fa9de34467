//! The payload store: part bytes in content-addressed, append-only segment files.
//!
//! A payload is ingested from a stream into an *active* segment that the ingest holds alone
//! (so entries never interleave and a crash can tear only one segment's tail), hashed on the
//! way (SHA-256: its address; MD5: its ETag; the S3 checksums asked for), fdatasynced, and
//! handed back as a [`Pending`] holding one reference. The engine commits that reference with a
//! WAL record ([`Pending::commit`]) or drops it. Identical bytes are stored once: an ingest
//! whose address is already live takes a reference to the existing entry and gives its own
//! space back at once.
//!
//! References are counted per address and driven by the engine's committed transitions
//! ([`PayloadStore::add_ref`], [`PayloadStore::release`]). An entry nobody references is dead
//! space; compaction ([`PayloadStore::compact`]) copies the live entries of mostly-dead
//! segments elsewhere and removes the old files, so the space returns to the file system.
//!
//! Recovery: [`PayloadStore::open`] checks the segment headers; the engine then replays its
//! checkpoint and WAL into the store ([`PayloadStore::recover_ref`] and friends), and
//! [`PayloadStore::finish_recovery`] cuts every segment after its last referenced entry (bytes
//! no committed record points to: torn or unacknowledged ingests) and removes segments with
//! nothing live. Segments open at a crash are never appended to again.
//!
//! Every payload is checked against its SHA-256 the first time it is read after open, and by
//! [`PayloadStore::verify`]; a mismatch is an error naming the segment and offset, never data.

mod address;
#[cfg(feature = "tokio")]
mod async_io;
mod batch;
mod compact;
mod digest;
mod error;
mod format;
mod index;
mod ingest;
mod read;
mod recovery;
mod scan;
mod segments;
mod slots;

use std::collections::BTreeMap;
use std::path::PathBuf;
use std::sync::Arc;

use parking_lot::Mutex;
use tessera_wal::{Fs, FsFile};

pub use self::address::{ContentAddress, Location, PrehashedHasher, PrehashedMap, SegmentId};
#[cfg(feature = "tokio")]
pub use self::async_io::AsyncPayloadReader;
pub use self::compact::{CompactReport, HookError, Move};
pub(crate) use self::digest::Digester;
pub use self::digest::{Checksum, ChecksumAlgorithm, Digests, Expected};
pub use self::error::{PayloadCorruption, PayloadError};
pub use self::format::{
    ENTRY_HEADER_BYTES, PAYLOAD_SEGMENT_HEADER_BYTES, parse_segment_name, segment_name,
};
pub use self::index::DenseMap;
pub(crate) use self::ingest::check_expected;
pub use self::ingest::{IngestWriter, Pending, Receipt};
pub use self::read::{PayloadReader, VerifyReport};
pub use self::recovery::RecoveryReport;
pub use self::scan::{ScannedEntry, SegmentScan, scan_segment};
pub use self::slots::PayloadHandle;
use self::slots::SlotMap;

/// Default size at which a payload segment stops taking new entries.
pub const PAYLOAD_SEGMENT_BYTES_DEFAULT: u64 = 256 << 20;
/// Default largest payload (S3's largest part: 5 GiB).
pub const PAYLOAD_BYTES_MAX_DEFAULT: u64 = 5 << 30;
/// Default live fraction under which a segment is compacted.
pub const COMPACT_LIVE_FRACTION_DEFAULT: f64 = 0.5;
/// Bytes read from a stream (and written) at a time.
pub const INGEST_CHUNK_BYTES: usize = 1 << 20;

/// Options of [`PayloadStore::open`].
#[derive(Clone, Debug, PartialEq)]
pub struct PayloadOptions {
    /// An active segment stops taking entries once it is this long (an entry is never split,
    /// so a segment holding one large payload may be longer).
    pub segment_bytes: u64,
    /// The largest payload an ingest accepts.
    pub payload_bytes_max: u64,
    /// Segments whose live bytes are below this fraction of their size are compacted.
    pub compact_live_fraction: f64,
}

impl Default for PayloadOptions {
    fn default() -> Self {
        PayloadOptions {
            segment_bytes: PAYLOAD_SEGMENT_BYTES_DEFAULT,
            payload_bytes_max: PAYLOAD_BYTES_MAX_DEFAULT,
            compact_live_fraction: COMPACT_LIVE_FRACTION_DEFAULT,
        }
    }
}

impl PayloadOptions {
    fn validate(&self) -> Result<(), PayloadError> {
        let reason = if self.segment_bytes < PAYLOAD_SEGMENT_HEADER_BYTES + ENTRY_HEADER_BYTES {
            "segment_bytes must hold a segment header and an entry header"
        } else if self.segment_bytes > SEGMENT_OFFSET_MAX {
            "segment_bytes must be below 4 GiB (entry offsets are kept in 32 bits)"
        } else if self.payload_bytes_max > format::PAYLOAD_BYTES_LIMIT {
            "payload_bytes_max must not exceed the format's limit (1 TiB)"
        } else if !(0.0..=1.0).contains(&self.compact_live_fraction) {
            "compact_live_fraction must lie within 0..=1"
        } else {
            return Ok(());
        };
        Err(PayloadError::InvalidOptions { reason })
    }
}

/// The payload store. Cheap to clone; share it between threads.
#[derive(Clone, Debug)]
pub struct PayloadStore {
    inner: Arc<Inner>,
}

#[derive(Debug)]
struct Inner {
    fs: Arc<dyn Fs>,
    dir: PathBuf,
    options: PayloadOptions,
    state: Mutex<State>,
    /// One compaction at a time.
    compacting: Mutex<()>,
}

/// The index and the segments, behind one mutex (held briefly; never across I/O).
#[derive(Debug, Default)]
struct State {
    entries: SlotMap<ContentAddress, Entry>,
    segments: BTreeMap<SegmentId, Segment>,
    /// Active segments no ingest holds now.
    idle: Vec<SegmentId>,
    next_id: u64,
    /// Between `open` and `finish_recovery`: references come from replay.
    recovering: bool,
}

/// A live payload: one with committed or pending references. 32 bytes, three per upload of
/// three parts (memory per upload is a benchmark figure): the counts take 32 bits each.
#[derive(Clone, Copy, Debug)]
struct Entry {
    /// The segment's id: at most `SEGMENT_ID_MAX`.
    segment_id: u32,
    /// Where the entry's header starts in its segment: at most `SEGMENT_OFFSET_MAX`.
    offset_bytes: u32,
    len: u64,
    /// References of committed records (what a checkpoint records and replay rebuilds). Each is
    /// a part held in memory, so 32 bits are ample: 2^32 parts would need hundreds of GiB.
    refs: u32,
    /// Pending references (low 31 bits): those held by `Pending` ingests whose records are not
    /// committed yet, each a `Pending` in memory. While any is held the entry does not move: a
    /// record is written with the location its ingest got. The top bit: checked against its
    /// SHA-256 since open (or written by this process).
    pending_verified: u32,
}

/// The bit of `Entry::pending_verified` that says the entry is verified.
const VERIFIED_BIT: u32 = 1 << 31;

/// The largest segment id this build gives out or accepts (ids are kept in 32 bits).
pub const SEGMENT_ID_MAX: u64 = u32::MAX as u64;

/// The largest offset of an entry this build accepts (offsets are kept in 32 bits): an entry
/// starts before its segment's `segment_bytes`, which is at most this.
pub const SEGMENT_OFFSET_MAX: u64 = u32::MAX as u64;

/// A segment id and an entry's offset in 32 bits each.
fn narrow(segment: SegmentId, offset: u64) -> (u32, u32) {
    // Invariant: ids come from `State::next_segment_id` or from records `check_location`
    // passed, offsets from segments no longer than `PayloadOptions::segment_bytes` or from such
    // records: both bounded by the maxima above.
    #[expect(clippy::expect_used, reason = "bounded where they come from")]
    let narrowed = (
        u32::try_from(segment.0).expect("segment ids fit 32 bits"),
        u32::try_from(offset).expect("entry offsets fit 32 bits"),
    );
    narrowed
}

impl Entry {
    /// An entry with committed references `refs` and `pending` pending ones.
    fn new(segment: SegmentId, offset: u64, len: u64, refs: u32, pending: u32) -> Entry {
        debug_assert!(pending < VERIFIED_BIT, "pending references fit 31 bits");
        let (segment_id, offset_bytes) = narrow(segment, offset);
        Entry { segment_id, offset_bytes, len, refs, pending_verified: pending }
    }

    /// Its segment.
    fn segment(&self) -> SegmentId {
        SegmentId(u64::from(self.segment_id))
    }

    /// Where its header starts in its segment.
    fn offset(&self) -> u64 {
        u64::from(self.offset_bytes)
    }

    /// Points it at a copy of its bytes.
    fn relocate(&mut self, segment: SegmentId, offset: u64) {
        (self.segment_id, self.offset_bytes) = narrow(segment, offset);
    }

    fn location(&self) -> Location {
        Location::Segment { segment: self.segment(), offset: self.offset(), len: self.len }
    }

    fn span(&self) -> u64 {
        format::entry_bytes(self.len)
    }

    fn is_live(&self) -> bool {
        self.refs > 0 || self.pending() > 0
    }

    /// Pending references.
    fn pending(&self) -> u32 {
        self.pending_verified & !VERIFIED_BIT
    }

    /// Takes one more pending reference.
    fn add_pending(&mut self) {
        // Invariant: each pending reference is a `Pending` in memory; 2^31 of them cannot be.
        assert!(self.pending() < VERIFIED_BIT - 1, "pending references fit 31 bits");
        self.pending_verified += 1;
    }

    /// Gives one pending reference back.
    fn drop_pending(&mut self) {
        // Invariant: a Pending holds exactly one pending reference until it commits or drops.
        assert!(self.pending() > 0, "a pending reference is held");
        self.pending_verified -= 1;
    }

    /// Whether its bytes were checked against its address since open.
    fn is_verified(&self) -> bool {
        self.pending_verified & VERIFIED_BIT != 0
    }

    /// Records that its bytes were checked.
    fn set_verified(&mut self) {
        self.pending_verified |= VERIFIED_BIT;
    }

    /// One more committed reference.
    fn add_ref(&mut self) {
        // Invariant: each reference is a part held in memory (see `refs`).
        #[expect(clippy::expect_used, reason = "2^32 parts in memory would need hundreds of GiB")]
        let refs = self.refs.checked_add(1).expect("references fit 32 bits");
        self.refs = refs;
    }
}

#[derive(Debug)]
struct Segment {
    file: Arc<dyn FsFile>,
    path: PathBuf,
    /// Where the next entry goes (active segments); the end of the file's contents otherwise.
    end_bytes: u64,
    /// Bytes of the entries referenced in it.
    live_bytes: u64,
    /// No more entries go into it.
    sealed: bool,
}

/// How much space the store takes and how much of it is live.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct SpaceStats {
    /// Segment files.
    pub segments: u64,
    /// Bytes of segment files up to their contents' end.
    pub file_bytes: u64,
    /// Bytes of live entries (headers and padding included).
    pub live_bytes: u64,
    /// Live payloads.
    pub payloads: u64,
}

impl PayloadStore {
    /// The directory of the segment files.
    pub fn dir(&self) -> &std::path::Path {
        &self.inner.dir
    }

    /// The options the store was opened with.
    pub fn options(&self) -> &PayloadOptions {
        &self.inner.options
    }

    /// Takes one more committed reference to a live payload (say, a completed object
    /// referencing a part's bytes), once the record that says so is committed. The empty payload
    /// needs none.
    pub fn add_ref(&self, address: &ContentAddress) -> Result<(), PayloadError> {
        if *address == ContentAddress::of_empty() {
            return Ok(());
        }
        let mut state = self.inner.state.lock();
        let entry = state
            .entries
            .get_mut(address)
            .ok_or(PayloadError::UnknownAddress { address: *address })?;
        entry.add_ref();
        Ok(())
    }

    /// Gives one committed reference back, once the record that says so is committed; the
    /// payload is dead once no reference is left.
    pub fn release(&self, address: &ContentAddress) -> Result<(), PayloadError> {
        if *address == ContentAddress::of_empty() {
            return Ok(());
        }
        let mut state = self.inner.state.lock();
        state
            .release(address)
            .then_some(())
            .ok_or(PayloadError::UnknownAddress { address: *address })
    }

    /// The handle of a live payload (one holding a reference, committed or pending): valid for
    /// as long as a reference is held.
    pub fn handle(&self, address: &ContentAddress) -> Option<PayloadHandle> {
        self.inner.state.lock().entries.handle(address)
    }

    /// The address of the live payload `handle` names.
    pub fn address(&self, handle: PayloadHandle) -> Result<ContentAddress, PayloadError> {
        let state = self.inner.state.lock();
        state.address_at(handle)
    }

    /// [`PayloadStore::add_ref`] by handle.
    pub fn add_ref_at(&self, handle: PayloadHandle) -> Result<(), PayloadError> {
        let mut state = self.inner.state.lock();
        let (_, entry) = state.entries.at_mut(handle).ok_or(unknown(handle))?;
        entry.add_ref();
        Ok(())
    }

    /// [`PayloadStore::release`] by handle.
    pub fn release_at(&self, handle: PayloadHandle) -> Result<(), PayloadError> {
        let mut state = self.inner.state.lock();
        let address = state.address_at(handle)?;
        state.release(&address).then_some(()).ok_or(unknown(handle))
    }

    /// Where a live payload is, and how many committed references it has.
    pub fn lookup(&self, address: &ContentAddress) -> Option<(Location, u64)> {
        if *address == ContentAddress::of_empty() {
            return Some((Location::Empty, 1));
        }
        let state = self.inner.state.lock();
        state.entries.get(address).map(|e| (e.location(), u64::from(e.refs)))
    }

    /// Every payload with committed references, its location and their count, in address
    /// order: what the engine's checkpoint records (pending references belong to no committed
    /// record).
    pub fn snapshot(&self) -> Vec<(ContentAddress, Location, u64)> {
        let mut entries = Vec::new();
        self.slots_into(&mut entries);
        entries.retain(|e| e.2 > 0);
        entries.sort_unstable_by_key(|e| e.0);
        entries
    }

    /// Every slot of the index, in slot order (a payload's handle is its position), appended
    /// to `entries`: its payload's address, location and committed references, with 0
    /// references for a slot that is vacant (its address stale) or held by pending references
    /// only. What [`PayloadStore::snapshot`] gives, once those are left out and the rest sorted:
    /// a copy quick enough to take while commits wait (into a buffer whose pages are already
    /// resident), sorted after they go on.
    pub fn slots_into(&self, entries: &mut Vec<(ContentAddress, Location, u64)>) {
        let state = self.inner.state.lock();
        entries.reserve(state.entries.slot_count());
        entries.extend(state.entries.all_slots().map(|(address, entry)| match entry {
            Some(e) if e.refs > 0 => (*address, e.location(), u64::from(e.refs)),
            _ => (*address, Location::Empty, 0),
        }));
    }

    /// The space the store takes.
    pub fn space(&self) -> SpaceStats {
        let state = self.inner.state.lock();
        SpaceStats {
            segments: state.segments.len() as u64,
            file_bytes: state.segments.values().map(|s| s.end_bytes).sum(),
            live_bytes: state.segments.values().map(|s| s.live_bytes).sum(),
            payloads: state.entries.len() as u64,
        }
    }
}

fn unknown(handle: PayloadHandle) -> PayloadError {
    PayloadError::UnknownHandle { handle: handle.get() }
}

impl State {
    /// The address of the live payload `handle` names.
    fn address_at(&self, handle: PayloadHandle) -> Result<ContentAddress, PayloadError> {
        self.entries.at(handle).map(|(address, _)| *address).ok_or(unknown(handle))
    }

    /// A segment id never given out before.
    fn next_segment_id(&mut self) -> Result<SegmentId, PayloadError> {
        let id = self.next_id;
        if id > SEGMENT_ID_MAX {
            return Err(PayloadError::SegmentIdsExhausted { max: SEGMENT_ID_MAX });
        }
        self.next_id += 1;
        Ok(SegmentId(id))
    }

    /// Drops one committed reference; false if the address has none.
    fn release(&mut self, address: &ContentAddress) -> bool {
        let Some(entry) = self.entries.get_mut(address).filter(|e| e.refs > 0) else {
            return false;
        };
        entry.refs -= 1;
        self.forget_if_dead(address);
        true
    }

    /// Drops one pending reference (an ingest whose record was not committed).
    fn release_pending(&mut self, address: &ContentAddress) {
        if let Some(entry) = self.entries.get_mut(address) {
            entry.drop_pending();
            self.forget_if_dead(address);
        }
    }

    /// Turns one pending reference into a committed one.
    fn commit_pending(&mut self, address: &ContentAddress) {
        if let Some(entry) = self.entries.get_mut(address) {
            entry.drop_pending();
            entry.add_ref();
        }
    }

    fn forget_if_dead(&mut self, address: &ContentAddress) {
        let Some(&entry) = self.entries.get(address) else { return };
        if entry.is_live() {
            return;
        }
        self.entries.remove(address);
        // While recovering, live bytes are counted once replay is over.
        if !self.recovering
            && let Some(segment) = self.segments.get_mut(&entry.segment())
        {
            segment.live_bytes -= entry.span();
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Ids are given out up to the largest an entry can keep, then refused, never reused.
    #[test]
    fn segment_ids_end_at_the_largest_an_entry_keeps() {
        let mut state = State { next_id: SEGMENT_ID_MAX - 1, ..State::default() };
        assert_eq!(state.next_segment_id().ok(), Some(SegmentId(SEGMENT_ID_MAX - 1)));
        assert_eq!(state.next_segment_id().ok(), Some(SegmentId(SEGMENT_ID_MAX)));
        let err = state.next_segment_id().unwrap_err();
        assert!(matches!(err, PayloadError::SegmentIdsExhausted { .. }), "{err}");
        assert!(state.next_segment_id().is_err());
    }

    /// An entry keeps the largest id and offset as they were, and its location shows them.
    #[test]
    fn an_entry_keeps_the_largest_id_and_offset() {
        let mut entry = Entry::new(SegmentId(SEGMENT_ID_MAX), SEGMENT_OFFSET_MAX, 7, 1, 0);
        let expected = Location::Segment {
            segment: SegmentId(SEGMENT_ID_MAX),
            offset: SEGMENT_OFFSET_MAX,
            len: 7,
        };
        assert_eq!(entry.location(), expected);
        entry.relocate(SegmentId(3), 96);
        assert_eq!(
            entry.location(),
            Location::Segment { segment: SegmentId(3), offset: 96, len: 7 }
        );
        assert_eq!(std::mem::size_of::<Entry>(), 24);
    }

    /// Segments cannot be configured longer than an entry's offset can say.
    #[test]
    fn segment_bytes_beyond_32_bit_offsets_are_refused() {
        let options =
            PayloadOptions { segment_bytes: SEGMENT_OFFSET_MAX + 1, ..PayloadOptions::default() };
        assert!(matches!(options.validate(), Err(PayloadError::InvalidOptions { .. })));
        let options =
            PayloadOptions { segment_bytes: SEGMENT_OFFSET_MAX, ..PayloadOptions::default() };
        assert!(options.validate().is_ok());
    }
}
