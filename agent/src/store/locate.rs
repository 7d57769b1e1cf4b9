//! Where a version's bytes are: the catalog's rules in one place, used by
//! history, restore and verify, without touching the disk.
//!
//! For the rows of one path, newest first:
//!
//! - a current row's bytes are in the mirror, `<sender>/<folder>/<path>`;
//! - an archived row's bytes are at `archive`, relative to STORE, which must
//!   lie below `.ferry/versions/<sender>/<folder>/` (plain components only:
//!   no `..`, not absolute); anything else is never read;
//! - a replaced file row without an archive shares the next newer row's
//!   bytes (a metadata-only change) if that row is a file of the same size
//!   and hash; otherwise, and for a file deleted without an archive, its
//!   bytes were not kept;
//! - a replaced symlink without an archive is where the next newer row is,
//!   if that is the same link; directories hold no bytes, and a symlink's
//!   target is in its row, so neither needs an archive to be restored.

use std::ffi::OsStr;
use std::os::unix::ffi::OsStrExt;
use std::path::{Path, PathBuf};

use ferry_proto::{Name, RelPath};
use serde::Serialize;

use super::catalog::VersionRow;

/// Why a version cannot be served (restored or verified).
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
#[serde(tag = "problem", rename_all = "kebab-case")]
pub enum Unservable {
    /// The catalog's path (or sender or folder name) of the version does not
    /// decode.
    InvalidPath { detail: String },
    /// The recorded archive is not beneath the folder's versions area.
    Outside { archive: String, reason: String },
    /// The bytes were not kept.
    Lost { reason: String },
    /// Another column of the row does not decode.
    BadRow { detail: String },
}

impl std::fmt::Display for Unservable {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Unservable::InvalidPath { detail } => {
                write!(f, "the catalog's path of this version is invalid ({detail})")
            }
            Unservable::Outside { archive, reason } => write!(
                f,
                "the catalog says its bytes are at {archive:?}, which is not beneath the store's versions area of this folder ({reason}); it was not read"
            ),
            Unservable::Lost { reason } => write!(f, "its bytes were not kept: {reason}"),
            Unservable::BadRow { detail } => write!(f, "its catalog row is damaged: {detail}"),
        }
    }
}

/// Where one version's bytes are.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) enum Located {
    /// Its own bytes, at this path relative to STORE (the mirror or an
    /// archive).
    Own(PathBuf),
    /// The same bytes as the next newer version of the path, at this path
    /// relative to STORE.
    Shared(PathBuf),
    /// Nothing to read: a directory or symlink without an archive.
    Recorded,
    /// Cannot be served.
    Unservable(Unservable),
}

impl Located {
    /// The path relative to STORE where the bytes are, if there are any.
    pub fn bytes(&self) -> Option<&Path> {
        match self {
            Located::Own(p) | Located::Shared(p) => Some(p),
            Located::Recorded | Located::Unservable(_) => None,
        }
    }

    /// Why it cannot be served, if it cannot.
    pub fn unservable(&self) -> Option<&Unservable> {
        match self {
            Located::Unservable(u) => Some(u),
            _ => None,
        }
    }
}

/// Checks that `sender` and `folder` are names, so that
/// `<sender>/<folder>` is one namespace below STORE.
pub(crate) fn check_names(sender: &str, folder: &str) -> Result<(), Unservable> {
    for (what, name) in [("sender", sender), ("folder", folder)] {
        if let Err(e) = Name::new(name.to_owned()) {
            return Err(Unservable::InvalidPath {
                detail: format!("{what} name {name:?}: {e}"),
            });
        }
    }
    Ok(())
}

/// Locates each of `rows`, the rows of one path of the namespace
/// `<sender>/<folder>` (valid names, see [`check_names`]), newest first.
pub(crate) fn locate(sender: &str, folder: &str, rows: &[VersionRow]) -> Vec<Located> {
    let mut out: Vec<Located> = Vec::with_capacity(rows.len());
    let Some(first) = rows.first() else {
        return out;
    };
    if let Err(e) = RelPath::from_bytes(first.path.clone()) {
        let bad = Unservable::InvalidPath {
            detail: format!("{:?}: {e}", String::from_utf8_lossy(&first.path)),
        };
        out.resize(rows.len(), Located::Unservable(bad));
        return out;
    }
    let ns_rel = Path::new(sender).join(folder);
    let versions = Path::new(".ferry").join("versions").join(&ns_rel);
    for (i, row) in rows.iter().enumerate() {
        let located = match (&row.archive, row.replaced_run) {
            (_, None) => Located::Own(ns_rel.join(OsStr::from_bytes(&row.path))),
            (Some(archive), Some(_)) => match check_archive(&versions, archive) {
                Ok(p) => Located::Own(p),
                Err(u) => Located::Unservable(u),
            },
            (None, Some(_)) if row.kind == "symlink" && !row.deleted => {
                // The same link again: it is where the newer version is.
                match i.checked_sub(1).map(|j| (&rows[j], &out[j])) {
                    Some((n, Located::Own(p) | Located::Shared(p)))
                        if n.kind == "symlink" && n.target == row.target =>
                    {
                        Located::Shared(p.clone())
                    }
                    _ => Located::Recorded,
                }
            }
            (None, Some(_)) if row.kind != "file" => Located::Recorded,
            (None, Some(_)) if row.deleted => Located::Unservable(Unservable::Lost {
                reason: "it was deleted (or found missing) without being archived".into(),
            }),
            (None, Some(_)) => {
                let newer = i.checked_sub(1).map(|j| (&rows[j], &out[j]));
                match newer {
                    Some((n, at)) if n.kind == "file" && n.size == row.size && n.hash == row.hash => {
                        match at {
                            Located::Own(p) | Located::Shared(p) => Located::Shared(p.clone()),
                            other => other.clone(),
                        }
                    }
                    _ => Located::Unservable(Unservable::Lost {
                        reason: "it was replaced without being archived, and no newer version has its content".into(),
                    }),
                }
            }
        };
        out.push(located);
    }
    out
}

