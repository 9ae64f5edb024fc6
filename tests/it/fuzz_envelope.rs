//! Fuzz targets for envelope validation (payloads against the shipped schemas, envelope
//! JSON decoded and checked, envelopes sent through a running runtime), run by bolero: a
//! short random run in `cargo test`, longer with `BOLERO_RANDOM_ITERATIONS`
//! (docs/fuzzing.md). The targets are in `tests/fuzzing/envelope.rs`, shared with `fuzz/`.

use crate::fuzzing;

use fuzzing::{Run, envelope};

#[test]
fn envelope_payload_validation() {
    let run = Run::new("envelope_payload_validation");
    bolero::check!().for_each(|data: &[u8]| run.one(data, envelope::payload_validation));
}

#[test]
fn envelope_decoding() {
    let run = Run::new("envelope_decoding");
    bolero::check!().for_each(|data: &[u8]| run.one(data, envelope::envelope_decoding));
}

#[test]
fn envelope_sending() {
    let run = Run::new("envelope_sending");
    bolero::check!().for_each(|data: &[u8]| run.one(data, envelope::envelope_sending));
}
