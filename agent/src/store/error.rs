//! Errors of the receiver's store: [`StoreError`] for what the store does,
//! [`HistoryError`] for questions about the past (as of a run or a time) and
//! read-only opens.

use std::io;
use std::path::{Path, PathBuf};

use ferry_proto::{FailCode, Name, RelPath};

/// Everything that can go wrong in the store. Every variant names the path
/// (on disk or in a namespace), the sender or the run it concerns.
#[derive(Debug, thiserror::Error)]
pub enum StoreError {
    /// Another process holds `.ferry/lock`.
    #[error("another ferry receiver is using the store {root}; stop it first or choose another store directory")]
    Locked { root: PathBuf },
    /// The disk (or the user's quota) is full.
    #[error("the receiver's disk is full at {path}; free space and the sender will retry")]
    DiskFull { path: PathBuf },
    /// The stored version a delta copies from does not hold what its chunk
    /// list says (changed or damaged on disk): the sender sends the file whole.
    #[error("the stored version {path} that the changes are based on is damaged or was changed: {detail}; the file is sent whole")]
    BaseDamaged { path: PathBuf, detail: String },
    /// The path on disk is longer than the receiver's filesystem takes
    /// (`ENAMETOOLONG`): the protocol accepts a 4096-byte path, but below
    /// the store's root the sender's and the folder's names (and, for an
    /// archive, `.ferry/versions` and a timestamp suffix) come in front of
    /// or after it. (The store's own location does not count: every path is
    /// reached from a descriptor of the root.)
    #[error("could not {action} {}: too long for the receiver's filesystem ({len} bytes below the store, with the sender's and folder's names in front; the longest name {longest} bytes; the limits are {} bytes per path, PATH_MAX, and {} per name, NAME_MAX): shorten the file's path or name on the sender", Abbreviated(path), PATH_MAX - 1, NAME_MAX)]
    PathTooLong {
        action: &'static str,
        path: PathBuf,
        len: usize,
        longest: usize,
    },
    /// Any other filesystem error.
    #[error("could not {action} {path}")]
    Io {
        action: &'static str,
        path: PathBuf,
        #[source]
        source: io::Error,
    },
    /// `catalog.db` exists but is not an SQLite database.
    #[error("{path} is not a Ferry catalog (not an SQLite database); move it away or point the receiver at another store; it was left untouched")]
    NotADatabase {
        path: PathBuf,
        #[source]
        source: rusqlite::Error,
    },
    /// `catalog.db` is SQLite but damaged (a failed integrity check).
    #[error("the catalog {path} is damaged ({detail}); the receiver will not start on it so no history is lost: it was left untouched; restore it from a backup, or move it away to start a new history (the files in the store stay)")]
    DamagedCatalog { path: PathBuf, detail: String },
    /// `catalog.db` is SQLite but of a schema this version does not know.
    #[error("{path} has catalog schema version {found}, this ferry knows version {expected}; use a matching ferry release (the file was left untouched)")]
    UnknownSchema {
        path: PathBuf,
        found: i64,
        expected: i64,
    },
    /// An SQLite operation on the catalog failed.
    #[error("the catalog {path} failed")]
    Catalog {
        path: PathBuf,
        #[source]
        source: rusqlite::Error,
    },
    /// The catalog holds a value this version cannot read back.
    #[error("the catalog {path} holds an invalid value: {detail}")]
    CorruptCatalog { path: PathBuf, detail: String },
    /// The sender name is registered to another device.
    #[error("the sender name {name} already belongs to device {device}; choose another name for this sender")]
    NameTaken { name: Name, device: String },
    /// The device is registered under another name.
    #[error("device {device} is registered as {registered}; run the sender with that name")]
    WrongName { device: String, registered: Name },
    /// The content did not hash to what the sender said.
    #[error("{path}: content hashes to {actual}, the sender said {expected}; it was discarded and will be sent again")]
    HashMismatch {
        path: RelPath,
        expected: String,
        actual: String,
    },
    /// The content is longer or shorter than declared.
    #[error("{path}: {actual} bytes of content, {declared} declared; it was discarded and will be sent again")]
    SizeMismatch {
        path: RelPath,
        declared: u64,
        actual: u64,
    },
    /// Something other than a directory sits where the store needs one
    /// (outside any sender's namespace, so it is not archived).
    #[error(
        "{path} is not a directory; move it out of the store so ferry can create the directory"
    )]
    NotADirectory { path: PathBuf },
    /// The request conflicts with what is stored.
    #[error("{path}: {detail}")]
    Conflict { path: RelPath, detail: String },
    /// The request itself is inconsistent (a caller bug or a bad message).
    #[error("{path}: {detail}")]
    BadEntry { path: RelPath, detail: String },
    /// The batch this change was part of could not be made durable or
    /// recorded; the change may be on disk but is not acknowledged.
    #[error("{path}: could not be made durable: {detail}; it will be sent again")]
    BatchFailed { path: RelPath, detail: String },
    /// A symlink stood where the store needed a directory or a file of its
    /// own (another program swapped it in while the store worked): it was
    /// not followed, and nothing was written or read through it.
    #[error("{path}: a symbolic link is in the way (put there by something other than ferry); it was not followed and nothing was written through it")]
    SymlinkInWay { path: PathBuf },
    /// A path (from the catalog, or a caller) that is not inside the store.
    #[error("{path} is not inside the store; ferry never reads or writes outside it")]
    OutsideStore { path: PathBuf },
    /// The run does not exist or belongs to another namespace.
    #[error("run {run} is not a run of {sender}/{folder}")]
    UnknownRun {
        run: u64,
        sender: Name,
        folder: Name,
    },
    /// The bucket of a bucket store failed (after the client's retries).
    #[error("could not {action} the bucket {bucket}: {detail}")]
    Bucket {
        action: &'static str,
        bucket: String,
        detail: String,
    },
    /// The directory is the local state of a store whose bytes are in a
    /// bucket, or a bucket store was asked for on a local store.
    #[error("{} is {what}", root.display())]
    WrongKind { root: PathBuf, what: String },
}

