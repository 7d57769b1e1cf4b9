//! A store whose bytes are in a bucket ([`crate::bucket`]) rather than in a
//! mirror on this machine: the same catalog, the same operations, another
//! place for the bytes ([`Packed`] is the bucket's `place::Place`).
//!
//! ```text
//! STATE/store/.ferry/catalog.db     the catalog, with the tables `packs` and `blobs`
//! STATE/store/.ferry/staging/       content being received, then packed
//! STATE/store/.ferry/lock, reserve  as in a local store
//! s3://BUCKET/PREFIX/ferry/...      the lease, the catalog's copies, the packs
//! ```
//!
//! A file version is its blobs: the chunks of its chunk list, or (a file
//! smaller than [`crate::chunk::CHUNKED_MIN_SIZE`]) its whole content named
//! by its hash; a large file that arrived whole is cut here, and its list
//! recorded, so no blob is larger than [`crate::chunk::MAX_CHUNK`]. A blob
//! already in the bucket is not put again: versions, renames and deltas
//! share them.
//!
//! Group commit: [`Store::apply_ops`] re-hashes every new blob, packs them
//! and puts the packs (each PUT returns once the bucket has the pack); then
//! [`Store::record_applied`] records, in one catalog transaction, the packs,
//! where each blob is, and every operation's versions, each operation
//! seeing the ones before it. Only then is anything answered `Stored`. A
//! crash between the two leaves packs no row names, which retention removes
//! (`bucket::collect`); a blob is never referenced before its pack is in the
//! bucket. Nothing moves when a version is replaced or deleted: the bytes
//! stay in their packs until retention drops the last version using them.
//! After each run the catalog is copied to the bucket
//! (`bucket::upload_catalog`), so the bucket alone recovers it.
//!
//! The object store's client is async; the store's methods are blocking
//! (called from `spawn_blocking` or a plain thread), so the store owns a
//! small runtime of its own to drive it.
//!
//! ## Layout
//!
//! - `write`: a batch's blobs packed and put, then recorded ([`PackedBatch`]).
//! - `changes`: the catalog changes of one op, as the batch's transaction
//!   sees the catalog (file and directory replacing each other, deletions).
//! - `read`: a version's bytes and a delta base's chunks, read in spans of
//!   neighbouring blobs.
//! - `upkeep`: the catalog's copies in the bucket, retention's collection of
//!   packs, and `ferry verify`.
//!
//! This file has [`Packed`] (the bucket, the runtime, the lease and its
//! renewal) and the tests of the whole.

use std::future::Future;
use std::path::Path;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex, PoisonError};
use std::time::{Duration, SystemTime};

use super::error::{io_err, StoreError};
use super::Store;
use crate::bucket::{self, Bucket, Holder, Lease};

mod changes;
mod read;
mod upkeep;
mod write;

pub(crate) use read::{read_span, spans};
pub(crate) use write::PackedBatch;

/// Most bytes one ranged GET reads: consecutive blobs of one pack are read
/// together.
pub(super) const SPAN_BYTES: u64 = 4 << 20;
/// Packs being put at once by one batch.
const PUTS_IN_FLIGHT: usize = 2;
/// Ranged GETs in flight for one reader.
const PARALLEL_READS: usize = 4;

/// A catalog copy is put at least this often while runs go on (and after
/// each run).
const COPY_EVERY: Duration = Duration::from_secs(300);

/// How often the lease is renewed (a third of its life).
const RENEW_EVERY: Duration = Duration::from_secs(20);

/// The bucket half of a bucket store.
pub(crate) struct Packed {
    bucket: Bucket,
    rt: OwnRuntime,
    /// Set when the lease was lost (another receiver took the prefix over,
    /// or it could not be renewed in time): nothing more is written.
    lost: Arc<AtomicBool>,
    /// When the catalog was last copied to the bucket (Unix ms; the
    /// store's opening before the first copy).
    last_copy_ms: std::sync::atomic::AtomicI64,
    /// True until a copy succeeds after the store opened or after a copy
    /// failed: the next run's end copies even if it changed nothing.
    copy_owed: AtomicBool,
    /// What this store asked of the bucket since it opened.
    pub(super) counts: Arc<Counts>,
    /// The lease, while this store writes (`None`: opened read-only).
    lease: Arc<tokio::sync::Mutex<Option<Lease>>>,
    renewer: Mutex<Option<tokio::task::JoinHandle<()>>>,
    /// A temporary directory holding the catalog copy read (see
    /// [`Store::open_bucket_copy`]); removed after the store closed it.
    scratch: Option<tempfile::TempDir>,
}

