//! The "mpu-transitions" workload: clients (one OS thread each) loop over multipart uploads,
//! create -> put 3 parts of 4 KiB -> complete (90%) or abort (10%), each step one durable
//! transition acknowledged before the client issues the next.
//!
//! A store under test implements [`TransitionStore`] (shared by the threads) and
//! [`TransitionClient`] (one per thread: a connection, or a borrow of the store). Every input a
//! store could need is in the transition structs, so an engine can implement them as well as
//! the peers: what the S3 request carries (bucket, key, upload id, part number, the part's
//! bytes, the parts list of a complete) and what a gateway computes on the way (the multipart
//! ETag, the object's size, the time). The part's MD5, its ETag, is the store's to compute and
//! answer with, as S3 does: every store hashes each part once, within its `put_part` (a peer by
//! [`part_etag`], the engine as it takes the bytes in).
//!
//! The workload is deterministic per `(seed, client)`: upload ids, payload bytes and the
//! complete/abort choice come from a SplitMix64 stream per client, drawn in a fixed order,
//! so the same seed gives every store the same sequence of uploads.

use std::fmt;
use std::sync::atomic::{AtomicU8, Ordering};
use std::sync::{Barrier, Mutex};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use md5::{Digest as _, Md5};

/// Errors of a store under test, with enough context to say which transition failed.
pub type BoxError = Box<dyn std::error::Error + Send + Sync + 'static>;

/// The bucket every upload of the workload goes to.
pub const BUCKET: &str = "bench";
/// Parts per upload.
pub const PARTS_PER_UPLOAD: u32 = 3;
/// Bytes of each part's payload.
pub const PART_BYTES: usize = 4096;
/// Percentage of uploads that are aborted rather than completed.
pub const ABORT_PERCENT: u64 = 10;

/// An upload id: 16 random bytes (shown as 32 lowercase hex digits).
#[derive(Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct UploadId(pub [u8; 16]);

impl UploadId {
    /// The id as 32 lowercase hex digits (how S3 clients see it).
    pub fn to_hex(self) -> String {
        hex::encode(self.0)
    }
}

impl fmt::Display for UploadId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.to_hex())
    }
}

impl fmt::Debug for UploadId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "UploadId({self})")
    }
}

/// A part as a complete (or abort) names it: S3's CompleteMultipartUpload carries the part
/// number and ETag of each part; the size is what the store recorded at the part's upload.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct PartRef {
    /// 1..=10000.
    pub part_number: u32,
    /// Bytes of the part.
    pub size: u64,
    /// MD5 of the part's bytes.
    pub md5: [u8; 16],
    /// The same MD5 as 32 lowercase hex digits: the part's ETag (without quotes).
    pub md5_hex: String,
}

/// CreateMultipartUpload.
#[derive(Clone, Copy, Debug)]
pub struct Create<'a> {
    /// The new upload's id (the workload draws it; a store may keep it as is).
    pub upload: &'a UploadId,
    /// The bucket.
    pub bucket: &'a str,
    /// The object key the upload will complete into.
    pub key: &'a str,
    /// Initiation time, milliseconds since the Unix epoch.
    pub initiated_ms: u64,
}

/// UploadPart: the part's bytes and metadata, durable together.
#[derive(Clone, Copy, Debug)]
#[allow(dead_code, reason = "inputs for every store: some use fields the peers do not")]
pub struct PutPart<'a> {
    /// The upload.
    pub upload: &'a UploadId,
    /// The upload's bucket.
    pub bucket: &'a str,
    /// The upload's key.
    pub key: &'a str,
    /// 1..=10000; a second put of the same number replaces the part.
    pub part_number: u32,
    /// The part's bytes.
    pub payload: &'a [u8],
    /// Time of the put, milliseconds since the Unix epoch.
    pub now_ms: u64,
}

/// CompleteMultipartUpload: the object appears under (bucket, key); the upload and its parts'
/// metadata go.
#[derive(Clone, Copy, Debug)]
pub struct Complete<'a> {
    /// The upload.
    pub upload: &'a UploadId,
    /// The upload's bucket.
    pub bucket: &'a str,
    /// The upload's key, now the object's.
    pub key: &'a str,
    /// The parts the request names, in ascending part number.
    pub parts: &'a [PartRef],
    /// The multipart ETag: hex(md5(concatenated part MD5s)) + "-" + number of parts.
    pub etag: &'a str,
    /// The object's size: the sum of the parts' sizes.
    pub size: u64,
    /// Time of the complete (the object's Last-Modified), milliseconds since the Unix epoch.
    pub now_ms: u64,
}

