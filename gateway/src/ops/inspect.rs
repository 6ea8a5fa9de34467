//! `tessera inspect DIR`: what a data directory holds, read without changing it.
//!
//! ```text
//! data directory  /srv/tessera
//! buckets         2
//! uploads         3 in progress, 7 parts
//! objects         4
//! payload         1.2 MiB live, 40.0 KiB dead, 2 segments
//! log             1 segment (64.0 MiB on disk), LSNs 1..=31, no torn tail
//! checkpoint      LSN 20 (1 kept), 11 records after it, none skipped
//! journal         1 file (6.1 KiB), covers LSN 20, 11 later entries re-derived from the log, no damage
//! next open       cuts 0 B of dead payload tails, removes 0 payload segments
//! ```

use serde_json::{Value, json};
use tessera_engine::Engine;

use super::fmt::{self, Lines};
use super::{InspectArgs, open_read_only};

/// Runs `tessera inspect`.
pub fn run(args: &InspectArgs) -> anyhow::Result<()> {
    let opened = open_read_only(&args.dir)?;
    let report = gather(&opened.engine);
    if args.json {
        println!("{}", serde_json::to_string_pretty(&report)?);
    } else {
        print!("{}", render(&args.dir.display().to_string(), &report));
    }
    Ok(())
}

fn file_bytes(path: &std::path::Path) -> u64 {
    std::fs::metadata(path).map_or(0, |m| m.len())
}

/// Everything inspect shows, as JSON (the human form is rendered from it).
fn gather(engine: &Engine) -> Value {
    let stats = engine.stats();
    let open = engine.open_report();
    let segments = engine.wal().segments();
    let wal_file_bytes: u64 = segments.iter().map(|s| file_bytes(&s.path)).sum();
    let torn_tail = open.wal.torn_tail.as_ref().map(|t| {
        json!({
            "file": t.path.display().to_string(),
            "offset": t.offset_bytes,
            "bytes": t.bytes,
            "lsn": t.lsn.0,
            "reason": t.damage.to_string(),
        })
    });
    let skipped: Vec<Value> = open
        .wal
        .skipped_checkpoints
        .iter()
        .map(|s| {
            json!({
                "file": s.path.display().to_string(),
                "offset": s.offset_bytes,
                "reason": s.reason.to_string(),
            })
        })
        .collect();
    let journal = match engine.journal() {
        Some(view) => {
            let js = view.stats();
            let jr = engine.journal_report();
            let mut damage: Vec<String> = jr.corruptions.iter().map(ToString::to_string).collect();
            damage.extend(engine.journal_fault());
            json!({
                "kept": true,
                "files": js.files,
                "bytes": js.bytes,
                "covered_lsn": js.covered_lsn,
                "entries_rederived": js.staged_entries,
                "torn_tail": jr.torn_tail.as_ref().map(ToString::to_string),
                "damage": damage,
            })
        }
        None => {
            json!({ "kept": false, "damage": engine.journal_fault().into_iter().collect::<Vec<_>>() })
        }
    };
    json!({
        "buckets": stats.buckets,
        "uploads": stats.live_uploads,
        "parts": stats.parts,
        "objects": stats.objects,
        "payload": {
            "live_bytes": stats.payload_live_bytes,
            "dead_bytes": stats.payload_dead_bytes,
            "segments": stats.payload_segments,
        },
        "wal": {
            "segments": segments.len(),
            "file_bytes": wal_file_bytes,
            "first_lsn": segments.first().map(|s| s.first_lsn.0),
            "last_lsn": open.wal.lsn_last.0,
            "torn_tail": torn_tail,
        },
        "checkpoint": {
            "lsn": open.checkpoint_lsn,
            "kept": engine.wal().checkpoints().len(),
            "records_after": open.replayed,
            "skipped": skipped,
        },
        "journal": journal,
        "next_open": {
            "payload_tail_bytes_cut": open.payload.tail_bytes_cut,
            "payload_segments_removed": open.payload.segments_removed,
            "wal_torn_tail_zeroed": open.wal.torn_tail.is_some(),
            "checkpoints_set_aside": open.wal.set_aside.len(),
        },
    })
}

fn u(value: &Value, path: &[&str]) -> u64 {
    path.iter().try_fold(value, |v, key| v.get(key)).and_then(Value::as_u64).unwrap_or(0)
}

