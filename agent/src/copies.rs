//! The sender's local copies of what it sent (`--keep-copies DIR`).
//!
//! A plain mirror of the source as last acknowledged by the receiver. It is a
//! cache: whatever is in the way of a new copy (a directory where a file goes,
//! a file or symlink where a directory goes) is removed. Writes never follow a
//! symlink inside the copies root: every component is checked with
//! `symlink_metadata`, and a symlink in the way is replaced.
//!
//! Files are written to `ROOT/.ferry-tmp/` and renamed into place on
//! [`CopyWriter::commit`], so a copy is either the old one or the new one;
//! the temporary directory is removed at the end of each run
//! ([`Copies::tidy`]), and what a killed process left there by the next one.
//! What each copy holds (its hash, as last sent) is recorded in
//! `ROOT/.ferry-copies.db` ([`book`]), so a restore can check every copy, and
//! [`complete`] fills in the copies a run did not write (files sent before
//! `--keep-copies` was given, metadata-only changes) from the source.
//! The top-level names `.ferry-tmp` and `.ferry-copies*` are therefore
//! reserved.
//!
//! ## Layout
//!
//! - [`book`]: the bookkeeping of what each copy holds.
//! - [`complete`]: making the copies match what the receiver acknowledged.

use std::ffi::OsStr;
use std::fs::{self, File, OpenOptions};
use std::io;
use std::os::unix::ffi::OsStrExt;
use std::os::unix::fs::{symlink, OpenOptionsExt, PermissionsExt};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};

use ferry_proto::RelPath;
use filetime::FileTime;

use crate::sparse::HoleWriter;

pub mod book;
pub mod complete;

pub use book::{Book, CopyRecord, Held, BOOK_FILE};
pub use complete::{complete, Completed};

/// Name of the temporary directory inside the copies root.
pub const TMP_DIR: &str = ".ferry-tmp";
/// Top-level names starting with this are the bookkeeping's.
const BOOK_PREFIX: &str = ".ferry-copies";

/// Errors of the local copies.
#[derive(Debug, thiserror::Error)]
pub enum CopiesError {
    /// The copies directory could not be created or opened.
    #[error("cannot use {} as the keep-copies directory; check the --keep-copies path and its permissions", path.display())]
    Open {
        /// The directory.
        path: PathBuf,
        /// The underlying error.
        source: io::Error,
    },
    /// A filesystem operation on one copy failed.
    #[error("keep-copies: cannot {what} {}", path.display())]
    Io {
        /// What was being done.
        what: &'static str,
        /// The path it was done to.
        path: PathBuf,
        /// The underlying error.
        source: io::Error,
    },
    /// The path lies in the copies' own temporary directory.
    #[error("keep-copies: {path} cannot be kept: the top-level names {TMP_DIR} and {BOOK_PREFIX}* are reserved for Ferry's own files")]
    Reserved {
        /// The path refused.
        path: RelPath,
    },
    /// The bookkeeping file could not be read or written.
    #[error("keep-copies: the record of what the copies hold, {}, cannot be used; move it aside and the next run rebuilds it", path.display())]
    Book {
        /// The bookkeeping file.
        path: PathBuf,
        /// The underlying error.
        source: rusqlite::Error,
    },
    /// A row of the bookkeeping does not decode.
    #[error("keep-copies: {}: the record of {row} is damaged ({message}); move the file aside and the next run rebuilds it", path.display())]
    BadRecord {
        /// The bookkeeping file.
        path: PathBuf,
        /// The row's path.
        row: String,
        /// What is wrong with it.
        message: &'static str,
    },
}

fn io_err<'a>(what: &'static str, path: &'a Path) -> impl FnOnce(io::Error) -> CopiesError + 'a {
    move |source| CopiesError::Io {
        what,
        path: path.to_path_buf(),
        source,
    }
}

/// The keep-copies directory.
#[derive(Debug)]
pub struct Copies {
    root: PathBuf,
    tmp: PathBuf,
    next: AtomicU64,
    book: std::sync::Mutex<Book>,
}

