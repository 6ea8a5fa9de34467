//! `tessera verify DIR`: every CRC and every payload hash, without changing the directory.
//!
//! The engine opens on an overlay (so recovery's own checks run: every frame of every log
//! segment, the checkpoint it loads, the records it replays), then verify reads everything
//! again itself: every frame of every segment (a replay from the oldest segment), every
//! checkpoint kept, every payload entry of every payload segment against its SHA-256 (and the
//! live ones against where the engine's records say they are), and every block of the journal.
//! If the engine does not open, that is reported, and the payload segments and the journal
//! are still checked on their own.
//!
//! Output: each damage as `damage: FILE offset N: REASON` on stdout, as found; notes (a torn
//! tail, which is an unacknowledged write and not damage) as `note: ...`; then a summary,
//! `N frames, N checkpoints, N journal entries, N payloads, N bytes checked, no damage`. Exit
//! status 1 on any damage. On a terminal, a progress line on stderr; otherwise one line per
//! stage there.

use std::collections::{HashMap, HashSet};
use std::io::{IsTerminal as _, Write as _};
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::{Duration, Instant};

use anyhow::bail;
use tessera_engine::journal::{self, Journal, JournalOptions, Query};
use tessera_engine::payload::{
    ENTRY_HEADER_BYTES, Location, PayloadError, SegmentId, parse_segment_name, scan_segment,
    segment_name,
};
use tessera_engine::{Engine, EngineError, JOURNAL_DIR, PAYLOAD_DIR};
use tessera_wal::{Fs, WalError, check_checkpoint, frame_bytes};

use super::overlay::OverlayFs;
use super::{engine_config, fmt, lock_dir};

/// Runs `tessera verify`.
pub fn run(dir: &Path) -> anyhow::Result<()> {
    let _lock = lock_dir(dir)?;
    let fs = OverlayFs::shared();
    let mut v = Verifier::new();
    match Engine::open_with_fs(Arc::clone(&fs), dir, engine_config()) {
        Ok(engine) => {
            v.log(&engine);
            v.checkpoints(&engine, &*fs);
            let live = live_entries(&engine);
            v.payloads(&*fs, &dir.join(PAYLOAD_DIR), Some(&live));
            v.engine_journal(&engine);
        }
        Err(e) => {
            v.engine_error(dir, e);
            v.payloads(&*fs, &dir.join(PAYLOAD_DIR), None);
            v.lone_journal(fs, &dir.join(JOURNAL_DIR));
        }
    }
    v.progress.clear();
    let c = &v.counts;
    let summary = format!(
        "{}, {}, {}, {}, {} bytes checked",
        plural(c.frames, "frame", "frames"),
        plural(c.checkpoints, "checkpoint", "checkpoints"),
        plural(c.journal_entries, "journal entry", "journal entries"),
        plural(c.payloads, "payload", "payloads"),
        c.frame_bytes + c.checkpoint_bytes + c.journal_bytes + c.payload_bytes
    );
    if v.damage == 0 {
        println!("{summary}, no damage");
        return Ok(());
    }
    println!("{summary}, {} damaged", v.damage);
    bail!("verify found {} damaged item(s) in {}", v.damage, dir.display())
}

fn plural(n: u64, one: &str, many: &str) -> String {
    format!("{n} {}", if n == 1 { one } else { many })
}

#[derive(Debug, Default)]
struct Counts {
    frames: u64,
    frame_bytes: u64,
    checkpoints: u64,
    checkpoint_bytes: u64,
    payloads: u64,
    payload_bytes: u64,
    journal_entries: u64,
    journal_bytes: u64,
}

/// A live payload as the engine's records place it.
#[derive(Clone, Copy, Debug)]
struct Live {
    offset: u64,
    len: u64,
}

fn live_entries(engine: &Engine) -> HashMap<SegmentId, Vec<Live>> {
    let mut live: HashMap<SegmentId, Vec<Live>> = HashMap::new();
    for (_, location, _) in engine.payload_store().snapshot() {
        if let Location::Segment { segment, offset, len } = location {
            live.entry(segment).or_default().push(Live { offset, len });
        }
    }
    live
}

