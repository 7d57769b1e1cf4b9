//! Where one file's content goes while it arrives: memory for a small file,
//! a staging file for a large one, or a file rebuilt from chunks
//! ([`ChunkedFile`]); and its verification once the sender says `End`.

use std::sync::Arc;

use ferry_proto::{Entry, FailCode, Failure, Hash};

use super::context::{failure, on_store, RunContext};
use crate::receiver::rebuild::{ChunkOp, ChunkedFile};
use crate::store::{Staged, StoreError, Verified};

/// Files up to this size are received into memory and written to staging in
/// one go; larger ones are streamed to staging as they arrive.
const SMALL_FILE: u64 = 128 * 1024;

/// Chunked content is applied to staging in batches of about this size.
const CHUNK_BATCH: usize = 1 << 20;

/// Where a file's content goes while it arrives.
pub(super) enum Sink {
    Memory(Vec<u8>),
    Staged(Box<Staged>),
    Chunked {
        file: Box<ChunkedFile>,
        /// Operations waiting to be applied; new chunks' bytes are in
        /// `data`, one buffer per stream, reused batch after batch (the
        /// frames they came in are freed on this thread at once).
        pending: Vec<ChunkOp>,
        data: Vec<u8>,
        pending_bytes: usize,
        /// True until the first operation: a kept prefix not confirmed by
        /// `Keep` is dropped then.
        first: bool,
    },
}

impl Sink {
    /// A file rebuilt from chunks; `resumed`: a kept prefix is offered,
    /// dropped at the first operation unless `Keep` confirms it.
    pub(super) fn chunked(file: ChunkedFile, resumed: bool) -> Sink {
        Sink::Chunked {
            file: Box::new(file),
            pending: Vec::new(),
            data: Vec::with_capacity(CHUNK_BATCH + crate::chunk::MAX_CHUNK),
            pending_bytes: 0,
            first: resumed,
        }
    }

    /// The sender kept the offered prefix: it is already in place.
    pub(super) fn kept(&mut self) {
        if let Sink::Chunked { first, .. } = self {
            *first = false;
        }
    }

    pub(super) async fn open(
        ctx: &Arc<RunContext>,
        entry: &Entry,
        size: u64,
    ) -> Result<Sink, Failure> {
        if size <= SMALL_FILE {
            return Ok(Sink::Memory(Vec::with_capacity(size as usize)));
        }
        let c = ctx.clone();
        let path = entry.path.clone();
        let staged = on_store(move || c.store.stage(&c.ns, &path, size)).await?;
        Ok(Sink::Staged(Box::new(staged)))
    }

    pub(super) async fn write(self, data: Vec<u8>) -> Result<Sink, Failure> {
        match self {
            Sink::Memory(mut buf) => {
                buf.extend_from_slice(&data);
                Ok(Sink::Memory(buf))
            }
            Sink::Staged(mut staged) => {
                let staged = on_store(move || {
                    staged.write(&data)?;
                    Ok(staged)
                })
                .await?;
                Ok(Sink::Staged(staged))
            }
            Sink::Chunked { .. } => self.push(ChunkOp::Write(data.len() as u32), &data).await,
        }
    }

    pub(super) async fn copy(self, start: u32, count: u32) -> Result<Sink, Failure> {
        // A copy costs the receiver a read; count it like about a chunk each.
        let weight = count as usize * crate::chunk::AVG_CHUNK;
        self.push_weighted(ChunkOp::Copy { start, count }, &[], weight)
            .await
    }

    async fn push(self, op: ChunkOp, bytes: &[u8]) -> Result<Sink, Failure> {
        self.push_weighted(op, bytes, bytes.len()).await
    }

    /// Queues a chunked operation; applies the queue once it is large.
    async fn push_weighted(
        self,
        op: ChunkOp,
        bytes: &[u8],
        weight: usize,
    ) -> Result<Sink, Failure> {
        let Sink::Chunked {
            file,
            mut pending,
            mut data,
            mut pending_bytes,
            first,
        } = self
        else {
            return Err(failure(
                FailCode::BadRequest,
                "chunk outside chunked content",
            ));
        };
        pending.push(op);
        data.extend_from_slice(bytes);
        pending_bytes += weight;
        let mut sink = Sink::Chunked {
            file,
            pending,
            data,
            pending_bytes,
            first,
        };
        if pending_bytes >= CHUNK_BATCH {
            sink = sink.flush().await?;
        }
        Ok(sink)
    }

    /// Applies queued chunked operations.
    async fn flush(self) -> Result<Sink, Failure> {
        let Sink::Chunked {
            mut file,
            mut pending,
            mut data,
            first,
            ..
        } = self
        else {
            return Ok(self);
        };
        let (file, pending, data) = on_store(move || {
            if first {
                file.restart()?;
            }
            file.apply(&pending, &data)?;
            pending.clear();
            data.clear();
            Ok((file, pending, data))
        })
        .await?;
        Ok(Sink::Chunked {
            file,
            pending,
            data,
            pending_bytes: 0,
            first: false,
        })
    }

    /// The entry ended without being stored. `lost`: the stream was cut
    /// off, so chunked content keeps what arrived for the next attempt.
    pub(super) async fn abandon(self, lost: bool) {
        if !matches!(self, Sink::Chunked { .. }) {
            return;
        }
        let sink = if lost { self.flush().await } else { Ok(self) };
        if let Ok(Sink::Chunked { file, .. }) = sink {
            // Cancelled only when the runtime stops: the staging file is
            // then left for the store's next open to clear.
            let _ = crate::tasks::blocking(move || {
                if lost {
                    file.interrupted();
                } else {
                    file.discard();
                }
            })
            .await;
        }
    }

    /// Verifies the content against `hash`; it is then ready to commit.
    pub(super) async fn finish(
        self,
        ctx: &Arc<RunContext>,
        entry: &Entry,
        hash: Hash,
    ) -> Result<Verified, Failure> {
        if let Sink::Chunked { .. } = self {
            let Sink::Chunked { file, .. } = self.flush().await? else {
                return Err(failure(FailCode::Io, "chunked content lost its file"));
            };
            return on_store(move || file.finish(&hash)).await;
        }
        let c = ctx.clone();
        let path = entry.path.clone();
        on_store(move || match self {
            Sink::Memory(buf) => {
                let mut staged = c.store.stage(&c.ns, &path, buf.len() as u64)?;
                staged.write(&buf)?;
                staged.finish(&hash)
            }
            Sink::Staged(staged) => (*staged).finish(&hash),
            Sink::Chunked { .. } => Err(StoreError::BadEntry {
                path,
                detail: "chunked content".into(),
            }),
        })
        .await
    }
}
