//! Content-defined chunks: FastCDC cut points (8/32/128 KiB min/avg/max)
//! and the chunk lists both sides keep of every large file they sent or
//! stored. An insertion moves only the cut points near it, so the chunks
//! after an edit are the same as before and need not travel again.

use std::io::{self, Read};

use ferry_proto::Hash;

/// Smallest chunk (except a file's last).
pub const MIN_CHUNK: usize = 8 * 1024;
/// Average chunk size the cut points aim for: small enough that an edit
/// costs little (a 1-byte insertion re-sends one chunk), large enough that
/// chunk lists stay small (36 bytes per chunk: about 1.1 MiB per GiB).
pub const AVG_CHUNK: usize = 32 * 1024;
/// Largest chunk; one chunk always fits one `Data` message.
pub const MAX_CHUNK: usize = 128 * 1024;

const _: () = assert!(MAX_CHUNK <= ferry_proto::MAX_DATA);

/// Files larger than this travel as chunked content; smaller ones whole.
pub const CHUNKED_MIN_SIZE: u64 = MAX_CHUNK as u64;

/// One chunk of a file: its length and the blake3 of its bytes.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ChunkInfo {
    pub len: u32,
    pub hash: Hash,
}

/// Bytes per chunk in an encoded chunk list.
const ENCODED_LEN: usize = 4 + 32;

/// Encodes a chunk list for storage: per chunk its length (u32 LE) and hash.
pub fn encode_list(chunks: &[ChunkInfo]) -> Vec<u8> {
    let mut out = Vec::with_capacity(chunks.len() * ENCODED_LEN);
    for c in chunks {
        out.extend_from_slice(&c.len.to_le_bytes());
        out.extend_from_slice(&c.hash);
    }
    out
}

/// Decodes what [`encode_list`] wrote; `None` if the bytes are not a list.
pub fn decode_list(bytes: &[u8]) -> Option<Vec<ChunkInfo>> {
    if !bytes.len().is_multiple_of(ENCODED_LEN) {
        return None;
    }
    bytes
        .chunks_exact(ENCODED_LEN)
        .map(|b| {
            let len = u32::from_le_bytes(b[..4].try_into().ok()?);
            let hash = Hash::try_from(&b[4..]).ok()?;
            // One `Data` message at most: a chunk of a plain file, or a
            // piece of a sealed folder's chunked object (a little longer).
            (len as usize <= ferry_proto::MAX_DATA).then_some(ChunkInfo { len, hash })
        })
        .collect()
}

/// The length of the next chunk at the start of `data`. `data` must hold at
/// least [`MAX_CHUNK`] bytes unless it is the rest of the file.
pub fn cut(data: &[u8]) -> usize {
    cut_with(data, None)
}

/// A keyed chunker's gear tables (FastCDC's, XORed with a seed): a sealed
/// folder's chunk boundaries depend on its key, so the sizes of what the
/// receiver stores do not fingerprint a known file.
#[derive(Debug)]
pub struct Gear {
    gear: Box<[u64; 256]>,
    gear_ls: Box<[u64; 256]>,
}

impl Gear {
    pub fn seeded(seed: u64) -> Gear {
        let (gear, gear_ls) = fastcdc::v2020::get_gear_with_seed(seed);
        Gear { gear, gear_ls }
    }
}

/// FastCDC's own tables (a seed of 0 leaves them as they are).
static DEFAULT_GEAR: std::sync::LazyLock<Gear> = std::sync::LazyLock::new(|| Gear::seeded(0));

/// [`cut`] with `gear`'s tables (`None`: FastCDC's own).
pub fn cut_with(data: &[u8], gear: Option<&Gear>) -> usize {
    let g = gear.unwrap_or(&DEFAULT_GEAR);
    let bits = fastcdc::v2020::logarithm2(AVG_CHUNK as u32);
    // Normalization level 1, as fastcdc::v2020::FastCDC::new uses.
    let mask_s = fastcdc::v2020::MASKS[(bits + 1) as usize];
    let mask_l = fastcdc::v2020::MASKS[(bits - 1) as usize];
    let (_, len) = fastcdc::v2020::cut_gear(
        data,
        MIN_CHUNK,
        AVG_CHUNK,
        MAX_CHUNK,
        mask_s,
        mask_l,
        mask_s << 1,
        mask_l << 1,
        &g.gear,
        &g.gear_ls,
    );
    len
}

/// Reads a file as content-defined chunks, with one buffer and no copy per
/// chunk beyond moving the unread tail forward now and then.
pub struct Chunker<R> {
    source: R,
    gear: Option<std::sync::Arc<Gear>>,
    buf: Vec<u8>,
    start: usize,
    end: usize,
    eof: bool,
}

/// Size of the read buffer.
const BUFFER: usize = 4 * MAX_CHUNK;

impl<R: Read> Chunker<R> {
    pub fn new(source: R) -> Chunker<R> {
        Chunker::keyed(source, None)
    }

    /// A chunker cutting with `gear` (`None`: FastCDC's own tables).
    pub fn keyed(source: R, gear: Option<std::sync::Arc<Gear>>) -> Chunker<R> {
        Chunker {
            source,
            gear,
            buf: vec![0; BUFFER],
            start: 0,
            end: 0,
            eof: false,
        }
    }

