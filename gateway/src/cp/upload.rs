//! `tessera cp FILE s3://BUCKET/KEY`: one PutObject for a file below one part; otherwise a
//! multipart upload whose progress lives in a state file, resumed from ListParts.

use std::collections::BTreeMap;
use std::fs::File;
use std::path::Path;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Instant;

use anyhow::{Context as _, anyhow, bail};
use aws_sdk_s3::primitives::ByteStream;
use aws_sdk_s3::types::{ChecksumType, CompletedMultipartUpload, CompletedPart};
use bytes::Bytes;

use super::adapt::Adapt;
use super::checksum::{self, Digests, bare_etag, checksum_of, with_checksum};
use super::identity;
use super::plan::{self, PART_COUNT_MAX, part_range};
use super::progress::{Progress, human};
use super::retry::{Failure, classify, retry};
use super::state::{Direction, Identity, PartRecord, State, StateError, StateLock};
use super::transfer::{Saver, run_parts};
use super::{Ctx, S3Url, absolute, now_ms};

/// A part the server holds: its ETag (as the server gave it) and the local digests.
#[derive(Clone, Debug)]
struct Acked {
    etag: String,
    record: PartRecord,
}

/// What the server says about an upload being resumed.
enum Resume {
    /// These parts are there and match the local file.
    Parts(BTreeMap<u32, Acked>),
    /// The upload is gone (aborted, expired).
    Gone,
    /// The upload was completed already (the state file outlived it); its ETag.
    Complete(String),
}

/// Counters of one run, for the summary.
#[derive(Default)]
struct Sent {
    bytes: AtomicU64,
    parts: AtomicU64,
}

pub(crate) async fn run(ctx: &Ctx, local: &Path, to: &S3Url) -> anyhow::Result<()> {
    let local = absolute(local)?;
    let state_path =
        ctx.state_dir.file_for(Direction::Upload, &ctx.endpoint, &to.bucket, &to.key, &local);
    let _lock = StateLock::acquire(&state_path)?;
    if ctx.args.abort {
        // The local file need not exist any more.
        return abort(ctx, &state_path, &local, to).await;
    }
    let file = File::open(&local).with_context(|| format!("{}: cannot open", local.display()))?;
    if !file.metadata().with_context(|| format!("{}", local.display()))?.is_file() {
        bail!("{} is not a regular file", local.display());
    }
    let identity = tokio::task::block_in_place(|| identity::of(&file))
        .with_context(|| format!("{}: cannot read", local.display()))?;
    let started = Instant::now();
    let previous = match State::load(&state_path) {
        Ok(s) => s,
        Err(e @ StateError::Damaged { .. }) if ctx.args.restart => {
            eprintln!("{e}; starting over (--restart)");
            None
        }
        Err(e) => return Err(e.into()),
    };
    let file = Arc::new(file);
    let mut resumed = None;
    if let Some(state) = previous {
        let why = match identity::difference(&state.source, &identity) {
            Some(why) => format!(
                "{} changed since its upload {} began ({why})",
                local.display(),
                state.upload_id
            ),
            None => match reconcile(ctx, &file, &state).await? {
                Resume::Parts(parts) => {
                    resumed = Some((state.clone(), parts));
                    String::new()
                }
                Resume::Complete(etag) => {
                    // An earlier run completed it and stopped before removing the state.
                    State::remove(&state_path)?;
                    let count = state.parts.len();
                    let checksum = checksum::composite(
                        state.algorithm,
                        state.parts.values().map(|p| p.checksum.as_slice()),
                    );
                    println!("upload: {} to {to} was already complete", local.display());
                    println!("etag: {etag}");
                    println!("checksum: {} {checksum}", state.algorithm.name());
                    println!("parts: {count} (sent 0, already on the server {count})");
                    return Ok(());
                }
                Resume::Gone => format!(
                    "the upload {} of {to} is gone from the server (aborted or expired)",
                    state.upload_id
                ),
            },
        };
        if resumed.is_none() {
            if !ctx.args.restart {
                bail!(
                    "{why}; run the same command with --restart to upload it again, or with \
                     --abort to drop the upload (state: {})",
                    state_path.display()
                );
            }
            eprintln!("{why}; starting over (--restart)");
            abort_quietly(ctx, &state).await;
            State::remove(&state_path)?;
        }
    }
    let (state, acked) = match resumed {
        Some(r) => r,
        None => {
            let plan = plan::plan(identity.size_bytes, &ctx.args.limits())?;
            if plan.single {
                return put_single(ctx, &file, &identity, &local, to, started).await;
            }
            let state = create(ctx, to, &identity, &local, plan.part_bytes).await?;
            (state, BTreeMap::new())
        }
    };
    multipart(ctx, file, state, acked, &state_path, &local, to, started).await
}

