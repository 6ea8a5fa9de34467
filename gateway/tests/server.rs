//! The server as an operator and a client meet it: signatures required, keys generated and
//! kept, buckets and their lifecycle rule (expiring uploads on a short test "day"), a
//! graceful stop that keeps everything for the next start.

#![allow(
    missing_docs,
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::indexing_slicing,
    clippy::panic,
    clippy::cast_possible_truncation
)]

mod common;

use std::time::Duration;

use aws_sdk_s3::primitives::ByteStream;
use aws_sdk_s3::types::{
    AbortIncompleteMultipartUpload, BucketLifecycleConfiguration, ExpirationStatus, LifecycleRule,
    LifecycleRuleFilter,
};
use common::{Options, Server, code, data_dir, start, status};

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn unsigned_and_wrongly_signed_requests_are_refused() {
    let (_dir, server) = start(&Options::default());
    server.client().create_bucket().bucket("private").send().await.unwrap();

    let (status_code, text) = server.raw(&format!(
        "GET /private/ HTTP/1.1\r\nHost: {}\r\nConnection: close\r\n\r\n",
        server.addr
    ));
    assert_eq!(status_code, 403, "{text}");
    assert!(text.contains("AccessDenied"), "{text}");
    let (status_code, _) = server.raw(&format!(
        "PUT /private/k HTTP/1.1\r\nHost: {}\r\nContent-Length: 1\r\nConnection: close\r\n\r\nx",
        server.addr
    ));
    assert_eq!(status_code, 403);

    let wrong_secret = server.client_with(&server.access_key, "not-the-secret");
    let e = wrong_secret.list_objects_v2().bucket("private").send().await.unwrap_err();
    assert_eq!((code(&e), status(&e)), ("SignatureDoesNotMatch".to_owned(), 403));
    let unknown = server.client_with("NOBODY", "whatever");
    let e = unknown.list_buckets().send().await.unwrap_err();
    assert_eq!(status(&e), 403, "{}", code(&e));
    let e = wrong_secret
        .put_object()
        .bucket("private")
        .key("k")
        .body(ByteStream::from_static(b"x"))
        .send()
        .await
        .unwrap_err();
    assert_eq!(status(&e), 403);
    let listed = server.client().list_objects_v2().bucket("private").send().await.unwrap();
    assert!(listed.contents().is_empty(), "nothing was written by the refused requests");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn generated_keys_persist_and_a_graceful_stop_keeps_data() {
    let dir = tempfile::tempdir().unwrap();
    let data = data_dir(&dir);
    let first = Server::start(&data, &Options::default());
    assert_eq!(first.access_key.len(), 20, "{:?}", first.banner);
    assert_eq!(first.secret_key.len(), 40);
    assert!(first.endpoint.starts_with("http://127.0.0.1:"));
    let client = first.client();
    client.create_bucket().bucket("keep").send().await.unwrap();
    client
        .put_object()
        .bucket("keep")
        .key("k")
        .body(ByteStream::from_static(b"kept"))
        .send()
        .await
        .unwrap();
    let upload = client.create_multipart_upload().bucket("keep").key("big").send().await.unwrap();
    let keys = (first.access_key.clone(), first.secret_key.clone());
    let after = first.stop();
    assert!(after.iter().any(|l| l == "stopped"), "{after:?}");

    let mode = std::os::unix::fs::PermissionsExt::mode(
        &std::fs::metadata(data.join("gateway-keys")).unwrap().permissions(),
    );
    assert_eq!(mode & 0o777, 0o600);

    let second = Server::start(&data, &Options::default());
    assert_eq!((second.access_key.clone(), second.secret_key.clone()), keys);
    let client = second.client();
    let got = client.get_object().bucket("keep").key("k").send().await.unwrap();
    assert_eq!(got.body.collect().await.unwrap().into_bytes().as_ref(), b"kept");
    let uploads = client.list_multipart_uploads().bucket("keep").send().await.unwrap();
    assert_eq!(uploads.uploads()[0].upload_id(), upload.upload_id());
    second.stop();

    // Configured keys replace the stored pair while they are given.
    let third = Server::start(
        &data,
        &Options {
            keys: Some(("OPERATOR".into(), "operator-secret".into())),
            ..Options::default()
        },
    );
    assert!(third.banner.iter().any(|l| l == "secret key: (as configured)"));
    third.client().head_bucket().bucket("keep").send().await.unwrap();
    let e = third.client_with(&keys.0, &keys.1).head_bucket().bucket("keep").send().await;
    assert_eq!(status(&e.unwrap_err()), 403);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_second_server_on_the_same_directory_fails_clearly() {
    let (dir, server) = start(&Options::default());
    let output = std::process::Command::new(env!("CARGO_BIN_EXE_tessera"))
        .arg("serve")
        .arg("--data")
        .arg(data_dir(&dir))
        .arg("--listen")
        .arg("127.0.0.1:0")
        .output()
        .unwrap();
    assert!(!output.status.success());
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(stderr.contains("in use"), "{stderr}");
    drop(server);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn bucket_life() {
    let (_dir, server) = start(&Options::default());
    let client = server.client();
    client.create_bucket().bucket("alpha").send().await.unwrap();
    client.create_bucket().bucket("beta.1").send().await.unwrap();
    let e = client.create_bucket().bucket("alpha").send().await.unwrap_err();
    assert_eq!((code(&e), status(&e)), ("BucketAlreadyOwnedByYou".to_owned(), 409));
    for bad in ["ab", "Upper", "bad_name", "192.168.1.1", "-dash"] {
        let e = client.create_bucket().bucket(bad).send().await.unwrap_err();
        assert_eq!((code(&e), status(&e)), ("InvalidBucketName".to_owned(), 400), "{bad}");
    }
    let listed = client.list_buckets().send().await.unwrap();
    let names: Vec<&str> = listed.buckets().iter().filter_map(|b| b.name()).collect();
    assert_eq!(names, ["alpha", "beta.1"]);
    client.head_bucket().bucket("alpha").send().await.unwrap();
    let e = client.head_bucket().bucket("gamma").send().await.unwrap_err();
    assert_eq!(status(&e), 404);

    client
        .put_object()
        .bucket("alpha")
        .key("k")
        .body(ByteStream::from_static(b"x"))
        .send()
        .await
        .unwrap();
    let e = client.delete_bucket().bucket("alpha").send().await.unwrap_err();
    assert_eq!((code(&e), status(&e)), ("BucketNotEmpty".to_owned(), 409));
    client.delete_object().bucket("alpha").key("k").send().await.unwrap();
    let upload = client.create_multipart_upload().bucket("alpha").key("u").send().await.unwrap();
    let e = client.delete_bucket().bucket("alpha").send().await.unwrap_err();
    assert_eq!(code(&e), "BucketNotEmpty", "an upload in progress keeps the bucket");
    client
        .abort_multipart_upload()
        .bucket("alpha")
        .key("u")
        .upload_id(upload.upload_id().unwrap())
        .send()
        .await
        .unwrap();
    client.delete_bucket().bucket("alpha").send().await.unwrap();
    let e = client.delete_bucket().bucket("alpha").send().await.unwrap_err();
    assert_eq!((code(&e), status(&e)), ("NoSuchBucket".to_owned(), 404));
}

fn abort_rule(id: &str, prefix: &str, days: i32) -> LifecycleRule {
    LifecycleRule::builder()
        .id(id)
        .status(ExpirationStatus::Enabled)
        .filter(LifecycleRuleFilter::builder().prefix(prefix).build())
        .abort_incomplete_multipart_upload(
            AbortIncompleteMultipartUpload::builder().days_after_initiation(days).build(),
        )
        .build()
        .unwrap()
}

fn abort_rules(rules: &[(&str, &str, i32)]) -> BucketLifecycleConfiguration {
    BucketLifecycleConfiguration::builder()
        .set_rules(Some(rules.iter().map(|(id, p, days)| abort_rule(id, p, *days)).collect()))
        .build()
        .unwrap()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn lifecycle_rule_dates_and_expires_uploads() {
    let day_seconds = 2;
    let (_dir, server) =
        start(&Options { lifecycle_day_seconds: Some(day_seconds), ..Options::default() });
    let client = server.client();
    client.create_bucket().bucket("life").send().await.unwrap();
    let e = client.get_bucket_lifecycle_configuration().bucket("life").send().await.unwrap_err();
    assert_eq!((code(&e), status(&e)), ("NoSuchLifecycleConfiguration".to_owned(), 404));

    let without = client.create_multipart_upload().bucket("life").key("before").send().await;
    assert!(without.unwrap().abort_date().is_none());

    // Rule ids are unique in a configuration.
    let e = client
        .put_bucket_lifecycle_configuration()
        .bucket("life")
        .lifecycle_configuration(abort_rules(&[("same", "", 1), ("same", "tmp/", 2)]))
        .send()
        .await
        .unwrap_err();
    assert_eq!((code(&e), status(&e)), ("InvalidArgument".to_owned(), 400));

    // Every key after 50 days; keys under tmp/ after 1.
    let rules = [("cleanup", "", 50), ("scratch", "tmp/", 1)];
    client
        .put_bucket_lifecycle_configuration()
        .bucket("life")
        .lifecycle_configuration(abort_rules(&rules))
        .send()
        .await
        .unwrap();
    let got = client.get_bucket_lifecycle_configuration().bucket("life").send().await.unwrap();
    let shown: Vec<(&str, &str, i32)> = got
        .rules()
        .iter()
        .map(|rule| {
            let days =
                rule.abort_incomplete_multipart_upload().and_then(|a| a.days_after_initiation());
            let prefix = rule.filter().and_then(|f| f.prefix());
            (rule.id().unwrap(), prefix.unwrap(), days.unwrap())
        })
        .collect();
    assert_eq!(shown, rules, "the rules read back with their ids and prefixes");

    let created =
        client.create_multipart_upload().bucket("life").key("tmp/later").send().await.unwrap();
    let abort_date = created.abort_date().expect("AbortDate with a rule");
    assert_eq!(created.abort_rule_id(), Some("scratch"));
    let now = std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).unwrap().as_secs();
    let at = u64::try_from(abort_date.secs()).unwrap();
    assert!(at >= now && at <= now + day_seconds + 1, "abort date {at}, now {now}");
    let id = created.upload_id().unwrap().to_owned();
    let parts =
        client.list_parts().bucket("life").key("tmp/later").upload_id(&id).send().await.unwrap();
    assert_eq!(parts.abort_date(), Some(abort_date));
    assert_eq!(parts.abort_rule_id(), Some("scratch"));
    // The upload made before the rules has the rule for every key, from its initiation.
    let listed = client.list_multipart_uploads().bucket("life").send().await.unwrap();
    let before = listed.uploads().iter().find(|u| u.key() == Some("before")).unwrap();
    let before_id = before.upload_id().unwrap();
    let parts = client.list_parts().bucket("life").key("before").upload_id(before_id).send().await;
    assert_eq!(parts.unwrap().abort_rule_id(), Some("cleanup"));

    // After the "day", the expiry task aborts the upload under tmp/, and only it.
    let deadline = std::time::Instant::now() + Duration::from_secs(30);
    loop {
        let listed = client.list_multipart_uploads().bucket("life").send().await.unwrap();
        let keys: Vec<&str> = listed.uploads().iter().filter_map(|u| u.key()).collect();
        if keys == ["before"] {
            break;
        }
        assert!(std::time::Instant::now() < deadline, "uploads not expired: {listed:?}");
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    let e = client.list_parts().bucket("life").key("tmp/later").upload_id(&id).send().await;
    assert_eq!(code(&e.unwrap_err()), "NoSuchUpload");

    client.delete_bucket_lifecycle().bucket("life").send().await.unwrap();
    let e = client.get_bucket_lifecycle_configuration().bucket("life").send().await.unwrap_err();
    assert_eq!(code(&e), "NoSuchLifecycleConfiguration");
}

/// A request refused before its body was read, whose client may never send that body (it
/// asked `Expect: 100-continue` and got a final answer instead, as botocore does for every
/// UploadPart): the connection closes after the answer. Kept open, the server would take the
/// next request's first bytes for the body it is owed, and that request would fail, cut.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_error_before_the_body_is_read_closes_the_connection() {
    let (_dir, server) = start(&Options::default());
    server.client().create_bucket().bucket("bkt").send().await.unwrap();
    let started = std::time::Instant::now();
    // Unsigned: refused at once, the 5 bytes announced and never sent.
    let (status_code, text) = server.raw(&format!(
        "PUT /bkt/k HTTP/1.1\r\nHost: {}\r\nExpect: 100-continue\r\nContent-Length: 5\r\n\r\n",
        server.addr
    ));
    assert_eq!(status_code, 403, "{text}");
    assert!(text.to_ascii_lowercase().contains("connection: close"), "{text}");
    // The server closed it: the read ended at once, not at the 10 s timeout.
    assert!(started.elapsed() < Duration::from_secs(8), "{:?}", started.elapsed());
}
