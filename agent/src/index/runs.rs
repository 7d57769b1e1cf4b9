//! The sender's own history of runs, per target.

use rusqlite::params;

use super::{Index, IndexError};

/// The sender's record of one of its runs, in its own history (the
/// receiver's record of a run is the store's `CatalogRun`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SenderRun {
    /// Row id (ignored by [`Index::record_run`]).
    pub id: i64,
    /// Start, milliseconds since the Unix epoch.
    pub started_ms: i64,
    /// End, milliseconds since the Unix epoch.
    pub finished_ms: i64,
    /// Files, directories and symlinks sent.
    pub files_sent: u64,
    /// Entries found unchanged.
    pub files_unchanged: u64,
    /// Paths deleted on the receiver.
    pub files_deleted: u64,
    /// The files' own size (the sum of the sizes of the files sent);
    /// `None` for runs recorded before Ferry kept it.
    pub bytes_file_data: Option<u64>,
    /// What the files' content took on the wire, after compression.
    pub bytes_file_data_wire: u64,
    /// Bytes sent on the connection in total.
    pub bytes_on_wire: u64,
    /// Number of per-file errors.
    pub errors: u64,
    /// The receiver's run id, if the run got that far.
    pub receiver_run: Option<u64>,
    /// How the run ended (e.g. `"ok"`, `"partial"`, `"failed: ..."`).
    pub outcome: String,
}

impl Index {
    /// Appends a run to this target's history; returns its id (`run.id` is
    /// ignored).
    pub fn record_run(&mut self, run: &SenderRun) -> Result<i64, IndexError> {
        self.conn
            .execute(
                "INSERT INTO runs (target, started_ms, finished_ms, files_sent, files_unchanged,
                 files_deleted, bytes_file_data, bytes_on_wire, errors, receiver_run, outcome,
                 bytes_data_wire)
                 VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9, ?10, ?11, ?12)",
                params![
                    self.target,
                    run.started_ms,
                    run.finished_ms,
                    run.files_sent as i64,
                    run.files_unchanged as i64,
                    run.files_deleted as i64,
                    run.bytes_file_data.map(|b| b as i64),
                    run.bytes_on_wire as i64,
                    run.errors as i64,
                    run.receiver_run.map(|r| r as i64),
                    run.outcome,
                    run.bytes_file_data_wire as i64,
                ],
            )
            .map_err(|e| self.sql("recording a run", e))?;
        Ok(self.conn.last_insert_rowid())
    }

    /// This target's runs, newest first.
    pub fn runs(&self) -> Result<Vec<SenderRun>, IndexError> {
        let what = "reading runs";
        let mut stmt = self
            .conn
            .prepare_cached(
                "SELECT id, started_ms, finished_ms, files_sent, files_unchanged, files_deleted,
                 bytes_file_data, bytes_on_wire, errors, receiver_run, outcome, bytes_data_wire
                 FROM runs WHERE target = ?1 ORDER BY id DESC",
            )
            .map_err(|e| self.sql(what, e))?;
        let rows = stmt
            .query_map([&self.target], |r| {
                Ok(SenderRun {
                    id: r.get(0)?,
                    started_ms: r.get(1)?,
                    finished_ms: r.get(2)?,
                    files_sent: r.get::<_, i64>(3)? as u64,
                    files_unchanged: r.get::<_, i64>(4)? as u64,
                    files_deleted: r.get::<_, i64>(5)? as u64,
                    bytes_file_data: r.get::<_, Option<i64>>(6)?.map(|v| v as u64),
                    bytes_file_data_wire: r.get::<_, i64>(11)? as u64,
                    bytes_on_wire: r.get::<_, i64>(7)? as u64,
                    errors: r.get::<_, i64>(8)? as u64,
                    receiver_run: r.get::<_, Option<i64>>(9)?.map(|v| v as u64),
                    outcome: r.get(10)?,
                })
            })
            .map_err(|e| self.sql(what, e))?;
        rows.collect::<Result<_, _>>()
            .map_err(|e| self.sql(what, e))
    }
}

