//! The admin listener of `tessera serve` as an operator's tools meet it: `/metrics` parses as
//! the Prometheus text format and counts the S3 requests made, by operation and status, beside
//! the engine's figures; `/healthz` answers; `/events` streams the durable transitions of one
//! bucket and key prefix in LSN order, and a reconnect with `Last-Event-ID` (or `?after=`)
//! gets exactly the transitions it missed, then goes on live.

#![allow(
    missing_docs,
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::indexing_slicing,
    clippy::panic,
    clippy::cast_possible_truncation
)]

mod common;

use std::collections::{BTreeMap, HashMap, HashSet};
use std::io::{BufRead, BufReader, Read, Write};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use aws_sdk_s3::Client;
use aws_sdk_s3::primitives::ByteStream;
use aws_sdk_s3::types::{CompletedMultipartUpload, CompletedPart};
use common::{Options, bytes, code, md5_hex, start, status};
use tokio::io::{AsyncBufReadExt, AsyncWriteExt};

/// How long a test waits for an event it expects.
const EVENT_TIMEOUT: Duration = Duration::from_secs(20);
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

/// One HTTP/1.1 request to the admin listener: status, headers (lowercased names) and body.
fn request(addr: &str, method: &str, path: &str) -> (u16, HashMap<String, String>, String) {
    let mut stream = std::net::TcpStream::connect(addr).unwrap();
    stream.set_read_timeout(Some(Duration::from_secs(20))).unwrap();
    write!(stream, "{method} {path} HTTP/1.1\r\nHost: {addr}\r\nConnection: close\r\n\r\n")
        .unwrap();
    let mut response = String::new();
    stream.read_to_string(&mut response).unwrap();
    let (head, body) = response.split_once("\r\n\r\n").unwrap();
    let mut lines = head.lines();
    let status = lines.next().unwrap().split_whitespace().nth(1).unwrap().parse().unwrap();
    let headers = lines
        .map(|l| l.split_once(": ").unwrap())
        .map(|(k, v)| (k.to_ascii_lowercase(), v.to_owned()))
        .collect();
    (status, headers, body.to_owned())
}

// ---- the Prometheus text format ----

/// Labels as (name, value), in written order.
type Labels = Vec<(String, String)>;

/// One sample: its metric name, labels (in written order) and value.
#[derive(Clone, Debug)]
struct Sample {
    name: String,
    labels: Labels,
    value: f64,
}

fn is_metric_name(name: &str) -> bool {
    let mut chars = name.chars();
    chars.next().is_some_and(|c| c.is_ascii_alphabetic() || c == '_' || c == ':')
        && chars.all(|c| c.is_ascii_alphanumeric() || c == '_' || c == ':')
}

/// `a="x",b="y\"z"` (the text between the braces).
fn parse_labels(text: &str) -> Vec<(String, String)> {
    let mut labels = Vec::new();
    let mut rest = text;
    while !rest.is_empty() {
        let (name, after) = rest.split_once("=\"").unwrap_or_else(|| panic!("label in {text:?}"));
        assert!(is_metric_name(name) && !name.contains(':'), "label name {name:?}");
        let mut value = String::new();
        let mut chars = after.char_indices();
        let end = loop {
            let (i, c) = chars.next().unwrap_or_else(|| panic!("unterminated label in {text:?}"));
            match c {
                '"' => break i,
                '\\' => match chars.next().map(|(_, c)| c) {
                    Some('n') => value.push('\n'),
                    Some(c @ ('\\' | '"')) => value.push(c),
                    other => panic!("bad escape {other:?} in {text:?}"),
                },
                c => value.push(c),
            }
        };
        labels.push((name.to_owned(), value));
        rest = &after[end + 1..];
        rest = rest.strip_prefix(',').unwrap_or(rest);
    }
    labels
}

fn parse_value(text: &str) -> f64 {
    match text {
        "+Inf" => f64::INFINITY,
        "-Inf" => f64::NEG_INFINITY,
        _ => text.parse().unwrap_or_else(|_| panic!("sample value {text:?}")),
    }
}

