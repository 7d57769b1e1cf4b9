//! Filesystem primitives for the mirror, the versions area and staging that
//! never follow a symbolic link and never leave the store.
//!
//! [`Tree`] holds a descriptor of the store's root, opened once. Every path
//! below it is reached from that descriptor with `openat2` and
//! `RESOLVE_BENEATH | RESOLVE_NO_SYMLINKS`: a component that is a symlink
//! (or `..`) makes the call fail with `ELOOP`/`EXDEV` instead of being
//! followed. Leaves are then changed relative to their parent's descriptor
//! (`mkdirat`, `renameat`, `symlinkat`, `unlinkat`, `utimensat` with
//! `AT_SYMLINK_NOFOLLOW`), and files through handles opened the same way.
//! So a directory that another local program swaps for a symlink while the
//! receiver writes below it is refused, not followed: nothing is written,
//! renamed, chmod-ed or read outside the store. (The store's own checks run
//! under its write lock; these calls are what makes them hold against
//! programs outside Ferry.)

use std::ffi::OsStr;
use std::fs::{File, FileTimes, Metadata, Permissions};
use std::io;
use std::os::fd::OwnedFd;
use std::os::unix::ffi::OsStrExt;
use std::os::unix::fs::PermissionsExt;
use std::path::{Component, Path, PathBuf};
use std::time::SystemTime;

use ferry_proto::RelPath;
use rustix::fs::{AtFlags, Mode, OFlags, ResolveFlags};

use super::error::{io_err, StoreError};
use crate::units::system_time;

/// Permission bits applied on disk: the sender's bits without setuid and
/// setgid (the catalog keeps the full mode), so that a sender cannot plant a
/// set-id program on the receiver.
pub(crate) const DISK_MODE_MASK: u32 = 0o1777;

/// How often a resolution that raced with a rename elsewhere (`EAGAIN`) is
/// tried again.
const RESOLVE_TRIES: u32 = 16;

/// The store's root directory, reached by descriptor. See the module docs.
#[derive(Debug)]
pub(crate) struct Tree {
    root: PathBuf,
    fd: OwnedFd,
    /// Tests: a crash injected at a chosen step (see [`Tree::step`]).
    #[cfg(test)]
    pub crash: Crash,
}

/// A crash planned for the store's n-th changing step (tests only): from
/// that step on every change fails, as if the process had been killed
/// there, until the store is dropped and opened again.
#[cfg(test)]
#[derive(Debug, Default)]
pub(crate) struct Crash {
    at: std::sync::atomic::AtomicU64,
    steps: std::sync::atomic::AtomicU64,
    crashed: std::sync::atomic::AtomicBool,
}

#[cfg(test)]
impl Crash {
    /// Crashes at the `at`-th step from now (1: the next one).
    pub fn plan(&self, at: u64) {
        use std::sync::atomic::Ordering::SeqCst;
        self.at.store(self.steps.load(SeqCst) + at, SeqCst);
    }

    /// Forgets a planned crash not reached yet.
    pub fn cancel(&self) {
        self.at.store(0, std::sync::atomic::Ordering::SeqCst);
    }

    /// True once the planned step was reached.
    pub fn crashed(&self) -> bool {
        self.crashed.load(std::sync::atomic::Ordering::SeqCst)
    }

    fn hit(&self) -> bool {
        use std::sync::atomic::Ordering::SeqCst;
        let step = self.steps.fetch_add(1, SeqCst) + 1;
        let at = self.at.load(SeqCst);
        if at > 0 && step >= at {
            self.crashed.store(true, SeqCst);
        }
        self.crashed.load(SeqCst)
    }
}

impl Tree {
    /// Opens the directory `root` (absolute). The root itself is resolved
    /// as the admin gave it; nothing below it will follow a link.
    pub fn open(root: &Path) -> Result<Tree, StoreError> {
        let fd = rustix::fs::open(
            root,
            OFlags::PATH | OFlags::DIRECTORY | OFlags::CLOEXEC,
            Mode::empty(),
        )
        .map_err(|e| io_err("open the store directory", root, e.into()))?;
        Ok(Tree {
            root: root.to_path_buf(),
            fd,
            #[cfg(test)]
            crash: Crash::default(),
        })
    }

