//! The sender's persistent index of what the receiver acknowledged, and the
//! run plan derived from it.
//!
//! One SQLite file (`STATE/index.db`) is shared by every target the sender
//! sends to; each [`Index`] handle is scoped to one target string (e.g.
//! `"<receiver id>/<folder>"`), and never sees another target's rows. Rows are
//! written only after the receiver acknowledged ([`Index::record_stored`],
//! [`Index::record_deleted`]), so the next [`Index::plan`] re-sends anything
//! that was not confirmed.
//!
//! ## Layout
//!
//! This file holds the database handle and the entry rows.
//!
//! - `schema`: the tables, their version, and migrating an older file.
//! - `plan`: comparing a scan against the entries ([`Plan`]).
//! - `plan_items`: the entries a plan sends, held compactly ([`PlanItems`]).
//! - `under`: the entries of one directory's subtree.
//! - `chunk_lists`: the chunk lists deltas are described against.
//! - `runs`: the sender's history of its runs ([`SenderRun`]).
//! - `guard`: the mass-delete guard, which judges a plan before anything is
//!   deleted.

use std::path::{Path, PathBuf};
use std::time::Duration;

use ferry_proto::{Hash, RelPath};
use rusqlite::{params, Connection, OptionalExtension};

use crate::scan::{ScanEntry, ScanKind};
// The tests below build chunk lists.
#[cfg(test)]
use crate::chunk::ChunkInfo;

mod chunk_lists;
pub mod guard;
mod plan;
mod plan_items;
mod runs;
mod schema;
mod under;

pub use chunk_lists::ChunkRecord;
pub use plan::{Action, Plan, PlanItem};
pub use plan_items::PlanItems;
pub use runs::SenderRun;
use schema::{SCHEMA, SCHEMA_VERSION};

/// The sender's index for one target, backed by a shared SQLite file.
#[derive(Debug)]
pub struct Index {
    conn: Connection,
    path: PathBuf,
    target: String,
    /// The receiver's id of the run under way: recorded with every
    /// acknowledgement ([`Index::acked_run`]).
    run: Option<u64>,
}

/// The inode recorded for an entry the receiver may have lost
/// ([`Index::unconfirm_all`]): no file has it, so the entry is never taken
/// as unchanged, and the plan offers it again ([`plan`]).
pub(crate) const UNCONFIRMED_INO: u64 = u64::MAX;

/// What the index remembers about one path, as last acknowledged.
#[derive(Debug, Clone, PartialEq)]
pub struct IndexEntry {
    /// Path relative to the source root.
    pub path: RelPath,
    /// What it was.
    pub kind: ScanKind,
    /// Size in bytes.
    pub size: u64,
    /// Modification time in nanoseconds.
    pub mtime_ns: i64,
    /// Permission bits (`st_mode & 0o7777`).
    pub mode: u32,
    /// Inode number.
    pub ino: u64,
    /// blake3 of the content (files only).
    pub hash: Option<Hash>,
}

/// Errors of the sender index.
#[derive(Debug, thiserror::Error)]
pub enum IndexError {
    /// The directory for the index could not be created.
    #[error("cannot create the directory for the index {}", path.display())]
    CreateDir {
        /// The index file.
        path: PathBuf,
        /// The underlying error.
        source: std::io::Error,
    },
    /// The file exists but is not a usable SQLite database.
    #[error("the index {} is corrupt or not a Ferry index; move it aside to rebuild it (the next run re-checks every file)", path.display())]
    Corrupt {
        /// The index file.
        path: PathBuf,
        /// The underlying error.
        source: rusqlite::Error,
    },
    /// The file is an SQLite database of something else.
    #[error("{} is an SQLite database but not a Ferry index; give the sender another state directory", path.display())]
    NotAnIndex {
        /// The file.
        path: PathBuf,
    },
    /// The file was written by a newer Ferry.
    #[error("the index {} has schema version {found}, newer than this Ferry understands ({SCHEMA_VERSION}); upgrade Ferry", path.display())]
    TooNew {
        /// The index file.
        path: PathBuf,
        /// The version found.
        found: i64,
    },
    /// A database operation failed.
    #[error("index {}: {what} failed", path.display())]
    Sql {
        /// The index file.
        path: PathBuf,
        /// What was being done.
        what: &'static str,
        /// The underlying error.
        source: rusqlite::Error,
    },
    /// A stored row could not be decoded.
    #[error("index {}: bad row for {row}: {message}; move the index aside to rebuild it", path.display())]
    BadRow {
        /// The index file.
        path: PathBuf,
        /// Which row.
        row: String,
        /// What is wrong with it.
        message: String,
    },
}