impl Copies {
    /// Opens (creating) the copies directory `root` and its temporary
    /// directory, and removes temporary files left by processes that are gone.
    pub fn open(root: &Path) -> Result<Copies, CopiesError> {
        let open_err = |source| CopiesError::Open {
            path: root.to_path_buf(),
            source,
        };
        fs::create_dir_all(root).map_err(open_err)?;
        let root = root.canonicalize().map_err(open_err)?;
        let tmp = root.join(TMP_DIR);
        match fs::symlink_metadata(&tmp) {
            Ok(meta) if meta.is_dir() => {}
            Ok(_) => fs::remove_file(&tmp).map_err(open_err)?,
            Err(err) if err.kind() == io::ErrorKind::NotFound => {}
            Err(err) => return Err(open_err(err)),
        }
        remove_stale_temps(&tmp);
        let book = Book::open(&root)?;
        let copies = Copies {
            root,
            tmp,
            next: AtomicU64::new(0),
            book: std::sync::Mutex::new(book),
        };
        copies.tidy();
        Ok(copies)
    }

    /// Removes the temporary directory if nothing is being written in it
    /// (called when a run ends; the next write creates it again).
    pub fn tidy(&self) {
        let _ = fs::remove_dir(&self.tmp);
    }

    /// Records copies that were moved into place (see [`book`]).
    pub fn record(&self, records: &[CopyRecord]) -> Result<(), CopiesError> {
        self.with_book(|book| book.record(records))
    }

    /// Forgets the records of `paths` and of everything below them.
    pub fn forget(&self, paths: &[RelPath]) -> Result<(), CopiesError> {
        self.with_book(|book| book.forget(paths))
    }

    /// Every record, sorted by path.
    pub fn records(&self) -> Result<Vec<CopyRecord>, CopiesError> {
        self.with_book(|book| book.all())
    }

    fn with_book<T>(
        &self,
        f: impl FnOnce(&mut Book) -> Result<T, CopiesError>,
    ) -> Result<T, CopiesError> {
        // A panic while the lock was held cannot leave the connection
        // unusable (SQLite rolls an open transaction back), so a poisoned
        // lock is used as it is.
        let mut book = match self.book.lock() {
            Ok(book) => book,
            Err(poisoned) => poisoned.into_inner(),
        };
        f(&mut book)
    }

    /// The copies directory, canonical (so it can be given to
    /// [`crate::scan::scan`] as an exclusion when it lies inside the source).
    pub fn root(&self) -> &Path {
        &self.root
    }

    /// Starts writing the copy of the file at `path`; nothing is visible
    /// until [`CopyWriter::commit`].
    pub fn begin(&self, path: &RelPath) -> Result<CopyWriter, CopiesError> {
        self.check(path)?;
        let tmp = self.temp_name()?;
        let file = OpenOptions::new()
            .write(true)
            .create_new(true)
            .mode(0o600)
            .open(&tmp)
            .map_err(io_err("create a temporary file", &tmp))?;
        Ok(CopyWriter {
            file: Some(file),
            written: HoleWriter::default(),
            tmp,
            root: self.root.clone(),
            path: path.clone(),
            committed: false,
        })
    }

    /// Makes `path` a directory with this mtime and mode. The mode always
    /// keeps the owner's `rwx` bits, so the copies can still be updated.
    pub fn put_dir(&self, path: &RelPath, mtime_ns: i64, mode: u32) -> Result<(), CopiesError> {
        self.check(path)?;
        let dest = make_parents(&self.root, path)?;
        match fs::symlink_metadata(&dest) {
            Ok(meta) if meta.is_dir() => {}
            Ok(_) => {
                fs::remove_file(&dest).map_err(io_err("remove", &dest))?;
                create_dir(&dest)?;
            }
            Err(err) if err.kind() == io::ErrorKind::NotFound => create_dir(&dest)?,
            Err(err) => return Err(io_err("examine", &dest)(err)),
        }
        fs::set_permissions(&dest, fs::Permissions::from_mode((mode & 0o7777) | 0o700))
            .map_err(io_err("set the mode of", &dest))?;
        filetime::set_file_mtime(&dest, file_time(mtime_ns))
            .map_err(io_err("set the mtime of", &dest))
    }

