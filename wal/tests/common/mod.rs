//! Helpers shared by the log's integration tests: small options, a model of what was appended
//! and acknowledged, and the check that a reopened log agrees with it.

#![allow(
    missing_docs,
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::indexing_slicing,
    clippy::panic,
    clippy::cast_possible_truncation,
    dead_code
)]

use std::collections::BTreeMap;
use std::path::Path;
use std::sync::Arc;

use tessera_wal::{Fs, Lsn, Opened, SimFs, Wal, WalError, WalOptions};

pub const DIR: &str = "/log";

/// Options small enough that a few dozen records rotate segments and fill batches.
pub fn small_options() -> WalOptions {
    WalOptions {
        segment_bytes: 2048,
        batch_bytes_max: 512,
        pending_bytes_max: 2048,
        preallocate: true,
        salt_seed: Some(0x7e55e7a),
    }
}

/// The seed of a randomized test: `TESSERA_SEED` if set, else drawn; printed either way.
pub fn seed(test: &str) -> u64 {
    let seed =
        std::env::var("TESSERA_SEED").ok().and_then(|s| s.parse().ok()).unwrap_or_else(|| {
            use std::hash::{BuildHasher, Hasher};
            std::collections::hash_map::RandomState::new().build_hasher().finish()
        });
    eprintln!(
        "{test}: seed {seed} (replay: TESSERA_SEED={seed} cargo test -p tessera-wal --test {test})"
    );
    seed
}

/// A size from an environment variable, or the default.
pub fn env_count(name: &str, default: u64) -> u64 {
    std::env::var(name).ok().and_then(|s| s.parse().ok()).unwrap_or(default)
}

/// The bytes of record number `n` (sizes vary from 1 to 200 bytes).
pub fn record(n: u64) -> Vec<u8> {
    let len = 1 + (n * 37 % 200) as usize;
    (0..len).map(|i| (n as usize * 31 + i) as u8).collect()
}

pub fn open(fs: &SimFs, options: &WalOptions) -> Result<Opened, WalError> {
    Wal::open(fs.shared(), DIR, options.clone())
}

pub fn open_std(dir: &Path, options: &WalOptions) -> Result<Opened, WalError> {
    let fs: Arc<dyn Fs> = tessera_wal::StdFs::shared();
    Wal::open(fs, dir, options.clone())
}

/// Every record from `from` on, or the first error.
pub fn replay_from(wal: &Wal, from: Lsn) -> Result<Vec<(Lsn, Vec<u8>)>, WalError> {
    wal.replay(from)?.map(|r| r.map(|r| (r.lsn, r.bytes.to_vec()))).collect()
}

/// What a workload appended and what the log acknowledged.
#[derive(Clone, Debug, Default)]
pub struct Model {
    /// Records by LSN, as `append` returned them.
    pub appended: BTreeMap<Lsn, Vec<u8>>,
    /// The highest LSN `wait_durable` (or `append_durable`) acknowledged.
    pub acked: Lsn,
    /// LSNs of checkpoints the workload tried to write, and their blobs.
    pub checkpoints: BTreeMap<Lsn, Vec<u8>>,
}

impl Model {
    pub fn ack(&mut self, lsn: Lsn) {
        self.acked = self.acked.max(lsn);
    }

    /// Checks a reopened log against the model: the newest checkpoint is one that was written,
    /// replay after it returns a dense run of appended records, and nothing acknowledged is
    /// missing. Then forgets what the log lost (it was never acknowledged). Returns the last LSN.
    pub fn check_recovered(&mut self, opened: &Opened) -> Result<Lsn, String> {
        let from = match &opened.checkpoint {
            Some(cp) => {
                let written = self
                    .checkpoints
                    .get(&cp.lsn)
                    .ok_or_else(|| format!("checkpoint at lsn {} was never written", cp.lsn))?;
                if cp.blob.as_slice() != written.as_slice() {
                    return Err(format!("checkpoint at lsn {} holds other bytes", cp.lsn));
                }
                cp.lsn.next()
            }
            None => Lsn::FIRST,
        };
        let records = replay_from(&opened.wal, from).map_err(|e| format!("replay failed: {e}"))?;
        let mut expected = from;
        for (lsn, bytes) in &records {
            if *lsn != expected {
                return Err(format!("replay gave lsn {lsn}, expected {expected}"));
            }
            match self.appended.get(lsn) {
                Some(appended) if appended == bytes => {}
                Some(_) => return Err(format!("lsn {lsn} holds bytes other than appended")),
                None => return Err(format!("lsn {lsn} was never appended")),
            }
            expected = expected.next();
        }
        let last = expected.prev();
        if last != opened.wal.lsn_durable() {
            return Err(format!(
                "replay ended at {last}, log says durable {}",
                opened.wal.lsn_durable()
            ));
        }
        if last < self.acked {
            return Err(format!("acknowledged lsn {} lost: log ends at {last}", self.acked));
        }
        self.appended.retain(|&lsn, _| lsn <= last);
        self.checkpoints.retain(|&lsn, _| lsn <= last);
        self.acked = last;
        Ok(last)
    }
}

/// Appends `count` records one at a time, each acknowledged before the next; stops at the first
/// error.
pub fn append_acked(wal: &Wal, model: &mut Model, first: u64, count: u64) -> Result<(), WalError> {
    for n in first..first + count {
        let bytes = record(n);
        let lsn = wal.append(&bytes)?;
        model.appended.insert(lsn, bytes);
        wal.wait_durable(lsn)?;
        model.ack(lsn);
    }
    Ok(())
}

/// Appends `count` records, then waits once: one batch (or a few) for all of them.
pub fn append_batch(wal: &Wal, model: &mut Model, first: u64, count: u64) -> Result<(), WalError> {
    let mut last = Lsn::ZERO;
    for n in first..first + count {
        let bytes = record(n);
        last = wal.append(&bytes)?;
        model.appended.insert(last, bytes);
    }
    wal.wait_durable(last)?;
    model.ack(last);
    Ok(())
}

/// A checkpoint blob for the state at `lsn`.
pub fn blob(lsn: Lsn) -> Vec<u8> {
    format!("state after lsn {lsn}").into_bytes()
}

/// Writes a checkpoint at the durable LSN and retires what it allows.
pub fn checkpoint(wal: &Wal, model: &mut Model) -> Result<(), WalError> {
    let lsn = wal.lsn_durable();
    if lsn == Lsn::ZERO || wal.checkpoints().last() == Some(&lsn) {
        return Ok(());
    }
    model.checkpoints.insert(lsn, blob(lsn));
    wal.write_checkpoint(lsn, &blob(lsn))?;
    wal.retire_segments(|segment| {
        // The hook reads the segment whole, as the journal will.
        for record in segment.records() {
            record?;
        }
        Ok(())
    })?;
    Ok(())
}
