//! A large file of a sealed folder as a **chunked object**
//! ([`ferry_proto::seal`], "Chunked objects"), read on a blocking thread:
//! cut with the folder's keyed chunker, each chunk compressed when that
//! shrinks it and sealed deterministically, each piece sent as one `Data`
//! message, or named as a `Copy` of the previous object's piece when the
//! index lists the same piece id there (same path, or a rename or copy found
//! by the first data piece). A resumed transfer skips the object's kept
//! prefix when it is the same bytes (the object is deterministic up to its
//! trailer). The entry announces the object's bound, not its length
//! ([`ferry_proto::Content::ChunkedUpTo`]): that is known only at its end.

use std::fs::File;
use std::sync::{Arc, Mutex};

use ferry_proto::frame;
use ferry_proto::seal::{ChunkedSealer, Piece, SealError};
use ferry_proto::{Base, Content, Entry, EntryKind, Go, Hash, Message, MAX_DATA};
use tokio::sync::mpsc;

use super::delta_reader::{copyable, find_base, Batch, DeltaError, DeltaRead, Out};
use super::sealed::{header, Sealing, OBJECT_MODE};
use super::source_file::{begin_copy, open, unchanged, FileStat, SourceError};
use crate::chunk::{ChunkInfo, Chunker};
use crate::compress::{self, CompressMode};
use crate::copies::{Copies, CopyWriter};
use crate::index::{ChunkRecord, Index};
use crate::scan::{ScanEntry, SourceDir};
use crate::sparse::HoleReader;

/// Everything the reading thread needs.
pub(super) struct SealedDeltaReader {
    pub source: Arc<SourceDir>,
    pub entry: ScanEntry,
    pub copies: Option<Arc<Copies>>,
    pub index: Arc<Mutex<Option<Index>>>,
    pub use_base: bool,
    pub compress: CompressMode,
    pub seal: Arc<Sealing>,
}

/// The pieces of one chunked object, in order, as the file is read.
struct Pieces<'a> {
    chunker: Chunker<HoleReader<&'a File>>,
    sealer: Option<ChunkedSealer>,
    ready: std::collections::VecDeque<Piece>,
    compress: CompressMode,
    /// The content's hash and the local copy, on the pass that sends.
    content: Option<blake3::Hasher>,
    copy: Option<CopyWriter>,
    /// Content bytes read.
    read: u64,
}

impl<'a> Pieces<'a> {
    fn new(
        seal: &Sealing,
        file: &'a File,
        stat: &FileStat,
        entry: &ScanEntry,
        compress: CompressMode,
    ) -> Result<Pieces<'a>, DeltaError> {
        let mut sealer = ChunkedSealer::new(seal.public(), seal.run(), &header(entry, Some(stat)))
            .map_err(DeltaError::Seal)?;
        let mut ready = std::collections::VecDeque::new();
        ready.extend(sealer.take_front());
        Ok(Pieces {
            chunker: Chunker::keyed(HoleReader::new(file), Some(seal.gear())),
            sealer: Some(sealer),
            ready,
            compress,
            content: None,
            copy: None,
            read: 0,
        })
    }

    /// The next piece, or `None` after the trailer.
    fn next(&mut self) -> Result<Option<Piece>, DeltaError> {
        loop {
            if let Some(piece) = self.ready.pop_front() {
                return Ok(Some(piece));
            }
            let Some(sealer) = self.sealer.as_mut() else {
                return Ok(None);
            };
            let mut out = Vec::new();
            match self.chunker.next_chunk().map_err(SourceError::Read)? {
                Some(chunk) => {
                    self.read += chunk.len() as u64;
                    if let Some(hasher) = self.content.as_mut() {
                        hasher.update(chunk);
                    }
                    if let Some(copy) = self.copy.as_mut() {
                        copy.write(chunk).map_err(SourceError::Copy)?;
                    }
                    let packed = compress::compress(chunk, self.compress);
                    sealed(sealer.push(chunk, packed.as_deref(), &mut out))?;
                }
                None => match self.sealer.take() {
                    Some(sealer) => sealed(sealer.finish(&mut out))?,
                    None => return Ok(None),
                },
            }
            self.ready.extend(out);
        }
    }

    /// The first data piece's id (what a rename is found by): the piece
    /// after the front. Consumes both.
    fn first_data_id(&mut self) -> Result<Option<Hash>, DeltaError> {
        let _front = self.next()?;
        Ok(self.next()?.map(|p| p.id))
    }
}

