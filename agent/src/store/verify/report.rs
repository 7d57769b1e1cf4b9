//! What `ferry verify` reports: each finding and its kind, and the counts.

use std::path::PathBuf;

use serde::Serialize;

/// What is wrong with one stored version, or one file of the store.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
#[serde(tag = "kind", rename_all = "kebab-case")]
pub enum FindingKind {
    /// The bytes hash to something else than the catalog says.
    HashMismatch { expected: String, actual: String },
    /// The file has another size than the catalog says.
    SizeMismatch { expected: u64, actual: u64 },
    /// Nothing is where the bytes should be.
    Missing,
    /// Something other than a file (or symlink) is there.
    WrongKind,
    /// A symlink points elsewhere than recorded.
    LinkChanged,
    /// The bytes could not be read.
    Unreadable { error: String },
    /// The version's bytes were not kept: it was deleted or replaced without
    /// an archive, and no newer version has its content.
    Lost { reason: String },
    /// The row's location is not beneath the store (or its folder's versions
    /// area), or is reached through a symlink. It was not read.
    Outside { reason: String },
    /// The row's path, sender or folder does not decode.
    InvalidPath { detail: String },
    /// A file or symlink in the mirror or the versions area that no row
    /// accounts for.
    Orphan,
}

impl std::fmt::Display for FindingKind {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            FindingKind::HashMismatch { expected, actual } => {
                write!(
                    f,
                    "content changed: hashes to {actual}, the catalog says {expected}"
                )
            }
            FindingKind::SizeMismatch { expected, actual } => {
                write!(
                    f,
                    "content changed: {actual} bytes, the catalog says {expected}"
                )
            }
            FindingKind::Missing => write!(f, "missing"),
            FindingKind::WrongKind => write!(f, "something else is in its place"),
            FindingKind::LinkChanged => write!(f, "the symlink points elsewhere"),
            FindingKind::Unreadable { error } => write!(f, "unreadable: {error}"),
            FindingKind::Lost { reason } => write!(f, "its bytes were not kept: {reason}"),
            FindingKind::Outside { reason } => {
                write!(
                    f,
                    "its location is not beneath the store ({reason}); not read"
                )
            }
            FindingKind::InvalidPath { detail } => {
                write!(f, "the catalog row does not decode: {detail}")
            }
            FindingKind::Orphan => write!(f, "no version in the catalog accounts for it"),
        }
    }
}

/// One stored version whose bytes do not match the catalog, or one file
/// that belongs to no version.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Finding {
    pub sender: String,
    pub folder: String,
    /// The path in the sender's folder (lossy UTF-8); for an orphan, its
    /// path relative to the store.
    pub path: String,
    /// The version's id (`None` for an orphan).
    pub version: Option<i64>,
    /// True if it is the current version (in the mirror), or an orphan in
    /// the mirror.
    pub current: bool,
    /// Where its bytes are (or are recorded to be).
    pub location: PathBuf,
    #[serde(flatten)]
    pub kind: FindingKind,
}

/// The result of a verification.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize)]
pub struct VerifyReport {
    /// Files re-hashed.
    pub files_checked: u64,
    /// Bytes read.
    pub bytes_checked: u64,
    /// Symlinks checked.
    pub links_checked: u64,
    /// Files and symlinks found in the mirror and the versions area.
    pub entries_walked: u64,
    /// Files and symlinks in the versions area that no version accounts
    /// for but that were archived as unrecorded (`~u<n>`): copies an
    /// interrupted commit left in the mirror, never acknowledged, kept.
    pub unrecorded: u64,
    /// Everything that does not match.
    pub findings: Vec<Finding>,
}
