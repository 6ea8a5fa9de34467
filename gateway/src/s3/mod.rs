//! The S3 API over the engine: [`Gateway`] implements `s3s::S3`; each operation lives in the
//! file of its area and this file only routes to it.

mod body;
mod buckets;
mod conditions;
mod convert;
mod errors;
pub(crate) mod keep_alive;
mod listing;
mod multipart;
mod objects;
mod trailer;
pub(crate) mod unread_body;

use std::time::Duration;

use s3s::dto::*;
use s3s::{S3, S3Request, S3Response, S3Result};
use tessera_engine::AsyncEngine;

/// The S3 service's state: the engine (shared by every connection).
#[derive(Clone, Debug)]
pub struct Gateway {
    engine: AsyncEngine,
    complete_keep_alive_after: Duration,
}

impl Gateway {
    /// A gateway on `engine`. A CompleteMultipartUpload still running after
    /// `complete_keep_alive_after` answers 200 at once and keeps the connection alive with
    /// whitespace until it ends (its outcome, error or not, then goes in the body), as S3 does
    /// for long completes; quicker ones answer normally, with S3's status codes.
    pub fn new(engine: AsyncEngine, complete_keep_alive_after: Duration) -> Gateway {
        Gateway { engine, complete_keep_alive_after }
    }
}

/// Who signed the request: the actor named on the transitions it makes. s3s refuses unsigned
/// requests before they reach an operation, so the fallback is never seen by a client.
fn actor<T>(req: &S3Request<T>) -> String {
    req.credentials.as_ref().map_or_else(|| "anonymous".to_owned(), |c| c.access_key.clone())
}

type Res<T> = S3Result<S3Response<T>>;

#[async_trait::async_trait]
impl S3 for Gateway {
    async fn create_bucket(&self, req: S3Request<CreateBucketInput>) -> Res<CreateBucketOutput> {
        buckets::create_bucket(self, req).await
    }

    async fn head_bucket(&self, req: S3Request<HeadBucketInput>) -> Res<HeadBucketOutput> {
        buckets::head_bucket(self, req)
    }

    async fn list_buckets(&self, req: S3Request<ListBucketsInput>) -> Res<ListBucketsOutput> {
        buckets::list_buckets(self, req)
    }

    async fn delete_bucket(&self, req: S3Request<DeleteBucketInput>) -> Res<DeleteBucketOutput> {
        buckets::delete_bucket(self, req).await
    }

    async fn get_bucket_location(
        &self,
        req: S3Request<GetBucketLocationInput>,
    ) -> Res<GetBucketLocationOutput> {
        buckets::get_bucket_location(self, req)
    }

    async fn put_bucket_lifecycle_configuration(
        &self,
        req: S3Request<PutBucketLifecycleConfigurationInput>,
    ) -> Res<PutBucketLifecycleConfigurationOutput> {
        buckets::put_lifecycle(self, req).await
    }

    async fn get_bucket_lifecycle_configuration(
        &self,
        req: S3Request<GetBucketLifecycleConfigurationInput>,
    ) -> Res<GetBucketLifecycleConfigurationOutput> {
        buckets::get_lifecycle(self, req)
    }

    async fn delete_bucket_lifecycle(
        &self,
        req: S3Request<DeleteBucketLifecycleInput>,
    ) -> Res<DeleteBucketLifecycleOutput> {
        buckets::delete_lifecycle(self, req).await
    }

    async fn create_multipart_upload(
        &self,
        req: S3Request<CreateMultipartUploadInput>,
    ) -> Res<CreateMultipartUploadOutput> {
        multipart::create(self, req).await
    }

    async fn upload_part(&self, req: S3Request<UploadPartInput>) -> Res<UploadPartOutput> {
        multipart::upload_part(self, req).await
    }

    async fn upload_part_copy(
        &self,
        req: S3Request<UploadPartCopyInput>,
    ) -> Res<UploadPartCopyOutput> {
        multipart::upload_part_copy(self, req).await
    }

    async fn list_parts(&self, req: S3Request<ListPartsInput>) -> Res<ListPartsOutput> {
        multipart::list_parts(self, req)
    }

    async fn list_multipart_uploads(
        &self,
        req: S3Request<ListMultipartUploadsInput>,
    ) -> Res<ListMultipartUploadsOutput> {
        listing::list_multipart_uploads(self, req)
    }

    async fn complete_multipart_upload(
        &self,
        req: S3Request<CompleteMultipartUploadInput>,
    ) -> Res<CompleteMultipartUploadOutput> {
        multipart::complete(self, req).await
    }

    async fn abort_multipart_upload(
        &self,
        req: S3Request<AbortMultipartUploadInput>,
    ) -> Res<AbortMultipartUploadOutput> {
        multipart::abort(self, req).await
    }

    async fn put_object(&self, req: S3Request<PutObjectInput>) -> Res<PutObjectOutput> {
        objects::put_object(self, req).await
    }

    async fn get_object(&self, req: S3Request<GetObjectInput>) -> Res<GetObjectOutput> {
        objects::get_object(self, req).await
    }

    async fn head_object(&self, req: S3Request<HeadObjectInput>) -> Res<HeadObjectOutput> {
        objects::head_object(self, req)
    }

    async fn delete_object(&self, req: S3Request<DeleteObjectInput>) -> Res<DeleteObjectOutput> {
        objects::delete_object(self, req).await
    }

    async fn delete_objects(&self, req: S3Request<DeleteObjectsInput>) -> Res<DeleteObjectsOutput> {
        objects::delete_objects(self, req).await
    }

    async fn copy_object(&self, req: S3Request<CopyObjectInput>) -> Res<CopyObjectOutput> {
        objects::copy_object(self, req).await
    }

    async fn get_object_attributes(
        &self,
        req: S3Request<GetObjectAttributesInput>,
    ) -> Res<GetObjectAttributesOutput> {
        objects::get_object_attributes(self, req)
    }

    async fn list_objects_v2(
        &self,
        req: S3Request<ListObjectsV2Input>,
    ) -> Res<ListObjectsV2Output> {
        listing::list_objects_v2(self, req)
    }

    async fn list_objects(&self, req: S3Request<ListObjectsInput>) -> Res<ListObjectsOutput> {
        listing::list_objects_v1(self, req)
    }

    async fn list_object_versions(
        &self,
        req: S3Request<ListObjectVersionsInput>,
    ) -> Res<ListObjectVersionsOutput> {
        listing::list_object_versions(self, req)
    }
}
