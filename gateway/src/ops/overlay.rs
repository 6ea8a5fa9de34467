//! A copy-on-write view of the real file system, for the commands that only read (inspect,
//! verify, uploads, journal): the engine opens and recovers as it always does (zeroing a torn
//! tail, cutting dead payload tails, setting aside a damaged checkpoint), but every write, cut,
//! rename and removal lands in memory, and the directory on disk stays exactly as it was.
//!
//! Files are opened read-only on disk. A file written to keeps, in memory, only the pages that
//! differ from what it holds (so open's rewrite of the log's last batch with its own bytes
//! copies nothing), and mapping a file that no write changed maps it from disk. Syncs do
//! nothing: nothing here is ever meant to be durable.

use std::collections::{BTreeMap, HashMap, HashSet};
use std::io;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex, MutexGuard};

use tessera_wal::{Fs, FsFile, Mapping, OpenMode, StdFs};

/// The unit in which a written file's differences from disk are kept.
const PAGE_BYTES: u64 = 4096;
const PAGE_LEN: usize = 4096;
const _: () = assert!(PAGE_LEN as u64 == PAGE_BYTES);

/// The real file system, read; writes kept in memory. See the module documentation.
#[derive(Debug, Default)]
pub struct OverlayFs {
    state: Mutex<Namespace>,
}

#[derive(Debug, Default)]
struct Namespace {
    /// Every file opened, created or renamed through the overlay, by path.
    files: HashMap<PathBuf, Arc<Mutex<Node>>>,
    /// Paths removed (or renamed away) in the overlay: absent, whatever the disk holds.
    removed: HashSet<PathBuf>,
    /// Directories created in the overlay only.
    dirs: HashSet<PathBuf>,
}

/// A file as the overlay sees it: the disk's bytes below `base_visible_bytes`, zeros from there
/// to `len_bytes`, and the written pages over both.
#[derive(Debug)]
struct Node {
    base: Option<Box<dyn FsFile>>,
    base_bytes: u64,
    /// Bytes of `base` at or after this read as zeros (the file was cut, then maybe extended).
    base_visible_bytes: u64,
    len_bytes: u64,
    pages: BTreeMap<u64, Box<[u8; PAGE_LEN]>>,
}

fn lock<T>(mutex: &Mutex<T>) -> MutexGuard<'_, T> {
    // A panic elsewhere leaves the data consistent enough for a read-only view.
    mutex.lock().unwrap_or_else(std::sync::PoisonError::into_inner)
}

fn not_found(path: &Path) -> io::Error {
    io::Error::new(io::ErrorKind::NotFound, format!("{}: no such file", path.display()))
}

/// `bytes` as a `usize` (every length here is of something in memory or mapped).
fn to_usize(bytes: u64) -> io::Result<usize> {
    usize::try_from(bytes).map_err(|_| io::Error::other("length beyond the address space"))
}

impl OverlayFs {
    /// An overlay over the real file system, with nothing written yet.
    pub fn shared() -> Arc<dyn Fs> {
        Arc::new(OverlayFs::default())
    }

    fn node(&self, ns: &mut Namespace, path: &Path) -> io::Result<Arc<Mutex<Node>>> {
        if ns.removed.contains(path) {
            return Err(not_found(path));
        }
        if let Some(node) = ns.files.get(path) {
            return Ok(Arc::clone(node));
        }
        let base = StdFs.open(path, OpenMode::Read)?;
        let base_bytes = base.len()?;
        let node = Arc::new(Mutex::new(Node {
            base: Some(base),
            base_bytes,
            base_visible_bytes: base_bytes,
            len_bytes: base_bytes,
            pages: BTreeMap::new(),
        }));
        ns.files.insert(path.to_path_buf(), Arc::clone(&node));
        Ok(node)
    }

    fn exists(ns: &Namespace, path: &Path) -> bool {
        !ns.removed.contains(path) && (ns.files.contains_key(path) || path.is_file())
    }
}

