//! `ferry verify`: re-hash every stored file, current and archived, against
//! the catalog, and check every stored symlink's target.
//!
//! It reads the catalog read-only and without the store's lock, so it can run
//! beside a receiver; a file the receiver replaces while it is being checked
//! may then be reported, so a finding is re-checked against a fresh read of
//! the catalog before it is reported.

use std::fs::{File, OpenOptions};
use std::io::{self, Read};
use std::os::unix::ffi::OsStrExt;
use std::os::unix::fs::OpenOptionsExt;
use std::path::{Path, PathBuf};

use rusqlite::params;
use serde::Serialize;

use super::catalog::{self, Catalog, VersionRow, VERSION_COLUMNS};
use super::error::hex;
use super::history::{open_read_only, HistoryError};
use super::mirror;

/// What is wrong with one stored version.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
#[serde(tag = "kind", rename_all = "kebab-case")]
pub enum FindingKind {
    /// The bytes hash to something else than the catalog says.
    HashMismatch { expected: String, actual: String },
    /// The file has another size than the catalog says.
    SizeMismatch { expected: u64, actual: u64 },
    /// Nothing is where the bytes should be.
    Missing,
    /// Something other than a file (or symlink) is there.
    WrongKind,
    /// A symlink points elsewhere than recorded.
    LinkChanged,
    /// The bytes could not be read.
    Unreadable { error: String },
}

impl std::fmt::Display for FindingKind {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            FindingKind::HashMismatch { expected, actual } => {
                write!(
                    f,
                    "content changed: hashes to {actual}, the catalog says {expected}"
                )
            }
            FindingKind::SizeMismatch { expected, actual } => {
                write!(
                    f,
                    "content changed: {actual} bytes, the catalog says {expected}"
                )
            }
            FindingKind::Missing => write!(f, "missing"),
            FindingKind::WrongKind => write!(f, "something else is in its place"),
            FindingKind::LinkChanged => write!(f, "the symlink points elsewhere"),
            FindingKind::Unreadable { error } => write!(f, "unreadable: {error}"),
        }
    }
}

/// One stored version whose bytes do not match the catalog.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Finding {
    pub sender: String,
    pub folder: String,
    /// The path in the sender's folder (lossy UTF-8).
    pub path: String,
    /// The version's id.
    pub version: i64,
    /// True if it is the current version (in the mirror).
    pub current: bool,
    /// Where its bytes are.
    pub location: PathBuf,
    #[serde(flatten)]
    pub kind: FindingKind,
}

/// The result of a verification.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize)]
pub struct VerifyReport {
    /// Files re-hashed.
    pub files_checked: u64,
    /// Bytes read.
    pub bytes_checked: u64,
    /// Symlinks checked.
    pub links_checked: u64,
    /// Everything that does not match.
    pub findings: Vec<Finding>,
}

struct Row {
    sender: String,
    sender_id: i64,
    folder: String,
    version: VersionRow,
}

/// Verifies the store at `root`; see the module documentation.
pub fn verify(root: &Path) -> Result<VerifyReport, HistoryError> {
    let root = std::path::absolute(root).unwrap_or_else(|_| root.to_path_buf());
    let cat = open_read_only(&root)?;
    let rows = all_rows(&cat)?;
    let mut report = VerifyReport::default();
    let mut newer: Option<(i64, String, Vec<u8>, PathBuf)> = None;
    for row in rows {
        let v = &row.version;
        let ns_dir = root.join(&row.sender).join(&row.folder);
        let mirror_path = mirror::join_bytes(&ns_dir, &v.path);
        let same_path = newer
            .as_ref()
            .is_some_and(|(s, f, p, _)| *s == row.sender_id && *f == row.folder && *p == v.path);
        let location = match (&v.archive, v.replaced_run) {
            (_, None) => mirror_path,
            (Some(archive), Some(_)) => mirror::join_bytes(&root, archive),
            (None, Some(_)) if !v.deleted && same_path => {
                newer.as_ref().map(|n| n.3.clone()).unwrap_or(mirror_path)
            }
            // Retired because it had vanished: there are no bytes to check.
            (None, Some(_)) => {
                newer = Some((
                    row.sender_id,
                    row.folder.clone(),
                    v.path.clone(),
                    mirror_path,
                ));
                continue;
            }
        };
        newer = Some((
            row.sender_id,
            row.folder.clone(),
            v.path.clone(),
            location.clone(),
        ));
        let problem = match v.kind.as_str() {
            "file" => {
                report.files_checked += 1;
                check_file(&location, v, &mut report.bytes_checked)
            }
            "symlink" => {
                report.links_checked += 1;
                check_link(&location, v)
            }
            _ => None,
        };
        let Some(kind) = problem else { continue };
        // Re-check against a fresh read: a running receiver may have moved it.
        if still_same(&cat, v)? {
            report.findings.push(Finding {
                sender: row.sender,
                folder: row.folder,
                path: String::from_utf8_lossy(&v.path).into_owned(),
                version: v.id,
                current: v.replaced_run.is_none(),
                location,
                kind,
            });
        }
    }
    Ok(report)
}

