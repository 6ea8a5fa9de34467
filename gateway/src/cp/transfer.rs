//! Running a transfer's parts: at most `Adapt::limit()` in flight, each result handed to the
//! caller as it arrives (in completion order), and a clean stop on SIGINT (the `stop` token,
//! cancelled by `watch_signals` in mod.rs) or on the first part that fails for good (the parts
//! still in flight are dropped; the server discards them).

use std::collections::VecDeque;
use std::fs::File;
use std::future::Future;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::{Duration, Instant};

use anyhow::{Context as _, anyhow};
use futures_util::FutureExt as _;
use tokio::task::{JoinHandle, JoinSet};
use tokio_util::sync::CancellationToken;

use super::Interrupted;
use super::adapt::Adapt;
use super::state::State;

/// The state file is rewritten at most this often...
pub const SAVE_INTERVAL: Duration = Duration::from_secs(1);
/// ...unless this many parts wait to be recorded.
pub const SAVE_PARTS_MAX: u32 = 256;

/// Runs `part(n)` for every `n` of `numbers`, handing each result to `done`.
pub async fn run_parts<T, F, Fut, D>(
    numbers: Vec<u32>,
    adapt: &Arc<Adapt>,
    stop: &CancellationToken,
    mut part: F,
    mut done: D,
) -> anyhow::Result<()>
where
    F: FnMut(u32) -> Fut,
    Fut: Future<Output = anyhow::Result<T>> + Send + 'static,
    T: Send + 'static,
    D: FnMut(u32, T) -> anyhow::Result<()>,
{
    let mut queue: VecDeque<u32> = numbers.into();
    let mut set = JoinSet::new();
    loop {
        if stop.is_cancelled() {
            return Err(Interrupted.into());
        }
        let limit = usize::try_from(adapt.limit()).unwrap_or(1);
        while set.len() < limit
            && let Some(n) = queue.pop_front()
        {
            let fut = part(n);
            set.spawn(async move { (n, fut.await) });
        }
        if set.is_empty() {
            return Ok(());
        }
        tokio::select! {
            joined = set.join_next() => match joined {
                Some(Ok((n, Ok(value)))) => done(n, value)?,
                Some(Ok((n, Err(e)))) => return Err(e.context(format!("part {n}"))),
                Some(Err(e)) => return Err(anyhow!("a part's task failed: {e}")),
                None => {}
            },
            () = stop.cancelled() => return Err(Interrupted.into()),
        }
    }
}

/// The state of a transfer in progress, written in the background while the parts go on.
///
/// A write takes a snapshot of the state, then, on a blocking thread, syncs the data file
/// (a download's: a part is recorded only once its bytes are durable, and every recorded
/// part's bytes were written before the snapshot) and rewrites the state file. At most one
/// write runs at a time, and each begins after the one before it ended, so an older snapshot
/// never lands over a newer one.
pub struct Saver {
    /// The state.
    pub state: State,
    path: PathBuf,
    /// Synced before each write of the state (a download's partial file).
    data: Option<Arc<File>>,
    unsaved: u32,
    last: Instant,
    running: Option<JoinHandle<anyhow::Result<()>>>,
}

impl Saver {
    /// A state living at `path` (not written yet); `data`, if any, is synced before each write.
    pub fn new(state: State, path: &Path, data: Option<Arc<File>>) -> Saver {
        Saver {
            state,
            path: path.to_path_buf(),
            data,
            unsaved: 0,
            last: Instant::now(),
            running: None,
        }
    }

    /// Notes a change; starts a write in the background if `SAVE_INTERVAL` has passed or
    /// `SAVE_PARTS_MAX` changes wait, unless one is still running (the next change starts it).
    /// Reports the error of a write that failed since.
    pub fn changed(&mut self) -> anyhow::Result<()> {
        self.unsaved += 1;
        if self.unsaved < SAVE_PARTS_MAX && self.last.elapsed() < SAVE_INTERVAL {
            return Ok(());
        }
        if self.running.as_ref().is_some_and(|r| !r.is_finished()) {
            return Ok(());
        }
        if let Some(running) = self.running.take() {
            // It has finished, so this does not wait.
            running.now_or_never().context("a finished write of the state was not ready")???;
        }
        self.running = Some(self.start());
        Ok(())
    }

    /// Writes the state now, after the write in the background if one runs.
    pub async fn save(&mut self) -> anyhow::Result<()> {
        if let Some(running) = self.running.take() {
            running.await??;
        }
        self.start().await?
    }

    fn start(&mut self) -> JoinHandle<anyhow::Result<()>> {
        let (state, path, data) = (self.state.clone(), self.path.clone(), self.data.clone());
        self.unsaved = 0;
        self.last = Instant::now();
        tokio::task::spawn_blocking(move || {
            if let Some(data) = data {
                data.sync_data().context("syncing the partial file")?;
            }
            state.save(&path)?;
            Ok(())
        })
    }
}
