//! The log: open, append, wait for durability, replay, checkpoint, retire.

use std::error::Error as StdError;
use std::path::{Path, PathBuf};
use std::sync::Arc;

use parking_lot::{Mutex, RwLock};

use crate::Lsn;
use crate::catalog::{Catalog, SegmentInfo};
use crate::checkpoint::{self, Checkpoint, WriteFailure, checkpoint_name};
use crate::error::{PoisonCause, WalError};
use crate::frame::FRAME_HEADER_BYTES;
use crate::group_commit::{Batch, GroupCommit, OnDurable};
use crate::io::Fs;
use crate::limits::{CHECKPOINT_BLOB_BYTES_MAX, CHECKPOINTS_KEPT};
use crate::options::WalOptions;
use crate::recovery::{OpenReport, recover};
use crate::replay::Replay;
use crate::stats::{Counters, WalStats};
use crate::writer::SegmentWriter;

/// A write-ahead log in one directory: segment files of framed records, and checkpoints.
///
/// `Wal` is `Send + Sync`: share it (`Arc<Wal>`) between appending threads. Appends from many
/// threads share one write and one fdatasync per batch.
#[derive(Debug)]
pub struct Wal {
    fs: Arc<dyn Fs>,
    dir: PathBuf,
    options: WalOptions,
    group: GroupCommit,
    /// Only the group-commit leader locks it, so it is never contended on the commit path.
    writer: Mutex<SegmentWriter>,
    /// The writer's counters, readable while it writes.
    counters: Arc<Counters>,
    catalog: Arc<RwLock<Catalog>>,
    /// One checkpoint or retirement at a time.
    maintenance: Mutex<()>,
}

/// A log just opened, with what recovery found.
#[derive(Debug)]
pub struct Opened {
    /// The log, ready for appends.
    pub wal: Wal,
    /// The newest valid checkpoint, if any: replay from its LSN + 1.
    pub checkpoint: Option<Checkpoint>,
    /// What opening found and did (torn tail, skipped checkpoints, leftovers removed).
    pub report: OpenReport,
}

/// A segment whose records every kept checkpoint covers, offered to the retirement hook.
#[derive(Debug)]
pub struct SealedSegment {
    fs: Arc<dyn Fs>,
    info: SegmentInfo,
    last_lsn: Lsn,
}

impl SealedSegment {
    /// The segment's file.
    pub fn path(&self) -> &Path {
        &self.info.path
    }

    /// The LSN of its first record.
    pub fn first_lsn(&self) -> Lsn {
        self.info.first_lsn
    }

    /// The LSN of its last record.
    pub fn last_lsn(&self) -> Lsn {
        self.last_lsn
    }

    /// Its records, checked as replay checks them.
    pub fn records(&self) -> Replay {
        let segments = vec![self.info.clone()];
        Replay::new(Arc::clone(&self.fs), segments, self.info.first_lsn, self.last_lsn)
    }
}

/// Error type of a retirement hook.
pub type HookError = Box<dyn StdError + Send + Sync>;

impl Wal {
    /// Opens (or creates) the log in `dir`: loads the newest valid checkpoint, settles the end
    /// of the last segment (zeroing a torn, unacknowledged tail), and makes what remains
    /// durable. Damage that cannot be a torn write fails with the file, offset and reason.
    ///
    /// Then replay from the checkpoint: `wal.replay(checkpoint.map_or(Lsn::FIRST, |c| c.lsn.next()))`.
    pub fn open(
        fs: Arc<dyn Fs>,
        dir: impl Into<PathBuf>,
        options: WalOptions,
    ) -> Result<Opened, WalError> {
        options.validate()?;
        let dir = dir.into();
        let recovered = recover(&fs, &dir, &options)?;
        let group = GroupCommit::new(
            recovered.lsn_last,
            options.batch_bytes_max,
            options.pending_bytes_max,
        );
        let wal = Wal {
            fs,
            dir,
            options,
            group,
            counters: recovered.writer.counters(),
            writer: Mutex::new(recovered.writer),
            catalog: recovered.catalog,
            maintenance: Mutex::new(()),
        };
        Ok(Opened { wal, checkpoint: recovered.checkpoint, report: recovered.report })
    }

    /// The log's directory.
    pub fn dir(&self) -> &Path {
        &self.dir
    }

    /// The largest record this log accepts.
    pub fn record_bytes_max(&self) -> usize {
        self.options.batch_bytes_max as usize - FRAME_HEADER_BYTES
    }

