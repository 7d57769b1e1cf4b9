//! One file stream of a run: the driver of the pure entry machine
//! ([`EntryReceiver`]): it reads the stream, carries out each [`Step`]
//! (look up what is held, open a [`Sink`], write, verify) and hands the
//! change to the run's group committer ([`crate::store::commit`]), then
//! answers `Stored` or `Failed`.

use std::sync::atomic::Ordering;
use std::sync::Arc;

use ferry_proto::{Entry, EntryKind, FailCode, Failure, Message};
use tokio::sync::{mpsc, oneshot};
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;

use super::bundle;
use super::sink::Sink;
use crate::link::Link;
use crate::receiver::entry::{EntryReceiver, Step};
use crate::receiver::quota::{QuotaBudget, Reservation};
use crate::receiver::rebuild::ChunkedFile;
use crate::status::Session;
use crate::store::commit::Commit;
use crate::store::{Namespace, Op, Store, StoreError};
use crate::stream::{Channel, StreamError};

/// What every file stream of one run needs.
pub(super) struct RunContext {
    pub store: Arc<Store>,
    pub ns: Namespace,
    pub run: u64,
    pub live: Arc<Session>,
    /// The run's group commit queue ([`crate::store::commit`]).
    pub commits: mpsc::Sender<Commit>,
    /// The sender's quota, if the receiver sets one.
    pub quota: Option<Arc<QuotaBudget>>,
    /// This connection's bandwidth limit (`--limit-rate`), if any.
    pub limiter: Option<Arc<crate::ratelimit::RateLimiter>>,
}

/// Reserves room in the sender's quota for `size` bytes of `entry`.
pub(super) fn reserve(
    ctx: &RunContext,
    entry: &Entry,
    size: u64,
) -> Result<Option<Reservation>, Failure> {
    ctx.quota
        .as_ref()
        .map(|q| q.reserve(&entry.path, size))
        .transpose()
}

/// Accepts file streams until the connection ends or `stop` is cancelled,
/// and runs each in a task of `files`.
pub(super) async fn accept_entries(
    link: impl Link,
    ctx: Arc<RunContext>,
    files: TaskTracker,
    stop: CancellationToken,
) {
    loop {
        let accepted = tokio::select! {
            _ = stop.cancelled() => return,
            accepted = link.accept() => accepted,
        };
        let Ok(channel) = accepted else { return };
        files.spawn(serve_stream(channel, ctx.clone()));
    }
}

/// Serves one file stream (an entry, or a bundle of them) to its answer.
async fn serve_stream(mut channel: Channel, ctx: Arc<RunContext>) {
    channel.recv.set_limiter(ctx.limiter.clone());
    let first = channel.recv.recv().await;
    if let Ok(Some(Message::Bundle)) = first {
        bundle::receive(channel, ctx).await;
        return;
    }
    let reply = match receive_entry(&mut channel, &ctx, first).await {
        Ok(()) => {
            ctx.live.entries.fetch_add(1, Ordering::Relaxed);
            Message::Stored
        }
        Err(failure) => {
            tracing::debug!("entry failed: {}", failure.message);
            channel.recv.stop();
            Message::Failed(failure)
        }
    };
    if channel.send.send(&reply).await.is_ok() {
        channel.send.finish();
    }
}

pub(super) fn failure(code: FailCode, message: impl Into<String>) -> Failure {
    Failure {
        code,
        message: message.into(),
    }
}

/// A store error as the entry's answer.
pub(super) fn store_failure(e: &StoreError) -> Failure {
    failure(e.fail_code(), crate::chain::chain(e))
}

/// Runs store work on the blocking pool; its error is the entry's answer.
pub(super) async fn on_store<T: Send + 'static>(
    f: impl FnOnce() -> Result<T, StoreError> + Send + 'static,
) -> Result<T, Failure> {
    match crate::tasks::blocking(f).await {
        Ok(done) => done.map_err(|e| store_failure(&e)),
        Err(cancelled) => Err(failure(FailCode::Io, cancelled.to_string())),
    }
}

