//! One sender's connection on the receiver, from the TLS handshake to its
//! close: the thin async driver that reads the streams, calls the store on
//! the blocking pool, runs the tasks, and asks the machines what to do.
//!
//! ## Layout
//!
//! - `admission`: the handshake without I/O: what the first message asks
//!   for, the pairing proof, the facts and the admission decision.
//! - `control`: the run's control stream (`Delete`, `Finish`, `Committed`)
//!   as a state machine without I/O, and its driver.
//! - `context`: what every stream of a run shares (store, namespace, the
//!   group commit queue, quota) and the helpers that make an entry's answer.
//! - `file`: one file stream: the driver of the pure entry machine
//!   (`receiver::entry`), handing each change to the group committer
//!   (`store::commit`).
//! - `sink`: where one file's content goes while it arrives (memory,
//!   staging, or a file rebuilt from chunks), and its verification.
//! - `bundle`: bundle streams, many small entries on one stream.
//! - `pair_tests` (tests): whole sessions against a scripted sender over an
//!   in-memory link.

pub(super) mod admission;
mod bundle;
mod context;
mod control;
mod file;
#[cfg(test)]
mod pair_tests;
mod sink;

use std::sync::atomic::AtomicU64;
use std::sync::Arc;
use std::time::Duration;

use ferry_proto::{Hello, Message, Refusal, RefuseCode, RunReport, Welcome};
use tokio::sync::OwnedSemaphorePermit;
use tokio::time::Instant;
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;

use self::admission::{Action, Asked, Event, Handshake, Known, Policy};
use self::context::RunContext;
use super::quota::QuotaBudget;
use super::{Shared, BUSY_RETRY, MAX_STREAMS_PER_SENDER};
use crate::identity::DeviceId;
use crate::link::Link;
use crate::ratelimit::RateLimiter;
use crate::status::Session;
use crate::store::{RunEnding, StoreError};
use crate::stream::{Channel, StreamError};
use crate::tls::TlsError;

/// QUIC application close codes.
const CLOSE_DONE: u32 = 0;
const CLOSE_REFUSED: u32 = 1;
const CLOSE_SHUTDOWN: u32 = 2;
const CLOSE_PROTOCOL: u32 = 3;

