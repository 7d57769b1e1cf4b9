//! Bundle streams, the sender's side: small files, directories and symlinks
//! go one after another on long-lived streams ("lanes") instead of a stream
//! each, their content compressed as one zstd stream per lane. Files
//! are read ahead in groups on the blocking pool; the receiver's answers come
//! back in order and are matched to what was sent ([`answers`]) on a second
//! task, so the lane never waits for a round trip.
//!
//! ## Layout
//!
//! - `answers`: the receiver's answers matched to the entries sent, in
//!   order, as a state machine without I/O.

use std::sync::{Arc, Mutex};

use ferry_proto::{frame, Content, Entry, EntryKind, Message, MAX_BUNDLED};
use futures_util::stream::{FuturesOrdered, StreamExt};
use futures_util::FutureExt;
use tokio::sync::mpsc;
use tokio::task::JoinSet;
use tokio_util::sync::CancellationToken;

mod answers;

use super::file_stream::{
    send_entry, stored_dir_or_symlink, stored_file, SendEntryError, Sent, TransferContext,
};
use super::sealed::SealedObject;
use super::source_file::{prepare, ContentBytes, FileStat, Opened, SourceError};
use crate::compress::{self, StreamEncoder};
use crate::copies::{Copies, CopyWriter};
use crate::index::{Action, PlanItem, PlanItems};
use crate::link::Link;
use crate::scan::{ScanEntry, ScanKind, SourceDir};
use crate::stream::{FramedSend, StreamError};
use crate::tasks::blocking;
use answers::{AnswerMatcher, BundleAnswer};

/// Lanes a run uses at most. One: on the benchmark's text set two lanes
/// used a third more CPU (two compression contexts of about 8 MiB competing
/// for the caches of a 2-core machine) and finished no sooner, and a second
/// context compresses worse. Small files stay parallel all the same: a lane
/// reads ahead on the blocking pool and the receiver stores entries of a
/// bundle concurrently.
pub const MAX_LANES: usize = 1;
/// Entries per lane below which another lane is not worth its stream.
const MIN_PER_LANE: usize = 64;
/// Entries one task of the blocking pool reads, at most: one wake-up per
/// group rather than per file (a thread hand-off costs about as much as
/// reading a small file from the page cache).
const READ_GROUP: usize = 16;
/// Bytes of the scanned sizes one task reads, at most.
const READ_GROUP_BYTES: u64 = 1 << 20;
/// Groups a lane has being read at once: the disk sees this many reads in
/// parallel.
const READS_IN_FLIGHT: usize = 4;
/// Entries a lane has sent and not yet seen answered (as many as entries a
/// stream each would have in flight); each holds a local-copy file open
/// until it is answered.
const MAX_UNANSWERED: usize = 256;

/// Content shorter than this goes raw: a flushed zstd block costs a few
/// bytes of its own, more than such a piece could save.
const MIN_COMPRESSED: usize = 64;

/// The result of one entry, by its path.
pub type EntryOutcome = (String, Result<Sent, SendEntryError>);

/// True if `item` may travel in a bundle: a directory, a symlink, or a
/// new or changed file small enough.
pub fn fits(entry: &ScanEntry, action: &Action) -> bool {
    match entry.kind {
        ScanKind::Dir | ScanKind::Symlink { .. } => true,
        ScanKind::File => {
            matches!(action, Action::New | Action::Changed) && entry.size <= MAX_BUNDLED
        }
    }
}

/// How many lanes `count` bundled entries are worth.
pub fn lanes_for(count: usize) -> usize {
    count.div_ceil(MIN_PER_LANE).min(MAX_LANES)
}

/// Entries shared by a run's lanes: each takes the next one when it can.
pub type Queue = Arc<Mutex<PlanItems>>;

