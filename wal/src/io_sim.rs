//! A simulated file system in memory that knows which bytes are durable.
//!
//! Fault model (what a power loss can do to a real disk, as far as Tessera relies on it):
//! - Each file has its synced bytes and its current bytes. A write changes the current bytes
//!   and marks its 512-byte sectors unsynced; `sync_data` makes them (and the length) durable.
//! - Each directory has its synced entries and a list of unsynced changes (create, rename,
//!   remove) in the order they were made; `sync_dir` makes them durable. A new directory is
//!   durable once its parent is synced; until then a crash removes it with all it holds.
//! - A failed `sync_dir` (EIO) persists a random prefix of the unsynced changes and leaves the
//!   rest unsynced. Unlike data pages, journaled metadata is not dropped by a failed commit:
//!   the file system either shuts down (model that with `power_off_at_call`) or commits the
//!   changes later.
//! - A crash ([`SimFs::crash`]) either drops every unsynced byte and directory change, or keeps
//!   any subset of the unsynced sectors (pages reach the disk in any order, so a torn batch need
//!   not be a prefix), each file's synced or current length, and a prefix of each directory's
//!   unsynced changes, all drawn from a seed.
//! - A failed `sync_data` (EIO) persists a random subset of the unsynced sectors and marks the
//!   rest clean without persisting them, as Linux does (PostgreSQL's "fsyncgate"): retrying the
//!   fsync then reports success and the lost sectors stay lost.
//! - A failed write (ENOSPC) writes a random prefix of its buffer, then fails.
//! - A latent sector error ([`SimFs::rot_at_read`]) flips one bit of the bytes a read returns,
//!   on the medium too: the sector stays damaged for every later read and across crashes.
//!
//! Every call of the seam is counted, so a test can cut the power at call N for every N of a
//! scenario: from that call on, every call fails until [`SimFs::crash`] restarts the machine.
//! File handles opened before a crash fail afterwards, as a dead process's would.

use std::collections::{BTreeMap, BTreeSet};
use std::io;
use std::path::{Path, PathBuf};
use std::sync::Arc;

use parking_lot::Mutex;

use crate::io::{Fs, FsFile, Mapping, OpenMode};
use crate::limits::SECTOR_BYTES;

/// What a crash keeps of the unsynced state.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum CrashMode {
    /// Every unsynced byte, length change and directory change is lost.
    DropUnsynced,
    /// Each unsynced sector keeps its new or its old contents, each file its new or its old
    /// length, each directory a prefix of its unsynced changes, drawn from `seed`.
    KeepRandom {
        /// The seed of the draws.
        seed: u64,
    },
}

/// A simulated, in-memory file system with crash and fault injection.
#[derive(Clone, Debug, Default)]
pub struct SimFs {
    state: Arc<Mutex<SimState>>,
}

#[derive(Debug, Default)]
struct SimState {
    /// Ordered, so that a crash draws its sectors in the same order on every run.
    inodes: BTreeMap<u64, Inode>,
    inode_next: u64,
    dirs: BTreeMap<PathBuf, Dir>,
    /// Bumped by each crash; handles from an earlier generation belong to a dead process.
    generation: u64,
    io_calls: u64,
    write_calls: u64,
    sync_calls: u64,
    dir_sync_calls: u64,
    read_calls: u64,
    /// Bits flipped on the medium by `rot_at_read` so far.
    bits_rotted: u64,
    power_off_at_call: Option<u64>,
    enospc_at_write: Option<u64>,
    eio_at_sync: Option<u64>,
    eio_at_dir_sync: Option<u64>,
    rot_at_read: Option<u64>,
    powered_off: bool,
    rng: SplitMix64,
}

#[derive(Debug, Default)]
struct Inode {
    current: Vec<u8>,
    durable: Vec<u8>,
    /// Sectors whose current contents may differ from the durable ones.
    unsynced_sectors: BTreeSet<u64>,
}

#[derive(Debug, Default)]
struct Dir {
    /// Whether the directory's own entry in its parent is durable.
    entry_durable: bool,
    durable: BTreeMap<String, u64>,
    current: BTreeMap<String, u64>,
    unsynced: Vec<DirChange>,
}

#[derive(Clone, Debug)]
enum DirChange {
    Link { name: String, inode: u64 },
    Unlink { name: String },
    Rename { from: String, to: String, inode: u64 },
}

#[derive(Debug)]
struct SimFile {
    state: Arc<Mutex<SimState>>,
    inode: u64,
    generation: u64,
    writable: bool,
}