impl SealedDeltaReader {
    /// Reads the file as a chunked object and hands the frames to `tx`:
    /// first the header, then (after `go`) the pieces. Fails if the file
    /// changes while it is read.
    pub fn run(
        self,
        tx: mpsc::Sender<Out>,
        go: std::sync::mpsc::Receiver<Go>,
    ) -> Result<DeltaRead, DeltaError> {
        let (file, stat) = open(&self.source, &self.entry)?;
        let opaque = self.seal.opaque_path(&self.entry.path);
        let sealed_header = header(&self.entry, Some(&stat));
        let bound = ChunkedSealer::max_len(&sealed_header).map_err(DeltaError::Seal)?;

        // The first data piece names the base (a rename's too): found with
        // a pass of its own over the first chunk.
        let first =
            Pieces::new(&self.seal, &file, &stat, &self.entry, self.compress)?.first_data_id()?;
        let base = match (self.use_base, first) {
            (true, Some(first)) => find_base(&self.index, &opaque, &first)?,
            _ => None,
        };
        let header = Entry {
            path: opaque.clone(),
            kind: EntryKind::File {
                size: bound,
                content: Content::ChunkedUpTo {
                    base: base.as_ref().map(|(path, hash, _)| Base {
                        path: path.clone(),
                        hash: *hash,
                    }),
                },
            },
            mtime_ns: 0,
            mode: OBJECT_MODE,
        };
        tx.blocking_send(Out::Header(frame::encode(&Message::Entry(header))?))
            .map_err(|_| SourceError::StreamGone)?;
        let Ok(go) = go.recv() else {
            return Err(DeltaError::NoGo);
        };
        let known = copyable(&go, &base);
        let mut batch = Batch::new(&tx);
        let keep = match &go.resume {
            Some(resume) if self.prefix_matches(&file, &stat, resume.len, &resume.hash)? => {
                batch.message(&Message::Keep { len: resume.len })?;
                resume.len
            }
            _ => 0,
        };

        let mut pieces = Pieces::new(&self.seal, &file, &stat, &self.entry, self.compress)?;
        pieces.content = Some(blake3::Hasher::new());
        pieces.copy = begin_copy(self.copies.as_deref(), &self.entry)?;
        let mut object = blake3::Hasher::new();
        let mut list = Vec::new();
        let mut at = 0u64;
        while let Some(piece) = pieces.next()? {
            object.update(&piece.bytes);
            let len = piece.bytes.len() as u64;
            let end = at + len;
            batch.covered += piece.content;
            if end <= keep {
                // Already on the receiver, as one chunk of its list.
                list.push(info(&piece.bytes, piece.id));
            } else if at < keep {
                // Kept in part (the kept prefix ends inside this piece):
                // the rest goes as a chunk of its own, listed as sent.
                let cut = (keep - at) as usize;
                let (kept, rest) = piece.bytes.split_at(cut);
                list.push(info(kept, *blake3::hash(kept).as_bytes()));
                list.push(info(rest, *blake3::hash(rest).as_bytes()));
                batch.raw(rest, piece.content)?;
            } else if let Some(&i) = known.get(&piece.id) {
                list.push(info(&piece.bytes, piece.id));
                batch.copy(i)?;
            } else if piece.bytes.len() <= MAX_DATA {
                list.push(info(&piece.bytes, piece.id));
                batch.raw(&piece.bytes, piece.content)?;
            } else {
                // Only a trailer can be longer than a message (a file of
                // many GiB): sent as several chunks, never copied.
                for part in piece.bytes.chunks(MAX_DATA) {
                    list.push(info(part, *blake3::hash(part).as_bytes()));
                    batch.raw(part, 0)?;
                }
            }
            at = end;
        }
        batch.end_run()?;
        batch.flush()?;
        unchanged(&file, &stat, pieces.read)?;
        let hash = pieces
            .content
            .take()
            .map(|h| *h.finalize().as_bytes())
            .unwrap_or_default();
        let object = *object.finalize().as_bytes();
        let record = ChunkRecord {
            path: opaque,
            hash: object,
            first: first.unwrap_or(object),
            list,
        };
        Ok(DeltaRead {
            stat,
            hash,
            end: object,
            record: Some(record),
            copy: pieces.copy.take(),
        })
    }

    /// True if the object's first `len` bytes hash to `hash`: what the
    /// receiver kept of an interrupted transfer is this object's prefix.
    fn prefix_matches(
        &self,
        file: &File,
        stat: &FileStat,
        len: u64,
        hash: &Hash,
    ) -> Result<bool, DeltaError> {
        let mut pieces = Pieces::new(&self.seal, file, stat, &self.entry, self.compress)?;
        let mut hasher = blake3::Hasher::new();
        let mut at = 0u64;
        while at < len {
            let Some(piece) = pieces.next()? else {
                return Ok(false);
            };
            let take = (len - at).min(piece.bytes.len() as u64) as usize;
            hasher.update(&piece.bytes[..take]);
            at += take as u64;
        }
        Ok(hasher.finalize().as_bytes() == hash)
    }
}

/// What sealing a chunk came to: content other than the file's size as
/// opened means the file changed while it was read.
fn sealed(result: Result<(), SealError>) -> Result<(), DeltaError> {
    match result {
        Err(SealError::SizeMismatch { .. }) => Err(SourceError::Changed.into()),
        other => other.map_err(DeltaError::Seal),
    }
}

/// A chunk of the receiver's list: `bytes` long, known by `id`.
fn info(bytes: &[u8], id: Hash) -> ChunkInfo {
    ChunkInfo {
        // A piece or part is at most MAX_DATA bytes.
        len: bytes.len() as u32,
        hash: id,
    }
}
