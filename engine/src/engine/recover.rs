//! Opening: the newest valid checkpoint, then every durable record after it, applied as they
//! were live; then the payload store cuts what no committed record references.

use std::collections::{HashMap, VecDeque};
use std::path::PathBuf;
use std::sync::Arc;
use std::sync::atomic::AtomicU64;

use parking_lot::{Mutex, RwLock};
use tessera_wal::{Fs, Lsn, Wal};
use tokio::sync::broadcast;

use crate::config::EngineConfig;
use crate::engine::{
    CheckpointSizes, Core, Engine, JOURNAL_DIR, OpenReport, PAYLOAD_DIR, WAL_DIR, stage_history,
};
use crate::error::EngineError;
use crate::events;
use crate::lock::DirLock;
use crate::payload::{Location, PayloadStore};
use crate::record::{self, Op, PayloadRecord, Transition};
use crate::state::{Effect, State};
use crate::{record::MoveRecord, snapshot};
use tessera_journal::{Journal, JournalOpenReport};

impl Engine {
    pub(super) fn open_inner(
        fs: Arc<dyn Fs>,
        dir: PathBuf,
        config: EngineConfig,
        lock: Option<DirLock>,
    ) -> Result<Engine, EngineError> {
        config.validate()?;
        let opened = Wal::open(Arc::clone(&fs), dir.join(WAL_DIR), config.wal.clone())?;
        let wal = opened.wal;
        let wal_report = opened.report;
        let payload =
            PayloadStore::open(Arc::clone(&fs), dir.join(PAYLOAD_DIR), config.payload.clone())?;
        let (mut state, checkpoint_lsn, state_section_bytes) = match &opened.checkpoint {
            Some(checkpoint) => {
                let lsn = checkpoint.lsn.0;
                let sections = snapshot::split(lsn, &checkpoint.blob)?;
                // The two sections load on two threads: the payload index and the state are
                // independent until replay.
                let (payloads, image) = std::thread::scope(|scope| {
                    let payloads = scope.spawn(|| {
                        snapshot::decode_payloads(lsn, sections.payloads)
                            .and_then(|entries| Ok(payload.restore_entries(&entries)?))
                    });
                    let image = snapshot::decode_state(lsn, sections.version, sections.state)
                        .and_then(|image| {
                            let mut state = image.state;
                            state.restore(image.uploads).map_err(|reason| {
                                EngineError::Undecodable {
                                    what: "checkpoint",
                                    lsn,
                                    reason: reason.to_owned(),
                                }
                            })?;
                            Ok(state)
                        });
                    let payloads = payloads.join().unwrap_or_else(|_| {
                        Err(EngineError::Undecodable {
                            what: "checkpoint",
                            lsn,
                            reason: "the payload section's loader panicked".to_owned(),
                        })
                    });
                    (payloads, image)
                });
                payloads?;
                (image?, lsn, sections.state.len())
            }
            None => (State::default(), 0, 0),
        };
        let log_end_lsn = wal.lsn_last_appended().0;
        let (journal, journal_report, journal_fault) =
            open_journal(&fs, &dir, &config, checkpoint_lsn, log_end_lsn);
        // Entries after what the journal holds are re-derived from the records, as live.
        let journal_covered = journal.as_ref().map_or(u64::MAX, Journal::covered_lsn);
        let mut journal_fault = journal_fault;
        let mut replayed = 0u64;
        for record in wal.replay(Lsn(checkpoint_lsn).next())? {
            let record = record?;
            let lsn = record.lsn.0;
            let transition = record::decode(lsn, &record.bytes)?;
            let subject = (lsn > journal_covered).then(|| events::subject(&state, &transition));
            let result = state.apply(lsn, &transition).map(|applied| {
                let effects = recover_effects(&payload, &transition, &applied.effects);
                effects.map(|()| applied.outcome)
            });
            let result = match result {
                Ok(Err(e)) => return Err(e),
                Ok(Ok(outcome)) => Ok(outcome),
                Err(e) => Err(e),
            };
            if let Some(subject) = subject {
                let event = events::event(lsn, &transition, subject, &result);
                if let Err(fault) = stage_history(journal.as_ref(), event) {
                    journal_fault.get_or_insert(fault);
                }
            }
            replayed += 1;
        }
        let payload_report = payload
            .finish_recovery()
            .map_err(|e| blame_cut_tail(e.into(), wal_report.torn_tail.as_ref()))?;
        let live_payloads = payload.space().payloads;
        tracing::info!(
            checkpoint_lsn,
            replayed,
            applied_lsn = state.applied_lsn,
            uploads = state.uploads.len(),
            ?payload_report,
            "engine recovered"
        );
        let (events, _) = broadcast::channel(config.events_capacity);
        Ok(Engine {
            dir,
            config,
            wal,
            payload,
            core: RwLock::new(Core { state }),
            outcomes: Mutex::new(HashMap::new()),
            queue: Mutex::new(VecDeque::new()),
            events,
            journal,
            journal_report,
            open_report: OpenReport {
                wal: wal_report,
                payload: payload_report,
                checkpoint_lsn,
                replayed,
            },
            journal_fault: Mutex::new(journal_fault),
            journal_flush_backoff_bytes: std::sync::atomic::AtomicUsize::new(0),
            maintenance: Mutex::new(()),
            wal_bytes_since_checkpoint: AtomicU64::new(0),
            checkpoint_backoff_bytes: AtomicU64::new(0),
            wal_bytes_total: AtomicU64::new(0),
            checkpoint_lsn: AtomicU64::new(checkpoint_lsn),
            checkpoints: AtomicU64::new(0),
            // The next checkpoint's buffers are sized by this one's.
            checkpoint_sizes: Mutex::new(CheckpointSizes {
                payloads: usize::try_from(live_payloads).unwrap_or(0),
                state_bytes: state_section_bytes,
            }),
            // Replay may have given any upload or object an inline part.
            inline_owners: Mutex::new(None),
            checkpoint_signal: Default::default(),
            expired_uploads: AtomicU64::new(0),
            _lock: lock,
        })
    }
}

