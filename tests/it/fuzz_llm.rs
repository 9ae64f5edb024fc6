//! Fuzz target for LLM answer decoding (chat-completions bodies, event streams cut at any
//! point, JSON found in a model's text), run by bolero: a short random run in `cargo test`,
//! longer with `BOLERO_RANDOM_ITERATIONS` (docs/fuzzing.md). The target is in
//! `tests/fuzzing/llm.rs`, shared with `fuzz/`.

use crate::fuzzing;

use fuzzing::{Run, llm};

#[test]
fn llm_answer_decoding() {
    let run = Run::new("llm_answer_decoding");
    bolero::check!().for_each(|data: &[u8]| run.one(data, llm::answer_decoding));
}
