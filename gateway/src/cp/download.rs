//! `tessera cp s3://BUCKET/KEY FILE`: parallel GETs (by part number when the object has
//! parts, else by ranges) into a temporary file beside FILE, each checked where the server
//! gives a checksum, renamed into place only when whole (file and directory fsynced).
//! Progress lives in a state file: a range is recorded only after the temporary file was
//! synced, so a resumed download trusts exactly the ranges recorded.

use std::collections::BTreeMap;
use std::fs::{self, File, OpenOptions};
use std::os::unix::fs::FileExt as _;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Instant;

use anyhow::{Context as _, anyhow, bail};
use aws_sdk_s3::types::{ChecksumMode, ChecksumType, ObjectAttributes};

use super::adapt::Adapt;
use super::checksum::{self, Algorithm, Hasher, bare_etag, checksum_of};
use super::plan::{self, PART_COUNT_MAX, part_range};
use super::progress::{Progress, human};
use super::retry::{Failure, chain, classify, retry};
use super::state::{Direction, Identity, PartRecord, State, StateError, StateLock};
use super::transfer::{Saver, run_parts};
use super::{Ctx, S3Url, absolute, now_ms};

/// Bytes a GET gathers before one positional write.
const WRITE_BYTES: usize = 1 << 20;
/// The chunk of the final MD5 pass over a file downloaded by ranges.
const VERIFY_READ_BYTES: u64 = 8 << 20;

/// What HEAD says about the object.
struct Head {
    size: u64,
    etag: String,
    /// The algorithm of the object's checksum, if it has one.
    algorithm: Option<Algorithm>,
    /// The checksum is composite (a checksum of its parts' checksums, `...-N`): each part's
    /// GET then answers with that part's own checksum.
    composite: bool,
}

/// How a download's bytes are checked against what the server says of them.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Check {
    /// Each part against the checksum its GET answers with (an object with a composite
    /// checksum); no MD5 is computed.
    PartChecksums,
    /// Each part's MD5, then the MD5 of the MD5s against the ETag (`...-N`).
    PartMd5s,
    /// The whole file's MD5 against the ETag, a plain MD5 (an object from one PutObject).
    WholeMd5,
    /// Nothing the server gives can check it (an ETag of neither kind, no checksums listed).
    Unchecked,
}

/// One GET of the download.
#[derive(Clone, Debug)]
struct Item {
    /// The key in the state file: the part number, or the range's index + 1.
    number: u32,
    /// GET by this part number (else by range).
    by_part: bool,
    offset: u64,
    len: u64,
}

