//! `tessera gc DIR`, `tessera compact DIR`, `tessera checkpoint DIR`: maintenance the server
//! also does on its own (expiry on a timer, checkpoints by log volume), run now, offline.
//!
//! ```text
//! $ tessera gc DIR
//! expired 2 uploads, freed 10.0 MiB (10485760 bytes)
//! $ tessera compact DIR
//! compacted 1 segment: moved 3 payloads, reclaimed 12.0 MiB (12582912 bytes)
//! $ tessera checkpoint DIR
//! checkpoint at LSN 42: 1.2 KiB (1234 bytes), written in 3 ms
//! ```

use std::path::Path;

use anyhow::bail;
use tessera_engine::Engine;

use super::{fmt, open_writable};

/// What opening repaired, said once (on stderr: stdout carries the command's report).
fn report_open(engine: &Engine) {
    let open = engine.open_report();
    if let Some(torn) = &open.wal.torn_tail {
        eprintln!(
            "note: opening zeroed a torn tail of {} bytes at {} offset {} (an unacknowledged write)",
            torn.bytes,
            torn.path.display(),
            torn.offset_bytes
        );
    }
    for skipped in &open.wal.skipped_checkpoints {
        eprintln!(
            "note: opening set aside a damaged checkpoint: {} offset {}: {}",
            skipped.path.display(),
            skipped.offset_bytes,
            skipped.reason
        );
    }
}

/// Runs `tessera gc`: aborts every upload whose expiry has passed.
pub fn gc(dir: &Path) -> anyhow::Result<()> {
    let opened = open_writable(dir)?;
    report_open(&opened.engine);
    let report = opened.engine.expire_due()?;
    println!(
        "expired {} upload{}, freed {} ({} bytes)",
        report.uploads,
        if report.uploads == 1 { "" } else { "s" },
        fmt::bytes(report.bytes_freed),
        report.bytes_freed
    );
    Ok(())
}

/// Runs `tessera compact`: rewrites the payload segments whose live fraction is low.
pub fn compact(dir: &Path) -> anyhow::Result<()> {
    let opened = open_writable(dir)?;
    report_open(&opened.engine);
    let report = opened.engine.compact()?;
    println!(
        "compacted {} segment{}: moved {} payload{}, reclaimed {} ({} bytes)",
        report.segments_compacted,
        if report.segments_compacted == 1 { "" } else { "s" },
        report.payloads_moved,
        if report.payloads_moved == 1 { "" } else { "s" },
        fmt::bytes(report.bytes_reclaimed),
        report.bytes_reclaimed
    );
    for (segment, error) in &report.skipped {
        println!("skipped segment {}: {error}", segment.0);
    }
    if !report.skipped.is_empty() {
        bail!("{} segment(s) were left as they were; run `tessera verify`", report.skipped.len());
    }
    Ok(())
}

/// Runs `tessera checkpoint`: writes a checkpoint of everything applied.
pub fn checkpoint(dir: &Path) -> anyhow::Result<()> {
    let opened = open_writable(dir)?;
    report_open(&opened.engine);
    match opened.engine.checkpoint()? {
        Some(report) => {
            println!(
                "checkpoint at LSN {}: {} ({} bytes), written in {} ms",
                report.lsn,
                fmt::bytes(report.blob_bytes),
                report.blob_bytes,
                (report.migrate + report.encode + report.write).as_millis()
            );
            if report.inline_payloads_moved > 0 {
                println!(
                    "moved {} inline payloads from the log into payload segments first",
                    report.inline_payloads_moved
                );
            }
        }
        None => println!(
            "nothing to checkpoint: the checkpoint at LSN {} covers every record",
            opened.engine.stats().checkpoint_lsn
        ),
    }
    Ok(())
}
