//! The chunk lists of chunked files the receiver acknowledged: the bases
//! later deltas are described against, found by path or by first chunk.

use ferry_proto::{Hash, RelPath};
use rusqlite::{params, OptionalExtension};

use super::{Index, IndexError};
use crate::chunk::ChunkInfo;

/// A chunked file's content as the receiver stores it: where, its hash,
/// and its chunk list as the receiver lists it (one entry per `Data`
/// message or copied chunk), the base of a later delta.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ChunkRecord {
    /// The path on the receiver (a sealed folder's: the opaque path).
    pub path: RelPath,
    /// The hash of the content as stored (a sealed folder's: the object's).
    pub hash: Hash,
    /// What a rename or copy is found by: the first chunk's hash (a sealed
    /// object's: its first data piece's id, the front being the header).
    pub first: Hash,
    pub list: Vec<ChunkInfo>,
}

impl ChunkRecord {
    /// A plain file's record: stored at its own path, as its chunks.
    pub fn plain(path: RelPath, hash: Hash, list: Vec<ChunkInfo>) -> Option<ChunkRecord> {
        let first = list.first()?.hash;
        Some(ChunkRecord {
            path,
            hash,
            first,
            list,
        })
    }
}

impl Index {
    /// Records the chunk lists of chunked files the receiver acknowledged:
    /// the bases later deltas are described against. Kept after the path is
    /// deleted, so a rename finds its old content.
    pub fn record_chunks(&mut self, items: &[ChunkRecord]) -> Result<(), IndexError> {
        let (path, target) = (&self.path, &self.target);
        let sql = |what, source| IndexError::Sql {
            path: path.clone(),
            what,
            source,
        };
        let what = "recording chunk lists";
        let tx = self.conn.transaction().map_err(|e| sql(what, e))?;
        {
            let mut stmt = tx
                .prepare_cached(
                    "INSERT OR REPLACE INTO chunk_lists (target, path, file_hash, first, list)
                     VALUES (?1, ?2, ?3, ?4, ?5)",
                )
                .map_err(|e| sql(what, e))?;
            for record in items.iter().filter(|r| !r.list.is_empty()) {
                stmt.execute(params![
                    target,
                    record.path.as_bytes(),
                    record.hash.as_slice(),
                    record.first.as_slice(),
                    crate::chunk::encode_list(&record.list),
                ])
                .map_err(|e| sql(what, e))?;
            }
        }
        tx.commit().map_err(|e| sql(what, e))
    }

    /// The base for chunked content of `path`: the chunk list last
    /// acknowledged for `path`, else that of another file whose first chunk
    /// is `first` (a rename or copy). Returns the base's path, content hash
    /// and chunks.
    pub fn base_for(
        &self,
        path: &RelPath,
        first: &Hash,
    ) -> Result<Option<(RelPath, Hash, Vec<ChunkInfo>)>, IndexError> {
        let what = "reading chunk lists";
        let row: Option<(Vec<u8>, Vec<u8>, Vec<u8>)> = self
            .conn
            .query_row(
                "SELECT path, file_hash, list FROM (
                     SELECT 0 AS pick, path, file_hash, list FROM chunk_lists
                         WHERE target = ?1 AND path = ?2
                     UNION ALL
                     SELECT 1 AS pick, path, file_hash, list FROM chunk_lists
                         WHERE target = ?1 AND first = ?3)
                 ORDER BY pick LIMIT 1",
                params![self.target, path.as_bytes(), first.as_slice()],
                |r| Ok((r.get(0)?, r.get(1)?, r.get(2)?)),
            )
            .optional()
            .map_err(|e| self.sql(what, e))?;
        let Some((p, hash, list)) = row else {
            return Ok(None);
        };
        let decoded = (
            RelPath::from_bytes(p),
            Hash::try_from(hash.as_slice()),
            crate::chunk::decode_list(&list),
        );
        match decoded {
            (Ok(p), Ok(hash), Some(chunks)) => Ok(Some((p, hash, chunks))),
            _ => Err(IndexError::BadRow {
                path: self.path.clone(),
                row: format!("chunk list of {path}"),
                message: "undecodable".into(),
            }),
        }
    }
}
