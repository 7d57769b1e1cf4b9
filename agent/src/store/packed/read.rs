//! The read path of a bucket store: a version's blobs located, read in
//! spans of neighbouring blobs with one ranged GET each, checked.

use std::fs::File;
use std::io::{Seek, Write};
use std::path::PathBuf;
use std::sync::atomic::Ordering;

use ferry_proto::{Hash, RelPath};
use futures_util::StreamExt;
use rusqlite::OptionalExtension;

use super::super::error::{io_err, StoreError};
use super::super::{Namespace, Store};
use super::{Packed, PARALLEL_READS, SPAN_BYTES};
use crate::bucket::{self, blob_index, Bucket, PackId};
use crate::chunk::{self};

impl Store {
    /// The stored bytes of file version `id` (with `hash`, `size`) of a
    /// bucket store, in an unnamed temporary file of the staging directory,
    /// at offset 0. Every blob is checked against its hash as it is read.
    pub(in crate::store) fn open_packed(
        &self,
        packed: &Packed,
        id: i64,
        hash: &Hash,
        size: u64,
    ) -> Result<File, StoreError> {
        let staging = self.root.join(".ferry").join("staging");
        // Created beneath the state's root without following a symlink, as
        // every staging file is, and unlinked at once: it lives while open.
        let at = staging.join(format!("read-{}", self.next_counter()));
        let mut out = self.tree.create_new(&at, 0o600)?;
        self.tree.remove_file(&at)?;
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

    /// Where a version of a bucket store is, for messages.
    pub(in crate::store) fn packed_location(
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

/// Blobs next to each other in one pack, read with one ranged GET.
#[derive(Debug)]
pub(crate) struct Span {
    pack: PackId,
    start: u64,
    end: u64,
    entries: Vec<bucket::BlobEntry>,
}

/// `located` (in order) grouped into spans of at most `max` bytes (a blob
/// larger than that is a span of its own).
pub(crate) fn spans(located: &[(PackId, bucket::BlobEntry)], max: u64) -> Vec<Span> {
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
pub(crate) async fn read_span(bucket: &Bucket, span: Span) -> Result<Vec<Vec<u8>>, String> {
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
