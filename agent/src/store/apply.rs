//! Changes to the mirror: committing content, metadata updates, directories,
//! symlinks and deletions, one at a time or in batches (group commit). Each
//! runs under the store's write lock: the filesystem first (archive, rename
//! into place, make it durable), then one catalog transaction.
//!
//! ## Layout
//!
//! - `steps`: one change on disk (content, metadata, directory, symlink),
//!   collecting its catalog changes.
//!
//! This file has the operations callers use ([`Op`], [`Applied`]) and the
//! batching: the filesystem work of many ops under one write lock, their
//! catalog changes recorded in one transaction.

mod steps;

use ferry_proto::{Entry, Hash, RelPath};

use super::archive::Work;
use super::catalog::Catalog;
use super::error::StoreError;
use super::place::Pending;
use super::{Namespace, Store, Verified};

/// A batch made on disk by [`Store::apply_ops`], holding the store's write
/// lock until [`Store::record_applied`] records it.
pub struct Applied<'a> {
    _write: std::sync::MutexGuard<'a, ()>,
    ns: Namespace,
    run: u64,
    /// The batch's changes made in the store's place, to record.
    pending: Pending,
    paths: Vec<RelPath>,
    results: Vec<Result<(), StoreError>>,
}

/// One change of a batch (see [`Store::apply_batch`]).
#[derive(Debug)]
pub enum Op {
    /// Verified content for a file entry.
    File { entry: Entry, staged: Verified },
    /// Same content, new metadata ([`Store::holds`] was true).
    Metadata { entry: Entry, hash: Hash },
    /// A directory entry.
    Dir(Entry),
    /// A symlink entry.
    Symlink(Entry),
}

impl Op {
    /// The path the change is about.
    pub fn path(&self) -> &RelPath {
        match self {
            Op::File { entry, .. }
            | Op::Metadata { entry, .. }
            | Op::Dir(entry)
            | Op::Symlink(entry) => &entry.path,
        }
    }
}

impl Store {
    /// Stores verified content at `entry.path`: archives what was there,
    /// sets the mode and mtime (ns precision), renames the file into place,
    /// fsyncs the directories and records the new version.
    pub fn commit_file(
        &self,
        ns: &Namespace,
        run: u64,
        entry: &Entry,
        staged: Verified,
    ) -> Result<(), StoreError> {
        let op = Op::File {
            entry: entry.clone(),
            staged,
        };
        self.place.commit_one(self, ns, run, op)
    }

    /// The content at `entry.path` is already `hash` ([`Store::holds`] was
    /// true): sets the mode and mtime and records a new version for the same
    /// content. No copy is made: the previous version is marked replaced
    /// without an archive, since its bytes are identical to the new one's
    /// (its [`super::VersionRecord::location`] follows the newer version).
    pub fn update_metadata(
        &self,
        ns: &Namespace,
        run: u64,
        entry: &Entry,
        hash: &Hash,
    ) -> Result<(), StoreError> {
        let op = Op::Metadata {
            entry: entry.clone(),
            hash: *hash,
        };
        self.place.commit_one(self, ns, run, op)
    }

    /// Makes `entry.path` a directory with the entry's mode and mtime. A
    /// file or symlink there is archived first. On disk the owner always
    /// keeps `rwx` so the receiver can store the directory's children; the
    /// catalog keeps the sender's mode.
    pub fn put_dir(&self, ns: &Namespace, run: u64, entry: &Entry) -> Result<(), StoreError> {
        self.place.commit_one(self, ns, run, Op::Dir(entry.clone()))
    }

    /// Makes `entry.path` a symlink to the entry's target (bytes, never
    /// followed). Whatever else is there is archived first; the same link
    /// only gets its mtime set and a new version row.
    pub fn put_symlink(&self, ns: &Namespace, run: u64, entry: &Entry) -> Result<(), StoreError> {
        self.place
            .commit_one(self, ns, run, Op::Symlink(entry.clone()))
    }