    /// Makes `path` a symlink to `target` (replacing whatever is there).
    pub fn put_symlink(&self, path: &RelPath, target: &[u8]) -> Result<(), CopiesError> {
        self.check(path)?;
        let tmp = self.temp_name()?;
        symlink(OsStr::from_bytes(target), &tmp).map_err(io_err("create symlink", &tmp))?;
        let result = make_parents(&self.root, path).and_then(|dest| {
            clear_dir(&dest)?;
            fs::rename(&tmp, &dest).map_err(io_err("move a symlink into place at", &dest))
        });
        if result.is_err() {
            let _ = fs::remove_file(&tmp);
        }
        result
    }

    /// Removes the copy at `path`: a file, a symlink or a whole directory.
    /// A missing path (or one that only exists through a symlink) is fine.
    pub fn remove(&self, path: &RelPath) -> Result<(), CopiesError> {
        if self.check(path).is_err() {
            return Ok(());
        }
        let mut cur = self.root.clone();
        let mut components = path.components().peekable();
        while let Some(component) = components.next() {
            cur.push(OsStr::from_bytes(component));
            let meta = match fs::symlink_metadata(&cur) {
                Ok(meta) => meta,
                Err(err) if err.kind() == io::ErrorKind::NotFound => return Ok(()),
                Err(err) => return Err(io_err("examine", &cur)(err)),
            };
            if components.peek().is_none() {
                let result = if meta.is_dir() {
                    fs::remove_dir_all(&cur)
                } else {
                    fs::remove_file(&cur)
                };
                return match result {
                    Err(err) if err.kind() != io::ErrorKind::NotFound => {
                        Err(io_err("remove", &cur)(err))
                    }
                    _ => Ok(()),
                };
            }
            if !meta.is_dir() {
                // Not a real directory: nothing of ours lies below it.
                return Ok(());
            }
        }
        Ok(())
    }

    fn check(&self, path: &RelPath) -> Result<(), CopiesError> {
        match path.components().next() {
            Some(first) if is_reserved(first) => Err(CopiesError::Reserved { path: path.clone() }),
            _ => Ok(()),
        }
    }

    /// A fresh name in the temporary directory, which is created if needed.
    fn temp_name(&self) -> Result<PathBuf, CopiesError> {
        create_dir(&self.tmp)?;
        let n = self.next.fetch_add(1, Ordering::Relaxed);
        Ok(self.tmp.join(format!("{}-{n}.tmp", std::process::id())))
    }
}

/// A copy being written; its temporary file is removed on drop unless
/// committed.
#[derive(Debug)]
pub struct CopyWriter {
    file: Option<File>,
    /// The content appended so far; zero blocks are left as holes.
    written: HoleWriter,
    tmp: PathBuf,
    root: PathBuf,
    path: RelPath,
    committed: bool,
}

impl CopyWriter {
    /// Appends `data` to the copy; its all-zero blocks stay holes.
    pub fn write(&mut self, data: &[u8]) -> Result<(), CopiesError> {
        match self.file.as_ref() {
            Some(file) => self
                .written
                .write(file, data)
                .map_err(io_err("write", &self.tmp)),
            None => Err(io_err("write", &self.tmp)(io::Error::other(
                "already closed",
            ))),
        }
    }

    /// Sets the copy's mtime and mode and moves it into place, replacing
    /// whatever is there (creating parent directories, replacing files or
    /// symlinks in their way).
    pub fn commit(mut self, mtime_ns: i64, mode: u32) -> Result<(), CopiesError> {
        let file = self.file.take();
        let Some(file) = file else {
            return Err(io_err("commit", &self.tmp)(io::Error::other(
                "already closed",
            )));
        };
        self.written
            .finish(&file)
            .map_err(io_err("set the length of", &self.tmp))?;
        file.set_permissions(fs::Permissions::from_mode(mode & 0o7777))
            .map_err(io_err("set the mode of", &self.tmp))?;
        filetime::set_file_handle_times(&file, None, Some(file_time(mtime_ns)))
            .map_err(io_err("set the mtime of", &self.tmp))?;
        drop(file);
        let dest = make_parents(&self.root, &self.path)?;
        clear_dir(&dest)?;
        fs::rename(&self.tmp, &dest).map_err(io_err("move the copy into place at", &dest))?;
        self.committed = true;
        Ok(())
    }
}

