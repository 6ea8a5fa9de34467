//! Every limit of the log, named with its unit, and how the limits relate (checked at compile
//! time). docs/format.md cites these names.

/// Frames start at multiples of this, so a frame header never straddles a 512-byte sector in a
/// way that lets its length tear apart from its CRC, and so that recovery can look for a later
/// frame at every aligned offset of the torn window.
pub const FRAME_ALIGN_BYTES: usize = 8;

/// The unit in which a disk persists bytes: after a power loss each unsynced sector holds either
/// its old or its new contents (the simulator's fault model, docs/design.md).
pub const SECTOR_BYTES: u64 = 512;

/// The largest LSN a log accepts, on disk or in a file name. Far beyond any real log (2^62
/// records), it keeps `lsn + 1` and `lsn + batch records` from overflowing on crafted input.
pub const LSN_MAX: u64 = 1 << 62;

/// Default size of a log segment file.
pub const SEGMENT_BYTES_DEFAULT: u64 = 64 << 20;
/// Largest segment size a log accepts (segment offsets stay far from u64 and usize limits).
pub const SEGMENT_BYTES_MAX: u64 = 1 << 32;

/// How far ahead of the log's end a preallocated segment is kept zero-filled by real writes.
/// `fallocate` leaves unwritten extents, and the first write to each of their blocks costs a
/// metadata journal commit at the next fdatasync (measured here: ~140 us instead of ~90 us for
/// a 4 KiB batch). Blocks written with zeros before a batch lands on them avoid that; the zeros
/// reach the disk with earlier batches' fdatasyncs. Small chunks keep the fdatasync that
/// carries a chunk short: with 1 MiB, p99 at 64 writers was ~1.9 ms; with 256 KiB, ~1.2 ms.
pub const ZERO_AHEAD_BYTES: u64 = 256 << 10;

/// Default upper bound on one batch (one write and one fdatasync). It is also the torn window:
/// only one batch is ever unsynced, so after a crash at most this many bytes at the end of the
/// last segment can hold a torn write.
pub const BATCH_BYTES_DEFAULT: u32 = 1 << 20;
/// Smallest batch bound a log accepts: a frame header and one 8-byte payload.
pub const BATCH_BYTES_MIN: u32 = 32;
/// Largest batch bound a log accepts (and so the largest torn window recovery believes).
pub const BATCH_BYTES_LIMIT: u32 = 64 << 20;

/// Default bound on bytes appended but not yet taken by a leader; appends wait beyond it.
pub const PENDING_BYTES_DEFAULT: u64 = 4 * BATCH_BYTES_DEFAULT as u64;

/// Largest checkpoint blob a log writes or reads.
pub const CHECKPOINT_BLOB_BYTES_MAX: u64 = 1 << 40;

/// How many checkpoint files a log keeps: the newest, and the one recovery falls back to if the
/// newest fails its checksum. Segments are retired only below the oldest one kept.
pub const CHECKPOINTS_KEPT: usize = 2;

const _: () = assert!((BATCH_BYTES_MIN as usize).is_multiple_of(FRAME_ALIGN_BYTES));
const _: () = assert!((BATCH_BYTES_DEFAULT as usize).is_multiple_of(FRAME_ALIGN_BYTES));
const _: () = assert!((BATCH_BYTES_LIMIT as usize).is_multiple_of(FRAME_ALIGN_BYTES));
const _: () =
    assert!(BATCH_BYTES_MIN <= BATCH_BYTES_DEFAULT && BATCH_BYTES_DEFAULT <= BATCH_BYTES_LIMIT);
const _: () = assert!(SEGMENT_BYTES_DEFAULT > BATCH_BYTES_DEFAULT as u64);
const _: () = assert!(SEGMENT_BYTES_MAX >= BATCH_BYTES_LIMIT as u64 * 2);
const _: () = assert!(SECTOR_BYTES.is_multiple_of(FRAME_ALIGN_BYTES as u64));
const _: () = assert!(CHECKPOINTS_KEPT >= 2);