    /// One op of a local store on its own: made, synced and recorded (what
    /// a cut-off op did is recorded too, see [`Store::conclude`]).
    pub(in crate::store) fn commit_one_local(
        &self,
        ns: &Namespace,
        run: u64,
        op: Op,
    ) -> Result<(), StoreError> {
        if let Op::File { staged, .. } = &op {
            staged.sync()?;
        }
        let _write = self.write_lock();
        let mut work = Work::default();
        match op {
            Op::File { entry, mut staged } => {
                let done = self.commit_file_in(ns, &entry, &mut staged, &mut work);
                self.conclude(ns, run, work, done)
            }
            Op::Metadata { entry, hash } => {
                match self.update_metadata_in(ns, &entry, &hash, true, &mut work) {
                    Ok(()) => self.record(ns, run, work),
                    Err(e) => Err(e),
                }
            }
            Op::Dir(entry) => {
                let done = self.put_dir_in(ns, &entry, &mut work);
                self.conclude(ns, run, work, done)
            }
            Op::Symlink(entry) => {
                let done = self.put_symlink_in(ns, &entry, &mut work);
                self.conclude(ns, run, work, done)
            }
        }
    }

    /// Applies several changes of one namespace with one durability barrier
    /// for all of them (group commit): one `syncfs` makes every staged
    /// file's content durable, the changes are made on disk under the write
    /// lock, a second `syncfs` makes the new names durable, then one catalog
    /// transaction records them all. Each op gets its own result; a failed
    /// op does not stop the others. Returns only when every successful op is
    /// durable, like the single-op methods.
    ///
    /// The ops must be for distinct paths (one run sends each path once).
    /// The receiver's committer runs the same steps ([`Store::apply_ops`],
    /// [`Store::flush`], [`Store::record_applied`]) with one `syncfs`
    /// serving two batches.
    pub fn apply_batch(
        &self,
        ns: &Namespace,
        run: u64,
        ops: Vec<Op>,
    ) -> Vec<Result<(), StoreError>> {
        if ops.iter().any(|op| matches!(op, Op::File { .. })) {
            if let Err(e) = self.flush() {
                let message = crate::chain::chain(&e);
                return ops
                    .iter()
                    .map(|op| Err(batch_failed(op.path(), &message)))
                    .collect();
            }
        }
        let applied = self.apply_ops(ns, run, ops);
        let flushed = self.flush().map_err(|e| crate::chain::chain(&e));
        self.record_applied(applied, flushed)
    }

