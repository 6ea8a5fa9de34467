//! Objects and listings through a real signed client: put/get/head, ranges, conditional
//! reads, copies, deletes, ListObjectsV2 pages and delimiters, ListObjects (v1),
//! ListObjectVersions, and key rules.

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
use aws_sdk_s3::primitives::{ByteStream, DateTime};
use aws_sdk_s3::types::{Delete, ObjectIdentifier};
use common::{Options, bytes, code, md5_hex, start, status};

async fn put(client: &Client, bucket: &str, key: &str, data: &[u8]) -> String {
    let out = client
        .put_object()
        .bucket(bucket)
        .key(key)
        .body(ByteStream::from(data.to_vec()))
        .send()
        .await
        .unwrap();
    out.e_tag().unwrap().to_owned()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn put_get_head_and_ranges() {
    let (_dir, server) = start(&Options::default());
    let client = server.client();
    client.create_bucket().bucket("objs").send().await.unwrap();
    // Large enough to go to a payload segment, not inline in the log record.
    let data = bytes(300_000, 7);
    let out = client
        .put_object()
        .bucket("objs")
        .key("docs/report.txt")
        .content_type("text/plain")
        .metadata("owner", "alice")
        .body(ByteStream::from(data.clone()))
        .send()
        .await
        .unwrap();
    let etag = format!("\"{}\"", md5_hex(&data));
    assert_eq!(out.e_tag(), Some(etag.as_str()));

    let head = client.head_object().bucket("objs").key("docs/report.txt").send().await.unwrap();
    assert_eq!(head.content_length(), Some(300_000));
    assert_eq!(head.e_tag(), Some(etag.as_str()));
    assert_eq!(head.content_type(), Some("text/plain"));
    assert_eq!(head.metadata().and_then(|m| m.get("owner")).map(String::as_str), Some("alice"));

    let got = client.get_object().bucket("objs").key("docs/report.txt").send().await.unwrap();
    assert_eq!(got.body.collect().await.unwrap().into_bytes().as_ref(), data.as_slice());

    for (range, first, last) in [
        ("bytes=0-9", 0usize, 9usize),
        ("bytes=299990-", 299_990, 299_999),
        ("bytes=-5", 299_995, 299_999),
        ("bytes=100-999999", 100, 299_999),
    ] {
        let got = client
            .get_object()
            .bucket("objs")
            .key("docs/report.txt")
            .range(range)
            .send()
            .await
            .unwrap();
        assert_eq!(got.content_range(), Some(format!("bytes {first}-{last}/300000").as_str()));
        let body = got.body.collect().await.unwrap().into_bytes();
        assert_eq!(body.as_ref(), &data[first..=last], "{range}");
    }
    let e = client
        .get_object()
        .bucket("objs")
        .key("docs/report.txt")
        .range("bytes=300000-")
        .send()
        .await
        .unwrap_err();
    assert_eq!((code(&e), status(&e)), ("InvalidRange".to_owned(), 416));

    // A single-PUT object has one part: partNumber=1 is the whole object, 2 is InvalidPart.
    let one = client
        .get_object()
        .bucket("objs")
        .key("docs/report.txt")
        .part_number(1)
        .send()
        .await
        .unwrap();
    assert_eq!(one.parts_count(), Some(1));
    assert_eq!(one.body.collect().await.unwrap().into_bytes().len(), 300_000);
    let e = client
        .get_object()
        .bucket("objs")
        .key("docs/report.txt")
        .part_number(2)
        .send()
        .await
        .unwrap_err();
    assert_eq!(code(&e), "InvalidPart");

    // An empty object, and overwriting.
    put(&client, "objs", "empty", b"").await;
    let got = client.get_object().bucket("objs").key("empty").send().await.unwrap();
    assert_eq!(got.content_length(), Some(0));
    assert!(got.body.collect().await.unwrap().into_bytes().is_empty());
    put(&client, "objs", "empty", b"now full").await;
    let got = client.get_object().bucket("objs").key("empty").send().await.unwrap();
    assert_eq!(got.body.collect().await.unwrap().into_bytes().as_ref(), b"now full");

    let e = client.get_object().bucket("objs").key("missing").send().await.unwrap_err();
    assert_eq!((code(&e), status(&e)), ("NoSuchKey".to_owned(), 404));
    let e = client.get_object().bucket("nobucket").key("k").send().await.unwrap_err();
    assert_eq!((code(&e), status(&e)), ("NoSuchBucket".to_owned(), 404));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn conditional_reads() {
    let (_dir, server) = start(&Options::default());
    let client = server.client();
    client.create_bucket().bucket("cond").send().await.unwrap();
    let etag = put(&client, "cond", "k", b"hello").await;
    let get = || client.get_object().bucket("cond").key("k");

    get().if_match(&etag).send().await.unwrap();
    let e = get().if_match("\"0123456789abcdef0123456789abcdef\"").send().await.unwrap_err();
    assert_eq!(status(&e), 412);
    let e = get().if_none_match(&etag).send().await.unwrap_err();
    assert_eq!(status(&e), 304);
    get().if_none_match("\"0123456789abcdef0123456789abcdef\"").send().await.unwrap();

    let past = DateTime::from_secs(1_000_000_000);
    let future = DateTime::from_secs(4_000_000_000);
    get().if_modified_since(past).send().await.unwrap();
    let e = get().if_modified_since(future).send().await.unwrap_err();
    assert_eq!(status(&e), 304);
    get().if_unmodified_since(future).send().await.unwrap();
    let e = get().if_unmodified_since(past).send().await.unwrap_err();
    assert_eq!(status(&e), 412);

    // Conditional PutObject: If-None-Match: * refuses to overwrite.
    let e = client
        .put_object()
        .bucket("cond")
        .key("k")
        .if_none_match("*")
        .body(ByteStream::from_static(b"again"))
        .send()
        .await
        .unwrap_err();
    assert_eq!((code(&e), status(&e)), ("PreconditionFailed".to_owned(), 412));
}

/// Writers racing with `If-None-Match: *`, then with `If-Match` of the object they saw: the
/// gateway's early check lets them all through (none has committed when they ask), and the
/// engine decides at commit: exactly one wins each race, the others get 412.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn conditional_writes_racing_have_one_winner() {
    const WRITERS: usize = 8;
    let (_dir, server) = start(&Options::default());
    let client = server.client();
    client.create_bucket().bucket("race").send().await.unwrap();
    for round in 0..4 {
        let key = format!("k{round}");
        let mut seen: Option<String> = None;
        for stage in 0..2 {
            let tasks: Vec<_> = (0..WRITERS)
                .map(|writer| {
                    let (client, key, seen) = (client.clone(), key.clone(), seen.clone());
                    // Large enough that the bodies take a while to arrive: every early check
                    // runs before any of the writes commits.
                    let data = bytes(256 << 10, (round * 50 + stage * 10 + writer) as u8);
                    tokio::spawn(async move {
                        let put = client.put_object().bucket("race").key(key);
                        let put = match seen {
                            None => put.if_none_match("*"),
                            Some(etag) => put.if_match(etag),
                        };
                        let out = put.body(ByteStream::from(data.clone())).send().await;
                        (out.map(|o| o.e_tag().unwrap().to_owned()), data)
                    })
                })
                .collect();
            let mut winners = Vec::new();
            for task in tasks {
                match task.await.unwrap() {
                    (Ok(etag), data) => winners.push((etag, data)),
                    (Err(e), _) => {
                        assert_eq!((code(&e), status(&e)), ("PreconditionFailed".to_owned(), 412));
                    }
                }
            }
            assert_eq!(winners.len(), 1, "round {round} stage {stage}");
            let (etag, data) = winners.pop().unwrap();
            let got = client.get_object().bucket("race").key(&key).send().await.unwrap();
            assert_eq!(got.e_tag(), Some(etag.as_str()));
            assert_eq!(got.body.collect().await.unwrap().into_bytes().as_ref(), &data[..]);
            seen = Some(etag);
        }
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn copy_delete_and_attributes() {
    let (_dir, server) = start(&Options::default());
    let client = server.client();
    client.create_bucket().bucket("src").send().await.unwrap();
    client.create_bucket().bucket("dst").send().await.unwrap();
    let etag = put(&client, "src", "a b+c", b"copied bytes").await;
    let copied = client
        .copy_object()
        .bucket("dst")
        .key("copy")
        .copy_source("src/a%20b%2Bc")
        .send()
        .await
        .unwrap();
    assert_eq!(copied.copy_object_result().unwrap().e_tag(), Some(etag.as_str()));
    let got = client.get_object().bucket("dst").key("copy").send().await.unwrap();
    assert_eq!(got.body.collect().await.unwrap().into_bytes().as_ref(), b"copied bytes");
    let e = client
        .copy_object()
        .bucket("src")
        .key("a b+c")
        .copy_source("src/a%20b%2Bc")
        .send()
        .await
        .unwrap_err();
    assert_eq!(code(&e), "InvalidRequest", "a copy onto itself without REPLACE");

    let attrs = client
        .get_object_attributes()
        .bucket("dst")
        .key("copy")
        .object_attributes(aws_sdk_s3::types::ObjectAttributes::Etag)
        .object_attributes(aws_sdk_s3::types::ObjectAttributes::ObjectSize)
        .send()
        .await
        .unwrap();
    assert_eq!(attrs.object_size(), Some(12));
    assert_eq!(attrs.e_tag().map(|e| e.trim_matches('"')), Some(etag.trim_matches('"')));

    client.delete_object().bucket("dst").key("copy").send().await.unwrap();
    // Deleting a missing key succeeds, as S3's does.
    client.delete_object().bucket("dst").key("copy").send().await.unwrap();
    let e = client.head_object().bucket("dst").key("copy").send().await.unwrap_err();
    assert_eq!(status(&e), 404);

    for key in ["x1", "x2", "x3"] {
        put(&client, "dst", key, b"x").await;
    }
    let delete = Delete::builder()
        .objects(ObjectIdentifier::builder().key("x1").build().unwrap())
        .objects(ObjectIdentifier::builder().key("x2").version_id("null").build().unwrap())
        .objects(ObjectIdentifier::builder().key("never-there").build().unwrap())
        .build()
        .unwrap();
    let out = client.delete_objects().bucket("dst").delete(delete).send().await.unwrap();
    let mut deleted: Vec<&str> = out.deleted().iter().filter_map(|d| d.key()).collect();
    deleted.sort();
    assert_eq!(deleted, ["never-there", "x1", "x2"]);
    assert!(out.errors().is_empty());
    let left = client.list_objects_v2().bucket("dst").send().await.unwrap();
    let keys: Vec<&str> = left.contents().iter().filter_map(|o| o.key()).collect();
    assert_eq!(keys, ["x3"]);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn listings_page_and_group() {
    let (_dir, server) = start(&Options::default());
    let client = server.client();
    client.create_bucket().bucket("list").send().await.unwrap();
    let keys = ["a", "b/1", "b/2", "b/3", "c/x/1", "d", "e f", "\u{e9}t\u{e9}"];
    for key in keys {
        put(&client, "list", key, key.as_bytes()).await;
    }

    // Pages of three keys, following continuation tokens, list every key once, in order.
    let mut seen = Vec::new();
    let mut token = None::<String>;
    let mut pages = 0;
    loop {
        let page = client
            .list_objects_v2()
            .bucket("list")
            .max_keys(3)
            .set_continuation_token(token.clone())
            .send()
            .await
            .unwrap();
        pages += 1;
        assert!(page.key_count().unwrap() <= 3);
        seen.extend(page.contents().iter().filter_map(|o| o.key()).map(str::to_owned));
        if page.is_truncated() != Some(true) {
            assert!(page.next_continuation_token().is_none());
            break;
        }
        token = page.next_continuation_token().map(str::to_owned);
    }
    assert_eq!(seen, keys);
    assert_eq!(pages, 3);

    let grouped = client.list_objects_v2().bucket("list").delimiter("/").send().await.unwrap();
    let prefixes: Vec<&str> = grouped.common_prefixes().iter().filter_map(|p| p.prefix()).collect();
    assert_eq!(prefixes, ["b/", "c/"]);
    let top: Vec<&str> = grouped.contents().iter().filter_map(|o| o.key()).collect();
    assert_eq!(top, ["a", "d", "e f", "\u{e9}t\u{e9}"]);
    assert_eq!(grouped.key_count(), Some(6));

    let under_b = client
        .list_objects_v2()
        .bucket("list")
        .prefix("b/")
        .start_after("b/1")
        .send()
        .await
        .unwrap();
    let found: Vec<&str> = under_b.contents().iter().filter_map(|o| o.key()).collect();
    assert_eq!(found, ["b/2", "b/3"]);
    assert!(under_b.contents().iter().all(|o| o.owner().is_none()), "owners only when fetched");
    let fetched = client.list_objects_v2().bucket("list").fetch_owner(true).send().await.unwrap();
    let owners: Vec<Option<&str>> =
        fetched.contents().iter().map(|o| o.owner().and_then(|w| w.id())).collect();
    let mine = client.list_buckets().send().await.unwrap();
    let my_id = mine.owner().and_then(|w| w.id()).expect("ListBuckets names its owner");
    assert_eq!(owners, vec![Some(my_id); keys.len()], "fetch-owner names each object's owner");
    let first = &under_b.contents()[0];
    assert_eq!(first.size(), Some(3));
    assert_eq!(first.e_tag(), Some(format!("\"{}\"", md5_hex(b"b/2")).as_str()));

    // A delimiter page that ends on a common prefix resumes after it.
    let page =
        client.list_objects_v2().bucket("list").delimiter("/").max_keys(2).send().await.unwrap();
    assert_eq!(page.is_truncated(), Some(true));
    let next = client
        .list_objects_v2()
        .bucket("list")
        .delimiter("/")
        .continuation_token(page.next_continuation_token().unwrap())
        .send()
        .await
        .unwrap();
    let prefixes: Vec<&str> = next.common_prefixes().iter().filter_map(|p| p.prefix()).collect();
    assert_eq!(prefixes, ["c/"]);

    let v1 = client.list_objects().bucket("list").max_keys(2).marker("b/3").send().await.unwrap();
    let found: Vec<&str> = v1.contents().iter().filter_map(|o| o.key()).collect();
    assert_eq!(found, ["c/x/1", "d"]);
    assert_eq!(v1.is_truncated(), Some(true));
    assert!(v1.contents().iter().all(|o| o.owner().and_then(|w| w.id()) == Some(my_id)));

    let versions = client.list_object_versions().bucket("list").prefix("b/").send().await.unwrap();
    let listed: Vec<(&str, &str)> =
        versions.versions().iter().map(|v| (v.key().unwrap(), v.version_id().unwrap())).collect();
    assert_eq!(listed, [("b/1", "null"), ("b/2", "null"), ("b/3", "null")]);
    assert!(versions.versions().iter().all(|v| v.is_latest() == Some(true)));
    assert!(versions.versions().iter().all(|v| v.owner().and_then(|w| w.id()) == Some(my_id)));

    let e = client.list_objects_v2().bucket("list").continuation_token("%%%").send().await;
    assert_eq!(code(&e.unwrap_err()), "InvalidArgument");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn keys_are_data_and_bounded() {
    let (dir, server) = start(&Options::default());
    let client = server.client();
    client.create_bucket().bucket("keys").send().await.unwrap();
    // Keys that would be dangerous as paths are plain data.
    for key in ["../../etc/passwd", "/leading", "a//b", "..", "nul\u{1}byte"] {
        put(&client, "keys", key, key.as_bytes()).await;
        let got = client.get_object().bucket("keys").key(key).send().await.unwrap();
        assert_eq!(got.body.collect().await.unwrap().into_bytes().as_ref(), key.as_bytes());
    }
    assert!(!dir.path().join("etc").exists());
    let long = "k".repeat(1025);
    let e = client
        .put_object()
        .bucket("keys")
        .key(&long)
        .body(ByteStream::from_static(b"x"))
        .send()
        .await
        .unwrap_err();
    assert_eq!((code(&e), status(&e)), ("KeyTooLongError".to_owned(), 400));
    let e = client.create_multipart_upload().bucket("keys").key(&long).send().await.unwrap_err();
    assert_eq!(code(&e), "KeyTooLongError");
    put(&client, "keys", &"k".repeat(1024), b"at the limit").await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn streamed_bodies_with_trailing_checksums() {
    // The SDK sends a file body as aws-chunked with the CRC32 in a trailer: the gateway checks
    // it at the body's end (a wrong trailer is BadDigest: see the unit tests in s3/trailer.rs).
    let (dir, server) = start(&Options::default());
    let client = server.client();
    client.create_bucket().bucket("stream").send().await.unwrap();
    let data = bytes(3 << 20, 5);
    let path = dir.path().join("upload.bin");
    std::fs::write(&path, &data).unwrap();
    let out = client
        .put_object()
        .bucket("stream")
        .key("file")
        .checksum_algorithm(aws_sdk_s3::types::ChecksumAlgorithm::Crc32)
        .body(ByteStream::from_path(&path).await.unwrap())
        .send()
        .await
        .unwrap();
    assert_eq!(out.e_tag(), Some(format!("\"{}\"", md5_hex(&data)).as_str()));
    let got = client
        .get_object()
        .bucket("stream")
        .key("file")
        .checksum_mode(aws_sdk_s3::types::ChecksumMode::Enabled)
        .send()
        .await
        .unwrap();
    let crc = crc32fast::hash(&data).to_be_bytes();
    use base64::Engine as _;
    let crc = base64::engine::general_purpose::STANDARD.encode(crc);
    assert_eq!(got.checksum_crc32(), Some(crc.as_str()), "the object keeps the CRC32 it was sent");
    assert_eq!(got.body.collect().await.unwrap().into_bytes().as_ref(), data.as_slice());
}
