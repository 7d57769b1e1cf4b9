//! Packs: many content blobs in one immutable object.
//!
//! ```text
//! pack  = "FERRYPK1" ‖ blob* ‖ index ‖ index_len (u32 LE) ‖ "FERRYPKE"
//! blob  = the content, or its zstd compression when that is at least 1/32 smaller
//! index = postcard list of BlobEntry { hash, offset, stored_len, raw_len, compressed }
//! ```
//!
//! A blob is named by the blake3 hash of its content (before compression)
//! and appears at most once in a pack. The pack is named by the blake3 hash
//! of all its bytes ([`PackId`]) and stored as `PREFIX/ferry/packs/<first
//! two hex digits>/<64 hex digits>`: a pack's name proves its bytes, and a
//! pack is never rewritten in place. The index at the end makes a pack
//! readable without the catalog (verification, and rebuilding the catalog's
//! blob locations if ever needed); reading one blob needs only its range.

use std::collections::HashSet;

use bytes::Bytes;
use object_store::path::Path as ObjectPath;
use serde::{Deserialize, Serialize};

use super::Bucket;

/// A pack is closed once it holds this many bytes.
pub const PACK_TARGET: usize = 16 << 20;
const MAGIC: &[u8; 8] = b"FERRYPK1";
const MAGIC_END: &[u8; 8] = b"FERRYPKE";
/// The fixed tail: the index length and the end magic.
const TAIL: usize = 4 + 8;
/// Largest index a pack may declare (a pack of 16 MiB of 1-byte blobs
/// would need more, but packs close at [`PACK_TARGET`] bytes of content and
/// each entry takes ~50 bytes of index: this bounds what a reader allocates).
const MAX_INDEX: usize = 64 << 20;

/// A pack's name: the blake3 hash of its bytes.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct PackId(pub [u8; 32]);

impl PackId {
    pub fn hex(&self) -> String {
        self.0.iter().map(|b| format!("{b:02x}")).collect()
    }

    /// The pack named by 64 lowercase hex digits.
    pub fn parse_hex(hex: &str) -> Option<PackId> {
        if hex.len() != 64
            || !hex
                .bytes()
                .all(|b| b.is_ascii_digit() || (b'a'..=b'f').contains(&b))
        {
            return None;
        }
        let mut id = [0u8; 32];
        for (i, byte) in id.iter_mut().enumerate() {
            *byte = u8::from_str_radix(&hex[2 * i..2 * i + 2], 16).ok()?;
        }
        Some(PackId(id))
    }

    /// The pack's key in `bucket`.
    pub fn key(&self, bucket: &Bucket) -> ObjectPath {
        let hex = self.hex();
        bucket.key(&["packs", &hex[..2], &hex])
    }
}

/// Where one blob is in its pack.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct BlobEntry {
    /// blake3 of the content.
    pub hash: [u8; 32],
    /// Where the stored bytes start in the pack.
    pub offset: u64,
    pub stored_len: u32,
    pub raw_len: u32,
    pub compressed: bool,
}

impl BlobEntry {
    /// The byte range of the stored blob in its pack.
    pub fn range(&self) -> std::ops::Range<u64> {
        self.offset..self.offset + u64::from(self.stored_len)
    }
}

