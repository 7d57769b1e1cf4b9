//! The launcher driven through its accessibility tree with egui_kittest: no
//! display needed. The agent runs for real on loopback. One test binary
//! (linking egui once), one module per part of the launcher:
//!
//! - `app`: the role forms, starting and stopping both roles, settings;
//! - `status`: what a sender's status line says while it retries or waits;
//! - `backups`: the sender's Backups view against a real receiver;
//! - `sealed`: the Backups view on a protected folder (locked, unlocked);
//! - `senders`: the receiver's Senders view;
//! - `util`: the harness and the bounded wait they share.

#![allow(clippy::unwrap_used)] // a failing unwrap is a failing test

mod app;
mod backups;
mod bucket;
mod sealed;
mod senders;
mod status;
mod util;
