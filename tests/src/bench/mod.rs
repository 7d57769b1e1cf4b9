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
//! - `peers`: Ferry against restic, borg and Syncthing (issue 17), with
//!   `backup_tools` (restic, borg) and `syncthing` (two instances driven over
//!   their REST API).

pub mod backup_tools;
pub mod data;
pub mod peers;
pub mod process;
pub mod report;
pub mod scenarios;
pub mod syncthing;
pub mod tools;
pub mod verify;
