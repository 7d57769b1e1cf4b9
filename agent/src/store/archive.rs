//! Moving what is in the way into the versions area, and making the
//! mirror's directories real, without following symlinks. Runs under the
//! store's write lock (see `apply`).

use std::collections::HashSet;
use std::io::Read;
use std::os::unix::fs::MetadataExt;
use std::path::{Path, PathBuf};
use std::time::SystemTime;

use ferry_proto::RelPath;

use super::catalog::{Below, Change, NewVersion, VersionRow};
use super::error::{io_err, StoreError};
use super::mirror::{self, Tag, Tree};
use super::{Namespace, Store};

/// The id of a row that this work inserted and has not recorded yet.
pub(super) const PENDING: i64 = -1;

/// Archive names with more collisions than this give up (it cannot happen
/// unless something else floods the versions area).
const MAX_NAME_TRIES: u32 = 10_000;

/// What one operation (or one batch) did on disk and must record.
#[derive(Default)]
pub(super) struct Work {
    /// The catalog changes, applied in one transaction.
    pub changes: Vec<Change>,
    /// Directories whose entries changed, to fsync before recording.
    pub dirty: Vec<PathBuf>,
    dirty_set: HashSet<PathBuf>,
    /// Directories of the mirror this work found real or made, so that the
    /// next entry below them does not check them again. Only this work
    /// changes the mirror meanwhile (the write lock is held); archiving
    /// anything forgets them all.
    known_dirs: HashSet<PathBuf>,
}

impl Work {
    /// Notes that the directory holding `path` changed.
    pub fn touched(&mut self, path: &Path) {
        if let Some(parent) = path.parent() {
            if self.dirty_set.insert(parent.to_path_buf()) {
                self.dirty.push(parent.to_path_buf());
            }
        }
    }
}

impl Store {
    /// The current row of `rel` as `work` leaves it: a change this work
    /// made (inserted a row there, or retired `rel` or a directory above
    /// it) counts before the catalog, which does not hold it yet. Without
    /// this, a later op of a batch would act on rows an earlier op of the
    /// same batch already retired (and, say, retire the children that the
    /// earlier op had just stored).
    pub(super) fn current_row(
        &self,
        ns: &Namespace,
        rel: &RelPath,
        work: &Work,
    ) -> Result<Option<VersionRow>, StoreError> {
        for change in work.changes.iter().rev() {
            match change {
                Change::Insert(v) if v.path == *rel => return Ok(Some(pending_row(v))),
                Change::Retire { path, .. } if path == rel => return Ok(None),
                Change::Retire { path, below, .. }
                    if rel.starts_with(path) && *below != Below::Untouched =>
                {
                    return Ok(None)
                }
                _ => {}
            }
        }
        self.catalog().current_row(ns.sender_id, &ns.folder, rel)
    }

    /// Makes every parent of `rel` a real directory of the mirror, archiving
    /// a file or symlink in the way. Returns the absolute path of `rel`.
    pub(super) fn prepare_parents(
        &self,
        ns: &Namespace,
        rel: &RelPath,
        work: &mut Work,
    ) -> Result<PathBuf, StoreError> {
        let sender_dir = self.root.join(&ns.sender);
        let ns_dir = sender_dir.join(&ns.folder);
        for dir in [&sender_dir, &ns_dir] {
            if work.known_dirs.contains(dir) {
                continue;
            }
            if self.tree.lstat(dir)?.is_none() {
                work.touched(dir);
            }
            self.tree.ensure_own_dir(dir)?;
            work.known_dirs.insert(dir.clone());
        }
        for parent in mirror::ancestors(rel) {
            let path = parent.under(&ns_dir);
            if work.known_dirs.contains(&path) {
                continue;
            }
            match self.tree.lstat(&path)? {
                Some(m) if m.is_dir() => {
                    work.known_dirs.insert(path);
                    continue;
                }
                Some(_) => self.archive(ns, &parent, false, work)?,
                None => {}
            }
            self.tree.create_dir(&path)?;
            work.touched(&path);
            work.known_dirs.insert(path);
        }
        Ok(rel.under(&ns_dir))
    }

