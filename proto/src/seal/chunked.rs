//! Chunked objects (format version 2): a large file sealed so that an
//! unchanged chunk seals to the same bytes in every version, and a delta,
//! a rename and a resumed transfer cost only what changed. The format is in
//! the spec (`super`'s doc, "Chunked objects"); this is its sealing half,
//! the derivations both halves use, and the plaintext layouts.

use super::keys::{aead_key, random, FolderPublic};
use super::sealer::{encode_header, RunSealer};
use super::{padme, SealError, SealedHeader, SealedKind, BLOCK, TAG};
use crate::Hash;
use ring::aead::{Aad, Nonce};
use zeroize::Zeroizing;

/// The chunked format's version byte.
pub const CHUNKED_VERSION: u8 = 2;
/// Bytes before the sealed front: version, `E_h`, the front's length.
pub const FRONT_PREFIX: usize = 1 + 32 + 4;
/// The longest chunk a chunked object holds (FastCDC's maximum).
pub const MAX_CHUNK: usize = 128 * 1024;
/// The shortest chunk but the last (FastCDC's minimum): bounds how many
/// pieces a file of a given size seals to.
pub const MIN_CHUNK: usize = 8 * 1024;
/// Bytes of a chunk id kept in a group.
const CID: usize = 16;
/// Bytes of a nonce.
const NONCE: usize = 12;
/// Bytes of one group entry: chunk id and stored piece length.
const GROUP_ENTRY: usize = CID + 4;
/// Bytes of one trailer entry: group id, group piece length, span.
const TRAILER_ENTRY: usize = 32 + 4 + 8;
/// Most chunks in a group.
const MAX_GROUP: usize = 256;
/// Bytes before a trailer's sealed part: `E` and the salt.
const TRAILER_PREFIX: usize = 32 + 16;

const CHUNKER_CONTEXT: &str = "ferry 2026-11 seal v2 chunker";
const CHUNK_ID_CONTEXT: &str = "ferry 2026-11 seal v2 chunk id";
const CHUNK_KEY_CONTEXT: &str = "ferry 2026-11 seal v2 chunk key";
const GROUP_ID_CONTEXT: &str = "ferry 2026-11 seal v2 group id";
const GROUP_KEY_CONTEXT: &str = "ferry 2026-11 seal v2 group key";
const FRONT_SECRET_CONTEXT: &str = "ferry 2026-11 seal v2 front secret";
const FRONT_KEY_CONTEXT: &str = "ferry 2026-11 seal v2 front key";
const TRAILER_KEY_CONTEXT: &str = "ferry 2026-11 seal v2 trailer key";

/// Zeros to pad with (a padded piece adds at most 12%).
static ZEROS: [u8; BLOCK] = [0; BLOCK];

/// The keys a folder's naming secret gives the chunked format.
pub(super) struct NamingKeys {
    ns: Zeroizing<[u8; 32]>,
    chunk_id: Zeroizing<[u8; 32]>,
    group_id: Zeroizing<[u8; 32]>,
}

impl NamingKeys {
    pub(super) fn new(ns: &[u8; 32]) -> NamingKeys {
        NamingKeys {
            ns: Zeroizing::new(*ns),
            chunk_id: Zeroizing::new(blake3::derive_key(CHUNK_ID_CONTEXT, ns)),
            group_id: Zeroizing::new(blake3::derive_key(GROUP_ID_CONTEXT, ns)),
        }
    }

    /// `cid = keyed_hash(chunk id key, chunk)[..16]`.
    pub(super) fn chunk_id(&self, chunk: &[u8]) -> [u8; CID] {
        first(blake3::keyed_hash(&self.chunk_id, chunk).as_bytes())
    }

    /// `gid = keyed_hash(group id key, group)`.
    pub(super) fn group_id(&self, group: &[u8]) -> Hash {
        *blake3::keyed_hash(&self.group_id, group).as_bytes()
    }

    /// `K_c = derive_key(chunk key, ns ‖ cid)`.
    pub(super) fn chunk_key(&self, cid: &[u8; CID]) -> ring::aead::LessSafeKey {
        self.key(CHUNK_KEY_CONTEXT, cid)
    }