impl Drop for CopyWriter {
    fn drop(&mut self) {
        if !self.committed {
            self.file = None;
            let _ = fs::remove_file(&self.tmp);
        }
    }
}

/// Creates the parent directories of `path` below `root` without following
/// symlinks (anything but a real directory in the way is replaced) and
/// returns the full destination path.
fn make_parents(root: &Path, path: &RelPath) -> Result<PathBuf, CopiesError> {
    let mut cur = root.to_path_buf();
    let components: Vec<&[u8]> = path.components().collect();
    let (last, parents) = match components.split_last() {
        Some(split) => split,
        None => return Ok(cur), // RelPath is never empty
    };
    for component in parents {
        cur.push(OsStr::from_bytes(component));
        match fs::symlink_metadata(&cur) {
            Ok(meta) if meta.is_dir() => continue,
            Ok(_) => fs::remove_file(&cur).map_err(io_err("remove", &cur))?,
            Err(err) if err.kind() == io::ErrorKind::NotFound => {}
            Err(err) => return Err(io_err("examine", &cur)(err)),
        }
        create_dir(&cur)?;
    }
    cur.push(OsStr::from_bytes(last));
    Ok(cur)
}

/// Creates the directory `dir`. Entries are copied concurrently, so another
/// one may have created it a moment ago: a real directory there is success.
fn create_dir(dir: &Path) -> Result<(), CopiesError> {
    match fs::create_dir(dir) {
        Ok(()) => Ok(()),
        Err(err) if err.kind() == io::ErrorKind::AlreadyExists => match fs::symlink_metadata(dir) {
            Ok(meta) if meta.is_dir() => Ok(()),
            _ => Err(io_err("create directory", dir)(err)),
        },
        Err(err) => Err(io_err("create directory", dir)(err)),
    }
}

/// Removes a real directory at `dest` (a file or symlink there is replaced by
/// the rename that follows).
fn clear_dir(dest: &Path) -> Result<(), CopiesError> {
    match fs::symlink_metadata(dest) {
        Ok(meta) if meta.is_dir() => fs::remove_dir_all(dest).map_err(io_err("remove", dest)),
        _ => Ok(()),
    }
}

/// True if a top-level name is one of the copies' own files.
pub fn is_reserved(first: &[u8]) -> bool {
    first == TMP_DIR.as_bytes() || first.starts_with(BOOK_PREFIX.as_bytes())
}

/// Removes `PID-N.tmp` files whose process no longer runs.
fn remove_stale_temps(tmp: &Path) {
    let Ok(dir) = fs::read_dir(tmp) else { return };
    for entry in dir.flatten() {
        let name = entry.file_name();
        let pid = name
            .to_str()
            .and_then(|n| n.split('-').next())
            .and_then(|p| p.parse::<u32>().ok());
        let alive = match pid {
            Some(pid) => {
                pid == std::process::id() || Path::new("/proc").join(pid.to_string()).exists()
            }
            None => false,
        };
        if !alive {
            let _ = fs::remove_file(entry.path());
        }
    }
}

/// A `filetime` value from nanoseconds since the epoch (negative allowed).
fn file_time(mtime_ns: i64) -> FileTime {
    let secs = mtime_ns.div_euclid(1_000_000_000);
    // rem_euclid is in 0..1e9, so it always fits in u32.
    let nanos = mtime_ns.rem_euclid(1_000_000_000) as u32;
    FileTime::from_unix_time(secs, nanos)
}

