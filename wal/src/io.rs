//! The I/O seam: every file operation of Tessera's storage crates goes through [`Fs`] and
//! [`FsFile`], so that a simulated file system ([`crate::SimFs`]) can lose unsynced bytes, fail
//! writes and fsyncs, and crash at any call, while the real one ([`crate::StdFs`]) talks to
//! the operating system.
//!
//! The contract both implementations keep (and that the log relies on):
//! - bytes written with [`FsFile::write_all_at`] are durable only after a successful
//!   [`FsFile::sync_data`] of that file; a file's length follows the same rule;
//! - creating, renaming or removing a file is durable only after [`Fs::sync_dir`] of its
//!   directory;
//! - after a failed `sync_data`, what is durable is unknown (and retrying does not help).

use std::fmt::Debug;
use std::io;
use std::path::Path;
use std::sync::Arc;

/// A read-only view of a file's bytes, as they were when it was mapped.
pub type Mapping = Arc<dyn AsRef<[u8]> + Send + Sync>;

/// How [`Fs::open`] opens a file.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum OpenMode {
    /// An existing file, for reading only.
    Read,
    /// An existing file, for reading and writing.
    ReadWrite,
    /// A new file, which must not exist yet, for reading and writing.
    CreateNew,
}

/// A file system: the directory operations of the seam.
pub trait Fs: Send + Sync + Debug {
    /// Opens (or creates) the file at `path`.
    fn open(&self, path: &Path, mode: OpenMode) -> io::Result<Box<dyn FsFile>>;
    /// Renames `from` to `to` within one directory, replacing `to` if it exists.
    fn rename(&self, from: &Path, to: &Path) -> io::Result<()>;
    /// Removes the file at `path`.
    fn remove(&self, path: &Path) -> io::Result<()>;
    /// The names of the regular files in `dir`, in no particular order.
    fn list(&self, dir: &Path) -> io::Result<Vec<String>>;
    /// Creates `dir` and its missing parents.
    fn create_dir_all(&self, dir: &Path) -> io::Result<()>;
    /// Makes the creations, renames and removals in `dir` durable.
    fn sync_dir(&self, dir: &Path) -> io::Result<()>;
}

/// An open file: positioned reads and writes, sync, length changes and a read-only map.
pub trait FsFile: Send + Sync + Debug {
    /// The file's current length.
    fn len(&self) -> io::Result<u64>;
    /// Whether the file is empty.
    fn is_empty(&self) -> io::Result<bool> {
        Ok(self.len()? == 0)
    }
    /// Fills `buf` from `offset`; fails with `UnexpectedEof` if the file is too short.
    fn read_exact_at(&self, buf: &mut [u8], offset: u64) -> io::Result<()>;
    /// Writes all of `buf` at `offset`, extending the file if needed.
    fn write_all_at(&self, buf: &[u8], offset: u64) -> io::Result<()>;
    /// Makes the file's bytes and length durable (`fdatasync`).
    fn sync_data(&self) -> io::Result<()>;
    /// Starts writing `len_bytes` from `offset` back to the disk without waiting
    /// (`sync_file_range(SYNC_FILE_RANGE_WRITE)`): a hint that lets a later `sync_data` wait
    /// less. It makes nothing durable.
    fn start_writeback(&self, offset: u64, len_bytes: u64) -> io::Result<()> {
        let _ = (offset, len_bytes);
        Ok(())
    }
    /// Sets the file's length, cutting it or extending it with zeros.
    fn set_len(&self, len_bytes: u64) -> io::Result<()>;
    /// Extends the file to at least `len_bytes`, reserving the blocks, the new bytes reading as
    /// zeros; overwriting reserved blocks later needs no block allocation (`fallocate`).
    fn allocate(&self, len_bytes: u64) -> io::Result<()>;
    /// A read-only view of the file's current bytes.
    fn map(&self) -> io::Result<Mapping>;
}

/// Creates `dir` (and its missing parents) durably: after it returns, a power loss keeps the
/// directory. Each ancestor is fsynced (its entries include the next level down), because
/// `create_dir_all` may have created several levels and a directory entry is durable only once
/// its parent is synced. Cheap when nothing is new: an fsync of a clean directory costs little.
pub fn create_dir_all_durable(fs: &dyn Fs, dir: &Path) -> io::Result<()> {
    fs.create_dir_all(dir)?;
    for ancestor in dir.ancestors().skip(1) {
        if !ancestor.as_os_str().is_empty() {
            fs.sync_dir(ancestor)?;
        }
    }
    Ok(())
}