#[derive(Clone, Copy)]
enum Call {
    Other,
    Read,
    Write,
    Sync,
    DirSync,
}

impl SimFs {
    /// An empty file system; `seed` drives the outcome of injected failures.
    pub fn new(seed: u64) -> SimFs {
        let fs = SimFs::default();
        fs.state.lock().rng = SplitMix64::seeded(seed);
        fs
    }

    /// This file system as the seam's trait object (sharing its state).
    pub fn shared(&self) -> Arc<dyn Fs> {
        Arc::new(self.clone())
    }

    /// How many calls of the seam were made so far (all kinds, failed ones included).
    pub fn io_calls(&self) -> u64 {
        self.state.lock().io_calls
    }

    /// How many writes were attempted so far.
    pub fn write_calls(&self) -> u64 {
        self.state.lock().write_calls
    }

    /// How many `sync_data` calls were attempted so far.
    pub fn sync_calls(&self) -> u64 {
        self.state.lock().sync_calls
    }

    /// Cuts the power at I/O call number `call` (counting from 0, as `io_calls` does): that
    /// call and every later one fail until [`SimFs::crash`].
    pub fn power_off_at_call(&self, call: u64) {
        self.state.lock().power_off_at_call = Some(call);
    }

    /// Fails write number `write` (counting from 0) with ENOSPC, after writing a random prefix.
    pub fn enospc_at_write(&self, write: u64) {
        self.state.lock().enospc_at_write = Some(write);
    }

    /// Fails `sync_data` number `sync` (counting from 0) with EIO, losing a random subset of
    /// the file's unsynced sectors for good.
    pub fn eio_at_sync(&self, sync: u64) {
        self.state.lock().eio_at_sync = Some(sync);
    }

    /// How many `sync_dir` calls were attempted so far.
    pub fn dir_sync_calls(&self) -> u64 {
        self.state.lock().dir_sync_calls
    }

    /// Fails `sync_dir` number `sync` (counting from 0) with EIO, after persisting a random
    /// prefix of the directory's unsynced changes; the rest stay unsynced.
    pub fn eio_at_dir_sync(&self, sync: u64) {
        self.state.lock().eio_at_dir_sync = Some(sync);
    }

    /// How many reads (`read_exact_at` and `map`) were attempted so far.
    pub fn read_calls(&self) -> u64 {
        self.state.lock().read_calls
    }

    /// Flips one bit, drawn from the seed, of what read number `read` (counting from 0, as
    /// `read_calls` does) returns, and of the medium under it: a latent sector error found by
    /// that read, which every later read sees too. A `map` counts as one read of the whole
    /// file. A read of nothing flips nothing. Unlike the other faults, a crash does not clear
    /// it, so that it can be armed for a recovery.
    pub fn rot_at_read(&self, read: u64) {
        self.state.lock().rot_at_read = Some(read);
    }

    /// How many bits `rot_at_read` has flipped so far.
    pub fn bits_rotted(&self) -> u64 {
        self.state.lock().bits_rotted
    }

    /// Whether the power is off (a `power_off_at_call` was reached).
    pub fn is_powered_off(&self) -> bool {
        self.state.lock().powered_off
    }

    /// Loses power and restarts: the file system keeps what `mode` says of its unsynced state,
    /// every open handle dies, and injected faults are cleared.
    pub fn crash(&self, mode: CrashMode) {
        let mut guard = self.state.lock();
        let state = &mut *guard;
        let mut rng = match mode {
            CrashMode::DropUnsynced => None,
            CrashMode::KeepRandom { seed } => Some(SplitMix64::seeded(seed)),
        };
        // A directory whose entry never reached its parent vanishes, with what is under it.
        let lost: Vec<PathBuf> =
            state.dirs.iter().filter(|(_, d)| !d.entry_durable).map(|(p, _)| p.clone()).collect();
        state.dirs.retain(|path, _| !lost.iter().any(|l| path.starts_with(l)));
        let mut live = BTreeSet::new();
        for dir in state.dirs.values_mut() {
            let kept = rng.as_mut().map_or(0, |r| r.below(dir.unsynced.len() as u64 + 1));
            for change in dir.unsynced.iter().take(usize::try_from(kept).unwrap_or(usize::MAX)) {
                change.apply(&mut dir.durable);
            }
            dir.unsynced.clear();
            dir.current = dir.durable.clone();
            live.extend(dir.durable.values().copied());
        }
        state.inodes.retain(|id, _| live.contains(id));
        for inode in state.inodes.values_mut() {
            let image = match rng.as_mut() {
                None => inode.durable.clone(),
                Some(r) => inode.crash_image(r),
            };
            inode.current = image.clone();
            inode.durable = image;
            inode.unsynced_sectors.clear();
        }
        state.generation += 1;
        state.powered_off = false;
        state.power_off_at_call = None;
        state.enospc_at_write = None;
        state.eio_at_sync = None;
        state.eio_at_dir_sync = None;
    }