/// The next entries to read: up to [`READ_GROUP`] of them and
/// [`READ_GROUP_BYTES`] (at least one).
fn next_group(queue: &Queue) -> Vec<PlanItem> {
    let mut group = Vec::new();
    let Ok(mut queue) = queue.lock() else {
        return group;
    };
    let mut bytes = 0;
    while group.len() < READ_GROUP && (group.is_empty() || bytes < READ_GROUP_BYTES) {
        let Some(item) = queue.pop_front() else { break };
        bytes += item.entry.size;
        group.push(item);
    }
    group
}

/// An entry read and framed, waiting for the receiver's answer.
struct Unanswered {
    path: String,
    scanned: ScanEntry,
    what: Kept,
    /// Bytes of its content on the wire.
    wire: u64,
}

/// What was read of an entry.
enum Read {
    Dir,
    Symlink(Vec<u8>),
    File {
        stat: FileStat,
        data: Vec<u8>,
        hash: ferry_proto::Hash,
        copy: Option<CopyWriter>,
    },
    /// An entry of a sealed folder: what was read, and its object.
    Sealed {
        real: Box<Read>,
        object: SealedObject,
    },
}

/// Reads one entry for a bundle; `Ok(None)`: the file has grown too large
/// for one since the scan and goes on a stream of its own.
fn read(
    source: &SourceDir,
    copies: Option<&Copies>,
    item: &PlanItem,
) -> Result<Option<Read>, SourceError> {
    Ok(Some(match &item.entry.kind {
        ScanKind::Dir => Read::Dir,
        ScanKind::Symlink { target } => Read::Symlink(target.to_vec()),
        ScanKind::File => match prepare(source, &item.entry, copies)? {
            Opened::Small {
                stat,
                data,
                hash,
                copy,
            } if stat.size <= MAX_BUNDLED => Read::File {
                stat,
                data,
                hash,
                copy,
            },
            _ => return Ok(None),
        },
    }))
}

/// Reads one entry for a bundle of `ctx`'s folder: as [`read`], sealed if
/// the folder is; `Ok(None)`: too large for a bundle now, it goes on a
/// stream of its own.
fn read_for<L>(ctx: &TransferContext<L>, item: &PlanItem) -> Result<Option<Read>, SendEntryError> {
    let read = read(&ctx.source, ctx.copies.as_deref(), item)?;
    let (Some(seal), Some(real)) = (&ctx.seal, &read) else {
        return Ok(read);
    };
    let object = match real {
        Read::File { stat, data, .. } => seal.seal_whole(&item.entry, Some(stat), data)?,
        _ => seal.seal_whole(&item.entry, None, &[])?,
    };
    if object.len() > MAX_BUNDLED {
        return Ok(None);
    }
    Ok(read.map(|real| Read::Sealed {
        real: Box::new(real),
        object,
    }))
}

/// What a framed entry keeps until it is answered: what was read, without
/// its content (of a sealed entry: what was read, not its object).
enum Kept {
    Dir,
    Symlink(Vec<u8>),
    File {
        stat: FileStat,
        hash: ferry_proto::Hash,
        copy: Option<CopyWriter>,
    },
}

/// `what` once framed; returns the bytes of file content it held.
fn kept(what: Read) -> (Kept, u64) {
    match what {
        Read::Dir => (Kept::Dir, 0),
        Read::Symlink(target) => (Kept::Symlink(target), 0),
        Read::File {
            stat,
            hash,
            copy,
            data,
        } => (Kept::File { stat, hash, copy }, data.len() as u64),
        Read::Sealed { real, .. } => kept(*real),
    }
}

