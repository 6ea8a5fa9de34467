//! A keep-alive CompleteMultipartUpload's body, made to parse as S3's error when it carries one.
//!
//! s3s 0.14.1 (`http::set_keep_alive_xml_body`, `ops/multipart.rs`) answers 200 at once and
//! sends an XML declaration, then a space every 100 ms while the completion runs, then the
//! outcome. A success comes without a declaration of its own, but an error is serialized by
//! `serialize_error(err, false)` with one, so the body reads
//! `<?xml version="1.0" encoding="UTF-8"?>␣␣␣<?xml version="1.0" encoding="UTF-8"?><Error>…`.
//! XML allows a declaration only at the very start of a document: expat (botocore) and
//! xmlparser (the Rust SDK) refuse the second one, so a client sees a failure without S3's code.
//! [`one_declaration`] wraps that body in [`OneDeclaration`], which drops every declaration that
//! follows the first one before the root element. The body the clients then read,
//! `<?xml …?>␣␣␣<Error><Code>…</Code><Message>…</Message>…</Error>`, is one well-formed document
//! whose root is `<Error>`, which is how botocore and the Rust SDK tell an error inside a 200
//! (whitespace before a declaration would not parse, so the first one stays where s3s put it).
//!
//! The filter holds back at most one declaration's bytes ([`DECLARATION_BYTES_MAX`]) and only
//! while it reads the prolog; from the root element on, frames pass through untouched.
//!
//! `admin::Metered` applies it, because that is where the operation's name is known; `serve`
//! wraps the S3 service in `Metered` whether or not the admin listener runs. The test
//! `s3s_keep_alive_error_comes_out_as_one_document` pins s3s's bytes: once an s3s release stops
//! writing the second declaration it fails, and this module can go.

use std::collections::VecDeque;
use std::mem;
use std::pin::Pin;
use std::task::{Context, Poll, ready};

use bytes::Bytes;
use http::StatusCode;
use hyper::body::{Body, Frame};
use s3s::HttpResponse;

/// The operation whose 200 may be a keep-alive body (s3s's name for it, as the access check
/// records it).
const COMPLETE_MULTIPART_UPLOAD: &str = "CompleteMultipartUpload";

/// Markup that starts like a declaration but runs longer than this is passed on as it is.
/// s3s's declaration, `<?xml version="1.0" encoding="UTF-8"?>`, is 38 bytes.
pub(crate) const DECLARATION_BYTES_MAX: usize = 128;
/// How a declaration starts: these bytes then whitespace (`<?xml-stylesheet` is no declaration).
const DECLARATION_START: &[u8] = b"<?xml";
const DECLARATION_END: &[u8] = b"?>";
const _: () = assert!(DECLARATION_START.len() + 1 + DECLARATION_END.len() <= DECLARATION_BYTES_MAX);

/// `response`, with its body filtered by [`OneDeclaration`] if it is a keep-alive
/// CompleteMultipartUpload: a 200 of `operation` whose length is not known up front (s3s's
/// keep-alive body; an answer given at once has a body of known length, left as it is, so
/// that it keeps its Content-Length).
pub(crate) fn one_declaration(operation: &str, response: HttpResponse) -> HttpResponse {
    let streamed = response.body().size_hint().exact().is_none();
    if operation != COMPLETE_MULTIPART_UPLOAD || response.status() != StatusCode::OK || !streamed {
        return response;
    }
    response.map(|body| s3s::Body::http_body(OneDeclaration::new(body)))
}

/// A body passed through, less every XML declaration after the first one in its prolog (the
/// whitespace and declarations before the first other markup or text).
#[derive(Debug)]
pub(crate) struct OneDeclaration<B> {
    inner: B,
    prolog: Prolog,
    /// Frames decided and not yet returned, all cut from the last inner frame and the held
    /// markup (slices of the inner frame's `Bytes`, not copies): what is buffered here is at
    /// most that frame plus [`DECLARATION_BYTES_MAX`]. It is emptied before the inner body is
    /// polled again.
    ready: VecDeque<Frame<Bytes>>,
    /// The inner body has ended (everything held has been moved to `ready`).
    ended: bool,
}