    fn lock_dir<T>(
        &self,
        path: &Path,
        call: impl FnOnce(&mut SimState, &Path, String) -> io::Result<T>,
    ) -> io::Result<T> {
        let mut state = self.state.lock();
        state.begin(Call::Other)?;
        let (dir, name) = split_path(path)?;
        if !state.dirs.contains_key(&dir) {
            return Err(not_found(&dir));
        }
        call(&mut state, &dir, name)
    }
}

impl SimState {
    /// Counts a call and injects the faults planned for it.
    fn begin(&mut self, call: Call) -> io::Result<()> {
        if self.powered_off {
            return Err(power_lost());
        }
        let n = self.io_calls;
        self.io_calls += 1;
        if self.power_off_at_call == Some(n) {
            self.powered_off = true;
            return Err(power_lost());
        }
        match call {
            Call::Other => {}
            Call::Read => self.read_calls += 1,
            Call::Write => self.write_calls += 1,
            Call::Sync => self.sync_calls += 1,
            Call::DirSync => self.dir_sync_calls += 1,
        }
        Ok(())
    }

    fn dir_mut(&mut self, dir: &Path) -> io::Result<&mut Dir> {
        self.dirs.get_mut(dir).ok_or_else(|| not_found(dir))
    }
}

impl DirChange {
    fn apply(&self, entries: &mut BTreeMap<String, u64>) {
        match self {
            DirChange::Link { name, inode } => {
                entries.insert(name.clone(), *inode);
            }
            DirChange::Unlink { name } => {
                entries.remove(name);
            }
            DirChange::Rename { from, to, inode } => {
                entries.remove(from);
                entries.insert(to.clone(), *inode);
            }
        }
    }
}

impl Dir {
    fn change(&mut self, change: DirChange) {
        change.apply(&mut self.current);
        self.unsynced.push(change);
    }
}

impl Inode {
    fn mark_unsynced(&mut self, start: u64, end: u64) {
        if end > start {
            self.unsynced_sectors.extend(start / SECTOR_BYTES..end.div_ceil(SECTOR_BYTES));
        }
    }

    /// Flips a random bit of `start..end` in the current bytes and, where they reach, the
    /// durable ones: the medium itself is damaged. Whether a bit was flipped.
    fn rot(&mut self, rng: &mut SplitMix64, start: usize, end: usize) -> bool {
        if end <= start {
            return false;
        }
        let bit = rng.below((end - start) as u64 * 8);
        let index = start + usize::try_from(bit / 8).unwrap_or(0);
        let mask = 1u8 << (bit % 8);
        for bytes in [&mut self.current, &mut self.durable] {
            if let Some(byte) = bytes.get_mut(index) {
                *byte ^= mask;
            }
        }
        true
    }

    /// The file as a crash leaves it: the synced or the current length, and each unsynced
    /// sector with its old or its new contents.
    fn crash_image(&self, rng: &mut SplitMix64) -> Vec<u8> {
        let len = if rng.coin() { self.current.len() } else { self.durable.len() };
        let mut image = vec![0; len];
        copy_prefix(&mut image, &self.durable);
        for &sector in &self.unsynced_sectors {
            let source = if rng.coin() { &self.current } else { &self.durable };
            copy_sector(&mut image, source, sector);
        }
        image
    }

    /// A successful fdatasync: every unsynced sector and the length become durable.
    fn sync(&mut self) {
        self.durable.resize(self.current.len(), 0);
        for &sector in &self.unsynced_sectors {
            copy_sector(&mut self.durable, &self.current, sector);
        }
        self.unsynced_sectors.clear();
    }

    /// A failed fdatasync: some unsynced sectors reach the disk, the others are marked clean
    /// while never written, so no later fsync will write them.
    fn sync_failed(&mut self, rng: &mut SplitMix64) {
        self.durable.resize(self.current.len(), 0);
        for &sector in &self.unsynced_sectors {
            let source = if rng.coin() { &self.current } else { &self.durable };
            let bytes = sector_range(source, sector).map(<[u8]>::to_vec);
            if let Some(bytes) = bytes {
                write_sector(&mut self.durable, sector, &bytes);
            } else {
                zero_sector(&mut self.durable, sector);
            }
        }
        self.unsynced_sectors.clear();
    }
}

