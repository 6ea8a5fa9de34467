//! Ingest: a payload streamed into an active segment, hashed on the way, checked against what
//! the caller expects, synced, then live with one pending reference.
//!
//! Entry layout during an ingest: the payload is written from `start + ENTRY_HEADER_BYTES` as it
//! arrives; once its SHA-256 is known the header is written at `start`, and one fdatasync makes
//! the entry durable. Until the header is written nothing at `start` checks out, and a
//! failed or abandoned ingest leaves the segment's end at `start`, so the next entry
//! overwrites what it wrote.

use std::io::{ErrorKind, Read};
use std::sync::Arc;

use crate::payload::address::{ContentAddress, Location};
use crate::payload::digest::{Checksum, Digester, Digests, Expected};
use crate::payload::error::PayloadError;
use crate::payload::format::{self, ENTRY_HEADER_BYTES};
use crate::payload::read::verify_entry;
use crate::payload::segments::Claim;
use crate::payload::{Entry, INGEST_CHUNK_BYTES, Inner, PayloadHandle, PayloadStore};

/// What an ingest learned: where the payload is and what it hashes to.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Receipt {
    /// Its SHA-256.
    pub address: ContentAddress,
    /// Where its bytes are (possibly an entry that existed before: identical bytes are stored
    /// once).
    pub location: Location,
    /// Its length.
    pub len: u64,
    /// Its MD5 (the S3 ETag of a part).
    pub md5: [u8; 16],
    /// The additional checksums asked for.
    pub checksums: Vec<Checksum>,
    /// Set when the bytes were live already but their stored copy failed its SHA-256 check:
    /// this ingest's copy replaces it once committed. The committing record must say so (a move
    /// from this location to `location`) along with the reference.
    pub healed_from: Option<Location>,
}

/// An ingested, durable payload holding one *pending* reference on behalf of the caller: the
/// payload does not move while it is held. `commit` turns it into a committed reference once
/// the caller's record that references the payload is durable; dropping it gives it back.
#[must_use = "a pending payload is released when dropped; commit it once its WAL record is durable"]
#[derive(Debug)]
pub struct Pending {
    store: Arc<Inner>,
    receipt: Receipt,
    /// A healing ingest keeps its segment until the heal is committed or dropped.
    heal: Option<Claim>,
    resolved: bool,
}

impl Pending {
    /// A pending reference the caller took on `receipt.address` (unless the payload is empty).
    pub(super) fn new(store: Arc<Inner>, receipt: Receipt) -> Pending {
        Pending { store, receipt, heal: None, resolved: false }
    }

    /// What the ingest learned.
    pub fn receipt(&self) -> &Receipt {
        &self.receipt
    }

    /// The handle of the payload it holds a reference on; `None` for the empty payload.
    pub fn handle(&self) -> Option<PayloadHandle> {
        if self.receipt.location.is_empty() {
            return None;
        }
        self.store.state.lock().entries.handle(&self.receipt.address)
    }

    /// Keeps the reference: the record that references the payload is durable.
    pub fn commit(mut self) -> Receipt {
        self.resolve(true);
        self.receipt.clone()
    }

    fn resolve(&mut self, committed: bool) {
        if self.resolved {
            return;
        }
        self.resolved = true;
        if self.receipt.location.is_empty() {
            return;
        }
        let address = self.receipt.address;
        let heal = self.heal.take();
        let mut state = self.store.state.lock();
        let healed_end = match (&heal, committed) {
            (Some(claim), true) => {
                state.heal(&address, self.receipt.healed_from.as_ref(), claim, self.receipt.len)
            }
            _ => None,
        };
        if committed {
            state.commit_pending(&address);
        } else {
            state.release_pending(&address);
        }
        drop(state);
        if let Some(claim) = heal {
            // Committed: the copy is live, the segment's end moves past it; dropped: rewound.
            self.store.give_back(claim.id, healed_end.unwrap_or(claim.start), false);
        }
    }
}

impl Drop for Pending {
    fn drop(&mut self) {
        self.resolve(false);
    }
}

/// A payload being written, fed chunk by chunk (any runtime can drive it: see
/// [`PayloadStore::ingest`] for a `Read`, and the `tokio` feature for an `AsyncRead`).
/// Dropping it unfinished abandons the payload: nothing of it becomes live.
#[derive(Debug)]
pub struct IngestWriter {
    store: Arc<Inner>,
    claim: Option<Claim>,
    digester: Option<Digester>,
    expected: Expected,
    declared_len: Option<u64>,
    received: u64,
}

impl std::fmt::Debug for Digester {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("Digester")
    }
}

