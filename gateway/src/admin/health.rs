//! `GET /healthz`: 200 `ok` while the engine takes writes; 503 with the reason once a failed
//! write or fsync has poisoned it (reads go on; only a restart, which recovers from disk,
//! clears it).
//!
//! The admin listener starts only after the engine has opened (recovered), so "open" needs no
//! check of its own.

use http::{Response, StatusCode};
use tessera_engine::AsyncEngine;

use super::{AdminBody, text};

pub(super) fn check(engine: &AsyncEngine) -> Response<AdminBody> {
    match engine.engine().poisoned() {
        None => text(StatusCode::OK, "ok\n"),
        Some(reason) => text(
            StatusCode::SERVICE_UNAVAILABLE,
            format!("poisoned: {reason} (writes fail until the server restarts)\n"),
        ),
    }
}
