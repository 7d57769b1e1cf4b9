//! Where content blobs are, for a store that keeps its bytes in a bucket
//! (see `crate::bucket`): the packs put in the bucket, and for each blob
//! (named by the blake3 of its content) the pack and range holding it.
//!
//! A file version's blobs follow from its row: its chunk list (large files)
//! or else its own hash (the whole content is one blob). So a version needs
//! no rows of its own here, and versions share blobs for free. A blob has
//! one location: the first pack recorded with it (a blob put twice, e.g.
//! after a crash between a PUT and its catalog transaction, stays where it
//! was first recorded; the other copy is unreferenced and retention removes
//! it). The tables are created by [`ensure_tables`] in a bucket store's
//! catalog only; the queries read its `versions` and `chunk_lists` tables.

use std::collections::HashSet;

use rusqlite::{params, Connection, OptionalExtension, Transaction};

use super::{BlobEntry, PackId, PackUse};
use crate::chunk::decode_list;

/// The tables of a bucket store's catalog.
const BLOB_TABLES: &str = "
CREATE TABLE IF NOT EXISTS packs (
    id BLOB PRIMARY KEY,
    written_ms INTEGER NOT NULL,
    stored_bytes INTEGER NOT NULL
);
CREATE TABLE IF NOT EXISTS blobs (
    hash BLOB PRIMARY KEY,
    pack BLOB NOT NULL REFERENCES packs(id),
    offset INTEGER NOT NULL,
    stored_len INTEGER NOT NULL,
    raw_len INTEGER NOT NULL,
    compressed INTEGER NOT NULL
);
CREATE INDEX IF NOT EXISTS blobs_pack ON blobs (pack);
";

/// Creates the blob tables when missing.
pub fn ensure_tables(conn: &Connection) -> rusqlite::Result<()> {
    conn.execute_batch(BLOB_TABLES)
}

fn sql(n: u64) -> i64 {
    i64::try_from(n).unwrap_or(i64::MAX)
}

/// Records the pack `id` (put in the bucket at `written_ms`) and the
/// locations of its blobs not recorded elsewhere already.
pub fn record_pack(
    tx: &Transaction<'_>,
    id: &PackId,
    written_ms: u64,
    stored_bytes: u64,
    entries: &[BlobEntry],
) -> rusqlite::Result<()> {
    put_pack_rows(tx, id, written_ms, stored_bytes, entries, false)
}

/// Records pack `id` and its blobs: a blob located elsewhere already keeps
/// that location, unless `move_blobs`.
fn put_pack_rows(
    tx: &Transaction<'_>,
    id: &PackId,
    written_ms: u64,
    stored_bytes: u64,
    entries: &[BlobEntry],
    move_blobs: bool,
) -> rusqlite::Result<()> {
    tx.execute(
        "INSERT OR IGNORE INTO packs (id, written_ms, stored_bytes) VALUES (?1, ?2, ?3)",
        params![&id.0[..], sql(written_ms), sql(stored_bytes)],
    )?;
    let mut insert = tx.prepare_cached(if move_blobs {
        "INSERT INTO blobs (hash, pack, offset, stored_len, raw_len, compressed)
         VALUES (?1, ?2, ?3, ?4, ?5, ?6)
         ON CONFLICT (hash) DO UPDATE SET pack = excluded.pack, offset = excluded.offset,
             stored_len = excluded.stored_len, raw_len = excluded.raw_len,
             compressed = excluded.compressed"
    } else {
        "INSERT OR IGNORE INTO blobs (hash, pack, offset, stored_len, raw_len, compressed)
         VALUES (?1, ?2, ?3, ?4, ?5, ?6)"
    })?;
    for e in entries {
        insert.execute(params![
            &e.hash[..],
            &id.0[..],
            sql(e.offset),
            e.stored_len,
            e.raw_len,
            e.compressed
        ])?;
    }
    Ok(())
}

