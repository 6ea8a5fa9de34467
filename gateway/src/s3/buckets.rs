//! Bucket operations and the bucket's lifecycle rule (AbortIncompleteMultipartUpload only).

use s3s::dto::*;
use s3s::{S3ErrorCode, S3Request, S3Response, S3Result};

use tessera_engine::AbortRule;

use crate::s3::convert::{owner, timestamp};
use crate::s3::errors::{engine_error, s3_error};
use crate::s3::{Gateway, actor};

pub(crate) async fn create_bucket(
    gw: &Gateway,
    req: S3Request<CreateBucketInput>,
) -> S3Result<S3Response<CreateBucketOutput>> {
    let (actor, bucket) = (actor(&req), req.input.bucket);
    let location = format!("/{bucket}");
    gw.engine.call(move |e| e.create_bucket(&actor, &bucket)).await.map_err(engine_error)?;
    Ok(S3Response::new(CreateBucketOutput { location: Some(location) }))
}

pub(crate) fn head_bucket(
    gw: &Gateway,
    req: S3Request<HeadBucketInput>,
) -> S3Result<S3Response<HeadBucketOutput>> {
    gw.engine.engine().head_bucket(&req.input.bucket).map_err(engine_error)?;
    Ok(S3Response::new(HeadBucketOutput::default()))
}

pub(crate) fn list_buckets(
    gw: &Gateway,
    req: S3Request<ListBucketsInput>,
) -> S3Result<S3Response<ListBucketsOutput>> {
    let prefix = req.input.prefix.clone().unwrap_or_default();
    let buckets = gw
        .engine
        .engine()
        .list_buckets()
        .into_iter()
        .filter(|b| b.name.starts_with(&prefix))
        .map(|b| Bucket {
            bucket_region: None,
            creation_date: Some(timestamp(b.created_ms)),
            name: Some(b.name),
        })
        .collect();
    Ok(S3Response::new(ListBucketsOutput {
        buckets: Some(buckets),
        owner: Some(owner(&actor(&req))),
        prefix: req.input.prefix,
        continuation_token: None,
    }))
}

pub(crate) async fn delete_bucket(
    gw: &Gateway,
    req: S3Request<DeleteBucketInput>,
) -> S3Result<S3Response<DeleteBucketOutput>> {
    let (actor, bucket) = (actor(&req), req.input.bucket);
    gw.engine.call(move |e| e.delete_bucket(&actor, &bucket)).await.map_err(engine_error)?;
    Ok(S3Response::new(DeleteBucketOutput::default()))
}

pub(crate) fn get_bucket_location(
    gw: &Gateway,
    req: S3Request<GetBucketLocationInput>,
) -> S3Result<S3Response<GetBucketLocationOutput>> {
    gw.engine.engine().head_bucket(&req.input.bucket).map_err(engine_error)?;
    Ok(S3Response::new(GetBucketLocationOutput::default()))
}

/// The configuration's enabled AbortIncompleteMultipartUpload rules, or an error naming what
/// this store does not do (other actions; filters other than a key prefix). A rule without an
/// id gets one, as S3 gives it one.
fn abort_rules(config: &BucketLifecycleConfiguration) -> S3Result<Vec<AbortRule>> {
    let not_implemented = |what: &str| {
        s3_error(
            S3ErrorCode::NotImplemented,
            501,
            format!("lifecycle rules may only abort incomplete multipart uploads ({what})"),
        )
    };
    let mut rules = Vec::new();
    for (index, rule) in config.rules.iter().enumerate() {
        if rule.expiration.is_some()
            || rule.transitions.as_ref().is_some_and(|t| !t.is_empty())
            || rule.noncurrent_version_expiration.is_some()
            || rule.noncurrent_version_transitions.as_ref().is_some_and(|t| !t.is_empty())
        {
            return Err(not_implemented("expiration and transitions are not supported"));
        }
        let prefix = rule
            .filter
            .as_ref()
            .map(|f| {
                if f.and.is_some()
                    || f.tag.is_some()
                    || f.object_size_greater_than.is_some()
                    || f.object_size_less_than.is_some()
                {
                    Err(not_implemented("filters other than a key prefix are not supported"))
                } else {
                    Ok(f.prefix.clone().unwrap_or_default())
                }
            })
            .transpose()?
            .or_else(|| rule.prefix.clone())
            .unwrap_or_default();
        if rule.status.as_str() != ExpirationStatus::ENABLED {
            continue;
        }
        let Some(n) =
            rule.abort_incomplete_multipart_upload.as_ref().and_then(|a| a.days_after_initiation)
        else {
            continue;
        };
        let n = u32::try_from(n).ok().filter(|n| *n > 0).ok_or_else(|| {
            s3_error(
                S3ErrorCode::InvalidArgument,
                400,
                "DaysAfterInitiation must be a positive integer",
            )
        })?;
        let id = rule.id.clone().unwrap_or_else(|| format!("abort-rule-{}", index + 1));
        rules.push(AbortRule { id, prefix, days: n });
    }
    Ok(rules)
}

pub(crate) async fn put_lifecycle(
    gw: &Gateway,
    req: S3Request<PutBucketLifecycleConfigurationInput>,
) -> S3Result<S3Response<PutBucketLifecycleConfigurationOutput>> {
    let actor = actor(&req);
    let Some(config) = req.input.lifecycle_configuration else {
        return Err(s3_error(S3ErrorCode::MalformedXML, 400, "no lifecycle configuration"));
    };
    let rules = abort_rules(&config)?;
    let bucket = req.input.bucket;
    gw.engine.call(move |e| e.set_lifecycle(&actor, &bucket, rules)).await.map_err(engine_error)?;
    Ok(S3Response::new(PutBucketLifecycleConfigurationOutput::default()))
}

pub(crate) fn get_lifecycle(
    gw: &Gateway,
    req: S3Request<GetBucketLifecycleConfigurationInput>,
) -> S3Result<S3Response<GetBucketLifecycleConfigurationOutput>> {
    let info = gw.engine.engine().head_bucket(&req.input.bucket).map_err(engine_error)?;
    if info.lifecycle.is_empty() {
        return Err(s3_error(
            S3ErrorCode::NoSuchLifecycleConfiguration,
            404,
            "the bucket has no lifecycle configuration",
        ));
    }
    let rules = info
        .lifecycle
        .into_iter()
        .map(|rule| LifecycleRule {
            abort_incomplete_multipart_upload: Some(AbortIncompleteMultipartUpload {
                days_after_initiation: Some(i32::try_from(rule.days).unwrap_or(i32::MAX)),
            }),
            expiration: None,
            filter: Some(LifecycleRuleFilter { prefix: Some(rule.prefix), ..Default::default() }),
            id: Some(rule.id),
            noncurrent_version_expiration: None,
            noncurrent_version_transitions: None,
            prefix: None,
            status: ExpirationStatus::from_static(ExpirationStatus::ENABLED),
            transitions: None,
        })
        .collect();
    Ok(S3Response::new(GetBucketLifecycleConfigurationOutput {
        rules: Some(rules),
        transition_default_minimum_object_size: None,
    }))
}

pub(crate) async fn delete_lifecycle(
    gw: &Gateway,
    req: S3Request<DeleteBucketLifecycleInput>,
) -> S3Result<S3Response<DeleteBucketLifecycleOutput>> {
    let (actor, bucket) = (actor(&req), req.input.bucket);
    gw.engine
        .call(move |e| e.set_lifecycle(&actor, &bucket, Vec::new()))
        .await
        .map_err(engine_error)?;
    Ok(S3Response::new(DeleteBucketLifecycleOutput::default()))
}
