//! The admin's control over senders, kept in the catalog: which registered
//! senders are revoked and whether pairing is switched off; and what each
//! sender has stored, for `ferry senders list` and the launcher.
//!
//! Both settings live in tables created on a writable open (older catalogs
//! simply lack them: nobody revoked, pairing on). The admin changes them
//! with an [`AccessWriter`], which opens the catalog beside a running
//! receiver without the store's lock: it writes these two tables only, and
//! SQLite's own locking serialises it with the receiver's transactions. The
//! running receiver reads them again every second
//! ([`crate::receiver`]'s access watch).

use std::collections::HashSet;
use std::path::{Path, PathBuf};

use ferry_proto::{Name, Protection};
use rusqlite::{params, Connection, OpenFlags, OptionalExtension};

use super::catalog::{catalog_path, Catalog, ACCESS_TABLES, SCHEMA_VERSION};
use super::{HistoryError, Store, StoreError};

/// The `receiver_settings` key of the pairing switch (`on` / `off`).
const PAIRING_KEY: &str = "pairing";

/// Who the admin has shut out, as the receiver applies it.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Access {
    /// Device ids of revoked senders.
    pub revoked: HashSet<String>,
    /// True when the admin switched pairing off.
    pub pairing_off: bool,
}

/// One sender as the catalog knows it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SenderSummary {
    pub name: Name,
    pub device: String,
    /// When it was registered, ms since the Unix epoch.
    pub added_ms: i64,
    /// The folders it has sent, by name.
    pub folders: Vec<String>,
    /// Each folder's protection, in the order of `folders`.
    pub protections: Vec<Protection>,
    /// Its newest run, of any folder.
    pub last_run: Option<LastRun>,
    /// Bytes of its current files (what the mirror holds).
    pub current_bytes: u64,
    /// Bytes of its old versions that are not also current content.
    pub old_bytes: u64,
    /// When the admin revoked it, if it is revoked.
    pub revoked_ms: Option<i64>,
}

/// A sender's newest run.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct LastRun {
    pub id: u64,
    pub folder: String,
    pub started_ms: i64,
    pub finished_ms: Option<i64>,
    /// `"running"`, `"complete"`, `"failed"` or `"interrupted"`.
    pub status: String,
}

/// Why the admin's change could not be made.
#[derive(Debug, thiserror::Error)]
pub enum AccessError {
    #[error("{path} does not exist: is this a ferry store directory (the one given to `ferry receive --store`)?")]
    NoCatalog { path: PathBuf },
    #[error("no sender named {name:?} is known to the store at {}: list them with `ferry senders list`", root.display())]
    UnknownSender { name: String, root: PathBuf },
    #[error(transparent)]
    Store(#[from] StoreError),
    /// Revocations and the pairing switch of a receiver whose store is a
    /// bucket live in its state directory's catalog, not in the bucket.
    #[error("{url} keeps its catalog in the receiver's state directory: give --store STATE/store (STATE is the receiver's --state, by default ~/.local/state/ferry)")]
    InBucket { url: String },
}

/// True if the catalog has the access tables (a catalog last opened by an
/// older receiver, read-only, may not).
fn has_access_tables(cat: &Catalog) -> Result<bool, StoreError> {
    cat.conn()
        .query_row(
            "SELECT count(*) FROM sqlite_master WHERE type = 'table'
             AND name IN ('revoked_senders', 'receiver_settings')",
            [],
            |r| r.get::<_, i64>(0),
        )
        .map(|n| n == 2)
        .map_err(|e| cat.err(e))
}

impl Store {
    /// The admin's current settings.
    pub fn access(&self) -> Result<Access, StoreError> {
        let cat = self.catalog();
        if !has_access_tables(&cat)? {
            return Ok(Access::default());
        }
        let conn = cat.conn();
        let mut stmt = conn
            .prepare("SELECT s.device FROM revoked_senders r JOIN senders s ON s.id = r.sender_id")
            .map_err(|e| cat.err(e))?;
        let revoked = stmt
            .query_map([], |r| r.get::<_, String>(0))
            .and_then(|rows| rows.collect::<rusqlite::Result<HashSet<_>>>())
            .map_err(|e| cat.err(e))?;
        let pairing: Option<String> = conn
            .query_row(
                "SELECT value FROM receiver_settings WHERE key = ?1",
                [PAIRING_KEY],
                |r| r.get(0),
            )
            .optional()
            .map_err(|e| cat.err(e))?;
        Ok(Access {
            revoked,
            pairing_off: pairing.as_deref() == Some("off"),
        })
    }

