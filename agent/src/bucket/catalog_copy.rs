//! The catalog's copies in the bucket, and recovering a receiver from them.
//!
//! After each committed run the receiver puts a consistent copy of its
//! catalog in the bucket: SQLite's online backup API copies the live
//! database (readers and the writer may go on meanwhile) into a temporary
//! file, which is compressed (zstd) and put as
//! `PREFIX/ferry/catalog/<unix ms, 16 digits>.db.zst`; the newest
//! [`KEEP_COPIES`] are kept. A copy is in the bucket once its PUT succeeded.
//!
//! Recovering takes the newest copy that opens and passes SQLite's
//! `integrity_check` (an older one if the newest is damaged), into a
//! catalog path that must not exist yet.

use std::io::Write;
use std::path::{Path, PathBuf};
use std::time::{SystemTime, UNIX_EPOCH};

use futures_util::TryStreamExt;
use object_store::{ObjectStoreExt, PutPayload};
use rusqlite::{Connection, OpenFlags};

use super::Bucket;
use crate::tasks;

/// How many catalog copies stay in the bucket.
pub const KEEP_COPIES: usize = 3;

/// Copying the catalog to the bucket, or back, failed.
#[derive(Debug, thiserror::Error)]
pub enum CatalogCopyError {
    #[error("could not copy the catalog {path} (SQLite backup)")]
    Backup {
        path: PathBuf,
        #[source]
        source: rusqlite::Error,
    },
    #[error("could not {action} {path}")]
    Io {
        action: &'static str,
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error("could not {action} the catalog copies in {bucket}")]
    Store {
        action: &'static str,
        bucket: String,
        #[source]
        source: object_store::Error,
    },
    #[error("{bucket} holds no catalog copy: there is nothing to recover")]
    NoCopy { bucket: String },
    #[error("no catalog copy in {bucket} is whole (tried {tried}): the newest failed its check")]
    AllDamaged {
        bucket: String,
        tried: usize,
        #[source]
        source: Box<CatalogCopyError>,
    },
    #[error("the catalog copy {key} is damaged: {detail}")]
    Damaged { key: String, detail: String },
    #[error("{path} exists already: recover into a state directory without a catalog")]
    Exists { path: PathBuf },
    #[error(transparent)]
    Cancelled(#[from] tasks::Cancelled),
}

/// A copy put in the bucket.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Uploaded {
    pub key: String,
    /// The catalog's size, and the copy's (compressed).
    pub catalog_bytes: u64,
    pub stored_bytes: u64,
}

/// A catalog recovered from the bucket.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Recovered {
    pub key: String,
    pub catalog_bytes: u64,
}

fn io<'a>(
    action: &'static str,
    path: &'a Path,
) -> impl FnOnce(std::io::Error) -> CatalogCopyError + 'a {
    move |source| CatalogCopyError::Io {
        action,
        path: path.to_path_buf(),
        source,
    }
}

fn store_err<'a>(
    action: &'static str,
    bucket: &'a Bucket,
) -> impl FnOnce(object_store::Error) -> CatalogCopyError + 'a {
    move |source| CatalogCopyError::Store {
        action,
        bucket: bucket.name().into(),
        source,
    }
}

/// A consistent, compressed copy of the catalog at `catalog`.
fn snapshot(catalog: &Path) -> Result<(u64, Vec<u8>), CatalogCopyError> {
    let dir = catalog.parent().unwrap_or(Path::new("."));
    let tmp = tempfile::Builder::new()
        .prefix(".catalog-copy-")
        .tempfile_in(dir)
        .map_err(io("create a temporary file in", dir))?;
    let backup_err = |source| CatalogCopyError::Backup {
        path: catalog.to_path_buf(),
        source,
    };
    {
        let src = Connection::open_with_flags(
            catalog,
            OpenFlags::SQLITE_OPEN_READ_ONLY | OpenFlags::SQLITE_OPEN_NO_MUTEX,
        )
        .map_err(backup_err)?;
        let mut dst = Connection::open(tmp.path()).map_err(backup_err)?;
        rusqlite::backup::Backup::new(&src, &mut dst)
            .and_then(|b| b.run_to_completion(1024, std::time::Duration::from_millis(5), None))
            .map_err(backup_err)?;
    }
    let raw = std::fs::read(tmp.path()).map_err(io("read", tmp.path()))?;
    let mut packed = Vec::with_capacity(raw.len() / 3);
    let mut encoder = zstd::Encoder::new(&mut packed, 3).map_err(io("compress", catalog))?;
    encoder.write_all(&raw).map_err(io("compress", catalog))?;
    encoder.finish().map_err(io("compress", catalog))?;
    Ok((raw.len() as u64, packed))
}

