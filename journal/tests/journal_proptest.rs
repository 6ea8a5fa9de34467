//! Random histories against a plain model: entries (every operation, a few buckets, keys with
//! shared prefixes, a handful of uploads, times mostly but not strictly increasing, ascending
//! LSNs with gaps) are staged, flushed at random points (through the last staged LSN, beyond it,
//! or through only part of what is staged) into small files that rotate, and the journal is
//! reopened now and then, sometimes after a simulated crash. Entries staged but not flushed are
//! lost on reopen, and the model drops them too: the engine re-stages them from its log. Some
//! flushes meet a fault: a power cut (then a crash that keeps a random part of what was not
//! synced: the flush is found whole or not at all, and whole if it returned), a one-shot EIO
//! (the flush fails and poisons the journal until a reopen, which finds the flush whole or not
//! at all), or a one-shot ENOSPC (the flush fails, and its entries stay staged for the next
//! one).
//!
//! Every query (any mix of upload id, bucket, key prefix, time range, order and limit) must
//! return exactly what a naive filter over the model returns, in the same order, cut at the
//! limit; `export` must write the same entries as JSON lines; a reopen must report the last
//! flush target as `covered_lsn` and no damage.
//!
//! Most cases run on the simulated file system, one in eight on real files in a temporary
//! directory. `TESSERA_JOURNAL_CASES` sets the case count (default 48).

#![allow(
    missing_docs,
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::indexing_slicing,
    clippy::panic,
    clippy::cast_possible_truncation
)]

use std::path::PathBuf;
use std::sync::Arc;

use proptest::prelude::*;
use proptest::sample::Index;
use tessera_journal::{
    Entry, Journal, JournalError, JournalEtag, JournalOpenReport, JournalOptions, Operation, Query,
    UPLOAD_ID_BYTES,
};
use tessera_wal::{CrashMode, Fs, SimFs, StdFs};

const BUCKETS: [&str; 4] = ["alpha", "al", "beta", "gamma"];
/// Keys sharing prefixes, so that prefix queries and block key ranges meet at their edges.
const KEYS: [&str; 9] = ["a/1", "a/2", "a/b/1", "a/b/c", "a/bc", "b/1", "b/a/1", "c", ""];
const PREFIXES: [&str; 10] = ["", "a", "a/", "a/b", "a/b/", "a/b/c", "b/", "b/a", "c", "zz"];
const ERRORS: [&str; 2] = ["NoSuchUpload", "InvalidPart"];
/// Uploads entries name; queries also ask for one more that no entry names.
const UPLOADS: u8 = 5;
const TIME_START_MS: u64 = 1_700_000_000_000;

fn upload_id(n: u8) -> [u8; UPLOAD_ID_BYTES] {
    let mut id = [0u8; UPLOAD_ID_BYTES];
    id[0] = n;
    id[UPLOAD_ID_BYTES - 1] = n.wrapping_mul(31);
    id
}

fn actor(n: u8) -> String {
    match n {
        0 => "alice".into(),
        1 => "bob".into(),
        // Rare and long: a flush of a few of them cuts more than one block.
        _ => "x".repeat(9000),
    }
}

#[derive(Clone, Debug)]
struct EntrySpec {
    lsn_gap: u64,
    time_step_ms: i64,
    op: usize,
    actor: u8,
    bucket: Option<usize>,
    key: Option<usize>,
    upload: Option<u8>,
    part_number: Option<u32>,
    size_bytes: Option<u64>,
    etag: Option<(u8, Option<u32>)>,
    error: Option<usize>,
}

#[derive(Clone, Debug)]
enum FlushTarget {
    /// Through the last staged LSN.
    LastStaged,
    /// That many LSNs past the last staged (or covered) one.
    Beyond(u64),
    /// Through one of the staged entries: the rest stay staged.
    Partial(Index),
}

/// A time bound of a query.
#[derive(Clone, Debug)]
enum TimeSpec {
    /// An entry's time, give or take a millisecond, so that the bounds' edges are met.
    NearEntry(Index, i64),
    /// A fraction of the model's time range (widened a little on both sides).
    Fraction(u16),
}