    /// Every registered sender, by name, with what it has stored.
    pub fn sender_summaries(&self) -> Result<Vec<SenderSummary>, StoreError> {
        let rows: Vec<(i64, String, String, i64, Option<i64>)> = {
            let cat = self.catalog();
            let revoked_col = if has_access_tables(&cat)? {
                "(SELECT revoked_ms FROM revoked_senders r WHERE r.sender_id = s.id)"
            } else {
                "NULL"
            };
            let sql = format!(
                "SELECT s.id, s.name, s.device, s.added_ms, {revoked_col} FROM senders s ORDER BY s.name"
            );
            let mut stmt = cat.conn().prepare(&sql).map_err(|e| cat.err(e))?;
            let rows = stmt
                .query_map([], |r| {
                    Ok((r.get(0)?, r.get(1)?, r.get(2)?, r.get(3)?, r.get(4)?))
                })
                .and_then(|rows| rows.collect::<rusqlite::Result<Vec<_>>>())
                .map_err(|e| cat.err(e))?;
            rows
        };
        let mut out = Vec::with_capacity(rows.len());
        for (id, name, device, added_ms, revoked_ms) in rows {
            let total = self.stored_bytes(id)?;
            let recorded = self.folder_protections(id)?;
            let cat = self.catalog();
            let name = Name::new(name).map_err(|e| cat.corrupt(e.to_string()))?;
            let conn = cat.conn();
            let mut stmt = conn
                .prepare("SELECT DISTINCT folder FROM runs WHERE sender_id = ?1 ORDER BY folder")
                .map_err(|e| cat.err(e))?;
            let folders = stmt
                .query_map([id], |r| r.get::<_, String>(0))
                .and_then(|rows| rows.collect::<rusqlite::Result<Vec<_>>>())
                .map_err(|e| cat.err(e))?;
            let protections = folders
                .iter()
                .map(|folder| {
                    recorded
                        .iter()
                        .find(|(f, _)| f == folder)
                        .map_or(Protection::Plain, |(_, p)| *p)
                })
                .collect();
            let last = conn
                .query_row(
                    "SELECT id, folder, started_ms, finished_ms, status FROM runs
                     WHERE sender_id = ?1 ORDER BY id DESC LIMIT 1",
                    [id],
                    |r| {
                        Ok((
                            r.get::<_, i64>(0)?,
                            r.get(1)?,
                            r.get(2)?,
                            r.get(3)?,
                            r.get(4)?,
                        ))
                    },
                )
                .optional()
                .map_err(|e| cat.err(e))?;
            let last_run = match last {
                Some((run, folder, started_ms, finished_ms, status)) => Some(LastRun {
                    id: u64::try_from(run)
                        .map_err(|_| cat.corrupt(format!("negative run id {run}")))?,
                    folder,
                    started_ms,
                    finished_ms,
                    status,
                }),
                None => None,
            };
            let current: i64 = conn
                .query_row(
                    "SELECT coalesce(sum(coalesce(s.stored, v.size)), 0)
                     FROM versions v LEFT JOIN stored_sizes s ON s.version_id = v.id
                     WHERE v.sender_id = ?1 AND v.kind = 'file' AND v.replaced_run IS NULL",
                    [id],
                    |r| r.get(0),
                )
                .map_err(|e| cat.err(e))?;
            let current = u64::try_from(current)
                .map_err(|_| cat.corrupt(format!("negative stored size {current}")))?;
            out.push(SenderSummary {
                name,
                device,
                added_ms,
                folders,
                protections,
                last_run,
                // The current files' bytes are counted once in `total`
                // (versions of a path with the same content share them).
                current_bytes: current.min(total),
                old_bytes: total.saturating_sub(current),
                revoked_ms,
            });
        }
        Ok(out)
    }
}

/// Reads the admin's settings of the store at `root` without its lock.
pub fn read_access(root: &Path) -> Result<Access, HistoryError> {
    Store::open_read_only(root)?.access().map_err(Into::into)
}

/// Changes the admin's settings of the store at `root`, beside a running
/// receiver or not (see the module doc).
pub struct AccessWriter {
    conn: Connection,
    root: PathBuf,
    path: PathBuf,
}

impl AccessWriter {
    /// Opens the existing catalog of the store at `root` for these writes.
    pub fn open(root: &Path) -> Result<AccessWriter, AccessError> {
        if crate::bucket::is_bucket_url(&root.to_string_lossy()) {
            return Err(AccessError::InBucket {
                url: root.display().to_string(),
            });
        }
        let path = catalog_path(root);
        if !path.is_file() {
            return Err(AccessError::NoCatalog { path });
        }
        let err = |source| StoreError::Catalog {
            path: path.clone(),
            source,
        };
        let flags = OpenFlags::SQLITE_OPEN_READ_WRITE | OpenFlags::SQLITE_OPEN_NO_MUTEX;
        let conn = Connection::open_with_flags(&path, flags).map_err(err)?;
        let version: i64 = conn
            .query_row("PRAGMA user_version", [], |r| r.get(0))
            .map_err(|source| StoreError::NotADatabase {
                path: path.clone(),
                source,
            })?;
        if version != SCHEMA_VERSION {
            return Err(StoreError::UnknownSchema {
                path,
                found: version,
                expected: SCHEMA_VERSION,
            }
            .into());
        }
        // The receiver's transactions are short (one group-commit batch):
        // wait for them rather than fail.
        conn.execute_batch("PRAGMA busy_timeout = 10000; PRAGMA foreign_keys = ON;")
            .map_err(err)?;
        conn.execute_batch(ACCESS_TABLES).map_err(err)?;
        Ok(AccessWriter {
            conn,
            root: root.to_path_buf(),
            path,
        })
    }