fn copy_prefix(image: &mut [u8], source: &[u8]) {
    let n = image.len().min(source.len());
    if let (Some(to), Some(from)) = (image.get_mut(..n), source.get(..n)) {
        to.copy_from_slice(from);
    }
}

fn sector_bounds(sector: u64, len: usize) -> (usize, usize) {
    let start = usize::try_from(sector * SECTOR_BYTES).unwrap_or(usize::MAX).min(len);
    let end = usize::try_from((sector + 1) * SECTOR_BYTES).unwrap_or(usize::MAX).min(len);
    (start, end)
}

fn sector_range(bytes: &[u8], sector: u64) -> Option<&[u8]> {
    let (start, end) = sector_bounds(sector, bytes.len());
    bytes.get(start..end)
}

/// Copies `sector` of `source` into `image`, zeros where `source` is shorter.
fn copy_sector(image: &mut [u8], source: &[u8], sector: u64) {
    zero_sector(image, sector);
    if let Some(bytes) = sector_range(source, sector) {
        write_sector(image, sector, bytes);
    }
}

fn write_sector(image: &mut [u8], sector: u64, bytes: &[u8]) {
    let (start, end) = sector_bounds(sector, image.len());
    let n = (end - start).min(bytes.len());
    if let (Some(to), Some(from)) = (image.get_mut(start..start + n), bytes.get(..n)) {
        to.copy_from_slice(from);
    }
}

fn zero_sector(image: &mut [u8], sector: u64) {
    let (start, end) = sector_bounds(sector, image.len());
    if let Some(to) = image.get_mut(start..end) {
        to.fill(0);
    }
}

impl Fs for SimFs {
    fn open(&self, path: &Path, mode: OpenMode) -> io::Result<Box<dyn FsFile>> {
        let (inode, generation) = self.lock_dir(path, |state, dir, name| {
            let existing = state.dir_mut(dir)?.current.get(&name).copied();
            let inode = match (mode, existing) {
                (OpenMode::CreateNew, Some(_)) => {
                    return Err(io::Error::new(io::ErrorKind::AlreadyExists, "file exists"));
                }
                (OpenMode::CreateNew, None) => {
                    let inode = state.inode_next;
                    state.inode_next += 1;
                    state.inodes.insert(inode, Inode::default());
                    state.dir_mut(dir)?.change(DirChange::Link { name, inode });
                    inode
                }
                (_, Some(inode)) => inode,
                (_, None) => return Err(not_found(path)),
            };
            Ok((inode, state.generation))
        })?;
        let writable = mode != OpenMode::Read;
        Ok(Box::new(SimFile { state: Arc::clone(&self.state), inode, generation, writable }))
    }

    fn rename(&self, from: &Path, to: &Path) -> io::Result<()> {
        let (to_dir, to_name) = split_path(to)?;
        self.lock_dir(from, |state, dir, from_name| {
            if to_dir != dir {
                return Err(io::Error::new(
                    io::ErrorKind::Unsupported,
                    "the simulator renames within one directory only",
                ));
            }
            let entries = state.dir_mut(dir)?;
            let inode = *entries.current.get(&from_name).ok_or_else(|| not_found(from))?;
            entries.change(DirChange::Rename { from: from_name, to: to_name, inode });
            Ok(())
        })
    }

    fn remove(&self, path: &Path) -> io::Result<()> {
        self.lock_dir(path, |state, dir, name| {
            let entries = state.dir_mut(dir)?;
            if !entries.current.contains_key(&name) {
                return Err(not_found(path));
            }
            entries.change(DirChange::Unlink { name });
            Ok(())
        })
    }

    fn list(&self, dir: &Path) -> io::Result<Vec<String>> {
        let mut state = self.state.lock();
        state.begin(Call::Other)?;
        Ok(state.dir_mut(dir)?.current.keys().cloned().collect())
    }

    fn create_dir_all(&self, dir: &Path) -> io::Result<()> {
        let mut state = self.state.lock();
        state.begin(Call::Other)?;
        for ancestor in dir.ancestors() {
            if ancestor.as_os_str().is_empty() || state.dirs.contains_key(ancestor) {
                continue;
            }
            // The root has no parent to sync: it is durable from the start.
            let entry_durable = ancestor.parent().is_none();
            state.dirs.insert(ancestor.to_path_buf(), Dir { entry_durable, ..Dir::default() });
        }
        Ok(())
    }

