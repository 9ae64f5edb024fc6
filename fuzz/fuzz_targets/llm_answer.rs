//! `cargo fuzz run -s none llm_answer`: the target `tests/fuzzing` calls `llm::answer_decoding`.
#![no_main]

#[path = "../../tests/fuzzing/mod.rs"]
mod fuzzing;

libfuzzer_sys::fuzz_target!(|data: &[u8]| fuzzing::llm::answer_decoding(data));
