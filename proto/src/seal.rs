//! # Sealed folders: what the receiver stores of an `encrypted` or `write-only` folder
//!
//! A folder sent with protection [`crate::Protection::Encrypted`] or
//! [`crate::Protection::WriteOnly`] reaches the receiver only as **sealed
//! objects**: one object per file, directory or symlink of the source, at an
//! **opaque path**, as a regular file of mode `0600` and mtime 0. The receiver
//! stores, versions, retains, verifies and serves objects as it does plain
//! files; it never holds a key that opens them.
//!
//! Primitives: X25519 (`x25519-dalek`), AES-256-GCM (`ring`), blake3 (keyed
//! hashing and key derivation), the operating system's randomness (`ring`).
//! Nothing here is hand-written cryptography: this module only composes them.
//!
//! ## Keys
//!
//! A **folder key** ([`FolderSecret`], 64 bytes) is an X25519 static secret
//! `sk` and a 32-byte **naming secret** `ns`, both drawn from the operating
//! system's randomness. Its **public half** ([`FolderPublic`]) is
//! `pk = X25519(sk, 9)` and the same `ns`. A sender needs only the public
//! half to send; opening an object needs `sk`. An `encrypted` folder's sender
//! holds the whole key (it may restore), a `write-only` folder's sender holds
//! only the public half: it cannot open what it sent, not even its own
//! history. Neither half is ever given to the receiver. Secrets in memory are
//! zeroed when dropped.
//!
//! The **key id** ([`FolderPublic::key_id`]) is
//! `blake3::derive_key("ferry 2026-11 seal v1 key id", pk ‖ ns)`: the receiver
//! pins it per folder, so a folder cannot be continued under another key.
//!
//! ## Opaque paths
//!
//! `id = blake3::keyed_hash(nk, path bytes)` with
//! `nk = blake3::derive_key("ferry 2026-11 seal v1 names", ns)`; the opaque
//! path is the first 16 bytes of `id` in lowercase hex, as `hh/hhhh…` (two
//! hex digits, a slash, the other 30): 256 directories. The same path always
//! gets the same opaque path (so a new version replaces the old one and the
//! receiver keeps the old as a version), and the receiver cannot tell a name,
//! a depth or which objects share a directory.
//!
//! ## Run keys
//!
//! Each run draws a fresh X25519 ephemeral secret `e`, computes
//! `E = X25519(e, 9)` and
//! `R = blake3::derive_key("ferry 2026-11 seal v1 run key", X25519(e, pk) ‖ E ‖ pk)`,
//! and forgets `e` at once ([`RunSealer`]
//! keeps only `E` and `R`). The opener derives the same `R` from
//! `X25519(sk, E)`. One Diffie–Hellman per run on the sender, one per
//! distinct `E` when opening ([`Opener`] remembers them). A shared secret
//! that is not contributory (a low-order `pk` or `E`, whose result is known
//! to anyone) is refused on both sides: [`SealError::WeakPublicKey`] when
//! sealing, [`OpenError::Authentication`] when opening.
//!
//! ## An object
//!
//! ```text
//! object = version (1 byte, = 1) ‖ E (32) ‖ salt (16, random per object) ‖ block_0 ‖ … ‖ block_{m−1}
//! K      = blake3::derive_key("ferry 2026-11 seal v1 object key", R ‖ salt)
//! block_i = AES-256-GCM(K, nonce_i, aad = version ‖ E ‖ salt, plain_i)      (|plain_i| + 16 bytes)
//! nonce_i = i (u32 big-endian) ‖ last (1 byte: 1 for the final block, else 0) ‖ 7 zero bytes
//! plain   = header_len (u32 LE) ‖ header ‖ content ‖ zeros, cut into BLOCK-byte pieces (the last may be shorter, never empty)
//! header  = postcard(SealedHeader { path, kind, mode, mtime_ns, size })
//! |plain| = padme(4 + |header| + size)
//! ```
//!
//! X25519 is RFC 7748's (secrets clamped when used, stored as drawn),
//! AES-256-GCM has a 96-bit nonce and a 128-bit tag appended to each block,
//! and `derive_key`/`keyed_hash` are blake3's modes with the context strings
//! above. The header's postcard encoding is: `path` as a varint length and
//! its bytes; `kind` as a varint variant index (0 `File`, 1 `Dir`, 2
//! `Symlink`, followed by the target as a varint length and its bytes);
//! `mode` and `size` as varints; `mtime_ns` as a zigzag varint.
//!
//! A small file whose content compresses is stored **packed**: its header's
//! kind is 3 `Packed`, followed by the file's size as a varint, and `size`
//! is the length of the content as stored, the file zstd-compressed
//! ([`RunSealer::packed_object`]). Openers hand out the file's content
//! decompressed (at the end, once the object authenticated), and the header
//! as the file's (`File`, its own size); a packed size over 16 MiB, content
//! that does not decompress or decompresses to another size fail the object.
//!
//! A fresh key per object makes the counter nonces unique; the `last` flag
//! and the index in the nonce make truncation, reordering and splicing fail
//! authentication, and the prefix as associated data binds every block to
//! its object. Padding with [`padme`] leaves at most O(log log size) bits of
//! the exact size visible (at most 12% overhead). The header must fit in
//! block 0 (`4 + |header| ≤ BLOCK`, [`SealError::HeaderTooLong`]); an object
//! has at most 2³² blocks (256 TiB, [`SealError::TooLarge`]). A directory's
//! or symlink's `size` is 0. After the content, every byte of `plain` must
//! be zero. The size of an object is known from its header alone
//! ([`RunSealer::object_len`]):
//! `PREFIX + |plain| + TAG · ⌈|plain| / BLOCK⌉`.
//!
//! ## Opening
//!
//! The opener reads the prefix, derives `K`, and opens the blocks in order.
//! Block 0 tells the header's `size`, hence `|plain|` and `m`; until it is
//! open, a block 0 of full length is taken as the last only if nothing
//! follows it. Any failure of authentication, a plaintext that breaks the
//! rules above (a header that does not decode, a length that disagrees with
//! `m`, non-zero padding), bytes after the last block or an object that ends
//! early, fails the whole object. Content is handed out block by block as
//! each block authenticates; it is the object's only when
//! [`ObjectOpener::finish`] succeeds (write it to a staging file, keep it
//! only then).
//!
//! An object that opens was sealed by someone holding the public half, for
//! *some* path of this folder. The public half is public only in the sense
//! of asymmetric encryption: it holds the naming secret and lets its holder
//! add objects that open, so it is given to the folder's senders and never
//! to the receiver or anyone else. The receiver could still serve an object at
//! another opaque path than its own, or an older version than asked for: a
//! reader checks that `opaque_path(header.path)` is where the object was
//! stored ([`Opener::public`]), and relies on the catalog for which version
//! it asked.
//!
//! ## Chunked objects (format version 2)
//!
//! A file larger than a bundle travels as a **chunked object**, so that a
//! change, a rename or an interrupted transfer costs what changed and not
//! the whole file. The sender cuts the content with FastCDC (8/32/128 KiB),
//! its gear table seeded with [`FolderPublic::chunker_seed`]
//! (`derive_key("ferry 2026-11 seal v2 chunker", ns)`'s first 8 bytes,
//! little-endian), and seals every chunk **deterministically** under a key
//! derived from the naming secret and the chunk itself: the same chunk
//! always seals to the same bytes, so the sender can name an unchanged
//! chunk's piece as a `Copy` of the previous object's, and a resumed
//! transfer's kept prefix is the same bytes.
//!
//! ```text
//! object  = 2 ‖ E_h (32) ‖ front_len (u32 LE) ‖ front ‖ body ‖ trailer ‖ trailer_len (u32 LE)
//! front   = AES-256-GCM(K_h, 0, aad = 2 ‖ E_h ‖ front_len, pad(header_len (u32 LE) ‖ header))
//! e_h     = derive_key("… v2 front secret", ns ‖ header_len ‖ header);  E_h = X25519(e_h, 9)
//! K_h     = derive_key("… v2 front key", X25519(e_h, pk) ‖ E_h ‖ pk)
//! body    = for each group: piece(c) for each chunk c of the group ‖ group piece
//! cid     = keyed_hash(derive_key("… v2 chunk id", ns), c)[..16]
//! K_c     = derive_key("… v2 chunk key", ns ‖ cid)
//! piece   = nonce (12) ‖ AES-256-GCM(K_c, nonce, aad = 2, pad(flag ‖ data_len (u32 LE) ‖ data))
//!           flag 0: data = c, nonce = 0;  flag 1: data = zstd(c), nonce = blake3(data)[..12] | 0x80 (first byte)
//! group   = count (u32 LE) ‖ (cid ‖ piece_len (u32 LE))*          (a group ends after a chunk
//!           whose cid[15] & 63 = 0, or at 256 chunks)
//! gid     = keyed_hash(derive_key("… v2 group id", ns), group)
//! K_g     = derive_key("… v2 group key", ns ‖ gid[..16])
//! group piece = AES-256-GCM(K_g, gid[16..28], aad = 2, pad(group))
//! trailer = E ‖ salt (16) ‖ AES-256-GCM(K_t, 0, aad = 2 ‖ E ‖ salt,
//!           pad(blake3(2 ‖ E_h ‖ front_len ‖ front) ‖ count (u32 LE) ‖ (gid ‖ group_piece_len (u32 LE) ‖ span (u64 LE))*))
//! K_t     = derive_key("… v2 trailer key", R ‖ salt)       (R: the run key, as for whole objects)
//! pad(x)  = x ‖ zeros to padme(|x|)
//! ```
//!
//! Precisely (each item checked by an independent implementation that
//! reproduced the known answers from this text):
//!
//! - A folder key is stored as `sk ‖ ns` (64 bytes), its public half as
//!   `pk ‖ ns`. `…` in a context string is `ferry 2026-11 seal`, joined by one
//!   space (`"ferry 2026-11 seal v2 chunk key"`). A bare `2` is the byte
//!   0x02; a nonce written `0` is 12 zero bytes.
//! - `header` and `header_len` (u32 LE) are as in a whole object (postcard:
//!   `path` as its bytes, `mode` u32, `mtime_ns` i64 zigzag, `size` u64,
//!   varints LEB128, low bits first); only a `File` is chunked, and
//!   `4 + |header| ≤ BLOCK`. `e_h` hashes `ns ‖ header_len ‖ header`,
//!   unpadded.
//! - `front_len = padme(4 + |header|) + 16` (u32 LE, the tag included),
//!   known before the front is sealed; [`FRONT_PREFIX`] = 37 bytes come
//!   before the front. The trailer's front hash is the blake3 of the
//!   object's first `FRONT_PREFIX + front_len` bytes.
//! - A chunk is 1 to [`MAX_CHUNK`] bytes, at least [`MIN_CHUNK`] but the
//!   last. `piece_len = 12 + padme(5 + |data|) + 16`, the whole stored
//!   piece. A group piece stores no nonce (it comes from `gid`):
//!   `group_piece_len = padme(4 + 20·count) + 16`. `span` is the sum of the
//!   `piece_len`s of the group's chunks, which come right before its group
//!   piece.
//! - A group closes after a chunk whose `cid[15] & 63 = 0`, at 256 chunks,
//!   and after the last chunk; no group is empty (an empty file has none,
//!   and its trailer `count = 0`).
//! - `E` in the trailer is the run's `X25519(e, 9)` (not `E_h`);
//!   `trailer_len = 48 + padme(36 + 44·count) + 16` does not count itself.
//! - The chunker is FastCDC 2020 (the `fastcdc` crate 3.x, `v2020`), 8/32/128
//!   KiB, normalization level 1, with `get_gear_with_seed(seed)`'s tables
//!   (each of FastCDC's gear values XORed with the seed, the shifted table
//!   with the seed shifted left by one). Compression is zstd at level 3,
//!   kept only when at least 3% smaller (and, with `--compress auto`, tried
//!   only when a sample compresses). Neither matters for opening; both make
//!   "the same chunk seals to the same bytes" hold across senders.
//!
//! Each key seals one plaintext only: a chunk's key and nonce fix its piece (raw), or the
//! packed bytes fix the nonce (compressed); a group's id is the hash of its
//! plaintext; the front's ephemeral secret is a function of its header; the
//! trailer's salt is fresh. The trailer binds the front by its hash; each
//! group is checked against its id and each chunk against its id, so a
//! piece of another object, of another place in this one, a dropped, added,
//! reordered or truncated piece, and a wrong key all fail the object.
//!
//! What the sender keeps secret: without `sk`, the front opens only to one
//! who holds `ns` and guesses the whole header (path, mode, mtime to the
//! nanosecond, size) — it then learns nothing new; the trailer needs `R`
//! (forgotten with the run's ephemeral secret), the groups their ids (in
//! the trailer), a chunk its id (in its group). So a `write-only` sender,
//! which holds `ns`, can open nothing it sent, except a chunk whose content
//! it already knows: it can confirm that a guessed chunk is stored, as it
//! can confirm a guessed path. The receiver, without `ns`, cannot confirm
//! either. It sees each piece's padded length and which pieces a new object
//! shares with an older one (what a delta copies): approximate chunk sizes,
//! with boundaries it cannot predict (keyed chunker).
//!
//! Opening reads the front (the header is known from the first
//! `FRONT_PREFIX + front_len` bytes alone: [`Opener::chunked_header`]),
//! then the trailer from the end, then each group and its pieces
//! ([`Opener::open_source`], from a file or memory). Content is handed out
//! chunk by chunk as each checks; the object's only once `open_source`
//! returns its header. The first byte tells the formats apart
//! ([`is_chunked`]).
//!
//! ## What the receiver still sees
//!
//! How many entries a folder has, each object's padded size, which objects a
//! run replaced or deleted, when runs happen, and which sender sent them;
//! for chunked objects, the padded size of each piece and which pieces
//! versions share.
//!
//! ## Layout
//!
//! - `keys`: [`FolderSecret`], [`FolderPublic`], the key id, opaque paths and
//!   the run and object key derivations.
//! - `sealer`: [`RunSealer`] and [`ObjectSealer`], sealing as content is
//!   pushed.
//! - `opener`: [`Opener`] and [`ObjectOpener`], opening as sealed bytes are
//!   pushed.
//! - `chunked`: [`ChunkedSealer`] and the derivations of chunked objects.
//! - `chunked_open`: [`Opener::open_source`] for either format from an
//!   [`ObjectSource`], [`Opener::chunked_header`].
//! - `tests`, `chunked_tests`: round trips, tampering, and the known-answer tests that pin
//!   the format.