    fn sync_dir(&self, dir: &Path) -> io::Result<()> {
        let mut guard = self.state.lock();
        let state = &mut *guard;
        state.begin(Call::DirSync)?;
        let failed = state.eio_at_dir_sync == Some(state.dir_sync_calls - 1);
        let entries = state.dirs.get_mut(dir).ok_or_else(|| not_found(dir))?;
        let count = entries.unsynced.len();
        let persisted = if failed { state.rng.below(count as u64 + 1) } else { count as u64 };
        let persisted = usize::try_from(persisted).unwrap_or(count).min(count);
        for change in entries.unsynced.drain(..persisted) {
            change.apply(&mut entries.durable);
        }
        if failed {
            return Err(io::Error::from_raw_os_error(libc::EIO));
        }
        for (path, child) in state.dirs.iter_mut() {
            if path.parent() == Some(dir) {
                child.entry_durable = true;
            }
        }
        Ok(())
    }
}

impl SimFile {
    fn with_inode<T>(
        &self,
        call: Call,
        body: impl FnOnce(&mut Inode, &mut SplitMix64, bool) -> io::Result<T>,
    ) -> io::Result<T> {
        let mut guard = self.state.lock();
        let state = &mut *guard;
        if state.generation != self.generation {
            return Err(io::Error::other("file handle from before a simulated crash"));
        }
        state.begin(call)?;
        // `begin` counted this call: its index is the count less one.
        let fault = match call {
            Call::Read => state.rot_at_read == Some(state.read_calls - 1),
            Call::Write => state.enospc_at_write == Some(state.write_calls - 1),
            Call::Sync => state.eio_at_sync == Some(state.sync_calls - 1),
            Call::Other | Call::DirSync => false,
        };
        let inode = state.inodes.get_mut(&self.inode).ok_or_else(|| io::Error::other("gone"))?;
        body(inode, &mut state.rng, fault)
    }

    fn count_rot(&self, rotted: bool) {
        if rotted {
            let mut state = self.state.lock();
            state.bits_rotted += 1;
            state.rot_at_read = None;
        }
    }

    fn check_writable(&self) -> io::Result<()> {
        if self.writable {
            Ok(())
        } else {
            Err(io::Error::new(io::ErrorKind::PermissionDenied, "file opened read-only"))
        }
    }
}

impl FsFile for SimFile {
    fn len(&self) -> io::Result<u64> {
        self.with_inode(Call::Other, |inode, _, _| Ok(inode.current.len() as u64))
    }

    fn read_exact_at(&self, buf: &mut [u8], offset: u64) -> io::Result<()> {
        let rotted = self.with_inode(Call::Read, |inode, rng, fault| {
            let start = usize::try_from(offset).map_err(|_| eof())?;
            let end = start.checked_add(buf.len()).filter(|&end| end <= inode.current.len());
            let end = end.ok_or_else(eof)?;
            let rotted = fault && inode.rot(rng, start, end);
            if let Some(source) = inode.current.get(start..end) {
                buf.copy_from_slice(source);
            }
            Ok(rotted)
        })?;
        self.count_rot(rotted);
        Ok(())
    }

    fn write_all_at(&self, buf: &[u8], offset: u64) -> io::Result<()> {
        self.check_writable()?;
        self.with_inode(Call::Write, |inode, rng, fault| {
            let written = if fault {
                usize::try_from(rng.below(buf.len() as u64 + 1)).unwrap_or(0)
            } else {
                buf.len()
            };
            let start = usize::try_from(offset).map_err(|_| eof())?;
            let end = start + written;
            let old_len = inode.current.len();
            if end > old_len {
                inode.current.resize(end, 0);
            }
            if let (Some(to), Some(from)) = (inode.current.get_mut(start..end), buf.get(..written))
            {
                to.copy_from_slice(from);
            }
            inode.mark_unsynced(offset.min(old_len as u64), end as u64);
            if fault { Err(io::Error::from_raw_os_error(libc::ENOSPC)) } else { Ok(()) }
        })
    }

    fn sync_data(&self) -> io::Result<()> {
        self.with_inode(Call::Sync, |inode, rng, fault| {
            if fault {
                inode.sync_failed(rng);
                Err(io::Error::from_raw_os_error(libc::EIO))
            } else {
                inode.sync();
                Ok(())
            }
        })
    }