#[cfg(test)]
#[allow(clippy::unwrap_used, clippy::expect_used)] // tests fail loudly
mod tests {
    use std::os::unix::fs::MetadataExt;

    use super::*;
    use crate::scan::mtime_ns;

    fn rel(s: &str) -> RelPath {
        RelPath::from_bytes(s).unwrap()
    }

    fn put_file(copies: &Copies, path: &str, data: &[u8]) {
        let mut w = copies.begin(&rel(path)).unwrap();
        w.write(data).unwrap();
        w.commit(1_000_000_000, 0o644).unwrap();
    }

    fn temp_files(copies: &Copies) -> usize {
        match fs::read_dir(copies.root().join(TMP_DIR)) {
            Ok(dir) => dir.count(),
            Err(_) => 0,
        }
    }

    #[test]
    fn commit_gives_exact_bytes_mtime_and_mode() {
        let dir = tempfile::tempdir().unwrap();
        let copies = Copies::open(&dir.path().join("copies")).unwrap();
        let mut w = copies.begin(&rel("a/b/c\u{e9}.bin")).unwrap();
        w.write(b"hello ").unwrap();
        w.write(&[0xff; 70_000]).unwrap();
        w.commit(1_700_000_000_987_654_321, 0o640).unwrap();
        let dest = copies.root().join("a/b/c\u{e9}.bin");
        let mut expected = b"hello ".to_vec();
        expected.extend_from_slice(&[0xff; 70_000]);
        assert_eq!(fs::read(&dest).unwrap(), expected);
        let meta = fs::metadata(&dest).unwrap();
        assert_eq!(mtime_ns(&meta), 1_700_000_000_987_654_321);
        assert_eq!(meta.mode() & 0o7777, 0o640);
        assert_eq!(temp_files(&copies), 0);
        // Negative times (before 1970) survive too.
        let mut w = copies.begin(&rel("old")).unwrap();
        w.write(b"x").unwrap();
        w.commit(-1_500_000_000, 0o600).unwrap();
        assert_eq!(
            mtime_ns(&fs::metadata(copies.root().join("old")).unwrap()),
            -1_500_000_000
        );
    }

    #[test]
    fn drop_without_commit_leaves_nothing() {
        let dir = tempfile::tempdir().unwrap();
        let copies = Copies::open(dir.path()).unwrap();
        put_file(&copies, "f", b"old");
        let mut w = copies.begin(&rel("f")).unwrap();
        w.write(b"new and partial").unwrap();
        assert_eq!(temp_files(&copies), 1);
        drop(w);
        assert_eq!(temp_files(&copies), 0);
        assert_eq!(fs::read(dir.path().join("f")).unwrap(), b"old");
    }

    #[test]
    fn replaces_dirs_files_and_symlinks_in_the_way() {
        let dir = tempfile::tempdir().unwrap();
        let copies = Copies::open(&dir.path().join("c")).unwrap();
        copies.put_dir(&rel("x"), 5_000_000_000, 0o755).unwrap();
        put_file(&copies, "x/y", b"1");
        // A file where a directory was.
        put_file(&copies, "x", b"2");
        assert_eq!(fs::read(copies.root().join("x")).unwrap(), b"2");
        // A directory where a file was, created as a parent.
        put_file(&copies, "x/z", b"3");
        assert_eq!(fs::read(copies.root().join("x/z")).unwrap(), b"3");
        assert!(!copies.root().join("x/y").exists());
        // put_dir over a file.
        put_file(&copies, "f", b"4");
        copies.put_dir(&rel("f"), 7_000_000_001, 0o500).unwrap();
        let meta = fs::symlink_metadata(copies.root().join("f")).unwrap();
        assert!(meta.is_dir());
        assert_eq!(meta.mode() & 0o7777, 0o700, "owner rwx kept");
        assert_eq!(mtime_ns(&meta), 7_000_000_001);
        // Symlinks: target bytes kept, a file replaced, a directory replaced.
        copies.put_symlink(&rel("f"), b"t\xff/../x").unwrap();
        let link = fs::read_link(copies.root().join("f")).unwrap();
        assert_eq!(link.as_os_str().as_bytes(), b"t\xff/../x");
        copies.put_symlink(&rel("x/z"), b"dangling").unwrap();
        assert_eq!(
            fs::read_link(copies.root().join("x/z")).unwrap(),
            Path::new("dangling")
        );
        assert_eq!(temp_files(&copies), 0);
    }