/// Checks `text` against the text exposition format 0.0.4 (every sample line `name{labels}
/// value` of a family announced by HELP and TYPE lines, no series twice, every histogram's
/// buckets cumulative in increasing `le` and ending with `+Inf` equal to its `_count`) and
/// returns its samples.
fn parse_exposition(text: &str) -> Vec<Sample> {
    let mut helped = HashSet::new();
    let mut types: HashMap<String, String> = HashMap::new();
    let mut samples = Vec::new();
    let mut series = HashSet::new();
    for line in text.lines() {
        if let Some(rest) = line.strip_prefix("# HELP ") {
            let (name, help) = rest.split_once(' ').unwrap();
            assert!(is_metric_name(name) && !help.is_empty(), "{line}");
            assert!(helped.insert(name.to_owned()), "HELP twice: {line}");
            continue;
        }
        if let Some(rest) = line.strip_prefix("# TYPE ") {
            let (name, kind) = rest.split_once(' ').unwrap();
            assert!(["counter", "gauge", "histogram", "summary", "untyped"].contains(&kind));
            assert!(helped.contains(name), "TYPE without HELP: {line}");
            assert!(types.insert(name.to_owned(), kind.to_owned()).is_none(), "{line}");
            continue;
        }
        assert!(!line.is_empty() && !line.starts_with('#'), "unexpected line {line:?}");
        let (series_text, value) = line.rsplit_once(' ').unwrap();
        let (name, labels) = match series_text.split_once('{') {
            Some((name, labels)) => {
                (name, parse_labels(labels.strip_suffix('}').unwrap_or_else(|| panic!("{line}"))))
            }
            None => (series_text, Vec::new()),
        };
        assert!(is_metric_name(name) && name.starts_with("tessera_"), "{line}");
        let family = ["_bucket", "_sum", "_count"]
            .iter()
            .find_map(|suffix| {
                name.strip_suffix(suffix)
                    .filter(|f| types.get(*f).is_some_and(|k| k == "histogram"))
            })
            .unwrap_or(name);
        let kind = types.get(family).unwrap_or_else(|| panic!("sample before its TYPE: {line}"));
        if kind == "counter" {
            assert!(name.ends_with("_total"), "a counter's name ends in _total: {line}");
        }
        assert!(series.insert(series_text.to_owned()), "series twice: {line}");
        samples.push(Sample { name: name.to_owned(), labels, value: parse_value(value) });
    }
    check_histograms(&types, &samples);
    samples
}

fn check_histograms(types: &HashMap<String, String>, samples: &[Sample]) {
    for (family, _) in types.iter().filter(|(_, kind)| *kind == "histogram") {
        // Bucket samples by their labels other than `le`, in written order.
        let mut series: BTreeMap<Labels, Vec<(f64, f64)>> = BTreeMap::new();
        for s in samples.iter().filter(|s| s.name == format!("{family}_bucket")) {
            let le = s.labels.iter().find(|(k, _)| k == "le").expect("a bucket has le");
            let rest: Vec<_> = s.labels.iter().filter(|(k, _)| k != "le").cloned().collect();
            series.entry(rest).or_default().push((parse_value(&le.1), s.value));
        }
        for (labels, buckets) in &series {
            for pair in buckets.windows(2) {
                assert!(pair[0].0 < pair[1].0, "{family}{labels:?}: le increasing");
                assert!(pair[0].1 <= pair[1].1, "{family}{labels:?}: buckets cumulative");
            }
            let (le, last) = *buckets.last().unwrap();
            assert!(le.is_infinite(), "{family}{labels:?}: the last bucket is +Inf");
            let count = sample_of(samples, &format!("{family}_count"), labels);
            assert_eq!(last, count, "{family}{labels:?}: +Inf equals _count");
            sample_of(samples, &format!("{family}_sum"), labels);
        }
    }
}

fn sample_of(samples: &[Sample], name: &str, labels: &[(String, String)]) -> f64 {
    let mut wanted = labels.to_vec();
    wanted.sort();
    samples
        .iter()
        .find(|s| {
            let mut have = s.labels.clone();
            have.sort();
            s.name == name && have == wanted
        })
        .unwrap_or_else(|| panic!("no sample {name}{labels:?}"))
        .value
}