struct Verifier {
    counts: Counts,
    damage: u64,
    /// Damage already printed, by file and offset (the journal reports some twice).
    seen: HashSet<(PathBuf, Option<u64>)>,
    progress: Progress,
}

impl Verifier {
    fn new() -> Verifier {
        Verifier {
            counts: Counts::default(),
            damage: 0,
            seen: HashSet::new(),
            progress: Progress::new(),
        }
    }

    fn report(&mut self, file: &Path, offset: Option<u64>, reason: &dyn std::fmt::Display) {
        if !self.seen.insert((file.to_path_buf(), offset)) {
            return;
        }
        self.damage += 1;
        self.progress.clear();
        match offset {
            Some(offset) => println!("damage: {} offset {offset}: {reason}", file.display()),
            None => println!("damage: {}: {reason}", file.display()),
        }
    }

    fn note(&mut self, text: &str) {
        self.progress.clear();
        println!("note: {text}");
    }

    fn engine_error(&mut self, dir: &Path, e: EngineError) {
        match e {
            EngineError::Wal(WalError::Corrupt { path, offset_bytes, reason }) => {
                self.report(&path, Some(offset_bytes), &format!("the log does not open: {reason}"));
            }
            EngineError::Payload(PayloadError::Corrupt { path, offset_bytes, reason }) => {
                self.report(&path, Some(offset_bytes), &reason);
            }
            e => self.report(dir, None, &format!("the engine does not open: {e}")),
        }
    }

    /// Every frame of every segment: a replay from the oldest segment's first LSN.
    fn log(&mut self, engine: &Engine) {
        self.progress.stage("log");
        let wal = engine.wal();
        let open = engine.open_report();
        if let Some(torn) = &open.wal.torn_tail {
            self.note(&format!(
                "{} offset {}: torn tail of {} bytes (LSN {}: {}): an unacknowledged write, which \
                 the next open zeroes",
                torn.path.display(),
                torn.offset_bytes,
                torn.bytes,
                torn.lsn.0,
                torn.damage
            ));
        }
        let segments = wal.segments();
        let Some(first) = segments.first() else { return };
        self.counts.frame_bytes += 32 * segments.len() as u64;
        let last = open.wal.lsn_last.0;
        let replay = match wal.replay(first.first_lsn) {
            Ok(replay) => replay,
            Err(e) => return self.wal_error(wal.dir(), e),
        };
        for record in replay {
            match record {
                Ok(record) => {
                    self.counts.frames += 1;
                    self.counts.frame_bytes += frame_bytes(record.bytes.as_slice().len()) as u64;
                    let lsn = record.lsn.0;
                    self.progress.update(|| format!("log: LSN {lsn} of {last}"));
                }
                Err(e) => return self.wal_error(wal.dir(), e),
            }
        }
        self.progress.done(&format!("log: {} frames", self.counts.frames));
    }

    fn wal_error(&mut self, dir: &Path, e: WalError) {
        match e {
            WalError::Corrupt { path, offset_bytes, reason } => {
                self.report(&path, Some(offset_bytes), &reason);
            }
            e => self.report(dir, None, &e),
        }
    }

    /// Every checkpoint kept, and those open passed over.
    fn checkpoints(&mut self, engine: &Engine, fs: &dyn Fs) {
        self.progress.stage("checkpoints");
        for skipped in &engine.open_report().wal.skipped_checkpoints {
            self.report(&skipped.path, Some(skipped.offset_bytes), &skipped.reason);
        }
        let dir = engine.wal().dir().to_path_buf();
        for lsn in engine.wal().checkpoints() {
            match check_checkpoint(fs, &dir, lsn) {
                Ok(Ok(bytes)) => {
                    self.counts.checkpoints += 1;
                    self.counts.checkpoint_bytes += bytes;
                }
                Ok(Err(damage)) => {
                    self.report(&damage.path, Some(damage.offset_bytes), &damage.reason)
                }
                Err(e) => self.wal_error(&dir, e),
            }
        }
    }

