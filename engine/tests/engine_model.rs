//! A reference model of the engine, written from S3's rules (`/work/shared/S3.md` section 1)
//! and the engine's documented semantics: plain maps of buckets, uploads with their parts, and
//! objects with their part lists, with expiry driven by a manual clock. Random sequences of
//! operations run against a real [`Engine`] on a temporary directory and against the model;
//! every result (the value, or which S3 error) and every listing page must agree. Restarts
//! (drop and reopen), checkpoints (automatic ones too: the threshold is tiny) and compactions
//! are interleaved, and after each of them the whole state is compared, down to the payload
//! store's reference counts.
//!
//! Where S3's text leaves a choice, the model takes the engine's documented one: upload ids are
//! random (the model maps its uploads to the ids the engine returns); ListMultipartUploads
//! orders by key, then initiation time, then id, and an upload-id marker continues after that
//! upload; common prefixes count toward the page size and those at or before a marker were
//! listed already; deleting a missing object is `Ok(false)`; completing again with the same
//! parts returns the same object; a copy by UploadPartCopy of exactly one source part shares
//! its payload; a checkpoint moves inline payloads into the payload store.
//!
//! `TESSERA_MODEL_CASES` sets the number of cases (64 by default, of up to 60 operations);
//! `TESSERA_MODEL_STATS=1` prints how often each operation had each outcome.

#![allow(
    missing_docs,
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::indexing_slicing,
    clippy::panic,
    clippy::cast_possible_truncation
)]

mod model;
