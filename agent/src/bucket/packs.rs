//! Packs in the bucket: putting a finished pack, reading one blob back by
//! its range, listing and deleting packs.
//!
//! A pack counts as stored once its PUT succeeded: only then may the
//! catalog name its blobs (and the receiver answer `Stored` for the files
//! they make). A pack is put whole (at most [`PACK_TARGET`] plus one blob:
//! one request) and never overwritten: its key is the hash of its bytes, so
//! putting the same pack twice (a retry after a lost answer) writes the
//! same bytes.

use bytes::Bytes;
use futures_util::TryStreamExt;
use object_store::{ObjectStoreExt, PutPayload};

use super::pack::{open_blob, BlobEntry, PackError, PackId, PackIndex, PACK_TARGET};
use super::Bucket;

/// A pack or blob could not be put, read, listed or deleted.
#[derive(Debug, thiserror::Error)]
pub enum PackStoreError {
    #[error("could not {action} pack {pack} in {bucket}")]
    Store {
        action: &'static str,
        pack: String,
        bucket: String,
        #[source]
        source: object_store::Error,
    },
    #[error("pack {pack} in {bucket} is missing")]
    Missing { pack: String, bucket: String },
    #[error("pack {pack} in {bucket}")]
    Damaged {
        pack: String,
        bucket: String,
        #[source]
        source: PackError,
    },
    #[error("could not list the packs in {bucket}")]
    List {
        bucket: String,
        #[source]
        source: object_store::Error,
    },
}

/// A pack as listed: its name and size.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ListedPack {
    pub id: PackId,
    pub size: u64,
}

fn err(
    action: &'static str,
    bucket: &Bucket,
    id: &PackId,
) -> impl FnOnce(object_store::Error) -> PackStoreError {
    let (pack, name) = (id.hex(), bucket.name().to_string());
    move |source| match source {
        object_store::Error::NotFound { .. } => PackStoreError::Missing { pack, bucket: name },
        source => PackStoreError::Store {
            action,
            pack,
            bucket: name,
            source,
        },
    }
}

/// Puts the finished pack `bytes`, named `id`.
pub async fn put_pack(bucket: &Bucket, id: &PackId, bytes: Bytes) -> Result<(), PackStoreError> {
    debug_assert!(bytes.len() <= PACK_TARGET + (16 << 20));
    bucket
        .store()
        .put(&id.key(bucket), PutPayload::from(bytes))
        .await
        .map(|_| ())
        .map_err(err("put", bucket, id))
}

/// The content of one blob of pack `id`: its range alone is read, then
/// decompressed and checked against its hash.
pub async fn read_blob(
    bucket: &Bucket,
    id: &PackId,
    entry: &BlobEntry,
) -> Result<Vec<u8>, PackStoreError> {
    let stored = if entry.stored_len == 0 {
        Bytes::new()
    } else {
        bucket
            .store()
            .get_range(&id.key(bucket), entry.range())
            .await
            .map_err(err("read", bucket, id))?
    };
    open_blob(entry, &stored).map_err(|source| PackStoreError::Damaged {
        pack: id.hex(),
        bucket: bucket.name().into(),
        source,
    })
}

/// A whole pack: its bytes checked against its name, and its index.
pub async fn read_pack(bucket: &Bucket, id: &PackId) -> Result<(Bytes, PackIndex), PackStoreError> {
    let bytes = bucket
        .store()
        .get(&id.key(bucket))
        .await
        .map_err(err("read", bucket, id))?
        .bytes()
        .await
        .map_err(err("read", bucket, id))?;
    let damaged = |source| PackStoreError::Damaged {
        pack: id.hex(),
        bucket: bucket.name().into(),
        source,
    };
    if blake3::hash(&bytes).as_bytes() != &id.0 {
        return Err(damaged(PackError::NotAPack {
            detail: "its bytes do not match its name",
        }));
    }
    let index = PackIndex::read(&bytes).map_err(damaged)?;
    Ok((bytes, index))
}

/// Every pack in the bucket (objects under `packs/` whose names are not
/// pack names are left out).
pub async fn list_packs(bucket: &Bucket) -> Result<Vec<ListedPack>, PackStoreError> {
    let prefix = bucket.key(&["packs"]);
    let metas: Vec<_> = bucket
        .store()
        .list(Some(&prefix))
        .try_collect()
        .await
        .map_err(|source| PackStoreError::List {
            bucket: bucket.name().into(),
            source,
        })?;
    let mut packs: Vec<ListedPack> = metas
        .into_iter()
        .filter_map(|meta| {
            let id = PackId::parse_hex(meta.location.filename()?)?;
            Some(ListedPack {
                id,
                size: meta.size,
            })
        })
        .collect();
    packs.sort_by_key(|p| p.id);
    Ok(packs)
}

/// Deletes pack `id` (already gone is fine).
pub async fn delete_pack(bucket: &Bucket, id: &PackId) -> Result<(), PackStoreError> {
    match bucket.store().delete(&id.key(bucket)).await {
        Ok(()) | Err(object_store::Error::NotFound { .. }) => Ok(()),
        Err(source) => Err(err("delete", bucket, id)(source)),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::bucket::{memory_bucket, PackWriter};

    #[tokio::test]
    async fn a_put_pack_lists_and_gives_back_each_blob_by_range() {
        let bucket = memory_bucket();
        let mut w = PackWriter::new();
        let contents: Vec<Vec<u8>> = (0..20u8).map(|i| vec![i; 1000 + i as usize]).collect();
        for c in &contents {
            w.push(*blake3::hash(c).as_bytes(), c);
        }
        let (id, bytes, entries) = w.finish();
        put_pack(&bucket, &id, bytes.clone()).await.unwrap();
        // The same pack again (a retry) is harmless.
        put_pack(&bucket, &id, bytes).await.unwrap();
        for (c, e) in contents.iter().zip(&entries) {
            assert_eq!(&read_blob(&bucket, &id, e).await.unwrap(), c);
        }
        let (_, index) = read_pack(&bucket, &id).await.unwrap();
        assert_eq!(index.entries, entries);
        let listed = list_packs(&bucket).await.unwrap();
        assert_eq!(listed.len(), 1);
        assert_eq!(listed[0].id, id);

        delete_pack(&bucket, &id).await.unwrap();
        delete_pack(&bucket, &id).await.unwrap();
        assert!(matches!(
            read_blob(&bucket, &id, &entries[0]).await,
            Err(PackStoreError::Missing { .. })
        ));
        assert!(list_packs(&bucket).await.unwrap().is_empty());
    }

    #[tokio::test]
    async fn a_pack_whose_bytes_changed_in_the_store_is_named_damaged() {
        let bucket = memory_bucket();
        let mut w = PackWriter::new();
        let c = vec![7u8; 3000];
        w.push(*blake3::hash(&c).as_bytes(), &c);
        let (id, bytes, entries) = w.finish();
        let mut bad = bytes.to_vec();
        bad[entries[0].offset as usize] ^= 0xff;
        bucket
            .store()
            .put(&id.key(&bucket), PutPayload::from(bad))
            .await
            .unwrap();
        assert!(matches!(
            read_blob(&bucket, &id, &entries[0]).await,
            Err(PackStoreError::Damaged { .. })
        ));
        assert!(matches!(
            read_pack(&bucket, &id).await,
            Err(PackStoreError::Damaged { .. })
        ));
    }
}