    /// The error for `e` on `path`; a path too long for the filesystem is
    /// measured from the root, where every path here starts.
    fn fail(&self, action: &'static str, path: &Path, e: io::Error) -> StoreError {
        match io_err(action, path, e) {
            StoreError::PathTooLong {
                action,
                path,
                longest,
                ..
            } => {
                let len = path
                    .strip_prefix(&self.root)
                    .map_or(0, |rel| rel.as_os_str().len());
                StoreError::PathTooLong {
                    action,
                    path,
                    len,
                    longest,
                }
            }
            other => other,
        }
    }

    /// One step that changes the store (a create, rename, removal, flush
    /// or catalog record). Only tests can make it fail: see [`Crash`].
    pub fn step(&self, path: &Path) -> Result<(), StoreError> {
        #[cfg(test)]
        if self.crash.hit() {
            return Err(self.fail(
                "go on after the injected crash at",
                path,
                io::Error::other("injected crash"),
            ));
        }
        let _ = path;
        Ok(())
    }

    /// The root's path, as opened.
    pub fn root(&self) -> &Path {
        &self.root
    }

    /// `path` relative to the root; an error if it is not below it (a
    /// caller bug, or a catalog value naming a place outside the store).
    pub fn relative<'a>(&self, path: &'a Path) -> Result<&'a Path, StoreError> {
        let rel = path.strip_prefix(&self.root).map_err(|_| outside(path))?;
        if rel
            .components()
            .all(|c| matches!(c, Component::Normal(_) | Component::CurDir))
        {
            Ok(rel)
        } else {
            Err(outside(path))
        }
    }

    /// Opens `rel` (relative to the root; empty: the root) with `flags`,
    /// never following a symlink and never leaving the root.
    fn resolve(&self, rel: &Path, flags: OFlags, mode: Mode) -> io::Result<OwnedFd> {
        open_beneath(&self.fd, rel, flags, mode)
    }

    /// Opens the parent directory of `path` (absolute, below the root) and
    /// returns it with the leaf's name.
    fn parent<'a>(&self, path: &'a Path) -> Result<(OwnedFd, &'a OsStr), StoreError> {
        let rel = self.relative(path)?;
        let leaf = rel.file_name().ok_or_else(|| outside(path))?;
        let parent = rel.parent().unwrap_or(Path::new(""));
        let fd = self
            .resolve(parent, OFlags::PATH | OFlags::DIRECTORY, Mode::empty())
            .map_err(|e| self.fail("open the directory of", path, e))?;
        Ok((fd, leaf))
    }

    /// `lstat` of `path`, with "not there" as `None`. A symlink anywhere
    /// above `path` is an error (`ELOOP`), never followed.
    pub fn lstat(&self, path: &Path) -> Result<Option<Metadata>, StoreError> {
        let rel = self.relative(path)?;
        match self.resolve(rel, OFlags::PATH | OFlags::NOFOLLOW, Mode::empty()) {
            Ok(fd) => File::from(fd)
                .metadata()
                .map(Some)
                .map_err(|e| self.fail("inspect", path, e)),
            Err(e) if e.kind() == io::ErrorKind::NotFound => Ok(None),
            Err(e) => Err(self.fail("inspect", path, e)),
        }
    }

    /// What is at `dir/rel` without following any symlink on the way:
    /// `None` if it or one of its parents is missing, or a parent is not a
    /// real directory (then `rel` cannot be there as far as the mirror
    /// goes).
    pub fn lookup(&self, dir: &Path, rel: &RelPath) -> Result<Option<Metadata>, StoreError> {
        for parent in ancestors(rel) {
            match self.lstat(&parent.under(dir))? {
                Some(m) if m.is_dir() => {}
                _ => return Ok(None),
            }
        }
        self.lstat(&rel.under(dir))
    }

    /// Makes sure `path` is a real directory, creating it if missing.
    /// Anything else there is an error: this is for the store's own
    /// directories, where nothing is archived.
    pub fn ensure_own_dir(&self, path: &Path) -> Result<(), StoreError> {
        match self.lstat(path)? {
            Some(m) if m.is_dir() => Ok(()),
            Some(_) => Err(StoreError::NotADirectory {
                path: path.to_path_buf(),
            }),
            None => self.create_dir(path),
        }
    }

    /// Creates one directory (mode 0755 before the umask).
    pub fn create_dir(&self, path: &Path) -> Result<(), StoreError> {
        self.step(path)?;
        let (parent, leaf) = self.parent(path)?;
        rustix::fs::mkdirat(&parent, leaf, Mode::from_raw_mode(0o755))
            .map_err(|e| self.fail("create the directory", path, e.into()))
    }

    /// Opens a file or directory read-only (for reading, changing its
    /// metadata or flushing it), refusing a symlink anywhere on the way.
    pub fn open_nofollow(&self, path: &Path, dir: bool) -> Result<File, StoreError> {
        // Non-blocking: a FIFO planted in the store must not hang a read.
        let mut flags = OFlags::RDONLY | OFlags::NOFOLLOW | OFlags::NONBLOCK;
        if dir {
            flags |= OFlags::DIRECTORY;
        }
        let rel = self.relative(path)?;
        self.resolve(rel, flags, Mode::empty())
            .map(File::from)
            .map_err(|e| self.fail("open", path, e))
    }

    /// Creates a new file for reading and writing (it must not exist; a
    /// symlink there counts as existing).
    pub fn create_new(&self, path: &Path, mode: u32) -> Result<File, StoreError> {
        self.step(path)?;
        let rel = self.relative(path)?;
        self.resolve(
            rel,
            OFlags::RDWR | OFlags::CREATE | OFlags::EXCL | OFlags::NOFOLLOW,
            Mode::from_raw_mode(mode),
        )
        .map(File::from)
        .map_err(|e| self.fail("create", path, e))
    }

    /// Opens an existing file for reading and writing.
    pub fn open_rw(&self, path: &Path) -> Result<File, StoreError> {
        let rel = self.relative(path)?;
        self.resolve(rel, OFlags::RDWR | OFlags::NOFOLLOW, Mode::empty())
            .map(File::from)
            .map_err(|e| self.fail("open", path, e))
    }

    /// `rename`, both ends relative to their parents' descriptors; the
    /// error names both ends.
    pub fn rename(&self, from: &Path, to: &Path) -> Result<(), StoreError> {
        self.step(from)?;
        let (from_dir, from_leaf) = self.parent(from)?;
        let (to_dir, to_leaf) = self.parent(to)?;
        rustix::fs::renameat(&from_dir, from_leaf, &to_dir, to_leaf).map_err(|e| {
            let e = io::Error::from(e);
            self.fail(
                "move",
                from,
                io::Error::new(e.kind(), format!("to {}: {e}", to.display())),
            )
        })
    }

    /// Creates a symlink at `path` pointing to `target` (bytes, never
    /// followed).
    pub fn symlink(&self, target: &[u8], path: &Path) -> Result<(), StoreError> {
        self.step(path)?;
        let (parent, leaf) = self.parent(path)?;
        rustix::fs::symlinkat(OsStr::from_bytes(target), &parent, leaf)
            .map_err(|e| self.fail("create the symlink", path, e.into()))
    }

    /// The target of the symlink at `path`.
    pub fn read_link(&self, path: &Path) -> Result<Vec<u8>, StoreError> {
        let (parent, leaf) = self.parent(path)?;
        rustix::fs::readlinkat(&parent, leaf, Vec::new())
            .map(std::ffi::CString::into_bytes)
            .map_err(|e| self.fail("read the link", path, e.into()))
    }

    /// Sets a symlink's own modification time (never its target's).
    pub fn set_symlink_mtime(&self, path: &Path, mtime_ns: i64) -> Result<(), StoreError> {
        self.step(path)?;
        let (parent, leaf) = self.parent(path)?;
        let t = rustix::fs::Timespec {
            tv_sec: mtime_ns.div_euclid(1_000_000_000),
            tv_nsec: mtime_ns.rem_euclid(1_000_000_000),
        };
        let times = rustix::fs::Timestamps {
            last_access: t,
            last_modification: t,
        };
        rustix::fs::utimensat(&parent, leaf, &times, AtFlags::SYMLINK_NOFOLLOW)
            .map_err(|e| self.fail("set the modification time of", path, e.into()))
    }

    /// Flushes a directory so the renames and creations in it are durable.
    pub fn fsync_dir(&self, path: &Path) -> Result<(), StoreError> {
        self.step(path)?;
        let dir = self.open_nofollow(path, true)?;
        dir.sync_all()
            .map_err(|e| self.fail("fsync the directory", path, e))
    }

    /// Removes a file or symlink.
    pub fn remove_file(&self, path: &Path) -> Result<(), StoreError> {
        self.step(path)?;
        let (parent, leaf) = self.parent(path)?;
        rustix::fs::unlinkat(&parent, leaf, AtFlags::empty())
            .map_err(|e| self.fail("remove", path, e.into()))
    }

    /// Removes an empty directory.
    pub fn remove_dir(&self, path: &Path) -> Result<(), StoreError> {
        self.step(path)?;
        let (parent, leaf) = self.parent(path)?;
        rustix::fs::unlinkat(&parent, leaf, AtFlags::REMOVEDIR)
            .map_err(|e| self.fail("remove the directory", path, e.into()))
    }

    /// Removes `path` and, if it is a directory, everything below it,
    /// without following a symlink.
    pub fn remove_all(&self, path: &Path) -> Result<(), StoreError> {
        match self.lstat(path)? {
            Some(m) if m.is_dir() => {
                for name in self.read_dir(path)? {
                    self.remove_all(&join_bytes(path, &name))?;
                }
                self.remove_dir(path)
            }
            Some(_) => self.remove_file(path),
            None => Ok(()),
        }
    }

    /// The names in the directory `path` (without `.` and `..`).
    pub fn read_dir(&self, path: &Path) -> Result<Vec<Vec<u8>>, StoreError> {
        let dir = self.open_nofollow(path, true)?;
        let err = |e: rustix::io::Errno| self.fail("list", path, e.into());
        let mut names = Vec::new();
        for entry in rustix::fs::Dir::read_from(&dir).map_err(err)? {
            let name = entry.map_err(err)?.file_name().to_bytes().to_vec();
            if name != b"." && name != b".." {
                names.push(name);
            }
        }
        Ok(names)
    }

    /// Flushes every pending write of the store's filesystem to disk.
    pub fn syncfs(&self) -> Result<(), StoreError> {
        self.step(&self.root)?;
        let root = self.open_nofollow(&self.root, true)?;
        rustix::fs::syncfs(&root).map_err(|e| self.fail("flush (syncfs)", &self.root, e.into()))
    }
}

