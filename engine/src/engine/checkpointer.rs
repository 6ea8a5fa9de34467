//! Automatic checkpoints on a thread of their own ([`Engine::start_checkpointer`]).
//!
//! Without one, the transition that makes a checkpoint due takes it before returning, so its
//! caller waits for the whole checkpoint: encoding the state, writing and syncing the blob,
//! moving inline payloads (about three seconds at a million live uploads). With one, that
//! transition only wakes the thread. Other transitions are unaffected either way: they wait only
//! while the checkpoint holds the state's lock, which is a fraction of it.

use std::sync::Arc;
use std::sync::atomic::Ordering;
use std::thread::JoinHandle;

use parking_lot::{Condvar, Mutex};

use crate::engine::Engine;
use crate::error::EngineError;

/// What the committing threads and the checkpoint thread share.
#[derive(Debug, Default)]
pub(crate) struct Signal {
    state: Mutex<SignalState>,
    wake: Condvar,
    /// Checkpoint attempts the thread made (tests tell its checkpoints from the commits').
    #[cfg(test)]
    attempts: std::sync::atomic::AtomicU64,
}

#[derive(Debug, Default)]
struct SignalState {
    /// A checkpoint thread runs: commits leave due checkpoints to it.
    attached: bool,
    /// A checkpoint is due.
    due: bool,
    /// The thread is to end.
    stop: bool,
}

impl Signal {
    /// Wakes the checkpoint thread if one runs; false if none does (the caller checkpoints).
    pub(crate) fn checkpoint_due(&self) -> bool {
        let mut state = self.state.lock();
        if !state.attached {
            return false;
        }
        state.due = true;
        self.wake.notify_one();
        true
    }
}

/// The checkpoint thread of an engine. Stopping it (or dropping it) waits for the checkpoint in
/// progress, if any; the engine then takes its checkpoints in its commits again. The thread
/// holds the engine, so the engine lives at least as long.
#[derive(Debug)]
pub struct Checkpointer {
    engine: Arc<Engine>,
    thread: Option<JoinHandle<()>>,
}

impl Engine {
    /// Starts taking automatic checkpoints (`EngineConfig::checkpoint_wal_bytes`) on a thread of
    /// their own rather than in the call of the transition that makes one due. Fails if the
    /// engine has one running already.
    pub fn start_checkpointer(engine: &Arc<Engine>) -> Result<Checkpointer, EngineError> {
        {
            let mut state = engine.checkpoint_signal.state.lock();
            if state.attached {
                return Err(EngineError::InvalidRequest {
                    reason: "the engine has a checkpoint thread already".to_owned(),
                });
            }
            *state = SignalState { attached: true, due: false, stop: false };
        }
        let for_thread = Arc::clone(engine);
        let spawned = std::thread::Builder::new()
            .name("tessera-checkpoint".to_owned())
            .spawn(move || run(&for_thread));
        match spawned {
            Ok(thread) => Ok(Checkpointer { engine: Arc::clone(engine), thread: Some(thread) }),
            Err(e) => {
                engine.checkpoint_signal.state.lock().attached = false;
                Err(EngineError::InvalidRequest {
                    reason: format!("cannot start the checkpoint thread: {e}"),
                })
            }
        }
    }

    /// Takes a checkpoint if enough log was written since the last one; backs off after a
    /// failure. The caller holds the maintenance lock.
    pub(super) fn checkpoint_if_due_locked(&self) {
        let since = self.wal_bytes_since_checkpoint.load(Ordering::Relaxed);
        let due = self
            .config
            .checkpoint_wal_bytes
            .saturating_add(self.checkpoint_backoff_bytes.load(Ordering::Relaxed));
        if since < due {
            return;
        }
        match self.checkpoint_locked() {
            Ok(_) => self.checkpoint_backoff_bytes.store(0, Ordering::Relaxed),
            Err(e) => {
                // Tried again after another `checkpoint_wal_bytes`, not at every commit.
                let interval = self.config.checkpoint_wal_bytes;
                self.checkpoint_backoff_bytes.fetch_add(interval, Ordering::Relaxed);
                tracing::warn!(error = %e, "automatic checkpoint failed");
            }
        }
    }
}