impl std::fmt::Debug for Packed {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Packed")
            .field("bucket", &self.bucket.name())
            .finish()
    }
}

/// Requests made to the bucket (logged after each run; the bench reads
/// them to count PUTs per file).
#[derive(Debug, Default)]
pub(crate) struct Counts {
    pub packs_put: AtomicU64,
    pub pack_bytes_put: AtomicU64,
    pub catalog_copies: AtomicU64,
    pub ranged_gets: AtomicU64,
}

/// A runtime that may be dropped anywhere, an async context included.
struct OwnRuntime(Option<tokio::runtime::Runtime>);

impl OwnRuntime {
    fn get(&self) -> &tokio::runtime::Runtime {
        self.0
            .as_ref()
            .unwrap_or_else(|| unreachable!("taken only on drop"))
    }
}

impl Drop for OwnRuntime {
    fn drop(&mut self) {
        if let Some(rt) = self.0.take() {
            rt.shutdown_background();
        }
    }
}

impl Packed {
    /// The bucket half of a store; `holder` takes the bucket's lease (a
    /// store that writes), `None` opens it for reading.
    pub(crate) fn open(bucket: Bucket, holder: Option<Holder>) -> Result<Packed, StoreError> {
        let rt = tokio::runtime::Builder::new_multi_thread()
            .worker_threads(2)
            .thread_name("ferry-bucket")
            .enable_all()
            .build()
            .map_err(|e| io_err("start the bucket's client", Path::new(bucket.name()), e))?;
        let packed = Packed {
            bucket,
            rt: OwnRuntime(Some(rt)),
            lost: Arc::new(AtomicBool::new(false)),
            counts: Arc::default(),
            last_copy_ms: std::sync::atomic::AtomicI64::new(super::now_ms()),
            copy_owed: AtomicBool::new(true),
            lease: Arc::new(tokio::sync::Mutex::new(None)),
            renewer: Mutex::new(None),
            scratch: None,
        };
        if let Some(holder) = holder {
            let lease = packed
                .block_on(Lease::acquire(&packed.bucket, holder, SystemTime::now()))
                .map_err(|e| bucket_err(&packed.bucket, "take the lease on", &e))?;
            *packed.lease.blocking_lock() = Some(lease);
            let renewer = packed.rt.get().spawn(renew(
                packed.lease.clone(),
                packed.lost.clone(),
                packed.bucket.name().to_owned(),
            ));
            *packed
                .renewer
                .lock()
                .unwrap_or_else(PoisonError::into_inner) = Some(renewer);
        }
        Ok(packed)
    }

    /// Keeps `scratch` until the store is dropped.
    pub(crate) fn keep(&mut self, scratch: tempfile::TempDir) {
        self.scratch = Some(scratch);
    }

    pub(crate) fn bucket(&self) -> &Bucket {
        &self.bucket
    }

    /// Runs `f` to completion on the store's runtime. Called from blocking
    /// code only (never from an async task).
    pub(crate) fn block_on<F: Future>(&self, f: F) -> F::Output {
        self.rt.get().block_on(f)
    }

    /// Whether the next run's end must copy the catalog even if the run
    /// changed nothing.
    pub(crate) fn copy_owed(&self) -> bool {
        self.copy_owed.load(Ordering::Relaxed)
    }

    /// Fails if the lease was lost: another receiver may write here now.
    fn writable(&self) -> Result<(), String> {
        match self.lost.load(Ordering::Acquire) {
            false => Ok(()),
            true => Err(format!(
                "this receiver lost its lease on {}: another receiver took it over, or the bucket could not be reached to renew it; restart the receiver",
                self.bucket.name()
            )),
        }
    }
}

