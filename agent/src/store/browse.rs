//! Browsing a namespace one directory at a time: the immediate children of
//! a directory as of a point, found by index lookups on `versions_path`
//! rather than by reading the folder's whole tree.
//!
//! The directory's rows are read in index order (`path`, then `id`) from
//! its prefix on. A row of a child itself (no `/` after the prefix) is kept;
//! the first row *below* a child ends that read, and the next one seeks past
//! the child's whole subtree (`child + "0"`, `'0'` being the byte after
//! `'/'`). So a directory of files is one range read, and a directory of
//! `n` subdirectories costs `n` seeks whatever lies below them. The lock on
//! the catalog is let go every [`ROWS_PER_LOCK`] rows, so that a receiver's
//! commits are not held up by a large directory.
//!
//! Bytewise order puts `a.txt` (`.` < `/`) between `a` and `a/x`, so a
//! child can be met twice (by its own rows and by its subtree); the children
//! are gathered in a sorted map, which also gives the name order.
//!
//! Which row of a child is shown follows [`super::history`]: the row stored
//! by a run up to `R` and not replaced by a run up to `R`. A directory's
//! metadata change is a new version, but stores written before that updated
//! a directory's row in place, so there a directory whose metadata changed
//! after `R` has no such row; it is still listed if
//! something below it belongs to the tree as of `R` (one more range lookup,
//! which stops at the first such descendant), with the metadata of its row
//! that was current at `R` or later, or with none if it never had a row.

use std::collections::BTreeMap;

use ferry_proto::{At, DirEntry, Hash, RelPath, VersionKind};
use rusqlite::{params, OptionalExtension};

use super::catalog::{self, Catalog, VersionRow, VERSION_COLUMNS};
use super::HistoryError;
use super::{Namespace, Store, StoreError};

/// Rows read under one hold of the catalog lock (3 in tests, so that they
/// cross the boundary: a path's rows split, a path with more rows than
/// that).
const ROWS_PER_LOCK: usize = if cfg!(test) { 3 } else { 4096 };

/// The rows of the namespace from path `?3` on, below `?4` if `bounded`
/// (a directory's range; the root's has no upper bound), in index order.
pub(super) fn range_rows_sql(bounded: bool) -> String {
    let below = if bounded { "AND path < ?4" } else { "" };
    format!(
        "SELECT {VERSION_COLUMNS} FROM versions
         WHERE sender_id = ?1 AND folder = ?2 AND path >= ?3 {below}
         ORDER BY path, id"
    )
}

/// Every row of one path, newest first.
pub(super) fn path_rows_sql() -> String {
    format!(
        "SELECT {VERSION_COLUMNS} FROM versions
         WHERE sender_id = ?1 AND folder = ?2 AND path = ?3 ORDER BY id DESC"
    )
}

/// Whether a row in `[?3, ?4)` belongs to the tree as of run `?5` (`?5`
/// NULL: is current).
pub(super) const ANY_VISIBLE_BELOW: &str = "SELECT 1 FROM versions
    WHERE sender_id = ?1 AND folder = ?2 AND path >= ?3 AND path < ?4
    AND (CASE WHEN ?5 IS NULL THEN replaced_run IS NULL
         ELSE run_id <= ?5 AND (replaced_run IS NULL OR replaced_run > ?5) END)
    LIMIT 1";

/// One directory's children as of a point.
#[derive(Debug, Clone, Default)]
pub struct DirListing {
    /// The run the point resolved to (`None`: the latest state).
    pub run: Option<u64>,
    /// The children, sorted by name (bytewise).
    pub entries: Vec<DirEntry>,
}

/// How one read of a directory's range ended.
enum Stop {
    /// The range is read to its end.
    End,
    /// A row below this child was met.
    Below(Vec<u8>),
    /// [`ROWS_PER_LOCK`] rows were read.
    Full,
}

/// A child as far as its rows tell.
enum Child {
    /// Listed (or left out: `None`, a row that does not make an entry).
    Done(Option<DirEntry>),
    /// No row of its own belongs to the point: listed only as a directory
    /// with something below it that does.
    Open { rows: Vec<VersionRow>, below: bool },
}

