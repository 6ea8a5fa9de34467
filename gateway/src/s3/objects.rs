//! Objects: put, get (whole, a range, or one part), head, delete, copy, attributes.

use s3s::dto::*;
use s3s::{S3ErrorCode, S3Request, S3Response, S3Result};
use tessera_engine::{
    ChecksumSpec, ChecksumType, EngineError, ObjectInfo, OwnedObjectPut, PartInfo,
};

use crate::s3::body::{object_body, request_body};
use crate::s3::conditions::Conditions;
use crate::s3::convert::{
    ChecksumFields, STORAGE_CLASS, checksum_spec, checksum_type_dto, checksums_of, content_length,
    content_md5, content_type_dto, count, etag, metadata_dto, object_meta, page_size,
    set_checksums, size, timestamp,
};
use crate::s3::errors::{engine_error, invalid_request, s3_error};
use crate::s3::multipart::copy_source;
use crate::s3::{Gateway, actor, trailer};

/// Whether the client asked for checksums in the response (`x-amz-checksum-mode: ENABLED`).
fn checksum_mode(mode: Option<&ChecksumMode>) -> bool {
    mode.is_some_and(|m| m.as_str().eq_ignore_ascii_case(ChecksumMode::ENABLED))
}

/// The object at `bucket`/`key`, if any (NoSuchBucket is still an error).
fn current_object(gw: &Gateway, bucket: &str, key: &str) -> S3Result<Option<ObjectInfo>> {
    match gw.engine.engine().head_object(bucket, key) {
        Ok(object) => Ok(Some(object)),
        Err(EngineError::NoSuchKey { .. }) => Ok(None),
        Err(e) => Err(engine_error(e)),
    }
}

pub(crate) async fn put_object(
    gw: &Gateway,
    req: S3Request<PutObjectInput>,
) -> S3Result<S3Response<PutObjectOutput>> {
    let actor = actor(&req);
    let input = req.input;
    let conditions = Conditions {
        if_match: input.if_match.as_ref(),
        if_none_match: input.if_none_match.as_ref(),
        ..Default::default()
    };
    let condition = conditions.write_condition()?;
    if condition.is_some() {
        // Early, before the body is read; the engine decides again as the object commits.
        let current = current_object(gw, &input.bucket, &input.key)?;
        conditions.check_write(current.as_ref())?;
    }
    let (body, mismatch) =
        trailer::checked(request_body(input.body), &req.headers, req.trailing_headers);
    let spec = checksum_spec(input.checksum_algorithm.as_ref(), None)?
        .map(|s| ChecksumSpec { kind: ChecksumType::FullObject, ..s });
    let request = OwnedObjectPut {
        meta: object_meta(input.content_type.as_ref(), input.metadata.as_ref(), spec),
        content_length: content_length(input.content_length)?,
        content_md5: content_md5(input.content_md5.as_ref())?,
        checksums: checksums_of!(input).decode()?,
        bucket: input.bucket,
        key: input.key,
        condition,
    };
    let object = gw.engine.put_object(actor, request, body).await.map_err(|e| mismatch.error(e))?;
    let mut out = PutObjectOutput {
        e_tag: Some(etag(&object.etag)),
        size: Some(size(object.size_bytes)),
        checksum_type: object.checksum.as_ref().map(|c| checksum_type_dto(c.kind)),
        ..Default::default()
    };
    set_checksums!(out, ChecksumFields::of_object(object.checksum.as_ref()));
    Ok(S3Response::new(out))
}

/// What a GET or HEAD serves: the whole object, a byte range of it, or one of its parts.
#[derive(Clone, Copy, Debug)]
enum Selection {
    Whole,
    Range { first: u64, last: u64 },
    Part(u32),
}