mod chunked;
mod chunked_open;
#[cfg(test)]
mod chunked_tests;
mod keys;
mod opener;
mod sealer;
#[cfg(test)]
mod tests;

pub use chunked::{ChunkedSealer, Piece, CHUNKED_VERSION, FRONT_PREFIX, MAX_CHUNK, MIN_CHUNK};
pub use chunked_open::{is_chunked, ObjectSource, ReadObjectError};
pub use keys::{FolderPublic, FolderSecret};
pub use opener::{ObjectOpener, Opener};
pub use sealer::{ObjectSealer, RunSealer};

use crate::RelPath;
use serde::{Deserialize, Serialize};

/// Plaintext bytes per block (the last block of an object may be shorter).
pub const BLOCK: usize = 64 * 1024;
/// Bytes an AES-256-GCM tag adds to each block.
pub const TAG: usize = 16;
/// Bytes before the first block: version, `E`, salt.
pub const PREFIX: usize = 1 + 32 + 16;
/// The object format's version byte.
pub const VERSION: u8 = 1;
/// Most blocks an object may have (block indexes are 32-bit).
const MAX_BLOCKS: u64 = 1 << 32;

/// The operating system gave no randomness.
#[derive(Debug, thiserror::Error)]
#[error("the operating system's random number generator failed (is /dev/urandom available?)")]
pub struct RandomnessError;

