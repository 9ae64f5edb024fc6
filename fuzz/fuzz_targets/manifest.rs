//! `cargo fuzz run -s none manifest`: the target `tests/fuzzing` calls `loaders::manifest`.
#![no_main]

#[path = "../../tests/fuzzing/mod.rs"]
mod fuzzing;

libfuzzer_sys::fuzz_target!(|data: &[u8]| fuzzing::loaders::manifest(data));
