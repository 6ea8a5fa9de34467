//! `GET /events`: the engine's committed transitions as Server-Sent Events, oldest first.
//!
//! Query parameters `bucket` and `prefix` (of the key) filter them. Each transition is one
//! message: `id: <lsn>` and a `data:` line holding the journal's JSON object for it
//! (`Entry::to_json_line`: lsn, time_ms, actor, op, bucket, key, upload_id, part_number,
//! size_bytes, etag, outcome). Only durable transitions are sent: the engine publishes an
//! event once its record is durable and applied.
//!
//! Three other messages, each with an `event:` name:
//! - `ready` opens every stream: `id:` is the LSN the stream starts after, so a client that
//!   drops before any transition still resumes without a gap.
//! - `gap`: history the stream cannot replay (more than [`REPLAY_ENTRIES_MAX`] transitions, or
//!   no journal): `{"after_lsn":A,"before_lsn":B,"reason":...}`, transitions with
//!   A < lsn < B may be missing.
//! - `lagged`: the subscriber fell behind the engine's event buffer and transitions were
//!   dropped for it: `{"last_lsn":L,"skipped":N}` with `id: L`, the last LSN delivered. The
//!   stream ends there; reconnecting with `Last-Event-ID: L` (an EventSource does so by
//!   itself) resumes.
//!
//! Resuming: a request with a `Last-Event-ID` header (or `?after=LSN`) first replays the
//! matching history after that LSN from the journal, then goes on live. It subscribes before
//! it reads the journal, and the engine stages a transition's journal entry and publishes its
//! event in one critical section, so every transition is in the history read or in the
//! subscription (or both: those are sent once, by LSN).

use std::collections::VecDeque;
use std::time::Duration;

use bytes::Bytes;
use http::header::{CACHE_CONTROL, CONTENT_TYPE, HeaderValue};
use http::{Request, Response, StatusCode};
use http_body_util::{BodyExt, StreamBody};
use hyper::body::{Frame, Incoming};
use tessera_engine::SubscriptionError;
use tessera_engine::journal::{Entry, JournalEtag, Operation, Query};
use tessera_engine::{AbortReason, AsyncEngine, Engine, Event, EventKind, Subscription};
use tokio::sync::watch;

use super::{AdminBody, AdminState, text, until_stopped};

/// How often an idle stream sends a comment, so that a client gone away is noticed.
const KEEP_ALIVE_INTERVAL: Duration = Duration::from_secs(15);
/// Entries of the first history query of a resume; each next one asks for twice as many.
const REPLAY_QUERY_ENTRIES_FIRST: usize = 256;
/// The most transitions a resume replays (the newest of them if more match: a `gap` says so).
pub(crate) const REPLAY_ENTRIES_MAX: usize = 16_384;
const _: () = assert!(REPLAY_QUERY_ENTRIES_FIRST <= REPLAY_ENTRIES_MAX);

/// The stream's parameters.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
struct Params {
    bucket: Option<String>,
    prefix: Option<String>,
    /// Resume after this LSN (`Last-Event-ID`, else `?after=`).
    after: Option<u64>,
}

pub(super) async fn stream(state: &AdminState, request: &Request<Incoming>) -> Response<AdminBody> {
    let params = match params(request) {
        Ok(params) => params,
        Err(reason) => return text(StatusCode::BAD_REQUEST, format!("{reason}\n")),
    };
    let filter = Query { bucket: params.bucket, key_prefix: params.prefix, ..Query::default() };
    let feed = Feed::open(state.engine.clone(), filter, params.after, state.stopping.clone()).await;
    let frames = futures_util::stream::unfold(feed, |mut feed| async move {
        let message = feed.next().await?;
        Some((Ok(Frame::data(message)), feed))
    });
    let mut response = Response::new(StreamBody::new(frames).boxed_unsync());
    let headers = response.headers_mut();
    headers.insert(CONTENT_TYPE, HeaderValue::from_static("text/event-stream"));
    headers.insert(CACHE_CONTROL, HeaderValue::from_static("no-cache"));
    response
}

fn params(request: &Request<Incoming>) -> Result<Params, String> {
    let mut params = Params::default();
    for pair in request.uri().query().unwrap_or("").split('&').filter(|p| !p.is_empty()) {
        let (name, value) = pair.split_once('=').unwrap_or((pair, ""));
        // Form encoding: `+` is a space (a `+` itself comes as %2B).
        let value = percent_encoding::percent_decode_str(&value.replace('+', " "))
            .decode_utf8()
            .map_err(|_| format!("the value of {name:?} is not UTF-8"))?
            .into_owned();
        match name {
            "bucket" => params.bucket = Some(value),
            "prefix" => params.prefix = Some(value),
            "after" => params.after = Some(lsn(&value, "after")?),
            _ => return Err(format!("unknown parameter {name:?} (bucket, prefix, after)")),
        }
    }
    if let Some(last) = request.headers().get("last-event-id") {
        let last = last.to_str().map_err(|_| "Last-Event-ID is not text".to_owned())?;
        // The header wins: an EventSource reconnects with the URL it started with.
        params.after = Some(lsn(last.trim(), "Last-Event-ID")?);
    }
    Ok(params)
}

