//! A miniature engine for the payload store's tests: every reference change is a record of a
//! real `tessera_wal::Wal`, committed before the store sees it, and recovery replays those
//! records into the store, as the engine does. A model of what was acknowledged checks the
//! store after each reopen.

#![allow(
    dead_code,
    missing_docs,
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::indexing_slicing,
    clippy::panic,
    clippy::cast_possible_truncation
)]

use std::collections::BTreeMap;
use std::io::Read;
use std::path::Path;
use std::sync::Arc;

use tessera_engine::payload::{
    ContentAddress, Expected, Location, PayloadError, PayloadOptions, PayloadStore, SegmentId,
};
use tessera_wal::{Fs, Lsn, Wal, WalOptions};

/// Options that rotate payload segments every few small payloads.
pub fn small_options() -> PayloadOptions {
    PayloadOptions { segment_bytes: 64 << 10, ..PayloadOptions::default() }
}

fn wal_options() -> WalOptions {
    WalOptions {
        segment_bytes: 64 << 10,
        batch_bytes_max: 4096,
        pending_bytes_max: 16 << 10,
        preallocate: false,
        salt_seed: Some(3),
    }
}

/// A reference change, as a WAL record.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Op {
    Ref {
        address: ContentAddress,
        location: Location,
    },
    Release {
        address: ContentAddress,
    },
    Move {
        address: ContentAddress,
        from: Location,
        to: Location,
    },
    /// A reference whose ingest healed a damaged copy: one record, so both or neither land.
    RefHealed {
        address: ContentAddress,
        from: Location,
        location: Location,
    },
}

impl Op {
    pub fn encode(&self) -> Vec<u8> {
        let mut out = Vec::with_capacity(1 + 32 + 48);
        let (kind, address, locations) = match self {
            Op::Ref { address, location } => (1u8, address, vec![location]),
            Op::Release { address } => (2, address, vec![]),
            Op::Move { address, from, to } => (3, address, vec![from, to]),
            Op::RefHealed { address, from, location } => (4, address, vec![from, location]),
        };
        out.push(kind);
        out.extend_from_slice(&address.0);
        for location in locations {
            let (segment, offset, len) = match location {
                Location::Segment { segment, offset, len } => (segment.0, *offset, *len),
                Location::Empty => (0, 0, 0),
                Location::Inline(_) => panic!("the store never makes inline payloads"),
            };
            for n in [segment, offset, len] {
                out.extend_from_slice(&n.to_le_bytes());
            }
        }
        out
    }

    fn decode(bytes: &[u8]) -> Op {
        let address = ContentAddress(bytes[1..33].try_into().unwrap());
        let n = |i: usize| u64::from_le_bytes(bytes[33 + 8 * i..41 + 8 * i].try_into().unwrap());
        let location = |k: usize| match n(3 * k + 2) {
            0 => Location::Empty,
            len => Location::Segment { segment: SegmentId(n(3 * k)), offset: n(3 * k + 1), len },
        };
        match bytes[0] {
            1 => Op::Ref { address, location: location(0) },
            2 => Op::Release { address },
            3 => Op::Move { address, from: location(0), to: location(1) },
            4 => Op::RefHealed { address, from: location(0), location: location(1) },
            kind => panic!("unknown op {kind}"),
        }
    }
}

/// What was acknowledged: references per address, and the bytes of each.
#[derive(Clone, Debug, Default)]
pub struct Model {
    pub refs: BTreeMap<ContentAddress, u64>,
    pub bytes: BTreeMap<ContentAddress, Vec<u8>>,
    /// An operation whose WAL record may or may not have become durable (interrupted).
    pub in_flight: Option<Op>,
}

pub struct Harness {
    pub fs: Arc<dyn Fs>,
    pub store: PayloadStore,
    pub wal: Wal,
}

pub const STORE_DIR: &str = "/data/payload";
pub const WAL_DIR: &str = "/data/wal";

impl Harness {
    /// Opens (recovers) the store and its log in `root`.
    pub fn open(fs: Arc<dyn Fs>, root: &Path, options: &PayloadOptions) -> Result<Harness, String> {
        let store = PayloadStore::open(Arc::clone(&fs), root.join("payload"), options.clone())
            .map_err(|e| format!("store open: {e}"))?;
        let opened = Wal::open(Arc::clone(&fs), root.join("wal"), wal_options())
            .map_err(|e| format!("wal open: {e}"))?;
        for record in opened.wal.replay(Lsn::FIRST).map_err(|e| format!("replay: {e}"))? {
            let record = record.map_err(|e| format!("replay: {e}"))?;
            let replayed = match Op::decode(&record.bytes) {
                Op::Ref { address, location } => store.recover_ref(address, &location),
                Op::Release { address } => store.recover_release(&address),
                Op::Move { address, from, to } => store.recover_move(&address, &from, &to),
                Op::RefHealed { address, from, location } => store
                    .recover_move(&address, &from, &location)
                    .and_then(|()| store.recover_ref(address, &location)),
            };
            replayed.map_err(|e| format!("replay: {e}"))?;
        }
        store.finish_recovery().map_err(|e| format!("finish_recovery: {e}"))?;
        Ok(Harness { fs, store, wal: opened.wal })
    }

