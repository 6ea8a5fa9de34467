//! The access key pair clients sign with. SigV4 is always on: without configured keys, a pair
//! is generated on first start and kept in the data directory (mode 0600), so restarts keep it.

use std::fs::OpenOptions;
use std::io::{self, Write};
use std::os::unix::fs::OpenOptionsExt;
use std::path::{Path, PathBuf};

use anyhow::{Context, bail};

/// The file in the data directory that holds the generated pair.
pub const KEYS_FILE_NAME: &str = "gateway-keys";
/// Characters of a generated access key (as AWS's: 20 uppercase letters and digits).
const ACCESS_KEY_CHARS: usize = 20;
/// Characters of a generated secret key (as AWS's: 40).
const SECRET_KEY_CHARS: usize = 40;
/// The longest keys file read back: two short lines.
const KEYS_FILE_BYTES_MAX: u64 = 4096;

/// An access key and its secret.
#[derive(Clone, PartialEq, Eq)]
pub struct KeyPair {
    /// The public half, named in every signed request.
    pub access_key: String,
    /// The secret half.
    pub secret_key: String,
}

impl std::fmt::Debug for KeyPair {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("KeyPair").field("access_key", &self.access_key).finish_non_exhaustive()
    }
}

/// Where the keys came from.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum KeySource {
    /// Flags or environment.
    Configured,
    /// The data directory's keys file, written by an earlier start.
    Stored,
    /// Generated now (and stored).
    Generated,
}

/// The path of the keys file in `data_dir`.
pub fn keys_path(data_dir: &Path) -> PathBuf {
    data_dir.join(KEYS_FILE_NAME)
}

/// The configured pair if any, else the stored one, else a new one (stored before it is
/// returned). The caller holds the data directory's lock, so no other server races on the file.
pub fn load_or_generate(
    data_dir: &Path,
    configured: Option<KeyPair>,
) -> anyhow::Result<(KeyPair, KeySource)> {
    if let Some(pair) = configured {
        if pair.access_key.is_empty() || pair.secret_key.is_empty() {
            bail!("the access key and the secret key must not be empty");
        }
        return Ok((pair, KeySource::Configured));
    }
    let path = keys_path(data_dir);
    match read_keys(&path) {
        Ok(pair) => return Ok((pair, KeySource::Stored)),
        Err(e) if e.kind() == io::ErrorKind::NotFound => {}
        Err(e) => return Err(e).with_context(|| format!("reading {}", path.display())),
    }
    let pair = KeyPair {
        access_key: random_text(ACCESS_KEY_CHARS, b"ABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789")?,
        secret_key: random_text(
            SECRET_KEY_CHARS,
            b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/",
        )?,
    };
    write_keys(&path, &pair).with_context(|| format!("writing {}", path.display()))?;
    Ok((pair, KeySource::Generated))
}

fn read_keys(path: &Path) -> io::Result<KeyPair> {
    let file = std::fs::File::open(path)?;
    let mut text = String::new();
    io::Read::read_to_string(&mut io::Read::take(file, KEYS_FILE_BYTES_MAX), &mut text)?;
    let field = |name: &str| {
        text.lines()
            .find_map(|line| line.strip_prefix(name)?.strip_prefix('='))
            .map(|v| v.trim().to_owned())
            .filter(|v| !v.is_empty())
    };
    match (field("access_key"), field("secret_key")) {
        (Some(access_key), Some(secret_key)) => Ok(KeyPair { access_key, secret_key }),
        _ => Err(io::Error::new(
            io::ErrorKind::InvalidData,
            "expected the lines access_key=... and secret_key=...",
        )),
    }
}

/// Writes the pair to a new file readable by its owner alone, synced, then syncs the directory,
/// so a pair that was printed survives a crash.
fn write_keys(path: &Path, pair: &KeyPair) -> io::Result<()> {
    let mut file = OpenOptions::new().write(true).create_new(true).mode(0o600).open(path)?;
    writeln!(file, "access_key={}", pair.access_key)?;
    writeln!(file, "secret_key={}", pair.secret_key)?;
    file.sync_all()?;
    if let Some(dir) = path.parent() {
        std::fs::File::open(dir)?.sync_all()?;
    }
    Ok(())
}

/// `len` characters drawn uniformly from `alphabet` (rejection sampling: no modulo bias).
fn random_text(len: usize, alphabet: &[u8]) -> anyhow::Result<String> {
    let size = alphabet.len();
    anyhow::ensure!((1..=256).contains(&size), "alphabet of 1..=256 characters");
    // The largest multiple of `size` within a byte's 256 values.
    let limit = 256 - 256 % size;
    let mut out = String::with_capacity(len);
    let mut buf = [0u8; 64];
    while out.len() < len {
        getrandom::fill(&mut buf).map_err(|e| anyhow::anyhow!("getrandom: {e}"))?;
        for b in buf {
            let b = usize::from(b);
            if b < limit
                && out.len() < len
                && let Some(c) = alphabet.get(b % size)
            {
                out.push(char::from(*c));
            }
        }
    }
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::os::unix::fs::PermissionsExt;

    #[test]
    fn generated_keys_are_stored_private_and_reused() {
        let dir = tempfile::tempdir().unwrap();
        let (first, source) = load_or_generate(dir.path(), None).unwrap();
        assert_eq!(source, KeySource::Generated);
        assert_eq!(first.access_key.len(), ACCESS_KEY_CHARS);
        assert_eq!(first.secret_key.len(), SECRET_KEY_CHARS);
        let mode = std::fs::metadata(keys_path(dir.path())).unwrap().permissions().mode();
        assert_eq!(mode & 0o777, 0o600);
        let (again, source) = load_or_generate(dir.path(), None).unwrap();
        assert_eq!(source, KeySource::Stored);
        assert_eq!(again, first);
    }

    #[test]
    fn configured_keys_win_and_are_not_stored() {
        let dir = tempfile::tempdir().unwrap();
        let pair = KeyPair { access_key: "AK".into(), secret_key: "SK".into() };
        let (got, source) = load_or_generate(dir.path(), Some(pair.clone())).unwrap();
        assert_eq!((got, source), (pair, KeySource::Configured));
        assert!(!keys_path(dir.path()).exists());
    }

    #[test]
    fn a_damaged_keys_file_is_an_error_not_a_new_pair() {
        let dir = tempfile::tempdir().unwrap();
        std::fs::write(keys_path(dir.path()), "garbage").unwrap();
        assert!(load_or_generate(dir.path(), None).is_err());
    }
}