/// Why an object could not be sealed.
#[derive(Debug, thiserror::Error)]
pub enum SealError {
    /// The header (path and symlink target) does not fit in the first block.
    #[error("the entry's name and link target are too long to seal ({len} bytes)")]
    HeaderTooLong { len: usize },
    /// More or fewer content bytes than the header's size were given.
    #[error("the content was {got} bytes, not the {expected} announced")]
    SizeMismatch { expected: u64, got: u64 },
    /// The content is larger than an object can hold.
    #[error("the file is too large to seal ({size} bytes; at most 256 TiB)")]
    TooLarge { size: u64 },
    /// A directory or symlink announced content.
    #[error("a directory or symlink cannot have content ({size} bytes announced)")]
    ContentOfNonFile { size: u64 },
    /// A chunk of a chunked object that is empty or longer than
    /// [`MAX_CHUNK`].
    #[error("a chunk of {len} bytes cannot be sealed (1 to 131072 bytes)")]
    ChunkLength { len: usize },
    /// No salt or ephemeral secret could be drawn.
    #[error("could not draw the random values sealing needs")]
    Randomness(#[source] RandomnessError),
    /// The folder's public key is a low-order point: anything sealed to it
    /// could be opened by anyone.
    #[error(
        "the folder's public key is not a usable X25519 key; make a new key with `ferry key new`"
    )]
    WeakPublicKey,
}