    /// Ingests `bytes` and commits a reference to them (WAL record first).
    pub fn put(&self, model: &mut Model, bytes: &[u8]) -> Result<ContentAddress, String> {
        let declared = Some(bytes.len() as u64);
        let pending = self
            .store
            .ingest(&mut &bytes[..], declared, Expected::default())
            .map_err(|e| format!("ingest: {e}"))?;
        let receipt = pending.receipt().clone();
        let op = match &receipt.healed_from {
            None => Op::Ref { address: receipt.address, location: receipt.location.clone() },
            Some(from) => Op::RefHealed {
                address: receipt.address,
                from: from.clone(),
                location: receipt.location.clone(),
            },
        };
        // Known before the record is written: an interrupted append may still land.
        model.bytes.insert(receipt.address, bytes.to_vec());
        model.in_flight = Some(op.clone());
        self.wal.append_durable(&op.encode()).map_err(|e| format!("wal: {e}"))?;
        pending.commit();
        model.in_flight = None;
        *model.refs.entry(receipt.address).or_default() += 1;
        Ok(receipt.address)
    }

    /// Commits a release of one reference (WAL record first).
    pub fn release(&self, model: &mut Model, address: ContentAddress) -> Result<(), String> {
        let op = Op::Release { address };
        model.in_flight = Some(op.clone());
        self.wal.append_durable(&op.encode()).map_err(|e| format!("wal: {e}"))?;
        self.store.release(&address).map_err(|e| e.to_string())?;
        model.in_flight = None;
        let refs = model.refs.get_mut(&address).unwrap();
        *refs -= 1;
        if *refs == 0 {
            model.refs.remove(&address);
        }
        Ok(())
    }

    /// Compacts, making the moves durable in the WAL (a crash may leave them either way: they
    /// change where bytes are, never what is live).
    pub fn compact(&self) -> Result<tessera_engine::payload::CompactReport, PayloadError> {
        self.store.compact(|moves| {
            for m in moves {
                let op = Op::Move { address: m.address, from: m.from.clone(), to: m.to.clone() };
                self.wal.append(&op.encode())?;
            }
            self.wal.sync()?;
            Ok(())
        })
    }

    /// Reads a payload whole.
    pub fn read(&self, address: &ContentAddress) -> Result<Vec<u8>, PayloadError> {
        let mut bytes = Vec::new();
        self.store
            .reader(address)?
            .read_to_end(&mut bytes)
            .map_err(|e| PayloadError::Stream { received: 0, source: e })?;
        Ok(bytes)
    }
}

impl Model {
    /// Checks a recovered store against what was acknowledged: every live payload reads back
    /// bit for bit with its reference count (the interrupted operation may have landed or not),
    /// nothing else is live, and the space accounts for the live bytes.
    pub fn check(&mut self, harness: &Harness) -> Result<(), String> {
        let store = &harness.store;
        let mut expected = self.refs.clone();
        let mut alternative = expected.clone();
        match &self.in_flight {
            Some(Op::Ref { address, .. }) => *alternative.entry(*address).or_default() += 1,
            Some(Op::Release { address }) => {
                if let Some(refs) = alternative.get_mut(address) {
                    *refs -= 1;
                    if *refs == 0 {
                        alternative.remove(address);
                    }
                }
            }
            _ => {}
        }
        let actual: BTreeMap<ContentAddress, u64> =
            store.snapshot().into_iter().map(|(a, _, refs)| (a, refs)).collect();
        if actual == alternative {
            expected = alternative;
        } else if actual != expected {
            return Err(format!(
                "live payloads {actual:?}, expected {expected:?} (in flight {:?})",
                self.in_flight
            ));
        }
        for address in expected.keys() {
            let bytes = harness.read(address).map_err(|e| format!("read {address}: {e}"))?;
            if Some(&bytes) != self.bytes.get(address) {
                return Err(format!("{address} reads back other bytes"));
            }
        }
        let space = store.space();
        let live: u64 = store
            .snapshot()
            .iter()
            .map(|(_, location, _)| tessera_engine_entry_bytes(location.len()))
            .sum();
        if space.live_bytes != live || space.file_bytes < live {
            return Err(format!("space {space:?}, live entries take {live}"));
        }
        self.refs = expected;
        self.in_flight = None;
        Ok(())
    }
}

/// Bytes a stored payload of `len` takes in a segment (docs/format.md §8).
pub fn tessera_engine_entry_bytes(len: u64) -> u64 {
    if len == 0 { 0 } else { (48 + len).next_multiple_of(8) }
}

/// Deterministic bytes of payload `n`, `len` long.
pub fn payload(n: u64, len: usize) -> Vec<u8> {
    let mut x = n.wrapping_mul(0x9E37_79B9_7F4A_7C15) | 1;
    (0..len)
        .map(|_| {
            x ^= x << 13;
            x ^= x >> 7;
            x ^= x << 17;
            x as u8
        })
        .collect()
}
