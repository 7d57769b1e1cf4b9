//! Moving what is in the way into the versions area, and making the
//! mirror's directories real, without following symlinks. Runs under the
//! store's write lock (see `apply`).

use std::collections::HashSet;
use std::os::unix::ffi::OsStrExt;
use std::os::unix::fs::MetadataExt;
use std::path::{Path, PathBuf};
use std::time::SystemTime;

use ferry_proto::RelPath;

use super::catalog::{Change, VersionRow};
use super::error::{io_err, StoreError};
use super::mirror::{self, lstat};
use super::{Namespace, Store};

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
            if lstat(dir)?.is_none() {
                work.touched(dir);
            }
            mirror::ensure_own_dir(dir)?;
            work.known_dirs.insert(dir.clone());
        }
        for parent in mirror::ancestors(rel) {
            let path = parent.under(&ns_dir);
            if work.known_dirs.contains(&path) {
                continue;
            }
            match lstat(&path)? {
                Some(m) if m.is_dir() => {
                    work.known_dirs.insert(path);
                    continue;
                }
                Some(_) => self.archive(ns, &parent, false, work)?,
                None => {}
            }
            mirror::create_dir(&path)?;
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
        if lstat(&rel.under(&self.ns_dir(ns)))?.is_some() {
            return self.archive(ns, rel, deleted, work);
        }
        self.retire_missing(ns, rel, deleted, work)
    }

    /// Retires the current row of `rel`, whose bytes are not in their
    /// place in the mirror. An operation cut off between moving them into
    /// the versions area and recording it (the receiver killed in between)
    /// left them there, tagged with the row's id: the row then points at
    /// them. Without a current row, a deletion still retires what is
    /// recorded below `rel`; anything else needs nothing.
    pub(super) fn retire_missing(
        &self,
        ns: &Namespace,
        rel: &RelPath,
        deleted: bool,
        work: &mut Work,
    ) -> Result<(), StoreError> {
        let current = self.catalog().current_row(ns.sender_id, &ns.folder, rel)?;
        let Some(row) = current else {
            if deleted {
                work.changes.push(Change::Retire {
                    path: rel.clone(),
                    archive: None,
                    deleted,
                });
            }
            return Ok(());
        };
        let archive = match row.kind.as_str() {
            "file" => self
                .archived_dir(ns, rel)
                .and_then(|dir| find_archived(&dir, rel, &row))
                .map(|found| mirror::relative_bytes(&self.root, &found)),
            _ => None,
        };
        if archive.is_some() {
            tracing::warn!(path = %rel, "the bytes of the current version were archived by an operation that was cut off; recorded where they are");
        }
        // Bytes found nowhere vanished: recorded as deleted.
        let deleted = deleted || archive.is_none();
        work.changes.push(Change::Retire {
            path: rel.clone(),
            archive,
            deleted,
        });
        Ok(())
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
            match lstat(&path).ok()? {
                Some(m) if m.is_dir() => dir = path,
                Some(_) => return Some(base),
                None => return None,
            }
        }
        Some(dir)
    }

    /// Retires a current row whose bytes are not in the mirror.
    pub(super) fn retire_row(&self, current: Option<&VersionRow>, rel: &RelPath, work: &mut Work) {
        if current.is_some() {
            work.changes.push(Change::Retire {
                path: rel.clone(),
                archive: None,
                deleted: true,
            });
        }
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
        let current = self.catalog().current_row(ns.sender_id, &ns.folder, rel)?;
        // What the mirror holds may be a copy a failed batch put there
        // without recording it; its bytes are then not the current row's.
        let unrecorded = match &current {
            Some(row) => !holds_row(&source, row)?,
            None => false,
        };
        let tag = match &current {
            Some(row) if !unrecorded => u64::try_from(row.id).unwrap_or(0),
            _ => self.next_counter(),
        };
        let dest = self.archive_dest(ns, rel, tag, work)?;
        mirror::rename(&source, &dest)?;
        work.touched(&source);
        work.touched(&dest);
        let archive = match &current {
            // The failed batch archived the row's bytes (tagged with its id)
            // before putting its copy in place: point the row at them.
            Some(row) if unrecorded => dest
                .parent()
                .and_then(|dir| find_archived(dir, rel, row))
                .map(|found| mirror::relative_bytes(&self.root, &found)),
            _ => Some(mirror::relative_bytes(&self.root, &dest)),
        };
        if unrecorded {
            tracing::warn!(path = %rel, "the mirror held a copy that was never recorded (a failed commit); archived it beside the recorded versions");
        }
        work.changes.push(Change::Retire {
            path: rel.clone(),
            archive,
            deleted,
        });
        Ok(())
    }

    /// A free name for the archive of `rel`:
    /// `versions/<sender>/<folder>/<rel>~<stamp>~v<tag>`. Parent directories
    /// are created without following symlinks; should one be blocked (an
    /// archived file or symlink has the name a directory needs), the archive
    /// goes directly below `versions/<sender>/<folder>`.
    pub(super) fn archive_dest(
        &self,
        ns: &Namespace,
        rel: &RelPath,
        tag: u64,
        work: &mut Work,
    ) -> Result<PathBuf, StoreError> {
        let versions = self.root.join(".ferry").join("versions");
        let base = versions.join(&ns.sender).join(&ns.folder);
        mirror::ensure_own_dir(&versions.join(&ns.sender))?;
        mirror::ensure_own_dir(&base)?;
        let mut parent_dir = base.clone();
        for parent in mirror::ancestors(rel) {
            let path = parent.under(&base);
            match lstat(&path)? {
                Some(m) if m.is_dir() => {}
                Some(_) => {
                    parent_dir = base.clone();
                    break;
                }
                None => {
                    mirror::create_dir(&path)?;
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
            if lstat(&candidate)?.is_none() {
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

/// True if the file at `path` is the content of `row` (same size and
/// mtime, as the store set them; or, if those differ, same hash). Rows that
/// are not files are taken as held.
fn holds_row(path: &Path, row: &VersionRow) -> Result<bool, StoreError> {
    if row.kind != "file" {
        return Ok(true);
    }
    let Some(meta) = lstat(path)? else {
        return Ok(false);
    };
    if !meta.is_file() {
        return Ok(false);
    }
    let mtime_ns = meta.mtime() * 1_000_000_000 + meta.mtime_nsec();
    if i64::try_from(meta.len()) == Ok(row.size) && mtime_ns == row.mtime_ns {
        return Ok(true);
    }
    Ok(row.hash.as_deref() == Some(&hash_file(path)?[..]))
}

/// blake3 of a file's content.
fn hash_file(path: &Path) -> Result<[u8; 32], StoreError> {
    let mut file = std::fs::File::open(path).map_err(|e| io_err("read", path, e))?;
    let mut hasher = blake3::Hasher::new();
    std::io::copy(&mut file, &mut hasher).map_err(|e| io_err("read", path, e))?;
    Ok(*hasher.finalize().as_bytes())
}

/// An archive in `dir` named for `rel` with `row`'s id as its tag
/// (`<name>~<stamp>~v<id>[-k]`) that holds `row`'s content.
fn find_archived(dir: &Path, rel: &RelPath, row: &VersionRow) -> Option<PathBuf> {
    let leaf = rel.components().last().unwrap_or(rel.as_bytes());
    let tag = format!("~v{}", row.id);
    std::fs::read_dir(dir)
        .ok()?
        .filter_map(Result::ok)
        .map(|entry| entry.path())
        .filter(|path| {
            let Some(name) = path.file_name().map(|n| n.as_bytes()) else {
                return false;
            };
            let Some(at) = name.windows(tag.len()).rposition(|w| w == tag.as_bytes()) else {
                return false;
            };
            let rest = &name[at + tag.len()..];
            let tag_ends = rest.is_empty() || rest.first() == Some(&b'-');
            let stem = name[..at].rsplitn(2, |b| *b == b'~').nth(1).unwrap_or(&[]);
            tag_ends && leaf.starts_with(stem)
        })
        .find(|path| {
            lstat(path).ok().flatten().is_some_and(|m| m.is_file())
                && row
                    .hash
                    .as_deref()
                    .is_some_and(|h| hash_file(path).is_ok_and(|actual| actual[..] == *h))
        })
}