impl Drop for Packed {
    fn drop(&mut self) {
        if let Some(renewer) = self
            .renewer
            .get_mut()
            .unwrap_or_else(PoisonError::into_inner)
            .take()
        {
            renewer.abort();
        }
        let lease = Arc::clone(&self.lease);
        let Some(rt) = self.rt.0.take() else { return };
        // Give the lease back on a thread of its own: this may run inside
        // an async task, where blocking on a runtime is not allowed.
        let released = std::thread::spawn(move || {
            rt.block_on(async move {
                if let Some(lease) = lease.lock().await.take() {
                    let give_back = tokio::time::timeout(
                        Duration::from_secs(10),
                        lease.release(SystemTime::now()),
                    );
                    if let Ok(Err(e)) = give_back.await {
                        tracing::warn!("could not give the bucket's lease back: {e}");
                    }
                }
            });
            rt.shutdown_background();
        });
        let _ = released.join();
    }
}

/// Renews the lease until it is lost or the store closes.
async fn renew(lease: Arc<tokio::sync::Mutex<Option<Lease>>>, lost: Arc<AtomicBool>, name: String) {
    loop {
        tokio::time::sleep(RENEW_EVERY).await;
        if !renew_once(&lease, &lost, &name).await {
            return;
        }
    }
}

/// One renewal; false once the lease is gone for good (`lost` is set).
async fn renew_once(
    lease: &tokio::sync::Mutex<Option<Lease>>,
    lost: &AtomicBool,
    name: &str,
) -> bool {
    let mut held = lease.lock().await;
    let Some(lease) = held.as_mut() else {
        return false;
    };
    match lease.renew(SystemTime::now()).await {
        Ok(()) => true,
        Err(bucket::LeaseError::Lost { .. }) => {
            tracing::error!(bucket = %name, "another receiver took over the bucket's lease: this receiver writes nothing more; restart it");
            lost.store(true, Ordering::Release);
            false
        }
        Err(e) if SystemTime::now() + RENEW_EVERY >= lease.expires() => {
            tracing::error!(bucket = %name, "the bucket's lease could not be renewed before it ends ({}): this receiver writes nothing more; restart it", crate::chain::Chain(&e));
            lost.store(true, Ordering::Release);
            false
        }
        Err(e) => {
            tracing::warn!(bucket = %name, "could not renew the bucket's lease, trying again: {}", crate::chain::Chain(&e));
            true
        }
    }
}

fn bucket_err(bucket: &Bucket, action: &'static str, e: &dyn std::error::Error) -> StoreError {
    StoreError::Bucket {
        action,
        bucket: bucket.name().to_owned(),
        detail: crate::chain::chain(e),
    }
}

impl Store {
    /// The bucket half, if this store keeps its bytes in a bucket.
    #[cfg(test)]
    pub(crate) fn packed(&self) -> Option<&Packed> {
        self.packed.as_deref()
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used)] // a failing unwrap is a failing test
mod tests {
    use super::super::{Namespace, Op};
    use super::*;
    use crate::bucket::memory_bucket;
    use crate::chunk;
    use crate::pair_tests::noise;
    use crate::store::tests::{file_entry, put_file, rel};
    use ferry_proto::{Base, Name};
    use ferry_proto::{Entry, EntryKind};
    use std::io::Read;

    fn holder() -> Holder {
        Holder {
            receiver: "receiver-1".into(),
            host: "office".into(),
            pid: 7,
        }
    }

    /// A fresh bucket store with one sender and namespace, and its bucket.
    fn fixture() -> (tempfile::TempDir, Store, Namespace, Bucket) {
        let dir = tempfile::tempdir().unwrap();
        let bucket = memory_bucket();
        let store =
            Store::open_bucket(&dir.path().join("state"), bucket.clone(), holder()).unwrap();
        let sender = store
            .add_sender("dev-1", &Name::new("lap").unwrap())
            .unwrap();
        let ns = store.namespace(&sender, &Name::new("docs").unwrap());
        (dir, store, ns, bucket)
    }

    fn read(store: &Store, v: &super::super::VersionRecord) -> Vec<u8> {
        let mut out = Vec::new();
        store
            .open_version(v)
            .unwrap()
            .read_to_end(&mut out)
            .unwrap();
        out
    }

    fn pack_count(store: &Store) -> i64 {
        store
            .catalog()
            .conn()
            .query_row("SELECT count(*) FROM packs", [], |r| r.get(0))
            .unwrap()
    }

