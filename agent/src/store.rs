//! The receiver's store: everything the receiver does on disk.
//!
//! ```text
//! STORE/<sender>/<folder>/...                    the current files: a plain, browsable mirror
//! STORE/.ferry/staging/                          content being received (same filesystem)
//! STORE/.ferry/versions/<sender>/<folder>/...    replaced and deleted versions
//! STORE/.ferry/catalog.db                        SQLite: senders, runs, versions
//! STORE/.ferry/lock                              locked while a process has the store open
//! STORE/.ferry/reserve                           1 MiB kept back for the catalog on a full disk
//! ```
//!
//! The guarantee: **nothing is ever lost**. Before a file, symlink or
//! directory in the mirror is replaced or deleted it is renamed into the
//! versions area as `<path>~<UTC YYYYMMDD-HHMMSS>~v<version id>` (or
//! `~u<counter>` for something no row recorded, see `mirror::Tag`; a
//! directory keeps its inner layout below that name) and recorded in the
//! catalog. New content is written to staging, verified, fsynced and renamed
//! into place, and the directory is fsynced, so no reader ever sees a partial
//! file. Nothing in the store is reached through a symlink: every path below
//! the root is opened from a descriptor of the root with `openat2` and
//! `RESOLVE_BENEATH | RESOLVE_NO_SYMLINKS` (`mirror::Tree`), so a component
//! another program swaps for a symlink mid-operation is refused; a symlink or
//! file that the store finds where a directory must be is archived out of
//! the way and a real directory created.
//!
//! Every method is blocking; the async receiver calls them from
//! `spawn_blocking`. [`Store`] is `Send + Sync`. Changes to the mirror are
//! serialised by one write lock; receiving content into [`Staged`] files
//! runs in parallel.
//!
//! ## Crash safety
//!
//! Each operation works on the filesystem first (archive rename, rename into
//! place, fsync of the directories), then records everything in one catalog
//! transaction (synced before `Stored` is answered). A batch reads its own
//! changes before the catalog's (`Store::current_row`), so ops of one batch
//! in any order see what the earlier ones did. A crash in between leaves the
//! filesystem ahead of the catalog: the archived bytes are in the versions
//! area, named with their row's id, and the new content is in the mirror
//! without a catalog row. The sender got no `Stored`, so it sends the entry
//! again; the store then finds the archived bytes by the row's id (a
//! directory with the rows below it) and records where they are, and
//! archives the unrecorded copy as `~u<n>`. Nothing acknowledged is lost.
//! Leftover staging files are removed at [`Store::open`], and runs left
//! `running` are marked `interrupted`. The `sim` tests check all of this
//! with a crash injected at every step (`mirror::Crash`).
//!
//! ## Layout
//!
//! - `error`: [`StoreError`].
//! - `catalog`: the SQLite schema and queries.
//! - `staging`: [`Staged`] and [`Verified`] content.
//! - `mirror`: the store's root by descriptor (`Tree`): no-follow,
//!   never-escaping filesystem primitives, and archive names.
//! - `apply`: the changes to the mirror (commit, metadata, dirs, symlinks, deletes).
//! - `archive`: moving what is in the way into the versions area.
//! - `history`: the tree as of a run or a time, versions by id, the admin's
//!   read-only view of the runs.
//! - `browse`: one directory's children as of a point ([`DirListing`]), by
//!   index lookups.
//! - `locate`: where a version's bytes are (the catalog's rules).
//! - `reserve`: space kept back so runs open and end on a full disk.
//! - `retention`: the receiver's retention policy and pruning.
//! - `senders`: the admin's revocations and pairing switch, and what each
//!   sender has stored.
//! - `verify`: reconciling the store with the catalog both ways.
//! - `sim` (tests): the seeded crash simulation of the store.

mod apply;
mod archive;
mod browse;
mod catalog;
mod chunked;
pub(crate) mod commit;
mod error;
mod history;
mod locate;
mod mirror;
mod reserve;
mod retention;
mod senders;
#[cfg(test)]
mod sim;
mod staging;
mod usage;
mod verify;

