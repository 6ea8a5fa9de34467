//! Listings: ListObjectsV2, ListObjects (v1), ListObjectVersions (one version, "null", per
//! key: the store is unversioned) and ListMultipartUploads. Pages come from the engine's
//! ordered indexes; this file only translates markers, tokens and `encoding-type=url`.

use base64::Engine as _;
use base64::engine::general_purpose::URL_SAFE_NO_PAD as TOKEN_BASE64;
use percent_encoding::{AsciiSet, NON_ALPHANUMERIC, utf8_percent_encode};
use s3s::dto::*;
use s3s::{S3Request, S3Response, S3Result};
use tessera_engine::{ListObjects, ListUploads, ObjectSummary, ObjectsPage};

use crate::s3::convert::{
    STORAGE_CLASS, algorithm_dto, checksum_type_dto, etag, initiator, owner, page_size, size,
    timestamp,
};
use crate::s3::errors::{engine_error, invalid_argument};
use crate::s3::{Gateway, actor};

/// What `encoding-type=url` leaves as it is: unreserved characters and the slash.
const URL_KEEP: &AsciiSet =
    &NON_ALPHANUMERIC.remove(b'-').remove(b'_').remove(b'.').remove(b'~').remove(b'/');
/// Page size when the client names none.
const PAGE_DEFAULT: i32 = 1000;

/// Encodes keys and prefixes in a response when the client asked for `encoding-type=url`.
#[derive(Clone, Copy)]
struct Encoder {
    url: bool,
}

impl Encoder {
    fn new(encoding_type: Option<&EncodingType>) -> Encoder {
        Encoder {
            url: encoding_type.is_some_and(|e| e.as_str().eq_ignore_ascii_case(EncodingType::URL)),
        }
    }

    fn text(self, text: &str) -> String {
        if self.url { utf8_percent_encode(text, URL_KEEP).to_string() } else { text.to_owned() }
    }

    fn opt(self, text: Option<&String>) -> Option<String> {
        text.map(|t| self.text(t))
    }
}

/// A continuation token: the key (or common prefix) the next page starts after, opaque to
/// clients.
fn token(start_after: &str) -> String {
    TOKEN_BASE64.encode(start_after)
}

fn start_after_of(token: &str) -> S3Result<String> {
    TOKEN_BASE64
        .decode(token)
        .ok()
        .and_then(|bytes| String::from_utf8(bytes).ok())
        .ok_or_else(|| invalid_argument("The continuation token provided is incorrect"))
}

fn common_prefixes(page: &ObjectsPage, enc: Encoder) -> Vec<CommonPrefix> {
    page.common_prefixes.iter().map(|p| CommonPrefix { prefix: Some(enc.text(p)) }).collect()
}

/// An object as listed; `owner` shown when the listing shows owners (ListObjects always,
/// ListObjectsV2 with `fetch-owner=true`). Every object belongs to the gateway's one identity
/// (the bucket owner, as with S3's BucketOwnerEnforced), which is the requester's.
fn object(summary: &ObjectSummary, enc: Encoder, owner: Option<&Owner>) -> Object {
    Object {
        key: Some(enc.text(&summary.key)),
        e_tag: Some(etag(&summary.etag)),
        last_modified: Some(timestamp(summary.last_modified_ms)),
        size: Some(size(summary.size_bytes)),
        storage_class: Some(ObjectStorageClass::from_static(STORAGE_CLASS)),
        checksum_algorithm: summary.checksum.map(|s| vec![algorithm_dto(s.algorithm)]),
        checksum_type: summary.checksum.map(|s| checksum_type_dto(s.kind)),
        owner: owner.cloned(),
        restore_status: None,
    }
}

fn list_page(
    gw: &Gateway,
    bucket: &str,
    prefix: Option<&String>,
    delimiter: Option<&String>,
    start_after: Option<String>,
    max_keys: Option<i32>,
) -> S3Result<ObjectsPage> {
    let args = ListObjects {
        prefix: prefix.cloned().unwrap_or_default(),
        delimiter: delimiter.cloned(),
        start_after,
        max_keys: page_size(max_keys, "max-keys")?,
    };
    gw.engine.engine().list_objects(bucket, &args).map_err(engine_error)
}

