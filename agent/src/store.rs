//! The receiver's store: everything the receiver does on disk.
//!
//! ```text
//! STORE/<sender>/<folder>/...                    the current files: a plain, browsable mirror
//! STORE/.ferry/staging/                          content being received (same filesystem)
//! STORE/.ferry/versions/<sender>/<folder>/...    replaced and deleted versions
//! STORE/.ferry/catalog.db                        SQLite: senders, runs, versions, folder protections
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
//! - `records`: what callers get: senders, [`Namespace`]s, runs, versions, [`RunEnding`].
//! - `error`: [`StoreError`]; [`HistoryError`] for questions about the past.
//! - `catalog`: the SQLite catalog: its schema, opening it, one file per table.
//! - `mirror`: the root by descriptor (`Tree`): no-follow primitives, archive names.
//! - `registry`: registering senders; a sender's folder as a [`Namespace`].
//! - `place`: where the versions' bytes are, behind one trait (`Place`)
//!   with two implementations: the local mirror and a bucket's packs.
//! - `packed`: the bucket implementation (content-addressed packs, catalog
//!   copies, lease, collection, reads).
//! - `runs`: opening, closing and listing runs.
//! - `staging`: content being received: [`Staged`], then [`Verified`].
//! - `apply`: changes to the mirror ([`Op`]), each batch in one catalog transaction.
//! - `archive`: moving what is in the way into the versions area.
//! - `delta_base`: the stored version a delta copies from ([`BaseContent`]).
//! - `partials`: chunked transfers kept in staging to resume ([`Resumable`]).
//! - `protection`: each folder's protection, fixed by its first run.
//! - `versions`: a path's versions as records, and opening stored bytes.
//! - `as_of`: the tree as of a run or a time ([`TreeReport`]).
//! - `browse`: one directory's children as of a point ([`DirListing`]).
//! - `locate`: where a version's bytes are (the catalog's rules).
//! - `reserve`: space kept back so runs open and end on a full disk.
//! - `retention`: the receiver's retention policy and pruning.
//! - `usage`: the bytes a sender has stored, for its quota.
//! - `senders`: the admin's revocations and pairing switch; what each sender stored.
//! - `verify`: reconciling the store with the catalog both ways (`ferry verify`).
//! - `sim` (tests): the seeded crash simulation of the store.
//!
//! Group commit: many files' changes are made on disk under one write lock
//! ([`Store::apply_ops`]), made durable with one `syncfs` ([`Store::flush`])
//! and recorded in one catalog transaction ([`Store::record_applied`])
//! before any is answered `Stored`. [`Store::apply_batch`] runs the three;
//! the receiver's group committer runs them with one `syncfs` serving two
//! batches.

mod apply;
mod archive;
mod as_of;
mod browse;
mod catalog;
pub(crate) mod commit;
mod delta_base;
mod error;
mod locate;
mod mirror;
mod packed;
mod partials;
mod place;
pub mod protection;
mod records;
mod registry;
mod reserve;
mod retention;
mod runs;
mod senders;
#[cfg(test)]
mod sim;
mod staging;
mod usage;
mod verify;
mod versions;

use std::fs::{self, File, TryLockError};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, MutexGuard, PoisonError};
use std::time::{SystemTime, UNIX_EPOCH};

use rusqlite::OptionalExtension;

pub use apply::{Applied, Op};
pub use as_of::{SkippedVersion, TreeReport};
pub use browse::DirListing;
pub use catalog::catalog_path;
use catalog::Catalog;
pub use delta_base::BaseContent;
use error::io_err;
pub use error::{HistoryError, StoreError};
pub use locate::Unservable;
pub use partials::Resumable;
pub use records::{Namespace, RunEnding, RunRecord, SenderRecord, VersionRecord};
pub use retention::{select_kept, KeepCandidate, PruneReport, Retention, RetentionError};
pub use runs::read_runs;
pub use senders::{read_access, Access, AccessError, AccessWriter, LastRun, SenderSummary};
pub use staging::{Staged, Verified};
pub use verify::{verify, Finding, FindingKind, VerifyReport};

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
    /// Where the versions' bytes are: the mirror below `root`, or a bucket
    /// (see `place`).
    place: Arc<dyn place::Place>,
    /// The bucket, if the store keeps its bytes in one (`packed`); the
    /// mirror below `root` is then empty and unused.
    packed: Option<Arc<packed::Packed>>,
}

/// The `receiver_settings` key naming the bucket of a bucket store.
const BUCKET_SETTING: &str = "bucket";

/// Milliseconds since the Unix epoch, now.
fn now_ms() -> i64 {
    let d = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .unwrap_or_default();
    i64::try_from(d.as_millis()).unwrap_or(i64::MAX)
}

