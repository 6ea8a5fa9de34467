//! Running a transfer's parts: at most `Adapt::limit()` in flight, each result handed to the
//! caller as it arrives (in completion order), and a clean stop on SIGINT (the `stop` token,
//! cancelled by `watch_signals` in mod.rs) or on the first part that fails for good (the parts
//! still in flight are dropped; the server discards them).

use std::collections::VecDeque;
use std::future::Future;
use std::path::Path;
use std::sync::Arc;
use std::time::{Duration, Instant};

use anyhow::anyhow;
use tokio::task::JoinSet;
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

/// The state of a transfer in progress and when it was last written.
pub struct Saver {
    /// The state.
    pub state: State,
    path: std::path::PathBuf,
    unsaved: u32,
    last: Instant,
}

impl Saver {
    /// A state living at `path` (not written yet).
    pub fn new(state: State, path: &Path) -> Saver {
        Saver { state, path: path.to_path_buf(), unsaved: 0, last: Instant::now() }
    }

    /// Notes a change; writes the state if `SAVE_INTERVAL` has passed or `SAVE_PARTS_MAX`
    /// changes wait. `before` runs first (a download syncs its file there).
    pub fn changed(&mut self, before: impl FnOnce() -> std::io::Result<()>) -> anyhow::Result<()> {
        self.unsaved += 1;
        if self.unsaved >= SAVE_PARTS_MAX || self.last.elapsed() >= SAVE_INTERVAL {
            before()?;
            self.save()?;
        }
        Ok(())
    }

    /// Writes the state now.
    pub fn save(&mut self) -> anyhow::Result<()> {
        tokio::task::block_in_place(|| self.state.save(&self.path))?;
        self.unsaved = 0;
        self.last = Instant::now();
        Ok(())
    }
}