    /// `K_g = derive_key(group key, ns ‖ gid[..16])`.
    pub(super) fn group_key(&self, gid: &Hash) -> ring::aead::LessSafeKey {
        self.key(GROUP_KEY_CONTEXT, &first(gid))
    }

    fn key(&self, context: &str, id: &[u8; CID]) -> ring::aead::LessSafeKey {
        let mut material = Zeroizing::new([0u8; 32 + CID]);
        material[..32].copy_from_slice(&self.ns[..]);
        material[32..].copy_from_slice(id);
        aead_key(&Zeroizing::new(blake3::derive_key(context, &material[..])))
    }
}

/// The first 16 bytes of a hash.
fn first(hash: &[u8; 32]) -> [u8; CID] {
    let mut out = [0u8; CID];
    out.copy_from_slice(&hash[..CID]);
    out
}

/// The nonce of a group piece: `gid[16..28]`.
pub(super) fn group_nonce(gid: &Hash) -> Nonce {
    let mut bytes = [0u8; NONCE];
    bytes.copy_from_slice(&gid[CID..CID + NONCE]);
    Nonce::assume_unique_for_key(bytes)
}

/// `K_h = derive_key(front key, shared ‖ E_h ‖ pk)`; also `K_t`'s
/// derivation from `R ‖ salt`.
pub(super) fn front_key(
    shared: &[u8; 32],
    e_h: &[u8; 32],
    pk: &[u8; 32],
) -> ring::aead::LessSafeKey {
    let mut material = Zeroizing::new([0u8; 96]);
    material[..32].copy_from_slice(shared);
    material[32..64].copy_from_slice(e_h);
    material[64..].copy_from_slice(pk);
    aead_key(&Zeroizing::new(blake3::derive_key(
        FRONT_KEY_CONTEXT,
        &material[..],
    )))
}

/// `K_t = derive_key(trailer key, R ‖ salt)`.
pub(super) fn trailer_key(run: &[u8; 32], salt: &[u8; 16]) -> ring::aead::LessSafeKey {
    let mut material = Zeroizing::new([0u8; 48]);
    material[..32].copy_from_slice(run);
    material[32..].copy_from_slice(salt);
    aead_key(&Zeroizing::new(blake3::derive_key(
        TRAILER_KEY_CONTEXT,
        &material[..],
    )))
}

/// The all-zero nonce (front and trailer: one message per key).
pub(super) fn zero_nonce() -> Nonce {
    Nonce::assume_unique_for_key([0; NONCE])
}

/// Whether a group ends after a chunk with this id: about one chunk in 64
/// (content-defined, so an insertion changes only the groups around it),
/// or a full group.
pub(super) fn ends_group(cid: &[u8; CID], len: usize) -> bool {
    cid[CID - 1] & 63 == 0 || len >= MAX_GROUP
}

impl FolderPublic {
    /// The seed of the folder's content-defined chunker
    /// (`derive_key(chunker, ns)`'s first 8 bytes, little-endian): chunk
    /// boundaries depend on the folder's key, so stored piece sizes do not
    /// fingerprint a known file to the receiver.
    pub fn chunker_seed(&self) -> u64 {
        let key = Zeroizing::new(blake3::derive_key(CHUNKER_CONTEXT, self.ns()));
        let mut seed = [0u8; 8];
        seed.copy_from_slice(&key[..8]);
        u64::from_le_bytes(seed)
    }
}

/// One piece of a chunked object: one `Data` message on the wire, one
/// chunk in the receiver's chunk list.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Piece {
    /// The piece's bytes.
    pub bytes: Vec<u8>,
    /// Equal for two pieces only if their bytes are equal, without hashing
    /// the bytes: what a sender compares with the pieces of the previous
    /// object to copy them.
    pub id: Hash,
    /// Content bytes the piece holds (0 for the front, a group, the trailer).
    pub content: u64,
}

