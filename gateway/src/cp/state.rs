//! The state file of a transfer in progress (docs/format.md §13 "Transfer state file"): what
//! `tessera cp` needs to resume an upload or a download after it stopped, for any reason.
//!
//! One small file per transfer, named after what it moves (direction, endpoint, bucket, key,
//! local path), so that running the same command again finds it. It is rewritten whole and
//! atomically (temporary file, fsync, rename, fsync of the directory): a crash leaves either
//! the old file or the new one. A damaged file is an error naming it, never a guess.

use std::collections::BTreeMap;
use std::fmt;
use std::fs::{self, File};
use std::io::{self, Write};
use std::path::{Path, PathBuf};

use sha2::Digest as _;

use super::checksum::Algorithm;
use super::plan::PART_COUNT_MAX;

/// docs/format.md §13: the first bytes of every state file.
pub const STATE_MAGIC: [u8; 8] = *b"tssr.cps";
/// docs/format.md §13: the version this build writes and reads.
pub const STATE_FORMAT_VERSION: u32 = 1;
/// Magic, version and body length.
pub const STATE_HEADER_BYTES: usize = 16;
const _: () = assert!(STATE_HEADER_BYTES == 8 + 4 + 4);
/// The fixed fields at the start of the body.
pub const STATE_FIXED_BYTES: usize = 80;
const _: () = assert!(STATE_FIXED_BYTES == 1 + 1 + 2 + 4 + 8 + 8 + 8 + 8 + 4 + 4 + 32);
/// A part record without its checksum.
pub const PART_RECORD_FIXED_BYTES: usize = 32;
const _: () = assert!(PART_RECORD_FIXED_BYTES == 4 + 4 + 8 + 16);
/// The longest string field (a key is at most 1,024 bytes; a path at most 4,096).
pub const STATE_STRING_BYTES_MAX: usize = 4096;
/// The most part records (S3's part count).
pub const STATE_PARTS_MAX: usize = 10_000;
const _: () = assert!(STATE_PARTS_MAX as u64 == PART_COUNT_MAX);
/// The longest body: the fixed fields, six strings and every part with a SHA-256.
pub const STATE_BODY_BYTES_MAX: usize = STATE_FIXED_BYTES
    + 6 * (4 + STATE_STRING_BYTES_MAX)
    + STATE_PARTS_MAX * (PART_RECORD_FIXED_BYTES + 32);
const _: () = assert!(STATE_BODY_BYTES_MAX < u32::MAX as usize);

/// What a transfer moves.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Direction {
    /// A local file to an object (a multipart upload).
    Upload,
    /// An object to a local file.
    Download,
}

impl Direction {
    fn code(self) -> u8 {
        match self {
            Direction::Upload => 1,
            Direction::Download => 2,
        }
    }

    /// The prefix of its state files' names.
    pub fn word(self) -> &'static str {
        match self {
            Direction::Upload => "up",
            Direction::Download => "down",
        }
    }
}

/// What a local file was when the transfer began: if any of it differs, the file changed.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Default)]
pub struct Identity {
    /// Its size.
    pub size_bytes: u64,
    /// Its modification time, seconds since the epoch (may be negative).
    pub mtime_s: i64,
    /// The nanoseconds of its modification time.
    pub mtime_ns: u32,
    /// SHA-256 of its first and its last MiB (see `identity::sample`).
    pub sample_sha256: [u8; 32],
}

/// A part (upload) or a range (download) the other side has acknowledged.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct PartRecord {
    /// Its length.
    pub size_bytes: u64,
    /// Its MD5 (an upload part's ETag).
    pub md5: [u8; 16],
    /// Its additional checksum, the algorithm's width.
    pub checksum: Vec<u8>,
}