/// The keys of the catalog copies, oldest first.
async fn copies(bucket: &Bucket) -> Result<Vec<object_store::path::Path>, CatalogCopyError> {
    let prefix = bucket.key(&["catalog"]);
    let mut keys: Vec<_> = bucket
        .store()
        .list(Some(&prefix))
        .map_ok(|meta| meta.location)
        .try_collect()
        .await
        .map_err(store_err("list", bucket))?;
    keys.retain(|k| k.filename().is_some_and(|n| n.ends_with(".db.zst")));
    keys.sort();
    Ok(keys)
}

/// True if the bucket holds any copy of a catalog (a store lives there).
pub async fn has_catalog_copies(bucket: &Bucket) -> Result<bool, CatalogCopyError> {
    Ok(!copies(bucket).await?.is_empty())
}

/// Puts a consistent copy of `catalog` in the bucket and removes all but
/// the newest [`KEEP_COPIES`].
pub async fn upload_catalog(
    bucket: &Bucket,
    catalog: &Path,
    now: SystemTime,
) -> Result<Uploaded, CatalogCopyError> {
    let path = catalog.to_path_buf();
    let (catalog_bytes, packed) = tasks::blocking(move || snapshot(&path)).await??;
    let ms = now
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_millis())
        .unwrap_or(0);
    let key = bucket.key(&["catalog", &format!("{ms:016}.db.zst")]);
    let stored_bytes = packed.len() as u64;
    bucket
        .store()
        .put(&key, PutPayload::from(packed))
        .await
        .map_err(store_err("put", bucket))?;
    let keys = copies(bucket).await?;
    let extra = keys.len().saturating_sub(KEEP_COPIES);
    for old in &keys[..extra] {
        match bucket.store().delete(old).await {
            Ok(()) | Err(object_store::Error::NotFound { .. }) => {}
            Err(source) => return Err(store_err("remove old", bucket)(source)),
        }
    }
    Ok(Uploaded {
        key: key.to_string(),
        catalog_bytes,
        stored_bytes,
    })
}

/// Writes the newest whole catalog copy of the bucket to `dest`.
pub async fn recover(bucket: &Bucket, dest: &Path) -> Result<Recovered, CatalogCopyError> {
    if dest.exists() {
        return Err(CatalogCopyError::Exists {
            path: dest.to_path_buf(),
        });
    }
    let keys = copies(bucket).await?;
    if keys.is_empty() {
        return Err(CatalogCopyError::NoCopy {
            bucket: bucket.name().into(),
        });
    }
    let mut first_failure = None;
    for key in keys.iter().rev() {
        let packed = bucket
            .store()
            .get(key)
            .await
            .map_err(store_err("read", bucket))?
            .bytes()
            .await
            .map_err(store_err("read", bucket))?;
        let dest_owned = dest.to_path_buf();
        let name = key.to_string();
        match tasks::blocking(move || restore_copy(&name, &packed, &dest_owned)).await? {
            Ok(catalog_bytes) => {
                return Ok(Recovered {
                    key: key.to_string(),
                    catalog_bytes,
                })
            }
            Err(e @ CatalogCopyError::Damaged { .. }) => {
                first_failure.get_or_insert(e);
            }
            Err(e) => return Err(e),
        }
    }
    Err(CatalogCopyError::AllDamaged {
        bucket: bucket.name().into(),
        tried: keys.len(),
        source: Box::new(first_failure.unwrap_or(CatalogCopyError::NoCopy {
            bucket: bucket.name().into(),
        })),
    })
}

/// Decompresses one copy beside `dest`, checks it, and renames it there.
fn restore_copy(key: &str, packed: &[u8], dest: &Path) -> Result<u64, CatalogCopyError> {
    let dir = dest.parent().unwrap_or(Path::new("."));
    std::fs::create_dir_all(dir).map_err(io("create", dir))?;
    let damaged = |detail: String| CatalogCopyError::Damaged {
        key: key.to_string(),
        detail,
    };
    let raw = zstd::decode_all(packed).map_err(|e| damaged(format!("not zstd: {e}")))?;
    let mut tmp = tempfile::Builder::new()
        .prefix(".catalog-recover-")
        .tempfile_in(dir)
        .map_err(io("create a temporary file in", dir))?;
    tmp.write_all(&raw).map_err(io("write", tmp.path()))?;
    tmp.as_file().sync_all().map_err(io("sync", tmp.path()))?;
    let verdict: Result<String, rusqlite::Error> = Connection::open_with_flags(
        tmp.path(),
        OpenFlags::SQLITE_OPEN_READ_ONLY | OpenFlags::SQLITE_OPEN_NO_MUTEX,
    )
    .and_then(|c| c.query_row("PRAGMA integrity_check", [], |row| row.get(0)));
    match verdict {
        Ok(ok) if ok == "ok" => {}
        Ok(problem) => return Err(damaged(problem)),
        Err(e) => return Err(damaged(e.to_string())),
    }
    tmp.persist_noclobber(dest).map_err(|e| {
        if e.error.kind() == std::io::ErrorKind::AlreadyExists {
            CatalogCopyError::Exists {
                path: dest.to_path_buf(),
            }
        } else {
            io("move the recovered catalog to", dest)(e.error)
        }
    })?;
    std::fs::File::open(dir)
        .and_then(|d| d.sync_all())
        .map_err(io("sync", dir))?;
    Ok(raw.len() as u64)
}