    /// The first half of a group commit: takes the write lock and makes the
    /// changes on disk. The content of every `Op::File` must be durable
    /// already ([`Store::flush`] after it was staged). The changes are then
    /// neither durable nor recorded: [`Store::flush`], then
    /// [`Store::record_applied`], which releases the lock.
    pub fn apply_ops(&self, ns: &Namespace, run: u64, ops: Vec<Op>) -> Applied<'_> {
        let write = self.write_lock();
        let paths = ops.iter().map(|op| op.path().clone()).collect();
        let (pending, results) = self.place.apply(self, ns, ops);
        Applied {
            _write: write,
            ns: ns.clone(),
            run,
            pending,
            paths,
            results,
        }
    }

    /// The second half of a group commit: `flushed` is the outcome of a
    /// [`Store::flush`] made after [`Store::apply_ops`]. Records the changes
    /// in one catalog transaction and gives each op its result (every op
    /// fails if the flush or the transaction did).
    pub fn record_applied(
        &self,
        applied: Applied<'_>,
        flushed: Result<(), String>,
    ) -> Vec<Result<(), StoreError>> {
        let Applied {
            _write,
            ns,
            run,
            pending,
            paths,
            mut results,
        } = applied;
        let recorded =
            flushed.and_then(|()| self.place.record(self, &ns, run, pending, &mut results));
        if let Err(message) = recorded {
            for (result, path) in results.iter_mut().zip(&paths) {
                if result.is_ok() {
                    *result = Err(batch_failed(path, &message));
                }
            }
        }
        results
    }

    /// Flushes every pending write of the store's filesystem to disk.
    pub fn flush(&self) -> Result<(), StoreError> {
        self.place.flush(self)
    }

    /// One op of a bucket store, made and recorded as a batch of one.
    pub(in crate::store) fn apply_one(
        &self,
        ns: &Namespace,
        run: u64,
        op: Op,
    ) -> Result<(), StoreError> {
        let applied = self.apply_ops(ns, run, vec![op]);
        let mut results = self.record_applied(applied, Ok(()));
        results.pop().unwrap_or(Ok(()))
    }

    /// Archives `path` (a file, a symlink or a whole directory) and records
    /// it, and everything below it, as deleted. A path that is not there is
    /// fine: any current catalog rows are marked deleted.
    pub fn delete(&self, ns: &Namespace, run: u64, path: &RelPath) -> Result<(), StoreError> {
        self.place.delete(self, ns, run, path)
    }

    /// [`Store::delete`] in a local store: the mirror's path archived.
    pub(in crate::store) fn delete_local(
        &self,
        ns: &Namespace,
        run: u64,
        path: &RelPath,
    ) -> Result<(), StoreError> {
        let _write = self.write_lock();
        let mut work = Work::default();
        let done = (|| -> Result<(), StoreError> {
            let there = self.ns_dir_ok(ns)? && self.tree.lookup(&self.ns_dir(ns), path)?.is_some();
            if there {
                self.archive(ns, path, true, &mut work)
            } else {
                self.retire_missing(ns, path, true, false, &mut work)
            }
        })();
        self.conclude(ns, run, work, done)
    }

    /// Records what an operation did. If it failed half-way (say, the disk
    /// filled after the old version was archived), what it did is still
    /// recorded, so the catalog points at the archived bytes, and the
    /// operation's error is returned.
    fn conclude(
        &self,
        ns: &Namespace,
        run: u64,
        work: Work,
        done: Result<(), StoreError>,
    ) -> Result<(), StoreError> {
        match done {
            Ok(()) => self.record(ns, run, work),
            Err(e) => {
                if !work.changes.is_empty() {
                    if let Err(record) = self.record(ns, run, work) {
                        tracing::warn!(error = %record, "could not record a partly done change");
                    }
                }
                Err(e)
            }
        }
    }

    /// Fsyncs the changed directories, then records the changes in one
    /// transaction.
    fn record(&self, ns: &Namespace, run: u64, work: Work) -> Result<(), StoreError> {
        for dir in &work.dirty {
            self.tree.fsync_dir(dir)?;
        }
        self.tree.step(&self.root)?;
        let mut cat = self.catalog();
        let run = super::catalog::sql_u64(run);
        Catalog::apply(&mut cat, ns.sender_id, &ns.folder, run, &work.changes)
    }
}

fn batch_failed(path: &RelPath, detail: &str) -> StoreError {
    StoreError::BatchFailed {
        path: path.clone(),
        detail: detail.to_owned(),
    }
}

fn bad(entry: &Entry, detail: &str) -> StoreError {
    StoreError::BadEntry {
        path: entry.path.clone(),
        detail: detail.to_owned(),
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used)] // a failing unwrap is a failing test
mod tests {
    use super::super::mirror;
    use super::super::tests::{file_entry, fixture, put_file, rel};
    use super::*;
    use ferry_proto::EntryKind;
    use std::fs;
    use std::os::unix::ffi::OsStrExt;
    use std::os::unix::fs::symlink;
    use std::os::unix::fs::{MetadataExt, PermissionsExt};
    use std::path::PathBuf;

    fn mtime_ns(m: &fs::Metadata) -> i64 {
        m.mtime() * 1_000_000_000 + m.mtime_nsec()
    }

    fn mirror(store: &Store, path: &str) -> PathBuf {
        store.root().join("lap/docs").join(path)
    }

    fn staging_count(store: &Store) -> usize {
        fs::read_dir(store.root().join(".ferry/staging"))
            .unwrap()
            .count()
    }