/// Where the blob `hash` is, if recorded.
pub fn locate_blob(
    conn: &Connection,
    hash: &[u8; 32],
) -> rusqlite::Result<Option<(PackId, BlobEntry)>> {
    conn.prepare_cached(
        "SELECT pack, offset, stored_len, raw_len, compressed FROM blobs WHERE hash = ?1",
    )?
    .query_row([&hash[..]], |row| {
        let pack: Vec<u8> = row.get(0)?;
        let mut id = [0u8; 32];
        if pack.len() == 32 {
            id.copy_from_slice(&pack);
        }
        Ok((
            PackId(id),
            BlobEntry {
                hash: *hash,
                offset: row.get::<_, i64>(1)? as u64,
                stored_len: row.get(2)?,
                raw_len: row.get(3)?,
                compressed: row.get(4)?,
            },
        ))
    })
    .optional()
}

/// Each pack's use: its stored bytes and the bytes of its blobs that a
/// version still in the catalog needs. Computed in SQLite (a temporary
/// table of the live blob hashes), so memory does not grow with the store.
pub fn pack_uses(conn: &mut Connection) -> rusqlite::Result<Vec<PackUse>> {
    let tx = conn.transaction()?;
    tx.execute_batch(
        "CREATE TEMP TABLE IF NOT EXISTS live_blobs (hash BLOB PRIMARY KEY);
         DELETE FROM live_blobs;
         INSERT OR IGNORE INTO live_blobs (hash)
             SELECT v.hash FROM versions v
             WHERE v.kind = 'file' AND v.hash IS NOT NULL
               AND NOT EXISTS (SELECT 1 FROM chunk_lists c WHERE c.version_id = v.id);",
    )?;
    {
        let mut lists = tx.prepare("SELECT list FROM chunk_lists")?;
        let mut insert = tx.prepare("INSERT OR IGNORE INTO live_blobs (hash) VALUES (?1)")?;
        let mut rows = lists.query([])?;
        while let Some(row) = rows.next()? {
            let bytes: Vec<u8> = row.get(0)?;
            for chunk in decode_list(&bytes).unwrap_or_default() {
                insert.execute([&chunk.hash[..]])?;
            }
        }
    }
    let uses = {
        let mut stmt = tx.prepare(
            "SELECT p.id, p.written_ms, p.stored_bytes,
                    COALESCE((SELECT SUM(b.stored_len) FROM blobs b JOIN live_blobs l ON l.hash = b.hash
                              WHERE b.pack = p.id), 0),
                    COALESCE((SELECT SUM(b.stored_len) FROM blobs b WHERE b.pack = p.id), 0)
             FROM packs p ORDER BY p.id",
        )?;
        let rows = stmt.query_map([], |row| {
            let pack: Vec<u8> = row.get(0)?;
            let mut id = [0u8; 32];
            if pack.len() == 32 {
                id.copy_from_slice(&pack);
            }
            Ok(PackUse {
                id: PackId(id),
                written_ms: row.get::<_, i64>(1)? as u64,
                stored_bytes: row.get::<_, i64>(2)? as u64,
                live_bytes: row.get::<_, i64>(3)? as u64,
                blob_bytes: row.get::<_, i64>(4)? as u64,
            })
        })?;
        rows.collect::<rusqlite::Result<Vec<_>>>()?
    };
    tx.execute_batch("DELETE FROM live_blobs;")?;
    tx.commit()?;
    Ok(uses)
}