/// Why an object could not be opened.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum OpenError {
    /// Not an object of a version this code knows.
    #[error("not a sealed object (format version {0})")]
    Version(u8),
    /// Shorter than its prefix or than its blocks say.
    #[error("the sealed object is truncated")]
    Truncated,
    /// A block failed authentication: tampered with, truncated, or sealed to
    /// another key.
    #[error("the sealed object does not open with this key (tampered with, or another folder's)")]
    Authentication,
    /// The authenticated plaintext is not a well-formed object (header,
    /// size or padding), or bytes follow its last block.
    #[error("the sealed object is malformed: {0}")]
    Malformed(&'static str),
}

/// What kind of source entry an object holds.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub enum SealedKind {
    File,
    Dir,
    Symlink {
        #[serde(with = "serde_bytes")]
        target: Vec<u8>,
    },
}

/// The metadata sealed at the start of an object.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct SealedHeader {
    /// The entry's real path in the folder.
    pub path: RelPath,
    pub kind: SealedKind,
    /// Permission bits.
    pub mode: u32,
    /// Modification time, ns since the Unix epoch.
    pub mtime_ns: i64,
    /// Content bytes that follow the header (0 for a directory or symlink).
    pub size: u64,
}

/// How a header is stored in a whole object: as [`SealedHeader`], or, for a
/// file whose content is stored zstd-compressed, with the kind `Packed`
/// (the file's own size) and `size` the compressed length. The first three
/// kinds encode exactly as [`SealedKind`]'s, so an unpacked header is the
/// same bytes either way. Readers only ever see the logical header.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub(crate) enum StoredKind {
    File,
    Dir,
    Symlink {
        #[serde(with = "serde_bytes")]
        target: Vec<u8>,
    },
    /// A file stored compressed: `size` bytes once decompressed.
    Packed {
        size: u64,
    },
}

