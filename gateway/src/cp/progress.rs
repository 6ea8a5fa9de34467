//! Progress on stderr: a bar redrawn in place on a terminal (bytes, rate, ETA, parts), plain
//! lines every `LINE_INTERVAL` otherwise, nothing with `--quiet`.

use std::io::{IsTerminal as _, Write as _};
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

/// How often the bar is redrawn.
const BAR_INTERVAL: Duration = Duration::from_millis(200);
/// How often a plain line is printed when stderr is not a terminal.
const LINE_INTERVAL: Duration = Duration::from_secs(5);
/// The bar's width in characters.
const BAR_WIDTH: u64 = 30;

/// Counters a transfer updates and a ticker prints.
pub struct Progress {
    total_bytes: u64,
    total_parts: u64,
    done_bytes: AtomicU64,
    done_parts: AtomicU64,
    /// Bytes already there when this run began (not counted in the rate).
    resumed_bytes: u64,
    start: Instant,
}

/// The ticker printing a [`Progress`]; it stops (and clears the bar) when dropped or finished.
pub struct Ticker {
    task: Option<tokio::task::JoinHandle<()>>,
    terminal: bool,
}

impl Progress {
    /// A transfer of `total_bytes` in `total_parts`, `resumed_bytes` of it done before.
    pub fn new(
        total_bytes: u64,
        total_parts: u64,
        resumed_bytes: u64,
        resumed_parts: u64,
    ) -> Arc<Progress> {
        Arc::new(Progress {
            total_bytes,
            total_parts,
            done_bytes: AtomicU64::new(resumed_bytes),
            done_parts: AtomicU64::new(resumed_parts),
            resumed_bytes,
            start: Instant::now(),
        })
    }

    /// Bytes moved.
    pub fn add_bytes(&self, bytes: u64) {
        self.done_bytes.fetch_add(bytes, Ordering::Relaxed);
    }

    /// A part finished.
    pub fn add_part(&self) {
        self.done_parts.fetch_add(1, Ordering::Relaxed);
    }

    /// Starts printing (unless `quiet`).
    pub fn start(self: &Arc<Self>, quiet: bool) -> Ticker {
        let terminal = std::io::stderr().is_terminal();
        if quiet {
            return Ticker { task: None, terminal: false };
        }
        let me = Arc::clone(self);
        let interval = if terminal { BAR_INTERVAL } else { LINE_INTERVAL };
        let task = tokio::spawn(async move {
            let mut tick = tokio::time::interval(interval);
            tick.tick().await;
            loop {
                tick.tick().await;
                let text = me.render(terminal);
                let mut err = std::io::stderr().lock();
                let _ = if terminal {
                    write!(err, "\r{text}\x1b[K")
                } else {
                    writeln!(err, "progress: {text}")
                };
                let _ = err.flush();
            }
        });
        Ticker { task: Some(task), terminal }
    }

    /// The rate of this run so far, bytes per second.
    pub fn rate_bytes_per_s(&self) -> f64 {
        let done = self.done_bytes.load(Ordering::Relaxed).saturating_sub(self.resumed_bytes);
        #[expect(clippy::cast_precision_loss, reason = "a rate needs no exact byte count")]
        let rate = done as f64 / self.start.elapsed().as_secs_f64().max(1e-3);
        rate
    }

    fn render(&self, bar: bool) -> String {
        let done = self.done_bytes.load(Ordering::Relaxed).min(self.total_bytes);
        let parts = self.done_parts.load(Ordering::Relaxed);
        let rate = self.rate_bytes_per_s();
        let left = self.total_bytes - done;
        let eta = if rate > 0.0 {
            #[expect(clippy::cast_precision_loss, reason = "an estimate")]
            let s = left as f64 / rate;
            format!("{s:.0}s")
        } else {
            "?".into()
        };
        let counts = format!(
            "{} / {}  {}/s  ETA {eta}  parts {parts}/{}",
            human(done),
            human(self.total_bytes),
            human_f(rate),
            self.total_parts
        );
        if !bar {
            return counts;
        }
        let filled =
            (done.saturating_mul(BAR_WIDTH)).checked_div(self.total_bytes).unwrap_or(BAR_WIDTH);
        let filled = usize::try_from(filled).unwrap_or(0);
        let width = usize::try_from(BAR_WIDTH).unwrap_or(30);
        format!("[{}{}] {counts}", "#".repeat(filled), " ".repeat(width.saturating_sub(filled)))
    }
}

impl Ticker {
    /// Stops printing and clears the bar.
    pub fn finish(mut self) {
        self.stop();
    }

    fn stop(&mut self) {
        if let Some(task) = self.task.take() {
            task.abort();
            if self.terminal {
                eprint!("\r\x1b[K");
            }
        }
    }
}

impl Drop for Ticker {
    fn drop(&mut self) {
        self.stop();
    }
}

/// Bytes for people: `12.3 MiB`.
pub fn human(bytes: u64) -> String {
    #[expect(clippy::cast_precision_loss, reason = "for display")]
    human_f(bytes as f64)
}

fn human_f(bytes: f64) -> String {
    const UNITS: [&str; 5] = ["B", "KiB", "MiB", "GiB", "TiB"];
    let mut value = bytes;
    let mut unit = "B";
    for u in UNITS {
        unit = u;
        if value < 1024.0 || u == "TiB" {
            break;
        }
        value /= 1024.0;
    }
    if unit == "B" { format!("{value:.0} B") } else { format!("{value:.1} {unit}") }
}
