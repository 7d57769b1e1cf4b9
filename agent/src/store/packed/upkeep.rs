//! Upkeep of a bucket store: the catalog's copies, retention's collection
//! of packs, and `ferry verify`.

use std::path::PathBuf;
use std::sync::atomic::Ordering;
use std::time::SystemTime;

use super::super::catalog;
use super::super::error::StoreError;
use super::super::Store;
use super::{bucket_err, Packed};
use crate::bucket::{self, blob_index};
use crate::chunk;

impl Store {
    /// Puts a copy of the catalog in the bucket (after a run).
    pub(in crate::store) fn copy_catalog(&self, packed: &Packed) -> Result<(), StoreError> {
        packed.writable().map_err(|detail| StoreError::Bucket {
            action: "copy the catalog to",
            bucket: packed.bucket().name().to_owned(),
            detail,
        })?;
        let path = catalog::catalog_path(&self.root);
        let uploaded = packed
            .block_on(bucket::upload_catalog(
                packed.bucket(),
                &path,
                SystemTime::now(),
            ))
            .map_err(|e| {
                packed.copy_owed.store(true, Ordering::Relaxed);
                bucket_err(packed.bucket(), "copy the catalog to", &e)
            })?;
        packed.copy_owed.store(false, Ordering::Relaxed);
        packed
            .last_copy_ms
            .store(super::super::now_ms(), Ordering::Relaxed);
        let counts = &packed.counts;
        counts.catalog_copies.fetch_add(1, Ordering::Relaxed);
        tracing::info!(
            catalog_copy = %uploaded.key,
            catalog_bytes = uploaded.stored_bytes,
            packs_put = counts.packs_put.load(Ordering::Relaxed),
            pack_bytes_put = counts.pack_bytes_put.load(Ordering::Relaxed),
            catalog_copies = counts.catalog_copies.load(Ordering::Relaxed),
            ranged_gets = counts.ranged_gets.load(Ordering::Relaxed),
            "bucket use since the receiver started"
        );
        Ok(())
    }

    /// Deletes the packs no version uses any more and rewrites those
    /// mostly unused (`bucket::collect`). The caller holds the write lock,
    /// so no batch is between its PUTs and its record meanwhile; packs of
    /// runs still in progress are left alone.
    pub(in crate::store) fn collect_packs(
        &self,
        packed: &Packed,
    ) -> Result<bucket::Collected, StoreError> {
        packed.writable().map_err(|detail| StoreError::Bucket {
            action: "collect unused packs in",
            bucket: packed.bucket().name().to_owned(),
            detail,
        })?;
        let mut cat = self.catalog();
        let oldest_running: Option<i64> = cat
            .conn()
            .query_row(
                "SELECT min(started_ms) FROM runs WHERE status = 'running'",
                [],
                |r| r.get(0),
            )
            .map_err(|e| cat.err(e))?;
        let oldest = oldest_running.map(|ms| ms.max(0) as u64);
        packed
            .block_on(bucket::collect(
                packed.bucket(),
                cat.conn_mut(),
                oldest,
                oldest.is_none(),
                SystemTime::now(),
            ))
            .map_err(|e| bucket_err(packed.bucket(), "collect unused packs in", &e))
    }

