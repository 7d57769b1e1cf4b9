//! Shared helpers for Ferry's end-to-end tests and benchmark harness: a test
//! receiver on `127.0.0.1:0`, sender settings, tree builders and tree
//! comparison.
//!
//! ## Layout
//!
//! - [`cargo`]: building the `ferry` binary from inside a test or the bench.
//! - [`fault_proxy`]: an HTTP proxy in front of a test S3 server that
//!   answers with injected errors (a 503 storm, a full bucket).
//! - [`s3`]: real S3 servers on 127.0.0.1 (`s3s-fs`, a SeaweedFS cluster)
//!   and an `object_store` client for them.
//! - [`tree`]: temp trees, snapshots and comparisons of trees (content and
//!   metadata).
//! - `src/bench/` (compiled into the `bench` binary, `src/bin/bench.rs`):
//!   the benchmark harness against rsync, restic, borg and Syncthing; its
//!   own Layout is in `bench/mod.rs`.
//! - `tests/e2e/`: the end-to-end test binary, one module per subject.
//! - `examples/browse_timing.rs`: timing of browsing a large run.

pub mod cargo;
pub mod fault_proxy;
pub mod s3;
pub mod tree;
