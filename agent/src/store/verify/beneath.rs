//! Reaching the store's files from a descriptor of its root, never
//! through a symlink and never outside it: finding one path, opening a
//! regular file, walking the trees.

use std::ffi::OsStr;
use std::fs::File;
use std::io;
use std::os::fd::OwnedFd;
use std::os::unix::ffi::OsStrExt;
use std::path::{Path, PathBuf};

use rustix::fs::{AtFlags, FileType, Mode, OFlags};

use crate::store::mirror;

/// The store's root directory, from which everything is opened without
/// following a symlink and without leaving it.
pub(super) struct Beneath {
    root: OwnedFd,
}

/// What is at a path below the root.
pub(super) enum Found {
    Missing,
    /// Reached through a symlink, or leads out of the store.
    Outside(&'static str),
    /// The parent directory (opened `O_PATH`) and the entry's type.
    At(OwnedFd, FileType),
}

impl Beneath {
    pub(super) fn open(root: &Path) -> io::Result<Beneath> {
        let root = rustix::fs::open(
            root,
            OFlags::PATH | OFlags::DIRECTORY | OFlags::CLOEXEC,
            Mode::empty(),
        )?;
        Ok(Beneath { root })
    }

    /// Opens the directory `rel` (relative to the root; empty: the root).
    fn dir(&self, rel: &Path, flags: OFlags) -> io::Result<OwnedFd> {
        let rel = if rel.as_os_str().is_empty() {
            Path::new(".")
        } else {
            rel
        };
        // No O_NOFOLLOW: RESOLVE_NO_SYMLINKS refuses a symlink in the last
        // component too (ELOOP), where O_PATH | O_NOFOLLOW would open the
        // link itself.
        mirror::open_beneath(&self.root, rel, flags | OFlags::DIRECTORY, Mode::empty())
    }

    pub(super) fn find(&self, rel: &Path) -> io::Result<Found> {
        let (Some(parent), Some(leaf)) = (rel.parent(), rel.file_name()) else {
            return Ok(Found::Outside("not a plain path"));
        };
        let parent = match self.dir(parent, OFlags::PATH) {
            Ok(fd) => fd,
            Err(e) => return classify(e),
        };
        match rustix::fs::statat(&parent, leaf, AtFlags::SYMLINK_NOFOLLOW) {
            Ok(st) => Ok(Found::At(parent, FileType::from_raw_mode(st.st_mode))),
            Err(e) => classify(e.into()),
        }
    }
}

/// Opens the regular file `rel` below the directory `dir` for reading,
/// never through a symlink and never outside `dir`.
pub(super) fn open_regular(dir: &OwnedFd, rel: &Path) -> io::Result<File> {
    let fd = mirror::open_beneath(
        dir,
        rel,
        OFlags::RDONLY | OFlags::NOFOLLOW | OFlags::NONBLOCK,
        Mode::empty(),
    )?;
    let file = File::from(fd);
    if !file.metadata()?.is_file() {
        return Err(io::Error::new(
            io::ErrorKind::InvalidInput,
            "not a regular file",
        ));
    }
    Ok(file)
}

/// Not there, or reached through a symlink or out of the store, or an error.
fn classify(e: io::Error) -> io::Result<Found> {
    match e.raw_os_error() {
        Some(libc::ENOENT) | Some(libc::ENOTDIR) => Ok(Found::Missing),
        Some(libc::ELOOP) => Ok(Found::Outside("reached through a symlink")),
        Some(libc::EXDEV) => Ok(Found::Outside("it leads out of the store")),
        _ => Err(e),
    }
}

/// Every file, symlink or other non-directory below the directories `tops`
/// (relative to the root), relative to the root; directories are entered
/// without following symlinks, and one that cannot be opened is skipped.
pub(super) fn walk(dir: &Beneath, tops: &[PathBuf]) -> Vec<PathBuf> {
    let mut out = Vec::new();
    let mut pending: Vec<PathBuf> = tops.to_vec();
    while let Some(rel) = pending.pop() {
        let fd = match dir.dir(&rel, OFlags::RDONLY) {
            Ok(fd) => fd,
            Err(e) => {
                if e.kind() != io::ErrorKind::NotFound {
                    tracing::warn!(path = %rel.display(), error = %e, "cannot list a directory of the store");
                }
                continue;
            }
        };
        let listing = match rustix::fs::Dir::read_from(&fd) {
            Ok(l) => l,
            Err(e) => {
                tracing::warn!(path = %rel.display(), error = %e, "cannot list a directory of the store");
                continue;
            }
        };
        for entry in listing {
            let Ok(entry) = entry else { break };
            let name = entry.file_name().to_bytes();
            if name == b"." || name == b".." {
                continue;
            }
            let name = OsStr::from_bytes(name);
            let kind = match entry.file_type() {
                FileType::Unknown => match rustix::fs::statat(&fd, name, AtFlags::SYMLINK_NOFOLLOW)
                {
                    Ok(st) => FileType::from_raw_mode(st.st_mode),
                    Err(_) => continue,
                },
                kind => kind,
            };
            if kind == FileType::Directory {
                pending.push(rel.join(name));
            } else {
                out.push(rel.join(name));
            }
        }
    }
    out
}