/// Frames of one entry: header, content, end. Returns the bytes of content
/// put on the wire.
fn frames(
    scanned: &ScanEntry,
    what: &Read,
    encoder: &mut Option<StreamEncoder>,
    mode: compress::CompressMode,
    out: &mut Vec<u8>,
) -> Result<u64, SendEntryError> {
    let (kind, mtime_ns, mode_bits) = match what {
        // Raw: ciphertext does not compress.
        Read::Sealed { object, .. } => {
            object.frames(out)?;
            return Ok(object.len());
        }
        Read::Dir => (EntryKind::Dir, scanned.mtime_ns, scanned.mode),
        Read::Symlink(target) => (
            EntryKind::Symlink {
                target: target.clone(),
            },
            scanned.mtime_ns,
            scanned.mode,
        ),
        Read::File { stat, .. } => (
            EntryKind::File {
                size: stat.size,
                content: Content::Inline,
            },
            stat.mtime_ns,
            stat.mode,
        ),
    };
    let entry = Entry {
        path: scanned.path.clone(),
        kind,
        mtime_ns,
        mode: mode_bits,
    };
    let encode =
        |m: &Message| frame::encode(m).map_err(|e| SendEntryError::from(StreamError::from(e)));
    out.extend_from_slice(&encode(&Message::Entry(entry))?);
    let Read::File { data, hash, .. } = what else {
        return Ok(0);
    };
    let mut wire = 0;
    if !data.is_empty() {
        if data.len() >= MIN_COMPRESSED && compress::worth_trying(data, mode) {
            if encoder.is_none() {
                *encoder = Some(StreamEncoder::new().map_err(SendEntryError::Compress)?);
            }
            let mut packed = Vec::new();
            if let Some(encoder) = encoder.as_mut() {
                encoder
                    .piece(data, &mut packed)
                    .map_err(SendEntryError::Compress)?;
            }
            wire = packed.len() as u64;
            out.extend_from_slice(&encode(&Message::Zstream(packed))?);
        } else {
            wire = data.len() as u64;
            out.extend_from_slice(
                &frame::data_header(data.len())
                    .map_err(|e| SendEntryError::from(StreamError::from(e)))?,
            );
            out.extend_from_slice(data);
        }
    }
    out.extend_from_slice(&encode(&Message::End { hash: *hash })?);
    Ok(wire)
}

