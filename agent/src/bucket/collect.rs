//! Carrying out retention's plan in the bucket (see `gc` for the rules).
//!
//! Order, so that a crash at any point loses nothing a version needs:
//!
//! - a dead pack is first forgotten by the catalog (one transaction), then
//!   deleted; a crash in between leaves an unrecorded pack;
//! - a sparse pack's live blobs are put in a new pack first, the catalog is
//!   pointed at it and the old pack forgotten in one transaction, and only
//!   then the old pack is deleted; a crash before the transaction leaves
//!   the new pack unrecorded, after it the old one;
//! - unrecorded packs are deleted only when asked (`leftovers`): at the
//!   receiver's start, before any run can have put a pack its catalog does
//!   not name yet.

use std::time::{SystemTime, UNIX_EPOCH};

use rusqlite::Connection;

use super::blob_index::{forget_pack, live_blobs_of, pack_uses, repoint};
use super::gc::plan;
use super::pack::{open_blob, PackId, PackWriter};
use super::packs::{delete_pack, list_packs, put_pack, read_pack, PackStoreError};
use super::Bucket;

/// What a collection did.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Collected {
    pub deleted: usize,
    pub rewritten: usize,
    pub leftovers: usize,
    pub freed_bytes: u64,
}

/// A collection stopped (what was done before stays done and consistent).
#[derive(Debug, thiserror::Error)]
pub enum CollectError {
    #[error("could not read or update the catalog's packs")]
    Catalog(#[source] rusqlite::Error),
    #[error(transparent)]
    Packs(#[from] PackStoreError),
}

fn now_ms(now: SystemTime) -> u64 {
    now.duration_since(UNIX_EPOCH)
        .map(|d| d.as_millis() as u64)
        .unwrap_or(0)
}

/// Deletes and rewrites the packs retention no longer needs whole; with
/// `leftovers`, deletes the packs the catalog does not name too.
pub async fn collect(
    bucket: &Bucket,
    conn: &mut Connection,
    oldest_running_ms: Option<u64>,
    leftovers: bool,
    now: SystemTime,
) -> Result<Collected, CollectError> {
    let uses = pack_uses(conn).map_err(CollectError::Catalog)?;
    let todo = plan(&uses, oldest_running_ms);
    let mut done = Collected {
        freed_bytes: todo.freed_bytes,
        ..Collected::default()
    };
    for id in &todo.delete {
        let tx = conn.transaction().map_err(CollectError::Catalog)?;
        forget_pack(&tx, id).map_err(CollectError::Catalog)?;
        tx.commit().map_err(CollectError::Catalog)?;
        delete_pack(bucket, id).await?;
        done.deleted += 1;
    }
    for id in &todo.rewrite {
        rewrite(bucket, conn, id, now).await?;
        done.rewritten += 1;
    }
    if leftovers && oldest_running_ms.is_none() {
        let known: std::collections::HashSet<PackId> = pack_uses(conn)
            .map_err(CollectError::Catalog)?
            .into_iter()
            .map(|u| u.id)
            .collect();
        for listed in list_packs(bucket).await? {
            if !known.contains(&listed.id) {
                delete_pack(bucket, &listed.id).await?;
                done.leftovers += 1;
                done.freed_bytes += listed.size;
            }
        }
    }
    Ok(done)
}

/// Moves the live blobs of pack `id` into a new pack, then deletes `id`.
async fn rewrite(
    bucket: &Bucket,
    conn: &mut Connection,
    id: &PackId,
    now: SystemTime,
) -> Result<(), CollectError> {
    let live = live_blobs_of(conn, id).map_err(CollectError::Catalog)?;
    let (bytes, _) = read_pack(bucket, id).await?;
    let mut writer = PackWriter::new();
    for entry in &live {
        let stored = &bytes[entry.offset as usize..entry.range().end as usize];
        let content = open_blob(entry, stored).map_err(|source| PackStoreError::Damaged {
            pack: id.hex(),
            bucket: bucket.name().into(),
            source,
        })?;
        writer.push(entry.hash, &content);
    }
    let tx_new = if writer.is_empty() {
        None
    } else {
        let (new_id, new_bytes, entries) = writer.finish();
        if new_id == *id {
            // Every blob was live after all: the same pack, byte for byte.
            // Deleting "the old one" would delete it.
            return Ok(());
        }
        let len = new_bytes.len() as u64;
        put_pack(bucket, &new_id, new_bytes).await?;
        Some((new_id, len, entries))
    };
    let tx = conn.transaction().map_err(CollectError::Catalog)?;
    if let Some((new_id, len, entries)) = &tx_new {
        repoint(&tx, new_id, now_ms(now), *len, entries).map_err(CollectError::Catalog)?;
    }
    forget_pack(&tx, id).map_err(CollectError::Catalog)?;
    tx.commit().map_err(CollectError::Catalog)?;
    delete_pack(bucket, id).await?;
    Ok(())
}

#[cfg(test)]
mod tests {
    use rusqlite::params;

    use super::*;
    use crate::bucket::blob_index::{ensure_tables, locate_blob, record_pack};
    use crate::bucket::{memory_bucket, read_blob};

    fn catalog() -> Connection {
        let conn = Connection::open_in_memory().unwrap();
        conn.execute_batch(
            "CREATE TABLE versions (id INTEGER PRIMARY KEY, kind TEXT, hash BLOB);
             CREATE TABLE chunk_lists (version_id INTEGER PRIMARY KEY, list BLOB NOT NULL);",
        )
        .unwrap();
        ensure_tables(&conn).unwrap();
        conn
    }

    async fn pack_of(bucket: &Bucket, conn: &mut Connection, blobs: &[Vec<u8>], at: u64) -> PackId {
        let mut w = PackWriter::new();
        for b in blobs {
            w.push(*blake3::hash(b).as_bytes(), b);
        }
        let (id, bytes, entries) = w.finish();
        let len = bytes.len() as u64;
        put_pack(bucket, &id, bytes).await.unwrap();
        let tx = conn.transaction().unwrap();
        record_pack(&tx, &id, at, len, &entries).unwrap();
        tx.commit().unwrap();
        id
    }

    fn keep(conn: &Connection, id: i64, blob: &[u8]) {
        conn.execute(
            "INSERT INTO versions (id, kind, hash) VALUES (?1, 'file', ?2)",
            params![id, &blake3::hash(blob).as_bytes()[..]],
        )
        .unwrap();
    }

    fn noise(seed: u32, len: usize) -> Vec<u8> {
        let mut x = seed.wrapping_mul(2_654_435_761) | 1;
        (0..len)
            .map(|_| {
                x ^= x << 13;
                x ^= x >> 17;
                x ^= x << 5;
                x as u8
            })
            .collect()
    }

    #[tokio::test]
    async fn dead_packs_go_sparse_ones_shrink_and_every_kept_blob_still_reads() {
        let bucket = memory_bucket();
        let mut conn = catalog();
        let blobs: Vec<Vec<u8>> = (0..8).map(|i| noise(i, 10_000)).collect();
        let dead = pack_of(&bucket, &mut conn, &blobs[0..2], 10).await;
        let sparse = pack_of(&bucket, &mut conn, &blobs[2..6], 10).await;
        let full = pack_of(&bucket, &mut conn, &blobs[6..8], 10).await;
        keep(&conn, 1, &blobs[2]);
        keep(&conn, 2, &blobs[6]);
        keep(&conn, 3, &blobs[7]);
        // A run in progress since 20 put a pack its catalog does not name yet.
        let mut w = PackWriter::new();
        w.push(*blake3::hash(b"in flight").as_bytes(), b"in flight");
        let (flight, fbytes, _) = w.finish();
        put_pack(&bucket, &flight, fbytes).await.unwrap();

        let done = collect(&bucket, &mut conn, Some(20), true, SystemTime::now())
            .await
            .unwrap();
        assert_eq!((done.deleted, done.rewritten, done.leftovers), (1, 1, 0));
        let listed: Vec<PackId> = list_packs(&bucket)
            .await
            .unwrap()
            .iter()
            .map(|p| p.id)
            .collect();
        assert!(!listed.contains(&dead) && !listed.contains(&sparse));
        assert!(
            listed.contains(&full) && listed.contains(&flight),
            "a run's pack is kept"
        );
        for b in [&blobs[2], &blobs[6], &blobs[7]] {
            let hash = *blake3::hash(b).as_bytes();
            let (pack, entry) = locate_blob(&conn, &hash).unwrap().unwrap();
            assert_eq!(&read_blob(&bucket, &pack, &entry).await.unwrap(), b);
        }
        assert!(locate_blob(&conn, blake3::hash(&blobs[0]).as_bytes())
            .unwrap()
            .is_none());

        // At the receiver's start (no run), the unrecorded pack goes too.
        let done = collect(&bucket, &mut conn, None, true, SystemTime::now())
            .await
            .unwrap();
        assert_eq!(done.leftovers, 1);
        assert_eq!(list_packs(&bucket).await.unwrap().len(), 2);
    }
}
