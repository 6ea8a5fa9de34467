//! The engine: the state machine on the log, and the payload store beside it.
//!
//! Commit path (DESIGN.md's invariants 1 and 2): a caller checks its request against the state,
//! ingests its payload (synced) if it has one, appends its transition to the log and queues it,
//! waits until the log has made it durable, then applies every queued transition that is
//! durable, in LSN order, under the state's write lock. Readers see a transition only once it is
//! applied, so only once it is durable; and since transitions apply in LSN order, conflicts are
//! decided in commit order, the same way replay decides them after a crash.

mod buckets;
mod checkpointer;
mod migrate;
mod objects;
mod read;
mod recover;
mod uploads;

use std::collections::{HashMap, VecDeque};
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

use parking_lot::{Mutex, RwLock};
use tessera_wal::{Fs, Lsn, StdFs, Wal, WalError};
use tokio::sync::broadcast;

use crate::config::EngineConfig;
use crate::error::EngineError;
use crate::events::{Event, Subscription};
use crate::lock::DirLock;
use crate::model::{AbortReason, UploadId};
use crate::payload::{CompactReport, Location, PayloadStore, Pending};
use crate::record::{self, MoveRecord, Op, Transition};
use crate::state::{Effect, Outcome, State, addresses};
use crate::{events, history, snapshot};
use tessera_journal::{Journal, JournalOpenReport};

pub use self::checkpointer::Checkpointer;
pub use self::objects::ObjectPut;
pub use self::read::{ObjectReader, OpenedPart};
pub use self::uploads::{Aborted, Completion, PartCopy, PartStored, PartUpload};

/// The log's subdirectory.
pub const WAL_DIR: &str = "wal";
/// The payload store's subdirectory.
pub const PAYLOAD_DIR: &str = "payload";
/// The journal's subdirectory.
pub const JOURNAL_DIR: &str = "journal";
/// The actor named on transitions the engine makes itself (compaction).
pub const SYSTEM_ACTOR: &str = "tessera";
/// The longest actor (owner or access key) a transition may name.
pub const ACTOR_BYTES_MAX: usize = 256;
/// Most bytes one `MoveRecord` encodes to: an address, and four varints of at most 10 bytes.
const MOVE_RECORD_BYTES_MAX: usize = 32 + 5 * 10;
/// Bytes of a `Moves` record besides its moves (version, time, actor, variant, count), rounded
/// up.
const MOVES_RECORD_OVERHEAD_BYTES: usize = 64;

/// A transition appended to the log, waiting to be applied once durable.
struct Queued {
    lsn: u64,
    transition: Transition,
    /// The reference its payload holds until the transition applies (or fails).
    pending: Option<Pending>,
}

/// The state.
struct Core {
    state: State,
}

/// The result of an applied transition, kept until its caller collects it.
type Outcomes = HashMap<u64, Result<Outcome, EngineError>>;

/// The multipart engine. `Send + Sync`: share it (`Arc<Engine>`) between threads.
pub struct Engine {
    dir: PathBuf,
    config: EngineConfig,
    wal: Wal,
    payload: PayloadStore,
    core: RwLock<Core>,
    /// Appended transitions in LSN order (the append and the push happen under this lock).
    queue: Mutex<VecDeque<Queued>>,
    /// Outcomes of applied transitions, by LSN. Invariant: inserted under the state's write
    /// lock, in the same critical section that applied them.
    outcomes: Mutex<Outcomes>,
    events: broadcast::Sender<Arc<Event>>,
    /// The history of committed transitions, if kept (and if it opened).
    journal: Option<Journal>,
    /// What opening the journal found.
    journal_report: JournalOpenReport,
    /// What recovery found and did.
    open_report: OpenReport,
    /// Why the journal cannot be trusted to hold every transition (it failed to open, or an
    /// entry could not be staged): checkpoints are refused, so the log keeps the history.
    journal_fault: Mutex<Option<String>>,
    /// Staged bytes added to `journal_staged_bytes_max` after failed flushes.
    journal_flush_backoff_bytes: std::sync::atomic::AtomicUsize,
    /// One checkpoint (or compaction, or journal flush) at a time.
    maintenance: Mutex<()>,
    wal_bytes_since_checkpoint: AtomicU64,
    /// Added to the checkpoint interval after automatic checkpoints failed.
    checkpoint_backoff_bytes: AtomicU64,
    wal_bytes_total: AtomicU64,
    checkpoint_lsn: AtomicU64,
    checkpoints: AtomicU64,
    /// How big the last checkpoint was: the next one's buffers start that big.
    checkpoint_sizes: Mutex<CheckpointSizes>,
    /// The uploads and objects given inline parts since the last move into segments.
    inline_owners: Mutex<migrate::InlineOwners>,
    /// Wakes the checkpoint thread, if one runs (`Engine::start_checkpointer`).
    checkpoint_signal: checkpointer::Signal,
    expired_uploads: AtomicU64,
    _lock: Option<DirLock>,
}

