//! Tessera's engine. For now: the payload store, where part bytes live in content-addressed
//! segment files ([`payload`]). The multipart state machine is built on it next.

#![cfg_attr(test, allow(clippy::cast_possible_truncation))]

pub mod payload;
