//! A store whose bytes are in a bucket ([`crate::bucket`]) rather than in a
//! mirror on this machine: the same catalog, the same operations, another
//! place for the bytes.
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

use std::collections::HashSet;
use std::fs::File;
use std::future::Future;
use std::io::{Seek, Write};
use std::os::unix::fs::FileExt;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex, PoisonError};
use std::time::{Duration, SystemTime};

use ferry_proto::{Entry, EntryKind, Hash, RelPath};
use futures_util::StreamExt;
use rusqlite::{params, OptionalExtension, Transaction};

use super::catalog::{self, apply_changes, Below, Change, NewVersion, VersionRow};
use super::error::{io_err, StoreError};
use super::{Namespace, Op, Store, Verified};
use crate::bucket::{self, blob_index, Bucket, Holder, Lease, PackId, PackWriter};
use crate::chunk::{self, ChunkInfo};

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
    /// When the catalog was last copied to the bucket (Unix ms; 0: not
    /// since the store opened).
    last_copy_ms: std::sync::atomic::AtomicI64,
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

/// One change of a batch, its content already in the bucket.
#[derive(Debug)]
pub(crate) enum PackedOp {
    File {
        entry: Entry,
        size: u64,
        hash: Hash,
        chunks: Option<Vec<u8>>,
        stored: u64,
    },
    Metadata {
        entry: Entry,
        hash: Hash,
    },
    Dir(Entry),
    Symlink(Entry),
    Delete(RelPath),
}

/// A pack put in the bucket, to record.
#[derive(Debug)]
struct PutPack {
    id: PackId,
    written_ms: u64,
    stored_bytes: u64,
    entries: Vec<bucket::BlobEntry>,
}

/// A batch of a bucket store between [`Store::apply_ops`] and
/// [`Store::record_applied`]: each op (`None`: it failed already) and the
/// packs put for them.
#[derive(Debug, Default)]
pub(crate) struct PackedBatch {
    ops: Vec<Option<PackedOp>>,
    packs: Vec<PutPack>,
    /// Why the packs could not be put: the batch's content ops fail.
    put_failed: Option<String>,
}

/// Packs the new blobs of one batch.
struct Packer<'a> {
    packed: &'a Packed,
    writer: PackWriter,
    /// Blobs of this batch already packed.
    seen: HashSet<[u8; 32]>,
    packs: Vec<PutPack>,
    /// Packs being put, oldest first.
    in_flight: std::collections::VecDeque<(
        tokio::task::JoinHandle<Result<(), bucket::PackStoreError>>,
        PutPack,
    )>,
    /// Why a pack could not be put (or the store may not write): the
    /// batch's content fails, since the pack held blobs of several files.
    failed: Option<String>,
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

impl Packer<'_> {
    /// Adds blob `hash` (`content`) unless the bucket or this batch has it.
    fn add(&mut self, store: &Store, hash: [u8; 32], content: &[u8]) -> Result<(), StoreError> {
        if self.seen.contains(&hash) {
            return Ok(());
        }
        let known = {
            let cat = store.catalog();
            blob_index::locate_blob(cat.conn(), &hash).map_err(|e| cat.err(e))?
        };
        if known.is_some() {
            return Ok(());
        }
        self.seen.insert(hash);
        self.writer.push(hash, content);
        if self.writer.is_full() {
            self.put()?;
        }
        Ok(())
    }

    /// Starts putting the pack being written, if it holds anything; waits
    /// for the oldest PUT when [`PUTS_IN_FLIGHT`] are under way.
    fn put(&mut self) -> Result<(), StoreError> {
        if !self.writer.is_empty() {
            let (id, bytes, entries) = std::mem::take(&mut self.writer).finish();
            let stored_bytes = bytes.len() as u64;
            let bucket = self.packed.bucket().clone();
            let counts = &self.packed.counts;
            counts.packs_put.fetch_add(1, Ordering::Relaxed);
            counts
                .pack_bytes_put
                .fetch_add(stored_bytes, Ordering::Relaxed);
            let putting = self
                .packed
                .rt
                .get()
                .spawn(async move { bucket::put_pack(&bucket, &id, bytes).await });
            self.in_flight.push_back((
                putting,
                PutPack {
                    id,
                    written_ms: 0,
                    stored_bytes,
                    entries,
                },
            ));
        }
        while self.in_flight.len() > PUTS_IN_FLIGHT {
            self.wait_oldest()?;
        }
        Ok(())
    }

    /// Puts what is left and waits for every PUT.
    fn finish(&mut self) -> Result<(), StoreError> {
        self.put()?;
        while !self.in_flight.is_empty() {
            self.wait_oldest()?;
        }
        Ok(())
    }

    fn wait_oldest(&mut self) -> Result<(), StoreError> {
        let Some((putting, mut pack)) = self.in_flight.pop_front() else {
            return Ok(());
        };
        let bucket = self.packed.bucket();
        let done = match self.packed.block_on(putting) {
            Ok(Ok(())) => Ok(()),
            Ok(Err(e)) => Err(bucket_err(bucket, "put a pack in", &e)),
            Err(e) => Err(bucket_err(bucket, "put a pack in", &e)),
        };
        if let Err(e) = done {
            self.failed = Some(crate::chain::chain(&e));
            return Err(e);
        }
        pack.written_ms = super::now_ms().max(0) as u64;
        self.packs.push(pack);
        Ok(())
    }
}

