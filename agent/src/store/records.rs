//! The store's records as its callers see them: a sender, a sender's
//! folder ([`Namespace`]), a run, a version of a path, and how a run ends.

use std::path::PathBuf;

use ferry_proto::{Hash, Name, RelPath, RunReport};

use super::Unservable;

/// A sender known to this receiver.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SenderRecord {
    /// Catalog id.
    pub id: i64,
    /// The sender's device id.
    pub device: String,
    /// The sender's name: its directory in the store.
    pub name: Name,
}

/// One sender's folder: the unit every store operation works in
/// (`STORE/<sender>/<folder>`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Namespace {
    /// Catalog id of the sender.
    pub sender_id: i64,
    /// The sender's name.
    pub sender: Name,
    /// The folder below the sender.
    pub folder: Name,
}

/// A run as recorded in the catalog.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RunRecord {
    /// The run id (the one sent in `Welcome`).
    pub id: u64,
    /// The sender's name.
    pub sender: Name,
    /// The folder the run sent.
    pub folder: Name,
    /// When the run began, ms since the Unix epoch.
    pub started_ms: i64,
    /// When it was finished (not set for running or interrupted runs).
    pub finished_ms: Option<i64>,
    /// `"running"`, `"complete"`, `"failed"` or `"interrupted"`.
    pub status: String,
    /// The sender's account of the run.
    pub report: RunReport,
    /// Content bytes the receiver got in the run.
    pub bytes_received: u64,
}

/// One version of one path.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct VersionRecord {
    /// Catalog id.
    pub id: i64,
    /// The path in the namespace.
    pub path: RelPath,
    /// `"file"`, `"dir"` or `"symlink"`.
    pub kind: String,
    /// Size in bytes (files).
    pub size: u64,
    /// Modification time, ns since the Unix epoch.
    pub mtime_ns: i64,
    /// Permission bits as the sender sent them.
    pub mode: u32,
    /// Content hash (files).
    pub hash: Option<Hash>,
    /// Link target (symlinks).
    pub target: Option<Vec<u8>>,
    /// The run that stored this version.
    pub run: u64,
    /// The run that replaced or deleted it (`None` while current).
    pub replaced_run: Option<u64>,
    /// True while this is what the mirror holds.
    pub current: bool,
    /// True if the path was deleted (rather than replaced).
    pub deleted: bool,
    /// Absolute path of the version's bytes: in the mirror if current, else
    /// in the versions area. A version replaced by a metadata-only change
    /// shares the bytes of the next version, so it points where that one
    /// does. A version that cannot be served ([`VersionRecord::unservable`])
    /// and a directory or symlink without an archive point at their mirror
    /// path (never outside the store).
    pub location: PathBuf,
    /// Why the version's bytes cannot be served, if they cannot: not kept,
    /// or recorded outside the folder's versions area.
    pub unservable: Option<Unservable>,
}

/// How a run ended, as the catalog records it.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum RunEnding {
    /// The sender finished it and everything it reported is recorded.
    Complete,
    /// It ended on an error.
    Failed,
    /// The sender went away or the receiver stopped before it finished.
    Interrupted,
}

impl RunEnding {
    /// The run's status word in the catalog and in history.
    pub fn as_str(self) -> &'static str {
        match self {
            RunEnding::Complete => "complete",
            RunEnding::Failed => "failed",
            RunEnding::Interrupted => "interrupted",
        }
    }
}
