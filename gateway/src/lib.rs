//! Tessera's gateway: the S3 HTTP server on the engine (`tessera serve`), built on `s3s`.
//!
//! The server's state lives in the engine alone; this crate turns S3 requests into engine
//! calls and engine errors into S3 errors. Bucket names and keys are data handed to the
//! engine, never file paths.

pub mod admin;
pub mod cli;
pub mod cp;
pub mod keys;
pub mod ops;
pub mod s3;
pub mod serve;
