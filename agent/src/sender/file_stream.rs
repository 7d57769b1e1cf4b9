//! One entry on its own stream, the sender's side: the `Entry` header
//! (content inline, offered by hash, or chunked against a base), the
//! receiver's `Want` or `Go`, the content read on a blocking thread (hashed
//! and copied as it is read), and the receiver's answer. The message order
//! is [`machine::EntrySender`]'s; this driver does the I/O.
//!
//! ## Layout
//!
//! - `machine`: the file stream as a state machine without I/O.

pub mod machine;

use std::sync::Arc;

use ferry_proto::{Content, Entry, EntryKind, Hash, Message, MAX_DATA};
use tokio::sync::mpsc;

use super::delta_reader::{DeltaError, DeltaRead, DeltaReader, Out};
use super::sealed::{self, Sealing};
use super::source_file::{self, ContentBytes, FileStat, Opened, SourceError};
use crate::chunk::CHUNKED_MIN_SIZE;
use crate::compress::{self, CompressMode};
use crate::copies::{Copies, CopiesError, CopyWriter};
use crate::index::{Action, PlanItem};
use crate::index::{ChunkRecord, Index};
use crate::link::Link;
use crate::scan::{ScanEntry, ScanKind, SourceDir};
use crate::status::SenderStatus;
use crate::stream::{Channel, StreamError};
use crate::tasks::{blocking, Cancelled};
use machine::{Ended, EntrySender, Offer, Step, Violation};