/// Sends the parts the server lacks, then completes.
#[expect(clippy::too_many_arguments, reason = "one call site; a struct would only rename them")]
async fn multipart(
    ctx: &Ctx,
    file: Arc<File>,
    mut state: State,
    mut acked: BTreeMap<u32, Acked>,
    state_path: &Path,
    local: &Path,
    to: &S3Url,
    started: Instant,
) -> anyhow::Result<()> {
    let size = state.source.size_bytes;
    let part_bytes = state.part_bytes;
    let count = part_count(size, part_bytes)?;
    let memory_parts = u32::try_from(ctx.args.max_memory / part_bytes.max(1)).unwrap_or(u32::MAX);
    let concurrency = ctx.args.concurrency.min(memory_parts).min(count).max(1);
    // The server's word replaces the file's.
    state.parts = acked.iter().map(|(n, a)| (*n, a.record.clone())).collect();
    let mut saver = Saver::new(state, state_path, None);
    saver.save().await?;
    let resumed_parts = acked.len();
    let resumed_bytes: u64 = acked.values().map(|a| a.record.size_bytes).sum();
    let pending: Vec<u32> = (1..=count).filter(|n| !acked.contains_key(n)).collect();
    let progress = Progress::new(size, count.into(), resumed_bytes, resumed_parts as u64);
    let ticker = progress.start(ctx.args.quiet);
    let adapt = Arc::new(Adapt::new(concurrency));
    let sent = Arc::new(Sent::default());
    let algorithm = ctx.args.checksum_algorithm;
    if algorithm != saver.state.algorithm {
        eprintln!(
            "note: resuming with {}, the checksum the upload began with",
            saver.state.algorithm.name()
        );
    }
    let task = PartTask {
        client: ctx.client.clone(),
        file: Arc::clone(&file),
        bucket: to.bucket.clone(),
        key: to.key.clone(),
        upload_id: saver.state.upload_id.clone(),
        algorithm: saver.state.algorithm,
        part_bytes,
        size,
        adapt: Arc::clone(&adapt),
        progress: Arc::clone(&progress),
        sent: Arc::clone(&sent),
    };
    let result = run_parts(
        pending,
        &adapt,
        &ctx.stop,
        |n| task.clone().send(n),
        |n, a: Acked| {
            progress.add_part();
            saver.state.parts.insert(n, a.record.clone());
            acked.insert(n, a);
            saver.changed()
        },
    )
    .await;
    ticker.finish();
    if let Err(e) = result {
        let saved = saver.save().await;
        eprintln!(
            "{} of {count} parts are on the server; run the same command again to resume \
             (state: {})",
            acked.len(),
            state_path.display()
        );
        saved?;
        return Err(e);
    }
    // Every part recorded before completing: should the answer be lost (a crash, a dropped
    // connection), the next run finds the object by the MD5 of these MD5s (`already_complete`).
    saver.save().await?;
    // A file written to while its parts went up would complete as a mix of old and new
    // bytes: the identity is taken again (of the open file) before completing.
    let now = tokio::task::block_in_place(|| identity::of(&file))
        .with_context(|| format!("{}: cannot read", local.display()))?;
    if let Some(why) = identity::difference(&saver.state.source, &now) {
        bail!(
            "{} changed during its upload ({why}); not completed: run the same command with \
             --restart to upload it again (state: {})",
            local.display(),
            state_path.display()
        );
    }
    let (etag, checksum) = complete(ctx, &saver.state, &acked, to).await?;
    State::remove(state_path)?;
    let sent_parts = sent.parts.load(Ordering::Relaxed);
    summary(local, to, &etag, &checksum, saver.state.algorithm.name(), started, &sent);
    println!("parts: {count} (sent {sent_parts}, already on the server {resumed_parts})");
    Ok(())
}

