//! Repair: the explicit, operator-run way past corruption that `open` refuses to pass.
//!
//! Repair finds the first corruption in the log (scanning every segment from the oldest), keeps
//! a copy of the damaged segment (`<name>.broken`), cuts the segment at the damaged frame, sets
//! aside every later segment (they cannot be replayed across the cut), and reports exactly what
//! it removed. A torn tail is not corruption and is left to `open`. Run it only while no log is
//! open on the directory.

use std::path::{Path, PathBuf};
use std::sync::Arc;

use crate::Lsn;
use crate::error::{Corruption, WalError};
use crate::io::{Fs, OpenMode};
use crate::segment::{SegmentHeader, parse_segment_name};
use crate::tail::{Damage, Position, find_end};

/// Suffix of a file set aside by repair (or a damaged checkpoint set aside by open).
pub const BROKEN_SUFFIX: &str = ".broken";

/// What repair removed from the log.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct RepairReport {
    /// Each cut, oldest first; empty when the log had no corruption.
    pub cuts: Vec<RepairCut>,
}

/// Bytes removed from one segment.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct RepairCut {
    /// The segment.
    pub path: PathBuf,
    /// Where the cut starts: bytes from here on were removed (0: the whole file).
    pub offset_bytes: u64,
    /// How many bytes were removed.
    pub bytes_removed: u64,
    /// The first LSN no longer in the log.
    pub first_lsn_removed: Lsn,
    /// The copy of the whole segment, as it was before the cut.
    pub kept_copy: PathBuf,
    /// Why: the damage found, or the cut in an earlier segment for a segment set aside whole.
    pub reason: Corruption,
}

/// Cuts the log in `dir` at its first corruption; see the module documentation.
pub fn repair(fs: &Arc<dyn Fs>, dir: &Path) -> Result<RepairReport, WalError> {
    let mut lsns: Vec<Lsn> = fs
        .list(dir)
        .map_err(|e| WalError::io(dir, "list", e))?
        .iter()
        .filter_map(|n| parse_segment_name(n))
        .collect();
    lsns.sort_unstable();
    let mut report = RepairReport::default();
    let mut expected: Option<Lsn> = None;
    for (i, &first_lsn) in lsns.iter().enumerate() {
        let path = dir.join(crate::segment::segment_name(first_lsn));
        let position = if i + 1 == lsns.len() { Position::Last } else { Position::Sealed };
        let damage = match scan(&**fs, &path, first_lsn, expected, position)? {
            Ok(last_lsn) => {
                expected = Some(last_lsn.next());
                continue;
            }
            Err(damage) => damage,
        };
        let reason = damage.reason.clone();
        report.cuts.push(cut(&**fs, dir, &path, damage.offset_bytes, damage.lsn, reason.clone())?);
        for &later in lsns.get(i + 1..).unwrap_or(&[]) {
            let path = dir.join(crate::segment::segment_name(later));
            report.cuts.push(cut(&**fs, dir, &path, 0, later, reason.clone())?);
        }
        break;
    }
    for cut in &report.cuts {
        tracing::warn!(
            path = %cut.path.display(), offset_bytes = cut.offset_bytes,
            bytes_removed = cut.bytes_removed, first_lsn_removed = cut.first_lsn_removed.0,
            kept_copy = %cut.kept_copy.display(), reason = %cut.reason, "repair cut the log"
        );
    }
    Ok(report)
}

type Scanned = Result<Lsn, Damage>;