impl Index {
    /// The runs of every target in this index file (receiver id and
    /// folder), newest first: the sender's whole local history.
    pub fn runs_of_all_targets(&self) -> Result<Vec<(String, SenderRun)>, IndexError> {
        let what = "reading runs";
        let mut stmt = self
            .conn
            .prepare_cached(
                "SELECT id, started_ms, finished_ms, files_sent, files_unchanged, files_deleted,
                 bytes_file_data, bytes_on_wire, errors, receiver_run, outcome, target,
                 bytes_data_wire
                 FROM runs ORDER BY id DESC",
            )
            .map_err(|e| self.sql(what, e))?;
        let rows = stmt
            .query_map([], |r| {
                let count = |i: usize| -> rusqlite::Result<u64> {
                    Ok(u64::try_from(r.get::<_, i64>(i)?).unwrap_or(0))
                };
                Ok((
                    r.get::<_, String>(11)?,
                    SenderRun {
                        id: r.get(0)?,
                        started_ms: r.get(1)?,
                        finished_ms: r.get(2)?,
                        files_sent: count(3)?,
                        files_unchanged: count(4)?,
                        files_deleted: count(5)?,
                        bytes_file_data: r
                            .get::<_, Option<i64>>(6)?
                            .and_then(|v| u64::try_from(v).ok()),
                        bytes_file_data_wire: count(12)?,
                        bytes_on_wire: count(7)?,
                        errors: count(8)?,
                        receiver_run: r
                            .get::<_, Option<i64>>(9)?
                            .and_then(|v| u64::try_from(v).ok()),
                        outcome: r.get(10)?,
                    },
                ))
            })
            .map_err(|e| self.sql(what, e))?;
        rows.collect::<Result<_, _>>()
            .map_err(|e| self.sql(what, e))
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used, clippy::expect_used)] // tests fail loudly
mod tests {
    use super::*;

    fn run(started_ms: i64, outcome: &str) -> SenderRun {
        SenderRun {
            id: 0,
            started_ms,
            finished_ms: started_ms + 5,
            files_sent: 3,
            files_unchanged: 4,
            files_deleted: 1,
            bytes_file_data: Some(1 << 40),
            bytes_file_data_wire: 1 << 30,
            bytes_on_wire: u64::MAX,
            errors: 0,
            receiver_run: Some(9),
            outcome: outcome.into(),
        }
    }

    #[test]
    fn runs_newest_first_per_target() {
        let dir = tempfile::tempdir().unwrap();
        let db = dir.path().join("i.db");
        let mut index = Index::open(&db, "t").unwrap();
        let first = index.record_run(&run(100, "ok")).unwrap();
        let second = index
            .record_run(&SenderRun {
                receiver_run: None,
                ..run(100, "failed")
            })
            .unwrap();
        assert!(second > first);
        Index::open(&db, "other")
            .unwrap()
            .record_run(&run(1, "x"))
            .unwrap();
        let runs = Index::open(&db, "t").unwrap().runs().unwrap();
        assert_eq!(runs.len(), 2);
        let all = Index::open(&db, "t")
            .unwrap()
            .runs_of_all_targets()
            .unwrap();
        assert_eq!(all.len(), 3);
        assert_eq!(all[0].0, "other");
        assert_eq!(runs[0].id, second);
        assert_eq!(runs[0].outcome, "failed");
        assert_eq!(runs[0].receiver_run, None);
        assert_eq!(
            runs[1],
            SenderRun {
                id: first,
                ..run(100, "ok")
            }
        );
    }

    #[test]
    fn an_index_of_schema_1_opens_and_its_runs_keep_their_wire_figure() {
        let dir = tempfile::tempdir().unwrap();
        let db = dir.path().join("i.db");
        // The version 1 runs table, as an older Ferry made it.
        let conn = rusqlite::Connection::open(&db).unwrap();
        conn.execute_batch(
            "CREATE TABLE runs (
                id INTEGER PRIMARY KEY AUTOINCREMENT, target TEXT NOT NULL,
                started_ms INTEGER NOT NULL, finished_ms INTEGER NOT NULL,
                files_sent INTEGER NOT NULL, files_unchanged INTEGER NOT NULL,
                files_deleted INTEGER NOT NULL, bytes_file_data INTEGER NOT NULL,
                bytes_on_wire INTEGER NOT NULL, errors INTEGER NOT NULL,
                receiver_run INTEGER, outcome TEXT NOT NULL);
             INSERT INTO runs VALUES (NULL, 't', 1, 2, 3000, 0, 0, 48230, 260000, 0, 7, 'complete');
             PRAGMA user_version = 1;",
        )
        .unwrap();
        drop(conn);
        let mut index = Index::open(&db, "t").unwrap();
        let old = &index.runs().unwrap()[0];
        assert_eq!(
            old.bytes_file_data, None,
            "the files' size was not recorded"
        );
        assert_eq!(old.bytes_file_data_wire, 48230);
        assert_eq!(old.bytes_on_wire, 260000);
        index.record_run(&run(5, "complete")).unwrap();
        drop(index);
        let index = Index::open(&db, "t").unwrap();
        let runs = index.runs().unwrap();
        assert_eq!(runs[0].bytes_file_data, Some(1 << 40));
        assert_eq!(runs[0].bytes_file_data_wire, 1 << 30);
        assert_eq!(index.runs_of_all_targets().unwrap().len(), 2);
    }
}
