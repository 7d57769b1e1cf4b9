//! Checking the bucket against the catalog, both ways: every pack the
//! catalog names is read whole, its bytes checked against its name, and
//! every blob the catalog locates in it re-hashed from those bytes; every
//! pack in the bucket that the catalog does not name is reported (a crash
//! between a PUT and its catalog transaction leaves one: nothing is lost,
//! retention removes it). Packs are read [`PARALLEL`] at a time.

use std::collections::{BTreeMap, BTreeSet};

use futures_util::{stream, StreamExt};
use rusqlite::Connection;

use super::pack::{open_blob, BlobEntry, PackId};
use super::packs::{list_packs, read_pack, PackStoreError};
use super::Bucket;

/// Packs read at the same time.
pub const PARALLEL: usize = 4;

/// One thing wrong (or left over) in the bucket.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum BucketFinding {
    /// A pack the catalog names is not in the bucket: its blobs are lost.
    MissingPack { pack: String, blobs: usize },
    /// A pack whose bytes do not match its name, or whose index is damaged.
    DamagedPack { pack: String, detail: String },
    /// A blob the catalog locates in a pack is not whole there.
    DamagedBlob {
        pack: String,
        blob: String,
        detail: String,
    },
    /// A pack in the bucket the catalog does not name (harmless).
    Unrecorded { pack: String },
}

impl BucketFinding {
    /// Whether this loses data (unrecorded packs do not).
    pub fn is_breach(&self) -> bool {
        !matches!(self, BucketFinding::Unrecorded { .. })
    }
}

/// What [`verify_bucket`] found.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct BucketReport {
    pub packs_checked: usize,
    pub blobs_checked: usize,
    pub bytes_read: u64,
    pub findings: Vec<BucketFinding>,
}