use std::fs::{self, File, TryLockError};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, MutexGuard, PoisonError};
use std::time::{SystemTime, UNIX_EPOCH};

use ferry_proto::{Hash, Name, RelPath, RunReport};

pub use apply::{Applied, Op};
pub use browse::DirListing;
use catalog::{Catalog, VersionRow};
pub use chunked::{BaseContent, Resumable};
use error::io_err;
pub use error::StoreError;
pub use history::{catalog_path, read_runs, HistoryError, SkippedVersion, TreeReport};
pub use locate::Unservable;
pub use retention::{select_kept, KeepCandidate, PruneReport, Retention, RetentionError};
pub use senders::{read_access, Access, AccessError, AccessWriter, LastRun, SenderSummary};
pub use staging::{Staged, Verified};
pub use verify::{verify, Finding, FindingKind, VerifyReport};

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

/// The receiver's store. See the module documentation.
#[derive(Debug)]
pub struct Store {
    root: PathBuf,
    /// The root by descriptor: every path below it is reached without
    /// following a symlink (see `mirror`).
    tree: Arc<mirror::Tree>,
    catalog: Mutex<Catalog>,
    /// Held while the mirror or the versions area is changed.
    write: Mutex<()>,
    /// Names staging files and archives without a version id.
    counter: AtomicU64,
    /// Holds the lock on `.ferry/lock` while the store is open (`None`:
    /// opened read-only, see [`Store::open_read_only`]).
    _lock: Option<File>,
}

