//! # Sealed folders: what the receiver stores of an `encrypted` or `write-only` folder
//!
//! A folder sent with protection [`crate::Protection::Encrypted`] or
//! [`crate::Protection::WriteOnly`] reaches the receiver only as **sealed
//! objects**: one object per file, directory or symlink of the source, at an
//! **opaque path**, as a regular file of mode `0600` and mtime 0. The receiver
//! stores, versions, retains, verifies and serves objects as it does plain
//! files; it never holds a key that opens them.
//!
//! ## Keys
//!
//! A **folder key** ([`FolderSecret`], 64 bytes) is an X25519 static secret
//! `sk` and a 32-byte **naming secret** `ns`. Its **public half**
//! ([`FolderPublic`]) is `pk = X25519(sk, 9)` and the same `ns`. A sender
//! needs only the public half to send; opening an object needs `sk`. An
//! `encrypted` folder's sender holds the whole key (it may restore), a
//! `write-only` folder's sender holds only the public half: it cannot open
//! what it sent, not even its own history.
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
//! Each run draws a fresh X25519 ephemeral secret `e` (forgotten when the run
//! ends) and derives `R = blake3::derive_key("ferry 2026-11 seal v1 run key",
//! X25519(e, pk) ‖ E ‖ pk)` where `E = X25519(e, 9)`. The opener derives the
//! same `R` from `X25519(sk, E)`. One Diffie–Hellman per run on the sender,
//! one per distinct `E` when opening.
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
//! A fresh key per object makes the counter nonces unique; the `last` flag
//! and the index in the nonce make truncation, reordering and splicing fail
//! authentication. Padding with [`padme`] leaves at most O(log log size) bits
//! of the exact size visible (at most 12% overhead). The header must fit in
//! block 0. After the content, every byte of `plain` must be zero.
//!
//! ## What the receiver still sees
//!
//! How many entries a folder has, each object's padded size, which objects a
//! run replaced or deleted, when runs happen, and which sender sent them.

use crate::{Hash, RelPath};
use serde::{Deserialize, Serialize};

/// Plaintext bytes per block (the last block of an object may be shorter).
pub const BLOCK: usize = 64 * 1024;
/// Bytes an AES-256-GCM tag adds to each block.
pub const TAG: usize = 16;
/// Bytes before the first block: version, `E`, salt.
pub const PREFIX: usize = 1 + 32 + 16;
/// The object format's version byte.
pub const VERSION: u8 = 1;

/// Why an object could not be sealed.
#[derive(Debug, thiserror::Error)]
pub enum SealError {
    /// The header (path and symlink target) does not fit in the first block.
    #[error("the entry's name and link target are too long to seal ({len} bytes)")]
    HeaderTooLong { len: usize },
    /// More or fewer content bytes than the header's size were given.
    #[error("the content was {got} bytes, not the {expected} announced")]
    SizeMismatch { expected: u64, got: u64 },
}

/// Why an object could not be opened.
#[derive(Debug, thiserror::Error)]
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
    /// size or padding).
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

/// A folder key: opens objects. Zeroed when dropped.
pub struct FolderSecret {/* sk, ns */}

/// The public half of a folder key: seals objects and names them.
#[derive(Clone, PartialEq, Eq)]
pub struct FolderPublic {/* pk, ns */}

impl std::fmt::Debug for FolderPublic {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("FolderPublic").finish_non_exhaustive()
    }
}

impl FolderSecret {
    /// A new key from the operating system's randomness.
    pub fn generate() -> FolderSecret {
        todo!()
    }
    /// `sk ‖ ns`.
    pub fn from_bytes(bytes: &[u8; 64]) -> FolderSecret {
        todo!()
    }
    /// `sk ‖ ns`.
    pub fn to_bytes(&self) -> [u8; 64] {
        todo!()
    }
    pub fn public(&self) -> FolderPublic {
        todo!()
    }
}

impl FolderPublic {
    /// `pk ‖ ns`.
    pub fn from_bytes(bytes: &[u8; 64]) -> FolderPublic {
        todo!()
    }
    /// `pk ‖ ns`.
    pub fn to_bytes(&self) -> [u8; 64] {
        todo!()
    }
    /// The key id the receiver pins per folder.
    pub fn key_id(&self) -> Hash {
        todo!()
    }
    /// The opaque path an entry's objects are stored at.
    pub fn opaque_path(&self, path: &RelPath) -> RelPath {
        todo!()
    }
}

/// The Padmé length `len` is padded to.
pub fn padme(len: u64) -> u64 {
    todo!()
}

/// One run's sealing key. The ephemeral secret lives only in this value.
pub struct RunSealer {/* E, R */}

impl RunSealer {
    /// A fresh run key for `public`.
    pub fn new(public: &FolderPublic) -> RunSealer {
        todo!()
    }
    /// The size of the object `header` seals to, known before its content
    /// is read.
    pub fn object_len(header: &SealedHeader) -> Result<u64, SealError> {
        todo!()
    }
    /// Starts sealing one object (a fresh random salt).
    pub fn object(&self, header: SealedHeader) -> Result<ObjectSealer, SealError> {
        todo!()
    }
}

/// Seals one object as its content is pushed.
pub struct ObjectSealer {/* ... */}

impl ObjectSealer {
    /// Appends content; the sealed bytes ready so far are appended to `out`
    /// (the prefix with the first call). Fails past the header's size.
    pub fn push(&mut self, content: &[u8], out: &mut Vec<u8>) -> Result<(), SealError> {
        todo!()
    }
    /// After exactly `size` content bytes: the padding and the last block.
    pub fn finish(self, out: &mut Vec<u8>) -> Result<(), SealError> {
        todo!()
    }
}

/// Opens objects of one folder, remembering run keys already derived.
pub struct Opener {/* secret, cache E -> R */}

impl Opener {
    pub fn new(secret: &FolderSecret) -> Opener {
        todo!()
    }
    /// Starts opening one object.
    pub fn object(&mut self) -> ObjectOpener<'_> {
        todo!()
    }
    /// Opens a whole object held in memory.
    pub fn open(&mut self, sealed: &[u8]) -> Result<(SealedHeader, Vec<u8>), OpenError> {
        todo!()
    }
}

/// Opens one object as its bytes are pushed.
pub struct ObjectOpener<'a> {
    _opener: &'a mut Opener,
}

impl ObjectOpener<'_> {
    /// Appends sealed bytes; content opened so far is appended to `out`.
    pub fn push(&mut self, sealed: &[u8], out: &mut Vec<u8>) -> Result<(), OpenError> {
        todo!()
    }
    /// The header, once block 0 is open.
    pub fn header(&self) -> Option<&SealedHeader> {
        todo!()
    }
    /// Checks the end (last block seen, padding all zero) and returns the
    /// header.
    pub fn finish(self) -> Result<SealedHeader, OpenError> {
        todo!()
    }
}