/// The live blobs of pack `id` (to rewrite it): their entries.
pub fn live_blobs_of(conn: &Connection, id: &PackId) -> rusqlite::Result<Vec<BlobEntry>> {
    let live: HashSet<[u8; 32]> = {
        let mut set = HashSet::new();
        let mut files = conn.prepare(
            "SELECT v.hash FROM versions v JOIN blobs b ON b.hash = v.hash
             WHERE b.pack = ?1 AND v.kind = 'file'",
        )?;
        for hash in files.query_map([&id.0[..]], |row| row.get::<_, Vec<u8>>(0))? {
            if let Ok(h) = <[u8; 32]>::try_from(hash?.as_slice()) {
                set.insert(h);
            }
        }
        let mut lists = conn.prepare("SELECT list FROM chunk_lists")?;
        let in_pack: HashSet<[u8; 32]> = {
            let mut s = HashSet::new();
            let mut stmt = conn.prepare("SELECT hash FROM blobs WHERE pack = ?1")?;
            for hash in stmt.query_map([&id.0[..]], |row| row.get::<_, Vec<u8>>(0))? {
                if let Ok(h) = <[u8; 32]>::try_from(hash?.as_slice()) {
                    s.insert(h);
                }
            }
            s
        };
        for list in lists.query_map([], |row| row.get::<_, Vec<u8>>(0))? {
            for chunk in decode_list(&list?).unwrap_or_default() {
                if in_pack.contains(&chunk.hash) {
                    set.insert(chunk.hash);
                }
            }
        }
        set
    };
    let mut out = Vec::new();
    for hash in live {
        if let Some((pack, entry)) = locate_blob(conn, &hash)? {
            if pack == *id {
                out.push(entry);
            }
        }
    }
    out.sort_by_key(|e| e.offset);
    Ok(out)
}

/// Points the blobs of `entries` at their new pack `id` (after a rewrite
/// put it) and records that pack.
pub fn repoint(
    tx: &Transaction<'_>,
    id: &PackId,
    written_ms: u64,
    stored_bytes: u64,
    entries: &[BlobEntry],
) -> rusqlite::Result<()> {
    put_pack_rows(tx, id, written_ms, stored_bytes, entries, true)
}