    #[test]
    fn stored_file_has_exact_bytes_mtime_and_mode() {
        let (_dir, store, ns) = fixture();
        let run = store.begin_run(&ns).unwrap();
        let entry = file_entry("a/b/f.txt", b"hello", 1_700_000_000_123_456_789, 0o640);
        let mut staged = store.stage(&ns, &entry.path, 5).unwrap();
        staged.write(b"hel").unwrap();
        staged.write(b"lo").unwrap();
        let verified = staged.finish(blake3::hash(b"hello").as_bytes()).unwrap();
        store.commit_file(&ns, run, &entry, verified).unwrap();
        let path = mirror(&store, "a/b/f.txt");
        assert_eq!(fs::read(&path).unwrap(), b"hello");
        let meta = fs::symlink_metadata(&path).unwrap();
        assert_eq!(mtime_ns(&meta), 1_700_000_000_123_456_789);
        assert_eq!(meta.permissions().mode() & 0o7777, 0o640);
        assert_eq!(staging_count(&store), 0);
        let current = store.current(&ns).unwrap();
        assert_eq!(current.len(), 1);
        assert_eq!(current[0].hash, Some(*blake3::hash(b"hello").as_bytes()));
        assert_eq!(current[0].location, path);
        assert_eq!(current[0].run, run);
    }

    #[test]
    fn replaced_file_is_archived_and_both_versions_listed() {
        let (_dir, store, ns) = fixture();
        let run = store.begin_run(&ns).unwrap();
        put_file(&store, &ns, run, "f", b"old", 1);
        put_file(&store, &ns, run, "f", b"new content", 2);
        assert_eq!(fs::read(mirror(&store, "f")).unwrap(), b"new content");
        let versions = store.versions(&ns, &rel("f")).unwrap();
        assert_eq!(versions.len(), 2);
        assert!(versions[0].current && !versions[1].current && !versions[1].deleted);
        assert_eq!(fs::read(&versions[1].location).unwrap(), b"old");
        assert!(versions[1]
            .location
            .starts_with(store.root().join(".ferry/versions/lap/docs")));
        let name = versions[1]
            .location
            .file_name()
            .unwrap()
            .to_string_lossy()
            .into_owned();
        assert!(
            name.starts_with("f~") && name.ends_with(&format!("~v{}", versions[1].id)),
            "{name}"
        );
    }

    #[test]
    fn deleted_file_is_archived_not_destroyed() {
        let (_dir, store, ns) = fixture();
        let run = store.begin_run(&ns).unwrap();
        put_file(&store, &ns, run, "d/f", b"precious", 1);
        put_file(&store, &ns, run, "keep", b"k", 1);
        store.delete(&ns, run, &rel("d/f")).unwrap();
        assert!(!mirror(&store, "d/f").exists());
        let current: Vec<_> = store
            .current(&ns)
            .unwrap()
            .into_iter()
            .map(|v| v.path)
            .collect();
        assert_eq!(current, [rel("keep")]);
        let versions = store.versions(&ns, &rel("d/f")).unwrap();
        assert_eq!(versions.len(), 1);
        assert!(versions[0].deleted && !versions[0].current);
        assert_eq!(fs::read(&versions[0].location).unwrap(), b"precious");
        // Deleting again, or something never stored, is fine.
        store.delete(&ns, run, &rel("d/f")).unwrap();
        store.delete(&ns, run, &rel("never/there")).unwrap();
        assert_eq!(store.versions(&ns, &rel("d/f")).unwrap().len(), 1);
    }

    #[test]
    fn deleted_directory_is_archived_whole() {
        let (_dir, store, ns) = fixture();
        let run = store.begin_run(&ns).unwrap();
        put_file(&store, &ns, run, "d/x/f", b"one", 1);
        put_file(&store, &ns, run, "d/g", b"two", 1);
        store.delete(&ns, run, &rel("d")).unwrap();
        assert!(!mirror(&store, "d").exists());
        assert!(store.current(&ns).unwrap().is_empty());
        for (path, bytes) in [("d/x/f", b"one"), ("d/g", b"two")] {
            let v = store.versions(&ns, &rel(path)).unwrap();
            assert!(v[0].deleted, "{path}");
            assert_eq!(fs::read(&v[0].location).unwrap(), bytes, "{path}");
        }
    }

