//! Reading payloads: `Read + Seek` streams over ranges, checked against their SHA-256 the first
//! time each payload is read after open. A reader that serves a whole payload from its start
//! checks it again as it goes, and holds its last bytes back until the SHA-256 matches: damage
//! that appears on the medium later (a latent sector error) fails the read, never passes as data.

use std::io::{self, Read, Seek, SeekFrom};
use std::ops::Range;
use std::path::PathBuf;
use std::sync::Arc;

use sha2::{Digest as _, Sha256};
use tessera_wal::FsFile;

use crate::payload::address::{ContentAddress, Location, SegmentId};
use crate::payload::error::{PayloadCorruption, PayloadError};
use crate::payload::format::{self, ENTRY_HEADER_BYTES};
use crate::payload::{INGEST_CHUNK_BYTES, PayloadStore};

/// A payload (or a range of it) as a byte stream.
#[derive(Debug)]
pub struct PayloadReader {
    source: Source,
    /// Payload offsets this reader may serve.
    range: Range<u64>,
    /// The next payload offset to serve.
    pos: u64,
    /// The hash of the bytes served so far, while they are the payload's prefix.
    check: Option<StreamCheck>,
}

/// A payload's SHA-256 computed over the bytes as they are served.
struct StreamCheck {
    hasher: Sha256,
    address: ContentAddress,
}

impl std::fmt::Debug for StreamCheck {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "StreamCheck({})", self.address)
    }
}

enum Source {
    Empty,
    /// `payload_len`: the whole payload's length, whatever range the reader serves.
    Segment {
        file: Arc<dyn FsFile>,
        path: PathBuf,
        segment: SegmentId,
        data_offset: u64,
        payload_len: u64,
    },
    Inline(Arc<[u8]>),
}

impl std::fmt::Debug for Source {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Source::Empty => f.write_str("Empty"),
            Source::Segment { path, data_offset, .. } => {
                write!(f, "Segment({}, {data_offset})", path.display())
            }
            Source::Inline(bytes) => write!(f, "Inline({} bytes)", bytes.len()),
        }
    }
}

/// What [`PayloadStore::verify`] checked and found.
#[derive(Debug, Default)]
pub struct VerifyReport {
    /// Payloads checked.
    pub payloads: u64,
    /// Payload bytes hashed.
    pub bytes: u64,
    /// Each damaged payload: the error names its segment and offset.
    pub corrupt: Vec<PayloadError>,
}

impl PayloadReader {
    /// A reader over bytes carried inline (in a WAL record).
    pub fn inline(bytes: Arc<[u8]>) -> PayloadReader {
        let len = bytes.len() as u64;
        PayloadReader { source: Source::Inline(bytes), range: 0..len, pos: 0, check: None }
    }

    /// The payload's bytes this reader serves, from its start.
    pub fn len(&self) -> u64 {
        self.range.end - self.range.start
    }

    /// Whether it serves nothing.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// Narrows the reader to `range` of the payload (clamped to its end); the position moves
    /// to the range's start.
    pub fn with_range(mut self, range: Range<u64>) -> Result<PayloadReader, PayloadError> {
        let len = self.range.end;
        if range.start > len || (range.start == len && len > 0 && range.end > range.start) {
            return Err(PayloadError::RangeNotSatisfiable { start: range.start, len });
        }
        self.range = range.start..range.end.min(len).max(range.start);
        self.pos = self.range.start;
        if self.range != (0..len) {
            self.check = None;
        }
        Ok(self)
    }
}

