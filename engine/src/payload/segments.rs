//! Creating payload segment files, and handing active segments to ingests one at a time.

use std::path::PathBuf;
use std::sync::Arc;

use tessera_wal::{FsFile, OpenMode};

use crate::payload::address::SegmentId;
use crate::payload::error::PayloadError;
use crate::payload::format::{self, PAYLOAD_SEGMENT_HEADER_BYTES};
use crate::payload::{Inner, Segment};

/// An active segment held by one ingest (or a compaction) until it is given back.
#[derive(Clone, Debug)]
pub(crate) struct Claim {
    pub id: SegmentId,
    pub file: Arc<dyn FsFile>,
    pub path: PathBuf,
    /// Where this claim's entry starts.
    pub start: u64,
}

impl Inner {
    /// An idle active segment, or a new one.
    pub(crate) fn claim(&self) -> Result<Claim, PayloadError> {
        let id = {
            let mut state = self.state.lock();
            if state.recovering {
                return Err(PayloadError::Recovering);
            }
            if let Some(id) = state.idle.pop()
                && let Some(segment) = state.segments.get(&id)
            {
                let (file, path) = (Arc::clone(&segment.file), segment.path.clone());
                return Ok(Claim { id, file, path, start: segment.end_bytes });
            }
            state.next_segment_id()?
        };
        let (file, path) = self.create_segment(id)?;
        let start = PAYLOAD_SEGMENT_HEADER_BYTES;
        let segment = Segment {
            file: Arc::clone(&file),
            path: path.clone(),
            end_bytes: start,
            live_bytes: 0,
            sealed: false,
        };
        self.state.lock().segments.insert(id, segment);
        Ok(Claim { id, file, path, start })
    }

    /// Gives a claimed segment back: its entries now end at `end_bytes`. It takes more entries
    /// unless it is full (or `seal`).
    pub(crate) fn give_back(&self, id: SegmentId, end_bytes: u64, seal: bool) {
        let mut state = self.state.lock();
        let Some(segment) = state.segments.get_mut(&id) else { return };
        segment.end_bytes = end_bytes;
        segment.sealed |= seal || end_bytes >= self.options.segment_bytes;
        if !segment.sealed {
            state.idle.push(id);
        }
    }

    /// Creates segment `id` durably: header written and synced under a temporary name, renamed,
    /// directory synced.
    pub(crate) fn create_segment(
        &self,
        id: SegmentId,
    ) -> Result<(Arc<dyn FsFile>, PathBuf), PayloadError> {
        let name = format::segment_name(id);
        let path = self.dir.join(&name);
        let temp = self.dir.join(format!("{name}.tmp"));
        let file = self.fs.open(&temp, OpenMode::CreateNew).map_err(on(&temp, "create"))?;
        file.write_all_at(&format::encode_segment_header(id), 0).map_err(on(&temp, "write"))?;
        file.sync_data().map_err(on(&temp, "sync_data"))?;
        self.fs.rename(&temp, &path).map_err(on(&temp, "rename"))?;
        self.fs.sync_dir(&self.dir).map_err(on(&self.dir, "sync_dir"))?;
        Ok((Arc::from(file), path))
    }

    /// Removes a segment file durably (and forgets it).
    pub(crate) fn remove_segment(&self, id: SegmentId) -> Result<u64, PayloadError> {
        let removed = {
            let mut state = self.state.lock();
            state.idle.retain(|&idle| idle != id);
            state.segments.remove(&id)
        };
        let Some(segment) = removed else { return Ok(0) };
        let path = &segment.path;
        self.fs.remove(path).map_err(|e| PayloadError::io(path.clone(), "remove", e))?;
        self.fs
            .sync_dir(&self.dir)
            .map_err(|e| PayloadError::io(self.dir.clone(), "sync_dir", e))?;
        Ok(segment.end_bytes)
    }
}

/// Maps an I/O error of `op` on `path` to a `PayloadError`.
pub(crate) fn on<'p>(
    path: &'p std::path::Path,
    op: &'static str,
) -> impl FnOnce(std::io::Error) -> PayloadError + 'p {
    move |source| PayloadError::io(path, op, source)
}

/// Reads and checks a segment file's header against its id; returns the file's length.
pub(crate) fn check_segment_file(
    file: &dyn FsFile,
    path: &std::path::Path,
    id: SegmentId,
) -> Result<u64, PayloadError> {
    let len = file.len().map_err(on(path, "len"))?;
    let mut header = [0u8; 32];
    const _: () = assert!(PAYLOAD_SEGMENT_HEADER_BYTES == 32);
    let available = usize::try_from(len).unwrap_or(usize::MAX).min(header.len());
    let buf = header.get_mut(..available).unwrap_or(&mut []);
    file.read_exact_at(buf, 0).map_err(on(path, "read"))?;
    format::check_segment_header(buf, id).map_err(|reason| PayloadError::Corrupt {
        path: path.to_path_buf(),
        offset_bytes: 0,
        reason,
    })?;
    Ok(len)
}
