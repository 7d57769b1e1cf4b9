//! The catalog: SQLite tables of senders, runs and versions.
//!
//! A version row describes one state of one path: what it was (`kind`, size,
//! mtime, mode, hash or link target), the run that stored it, and — once it is
//! no longer current — the run that replaced or deleted it and where its bytes
//! went (`archive`, relative to STORE). A row is *current* while
//! `replaced_run IS NULL`. A replaced row with no `archive` has the same
//! content as the next newer row of its path (a metadata-only change), so its
//! bytes are wherever that row's are.

use std::path::{Path, PathBuf};

use ferry_proto::{Hash, Name, RelPath, RunReport};
use rusqlite::{params, Connection, OpenFlags, OptionalExtension, Row as SqlRow};

use super::error::StoreError;

/// The schema version stored in `PRAGMA user_version`.
pub(crate) const SCHEMA_VERSION: i64 = 2;

const SCHEMA: &str = "
CREATE TABLE senders (
    id INTEGER PRIMARY KEY,
    device TEXT UNIQUE NOT NULL,
    name TEXT UNIQUE NOT NULL,
    added_ms INTEGER NOT NULL
);
CREATE TABLE runs (
    id INTEGER PRIMARY KEY,
    sender_id INTEGER NOT NULL REFERENCES senders(id),
    folder TEXT NOT NULL,
    started_ms INTEGER NOT NULL,
    finished_ms INTEGER,
    status TEXT NOT NULL,
    files_sent INTEGER NOT NULL DEFAULT 0,
    files_unchanged INTEGER NOT NULL DEFAULT 0,
    files_deleted INTEGER NOT NULL DEFAULT 0,
    bytes_file_data INTEGER NOT NULL DEFAULT 0,
    bytes_received INTEGER NOT NULL DEFAULT 0,
    errors INTEGER NOT NULL DEFAULT 0
);
CREATE TABLE versions (
    id INTEGER PRIMARY KEY,
    sender_id INTEGER NOT NULL REFERENCES senders(id),
    folder TEXT NOT NULL,
    path BLOB NOT NULL,
    kind TEXT NOT NULL,
    size INTEGER NOT NULL,
    mtime_ns INTEGER NOT NULL,
    mode INTEGER NOT NULL,
    hash BLOB,
    target BLOB,
    run_id INTEGER NOT NULL,
    replaced_run INTEGER,
    deleted INTEGER NOT NULL DEFAULT 0,
    archive BLOB
);
CREATE INDEX versions_path ON versions (sender_id, folder, path);
";

/// Bytes a file version takes on disk when that is less than its size (a
/// sparse file: holes are not stored). Rows without one count their size.
/// Created on open when missing: older catalogs simply have none.
const STORED_SIZES: &str = "
CREATE TABLE IF NOT EXISTS stored_sizes (
    version_id INTEGER PRIMARY KEY REFERENCES versions(id) ON DELETE CASCADE,
    stored INTEGER NOT NULL
);
";

/// Tables added in schema version 2 (delta transfer and resume).
const CHUNK_TABLES: &str = "
CREATE TABLE chunk_lists (
    version_id INTEGER PRIMARY KEY REFERENCES versions(id) ON DELETE CASCADE,
    list BLOB NOT NULL
);
CREATE TABLE partials (
    sender_id INTEGER NOT NULL REFERENCES senders(id),
    folder TEXT NOT NULL,
    path BLOB NOT NULL,
    staging TEXT NOT NULL,
    len INTEGER NOT NULL,
    list BLOB NOT NULL,
    updated_ms INTEGER NOT NULL,
    PRIMARY KEY (sender_id, folder, path)
);
";

/// A sender's row.
pub(crate) struct SenderRow {
    pub id: i64,
    pub device: String,
    pub name: String,
}

/// A run's row, with its sender's name.
pub(crate) struct RunRow {
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

/// The catalog connection and the file it lives in.
pub(crate) struct Catalog {
    conn: Connection,
    path: PathBuf,
}

impl std::fmt::Debug for Catalog {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Catalog")
            .field("path", &self.path())
            .finish()
    }
}

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

/// The half-open byte range `[path + "/", path + "0")` that holds exactly the
/// paths strictly below `path` (`'0'` is the byte after `'/'`).
fn below(path: &RelPath) -> (Vec<u8>, Vec<u8>) {
    let mut lo = path.as_bytes().to_vec();
    let mut hi = lo.clone();
    lo.push(b'/');
    hi.push(b'0');
    (lo, hi)
}