impl Fs for OverlayFs {
    fn open(&self, path: &Path, mode: OpenMode) -> io::Result<Box<dyn FsFile>> {
        let mut ns = lock(&self.state);
        let node = match mode {
            OpenMode::Read | OpenMode::ReadWrite => self.node(&mut ns, path)?,
            OpenMode::CreateNew => {
                if OverlayFs::exists(&ns, path) {
                    let message = format!("{}: already exists", path.display());
                    return Err(io::Error::new(io::ErrorKind::AlreadyExists, message));
                }
                let node = Arc::new(Mutex::new(Node {
                    base: None,
                    base_bytes: 0,
                    base_visible_bytes: 0,
                    len_bytes: 0,
                    pages: BTreeMap::new(),
                }));
                ns.removed.remove(path);
                ns.files.insert(path.to_path_buf(), Arc::clone(&node));
                node
            }
        };
        Ok(Box::new(OverlayFile { node }))
    }

    fn rename(&self, from: &Path, to: &Path) -> io::Result<()> {
        let mut ns = lock(&self.state);
        let node = self.node(&mut ns, from)?;
        ns.files.remove(from);
        ns.removed.insert(from.to_path_buf());
        ns.removed.remove(to);
        ns.files.insert(to.to_path_buf(), node);
        Ok(())
    }

    fn remove(&self, path: &Path) -> io::Result<()> {
        let mut ns = lock(&self.state);
        if !OverlayFs::exists(&ns, path) {
            return Err(not_found(path));
        }
        ns.files.remove(path);
        ns.removed.insert(path.to_path_buf());
        Ok(())
    }

    fn list(&self, dir: &Path) -> io::Result<Vec<String>> {
        let ns = lock(&self.state);
        let mut names: Vec<String> = match StdFs.list(dir) {
            Ok(names) => names,
            Err(e) if e.kind() == io::ErrorKind::NotFound && ns.dirs.contains(dir) => Vec::new(),
            Err(e) => return Err(e),
        };
        names.retain(|name| !ns.removed.contains(&dir.join(name)));
        for path in ns.files.keys() {
            if path.parent() == Some(dir)
                && let Some(name) = path.file_name().and_then(|n| n.to_str())
                && !names.iter().any(|n| n == name)
            {
                names.push(name.to_owned());
            }
        }
        Ok(names)
    }

    fn create_dir_all(&self, dir: &Path) -> io::Result<()> {
        if dir.is_dir() {
            return Ok(());
        }
        let mut ns = lock(&self.state);
        for ancestor in dir.ancestors() {
            if ancestor.as_os_str().is_empty() || ancestor.is_dir() {
                break;
            }
            ns.dirs.insert(ancestor.to_path_buf());
        }
        Ok(())
    }

    fn sync_dir(&self, _dir: &Path) -> io::Result<()> {
        Ok(())
    }
}

/// A handle on an overlay file (handles on one path share its node).
#[derive(Debug)]
struct OverlayFile {
    node: Arc<Mutex<Node>>,
}

impl Node {
    /// Reads `buf.len()` bytes at `offset` from disk (zeros past what is visible of it),
    /// ignoring the written pages.
    fn read_base(&self, buf: &mut [u8], offset: u64) -> io::Result<()> {
        buf.fill(0);
        let visible_end = self.base_visible_bytes.min(self.base_bytes);
        let Some(base) = &self.base else { return Ok(()) };
        if offset >= visible_end {
            return Ok(());
        }
        let n = to_usize((visible_end - offset).min(buf.len() as u64))?;
        let head = buf.get_mut(..n).ok_or_else(|| io::Error::other("read past buffer"))?;
        base.read_exact_at(head, offset)
    }

