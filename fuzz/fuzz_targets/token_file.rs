//! `cargo fuzz run -s none token_file`: the target `tests/fuzzing` calls `http::token_file`.
#![no_main]

#[path = "../../tests/fuzzing/mod.rs"]
mod fuzzing;

libfuzzer_sys::fuzz_target!(|data: &[u8]| fuzzing::http::token_file(data));
