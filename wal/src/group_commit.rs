//! Group commit: the queue of appended records, and the leader/follower protocol that writes
//! them in batches.
//!
//! Appenders copy their frames into `pending` under the queue's lock and get their LSN. A
//! caller that waits for durability and finds no batch in flight becomes the leader: it takes
//! the pending frames (at most one batch), releases the lock, writes and fdatasyncs them once,
//! and wakes the batch's waiters. Callers that arrive meanwhile queue up behind it and are
//! carried by the next leader: no timer, and a lone writer leads its own batch at once
//! (LevelDB's `DBImpl::Write`).
//!
//! Wake-ups are targeted, because with many writers on few cores waking costs more than the
//! disk: a waiter registers itself (its LSN and thread) under the lock and parks. When a batch
//! is synced, the leader unparks exactly the waiters it made durable, back to back, plus one
//! waiter of a pending record to lead the next batch. A woken waiter learns from an atomic
//! copy of the durable LSN that it is done, without taking the lock again: a condvar would
//! hand the lock from each woken waiter to the next, one context switch at a time.
//!
//! A caller may pass an `on_durable` hook. If it leads a batch, it runs the hook (with the
//! batch's last LSN) after the sync and after waking the next leader, but before waking the
//! batch's waiters that passed a hook too: an engine applies the batch there, once, so that
//! its waiters wake to results instead of queueing for the engine's lock one by one. Waiters
//! that passed no hook wake before it runs, so a caller that holds a lock the hook needs, and
//! waits without a hook, never deadlocks with it.

use std::io;
use std::panic;
use std::path::PathBuf;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::thread::{self, Thread};

use parking_lot::{Condvar, Mutex, MutexGuard};

use crate::Lsn;
use crate::error::{PoisonCause, WalError};
use crate::frame::{self, encode_provisional};

/// A batch cut from the queue: frames back to back, LSNs `first_lsn..=last_lsn`.
#[derive(Debug)]
pub(crate) struct Batch {
    pub bytes: Vec<u8>,
    pub first_lsn: Lsn,
    pub last_lsn: Lsn,
}

/// The shared state of appenders and leaders (behind the log's queue mutex).
#[derive(Debug)]
pub(crate) struct Queue {
    /// The LSN the next append takes.
    pub lsn_next: Lsn,
    /// Every record up to this LSN is synced.
    pub lsn_durable: Lsn,
    /// Frames appended and not yet taken by a leader, in LSN order.
    pending: Vec<u8>,
    /// LSN of the first frame in `pending`.
    pending_first_lsn: Lsn,
    /// A cleared buffer kept to swap with `pending`, so a batch allocates nothing.
    spare: Vec<u8>,
    /// Whether a leader is writing a batch now.
    leader_active: bool,
    /// Parked callers, in the order they came.
    waiters: Vec<Waiting>,
    /// Appenders waiting for room in `pending`.
    space_waiters: u32,
    /// The failure that poisoned the log, if any.
    pub poison: Option<Arc<PoisonCause>>,
}

impl Queue {
    /// A queue for a log whose last record is `lsn_last` (all of it synced).
    pub fn new(lsn_last: Lsn) -> Queue {
        Queue {
            lsn_next: lsn_last.next(),
            lsn_durable: lsn_last,
            pending: Vec::new(),
            pending_first_lsn: lsn_last.next(),
            spare: Vec::new(),
            leader_active: false,
            waiters: Vec::new(),
            space_waiters: 0,
            poison: None,
        }
    }

    fn pending_bytes(&self) -> u64 {
        self.pending.len() as u64
    }

    fn poisoned(&self) -> Result<(), WalError> {
        match &self.poison {
            Some(first) => Err(WalError::Poisoned { first: Arc::clone(first) }),
            None => Ok(()),
        }
    }

    /// Queues `payload` and returns its LSN.
    pub fn push(&mut self, payload: &[u8]) -> Lsn {
        let lsn = self.lsn_next;
        encode_provisional(&mut self.pending, lsn, payload);
        self.lsn_next = lsn.next();
        lsn
    }

