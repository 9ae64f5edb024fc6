//! Fuzz targets for the file loaders (manifests, workflows, scenarios), run by bolero:
//! a short random run in `cargo test` (about a second each), longer with
//! `BOLERO_RANDOM_ITERATIONS` or `BOLERO_RANDOM_TEST_TIME_MS` (docs/fuzzing.md). The
//! targets themselves are in `tests/fuzzing/`, shared with `fuzz/` (`cargo fuzz`).

use crate::fuzzing;

use fuzzing::{Run, loaders};

#[test]
fn manifest_loader() {
    let run = Run::new("manifest_loader");
    bolero::check!().for_each(|data: &[u8]| run.one(data, loaders::manifest));
}

#[test]
fn workflow_loader() {
    let run = Run::new("workflow_loader");
    bolero::check!().for_each(|data: &[u8]| run.one(data, loaders::workflow));
}

#[test]
fn scenario_loader() {
    let run = Run::new("scenario_loader");
    bolero::check!().for_each(|data: &[u8]| run.one(data, loaders::scenario));
}