fn selection(
    object: &ObjectInfo,
    range: Option<&Range>,
    part_number: Option<i32>,
) -> S3Result<Selection> {
    match (range, part_number) {
        (Some(_), Some(_)) => {
            Err(invalid_request("Cannot specify both Range header and partNumber query parameter"))
        }
        (None, Some(n)) => {
            u32::try_from(n).ok().filter(|n| *n >= 1).map(Selection::Part).ok_or_else(|| {
                crate::s3::errors::invalid_argument(
                    "Part number must be an integer between 1 and 10000, inclusive",
                )
            })
        }
        (Some(range), None) => {
            let span = range.check(object.size_bytes).map_err(|_| {
                s3_error(
                    S3ErrorCode::InvalidRange,
                    416,
                    format!("the range is not satisfiable for {} bytes", object.size_bytes),
                )
            })?;
            Ok(Selection::Range { first: span.start, last: span.end.saturating_sub(1) })
        }
        (None, None) => Ok(Selection::Whole),
    }
}

/// The headers a GET and a HEAD share.
struct Served {
    content_length: i64,
    content_range: Option<String>,
    parts_count: Option<i32>,
    checksums: ChecksumFields,
    checksum_type: Option<ChecksumType>,
}

/// One part of an object and where it starts in the object.
#[derive(Clone, Debug)]
struct PartAt {
    part: PartInfo,
    offset: u64,
}

/// The headers for `selection` of `object`; `checksums` is the checksum mode. A part of a
/// multipart object is served as a 206 with its place in the object; a range carries no
/// checksum (none covers it).
fn served(
    object: &ObjectInfo,
    selection: Selection,
    part: Option<&PartAt>,
    checksums: bool,
) -> Served {
    let total = object.size_bytes;
    let object_checksums = || {
        if checksums {
            ChecksumFields::of_object(object.checksum.as_ref())
        } else {
            ChecksumFields::default()
        }
    };
    match (selection, part) {
        (Selection::Part(_), Some(PartAt { part, offset })) => {
            let multipart = object.parts_count.is_some();
            Served {
                content_length: size(part.size_bytes),
                content_range: (multipart && part.size_bytes > 0)
                    .then(|| format!("bytes {offset}-{}/{total}", offset + part.size_bytes - 1)),
                parts_count: Some(count(object.parts_count.unwrap_or(1))),
                checksums: match (checksums, multipart) {
                    (true, true) => ChecksumFields::of_part(part.checksum.as_ref()),
                    _ => object_checksums(),
                },
                checksum_type: None,
            }
        }
        (Selection::Range { first, last }, _) => Served {
            content_length: size(last - first + 1),
            content_range: Some(format!("bytes {first}-{last}/{total}")),
            parts_count: None,
            checksums: ChecksumFields::default(),
            checksum_type: None,
        },
        _ => Served {
            content_length: size(total),
            content_range: None,
            parts_count: None,
            checksums: object_checksums(),
            checksum_type: if checksums { object.checksum.as_ref().map(|c| c.kind) } else { None },
        },
    }
}

/// The part numbered `n` (as uploaded; numbers may skip) of the object's part table, with its
/// offset in the object.
fn part_at(parts: &[PartInfo], n: u32) -> Result<PartAt, EngineError> {
    let index = parts.iter().position(|p| p.part_number == n).ok_or(EngineError::InvalidPart {
        part_number: n,
        reason: "the object has no such part",
    })?;
    let before = parts.get(..index).unwrap_or_default();
    let part = parts.get(index).cloned().ok_or(EngineError::InvalidPart {
        part_number: n,
        reason: "the object has no such part",
    })?;
    Ok(PartAt { part, offset: before.iter().map(|p| p.size_bytes).sum() })
}

/// An object opened for a GET: what it is, which part (if one), and its bytes.
struct Opened {
    object: ObjectInfo,
    part: Option<PartAt>,
    reader: tessera_engine::ObjectReader,
}

fn open(
    engine: &tessera_engine::Engine,
    bucket: &str,
    key: &str,
    selection: Selection,
) -> Result<Opened, EngineError> {
    match selection {
        Selection::Whole => {
            let (object, reader) = engine.open_object(bucket, key, None)?;
            Ok(Opened { object, part: None, reader })
        }
        Selection::Range { first, last } => {
            let (object, reader) = engine.open_object(bucket, key, Some((first, last)))?;
            Ok(Opened { object, part: None, reader })
        }
        Selection::Part(n) => {
            let opened = engine.open_object_part(bucket, key, n)?;
            let at = PartAt { part: opened.part, offset: opened.offset_bytes };
            Ok(Opened { object: opened.object, part: Some(at), reader: opened.reader })
        }
    }
}

