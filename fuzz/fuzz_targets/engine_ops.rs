//! libFuzzer target `engine_ops`: see `fuzz/targets/mod.rs`.
#![no_main]

#[path = "../targets/mod.rs"]
#[allow(dead_code, reason = "each target uses one body of the shared module")]
mod targets;

libfuzzer_sys::fuzz_target!(|data: &[u8]| targets::engine_ops(data));
