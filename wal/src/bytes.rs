//! Shared, read-only byte ranges of mapped files (records and checkpoint blobs), handed out
//! without copying.

use std::fmt;
use std::ops::Deref;

use crate::io::Mapping;

/// A range of a mapped file. Cheap to clone; keeps the mapping alive.
#[derive(Clone)]
pub struct SharedBytes {
    mapping: Mapping,
    start: usize,
    end: usize,
}

impl SharedBytes {
    /// The range `start..end` of `mapping`, which must lie within it.
    pub(crate) fn new(mapping: Mapping, start: usize, end: usize) -> SharedBytes {
        debug_assert!(start <= end && end <= (*mapping).as_ref().len());
        SharedBytes { mapping, start, end }
    }

    /// The bytes.
    pub fn as_slice(&self) -> &[u8] {
        (*self.mapping).as_ref().get(self.start..self.end).unwrap_or(&[])
    }
}

impl Deref for SharedBytes {
    type Target = [u8];
    fn deref(&self) -> &[u8] {
        self.as_slice()
    }
}

impl AsRef<[u8]> for SharedBytes {
    fn as_ref(&self) -> &[u8] {
        self.as_slice()
    }
}

impl fmt::Debug for SharedBytes {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "SharedBytes({} bytes)", self.end - self.start)
    }
}

impl PartialEq for SharedBytes {
    fn eq(&self, other: &Self) -> bool {
        self.as_slice() == other.as_slice()
    }
}
