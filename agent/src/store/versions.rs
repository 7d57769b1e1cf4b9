//! A path's versions as records ([`VersionRecord`]): every version of a
//! path, the current entries, whether the mirror holds some content, and
//! opening stored bytes, a version by id.

use std::fs::File;
use std::path::{Path, PathBuf};

use ferry_proto::{Entry, EntryKind, Hash, RelPath};
use rusqlite::{params, OptionalExtension};

use super::catalog::{self, Catalog, VersionRow};
use super::error::io_err;
use super::{locate, Namespace, Store, StoreError, VersionRecord};

impl Store {
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
        self.place.holds(self, ns, path, &row)
    }

    /// True if the current version of `entry.path` is exactly `entry`: same
    /// kind, size, mtime, mode, content `hash` (files) or link target. A
    /// sender that offers everything again (`Welcome::resync`) is answered
    /// without a new version for such entries.
    pub fn is_current(
        &self,
        ns: &Namespace,
        entry: &Entry,
        hash: Option<&Hash>,
    ) -> Result<bool, StoreError> {
        let row = self
            .catalog()
            .current_row(ns.sender_id, &ns.folder, &entry.path)?;
        let Some(row) = row else { return Ok(false) };
        let same_meta = row.mtime_ns == entry.mtime_ns && row.mode == i64::from(entry.mode);
        Ok(same_meta
            && match &entry.kind {
                EntryKind::File { size, .. } => {
                    row.kind == "file"
                        && i64::try_from(*size).ok() == Some(row.size)
                        && hash.is_some_and(|h| row.hash.as_deref() == Some(h.as_slice()))
                }
                EntryKind::Dir => row.kind == "dir",
                EntryKind::Symlink { target } => {
                    row.kind == "symlink" && row.target.as_deref() == Some(target.as_slice())
                }
            })
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

    /// Opens the stored bytes of file version `record` for reading: in a
    /// local store the file at its location ([`Store::open_stored`]), in a
    /// bucket store its blobs read from the bucket, each checked, into an
    /// unnamed file of the staging directory.
    pub fn open_version(&self, record: &VersionRecord) -> Result<File, StoreError> {
        self.place.open_version(self, record)
    }

    pub(super) fn version_record(
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
        let (location, unservable) = self.place.location(self, ns, &path, current, &at);
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

    /// Version `id`, if it is a version of `ns` (of any other sender or
    /// folder it is `None`, as if it did not exist).
    pub fn version_in(&self, ns: &Namespace, id: u64) -> Result<Option<VersionRecord>, StoreError> {
        let path: Option<Vec<u8>> = {
            let cat = self.catalog();
            cat.conn()
                .query_row(
                    "SELECT path FROM versions WHERE id = ?1 AND sender_id = ?2 AND folder = ?3",
                    params![catalog::sql_u64(id), ns.sender_id, ns.folder.as_str()],
                    |r| r.get(0),
                )
                .optional()
                .map_err(|e| cat.err(e))?
        };
        let Some(path) = path else { return Ok(None) };
        let path = RelPath::from_bytes(path)
            .map_err(|e| self.catalog().corrupt(format!("version {id}: {e}")))?;
        let id = i64::try_from(id).unwrap_or(i64::MAX);
        Ok(self.versions(ns, &path)?.into_iter().find(|v| v.id == id))
    }
}