impl Index {
    /// Opens (creating if needed) the index at `path`, scoped to `target`.
    ///
    /// Creates parent directories and the schema, switches to WAL. A file that
    /// is not a Ferry index is reported, never overwritten.
    pub fn open(path: &Path, target: &str) -> Result<Index, IndexError> {
        if let Some(parent) = path.parent().filter(|p| !p.as_os_str().is_empty()) {
            std::fs::create_dir_all(parent).map_err(|source| IndexError::CreateDir {
                path: path.to_path_buf(),
                source,
            })?;
        }
        let corrupt = |source| IndexError::Corrupt {
            path: path.to_path_buf(),
            source,
        };
        let conn = Connection::open(path).map_err(corrupt)?;
        conn.busy_timeout(Duration::from_secs(10))
            .map_err(corrupt)?;
        // The first read of the header: fails with NotADatabase on garbage.
        let version: i64 = conn
            .query_row("PRAGMA user_version", [], |r| r.get(0))
            .map_err(corrupt)?;
        if version > SCHEMA_VERSION {
            return Err(IndexError::TooNew {
                path: path.to_path_buf(),
                found: version,
            });
        }
        let index = Index {
            conn,
            path: path.to_path_buf(),
            target: target.to_owned(),
            run: None,
        };
        if version < SCHEMA_VERSION {
            index.create_schema()?;
        } else {
            // Recreates nothing on a healthy file; fails on a damaged one.
            index.conn.execute_batch(SCHEMA).map_err(corrupt)?;
        }
        let conn = &index.conn;
        let _mode: String = conn
            .query_row("PRAGMA journal_mode = WAL", [], |r| r.get(0))
            .map_err(corrupt)?;
        conn.execute_batch("PRAGMA synchronous = NORMAL")
            .map_err(corrupt)?;
        Ok(index)
    }

    /// Number of entries recorded for this target.
    pub fn len(&self) -> Result<u64, IndexError> {
        let n: i64 = self
            .conn
            .query_row(
                "SELECT count(*) FROM entries WHERE target = ?1",
                [&self.target],
                |r| r.get(0),
            )
            .map_err(|e| self.sql("counting entries", e))?;
        Ok(n as u64)
    }

    /// True if nothing is recorded for this target.
    pub fn is_empty(&self) -> Result<bool, IndexError> {
        Ok(self.len()? == 0)
    }

    /// Every entry recorded for this target, sorted by path bytes.
    pub fn entries(&self) -> Result<Vec<IndexEntry>, IndexError> {
        let mut out = Vec::new();
        self.for_each_entry(|entry| {
            out.push(entry);
            Ok(())
        })?;
        Ok(out)
    }

