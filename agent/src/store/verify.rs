//! `ferry verify`: reconcile the store with its catalog, both ways.
//!
//! - Every version row's bytes exist and match: current files and archived
//!   files are re-hashed, symlinks' targets compared, and a file version
//!   whose bytes were not kept (deleted or replaced without an archive, with
//!   no newer version of the same content) is reported.
//! - No row points outside the store: an archive must be a plain relative
//!   path below `.ferry/versions/<sender>/<folder>/`, and everything is
//!   opened relative to a descriptor of the store's root with
//!   `RESOLVE_BENEATH | RESOLVE_NO_SYMLINKS`, so nothing is read through a
//!   symlink or outside the store.
//! - Every file and symlink under `STORE/<sender>/` and
//!   `.ferry/versions/` belongs to a row; the rest are reported as orphans.
//! - A row whose path (or sender or folder name) does not decode is
//!   reported.
//!
//! The cost is one pass over the rows, one walk of the two trees (without
//! following symlinks) and one hash set of the locations rows account for,
//! plus reading every stored byte once.
//!
//! It reads the catalog read-only and without the store's lock, so it can run
//! beside a receiver; a file the receiver replaces while it is being checked
//! may then be reported, so a finding is re-checked against a fresh read of
//! the catalog before it is reported.
//!
//! ## Layout
//!
//! - `report`: [`VerifyReport`], its [`Finding`]s and their [`FindingKind`].
//! - `beneath`: reaching the store's files without following a symlink or
//!   leaving the store, and walking its trees.
//! - `checks`: one version's bytes against its row (size and hash, link target).
//!
//! This file reads the rows, locates each version's bytes, checks them and
//! looks for orphans.

mod beneath;
mod checks;
mod report;

use std::collections::HashSet;
use std::ffi::{OsStr, OsString};
use std::os::unix::ffi::OsStrExt;
use std::path::{Path, PathBuf};

use rusqlite::params;

use super::catalog::{self, read_only_at, Catalog, VersionRow, VERSION_COLUMNS};
use super::locate::{self, Located, Unservable};
use super::mirror;
use super::{HistoryError, Store};
use beneath::{walk, Beneath};
use checks::{check_file, check_link};
pub use report::{Finding, FindingKind, VerifyReport};

struct Row {
    sender: Option<String>,
    sender_id: i64,
    folder: String,
    version: VersionRow,
}

/// Verifies the store at `root`; see the module documentation.
impl Store {
    /// `ferry verify` of this store, wherever its bytes are (see
    /// [`verify`] for a local store, read by its root).
    pub fn verify(&self) -> Result<VerifyReport, HistoryError> {
        self.place.verify(self)
    }
}

