//! Reading version rows: a path's rows, the current rows of a namespace,
//! whether a run changed anything, a version's chunk list.

use ferry_proto::{Hash, Name, RelPath};
use rusqlite::{params, OptionalExtension, Row as SqlRow};

use super::Catalog;
use crate::store::error::StoreError;

/// A version's row.
#[derive(Debug, Clone)]
pub(crate) struct VersionRow {
    pub id: i64,
    pub path: Vec<u8>,
    pub kind: String,
    pub size: i64,
    pub mtime_ns: i64,
    pub mode: i64,
    pub hash: Option<Vec<u8>>,
    pub target: Option<Vec<u8>>,
    pub run_id: i64,
    pub replaced_run: Option<i64>,
    pub deleted: bool,
    pub archive: Option<Vec<u8>>,
}

/// The columns [`version_row`] reads, in its order.
pub(crate) const VERSION_COLUMNS: &str =
    "id, path, kind, size, mtime_ns, mode, hash, target, run_id, replaced_run, deleted, archive";

pub(crate) fn version_row(row: &SqlRow<'_>) -> rusqlite::Result<VersionRow> {
    Ok(VersionRow {
        id: row.get(0)?,
        path: bytes(row, 1)?.unwrap_or_default(),
        kind: row.get(2)?,
        size: row.get(3)?,
        mtime_ns: row.get(4)?,
        mode: row.get(5)?,
        hash: bytes(row, 6)?,
        target: bytes(row, 7)?,
        run_id: row.get(8)?,
        replaced_run: row.get(9)?,
        deleted: row.get(10)?,
        archive: bytes(row, 11)?,
    })
}

/// A byte-string column, also when it was written as text (by hand, with
/// the `sqlite3` shell): one such row must not make the catalog unreadable.
fn bytes(row: &SqlRow<'_>, idx: usize) -> rusqlite::Result<Option<Vec<u8>>> {
    use rusqlite::types::{FromSqlError, ValueRef};
    match row.get_ref(idx)? {
        ValueRef::Null => Ok(None),
        ValueRef::Blob(b) | ValueRef::Text(b) => Ok(Some(b.to_vec())),
        other => Err(rusqlite::Error::FromSqlConversionFailure(
            idx,
            other.data_type(),
            Box::new(FromSqlError::InvalidType),
        )),
    }
}

impl Catalog {
    fn version_query(
        &self,
        sql: &str,
        args: impl rusqlite::Params,
    ) -> Result<Vec<VersionRow>, StoreError> {
        let read = || -> rusqlite::Result<Vec<VersionRow>> {
            let mut stmt = self.conn.prepare_cached(sql)?;
            let rows = stmt.query_map(args, version_row)?;
            rows.collect()
        };
        read().map_err(|e| self.err(e))
    }

    /// The current row of `path`, if any.
    pub fn current_row(
        &self,
        sender_id: i64,
        folder: &Name,
        path: &RelPath,
    ) -> Result<Option<VersionRow>, StoreError> {
        let sql = format!(
            "SELECT {VERSION_COLUMNS} FROM versions WHERE sender_id = ?1 AND folder = ?2 AND path = ?3
             AND replaced_run IS NULL ORDER BY id DESC LIMIT 1"
        );
        let mut rows =
            self.version_query(&sql, params![sender_id, folder.as_str(), path.as_bytes()])?;
        Ok(rows.pop())
    }

    /// Every row of `path`, newest first.
    pub fn path_rows(
        &self,
        sender_id: i64,
        folder: &Name,
        path: &RelPath,
    ) -> Result<Vec<VersionRow>, StoreError> {
        self.path_rows_raw(sender_id, folder, path.as_bytes())
    }

    /// Every row of the path whose bytes are `path` (which may not decode),
    /// newest first.
    pub fn path_rows_raw(
        &self,
        sender_id: i64,
        folder: &Name,
        path: &[u8],
    ) -> Result<Vec<VersionRow>, StoreError> {
        let sql = format!(
            "SELECT {VERSION_COLUMNS} FROM versions WHERE sender_id = ?1 AND folder = ?2 AND path = ?3
             ORDER BY id DESC"
        );
        self.version_query(&sql, params![sender_id, folder.as_str(), path])
    }

    /// The current rows of a namespace, in path order; only directories if
    /// `dirs_only`.
    pub fn current_rows(
        &self,
        sender_id: i64,
        folder: &Name,
        dirs_only: bool,
    ) -> Result<Vec<VersionRow>, StoreError> {
        let sql = format!(
            "SELECT {VERSION_COLUMNS} FROM versions WHERE sender_id = ?1 AND folder = ?2
             AND replaced_run IS NULL AND (?3 = 0 OR kind = 'dir') ORDER BY path"
        );
        self.version_query(&sql, params![sender_id, folder.as_str(), dirs_only])
    }

    /// True if `run` added or retired any version in the namespace.
    pub fn run_changed(&self, sender_id: i64, folder: &Name, run: i64) -> Result<bool, StoreError> {
        self.conn
            .query_row(
                "SELECT EXISTS(SELECT 1 FROM versions WHERE sender_id = ?1 AND folder = ?2
                 AND (run_id = ?3 OR replaced_run = ?3))",
                params![sender_id, folder.as_str(), run],
                |row| row.get(0),
            )
            .map_err(|e| self.err(e))
    }

    /// The chunk list of the newest version of `path` with content `hash`
    /// that has one.
    pub fn chunk_list(
        &self,
        sender_id: i64,
        folder: &Name,
        path: &RelPath,
        hash: &Hash,
    ) -> Result<Option<Vec<u8>>, StoreError> {
        self.conn
            .query_row(
                "SELECT c.list FROM versions v JOIN chunk_lists c ON c.version_id = v.id
                 WHERE v.sender_id = ?1 AND v.folder = ?2 AND v.path = ?3 AND v.hash = ?4
                 ORDER BY v.id DESC LIMIT 1",
                params![sender_id, folder.as_str(), path.as_bytes(), hash.as_slice()],
                |r| r.get(0),
            )
            .optional()
            .map_err(|e| self.err(e))
    }
}