impl PayloadStore {
    /// Starts an ingest. `declared_len`, if given, is checked at the end (a stream that
    /// delivers fewer or more bytes fails); `expected` lists what the bytes must hash to.
    pub fn writer(&self, declared_len: Option<u64>, expected: Expected) -> IngestWriter {
        let mut wanted: Vec<_> = expected.checksums.iter().map(|c| c.algorithm).collect();
        wanted.extend(expected.compute.iter().copied());
        wanted.sort_unstable();
        wanted.dedup();
        IngestWriter {
            store: Arc::clone(&self.inner),
            claim: None,
            digester: Some(Digester::new(wanted)),
            expected,
            declared_len,
            received: 0,
        }
    }

    /// Ingests a payload from `reader`, never holding more than a chunk of it in memory.
    pub fn ingest(
        &self,
        reader: &mut dyn Read,
        declared_len: Option<u64>,
        expected: Expected,
    ) -> Result<Pending, PayloadError> {
        let mut writer = self.writer(declared_len, expected);
        let mut buf = vec![0u8; INGEST_CHUNK_BYTES];
        loop {
            let n = match reader.read(&mut buf) {
                Ok(0) => break,
                Ok(n) => n,
                Err(e) if e.kind() == ErrorKind::Interrupted => continue,
                Err(source) => {
                    return Err(PayloadError::Stream { received: writer.received, source });
                }
            };
            writer.write(buf.get(..n).unwrap_or(&[]))?;
        }
        writer.finish()
    }
}

impl IngestWriter {
    /// Bytes received so far.
    pub fn received(&self) -> u64 {
        self.received
    }

    /// Writes the next bytes of the payload.
    pub fn write(&mut self, bytes: &[u8]) -> Result<(), PayloadError> {
        if bytes.is_empty() {
            return Ok(());
        }
        let max_bytes = self.store.options.payload_bytes_max;
        let received = self.received + bytes.len() as u64;
        if received > max_bytes {
            return Err(PayloadError::TooLarge { max_bytes });
        }
        if let Some(declared) = self.declared_len.filter(|&d| received > d) {
            return Err(PayloadError::LongStream { declared });
        }
        if self.claim.is_none() {
            self.claim = Some(self.store.claim()?);
        }
        let Some(claim) = &self.claim else { return Ok(()) };
        let offset = claim.start + ENTRY_HEADER_BYTES + self.received;
        claim
            .file
            .write_all_at(bytes, offset)
            .map_err(|e| PayloadError::io(claim.path.clone(), "write", e))?;
        // Let the disk work while the next chunk is hashed: the final fdatasync waits less.
        claim
            .file
            .start_writeback(offset, bytes.len() as u64)
            .map_err(|e| PayloadError::io(claim.path.clone(), "start_writeback", e))?;
        if let Some(digester) = &mut self.digester {
            digester.update(bytes);
        }
        self.received = received;
        Ok(())
    }

    /// Checks the payload, makes it durable and live, and returns it with one reference.
    pub fn finish(mut self) -> Result<Pending, PayloadError> {
        if let Some(declared) = self.declared_len.filter(|&d| self.received < d) {
            return Err(PayloadError::ShortStream { declared, received: self.received });
        }
        let digests = self
            .digester
            .take()
            .map(Digester::finish)
            .ok_or(PayloadError::InvalidOptions { reason: "an ingest is finished once" })?;
        check_expected(&self.expected, &digests)?;
        let location = match self.claim.take() {
            None => Live::Here(Location::Empty),
            Some(claim) => self.store.make_live(claim, self.received, &digests.address)?,
        };
        let (location, healed_from, heal) = match location {
            Live::Here(location) => (location, None, None),
            Live::Healing { old, claim } => {
                let to = Location::Segment {
                    segment: claim.id,
                    offset: claim.start,
                    len: self.received,
                };
                (to, Some(old), Some(claim))
            }
        };
        let receipt = Receipt {
            address: digests.address,
            location,
            len: self.received,
            md5: digests.md5,
            checksums: digests.checksums,
            healed_from,
        };
        Ok(Pending { store: Arc::clone(&self.store), receipt, heal, resolved: false })
    }
}

impl Drop for IngestWriter {
    fn drop(&mut self) {
        if let Some(claim) = self.claim.take() {
            // Abandoned: the segment's end stays where this entry started.
            self.store.give_back(claim.id, claim.start, false);
        }
    }
}

pub(crate) fn check_expected(expected: &Expected, digests: &Digests) -> Result<(), PayloadError> {
    if let Some(md5) = expected.md5.filter(|md5| *md5 != digests.md5) {
        return Err(PayloadError::BadDigest {
            algorithm: "MD5",
            expected: hex::encode(md5),
            computed: hex::encode(digests.md5),
        });
    }
    for wanted in &expected.checksums {
        let computed = digests.checksums.iter().find(|c| c.algorithm == wanted.algorithm);
        let computed = computed.map_or(&[][..], |c| c.value.as_slice());
        if computed != wanted.value.as_slice() {
            return Err(PayloadError::bad_digest(wanted.algorithm, &wanted.value, computed));
        }
    }
    Ok(())
}

