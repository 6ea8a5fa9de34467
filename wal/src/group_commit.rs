//! The queue of appended records and the state of group commit.
//!
//! Appenders copy their frames into `pending` under the queue's lock and get their LSN. A
//! caller that waits for durability and finds no leader becomes the leader: it takes the
//! pending frames (at most one batch), releases the lock, writes and fdatasyncs them once, and
//! wakes everyone. Callers that arrive meanwhile queue up behind it and are carried by the next
//! leader: no timer, and a lone writer leads its own batch at once (LevelDB's `DBImpl::Write`).

use std::sync::Arc;

use crate::Lsn;
use crate::error::PoisonCause;
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
    pub leader_active: bool,
    /// Appenders waiting for room in `pending`.
    pub space_waiters: u32,
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
            space_waiters: 0,
            poison: None,
        }
    }

    pub fn pending_bytes(&self) -> u64 {
        self.pending.len() as u64
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
