//! `cargo fuzz run -s none http_request`: the target `tests/fuzzing` calls `http::request`.
#![no_main]

#[path = "../../tests/fuzzing/mod.rs"]
mod fuzzing;

libfuzzer_sys::fuzz_target!(|data: &[u8]| fuzzing::http::request(data));
