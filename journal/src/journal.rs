//! The journal: staged entries in memory, blocks of them in files, queries over both, and
//! retention.
//!
//! Invariant: the files' blocks tile the LSNs `first..=covered_lsn` with no gap (retention
//! removes whole files from the front), and the staged entries all lie after `covered_lsn`,
//! in ascending order. A query takes both under one lock, so it sees every entry once:
//! a flush moves entries from the staged list into the files' index in one critical section.

use std::collections::VecDeque;
use std::io::Write;
use std::path::{Path, PathBuf};
use std::sync::Arc;

use parking_lot::Mutex;
use tessera_wal::{Fs, FsFile, create_dir_all_durable};

use crate::entry::Entry;
use crate::error::{Corruption, Damage, JournalError};
use crate::file::{self, Block, Check, FileIndex};
use crate::format::{
    self, BLOCK_ENTRIES_BYTES_TARGET, ENTRY_BYTES_MAX, FILE_HEADER_BYTES, TEMP_SUFFIX,
};
use crate::query::{ExportReport, Prepared, Query, QueryResult};

/// Default size at which a file stops taking blocks.
pub const JOURNAL_FILE_BYTES_DEFAULT: u64 = 64 << 20;
/// Suffix a file gets when it is set aside (its header is damaged).
pub const DAMAGED_SUFFIX: &str = ".damaged";
/// Suffix a file gets when [`Journal::cut_after`] removes it.
pub const CUT_SUFFIX: &str = ".cut";

/// How long history is kept. Retention drops whole files, oldest first, never the newest.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Retention {
    /// Drop files whose newest entry is older than this (ms).
    pub max_age_ms: Option<u64>,
    /// Drop the oldest files while all of them take more than this.
    pub max_bytes: Option<u64>,
}

/// Options of [`Journal::open`].
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct JournalOptions {
    /// A file stops taking blocks once it is this long.
    pub file_bytes: u64,
    /// What [`Journal::apply_retention`] drops.
    pub retention: Retention,
}

impl Default for JournalOptions {
    fn default() -> Self {
        JournalOptions { file_bytes: JOURNAL_FILE_BYTES_DEFAULT, retention: Retention::default() }
    }
}

/// What opening the journal found.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct JournalOpenReport {
    /// Journal files in use.
    pub files: u64,
    /// Every journalled transition up to this LSN is in the files.
    pub covered_lsn: u64,
    /// The newest file ended in a torn block (a crash during a flush); it was cut there.
    pub torn_tail: Option<Corruption>,
    /// Where the bytes cut off were kept.
    pub torn_tail_copy: Option<PathBuf>,
    /// Damage elsewhere: queries skip what it makes unreadable.
    pub corruptions: Vec<Corruption>,
}

/// What a flush wrote.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct FlushReport {
    /// Entries made durable.
    pub entries: u64,
    /// Bytes written.
    pub bytes: u64,
    /// A new file was started.
    pub new_file: bool,
}

/// What retention removed.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct RetentionReport {
    /// Files removed.
    pub files: u64,
    /// Their bytes.
    pub bytes: u64,
}

/// What the journal holds.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct JournalStats {
    /// Files.
    pub files: u64,
    /// Their bytes.
    pub bytes: u64,
    /// Every journalled transition up to this LSN is durable in the files.
    pub covered_lsn: u64,
    /// Entries staged in memory, not durable yet (the WAL still holds their transitions).
    pub staged_entries: u64,
    /// Their approximate size in memory.
    pub staged_bytes: u64,
    /// Damage reports known.
    pub corruptions: u64,
}

#[derive(Debug, Default)]
struct State {
    files: Vec<FileIndex>,
    /// Whether the last file takes appends.
    last_appendable: bool,
    covered_lsn: u64,
    staged: VecDeque<Arc<Entry>>,
    staged_bytes: usize,
    /// Damage found at open, and files skipped whole.
    corruptions: Vec<Corruption>,
    /// A failed flush that could not even be undone: no more flushes until a reopen.
    poisoned: Option<String>,
    /// How much of the newest file the last fdatasync that succeeded covered; blocks past it
    /// were written by `write_through` and not synced yet.
    synced_end: u64,
}

impl State {
    /// Whether the newest file has blocks no fdatasync has covered yet.
    fn unsynced(&self) -> bool {
        self.files.last().is_some_and(|last| last.end_offset > self.synced_end)
    }