/// A pack or a blob in it is not what it should be.
#[derive(Debug, thiserror::Error)]
pub enum PackError {
    #[error("not a Ferry pack ({detail})")]
    NotAPack { detail: &'static str },
    #[error("the pack's index is damaged")]
    Index(#[source] postcard::Error),
    #[error("blob {hash} is damaged in its pack ({detail})")]
    Blob { hash: String, detail: String },
}

fn hex(hash: &[u8; 32]) -> String {
    hash.iter().map(|b| format!("{b:02x}")).collect()
}

/// A pack being filled.
#[derive(Debug)]
pub struct PackWriter {
    buf: Vec<u8>,
    entries: Vec<BlobEntry>,
    hashes: HashSet<[u8; 32]>,
}

impl Default for PackWriter {
    fn default() -> Self {
        PackWriter::new()
    }
}

impl PackWriter {
    pub fn new() -> PackWriter {
        let mut buf = Vec::with_capacity(1 << 20);
        buf.extend_from_slice(MAGIC);
        PackWriter {
            buf,
            entries: Vec::new(),
            hashes: HashSet::new(),
        }
    }

    /// Whether the blob `hash` is in this pack already.
    pub fn contains(&self, hash: &[u8; 32]) -> bool {
        self.hashes.contains(hash)
    }

    /// Adds the blob `content`, named `hash` (its blake3, which the caller
    /// has verified). Returns `None` if it is in the pack already.
    pub fn push(&mut self, hash: [u8; 32], content: &[u8]) -> Option<BlobEntry> {
        if !self.hashes.insert(hash) {
            return None;
        }
        let packed = zstd::bulk::compress(content, 1)
            .ok()
            .filter(|p| p.len() + content.len() / 32 < content.len());
        let stored: &[u8] = packed.as_deref().unwrap_or(content);
        let entry = BlobEntry {
            hash,
            offset: self.buf.len() as u64,
            stored_len: stored.len() as u32,
            raw_len: content.len() as u32,
            compressed: packed.is_some(),
        };
        self.buf.extend_from_slice(stored);
        self.entries.push(entry);
        Some(entry)
    }

    /// Bytes of content so far.
    pub fn len(&self) -> usize {
        self.buf.len()
    }

    pub fn is_empty(&self) -> bool {
        self.entries.is_empty()
    }

    /// Whether the pack should be closed.
    pub fn is_full(&self) -> bool {
        self.buf.len() >= PACK_TARGET
    }

    /// The whole pack, its name and its entries.
    pub fn finish(mut self) -> (PackId, Bytes, Vec<BlobEntry>) {
        // postcard of fixed-size fields into a Vec cannot fail.
        let index = postcard::to_allocvec(&self.entries).unwrap_or_default();
        self.buf.extend_from_slice(&index);
        self.buf
            .extend_from_slice(&(index.len() as u32).to_le_bytes());
        self.buf.extend_from_slice(MAGIC_END);
        let id = PackId(*blake3::hash(&self.buf).as_bytes());
        (id, Bytes::from(self.buf), self.entries)
    }
}

/// The index of a pack, read from its end.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PackIndex {
    pub entries: Vec<BlobEntry>,
}

impl PackIndex {
    /// How many bytes at the end of a pack of `pack_len` bytes hold the
    /// index's length and the end magic.
    pub const TAIL: usize = TAIL;

    /// The index's length, from the last [`Self::TAIL`] bytes.
    pub fn index_len(tail: &[u8]) -> Result<usize, PackError> {
        let tail: &[u8; TAIL] = tail.try_into().map_err(|_| PackError::NotAPack {
            detail: "shorter than its tail",
        })?;
        if &tail[4..] != MAGIC_END {
            return Err(PackError::NotAPack {
                detail: "no end marker",
            });
        }
        let len = u32::from_le_bytes([tail[0], tail[1], tail[2], tail[3]]) as usize;
        if len > MAX_INDEX {
            return Err(PackError::NotAPack {
                detail: "index too large",
            });
        }
        Ok(len)
    }

