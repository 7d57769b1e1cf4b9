//! Sealing: one [`RunSealer`] per run, one [`ObjectSealer`] per entry,
//! blocks sealed in place in the caller's output buffer.

use super::keys::{object_key, random, FolderPublic};
use super::{
    nonce, Layout, SealError, SealedHeader, SealedKind, StoredHeader, BLOCK, MAX_PACKED, PREFIX,
    VERSION,
};
use ring::aead::{Aad, LessSafeKey};
use x25519_dalek::StaticSecret;
use zeroize::Zeroizing;

/// Zeros to pad with.
static ZEROS: [u8; BLOCK] = [0; BLOCK];

/// One run's sealing key: `E` and `R` (the ephemeral secret is forgotten
/// as soon as `R` is derived). `R` is zeroed when dropped.
pub struct RunSealer {
    ephemeral: [u8; 32],
    run: Zeroizing<[u8; 32]>,
}

impl RunSealer {
    /// A fresh run key for `public`.
    pub fn new(public: &FolderPublic) -> Result<RunSealer, SealError> {
        let mut secret = Zeroizing::new([0u8; 32]);
        random(&mut secret[..]).map_err(SealError::Randomness)?;
        RunSealer::with_ephemeral(public, *secret)
    }

    /// A run key from a given ephemeral secret: for known-answer tests only
    /// (a run key must never be reused across runs).
    #[doc(hidden)]
    pub fn with_ephemeral(public: &FolderPublic, secret: [u8; 32]) -> Result<RunSealer, SealError> {
        let (ephemeral, run) = public
            .run_key(StaticSecret::from(secret))
            .ok_or(SealError::WeakPublicKey)?;
        Ok(RunSealer { ephemeral, run })
    }

    /// `E` of this run.
    pub(super) fn ephemeral(&self) -> &[u8; 32] {
        &self.ephemeral
    }

    /// `R` of this run.
    pub(super) fn run_key(&self) -> &[u8; 32] {
        &self.run
    }

    /// The size of the object `header` seals to, known before its content
    /// is read.
    pub fn object_len(header: &SealedHeader) -> Result<u64, SealError> {
        let (_, layout) = encode_header(header)?;
        Ok(layout.object_len())
    }

    /// Starts sealing one object (a fresh random salt).
    pub fn object(&self, header: SealedHeader) -> Result<ObjectSealer, SealError> {
        let mut salt = [0u8; 16];
        random(&mut salt).map_err(SealError::Randomness)?;
        self.object_with_salt(&header, salt)
    }

    /// Starts sealing one object with a given salt: for known-answer tests
    /// only (a salt must never be reused under one run key).
    #[doc(hidden)]
    pub fn object_with_salt(
        &self,
        header: &SealedHeader,
        salt: [u8; 16],
    ) -> Result<ObjectSealer, SealError> {
        let (start, layout) = encode_header(header)?;
        Ok(self.start(start, layout, header.size, salt))
    }

    /// Seals a small file whose content compresses: `packed` is its
    /// content zstd-compressed, stored so (the header says so, and the
    /// file's own size); opening gives the content back decompressed.
    pub fn packed_object(
        &self,
        header: &SealedHeader,
        packed: &[u8],
    ) -> Result<Vec<u8>, SealError> {
        let mut salt = [0u8; 16];
        random(&mut salt).map_err(SealError::Randomness)?;
        self.packed_object_with_salt(header, packed, salt)
    }

    /// [`RunSealer::packed_object`] with a given salt: for known-answer
    /// tests only.
    #[doc(hidden)]
    pub fn packed_object_with_salt(
        &self,
        header: &SealedHeader,
        packed: &[u8],
        salt: [u8; 16],
    ) -> Result<Vec<u8>, SealError> {
        if header.kind != SealedKind::File || header.size > MAX_PACKED {
            return Err(SealError::ContentOfNonFile { size: header.size });
        }
        let stored = StoredHeader::packed(header, packed.len() as u64);
        let (start, layout) = encode_stored(&stored)?;
        let mut sealer = self.start(start, layout, stored.size, salt);
        let mut out = Vec::with_capacity(layout.object_len() as usize);
        sealer.push(packed, &mut out)?;
        sealer.finish(&mut out)?;
        Ok(out)
    }

    /// An object sealer for `start` (`header_len ‖ header`) and `layout`.
    fn start(&self, start: Vec<u8>, layout: Layout, size: u64, salt: [u8; 16]) -> ObjectSealer {
        let mut prefix = [0u8; PREFIX];
        prefix[0] = VERSION;
        prefix[1..33].copy_from_slice(&self.ephemeral);
        prefix[33..].copy_from_slice(&salt);
        let mut buf = Vec::with_capacity(BLOCK);
        buf.extend_from_slice(&start);
        ObjectSealer {
            key: object_key(&self.run, &prefix),
            prefix,
            layout,
            prefix_written: false,
            buf,
            block: 0,
            size,
            pushed: 0,
        }
    }
}

/// `header_len ‖ header` and the object's layout.
pub(super) fn encode_header(header: &SealedHeader) -> Result<(Vec<u8>, Layout), SealError> {
    if header.kind != SealedKind::File && header.size != 0 {
        return Err(SealError::ContentOfNonFile { size: header.size });
    }
    encode_stored(&StoredHeader::of(header))
}