    /// Appends to `file` from now on (its header was synced when it was made).
    fn start_file(&mut self, file: FileIndex) {
        self.synced_end = file.end_offset;
        self.files.push(file);
        self.last_appendable = true;
    }
}

/// The journal of one data directory. `Send + Sync`.
#[derive(Debug)]
pub struct Journal {
    fs: Arc<dyn Fs>,
    dir: PathBuf,
    options: JournalOptions,
    state: Mutex<State>,
    /// One flush or retention at a time.
    writer: Mutex<()>,
}

impl Journal {
    /// Opens (or creates) the journal in `dir`: scans its files, cuts a torn block off the
    /// newest, and reports damage elsewhere without failing.
    pub fn open(
        fs: Arc<dyn Fs>,
        dir: impl Into<PathBuf>,
        options: JournalOptions,
    ) -> Result<(Journal, JournalOpenReport), JournalError> {
        if options.file_bytes < FILE_HEADER_BYTES {
            return Err(JournalError::Invalid { reason: "file_bytes must hold a file header" });
        }
        let dir = dir.into();
        create_dir_all_durable(&*fs, &dir).map_err(|e| JournalError::io(&dir, "create_dir", e))?;
        let mut names = fs.list(&dir).map_err(|e| JournalError::io(&dir, "list", e))?;
        let temps: Vec<String> =
            names.iter().filter(|n| n.ends_with(TEMP_SUFFIX)).cloned().collect();
        for temp in &temps {
            fs.remove(&dir.join(temp))
                .map_err(|e| JournalError::io(dir.join(temp), "remove", e))?;
        }
        if !temps.is_empty() {
            fs.sync_dir(&dir).map_err(|e| JournalError::io(&dir, "sync_dir", e))?;
        }
        names.retain(|n| !n.ends_with(TEMP_SUFFIX));
        let mut found: Vec<(u64, String)> =
            names.into_iter().filter_map(|n| format::parse_file_name(&n).map(|l| (l, n))).collect();
        found.sort_unstable();
        let mut report = JournalOpenReport::default();
        let mut files: Vec<FileIndex> = Vec::new();
        let mut last_appendable = false;
        let count = found.len();
        for (i, (first_lsn, name)) in found.into_iter().enumerate() {
            let path = dir.join(&name);
            let is_last = i + 1 == count;
            let check = if is_last { Check::Everything } else { Check::Headers };
            let scanned = match file::scan(&*fs, &path, first_lsn, check) {
                // An older file that cannot be read is damage like any other; the newest must
                // be readable, since appends continue it.
                Err(JournalError::Io { source, .. }) if !is_last => Err(Corruption {
                    path: path.clone(),
                    offset: 0,
                    damage: Damage::Read(source.to_string()),
                }),
                other => other?,
            };
            let index = match scanned {
                Ok(index) => index,
                Err(corruption) => {
                    tracing::warn!(%corruption, "journal file skipped");
                    if is_last {
                        // Appends must not land after a bad header: set it aside.
                        let aside = dir.join(format!("{name}{DAMAGED_SUFFIX}"));
                        fs.rename(&path, &aside)
                            .map_err(|e| JournalError::io(&path, "rename", e))?;
                        fs.sync_dir(&dir).map_err(|e| JournalError::io(&dir, "sync_dir", e))?;
                    }
                    report.corruptions.push(corruption);
                    continue;
                }
            };
            if let Some(previous) = files.last() {
                let expected = previous.last_lsn() + 1;
                if index.first_lsn < expected {
                    let found = format!(
                        "first LSN {}, but {} covers up to {}",
                        index.first_lsn,
                        previous.path.display(),
                        expected - 1
                    );
                    let corruption = Corruption {
                        path,
                        offset: 0,
                        damage: Damage::Field { field: "first_lsn", found },
                    };
                    tracing::warn!(%corruption, "journal file skipped");
                    report.corruptions.push(corruption);
                    continue;
                }
                if index.first_lsn > expected && previous.damage.is_none() {
                    let found = format!("LSNs {expected}..={} are in no file", index.first_lsn - 1);
                    let corruption = Corruption {
                        path: path.clone(),
                        offset: 0,
                        damage: Damage::Field { field: "history", found },
                    };
                    tracing::warn!(%corruption, "journal history missing");
                    report.corruptions.push(corruption);
                }
            }
            let mut index = index;
            last_appendable = is_last;
            if let Some(damage) = index.damage.take() {
                if is_last {
                    // A flush the crash cut short: nothing in it was acknowledged as durable.
                    // (Or damage to earlier blocks, which looks the same: its bytes are kept.)
                    report.torn_tail_copy = Some(file::preserve_tail(&*fs, &dir, &index)?);
                    index
                        .file
                        .set_len(index.end_offset)
                        .map_err(|e| JournalError::io(&path, "set_len", e))?;
                    index.file.sync_data().map_err(|e| JournalError::io(&path, "sync_data", e))?;
                    tracing::info!(%damage, "journal: torn tail cut");
                    report.torn_tail = Some(damage);
                } else {
                    tracing::warn!(%damage, "journal file damaged; queries skip the rest of it");
                    report.corruptions.push(damage.clone());
                    index.damage = Some(damage);
                }
            }
            files.push(index);
        }
        report.files = files.len() as u64;
        report.covered_lsn = files.last().map_or(0, FileIndex::last_lsn);
        // What this open takes as the newest file's blocks is made durable now: pages that a
        // crashed process wrote and no fdatasync confirmed may still be only in the page cache.
        if let Some(last) = files.last().filter(|_| last_appendable) {
            last.file.sync_data().map_err(|e| JournalError::io(&last.path, "sync_data", e))?;
        }
        let synced_end = files.last().map_or(0, |last| last.end_offset);
        let state = State {
            covered_lsn: report.covered_lsn,
            files,
            last_appendable,
            corruptions: report.corruptions.clone(),
            synced_end,
            ..State::default()
        };
        let journal =
            Journal { fs, dir, options, state: Mutex::new(state), writer: Mutex::new(()) };
        Ok((journal, report))
    }