    /// The index of the whole pack `pack`, each entry checked to lie within
    /// the pack's blobs.
    pub fn read(pack: &[u8]) -> Result<PackIndex, PackError> {
        if pack.len() < MAGIC.len() + TAIL || &pack[..MAGIC.len()] != MAGIC {
            return Err(PackError::NotAPack {
                detail: "no start marker",
            });
        }
        let len = Self::index_len(&pack[pack.len() - TAIL..])?;
        let blobs_end = pack
            .len()
            .checked_sub(TAIL + len)
            .filter(|end| *end >= MAGIC.len())
            .ok_or(PackError::NotAPack {
                detail: "index longer than the pack",
            })?;
        let entries: Vec<BlobEntry> =
            postcard::from_bytes(&pack[blobs_end..blobs_end + len]).map_err(PackError::Index)?;
        for e in &entries {
            if e.offset < MAGIC.len() as u64 || e.range().end > blobs_end as u64 {
                return Err(PackError::NotAPack {
                    detail: "an entry lies outside the blobs",
                });
            }
        }
        Ok(PackIndex { entries })
    }
}

/// The content of the blob `entry`, from its stored bytes: decompressed,
/// its length and blake3 hash checked.
pub fn open_blob(entry: &BlobEntry, stored: &[u8]) -> Result<Vec<u8>, PackError> {
    let damaged = |detail: String| PackError::Blob {
        hash: hex(&entry.hash),
        detail,
    };
    if stored.len() != entry.stored_len as usize {
        return Err(damaged(format!(
            "{} bytes stored, {} expected",
            stored.len(),
            entry.stored_len
        )));
    }
    let content = if entry.compressed {
        zstd::bulk::decompress(stored, entry.raw_len as usize)
            .map_err(|e| damaged(format!("does not decompress: {e}")))?
    } else {
        stored.to_vec()
    };
    if content.len() != entry.raw_len as usize {
        return Err(damaged(format!(
            "{} bytes, {} expected",
            content.len(),
            entry.raw_len
        )));
    }
    if blake3::hash(&content).as_bytes() != &entry.hash {
        return Err(damaged("its hash differs".into()));
    }
    Ok(content)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn blob(seed: u8, len: usize, text: bool) -> (Vec<u8>, [u8; 32]) {
        let content: Vec<u8> = if text {
            b"the quick brown fox "
                .iter()
                .cycle()
                .take(len)
                .copied()
                .collect()
        } else {
            let mut x = u64::from(seed).wrapping_mul(0x9E37_79B9_7F4A_7C15) | 1;
            (0..len)
                .map(|_| {
                    x ^= x << 13;
                    x ^= x >> 7;
                    x ^= x << 17;
                    x as u8
                })
                .collect()
        };
        let hash = *blake3::hash(&content).as_bytes();
        (content, hash)
    }

    #[test]
    fn blobs_come_back_whole_from_a_pack_and_its_index() {
        let mut w = PackWriter::new();
        let blobs = [
            blob(1, 5_000, false),
            blob(2, 9_000, true),
            blob(3, 0, false),
        ];
        for (content, hash) in &blobs {
            assert!(w.push(*hash, content).is_some());
        }
        assert!(w.push(blobs[0].1, &blobs[0].0).is_none(), "once per pack");
        assert!(!w.is_full());
        let (id, bytes, entries) = w.finish();
        assert_eq!(id.0, *blake3::hash(&bytes).as_bytes());
        assert!(entries[1].compressed && !entries[0].compressed);
        assert!(entries[1].stored_len < 9_000);

        let index = PackIndex::read(&bytes).unwrap();
        assert_eq!(index.entries, entries);
        let tail = &bytes[bytes.len() - PackIndex::TAIL..];
        assert!(PackIndex::index_len(tail).unwrap() > 0);
        for ((content, _), entry) in blobs.iter().zip(&index.entries) {
            let r = entry.range();
            let got = open_blob(entry, &bytes[r.start as usize..r.end as usize]).unwrap();
            assert_eq!(&got, content);
        }
        assert_eq!(PackId::parse_hex(&id.hex()), Some(id));
        assert_eq!(PackId::parse_hex(&id.hex().to_uppercase()), None);
        assert_eq!(PackId::parse_hex("00"), None);
        let bucket = crate::bucket::memory_bucket();
        let key = id.key(&bucket).to_string();
        assert!(key.starts_with(&format!("backups/office/ferry/packs/{}/", &id.hex()[..2])));
    }

    #[test]
    fn damage_is_named_never_returned_as_content() {
        let mut w = PackWriter::new();
        let (content, hash) = blob(7, 4_096, false);
        w.push(hash, &content);
        let (_, bytes, entries) = w.finish();
        let mut bad = bytes.to_vec();
        let r = entries[0].range();
        bad[r.start as usize + 10] ^= 1;
        let err = open_blob(&entries[0], &bad[r.start as usize..r.end as usize]).unwrap_err();
        assert!(matches!(err, PackError::Blob { .. }), "{err}");
        assert!(open_blob(&entries[0], &bad[r.start as usize..r.end as usize - 1]).is_err());

        assert!(PackIndex::read(b"short").is_err());
        let mut no_end = bytes.to_vec();
        let n = no_end.len();
        no_end[n - 1] = b'X';
        assert!(matches!(
            PackIndex::read(&no_end),
            Err(PackError::NotAPack { .. })
        ));
        let mut huge = bytes.to_vec();
        let at = n - PackIndex::TAIL;
        huge[at..at + 4].copy_from_slice(&u32::MAX.to_le_bytes());
        assert!(PackIndex::read(&huge).is_err());
        let mut long_index = bytes.to_vec();
        long_index[at..at + 4].copy_from_slice(&((n as u32) - 10).to_le_bytes());
        assert!(PackIndex::read(&long_index).is_err());
    }

    #[test]
    fn a_pack_closes_at_its_target() {
        let mut w = PackWriter::new();
        let mut i = 0u32;
        while !w.is_full() {
            let (mut content, _) = blob((i % 250) as u8, 128 << 10, false);
            content.extend_from_slice(&i.to_le_bytes());
            let hash = *blake3::hash(&content).as_bytes();
            w.push(hash, &content);
            i += 1;
        }
        assert!(w.len() >= PACK_TARGET && w.len() < PACK_TARGET + (129 << 10));
    }
}
