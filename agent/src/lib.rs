//! # ferry-agent: everything that runs
//!
//! The sender and the receiver of Ferry, as a library (used by the `ferry`
//! binary and the launcher) and the binary itself. The wire protocol lives in
//! `ferry-proto`; the architecture is described in the repository's DESIGN.md.
//!
//! ## Layout
//!
//! - [`chain`]: an error and its causes on one line, each cause once.
//! - [`identity`]: this node's key pair, certificate and device id.
//! - [`tls`]: rustls configurations that pin device ids instead of using a CA.
//! - [`transport`]: QUIC endpoints and the transport tuning.
//! - [`link`]: one connection as the sessions see it (QUIC, or memory in
//!   tests).
//! - `pair_tests` (tests only): a whole run in memory, the real sender and
//!   the real receiver over `link::memory`.
//! - `sealed_pair_tests` (tests only): the same for encrypted and write-only
//!   folders: the receiver keeps nothing it could read.
//! - [`pins`]: the sender's record of the receivers it has met.
//! - [`stream`]: a framed message stream over any byte-stream pair.
//! - [`store`]: the receiver's store: mirror, staging, versions and catalog.
//! - [`bucket`]: a receiver's bytes in an S3-compatible object store: the
//!   layout in the bucket, its lease, the catalog's copies, packs.
//! - [`scan`]: walking the source tree (stat only), with the exclusion rules.
//! - [`index`]: the sender's index of what the receiver acknowledged, and the
//!   run plan derived from it.
//! - [`chunk`]: content-defined chunks (FastCDC) and chunk lists, for delta
//!   transfer.
//! - [`compress`]: zstd per piece of content, when it shrinks it.
//! - [`keys`]: folder keys on disk: key files (the secret under a
//!   passphrase), public files, where the passphrase comes from.
//! - [`copies`]: the sender's local copies of what it sent.
//! - [`sparse`]: holes kept when content is written, skipped when it is read.
//! - [`reader`]: the client of read-only sessions: runs, versions, trees,
//!   one directory's listing and version bytes, from a receiver or a store.
//! - [`restore`]: writing a tree (from the receiver or the local copies) into
//!   a destination, verified and atomic.
//! - [`receiver`]: the receiver: accept loop, admission, per-connection sessions.
//! - [`embedded`]: the embedded receiver: the receiver a `--store` sender
//!   starts in its own process, on loopback.
//! - [`sender`]: one sender run, and the periodic schedule around it; in
//!   watch mode (`sender::watch`), runs of what inotify says changed.
//! - [`config`]: configuration from flags, TOML and the launcher, validated into
//!   settings.
//! - [`units`]: sizes as written in flags and config files (a leaf).
//! - [`ratelimit`]: bandwidth limits by time of day, and the limiter that
//!   paces streams to them.
//! - [`summary`]: the run summary and progress counters.
//! - [`senders`]: the receiver admin's view of its senders: list, revoke,
//!   allow, the pairing switch, and the running receiver's live record.
//! - [`status`]: live status of a sender or receiver, for displays.
//! - [`tasks`]: the task model, and the one helper that runs blocking work.
//! - [`terminal`]: stderr of the `ferry` binary: the progress bar, and logs
//!   and summaries printed around it.

pub mod bucket;
pub mod chain;
pub mod chunk;
pub mod compress;
pub mod config;
pub mod copies;
pub mod embedded;
pub mod identity;
pub mod index;
pub mod keys;
pub mod link;
pub mod memory;
#[cfg(test)]
mod pair_tests;
pub mod pins;
pub mod ratelimit;
pub mod reader;
pub mod receiver;
pub mod restore;
pub mod scan;
#[cfg(test)]
mod sealed_pair_tests;
pub mod sender;
pub mod senders;
pub mod sparse;
pub mod status;
pub mod store;
pub mod stream;
pub mod summary;
pub mod tasks;
pub mod terminal;
pub mod tls;
pub mod transport;
pub mod units;
