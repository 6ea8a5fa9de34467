//! Conditional requests (RFC 9110 §13 as S3 applies them): If-Match and If-Unmodified-Since
//! fail with 412; If-None-Match and If-Modified-Since answer 304 on reads and 412 on writes.

use s3s::dto::{ETagCondition, Timestamp};
use s3s::{S3ErrorCode, S3Result};
use tessera_engine::{EtagMatch, ObjectInfo, WriteCondition};

use crate::s3::convert::{epoch_seconds, parse_etag};
use crate::s3::errors::s3_error;

/// The conditional headers of a request.
#[derive(Clone, Debug, Default)]
pub(crate) struct Conditions<'a> {
    pub if_match: Option<&'a ETagCondition>,
    pub if_none_match: Option<&'a ETagCondition>,
    pub if_modified_since: Option<&'a Timestamp>,
    pub if_unmodified_since: Option<&'a Timestamp>,
}

fn matches(condition: &ETagCondition, object: &ObjectInfo) -> bool {
    match condition {
        ETagCondition::Any => true,
        ETagCondition::ETag(etag) => parse_etag(etag).is_some_and(|e| e == object.etag),
    }
}

fn precondition_failed() -> s3s::S3Error {
    s3_error(
        S3ErrorCode::PreconditionFailed,
        412,
        "at least one of the preconditions you specified did not hold",
    )
}

/// Whether the object was modified after `since` (compared in whole seconds, as HTTP dates
/// carry them).
fn modified_since(object: &ObjectInfo, since: &Timestamp) -> bool {
    epoch_seconds(since).is_none_or(|since| object.last_modified_ms / 1000 > since)
}

impl Conditions<'_> {
    /// Checks a read (GET, HEAD) of `object`: 412 PreconditionFailed or 304 NotModified.
    pub fn check_read(&self, object: &ObjectInfo) -> S3Result<()> {
        if let Some(condition) = self.if_match {
            if !matches(condition, object) {
                return Err(precondition_failed());
            }
        } else if let Some(since) = self.if_unmodified_since
            && modified_since(object, since)
        {
            return Err(precondition_failed());
        }
        if let Some(condition) = self.if_none_match {
            if matches(condition, object) {
                return Err(s3_error(S3ErrorCode::NotModified, 304, "not modified"));
            }
        } else if let Some(since) = self.if_modified_since
            && !modified_since(object, since)
        {
            return Err(s3_error(S3ErrorCode::NotModified, 304, "not modified"));
        }
        Ok(())
    }

    /// Checks a copy's source: every condition that does not hold is 412.
    pub fn check_copy_source(&self, object: &ObjectInfo) -> S3Result<()> {
        self.check_read(object).map_err(|e| match e.code() {
            S3ErrorCode::NotModified => precondition_failed(),
            _ => e,
        })
    }

    /// Checks a write at a key holding `current` (conditional PutObject and
    /// CompleteMultipartUpload): If-Match on a missing key is 404 NoSuchKey, any other
    /// condition that does not hold is 412.
    pub fn check_write(&self, current: Option<&ObjectInfo>) -> S3Result<()> {
        if let Some(condition) = self.if_match {
            match current {
                None => {
                    return Err(s3_error(S3ErrorCode::NoSuchKey, 404, "the key does not exist"));
                }
                Some(object) if !matches(condition, object) => return Err(precondition_failed()),
                Some(_) => {}
            }
        }
        if let (Some(condition), Some(object)) = (self.if_none_match, current)
            && matches(condition, object)
        {
            return Err(precondition_failed());
        }
        Ok(())
    }

    /// The write's conditions as the engine decides them again when the write applies, in
    /// commit order ([`Conditions::check_write`] only rejects early: another writer may change
    /// the key between the check and the commit). `None` when the request has none.
    ///
    /// An If-Match ETag that does not parse matches no object, so `check_write` has already
    /// refused it; it is refused here too rather than dropped.
    pub fn write_condition(&self) -> S3Result<Option<WriteCondition>> {
        let convert = |condition: &ETagCondition| match condition {
            ETagCondition::Any => Some(EtagMatch::Any),
            ETagCondition::ETag(etag) => parse_etag(etag).map(EtagMatch::Etag),
        };
        let if_match = match self.if_match {
            None => None,
            Some(condition) => Some(convert(condition).ok_or_else(precondition_failed)?),
        };
        // An If-None-Match ETag that does not parse matches no object: no condition at all.
        let if_none_match = self.if_none_match.and_then(convert);
        Ok((if_match.is_some() || if_none_match.is_some())
            .then_some(WriteCondition { if_match, if_none_match }))
    }
}