impl Store {
    /// The immediate children of `dir` (`None`: the folder's root) in `ns`
    /// as of `at`, sorted by name, and the run `at` resolved to. A
    /// directory that does not exist at that point (or a file) has none.
    /// Catalog rows that do not make an entry (a path or hash that does not
    /// decode) are left out and logged.
    pub fn list_dir(
        &self,
        ns: &Namespace,
        at: At,
        dir: Option<&RelPath>,
    ) -> Result<DirListing, HistoryError> {
        let run = self.resolve_at(ns, at)?;
        let (lo, hi) = match dir {
            None => (Vec::new(), None),
            Some(d) => {
                let mut lo = d.as_bytes().to_vec();
                let mut hi = lo.clone();
                lo.push(b'/');
                hi.push(b'0');
                (lo, Some(hi))
            }
        };
        let mut children: BTreeMap<Vec<u8>, Child> = BTreeMap::new();
        let mut cursor = lo.clone();
        // Each read moves the cursor forward (past a child's subtree, or to
        // the last path it read, which is then read whole), so this ends.
        loop {
            let (mut rows, stop) = self.read_range(ns, lo.len(), &cursor, hi.as_deref())?;
            if let Stop::Full = stop {
                // The last path's rows may go on: read them again next time,
                // unless they are all this read held.
                let Some(last) = rows.last().map(|r| r.path.clone()) else {
                    break;
                };
                if rows.first().map(|r| &r.path) == Some(&last) {
                    let cat = self.catalog();
                    let mut all = path_rows(&cat, ns, &last)?;
                    all.reverse();
                    rows = all;
                    cursor = last;
                    cursor.push(0);
                } else {
                    rows.retain(|r| r.path != last);
                    cursor = last;
                }
            }
            add_rows(&mut children, rows, run, lo.len());
            match stop {
                Stop::End => break,
                Stop::Full => {}
                Stop::Below(child) => {
                    cursor = child.clone();
                    cursor.push(b'0');
                    match children.entry(child).or_insert(Child::Open {
                        rows: Vec::new(),
                        below: false,
                    }) {
                        Child::Open { below, .. } => *below = true,
                        Child::Done(_) => {}
                    }
                }
            }
        }
        let mut entries = Vec::with_capacity(children.len());
        for (child, state) in children {
            let listed = match state {
                Child::Done(entry) => entry,
                Child::Open { below: false, .. } => None,
                Child::Open { rows, below: true } => self.dir_as_of(ns, run, child, &rows)?,
            };
            entries.extend(listed);
        }
        Ok(DirListing { run, entries })
    }

    /// Reads the range from `from` (before `below`) in index order, up to
    /// [`ROWS_PER_LOCK`] rows, stopping at the first row more than one level
    /// below the prefix of length `prefix`.
    fn read_range(
        &self,
        ns: &Namespace,
        prefix: usize,
        from: &[u8],
        below: Option<&[u8]>,
    ) -> Result<(Vec<VersionRow>, Stop), StoreError> {
        let cat = self.catalog();
        let folder = ns.folder.as_str();
        let read = || -> rusqlite::Result<(Vec<VersionRow>, Stop)> {
            let mut stmt = cat
                .conn()
                .prepare_cached(&range_rows_sql(below.is_some()))?;
            let mut found = match below {
                Some(hi) => stmt.query(params![ns.sender_id, folder, from, hi])?,
                None => stmt.query(params![ns.sender_id, folder, from])?,
            };
            let mut rows = Vec::new();
            while let Some(row) = found.next()? {
                let row = catalog::version_row(row)?;
                let rest = row.path.get(prefix..).unwrap_or_default();
                // (An empty first component, from a damaged row, is no child.)
                if let Some(slash) = rest.iter().position(|&b| b == b'/').filter(|&s| s > 0) {
                    let child = row.path[..prefix + slash].to_vec();
                    return Ok((rows, Stop::Below(child)));
                }
                rows.push(row);
                if rows.len() >= ROWS_PER_LOCK {
                    return Ok((rows, Stop::Full));
                }
            }
            Ok((rows, Stop::End))
        };
        read().map_err(|e| cat.err(e))
    }

    /// A child with no row of its own as of `run` but something below it
    /// that is: a directory then, with the metadata of its oldest directory
    /// row not retired by then (`rows` oldest first), or none.
    fn dir_as_of(
        &self,
        ns: &Namespace,
        run: Option<u64>,
        child: Vec<u8>,
        rows: &[VersionRow],
    ) -> Result<Option<DirEntry>, StoreError> {
        if !any_visible_below(&self.catalog(), ns, run, &child)? {
            return Ok(None);
        }
        let not_retired = |r: &&VersionRow| {
            r.kind == "dir"
                && match run {
                    None => r.replaced_run.is_none(),
                    Some(run) => r.replaced_run.is_none_or(|by| by > catalog::sql_u64(run)),
                }
        };
        match rows.iter().find(not_retired) {
            Some(row) => Ok(entry(child, row, true)),
            None => Ok(RelPath::from_bytes(child.clone())
                .map_err(|e| warn_bad(&child, &e.to_string()))
                .ok()
                .map(|path| DirEntry {
                    path,
                    kind: VersionKind::Dir,
                    mtime_ns: 0,
                    mode: 0,
                    version: None,
                    run: None,
                })),
        }
    }
}

