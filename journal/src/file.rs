//! One journal file: creating it, scanning its blocks at open, and reading a block's entries
//! for a query.

use std::path::{Path, PathBuf};
use std::sync::Arc;

use tessera_wal::{Fs, FsFile, OpenMode};

use crate::entry::Entry;
use crate::error::{Corruption, Damage, JournalError};
use crate::format::{
    self, BLOCK_HEADER_BYTES, BlockHeader, FILE_HEADER_BYTES, TEMP_SUFFIX, declared_summary_bytes,
    decode_block_header, decode_entries,
};

/// A block of a file, as the index keeps it: where it is, and its header and summary.
#[derive(Clone, Debug)]
pub(crate) struct Block {
    /// Offset of the block's first byte.
    pub offset: u64,
    /// Shared: the index is copied on every flush, its summaries never.
    pub header: Arc<BlockHeader>,
}

impl Block {
    fn entries_offset(&self) -> u64 {
        self.offset + BLOCK_HEADER_BYTES as u64 + u64::from(self.header.summary_bytes)
    }

    /// The offset just past the block.
    pub fn end(&self) -> u64 {
        self.offset + self.header.block_bytes()
    }
}

/// A journal file as the index holds it. Cheap to clone (a query takes a copy).
#[derive(Clone, Debug)]
pub(crate) struct FileIndex {
    pub path: PathBuf,
    pub first_lsn: u64,
    pub file: Arc<dyn FsFile>,
    /// Its valid blocks, in order (their LSN ranges tile `first_lsn..=last_lsn()`).
    pub blocks: Arc<Vec<Block>>,
    /// Offset just past the last valid block.
    pub end_offset: u64,
    /// Damage after the valid blocks, if the file goes on past them.
    pub damage: Option<Corruption>,
}

impl FileIndex {
    /// The last LSN its blocks cover (`first_lsn - 1` if it has none).
    pub fn last_lsn(&self) -> u64 {
        self.blocks.last().map_or(self.first_lsn.saturating_sub(1), |b| b.header.last_lsn)
    }

    /// The latest entry time in it (0 if none).
    pub fn time_max_ms(&self) -> u64 {
        self.blocks.iter().map(|b| b.header.time_max_ms).max().unwrap_or(0)
    }

    /// Bytes on disk (for retention).
    pub fn bytes(&self) -> u64 {
        self.file.len().unwrap_or(self.end_offset)
    }

    /// Reads and checks a block's entries.
    pub fn read_entries(&self, block: &Block) -> Result<Vec<Entry>, Corruption> {
        let mut bytes = vec![0u8; block.header.entries_bytes as usize];
        self.file
            .read_exact_at(&mut bytes, block.entries_offset())
            .map_err(|e| self.corruption(block.offset, Damage::Read(e.to_string())))?;
        decode_entries(&block.header, &bytes)
            .map_err(|damage| self.corruption(block.offset, damage))
    }

    fn corruption(&self, offset: u64, damage: Damage) -> Corruption {
        Corruption { path: self.path.clone(), offset, damage }
    }
}

/// Creates the file for blocks from `first_lsn` durably (header written and synced under a
/// temporary name, renamed, directory synced) and opens it for appending.
pub(crate) fn create(fs: &dyn Fs, dir: &Path, first_lsn: u64) -> Result<FileIndex, JournalError> {
    let name = format::file_name(first_lsn);
    let path = dir.join(&name);
    let temp = dir.join(format!("{name}{TEMP_SUFFIX}"));
    // A leftover from a crash during an earlier creation.
    if fs
        .list(dir)
        .map_err(|e| JournalError::io(dir, "list", e))?
        .contains(&format!("{name}{TEMP_SUFFIX}"))
    {
        fs.remove(&temp).map_err(|e| JournalError::io(&temp, "remove", e))?;
    }
    let file =
        fs.open(&temp, OpenMode::CreateNew).map_err(|e| JournalError::io(&temp, "create", e))?;
    file.write_all_at(&format::encode_file_header(first_lsn), 0)
        .map_err(|e| JournalError::io(&temp, "write", e))?;
    file.sync_data().map_err(|e| JournalError::io(&temp, "sync_data", e))?;
    fs.rename(&temp, &path).map_err(|e| JournalError::io(&temp, "rename", e))?;
    fs.sync_dir(dir).map_err(|e| JournalError::io(dir, "sync_dir", e))?;
    Ok(FileIndex {
        path,
        first_lsn,
        file: Arc::from(file),
        blocks: Arc::new(Vec::new()),
        end_offset: FILE_HEADER_BYTES,
        damage: None,
    })
}

/// Keeps a copy of `path`'s bytes from `from` to its end as `<name>.torn-<from>` (durably),
/// before open cuts them: only the last flush can have been torn, but damage in earlier blocks
/// looks the same, and its bytes are kept for whoever investigates.
pub(crate) fn preserve_tail(
    fs: &dyn Fs,
    dir: &Path,
    index: &FileIndex,
) -> Result<PathBuf, JournalError> {
    let path = &index.path;
    let len = index.file.len().map_err(|e| JournalError::io(path, "len", e))?;
    let from = index.end_offset;
    let mut bytes = vec![0u8; usize::try_from(len.saturating_sub(from)).unwrap_or(0)];
    index.file.read_exact_at(&mut bytes, from).map_err(|e| JournalError::io(path, "read", e))?;
    let name = path.file_name().and_then(|n| n.to_str()).unwrap_or("journal");
    // A name no earlier copy took: the same offset may tear again after another crash.
    let taken = fs.list(dir).map_err(|e| JournalError::io(dir, "list", e))?;
    let base = format!("{name}{TORN_SUFFIX}{from}");
    let unique = (0u32..)
        .map(|n| if n == 0 { base.clone() } else { format!("{base}.{n}") })
        .find(|candidate| !taken.contains(candidate))
        .unwrap_or(base);
    let copy = dir.join(&unique);
    let temp = dir.join(format!("{unique}{TEMP_SUFFIX}"));
    let file =
        fs.open(&temp, OpenMode::CreateNew).map_err(|e| JournalError::io(&temp, "create", e))?;
    file.write_all_at(&bytes, 0).map_err(|e| JournalError::io(&temp, "write", e))?;
    file.sync_data().map_err(|e| JournalError::io(&temp, "sync_data", e))?;
    fs.rename(&temp, &copy).map_err(|e| JournalError::io(&temp, "rename", e))?;
    fs.sync_dir(dir).map_err(|e| JournalError::io(dir, "sync_dir", e))?;
    Ok(copy)
}