impl Store {
    /// The bucket half, if this store keeps its bytes in a bucket.
    #[cfg(test)]
    pub(crate) fn packed(&self) -> Option<&Packed> {
        self.packed.as_deref()
    }

    /// [`Store::apply_ops`] of a bucket store: every new blob packed and
    /// put; nothing recorded yet. Returns the batch and each op's result so
    /// far.
    pub(super) fn pack_ops(
        &self,
        packed: &Packed,
        ops: Vec<Op>,
    ) -> (PackedBatch, Vec<Result<(), StoreError>>) {
        let mut batch = PackedBatch::default();
        let mut results = Vec::with_capacity(ops.len());
        let mut packer = Packer {
            packed,
            writer: PackWriter::new(),
            seen: HashSet::new(),
            packs: Vec::new(),
            in_flight: std::collections::VecDeque::new(),
            failed: packed.writable().err(),
        };
        for op in ops {
            let done = match op {
                Op::File { entry, staged } => match &packer.failed {
                    None => self.pack_file(&entry, staged, &mut packer),
                    Some(message) => Err(StoreError::BatchFailed {
                        path: entry.path,
                        detail: message.clone(),
                    }),
                },
                Op::Metadata { entry, hash } => Ok(PackedOp::Metadata { entry, hash }),
                Op::Dir(entry) => Ok(PackedOp::Dir(entry)),
                Op::Symlink(entry) => Ok(PackedOp::Symlink(entry)),
            };
            match done {
                Ok(op) => {
                    batch.ops.push(Some(op));
                    results.push(Ok(()));
                }
                Err(e) => {
                    batch.ops.push(None);
                    results.push(Err(e));
                }
            }
        }
        if packer.failed.is_none() {
            let _ = packer.finish();
        }
        // A failed batch still waits for its other PUTs, so that none is
        // still under way once the batch is answered.
        while !packer.in_flight.is_empty() {
            let _ = packer.wait_oldest();
        }
        batch.put_failed = packer.failed;
        batch.packs = packer.packs;
        (batch, results)
    }

    /// Packs the content of one file: its blobs re-hashed, the new ones
    /// added to the batch's packs.
    fn pack_file(
        &self,
        entry: &Entry,
        staged: Verified,
        packer: &mut Packer<'_>,
    ) -> Result<PackedOp, StoreError> {
        staged.fits(entry)?;
        let file = &staged.staging.file;
        let at = &staged.staging.path;
        let mut chunks = staged.chunks.clone();
        let list = match chunks.as_deref() {
            Some(list) => Some(
                chunk::decode_list(list)
                    .ok_or_else(|| bad(entry, "its chunk list cannot be read"))?,
            ),
            None if staged.size >= chunk::CHUNKED_MIN_SIZE => {
                let list = cut(file, at)?;
                chunks = Some(chunk::encode_list(&list));
                Some(list)
            }
            None => None,
        };
        let mut buf = Vec::new();
        match list {
            Some(list) => {
                let total: u64 = list.iter().map(|c| u64::from(c.len)).sum();
                if total != staged.size {
                    return Err(bad(entry, "its chunk list does not add up to its size"));
                }
                let mut offset = 0u64;
                for info in &list {
                    buf.resize(info.len as usize, 0);
                    file.read_exact_at(&mut buf, offset)
                        .map_err(|e| io_err("read the staging file", at, e))?;
                    if blake3::hash(&buf).as_bytes() != &info.hash {
                        return Err(bad(entry, "a chunk does not match its chunk list"));
                    }
                    packer.add(self, info.hash, &buf)?;
                    offset += u64::from(info.len);
                }
            }
            None if staged.size == 0 => {}
            None => {
                buf.resize(staged.size as usize, 0);
                file.read_exact_at(&mut buf, 0)
                    .map_err(|e| io_err("read the staging file", at, e))?;
                packer.add(self, staged.hash, &buf)?;
            }
        }
        Ok(PackedOp::File {
            entry: entry.clone(),
            size: staged.size,
            hash: staged.hash,
            chunks,
            stored: staged.stored,
        })
    }