/// Opens `rel` below the directory `dir` (empty: `dir` itself) with
/// `flags`, never following a symlink (`ELOOP`) and never leaving `dir`
/// (`EXDEV`): `openat2` with `RESOLVE_BENEATH | RESOLVE_NO_SYMLINKS`, tried
/// again when it raced with a rename elsewhere (`EAGAIN`).
pub(crate) fn open_beneath(
    dir: &OwnedFd,
    rel: &Path,
    flags: OFlags,
    mode: Mode,
) -> io::Result<OwnedFd> {
    let rel: &Path = if rel.as_os_str().is_empty() {
        Path::new(".")
    } else {
        rel
    };
    let mut tries = 0;
    loop {
        match rustix::fs::openat2(
            dir,
            rel,
            flags | OFlags::CLOEXEC,
            mode,
            ResolveFlags::BENEATH | ResolveFlags::NO_SYMLINKS,
        ) {
            Err(rustix::io::Errno::AGAIN | rustix::io::Errno::INTR) if tries < RESOLVE_TRIES => {
                tries += 1;
            }
            other => return other.map_err(io::Error::from),
        }
    }
}

/// The error for a path that is not below the store's root.
fn outside(path: &Path) -> StoreError {
    StoreError::OutsideStore {
        path: path.to_path_buf(),
    }
}

