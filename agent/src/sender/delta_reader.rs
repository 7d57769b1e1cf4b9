//! Reading a large file as a delta against a base the receiver holds, on a
//! blocking thread: cut with FastCDC while it is read (once), each chunk
//! either copied from the base (consecutive ones as one `Copy`) or sent,
//! compressed when that shrinks it, all framed for the file stream
//! ([`super::file_stream`]) to write. The base is the chunk list last
//! acknowledged for the same path, or for a file that started with the same
//! chunk (a rename or a copy).

use std::collections::HashMap;
use std::sync::{Arc, Mutex};

use ferry_proto::frame::{self, FrameError};
use ferry_proto::{Base, Content, Entry, EntryKind, Go, Hash, Message, MAX_DATA};
use tokio::sync::mpsc;

use super::source_file::{
    begin_copy, open, prefix_matches, unchanged, ContentBytes, FileStat, SourceError,
};
use crate::chunk::{ChunkInfo, Chunker};
use crate::compress::{self, CompressMode};
use crate::copies::{Copies, CopyWriter};
use crate::index::{ChunkRecord, Index, IndexError};
use crate::scan::{ScanEntry, SourceDir};
use crate::sparse::HoleReader;

/// Why a file could not be read as a delta.
#[derive(Debug, thiserror::Error)]
pub enum DeltaError {
    #[error(transparent)]
    Source(#[from] SourceError),
    #[error("could not look up the base in the index")]
    Base(#[source] IndexError),
    #[error("the index is unusable: a thread panicked while holding it")]
    IndexPoisoned,
    #[error("could not frame the content")]
    Frame(#[from] FrameError),
    /// A sealed folder's chunked object could not be sealed.
    #[error("cannot be sealed")]
    Seal(#[source] ferry_proto::seal::SealError),
    /// The stream ended before the receiver's `Go` (it reports why).
    #[error("no answer to the chunked entry")]
    NoGo,
}

/// A base found in the index: its path, content hash and chunks.
pub(super) type FoundBase = Option<(ferry_proto::RelPath, Hash, Vec<ChunkInfo>)>;

/// The base for chunked content of `path` whose first chunk is `first`
/// ([`Index::base_for`]), if the index is open.
pub(super) fn find_base(
    index: &Mutex<Option<Index>>,
    path: &ferry_proto::RelPath,
    first: &Hash,
) -> Result<FoundBase, DeltaError> {
    let slot = index.lock().map_err(|_| DeltaError::IndexPoisoned)?;
    match slot.as_ref() {
        Some(index) => index.base_for(path, first).map_err(DeltaError::Base),
        None => Ok(None),
    }
}

/// The base's chunks `Copy` may name, by hash, when the receiver holds the
/// base (`go.base`): each hash's first index.
pub(super) fn copyable(go: &Go, base: &FoundBase) -> HashMap<Hash, u32> {
    let mut known = HashMap::new();
    if let (true, Some((_, _, chunks))) = (go.base, base) {
        for (i, c) in chunks.iter().enumerate() {
            known.entry(c.hash).or_insert(i as u32);
        }
    }
    known
}

/// Frames are handed to the stream in batches of about this size.
const FRAME_BATCH: usize = 512 << 10;
/// Room for a batch: at most [`FRAME_BATCH`] bytes before its last frame,
/// which holds at most [`MAX_DATA`] bytes of content and a few of header.
/// Reserved up front, a batch is never moved while it grows.
const FRAME_CAPACITY: usize = FRAME_BATCH + MAX_DATA + 64;

/// What the reading thread hands the stream.
pub(super) enum Out {
    /// The `Entry` header: send it, then hand the receiver's `Go` back.
    Header(Vec<u8>),
    /// Encoded frames, the content they carry (before and after
    /// compression), and how many bytes of the file they stand for.
    Frames(Vec<u8>, ContentBytes, u64),
}

/// What reading a file as a delta found.
pub(super) struct DeltaRead {
    pub stat: FileStat,
    /// The content's hash (the index's, the local copy's).
    pub hash: Hash,
    /// What `End` carries: the hash of what the receiver stores (the
    /// content's, or a sealed object's).
    pub end: Hash,
    /// What the receiver stores, as the base of the next delta.
    pub record: Option<ChunkRecord>,
    pub copy: Option<CopyWriter>,
}

/// Everything the reading thread needs.
pub(super) struct DeltaReader {
    /// The source root the file is read through.
    pub source: Arc<SourceDir>,
    /// The file as scanned.
    pub entry: ScanEntry,
    pub copies: Option<Arc<Copies>>,
    pub index: Arc<Mutex<Option<Index>>>,
    pub use_base: bool,
    pub compress: CompressMode,
}

/// Frames being gathered for the stream.
pub(super) struct Batch<'a> {
    tx: &'a mpsc::Sender<Out>,
    frames: Vec<u8>,
    content: ContentBytes,
    /// Bytes of the file the gathered frames stand for.
    pub covered: u64,
    /// A run of base chunks not yet written as `Copy`.
    run: Option<(u32, u32)>,
    /// Chunks in a row that did not compress, and chunks sent.
    misses: u32,
    sent: u64,
}

/// After this many chunks in a row that did not compress, only every
/// [`RETRY_EVERY`]th chunk is tried: a file of media or archives costs
/// almost no compression work.
const GIVE_UP_AFTER: u32 = 8;
const RETRY_EVERY: u64 = 16;

impl Drop for Batch<'_> {
    /// The last batch's buffer (reserved at the last flush, or unsent when
    /// the read failed) goes back for the next file.
    fn drop(&mut self) {
        crate::memory::FRAMES.recycle(std::mem::take(&mut self.frames));
    }
}

impl<'a> Batch<'a> {
    pub fn new(tx: &'a mpsc::Sender<Out>) -> Batch<'a> {
        Batch {
            tx,
            frames: crate::memory::FRAMES.take(FRAME_CAPACITY),
            content: ContentBytes { fresh: 0, wire: 0 },
            covered: 0,
            run: None,
            misses: 0,
            sent: 0,
        }
    }

    pub fn message(&mut self, message: &Message) -> Result<(), DeltaError> {
        self.frames.extend_from_slice(&frame::encode(message)?);
        Ok(())
    }

    pub fn copy(&mut self, index: u32) -> Result<(), DeltaError> {
        match &mut self.run {
            Some((start, count)) if *start + *count == index => *count += 1,
            _ => {
                self.end_run()?;
                self.run = Some((index, 1));
            }
        }
        Ok(())
    }

    pub fn end_run(&mut self) -> Result<(), DeltaError> {
        if let Some((start, count)) = self.run.take() {
            self.message(&Message::Copy { start, count })?;
        }
        Ok(())
    }

    fn data(&mut self, data: &[u8], mode: CompressMode) -> Result<(), DeltaError> {
        self.end_run()?;
        self.sent += 1;
        let skip = mode == CompressMode::Auto
            && self.misses >= GIVE_UP_AFTER
            && !self.sent.is_multiple_of(RETRY_EVERY);
        let packed = if skip {
            None
        } else {
            compress::compress(data, mode)
        };
        if packed.is_some() {
            self.misses = 0;
        } else if !skip {
            self.misses += 1;
        }
        self.content.fresh += data.len() as u64;
        match packed {
            Some(packed) => {
                self.content.wire += packed.len() as u64;
                self.message(&Message::DataZstd(packed))?;
            }
            None => self.raw(data, 0)?,
        }
        self.full()
    }

    /// Sends `bytes` as they are (one `Data` message), standing for
    /// `fresh` more bytes of new content.
    pub fn raw(&mut self, bytes: &[u8], fresh: u64) -> Result<(), DeltaError> {
        self.end_run()?;
        self.content.fresh += fresh;
        self.content.wire += bytes.len() as u64;
        self.frames
            .extend_from_slice(&frame::data_header(bytes.len())?);
        self.frames.extend_from_slice(bytes);
        self.full()
    }

    /// Hands the frames over once there are enough of them.
    fn full(&mut self) -> Result<(), DeltaError> {
        if self.frames.len() >= FRAME_BATCH {
            self.flush()?;
        }
        Ok(())
    }

    pub fn flush(&mut self) -> Result<(), DeltaError> {
        if self.frames.is_empty() {
            return Ok(());
        }
        let frames =
            std::mem::replace(&mut self.frames, crate::memory::FRAMES.take(FRAME_CAPACITY));
        let content = std::mem::replace(&mut self.content, ContentBytes { fresh: 0, wire: 0 });
        let covered = std::mem::take(&mut self.covered);
        self.tx
            .blocking_send(Out::Frames(frames, content, covered))
            .map_err(|_| DeltaError::Source(SourceError::StreamGone))
    }
}

impl DeltaReader {
    /// Reads the file as chunks and hands the frames to `tx`: first the
    /// header, then (after `go`) the content. Fails if the file changes
    /// while it is read.
    pub fn run(
        self,
        tx: mpsc::Sender<Out>,
        go: std::sync::mpsc::Receiver<Go>,
    ) -> Result<DeltaRead, DeltaError> {
        let (file, stat) = open(&self.source, &self.entry)?;
        let rel = &self.entry.path;
        let mut copy = begin_copy(self.copies.as_deref(), &self.entry)?;
        // Holes come from memory: a sparse file's are not paged in.
        let mut chunker = Chunker::new(HoleReader::new(&file));
        let first: Vec<u8> = chunker
            .next_chunk()
            .map_err(SourceError::Read)?
            .map(<[u8]>::to_vec)
            .unwrap_or_default();
        let first_hash = *blake3::hash(&first).as_bytes();
        let base = match self.use_base {
            true => find_base(&self.index, rel, &first_hash)?,
            false => None,
        };
        let header = Entry {
            path: rel.clone(),
            kind: EntryKind::File {
                size: stat.size,
                content: Content::Chunked {
                    base: base.as_ref().map(|(path, hash, _)| Base {
                        path: path.clone(),
                        hash: *hash,
                    }),
                },
            },
            mtime_ns: stat.mtime_ns,
            mode: stat.mode,
        };
        let header = frame::encode(&Message::Entry(header))?;
        tx.blocking_send(Out::Header(header))
            .map_err(|_| SourceError::StreamGone)?;
        let Ok(go) = go.recv() else {
            return Err(DeltaError::NoGo);
        };
        let known = copyable(&go, &base);
        let mut batch = Batch::new(&tx);
        let mut keep = 0;
        if let Some(resume) = &go.resume {
            if resume.len <= stat.size && prefix_matches(&file, resume.len, &resume.hash)? {
                keep = resume.len;
                batch.message(&Message::Keep { len: keep })?;
            }
        }
        let mut whole = blake3::Hasher::new();
        let mut chunks = Vec::new();
        let mut at = 0u64;
        let mut chunk: &[u8] = &first;
        loop {
            if chunk.is_empty() {
                break;
            }
            let hash = *blake3::hash(chunk).as_bytes();
            whole.update(chunk);
            if let Some(copy) = copy.as_mut() {
                copy.write(chunk).map_err(SourceError::Copy)?;
            }
            chunks.push(ChunkInfo {
                len: chunk.len() as u32,
                hash,
            });
            let end = at + chunk.len() as u64;
            if end > stat.size {
                return Err(SourceError::Changed.into());
            }
            if end <= keep {
                // Already on the receiver.
            } else if at < keep {
                batch.data(&chunk[(keep - at) as usize..], self.compress)?;
            } else if let Some(&i) = known.get(&hash) {
                batch.copy(i)?;
            } else {
                batch.data(chunk, self.compress)?;
            }
            batch.covered += chunk.len() as u64;
            at = end;
            chunk = match chunker.next_chunk().map_err(SourceError::Read)? {
                Some(next) => next,
                None => break,
            };
        }
        batch.end_run()?;
        batch.flush()?;
        unchanged(&file, &stat, at)?;
        let hash = *whole.finalize().as_bytes();
        Ok(DeltaRead {
            stat,
            hash,
            end: hash,
            record: ChunkRecord::plain(rel.clone(), hash, chunks),
            copy,
        })
    }
}
