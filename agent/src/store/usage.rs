//! How many bytes a sender has stored: what a per-sender quota is checked
//! against.

use rusqlite::params;

use super::{Store, StoreError};

impl Store {
    /// Bytes the sender with catalog id `sender_id` has stored, in every
    /// folder, current and old versions together, as the catalog records
    /// them. Versions of one path with the same content are counted once: a
    /// metadata-only change (a touched file) records a new version that
    /// shares the bytes already stored. Pruned versions no longer count.
    pub fn stored_bytes(&self, sender_id: i64) -> Result<u64, StoreError> {
        let cat = self.catalog();
        let total: i64 = cat
            .conn()
            .query_row(
                "SELECT coalesce(sum(size), 0) FROM (
                     SELECT DISTINCT folder, path, hash, size FROM versions
                     WHERE sender_id = ?1 AND kind = 'file')",
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
}