/// The prefixes of `rel` that must be directories: `a`, `a/b` for `a/b/c`.
pub(crate) fn ancestors(rel: &RelPath) -> Vec<RelPath> {
    let mut out = Vec::new();
    let mut parent = rel.parent();
    while let Some(p) = parent {
        parent = p.parent();
        out.push(p);
    }
    out.reverse();
    out
}

/// Sets permission bits (masked by [`DISK_MODE_MASK`], plus `extra`) and the
/// modification time, through a handle.
pub(crate) fn set_meta(
    file: &File,
    path: &Path,
    mode: u32,
    extra: u32,
    mtime_ns: i64,
) -> Result<(), StoreError> {
    file.set_permissions(Permissions::from_mode((mode & DISK_MODE_MASK) | extra))
        .map_err(|e| io_err("set the permissions of", path, e))?;
    file.set_times(FileTimes::new().set_modified(system_time(mtime_ns)))
        .map_err(|e| io_err("set the modification time of", path, e))
}

/// UTC `YYYYMMDD-HHMMSS` of `t`, for archive names.
pub(crate) fn utc_stamp(t: SystemTime) -> String {
    let digits: String = humantime::format_rfc3339_seconds(t)
        .to_string()
        .chars()
        .filter(char::is_ascii_digit)
        .collect();
    if digits.len() == 14 {
        format!("{}-{}", &digits[..8], &digits[8..])
    } else {
        digits
    }
}

