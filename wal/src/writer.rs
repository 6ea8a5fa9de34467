//! The segment writer: appends sealed batches at the synced end of the last segment, and
//! rotates to a new segment when a batch does not fit. Only the group-commit leader uses it.

use std::path::PathBuf;
use std::sync::Arc;
use std::time::Instant;

use parking_lot::RwLock;

use crate::Lsn;
use crate::catalog::{Catalog, SegmentInfo};
use crate::error::PoisonCause;
use crate::frame;
use crate::group_commit::Batch;
use crate::io::{Fs, FsFile, OpenMode};
use crate::limits::ZERO_AHEAD_BYTES;
use crate::options::WalOptions;
use crate::segment::{SEGMENT_HEADER_BYTES, SegmentHeader, TEMP_SUFFIX, segment_name};
use crate::stats::Counters;

/// Where the log appends, and what it needs to start new segments.
#[derive(Debug)]
pub(crate) struct SegmentWriter {
    fs: Arc<dyn Fs>,
    dir: PathBuf,
    options: WalOptions,
    salts: SaltSource,
    catalog: Arc<RwLock<Catalog>>,
    counters: Arc<Counters>,
    file: Box<dyn FsFile>,
    path: PathBuf,
    header: SegmentHeader,
    /// Offset just past the last synced frame: where the next batch goes.
    offset_bytes: u64,
    /// Bytes before this offset are written (zeros beyond the log's end), so a batch landing
    /// there converts no unwritten extent. Only kept up when preallocating.
    zeroed_end_bytes: u64,
    /// The LSN the next batch must start with.
    lsn_next: Lsn,
    /// Set when the open segment was written with another batch bound than ours: its header
    /// would then state the wrong torn window, so the next batch starts a new segment.
    rotate_before_next: bool,
}

/// Everything the writer needs besides the segment it appends to.
pub(crate) struct WriterParts {
    pub fs: Arc<dyn Fs>,
    pub dir: PathBuf,
    pub options: WalOptions,
    pub catalog: Arc<RwLock<Catalog>>,
    pub counters: Arc<Counters>,
}

/// The segment the writer resumes (from recovery).
pub(crate) struct OpenSegment {
    pub file: Box<dyn FsFile>,
    pub path: PathBuf,
    pub header: SegmentHeader,
    pub end_offset: u64,
    /// How far the segment is known to be zero-filled by real writes.
    pub zeroed_end: u64,
    pub lsn_next: Lsn,
}

type Failure = Box<PoisonCause>;

fn failure(path: &std::path::Path, op: &'static str, source: std::io::Error) -> Failure {
    Box::new(PoisonCause { path: path.to_path_buf(), op, source })
}

impl SegmentWriter {
    /// A writer that continues `segment`.
    pub fn resume(parts: WriterParts, segment: OpenSegment) -> SegmentWriter {
        let salts = SaltSource::new(parts.options.salt_seed);
        let rotate_before_next = segment.header.batch_bytes_max != parts.options.batch_bytes_max;
        SegmentWriter {
            fs: parts.fs,
            dir: parts.dir,
            salts,
            catalog: parts.catalog,
            counters: parts.counters,
            file: segment.file,
            path: segment.path,
            header: segment.header,
            offset_bytes: segment.end_offset,
            zeroed_end_bytes: segment.zeroed_end,
            lsn_next: segment.lsn_next,
            rotate_before_next,
            options: parts.options,
        }
    }

    /// Creates the first segment of a new log, starting at `first_lsn`.
    pub fn create(parts: WriterParts, first_lsn: Lsn) -> Result<SegmentWriter, Failure> {
        let salts = SaltSource::new(parts.options.salt_seed);
        let (segment, _) = create_segment(&*parts.fs, &parts, &salts, first_lsn)?;
        parts.catalog.write().segments.push(SegmentInfo { first_lsn, path: segment.path.clone() });
        Ok(SegmentWriter::resume(parts, segment))
    }

    /// The counters this writer keeps.
    pub fn counters(&self) -> Arc<Counters> {
        Arc::clone(&self.counters)
    }

    /// Writes `batch` and fdatasyncs it, first starting a new segment if it does not fit.
    /// Any error leaves the log's state on disk unknown: the caller poisons the log.
    pub fn write_batch(&mut self, batch: &mut Batch) -> Result<(), Failure> {
        // Invariant: LSNs are dense, and a batch is written at the synced end of the log.
        assert_eq!(batch.first_lsn, self.lsn_next, "batches are written in LSN order");
        let len = batch.bytes.len() as u64;
        assert!(len <= u64::from(self.options.batch_bytes_max), "a batch fits its bound");
        if self.rotate_before_next || self.offset_bytes + len > self.options.segment_bytes {
            self.rotate(batch.first_lsn)?;
        }
        if self.options.preallocate {
            self.zero_ahead(len)?;
        }
        let frames = frame::seal(&mut batch.bytes, self.header.salt);
        debug_assert_eq!(u64::from(frames), batch.last_lsn.0 - batch.first_lsn.0 + 1);
        self.file
            .write_all_at(&batch.bytes, self.offset_bytes)
            .map_err(|e| failure(&self.path, "write", e))?;
        let sync_started = Instant::now();
        self.file.sync_data().map_err(|e| failure(&self.path, "sync_data", e))?;
        let records = batch.last_lsn.0 - batch.first_lsn.0 + 1;
        self.counters.batch(records, len, sync_started.elapsed());
        self.offset_bytes += len;
        self.lsn_next = batch.last_lsn.next();
        Ok(())
    }

