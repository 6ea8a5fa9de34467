//! Checkpoint files: docs/format.md §4 "Checkpoint file".
//!
//! A checkpoint holds a caller's snapshot (an opaque blob) of everything up to and including
//! LSN `lsn`. It is written to `{lsn:020}.ckpt.tmp`, synced, renamed to `{lsn:020}.ckpt`, and
//! the directory synced: a checkpoint under its real name is whole unless the disk damaged it.
//!
//! ```text
//! offset size field           meaning
//!      0    8 magic           "tssr.ckp"
//!      8    4 format_version  u32 LE, 1
//!     12    4 reserved        zero
//!     16    8 lsn             u64 LE, >= 1: the snapshot covers every record up to this LSN
//!     24    8 blob_bytes      u64 LE, <= CHECKPOINT_BLOB_BYTES_MAX; the file is 40 + this long
//!     32    4 blob_crc32      crc32 of the blob
//!     36    4 header_crc32    crc32 of bytes 0..36
//!     40    n blob            the caller's snapshot
//! ```

use std::io;
use std::path::{Path, PathBuf};
use std::sync::Arc;

use crate::Lsn;
use crate::bytes::SharedBytes;
use crate::error::{Corruption, WalError};
use crate::frame::{read_u32, read_u64};
use crate::io::{Fs, OpenMode};
use crate::limits::{CHECKPOINT_BLOB_BYTES_MAX, LSN_MAX};
use crate::segment::{FORMAT_VERSION, TEMP_SUFFIX, parse_numbered_name};

/// docs/format.md §4: the magic number of a checkpoint file.
pub const CHECKPOINT_MAGIC: [u8; 8] = *b"tssr.ckp";
/// docs/format.md §4: size of a checkpoint header; the blob follows.
pub const CHECKPOINT_HEADER_BYTES: usize = 40;
const _: () = assert!(CHECKPOINT_HEADER_BYTES == 8 + 4 + 4 + 8 + 8 + 4 + 4);
/// Suffix of a checkpoint file's name.
pub const CHECKPOINT_SUFFIX: &str = ".ckpt";

/// A loaded checkpoint: the snapshot of everything up to `lsn`.
#[derive(Clone, Debug)]
pub struct Checkpoint {
    /// The last LSN the snapshot covers; replay continues after it.
    pub lsn: Lsn,
    /// The caller's snapshot, as it was written.
    pub blob: SharedBytes,
}

/// A checkpoint file that failed its checks and was passed over at open.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct SkippedCheckpoint {
    /// The file.
    pub path: PathBuf,
    /// Where the damage was found.
    pub offset_bytes: u64,
    /// What was wrong.
    pub reason: Corruption,
}

/// The file name of the checkpoint at `lsn`.
pub fn checkpoint_name(lsn: Lsn) -> String {
    format!("{:020}{CHECKPOINT_SUFFIX}", lsn.0)
}

/// The LSN a checkpoint file name stands for, if it is a checkpoint's name.
pub fn parse_checkpoint_name(name: &str) -> Option<Lsn> {
    parse_numbered_name(name, CHECKPOINT_SUFFIX)
}

fn encode_header(lsn: Lsn, blob: &[u8]) -> [u8; CHECKPOINT_HEADER_BYTES] {
    let mut out = [0u8; CHECKPOINT_HEADER_BYTES];
    out[0..8].copy_from_slice(&CHECKPOINT_MAGIC);
    out[8..12].copy_from_slice(&FORMAT_VERSION.to_le_bytes());
    out[16..24].copy_from_slice(&lsn.0.to_le_bytes());
    out[24..32].copy_from_slice(&(blob.len() as u64).to_le_bytes());
    out[32..36].copy_from_slice(&crc32fast::hash(blob).to_le_bytes());
    let crc = crc32fast::hash(&out[0..36]);
    out[36..40].copy_from_slice(&crc.to_le_bytes());
    out
}