/// Milliseconds since the Unix epoch, now.
fn now_ms() -> i64 {
    let d = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .unwrap_or_default();
    i64::try_from(d.as_millis()).unwrap_or(i64::MAX)
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

impl Store {
    /// Opens (creating if needed) the store at `root`: creates the
    /// directories and the catalog, takes the lock, removes leftover staging
    /// files and marks runs a killed process left running as interrupted.
    pub fn open(root: &Path) -> Result<Store, StoreError> {
        let root = std::path::absolute(root).map_err(|e| io_err("resolve", root, e))?;
        fs::create_dir_all(&root).map_err(|e| io_err("create the store directory", &root, e))?;
        let tree = Arc::new(mirror::Tree::open(&root)?);
        let ferry = root.join(".ferry");
        for dir in [&ferry, &ferry.join("staging"), &ferry.join("versions")] {
            tree.ensure_own_dir(dir)?;
        }
        let lock_path = ferry.join("lock");
        let lock = match tree.open_rw(&lock_path) {
            Err(StoreError::Io { source, .. }) if source.kind() == std::io::ErrorKind::NotFound => {
                tree.create_new(&lock_path, 0o644)?
            }
            other => other?,
        };
        match lock.try_lock() {
            Ok(()) => {}
            Err(TryLockError::WouldBlock) => return Err(StoreError::Locked { root }),
            Err(TryLockError::Error(e)) => return Err(io_err("lock", &lock_path, e)),
        }
        let catalog = Catalog::open(&ferry.join("catalog.db"))?;
        let store = Store {
            root,
            tree,
            catalog: Mutex::new(catalog),
            write: Mutex::new(()),
            counter: AtomicU64::new(1),
            _lock: Some(lock),
        };
        // On a full disk this may fail even with the reserve: the runs stay
        // `running` in the history until the next start, which is no reason
        // to refuse to serve reads now.
        match store.with_reserve(Catalog::interrupt_running) {
            Ok(0) => {}
            Ok(interrupted) => tracing::warn!(
                interrupted,
                "runs left running by a previous process marked interrupted"
            ),
            Err(e) => tracing::warn!("could not mark runs left running as interrupted: {e}"),
        }
        store.refill_reserve();
        // Interrupted chunked transfers stay to be resumed; the rest goes.
        let keep = store.kept_partials()?;
        let removed = staging::clear(&store.tree, &ferry.join("staging"), &keep)?;
        if removed > 0 {
            tracing::info!(removed, "removed leftover staging files");
        }
        if !keep.is_empty() {
            tracing::info!(kept = keep.len(), "kept interrupted transfers to resume");
        }
        Ok(store)
    }

    /// Opens the existing store at `root` to read its history and stored
    /// bytes only (`ferry history`, `versions` and `restore --store`):
    /// without the lock, so a receiver may be running on it; nothing is
    /// created, cleaned or marked, and the catalog is opened read-only, so
    /// any write fails.
    pub fn open_read_only(root: &Path) -> Result<Store, HistoryError> {
        let root = std::path::absolute(root).map_err(|e| io_err("resolve", root, e))?;
        let catalog = history::open_read_only(&root)?;
        let tree = Arc::new(mirror::Tree::open(&root)?);
        Ok(Store {
            root,
            tree,
            catalog: Mutex::new(catalog),
            write: Mutex::new(()),
            counter: AtomicU64::new(1),
            _lock: None,
        })
    }

    /// The store's root directory (absolute).
    pub fn root(&self) -> &Path {
        &self.root
    }

    fn catalog(&self) -> MutexGuard<'_, Catalog> {
        // A panic while holding the lock cannot leave a half-done
        // transaction: rusqlite rolls back on drop.
        self.catalog.lock().unwrap_or_else(PoisonError::into_inner)
    }

    fn write_lock(&self) -> MutexGuard<'_, ()> {
        self.write.lock().unwrap_or_else(PoisonError::into_inner)
    }

    fn next_counter(&self) -> u64 {
        self.counter.fetch_add(1, Ordering::Relaxed)
    }

    /// `STORE/<sender>/<folder>`.
    fn ns_dir(&self, ns: &Namespace) -> PathBuf {
        self.root.join(&ns.sender).join(&ns.folder)
    }

    fn sender_record(
        &self,
        cat: &Catalog,
        row: catalog::SenderRow,
    ) -> Result<SenderRecord, StoreError> {
        let name = Name::new(row.name).map_err(|e| cat.corrupt(e.to_string()))?;
        Ok(SenderRecord {
            id: row.id,
            device: row.device,
            name,
        })
    }

    /// The sender with this device id, if known.
    pub fn sender_by_device(&self, device: &str) -> Result<Option<SenderRecord>, StoreError> {
        let cat = self.catalog();
        cat.sender_by_device(device)?
            .map(|r| self.sender_record(&cat, r))
            .transpose()
    }

    /// The sender with this name, if known.
    pub fn sender_by_name(&self, name: &Name) -> Result<Option<SenderRecord>, StoreError> {
        let cat = self.catalog();
        cat.sender_by_name(name.as_str())?
            .map(|r| self.sender_record(&cat, r))
            .transpose()
    }

    /// Registers a sender. Idempotent for the same device and name;
    /// [`StoreError::NameTaken`] if the name belongs to another device,
    /// [`StoreError::WrongName`] if the device has another name.
    pub fn add_sender(&self, device: &str, name: &Name) -> Result<SenderRecord, StoreError> {
        let cat = self.catalog();
        if let Some(row) = cat.sender_by_device(device)? {
            let existing = self.sender_record(&cat, row)?;
            if existing.name == *name {
                return Ok(existing);
            }
            return Err(StoreError::WrongName {
                device: device.to_owned(),
                registered: existing.name,
            });
        }
        if let Some(row) = cat.sender_by_name(name.as_str())? {
            return Err(StoreError::NameTaken {
                name: name.clone(),
                device: row.device,
            });
        }
        let id = cat.insert_sender(device, name.as_str(), now_ms())?;
        Ok(SenderRecord {
            id,
            device: device.to_owned(),
            name: name.clone(),
        })
    }

    /// True if `sender` has sent `folder` before (it has a run of it).
    pub fn folder_known(&self, sender: &SenderRecord, folder: &Name) -> Result<bool, StoreError> {
        self.catalog().folder_known(sender.id, folder)
    }

    /// The namespace of `folder` of `sender`.
    pub fn namespace(&self, sender: &SenderRecord, folder: &Name) -> Namespace {
        Namespace {
            sender_id: sender.id,
            sender: sender.name.clone(),
            folder: folder.clone(),
        }
    }

    /// Opens a run in `ns`; its id is the one sent in `Welcome`.
    pub fn begin_run(&self, ns: &Namespace) -> Result<u64, StoreError> {
        self.with_reserve(|cat| {
            let id = cat.begin_run(ns.sender_id, &ns.folder, now_ms())?;
            u64::try_from(id).map_err(|_| cat.corrupt(format!("negative run id {id}")))
        })
    }

    /// Records how a run ended and re-applies the recorded modification
    /// times of the namespace's current directories (adding children during
    /// the run bumped them).
    pub fn finish_run(
        &self,
        ns: &Namespace,
        run: u64,
        report: &RunReport,
        bytes_received: u64,
        ending: RunEnding,
    ) -> Result<(), StoreError> {
        let status = ending.as_str();
        let end = catalog::RunEnd {
            report,
            bytes_received,
            status,
            finished_ms: now_ms(),
        };
        let found = self.with_reserve(|cat| {
            cat.finish_run(ns.sender_id, &ns.folder, catalog::sql_u64(run), &end)
        })?;
        self.refill_reserve();
        let dirs = {
            let cat = self.catalog();
            if !found {
                return Err(StoreError::UnknownRun {
                    run,
                    sender: ns.sender.clone(),
                    folder: ns.folder.clone(),
                });
            }
            // Only a run that added or removed entries moved directory
            // mtimes; a run that changed nothing leaves them alone (a
            // no-change run would otherwise touch every directory).
            if !cat.run_changed(ns.sender_id, &ns.folder, catalog::sql_u64(run))? {
                return Ok(());
            }
            cat.current_rows(ns.sender_id, &ns.folder, true)?
        };
        let _write = self.write_lock();
        if !self.ns_dir_ok(ns)? {
            return Ok(());
        }
        let ns_dir = self.ns_dir(ns);
        for row in dirs {
            let Ok(rel) = RelPath::from_bytes(row.path) else {
                continue;
            };
            if let Err(e) = restore_dir_mtime(&self.tree, &ns_dir, &rel, row.mtime_ns) {
                tracing::warn!(path = %rel, error = %e, "could not restore a directory's modification time");
            }
        }
        Ok(())
    }

    /// Runs, newest first: of one sender (by id) or of all.
    pub fn runs(&self, sender: Option<i64>) -> Result<Vec<RunRecord>, StoreError> {
        let cat = self.catalog();
        let name = |s: String| Name::new(s).map_err(|e| cat.corrupt(e.to_string()));
        cat.runs(sender)?
            .into_iter()
            .map(|r| {
                Ok(RunRecord {
                    id: u64::try_from(r.id)
                        .map_err(|_| cat.corrupt(format!("negative run id {}", r.id)))?,
                    sender: name(r.sender)?,
                    folder: name(r.folder)?,
                    started_ms: r.started_ms,
                    finished_ms: r.finished_ms,
                    status: r.status,
                    report: r.report,
                    bytes_received: u64::try_from(r.bytes_received).unwrap_or(0),
                })
            })
            .collect()
    }

    /// Every version of `path`, newest first, including replaced and deleted
    /// ones.
    pub fn versions(
        &self,
        ns: &Namespace,
        path: &RelPath,
    ) -> Result<Vec<VersionRecord>, StoreError> {
        let cat = self.catalog();
        let rows = cat.path_rows(ns.sender_id, &ns.folder, path)?;
        let located = locate::locate(ns.sender.as_str(), ns.folder.as_str(), &rows);
        rows.into_iter()
            .zip(located)
            .map(|(row, at)| self.version_record(&cat, ns, row, at))
            .collect()
    }

    /// The current entries of `ns`, in path order.
    pub fn current(&self, ns: &Namespace) -> Result<Vec<VersionRecord>, StoreError> {
        let cat = self.catalog();
        let rows = cat.current_rows(ns.sender_id, &ns.folder, false)?;
        rows.into_iter()
            .map(|row| {
                let at = locate::Located::Own(PathBuf::new()); // current: the mirror
                self.version_record(&cat, ns, row, at)
            })
            .collect()
    }

    /// True if the current version of `path` is a file with content `hash`
    /// and the mirror holds it (a regular file of the recorded size, reached
    /// without following a symlink).
    pub fn holds(&self, ns: &Namespace, path: &RelPath, hash: &Hash) -> Result<bool, StoreError> {
        let row = self.catalog().current_row(ns.sender_id, &ns.folder, path)?;
        let Some(row) = row else { return Ok(false) };
        if row.kind != "file" || row.hash.as_deref() != Some(hash.as_slice()) {
            return Ok(false);
        }
        if !self.ns_dir_ok(ns)? {
            return Ok(false);
        }
        let meta = self.tree.lookup(&self.ns_dir(ns), path)?;
        Ok(meta.is_some_and(|m| m.is_file() && i64::try_from(m.len()).ok() == Some(row.size)))
    }

    /// Opens the stored bytes at `location` (a [`VersionRecord::location`])
    /// for reading: a regular file below the store's root, reached without
    /// following a symlink. A location outside the store (a damaged
    /// catalog) is refused, never read.
    pub fn open_stored(&self, location: &Path) -> Result<File, StoreError> {
        let file = self.tree.open_nofollow(location, false)?;
        let meta = file
            .metadata()
            .map_err(|e| io_err("inspect", location, e))?;
        if !meta.is_file() {
            return Err(io_err(
                "read",
                location,
                std::io::Error::new(std::io::ErrorKind::InvalidInput, "not a regular file"),
            ));
        }
        Ok(file)
    }

    /// Starts receiving `size` bytes of content for `path` into a new
    /// staging file.
    pub fn stage(&self, ns: &Namespace, path: &RelPath, size: u64) -> Result<Staged, StoreError> {
        let _ = ns; // staging is shared by all namespaces: same filesystem as the mirror
        let name = format!("{}.part", self.next_counter());
        let file = staging::StagingFile::create(
            &self.tree,
            self.root.join(".ferry").join("staging").join(name),
        )?;
        Ok(Staged::new(file, path.clone(), size))
    }

    /// True if `STORE/<sender>` and `STORE/<sender>/<folder>` are real
    /// directories; false if either is missing; an error if one is something
    /// else.
    fn ns_dir_ok(&self, ns: &Namespace) -> Result<bool, StoreError> {
        let sender = self.root.join(&ns.sender);
        for dir in [&sender, &sender.join(&ns.folder)] {
            match self.tree.lstat(dir)? {
                Some(m) if m.is_dir() => {}
                Some(_) => return Err(StoreError::NotADirectory { path: dir.clone() }),
                None => return Ok(false),
            }
        }
        Ok(true)
    }

    fn version_record(
        &self,
        cat: &Catalog,
        ns: &Namespace,
        row: VersionRow,
        at: locate::Located,
    ) -> Result<VersionRecord, StoreError> {
        let path = RelPath::from_bytes(row.path).map_err(|e| cat.corrupt(e.to_string()))?;
        let hash = match row.hash {
            None => None,
            Some(h) => Some(
                Hash::try_from(h.as_slice())
                    .map_err(|_| cat.corrupt(format!("hash of {path} is {} bytes", h.len())))?,
            ),
        };
        let current = row.replaced_run.is_none();
        let location = match (current, at.bytes()) {
            (false, Some(bytes)) => self.root.join(bytes),
            _ => path.under(&self.ns_dir(ns)),
        };
        let unservable = at.unservable().cloned();
        Ok(VersionRecord {
            id: row.id,
            kind: row.kind,
            size: u64::try_from(row.size).unwrap_or(0),
            mtime_ns: row.mtime_ns,
            mode: u32::try_from(row.mode).unwrap_or(0),
            hash,
            target: row.target,
            run: u64::try_from(row.run_id).unwrap_or(0),
            replaced_run: row.replaced_run.and_then(|r| u64::try_from(r).ok()),
            current,
            deleted: row.deleted,
            location,
            unservable,
            path,
        })
    }
}