/// Clears `attached` when the thread ends, however it ends: commits then checkpoint again.
struct Detach<'e>(&'e Engine);

impl Drop for Detach<'_> {
    fn drop(&mut self) {
        self.0.checkpoint_signal.state.lock().attached = false;
    }
}

/// The thread: waits for a due checkpoint (or the stop), takes it, again.
fn run(engine: &Engine) {
    let _detach = Detach(engine);
    let signal = &engine.checkpoint_signal;
    loop {
        {
            let mut state = signal.state.lock();
            while !state.due && !state.stop {
                signal.wake.wait(&mut state);
            }
            if state.stop {
                return;
            }
            state.due = false;
        }
        let _one = engine.maintenance.lock();
        engine.checkpoint_if_due_locked();
        #[cfg(test)]
        signal.attempts.fetch_add(1, Ordering::Relaxed);
    }
}

impl Checkpointer {
    /// Stops the thread after the checkpoint in progress, if any.
    pub fn stop(mut self) {
        self.stop_and_join();
    }

    fn stop_and_join(&mut self) {
        let Some(thread) = self.thread.take() else { return };
        {
            let signal = &self.engine.checkpoint_signal;
            signal.state.lock().stop = true;
            signal.wake.notify_one();
        }
        if thread.join().is_err() {
            tracing::error!("the checkpoint thread panicked");
        }
    }
}

impl Drop for Checkpointer {
    fn drop(&mut self) {
        self.stop_and_join();
    }
}

#[cfg(test)]
mod tests {
    use std::time::{Duration, Instant};

    use super::*;
    use crate::EngineConfig;

    fn config() -> EngineConfig {
        EngineConfig { checkpoint_wal_bytes: 1, ..EngineConfig::default() }
    }

    /// With a checkpoint thread, the transition that makes a checkpoint due does not take it:
    /// the thread does, soon after. Stopped, the engine takes them in its commits again.
    #[test]
    fn the_thread_takes_the_due_checkpoints_and_the_commits_again_once_it_stops() {
        let dir = tempfile::tempdir().unwrap();
        let engine = Arc::new(Engine::open(dir.path(), config()).unwrap());
        let checkpointer = Engine::start_checkpointer(&engine).unwrap();
        assert!(Engine::start_checkpointer(&engine).is_err(), "one thread at a time");
        let before = engine.stats().checkpoints;
        engine.create_bucket("alice", "bkt-1").unwrap();
        let deadline = Instant::now() + Duration::from_secs(20);
        while engine.stats().checkpoints == before {
            assert!(Instant::now() < deadline, "the thread took no checkpoint");
            std::thread::sleep(Duration::from_millis(5));
        }
        assert!(
            engine.checkpoint_signal.attempts.load(Ordering::Relaxed) >= 1,
            "the thread took it"
        );
        checkpointer.stop();
        // The commit checkpoints itself again, before it returns.
        let before = engine.stats().checkpoints;
        engine.create_bucket("alice", "bkt-2").unwrap();
        assert_eq!(engine.stats().checkpoints, before + 1);
        // And a new thread can start.
        let checkpointer = Engine::start_checkpointer(&engine).unwrap();
        drop(checkpointer);
        assert!(Arc::strong_count(&engine) == 1, "the thread let the engine go");
    }

    /// While the thread runs, a commit that makes a checkpoint due returns without one (the
    /// thread is held off by the maintenance lock here, so it cannot have taken it yet).
    #[test]
    fn a_commit_leaves_the_due_checkpoint_to_the_thread() {
        let dir = tempfile::tempdir().unwrap();
        let engine = Arc::new(Engine::open(dir.path(), config()).unwrap());
        let checkpointer = Engine::start_checkpointer(&engine).unwrap();
        let before = engine.stats().checkpoints;
        {
            let _held = engine.maintenance.lock();
            engine.create_bucket("alice", "bkt").unwrap();
            assert_eq!(engine.stats().checkpoints, before, "the commit took no checkpoint");
        }
        let deadline = Instant::now() + Duration::from_secs(20);
        while engine.stats().checkpoints == before {
            assert!(Instant::now() < deadline, "the thread took no checkpoint");
            std::thread::sleep(Duration::from_millis(5));
        }
        checkpointer.stop();
    }
}