/// Forgets pack `id` and the blobs located in it (before deleting it from
/// the bucket: a crash after this leaves an unrecorded pack, which the next
/// pass of retention finds by listing and deletes).
pub fn forget_pack(tx: &Transaction<'_>, id: &PackId) -> rusqlite::Result<()> {
    tx.execute("DELETE FROM blobs WHERE pack = ?1", [&id.0[..]])?;
    tx.execute("DELETE FROM packs WHERE id = ?1", [&id.0[..]])?;
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::bucket::{plan_gc, PackWriter};
    use crate::chunk::{encode_list, ChunkInfo};

    fn catalog() -> Connection {
        let conn = Connection::open_in_memory().unwrap();
        // The columns of the store's catalog these queries read.
        conn.execute_batch(
            "CREATE TABLE versions (id INTEGER PRIMARY KEY, sender_id INTEGER, folder TEXT,
                 path BLOB, kind TEXT, size INTEGER, mtime_ns INTEGER, mode INTEGER,
                 hash BLOB, run_id INTEGER);
             CREATE TABLE chunk_lists (version_id INTEGER PRIMARY KEY, list BLOB NOT NULL);",
        )
        .unwrap();
        ensure_tables(&conn).unwrap();
        ensure_tables(&conn).unwrap();
        conn
    }

    fn h(data: &[u8]) -> [u8; 32] {
        *blake3::hash(data).as_bytes()
    }

    fn file_version(conn: &Connection, id: i64, hash: &[u8; 32]) {
        conn.execute(
            "INSERT INTO versions (id, sender_id, folder, path, kind, size, mtime_ns, mode, hash, run_id)
             VALUES (?1, 1, 'f', ?2, 'file', 1, 0, 420, ?3, 1)",
            params![id, format!("p{id}").into_bytes(), &hash[..]],
        )
        .unwrap();
    }

    #[test]
    fn blobs_are_located_where_first_recorded_and_packs_judged_by_live_bytes() {
        let mut conn = catalog();
        let (a, b, c, d) = (&b"aaaa"[..], &b"bbbbbbbb"[..], &b"cc"[..], &b"dddddd"[..]);
        let mut w = PackWriter::new();
        for x in [a, b, c] {
            w.push(h(x), x);
        }
        let (p1, bytes1, e1) = w.finish();
        let mut w = PackWriter::new();
        for x in [c, d] {
            w.push(h(x), x);
        }
        let (p2, bytes2, e2) = w.finish();
        {
            let tx = conn.transaction().unwrap();
            record_pack(&tx, &p1, 100, bytes1.len() as u64, &e1).unwrap();
            record_pack(&tx, &p2, 200, bytes2.len() as u64, &e2).unwrap();
            tx.commit().unwrap();
        }
        // c is in both packs: it stays where it was recorded first.
        assert_eq!(locate_blob(&conn, &h(c)).unwrap().unwrap().0, p1);
        assert_eq!(locate_blob(&conn, &h(d)).unwrap().unwrap().0, p2);
        assert!(locate_blob(&conn, &h(b"zz")).unwrap().is_none());

        // Versions: a whole file `a`, and a chunked file made of chunks c and d.
        file_version(&conn, 1, &h(a));
        file_version(&conn, 2, &h(b"the whole big file"));
        let list = encode_list(&[
            ChunkInfo { len: 2, hash: h(c) },
            ChunkInfo { len: 6, hash: h(d) },
        ]);
        conn.execute(
            "INSERT INTO chunk_lists (version_id, list) VALUES (2, ?1)",
            [&list],
        )
        .unwrap();
        let uses = pack_uses(&mut conn).unwrap();
        let u1 = uses.iter().find(|u| u.id == p1).unwrap();
        let u2 = uses.iter().find(|u| u.id == p2).unwrap();
        assert_eq!(
            u1.live_bytes,
            u64::from(e1[0].stored_len + e1[2].stored_len)
        );
        assert_eq!(
            u2.live_bytes,
            u64::from(e2[1].stored_len),
            "c counts in p1 only"
        );

        let mut live = live_blobs_of(&conn, &p1).unwrap();
        live.sort_by_key(|e| e.hash);
        let mut want = vec![e1[0], e1[2]];
        want.sort_by_key(|e| e.hash);
        assert_eq!(live, want);

        // Once version 1 goes, `a` is dead; when the chunked file goes too,
        // both packs hold nothing live and retention deletes them.
        conn.execute("DELETE FROM versions WHERE id = 1", [])
            .unwrap();
        conn.execute("DELETE FROM chunk_lists", []).unwrap();
        conn.execute("DELETE FROM versions WHERE id = 2", [])
            .unwrap();
        let uses = pack_uses(&mut conn).unwrap();
        assert!(uses.iter().all(|u| u.live_bytes == 0));
        let plan = plan_gc(&uses, None);
        assert_eq!(plan.delete.len(), 2);
        let tx = conn.transaction().unwrap();
        forget_pack(&tx, &p1).unwrap();
        tx.commit().unwrap();
        assert!(locate_blob(&conn, &h(a)).unwrap().is_none());
        assert_eq!(pack_uses(&mut conn).unwrap().len(), 1);
    }

    #[test]
    fn a_rewrite_repoints_the_live_blobs() {
        let mut conn = catalog();
        let (a, b) = (&b"alive"[..], &b"dead bytes"[..]);
        let mut w = PackWriter::new();
        w.push(h(a), a);
        w.push(h(b), b);
        let (old, bytes, entries) = w.finish();
        let tx = conn.transaction().unwrap();
        record_pack(&tx, &old, 1, bytes.len() as u64, &entries).unwrap();
        tx.commit().unwrap();
        file_version(&conn, 1, &h(a));

        let live = live_blobs_of(&conn, &old).unwrap();
        assert_eq!(live.len(), 1);
        let mut w = PackWriter::new();
        w.push(h(a), a);
        let (new, new_bytes, new_entries) = w.finish();
        let tx = conn.transaction().unwrap();
        repoint(&tx, &new, 2, new_bytes.len() as u64, &new_entries).unwrap();
        tx.commit().unwrap();
        assert_eq!(locate_blob(&conn, &h(a)).unwrap().unwrap().0, new);
        let uses = pack_uses(&mut conn).unwrap();
        assert_eq!(uses.iter().find(|u| u.id == old).unwrap().live_bytes, 0);
        assert!(uses.iter().find(|u| u.id == new).unwrap().live_bytes > 0);
    }
}