impl Store {
    /// Opens (creating if needed) the store at `root`: creates the
    /// directories and the catalog, takes the lock, checks the catalog,
    /// removes leftover staging files and marks runs a killed process left
    /// running as interrupted.
    pub fn open(root: &Path) -> Result<Store, StoreError> {
        let store = Self::open_unchecked(root)?;
        if let Some(bucket) = store.bucket_setting()? {
            return Err(StoreError::WrongKind {
                root: store.root.clone(),
                what: format!("the local state of a receiver whose store is the bucket {bucket}: start it with `--store {bucket}`"),
            });
        }
        store.check_and_recover()?;
        Ok(store)
    }

    /// Opens (creating if needed) a store that keeps its bytes in `bucket`,
    /// its catalog and staging below `root` (the receiver's state), as
    /// [`Store::open`] does, and takes the bucket's lease for `holder`: a
    /// second receiver on the same bucket and prefix is refused. A `root`
    /// that was a local store's, or another bucket's, is refused too.
    pub fn open_bucket(
        root: &Path,
        bucket: crate::bucket::Bucket,
        holder: crate::bucket::Holder,
    ) -> Result<Store, StoreError> {
        let mut store = Self::open_unchecked(root)?;
        let name = bucket.name().to_owned();
        match store.bucket_setting()? {
            Some(recorded) if recorded == name => {}
            Some(recorded) => {
                return Err(StoreError::WrongKind {
                    root: store.root.clone(),
                    what: format!("the local state of the bucket {recorded}, not of {name}: give another --state directory"),
                })
            }
            None if store.catalog().has_runs()? => {
                return Err(StoreError::WrongKind {
                    root: store.root.clone(),
                    what: "a local store with runs in it, not the state of a bucket: give another --state directory".into(),
                })
            }
            None => {}
        }
        store.in_bucket(packed::Packed::open(bucket, Some(holder))?);
        {
            let cat = store.catalog();
            crate::bucket::blob_index::ensure_tables(cat.conn()).map_err(|e| cat.err(e))?;
            cat.conn()
                .execute(
                    "INSERT OR IGNORE INTO receiver_settings (key, value) VALUES (?1, ?2)",
                    rusqlite::params![BUCKET_SETTING, name],
                )
                .map_err(|e| cat.err(e))?;
        }
        store.check_and_recover()?;
        Ok(store)
    }

    /// Opens a bucket store's catalog (a recovered copy, or a receiver's
    /// state) to read its history and bytes only, as
    /// [`Store::open_read_only`]; no lease is taken.
    pub fn open_bucket_read_only(
        root: &Path,
        bucket: crate::bucket::Bucket,
    ) -> Result<Store, HistoryError> {
        let mut store = Self::open_read_only(root)?;
        store.in_bucket(packed::Packed::open(bucket, None)?);
        Ok(store)
    }

    /// Opens the newest catalog copy in `bucket` to read its history and
    /// bytes only (`ferry history|versions|ls|restore --store s3://…`):
    /// the copy is fetched into a temporary directory, removed when the
    /// store is dropped. It holds every run committed before the last
    /// run's end.
    pub fn open_bucket_copy(bucket: crate::bucket::Bucket) -> Result<Store, HistoryError> {
        let scratch = tempfile::Builder::new()
            .prefix("ferry-catalog-")
            .tempdir()
            .map_err(|e| io_err("create a temporary directory", &std::env::temp_dir(), e))?;
        let mut packed = packed::Packed::open(bucket, None)?;
        let ferry = scratch.path().join(".ferry");
        fs::create_dir_all(ferry.join("staging")).map_err(|e| io_err("create", &ferry, e))?;
        packed
            .block_on(crate::bucket::recover(
                packed.bucket(),
                &ferry.join("catalog.db"),
            ))
            .map_err(|e| StoreError::Bucket {
                action: "read the catalog from",
                bucket: packed.bucket().name().to_owned(),
                detail: crate::chain::chain(&e),
            })?;
        let mut store = Self::open_read_only(scratch.path())?;
        packed.keep(scratch);
        store.in_bucket(packed);
        Ok(store)
    }

    /// Makes this store keep its bytes in `packed`'s bucket.
    fn in_bucket(&mut self, packed: packed::Packed) {
        let packed = Arc::new(packed);
        self.place = packed.clone();
        self.packed = Some(packed);
    }

