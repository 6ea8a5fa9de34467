//! Multipart uploads: create, upload a part (streamed or copied), list parts, complete, abort.

use s3s::dto::*;
use s3s::{S3ErrorCode, S3Request, S3Response, S3Result};
use tessera_engine::payload::Checksum;
use tessera_engine::{
    CompletePart, Completion, EngineError, ListParts, ObjectInfo, OwnedPartUpload, PartCopy,
};

use crate::s3::body::request_body;
use crate::s3::conditions::Conditions;
use crate::s3::convert::{
    ChecksumFields, STORAGE_CLASS, algorithm_dto, checksum_spec, checksum_type, checksum_type_dto,
    checksums_of, content_length, content_md5, count, etag, initiator, object_meta, owner,
    page_size, parse_etag, set_checksums, size, timestamp,
};
use crate::s3::errors::{engine_error, invalid_argument, s3_error};
use crate::s3::{Gateway, actor, trailer};

/// A part number as the engine takes it (it checks 1..=10000 itself).
fn part_number(n: i32) -> S3Result<u32> {
    u32::try_from(n).map_err(|_| {
        invalid_argument("Part number must be an integer between 1 and 10000, inclusive")
    })
}

pub(crate) async fn create(
    gw: &Gateway,
    req: S3Request<CreateMultipartUploadInput>,
) -> S3Result<S3Response<CreateMultipartUploadOutput>> {
    let actor = actor(&req);
    let input = req.input;
    let spec = checksum_spec(input.checksum_algorithm.as_ref(), input.checksum_type.as_ref())?;
    let meta = object_meta(input.content_type.as_ref(), input.metadata.as_ref(), spec);
    let (bucket, key) = (input.bucket.clone(), input.key.clone());
    let info = gw
        .engine
        .call(move |e| e.create_upload(&actor, &bucket, &key, meta))
        .await
        .map_err(engine_error)?;
    Ok(S3Response::new(CreateMultipartUploadOutput {
        abort_date: info.abort_ms.map(timestamp),
        abort_rule_id: info.abort_rule_id.clone(),
        bucket: Some(input.bucket),
        key: Some(input.key),
        upload_id: Some(info.upload_id.to_string()),
        checksum_algorithm: spec.map(|s| algorithm_dto(s.algorithm)),
        checksum_type: spec.map(|s| checksum_type_dto(s.kind)),
        ..Default::default()
    }))
}

pub(crate) async fn upload_part(
    gw: &Gateway,
    req: S3Request<UploadPartInput>,
) -> S3Result<S3Response<UploadPartOutput>> {
    let actor = actor(&req);
    let input = req.input;
    let (body, mismatch) =
        trailer::checked(request_body(input.body), &req.headers, req.trailing_headers);
    let request = OwnedPartUpload {
        part_number: part_number(input.part_number)?,
        content_length: content_length(input.content_length)?,
        content_md5: content_md5(input.content_md5.as_ref())?,
        checksums: checksums_of!(input).decode()?,
        bucket: input.bucket,
        key: input.key,
        upload_id: input.upload_id,
        expected_version: None,
    };
    let stored = gw.engine.put_part(actor, request, body).await.map_err(|e| mismatch.error(e))?;
    let mut out = UploadPartOutput { e_tag: Some(etag(&stored.part.etag)), ..Default::default() };
    set_checksums!(out, ChecksumFields::of_part(stored.part.checksum.as_ref()));
    Ok(S3Response::new(out))
}

/// `x-amz-copy-source-range`: exactly `bytes=first-last`, else InvalidArgument. Whether the
/// range lies within the source is the engine's check (InvalidRange).
pub(crate) fn copy_source_range(text: Option<&str>) -> S3Result<Option<(u64, u64)>> {
    let Some(text) = text else { return Ok(None) };
    let bad = || {
        invalid_argument(
            "The x-amz-copy-source-range value must be of the form bytes=first-last where first \
             and last are the zero-based offsets of the first and last bytes to copy",
        )
    };
    let spec = text.trim().strip_prefix("bytes=").ok_or_else(bad)?;
    let (first, last) = spec.split_once('-').ok_or_else(bad)?;
    let number = |s: &str| -> S3Result<u64> {
        if s.is_empty() || !s.bytes().all(|b| b.is_ascii_digit()) {
            return Err(bad());
        }
        s.parse().map_err(|_| bad())
    };
    let (first, last) = (number(first)?, number(last)?);
    if first > last {
        return Err(bad());
    }
    Ok(Some((first, last)))
}

