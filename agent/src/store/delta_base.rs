//! The base a delta copies from: a stored version of the path with the
//! content the sender names, its chunk list, each chunk re-hashed on read.

use std::fs::File;
use std::os::unix::fs::FileExt;
use std::path::PathBuf;

use ferry_proto::Base;

use super::error::StoreError;
use super::packed::Packed;
use super::{Namespace, Store};
use crate::bucket::{blob_index, BlobEntry, PackId};
use crate::chunk::{self, ChunkInfo};

/// The content a delta copies from: an open version and its chunk list.
#[derive(Debug)]
pub struct BaseContent {
    source: Source,
    path: PathBuf,
    chunks: Vec<ChunkInfo>,
    /// Start offset of each chunk.
    offsets: Vec<u64>,
}

/// Where a base's bytes are read from.
#[derive(Debug)]
enum Source {
    /// A file of a local store.
    File(File),
    /// The blobs of a bucket store: where each chunk is.
    Bucket {
        packed: std::sync::Arc<Packed>,
        blobs: Vec<(PackId, BlobEntry)>,
        /// The chunks last read with one ranged GET: the first one's index
        /// and their bytes (chunks are mostly read in order).
        cache: std::sync::Mutex<(usize, Vec<Vec<u8>>)>,
    },
}

impl BaseContent {
    /// The base's chunk list.
    pub fn chunks(&self) -> &[ChunkInfo] {
        &self.chunks
    }

    /// Reads chunk `i` into `buf`, checking its hash: a base changed or
    /// damaged since it was stored is [`StoreError::BaseDamaged`].
    pub fn read_chunk(&self, i: usize, buf: &mut Vec<u8>) -> Result<ChunkInfo, StoreError> {
        let (Some(info), Some(&offset)) = (self.chunks.get(i), self.offsets.get(i)) else {
            return Err(self.damaged(format!("it has no chunk {i}")));
        };
        match &self.source {
            Source::File(file) => {
                buf.resize(info.len as usize, 0);
                file.read_exact_at(buf, offset)
                    .map_err(|e| self.damaged(format!("reading chunk {i} failed: {e}")))?;
            }
            Source::Bucket {
                packed,
                blobs,
                cache,
            } => {
                let mut cache = cache
                    .lock()
                    .unwrap_or_else(std::sync::PoisonError::into_inner);
                let (first, held) = &*cache;
                if !(i >= *first && i < first + held.len()) {
                    let Some(rest) = blobs.get(i..) else {
                        return Err(self.damaged(format!("it has no chunk {i}")));
                    };
                    let mut spans = super::packed::spans(rest, super::packed::SPAN_BYTES);
                    if spans.is_empty() {
                        return Err(self.damaged(format!("it has no chunk {i}")));
                    }
                    let span = spans.swap_remove(0);
                    packed
                        .counts
                        .ranged_gets
                        .fetch_add(1, std::sync::atomic::Ordering::Relaxed);
                    let read = packed
                        .block_on(super::packed::read_span(packed.bucket(), span))
                        .map_err(|e| self.damaged(format!("reading chunk {i} failed: {e}")))?;
                    *cache = (i, read);
                }
                let (first, held) = &*cache;
                let Some(bytes) = held.get(i - first) else {
                    return Err(self.damaged(format!("it has no chunk {i}")));
                };
                buf.clear();
                buf.extend_from_slice(bytes);
            }
        }
        if blake3::hash(buf).as_bytes() != &info.hash {
            return Err(self.damaged(format!("chunk {i} does not match its hash")));
        }
        Ok(*info)
    }

    fn damaged(&self, detail: String) -> StoreError {
        StoreError::BaseDamaged {
            path: self.path.clone(),
            detail,
        }
    }
}

impl Store {
    /// The base of a delta: the newest version of `base.path` in `ns` with
    /// content `base.hash` that has a chunk list and whose bytes are still
    /// there (in the mirror or the versions area). `None` if there is none.
    pub fn base(&self, ns: &Namespace, base: &Base) -> Result<Option<BaseContent>, StoreError> {
        let list = self
            .catalog()
            .chunk_list(ns.sender_id, &ns.folder, &base.path, &base.hash)?;
        let Some(chunks) = list.as_deref().and_then(chunk::decode_list) else {
            return Ok(None);
        };
        let size: u64 = chunks.iter().map(|c| u64::from(c.len)).sum();
        self.place.base(self, ns, base, chunks, size)
    }

    /// [`Store::base`] in a local store: the version's bytes in the mirror
    /// or the versions area.
    pub(in crate::store) fn local_base(
        &self,
        ns: &Namespace,
        base: &Base,
        chunks: Vec<ChunkInfo>,
        size: u64,
    ) -> Result<Option<BaseContent>, StoreError> {
        for version in self.versions(ns, &base.path)? {
            if version.kind != "file" || version.hash != Some(base.hash) || version.size != size {
                continue;
            }
            // The mirror is checked without following symlinks; the
            // versions area is Ferry's own.
            if version.current {
                if !self.ns_dir_ok(ns)? {
                    continue;
                }
                match self.tree.lookup(&self.ns_dir(ns), &base.path)? {
                    Some(m) if m.is_file() && m.len() == size => {}
                    _ => continue,
                }
            }
            let Ok(file) = self.tree.open_nofollow(&version.location, false) else {
                continue;
            };
            match file.metadata() {
                Ok(m) if m.is_file() && m.len() == size => {}
                _ => continue,
            }
            let offsets = chunks
                .iter()
                .scan(0u64, |at, c| {
                    let start = *at;
                    *at += u64::from(c.len);
                    Some(start)
                })
                .collect();
            return Ok(Some(BaseContent {
                source: Source::File(file),
                path: version.location,
                chunks,
                offsets,
            }));
        }
        Ok(None)
    }

    /// [`Store::base`] of a bucket store: a version with that content and
    /// every chunk located in the bucket.
    pub(in crate::store) fn packed_base(
        &self,
        packed: &std::sync::Arc<Packed>,
        ns: &Namespace,
        base: &Base,
        chunks: Vec<ChunkInfo>,
        size: u64,
    ) -> Result<Option<BaseContent>, StoreError> {
        let Some(version) = self
            .versions(ns, &base.path)?
            .into_iter()
            .find(|v| v.kind == "file" && v.hash == Some(base.hash) && v.size == size)
        else {
            return Ok(None);
        };
        let mut blobs = Vec::with_capacity(chunks.len());
        {
            let cat = self.catalog();
            for c in &chunks {
                match blob_index::locate_blob(cat.conn(), &c.hash).map_err(|e| cat.err(e))? {
                    Some(at) => blobs.push(at),
                    None => return Ok(None),
                }
            }
        }
        let offsets = chunks
            .iter()
            .scan(0u64, |at, c| {
                let start = *at;
                *at += u64::from(c.len);
                Some(start)
            })
            .collect();
        Ok(Some(BaseContent {
            source: Source::Bucket {
                packed: std::sync::Arc::clone(packed),
                blobs,
                cache: std::sync::Mutex::new((0, Vec::new())),
            },
            path: version.location,
            chunks,
            offsets,
        }))
    }
}