    /// Takes the oldest pending frames, as many whole frames as fit in `batch_bytes_max`.
    pub fn take_batch(&mut self, batch_bytes_max: u32) -> Option<Batch> {
        if self.pending.is_empty() {
            return None;
        }
        let max = batch_bytes_max as usize;
        let first_lsn = self.pending_first_lsn;
        let bytes = if self.pending.len() <= max {
            std::mem::replace(&mut self.pending, std::mem::take(&mut self.spare))
        } else {
            // Invariant: every queued frame fits in a batch (append checks the record size).
            let cut = frame::frame_ends(&self.pending).take_while(|&end| end <= max).last();
            let cut = cut.unwrap_or(self.pending.len());
            let rest = self.pending.split_off(cut);
            std::mem::replace(&mut self.pending, rest)
        };
        let frames = frame::frame_ends(&bytes).count() as u64;
        assert!(frames > 0, "a batch carries at least one frame");
        let last_lsn = Lsn(first_lsn.0 + frames - 1);
        self.pending_first_lsn = last_lsn.next();
        Some(Batch { bytes, first_lsn, last_lsn })
    }

    /// Gives a written batch's buffer back for reuse.
    pub fn recycle(&mut self, mut bytes: Vec<u8>) {
        bytes.clear();
        if bytes.capacity() > self.spare.capacity() {
            self.spare = bytes;
        }
    }
}

/// How the leader writes a batch: seals, writes and fdatasyncs it, or says why it could not.
pub(crate) type WriteBatch<'a> = &'a dyn Fn(&mut Batch) -> Result<(), Box<PoisonCause>>;

/// What a leader runs once its batch is durable, before waking the batch's waiters: the
/// batch's last LSN (every record up to it is durable).
pub type OnDurable<'a> = &'a dyn Fn(Lsn);

/// Whom a leader wakes after its batch, in this order: the next leader and the waiters
/// without a hook; then, after the leader's `on_durable` hook, the waiters with one. On poison,
/// everyone, with no hook.
#[derive(Default)]
#[must_use]
struct Woken {
    next_leader: Option<Arc<Waiter>>,
    early: Vec<Arc<Waiter>>,
    durable_lsn: Option<Lsn>,
    after_hook: Vec<Arc<Waiter>>,
}

impl Woken {
    fn everyone(waiters: Vec<Arc<Waiter>>) -> Woken {
        Woken { early: waiters, ..Woken::default() }
    }

    /// Wakes them, running `on_durable` in between. Call with the queue's lock released.
    fn wake(self, on_durable: Option<OnDurable<'_>>) {
        if let Some(next) = &self.next_leader {
            next.wake();
        }
        // Dropped, so woken, even if the hook panics.
        let after_hook = WakeOnDrop(self.after_hook);
        drop(WakeOnDrop(self.early));
        if let (Some(hook), Some(lsn)) = (on_durable, self.durable_lsn) {
            hook(lsn);
        }
        drop(after_hook);
    }
}

struct WakeOnDrop(Vec<Arc<Waiter>>);

impl Drop for WakeOnDrop {
    fn drop(&mut self) {
        for waiter in self.0.drain(..) {
            waiter.wake();
        }
    }
}

/// A parked caller and what it waits for.
#[derive(Debug)]
pub(crate) struct Waiting {
    lsn: Lsn,
    waiter: Arc<Waiter>,
    /// It passed an `on_durable` hook: it wakes after the leader's hook, not before.
    hooked: bool,
}

/// A parked caller: set `woken`, then unpark `thread`.
#[derive(Debug)]
pub(crate) struct Waiter {
    thread: Thread,
    woken: AtomicBool,
}

impl Waiter {
    fn wake(&self) {
        self.woken.store(true, Ordering::Release);
        self.thread.unpark();
    }
}

thread_local! {
    /// Each thread parks with the same waiter; a thread waits for one LSN at a time.
    static WAITER: Arc<Waiter> =
        Arc::new(Waiter { thread: thread::current(), woken: AtomicBool::new(false) });
}

