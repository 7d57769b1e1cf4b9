//! A namespace's tree as of a point: the run a point (latest, a run, a
//! time) stands for, and the tree then, with what cannot be served.
//!
//! A version row belongs to the tree as of run `R` if it was stored by a run
//! up to `R` and not replaced or deleted by a run up to `R`
//! (`run_id <= R < replaced_run`). A directory's metadata change retires its
//! row and records a new one (no bytes are archived), so the tree as of `R`
//! has the directory as it was. Stores written before that updated a
//! directory's row in place: there a directory whose metadata changed after
//! `R` is missing from the tree as of `R`; its files are not, and a restore
//! creates the directory for them.

use ferry_proto::{At, RelPath};
use rusqlite::{params, OptionalExtension};

use super::catalog::{self, VERSION_COLUMNS};
use super::locate::{self, Unservable};
use super::{HistoryError, Namespace, Store, VersionRecord};

/// A folder's tree as of a point, with what could not be served.
#[derive(Debug, Clone, Default)]
pub struct TreeReport {
    /// The run the point resolved to (`None`: the latest state).
    pub run: Option<u64>,
    /// The entries that can be restored, in path order.
    pub entries: Vec<VersionRecord>,
    /// The rows of the tree that cannot be served, in path order.
    pub skipped: Vec<SkippedVersion>,
}

/// A version in a tree that cannot be served, and why.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SkippedVersion {
    /// The version's id.
    pub id: i64,
    /// Its path as the catalog has it (lossy UTF-8; it may not be a valid path).
    pub path: String,
    /// `"file"`, `"dir"` or `"symlink"` as the catalog has it.
    pub kind: String,
    pub reason: Unservable,
}

impl Store {
    /// The run `at` stands for in `ns`: `None` for the latest state.
    pub fn resolve_at(&self, ns: &Namespace, at: At) -> Result<Option<u64>, HistoryError> {
        let cat = self.catalog();
        let conn = cat.conn();
        let folder = ns.folder.as_str();
        match at {
            At::Latest => Ok(None),
            At::Run(run) => {
                let found: Option<i64> = conn
                    .query_row(
                        "SELECT id FROM runs WHERE id = ?1 AND sender_id = ?2 AND folder = ?3",
                        params![catalog::sql_u64(run), ns.sender_id, folder],
                        |r| r.get(0),
                    )
                    .optional()
                    .map_err(|e| cat.err(e))?;
                match found {
                    Some(_) => Ok(Some(run)),
                    None => Err(HistoryError::UnknownRun {
                        run,
                        sender: ns.sender.clone(),
                        folder: ns.folder.clone(),
                    }),
                }
            }
            At::Time(at_ms) => {
                let found: Option<i64> = conn
                    .query_row(
                        "SELECT max(id) FROM runs WHERE sender_id = ?1 AND folder = ?2
                         AND coalesce(finished_ms, started_ms) <= ?3",
                        params![ns.sender_id, folder, at_ms],
                        |r| r.get(0),
                    )
                    .map_err(|e| cat.err(e))?;
                match found.and_then(|id| u64::try_from(id).ok()) {
                    Some(run) => Ok(Some(run)),
                    None => Err(HistoryError::NothingYet {
                        at_ms,
                        sender: ns.sender.clone(),
                        folder: ns.folder.clone(),
                    }),
                }
            }
        }
    }

    /// The tree of `ns` as of `at` (only paths at or below one of `under`,
    /// if it is not empty), in path order, and the run `at` resolved to.
    /// Files that cannot be served are left out: see [`Store::tree_report`].
    pub fn tree(
        &self,
        ns: &Namespace,
        at: At,
        under: &[RelPath],
    ) -> Result<(Option<u64>, Vec<VersionRecord>), HistoryError> {
        let report = self.tree_report(ns, at, under)?;
        Ok((report.run, report.entries))
    }