/// Where an ingest's bytes ended up.
enum Live {
    Here(Location),
    /// The bytes were live already, in a copy that failed its check: this ingest's copy (in
    /// `claim`, still held) replaces it once committed.
    Healing {
        old: Location,
        claim: Claim,
    },
}

impl Inner {
    /// Writes the header, syncs the entry, and makes it live with one pending reference; or, if
    /// the same bytes are live already (and check out), takes a pending reference to them and
    /// gives this space back.
    fn make_live(
        &self,
        claim: Claim,
        len: u64,
        address: &ContentAddress,
    ) -> Result<Live, PayloadError> {
        let mut damaged = None;
        if let Some((location, verified, file, path)) = self.existing(address) {
            let checked = verified
                || match &location {
                    Location::Segment { offset, len, .. } => {
                        match verify_entry(&*file, &path, *offset, *len, address) {
                            Ok(()) => true,
                            Err(PayloadError::Corrupt { .. }) => false,
                            Err(e) => return Err(e),
                        }
                    }
                    _ => true,
                };
            let mut state = self.state.lock();
            if let Some(entry) = state.entries.get_mut(address).filter(|e| e.location() == location)
            {
                if checked {
                    entry.set_verified();
                    entry.add_pending();
                    drop(state);
                    self.give_back(claim.id, claim.start, false);
                    return Ok(Live::Here(location));
                }
                damaged = Some(location);
            }
        }
        let header = format::encode_entry_header(len, address);
        let durable = claim
            .file
            .write_all_at(&header, claim.start)
            .map_err(|e| PayloadError::io(claim.path.clone(), "write", e))
            .and_then(|()| {
                claim
                    .file
                    .sync_data()
                    .map_err(|e| PayloadError::io(claim.path.clone(), "sync_data", e))
            });
        if let Err(e) = durable {
            // After a failed write or fsync the segment's state on disk is unknown: seal it
            // (what it held before stays as durable as it was).
            self.give_back(claim.id, claim.start, true);
            return Err(e);
        }
        let mut state = self.state.lock();
        if let Some(old) = damaged {
            // Pin the damaged entry; the copy replaces it when the ingest commits.
            if let Some(entry) = state.entries.get_mut(address).filter(|e| e.location() == old) {
                entry.add_pending();
                return Ok(Live::Healing { old, claim });
            }
        }
        // Another ingest of the same bytes may have become live while this one synced.
        if let Some(entry) = state.entries.get_mut(address) {
            entry.add_pending();
            let location = entry.location();
            drop(state);
            // Best effort: no valid header is left at the segment's end for a scan to find.
            let _ = claim.file.write_all_at(&[0; format::ENTRY_HEADER_LEN], claim.start);
            self.give_back(claim.id, claim.start, false);
            return Ok(Live::Here(location));
        }
        let mut entry = Entry::new(claim.id, claim.start, len, 0, 1);
        entry.set_verified();
        let (span, location) = (entry.span(), entry.location());
        state.entries.insert(*address, entry);
        if let Some(segment) = state.segments.get_mut(&claim.id) {
            segment.live_bytes += span;
        }
        drop(state);
        self.give_back(claim.id, claim.start + span, false);
        Ok(Live::Here(location))
    }

    /// A live entry's location, whether it was checked, and its segment's file.
    fn existing(
        &self,
        address: &ContentAddress,
    ) -> Option<(Location, bool, Arc<dyn tessera_wal::FsFile>, std::path::PathBuf)> {
        let state = self.state.lock();
        let entry = state.entries.get(address)?;
        let segment = state.segments.get(&entry.segment())?;
        Some((
            entry.location(),
            entry.is_verified(),
            Arc::clone(&segment.file),
            segment.path.clone(),
        ))
    }
}

impl crate::payload::State {
    /// Points a damaged entry at its healed copy (if it is still where it was); returns where
    /// the copy's segment now ends.
    fn heal(
        &mut self,
        address: &ContentAddress,
        old: Option<&Location>,
        claim: &Claim,
        len: u64,
    ) -> Option<u64> {
        let entry = self.entries.get_mut(address).filter(|e| Some(&e.location()) == old)?;
        let (from, span) = (entry.segment(), entry.span());
        entry.relocate(claim.id, claim.start);
        entry.set_verified();
        debug_assert_eq!(entry.len, len);
        if let Some(segment) = self.segments.get_mut(&from) {
            segment.live_bytes -= span;
        }
        if let Some(segment) = self.segments.get_mut(&claim.id) {
            segment.live_bytes += span;
        }
        Some(claim.start + span)
    }
}