    fn start_writeback(&self, _offset: u64, _len_bytes: u64) -> io::Result<()> {
        // A hint that makes nothing durable: counted as a call (the power can go off here).
        self.with_inode(Call::Other, |_, _, _| Ok(()))
    }

    fn set_len(&self, len_bytes: u64) -> io::Result<()> {
        self.check_writable()?;
        self.with_inode(Call::Other, |inode, _, _| {
            let len = usize::try_from(len_bytes).map_err(|_| eof())?;
            let old_len = inode.current.len();
            inode.current.resize(len, 0);
            inode.mark_unsynced(old_len.min(len) as u64, old_len.max(len) as u64);
            Ok(())
        })
    }

    fn allocate(&self, len_bytes: u64) -> io::Result<()> {
        self.check_writable()?;
        self.with_inode(Call::Other, |inode, _, _| {
            let len = usize::try_from(len_bytes).map_err(|_| eof())?;
            let old_len = inode.current.len();
            if len > old_len {
                inode.current.resize(len, 0);
                inode.mark_unsynced(old_len as u64, len as u64);
            }
            Ok(())
        })
    }

    fn map(&self) -> io::Result<Mapping> {
        let (mapping, rotted) = self.with_inode(Call::Read, |inode, rng, fault| {
            let rotted = fault && inode.rot(rng, 0, inode.current.len());
            Ok((Arc::new(inode.current.clone()) as Mapping, rotted))
        })?;
        self.count_rot(rotted);
        Ok(mapping)
    }
}

fn split_path(path: &Path) -> io::Result<(PathBuf, String)> {
    let name = path.file_name().and_then(|n| n.to_str()).ok_or_else(|| not_found(path))?;
    let dir = path.parent().map(Path::to_path_buf).unwrap_or_default();
    Ok((dir, name.to_owned()))
}

fn not_found(path: &Path) -> io::Error {
    io::Error::new(io::ErrorKind::NotFound, format!("{}: no such file", path.display()))
}

fn power_lost() -> io::Error {
    io::Error::other("simulated power loss: the machine is off")
}

fn eof() -> io::Error {
    io::Error::new(io::ErrorKind::UnexpectedEof, "read past the end of the file")
}

/// A small, fixed PRNG (SplitMix64) so that a seed replays the same faults in every build.
#[derive(Clone, Copy, Debug, Default)]
struct SplitMix64(u64);

impl SplitMix64 {
    /// A stream for `seed`. The seed is mixed first: SplitMix64 seeded with `s` and with
    /// `s + 0x9E37...` would otherwise yield the same stream shifted by one draw.
    fn seeded(seed: u64) -> SplitMix64 {
        SplitMix64(SplitMix64(seed ^ 0x5DEE_CE66_D1CE_4E5B).next())
    }

    fn next(&mut self) -> u64 {
        self.0 = self.0.wrapping_add(0x9E37_79B9_7F4A_7C15);
        let mut z = self.0;
        z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
        z ^ (z >> 31)
    }

    /// A draw in `0..n` (`n` > 0).
    fn below(&mut self, n: u64) -> u64 {
        self.next() % n.max(1)
    }