/// The bucket and key of `x-amz-copy-source` (s3s has URL-decoded it). Only the version
/// "null" exists in this unversioned store.
pub(crate) fn copy_source(source: &CopySource) -> S3Result<(String, String)> {
    match source {
        CopySource::Bucket { bucket, key, version_id } => {
            if version_id.as_deref().is_some_and(|v| v != "null") {
                return Err(s3_error(
                    S3ErrorCode::NoSuchVersion,
                    404,
                    "this store is not versioned: the only version id is \"null\"",
                ));
            }
            Ok((bucket.to_string(), key.to_string()))
        }
        _ => Err(s3_error(
            S3ErrorCode::NotImplemented,
            501,
            "copy sources must name a bucket and a key (access points are not supported)",
        )),
    }
}

pub(crate) async fn upload_part_copy(
    gw: &Gateway,
    req: S3Request<UploadPartCopyInput>,
) -> S3Result<S3Response<UploadPartCopyOutput>> {
    let actor = actor(&req);
    let input = req.input;
    let (source_bucket, source_key) = copy_source(&input.copy_source)?;
    let range = copy_source_range(input.copy_source_range.as_deref())?;
    let part_number = part_number(input.part_number)?;
    let source =
        gw.engine.engine().head_object(&source_bucket, &source_key).map_err(engine_error)?;
    Conditions {
        if_match: input.copy_source_if_match.as_ref(),
        if_none_match: input.copy_source_if_none_match.as_ref(),
        if_modified_since: input.copy_source_if_modified_since.as_ref(),
        if_unmodified_since: input.copy_source_if_unmodified_since.as_ref(),
    }
    .check_copy_source(&source)?;
    let (bucket, key, upload_id) = (input.bucket, input.key, input.upload_id);
    let stored = gw
        .engine
        .call(move |e| {
            e.copy_part(
                &actor,
                &PartCopy {
                    bucket: &bucket,
                    key: &key,
                    upload_id: &upload_id,
                    part_number,
                    source_bucket: &source_bucket,
                    source_key: &source_key,
                    range,
                    expected_version: None,
                },
            )
        })
        .await
        .map_err(engine_error)?;
    let mut result = CopyPartResult {
        e_tag: Some(etag(&stored.part.etag)),
        last_modified: Some(timestamp(stored.part.last_modified_ms)),
        ..Default::default()
    };
    set_checksums!(result, ChecksumFields::of_part(stored.part.checksum.as_ref()));
    Ok(S3Response::new(UploadPartCopyOutput {
        copy_part_result: Some(result),
        ..Default::default()
    }))
}

