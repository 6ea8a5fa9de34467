//! Damage to journal files on disk (real files in a temporary directory): a journal of several
//! files is written, then for many offsets of each file (every byte of the file header, and the
//! fields, summary and entries of its blocks) one byte is flipped, or the file is cut there, and
//! the journal is reopened. Opening never fails; damage in a sealed file is reported with the
//! file and an offset at or before the damage, and queries warn of it while returning every
//! entry that is not behind it; damage in the newest file is cut off as a torn tail (or, in its
//! header, the file is set aside) and the journal goes on taking entries. No query ever returns
//! an entry that was not written.
//!
//! What each case expects follows from the block layout, read back from the written files
//! (docs/format.md §12: a 32-byte file header, then blocks of a 64-byte fixed header, a summary
//! and the entries).

#![allow(
    missing_docs,
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::indexing_slicing,
    clippy::panic,
    clippy::cast_possible_truncation
)]

use std::collections::BTreeSet;
use std::panic::{AssertUnwindSafe, catch_unwind};
use std::path::{Path, PathBuf};
use std::sync::Arc;

use tessera_journal::{
    Corruption, DAMAGED_SUFFIX, Damage, Entry, Journal, JournalEtag, JournalOpenReport,
    JournalOptions, Operation, Query, QueryResult, TORN_SUFFIX, UPLOAD_ID_BYTES,
};
use tessera_wal::{Fs, OpenMode, SimFs, StdFs};

/// docs/format.md §12: bytes of a file's header.
const FILE_HEADER_BYTES: u64 = 32;
/// docs/format.md §12: bytes of a block's fixed header (the summary follows it).
const BLOCK_HEADER_BYTES: u64 = 64;
const FILE_BYTES: u64 = 1200;
const ENTRIES: u64 = 64;
const BUCKETS: [&str; 3] = ["alpha", "beta", "gamma"];
const KEYS: [&str; 5] = ["a/1", "a/b/2", "a/b/3", "b/4", "c"];

fn options() -> JournalOptions {
    JournalOptions { file_bytes: FILE_BYTES, ..JournalOptions::default() }
}

fn upload_id(n: u64) -> [u8; UPLOAD_ID_BYTES] {
    [n as u8; UPLOAD_ID_BYTES]
}

fn entry(i: u64, lsn: u64) -> Entry {
    Entry {
        lsn,
        // Mostly rising, with a step back now and then.
        time_ms: 1_700_000_000_000 + i * 100 - if i % 7 == 3 { 250 } else { 0 },
        actor: if i.is_multiple_of(2) { "alice".into() } else { "bob".into() },
        op: Operation::ALL[(i % 12) as usize],
        bucket: (i % 9 != 8).then(|| BUCKETS[(i % 3) as usize].to_owned()),
        key: (i % 6 != 5).then(|| KEYS[(i % 5) as usize].to_owned()),
        upload_id: (!i.is_multiple_of(4)).then(|| upload_id(1 + i % 5)),
        part_number: (i % 3 == 1).then_some(i as u32),
        size_bytes: Some(i * 1000),
        etag: (i % 2 == 1)
            .then_some(JournalEtag { md5: [i as u8; 16], parts: (i % 4 == 1).then_some(3) }),
        error: (i % 11 == 10).then(|| "NoSuchUpload".to_owned()),
    }
}

/// The entry after `lsn` that a test adds after the damage: not among the written ones.
fn new_entry(n: u64, lsn: u64) -> Entry {
    Entry { actor: "carol".into(), ..entry(1000 + n, lsn) }
}

/// A block as it lies in a file.
#[derive(Clone, Debug)]
struct BlockLayout {
    start: u64,
    entries_start: u64,
    end: u64,
    first_lsn: u64,
    last_lsn: u64,
    entry_count: u64,
}

#[derive(Clone, Debug)]
struct FileLayout {
    name: String,
    first_lsn: u64,
    bytes: Vec<u8>,
    blocks: Vec<BlockLayout>,
}

