//! `cargo fuzz run -s none envelope_decoding`: the target `tests/fuzzing` calls `envelope::envelope_decoding`.
#![no_main]

#[path = "../../tests/fuzzing/mod.rs"]
mod fuzzing;

libfuzzer_sys::fuzz_target!(|data: &[u8]| fuzzing::envelope::envelope_decoding(data));
