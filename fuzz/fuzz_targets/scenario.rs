//! `cargo fuzz run -s none scenario`: the target `tests/fuzzing` calls `loaders::scenario`.
#![no_main]

#[path = "../../tests/fuzzing/mod.rs"]
mod fuzzing;

libfuzzer_sys::fuzz_target!(|data: &[u8]| fuzzing::loaders::scenario(data));