/// A journal as written: its entries, the LSN its last flush went through, and its files.
#[derive(Debug)]
struct History {
    entries: Vec<Entry>,
    covered_lsn: u64,
    files: Vec<FileLayout>,
}

fn le_u32(bytes: &[u8], at: u64) -> u64 {
    u64::from(u32::from_le_bytes(bytes[at as usize..at as usize + 4].try_into().unwrap()))
}

fn le_u64(bytes: &[u8], at: u64) -> u64 {
    u64::from_le_bytes(bytes[at as usize..at as usize + 8].try_into().unwrap())
}

/// Reads a file's blocks back from its bytes.
fn layout(name: String, bytes: Vec<u8>) -> FileLayout {
    let first_lsn = le_u64(&bytes, 16);
    let mut blocks = Vec::new();
    let mut start = FILE_HEADER_BYTES;
    while start < bytes.len() as u64 {
        let entries_start = start + BLOCK_HEADER_BYTES + le_u32(&bytes, start + 8);
        let end = entries_start + le_u32(&bytes, start + 12);
        blocks.push(BlockLayout {
            start,
            entries_start,
            end,
            first_lsn: le_u64(&bytes, start + 24),
            last_lsn: le_u64(&bytes, start + 32),
            entry_count: le_u32(&bytes, start + 20),
        });
        start = end;
    }
    assert_eq!(start, bytes.len() as u64, "{name}: blocks end at the file's end");
    FileLayout { name, first_lsn, bytes, blocks }
}

/// Stages `ENTRIES` entries with LSN gaps and flushes them a few at a time (sometimes through
/// LSNs past the last entry, once with nothing staged), so that files rotate.
fn write_history(fs: Arc<dyn Fs>, dir: &Path) -> Vec<Entry> {
    let (journal, _) = Journal::open(fs, dir, options()).unwrap();
    // Entries per flush, in turn.
    let batches = [3, 1, 4, 2, 5, 2];
    let mut entries = Vec::new();
    let (mut lsn, mut flushes, mut in_batch) = (0, 0, 0);
    for i in 0..ENTRIES {
        lsn += 1 + i % 3;
        let entry = entry(i, lsn);
        journal.stage(entry.clone()).unwrap();
        entries.push(entry);
        in_batch += 1;
        if in_batch == batches[flushes % batches.len()] || i + 1 == ENTRIES {
            in_batch = 0;
            flushes += 1;
            if flushes % 4 == 0 || i + 1 == ENTRIES {
                // Through LSNs past the last entry.
                lsn += 2;
            }
            journal.flush_through(lsn).unwrap();
            if flushes == 3 {
                // A block with no entries.
                lsn += 3;
                journal.flush_through(lsn).unwrap();
            }
        }
    }
    assert_eq!(journal.covered_lsn(), lsn);
    entries
}