    fn coin(&mut self) -> bool {
        self.next() & 1 == 1
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn file(fs: &SimFs, path: &str) -> Box<dyn FsFile> {
        fs.open(Path::new(path), OpenMode::CreateNew).unwrap()
    }

    fn read_all(fs: &SimFs, path: &str) -> Option<Vec<u8>> {
        let f = fs.open(Path::new(path), OpenMode::Read).ok()?;
        let map = f.map().unwrap();
        Some((*map).as_ref().to_vec())
    }

    fn setup() -> SimFs {
        let fs = SimFs::new(7);
        fs.create_dir_all(Path::new("/d")).unwrap();
        fs.sync_dir(Path::new("/")).unwrap();
        fs
    }

    #[test]
    fn rot_flips_one_bit_of_the_armed_read_on_the_medium_and_survives_a_crash() {
        let fs = setup();
        let f = file(&fs, "/d/a");
        let original = vec![0x5Au8; 4096];
        f.write_all_at(&original, 0).unwrap();
        f.sync_data().unwrap();
        fs.sync_dir(Path::new("/d")).unwrap();
        let differing = |bytes: &[u8], within: &[u8]| -> u32 {
            bytes.iter().zip(within).map(|(a, b)| (a ^ b).count_ones()).sum()
        };
        let reads = fs.read_calls();
        fs.rot_at_read(reads + 1);
        let mut buf = vec![0; 100];
        f.read_exact_at(&mut buf, 1000).unwrap();
        assert_eq!(buf, original[1000..1100], "read {reads} is not the armed one");
        assert_eq!(fs.bits_rotted(), 0);
        f.read_exact_at(&mut buf, 1000).unwrap();
        assert_eq!(differing(&buf, &original[1000..1100]), 1, "one bit of the armed read");
        assert_eq!(fs.bits_rotted(), 1);
        let after = read_all(&fs, "/d/a").unwrap();
        assert_eq!(differing(&after, &original), 1, "the medium keeps the flip, once");
        assert_eq!(after[1000..1100], buf[..], "inside the range that was read");
        fs.crash(CrashMode::DropUnsynced);
        assert_eq!(read_all(&fs, "/d/a").unwrap(), after, "a crash keeps the damage");
        assert_eq!(fs.bits_rotted(), 1, "disarmed once fired");
        fs.rot_at_read(fs.read_calls());
        let mapped = read_all(&fs, "/d/a").unwrap();
        assert_eq!(differing(&mapped, &after), 1, "a map is a read of the whole file");
        assert_eq!(fs.bits_rotted(), 2);
    }

    #[test]
    fn a_directory_whose_parent_was_never_synced_vanishes_with_its_files() {
        let fs = SimFs::new(1);
        fs.create_dir_all(Path::new("/d/e")).unwrap();
        fs.sync_dir(Path::new("/")).unwrap();
        let f = file(&fs, "/d/e/a");
        f.sync_data().unwrap();
        fs.sync_dir(Path::new("/d/e")).unwrap();
        fs.crash(CrashMode::DropUnsynced);
        assert!(fs.list(Path::new("/d")).is_ok(), "/d's entry was synced");
        assert!(fs.list(Path::new("/d/e")).is_err(), "/d/e's entry never was");
    }

    #[test]
    fn a_failed_directory_sync_leaves_the_rest_for_a_crash_to_drop_or_a_sync_to_keep() {
        let mut lost = false;
        for seed in 0..16 {
            let fs = SimFs::new(seed);
            fs.create_dir_all(Path::new("/d")).unwrap();
            fs.sync_dir(Path::new("/")).unwrap();
            for name in ["a", "b", "c", "d"] {
                file(&fs, &format!("/d/{name}"));
            }
            fs.eio_at_dir_sync(fs.dir_sync_calls());
            let err = fs.sync_dir(Path::new("/d")).unwrap_err();
            assert_eq!(err.raw_os_error(), Some(libc::EIO));
            assert_eq!(fs.list(Path::new("/d")).unwrap().len(), 4, "still visible");
            fs.crash(CrashMode::DropUnsynced);
            lost |= fs.list(Path::new("/d")).unwrap().len() < 4;
        }
        assert!(lost, "a failed sync persists only some of the changes");
        let fs = setup();
        file(&fs, "/d/a");
        fs.eio_at_dir_sync(fs.dir_sync_calls());
        assert!(fs.sync_dir(Path::new("/d")).is_err());
        fs.sync_dir(Path::new("/d")).unwrap();
        fs.crash(CrashMode::DropUnsynced);
        assert_eq!(fs.list(Path::new("/d")).unwrap(), vec!["a".to_owned()], "the retry keeps it");
    }

    #[test]
    fn unsynced_file_and_entry_vanish_on_crash() {
        let fs = setup();
        let f = file(&fs, "/d/a");
        f.write_all_at(b"hello", 0).unwrap();
        f.sync_data().unwrap();
        fs.crash(CrashMode::DropUnsynced);
        assert_eq!(read_all(&fs, "/d/a"), None, "directory entry was never synced");
    }

    #[test]
    fn synced_bytes_and_entry_survive_and_unsynced_bytes_do_not() {
        let fs = setup();
        let f = file(&fs, "/d/a");
        f.write_all_at(b"hello", 0).unwrap();
        f.sync_data().unwrap();
        fs.sync_dir(Path::new("/d")).unwrap();
        f.write_all_at(b" world", 5).unwrap();
        assert_eq!(read_all(&fs, "/d/a").unwrap(), b"hello world");
        fs.crash(CrashMode::DropUnsynced);
        assert_eq!(read_all(&fs, "/d/a").unwrap(), b"hello");
    }

    #[test]
    fn keep_random_keeps_any_subset_of_sectors_not_only_a_prefix() {
        let mut saw_gap = false;
        for seed in 0..64 {
            let fs = setup();
            let f = file(&fs, "/d/a");
            f.allocate(4 * SECTOR_BYTES).unwrap();
            f.sync_data().unwrap();
            fs.sync_dir(Path::new("/d")).unwrap();
            f.write_all_at(&[1u8; 4 * SECTOR_BYTES as usize], 0).unwrap();
            fs.crash(CrashMode::KeepRandom { seed });
            let bytes = read_all(&fs, "/d/a").unwrap();
            assert_eq!(bytes.len() as u64, 4 * SECTOR_BYTES);
            let kept: Vec<bool> =
                bytes.chunks(SECTOR_BYTES as usize).map(|s| s.iter().all(|&b| b == 1)).collect();
            for (sector, chunk) in bytes.chunks(SECTOR_BYTES as usize).enumerate() {
                assert!(chunk.iter().all(|&b| b == 1) || chunk.iter().all(|&b| b == 0), "{sector}");
            }
            saw_gap |= kept.windows(2).any(|w| !w[0] && w[1]);
        }
        assert!(saw_gap, "some seed must keep a later sector and drop an earlier one");
    }

    #[test]
    fn crash_is_deterministic_for_a_seed() {
        let run = |seed| {
            let fs = setup();
            let f = file(&fs, "/d/a");
            fs.sync_dir(Path::new("/d")).unwrap();
            f.write_all_at(&[9u8; 8 * SECTOR_BYTES as usize], 0).unwrap();
            fs.crash(CrashMode::KeepRandom { seed });
            read_all(&fs, "/d/a").unwrap()
        };
        assert_eq!(run(11), run(11));
    }

    #[test]
    fn power_off_at_call_fails_that_call_and_every_later_one() {
        let fs = setup();
        let f = file(&fs, "/d/a");
        let n = fs.io_calls();
        fs.power_off_at_call(n + 1);
        f.write_all_at(b"a", 0).unwrap();
        assert!(f.sync_data().is_err());
        assert!(fs.list(Path::new("/d")).is_err());
        fs.crash(CrashMode::DropUnsynced);
        assert!(f.len().is_err(), "handles die with the crash");
        assert!(fs.list(Path::new("/d")).unwrap().is_empty());
    }

    #[test]
    fn failed_fsync_loses_sectors_for_good_even_after_a_retry() {
        let mut lost = false;
        for seed in 0..32 {
            let fs = SimFs::new(seed);
            fs.create_dir_all(Path::new("/d")).unwrap();
            fs.sync_dir(Path::new("/")).unwrap();
            let f = file(&fs, "/d/a");
            fs.sync_dir(Path::new("/d")).unwrap();
            f.write_all_at(&[5u8; 16 * SECTOR_BYTES as usize], 0).unwrap();
            fs.eio_at_sync(fs.sync_calls());
            let err = f.sync_data().unwrap_err();
            assert_eq!(err.raw_os_error(), Some(libc::EIO));
            f.sync_data().unwrap();
            fs.crash(CrashMode::DropUnsynced);
            lost |= read_all(&fs, "/d/a").unwrap().iter().any(|&b| b != 5);
        }
        assert!(lost, "a retried fsync must not bring back what the failed one dropped");
    }

    #[test]
    fn enospc_fails_the_planned_write_only() {
        let fs = setup();
        let f = file(&fs, "/d/a");
        fs.enospc_at_write(fs.write_calls() + 1);
        f.write_all_at(b"first", 0).unwrap();
        let err = f.write_all_at(b"second", 5).unwrap_err();
        assert_eq!(err.raw_os_error(), Some(libc::ENOSPC));
        f.write_all_at(b"third", 5).unwrap();
    }

    #[test]
    fn rename_is_atomic_across_a_crash() {
        for seed in 0..32 {
            let fs = setup();
            let f = file(&fs, "/d/a.tmp");
            f.write_all_at(b"new", 0).unwrap();
            f.sync_data().unwrap();
            fs.sync_dir(Path::new("/d")).unwrap();
            fs.rename(Path::new("/d/a.tmp"), Path::new("/d/a")).unwrap();
            fs.crash(CrashMode::KeepRandom { seed });
            let names = fs.list(Path::new("/d")).unwrap();
            assert_eq!(names.len(), 1, "{names:?}");
            let name = &names[0];
            assert_eq!(read_all(&fs, &format!("/d/{name}")).unwrap(), b"new");
        }
    }
}
