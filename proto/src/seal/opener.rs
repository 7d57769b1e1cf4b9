//! Opening: one [`Opener`] per folder key (it remembers run keys), one
//! [`ObjectOpener`] per object, blocks opened in place in the caller's
//! output buffer.

use super::keys::{object_key, FolderPublic, FolderSecret};
use super::{
    nonce, Layout, OpenError, SealedHeader, SealedKind, StoredHeader, BLOCK, MAX_PACKED, PREFIX,
    TAG, VERSION,
};
use ring::aead::{Aad, LessSafeKey};
use std::collections::HashMap;
use zeroize::Zeroizing;

/// Run keys an [`Opener`] remembers before it starts over (one per run of
/// the folder that objects being opened came from).
const MAX_RUN_KEYS: usize = 4096;

/// Opens objects of one folder, remembering run keys already derived.
/// Its secrets are zeroed when dropped.
pub struct Opener {
    secret: FolderSecret,
    public: FolderPublic,
    runs: HashMap<[u8; 32], Zeroizing<[u8; 32]>>,
}

impl std::fmt::Debug for Opener {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Opener")
            .field("run_keys", &self.runs.len())
            .finish_non_exhaustive()
    }
}

impl Opener {
    pub fn new(secret: &FolderSecret) -> Opener {
        Opener {
            secret: secret.clone(),
            public: secret.public(),
            runs: HashMap::new(),
        }
    }

    /// The folder key's public half: its [`FolderPublic::opaque_path`] tells
    /// where a real path's objects are stored, and whether an opened object
    /// was stored where its header's path belongs (the receiver could serve
    /// one object in place of another of the same folder).
    pub fn public(&self) -> &FolderPublic {
        &self.public
    }

    /// Starts opening one object.
    pub fn object(&mut self) -> ObjectOpener<'_> {
        ObjectOpener {
            opener: self,
            prefix: [0; PREFIX],
            prefix_len: 0,
            key: None,
            buf: Vec::new(),
            block: 0,
            layout: None,
            header: None,
            packed: None,
            failed: None,
        }
    }

    /// Opens a whole object held in memory, in either format.
    pub fn open(&mut self, sealed: &[u8]) -> Result<(SealedHeader, Vec<u8>), OpenError> {
        if sealed.first().copied().is_some_and(super::is_chunked) {
            let mut content = Vec::with_capacity(sealed.len());
            let header = self.open_source(sealed, &mut |bytes: &[u8]| {
                content.extend_from_slice(bytes);
                Ok(())
            });
            return match header {
                Ok(header) => Ok((header, content)),
                Err(super::ReadObjectError::Open(e)) => Err(e),
                // Memory is read whole (an object that ends early is
                // `Truncated`) and appending to a Vec does not fail.
                Err(_) => Err(OpenError::Truncated),
            };
        }
        let mut content = Vec::with_capacity(sealed.len());
        let mut object = self.object();
        object.push(sealed, &mut content)?;
        let header = object.finish(&mut content)?;
        Ok((header, content))
    }

    /// `R` of the run whose ephemeral public key is `ephemeral`, derived
    /// once and remembered.
    pub(super) fn run_key(&mut self, ephemeral: &[u8; 32]) -> Result<&[u8; 32], OpenError> {
        if !self.runs.contains_key(ephemeral) {
            let run = self
                .secret
                .run_key(ephemeral)
                .ok_or(OpenError::Authentication)?;
            if self.runs.len() >= MAX_RUN_KEYS {
                self.runs.clear();
            }
            self.runs.insert(*ephemeral, run);
        }
        match self.runs.get(ephemeral) {
            Some(run) => Ok(run),
            None => Err(OpenError::Authentication),
        }
    }

    /// The folder key.
    pub(super) fn secret(&self) -> &FolderSecret {
        &self.secret
    }

    /// The object key of the object with `prefix`.
    fn object_key(&mut self, prefix: &[u8; PREFIX]) -> Result<LessSafeKey, OpenError> {
        let mut ephemeral = [0u8; 32];
        ephemeral.copy_from_slice(&prefix[1..33]);
        if !self.runs.contains_key(&ephemeral) {
            let run = self
                .secret
                .run_key(&ephemeral)
                .ok_or(OpenError::Authentication)?;
            if self.runs.len() >= MAX_RUN_KEYS {
                self.runs.clear();
            }
            self.runs.insert(ephemeral, run);
        }
        let run = self.runs.get(&ephemeral).ok_or(OpenError::Authentication)?;
        Ok(object_key(run, prefix))
    }
}