pub(crate) async fn get_object(
    gw: &Gateway,
    req: S3Request<GetObjectInput>,
) -> S3Result<S3Response<GetObjectOutput>> {
    let input = req.input;
    let object = gw.engine.engine().head_object(&input.bucket, &input.key).map_err(engine_error)?;
    Conditions {
        if_match: input.if_match.as_ref(),
        if_none_match: input.if_none_match.as_ref(),
        if_modified_since: input.if_modified_since.as_ref(),
        if_unmodified_since: input.if_unmodified_since.as_ref(),
    }
    .check_read(&object)?;
    let selection = selection(&object, input.range.as_ref(), input.part_number)?;
    let checksums = checksum_mode(input.checksum_mode.as_ref());
    let (bucket, key) = (input.bucket, input.key);
    // Opening checks a payload's SHA-256 on its first read since start: blocking work.
    let opened =
        gw.engine.call(move |e| open(e, &bucket, &key, selection)).await.map_err(engine_error)?;
    let object = &opened.object;
    let served = served(object, selection, opened.part.as_ref(), checksums);
    let mut out = GetObjectOutput {
        body: Some(object_body(opened.reader)),
        accept_ranges: Some("bytes".to_owned()),
        content_length: Some(served.content_length),
        content_range: served.content_range,
        content_type: content_type_dto(&object.meta),
        e_tag: Some(etag(&object.etag)),
        last_modified: Some(timestamp(object.last_modified_ms)),
        metadata: metadata_dto(&object.meta),
        parts_count: served.parts_count,
        checksum_type: served.checksum_type.map(checksum_type_dto),
        ..Default::default()
    };
    set_checksums!(out, served.checksums);
    Ok(S3Response::new(out))
}

pub(crate) fn head_object(
    gw: &Gateway,
    req: S3Request<HeadObjectInput>,
) -> S3Result<S3Response<HeadObjectOutput>> {
    let input = req.input;
    let engine = gw.engine.engine();
    let object = engine.head_object(&input.bucket, &input.key).map_err(engine_error)?;
    Conditions {
        if_match: input.if_match.as_ref(),
        if_none_match: input.if_none_match.as_ref(),
        if_modified_since: input.if_modified_since.as_ref(),
        if_unmodified_since: input.if_unmodified_since.as_ref(),
    }
    .check_read(&object)?;
    let selection = selection(&object, input.range.as_ref(), input.part_number)?;
    let part = match selection {
        Selection::Part(n) => {
            let parts = engine.object_parts(&input.bucket, &input.key).map_err(engine_error)?;
            Some(part_at(&parts, n).map_err(engine_error)?)
        }
        Selection::Whole | Selection::Range { .. } => None,
    };
    let served =
        served(&object, selection, part.as_ref(), checksum_mode(input.checksum_mode.as_ref()));
    let mut out = HeadObjectOutput {
        accept_ranges: Some("bytes".to_owned()),
        content_length: Some(served.content_length),
        content_range: served.content_range,
        content_type: content_type_dto(&object.meta),
        e_tag: Some(etag(&object.etag)),
        last_modified: Some(timestamp(object.last_modified_ms)),
        metadata: metadata_dto(&object.meta),
        parts_count: served.parts_count,
        checksum_type: served.checksum_type.map(checksum_type_dto),
        ..Default::default()
    };
    set_checksums!(out, served.checksums);
    Ok(S3Response::new(out))
}

/// Only the version "null" exists in this unversioned store.
fn check_version(version_id: Option<&str>) -> S3Result<()> {
    match version_id {
        Some(v) if v != "null" => Err(s3_error(
            S3ErrorCode::NoSuchVersion,
            404,
            "this store is not versioned: the only version id is \"null\"",
        )),
        _ => Ok(()),
    }
}