    /// Every entry of every payload segment against its SHA-256; with `live` (the engine's
    /// view), also that every live payload is where the records say.
    fn payloads(&mut self, fs: &dyn Fs, dir: &Path, live: Option<&HashMap<SegmentId, Vec<Live>>>) {
        self.progress.stage("payloads");
        let names = match fs.list(dir) {
            Ok(names) => names,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => Vec::new(),
            Err(e) => return self.report(dir, None, &format!("cannot list: {e}")),
        };
        let mut ids: Vec<SegmentId> = names.iter().filter_map(|n| parse_segment_name(n)).collect();
        ids.sort_unstable();
        let total_bytes: u64 = ids
            .iter()
            .filter_map(|id| {
                fs.open(&dir.join(segment_name(*id)), tessera_wal::OpenMode::Read).ok()
            })
            .filter_map(|f| f.len().ok())
            .sum();
        let mut done_bytes = 0u64;
        for (i, &id) in ids.iter().enumerate() {
            let path = dir.join(segment_name(id));
            let count = ids.len();
            self.progress.update_now(&format!(
                "payloads: segment {} of {count}, {} of {}",
                i + 1,
                fmt::bytes(done_bytes),
                fmt::bytes(total_bytes)
            ));
            let live_here = live.and_then(|l| l.get(&id)).map_or(&[][..], Vec::as_slice);
            done_bytes += self.payload_segment(fs, &path, id, live_here, live.is_some());
        }
        self.progress.done(&format!(
            "payloads: {} in {}, {}",
            self.counts.payloads,
            plural(ids.len() as u64, "segment", "segments"),
            fmt::bytes(self.counts.payload_bytes)
        ));
    }

    /// Checks one payload segment; returns its length.
    fn payload_segment(
        &mut self,
        fs: &dyn Fs,
        path: &Path,
        id: SegmentId,
        live: &[Live],
        engine_opened: bool,
    ) -> u64 {
        let scan = match scan_segment(fs, path, id, true) {
            Ok(scan) => scan,
            Err(PayloadError::Corrupt { path, offset_bytes, reason }) => {
                let lost = if live.is_empty() {
                    String::new()
                } else {
                    format!(" ({} live payloads in it cannot be read)", live.len())
                };
                self.report(&path, Some(offset_bytes), &format!("{reason}{lost}"));
                return 0;
            }
            Err(e) => {
                self.report(path, None, &e);
                return 0;
            }
        };
        let live_at: HashMap<u64, u64> = live.iter().map(|l| (l.offset, l.len)).collect();
        let mut found = HashSet::new();
        for entry in &scan.entries {
            self.counts.payloads += 1;
            self.counts.payload_bytes += entry.len + ENTRY_HEADER_BYTES;
            found.insert(entry.offset);
            if let Some(damage) = &entry.damage {
                let role = match (engine_opened, live_at.contains_key(&entry.offset)) {
                    (false, _) => "",
                    (true, true) => " (a live payload)",
                    (true, false) => " (dead space: no part or object uses it)",
                };
                self.report(path, Some(entry.offset), &format!("{damage}{role}"));
            }
        }
        let mut missing: Vec<&Live> = live.iter().filter(|l| !found.contains(&l.offset)).collect();
        missing.sort_by_key(|l| l.offset);
        if let Some(first) = missing.first() {
            // The scan walks entries by their lengths: it stopped at a header that does not
            // parse, before live payloads.
            let reason = format!(
                "the entry header here does not parse, so {} live payload(s) from offset {} \
                 ({} bytes) on cannot be found",
                missing.len(),
                first.offset,
                first.len
            );
            self.report(path, Some(scan.end_offset), &reason);
        } else if !engine_opened && scan.end_offset.next_multiple_of(8) < scan.file_bytes {
            self.note(&format!(
                "{} offset {}: {} bytes after the last entry are not an entry (an \
                 unacknowledged ingest, which the next open cuts, or a damaged entry header)",
                path.display(),
                scan.end_offset,
                scan.file_bytes - scan.end_offset
            ));
        }
        scan.file_bytes
    }

