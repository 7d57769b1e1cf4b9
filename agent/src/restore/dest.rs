//! Writing restored entries into the destination directory, atomically and
//! without following symlinks.
//!
//! A file is written to a temporary name in its final directory, hashed while
//! written, checked against the expected hash and size, given its mode and
//! mtime, fsynced, and only then put in place: by `link` (which fails if the
//! name exists: nothing is overwritten, even by a race) or, with `overwrite`,
//! by `rename`. An interrupted restore leaves at most a temporary file
//! (`.<name>.ferry-restore-*`), never a half-written file under the real name.

use std::ffi::{OsStr, OsString};
use std::fs::{self, File, OpenOptions, Permissions};
use std::io;
use std::os::unix::ffi::OsStrExt;
use std::os::unix::fs::{OpenOptionsExt, PermissionsExt};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};

use ferry_proto::{Hash, RelPath};

use crate::sparse::HoleWriter;

/// Why an entry could not be written at the destination.
#[derive(Debug, thiserror::Error)]
pub enum WriteError {
    #[error("cannot {action} {path}")]
    Io {
        action: &'static str,
        path: PathBuf,
        source: io::Error,
    },
    #[error("{path}: a parent in the destination is not a directory (a file or a symlink is in the way); move it away")]
    Blocked { path: PathBuf },
    #[error("{path}: the restored content hashes to {actual}, the catalog says {expected}; it was discarded (run `ferry verify` on the receiver)")]
    HashMismatch {
        path: PathBuf,
        expected: String,
        actual: String,
    },
    #[error("{path}: {actual} bytes restored, {expected} expected; it was discarded")]
    SizeMismatch {
        path: PathBuf,
        expected: u64,
        actual: u64,
    },
}

fn io_err<'a>(action: &'static str, path: &'a Path) -> impl FnOnce(io::Error) -> WriteError + 'a {
    move |source| WriteError::Io {
        action,
        path: path.to_path_buf(),
        source,
    }
}

/// What to do with an entry whose name is taken.
#[derive(Debug, PartialEq, Eq)]
pub enum Slot {
    /// Write it here.
    Free(PathBuf),
    /// Something is there and overwriting was not asked for.
    Taken(PathBuf),
}

/// The destination directory of a restore.
#[derive(Debug)]
pub struct Destination {
    root: PathBuf,
    overwrite: bool,
    counter: AtomicU64,
    dirs: std::sync::Mutex<Vec<(PathBuf, u32, i64)>>,
}

impl Destination {
    /// Creates `root` if needed.
    pub fn new(root: &Path, overwrite: bool) -> Result<Destination, WriteError> {
        fs::create_dir_all(root).map_err(io_err("create the destination", root))?;
        Ok(Destination {
            root: root.to_path_buf(),
            overwrite,
            counter: AtomicU64::new(0),
            dirs: std::sync::Mutex::new(Vec::new()),
        })
    }

    /// The destination directory.
    pub fn root(&self) -> &Path {
        &self.root
    }

    /// Makes the parents of `rel` real directories (never through a
    /// symlink) and says whether `rel` may be written.
    pub fn slot(&self, rel: &RelPath) -> Result<Slot, WriteError> {
        let mut at = self.root.clone();
        let components: Vec<&[u8]> = rel.components().collect();
        let Some((_, parents)) = components.split_last() else {
            return Err(WriteError::Blocked {
                path: rel.under(&self.root),
            });
        };
        for part in parents {
            at.push(OsStr::from_bytes(part));
            match fs::symlink_metadata(&at) {
                Ok(m) if m.is_dir() => {}
                Ok(_) => return Err(WriteError::Blocked { path: at }),
                Err(e) if e.kind() == io::ErrorKind::NotFound => match fs::create_dir(&at) {
                    Ok(()) => {}
                    Err(e) if e.kind() == io::ErrorKind::AlreadyExists => {}
                    Err(e) => return Err(io_err("create the directory", &at)(e)),
                },
                Err(e) => return Err(io_err("inspect", &at)(e)),
            }
        }
        let target = rel.under(&self.root);
        match fs::symlink_metadata(&target) {
            Ok(_) if !self.overwrite => Ok(Slot::Taken(target)),
            Ok(m) if m.is_dir() => Ok(Slot::Taken(target)),
            Ok(_) => Ok(Slot::Free(target)),
            Err(e) if e.kind() == io::ErrorKind::NotFound => Ok(Slot::Free(target)),
            Err(e) => Err(io_err("inspect", &target)(e)),
        }
    }