/// The queue, its waiters, and the durable LSN that parked waiters read without the lock.
#[derive(Debug)]
pub(crate) struct GroupCommit {
    queue: Mutex<Queue>,
    /// `queue.lsn_durable`, readable without the lock (written under it).
    lsn_durable: AtomicU64,
    /// Appenders waiting for room in `pending`.
    space: Condvar,
    batch_bytes_max: u32,
    pending_bytes_max: u64,
}

impl GroupCommit {
    /// Group commit for a log whose last (synced) record is `lsn_last`.
    pub fn new(lsn_last: Lsn, batch_bytes_max: u32, pending_bytes_max: u64) -> GroupCommit {
        GroupCommit {
            queue: Mutex::new(Queue::new(lsn_last)),
            lsn_durable: AtomicU64::new(lsn_last.0),
            space: Condvar::new(),
            batch_bytes_max,
            pending_bytes_max,
        }
    }

    /// Every record up to this LSN is durable.
    pub fn lsn_durable(&self) -> Lsn {
        Lsn(self.lsn_durable.load(Ordering::Acquire))
    }

    /// The LSN of the last record appended.
    pub fn lsn_last_appended(&self) -> Lsn {
        self.queue.lock().lsn_next.prev()
    }

    /// The failure that poisoned the log, if any.
    pub fn poison(&self) -> Option<Arc<PoisonCause>> {
        self.queue.lock().poison.clone()
    }

    /// Poisons the log (keeping the first cause) and wakes every waiter with the error.
    pub fn set_poison(&self, cause: PoisonCause) -> Arc<PoisonCause> {
        let mut queue = self.queue.lock();
        let first = Arc::clone(queue.poison.get_or_insert_with(|| Arc::new(cause)));
        let woken = self.poison_locked(&mut queue);
        drop(queue);
        woken.wake(None);
        first
    }

    /// Queues a record (its size already checked) and returns its LSN.
    pub fn append(&self, record: &[u8], write: WriteBatch<'_>) -> Result<Lsn, WalError> {
        self.push(self.queue.lock(), record, write).map(|(lsn, _)| lsn)
    }

    /// Queues a record and waits until it is durable, under one lock acquisition.
    pub fn append_durable(&self, record: &[u8], write: WriteBatch<'_>) -> Result<Lsn, WalError> {
        let (lsn, queue) = self.push(self.queue.lock(), record, write)?;
        self.wait_locked(queue, lsn, write, None)?;
        Ok(lsn)
    }

    /// Waits until `lsn` is durable, leading batches when no one else is; a batch this caller
    /// leads runs `on_durable` before its waiters wake.
    pub fn wait_durable(
        &self,
        lsn: Lsn,
        write: WriteBatch<'_>,
        on_durable: Option<OnDurable<'_>>,
    ) -> Result<(), WalError> {
        if self.lsn_durable() >= lsn {
            return Ok(());
        }
        let queue = self.queue.lock();
        if lsn >= queue.lsn_next {
            return Err(WalError::NotAppended { lsn, last: queue.lsn_next.prev() });
        }
        self.wait_locked(queue, lsn, write, on_durable)
    }