#[derive(Clone, Debug)]
struct QuerySpec {
    upload: Option<u8>,
    bucket: Option<usize>,
    key_prefix: Option<usize>,
    time_from: Option<TimeSpec>,
    time_until: Option<TimeSpec>,
    newest_first: bool,
    limit: Option<usize>,
}

#[derive(Clone, Debug)]
enum Fault {
    /// The power goes off at the flush's I/O call `call` (or never, if it makes fewer); then
    /// a crash, drawn from `seed`, and a reopen: the flush is kept whole or not at all.
    PowerOff { call: u64, seed: u64 },
    /// The flush's `nth` fdatasync fails with EIO: the flush fails and the journal is poisoned
    /// (a later flush fails too) until a reopen, after a crash: the flush is kept whole or not
    /// at all.
    Eio { nth: u64 },
    /// The flush's `nth` write fails with ENOSPC, likewise.
    Enospc { nth: u64 },
}

#[derive(Clone, Debug)]
enum Step {
    Stage(EntrySpec),
    /// An entry at an LSN the journal must refuse (not after what it holds).
    StageStale,
    Flush(FlushTarget),
    /// `None`: a clean reopen; else a simulated crash first (on the simulated file system).
    Reopen(Option<u64>),
    /// A flush that meets a fault (on the simulated file system; elsewhere a plain flush).
    FaultyFlush(FlushTarget, Fault),
    Query(QuerySpec),
    Export(QuerySpec),
}

fn entry_spec() -> impl Strategy<Value = EntrySpec> {
    (
        prop_oneof![6 => Just(1u64), 3 => 2u64..5, 1 => 5u64..200],
        prop_oneof![8 => 0i64..1000, 2 => -300i64..0],
        0..Operation::ALL.len(),
        prop_oneof![10 => Just(0u8), 10 => Just(1u8), 1 => Just(2u8)],
        prop::option::weighted(0.85, 0..BUCKETS.len()),
        prop::option::weighted(0.8, 0..KEYS.len()),
        prop::option::weighted(0.7, 0..UPLOADS),
        (
            prop::option::of(1u32..10_000),
            prop::option::of(0u64..(5 << 30)),
            prop::option::of((any::<u8>(), prop::option::of(1u32..10_000))),
            prop::option::weighted(0.15, 0..ERRORS.len()),
        ),
    )
        .prop_map(
            |(lsn_gap, time_step_ms, op, actor, bucket, key, upload, (part, size, etag, error))| {
                EntrySpec {
                    lsn_gap,
                    time_step_ms,
                    op,
                    actor,
                    bucket,
                    key,
                    upload,
                    part_number: part,
                    size_bytes: size,
                    etag,
                    error,
                }
            },
        )
}

fn time_spec() -> impl Strategy<Value = TimeSpec> {
    prop_oneof![
        (any::<Index>(), -1i64..=1).prop_map(|(i, d)| TimeSpec::NearEntry(i, d)),
        any::<u16>().prop_map(TimeSpec::Fraction),
    ]
}

fn query_spec() -> impl Strategy<Value = QuerySpec> {
    (
        prop::option::weighted(0.35, 0..=UPLOADS),
        prop::option::weighted(0.5, 0..=BUCKETS.len()),
        prop::option::weighted(0.5, 0..PREFIXES.len()),
        prop::option::weighted(0.3, time_spec()),
        prop::option::weighted(0.3, time_spec()),
        any::<bool>(),
        prop::option::weighted(0.4, 0usize..25),
    )
        .prop_map(
            |(upload, bucket, key_prefix, time_from, time_until, newest_first, limit)| QuerySpec {
                upload,
                bucket,
                key_prefix,
                time_from,
                time_until,
                newest_first,
                limit,
            },
        )
}

fn flush_target() -> impl Strategy<Value = FlushTarget> {
    prop_oneof![
        3 => Just(FlushTarget::LastStaged),
        1 => (1u64..8).prop_map(FlushTarget::Beyond),
        1 => any::<Index>().prop_map(FlushTarget::Partial),
    ]
}