impl std::fmt::Debug for Engine {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Engine").field("dir", &self.dir).finish_non_exhaustive()
    }
}

/// What [`Engine::open`] found and did while recovering (the journal's part is
/// [`Engine::journal_report`]).
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct OpenReport {
    /// The log's: a torn tail cut, checkpoints that failed their checks and were set aside.
    pub wal: tessera_wal::OpenReport,
    /// The payload store's: segments removed, tails cut, what is live.
    pub payload: crate::payload::RecoveryReport,
    /// The LSN of the checkpoint recovery started from (0: none).
    pub checkpoint_lsn: u64,
    /// Records replayed after it.
    pub replayed: u64,
}

/// What [`Engine::expire_due`] did.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct ExpiryReport {
    /// Uploads expired.
    pub uploads: u64,
    /// Their parts' bytes, released.
    pub bytes_freed: u64,
}

/// How much the last checkpoint held.
#[derive(Clone, Debug, Default)]
pub(crate) struct CheckpointSizes {
    /// Payloads it listed.
    pub payloads: usize,
    /// Bytes of its state section.
    pub state_bytes: usize,
}

/// An empty vector with room for `len` values, every page of it already written (with `fill`),
/// so that filling it takes no page faults.
fn resident<T: Clone>(len: usize, fill: T) -> Vec<T> {
    let mut buffer = Vec::with_capacity(len);
    buffer.resize(len, fill);
    buffer.clear();
    buffer
}

/// What a checkpoint did.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct CheckpointReport {
    /// The last LSN it covers.
    pub lsn: u64,
    /// Size of its blob.
    pub blob_bytes: u64,
    /// Inline payloads moved into payload segments first.
    pub inline_payloads_moved: u64,
    /// Time moving them.
    pub migrate: Duration,
    /// Of which the state's write lock was held (pointing the parts at their stored copies;
    /// transitions wait to apply, and reads wait).
    pub migrate_locked: Duration,
    /// Time encoding the checkpoint.
    pub encode: Duration,
    /// Of which the state's read lock was held (transitions wait to apply meanwhile).
    pub state_locked: Duration,
    /// Time writing, syncing and retiring log segments.
    pub write: Duration,
}

/// What the engine holds.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Stats {
    /// Buckets.
    pub buckets: u64,
    /// Uploads in progress.
    pub live_uploads: u64,
    /// Their parts.
    pub parts: u64,
    /// Objects.
    pub objects: u64,
    /// Payload-store bytes of live entries.
    pub payload_live_bytes: u64,
    /// Payload-store bytes no live entry uses (for compaction).
    pub payload_dead_bytes: u64,
    /// Payload-store segment files.
    pub payload_segments: u64,
    /// Record bytes logged since the engine opened.
    pub wal_bytes: u64,
    /// Record bytes logged since the last checkpoint.
    pub wal_bytes_since_checkpoint: u64,
    /// The newest checkpoint's LSN (0: none).
    pub checkpoint_lsn: u64,
    /// The last LSN applied.
    pub applied_lsn: u64,
    /// Checkpoints written since the engine opened.
    pub checkpoints: u64,
    /// Uploads expired since the engine opened (by `expire_due`).
    pub expired_uploads: u64,
    /// The log's batches: group commit and its fdatasyncs.
    pub wal: tessera_wal::WalStats,
}