    /// The journal's directory.
    pub fn dir(&self) -> &Path {
        &self.dir
    }

    /// Why flushes fail until a reopen (a failed fdatasync of a file the journal appends to),
    /// if they do.
    pub fn poisoned(&self) -> Option<String> {
        self.state.lock().poisoned.clone()
    }

    /// Every journalled transition up to this LSN is in the files: durable, except blocks that
    /// `write_through` wrote since the last fdatasync.
    pub fn covered_lsn(&self) -> u64 {
        self.state.lock().covered_lsn
    }

    /// Adds a committed transition's entry, in memory (queries see it at once). Entries come
    /// in ascending LSN order, after everything covered.
    pub fn stage(&self, entry: Entry) -> Result<(), JournalError> {
        if entry.memory_bytes() > ENTRY_BYTES_MAX {
            return Err(JournalError::Invalid {
                reason: "an entry's strings exceed ENTRY_BYTES_MAX",
            });
        }
        let mut state = self.state.lock();
        let after = state.staged.back().map_or(state.covered_lsn, |e| e.lsn).max(state.covered_lsn);
        if entry.lsn <= after {
            return Err(JournalError::OutOfOrder { lsn: entry.lsn, after });
        }
        state.staged_bytes += entry.memory_bytes();
        state.staged.push_back(Arc::new(entry));
        Ok(())
    }

