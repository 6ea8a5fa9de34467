//! The real file system: `std::fs`, `fallocate` and `memmap2`.

use std::fs::{self, File, OpenOptions};
use std::io;
use std::os::unix::fs::FileExt;
use std::os::unix::io::AsRawFd;
use std::path::Path;
use std::sync::Arc;

use crate::io::{Fs, FsFile, Mapping, OpenMode};

/// The operating system's file system.
#[derive(Clone, Copy, Debug, Default)]
pub struct StdFs;

impl StdFs {
    /// The real file system, shared as the seam's trait object.
    pub fn shared() -> Arc<dyn Fs> {
        Arc::new(StdFs)
    }
}

#[derive(Debug)]
struct StdFile {
    file: File,
}

impl Fs for StdFs {
    fn open(&self, path: &Path, mode: OpenMode) -> io::Result<Box<dyn FsFile>> {
        let mut options = OpenOptions::new();
        match mode {
            OpenMode::Read => options.read(true),
            OpenMode::ReadWrite => options.read(true).write(true),
            OpenMode::CreateNew => options.read(true).write(true).create_new(true),
        };
        Ok(Box::new(StdFile { file: options.open(path)? }))
    }

    fn rename(&self, from: &Path, to: &Path) -> io::Result<()> {
        fs::rename(from, to)
    }

    fn remove(&self, path: &Path) -> io::Result<()> {
        fs::remove_file(path)
    }

    fn list(&self, dir: &Path) -> io::Result<Vec<String>> {
        let mut names = Vec::new();
        for entry in fs::read_dir(dir)? {
            let entry = entry?;
            if !entry.file_type()?.is_file() {
                continue;
            }
            // Names that are not UTF-8 are not ours: the log names its files in ASCII.
            if let Ok(name) = entry.file_name().into_string() {
                names.push(name);
            }
        }
        Ok(names)
    }

    fn create_dir_all(&self, dir: &Path) -> io::Result<()> {
        fs::create_dir_all(dir)
    }

    fn sync_dir(&self, dir: &Path) -> io::Result<()> {
        File::open(dir)?.sync_all()
    }
}

impl FsFile for StdFile {
    fn len(&self) -> io::Result<u64> {
        Ok(self.file.metadata()?.len())
    }

    fn read_exact_at(&self, buf: &mut [u8], offset: u64) -> io::Result<()> {
        self.file.read_exact_at(buf, offset)
    }

    fn write_all_at(&self, buf: &[u8], offset: u64) -> io::Result<()> {
        self.file.write_all_at(buf, offset)
    }

    fn sync_data(&self) -> io::Result<()> {
        self.file.sync_data()
    }

    fn set_len(&self, len_bytes: u64) -> io::Result<()> {
        self.file.set_len(len_bytes)
    }

    fn start_writeback(&self, offset: u64, len_bytes: u64) -> io::Result<()> {
        let (Ok(offset), Ok(len)) =
            (libc::off64_t::try_from(offset), libc::off64_t::try_from(len_bytes))
        else {
            return Ok(());
        };
        // SAFETY: sync_file_range takes only integers and a descriptor we hold open.
        #[expect(unsafe_code, reason = "std has no sync_file_range; the call takes only integers")]
        let rc = unsafe {
            libc::sync_file_range(self.file.as_raw_fd(), offset, len, libc::SYNC_FILE_RANGE_WRITE)
        };
        // A hint: where the file system does not support it, the later fdatasync does the work.
        let _ = rc;
        Ok(())
    }

    fn allocate(&self, len_bytes: u64) -> io::Result<()> {
        let len = libc::off_t::try_from(len_bytes)
            .map_err(|_| io::Error::new(io::ErrorKind::InvalidInput, "length exceeds off_t"))?;
        // SAFETY: posix_fallocate reads no memory of ours; the descriptor is open for writing
        // and stays open for the duration of the call (we hold `self.file`).
        #[expect(unsafe_code, reason = "std has no fallocate; the call takes only integers")]
        let rc = unsafe { libc::posix_fallocate(self.file.as_raw_fd(), 0, len) };
        match rc {
            0 => Ok(()),
            // File systems without fallocate: a sparse extension still reads as zeros.
            libc::EOPNOTSUPP | libc::EINVAL => {
                if self.len()? < len_bytes {
                    self.file.set_len(len_bytes)?;
                }
                Ok(())
            }
            errno => Err(io::Error::from_raw_os_error(errno)),
        }
    }

    fn map(&self) -> io::Result<Mapping> {
        if self.len()? == 0 {
            // mmap of zero bytes fails; an empty file maps to an empty view.
            return Ok(Arc::new(Vec::<u8>::new()));
        }
        // SAFETY: the mapping is read-only and Tessera never shrinks a file it has mapped while
        // the map lives (torn tails are zeroed, not cut, and repair maps nothing it cuts).
        // Another process truncating our files would raise SIGBUS; the data directory's lock
        // (held by the engine) keeps other Tessera processes out.
        #[expect(unsafe_code, reason = "memmap2 maps are unsafe by nature; see SAFETY")]
        let map = unsafe { memmap2::Mmap::map(&self.file)? };
        Ok(Arc::new(map))
    }
}
