//! `cargo fuzz run -s none workflow`: the target `tests/fuzzing` calls `loaders::workflow`.
#![no_main]

#[path = "../../tests/fuzzing/mod.rs"]
mod fuzzing;

libfuzzer_sys::fuzz_target!(|data: &[u8]| fuzzing::loaders::workflow(data));