    /// The next chunk, or `None` at the end of the file.
    pub fn next_chunk(&mut self) -> io::Result<Option<&[u8]>> {
        if self.end - self.start < MAX_CHUNK && !self.eof {
            self.buf.copy_within(self.start..self.end, 0);
            self.end -= self.start;
            self.start = 0;
            while self.end < self.buf.len() && !self.eof {
                match self.source.read(&mut self.buf[self.end..]) {
                    Ok(0) => self.eof = true,
                    Ok(n) => self.end += n,
                    Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
                    Err(e) => return Err(e),
                }
            }
        }
        if self.start == self.end {
            return Ok(None);
        }
        let len = cut_with(&self.buf[self.start..self.end], self.gear.as_deref());
        let chunk = &self.buf[self.start..self.start + len];
        self.start += len;
        Ok(Some(chunk))
    }

    /// The reader, e.g. to check the file after the last chunk.
    pub fn source(&self) -> &R {
        &self.source
    }
}

/// The chunk list of `data`, cut as [`Chunker`] cuts a file.
pub fn chunk_list(data: &[u8]) -> Vec<ChunkInfo> {
    let mut out = Vec::new();
    let mut rest = data;
    while !rest.is_empty() {
        let len = cut(rest);
        out.push(ChunkInfo {
            len: len as u32,
            hash: *blake3::hash(&rest[..len]).as_bytes(),
        });
        rest = &rest[len..];
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::Arc;

    fn random(len: usize, seed: u8) -> Vec<u8> {
        let mut out = vec![0u8; len];
        blake3::Hasher::new()
            .update(&[seed])
            .finalize_xof()
            .fill(&mut out);
        out
    }

    fn lens(data: &[u8]) -> Vec<usize> {
        let mut chunker = Chunker::new(data);
        let mut out = Vec::new();
        while let Some(c) = chunker.next_chunk().unwrap() {
            out.push(c.len());
        }
        out
    }

    #[test]
    fn chunks_cover_the_file_within_bounds() {
        let data = random(3 << 20, 1);
        let lens = lens(&data);
        assert_eq!(lens.iter().sum::<usize>(), data.len());
        let (last, body) = lens.split_last().unwrap();
        assert!(body.iter().all(|&l| (MIN_CHUNK..=MAX_CHUNK).contains(&l)));
        assert!(*last <= MAX_CHUNK);
        let avg = data.len() / lens.len();
        assert!((AVG_CHUNK / 2..AVG_CHUNK * 2).contains(&avg), "avg {avg}");
        // The streaming chunker cuts where the whole-buffer one does.
        let list = chunk_list(&data);
        assert_eq!(
            list.iter().map(|c| c.len as usize).collect::<Vec<_>>(),
            lens
        );
    }

    #[test]
    fn an_insertion_changes_only_nearby_chunks() {
        let data = random(4 << 20, 2);
        let mut edited = vec![0x55];
        edited.extend_from_slice(&data);
        let before = chunk_list(&data);
        let after = chunk_list(&edited);
        let known: std::collections::HashSet<_> = before.iter().map(|c| c.hash).collect();
        let new = after.iter().filter(|c| !known.contains(&c.hash)).count();
        assert!(new <= 2, "{new} of {} chunks changed", after.len());
    }

    #[test]
    fn lists_round_trip_and_garbage_is_refused() {
        let list = chunk_list(&random(1 << 20, 3));
        assert_eq!(decode_list(&encode_list(&list)).unwrap(), list);
        assert!(decode_list(&[1, 2, 3]).is_none());
        let mut too_long = encode_list(&list[..1]);
        too_long[..4].copy_from_slice(&(ferry_proto::MAX_DATA as u32 + 1).to_le_bytes());
        assert!(decode_list(&too_long).is_none());
        assert!(chunk_list(&[]).is_empty());
    }

    #[test]
    fn a_keyed_chunker_cuts_elsewhere_and_resynchronises_after_an_edit() {
        let data = random(2 << 20, 9);
        let cuts = |gear: Option<Arc<Gear>>| {
            let mut chunker = Chunker::keyed(&data[..], gear);
            let mut lens = Vec::new();
            while let Some(c) = chunker.next_chunk().unwrap() {
                assert!(c.len() <= MAX_CHUNK);
                lens.push(c.len());
            }
            lens
        };
        let one = Some(Arc::new(Gear::seeded(0x1234_5678_9abc_def0)));
        let other = Some(Arc::new(Gear::seeded(42)));
        assert_eq!(cuts(one.clone()), cuts(one.clone()));
        assert_ne!(cuts(one.clone()), cuts(None));
        assert_ne!(cuts(one.clone()), cuts(other));
        assert_eq!(cuts(one).iter().sum::<usize>(), data.len());
        // The sealed format's bounds are the chunker's.
        assert_eq!(MAX_CHUNK, ferry_proto::seal::MAX_CHUNK);
        assert_eq!(MIN_CHUNK, ferry_proto::seal::MIN_CHUNK);
    }
}