fn read_history(dir: &Path, entries: Vec<Entry>) -> History {
    let mut names: Vec<String> = std::fs::read_dir(dir)
        .unwrap()
        .map(|e| e.unwrap().file_name().into_string().unwrap())
        .collect();
    names.sort();
    let files: Vec<FileLayout> = names
        .into_iter()
        .map(|name| layout(name.clone(), std::fs::read(dir.join(name)).unwrap()))
        .collect();
    // The layout read back must make sense, or the cases below test nothing.
    let mut next_lsn = 1;
    for file in &files {
        assert_eq!(file.first_lsn, next_lsn, "{}", file.name);
        for block in &file.blocks {
            assert_eq!(block.first_lsn, next_lsn, "{}: {block:?}", file.name);
            let count = entries
                .iter()
                .filter(|e| (block.first_lsn..=block.last_lsn).contains(&e.lsn))
                .count();
            assert_eq!(block.entry_count, count as u64, "{}: {block:?}", file.name);
            next_lsn = block.last_lsn + 1;
        }
    }
    let covered_lsn = next_lsn - 1;
    assert!(covered_lsn > entries.last().unwrap().lsn, "the last flush went past the last entry");
    assert!(files.len() >= 4, "{} files", files.len());
    assert!(files.last().unwrap().blocks.len() >= 3, "the newest file has a few blocks");
    let sealed = &files[..files.len() - 1];
    assert!(sealed.iter().flat_map(|f| &f.blocks).any(|b| b.entry_count == 0), "an empty block");
    assert!(sealed.iter().flat_map(|f| &f.blocks).any(|b| b.entry_count > 1));
    History { entries, covered_lsn, files }
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Harm {
    Flip,
    Truncate,
}

/// Where in its file the harm landed.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Region {
    FileHeader,
    /// The fixed header or summary of block `.0`.
    BlockHeader(usize),
    /// The entries of block `.0`.
    BlockEntries(usize),
    /// Exactly at the start of block `.0` (a cut there leaves whole blocks only).
    BlockStart(usize),
}

fn region(file: &FileLayout, offset: u64, harm: Harm) -> Region {
    if offset < FILE_HEADER_BYTES {
        return Region::FileHeader;
    }
    let b = file.blocks.iter().position(|b| (b.start..b.end).contains(&offset)).unwrap();
    let block = &file.blocks[b];
    if harm == Harm::Truncate && offset == block.start {
        Region::BlockStart(b)
    } else if offset < block.entries_start {
        Region::BlockHeader(b)
    } else {
        Region::BlockEntries(b)
    }
}

/// The offsets to harm in a file: all of its header, and in each block the bytes of every
/// fixed-header field, the summary's edges and middle, and the entries' edges and middle.
fn offsets(file: &FileLayout) -> Vec<u64> {
    let mut offsets: BTreeSet<u64> = (0..FILE_HEADER_BYTES).collect();
    for block in &file.blocks {
        let fields =
            [0, 3, 4, 7, 8, 9, 11, 12, 15, 16, 19, 20, 23, 24, 31, 32, 39, 40, 47, 48, 55, 56, 63];
        offsets.extend(fields.iter().map(|f| block.start + f));
        let summary_start = block.start + BLOCK_HEADER_BYTES;
        offsets.extend([
            summary_start,
            (summary_start + block.entries_start) / 2,
            block.entries_start - 1,
        ]);
        offsets.extend([block.entries_start, (block.entries_start + block.end) / 2, block.end - 1]);
    }
    offsets.retain(|&o| o < file.bytes.len() as u64);
    offsets.into_iter().collect()
}

/// What a case must find.
#[derive(Debug)]
struct Expected {
    /// LSNs of the written entries that the damage makes unreadable.
    lost: BTreeSet<u64>,
    covered_lsn: u64,
    /// Where the damage must be reported: file and offset.
    reported_at: (PathBuf, u64),
}

fn expectation(history: &History, dir: &Path, f: usize, region: Region, harm: Harm) -> Expected {
    let file = &history.files[f];
    let is_last = f + 1 == history.files.len();
    let path = dir.join(&file.name);
    let (lost_blocks, reported_at) = match region {
        Region::FileHeader => (0..file.blocks.len(), (path, 0)),
        // A sealed file's entries are checked as queries read them, block by block.
        Region::BlockEntries(b) if !is_last && harm == Harm::Flip => {
            (b..b + 1, (path, file.blocks[b].start))
        }
        Region::BlockHeader(b) | Region::BlockEntries(b) => {
            (b..file.blocks.len(), (path, file.blocks[b].start))
        }
        // The file ends after whole blocks: the missing LSNs show as a gap before the next file.
        Region::BlockStart(b) if !is_last => {
            (b..file.blocks.len(), (dir.join(&history.files[f + 1].name), 0))
        }
        Region::BlockStart(b) => (b..file.blocks.len(), (path, file.blocks[b].start)),
    };
    let lost_ranges: Vec<(u64, u64)> =
        file.blocks[lost_blocks.clone()].iter().map(|b| (b.first_lsn, b.last_lsn)).collect();
    let lost = history
        .entries
        .iter()
        .map(|e| e.lsn)
        .filter(|lsn| lost_ranges.iter().any(|&(first, last)| (first..=last).contains(lsn)))
        .collect();
    let covered_lsn = match (is_last, region) {
        (false, _) => history.covered_lsn,
        (true, Region::FileHeader) => file.first_lsn - 1,
        (true, _) => file.blocks[lost_blocks.start].first_lsn - 1,
    };
    Expected { lost, covered_lsn, reported_at }
}