/// Where writing a checkpoint failed: before its rename nothing changed on disk that matters
/// (the temporary file is removed); from the rename on, the directory's state is unknown.
pub(crate) enum WriteFailure {
    BeforeRename(WalError),
    AfterRename { path: PathBuf, op: &'static str, source: io::Error },
}

/// Writes the checkpoint for `lsn` durably (temp file, sync, rename, directory sync).
pub(crate) fn write(fs: &dyn Fs, dir: &Path, lsn: Lsn, blob: &[u8]) -> Result<(), WriteFailure> {
    let path = dir.join(checkpoint_name(lsn));
    let temp = dir.join(format!("{}{TEMP_SUFFIX}", checkpoint_name(lsn)));
    let staged = (|| {
        let file =
            fs.open(&temp, OpenMode::CreateNew).map_err(|e| WalError::io(&temp, "create", e))?;
        let header = encode_header(lsn, blob);
        file.write_all_at(&header, 0).map_err(|e| WalError::io(&temp, "write", e))?;
        file.write_all_at(blob, CHECKPOINT_HEADER_BYTES as u64)
            .map_err(|e| WalError::io(&temp, "write", e))?;
        file.sync_data().map_err(|e| WalError::io(&temp, "sync_data", e))
    })();
    if let Err(e) = staged {
        // Best effort: a leftover temporary file is removed at the next open anyway.
        let _ = fs.remove(&temp);
        return Err(WriteFailure::BeforeRename(e));
    }
    fs.rename(&temp, &path).map_err(|source| WriteFailure::AfterRename {
        path: path.clone(),
        op: "rename",
        source,
    })?;
    fs.sync_dir(dir).map_err(|source| WriteFailure::AfterRename {
        path: dir.to_path_buf(),
        op: "sync_dir",
        source,
    })
}

/// Loads the newest checkpoint that checks out among `lsns`, newest first, and lists those
/// passed over. An I/O error (as opposed to damage) stops the search.
pub(crate) fn load_newest(
    fs: &dyn Fs,
    dir: &Path,
    lsns: &[Lsn],
) -> Result<(Option<Checkpoint>, Vec<SkippedCheckpoint>), WalError> {
    let mut newest_first = lsns.to_vec();
    newest_first.sort_unstable_by(|a, b| b.cmp(a));
    let mut skipped = Vec::new();
    for lsn in newest_first {
        let path = dir.join(checkpoint_name(lsn));
        match load(fs, &path, lsn)? {
            Ok(checkpoint) => return Ok((Some(checkpoint), skipped)),
            Err((offset_bytes, reason)) => {
                tracing::warn!(path = %path.display(), offset_bytes, %reason, "checkpoint skipped");
                skipped.push(SkippedCheckpoint { path, offset_bytes, reason });
            }
        }
    }
    Ok((None, skipped))
}

/// Checks the checkpoint file for `lsn` in `dir` as open checks it, reading only (nothing is
/// set aside): `Ok(Ok(file_bytes))` if it checks out, `Ok(Err(..))` with where and why it does
/// not; the outer error is I/O. Open checks only the newest checkpoint that checks out; this is
/// for an operator's verification of every checkpoint kept.
pub fn check_checkpoint(
    fs: &dyn Fs,
    dir: &Path,
    lsn: Lsn,
) -> Result<Result<u64, SkippedCheckpoint>, WalError> {
    let path = dir.join(checkpoint_name(lsn));
    Ok(match load(fs, &path, lsn)? {
        Ok(checkpoint) => Ok((CHECKPOINT_HEADER_BYTES + checkpoint.blob.as_slice().len()) as u64),
        Err((offset_bytes, reason)) => Err(SkippedCheckpoint { path, offset_bytes, reason }),
    })
}

type Checked = Result<Checkpoint, (u64, Corruption)>;

/// Reads and checks one checkpoint file: the outer error is I/O, the inner one damage.
fn load(fs: &dyn Fs, path: &Path, name_lsn: Lsn) -> Result<Checked, WalError> {
    let file = fs.open(path, OpenMode::Read).map_err(|e| WalError::io(path, "open", e))?;
    let mapping = file.map().map_err(|e| WalError::io(path, "map", e))?;
    let bytes = (*mapping).as_ref();
    let header = match decode_header(bytes, name_lsn) {
        Ok(header) => header,
        Err(damage) => return Ok(Err(damage)),
    };
    let blob_end = CHECKPOINT_HEADER_BYTES + header.blob_bytes;
    let Some(blob) =
        bytes.get(CHECKPOINT_HEADER_BYTES..blob_end).filter(|_| blob_end == bytes.len())
    else {
        let reason = Corruption::BlobLength {
            file_bytes: bytes.len() as u64,
            expected_bytes: blob_end as u64,
        };
        return Ok(Err((CHECKPOINT_HEADER_BYTES as u64, reason)));
    };
    let computed = crc32fast::hash(blob);
    if computed != header.blob_crc32 {
        let reason = Corruption::BlobCrc { stored: header.blob_crc32, computed };
        return Ok(Err((CHECKPOINT_HEADER_BYTES as u64, reason)));
    }
    let blob = SharedBytes::new(Arc::clone(&mapping), CHECKPOINT_HEADER_BYTES, blob_end);
    Ok(Ok(Checkpoint { lsn: header.lsn, blob }))
}

struct CheckpointHeader {
    lsn: Lsn,
    blob_bytes: usize,
    blob_crc32: u32,
}

fn decode_header(bytes: &[u8], name_lsn: Lsn) -> Result<CheckpointHeader, (u64, Corruption)> {
    let Some(header) = bytes.first_chunk::<CHECKPOINT_HEADER_BYTES>() else {
        let reason = Corruption::ShortHeader {
            file_bytes: bytes.len() as u64,
            header_bytes: CHECKPOINT_HEADER_BYTES as u64,
        };
        return Err((0, reason));
    };
    let mut magic = [0; 8];
    magic.copy_from_slice(&header[0..8]);
    if magic != CHECKPOINT_MAGIC {
        return Err((0, Corruption::BadMagic { found: magic }));
    }
    let stored = read_u32(header, 36);
    let computed = crc32fast::hash(&header[0..36]);
    if stored != computed {
        return Err((36, Corruption::HeaderCrc { stored, computed }));
    }
    let version = read_u32(header, 8);
    if version != FORMAT_VERSION {
        return Err((
            8,
            Corruption::UnsupportedVersion { found: version, supported: FORMAT_VERSION },
        ));
    }
    let reserved = read_u32(header, 12);
    if reserved != 0 {
        return Err((
            12,
            Corruption::HeaderField { field: "reserved", found: u64::from(reserved) },
        ));
    }
    let lsn = Lsn(read_u64(header, 16));
    if lsn != name_lsn || lsn == Lsn::ZERO || lsn.0 > LSN_MAX {
        return Err((16, Corruption::NameMismatch { name: name_lsn, header: lsn }));
    }
    let blob_bytes = read_u64(header, 24);
    let blob_bytes = usize::try_from(blob_bytes)
        .ok()
        .filter(|_| blob_bytes <= CHECKPOINT_BLOB_BYTES_MAX)
        .ok_or((24, Corruption::HeaderField { field: "blob_bytes", found: blob_bytes }))?;
    Ok(CheckpointHeader { lsn, blob_bytes, blob_crc32: read_u32(header, 32) })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::SimFs;

    fn setup() -> (SimFs, PathBuf) {
        let fs = SimFs::new(1);
        let dir = PathBuf::from("/ckpt");
        fs.create_dir_all(&dir).unwrap();
        (fs, dir)
    }

    fn write_ok(fs: &SimFs, dir: &Path, lsn: u64, blob: &[u8]) {
        assert!(write(fs, dir, Lsn(lsn), blob).is_ok());
    }

    #[test]
    fn checkpoint_round_trips() {
        let (fs, dir) = setup();
        write_ok(&fs, &dir, 9, b"snapshot");
        let (loaded, skipped) = load_newest(&fs, &dir, &[Lsn(9)]).unwrap();
        let loaded = loaded.unwrap();
        assert_eq!(loaded.lsn, Lsn(9));
        assert_eq!(&*loaded.blob, b"snapshot");
        assert!(skipped.is_empty());
    }

    #[test]
    fn checkpoint_with_bad_crc_falls_back_to_previous() {
        let (fs, dir) = setup();
        write_ok(&fs, &dir, 5, b"older");
        write_ok(&fs, &dir, 9, b"newer");
        let file = fs.open(&dir.join(checkpoint_name(Lsn(9))), OpenMode::ReadWrite).unwrap();
        file.write_all_at(b"X", 42).unwrap();
        let (loaded, skipped) = load_newest(&fs, &dir, &[Lsn(5), Lsn(9)]).unwrap();
        assert_eq!(loaded.unwrap().lsn, Lsn(5));
        assert_eq!(skipped.len(), 1);
        assert_eq!(skipped[0].offset_bytes, 40);
        assert!(matches!(skipped[0].reason, Corruption::BlobCrc { .. }));
    }

    #[test]
    fn every_bit_flip_and_every_truncation_is_detected() {
        let (fs, dir) = setup();
        write_ok(&fs, &dir, 3, b"abc");
        let path = dir.join(checkpoint_name(Lsn(3)));
        let good = (*fs.open(&path, OpenMode::Read).unwrap().map().unwrap()).as_ref().to_vec();
        for bit in 0..good.len() * 8 {
            let mut bad = good.clone();
            bad[bit / 8] ^= 1 << (bit % 8);
            let file = fs.open(&path, OpenMode::ReadWrite).unwrap();
            file.write_all_at(&bad, 0).unwrap();
            assert!(load(&fs, &path, Lsn(3)).unwrap().is_err(), "bit {bit}");
        }
        for len in 0..good.len() {
            let file = fs.open(&path, OpenMode::ReadWrite).unwrap();
            file.write_all_at(&good, 0).unwrap();
            file.set_len(len as u64).unwrap();
            assert!(load(&fs, &path, Lsn(3)).unwrap().is_err(), "length {len}");
        }
    }

    #[test]
    fn check_checkpoint_reports_damage_with_offset_and_changes_nothing() {
        let (fs, dir) = setup();
        write_ok(&fs, &dir, 5, b"older");
        assert_eq!(check_checkpoint(&fs, &dir, Lsn(5)).unwrap().unwrap(), 45);
        let path = dir.join(checkpoint_name(Lsn(5)));
        fs.open(&path, OpenMode::ReadWrite).unwrap().write_all_at(b"X", 41).unwrap();
        let damage = check_checkpoint(&fs, &dir, Lsn(5)).unwrap().unwrap_err();
        assert_eq!((damage.path, damage.offset_bytes), (path, 40));
        assert!(matches!(damage.reason, Corruption::BlobCrc { .. }));
        assert_eq!(fs.list(&dir).unwrap(), vec![checkpoint_name(Lsn(5))], "nothing set aside");
    }

    #[test]
    fn a_failed_write_leaves_no_temporary_file() {
        let (fs, dir) = setup();
        fs.enospc_at_write(fs.write_calls() + 1);
        assert!(matches!(write(&fs, &dir, Lsn(4), b"blob"), Err(WriteFailure::BeforeRename(_))));
        assert!(fs.list(&dir).unwrap().is_empty());
    }
}