    /// Reads `buf.len()` bytes at `offset`, written pages over the disk's bytes.
    fn read(&self, buf: &mut [u8], offset: u64) -> io::Result<()> {
        let end = offset.saturating_add(buf.len() as u64);
        if end > self.len_bytes {
            let message = format!("read of {end} bytes past the file's {}", self.len_bytes);
            return Err(io::Error::new(io::ErrorKind::UnexpectedEof, message));
        }
        self.read_base(buf, offset)?;
        let first_page = offset / PAGE_BYTES;
        for (&index, page) in self.pages.range(first_page..end.div_ceil(PAGE_BYTES)) {
            let page_start = index * PAGE_BYTES;
            let from = offset.max(page_start);
            let to = end.min(page_start + PAGE_BYTES);
            let src = page.get(to_usize(from - page_start)?..to_usize(to - page_start)?);
            let dst = buf.get_mut(to_usize(from - offset)?..to_usize(to - offset)?);
            if let (Some(src), Some(dst)) = (src, dst) {
                dst.copy_from_slice(src);
            }
        }
        Ok(())
    }

    /// Writes `bytes` at `offset`: only pages whose bytes change are kept.
    fn write(&mut self, bytes: &[u8], offset: u64) -> io::Result<()> {
        let end = offset.saturating_add(bytes.len() as u64);
        if end > self.len_bytes {
            self.len_bytes = end;
        }
        let mut at = offset;
        while at < end {
            let index = at / PAGE_BYTES;
            let page_start = index * PAGE_BYTES;
            let to = end.min(page_start + PAGE_BYTES);
            let chunk = bytes
                .get(to_usize(at - offset)?..to_usize(to - offset)?)
                .ok_or_else(|| io::Error::other("write past buffer"))?;
            let within = to_usize(at - page_start)?..to_usize(to - page_start)?;
            if !self.pages.contains_key(&index) {
                let mut current = vec![0u8; chunk.len()];
                self.read_base(&mut current, at)?;
                if current == chunk {
                    at = to;
                    continue;
                }
                let mut page = Box::new([0u8; PAGE_LEN]);
                self.read_base(page.as_mut_slice(), page_start)?;
                self.pages.insert(index, page);
            }
            if let Some(dst) = self.pages.get_mut(&index).and_then(|p| p.get_mut(within)) {
                dst.copy_from_slice(chunk);
            }
            at = to;
        }
        Ok(())
    }

    fn set_len(&mut self, len_bytes: u64) -> io::Result<()> {
        if len_bytes < self.len_bytes {
            // What is cut reads as zeros if the file grows again.
            self.base_visible_bytes = self.base_visible_bytes.min(len_bytes);
            let boundary = len_bytes / PAGE_BYTES;
            self.pages.retain(|&index, _| index * PAGE_BYTES < len_bytes);
            if let Some(page) = self.pages.get_mut(&boundary)
                && let Some(tail) = page.get_mut(to_usize(len_bytes - boundary * PAGE_BYTES)?..)
            {
                tail.fill(0);
            }
        }
        self.len_bytes = len_bytes;
        Ok(())
    }
}

/// The first `len` bytes of a mapping.
struct Prefix {
    inner: Mapping,
    len: usize,
}

impl AsRef<[u8]> for Prefix {
    fn as_ref(&self) -> &[u8] {
        let bytes = (*self.inner).as_ref();
        bytes.get(..self.len).unwrap_or(bytes)
    }
}

impl FsFile for OverlayFile {
    fn len(&self) -> io::Result<u64> {
        Ok(lock(&self.node).len_bytes)
    }

    fn read_exact_at(&self, buf: &mut [u8], offset: u64) -> io::Result<()> {
        lock(&self.node).read(buf, offset)
    }

    fn write_all_at(&self, buf: &[u8], offset: u64) -> io::Result<()> {
        lock(&self.node).write(buf, offset)
    }

    fn sync_data(&self) -> io::Result<()> {
        Ok(())
    }

    fn set_len(&self, len_bytes: u64) -> io::Result<()> {
        lock(&self.node).set_len(len_bytes)
    }

    fn allocate(&self, len_bytes: u64) -> io::Result<()> {
        let mut node = lock(&self.node);
        if len_bytes > node.len_bytes {
            node.set_len(len_bytes)?;
        }
        Ok(())
    }