    /// [`Store::record_applied`] of a bucket store: the packs, the blobs'
    /// locations and every op's versions in one transaction.
    pub(super) fn record_packed(
        &self,
        ns: &Namespace,
        run: u64,
        batch: PackedBatch,
        results: &mut [Result<(), StoreError>],
    ) -> Result<(), String> {
        let PackedBatch {
            ops,
            packs,
            put_failed,
        } = batch;
        if let Some(message) = &put_failed {
            for (result, op) in results.iter_mut().zip(&ops) {
                if let (Some(PackedOp::File { entry, .. }), true) = (op, result.is_ok()) {
                    *result = Err(StoreError::BatchFailed {
                        path: entry.path.clone(),
                        detail: message.clone(),
                    });
                }
            }
        }
        let mut cat = self.catalog();
        let run = catalog::sql_u64(run);
        let folder = ns.folder.as_str();
        let recorded = (|| -> rusqlite::Result<()> {
            let tx = cat.conn_mut().transaction()?;
            for pack in &packs {
                blob_index::record_pack(
                    &tx,
                    &pack.id,
                    pack.written_ms,
                    pack.stored_bytes,
                    &pack.entries,
                )?;
            }
            for (op, result) in ops.iter().zip(results.iter_mut()) {
                let Some(op) = op else { continue };
                if result.is_err() {
                    continue;
                }
                match changes_for(&tx, ns, op)? {
                    Ok(changes) => apply_changes(&tx, ns.sender_id, folder, run, &changes)?,
                    Err(e) => *result = Err(e),
                }
            }
            tx.commit()
        })();
        let recorded = recorded.map_err(|e| crate::chain::chain(&cat.err(e)));
        drop(cat);
        // A long run's acknowledged files reach the bucket's copy of the
        // catalog within COPY_EVERY, not only at the run's end.
        if let Some(packed) = self.packed.as_deref() {
            let last = packed.last_copy_ms.load(Ordering::Relaxed);
            if recorded.is_ok() && super::now_ms() - last >= COPY_EVERY.as_millis() as i64 {
                if let Err(e) = self.copy_catalog(packed) {
                    tracing::warn!("{}; the next batch tries again", crate::chain::Chain(&e));
                }
            }
        }
        recorded
    }

    /// Records `path` (and everything below it) as deleted, in a bucket
    /// store.
    pub(super) fn delete_packed(
        &self,
        packed: &Packed,
        ns: &Namespace,
        run: u64,
        path: &RelPath,
    ) -> Result<(), StoreError> {
        let _write = self.write_lock();
        packed
            .writable()
            .map_err(|detail| StoreError::BatchFailed {
                path: path.clone(),
                detail,
            })?;
        let batch = PackedBatch {
            ops: vec![Some(PackedOp::Delete(path.clone()))],
            ..PackedBatch::default()
        };
        let mut results = vec![Ok(())];
        self.record_packed(ns, run, batch, &mut results)
            .map_err(|detail| StoreError::BatchFailed {
                path: path.clone(),
                detail,
            })?;
        results.pop().unwrap_or(Ok(()))
    }