/// The value of `name{labels}`.
fn value(samples: &[Sample], name: &str, labels: &[(&str, &str)]) -> f64 {
    let labels: Vec<(String, String)> =
        labels.iter().map(|(k, v)| ((*k).to_owned(), (*v).to_owned())).collect();
    sample_of(samples, name, &labels)
}

fn requests(samples: &[Sample], operation: &str, status: &str) -> f64 {
    value(samples, "tessera_s3_requests_total", &[("operation", operation), ("status", status)])
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn metrics_count_requests_by_operation_and_status_beside_the_engine_figures() {
    let (_dir, server) = start(&small_parts());
    let admin = server.admin_addr();
    let client = server.client();
    client.create_bucket().bucket("metered").send().await.unwrap();
    let id = create(&client, "metered", "a").await;
    create(&client, "metered", "b").await;
    upload(&client, "metered", "a", &id, 1, &bytes(100, 1)).await;
    let unknown_id = "0".repeat(48);
    let e = client
        .list_parts()
        .bucket("metered")
        .key("a")
        .upload_id(&unknown_id)
        .send()
        .await
        .unwrap_err();
    assert_eq!((code(&e), status(&e)), ("NoSuchUpload".to_owned(), 404));
    let e = client
        .abort_multipart_upload()
        .bucket("metered")
        .key("a")
        .upload_id(&unknown_id)
        .send()
        .await
        .unwrap_err();
    assert_eq!((code(&e), status(&e)), ("NoSuchUpload".to_owned(), 404));
    let e = server.client_with(&server.access_key, "wrong").list_buckets().send().await;
    assert_eq!(status(&e.unwrap_err()), 403);

    let (code_, headers, text) = request(&admin, "GET", "/metrics");
    assert_eq!(code_, 200);
    assert_eq!(headers["content-type"], "text/plain; version=0.0.4; charset=utf-8");
    let samples = parse_exposition(&text);

    assert_eq!(requests(&samples, "CreateBucket", "200"), 1.0);
    assert_eq!(requests(&samples, "CreateMultipartUpload", "200"), 2.0);
    assert_eq!(requests(&samples, "UploadPart", "200"), 1.0);
    assert_eq!(requests(&samples, "ListParts", "404"), 1.0);
    assert_eq!(requests(&samples, "AbortMultipartUpload", "404"), 1.0);
    // A bad signature is refused before s3s resolves the operation.
    assert_eq!(requests(&samples, "unknown", "403"), 1.0);
    let latency = "tessera_s3_request_duration_seconds_count";
    assert_eq!(value(&samples, latency, &[("operation", "CreateMultipartUpload")]), 2.0);
    assert_eq!(value(&samples, latency, &[("operation", "ListParts")]), 1.0);

    assert_eq!(value(&samples, "tessera_buckets", &[]), 1.0);
    assert_eq!(value(&samples, "tessera_uploads_live", &[]), 2.0);
    assert_eq!(value(&samples, "tessera_upload_parts", &[]), 1.0);
    assert_eq!(value(&samples, "tessera_objects", &[]), 0.0);
    assert_eq!(value(&samples, "tessera_engine_poisoned", &[]), 0.0);
    assert!(value(&samples, "tessera_applied_lsn", &[]) >= 4.0, "four transitions at least");
    let batches = value(&samples, "tessera_wal_batches_total", &[]);
    assert!(batches >= 4.0, "each sequential transition is its own batch: {batches}");
    assert_eq!(value(&samples, "tessera_wal_fsync_duration_seconds_count", &[]), batches);
    assert_eq!(value(&samples, "tessera_wal_batch_records_count", &[]), batches);
    assert_eq!(
        value(&samples, "tessera_wal_batch_records_sum", &[]),
        value(&samples, "tessera_wal_records_total", &[])
    );
    assert!(value(&samples, "tessera_wal_fsync_max_seconds", &[]) > 0.0);
    server.stop();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn healthz_answers_ok_and_the_admin_address_is_printed_just_before_the_s3_one() {
    let (_dir, server) = start(&Options::default());
    let admin = server.admin_addr();
    let n = server.banner.len();
    assert_eq!(server.banner[n - 2], format!("admin listening on http://{admin}"));
    assert!(server.banner[n - 1].starts_with("listening on http://"));
    assert!(!admin.ends_with(":0"), "the bound port is printed: {admin}");

    let (code_, _, body) = request(&admin, "GET", "/healthz");
    assert_eq!((code_, body.as_str()), (200, "ok\n"));
    assert_eq!(request(&admin, "GET", "/nothing-here").0, 404);
    let (code_, headers, _) = request(&admin, "POST", "/metrics");
    assert_eq!((code_, headers["allow"].as_str()), (405, "GET"));
    assert_eq!(request(&admin, "GET", "/events?colour=blue").0, 400);
    server.stop();
}

#[test]
fn admin_listen_off_starts_no_admin_listener() {
    let dir = tempfile::tempdir().unwrap();
    let mut child = Command::new(env!("CARGO_BIN_EXE_tessera"))
        .arg("serve")
        .arg("--data")
        .arg(dir.path().join("data"))
        .arg("--listen")
        .arg("127.0.0.1:0")
        .env("TESSERA_ADMIN_LISTEN", "off")
        .env("RUST_LOG", "warn")
        .stdout(Stdio::piped())
        .spawn()
        .unwrap();
    let stdout = BufReader::new(child.stdout.take().unwrap());
    let mut lines = Vec::new();
    for line in stdout.lines() {
        let line = line.unwrap();
        let done = line.starts_with("listening on ");
        lines.push(line);
        if done {
            break;
        }
    }
    child.kill().unwrap();
    child.wait().unwrap();
    assert!(lines.last().unwrap().starts_with("listening on "), "{lines:?}");
    assert!(!lines.iter().any(|l| l.starts_with("admin listening")), "{lines:?}");
}

// ---- Server-Sent Events ----

/// One SSE message.
#[derive(Debug)]
struct Message {
    event: Option<String>,
    id: Option<u64>,
    data: serde_json::Value,
}

/// A raw HTTP/1.0 client of `/events` (HTTP/1.0: the stream comes unchunked and ends when
/// the connection does).
struct Events {
    reader: tokio::io::BufReader<tokio::net::TcpStream>,
}

impl Events {
    /// Connects and reads up to the stream's first message, `ready`, which it returns.
    async fn connect(addr: &str, path: &str, last_event_id: Option<u64>) -> (Events, Message) {
        let mut stream = tokio::net::TcpStream::connect(addr).await.unwrap();
        let resume = last_event_id.map(|id| format!("Last-Event-ID: {id}\r\n")).unwrap_or_default();
        let request = format!("GET {path} HTTP/1.0\r\nHost: {addr}\r\n{resume}\r\n");
        stream.write_all(request.as_bytes()).await.unwrap();
        let mut events = Events { reader: tokio::io::BufReader::new(stream) };
        let status = events.line().await.unwrap();
        assert!(status.starts_with("HTTP/1.0 200"), "{status}");
        let mut content_type = None;
        loop {
            let line = events.line().await.unwrap();
            if line.is_empty() {
                break;
            }
            if let Some(value) = line.to_ascii_lowercase().strip_prefix("content-type: ") {
                content_type = Some(value.to_owned());
            }
        }
        assert_eq!(content_type.as_deref(), Some("text/event-stream"));
        let ready = events.next().await.expect("the ready message");
        assert_eq!(ready.event.as_deref(), Some("ready"), "{ready:?}");
        (events, ready)
    }

    async fn line(&mut self) -> Option<String> {
        let mut line = String::new();
        let read = tokio::time::timeout(EVENT_TIMEOUT, self.reader.read_line(&mut line))
            .await
            .expect("a line within the timeout")
            .unwrap();
        (read > 0).then(|| line.trim_end_matches(['\r', '\n']).to_owned())
    }

    /// The next message (comments skipped), or `None` at the end of the stream.
    async fn next(&mut self) -> Option<Message> {
        let mut message = Message { event: None, id: None, data: serde_json::Value::Null };
        let mut fields = 0;
        loop {
            let line = self.line().await?;
            if line.is_empty() {
                if fields > 0 {
                    return Some(message);
                }
                continue;
            }
            if line.starts_with(':') {
                continue;
            }
            let (field, value) = line.split_once(": ").unwrap();
            match field {
                "event" => message.event = Some(value.to_owned()),
                "id" => message.id = Some(value.parse().unwrap()),
                "data" => message.data = serde_json::from_str(value).unwrap(),
                _ => panic!("unexpected field in {line:?}"),
            }
            fields += 1;
        }
    }

    /// The next `n` transitions (no other message may come between).
    async fn transitions(&mut self, n: usize) -> Vec<Message> {
        let mut out = Vec::new();
        for _ in 0..n {
            let message = self.next().await.expect("a transition");
            assert_eq!(message.event, None, "{message:?}");
            assert_eq!(message.data["lsn"].as_u64(), message.id, "{message:?}");
            out.push(message);
        }
        out
    }

    /// Asserts that nothing comes within `wait`.
    async fn nothing_within(&mut self, wait: Duration) {
        let mut line = String::new();
        let read = tokio::time::timeout(wait, self.reader.read_line(&mut line)).await;
        assert!(read.is_err(), "expected nothing, got {line:?}");
    }
}

/// (op, key) of each message.
fn ops(messages: &[Message]) -> Vec<(String, String)> {
    messages
        .iter()
        .map(|m| {
            let key = m.data["key"].as_str().unwrap_or("").to_owned();
            (m.data["op"].as_str().unwrap().to_owned(), key)
        })
        .collect()
}

fn pairs(expected: &[(&str, &str)]) -> Vec<(String, String)> {
    expected.iter().map(|(op, key)| ((*op).to_owned(), (*key).to_owned())).collect()
}

fn assert_ascending(ids: impl IntoIterator<Item = u64>) {
    let ids: Vec<u64> = ids.into_iter().collect();
    assert!(ids.windows(2).all(|w| w[0] < w[1]), "ids strictly ascending: {ids:?}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn events_stream_the_durable_transitions_of_a_bucket_and_prefix_in_lsn_order() {
    let (_dir, server) = start(&small_parts());
    let admin = server.admin_addr();
    let client = server.client();
    client.create_bucket().bucket("watched").send().await.unwrap();
    client.create_bucket().bucket("other").send().await.unwrap();
    let (mut whole, ready) = Events::connect(&admin, "/events?bucket=watched", None).await;
    let (mut prefixed, _) =
        Events::connect(&admin, "/events?bucket=watched&prefix=in%2F", None).await;
    let applied_at_connect = ready.id.unwrap();
    assert_eq!(ready.data["after_lsn"].as_u64(), Some(applied_at_connect));

    let id = create(&client, "watched", "in/a").await;
    let part = bytes(100, 7);
    upload(&client, "watched", "in/a", &id, 1, &part).await;
    create(&client, "watched", "out/b").await;
    create(&client, "other", "in/c").await;
    client
        .abort_multipart_upload()
        .bucket("watched")
        .key("in/a")
        .upload_id(&id)
        .send()
        .await
        .unwrap();
    client
        .put_object()
        .bucket("watched")
        .key("in/obj")
        .body(ByteStream::from_static(b"hello"))
        .send()
        .await
        .unwrap();

    let seen = prefixed.transitions(4).await;
    assert_eq!(
        ops(&seen),
        pairs(&[
            ("create_upload", "in/a"),
            ("put_part", "in/a"),
            ("abort", "in/a"),
            ("put_object", "in/obj")
        ])
    );
    assert_ascending(seen.iter().map(|m| m.id.unwrap()));
    assert!(seen[0].id.unwrap() > applied_at_connect, "only transitions after the connect");
    for m in &seen {
        assert_eq!(m.data["bucket"], "watched");
        assert_eq!(m.data["outcome"], "ok");
    }
    assert_eq!(seen[0].data["upload_id"], id.as_str());
    assert_eq!(seen[1].data["part_number"], 1);
    assert_eq!(seen[1].data["size_bytes"], 100);
    assert_eq!(seen[1].data["etag"], md5_hex(&part));
    assert_eq!(seen[2].data["upload_id"], id.as_str());
    assert_eq!(seen[3].data["size_bytes"], 5);

    let everything = whole.transitions(5).await;
    assert_eq!(
        ops(&everything),
        pairs(&[
            ("create_upload", "in/a"),
            ("put_part", "in/a"),
            ("create_upload", "out/b"),
            ("abort", "in/a"),
            ("put_object", "in/obj")
        ])
    );
    assert_ascending(everything.iter().map(|m| m.id.unwrap()));
    // The other bucket's upload was made before the abort: had it been sent, it would have
    // come before it. Nothing else is pending either.
    prefixed.nothing_within(Duration::from_millis(300)).await;

    // A stop ends the open streams and does not wait for them.
    let started = Instant::now();
    tokio::task::spawn_blocking(move || server.stop()).await.unwrap();
    assert!(started.elapsed() < Duration::from_secs(10), "stopped in {:?}", started.elapsed());
    assert!(whole.next().await.is_none(), "the stream ends with the server");
    assert!(prefixed.next().await.is_none());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_reconnect_with_last_event_id_replays_exactly_the_missed_transitions_then_goes_live() {
    let (_dir, server) = start(&small_parts());
    let admin = server.admin_addr();
    let client = server.client();
    client.create_bucket().bucket("resume").send().await.unwrap();
    let path = "/events?bucket=resume";
    let (mut first, _) = Events::connect(&admin, path, None).await;
    let id = create(&client, "resume", "big").await;
    let created = first.transitions(1).await;
    let last = created[0].id.unwrap();
    drop(first);

    // Missed while disconnected: four in this bucket, one elsewhere.
    let part1 = bytes(MIN_PART as usize, 1);
    let e1 = upload(&client, "resume", "big", &id, 1, &part1).await;
    let e2 = upload(&client, "resume", "big", &id, 2, &bytes(10, 2)).await;
    let other = create(&client, "resume", "small").await;
    client.create_bucket().bucket("elsewhere").send().await.unwrap();
    client
        .abort_multipart_upload()
        .bucket("resume")
        .key("small")
        .upload_id(&other)
        .send()
        .await
        .unwrap();

    let (mut resumed, ready) = Events::connect(&admin, path, Some(last)).await;
    assert_eq!(ready.id, Some(last), "the stream starts after the last id the client had");
    let missed = resumed.transitions(4).await;
    assert_eq!(
        ops(&missed),
        pairs(&[
            ("put_part", "big"),
            ("put_part", "big"),
            ("create_upload", "small"),
            ("abort", "small")
        ])
    );
    assert_ascending(std::iter::once(last).chain(missed.iter().map(|m| m.id.unwrap())));
    assert_eq!(missed[0].data["part_number"], 1);
    assert_eq!(missed[1].data["part_number"], 2);
    assert_eq!(missed[2].data["upload_id"], other.as_str());
    resumed.nothing_within(Duration::from_millis(300)).await;

    // Then live, once each.
    let parts = CompletedMultipartUpload::builder()
        .parts(CompletedPart::builder().part_number(1).e_tag(&e1).build())
        .parts(CompletedPart::builder().part_number(2).e_tag(&e2).build())
        .build();
    client
        .complete_multipart_upload()
        .bucket("resume")
        .key("big")
        .upload_id(&id)
        .multipart_upload(parts)
        .send()
        .await
        .unwrap();
    let live = resumed.transitions(1).await;
    assert_eq!(ops(&live), pairs(&[("complete", "big")]));
    assert_eq!(live[0].data["size_bytes"], MIN_PART + 10);
    assert!(live[0].id.unwrap() > missed[3].id.unwrap());
    resumed.nothing_within(Duration::from_millis(300)).await;

    // `?after=` resumes the same way (all of it from the journal now).
    let (mut again, ready) = Events::connect(&admin, &format!("{path}&after={last}"), None).await;
    assert_eq!(ready.id, Some(last));
    let replayed = again.transitions(5).await;
    let ids = |ms: &[Message]| ms.iter().map(|m| m.id.unwrap()).collect::<Vec<_>>();
    let mut expected = ids(&missed);
    expected.extend(ids(&live));
    assert_eq!(ids(&replayed), expected);
    again.nothing_within(Duration::from_millis(300)).await;
    server.stop();
}
