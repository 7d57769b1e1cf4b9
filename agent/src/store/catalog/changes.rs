//! Recording a store operation: its catalog changes (retire the current
//! row, insert a new one) applied in one transaction.

use ferry_proto::{Hash, Name, RelPath};
use rusqlite::params;

use super::{sql_u64, Catalog};
use crate::store::error::StoreError;

/// A new version to record.
#[derive(Debug, Clone)]
pub(crate) struct NewVersion {
    pub path: RelPath,
    pub kind: &'static str,
    pub size: u64,
    pub mtime_ns: i64,
    pub mode: u32,
    pub hash: Option<Hash>,
    pub target: Option<Vec<u8>>,
    /// The encoded chunk list of chunked content ([`crate::chunk::encode_list`]).
    pub chunks: Option<Vec<u8>>,
    /// Bytes the content takes on disk, if fewer than `size` (holes).
    pub stored: Option<u64>,
}

impl NewVersion {
    /// The row of directory `entry` (the mirror's and a bucket's alike).
    pub(crate) fn dir(entry: &ferry_proto::Entry) -> NewVersion {
        NewVersion {
            path: entry.path.clone(),
            kind: "dir",
            size: 0,
            mtime_ns: entry.mtime_ns,
            mode: entry.mode,
            hash: None,
            target: None,
            chunks: None,
            stored: None,
        }
    }

    /// The row of symlink `entry` pointing at `target`.
    pub(crate) fn symlink(entry: &ferry_proto::Entry, target: &[u8]) -> NewVersion {
        NewVersion {
            path: entry.path.clone(),
            kind: "symlink",
            size: target.len() as u64,
            mtime_ns: entry.mtime_ns,
            mode: entry.mode,
            hash: None,
            target: Some(target.to_vec()),
            chunks: None,
            stored: None,
        }
    }
}

/// What a [`Change::Retire`] does to the current rows below its path.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) enum Below {
    /// They stay current: what moved was not a directory holding them (a
    /// file or symlink; or the directory they are in stays).
    Untouched,
    /// A directory moved to this archive (relative to STORE) with them in
    /// it: each is retired as deleted, its archive the same suffix below it.
    Moved(Vec<u8>),
    /// Nothing is left of them: retired as deleted, without an archive.
    Gone,
}

/// One catalog change of a store operation; the changes of one operation are
/// applied in one transaction, after the filesystem work is done.
#[derive(Debug, Clone)]
pub(crate) enum Change {
    /// The current row at `path` is no longer current: its bytes were
    /// moved to `archive` (relative to STORE), or, with `archive: None`,
    /// they are the same as the next version's (or were already gone from
    /// the mirror). `below` says what became of the current rows below
    /// `path`.
    Retire {
        path: RelPath,
        archive: Option<Vec<u8>>,
        deleted: bool,
        below: Below,
    },
    /// A new current version.
    Insert(NewVersion),
}

/// The half-open byte range `[path + "/", path + "0")` that holds exactly the
/// paths strictly below `path` (`'0'` is the byte after `'/'`).
fn below(path: &RelPath) -> (Vec<u8>, Vec<u8>) {
    let mut lo = path.as_bytes().to_vec();
    let mut hi = lo.clone();
    lo.push(b'/');
    hi.push(b'0');
    (lo, hi)
}

impl Catalog {
    /// Applies the changes of one store operation in one transaction.
    pub fn apply(
        &mut self,
        sender_id: i64,
        folder: &Name,
        run: i64,
        changes: &[Change],
    ) -> Result<(), StoreError> {
        let folder = folder.as_str();
        let result = (|| -> rusqlite::Result<()> {
            let tx = self.conn.transaction()?;
            apply_changes(&tx, sender_id, folder, run, changes)?;
            tx.commit()
        })();
        result.map_err(|e| self.err(e))
    }
}

/// Applies the changes of one store operation inside `tx` (a bucket
/// store's batch records all its operations in one transaction, each seeing
/// the ones before it).
pub(crate) fn apply_changes(
    tx: &rusqlite::Transaction<'_>,
    sender_id: i64,
    folder: &str,
    run: i64,
    changes: &[Change],
) -> rusqlite::Result<()> {
    for change in changes {
        match change {
            Change::Retire {
                path,
                archive,
                deleted,
                below: what_below,
            } => {
                tx.prepare_cached(
                    "UPDATE versions SET replaced_run = ?1, deleted = ?2, archive = ?3
                     WHERE sender_id = ?4 AND folder = ?5 AND path = ?6 AND replaced_run IS NULL",
                )?
                .execute(params![
                    run,
                    deleted,
                    archive,
                    sender_id,
                    folder,
                    path.as_bytes()
                ])?;
                let moved_to = match what_below {
                    Below::Untouched => continue,
                    Below::Moved(to) => Some(to),
                    Below::Gone => None,
                };
                let (lo, hi) = below(path);
                let children: Vec<(i64, Vec<u8>)> = {
                    let mut stmt = tx.prepare_cached(
                        "SELECT id, path FROM versions WHERE sender_id = ?1 AND folder = ?2
                         AND path >= ?3 AND path < ?4 AND replaced_run IS NULL",
                    )?;
                    let rows = stmt.query_map(params![sender_id, folder, lo, hi], |r| {
                        Ok((r.get(0)?, r.get(1)?))
                    })?;
                    rows.collect::<rusqlite::Result<_>>()?
                };
                for (id, child) in children {
                    let child_archive = moved_to.map(|a| {
                        let mut a = a.clone();
                        a.extend_from_slice(&child[path.as_bytes().len()..]);
                        a
                    });
                    tx.prepare_cached(
                        "UPDATE versions SET replaced_run = ?1, deleted = 1, archive = ?2 WHERE id = ?3",
                    )?
                    .execute(params![run, child_archive, id])?;
                }
            }
            Change::Insert(v) => {
                tx.prepare_cached(
                    "INSERT INTO versions (sender_id, folder, path, kind, size, mtime_ns, mode, hash,
                     target, run_id) VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9, ?10)",
                )?
                .execute(params![
                        sender_id,
                        folder,
                        v.path.as_bytes(),
                        v.kind,
                        sql_u64(v.size),
                        v.mtime_ns,
                        v.mode,
                        v.hash.as_ref().map(|h| h.as_slice()),
                        v.target,
                        run
                    ])?;
                let id = tx.last_insert_rowid();
                if let Some(list) = &v.chunks {
                    tx.prepare_cached(
                        "INSERT INTO chunk_lists (version_id, list) VALUES (?1, ?2)",
                    )?
                    .execute(params![id, list])?;
                }
                if let Some(stored) = v.stored.filter(|s| *s < v.size) {
                    tx.prepare_cached(
                        "INSERT INTO stored_sizes (version_id, stored) VALUES (?1, ?2)",
                    )?
                    .execute(params![id, sql_u64(stored)])?;
                }
            }
        }
    }
    Ok(())
}

#[cfg(test)]
#[allow(clippy::unwrap_used)] // a failing unwrap is a failing test
mod tests {
    use super::*;

    #[test]
    fn below_covers_exactly_the_subtree() {
        let (lo, hi) = below(&RelPath::from_bytes("a/b").unwrap());
        let inside = |p: &[u8]| p >= lo.as_slice() && p < hi.as_slice();
        assert!(inside(b"a/b/c"));
        assert!(inside(b"a/b/\xff"));
        assert!(!inside(b"a/b"));
        assert!(!inside(b"a/bc"));
        assert!(!inside(b"a/b.c"));
        assert!(!inside(b"a/b0"));
    }
}