/// What was sent, for the index and the summary.
#[derive(Debug)]
pub struct Sent {
    /// The entry as it was when sent (for a file: as read, not as scanned).
    pub entry: ScanEntry,
    /// The content hash of a file.
    pub hash: Option<Hash>,
    pub kind: SentKind,
    /// What the receiver stored of a file sent as chunked content: the
    /// base of its next delta.
    pub chunks: Option<ChunkRecord>,
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
pub enum SendEntryError {
    #[error(transparent)]
    Source(#[from] SourceError),
    #[error(transparent)]
    Delta(#[from] DeltaError),
    #[error("the receiver did not store it: {0}")]
    Failed(String),
    #[error("the receiver's copy of the previous version is damaged: {0}")]
    BaseDamaged(String),
    #[error(transparent)]
    Stream(#[from] StreamError),
    #[error("connection lost")]
    Connection(#[from] quinn::ConnectionError),
    /// The local copy (`--keep-copies`) could not be completed.
    #[error("local copy")]
    Copy(#[source] CopiesError),
    /// The entry could not be sealed for its encrypted or write-only
    /// folder.
    #[error("cannot be sealed")]
    Seal(#[source] ferry_proto::seal::SealError),
    /// A bundle's compression stream failed.
    #[error("could not compress the bundle")]
    Compress(#[source] std::io::Error),
    /// The run was stopped (shutdown) while the entry was in flight.
    #[error("stopped")]
    Stopped,
    #[error(transparent)]
    Cancelled(#[from] Cancelled),
}

impl From<Violation> for SendEntryError {
    /// A protocol error, worded as the stream words it.
    fn from(v: Violation) -> SendEntryError {
        SendEntryError::Stream(v.into())
    }
}

impl SendEntryError {
    /// True if the connection itself is gone (the run cannot go on).
    pub fn is_connection_lost(&self) -> bool {
        matches!(self, SendEntryError::Connection(_))
            || matches!(self, SendEntryError::Stream(e) if e.is_lost())
    }
}

/// Everything an entry transfer needs besides the entry.
pub struct TransferContext<L> {
    /// The connection to the receiver.
    pub link: L,
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
    /// The run's sealing, for an encrypted or write-only folder: every entry
    /// travels as a sealed object ([`super::sealed`]).
    pub seal: Option<Arc<Sealing>>,
}

impl<L: Link> TransferContext<L> {
    /// Opens a stream for one entry, paced by the limiter.
    pub(super) async fn open(&self) -> Result<Channel, SendEntryError> {
        let mut channel = self.link.open().await?;
        channel.send.set_limiter(self.limiter.clone());
        Ok(channel)
    }
}

/// Feeds the receiver's next message to `machine`.
async fn next(channel: &mut Channel, machine: &mut EntrySender) -> Result<Step, SendEntryError> {
    let message = channel.recv.recv().await?;
    Ok(machine.on_message(message)?)
}

/// Reads the answer that ends the entry: `Ok` if the receiver stored it.
pub(super) async fn answer(
    channel: &mut Channel,
    machine: &mut EntrySender,
) -> Result<(), SendEntryError> {
    match next(channel, machine).await? {
        Step::Done(ended) => ended_result(ended),
        // Only Want and Go ask for more, and both are asked for earlier.
        Step::SendContent | Step::SendChunks(_) => Err(StreamError::Closed.into()),
    }
}

/// The result of an entry that ended as `ended`.
fn ended_result(ended: Ended) -> Result<(), SendEntryError> {
    match ended {
        Ended::Stored | Ended::AlreadyStored => Ok(()),
        Ended::BaseDamaged(message) => Err(SendEntryError::BaseDamaged(message)),
        Ended::Failed { message, .. } => Err(SendEntryError::Failed(message)),
    }
}

/// Sends one planned entry and waits for the receiver's answer.
pub async fn send_entry(
    ctx: &TransferContext<impl Link>,
    item: PlanItem,
) -> Result<Sent, SendEntryError> {
    if let Some(seal) = &ctx.seal {
        return sealed::send_entry(ctx, seal, item).await;
    }
    let mut channel = ctx.open().await?;
    let scanned = item.entry;
    let header = |kind| Entry {
        path: scanned.path.clone(),
        kind,
        mtime_ns: scanned.mtime_ns,
        mode: scanned.mode,
    };
    match (&scanned.kind, item.action) {
        (ScanKind::Dir, _) => {
            let mut machine = EntrySender::new(Offer::Whole);
            channel
                .send
                .send(&Message::Entry(header(EntryKind::Dir)))
                .await?;
            channel.send.finish();
            answer(&mut channel, &mut machine).await?;
            stored_dir_or_symlink(ctx, scanned, None).await
        }
        (ScanKind::Symlink { target }, _) => {
            let mut machine = EntrySender::new(Offer::Whole);
            let kind = EntryKind::Symlink {
                target: target.to_vec(),
            };
            channel.send.send(&Message::Entry(header(kind))).await?;
            channel.send.finish();
            answer(&mut channel, &mut machine).await?;
            let target = Some(target.to_vec());
            stored_dir_or_symlink(ctx, scanned, target).await
        }
        (ScanKind::File, Action::MetadataOnly { hash }) => {
            let mut machine = EntrySender::new(Offer::ByHash);
            let kind = EntryKind::File {
                size: scanned.size,
                content: Content::Offer { hash },
            };
            channel.send.send(&Message::Entry(header(kind))).await?;
            match next(&mut channel, &mut machine).await? {
                Step::Done(Ended::AlreadyStored) => {
                    channel.send.finish();
                    Ok(Sent {
                        entry: scanned,
                        hash: Some(hash),
                        kind: SentKind::MetadataOnly,
                        chunks: None,
                    })
                }
                Step::SendContent => send_content(ctx, channel, machine, scanned).await,
                // A failure; `Stored` to an offer is `AlreadyStored`.
                Step::Done(ended) => ended_result(ended).and(Err(StreamError::Closed.into())),
                Step::SendChunks(_) => Err(StreamError::Closed.into()),
            }
        }
        (ScanKind::File, Action::New | Action::Changed) if scanned.size > CHUNKED_MIN_SIZE => {
            match send_chunked(ctx, channel, scanned.clone(), true).await {
                Err(SendEntryError::BaseDamaged(why)) => {
                    tracing::warn!(path = %scanned.path, "{why}; sending it whole");
                    let channel = ctx.open().await?;
                    send_chunked(ctx, channel, scanned, false).await
                }
                other => other,
            }
        }
        (ScanKind::File, Action::New | Action::Changed) => {
            let machine = EntrySender::new(Offer::Whole);
            send_content(ctx, channel, machine, scanned).await
        }
    }
}

/// A directory (`target` `None`) or symlink the receiver stored: its local
/// copy, and what was sent.
pub(super) async fn stored_dir_or_symlink(
    ctx: &TransferContext<impl Link>,
    scanned: ScanEntry,
    target: Option<Vec<u8>>,
) -> Result<Sent, SendEntryError> {
    let kind = match target {
        Some(_) => SentKind::Symlink,
        None => SentKind::Dir,
    };
    if let Some(copies) = ctx.copies.clone() {
        let (path, mtime, mode) = (scanned.path.clone(), scanned.mtime_ns, scanned.mode);
        blocking(move || match target {
            Some(target) => copies.put_symlink(&path, &target),
            None => copies.put_dir(&path, mtime, mode),
        })
        .await?
        .map_err(SendEntryError::Copy)?;
    }
    Ok(Sent {
        entry: scanned,
        hash: None,
        kind,
        chunks: None,
    })
}

/// Sends a large file as chunked content (see [`super::delta_reader`]);
/// with `use_base`, against the base the index knows.
async fn send_chunked(
    ctx: &TransferContext<impl Link>,
    channel: Channel,
    scanned: ScanEntry,
    use_base: bool,
) -> Result<Sent, SendEntryError> {
    let reader = DeltaReader {
        source: ctx.source.clone(),
        entry: scanned.clone(),
        copies: ctx.copies.clone(),
        index: ctx.index.clone(),
        use_base,
        compress: ctx.compress,
    };
    stream_chunked(ctx, channel, scanned, move |tx, go| reader.run(tx, go)).await
}

/// Drives one chunked transfer: `read` (on a blocking thread) hands over
/// the entry's header, gets the receiver's `Go` back, then hands over the
/// content's frames; this side writes them to the stream, then `End` and
/// waits for the receiver's answer.
pub(super) async fn stream_chunked<F>(
    ctx: &TransferContext<impl Link>,
    mut channel: Channel,
    scanned: ScanEntry,
    read: F,
) -> Result<Sent, SendEntryError>
where
    F: FnOnce(
            mpsc::Sender<Out>,
            std::sync::mpsc::Receiver<ferry_proto::Go>,
        ) -> Result<DeltaRead, DeltaError>
        + Send
        + 'static,
{
    let mut machine = EntrySender::new(Offer::Chunked);
    let (tx, rx) = mpsc::channel::<Out>(2);
    // One `Go` per stream: a channel of one.
    let (go_tx, go_rx) = std::sync::mpsc::sync_channel(1);
    let mut content = ContentBytes { fresh: 0, wire: 0 };
    // The stream's side owns `rx` and `go_tx`: when it ends, early or not,
    // they go with it and the reading thread stops too.
    let streaming = async {
        let (mut rx, go_tx) = (rx, go_tx);
        while let Some(out) = rx.recv().await {
            match out {
                Out::Header(header) => {
                    channel.send.send_raw(&header).await?;
                    let go = await_go(&mut channel, &mut machine).await?;
                    let _ = go_tx.send(go);
                }
                Out::Frames(frames, bytes, covered) => {
                    channel.send.send_owned(frames).await?;
                    content.fresh += bytes.fresh;
                    content.wire += bytes.wire;
                    ctx.status.progress.add_bytes(covered);
                }
            }
        }
        Ok::<(), SendEntryError>(())
    };
    let (streamed, read) = tokio::join!(streaming, blocking(move || read(tx, go_rx)));
    let read = read?;
    let DeltaRead {
        stat,
        hash,
        end,
        record,
        copy,
    } = match unless_stopped(&mut channel, &mut machine, streamed).await {
        Err(e) => return Err(e),
        Ok(()) => match read {
            Ok(read) => read,
            Err(e) => return Err(abort(&mut channel, &mut machine, e.into()).await),
        },
    };
    let sent = channel.send.send(&Message::End { hash: end }).await;
    unless_stopped(&mut channel, &mut machine, sent.map_err(Into::into)).await?;
    machine.content_sent();
    let sent = acknowledged(
        &mut channel,
        &mut machine,
        scanned,
        stat,
        hash,
        copy,
        content,
    )
    .await?;
    Ok(Sent {
        chunks: record,
        ..sent
    })
}

/// Waits for the receiver's answer to chunked content: its `Go` (a
/// failure is the receiver's reason).
pub(super) async fn await_go(
    channel: &mut Channel,
    machine: &mut EntrySender,
) -> Result<ferry_proto::Go, SendEntryError> {
    match next(channel, machine).await? {
        Step::SendChunks(go) => Ok(go),
        Step::Done(ended) => ended_result(ended).and(Err(StreamError::Closed.into())),
        Step::SendContent => Err(StreamError::Closed.into()),
    }
}

/// Sends `Abort` for content that could not be read (the receiver then
/// answers `Failed(Aborted)`) and returns the local error, the one to report.
pub(super) async fn abort(
    channel: &mut Channel,
    machine: &mut EntrySender,
    e: SendEntryError,
) -> SendEntryError {
    let _ = channel
        .send
        .send(&Message::Abort {
            reason: crate::chain::chain(&e),
        })
        .await;
    channel.send.finish();
    machine.content_sent();
    let _ = answer(channel, machine).await;
    e
}

/// Ends a stream whose content was sent: waits for `Stored`, commits the
/// local copy, and describes the file as read (`stat`), `bytes` of content
/// having crossed.
pub(super) async fn acknowledged(
    channel: &mut Channel,
    machine: &mut EntrySender,
    scanned: ScanEntry,
    stat: FileStat,
    hash: Hash,
    copy: Option<CopyWriter>,
    bytes: ContentBytes,
) -> Result<Sent, SendEntryError> {
    channel.send.finish();
    answer(channel, machine).await?;
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
) -> Result<Sent, SendEntryError> {
    if let Some(copy) = copy {
        blocking(move || copy.commit(stat.mtime_ns, stat.mode))
            .await?
            .map_err(SendEntryError::Copy)?;
    }
    Ok(Sent {
        entry: ScanEntry {
            size: stat.size,
            mtime_ns: stat.mtime_ns,
            mode: stat.mode,
            ino: stat.ino,
            dev: crate::scan::dev_id(stat.dev),
            ..scanned
        },
        hash: Some(hash),
        kind: SentKind::Content(bytes),
        chunks: None,
    })
}

/// The receiver stopped a stream while content was on the way (disk full,
/// over quota); its answer says why. Only this file failed.
/// `result` of writing to the stream, unless the receiver stopped the
/// stream: then why it did ([`stopped`]).
pub(super) async fn unless_stopped<T>(
    channel: &mut Channel,
    machine: &mut EntrySender,
    result: Result<T, SendEntryError>,
) -> Result<T, SendEntryError> {
    match result {
        Err(SendEntryError::Stream(e)) if e.stopped_code().is_some() => {
            let code = e.stopped_code().unwrap_or_default();
            Err(stopped(channel, machine, code).await)
        }
        other => other,
    }
}

pub(super) async fn stopped(
    channel: &mut Channel,
    machine: &mut EntrySender,
    code: u64,
) -> SendEntryError {
    match answer(channel, machine).await {
        Err(e @ (SendEntryError::Failed(_) | SendEntryError::BaseDamaged(_))) => e,
        _ => SendEntryError::Failed(format!(
            "the receiver stopped the transfer (code {code}) without saying why"
        )),
    }
}

/// Frames of a small file's whole content and its `End`, after `head`;
/// returns them and the content's bytes on the wire.
fn small_frames(
    mut frames: Vec<u8>,
    data: &[u8],
    hash: Hash,
    mode: CompressMode,
) -> Result<(Vec<u8>, u64), StreamError> {
    let mut wire = 0u64;
    for piece in data.chunks(MAX_DATA) {
        match compress::compress(piece, mode) {
            Some(packed) => {
                wire += packed.len() as u64;
                frames.extend_from_slice(&ferry_proto::frame::encode(&Message::DataZstd(packed))?);
            }
            None => {
                wire += piece.len() as u64;
                frames.extend_from_slice(&ferry_proto::frame::data_header(piece.len())?);
                frames.extend_from_slice(piece);
            }
        }
    }
    frames.extend_from_slice(&ferry_proto::frame::encode(&Message::End { hash })?);
    Ok((frames, wire))
}

/// Sends a file's content. A `machine` awaiting the answer already (an
/// [`Offer::Whole`]) means the `Entry` (built from the open file's
/// metadata) goes first; otherwise it was sent already (an offer the
/// receiver wanted), and the file must still match the scan.
async fn send_content(
    ctx: &TransferContext<impl Link>,
    mut channel: Channel,
    mut machine: EntrySender,
    scanned: ScanEntry,
) -> Result<Sent, SendEntryError> {
    let with_header = machine.awaits_answer();
    let (source, entry) = (ctx.source.clone(), scanned.clone());
    let copies = ctx.copies.clone();
    let opened = blocking(move || source_file::prepare(&source, &entry, copies.as_deref())).await?;
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
            return Err(e.into());
        }
    };
    let stat = opened.stat();
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
        return Err(SourceError::Changed.into());
    }
    let sent = async {
        Ok(match opened {
            Opened::Small {
                data, hash, copy, ..
            } => {
                // Header, content and end in one write.
                let (frames, wire) = small_frames(head, &data, hash, ctx.compress)?;
                channel.send.send_raw(&frames).await?;
                ctx.status.progress.add_bytes(data.len() as u64);
                let fresh = data.len() as u64;
                (hash, copy, ContentBytes { fresh, wire })
            }
            Opened::Large { file, stat, copy } => {
                if !head.is_empty() {
                    channel.send.send_raw(&head).await?;
                }
                let (tx, rx) = mpsc::channel::<Vec<u8>>(4);
                let pumping = async {
                    let mut rx = rx;
                    while let Some(chunk) = rx.recv().await {
                        channel.send.send_data(&chunk).await?;
                        ctx.status.progress.add_bytes(chunk.len() as u64);
                    }
                    Ok::<(), SendEntryError>(())
                };
                let reading = blocking(move || source_file::read_content(file, stat, tx, copy));
                let (pumped, read) = tokio::join!(pumping, reading);
                pumped?;
                match read? {
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
                    Err(e) => return Err(abort(&mut channel, &mut machine, e.into()).await),
                }
            }
        })
    }
    .await;
    let (hash, copy, wire) = unless_stopped(&mut channel, &mut machine, sent).await?;
    machine.content_sent();
    acknowledged(&mut channel, &mut machine, scanned, stat, hash, copy, wire).await
}