fn lsn(value: &str, what: &str) -> Result<u64, String> {
    value.parse().map_err(|_| format!("{what} must be an LSN (a whole number), not {value:?}"))
}

/// One stream's state.
struct Feed {
    /// Messages ready to go: `ready`, a `gap`, the replayed history.
    pending: VecDeque<Bytes>,
    subscription: Subscription,
    filter: Query,
    /// The last LSN delivered (the start point before any): live events up to it are
    /// duplicates of replayed history, or older than the stream.
    last_lsn: u64,
    stopping: watch::Receiver<bool>,
    ended: bool,
}

impl Feed {
    /// A stream of the transitions matching `filter`: those after `after` if given (the
    /// history first), else those from now on.
    async fn open(
        engine: AsyncEngine,
        filter: Query,
        after: Option<u64>,
        stopping: watch::Receiver<bool>,
    ) -> Feed {
        // Subscribed before anything is read: every later transition reaches the stream.
        let subscription = engine.engine().subscribe();
        let applied_lsn = engine.engine().stats().applied_lsn;
        let start_lsn = after.unwrap_or(applied_lsn);
        let mut pending = VecDeque::new();
        pending.push_back(message(
            Some("ready"),
            Some(start_lsn),
            &serde_json::json!({ "after_lsn": start_lsn }).to_string(),
        ));
        let mut last_lsn = start_lsn;
        if start_lsn < applied_lsn {
            let query = filter.clone();
            let replay = engine
                .call(move |engine| {
                    Ok(history_after(engine, &query, start_lsn, applied_lsn, REPLAY_ENTRIES_MAX))
                })
                .await
                .unwrap_or_else(|e| Replay {
                    entries: Vec::new(),
                    gap: Some(Gap {
                        before_lsn: applied_lsn + 1,
                        reason: format!("the history could not be read: {e}"),
                    }),
                });
            if let Some(gap) = replay.gap {
                let data = serde_json::json!({
                    "after_lsn": start_lsn,
                    "before_lsn": gap.before_lsn,
                    "reason": gap.reason,
                });
                pending.push_back(message(Some("gap"), None, &data.to_string()));
            }
            for entry in replay.entries {
                last_lsn = last_lsn.max(entry.lsn);
                pending.push_back(message(None, Some(entry.lsn), &entry.to_json_line()));
            }
        }
        Feed { pending, subscription, filter, last_lsn, stopping, ended: false }
    }

    /// The next message, or `None` when the stream ends.
    async fn next(&mut self) -> Option<Bytes> {
        if let Some(message) = self.pending.pop_front() {
            return Some(message);
        }
        if self.ended {
            return None;
        }
        loop {
            tokio::select! {
                biased;
                () = until_stopped(&mut self.stopping) => {
                    self.ended = true;
                    return None;
                }
                received = self.subscription.recv_async() => match received {
                    Ok(event) => {
                        if event.lsn <= self.last_lsn {
                            continue;
                        }
                        let Some(entry) = entry_of(&event) else { continue };
                        if !self.filter.matches(&entry) {
                            continue;
                        }
                        self.last_lsn = entry.lsn;
                        return Some(message(None, Some(entry.lsn), &entry.to_json_line()));
                    }
                    Err(SubscriptionError::Lagged(skipped)) => {
                        self.ended = true;
                        tracing::info!(last_lsn = self.last_lsn, skipped, "an event stream lagged");
                        let data = serde_json::json!({
                            "last_lsn": self.last_lsn,
                            "skipped": skipped,
                        });
                        return Some(message(Some("lagged"), Some(self.last_lsn), &data.to_string()));
                    }
                    Err(SubscriptionError::Closed) => {
                        self.ended = true;
                        return None;
                    }
                },
                () = tokio::time::sleep(KEEP_ALIVE_INTERVAL) => {
                    return Some(Bytes::from_static(b": keep-alive\n\n"));
                }
            }
        }
    }
}

/// One SSE message (`data` holds no line break: it is compact JSON).
fn message(event: Option<&str>, id: Option<u64>, data: &str) -> Bytes {
    debug_assert!(!data.contains('\n'));
    let mut text = String::with_capacity(data.len() + 48);
    if let Some(event) = event {
        text.push_str("event: ");
        text.push_str(event);
        text.push('\n');
    }
    if let Some(id) = id {
        text.push_str("id: ");
        text.push_str(&id.to_string());
        text.push('\n');
    }
    text.push_str("data: ");
    text.push_str(data);
    text.push_str("\n\n");
    Bytes::from(text)
}