    fn temp_beside(&self, target: &Path) -> PathBuf {
        let n = self.counter.fetch_add(1, Ordering::Relaxed);
        let name = target.file_name().unwrap_or(OsStr::new("file"));
        let mut tmp = OsString::from(".");
        // Keep the temporary name within the 255-byte limit.
        let keep = name.as_bytes().len().min(200);
        tmp.push(OsStr::from_bytes(&name.as_bytes()[..keep]));
        tmp.push(format!(".ferry-restore-{}-{n}", std::process::id()));
        target.with_file_name(tmp)
    }

    /// Starts writing a file at `target` (from [`Destination::slot`]).
    pub fn begin_file(&self, target: PathBuf) -> Result<PendingFile, WriteError> {
        let tmp = self.temp_beside(&target);
        let file = OpenOptions::new()
            .write(true)
            .create_new(true)
            .mode(0o600)
            .custom_flags(libc::O_NOFOLLOW | libc::O_CLOEXEC)
            .open(&tmp)
            .map_err(io_err("create", &tmp))?;
        Ok(PendingFile {
            file: Some(file),
            tmp,
            target,
            hasher: blake3::Hasher::new(),
            written: HoleWriter::default(),
            overwrite: self.overwrite,
        })
    }

    /// A scratch file beside `target` (from [`Destination::slot`]), open
    /// for reading and writing, its name removed at once: it holds what
    /// must be kept whole before it can be used (a chunked sealed object,
    /// whose trailer is at its end), on the destination's disk, and goes
    /// away with its handle whatever happens to the restore.
    pub fn scratch_beside(&self, target: &Path) -> Result<File, WriteError> {
        let tmp = self.temp_beside(target);
        let file = OpenOptions::new()
            .read(true)
            .write(true)
            .create_new(true)
            .mode(0o600)
            .custom_flags(libc::O_NOFOLLOW | libc::O_CLOEXEC)
            .open(&tmp)
            .map_err(io_err("create", &tmp))?;
        fs::remove_file(&tmp).map_err(io_err("remove", &tmp))?;
        Ok(file)
    }

    /// Makes `target` a symlink to `link` with this mtime.
    pub fn symlink(&self, target: PathBuf, link: &[u8], mtime_ns: i64) -> Result<(), WriteError> {
        let tmp = self.temp_beside(&target);
        std::os::unix::fs::symlink(OsStr::from_bytes(link), &tmp)
            .map_err(io_err("create the symlink", &tmp))?;
        let t = file_time(mtime_ns);
        let placed = filetime::set_symlink_file_times(&tmp, t, t)
            .map_err(io_err("set the modification time of", &tmp))
            .and_then(|()| self.place(&tmp, &target));
        if placed.is_err() {
            let _ = fs::remove_file(&tmp);
        }
        placed
    }

    /// Makes `rel` a directory; its mode and mtime are applied by
    /// [`Destination::finish_dirs`] once its children are written.
    pub fn dir(&self, rel: &RelPath, mode: u32, mtime_ns: i64) -> Result<(), WriteError> {
        let target = match self.slot(rel)? {
            Slot::Free(t) | Slot::Taken(t) => t,
        };
        match fs::symlink_metadata(&target) {
            Ok(m) if m.is_dir() => {}
            Ok(_) => return Err(WriteError::Blocked { path: target }),
            // Another entry's parents may be made at the same time.
            Err(_) => match fs::create_dir(&target) {
                Err(e)
                    if e.kind() == io::ErrorKind::AlreadyExists
                        && fs::symlink_metadata(&target).is_ok_and(|m| m.is_dir()) => {}
                made => made.map_err(io_err("create the directory", &target))?,
            },
        }
        if let Ok(mut dirs) = self.dirs.lock() {
            dirs.push((target, mode, mtime_ns));
        }
        Ok(())
    }