/// `header_len ‖ header` as stored, and the object's layout.
fn encode_stored(header: &StoredHeader) -> Result<(Vec<u8>, Layout), SealError> {
    let mut bytes = match postcard::to_extend(header, vec![0u8; 4]) {
        Ok(bytes) => bytes,
        // Serializing into a Vec fails only for a sequence of unknown length
        // or a custom error of a Serialize impl: the header has neither
        // (derived impls, RelPath as bytes).
        Err(_) => unreachable!("a SealedHeader always serializes"),
    };
    let len = bytes.len() - 4;
    let len32 = u32::try_from(len).map_err(|_| SealError::HeaderTooLong { len })?;
    if 4 + len > BLOCK {
        return Err(SealError::HeaderTooLong { len });
    }
    bytes[..4].copy_from_slice(&len32.to_le_bytes());
    let layout = Layout::new(len, header.size).ok_or(SealError::TooLarge { size: header.size })?;
    Ok((bytes, layout))
}

/// Seals one object as its content is pushed.
pub struct ObjectSealer {
    key: LessSafeKey,
    prefix: [u8; PREFIX],
    layout: Layout,
    prefix_written: bool,
    /// Plaintext of the block being filled, when it came in pieces.
    buf: Vec<u8>,
    /// The index of the block being filled.
    block: u64,
    size: u64,
    pushed: u64,
}

impl std::fmt::Debug for ObjectSealer {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ObjectSealer")
            .field("block", &self.block)
            .field("size", &self.size)
            .field("pushed", &self.pushed)
            .finish_non_exhaustive()
    }
}

impl ObjectSealer {
    /// Appends content; the sealed bytes ready so far are appended to `out`
    /// (the prefix with the first call). Fails past the header's size,
    /// pushing nothing.
    pub fn push(&mut self, content: &[u8], out: &mut Vec<u8>) -> Result<(), SealError> {
        let got = self.pushed.saturating_add(content.len() as u64);
        if got > self.size {
            return Err(SealError::SizeMismatch {
                expected: self.size,
                got,
            });
        }
        self.write_prefix(out);
        self.feed(content, out);
        self.pushed = got;
        Ok(())
    }

    /// After exactly `size` content bytes: the padding and the last block.
    pub fn finish(mut self, out: &mut Vec<u8>) -> Result<(), SealError> {
        if self.pushed != self.size {
            return Err(SealError::SizeMismatch {
                expected: self.size,
                got: self.pushed,
            });
        }
        self.write_prefix(out);
        let mut padding = self.layout.plain_len - self.layout.content_end;
        while padding > 0 {
            // At most BLOCK, so the conversion is exact.
            let n = padding.min(BLOCK as u64) as usize;
            self.feed(&ZEROS[..n], out);
            padding -= n as u64;
        }
        self.flush_if_full(out);
        debug_assert_eq!(self.block, self.layout.blocks);
        Ok(())
    }

    fn write_prefix(&mut self, out: &mut Vec<u8>) {
        if !self.prefix_written {
            out.extend_from_slice(&self.prefix);
            self.prefix_written = true;
        }
    }

    /// Appends plaintext, sealing every block it completes; whole blocks go
    /// straight to `out` and are sealed there.
    fn feed(&mut self, mut bytes: &[u8], out: &mut Vec<u8>) {
        self.flush_if_full(out);
        while !bytes.is_empty() && self.block < self.layout.blocks {
            let block_len = self.layout.block_len(self.block);
            if self.buf.is_empty() && bytes.len() >= block_len {
                let start = out.len();
                out.extend_from_slice(&bytes[..block_len]);
                self.seal_tail(out, start);
                bytes = &bytes[block_len..];
            } else {
                let n = (block_len - self.buf.len()).min(bytes.len());
                self.buf.extend_from_slice(&bytes[..n]);
                bytes = &bytes[n..];
                self.flush_if_full(out);
            }
        }
        debug_assert!(bytes.is_empty(), "more plaintext than the layout");
    }

    /// Seals the buffered block if it is complete.
    fn flush_if_full(&mut self, out: &mut Vec<u8>) {
        if self.block < self.layout.blocks && self.buf.len() == self.layout.block_len(self.block) {
            let start = out.len();
            out.extend_from_slice(&self.buf);
            self.buf.clear();
            self.seal_tail(out, start);
        }
    }

    /// Seals `out[start..]` in place as the current block and appends its
    /// tag.
    fn seal_tail(&mut self, out: &mut Vec<u8>, start: usize) {
        let last = self.block + 1 == self.layout.blocks;
        let sealed = self.key.seal_in_place_separate_tag(
            nonce(self.block, last),
            Aad::from(&self.prefix),
            &mut out[start..],
        );
        match sealed {
            Ok(tag) => out.extend_from_slice(tag.as_ref()),
            // ring refuses only more than 2^36 bytes at once; a block is at
            // most BLOCK.
            Err(_) => unreachable!("AES-GCM seals a block of BLOCK bytes"),
        }
        self.block += 1;
    }
}