fn plural(n: u64, one: &str, many: &str) -> String {
    format!("{n} {}", if n == 1 { one } else { many })
}

fn render(dir: &str, r: &Value) -> String {
    let mut lines = Lines::default();
    lines.add("data directory", dir);
    lines.add("buckets", u(r, &["buckets"]).to_string());
    lines.add(
        "uploads",
        format!(
            "{} in progress, {}",
            u(r, &["uploads"]),
            plural(u(r, &["parts"]), "part", "parts")
        ),
    );
    lines.add("objects", u(r, &["objects"]).to_string());
    lines.add(
        "payload",
        format!(
            "{} live, {} dead, {}",
            fmt::bytes(u(r, &["payload", "live_bytes"])),
            fmt::bytes(u(r, &["payload", "dead_bytes"])),
            plural(u(r, &["payload", "segments"]), "segment", "segments")
        ),
    );
    lines.add("log", render_wal(r));
    lines.add("checkpoint", render_checkpoint(r));
    lines.add("journal", render_journal(r));
    lines.add(
        "next open",
        format!(
            "cuts {} of dead payload tails, removes {}",
            fmt::bytes(u(r, &["next_open", "payload_tail_bytes_cut"])),
            plural(
                u(r, &["next_open", "payload_segments_removed"]),
                "payload segment",
                "payload segments"
            )
        ),
    );
    lines.render()
}

fn render_wal(r: &Value) -> String {
    let wal = &r["wal"];
    let lsns = match (wal["first_lsn"].as_u64(), u(wal, &["last_lsn"])) {
        (Some(first), last) if last >= first => format!("LSNs {first}..={last}"),
        (_, last) => format!("no records after LSN {last}"),
    };
    let torn = match wal.get("torn_tail").filter(|t| !t.is_null()) {
        Some(t) => format!(
            "torn tail at {} offset {} ({} bytes, LSN {}: {}; an unacknowledged write, zeroed at the next open)",
            t["file"].as_str().unwrap_or("?"),
            u(t, &["offset"]),
            u(t, &["bytes"]),
            u(t, &["lsn"]),
            t["reason"].as_str().unwrap_or("?"),
        ),
        None => "no torn tail".to_owned(),
    };
    format!(
        "{} ({} on disk), {lsns}, {torn}",
        plural(u(wal, &["segments"]), "segment", "segments"),
        fmt::bytes(u(wal, &["file_bytes"]))
    )
}

fn render_checkpoint(r: &Value) -> String {
    let c = &r["checkpoint"];
    let head = match u(c, &["lsn"]) {
        0 => "none".to_owned(),
        lsn => format!("LSN {lsn} ({} kept)", u(c, &["kept"])),
    };
    let skipped = match c["skipped"].as_array() {
        Some(list) if !list.is_empty() => list
            .iter()
            .map(|s| {
                format!(
                    "skipped {} offset {}: {}",
                    s["file"].as_str().unwrap_or("?"),
                    u(s, &["offset"]),
                    s["reason"].as_str().unwrap_or("?")
                )
            })
            .collect::<Vec<_>>()
            .join("; "),
        _ => "none skipped".to_owned(),
    };
    format!("{head}, {} after it, {skipped}", plural(u(c, &["records_after"]), "record", "records"))
}

fn render_journal(r: &Value) -> String {
    let j = &r["journal"];
    let damage = match j["damage"].as_array() {
        Some(list) if !list.is_empty() => {
            let each: Vec<&str> = list.iter().filter_map(Value::as_str).collect();
            format!("{} damage report(s): {}", each.len(), each.join("; "))
        }
        _ => "no damage".to_owned(),
    };
    if j["kept"].as_bool() != Some(true) {
        return format!("not open, {damage}");
    }
    let torn = match j["torn_tail"].as_str() {
        Some(t) => format!(", torn tail (cut at the next open): {t}"),
        None => String::new(),
    };
    format!(
        "{} ({}), covers LSN {}, {} re-derived from the log{torn}, {damage}",
        plural(u(j, &["files"]), "file", "files"),
        fmt::bytes(u(j, &["bytes"])),
        u(j, &["covered_lsn"]),
        plural(u(j, &["entries_rederived"]), "later entry", "later entries"),
    )
}