    /// Calls `f` with every entry recorded for this target, in path-bytes
    /// order, one row at a time (the whole set is never held).
    pub fn for_each_entry(
        &self,
        mut f: impl FnMut(IndexEntry) -> Result<(), IndexError>,
    ) -> Result<(), IndexError> {
        let what = "reading entries";
        let mut stmt = self
            .conn
            .prepare_cached(
                "SELECT path, kind, link_target, size, mtime_ns, mode, ino, hash
                 FROM entries WHERE target = ?1 ORDER BY path",
            )
            .map_err(|e| self.sql(what, e))?;
        let rows = stmt
            .query_map([&self.target], RawEntry::read)
            .map_err(|e| self.sql(what, e))?;
        for row in rows {
            let raw = row.map_err(|e| self.sql(what, e))?;
            f(self.decode(raw)?)?;
        }
        Ok(())
    }

    /// Records entries the receiver acknowledged (with the content hash for
    /// files), replacing what was known about those paths. One transaction.
    pub fn record_stored(&mut self, items: &[(ScanEntry, Option<Hash>)]) -> Result<(), IndexError> {
        let (path, target) = (&self.path, &self.target);
        let sql = |what, source| IndexError::Sql {
            path: path.clone(),
            what,
            source,
        };
        let what = "recording stored entries";
        let tx = self.conn.transaction().map_err(|e| sql(what, e))?;
        {
            let mut stmt = tx
                .prepare_cached(
                    "INSERT OR REPLACE INTO entries
                     (target, path, kind, link_target, size, mtime_ns, mode, ino, hash)
                     VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9)",
                )
                .map_err(|e| sql(what, e))?;
            for (entry, hash) in items {
                let (kind, link_target) = match &entry.kind {
                    ScanKind::File => (0, None),
                    ScanKind::Dir => (1, None),
                    ScanKind::Symlink { target } => (2, Some(&target[..])),
                };
                stmt.execute(params![
                    target,
                    entry.path.as_bytes(),
                    kind,
                    link_target,
                    // u64 values are stored bit for bit in SQLite's i64.
                    entry.size as i64,
                    entry.mtime_ns,
                    entry.mode,
                    entry.ino as i64,
                    hash.as_ref().map(|h| h.as_slice()),
                ])
                .map_err(|e| sql(what, e))?;
            }
        }
        note_run(&tx, target, self.run).map_err(|e| sql(what, e))?;
        tx.commit().map_err(|e| sql(what, e))
    }

    /// Forgets paths the receiver acknowledged as deleted, and everything
    /// recorded below them. One transaction.
    pub fn record_deleted(&mut self, paths: &[RelPath]) -> Result<(), IndexError> {
        let (path, target) = (&self.path, &self.target);
        let sql = |what, source| IndexError::Sql {
            path: path.clone(),
            what,
            source,
        };
        let what = "recording deleted entries";
        let tx = self.conn.transaction().map_err(|e| sql(what, e))?;
        {
            // Children of `p` are the paths in [`p/`, `p0`): `0` follows `/`.
            let mut stmt = tx
                .prepare_cached(
                    "DELETE FROM entries WHERE target = ?1
                     AND (path = ?2 OR (path >= ?3 AND path < ?4))",
                )
                .map_err(|e| sql(what, e))?;
            for p in paths {
                let lo = [p.as_bytes(), b"/"].concat();
                let hi = [p.as_bytes(), b"0"].concat();
                stmt.execute(params![target, p.as_bytes(), lo, hi])
                    .map_err(|e| sql(what, e))?;
            }
        }
        note_run(&tx, target, self.run).map_err(|e| sql(what, e))?;
        tx.commit().map_err(|e| sql(what, e))
    }

    /// Sets the receiver's run that acknowledgements recorded from now on
    /// belong to.
    pub fn set_run(&mut self, run: u64) {
        self.run = Some(run);
    }

    /// The receiver's id of the newest run in which this target recorded an
    /// acknowledgement (`None`: none recorded). Told to the receiver at the
    /// start of a run ([`ferry_proto::Hello::last_run`]), so that a receiver
    /// that lost runs can say so.
    pub fn acked_run(&self) -> Result<Option<u64>, IndexError> {
        self.conn
            .query_row(
                "SELECT run FROM acked_runs WHERE target = ?1",
                [&self.target],
                |r| r.get::<_, i64>(0),
            )
            .optional()
            .map(|run| run.map(|r| r as u64))
            .map_err(|e| self.sql("reading the last acknowledged run", e))
    }

    /// Takes back every acknowledgement of this target: the receiver cannot
    /// vouch for them ([`ferry_proto::Welcome::resync`]). Entries stay (they
    /// still tell which paths to delete and each file's last hash), but none
    /// is unchanged any more: the plan offers each file by its hash, and
    /// sends each directory and symlink again, until the receiver
    /// acknowledges it. One transaction.
    pub fn unconfirm_all(&mut self) -> Result<u64, IndexError> {
        let n = self
            .conn
            .execute(
                "UPDATE entries SET ino = ?2 WHERE target = ?1",
                params![self.target, UNCONFIRMED_INO as i64],
            )
            .map_err(|e| self.sql("taking back acknowledgements", e))?;
        Ok(n as u64)
    }

    /// The entry recorded for one path, if any.
    pub fn get(&self, path: &RelPath) -> Result<Option<IndexEntry>, IndexError> {
        let what = "reading an entry";
        let raw = self
            .conn
            .query_row(
                "SELECT path, kind, link_target, size, mtime_ns, mode, ino, hash
                 FROM entries WHERE target = ?1 AND path = ?2",
                params![self.target, path.as_bytes()],
                RawEntry::read,
            )
            .optional()
            .map_err(|e| self.sql(what, e))?;
        raw.map(|raw| self.decode(raw)).transpose()
    }

    /// The target this index speaks of.
    pub fn target(&self) -> &str {
        &self.target
    }

    fn sql(&self, what: &'static str, source: rusqlite::Error) -> IndexError {
        IndexError::Sql {
            path: self.path.clone(),
            what,
            source,
        }
    }

    fn decode(&self, raw: RawEntry) -> Result<IndexEntry, IndexError> {
        let bad = |message: String| IndexError::BadRow {
            path: self.path.clone(),
            row: String::from_utf8_lossy(&raw.path).into_owned(),
            message,
        };
        let path = RelPath::from_bytes(raw.path.clone()).map_err(|e| bad(e.to_string()))?;
        let kind = match (raw.kind, &raw.link_target) {
            (0, _) => ScanKind::File,
            (1, _) => ScanKind::Dir,
            (2, Some(target)) => ScanKind::Symlink {
                target: Box::new(target.clone()),
            },
            (k, _) => return Err(bad(format!("unknown kind {k}"))),
        };
        let hash = match raw.hash {
            None => None,
            Some(h) => Some(
                <Hash>::try_from(h.as_slice())
                    .map_err(|_| bad(format!("hash of {} bytes", h.len())))?,
            ),
        };
        Ok(IndexEntry {
            path,
            kind,
            size: raw.size as u64,
            mtime_ns: raw.mtime_ns,
            mode: raw.mode,
            ino: raw.ino as u64,
            hash,
        })
    }
}

