//! The copies' own bookkeeping: what each copy holds, as last sent.
//!
//! One small SQLite file at the top of the copies directory
//! (`ROOT/.ferry-copies.db`, rollback journal, so nothing but the file stays
//! beside it). A row is written only after its copy was moved into place,
//! so a row names what the copy should hold; a restore from the copies
//! checks every file against its row's hash.

use std::path::{Path, PathBuf};
use std::time::Duration;

use ferry_proto::{Hash, RelPath};
use rusqlite::{params, Connection, OpenFlags};

use super::CopiesError;

/// Name of the bookkeeping file inside the copies root.
pub const BOOK_FILE: &str = ".ferry-copies.db";

const SCHEMA: &str = "
CREATE TABLE IF NOT EXISTS copies (
    path     BLOB    PRIMARY KEY,
    kind     INTEGER NOT NULL,  -- 0 file, 1 dir, 2 symlink
    hash     BLOB,
    target   BLOB,
    size     INTEGER NOT NULL,
    mtime_ns INTEGER NOT NULL,
    mode     INTEGER NOT NULL
) WITHOUT ROWID;
";

/// What one copy holds.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Held {
    /// A file with this content.
    File {
        /// blake3 of the content.
        hash: Hash,
        /// Its size in bytes.
        size: u64,
    },
    /// A directory.
    Dir,
    /// A symlink to this target.
    Symlink {
        /// The link's target bytes.
        target: Vec<u8>,
    },
}

/// One row of the bookkeeping: a copy and what it holds.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CopyRecord {
    /// Path below the copies root (and the source root).
    pub path: RelPath,
    /// What it holds.
    pub held: Held,
    /// Modification time in nanoseconds, as last sent.
    pub mtime_ns: i64,
    /// Permission bits, as last sent.
    pub mode: u32,
}

/// The bookkeeping file of one copies directory.
#[derive(Debug)]
pub struct Book {
    conn: Connection,
    path: PathBuf,
}

impl Book {
    /// Opens (creating) the bookkeeping of the copies directory `root`.
    pub fn open(root: &Path) -> Result<Book, CopiesError> {
        let path = root.join(BOOK_FILE);
        let bad = |source| CopiesError::Book {
            path: path.clone(),
            source,
        };
        let conn = Connection::open(&path).map_err(bad)?;
        conn.busy_timeout(Duration::from_secs(10)).map_err(bad)?;
        conn.execute_batch(SCHEMA).map_err(bad)?;
        Ok(Book { conn, path })
    }

    /// Opens the bookkeeping of `root` read-only, if there is one (a copies
    /// directory made by an older Ferry has none).
    pub fn open_existing(root: &Path) -> Result<Option<Book>, CopiesError> {
        let path = root.join(BOOK_FILE);
        if !path.is_file() {
            return Ok(None);
        }
        let bad = |source| CopiesError::Book {
            path: path.clone(),
            source,
        };
        let conn =
            Connection::open_with_flags(&path, OpenFlags::SQLITE_OPEN_READ_ONLY).map_err(bad)?;
        conn.busy_timeout(Duration::from_secs(10)).map_err(bad)?;
        Ok(Some(Book { conn, path }))
    }

    fn err(&self, source: rusqlite::Error) -> CopiesError {
        CopiesError::Book {
            path: self.path.clone(),
            source,
        }
    }