pub(crate) async fn run(ctx: &Ctx, from: &S3Url, local: &Path) -> anyhow::Result<()> {
    let local = absolute(local)?;
    let state_path =
        ctx.state_dir.file_for(Direction::Download, &ctx.endpoint, &from.bucket, &from.key, &local);
    let _lock = StateLock::acquire(&state_path)?;
    let temp = temp_path(&local)?;
    if ctx.args.abort {
        let _ = fs::remove_file(&temp);
        State::remove(&state_path)?;
        println!("dropped the unfinished download of {from} to {}", local.display());
        return Ok(());
    }
    let started = Instant::now();
    let head = head(ctx, from).await?;
    let algorithm = head.algorithm.unwrap_or(ctx.args.checksum_algorithm);
    let layout = layout(ctx, from, &head).await?;
    let (items, part_bytes) = (&layout.items, layout.part_bytes);
    let previous = match State::load(&state_path) {
        Ok(s) => s,
        Err(e @ StateError::Damaged { .. }) if ctx.args.restart => {
            eprintln!("{e}; starting over (--restart)");
            None
        }
        Err(e) => return Err(e.into()),
    };
    let mut parts = BTreeMap::new();
    if let Some(state) = previous {
        let temp_len = fs::metadata(&temp).map(|m| m.len()).ok();
        if state.remote_etag != head.etag || state.source.size_bytes != head.size {
            if !ctx.args.restart {
                bail!(
                    "{from} changed since its download began (ETag {} then, {} now); run the \
                     same command with --restart to download it again (state: {})",
                    state.remote_etag,
                    head.etag,
                    state_path.display()
                );
            }
            eprintln!("{from} changed since its download began; starting over (--restart)");
        } else if temp_len != Some(head.size)
            || state.part_bytes != part_bytes
            || state.algorithm != algorithm
        {
            eprintln!("the partial file {} is not the one recorded; starting over", temp.display());
        } else {
            parts = state.parts;
        }
    }
    let file = open_temp(&temp, head.size, !parts.is_empty())?;
    let state = State {
        direction: Direction::Download,
        algorithm,
        part_bytes,
        created_ms: now_ms(),
        source: Identity { size_bytes: head.size, ..Identity::default() },
        endpoint: ctx.endpoint.clone(),
        bucket: from.bucket.clone(),
        key: from.key.clone(),
        upload_id: String::new(),
        local_path: local.to_string_lossy().into_owned(),
        remote_etag: head.etag.clone(),
        parts,
    };
    let mut saver = Saver::new(state, &state_path, Some(Arc::clone(&file)));
    saver.save().await?;
    let kept = saver.state.parts.len();
    let received = fetch(ctx, from, &head, &layout, &file, &mut saver).await;
    let received = match received {
        Ok(r) => r,
        Err(e) => {
            // The saver syncs the partial file before it records the parts.
            let saved = saver.save().await;
            eprintln!(
                "{} of {} ranges are downloaded; run the same command again to resume (state: {})",
                saver.state.parts.len(),
                items.len(),
                state_path.display()
            );
            saved?;
            return Err(e);
        }
    };
    if let Err(e) = verify(&head, &layout, &saver.state, &file).await {
        // Which part is wrong cannot be told from a whole-object check: nothing here is worth
        // resuming from.
        drop(file);
        let _ = fs::remove_file(&temp);
        State::remove(&state_path)?;
        return Err(e.context(format!(
            "{from}: the download failed its check and was removed; run the same command again \
             to download it anew"
        )));
    }
    file.sync_all().with_context(|| format!("{}: sync", temp.display()))?;
    drop(file);
    fs::rename(&temp, &local)
        .with_context(|| format!("renaming {} to {}", temp.display(), local.display()))?;
    let dir = local.parent().unwrap_or(Path::new("."));
    File::open(dir)
        .and_then(|d| d.sync_all())
        .with_context(|| format!("{}: sync", dir.display()))?;
    State::remove(&state_path)?;
    let secs = started.elapsed().as_secs_f64();
    #[expect(
        clippy::cast_precision_loss,
        clippy::cast_possible_truncation,
        clippy::cast_sign_loss,
        reason = "a rate for people"
    )]
    let rate = human((received as f64 / secs.max(1e-3)) as u64);
    println!("download: {from} to {}", local.display());
    println!("etag: {}", head.etag);
    println!("received: {received} bytes in {secs:.2} s ({rate}/s)");
    let what = if items.first().is_some_and(|i| i.by_part) { "parts" } else { "ranges" };
    println!("{what}: {} (received {}, already here {kept})", items.len(), items.len() - kept);
    Ok(())
}

/// `.<name>.tessera-partial` beside the target.
fn temp_path(local: &Path) -> anyhow::Result<PathBuf> {
    let name =
        local.file_name().with_context(|| format!("{} has no file name", local.display()))?;
    let mut temp = std::ffi::OsString::from(".");
    temp.push(name);
    temp.push(".tessera-partial");
    Ok(local.with_file_name(temp))
}

fn open_temp(temp: &Path, size: u64, resume: bool) -> anyhow::Result<Arc<File>> {
    let file = OpenOptions::new()
        .read(true)
        .write(true)
        .create(true)
        .truncate(!resume)
        .open(temp)
        .with_context(|| format!("{}: cannot create", temp.display()))?;
    file.set_len(size).with_context(|| format!("{}: cannot size", temp.display()))?;
    Ok(Arc::new(file))
}