    /// The stored bytes of file version `id` (with `hash`, `size`) of a
    /// bucket store, in an unnamed temporary file of the staging directory,
    /// at offset 0. Every blob is checked against its hash as it is read.
    pub(super) fn open_packed(
        &self,
        packed: &Packed,
        id: i64,
        hash: &Hash,
        size: u64,
    ) -> Result<File, StoreError> {
        let staging = self.root.join(".ferry").join("staging");
        let mut out =
            tempfile::tempfile_in(&staging).map_err(|e| io_err("create a file in", &staging, e))?;
        let list = {
            let cat = self.catalog();
            cat.conn()
                .query_row(
                    "SELECT list FROM chunk_lists WHERE version_id = ?1",
                    [id],
                    |r| r.get::<_, Vec<u8>>(0),
                )
                .optional()
                .map_err(|e| cat.err(e))?
        };
        let hashes: Vec<[u8; 32]> = match list {
            Some(list) => chunk::decode_list(&list)
                .ok_or_else(|| {
                    self.catalog()
                        .corrupt(format!("version {id}: bad chunk list"))
                })?
                .into_iter()
                .map(|c| c.hash)
                .collect(),
            None if size == 0 => Vec::new(),
            None => vec![*hash],
        };
        let located = {
            let cat = self.catalog();
            let mut located = Vec::with_capacity(hashes.len());
            for h in &hashes {
                match blob_index::locate_blob(cat.conn(), h).map_err(|e| cat.err(e))? {
                    Some(at) => located.push(at),
                    None => {
                        return Err(StoreError::Bucket {
                            action: "read a version from",
                            bucket: packed.bucket().name().to_owned(),
                            detail: format!(
                                "version {id}: the catalog has no location for its blob {}",
                                blake3::Hash::from_bytes(*h).to_hex()
                            ),
                        })
                    }
                }
            }
            located
        };
        let bucket = packed.bucket();
        let failed = |detail: String| StoreError::Bucket {
            action: "read a version from",
            bucket: bucket.name().to_owned(),
            detail: format!("version {id}: {detail}"),
        };
        let written = packed.block_on(async {
            let mut written = 0u64;
            let spans = spans(&located, SPAN_BYTES);
            packed
                .counts
                .ranged_gets
                .fetch_add(spans.len() as u64, Ordering::Relaxed);
            let mut pieces = futures_util::stream::iter(spans)
                .map(|span| read_span(bucket, span))
                .buffered(PARALLEL_READS);
            while let Some(blobs) = pieces.next().await {
                for blob in blobs.map_err(failed)? {
                    out.write_all(&blob)
                        .map_err(|e| io_err("write", &staging, e))?;
                    written += blob.len() as u64;
                }
            }
            Ok::<u64, StoreError>(written)
        })?;
        if written != size {
            return Err(StoreError::Bucket {
                action: "read a version from",
                bucket: packed.bucket().name().to_owned(),
                detail: format!("version {id}: its blobs hold {written} bytes, not {size}"),
            });
        }
        out.rewind().map_err(|e| io_err("rewind", &staging, e))?;
        Ok(out)
    }