    fn push<'q>(
        &'q self,
        mut queue: MutexGuard<'q, Queue>,
        record: &[u8],
        write: WriteBatch<'_>,
    ) -> Result<(Lsn, MutexGuard<'q, Queue>), WalError> {
        loop {
            queue.poisoned()?;
            let pending = queue.pending_bytes();
            if pending == 0 || pending + record.len() as u64 <= self.pending_bytes_max {
                let lsn = queue.push(record);
                return Ok((lsn, queue));
            }
            if queue.leader_active {
                queue.space_waiters += 1;
                self.space.wait(&mut queue);
                queue.space_waiters -= 1;
            } else {
                let woken = self.lead(&mut queue, write);
                MutexGuard::unlocked(&mut queue, || woken.wake(None));
            }
        }
    }

    fn wait_locked<'q>(
        &'q self,
        mut queue: MutexGuard<'q, Queue>,
        lsn: Lsn,
        write: WriteBatch<'_>,
        on_durable: Option<OnDurable<'_>>,
    ) -> Result<(), WalError> {
        loop {
            if queue.lsn_durable >= lsn {
                return Ok(());
            }
            queue.poisoned()?;
            if !queue.leader_active {
                // Not durable, not in flight: it is pending, and nobody is writing it.
                let woken = self.lead(&mut queue, write);
                MutexGuard::unlocked(&mut queue, || woken.wake(on_durable));
                continue;
            }
            let me = WAITER.with(Arc::clone);
            me.woken.store(false, Ordering::Relaxed);
            queue.waiters.push(Waiting {
                lsn,
                waiter: Arc::clone(&me),
                hooked: on_durable.is_some(),
            });
            drop(queue);
            while !me.woken.load(Ordering::Acquire) {
                thread::park();
            }
            if self.lsn_durable() >= lsn {
                return Ok(());
            }
            // Poisoned, or woken to lead the next batch: decide under the lock.
            queue = self.queue.lock();
        }
    }

    /// Takes a batch and writes it with the lock released. Returns whom to wake (once the lock
    /// is released): one waiter to lead the next batch, and those it made durable. The caller
    /// holds the lock and saw no batch in flight.
    fn lead(&self, queue: &mut MutexGuard<'_, Queue>, write: WriteBatch<'_>) -> Woken {
        debug_assert!(!queue.leader_active && queue.poison.is_none());
        let Some(mut batch) = queue.take_batch(self.batch_bytes_max) else {
            return Woken::default();
        };
        queue.leader_active = true;
        if queue.space_waiters > 0 {
            self.space.notify_all();
        }
        let written = MutexGuard::unlocked(queue, || {
            panic::catch_unwind(panic::AssertUnwindSafe(|| write(&mut batch)))
        });
        queue.leader_active = false;
        let written = match written {
            Ok(written) => written,
            Err(payload) => {
                // A bug (a failed assertion in the writer, a panicking `Fs`): poison, wake
                // everyone with the error, then let the panic go on.
                let source = io::Error::other("the batch writer panicked");
                let cause = PoisonCause { path: PathBuf::new(), op: "write_batch", source };
                queue.poison.get_or_insert_with(|| Arc::new(cause));
                self.poison_locked(queue).wake(None);
                panic::resume_unwind(payload);
            }
        };
        match written {
            Ok(()) => {
                // Invariant: batches become durable in LSN order, with no gap.
                assert_eq!(queue.lsn_durable.next(), batch.first_lsn, "durable LSNs are dense");
                let durable = batch.last_lsn;
                queue.lsn_durable = durable;
                self.lsn_durable.store(durable.0, Ordering::Release);
                queue.recycle(batch.bytes);
                // The next leader first: the disk idles until it takes the next batch.
                let mut woken = Woken { durable_lsn: Some(durable), ..Woken::default() };
                if queue.pending_bytes() > 0 {
                    if let Some(i) = queue.waiters.iter().position(|w| w.lsn > durable) {
                        woken.next_leader = Some(queue.waiters.swap_remove(i).waiter);
                    }
                    if queue.space_waiters > 0 {
                        self.space.notify_all();
                    }
                }
                queue.waiters.retain(|w| {
                    let done = w.lsn <= durable;
                    if done {
                        let list = if w.hooked { &mut woken.after_hook } else { &mut woken.early };
                        list.push(Arc::clone(&w.waiter));
                    }
                    !done
                });
                woken
            }
            Err(cause) => {
                tracing::error!(%cause, "log poisoned: a batch write or fdatasync failed");
                queue.poison.get_or_insert_with(|| Arc::from(cause));
                self.poison_locked(queue)
            }
        }
    }

    /// With the log poisoned: every waiter must wake to see it.
    fn poison_locked(&self, queue: &mut Queue) -> Woken {
        self.space.notify_all();
        Woken::everyone(queue.waiters.drain(..).map(|w| w.waiter).collect())
    }
}

#[cfg(test)]
mod tests {
    use std::sync::atomic::AtomicU64;
    use std::sync::mpsc;
    use std::time::Duration;

    use super::*;
    use crate::frame::frame_bytes;

