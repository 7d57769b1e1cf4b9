//! Receiving chunked content: rebuilding a file in staging from the base's
//! chunks and the new ones, durable every few MiB so that an interrupted
//! transfer resumes where it stopped. Blocking; the session calls it on the
//! blocking pool, a batch of operations at a time.

use std::sync::Arc;

use ferry_proto::{Base, Entry, Hash, Resume};

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
                    tracing::warn!(path = %entry.path, base = %b.path, "base not usable: {e}");
                    None
                }
            },
            None => None,
        };
        let lens = base
            .as_ref()
            .map(|b| b.chunks().iter().map(|c| c.len).collect());
        let (staged, chunks, resume, synced) = match store.resume_partial(&ns, &entry.path, size)? {
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
        let mut rest = data;
        for op in ops {
            match *op {
                ChunkOp::Write(len) => {
                    let Some((data, after)) = rest.split_at_checked(len as usize) else {
                        return Err(StoreError::BadEntry {
                            path: self.staged.rel().clone(),
                            detail: "a batch is shorter than its chunks".into(),
                        });
                    };
                    rest = after;
                    self.staged.write(data)?;
                    self.chunks.push(ChunkInfo {
                        len,
                        hash: *blake3::hash(data).as_bytes(),
                    });
                }
                ChunkOp::Copy { start, count } => {
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
            if self.staged.written() - self.synced >= CHECKPOINT {
                self.checkpoint()?;
            }
        }
        Ok(())
    }

    fn checkpoint(&mut self) -> Result<(), StoreError> {
        self.store
            .save_partial(&self.ns, &self.staged, &self.chunks)?;
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
                tracing::warn!(path = %path, "could not keep an interrupted transfer: {e}");
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
