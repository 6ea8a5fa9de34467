//! The identity of a local file (size, modification time, a hash of its first and last MiB):
//! what tells a resumed upload that its source is still the file it began with.

use std::fs::File;
use std::io;
use std::os::unix::fs::FileExt as _;
use std::time::UNIX_EPOCH;

use sha2::Digest as _;

use super::state::Identity;

/// How much of each end of the file the sample hashes.
pub const SAMPLE_BYTES: u64 = 1 << 20;

/// The identity of an open file.
pub fn of(file: &File) -> io::Result<Identity> {
    let meta = file.metadata()?;
    let size_bytes = meta.len();
    let (mtime_s, mtime_ns) = match meta.modified()?.duration_since(UNIX_EPOCH) {
        Ok(d) => (i64::try_from(d.as_secs()).unwrap_or(i64::MAX), d.subsec_nanos()),
        Err(before) => {
            let d = before.duration();
            (i64::try_from(d.as_secs()).map(|s| -s).unwrap_or(i64::MIN), d.subsec_nanos())
        }
    };
    let mut h = sha2::Sha256::new();
    h.update(size_bytes.to_le_bytes());
    let head = SAMPLE_BYTES.min(size_bytes);
    h.update(read_at(file, 0, head)?);
    let tail_start = size_bytes.saturating_sub(SAMPLE_BYTES).max(head);
    h.update(read_at(file, tail_start, size_bytes - tail_start)?);
    Ok(Identity { size_bytes, mtime_s, mtime_ns, sample_sha256: h.finalize().into() })
}

/// `len` bytes of `file` from `offset` (exactly; a short file is an error).
pub fn read_at(file: &File, offset: u64, len: u64) -> io::Result<Vec<u8>> {
    let len = usize::try_from(len).map_err(|_| io::Error::other("a read larger than memory"))?;
    let mut buf = vec![0; len];
    file.read_exact_at(&mut buf, offset)?;
    Ok(buf)
}

/// What differs between two identities, in words, or None.
pub fn difference(then: &Identity, now: &Identity) -> Option<String> {
    if then.size_bytes != now.size_bytes {
        return Some(format!("its size went from {} to {} bytes", then.size_bytes, now.size_bytes));
    }
    if (then.mtime_s, then.mtime_ns) != (now.mtime_s, now.mtime_ns) {
        return Some("its modification time changed".into());
    }
    if then.sample_sha256 != now.sample_sha256 {
        return Some("its first or last MiB changed".into());
    }
    None
}