    fn err(&self, source: rusqlite::Error) -> AccessError {
        StoreError::Catalog {
            path: self.path.clone(),
            source,
        }
        .into()
    }

    /// Revokes (`true`) or re-admits (`false`) the sender named `name`.
    /// Returns false if it already was so.
    pub fn set_revoked(&self, name: &str, revoked: bool) -> Result<bool, AccessError> {
        let id: Option<i64> = self
            .conn
            .query_row("SELECT id FROM senders WHERE name = ?1", [name], |r| {
                r.get(0)
            })
            .optional()
            .map_err(|e| self.err(e))?;
        let Some(id) = id else {
            return Err(AccessError::UnknownSender {
                name: name.to_owned(),
                root: self.root.clone(),
            });
        };
        let changed = if revoked {
            self.conn.execute(
                "INSERT OR IGNORE INTO revoked_senders (sender_id, revoked_ms) VALUES (?1, ?2)",
                params![id, super::now_ms()],
            )
        } else {
            self.conn
                .execute("DELETE FROM revoked_senders WHERE sender_id = ?1", [id])
        }
        .map_err(|e| self.err(e))?;
        Ok(changed > 0)
    }

    /// Switches pairing of new senders on or off.
    pub fn set_pairing(&self, on: bool) -> Result<(), AccessError> {
        self.conn
            .execute(
                "INSERT INTO receiver_settings (key, value) VALUES (?1, ?2)
                 ON CONFLICT (key) DO UPDATE SET value = excluded.value",
                params![PAIRING_KEY, if on { "on" } else { "off" }],
            )
            .map_err(|e| self.err(e))?;
        Ok(())
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used)] // a failing unwrap is a failing test
mod tests {
    use super::super::tests::{fixture, put_file};
    use super::*;