    /// `ferry verify` of a bucket store: the bucket against the catalog
    /// both ways (every pack the catalog names read whole, every blob
    /// re-hashed; packs nothing names counted as leftovers), and every file
    /// version's blobs located.
    pub(in crate::store) fn verify_packed(
        &self,
        packed: &Packed,
    ) -> Result<super::super::VerifyReport, StoreError> {
        use super::super::{Finding, FindingKind};
        let bucket = packed.bucket();
        let cat = self.catalog();
        let found = packed
            .block_on(bucket::verify_bucket(bucket, cat.conn()))
            .map_err(|e| bucket_err(bucket, "verify", &e))?;
        let mut report = super::super::VerifyReport {
            files_checked: found.blobs_checked as u64,
            bytes_checked: found.bytes_read,
            entries_walked: found.packs_checked as u64,
            ..Default::default()
        };
        let pack_finding = |pack: &str, kind: FindingKind| Finding {
            sender: String::new(),
            folder: String::new(),
            path: format!("packs/{pack}"),
            version: None,
            current: false,
            location: PathBuf::from(bucket.name()).join("ferry/packs").join(pack),
            kind,
        };
        for f in found.findings {
            match f {
                bucket::BucketFinding::Unrecorded { .. } => report.unrecorded += 1,
                bucket::BucketFinding::MissingPack { pack, blobs } => {
                    report.findings.push(pack_finding(
                        &pack,
                        FindingKind::Lost {
                            reason: format!("the pack holding {blobs} blobs is not in the bucket"),
                        },
                    ))
                }
                bucket::BucketFinding::DamagedPack { pack, detail } => report.findings.push(
                    pack_finding(&pack, FindingKind::Unreadable { error: detail }),
                ),
                bucket::BucketFinding::DamagedBlob { pack, blob, detail } => {
                    report.findings.push(pack_finding(
                        &pack,
                        FindingKind::Unreadable {
                            error: format!("blob {blob}: {detail}"),
                        },
                    ))
                }
            }
        }
        // Every file version names blobs the catalog locates.
        let rows = (|| -> rusqlite::Result<Vec<FileRow>> {
            let mut stmt = cat.conn().prepare(
                "SELECT v.id, s.name, v.folder, v.path, v.size, v.hash, c.list, v.replaced_run IS NULL
                 FROM versions v JOIN senders s ON s.id = v.sender_id
                 LEFT JOIN chunk_lists c ON c.version_id = v.id
                 WHERE v.kind = 'file'",
            )?;
            let rows = stmt.query_map([], |r| {
                Ok((r.get(0)?, r.get(1)?, r.get(2)?, r.get(3)?, r.get(4)?, r.get(5)?, r.get(6)?, r.get(7)?))
            })?;
            rows.collect()
        })()
        .map_err(|e| cat.err(e))?;
        for (id, sender, folder, path, size, hash, list, current) in rows {
            let problem = match (list.as_deref().map(chunk::decode_list), hash) {
                (Some(None), _) => Some("its chunk list does not decode".to_string()),
                (Some(Some(list)), _) => {
                    let total: u64 = list.iter().map(|c| u64::from(c.len)).sum();
                    if total != size.max(0) as u64 {
                        Some(format!("its chunks hold {total} bytes, not {size}"))
                    } else {
                        let mut missing = 0;
                        for c in &list {
                            if blob_index::locate_blob(cat.conn(), &c.hash)
                                .map_err(|e| cat.err(e))?
                                .is_none()
                            {
                                missing += 1;
                            }
                        }
                        (missing > 0).then(|| format!("{missing} of its chunks are in no pack"))
                    }
                }
                (None, _) if size == 0 => None,
                (None, Some(h)) if h.len() == 32 => {
                    let mut key = [0u8; 32];
                    key.copy_from_slice(&h);
                    blob_index::locate_blob(cat.conn(), &key)
                        .map_err(|e| cat.err(e))?
                        .is_none()
                        .then(|| "its content is in no pack".to_string())
                }
                (None, _) => Some("it has no content hash".to_string()),
            };
            if let Some(reason) = problem {
                let path = String::from_utf8_lossy(&path).into_owned();
                report.findings.push(Finding {
                    location: PathBuf::from(bucket.name())
                        .join(&sender)
                        .join(&folder)
                        .join(&path),
                    sender,
                    folder,
                    path,
                    version: Some(id),
                    current,
                    kind: FindingKind::Lost { reason },
                });
            }
        }
        Ok(report)
    }
}

/// A file version as `ferry verify` of a bucket store reads it: id,
/// sender, folder, path, size, hash, chunk list, current.
type FileRow = (
    i64,
    String,
    String,
    Vec<u8>,
    i64,
    Option<Vec<u8>>,
    Option<Vec<u8>>,
    bool,
);
