//! Engine errors as S3 errors: the engine names S3's code and HTTP status for each of its
//! errors; this is the one place they become `S3Error`s.

use s3s::{S3Error, S3ErrorCode};
use tessera_engine::EngineError;

/// The S3 error for an engine error: its code and status as the engine names them. Internal
/// failures are logged here with their detail and reach the client without it (file paths
/// and offsets are the operator's business).
pub(crate) fn engine_error(e: EngineError) -> S3Error {
    let code =
        S3ErrorCode::from_bytes(e.s3_code().as_bytes()).unwrap_or(S3ErrorCode::InternalError);
    let status = http::StatusCode::from_u16(e.http_status())
        .unwrap_or(http::StatusCode::INTERNAL_SERVER_ERROR);
    let message = if status.is_server_error() {
        tracing::error!(error = %e, code = e.s3_code(), "engine failure");
        match code {
            S3ErrorCode::ServiceUnavailable => {
                "the store refuses writes after a failed write or sync; restart the server"
                    .to_owned()
            }
            _ => "internal error; the server log has the detail".to_owned(),
        }
    } else {
        e.to_string()
    };
    let mut error = S3Error::with_message(code, message);
    error.set_status_code(status);
    error
}

/// An S3 error with a code, a status and a message (for the gateway's own checks).
pub(crate) fn s3_error(code: S3ErrorCode, status: u16, message: impl Into<String>) -> S3Error {
    let mut error = S3Error::with_message(code, message.into());
    if let Ok(status) = http::StatusCode::from_u16(status) {
        error.set_status_code(status);
    }
    error
}

/// 400 InvalidArgument.
pub(crate) fn invalid_argument(message: impl Into<String>) -> S3Error {
    s3_error(S3ErrorCode::InvalidArgument, 400, message)
}

/// 400 InvalidRequest.
pub(crate) fn invalid_request(message: impl Into<String>) -> S3Error {
    s3_error(S3ErrorCode::InvalidRequest, 400, message)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn engine_codes_and_statuses_carry_over() {
        let e = engine_error(EngineError::NoSuchUpload { upload_id: "x".into() });
        assert_eq!(e.code(), &S3ErrorCode::NoSuchUpload);
        assert_eq!(e.status_code(), Some(http::StatusCode::NOT_FOUND));
        let e = engine_error(EngineError::EntityTooSmall {
            part_number: 1,
            size_bytes: 1,
            min_bytes: 5,
        });
        assert_eq!(e.code(), &S3ErrorCode::EntityTooSmall);
        assert_eq!(e.status_code(), Some(http::StatusCode::BAD_REQUEST));
        let e = engine_error(EngineError::KeyTooLong { bytes: 2000, max_bytes: 1024 });
        assert_eq!(e.code(), &S3ErrorCode::KeyTooLongError);
        let e = engine_error(EngineError::VersionMismatch { expected: 1, actual: 2 });
        assert_eq!(e.status_code(), Some(http::StatusCode::PRECONDITION_FAILED));
        let e = engine_error(EngineError::InvalidRange { first: 9, last: 10, len: 3 });
        assert_eq!(e.code(), &S3ErrorCode::InvalidRange);
        assert_eq!(e.status_code(), Some(http::StatusCode::RANGE_NOT_SATISFIABLE));
    }

    #[test]
    fn internal_errors_hide_their_detail() {
        let e = engine_error(EngineError::Io {
            path: "/secret/path".into(),
            op: "open",
            source: std::io::Error::other("boom"),
        });
        assert_eq!(e.code(), &S3ErrorCode::InternalError);
        assert!(!e.message().unwrap_or_default().contains("/secret/path"));
    }
}
