//! Fuzz target for CEL conditions (compile, then evaluate against a JSON context), run by
//! bolero: a short random run in `cargo test`, longer with `BOLERO_RANDOM_ITERATIONS`
//! (docs/fuzzing.md). The target is in `tests/fuzzing/cel.rs`, shared with `fuzz/`.

use crate::fuzzing;

use fuzzing::{Run, cel};

/// The stack the target runs on: 2 MiB (a tokio worker's, a test thread's) in release
/// builds. Debug builds spend several times more stack per nested CEL construct (the
/// parser overflows 2 MiB at 16 nested parentheses, see `tests/fuzz_regressions.rs`), so
/// they get more, to keep fuzzing what a release build would accept.
const STACK: usize = if cfg!(debug_assertions) {
    256 << 20
} else {
    2 << 20
};

#[test]
fn cel_compile_and_evaluate() {
    std::thread::Builder::new()
        .name("cel_compile_and_evaluate".into())
        .stack_size(STACK)
        .spawn(|| {
            let run = Run::new("cel_compile_and_evaluate");
            bolero::check!().for_each(|data: &[u8]| run.one(data, cel::cel));
        })
        .expect("spawn the fuzz thread")
        .join()
        .expect("the fuzz run passes");
}