    /// A leader whose write blocks until `release` says so; `entered` says it is writing.
    fn gated_write(
        entered: mpsc::Sender<()>,
        release: mpsc::Receiver<()>,
    ) -> impl Fn(&mut Batch) -> Result<(), Box<PoisonCause>> {
        let release = Mutex::new(release);
        move |_batch| {
            entered.send(()).unwrap();
            release.lock().recv().unwrap();
            Ok(())
        }
    }

    fn instant_write(_batch: &mut Batch) -> Result<(), Box<PoisonCause>> {
        Ok(())
    }

    /// Starts a leader of LSN 1 whose write is gated, and a follower waiting for LSN 1 (with a
    /// hook when `follower_hooked`); returns once the follower is parked.
    fn leader_and_parked_follower(
        group: &Arc<GroupCommit>,
        hook_ran_at: &Arc<AtomicU64>,
        follower_hooked: bool,
    ) -> (mpsc::Sender<()>, thread::JoinHandle<()>, thread::JoinHandle<u64>) {
        let lsn = group.append(b"record", &instant_write).unwrap();
        let (entered_tx, entered_rx) = mpsc::channel();
        let (release_tx, release_rx) = mpsc::channel();
        let leader = {
            let (group, hook_ran_at) = (Arc::clone(group), Arc::clone(hook_ran_at));
            thread::spawn(move || {
                let write = gated_write(entered_tx, release_rx);
                let hook = |durable: Lsn| {
                    // Slow, so that a follower woken early would be seen returning first.
                    thread::sleep(Duration::from_millis(50));
                    hook_ran_at.store(durable.0, Ordering::SeqCst);
                };
                group.wait_durable(lsn, &write, Some(&hook)).unwrap();
            })
        };
        entered_rx.recv().unwrap();
        let follower = {
            let (group, hook_ran_at) = (Arc::clone(group), Arc::clone(hook_ran_at));
            thread::spawn(move || {
                let hook = |_: Lsn| {};
                let on_durable: Option<OnDurable<'_>> = follower_hooked.then_some(&hook);
                group.wait_durable(lsn, &instant_write, on_durable).unwrap();
                hook_ran_at.load(Ordering::SeqCst)
            })
        };
        while group.queue.lock().waiters.is_empty() {
            thread::yield_now();
        }
        (release_tx, leader, follower)
    }

    #[test]
    fn a_hooked_follower_wakes_after_the_leaders_hook() {
        let group = Arc::new(GroupCommit::new(Lsn::ZERO, 1 << 20, 4 << 20));
        let hook_ran_at = Arc::new(AtomicU64::new(0));
        let (release, leader, follower) = leader_and_parked_follower(&group, &hook_ran_at, true);
        release.send(()).unwrap();
        assert_eq!(follower.join().unwrap(), 1, "the hook covered LSN 1 before the follower woke");
        leader.join().unwrap();
    }

    #[test]
    fn a_follower_without_a_hook_wakes_before_the_leaders_hook() {
        // Such a follower may hold a lock the hook needs (the engine's compaction does).
        let group = Arc::new(GroupCommit::new(Lsn::ZERO, 1 << 20, 4 << 20));
        let hook_ran_at = Arc::new(AtomicU64::new(0));
        let (release, leader, follower) = leader_and_parked_follower(&group, &hook_ran_at, false);
        release.send(()).unwrap();
        assert_eq!(follower.join().unwrap(), 0, "woken before the 50 ms hook finished");
        leader.join().unwrap();
        assert_eq!(hook_ran_at.load(Ordering::SeqCst), 1);
    }

    #[test]
    fn a_batch_takes_whole_frames_up_to_the_bound() {
        let mut q = Queue::new(Lsn(10));
        for _ in 0..5 {
            q.push(&[1u8; 40]); // 64 bytes a frame
        }
        let batch = q.take_batch(200).unwrap();
        assert_eq!((batch.first_lsn, batch.last_lsn), (Lsn(11), Lsn(13)));
        assert_eq!(batch.bytes.len(), 3 * frame_bytes(40));
        let batch = q.take_batch(200).unwrap();
        assert_eq!((batch.first_lsn, batch.last_lsn), (Lsn(14), Lsn(15)));
        assert!(q.take_batch(200).is_none());
        assert_eq!(q.lsn_next, Lsn(16));
    }
}