/// Verifying could not run (reading the catalog, or listing the bucket).
#[derive(Debug, thiserror::Error)]
pub enum VerifyBucketError {
    #[error("could not read the catalog's blob locations")]
    Catalog(#[source] rusqlite::Error),
    #[error(transparent)]
    List(PackStoreError),
}

fn hex(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

/// The catalog's packs and the blobs it locates in each.
fn catalog_packs(conn: &Connection) -> rusqlite::Result<BTreeMap<PackId, Vec<BlobEntry>>> {
    let mut out: BTreeMap<PackId, Vec<BlobEntry>> = BTreeMap::new();
    let mut packs = conn.prepare("SELECT id FROM packs")?;
    for id in packs.query_map([], |row| row.get::<_, Vec<u8>>(0))? {
        if let Ok(id) = <[u8; 32]>::try_from(id?.as_slice()) {
            out.entry(PackId(id)).or_default();
        }
    }
    let mut blobs =
        conn.prepare("SELECT hash, pack, offset, stored_len, raw_len, compressed FROM blobs")?;
    let rows = blobs.query_map([], |row| {
        Ok((
            row.get::<_, Vec<u8>>(0)?,
            row.get::<_, Vec<u8>>(1)?,
            row.get::<_, i64>(2)?,
            row.get::<_, u32>(3)?,
            row.get::<_, u32>(4)?,
            row.get::<_, bool>(5)?,
        ))
    })?;
    for row in rows {
        let (hash, pack, offset, stored_len, raw_len, compressed) = row?;
        let (Ok(hash), Ok(pack)) = (
            <[u8; 32]>::try_from(hash.as_slice()),
            <[u8; 32]>::try_from(pack.as_slice()),
        ) else {
            continue;
        };
        out.entry(PackId(pack)).or_default().push(BlobEntry {
            hash,
            offset: offset as u64,
            stored_len,
            raw_len,
            compressed,
        });
    }
    Ok(out)
}

/// Checks the bucket against the catalog `conn` (a bucket store's).
pub async fn verify_bucket(
    bucket: &Bucket,
    conn: &Connection,
) -> Result<BucketReport, VerifyBucketError> {
    let expected = catalog_packs(conn).map_err(VerifyBucketError::Catalog)?;
    let listed: BTreeSet<PackId> = list_packs(bucket)
        .await
        .map_err(VerifyBucketError::List)?
        .into_iter()
        .map(|p| p.id)
        .collect();
    let mut report = BucketReport::default();
    for id in listed.iter().filter(|id| !expected.contains_key(id)) {
        report
            .findings
            .push(BucketFinding::Unrecorded { pack: id.hex() });
    }
    let checks = stream::iter(expected.into_iter().map(|(id, blobs)| async move {
        let mut findings = Vec::new();
        let pack = id.hex();
        let bytes = match read_pack(bucket, &id).await {
            Ok((bytes, _index)) => bytes,
            Err(PackStoreError::Missing { .. }) => {
                findings.push(BucketFinding::MissingPack {
                    pack,
                    blobs: blobs.len(),
                });
                return (0, 0, findings);
            }
            Err(e) => {
                findings.push(BucketFinding::DamagedPack {
                    pack,
                    detail: crate::chain::chain(&e),
                });
                return (0, 0, findings);
            }
        };
        for blob in &blobs {
            let range = blob.range();
            let stored = usize::try_from(range.start)
                .ok()
                .zip(usize::try_from(range.end).ok())
                .and_then(|(s, e)| bytes.get(s..e));
            let result = match stored {
                Some(stored) => open_blob(blob, stored)
                    .map(|_| ())
                    .map_err(|e| e.to_string()),
                None => Err("its range lies outside the pack".to_string()),
            };
            if let Err(detail) = result {
                findings.push(BucketFinding::DamagedBlob {
                    pack: pack.clone(),
                    blob: hex(&blob.hash),
                    detail,
                });
            }
        }
        (bytes.len() as u64, blobs.len(), findings)
    }))
    .buffer_unordered(PARALLEL)
    .collect::<Vec<_>>()
    .await;
    for (bytes, blobs, findings) in checks {
        report.packs_checked += 1;
        report.blobs_checked += blobs;
        report.bytes_read += bytes;
        report.findings.extend(findings);
    }
    Ok(report)
}

#[cfg(test)]
mod tests {
    use object_store::{ObjectStoreExt, PutPayload};

    use super::*;
    use crate::bucket::blob_index::{ensure_tables, record_pack};
    use crate::bucket::{memory_bucket, put_pack, PackWriter};

    async fn stored_pack(
        bucket: &Bucket,
        conn: &mut Connection,
        seed: u8,
    ) -> (PackId, Vec<BlobEntry>) {
        let mut w = PackWriter::new();
        for i in 0..10u8 {
            let blob = vec![seed.wrapping_add(i); 500 + i as usize];
            w.push(*blake3::hash(&blob).as_bytes(), &blob);
        }
        let (id, bytes, entries) = w.finish();
        put_pack(bucket, &id, bytes.clone()).await.unwrap();
        let tx = conn.transaction().unwrap();
        record_pack(&tx, &id, 1, bytes.len() as u64, &entries).unwrap();
        tx.commit().unwrap();
        (id, entries)
    }

    #[tokio::test]
    async fn every_loss_and_damage_is_named_and_leftovers_are_told_apart() {
        let bucket = memory_bucket();
        let mut conn = Connection::open_in_memory().unwrap();
        ensure_tables(&conn).unwrap();
        stored_pack(&bucket, &mut conn, 1).await;
        let (lost, _) = stored_pack(&bucket, &mut conn, 50).await;
        let (flipped, entries) = stored_pack(&bucket, &mut conn, 100).await;

        let clean = verify_bucket(&bucket, &conn).await.unwrap();
        assert!(clean.findings.is_empty(), "{:?}", clean.findings);
        assert_eq!((clean.packs_checked, clean.blobs_checked), (3, 30));

        bucket.store().delete(&lost.key(&bucket)).await.unwrap();
        let got = bucket.store().get(&flipped.key(&bucket)).await.unwrap();
        let mut bad = got.bytes().await.unwrap().to_vec();
        bad[entries[3].offset as usize] ^= 1;
        bucket
            .store()
            .put(&flipped.key(&bucket), PutPayload::from(bad))
            .await
            .unwrap();
        // A pack put but never recorded (a crash before the catalog).
        let mut w = PackWriter::new();
        w.push(*blake3::hash(b"orphan").as_bytes(), b"orphan");
        let (orphan, obytes, _) = w.finish();
        put_pack(&bucket, &orphan, obytes).await.unwrap();

        let report = verify_bucket(&bucket, &conn).await.unwrap();
        let mut kinds: Vec<_> = report
            .findings
            .iter()
            .map(|f| match f {
                BucketFinding::MissingPack { pack, blobs } => {
                    format!("missing {} {blobs}", &pack[..8])
                }
                BucketFinding::DamagedPack { pack, .. } => format!("damaged {}", &pack[..8]),
                BucketFinding::DamagedBlob { pack, .. } => format!("blob {}", &pack[..8]),
                BucketFinding::Unrecorded { pack } => format!("unrecorded {}", &pack[..8]),
            })
            .collect();
        kinds.sort();
        let mut want = vec![
            format!("missing {} 10", &lost.hex()[..8]),
            format!("damaged {}", &flipped.hex()[..8]),
            format!("unrecorded {}", &orphan.hex()[..8]),
        ];
        want.sort();
        assert_eq!(kinds, want);
        assert_eq!(report.findings.iter().filter(|f| f.is_breach()).count(), 2);
        assert_eq!(report.packs_checked, 3);
    }
}
