//! Where a store keeps its versions' bytes: one small trait, [`Place`], with
//! two implementations.
//!
//! - [`Mirror`]: the local directory (the layout every store had before
//!   buckets, unchanged): current files in a browsable mirror, replaced and
//!   deleted ones moved into `.ferry/versions`, made durable with `syncfs`.
//! - [`Packed`]: a bucket of an S3-compatible object store: content in
//!   immutable, content-addressed packs, a version's bytes found by the
//!   hashes of its blobs (see `packed`).
//!
//! Everything above a place is the same for both: the receiver's sessions
//! and group commit, the catalog and the changes each op makes to it
//! (`catalog::changes`), quotas, retention's choice of versions, requests
//! and the read commands all call [`Store`], which asks its place only for
//! the steps that touch bytes: make a batch's changes, make them durable,
//! record them, delete, read a version or a delta's base, say where a
//! version is, end a run, free what retention dropped.

use std::fs::File;
use std::path::PathBuf;

use ferry_proto::{Base, Hash, RelPath};

use super::apply::Op;
use super::archive::Work;
use super::catalog::{self, Catalog, VersionRow};
use super::delta_base::BaseContent;
use super::error::{HistoryError, StoreError};
use super::locate::{Located, Unservable};
use super::packed::{Packed, PackedBatch};
use super::retention::PruneReport;
use super::{Namespace, Store, Verified, VerifyReport, VersionRecord};
use crate::chunk::ChunkInfo;

/// A batch's changes made in a place and not yet recorded
/// ([`Place::apply`] to [`Place::record`]).
pub(crate) enum Pending {
    /// The mirror's changes on disk, with the catalog changes they make.
    Mirror(Work),
    /// A bucket's batch: its content put, its versions to record.
    Packed(PackedBatch),
}

/// Where a store keeps its versions' bytes (see the module documentation).
/// Every method runs on a blocking thread; those that change bytes run under
/// the store's write lock, taken by the caller.
pub(crate) trait Place: Send + Sync + std::fmt::Debug {
    /// The first half of a group commit: makes each op's change (each op
    /// gets its result; a failed one does not stop the others). The mirror
    /// archives and renames into place; a bucket packs the new blobs and
    /// puts the packs. Nothing is recorded yet.
    fn apply(
        &self,
        store: &Store,
        ns: &Namespace,
        ops: Vec<Op>,
    ) -> (Pending, Vec<Result<(), StoreError>>);

    /// A small whole file that arrived in memory (a bundle's), checked
    /// against `hash` and held for its commit: the mirror writes it to a
    /// staging file, to be renamed into place; a bucket keeps it in memory
    /// until it is packed (a file per small file would only be written,
    /// read back and deleted).
    fn stage_whole(
        &self,
        store: &Store,
        ns: &Namespace,
        path: &RelPath,
        data: Vec<u8>,
        hash: &Hash,
    ) -> Result<Verified, StoreError>;

    /// Makes what [`Place::apply`] wrote durable (the mirror: one `syncfs`;
    /// a bucket: nothing, a PUT that returned is).
    fn flush(&self, store: &Store) -> Result<(), StoreError>;

    /// Records a batch in one catalog transaction; `results` of ops that
    /// fail in it are set here. `Err`: the whole batch failed, why.
    fn record(
        &self,
        store: &Store,
        ns: &Namespace,
        run: u64,
        pending: Pending,
        results: &mut [Result<(), StoreError>],
    ) -> Result<(), String>;

    /// One op made durable and recorded on its own (outside a batch).
    fn commit_one(&self, store: &Store, ns: &Namespace, run: u64, op: Op)
        -> Result<(), StoreError>;

    /// Archives `path` and everything below it, recording them as deleted.
    fn delete(
        &self,
        store: &Store,
        ns: &Namespace,
        run: u64,
        path: &RelPath,
    ) -> Result<(), StoreError>;

    /// True if the bytes of `row`, the current version of `path`, are there
    /// to be read.
    fn holds(
        &self,
        store: &Store,
        ns: &Namespace,
        path: &RelPath,
        row: &VersionRow,
    ) -> Result<bool, StoreError>;

    /// Opens a file version's bytes for reading.
    fn open_version(&self, store: &Store, record: &VersionRecord) -> Result<File, StoreError>;

    /// The base of a delta: a version of `base.path` with its content and
    /// `chunks` (`size` bytes in all), if its bytes are there.
    fn base(
        &self,
        store: &Store,
        ns: &Namespace,
        base: &Base,
        chunks: Vec<ChunkInfo>,
        size: u64,
    ) -> Result<Option<BaseContent>, StoreError>;

    /// Where a version's bytes are, for people and for reading (and why it
    /// cannot be served, if so).
    fn location(
        &self,
        store: &Store,
        ns: &Namespace,
        path: &RelPath,
        current: bool,
        at: &Located,
    ) -> (PathBuf, Option<Unservable>);