/// A row as stored, before validation.
struct RawEntry {
    path: Vec<u8>,
    kind: i64,
    link_target: Option<Vec<u8>>,
    size: i64,
    mtime_ns: i64,
    mode: u32,
    ino: i64,
    hash: Option<Vec<u8>>,
}

/// Records `run` as the target's newest run with an acknowledgement,
/// inside the transaction that records the acknowledgements.
fn note_run(
    tx: &rusqlite::Transaction<'_>,
    target: &str,
    run: Option<u64>,
) -> rusqlite::Result<()> {
    if let Some(run) = run {
        tx.prepare_cached(
            "INSERT INTO acked_runs (target, run) VALUES (?1, ?2)
             ON CONFLICT (target) DO UPDATE SET run = excluded.run",
        )?
        .execute(params![target, run as i64])?;
    }
    Ok(())
}

impl RawEntry {
    /// A row of `SELECT path, kind, link_target, size, mtime_ns, mode, ino,
    /// hash FROM entries`, in that order.
    fn read(r: &rusqlite::Row<'_>) -> rusqlite::Result<RawEntry> {
        Ok(RawEntry {
            path: r.get(0)?,
            kind: r.get(1)?,
            link_target: r.get(2)?,
            size: r.get(3)?,
            mtime_ns: r.get(4)?,
            mode: r.get(5)?,
            ino: r.get(6)?,
            hash: r.get(7)?,
        })
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used, clippy::expect_used)] // tests fail loudly
mod tests {
    use super::*;