/// Adds the rows of children (in path order, each path's rows oldest first
/// and complete) to `children`.
fn add_rows(
    children: &mut BTreeMap<Vec<u8>, Child>,
    rows: Vec<VersionRow>,
    run: Option<u64>,
    prefix: usize,
) {
    let visible = |r: &VersionRow| match run {
        None => r.replaced_run.is_none(),
        Some(run) => {
            let run = catalog::sql_u64(run);
            r.run_id <= run && r.replaced_run.is_none_or(|by| by > run)
        }
    };
    let mut rows = rows.into_iter().peekable();
    while let Some(first) = rows.next() {
        let mut group = vec![first];
        while let Some(next) = rows.next_if(|r| r.path == group[0].path) {
            group.push(next);
        }
        let path = group[0].path.clone();
        if path.len() <= prefix {
            continue;
        }
        // Newest visible row (ids grow with time).
        let state = match group.iter().rev().find(|r| visible(r)) {
            Some(row) => Child::Done(entry(path.clone(), row, false)),
            None => Child::Open {
                rows: group,
                below: false,
            },
        };
        children.insert(path, state);
    }
}

fn path_rows(cat: &Catalog, ns: &Namespace, path: &[u8]) -> Result<Vec<VersionRow>, StoreError> {
    let read = || -> rusqlite::Result<Vec<VersionRow>> {
        let mut stmt = cat.conn().prepare_cached(&path_rows_sql())?;
        let rows = stmt.query_map(
            params![ns.sender_id, ns.folder.as_str(), path],
            catalog::version_row,
        )?;
        rows.collect()
    };
    read().map_err(|e| cat.err(e))
}

fn any_visible_below(
    cat: &Catalog,
    ns: &Namespace,
    run: Option<u64>,
    child: &[u8],
) -> Result<bool, StoreError> {
    let mut lo = child.to_vec();
    let mut hi = lo.clone();
    lo.push(b'/');
    hi.push(b'0');
    let run = run.map(catalog::sql_u64);
    let found = cat
        .conn()
        .prepare_cached(ANY_VISIBLE_BELOW)
        .and_then(|mut s| {
            s.query_row(
                params![ns.sender_id, ns.folder.as_str(), lo, hi, run],
                |r| r.get::<_, i64>(0),
            )
            .optional()
        })
        .map_err(|e| cat.err(e))?;
    Ok(found.is_some())
}

fn warn_bad(path: &[u8], why: &str) {
    tracing::warn!(path = %String::from_utf8_lossy(path), "a catalog row cannot be listed: {why}");
}

/// The entry a row describes; `dir_only` keeps only a directory.
fn entry(child: Vec<u8>, row: &VersionRow, dir_only: bool) -> Option<DirEntry> {
    let kind = match (row.kind.as_str(), dir_only) {
        ("dir", _) => VersionKind::Dir,
        ("file", false) => {
            let hash = row.hash.as_deref().and_then(|h| Hash::try_from(h).ok());
            let Some(hash) = hash else {
                warn_bad(&child, "its hash is missing or not 32 bytes");
                return None;
            };
            VersionKind::File {
                size: u64::try_from(row.size).unwrap_or(0),
                hash,
            }
        }
        ("symlink", false) => match &row.target {
            Some(target) => VersionKind::Symlink {
                target: target.clone(),
            },
            None => {
                warn_bad(&child, "a symlink without a target");
                return None;
            }
        },
        (other, _) => {
            warn_bad(&child, &format!("unknown kind {other:?}"));
            return None;
        }
    };
    let path = match RelPath::from_bytes(child) {
        Ok(path) => path,
        Err(e) => {
            warn_bad(row.path.as_slice(), &e.to_string());
            return None;
        }
    };
    Some(DirEntry {
        path,
        kind,
        mtime_ns: row.mtime_ns,
        mode: u32::try_from(row.mode).unwrap_or(0),
        version: u64::try_from(row.id).ok(),
        run: u64::try_from(row.run_id).ok(),
    })
}

#[cfg(test)]
#[allow(clippy::unwrap_used)] // a failing unwrap is a failing test
mod tests {
    use super::super::tests::{fixture, put_file, rel};
    use super::*;
    use ferry_proto::{Entry, EntryKind, RunReport};