impl<B> OneDeclaration<B> {
    pub(crate) fn new(inner: B) -> OneDeclaration<B> {
        OneDeclaration {
            inner,
            prolog: Prolog::Between { declared: false },
            ready: VecDeque::new(),
            ended: false,
        }
    }
}

impl<B> Body for OneDeclaration<B>
where
    B: Body<Data = Bytes> + Unpin,
{
    type Data = Bytes;
    type Error = B::Error;

    fn poll_frame(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, B::Error>>> {
        let this = self.get_mut();
        loop {
            if let Some(frame) = this.ready.pop_front() {
                return Poll::Ready(Some(Ok(frame)));
            }
            if this.ended {
                return Poll::Ready(None);
            }
            match ready!(Pin::new(&mut this.inner).poll_frame(cx)) {
                Some(Ok(frame)) => match frame.into_data() {
                    Ok(data) => this.prolog.feed(data, &mut this.ready),
                    Err(other) => {
                        // Trailers end the bytes: whatever is held goes before them.
                        this.prolog.finish(&mut this.ready);
                        this.ready.push_back(other);
                    }
                },
                Some(Err(e)) => return Poll::Ready(Some(Err(e))),
                None => {
                    this.prolog.finish(&mut this.ready);
                    this.ended = true;
                }
            }
        }
    }

    fn is_end_stream(&self) -> bool {
        self.ended && self.ready.is_empty()
    }

    // The size hint stays the default (unknown): a dropped declaration shortens the body.
}

/// Where the filter is in the body.
#[derive(Debug)]
enum Prolog {
    /// Before the root element, between markups: whitespace passes; `declared` once the first
    /// declaration has been passed on.
    Between { declared: bool },
    /// In a markup that may be a declaration: its bytes so far, held until it is decided
    /// (at most [`DECLARATION_BYTES_MAX`]).
    Markup { declared: bool, held: Vec<u8> },
    /// From the root element (or anything not a declaration) on: everything passes.
    Content,
}

/// What the bytes of a markup held so far are.
#[derive(Debug, PartialEq, Eq)]
enum Markup {
    Undecided,
    Declaration,
    Other,
}

impl Prolog {
    /// Moves `chunk`'s bytes that are decided to `ready`, as data frames in order; the bytes
    /// of an undecided markup stay held.
    fn feed(&mut self, chunk: Bytes, ready: &mut VecDeque<Frame<Bytes>>) {
        if let Prolog::Content = self {
            push_data(ready, chunk);
            return;
        }
        // Bytes of `chunk` before `pass_from` have been passed on or held.
        let mut pass_from = 0;
        let mut i = 0;
        while let Some(&byte) = chunk.get(i) {
            match self {
                Prolog::Content => break,
                Prolog::Between { declared } => {
                    if byte == b'<' {
                        push_data(ready, chunk.slice(pass_from..i));
                        let declared = *declared;
                        *self = Prolog::Markup { declared, held: Vec::new() };
                        // The `<` is read again, as the markup's first byte.
                        continue;
                    }
                    if !is_xml_space(byte) {
                        *self = Prolog::Content;
                        break;
                    }
                    i += 1;
                }
                Prolog::Markup { declared, held } => {
                    held.push(byte);
                    i += 1;
                    pass_from = i;
                    match classify(held) {
                        // Invariant: classify decides a markup by DECLARATION_BYTES_MAX bytes,
                        // so an undecided one is shorter (the bound on what is held).
                        Markup::Undecided => debug_assert!(held.len() < DECLARATION_BYTES_MAX),
                        Markup::Declaration => {
                            if !*declared {
                                push_data(ready, Bytes::from(mem::take(held)));
                            }
                            *self = Prolog::Between { declared: true };
                        }
                        Markup::Other => {
                            push_data(ready, Bytes::from(mem::take(held)));
                            *self = Prolog::Content;
                        }
                    }
                }
            }
        }
        push_data(ready, chunk.slice(pass_from..));
    }

    /// The bytes have ended: a markup still undecided is passed on as it came.
    fn finish(&mut self, ready: &mut VecDeque<Frame<Bytes>>) {
        if let Prolog::Markup { held, .. } = self {
            push_data(ready, Bytes::from(mem::take(held)));
        }
        *self = Prolog::Content;
    }
}

fn push_data(ready: &mut VecDeque<Frame<Bytes>>, bytes: Bytes) {
    if !bytes.is_empty() {
        ready.push_back(Frame::data(bytes));
    }
}

/// Decides a markup from its first bytes (each call sees one byte more than the last).
fn classify(held: &[u8]) -> Markup {
    let (head, rest) = held.split_at(held.len().min(DECLARATION_START.len()));
    if !DECLARATION_START.starts_with(head) {
        return Markup::Other;
    }
    match rest.first() {
        None => Markup::Undecided,
        Some(&after) if !is_xml_space(after) => Markup::Other,
        Some(_) if held.ends_with(DECLARATION_END) => Markup::Declaration,
        Some(_) if held.len() >= DECLARATION_BYTES_MAX => Markup::Other,
        Some(_) => Markup::Undecided,
    }
}

/// XML's white space (production 3 of XML 1.0).
fn is_xml_space(byte: u8) -> bool {
    matches!(byte, b' ' | b'\t' | b'\r' | b'\n')
}

#[cfg(test)]
mod tests {
    use std::convert::Infallible;
    use std::time::Duration;

    use futures_util::FutureExt;
    use http::HeaderMap;
    use http_body_util::{BodyExt, StreamBody};
    use proptest::prelude::*;
    use proptest::sample::Index;
    use s3s::dto::{CompleteMultipartUploadInput, CompleteMultipartUploadOutput};
    use s3s::service::S3ServiceBuilder;
    use s3s::{S3, S3Request, S3Response, S3Result, s3_error};

    use super::*;

    const DECL: &str = r#"<?xml version="1.0" encoding="UTF-8"?>"#;
    const ERROR: &str = "<Error><Code>InvalidPart</Code><Message>part 2</Message></Error>";
    const SUCCESS: &str =
        "<CompleteMultipartUploadResult><ETag>\"e-2\"</ETag></CompleteMultipartUploadResult>";

    /// Frames that are all ready at once, as a body.
    type ReadyBody<E> =
        StreamBody<futures_util::stream::Iter<std::vec::IntoIter<Result<Frame<Bytes>, E>>>>;

    /// A body of `frames` (each ready at once).
    fn body_of<E>(frames: Vec<Result<Frame<Bytes>, E>>) -> ReadyBody<E> {
        StreamBody::new(futures_util::stream::iter(frames))
    }

    /// `chunks` through the filter, with the trailers that came out after the bytes (and
    /// checked to be the last frame). The inner body never waits, so neither does the filter.
    fn filtered(chunks: Vec<Vec<u8>>, trailers: Option<HeaderMap>) -> (Vec<u8>, Option<HeaderMap>) {
        let mut frames: Vec<Result<Frame<Bytes>, Infallible>> =
            chunks.into_iter().map(|c| Ok(Frame::data(Bytes::from(c)))).collect();
        if let Some(t) = trailers {
            frames.push(Ok(Frame::trailers(t)));
        }
        let mut body = OneDeclaration::new(body_of(frames));
        let (mut bytes, mut trailers) = (Vec::new(), None);
        while let Some(frame) = body.frame().now_or_never().expect("ready frames, read at once") {
            assert!(trailers.is_none(), "a frame after the trailers");
            match frame.unwrap().into_data() {
                Ok(data) => bytes.extend_from_slice(&data),
                Err(frame) => trailers = Some(frame.into_trailers().unwrap()),
            }
        }
        assert!(body.is_end_stream());
        (bytes, trailers)
    }

    /// What the filter must make of `body`, taken whole and decided without the state machine:
    /// in the prolog (whitespace and declarations up to anything else), every declaration
    /// after the first is dropped; a declaration is `<?xml`, white space, then anything up to
    /// the first `?>`, [`DECLARATION_BYTES_MAX`] bytes at most; the rest passes as it is.
    fn model(body: &[u8]) -> Vec<u8> {
        let space = |b: u8| b" \t\r\n".contains(&b);
        let mut out = Vec::new();
        let mut declared = false;
        let mut rest = body;
        while let Some((&first, after)) = rest.split_first() {
            if space(first) {
                out.push(first);
                rest = after;
                continue;
            }
            let declaration_bytes = rest
                .strip_prefix(b"<?xml")
                .and_then(|r| r.split_first())
                .filter(|&(&b, _)| space(b))
                .and_then(|(_, r)| r.windows(2).position(|w| w == b"?>"))
                .map(|end| "<?xml ".len() + end + "?>".len())
                .filter(|&bytes| bytes <= DECLARATION_BYTES_MAX);
            let Some(bytes) = declaration_bytes else {
                out.extend_from_slice(rest);
                break;
            };
            if !declared {
                out.extend_from_slice(&rest[..bytes]);
            }
            declared = true;
            rest = &rest[bytes..];
        }
        out
    }

    /// `body` cut into pieces at every choice of two cut points.
    fn every_split(body: &[u8]) -> impl Iterator<Item = Vec<Vec<u8>>> + '_ {
        (0..=body.len()).flat_map(move |a| {
            (a..=body.len())
                .map(move |b| vec![body[..a].to_vec(), body[a..b].to_vec(), body[b..].to_vec()])
        })
    }

    fn assert_every_split_gives(body: &str, expected: &str) {
        assert_eq!(String::from_utf8(model(body.as_bytes())).unwrap(), expected, "the model");
        for chunks in every_split(body.as_bytes()) {
            let (got, _) = filtered(chunks.clone(), None);
            assert_eq!(String::from_utf8(got).unwrap(), expected, "chunks: {chunks:?}");
        }
        // And one byte per chunk.
        let bytes = body.bytes().map(|b| vec![b]).collect();
        let (got, _) = filtered(bytes, None);
        assert_eq!(String::from_utf8(got).unwrap(), expected, "one byte per chunk");
    }

    #[test]
    fn a_second_declaration_is_dropped_wherever_the_chunks_split_it() {
        // s3s's keep-alive error: its declaration, spaces, then the error with its own.
        let body = format!("{DECL}   {DECL}{ERROR}");
        assert_every_split_gives(&body, &format!("{DECL}   {ERROR}"));
    }

    #[test]
    fn a_success_and_other_bodies_pass_unchanged() {
        let success = format!("{DECL}  {SUCCESS}");
        for body in [
            success.as_str(),
            DECL,
            "",
            "   ",
            "<Error/>",
            // Starts like a declaration, but is another instruction, or no markup at all.
            "<?xml-stylesheet href=\"s\"?><a/>",
            "<?xml?><a/>",
            "<?xm",
            "<?xml",
            "<?xml ",
            "hello <?xml version=\"1.0\"?>",
        ] {
            assert_every_split_gives(body, body);
        }
        // A declaration inside the content is not the prolog's: it stays.
        let inside = format!("{DECL}<a>{DECL}</a>");
        assert_every_split_gives(&inside, &inside);
        // So does one after a comment (s3s writes none; the prolog ends at any other markup).
        let commented = format!("{DECL}<!-- c -->{DECL}{ERROR}");
        assert_every_split_gives(&commented, &commented);
    }

    #[test]
    fn declarations_after_the_first_are_dropped_however_many() {
        let body = format!("{DECL}\n {DECL}\t{DECL}{ERROR}");
        assert_every_split_gives(&body, &format!("{DECL}\n \t{ERROR}"));
    }

    #[test]
    fn an_overlong_declaration_is_passed_on_not_held() {
        // The longest declaration the filter drops, and one byte longer.
        let longest = format!("<?xml {}?>", "a".repeat(DECLARATION_BYTES_MAX - 8));
        assert_eq!(longest.len(), DECLARATION_BYTES_MAX);
        assert_every_split_gives(&format!("{DECL} {longest}{ERROR}"), &format!("{DECL} {ERROR}"));
        let long = format!("<?xml {}?>", "a".repeat(DECLARATION_BYTES_MAX - 7));
        let body = format!("{DECL} {long}{ERROR}");
        assert_every_split_gives(&body, &body);
        // An unterminated one is released once it reaches the bound, before the body ends.
        let mut prolog = Prolog::Between { declared: true };
        let mut ready = VecDeque::new();
        prolog.feed(Bytes::from(format!("<?xml {}", "a".repeat(4096))), &mut ready);
        assert!(matches!(prolog, Prolog::Content));
        let passed: usize = ready.iter().filter_map(|f| f.data_ref()).map(Bytes::len).sum();
        assert_eq!(passed, 6 + 4096);
    }

    #[test]
    fn held_bytes_go_before_the_trailers() {
        let mut trailers = HeaderMap::new();
        trailers.insert("x-key", http::HeaderValue::from_static("value"));
        let chunks = vec![format!("{DECL} <?xml").into_bytes()];
        let (got, got_trailers) = filtered(chunks, Some(trailers.clone()));
        assert_eq!(String::from_utf8(got).unwrap(), format!("{DECL} <?xml"));
        assert_eq!(got_trailers, Some(trailers));
    }

    #[test]
    fn an_error_of_the_inner_body_is_passed_on() {
        let frames = vec![Ok(Frame::data(Bytes::from(format!("{DECL} <?x")))), Err("reset")];
        let mut body = OneDeclaration::new(body_of(frames));
        let first = body.frame().now_or_never().unwrap().unwrap().unwrap();
        assert_eq!(first.into_data().unwrap(), DECL);
        // The space went with the declaration's frame or its own; the error follows.
        let mut next = body.frame().now_or_never().unwrap().unwrap();
        if let Ok(space) = &next {
            assert_eq!(space.data_ref().map(|d| d.as_ref()), Some(&b" "[..]));
            next = body.frame().now_or_never().unwrap().unwrap();
        }
        assert_eq!(next.unwrap_err(), "reset");
    }

    #[test]
    fn only_a_streamed_complete_multipart_upload_200_is_filtered() {
        let keep_alive = format!("{DECL} {DECL}{ERROR}");
        let response = |status: StatusCode, streamed: bool| {
            let body = if streamed {
                let frame: Result<_, Infallible> = Ok(Frame::data(Bytes::from(keep_alive.clone())));
                s3s::Body::http_body(body_of(vec![frame]))
            } else {
                s3s::Body::from(keep_alive.clone())
            };
            let mut response = HttpResponse::new(body);
            *response.status_mut() = status;
            response
        };
        let text = |response: HttpResponse| {
            let collected = response.into_body().collect().now_or_never().unwrap().unwrap();
            String::from_utf8(collected.to_bytes().to_vec()).unwrap()
        };
        let filtered = one_declaration(COMPLETE_MULTIPART_UPLOAD, response(StatusCode::OK, true));
        assert_eq!(text(filtered), format!("{DECL} {ERROR}"));
        // Another operation, another status, or a body of known length (an answer given at
        // once, which keeps its Content-Length) pass as they are.
        let other = one_declaration("PutObject", response(StatusCode::OK, true));
        assert_eq!(text(other), keep_alive);
        let failed =
            one_declaration(COMPLETE_MULTIPART_UPLOAD, response(StatusCode::BAD_REQUEST, true));
        assert_eq!(text(failed), keep_alive);
        let known = one_declaration(COMPLETE_MULTIPART_UPLOAD, response(StatusCode::OK, false));
        assert_eq!(known.body().size_hint().exact(), Some(keep_alive.len() as u64));
        assert_eq!(text(known), keep_alive);
    }

    #[test]
    fn classify_decides_a_declaration_by_its_start_and_end() {
        assert_eq!(classify(b"<"), Markup::Undecided);
        assert_eq!(classify(b"<?xml"), Markup::Undecided);
        assert_eq!(classify(b"<?xml "), Markup::Undecided);
        assert_eq!(classify(b"<?xml ?>"), Markup::Declaration);
        assert_eq!(classify(b"<?xml-"), Markup::Other);
        assert_eq!(classify(b"<E"), Markup::Other);
    }

    /// A CompleteMultipartUpload whose completion ends after `delay` (s3s then sends
    /// keep-alive spaces every 100 ms) with `outcome`.
    struct SlowCompletion {
        delay: Duration,
        outcome: fn() -> S3Result<CompleteMultipartUploadOutput>,
    }

    #[async_trait::async_trait]
    impl S3 for SlowCompletion {
        async fn complete_multipart_upload(
            &self,
            _req: S3Request<CompleteMultipartUploadInput>,
        ) -> S3Result<S3Response<CompleteMultipartUploadOutput>> {
            let (delay, outcome) = (self.delay, self.outcome);
            Ok(S3Response::new(CompleteMultipartUploadOutput {
                future: Some(Box::pin(async move {
                    tokio::time::sleep(delay).await;
                    outcome()
                })),
                ..Default::default()
            }))
        }
    }

    /// s3s's own answer to a keep-alive CompleteMultipartUpload (no auth: s3s checks none),
    /// its body read whole: `(filtered, as s3s wrote it)`.
    async fn s3s_keep_alive_body(
        outcome: fn() -> S3Result<CompleteMultipartUploadOutput>,
    ) -> (String, String) {
        let xml = "<CompleteMultipartUpload><Part><PartNumber>1</PartNumber>\
                   <ETag>\"e\"</ETag></Part></CompleteMultipartUpload>";
        let mut bodies = Vec::new();
        for filter in [true, false] {
            let service = S3ServiceBuilder::new(SlowCompletion {
                delay: Duration::from_millis(250),
                outcome,
            })
            .build();
            let request = http::Request::builder()
                .method("POST")
                .uri("/bucket/key?uploadId=u")
                .header("host", "localhost")
                .header("content-length", xml.len())
                .body(s3s::Body::from(xml.to_owned()))
                .unwrap();
            let response = service.call(request).await.unwrap();
            assert_eq!(response.status(), StatusCode::OK);
            let response = if filter {
                one_declaration(COMPLETE_MULTIPART_UPLOAD, response)
            } else {
                response
            };
            let bytes = response.into_body().collect().await.unwrap().to_bytes();
            bodies.push(String::from_utf8(bytes.to_vec()).unwrap());
        }
        let raw = bodies.pop().unwrap();
        (bodies.pop().unwrap(), raw)
    }

    #[tokio::test]
    async fn s3s_keep_alive_error_comes_out_as_one_document() {
        let (body, raw) =
            s3s_keep_alive_body(|| Err(s3_error!(InvalidPart, "part 2 is not there"))).await;
        // s3s 0.14.1 writes the error with a declaration of its own after the spaces. When a
        // release stops doing so this fails: the filter may then go (docs/design.md).
        let after_spaces = raw.strip_prefix(DECL).unwrap().trim_start_matches(' ');
        assert!(after_spaces.starts_with(DECL), "{raw}");
        assert!(raw.len() > after_spaces.len() + DECL.len(), "keep-alive spaces: {raw}");
        // Filtered: the first declaration, the spaces, then the error as the root element.
        assert_eq!(body.matches("<?xml").count(), 1, "{body}");
        let root = body.strip_prefix(DECL).unwrap().trim_start_matches(' ');
        assert!(root.starts_with("<Error><Code>InvalidPart</Code>"), "{body}");
        assert_eq!(body.as_bytes(), model(raw.as_bytes()));
    }

    #[tokio::test]
    async fn s3s_keep_alive_success_passes_unchanged() {
        let (body, raw) = s3s_keep_alive_body(|| {
            Ok(CompleteMultipartUploadOutput {
                e_tag: Some(s3s::dto::ETag::Strong("e-1".into())),
                ..Default::default()
            })
        })
        .await;
        assert_eq!(body, raw);
        let root = body.strip_prefix(DECL).unwrap().trim_start_matches(' ');
        assert!(root.starts_with("<CompleteMultipartUploadResult"), "{body}");
    }

    /// Pieces of bodies: s3s's declaration, others, whitespace, markup that starts like a
    /// declaration and is none, declarations about the length bound, roots, any bytes.
    fn piece() -> impl Strategy<Value = Vec<u8>> {
        let text = |s: &[&'static str]| {
            prop::sample::select(s.to_vec()).prop_map(|s: &str| s.as_bytes().to_vec())
        };
        prop_oneof![
            4 => Just(DECL.as_bytes().to_vec()),
            4 => text(&[" ", "  ", "\n", "\t", "\r\n"]),
            1 => text(&["<?xml version='1.0'?>", "<?xml\tversion=\"1.0\"\n?>", "<?xml ?>"]),
            2 => text(&["<", "<?", "<?xm", "<?xml", "<?xml ", "<?xml?>", "?>", "<?xml-s?>"]),
            1 => text(&["<!-- -->", "<?xmlns ?>"]),
            1 => (DECLARATION_BYTES_MAX - 2..=DECLARATION_BYTES_MAX + 1)
                .prop_map(|bytes| format!("<?xml {}?>", "a".repeat(bytes - 8)).into_bytes()),
            2 => text(&[ERROR, SUCCESS, "<a/>", "x"]),
            1 => prop::collection::vec(any::<u8>(), 0..8),
        ]
    }

    /// A body of pieces and the points it is cut at into frames (empty frames included).
    fn cut_body() -> impl Strategy<Value = (Vec<u8>, Vec<Vec<u8>>)> {
        (prop::collection::vec(piece(), 0..12), prop::collection::vec(any::<Index>(), 0..8))
            .prop_map(|(pieces, cuts)| {
                let body = pieces.concat();
                let mut at: Vec<usize> = cuts.iter().map(|i| i.index(body.len() + 1)).collect();
                at.sort_unstable();
                let mut chunks = Vec::new();
                let mut from = 0;
                for to in at.into_iter().chain([body.len()]) {
                    chunks.push(body[from..to].to_vec());
                    from = to;
                }
                (body, chunks)
            })
    }

    proptest! {
        /// However a body is cut into frames, the filter gives what the model makes of it
        /// whole, and trailers come out last, unchanged.
        #[test]
        fn any_split_gives_what_the_model_gives((body, chunks) in cut_body(), with_trailers: bool) {
            let trailers = with_trailers.then(|| {
                let mut t = HeaderMap::new();
                t.insert("x-amz-checksum-crc32", http::HeaderValue::from_static("AAAAAA=="));
                t
            });
            let (got, got_trailers) = filtered(chunks.clone(), trailers.clone());
            prop_assert_eq!(got, model(&body), "chunks: {:?}", chunks);
            prop_assert_eq!(got_trailers, trailers);
        }

        /// After every frame, what has been passed on is a prefix of the final output and
        /// what is held is at most DECLARATION_BYTES_MAX: the filter never buffers a body.
        #[test]
        fn what_is_held_stays_bounded((body, chunks) in cut_body()) {
            let expected = model(&body);
            let mut prolog = Prolog::Between { declared: false };
            let mut out = Vec::new();
            for chunk in chunks {
                let mut ready = VecDeque::new();
                prolog.feed(Bytes::from(chunk), &mut ready);
                for frame in ready {
                    out.extend_from_slice(&frame.into_data().unwrap());
                }
                let held = match &prolog {
                    Prolog::Markup { held, .. } => held.len(),
                    Prolog::Between { .. } | Prolog::Content => 0,
                };
                prop_assert!(held < DECLARATION_BYTES_MAX, "held {}", held);
                prop_assert!(expected.starts_with(&out), "{:?} is not a prefix", out);
            }
        }
    }
}