    /// Removes the history after `lsn` (for a log that was cut back, by a repair, below what
    /// the journal covers: its LSNs will name other transitions). Whole files after it are
    /// renamed `<name>.cut`; the file holding it is cut after its last block that ends at or
    /// before `lsn`, the bytes cut kept as `<name>.torn-<offset>`. Reported as damage; returns
    /// what it reported; the new `covered_lsn` may be below `lsn` (call [`Journal::mark_gap`]
    /// then). Call it before staging anything.
    pub fn cut_after(&self, lsn: u64) -> Result<Vec<Corruption>, JournalError> {
        let _one = self.writer.lock();
        let mut state = self.state.lock();
        if state.covered_lsn <= lsn {
            return Ok(Vec::new());
        }
        let reported_before = state.corruptions.len();
        let found =
            format!("history after LSN {lsn}, beyond the log's end (a repaired log?): removed");
        while let Some(last) = state.files.last().filter(|f| f.first_lsn > lsn) {
            let aside = last.path.with_file_name(format!(
                "{}{CUT_SUFFIX}",
                last.path.file_name().and_then(|n| n.to_str()).unwrap_or("journal")
            ));
            self.fs
                .rename(&last.path, &aside)
                .map_err(|e| JournalError::io(&last.path, "rename", e))?;
            let damage = Damage::Field { field: "history", found: found.clone() };
            state.corruptions.push(Corruption { path: aside, offset: 0, damage });
            state.files.pop();
        }
        if let Some(last) = state.files.last_mut() {
            let keep = last.blocks.iter().take_while(|b| b.header.last_lsn <= lsn).count();
            let end = keep
                .checked_sub(1)
                .and_then(|i| last.blocks.get(i))
                .map_or(FILE_HEADER_BYTES, Block::end);
            let cut = FileIndex { end_offset: end, ..last.clone() };
            let copy = file::preserve_tail(&*self.fs, &self.dir, &cut)?;
            last.file.set_len(end).map_err(|e| JournalError::io(&last.path, "set_len", e))?;
            last.file.sync_data().map_err(|e| JournalError::io(&last.path, "sync_data", e))?;
            last.blocks = Arc::new(last.blocks.iter().take(keep).cloned().collect());
            last.end_offset = end;
            let damage = Damage::Field {
                field: "history",
                found: format!("{found}; kept as {}", copy.display()),
            };
            let corruption = Corruption { path: last.path.clone(), offset: end, damage };
            state.corruptions.push(corruption);
        }
        self.fs.sync_dir(&self.dir).map_err(|e| JournalError::io(&self.dir, "sync_dir", e))?;
        state.covered_lsn = state.files.last().map_or(0, FileIndex::last_lsn);
        tracing::warn!(lsn, covered = state.covered_lsn, "journal cut back to the log's end");
        Ok(state.corruptions.get(reported_before..).unwrap_or(&[]).to_vec())
    }

    /// Records that the history of LSNs `covered_lsn + 1..=through_lsn` is lost (damage, a
    /// journal turned on late): a new file starts at `through_lsn + 1`, so that every open
    /// reports the gap (and queries warn of it), and no block ever claims to cover it. Returns
    /// the report. Call it before staging anything after `covered_lsn`.
    pub fn mark_gap(&self, through_lsn: u64) -> Result<Option<Corruption>, JournalError> {
        let _one = self.writer.lock();
        let (covered, unsynced) = {
            let state = self.state.lock();
            (state.covered_lsn, state.unsynced())
        };
        if through_lsn <= covered {
            return Ok(None);
        }
        if unsynced {
            self.sync_last()?;
        }
        let file = file::create(&*self.fs, &self.dir, through_lsn + 1)?;
        let found = format!("LSNs {}..={through_lsn} are in no file", covered + 1);
        let corruption = Corruption {
            path: file.path.clone(),
            offset: 0,
            damage: Damage::Field { field: "history", found },
        };
        tracing::warn!(%corruption, "journal history missing");
        let mut state = self.state.lock();
        state.start_file(file);
        state.covered_lsn = through_lsn;
        state.corruptions.push(corruption.clone());
        Ok(Some(corruption))
    }

    /// Approximate bytes of the staged entries.
    pub fn staged_bytes(&self) -> usize {
        self.state.lock().staged_bytes
    }

    /// Makes the history up to `through_lsn` durable: writes the staged entries up to it as
    /// blocks covering `covered_lsn + 1..=through_lsn`, and fdatasyncs them (and whatever
    /// [`Journal::write_through`] left unsynced). The caller promises that every entry up to
    /// `through_lsn` has been staged.
    pub fn flush_through(&self, through_lsn: u64) -> Result<FlushReport, JournalError> {
        self.flush(through_lsn, true)
    }

    /// Like [`Journal::flush_through`] without the fdatasync: moves staged entries out of
    /// memory into the file (readable at once, durable with the next `flush_through`, or when
    /// the file is sealed). A crash may lose or tear these blocks; the engine re-derives
    /// their entries from the log, which keeps them until a checkpoint, whose
    /// `flush_through` makes them durable first.
    pub fn write_through(&self, through_lsn: u64) -> Result<FlushReport, JournalError> {
        self.flush(through_lsn, false)
    }

