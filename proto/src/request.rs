//! Read-only sessions: history, versions and restore.
//!
//! A sender that wants to look at what the receiver holds for it opens a
//! connection exactly like a run (same TLS, same device id), but its first
//! message is [`Open`] instead of `Hello`. Such a session never pairs, never
//! opens a run and never changes the store. Every answer is drawn from the
//! asking device's own namespace: the receiver finds the sender by the device
//! id of the TLS session, and the folder is the one named in [`Open`].

use serde::{Deserialize, Serialize};

use crate::path::{Name, RelPath};
use crate::types::{Hash, RunReport};

/// The opening of a read-only session (instead of `Hello`).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Open {
    /// [`crate::PROTOCOL_VERSION`] of the client.
    pub protocol: u32,
    /// The name the sender is registered under; must match its device.
    pub name: Name,
    /// The folder whose versions and files are asked for.
    pub folder: Name,
    /// Free-form description of the program, for logs.
    pub agent: String,
}

/// One question on the control stream of a read-only session.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub enum Request {
    /// Every run of this sender (all its folders), newest first. Answered
    /// with `RunList`* then `ListEnd`.
    Runs,
    /// Every stored version of one path of the folder, newest first.
    /// Answered with `VersionList`* then `ListEnd`.
    Versions { path: RelPath },
    /// The folder's tree as of a point (only below `under` if it is not
    /// empty), in path order. Answered with `VersionList`*, `NotServed`*
    /// then `ListEnd` (whose `run` names the run the point resolved to).
    Tree { at: At, under: Vec<RelPath> },
    /// The immediate children of one directory of the folder (`None`: the
    /// folder's root) as of a point, sorted by name (bytewise). Answered
    /// with `DirList`* then `ListEnd` (whose `run` names the run the point
    /// resolved to).
    List { at: At, dir: Option<RelPath> },
    /// The folder's protection. Answered with `FolderProtection`.
    Protection,
}

/// A point in a folder's history.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub enum At {
    /// What the mirror holds now.
    Latest,
    /// Just after this run of the folder.
    Run(u64),
    /// Just after the last run of the folder that had ended (or, if it never
    /// ended, started) at this time, in ms since the Unix epoch.
    Time(i64),
}

/// A run as the receiver recorded it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct RunInfo {
    pub id: u64,
    pub folder: Name,
    /// ms since the Unix epoch.
    pub started_ms: i64,
    pub finished_ms: Option<i64>,
    /// `complete`, `failed`, `interrupted` or `running`.
    pub status: String,
    pub report: RunReport,
    pub bytes_received: u64,
}

/// What a stored version is.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub enum VersionKind {
    File {
        size: u64,
        hash: Hash,
    },
    Dir,
    Symlink {
        #[serde(with = "serde_bytes")]
        target: Vec<u8>,
    },
}

/// One stored version of one path.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct VersionInfo {
    /// The version's id: what a `Fetch` names.
    pub id: u64,
    pub path: RelPath,
    pub kind: VersionKind,
    /// ns since the Unix epoch.
    pub mtime_ns: i64,
    /// Permission bits as sent.
    pub mode: u32,
    /// The run that stored it.
    pub run: u64,
    /// When that run started, ms since the Unix epoch.
    pub stored_ms: i64,
    /// The run that replaced or deleted it; `None` while it is current.
    pub replaced_run: Option<u64>,
    /// True if it ended by a deletion.
    pub deleted: bool,
}

/// A version of a tree that the receiver cannot serve (its catalog row is
/// damaged, or its bytes were not kept or are recorded outside the store).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct NotServed {
    /// The version's id.
    pub id: u64,
    /// Its path as the receiver's catalog has it, for people (it may not be
    /// a valid path, so it is not a [`RelPath`]).
    pub path: String,
    /// Why it cannot be served.
    pub reason: String,
}

/// One child of a directory as of a point (answering [`Request::List`]).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct DirEntry {
    /// The child's path in the folder (the listed directory, then its name).
    pub path: RelPath,
    pub kind: VersionKind,
    /// ns since the Unix epoch.
    pub mtime_ns: i64,
    /// Permission bits as sent.
    pub mode: u32,
    /// The version the child is at that point: what `Versions` lists and a
    /// `Fetch` names. A directory's metadata change is a new version, as a
    /// file's, so a directory shows its metadata as of the point (a store
    /// written before Ferry kept them updated a directory's row in place:
    /// there a directory whose metadata changed after the point shows its
    /// newer metadata and that version); a directory that has no row at all
    /// (only entries below it were stored) has `None`, and mtime and mode 0.
    pub version: Option<u64>,
    /// The run that stored that version (`None` with `version`).
    pub run: Option<u64>,
}

impl DirEntry {
    /// The child's name: the last component of its path.
    pub fn name(&self) -> &[u8] {
        let bytes = self.path.as_bytes();
        match bytes.iter().rposition(|&b| b == b'/') {
            Some(slash) => &bytes[slash + 1..],
            None => bytes,
        }
    }
}

/// Largest encoded size of the items of one `RunList` or `VersionList`
/// message (or of one `DirList`), so that a list always fits a frame.
pub const MAX_LIST_BYTES: usize = 128 * 1024;

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_request_with_a_hostile_path_does_not_decode() {
        // Request::Versions { path: "../x" }, hand-encoded.
        let bytes = [0x01, 0x04, b'.', b'.', b'/', b'x'];
        assert!(postcard::from_bytes::<Request>(&bytes).is_err());
        let ok = [0x01, 0x03, b'a', b'/', b'x'];
        assert!(postcard::from_bytes::<Request>(&ok).is_ok());
    }
}