    #[test]
    fn every_version_is_read_back_exact_from_the_bucket() {
        let (dir, store, ns, _bucket) = fixture();
        let run = store.begin_run(&ns).unwrap();
        put_file(&store, &ns, run, "a/f", b"old", 1);
        put_file(&store, &ns, run, "a/f", b"new content", 2);
        let big = noise(700_000, 1);
        put_file(&store, &ns, run, "big", &big, 3);
        put_file(&store, &ns, run, "empty", b"", 4);
        store.delete(&ns, run, &rel("a/f")).unwrap();
        let versions = store.versions(&ns, &rel("a/f")).unwrap();
        assert_eq!(versions.len(), 2);
        assert!(versions[0].deleted && !versions[0].current);
        assert_eq!(read(&store, &versions[0]), b"new content");
        assert_eq!(read(&store, &versions[1]), b"old");
        let big_v = &store.versions(&ns, &rel("big")).unwrap()[0];
        assert_eq!(read(&store, big_v), big);
        assert_eq!(
            read(&store, &store.versions(&ns, &rel("empty")).unwrap()[0]),
            b""
        );
        // A large file that arrived whole was cut: its list is recorded
        // and no blob is larger than a chunk.
        let largest: i64 = store
            .catalog()
            .conn()
            .query_row("SELECT max(raw_len) FROM blobs", [], |r| r.get(0))
            .unwrap();
        assert!(largest as usize <= chunk::MAX_CHUNK, "{largest}");
        // Nothing of the content is kept on this machine.
        let staged = std::fs::read_dir(dir.path().join("state/.ferry/staging"))
            .unwrap()
            .count();
        assert_eq!(staged, 0);
        assert!(!dir.path().join("state/lap").exists());
    }

    #[test]
    fn content_stored_once_is_not_put_again() {
        let (_dir, store, ns, _bucket) = fixture();
        let run = store.begin_run(&ns).unwrap();
        put_file(&store, &ns, run, "one", b"same bytes", 1);
        let packs = pack_count(&store);
        put_file(&store, &ns, run, "two", b"same bytes", 1);
        put_file(&store, &ns, run, "one", b"same bytes", 9);
        assert_eq!(pack_count(&store), packs, "a known blob was put again");
        assert_eq!(
            read(&store, &store.versions(&ns, &rel("two")).unwrap()[0]),
            b"same bytes"
        );
    }

    #[test]
    fn a_batch_is_one_pack_and_one_transaction() {
        let (_dir, store, ns, _bucket) = fixture();
        let run = store.begin_run(&ns).unwrap();
        let ops: Vec<Op> = (0..200)
            .map(|i| {
                let data = format!("file number {i}").into_bytes();
                let entry = file_entry(&format!("d/{i}"), &data, 1, 0o644);
                let mut staged = store.stage(&ns, &entry.path, data.len() as u64).unwrap();
                staged.write(&data).unwrap();
                let staged = staged.finish(blake3::hash(&data).as_bytes()).unwrap();
                Op::File { entry, staged }
            })
            .collect();
        let results = store.apply_batch(&ns, run, ops);
        assert!(results.iter().all(Result::is_ok));
        assert_eq!(pack_count(&store), 1);
        assert_eq!(store.current(&ns).unwrap().len(), 200);
    }

    #[test]
    fn file_and_directory_replace_each_other_and_nothing_is_lost() {
        let (_dir, store, ns, _bucket) = fixture();
        let run = store.begin_run(&ns).unwrap();
        put_file(&store, &ns, run, "x", b"file", 1);
        put_file(&store, &ns, run, "x/inner", b"child", 1); // x becomes a directory
        let x = store.versions(&ns, &rel("x")).unwrap();
        assert!(!x[0].current);
        assert_eq!(read(&store, &x[0]), b"file");
        put_file(&store, &ns, run, "x", b"file again", 2); // and a file again
        let inner = store.versions(&ns, &rel("x/inner")).unwrap();
        assert!(inner[0].deleted && !inner[0].current);
        assert_eq!(read(&store, &inner[0]), b"child");
        let dir = Entry {
            path: rel("x"),
            kind: EntryKind::Dir,
            mtime_ns: 7,
            mode: 0o750,
        };
        store.put_dir(&ns, run, &dir).unwrap();
        store.put_dir(&ns, run, &dir).unwrap(); // the same directory: no new row
        let x = store.versions(&ns, &rel("x")).unwrap();
        assert_eq!(x.len(), 3);
        assert_eq!(x[0].kind, "dir");
        assert_eq!(read(&store, &x[1]), b"file again");
        let current: Vec<_> = store
            .current(&ns)
            .unwrap()
            .into_iter()
            .map(|v| (v.path, v.kind))
            .collect();
        assert_eq!(current, [(rel("x"), "dir".to_owned())]);
    }