/// A state file's contents.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct State {
    /// Upload or download.
    pub direction: Direction,
    /// The checksum the parts carry.
    pub algorithm: Algorithm,
    /// The size of every part but the last (download: of every range; 0 when the download
    /// goes by the object's own parts).
    pub part_bytes: u64,
    /// When the transfer began, ms since the epoch.
    pub created_ms: u64,
    /// Upload: the source file. Download: the object (size only).
    pub source: Identity,
    /// The endpoint URL (or `aws:<region>`).
    pub endpoint: String,
    /// The bucket.
    pub bucket: String,
    /// The key.
    pub key: String,
    /// Upload: the multipart upload's id. Download: empty.
    pub upload_id: String,
    /// The local file, absolute.
    pub local_path: String,
    /// Download: the object's ETag when the download began. Upload: empty.
    pub remote_etag: String,
    /// The acknowledged parts by number (download: range index + 1).
    pub parts: BTreeMap<u32, PartRecord>,
}

/// Why a state file could not be read.
#[derive(Debug, thiserror::Error)]
pub enum StateError {
    /// Reading, writing or listing failed.
    #[error("{}: {op} failed", .path.display())]
    Io {
        /// The file.
        path: PathBuf,
        /// What was being done.
        op: &'static str,
        /// The error.
        #[source]
        source: io::Error,
    },
    /// Another `tessera cp` is running the same transfer (it holds the lock file).
    #[error(
        "{}: another tessera cp is running this transfer (it holds this lock); wait for it, or \
         stop it first",
        .path.display()
    )]
    Busy {
        /// The lock file.
        path: PathBuf,
    },
    /// The bytes are not a state file this build reads.
    #[error(
        "{}: the state file is damaged ({damage}); delete it, or run the same command with \
         --restart, to start the transfer over",
        .path.display()
    )]
    Damaged {
        /// The file.
        path: PathBuf,
        /// What is wrong with it.
        damage: Damage,
    },
}

/// What is wrong with a damaged state file.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Damage {
    /// Shorter than a header and a CRC.
    Short {
        /// Its length.
        len_bytes: usize,
    },
    /// Not `tssr.cps`.
    BadMagic,
    /// A version this build does not read.
    UnsupportedVersion {
        /// The version found.
        version: u32,
    },
    /// The body length disagrees with the file length.
    Length {
        /// The body length the header states.
        body_bytes: u64,
        /// The file's length.
        file_bytes: usize,
    },
    /// The CRC does not match.
    Crc {
        /// The CRC stored.
        stored: u32,
        /// The CRC of the bytes.
        computed: u32,
    },
    /// A field is out of range.
    Field {
        /// Which field.
        field: &'static str,
    },
}

impl fmt::Display for Damage {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Damage::Short { len_bytes } => write!(f, "only {len_bytes} bytes long"),
            Damage::BadMagic => write!(f, "not a tessera cp state file"),
            Damage::UnsupportedVersion { version } => {
                write!(f, "unsupported format version {version}")
            }
            Damage::Length { body_bytes, file_bytes } => {
                write!(f, "a body of {body_bytes} bytes does not fit a file of {file_bytes}")
            }
            Damage::Crc { stored, computed } => {
                write!(f, "crc mismatch: stored {stored:#010x}, computed {computed:#010x}")
            }
            Damage::Field { field } => write!(f, "field {field} is out of range"),
        }
    }
}

/// A state file found by [`StateDir::list`], and what reading it gave.
pub type Listed = (PathBuf, Result<State, StateError>);

/// The directory of state files and the name of one.
#[derive(Clone, Debug)]
pub struct StateDir {
    /// The directory (created when first written to).
    pub path: PathBuf,
}

impl StateDir {
    /// `--state-dir`, else `$XDG_CACHE_HOME/tessera/cp`, else `~/.cache/tessera/cp`.
    pub fn locate(flag: Option<PathBuf>) -> StateDir {
        let path = flag.unwrap_or_else(|| {
            let cache = std::env::var_os("XDG_CACHE_HOME")
                .filter(|v| !v.is_empty())
                .map(PathBuf::from)
                .or_else(|| std::env::var_os("HOME").map(|h| PathBuf::from(h).join(".cache")))
                .unwrap_or_else(std::env::temp_dir);
            cache.join("tessera").join("cp")
        });
        StateDir { path }
    }