/// Converts a count for SQLite, saturating (SQLite integers are i64).
pub(crate) fn sql_u64(n: u64) -> i64 {
    i64::try_from(n).unwrap_or(i64::MAX)
}

/// True if the filesystem holding `path` has less than 1 MiB free (or
/// cannot say): too little for SQLite to map its WAL index and write.
fn disk_nearly_full(path: &Path) -> bool {
    let dir = path.parent().unwrap_or(Path::new("."));
    match rustix::fs::statvfs(dir) {
        Ok(st) => st.f_bavail.saturating_mul(st.f_frsize) < 1024 * 1024,
        Err(_) => true,
    }
}

/// `PRAGMA quick_check`'s findings (`["ok"]` when the file is sound), at
/// most ten.
fn quick_check(conn: &Connection) -> rusqlite::Result<Vec<String>> {
    let mut stmt = conn.prepare("PRAGMA quick_check(10)")?;
    let rows = stmt.query_map([], |r| r.get::<_, String>(0))?;
    rows.collect()
}

impl Catalog {
    /// Opens or creates the catalog at `path`. An existing file is checked
    /// (readable as SQLite, known schema) before anything is written to it.
    ///
    /// On a full disk the WAL's shared-memory index (`catalog.db-shm`, 32
    /// KiB) cannot be allocated, and nothing, not even a read, works through
    /// it: then the catalog is opened in exclusive locking mode, where SQLite
    /// keeps that index in the process's memory. Reads work; writes fail
    /// with [`StoreError::DiskFull`] until space is freed. Read-only tools
    /// (`ferry history --store`, `ferry verify`) cannot read beside a
    /// receiver in that mode; they can once it restarts with space.
    pub fn open(path: &Path) -> Result<Catalog, StoreError> {
        match Self::open_in(path, false) {
            Err(first) if disk_nearly_full(path) => match Self::open_in(path, true) {
                Ok(catalog) => {
                    tracing::warn!(
                        catalog = %path.display(),
                        "the disk is full: the catalog is open for reading only until space is freed (writes fail per file); read-only tools cannot read beside this receiver until it restarts"
                    );
                    Ok(catalog)
                }
                Err(_) => Err(first),
            },
            other => other,
        }
    }

    fn open_in(path: &Path, exclusive: bool) -> Result<Catalog, StoreError> {
        let flags = OpenFlags::SQLITE_OPEN_READ_WRITE
            | OpenFlags::SQLITE_OPEN_CREATE
            | OpenFlags::SQLITE_OPEN_NO_MUTEX;
        let conn =
            Connection::open_with_flags(path, flags).map_err(|source| StoreError::Catalog {
                path: path.to_path_buf(),
                source,
            })?;
        if exclusive {
            // Before the first access to the WAL, or SQLite maps the -shm file.
            conn.execute_batch("PRAGMA locking_mode = EXCLUSIVE;")
                .map_err(|source| StoreError::Catalog {
                    path: path.to_path_buf(),
                    source,
                })?;
        }
        let not_db = |source: rusqlite::Error| {
            if source.sqlite_error_code() == Some(rusqlite::ErrorCode::DatabaseCorrupt) {
                StoreError::DamagedCatalog {
                    path: path.to_path_buf(),
                    detail: source.to_string(),
                }
            } else {
                StoreError::NotADatabase {
                    path: path.to_path_buf(),
                    source,
                }
            }
        };
        // Reading the header first: a file that is not SQLite fails here,
        // before any write could touch it.
        let version: i64 = conn
            .query_row("PRAGMA user_version", [], |r| r.get(0))
            .map_err(not_db)?;
        let tables: i64 = conn
            .query_row("SELECT count(*) FROM sqlite_master", [], |r| r.get(0))
            .map_err(not_db)?;
        let fresh = version == 0 && tables == 0;
        if !fresh && version != SCHEMA_VERSION && version != 1 {
            return Err(StoreError::UnknownSchema {
                path: path.to_path_buf(),
                found: version,
                expected: SCHEMA_VERSION,
            });
        }
        if !fresh {
            // A damaged page deep in the file is not noticed until a query
            // reads it, possibly after history was written on top: check
            // every page now, before anything is written.
            let problems = quick_check(&conn).map_err(not_db)?;
            if problems.first().map(String::as_str) != Some("ok") {
                return Err(StoreError::DamagedCatalog {
                    path: path.to_path_buf(),
                    detail: problems.join("; "),
                });
            }
        }
        let mut catalog = Catalog {
            conn,
            path: path.to_path_buf(),
        };
        // `synchronous = FULL`: in WAL mode every commit fsyncs the WAL
        // before it returns, so the rows of a batch are durable before its
        // entries are answered `Stored`. NORMAL syncs only at checkpoints,
        // and a power loss could drop acknowledged rows. FULL costs one fsync
        // of the WAL per transaction, i.e. per group-commit batch — cheaper
        // than a checkpoint after each batch, which also writes and syncs
        // the database file.
        let setup = "PRAGMA journal_mode = WAL; PRAGMA synchronous = FULL; PRAGMA foreign_keys = ON; PRAGMA busy_timeout = 5000;";
        catalog
            .conn
            .execute_batch(setup)
            .map_err(|e| catalog.err(e))?;
        if fresh {
            let tx = catalog
                .conn
                .transaction()
                .map_err(|e| StoreError::Catalog {
                    path: path.to_path_buf(),
                    source: e,
                })?;
            let init = format!("{SCHEMA} {CHUNK_TABLES} PRAGMA user_version = {SCHEMA_VERSION};");
            tx.execute_batch(&init)
                .and_then(|()| tx.commit())
                .map_err(|source| StoreError::Catalog {
                    path: path.to_path_buf(),
                    source,
                })?;
        }
        catalog
            .conn
            .execute_batch(STORED_SIZES)
            .map_err(|e| catalog.err(e))?;
        catalog
            .conn
            .execute_batch(super::senders::ACCESS_TABLES)
            .map_err(|e| catalog.err(e))?;
        if version == 1 {
            // Version 1 lacks the chunk tables: add them.
            let migrate =
                format!("BEGIN; {CHUNK_TABLES} PRAGMA user_version = {SCHEMA_VERSION}; COMMIT;");
            catalog
                .conn
                .execute_batch(&migrate)
                .map_err(|e| catalog.err(e))?;
        }
        Ok(catalog)
    }

