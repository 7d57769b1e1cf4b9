//! Receiving chunked content: rebuilding a file in staging from the base's
//! chunks and the new ones, durable every few MiB so that an interrupted
//! transfer resumes where it stopped. Blocking; the session calls it on the
//! blocking pool, a batch of operations at a time.

use std::sync::Arc;

use ferry_proto::{Base, Entry, EntryKind, Hash, Resume};

use crate::chunk::{self, ChunkInfo};
use crate::store::{BaseContent, Namespace, Staged, Store, StoreError, Verified};

/// Bytes written between two checkpoints (fdatasync + catalog row).
const CHECKPOINT: u64 = 16 << 20;

/// One operation of chunked content.
#[derive(Debug)]
pub(super) enum ChunkOp {
    /// A new chunk of this many bytes, the next ones of the batch's data.
    Write(u32),
    /// Chunks `start..start + count` of the base.
    Copy { start: u32, count: u32 },
}

/// New chunks of a batch hashed but not yet written: `data[from..to]`.
struct Pending {
    from: usize,
    to: usize,
    chunks: Vec<ChunkInfo>,
}

/// A file being rebuilt from chunks.
#[derive(Debug)]
pub(super) struct ChunkedFile {
    store: Arc<Store>,
    ns: Namespace,
    /// The run this transfer belongs to.
    run: u64,
    staged: Staged,
    chunks: Vec<ChunkInfo>,
    base: Option<BaseContent>,
    /// Bytes durable and recorded as the partial transfer.
    synced: u64,
    buf: Vec<u8>,
}

/// What [`ChunkedFile::open`] found: the file, the base's chunk lengths
/// (if a base is held) and a kept prefix to offer.
pub(super) type Opened = (ChunkedFile, Option<Vec<u32>>, Option<Resume>);

impl ChunkedFile {
    /// Finds the base and any kept partial transfer of the entry's path,
    /// and opens the staging file.
    pub fn open(
        store: Arc<Store>,
        ns: Namespace,
        run: u64,
        entry: &Entry,
        size: u64,
        base: Option<&Base>,
    ) -> Result<Opened, StoreError> {
        let base = match base {
            Some(b) => match store.base(&ns, b) {
                Ok(found) => found,
                Err(e) => {
                    tracing::warn!(path = %entry.path, base = %b.path, "base not usable: {}", crate::chain::Chain(&e));
                    None
                }
            },
            None => None,
        };
        let lens = base
            .as_ref()
            .map(|b| b.chunks().iter().map(|c| c.len).collect());
        let (mut staged, chunks, resume, synced) =
            match store.resume_partial(&ns, &entry.path, size)? {
                Some(r) => {
                    let len = r.resume.len;
                    (r.staged, r.chunks, Some(r.resume), len)
                }
                None => (
                    store.stage_chunked(&ns, &entry.path, size)?,
                    Vec::new(),
                    None,
                    0,
                ),
            };
        if let EntryKind::File { content, .. } = &entry.kind {
            if !content.size_is_exact() {
                staged.declared_at_most();
            }
        }
        let file = ChunkedFile {
            store,
            ns,
            run,
            staged,
            chunks,
            base,
            synced,
            buf: Vec::new(),
        };
        Ok((file, lens, resume))
    }

    /// The sender did not keep the offered prefix: start from nothing.
    pub fn restart(&mut self) -> Result<(), StoreError> {
        if self.staged.written() > 0 {
            self.staged.restart()?;
            self.chunks.clear();
            self.synced = 0;
            self.store.forget_partial(&self.ns, &self.staged)?;
        }
        Ok(())
    }

    /// Applies operations in order, checkpointing every few MiB.
    pub fn apply(&mut self, ops: &[ChunkOp], data: &[u8]) -> Result<(), StoreError> {
        // New chunks next to each other in `data` are written with one call;
        // `self.chunks` only ever lists chunks that were written.
        let mut offset = 0;
        let mut pending = Pending {
            from: 0,
            to: 0,
            chunks: Vec::new(),
        };
        for op in ops {
            match *op {
                ChunkOp::Write(len) => {
                    let to = offset + len as usize;
                    let Some(chunk) = data.get(offset..to) else {
                        return Err(StoreError::BadEntry {
                            path: self.staged.rel().clone(),
                            detail: "a batch is shorter than its chunks".into(),
                        });
                    };
                    if pending.chunks.is_empty() {
                        pending.from = offset;
                    }
                    pending.to = to;
                    pending.chunks.push(ChunkInfo {
                        len,
                        hash: *blake3::hash(chunk).as_bytes(),
                    });
                    offset = to;
                }
                ChunkOp::Copy { start, count } => {
                    self.write_pending(data, &mut pending)?;
                    let mut buf = std::mem::take(&mut self.buf);
                    for i in start..start + count {
                        let info = match &self.base {
                            Some(base) => base.read_chunk(i as usize, &mut buf)?,
                            None => {
                                return Err(StoreError::BadEntry {
                                    path: self.staged.rel().clone(),
                                    detail: "Copy without a base".into(),
                                })
                            }
                        };
                        self.staged.write(&buf)?;
                        self.chunks.push(info);
                    }
                    self.buf = buf;
                }
            }
            let unwritten = (pending.to - pending.from) as u64;
            if self.staged.written() + unwritten - self.synced >= CHECKPOINT {
                self.write_pending(data, &mut pending)?;
                self.checkpoint()?;
            }
        }
        self.write_pending(data, &mut pending)
    }

