//! Harnesses shared by the cargo-fuzz targets (`proto/fuzz/`, and
//! `agent/fuzz/` for the agent's state machines) and the bounded fuzzing in
//! the normal test suite. Not part of the protocol: built only with the
//! `fuzz` feature (and for this crate's own tests), hidden from the docs,
//! and every function here panics (on purpose) when an invariant of the
//! protocol code does not hold, which is what a fuzzer looks for.
//!
//! - [`Source`]: where the randomness comes from: fuzzer bytes ([`Bytes`]) or
//!   a seeded generator ([`Rng`]), so one generator serves both.
//! - [`arbitrary_message`]: a structurally valid [`Message`] of any kind.
//! - [`check_frame_decode`], [`check_message_decode`], [`check_path`]: the
//!   properties of the decoders and validators on arbitrary bytes.
//! - [`spec_rel_path`]: the path rules of the crate doc, written
//!   independently of [`RelPath::from_bytes`].
//!
//! ## Layout
//!
//! - `generate`: arbitrary paths, names, entries and messages from a [`Source`].
//! - `check`: the properties each fuzz target checks.
//! - `corpus`: the seed corpus kept in the repository ([`seed_corpus`]).
//! - `raw`: hand-encoded frames with any path bytes, for hostile tests.
//!
//! [`Message`]: crate::Message
//! [`RelPath::from_bytes`]: crate::RelPath::from_bytes

mod check;
mod corpus;
mod generate;
mod raw;

pub use check::{
    check_frame_decode, check_message_decode, check_path, check_round_trip, spec_rel_path,
};
pub use corpus::{corpus_home, seed_corpus};
pub use generate::{
    arbitrary_entry, arbitrary_message, arbitrary_name, arbitrary_path_bytes, arbitrary_rel_path,
    Bytes, Rng, Source,
};
pub use raw::{raw_entry, raw_frame, varint, RawKind};

// The tests below encode frames with it.
#[cfg(test)]
use crate::frame;

#[cfg(test)]
mod tests;