impl Engine {
    /// Opens (or creates) the engine in `dir` on the real file system: takes the directory's
    /// lock, recovers from the newest valid checkpoint and the log after it.
    pub fn open(dir: impl Into<PathBuf>, config: EngineConfig) -> Result<Engine, EngineError> {
        let dir = dir.into();
        let lock = DirLock::acquire(&dir)?;
        Engine::open_inner(Arc::new(StdFs), dir, config, Some(lock))
    }

    /// Opens the engine on any file system (the simulator, in tests). Takes no OS lock: the
    /// caller keeps other openers away.
    pub fn open_with_fs(
        fs: Arc<dyn Fs>,
        dir: impl Into<PathBuf>,
        config: EngineConfig,
    ) -> Result<Engine, EngineError> {
        Engine::open_inner(fs, dir.into(), config, None)
    }

    /// The data directory.
    pub fn dir(&self) -> &Path {
        &self.dir
    }

    /// The configuration.
    pub fn config(&self) -> &EngineConfig {
        &self.config
    }

    /// The payload store (for verification and inspection).
    pub fn payload_store(&self) -> &PayloadStore {
        &self.payload
    }

    /// The log.
    pub fn wal(&self) -> &Wal {
        &self.wal
    }

    pub(crate) fn now_ms(&self) -> u64 {
        self.config.clock.now_ms()
    }

    /// Reads the state (as of the last applied transition).
    pub(crate) fn read_state<T>(&self, f: impl FnOnce(&State) -> T) -> T {
        f(&self.core.read().state)
    }

    /// Makes a transition: appends it, waits until it is durable, applies it in LSN order, and
    /// returns its outcome. `pending` is the reference its payload holds; it is committed if the
    /// transition applies, released if not.
    pub(crate) fn commit(
        &self,
        transition: Transition,
        pending: Option<Pending>,
    ) -> Result<Outcome, EngineError> {
        if transition.actor.len() > ACTOR_BYTES_MAX {
            return Err(EngineError::InvalidArgument {
                reason: format!(
                    "an actor (owner or access key) of at most {ACTOR_BYTES_MAX} bytes"
                ),
            });
        }
        let bytes = record::encode(&transition);
        let lsn = {
            let mut queue = self.queue.lock();
            let lsn = self.wal.append(&bytes).map_err(|e| match e {
                // Too many parts in a completion, or too much metadata, for this log's records.
                WalError::RecordTooLarge { bytes, max_bytes } => EngineError::InvalidRequest {
                    reason: format!(
                        "the transition's record is {bytes} bytes; this log takes at most {max_bytes}"
                    ),
                },
                e => EngineError::Wal(e),
            })?;
            queue.push_back(Queued { lsn: lsn.0, transition, pending });
            lsn
        };
        let logged = bytes.len() as u64;
        self.wal_bytes_total.fetch_add(logged, Ordering::Relaxed);
        let since = self.wal_bytes_since_checkpoint.fetch_add(logged, Ordering::Relaxed) + logged;
        // A leader applies its batch before waking the batch's waiters; so most callers find
        // their outcome ready, and only the leader takes the state's write lock.
        if let Err(e) = self.wal.wait_durable_then(lsn, &|durable| self.apply_until(durable.0)) {
            // Never durable (the log is poisoned): nobody applies it.
            self.queue.lock().retain(|q| q.lsn != lsn.0);
            return Err(e.into());
        }
        let ready = self.outcomes.lock().remove(&lsn.0);
        let outcome = match ready {
            Some(outcome) => outcome,
            // Durable, but no hook has applied it yet (a leader without one, or found durable
            // at once): apply it here.
            None => self.apply_durable(lsn.0),
        };
        self.flush_journal_if_due();
        let due = self
            .config
            .checkpoint_wal_bytes
            .saturating_add(self.checkpoint_backoff_bytes.load(Ordering::Relaxed));
        // A checkpoint thread takes it if one runs; else this call does, unless another
        // checkpoint (or compaction) is running.
        if since >= due
            && !self.checkpoint_signal.checkpoint_due()
            && let Some(_one) = self.maintenance.try_lock()
        {
            self.checkpoint_if_due_locked();
        }
        outcome
    }