fn part_count(size: u64, part_bytes: u64) -> anyhow::Result<u32> {
    let count = size.div_ceil(part_bytes.max(1)).max(1);
    if part_bytes == 0 || count > PART_COUNT_MAX {
        bail!(
            "a part size of {part_bytes} bytes does not fit {size} bytes in {PART_COUNT_MAX} parts"
        );
    }
    Ok(u32::try_from(count)?)
}

fn summary(
    local: &Path,
    to: &S3Url,
    etag: &str,
    checksum: &str,
    name: &str,
    started: Instant,
    sent: &Sent,
) {
    let secs = started.elapsed().as_secs_f64();
    let bytes = sent.bytes.load(Ordering::Relaxed);
    #[expect(clippy::cast_precision_loss, reason = "a rate for people")]
    let rate = bytes as f64 / secs.max(1e-3);
    println!("upload: {} to {to}", local.display());
    println!("etag: {etag}");
    println!("checksum: {name} {checksum}");
    #[expect(
        clippy::cast_possible_truncation,
        clippy::cast_sign_loss,
        reason = "a rate for people"
    )]
    let rate = human(rate as u64);
    println!("sent: {bytes} bytes in {secs:.2} s ({rate}/s)");
}

/// What one part's task needs (cloned into each).
#[derive(Clone)]
struct PartTask {
    client: aws_sdk_s3::Client,
    file: Arc<File>,
    bucket: String,
    key: String,
    upload_id: String,
    algorithm: checksum::Algorithm,
    part_bytes: u64,
    size: u64,
    adapt: Arc<Adapt>,
    progress: Arc<Progress>,
    sent: Arc<Sent>,
}

impl PartTask {
    /// Reads part `n`, digests it and sends it, with retries.
    async fn send(self, n: u32) -> anyhow::Result<Acked> {
        let (offset, len) = part_range(self.part_bytes, n, self.size);
        let (data, digests) = read_digest(&self.file, offset, len, self.algorithm).await?;
        let body = Bytes::from(data);
        let number = i32::try_from(n)?;
        let what = format!("UploadPart {n}");
        let out =
            retry(&what, Some(&self.adapt), || {
                self.sent.bytes.fetch_add(len, Ordering::Relaxed);
                let request = self
                    .client
                    .upload_part()
                    .bucket(&self.bucket)
                    .key(&self.key)
                    .upload_id(&self.upload_id)
                    .part_number(number)
                    .content_md5(digests.content_md5())
                    .body(ByteStream::from(body.clone()));
                let request = with_checksum!(request, self.algorithm, digests.checksum_b64());
                // UNSIGNED-PAYLOAD: the signature covers Content-MD5 and the checksum header,
                // which the server checks against the bytes, so a SHA-256 of every byte on both
                // sides (SigV4's payload hash) would add nothing but CPU.
                async move {
                    request.customize().disable_payload_signing().send().await.map_err(classify)
                }
            })
            .await
            .with_context(|| what.clone())?;
        self.sent.parts.fetch_add(1, Ordering::Relaxed);
        self.adapt.on_success(len);
        self.progress.add_bytes(len);
        if let Some(theirs) = checksum_of!(out, self.algorithm)
            && theirs != digests.checksum_b64()
        {
            bail!(
                "{what}: the server's {} is {theirs}, ours {}",
                self.algorithm.name(),
                digests.checksum_b64()
            );
        }
        let etag = out.e_tag().map(str::to_owned).unwrap_or_else(|| digests.etag());
        Ok(Acked {
            etag,
            record: PartRecord { size_bytes: len, md5: digests.md5, checksum: digests.checksum },
        })
    }
}