/// Infix of the copy of a cut tail: `<name>.torn-<offset>`.
pub const TORN_SUFFIX: &str = ".torn-";

/// How much of a file to check at open.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum Check {
    /// Headers and summaries only (a sealed file: queries check entries as they read them).
    Headers,
    /// Every block's entries' CRC too (the last file, whose end must be known exactly).
    Everything,
}

/// Opens and scans a journal file: its header, then its blocks while they check out. A file
/// whose header is bad is an error (`Corruption` at offset 0).
pub(crate) fn scan(
    fs: &dyn Fs,
    path: &Path,
    expected_first_lsn: u64,
    check: Check,
) -> Result<Result<FileIndex, Corruption>, JournalError> {
    let mode = if check == Check::Everything { OpenMode::ReadWrite } else { OpenMode::Read };
    let file: Arc<dyn FsFile> =
        Arc::from(fs.open(path, mode).map_err(|e| JournalError::io(path, "open", e))?);
    let len = file.len().map_err(|e| JournalError::io(path, "len", e))?;
    let corruption = |offset, damage| Corruption { path: path.to_path_buf(), offset, damage };
    let mut header = [0u8; 32];
    const _: () = assert!(FILE_HEADER_BYTES == 32);
    if len < FILE_HEADER_BYTES {
        return Ok(Err(corruption(0, Damage::Truncated { needed: FILE_HEADER_BYTES, len })));
    }
    file.read_exact_at(&mut header, 0).map_err(|e| JournalError::io(path, "read", e))?;
    let first_lsn = match format::decode_file_header(&header) {
        Ok(lsn) if lsn == expected_first_lsn => lsn,
        Ok(lsn) => {
            let found = format!("{lsn}, but the file's name says {expected_first_lsn}");
            return Ok(Err(corruption(0, Damage::Field { field: "first_lsn", found })));
        }
        Err(damage) => return Ok(Err(corruption(0, damage))),
    };
    let mut blocks = Vec::new();
    let mut offset = FILE_HEADER_BYTES;
    let mut next_lsn = first_lsn;
    let damage = loop {
        if offset == len {
            break None;
        }
        match read_block(&*file, offset, len, next_lsn, check) {
            Ok(block) => {
                next_lsn = block.header.last_lsn + 1;
                offset = block.end();
                blocks.push(block);
            }
            Err(damage) => break Some(corruption(offset, damage)),
        }
    };
    Ok(Ok(FileIndex {
        path: path.to_path_buf(),
        first_lsn,
        file,
        blocks: Arc::new(blocks),
        end_offset: offset,
        damage,
    }))
}

fn read_block(
    file: &dyn FsFile,
    offset: u64,
    len: u64,
    expected_first_lsn: u64,
    check: Check,
) -> Result<Block, Damage> {
    let read = |buf: &mut [u8], at: u64| {
        file.read_exact_at(buf, at).map_err(|e| Damage::Read(e.to_string()))
    };
    let fixed_end = offset + BLOCK_HEADER_BYTES as u64;
    if fixed_end > len {
        return Err(Damage::Truncated { needed: fixed_end, len });
    }
    let mut fixed = [0u8; BLOCK_HEADER_BYTES];
    read(&mut fixed, offset)?;
    let summary_bytes = declared_summary_bytes(&fixed)?;
    let header_end = fixed_end + u64::from(summary_bytes);
    if header_end > len {
        return Err(Damage::Truncated { needed: header_end, len });
    }
    let mut header_bytes = fixed.to_vec();
    header_bytes.resize(BLOCK_HEADER_BYTES + summary_bytes as usize, 0);
    read(header_bytes.get_mut(BLOCK_HEADER_BYTES..).unwrap_or(&mut []), fixed_end)?;
    let header = decode_block_header(&header_bytes)?;
    if header.first_lsn != expected_first_lsn {
        let found = format!(
            "{}, after a block ending at {}",
            header.first_lsn,
            expected_first_lsn.saturating_sub(1)
        );
        return Err(Damage::Field { field: "first_lsn", found });
    }
    let block = Block { offset, header: Arc::new(header) };
    if block.end() > len {
        return Err(Damage::Truncated { needed: block.end(), len });
    }
    if check == Check::Everything {
        let mut entries = vec![0u8; block.header.entries_bytes as usize];
        read(&mut entries, block.entries_offset())?;
        // The CRC tells a torn or damaged block; decoding waits for a query.
        let computed = crc32fast::hash(&entries);
        if computed != block.header.entries_crc {
            let stored = block.header.entries_crc;
            return Err(Damage::Crc { what: "block entries", stored, computed });
        }
    }
    Ok(block)
}
