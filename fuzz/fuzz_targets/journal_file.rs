//! `cargo fuzz run -s none journal_file`: the target `tests/fuzzing` calls `journal::file`.
#![no_main]

#[path = "../../tests/fuzzing/mod.rs"]
mod fuzzing;

libfuzzer_sys::fuzz_target!(|data: &[u8]| fuzzing::journal::file(data));
