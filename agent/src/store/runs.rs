//! A run's life in the store: opened, closed with the sender's report (and
//! the namespace's directory mtimes put back), listed.

use std::collections::HashMap;
use std::fs;
use std::path::Path;

use ferry_proto::{Name, RelPath, RunReport};

use super::catalog::{self, Catalog};
use super::error::io_err;
use super::{mirror, now_ms, HistoryError, Namespace, RunEnding, RunRecord, Store, StoreError};

impl Store {
    /// Opens a run in `ns`; its id is the one sent in `Welcome`.
    pub fn begin_run(&self, ns: &Namespace) -> Result<u64, StoreError> {
        self.with_reserve(|cat| {
            let id = cat.begin_run(ns.sender_id, &ns.folder, now_ms())?;
            u64::try_from(id).map_err(|_| cat.corrupt(format!("negative run id {id}")))
        })
    }

    /// True if the catalog holds everything `run` of `ns` stored (see
    /// `Catalog::vouches_for`).
    pub fn vouches_for(&self, ns: &Namespace, run: u64) -> Result<bool, StoreError> {
        self.catalog().vouches_for(ns.sender_id, &ns.folder, run)
    }

    /// Records that the catalog of the store at `root` was just recovered
    /// from a copy, before the store is opened (which marks the runs the
    /// copy caught under way as interrupted); see
    /// `Catalog::mark_recovered`. Returns the run ids taken as lost.
    pub fn mark_recovered(root: &Path) -> Result<std::ops::Range<u64>, StoreError> {
        let catalog = Catalog::open_unchecked(&super::catalog_path(root))?;
        catalog.check()?;
        let (lo, hi) = catalog.mark_recovered()?;
        Ok(lo.max(0) as u64..hi.max(0) as u64)
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
        if !found {
            return Err(StoreError::UnknownRun {
                run,
                sender: ns.sender.clone(),
                folder: ns.folder.clone(),
            });
        }
        self.place.run_finished(self, ns, run)
    }

    /// After a run of a local store: puts back the recorded modification
    /// times of the namespace's current directories (adding children
    /// during the run bumped them).
    pub(in crate::store) fn restore_dir_mtimes(
        &self,
        ns: &Namespace,
        run: u64,
    ) -> Result<(), StoreError> {
        let dirs = {
            let cat = self.catalog();
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
        run_records(&self.catalog(), sender)
    }

    /// When each run of a sender started (ms since the Unix epoch).
    pub fn run_starts(&self, sender_id: i64) -> Result<HashMap<u64, i64>, StoreError> {
        let cat = self.catalog();
        let read = || -> rusqlite::Result<HashMap<u64, i64>> {
            let mut stmt = cat
                .conn()
                .prepare("SELECT id, started_ms FROM runs WHERE sender_id = ?1")?;
            let rows = stmt.query_map([sender_id], |r| {
                Ok((u64::try_from(r.get::<_, i64>(0)?).unwrap_or(0), r.get(1)?))
            })?;
            rows.collect()
        };
        read().map_err(|e| cat.err(e))
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
    dir.set_times(fs::FileTimes::new().set_modified(crate::units::system_time(mtime_ns)))
        .map_err(|e| io_err("set the modification time of", &path, e))
}

/// Every sender's runs, newest first, read from the catalog of the store at
/// `root` without taking the store's lock (a receiver may be running).
pub fn read_runs(root: &Path) -> Result<Vec<RunRecord>, HistoryError> {
    if crate::bucket::is_bucket_url(&root.to_string_lossy()) {
        return Ok(Store::open_for_reading(root)?.runs(None)?);
    }
    Ok(run_records(&catalog::read_only_at(root)?, None)?)
}

/// The runs of one sender (by id) or of all, newest first, as records.
fn run_records(cat: &Catalog, sender: Option<i64>) -> Result<Vec<RunRecord>, StoreError> {
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

#[cfg(test)]
#[allow(clippy::unwrap_used)] // a failing unwrap is a failing test
mod tests {
    use super::super::catalog::RUN_IDS_SKIPPED;
    use super::super::tests::{fixture, put_file, rel};
    use super::*;
    use ferry_proto::{Entry, EntryKind};
    use std::os::unix::fs::MetadataExt;

    #[test]
    fn a_catalog_vouches_only_for_its_own_runs_of_the_namespace() {
        let (_dir, store, ns) = fixture();
        let other_sender = store
            .add_sender("dev-2", &Name::new("desk").unwrap())
            .unwrap();
        let other = store.namespace(&other_sender, &Name::new("docs").unwrap());
        let other_folder = store.namespace(
            &store
                .add_sender("dev-1", &Name::new("lap").unwrap())
                .unwrap(),
            &Name::new("music").unwrap(),
        );
        let mine = store.begin_run(&ns).unwrap();
        let theirs = store.begin_run(&other).unwrap();
        let music = store.begin_run(&other_folder).unwrap();
        assert!(store.vouches_for(&ns, mine).unwrap());
        // Another sender's run, another folder's, a run never given (a
        // store put back from an older copy), an id past i64.
        for run in [theirs, music, music + 1, u64::MAX] {
            assert!(!store.vouches_for(&ns, run).unwrap(), "run {run}");
        }
    }

    #[test]
    fn a_recovered_catalog_takes_the_runs_after_its_copy_as_lost() {
        let (dir, store, ns) = fixture();
        let done = store.begin_run(&ns).unwrap();
        store
            .finish_run(&ns, done, &RunReport::default(), 0, RunEnding::Complete)
            .unwrap();
        // Under way when the copy was taken: part of it may be missing.
        let under_way = store.begin_run(&ns).unwrap();
        drop(store);
        let root = dir.path().join("store");
        let lost = Store::mark_recovered(&root).unwrap();
        assert_eq!(lost.start, under_way);
        assert_eq!(lost.end, under_way + 1 + RUN_IDS_SKIPPED as u64);
        let store = Store::open(&root).unwrap();
        assert!(store.vouches_for(&ns, done).unwrap());
        // The run under way, and one the copy never saw (its id will not
        // be given again: new runs are numbered past the lost ones).
        assert!(!store.vouches_for(&ns, under_way).unwrap());
        assert!(!store.vouches_for(&ns, under_way + 1).unwrap());
        let next = store.begin_run(&ns).unwrap();
        assert_eq!(next, lost.end);
        assert!(store.vouches_for(&ns, next).unwrap());
        assert!(!store.vouches_for(&ns, under_way + 1).unwrap());
        // A second recovery adds its range and keeps the first.
        store
            .finish_run(&ns, next, &RunReport::default(), 0, RunEnding::Complete)
            .unwrap();
        drop(store);
        let again = Store::mark_recovered(&root).unwrap();
        assert_eq!(again.start, next + 1, "nothing was under way");
        let store = Store::open(&root).unwrap();
        assert!(!store.vouches_for(&ns, under_way).unwrap());
        assert!(store.vouches_for(&ns, next).unwrap());
        assert_eq!(store.begin_run(&ns).unwrap(), again.end);
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

    #[test]
    fn admin_reads_runs_while_the_store_is_open() {
        let (dir, store, ns) = fixture();
        let r1 = store.begin_run(&ns).unwrap();
        store
            .finish_run(&ns, r1, &RunReport::default(), 0, RunEnding::Complete)
            .unwrap();
        let runs = read_runs(&dir.path().join("store")).unwrap();
        assert_eq!(runs.len(), 1);
        assert_eq!(runs[0].sender.as_str(), "lap");
        let err = read_runs(dir.path()).unwrap_err();
        assert!(matches!(err, HistoryError::NoCatalog { .. }), "{err}");
    }
}