#[cfg(test)]
mod tests {
    use std::time::Duration;

    use super::*;
    use crate::bucket::memory_bucket;

    fn catalog_with(dir: &Path, rows: u32) -> PathBuf {
        let path = dir.join("catalog.db");
        let conn = Connection::open(&path).unwrap();
        conn.execute_batch(
            "PRAGMA journal_mode=WAL; CREATE TABLE IF NOT EXISTS runs(id INTEGER PRIMARY KEY, note TEXT);",
        )
        .unwrap();
        for i in 0..rows {
            conn.execute("INSERT INTO runs(note) VALUES (?1)", [format!("run {i}")])
                .unwrap();
        }
        path
    }

    fn count(path: &Path) -> u32 {
        Connection::open(path)
            .unwrap()
            .query_row("SELECT count(*) FROM runs", [], |r| r.get(0))
            .unwrap()
    }

    #[tokio::test]
    async fn a_recovered_catalog_is_the_newest_copy_and_only_three_are_kept() {
        let bucket = memory_bucket();
        let dir = tempfile::tempdir().unwrap();
        let t0 = UNIX_EPOCH + Duration::from_secs(1_700_000_000);
        let catalog = catalog_with(dir.path(), 0);
        for i in 0..5u32 {
            // A writer still has the catalog open (WAL): the copy is consistent anyway.
            let writer = Connection::open(&catalog).unwrap();
            writer
                .execute("INSERT INTO runs(note) VALUES (?1)", [format!("batch {i}")])
                .unwrap();
            let up = upload_catalog(&bucket, &catalog, t0 + Duration::from_secs(i as u64))
                .await
                .unwrap();
            assert!(up.stored_bytes > 0 && up.catalog_bytes > up.stored_bytes);
        }
        assert_eq!(copies(&bucket).await.unwrap().len(), KEEP_COPIES);

        let fresh = tempfile::tempdir().unwrap();
        let dest = fresh.path().join("state/catalog.db");
        let got = recover(&bucket, &dest).await.unwrap();
        assert!(got.key.ends_with("0001700000004000.db.zst"), "{}", got.key);
        assert_eq!(count(&dest), 5);
        // Never over an existing catalog.
        assert!(matches!(
            recover(&bucket, &dest).await,
            Err(CatalogCopyError::Exists { .. })
        ));
    }

    #[tokio::test]
    async fn a_damaged_newest_copy_falls_back_to_the_one_before() {
        let bucket = memory_bucket();
        let dir = tempfile::tempdir().unwrap();
        let catalog = catalog_with(dir.path(), 7);
        let t0 = UNIX_EPOCH + Duration::from_secs(1_700_000_000);
        upload_catalog(&bucket, &catalog, t0).await.unwrap();
        let newest = bucket.key(&["catalog", "0001700000009000.db.zst"]);
        let garbage = zstd::encode_all(&b"SQLite format 3\0 but not really"[..], 1).unwrap();
        bucket
            .store()
            .put(&newest, PutPayload::from(garbage))
            .await
            .unwrap();
        let dest = dir.path().join("recovered.db");
        let got = recover(&bucket, &dest).await.unwrap();
        assert!(got.key.ends_with("0001700000000000.db.zst"));
        assert_eq!(count(&dest), 7);

        // Only damaged copies: named, nothing written.
        let empty = memory_bucket();
        assert!(matches!(
            recover(&empty, &dir.path().join("x.db")).await,
            Err(CatalogCopyError::NoCopy { .. })
        ));
        empty
            .store()
            .put(&newest, PutPayload::from_static(b"nope"))
            .await
            .unwrap();
        let err = recover(&empty, &dir.path().join("y.db")).await.unwrap_err();
        assert!(
            matches!(err, CatalogCopyError::AllDamaged { tried: 1, .. }),
            "{err}"
        );
        assert!(!dir.path().join("y.db").exists());
    }
}
