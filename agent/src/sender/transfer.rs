//! Sending one entry on its own QUIC stream: the header, the content read on
//! a blocking thread (hashed and copied as it is read), and the receiver's
//! answer. A file that changes while it is read is aborted, never stored torn.

use std::fs::File;
use std::io::Read;
use std::os::unix::fs::MetadataExt;
use std::sync::Arc;

use ferry_proto::{Content, Entry, EntryKind, FailCode, Hash, Message, MAX_DATA};
use tokio::sync::mpsc;

use super::chunked::{ChunkedRead, Out, Reader};
use crate::chunk::{ChunkInfo, CHUNKED_MIN_SIZE};
use crate::compress::{self, CompressMode};
use crate::copies::{Copies, CopyWriter};
use crate::index::Index;
use crate::index::{Action, PlanItem};
use crate::scan::{mtime_ns, OpenError, ScanEntry, ScanKind, SourceDir};
use crate::sparse::HoleReader;
use crate::status::SenderStatus;
use crate::stream::{Channel, StreamError};

/// What was sent, for the index and the summary.
#[derive(Debug)]
pub struct Sent {
    /// The entry as it was when sent (for a file: as read, not as scanned).
    pub entry: ScanEntry,
    /// The content hash of a file.
    pub hash: Option<Hash>,
    pub kind: SentKind,
    /// The chunk list of a file sent as chunked content.
    pub chunks: Option<Vec<ChunkInfo>>,
}

/// How much of a file's content travelled.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ContentBytes {
    /// Bytes of content sent, before compression: the file's size less the
    /// chunks the receiver already had (or kept from an interrupted run).
    pub fresh: u64,
    /// What those bytes took on the wire, after compression.
    pub wire: u64,
}

/// How an entry travelled.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum SentKind {
    /// File content.
    Content(ContentBytes),
    /// Only metadata: the receiver held the content.
    MetadataOnly,
    Dir,
    Symlink,
}