/// A [`SealedHeader`] as stored (see [`StoredKind`]).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub(crate) struct StoredHeader {
    pub path: RelPath,
    pub kind: StoredKind,
    pub mode: u32,
    pub mtime_ns: i64,
    pub size: u64,
}

/// The most a packed file may hold once decompressed (whole objects are
/// packed only for small files; a larger claim is malformed).
pub(crate) const MAX_PACKED: u64 = 16 << 20;

impl StoredHeader {
    /// `header` stored as it is.
    pub(crate) fn of(header: &SealedHeader) -> StoredHeader {
        let kind = match &header.kind {
            SealedKind::File => StoredKind::File,
            SealedKind::Dir => StoredKind::Dir,
            SealedKind::Symlink { target } => StoredKind::Symlink {
                target: target.clone(),
            },
        };
        StoredHeader {
            path: header.path.clone(),
            kind,
            mode: header.mode,
            mtime_ns: header.mtime_ns,
            size: header.size,
        }
    }

    /// The file `header` stored as `packed_len` compressed bytes.
    pub(crate) fn packed(header: &SealedHeader, packed_len: u64) -> StoredHeader {
        StoredHeader {
            kind: StoredKind::Packed { size: header.size },
            size: packed_len,
            ..StoredHeader::of(header)
        }
    }