pub(crate) fn list_parts(
    gw: &Gateway,
    req: S3Request<ListPartsInput>,
) -> S3Result<S3Response<ListPartsOutput>> {
    let input = req.input;
    let marker = input.part_number_marker.unwrap_or(0);
    let args = ListParts {
        part_number_marker: u32::try_from(marker)
            .map_err(|_| invalid_argument("part-number-marker must not be negative"))?,
        max_parts: page_size(input.max_parts, "max-parts")?,
    };
    let page = gw
        .engine
        .engine()
        .list_parts(&input.bucket, &input.key, &input.upload_id, &args)
        .map_err(engine_error)?;
    let upload = &page.upload;
    let parts = page
        .parts
        .iter()
        .map(|p| {
            let mut part = Part {
                e_tag: Some(etag(&p.etag)),
                last_modified: Some(timestamp(p.last_modified_ms)),
                part_number: Some(count(p.part_number)),
                size: Some(size(p.size_bytes)),
                ..Default::default()
            };
            set_checksums!(part, ChecksumFields::of_part(p.checksum.as_ref()));
            part
        })
        .collect();
    Ok(S3Response::new(ListPartsOutput {
        abort_date: upload.abort_ms.map(timestamp),
        abort_rule_id: upload.abort_rule_id.clone(),
        bucket: Some(input.bucket),
        key: Some(input.key),
        upload_id: Some(input.upload_id),
        checksum_algorithm: upload.meta.checksum.map(|s| algorithm_dto(s.algorithm)),
        checksum_type: upload.meta.checksum.map(|s| checksum_type_dto(s.kind)),
        initiator: Some(initiator(&upload.owner)),
        owner: Some(owner(&upload.owner)),
        is_truncated: Some(page.is_truncated),
        max_parts: Some(args.max_parts.map_or(1000, |n| count(n.min(1000)))),
        next_part_number_marker: page.next_part_number_marker.map(count),
        part_number_marker: Some(marker),
        parts: Some(parts),
        storage_class: Some(StorageClass::from_static(STORAGE_CLASS)),
        ..Default::default()
    }))
}

/// The parts a completion lists, as the engine takes them. `algorithm` is the upload's
/// checksum algorithm, if known: a part's value for it is the one checked.
fn completed_parts(
    parts: &[CompletedPart],
    algorithm: Option<tessera_engine::payload::ChecksumAlgorithm>,
) -> S3Result<Vec<CompletePart>> {
    parts
        .iter()
        .map(|p| {
            let number = p.part_number.ok_or_else(|| {
                s3_error(S3ErrorCode::MalformedXML, 400, "every part needs a PartNumber")
            })?;
            let part_number = part_number(number)?;
            let etag = p.e_tag.as_ref().and_then(parse_etag).ok_or_else(|| {
                s3_error(
                    S3ErrorCode::InvalidPart,
                    400,
                    format!(
                        "part {part_number}: the ETag is missing or is not one this store made"
                    ),
                )
            })?;
            let sent: Vec<Checksum> = checksums_of!(p).decode()?;
            let checksum = match algorithm {
                Some(a) => sent.into_iter().find(|c| c.algorithm == a),
                None => sent.into_iter().next(),
            };
            Ok(CompletePart { part_number, etag: etag.md5, checksum: checksum.map(|c| c.value) })
        })
        .collect()
}

fn completed_output(object: &ObjectInfo) -> CompleteMultipartUploadOutput {
    let mut out = CompleteMultipartUploadOutput {
        bucket: Some(object.bucket.clone()),
        key: Some(object.key.clone()),
        e_tag: Some(etag(&object.etag)),
        location: Some(format!("/{}/{}", object.bucket, object.key)),
        checksum_type: object.checksum.as_ref().map(|c| checksum_type_dto(c.kind)),
        ..Default::default()
    };
    set_checksums!(out, ChecksumFields::of_object(object.checksum.as_ref()));
    out
}