/// Runs one lane until the queue is empty, reporting every entry it took to
/// `outcomes`. If its stream fails it stops early: the entries it had sent
/// are reported failed, the ones it had only read go back to the queue.
/// The tasks it starts (its answers, files grown too large for it) are its
/// own: it returns when they have.
pub async fn lane<L: Link>(
    ctx: Arc<TransferContext<L>>,
    queue: Queue,
    outcomes: mpsc::Sender<EntryOutcome>,
    shutdown: CancellationToken,
) {
    let mut reads = FuturesOrdered::new();
    let mut stream: Option<(FramedSend, tokio::task::JoinHandle<()>)> = None;
    let (unanswered_tx, unanswered_rx) = mpsc::channel::<Unanswered>(MAX_UNANSWERED);
    let mut unanswered_rx = Some(unanswered_rx);
    let mut encoder: Option<StreamEncoder> = None;
    let mut buf = Vec::new();
    let mut requeue = Vec::new();
    // Files grown past the bundle limit since the scan, a stream each.
    let mut grown = JoinSet::new();
    'lane: loop {
        while reads.len() < READS_IN_FLIGHT && !shutdown.is_cancelled() {
            let group = next_group(&queue);
            if group.is_empty() {
                break;
            }
            let c = ctx.clone();
            reads.push_back(blocking(move || {
                group
                    .into_iter()
                    .map(|item| {
                        let read = read_for(&c, &item);
                        (item, read)
                    })
                    .collect::<Vec<_>>()
            }));
        }
        // The next group read, and every one after it that is read
        // already: they are framed together, one trip to the blocking pool.
        let Some(first) = reads.next().await else {
            break;
        };
        let mut groups = vec![first];
        while let Some(Some(more)) = reads.next().now_or_never() {
            groups.push(more);
        }
        let mut todo = Vec::new();
        for joined in groups {
            let group = match joined {
                Ok(group) => group,
                // Shutting down: nothing more is sent.
                Err(_) => continue,
            };
            for (item, read) in group {
                match read {
                    Ok(Some(what)) => todo.push((item, what)),
                    // Grew past the bundle limit since the scan.
                    Ok(None) => {
                        let (c, out) = (ctx.clone(), outcomes.clone());
                        grown.spawn(async move {
                            let path = item.entry.path.to_string();
                            let _ = out.send((path, send_entry(&c, item).await)).await;
                        });
                    }
                    Err(e) => {
                        let outcome = (item.entry.path.to_string(), Err(e));
                        if outcomes.send(outcome).await.is_err() {
                            break 'lane;
                        }
                    }
                }
            }
        }
        if todo.is_empty() {
            continue;
        }
        let mode = ctx.compress;
        buf.clear();
        let paths: Vec<String> = todo.iter().map(|(i, _)| i.entry.path.to_string()).collect();
        let framed = blocking(move || {
            let mut wires = Vec::with_capacity(todo.len());
            for (item, what) in &todo {
                let start = buf.len();
                match frames(&item.entry, what, &mut encoder, mode, &mut buf) {
                    Ok(wire) => wires.push(Ok(wire)),
                    Err(e) => {
                        buf.truncate(start);
                        wires.push(Err(e));
                        break;
                    }
                }
            }
            (todo, wires, encoder, buf)
        })
        .await;
        let (todo, wires, enc, b) = match framed {
            Ok(done) => done,
            Err(cancelled) => {
                // Shutting down, and the compression state is gone with the
                // task.
                for path in paths {
                    let _ = outcomes.send((path, Err(cancelled.into()))).await;
                }
                break;
            }
        };
        (encoder, buf) = (enc, b);
        if stream.is_none() {
            match open(&ctx, unanswered_rx.take(), outcomes.clone()).await {
                Ok(opened) => stream = Some(opened),
                Err(e) => {
                    // Nothing was sent: the entries can go a stream each.
                    tracing::debug!("could not open a bundle: {}", crate::chain::Chain(&e));
                    requeue.extend(todo.into_iter().map(|(item, _)| item));
                    break;
                }
            }
        }
        let Some((send, _)) = stream.as_mut() else {
            break;
        };
        if let Err(e) = send.send_raw(&buf).await {
            // The first entry carries the error itself (the run sees a lost
            // connection by it); the others were cut off with it.
            let message = format!("the bundle stream failed: {}", crate::chain::Chain(&e));
            let mut error = Some(SendEntryError::from(e));
            for (item, _) in todo.iter().take(wires.len()) {
                let e = error
                    .take()
                    .unwrap_or_else(|| SendEntryError::Failed(message.clone()));
                let _ = outcomes.send((item.entry.path.to_string(), Err(e))).await;
            }
            requeue.extend(todo.into_iter().skip(wires.len()).map(|(item, _)| item));
            break;
        }
        let framed_all = wires.len() == todo.len();
        let mut todo = todo.into_iter();
        for wire in wires {
            let Some((item, what)) = todo.next() else {
                break;
            };
            let path = item.entry.path.to_string();
            let wire = match wire {
                Ok(wire) => wire,
                Err(e) => {
                    // Cannot happen with valid entries; the stream's
                    // compression state is unknown now, so the lane ends.
                    let _ = outcomes.send((path, Err(e))).await;
                    break;
                }
            };
            let (what, content) = kept(what);
            ctx.status.progress.add_bytes(content);
            let pending = Unanswered {
                path,
                wire,
                scanned: item.entry,
                what,
            };
            if unanswered_tx.send(pending).await.is_err() {
                break 'lane;
            }
        }
        requeue.extend(todo.map(|(item, _)| item));
        if !framed_all {
            break;
        }
    }
    drop(unanswered_tx);
    if let Some((mut send, answers)) = stream {
        send.finish();
        let _ = answers.await;
    }
    while grown.join_next().await.is_some() {}
    // What was read and not sent goes back, for a stream each.
    while let Some(joined) = reads.next().await {
        if let Ok(group) = joined {
            requeue.extend(group.into_iter().map(|(item, _)| item));
        }
    }
    if let Ok(mut queue) = queue.lock() {
        for item in requeue.into_iter().rev() {
            queue.push_front(item);
        }
    }
}