/// Sets a mirror directory's modification time back to `mtime_ns`.
fn restore_dir_mtime(
    tree: &mirror::Tree,
    ns_dir: &Path,
    rel: &RelPath,
    mtime_ns: i64,
) -> Result<(), StoreError> {
    match tree.lookup(ns_dir, rel)? {
        Some(m) if m.is_dir() => {}
        _ => return Ok(()),
    }
    let path = rel.under(ns_dir);
    let dir = tree.open_nofollow(&path, true)?;
    dir.set_times(fs::FileTimes::new().set_modified(mirror::system_time(mtime_ns)))
        .map_err(|e| io_err("set the modification time of", &path, e))
}

#[cfg(test)]
#[allow(clippy::unwrap_used)] // a failing unwrap is a failing test
pub(crate) mod tests {
    use super::*;
    use ferry_proto::{Content, Entry, EntryKind};
    use std::os::unix::fs::MetadataExt;

    /// A fresh store with one sender and namespace.
    pub(crate) fn fixture() -> (tempfile::TempDir, Store, Namespace) {
        let dir = tempfile::tempdir().unwrap();
        let store = Store::open(&dir.path().join("store")).unwrap();
        let sender = store
            .add_sender("dev-1", &Name::new("lap").unwrap())
            .unwrap();
        let ns = store.namespace(&sender, &Name::new("docs").unwrap());
        (dir, store, ns)
    }