/// Checks one segment: its last LSN, or where and why it is corrupt.
fn scan(
    fs: &dyn Fs,
    path: &Path,
    first_lsn: Lsn,
    expected: Option<Lsn>,
    position: Position,
) -> Result<Scanned, WalError> {
    let file = fs.open(path, OpenMode::Read).map_err(|e| WalError::io(path, "open", e))?;
    let mapping = file.map().map_err(|e| WalError::io(path, "map", e))?;
    let bytes = (*mapping).as_ref();
    // Damage to the segment as a whole (its header, its place in the sequence) sets it aside
    // whole: a cut inside the header would leave a file that open rejects.
    let whole = |reason| Ok(Err(Damage { offset_bytes: 0, lsn: first_lsn, reason }));
    let header = match SegmentHeader::decode(bytes) {
        Ok(header) if header.first_lsn == first_lsn => header,
        Ok(header) => {
            return whole(Corruption::NameMismatch { name: first_lsn, header: header.first_lsn });
        }
        Err(reason) => return whole(reason),
    };
    if let Some(expected) = expected.filter(|&e| e != first_lsn) {
        return whole(Corruption::SegmentGap { last: expected.prev(), next_first: first_lsn });
    }
    Ok(find_end(bytes, &header, position).map(|end| end.last_lsn))
}

/// Copies `path` aside whole, then cuts it at `offset` (removing it if `offset` is 0).
fn cut(
    fs: &dyn Fs,
    dir: &Path,
    path: &Path,
    offset: u64,
    first_lsn_removed: Lsn,
    reason: Corruption,
) -> Result<RepairCut, WalError> {
    let file = fs.open(path, OpenMode::ReadWrite).map_err(|e| WalError::io(path, "open", e))?;
    let len = file.len().map_err(|e| WalError::io(path, "len", e))?;
    let kept_copy = if offset == 0 {
        let kept = set_aside(fs, dir, path)?;
        fs.sync_dir(dir).map_err(|e| WalError::io(dir, "sync_dir", e))?;
        kept
    } else {
        let kept = free_broken_name(fs, dir, path)?;
        copy(fs, path, &kept)?;
        fs.sync_dir(dir).map_err(|e| WalError::io(dir, "sync_dir", e))?;
        file.set_len(offset).map_err(|e| WalError::io(path, "set_len", e))?;
        file.sync_data().map_err(|e| WalError::io(path, "sync_data", e))?;
        kept
    };
    let bytes_removed = len.saturating_sub(offset);
    Ok(RepairCut {
        path: path.to_path_buf(),
        offset_bytes: offset,
        bytes_removed,
        first_lsn_removed,
        kept_copy,
        reason,
    })
}

/// Renames `path` to a free `<name>.broken[.N]` in `dir`; the caller syncs the directory.
pub(crate) fn set_aside(fs: &dyn Fs, dir: &Path, path: &Path) -> Result<PathBuf, WalError> {
    let to = free_broken_name(fs, dir, path)?;
    fs.rename(path, &to).map_err(|e| WalError::io(path, "rename", e))?;
    Ok(to)
}

fn free_broken_name(fs: &dyn Fs, dir: &Path, path: &Path) -> Result<PathBuf, WalError> {
    let names = fs.list(dir).map_err(|e| WalError::io(dir, "list", e))?;
    let base = path.file_name().and_then(|n| n.to_str()).unwrap_or("file");
    let mut candidate = format!("{base}{BROKEN_SUFFIX}");
    let mut n = 1u32;
    while names.contains(&candidate) {
        candidate = format!("{base}{BROKEN_SUFFIX}.{n}");
        n += 1;
    }
    Ok(dir.join(candidate))
}

/// Copies a file durably (the copy's bytes synced; the caller syncs the directory).
fn copy(fs: &dyn Fs, from: &Path, to: &Path) -> Result<(), WalError> {
    let source = fs.open(from, OpenMode::Read).map_err(|e| WalError::io(from, "open", e))?;
    let mapping = source.map().map_err(|e| WalError::io(from, "map", e))?;
    let target = fs.open(to, OpenMode::CreateNew).map_err(|e| WalError::io(to, "create", e))?;
    target.write_all_at((*mapping).as_ref(), 0).map_err(|e| WalError::io(to, "write", e))?;
    target.sync_data().map_err(|e| WalError::io(to, "sync_data", e))
}
