//! Replay: the log's records from an LSN on, as an iterator of [`Record`]s.
//!
//! Replay checks every frame it reads (CRC, LSN order, padding) and that each segment
//! continues the one before it. The last segment's end was settled when the log was opened, so
//! replay stops at the durable LSN of the moment it started and never meets a torn tail: any
//! invalid frame it meets is corruption, reported with file and offset, after which the
//! iterator ends.

use std::path::PathBuf;
use std::sync::Arc;

use crate::Lsn;
use crate::bytes::SharedBytes;
use crate::catalog::SegmentInfo;
use crate::error::{Corruption, WalError};
use crate::frame::{self, Parsed};
use crate::io::{Fs, Mapping, OpenMode};
use crate::segment::{SEGMENT_HEADER_BYTES, SegmentHeader};
use crate::tail::first_nonzero;

/// A record read back from the log.
#[derive(Clone, Debug, PartialEq)]
pub struct Record {
    /// The record's LSN.
    pub lsn: Lsn,
    /// The record's bytes, as appended.
    pub bytes: SharedBytes,
}

/// The records of a log from an LSN up to the durable LSN of the moment replay began.
#[derive(Debug)]
pub struct Replay {
    fs: Arc<dyn Fs>,
    segments: std::vec::IntoIter<SegmentInfo>,
    open: Option<OpenSegment>,
    /// The segment read last, named if the log ends too early.
    last_path: PathBuf,
    /// The LSN of the next frame to read.
    expected: Lsn,
    from: Lsn,
    until: Lsn,
    done: bool,
}

struct OpenSegment {
    path: PathBuf,
    mapping: Mapping,
    header: SegmentHeader,
    offset: usize,
}

impl Replay {
    /// Replays `from..=until` from `segments`, the first of which holds `from`.
    pub(crate) fn new(fs: Arc<dyn Fs>, segments: Vec<SegmentInfo>, from: Lsn, until: Lsn) -> Self {
        let expected = segments.first().map_or(from, |s| s.first_lsn);
        let done = from > until || segments.is_empty();
        let last_path = PathBuf::new();
        Replay {
            fs,
            segments: segments.into_iter(),
            open: None,
            last_path,
            expected,
            from,
            until,
            done,
        }
    }

    /// The next record, or `None` at the end; damage is an `Err`, after which replay ends.
    fn step(&mut self) -> Result<Option<Record>, WalError> {
        loop {
            if self.expected > self.until {
                return Ok(None);
            }
            let Some(segment) = self.open.as_mut() else {
                self.open_next()?;
                continue;
            };
            let bytes = (*segment.mapping).as_ref();
            match frame::parse(bytes, segment.offset, segment.header.frame_rules()) {
                Parsed::Frame(f) if f.lsn == self.expected => {
                    segment.offset = f.end_offset;
                    self.expected = self.expected.next();
                    if f.lsn >= self.from {
                        let end = f.payload_offset + f.payload_bytes;
                        let bytes =
                            SharedBytes::new(Arc::clone(&segment.mapping), f.payload_offset, end);
                        return Ok(Some(Record { lsn: f.lsn, bytes }));
                    }
                }
                Parsed::Frame(f) => {
                    let reason =
                        Corruption::LsnOutOfOrder { expected: self.expected, found: f.lsn };
                    return Err(WalError::corrupt(&segment.path, segment.offset as u64, reason));
                }
                Parsed::Invalid(reason) => {
                    return Err(WalError::corrupt(&segment.path, segment.offset as u64, reason));
                }
                Parsed::Unwritten => {
                    if let Some(data) = first_nonzero(bytes, segment.offset) {
                        let reason = Corruption::DataAfterEnd { data_offset_bytes: data as u64 };
                        return Err(WalError::corrupt(
                            &segment.path,
                            segment.offset as u64,
                            reason,
                        ));
                    }
                    self.open = None;
                }
            }
        }
    }

    /// Maps the next segment and checks that it continues the one before.
    fn open_next(&mut self) -> Result<(), WalError> {
        let Some(info) = self.segments.next() else {
            // The log ended before `until`: the durable records were there when replay began.
            let reason =
                Corruption::LogEndsEarly { last: self.expected.prev(), expected_until: self.until };
            return Err(WalError::corrupt(&self.last_path, 0, reason));
        };
        let path = info.path;
        let file =
            self.fs.open(&path, OpenMode::Read).map_err(|e| WalError::io(&path, "open", e))?;
        let mapping = file.map().map_err(|e| WalError::io(&path, "map", e))?;
        let header = SegmentHeader::decode((*mapping).as_ref())
            .map_err(|reason| WalError::corrupt(&path, 0, reason))?;
        if header.first_lsn != info.first_lsn {
            let reason =
                Corruption::NameMismatch { name: info.first_lsn, header: header.first_lsn };
            return Err(WalError::corrupt(&path, 16, reason));
        }
        if header.first_lsn != self.expected {
            let reason =
                Corruption::SegmentGap { last: self.expected.prev(), next_first: header.first_lsn };
            return Err(WalError::corrupt(&path, 16, reason));
        }
        self.last_path.clone_from(&path);
        self.open = Some(OpenSegment { path, mapping, header, offset: SEGMENT_HEADER_BYTES });
        Ok(())
    }
}

impl std::fmt::Debug for OpenSegment {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("OpenSegment")
            .field("path", &self.path)
            .field("offset", &self.offset)
            .finish()
    }
}

impl Iterator for Replay {
    type Item = Result<Record, WalError>;

    fn next(&mut self) -> Option<Self::Item> {
        if self.done {
            return None;
        }
        match self.step() {
            Ok(Some(record)) => Some(Ok(record)),
            Ok(None) => {
                self.done = true;
                None
            }
            Err(e) => {
                self.done = true;
                Some(Err(e))
            }
        }
    }
}