/// Reads `len` bytes at `offset` and digests them, off the runtime's threads.
async fn read_digest(
    file: &Arc<File>,
    offset: u64,
    len: u64,
    algorithm: checksum::Algorithm,
) -> anyhow::Result<(Vec<u8>, Digests)> {
    let file = Arc::clone(file);
    tokio::task::spawn_blocking(move || {
        let data = identity::read_at(&file, offset, len)?;
        let digests = checksum::digest(algorithm, &data);
        Ok::<_, std::io::Error>((data, digests))
    })
    .await?
    .with_context(|| format!("reading {len} bytes at offset {offset}"))
}

/// A file below one part: one PutObject with Content-MD5 and the checksum.
async fn put_single(
    ctx: &Ctx,
    file: &Arc<File>,
    identity: &Identity,
    local: &Path,
    to: &S3Url,
    started: Instant,
) -> anyhow::Result<()> {
    let algorithm = ctx.args.checksum_algorithm;
    let len = identity.size_bytes;
    let (data, digests) = read_digest(file, 0, len, algorithm).await?;
    let body = Bytes::from(data);
    let sent = Sent::default();
    let out = retry("PutObject", None, || {
        sent.bytes.fetch_add(len, Ordering::Relaxed);
        let request = ctx
            .client
            .put_object()
            .bucket(&to.bucket)
            .key(&to.key)
            .content_md5(digests.content_md5())
            .body(ByteStream::from(body.clone()));
        let request = with_checksum!(request, algorithm, digests.checksum_b64());
        // UNSIGNED-PAYLOAD, as UploadPart (PartTask::send) says why.
        async move { request.customize().disable_payload_signing().send().await.map_err(classify) }
    })
    .await
    .context("PutObject")?;
    let etag = out.e_tag().map(str::to_owned).unwrap_or_else(|| digests.etag());
    if bare_etag(&etag) != hex::encode(digests.md5) {
        bail!("the server's ETag {etag} is not the MD5 of the bytes sent ({})", digests.etag());
    }
    summary(local, to, &etag, &digests.checksum_b64(), algorithm.name(), started, &sent);
    println!("parts: 0 (one PutObject)");
    Ok(())
}

/// Starts a multipart upload and writes its state file before any part is sent.
async fn create(
    ctx: &Ctx,
    to: &S3Url,
    identity: &Identity,
    local: &Path,
    part_bytes: u64,
) -> anyhow::Result<State> {
    let algorithm = ctx.args.checksum_algorithm;
    let out = retry("CreateMultipartUpload", None, || {
        let request = ctx
            .client
            .create_multipart_upload()
            .bucket(&to.bucket)
            .key(&to.key)
            .checksum_algorithm(algorithm.sdk())
            .checksum_type(ChecksumType::Composite);
        async move { request.send().await.map_err(classify) }
    })
    .await
    .context("CreateMultipartUpload")?;
    let upload_id = out.upload_id().context("CreateMultipartUpload answered no upload id")?;
    Ok(State {
        direction: Direction::Upload,
        algorithm,
        part_bytes,
        created_ms: now_ms(),
        source: *identity,
        endpoint: ctx.endpoint.clone(),
        bucket: to.bucket.clone(),
        key: to.key.clone(),
        upload_id: upload_id.to_owned(),
        local_path: local.to_string_lossy().into_owned(),
        remote_etag: String::new(),
        parts: BTreeMap::new(),
    })
}