    #[test]
    fn wrong_hash_leaves_nothing() {
        let (_dir, store, ns) = fixture();
        let mut staged = store.stage(&ns, &rel("f"), 3).unwrap();
        staged.write(b"abc").unwrap();
        let err = staged.finish(blake3::hash(b"abd").as_bytes()).unwrap_err();
        assert!(matches!(err, StoreError::HashMismatch { .. }), "{err}");
        assert_eq!(err.fail_code(), ferry_proto::FailCode::HashMismatch);
        assert!(!mirror(&store, "f").exists());
        assert_eq!(staging_count(&store), 0);
    }

    #[test]
    fn more_bytes_than_declared_is_size_mismatch() {
        let (_dir, store, ns) = fixture();
        let mut staged = store.stage(&ns, &rel("f"), 3).unwrap();
        staged.write(b"ab").unwrap();
        let err = staged.write(b"cd").unwrap_err();
        assert!(
            matches!(
                err,
                StoreError::SizeMismatch {
                    declared: 3,
                    actual: 4,
                    ..
                }
            ),
            "{err}"
        );
        assert_eq!(err.fail_code(), ferry_proto::FailCode::SizeMismatch);
        drop(staged);
        assert_eq!(staging_count(&store), 0);
    }

    #[test]
    fn symlink_where_a_directory_is_needed_is_archived_not_followed() {
        let (dir, store, ns) = fixture();
        let outside = dir.path().join("outside");
        fs::create_dir(&outside).unwrap();
        let run = store.begin_run(&ns).unwrap();
        // The sender itself stored `a` as a link out of the store ...
        let link = Entry {
            path: rel("a"),
            kind: EntryKind::Symlink {
                target: outside.as_os_str().as_bytes().to_vec(),
            },
            mtime_ns: 0,
            mode: 0o777,
        };
        store.put_symlink(&ns, run, &link).unwrap();
        // ... and a planted one appears deeper too.
        fs::create_dir(mirror(&store, "b")).unwrap();
        symlink(&outside, mirror(&store, "b/c")).unwrap();
        put_file(&store, &ns, run, "a/evil", b"x", 1);
        put_file(&store, &ns, run, "b/c/evil", b"y", 1);
        let entry = Entry {
            path: rel("a/sub"),
            kind: EntryKind::Dir,
            mtime_ns: 0,
            mode: 0o755,
        };
        store.put_dir(&ns, run, &entry).unwrap();
        assert_eq!(
            fs::read_dir(&outside).unwrap().count(),
            0,
            "wrote outside the store"
        );
        assert!(fs::symlink_metadata(mirror(&store, "a")).unwrap().is_dir());
        assert!(fs::symlink_metadata(mirror(&store, "b/c"))
            .unwrap()
            .is_dir());
        assert_eq!(fs::read(mirror(&store, "a/evil")).unwrap(), b"x");
        let old = store.versions(&ns, &rel("a")).unwrap();
        assert_eq!(old.len(), 1);
        assert!(!old[0].current);
        assert!(fs::symlink_metadata(&old[0].location).unwrap().is_symlink());
    }

    #[test]
    fn file_and_directory_replace_each_other() {
        let (_dir, store, ns) = fixture();
        let run = store.begin_run(&ns).unwrap();
        put_file(&store, &ns, run, "x", b"file", 1);
        put_file(&store, &ns, run, "x/inner", b"child", 1); // file x becomes a directory
        assert!(mirror(&store, "x").is_dir());
        let x = store.versions(&ns, &rel("x")).unwrap();
        assert_eq!(fs::read(&x[0].location).unwrap(), b"file");
        put_file(&store, &ns, run, "x", b"file again", 2); // directory x becomes a file
        assert_eq!(fs::read(mirror(&store, "x")).unwrap(), b"file again");
        let inner = store.versions(&ns, &rel("x/inner")).unwrap();
        assert!(inner[0].deleted && !inner[0].current);
        assert_eq!(fs::read(&inner[0].location).unwrap(), b"child");
        let dir = Entry {
            path: rel("x"),
            kind: EntryKind::Dir,
            mtime_ns: 7,
            mode: 0o750,
        };
        store.put_dir(&ns, run, &dir).unwrap(); // and back, by an explicit directory
        let x = store.versions(&ns, &rel("x")).unwrap();
        assert_eq!(x[0].kind, "dir");
        assert_eq!(fs::read(&x[1].location).unwrap(), b"file again");
        let paths: Vec<_> = store
            .current(&ns)
            .unwrap()
            .into_iter()
            .map(|v| (v.path, v.kind))
            .collect();
        assert_eq!(paths, [(rel("x"), "dir".to_owned())]);
    }

