//! Connections whose request body may still be on its way are closed after an error.
//!
//! A client that sends `Expect: 100-continue` and gets a final answer before `100 Continue`
//! may skip sending the body (RFC 9110 §10.1.1); botocore does, for every UploadPart and
//! PutObject. hyper, though, keeps such a connection open and takes the next request's first
//! bytes for the body it is still owed: that request then arrives cut (`UT /bucket/...`) and
//! fails, as SignatureDoesNotMatch. The same holds for any error answered before the body was
//! read. So an error answer to a request that carries a body closes the connection; errors are
//! rare, and a successful answer has read its body.

use http::header::{CONNECTION, CONTENT_LENGTH, EXPECT, HeaderValue, TRANSFER_ENCODING};
use http::{HeaderMap, Response};

/// Whether a request with these headers carries a body (or announces one).
pub fn has_body(headers: &HeaderMap) -> bool {
    let announced = headers.get(EXPECT).is_some() || headers.get(TRANSFER_ENCODING).is_some();
    let length = headers
        .get(CONTENT_LENGTH)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.trim().parse::<u64>().ok());
    announced || length.is_some_and(|n| n > 0)
}

/// Marks an error answer to a request with a body to close its connection.
pub fn close_after_error<B>(request_had_body: bool, mut response: Response<B>) -> Response<B> {
    let status = response.status();
    if request_had_body && (status.is_client_error() || status.is_server_error()) {
        response.headers_mut().insert(CONNECTION, HeaderValue::from_static("close"));
    }
    response
}

#[cfg(test)]
mod tests {
    use super::*;

    fn headers(pairs: &[(&'static str, &'static str)]) -> HeaderMap {
        pairs.iter().map(|(k, v)| (k.parse().unwrap(), HeaderValue::from_static(v))).collect()
    }

    fn answer(status: u16, had_body: bool) -> Option<HeaderValue> {
        let response = Response::builder().status(status).body(()).unwrap();
        close_after_error(had_body, response).headers().get(CONNECTION).cloned()
    }

    #[test]
    fn errors_to_requests_with_bodies_close_and_nothing_else_does() {
        assert!(has_body(&headers(&[("content-length", "1")])));
        assert!(has_body(&headers(&[("expect", "100-continue"), ("content-length", "0")])));
        assert!(has_body(&headers(&[("transfer-encoding", "chunked")])));
        assert!(!has_body(&headers(&[("content-length", "0")])));
        assert!(!has_body(&headers(&[])));
        assert_eq!(answer(400, true), Some(HeaderValue::from_static("close")));
        assert_eq!(answer(503, true), Some(HeaderValue::from_static("close")));
        assert_eq!(answer(200, true), None);
        assert_eq!(answer(400, false), None);
    }
}