    pub(crate) fn rel(s: &str) -> RelPath {
        RelPath::from_bytes(s).unwrap()
    }

    pub(crate) fn file_entry(path: &str, data: &[u8], mtime_ns: i64, mode: u32) -> Entry {
        Entry {
            path: rel(path),
            kind: EntryKind::File {
                size: data.len() as u64,
                content: Content::Inline,
            },
            mtime_ns,
            mode,
        }
    }

    /// Stages, verifies and commits `data` at `path`.
    pub(crate) fn put_file(
        store: &Store,
        ns: &Namespace,
        run: u64,
        path: &str,
        data: &[u8],
        mtime_ns: i64,
    ) {
        let entry = file_entry(path, data, mtime_ns, 0o644);
        let mut staged = store.stage(ns, &entry.path, data.len() as u64).unwrap();
        staged.write(data).unwrap();
        let verified = staged.finish(blake3::hash(data).as_bytes()).unwrap();
        store.commit_file(ns, run, &entry, verified).unwrap();
    }

    #[test]
    fn store_is_send_and_sync() {
        fn check<T: Send + Sync>() {}
        check::<Store>();
        check::<Staged>();
        check::<Verified>();
    }

    #[test]
    fn path_too_long_for_a_deep_store_names_the_limit_and_the_file() {
        // The store reaches its files from a descriptor of its root, so its
        // own location does not count; but the sender's and the folder's
        // names do: a path the protocol accepts (4,090 bytes) no longer
        // fits PATH_MAX below `lap/docs/`.
        let dir = tempfile::tempdir().unwrap();
        let root = dir.path().to_path_buf();
        let store = Store::open(&root).unwrap();
        let sender = store
            .add_sender("dev-1", &Name::new("lap").unwrap())
            .unwrap();
        let ns = store.namespace(&sender, &Name::new("docs").unwrap());
        let run = store.begin_run(&ns).unwrap();
        let path = format!("{}/{}", vec!["p".repeat(200); 20].join("/"), "q".repeat(70));
        assert!(path.len() < ferry_proto::MAX_PATH_LEN, "{}", path.len());
        let entry = file_entry(&path, b"deep", 0, 0o644);
        let mut staged = store.stage(&ns, &entry.path, 4).unwrap();
        staged.write(b"deep").unwrap();
        let verified = staged.finish(blake3::hash(b"deep").as_bytes()).unwrap();
        let err = store.commit_file(&ns, run, &entry, verified).unwrap_err();
        assert!(matches!(err, StoreError::PathTooLong { .. }), "{err:?}");
        let message = err.to_string();
        // The message names the limit and the part of the file's path that
        // could not be made (the sender prints it beside the file's path).
        assert!(
            message.contains("PATH_MAX")
                && message.contains(&"q".repeat(70))
                && message.contains("4099 bytes below the store"),
            "{message}"
        );
        assert!(!message.contains("os error"), "{message}");
        assert!(message.len() < 600, "{message}");
        assert!(store.versions(&ns, &entry.path).unwrap().is_empty());
    }

