//! Bucket operations.

use crate::engine::Engine;
use crate::error::EngineError;
use crate::model::{AbortRule, BucketInfo};
use crate::names::KEY_BYTES_MAX;
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

    /// Sets the bucket's `AbortIncompleteMultipartUpload` rules (empty: clears them): an upload
    /// in it, those in progress included, expires the fewest `days` of the rules whose prefix
    /// its key starts with after its initiation. Ids must be unique, at most 255 bytes; days at
    /// least 1; prefixes no longer than a key; at most 1,000 rules (InvalidArgument).
    pub fn set_lifecycle(
        &self,
        actor: &str,
        bucket: &str,
        rules: Vec<AbortRule>,
    ) -> Result<(), EngineError> {
        self.head_bucket(bucket)?;
        check_rules(&rules)?;
        let op =
            Op::SetLifecycleRules { bucket: bucket.to_owned(), rules, day_ms: self.config.day_ms };
        self.commit(self.transition(actor, op), None)?;
        Ok(())
    }
}

/// Checks a lifecycle configuration against S3's bounds.
fn check_rules(rules: &[AbortRule]) -> Result<(), EngineError> {
    if rules.len() > AbortRule::RULES_MAX {
        return Err(EngineError::invalid_argument(format!(
            "a lifecycle configuration has at most {} rules",
            AbortRule::RULES_MAX
        )));
    }
    let mut ids = std::collections::HashSet::new();
    for rule in rules {
        if rule.days == 0 {
            return Err(EngineError::invalid_argument(
                "DaysAfterInitiation must be a positive integer",
            ));
        }
        if rule.id.is_empty() || rule.id.len() > AbortRule::ID_BYTES_MAX {
            return Err(EngineError::invalid_argument(format!(
                "a rule's ID is 1 to {} bytes",
                AbortRule::ID_BYTES_MAX
            )));
        }
        if rule.prefix.len() > KEY_BYTES_MAX {
            return Err(EngineError::invalid_argument(format!(
                "a rule's prefix is at most {KEY_BYTES_MAX} bytes"
            )));
        }
        if !ids.insert(rule.id.as_str()) {
            return Err(EngineError::invalid_argument(format!(
                "rule ID {:?} is not unique",
                rule.id
            )));
        }
    }
    Ok(())
}

/// An outcome of another kind than the operation makes: a defect, reported rather than
/// panicking.
pub(crate) fn unexpected(outcome: Outcome) -> EngineError {
    EngineError::InvalidRequest { reason: format!("internal: unexpected outcome {outcome:?}") }
}