fn fault() -> impl Strategy<Value = Fault> {
    prop_oneof![
        2 => (0u64..6, any::<u64>()).prop_map(|(call, seed)| Fault::PowerOff { call, seed }),
        1 => (0u64..3).prop_map(|nth| Fault::Eio { nth }),
        1 => (0u64..3).prop_map(|nth| Fault::Enospc { nth }),
    ]
}

fn step() -> impl Strategy<Value = Step> {
    prop_oneof![
        24 => entry_spec().prop_map(Step::Stage),
        1 => Just(Step::StageStale),
        5 => flush_target().prop_map(Step::Flush),
        1 => prop::option::of(any::<u64>()).prop_map(Step::Reopen),
        1 => (flush_target(), fault()).prop_map(|(t, f)| Step::FaultyFlush(t, f)),
        2 => query_spec().prop_map(Step::Query),
        1 => query_spec().prop_map(Step::Export),
    ]
}

/// What the journal must hold: entries flushed (durable) and staged, in LSN order.
#[derive(Debug)]
struct Model {
    durable: Vec<Entry>,
    staged: Vec<Entry>,
    covered_lsn: u64,
    time_ms: u64,
}

impl Model {
    /// The LSN a new entry must exceed.
    fn after(&self) -> u64 {
        self.staged.last().map_or(self.covered_lsn, |e| e.lsn).max(self.covered_lsn)
    }

    fn entries(&self) -> impl Iterator<Item = &Entry> {
        self.durable.iter().chain(&self.staged)
    }

    fn entry(&mut self, spec: &EntrySpec) -> Entry {
        self.time_ms = self.time_ms.saturating_add_signed(spec.time_step_ms);
        Entry {
            lsn: self.after() + spec.lsn_gap,
            time_ms: self.time_ms,
            actor: actor(spec.actor),
            op: Operation::ALL[spec.op],
            bucket: spec.bucket.map(|b| BUCKETS[b].to_owned()),
            key: spec.key.map(|k| KEYS[k].to_owned()),
            upload_id: spec.upload.map(upload_id),
            part_number: spec.part_number,
            size_bytes: spec.size_bytes,
            etag: spec.etag.map(|(md5, parts)| JournalEtag { md5: [md5; 16], parts }),
            error: spec.error.map(|e| ERRORS[e].to_owned()),
        }
    }

    fn target(&self, target: &FlushTarget) -> u64 {
        match target {
            FlushTarget::LastStaged => self.after(),
            FlushTarget::Beyond(n) => self.after() + n,
            FlushTarget::Partial(i) if !self.staged.is_empty() => {
                self.staged[i.index(self.staged.len())].lsn
            }
            FlushTarget::Partial(_) => self.after(),
        }
    }

    fn flush(&mut self, through_lsn: u64) {
        let keep =
            self.staged.iter().position(|e| e.lsn > through_lsn).unwrap_or(self.staged.len());
        self.durable.extend(self.staged.drain(..keep));
        self.covered_lsn = self.covered_lsn.max(through_lsn);
    }

    fn query(&self, spec: &QuerySpec) -> Query {
        let times: Vec<u64> = self.entries().map(|e| e.time_ms).collect();
        let low = times.iter().copied().min().unwrap_or(TIME_START_MS).saturating_sub(5);
        let span = times.iter().copied().max().unwrap_or(TIME_START_MS) + 5 - low;
        let time = |spec: &TimeSpec| match spec {
            TimeSpec::NearEntry(i, delta) if !times.is_empty() => {
                times[i.index(times.len())].saturating_add_signed(*delta)
            }
            TimeSpec::NearEntry(..) => TIME_START_MS,
            TimeSpec::Fraction(f) => low + span * u64::from(*f) / u64::from(u16::MAX),
        };
        Query {
            upload_id: spec.upload.map(upload_id),
            // One past the buckets: a bucket no entry names.
            bucket: spec.bucket.map(|b| BUCKETS.get(b).copied().unwrap_or("zz-none").to_owned()),
            key_prefix: spec.key_prefix.map(|p| PREFIXES[p].to_owned()),
            time_from_ms: spec.time_from.as_ref().map(time),
            time_until_ms: spec.time_until.as_ref().map(time),
            newest_first: spec.newest_first,
            limit: spec.limit,
        }
    }

