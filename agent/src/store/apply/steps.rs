//! One change to the mirror, on disk: each step archives what is in its
//! way, puts the new content, directory or symlink in place (or updates
//! metadata) and collects the catalog changes the caller records.

use std::os::unix::fs::MetadataExt;

use ferry_proto::{Entry, EntryKind, Hash};

use super::bad;
use crate::store::archive::{self, Work};
use crate::store::catalog::{self, Below, Change, NewVersion};
use crate::store::error::{io_err, StoreError};
use crate::store::mirror;
use crate::store::{Namespace, Store, Verified};

impl Store {
    pub(in crate::store) fn commit_file_in(
        &self,
        ns: &Namespace,
        entry: &Entry,
        staged: &mut Verified,
        work: &mut Work,
    ) -> Result<(), StoreError> {
        staged.fits(entry)?;
        let staging = staged.file()?;
        mirror::set_meta(&staging.file, &staging.path, entry.mode, 0, entry.mtime_ns)?;
        let target = self.prepare_parents(ns, &entry.path, work)?;
        self.retire_existing(ns, &entry.path, false, work)?;
        let staging = staged.file()?;
        self.tree.rename(&staging.path, &target)?;
        staging.armed = false;
        work.touched(&target);
        work.changes.push(Change::Insert(NewVersion {
            path: entry.path.clone(),
            kind: "file",
            // What arrived: the entry's size may be an upper bound.
            size: staged.size,
            mtime_ns: entry.mtime_ns,
            mode: entry.mode,
            hash: Some(staged.hash),
            target: None,
            chunks: staged.chunks.take(),
            stored: Some(staged.stored),
        }));
        Ok(())
    }

    /// `fsync`: make the metadata change durable now (single op) rather than
    /// at the batch's barrier.
    pub(in crate::store) fn update_metadata_in(
        &self,
        ns: &Namespace,
        entry: &Entry,
        hash: &Hash,
        fsync: bool,
        work: &mut Work,
    ) -> Result<(), StoreError> {
        let EntryKind::File { size, .. } = entry.kind else {
            return Err(bad(entry, "update_metadata needs a file entry"));
        };
        let current = self.current_row(ns, &entry.path, work)?;
        let same = current.as_ref().is_some_and(|r| {
            r.kind == "file"
                && r.hash.as_deref() == Some(hash.as_slice())
                && r.size == catalog::sql_u64(size)
        });
        let meta = if self.ns_dir_ok(ns)? {
            self.tree.lookup(&self.ns_dir(ns), &entry.path)?
        } else {
            None
        };
        if !same
            || !meta
                .as_ref()
                .is_some_and(|m| m.is_file() && m.len() == size)
        {
            return Err(StoreError::Conflict {
                path: entry.path.clone(),
                detail: "the stored content changed or is missing; send the content again".into(),
            });
        }
        // The mirror's file has another mtime than the store gave the row:
        // a commit cut off after it archived the row's bytes put this
        // identical copy in place. The row then points at its own archived
        // bytes, which stay accounted for.
        let archive = match (&current, &meta) {
            (Some(row), Some(m)) if m.mtime() * 1_000_000_000 + m.mtime_nsec() != row.mtime_ns => {
                self.archived_bytes(ns, &entry.path, row)
            }
            _ => None,
        };
        let target = entry.path.under(&self.ns_dir(ns));
        let file = self.tree.open_nofollow(&target, false)?;
        mirror::set_meta(&file, &target, entry.mode, 0, entry.mtime_ns)?;
        if fsync {
            file.sync_all().map_err(|e| io_err("fsync", &target, e))?;
        }
        work.changes.push(Change::Retire {
            path: entry.path.clone(),
            archive,
            deleted: false,
            below: Below::Untouched,
        });
        work.changes.push(Change::Insert(NewVersion {
            path: entry.path.clone(),
            kind: "file",
            size,
            mtime_ns: entry.mtime_ns,
            mode: entry.mode,
            hash: Some(*hash),
            target: None,
            chunks: None,
            stored: None,
        }));
        Ok(())
    }

    pub(in crate::store) fn put_dir_in(
        &self,
        ns: &Namespace,
        entry: &Entry,
        work: &mut Work,
    ) -> Result<(), StoreError> {
        if entry.kind != EntryKind::Dir {
            return Err(bad(entry, "put_dir needs a directory entry"));
        }
        let target = self.prepare_parents(ns, &entry.path, work)?;
        let current = self.current_row(ns, &entry.path, work)?;
        let existing = self.tree.lstat(&target)?;
        let keep_row = match (&existing, &current) {
            (Some(m), Some(row)) if m.is_dir() && row.kind == "dir" => Some(row),
            (Some(m), _) if m.is_dir() => {
                // A directory without a current dir row: created as a
                // parent, or by an operation cut off before its record.
                // Whatever row there is lost its place in the mirror:
                // retire it where its bytes went, and record a new one.
                self.retire_missing(ns, &entry.path, false, true, work)?;
                None
            }
            _ => {
                self.retire_existing(ns, &entry.path, false, work)?;
                self.tree.create_dir(&target)?;
                work.touched(&target);
                None
            }
        };
        let dir = self.tree.open_nofollow(&target, true)?;
        mirror::set_meta(&dir, &target, entry.mode, 0o700, entry.mtime_ns)?;
        let new_row = Change::Insert(NewVersion::dir(entry));
        match keep_row {
            // Recorded by this very batch (the same path twice): the first
            // row stands.
            Some(row) if row.id == archive::PENDING => {}
            // The same metadata: the row stands, with the run that recorded it.
            Some(row) if row.mtime_ns == entry.mtime_ns && row.mode == i64::from(entry.mode) => {}
            // New metadata: a new version, as a file's metadata-only change,
            // so that the tree as of an earlier run keeps the directory as
            // it was. A directory holds no bytes: nothing is archived, and
            // what is below it stays current.
            Some(_) => {
                work.changes.push(Change::Retire {
                    path: entry.path.clone(),
                    archive: None,
                    deleted: false,
                    below: Below::Untouched,
                });
                work.changes.push(new_row);
            }
            None => work.changes.push(new_row),
        }
        Ok(())
    }

    pub(in crate::store) fn put_symlink_in(
        &self,
        ns: &Namespace,
        entry: &Entry,
        work: &mut Work,
    ) -> Result<(), StoreError> {
        let EntryKind::Symlink { target: link } = &entry.kind else {
            return Err(bad(entry, "put_symlink needs a symlink entry"));
        };
        let target = self.prepare_parents(ns, &entry.path, work)?;
        let current = self.current_row(ns, &entry.path, work)?;
        let same_on_disk = match self.tree.lstat(&target)? {
            Some(m) if m.is_symlink() => self.tree.read_link(&target)? == *link,
            _ => false,
        };
        if same_on_disk {
            let same_row = current
                .as_ref()
                .is_some_and(|r| r.kind == "symlink" && r.target.as_ref() == Some(link));
            if same_row {
                work.changes.push(Change::Retire {
                    path: entry.path.clone(),
                    archive: None,
                    deleted: false,
                    below: Below::Untouched,
                });
            } else {
                // The link on disk is an unrecorded copy of this one; the
                // current row's bytes are not in the mirror.
                self.retire_missing(ns, &entry.path, false, true, work)?;
            }
        } else {
            self.retire_existing(ns, &entry.path, false, work)?;
            self.tree.symlink(link, &target)?;
            work.touched(&target);
        }
        self.tree.set_symlink_mtime(&target, entry.mtime_ns)?;
        work.changes
            .push(Change::Insert(NewVersion::symlink(entry, link)));
        Ok(())
    }
}