    #[test]
    fn revocation_and_pairing_round_trip_beside_an_open_store() {
        let (dir, store, a) = fixture();
        assert_eq!(store.access().unwrap(), Access::default());
        let device = store.sender_by_name(&a.sender).unwrap().unwrap().device;
        // The store stays open (as a running receiver holds it).
        let writer = AccessWriter::open(&dir.path().join("store")).unwrap();
        assert!(writer.set_revoked(a.sender.as_str(), true).unwrap());
        assert!(!writer.set_revoked(a.sender.as_str(), true).unwrap());
        writer.set_pairing(false).unwrap();
        let access = store.access().unwrap();
        assert_eq!(access.revoked, HashSet::from([device.clone()]));
        assert!(access.pairing_off);
        assert_eq!(read_access(&dir.path().join("store")).unwrap(), access);
        assert!(store.sender_summaries().unwrap()[0].revoked_ms.is_some());
        assert!(writer.set_revoked(a.sender.as_str(), false).unwrap());
        writer.set_pairing(true).unwrap();
        assert_eq!(store.access().unwrap(), Access::default());
        assert!(matches!(
            writer.set_revoked("nobody", true),
            Err(AccessError::UnknownSender { .. })
        ));
    }

    #[test]
    fn a_catalog_without_the_tables_reads_as_nobody_revoked() {
        let (dir, store, _a) = fixture();
        store
            .catalog()
            .conn()
            .execute_batch("DROP TABLE revoked_senders; DROP TABLE receiver_settings;")
            .unwrap();
        let ro = Store::open_read_only(&dir.path().join("store")).unwrap();
        assert_eq!(ro.access().unwrap(), Access::default());
        assert_eq!(ro.sender_summaries().unwrap().len(), 1);
    }

    #[test]
    fn summaries_split_current_and_old_bytes_and_name_the_last_run() {
        let (_dir, store, a) = fixture();
        let run = store.begin_run(&a).unwrap();
        put_file(&store, &a, run, "x", &[1; 100], 1);
        put_file(&store, &a, run, "x", &[2; 40], 2);
        put_file(&store, &a, run, "y", &[3; 10], 1);
        let all = store.sender_summaries().unwrap();
        assert_eq!(all.len(), 1);
        let s = &all[0];
        assert_eq!(s.name, a.sender);
        assert_eq!(s.folders, vec![a.folder.to_string()]);
        assert_eq!(s.protections, vec![Protection::Plain]);
        assert_eq!((s.current_bytes, s.old_bytes), (50, 100));
        let last = s.last_run.as_ref().unwrap();
        assert_eq!((last.id, last.status.as_str()), (run, "running"));
        assert_eq!(s.revoked_ms, None);
    }

    #[test]
    fn summaries_give_each_folder_its_protection() {
        let (_dir, store, a) = fixture();
        store.begin_run(&a).unwrap();
        let sender = store.sender_by_name(&a.sender).unwrap().unwrap();
        let pics = store.namespace(&sender, &Name::new("pics").unwrap());
        let sealed = Protection::Encrypted { key: [7; 32] };
        store.fix_protection(&pics, &sealed).unwrap();
        store.begin_run(&pics).unwrap();
        let s = &store.sender_summaries().unwrap()[0];
        assert_eq!(s.folders, vec!["docs".to_string(), "pics".to_string()]);
        assert_eq!(s.protections, vec![Protection::Plain, sealed]);
    }
}
