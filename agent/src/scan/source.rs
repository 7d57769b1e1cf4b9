//! The source root held open: every directory and file a run reads is opened
//! relative to its descriptor, never by a path that could lead elsewhere.
//!
//! [`SourceDir::open_file`] resolves a relative path with `openat2` and
//! `RESOLVE_BENEATH | RESOLVE_NO_SYMLINKS`: a symlink anywhere on the way (a
//! directory swapped for a link to `/etc` after the scan, say) makes the open
//! fail instead of reading the link's target. [`SourceDir::open_scanned`]
//! then checks that the file opened is the one the scan saw (same device and
//! inode), so nothing but the scanned file is ever stored under its path.

use std::fs::File;
use std::io;
use std::os::fd::OwnedFd;
use std::path::{Path, PathBuf};

use ferry_proto::RelPath;
use rustix::fs::{Mode, OFlags, ResolveFlags, Stat};

use super::{ScanEntry, ScanError};

/// How often an open is retried when the kernel could not rule out a race
/// with a rename (`EAGAIN` from `openat2`).
const RETRIES: usize = 16;

/// Why a file of the source was not opened.
#[derive(Debug, thiserror::Error)]
pub enum OpenError {
    /// The open or a read failed.
    #[error("cannot read")]
    Io {
        /// The path, relative to the source.
        path: RelPath,
        /// The underlying error.
        source: io::Error,
    },
    /// A symlink lies on the path now.
    #[error(
        "not read: it or a directory above it is a symlink now (changed since the scan), \
         and Ferry reads nothing outside the source; it is looked at again on the next run"
    )]
    Symlink {
        /// The path, relative to the source.
        path: RelPath,
    },
    /// Another file is at the path than the one the scan saw.
    #[error("not read: another file took its place since the scan; it is sent on the next run")]
    Replaced {
        /// The path, relative to the source.
        path: RelPath,
    },
    /// What is at the path is not a regular file any more.
    #[error("is no longer a regular file")]
    NotAFile {
        /// The path, relative to the source.
        path: RelPath,
    },
}

impl OpenError {
    /// The path the error is about.
    pub fn path(&self) -> &RelPath {
        match self {
            OpenError::Io { path, .. }
            | OpenError::Symlink { path }
            | OpenError::Replaced { path }
            | OpenError::NotAFile { path } => path,
        }
    }
}

/// The source directory of a run, open.
#[derive(Debug)]
pub struct SourceDir {
    /// Its canonical path (for messages and exclusions).
    path: PathBuf,
    fd: OwnedFd,
}

impl SourceDir {
    /// Opens the source directory `root` (a symlink given as the root itself
    /// is followed: it is what the user named). A root that is missing, not a
    /// directory or cannot be listed is an error.
    pub fn open(root: &Path) -> Result<SourceDir, ScanError> {
        let root_err = |source| ScanError::Root {
            root: root.to_path_buf(),
            source,
        };
        let path = root.canonicalize().map_err(root_err)?;
        if !path.metadata().map_err(root_err)?.is_dir() {
            return Err(ScanError::NotADirectory {
                root: root.to_path_buf(),
            });
        }
        // Fail early, with a clear error, if the root cannot be listed.
        std::fs::read_dir(&path).map_err(root_err)?;
        let flags = OFlags::RDONLY | OFlags::DIRECTORY | OFlags::CLOEXEC;
        let fd = rustix::fs::open(&path, flags, Mode::empty()).map_err(|e| root_err(e.into()))?;
        Ok(SourceDir { path, fd })
    }

    /// The canonical path of the source.
    pub fn path(&self) -> &Path {
        &self.path
    }

    /// Opens `rel` (relative path bytes; empty for the root) below the root
    /// without following any symlink, with `flags` (plus `NOFOLLOW` and
    /// `CLOEXEC`).
    pub(crate) fn open_at(&self, rel: &[u8], flags: OFlags) -> io::Result<OwnedFd> {
        let rel: &[u8] = if rel.is_empty() { b"." } else { rel };
        let flags = flags | OFlags::NOFOLLOW | OFlags::CLOEXEC;
        let resolve = ResolveFlags::BENEATH | ResolveFlags::NO_SYMLINKS;
        let mut tries = 0;
        loop {
            match rustix::fs::openat2(&self.fd, rel, flags, Mode::empty(), resolve) {
                Err(rustix::io::Errno::AGAIN) if tries < RETRIES => tries += 1,
                Err(rustix::io::Errno::INTR) => {}
                other => return other.map_err(io::Error::from),
            }
        }
    }

    /// Opens the regular file `rel` for reading: no symlink followed on the
    /// way, never blocking (a FIFO swapped in cannot hang the run). Returns
    /// the file and its `fstat`.
    pub fn open_file(&self, rel: &RelPath) -> Result<(File, Stat), OpenError> {
        let flags = OFlags::RDONLY | OFlags::NONBLOCK;
        let fd = self.open_at(rel.as_bytes(), flags).map_err(|source| {
            // ELOOP: a symlink on the way (or at the end); EXDEV: the path
            // would lead out of the root.
            match source.raw_os_error() {
                Some(libc::ELOOP | libc::EXDEV) => OpenError::Symlink { path: rel.clone() },
                _ => OpenError::Io {
                    path: rel.clone(),
                    source,
                },
            }
        })?;
        let stat = rustix::fs::fstat(&fd).map_err(|e| OpenError::Io {
            path: rel.clone(),
            source: e.into(),
        })?;
        if rustix::fs::FileType::from_raw_mode(stat.st_mode) != rustix::fs::FileType::RegularFile {
            return Err(OpenError::NotAFile { path: rel.clone() });
        }
        Ok((File::from(fd), stat))
    }