    /// Every row, sorted by path bytes (a directory before what is in it).
    pub fn all(&self) -> Result<Vec<CopyRecord>, CopiesError> {
        type Raw = (
            Vec<u8>,
            i64,
            Option<Vec<u8>>,
            Option<Vec<u8>>,
            i64,
            i64,
            u32,
        );
        let read = || -> rusqlite::Result<Vec<Raw>> {
            let mut stmt = self.conn.prepare(
                "SELECT path, kind, hash, target, size, mtime_ns, mode FROM copies ORDER BY path",
            )?;
            let rows = stmt.query_map([], |r| {
                Ok((
                    r.get(0)?,
                    r.get(1)?,
                    r.get(2)?,
                    r.get(3)?,
                    r.get(4)?,
                    r.get(5)?,
                    r.get(6)?,
                ))
            })?;
            rows.collect()
        };
        let mut out = Vec::new();
        for (path, kind, hash, target, size, mtime_ns, mode) in read().map_err(|e| self.err(e))? {
            let bad = |message: &'static str| CopiesError::BadRecord {
                path: self.path.clone(),
                row: String::from_utf8_lossy(&path).into_owned(),
                message,
            };
            let held = match (kind, hash, target) {
                (0, Some(hash), _) => Held::File {
                    hash: Hash::try_from(hash.as_slice()).map_err(|_| bad("bad hash"))?,
                    size: size as u64,
                },
                (1, _, _) => Held::Dir,
                (2, _, Some(target)) => Held::Symlink { target },
                _ => return Err(bad("unknown kind")),
            };
            let path = RelPath::from_bytes(path.clone()).map_err(|_| bad("bad path"))?;
            out.push(CopyRecord {
                path,
                held,
                mtime_ns,
                mode,
            });
        }
        Ok(out)
    }

    /// Records copies that were moved into place. One transaction.
    pub fn record(&mut self, records: &[CopyRecord]) -> Result<(), CopiesError> {
        if records.is_empty() {
            return Ok(());
        }
        let write = |conn: &mut Connection| -> rusqlite::Result<()> {
            let tx = conn.transaction()?;
            {
                let mut stmt = tx.prepare_cached(
                    "INSERT OR REPLACE INTO copies (path, kind, hash, target, size, mtime_ns, mode)
                     VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7)",
                )?;
                for r in records {
                    let (kind, hash, target, size) = match &r.held {
                        Held::File { hash, size } => (0, Some(hash.as_slice()), None, *size),
                        Held::Dir => (1, None, None, 0),
                        Held::Symlink { target } => (2, None, Some(target.as_slice()), 0),
                    };
                    stmt.execute(params![
                        r.path.as_bytes(),
                        kind,
                        hash,
                        target,
                        size as i64,
                        r.mtime_ns,
                        r.mode
                    ])?;
                }
            }
            tx.commit()
        };
        write(&mut self.conn).map_err(|e| CopiesError::Book {
            path: self.path.clone(),
            source: e,
        })
    }

    /// Forgets `paths` and everything recorded below them. One transaction.
    pub fn forget(&mut self, paths: &[RelPath]) -> Result<(), CopiesError> {
        if paths.is_empty() {
            return Ok(());
        }
        let write = |conn: &mut Connection| -> rusqlite::Result<()> {
            let tx = conn.transaction()?;
            {
                // Children of `p` are the paths in [`p/`, `p0`): `0` follows `/`.
                let mut stmt = tx.prepare_cached(
                    "DELETE FROM copies WHERE path = ?1 OR (path >= ?2 AND path < ?3)",
                )?;
                for p in paths {
                    let lo = [p.as_bytes(), b"/"].concat();
                    let hi = [p.as_bytes(), b"0"].concat();
                    stmt.execute(params![p.as_bytes(), lo, hi])?;
                }
            }
            tx.commit()
        };
        write(&mut self.conn).map_err(|e| CopiesError::Book {
            path: self.path.clone(),
            source: e,
        })
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used)] // a failing unwrap is a failing test
mod tests {
    use super::*;

    fn rel(s: &str) -> RelPath {
        RelPath::from_bytes(s).unwrap()
    }

    #[test]
    fn records_survive_reopen_and_forget_takes_children() {
        let dir = tempfile::tempdir().unwrap();
        let mut book = Book::open(dir.path()).unwrap();
        let rec = |p: &str, held| CopyRecord {
            path: rel(p),
            held,
            mtime_ns: -5,
            mode: 0o640,
        };
        book.record(&[
            rec("d", Held::Dir),
            rec(
                "d/f",
                Held::File {
                    hash: [7; 32],
                    size: 3,
                },
            ),
            rec(
                "d0",
                Held::Symlink {
                    target: b"t\xff".to_vec(),
                },
            ),
        ])
        .unwrap();
        drop(book);
        let book = Book::open_existing(dir.path()).unwrap().unwrap();
        let all = book.all().unwrap();
        assert_eq!(all.len(), 3);
        assert_eq!(
            all[1].held,
            Held::File {
                hash: [7; 32],
                size: 3
            }
        );
        assert_eq!((all[2].mtime_ns, all[2].mode), (-5, 0o640));
        drop(book);
        let mut book = Book::open(dir.path()).unwrap();
        book.forget(&[rel("d")]).unwrap();
        let left: Vec<_> = book.all().unwrap().into_iter().map(|r| r.path).collect();
        assert_eq!(left, [rel("d0")]);
        // Nothing but the file itself stays beside it.
        let names: Vec<_> = std::fs::read_dir(dir.path())
            .unwrap()
            .map(|e| e.unwrap().file_name())
            .collect();
        assert_eq!(names, [BOOK_FILE]);
        assert!(Book::open_existing(&dir.path().join("none"))
            .unwrap()
            .is_none());
    }
}
