//! The receiver admin's view of its senders (`ferry senders`, the
//! launcher's Senders view): who is known, what each has stored, who is
//! connected now; revoking and re-admitting a sender; switching pairing.
//!
//! Everything works on a store directory while a receiver runs on it. The
//! catalog is read without the store's lock, and the admin's settings are
//! written through [`AccessWriter`] (see [`crate::store`]'s `senders`
//! module); the running receiver picks them up within
//! [`ACCESS_POLL`].
//!
//! Who is connected now is known only to the running receiver: it keeps a
//! small **live record**, `STORE/.ferry/receiver-live.json`, up to date
//! (rewritten in place when its connections change and at least every
//! [`LIVE_HEARTBEAT`]; removed when it stops). A record older than
//! [`LIVE_STALE`] is ignored: its receiver was killed.

use std::path::{Path, PathBuf};
use std::time::Duration;

use serde::{Deserialize, Serialize};

use ferry_proto::Protection;

use crate::store::{protection, AccessError, AccessWriter, HistoryError, Store};

/// How often a running receiver re-reads the admin's settings.
pub const ACCESS_POLL: Duration = Duration::from_secs(1);
/// A running receiver rewrites its live record at least this often.
pub const LIVE_HEARTBEAT: Duration = Duration::from_secs(5);
/// A live record older than this is taken as left by a killed receiver.
pub const LIVE_STALE: Duration = Duration::from_secs(20);

/// The live record's path in the store at `root`.
pub fn live_path(root: &Path) -> PathBuf {
    root.join(".ferry").join("receiver-live.json")
}

/// What a running receiver says about itself in its live record.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct LiveRecord {
    /// The receiver's process id.
    pub pid: u32,
    /// When the record was written, ms since the Unix epoch.
    pub updated_ms: i64,
    /// The receiver was started with a pairing secret.
    pub pairing_secret: bool,
    /// Its per-sender quota in bytes (`--quota`), if any.
    pub quota: Option<u64>,
    /// Its admitted connections.
    pub connected: Vec<LiveSession>,
}

/// One admitted connection of a running receiver.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct LiveSession {
    pub device: String,
    pub name: String,
    pub folder: String,
    pub run: u64,
}

/// The live record's size on disk while it is small enough: it is written
/// in place, padded with spaces to this size, so rewriting it never
/// allocates space on the store's disk (a full disk is then not made fuller
/// at the moment a run needs the last blocks).
pub const LIVE_SIZE: usize = 16 * 1024;

/// Reads the live record of the store at `root`: `None` when no receiver
/// is running on it (no record, an unreadable one, or a stale one).
pub fn read_live(root: &Path, now_ms: i64) -> Option<LiveRecord> {
    // It is rewritten in place: a read in the middle of a write may see a
    // mix that does not parse; the next read sees the whole.
    for _ in 0..5 {
        let text = std::fs::read(live_path(root)).ok()?;
        if let Ok(record) = serde_json::from_slice::<LiveRecord>(text.trim_ascii_end()) {
            let age = now_ms.saturating_sub(record.updated_ms);
            return (age <= LIVE_STALE.as_millis() as i64).then_some(record);
        }
        std::thread::sleep(Duration::from_millis(20));
    }
    None
}

/// Why the live record could not be written.
#[derive(Debug, thiserror::Error)]
#[error("could not write the receiver's live record {}", path.display())]
pub struct LiveError {
    path: PathBuf,
    #[source]
    source: std::io::Error,
}