    #[test]
    fn symlink_is_stored_as_a_link() {
        let (_dir, store, ns) = fixture();
        let run = store.begin_run(&ns).unwrap();
        let target = b"../no/such\xff".to_vec();
        let entry = Entry {
            path: rel("l"),
            kind: EntryKind::Symlink {
                target: target.clone(),
            },
            mtime_ns: 1_500_000_000_000_000_001,
            mode: 0o777,
        };
        store.put_symlink(&ns, run, &entry).unwrap();
        let path = mirror(&store, "l");
        assert_eq!(
            fs::read_link(&path).unwrap().as_os_str().as_bytes(),
            target.as_slice()
        );
        assert_eq!(
            mtime_ns(&fs::symlink_metadata(&path).unwrap()),
            1_500_000_000_000_000_001
        );
        // The same link again only adds a version; another target archives.
        store.put_symlink(&ns, run, &entry).unwrap();
        let other = Entry {
            kind: EntryKind::Symlink {
                target: b"t2".to_vec(),
            },
            ..entry.clone()
        };
        store.put_symlink(&ns, run, &other).unwrap();
        assert_eq!(fs::read_link(&path).unwrap().as_os_str().as_bytes(), b"t2");
        let v = store.versions(&ns, &rel("l")).unwrap();
        assert_eq!(v.len(), 3);
        assert_eq!(v[0].target.as_deref(), Some(&b"t2"[..]));
        for old in &v[1..] {
            assert_eq!(
                fs::read_link(&old.location).unwrap().as_os_str().as_bytes(),
                target.as_slice()
            );
        }
    }

    #[test]
    fn holds_and_metadata_updates() {
        let (_dir, store, ns) = fixture();
        let run = store.begin_run(&ns).unwrap();
        let hash = *blake3::hash(b"same").as_bytes();
        assert!(!store.holds(&ns, &rel("f"), &hash).unwrap());
        put_file(&store, &ns, run, "f", b"same", 1);
        assert!(store.holds(&ns, &rel("f"), &hash).unwrap());
        assert!(!store
            .holds(&ns, &rel("f"), blake3::hash(b"other").as_bytes())
            .unwrap());
        let entry = file_entry("f", b"same", 42, 0o600);
        store.update_metadata(&ns, run, &entry, &hash).unwrap();
        let meta = fs::symlink_metadata(mirror(&store, "f")).unwrap();
        assert_eq!(
            (mtime_ns(&meta), meta.permissions().mode() & 0o7777),
            (42, 0o600)
        );
        let v = store.versions(&ns, &rel("f")).unwrap();
        assert_eq!(v.len(), 2);
        assert!(v[0].current && !v[1].current);
        assert_eq!(
            v[1].location, v[0].location,
            "identical bytes are shared, not copied"
        );
        // A mirror file of another size (changed by hand) is not held.
        fs::write(mirror(&store, "f"), b"tampered").unwrap();
        assert!(!store.holds(&ns, &rel("f"), &hash).unwrap());
        let err = store.update_metadata(&ns, run, &entry, &hash).unwrap_err();
        assert_eq!(err.fail_code(), ferry_proto::FailCode::Conflict);
    }

