//! Shared helpers for Ferry's end-to-end tests and benchmark harness: a test
//! receiver on `127.0.0.1:0`, sender settings, tree builders and tree
//! comparison.

pub mod cargo;
pub mod tree;
