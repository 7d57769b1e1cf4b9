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

/// How a folder is kept on the receiver, chosen by the sender when the
/// folder is first sent and fixed afterwards (see [`crate::seal`]).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub enum Protection {
    /// The receiver keeps a browsable mirror of the files.
    Plain,
    /// The receiver keeps only sealed objects; the sender holds the whole
    /// folder key (`key` is its [`crate::seal::FolderPublic::key_id`]).
    Encrypted { key: Hash },
    /// Like `Encrypted`, but the sender holds only the key's public half: it
    /// can add versions and cannot open any.
    WriteOnly { key: Hash },
}