    /// Opens an existing catalog read-only, without the store's lock: for
    /// an admin reading history or verifying while a receiver runs (WAL lets
    /// readers run beside the writer).
    pub fn open_read_only(path: &Path) -> Result<Catalog, StoreError> {
        let flags = OpenFlags::SQLITE_OPEN_READ_ONLY | OpenFlags::SQLITE_OPEN_NO_MUTEX;
        let conn =
            Connection::open_with_flags(path, flags).map_err(|source| StoreError::Catalog {
                path: path.to_path_buf(),
                source,
            })?;
        let version: i64 = conn
            .query_row("PRAGMA user_version", [], |r| r.get(0))
            .map_err(|source| StoreError::NotADatabase {
                path: path.to_path_buf(),
                source,
            })?;
        if version != SCHEMA_VERSION {
            return Err(StoreError::UnknownSchema {
                path: path.to_path_buf(),
                found: version,
                expected: SCHEMA_VERSION,
            });
        }
        let catalog = Catalog {
            conn,
            path: path.to_path_buf(),
        };
        catalog
            .conn
            .execute_batch("PRAGMA busy_timeout = 5000;")
            .map_err(|e| catalog.err(e))?;
        // A catalog no current receiver has opened for writing lacks the
        // tables added since without a schema bump (`stored_sizes`); it
        // cannot be added here, read-only. An empty one in this
        // connection's own temporary schema answers in its place: no
        // version is sparse. (Read-only opens are short-lived: one created
        // by a receiver meanwhile is seen by the next open.)
        let has_sizes: bool = catalog
            .conn
            .query_row(
                "SELECT count(*) > 0 FROM sqlite_master WHERE type = 'table' AND name = 'stored_sizes'",
                [],
                |r| r.get(0),
            )
            .map_err(|e| catalog.err(e))?;
        if !has_sizes {
            catalog
                .conn
                .execute_batch(
                    "CREATE TEMP TABLE stored_sizes (version_id INTEGER PRIMARY KEY, stored INTEGER NOT NULL);",
                )
                .map_err(|e| catalog.err(e))?;
        }
        Ok(catalog)
    }

    /// The connection, for the queries of the history, retention and verify
    /// modules.
    pub fn conn(&self) -> &Connection {
        &self.conn
    }

    /// The connection, writable (pruning's transaction).
    pub fn conn_mut(&mut self) -> &mut Connection {
        &mut self.conn
    }

    /// The catalog file.
    pub fn path(&self) -> &Path {
        &self.path
    }

    /// Wraps an SQLite error with the catalog's path; a full disk gets its
    /// own variant, so the sender is told why.
    pub fn err(&self, source: rusqlite::Error) -> StoreError {
        if source.sqlite_error_code() == Some(rusqlite::ErrorCode::DiskFull) {
            return StoreError::DiskFull {
                path: self.path.clone(),
            };
        }
        StoreError::Catalog {
            path: self.path.clone(),
            source,
        }
    }

