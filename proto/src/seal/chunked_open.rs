//! Opening: objects read from where they are kept ([`ObjectSource`]: a
//! file, or bytes in memory), in either format; a chunked object's header
//! from its first bytes alone.

use std::io;

use super::chunked::{
    front_key, group_nonce, trailer_key, zero_nonce, NamingKeys, CHUNKED_VERSION, ENTRY_LENS,
    FRONT_PREFIX, LENS, MAX_CHUNK, MIN_CHUNK,
};
use super::{padme, OpenError, Opener, SealedHeader, SealedKind, TAG, VERSION};
use ring::aead::{Aad, Nonce};

/// Where a sealed object is read from, at any offset.
pub trait ObjectSource {
    /// Bytes of the object.
    fn object_len(&self) -> io::Result<u64>;
    /// Fills `buf` from `offset`; an object that ends first is an
    /// `UnexpectedEof` error.
    fn read_at(&self, offset: u64, buf: &mut [u8]) -> io::Result<()>;
}

impl ObjectSource for [u8] {
    fn object_len(&self) -> io::Result<u64> {
        Ok(<[u8]>::len(self) as u64)
    }

    fn read_at(&self, offset: u64, buf: &mut [u8]) -> io::Result<()> {
        let start = usize::try_from(offset).map_err(|_| io::ErrorKind::UnexpectedEof)?;
        let bytes = start
            .checked_add(buf.len())
            .and_then(|end| self.get(start..end))
            .ok_or(io::ErrorKind::UnexpectedEof)?;
        buf.copy_from_slice(bytes);
        Ok(())
    }
}

#[cfg(unix)]
impl ObjectSource for std::fs::File {
    fn object_len(&self) -> io::Result<u64> {
        Ok(self.metadata()?.len())
    }

    fn read_at(&self, offset: u64, buf: &mut [u8]) -> io::Result<()> {
        std::os::unix::fs::FileExt::read_exact_at(self, buf, offset)
    }
}