    /// Applies the directories' modes and mtimes, deepest first.
    pub fn finish_dirs(&self) -> Vec<WriteError> {
        let mut dirs = match self.dirs.lock() {
            Ok(mut d) => std::mem::take(&mut *d),
            Err(_) => return Vec::new(),
        };
        dirs.sort_by_key(|(p, _, _)| std::cmp::Reverse(p.components().count()));
        let mut errors = Vec::new();
        for (path, mode, mtime_ns) in dirs {
            let done = fs::set_permissions(&path, Permissions::from_mode((mode & 0o7777) | 0o700))
                .map_err(io_err("set the permissions of", &path))
                .and_then(|()| {
                    let t = file_time(mtime_ns);
                    filetime::set_symlink_file_times(&path, t, t)
                        .map_err(io_err("set the modification time of", &path))
                });
            if let Err(e) = done {
                errors.push(e);
            }
        }
        errors
    }

    fn place(&self, tmp: &Path, target: &Path) -> Result<(), WriteError> {
        place(tmp, target, self.overwrite)
    }
}

/// Puts `tmp` at `target`: `rename` when overwriting, else `link` (fails if
/// `target` exists) and remove `tmp`.
fn place(tmp: &Path, target: &Path, overwrite: bool) -> Result<(), WriteError> {
    if overwrite {
        return fs::rename(tmp, target).map_err(io_err("move into place", target));
    }
    fs::hard_link(tmp, target).map_err(io_err("move into place", target))?;
    fs::remove_file(tmp).map_err(io_err("remove", tmp))
}

fn file_time(ns: i64) -> filetime::FileTime {
    let secs = ns.div_euclid(1_000_000_000);
    // rem_euclid of 1e9 is in 0..1e9 and fits a u32.
    let nanos = u32::try_from(ns.rem_euclid(1_000_000_000)).unwrap_or(0);
    filetime::FileTime::from_unix_time(secs, nanos)
}

/// A file being restored; removed unless [`PendingFile::commit`] succeeds.
#[derive(Debug)]
pub struct PendingFile {
    file: Option<File>,
    tmp: PathBuf,
    target: PathBuf,
    hasher: blake3::Hasher,
    /// The content appended so far; zero blocks are left as holes.
    written: HoleWriter,
    overwrite: bool,
}

impl PendingFile {
    /// Where the file goes once committed.
    pub fn target(&self) -> &Path {
        &self.target
    }

    /// Appends content; its all-zero blocks stay holes (a sparse file is
    /// restored sparse).
    pub fn write(&mut self, data: &[u8]) -> Result<(), WriteError> {
        let Some(file) = self.file.as_ref() else {
            return Ok(());
        };
        self.written
            .write(file, data)
            .map_err(io_err("write", &self.tmp))?;
        self.hasher.update(data);
        Ok(())
    }

    /// Checks the content, sets mode and mtime, fsyncs and puts it in place.
    pub fn commit(
        self,
        hash: &Hash,
        size: u64,
        mode: u32,
        mtime_ns: i64,
    ) -> Result<u64, WriteError> {
        let actual = self.hasher.finalize();
        if self.written.pos() != size {
            return Err(WriteError::SizeMismatch {
                path: self.target.clone(),
                expected: size,
                actual: self.written.pos(),
            });
        }
        if actual.as_bytes() != hash {
            return Err(WriteError::HashMismatch {
                path: self.target.clone(),
                expected: blake3::Hash::from(*hash).to_hex().to_string(),
                actual: actual.to_hex().to_string(),
            });
        }
        self.place_checked(mode, mtime_ns)
    }

    /// As [`PendingFile::commit`] for content opened from a sealed object:
    /// its blocks were authenticated as they were opened, so only the size
    /// is checked (there is no catalog hash of the real content).
    pub fn commit_opened(self, size: u64, mode: u32, mtime_ns: i64) -> Result<u64, WriteError> {
        if self.written.pos() != size {
            return Err(WriteError::SizeMismatch {
                path: self.target.clone(),
                expected: size,
                actual: self.written.pos(),
            });
        }
        self.place_checked(mode, mtime_ns)
    }

    /// Sets mode and mtime, fsyncs and puts the checked content in place.
    fn place_checked(mut self, mode: u32, mtime_ns: i64) -> Result<u64, WriteError> {
        let Some(file) = self.file.take() else {
            return Ok(0);
        };
        self.written
            .finish(&file)
            .map_err(io_err("set the length of", &self.tmp))?;
        file.set_permissions(Permissions::from_mode(mode & 0o7777))
            .map_err(io_err("set the permissions of", &self.tmp))?;
        let mtime = crate_time(mtime_ns);
        file.set_times(fs::FileTimes::new().set_modified(mtime))
            .map_err(io_err("set the modification time of", &self.tmp))?;
        file.sync_all().map_err(io_err("fsync", &self.tmp))?;
        drop(file);
        place(&self.tmp, &self.target, self.overwrite)?;
        self.tmp = PathBuf::new();
        Ok(self.written.pos())
    }
}

