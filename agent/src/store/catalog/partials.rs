//! The partial transfers' table: chunked content kept in staging to resume.

use ferry_proto::{Name, RelPath};
use rusqlite::{params, OptionalExtension};

use super::{sql_u64, Catalog};
use crate::store::error::StoreError;

impl Catalog {
    /// The partial transfer kept for `path`: staging file name, durable
    /// length, encoded chunk list.
    pub fn partial(
        &self,
        sender_id: i64,
        folder: &Name,
        path: &RelPath,
    ) -> Result<Option<(String, i64, Vec<u8>)>, StoreError> {
        self.conn
            .query_row(
                "SELECT staging, len, list FROM partials
                 WHERE sender_id = ?1 AND folder = ?2 AND path = ?3",
                params![sender_id, folder.as_str(), path.as_bytes()],
                |r| Ok((r.get(0)?, r.get(1)?, r.get(2)?)),
            )
            .optional()
            .map_err(|e| self.err(e))
    }

    /// Records (or moves forward) a partial transfer.
    #[allow(clippy::too_many_arguments)] // one per column
    pub fn put_partial(
        &self,
        sender_id: i64,
        folder: &Name,
        path: &RelPath,
        staging: &str,
        len: u64,
        list: &[u8],
        now_ms: i64,
    ) -> Result<(), StoreError> {
        self.conn
            .execute(
                "INSERT OR REPLACE INTO partials (sender_id, folder, path, staging, len, list, updated_ms)
                 VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7)",
                params![sender_id, folder.as_str(), path.as_bytes(), staging, sql_u64(len), list, now_ms],
            )
            .map(|_| ())
            .map_err(|e| self.err(e))
    }

    /// Forgets the partial transfer of `path`, if its staging file is
    /// `staging` (any, if `None`).
    pub fn drop_partial(
        &self,
        sender_id: i64,
        folder: &Name,
        path: &RelPath,
        staging: Option<&str>,
    ) -> Result<(), StoreError> {
        self.conn
            .execute(
                "DELETE FROM partials WHERE sender_id = ?1 AND folder = ?2 AND path = ?3
                 AND (?4 IS NULL OR staging = ?4)",
                params![sender_id, folder.as_str(), path.as_bytes(), staging],
            )
            .map(|_| ())
            .map_err(|e| self.err(e))
    }

    /// Every partial transfer's staging file name and last update.
    pub fn partial_files(&self) -> Result<Vec<(String, i64)>, StoreError> {
        let mut stmt = self
            .conn
            .prepare("SELECT staging, updated_ms FROM partials")
            .map_err(|e| self.err(e))?;
        let rows = stmt
            .query_map([], |r| Ok((r.get(0)?, r.get(1)?)))
            .map_err(|e| self.err(e))?;
        rows.collect::<rusqlite::Result<_>>()
            .map_err(|e| self.err(e))
    }

    /// Forgets the partial transfers whose staging file is `staging`.
    pub fn drop_partial_file(&self, staging: &str) -> Result<(), StoreError> {
        self.conn
            .execute("DELETE FROM partials WHERE staging = ?1", params![staging])
            .map(|_| ())
            .map_err(|e| self.err(e))
    }
}