    #[test]
    fn a_delta_base_is_read_from_the_bucket_chunk_by_chunk() {
        let (_dir, store, ns, _bucket) = fixture();
        let run = store.begin_run(&ns).unwrap();
        let data = noise(400_000, 2);
        put_file(&store, &ns, run, "big", &data, 1);
        let hash = *blake3::hash(&data).as_bytes();
        let base = store
            .base(
                &ns,
                &Base {
                    path: rel("big"),
                    hash,
                },
            )
            .unwrap()
            .unwrap();
        let mut joined = Vec::new();
        let mut buf = Vec::new();
        for i in 0..base.chunks().len() {
            base.read_chunk(i, &mut buf).unwrap();
            joined.extend_from_slice(&buf);
        }
        assert_eq!(joined, data);
    }

    #[test]
    fn the_bucket_alone_gives_back_history_and_bytes_after_a_run() {
        let (_dir, store, ns, bucket) = fixture();
        let run = store.begin_run(&ns).unwrap();
        put_file(&store, &ns, run, "f", b"kept in the bucket", 1);
        store
            .finish_run(
                &ns,
                run,
                &Default::default(),
                18,
                crate::store::RunEnding::Complete,
            )
            .unwrap();
        let copy = Store::open_bucket_copy(bucket).unwrap();
        let sender = copy
            .sender_by_name(&Name::new("lap").unwrap())
            .unwrap()
            .unwrap();
        let ns2 = copy.namespace(&sender, &Name::new("docs").unwrap());
        let v = &copy.versions(&ns2, &rel("f")).unwrap()[0];
        assert_eq!(read(&copy, v), b"kept in the bucket");
        assert_eq!(copy.runs(None).unwrap().len(), 1);
    }

    #[test]
    fn a_second_receiver_on_the_bucket_is_refused() {
        let (dir, _store, _ns, bucket) = fixture();
        let other = Holder {
            receiver: "receiver-2".into(),
            host: "elsewhere".into(),
            pid: 8,
        };
        let err = Store::open_bucket(&dir.path().join("state2"), bucket, other).unwrap_err();
        let message = err.to_string();
        assert!(
            message.contains("receiver-1") || message.contains("office"),
            "{message}"
        );
    }

    #[test]
    fn a_local_store_and_a_bucket_state_are_not_mistaken_for_each_other() {
        let (dir, store, _ns, _bucket) = fixture();
        drop(store);
        let err = Store::open(&dir.path().join("state")).unwrap_err();
        assert!(matches!(err, StoreError::WrongKind { .. }), "{err}");
        assert!(err.to_string().contains("--store memory://"), "{err}");
        let (_d, local, ns) = crate::store::tests::fixture();
        let run = local.begin_run(&ns).unwrap();
        put_file(&local, &ns, run, "f", b"x", 1);
        let root = local.root().to_path_buf();
        drop(local);
        let err = Store::open_bucket(&root, memory_bucket(), holder()).unwrap_err();
        assert!(matches!(err, StoreError::WrongKind { .. }), "{err}");
    }

