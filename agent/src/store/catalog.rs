//! The catalog: SQLite tables of senders, runs and versions.
//!
//! A version row describes one state of one path: what it was (`kind`, size,
//! mtime, mode, hash or link target), the run that stored it, and — once it is
//! no longer current — the run that replaced or deleted it and where its bytes
//! went (`archive`, relative to STORE). A row is *current* while
//! `replaced_run IS NULL`. A replaced row with no `archive` has the same
//! content as the next newer row of its path (a metadata-only change), so its
//! bytes are wherever that row's are.
//!
//! ## Layout
//!
//! - `schema`: every table definition and the schema version.
//! - `senders`: the senders' table.
//! - `runs`: the runs' table (`CatalogRun`).
//! - `versions`: reading version rows ([`VersionRow`]).
//! - `changes`: a store operation's changes, applied in one transaction.
//! - `partials`: the partial transfers kept to resume.
//! - `protection`: each folder's protection, fixed when it is first sent.
//!
//! This file opens the catalog (checked before anything is written, created
//! with its schema, upgraded in place) and wraps its errors.

mod changes;
mod partials;
mod protection;
mod runs;
mod schema;
mod senders;
mod versions;

use std::path::{Path, PathBuf};

use rusqlite::{Connection, OpenFlags};

use super::error::{HistoryError, StoreError};
pub(crate) use changes::{apply_changes, Below, Change, NewVersion};
pub(crate) use runs::RunEnd;
#[cfg(test)]
pub(crate) use runs::RUN_IDS_SKIPPED;
pub(crate) use schema::{ACCESS_TABLES, SCHEMA_VERSION};
use schema::{CHUNK_TABLES, PROTECTION_TABLE, SCHEMA, STORED_SIZES};
pub(crate) use senders::SenderRow;
pub(crate) use versions::{version_row, VersionRow, VERSION_COLUMNS};

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

/// The catalog path of the store at `root`.
pub fn catalog_path(root: &Path) -> PathBuf {
    root.join(".ferry").join("catalog.db")
}

/// Converts a count for SQLite, saturating (SQLite integers are i64).
pub(crate) fn sql_u64(n: u64) -> i64 {
    i64::try_from(n).unwrap_or(i64::MAX)
}

/// Opens the catalog of the store at `root` read-only, without the store's
/// lock; [`HistoryError::NoCatalog`] if it has none.
pub(crate) fn read_only_at(root: &Path) -> Result<Catalog, HistoryError> {
    let path = catalog_path(root);
    if !path.is_file() {
        return Err(HistoryError::NoCatalog { path });
    }
    Ok(Catalog::open_read_only(&path)?)
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

/// Asks the kernel to read the whole catalog file ahead (best effort):
/// the check visits every page in the B-trees' order, which on a cold
/// cache is one random read per page; read ahead, it is one sequential
/// read, and the pages are then found in the page cache.
fn read_ahead(path: &Path) {
    use rustix::fs::{Advice, Mode, OFlags};
    let flags = OFlags::RDONLY | OFlags::NOFOLLOW | OFlags::CLOEXEC;
    if let Ok(file) = rustix::fs::open(path, flags, Mode::empty()) {
        let _ = rustix::fs::fadvise(&file, 0, None, Advice::WillNeed);
    }
}

/// Checks every page of the catalog at `path`: a damaged page deep in the
/// file is not noticed until a query reads it, possibly after history was
/// written on top.
fn check_pages(conn: &Connection, path: &Path) -> Result<(), StoreError> {
    let problems = quick_check(conn).map_err(|source| not_a_database(path, source))?;
    if problems.first().map(String::as_str) != Some("ok") {
        return Err(StoreError::DamagedCatalog {
            path: path.to_path_buf(),
            detail: problems.join("; "),
        });
    }
    Ok(())
}

/// True if the catalog has every table added without a schema bump
/// ([`schema::LATER_TABLES`]): then opening it
/// writes nothing.
fn has_later_tables(conn: &Connection) -> rusqlite::Result<bool> {
    let names = schema::LATER_TABLES
        .iter()
        .map(|t| format!("'{t}'"))
        .collect::<Vec<_>>()
        .join(", ");
    let found: i64 = conn.query_row(
        &format!("SELECT count(*) FROM sqlite_master WHERE type = 'table' AND name IN ({names})"),
        [],
        |r| r.get(0),
    )?;
    Ok(found == schema::LATER_TABLES.len() as i64)
}

/// The error of a catalog file SQLite cannot read: damaged, or not a
/// database at all.
fn not_a_database(path: &Path, source: rusqlite::Error) -> StoreError {
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
}

impl Catalog {
    /// Opens or creates the catalog at `path`. An existing file is checked
    /// (readable as SQLite, known schema, every page sound) before anything
    /// is written to it.
    ///
    /// On a full disk the WAL's shared-memory index (`catalog.db-shm`, 32
    /// KiB) cannot be allocated, and nothing, not even a read, works through
    /// it: then the catalog is opened in exclusive locking mode, where SQLite
    /// keeps that index in the process's memory. Reads work; writes fail
    /// with [`StoreError::DiskFull`] until space is freed. Read-only tools
    /// (`ferry history --store`, `ferry verify`) cannot read beside a
    /// receiver in that mode; they can once it restarts with space.
    #[cfg(test)]
    pub fn open(path: &Path) -> Result<Catalog, StoreError> {
        let catalog = Self::open_unchecked(path)?;
        catalog.check()?;
        Ok(catalog)
    }

    /// [`Catalog::open`] without the check of every page (a catalog of
    /// schema version 1 is still checked here, before it is upgraded): the
    /// caller runs [`Catalog::check`] before anything is written to it.
    pub fn open_unchecked(path: &Path) -> Result<Catalog, StoreError> {
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
        let not_db = |source| not_a_database(path, source);
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
        if !fresh && (version == 1 || !has_later_tables(&conn).map_err(not_db)?) {
            // Written below (upgraded, or given the tables added since
            // without a schema bump) before the caller's check would run.
            check_pages(&conn, path)?;
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
            .execute_batch(ACCESS_TABLES)
            .map_err(|e| catalog.err(e))?;
        catalog
            .conn
            .execute_batch(PROTECTION_TABLE)
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

    /// Checks every page of the catalog (`PRAGMA quick_check`), before
    /// anything is written to it: [`StoreError::DamagedCatalog`] if one is
    /// damaged. The file is left as it was.
    pub fn check(&self) -> Result<(), StoreError> {
        read_ahead(&self.path);
        check_pages(&self.conn, &self.path)
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
        // Likewise a catalog without folder protections: every folder in it
        // is plain.
        if !catalog.has_protection_table()? {
            catalog
                .conn
                .execute_batch(
                    "CREATE TEMP TABLE folder_protection (sender_id INTEGER NOT NULL, folder TEXT NOT NULL, mode TEXT NOT NULL, key BLOB, recorded_ms INTEGER NOT NULL, PRIMARY KEY (sender_id, folder));",
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
}

#[cfg(test)]
#[allow(clippy::unwrap_used)] // a failing unwrap is a failing test
mod tests {
    use super::*;
    use rusqlite::params;

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