/// Receives one entry, whose first message has been read already, and
/// stores it; `Err` is the failure to report.
async fn receive_entry(
    channel: &mut Channel,
    ctx: &Arc<RunContext>,
    first: Received,
) -> Result<(), Failure> {
    let mut machine = EntryReceiver::new();
    let mut content: Option<(Entry, Sink)> = None;
    // Held while content arrives; given back unless the file is stored.
    let mut reservation: Option<Reservation> = None;
    let result = receive_steps(
        channel,
        ctx,
        first,
        &mut machine,
        &mut content,
        &mut reservation,
    )
    .await;
    if let Some((_, sink)) = content {
        // Cut off or refused: a chunked transfer keeps what arrived when
        // the stream was lost, for the next attempt to resume.
        let lost =
            matches!(&result, Err(f) if f.code == FailCode::Aborted && f.message == STREAM_LOST);
        sink.abandon(lost).await;
    }
    result
}

/// Why a file stream ended without its content: the sender (or the
/// connection) went away.
const STREAM_LOST: &str = "stream ended before the entry was complete";

/// A message as read from a stream.
pub(super) type Received = Result<Option<Message>, StreamError>;

/// The next message of an entry from what was read: compressed content
/// decompressed, a stream that ended or broke turned into the failure.
pub(super) fn entry_message(received: Received) -> Result<Message, Failure> {
    match received {
        Ok(Some(Message::DataZstd(packed))) => crate::compress::decompress(&packed)
            .map(Message::Data)
            .map_err(|e| failure(FailCode::BadRequest, crate::chain::chain(&e))),
        Ok(Some(message)) => Ok(message),
        Ok(None) => Err(failure(FailCode::Aborted, STREAM_LOST)),
        Err(e) if e.is_lost() => Err(failure(FailCode::Aborted, STREAM_LOST)),
        Err(e) => Err(failure(FailCode::BadRequest, crate::chain::chain(&e))),
    }
}

async fn receive_steps(
    channel: &mut Channel,
    ctx: &Arc<RunContext>,
    first: Received,
    machine: &mut EntryReceiver,
    content: &mut Option<(Entry, Sink)>,
    reservation: &mut Option<Reservation>,
) -> Result<(), Failure> {
    let mut first = Some(first);
    loop {
        let received = match first.take() {
            Some(received) => received,
            None => channel.recv.recv().await,
        };
        let message = entry_message(received)?;
        let step = machine
            .on_message(message)
            .map_err(|v| failure(v.code, v.message))?;
        match step {
            Step::PutDir(entry) => return commit(ctx, Op::Dir(entry)).await,
            Step::PutSymlink(entry) => return commit(ctx, Op::Symlink(entry)).await,
            Step::CheckOffer { entry, hash } => {
                let c = ctx.clone();
                let path = entry.path.clone();
                let have = on_store(move || c.store.holds(&c.ns, &path, &hash)).await?;
                match machine.offer_answered(have) {
                    None => return commit(ctx, Op::Metadata { entry, hash }).await,
                    Some(want) => {
                        let size = file_size(&entry);
                        *reservation = reserve(ctx, &entry, size)?;
                        channel
                            .send
                            .send(&want)
                            .await
                            .map_err(|e| failure(FailCode::Io, crate::chain::chain(&e)))?;
                        let sink = Sink::open(ctx, &entry, size).await?;
                        *content = Some((entry, sink));
                    }
                }
            }
            Step::CheckChunked { entry, base } => {
                let size = file_size(&entry);
                *reservation = reserve(ctx, &entry, size)?;
                let (store, ns, e) = (ctx.store.clone(), ctx.ns.clone(), entry.clone());
                let run = ctx.run;
                let (file, lens, resume) =
                    on_store(move || ChunkedFile::open(store, ns, run, &e, size, base.as_ref()))
                        .await?;
                let go = machine.chunked_answered(lens.as_deref(), resume.clone());
                *content = Some((entry, Sink::chunked(file, resume.is_some())));
                if let Some(go) = go {
                    channel
                        .send
                        .send(&go)
                        .await
                        .map_err(|e| failure(FailCode::Io, crate::chain::chain(&e)))?;
                }
            }
            Step::Begin { entry, size } => {
                *reservation = reserve(ctx, &entry, size)?;
                let sink = Sink::open(ctx, &entry, size).await?;
                *content = Some((entry, sink));
            }
            Step::Write(data) => {
                let Some((entry, sink)) = content.take() else {
                    return Err(failure(FailCode::BadRequest, "data without an entry"));
                };
                ctx.live
                    .bytes
                    .fetch_add(data.len() as u64, Ordering::Relaxed);
                *content = Some((entry, sink.write(data).await?));
            }
            Step::Copy { start, count, len } => {
                let Some((entry, sink)) = content.take() else {
                    return Err(failure(FailCode::BadRequest, "copy without an entry"));
                };
                ctx.live.bytes.fetch_add(len, Ordering::Relaxed);
                *content = Some((entry, sink.copy(start, count).await?));
            }
            Step::Keep(_) => {
                // The kept prefix is already in place: only note it.
                if let Some((_, sink)) = content.as_mut() {
                    sink.kept();
                }
            }
            Step::Finish { hash } => {
                let Some((entry, sink)) = content.take() else {
                    return Err(failure(FailCode::BadRequest, "end without an entry"));
                };
                let staged = sink.finish(ctx, &entry, hash).await?;
                // What the quota keeps: the bytes on disk (holes are free).
                let on_disk = staged.stored();
                let stored = commit(ctx, Op::File { entry, staged }).await;
                if let (Ok(()), Some(reservation)) = (&stored, reservation.take()) {
                    reservation.keep_as(on_disk);
                }
                return stored;
            }
            Step::Aborted(reason) => {
                return Err(failure(
                    FailCode::Aborted,
                    format!("the sender gave up: {reason}"),
                ));
            }
        }
    }
}