    /// Opens a store to read only: a directory ([`Store::open_read_only`])
    /// or `s3://BUCKET/PREFIX` ([`Store::open_bucket_copy`], the endpoint
    /// and keys as the AWS CLI takes them).
    pub fn open_for_reading(root: &Path) -> Result<Store, HistoryError> {
        let url = root.to_string_lossy();
        if !crate::bucket::is_bucket_url(&url) {
            let store = Self::open_read_only(root)?;
            // A bucket receiver's state holds no bytes: its versions are
            // read from the bucket. (An older catalog has no settings
            // table: then it is a local store.)
            if let Ok(Some(bucket)) = store.bucket_setting() {
                return Err(StoreError::WrongKind {
                    root: store.root.clone(),
                    what: format!("the local state of a receiver whose store is the bucket {bucket}: read it with --store {bucket}"),
                }
                .into());
            }
            return Ok(store);
        }
        let failed = |detail: String| StoreError::Bucket {
            action: "open",
            bucket: url.clone().into_owned(),
            detail,
        };
        let bucket = crate::bucket::BucketSpec::parse(&url)
            .map_err(|e| failed(e.to_string()))?
            .open()
            .map_err(|e| failed(crate::chain::chain(&e)))?;
        Self::open_bucket_copy(bucket)
    }

    /// The bucket this store's catalog was made for, if any.
    fn bucket_setting(&self) -> Result<Option<String>, StoreError> {
        let cat = self.catalog();
        cat.conn()
            .query_row(
                "SELECT value FROM receiver_settings WHERE key = ?1",
                [BUCKET_SETTING],
                |r| r.get(0),
            )
            .optional()
            .map_err(|e| cat.err(e))
    }

    /// [`Store::open`] up to the catalog's check: the directories, the lock
    /// and the catalog, opened and of a known schema, but its pages not yet
    /// checked, and nothing of a previous process cleaned up. Nothing may be
    /// written to the store until [`Store::check_and_recover`] has returned
    /// `Ok` (reads may fail on a damaged catalog): the embedded receiver
    /// serves no connection before it, and runs it on a blocking thread
    /// beside the sender's scan.
    pub(crate) fn open_unchecked(root: &Path) -> Result<Store, StoreError> {
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
        let catalog = Catalog::open_unchecked(&ferry.join("catalog.db"))?;
        Ok(Store {
            root,
            tree,
            catalog: Mutex::new(catalog),
            write: Mutex::new(()),
            counter: AtomicU64::new(1),
            _lock: Some(lock),
            place: Arc::new(place::Mirror),
            packed: None,
        })
    }

    /// The rest of [`Store::open`] after [`Store::open_unchecked`]: checks
    /// every page of the catalog ([`StoreError::DamagedCatalog`], the file
    /// left untouched, if one is damaged), then marks the runs a killed
    /// process left running as interrupted and removes leftover staging
    /// files.
    pub(crate) fn check_and_recover(&self) -> Result<(), StoreError> {
        self.catalog().check()?;
        let ferry = self.root.join(".ferry");
        // On a full disk this may fail even with the reserve: the runs stay
        // `running` in the history until the next start, which is no reason
        // to refuse to serve reads now.
        match self.with_reserve(Catalog::interrupt_running) {
            Ok(0) => {}
            Ok(interrupted) => tracing::warn!(
                interrupted,
                "runs left running by a previous process marked interrupted"
            ),
            Err(e) => tracing::warn!("could not mark runs left running as interrupted: {e}"),
        }
        self.refill_reserve();
        // Interrupted chunked transfers stay to be resumed; the rest goes.
        let keep = self.kept_partials()?;
        let removed = staging::clear(&self.tree, &ferry.join("staging"), &keep)?;
        if removed > 0 {
            tracing::info!(removed, "removed leftover staging files");
        }
        if !keep.is_empty() {
            tracing::info!(kept = keep.len(), "kept interrupted transfers to resume");
        }
        Ok(())
    }

    /// Opens the existing store at `root` to read its history and stored
    /// bytes only (`ferry history`, `versions` and `restore --store`):
    /// without the lock, so a receiver may be running on it; nothing is
    /// created, cleaned or marked, and the catalog is opened read-only, so
    /// any write fails.
    pub fn open_read_only(root: &Path) -> Result<Store, HistoryError> {
        let root = std::path::absolute(root).map_err(|e| io_err("resolve", root, e))?;
        let catalog = catalog::read_only_at(&root)?;
        let tree = Arc::new(mirror::Tree::open(&root)?);
        Ok(Store {
            root,
            tree,
            catalog: Mutex::new(catalog),
            write: Mutex::new(()),
            counter: AtomicU64::new(1),
            _lock: None,
            place: Arc::new(place::Mirror),
            packed: None,
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
}

#[cfg(test)]
#[allow(clippy::unwrap_used)] // a failing unwrap is a failing test
pub(crate) mod tests {
    use super::*;
    use ferry_proto::{Content, Entry, EntryKind, Name, RelPath};

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
}