pub fn verify(root: &Path) -> Result<VerifyReport, HistoryError> {
    let root = std::path::absolute(root).unwrap_or_else(|_| root.to_path_buf());
    let cat = read_only_at(&root)?;
    let dir = Beneath::open(&root).map_err(|e| super::error::io_err("open", &root, e))?;
    let rows = all_rows(&cat)?;
    let mut report = VerifyReport::default();
    // Paths as bytes: hashing a `Path` walks its components.
    let mut accounted: HashSet<OsString> = HashSet::new();
    let mut buf = vec![0u8; 256 * 1024];
    for (group, located) in located_groups(&rows) {
        for (row, at) in group.iter().zip(located) {
            let v = &row.version;
            let sender = row.sender.clone().unwrap_or_default();
            let problem = match &at {
                Located::Own(rel) => {
                    if v.kind != "dir" {
                        accounted.insert(rel.clone().into_os_string());
                    }
                    match v.kind.as_str() {
                        "file" => {
                            report.files_checked += 1;
                            check_file(&dir, rel, v, &mut buf, &mut report.bytes_checked)
                        }
                        "symlink" => {
                            report.links_checked += 1;
                            check_link(&dir, rel, v)
                        }
                        _ => None,
                    }
                }
                // Checked with the newer version; directories and symlinks
                // without an archive need no bytes.
                Located::Shared(_) | Located::Recorded => None,
                Located::Unservable(u) => Some(unservable_kind(u)),
            };
            let Some(kind) = problem else { continue };
            // Re-check against a fresh read: a running receiver may have moved it.
            if !still_same(&cat, v)? {
                continue;
            }
            let location = match (&at, &v.archive) {
                (Located::Own(rel), _) => root.join(rel),
                (Located::Unservable(Unservable::Outside { .. }), Some(archive)) => {
                    PathBuf::from(OsStr::from_bytes(archive))
                }
                _ => root
                    .join(&sender)
                    .join(&row.folder)
                    .join(OsStr::from_bytes(&v.path)),
            };
            report.findings.push(Finding {
                sender,
                folder: row.folder.clone(),
                path: String::from_utf8_lossy(&v.path).into_owned(),
                version: Some(v.id),
                current: v.replaced_run.is_none(),
                location,
                kind,
            });
        }
    }
    let senders: Vec<String> = {
        let mut names: Vec<String> = rows.iter().filter_map(|r| r.sender.clone()).collect();
        names.extend(sender_names(&cat)?);
        names.sort();
        names.dedup();
        names.retain(|n| ferry_proto::Name::new(n.clone()).is_ok());
        names
    };
    drop(rows);
    let mut tops: Vec<PathBuf> = senders.iter().map(PathBuf::from).collect();
    tops.push(Path::new(".ferry").join("versions"));
    let walked = walk(&dir, &tops);
    report.entries_walked = walked.len() as u64;
    let mut orphans: Vec<PathBuf> = walked
        .into_iter()
        .filter(|p| !accounted.contains(p.as_os_str()))
        .collect();
    if !orphans.is_empty() {
        // A running receiver may have recorded them since the rows were read.
        let fresh = all_rows(&cat)?;
        let mut now: HashSet<OsString> = HashSet::new();
        for (group, located) in located_groups(&fresh) {
            for (row, at) in group.iter().zip(located) {
                if let (Located::Own(rel), false) = (at, row.version.kind == "dir") {
                    now.insert(rel.into_os_string());
                }
            }
        }
        orphans.retain(|p| !now.contains(p.as_os_str()));
    }
    // What the store archived as unrecorded is kept, not lost: counted apart.
    let before = orphans.len();
    orphans.retain(|p| {
        !(p.starts_with(Path::new(".ferry").join("versions"))
            && p.components()
                .any(|c| mirror::is_unrecorded_archive(c.as_os_str().as_bytes())))
    });
    report.unrecorded = (before - orphans.len()) as u64;
    orphans.sort();
    for rel in orphans {
        let mut parts = rel.components();
        let first = parts
            .next()
            .map(|c| c.as_os_str().to_string_lossy().into_owned());
        let in_mirror = first.as_deref() != Some(".ferry");
        let (sender, folder) = if in_mirror {
            let folder = parts
                .next()
                .map(|c| c.as_os_str().to_string_lossy().into_owned());
            (first.unwrap_or_default(), folder.unwrap_or_default())
        } else {
            let mut rest = rel.components().skip(2);
            let mut next = || {
                rest.next()
                    .map(|c| c.as_os_str().to_string_lossy().into_owned())
                    .unwrap_or_default()
            };
            (next(), next())
        };
        report.findings.push(Finding {
            sender,
            folder,
            path: rel.to_string_lossy().into_owned(),
            version: None,
            current: in_mirror,
            location: root.join(&rel),
            kind: FindingKind::Orphan,
        });
    }
    Ok(report)
}

fn unservable_kind(u: &Unservable) -> FindingKind {
    match u {
        Unservable::InvalidPath { detail } | Unservable::BadRow { detail } => {
            FindingKind::InvalidPath {
                detail: detail.clone(),
            }
        }
        Unservable::Outside { archive, reason } => FindingKind::Outside {
            reason: format!("the archive {archive:?}: {reason}"),
        },
        Unservable::Lost { reason } => FindingKind::Lost {
            reason: reason.clone(),
        },
    }
}