    #[test]
    fn a_change_failing_half_way_still_records_the_archive() {
        let (_dir, store, ns) = fixture();
        let run = store.begin_run(&ns).unwrap();
        put_file(&store, &ns, run, "l", b"old bytes", 1);
        // A link target longer than Linux allows fails after `l` was archived.
        let entry = Entry {
            path: rel("l"),
            kind: EntryKind::Symlink {
                target: vec![b'x'; 5000],
            },
            mtime_ns: 0,
            mode: 0o777,
        };
        let err = store.put_symlink(&ns, run, &entry).unwrap_err();
        assert_eq!(err.fail_code(), ferry_proto::FailCode::Io, "{err}");
        let v = store.versions(&ns, &rel("l")).unwrap();
        assert_eq!(v.len(), 1);
        assert!(!v[0].current);
        assert_eq!(fs::read(&v[0].location).unwrap(), b"old bytes");
        assert!(store.current(&ns).unwrap().is_empty());
    }

    fn verified(store: &Store, ns: &Namespace, path: &str, data: &[u8]) -> (Entry, Verified) {
        let entry = file_entry(path, data, 1_700_000_000_000_000_000, 0o644);
        let mut staged = store.stage(ns, &entry.path, data.len() as u64).unwrap();
        staged.write(data).unwrap();
        (entry, staged.finish(blake3::hash(data).as_bytes()).unwrap())
    }

    #[test]
    fn a_batch_commits_every_op_and_archives_what_it_replaces() {
        let (_dir, store, ns) = fixture();
        let run = store.begin_run(&ns).unwrap();
        put_file(&store, &ns, run, "old.txt", b"old", 1);
        let run = store.begin_run(&ns).unwrap();
        let (e1, v1) = verified(&store, &ns, "old.txt", b"new content");
        let (e2, v2) = verified(&store, &ns, "d/inner/f", b"f");
        let dir = Entry {
            path: rel("d"),
            kind: EntryKind::Dir,
            mtime_ns: 5,
            mode: 0o750,
        };
        let link = Entry {
            path: rel("l"),
            kind: EntryKind::Symlink {
                target: b"old.txt".to_vec(),
            },
            mtime_ns: 6,
            mode: 0o777,
        };
        // An op that fails (its content belongs to another path) does not
        // stop the others.
        let (e3, _) = verified(&store, &ns, "x", b"x");
        let (_, v3) = verified(&store, &ns, "y", b"x");
        let ops = vec![
            Op::File {
                entry: e1,
                staged: v1,
            },
            Op::File {
                entry: e2,
                staged: v2,
            },
            Op::Dir(dir),
            Op::Symlink(link),
            Op::File {
                entry: e3,
                staged: v3,
            },
        ];
        let results = store.apply_batch(&ns, run, ops);
        assert!(results[..4].iter().all(Result::is_ok), "{results:?}");
        assert!(matches!(results[4], Err(StoreError::BadEntry { .. })));
        assert_eq!(fs::read(mirror(&store, "old.txt")).unwrap(), b"new content");
        assert_eq!(fs::read(mirror(&store, "d/inner/f")).unwrap(), b"f");
        assert_eq!(
            fs::read_link(mirror(&store, "l")).unwrap(),
            PathBuf::from("old.txt")
        );
        assert!(!mirror(&store, "x").exists());
        let versions = store.versions(&ns, &rel("old.txt")).unwrap();
        assert_eq!(versions.len(), 2);
        let old = versions.iter().find(|v| !v.current).unwrap();
        assert_eq!(fs::read(&old.location).unwrap(), b"old");
        let current: Vec<String> = store
            .current(&ns)
            .unwrap()
            .iter()
            .map(|v| v.path.to_string())
            .collect();
        for path in ["old.txt", "d", "d/inner/f", "l"] {
            assert!(
                current.iter().any(|p| p == path),
                "{path} not current: {current:?}"
            );
        }
        assert_eq!(staging_count(&store), 0);
    }