/// What an archive's name says it holds.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Tag {
    /// `~v<id>`: the bytes of catalog row `id`.
    Version(u64),
    /// `~u<n>`: something the mirror held that no row recorded (a copy an
    /// interrupted commit left there, or a directory made for a child).
    /// Kept, never acknowledged; `verify` counts these apart.
    Unrecorded(u64),
}

/// The archive name of a component: `<name>~<stamp>~v<id>` or
/// `~u<n>` (see [`Tag`]), plus `-<k>` when that name is taken, shortening
/// `name` so the whole stays within the 255-byte limit of a file name.
pub(crate) fn archive_name(name: &[u8], stamp: &str, tag: Tag, k: u32) -> Vec<u8> {
    let mut suffix = match tag {
        Tag::Version(id) => format!("~{stamp}~v{id}"),
        Tag::Unrecorded(n) => format!("~{stamp}~u{n}"),
    };
    if k > 0 {
        suffix.push_str(&format!("-{k}"));
    }
    let keep = name
        .len()
        .min(ferry_proto::MAX_COMPONENT_LEN.saturating_sub(suffix.len()));
    let mut out = name[..keep].to_vec();
    out.extend_from_slice(suffix.as_bytes());
    out
}

/// True if `name` is the archive name of an unrecorded copy
/// (`…~u<n>` or `…~u<n>-<k>`, see [`Tag::Unrecorded`]).
pub(crate) fn is_unrecorded_archive(name: &[u8]) -> bool {
    let Some(at) = name.iter().rposition(|b| *b == b'~') else {
        return false;
    };
    let Some(rest) = name[at + 1..].strip_prefix(b"u") else {
        return false;
    };
    let (n, k) = match rest.iter().position(|b| *b == b'-') {
        Some(dash) => (&rest[..dash], &rest[dash + 1..]),
        None => (rest, &b"0"[..]),
    };
    let digits = |d: &[u8]| !d.is_empty() && d.iter().all(u8::is_ascii_digit);
    digits(n) && digits(k) && name[..at].contains(&b'~')
}

/// A path's bytes relative to `root`, for the catalog.
pub(crate) fn relative_bytes(root: &Path, path: &Path) -> Vec<u8> {
    path.strip_prefix(root)
        .unwrap_or(path)
        .as_os_str()
        .as_bytes()
        .to_vec()
}

/// `dir` joined with a raw file-name byte string.
pub(crate) fn join_bytes(dir: &Path, name: &[u8]) -> PathBuf {
    dir.join(OsStr::from_bytes(name))
}

#[cfg(test)]
#[allow(clippy::unwrap_used)] // a failing unwrap is a failing test
mod tests {
    use super::*;
    use std::fs;
    use std::os::unix::fs::symlink;
    use std::time::{Duration, UNIX_EPOCH};

