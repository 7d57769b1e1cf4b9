//! Sending a large file as chunked content: cut with FastCDC while it is
//! read (once), each chunk either copied from the base the receiver holds
//! (consecutive ones as one `Copy`) or sent, compressed when that shrinks
//! it. The base is the chunk list last acknowledged for the same path, or
//! for a file that started with the same chunk (a rename or a copy).

use std::collections::HashMap;
use std::fs::File;
use std::os::unix::fs::FileExt;
use std::sync::{Arc, Mutex};

use ferry_proto::frame;
use ferry_proto::{Base, Content, Entry, EntryKind, Go, Hash, Message};
use tokio::sync::mpsc;

use super::transfer::{fstat, open, ContentBytes, EntryError, FileStat};
use crate::chunk::{ChunkInfo, Chunker};
use crate::compress::{self, CompressMode};
use crate::copies::{Copies, CopyWriter};
use crate::index::Index;
use crate::scan::{ScanEntry, SourceDir};
use crate::sparse::HoleReader;
use crate::stream::StreamError;

/// Frames are handed to the stream in batches of about this size.
const FRAME_BATCH: usize = 512 << 10;

/// What the reading thread hands the stream.
pub(super) enum Out {
    /// The `Entry` header: send it, then hand the receiver's `Go` back.
    Header(Vec<u8>),
    /// Encoded frames, the content they carry (before and after
    /// compression), and how many bytes of the file they stand for.
    Frames(Vec<u8>, ContentBytes, u64),
}

/// The result of reading and sending a file as chunks.
pub(super) struct ChunkedRead {
    pub stat: FileStat,
    pub hash: Hash,
    pub chunks: Vec<ChunkInfo>,
    pub copy: Option<CopyWriter>,
}

/// Everything the reading thread needs.
pub(super) struct Reader {
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
struct Batch<'a> {
    tx: &'a mpsc::Sender<Out>,
    frames: Vec<u8>,
    content: ContentBytes,
    /// Bytes of the file the gathered frames stand for.
    covered: u64,
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

impl Batch<'_> {
    fn message(&mut self, message: &Message) -> Result<(), EntryError> {
        self.frames
            .extend_from_slice(&frame::encode(message).map_err(StreamError::from)?);
        Ok(())
    }

    fn copy(&mut self, index: u32) -> Result<(), EntryError> {
        match &mut self.run {
            Some((start, count)) if *start + *count == index => *count += 1,
            _ => {
                self.end_run()?;
                self.run = Some((index, 1));
            }
        }
        Ok(())
    }

    fn end_run(&mut self) -> Result<(), EntryError> {
        if let Some((start, count)) = self.run.take() {
            self.message(&Message::Copy { start, count })?;
        }
        Ok(())
    }

    fn data(&mut self, data: &[u8], mode: CompressMode) -> Result<(), EntryError> {
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
            None => {
                self.content.wire += data.len() as u64;
                self.frames
                    .extend_from_slice(&frame::data_header(data.len()).map_err(StreamError::from)?);
                self.frames.extend_from_slice(data);
            }
        }
        if self.frames.len() >= FRAME_BATCH {
            self.flush()?;
        }
        Ok(())
    }

    fn flush(&mut self) -> Result<(), EntryError> {
        if self.frames.is_empty() {
            return Ok(());
        }
        let frames = std::mem::take(&mut self.frames);
        let content = std::mem::replace(&mut self.content, ContentBytes { fresh: 0, wire: 0 });
        let covered = std::mem::take(&mut self.covered);
        self.tx
            .blocking_send(Out::Frames(frames, content, covered))
            .map_err(|_| EntryError::Internal("stream closed while reading".into()))
    }
}

/// True if the first `len` bytes of `file` hash to `hash`.
fn prefix_matches(file: &File, len: u64, hash: &Hash) -> Result<bool, EntryError> {
    let mut hasher = blake3::Hasher::new();
    let mut buf = vec![0u8; 1 << 20];
    let mut at = 0u64;
    while at < len {
        let n = (len - at).min(buf.len() as u64) as usize;
        match file.read_exact_at(&mut buf[..n], at) {
            Ok(()) => {}
            Err(e) if e.kind() == std::io::ErrorKind::UnexpectedEof => return Ok(false),
            Err(e) => return Err(EntryError::Read(e)),
        }
        hasher.update(&buf[..n]);
        at += n as u64;
    }
    Ok(hasher.finalize().as_bytes() == hash)
}

impl Reader {
    /// Reads the file as chunks and hands the frames to `tx`: first the
    /// header, then (after `go`) the content. Fails if the file changes
    /// while it is read.
    pub fn run(
        self,
        tx: mpsc::Sender<Out>,
        go: std::sync::mpsc::Receiver<Go>,
    ) -> Result<ChunkedRead, EntryError> {
        let (file, stat) = open(&self.source, &self.entry)?;
        let rel = &self.entry.path;
        let mut copy = match &self.copies {
            Some(copies) => Some(
                copies
                    .begin(rel)
                    .map_err(|e| EntryError::Copy(crate::chain::chain(&e)))?,
            ),
            None => None,
        };
        // Holes come from memory: a sparse file's are not paged in.
        let mut chunker = Chunker::new(HoleReader::new(&file));
        let first: Vec<u8> = chunker
            .next_chunk()
            .map_err(EntryError::Read)?
            .map(<[u8]>::to_vec)
            .unwrap_or_default();
        let first_hash = *blake3::hash(&first).as_bytes();
        let base = if self.use_base {
            let slot = self
                .index
                .lock()
                .map_err(|_| EntryError::Internal("index lock".into()))?;
            match slot.as_ref() {
                Some(index) => index
                    .base_for(rel, &first_hash)
                    .map_err(|e| EntryError::Internal(crate::chain::chain(&e)))?,
                None => None,
            }
        } else {
            None
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
        let header = frame::encode(&Message::Entry(header)).map_err(StreamError::from)?;
        tx.blocking_send(Out::Header(header))
            .map_err(|_| EntryError::Internal("stream closed while reading".into()))?;
        let Ok(go) = go.recv() else {
            return Err(EntryError::Internal(
                "no answer to the chunked entry".into(),
            ));
        };
        let mut known: HashMap<Hash, u32> = HashMap::new();
        if let (true, Some((_, _, chunks))) = (go.base, &base) {
            for (i, c) in chunks.iter().enumerate() {
                known.entry(c.hash).or_insert(i as u32);
            }
        }
        let mut batch = Batch {
            tx: &tx,
            frames: Vec::new(),
            content: ContentBytes { fresh: 0, wire: 0 },
            covered: 0,
            run: None,
            misses: 0,
            sent: 0,
        };
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
                copy.write(chunk)
                    .map_err(|e| EntryError::Copy(crate::chain::chain(&e)))?;
            }
            chunks.push(ChunkInfo {
                len: chunk.len() as u32,
                hash,
            });
            let end = at + chunk.len() as u64;
            if end > stat.size {
                return Err(EntryError::Changed);
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
            chunk = match chunker.next_chunk().map_err(EntryError::Read)? {
                Some(next) => next,
                None => break,
            };
        }
        batch.end_run()?;
        batch.flush()?;
        let (now, _) = fstat(&file).map_err(EntryError::Read)?;
        if at != stat.size || now != stat {
            return Err(EntryError::Changed);
        }
        Ok(ChunkedRead {
            stat,
            hash: *whole.finalize().as_bytes(),
            chunks,
            copy,
        })
    }
}
