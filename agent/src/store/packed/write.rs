//! The write path of a bucket store: a batch's new blobs packed and put,
//! then recorded with its versions in one catalog transaction.

use std::collections::HashSet;
use std::fs::File;
use std::io::Seek;
use std::os::unix::fs::FileExt;
use std::path::Path;
use std::sync::atomic::Ordering;

use ferry_proto::{Entry, Hash, RelPath};

use super::super::catalog::{self, apply_changes};
use super::super::error::{io_err, StoreError};
use super::super::staging::Held;
use super::super::{Namespace, Op, Store, Verified};
use super::changes::{bad, changes_for};
use super::{bucket_err, Packed, COPY_EVERY, PUTS_IN_FLIGHT};
use crate::bucket::{self, blob_index, PackId, PackWriter};
use crate::chunk::{self, ChunkInfo};

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
pub(super) struct PutPack {
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
pub(super) struct Packer<'a> {
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
        pack.written_ms = super::super::now_ms().max(0) as u64;
        self.packs.push(pack);
        Ok(())
    }
}

impl Store {
    /// [`Store::apply_ops`] of a bucket store: every new blob packed and
    /// put; nothing recorded yet. Returns the batch and each op's result so
    /// far.
    pub(in crate::store) fn pack_ops(
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
        // A small whole file arrives in memory; anything else in a staging
        // file.
        let (file, at, memory) = match &staged.staging {
            Held::File(staging) => (Some(&staging.file), staging.path.as_path(), None),
            Held::Memory(data) => (
                None,
                Path::new("(received in memory)"),
                Some(data.as_slice()),
            ),
        };
        let read_at = |buf: &mut [u8], offset: u64| -> Result<(), StoreError> {
            match (memory, file) {
                (Some(data), _) => {
                    let start = usize::try_from(offset).unwrap_or(usize::MAX);
                    let piece = start
                        .checked_add(buf.len())
                        .and_then(|end| data.get(start..end))
                        .ok_or_else(|| bad(entry, "its content is shorter than its size"))?;
                    buf.copy_from_slice(piece);
                    Ok(())
                }
                (None, Some(file)) => file
                    .read_exact_at(buf, offset)
                    .map_err(|e| io_err("read the staging file", at, e)),
                (None, None) => Err(bad(entry, "its content is nowhere (internal error)")),
            }
        };
        let mut chunks = staged.chunks.clone();
        let list = match chunks.as_deref() {
            Some(list) => Some(
                chunk::decode_list(list)
                    .ok_or_else(|| bad(entry, "its chunk list cannot be read"))?,
            ),
            None if staged.size >= chunk::CHUNKED_MIN_SIZE => {
                let list = match (memory, file) {
                    (Some(data), _) => cut_from(data, at)?,
                    (None, Some(file)) => cut(file, at)?,
                    (None, None) => {
                        return Err(bad(entry, "its content is nowhere (internal error)"))
                    }
                };
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
                    read_at(&mut buf, offset)?;
                    if blake3::hash(&buf).as_bytes() != &info.hash {
                        return Err(bad(entry, "a chunk does not match its chunk list"));
                    }
                    packer.add(self, info.hash, &buf)?;
                    offset += u64::from(info.len);
                }
            }
            None if staged.size == 0 => {}
            None => match memory {
                Some(data) => packer.add(self, staged.hash, data)?,
                None => {
                    buf.resize(staged.size as usize, 0);
                    read_at(&mut buf, 0)?;
                    packer.add(self, staged.hash, &buf)?;
                }
            },
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
    pub(in crate::store) fn record_packed(
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
            if recorded.is_ok() && super::super::now_ms() - last >= COPY_EVERY.as_millis() as i64 {
                if let Err(e) = self.copy_catalog(packed) {
                    tracing::warn!("{}; the next batch tries again", crate::chain::Chain(&e));
                }
            }
        }
        recorded
    }

    /// Records `path` (and everything below it) as deleted, in a bucket
    /// store.
    pub(in crate::store) fn delete_packed(
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
}

/// Cuts a large file that arrived whole into chunks (as the sender's delta
/// transfer would have).
fn cut(file: &File, at: &Path) -> Result<Vec<ChunkInfo>, StoreError> {
    let mut reader = std::io::BufReader::with_capacity(1 << 20, file);
    reader
        .rewind()
        .map_err(|e| io_err("read the staging file", at, e))?;
    cut_from(reader, at)
}

/// Cuts content read from `reader` into chunks.
fn cut_from(reader: impl std::io::Read, at: &Path) -> Result<Vec<ChunkInfo>, StoreError> {
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