    #[test]
    fn second_open_is_refused_until_the_first_closes() {
        let dir = tempfile::tempdir().unwrap();
        let first = Store::open(dir.path()).unwrap();
        let err = Store::open(dir.path()).unwrap_err();
        assert!(matches!(err, StoreError::Locked { .. }), "{err}");
        assert!(
            err.to_string()
                .contains("another ferry receiver is using the store"),
            "{err}"
        );
        drop(first);
        Store::open(dir.path()).unwrap();
    }

    #[test]
    fn garbage_catalog_is_an_error_and_left_untouched() {
        let dir = tempfile::tempdir().unwrap();
        fs::create_dir(dir.path().join(".ferry")).unwrap();
        let db = dir.path().join(".ferry/catalog.db");
        let garbage =
            b"this is not sqlite at all, just some bytes that a user left here".repeat(100);
        fs::write(&db, &garbage).unwrap();
        let err = Store::open(dir.path()).unwrap_err();
        assert!(matches!(err, StoreError::NotADatabase { .. }), "{err}");
        assert!(err.to_string().contains("catalog.db"), "{err}");
        assert_eq!(fs::read(&db).unwrap(), garbage);
        assert!(!dir.path().join(".ferry/catalog.db-wal").exists());
    }

    #[test]
    fn leftovers_of_a_killed_process_are_cleaned_up() {
        let dir = tempfile::tempdir().unwrap();
        let (run, staging) = {
            let store = Store::open(dir.path()).unwrap();
            let sender = store.add_sender("dev", &Name::new("s").unwrap()).unwrap();
            let ns = store.namespace(&sender, &Name::new("f").unwrap());
            let run = store.begin_run(&ns).unwrap();
            let mut staged = store.stage(&ns, &rel("x"), 10).unwrap();
            staged.write(b"part").unwrap();
            // A killed process neither finishes the run nor removes staging.
            std::mem::forget(staged);
            (
                run,
                fs::read_dir(dir.path().join(".ferry/staging"))
                    .unwrap()
                    .count(),
            )
        };
        assert_eq!(staging, 1);
        let store = Store::open(dir.path()).unwrap();
        assert_eq!(
            fs::read_dir(dir.path().join(".ferry/staging"))
                .unwrap()
                .count(),
            0
        );
        let runs = store.runs(None).unwrap();
        assert_eq!(runs.len(), 1);
        assert_eq!((runs[0].id, runs[0].status.as_str()), (run, "interrupted"));
    }

