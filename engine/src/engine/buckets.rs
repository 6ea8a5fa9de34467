//! Bucket operations.

use crate::engine::Engine;
use crate::error::EngineError;
use crate::model::BucketInfo;
use crate::names::check_bucket_name;
use crate::record::{Op, Transition};
use crate::state::Outcome;

impl Engine {
    pub(crate) fn transition(&self, actor: &str, op: Op) -> Transition {
        Transition { time_ms: self.now_ms(), actor: actor.to_owned(), op, condition: None }
    }

    /// Creates a bucket (S3's naming rules; BucketAlreadyOwnedByYou if it exists).
    pub fn create_bucket(&self, actor: &str, bucket: &str) -> Result<BucketInfo, EngineError> {
        check_bucket_name(bucket)?;
        if self.read_state(|s| s.buckets.contains_key(bucket)) {
            return Err(EngineError::BucketAlreadyOwnedByYou { bucket: bucket.to_owned() });
        }
        match self
            .commit(self.transition(actor, Op::CreateBucket { bucket: bucket.to_owned() }), None)?
        {
            Outcome::BucketCreated(info) => Ok(info),
            other => Err(unexpected(other)),
        }
    }

    /// Deletes an empty bucket (BucketNotEmpty while objects or uploads remain).
    pub fn delete_bucket(&self, actor: &str, bucket: &str) -> Result<(), EngineError> {
        self.head_bucket(bucket)?;
        self.commit(self.transition(actor, Op::DeleteBucket { bucket: bucket.to_owned() }), None)?;
        Ok(())
    }

    /// A bucket, or NoSuchBucket.
    pub fn head_bucket(&self, bucket: &str) -> Result<BucketInfo, EngineError> {
        self.read_state(|s| s.buckets.get(bucket).map(|b| b.info()))
            .ok_or_else(|| EngineError::no_such_bucket(bucket))
    }

    /// Every bucket, by name.
    pub fn list_buckets(&self) -> Vec<BucketInfo> {
        self.read_state(|s| s.buckets.values().map(|b| b.info()).collect())
    }

    /// Sets (or with `None` clears) the bucket's `AbortIncompleteMultipartUpload` rule: uploads
    /// in it, those in progress included, expire `days` lifecycle days after their initiation.
    pub fn set_lifecycle(
        &self,
        actor: &str,
        bucket: &str,
        abort_after_days: Option<u32>,
    ) -> Result<(), EngineError> {
        self.head_bucket(bucket)?;
        if abort_after_days == Some(0) {
            return Err(EngineError::invalid_argument(
                "DaysAfterInitiation must be a positive integer",
            ));
        }
        let op = Op::SetLifecycle {
            bucket: bucket.to_owned(),
            abort_after_days,
            day_ms: self.config.day_ms,
        };
        self.commit(self.transition(actor, op), None)?;
        Ok(())
    }
}

/// An outcome of another kind than the operation makes: a defect, reported rather than
/// panicking.
pub(crate) fn unexpected(outcome: Outcome) -> EngineError {
    EngineError::InvalidRequest { reason: format!("internal: unexpected outcome {outcome:?}") }
}