/// Opens one object as its bytes are pushed.
pub struct ObjectOpener<'a> {
    opener: &'a mut Opener,
    prefix: [u8; PREFIX],
    prefix_len: usize,
    key: Option<LessSafeKey>,
    /// Sealed bytes of the block being received, when they came in pieces.
    buf: Vec<u8>,
    /// The index of the next block to open.
    block: u64,
    /// Known once block 0 is open.
    layout: Option<Layout>,
    header: Option<SealedHeader>,
    /// A packed file's size and its compressed content so far: handed out
    /// decompressed at [`ObjectOpener::finish`].
    packed: Option<(u64, Vec<u8>)>,
    /// The first failure: every later call repeats it.
    failed: Option<OpenError>,
}

impl std::fmt::Debug for ObjectOpener<'_> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ObjectOpener")
            .field("block", &self.block)
            .field("failed", &self.failed)
            .finish_non_exhaustive()
    }
}

impl ObjectOpener<'_> {
    /// Appends sealed bytes; content opened so far is appended to `out`.
    /// Content is the object's only once [`ObjectOpener::finish`] succeeds.
    /// After a failure, every call fails the same way.
    pub fn push(&mut self, sealed: &[u8], out: &mut Vec<u8>) -> Result<(), OpenError> {
        if let Some(error) = &self.failed {
            return Err(error.clone());
        }
        let result = self.push_inner(sealed, out);
        if let Err(error) = &result {
            self.failed = Some(error.clone());
        }
        result
    }

    /// The header, once block 0 is open (for an object of one block, that
    /// is at [`ObjectOpener::finish`]).
    pub fn header(&self) -> Option<&SealedHeader> {
        self.header.as_ref()
    }

    /// Checks the end (last block seen, padding all zero) and returns the
    /// header. The content of a last block of unknown length is appended to
    /// `out` here: an object's end is known only when its bytes end.
    pub fn finish(mut self, out: &mut Vec<u8>) -> Result<SealedHeader, OpenError> {
        if let Some(error) = self.failed.take() {
            return Err(error);
        }
        if self.prefix_len < PREFIX {
            return Err(OpenError::Truncated);
        }
        match self.layout {
            // Block 0 is the last: its length is what came.
            None => {
                if self.buf.len() <= TAG {
                    return Err(OpenError::Truncated);
                }
                let block = std::mem::take(&mut self.buf);
                self.open_block(&block, true, out)?;
            }
            Some(layout) if self.block < layout.blocks => return Err(OpenError::Truncated),
            Some(_) => {}
        }
        if let Some((size, packed)) = self.packed.take() {
            // `size` ≤ MAX_PACKED, checked when block 0 was parsed.
            let content = zstd::bulk::decompress(&packed, size as usize)
                .map_err(|_| OpenError::Malformed("packed content that does not decompress"))?;
            if content.len() as u64 != size {
                return Err(OpenError::Malformed("packed content of another size"));
            }
            out.extend_from_slice(&content);
        }
        // Block 0 is open: it set the header.
        self.header.ok_or(OpenError::Truncated)
    }

    fn push_inner(&mut self, mut sealed: &[u8], out: &mut Vec<u8>) -> Result<(), OpenError> {
        if self.prefix_len < PREFIX && !sealed.is_empty() {
            let n = (PREFIX - self.prefix_len).min(sealed.len());
            self.prefix[self.prefix_len..self.prefix_len + n].copy_from_slice(&sealed[..n]);
            self.prefix_len += n;
            sealed = &sealed[n..];
            if self.prefix[0] != VERSION {
                return Err(OpenError::Version(self.prefix[0]));
            }
            if self.prefix_len == PREFIX {
                self.key = Some(self.opener.object_key(&self.prefix)?);
            }
        }
        while !sealed.is_empty() {
            // The sealed length of the next block, and whether it is the
            // last; block 0's length is unknown until it is open, so a full
            // one is opened only when a byte follows it.
            let (len, last) = match self.layout {
                None if self.buf.len() + sealed.len() > BLOCK + TAG => (BLOCK + TAG, false),
                None => {
                    self.buf.extend_from_slice(sealed);
                    return Ok(());
                }
                Some(layout) if self.block >= layout.blocks => {
                    return Err(OpenError::Malformed("bytes after the last block"))
                }
                Some(layout) => (
                    layout.block_len(self.block) + TAG,
                    self.block + 1 == layout.blocks,
                ),
            };
            if self.buf.is_empty() && sealed.len() >= len {
                self.open_block(&sealed[..len], last, out)?;
                sealed = &sealed[len..];
            } else {
                let n = (len - self.buf.len()).min(sealed.len());
                self.buf.extend_from_slice(&sealed[..n]);
                sealed = &sealed[n..];
                if self.buf.len() == len {
                    let block = std::mem::take(&mut self.buf);
                    self.open_block(&block, last, out)?;
                    self.buf = block;
                    self.buf.clear();
                }
            }
        }
        Ok(())
    }

    /// Opens one sealed block in place at the end of `out` and leaves there
    /// only its content (no header, no padding); on failure `out` is as
    /// it was.
    fn open_block(
        &mut self,
        sealed: &[u8],
        last: bool,
        out: &mut Vec<u8>,
    ) -> Result<(), OpenError> {
        let start = out.len();
        out.extend_from_slice(sealed);
        let result = self.open_tail(last, out, start);
        if result.is_err() {
            out.truncate(start);
        }
        result
    }

    fn open_tail(&mut self, last: bool, out: &mut Vec<u8>, start: usize) -> Result<(), OpenError> {
        let key = self.key.as_ref().ok_or(OpenError::Truncated)?;
        let opened = key
            .open_in_place(
                nonce(self.block, last),
                Aad::from(&self.prefix),
                &mut out[start..],
            )
            .map_err(|_| OpenError::Authentication)?;
        let plain_len = opened.len();
        out.truncate(start + plain_len);
        let index = self.block;
        self.block += 1;
        let layout = match self.layout {
            Some(layout) => layout,
            None => {
                let (header, layout, packed) = parse_block0(&out[start..], last)?;
                out.drain(start..start + (layout.content_start as usize));
                self.header = Some(header);
                self.packed = packed.map(|size| (size, Vec::new()));
                self.layout = Some(layout);
                layout
            }
        };
        // Plain positions [from, to) are now at out[start..].
        let from = (index * BLOCK as u64).max(layout.content_start);
        let content = layout.content_end.saturating_sub(from);
        // `content` is past the block's end or within it, which is at most
        // BLOCK: the conversion is exact.
        let keep = start + (content.min((out.len() - start) as u64) as usize);
        if out[keep..].iter().any(|&b| b != 0) {
            return Err(OpenError::Malformed("non-zero padding"));
        }
        out.truncate(keep);
        if let Some((_, packed)) = self.packed.as_mut() {
            packed.extend_from_slice(&out[start..]);
            out.truncate(start);
        }
        Ok(())
    }
}