    #[test]
    fn sender_names_belong_to_one_device() {
        let (_dir, store, ns) = fixture();
        let lap = Name::new("lap").unwrap();
        let again = store.add_sender("dev-1", &lap).unwrap();
        assert_eq!(again.id, ns.sender_id);
        let err = store.add_sender("dev-2", &lap).unwrap_err();
        assert!(matches!(err, StoreError::NameTaken { .. }), "{err}");
        let err = store
            .add_sender("dev-1", &Name::new("other").unwrap())
            .unwrap_err();
        assert!(matches!(err, StoreError::WrongName { .. }), "{err}");
        assert_eq!(store.sender_by_device("dev-1").unwrap().unwrap().name, lap);
        assert_eq!(store.sender_by_name(&lap).unwrap().unwrap().device, "dev-1");
        assert!(store.sender_by_device("dev-2").unwrap().is_none());
    }

    #[test]
    fn runs_are_recorded_newest_first() {
        let (_dir, store, ns) = fixture();
        let first = store.begin_run(&ns).unwrap();
        let second = store.begin_run(&ns).unwrap();
        let report = RunReport {
            files_sent: 3,
            files_unchanged: 1,
            files_deleted: 2,
            bytes_file_data: 99,
            errors: 1,
        };
        store
            .finish_run(&ns, first, &report, 120, RunEnding::Complete)
            .unwrap();
        store
            .finish_run(&ns, second, &RunReport::default(), 0, RunEnding::Failed)
            .unwrap();
        let runs = store.runs(Some(ns.sender_id)).unwrap();
        assert_eq!(
            runs.iter().map(|r| r.id).collect::<Vec<_>>(),
            [second, first]
        );
        assert_eq!(runs[1].status, "complete");
        assert_eq!(runs[1].report, report);
        assert_eq!(runs[1].bytes_received, 120);
        assert!(runs[1].finished_ms.is_some());
        assert_eq!(runs[0].status, "failed");
        assert!(store.runs(Some(ns.sender_id + 1)).unwrap().is_empty());
        let other = Namespace {
            folder: Name::new("elsewhere").unwrap(),
            ..ns.clone()
        };
        let err = store
            .finish_run(&other, first, &report, 0, RunEnding::Complete)
            .unwrap_err();
        assert!(matches!(err, StoreError::UnknownRun { .. }), "{err}");
    }