    fn flush(&self, through_lsn: u64, sync: bool) -> Result<FlushReport, JournalError> {
        let _one = self.writer.lock();
        let (covered, entries, active, unsynced) = {
            let state = self.state.lock();
            if let Some(reason) = &state.poisoned {
                let source = std::io::Error::other(reason.clone());
                return Err(JournalError::io(&self.dir, "flush", source));
            }
            let entries: Vec<Arc<Entry>> =
                state.staged.iter().take_while(|e| e.lsn <= through_lsn).cloned().collect();
            let active = state.files.last().filter(|_| state.last_appendable).cloned();
            (state.covered_lsn, entries, active, state.unsynced())
        };
        if through_lsn <= covered {
            if sync && unsynced {
                self.sync_last()?;
            }
            return Ok(FlushReport::default());
        }
        let (active, new_file) = match active {
            Some(file) if file.end_offset < self.options.file_bytes => (file, false),
            _ => {
                // A file is sealed durable: its blocks are never torn by a later crash.
                if unsynced {
                    self.sync_last()?;
                }
                let file = file::create(&*self.fs, &self.dir, covered + 1)?;
                self.state.lock().start_file(file.clone());
                (file, true)
            }
        };
        let (bytes, blocks) = encode_blocks(covered, through_lsn, &entries, active.end_offset);
        let written = active
            .file
            .write_all_at(&bytes, active.end_offset)
            .map_err(|e| JournalError::io(&active.path, "write", e));
        if let Err(e) = written {
            // Undo, so that the next flush appends at a known end.
            let undone =
                active.file.set_len(active.end_offset).and_then(|()| active.file.sync_data());
            match undone {
                Ok(()) => self.state.lock().synced_end = active.end_offset,
                Err(undo) => {
                    self.poison(format!("a failed flush could not be undone ({undo}) after: {e}"));
                }
            }
            return Err(e);
        }
        if sync {
            self.sync_or_poison(&*active.file, &active.path)?;
        }
        let drained: Vec<Arc<Entry>> = {
            let mut state = self.state.lock();
            if let Some(last) = state.files.last_mut() {
                let mut all = Vec::with_capacity(last.blocks.len() + blocks.len());
                all.extend(last.blocks.iter().cloned());
                all.extend(blocks);
                last.blocks = Arc::new(all);
                last.end_offset += bytes.len() as u64;
            }
            state.covered_lsn = through_lsn;
            if sync && let Some(last) = state.files.last() {
                state.synced_end = last.end_offset;
            }
            let count = state.staged.iter().take_while(|e| e.lsn <= through_lsn).count();
            let drained: Vec<Arc<Entry>> = state.staged.drain(..count).collect();
            let freed: usize = drained.iter().map(|e| e.memory_bytes()).sum();
            state.staged_bytes -= freed.min(state.staged_bytes);
            drained
        };
        // Freed outside the lock: stagers wait for it.
        drop(drained);
        Ok(FlushReport { entries: entries.len() as u64, bytes: bytes.len() as u64, new_file })
    }

    /// fdatasyncs the newest file (what `write_through` left).
    fn sync_last(&self) -> Result<(), JournalError> {
        let last = self.state.lock().files.last().cloned();
        if let Some(last) = &last {
            self.sync_or_poison(&*last.file, &last.path)?;
        }
        let mut state = self.state.lock();
        if let Some(last) = state.files.last() {
            state.synced_end = last.end_offset;
        }
        Ok(())
    }

    /// Syncs a file the journal appends to. A failure poisons the journal: the failed
    /// fdatasync may have dropped pages written since the last one that succeeded (blocks of
    /// `write_through` among them), and a later fdatasync would report success over them, so
    /// the file would be sealed with holes (never retried: PostgreSQL's fsyncgate). Flushes
    /// fail from then on, and so do the checkpoints that wait for them; the log keeps the
    /// records meanwhile. A reopen cuts the newest file at its first damaged block, and the
    /// engine re-derives the entries after it from the log.
    fn sync_or_poison(&self, file: &dyn FsFile, path: &Path) -> Result<(), JournalError> {
        file.sync_data().map_err(|e| {
            self.poison(format!("fdatasync of {} failed: {e}", path.display()));
            self.cut_unsynced();
            JournalError::io(path, "sync_data", e)
        })
    }

