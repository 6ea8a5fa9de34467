//! Scanning a payload segment on its own, without the index: its entries are back to back
//! from the header on (an ingest always starts where the last entry ended), so a scan walks
//! them by their lengths until the first bytes that are not an entry header.

use std::path::Path;

use tessera_wal::{Fs, OpenMode};

use crate::payload::address::{ContentAddress, SegmentId};
use crate::payload::error::{PayloadCorruption, PayloadError};
use crate::payload::format::{self, ENTRY_HEADER_BYTES, PAYLOAD_SEGMENT_HEADER_BYTES};
use crate::payload::read::verify_entry;
use crate::payload::segments::check_segment_file;

/// An entry found by a scan.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ScannedEntry {
    /// Offset of its header.
    pub offset: u64,
    /// Its payload's length.
    pub len: u64,
    /// Its address (from its header).
    pub address: ContentAddress,
    /// The checking of its payload against its SHA-256, if asked for.
    pub damage: Option<PayloadCorruption>,
}

/// What a scan found.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct SegmentScan {
    /// The entries, in order.
    pub entries: Vec<ScannedEntry>,
    /// Where the last entry ends.
    pub end_offset: u64,
    /// The file's length: bytes past `end_offset` hold no entry (an interrupted ingest).
    pub file_bytes: u64,
}

/// Scans segment `id` at `path`: checks its header, walks its entries, and (with `check`)
/// hashes every payload.
pub fn scan_segment(
    fs: &dyn Fs,
    path: &Path,
    id: SegmentId,
    check: bool,
) -> Result<SegmentScan, PayloadError> {
    let file = fs.open(path, OpenMode::Read).map_err(|e| PayloadError::io(path, "open", e))?;
    let file_bytes = check_segment_file(&*file, path, id)?;
    let mut entries = Vec::new();
    let mut offset = PAYLOAD_SEGMENT_HEADER_BYTES;
    while offset + ENTRY_HEADER_BYTES <= file_bytes {
        let mut bytes = [0u8; 48];
        file.read_exact_at(&mut bytes, offset).map_err(|e| PayloadError::io(path, "read", e))?;
        let Ok(header) = format::decode_entry_header(&bytes) else { break };
        let data_end = offset + ENTRY_HEADER_BYTES + header.payload_bytes;
        if data_end > file_bytes {
            break;
        }
        let damage = if check {
            match verify_entry(&*file, path, offset, header.payload_bytes, &header.address) {
                Ok(()) => None,
                Err(PayloadError::Corrupt { reason, .. }) => Some(reason),
                Err(e) => return Err(e),
            }
        } else {
            None
        };
        entries.push(ScannedEntry {
            offset,
            len: header.payload_bytes,
            address: header.address,
            damage,
        });
        offset += format::entry_bytes(header.payload_bytes);
    }
    let end_offset = entries
        .last()
        .map_or(PAYLOAD_SEGMENT_HEADER_BYTES, |e| e.offset + ENTRY_HEADER_BYTES + e.len);
    Ok(SegmentScan { entries, end_offset, file_bytes })
}