fn crate_time(ns: i64) -> std::time::SystemTime {
    let magnitude = std::time::Duration::from_nanos(ns.unsigned_abs());
    if ns >= 0 {
        std::time::UNIX_EPOCH + magnitude
    } else {
        std::time::UNIX_EPOCH - magnitude
    }
}

impl Drop for PendingFile {
    fn drop(&mut self) {
        if !self.tmp.as_os_str().is_empty() {
            let _ = fs::remove_file(&self.tmp);
        }
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used)] // a failing unwrap is a failing test
mod tests {
    use super::*;
    use std::os::unix::fs::MetadataExt;

    fn rel(s: &str) -> RelPath {
        RelPath::from_bytes(s).unwrap()
    }

    #[test]
    fn a_file_is_verified_then_placed_with_its_metadata() {
        let dir = tempfile::tempdir().unwrap();
        let dest = Destination::new(dir.path(), false).unwrap();
        let Slot::Free(target) = dest.slot(&rel("a/b/c.txt")).unwrap() else {
            panic!("free slot expected")
        };
        let mut f = dest.begin_file(target.clone()).unwrap();
        f.write(b"hello").unwrap();
        assert!(!target.exists(), "nothing visible before commit");
        f.commit(
            blake3::hash(b"hello").as_bytes(),
            5,
            0o640,
            1_600_000_000_000_000_001,
        )
        .unwrap();
        let m = fs::metadata(&target).unwrap();
        assert_eq!(m.mode() & 0o7777, 0o640);
        assert_eq!((m.mtime(), m.mtime_nsec()), (1_600_000_000, 1));
        assert_eq!(fs::read(&target).unwrap(), b"hello");
        assert_eq!(fs::read_dir(target.parent().unwrap()).unwrap().count(), 1);
        // It is taken now.
        assert_eq!(dest.slot(&rel("a/b/c.txt")).unwrap(), Slot::Taken(target));
    }

    #[test]
    fn bad_content_leaves_nothing() {
        let dir = tempfile::tempdir().unwrap();
        let dest = Destination::new(dir.path(), false).unwrap();
        let Slot::Free(target) = dest.slot(&rel("x")).unwrap() else {
            panic!("free slot expected")
        };
        let mut f = dest.begin_file(target.clone()).unwrap();
        f.write(b"evil").unwrap();
        let err = f
            .commit(blake3::hash(b"good").as_bytes(), 4, 0o644, 0)
            .unwrap_err();
        assert!(matches!(err, WriteError::HashMismatch { .. }), "{err}");
        assert_eq!(fs::read_dir(dir.path()).unwrap().count(), 0);
        // An abandoned file (an interrupted restore) leaves nothing either.
        let mut f = dest.begin_file(target.clone()).unwrap();
        f.write(b"half").unwrap();
        drop(f);
        assert_eq!(fs::read_dir(dir.path()).unwrap().count(), 0);
    }

    #[test]
    fn overwrite_replaces_and_symlinked_parents_are_refused() {
        let dir = tempfile::tempdir().unwrap();
        fs::write(dir.path().join("f"), "old").unwrap();
        let dest = Destination::new(dir.path(), true).unwrap();
        let Slot::Free(target) = dest.slot(&rel("f")).unwrap() else {
            panic!("overwrite gives a free slot")
        };
        let mut f = dest.begin_file(target.clone()).unwrap();
        f.write(b"new").unwrap();
        f.commit(blake3::hash(b"new").as_bytes(), 3, 0o644, 0)
            .unwrap();
        assert_eq!(fs::read(&target).unwrap(), b"new");
        let outside = tempfile::tempdir().unwrap();
        std::os::unix::fs::symlink(outside.path(), dir.path().join("l")).unwrap();
        assert!(matches!(
            dest.slot(&rel("l/x")),
            Err(WriteError::Blocked { .. })
        ));
        dest.symlink(dir.path().join("s"), b"../t", 5_000_000_000)
            .unwrap();
        assert_eq!(
            fs::read_link(dir.path().join("s")).unwrap(),
            Path::new("../t")
        );
    }
}