/// Opens the lane's stream and starts the task that reads its answers.
async fn open<L: Link>(
    ctx: &Arc<TransferContext<L>>,
    unanswered: Option<mpsc::Receiver<Unanswered>>,
    outcomes: mpsc::Sender<EntryOutcome>,
) -> Result<(FramedSend, tokio::task::JoinHandle<()>), SendEntryError> {
    // The lane opens its stream once, the first time it has entries.
    let Some(unanswered) = unanswered else {
        return Err(StreamError::Closed.into());
    };
    let mut channel = ctx.open().await?;
    channel.send.send(&Message::Bundle).await?;
    let crate::stream::Channel { send, recv } = channel;
    let c = ctx.clone();
    let answers = tokio::spawn(answers(c, recv, unanswered, outcomes));
    Ok((send, answers))
}

/// Matches the receiver's answers, in order, to the entries sent.
async fn answers<L: Link>(
    ctx: Arc<TransferContext<L>>,
    mut recv: crate::stream::FramedRecv,
    mut unanswered: mpsc::Receiver<Unanswered>,
    outcomes: mpsc::Sender<EntryOutcome>,
) {
    let mut matcher = AnswerMatcher::default();
    while let Some(sent) = unanswered.recv().await {
        matcher.sent(sent);
        let (sent, answer) = match recv.recv().await {
            Ok(message) => match matcher.on_message(message) {
                Ok(matched) => matched,
                // One entry was waiting: it took the answer.
                Err(_) => break,
            },
            Err(e) => match matcher.on_message(None) {
                Ok((sent, _)) => {
                    let _ = outcomes.send((sent.path, Err(e.into()))).await;
                    continue;
                }
                Err(_) => break,
            },
        };
        let result = match answer {
            BundleAnswer::Stored => match sent.what {
                Kept::Dir => stored_dir_or_symlink(&ctx, sent.scanned, None).await,
                Kept::Symlink(target) => {
                    stored_dir_or_symlink(&ctx, sent.scanned, Some(target)).await
                }
                Kept::File { stat, hash, copy } => {
                    let bytes = ContentBytes {
                        fresh: stat.size,
                        wire: sent.wire,
                    };
                    stored_file(sent.scanned, stat, hash, copy, bytes).await
                }
            },
            BundleAnswer::Failed(message) => Err(SendEntryError::Failed(message)),
            BundleAnswer::Violation(v) => Err(v.into()),
        };
        let _ = outcomes.send((sent.path, result)).await;
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used)] // a failing unwrap is a failing test
mod tests {
    use super::*;

    fn item(path: &str, kind: ScanKind, size: u64) -> PlanItem {
        PlanItem {
            entry: ScanEntry {
                path: ferry_proto::RelPath::from_bytes(path).unwrap(),
                kind,
                size,
                mtime_ns: 0,
                mode: 0o644,
                ino: 0,
                dev: 0,
            },
            action: Action::New,
        }
    }

    /// `item` with the device and inode of the file at `dir/path`, as a
    /// scan records them.
    fn on_disk(dir: &std::path::Path, mut item: PlanItem) -> PlanItem {
        use std::os::unix::fs::MetadataExt;
        let meta = std::fs::symlink_metadata(item.entry.path.under(dir)).unwrap();
        (item.entry.dev, item.entry.ino) = (crate::scan::dev_id(meta.dev()), meta.ino());
        item
    }