/// Why an object could not be read and opened.
#[derive(Debug, thiserror::Error)]
pub enum ReadObjectError {
    #[error(transparent)]
    Open(#[from] OpenError),
    #[error("could not read the sealed object")]
    Read(#[source] io::Error),
    #[error("could not write the opened content")]
    Write(#[source] io::Error),
}

/// The longest a group piece can be: 256 entries, padded, and a tag.
const MAX_GROUP_PIECE: u64 = 8 << 10;

/// Bytes read at once from a whole-object (version 1) source.
const WINDOW: usize = 1 << 20;

/// True if `first` (an object's first byte) is the chunked format's.
pub fn is_chunked(first: u8) -> bool {
    first == CHUNKED_VERSION
}

/// Reads `len` bytes at `offset`, an object that ends early being
/// truncated.
fn read(
    src: &(impl ObjectSource + ?Sized),
    offset: u64,
    len: usize,
) -> Result<Vec<u8>, ReadObjectError> {
    let mut buf = vec![0u8; len];
    match src.read_at(offset, &mut buf) {
        Ok(()) => Ok(buf),
        Err(e) if e.kind() == io::ErrorKind::UnexpectedEof => Err(OpenError::Truncated.into()),
        Err(e) => Err(ReadObjectError::Read(e)),
    }
}

/// `u32` little-endian at `at` of `bytes` (in bounds by the caller's check).
fn u32_at(bytes: &[u8], at: usize) -> Result<u32, OpenError> {
    bytes
        .get(at..at + 4)
        .and_then(|b| b.try_into().ok())
        .map(u32::from_le_bytes)
        .ok_or(OpenError::Malformed("a length past its end"))
}

fn u64_at(bytes: &[u8], at: usize) -> Result<u64, OpenError> {
    bytes
        .get(at..at + 8)
        .and_then(|b| b.try_into().ok())
        .map(u64::from_le_bytes)
        .ok_or(OpenError::Malformed("a length past its end"))
}

/// Checks that `padded[len..]` is all zeros and that `padded` is
/// `padme(len)` long.
fn check_padding(padded: &[u8], len: usize) -> Result<(), OpenError> {
    if padded.len() as u64 != padme(len as u64) {
        return Err(OpenError::Malformed("a padded length that disagrees"));
    }
    if padded[len..].iter().any(|&b| b != 0) {
        return Err(OpenError::Malformed("non-zero padding"));
    }
    Ok(())
}

impl Opener {
    /// The header of a chunked object from its first bytes; `Ok(None)`
    /// while more bytes are needed (at most [`FRONT_PREFIX`] plus 64 KiB).
    pub fn chunked_header(&mut self, prefix: &[u8]) -> Result<Option<SealedHeader>, OpenError> {
        let Some(version) = prefix.first() else {
            return Ok(None);
        };
        if *version != CHUNKED_VERSION {
            return Err(OpenError::Version(*version));
        }
        if prefix.len() < FRONT_PREFIX {
            return Ok(None);
        }
        let front_len = u32_at(prefix, 33)? as usize;
        match prefix.get(..FRONT_PREFIX + front_len) {
            Some(front) => self.open_front(front).map(Some),
            None => Ok(None),
        }
    }

    /// Opens a chunked object's front: its header.
    fn open_front(&mut self, front: &[u8]) -> Result<SealedHeader, OpenError> {
        let (aad, sealed) = front.split_at(FRONT_PREFIX);
        if sealed.len() < TAG {
            return Err(OpenError::Truncated);
        }
        let mut e_h = [0u8; 32];
        e_h.copy_from_slice(&aad[1..33]);
        let shared = self.secret().agree(&e_h).ok_or(OpenError::Authentication)?;
        let key = front_key(&shared, &e_h, self.public().pk().as_bytes());
        let mut plain = sealed.to_vec();
        let opened = key
            .open_in_place(zero_nonce(), Aad::from(aad), &mut plain)
            .map_err(|_| OpenError::Authentication)?;
        let len = u32_at(opened, 0)? as usize;
        let Some(bytes) = opened.get(4..4 + len) else {
            return Err(OpenError::Malformed("a header longer than its front"));
        };
        let header: SealedHeader = match postcard::take_from_bytes(bytes) {
            Ok((header, [])) => header,
            Ok(_) => return Err(OpenError::Malformed("bytes after the header")),
            Err(_) => return Err(OpenError::Malformed("a header that does not decode")),
        };
        if header.kind != SealedKind::File {
            return Err(OpenError::Malformed("a chunked object that is not a file"));
        }
        check_padding(opened, 4 + len)?;
        Ok(header)
    }

    /// Opens the object in `src`, in either format, handing its content to
    /// `out` as it is opened. The content is the object's only when this
    /// returns its header: write it to a staging file and keep it only then.
    pub fn open_source(
        &mut self,
        src: &(impl ObjectSource + ?Sized),
        out: &mut dyn FnMut(&[u8]) -> io::Result<()>,
    ) -> Result<SealedHeader, ReadObjectError> {
        let len = src.object_len().map_err(ReadObjectError::Read)?;
        let first = read(src, 0, usize::from(len > 0))?;
        match first.first() {
            Some(&CHUNKED_VERSION) => self.open_chunked(src, len, out),
            Some(&VERSION) | None => self.open_whole(src, len, out),
            Some(&other) => Err(OpenError::Version(other).into()),
        }
    }

    /// Opens a version 1 object window by window.
    fn open_whole(
        &mut self,
        src: &(impl ObjectSource + ?Sized),
        len: u64,
        out: &mut dyn FnMut(&[u8]) -> io::Result<()>,
    ) -> Result<SealedHeader, ReadObjectError> {
        let mut object = self.object();
        let mut content = Vec::new();
        let mut at = 0u64;
        while at < len {
            let n = (len - at).min(WINDOW as u64) as usize;
            let bytes = read(src, at, n)?;
            object.push(&bytes, &mut content)?;
            out(&content).map_err(ReadObjectError::Write)?;
            content.clear();
            at += n as u64;
        }
        let header = object.finish(&mut content)?;
        out(&content).map_err(ReadObjectError::Write)?;
        Ok(header)
    }

    /// Opens a chunked object: its front, its trailer, then group by group.
    fn open_chunked(
        &mut self,
        src: &(impl ObjectSource + ?Sized),
        len: u64,
        out: &mut dyn FnMut(&[u8]) -> io::Result<()>,
    ) -> Result<SealedHeader, ReadObjectError> {
        let (trailer_prefix, cid_len, nonce_len) = LENS;
        let (group_entry, trailer_entry) = ENTRY_LENS;
        let prefix = read(src, 0, FRONT_PREFIX.min(len as usize))?;
        if prefix.len() < FRONT_PREFIX {
            return Err(OpenError::Truncated.into());
        }
        let front_len = u64::from(u32_at(&prefix, 33)?);
        let front_end = FRONT_PREFIX as u64 + front_len;
        if front_end > len || front_len > (64 << 10) + 4096 {
            return Err(OpenError::Truncated.into());
        }
        let front = read(src, 0, front_end as usize)?;
        let header = self.open_front(&front)?;
        let front_hash = *blake3::hash(&front).as_bytes();

        // The trailer: its length in the last 4 bytes.
        if len < front_end + 4 {
            return Err(OpenError::Truncated.into());
        }
        let footer = read(src, len - 4, 4)?;
        let trailer_len = u64::from(u32_at(&footer, 0)?);
        let body_end = (len - 4)
            .checked_sub(trailer_len)
            .filter(|end| *end >= front_end)
            .ok_or(OpenError::Truncated)?;
        if trailer_len < (trailer_prefix + TAG) as u64 {
            return Err(OpenError::Truncated.into());
        }
        // Lengths read from the object are checked before anything of that
        // length is allocated: a trailer lists one group per chunk at most.
        let most_groups = len / MIN_CHUNK as u64 + 1;
        if trailer_len > 1024 + most_groups.saturating_mul(2 * trailer_entry as u64) {
            return Err(OpenError::Malformed("a trailer longer than its object allows").into());
        }
        let mut trailer = read(src, body_end, trailer_len as usize)?;
        let (aad_tail, sealed) = trailer.split_at_mut(trailer_prefix);
        let mut run_e = [0u8; 32];
        run_e.copy_from_slice(&aad_tail[..32]);
        let mut salt = [0u8; 16];
        salt.copy_from_slice(&aad_tail[32..]);
        let aad: Vec<u8> = [&[CHUNKED_VERSION][..], &aad_tail[..]].concat();
        let key = trailer_key(self.run_key(&run_e)?, &salt);
        let table = key
            .open_in_place(zero_nonce(), Aad::from(&aad[..]), sealed)
            .map_err(|_| OpenError::Authentication)?;
        if table.get(..32) != Some(&front_hash[..]) {
            return Err(OpenError::Malformed("a trailer of another object").into());
        }
        let count = u32_at(table, 32)? as usize;
        let entries_end = count
            .checked_mul(trailer_entry)
            .and_then(|n| n.checked_add(36))
            .filter(|end| *end <= table.len())
            .ok_or(OpenError::Malformed("a trailer shorter than its groups"))?;
        check_padding(table, entries_end)?;
        let table = table[36..entries_end].to_vec();

        let keys = NamingKeys::new(self.public().ns());
        let mut at = front_end;
        let mut content = 0u64;
        for entry in table.chunks_exact(trailer_entry) {
            let mut gid = [0u8; 32];
            gid.copy_from_slice(&entry[..32]);
            let group_len = u64::from(u32_at(entry, 32)?);
            if group_len > MAX_GROUP_PIECE {
                return Err(OpenError::Malformed("a group longer than any").into());
            }
            let span = u64_at(entry, 36)?;
            let group_at = at
                .checked_add(span)
                .filter(|g| g.checked_add(group_len).is_some_and(|end| end <= body_end))
                .ok_or(OpenError::Malformed("a group past the object's end"))?;
            let mut group = read(src, group_at, group_len as usize)?;
            let plain = keys
                .group_key(&gid)
                .open_in_place(group_nonce(&gid), Aad::from([CHUNKED_VERSION]), &mut group)
                .map_err(|_| OpenError::Authentication)?;
            let chunks = u32_at(plain, 0)? as usize;
            let used = chunks
                .checked_mul(group_entry)
                .and_then(|n| n.checked_add(4))
                .filter(|end| *end <= plain.len())
                .ok_or(OpenError::Malformed("a group shorter than its chunks"))?;
            check_padding(plain, used)?;
            if chunks == 0 || keys.group_id(&plain[..used]) != gid {
                return Err(OpenError::Malformed("a group that is not the one named").into());
            }
            let mut piece_at = at;
            for e in plain[4..used].chunks_exact(group_entry) {
                let mut cid = [0u8; 16];
                cid.copy_from_slice(&e[..cid_len]);
                let piece_len = u64::from(u32_at(e, cid_len)?);
                if piece_len > crate::MAX_DATA as u64 {
                    return Err(OpenError::Malformed("a piece longer than any").into());
                }
                if piece_at + piece_len > group_at || piece_len < (nonce_len + TAG) as u64 {
                    return Err(OpenError::Malformed("pieces that disagree with their span").into());
                }
                let piece = read(src, piece_at, piece_len as usize)?;
                let chunk = open_piece(&keys, &cid, piece)?;
                content += chunk.len() as u64;
                if content > header.size {
                    return Err(OpenError::Malformed("more content than the header says").into());
                }
                out(&chunk).map_err(ReadObjectError::Write)?;
                piece_at += piece_len;
            }
            if piece_at != group_at {
                return Err(OpenError::Malformed("pieces that disagree with their span").into());
            }
            at = group_at + group_len;
        }
        if at != body_end {
            return Err(OpenError::Malformed("bytes between the groups and the trailer").into());
        }
        if content != header.size {
            return Err(OpenError::Truncated.into());
        }
        Ok(header)
    }
}

/// Opens one data piece named `cid` and returns its chunk, checked against
/// the id.
fn open_piece(keys: &NamingKeys, cid: &[u8; 16], mut piece: Vec<u8>) -> Result<Vec<u8>, OpenError> {
    let (_, _, nonce_len) = LENS;
    let mut nonce = [0u8; 12];
    nonce.copy_from_slice(&piece[..nonce_len]);
    let plain = keys
        .chunk_key(cid)
        .open_in_place(
            Nonce::assume_unique_for_key(nonce),
            Aad::from([CHUNKED_VERSION]),
            &mut piece[nonce_len..],
        )
        .map_err(|_| OpenError::Authentication)?;
    let Some((&flag, rest)) = plain.split_first() else {
        return Err(OpenError::Malformed("an empty piece"));
    };
    let data_len = u32_at(rest, 0)? as usize;
    let used = 5usize
        .checked_add(data_len)
        .filter(|end| *end <= plain.len())
        .ok_or(OpenError::Malformed("a piece shorter than its data"))?;
    check_padding(plain, used)?;
    let data = &plain[5..used];
    let chunk = match flag {
        0 => data.to_vec(),
        1 => zstd::bulk::decompress(data, MAX_CHUNK)
            .map_err(|_| OpenError::Malformed("a compressed piece that does not decompress"))?,
        _ => return Err(OpenError::Malformed("a piece of an unknown kind")),
    };
    if chunk.is_empty() || keys.chunk_id(&chunk) != *cid {
        return Err(OpenError::Malformed("a chunk that is not the one named"));
    }
    Ok(chunk)
}
