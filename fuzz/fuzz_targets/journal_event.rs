//! `cargo fuzz run -s none journal_event`: the target `tests/fuzzing` calls `journal::event`.
#![no_main]

#[path = "../../tests/fuzzing/mod.rs"]
mod fuzzing;

libfuzzer_sys::fuzz_target!(|data: &[u8]| fuzzing::journal::event(data));