/// History a resume replays.
#[derive(Debug)]
struct Replay {
    /// Oldest first.
    entries: Vec<Entry>,
    gap: Option<Gap>,
}

/// History a resume cannot replay: after its start, before `before_lsn`.
#[derive(Debug)]
struct Gap {
    before_lsn: u64,
    reason: String,
}

/// The journal's entries matching `filter` with LSNs after `after_lsn`, oldest first: the
/// newest `entries_max` of them at most. Asks for the newest entries, twice as many each time,
/// until it reaches `after_lsn`, so a resume reads about what it missed rather than the whole
/// journal.
fn history_after(
    engine: &Engine,
    filter: &Query,
    after_lsn: u64,
    applied_lsn: u64,
    entries_max: usize,
) -> Replay {
    let journal = match (engine.journal(), engine.journal_fault()) {
        (Some(journal), None) => journal,
        (_, Some(fault)) => {
            let gap = Gap { before_lsn: applied_lsn + 1, reason: fault };
            return Replay { entries: Vec::new(), gap: Some(gap) };
        }
        (None, None) => {
            let reason = "the engine keeps no journal".to_owned();
            let gap = Gap { before_lsn: applied_lsn + 1, reason };
            return Replay { entries: Vec::new(), gap: Some(gap) };
        }
    };
    let mut limit = REPLAY_QUERY_ENTRIES_FIRST.min(entries_max);
    loop {
        // One more than wanted: finding it tells "exactly `limit` missed" from "more".
        let asked = limit.saturating_add(1);
        let query = Query { newest_first: true, limit: Some(asked), ..filter.clone() };
        let result = journal.query(&query);
        for warning in &result.warnings {
            tracing::warn!(%warning, "damaged journal: a replay skipped the entries behind it");
        }
        let reached =
            result.entries.len() < asked || result.entries.iter().any(|e| e.lsn <= after_lsn);
        if reached || limit >= entries_max {
            let mut entries: Vec<Entry> =
                result.entries.into_iter().filter(|e| e.lsn > after_lsn).collect();
            entries.sort_by_key(|e| e.lsn);
            let newest = entries.split_off(entries.len().saturating_sub(entries_max));
            let gap = (!reached).then(|| Gap {
                before_lsn: newest.first().map_or(applied_lsn + 1, |e| e.lsn),
                reason: format!(
                    "more than {entries_max} transitions to replay; \
                     `tessera journal` has the rest"
                ),
            });
            return Replay { entries: newest, gap };
        }
        limit = limit.saturating_mul(2).min(entries_max);
    }
}

/// The journal's view of a live event (`None` for compaction's moves, which are not history).
fn entry_of(event: &Event) -> Option<Entry> {
    let op = match event.kind {
        EventKind::CreateBucket => Operation::CreateBucket,
        EventKind::DeleteBucket => Operation::DeleteBucket,
        EventKind::SetLifecycle => Operation::SetLifecycle,
        EventKind::CreateUpload => Operation::CreateUpload,
        EventKind::PutPart => Operation::PutPart,
        EventKind::CopyPart => Operation::CopyPart,
        EventKind::Complete => Operation::Complete,
        EventKind::Abort(AbortReason::Aborted) => Operation::Abort,
        EventKind::Abort(AbortReason::Expired) => Operation::Expire,
        EventKind::PutObject => Operation::PutObject,
        EventKind::CopyObject => Operation::CopyObject,
        EventKind::DeleteObject => Operation::DeleteObject,
        EventKind::Compaction => return None,
    };
    Some(Entry {
        lsn: event.lsn,
        time_ms: event.time_ms,
        actor: event.actor.clone(),
        op,
        bucket: event.bucket.clone(),
        key: event.key.clone(),
        upload_id: event.upload_id.map(|id| id.0),
        part_number: event.part_number,
        size_bytes: event.size_bytes,
        etag: event.etag.map(|e| JournalEtag { md5: e.md5, parts: e.parts }),
        error: event.error.map(str::to_owned),
    })
}

#[cfg(test)]
mod tests {
    use std::sync::Arc;

    use tessera_engine::EngineConfig;

    use super::*;

    fn engine(dir: &std::path::Path, events_capacity: usize) -> AsyncEngine {
        let config = EngineConfig { events_capacity, ..EngineConfig::default() };
        AsyncEngine::new(Arc::new(Engine::open(dir, config).unwrap()))
    }