    /// An error for a value that does not read back.
    pub fn corrupt(&self, detail: String) -> StoreError {
        StoreError::CorruptCatalog {
            path: self.path.clone(),
            detail,
        }
    }

    /// Marks runs a killed process left `running` as `interrupted`.
    pub fn interrupt_running(&self) -> Result<usize, StoreError> {
        self.conn
            .execute(
                "UPDATE runs SET status = 'interrupted' WHERE status = 'running'",
                [],
            )
            .map_err(|e| self.err(e))
    }

    fn sender_where(&self, column: &str, value: &str) -> Result<Option<SenderRow>, StoreError> {
        let sql = format!("SELECT id, device, name FROM senders WHERE {column} = ?1");
        self.conn
            .query_row(&sql, [value], |r| {
                Ok(SenderRow {
                    id: r.get(0)?,
                    device: r.get(1)?,
                    name: r.get(2)?,
                })
            })
            .optional()
            .map_err(|e| self.err(e))
    }

    /// The sender with this device id.
    pub fn sender_by_device(&self, device: &str) -> Result<Option<SenderRow>, StoreError> {
        self.sender_where("device", device)
    }

    /// The sender with this name.
    pub fn sender_by_name(&self, name: &str) -> Result<Option<SenderRow>, StoreError> {
        self.sender_where("name", name)
    }

    /// Inserts a sender; the caller has checked that neither the device nor
    /// the name exists.
    pub fn insert_sender(&self, device: &str, name: &str, now_ms: i64) -> Result<i64, StoreError> {
        self.conn
            .execute(
                "INSERT INTO senders (device, name, added_ms) VALUES (?1, ?2, ?3)",
                params![device, name, now_ms],
            )
            .map_err(|e| self.err(e))?;
        Ok(self.conn.last_insert_rowid())
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
    pub fn runs(&self, sender: Option<i64>) -> Result<Vec<RunRow>, StoreError> {
        let sql = "SELECT r.id, s.name, r.folder, r.started_ms, r.finished_ms, r.status,
                   r.files_sent, r.files_unchanged, r.files_deleted, r.bytes_file_data, r.errors,
                   r.bytes_received
                   FROM runs r JOIN senders s ON s.id = r.sender_id
                   WHERE ?1 IS NULL OR r.sender_id = ?1 ORDER BY r.id DESC";
        let read = || -> rusqlite::Result<Vec<RunRow>> {
            let mut stmt = self.conn.prepare(sql)?;
            let rows = stmt.query_map([sender], |r| {
                let count = |i: usize| -> rusqlite::Result<u64> {
                    Ok(u64::try_from(r.get::<_, i64>(i)?).unwrap_or(0))
                };
                Ok(RunRow {
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
            for change in changes {
                match change {
                    Change::Retire {
                        path,
                        archive,
                        deleted,
                        below: what_below,
                    } => {
                        tx.execute(
                            "UPDATE versions SET replaced_run = ?1, deleted = ?2, archive = ?3
                             WHERE sender_id = ?4 AND folder = ?5 AND path = ?6 AND replaced_run IS NULL",
                            params![run, deleted, archive, sender_id, folder, path.as_bytes()],
                        )?;
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
                            tx.execute(
                                "UPDATE versions SET replaced_run = ?1, deleted = 1, archive = ?2 WHERE id = ?3",
                                params![run, child_archive, id],
                            )?;
                        }
                    }
                    Change::Insert(v) => {
                        tx.execute(
                            "INSERT INTO versions (sender_id, folder, path, kind, size, mtime_ns, mode, hash,
                             target, run_id) VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9, ?10)",
                            params![
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
                            ],
                        )?;
                        let id = tx.last_insert_rowid();
                        if let Some(list) = &v.chunks {
                            tx.execute(
                                "INSERT INTO chunk_lists (version_id, list) VALUES (?1, ?2)",
                                params![id, list],
                            )?;
                        }
                        if let Some(stored) = v.stored.filter(|s| *s < v.size) {
                            tx.execute(
                                "INSERT INTO stored_sizes (version_id, stored) VALUES (?1, ?2)",
                                params![id, sql_u64(stored)],
                            )?;
                        }
                    }
                }
            }
            tx.commit()
        })();
        result.map_err(|e| self.err(e))
    }
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

    #[test]
    fn fresh_catalog_gets_schema_version() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("catalog.db");
        drop(Catalog::open(&path).unwrap());
        let conn = Connection::open(&path).unwrap();
        let v: i64 = conn
            .query_row("PRAGMA user_version", [], |r| r.get(0))
            .unwrap();
        assert_eq!(v, SCHEMA_VERSION);
        let mode: String = conn
            .query_row("PRAGMA journal_mode", [], |r| r.get(0))
            .unwrap();
        assert_eq!(mode, "wal");
        // Reopening an existing catalog works.
        drop(conn);
        Catalog::open(&path).unwrap();
    }

