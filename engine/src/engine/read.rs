//! Reading objects: whole, a byte range, or one part.

use std::io::{self, Read};
use std::sync::Arc;

use crate::engine::Engine;
use crate::error::EngineError;
use crate::model::{ObjectInfo, PartInfo};
use crate::payload::PayloadReader;
use crate::state::{Object, PartData};

/// An object's bytes (or a range of them), read part after part. Each stored payload is checked
/// against its SHA-256 the first time it is read after open: damaged bytes fail the read.
#[derive(Debug)]
pub struct ObjectReader {
    pieces: std::collections::VecDeque<PayloadReader>,
    len: u64,
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

impl Engine {
    fn part_reader(&self, data: &PartData) -> Result<PayloadReader, EngineError> {
        Ok(match data {
            PartData::Empty => PayloadReader::inline(Arc::from(&[][..])),
            PartData::Inline(inline) => PayloadReader::inline(Arc::clone(&inline.bytes)),
            PartData::Stored(address) => self.payload.reader(address)?,
        })
    }

    /// Readers for the parts of `object` overlapping `first..=last`, opened while the caller
    /// holds the state (so no payload is released meanwhile).
    fn range_reader(
        &self,
        object: &Object,
        first: u64,
        end: u64,
    ) -> Result<ObjectReader, EngineError> {
        let mut pieces = std::collections::VecDeque::new();
        let mut start = 0u64;
        for part in &object.parts {
            let part_end = start + part.size_bytes;
            if part_end > first && start < end && part.size_bytes > 0 {
                let from = first.saturating_sub(start);
                let to = end.min(part_end) - start;
                pieces.push_back(self.part_reader(&part.data)?.with_range(from..to)?);
            }
            start = part_end;
        }
        Ok(ObjectReader { pieces, len: end.saturating_sub(first) })
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
        let reader = self.range_reader(object, first, end)?;
        Ok((object.info(bucket, key), reader))
    }

    /// Opens one part of an object (GetObject with `partNumber`): `part_number` counts the
    /// object's parts from 1. An object written by a single PUT has one part. Beyond the part
    /// count is InvalidPart.
    pub fn open_object_part(
        &self,
        bucket: &str,
        key: &str,
        part_number: u32,
    ) -> Result<(ObjectInfo, PartInfo, ObjectReader), EngineError> {
        let core = self.core.read();
        let object = core.state.object(bucket, key)?;
        let index = usize::try_from(part_number.saturating_sub(1)).unwrap_or(usize::MAX);
        let part = object.parts.get(index).filter(|_| part_number >= 1).ok_or(
            EngineError::InvalidPart { part_number, reason: "beyond the object's part count" },
        )?;
        let start: u64 = object.parts.iter().take(index).map(|p| p.size_bytes).sum();
        let reader = self.range_reader(object, start, start + part.size_bytes)?;
        Ok((object.info(bucket, key), part.info(), reader))
    }
}
