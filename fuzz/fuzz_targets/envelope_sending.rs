//! `cargo fuzz run -s none envelope_sending`: the target `tests/fuzzing` calls `envelope::envelope_sending`.
#![no_main]

#[path = "../../tests/fuzzing/mod.rs"]
mod fuzzing;

libfuzzer_sys::fuzz_target!(|data: &[u8]| fuzzing::envelope::envelope_sending(data));