    /// Writes the new chunks gathered in `pending` and lists them.
    fn write_pending(&mut self, data: &[u8], pending: &mut Pending) -> Result<(), StoreError> {
        if pending.chunks.is_empty() {
            return Ok(());
        }
        self.staged.write(&data[pending.from..pending.to])?;
        self.chunks.append(&mut pending.chunks);
        pending.from = pending.to;
        Ok(())
    }

    fn checkpoint(&mut self) -> Result<(), StoreError> {
        self.store
            .save_partial(&self.ns, &mut self.staged, &self.chunks)?;
        self.synced = self.staged.written();
        Ok(())
    }

    /// The transfer was cut off: keep what arrived for the next attempt.
    pub fn interrupted(mut self) {
        let path = self.staged.rel().clone();
        // A later run stored the path meanwhile (this stream's connection
        // died long ago): nothing here is worth keeping.
        let stale = self
            .store
            .stored_after(&self.ns, &path, self.run)
            .unwrap_or(true);
        if stale || self.chunks.is_empty() {
            let _ = self.store.forget_partial(&self.ns, &self.staged);
            return;
        }
        match self.checkpoint() {
            Ok(()) => {
                tracing::info!(path = %path, kept = self.synced, "kept an interrupted transfer to resume");
                self.staged.keep();
            }
            Err(e) => {
                tracing::warn!(path = %path, "could not keep an interrupted transfer: {}", crate::chain::Chain(&e));
                let _ = self.store.forget_partial(&self.ns, &self.staged);
            }
        }
    }

    /// The transfer failed for good: nothing is kept.
    pub fn discard(self) {
        let _ = self.store.forget_partial(&self.ns, &self.staged);
    }

    /// Verifies the whole file against `hash`; the chunk list goes with it.
    pub fn finish(self, hash: &Hash) -> Result<Verified, StoreError> {
        self.store.forget_partial(&self.ns, &self.staged)?;
        let list = chunk::encode_list(&self.chunks);
        Ok(self.staged.finish(hash)?.with_chunks(list))
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used)] // a failing unwrap is a failing test
mod tests {
    use super::*;
    use crate::store::tests::{file_entry, fixture};

    fn random(len: usize) -> Vec<u8> {
        let mut out = vec![0u8; len];
        blake3::Hasher::new().finalize_xof().fill(&mut out);
        out
    }

    /// New chunks written a batch at a time (several to one write) rebuild
    /// the file, and the chunk list recorded is the file's.
    #[test]
    fn batches_of_new_chunks_rebuild_the_file_and_its_list() {
        let (_dir, store, ns) = fixture();
        let store = Arc::new(store);
        let data = random(900_000);
        let list = chunk::chunk_list(&data);
        assert!(list.len() > 6, "{}", list.len());
        let run = store.begin_run(&ns).unwrap();
        let entry = file_entry("big", &data, 1, 0o644);
        let (mut file, lens, resume) =
            ChunkedFile::open(store.clone(), ns, run, &entry, data.len() as u64, None).unwrap();
        assert!(lens.is_none() && resume.is_none());
        let mut at = 0;
        for batch in list.chunks(4) {
            let ops: Vec<ChunkOp> = batch.iter().map(|c| ChunkOp::Write(c.len)).collect();
            let len: usize = batch.iter().map(|c| c.len as usize).sum();
            file.apply(&ops, &data[at..at + len]).unwrap();
            at += len;
        }
        let mut verified = file.finish(blake3::hash(&data).as_bytes()).unwrap();
        assert_eq!(verified.chunks, Some(chunk::encode_list(&list)));
        assert_eq!(std::fs::read(&verified.file().unwrap().path).unwrap(), data);
    }

    /// A batch whose data ends before its chunks do is refused, and no
    /// chunk is listed that was not written.
    #[test]
    fn a_short_batch_is_refused_and_lists_only_what_was_written() {
        let (_dir, store, ns) = fixture();
        let store = Arc::new(store);
        let data = random(300_000);
        let list = chunk::chunk_list(&data);
        let run = store.begin_run(&ns).unwrap();
        let entry = file_entry("big", &data, 1, 0o644);
        let (mut file, _, _) =
            ChunkedFile::open(store.clone(), ns, run, &entry, data.len() as u64, None).unwrap();
        let ops = [ChunkOp::Write(list[0].len), ChunkOp::Write(list[1].len)];
        let short = &data[..list[0].len as usize + 10];
        assert!(file.apply(&ops, short).is_err());
        assert!(file.chunks.is_empty(), "{:?}", file.chunks);
        assert_eq!(file.staged.written(), 0);
    }
}