/// Why a history question could not be answered.
#[derive(Debug, thiserror::Error)]
pub enum HistoryError {
    #[error(transparent)]
    Store(#[from] StoreError),
    /// The run does not exist or belongs to another sender or folder.
    #[error("run {run} is not a run of {sender}/{folder}; list the runs with `ferry history`")]
    UnknownRun {
        run: u64,
        sender: Name,
        folder: Name,
    },
    /// No run of the folder had ended by that time.
    #[error("{sender}/{folder} has no run that ended by {}; list the runs with `ferry history`", crate::units::utc_seconds(*at_ms))]
    NothingYet {
        at_ms: i64,
        sender: Name,
        folder: Name,
    },
    /// The directory has no catalog.
    #[error("{path} does not exist: is this a ferry store directory (the one given to `ferry receive --store`)?")]
    NoCatalog { path: PathBuf },
}

impl StoreError {
    /// The protocol failure code to send back for this error.
    pub fn fail_code(&self) -> FailCode {
        match self {
            StoreError::HashMismatch { .. } => FailCode::HashMismatch,
            StoreError::BaseDamaged { .. } => FailCode::BaseDamaged,
            StoreError::SizeMismatch { .. } => FailCode::SizeMismatch,
            StoreError::Conflict { .. } | StoreError::NotADirectory { .. } => FailCode::Conflict,
            StoreError::BadEntry { .. } | StoreError::UnknownRun { .. } => FailCode::BadRequest,
            StoreError::Locked { .. }
            | StoreError::DiskFull { .. }
            | StoreError::PathTooLong { .. }
            | StoreError::Io { .. }
            | StoreError::SymlinkInWay { .. }
            | StoreError::OutsideStore { .. }
            | StoreError::BatchFailed { .. }
            | StoreError::Bucket { .. }
            | StoreError::WrongKind { .. }
            | StoreError::NotADatabase { .. }
            | StoreError::DamagedCatalog { .. }
            | StoreError::UnknownSchema { .. }
            | StoreError::Catalog { .. }
            | StoreError::CorruptCatalog { .. }
            | StoreError::NameTaken { .. }
            | StoreError::WrongName { .. } => FailCode::Io,
        }
    }
}

/// Linux's limits on a path given to a system call (with its NUL) and on
/// one name in it.
const PATH_MAX: usize = libc::PATH_MAX as usize;
const NAME_MAX: usize = 255;

/// Shows a path of up to 200 bytes whole, a longer one as its start and end
/// (a 4 KB path would bury the message).
struct Abbreviated<'a>(&'a Path);

impl std::fmt::Display for Abbreviated<'_> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        use std::os::unix::ffi::OsStrExt;
        let bytes = self.0.as_os_str().as_bytes();
        if bytes.len() <= 200 {
            return write!(f, "{}", self.0.display());
        }
        let head = String::from_utf8_lossy(&bytes[..60]);
        let tail = String::from_utf8_lossy(&bytes[bytes.len() - 120..]);
        write!(f, "{head}[… {} bytes …]{tail}", bytes.len() - 180)
    }
}