    /// Opens the file `entry` describes and checks it is the one the scan
    /// saw: same device and inode.
    #[allow(clippy::unnecessary_cast)] // `st_*` widths differ between architectures
    pub fn open_scanned(&self, entry: &ScanEntry) -> Result<File, OpenError> {
        let (file, stat) = self.open_file(&entry.path)?;
        if super::dev_id(stat.st_dev as u64) != entry.dev || stat.st_ino as u64 != entry.ino {
            return Err(OpenError::Replaced {
                path: entry.path.clone(),
            });
        }
        Ok(file)
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used, clippy::expect_used)] // tests fail loudly
mod tests {
    use super::*;
    use crate::scan::scan_dir;
    use std::fs;
    use std::io::Read;
    use std::os::unix::fs::symlink;

    fn rel(s: &str) -> RelPath {
        RelPath::from_bytes(s).unwrap()
    }

    #[test]
    fn a_directory_swapped_for_a_symlink_after_the_scan_is_not_followed() {
        let dir = tempfile::tempdir().unwrap();
        let root = dir.path().join("src");
        let outside = dir.path().join("outside");
        fs::create_dir_all(root.join("d")).unwrap();
        fs::create_dir_all(&outside).unwrap();
        fs::write(root.join("d/f"), b"inside").unwrap();
        fs::write(outside.join("f"), b"SECRET").unwrap();

        let source = SourceDir::open(&root).unwrap();
        let scan = scan_dir(&source, &[]);
        let entry = scan
            .entries
            .iter()
            .find(|e| e.path.as_bytes() == b"d/f")
            .unwrap()
            .clone();
        // The scanned directory is swapped for a link to the outside one.
        fs::rename(root.join("d"), dir.path().join("moved")).unwrap();
        symlink(&outside, root.join("d")).unwrap();

        let err = source.open_scanned(&entry).unwrap_err();
        assert!(matches!(err, OpenError::Symlink { .. }), "{err:?}");
        let err = source.open_file(&entry.path).unwrap_err();
        assert!(matches!(err, OpenError::Symlink { .. }), "{err:?}");
        // Hashing for the plan refuses it too.
        assert!(crate::scan::hash_file(&source, &entry).is_err());
        // Nothing below the link can be opened through the source.
        assert!(source.open_file(&rel("d")).is_err());

        // A link as the file itself is refused the same way.
        fs::remove_file(root.join("d")).unwrap();
        fs::create_dir(root.join("d")).unwrap();
        symlink(outside.join("f"), root.join("d/f")).unwrap();
        let err = source.open_scanned(&entry).unwrap_err();
        assert!(matches!(err, OpenError::Symlink { .. }), "{err:?}");
    }

    #[test]
    fn a_file_replaced_since_the_scan_is_not_read() {
        let dir = tempfile::tempdir().unwrap();
        fs::write(dir.path().join("f"), b"scanned").unwrap();
        let source = SourceDir::open(dir.path()).unwrap();
        let scan = scan_dir(&source, &[]);
        let entry = scan.entries[0].clone();
        let mut content = String::new();
        source
            .open_scanned(&entry)
            .unwrap()
            .read_to_string(&mut content)
            .unwrap();
        assert_eq!(content, "scanned");

        fs::write(dir.path().join("g"), b"other").unwrap();
        fs::rename(dir.path().join("g"), dir.path().join("f")).unwrap();
        let err = source.open_scanned(&entry).unwrap_err();
        assert!(matches!(err, OpenError::Replaced { .. }), "{err:?}");
        assert_eq!(err.path(), &entry.path);

        fs::remove_file(dir.path().join("f")).unwrap();
        fs::create_dir(dir.path().join("f")).unwrap();
        let err = source.open_scanned(&entry).unwrap_err();
        assert!(matches!(err, OpenError::NotAFile { .. }), "{err:?}");
    }

    #[test]
    fn the_root_stays_the_one_opened_when_its_path_is_swapped() {
        let dir = tempfile::tempdir().unwrap();
        let root = dir.path().join("src");
        let outside = dir.path().join("outside");
        fs::create_dir_all(&root).unwrap();
        fs::create_dir_all(&outside).unwrap();
        fs::write(root.join("f"), b"inside").unwrap();
        fs::write(outside.join("f"), b"SECRET").unwrap();
        let source = SourceDir::open(&root).unwrap();
        let entry = scan_dir(&source, &[]).entries[0].clone();
        fs::rename(&root, dir.path().join("old")).unwrap();
        symlink(&outside, &root).unwrap();
        let mut content = String::new();
        source
            .open_scanned(&entry)
            .unwrap()
            .read_to_string(&mut content)
            .unwrap();
        assert_eq!(content, "inside");
    }
}
