//! Reading objects: whole, a byte range, or one part.

use std::io::{self, Read};
use std::sync::Arc;

use crate::engine::Engine;
use crate::error::EngineError;
use crate::model::{ObjectInfo, PartInfo};
use crate::payload::{ContentAddress, PayloadReader};
use crate::state::{Object, Part, PartData};

/// An object's bytes (or a range of them), read part after part. Each stored payload is checked
/// against its SHA-256 the first time it is read after open: damaged bytes fail the read.
#[derive(Debug)]
pub struct ObjectReader {
    pieces: std::collections::VecDeque<PayloadReader>,
    len: u64,
}

/// One part of an object, opened for reading ([`Engine::open_object_part`]).
#[derive(Debug)]
pub struct OpenedPart {
    /// The object.
    pub object: ObjectInfo,
    /// The part.
    pub part: PartInfo,
    /// Where the part starts in the object.
    pub offset_bytes: u64,
    /// Its bytes.
    pub reader: ObjectReader,
}

impl ObjectReader {
    /// Bytes this reader yields in all.
    pub fn len(&self) -> u64 {
        self.len
    }

    /// Whether it yields nothing.
    pub fn is_empty(&self) -> bool {
        self.len == 0
    }
}

impl Read for ObjectReader {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        while let Some(piece) = self.pieces.front_mut() {
            let n = piece.read(buf)?;
            if n > 0 || buf.is_empty() {
                return Ok(n);
            }
            self.pieces.pop_front();
        }
        Ok(0)
    }
}

/// A part's reader opened under the state's lock, with what is left to do after it.
struct Piece {
    reader: PayloadReader,
    /// The address to check the reader's bytes against (first read after open), if not
    /// checked yet.
    unchecked: Option<ContentAddress>,
    range: std::ops::Range<u64>,
}

impl Engine {
    fn open_piece(&self, part: &Part, range: std::ops::Range<u64>) -> Result<Piece, EngineError> {
        let (reader, unchecked) = match &part.data {
            PartData::Empty => (PayloadReader::inline(Arc::from(&[][..])), None),
            PartData::Inline(inline) => (PayloadReader::inline(Arc::clone(&inline.bytes)), None),
            PartData::Stored(handle) => {
                // The caller holds the state: the part's reference keeps the handle valid.
                let address = self.payload.address(*handle)?;
                let (reader, checked) = self.payload.reader_unchecked(&address)?;
                // A handle names a slot, not bytes: a part whose reference went missing could
                // name a slot given to other bytes since. Their size tells most such apart.
                if reader.len() != part.size_bytes {
                    return Err(crate::payload::PayloadError::PartSizeDisagrees {
                        handle: handle.get(),
                        part_bytes: part.size_bytes,
                        payload_bytes: reader.len(),
                    }
                    .into());
                }
                (reader, (!checked).then_some(address))
            }
        };
        Ok(Piece { reader, unchecked, range })
    }

    /// The pieces of `object` overlapping `first..end`, opened while the caller holds the state
    /// (so no payload is released meanwhile; an open reader outlives a later release).
    fn pieces(&self, object: &Object, first: u64, end: u64) -> Result<Vec<Piece>, EngineError> {
        let mut pieces = Vec::new();
        let mut start = 0u64;
        // Sizes first: only the parts the range overlaps are unpacked.
        for (index, size_bytes) in object.parts.sizes().enumerate() {
            let part_end = start.saturating_add(size_bytes);
            if part_end > first
                && start < end
                && size_bytes > 0
                && let Some(part) = object.parts.get(index)
            {
                let from = first.saturating_sub(start);
                let to = end.min(part_end) - start;
                pieces.push(self.open_piece(&part, from..to)?);
            }
            start = part_end;
        }
        Ok(pieces)
    }

    /// Checks the pieces not checked since open (outside the state's lock: a check reads the
    /// whole payload, and writers must not wait for it), then narrows each to its range.
    fn finish_reader(&self, pieces: Vec<Piece>, len: u64) -> Result<ObjectReader, EngineError> {
        let mut readers = std::collections::VecDeque::with_capacity(pieces.len());
        for piece in pieces {
            if let Some(address) = piece.unchecked {
                self.payload.check_reader(&address, &piece.reader)?;
            }
            readers.push_back(piece.reader.with_range(piece.range)?);
        }
        Ok(ObjectReader { pieces: readers, len })
    }

    /// Opens an object for reading: whole, or the bytes `first..=last` (InvalidRange if the
    /// range starts beyond the object; a last byte beyond it is cut to the object's end, as S3
    /// does).
    pub fn open_object(
        &self,
        bucket: &str,
        key: &str,
        range: Option<(u64, u64)>,
    ) -> Result<(ObjectInfo, ObjectReader), EngineError> {
        let (info, pieces, len) = {
            let core = self.core.read();
            let object = core.state.object(bucket, key)?;
            let len = object.size_bytes;
            let (first, end) = match range {
                None => (0, len),
                Some((first, last)) if first <= last && first < len => {
                    (first, last.saturating_add(1).min(len))
                }
                Some((first, last)) => return Err(EngineError::InvalidRange { first, last, len }),
            };
            (object.info(bucket, key), self.pieces(object, first, end)?, end - first)
        };
        Ok((info, self.finish_reader(pieces, len)?))
    }

    /// Opens one part of an object (GetObject with `partNumber`): the part uploaded with that
    /// number (an object written by a single PUT has part 1), whose number may skip as the
    /// upload's did. A number the object has no part for is InvalidPart.
    pub fn open_object_part(
        &self,
        bucket: &str,
        key: &str,
        part_number: u32,
    ) -> Result<OpenedPart, EngineError> {
        let (object, part, offset_bytes, pieces) = {
            let core = self.core.read();
            let object = core.state.object(bucket, key)?;
            let (part, offset_bytes) =
                object.part_with_offset(part_number).ok_or(EngineError::InvalidPart {
                    part_number,
                    reason: "the object has no such part",
                })?;
            let piece = self.open_piece(&part, 0..part.size_bytes)?;
            (object.info(bucket, key), part.info(), offset_bytes, vec![piece])
        };
        let reader = self.finish_reader(pieces, part.size_bytes)?;
        Ok(OpenedPart { object, part, offset_bytes, reader })
    }
}