/// Why one entry was not sent.
#[derive(Debug, thiserror::Error)]
pub enum EntryError {
    #[error("cannot read")]
    Read(#[source] std::io::Error),
    #[error("changed while being read; it will be sent on the next run")]
    Changed,
    #[error("is no longer a regular file")]
    NotAFile,
    /// Not opened: the path leads through a symlink now, or to another
    /// file than the one scanned.
    #[error(transparent)]
    Source(OpenError),
    #[error("the receiver did not store it: {0}")]
    Failed(String),
    #[error("the receiver's copy of the previous version is damaged: {0}")]
    BaseDamaged(String),
    #[error(transparent)]
    Stream(#[from] StreamError),
    #[error("connection lost")]
    Connection(#[from] quinn::ConnectionError),
    #[error("local copy: {0}")]
    Copy(String),
    #[error("internal error: {0}")]
    Internal(String),
}

impl From<OpenError> for EntryError {
    fn from(e: OpenError) -> EntryError {
        match e {
            OpenError::Io { source, .. } => EntryError::Read(source),
            OpenError::NotAFile { .. } => EntryError::NotAFile,
            other => EntryError::Source(other),
        }
    }
}

impl EntryError {
    /// True if the connection itself is gone (the run cannot go on).
    pub fn is_connection_lost(&self) -> bool {
        matches!(self, EntryError::Connection(_))
            || matches!(self, EntryError::Stream(e) if e.is_lost())
    }
}

/// Metadata of an open file, from `fstat`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) struct FileStat {
    pub size: u64,
    pub mtime_ns: i64,
    pub mode: u32,
    pub ino: u64,
    pub dev: u64,
}

pub(super) fn fstat(file: &File) -> std::io::Result<(FileStat, bool)> {
    let meta = file.metadata()?;
    let stat = FileStat {
        size: meta.len(),
        mtime_ns: mtime_ns(&meta),
        mode: meta.mode() & 0o7777,
        ino: meta.ino(),
        dev: meta.dev(),
    };
    Ok((stat, meta.is_file()))
}

/// Opens the file `scanned` describes for sending: relative to the source
/// root without following any symlink, without blocking on a FIFO that
/// replaced it since the scan, and only if it is still the file scanned
/// ([`SourceDir::open_scanned`]).
pub(super) fn open(
    source: &SourceDir,
    scanned: &ScanEntry,
) -> Result<(File, FileStat), EntryError> {
    let file = source.open_scanned(scanned)?;
    let (stat, is_file) = fstat(&file).map_err(EntryError::Read)?;
    if !is_file {
        return Err(EntryError::NotAFile);
    }
    Ok((file, stat))
}

/// Reads the whole file in `MAX_DATA` pieces into `tx`, hashing it and
/// writing the local copy; fails if the file changes meanwhile.
fn read_content(
    file: File,
    opened: FileStat,
    tx: mpsc::Sender<Vec<u8>>,
    mut copy: Option<CopyWriter>,
) -> Result<(Hash, Option<CopyWriter>), EntryError> {
    // Holes come from memory: a sparse file's are not paged in.
    let mut reader = HoleReader::new(&file);
    let mut hasher = blake3::Hasher::new();
    let mut total = 0u64;
    loop {
        let mut buf = vec![0u8; MAX_DATA];
        let mut filled = 0;
        while filled < buf.len() {
            match reader.read(&mut buf[filled..]) {
                Ok(0) => break,
                Ok(n) => filled += n,
                Err(e) if e.kind() == std::io::ErrorKind::Interrupted => {}
                Err(e) => return Err(EntryError::Read(e)),
            }
        }
        buf.truncate(filled);
        total += filled as u64;
        if total > opened.size {
            return Err(EntryError::Changed);
        }
        if filled == 0 {
            break;
        }
        hasher.update(&buf);
        if let Some(copy) = copy.as_mut() {
            copy.write(&buf)
                .map_err(|e| EntryError::Copy(crate::chain::chain(&e)))?;
        }
        if tx.blocking_send(buf).is_err() {
            // The sending side gave up (the stream failed); it reports why.
            return Err(EntryError::Internal("stream closed while reading".into()));
        }
    }
    let (now, _) = fstat(&file).map_err(EntryError::Read)?;
    if total != opened.size || now != opened {
        return Err(EntryError::Changed);
    }
    Ok((*hasher.finalize().as_bytes(), copy))
}

pub(super) async fn blocking<T: Send + 'static>(
    f: impl FnOnce() -> Result<T, EntryError> + Send + 'static,
) -> Result<T, EntryError> {
    tokio::task::spawn_blocking(f)
        .await
        .map_err(|e| EntryError::Internal(crate::chain::chain(&e)))?
}

/// Reads the receiver's final answer for an entry.
pub(super) async fn answer(channel: &mut Channel) -> Result<(), EntryError> {
    match channel.recv.recv_message().await? {
        Message::Stored => Ok(()),
        Message::Failed(f) if f.code == FailCode::BaseDamaged => {
            Err(EntryError::BaseDamaged(f.message))
        }
        Message::Failed(f) => Err(EntryError::Failed(f.message)),
        other => Err(StreamError::unexpected("Stored or Failed", &other).into()),
    }
}

/// Everything an entry transfer needs besides the entry.
pub struct TransferContext {
    pub conn: quinn::Connection,
    /// The source root, open: every file is read through it.
    pub source: Arc<SourceDir>,
    pub copies: Option<Arc<Copies>>,
    pub status: Arc<SenderStatus>,
    /// The index, for the chunk lists deltas are described against.
    pub index: Arc<std::sync::Mutex<Option<Index>>>,
    /// When to compress content.
    pub compress: CompressMode,
    /// The sender's bandwidth limit, shared by every stream of the process.
    pub limiter: Option<Arc<crate::ratelimit::RateLimiter>>,
}

/// Sends one planned entry and waits for the receiver's answer.
pub async fn send_entry(ctx: &TransferContext, item: PlanItem) -> Result<Sent, EntryError> {
    let mut channel = Channel::new(ctx.conn.open_bi().await?);
    channel.send.set_limiter(ctx.limiter.clone());
    let scanned = item.entry;
    let header = |kind| Entry {
        path: scanned.path.clone(),
        kind,
        mtime_ns: scanned.mtime_ns,
        mode: scanned.mode,
    };
    match (&scanned.kind, item.action) {
        (ScanKind::Dir, _) => {
            channel
                .send
                .send(&Message::Entry(header(EntryKind::Dir)))
                .await?;
            channel.send.finish();
            answer(&mut channel).await?;
            stored_dir_or_symlink(ctx, scanned, None).await
        }
        (ScanKind::Symlink { target }, _) => {
            let kind = EntryKind::Symlink {
                target: target.clone(),
            };
            channel.send.send(&Message::Entry(header(kind))).await?;
            channel.send.finish();
            answer(&mut channel).await?;
            let target = Some(target.clone());
            stored_dir_or_symlink(ctx, scanned, target).await
        }
        (ScanKind::File, Action::MetadataOnly { hash }) => {
            let kind = EntryKind::File {
                size: scanned.size,
                content: Content::Offer { hash },
            };
            channel.send.send(&Message::Entry(header(kind))).await?;
            match channel.recv.recv_message().await? {
                Message::Stored => {
                    channel.send.finish();
                    Ok(Sent {
                        entry: scanned,
                        hash: Some(hash),
                        kind: SentKind::MetadataOnly,
                        chunks: None,
                    })
                }
                Message::Want => send_content(ctx, channel, scanned, false).await,
                Message::Failed(f) => Err(EntryError::Failed(f.message)),
                other => Err(StreamError::unexpected("Stored, Want or Failed", &other).into()),
            }
        }
        (ScanKind::File, Action::New | Action::Changed) if scanned.size > CHUNKED_MIN_SIZE => {
            match send_chunked(ctx, channel, scanned.clone(), true).await {
                Err(EntryError::BaseDamaged(why)) => {
                    tracing::warn!(path = %scanned.path, "{why}; sending it whole");
                    let mut channel = Channel::new(ctx.conn.open_bi().await?);
                    channel.send.set_limiter(ctx.limiter.clone());
                    send_chunked(ctx, channel, scanned, false).await
                }
                other => other,
            }
        }
        (ScanKind::File, Action::New | Action::Changed) => {
            send_content(ctx, channel, scanned, true).await
        }
    }
}

/// A directory (`target` `None`) or symlink the receiver stored: its local
/// copy, and what was sent.
pub(super) async fn stored_dir_or_symlink(
    ctx: &TransferContext,
    scanned: ScanEntry,
    target: Option<Vec<u8>>,
) -> Result<Sent, EntryError> {
    let kind = match target {
        Some(_) => SentKind::Symlink,
        None => SentKind::Dir,
    };
    if let Some(copies) = ctx.copies.clone() {
        let (path, mtime, mode) = (scanned.path.clone(), scanned.mtime_ns, scanned.mode);
        blocking(move || {
            match target {
                Some(target) => copies.put_symlink(&path, &target),
                None => copies.put_dir(&path, mtime, mode),
            }
            .map_err(|e| EntryError::Copy(crate::chain::chain(&e)))
        })
        .await?;
    }
    Ok(Sent {
        entry: scanned,
        hash: None,
        kind,
        chunks: None,
    })
}

/// Sends a large file as chunked content (see [`super::chunked`]); with
/// `use_base`, against the base the index knows.
async fn send_chunked(
    ctx: &TransferContext,
    mut channel: Channel,
    scanned: ScanEntry,
    use_base: bool,
) -> Result<Sent, EntryError> {
    let reader = Reader {
        source: ctx.source.clone(),
        entry: scanned.clone(),
        copies: ctx.copies.clone(),
        index: ctx.index.clone(),
        use_base,
        compress: ctx.compress,
    };
    let (tx, mut rx) = mpsc::channel::<Out>(2);
    let (go_tx, go_rx) = std::sync::mpsc::channel();
    let reading = tokio::task::spawn_blocking(move || reader.run(tx, go_rx));
    let mut content = ContentBytes { fresh: 0, wire: 0 };
    let streamed: Result<(), EntryError> = async {
        while let Some(out) = rx.recv().await {
            match out {
                Out::Header(header) => {
                    channel.send.send_raw(&header).await?;
                    match channel.recv.recv_message().await? {
                        Message::Go(go) => {
                            let _ = go_tx.send(go);
                        }
                        Message::Failed(f) => return Err(EntryError::Failed(f.message)),
                        other => return Err(StreamError::unexpected("Go or Failed", &other).into()),
                    }
                }
                Out::Frames(frames, bytes, covered) => {
                    channel.send.send_raw(&frames).await?;
                    content.fresh += bytes.fresh;
                    content.wire += bytes.wire;
                    ctx.status.progress.add_bytes(covered);
                }
            }
        }
        Ok(())
    }
    .await;
    drop(go_tx);
    drop(rx);
    let read = reading
        .await
        .map_err(|e| EntryError::Internal(crate::chain::chain(&e)))?;
    let ChunkedRead {
        stat,
        hash,
        chunks,
        copy,
    } = match (streamed, read) {
        (Ok(()), Ok(read)) => read,
        (Err(EntryError::Stream(e)), _) if e.stopped_code().is_some() => {
            return Err(stopped(&mut channel, e.stopped_code().unwrap_or_default()).await);
        }
        (Err(e), _) => return Err(e),
        (Ok(()), Err(e)) => return Err(abort(&mut channel, e).await),
    };
    match channel.send.send(&Message::End { hash }).await {
        Ok(()) => {}
        Err(e) if e.stopped_code().is_some() => {
            return Err(stopped(&mut channel, e.stopped_code().unwrap_or_default()).await);
        }
        Err(e) => return Err(e.into()),
    }
    let sent = acknowledged(&mut channel, scanned, stat, hash, copy, content).await?;
    Ok(Sent {
        chunks: Some(chunks),
        ..sent
    })
}

/// Sends `Abort` for content that could not be read (the receiver then
/// answers `Failed(Aborted)`) and returns the local error, the one to report.
async fn abort(channel: &mut Channel, e: EntryError) -> EntryError {
    let _ = channel
        .send
        .send(&Message::Abort {
            reason: crate::chain::chain(&e),
        })
        .await;
    channel.send.finish();
    let _ = answer(channel).await;
    e
}

/// Ends a stream whose content was sent: waits for `Stored`, commits the
/// local copy, and describes the file as read (`stat`), `bytes` of content
/// having crossed.
async fn acknowledged(
    channel: &mut Channel,
    scanned: ScanEntry,
    stat: FileStat,
    hash: Hash,
    copy: Option<CopyWriter>,
    bytes: ContentBytes,
) -> Result<Sent, EntryError> {
    channel.send.finish();
    answer(channel).await?;
    stored_file(scanned, stat, hash, copy, bytes).await
}

/// A file the receiver stored: its local copy committed, and what was sent
/// (the file as read, `bytes` of its content having crossed).
pub(super) async fn stored_file(
    scanned: ScanEntry,
    stat: FileStat,
    hash: Hash,
    copy: Option<CopyWriter>,
    bytes: ContentBytes,
) -> Result<Sent, EntryError> {
    if let Some(copy) = copy {
        blocking(move || {
            copy.commit(stat.mtime_ns, stat.mode)
                .map_err(|e| EntryError::Copy(crate::chain::chain(&e)))
        })
        .await?;
    }
    Ok(Sent {
        entry: ScanEntry {
            size: stat.size,
            mtime_ns: stat.mtime_ns,
            mode: stat.mode,
            ino: stat.ino,
            dev: stat.dev,
            ..scanned
        },
        hash: Some(hash),
        kind: SentKind::Content(bytes),
        chunks: None,
    })
}

/// The receiver stopped a stream while content was on the way (disk full,
/// over quota); its answer says why. Only this file failed.
async fn stopped(channel: &mut Channel, code: u64) -> EntryError {
    match answer(channel).await {
        Err(EntryError::Failed(message)) => EntryError::Failed(message),
        Err(EntryError::BaseDamaged(message)) => EntryError::BaseDamaged(message),
        _ => EntryError::Failed(format!(
            "the receiver stopped the transfer (code {code}) without saying why"
        )),
    }
}

/// Files up to this size are read whole in one blocking call and sent in
/// one write; larger ones are streamed piece by piece.
const SMALL_FILE: u64 = 128 * 1024;

/// A file opened for sending.
pub(super) enum Opened {
    /// Read whole already: content, hash, and the local copy written.
    Small {
        stat: FileStat,
        data: Vec<u8>,
        hash: Hash,
        copy: Option<CopyWriter>,
    },
    /// To be streamed.
    Large {
        file: File,
        stat: FileStat,
        copy: Option<CopyWriter>,
    },
}

/// Opens the file (and its local copy); reads it whole if it is small.
pub(super) fn prepare(
    source: &SourceDir,
    scanned: &ScanEntry,
    copies: Option<&Copies>,
) -> Result<Opened, EntryError> {
    let (mut file, stat) = open(source, scanned)?;
    let mut copy = match copies {
        Some(copies) => Some(
            copies
                .begin(&scanned.path)
                .map_err(|e| EntryError::Copy(crate::chain::chain(&e)))?,
        ),
        None => None,
    };
    if stat.size > SMALL_FILE {
        return Ok(Opened::Large { file, stat, copy });
    }
    let mut data = Vec::with_capacity(stat.size as usize + 1);
    // One byte more than expected reveals a file that grew.
    (&mut file)
        .take(stat.size + 1)
        .read_to_end(&mut data)
        .map_err(EntryError::Read)?;
    let (now, _) = fstat(&file).map_err(EntryError::Read)?;
    if data.len() as u64 != stat.size || now != stat {
        return Err(EntryError::Changed);
    }
    if let Some(copy) = copy.as_mut() {
        copy.write(&data)
            .map_err(|e| EntryError::Copy(crate::chain::chain(&e)))?;
    }
    let hash = *blake3::hash(&data).as_bytes();
    Ok(Opened::Small {
        stat,
        data,
        hash,
        copy,
    })
}

/// Sends a file's content. With `with_header`, the `Entry` (built from the
/// open file's metadata) goes first; otherwise it was sent already (an offer
/// the receiver wanted), and the file must still match the scan.
async fn send_content(
    ctx: &TransferContext,
    mut channel: Channel,
    scanned: ScanEntry,
    with_header: bool,
) -> Result<Sent, EntryError> {
    let (source, entry) = (ctx.source.clone(), scanned.clone());
    let copies = ctx.copies.clone();
    let opened = blocking(move || prepare(&source, &entry, copies.as_deref())).await;
    let opened = match opened {
        Ok(opened) => opened,
        Err(e) => {
            if !with_header {
                // The receiver is waiting for content after its Want.
                let _ = channel
                    .send
                    .send(&Message::Abort {
                        reason: crate::chain::chain(&e),
                    })
                    .await;
                channel.send.finish();
            }
            return Err(e);
        }
    };
    let stat = match &opened {
        Opened::Small { stat, .. } | Opened::Large { stat, .. } => *stat,
    };
    let mut head = Vec::new();
    if with_header {
        let entry = Entry {
            path: scanned.path.clone(),
            kind: EntryKind::File {
                size: stat.size,
                content: Content::Inline,
            },
            mtime_ns: stat.mtime_ns,
            mode: stat.mode,
        };
        head = ferry_proto::frame::encode(&Message::Entry(entry)).map_err(StreamError::from)?;
    } else if stat.size != scanned.size || stat.mtime_ns != scanned.mtime_ns {
        channel
            .send
            .send(&Message::Abort {
                reason: "changed since the scan".into(),
            })
            .await?;
        channel.send.finish();
        return Err(EntryError::Changed);
    }
    let sent = async {
        Ok(match opened {
            Opened::Small {
                data, hash, copy, ..
            } => {
                // Header, content and end in one write.
                let mut frames = head;
                let mut wire = 0u64;
                for piece in data.chunks(MAX_DATA) {
                    match compress::compress(piece, ctx.compress) {
                        Some(packed) => {
                            wire += packed.len() as u64;
                            frames.extend_from_slice(
                                &ferry_proto::frame::encode(&Message::DataZstd(packed))
                                    .map_err(StreamError::from)?,
                            );
                        }
                        None => {
                            wire += piece.len() as u64;
                            frames.extend_from_slice(
                                &ferry_proto::frame::data_header(piece.len())
                                    .map_err(StreamError::from)?,
                            );
                            frames.extend_from_slice(piece);
                        }
                    }
                }
                frames.extend_from_slice(
                    &ferry_proto::frame::encode(&Message::End { hash })
                        .map_err(StreamError::from)?,
                );
                channel.send.send_raw(&frames).await?;
                ctx.status.progress.add_bytes(data.len() as u64);
                let fresh = data.len() as u64;
                (hash, copy, ContentBytes { fresh, wire })
            }
            Opened::Large { file, stat, copy } => {
                if !head.is_empty() {
                    channel.send.send_raw(&head).await?;
                }
                let (tx, mut rx) = mpsc::channel::<Vec<u8>>(4);
                let reader =
                    tokio::task::spawn_blocking(move || read_content(file, stat, tx, copy));
                while let Some(chunk) = rx.recv().await {
                    channel.send.send_data(&chunk).await?;
                    ctx.status.progress.add_bytes(chunk.len() as u64);
                }
                let read = reader
                    .await
                    .map_err(|e| EntryError::Internal(crate::chain::chain(&e)))?;
                match read {
                    Ok((hash, copy)) => {
                        channel.send.send(&Message::End { hash }).await?;
                        let all = stat.size;
                        (
                            hash,
                            copy,
                            ContentBytes {
                                fresh: all,
                                wire: all,
                            },
                        )
                    }
                    Err(e) => return Err(abort(&mut channel, e).await),
                }
            }
        })
    }
    .await;
    let (hash, copy, wire) = match sent {
        Ok(sent) => sent,
        Err(EntryError::Stream(e)) if e.stopped_code().is_some() => {
            return Err(stopped(&mut channel, e.stopped_code().unwrap_or_default()).await);
        }
        Err(e) => return Err(e),
    };
    acknowledged(&mut channel, scanned, stat, hash, copy, wire).await
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::io::Write;
    use std::os::unix::ffi::OsStrExt;
    use std::path::Path;

    /// Opens `path` as a run would after scanning it: through its parent
    /// directory opened as the source.
    fn open(path: &Path) -> Result<(File, FileStat), EntryError> {
        let source = SourceDir::open(path.parent().unwrap()).unwrap();
        let meta = std::fs::symlink_metadata(path).unwrap();
        let name = path.file_name().unwrap().as_bytes();
        let entry = ScanEntry {
            path: ferry_proto::RelPath::from_bytes(name).unwrap(),
            kind: ScanKind::File,
            size: meta.len(),
            mtime_ns: mtime_ns(&meta),
            mode: meta.mode() & 0o7777,
            ino: meta.ino(),
            dev: meta.dev(),
        };
        super::open(&source, &entry)
    }

    type ReadResult = Result<(Hash, Option<CopyWriter>), EntryError>;

    fn read_all(path: &Path) -> (ReadResult, Vec<u8>) {
        let (file, stat) = open(path).unwrap();
        let (tx, mut rx) = mpsc::channel(1024);
        let result = read_content(file, stat, tx, None);
        let mut got = Vec::new();
        while let Ok(chunk) = rx.try_recv() {
            got.extend_from_slice(&chunk);
        }
        (result, got)
    }

    #[test]
    fn content_is_read_whole_and_hashed() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("f");
        let data: Vec<u8> = (0..MAX_DATA * 2 + 17).map(|i| (i % 251) as u8).collect();
        std::fs::write(&path, &data).unwrap();
        let (result, got) = read_all(&path);
        let (hash, _) = result.unwrap();
        assert_eq!(got, data);
        assert_eq!(hash, *blake3::hash(&data).as_bytes());
    }