    fn finish(store: &Store, ns: &Namespace, run: u64) {
        let ending = crate::store::RunEnding::Complete;
        store
            .finish_run(ns, run, &RunReport::default(), 0, ending)
            .unwrap();
    }

    fn put_dir(store: &Store, ns: &Namespace, run: u64, path: &str, mtime_ns: i64) {
        let entry = Entry {
            path: rel(path),
            kind: EntryKind::Dir,
            mtime_ns,
            mode: 0o750,
        };
        store.put_dir(ns, run, &entry).unwrap();
    }

    fn put_link(store: &Store, ns: &Namespace, run: u64, path: &str, target: &[u8]) {
        let entry = Entry {
            path: rel(path),
            kind: EntryKind::Symlink {
                target: target.to_vec(),
            },
            mtime_ns: 3,
            mode: 0o777,
        };
        store.put_symlink(ns, run, &entry).unwrap();
    }

    /// `name kind size` of each entry, for short assertions.
    fn show(listing: &DirListing) -> Vec<String> {
        listing
            .entries
            .iter()
            .map(|e| {
                let name = String::from_utf8_lossy(e.name());
                match &e.kind {
                    VersionKind::File { size, .. } => format!("{name} file {size}"),
                    VersionKind::Dir => format!("{name} dir"),
                    VersionKind::Symlink { target } => {
                        format!("{name} -> {}", String::from_utf8_lossy(target))
                    }
                }
            })
            .collect()
    }

    #[test]
    fn children_as_of_each_run_in_name_order() {
        let (_dir, store, ns) = fixture();
        let r1 = store.begin_run(&ns).unwrap();
        put_dir(&store, &ns, r1, "a", 5);
        put_file(&store, &ns, r1, "a/x", b"x", 1);
        put_file(&store, &ns, r1, "a/y/z", b"zz", 1);
        // Bytewise, "a.txt" sorts between "a" and "a/x".
        put_file(&store, &ns, r1, "a.txt", b"t", 1);
        put_file(&store, &ns, r1, "b", b"bee", 1);
        put_link(&store, &ns, r1, "l", b"a/x");
        finish(&store, &ns, r1);
        let r2 = store.begin_run(&ns).unwrap();
        // Four rows of one path: more than the test's rows per lock.
        put_file(&store, &ns, r2, "b", b"bee 2a", 2);
        put_file(&store, &ns, r2, "b", b"bee 2b", 2);
        put_file(&store, &ns, r2, "b", b"bee two", 2);
        store.delete(&ns, r2, &rel("a.txt")).unwrap();
        put_file(&store, &ns, r2, "c", b"c", 2);
        finish(&store, &ns, r2);

        let root = store.list_dir(&ns, At::Run(r1), None).unwrap();
        assert_eq!(root.run, Some(r1));
        assert_eq!(
            show(&root),
            ["a dir", "a.txt file 1", "b file 3", "l -> a/x"]
        );
        let a = &root.entries[0];
        assert_eq!((a.mode, a.mtime_ns, a.run), (0o750, 5, Some(r1)));
        let b_v1 = root.entries[2].version.unwrap();
        let b_versions = store.versions(&ns, &rel("b")).unwrap();
        assert_eq!(b_versions.len(), 4);
        assert_eq!(b_versions[3].id as u64, b_v1);

        let latest = store.list_dir(&ns, At::Latest, None).unwrap();
        assert_eq!(latest.run, None);
        assert_eq!(show(&latest), ["a dir", "b file 7", "c file 1", "l -> a/x"]);
        assert_eq!(latest.entries[1].run, Some(r2));

        let a = store.list_dir(&ns, At::Run(r1), Some(&rel("a"))).unwrap();
        assert_eq!(show(&a), ["x file 1", "y dir"]);
        assert_eq!(a.entries[1].version, None, "y has no row of its own");
        let y = store.list_dir(&ns, At::Latest, Some(&rel("a/y"))).unwrap();
        assert_eq!(show(&y), ["z file 2"]);
        assert_eq!(y.entries[0].path, rel("a/y/z"));
        // Neither a missing directory nor a file has children.
        let none = store.list_dir(&ns, At::Latest, Some(&rel("nope"))).unwrap();
        assert!(none.entries.is_empty());
        let file = store.list_dir(&ns, At::Latest, Some(&rel("b"))).unwrap();
        assert!(file.entries.is_empty());
        let err = store.list_dir(&ns, At::Run(r2 + 10), None).unwrap_err();
        assert!(matches!(err, HistoryError::UnknownRun { .. }), "{err}");
    }

