//! The base a delta copies from: a stored version of the path with the
//! content the sender names, its chunk list, each chunk re-hashed on read.

use std::fs::File;
use std::os::unix::fs::FileExt;
use std::path::PathBuf;

use ferry_proto::Base;

use super::error::StoreError;
use super::{Namespace, Store};
use crate::chunk::{self, ChunkInfo};

/// The content a delta copies from: an open version and its chunk list.
#[derive(Debug)]
pub struct BaseContent {
    file: File,
    path: PathBuf,
    chunks: Vec<ChunkInfo>,
    /// Start offset of each chunk.
    offsets: Vec<u64>,
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
        buf.resize(info.len as usize, 0);
        self.file
            .read_exact_at(buf, offset)
            .map_err(|e| self.damaged(format!("reading chunk {i} failed: {e}")))?;
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
                file,
                path: version.location,
                chunks,
                offsets,
            }));
        }
        Ok(None)
    }
}