pub(crate) async fn delete_object(
    gw: &Gateway,
    req: S3Request<DeleteObjectInput>,
) -> S3Result<S3Response<DeleteObjectOutput>> {
    let actor = actor(&req);
    let input = req.input;
    check_version(input.version_id.as_deref())?;
    if input.if_match.is_some() {
        let current = current_object(gw, &input.bucket, &input.key)?;
        Conditions { if_match: input.if_match.as_ref(), ..Default::default() }
            .check_write(current.as_ref())?;
    }
    let (bucket, key) = (input.bucket, input.key);
    gw.engine.call(move |e| e.delete_object(&actor, &bucket, &key)).await.map_err(engine_error)?;
    Ok(S3Response::new(DeleteObjectOutput::default()))
}

/// Keys one DeleteObjects may name (S3's limit).
const DELETE_OBJECTS_KEYS_MAX: usize = 1000;
/// Deletions of one DeleteObjects in flight at once: they share fsyncs (group commit).
const DELETE_OBJECTS_CONCURRENCY: usize = 16;

pub(crate) async fn delete_objects(
    gw: &Gateway,
    req: S3Request<DeleteObjectsInput>,
) -> S3Result<S3Response<DeleteObjectsOutput>> {
    use futures_util::StreamExt;

    let actor = actor(&req);
    let input = req.input;
    if input.delete.objects.len() > DELETE_OBJECTS_KEYS_MAX {
        return Err(s3_error(
            S3ErrorCode::MalformedXML,
            400,
            format!("a DeleteObjects request names at most {DELETE_OBJECTS_KEYS_MAX} keys"),
        ));
    }
    gw.engine.engine().head_bucket(&input.bucket).map_err(engine_error)?;
    let quiet = input.delete.quiet.unwrap_or(false);
    let outcomes: Vec<(ObjectIdentifier, S3Result<()>)> =
        futures_util::stream::iter(input.delete.objects.into_iter().map(|ident| {
            let (engine, actor, bucket) = (gw.engine.clone(), actor.clone(), input.bucket.clone());
            async move {
                if let Err(e) = check_version(ident.version_id.as_deref()) {
                    return (ident, Err(e));
                }
                let key = ident.key.clone();
                let result = engine
                    .call(move |e| e.delete_object(&actor, &bucket, &key))
                    .await
                    .map(|_| ())
                    .map_err(engine_error);
                (ident, result)
            }
        }))
        .buffered(DELETE_OBJECTS_CONCURRENCY)
        .collect()
        .await;
    let mut deleted = Vec::new();
    let mut errors = Vec::new();
    for (ident, result) in outcomes {
        match result {
            Ok(()) if quiet => {}
            Ok(()) => deleted.push(DeletedObject {
                key: Some(ident.key),
                version_id: ident.version_id,
                ..Default::default()
            }),
            Err(e) => errors.push(Error {
                code: Some(e.code().as_str().to_owned()),
                key: Some(ident.key),
                message: e.message().map(str::to_owned),
                version_id: ident.version_id,
            }),
        }
    }
    Ok(S3Response::new(DeleteObjectsOutput {
        deleted: Some(deleted),
        errors: Some(errors),
        ..Default::default()
    }))
}

