//! Opening a log: find its files, load the newest valid checkpoint, and settle where the last
//! segment ends (zeroing a torn tail) before anything is appended.

use std::path::{Path, PathBuf};
use std::sync::Arc;

use parking_lot::RwLock;

use crate::Lsn;
use crate::catalog::{Catalog, SegmentInfo};
use crate::checkpoint::{self, Checkpoint, SkippedCheckpoint, parse_checkpoint_name};
use crate::error::{Corruption, WalError};
use crate::io::{Fs, OpenMode};
use crate::options::WalOptions;
use crate::repair::set_aside;
use crate::segment::{SEGMENT_HEADER_BYTES, SegmentHeader, TEMP_SUFFIX, parse_segment_name};
use crate::tail::{Position, SegmentEnd, find_end};
use crate::writer::{OpenSegment, SegmentWriter, WriterParts};

/// What opening a log found and did.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct OpenReport {
    /// The torn, unacknowledged write zeroed at the end of the last segment, if any.
    pub torn_tail: Option<TornTail>,
    /// Checkpoints that failed their checks, newest first; each was renamed aside.
    pub skipped_checkpoints: Vec<SkippedCheckpoint>,
    /// Where each skipped checkpoint was moved (same order).
    pub set_aside: Vec<PathBuf>,
    /// Temporary files of interrupted segment or checkpoint writes, removed.
    pub removed_temp_files: Vec<PathBuf>,
    /// How many segment files the log has.
    pub segments: usize,
    /// The last LSN in the log.
    pub lsn_last: Lsn,
}

/// A torn write found (and zeroed) at the end of the last segment: never acknowledged.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct TornTail {
    /// The last segment.
    pub path: PathBuf,
    /// Where the torn bytes start (just past the last valid frame).
    pub offset_bytes: u64,
    /// How many bytes were zeroed.
    pub bytes: u64,
    /// The LSN the torn frame would have had.
    pub lsn: Lsn,
    /// What was wrong with the first torn frame.
    pub damage: Corruption,
}

pub(crate) struct Recovered {
    pub writer: SegmentWriter,
    pub catalog: Arc<RwLock<Catalog>>,
    pub lsn_last: Lsn,
    pub checkpoint: Option<Checkpoint>,
    pub report: OpenReport,
}

#[derive(Default)]
struct Listing {
    segments: Vec<Lsn>,
    checkpoints: Vec<Lsn>,
    temps: Vec<String>,
}

fn list(fs: &dyn Fs, dir: &Path) -> Result<Listing, WalError> {
    let mut listing = Listing::default();
    for name in fs.list(dir).map_err(|e| WalError::io(dir, "list", e))? {
        if let Some(lsn) = parse_segment_name(&name) {
            listing.segments.push(lsn);
        } else if let Some(lsn) = parse_checkpoint_name(&name) {
            listing.checkpoints.push(lsn);
        } else if let Some(stem) = name.strip_suffix(TEMP_SUFFIX)
            && (parse_segment_name(stem).is_some() || parse_checkpoint_name(stem).is_some())
        {
            listing.temps.push(name);
        }
    }
    listing.segments.sort_unstable();
    listing.checkpoints.sort_unstable();
    Ok(listing)
}