    fn check_record(&self, record: &[u8]) -> Result<(), WalError> {
        if record.is_empty() {
            return Err(WalError::EmptyRecord);
        }
        let max_bytes = self.record_bytes_max() as u64;
        if record.len() as u64 > max_bytes {
            return Err(WalError::RecordTooLarge { bytes: record.len() as u64, max_bytes });
        }
        Ok(())
    }

    fn write_batch(&self, batch: &mut Batch) -> Result<(), Box<PoisonCause>> {
        self.writer.lock().write_batch(batch)
    }

    /// Queues a record and returns its LSN, without waiting for it to be durable (see
    /// [`Wal::wait_durable`]). Waits only if the queue holds `pending_bytes_max` already.
    pub fn append(&self, record: &[u8]) -> Result<Lsn, WalError> {
        self.check_record(record)?;
        self.group.append(record, &|batch| self.write_batch(batch))
    }

    /// Waits until the record at `lsn` (and every one before it) is durable. The first caller
    /// to find no batch in flight writes one for everybody queued.
    pub fn wait_durable(&self, lsn: Lsn) -> Result<(), WalError> {
        self.group.wait_durable(lsn, &|batch| self.write_batch(batch), None)
    }

    /// [`Wal::wait_durable`], and if this caller leads a batch, it calls `on_durable` with the
    /// batch's last LSN once the batch is durable and before the batch's other waiters that
    /// passed a hook wake (waiters without one wake first: the hook may need a lock they hold).
    ///
    /// For a caller that does per-record work once records are durable (an engine applying
    /// them): the leader does it for the whole batch while the next batch is written, and the
    /// waiters wake to it done. A caller may return before any hook covered its LSN (it found
    /// the record durable at once, or another caller led the batch without a hook), so the hook
    /// is a shortcut: the caller must be able to do the work itself.
    pub fn wait_durable_then(&self, lsn: Lsn, on_durable: OnDurable<'_>) -> Result<(), WalError> {
        self.group.wait_durable(lsn, &|batch| self.write_batch(batch), Some(on_durable))
    }

    /// Appends a record and waits until it is durable: `Ok` means it survives a crash.
    pub fn append_durable(&self, record: &[u8]) -> Result<Lsn, WalError> {
        self.check_record(record)?;
        self.group.append_durable(record, &|batch| self.write_batch(batch))
    }

    /// Waits until every record appended so far is durable; returns the last one's LSN.
    pub fn sync(&self) -> Result<Lsn, WalError> {
        let last = self.group.lsn_last_appended();
        if last > Lsn::ZERO {
            self.wait_durable(last)?;
        }
        Ok(last)
    }

    /// What the log has written since it opened: batches, records, bytes, sync time.
    pub fn stats(&self) -> WalStats {
        self.counters.snapshot()
    }

    /// Every record up to this LSN is durable.
    pub fn lsn_durable(&self) -> Lsn {
        self.group.lsn_durable()
    }

    /// The LSN of the last record appended (durable or not).
    pub fn lsn_last_appended(&self) -> Lsn {
        self.group.lsn_last_appended()
    }

    /// The failure that poisoned the log, if any.
    pub fn poisoned(&self) -> Option<Arc<PoisonCause>> {
        self.group.poison()
    }

    fn check_poison(&self) -> Result<(), WalError> {
        match self.poisoned() {
            Some(first) => Err(WalError::Poisoned { first }),
            None => Ok(()),
        }
    }

    fn poison(&self, cause: PoisonCause) -> Arc<PoisonCause> {
        tracing::error!(%cause, "log poisoned");
        self.group.set_poison(cause)
    }

    /// The records from `from` up to the durable LSN of this moment.
    pub fn replay(&self, from: Lsn) -> Result<Replay, WalError> {
        let from = from.max(Lsn::FIRST);
        let until = self.lsn_durable();
        let catalog = self.catalog.read();
        let oldest = catalog.oldest_lsn();
        if from < oldest {
            return Err(WalError::Retired { lsn: from, oldest });
        }
        let start = catalog.segment_index(from).unwrap_or(0);
        let segments = catalog.segments.get(start..).unwrap_or(&[]).to_vec();
        Ok(Replay::new(Arc::clone(&self.fs), segments, from, until))
    }

    /// The log's segment files, oldest first.
    pub fn segments(&self) -> Vec<SegmentInfo> {
        self.catalog.read().segments.clone()
    }