    /// What `query` must return: a naive filter over every entry, in its order, cut at its limit.
    fn expected(&self, query: &Query) -> Vec<Entry> {
        let mut found: Vec<Entry> =
            self.entries().filter(|e| naive_match(query, e)).cloned().collect();
        if query.newest_first {
            found.reverse();
        }
        found.truncate(query.limit.unwrap_or(usize::MAX));
        found
    }
}

/// `Query`'s conditions written out plainly (not through `Query::matches`).
fn naive_match(query: &Query, entry: &Entry) -> bool {
    if query.upload_id.is_some() && entry.upload_id != query.upload_id {
        return false;
    }
    if query.bucket.is_some() && entry.bucket != query.bucket {
        return false;
    }
    if let Some(prefix) = &query.key_prefix {
        match &entry.key {
            Some(key) if key.starts_with(prefix.as_str()) => {}
            _ => return false,
        }
    }
    if query.time_from_ms.is_some_and(|from| entry.time_ms < from) {
        return false;
    }
    query.time_until_ms.is_none_or(|until| entry.time_ms < until)
}

fn lsns(entries: &[Entry]) -> Vec<u64> {
    entries.iter().map(|e| e.lsn).collect()
}

struct Harness {
    fs: Arc<dyn Fs>,
    sim: Option<SimFs>,
    dir: PathBuf,
    options: JournalOptions,
    journal: Option<Journal>,
    _temp: Option<tempfile::TempDir>,
}

impl Harness {
    fn new(real_fs: bool, seed: u64, file_bytes: u64) -> Harness {
        let options = JournalOptions { file_bytes, ..JournalOptions::default() };
        let (fs, sim, dir, temp) = if real_fs {
            let temp = tempfile::tempdir().unwrap();
            (StdFs::shared(), None, temp.path().join("journal"), Some(temp))
        } else {
            let sim = SimFs::new(seed);
            (sim.shared(), Some(sim), PathBuf::from("/data/journal"), None)
        };
        let mut harness = Harness { fs, sim, dir, options, journal: None, _temp: temp };
        harness.reopen(None, 0);
        harness
    }

    fn journal(&self) -> &Journal {
        self.journal.as_ref().unwrap()
    }

    /// Drops the journal, crashes the simulated machine if asked, and opens the journal again,
    /// which must find no damage.
    fn reopen_after(&mut self, crash: Option<CrashMode>) -> JournalOpenReport {
        self.journal = None;
        if let (Some(sim), Some(mode)) = (&self.sim, crash) {
            sim.crash(mode);
        }
        let (journal, report) =
            Journal::open(Arc::clone(&self.fs), &self.dir, self.options).unwrap();
        assert!(report.corruptions.is_empty(), "open report: {report:?}");
        assert_eq!(journal.covered_lsn(), report.covered_lsn);
        let stats = journal.stats();
        assert_eq!(
            (stats.covered_lsn, stats.staged_entries, stats.corruptions, stats.files),
            (report.covered_lsn, 0, 0, report.files)
        );
        self.journal = Some(journal);
        report
    }

    /// A reopen after everything written was synced: the last flush target is covered, and
    /// nothing is torn, whatever a crash kept.
    fn reopen(&mut self, crash: Option<u64>, covered_lsn: u64) {
        let report = self.reopen_after(crash.map(crash_mode));
        assert_eq!(report.covered_lsn, covered_lsn, "open report: {report:?}");
        assert!(report.torn_tail.is_none(), "open report: {report:?}");
    }
}

fn crash_mode(seed: u64) -> CrashMode {
    if seed.is_multiple_of(2) { CrashMode::DropUnsynced } else { CrashMode::KeepRandom { seed } }
}