    /// Puts a copy of the catalog in the bucket (after a run).
    pub(super) fn copy_catalog(&self, packed: &Packed) -> Result<(), StoreError> {
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
            .map_err(|e| bucket_err(packed.bucket(), "copy the catalog to", &e))?;
        packed
            .last_copy_ms
            .store(super::now_ms(), Ordering::Relaxed);
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
    pub(super) fn collect_packs(&self, packed: &Packed) -> Result<bucket::Collected, StoreError> {
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
    /// version's blobs located. `None` for a local store.
    pub fn verify_bucket_store(&self) -> Option<Result<super::VerifyReport, StoreError>> {
        let packed = self.packed.as_deref()?;
        Some(self.verify_packed(packed))
    }

    fn verify_packed(&self, packed: &Packed) -> Result<super::VerifyReport, StoreError> {
        use super::{Finding, FindingKind};
        let bucket = packed.bucket();
        let cat = self.catalog();
        let found = packed
            .block_on(bucket::verify_bucket(bucket, cat.conn()))
            .map_err(|e| bucket_err(bucket, "verify", &e))?;
        let mut report = super::VerifyReport {
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

    /// Where a version of a bucket store is, for messages.
    pub(super) fn packed_location(
        &self,
        packed: &Packed,
        ns: &Namespace,
        path: &RelPath,
    ) -> PathBuf {
        PathBuf::from(packed.bucket().name())
            .join(&ns.sender)
            .join(&ns.folder)
            .join(path.to_string())
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

/// Blobs next to each other in one pack, read with one ranged GET.
#[derive(Debug)]
pub(super) struct Span {
    pack: PackId,
    start: u64,
    end: u64,
    entries: Vec<bucket::BlobEntry>,
}

/// `located` (in order) grouped into spans of at most `max` bytes (a blob
/// larger than that is a span of its own).
pub(super) fn spans(located: &[(PackId, bucket::BlobEntry)], max: u64) -> Vec<Span> {
    let mut out: Vec<Span> = Vec::new();
    for (pack, entry) in located {
        let range = entry.range();
        match out.last_mut() {
            Some(span)
                if span.pack == *pack
                    && span.end == range.start
                    && range.end - span.start <= max =>
            {
                span.end = range.end;
                span.entries.push(*entry);
            }
            _ => out.push(Span {
                pack: *pack,
                start: range.start,
                end: range.end,
                entries: vec![*entry],
            }),
        }
    }
    out
}

/// The blobs of `span`, each decompressed and checked against its hash.
pub(super) async fn read_span(bucket: &Bucket, span: Span) -> Result<Vec<Vec<u8>>, String> {
    use object_store::ObjectStoreExt;
    let bytes = if span.start == span.end {
        bytes::Bytes::new()
    } else {
        bucket
            .store()
            .get_range(&span.pack.key(bucket), span.start..span.end)
            .await
            .map_err(|e| {
                format!(
                    "reading pack {} failed: {}",
                    span.pack.hex(),
                    crate::chain::Chain(&e)
                )
            })?
    };
    span.entries
        .iter()
        .map(|e| {
            let from = (e.offset - span.start) as usize;
            let to = from + e.stored_len as usize;
            let stored = bytes.get(from..to).ok_or_else(|| {
                format!("pack {} returned fewer bytes than asked", span.pack.hex())
            })?;
            bucket::open_blob(e, stored)
                .map_err(|err| format!("pack {}: {}", span.pack.hex(), crate::chain::Chain(&err)))
        })
        .collect()
}

/// Cuts a large file that arrived whole into chunks (as the sender's delta
/// transfer would have).
fn cut(file: &File, at: &Path) -> Result<Vec<ChunkInfo>, StoreError> {
    let mut reader = std::io::BufReader::with_capacity(1 << 20, file);
    reader
        .rewind()
        .map_err(|e| io_err("read the staging file", at, e))?;
    let mut chunker = chunk::Chunker::new(reader);
    let mut list = Vec::new();
    while let Some(piece) = chunker
        .next_chunk()
        .map_err(|e| io_err("read the staging file", at, e))?
    {
        list.push(ChunkInfo {
            len: piece.len() as u32,
            hash: *blake3::hash(piece).as_bytes(),
        });
    }
    Ok(list)
}

/// The current row of `path` inside `tx`.
fn current_in(
    tx: &Transaction<'_>,
    ns: &Namespace,
    path: &[u8],
) -> rusqlite::Result<Option<VersionRow>> {
    let sql = format!(
        "SELECT {} FROM versions WHERE sender_id = ?1 AND folder = ?2 AND path = ?3
         AND replaced_run IS NULL ORDER BY id DESC LIMIT 1",
        catalog::VERSION_COLUMNS
    );
    tx.prepare_cached(&sql)?
        .query_row(
            params![ns.sender_id, ns.folder.as_str(), path],
            catalog::version_row,
        )
        .optional()
}

/// The catalog changes of one op of a bucket store, as the catalog stands
/// inside `tx` (the batch's earlier ops applied): the outer `Err` is the
/// catalog's, the inner one the op's own.
fn changes_for(
    tx: &Transaction<'_>,
    ns: &Namespace,
    op: &PackedOp,
) -> rusqlite::Result<Result<Vec<Change>, StoreError>> {
    let mut changes = Vec::new();
    let (path, new) = match op {
        PackedOp::Delete(path) => {
            changes.push(Change::Retire {
                path: path.clone(),
                archive: None,
                deleted: true,
                below: Below::Gone,
            });
            return Ok(Ok(changes));
        }
        PackedOp::File {
            entry,
            size,
            hash,
            chunks,
            stored,
        } => (
            &entry.path,
            NewVersion {
                path: entry.path.clone(),
                kind: "file",
                size: *size,
                mtime_ns: entry.mtime_ns,
                mode: entry.mode,
                hash: Some(*hash),
                target: None,
                chunks: chunks.clone(),
                stored: Some(*stored),
            },
        ),
        PackedOp::Metadata { entry, hash } => {
            let EntryKind::File { size, .. } = entry.kind else {
                return Ok(Err(bad(entry, "update_metadata needs a file entry")));
            };
            let current = current_in(tx, ns, entry.path.as_bytes())?;
            let same = current.as_ref().is_some_and(|r| {
                r.kind == "file"
                    && r.hash.as_deref() == Some(hash.as_slice())
                    && r.size == catalog::sql_u64(size)
            });
            let Some(current) = current.filter(|_| same) else {
                return Ok(Err(StoreError::Conflict {
                    path: entry.path.clone(),
                    detail: "the stored content changed or is missing; send the content again"
                        .into(),
                }));
            };
            // The same blobs: a chunked version's list goes with it, so the
            // new version names its blobs even once the old one is pruned.
            let chunks: Option<Vec<u8>> = tx
                .prepare_cached("SELECT list FROM chunk_lists WHERE version_id = ?1")?
                .query_row([current.id], |r| r.get(0))
                .optional()?;
            (
                &entry.path,
                NewVersion {
                    path: entry.path.clone(),
                    kind: "file",
                    size,
                    mtime_ns: entry.mtime_ns,
                    mode: entry.mode,
                    hash: Some(*hash),
                    target: None,
                    chunks,
                    stored: None,
                },
            )
        }
        PackedOp::Dir(entry) => {
            if entry.kind != EntryKind::Dir {
                return Ok(Err(bad(entry, "put_dir needs a directory entry")));
            }
            (
                &entry.path,
                NewVersion {
                    path: entry.path.clone(),
                    kind: "dir",
                    size: 0,
                    mtime_ns: entry.mtime_ns,
                    mode: entry.mode,
                    hash: None,
                    target: None,
                    chunks: None,
                    stored: None,
                },
            )
        }
        PackedOp::Symlink(entry) => {
            let EntryKind::Symlink { target } = &entry.kind else {
                return Ok(Err(bad(entry, "put_symlink needs a symlink entry")));
            };
            (
                &entry.path,
                NewVersion {
                    path: entry.path.clone(),
                    kind: "symlink",
                    size: target.len() as u64,
                    mtime_ns: entry.mtime_ns,
                    mode: entry.mode,
                    hash: None,
                    target: Some(target.clone()),
                    chunks: None,
                    stored: None,
                },
            )
        }
    };
    // A file or symlink where a parent directory must be is replaced by it
    // (the directory itself gets its row when its entry comes).
    let bytes = path.as_bytes();
    for (i, _) in bytes.iter().enumerate().filter(|(_, b)| **b == b'/') {
        let parent = &bytes[..i];
        if let Some(row) = current_in(tx, ns, parent)? {
            if row.kind != "dir" {
                if let Ok(parent) = RelPath::from_bytes(parent.to_vec()) {
                    changes.push(Change::Retire {
                        path: parent,
                        archive: None,
                        deleted: false,
                        below: Below::Untouched,
                    });
                }
            }
        }
    }
    let current = current_in(tx, ns, bytes)?;
    match current {
        // The same directory: the row stands.
        Some(row)
            if new.kind == "dir"
                && row.kind == "dir"
                && row.mtime_ns == new.mtime_ns
                && row.mode == i64::from(new.mode) => {}
        // A directory with new metadata keeps what is below it, and so does
        // a directory replacing a file (nothing can be below a file).
        Some(_) if new.kind == "dir" => {
            changes.push(Change::Retire {
                path: path.clone(),
                archive: None,
                deleted: false,
                below: Below::Untouched,
            });
            changes.push(Change::Insert(new));
        }
        None if new.kind == "dir" => changes.push(Change::Insert(new)),
        // A file or symlink: whatever was there is replaced, and what was
        // below it (a directory, recorded or only implied by its children)
        // is deleted; every byte stays in its pack.
        _ => {
            changes.push(Change::Retire {
                path: path.clone(),
                archive: None,
                deleted: false,
                below: Below::Gone,
            });
            changes.push(Change::Insert(new));
        }
    }
    Ok(Ok(changes))
}

fn bad(entry: &Entry, detail: &str) -> StoreError {
    StoreError::BadEntry {
        path: entry.path.clone(),
        detail: detail.to_owned(),
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used)] // a failing unwrap is a failing test
mod tests {
    use super::*;
    use crate::bucket::memory_bucket;
    use crate::store::tests::{file_entry, put_file, rel};
    use ferry_proto::{Base, Name};
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

    /// Content no chunker would cut alike by accident.
    fn noise(len: usize, seed: u64) -> Vec<u8> {
        let mut x = seed
            .wrapping_mul(6364136223846793005)
            .wrapping_add(1442695040888963407);
        (0..len)
            .map(|_| {
                x ^= x << 13;
                x ^= x >> 7;
                x ^= x << 17;
                x as u8
            })
            .collect()
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

    fn packed_objects(store: &Store, bucket: &Bucket) -> usize {
        store
            .packed()
            .unwrap()
            .block_on(crate::bucket::list_packs(bucket))
            .unwrap()
            .len()
    }
}
