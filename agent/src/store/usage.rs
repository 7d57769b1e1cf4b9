//! How many bytes a sender has stored: what a per-sender quota is checked
//! against.

use rusqlite::params;

use super::{Store, StoreError};

impl Store {
    /// Bytes the sender with catalog id `sender_id` has stored, in every
    /// folder, current and old versions together, as the catalog records
    /// them. A file counts what it takes on disk, at most its size: a sparse
    /// file's holes are not stored and do not count. Versions of one path
    /// with the same content are counted once: a metadata-only change (a
    /// touched file) records a new version that shares the bytes already
    /// stored. Pruned versions no longer count.
    pub fn stored_bytes(&self, sender_id: i64) -> Result<u64, StoreError> {
        let cat = self.catalog();
        let total: i64 = cat
            .conn()
            .query_row(
                "SELECT coalesce(sum(bytes), 0) FROM (
                     SELECT min(coalesce(s.stored, v.size)) AS bytes
                     FROM versions v LEFT JOIN stored_sizes s ON s.version_id = v.id
                     WHERE v.sender_id = ?1 AND v.kind = 'file'
                     GROUP BY v.folder, v.path, v.hash, v.size)",
                params![sender_id],
                |r| r.get(0),
            )
            .map_err(|e| cat.err(e))?;
        u64::try_from(total).map_err(|_| cat.corrupt(format!("negative stored size {total}")))
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used)] // a failing unwrap is a failing test
mod tests {
    use super::super::tests::{file_entry, fixture, put_file, rel};
    use crate::store::Op;
    use ferry_proto::Name;

    #[test]
    fn counts_current_and_old_versions_per_sender() {
        let (_dir, store, a) = fixture();
        assert_eq!(store.stored_bytes(a.sender_id).unwrap(), 0);
        let run = store.begin_run(&a).unwrap();
        put_file(&store, &a, run, "x", &[1; 100], 1);
        put_file(&store, &a, run, "y", &[2; 10], 1);
        assert_eq!(store.stored_bytes(a.sender_id).unwrap(), 110);
        // Replacing x keeps the old version: both count.
        put_file(&store, &a, run, "x", &[3; 50], 2);
        assert_eq!(store.stored_bytes(a.sender_id).unwrap(), 160);
        // The same content with another mtime shares the bytes.
        let entry = file_entry("y", &[2; 10], 99, 0o644);
        let hash = *blake3::hash(&[2; 10]).as_bytes();
        let results = store.apply_batch(&a, run, vec![Op::Metadata { entry, hash }]);
        assert!(results.iter().all(Result::is_ok), "{results:?}");
        assert_eq!(store.versions(&a, &rel("y")).unwrap().len(), 2);
        assert_eq!(store.stored_bytes(a.sender_id).unwrap(), 160);
        // Another sender's bytes are its own.
        let b = store.add_sender("dev-b", &Name::new("b").unwrap()).unwrap();
        let b = store.namespace(&b, &Name::new("docs").unwrap());
        let run_b = store.begin_run(&b).unwrap();
        put_file(&store, &b, run_b, "x", &[4; 7], 1);
        assert_eq!(store.stored_bytes(b.sender_id).unwrap(), 7);
        assert_eq!(store.stored_bytes(a.sender_id).unwrap(), 160);
    }

    #[test]
    fn a_sparse_file_is_stored_with_its_holes_and_counts_what_it_takes() {
        let (_dir, store, a) = fixture();
        let run = store.begin_run(&a).unwrap();
        // 64 MiB, of which 64 KiB are data: in the middle and at the start,
        // and the file ends in a hole.
        let mut data = vec![0u8; 64 << 20];
        data[..4096].fill(1);
        data[(32 << 20) + 5..(32 << 20) + 5 + (60 << 10)].fill(2);
        put_file(&store, &a, run, "sparse", &data, 1);
        let stored = store.stored_bytes(a.sender_id).unwrap();
        assert!(
            ((64 << 10)..=(256 << 10)).contains(&stored),
            "{stored} bytes counted for 64 KiB of data"
        );
        let at = store.root().join("lap/docs/sparse");
        let meta = std::fs::metadata(&at).unwrap();
        assert_eq!(meta.len(), data.len() as u64);
        assert!(crate::sparse::allocated(&meta) <= (256 << 10));
        assert!(std::fs::read(&at).unwrap() == data, "content differs");
        // A touched copy shares the bytes; a dense file counts its size.
        let entry = file_entry("sparse", &data, 2, 0o600);
        let hash = *blake3::hash(&data).as_bytes();
        let results = store.apply_batch(&a, run, vec![Op::Metadata { entry, hash }]);
        assert!(results.iter().all(Result::is_ok), "{results:?}");
        assert_eq!(store.stored_bytes(a.sender_id).unwrap(), stored);
        put_file(&store, &a, run, "dense", &[5; 10_000], 1);
        assert_eq!(store.stored_bytes(a.sender_id).unwrap(), stored + 10_000);
    }

    /// Regression: the read-only open queried `stored_sizes`, which only a
    /// writable open creates, so a catalog no current receiver had opened
    /// failed `ferry senders list --store`.
    #[test]
    fn a_catalog_without_stored_sizes_reads_as_no_sparse_files() {
        let (dir, store, a) = fixture();
        let run = store.begin_run(&a).unwrap();
        put_file(&store, &a, run, "x", &[1; 100], 1);
        put_file(&store, &a, run, "x", &[2; 10], 2);
        let root = store.root().to_path_buf();
        drop(store);
        // As a receiver from before the table left it.
        let db = rusqlite::Connection::open(root.join(".ferry/catalog.db")).unwrap();
        db.execute_batch("DROP TABLE stored_sizes").unwrap();
        drop(db);

        let ro = crate::store::Store::open_read_only(&root).unwrap();
        assert_eq!(ro.stored_bytes(a.sender_id).unwrap(), 110);
        let report = crate::senders::list(&root).unwrap();
        assert_eq!(report.senders.len(), 1, "{report:?}");
        assert_eq!(report.senders[0].current_bytes, 10);
        assert_eq!(report.senders[0].stored_bytes, 110);
        // The read left the catalog as it was.
        let db = rusqlite::Connection::open(root.join(".ferry/catalog.db")).unwrap();
        let tables: i64 = db
            .query_row(
                "SELECT count(*) FROM sqlite_master WHERE name = 'stored_sizes'",
                [],
                |r| r.get(0),
            )
            .unwrap();
        assert_eq!(tables, 0);
        drop(dir);
    }
}