    /// Archives what is at `rel` (parents already checked). If nothing is
    /// there but the catalog has a current row, the row is retired as
    /// vanished.
    pub(super) fn retire_existing(
        &self,
        ns: &Namespace,
        rel: &RelPath,
        deleted: bool,
        work: &mut Work,
    ) -> Result<(), StoreError> {
        if self.tree.lstat(&rel.under(&self.ns_dir(ns)))?.is_some() {
            return self.archive(ns, rel, deleted, work);
        }
        self.retire_missing(ns, rel, deleted, false, work)
    }

    /// Retires the current row of `rel`, whose bytes are not in their
    /// place in the mirror. An operation cut off between moving them into
    /// the versions area and recording it (the receiver killed in between)
    /// left them there, tagged with the row's id (a directory with its
    /// children below it): the row, and the rows below it, then point at
    /// them. Without a current row, a deletion still retires what is
    /// recorded below `rel`; anything else needs nothing.
    ///
    /// `there`: something (a directory made as a parent, or a copy of the
    /// new entry) is at `rel` in the mirror, so rows below it stay as they
    /// are unless the row's directory is found archived.
    pub(super) fn retire_missing(
        &self,
        ns: &Namespace,
        rel: &RelPath,
        deleted: bool,
        there: bool,
        work: &mut Work,
    ) -> Result<(), StoreError> {
        let gone = if there { Below::Untouched } else { Below::Gone };
        let current = self.current_row(ns, rel, work)?;
        let Some(row) = current else {
            if deleted {
                work.changes.push(Change::Retire {
                    path: rel.clone(),
                    archive: None,
                    deleted,
                    below: gone,
                });
            }
            return Ok(());
        };
        let found = self.find_archived_row(ns, rel, &row);
        let below = match &found {
            Some(path) if row.kind == "dir" => {
                Below::Moved(mirror::relative_bytes(&self.root, path))
            }
            _ => gone,
        };
        let archive = found.map(|path| mirror::relative_bytes(&self.root, &path));
        if archive.is_some() {
            tracing::warn!(path = %rel, "the bytes of the current version were archived by an operation that was cut off; recorded where they are");
        }
        // Bytes found nowhere vanished: recorded as deleted.
        let deleted = deleted || (archive.is_none() && row.kind != "dir");
        work.changes.push(Change::Retire {
            path: rel.clone(),
            archive,
            deleted,
            below,
        });
        Ok(())
    }

    /// Where an operation cut off before its record archived `row`'s
    /// bytes (named with its id), if it did.
    fn find_archived_row(
        &self,
        ns: &Namespace,
        rel: &RelPath,
        row: &VersionRow,
    ) -> Option<PathBuf> {
        self.archived_dir(ns, rel)
            .and_then(|dir| find_archived(&self.tree, &dir, rel, row))
    }

    /// [`Store::find_archived_row`], as the catalog records an archive.
    pub(super) fn archived_bytes(
        &self,
        ns: &Namespace,
        rel: &RelPath,
        row: &VersionRow,
    ) -> Option<Vec<u8>> {
        self.find_archived_row(ns, rel, row)
            .map(|found| mirror::relative_bytes(&self.root, &found))
    }

    /// The directory of the versions area where [`Store::archive_dest`]
    /// puts archives of `rel`, if it exists.
    fn archived_dir(&self, ns: &Namespace, rel: &RelPath) -> Option<PathBuf> {
        let base = self
            .root
            .join(".ferry")
            .join("versions")
            .join(&ns.sender)
            .join(&ns.folder);
        let mut dir = base.clone();
        for parent in mirror::ancestors(rel) {
            let path = parent.under(&base);
            match self.tree.lstat(&path).ok()? {
                Some(m) if m.is_dir() => dir = path,
                Some(_) => return Some(base),
                None => return None,
            }
        }
        Some(dir)
    }