    /// After a failed fdatasync: the newest file's bytes past the last one that succeeded may
    /// be gone from the disk while the page cache still shows them, so a reopen without a
    /// reboot would take them for durable. They are cut off the file, and the entries of its
    /// blocks among them staged again (read while the page cache has them), so that the file
    /// holds only what was synced and a reopen re-derives the rest from the log.
    fn cut_unsynced(&self) {
        let mut state = self.state.lock();
        let synced_end = state.synced_end;
        let Some(last) = state.files.last_mut() else { return };
        let (kept, cut): (Vec<Block>, Vec<Block>) =
            last.blocks.iter().cloned().partition(|b| b.end() <= synced_end);
        // Read before the cut, while the bytes are there.
        let mut restaged = Vec::new();
        for block in &cut {
            match last.read_entries(block) {
                Ok(entries) => restaged.extend(entries),
                Err(corruption) => {
                    tracing::error!(%corruption, "journal: a cut block's entries are lost until a reopen");
                }
            }
        }
        if let Err(e) = last.file.set_len(synced_end) {
            tracing::error!(path = %last.path.display(), error = %e, "journal: unsynced blocks not cut");
            return;
        }
        last.blocks = Arc::new(kept);
        last.end_offset = synced_end;
        state.covered_lsn = last.last_lsn();
        for entry in restaged.into_iter().rev() {
            state.staged_bytes += entry.memory_bytes();
            state.staged.push_front(Arc::new(entry));
        }
    }

    fn poison(&self, reason: String) {
        tracing::error!(%reason, "journal poisoned");
        self.state.lock().poisoned = Some(reason);
    }

    /// Drops whole files, oldest first, as the retention policy says; never the newest file.
    pub fn apply_retention(&self, now_ms: u64) -> Result<RetentionReport, JournalError> {
        let retention = self.options.retention;
        let _one = self.writer.lock();
        let removed: Vec<FileIndex> = {
            let mut state = self.state.lock();
            let mut total: u64 = state.files.iter().map(FileIndex::bytes).sum();
            let sealed = state.files.len().saturating_sub(1);
            let mut drop = 0;
            for file in state.files.iter().take(sealed) {
                let too_old = retention
                    .max_age_ms
                    .is_some_and(|age| file.time_max_ms().saturating_add(age) < now_ms);
                let too_big = retention.max_bytes.is_some_and(|max| total > max);
                if !(too_old || too_big) {
                    break;
                }
                total -= file.bytes();
                drop += 1;
            }
            state.files.drain(..drop).collect()
        };
        let mut report = RetentionReport::default();
        for file in &removed {
            report.bytes += file.bytes();
            self.fs.remove(&file.path).map_err(|e| JournalError::io(&file.path, "remove", e))?;
            report.files += 1;
        }
        if !removed.is_empty() {
            self.fs.sync_dir(&self.dir).map_err(|e| JournalError::io(&self.dir, "sync_dir", e))?;
            tracing::info!(files = report.files, bytes = report.bytes, "journal retention");
        }
        Ok(report)
    }

    /// The entries matching `query`, in its order, up to its limit.
    pub fn query(&self, query: &Query) -> QueryResult {
        let mut entries = Vec::new();
        let (warnings, blocks_read) = self.scan(query, |entry| {
            entries.push(entry.clone());
            !query.is_full(entries.len())
        });
        QueryResult { entries, warnings, blocks_read }
    }

    /// Writes the entries matching `query` as JSON lines (docs/format.md §12.7).
    pub fn export(&self, query: &Query, out: &mut dyn Write) -> Result<ExportReport, JournalError> {
        let mut written = 0usize;
        let mut failure = None;
        let (warnings, _) = self.scan(query, |entry| {
            let line = entry.to_json_line();
            match out.write_all(line.as_bytes()).and_then(|()| out.write_all(b"\n")) {
                Ok(()) => {
                    written += 1;
                    !query.is_full(written)
                }
                Err(e) => {
                    failure = Some(e);
                    false
                }
            }
        });
        if let Some(e) = failure {
            return Err(JournalError::Export(e));
        }
        out.flush().map_err(JournalError::Export)?;
        Ok(ExportReport { entries: written as u64, warnings })
    }