    pub(super) fn entry(path: &str, kind: ScanKind, size: u64, mtime_ns: i64) -> ScanEntry {
        ScanEntry {
            path: RelPath::from_bytes(path).unwrap(),
            kind,
            size,
            mtime_ns,
            mode: 0o644,
            ino: 7,
            dev: 1,
        }
    }

    #[test]
    fn bases_by_path_then_by_first_chunk_per_target() {
        let dir = tempfile::tempdir().unwrap();
        let db = dir.path().join("index.db");
        let mut a = Index::open(&db, "recv/a").unwrap();
        let b = Index::open(&db, "recv/b").unwrap();
        let chunk = |h: u8| ChunkInfo {
            len: 100,
            hash: [h; 32],
        };
        let path = |p: &str| RelPath::from_bytes(p).unwrap();
        let record = |p: &str, h: u8, list| ChunkRecord::plain(path(p), [h; 32], list).unwrap();
        a.record_chunks(&[
            record("old", 1, vec![chunk(10), chunk(11)]),
            record("other", 2, vec![chunk(20)]),
        ])
        .unwrap();
        // The same path wins over a first-chunk match.
        let (p, hash, list) = a.base_for(&path("old"), &[20; 32]).unwrap().unwrap();
        assert_eq!((p, hash, list.len()), (path("old"), [1; 32], 2));
        // A new path whose first chunk is known: a rename or copy.
        let (p, hash, _) = a.base_for(&path("new"), &[10; 32]).unwrap().unwrap();
        assert_eq!((p, hash), (path("old"), [1; 32]));
        assert!(a.base_for(&path("new"), &[99; 32]).unwrap().is_none());
        assert!(b.base_for(&path("old"), &[10; 32]).unwrap().is_none());
        // A newer list replaces the old one.
        a.record_chunks(&[record("old", 3, vec![chunk(12)])])
            .unwrap();
        let (_, hash, list) = a.base_for(&path("old"), &[0; 32]).unwrap().unwrap();
        assert_eq!((hash, list), ([3; 32], vec![chunk(12)]));
        // A sealed object's record: found by its first data piece, not by
        // the first entry of its list (its front).
        let sealed = ChunkRecord {
            path: path("ab/cdef"),
            hash: [4; 32],
            first: [40; 32],
            list: vec![chunk(41), chunk(40)],
        };
        a.record_chunks(&[sealed]).unwrap();
        let (p, hash, _) = a.base_for(&path("ab/0000"), &[40; 32]).unwrap().unwrap();
        assert_eq!((p, hash), (path("ab/cdef"), [4; 32]));
        assert!(a.base_for(&path("ab/0000"), &[41; 32]).unwrap().is_none());
    }

