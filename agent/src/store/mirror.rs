//! Filesystem primitives for the mirror and the versions area that never
//! follow a symbolic link: every component is checked with
//! `symlink_metadata`, files and directories are changed through handles
//! opened with `O_NOFOLLOW`.
//!
//! These checks are race-free against the senders because every change to
//! the mirror runs under the store's write lock; they do not defend against
//! another local program rewriting the store at the same time.

use std::ffi::OsStr;
use std::fs::{self, File, FileTimes, Metadata, OpenOptions, Permissions};
use std::io;
use std::os::unix::ffi::OsStrExt;
use std::os::unix::fs::{OpenOptionsExt, PermissionsExt};
use std::path::{Path, PathBuf};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use ferry_proto::RelPath;

use super::error::{io_err, StoreError};

/// Permission bits applied on disk: the sender's bits without setuid and
/// setgid (the catalog keeps the full mode), so that a sender cannot plant a
/// set-id program on the receiver.
pub(crate) const DISK_MODE_MASK: u32 = 0o1777;

/// `symlink_metadata`, with "not there" as `None`.
pub(crate) fn lstat(path: &Path) -> Result<Option<Metadata>, StoreError> {
    match fs::symlink_metadata(path) {
        Ok(m) => Ok(Some(m)),
        Err(e) if e.kind() == io::ErrorKind::NotFound => Ok(None),
        Err(e) => Err(io_err("inspect", path, e)),
    }
}

/// Makes sure `path` is a real directory, creating it if missing. Anything
/// else there is an error: this is for the store's own directories, where
/// nothing is archived.
pub(crate) fn ensure_own_dir(path: &Path) -> Result<(), StoreError> {
    match lstat(path)? {
        Some(m) if m.is_dir() => Ok(()),
        Some(_) => Err(StoreError::NotADirectory {
            path: path.to_path_buf(),
        }),
        None => create_dir(path),
    }
}

/// Creates one directory (mode 0755 before the umask).
pub(crate) fn create_dir(path: &Path) -> Result<(), StoreError> {
    fs::create_dir(path).map_err(|e| io_err("create the directory", path, e))
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

/// What is at `root/rel` without following any symlink on the way: `None`
/// if it or one of its parents is missing, or a parent is not a real
/// directory (then `rel` cannot be there as far as the mirror goes).
pub(crate) fn lookup(root: &Path, rel: &RelPath) -> Result<Option<Metadata>, StoreError> {
    for dir in ancestors(rel) {
        match lstat(&dir.under(root))? {
            Some(m) if m.is_dir() => {}
            _ => return Ok(None),
        }
    }
    lstat(&rel.under(root))
}

/// Opens a file or directory for changing its metadata, refusing a symlink
/// in the last component (`O_NOFOLLOW`).
pub(crate) fn open_nofollow(path: &Path, dir: bool) -> Result<File, StoreError> {
    let mut flags = libc::O_NOFOLLOW | libc::O_CLOEXEC;
    if dir {
        flags |= libc::O_DIRECTORY;
    }
    OpenOptions::new()
        .read(true)
        .custom_flags(flags)
        .open(path)
        .map_err(|e| io_err("open", path, e))
}

/// The time `ns` nanoseconds from the Unix epoch (negative: before it).
pub(crate) fn system_time(ns: i64) -> SystemTime {
    let magnitude = Duration::from_nanos(ns.unsigned_abs());
    if ns >= 0 {
        UNIX_EPOCH + magnitude
    } else {
        UNIX_EPOCH - magnitude
    }
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

/// Sets a symlink's own modification time (never its target's).
pub(crate) fn set_symlink_mtime(path: &Path, mtime_ns: i64) -> Result<(), StoreError> {
    let secs = mtime_ns.div_euclid(1_000_000_000);
    // rem_euclid of 1e9 is in 0..1e9, so it fits a u32.
    let nanos = u32::try_from(mtime_ns.rem_euclid(1_000_000_000)).unwrap_or(0);
    let t = filetime::FileTime::from_unix_time(secs, nanos);
    filetime::set_symlink_file_times(path, t, t)
        .map_err(|e| io_err("set the modification time of", path, e))
}

/// Flushes a directory so the renames and creations in it are durable.
pub(crate) fn fsync_dir(path: &Path) -> Result<(), StoreError> {
    let dir = open_nofollow(path, true)?;
    dir.sync_all()
        .map_err(|e| io_err("fsync the directory", path, e))
}

/// `rename`, with the error naming both ends.
pub(crate) fn rename(from: &Path, to: &Path) -> Result<(), StoreError> {
    fs::rename(from, to).map_err(|e| {
        io_err(
            "move",
            from,
            io::Error::new(e.kind(), format!("to {}: {e}", to.display())),
        )
    })
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

/// The archive name of a component: `<name>~<stamp>~v<tag>` (plus `-<k>`
/// when that name is taken), shortening `name` so the whole stays within
/// the 255-byte limit of a file name.
pub(crate) fn archive_name(name: &[u8], stamp: &str, tag: u64, k: u32) -> Vec<u8> {
    let mut suffix = format!("~{stamp}~v{tag}");
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
    use std::os::unix::fs::symlink;

    #[test]
    fn stamps_and_names() {
        let t = UNIX_EPOCH + Duration::from_secs(1_767_323_045); // 2026-01-02T03:04:05Z
        assert_eq!(utc_stamp(t), "20260102-030405");
        assert_eq!(
            archive_name(b"f.txt", "20260102-030405", 7, 0),
            b"f.txt~20260102-030405~v7"
        );
        assert_eq!(archive_name(b"f", "S", 7, 2), b"f~S~v7-2");
        let long = vec![b'x'; 255];
        assert_eq!(archive_name(&long, "20260102-030405", 12, 0).len(), 255);
    }

    #[test]
    fn negative_times() {
        assert_eq!(
            system_time(-1_500_000_000),
            UNIX_EPOCH - Duration::from_millis(1500)
        );
        assert_eq!(system_time(5), UNIX_EPOCH + Duration::from_nanos(5));
    }

    #[test]
    fn lookup_does_not_follow_parents() {
        let dir = tempfile::tempdir().unwrap();
        let outside = tempfile::tempdir().unwrap();
        fs::write(outside.path().join("f"), b"x").unwrap();
        symlink(outside.path(), dir.path().join("a")).unwrap();
        let rel = RelPath::from_bytes("a/f").unwrap();
        assert!(lookup(dir.path(), &rel).unwrap().is_none());
        assert!(lookup(dir.path(), &RelPath::from_bytes("a").unwrap())
            .unwrap()
            .unwrap()
            .is_symlink());
        assert!(open_nofollow(&dir.path().join("a"), true).is_err());
    }

    #[test]
    fn ancestors_in_order() {
        let a = ancestors(&RelPath::from_bytes("a/b/c").unwrap());
        let names: Vec<_> = a.iter().map(|p| p.to_string()).collect();
        assert_eq!(names, ["a", "a/b"]);
        assert!(ancestors(&RelPath::from_bytes("a").unwrap()).is_empty());
    }
}