/// The rows grouped by path (they come ordered by sender, folder, path and
/// newest first), each group with where each row's bytes are.
fn located_groups(rows: &[Row]) -> impl Iterator<Item = (&[Row], Vec<Located>)> {
    let same = |a: &Row, b: &Row| {
        a.sender_id == b.sender_id && a.folder == b.folder && a.version.path == b.version.path
    };
    rows.chunk_by(same).map(|group| {
        let first = &group[0];
        let names = match &first.sender {
            Some(sender) => locate::check_names(sender, &first.folder),
            None => Err(Unservable::InvalidPath {
                detail: format!("no sender with id {}", first.sender_id),
            }),
        };
        let located = match names {
            Ok(()) => {
                let versions: Vec<VersionRow> = group.iter().map(|r| r.version.clone()).collect();
                locate::locate(
                    first.sender.as_deref().unwrap_or_default(),
                    &first.folder,
                    &versions,
                )
            }
            Err(u) => vec![Located::Unservable(u); group.len()],
        };
        (group, located)
    })
}

fn all_rows(cat: &Catalog) -> Result<Vec<Row>, HistoryError> {
    let cols: String = VERSION_COLUMNS
        .split(", ")
        .map(|c| format!("v.{c}"))
        .collect::<Vec<_>>()
        .join(", ");
    let sql = format!(
        "SELECT {cols}, s.name, v.sender_id, v.folder FROM versions v LEFT JOIN senders s ON s.id = v.sender_id
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

fn sender_names(cat: &Catalog) -> Result<Vec<String>, HistoryError> {
    let read = || -> rusqlite::Result<Vec<String>> {
        let mut stmt = cat.conn().prepare("SELECT name FROM senders")?;
        let rows = stmt.query_map([], |r| r.get(0))?;
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

#[cfg(test)]
#[allow(clippy::unwrap_used)] // a failing unwrap is a failing test
mod tests {
    use super::super::tests::{fixture, put_file, rel};
    use super::super::{Namespace, Store};
    use super::*;
    use ferry_proto::{Entry, EntryKind};

    fn put_dir(store: &Store, ns: &Namespace, run: u64, path: &str) {
        let entry = Entry {
            path: rel(path),
            kind: EntryKind::Dir,
            mtime_ns: 3,
            mode: 0o755,
        };
        store.put_dir(ns, run, &entry).unwrap();
    }

    fn put_link(store: &Store, ns: &Namespace, run: u64, path: &str, target: &str) {
        let entry = Entry {
            path: rel(path),
            kind: EntryKind::Symlink {
                target: target.as_bytes().to_vec(),
            },
            mtime_ns: 4,
            mode: 0o777,
        };
        store.put_symlink(ns, run, &entry).unwrap();
    }

    /// A store that went through every kind of replacement and deletion.
    fn busy_store() -> (tempfile::TempDir, Store, Namespace) {
        let (dir, store, ns) = fixture();
        let r1 = store.begin_run(&ns).unwrap();
        put_file(&store, &ns, r1, "a", b"file a", 1);
        put_dir(&store, &ns, r1, "d");
        put_file(&store, &ns, r1, "d/x", b"ex", 1);
        put_file(&store, &ns, r1, "d/sub/y", b"why", 1);
        put_link(&store, &ns, r1, "l", "a");
        put_file(&store, &ns, r1, "m", b"em", 1);
        put_file(&store, &ns, r1, "meta", b"same bytes", 1);
        let r2 = store.begin_run(&ns).unwrap();
        // file -> directory, directory -> file, a deletion, a new target,
        // the same link again, a metadata-only change.
        put_dir(&store, &ns, r2, "a");
        put_file(&store, &ns, r2, "a/inner", b"inner", 2);
        put_file(&store, &ns, r2, "d", b"now a file", 2);
        store.delete(&ns, r2, &rel("m")).unwrap();
        put_link(&store, &ns, r2, "l", "d");
        put_link(&store, &ns, r2, "l", "d");
        let meta = super::super::tests::file_entry("meta", b"same bytes", 9, 0o600);
        store
            .update_metadata(&ns, r2, &meta, blake3::hash(b"same bytes").as_bytes())
            .unwrap();
        let r3 = store.begin_run(&ns).unwrap();
        // directory -> symlink, a whole directory deleted.
        put_link(&store, &ns, r3, "a", "elsewhere");
        put_dir(&store, &ns, r3, "e");
        put_file(&store, &ns, r3, "e/f", b"eff", 3);
        store.delete(&ns, r3, &rel("e")).unwrap();
        (dir, store, ns)
    }

    fn catalog(dir: &tempfile::TempDir) -> rusqlite::Connection {
        rusqlite::Connection::open(dir.path().join("store/.ferry/catalog.db")).unwrap()
    }

    fn id_of(store: &Store, ns: &Namespace, path: &str, nth: usize) -> i64 {
        store.versions(ns, &rel(path)).unwrap()[nth].id
    }

    fn kinds(report: &VerifyReport) -> Vec<(String, FindingKind)> {
        report
            .findings
            .iter()
            .map(|f| (f.path.clone(), f.kind.clone()))
            .collect()
    }

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

    #[test]
    fn a_store_after_type_changes_and_deletions_verifies_clean() {
        let (dir, _store, _ns) = busy_store();
        let report = verify(&dir.path().join("store")).unwrap();
        assert!(report.findings.is_empty(), "{report:#?}");
        // a, d/x, d/sub/y, m, meta, a/inner, d, e/f: every file version
        // with bytes of its own.
        assert_eq!(report.files_checked, 8, "{report:?}");
        assert!(report.links_checked >= 3, "{report:?}");
        assert!(report.entries_walked >= 11, "{report:?}");
    }

    #[test]
    fn versions_retired_without_an_archive_are_reported_lost() {
        let (dir, store, ns) = busy_store();
        let replaced = id_of(&store, &ns, "d/x", 0); // archived with its directory
        let deleted = id_of(&store, &ns, "m", 0);
        let conn = catalog(&dir);
        for id in [replaced, deleted] {
            conn.execute("UPDATE versions SET archive = NULL WHERE id = ?1", [id])
                .unwrap();
        }
        // A metadata-only version whose newer version has other content.
        let meta_old = id_of(&store, &ns, "meta", 1);
        conn.execute(
            "UPDATE versions SET hash = zeroblob(32) WHERE id = ?1",
            [meta_old],
        )
        .unwrap();
        let report = verify(&dir.path().join("store")).unwrap();
        let lost: Vec<i64> = report
            .findings
            .iter()
            .filter(|f| matches!(f.kind, FindingKind::Lost { .. }))
            .filter_map(|f| f.version)
            .collect();
        assert_eq!(lost.len(), 3, "{report:#?}");
        for id in [replaced, deleted, meta_old] {
            assert!(lost.contains(&id), "{id} not reported: {report:#?}");
        }
        // The bytes the rows lost track of are now orphans.
        let orphans = report
            .findings
            .iter()
            .filter(|f| f.kind == FindingKind::Orphan)
            .count();
        assert_eq!(orphans, 2, "{report:#?}");
    }

    #[test]
    fn an_archive_outside_the_store_is_reported_and_never_read() {
        let (dir, store, ns) = busy_store();
        // A file outside the store with exactly the bytes the row expects:
        // reading it would find nothing wrong.
        let secret = dir.path().join("secret");
        std::fs::write(&secret, b"em").unwrap();
        let deleted = id_of(&store, &ns, "m", 0);
        let archived = id_of(&store, &ns, "d/sub/y", 0);
        let elsewhere = id_of(&store, &ns, "d", 1); // the archived directory
        let conn = catalog(&dir);
        let set = |id: i64, archive: &[u8]| {
            conn.execute(
                "UPDATE versions SET archive = ?1 WHERE id = ?2",
                rusqlite::params![archive, id],
            )
            .unwrap();
        };
        set(deleted, b"../secret");
        set(archived, secret.as_os_str().as_bytes());
        set(elsewhere, b".ferry/catalog.db");
        let report = verify(&dir.path().join("store")).unwrap();
        let outside: Vec<i64> = report
            .findings
            .iter()
            .filter(|f| matches!(f.kind, FindingKind::Outside { .. }))
            .filter_map(|f| f.version)
            .collect();
        assert_eq!(outside.len(), 3, "{report:#?}");
        for id in [deleted, archived, elsewhere] {
            assert!(outside.contains(&id), "{id} not reported: {report:#?}");
        }
        // The outside file was not counted as checked: two fewer files.
        assert_eq!(report.files_checked, 6, "{report:?}");
    }

    #[test]
    fn a_location_reached_through_a_symlink_is_not_followed() {
        let (dir, _store, _ns) = busy_store();
        let root = dir.path().join("store");
        // The mirror's directory a/.. is swapped for a symlink to a copy
        // outside the store holding the same bytes.
        let outside = dir.path().join("outside");
        std::fs::create_dir(&outside).unwrap();
        std::fs::write(outside.join("meta"), b"same bytes").unwrap();
        let ns_dir = root.join("lap/docs");
        std::fs::rename(&ns_dir, root.join("lap/moved")).unwrap();
        std::os::unix::fs::symlink(&outside, &ns_dir).unwrap();
        let report = verify(&root).unwrap();
        let meta: Vec<&Finding> = report
            .findings
            .iter()
            .filter(|f| f.path == "meta" && f.current)
            .collect();
        assert_eq!(meta.len(), 1, "{report:#?}");
        assert_eq!(
            meta[0].kind,
            FindingKind::Outside {
                reason: "reached through a symlink".into()
            }
        );
        // The moved mirror's files belong to no row; the link is not walked.
        assert!(report
            .findings
            .iter()
            .any(|f| f.kind == FindingKind::Orphan && f.path == "lap/moved/meta"));
        assert!(report
            .findings
            .iter()
            .any(|f| f.kind == FindingKind::Orphan && f.path == "lap/docs"));
    }

    #[test]
    fn orphans_in_the_mirror_and_the_versions_area_are_reported() {
        let (dir, _store, _ns) = busy_store();
        let root = dir.path().join("store");
        std::fs::write(root.join("lap/docs/d.stray"), b"?").unwrap();
        std::fs::create_dir_all(root.join(".ferry/versions/lap/docs/deep")).unwrap();
        std::fs::write(root.join(".ferry/versions/lap/docs/deep/left~x~v99"), b"?").unwrap();
        std::os::unix::fs::symlink("/etc", root.join(".ferry/versions/lap/link")).unwrap();
        std::fs::write(root.join("lap/top-level"), b"?").unwrap();
        let report = verify(&root).unwrap();
        let mut orphans: Vec<(String, String, String)> = report
            .findings
            .iter()
            .filter(|f| f.kind == FindingKind::Orphan)
            .map(|f| (f.path.clone(), f.sender.clone(), f.folder.clone()))
            .collect();
        orphans.sort();
        assert_eq!(
            orphans,
            [
                (
                    ".ferry/versions/lap/docs/deep/left~x~v99".to_owned(),
                    "lap".to_owned(),
                    "docs".to_owned()
                ),
                (
                    ".ferry/versions/lap/link".to_owned(),
                    "lap".to_owned(),
                    "link".to_owned()
                ),
                (
                    "lap/docs/d.stray".to_owned(),
                    "lap".to_owned(),
                    "docs".to_owned()
                ),
                (
                    "lap/top-level".to_owned(),
                    "lap".to_owned(),
                    "top-level".to_owned()
                ),
            ],
            "{report:#?}"
        );
        assert_eq!(report.findings.len(), 4, "{report:#?}");
    }

    #[test]
    fn a_row_whose_path_does_not_decode_is_reported() {
        let (dir, store, ns) = busy_store();
        let id = id_of(&store, &ns, "meta", 0);
        let conn = catalog(&dir);
        conn.execute(
            "UPDATE versions SET path = ?1 WHERE id = ?2",
            rusqlite::params![&b"../../etc/passwd"[..], id],
        )
        .unwrap();
        conn.execute(
            "UPDATE versions SET folder = '..' WHERE id = ?1",
            [id_of(&store, &ns, "d", 0)],
        )
        .unwrap();
        let report = verify(&dir.path().join("store")).unwrap();
        let found = kinds(&report);
        let invalid: Vec<&String> = found
            .iter()
            .filter(|(_, k)| matches!(k, FindingKind::InvalidPath { .. }))
            .map(|(p, _)| p)
            .collect();
        assert_eq!(invalid, ["d", "../../etc/passwd"], "{report:#?}");
        // Their bytes in the mirror belong to no row now.
        assert!(found.contains(&("lap/docs/meta".into(), FindingKind::Orphan)));
        assert!(found.contains(&("lap/docs/d".into(), FindingKind::Orphan)));
    }
}