/// Wraps an I/O error on `path`, giving a full disk and a path too long for
/// the filesystem their own variants.
pub(crate) fn io_err(action: &'static str, path: &Path, source: io::Error) -> StoreError {
    if source.raw_os_error() == Some(libc::ENAMETOOLONG) {
        use std::os::unix::ffi::OsStrExt;
        return StoreError::PathTooLong {
            action,
            path: path.to_path_buf(),
            len: path.as_os_str().as_bytes().len(),
            longest: path
                .components()
                .map(|c| c.as_os_str().as_bytes().len())
                .max()
                .unwrap_or(0),
        };
    }
    let full = source.kind() == io::ErrorKind::StorageFull
        || source.kind() == io::ErrorKind::QuotaExceeded
        || source.raw_os_error() == Some(libc::ENOSPC)
        || source.raw_os_error() == Some(libc::EDQUOT);
    if full {
        StoreError::DiskFull {
            path: path.to_path_buf(),
        }
    } else if source.raw_os_error() == Some(libc::ELOOP) {
        StoreError::SymlinkInWay {
            path: path.to_path_buf(),
        }
    } else {
        StoreError::Io {
            action,
            path: path.to_path_buf(),
            source,
        }
    }
}

/// Lowercase hex of a hash, for messages.
pub(crate) fn hex(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

#[cfg(test)]
#[allow(clippy::unwrap_used)] // a failing unwrap is a failing test
mod tests {
    use super::*;

    #[test]
    fn full_disk_has_its_own_message() {
        let e = io_err(
            "write",
            Path::new("/s/x"),
            io::Error::from_raw_os_error(libc::ENOSPC),
        );
        assert!(matches!(e, StoreError::DiskFull { .. }));
        assert_eq!(e.fail_code(), FailCode::Io);
        assert!(e.to_string().contains("disk is full at /s/x"), "{e}");
        let e = io_err(
            "write",
            Path::new("/s/x"),
            io::Error::from(io::ErrorKind::PermissionDenied),
        );
        assert!(matches!(e, StoreError::Io { .. }));
    }

    /// Each level of the chain says what failed; the cause it wraps is its
    /// `source()`, never also part of its message (`{:#}` and
    /// `crate::chain::chain` would print it twice).
    fn assert_each_cause_once(e: &dyn std::error::Error) {
        let mut level: &dyn std::error::Error = e;
        while let Some(cause) = level.source() {
            let (outer, inner) = (level.to_string(), cause.to_string());
            assert!(
                !outer.contains(&inner),
                "{outer:?} repeats its cause {inner:?}"
            );
            level = cause;
        }
        let line = crate::chain::chain(e);
        let full = {
            let mut parts = vec![e.to_string()];
            let mut cause = e.source();
            while let Some(c) = cause {
                parts.push(c.to_string());
                cause = c.source();
            }
            parts.join(": ")
        };
        assert_eq!(line, full, "nothing was left out as a repeat");
    }

    #[test]
    fn store_history_access_and_retention_errors_name_each_cause_once() {
        let io = || {
            io_err(
                "open",
                Path::new("/s/lap/docs/a"),
                io::Error::from(io::ErrorKind::PermissionDenied),
            )
        };
        let catalog = || StoreError::Catalog {
            path: PathBuf::from("/s/.ferry/catalog.db"),
            source: rusqlite::Error::ExecuteReturnedResults,
        };
        let not_db = StoreError::NotADatabase {
            path: PathBuf::from("/s/.ferry/catalog.db"),
            source: rusqlite::Error::InvalidQuery,
        };
        let errors: Vec<Box<dyn std::error::Error>> = vec![
            Box::new(io()),
            Box::new(catalog()),
            Box::new(not_db),
            Box::new(HistoryError::from(io())),
            Box::new(HistoryError::from(catalog())),
            Box::new(super::super::AccessError::from(catalog())),
            Box::new(super::super::RetentionError::from(io())),
        ];
        for e in &errors {
            assert_each_cause_once(e.as_ref());
        }
        // A transparent wrapper prints its cause's message once, with the
        // cause's own source after it.
        let line = crate::chain::chain(&HistoryError::from(io()));
        assert_eq!(
            line.matches("could not open /s/lap/docs/a").count(),
            1,
            "{line}"
        );
        assert!(line.ends_with("permission denied"), "{line}");
    }
}