    /// Applies every queued transition that is durable, in LSN order, and returns the outcome
    /// of the one at `mine` (which is durable).
    fn apply_durable(&self, mine: u64) -> Result<Outcome, EngineError> {
        self.apply_until(self.wal.lsn_durable().0);
        // Whoever popped `mine` applied it, and stored its outcome, before this thread's
        // `apply_until` got the state's lock.
        self.outcomes.lock().remove(&mine).unwrap_or_else(|| {
            Err(EngineError::InvalidRequest { reason: format!("no outcome for LSN {mine}") })
        })
    }

    /// Applies the queued transitions up to `durable` (all durable), in LSN order, and stores
    /// their outcomes for their callers.
    fn apply_until(&self, durable: u64) {
        let mut core = self.core.write();
        // Stored even if an apply panics: the outcomes before it are its callers'.
        let mut applied = StoreOnDrop { outcomes: &self.outcomes, applied: Vec::new() };
        loop {
            let next = {
                let mut queue = self.queue.lock();
                match queue.front() {
                    Some(front) if front.lsn <= durable => queue.pop_front(),
                    _ => None,
                }
            };
            let Some(Queued { lsn, transition, pending }) = next else { break };
            let subject = events::subject(&core.state, &transition);
            let own = pending.as_ref().and_then(Pending::handle);
            let result = core.state.apply(lsn, &transition, own);
            let result = result.map(|applied| {
                self.run_effects(&applied.effects, pending);
                applied.outcome
            });
            if result.is_ok()
                && let Some(owner) = migrate::inline_owner(&transition.op)
                && let Some(noted) = self.inline_owners.lock().as_mut()
            {
                noted.push(owner);
            }
            self.record(lsn, &transition, subject, &result);
            applied.applied.push((lsn, result));
        }
        drop(applied);
        drop(core);
    }

    /// Carries out an applied transition's payload effects (live: moves were made already).
    fn run_effects(&self, effects: &[Effect], mut pending: Option<Pending>) {
        for effect in effects {
            let result = match effect {
                Effect::KeepOwn => {
                    if let Some(own) = pending.take() {
                        own.commit();
                    }
                    Ok(())
                }
                Effect::AddRef(handle) => self.payload.add_ref_at(*handle),
                Effect::Release(handle) => self.payload.release_at(*handle),
                Effect::Move(_) => Ok(()),
            };
            if let Err(e) = result {
                // The state and the store disagree; the state is what the log says. Recovery
                // rebuilds the store's counts from the log.
                tracing::error!(error = %e, ?effect, "payload reference not updated");
            }
        }
    }

    /// Makes an applied transition history: stages its journal entry and publishes its event.
    /// Called under the state's write lock, in LSN order.
    fn record(
        &self,
        lsn: u64,
        transition: &Transition,
        subject: events::Subject,
        result: &Result<Outcome, EngineError>,
    ) {
        let listened = self.events.receiver_count() > 0;
        if self.journal.is_none() && !listened {
            return;
        }
        let event = events::event(lsn, transition, subject, result);
        let staged = if listened {
            let event = Arc::new(event);
            let staged = stage_history(self.journal.as_ref(), Event::clone(&event));
            // No receiver is not an error: events are for whoever listens.
            let _ = self.events.send(event);
            staged
        } else {
            stage_history(self.journal.as_ref(), event)
        };
        if let Err(fault) = staged {
            self.journal_fault.lock().get_or_insert(fault);
        }
    }

    /// Makes the staged history durable once it outgrows `journal_staged_bytes_max` (unless
    /// other maintenance is running: a checkpoint flushes it anyway).
    fn flush_journal_if_due(&self) {
        let Some(journal) = &self.journal else { return };
        let due = self
            .config
            .journal_staged_bytes_max
            .saturating_add(self.journal_flush_backoff_bytes.load(Ordering::Relaxed));
        if journal.staged_bytes() < due {
            return;
        }
        let Some(_one) = self.maintenance.try_lock() else { return };
        // Every transition up to the applied LSN has staged its entry (under the write lock).
        let applied = self.core.read().state.applied_lsn;
        // Written, not synced: the checkpoint's flush makes it durable, and until then the
        // log holds these transitions.
        match journal.write_through(applied) {
            Ok(_) => self.journal_flush_backoff_bytes.store(0, Ordering::Relaxed),
            Err(e) => {
                // Tried again after another `journal_staged_bytes_max`, not at every commit.
                let step = self.config.journal_staged_bytes_max;
                self.journal_flush_backoff_bytes.fetch_add(step, Ordering::Relaxed);
                tracing::warn!(error = %e, "journal flush failed; the log keeps the history meanwhile");
            }
        }
    }