/// Asks the server which parts it holds (ListParts, paged) and keeps those whose ETag is the
/// local bytes' MD5 (and whose checksum matches, when the server gives one).
async fn reconcile(ctx: &Ctx, file: &Arc<File>, state: &State) -> anyhow::Result<Resume> {
    let size = state.source.size_bytes;
    let count = part_count(size, state.part_bytes)?;
    let listed = match list_parts(ctx, state).await {
        Ok(l) => l,
        Err(f) if f.code() == Some("NoSuchUpload") => {
            return Ok(match already_complete(ctx, state, count).await {
                Some(etag) => Resume::Complete(etag),
                None => Resume::Gone,
            });
        }
        Err(f) => return Err(anyhow!(f).context("ListParts")),
    };
    let mut acked = BTreeMap::new();
    for (n, (etag, size_bytes, theirs)) in listed {
        if n > count {
            continue;
        }
        let (offset, len) = part_range(state.part_bytes, n, size);
        if size_bytes != len {
            eprintln!(
                "resume: part {n} on the server has {size_bytes} bytes, not {len}; sending it again"
            );
            continue;
        }
        let record = match state.parts.get(&n) {
            Some(r) if r.size_bytes == len => r.clone(),
            _ => {
                let (_, d) = read_digest(file, offset, len, state.algorithm).await?;
                PartRecord { size_bytes: len, md5: d.md5, checksum: d.checksum }
            }
        };
        let same_md5 = bare_etag(&etag) == hex::encode(record.md5);
        let same_checksum =
            theirs.is_none_or(|t| checksum::unb64(&t).as_ref() == Some(&record.checksum));
        if same_md5 && same_checksum {
            acked.insert(n, Acked { etag, record });
        } else {
            eprintln!(
                "resume: part {n} on the server differs from the local bytes; sending it again"
            );
        }
    }
    Ok(Resume::Parts(acked))
}

/// Every part the server lists: number → (ETag, size, checksum in the upload's algorithm).
async fn list_parts(
    ctx: &Ctx,
    state: &State,
) -> Result<BTreeMap<u32, (String, u64, Option<String>)>, Failure> {
    let mut parts = BTreeMap::new();
    let mut marker: Option<String> = None;
    // Bounded: each page advances the marker by at least one part of at most 10,000.
    for _ in 0..=PART_COUNT_MAX {
        let out = retry("ListParts", None, || {
            let request = ctx
                .client
                .list_parts()
                .bucket(&state.bucket)
                .key(&state.key)
                .upload_id(&state.upload_id)
                .max_parts(1000)
                .set_part_number_marker(marker.clone());
            async move { request.send().await.map_err(classify) }
        })
        .await?;
        for p in out.parts() {
            let (Some(n), Some(etag)) = (p.part_number(), p.e_tag()) else { continue };
            let (Ok(n), Ok(size)) = (u32::try_from(n), u64::try_from(p.size().unwrap_or(-1)))
            else {
                continue;
            };
            parts.insert(
                n,
                (etag.to_owned(), size, checksum_of!(p, state.algorithm).map(str::to_owned)),
            );
        }
        let next = out.next_part_number_marker().map(str::to_owned);
        if out.is_truncated() != Some(true) || next.is_none() || next == marker {
            return Ok(parts);
        }
        marker = next;
    }
    Err(Failure::Fatal("ListParts did not end".into()))
}

/// The object's ETag if the object at the key is exactly what this upload would complete to
/// (every part recorded, the ETag the MD5 of their MD5s).
async fn already_complete(ctx: &Ctx, state: &State, count: u32) -> Option<String> {
    if state.parts.len() != usize::try_from(count).ok()?
        || state.parts.keys().next_back() != Some(&count)
    {
        return None;
    }
    let expected = checksum::multipart_etag(state.parts.values().map(|p| &p.md5));
    let out = retry("HeadObject", None, || {
        let request = ctx.client.head_object().bucket(&state.bucket).key(&state.key);
        async move { request.send().await.map_err(classify) }
    })
    .await
    .ok()?;
    let etag = out.e_tag()?;
    (bare_etag(etag) == bare_etag(&expected)).then(|| etag.to_owned())
}