fn file_size(entry: &Entry) -> u64 {
    match entry.kind {
        EntryKind::File { size, .. } => size,
        _ => 0,
    }
}

/// Hands a change to the run's committer and waits until it is durable.
pub(super) async fn commit(ctx: &Arc<RunContext>, op: Op) -> Result<(), Failure> {
    let (tx, rx) = oneshot::channel();
    ctx.commits
        .send((op, tx))
        .await
        .map_err(|_| failure(FailCode::Io, "the receiver is shutting down this run"))?;
    match rx.await {
        Ok(result) => result.map_err(|e| failure(e.fail_code(), crate::chain::chain(&e))),
        Err(_) => Err(failure(
            FailCode::Io,
            "the change was not committed (internal error)",
        )),
    }
}

#[cfg(test)]
pub(super) mod testing {
    //! A run's context on a real store in a temporary directory, with its
    //! committer running, for tests that drive file and bundle streams.

    use std::sync::atomic::AtomicU64;

    use super::*;

    /// A run in progress: its context, and the committer's thread (which
    /// ends once every clone of the context is dropped).
    pub(crate) struct TestRun {
        pub dir: tempfile::TempDir,
        pub ctx: Arc<RunContext>,
        pub committer: std::thread::JoinHandle<()>,
    }

    impl TestRun {
        /// Drops the run's context and waits for its committer, which ends
        /// once no task holds the context (none was left behind).
        #[allow(clippy::unwrap_used)] // a failing unwrap is a failing test
        pub(crate) fn end(self) {
            drop(self.ctx);
            self.committer.join().unwrap();
        }
    }

    #[allow(clippy::unwrap_used)] // a failing unwrap is a failing test
    pub(crate) fn run() -> TestRun {
        let (dir, store, ns) = crate::store::tests::fixture();
        let store = Arc::new(store);
        let run = store.begin_run(&ns).unwrap();
        let (commits, queue) = crate::store::commit::queue();
        let committer = {
            let (store, ns) = (store.clone(), ns.clone());
            std::thread::spawn(move || crate::store::commit::committer(store, ns, run, queue))
        };
        let live = Arc::new(Session {
            peer: "peer".into(),
            name: "lap".into(),
            folder: "docs".into(),
            run,
            started: std::time::SystemTime::now(),
            entries: AtomicU64::new(0),
            bytes: AtomicU64::new(0),
        });
        let ctx = Arc::new(RunContext {
            store,
            ns,
            run,
            live,
            commits,
            quota: None,
            limiter: None,
        });
        TestRun {
            dir,
            ctx,
            committer,
        }
    }
}