impl Read for PayloadReader {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        let left = self.range.end.saturating_sub(self.pos);
        let n = usize::try_from(left).unwrap_or(usize::MAX).min(buf.len());
        if n == 0 {
            return Ok(0);
        }
        let out = buf.get_mut(..n).unwrap_or(&mut []);
        match &self.source {
            Source::Empty => return Ok(0),
            Source::Segment { file, data_offset, path, payload_len, .. } => {
                file.read_exact_at(out, data_offset + self.pos)?;
                if let Some(check) = &mut self.check {
                    check.hasher.update(&*out);
                    if self.pos + n as u64 == *payload_len {
                        let computed = ContentAddress(check.hasher.clone().finalize().into());
                        if computed != check.address {
                            let error = PayloadError::Corrupt {
                                path: path.clone(),
                                offset_bytes: data_offset - ENTRY_HEADER_BYTES,
                                reason: PayloadCorruption::Sha256Mismatch {
                                    address: check.address,
                                    computed,
                                },
                            };
                            return Err(io::Error::new(io::ErrorKind::InvalidData, error));
                        }
                    }
                }
            }
            Source::Inline(bytes) => {
                let start = usize::try_from(self.pos).unwrap_or(usize::MAX);
                let from = bytes.get(start..start + n).ok_or(io::ErrorKind::UnexpectedEof)?;
                out.copy_from_slice(from);
            }
        }
        self.pos += n as u64;
        Ok(n)
    }
}

impl Seek for PayloadReader {
    /// Positions are relative to the reader's range: 0 is the range's start.
    fn seek(&mut self, to: SeekFrom) -> io::Result<u64> {
        let len = self.len();
        let relative = self.pos - self.range.start;
        let target = match to {
            SeekFrom::Start(n) => Some(n),
            SeekFrom::End(delta) => len.checked_add_signed(delta),
            SeekFrom::Current(delta) => relative.checked_add_signed(delta),
        };
        let target = target.ok_or_else(|| {
            io::Error::new(io::ErrorKind::InvalidInput, "seek before the start of the payload")
        })?;
        let pos = self.range.start + target.min(len);
        if pos != self.pos {
            self.check = None;
        }
        self.pos = pos;
        Ok(self.pos - self.range.start)
    }
}

impl PayloadStore {
    /// A reader over a live payload. The first read after open checks the whole payload against
    /// its SHA-256 first: damage is an error naming the segment and offset, never data.
    pub fn reader(&self, address: &ContentAddress) -> Result<PayloadReader, PayloadError> {
        let (reader, checked) = self.reader_unchecked(address)?;
        if !checked {
            self.check_reader(address, &reader)?;
        }
        Ok(reader)
    }

    /// A reader over a live payload without the first-read check, and whether the payload was
    /// checked already. For callers that must not hold their own locks across the check: they
    /// call [`PayloadStore::check_reader`] after releasing them, before reading.
    pub fn reader_unchecked(
        &self,
        address: &ContentAddress,
    ) -> Result<(PayloadReader, bool), PayloadError> {
        if *address == ContentAddress::of_empty() {
            let reader = PayloadReader { source: Source::Empty, range: 0..0, pos: 0, check: None };
            return Ok((reader, true));
        }
        let (location, verified, file, path) = {
            let state = self.inner.state.lock();
            let entry = state
                .entries
                .get(address)
                .ok_or(PayloadError::UnknownAddress { address: *address })?;
            let segment = state.segments.get(&entry.segment()).ok_or_else(|| {
                PayloadError::MissingSegment {
                    address: *address,
                    segment: entry.segment(),
                    path: self.inner.dir.join(format::segment_name(entry.segment())),
                }
            })?;
            (entry.location(), entry.is_verified(), Arc::clone(&segment.file), segment.path.clone())
        };
        let Location::Segment { segment, offset, len } = location else {
            return Err(PayloadError::UnknownAddress { address: *address });
        };
        let data_offset = offset + ENTRY_HEADER_BYTES;
        let reader = PayloadReader {
            source: Source::Segment { file, path, segment, data_offset, payload_len: len },
            range: 0..len,
            pos: 0,
            check: Some(StreamCheck { hasher: Sha256::new(), address: *address }),
        };
        Ok((reader, verified))
    }

    /// Checks the bytes `reader` serves (the entry it was opened on, wherever the payload has
    /// moved since) against `address`, and marks the entry checked if it is still there.
    pub fn check_reader(
        &self,
        address: &ContentAddress,
        reader: &PayloadReader,
    ) -> Result<(), PayloadError> {
        let Source::Segment { file, path, data_offset, payload_len, segment } = &reader.source
        else {
            return Ok(());
        };
        let offset = data_offset - ENTRY_HEADER_BYTES;
        verify_entry(&**file, path, offset, *payload_len, address)?;
        let checked_at = Location::Segment { segment: *segment, offset, len: *payload_len };
        if let Some(entry) = self.inner.state.lock().entries.get_mut(address)
            && entry.location() == checked_at
        {
            entry.set_verified();
        }
        Ok(())
    }