    /// The journal: the history of committed transitions, for queries and export (`None` if
    /// the configuration keeps none, or if it could not be opened: see
    /// [`Engine::journal_fault`]).
    pub fn journal(&self) -> Option<JournalView<'_>> {
        self.journal.as_ref().map(|journal| JournalView { journal })
    }

    /// Why the journal cannot be trusted to hold every transition, if so (it failed to open,
    /// an entry could not be staged, or an fdatasync of its files failed and poisoned it).
    /// Checkpoints are refused meanwhile, so that the log keeps the history; a reopen
    /// re-derives it.
    pub fn journal_fault(&self) -> Option<String> {
        let fault = self.journal_fault.lock().clone();
        fault.or_else(|| {
            let poisoned = self.journal.as_ref().and_then(Journal::poisoned)?;
            Some(format!("journal poisoned: {poisoned}"))
        })
    }

    /// What opening the journal found (damage, a torn tail cut).
    pub fn journal_report(&self) -> &JournalOpenReport {
        &self.journal_report
    }

    /// What recovery found and did when this engine opened.
    pub fn open_report(&self) -> &OpenReport {
        &self.open_report
    }

    /// A stream of the transitions committed from now on, in LSN order, each published once it
    /// is durable. A subscriber that falls more than `events_capacity` behind gets
    /// [`crate::SubscriptionError::Lagged`] and then the newer events.
    pub fn subscribe(&self) -> Subscription {
        Subscription { receiver: self.events.subscribe() }
    }

    /// Takes a checkpoint now: the state at the last applied LSN and the payload store's
    /// references, written atomically; then retires the log segments it covers. Returns what it
    /// did, or `None` if nothing changed since the last one.
    pub fn checkpoint(&self) -> Result<Option<CheckpointReport>, EngineError> {
        let _one = self.maintenance.lock();
        self.checkpoint_locked()
    }

    fn checkpoint_locked(&self) -> Result<Option<CheckpointReport>, EngineError> {
        if self.core.read().state.applied_lsn <= self.checkpoint_lsn.load(Ordering::Acquire) {
            return Ok(None);
        }
        let started = Instant::now();
        let (inline_payloads_moved, migrate_locked) = self.migrate_inline()?;
        let migrate = started.elapsed();
        // The buffers are made resident before the lock is taken, a little bigger than last
        // time's: filling them then takes no page faults (a third of the time otherwise).
        let last = self.checkpoint_sizes.lock().clone();
        let mut payloads = resident(last.payloads + last.payloads / 8, snapshot::NO_PAYLOAD);
        let mut positions = resident(last.payloads + last.payloads / 8, addresses::UNLISTED);
        let state_section = resident(last.state_bytes + last.state_bytes / 8, 0u8);
        let (lsn, state_section, mut payloads, state_locked) = {
            let core = self.core.read();
            let locked_at = Instant::now();
            let lsn = core.state.applied_lsn;
            // The payload snapshot is taken under the state's read lock: no transition applies
            // meanwhile, so its references are exactly those of the state at `lsn` (moves
            // recorded after `lsn` may show; replay re-applies them as no-ops). It is taken
            // slot by slot: the state's parts name their payloads by their positions among
            // the slots with references.
            self.payload.slots_into(&mut payloads);
            let mut listed = 0;
            positions.extend(payloads.iter().map(|(_, _, refs)| {
                if *refs == 0 {
                    return addresses::UNLISTED;
                }
                listed += 1;
                listed - 1
            }));
            let (state_section, _) = addresses::encoding(positions, || {
                snapshot::encode_state(&core.state, state_section)
            });
            let state_section = state_section?;
            *self.checkpoint_sizes.lock() =
                CheckpointSizes { payloads: payloads.len(), state_bytes: state_section.len() };
            (lsn, state_section, payloads, locked_at.elapsed())
        };
        // The payload section is encoded after the lock is released: writers wait only for the
        // state's part. Those listed keep their slot order, which gave their positions.
        payloads.retain(|e| e.2 > 0);
        let blob = snapshot::encode(lsn, &payloads, &state_section)?;
        let encode = started.elapsed() - migrate;
        // The history up to `lsn` is durable before the checkpoint exists: so the log segments
        // it lets go hold nothing the journal lacks, and after a crash, replay from this
        // checkpoint re-derives every entry the journal does not have.
        if let Some(fault) = self.journal_fault() {
            return Err(EngineError::JournalUnavailable { reason: fault });
        }
        if let Some(journal) = &self.journal {
            journal.flush_through(lsn)?;
        }
        let since_before = self.wal_bytes_since_checkpoint.swap(0, Ordering::Relaxed);
        if let Err(e) = self.wal.write_checkpoint(Lsn(lsn), &blob) {
            self.wal_bytes_since_checkpoint.fetch_add(since_before, Ordering::Relaxed);
            return Err(e.into());
        }
        self.checkpoint_lsn.store(lsn, Ordering::Release);
        self.checkpoints.fetch_add(1, Ordering::Relaxed);
        self.wal.retire_segments(|_| Ok(()))?;
        if let Some(journal) = &self.journal
            && let Err(e) = journal.apply_retention(self.now_ms())
        {
            tracing::warn!(error = %e, "journal retention failed");
        }
        let report = CheckpointReport {
            lsn,
            blob_bytes: blob.len() as u64,
            inline_payloads_moved: inline_payloads_moved as u64,
            migrate,
            migrate_locked,
            encode,
            state_locked,
            write: started.elapsed() - migrate - encode,
        };
        tracing::info!(?report, "checkpoint written");
        Ok(Some(report))
    }

    /// Compacts the payload segments whose live fraction fell below the configured threshold;
    /// each segment's moves are logged (durably) before the old copies can go.
    pub fn compact(&self) -> Result<CompactReport, EngineError> {
        let _one = self.maintenance.lock();
        let report = self.payload.compact(|moves| {
            let moves: Vec<MoveRecord> = moves
                .iter()
                .filter_map(|m| match (&m.from, &m.to) {
                    (
                        Location::Segment { segment: from, offset: from_offset, len },
                        Location::Segment { segment: to, offset: to_offset, .. },
                    ) => Some(MoveRecord {
                        address: m.address,
                        len: *len,
                        from: (*from, *from_offset),
                        to: (*to, *to_offset),
                    }),
                    _ => None,
                })
                .collect();
            // As many records as the log's record limit needs (a segment of small payloads
            // moves many); replay applies each move on its own, so any split is equivalent.
            let per_record =
                (self.wal.record_bytes_max().saturating_sub(MOVES_RECORD_OVERHEAD_BYTES)
                    / MOVE_RECORD_BYTES_MAX)
                    .max(1);
            let mut last = None;
            for chunk in moves.chunks(per_record) {
                let transition = Transition {
                    time_ms: self.now_ms(),
                    actor: SYSTEM_ACTOR.to_owned(),
                    op: Op::Moves { moves: chunk.to_vec() },
                    condition: None,
                };
                // Not queued: the store makes the moves itself once this returns, and applying
                // the record changes no state. (Going through the queue would deadlock:
                // appliers take the store's lock, which compaction holds here.)
                last = Some(self.wal.append(&record::encode(&transition))?);
            }
            if let Some(lsn) = last {
                self.wal.wait_durable(lsn)?;
            }
            Ok(())
        })?;
        Ok(report)
    }

    /// Aborts every upload whose expiry has passed, each as its own transition (reason
    /// "expired"). Returns how many, and the bytes their parts held.
    pub fn expire_due(&self) -> Result<ExpiryReport, EngineError> {
        let now_ms = self.now_ms();
        let due: Vec<UploadId> = self.read_state(|state| {
            state
                .expiry
                .iter()
                .take_while(|(at_ms, _)| *at_ms <= now_ms)
                .map(|(_, id)| *id)
                .collect()
        });
        let mut report = ExpiryReport::default();
        for upload_id in due {
            let transition = Transition {
                time_ms: self.now_ms(),
                actor: SYSTEM_ACTOR.to_owned(),
                op: Op::Abort { upload_id, reason: AbortReason::Expired, expected_version: None },
                condition: None,
            };
            match self.commit(transition, None) {
                Ok(Outcome::Aborted { bytes, .. }) => {
                    self.expired_uploads.fetch_add(1, Ordering::Relaxed);
                    report.uploads += 1;
                    report.bytes_freed += bytes;
                }
                // Completed, aborted or extended meanwhile: not due after all.
                Ok(_) | Err(EngineError::NoSuchUpload { .. } | EngineError::NotDue { .. }) => {}
                Err(e) => return Err(e),
            }
        }
        Ok(report)
    }

    /// What the engine holds.
    pub fn stats(&self) -> Stats {
        let space = self.payload.space();
        let core = self.core.read();
        let state = &core.state;
        Stats {
            buckets: state.buckets.len() as u64,
            live_uploads: state.uploads.len() as u64,
            parts: state.part_count,
            objects: state.object_count,
            payload_live_bytes: space.live_bytes,
            payload_dead_bytes: space.file_bytes.saturating_sub(space.live_bytes),
            payload_segments: space.segments,
            wal_bytes: self.wal_bytes_total.load(Ordering::Relaxed),
            wal_bytes_since_checkpoint: self.wal_bytes_since_checkpoint.load(Ordering::Relaxed),
            checkpoint_lsn: self.checkpoint_lsn.load(Ordering::Relaxed),
            applied_lsn: state.applied_lsn,
            checkpoints: self.checkpoints.load(Ordering::Relaxed),
            expired_uploads: self.expired_uploads.load(Ordering::Relaxed),
            wal: self.wal.stats(),
        }
    }

    /// Whether a failed write or fsync poisoned the log (then every write fails until a
    /// reopen; reads go on).
    pub fn poisoned(&self) -> Option<String> {
        self.wal.poisoned().map(|cause| cause.to_string())
    }
}