    #[test]
    fn a_directory_changed_later_is_listed_and_one_made_later_is_not() {
        let (_dir, store, ns) = fixture();
        let r1 = store.begin_run(&ns).unwrap();
        put_dir(&store, &ns, r1, "d", 1);
        put_file(&store, &ns, r1, "d/f", b"f", 1);
        put_dir(&store, &ns, r1, "empty", 1);
        finish(&store, &ns, r1);
        let r2 = store.begin_run(&ns).unwrap();
        // New metadata: a new version; run 1's stays as it was.
        put_dir(&store, &ns, r2, "d", 2);
        put_dir(&store, &ns, r2, "new", 2);
        put_file(&store, &ns, r2, "new/g", b"g", 2);
        finish(&store, &ns, r2);

        let root = store.list_dir(&ns, At::Run(r1), None).unwrap();
        assert_eq!(show(&root), ["d dir", "empty dir"]);
        let d = &root.entries[0];
        assert_eq!((d.mtime_ns, d.run), (1, Some(r1)), "run 1's metadata");
        assert!(d.version.is_some());
        let latest = store.list_dir(&ns, At::Latest, None).unwrap();
        assert_eq!(show(&latest), ["d dir", "empty dir", "new dir"]);
        // Deleted with everything below: gone at latest, there at run 2.
        let r3 = store.begin_run(&ns).unwrap();
        store.delete(&ns, r3, &rel("new")).unwrap();
        finish(&store, &ns, r3);
        let latest = store.list_dir(&ns, At::Latest, None).unwrap();
        assert_eq!(show(&latest), ["d dir", "empty dir"]);
        let at_r2 = store.list_dir(&ns, At::Run(r2), Some(&rel("new"))).unwrap();
        assert_eq!(show(&at_r2), ["g file 1"]);
    }

    #[test]
    fn a_directory_read_in_several_holds_of_the_lock_lists_each_child_once() {
        let (_dir, store, ns) = fixture();
        let r1 = store.begin_run(&ns).unwrap();
        for i in 0..7 {
            put_file(&store, &ns, r1, &format!("flat/f{i}"), b"one", 1);
        }
        put_file(&store, &ns, r1, "flat/f3", b"three", 1);
        put_file(&store, &ns, r1, "flat/f4/deeper", b"x", 1);
        finish(&store, &ns, r1);
        let flat = store.list_dir(&ns, At::Latest, Some(&rel("flat"))).unwrap();
        assert_eq!(
            show(&flat),
            [
                "f0 file 3",
                "f1 file 3",
                "f2 file 3",
                "f3 file 5",
                // Replaced in the same run by a directory holding "deeper".
                "f4 dir",
                "f5 file 3",
                "f6 file 3"
            ]
        );
    }

    /// The queries a listing runs are index lookups: none scans the
    /// versions table (or its index) from end to end.
    #[test]
    fn listing_queries_are_index_lookups() {
        let (_dir, store, ns) = fixture();
        let r1 = store.begin_run(&ns).unwrap();
        for i in 0..50 {
            put_file(&store, &ns, r1, &format!("d{}/f{i}", i % 5), b"x", 1);
        }
        finish(&store, &ns, r1);
        let cat = store.catalog();
        let (range, root_range, rows) =
            (range_rows_sql(true), range_rows_sql(false), path_rows_sql());
        let queries: [(&str, usize); 4] = [
            (&range, 4),
            (&root_range, 3),
            (&rows, 3),
            (ANY_VISIBLE_BELOW, 5),
        ];
        for (sql, n) in queries {
            let mut stmt = cat
                .conn()
                .prepare(&format!("EXPLAIN QUERY PLAN {sql}"))
                .unwrap();
            let args: Vec<Box<dyn rusqlite::ToSql>> = vec![
                Box::new(ns.sender_id),
                Box::new(ns.folder.as_str().to_string()),
                Box::new(b"d1/".to_vec()),
                Box::new(b"d10".to_vec()),
                Box::new(1i64),
            ];
            let plan: Vec<String> = stmt
                .query_map(rusqlite::params_from_iter(&args[..n]), |r| r.get(3))
                .unwrap()
                .collect::<rusqlite::Result<_>>()
                .unwrap();
            // No full scan, and no sort of a whole range before its first
            // row (the order must be the index's).
            assert!(
                plan.iter()
                    .all(|d| !d.starts_with("SCAN") && !d.contains("TEMP B-TREE")),
                "{sql}\n{plan:?}"
            );
            assert!(
                plan.iter()
                    .any(|d| d.starts_with("SEARCH versions USING") && d.contains("versions_path")),
                "{sql}\n{plan:?}"
            );
        }
    }
}
