//! The runs' table: opening and closing runs, listing them, and marking
//! those a killed process left running.

use ferry_proto::{Name, RunReport};
use rusqlite::params;

use super::{sql_u64, Catalog};
use crate::store::error::StoreError;

/// A run's row, with its sender's name.
pub(crate) struct CatalogRun {
    pub id: i64,
    pub sender: String,
    pub folder: String,
    pub started_ms: i64,
    pub finished_ms: Option<i64>,
    pub status: String,
    pub report: RunReport,
    pub bytes_received: i64,
}

/// How a run ended.
pub(crate) struct RunEnd<'a> {
    pub report: &'a RunReport,
    pub bytes_received: u64,
    pub status: &'a str,
    pub finished_ms: i64,
}

impl Catalog {
    /// True if any run was ever recorded.
    pub fn has_runs(&self) -> Result<bool, StoreError> {
        self.conn
            .query_row("SELECT EXISTS(SELECT 1 FROM runs)", [], |r| r.get(0))
            .map_err(|e| self.err(e))
    }

    /// Marks runs a killed process left `running` as `interrupted`. Writes
    /// only if there are any: after a clean stop, opening the store commits
    /// nothing (and syncs nothing).
    pub fn interrupt_running(&self) -> Result<usize, StoreError> {
        let any: bool = self
            .conn
            .query_row(
                "SELECT EXISTS (SELECT 1 FROM runs WHERE status = 'running')",
                [],
                |r| r.get(0),
            )
            .map_err(|e| self.err(e))?;
        if !any {
            return Ok(0);
        }
        self.conn
            .execute(
                "UPDATE runs SET status = 'interrupted' WHERE status = 'running'",
                [],
            )
            .map_err(|e| self.err(e))
    }

    /// True if the sender has a run of `folder`.
    pub fn folder_known(&self, sender_id: i64, folder: &Name) -> Result<bool, StoreError> {
        self.conn
            .query_row(
                "SELECT EXISTS (SELECT 1 FROM runs WHERE sender_id = ?1 AND folder = ?2)",
                params![sender_id, folder.as_str()],
                |r| r.get(0),
            )
            .map_err(|e| self.err(e))
    }

    /// Opens a run.
    pub fn begin_run(&self, sender_id: i64, folder: &Name, now_ms: i64) -> Result<i64, StoreError> {
        self.conn
            .execute(
                "INSERT INTO runs (sender_id, folder, started_ms, status) VALUES (?1, ?2, ?3, 'running')",
                params![sender_id, folder.as_str(), now_ms],
            )
            .map_err(|e| self.err(e))?;
        Ok(self.conn.last_insert_rowid())
    }

    /// Closes a run of this namespace; false if there is no such run.
    pub fn finish_run(
        &self,
        sender_id: i64,
        folder: &Name,
        run: i64,
        end: &RunEnd<'_>,
    ) -> Result<bool, StoreError> {
        let report = end.report;
        let n = self
            .conn
            .execute(
                "UPDATE runs SET finished_ms = ?1, status = ?2, files_sent = ?3, files_unchanged = ?4,
                 files_deleted = ?5, bytes_file_data = ?6, bytes_received = ?7, errors = ?8
                 WHERE id = ?9 AND sender_id = ?10 AND folder = ?11",
                params![
                    end.finished_ms,
                    end.status,
                    sql_u64(report.files_sent),
                    sql_u64(report.files_unchanged),
                    sql_u64(report.files_deleted),
                    sql_u64(report.bytes_file_data),
                    sql_u64(end.bytes_received),
                    sql_u64(report.errors),
                    run,
                    sender_id,
                    folder.as_str()
                ],
            )
            .map_err(|e| self.err(e))?;
        Ok(n == 1)
    }

    /// Runs, newest first, of one sender or of all.
    pub fn runs(&self, sender: Option<i64>) -> Result<Vec<CatalogRun>, StoreError> {
        let sql = "SELECT r.id, s.name, r.folder, r.started_ms, r.finished_ms, r.status,
                   r.files_sent, r.files_unchanged, r.files_deleted, r.bytes_file_data, r.errors,
                   r.bytes_received
                   FROM runs r JOIN senders s ON s.id = r.sender_id
                   WHERE ?1 IS NULL OR r.sender_id = ?1 ORDER BY r.id DESC";
        let read = || -> rusqlite::Result<Vec<CatalogRun>> {
            let mut stmt = self.conn.prepare(sql)?;
            let rows = stmt.query_map([sender], |r| {
                let count = |i: usize| -> rusqlite::Result<u64> {
                    Ok(u64::try_from(r.get::<_, i64>(i)?).unwrap_or(0))
                };
                Ok(CatalogRun {
                    id: r.get(0)?,
                    sender: r.get(1)?,
                    folder: r.get(2)?,
                    started_ms: r.get(3)?,
                    finished_ms: r.get(4)?,
                    status: r.get(5)?,
                    report: RunReport {
                        files_sent: count(6)?,
                        files_unchanged: count(7)?,
                        files_deleted: count(8)?,
                        bytes_file_data: count(9)?,
                        errors: count(10)?,
                    },
                    bytes_received: r.get(11)?,
                })
            })?;
            rows.collect()
        };
        read().map_err(|e| self.err(e))
    }
}