pub(crate) async fn complete(
    gw: &Gateway,
    req: S3Request<CompleteMultipartUploadInput>,
) -> S3Result<S3Response<CompleteMultipartUploadOutput>> {
    let actor = actor(&req);
    let input = req.input;
    let engine = gw.engine.engine();
    // Absent when it completed already (a retry) or never existed: the engine tells which.
    let upload = engine.get_upload(&input.bucket, &input.key, &input.upload_id).ok();
    let spec = upload.as_ref().and_then(|u| u.meta.checksum);
    if let (Some(asked), Some(upload)) = (input.checksum_type.as_ref(), &upload) {
        let asked = checksum_type(asked.as_str())?;
        if upload.meta.checksum.map(|s| s.kind) != Some(asked) {
            return Err(s3_error(
                S3ErrorCode::BadDigest,
                400,
                "x-amz-checksum-type differs from the one the upload was created with",
            ));
        }
    }
    let listed = input.multipart_upload.and_then(|m| m.parts).unwrap_or_default();
    let parts = completed_parts(&listed, spec.map(|s| s.algorithm))?;
    let object_checksum = checksums_of!(input).decode_object(parts.len())?;
    let current = match engine.head_object(&input.bucket, &input.key) {
        Ok(object) => Some(object),
        Err(EngineError::NoSuchKey { .. }) => None,
        Err(e) => return Err(engine_error(e)),
    };
    // A retry of a completion that succeeded finds its own object: it gets the same answer.
    let retry = current
        .as_ref()
        .is_some_and(|o| o.upload_id.is_some_and(|id| id.to_string() == input.upload_id));
    let conditions = Conditions {
        if_match: input.if_match.as_ref(),
        if_none_match: input.if_none_match.as_ref(),
        ..Default::default()
    };
    // Checked early here, and again by the engine as the completion commits.
    let condition = conditions.write_condition()?;
    if !retry {
        conditions.check_write(current.as_ref())?;
    }
    let object_size_bytes = match input.mpu_object_size {
        None => None,
        Some(n) => Some(
            u64::try_from(n)
                .map_err(|_| invalid_argument("x-amz-mp-object-size must not be negative"))?,
        ),
    };
    let (bucket, key, upload_id) = (input.bucket, input.key, input.upload_id);
    let engine = gw.engine.clone();
    let mut task = tokio::spawn(async move {
        engine
            .call(move |e| {
                e.complete_upload(
                    &actor,
                    &Completion {
                        bucket: &bucket,
                        key: &key,
                        upload_id: &upload_id,
                        parts,
                        object_size_bytes,
                        expected_version: None,
                        condition,
                        object_checksum,
                    },
                )
            })
            .await
    });
    let finish =
        |joined: Result<Result<ObjectInfo, EngineError>, tokio::task::JoinError>| match joined {
            Ok(Ok(object)) => Ok(completed_output(&object)),
            Ok(Err(e)) => Err(engine_error(e)),
            Err(e) => Err(s3s::S3Error::internal_error(e)),
        };
    // Zero means always: the answer starts before the engine decides (tests use it).
    let waited = if gw.complete_keep_alive_after.is_zero() {
        None
    } else {
        tokio::time::timeout(gw.complete_keep_alive_after, &mut task).await.ok()
    };
    match waited {
        Some(joined) => Ok(S3Response::new(finish(joined)?)),
        None => {
            // An error from here on reaches the client inside the 200 body, without S3's
            // status (as on AWS). s3s 0.14.1 writes it with a second XML declaration, which
            // `keep_alive::one_declaration` drops (in `Metered`), so the client reads its code.
            tracing::debug!("the completion goes on behind keep-alive whitespace");
            Ok(S3Response::new(CompleteMultipartUploadOutput {
                future: Some(Box::pin(async move { finish(task.await) })),
                ..Default::default()
            }))
        }
    }
}

pub(crate) async fn abort(
    gw: &Gateway,
    req: S3Request<AbortMultipartUploadInput>,
) -> S3Result<S3Response<AbortMultipartUploadOutput>> {
    let actor = actor(&req);
    let input = req.input;
    let (bucket, key, upload_id) = (input.bucket, input.key, input.upload_id);
    gw.engine
        .call(move |e| e.abort_upload(&actor, &bucket, &key, &upload_id, None))
        .await
        .map_err(engine_error)?;
    Ok(S3Response::new(AbortMultipartUploadOutput::default()))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn copy_source_range_takes_only_bytes_first_last() {
        assert_eq!(copy_source_range(None).unwrap(), None);
        assert_eq!(copy_source_range(Some("bytes=0-9")).unwrap(), Some((0, 9)));
        for bad in ["0-2", "bytes=0", "bytes=hello-world", "bytes=0-2,3-5", "bytes=5-1", "bytes=-3"]
        {
            let e = copy_source_range(Some(bad)).unwrap_err();
            assert_eq!(e.code(), &S3ErrorCode::InvalidArgument, "{bad}");
        }
    }
}
