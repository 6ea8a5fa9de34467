//! The ceiling: the least any durable store must do for the workload, with nothing else. Each
//! transition is one framed record (length, CRC-32, the request's fields, a part's 4 KiB) in a
//! shared buffer; a client that finds no write in flight becomes the leader, writes everything
//! buffered so far at the log's next offset and calls fdatasync once for all of it (group
//! commit), then wakes the clients it made durable. A put hashes its part once (the MD5 is its
//! ETag, which S3 requires).
//!
//! There is no index, no state, no recovery and no read path, and the log is one file zeroed
//! and synced before the run and then overwritten in a ring, so that no fdatasync has file
//! metadata to write. A real store does all of this and more, so no store on this machine can
//! be expected to beat this figure: it is the reference the engine's own rate is read against.

use std::fs::File;
use std::io::Write as _;
use std::os::unix::fs::FileExt as _;
use std::path::Path;
use std::time::{Duration, Instant};

use parking_lot::{Condvar, Mutex};

use super::workload::{
    Abort, BoxError, Complete, Create, PutPart, TransitionClient, TransitionStore, part_etag,
};

/// Bytes of the ring the log is written into: allocated and synced before the run.
const RING_BYTES: u64 = 256 << 20;

/// What the clients share: the records not yet written, and how far durability has reached.
#[derive(Default)]
struct Queue {
    /// Records appended since the leader last took the buffer.
    buffer: Vec<u8>,
    /// Records appended in all (the sequence number of the newest).
    appended: u64,
    /// Records durable in all.
    durable: u64,
    /// Whether a client is writing and syncing now.
    writing: bool,
    /// Where the next batch goes in the ring.
    offset: u64,
    /// Batches written, their bytes, and the time their fdatasyncs took.
    batches: u64,
    batch_bytes: u64,
    sync_time: Duration,
}

/// The store: one log file and its queue.
pub struct GroupLogStore {
    file: File,
    queue: Mutex<Queue>,
    made_durable: Condvar,
}

impl GroupLogStore {
    /// A log in `dir`, its ring zeroed and synced.
    pub fn open(dir: &Path) -> Result<GroupLogStore, BoxError> {
        let mut file =
            File::options().create_new(true).read(true).write(true).open(dir.join("group.log"))?;
        let zeros = vec![0u8; 1 << 20];
        for _ in 0..RING_BYTES / (1 << 20) {
            file.write_all(&zeros)?;
        }
        file.sync_all()?;
        Ok(GroupLogStore {
            file,
            queue: Mutex::new(Queue::default()),
            made_durable: Condvar::new(),
        })
    }

    /// Appends `record` (framed) and returns once it is durable.
    fn commit(&self, record: &[u8]) -> Result<(), BoxError> {
        let mut queue = self.queue.lock();
        let length = u32::try_from(record.len())?;
        queue.buffer.extend_from_slice(&length.to_le_bytes());
        queue.buffer.extend_from_slice(&crc32fast::hash(record).to_le_bytes());
        queue.buffer.extend_from_slice(record);
        queue.appended += 1;
        let mine = queue.appended;
        while queue.durable < mine {
            if queue.writing {
                self.made_durable.wait(&mut queue);
                continue;
            }
            queue.writing = true;
            let batch = std::mem::take(&mut queue.buffer);
            let upto = queue.appended;
            let batch_bytes = u64::try_from(batch.len())?;
            if queue.offset + batch_bytes > RING_BYTES {
                queue.offset = 0;
            }
            let offset = queue.offset;
            queue.offset += batch_bytes;
            drop(queue);
            let written = self.file.write_all_at(&batch, offset);
            let started = Instant::now();
            let synced = written.and_then(|()| self.file.sync_data());
            let sync_time = started.elapsed();
            queue = self.queue.lock();
            queue.batches += 1;
            queue.batch_bytes += batch_bytes;
            queue.sync_time += sync_time;
            queue.writing = false;
            if queue.buffer.is_empty() {
                // Keep the allocation for the next batch.
                let mut batch = batch;
                batch.clear();
                queue.buffer = batch;
            }
            synced?;
            queue.durable = upto;
            self.made_durable.notify_all();
        }
        Ok(())
    }
}

impl Drop for GroupLogStore {
    fn drop(&mut self) {
        let queue = self.queue.lock();
        let batches = queue.batches.max(1);
        println!(
            "group_log: {:.1} records per batch, {:.0} us per fdatasync, {:.0} KiB per batch",
            queue.durable as f64 / batches as f64,
            queue.sync_time.as_secs_f64() * 1e6 / batches as f64,
            queue.batch_bytes as f64 / 1024.0 / batches as f64,
        );
    }
}

/// One client: a borrow of the store and a buffer to build records in.
pub struct GroupLogClient<'s> {
    store: &'s GroupLogStore,
    record: Vec<u8>,
}

impl TransitionStore for GroupLogStore {
    type Client<'s> = GroupLogClient<'s>;

    fn client(&self, _index: usize) -> Result<GroupLogClient<'_>, BoxError> {
        Ok(GroupLogClient { store: self, record: Vec::with_capacity(8192) })
    }
}

impl GroupLogClient<'_> {
    /// Starts a record of kind `kind` for `upload` in (`bucket`, `key`).
    fn begin(&mut self, kind: u8, upload: &[u8; 16], bucket: &str, key: &str, time_ms: u64) {
        self.record.clear();
        self.record.push(kind);
        self.record.extend_from_slice(upload);
        self.record.extend_from_slice(&time_ms.to_le_bytes());
        for text in [bucket, key] {
            self.record.extend_from_slice(&(text.len() as u32).to_le_bytes());
            self.record.extend_from_slice(text.as_bytes());
        }
    }
}

impl TransitionClient for GroupLogClient<'_> {
    fn create(&mut self, t: &Create<'_>) -> Result<(), BoxError> {
        self.begin(1, &t.upload.0, t.bucket, t.key, t.initiated_ms);
        self.store.commit(&self.record)
    }

    fn put_part(&mut self, t: &PutPart<'_>) -> Result<[u8; 16], BoxError> {
        let (md5, _) = part_etag(t.payload);
        self.begin(2, &t.upload.0, t.bucket, t.key, t.now_ms);
        self.record.extend_from_slice(&t.part_number.to_le_bytes());
        self.record.extend_from_slice(&md5);
        self.record.extend_from_slice(t.payload);
        self.store.commit(&self.record)?;
        Ok(md5)
    }

    fn complete(&mut self, t: &Complete<'_>) -> Result<(), BoxError> {
        self.begin(3, &t.upload.0, t.bucket, t.key, t.now_ms);
        for part in t.parts {
            self.record.extend_from_slice(&part.part_number.to_le_bytes());
            self.record.extend_from_slice(&part.md5);
        }
        self.record.extend_from_slice(t.etag.as_bytes());
        self.store.commit(&self.record)
    }

    fn abort(&mut self, t: &Abort<'_>) -> Result<(), BoxError> {
        self.begin(4, &t.upload.0, t.bucket, t.key, t.now_ms);
        self.store.commit(&self.record)
    }
}