fn all_rows(cat: &Catalog) -> Result<Vec<Row>, HistoryError> {
    let cols: String = VERSION_COLUMNS
        .split(", ")
        .map(|c| format!("v.{c}"))
        .collect::<Vec<_>>()
        .join(", ");
    let sql = format!(
        "SELECT {cols}, s.name, v.sender_id, v.folder FROM versions v JOIN senders s ON s.id = v.sender_id
         ORDER BY v.sender_id, v.folder, v.path, v.id DESC"
    );
    let read = || -> rusqlite::Result<Vec<Row>> {
        let mut stmt = cat.conn().prepare(&sql)?;
        let rows = stmt.query_map([], |r| {
            Ok(Row {
                version: catalog::version_row(r)?,
                sender: r.get(12)?,
                sender_id: r.get(13)?,
                folder: r.get(14)?,
            })
        })?;
        rows.collect()
    };
    Ok(read().map_err(|e| cat.err(e))?)
}

fn still_same(cat: &Catalog, v: &VersionRow) -> Result<bool, HistoryError> {
    let now: Option<(Option<i64>, Option<Vec<u8>>)> = cat
        .conn()
        .query_row(
            "SELECT replaced_run, archive FROM versions WHERE id = ?1",
            params![v.id],
            |r| Ok((r.get(0)?, r.get(1)?)),
        )
        .map(Some)
        .or_else(|e| match e {
            rusqlite::Error::QueryReturnedNoRows => Ok(None),
            e => Err(e),
        })
        .map_err(|e| cat.err(e))?;
    Ok(now == Some((v.replaced_run, v.archive.clone())))
}

fn check_file(location: &Path, v: &VersionRow, bytes: &mut u64) -> Option<FindingKind> {
    let meta = match std::fs::symlink_metadata(location) {
        Ok(m) => m,
        Err(e) if e.kind() == io::ErrorKind::NotFound => return Some(FindingKind::Missing),
        Err(e) => return Some(unreadable(e)),
    };
    if !meta.is_file() {
        return Some(FindingKind::WrongKind);
    }
    let expected_size = u64::try_from(v.size).unwrap_or(0);
    if meta.len() != expected_size {
        return Some(FindingKind::SizeMismatch {
            expected: expected_size,
            actual: meta.len(),
        });
    }
    let actual = match hash_nofollow(location) {
        Ok((hash, n)) => {
            *bytes += n;
            hash
        }
        Err(e) => return Some(unreadable(e)),
    };
    match &v.hash {
        Some(expected) if expected.as_slice() == actual.as_bytes() => None,
        expected => Some(FindingKind::HashMismatch {
            expected: expected.as_deref().map(hex).unwrap_or_default(),
            actual: actual.to_hex().to_string(),
        }),
    }
}

fn check_link(location: &Path, v: &VersionRow) -> Option<FindingKind> {
    match std::fs::symlink_metadata(location) {
        Ok(m) if m.is_symlink() => {}
        Ok(_) => return Some(FindingKind::WrongKind),
        Err(e) if e.kind() == io::ErrorKind::NotFound => return Some(FindingKind::Missing),
        Err(e) => return Some(unreadable(e)),
    }
    match std::fs::read_link(location) {
        Ok(target) if Some(target.as_os_str().as_bytes()) == v.target.as_deref() => None,
        Ok(_) => Some(FindingKind::LinkChanged),
        Err(e) => Some(unreadable(e)),
    }
}

fn unreadable(e: io::Error) -> FindingKind {
    FindingKind::Unreadable {
        error: e.to_string(),
    }
}

/// blake3 of a regular file opened without following a symlink, and its
/// length.
pub(crate) fn hash_nofollow(path: &Path) -> io::Result<(blake3::Hash, u64)> {
    let mut file: File = OpenOptions::new()
        .read(true)
        .custom_flags(libc::O_NOFOLLOW | libc::O_CLOEXEC)
        .open(path)?;
    let mut hasher = blake3::Hasher::new();
    let mut buf = vec![0u8; 256 * 1024];
    let mut n = 0u64;
    loop {
        let got = file.read(&mut buf)?;
        if got == 0 {
            break;
        }
        hasher.update(&buf[..got]);
        n += got as u64;
    }
    Ok((hasher.finalize(), n))
}

#[cfg(test)]
#[allow(clippy::unwrap_used)] // a failing unwrap is a failing test
mod tests {
    use super::super::tests::{fixture, put_file, rel};
    use super::*;

    #[test]
    fn clean_store_verifies_and_a_flipped_byte_is_found() {
        let (dir, store, ns) = fixture();
        let run = store.begin_run(&ns).unwrap();
        put_file(&store, &ns, run, "a", b"first", 1);
        put_file(&store, &ns, run, "a", b"second", 2);
        put_file(&store, &ns, run, "b", b"bee", 2);
        let root = dir.path().join("store");
        let report = verify(&root).unwrap();
        assert_eq!(report.files_checked, 3);
        assert!(report.findings.is_empty(), "{report:?}");

        // Flip a byte of the archived version.
        let old = store.versions(&ns, &rel("a")).unwrap()[1].location.clone();
        assert!(old.starts_with(root.join(".ferry/versions")));
        std::fs::write(&old, b"firsT").unwrap();
        // And remove a current file.
        std::fs::remove_file(root.join("lap/docs/b")).unwrap();
        let report = verify(&root).unwrap();
        assert_eq!(report.findings.len(), 2, "{report:?}");
        let by_path = |p: &str| report.findings.iter().find(|f| f.path == p).unwrap();
        assert!(matches!(
            by_path("a").kind,
            FindingKind::HashMismatch { .. }
        ));
        assert!(!by_path("a").current);
        assert_eq!(by_path("b").kind, FindingKind::Missing);
        assert!(by_path("b").current);
    }
}