    /// Checks every live payload against its SHA-256 (and its entry header).
    pub fn verify(&self) -> Result<VerifyReport, PayloadError> {
        let targets: Vec<_> = {
            let state = self.inner.state.lock();
            state
                .entries
                .iter()
                .filter_map(|(address, e)| {
                    let segment = state.segments.get(&e.segment())?;
                    Some((
                        *address,
                        Arc::clone(&segment.file),
                        segment.path.clone(),
                        e.offset(),
                        e.len,
                    ))
                })
                .collect()
        };
        let mut report = VerifyReport::default();
        for (address, file, path, offset, len) in targets {
            report.payloads += 1;
            report.bytes += len;
            match verify_entry(&*file, &path, offset, len, &address) {
                Ok(()) => {
                    if let Some(entry) = self.inner.state.lock().entries.get_mut(&address) {
                        entry.set_verified();
                    }
                }
                Err(e @ PayloadError::Corrupt { .. }) => report.corrupt.push(e),
                Err(e) => return Err(e),
            }
        }
        Ok(report)
    }
}

/// Checks an entry: its header (CRC, length, address) and its payload's SHA-256.
pub(crate) fn verify_entry(
    file: &dyn FsFile,
    path: &std::path::Path,
    offset: u64,
    len: u64,
    address: &ContentAddress,
) -> Result<(), PayloadError> {
    let corrupt =
        |reason| PayloadError::Corrupt { path: path.to_path_buf(), offset_bytes: offset, reason };
    let file_bytes = file.len().map_err(|e| PayloadError::io(path, "len", e))?;
    let entry_end = offset + ENTRY_HEADER_BYTES + len;
    if entry_end > file_bytes {
        return Err(corrupt(PayloadCorruption::PastEnd { entry_bytes: entry_end, file_bytes }));
    }
    let mut header = [0u8; 48];
    file.read_exact_at(&mut header, offset).map_err(|e| PayloadError::io(path, "read", e))?;
    let header = format::decode_entry_header(&header).map_err(corrupt)?;
    if header.payload_bytes != len || header.address != *address {
        return Err(corrupt(PayloadCorruption::HeaderField {
            field: "payload_bytes/sha256",
            found: format!("{} bytes, {}", header.payload_bytes, header.address),
            expected: format!("{len} bytes, {address}"),
        }));
    }
    hash_payload(file, path, offset, len, address, |_, _| Ok(()))
}

/// Reads the payload of the entry at `offset` chunk by chunk, hands each chunk (with its
/// position in the payload) to `each`, and checks the whole against its SHA-256.
pub(crate) fn hash_payload(
    file: &dyn FsFile,
    path: &std::path::Path,
    offset: u64,
    len: u64,
    address: &ContentAddress,
    mut each: impl FnMut(u64, &[u8]) -> Result<(), PayloadError>,
) -> Result<(), PayloadError> {
    let mut hasher = Sha256::new();
    let mut buf = vec![0u8; INGEST_CHUNK_BYTES.min(usize::try_from(len).unwrap_or(usize::MAX))];
    let mut done = 0u64;
    while done < len {
        let n = usize::try_from(len - done).unwrap_or(usize::MAX).min(buf.len());
        let chunk = buf.get_mut(..n).unwrap_or(&mut []);
        let at = offset + ENTRY_HEADER_BYTES + done;
        file.read_exact_at(chunk, at).map_err(|e| PayloadError::io(path, "read", e))?;
        hasher.update(&*chunk);
        each(done, chunk)?;
        done += n as u64;
    }
    let computed = ContentAddress(hasher.finalize().into());
    if computed != *address {
        let reason = PayloadCorruption::Sha256Mismatch { address: *address, computed };
        return Err(PayloadError::Corrupt {
            path: path.to_path_buf(),
            offset_bytes: offset,
            reason,
        });
    }
    Ok(())
}