async fn head(ctx: &Ctx, from: &S3Url) -> anyhow::Result<Head> {
    let out = retry("HeadObject", None, || {
        let request = ctx
            .client
            .head_object()
            .bucket(&from.bucket)
            .key(&from.key)
            .checksum_mode(ChecksumMode::Enabled);
        async move { request.send().await.map_err(classify) }
    })
    .await
    .map_err(|f| match f.status() {
        Some(404) => anyhow!("{from}: no such object"),
        _ => anyhow!(f).context(format!("HeadObject {from}")),
    })?;
    let size = u64::try_from(out.content_length().unwrap_or(0)).context("a negative size")?;
    let etag = out.e_tag().context("HeadObject answered no ETag")?.to_owned();
    let algorithm = [Algorithm::Crc32, Algorithm::Crc32c, Algorithm::Sha1, Algorithm::Sha256]
        .into_iter()
        .find(|a| checksum_of!(out, *a).is_some());
    let composite = match out.checksum_type() {
        Some(t) => *t == ChecksumType::Composite,
        None => algorithm
            .and_then(|a| checksum_of!(out, a))
            .is_some_and(|c| c.rsplit_once('-').is_some_and(|(_, n)| n.parse::<u32>().is_ok())),
    };
    Ok(Head { size, etag, algorithm, composite })
}

/// The GETs of a download.
struct Layout {
    items: Vec<Item>,
    /// The state's `part_bytes`: the ranges' size, 0 for parts.
    part_bytes: u64,
    concurrency: u32,
    check: Check,
}

/// The GETs: the object's parts when the server lists them (GetObjectAttributes), else ranges
/// of the part-size rule's size; and how their bytes are checked.
async fn layout(ctx: &Ctx, from: &S3Url, head: &Head) -> anyhow::Result<Layout> {
    let etag = bare_etag(&head.etag);
    let parts_in_etag = etag.rsplit_once('-').and_then(|(_, n)| n.parse::<u32>().ok());
    if let Some(n) = parts_in_etag
        && n >= 1
        && let Some(items) = object_parts(ctx, from, head, n).await
    {
        let count = u32::try_from(items.len()).unwrap_or(u32::MAX);
        // A GET streams its part to the file through a small buffer: memory does not bound
        // the concurrency of a download.
        let concurrency = ctx.args.concurrency.min(count).max(1);
        let check = if head.algorithm.is_some() && head.composite {
            Check::PartChecksums
        } else {
            Check::PartMd5s
        };
        return Ok(Layout { items, part_bytes: 0, concurrency, check });
    }
    let plan = plan::plan(head.size, &ctx.args.limits())?;
    let chunk = plan.part_bytes;
    let count = if head.size == 0 { 0 } else { head.size.div_ceil(chunk) };
    let count = u32::try_from(count)?;
    let items = (1..=count)
        .map(|n| {
            let (offset, len) = part_range(chunk, n, head.size);
            Item { number: n, by_part: false, offset, len }
        })
        .collect();
    let plain_md5 = etag.len() == 32 && etag.bytes().all(|b| b.is_ascii_hexdigit());
    let check = if plain_md5 { Check::WholeMd5 } else { Check::Unchecked };
    Ok(Layout { items, part_bytes: chunk, concurrency: plan.concurrency, check })
}

/// The object's parts from GetObjectAttributes (paged), if the server lists all `n` of them
/// and they tile the object; None otherwise (the download goes by ranges).
async fn object_parts(ctx: &Ctx, from: &S3Url, head: &Head, n: u32) -> Option<Vec<Item>> {
    let mut items = Vec::new();
    let mut marker: Option<String> = None;
    let mut offset = 0u64;
    for _ in 0..=PART_COUNT_MAX {
        let out = retry("GetObjectAttributes", None, || {
            let request = ctx
                .client
                .get_object_attributes()
                .bucket(&from.bucket)
                .key(&from.key)
                .object_attributes(ObjectAttributes::ObjectParts)
                .max_parts(1000)
                .set_part_number_marker(marker.clone());
            async move { request.send().await.map_err(classify) }
        })
        .await
        .ok()?;
        let page = out.object_parts()?;
        for p in page.parts() {
            let number = u32::try_from(p.part_number()?).ok()?;
            let len = u64::try_from(p.size()?).ok()?;
            items.push(Item { number, by_part: true, offset, len });
            offset = offset.checked_add(len)?;
        }
        let next = page.next_part_number_marker().map(str::to_owned);
        if page.is_truncated() != Some(true) || next.is_none() || next == marker {
            break;
        }
        marker = next;
    }
    let tiled = offset == head.size && items.len() == usize::try_from(n).ok()?;
    let ascending = items.windows(2).all(|w| matches!(w, [a, b] if a.number < b.number));
    (tiled && ascending).then_some(items)
}