    /// LSNs of the checkpoints kept, oldest first.
    pub fn checkpoints(&self) -> Vec<Lsn> {
        self.catalog.read().checkpoints.clone()
    }

    /// Writes a checkpoint: `blob` is the caller's snapshot of everything up to `lsn`, which
    /// must be durable already. Written to a temporary file, synced, renamed into place, the
    /// directory synced; then checkpoints older than the newest two are removed.
    ///
    /// A failure before the rename leaves the log as it was; from the rename on, the
    /// directory's state is unknown and the log is poisoned.
    pub fn write_checkpoint(&self, lsn: Lsn, blob: &[u8]) -> Result<(), WalError> {
        let _one_at_a_time = self.maintenance.lock();
        self.check_poison()?;
        let durable = self.lsn_durable();
        if lsn > durable {
            return Err(WalError::CheckpointBeyondDurable { lsn, durable });
        }
        let newest = self.catalog.read().checkpoints.last().copied().unwrap_or(Lsn::ZERO);
        if lsn <= newest {
            return Err(WalError::CheckpointNotNewer { lsn, newest });
        }
        if blob.len() as u64 > CHECKPOINT_BLOB_BYTES_MAX {
            let max_bytes = CHECKPOINT_BLOB_BYTES_MAX;
            return Err(WalError::CheckpointTooLarge { bytes: blob.len() as u64, max_bytes });
        }
        match checkpoint::write(&*self.fs, &self.dir, lsn, blob) {
            Ok(()) => {}
            Err(WriteFailure::BeforeRename(e)) => return Err(e),
            Err(WriteFailure::AfterRename { path, op, source }) => {
                let first = self.poison(PoisonCause { path, op, source });
                return Err(WalError::Poisoned { first });
            }
        }
        let dropped = {
            let mut catalog = self.catalog.write();
            catalog.checkpoints.push(lsn);
            let excess = catalog.checkpoints.len().saturating_sub(CHECKPOINTS_KEPT);
            catalog.checkpoints.drain(..excess).collect::<Vec<_>>()
        };
        // No directory sync: a removed checkpoint that reappears after a crash is older than
        // the ones kept, and recovery prefers the newest that checks out.
        for old in dropped {
            let path = self.dir.join(checkpoint_name(old));
            if let Err(e) = self.fs.remove(&path) {
                tracing::warn!(path = %path.display(), error = %e, "old checkpoint not removed");
            }
        }
        Ok(())
    }

    /// Retires the segments whose records every kept checkpoint covers (wholly at or below the
    /// older of the two newest checkpoints, so a fallback to it still finds its records). Each
    /// is first offered to `hook` (the journal takes its history there); a segment is removed
    /// only after its hook returns `Ok`, oldest first, each removal made durable before the
    /// next. After a crash, a segment may be offered again: the hook must be idempotent.
    pub fn retire_segments(
        &self,
        mut hook: impl FnMut(&SealedSegment) -> Result<(), HookError>,
    ) -> Result<Vec<SegmentInfo>, WalError> {
        let _one_at_a_time = self.maintenance.lock();
        self.check_poison()?;
        let sealed: Vec<SealedSegment> = {
            let catalog = self.catalog.read();
            let Some(watermark) = catalog.retire_watermark() else { return Ok(Vec::new()) };
            catalog
                .segments
                .windows(2)
                .filter_map(|pair| match pair {
                    [info, next] if next.first_lsn.prev() <= watermark => Some(SealedSegment {
                        fs: Arc::clone(&self.fs),
                        info: info.clone(),
                        last_lsn: next.first_lsn.prev(),
                    }),
                    _ => None,
                })
                .collect()
        };
        let mut retired = Vec::with_capacity(sealed.len());
        for segment in sealed {
            hook(&segment).map_err(|source| WalError::RetireHook {
                path: segment.info.path.clone(),
                source,
            })?;
            {
                let mut catalog = self.catalog.write();
                // Invariant: retirement removes segments from the front, one at a time.
                assert_eq!(catalog.segments.first(), Some(&segment.info), "retire oldest first");
                catalog.segments.remove(0);
            }
            let path = &segment.info.path;
            self.fs.remove(path).map_err(|e| WalError::io(path, "remove", e))?;
            if let Err(source) = self.fs.sync_dir(&self.dir) {
                let cause = PoisonCause { path: self.dir.clone(), op: "sync_dir", source };
                return Err(WalError::Poisoned { first: self.poison(cause) });
            }
            retired.push(segment.info);
        }
        Ok(retired)
    }
}