pub(crate) fn list_objects_v2(
    gw: &Gateway,
    req: S3Request<ListObjectsV2Input>,
) -> S3Result<S3Response<ListObjectsV2Output>> {
    let shown = (req.input.fetch_owner == Some(true)).then(|| owner(&actor(&req)));
    let input = req.input;
    let enc = Encoder::new(input.encoding_type.as_ref());
    let start_after = match &input.continuation_token {
        Some(t) => Some(start_after_of(t)?),
        None => input.start_after.clone(),
    };
    let page = list_page(
        gw,
        &input.bucket,
        input.prefix.as_ref(),
        input.delimiter.as_ref(),
        start_after,
        input.max_keys,
    )?;
    let contents: Vec<Object> =
        page.objects.iter().map(|o| object(o, enc, shown.as_ref())).collect();
    let common = common_prefixes(&page, enc);
    let key_count = i32::try_from(contents.len() + common.len()).unwrap_or(i32::MAX);
    Ok(S3Response::new(ListObjectsV2Output {
        name: Some(input.bucket),
        prefix: Some(enc.opt(input.prefix.as_ref()).unwrap_or_default()),
        delimiter: enc.opt(input.delimiter.as_ref()),
        max_keys: Some(input.max_keys.unwrap_or(PAGE_DEFAULT)),
        key_count: Some(key_count),
        continuation_token: input.continuation_token,
        start_after: enc.opt(input.start_after.as_ref()),
        is_truncated: Some(page.is_truncated),
        next_continuation_token: page.next_start_after.as_deref().map(token),
        contents: Some(contents),
        common_prefixes: Some(common),
        encoding_type: input.encoding_type,
        ..Default::default()
    }))
}

pub(crate) fn list_objects_v1(
    gw: &Gateway,
    req: S3Request<ListObjectsInput>,
) -> S3Result<S3Response<ListObjectsOutput>> {
    let shown = owner(&actor(&req));
    let input = req.input;
    let enc = Encoder::new(input.encoding_type.as_ref());
    let page = list_page(
        gw,
        &input.bucket,
        input.prefix.as_ref(),
        input.delimiter.as_ref(),
        input.marker.clone(),
        input.max_keys,
    )?;
    Ok(S3Response::new(ListObjectsOutput {
        name: Some(input.bucket),
        prefix: Some(enc.opt(input.prefix.as_ref()).unwrap_or_default()),
        delimiter: enc.opt(input.delimiter.as_ref()),
        marker: Some(enc.opt(input.marker.as_ref()).unwrap_or_default()),
        max_keys: Some(input.max_keys.unwrap_or(PAGE_DEFAULT)),
        is_truncated: Some(page.is_truncated),
        // S3 sends NextMarker only with a delimiter; sending it always spares clients the
        // guess (the last key) and names common prefixes right.
        next_marker: page.next_start_after.as_ref().map(|m| enc.text(m)),
        contents: Some(page.objects.iter().map(|o| object(o, enc, Some(&shown))).collect()),
        common_prefixes: Some(common_prefixes(&page, enc)),
        encoding_type: input.encoding_type,
        ..Default::default()
    }))
}