    #[test]
    fn finish_run_restores_directory_mtimes() {
        let (_dir, store, ns) = fixture();
        let run = store.begin_run(&ns).unwrap();
        let dir_mtime = 1_600_000_000_123_456_789;
        let entry = Entry {
            path: rel("d"),
            kind: EntryKind::Dir,
            mtime_ns: dir_mtime,
            mode: 0o755,
        };
        store.put_dir(&ns, run, &entry).unwrap();
        put_file(&store, &ns, run, "d/new", b"child", 5);
        let d = store.root().join("lap/docs/d");
        let mtime = |p: &Path| {
            let m = fs::symlink_metadata(p).unwrap();
            m.mtime() * 1_000_000_000 + m.mtime_nsec()
        };
        assert_ne!(mtime(&d), dir_mtime, "adding a child bumps the mtime");
        store
            .finish_run(&ns, run, &RunReport::default(), 5, RunEnding::Complete)
            .unwrap();
        assert_eq!(mtime(&d), dir_mtime);

        // A run that changes nothing does not touch the directories.
        let quiet = store.begin_run(&ns).unwrap();
        let later = filetime::FileTime::from_unix_time(1_700_000_000, 0);
        filetime::set_file_mtime(&d, later).unwrap();
        store
            .finish_run(&ns, quiet, &RunReport::default(), 5, RunEnding::Complete)
            .unwrap();
        assert_eq!(mtime(&d), 1_700_000_000_000_000_000);
        // One that changes something restores them.
        let busy = store.begin_run(&ns).unwrap();
        put_file(&store, &ns, busy, "d/another", b"x", 5);
        store
            .finish_run(&ns, busy, &RunReport::default(), 5, RunEnding::Complete)
            .unwrap();
        assert_eq!(mtime(&d), dir_mtime);
    }
}
