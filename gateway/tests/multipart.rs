//! Multipart uploads through a real signed client (the AWS SDK): the whole life of an upload,
//! and S3's error codes and statuses for each rule a client can break.

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
use aws_sdk_s3::types::{ChecksumAlgorithm, CompletedMultipartUpload, CompletedPart};
use common::{Options, bytes, code, md5_hex, multipart_etag, start, status};

const MIN_PART: u64 = 1024;

fn small_parts() -> Options {
    Options { min_part_size: MIN_PART, ..Options::default() }
}

async fn create(client: &Client, bucket: &str, key: &str) -> String {
    let created = client.create_multipart_upload().bucket(bucket).key(key).send().await.unwrap();
    created.upload_id().unwrap().to_owned()
}

async fn upload(client: &Client, bucket: &str, key: &str, id: &str, n: i32, data: &[u8]) -> String {
    let out = client
        .upload_part()
        .bucket(bucket)
        .key(key)
        .upload_id(id)
        .part_number(n)
        .body(ByteStream::from(data.to_vec()))
        .send()
        .await
        .unwrap();
    out.e_tag().unwrap().to_owned()
}

fn completed(parts: &[(i32, &str)]) -> CompletedMultipartUpload {
    CompletedMultipartUpload::builder()
        .set_parts(Some(
            parts
                .iter()
                .map(|(n, etag)| CompletedPart::builder().part_number(*n).e_tag(*etag).build())
                .collect(),
        ))
        .build()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn upload_list_complete_and_read_back() {
    let (_dir, server) = start(&small_parts());
    let client = server.client();
    client.create_bucket().bucket("mpu").send().await.unwrap();
    let id = create(&client, "mpu", "dir/big.bin").await;

    let listed = client.list_parts().bucket("mpu").key("dir/big.bin").upload_id(&id).send().await;
    assert!(listed.unwrap().parts().is_empty(), "a fresh upload lists no parts (200, empty)");

    let (a, b, c) = (bytes(3000, 1), bytes(2048, 2), bytes(10, 3));
    let ea = upload(&client, "mpu", "dir/big.bin", &id, 1, &a).await;
    assert_eq!(ea, format!("\"{}\"", md5_hex(&a)));
    // A part uploaded again replaces the earlier one.
    upload(&client, "mpu", "dir/big.bin", &id, 2, &bytes(2048, 9)).await;
    let eb = upload(&client, "mpu", "dir/big.bin", &id, 2, &b).await;
    let ec = upload(&client, "mpu", "dir/big.bin", &id, 3, &c).await;

    let page = client
        .list_parts()
        .bucket("mpu")
        .key("dir/big.bin")
        .upload_id(&id)
        .max_parts(2)
        .send()
        .await
        .unwrap();
    let numbers: Vec<i32> = page.parts().iter().filter_map(|p| p.part_number()).collect();
    assert_eq!(numbers, [1, 2]);
    assert_eq!(page.is_truncated(), Some(true));
    assert_eq!(page.next_part_number_marker(), Some("2"));
    assert_eq!(page.parts()[1].e_tag(), Some(eb.as_str()));
    assert_eq!(page.parts()[1].size(), Some(2048));
    let rest = client
        .list_parts()
        .bucket("mpu")
        .key("dir/big.bin")
        .upload_id(&id)
        .part_number_marker("2")
        .send()
        .await
        .unwrap();
    assert_eq!(rest.parts().iter().filter_map(|p| p.part_number()).collect::<Vec<_>>(), [3]);
    assert_eq!(rest.is_truncated(), Some(false));

    let uploads = client.list_multipart_uploads().bucket("mpu").send().await.unwrap();
    assert_eq!(uploads.uploads().len(), 1);
    assert_eq!(uploads.uploads()[0].upload_id(), Some(id.as_str()));

    let done = client
        .complete_multipart_upload()
        .bucket("mpu")
        .key("dir/big.bin")
        .upload_id(&id)
        .multipart_upload(completed(&[(1, &ea), (2, &eb), (3, &ec)]))
        .send()
        .await
        .unwrap();
    let etag = multipart_etag(&[&a, &b, &c]);
    assert_eq!(done.e_tag(), Some(etag.as_str()));

    // Completing again (a client's retry) gives the same ETag.
    let again = client
        .complete_multipart_upload()
        .bucket("mpu")
        .key("dir/big.bin")
        .upload_id(&id)
        .multipart_upload(completed(&[(1, &ea), (2, &eb), (3, &ec)]))
        .send()
        .await
        .unwrap();
    assert_eq!(again.e_tag(), Some(etag.as_str()));

    let got = client.get_object().bucket("mpu").key("dir/big.bin").send().await.unwrap();
    assert_eq!(got.e_tag(), Some(etag.as_str()));
    let body = got.body.collect().await.unwrap().into_bytes();
    assert_eq!(body.as_ref(), [a.clone(), b.clone(), c.clone()].concat());

    // partNumber: that part's bytes, the object's ETag, the part count, its place.
    let part =
        client.get_object().bucket("mpu").key("dir/big.bin").part_number(2).send().await.unwrap();
    assert_eq!(part.parts_count(), Some(3));
    assert_eq!(part.e_tag(), Some(etag.as_str()));
    assert_eq!(part.content_range(), Some("bytes 3000-5047/5058"));
    assert_eq!(part.body.collect().await.unwrap().into_bytes().as_ref(), b.as_slice());
    let head =
        client.head_object().bucket("mpu").key("dir/big.bin").part_number(3).send().await.unwrap();
    assert_eq!((head.content_length(), head.parts_count()), (Some(10), Some(3)));
    let beyond = client.get_object().bucket("mpu").key("dir/big.bin").part_number(4).send().await;
    let e = beyond.unwrap_err();
    assert_eq!((code(&e), status(&e)), ("InvalidPart".to_owned(), 400));

    let uploads = client.list_multipart_uploads().bucket("mpu").send().await.unwrap();
    assert!(uploads.uploads().is_empty(), "a completed upload is no longer listed");

    let attrs = client
        .get_object_attributes()
        .bucket("mpu")
        .key("dir/big.bin")
        .object_attributes(aws_sdk_s3::types::ObjectAttributes::ObjectParts)
        .object_attributes(aws_sdk_s3::types::ObjectAttributes::ObjectSize)
        .max_parts(2)
        .send()
        .await
        .unwrap();
    assert_eq!(attrs.object_size(), Some(5058));
    let parts = attrs.object_parts().unwrap();
    assert_eq!(parts.total_parts_count(), Some(3));
    assert_eq!(parts.is_truncated(), Some(true));
    assert_eq!(parts.parts().len(), 2);
    assert_eq!(parts.next_part_number_marker(), Some("2"));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn completion_errors_carry_s3_codes() {
    let (_dir, server) = start(&small_parts());
    let client = server.client();
    client.create_bucket().bucket("errs").send().await.unwrap();
    let id = create(&client, "errs", "k").await;
    let small = bytes(100, 1);
    let big = bytes(MIN_PART as usize, 2);
    let e1 = upload(&client, "errs", "k", &id, 1, &small).await;
    let e2 = upload(&client, "errs", "k", &id, 2, &big).await;
    let complete = |parts: CompletedMultipartUpload| {
        client
            .complete_multipart_upload()
            .bucket("errs")
            .key("k")
            .upload_id(&id)
            .multipart_upload(parts)
            .send()
    };

    let wrong_etag = format!("\"{}\"", md5_hex(b"other"));
    let e = complete(completed(&[(1, &wrong_etag)])).await.unwrap_err();
    assert_eq!((code(&e), status(&e)), ("InvalidPart".to_owned(), 400));
    let e = complete(completed(&[(1, &e1), (7, &e2)])).await.unwrap_err();
    assert_eq!(code(&e), "InvalidPart", "a part never uploaded");
    let e = complete(completed(&[(2, &e2), (1, &e1)])).await.unwrap_err();
    assert_eq!((code(&e), status(&e)), ("InvalidPartOrder".to_owned(), 400));
    let e = complete(completed(&[(1, &e1), (2, &e2)])).await.unwrap_err();
    assert_eq!((code(&e), status(&e)), ("EntityTooSmall".to_owned(), 400));

    // A mismatched x-amz-mp-object-size is refused; the right one completes.
    let e = client
        .complete_multipart_upload()
        .bucket("errs")
        .key("k")
        .upload_id(&id)
        .mpu_object_size(5)
        .multipart_upload(completed(&[(2, &e2)]))
        .send()
        .await
        .unwrap_err();
    assert_eq!((code(&e), status(&e)), ("InvalidRequest".to_owned(), 400));
    // The failed completions left the upload as it was.
    let done = client
        .complete_multipart_upload()
        .bucket("errs")
        .key("k")
        .upload_id(&id)
        .mpu_object_size(MIN_PART as i64)
        .multipart_upload(completed(&[(2, &e2)]))
        .send()
        .await
        .unwrap();
    assert_eq!(done.e_tag(), Some(multipart_etag(&[&big]).as_str()));

    // If-None-Match: * on a key that holds an object fails with 412.
    let id2 = create(&client, "errs", "k").await;
    let e = upload(&client, "errs", "k", &id2, 1, &small).await;
    let err = client
        .complete_multipart_upload()
        .bucket("errs")
        .key("k")
        .upload_id(&id2)
        .if_none_match("*")
        .multipart_upload(completed(&[(1, &e)]))
        .send()
        .await
        .unwrap_err();
    assert_eq!((code(&err), status(&err)), ("PreconditionFailed".to_owned(), 412));

    let e = complete(CompletedMultipartUpload::builder().build()).await.unwrap_err();
    assert_eq!((code(&e), status(&e)), ("MalformedXML".to_owned(), 400));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn abort_then_no_such_upload() {
    let (_dir, server) = start(&small_parts());
    let client = server.client();
    client.create_bucket().bucket("abort").send().await.unwrap();
    let id = create(&client, "abort", "k").await;
    let etag = upload(&client, "abort", "k", &id, 1, &bytes(10, 1)).await;
    let aborted =
        client.abort_multipart_upload().bucket("abort").key("k").upload_id(&id).send().await;
    assert_eq!(aborted.unwrap().request_charged(), None);

    let e = client
        .abort_multipart_upload()
        .bucket("abort")
        .key("k")
        .upload_id(&id)
        .send()
        .await
        .unwrap_err();
    assert_eq!((code(&e), status(&e)), ("NoSuchUpload".to_owned(), 404));
    let e = client
        .upload_part()
        .bucket("abort")
        .key("k")
        .upload_id(&id)
        .part_number(2)
        .body(ByteStream::from_static(b"x"))
        .send()
        .await
        .unwrap_err();
    assert_eq!((code(&e), status(&e)), ("NoSuchUpload".to_owned(), 404));
    let e = client.list_parts().bucket("abort").key("k").upload_id(&id).send().await.unwrap_err();
    assert_eq!(code(&e), "NoSuchUpload");
    let e = client
        .complete_multipart_upload()
        .bucket("abort")
        .key("k")
        .upload_id(&id)
        .multipart_upload(completed(&[(1, &etag)]))
        .send()
        .await
        .unwrap_err();
    assert_eq!((code(&e), status(&e)), ("NoSuchUpload".to_owned(), 404));
    // Text that is no upload id at all, and an id of another key, are NoSuchUpload too.
    let e =
        client.list_parts().bucket("abort").key("k").upload_id("nope").send().await.unwrap_err();
    assert_eq!(code(&e), "NoSuchUpload");
    let other = create(&client, "abort", "other").await;
    let e =
        client.list_parts().bucket("abort").key("k").upload_id(&other).send().await.unwrap_err();
    assert_eq!(code(&e), "NoSuchUpload");
    let e = client.get_object().bucket("abort").key("k").send().await.unwrap_err();
    assert_eq!((code(&e), status(&e)), ("NoSuchKey".to_owned(), 404));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn part_digests_are_checked() {
    let (_dir, server) = start(&small_parts());
    let client = server.client();
    client.create_bucket().bucket("digest").send().await.unwrap();
    let id = create(&client, "digest", "k").await;
    let part =
        |n: i32| client.upload_part().bucket("digest").key("k").upload_id(&id).part_number(n);
    use base64::Engine as _;
    let b64 = base64::engine::general_purpose::STANDARD;

    let wrong_md5 = b64.encode(md5::Md5::digest(b"something else"));
    let e = part(1)
        .content_md5(wrong_md5)
        .body(ByteStream::from_static(b"data"))
        .send()
        .await
        .unwrap_err();
    assert_eq!((code(&e), status(&e)), ("BadDigest".to_owned(), 400));
    let e = part(1)
        .content_md5("not-base64!")
        .body(ByteStream::from_static(b"data"))
        .send()
        .await
        .unwrap_err();
    assert_eq!((code(&e), status(&e)), ("InvalidDigest".to_owned(), 400));
    let right = b64.encode(md5::Md5::digest(b"data"));
    part(1).content_md5(right).body(ByteStream::from_static(b"data")).send().await.unwrap();

    let e = part(2)
        .checksum_crc32(b64.encode(0xdead_beef_u32.to_be_bytes()))
        .body(ByteStream::from_static(b"data"))
        .send()
        .await
        .unwrap_err();
    assert_eq!((code(&e), status(&e)), ("BadDigest".to_owned(), 400));
    let e = part(0).body(ByteStream::from_static(b"data")).send().await.unwrap_err();
    assert_eq!((code(&e), status(&e)), ("InvalidArgument".to_owned(), 400));
    let e = part(10001).body(ByteStream::from_static(b"data")).send().await.unwrap_err();
    assert_eq!(code(&e), "InvalidArgument");
    // Only the good part is stored.
    let parts = client.list_parts().bucket("digest").key("k").upload_id(&id).send().await.unwrap();
    assert_eq!(parts.parts().iter().filter_map(|p| p.part_number()).collect::<Vec<_>>(), [1]);
}

use md5::Digest as _;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn checksums_end_to_end() {
    let (_dir, server) = start(&small_parts());
    let client = server.client();
    client.create_bucket().bucket("sums").send().await.unwrap();
    for algorithm in [ChecksumAlgorithm::Crc32, ChecksumAlgorithm::Sha256] {
        let key = format!("obj-{}", algorithm.as_str());
        let created = client
            .create_multipart_upload()
            .bucket("sums")
            .key(&key)
            .checksum_algorithm(algorithm.clone())
            .send()
            .await
            .unwrap();
        assert_eq!(created.checksum_algorithm(), Some(&algorithm), "the algorithm is echoed");
        let id = created.upload_id().unwrap();
        let (a, b) = (bytes(MIN_PART as usize, 1), bytes(77, 2));
        let mut parts = Vec::new();
        for (n, data) in [(1, &a), (2, &b)] {
            let out = client
                .upload_part()
                .bucket("sums")
                .key(&key)
                .upload_id(id)
                .part_number(n)
                .checksum_algorithm(algorithm.clone())
                .body(ByteStream::from(data.clone()))
                .send()
                .await
                .unwrap();
            let sum = match algorithm {
                ChecksumAlgorithm::Crc32 => out.checksum_crc32().map(str::to_owned),
                _ => out.checksum_sha256().map(str::to_owned),
            };
            let sum = sum.expect("the part's checksum is returned");
            let part = CompletedPart::builder().part_number(n).e_tag(out.e_tag().unwrap());
            parts.push(match algorithm {
                ChecksumAlgorithm::Crc32 => part.checksum_crc32(sum).build(),
                _ => part.checksum_sha256(sum).build(),
            });
        }
        let done = client
            .complete_multipart_upload()
            .bucket("sums")
            .key(&key)
            .upload_id(id)
            .multipart_upload(CompletedMultipartUpload::builder().set_parts(Some(parts)).build())
            .send()
            .await
            .unwrap();
        let composite = match algorithm {
            ChecksumAlgorithm::Crc32 => done.checksum_crc32(),
            _ => done.checksum_sha256(),
        };
        let composite = composite.expect("a composite checksum").to_owned();
        assert!(composite.ends_with("-2"), "{composite}");
        let got = client
            .get_object()
            .bucket("sums")
            .key(&key)
            .checksum_mode(aws_sdk_s3::types::ChecksumMode::Enabled)
            .send()
            .await
            .unwrap();
        let shown = match algorithm {
            ChecksumAlgorithm::Crc32 => got.checksum_crc32(),
            _ => got.checksum_sha256(),
        };
        assert_eq!(shown, Some(composite.as_str()));
        let body = got.body.collect().await.unwrap().into_bytes();
        assert_eq!(body.as_ref(), [a, b].concat());
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn upload_part_copy_with_ranges() {
    let (_dir, server) = start(&small_parts());
    let client = server.client();
    client.create_bucket().bucket("copy").send().await.unwrap();
    let source = bytes(5000, 4);
    client
        .put_object()
        .bucket("copy")
        .key("src dir/source+1.bin")
        .body(ByteStream::from(source.clone()))
        .send()
        .await
        .unwrap();
    let id = create(&client, "copy", "dst").await;
    let copy = |n: i32, range: Option<&str>| {
        client
            .upload_part_copy()
            .bucket("copy")
            .key("dst")
            .upload_id(&id)
            .part_number(n)
            // URL-encoded, as clients send it.
            .copy_source("copy/src%20dir/source%2B1.bin")
            .set_copy_source_range(range.map(str::to_owned))
            .send()
    };
    let first = copy(1, Some("bytes=0-1999")).await.unwrap();
    let e1 = first.copy_part_result().unwrap().e_tag().unwrap().to_owned();
    assert_eq!(e1, format!("\"{}\"", md5_hex(&source[..2000])));
    let whole = copy(2, None).await.unwrap();
    let e2 = whole.copy_part_result().unwrap().e_tag().unwrap().to_owned();
    assert_eq!(e2, format!("\"{}\"", md5_hex(&source)));

    for bad in ["0-2", "bytes=0", "bytes=hello-world", "bytes=0-2,3-5"] {
        let e = copy(3, Some(bad)).await.unwrap_err();
        assert_eq!((code(&e), status(&e)), ("InvalidArgument".to_owned(), 400), "{bad}");
    }
    let e = copy(3, Some("bytes=4000-5000")).await.unwrap_err();
    assert_eq!(code(&e), "InvalidRange");

    client
        .complete_multipart_upload()
        .bucket("copy")
        .key("dst")
        .upload_id(&id)
        .multipart_upload(completed(&[(1, &e1), (2, &e2)]))
        .send()
        .await
        .unwrap();
    let got = client.get_object().bucket("copy").key("dst").send().await.unwrap();
    let body = got.body.collect().await.unwrap().into_bytes();
    assert_eq!(body.as_ref(), [&source[..2000], &source[..]].concat());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn list_uploads_with_prefix_delimiter_and_pages() {
    let (_dir, server) = start(&small_parts());
    let client = server.client();
    client.create_bucket().bucket("many").send().await.unwrap();
    let mut ids = Vec::new();
    for key in ["a/1", "a/2", "b/1", "c", "c"] {
        ids.push((key, create(&client, "many", key).await));
    }
    let grouped =
        client.list_multipart_uploads().bucket("many").delimiter("/").send().await.unwrap();
    let prefixes: Vec<&str> = grouped.common_prefixes().iter().filter_map(|p| p.prefix()).collect();
    assert_eq!(prefixes, ["a/", "b/"]);
    let keys: Vec<&str> = grouped.uploads().iter().filter_map(|u| u.key()).collect();
    assert_eq!(keys, ["c", "c"]);

    let under_a = client.list_multipart_uploads().bucket("many").prefix("a/").send().await.unwrap();
    let keys: Vec<&str> = under_a.uploads().iter().filter_map(|u| u.key()).collect();
    assert_eq!(keys, ["a/1", "a/2"]);

    // Pages of two, following the markers, list every upload once, in key then time order.
    let mut seen = Vec::new();
    let (mut key_marker, mut id_marker) = (None::<String>, None::<String>);
    loop {
        let page = client
            .list_multipart_uploads()
            .bucket("many")
            .max_uploads(2)
            .set_key_marker(key_marker.clone())
            .set_upload_id_marker(id_marker.clone())
            .send()
            .await
            .unwrap();
        assert!(page.uploads().len() <= 2);
        for u in page.uploads() {
            seen.push((u.key().unwrap().to_owned(), u.upload_id().unwrap().to_owned()));
        }
        if page.is_truncated() != Some(true) {
            break;
        }
        key_marker = page.next_key_marker().map(str::to_owned);
        id_marker = page.next_upload_id_marker().map(str::to_owned);
    }
    // Ids begin with the initiation time (big-endian ms): sorting by (key, id) is key then
    // time order, uploads of one millisecond in id order.
    let mut expected: Vec<(String, String)> =
        ids.iter().map(|(k, id)| ((*k).to_owned(), id.clone())).collect();
    expected.sort();
    assert_eq!(seen, expected);
}

/// With a keep-alive threshold of 0 every completion answers 200 at once and sends its
/// outcome in the body, as S3 does for long completes; the client must read both right.
/// Regression: s3s 0.14.1 writes an error there with a second XML declaration, which the SDK's
/// XML parser refuses, so the client saw a failure without its S3 code (`s3::keep_alive` now
/// drops that declaration). The filter sits in the service that also counts requests, so this
/// runs with and without the admin listener.
async fn keep_alive_completions_answer_in_the_body(admin_listener: bool) {
    let options = Options { complete_keep_alive_ms: Some(0), admin_listener, ..small_parts() };
    let (_dir, server) = start(&options);
    let client = server.client();
    client.create_bucket().bucket("slow").send().await.unwrap();
    let id = create(&client, "slow", "k").await;
    let (a, b) = (bytes(MIN_PART as usize, 1), bytes(5, 2));
    let ea = upload(&client, "slow", "k", &id, 1, &a).await;
    let eb = upload(&client, "slow", "k", &id, 2, &b).await;
    let complete = |key: &'static str, id: &str, parts: &[(i32, &str)]| {
        client
            .complete_multipart_upload()
            .bucket("slow")
            .key(key)
            .upload_id(id)
            .multipart_upload(completed(parts))
            .send()
    };

    // Part 2 named with part 1's ETag.
    let e = complete("k", &id, &[(1, &ea), (2, &ea)]).await.unwrap_err();
    assert_eq!(status(&e), 200, "the answer started before the engine decided");
    assert_eq!(code(&e), "InvalidPart", "{e:?}");
    let raw = e.raw_response().map(|r| r.body().bytes().unwrap_or_default().to_vec());
    let raw = String::from_utf8(raw.unwrap_or_default()).unwrap();
    assert_eq!(raw.matches("<?xml").count(), 1, "one declaration: {raw}");
    assert!(raw.contains("<Error><Code>InvalidPart</Code>"), "{raw}");

    // A part under the minimum before the last.
    let small = create(&client, "slow", "small").await;
    let s1 = upload(&client, "slow", "small", &small, 1, &bytes(5, 3)).await;
    let s2 = upload(&client, "slow", "small", &small, 2, &bytes(5, 4)).await;
    let e = complete("small", &small, &[(1, &s1), (2, &s2)]).await.unwrap_err();
    assert_eq!((status(&e), code(&e).as_str()), (200, "EntityTooSmall"), "{e:?}");

    // The refusals left the upload whole: it completes, its ETag read from the body.
    let done = complete("k", &id, &[(1, &ea), (2, &eb)]).await.unwrap();
    assert_eq!(done.e_tag(), Some(multipart_etag(&[&a, &b]).as_str()));
    let got = client.get_object().bucket("slow").key("k").send().await.unwrap();
    assert_eq!(got.body.collect().await.unwrap().into_bytes().as_ref(), [a, b].concat());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn keep_alive_completion_errors_reach_the_client_with_their_code() {
    keep_alive_completions_answer_in_the_body(true).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn keep_alive_completion_errors_keep_their_code_without_the_admin_listener() {
    keep_alive_completions_answer_in_the_body(false).await;
}