/// Writes the live record in place, padded to [`LIVE_SIZE`] (see there).
pub fn write_live(root: &Path, record: &LiveRecord) -> Result<(), LiveError> {
    use std::os::unix::fs::FileExt;
    let path = live_path(root);
    let err = |source| LiveError {
        path: path.clone(),
        source,
    };
    let mut bytes = serde_json::to_vec(record).map_err(|e| err(std::io::Error::other(e)))?;
    let len = bytes.len().max(LIVE_SIZE);
    bytes.resize(len, b' ');
    let file = std::fs::OpenOptions::new()
        .write(true)
        .create(true)
        .truncate(false)
        .open(&path)
        .map_err(err)?;
    file.write_all_at(&bytes, 0).map_err(err)?;
    if file.metadata().map_err(err)?.len() > len as u64 {
        file.set_len(len as u64).map_err(err)?;
    }
    Ok(())
}

/// Removes the live record (the receiver stopped).
pub fn remove_live(root: &Path) {
    let _ = std::fs::remove_file(live_path(root));
}

/// Every sender known to a store, and the receiver's state.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct SendersReport {
    /// The store directory.
    pub store: PathBuf,
    /// A receiver is running on this store (its live record is fresh).
    pub receiver_running: bool,
    /// The admin's pairing switch (`ferry senders pairing on|off`).
    pub pairing: bool,
    /// The running receiver has a pairing secret (`None`: none running).
    pub pairing_secret: Option<bool>,
    /// The running receiver's per-sender quota (`None`: none, or none running).
    pub quota: Option<u64>,
    pub senders: Vec<SenderInfo>,
}

/// One sender, as `ferry senders list` shows it.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct SenderInfo {
    pub name: String,
    pub device: String,
    pub added_ms: i64,
    pub folders: Vec<String>,
    /// Each folder's protection, in the order of `folders`.
    pub folder_modes: Vec<FolderMode>,
    pub last_run: Option<LastRunInfo>,
    pub current_bytes: u64,
    pub old_bytes: u64,
    /// `current_bytes + old_bytes`: what counts against a quota.
    pub stored_bytes: u64,
    /// Percent of the running receiver's quota used (`None`: no quota known).
    pub quota_used_percent: Option<f64>,
    pub revoked: bool,
    pub revoked_ms: Option<i64>,
    /// Connected to the running receiver now.
    pub connected: bool,
}

/// One folder's protection, as `ferry senders list` shows it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct FolderMode {
    pub folder: String,
    /// `plain`, `encrypted` or `write-only`.
    pub mode: String,
    /// The first bytes of the key id in hex (`None` for `plain`).
    pub key: Option<String>,
}

impl FolderMode {
    fn new(folder: String, protection: &Protection) -> FolderMode {
        let key = match protection {
            Protection::Plain => None,
            Protection::Encrypted { key } | Protection::WriteOnly { key } => {
                Some(protection::short_key(key))
            }
        };
        FolderMode {
            folder,
            mode: protection::mode_name(protection).to_string(),
            key,
        }
    }

    /// `docs` for a plain folder, `docs (encrypted, key ab12…)` otherwise.
    pub fn label(&self) -> String {
        match &self.key {
            None => self.folder.clone(),
            Some(key) => format!("{} ({}, key {key}…)", self.folder, self.mode),
        }
    }
}

/// A sender's newest run.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct LastRunInfo {
    pub run: u64,
    pub folder: String,
    pub started_ms: i64,
    pub finished_ms: Option<i64>,
    pub result: String,
}

/// Milliseconds since the Unix epoch.
pub fn now_ms() -> i64 {
    let d = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap_or_default();
    i64::try_from(d.as_millis()).unwrap_or(i64::MAX)
}

