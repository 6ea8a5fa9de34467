//! Random workloads on the real file system: payloads of random sizes up to 64 MiB (most
//! small: the sizes are log-uniform), duplicates, releases in random order, compaction and
//! reopen (recovery from the WAL) interleaved. Every live payload reads back bit for bit, the
//! reference counts match a model, `verify` finds nothing, and the space accounts for the live
//! bytes. `PROPTEST_CASES` scales it.

#![allow(
    missing_docs,
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::indexing_slicing,
    clippy::panic,
    clippy::cast_possible_truncation
)]

mod common;

use std::collections::BTreeMap;

use common::*;
use proptest::prelude::*;
use tessera_engine::payload::ContentAddress;
use tessera_wal::StdFs;

#[derive(Clone, Debug)]
enum Action {
    /// A payload: `seed` picks its bytes (few seeds: duplicates), `2^exp * frac` its size.
    Put {
        seed: u64,
        exp: u32,
        frac: f64,
    },
    Release {
        pick: usize,
    },
    Compact,
    Reopen,
}

fn action() -> impl Strategy<Value = Action> {
    prop_oneof![
        5 => (0u64..6, 0u32..=26, 0.0f64..1.0).prop_map(|(seed, exp, frac)| Action::Put { seed, exp, frac }),
        3 => any::<usize>().prop_map(|pick| Action::Release { pick }),
        1 => Just(Action::Compact),
        1 => Just(Action::Reopen),
    ]
}

fn run(actions: Vec<Action>) {
    let dir = tempfile::tempdir().unwrap();
    let options = tessera_engine::payload::PayloadOptions {
        segment_bytes: 8 << 20,
        ..tessera_engine::payload::PayloadOptions::default()
    };
    let open = || Harness::open(StdFs::shared(), dir.path(), &options).unwrap();
    let mut h = open();
    let mut model = Model::default();
    // (seed, len) of each address, to regenerate its bytes without keeping them.
    let mut made: BTreeMap<ContentAddress, (u64, usize)> = BTreeMap::new();
    for action in actions {
        match action {
            Action::Put { seed, exp, frac } => {
                let len = ((1u64 << exp) as f64 * frac) as usize;
                let bytes = payload(seed * 1000 + len as u64 % 3, len);
                let address = h.put(&mut model, &bytes).unwrap();
                model.bytes.remove(&address);
                made.insert(address, (seed * 1000 + len as u64 % 3, len));
            }
            Action::Release { pick } => {
                let live: Vec<_> = model.refs.keys().copied().collect();
                if !live.is_empty() {
                    h.release(&mut model, live[pick % live.len()]).unwrap();
                }
            }
            Action::Compact => {
                h.compact().unwrap();
            }
            Action::Reopen => {
                drop(h);
                h = open();
            }
        }
    }
    let live: BTreeMap<ContentAddress, u64> =
        h.store.snapshot().into_iter().map(|(a, _, refs)| (a, refs)).collect();
    assert_eq!(
        live,
        model
            .refs
            .iter()
            .filter(|(a, _)| **a != ContentAddress::of_empty())
            .map(|(a, r)| (*a, *r))
            .collect()
    );
    for address in model.refs.keys() {
        let (seed, len) = made[address];
        assert_eq!(h.read(address).unwrap(), payload(seed, len), "{address}");
    }
    let report = h.store.verify().unwrap();
    assert!(report.corrupt.is_empty(), "{:?}", report.corrupt);
    let spans: u64 =
        h.store.snapshot().iter().map(|(_, l, _)| tessera_engine_entry_bytes(l.len())).sum();
    assert_eq!(h.store.space().live_bytes, spans);
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(
        std::env::var("PROPTEST_CASES").ok().and_then(|s| s.parse().ok()).unwrap_or(24)
    ))]

    #[test]
    fn random_payload_workloads_read_back_and_account_for_their_space(
        actions in proptest::collection::vec(action(), 1..24)
    ) {
        run(actions);
    }
}
