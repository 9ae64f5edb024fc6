//! `cargo fuzz run -s none cel`: the target `tests/fuzzing` calls `cel::cel`.
#![no_main]

#[path = "../../tests/fuzzing/mod.rs"]
mod fuzzing;

libfuzzer_sys::fuzz_target!(|data: &[u8]| fuzzing::cel::cel(data));