    #[test]
    fn stores_survive_reopen_and_targets_are_isolated() {
        let dir = tempfile::tempdir().unwrap();
        let db = dir.path().join("state/sub/index.db");
        let mut a = Index::open(&db, "recv/a").unwrap();
        let mut b = Index::open(&db, "recv/b").unwrap();
        let link = ScanKind::Symlink {
            target: b"t\xff".to_vec().into(),
        };
        let mut big = entry("d/f", ScanKind::File, u64::MAX - 1, -1_500_000_000);
        big.ino = u64::MAX;
        a.record_stored(&[
            (entry("d", ScanKind::Dir, 4096, 1), None),
            (big, Some([3; 32])),
            (entry("l", link.clone(), 2, 3), None),
        ])
        .unwrap();
        b.record_stored(&[(entry("other", ScanKind::File, 1, 1), Some([1; 32]))])
            .unwrap();
        drop(a);
        drop(b);

        let a = Index::open(&db, "recv/a").unwrap();
        assert_eq!(a.len().unwrap(), 3);
        let entries = a.entries().unwrap();
        let paths: Vec<_> = entries.iter().map(|e| e.path.to_string()).collect();
        assert_eq!(paths, ["d", "d/f", "l"]);
        assert_eq!(entries[1].size, u64::MAX - 1);
        assert_eq!(entries[1].ino, u64::MAX);
        assert_eq!(entries[1].mtime_ns, -1_500_000_000);
        assert_eq!(entries[1].hash, Some([3; 32]));
        assert_eq!(entries[0].hash, None);
        assert_eq!(entries[2].kind, link);
        let b = Index::open(&db, "recv/b").unwrap();
        assert_eq!(b.len().unwrap(), 1);
        assert!(Index::open(&db, "recv/c").unwrap().is_empty().unwrap());
        assert!(b.get(&RelPath::from_bytes("d").unwrap()).unwrap().is_none());
    }

    #[test]
    fn record_deleted_removes_paths_and_their_children_only() {
        let dir = tempfile::tempdir().unwrap();
        let mut index = Index::open(&dir.path().join("i.db"), "t").unwrap();
        let f = |p: &str| (entry(p, ScanKind::File, 1, 1), Some([0; 32]));
        index
            .record_stored(&[f("a"), f("a/x"), f("a/x/y"), f("a.b"), f("a0"), f("ab")])
            .unwrap();
        index
            .record_deleted(&[RelPath::from_bytes("a").unwrap()])
            .unwrap();
        let left: Vec<_> = index
            .entries()
            .unwrap()
            .iter()
            .map(|e| e.path.to_string())
            .collect();
        assert_eq!(left, ["a.b", "a0", "ab"]);
    }

    #[test]
    fn corrupt_file_is_reported_and_left_alone() {
        let dir = tempfile::tempdir().unwrap();
        let db = dir.path().join("index.db");
        let garbage = vec![0x5a_u8; 8192];
        std::fs::write(&db, &garbage).unwrap();
        let err = Index::open(&db, "t").unwrap_err();
        assert!(matches!(err, IndexError::Corrupt { .. }), "{err}");
        assert!(err.to_string().contains("index.db"), "{err}");
        assert_eq!(std::fs::read(&db).unwrap(), garbage);
    }

    #[test]
    fn foreign_database_is_refused() {
        let dir = tempfile::tempdir().unwrap();
        let db = dir.path().join("other.db");
        let conn = Connection::open(&db).unwrap();
        conn.execute_batch("CREATE TABLE mine (x INTEGER)").unwrap();
        drop(conn);
        let err = Index::open(&db, "t").unwrap_err();
        assert!(matches!(err, IndexError::NotAnIndex { .. }), "{err}");
        let conn = Connection::open(&db).unwrap();
        let tables: i64 = conn
            .query_row("SELECT count(*) FROM sqlite_master", [], |r| r.get(0))
            .unwrap();
        assert_eq!(tables, 1);
    }

    #[test]
    fn newer_schema_is_refused() {
        let dir = tempfile::tempdir().unwrap();
        let db = dir.path().join("i.db");
        drop(Index::open(&db, "t").unwrap());
        Connection::open(&db)
            .unwrap()
            .execute_batch("PRAGMA user_version = 99")
            .unwrap();
        let err = Index::open(&db, "t").unwrap_err();
        assert!(matches!(err, IndexError::TooNew { found: 99, .. }), "{err}");
    }
}
