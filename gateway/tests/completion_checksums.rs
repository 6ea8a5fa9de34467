//! The whole-object checksum a client sends with CompleteMultipartUpload
//! (`x-amz-checksum-*`): the full-object CRC, or the composite value with or without its
//! `-N`. A value that is not the object's is 400 BadDigest and leaves the upload open.

#![allow(
    missing_docs,
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::indexing_slicing,
    clippy::panic,
    clippy::cast_possible_truncation
)]

mod common;

use aws_sdk_s3::Client;
use aws_sdk_s3::primitives::ByteStream;
use aws_sdk_s3::types::{ChecksumAlgorithm, ChecksumType, CompletedMultipartUpload, CompletedPart};
use base64::Engine as _;
use base64::engine::general_purpose::STANDARD as B64;
use common::{Options, bytes, code, start, status};

const MIN_PART: u64 = 1024;
const BUCKET: &str = "sums";

/// An upload of two CRC32 parts of `kind`: its id, the parts to list, and the object's bytes.
async fn two_parts(
    client: &Client,
    key: &str,
    kind: ChecksumType,
) -> (String, Vec<CompletedPart>, Vec<u8>) {
    let created = client
        .create_multipart_upload()
        .bucket(BUCKET)
        .key(key)
        .checksum_algorithm(ChecksumAlgorithm::Crc32)
        .checksum_type(kind)
        .send()
        .await
        .unwrap();
    let id = created.upload_id().unwrap().to_owned();
    let (a, b) = (bytes(MIN_PART as usize, 1), bytes(77, 2));
    let mut parts = Vec::new();
    for (n, data) in [(1, &a), (2, &b)] {
        let out = client
            .upload_part()
            .bucket(BUCKET)
            .key(key)
            .upload_id(&id)
            .part_number(n)
            .checksum_algorithm(ChecksumAlgorithm::Crc32)
            .body(ByteStream::from(data.clone()))
            .send()
            .await
            .unwrap();
        parts.push(
            CompletedPart::builder()
                .part_number(n)
                .e_tag(out.e_tag().unwrap())
                .checksum_crc32(out.checksum_crc32().unwrap())
                .build(),
        );
    }
    (id, parts, [a, b].concat())
}

async fn complete(
    client: &Client,
    key: &str,
    id: &str,
    parts: &[CompletedPart],
    crc32: &str,
) -> Result<String, (String, u16)> {
    client
        .complete_multipart_upload()
        .bucket(BUCKET)
        .key(key)
        .upload_id(id)
        .multipart_upload(
            CompletedMultipartUpload::builder().set_parts(Some(parts.to_vec())).build(),
        )
        .checksum_crc32(crc32)
        .send()
        .await
        .map(|done| done.checksum_crc32().unwrap().to_owned())
        .map_err(|e| (code(&e), status(&e)))
}

fn crc32(data: &[u8]) -> [u8; 4] {
    crc32fast::hash(data).to_be_bytes()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn completion_checksums_must_be_the_objects() {
    let (_dir, server) = start(&Options { min_part_size: MIN_PART, ..Options::default() });
    let client = server.client();
    client.create_bucket().bucket(BUCKET).send().await.unwrap();
    let bad_digest = Err(("BadDigest".to_owned(), 400));

    // Full object: the CRC32 of the whole object's bytes.
    let (id, parts, data) = two_parts(&client, "full", ChecksumType::FullObject).await;
    let right = B64.encode(crc32(&data));
    let mut wrong_bytes = crc32(&data);
    wrong_bytes[3] ^= 1;
    let wrong = B64.encode(wrong_bytes);
    assert_eq!(complete(&client, "full", &id, &parts, &wrong).await, bad_digest);
    assert_eq!(complete(&client, "full", &id, &parts, &right).await, Ok(right.clone()));

    // Composite: the CRC32 of the parts' CRC32s, with or without "-2"; another count is wrong.
    for (key, suffix) in [("composite", "-2"), ("composite-bare", "")] {
        let (id, parts, _) = two_parts(&client, key, ChecksumType::Composite).await;
        let mut raw = Vec::new();
        for part in &parts {
            raw.extend(B64.decode(part.checksum_crc32().unwrap()).unwrap());
        }
        let value = B64.encode(crc32(&raw));
        let miscounted = format!("{value}-3");
        assert_eq!(complete(&client, key, &id, &parts, &miscounted).await, bad_digest);
        let sent = format!("{value}{suffix}");
        let shown = format!("{value}-2");
        assert_eq!(complete(&client, key, &id, &parts, &sent).await, Ok(shown));
    }
}