    #[test]
    fn never_writes_through_a_symlink() {
        let dir = tempfile::tempdir().unwrap();
        let outside = dir.path().join("outside");
        fs::create_dir(&outside).unwrap();
        let copies = Copies::open(&dir.path().join("c")).unwrap();
        symlink(&outside, copies.root().join("p")).unwrap();
        put_file(&copies, "p/f", b"in");
        assert!(fs::symlink_metadata(copies.root().join("p"))
            .unwrap()
            .is_dir());
        assert_eq!(fs::read(copies.root().join("p/f")).unwrap(), b"in");
        assert_eq!(fs::read_dir(&outside).unwrap().count(), 0);

        // A symlink at the destination is replaced, not written through.
        fs::write(outside.join("target"), b"keep").unwrap();
        symlink(outside.join("target"), copies.root().join("l")).unwrap();
        put_file(&copies, "l", b"copy");
        assert_eq!(fs::read(outside.join("target")).unwrap(), b"keep");
        assert_eq!(fs::read(copies.root().join("l")).unwrap(), b"copy");

        // put_dir on a symlink to a directory replaces the link.
        symlink(&outside, copies.root().join("d")).unwrap();
        copies.put_dir(&rel("d"), 0, 0o755).unwrap();
        assert!(fs::symlink_metadata(copies.root().join("d"))
            .unwrap()
            .is_dir());
        assert_eq!(fs::read_dir(&outside).unwrap().count(), 1);

        // remove through a symlink does nothing outside.
        symlink(&outside, copies.root().join("q")).unwrap();
        copies.remove(&rel("q/target")).unwrap();
        assert!(outside.join("target").exists());
    }

    #[test]
    fn remove_files_links_dirs_and_missing() {
        let dir = tempfile::tempdir().unwrap();
        let copies = Copies::open(dir.path()).unwrap();
        put_file(&copies, "d/e/f", b"x");
        put_file(&copies, "g", b"x");
        copies.put_symlink(&rel("l"), b"g").unwrap();
        copies.remove(&rel("g")).unwrap();
        copies.remove(&rel("l")).unwrap();
        copies.remove(&rel("d")).unwrap();
        copies.remove(&rel("missing/x")).unwrap();
        copies.tidy();
        let left: Vec<_> = fs::read_dir(dir.path())
            .unwrap()
            .map(|e| e.unwrap().file_name())
            .collect();
        assert_eq!(left, [BOOK_FILE]);
    }

    #[test]
    fn reserved_name_and_stale_temps() {
        let dir = tempfile::tempdir().unwrap();
        let copies = Copies::open(dir.path()).unwrap();
        let err = copies.begin(&rel(".ferry-tmp/x")).unwrap_err();
        assert!(matches!(err, CopiesError::Reserved { .. }), "{err}");
        assert!(copies.put_dir(&rel(".ferry-tmp"), 0, 0o755).is_err());
        assert!(copies.begin(&rel(".ferry-copies.db-journal")).is_err());
        let writing = copies.begin(&rel("x")).unwrap();
        copies.remove(&rel(".ferry-tmp")).unwrap();
        assert!(dir.path().join(TMP_DIR).is_dir());
        drop(writing);
        // No pid is ever this large (pid_max <= 2^22).
        fs::write(dir.path().join(TMP_DIR).join("999999999-0.tmp"), b"stale").unwrap();
        let mine = dir
            .path()
            .join(TMP_DIR)
            .join(format!("{}-77.tmp", std::process::id()));
        fs::write(&mine, b"live").unwrap();
        let copies = Copies::open(dir.path()).unwrap();
        assert_eq!(temp_files(&copies), 1);
        assert!(mine.exists());
    }
}