pub(crate) async fn copy_object(
    gw: &Gateway,
    req: S3Request<CopyObjectInput>,
) -> S3Result<S3Response<CopyObjectOutput>> {
    let actor = actor(&req);
    let input = req.input;
    let (source_bucket, source_key) = copy_source(&input.copy_source)?;
    let source =
        gw.engine.engine().head_object(&source_bucket, &source_key).map_err(engine_error)?;
    Conditions {
        if_match: input.copy_source_if_match.as_ref(),
        if_none_match: input.copy_source_if_none_match.as_ref(),
        if_modified_since: input.copy_source_if_modified_since.as_ref(),
        if_unmodified_since: input.copy_source_if_unmodified_since.as_ref(),
    }
    .check_copy_source(&source)?;
    let replace = input
        .metadata_directive
        .as_ref()
        .is_some_and(|d| d.as_str().eq_ignore_ascii_case(MetadataDirective::REPLACE));
    if !replace && source_bucket == input.bucket && source_key == input.key {
        return Err(invalid_request(
            "This copy request is illegal because it is trying to copy an object to itself \
             without changing the object's metadata, storage class, website redirect location \
             or encryption attributes.",
        ));
    }
    let meta =
        replace.then(|| object_meta(input.content_type.as_ref(), input.metadata.as_ref(), None));
    let (bucket, key) = (input.bucket, input.key);
    let object = gw
        .engine
        .call(move |e| e.copy_object(&actor, (&source_bucket, &source_key), (&bucket, &key), meta))
        .await
        .map_err(engine_error)?;
    let mut result = CopyObjectResult {
        e_tag: Some(etag(&object.etag)),
        last_modified: Some(timestamp(object.last_modified_ms)),
        checksum_type: object.checksum.as_ref().map(|c| checksum_type_dto(c.kind)),
        ..Default::default()
    };
    set_checksums!(result, ChecksumFields::of_object(object.checksum.as_ref()));
    Ok(S3Response::new(CopyObjectOutput { copy_object_result: Some(result), ..Default::default() }))
}

pub(crate) fn get_object_attributes(
    gw: &Gateway,
    req: S3Request<GetObjectAttributesInput>,
) -> S3Result<S3Response<GetObjectAttributesOutput>> {
    let input = req.input;
    check_version(input.version_id.as_deref())?;
    let engine = gw.engine.engine();
    let object = engine.head_object(&input.bucket, &input.key).map_err(engine_error)?;
    let wants = |name: &str| input.object_attributes.iter().any(|a| a.as_str() == name);
    let mut out = GetObjectAttributesOutput {
        last_modified: Some(timestamp(object.last_modified_ms)),
        ..Default::default()
    };
    if wants(ObjectAttributes::ETAG) {
        out.e_tag = Some(etag(&object.etag));
    }
    if wants(ObjectAttributes::OBJECT_SIZE) {
        out.object_size = Some(size(object.size_bytes));
    }
    if wants(ObjectAttributes::STORAGE_CLASS) {
        out.storage_class = Some(StorageClass::from_static(STORAGE_CLASS));
    }
    if wants(ObjectAttributes::CHECKSUM)
        && let Some(c) = &object.checksum
    {
        let mut checksum =
            Checksum { checksum_type: Some(checksum_type_dto(c.kind)), ..Default::default() };
        set_checksums!(checksum, ChecksumFields::of_object(Some(c)));
        out.checksum = Some(checksum);
    }
    if wants(ObjectAttributes::OBJECT_PARTS)
        && let Some(total) = object.parts_count
    {
        let parts = engine.object_parts(&input.bucket, &input.key).map_err(engine_error)?;
        let marker = input.part_number_marker.unwrap_or(0);
        let after = u32::try_from(marker).map_err(|_| {
            crate::s3::errors::invalid_argument("part-number-marker must not be negative")
        })?;
        let max = page_size(input.max_parts, "max-parts")?.unwrap_or(1000).min(1000);
        let max = usize::try_from(max).unwrap_or(usize::MAX);
        let rest: Vec<&PartInfo> = parts.iter().filter(|p| p.part_number > after).collect();
        let page: Vec<ObjectPart> = rest
            .iter()
            .take(max)
            .map(|p| {
                let mut part = ObjectPart {
                    part_number: Some(count(p.part_number)),
                    size: Some(size(p.size_bytes)),
                    ..Default::default()
                };
                set_checksums!(part, ChecksumFields::of_part(p.checksum.as_ref()));
                part
            })
            .collect();
        let is_truncated = max > 0 && rest.len() > page.len();
        out.object_parts = Some(GetObjectAttributesParts {
            is_truncated: Some(is_truncated),
            max_parts: Some(count(u32::try_from(max).unwrap_or(1000))),
            next_part_number_marker: if is_truncated {
                page.last().and_then(|p| p.part_number)
            } else {
                None
            },
            part_number_marker: Some(marker),
            total_parts_count: Some(count(total)),
            parts: Some(page),
        });
    }
    Ok(S3Response::new(out))
}