    /// Visits the matching entries in the query's order until `visit` says stop. Returns the
    /// damage met and the blocks read.
    fn scan(&self, query: &Query, mut visit: impl FnMut(&Entry) -> bool) -> (Vec<Corruption>, u64) {
        if query.is_full(0) {
            return (Vec::new(), 0);
        }
        let (files, staged, mut warnings) = {
            let state = self.state.lock();
            let staged: Vec<Arc<Entry>> =
                state.staged.iter().filter(|e| query.matches(e)).cloned().collect();
            let skipped_whole = state.corruptions.iter().filter(|c| c.offset == 0).cloned();
            (state.files.clone(), staged, skipped_whole.collect::<Vec<_>>())
        };
        let mut blocks_read = 0;
        let prepared = query.prepare();
        if query.newest_first {
            for entry in staged.iter().rev() {
                if !visit(entry) {
                    return (warnings, blocks_read);
                }
            }
            for file in files.iter().rev() {
                if let Some(damage) = &file.damage {
                    warnings.push(damage.clone());
                }
                let go_on = visit_file(
                    file,
                    file.blocks.iter().rev(),
                    &prepared,
                    true,
                    &mut warnings,
                    &mut blocks_read,
                    &mut visit,
                );
                if !go_on {
                    return (warnings, blocks_read);
                }
            }
        } else {
            for file in &files {
                let go_on = visit_file(
                    file,
                    file.blocks.iter(),
                    &prepared,
                    false,
                    &mut warnings,
                    &mut blocks_read,
                    &mut visit,
                );
                if !go_on {
                    return (warnings, blocks_read);
                }
                if let Some(damage) = &file.damage {
                    warnings.push(damage.clone());
                }
            }
            for entry in &staged {
                if !visit(entry) {
                    break;
                }
            }
        }
        (warnings, blocks_read)
    }

    /// What the journal holds.
    pub fn stats(&self) -> JournalStats {
        let state = self.state.lock();
        JournalStats {
            files: state.files.len() as u64,
            bytes: state.files.iter().map(FileIndex::bytes).sum(),
            covered_lsn: state.covered_lsn,
            staged_entries: state.staged.len() as u64,
            staged_bytes: state.staged_bytes as u64,
            corruptions: state.corruptions.len() as u64,
        }
    }
}

/// Visits a file's matching entries; `false` if `visit` said stop.
fn visit_file<'a>(
    file: &FileIndex,
    blocks: impl Iterator<Item = &'a Block>,
    query: &Prepared<'_>,
    reverse: bool,
    warnings: &mut Vec<Corruption>,
    blocks_read: &mut u64,
    visit: &mut impl FnMut(&Entry) -> bool,
) -> bool {
    for block in blocks.filter(|b| query.may_match(&b.header)) {
        *blocks_read += 1;
        let mut entries = match file.read_entries(block) {
            Ok(entries) => entries,
            Err(corruption) => {
                tracing::warn!(%corruption, "journal block skipped");
                warnings.push(corruption);
                continue;
            }
        };
        if reverse {
            entries.reverse();
        }
        for entry in entries.iter().filter(|e| query.query.matches(e)) {
            if !visit(entry) {
                return false;
            }
        }
    }
    true
}

/// Encodes `entries` (all in `covered+1..=through`) as blocks tiling `covered+1..=through`,
/// to be written at `at`. Returns the bytes and the blocks' index entries.
fn encode_blocks(
    covered: u64,
    through: u64,
    entries: &[Arc<Entry>],
    at: u64,
) -> (Vec<u8>, Vec<Block>) {
    let mut bytes = Vec::new();
    let mut blocks = Vec::new();
    let mut first = covered + 1;
    let mut chunk_start = 0;
    let mut chunk_bytes = 0;
    for (i, entry) in entries.iter().enumerate() {
        chunk_bytes += entry.memory_bytes();
        let last_of_all = i + 1 == entries.len();
        if chunk_bytes >= BLOCK_ENTRIES_BYTES_TARGET || last_of_all {
            let last = if last_of_all { through } else { entry.lsn };
            let offset = at + bytes.len() as u64;
            let chunk = entries.get(chunk_start..=i).unwrap_or(&[]);
            let header = format::encode_block(&mut bytes, first, last, chunk.iter().map(|e| &**e));
            blocks.push(Block { offset, header: Arc::new(header) });
            first = last + 1;
            chunk_start = i + 1;
            chunk_bytes = 0;
        }
    }
    if entries.is_empty() {
        let header = format::encode_block(&mut bytes, first, through, std::iter::empty());
        blocks.push(Block { offset: at, header: Arc::new(header) });
    }
    (bytes, blocks)
}