/// The header and layout block 0's plaintext `plain` gives, checked against
/// the length of block 0 and whether it was opened as the last.
fn parse_block0(
    plain: &[u8],
    last: bool,
) -> Result<(SealedHeader, Layout, Option<u64>), OpenError> {
    let Some((len, rest)) = plain.split_first_chunk::<4>() else {
        return Err(OpenError::Malformed("no header length"));
    };
    let len = u32::from_le_bytes(*len) as usize;
    let Some(bytes) = rest.get(..len) else {
        return Err(OpenError::Malformed("a header longer than its block"));
    };
    let stored: StoredHeader = match postcard::take_from_bytes(bytes) {
        Ok((header, [])) => header,
        Ok(_) => return Err(OpenError::Malformed("bytes after the header")),
        Err(_) => return Err(OpenError::Malformed("a header that does not decode")),
    };
    let stored_size = stored.size;
    let (header, packed) = stored.logical();
    if header.kind != SealedKind::File && header.size != 0 {
        return Err(OpenError::Malformed("a directory or symlink with content"));
    }
    if packed.is_some_and(|size| size > MAX_PACKED) {
        return Err(OpenError::Malformed("a packed file larger than any"));
    }
    let layout = Layout::new(len, stored_size).ok_or(OpenError::Malformed("too large"))?;
    if layout.block_len(0) != plain.len() || (layout.blocks == 1) != last {
        return Err(OpenError::Malformed(
            "a length that disagrees with the header",
        ));
    }
    Ok((header, layout, packed))
}