/// Reads the senders of the store at `root` (a receiver may run on it).
pub fn list(root: &Path) -> Result<SendersReport, HistoryError> {
    let store = Store::open_for_reading(root)?;
    let access = store.access()?;
    let live = read_live(root, now_ms());
    let quota = live.as_ref().and_then(|l| l.quota);
    let senders = store
        .sender_summaries()?
        .into_iter()
        .map(|s| {
            let stored = s.current_bytes + s.old_bytes;
            let connected = live
                .as_ref()
                .is_some_and(|l| l.connected.iter().any(|c| c.device == s.device));
            SenderInfo {
                name: s.name.to_string(),
                device: s.device,
                added_ms: s.added_ms,
                folder_modes: s
                    .folders
                    .iter()
                    .zip(&s.protections)
                    .map(|(folder, p)| FolderMode::new(folder.clone(), p))
                    .collect(),
                folders: s.folders,
                last_run: s.last_run.map(|r| LastRunInfo {
                    run: r.id,
                    folder: r.folder,
                    started_ms: r.started_ms,
                    finished_ms: r.finished_ms,
                    result: r.status,
                }),
                current_bytes: s.current_bytes,
                old_bytes: s.old_bytes,
                stored_bytes: stored,
                quota_used_percent: quota
                    .filter(|q| *q > 0)
                    .map(|q| (stored as f64 * 1000.0 / q as f64).round() / 10.0),
                revoked: s.revoked_ms.is_some(),
                revoked_ms: s.revoked_ms,
                connected,
            }
        })
        .collect();
    Ok(SendersReport {
        store: store.root().to_path_buf(),
        receiver_running: live.is_some(),
        pairing: !access.pairing_off,
        pairing_secret: live.as_ref().map(|l| l.pairing_secret),
        quota,
        senders,
    })
}

/// Revokes the sender named `name` (`true`) or admits it again (`false`);
/// returns false if it already was so.
pub fn set_revoked(root: &Path, name: &str, revoked: bool) -> Result<bool, AccessError> {
    AccessWriter::open(root)?.set_revoked(name, revoked)
}

/// Switches pairing of new senders on or off.
pub fn set_pairing(root: &Path, on: bool) -> Result<(), AccessError> {
    AccessWriter::open(root)?.set_pairing(on)
}

#[cfg(test)]
#[allow(clippy::unwrap_used)] // a failing unwrap is a failing test
mod tests {
    use super::*;

    #[test]
    fn a_stale_or_missing_live_record_means_no_receiver() {
        let dir = tempfile::tempdir().unwrap();
        std::fs::create_dir(dir.path().join(".ferry")).unwrap();
        assert_eq!(read_live(dir.path(), 0), None);
        let record = LiveRecord {
            pid: 1,
            updated_ms: 1_000,
            connected: vec![LiveSession {
                device: "d".into(),
                name: "n".into(),
                folder: "f".into(),
                run: 3,
            }],
            ..LiveRecord::default()
        };
        write_live(dir.path(), &record).unwrap();
        assert_eq!(read_live(dir.path(), 2_000), Some(record.clone()));
        let stale = 1_000 + LIVE_STALE.as_millis() as i64 + 1;
        assert_eq!(read_live(dir.path(), stale), None);
        // Rewritten shorter in place: the rest is padding, not old bytes.
        let shorter = LiveRecord {
            connected: vec![],
            ..record
        };
        write_live(dir.path(), &shorter).unwrap();
        assert_eq!(read_live(dir.path(), 2_000), Some(shorter));
        let size = std::fs::metadata(live_path(dir.path())).unwrap().len();
        assert_eq!(size, LIVE_SIZE as u64);
        remove_live(dir.path());
        assert_eq!(read_live(dir.path(), 2_000), None);
    }

    #[test]
    fn folder_modes_are_labelled_with_a_short_key_id() {
        let plain = FolderMode::new("docs".into(), &Protection::Plain);
        assert_eq!((plain.mode.as_str(), plain.key.as_deref()), ("plain", None));
        assert_eq!(plain.label(), "docs");
        let sealed = FolderMode::new("pics".into(), &Protection::WriteOnly { key: [0xcd; 32] });
        assert_eq!(sealed.mode, "write-only");
        assert_eq!(sealed.label(), "pics (write-only, key cdcdcdcdcdcd…)");
        let json = serde_json::to_string(&sealed).unwrap();
        assert_eq!(
            json,
            r#"{"folder":"pics","mode":"write-only","key":"cdcdcdcdcdcd"}"#
        );
    }
}
