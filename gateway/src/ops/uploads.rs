//! `tessera uploads DIR [--bucket B] [--prefix P]`: the uploads in progress, a page of the
//! engine's listing at a time (each upload's parts are counted from its own part listing).
//!
//! ```text
//! INITIATED                 EXPIRES                   PARTS       BYTES  UPLOAD ID                                         BUCKET  KEY
//! 2025-01-31T12:00:00.000Z  2025-02-07T12:00:00.000Z      3    15.0 MiB  0000019...                                        photos  cat.jpg
//! 1 upload, 3 parts, 15.0 MiB
//! ```

use anyhow::Context;
use tessera_engine::{Engine, ListParts, ListUploads, UploadSummary};

use super::{UploadsArgs, fmt, open_read_only};

/// Uploads per page of the engine's listing.
const PAGE_UPLOADS: u32 = 1000;

/// Runs `tessera uploads`.
pub fn run(args: &UploadsArgs) -> anyhow::Result<()> {
    let opened = open_read_only(&args.dir)?;
    let engine = &opened.engine;
    let buckets: Vec<String> = match &args.bucket {
        Some(bucket) => {
            engine.head_bucket(bucket).with_context(|| format!("bucket {bucket:?}"))?;
            vec![bucket.clone()]
        }
        None => engine.list_buckets().into_iter().map(|b| b.name).collect(),
    };
    let bucket_width = buckets.iter().map(|b| b.chars().count()).max().unwrap_or(0).max(6);
    let mut totals = (0u64, 0u64, 0u64);
    let mut header_printed = false;
    for bucket in &buckets {
        let mut args_page = ListUploads {
            prefix: args.prefix.clone().unwrap_or_default(),
            max_uploads: Some(PAGE_UPLOADS),
            ..ListUploads::default()
        };
        loop {
            let page = engine.list_uploads(bucket, &args_page)?;
            for upload in &page.uploads {
                if !header_printed {
                    println!(
                        "{:<24}  {:<24}  {:>5}  {:>10}  {:<48}  {:<bucket_width$}  KEY",
                        "INITIATED", "EXPIRES", "PARTS", "BYTES", "UPLOAD ID", "BUCKET"
                    );
                    header_printed = true;
                }
                let (parts, bytes) = print_upload(engine, bucket, upload, bucket_width)?;
                totals.0 += 1;
                totals.1 += parts;
                totals.2 += bytes;
            }
            if !page.is_truncated {
                break;
            }
            args_page.key_marker = page.next_key_marker;
            args_page.upload_id_marker = page.next_upload_id_marker;
        }
    }
    let (uploads, parts, bytes) = totals;
    if uploads == 0 {
        println!("no uploads in progress");
    } else {
        println!(
            "{uploads} upload{}, {parts} part{}, {}",
            if uploads == 1 { "" } else { "s" },
            if parts == 1 { "" } else { "s" },
            fmt::bytes(bytes)
        );
    }
    Ok(())
}

/// Prints one upload's line; returns its parts and their bytes.
fn print_upload(
    engine: &Engine,
    bucket: &str,
    upload: &UploadSummary,
    bucket_width: usize,
) -> anyhow::Result<(u64, u64)> {
    let id = upload.upload_id.to_string();
    let info = engine.get_upload(bucket, &upload.key, &id)?;
    let (mut parts, mut bytes) = (0u64, 0u64);
    let mut list = ListParts::default();
    loop {
        let page = engine.list_parts(bucket, &upload.key, &id, &list)?;
        parts += page.parts.len() as u64;
        bytes += page.parts.iter().map(|p| p.size_bytes).sum::<u64>();
        match page.next_part_number_marker.filter(|_| page.is_truncated) {
            Some(marker) => list.part_number_marker = marker,
            None => break,
        }
    }
    println!(
        "{}  {}  {parts:>5}  {:>10}  {id:<48}  {bucket:<bucket_width$}  {}",
        fmt::time_ms(info.initiated_ms),
        fmt::time_ms(info.expires_ms),
        fmt::bytes(bytes),
        upload.key
    );
    Ok((parts, bytes))
}