pub(crate) fn recover(
    fs: &Arc<dyn Fs>,
    dir: &Path,
    options: &WalOptions,
) -> Result<Recovered, WalError> {
    // The directory's own entry (and its parents'), in case this open created them (or an
    // earlier one did and died).
    crate::io::create_dir_all_durable(&**fs, dir)
        .map_err(|e| WalError::io(dir, "create_dir_all", e))?;
    let listing = list(&**fs, dir)?;
    let mut report = OpenReport::default();
    for name in &listing.temps {
        let path = dir.join(name);
        fs.remove(&path).map_err(|e| WalError::io(&path, "remove", e))?;
        report.removed_temp_files.push(path);
    }
    let (checkpoint, skipped) = checkpoint::load_newest(&**fs, dir, &listing.checkpoints)?;
    for skip in &skipped {
        report.set_aside.push(set_aside(&**fs, dir, &skip.path)?);
    }
    // Always: a process that died (or failed a directory sync) after a rename or a removal may
    // have left entries that are visible but not durable; nothing may be built on them.
    fs.sync_dir(dir).map_err(|e| WalError::io(dir, "sync_dir", e))?;
    report.skipped_checkpoints = skipped;
    let checkpoint_lsn = checkpoint.as_ref().map(|c| c.lsn);
    let catalog = Catalog {
        segments: Vec::new(),
        checkpoints: listing
            .checkpoints
            .iter()
            .copied()
            .filter(|&l| Some(l) <= checkpoint_lsn)
            .collect(),
    };
    let catalog = Arc::new(RwLock::new(catalog));
    let parts = WriterParts {
        fs: Arc::clone(fs),
        dir: dir.to_path_buf(),
        options: options.clone(),
        catalog: Arc::clone(&catalog),
        counters: Arc::default(),
    };
    let Some(&last_first_lsn) = listing.segments.last() else {
        if checkpoint_lsn.is_some() || !report.skipped_checkpoints.is_empty() {
            return Err(missing_log(dir, checkpoint_lsn, &report.skipped_checkpoints));
        }
        let writer = SegmentWriter::create(parts, Lsn::FIRST).map_err(|cause| WalError::Io {
            path: cause.path,
            op: cause.op,
            source: cause.source,
        })?;
        report.segments = 1;
        return Ok(Recovered { writer, catalog, lsn_last: Lsn::ZERO, checkpoint, report });
    };
    let segments = read_headers(&**fs, dir, &listing.segments)?;
    let needed = checkpoint_lsn.map_or(Lsn::FIRST, Lsn::next);
    if let Some(oldest) = segments.first().filter(|s| s.0.first_lsn > needed) {
        if let Some(skip) = report.skipped_checkpoints.first() {
            return Err(WalError::corrupt(&skip.path, skip.offset_bytes, skip.reason.clone()));
        }
        let reason = Corruption::MissingSegments { needed, oldest: oldest.0.first_lsn };
        return Err(WalError::corrupt(&oldest.0.path, 16, reason));
    }
    check_sealed_segments(&**fs, &segments)?;
    let path = dir.join(crate::segment::segment_name(last_first_lsn));
    let header = segments.last().map(|s| s.1).ok_or_else(|| {
        WalError::corrupt(&path, 0, Corruption::ShortHeader { file_bytes: 0, header_bytes: 0 })
    })?;
    let (segment, torn) = settle_last_segment(&**fs, &path, header)?;
    if let Some(checkpoint_lsn) = checkpoint_lsn.filter(|&l| l > segment.lsn_next.prev()) {
        let reason = Corruption::LogBehindCheckpoint {
            checkpoint: checkpoint_lsn,
            log_end: segment.lsn_next.prev(),
        };
        return Err(WalError::corrupt(&path, segment.end_offset, reason));
    }
    let lsn_last = segment.lsn_next.prev();
    report.torn_tail = torn;
    report.segments = segments.len();
    report.lsn_last = lsn_last;
    catalog.write().segments = segments.into_iter().map(|s| s.0).collect();
    let writer = SegmentWriter::resume(parts, segment);
    Ok(Recovered { writer, catalog, lsn_last, checkpoint, report })
}

/// Reads and checks every segment's header (synced before the segment got its name, so
/// damage there is corruption, never a torn write).
fn read_headers(
    fs: &dyn Fs,
    dir: &Path,
    lsns: &[Lsn],
) -> Result<Vec<(SegmentInfo, SegmentHeader)>, WalError> {
    let mut segments = Vec::with_capacity(lsns.len());
    for &first_lsn in lsns {
        let path = dir.join(crate::segment::segment_name(first_lsn));
        let file = fs.open(&path, OpenMode::Read).map_err(|e| WalError::io(&path, "open", e))?;
        let len = file.len().map_err(|e| WalError::io(&path, "len", e))?;
        let mut bytes = [0u8; SEGMENT_HEADER_BYTES];
        let available = usize::try_from(len).unwrap_or(usize::MAX).min(SEGMENT_HEADER_BYTES);
        let buf = bytes.get_mut(..available).unwrap_or(&mut []);
        file.read_exact_at(buf, 0).map_err(|e| WalError::io(&path, "read", e))?;
        let header = SegmentHeader::decode(buf).map_err(|r| WalError::corrupt(&path, 0, r))?;
        if header.first_lsn != first_lsn {
            let reason = Corruption::NameMismatch { name: first_lsn, header: header.first_lsn };
            return Err(WalError::corrupt(&path, 16, reason));
        }
        segments.push((SegmentInfo { first_lsn, path }, header));
    }
    Ok(segments)
}

