//! The runs' table: opening and closing runs, listing them, and marking
//! those a killed process left running.

use ferry_proto::{Name, RunReport};
use rusqlite::{params, OptionalExtension};

use super::{sql_u64, Catalog};
use crate::store::error::StoreError;

/// How many run ids a recovered catalog skips ([`Catalog::mark_recovered`]):
/// more than the runs a receiver can have begun between two catalog copies,
/// so that no new run takes the id of one the copy missed.
pub(crate) const RUN_IDS_SKIPPED: i64 = 1_000_000;

/// The `lo-hi` ranges of the `lost_runs` setting (`hi` excluded).
fn lost_ranges(value: Option<&str>) -> impl Iterator<Item = (i64, i64)> + '_ {
    value.unwrap_or("").split(',').filter_map(|range| {
        let (lo, hi) = range.split_once('-')?;
        Some((lo.trim().parse().ok()?, hi.trim().parse().ok()?))
    })
}

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

    /// Opens a run. Its id is above every id this catalog gave and at least
    /// the floor a recovery set ([`Catalog::mark_recovered`]).
    pub fn begin_run(&self, sender_id: i64, folder: &Name, now_ms: i64) -> Result<i64, StoreError> {
        self.conn
            .prepare_cached(
                "INSERT INTO runs (id, sender_id, folder, started_ms, status) VALUES (
                     MAX(IFNULL((SELECT MAX(id) FROM runs), 0) + 1,
                         IFNULL((SELECT CAST(value AS INTEGER) FROM receiver_settings
                                 WHERE key = 'run_floor'), 0)),
                     ?1, ?2, ?3, 'running')",
            )
            .and_then(|mut stmt| stmt.execute(params![sender_id, folder.as_str(), now_ms]))
            .map_err(|e| self.err(e))?;
        Ok(self.conn.last_insert_rowid())
    }

    /// True if this catalog holds everything run `run` of this sender and
    /// folder stored: the run is the namespace's own, and it is not one a
    /// recovery may have lost part of. A sender names the newest run it
    /// recorded an acknowledgement of ([`ferry_proto::Hello::last_run`]);
    /// false makes it offer everything again. False for a run this catalog
    /// never gave (its store was put back from an older copy).
    pub fn vouches_for(&self, sender_id: i64, folder: &Name, run: u64) -> Result<bool, StoreError> {
        let Ok(run) = i64::try_from(run) else {
            return Ok(false);
        };
        let lost: Option<String> = self
            .conn
            .query_row(
                "SELECT value FROM receiver_settings WHERE key = 'lost_runs'",
                [],
                |r| r.get(0),
            )
            .optional()
            .map_err(|e| self.err(e))?;
        if lost_ranges(lost.as_deref()).any(|(lo, hi)| lo <= run && run < hi) {
            return Ok(false);
        }
        let owner: Option<(i64, String)> = self
            .conn
            .prepare_cached("SELECT sender_id, folder FROM runs WHERE id = ?1")
            .and_then(|mut stmt| {
                stmt.query_row([run], |r| Ok((r.get(0)?, r.get(1)?)))
                    .optional()
            })
            .map_err(|e| self.err(e))?;
        Ok(owner.is_some_and(|(s, f)| s == sender_id && f == folder.as_str()))
    }

    /// Records that this catalog was recovered from a copy: the runs that
    /// were under way when the copy was taken, and any run after it, may have
    /// stored more than the copy knows. Their ids are noted as lost, and new
    /// runs are numbered past them ([`RUN_IDS_SKIPPED`]), so that a sender
    /// whose newest acknowledged run is one of them is told to offer
    /// everything again ([`Catalog::vouches_for`]). Returns the lost range.
    pub fn mark_recovered(&self) -> Result<(i64, i64), StoreError> {
        let tx = self.conn.unchecked_transaction().map_err(|e| self.err(e))?;
        let next: i64 = tx
            .query_row("SELECT IFNULL(MAX(id), 0) + 1 FROM runs", [], |r| r.get(0))
            .map_err(|e| self.err(e))?;
        let lo: i64 = tx
            .query_row(
                "SELECT IFNULL(MIN(id), ?1) FROM runs WHERE status = 'running'",
                [next],
                |r| r.get(0),
            )
            .map_err(|e| self.err(e))?;
        let hi = next + RUN_IDS_SKIPPED;
        let lost: Option<String> = tx
            .query_row(
                "SELECT value FROM receiver_settings WHERE key = 'lost_runs'",
                [],
                |r| r.get(0),
            )
            .optional()
            .map_err(|e| self.err(e))?;
        let lost = match lost {
            Some(before) if !before.is_empty() => format!("{before},{lo}-{hi}"),
            _ => format!("{lo}-{hi}"),
        };
        for (key, value) in [("lost_runs", lost), ("run_floor", hi.to_string())] {
            tx.execute(
                "INSERT INTO receiver_settings (key, value) VALUES (?1, ?2)
                 ON CONFLICT (key) DO UPDATE SET value = excluded.value",
                params![key, value],
            )
            .map_err(|e| self.err(e))?;
        }
        tx.commit().map_err(|e| self.err(e))?;
        Ok((lo, hi))
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
