//! `cargo fuzz run -s none envelope_payload`: the target `tests/fuzzing` calls `envelope::payload_validation`.
#![no_main]

#[path = "../../tests/fuzzing/mod.rs"]
mod fuzzing;

libfuzzer_sys::fuzz_target!(|data: &[u8]| fuzzing::envelope::payload_validation(data));