/// AbortMultipartUpload: the upload and all its parts go.
#[derive(Clone, Copy, Debug)]
#[allow(dead_code, reason = "inputs for every store: some use fields the peers do not")]
pub struct Abort<'a> {
    /// The upload.
    pub upload: &'a UploadId,
    /// The upload's bucket.
    pub bucket: &'a str,
    /// The upload's key.
    pub key: &'a str,
    /// The parts the upload holds (S3's request names none; a store that cannot read inside
    /// its transaction, such as Redis under MULTI/EXEC, uses this list; others may ignore it).
    pub parts: &'a [PartRef],
    /// Time of the abort, milliseconds since the Unix epoch.
    pub now_ms: u64,
}

/// A store under test, shared by all client threads.
pub trait TransitionStore: Sync {
    /// One client's handle: a connection, or a borrow of the store.
    type Client<'s>: TransitionClient
    where
        Self: 's;

    /// The handle of client `index` (0-based), made on that client's own thread before the
    /// measurement starts.
    fn client(&self, index: usize) -> Result<Self::Client<'_>, BoxError>;
}

/// One client's transitions. Each returns only once the transition is durable: a crash right
/// after `Ok` must not lose it.
pub trait TransitionClient {
    /// Records a new upload.
    fn create(&mut self, t: &Create<'_>) -> Result<(), BoxError>;
    /// Records a part and its bytes, in one durable transaction; returns the part's MD5 (its
    /// ETag, which the complete then names).
    fn put_part(&mut self, t: &PutPart<'_>) -> Result<[u8; 16], BoxError>;
    /// Completes an upload into an object.
    fn complete(&mut self, t: &Complete<'_>) -> Result<(), BoxError>;
    /// Aborts an upload.
    fn abort(&mut self, t: &Abort<'_>) -> Result<(), BoxError>;
}

/// What one run measured.
#[derive(Clone, Debug, Default)]
pub struct RunFigures {
    /// Client threads.
    pub clients: usize,
    /// Length of the measured window (after the warm-up), in seconds.
    pub seconds: f64,
    /// Transitions acknowledged within the window.
    pub transitions: u64,
    /// `transitions / seconds`.
    pub transitions_per_s: f64,
    /// Uploads whose complete was acknowledged within the window.
    pub uploads_completed: u64,
    /// Uploads whose abort was acknowledged within the window.
    pub uploads_aborted: u64,
    /// Median latency of one transition, microseconds.
    pub p50_us: f64,
    /// 99th percentile latency of one transition, microseconds.
    pub p99_us: f64,
    /// The slowest transition, microseconds.
    pub max_us: f64,
}

/// SplitMix64: a tiny deterministic generator (Steele, Lea, Flood 2014).
#[derive(Clone, Debug)]
pub struct SplitMix64(u64);

impl SplitMix64 {
    /// A generator from a seed.
    pub fn new(seed: u64) -> SplitMix64 {
        SplitMix64(seed)
    }

    /// The next 64 random bits.
    pub fn next_u64(&mut self) -> u64 {
        self.0 = self.0.wrapping_add(0x9E37_79B9_7F4A_7C15);
        let mut z = self.0;
        z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
        z ^ (z >> 31)
    }

    /// Fills `bytes` (any length) with random bytes.
    pub fn fill(&mut self, bytes: &mut [u8]) {
        let mut chunks = bytes.chunks_exact_mut(8);
        for chunk in &mut chunks {
            chunk.copy_from_slice(&self.next_u64().to_le_bytes());
        }
        let rest = chunks.into_remainder();
        let word = self.next_u64().to_le_bytes();
        for (byte, random) in rest.iter_mut().zip(word) {
            *byte = random;
        }
    }
}

/// Milliseconds since the Unix epoch (0 if the clock is before it).
pub fn now_ms() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| u64::try_from(d.as_millis()).unwrap_or(u64::MAX))
}

/// A part's ETag: the MD5 of its bytes, and that as 32 lowercase hex digits.
pub fn part_etag(payload: &[u8]) -> ([u8; 16], String) {
    let md5: [u8; 16] = Md5::digest(payload).into();
    (md5, hex::encode(md5))
}

/// The S3 multipart ETag of `parts`: hex(md5(concatenated MD5s)) + "-" + count.
pub fn multipart_etag(parts: &[PartRef]) -> String {
    let mut hasher = Md5::new();
    for part in parts {
        hasher.update(part.md5);
    }
    format!("{}-{}", hex::encode(hasher.finalize()), parts.len())
}

const WARMING: u8 = 0;
const MEASURING: u8 = 1;
const STOPPED: u8 = 2;

#[derive(Default)]
struct ClientFigures {
    transitions: u64,
    uploads_completed: u64,
    uploads_aborted: u64,
    latencies_ns: Vec<u64>,
}

impl ClientFigures {
    /// Times `transition`; counts it if it was acknowledged within the measured window.
    /// Returns whether it was counted, or `None` once the run is over.
    fn step(
        &mut self,
        phase: &AtomicU8,
        transition: impl FnOnce() -> Result<(), BoxError>,
    ) -> Result<Option<bool>, BoxError> {
        let t0 = Instant::now();
        transition()?;
        let elapsed = t0.elapsed();
        match phase.load(Ordering::Acquire) {
            MEASURING => {
                self.transitions += 1;
                self.latencies_ns.push(u64::try_from(elapsed.as_nanos()).unwrap_or(u64::MAX));
                Ok(Some(true))
            }
            STOPPED => Ok(None),
            _ => Ok(Some(false)),
        }
    }
}

/// One client's loop until the run stops (or a transition fails).
fn drive<C: TransitionClient>(
    client: &mut C,
    index: usize,
    seed: u64,
    phase: &AtomicU8,
) -> Result<ClientFigures, BoxError> {
    let mut figures = ClientFigures::default();
    let index_word = u64::try_from(index).unwrap_or(u64::MAX);
    let mut rng =
        SplitMix64::new(seed ^ index_word.wrapping_add(1).wrapping_mul(0xD6E8_FEB8_6659_FD93));
    let mut payload = vec![0u8; PART_BYTES];
    let size = u64::try_from(PART_BYTES)?;
    let mut parts: Vec<PartRef> = Vec::new();
    for n in 0u64.. {
        let mut id = [0u8; 16];
        rng.fill(&mut id);
        let upload = UploadId(id);
        let abort = rng.next_u64() % 100 < ABORT_PERCENT;
        let key = format!("k/{index}/{n}");
        let context = |what: &str, e: BoxError| -> BoxError {
            format!("client {index}, {what} of upload {upload} (key {key}): {e}").into()
        };

        let create = Create { upload: &upload, bucket: BUCKET, key: &key, initiated_ms: now_ms() };
        if figures
            .step(phase, || client.create(&create))
            .map_err(|e| context("create", e))?
            .is_none()
        {
            return Ok(figures);
        }

        parts.clear();
        for part_number in 1..=PARTS_PER_UPLOAD {
            rng.fill(&mut payload);
            let put = PutPart {
                upload: &upload,
                bucket: BUCKET,
                key: &key,
                part_number,
                payload: &payload,
                now_ms: now_ms(),
            };
            let mut md5 = [0u8; 16];
            if figures
                .step(phase, || {
                    md5 = client.put_part(&put)?;
                    Ok(())
                })
                .map_err(|e| context(&format!("part {part_number}"), e))?
                .is_none()
            {
                return Ok(figures);
            }
            parts.push(PartRef { part_number, size, md5, md5_hex: hex::encode(md5) });
        }

        let outcome = if abort {
            let abort = Abort {
                upload: &upload,
                bucket: BUCKET,
                key: &key,
                parts: &parts,
                now_ms: now_ms(),
            };
            figures.step(phase, || client.abort(&abort)).map_err(|e| context("abort", e))?
        } else {
            let etag = multipart_etag(&parts);
            let complete = Complete {
                upload: &upload,
                bucket: BUCKET,
                key: &key,
                parts: &parts,
                etag: &etag,
                size: parts.iter().map(|p| p.size).sum(),
                now_ms: now_ms(),
            };
            figures
                .step(phase, || client.complete(&complete))
                .map_err(|e| context("complete", e))?
        };
        match outcome {
            None => return Ok(figures),
            Some(true) if abort => figures.uploads_aborted += 1,
            Some(true) => figures.uploads_completed += 1,
            Some(false) => {}
        }
    }
    Ok(figures)
}

fn percentile_us(sorted_ns: &[u64], fraction: f64) -> f64 {
    let Some(last) = sorted_ns.len().checked_sub(1) else {
        return 0.0;
    };
    #[expect(clippy::cast_sign_loss, reason = "a rounded fraction of a length is non-negative")]
    let index = ((last as f64) * fraction).round() as usize;
    sorted_ns.get(index.min(last)).map_or(0.0, |&ns| ns as f64 / 1000.0)
}

/// Sleeps until `deadline`, or less if the run was stopped (a client failed).
fn sleep_until(deadline: Instant, phase: &AtomicU8) {
    loop {
        let now = Instant::now();
        if now >= deadline || phase.load(Ordering::Acquire) == STOPPED {
            return;
        }
        std::thread::sleep((deadline - now).min(Duration::from_millis(20)));
    }
}

/// Runs the workload on `store` with `clients` threads: a warm-up (a fifth of `duration`,
/// between 0.2 s and 1 s), then `duration` measured; a transition counts if it is acknowledged
/// within the measured window. The first failure of any client stops the run and is returned.
pub fn run<S: TransitionStore>(
    store: &S,
    clients: usize,
    duration: Duration,
    seed: u64,
) -> Result<RunFigures, BoxError> {
    let warm_up = (duration / 5).clamp(Duration::from_millis(200), Duration::from_secs(1));
    let phase = AtomicU8::new(WARMING);
    let barrier = Barrier::new(clients + 1);
    let first_error: Mutex<Option<BoxError>> = Mutex::new(None);
    let fail = |e: BoxError| {
        phase.store(STOPPED, Ordering::Release);
        if let Ok(mut slot) = first_error.lock() {
            slot.get_or_insert(e);
        }
    };

    let (window, per_client) = std::thread::scope(|scope| {
        let threads: Vec<_> = (0..clients)
            .map(|index| {
                let (phase, barrier, fail) = (&phase, &barrier, &fail);
                scope.spawn(move || {
                    let client = store.client(index);
                    barrier.wait();
                    let outcome = client.and_then(|mut c| drive(&mut c, index, seed, phase));
                    outcome.map_err(fail).ok()
                })
            })
            .collect();
        barrier.wait();
        let start = Instant::now();
        sleep_until(start + warm_up, &phase);
        // From warming to measuring, unless a client failed meanwhile.
        let _ = phase.compare_exchange(WARMING, MEASURING, Ordering::AcqRel, Ordering::Acquire);
        let t0 = Instant::now();
        sleep_until(t0 + duration, &phase);
        phase.store(STOPPED, Ordering::Release);
        let window = t0.elapsed();
        let per_client: Vec<ClientFigures> = threads
            .into_iter()
            .filter_map(|t| match t.join() {
                Ok(figures) => figures,
                Err(_) => {
                    fail("a client thread panicked".into());
                    None
                }
            })
            .collect();
        (window, per_client)
    });

    if let Some(e) = first_error.into_inner().map_err(|_| "a client's error was lost")?.take() {
        return Err(e);
    }
    let mut figures =
        RunFigures { clients, seconds: window.as_secs_f64(), ..RunFigures::default() };
    let mut latencies = Vec::new();
    for client in per_client {
        figures.transitions += client.transitions;
        figures.uploads_completed += client.uploads_completed;
        figures.uploads_aborted += client.uploads_aborted;
        latencies.extend(client.latencies_ns);
    }
    latencies.sort_unstable();
    figures.transitions_per_s = figures.transitions as f64 / figures.seconds;
    figures.p50_us = percentile_us(&latencies, 0.50);
    figures.p99_us = percentile_us(&latencies, 0.99);
    figures.max_us = percentile_us(&latencies, 1.0);
    Ok(figures)
}