fn naive_match(query: &Query, entry: &Entry) -> bool {
    (query.upload_id.is_none() || entry.upload_id == query.upload_id)
        && (query.bucket.is_none() || entry.bucket == query.bucket)
        && query
            .key_prefix
            .as_ref()
            .is_none_or(|p| entry.key.as_ref().is_some_and(|k| k.starts_with(p.as_str())))
        && query.time_from_ms.is_none_or(|from| entry.time_ms >= from)
        && query.time_until_ms.is_none_or(|until| entry.time_ms < until)
}

fn lsns(entries: &[Entry]) -> Vec<u64> {
    entries.iter().map(|e| e.lsn).collect()
}

fn places(warnings: &[Corruption]) -> BTreeSet<(PathBuf, u64)> {
    warnings.iter().map(|c| (c.path.clone(), c.offset)).collect()
}

/// Queries of several kinds return exactly the expected entries, and nothing that was not
/// written.
fn check_queries(journal: &Journal, written: &[Entry], expected: &[Entry]) -> QueryResult {
    let all = journal.query(&Query::default());
    for entry in &all.entries {
        assert!(written.contains(entry), "an entry that was never written: {entry:?}");
    }
    assert_eq!(lsns(&all.entries), lsns(expected));
    assert_eq!(all.entries, expected);
    let newest = journal.query(&Query { newest_first: true, ..Query::default() });
    let reversed: Vec<Entry> = expected.iter().rev().cloned().collect();
    assert_eq!(lsns(&newest.entries), lsns(&reversed));
    assert_eq!(places(&newest.warnings), places(&all.warnings));
    let queries = [
        Query { upload_id: Some(upload_id(2)), ..Query::default() },
        Query { bucket: Some("beta".into()), key_prefix: Some("a/".into()), ..Query::default() },
        Query {
            key_prefix: Some("a/b/".into()),
            newest_first: true,
            limit: Some(5),
            ..Query::default()
        },
        Query {
            time_from_ms: Some(1_700_000_000_000 + 1500),
            time_until_ms: Some(1_700_000_000_000 + 4200),
            ..Query::default()
        },
    ];
    for query in &queries {
        let mut want: Vec<Entry> =
            expected.iter().filter(|e| naive_match(query, e)).cloned().collect();
        if query.newest_first {
            want.reverse();
        }
        want.truncate(query.limit.unwrap_or(usize::MAX));
        assert_eq!(lsns(&journal.query(query).entries), lsns(&want), "{query:?}");
    }
    let mut out = Vec::new();
    let export = journal.export(&Query::default(), &mut out).unwrap();
    let exported: Vec<u64> = String::from_utf8(out)
        .unwrap()
        .lines()
        .map(|l| serde_json::from_str::<serde_json::Value>(l).unwrap()["lsn"].as_u64().unwrap())
        .collect();
    assert_eq!(exported, lsns(expected));
    assert_eq!(places(&export.warnings), places(&all.warnings));
    all
}

