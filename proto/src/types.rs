//! The small types both [`crate::message`] and [`crate::request`] carry: a
//! leaf, so neither of those modules imports the other's payloads back.

use serde::{Deserialize, Serialize};

/// A blake3 hash of a file's whole content.
pub type Hash = [u8; 32];

/// The sender's account of a run, recorded by the receiver.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct RunReport {
    pub files_sent: u64,
    pub files_unchanged: u64,
    pub files_deleted: u64,
    pub bytes_file_data: u64,
    pub errors: u64,
}