/// Stages an applied transition's journal entry, if it has one; an entry that cannot be
/// staged is the journal's fault (returned).
pub(crate) fn stage_history(journal: Option<&Journal>, event: Event) -> Result<(), String> {
    let (Some(journal), Some(entry)) = (journal, history::entry(event)) else {
        return Ok(());
    };
    journal.stage(entry).map_err(|e| {
        tracing::error!(error = %e, "journal entry not staged: checkpoints are refused");
        format!("a journal entry could not be staged: {e}")
    })
}

/// Outcomes of applied transitions, moved into the engine's map when dropped.
struct StoreOnDrop<'a> {
    outcomes: &'a Mutex<Outcomes>,
    applied: Vec<(u64, Result<Outcome, EngineError>)>,
}

impl Drop for StoreOnDrop<'_> {
    fn drop(&mut self) {
        if !self.applied.is_empty() {
            self.outcomes.lock().extend(self.applied.drain(..));
        }
    }
}

/// The journal as the engine lends it: queries, export and figures (the engine alone stages
/// and flushes).
#[derive(Clone, Copy, Debug)]
pub struct JournalView<'a> {
    journal: &'a Journal,
}

impl JournalView<'_> {
    /// The entries matching `query` (see [`Journal::query`]).
    pub fn query(&self, query: &tessera_journal::Query) -> tessera_journal::QueryResult {
        self.journal.query(query)
    }

    /// Writes the matching entries as JSON lines (see [`Journal::export`]).
    pub fn export(
        &self,
        query: &tessera_journal::Query,
        out: &mut dyn std::io::Write,
    ) -> Result<tessera_journal::ExportReport, tessera_journal::JournalError> {
        self.journal.export(query, out)
    }

    /// What the journal holds.
    pub fn stats(&self) -> tessera_journal::JournalStats {
        self.journal.stats()
    }

    /// Every journalled transition up to this LSN is durable in the journal's files.
    pub fn covered_lsn(&self) -> u64 {
        self.journal.covered_lsn()
    }

    /// Drops old history now, as the configured retention says (the engine does it after
    /// every checkpoint).
    pub fn apply_retention(
        &self,
        now_ms: u64,
    ) -> Result<tessera_journal::RetentionReport, tessera_journal::JournalError> {
        self.journal.apply_retention(now_ms)
    }
}