    #[test]
    fn pruning_keeps_the_blobs_of_what_is_kept_and_frees_the_rest() {
        let (_dir, store, ns, bucket) = fixture();
        let run = store.begin_run(&ns).unwrap();
        let big = noise(500_000, 3);
        put_file(&store, &ns, run, "big", &big, 1);
        let hash = *blake3::hash(&big).as_bytes();
        // Two metadata-only versions: the same blobs, no new content.
        for mtime in [2, 3] {
            let entry = file_entry("big", &big, mtime, 0o600);
            store.update_metadata(&ns, run, &entry, &hash).unwrap();
        }
        put_file(&store, &ns, run, "gone", &noise(300_000, 4), 1);
        put_file(&store, &ns, run, "gone", b"small now", 2);
        store
            .finish_run(
                &ns,
                run,
                &Default::default(),
                0,
                crate::store::RunEnding::Complete,
            )
            .unwrap();
        let policy = crate::store::Retention {
            keep_versions: Some(1),
            keep_for: None,
            staggered: false,
        };
        let packs_before = packed_objects(&store, &bucket);
        let report = store.prune(&policy, super::super::now_ms() + 1).unwrap();
        assert_eq!(report.versions_removed, 1, "{report:?}");
        // The current version of `big` still has every chunk.
        let current = &store.versions(&ns, &rel("big")).unwrap()[0];
        assert_eq!(read(&store, current), big);
        // `gone`'s old content is kept (one old version); drop it too.
        let policy = crate::store::Retention {
            keep_versions: None,
            keep_for: Some(std::time::Duration::from_secs(0)),
            staggered: false,
        };
        store.prune(&policy, super::super::now_ms() + 1000).unwrap();
        assert_eq!(
            read(&store, &store.versions(&ns, &rel("big")).unwrap()[0]),
            big
        );
        assert_eq!(
            read(&store, &store.versions(&ns, &rel("gone")).unwrap()[0]),
            b"small now"
        );
        let packs_after = packed_objects(&store, &bucket);
        assert!(
            packs_after < packs_before,
            "{packs_before} -> {packs_after}"
        );
        let report = store
            .packed()
            .unwrap()
            .block_on(crate::bucket::verify_bucket(
                &bucket,
                store.catalog().conn(),
            ))
            .unwrap();
        assert!(
            report.findings.iter().all(|f| !f.is_breach()),
            "{:?}",
            report.findings
        );
    }

    #[test]
    fn a_receiver_that_lost_its_lease_acknowledges_nothing_more() {
        let (_dir, store, ns, bucket) = fixture();
        let run = store.begin_run(&ns).unwrap();
        put_file(
            &store,
            &ns,
            run,
            "before",
            b"stored while the lease was held",
            1,
        );
        // Another receiver takes the lease over (this one's expired, say).
        let packed = store.packed().unwrap();
        packed.block_on(async {
            use object_store::ObjectStoreExt;
            bucket.store().delete(&bucket.key(&["lock"])).await.unwrap();
            Lease::acquire(
                &bucket,
                Holder {
                    receiver: "receiver-2".into(),
                    host: "elsewhere".into(),
                    pid: 9,
                },
                SystemTime::now(),
            )
            .await
            .unwrap();
        });
        let still = packed.block_on(renew_once(&packed.lease, &packed.lost, "test"));
        assert!(!still);
        let data = b"after the lease was lost";
        let entry = file_entry("after", data, 1, 0o644);
        let mut staged = store.stage(&ns, &entry.path, data.len() as u64).unwrap();
        staged.write(data).unwrap();
        let verified = staged.finish(blake3::hash(data).as_bytes()).unwrap();
        let err = store.commit_file(&ns, run, &entry, verified).unwrap_err();
        assert!(err.to_string().contains("lost its lease"), "{err}");
        assert!(store.versions(&ns, &rel("after")).unwrap().is_empty());
        let err = store.delete(&ns, run, &rel("before")).unwrap_err();
        assert!(err.to_string().contains("lost its lease"), "{err}");
        assert!(store.versions(&ns, &rel("before")).unwrap()[0].current);
    }

    #[test]
    fn a_run_that_changed_nothing_puts_no_catalog_copy() {
        let (_dir, store, ns, _bucket) = fixture();
        let copies = || {
            store
                .packed()
                .unwrap()
                .counts
                .catalog_copies
                .load(Ordering::Relaxed)
        };
        let end = |run| {
            store
                .finish_run(
                    &ns,
                    run,
                    &Default::default(),
                    0,
                    crate::store::RunEnding::Complete,
                )
                .unwrap()
        };
        // The first run's end copies (one is owed since the store opened).
        let run = store.begin_run(&ns).unwrap();
        end(run);
        assert_eq!(copies(), 1);
        let run = store.begin_run(&ns).unwrap();
        end(run);
        assert_eq!(copies(), 1, "a no-change run copied the catalog");
        let run = store.begin_run(&ns).unwrap();
        put_file(&store, &ns, run, "f", b"changed", 1);
        end(run);
        assert_eq!(copies(), 2);
    }

    fn packed_objects(store: &Store, bucket: &Bucket) -> usize {
        store
            .packed()
            .unwrap()
            .block_on(crate::bucket::list_packs(bucket))
            .unwrap()
            .len()
    }
}