    /// The header readers see, and the file's size if its content is
    /// stored compressed.
    pub(crate) fn logical(self) -> (SealedHeader, Option<u64>) {
        let (kind, size, packed) = match self.kind {
            StoredKind::File => (SealedKind::File, self.size, None),
            StoredKind::Dir => (SealedKind::Dir, self.size, None),
            StoredKind::Symlink { target } => (SealedKind::Symlink { target }, self.size, None),
            StoredKind::Packed { size } => (SealedKind::File, size, Some(size)),
        };
        let header = SealedHeader {
            path: self.path,
            kind,
            mode: self.mode,
            mtime_ns: self.mtime_ns,
            size,
        };
        (header, packed)
    }
}

/// The Padmé length `len` is padded to (Nikitin et al., "Reducing Metadata
/// Leakage from Encrypted Files and Communication with PURBs", 2019): the
/// low `⌊log₂ L⌋ − ⌊log₂ ⌊log₂ L⌋⌋ − 1` bits of `L` are rounded up to zero.
/// At most 12% more than `len`; `padme(len) ≥ len` (saturating at
/// `u64::MAX`, far past any object).
pub fn padme(len: u64) -> u64 {
    if len < 2 {
        return len;
    }
    let e = u64::from(len.ilog2());
    let s = u64::from(e.ilog2()) + 1;
    let mask = (1u64 << (e - s)) - 1;
    len.checked_add(mask).map_or(u64::MAX, |l| l & !mask)
}

/// The plaintext layout of an object: `|plain|` and the number of blocks.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
struct Layout {
    /// `4 + |header|`: where the content starts in `plain`.
    content_start: u64,
    /// Where the content ends and the padding starts.
    content_end: u64,
    /// `|plain|`.
    plain_len: u64,
    /// `m`.
    blocks: u64,
}

impl Layout {
    /// The layout of an object whose header is `header_len` bytes long and
    /// whose content is `size` bytes; `None` if it would exceed
    /// [`MAX_BLOCKS`].
    fn new(header_len: usize, size: u64) -> Option<Layout> {
        let content_start = 4 + header_len as u64;
        let content_end = content_start.checked_add(size)?;
        let plain_len = padme(content_end);
        let blocks = plain_len.div_ceil(BLOCK as u64);
        (blocks <= MAX_BLOCKS).then_some(Layout {
            content_start,
            content_end,
            plain_len,
            blocks,
        })
    }

    /// Plaintext bytes of block `index` (0 past the last block).
    fn block_len(&self, index: u64) -> usize {
        let start = index.saturating_mul(BLOCK as u64);
        // At most BLOCK, so the conversion is exact.
        self.plain_len.saturating_sub(start).min(BLOCK as u64) as usize
    }

    /// Bytes of the whole sealed object.
    fn object_len(&self) -> u64 {
        PREFIX as u64 + self.plain_len + self.blocks * TAG as u64
    }
}

/// The AES-GCM nonce of block `index`.
fn nonce(index: u64, last: bool) -> ring::aead::Nonce {
    let mut bytes = [0u8; 12];
    // index < MAX_BLOCKS = 2^32: the layout checks it before any block.
    bytes[..4].copy_from_slice(&(index as u32).to_be_bytes());
    bytes[4] = u8::from(last);
    ring::aead::Nonce::assume_unique_for_key(bytes)
}