/// A flush that meets `fault` on the simulated file system; the model follows what the
/// journal may do.
fn faulty_flush(
    harness: &mut Harness,
    model: &mut Model,
    sim: &SimFs,
    through_lsn: u64,
    fault: &Fault,
) {
    let journal = harness.journal();
    match *fault {
        Fault::PowerOff { call, seed } => {
            sim.power_off_at_call(sim.io_calls() + call);
            let flushed = journal.flush_through(through_lsn).is_ok();
            let (before, whole) = (model.covered_lsn, model.covered_lsn.max(through_lsn));
            let report = harness.reopen_after(Some(crash_mode(seed)));
            if flushed {
                assert_eq!(report.covered_lsn, whole, "a flush that returned: {report:?}");
                assert!(report.torn_tail.is_none(), "a flush that returned: {report:?}");
            } else {
                let covered = report.covered_lsn;
                assert!(covered == before || covered == whole, "{before} or {whole}: {report:?}");
            }
            if report.covered_lsn == whole {
                model.flush(through_lsn);
            }
            model.staged.clear();
        }
        Fault::Eio { nth } => {
            sim.eio_at_sync(sim.sync_calls() + nth);
            let result = journal.flush_through(through_lsn);
            // Disarmed, if the flush made fewer calls.
            sim.eio_at_sync(u64::MAX);
            if result.is_ok() {
                model.flush(through_lsn);
                assert_eq!(journal.covered_lsn(), model.covered_lsn);
                return;
            }
            if journal.poisoned().is_none() {
                // A new file's fdatasync failed: the file was not taken, nothing was dropped,
                // and the entries stay staged for the next flush.
                assert_eq!(journal.covered_lsn(), model.covered_lsn, "{result:?}");
                assert_eq!(journal.stats().staged_entries, model.staged.len() as u64);
                return;
            }
            // Poisoned: no fdatasync is tried again over pages the failed one may have
            // dropped, until a reopen.
            assert!(journal.flush_through(through_lsn).is_err(), "a poisoned journal flushed");
            assert_eq!(journal.covered_lsn(), model.covered_lsn, "{result:?}");
            let (before, whole) = (model.covered_lsn, model.covered_lsn.max(through_lsn));
            let report = harness.reopen_after(Some(CrashMode::DropUnsynced));
            let covered = report.covered_lsn;
            assert!(covered == before || covered == whole, "{before} or {whole}: {report:?}");
            if covered == whole {
                model.flush(through_lsn);
            }
            model.staged.clear();
        }
        Fault::Enospc { nth } => {
            sim.enospc_at_write(sim.write_calls() + nth);
            let result = journal.flush_through(through_lsn);
            // Disarmed, if the flush made fewer calls.
            sim.enospc_at_write(u64::MAX);
            if result.is_ok() {
                model.flush(through_lsn);
            }
            assert_eq!(journal.covered_lsn(), model.covered_lsn, "{result:?}");
            assert_eq!(journal.stats().staged_entries, model.staged.len() as u64);
        }
    }
}

fn check_query(journal: &Journal, model: &Model, query: &Query) {
    let expected = model.expected(query);
    let result = journal.query(query);
    assert!(result.warnings.is_empty(), "{query:?}: warnings {:?}", result.warnings);
    assert_eq!(lsns(&result.entries), lsns(&expected), "{query:?}");
    assert_eq!(result.entries, expected, "{query:?}");
}

fn check_export(journal: &Journal, model: &Model, query: &Query) {
    let expected = model.expected(query);
    let mut out = Vec::new();
    let report = journal.export(query, &mut out).unwrap();
    assert!(report.warnings.is_empty(), "{query:?}: warnings {:?}", report.warnings);
    assert_eq!(report.entries, expected.len() as u64, "{query:?}");
    let text = String::from_utf8(out).unwrap();
    assert!(text.is_empty() || text.ends_with('\n'), "{query:?}: export ends mid-line");
    let lines: Vec<serde_json::Value> =
        text.lines().map(|l| serde_json::from_str(l).unwrap()).collect();
    let exported: Vec<u64> = lines.iter().map(|v| v["lsn"].as_u64().unwrap()).collect();
    assert_eq!(exported, lsns(&expected), "{query:?}");
    for (line, entry) in lines.iter().zip(&expected) {
        assert_eq!(line["time_ms"].as_u64(), Some(entry.time_ms), "{line}");
        assert_eq!(line["actor"].as_str(), Some(entry.actor.as_str()), "{line}");
        assert_eq!(line["op"].as_str(), Some(entry.op.name()), "{line}");
        assert_eq!(line["bucket"].as_str(), entry.bucket.as_deref(), "{line}");
        assert_eq!(line["key"].as_str(), entry.key.as_deref(), "{line}");
        assert_eq!(line["upload_id"].as_str().map(str::to_owned), entry.upload_id_hex(), "{line}");
        assert_eq!(line["size_bytes"].as_u64(), entry.size_bytes, "{line}");
        assert_eq!(
            line["outcome"].as_str(),
            Some(entry.error.as_deref().unwrap_or("ok")),
            "{line}"
        );
    }
}