/// Why a session ended early.
#[derive(Debug, thiserror::Error)]
pub(crate) enum SessionError {
    #[error("handshake failed: no control stream in time")]
    NoControlStream,
    #[error("handshake failed: no Hello in time")]
    NoHello,
    #[error("handshake failed: the pairing proof could not be checked")]
    PairingMaterial(#[source] TlsError),
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
    #[error(transparent)]
    Cancelled(#[from] crate::tasks::Cancelled),
    #[error("the session's driver fed its control machine an event out of order")]
    OutOfOrder,
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
    serve_connection(conn, shared, shutdown, deadline, pending).await;
}

/// Serves one connection to its end, as [`handle`] does once the TLS
/// handshake is done: without an endpoint, over any [`Link`] (the embedded
/// receiver and tests serve a `crate::link::memory` link this way). The
/// peer has the receiver's Hello timeout from now.
pub(crate) async fn serve(link: impl Link, shared: Arc<Shared>, shutdown: CancellationToken) {
    let Ok(pending) = shared.pending.clone().try_acquire_owned() else {
        tracing::warn!(remote = %link.remote_address(), "connection refused: too many connections are in the handshake");
        link.close(CLOSE_REFUSED, b"busy");
        return;
    };
    let deadline = Instant::now() + shared.hello_timeout;
    serve_connection(link, shared, shutdown, deadline, pending).await;
}

/// Serves one established connection to its end (see [`handle`]).
async fn serve_connection(
    conn: impl Link,
    shared: Arc<Shared>,
    shutdown: CancellationToken,
    deadline: Instant,
    pending: OwnedSemaphorePermit,
) {
    let remote = conn.remote_address();
    let peer = match conn.peer() {
        Ok(peer) => peer,
        Err(e) => {
            tracing::warn!(%remote, "no usable peer certificate: {}", crate::chain::Chain(&e));
            conn.close(CLOSE_REFUSED, b"no certificate");
            return;
        }
    };
    // The run's tasks (its file-stream acceptor and its committer), waited
    // for once the session is over.
    let tasks = TaskTracker::new();
    let result = session(&conn, peer, &shared, &shutdown, deadline, pending, &tasks).await;
    match result {
        Ok(()) => {}
        Err(SessionError::Refused(why)) => {
            tracing::warn!(%remote, peer = %peer, "refused: {why}");
            shared
                .status
                .set_error(format!("refused a sender from {remote}: {why}"));
        }
        Err(SessionError::Shutdown) => {
            conn.close(CLOSE_SHUTDOWN, b"receiver shutting down");
        }
        Err(e) => {
            tracing::warn!(%remote, peer = %peer, "session ended: {}", crate::chain::Chain(&e));
            shared.status.set_error(format!(
                "session with {remote} ended: {}",
                crate::chain::Chain(&e)
            ));
            // The reason reaches the sender, whose log then says what went
            // wrong here (a full disk, say) rather than only "closed".
            conn.close(CLOSE_PROTOCOL, close_reason(&e).as_bytes());
        }
    }
    // The run's file streams end with the connection; a sender that left
    // its control stream but not its connection is closed at shutdown.
    tasks.close();
    tokio::select! {
        _ = tasks.wait() => return,
        _ = shutdown.cancelled() => {}
    }
    conn.close(CLOSE_SHUTDOWN, b"receiver shutting down");
    tasks.wait().await;
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
    conn: &impl Link,
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
    conn.close(CLOSE_REFUSED, b"refused");
    SessionError::Refused(message)
}

/// Tells a sender to come back later, lets it read that, and ends.
async fn busy(conn: &impl Link, control: &mut Channel) {
    let busy = Message::Busy {
        retry_after_ms: BUSY_RETRY.as_millis() as u64,
    };
    let _ = control.send.send(&busy).await;
    control.send.finish();
    let _ = tokio::time::timeout(Duration::from_secs(2), conn.closed()).await;
}

async fn session<L: Link>(
    conn: &L,
    peer: DeviceId,
    shared: &Arc<Shared>,
    shutdown: &CancellationToken,
    deadline: Instant,
    pending: OwnedSemaphorePermit,
    tasks: &TaskTracker,
) -> Result<(), SessionError> {
    let mut control = tokio::time::timeout_at(deadline, conn.accept())
        .await
        .map_err(|_| SessionError::NoControlStream)??;
    let first = tokio::time::timeout_at(deadline, control.recv.recv_message())
        .await
        .map_err(|_| SessionError::NoHello)?;

    // Admission: who is it, and may it in? Then capacity: only admitted
    // senders take a slot.
    let mut handshake = Handshake::new(peer);
    let mut pending = Some(pending);
    let mut slot = None;
    let mut action = handshake.on(Event::First(first));
    let (Asked { hello, protection }, ctx, paired) = loop {
        let event = match action {
            Action::CheckProof(offered) => {
                let secret = shared.admission.pairing_secret.as_deref();
                let proof = admission::proof(offered.as_ref(), secret, || conn.pairing_material());
                Event::Proved(proof.map_err(SessionError::PairingMaterial)?)
            }
            Action::LookUp(hello) => {
                let known = look_up(shared, peer, &hello).await?;
                let policy = Policy {
                    allowed: shared.admission.allow.contains(&peer),
                    revoked: shared.access.is_revoked(&peer),
                    pairing_off: shared.access.pairing_off(),
                };
                Event::Found(known, policy)
            }
            Action::TakeSlot => {
                drop(pending.take());
                shared.access.track(&peer, conn);
                slot = shared.clients.clone().try_acquire_owned().ok();
                Event::Slot(slot.is_some())
            }
            Action::ServeRequests(open) => {
                drop(pending.take());
                super::requests::serve(conn, peer, shared, control, open, shutdown).await;
                return Ok(());
            }
            Action::Refuse { code, message } => {
                return Err(refuse(conn, &mut control, code, message).await);
            }
            Action::Busy(hello) => {
                tracing::info!(
                    remote = %conn.remote_address(), peer = %peer, name = %hello.name,
                    "sender told to retry later: all {} client slots are in use", shared.max_clients
                );
                busy(conn, &mut control).await;
                return Ok(());
            }
            Action::BeginRun {
                asked,
                known,
                register,
                paired,
            } => match begin_run(conn, peer, shared, &asked, known, register, tasks).await? {
                Begun::Run(ctx) => break (asked, ctx, paired),
                Begun::Refused(message) => {
                    let code = RefuseCode::Protection;
                    return Err(refuse(conn, &mut control, code, message).await);
                }
            },
        };
        action = handshake.on(event);
    };
    // Held until the run ends.
    let _slot = slot;
    if paired {
        tracing::info!(peer = %peer, name = %hello.name, "paired a new sender");
    }
    tracing::info!(remote = %conn.remote_address(), peer = %peer, name = %hello.name, folder = %hello.folder, protection = crate::store::protection::describe(&protection), run = ctx.run, "sender connected");
    if ctx.resync {
        tracing::warn!(
            name = %hello.name, folder = %hello.folder, last_run = hello.last_run,
            "this store does not hold every run the sender recorded as stored (it was put back from an older copy): the sender offers everything again"
        );
    }
    let welcomed = control
        .send
        .send(&Message::Welcome(Welcome {
            run_id: ctx.run,
            paired,
            max_streams: MAX_STREAMS_PER_SENDER,
            resync: ctx.resync,
        }))
        .await;
    if let Err(e) = welcomed {
        // The sender went away before the run started: the run ends here
        // as failed, not `running` until the receiver restarts.
        let (store, ns, run) = (shared.store.clone(), ctx.ns.clone(), ctx.run);
        let report = RunReport::default();
        let ended = crate::tasks::blocking(move || {
            store.finish_run(&ns, run, &report, 0, RunEnding::Failed)
        })
        .await;
        if let Err(end) = ended.map_err(SessionError::from).and_then(|r| Ok(r?)) {
            tracing::warn!(
                run = run,
                "could not record the run as failed: {}",
                crate::chain::Chain(&end)
            );
        }
        return Err(e.into());
    }

    shared.status.add(ctx.live.clone());
    // The acceptor stops with the run, through its own token.
    let stop = shutdown.child_token();
    let files = TaskTracker::new();
    tasks.spawn(file::accept_entries(
        conn.clone(),
        ctx.clone(),
        files.clone(),
        stop.clone(),
    ));
    let who = control::Who {
        peer,
        hello: &hello,
    };
    let result = control::drive(conn, who, &ctx, control, &files, shutdown).await;
    stop.cancel();
    shared.status.remove(&ctx.live);
    result
}

/// What the store knows about `peer` and the name and folder of `hello`.
async fn look_up(shared: &Shared, peer: DeviceId, hello: &Hello) -> Result<Known, SessionError> {
    let store = shared.store.clone();
    let device = peer.to_string();
    let name = hello.name.clone();
    let folder = hello.folder.clone();
    let known = crate::tasks::blocking(move || -> Result<Known, StoreError> {
        let by_device = store.sender_by_device(&device)?;
        let (folder_known, protection) = match &by_device {
            Some(sender) => (
                store.folder_known(sender, &folder)?,
                store.recorded_protection(sender, &folder)?,
            ),
            None => (false, None),
        };
        Ok(Known {
            by_device,
            by_name: store.sender_by_name(&name)?,
            folder_known,
            protection,
        })
    })
    .await??;
    Ok(known)
}

/// How beginning a run went.
enum Begun {
    /// The run is open.
    Run(Arc<RunContext>),
    /// Another session fixed the folder's protection to another one since
    /// the look-up: refuse with this message.
    Refused(String),
}

/// Registers the sender if it must be, fixes the folder's protection if it
/// has none, opens its run, and starts the run's group committer in `tasks`.
async fn begin_run(
    conn: &impl Link,
    peer: DeviceId,
    shared: &Shared,
    asked: &Asked,
    known: Known,
    register: bool,
    tasks: &TaskTracker,
) -> Result<Begun, SessionError> {
    let hello = &asked.hello;
    let store = shared.store.clone();
    let device = peer.to_string();
    let for_store = asked.clone();
    let limit = shared.quota;
    let begun = crate::tasks::blocking(move || -> Result<_, StoreError> {
        let hello = &for_store.hello;
        let sender = match known.by_device {
            Some(sender) if !register => sender,
            _ => store.add_sender(&device, &hello.name)?,
        };
        let ns = store.namespace(&sender, &hello.folder);
        let fixed = store.fix_protection(&ns, &for_store.protection)?;
        if let Some(message) = admission::protection_refusal(hello, &fixed, &for_store.protection) {
            return Ok(Err(message));
        }
        let quota = match limit {
            Some(limit) => Some(QuotaBudget::new(
                limit,
                store.stored_bytes(sender.id)?,
                sender.name.clone(),
            )),
            None => None,
        };
        // Asked before the run begins: a run of the same namespace would
        // otherwise vouch for a `last_run` this catalog never gave.
        let resync = match hello.last_run {
            Some(last) => !store.vouches_for(&ns, last)?,
            None => false,
        };
        let run = store.begin_run(&ns)?;
        Ok(Ok((ns, run, quota, resync)))
    })
    .await??;
    let (ns, run, quota, resync) = match begun {
        Ok(begun) => begun,
        Err(message) => return Ok(Begun::Refused(message)),
    };
    let live = Arc::new(Session {
        peer: peer.to_string(),
        name: hello.name.to_string(),
        folder: hello.folder.to_string(),
        run,
        started: std::time::SystemTime::now(),
        entries: AtomicU64::new(0),
        bytes: AtomicU64::new(0),
    });
    let (commits, queue) = crate::store::commit::queue();
    {
        let (store, ns) = (shared.store.clone(), ns.clone());
        // Ends once every sender of the queue (the run's file tasks) is gone.
        tasks.spawn_blocking(move || crate::store::commit::committer(store, ns, run, queue));
    }
    Ok(Begun::Run(Arc::new(RunContext {
        store: shared.store.clone(),
        ns,
        run,
        live,
        commits,
        quota,
        resync,
        kept: Default::default(),
        limiter: shared.limit_rate.clone().map(|schedule| {
            // Keeps the connection's receive window sized to the rate.
            let link = conn.clone();
            RateLimiter::with_observer(schedule, move |rate| {
                link.set_receive_window(crate::ratelimit::receive_window(rate))
            })
        }),
    })))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn close_reasons_are_words_that_fit_a_packet() {
        let e = SessionError::Refused("é".repeat(400));
        let reason = close_reason(&e);
        assert!(reason.len() <= MAX_CLOSE_REASON);
        assert!(reason.starts_with("the receiver ended the session: refused: é"));
    }

    /// No error of a session prints the error it wraps, so each cause
    /// shows once in a chain (`{:#}`, `crate::chain::Chain`).
    #[test]
    fn no_session_error_prints_its_cause() {
        use std::error::Error;
        let peer = std::net::SocketAddr::from(([127, 0, 0, 1], 1));
        let errors = [
            SessionError::PairingMaterial(TlsError::Export { peer }),
            SessionError::Stream(StreamError::Read(std::io::Error::other("disk on fire"))),
            SessionError::Lost(quinn::ConnectionError::TimedOut),
            SessionError::Cancelled(crate::tasks::Cancelled),
        ];
        for e in errors {
            let own = e.to_string();
            let mut cause = e.source();
            while let Some(c) = cause {
                assert!(!own.contains(&c.to_string()), "{own:?} prints its cause");
                cause = c.source();
            }
            let chain = crate::chain::chain(&e);
            assert!(chain.starts_with(&own), "{chain}");
        }
    }
}