    /// After a run's row is closed: the mirror puts back the directories'
    /// mtimes the run moved; a bucket gets a copy of the catalog.
    fn run_finished(&self, store: &Store, ns: &Namespace, run: u64) -> Result<(), StoreError>;

    /// `ferry verify`: every version's bytes read back and checked against
    /// the catalog (the mirror and versions area, or every pack the catalog
    /// names, blob by blob), with what nothing names counted apart.
    fn verify(&self, store: &Store) -> Result<VerifyReport, HistoryError>;

    /// True if versions share bytes by their content hash (a bucket): a
    /// dropped version's row goes without looking for bytes it owns.
    fn shares_by_hash(&self) -> bool;

    /// After retention dropped rows: frees what they alone used (the mirror:
    /// `files` and then the emptied `dirs` of the versions area; a bucket:
    /// packs no kept version uses), counted in `report`.
    fn free(
        &self,
        store: &Store,
        files: Vec<PathBuf>,
        dirs: Vec<PathBuf>,
        report: &mut PruneReport,
    ) -> Result<(), StoreError>;
}

/// The local directory (see the module documentation).
#[derive(Debug, Default)]
pub(crate) struct Mirror;

impl Place for Mirror {
    fn apply(
        &self,
        store: &Store,
        ns: &Namespace,
        ops: Vec<Op>,
    ) -> (Pending, Vec<Result<(), StoreError>>) {
        let mut work = Work::default();
        let results = ops
            .into_iter()
            .map(|op| match op {
                Op::File { entry, mut staged } => {
                    store.commit_file_in(ns, &entry, &mut staged, &mut work)
                }
                Op::Metadata { entry, hash } => {
                    store.update_metadata_in(ns, &entry, &hash, false, &mut work)
                }
                Op::Dir(entry) => store.put_dir_in(ns, &entry, &mut work),
                Op::Symlink(entry) => store.put_symlink_in(ns, &entry, &mut work),
            })
            .collect();
        (Pending::Mirror(work), results)
    }

    fn stage_whole(
        &self,
        store: &Store,
        ns: &Namespace,
        path: &RelPath,
        data: Vec<u8>,
        hash: &Hash,
    ) -> Result<Verified, StoreError> {
        let mut staged = store.stage(ns, path, data.len() as u64)?;
        staged.write(&data)?;
        staged.finish(hash)
    }

    fn flush(&self, store: &Store) -> Result<(), StoreError> {
        store.tree.syncfs()
    }

    fn record(
        &self,
        store: &Store,
        ns: &Namespace,
        run: u64,
        pending: Pending,
        _results: &mut [Result<(), StoreError>],
    ) -> Result<(), String> {
        let Pending::Mirror(work) = pending else {
            return Err("a bucket's batch given to a local store (internal error)".into());
        };
        store
            .tree
            .step(&store.root)
            .map_err(|e| crate::chain::chain(&e))?;
        let mut cat = store.catalog();
        let run = catalog::sql_u64(run);
        Catalog::apply(&mut cat, ns.sender_id, &ns.folder, run, &work.changes)
            .map_err(|e| crate::chain::chain(&e))
    }

    fn commit_one(
        &self,
        store: &Store,
        ns: &Namespace,
        run: u64,
        op: Op,
    ) -> Result<(), StoreError> {
        store.commit_one_local(ns, run, op)
    }

    fn delete(
        &self,
        store: &Store,
        ns: &Namespace,
        run: u64,
        path: &RelPath,
    ) -> Result<(), StoreError> {
        store.delete_local(ns, run, path)
    }

    fn holds(
        &self,
        store: &Store,
        ns: &Namespace,
        path: &RelPath,
        row: &VersionRow,
    ) -> Result<bool, StoreError> {
        // A regular file of the recorded size, reached without following a
        // symlink.
        if !store.ns_dir_ok(ns)? {
            return Ok(false);
        }
        let meta = store.tree.lookup(&store.ns_dir(ns), path)?;
        Ok(meta.is_some_and(|m| m.is_file() && i64::try_from(m.len()).ok() == Some(row.size)))
    }

    fn open_version(&self, store: &Store, record: &VersionRecord) -> Result<File, StoreError> {
        store.open_stored(&record.location)
    }

    fn base(
        &self,
        store: &Store,
        ns: &Namespace,
        base: &Base,
        chunks: Vec<ChunkInfo>,
        size: u64,
    ) -> Result<Option<BaseContent>, StoreError> {
        store.local_base(ns, base, chunks, size)
    }

    fn location(
        &self,
        store: &Store,
        ns: &Namespace,
        path: &RelPath,
        current: bool,
        at: &Located,
    ) -> (PathBuf, Option<Unservable>) {
        let location = match (current, at.bytes()) {
            (false, Some(bytes)) => store.root.join(bytes),
            _ => path.under(&store.ns_dir(ns)),
        };
        (location, at.unservable().cloned())
    }