/// CompleteMultipartUpload with every part's ETag and checksum; the object's ETag and
/// composite checksum, checked against ours.
async fn complete(
    ctx: &Ctx,
    state: &State,
    acked: &BTreeMap<u32, Acked>,
    to: &S3Url,
) -> anyhow::Result<(String, String)> {
    let algorithm = state.algorithm;
    let mut parts = Vec::with_capacity(acked.len());
    for (n, a) in acked {
        let b = CompletedPart::builder().part_number(i32::try_from(*n)?).e_tag(&a.etag);
        parts.push(with_checksum!(b, algorithm, checksum::b64(&a.record.checksum)).build());
    }
    let expected_etag = checksum::multipart_etag(acked.values().map(|a| &a.record.md5));
    let expected_checksum =
        checksum::composite(algorithm, acked.values().map(|a| a.record.checksum.as_slice()));
    let upload = CompletedMultipartUpload::builder().set_parts(Some(parts)).build();
    let out = retry("CompleteMultipartUpload", None, || {
        let request = ctx
            .client
            .complete_multipart_upload()
            .bucket(&to.bucket)
            .key(&to.key)
            .upload_id(&state.upload_id)
            .multipart_upload(upload.clone());
        async move { request.send().await.map_err(classify) }
    })
    .await;
    let count = u32::try_from(acked.len())?;
    let out = match out {
        Ok(out) => out,
        // An earlier attempt may have completed it and lost the answer.
        Err(f) if f.code() == Some("NoSuchUpload") => {
            return match already_complete(ctx, state, count).await {
                Some(etag) => Ok((etag, expected_checksum)),
                None => Err(anyhow!(f).context("CompleteMultipartUpload")),
            };
        }
        Err(f) => return Err(anyhow!(f).context("CompleteMultipartUpload")),
    };
    let etag = out.e_tag().map(str::to_owned).unwrap_or_else(|| expected_etag.clone());
    if bare_etag(&etag) != bare_etag(&expected_etag) {
        bail!("the object's ETag is {etag}, but its parts' MD5s make {expected_etag}");
    }
    if let Some(theirs) = checksum_of!(out, algorithm)
        && theirs != expected_checksum
    {
        bail!(
            "the object's {} is {theirs}, but its parts make {expected_checksum}",
            algorithm.name()
        );
    }
    Ok((etag, expected_checksum))
}

/// `--abort`: aborts the upload on the server and removes the state file.
async fn abort(ctx: &Ctx, state_path: &Path, local: &Path, to: &S3Url) -> anyhow::Result<()> {
    let state = match State::load(state_path) {
        Err(e @ StateError::Damaged { .. }) => {
            State::remove(state_path)?;
            println!(
                "{e}\nremoved it; the upload it named is left to the server's expiry of \
                 abandoned uploads (its id was in the file)"
            );
            return Ok(());
        }
        other => other?,
    };
    let state = state.with_context(|| {
        format!("no unfinished upload of {} to {to} (no {})", local.display(), state_path.display())
    })?;
    match abort_upload(ctx, &state).await {
        Ok(()) => println!("aborted upload {} of {to}", state.upload_id),
        Err(f) if f.code() == Some("NoSuchUpload") => {
            println!("upload {} of {to} was already gone", state.upload_id);
        }
        Err(f) => return Err(anyhow!(f).context("AbortMultipartUpload")),
    }
    State::remove(state_path)?;
    Ok(())
}

async fn abort_upload(ctx: &Ctx, state: &State) -> Result<(), Failure> {
    retry("AbortMultipartUpload", None, || {
        let request = ctx
            .client
            .abort_multipart_upload()
            .bucket(&state.bucket)
            .key(&state.key)
            .upload_id(&state.upload_id);
        async move { request.send().await.map_err(classify) }
    })
    .await
    .map(|_| ())
}

/// Aborts an upload being abandoned (`--restart`); a failure is only reported.
async fn abort_quietly(ctx: &Ctx, state: &State) {
    match abort_upload(ctx, state).await {
        Ok(()) => eprintln!("aborted the earlier upload {}", state.upload_id),
        Err(f) if f.code() == Some("NoSuchUpload") => {}
        Err(f) => eprintln!("could not abort the earlier upload {}: {f}", state.upload_id),
    }
}
