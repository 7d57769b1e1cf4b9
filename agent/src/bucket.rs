//! A receiver's bytes in an S3-compatible object store (issue 19): the
//! bucket, what Ferry keeps in it, and the operations on it that do not
//! depend on the receiver's store.
//!
//! ## What is where in the bucket
//!
//! Everything lives below `PREFIX/ferry/` (`s3://BUCKET/PREFIX`), so a
//! bucket can hold other data, or several receivers under other prefixes:
//!
//! ```text
//! PREFIX/ferry/lock                       the lease of the one receiver writing here (lease)
//! PREFIX/ferry/catalog/<stamp>.db.zst     consistent copies of the catalog, newest last (catalog_copy)
//! PREFIX/ferry/packs/<hh>/<pack id>       immutable packs of content blobs (pack)
//! ```
//!
//! - **Content is immutable and content-addressed.** A blob is a file's
//!   content (small files) or one chunk of it (large files, the chunks the
//!   sender's delta transfer already cuts), named by the blake3 hash of its
//!   bytes. Blobs are packed into packs of about 16 MiB (thousands of
//!   one-object-per-file PUTs are slow on every S3); a pack is named by the
//!   blake3 hash of its own bytes and never changes once written. Versions
//!   share blobs: a file that did not change, or a chunk a delta copies,
//!   is stored once.
//! - **The catalog stays local** (SQLite, in the receiver's state
//!   directory) and says which blobs make each version and where each blob
//!   is. After each committed run a consistent copy of it (SQLite's backup
//!   API) is put in the bucket, so a new receiver given only the bucket and
//!   its credentials recovers everything (`catalog_copy::recover`).
//! - **Retention removes what no kept version references**: a pack none of
//!   whose blobs is referenced is deleted; a pack mostly unreferenced is
//!   rewritten with only its live blobs. Packs written since the oldest run
//!   still in progress began are never touched, since that run's blobs are
//!   not referenced until it commits (`gc`).
//! - **One writer**: the lease object names the receiver that writes under
//!   this prefix; a second one refuses to start (`lease`).
//!
//! ## Layout
//!
//! - `spec`: `s3://BUCKET/PREFIX`, the endpoint, region and credentials,
//!   from flags, the config file and the places the AWS CLI reads.
//! - `lease`: the lock object, taken and renewed with conditional writes.
//! - `catalog_copy`: the catalog's copies in the bucket, and recovery.
//! - `pack`: the pack format: writing, reading a blob, the pack's index.
//! - `packs`: putting, reading (one blob by its range), listing and
//!   deleting packs in the bucket.
//! - `gc`: which packs retention deletes or rewrites.
//! - `collect`: carrying out that plan in the bucket and the catalog, in
//!   an order a crash cannot turn into a loss.
//! - `verify`: the bucket against the catalog, both ways, packs read in
//!   parallel and every located blob re-hashed.
//! - [`blob_index`]: the catalog's tables of packs and blob locations, and
//!   each pack's live bytes as the catalog's versions count them.

pub mod blob_index;
mod catalog_copy;
mod collect;
mod gc;
mod lease;
mod pack;
mod packs;
mod spec;
mod verify;

use std::sync::Arc;

use object_store::path::Path as ObjectPath;
use object_store::ObjectStore;

pub use catalog_copy::{
    has_catalog_copies, recover, upload_catalog, CatalogCopyError, Recovered, KEEP_COPIES,
};
pub use collect::{collect, CollectError, Collected};
pub use gc::{plan as plan_gc, GcPlan, PackUse, REWRITE_BELOW};
pub use lease::{Holder, Lease, LeaseError, LEASE_TTL};
pub use pack::{open_blob, BlobEntry, PackError, PackId, PackIndex, PackWriter, PACK_TARGET};
pub use packs::{
    delete_pack, list_packs, put_pack, read_blob, read_pack, ListedPack, PackStoreError,
};
pub use spec::{is_bucket_url, BucketSpec, Credentials, OpenBucketError, SpecError};
pub use verify::{verify_bucket, BucketFinding, BucketReport, VerifyBucketError, PARALLEL};

/// An object store and the prefix Ferry keeps its objects under.
#[derive(Clone)]
pub struct Bucket {
    store: Arc<dyn ObjectStore>,
    /// `PREFIX/ferry`.
    root: ObjectPath,
    /// `s3://BUCKET/PREFIX` (or a test's name), for messages.
    name: String,
}

impl std::fmt::Debug for Bucket {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Bucket").field("name", &self.name).finish()
    }
}

impl Bucket {
    /// Ferry's objects in `store` below `prefix` (`""`: the bucket's root).
    pub fn new(store: Arc<dyn ObjectStore>, prefix: &str, name: impl Into<String>) -> Bucket {
        let root = ObjectPath::from(prefix).join("ferry");
        Bucket {
            store,
            root,
            name: name.into(),
        }
    }

    /// The object store itself.
    pub fn store(&self) -> &Arc<dyn ObjectStore> {
        &self.store
    }

    /// `s3://BUCKET/PREFIX`, for messages.
    pub fn name(&self) -> &str {
        &self.name
    }

    /// The key of `parts` below `PREFIX/ferry`.
    pub(crate) fn key(&self, parts: &[&str]) -> ObjectPath {
        parts
            .iter()
            .fold(self.root.clone(), |path, part| path.join(*part))
    }
}

#[cfg(test)]
pub(crate) fn memory_bucket() -> Bucket {
    Bucket::new(
        Arc::new(object_store::memory::InMemory::new()),
        "backups/office",
        "memory://backups/office",
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn keys_live_below_the_prefix_and_ferry() {
        let bucket = memory_bucket();
        assert_eq!(
            bucket.key(&["catalog", "x.db.zst"]).as_ref(),
            "backups/office/ferry/catalog/x.db.zst"
        );
        let bare = Bucket::new(
            Arc::new(object_store::memory::InMemory::new()),
            "",
            "memory://",
        );
        assert_eq!(bare.key(&["lock"]).as_ref(), "ferry/lock");
    }
}