    fn engine_journal(&mut self, engine: &Engine) {
        self.progress.stage("journal");
        let Some(view) = engine.journal() else {
            if let Some(fault) = engine.journal_fault() {
                let dir = engine.dir().join(JOURNAL_DIR);
                self.report(&dir, None, &fault);
            }
            return;
        };
        let report = engine.journal_report().clone();
        self.journal_open_report(&report);
        self.counts.journal_bytes += view.stats().bytes;
        let exported = view.export(&Query::default(), &mut std::io::sink());
        self.journal_export(engine.dir().join(JOURNAL_DIR).as_path(), exported);
    }

    fn lone_journal(&mut self, fs: Arc<dyn Fs>, dir: &Path) {
        self.progress.stage("journal");
        match Journal::open(fs, dir, JournalOptions::default()) {
            Ok((journal, report)) => {
                self.journal_open_report(&report);
                self.counts.journal_bytes += journal.stats().bytes;
                let exported = journal.export(&Query::default(), &mut std::io::sink());
                self.journal_export(dir, exported);
            }
            Err(e) => self.report(dir, None, &format!("the journal does not open: {e}")),
        }
    }

    fn journal_open_report(&mut self, report: &journal::JournalOpenReport) {
        if let Some(torn) = &report.torn_tail {
            self.note(&format!(
                "{} offset {}: the journal's newest file ends in a torn block ({}): a flush a \
                 crash cut short, which the next open cuts (its history is still in the log)",
                torn.path.display(),
                torn.offset,
                torn.damage
            ));
        }
        for c in &report.corruptions {
            self.report(&c.path, Some(c.offset), &c.damage);
        }
    }

    fn journal_export(
        &mut self,
        dir: &Path,
        exported: Result<journal::ExportReport, journal::JournalError>,
    ) {
        match exported {
            Ok(report) => {
                self.counts.journal_entries += report.entries;
                for w in &report.warnings {
                    self.report(&w.path, Some(w.offset), &w.damage);
                }
            }
            Err(e) => self.report(dir, None, &format!("the journal cannot be read: {e}")),
        }
        self.progress.done(&format!("journal: {} entries", self.counts.journal_entries));
    }
}

/// Where verify is: a line rewritten in place on a terminal, a line per stage otherwise.
struct Progress {
    terminal: bool,
    last: Option<Instant>,
    shown: bool,
}

const PROGRESS_INTERVAL: Duration = Duration::from_millis(100);

impl Progress {
    fn new() -> Progress {
        Progress { terminal: std::io::stderr().is_terminal(), last: None, shown: false }
    }

    fn stage(&mut self, name: &str) {
        if self.terminal {
            self.update_now(&format!("{name}..."));
        }
    }

    /// Rewrites the line, at most every `PROGRESS_INTERVAL` (the text is built only then).
    fn update(&mut self, text: impl FnOnce() -> String) {
        if self.terminal && self.last.is_none_or(|at| at.elapsed() >= PROGRESS_INTERVAL) {
            self.update_now(&text());
        }
    }

    fn update_now(&mut self, text: &str) {
        if !self.terminal {
            return;
        }
        let mut err = std::io::stderr().lock();
        let _ = write!(err, "\r\x1b[Kverifying {text}");
        let _ = err.flush();
        self.last = Some(Instant::now());
        self.shown = true;
    }

    /// A stage's end: a plain line off a terminal.
    fn done(&mut self, text: &str) {
        if !self.terminal {
            eprintln!("verified {text}");
        }
    }

    fn clear(&mut self) {
        if self.shown {
            let mut err = std::io::stderr().lock();
            let _ = write!(err, "\r\x1b[K");
            let _ = err.flush();
            self.shown = false;
        }
    }
}
