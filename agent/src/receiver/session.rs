//! One sender's connection on the receiver: handshake, admission, the control
//! stream, and one task per file stream.

use std::collections::HashSet;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::Duration;

use ferry_proto::{
    Entry, EntryKind, FailCode, Failure, Hash, Hello, Message, PathFailure, Refusal, RefuseCode,
    RunReport, Welcome,
};
use tokio::sync::{mpsc, oneshot, OwnedSemaphorePermit};
use tokio::time::Instant;
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;

use super::admission::{decide, Facts, Proof, Verdict};
use super::chunked::{ChunkOp, ChunkedFile};
use super::entry::{EntryReceiver, Step};
use super::quota::{QuotaBudget, Reservation};
use super::{Shared, BUSY_RETRY, MAX_STREAMS_PER_SENDER};
use crate::identity::DeviceId;
use crate::status::Session;
use crate::store::{Namespace, Op, RunEnding, Staged, Store, StoreError, Verified};
use crate::stream::{Channel, StreamError};
use crate::tls;

/// QUIC application close codes.
const CLOSE_DONE: u32 = 0;
const CLOSE_REFUSED: u32 = 1;
const CLOSE_SHUTDOWN: u32 = 2;
const CLOSE_PROTOCOL: u32 = 3;

/// Why a session ended early.
#[derive(Debug, thiserror::Error)]
enum SessionError {
    #[error("handshake failed: {0}")]
    Handshake(String),
    #[error(transparent)]
    Stream(#[from] StreamError),
    #[error("refused: {0}")]
    Refused(String),
    #[error(transparent)]
    Store(#[from] StoreError),
    #[error("connection lost")]
    Lost(#[from] quinn::ConnectionError),
    #[error("receiver shutting down")]
    Shutdown,
    #[error("internal error: {0}")]
    Internal(String),
}

/// Runs `f` on the blocking pool.
async fn blocking<T: Send + 'static>(
    f: impl FnOnce() -> Result<T, StoreError> + Send + 'static,
) -> Result<T, SessionError> {
    match tokio::task::spawn_blocking(f).await {
        Ok(result) => result.map_err(SessionError::Store),
        Err(e) => Err(SessionError::Internal(crate::chain::chain(&e))),
    }
}

/// Handles one incoming connection to its end; never panics, logs outcomes.
/// `pending` is its slot among the not-yet-admitted connections, given back
/// once the peer has said `Hello` and been admitted (or said `Open`).
pub(crate) async fn handle(
    incoming: quinn::Incoming,
    shared: Arc<Shared>,
    shutdown: CancellationToken,
    pending: OwnedSemaphorePermit,
) {
    let remote = incoming.remote_address();
    // One deadline for handshake, control stream and Hello together.
    let deadline = Instant::now() + shared.hello_timeout;
    let conn = match tokio::time::timeout_at(deadline, incoming).await {
        Ok(Ok(conn)) => conn,
        Ok(Err(e)) => {
            tracing::debug!(%remote, "handshake failed: {}", crate::chain::Chain(&e));
            return;
        }
        Err(_) => {
            tracing::debug!(%remote, "handshake timed out");
            return;
        }
    };
    let peer = match tls::peer_id(&conn) {
        Ok(peer) => peer,
        Err(e) => {
            tracing::warn!(%remote, "no usable peer certificate: {}", crate::chain::Chain(&e));
            conn.close(quinn::VarInt::from_u32(CLOSE_REFUSED), b"no certificate");
            return;
        }
    };
    match session(&conn, peer, &shared, &shutdown, deadline, pending).await {
        Ok(()) => {}
        Err(SessionError::Refused(why)) => {
            tracing::warn!(%remote, peer = %peer, "refused: {why}");
            shared
                .status
                .set_error(format!("refused a sender from {remote}: {why}"));
        }
        Err(SessionError::Shutdown) => {
            conn.close(
                quinn::VarInt::from_u32(CLOSE_SHUTDOWN),
                b"receiver shutting down",
            );
        }
        Err(e) => {
            tracing::warn!(%remote, peer = %peer, "session ended: {}", crate::chain::Chain(&e));
            shared.status.set_error(format!(
                "session with {remote} ended: {}",
                crate::chain::Chain(&e)
            ));
            // The reason reaches the sender, whose log then says what went
            // wrong here (a full disk, say) rather than only "closed".
            conn.close(
                quinn::VarInt::from_u32(CLOSE_PROTOCOL),
                close_reason(&e).as_bytes(),
            );
        }
    }
}

/// A close reason for the sender: the error in words, cut to fit a packet.
fn close_reason(e: &SessionError) -> String {
    let mut reason = format!(
        "the receiver ended the session: {}",
        crate::chain::Chain(&e)
    );
    if reason.len() > MAX_CLOSE_REASON {
        let mut cut = MAX_CLOSE_REASON;
        while !reason.is_char_boundary(cut) {
            cut -= 1;
        }
        reason.truncate(cut);
    }
    reason
}

/// Longest close reason sent, in bytes (it must fit one packet).
const MAX_CLOSE_REASON: usize = 512;

/// Sends a refusal, lets it reach the sender, and closes.
async fn refuse(
    conn: &quinn::Connection,
    control: &mut Channel,
    code: RefuseCode,
    message: String,
) -> SessionError {
    let _ = control
        .send
        .send(&Message::Refused(Refusal {
            code,
            message: message.clone(),
        }))
        .await;
    control.send.finish();
    // The sender closes the connection when it has read the refusal.
    let _ = tokio::time::timeout(Duration::from_secs(2), conn.closed()).await;
    conn.close(quinn::VarInt::from_u32(CLOSE_REFUSED), b"refused");
    SessionError::Refused(message)
}

async fn session(
    conn: &quinn::Connection,
    peer: DeviceId,
    shared: &Arc<Shared>,
    shutdown: &CancellationToken,
    deadline: Instant,
    pending: OwnedSemaphorePermit,
) -> Result<(), SessionError> {
    let pair = tokio::time::timeout_at(deadline, conn.accept_bi())
        .await
        .map_err(|_| SessionError::Handshake("no control stream in time".into()))??;
    let mut control = Channel::new(pair);
    let hello = match tokio::time::timeout_at(deadline, control.recv.recv_message()).await {
        Err(_) => return Err(SessionError::Handshake("no Hello in time".into())),
        Ok(Ok(Message::Hello(hello))) => hello,
        Ok(Ok(Message::Open(open))) => {
            drop(pending);
            super::requests::serve(conn, peer, shared, control, open, shutdown).await;
            return Ok(());
        }
        Ok(Ok(other)) => {
            let message = format!("expected Hello, got {}", crate::stream::describe(&other));
            return Err(refuse(conn, &mut control, RefuseCode::BadRequest, message).await);
        }
        Ok(Err(e)) => {
            let message = format!("bad Hello: {}", crate::chain::Chain(&e));
            return Err(refuse(conn, &mut control, RefuseCode::BadRequest, message).await);
        }
    };

    // Admission: who is it, and may it in?
    let proof = match (&hello.pairing, &shared.admission.pairing_secret) {
        (None, _) => Proof::Absent,
        (Some(_), None) => Proof::NotAccepted,
        (Some(offered), Some(secret)) => {
            let material = tls::pairing_material(conn)
                .map_err(|e| SessionError::Handshake(crate::chain::chain(&e)))?;
            let expected = ferry_proto::pairing_proof(secret, &material);
            if ferry_proto::proofs_match(offered, &expected) {
                Proof::Valid
            } else {
                Proof::Invalid
            }
        }
    };
    let store = shared.store.clone();
    let device = peer.to_string();
    let name = hello.name.clone();
    let folder = hello.folder.clone();
    let (by_device, by_name, folder_known) = blocking(move || {
        let by_device = store.sender_by_device(&device)?;
        let folder_known = match &by_device {
            Some(sender) => store.folder_known(sender, &folder)?,
            None => false,
        };
        Ok((by_device, store.sender_by_name(&name)?, folder_known))
    })
    .await?;
    let facts = Facts {
        peer,
        hello: &hello,
        registered_as: by_device.as_ref().map(|s| &s.name),
        name_taken: by_name
            .as_ref()
            .is_some_and(|s| s.device != peer.to_string()),
        folder_known,
        allowed: shared.admission.allow.contains(&peer),
        proof,
        revoked: shared.access.is_revoked(&peer),
        pairing_off: shared.access.pairing_off(),
    };
    let (register, paired) = match decide(&facts) {
        Verdict::Admit { register, paired } => {
            drop(pending);
            shared.access.track(&peer, conn);
            (register, paired)
        }
        Verdict::Refuse { code, message } => {
            return Err(refuse(conn, &mut control, code, message).await)
        }
    };

    // Capacity: only admitted senders take a slot.
    let Ok(_slot) = shared.clients.clone().try_acquire_owned() else {
        tracing::info!(
            remote = %conn.remote_address(), peer = %peer, name = %hello.name,
            "sender told to retry later: all {} client slots are in use", shared.max_clients
        );
        let busy = Message::Busy {
            retry_after_ms: BUSY_RETRY.as_millis() as u64,
        };
        let _ = control.send.send(&busy).await;
        control.send.finish();
        let _ = tokio::time::timeout(Duration::from_secs(2), conn.closed()).await;
        return Ok(());
    };

    let store = shared.store.clone();
    let device = peer.to_string();
    let hello_name = hello.name.clone();
    let folder = hello.folder.clone();
    let limit = shared.quota;
    let (ns, run_id, quota) = blocking(move || {
        let sender = match by_device {
            Some(sender) if !register => sender,
            _ => store.add_sender(&device, &hello_name)?,
        };
        let quota = match limit {
            Some(limit) => Some(QuotaBudget::new(
                limit,
                store.stored_bytes(sender.id)?,
                sender.name.clone(),
            )),
            None => None,
        };
        let ns = store.namespace(&sender, &folder);
        let run = store.begin_run(&ns)?;
        Ok((ns, run, quota))
    })
    .await?;
    if paired {
        tracing::info!(peer = %peer, name = %hello.name, "paired a new sender");
    }
    tracing::info!(remote = %conn.remote_address(), peer = %peer, name = %hello.name, folder = %hello.folder, run = run_id, "sender connected");
    let welcomed = control
        .send
        .send(&Message::Welcome(Welcome {
            run_id,
            paired,
            max_streams: MAX_STREAMS_PER_SENDER,
        }))
        .await;
    if let Err(e) = welcomed {
        // The sender went away before the run started: the run ends here
        // as failed, not `running` until the receiver restarts.
        let (store, ns) = (shared.store.clone(), ns.clone());
        let report = RunReport::default();
        if let Err(end) =
            blocking(move || store.finish_run(&ns, run_id, &report, 0, RunEnding::Failed)).await
        {
            tracing::warn!(
                run = run_id,
                "could not record the run as failed: {}",
                crate::chain::Chain(&end)
            );
        }
        return Err(e.into());
    }

    let live = Arc::new(Session {
        peer: peer.to_string(),
        name: hello.name.to_string(),
        folder: hello.folder.to_string(),
        run: run_id,
        started: std::time::SystemTime::now(),
        entries: AtomicU64::new(0),
        bytes: AtomicU64::new(0),
    });
    shared.status.add(live.clone());
    let (commits, queue) = mpsc::unbounded_channel();
    {
        let (store, ns) = (shared.store.clone(), ns.clone());
        tokio::task::spawn_blocking(move || committer(store, ns, run_id, queue));
    }
    let ctx = Arc::new(RunContext {
        store: shared.store.clone(),
        ns,
        run: run_id,
        live,
        commits,
        quota,
        limiter: shared
            .limit_rate
            .clone()
            .map(|s| crate::ratelimit::for_connection(conn, s)),
    });
    let result = serve_run(conn, peer, shared, &ctx, control, &hello, shutdown).await;
    shared.status.remove(&ctx.live);
    result
}

/// Serves an admitted sender's run until it finishes or goes away.
async fn serve_run(
    conn: &quinn::Connection,
    peer: DeviceId,
    shared: &Arc<Shared>,
    ctx: &Arc<RunContext>,
    mut control: Channel,
    hello: &Hello,
    shutdown: &CancellationToken,
) -> Result<(), SessionError> {
    let run_id = ctx.run;
    let files = TaskTracker::new();
    let acceptor = tokio::spawn(accept_entries(conn.clone(), ctx.clone(), files.clone()));
    let outcome = control_loop(&mut control, ctx, &files, hello, shutdown).await;
    acceptor.abort();
    let bytes_received = conn.stats().udp_rx.bytes;
    let ending = match &outcome {
        Ok(Some(_)) => RunEnding::Complete,
        Ok(None) | Err(SessionError::Shutdown) => RunEnding::Interrupted,
        Err(_) => RunEnding::Failed,
    };
    let report = match &outcome {
        Ok(Some(report)) => report.clone(),
        _ => RunReport {
            files_sent: ctx.live.entries.load(Ordering::Relaxed),
            ..RunReport::default()
        },
    };
    let store = shared.store.clone();
    let ns = ctx.ns.clone();
    let logged = report.clone();
    let recorded =
        blocking(move || store.finish_run(&ns, run_id, &report, bytes_received, ending)).await;
    log_run_end(ctx, peer, hello, ending, &logged, bytes_received);
    recorded?;
    match outcome {
        Ok(Some(_)) => {
            control.send.send(&Message::Committed { run_id }).await?;
            control.send.finish();
            tracing::debug!(peer = %peer, name = %hello.name, run = run_id, "run committed");
            // The sender closes once it has read `Committed`.
            let _ = tokio::time::timeout(Duration::from_secs(5), conn.closed()).await;
            conn.close(quinn::VarInt::from_u32(CLOSE_DONE), b"done");
            Ok(())
        }
        Ok(None) => {
            tracing::warn!(peer = %peer, run = run_id, "sender left before finishing the run; recorded as interrupted");
            Ok(())
        }
        Err(e) => Err(e),
    }
}

/// The one line an admin reads per run: who, what, how much, how long, and
/// how it ended (`completed`, `failed`, or `interrupted` when the sender left
/// or the receiver stopped).
fn log_run_end(
    ctx: &RunContext,
    peer: DeviceId,
    hello: &Hello,
    ending: RunEnding,
    report: &RunReport,
    bytes_received: u64,
) {
    let result = match ending {
        RunEnding::Complete => "completed",
        RunEnding::Interrupted => "interrupted",
        RunEnding::Failed => "failed",
    };
    let duration = ctx.live.started.elapsed().unwrap_or_default();
    tracing::info!(
        peer = %peer,
        sender = %hello.name,
        folder = %hello.folder,
        run = ctx.run,
        result = %result,
        files = report.files_sent,
        unchanged = report.files_unchanged,
        deleted = report.files_deleted,
        bytes = report.bytes_file_data,
        bytes_received,
        failures = report.errors,
        duration_ms = duration.as_millis() as u64,
        "run {result}: {} file(s) sent ({}), {} failed, {:.1}s",
        report.files_sent,
        crate::summary::human_bytes(report.bytes_file_data),
        report.errors,
        duration.as_secs_f64(),
    );
}

mod bundle;

/// What every file stream of one run needs.
struct RunContext {
    store: Arc<Store>,
    ns: Namespace,
    run: u64,
    live: Arc<Session>,
    commits: mpsc::UnboundedSender<Commit>,
    /// The sender's quota, if the receiver sets one.
    quota: Option<Arc<QuotaBudget>>,
    /// This connection's bandwidth limit (`--limit-rate`), if any.
    limiter: Option<Arc<crate::ratelimit::RateLimiter>>,
}

/// Reserves room in the sender's quota for `size` bytes of `entry`.
fn reserve(ctx: &RunContext, entry: &Entry, size: u64) -> Result<Option<Reservation>, Failure> {
    ctx.quota
        .as_ref()
        .map(|q| q.reserve(&entry.path, size))
        .transpose()
}

/// Reads the control stream until `Finish` (returns its report) or until the
/// sender goes away (returns `None`).
async fn control_loop(
    control: &mut Channel,
    ctx: &Arc<RunContext>,
    files: &TaskTracker,
    hello: &Hello,
    shutdown: &CancellationToken,
) -> Result<Option<RunReport>, SessionError> {
    loop {
        let message = tokio::select! {
            _ = shutdown.cancelled() => return Err(SessionError::Shutdown),
            message = control.recv.recv() => message,
        };
        match message {
            Ok(Some(Message::Delete { paths })) => {
                let ctx2 = ctx.clone();
                let failed = blocking(move || {
                    let mut failed = Vec::new();
                    for path in paths {
                        if let Err(e) = ctx2.store.delete(&ctx2.ns, ctx2.run, &path) {
                            failed.push(PathFailure {
                                path,
                                failure: Failure {
                                    code: e.fail_code(),
                                    message: crate::chain::chain(&e),
                                },
                            });
                        }
                    }
                    Ok(failed)
                })
                .await?;
                control.send.send(&Message::Deleted { failed }).await?;
            }
            Ok(Some(Message::Finish(report))) => {
                // Every entry was answered before the sender said Finish;
                // wait for their tasks to wind down all the same.
                files.close();
                files.wait().await;
                return Ok(Some(report));
            }
            Ok(Some(other)) => {
                let got = crate::stream::describe(&other);
                let message = format!("unexpected {got} on the control stream of {}", hello.name);
                let _ = control
                    .send
                    .send(&Message::Refused(Refusal {
                        code: RefuseCode::BadRequest,
                        message: message.clone(),
                    }))
                    .await;
                return Err(SessionError::Refused(message));
            }
            Ok(None) | Err(StreamError::Read(_)) => return Ok(None),
            Err(e) => return Err(e.into()),
        }
    }
}

/// Accepts file streams and spawns one task each.
async fn accept_entries(conn: quinn::Connection, ctx: Arc<RunContext>, files: TaskTracker) {
    while let Ok(pair) = conn.accept_bi().await {
        let ctx = ctx.clone();
        files.spawn(async move {
            let mut channel = Channel::new(pair);
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
        });
    }
}

fn failure(code: FailCode, message: impl Into<String>) -> Failure {
    Failure {
        code,
        message: message.into(),
    }
}

fn store_failure(e: SessionError) -> Failure {
    match e {
        SessionError::Store(e) => failure(e.fail_code(), crate::chain::chain(&e)),
        other => failure(FailCode::Io, other.to_string()),
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
type Received = Result<Option<Message>, StreamError>;

/// The next message of an entry from what was read: compressed content
/// decompressed, a stream that ended or broke turned into the failure.
fn entry_message(received: Received) -> Result<Message, Failure> {
    match received {
        Ok(Some(Message::DataZstd(packed))) => crate::compress::decompress(&packed)
            .map(Message::Data)
            .map_err(|e| failure(FailCode::BadRequest, crate::chain::chain(&e))),
        Ok(Some(message)) => Ok(message),
        Ok(None) | Err(StreamError::Read(_)) => Err(failure(FailCode::Aborted, STREAM_LOST)),
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
                let have = blocking(move || c.store.holds(&c.ns, &path, &hash))
                    .await
                    .map_err(store_failure)?;
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
                    blocking(move || ChunkedFile::open(store, ns, run, &e, size, base.as_ref()))
                        .await
                        .map_err(store_failure)?;
                let go = machine.chunked_answered(lens.as_deref(), resume.clone());
                *content = Some((
                    entry,
                    Sink::Chunked {
                        file: Box::new(file),
                        pending: Vec::new(),
                        data: Vec::with_capacity(CHUNK_BATCH + crate::chunk::MAX_CHUNK),
                        pending_bytes: 0,
                        first: resume.is_some(),
                    },
                ));
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
                if let Some((_, Sink::Chunked { first, .. })) = content.as_mut() {
                    *first = false;
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

/// Files up to this size are received into memory and written to staging in
/// one go; larger ones are streamed to staging as they arrive.
const SMALL_FILE: u64 = 128 * 1024;

/// Chunked content is applied to staging in batches of about this size.
const CHUNK_BATCH: usize = 1 << 20;

/// Where a file's content goes while it arrives.
enum Sink {
    Memory(Vec<u8>),
    Staged(Box<Staged>),
    Chunked {
        file: Box<ChunkedFile>,
        /// Operations waiting to be applied; new chunks' bytes are in
        /// `data`, one buffer per stream, reused batch after batch (the
        /// frames they came in are freed on this thread at once).
        pending: Vec<ChunkOp>,
        data: Vec<u8>,
        pending_bytes: usize,
        /// True until the first operation: a kept prefix not confirmed by
        /// `Keep` is dropped then.
        first: bool,
    },
}

impl Sink {
    async fn open(ctx: &Arc<RunContext>, entry: &Entry, size: u64) -> Result<Sink, Failure> {
        if size <= SMALL_FILE {
            return Ok(Sink::Memory(Vec::with_capacity(size as usize)));
        }
        let c = ctx.clone();
        let path = entry.path.clone();
        let staged = blocking(move || c.store.stage(&c.ns, &path, size))
            .await
            .map_err(store_failure)?;
        Ok(Sink::Staged(Box::new(staged)))
    }

    async fn write(self, data: Vec<u8>) -> Result<Sink, Failure> {
        match self {
            Sink::Memory(mut buf) => {
                buf.extend_from_slice(&data);
                Ok(Sink::Memory(buf))
            }
            Sink::Staged(mut staged) => {
                let staged = blocking(move || {
                    staged.write(&data)?;
                    Ok(staged)
                })
                .await
                .map_err(store_failure)?;
                Ok(Sink::Staged(staged))
            }
            Sink::Chunked { .. } => self.push(ChunkOp::Write(data.len() as u32), &data).await,
        }
    }

    async fn copy(self, start: u32, count: u32) -> Result<Sink, Failure> {
        // A copy costs the receiver a read; count it like about a chunk each.
        let weight = count as usize * crate::chunk::AVG_CHUNK;
        self.push_weighted(ChunkOp::Copy { start, count }, &[], weight)
            .await
    }

    async fn push(self, op: ChunkOp, bytes: &[u8]) -> Result<Sink, Failure> {
        self.push_weighted(op, bytes, bytes.len()).await
    }

    /// Queues a chunked operation; applies the queue once it is large.
    async fn push_weighted(
        self,
        op: ChunkOp,
        bytes: &[u8],
        weight: usize,
    ) -> Result<Sink, Failure> {
        let Sink::Chunked {
            file,
            mut pending,
            mut data,
            mut pending_bytes,
            first,
        } = self
        else {
            return Err(failure(
                FailCode::BadRequest,
                "chunk outside chunked content",
            ));
        };
        pending.push(op);
        data.extend_from_slice(bytes);
        pending_bytes += weight;
        let mut sink = Sink::Chunked {
            file,
            pending,
            data,
            pending_bytes,
            first,
        };
        if pending_bytes >= CHUNK_BATCH {
            sink = sink.flush().await?;
        }
        Ok(sink)
    }

    /// Applies queued chunked operations.
    async fn flush(self) -> Result<Sink, Failure> {
        let Sink::Chunked {
            mut file,
            mut pending,
            mut data,
            first,
            ..
        } = self
        else {
            return Ok(self);
        };
        let (file, pending, data) = blocking(move || {
            if first {
                file.restart()?;
            }
            file.apply(&pending, &data)?;
            pending.clear();
            data.clear();
            Ok((file, pending, data))
        })
        .await
        .map_err(store_failure)?;
        Ok(Sink::Chunked {
            file,
            pending,
            data,
            pending_bytes: 0,
            first: false,
        })
    }

    /// The entry ended without being stored. `lost`: the stream was cut
    /// off, so chunked content keeps what arrived for the next attempt.
    async fn abandon(self, lost: bool) {
        if !matches!(self, Sink::Chunked { .. }) {
            return;
        }
        let sink = if lost { self.flush().await } else { Ok(self) };
        if let Ok(Sink::Chunked { file, .. }) = sink {
            let _ = tokio::task::spawn_blocking(move || {
                if lost {
                    file.interrupted();
                } else {
                    file.discard();
                }
            })
            .await;
        }
    }

    /// Verifies the content against `hash`; it is then ready to commit.
    async fn finish(
        self,
        ctx: &Arc<RunContext>,
        entry: &Entry,
        hash: Hash,
    ) -> Result<Verified, Failure> {
        if let Sink::Chunked { .. } = self {
            let Sink::Chunked { file, .. } = self.flush().await? else {
                return Err(failure(FailCode::Io, "chunked content lost its file"));
            };
            return blocking(move || file.finish(&hash))
                .await
                .map_err(store_failure);
        }
        let c = ctx.clone();
        let path = entry.path.clone();
        blocking(move || match self {
            Sink::Memory(buf) => {
                let mut staged = c.store.stage(&c.ns, &path, buf.len() as u64)?;
                staged.write(&buf)?;
                staged.finish(&hash)
            }
            Sink::Staged(staged) => (*staged).finish(&hash),
            Sink::Chunked { .. } => Err(StoreError::BadEntry {
                path,
                detail: "chunked content".into(),
            }),
        })
        .await
        .map_err(store_failure)
    }
}

/// One change waiting for the run's committer, and where its result goes.
type Commit = (Op, Reply);

/// Most changes made durable together.
const MAX_BATCH: usize = 1024;

/// Hands a change to the run's committer and waits until it is durable.
async fn commit(ctx: &Arc<RunContext>, op: Op) -> Result<(), Failure> {
    let (tx, rx) = oneshot::channel();
    ctx.commits
        .send((op, tx))
        .map_err(|_| failure(FailCode::Io, "the receiver is shutting down this run"))?;
    match rx.await {
        Ok(result) => result.map_err(|e| failure(e.fail_code(), crate::chain::chain(&e))),
        Err(_) => Err(failure(
            FailCode::Io,
            "the change was not committed (internal error)",
        )),
    }
}

/// Group commit, on a thread of its own for the run: takes every change
/// that is waiting (up to [`MAX_BATCH`]), makes it on disk, and answers it
/// once it is durable and recorded. One `syncfs` serves two batches: it
/// makes the names of the batch made last durable and, at once, the content
/// of the batch about to be made (staged before it was handed over). While
/// a batch is flushed and made, the next one gathers. A batch holds the
/// store's write lock from the moment it is made until it is recorded.
fn committer(store: Arc<Store>, ns: Namespace, run: u64, mut rx: mpsc::UnboundedReceiver<Commit>) {
    let mut held: Option<Commit> = None;
    let mut pending: Option<(crate::store::Applied<'_>, Vec<Reply>)> = None;
    loop {
        // Wait for work only when nothing is left to record.
        let batch = gather(&mut rx, &mut held, pending.is_none());
        if batch.is_empty() && pending.is_none() {
            return;
        }
        let content = batch.iter().any(|(op, _)| matches!(op, Op::File { .. }));
        let started = std::time::Instant::now();
        let flushed = match pending.is_some() || content {
            true => store.flush().map_err(|e| crate::chain::chain(&e)),
            false => Ok(()),
        };
        if let Some((applied, replies)) = pending.take() {
            let count = replies.len();
            let results = store.record_applied(applied, flushed.clone());
            tracing::debug!(
                count,
                ms = started.elapsed().as_millis() as u64,
                "batch committed"
            );
            for (result, reply) in results.into_iter().zip(replies) {
                let _ = reply.send(result);
            }
        }
        if batch.is_empty() {
            continue;
        }
        let (ops, replies): (Vec<Op>, Vec<Reply>) = batch.into_iter().unzip();
        if let (Err(message), true) = (&flushed, content) {
            // The content may not be durable: none of it is put in place.
            for (op, reply) in ops.iter().zip(replies) {
                let _ = reply.send(Err(StoreError::BatchFailed {
                    path: op.path().clone(),
                    detail: message.clone(),
                }));
            }
            continue;
        }
        pending = Some((store.apply_ops(&ns, run, ops), replies));
    }
}

/// Where the result of one change goes.
type Reply = oneshot::Sender<Result<(), StoreError>>;

/// The changes waiting, for distinct paths, at most [`MAX_BATCH`]; with
/// `wait`, at least one unless the run is over. The same path twice waits
/// in `held` for the next batch.
fn gather(
    rx: &mut mpsc::UnboundedReceiver<Commit>,
    held: &mut Option<Commit>,
    wait: bool,
) -> Vec<Commit> {
    let first = match held.take() {
        Some(commit) => commit,
        None if wait => match rx.blocking_recv() {
            Some(commit) => commit,
            None => return Vec::new(),
        },
        None => match rx.try_recv() {
            Ok(commit) => commit,
            Err(_) => return Vec::new(),
        },
    };
    let mut paths = HashSet::new();
    paths.insert(first.0.path().clone());
    let mut batch = vec![first];
    while batch.len() < MAX_BATCH {
        let Ok(next) = rx.try_recv() else { break };
        if !paths.insert(next.0.path().clone()) {
            *held = Some(next);
            break;
        }
        batch.push(next);
    }
    batch
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::store::tests::{file_entry, fixture};

    /// Changes handed to the committer all arrive, in order, durable and
    /// recorded, whether they land in one batch or in consecutive ones (the
    /// same path twice is split across two).
    #[test]
    #[allow(clippy::unwrap_used)] // a failing unwrap is a failing test
    fn the_committer_answers_every_change_once_it_is_recorded() {
        let (_dir, store, ns) = fixture();
        let store = Arc::new(store);
        let run = store.begin_run(&ns).unwrap();
        let (tx, rx) = mpsc::unbounded_channel();
        let worker = {
            let (store, ns) = (store.clone(), ns.clone());
            std::thread::spawn(move || committer(store, ns, run, rx))
        };
        let mut answers = Vec::new();
        for (i, (path, data)) in [("a", "one"), ("b", "two"), ("a", "three"), ("c", "four")]
            .into_iter()
            .enumerate()
        {
            let entry = file_entry(path, data.as_bytes(), i as i64, 0o644);
            let mut staged = store.stage(&ns, &entry.path, data.len() as u64).unwrap();
            staged.write(data.as_bytes()).unwrap();
            let staged = staged
                .finish(blake3::hash(data.as_bytes()).as_bytes())
                .unwrap();
            let (reply, answer) = oneshot::channel();
            tx.send((Op::File { entry, staged }, reply)).unwrap();
            answers.push(answer);
        }
        for answer in answers {
            answer.blocking_recv().unwrap().unwrap();
        }
        drop(tx);
        worker.join().unwrap();
        let mirror = store.root().join("lap/docs");
        assert_eq!(std::fs::read(mirror.join("a")).unwrap(), b"three");
        assert_eq!(std::fs::read(mirror.join("c")).unwrap(), b"four");
        let versions = store.versions(&ns, &crate::store::tests::rel("a")).unwrap();
        assert_eq!(versions.len(), 2, "{versions:?}");
        assert_eq!(store.current(&ns).unwrap().len(), 3);
    }

    #[test]
    fn close_reasons_are_words_that_fit_a_packet() {
        let e = SessionError::Internal("é".repeat(400));
        let reason = close_reason(&e);
        assert!(reason.len() <= MAX_CLOSE_REASON);
        assert!(reason.starts_with("the receiver ended the session: internal error: é"));
    }
}