    /// Moves `rel` (file, symlink or directory; parents already checked)
    /// into the versions area and notes the catalog change.
    pub(super) fn archive(
        &self,
        ns: &Namespace,
        rel: &RelPath,
        deleted: bool,
        work: &mut Work,
    ) -> Result<(), StoreError> {
        // A directory may be moved away: nothing is known any more.
        work.known_dirs.clear();
        let source = rel.under(&self.ns_dir(ns));
        let moves_dir = self.tree.lstat(&source)?.is_some_and(|m| m.is_dir());
        let current = self.current_row(ns, rel, work)?;
        // What the mirror holds is the current row's if it is just as the
        // store left it. Otherwise it may be a copy that a commit cut off
        // before its record put there, after it had archived the row's own
        // bytes (named with the row's id): those are then the row's.
        let (owned, found) = match &current {
            None => (false, None),
            Some(row) if holds_row(&self.tree, &source, row, false)? => (true, None),
            Some(row) => match self.find_archived_row(ns, rel, row) {
                Some(found) => (false, Some(found)),
                // Archived nowhere: the row's bytes are these if the content
                // is the same (say, an mtime changed by hand).
                None => (holds_row(&self.tree, &source, row, true)?, None),
            },
        };
        let unrecorded = current.is_some() && !owned;
        let tag = match &current {
            Some(row) if owned && row.id != PENDING => {
                Tag::Version(u64::try_from(row.id).unwrap_or(0))
            }
            _ => Tag::Unrecorded(self.next_counter()),
        };
        let dest = self.archive_dest(ns, rel, tag, work)?;
        self.tree.rename(&source, &dest)?;
        work.touched(&source);
        work.touched(&dest);
        let dest_bytes = mirror::relative_bytes(&self.root, &dest);
        let (archive, below) = match &current {
            // The rows below went with a directory: the one just moved, or
            // the row's own directory found archived.
            Some(row) if unrecorded => {
                let found = found.map(|found| mirror::relative_bytes(&self.root, &found));
                let below = match (&found, moves_dir) {
                    (_, true) => Below::Moved(dest_bytes),
                    (Some(found), false) if row.kind == "dir" => Below::Moved(found.clone()),
                    _ => Below::Gone,
                };
                (found, below)
            }
            _ if moves_dir => (Some(dest_bytes.clone()), Below::Moved(dest_bytes)),
            _ => (Some(dest_bytes), Below::Gone),
        };
        if unrecorded {
            tracing::warn!(path = %rel, "the mirror held a copy that was never recorded (a failed commit); archived it beside the recorded versions");
        }
        let deleted =
            deleted || (archive.is_none() && current.as_ref().is_some_and(|r| r.kind != "dir"));
        work.changes.push(Change::Retire {
            path: rel.clone(),
            archive,
            deleted,
            below,
        });
        Ok(())
    }

    /// A free name for the archive of `rel`:
    /// `versions/<sender>/<folder>/<rel>~<stamp>~<tag>`. Parent directories
    /// are created without following symlinks; should one be blocked (an
    /// archived file or symlink has the name a directory needs), the archive
    /// goes directly below `versions/<sender>/<folder>`.
    pub(super) fn archive_dest(
        &self,
        ns: &Namespace,
        rel: &RelPath,
        tag: Tag,
        work: &mut Work,
    ) -> Result<PathBuf, StoreError> {
        let versions = self.root.join(".ferry").join("versions");
        let base = versions.join(&ns.sender).join(&ns.folder);
        self.tree.ensure_own_dir(&versions.join(&ns.sender))?;
        self.tree.ensure_own_dir(&base)?;
        let mut parent_dir = base.clone();
        for parent in mirror::ancestors(rel) {
            let path = parent.under(&base);
            match self.tree.lstat(&path)? {
                Some(m) if m.is_dir() => {}
                Some(_) => {
                    parent_dir = base.clone();
                    break;
                }
                None => {
                    self.tree.create_dir(&path)?;
                    work.touched(&path);
                }
            }
            parent_dir = path;
        }
        let leaf = rel.components().last().unwrap_or(rel.as_bytes());
        let stamp = mirror::utc_stamp(SystemTime::now());
        for k in 0..MAX_NAME_TRIES {
            let candidate =
                mirror::join_bytes(&parent_dir, &mirror::archive_name(leaf, &stamp, tag, k));
            if self.tree.lstat(&candidate)?.is_none() {
                return Ok(candidate);
            }
        }
        Err(io_err(
            "find a free archive name in",
            &parent_dir,
            std::io::Error::new(
                std::io::ErrorKind::AlreadyExists,
                "too many archives of the same path",
            ),
        ))
    }
}