    /// The state file of a transfer: `up-<16 hex>.state` or `down-<16 hex>.state`, the hex
    /// from SHA-256 of what the transfer moves.
    pub fn file_for(
        &self,
        direction: Direction,
        endpoint: &str,
        bucket: &str,
        key: &str,
        local: &Path,
    ) -> PathBuf {
        let mut h = sha2::Sha256::new();
        for field in [endpoint.as_bytes(), bucket.as_bytes(), key.as_bytes()] {
            h.update(u64::try_from(field.len()).unwrap_or(u64::MAX).to_le_bytes());
            h.update(field);
        }
        h.update(local.as_os_str().as_encoded_bytes());
        let digest = h.finalize();
        let name =
            format!("{}-{}.state", direction.word(), hex::encode(digest.get(..8).unwrap_or(&[])));
        self.path.join(name)
    }

    /// Every state file in the directory, read (or the error naming it), by file name.
    pub fn list(&self) -> Result<Vec<Listed>, StateError> {
        let entries = match fs::read_dir(&self.path) {
            Ok(e) => e,
            Err(e) if e.kind() == io::ErrorKind::NotFound => return Ok(Vec::new()),
            Err(source) => {
                return Err(StateError::Io { path: self.path.clone(), op: "listing", source });
            }
        };
        let mut out = Vec::new();
        for entry in entries {
            let entry = entry.map_err(|source| StateError::Io {
                path: self.path.clone(),
                op: "listing",
                source,
            })?;
            let path = entry.path();
            if path.extension().is_some_and(|e| e == "state") {
                let state = State::load(&path).and_then(|s| {
                    s.ok_or_else(|| StateError::Io {
                        path: path.clone(),
                        op: "reading",
                        source: io::ErrorKind::NotFound.into(),
                    })
                });
                out.push((path, state));
            }
        }
        out.sort_by(|a, b| a.0.cmp(&b.0));
        Ok(out)
    }
}

impl State {
    /// Reads a state file: `None` if there is none.
    pub fn load(path: &Path) -> Result<Option<State>, StateError> {
        let bytes = match fs::read(path) {
            Ok(b) => b,
            Err(e) if e.kind() == io::ErrorKind::NotFound => return Ok(None),
            Err(source) => return Err(StateError::Io { path: path.into(), op: "reading", source }),
        };
        decode(&bytes)
            .map(Some)
            .map_err(|damage| StateError::Damaged { path: path.to_path_buf(), damage })
    }