    #[test]
    fn small_files_dirs_and_symlinks_fit_and_nothing_else_does() {
        let fits = |item: &PlanItem| fits(&item.entry, &item.action);
        assert!(fits(&item("a", ScanKind::File, MAX_BUNDLED)));
        assert!(!fits(&item("a", ScanKind::File, MAX_BUNDLED + 1)));
        assert!(fits(&item("d", ScanKind::Dir, 0)));
        let link = ScanKind::Symlink {
            target: b"t".to_vec().into(),
        };
        assert!(fits(&item("l", link, 1)));
        // A metadata-only change is offered by hash on a stream of its own.
        let mut offer = item("a", ScanKind::File, 10);
        offer.action = Action::MetadataOnly { hash: [0; 32] };
        assert!(!fits(&offer));
        assert_eq!(lanes_for(0), 0);
        assert_eq!(lanes_for(1), 1);
        assert!(lanes_for(1_000_000) <= MAX_LANES);
    }

    #[test]
    fn a_file_read_for_a_bundle_is_whole_and_hashed() {
        let dir = tempfile::tempdir().unwrap();
        std::fs::write(dir.path().join("small"), b"hello").unwrap();
        let source = SourceDir::open(dir.path()).unwrap();
        let small = on_disk(dir.path(), item("small", ScanKind::File, 5));
        let read = read(&source, None, &small).unwrap().unwrap();
        let Read::File {
            data, hash, stat, ..
        } = read
        else {
            panic!("not a file")
        };
        assert_eq!(data, b"hello");
        assert_eq!(hash, *blake3::hash(b"hello").as_bytes());
        assert_eq!(stat.size, 5);
    }

    #[test]
    fn a_file_grown_past_the_bundle_limit_since_the_scan_goes_alone() {
        let dir = tempfile::tempdir().unwrap();
        let big = vec![7u8; MAX_BUNDLED as usize + 1];
        std::fs::write(dir.path().join("grew"), &big).unwrap();
        let source = SourceDir::open(dir.path()).unwrap();
        let scanned = on_disk(dir.path(), item("grew", ScanKind::File, 100));
        assert!(read(&source, None, &scanned).unwrap().is_none());
        // Gone since the scan: an error for this entry only.
        let gone = item("gone", ScanKind::File, 100);
        assert!(read(&source, None, &gone).is_err());
    }

    #[test]
    fn frames_compress_text_on_the_stream_and_leave_noise_raw() {
        let text = b"ferry carries files across ".repeat(400);
        let mut noise = vec![0u8; 8_000];
        blake3::Hasher::new().finalize_xof().fill(&mut noise);
        let mut encoder = None;
        let mut decoder = compress::StreamDecoder::new().unwrap();
        for (data, compressed) in [(text.clone(), true), (noise, false), (text, true)] {
            let what = Read::File {
                stat: FileStat {
                    size: data.len() as u64,
                    mtime_ns: 0,
                    mode: 0o644,
                    ino: 0,
                    dev: 0,
                },
                hash: *blake3::hash(&data).as_bytes(),
                data: data.clone(),
                copy: None,
            };
            let entry = item("f", ScanKind::File, data.len() as u64).entry;
            let mut out = Vec::new();
            let wire = frames(
                &entry,
                &what,
                &mut encoder,
                compress::CompressMode::Auto,
                &mut out,
            )
            .unwrap();
            let mut rest = &out[..];
            let mut messages = Vec::new();
            while !rest.is_empty() {
                let len = u32::from_be_bytes(rest[..4].try_into().unwrap()) as usize;
                messages.push(postcard::from_bytes::<Message>(&rest[4..4 + len]).unwrap());
                rest = &rest[4 + len..];
            }
            assert_eq!(messages.len(), 3, "{messages:?}");
            assert!(matches!(messages[0], Message::Entry(_)));
            match &messages[1] {
                Message::Zstream(packed) => {
                    assert!(compressed);
                    assert_eq!(wire, packed.len() as u64);
                    assert_eq!(decoder.piece(packed).unwrap(), data);
                }
                Message::Data(raw) => {
                    assert!(!compressed);
                    assert_eq!(raw, &data);
                    assert_eq!(wire, data.len() as u64);
                }
                other => panic!("content as {other:?}"),
            }
            assert!(matches!(messages[2], Message::End { .. }));
        }
    }
}