/// Checks every frame of every segment but the last, and that each segment continues the one
/// before it: damage there can never be a torn write, so `open` fails with its file, offset
/// and reason rather than leave it for a replay to meet.
fn check_sealed_segments(
    fs: &dyn Fs,
    segments: &[(SegmentInfo, SegmentHeader)],
) -> Result<(), WalError> {
    for pair in segments.windows(2) {
        let [(info, header), (next, _)] = pair else { continue };
        let file =
            fs.open(&info.path, OpenMode::Read).map_err(|e| WalError::io(&info.path, "open", e))?;
        let mapping = file.map().map_err(|e| WalError::io(&info.path, "map", e))?;
        let end = find_end((*mapping).as_ref(), header, Position::Sealed)
            .map_err(|d| WalError::corrupt(&info.path, d.offset_bytes, d.reason))?;
        if end.last_lsn.next() != next.first_lsn {
            let reason = Corruption::SegmentGap { last: end.last_lsn, next_first: next.first_lsn };
            return Err(WalError::corrupt(&next.path, 16, reason));
        }
    }
    Ok(())
}

/// Finds where the last segment's records end, then rewrites its last batch and the
/// `batch_bytes_max` bytes after it (zeros) and fdatasyncs the segment, so that what replay
/// returns is durable, and nothing but zeros follows it on disk, before anything is appended.
///
/// Why rewrite what reads back fine: after a failed fdatasync, Linux may mark a batch's pages
/// clean without writing them; a process that restarts without a reboot reads them from the
/// page cache, and a plain fdatasync would not write them (PostgreSQL's "fsyncgate"). Only the
/// last batch can be in that state (a failed batch poisons the log), and only the torn window
/// after it can hold stale bytes on disk (a torn batch zeroed by an earlier open whose own
/// fdatasync failed). The rewrite of the last batch's own bytes assumes a sector write leaves
/// the old or the new bytes, as every overwrite does (docs/design.md, "Assumptions").
fn settle_last_segment(
    fs: &dyn Fs,
    path: &Path,
    header: SegmentHeader,
) -> Result<(OpenSegment, Option<TornTail>), WalError> {
    let file = fs.open(path, OpenMode::ReadWrite).map_err(|e| WalError::io(path, "open", e))?;
    let (end, rewrite) = {
        let mapping = file.map().map_err(|e| WalError::io(path, "map", e))?;
        let bytes = (*mapping).as_ref();
        let end = find_end(bytes, &header, Position::Last)
            .map_err(|d| WalError::corrupt(path, d.offset_bytes, d.reason))?;
        let start = usize::try_from(end.last_batch_offset).unwrap_or(usize::MAX);
        let end_offset = usize::try_from(end.end_offset).unwrap_or(usize::MAX);
        let zeros_end = end_offset.saturating_add(header.batch_bytes_max as usize).min(bytes.len());
        let mut rewrite = bytes.get(start..end_offset).unwrap_or(&[]).to_vec();
        rewrite.resize(rewrite.len() + zeros_end.saturating_sub(end_offset), 0);
        (end, rewrite)
    };
    let SegmentEnd { end_offset, last_lsn, last_batch_offset, torn } = end;
    let torn = torn.map(|torn| TornTail {
        path: path.to_path_buf(),
        offset_bytes: end_offset,
        bytes: torn.bytes,
        lsn: last_lsn.next(),
        damage: torn.damage,
    });
    if let Some(torn) = &torn {
        tracing::warn!(
            path = %path.display(), offset_bytes = torn.offset_bytes, bytes = torn.bytes,
            damage = %torn.damage, "torn tail of the last segment zeroed (an unacknowledged write)"
        );
    }
    if !rewrite.is_empty() {
        file.write_all_at(&rewrite, last_batch_offset)
            .map_err(|e| WalError::io(path, "write", e))?;
    }
    file.sync_data().map_err(|e| WalError::io(path, "sync_data", e))?;
    let segment = OpenSegment {
        file,
        path: path.to_path_buf(),
        header,
        end_offset,
        zeroed_end: last_batch_offset + rewrite.len() as u64,
        lsn_next: last_lsn.next(),
    };
    Ok((segment, torn))
}

fn missing_log(dir: &Path, checkpoint: Option<Lsn>, skipped: &[SkippedCheckpoint]) -> WalError {
    if let Some(skip) = skipped.first() {
        return WalError::corrupt(&skip.path, skip.offset_bytes, skip.reason.clone());
    }
    let checkpoint = checkpoint.unwrap_or(Lsn::ZERO);
    let reason = Corruption::NoSegments { checkpoint };
    WalError::corrupt(dir, 0, reason)
}