pub(crate) fn list_object_versions(
    gw: &Gateway,
    req: S3Request<ListObjectVersionsInput>,
) -> S3Result<S3Response<ListObjectVersionsOutput>> {
    let shown = owner(&actor(&req));
    let input = req.input;
    let enc = Encoder::new(input.encoding_type.as_ref());
    let page = list_page(
        gw,
        &input.bucket,
        input.prefix.as_ref(),
        input.delimiter.as_ref(),
        input.key_marker.clone(),
        input.max_keys,
    )?;
    let versions = page
        .objects
        .iter()
        .map(|o| ObjectVersion {
            key: Some(enc.text(&o.key)),
            version_id: Some("null".to_owned()),
            is_latest: Some(true),
            e_tag: Some(etag(&o.etag)),
            last_modified: Some(timestamp(o.last_modified_ms)),
            size: Some(size(o.size_bytes)),
            storage_class: Some(ObjectVersionStorageClass::from_static(STORAGE_CLASS)),
            checksum_algorithm: o.checksum.map(|s| vec![algorithm_dto(s.algorithm)]),
            checksum_type: o.checksum.map(|s| checksum_type_dto(s.kind)),
            owner: Some(shown.clone()),
            restore_status: None,
        })
        .collect();
    let truncated = page.is_truncated;
    Ok(S3Response::new(ListObjectVersionsOutput {
        name: Some(input.bucket),
        prefix: Some(enc.opt(input.prefix.as_ref()).unwrap_or_default()),
        delimiter: enc.opt(input.delimiter.as_ref()),
        key_marker: Some(enc.opt(input.key_marker.as_ref()).unwrap_or_default()),
        version_id_marker: Some(input.version_id_marker.unwrap_or_default()),
        max_keys: Some(input.max_keys.unwrap_or(PAGE_DEFAULT)),
        is_truncated: Some(truncated),
        next_key_marker: page.next_start_after.as_ref().map(|m| enc.text(m)),
        next_version_id_marker: truncated.then(|| "null".to_owned()),
        versions: Some(versions),
        delete_markers: None,
        common_prefixes: Some(common_prefixes(&page, enc)),
        encoding_type: input.encoding_type,
        ..Default::default()
    }))
}

pub(crate) fn list_multipart_uploads(
    gw: &Gateway,
    req: S3Request<ListMultipartUploadsInput>,
) -> S3Result<S3Response<ListMultipartUploadsOutput>> {
    let input = req.input;
    let enc = Encoder::new(input.encoding_type.as_ref());
    let args = ListUploads {
        prefix: input.prefix.clone().unwrap_or_default(),
        delimiter: input.delimiter.clone(),
        key_marker: input.key_marker.clone(),
        upload_id_marker: input.upload_id_marker.clone(),
        max_uploads: page_size(input.max_uploads, "max-uploads")?,
    };
    let page = gw.engine.engine().list_uploads(&input.bucket, &args).map_err(engine_error)?;
    let uploads = page
        .uploads
        .iter()
        .map(|u| MultipartUpload {
            key: Some(enc.text(&u.key)),
            upload_id: Some(u.upload_id.to_string()),
            initiated: Some(timestamp(u.initiated_ms)),
            initiator: Some(initiator(&u.owner)),
            owner: Some(owner(&u.owner)),
            storage_class: Some(StorageClass::from_static(STORAGE_CLASS)),
            checksum_algorithm: u.checksum.map(|s| algorithm_dto(s.algorithm)),
            checksum_type: u.checksum.map(|s| checksum_type_dto(s.kind)),
        })
        .collect();
    Ok(S3Response::new(ListMultipartUploadsOutput {
        bucket: Some(input.bucket),
        prefix: Some(enc.opt(input.prefix.as_ref()).unwrap_or_default()),
        delimiter: enc.opt(input.delimiter.as_ref()),
        key_marker: Some(enc.opt(input.key_marker.as_ref()).unwrap_or_default()),
        upload_id_marker: Some(input.upload_id_marker.unwrap_or_default()),
        max_uploads: Some(input.max_uploads.unwrap_or(PAGE_DEFAULT).min(PAGE_DEFAULT)),
        is_truncated: Some(page.is_truncated),
        next_key_marker: page.next_key_marker.as_ref().map(|m| enc.text(m)),
        next_upload_id_marker: page.next_upload_id_marker,
        uploads: Some(uploads),
        common_prefixes: Some(
            page.common_prefixes
                .iter()
                .map(|p| CommonPrefix { prefix: Some(enc.text(p)) })
                .collect(),
        ),
        encoding_type: input.encoding_type,
        ..Default::default()
    }))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn tokens_round_trip_any_key() {
        for key in ["", "a/b c", "ünïcødé/\u{1F600}", "+/="] {
            assert_eq!(start_after_of(&token(key)).unwrap(), key);
        }
        assert!(start_after_of("not a token!").is_err());
    }

    #[test]
    fn url_encoding_keeps_slashes_and_unreserved() {
        let enc = Encoder { url: true };
        assert_eq!(enc.text("a b/c+d~e"), "a%20b/c%2Bd~e");
        assert_eq!(Encoder { url: false }.text("a b"), "a b");
    }
}