    /// Writes the state to `path` atomically: a temporary file beside it, fsync, rename over
    /// `path`, fsync of the directory.
    pub fn save(&self, path: &Path) -> Result<(), StateError> {
        let io = |op: &'static str| {
            move |source: io::Error| StateError::Io { path: path.to_path_buf(), op, source }
        };
        let bytes = self.encode();
        // Invariant: what we write reads back as what we have (checked before it reaches disk).
        debug_assert_eq!(decode(&bytes).as_ref(), Ok(self));
        let dir = path.parent().unwrap_or(Path::new("."));
        fs::create_dir_all(dir).map_err(io("creating the state directory"))?;
        // One temporary name per state file: the lock (`StateLock`) keeps a second writer out,
        // and a temporary file a crash left behind is simply written over.
        let tmp = with_suffix(path, ".tmp");
        let mut file = File::create(&tmp).map_err(io("creating a temporary state file"))?;
        file.write_all(&bytes).map_err(io("writing the state file"))?;
        file.sync_all().map_err(io("syncing the state file"))?;
        drop(file);
        fs::rename(&tmp, path).map_err(io("renaming the state file into place"))?;
        sync_dir(dir).map_err(io("syncing the state directory"))
    }

    /// Removes the state file (the transfer is over), and syncs the directory.
    pub fn remove(path: &Path) -> Result<(), StateError> {
        match fs::remove_file(path) {
            Ok(()) => {}
            Err(e) if e.kind() == io::ErrorKind::NotFound => return Ok(()),
            Err(source) => {
                return Err(StateError::Io { path: path.into(), op: "removing", source });
            }
        }
        let dir = path.parent().unwrap_or(Path::new("."));
        sync_dir(dir).map_err(|source| StateError::Io {
            path: path.into(),
            op: "syncing the state directory",
            source,
        })
    }

    /// The file's bytes (docs/format.md §13).
    pub fn encode(&self) -> Vec<u8> {
        let mut body = Vec::with_capacity(256 + self.parts.len() * 64);
        body.push(self.direction.code());
        body.push(self.algorithm.code());
        body.extend_from_slice(&[0, 0]);
        body.extend_from_slice(&len_u32(self.parts.len()).to_le_bytes());
        body.extend_from_slice(&self.part_bytes.to_le_bytes());
        body.extend_from_slice(&self.created_ms.to_le_bytes());
        body.extend_from_slice(&self.source.size_bytes.to_le_bytes());
        body.extend_from_slice(&self.source.mtime_s.to_le_bytes());
        body.extend_from_slice(&self.source.mtime_ns.to_le_bytes());
        body.extend_from_slice(&[0; 4]);
        body.extend_from_slice(&self.source.sample_sha256);
        debug_assert_eq!(body.len(), STATE_FIXED_BYTES);
        for s in self.strings() {
            body.extend_from_slice(&len_u32(s.len()).to_le_bytes());
            body.extend_from_slice(s.as_bytes());
        }
        for (number, part) in &self.parts {
            // Invariant: every checksum is the algorithm's width (the decoder relies on it).
            assert_eq!(part.checksum.len(), self.algorithm.width_bytes());
            body.extend_from_slice(&number.to_le_bytes());
            body.extend_from_slice(&[0; 4]);
            body.extend_from_slice(&part.size_bytes.to_le_bytes());
            body.extend_from_slice(&part.md5);
            body.extend_from_slice(&part.checksum);
        }
        let mut out = Vec::with_capacity(STATE_HEADER_BYTES + body.len() + 4);
        out.extend_from_slice(&STATE_MAGIC);
        out.extend_from_slice(&STATE_FORMAT_VERSION.to_le_bytes());
        out.extend_from_slice(&len_u32(body.len()).to_le_bytes());
        out.extend_from_slice(&body);
        let crc = crc32fast::hash(&out);
        out.extend_from_slice(&crc.to_le_bytes());
        out
    }

    fn strings(&self) -> [&String; 6] {
        [
            &self.endpoint,
            &self.bucket,
            &self.key,
            &self.upload_id,
            &self.local_path,
            &self.remote_etag,
        ]
    }
}

/// `path` with `suffix` appended to its file name.
fn with_suffix(path: &Path, suffix: &str) -> PathBuf {
    let mut name = path.as_os_str().to_owned();
    name.push(suffix);
    PathBuf::from(name)
}

/// The lock of one transfer, held while it runs: `<state file>.lock`, locked with `flock`
/// (`File::try_lock`). A second `tessera cp` of the same transfer fails at once with
/// [`StateError::Busy`] instead of racing this one over the same upload and state file. The
/// lock dies with the process, whatever kills it; the file is removed when the holder is done.
pub struct StateLock {
    path: PathBuf,
    _file: File,
}

impl StateLock {
    /// Takes the lock of the transfer whose state file is `state_path`.
    pub fn acquire(state_path: &Path) -> Result<StateLock, StateError> {
        let path = with_suffix(state_path, ".lock");
        let io = |op: &'static str| {
            let path = path.clone();
            move |source: io::Error| StateError::Io { path, op, source }
        };
        let dir = path.parent().unwrap_or(Path::new("."));
        fs::create_dir_all(dir).map_err(io("creating the state directory"))?;
        let file = fs::OpenOptions::new()
            .create(true)
            .truncate(false)
            .write(true)
            .open(&path)
            .map_err(io("opening the lock file"))?;
        match file.try_lock() {
            Ok(()) => {}
            Err(fs::TryLockError::WouldBlock) => return Err(StateError::Busy { path }),
            Err(fs::TryLockError::Error(source)) => {
                return Err(StateError::Io { path, op: "locking", source });
            }
        }
        // A holder that finished removed the file after we opened it: our lock is on a file
        // no one else will open, so the transfer may be running under a new one.
        use std::os::unix::fs::MetadataExt as _;
        let ours = file.metadata().map_err(io("reading the lock file"))?;
        match fs::metadata(&path) {
            Ok(now) if now.ino() == ours.ino() && now.dev() == ours.dev() => {}
            _ => return Err(StateError::Busy { path }),
        }
        Ok(StateLock { path, _file: file })
    }
}