    #[test]
    fn stamps_and_names() {
        let t = UNIX_EPOCH + Duration::from_secs(1_767_323_045); // 2026-01-02T03:04:05Z
        assert_eq!(utc_stamp(t), "20260102-030405");
        assert_eq!(
            archive_name(b"f.txt", "20260102-030405", Tag::Version(7), 0),
            b"f.txt~20260102-030405~v7"
        );
        assert_eq!(archive_name(b"f", "S", Tag::Version(7), 2), b"f~S~v7-2");
        let u = archive_name(b"f", "20260102-030405", Tag::Unrecorded(3), 1);
        assert_eq!(u, b"f~20260102-030405~u3-1");
        assert!(is_unrecorded_archive(&u));
        assert!(is_unrecorded_archive(b"a~b~u12"));
        assert!(!is_unrecorded_archive(b"f~20260102-030405~v3"));
        assert!(!is_unrecorded_archive(b"plain~u3")); // no stamp: a user's name
        assert!(!is_unrecorded_archive(b"x~s~u"));
        let long = vec![b'x'; 255];
        assert_eq!(
            archive_name(&long, "20260102-030405", Tag::Version(12), 0).len(),
            255
        );
    }

    #[test]
    fn lookup_does_not_follow_parents() {
        let dir = tempfile::tempdir().unwrap();
        let tree = Tree::open(dir.path()).unwrap();
        let outside = tempfile::tempdir().unwrap();
        fs::write(outside.path().join("f"), b"x").unwrap();
        symlink(outside.path(), dir.path().join("a")).unwrap();
        let rel = RelPath::from_bytes("a/f").unwrap();
        assert!(tree.lookup(dir.path(), &rel).unwrap().is_none());
        assert!(tree
            .lookup(dir.path(), &RelPath::from_bytes("a").unwrap())
            .unwrap()
            .unwrap()
            .is_symlink());
        assert!(tree.open_nofollow(&dir.path().join("a"), true).is_err());
    }

    /// Every primitive refuses a symlink on the way, whatever a component
    /// was when it was last looked at.
    #[test]
    fn no_primitive_goes_through_a_symlink() {
        let dir = tempfile::tempdir().unwrap();
        let tree = Tree::open(dir.path()).unwrap();
        let outside = tempfile::tempdir().unwrap();
        fs::write(outside.path().join("f"), b"x").unwrap();
        symlink(outside.path(), dir.path().join("a")).unwrap();
        let at = |p: &str| dir.path().join(p);
        let refused = |r: Result<(), StoreError>| {
            let e = r.unwrap_err();
            assert!(matches!(e, StoreError::SymlinkInWay { .. }), "{e}");
        };
        assert!(matches!(
            tree.lstat(&at("a/f")).unwrap_err(),
            StoreError::SymlinkInWay { .. }
        ));
        refused(tree.create_dir(&at("a/d")));
        refused(tree.create_new(&at("a/n"), 0o600).map(drop));
        refused(tree.open_rw(&at("a/f")).map(drop));
        refused(tree.open_nofollow(&at("a/f"), false).map(drop));
        refused(tree.symlink(b"t", &at("a/l")));
        refused(tree.set_symlink_mtime(&at("a/f"), 5));
        refused(tree.remove_file(&at("a/f")));
        refused(tree.read_link(&at("a/f")).map(drop));
        refused(tree.read_dir(&at("a/x")).map(drop));
        assert!(
            tree.read_dir(&at("a")).is_err(),
            "listed a symlink's target"
        );
        fs::write(at("mine"), b"m").unwrap();
        refused(tree.rename(&at("mine"), &at("a/mine")));
        refused(tree.rename(&at("a/f"), &at("taken")));
        // Nothing changed outside, and nothing came in.
        let names: Vec<_> = fs::read_dir(outside.path())
            .unwrap()
            .map(|e| e.unwrap().file_name())
            .collect();
        assert_eq!(names, ["f"]);
        assert!(!at("taken").exists());
        // A path that is not below the root is refused before any call.
        let e = tree.lstat(outside.path()).unwrap_err();
        assert!(matches!(e, StoreError::OutsideStore { .. }), "{e}");
        let e = tree.lstat(&at("x/../../etc")).unwrap_err();
        assert!(matches!(e, StoreError::OutsideStore { .. }), "{e}");
    }

    #[test]
    fn ancestors_in_order() {
        let a = ancestors(&RelPath::from_bytes("a/b/c").unwrap());
        let names: Vec<_> = a.iter().map(|p| p.to_string()).collect();
        assert_eq!(names, ["a", "a/b"]);
        assert!(ancestors(&RelPath::from_bytes("a").unwrap()).is_empty());
    }
}