/// Runs the GETs not yet recorded; returns the bytes received in this run.
async fn fetch(
    ctx: &Ctx,
    from: &S3Url,
    head: &Head,
    layout: &Layout,
    file: &Arc<File>,
    saver: &mut Saver,
) -> anyhow::Result<u64> {
    let items = &layout.items;
    let done_bytes: u64 = saver.state.parts.values().map(|p| p.size_bytes).sum();
    let pending: Vec<u32> = items
        .iter()
        .filter(|i| !saver.state.parts.contains_key(&i.number))
        .map(|i| i.number)
        .collect();
    let by_number: BTreeMap<u32, Item> = items.iter().map(|i| (i.number, i.clone())).collect();
    let progress =
        Progress::new(head.size, items.len() as u64, done_bytes, saver.state.parts.len() as u64);
    let ticker = progress.start(ctx.args.quiet);
    let adapt = Arc::new(Adapt::new(layout.concurrency));
    let received = Arc::new(AtomicU64::new(0));
    let task = GetTask {
        client: ctx.client.clone(),
        bucket: from.bucket.clone(),
        key: from.key.clone(),
        etag: head.etag.clone(),
        algorithm: saver.state.algorithm,
        check: layout.check,
        // One range is the whole object: its MD5 is the whole file's, with no second pass.
        md5: layout.check == Check::PartMd5s
            || (layout.check == Check::WholeMd5 && items.len() == 1),
        file: Arc::clone(file),
        adapt: Arc::clone(&adapt),
        received: Arc::clone(&received),
    };
    let result = run_parts(
        pending,
        &adapt,
        &ctx.stop,
        |n| {
            let item = by_number.get(&n).cloned();
            task.clone().get(item)
        },
        |n, record: PartRecord| {
            progress.add_bytes(record.size_bytes);
            progress.add_part();
            // Recorded in the file only once its bytes are durable (the saver syncs first).
            saver.state.parts.insert(n, record);
            saver.changed()
        },
    )
    .await;
    ticker.finish();
    result?;
    Ok(received.load(Ordering::Relaxed))
}

#[derive(Clone)]
struct GetTask {
    client: aws_sdk_s3::Client,
    bucket: String,
    key: String,
    etag: String,
    algorithm: Algorithm,
    check: Check,
    /// Whether each GET computes the MD5 of its bytes.
    md5: bool,
    file: Arc<File>,
    adapt: Arc<Adapt>,
    received: Arc<AtomicU64>,
}

impl GetTask {
    async fn get(self, item: Option<Item>) -> anyhow::Result<PartRecord> {
        let item = item.context("no such range")?;
        let what = if item.by_part {
            format!("GetObject part {}", item.number)
        } else {
            format!("GetObject bytes {}-{}", item.offset, item.offset + item.len.saturating_sub(1))
        };
        let record = retry(&what, Some(&self.adapt), || self.attempt(&item))
            .await
            .with_context(|| what.clone())?;
        self.adapt.on_success(item.len);
        Ok(record)
    }