    /// The tree of `ns` as of `at` (only paths at or below one of `under`,
    /// if it is not empty), in path order; a row that cannot be served (a
    /// path that does not decode, a file whose bytes were not kept or whose
    /// archive is recorded outside the folder's versions area) is listed in
    /// `skipped` with the reason, and the rest of the tree is still given.
    pub fn tree_report(
        &self,
        ns: &Namespace,
        at: At,
        under: &[RelPath],
    ) -> Result<TreeReport, HistoryError> {
        let run = self.resolve_at(ns, at)?;
        let wanted = |p: &[u8]| {
            under.is_empty()
                || under.iter().any(|u| {
                    let u = u.as_bytes();
                    p.starts_with(u) && (p.len() == u.len() || p.get(u.len()) == Some(&b'/'))
                })
        };
        let rows = {
            let cat = self.catalog();
            match run {
                None => cat.current_rows(ns.sender_id, &ns.folder, false)?,
                Some(run) => {
                    let sql = format!(
                        "SELECT {VERSION_COLUMNS} FROM versions WHERE sender_id = ?1 AND folder = ?2
                         AND run_id <= ?3 AND (replaced_run IS NULL OR replaced_run > ?3)
                         ORDER BY path, id DESC"
                    );
                    let read = || -> rusqlite::Result<Vec<catalog::VersionRow>> {
                        let mut stmt = cat.conn().prepare(&sql)?;
                        let rows = stmt.query_map(
                            params![ns.sender_id, ns.folder.as_str(), catalog::sql_u64(run)],
                            catalog::version_row,
                        )?;
                        rows.collect()
                    };
                    read().map_err(|e| cat.err(e))?
                }
            }
        };
        let mut report = TreeReport {
            run,
            ..TreeReport::default()
        };
        let mut last: Option<Vec<u8>> = None;
        for row in rows {
            // Newest row of each path only (ids grow with time).
            if last.as_deref() == Some(row.path.as_slice()) {
                continue;
            }
            last = Some(row.path.clone());
            if !wanted(&row.path) {
                continue;
            }
            let needs_chain = row.replaced_run.is_some() && row.archive.is_none() && !row.deleted;
            let cat = self.catalog();
            // Same bytes as a newer version: locate along the path's rows.
            let chain = match needs_chain {
                true => cat.path_rows_raw(ns.sender_id, &ns.folder, &row.path)?,
                false => vec![row.clone()],
            };
            let at = locate::locate(ns.sender.as_str(), ns.folder.as_str(), &chain)
                .into_iter()
                .zip(&chain)
                .find(|(_, r)| r.id == row.id)
                .map(|(at, _)| at)
                .unwrap_or(locate::Located::Unservable(Unservable::Lost {
                    reason: "the catalog changed while the tree was read".into(),
                }));
            let skip = |reason: Unservable| SkippedVersion {
                id: row.id,
                path: String::from_utf8_lossy(&row.path).into_owned(),
                kind: row.kind.clone(),
                reason,
            };
            // Directories and symlinks are restored from their rows alone.
            match at.unservable() {
                Some(u @ Unservable::InvalidPath { .. }) => {
                    report.skipped.push(skip(u.clone()));
                    continue;
                }
                Some(u) if row.kind == "file" => {
                    report.skipped.push(skip(u.clone()));
                    continue;
                }
                _ => {}
            }
            match self.version_record(&cat, ns, row.clone(), at) {
                Ok(record) => report.entries.push(record),
                Err(e) => report.skipped.push(skip(Unservable::BadRow {
                    detail: e.to_string(),
                })),
            }
        }
        for s in &report.skipped {
            tracing::warn!(version = s.id, path = %s.path, "cannot serve a version: {}", s.reason);
        }
        Ok(report)
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used)] // a failing unwrap is a failing test
mod tests {
    use super::super::tests::{fixture, put_file, rel};
    use super::*;
    use ferry_proto::Name;
    use ferry_proto::RunReport;

    fn finish(store: &Store, ns: &Namespace, run: u64) {
        store
            .finish_run(
                ns,
                run,
                &RunReport::default(),
                0,
                crate::store::RunEnding::Complete,
            )
            .unwrap();
    }