/// `archive` as a path relative to STORE, if it is a plain relative path
/// strictly below `versions` (`.ferry/versions/<sender>/<folder>`).
fn check_archive(versions: &Path, archive: &[u8]) -> Result<PathBuf, Unservable> {
    let outside = |reason: &str| Unservable::Outside {
        archive: String::from_utf8_lossy(archive).into_owned(),
        reason: reason.to_owned(),
    };
    if archive.first() == Some(&b'/') {
        return Err(outside("an absolute path"));
    }
    if archive.contains(&0) {
        return Err(outside("a NUL byte in the path"));
    }
    let parts: Vec<&[u8]> = archive.split(|b| *b == b'/').collect();
    if parts.iter().any(|p| *p == b"..") {
        return Err(outside("it climbs out with `..`"));
    }
    if parts.iter().any(|p| p.is_empty() || *p == b".") {
        return Err(outside("not a plain path"));
    }
    let path = PathBuf::from(OsStr::from_bytes(archive));
    match path.strip_prefix(versions) {
        Ok(rest) if rest.components().next().is_some() => Ok(path),
        _ => Err(outside(&format!(
            "not below {}",
            versions.to_string_lossy()
        ))),
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used)] // a failing unwrap is a failing test
mod tests {
    use super::*;

    fn row(
        id: i64,
        kind: &str,
        hash: u8,
        replaced: bool,
        deleted: bool,
        archive: Option<&str>,
    ) -> VersionRow {
        VersionRow {
            id,
            path: b"d/f".to_vec(),
            kind: kind.into(),
            size: 3,
            mtime_ns: 0,
            mode: 0o644,
            hash: (kind == "file").then(|| vec![hash; 32]),
            target: (kind == "symlink").then(|| b"t".to_vec()),
            run_id: 1,
            replaced_run: replaced.then_some(2),
            deleted,
            archive: archive.map(|a| a.as_bytes().to_vec()),
        }
    }

    #[test]
    fn each_rule_of_the_catalog() {
        let rows = [
            row(9, "file", 1, false, false, None),
            // metadata-only change: same content as the newer row
            row(8, "file", 1, true, false, None),
            // replaced by other content without an archive: lost
            row(7, "file", 2, true, false, None),
            row(
                6,
                "file",
                2,
                true,
                false,
                Some(".ferry/versions/s/f/d/f~x~v6"),
            ),
            row(5, "file", 2, true, true, None),
            row(4, "symlink", 0, true, true, None),
            row(3, "dir", 0, true, true, None),
            row(2, "file", 3, true, false, Some("../../etc/passwd")),
            row(1, "file", 3, true, false, Some("/etc/passwd")),
        ];
        let got = locate("s", "f", &rows);
        assert_eq!(got[0], Located::Own("s/f/d/f".into()));
        assert_eq!(got[1], Located::Shared("s/f/d/f".into()));
        assert!(matches!(
            got[2],
            Located::Unservable(Unservable::Lost { .. })
        ));
        assert_eq!(got[3], Located::Own(".ferry/versions/s/f/d/f~x~v6".into()));
        assert!(matches!(
            got[4],
            Located::Unservable(Unservable::Lost { .. })
        ));
        assert_eq!(got[5], Located::Recorded);
        assert_eq!(got[6], Located::Recorded);
        assert!(matches!(
            got[7],
            Located::Unservable(Unservable::Outside { .. })
        ));
        assert!(matches!(
            got[8],
            Located::Unservable(Unservable::Outside { .. })
        ));
    }

    #[test]
    fn archives_must_stay_in_their_own_versions_area() {
        let v = Path::new(".ferry/versions/s/f");
        assert!(check_archive(v, b".ferry/versions/s/f/a~x~v1").is_ok());
        for bad in [
            &b"/etc/passwd"[..],
            b"../../etc/passwd",
            b".ferry/versions/s/f/../../t/f/a",
            b".ferry/versions/t/f/a",
            b".ferry/versions/s/f",
            b".ferry/versions/s/f//a",
            b".ferry/catalog.db",
            b"s/f/a",
            b"",
        ] {
            assert!(
                check_archive(v, bad).is_err(),
                "{}",
                String::from_utf8_lossy(bad)
            );
        }
        let bad_path = VersionRow {
            path: b"../x".to_vec(),
            ..row(1, "file", 1, false, false, None)
        };
        assert!(matches!(
            locate("s", "f", &[bad_path])[0],
            Located::Unservable(Unservable::InvalidPath { .. })
        ));
        assert!(check_names("s", "../x").is_err());
    }
}