    /// A batch remembers which directories it found real; a directory it
    /// then replaces (here by a symlink pointing outside) is forgotten, so a
    /// later file of the batch below that path is never written through
    /// the symlink.
    #[test]
    fn a_directory_replaced_within_a_batch_is_checked_again() {
        let (dir, store, ns) = fixture();
        let run = store.begin_run(&ns).unwrap();
        let outside = dir.path().join("outside");
        fs::create_dir(&outside).unwrap();
        let (e1, v1) = verified(&store, &ns, "d/x", b"x");
        let link = Entry {
            path: rel("d"),
            kind: EntryKind::Symlink {
                target: outside.as_os_str().as_encoded_bytes().to_vec(),
            },
            mtime_ns: 6,
            mode: 0o777,
        };
        let (e2, v2) = verified(&store, &ns, "d/y", b"y");
        let ops = vec![
            Op::File {
                entry: e1,
                staged: v1,
            },
            Op::Symlink(link),
            Op::File {
                entry: e2,
                staged: v2,
            },
        ];
        let results = store.apply_batch(&ns, run, ops);
        assert!(results.iter().all(Result::is_ok), "{results:?}");
        assert_eq!(fs::read_dir(&outside).unwrap().count(), 0);
        assert!(fs::symlink_metadata(mirror(&store, "d")).unwrap().is_dir());
        assert_eq!(fs::read(mirror(&store, "d/y")).unwrap(), b"y");
        // The symlink and the first directory are archived versions.
        let versions = store.versions(&ns, &rel("d")).unwrap();
        assert!(versions.iter().any(|v| v.kind == "symlink" && !v.current));
    }

    /// A receiver killed between moving a file into the versions area and
    /// recording it leaves the catalog pointing at the mirror: the next
    /// deletion or new version of the path finds the bytes by the row's id
    /// and records where they are.
    #[test]
    fn bytes_moved_by_a_cut_off_operation_are_found_again() {
        let (_dir, store, ns) = fixture();
        let run = store.begin_run(&ns).unwrap();
        put_file(&store, &ns, run, "d/gone.txt", b"deleted later", 1);
        put_file(&store, &ns, run, "d/changed.txt", b"first", 1);
        let versions = store.root().join(".ferry/versions/lap/docs/d");
        fs::create_dir_all(&versions).unwrap();
        for leaf in ["gone.txt", "changed.txt"] {
            let path = format!("d/{leaf}");
            let row = store
                .catalog()
                .current_row(ns.sender_id, &ns.folder, &rel(&path))
                .unwrap()
                .unwrap();
            let name = mirror::archive_name(
                leaf.as_bytes(),
                "20260101-000000",
                mirror::Tag::Version(row.id as u64),
                0,
            );
            fs::rename(mirror(&store, &path), mirror::join_bytes(&versions, &name)).unwrap();
        }
        let run = store.begin_run(&ns).unwrap();
        store.delete(&ns, run, &rel("d/gone.txt")).unwrap();
        put_file(&store, &ns, run, "d/changed.txt", b"second", 2);
        for (path, old) in [
            ("d/gone.txt", &b"deleted later"[..]),
            ("d/changed.txt", b"first"),
        ] {
            let versions = store.versions(&ns, &rel(path)).unwrap();
            let archived = versions.iter().find(|v| !v.current).unwrap();
            assert_eq!(fs::read(&archived.location).unwrap(), old, "{path}");
        }
        assert_eq!(
            fs::read(mirror(&store, "d/changed.txt")).unwrap(),
            b"second"
        );
    }

    #[test]
    fn a_batch_of_metadata_changes_needs_no_content() {
        let (_dir, store, ns) = fixture();
        let run = store.begin_run(&ns).unwrap();
        put_file(&store, &ns, run, "a", b"same", 1);
        let entry = file_entry("a", b"same", 42, 0o600);
        let hash = *blake3::hash(b"same").as_bytes();
        let results = store.apply_batch(&ns, run, vec![Op::Metadata { entry, hash }]);
        assert!(results[0].is_ok(), "{results:?}");
        let meta = fs::metadata(mirror(&store, "a")).unwrap();
        assert_eq!(meta.mode() & 0o7777, 0o600);
        assert_eq!(mtime_ns(&meta), 42);
    }
}