    /// Keeps at least `ZERO_AHEAD_BYTES` written with zeros past the end of the next batch,
    /// one chunk at a time, so batches land on blocks an earlier fdatasync already wrote.
    fn zero_ahead(&mut self, batch_bytes: u64) -> Result<(), Failure> {
        let wanted =
            (self.offset_bytes + batch_bytes + ZERO_AHEAD_BYTES).min(self.options.segment_bytes);
        if wanted <= self.zeroed_end_bytes {
            return Ok(());
        }
        // Invariant: zeros go only past the log's end, never over a frame.
        assert!(self.zeroed_end_bytes >= self.offset_bytes, "zeros never overwrite frames");
        let end =
            (self.zeroed_end_bytes + ZERO_AHEAD_BYTES).max(wanted).min(self.options.segment_bytes);
        write_zeros(&*self.file, &self.path, self.zeroed_end_bytes, end)?;
        self.zeroed_end_bytes = end;
        Ok(())
    }

    fn rotate(&mut self, first_lsn: Lsn) -> Result<(), Failure> {
        let parts = WriterParts {
            fs: Arc::clone(&self.fs),
            dir: self.dir.clone(),
            options: self.options.clone(),
            catalog: Arc::clone(&self.catalog),
            counters: Arc::clone(&self.counters),
        };
        let (segment, info) = create_segment(&*self.fs, &parts, &self.salts, first_lsn)?;
        self.catalog.write().segments.push(info);
        tracing::debug!(path = %segment.path.display(), first_lsn = first_lsn.0, "segment started");
        self.file = segment.file;
        self.path = segment.path;
        self.header = segment.header;
        self.offset_bytes = segment.end_offset;
        self.zeroed_end_bytes = segment.zeroed_end;
        self.rotate_before_next = false;
        Ok(())
    }
}

/// Creates a segment durably: header written and synced under a temporary name (and, when
/// preallocating, the whole file reserved and its first `2 * ZERO_AHEAD_BYTES` zero-filled),
/// renamed into place, directory synced. Under its real name a segment always has a whole
/// header.
fn create_segment(
    fs: &dyn Fs,
    parts: &WriterParts,
    salts: &SaltSource,
    first_lsn: Lsn,
) -> Result<(OpenSegment, SegmentInfo), Failure> {
    let name = segment_name(first_lsn);
    let path = parts.dir.join(&name);
    let temp = parts.dir.join(format!("{name}{TEMP_SUFFIX}"));
    let header = SegmentHeader {
        first_lsn,
        batch_bytes_max: parts.options.batch_bytes_max,
        salt: salts.salt(first_lsn),
    };
    let file = fs.open(&temp, OpenMode::CreateNew).map_err(|e| failure(&temp, "create", e))?;
    file.write_all_at(&header.encode(), 0).map_err(|e| failure(&temp, "write", e))?;
    let header_end = SEGMENT_HEADER_BYTES as u64;
    let mut zeroed_end = header_end;
    if parts.options.preallocate {
        file.allocate(parts.options.segment_bytes).map_err(|e| failure(&temp, "allocate", e))?;
        zeroed_end = (header_end + 2 * ZERO_AHEAD_BYTES).min(parts.options.segment_bytes);
        write_zeros(&*file, &temp, header_end, zeroed_end)?;
    }
    file.sync_data().map_err(|e| failure(&temp, "sync_data", e))?;
    fs.rename(&temp, &path).map_err(|e| failure(&temp, "rename", e))?;
    fs.sync_dir(&parts.dir).map_err(|e| failure(&parts.dir, "sync_dir", e))?;
    let info = SegmentInfo { first_lsn, path: path.clone() };
    let segment =
        OpenSegment { file, path, header, end_offset: header_end, zeroed_end, lsn_next: first_lsn };
    Ok((segment, info))
}

/// Writes zeros over `start..end` of `file`.
fn write_zeros(
    file: &dyn FsFile,
    path: &std::path::Path,
    start: u64,
    end: u64,
) -> Result<(), Failure> {
    let zeros = vec![0u8; usize::try_from(ZERO_AHEAD_BYTES).unwrap_or(1 << 20)];
    let mut offset = start;
    while offset < end {
        let n = (end - offset).min(zeros.len() as u64);
        let chunk = zeros.get(..usize::try_from(n).unwrap_or(0)).unwrap_or(&[]);
        file.write_all_at(chunk, offset).map_err(|e| failure(path, "write", e))?;
        offset += n;
    }
    Ok(())
}

/// Draws each segment's salt from a seed: fixed in tests, random otherwise.
#[derive(Debug)]
struct SaltSource {
    seed: u64,
}

impl SaltSource {
    fn new(seed: Option<u64>) -> SaltSource {
        SaltSource { seed: seed.unwrap_or_else(random_seed) }
    }

    fn salt(&self, first_lsn: Lsn) -> u32 {
        // SplitMix64's finaliser: neighbouring LSNs get unrelated salts.
        let mut z = self.seed ^ first_lsn.0.wrapping_mul(0x9E37_79B9_7F4A_7C15);
        z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
        u32::try_from((z ^ (z >> 31)) >> 32).unwrap_or(0)
    }
}

/// A seed from the process's hash keys (random per process) and the clock.
fn random_seed() -> u64 {
    use std::hash::{BuildHasher, Hasher};
    let mut hasher = std::collections::hash_map::RandomState::new().build_hasher();
    let nanos = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_nanos());
    hasher.write_u128(nanos);
    hasher.finish()
}
