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
    /// Parked callers and the LSN each waits for, in the order they came.
    waiters: Vec<(Lsn, Arc<Waiter>)>,
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
        wake(woken);
        first
    }

    /// Queues a record (its size already checked) and returns its LSN.
    pub fn append(&self, record: &[u8], write: WriteBatch<'_>) -> Result<Lsn, WalError> {
        self.push(self.queue.lock(), record, write).map(|(lsn, _)| lsn)
    }

    /// Queues a record and waits until it is durable, under one lock acquisition.
    pub fn append_durable(&self, record: &[u8], write: WriteBatch<'_>) -> Result<Lsn, WalError> {
        let (lsn, queue) = self.push(self.queue.lock(), record, write)?;
        self.wait_locked(queue, lsn, write)?;
        Ok(lsn)
    }

    /// Waits until `lsn` is durable, leading batches when no one else is.
    pub fn wait_durable(&self, lsn: Lsn, write: WriteBatch<'_>) -> Result<(), WalError> {
        if self.lsn_durable() >= lsn {
            return Ok(());
        }
        let queue = self.queue.lock();
        if lsn >= queue.lsn_next {
            return Err(WalError::NotAppended { lsn, last: queue.lsn_next.prev() });
        }
        self.wait_locked(queue, lsn, write)
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
                MutexGuard::unlocked(&mut queue, || wake(woken));
            }
        }
    }

    fn wait_locked<'q>(
        &'q self,
        mut queue: MutexGuard<'q, Queue>,
        lsn: Lsn,
        write: WriteBatch<'_>,
    ) -> Result<(), WalError> {
        loop {
            if queue.lsn_durable >= lsn {
                return Ok(());
            }
            queue.poisoned()?;
            if !queue.leader_active {
                // Not durable, not in flight: it is pending, and nobody is writing it.
                let woken = self.lead(&mut queue, write);
                MutexGuard::unlocked(&mut queue, || wake(woken));
                continue;
            }
            let me = WAITER.with(Arc::clone);
            me.woken.store(false, Ordering::Relaxed);
            queue.waiters.push((lsn, Arc::clone(&me)));
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

    /// Takes a batch and writes it with the lock released. Returns the waiters to wake (once
    /// the lock is released): those it made durable, and one to lead the next batch. The
    /// caller holds the lock and saw no batch in flight.
    #[must_use]
    fn lead(&self, queue: &mut MutexGuard<'_, Queue>, write: WriteBatch<'_>) -> Vec<Arc<Waiter>> {
        debug_assert!(!queue.leader_active && queue.poison.is_none());
        let Some(mut batch) = queue.take_batch(self.batch_bytes_max) else { return Vec::new() };
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
                wake(self.poison_locked(queue));
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
                let mut woken = Vec::with_capacity(queue.waiters.len());
                if queue.pending_bytes() > 0 {
                    if let Some(i) = queue.waiters.iter().position(|(lsn, _)| *lsn > durable) {
                        woken.push(queue.waiters.swap_remove(i).1);
                    }
                    if queue.space_waiters > 0 {
                        self.space.notify_all();
                    }
                }
                queue.waiters.retain(|(lsn, waiter)| {
                    let done = *lsn <= durable;
                    if done {
                        woken.push(Arc::clone(waiter));
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
    fn poison_locked(&self, queue: &mut Queue) -> Vec<Arc<Waiter>> {
        self.space.notify_all();
        queue.waiters.drain(..).map(|(_, waiter)| waiter).collect()
    }
}

fn wake(waiters: Vec<Arc<Waiter>>) {
    for waiter in waiters {
        waiter.wake();
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::frame::frame_bytes;

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
