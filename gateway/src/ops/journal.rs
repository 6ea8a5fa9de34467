//! `tessera journal DIR [--upload ID | --bucket B [--prefix P]] [--since T] [--until T]
//! [--newest-first] [--limit N] [--json]`: the history of committed transitions.
//!
//! The journal's files, and the transitions after what they cover (re-derived from the log at
//! open, as the server would), oldest first unless `--newest-first`. `--json` writes the
//! journal's export format (docs/format.md §12.7), one object per line; otherwise:
//!
//! ```text
//! 2025-01-31T12:00:00.000Z  lsn 7  put_part       photos/cat.jpg  upload 0000019...  part 1  5.0 MiB  etag 9b2c...  ok  by AKIA...
//! ```
//!
//! Damage the query met (entries it had to skip) goes to stderr as `warning: ...`.

use std::io::Write as _;

use anyhow::{Context, bail};
use tessera_engine::UploadId;
use tessera_engine::journal::{Entry, Query};

use super::{JournalArgs, fmt, open_read_only};

/// Runs `tessera journal`.
pub fn run(args: &JournalArgs) -> anyhow::Result<()> {
    let upload_id = match &args.upload {
        Some(text) => {
            let id: UploadId = text.parse().with_context(|| format!("--upload {text:?}"))?;
            Some(id.0)
        }
        None => None,
    };
    let query = Query {
        upload_id,
        bucket: args.bucket.clone(),
        key_prefix: args.prefix.clone(),
        time_from_ms: args.since,
        time_until_ms: args.until,
        newest_first: args.newest_first,
        limit: args.limit,
    };
    let opened = open_read_only(&args.dir)?;
    let engine = &opened.engine;
    let Some(journal) = engine.journal() else {
        match engine.journal_fault() {
            Some(fault) => bail!("{}: the journal is not available: {fault}", args.dir.display()),
            None => bail!("{}: this engine keeps no journal", args.dir.display()),
        }
    };
    let warnings = if args.json {
        let stdout = std::io::stdout();
        let mut out = std::io::BufWriter::new(stdout.lock());
        let report = journal.export(&query, &mut out)?;
        out.flush()?;
        report.warnings
    } else {
        let result = journal.query(&query);
        let lsn_width = result.entries.iter().map(|e| e.lsn.to_string().len()).max().unwrap_or(1);
        let mut out = std::io::BufWriter::new(std::io::stdout().lock());
        for entry in &result.entries {
            writeln!(out, "{}", line(entry, lsn_width))?;
        }
        out.flush()?;
        result.warnings
    };
    for warning in &warnings {
        eprintln!("warning: {warning} (entries behind it were skipped)");
    }
    Ok(())
}

/// One entry for people.
fn line(entry: &Entry, lsn_width: usize) -> String {
    let mut text = format!(
        "{}  lsn {:>lsn_width$}  {:<13}",
        fmt::time_ms(entry.time_ms),
        entry.lsn,
        entry.op.name()
    );
    match (&entry.bucket, &entry.key) {
        (Some(bucket), Some(key)) => text.push_str(&format!("  {bucket}/{key}")),
        (Some(bucket), None) => text.push_str(&format!("  {bucket}")),
        (None, _) => {}
    }
    if let Some(id) = entry.upload_id_hex() {
        text.push_str(&format!("  upload {id}"));
    }
    if let Some(part) = entry.part_number {
        text.push_str(&format!("  part {part}"));
    }
    if let Some(size) = entry.size_bytes {
        text.push_str(&format!("  {}", fmt::bytes(size)));
    }
    if let Some(etag) = &entry.etag {
        text.push_str(&format!("  etag {etag}"));
    }
    text.push_str(&format!("  {}  by {}", entry.error.as_deref().unwrap_or("ok"), entry.actor));
    text
}
