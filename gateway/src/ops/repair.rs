//! `tessera repair DIR`: the explicit way past a corrupt log, which `open` (and so the server)
//! refuses to pass. It cuts the log at its first corruption, keeping a copy of every file it
//! cuts or sets aside (`<name>.broken`), and says what it removed; then it checks, reading
//! only, that the directory opens. Without corruption it changes nothing.
//!
//! ```text
//! cut DIR/wal/00000000000000000001.wal at offset 4096: removed 61440 bytes, LSN 17 on (frame crc mismatch: ...); the file as it was is kept as DIR/wal/00000000000000000001.wal.broken
//! the log now ends at LSN 16
//! the directory opens: LSNs up to 16, 3 uploads in progress, 2 objects
//! ```

use std::path::Path;

use anyhow::bail;
use tessera_engine::{Engine, WAL_DIR};
use tessera_wal::StdFs;

use super::overlay::OverlayFs;
use super::{engine_config, lock_dir};

/// Runs `tessera repair`.
pub fn run(dir: &Path) -> anyhow::Result<()> {
    let _lock = lock_dir(dir)?;
    let wal_dir = dir.join(WAL_DIR);
    let report = tessera_wal::repair(&StdFs::shared(), &wal_dir)?;
    if report.cuts.is_empty() {
        println!("no corruption in the log of {}: nothing changed", dir.display());
    }
    for cut in &report.cuts {
        let what = if cut.offset_bytes == 0 {
            format!("set aside {} whole", cut.path.display())
        } else {
            format!("cut {} at offset {}", cut.path.display(), cut.offset_bytes)
        };
        println!(
            "{what}: removed {} bytes, LSN {} on ({}); the file as it was is kept as {}",
            cut.bytes_removed,
            cut.first_lsn_removed.0,
            cut.reason,
            cut.kept_copy.display()
        );
    }
    if let Some(first) = report.cuts.first() {
        println!("the log now ends at LSN {}", first.first_lsn_removed.0.saturating_sub(1));
    }
    // Read only: what the next open (the server's) will find.
    match Engine::open_with_fs(OverlayFs::shared(), dir, engine_config()) {
        Ok(engine) => {
            let stats = engine.stats();
            println!(
                "the directory opens: LSNs up to {}, {} uploads in progress, {} objects",
                engine.open_report().wal.lsn_last.0,
                stats.live_uploads,
                stats.objects
            );
            if let Some(torn) = &engine.open_report().wal.torn_tail {
                println!(
                    "note: {} offset {}: a torn tail of {} bytes (an unacknowledged write), which \
                     the next open zeroes",
                    torn.path.display(),
                    torn.offset_bytes,
                    torn.bytes
                );
            }
            Ok(())
        }
        Err(e) => {
            println!("the directory still does not open: {e}");
            bail!("{} does not open after repair: {e}", dir.display())
        }
    }
}