    #[test]
    fn tree_as_of_each_run_and_time() {
        let (_dir, store, ns) = fixture();
        let r1 = store.begin_run(&ns).unwrap();
        put_file(&store, &ns, r1, "a", b"one", 1);
        put_file(&store, &ns, r1, "d/b", b"bee", 1);
        finish(&store, &ns, r1);
        let r2 = store.begin_run(&ns).unwrap();
        put_file(&store, &ns, r2, "a", b"two", 2);
        store.delete(&ns, r2, &rel("d")).unwrap();
        put_file(&store, &ns, r2, "c", b"sea", 2);
        finish(&store, &ns, r2);

        let (run, t1) = store.tree(&ns, At::Run(r1), &[]).unwrap();
        assert_eq!(run, Some(r1));
        let paths: Vec<String> = t1.iter().map(|v| v.path.to_string()).collect();
        assert_eq!(paths, ["a", "d/b"]);
        assert_eq!(std::fs::read(&t1[0].location).unwrap(), b"one");
        assert_eq!(std::fs::read(&t1[1].location).unwrap(), b"bee");

        let (_, t2) = store.tree(&ns, At::Run(r2), &[]).unwrap();
        let paths: Vec<String> = t2.iter().map(|v| v.path.to_string()).collect();
        assert_eq!(paths, ["a", "c"]);
        let (_, latest) = store.tree(&ns, At::Latest, &[rel("c")]).unwrap();
        assert_eq!(latest.len(), 1);

        // A time after r1 ended resolves to r1 or r2, never to nothing.
        let runs = store.runs(Some(ns.sender_id)).unwrap();
        let r1_end = runs
            .iter()
            .find(|r| r.id == r1)
            .unwrap()
            .finished_ms
            .unwrap();
        assert!(store.resolve_at(&ns, At::Time(r1_end)).unwrap() >= Some(r1));
        let err = store
            .resolve_at(&ns, At::Time(r1_end - 3_600_000))
            .unwrap_err();
        assert!(matches!(err, HistoryError::NothingYet { .. }), "{err}");
    }

    #[test]
    fn bad_rows_are_skipped_with_a_reason_and_the_rest_of_the_tree_is_served() {
        let (dir, store, ns) = fixture();
        let r1 = store.begin_run(&ns).unwrap();
        for p in ["a", "b", "c", "d/e"] {
            put_file(&store, &ns, r1, p, p.as_bytes(), 1);
        }
        finish(&store, &ns, r1);
        let r2 = store.begin_run(&ns).unwrap();
        put_file(&store, &ns, r2, "b", b"bee two", 2);
        store.delete(&ns, r2, &rel("c")).unwrap();
        finish(&store, &ns, r2);
        let id = |p: &str, nth: usize| store.versions(&ns, &rel(p)).unwrap()[nth].id;
        let (a, b_old, c) = (id("a", 0), id("b", 1), id("c", 0));
        let conn = rusqlite::Connection::open(dir.path().join("store/.ferry/catalog.db")).unwrap();
        let set = |sql: &str, value: &[u8], id: i64| {
            conn.execute(sql, rusqlite::params![value, id]).unwrap();
        };
        set("UPDATE versions SET path = ?1 WHERE id = ?2", b"../a", a);
        set(
            "UPDATE versions SET archive = ?1 WHERE id = ?2",
            b"../../etc/passwd",
            b_old,
        );
        conn.execute("UPDATE versions SET archive = NULL WHERE id = ?1", [c])
            .unwrap();

        let old = store.tree_report(&ns, At::Run(r1), &[]).unwrap();
        let paths: Vec<String> = old.entries.iter().map(|v| v.path.to_string()).collect();
        assert_eq!(paths, ["d/e"]);
        let skipped: Vec<(i64, &str)> = old
            .skipped
            .iter()
            .map(|s| (s.id, s.path.as_str()))
            .collect();
        assert_eq!(skipped, [(a, "../a"), (b_old, "b"), (c, "c")]);
        assert!(matches!(
            old.skipped[0].reason,
            Unservable::InvalidPath { .. }
        ));
        assert!(matches!(old.skipped[1].reason, Unservable::Outside { .. }));
        assert!(matches!(old.skipped[2].reason, Unservable::Lost { .. }));
        assert!(old.skipped[1]
            .reason
            .to_string()
            .contains("../../etc/passwd"));

        let (_, latest) = store.tree(&ns, At::Latest, &[]).unwrap();
        let paths: Vec<String> = latest.iter().map(|v| v.path.to_string()).collect();
        assert_eq!(paths, ["b", "d/e"]);
        let under = store.tree_report(&ns, At::Latest, &[rel("d")]).unwrap();
        assert_eq!(under.entries.len(), 1);
        assert!(under.skipped.is_empty(), "{:?}", under.skipped);
        // The version itself is refused, never read from outside the store.
        let record = store.version_in(&ns, b_old as u64).unwrap().unwrap();
        assert!(record.unservable.is_some());
        assert!(record.location.starts_with(store.root()));
    }