    #[test]
    fn a_file_that_grows_or_shrinks_while_read_is_not_sent_torn() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("f");
        std::fs::write(&path, vec![1u8; 1000]).unwrap();
        let (file, stat) = open(&path).unwrap();
        std::fs::OpenOptions::new()
            .append(true)
            .open(&path)
            .unwrap()
            .write_all(b"more")
            .unwrap();
        let (tx, _rx) = mpsc::channel(1024);
        assert!(matches!(
            read_content(file, stat, tx, None),
            Err(EntryError::Changed)
        ));

        let (file, stat) = open(&path).unwrap();
        std::fs::OpenOptions::new()
            .write(true)
            .open(&path)
            .unwrap()
            .set_len(10)
            .unwrap();
        let (tx, _rx) = mpsc::channel(1024);
        assert!(matches!(
            read_content(file, stat, tx, None),
            Err(EntryError::Changed)
        ));
    }

    #[test]
    fn a_rewrite_in_place_with_a_new_mtime_is_detected() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("f");
        std::fs::write(&path, b"aaaa").unwrap();
        filetime::set_file_mtime(&path, filetime::FileTime::from_unix_time(1_000, 0)).unwrap();
        let (file, stat) = open(&path).unwrap();
        std::fs::write(&path, b"bbbb").unwrap();
        let (tx, _rx) = mpsc::channel(1024);
        assert!(matches!(
            read_content(file, stat, tx, None),
            Err(EntryError::Changed)
        ));
    }

    #[test]
    fn symlinks_and_fifos_are_not_opened_as_files() {
        let dir = tempfile::tempdir().unwrap();
        std::fs::write(dir.path().join("t"), b"x").unwrap();
        std::os::unix::fs::symlink("t", dir.path().join("l")).unwrap();
        assert!(open(&dir.path().join("l")).is_err());
        let fifo = dir.path().join("p");
        assert!(std::process::Command::new("mkfifo")
            .arg(&fifo)
            .status()
            .unwrap()
            .success());
        assert!(matches!(open(&fifo), Err(EntryError::NotAFile)));
    }
}