    /// One GET of `item`, streamed to its place in the file and digested on the way.
    async fn attempt(&self, item: &Item) -> Result<PartRecord, Failure> {
        let mut request =
            self.client.get_object().bucket(&self.bucket).key(&self.key).if_match(&self.etag);
        if item.by_part {
            let n = i32::try_from(item.number).map_err(|_| Failure::Fatal("part number".into()))?;
            request = request.part_number(n).checksum_mode(ChecksumMode::Enabled);
        } else {
            request =
                request.range(format!("bytes={}-{}", item.offset, item.offset + item.len - 1));
        }
        let mut out = request.send().await.map_err(|e| match classify(e) {
            Failure::Refused { status: 412, .. } => Failure::Fatal(
                "the object changed during the download (its ETag no longer matches); run the \
                 same command with --restart"
                    .into(),
            ),
            f => f,
        })?;
        if item.by_part
            && let Some(range) = out.content_range()
            && !range.starts_with(&format!("bytes {}-", item.offset))
        {
            return Err(Failure::Fatal(format!(
                "part {} came back as {range}, not at offset {}",
                item.number, item.offset
            )));
        }
        let expected = if self.check == Check::PartChecksums {
            let theirs = checksum_of!(out, self.algorithm).ok_or_else(|| {
                Failure::Fatal(format!(
                    "part {} came without its {} checksum, which the object has",
                    item.number,
                    self.algorithm.name()
                ))
            })?;
            Some(theirs.to_owned())
        } else {
            None
        };
        let mut hasher = if self.md5 {
            Hasher::new(self.algorithm)
        } else {
            Hasher::without_md5(self.algorithm)
        };
        let mut at = item.offset;
        let mut buf = Vec::with_capacity(WRITE_BYTES);
        let mut total = 0u64;
        loop {
            let chunk = out
                .body
                .try_next()
                .await
                .map_err(|e| Failure::Transient(format!("reading the body: {}", chain(&e))))?;
            let last = chunk.is_none();
            if let Some(chunk) = &chunk {
                hasher.update(chunk);
                buf.extend_from_slice(chunk);
                total += chunk.len() as u64;
                self.received.fetch_add(chunk.len() as u64, Ordering::Relaxed);
            }
            if buf.len() >= WRITE_BYTES || (last && !buf.is_empty()) {
                let data = std::mem::replace(&mut buf, Vec::with_capacity(WRITE_BYTES));
                let file = Arc::clone(&self.file);
                let len = data.len() as u64;
                tokio::task::spawn_blocking(move || file.write_all_at(&data, at))
                    .await
                    .map_err(|e| Failure::Fatal(format!("writing: {e}")))?
                    .map_err(|e| Failure::Fatal(format!("writing at offset {at}: {e}")))?;
                at += len;
            }
            if last {
                break;
            }
        }
        if total != item.len {
            return Err(Failure::Transient(format!("{total} bytes arrived of {}", item.len)));
        }
        let digests = hasher.finish();
        if let Some(theirs) = expected
            && checksum::unb64(&theirs).as_ref() != Some(&digests.checksum)
        {
            return Err(Failure::Transient(format!(
                "the bytes' {} is {}, the server's {theirs}",
                self.algorithm.name(),
                digests.checksum_b64()
            )));
        }
        Ok(PartRecord { size_bytes: total, md5: digests.md5, checksum: digests.checksum })
    }
}

/// Checks the whole file against what the server says of the object, as `layout.check`
/// decides: nothing more for parts each checked against their checksum; the MD5 of the parts'
/// MD5s against the ETag; the whole file's MD5 against a plain-MD5 ETag.
async fn verify(
    head: &Head,
    layout: &Layout,
    state: &State,
    file: &Arc<File>,
) -> anyhow::Result<()> {
    let etag = bare_etag(&head.etag);
    let computed = match layout.check {
        Check::PartChecksums => return Ok(()),
        Check::PartMd5s => {
            bare_etag(&checksum::multipart_etag(state.parts.values().map(|p| &p.md5)))
        }
        Check::WholeMd5 => match (layout.items.as_slice(), state.parts.values().next()) {
            ([_], Some(p)) => hex::encode(p.md5),
            _ => {
                let file = Arc::clone(file);
                let size = head.size;
                tokio::task::spawn_blocking(move || md5_of(&file, size)).await??
            }
        },
        Check::Unchecked => {
            eprintln!(
                "note: the ETag {} is not an MD5, the object lists no parts and has no \
                 checksum; the download is not checked against it",
                head.etag
            );
            return Ok(());
        }
    };
    if computed != etag {
        bail!(
            "the downloaded bytes do not match the object's ETag {} (they make \"{computed}\")",
            head.etag
        );
    }
    Ok(())
}

fn md5_of(file: &File, size: u64) -> anyhow::Result<String> {
    use md5::Digest as _;
    let mut h = md5::Md5::new();
    let mut offset = 0;
    while offset < size {
        let len = VERIFY_READ_BYTES.min(size - offset);
        h.update(super::identity::read_at(file, offset, len)?);
        offset += len;
    }
    Ok(hex::encode(h.finalize()))
}