/// Opens the journal and lines it up with the log: history beyond the log's end (a repaired
/// log) is cut, and history lost below the checkpoint (damage, a journal turned on late) is
/// recorded as a gap, so that no block ever claims it. A journal that cannot open never stops
/// the engine: it runs without one, and refuses checkpoints (the log keeps the history) until
/// a reopen finds the journal again.
fn open_journal(
    fs: &Arc<dyn Fs>,
    dir: &std::path::Path,
    config: &EngineConfig,
    checkpoint_lsn: u64,
    log_end_lsn: u64,
) -> (Option<Journal>, JournalOpenReport, Option<String>) {
    let Some(options) = config.journal else { return (None, JournalOpenReport::default(), None) };
    let opened = Journal::open(Arc::clone(fs), dir.join(JOURNAL_DIR), options).and_then(
        |(journal, mut report)| {
            if journal.covered_lsn() > log_end_lsn {
                report.corruptions.extend(journal.cut_after(log_end_lsn)?);
            }
            if journal.covered_lsn() < checkpoint_lsn {
                // The journal is flushed through every checkpoint before it is written: this
                // history is lost, and replay (from the checkpoint) cannot bring it back.
                report.corruptions.extend(journal.mark_gap(checkpoint_lsn)?);
            }
            report.covered_lsn = journal.covered_lsn();
            Ok((journal, report))
        },
    );
    match opened {
        Ok((journal, report)) => (Some(journal), report, None),
        Err(e) => {
            let fault = format!("the journal could not be opened: {e}");
            tracing::error!(%fault, "the engine runs without history and takes no checkpoint");
            (None, JournalOpenReport::default(), Some(fault))
        }
    }
}

/// A live reference into a payload segment that does not exist, after the log cut its last
/// batch as torn. A segment is removed only once a durable record has released or moved its
/// last live payload, so the cut batch may have been acknowledged (a flipped bit looks like a
/// torn write) and its record the one that emptied the segment; or the segment was removed
/// outside the engine. The error names the log file and where it was cut, beside the segment.
fn blame_cut_tail(e: EngineError, torn: Option<&tessera_wal::TornTail>) -> EngineError {
    match (e, torn) {
        (
            EngineError::Payload(cause @ crate::payload::PayloadError::MissingSegment { .. }),
            Some(torn),
        ) => EngineError::AcknowledgedTailCut { torn: Box::new(torn.clone()), cause },
        (e, _) => e,
    }
}

fn segment_location(at: (crate::payload::SegmentId, u64), len: u64) -> Location {
    Location::Segment { segment: at.0, offset: at.1, len }
}

/// Replays a transition's payload effects into the store, as the live path made them.
fn recover_effects(
    payload: &PayloadStore,
    transition: &Transition,
    effects: &[Effect],
) -> Result<(), EngineError> {
    for effect in effects {
        match effect {
            Effect::KeepOwn => {
                let part = match &transition.op {
                    Op::PutPart { part, .. } | Op::PutObject { part, .. } => part,
                    _ => continue,
                };
                if let PayloadRecord::Stored { address, segment, offset, healed_from } =
                    &part.payload
                {
                    let to = segment_location((*segment, *offset), part.size_bytes);
                    if let Some(from) = healed_from {
                        payload.recover_move(
                            address,
                            &segment_location(*from, part.size_bytes),
                            &to,
                        )?;
                    }
                    payload.recover_ref(*address, &to)?;
                }
            }
            Effect::AddRef(address) => payload.recover_ref(*address, &Location::Empty)?,
            Effect::Release(address) => payload.recover_release(address)?,
            Effect::Move(MoveRecord { address, len, from, to }) => {
                let from = segment_location(*from, *len);
                payload.recover_move(address, &from, &segment_location(*to, *len))?;
            }
        }
    }
    Ok(())
}
