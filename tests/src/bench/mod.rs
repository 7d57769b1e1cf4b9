//! The benchmark harness behind `cargo run --release -p ferry-tests --bin
//! bench`: Ferry against rsync on loopback, see README.md "Performance".
//!
//! Layout:
//! - `data`: the deterministic data sets and the edits the scenarios make;
//! - `process`: running a program under `/usr/bin/time`, servers, caches;
//! - `tools`: the Ferry receiver and sender, the rsync daemon, sshd, `cp`;
//! - `scenarios`: what is measured, in which order;
//! - `report`: medians, the table and the JSON;
//! - `verify`: comparing a copy with its source;
//! - `goals`: the targets of issues 15, 17, 18 and 19;
//! - `store`, `exclude`, `watch`: the scenarios of issues 15 and 17 that
//!   need their own trees or processes (the embedded store, a tree with an
//!   excluded `node_modules`, a watching sender).
//! - `sealed`: the scenarios of issue 18, an encrypted folder against the
//!   same set sent plain;
//! - `huge`: a million tiny files, Ferry against restic (issue 17): the
//!   sender's and the receiver's memory;
//! - `peers`: Ferry against restic, borg and Syncthing (issue 17), with
//!   `backup_tools` (restic, borg) and `syncthing` (two instances driven over
//!   their REST API);
//! - `s3`: a receiver keeping its bytes in a bucket against restic into
//!   the same bucket, on one local `s3s-fs` (issue 19).

pub mod backup_tools;
pub mod data;
pub mod peers;
pub mod process;
pub mod report;
pub mod scenarios;
pub mod syncthing;
pub mod tools;
pub mod verify;

pub mod exclude;
pub mod goals;
pub mod huge;
pub mod s3;
pub mod sealed;
pub mod store;
pub mod watch;
