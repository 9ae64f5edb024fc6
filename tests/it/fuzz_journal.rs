//! Fuzz targets for journal records (an `events.body` decoded to an `Event`, directly and
//! through `read_journal` on a file), run by bolero: a short random run in `cargo test`,
//! longer with `BOLERO_RANDOM_ITERATIONS` (docs/fuzzing.md). The targets are in
//! `tests/fuzzing/journal.rs`, shared with `fuzz/`.

use crate::fuzzing;

use fuzzing::{Run, journal};

#[test]
fn journal_event_decoding() {
    let run = Run::new("journal_event_decoding");
    bolero::check!().for_each(|data: &[u8]| run.one(data, journal::event));
}

#[test]
fn journal_file_reading() {
    let run = Run::new("journal_file_reading");
    bolero::check!().for_each(|data: &[u8]| run.one(data, journal::file));
}