    fn run_finished(&self, store: &Store, ns: &Namespace, run: u64) -> Result<(), StoreError> {
        store.restore_dir_mtimes(ns, run)
    }

    fn verify(&self, store: &Store) -> Result<VerifyReport, HistoryError> {
        super::verify(&store.root)
    }

    fn shares_by_hash(&self) -> bool {
        false
    }

    fn free(
        &self,
        store: &Store,
        files: Vec<PathBuf>,
        dirs: Vec<PathBuf>,
        report: &mut PruneReport,
    ) -> Result<(), StoreError> {
        store.free_local(files, dirs, report)
    }
}

impl Place for Packed {
    fn apply(
        &self,
        store: &Store,
        _ns: &Namespace,
        ops: Vec<Op>,
    ) -> (Pending, Vec<Result<(), StoreError>>) {
        let (batch, results) = store.pack_ops(self, ops);
        (Pending::Packed(batch), results)
    }

    fn stage_whole(
        &self,
        _store: &Store,
        _ns: &Namespace,
        path: &RelPath,
        data: Vec<u8>,
        hash: &Hash,
    ) -> Result<Verified, StoreError> {
        Verified::in_memory(path.clone(), data, hash)
    }

    fn flush(&self, _store: &Store) -> Result<(), StoreError> {
        // Content is durable once its pack is in the bucket; nothing of the
        // state directory needs to be.
        Ok(())
    }

    fn record(
        &self,
        store: &Store,
        ns: &Namespace,
        run: u64,
        pending: Pending,
        results: &mut [Result<(), StoreError>],
    ) -> Result<(), String> {
        let Pending::Packed(batch) = pending else {
            return Err("a local batch given to a bucket store (internal error)".into());
        };
        store.record_packed(ns, run, batch, results)
    }

    fn commit_one(
        &self,
        store: &Store,
        ns: &Namespace,
        run: u64,
        op: Op,
    ) -> Result<(), StoreError> {
        store.apply_one(ns, run, op)
    }

    fn delete(
        &self,
        store: &Store,
        ns: &Namespace,
        run: u64,
        path: &RelPath,
    ) -> Result<(), StoreError> {
        store.delete_packed(self, ns, run, path)
    }

    fn holds(
        &self,
        _store: &Store,
        _ns: &Namespace,
        _path: &RelPath,
        _row: &VersionRow,
    ) -> Result<bool, StoreError> {
        // Recorded only once its blobs were in the bucket.
        Ok(true)
    }

    fn open_version(&self, store: &Store, record: &VersionRecord) -> Result<File, StoreError> {
        match &record.hash {
            Some(hash) => store.open_packed(self, record.id, hash, record.size),
            None => Err(StoreError::Bucket {
                action: "read a version from",
                bucket: self.bucket().name().to_owned(),
                detail: format!(
                    "version {} of {} has no content hash",
                    record.id, record.path
                ),
            }),
        }
    }

    fn base(
        &self,
        store: &Store,
        ns: &Namespace,
        base: &Base,
        chunks: Vec<ChunkInfo>,
        size: u64,
    ) -> Result<Option<BaseContent>, StoreError> {
        // The base reads its chunks later, through a handle it keeps.
        match &store.packed {
            Some(packed) => store.packed_base(packed, ns, base, chunks, size),
            None => Ok(None),
        }
    }

    fn location(
        &self,
        store: &Store,
        ns: &Namespace,
        path: &RelPath,
        _current: bool,
        _at: &Located,
    ) -> (PathBuf, Option<Unservable>) {
        // Every version's bytes are its blobs, wherever the path went.
        (store.packed_location(self, ns, path), None)
    }

    fn run_finished(&self, store: &Store, ns: &Namespace, run: u64) -> Result<(), StoreError> {
        // No mirror to give directory mtimes; the bucket gets a copy of the
        // catalog instead, so the bucket alone recovers this run. A run
        // that changed no version needs none (its row in the history comes
        // with the next copy), unless a copy is owed.
        let changed =
            store
                .catalog()
                .run_changed(ns.sender_id, &ns.folder, catalog::sql_u64(run))?;
        if changed || self.copy_owed() {
            if let Err(e) = store.copy_catalog(self) {
                tracing::warn!("{}; the next run copies it again", crate::chain::Chain(&e));
            }
        }
        Ok(())
    }

    fn verify(&self, store: &Store) -> Result<VerifyReport, HistoryError> {
        Ok(store.verify_packed(self)?)
    }

    fn shares_by_hash(&self) -> bool {
        true
    }

    fn free(
        &self,
        store: &Store,
        _files: Vec<PathBuf>,
        _dirs: Vec<PathBuf>,
        report: &mut PruneReport,
    ) -> Result<(), StoreError> {
        let collected = store.collect_packs(self)?;
        report.files_removed = collected.deleted as u64;
        report.bytes_freed = collected.freed_bytes;
        Ok(())
    }
}