    fn map(&self) -> io::Result<Mapping> {
        let node = lock(&self.node);
        let unchanged_prefix = node.pages.is_empty()
            && node.len_bytes <= node.base_visible_bytes
            && node.base_visible_bytes <= node.base_bytes;
        if let (true, Some(base)) = (unchanged_prefix, &node.base) {
            let inner = base.map()?;
            if node.len_bytes == node.base_bytes {
                return Ok(inner);
            }
            return Ok(Arc::new(Prefix { inner, len: to_usize(node.len_bytes)? }));
        }
        let mut bytes = vec![0u8; to_usize(node.len_bytes)?];
        node.read(&mut bytes, 0)?;
        Ok(Arc::new(bytes))
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used, clippy::indexing_slicing, clippy::cast_possible_truncation)]

    use super::*;

    fn read_all(file: &dyn FsFile) -> Vec<u8> {
        let mut bytes = vec![0u8; file.len().unwrap() as usize];
        file.read_exact_at(&mut bytes, 0).unwrap();
        assert_eq!((*file.map().unwrap()).as_ref(), &bytes[..], "map agrees with reads");
        bytes
    }

    #[test]
    fn writes_cuts_renames_and_removals_stay_in_memory() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("a");
        let disk: Vec<u8> = (0..10_000u32).map(|i| (i % 251) as u8).collect();
        std::fs::write(&path, &disk).unwrap();
        std::fs::write(dir.path().join("gone"), b"x").unwrap();
        let fs = OverlayFs::default();

        let file = fs.open(&path, OpenMode::ReadWrite).unwrap();
        assert_eq!(read_all(&*file), disk);
        // Rewriting the bytes already there keeps no page.
        file.write_all_at(&disk[100..5000], 100).unwrap();
        assert!(lock(&file_node(&fs, &path)).pages.is_empty());
        file.write_all_at(b"hello", 4094).unwrap();
        let mut expected = disk.clone();
        expected[4094..4099].copy_from_slice(b"hello");
        assert_eq!(read_all(&*file), expected);
        // A cut, then growth: the cut bytes come back as zeros.
        file.set_len(4096).unwrap();
        file.allocate(9000).unwrap();
        expected.truncate(4096);
        expected.resize(9000, 0);
        assert_eq!(read_all(&*fs.open(&path, OpenMode::Read).unwrap()), expected);

        fs.rename(&path, &dir.path().join("b")).unwrap();
        fs.remove(&dir.path().join("gone")).unwrap();
        let created = fs.open(&dir.path().join("c"), OpenMode::CreateNew).unwrap();
        created.write_all_at(b"new", 0).unwrap();
        let mut names = fs.list(dir.path()).unwrap();
        names.sort();
        assert_eq!(names, ["b", "c"]);
        assert!(fs.open(&path, OpenMode::Read).is_err());
        assert_eq!(read_all(&*fs.open(&dir.path().join("b"), OpenMode::Read).unwrap()), expected);

        // The disk is as it was.
        assert_eq!(std::fs::read(&path).unwrap(), disk);
        assert_eq!(std::fs::read(dir.path().join("gone")).unwrap(), b"x");
        assert!(!dir.path().join("b").exists() && !dir.path().join("c").exists());
    }

    #[test]
    fn a_prefix_of_an_unchanged_file_maps_from_disk() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("seg");
        std::fs::write(&path, vec![7u8; 9000]).unwrap();
        let fs = OverlayFs::default();
        let file = fs.open(&path, OpenMode::ReadWrite).unwrap();
        file.set_len(100).unwrap();
        assert_eq!((*file.map().unwrap()).as_ref(), &[7u8; 100][..]);
        assert_eq!(std::fs::metadata(&path).unwrap().len(), 9000);
    }

    fn file_node(fs: &OverlayFs, path: &Path) -> Arc<Mutex<Node>> {
        Arc::clone(lock(&fs.state).files.get(path).unwrap())
    }
}