/// Seals one chunked object, chunk by chunk.
pub struct ChunkedSealer {
    keys: NamingKeys,
    run_e: [u8; 32],
    run: Zeroizing<[u8; 32]>,
    /// blake3 of the object's front (version to the end of the front).
    front_hash: Hash,
    /// The front, until taken.
    front: Option<Vec<u8>>,
    /// The open group's entries.
    group: Vec<u8>,
    group_len: usize,
    /// Stored bytes of the open group's pieces.
    span: u64,
    /// The trailer's entries.
    groups: Vec<u8>,
    group_count: u32,
    size: u64,
    pushed: u64,
}

impl std::fmt::Debug for ChunkedSealer {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ChunkedSealer")
            .field("size", &self.size)
            .field("pushed", &self.pushed)
            .finish_non_exhaustive()
    }
}

/// Appends `4 + |header|`'s plaintext, padded, to `out` from `start`.
fn pad_to(out: &mut Vec<u8>, start: usize, len: usize) {
    let padded = padme(len as u64) as usize;
    let mut missing = start + padded - out.len();
    while missing > 0 {
        let n = missing.min(ZEROS.len());
        out.extend_from_slice(&ZEROS[..n]);
        missing -= n;
    }
}

/// Seals `out[start..]` in place and appends the tag.
fn seal_tail(
    key: &ring::aead::LessSafeKey,
    nonce: Nonce,
    aad: &[u8],
    out: &mut Vec<u8>,
    start: usize,
) {
    match key.seal_in_place_separate_tag(nonce, Aad::from(aad), &mut out[start..]) {
        Ok(tag) => out.extend_from_slice(tag.as_ref()),
        // ring refuses only more than 2^36 bytes at once; a piece, a group,
        // a front or a trailer is far less.
        Err(_) => unreachable!("AES-GCM seals a piece"),
    }
}

impl ChunkedSealer {
    /// Starts a chunked object of the file `header` (a file, its size as
    /// opened) under the folder `public`, in the run `run` (the trailer's
    /// key).
    pub fn new(
        public: &FolderPublic,
        run: &RunSealer,
        header: &SealedHeader,
    ) -> Result<ChunkedSealer, SealError> {
        if header.kind != SealedKind::File {
            return Err(SealError::ContentOfNonFile { size: header.size });
        }
        let (plain_header, _) = encode_header(header)?;
        // e_h = derive_key(front secret, ns ‖ header_len ‖ header): the same
        // file as opened seals to the same front, so a resumed transfer's
        // kept prefix matches; only a holder of `ns` who guesses the whole
        // header can recompute it.
        let mut material = Zeroizing::new(Vec::with_capacity(32 + plain_header.len()));
        material.extend_from_slice(public.ns());
        material.extend_from_slice(&plain_header);
        let e_h = Zeroizing::new(blake3::derive_key(FRONT_SECRET_CONTEXT, &material));
        let (e_public, shared) = public.agree(*e_h).ok_or(SealError::WeakPublicKey)?;
        let key = front_key(&shared, &e_public, public.pk().as_bytes());
        let padded = padme(plain_header.len() as u64) as usize;
        let front_len = u32::try_from(padded + TAG).map_err(|_| SealError::HeaderTooLong {
            len: plain_header.len(),
        })?;
        let mut front = Vec::with_capacity(FRONT_PREFIX + padded + TAG);
        front.push(CHUNKED_VERSION);
        front.extend_from_slice(&e_public);
        front.extend_from_slice(&front_len.to_le_bytes());
        let aad: [u8; FRONT_PREFIX] = match front[..].try_into() {
            Ok(aad) => aad,
            Err(_) => unreachable!("the front prefix is FRONT_PREFIX bytes"),
        };
        front.extend_from_slice(&plain_header);
        pad_to(&mut front, FRONT_PREFIX, plain_header.len());
        seal_tail(&key, zero_nonce(), &aad, &mut front, FRONT_PREFIX);
        Ok(ChunkedSealer {
            keys: NamingKeys::new(public.ns()),
            run_e: *run.ephemeral(),
            run: Zeroizing::new(*run.run_key()),
            front_hash: *blake3::hash(&front).as_bytes(),
            front: Some(front),
            group: Vec::new(),
            group_len: 0,
            span: 0,
            groups: Vec::new(),
            group_count: 0,
            size: header.size,
            pushed: 0,
        })
    }