/// A row as `work` inserted it, not yet recorded (its id is [`PENDING`]).
fn pending_row(v: &NewVersion) -> VersionRow {
    VersionRow {
        id: PENDING,
        path: v.path.as_bytes().to_vec(),
        kind: v.kind.to_owned(),
        size: super::catalog::sql_u64(v.size),
        mtime_ns: v.mtime_ns,
        mode: i64::from(v.mode),
        hash: v.hash.map(|h| h.to_vec()),
        target: v.target.clone(),
        run_id: 0,
        replaced_run: None,
        deleted: false,
        archive: None,
    }
}

/// True if what is at `path` is what `row` records: a directory; a
/// symlink with its target; a file just as the store left it (same size
/// and mtime) or, with `by_content`, one with the same content.
fn holds_row(
    tree: &Tree,
    path: &Path,
    row: &VersionRow,
    by_content: bool,
) -> Result<bool, StoreError> {
    let Some(meta) = tree.lstat(path)? else {
        return Ok(false);
    };
    match row.kind.as_str() {
        "file" => {}
        "dir" => return Ok(meta.is_dir()),
        "symlink" => {
            return Ok(
                meta.is_symlink() && row.target.as_deref() == Some(&tree.read_link(path)?[..])
            )
        }
        _ => return Ok(false),
    }
    if !meta.is_file() {
        return Ok(false);
    }
    let mtime_ns = meta.mtime() * 1_000_000_000 + meta.mtime_nsec();
    if i64::try_from(meta.len()) == Ok(row.size) && mtime_ns == row.mtime_ns {
        return Ok(true);
    }
    Ok(by_content
        && i64::try_from(meta.len()) == Ok(row.size)
        && row.hash.as_deref() == Some(&hash_file(tree, path)?[..]))
}

/// blake3 of a file's content.
fn hash_file(tree: &Tree, path: &Path) -> Result<[u8; 32], StoreError> {
    let mut file = tree.open_nofollow(path, false)?;
    let mut hasher = blake3::Hasher::new();
    let mut buf = vec![0u8; 256 * 1024];
    loop {
        let n = file.read(&mut buf).map_err(|e| io_err("read", path, e))?;
        if n == 0 {
            break;
        }
        hasher.update(&buf[..n]);
    }
    Ok(*hasher.finalize().as_bytes())
}

/// An archive in `dir` named for `rel` with `row`'s id as its tag
/// (`<name>~<stamp>~v<id>[-k]`) that holds what `row` records (see
/// [`holds_row`]).
fn find_archived(tree: &Tree, dir: &Path, rel: &RelPath, row: &VersionRow) -> Option<PathBuf> {
    let leaf = rel.components().last().unwrap_or(rel.as_bytes());
    let tag = format!("~v{}", row.id);
    tree.read_dir(dir)
        .ok()?
        .into_iter()
        .filter(|name| {
            let Some(at) = name.windows(tag.len()).rposition(|w| w == tag.as_bytes()) else {
                return false;
            };
            let rest = &name[at + tag.len()..];
            let tag_ends = rest.is_empty() || rest.first() == Some(&b'-');
            let stem = name[..at].rsplitn(2, |b| *b == b'~').nth(1).unwrap_or(&[]);
            tag_ends && leaf.starts_with(stem)
        })
        .map(|name| mirror::join_bytes(dir, &name))
        .find(|path| holds_row(tree, path, row, true).unwrap_or(false))
}