/// The open report and the queries' warnings name the damage as expected.
fn check_reports(
    history: &History,
    f: usize,
    region: Region,
    harm: Harm,
    want: &Expected,
    report: &JournalOpenReport,
    warnings: &[Corruption],
) {
    let is_last = f + 1 == history.files.len();
    let reported_at = (want.reported_at.0.clone(), want.reported_at.1);
    let is_truncated = |c: &Corruption| matches!(c.damage, Damage::Truncated { .. });
    if is_last && region == Region::FileHeader {
        // Set aside: reported once, and a warning until the next open.
        assert!(report.torn_tail.is_none());
        assert_eq!(places(&report.corruptions), BTreeSet::from([reported_at.clone()]));
        assert_eq!(places(warnings), BTreeSet::from([reported_at]));
        assert!(harm == Harm::Flip || is_truncated(&report.corruptions[0]));
    } else if is_last {
        assert!(report.corruptions.is_empty(), "{:?}", report.corruptions);
        assert!(warnings.is_empty(), "{warnings:?}");
        match region {
            // Whole blocks only: nothing looks torn.
            Region::BlockStart(_) => assert!(report.torn_tail.is_none(), "{:?}", report.torn_tail),
            _ => {
                let torn = report.torn_tail.as_ref().expect("a torn tail");
                assert_eq!((torn.path.clone(), torn.offset), reported_at);
                assert!(harm == Harm::Flip || is_truncated(torn), "{torn:?}");
                // The bytes cut off are kept beside the file.
                let copy = report.torn_tail_copy.as_ref().expect("a copy of the cut bytes");
                let name = torn.path.file_name().unwrap().to_str().unwrap();
                assert_eq!(
                    copy.file_name().unwrap().to_str().unwrap(),
                    format!("{name}{TORN_SUFFIX}{}", torn.offset)
                );
                assert!(std::fs::metadata(copy).unwrap().len() > 0);
            }
        }
    } else {
        assert!(report.torn_tail.is_none(), "{:?}", report.torn_tail);
        // Damage may also show as a gap before the next file; nothing else is reported.
        let next = (want.reported_at.0.with_file_name(&history.files[f + 1].name), 0);
        let allowed = BTreeSet::from([reported_at.clone(), next]);
        assert!(places(&report.corruptions).is_subset(&allowed), "{:?}", report.corruptions);
        assert!(places(warnings).is_subset(&allowed), "{warnings:?}");
        assert!(places(warnings).contains(&reported_at), "{warnings:?}");
        match region {
            // The open checks headers and summaries of sealed files; entries are checked by the
            // queries that read them.
            Region::BlockEntries(_) if harm == Harm::Flip => {}
            Region::BlockStart(_) => {
                let gap =
                    report.corruptions.iter().find(|c| (c.path.clone(), c.offset) == reported_at);
                let gap = gap.expect("the missing LSNs are reported");
                assert!(matches!(gap.damage, Damage::Field { field: "history", .. }), "{gap:?}");
            }
            _ => {
                let found =
                    report.corruptions.iter().find(|c| (c.path.clone(), c.offset) == reported_at);
                let found = found.expect("the damage is reported at open");
                assert!(harm == Harm::Flip || is_truncated(found), "{found:?}");
            }
        }
    }
}

fn harmed(bytes: &[u8], offset: u64, harm: Harm) -> Vec<u8> {
    match harm {
        Harm::Flip => {
            let mut bytes = bytes.to_vec();
            bytes[offset as usize] ^= 0x5a;
            bytes
        }
        Harm::Truncate => bytes[..offset as usize].to_vec(),
    }
}