    #[test]
    fn other_namespaces_are_invisible() {
        let (_dir, store, ns) = fixture();
        let r1 = store.begin_run(&ns).unwrap();
        put_file(&store, &ns, r1, "a", b"mine", 1);
        finish(&store, &ns, r1);
        let other = store
            .add_sender("dev-2", &Name::new("other").unwrap())
            .unwrap();
        let theirs = store.namespace(&other, &Name::new("docs").unwrap());
        let id = store.current(&ns).unwrap()[0].id as u64;
        assert!(store.version_in(&ns, id).unwrap().is_some());
        assert!(store.version_in(&theirs, id).unwrap().is_none());
        let err = store.tree(&theirs, At::Run(r1), &[]).unwrap_err();
        assert!(matches!(err, HistoryError::UnknownRun { .. }), "{err}");
        let other_folder = Namespace {
            folder: Name::new("else").unwrap(),
            ..ns.clone()
        };
        assert!(store.version_in(&other_folder, id).unwrap().is_none());
    }

    /// A directory whose mode and mtime changed in run 2 is, as of run 1,
    /// as it was then; its metadata change retired a row without an archive.
    #[test]
    fn a_directory_keeps_its_metadata_as_of_each_run() {
        let (_dir, store, ns) = fixture();
        let dir = |mode: u32, mtime_ns: i64| ferry_proto::Entry {
            path: rel("d"),
            kind: ferry_proto::EntryKind::Dir,
            mtime_ns,
            mode,
        };
        let (t1, t2) = (1_700_000_000_000_000_000, 1_800_000_000_000_000_000);
        let r1 = store.begin_run(&ns).unwrap();
        store.put_dir(&ns, r1, &dir(0o755, t1)).unwrap();
        put_file(&store, &ns, r1, "d/f", b"f", 1);
        finish(&store, &ns, r1);
        let r2 = store.begin_run(&ns).unwrap();
        store.put_dir(&ns, r2, &dir(0o700, t2)).unwrap();
        // The same again (a batch sending it twice, or no change): no new row.
        store.put_dir(&ns, r2, &dir(0o700, t2)).unwrap();
        finish(&store, &ns, r2);

        let meta = |at: At| {
            let (_, tree) = store.tree(&ns, at, &[]).unwrap();
            let paths: Vec<String> = tree.iter().map(|v| v.path.to_string()).collect();
            assert_eq!(paths, ["d", "d/f"], "{at:?}");
            (tree[0].mode, tree[0].mtime_ns, tree[0].run)
        };
        assert_eq!(meta(At::Run(r1)), (0o755, t1, r1));
        assert_eq!(meta(At::Run(r2)), (0o700, t2, r2));
        assert_eq!(meta(At::Latest), (0o700, t2, r2));
        let versions = store.versions(&ns, &rel("d")).unwrap();
        let seen: Vec<_> = versions
            .iter()
            .map(|v| {
                (
                    v.mode,
                    v.current,
                    v.replaced_run,
                    v.deleted,
                    v.unservable.is_none(),
                )
            })
            .collect();
        assert_eq!(
            seen,
            [
                (0o700, true, None, false, true),
                (0o755, false, Some(r2), false, true)
            ]
        );
        // What is below stays current.
        assert!(store.versions(&ns, &rel("d/f")).unwrap()[0].current);
    }
}