    /// An upper bound of the length of the chunked object of `header`,
    /// known before the file is read (the exact length depends on where
    /// the chunks are cut and how they compress): what the sender announces
    /// as `size` of [`crate::Content::ChunkedUpTo`]. Every chunk but the
    /// last is at least [`MIN_CHUNK`] long.
    pub fn max_len(header: &SealedHeader) -> Result<u64, SealError> {
        let (plain_header, _) = encode_header(header)?;
        let front = (FRONT_PREFIX + TAG) as u64 + padme(plain_header.len() as u64);
        let size = header.size;
        let chunks = size / MIN_CHUNK as u64 + 1;
        // A piece: nonce, flag and length, padding (at most an eighth of
        // the chunk and its 5 bytes), tag. A group entry (20 bytes) and a
        // trailer entry (44) per chunk at most, an eighth more for padding,
        // and a group's tag. The trailer's prefix, hash, count, tag, length.
        let per_chunk = (NONCE + 5 + TAG) as u64
            + 1
            + (GROUP_ENTRY + 4 + TRAILER_ENTRY) as u64 * 9 / 8
            + 1
            + TAG as u64;
        let trailer = (TRAILER_PREFIX + 32 + 4 + TAG + 4) as u64 * 2;
        size.checked_add(size / 8)
            .and_then(|n| n.checked_add(chunks.checked_mul(per_chunk)?))
            .and_then(|n| n.checked_add(front + trailer))
            .ok_or(SealError::TooLarge { size })
    }

    /// The object's first piece: its front (the sealed header). `None` once
    /// taken.
    pub fn take_front(&mut self) -> Option<Piece> {
        let bytes = self.front.take()?;
        Some(Piece {
            id: self.front_hash,
            bytes,
            content: 0,
        })
    }

    /// Seals the next chunk of content (at most [`MAX_CHUNK`] bytes, never
    /// empty) into `out`, and the group it closes if any. `packed` is the
    /// chunk zstd-compressed, if the caller chose to compress it: the opener
    /// decompresses it and checks it against the chunk's id.
    pub fn push(
        &mut self,
        chunk: &[u8],
        packed: Option<&[u8]>,
        out: &mut Vec<Piece>,
    ) -> Result<(), SealError> {
        if chunk.is_empty() || chunk.len() > MAX_CHUNK {
            return Err(SealError::ChunkLength { len: chunk.len() });
        }
        let got = self.pushed.saturating_add(chunk.len() as u64);
        if got > self.size {
            return Err(SealError::SizeMismatch {
                expected: self.size,
                got,
            });
        }
        self.pushed = got;
        let cid = self.keys.chunk_id(chunk);
        let (flag, data) = match packed {
            Some(packed) => (1u8, packed),
            None => (0u8, chunk),
        };
        // Raw: the nonce is zero (the key is the chunk's own, the plaintext
        // a function of it); compressed: the first 12 bytes of the packed
        // bytes' hash, with the top bit set (never zero), so two encodings
        // of one chunk never share a nonce.
        let mut nonce = [0u8; NONCE];
        if flag == 1 {
            nonce.copy_from_slice(&blake3::hash(data).as_bytes()[..NONCE]);
            nonce[0] |= 0x80;
        }
        let plain_len = 5 + data.len();
        let mut bytes = Vec::with_capacity(NONCE + padme(plain_len as u64) as usize + TAG);
        bytes.extend_from_slice(&nonce);
        bytes.push(flag);
        // data.len() ≤ the 256 KiB a piece may be: it fits a u32.
        bytes.extend_from_slice(&(data.len() as u32).to_le_bytes());
        bytes.extend_from_slice(data);
        pad_to(&mut bytes, NONCE, plain_len);
        let key = self.keys.chunk_key(&cid);
        seal_tail(
            &key,
            Nonce::assume_unique_for_key(nonce),
            &[CHUNKED_VERSION],
            &mut bytes,
            NONCE,
        );
        let stored = bytes.len() as u32;
        let mut id = blake3::Hasher::new();
        id.update(b"data");
        id.update(&cid);
        id.update(&nonce);
        id.update(&stored.to_le_bytes());
        self.group.extend_from_slice(&cid);
        self.group.extend_from_slice(&stored.to_le_bytes());
        self.group_len += 1;
        self.span += u64::from(stored);
        out.push(Piece {
            bytes,
            id: *id.finalize().as_bytes(),
            content: chunk.len() as u64,
        });
        if ends_group(&cid, self.group_len) {
            out.push(self.close_group());
        }
        Ok(())
    }