fn run_case(history: &History, f: usize, offset: u64, harm: Harm) {
    let temp = tempfile::tempdir().unwrap();
    let dir = temp.path().join("journal");
    std::fs::create_dir(&dir).unwrap();
    for (i, file) in history.files.iter().enumerate() {
        let bytes = if i == f { harmed(&file.bytes, offset, harm) } else { file.bytes.clone() };
        std::fs::write(dir.join(&file.name), bytes).unwrap();
    }
    let file = &history.files[f];
    let region = region(file, offset, harm);
    let want = expectation(history, &dir, f, region, harm);
    let is_last = f + 1 == history.files.len();
    let survivors: Vec<Entry> =
        history.entries.iter().filter(|e| !want.lost.contains(&e.lsn)).cloned().collect();

    let (journal, report) = Journal::open(StdFs::shared(), &dir, options()).unwrap();
    assert_eq!(report.covered_lsn, want.covered_lsn, "{report:?}");
    assert_eq!(journal.covered_lsn(), want.covered_lsn);
    let result = check_queries(&journal, &history.entries, &survivors);
    check_reports(history, f, region, harm, &want, &report, &result.warnings);
    let path = dir.join(&file.name);
    if is_last && region == Region::FileHeader {
        let aside = dir.join(format!("{}{DAMAGED_SUFFIX}", file.name));
        assert_eq!(
            std::fs::read(aside).unwrap(),
            harmed(&file.bytes, offset, harm),
            "kept as it was"
        );
        assert!(!path.exists(), "set aside");
    } else if is_last && matches!(region, Region::BlockHeader(_) | Region::BlockEntries(_)) {
        assert_eq!(
            std::fs::metadata(&path).unwrap().len(),
            want.reported_at.1,
            "cut at the torn block"
        );
    }

    // The engine re-stages what is not covered, and goes on.
    let restaged: Vec<Entry> =
        history.entries.iter().filter(|e| e.lsn > want.covered_lsn).cloned().collect();
    let added: Vec<Entry> =
        (1..=3).map(|n| new_entry(n, history.covered_lsn.max(want.covered_lsn) + 2 * n)).collect();
    for entry in restaged.iter().chain(&added) {
        journal.stage(entry.clone()).unwrap();
    }
    let through_lsn = added.last().unwrap().lsn;
    journal.flush_through(through_lsn).unwrap();
    drop(journal);
    let (journal, second) = Journal::open(StdFs::shared(), &dir, options()).unwrap();
    assert_eq!(second.covered_lsn, through_lsn);
    assert!(second.torn_tail.is_none(), "{second:?}");
    if is_last {
        assert!(second.corruptions.is_empty(), "{second:?}");
    } else {
        assert_eq!(places(&second.corruptions), places(&report.corruptions));
    }
    let mut expected: Vec<Entry> = history
        .entries
        .iter()
        .filter(|e| !want.lost.contains(&e.lsn) || e.lsn > want.covered_lsn)
        .cloned()
        .collect();
    expected.extend(added.iter().cloned());
    let mut written = history.entries.clone();
    written.extend(added);
    check_queries(&journal, &written, &expected);
}

fn written_history() -> (tempfile::TempDir, History) {
    let temp = tempfile::tempdir().unwrap();
    let dir = temp.path().join("journal");
    let entries = write_history(StdFs::shared(), &dir);
    let history = read_history(&dir, entries);
    (temp, history)
}

fn sweep(harm: Harm) {
    let (_temp, history) = written_history();
    let mut cases = 0;
    for (f, file) in history.files.iter().enumerate() {
        for offset in offsets(file) {
            let case = format!(
                "{harm:?} at offset {offset} of {} (file {f} of {})",
                file.name,
                history.files.len()
            );
            if catch_unwind(AssertUnwindSafe(|| run_case(&history, f, offset, harm))).is_err() {
                panic!("{case}: failed (see the panic above)");
            }
            cases += 1;
        }
    }
    eprintln!("{harm:?}: {cases} cases over {} files", history.files.len());
}

#[test]
fn a_flipped_byte_anywhere_is_reported_or_cut_and_the_rest_stays_readable() {
    sweep(Harm::Flip);
}

#[test]
fn a_file_cut_anywhere_is_reported_or_cut_and_the_rest_stays_readable() {
    sweep(Harm::Truncate);
}

