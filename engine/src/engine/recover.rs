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
use crate::payload::{Location, PayloadHandle, PayloadStore};
use crate::record::{self, Op, PartRecord, PayloadRecord, Transition};
use crate::state::{Effect, State, addresses};
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
                (load_checkpoint(&payload, lsn, sections)?, lsn, sections.state.len())
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
            let own = hold_own(&payload, &transition)?;
            let result = match state.apply(lsn, &transition, own) {
                Ok(applied) => {
                    recover_effects(&payload, &transition, &applied.effects, own)?;
                    Ok(applied.outcome)
                }
                Err(e) => {
                    if let Some(own) = own {
                        payload.recover_drop(own)?;
                    }
                    Err(e)
                }
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

/// Loads a checkpoint's payload list into the (empty) payload index and returns its state.
/// Since version 3 the parts name their payloads by position in the list, so the two sections
/// load on two threads; before, by address, so the list loads first. Either way the references
/// the parts hold must be those the list records.
fn load_checkpoint(
    payload: &PayloadStore,
    lsn: u64,
    sections: snapshot::Sections<'_>,
) -> Result<State, EngineError> {
    let undecodable = |reason: String| EngineError::Undecodable { what: "checkpoint", lsn, reason };
    let load_payloads = || -> Result<(), EngineError> {
        let entries = snapshot::decode_payloads(lsn, sections.version, sections.payloads)?;
        if snapshot::names_payloads_by_address(sections.version) {
            payload.restore_entries(&entries)?;
        } else {
            payload.restore_listed(&entries).map_err(|e| undecodable(e.to_string()))?;
        }
        Ok(())
    };
    let load_state = || -> Result<State, EngineError> {
        let image = snapshot::decode_state(lsn, sections.version, sections.state)?;
        let mut state = image.state;
        state.restore(image.uploads).map_err(|reason| undecodable(reason.to_owned()))?;
        Ok(state)
    };
    let state = if snapshot::names_payloads_by_address(sections.version) {
        load_payloads()?;
        let index = payload.clone();
        let handle_of: addresses::HandleOf = Box::new(move |a| index.handle(a));
        addresses::decoding_addresses(handle_of, load_state)?
    } else {
        let (payloads, state) = std::thread::scope(|scope| {
            let payloads = scope.spawn(load_payloads);
            let state = load_state();
            let payloads = payloads.join().unwrap_or_else(|_| {
                Err(undecodable("the payload section's loader panicked".to_owned()))
            });
            (payloads, state)
        });
        payloads?;
        state?
    };
    payload.check_references(state.stored_parts()).map_err(|e| undecodable(e.to_string()))?;
    Ok(state)
}

fn segment_location(at: (crate::payload::SegmentId, u64), len: u64) -> Location {
    Location::Segment { segment: at.0, offset: at.1, len }
}

/// The part a transition stores with its own payload, if any.
fn own_part(transition: &Transition) -> Option<&PartRecord> {
    match &transition.op {
        Op::PutPart { part, .. } | Op::PutObject { part, .. } => Some(part),
        _ => None,
    }
}

/// Holds a reference on a transition's own stored payload before it is applied, as its ingest
/// held one live: the state needs the payload's handle. `recover_effects` keeps it, or the
/// caller drops it if the transition does not apply.
fn hold_own(
    payload: &PayloadStore,
    transition: &Transition,
) -> Result<Option<PayloadHandle>, EngineError> {
    let Some(part) = own_part(transition) else { return Ok(None) };
    let PayloadRecord::Stored { address, segment, offset, .. } = part.payload else {
        return Ok(None);
    };
    let at = segment_location((segment, offset), part.size_bytes);
    Ok(payload.recover_hold(address, &at)?)
}

/// Replays a transition's payload effects into the store, as the live path made them; `own` is
/// the reference `hold_own` held, kept here or given back.
fn recover_effects(
    payload: &PayloadStore,
    transition: &Transition,
    effects: &[Effect],
    own: Option<PayloadHandle>,
) -> Result<(), EngineError> {
    let mut own = own;
    for effect in effects {
        match effect {
            Effect::KeepOwn => {
                let Some(handle) = own.take() else { continue };
                if let Some(part) = own_part(transition)
                    && let PayloadRecord::Stored { address, segment, offset, healed_from } =
                        part.payload
                    && let Some(from) = healed_from
                {
                    let to = segment_location((segment, offset), part.size_bytes);
                    let from = segment_location(from, part.size_bytes);
                    payload.recover_move(&address, &from, &to)?;
                }
                payload.recover_keep(handle)?;
            }
            Effect::AddRef(handle) => payload.recover_ref_at(*handle)?,
            Effect::Release(handle) => payload.recover_release_at(*handle)?,
            Effect::Move(MoveRecord { address, len, from, to }) => {
                let from = segment_location(*from, *len);
                payload.recover_move(address, &from, &segment_location(*to, *len))?;
            }
        }
    }
    if let Some(handle) = own {
        // Applied without keeping its payload.
        payload.recover_drop(handle)?;
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use tessera_wal::SimFs;

    use super::*;
    use crate::payload::{ContentAddress, PayloadOptions};

    fn store() -> PayloadStore {
        let fs = SimFs::new(1).shared();
        PayloadStore::open(fs, "/p", PayloadOptions::default()).unwrap()
    }

    /// The addresses of the parts of `parts`, in order.
    fn addresses(payload: &PayloadStore, parts: &crate::state::PartTable) -> Vec<ContentAddress> {
        parts.stored().map(|h| payload.address(h).unwrap()).collect()
    }

    /// A checkpoint of version 2 (a build before version 3 wrote it, kept in
    /// `engine/fixtures/`: see `write_version_2_fixture` there) names payloads by address:
    /// each part gets the handle of its address, and the counts agree.
    #[test]
    fn a_version_2_checkpoint_loads_its_parts_by_address() {
        let blob = include_bytes!("../../fixtures/checkpoint-v2.bin");
        let sections = snapshot::split(11, blob).unwrap();
        assert_eq!(sections.version, snapshot::SNAPSHOT_VERSION_ADDRESSES);
        let payload = store();
        let state = load_checkpoint(&payload, 11, sections).unwrap();
        let a = |n: u8| ContentAddress([n; 32]);
        for key in ["done", "copy"] {
            let object = state.object("bkt", key).unwrap();
            assert_eq!(addresses(&payload, &object.parts), [a(1), a(2)], "{key}");
        }
        let (_, open) = state.uploads.iter().next().unwrap();
        assert_eq!(open.key.0.as_str(), "open");
        assert_eq!(addresses(&payload, &open.parts), [a(1), a(2), a(3)]);
        assert_eq!(state.stored_parts().count(), 7);
    }

    /// A version 3 checkpoint loads back to the state it was taken from; one whose list of
    /// payloads disagrees with its parts (counts, sizes, a position past the list) fails to
    /// load, naming the payload, without allocating by the position a part names.
    #[test]
    fn a_list_that_disagrees_with_the_parts_fails_the_load() {
        use crate::payload::{Location, PayloadHandle};
        let blob = include_bytes!("../../fixtures/checkpoint-v2.bin");
        let payload = store();
        let state = load_checkpoint(&payload, 11, snapshot::split(11, blob).unwrap()).unwrap();
        let mut slots = Vec::new();
        payload.slots_into(&mut slots);
        assert_eq!(slots.len(), 3);
        let encode = |positions: Vec<u32>, edit: &dyn Fn(&mut Vec<snapshot::PayloadEntry>)| {
            let (section, _) =
                addresses::encoding(positions, || snapshot::encode_state(&state, Vec::new()));
            let mut listed = slots.clone();
            edit(&mut listed);
            snapshot::encode(11, &listed, &section.unwrap()).unwrap()
        };
        let load = |blob: &[u8]| {
            let sections = snapshot::split(11, blob).unwrap();
            assert_eq!(sections.version, snapshot::SNAPSHOT_VERSION);
            let fresh = store();
            load_checkpoint(&fresh, 11, sections).map(|state| (state, fresh))
        };
        let (again, fresh) = load(&encode(vec![0, 1, 2], &|_| {})).unwrap();
        assert_eq!(again, state);
        for n in 0..3 {
            let handle = PayloadHandle(n);
            assert_eq!(fresh.address(handle).unwrap(), payload.address(handle).unwrap());
        }
        let more_refs = encode(vec![0, 1, 2], &|listed| listed[1].2 += 1);
        let longer = encode(vec![0, 1, 2], &|listed| {
            if let Location::Segment { len, .. } = &mut listed[2].1 {
                *len += 1;
            }
        });
        let past = encode(vec![0, 1, u32::MAX - 1], &|_| {});
        for (blob, names) in [
            (
                more_refs,
                "payload handle 1: the checkpoint's parts hold 3 references, its list of \
                         payloads 4",
            ),
            (longer, "a part of 10 bytes names payload 2, of 11 bytes"),
            (past, "a part names payload 4294967294, which the checkpoint does not list"),
        ] {
            let err = load(&blob).unwrap_err().to_string();
            assert!(err.contains(names), "{err}");
        }
    }
}