    /// A message's event name, id and data.
    fn parse(message: &Bytes) -> (Option<String>, Option<u64>, serde_json::Value) {
        let text = std::str::from_utf8(message).unwrap();
        assert!(text.ends_with("\n\n"), "{text:?}");
        let (mut event, mut id, mut data) = (None, None, serde_json::Value::Null);
        for line in text.lines().filter(|l| !l.is_empty()) {
            let (field, value) = line.split_once(": ").unwrap();
            match field {
                "event" => event = Some(value.to_owned()),
                "id" => id = Some(value.parse().unwrap()),
                "data" => data = serde_json::from_str(value).unwrap(),
                _ => panic!("unexpected line {line:?}"),
            }
        }
        (event, id, data)
    }

    fn create_buckets(engine: &AsyncEngine, names: impl IntoIterator<Item = String>) {
        for name in names {
            engine.engine().create_bucket("tester", &name).unwrap();
        }
    }

    #[tokio::test]
    async fn a_lagging_subscriber_is_told_its_last_lsn_and_resumes_from_the_journal_without_gaps() {
        let dir = tempfile::tempdir().unwrap();
        let engine = engine(dir.path(), 4);
        let (_stop, stopping) = watch::channel(false);
        create_buckets(&engine, ["first".to_owned()]);
        let start = engine.engine().stats().applied_lsn;

        let mut feed = Feed::open(engine.clone(), Query::default(), None, stopping.clone()).await;
        let (event, id, data) = parse(&feed.next().await.unwrap());
        assert_eq!((event.as_deref(), id), (Some("ready"), Some(start)));
        assert_eq!(data["after_lsn"], start);
        // Ten transitions while the subscriber reads nothing: more than its buffer of four.
        create_buckets(&engine, (0..10).map(|i| format!("bucket-{i}")));
        let (event, id, data) = parse(&feed.next().await.unwrap());
        assert_eq!((event.as_deref(), id), (Some("lagged"), Some(start)));
        assert_eq!(data["last_lsn"], start);
        assert!(data["skipped"].as_u64().unwrap() > 0, "{data}");
        assert!(feed.next().await.is_none(), "a lagged stream ends");

        // Resuming from the last LSN delivered replays the ten, then goes on live.
        let mut resumed =
            Feed::open(engine.clone(), Query::default(), Some(start), stopping.clone()).await;
        let (event, id, _) = parse(&resumed.next().await.unwrap());
        assert_eq!((event.as_deref(), id), (Some("ready"), Some(start)));
        for i in 0..10u64 {
            let (event, id, data) = parse(&resumed.next().await.unwrap());
            assert_eq!((event, id), (None, Some(start + 1 + i)));
            assert_eq!(data["op"], "create_bucket");
            assert_eq!(data["bucket"], format!("bucket-{i}"));
            assert_eq!(data["outcome"], "ok");
        }
        create_buckets(&engine, ["live".to_owned()]);
        let (event, id, data) = parse(&resumed.next().await.unwrap());
        assert_eq!((event, id), (None, Some(start + 11)));
        assert_eq!(data["bucket"], "live");
    }

    #[tokio::test]
    async fn a_filtered_stream_carries_only_its_bucket_and_a_stop_ends_it() {
        let dir = tempfile::tempdir().unwrap();
        let engine = engine(dir.path(), 64);
        let (stop, stopping) = watch::channel(false);
        let filter = Query { bucket: Some("bucket-1".to_owned()), ..Query::default() };
        let mut feed = Feed::open(engine.clone(), filter, None, stopping).await;
        assert_eq!(parse(&feed.next().await.unwrap()).0.as_deref(), Some("ready"));
        create_buckets(&engine, ["bucket-0", "bucket-1", "bucket-2"].map(str::to_owned));
        let (_, _, data) = parse(&feed.next().await.unwrap());
        assert_eq!(data["bucket"], "bucket-1");
        stop.send(true).unwrap();
        assert!(feed.next().await.is_none(), "a stop ends the stream");
    }

    #[test]
    fn a_replay_longer_than_its_limit_keeps_the_newest_and_names_the_gap() {
        let dir = tempfile::tempdir().unwrap();
        let engine = engine(dir.path(), 64);
        create_buckets(&engine, (0..10).map(|i| format!("bucket-{i}")));
        let applied = engine.engine().stats().applied_lsn;
        let replay = history_after(engine.engine(), &Query::default(), 2, applied, 3);
        let lsns: Vec<u64> = replay.entries.iter().map(|e| e.lsn).collect();
        assert_eq!(lsns, [applied - 2, applied - 1, applied]);
        let gap = replay.gap.unwrap();
        assert_eq!(gap.before_lsn, applied - 2);

        let replay = history_after(engine.engine(), &Query::default(), applied - 3, applied, 3);
        assert_eq!(replay.entries.len(), 3);
        assert!(replay.gap.is_none(), "exactly the limit missed: no gap");
    }
}