    #[test]
    fn writer_commits_are_synced_before_stored_is_answered() {
        // `Stored` follows the commit of the batch's rows: only
        // `synchronous = FULL` (2) makes a WAL commit durable on return.
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("catalog.db");
        for _ in 0..2 {
            // Fresh, then reopened.
            let cat = Catalog::open(&path).unwrap();
            let level: i64 = cat
                .conn()
                .query_row("PRAGMA synchronous", [], |r| r.get(0))
                .unwrap();
            assert_eq!(level, 2, "PRAGMA synchronous of the writer");
        }
    }

    /// A catalog of schema version 1 (before chunk lists) gains the new
    /// tables at open and keeps its rows.
    #[test]
    fn version_1_catalogs_are_upgraded_in_place() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("catalog.db");
        {
            let conn = Connection::open(&path).unwrap();
            conn.execute_batch(&format!(
                "{SCHEMA} PRAGMA user_version = 1;
                 INSERT INTO senders (device, name, added_ms) VALUES ('dev', 'lap', 1);"
            ))
            .unwrap();
        }
        let catalog = Catalog::open(&path).unwrap();
        let v: i64 = catalog
            .conn()
            .query_row("PRAGMA user_version", [], |r| r.get(0))
            .unwrap();
        assert_eq!(v, SCHEMA_VERSION);
        assert!(catalog.sender_by_name("lap").unwrap().is_some());
        assert!(catalog.partial_files().unwrap().is_empty());
        drop(catalog);
        Catalog::open(&path).unwrap();
    }

    #[test]
    fn other_sqlite_database_is_refused() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("catalog.db");
        let conn = Connection::open(&path).unwrap();
        conn.execute_batch("CREATE TABLE other (x); PRAGMA user_version = 7;")
            .unwrap();
        drop(conn);
        match Catalog::open(&path) {
            Err(StoreError::UnknownSchema { found: 7, .. }) => {}
            Err(e) => panic!("unexpected error {e}"),
            Ok(_) => panic!("opened a foreign database"),
        }
    }

    /// A catalog with enough rows to span many pages, closed cleanly.
    fn big_catalog(path: &Path) {
        let cat = Catalog::open(path).unwrap();
        let payload = "x".repeat(200);
        for i in 0..2000 {
            cat.conn()
                .execute(
                    "INSERT INTO senders (device, name, added_ms) VALUES (?1, ?2, 0)",
                    params![format!("dev-{i}-{payload}"), format!("name-{i}")],
                )
                .unwrap();
        }
    }

    #[test]
    fn a_damaged_page_is_refused_and_the_file_left_untouched() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("catalog.db");
        big_catalog(&path);
        let mut bytes = std::fs::read(&path).unwrap();
        assert!(bytes.len() > 64 * 4096, "{}", bytes.len());
        let middle = bytes.len() / 2;
        for b in &mut bytes[middle..middle + 3000] {
            *b = 0xA5;
        }
        std::fs::write(&path, &bytes).unwrap();
        match Catalog::open(&path) {
            Err(e @ StoreError::DamagedCatalog { .. }) => {
                let text = e.to_string();
                assert!(
                    text.contains("catalog.db") && text.contains("damaged"),
                    "{text}"
                );
            }
            Err(e) => panic!("unexpected error {e}"),
            Ok(_) => panic!("opened a damaged catalog"),
        }
        assert_eq!(std::fs::read(&path).unwrap(), bytes);

        // Truncated to half its pages.
        let path = dir.path().join("truncated.db");
        big_catalog(&path);
        let bytes = std::fs::read(&path).unwrap();
        let half = &bytes[..(bytes.len() / 2 / 4096) * 4096];
        std::fs::write(&path, half).unwrap();
        match Catalog::open(&path) {
            Err(StoreError::DamagedCatalog { .. }) => {}
            Err(e) => panic!("unexpected error {e}"),
            Ok(_) => panic!("opened a truncated catalog"),
        }
        assert_eq!(std::fs::read(&path).unwrap(), half);
    }
}
