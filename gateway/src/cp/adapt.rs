//! Adaptive concurrency, additive increase and multiplicative decrease: a retried failure
//! halves the parts in flight (at most once per `CUT_INTERVAL`), and each window of
//! `current` completed parts without a failure adds one while throughput holds up, or takes
//! one away when it fell (latency grew at the same concurrency). It never exceeds
//! `--concurrency` and never drops below 1.

use std::sync::Mutex;
use std::time::{Duration, Instant};

/// The least time between two halvings (a burst of failures from one event counts once).
const CUT_INTERVAL: Duration = Duration::from_millis(500);
/// A window whose throughput is below this fraction of the previous one's counts as a fall.
const FALL_FRACTION: f64 = 0.8;

/// The concurrency controller shared by a transfer's tasks.
pub struct Adapt {
    max: u32,
    inner: Mutex<Inner>,
}

struct Inner {
    current: u32,
    last_cut: Option<Instant>,
    window_start: Instant,
    window_parts: u32,
    window_bytes: u64,
    window_failed: bool,
    last_bytes_per_s: f64,
}

impl Adapt {
    /// Starts at `max` parts in flight.
    pub fn new(max: u32) -> Adapt {
        let max = max.max(1);
        Adapt {
            max,
            inner: Mutex::new(Inner {
                current: max,
                last_cut: None,
                window_start: Instant::now(),
                window_parts: 0,
                window_bytes: 0,
                window_failed: false,
                last_bytes_per_s: 0.0,
            }),
        }
    }

    /// How many parts may be in flight now.
    pub fn limit(&self) -> u32 {
        self.inner.lock().map(|i| i.current).unwrap_or(1)
    }

    /// A request failed and will be retried.
    pub fn on_error(&self) {
        let Ok(mut i) = self.inner.lock() else { return };
        i.window_failed = true;
        let now = Instant::now();
        if i.last_cut.is_some_and(|t| now.duration_since(t) < CUT_INTERVAL) {
            return;
        }
        let before = i.current;
        i.current = (i.current / 2).max(1);
        i.last_cut = Some(now);
        if before != i.current {
            eprintln!("adapt: concurrency {before} -> {} after a failure", i.current);
        }
    }

    /// A part of `bytes` completed.
    pub fn on_success(&self, bytes: u64) {
        self.record(bytes, Instant::now());
    }

    fn record(&self, bytes: u64, now: Instant) {
        let Ok(mut i) = self.inner.lock() else { return };
        i.window_parts += 1;
        i.window_bytes += bytes;
        if i.window_parts < i.current {
            return;
        }
        let elapsed = now.saturating_duration_since(i.window_start).as_secs_f64().max(1e-6);
        #[expect(clippy::cast_precision_loss, reason = "a rate needs no exact byte count")]
        let rate = i.window_bytes as f64 / elapsed;
        if !i.window_failed {
            if rate >= i.last_bytes_per_s * FALL_FRACTION {
                i.current = (i.current + 1).min(self.max);
            } else {
                i.current = (i.current - 1).max(1);
            }
        }
        i.last_bytes_per_s = rate;
        i.window_start = now;
        i.window_parts = 0;
        i.window_bytes = 0;
        i.window_failed = false;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn failures_halve_and_quiet_windows_climb_back_to_the_cap() {
        let a = Adapt::new(8);
        assert_eq!(a.limit(), 8);
        a.on_error();
        assert_eq!(a.limit(), 4);
        // A second failure of the same burst does not cut again.
        a.on_error();
        assert_eq!(a.limit(), 4);
        // The window with the failure does not climb; the next ones do, one part every 10 ms.
        let mut now = Instant::now();
        let mut step = || {
            now += Duration::from_millis(10);
            a.record(1 << 20, now);
        };
        for _ in 0..4 {
            step();
        }
        assert_eq!(a.limit(), 4);
        for _ in 0..200 {
            step();
        }
        assert_eq!(a.limit(), 8);
    }

    #[test]
    fn a_fall_in_throughput_takes_one_away() {
        let a = Adapt::new(4);
        let mut now = Instant::now();
        for _ in 0..4 {
            now += Duration::from_millis(10);
            a.record(1 << 20, now);
        }
        assert_eq!(a.limit(), 4);
        // Parts now take ten times as long at the same concurrency.
        for _ in 0..4 {
            now += Duration::from_millis(100);
            a.record(1 << 20, now);
        }
        assert_eq!(a.limit(), 3);
    }
}