fn run(real_fs: bool, seed: u64, file_bytes: u64, steps: &[Step], finals: &[QuerySpec]) {
    let mut harness = Harness::new(real_fs, seed, file_bytes);
    let mut model =
        Model { durable: Vec::new(), staged: Vec::new(), covered_lsn: 0, time_ms: TIME_START_MS };
    for step in steps {
        let journal = harness.journal();
        match step {
            Step::Stage(spec) => {
                let entry = model.entry(spec);
                journal.stage(entry.clone()).unwrap();
                model.staged.push(entry);
            }
            Step::StageStale => {
                let after = model.after();
                if after == 0 {
                    continue;
                }
                let stale = Entry { lsn: after, ..model.entry(&entry_spec_plain()) };
                match journal.stage(stale) {
                    Err(JournalError::OutOfOrder { lsn, after: refused_after }) => {
                        assert_eq!((lsn, refused_after), (after, after));
                    }
                    other => panic!("a stale LSN {after} was not refused: {other:?}"),
                }
            }
            Step::Flush(target) => {
                let through_lsn = model.target(target);
                let flushed = model.staged.iter().take_while(|e| e.lsn <= through_lsn).count();
                let report = journal.flush_through(through_lsn).unwrap();
                assert_eq!(report.entries, flushed as u64, "flush through {through_lsn}");
                model.flush(through_lsn);
                assert_eq!(journal.covered_lsn(), model.covered_lsn);
                assert_eq!(journal.stats().staged_entries, model.staged.len() as u64);
            }
            Step::Reopen(crash) => {
                model.staged.clear();
                harness.reopen(*crash, model.covered_lsn);
            }
            Step::FaultyFlush(target, fault) => {
                let through_lsn = model.target(target);
                if let Some(sim) = harness.sim.clone() {
                    faulty_flush(&mut harness, &mut model, &sim, through_lsn, fault);
                } else {
                    journal.flush_through(through_lsn).unwrap();
                    model.flush(through_lsn);
                }
            }
            Step::Query(spec) => check_query(journal, &model, &model.query(spec)),
            Step::Export(spec) => check_export(journal, &model, &model.query(spec)),
        }
    }
    let everything = Query::default();
    check_query(harness.journal(), &model, &everything);
    check_export(harness.journal(), &model, &everything);
    for spec in finals {
        check_query(harness.journal(), &model, &model.query(spec));
    }
    // After a reopen only what was flushed is left, and the last flush target is covered.
    model.staged.clear();
    harness.reopen(None, model.covered_lsn);
    check_query(harness.journal(), &model, &everything);
    check_query(harness.journal(), &model, &Query { newest_first: true, ..Query::default() });
    for spec in finals {
        let query = model.query(spec);
        check_query(harness.journal(), &model, &query);
        check_export(harness.journal(), &model, &query);
    }
}

/// An entry spec for the stale-LSN step (its fields do not matter).
fn entry_spec_plain() -> EntrySpec {
    EntrySpec {
        lsn_gap: 1,
        time_step_ms: 0,
        op: 0,
        actor: 0,
        bucket: None,
        key: None,
        upload: None,
        part_number: None,
        size_bytes: None,
        etag: None,
        error: None,
    }
}

fn cases() -> u32 {
    std::env::var("TESSERA_JOURNAL_CASES").ok().and_then(|s| s.parse().ok()).unwrap_or(48)
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(cases()))]

    #[test]
    fn queries_and_exports_match_a_naive_filter_over_the_model(
        real_fs in prop::bool::weighted(0.125),
        seed in any::<u64>(),
        file_bytes in 512u64..8192,
        steps in prop::collection::vec(step(), 0..160),
        finals in prop::collection::vec(query_spec(), 4..16),
    ) {
        run(real_fs, seed, file_bytes, &steps, &finals);
    }
}
