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
use crate::payload::segments::Claim;
use crate::payload::{Entry, INGEST_CHUNK_BYTES, Inner, PayloadStore};

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
}

/// An ingested, durable payload holding one reference on behalf of the caller. `commit` hands
/// the reference to the caller's committed WAL record; dropping it gives the reference back.
#[must_use = "a pending payload is released when dropped; commit it once its WAL record is durable"]
#[derive(Debug)]
pub struct Pending {
    store: Arc<Inner>,
    receipt: Receipt,
    committed: bool,
}

impl Pending {
    /// What the ingest learned.
    pub fn receipt(&self) -> &Receipt {
        &self.receipt
    }

    /// Keeps the reference: the record that references the payload is durable.
    pub fn commit(mut self) -> Receipt {
        self.committed = true;
        self.receipt.clone()
    }
}

impl Drop for Pending {
    fn drop(&mut self) {
        if !self.committed && !self.receipt.location.is_empty() {
            self.store.state.lock().release(&self.receipt.address);
        }
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
            None => Location::Empty,
            Some(claim) => self.store.make_live(claim, self.received, &digests.address)?,
        };
        let receipt = Receipt {
            address: digests.address,
            location,
            len: self.received,
            md5: digests.md5,
            checksums: digests.checksums,
        };
        Ok(Pending { store: Arc::clone(&self.store), receipt, committed: false })
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

fn check_expected(expected: &Expected, digests: &Digests) -> Result<(), PayloadError> {
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

impl Inner {
    /// Writes the header, syncs the entry, and makes it live with one reference; or, if the
    /// same bytes are live already, takes a reference to them and gives this space back.
    fn make_live(
        &self,
        claim: Claim,
        len: u64,
        address: &ContentAddress,
    ) -> Result<Location, PayloadError> {
        // Bound first: the guard must be gone before `give_back` locks again.
        let existing = self.state.lock().add_ref_if_live(address);
        if let Some(location) = existing {
            self.give_back(claim.id, claim.start, false);
            return Ok(location);
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
        // Another ingest of the same bytes may have become live while this one synced.
        if let Some(location) = state.add_ref_if_live(address) {
            drop(state);
            self.give_back(claim.id, claim.start, false);
            return Ok(location);
        }
        let entry = Entry { segment: claim.id, offset: claim.start, len, refs: 1, verified: true };
        let (span, location) = (entry.span(), entry.location());
        state.entries.insert(*address, entry);
        if let Some(segment) = state.segments.get_mut(&claim.id) {
            segment.live_bytes += span;
        }
        drop(state);
        self.give_back(claim.id, claim.start + span, false);
        Ok(location)
    }
}

impl crate::payload::State {
    /// Takes a reference to `address` if it is live, and says where it is.
    fn add_ref_if_live(&mut self, address: &ContentAddress) -> Option<Location> {
        let entry = self.entries.get_mut(address)?;
        entry.refs += 1;
        Some(entry.location())
    }
}
