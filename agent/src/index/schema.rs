//! The index's SQLite schema: the tables, their version, and bringing an
//! older file up to date.

use super::{Index, IndexError};

/// Schema version stored in `PRAGMA user_version`.
pub(super) const SCHEMA_VERSION: i64 = 2;

/// From version 1: `runs.bytes_file_data` held what the content took on the
/// wire (compressed); it becomes `bytes_data_wire`, and `bytes_file_data`
/// (the files' own size) is unknown (NULL) for those runs.
const MIGRATE_1_TO_2: &str = "
ALTER TABLE runs RENAME COLUMN bytes_file_data TO bytes_data_wire;
ALTER TABLE runs ADD COLUMN bytes_file_data INTEGER;
";

pub(super) const SCHEMA: &str = "
CREATE TABLE IF NOT EXISTS entries (
    target      TEXT    NOT NULL,
    path        BLOB    NOT NULL,
    kind        INTEGER NOT NULL,  -- 0 file, 1 dir, 2 symlink
    link_target BLOB,
    size        INTEGER NOT NULL,
    mtime_ns    INTEGER NOT NULL,
    mode        INTEGER NOT NULL,
    ino         INTEGER NOT NULL,
    hash        BLOB,
    PRIMARY KEY (target, path)
) WITHOUT ROWID;
CREATE TABLE IF NOT EXISTS runs (
    id              INTEGER PRIMARY KEY AUTOINCREMENT,
    target          TEXT    NOT NULL,
    started_ms      INTEGER NOT NULL,
    finished_ms     INTEGER NOT NULL,
    files_sent      INTEGER NOT NULL,
    files_unchanged INTEGER NOT NULL,
    files_deleted   INTEGER NOT NULL,
    bytes_data_wire INTEGER NOT NULL,  -- file content on the wire, compressed
    bytes_on_wire   INTEGER NOT NULL,
    errors          INTEGER NOT NULL,
    receiver_run    INTEGER,
    outcome         TEXT    NOT NULL,
    bytes_file_data INTEGER            -- the files' own size; NULL: not recorded
);
CREATE INDEX IF NOT EXISTS runs_by_target ON runs (target, id);
CREATE TABLE IF NOT EXISTS chunk_lists (
    target    TEXT NOT NULL,
    path      BLOB NOT NULL,
    file_hash BLOB NOT NULL,
    first     BLOB NOT NULL,
    list      BLOB NOT NULL,
    PRIMARY KEY (target, path)
) WITHOUT ROWID;
CREATE INDEX IF NOT EXISTS chunk_lists_first ON chunk_lists (target, first);
CREATE TABLE IF NOT EXISTS acked_runs (
    target TEXT PRIMARY KEY,
    run    INTEGER NOT NULL  -- the receiver's id of the newest run that acknowledged something
) WITHOUT ROWID;
";

impl Index {
    /// Creates the schema in a fresh file, or brings an older one up to
    /// date, under a write lock so two processes opening the index at once
    /// do not trip over each other.
    pub(super) fn create_schema(&self) -> Result<(), IndexError> {
        let what = "creating the schema";
        let path = self.path.clone();
        self.conn
            .execute_batch("BEGIN IMMEDIATE")
            .map_err(|e| self.sql(what, e))?;
        let result = (|| {
            let version: i64 = self
                .conn
                .query_row("PRAGMA user_version", [], |r| r.get(0))?;
            if version == 0 {
                let tables: i64 =
                    self.conn
                        .query_row("SELECT count(*) FROM sqlite_master", [], |r| r.get(0))?;
                if tables > 0 {
                    return Ok(Err(IndexError::NotAnIndex { path }));
                }
                self.conn.execute_batch(SCHEMA)?;
                self.conn
                    .execute_batch(&format!("PRAGMA user_version = {SCHEMA_VERSION}"))?;
            } else if version == 1 {
                self.conn.execute_batch(MIGRATE_1_TO_2)?;
                self.conn
                    .execute_batch(&format!("PRAGMA user_version = {SCHEMA_VERSION}"))?;
            }
            Ok(Ok(()))
        })();
        match result {
            Ok(Ok(())) => self
                .conn
                .execute_batch("COMMIT")
                .map_err(|e| self.sql(what, e)),
            Ok(Err(err)) => {
                let _ = self.conn.execute_batch("ROLLBACK");
                Err(err)
            }
            Err(err) => {
                let _ = self.conn.execute_batch("ROLLBACK");
                Err(self.sql(what, err))
            }
        }
    }
}
