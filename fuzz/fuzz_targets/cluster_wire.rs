//! `cargo fuzz run -s none cluster_wire`: the target `tests/fuzzing` calls `wire::messages`.
#![no_main]

#[path = "../../tests/fuzzing/mod.rs"]
mod fuzzing;

libfuzzer_sys::fuzz_target!(|data: &[u8]| fuzzing::wire::messages(data));