impl Drop for StateLock {
    fn drop(&mut self) {
        // Removed while still locked, so a process that opened it meanwhile sees Busy (or a
        // different inode) rather than a lock on a transfer that is over.
        let _ = fs::remove_file(&self.path);
    }
}

/// A length that the limits keep within u32 (state files are far below 4 GiB).
fn len_u32(len: usize) -> u32 {
    u32::try_from(len).unwrap_or(u32::MAX)
}

fn sync_dir(dir: &Path) -> io::Result<()> {
    File::open(dir)?.sync_all()
}

/// Reads fields off the body, checking each length against what is left.
struct Reader<'a> {
    rest: &'a [u8],
}

impl<'a> Reader<'a> {
    fn take(&mut self, n: usize, field: &'static str) -> Result<&'a [u8], Damage> {
        if n > self.rest.len() {
            return Err(Damage::Field { field });
        }
        let (head, tail) = self.rest.split_at(n);
        self.rest = tail;
        Ok(head)
    }

    fn array<const N: usize>(&mut self, field: &'static str) -> Result<[u8; N], Damage> {
        self.take(N, field)?.try_into().map_err(|_| Damage::Field { field })
    }

    fn u32(&mut self, field: &'static str) -> Result<u32, Damage> {
        Ok(u32::from_le_bytes(self.array(field)?))
    }

    fn u64(&mut self, field: &'static str) -> Result<u64, Damage> {
        Ok(u64::from_le_bytes(self.array(field)?))
    }

    /// `n` reserved bytes, which must be zero (so that a later version can give them meaning).
    fn reserved(&mut self, n: usize) -> Result<(), Damage> {
        if self.take(n, "reserved")?.iter().all(|b| *b == 0) {
            Ok(())
        } else {
            Err(Damage::Field { field: "reserved" })
        }
    }

    fn string(&mut self, field: &'static str) -> Result<String, Damage> {
        let len = usize::try_from(self.u32(field)?).map_err(|_| Damage::Field { field })?;
        if len > STATE_STRING_BYTES_MAX {
            return Err(Damage::Field { field });
        }
        String::from_utf8(self.take(len, field)?.to_vec()).map_err(|_| Damage::Field { field })
    }
}

/// Decodes a state file's bytes (docs/format.md §13).
pub fn decode(bytes: &[u8]) -> Result<State, Damage> {
    let short = Damage::Short { len_bytes: bytes.len() };
    if bytes.len() < STATE_HEADER_BYTES + 4 {
        return Err(short);
    }
    let mut header = Reader { rest: bytes };
    if header.array::<8>("magic")? != STATE_MAGIC {
        return Err(Damage::BadMagic);
    }
    let version = header.u32("format_version")?;
    let body_bytes = header.u32("body_bytes")?;
    let body_len = usize::try_from(body_bytes).unwrap_or(usize::MAX);
    if body_len > STATE_BODY_BYTES_MAX
        || STATE_HEADER_BYTES.saturating_add(body_len).saturating_add(4) != bytes.len()
    {
        return Err(Damage::Length { body_bytes: body_bytes.into(), file_bytes: bytes.len() });
    }
    let (covered, crc) = bytes.split_at(bytes.len() - 4);
    let stored = u32::from_le_bytes(crc.try_into().map_err(|_| short)?);
    let computed = crc32fast::hash(covered);
    if stored != computed {
        return Err(Damage::Crc { stored, computed });
    }
    // The version is trusted only once the CRC says the bytes are what was written.
    if version != STATE_FORMAT_VERSION {
        return Err(Damage::UnsupportedVersion { version });
    }
    let mut r = Reader { rest: covered.get(STATE_HEADER_BYTES..).unwrap_or(&[]) };
    let direction = match r.array::<1>("direction")? {
        [1] => Direction::Upload,
        [2] => Direction::Download,
        _ => return Err(Damage::Field { field: "direction" }),
    };
    let [code] = r.array::<1>("algorithm")?;
    let algorithm = Algorithm::from_code(code).ok_or(Damage::Field { field: "algorithm" })?;
    r.reserved(2)?;
    let part_count = usize::try_from(r.u32("part_count")?).unwrap_or(usize::MAX);
    if part_count > STATE_PARTS_MAX {
        return Err(Damage::Field { field: "part_count" });
    }
    let part_bytes = r.u64("part_bytes")?;
    let created_ms = r.u64("created_ms")?;
    let source = Identity {
        size_bytes: r.u64("source_size_bytes")?,
        mtime_s: i64::from_le_bytes(r.array("source_mtime_s")?),
        mtime_ns: match r.u32("source_mtime_ns")? {
            ns if ns < 1_000_000_000 => ns,
            _ => return Err(Damage::Field { field: "source_mtime_ns" }),
        },
        sample_sha256: {
            r.reserved(4)?;
            r.array("sample_sha256")?
        },
    };
    let mut strings = [const { String::new() }; 6];
    let names = ["endpoint", "bucket", "key", "upload_id", "local_path", "remote_etag"];
    for (slot, name) in strings.iter_mut().zip(names) {
        *slot = r.string(name)?;
    }
    let [endpoint, bucket, key, upload_id, local_path, remote_etag] = strings;
    let mut parts = BTreeMap::new();
    let mut previous = 0u32;
    for _ in 0..part_count {
        let number = r.u32("part_number")?;
        if number <= previous || u64::from(number) > PART_COUNT_MAX {
            return Err(Damage::Field { field: "part_number" });
        }
        previous = number;
        r.reserved(4)?;
        let size_bytes = r.u64("part_size_bytes")?;
        let md5 = r.array("part_md5")?;
        let checksum = r.take(algorithm.width_bytes(), "part_checksum")?.to_vec();
        parts.insert(number, PartRecord { size_bytes, md5, checksum });
    }
    if !r.rest.is_empty() {
        return Err(Damage::Field { field: "body_bytes" });
    }
    Ok(State {
        direction,
        algorithm,
        part_bytes,
        created_ms,
        source,
        endpoint,
        bucket,
        key,
        upload_id,
        local_path,
        remote_etag,
        parts,
    })
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used, clippy::indexing_slicing, clippy::cast_possible_truncation)]

    use proptest::prelude::*;

    use super::*;

    fn sample(parts: u32) -> State {
        State {
            direction: Direction::Upload,
            algorithm: Algorithm::Crc32c,
            part_bytes: 8 << 20,
            created_ms: 1_700_000_000_000,
            source: Identity {
                size_bytes: 1 << 30,
                mtime_s: 1_700_000_000,
                mtime_ns: 5,
                sample_sha256: [7; 32],
            },
            endpoint: "http://127.0.0.1:9000".into(),
            bucket: "b".into(),
            key: "k/ü".into(),
            upload_id: "abc".into(),
            local_path: "/tmp/f".into(),
            remote_etag: String::new(),
            parts: (1..=parts)
                .map(|n| {
                    (
                        n,
                        PartRecord {
                            size_bytes: 8 << 20,
                            md5: [n as u8; 16],
                            checksum: vec![1, 2, 3, 4],
                        },
                    )
                })
                .collect(),
        }
    }

    #[test]
    fn a_state_reads_back_as_written() {
        for n in [0, 1, 3, 10_000] {
            let s = sample(n);
            assert_eq!(decode(&s.encode()), Ok(s));
        }
    }

    /// docs/format.md §13.4: an upload of a 12 MiB file in 8 MiB parts, part 1 acknowledged.
    fn worked_example() -> State {
        State {
            direction: Direction::Upload,
            algorithm: Algorithm::Crc32c,
            part_bytes: 8 << 20,
            created_ms: 1_700_000_000_000,
            source: Identity {
                size_bytes: 12 << 20,
                mtime_s: 1_700_000_000,
                mtime_ns: 0,
                sample_sha256: [0x11; 32],
            },
            endpoint: "http://127.0.0.1:9000".into(),
            bucket: "photos".into(),
            key: "big.iso".into(),
            upload_id: "u1".into(),
            local_path: "/home/ana/big.iso".into(),
            remote_etag: String::new(),
            parts: [(
                1,
                PartRecord { size_bytes: 8 << 20, md5: [0xaa; 16], checksum: vec![0xcc; 4] },
            )]
            .into(),
        }
    }

    #[test]
    fn the_worked_example_of_format_md_decodes() {
        // The hex dump of format.md, byte for byte.
        let hex = "747373722e63707301000000c100000001020000010000000000800000000000\
                   0068e5cf8b0100000000c0000000000000f15365000000000000000000000000\
                   1111111111111111111111111111111111111111111111111111111111111111\
                   15000000687474703a2f2f3132372e302e302e313a3930303006000000706\
                   86f746f73070000006269672e69736f020000007531110000002f686f6d652f\
                   616e612f6269672e69736f000000000100000000000000000080000000000\
                   0aaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaacccccccc7692245f";
        let bytes = worked_example().encode();
        assert_eq!(hex::encode(&bytes), hex);
        assert_eq!(bytes.len(), 213);
        assert_eq!(decode(&bytes), Ok(worked_example()));
    }

    #[test]
    fn a_saved_state_survives_a_reload_and_a_damaged_one_names_its_file() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("sub").join("up-x.state");
        let s = sample(5);
        s.save(&path).unwrap();
        assert_eq!(State::load(&path).unwrap(), Some(s.clone()));
        let mut bytes = fs::read(&path).unwrap();
        bytes[40] ^= 1;
        fs::write(&path, &bytes).unwrap();
        let e = State::load(&path).unwrap_err();
        let text = e.to_string();
        assert!(text.contains("up-x.state") && text.contains("crc mismatch"), "{text}");
        State::remove(&path).unwrap();
        assert_eq!(State::load(&path).unwrap(), None);
    }

    #[test]
    fn a_second_holder_of_a_transfer_is_refused_until_the_first_is_done() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("up-x.state");
        let first = StateLock::acquire(&path).unwrap();
        let e = StateLock::acquire(&path).err().unwrap();
        assert!(matches!(e, StateError::Busy { .. }), "{e}");
        drop(first);
        assert!(!dir.path().join("up-x.state.lock").exists());
        let _again = StateLock::acquire(&path).unwrap();
    }

    #[test]
    fn a_newer_version_is_refused_by_name() {
        let mut bytes = sample(0).encode();
        bytes[8] = 2;
        let n = bytes.len() - 4;
        let crc = crc32fast::hash(&bytes[..n]);
        bytes[n..].copy_from_slice(&crc.to_le_bytes());
        assert_eq!(decode(&bytes), Err(Damage::UnsupportedVersion { version: 2 }));
    }

    proptest! {
        /// Any cut or any flipped byte is reported, never a panic and never a different state.
        #[test]
        fn every_damage_is_reported(parts in 0u32..20, at in any::<prop::sample::Index>(), bit in 0u8..8, cut in any::<bool>()) {
            let s = sample(parts);
            let mut bytes = s.encode();
            let i = at.index(bytes.len());
            if cut {
                bytes.truncate(i);
            } else {
                bytes[i] ^= 1 << bit;
            }
            prop_assert!(decode(&bytes).is_err());
        }
    }
}
