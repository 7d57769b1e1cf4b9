//! The catalog's schema: every table, as created on a fresh open or added
//! to an older catalog, and the schema version.

/// The schema version stored in `PRAGMA user_version`.
pub(crate) const SCHEMA_VERSION: i64 = 2;

/// The tables of schema version 1: senders, runs and versions.
pub(super) const SCHEMA: &str = "
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
pub(super) const STORED_SIZES: &str = "
CREATE TABLE IF NOT EXISTS stored_sizes (
    version_id INTEGER PRIMARY KEY REFERENCES versions(id) ON DELETE CASCADE,
    stored INTEGER NOT NULL
);
";

/// Tables added in schema version 2 (delta transfer and resume).
pub(super) const CHUNK_TABLES: &str = "
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

/// The tables added without a schema bump (each created when missing on a
/// writable open): a catalog with all of them is opened without a write.
/// A table added that way must be named here too.
pub(crate) const LATER_TABLES: [&str; 4] = [
    "stored_sizes",
    "revoked_senders",
    "receiver_settings",
    "folder_protection",
];

/// Tables of the admin's settings (revoked senders, the pairing switch);
/// created when missing on every writable open, so no schema version bump
/// is needed.
pub(crate) const ACCESS_TABLES: &str = "
CREATE TABLE IF NOT EXISTS revoked_senders (
    sender_id INTEGER PRIMARY KEY REFERENCES senders(id),
    revoked_ms INTEGER NOT NULL
);
CREATE TABLE IF NOT EXISTS receiver_settings (
    key TEXT PRIMARY KEY,
    value TEXT NOT NULL
);
";

/// Each folder's protection (plain, encrypted or write-only, with the key
/// id), recorded when the folder is first sent and fixed afterwards; a
/// folder with runs and no row is plain (it was sent before protection
/// existed). Created when missing on every writable open: no schema bump.
pub(super) const PROTECTION_TABLE: &str = "
CREATE TABLE IF NOT EXISTS folder_protection (
    sender_id INTEGER NOT NULL REFERENCES senders(id),
    folder TEXT NOT NULL,
    mode TEXT NOT NULL,
    key BLOB,
    recorded_ms INTEGER NOT NULL,
    PRIMARY KEY (sender_id, folder)
);
";