    /// Seals the open group as a piece and records it for the trailer.
    fn close_group(&mut self) -> Piece {
        let mut plain = Vec::with_capacity(4 + self.group.len());
        // At most MAX_GROUP entries.
        plain.extend_from_slice(&(self.group_len as u32).to_le_bytes());
        plain.extend_from_slice(&self.group);
        let gid = self.keys.group_id(&plain);
        let len = plain.len();
        pad_to(&mut plain, 0, len);
        seal_tail(
            &self.keys.group_key(&gid),
            group_nonce(&gid),
            &[CHUNKED_VERSION],
            &mut plain,
            0,
        );
        let stored = plain.len() as u32;
        self.groups.extend_from_slice(&gid);
        self.groups.extend_from_slice(&stored.to_le_bytes());
        self.groups.extend_from_slice(&self.span.to_le_bytes());
        self.group_count += 1;
        self.group.clear();
        self.group_len = 0;
        self.span = 0;
        let mut id = blake3::Hasher::new();
        id.update(b"group");
        id.update(&gid);
        Piece {
            bytes: plain,
            id: *id.finalize().as_bytes(),
            content: 0,
        }
    }

    /// After exactly `size` bytes of content: the last group and the trailer
    /// (with a fresh random salt), into `out`.
    pub fn finish(self, out: &mut Vec<Piece>) -> Result<(), SealError> {
        let mut salt = [0u8; 16];
        random(&mut salt).map_err(SealError::Randomness)?;
        self.finish_with_salt(salt, out)
    }

    /// [`ChunkedSealer::finish`] with a given salt: for known-answer tests
    /// only (a salt must never be reused under one run key).
    #[doc(hidden)]
    pub fn finish_with_salt(
        mut self,
        salt: [u8; 16],
        out: &mut Vec<Piece>,
    ) -> Result<(), SealError> {
        if self.pushed != self.size {
            return Err(SealError::SizeMismatch {
                expected: self.size,
                got: self.pushed,
            });
        }
        if self.group_len > 0 {
            let group = self.close_group();
            out.push(group);
        }
        let mut bytes = Vec::with_capacity(TRAILER_PREFIX + 64 + self.groups.len() + TAG + 4);
        bytes.extend_from_slice(&self.run_e);
        bytes.extend_from_slice(&salt);
        let aad: Vec<u8> = [&[CHUNKED_VERSION][..], &bytes[..]].concat();
        bytes.extend_from_slice(&self.front_hash);
        bytes.extend_from_slice(&self.group_count.to_le_bytes());
        bytes.extend_from_slice(&self.groups);
        let plain_len = bytes.len() - TRAILER_PREFIX;
        pad_to(&mut bytes, TRAILER_PREFIX, plain_len);
        seal_tail(
            &trailer_key(&self.run, &salt),
            zero_nonce(),
            &aad,
            &mut bytes,
            TRAILER_PREFIX,
        );
        let len =
            u32::try_from(bytes.len()).map_err(|_| SealError::TooLarge { size: self.size })?;
        bytes.extend_from_slice(&len.to_le_bytes());
        out.push(Piece {
            id: *blake3::hash(&bytes).as_bytes(),
            bytes,
            content: 0,
        });
        Ok(())
    }
}

/// Bytes of a group entry and a trailer entry, for the opener.
pub(super) const ENTRY_LENS: (usize, usize) = (GROUP_ENTRY, TRAILER_ENTRY);
/// Bytes before a trailer's sealed part, a chunk id, a nonce.
pub(super) const LENS: (usize, usize, usize) = (TRAILER_PREFIX, CID, NONCE);