/// The newest file's header damaged, on the simulated and the real file system: the file is set
/// aside with its bytes as they were, and the journal re-creates it on the next flush.
fn newest_file_with_damaged_header_is_set_aside(fs: Arc<dyn Fs>, dir: &Path) {
    let entries = write_history(Arc::clone(&fs), dir);
    let mut names = fs.list(dir).unwrap();
    names.sort();
    let (newest, previous) = (names[names.len() - 1].clone(), names[names.len() - 2].clone());
    let newest_path = dir.join(&newest);
    let file = fs.open(&newest_path, OpenMode::ReadWrite).unwrap();
    let mut original = vec![0u8; file.len().unwrap() as usize];
    file.read_exact_at(&mut original, 0).unwrap();
    // The version field.
    file.write_all_at(&[0xee], 9).unwrap();
    file.sync_data().unwrap();
    drop(file);
    let first_lsn = le_u64(&original, 16);

    let (journal, report) = Journal::open(Arc::clone(&fs), dir, options()).unwrap();
    assert_eq!(report.covered_lsn, first_lsn - 1, "{report:?}");
    assert!(report.torn_tail.is_none());
    assert_eq!(report.corruptions.len(), 1, "{report:?}");
    assert_eq!(
        (report.corruptions[0].path.clone(), report.corruptions[0].offset),
        (newest_path.clone(), 0)
    );
    let mut now = fs.list(dir).unwrap();
    now.sort();
    let aside = format!("{newest}{DAMAGED_SUFFIX}");
    assert!(now.contains(&aside) && !now.contains(&newest), "{now:?}");
    let kept = fs.open(&dir.join(&aside), OpenMode::Read).unwrap();
    let mut bytes = vec![0u8; original.len()];
    kept.read_exact_at(&mut bytes, 0).unwrap();
    assert_eq!(bytes[9], 0xee);
    assert_eq!(bytes[..9], original[..9]);
    assert_eq!(bytes[10..], original[10..]);
    let before: Vec<Entry> = entries.iter().filter(|e| e.lsn < first_lsn).cloned().collect();
    let result = journal.query(&Query::default());
    assert_eq!(result.entries, before);
    assert_eq!(places(&result.warnings), BTreeSet::from([(newest_path.clone(), 0)]));

    let restaged: Vec<Entry> = entries.iter().filter(|e| e.lsn >= first_lsn).cloned().collect();
    let added = new_entry(1, entries.last().unwrap().lsn + 10);
    for entry in restaged.iter().chain([&added]) {
        journal.stage(entry.clone()).unwrap();
    }
    let flushed = journal.flush_through(added.lsn).unwrap();
    assert!(flushed.new_file, "a new file, under the set-aside one's name");
    drop(journal);
    let (journal, report) = Journal::open(Arc::clone(&fs), dir, options()).unwrap();
    assert_eq!(report.covered_lsn, added.lsn);
    assert!(report.corruptions.is_empty() && report.torn_tail.is_none(), "{report:?}");
    let mut names_after = fs.list(dir).unwrap();
    names_after.sort();
    assert!(
        names_after.contains(&newest)
            && names_after.contains(&aside)
            && names_after.contains(&previous)
    );
    let mut expected = entries;
    expected.push(added);
    let result = journal.query(&Query::default());
    assert!(result.warnings.is_empty(), "{:?}", result.warnings);
    assert_eq!(result.entries, expected);
}

#[test]
fn newest_file_with_damaged_header_is_set_aside_and_flushes_go_on_real_fs() {
    let temp = tempfile::tempdir().unwrap();
    newest_file_with_damaged_header_is_set_aside(StdFs::shared(), &temp.path().join("journal"));
}

#[test]
fn newest_file_with_damaged_header_is_set_aside_and_flushes_go_on_sim_fs() {
    let sim = SimFs::new(7);
    newest_file_with_damaged_header_is_set_aside(sim.shared(), Path::new("/data/journal"));
}
