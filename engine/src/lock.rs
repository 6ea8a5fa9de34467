//! The data directory's lock: one process (and one `Engine`) at a time, because an engine maps
//! and truncates its files and nobody else may.

use std::fs::{File, OpenOptions, TryLockError};
use std::io::{Read as _, Seek as _, SeekFrom, Write as _};
use std::path::Path;

use crate::error::EngineError;

/// The lock file's name in the data directory.
pub const LOCK_FILE_NAME: &str = "LOCK";

/// An exclusive OS lock (`flock`) on `<dir>/LOCK`, held while this value lives. The file holds
/// the holder's process id, for the error a second opener gets.
#[derive(Debug)]
pub struct DirLock {
    _file: File,
}

impl DirLock {
    /// Takes the lock, or fails naming its holder. A lock held by another handle in this same
    /// process fails too (flock locks are per open file).
    pub fn acquire(dir: &Path) -> Result<DirLock, EngineError> {
        let path = dir.join(LOCK_FILE_NAME);
        let io = |op, source| EngineError::Io { path: path.clone(), op, source };
        std::fs::create_dir_all(dir).map_err(|e| io("create_dir_all", e))?;
        let mut file = OpenOptions::new()
            .read(true)
            .write(true)
            .create(true)
            .truncate(false)
            .open(&path)
            .map_err(|e| io("open", e))?;
        match file.try_lock() {
            Ok(()) => {}
            Err(TryLockError::WouldBlock) => {
                let mut holder = String::new();
                let _ = file.read_to_string(&mut holder);
                let holder = match holder.trim() {
                    "" => "locked by another process".to_owned(),
                    pid => format!("locked by process {pid}"),
                };
                return Err(EngineError::Locked { path, holder });
            }
            Err(TryLockError::Error(e)) => return Err(io("lock", e)),
        }
        file.set_len(0).map_err(|e| io("truncate", e))?;
        file.seek(SeekFrom::Start(0)).map_err(|e| io("seek", e))?;
        writeln!(file, "{}", std::process::id()).map_err(|e| io("write", e))?;
        Ok(DirLock { _file: file })
    }
}
