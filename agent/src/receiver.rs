//! The receiver: accepts senders over QUIC, admits the known ones, caps how
//! many are served at once, and stores what they send.
//!
//! Shutdown order (one root token, each connection a child): stop accepting;
//! every session sees its token cancelled and closes its connection (files in
//! flight stay in staging and are discarded; nothing partial reaches the
//! mirror; the run is recorded as interrupted); wait for all sessions; close
//! the endpoint and wait until it is idle; drop it and wait until its UDP
//! socket is closed, so the port can be bound again at once.
//!
//! ## Layout
//!
//! - `session`: one sender's connection, from the handshake to its close
//!   (admission, the run's control stream, file and bundle streams); its
//!   changes go to the run's group committer, [`crate::store::commit`].
//! - `entry`: one file stream's message order, a pure state machine
//!   ([`EntryReceiver`]), fuzzed by `entry_fuzz`.
//! - `rebuild`: a file rebuilt in staging from a base's chunks and new
//!   ones, resumable after an interruption.
//! - `requests`: the read-only request server (history, versions, listing,
//!   restore fetches) for a sender that says `Open`.
//! - `access`: the admin's revocations and pairing switch, re-read while
//!   serving; the live record of who is connected.
//! - `quota`: the bytes each sender may store.
//! - `pruning`: the retention policy applied on a schedule.

mod access;
mod entry;
#[cfg(any(test, feature = "fuzz"))]
#[doc(hidden)]
pub mod entry_fuzz;
pub mod pruning;
mod quota;
mod rebuild;
pub(crate) mod requests;
mod session;
pub(crate) use session::serve;

pub use entry::{EntryReceiver, Step, Violation};
pub use session::admission::{decide, Facts, Proof, Verdict};

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use tokio::sync::Semaphore;
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;

use crate::config::ReceiverSettings;
use crate::identity::{DeviceId, Identity, IdentityError};
use crate::ratelimit::RateSchedule;
use crate::status::ReceiverStatus;
use crate::store::{Retention, Store, StoreError};
use crate::transport::{self, TransportError};

/// Files a sender may have in flight at once on one connection.
pub const MAX_STREAMS_PER_SENDER: u32 = 256;
/// How long a sender has, from its first packet, to complete the handshake
/// and say `Hello` (or `Open`): one deadline for the whole phase.
pub const HELLO_TIMEOUT: Duration = Duration::from_secs(10);
/// Connections at once in the handshake-and-Hello phase, before admission.
/// More are refused at once at the QUIC level (the peer retries later), so
/// a flood of connection attempts cannot grow the receiver's memory without
/// bound; admitted senders do not count (they are capped by `max_clients`).
pub const MAX_PENDING_SESSIONS: usize = 128;
/// How long a stopping receiver waits for its UDP socket to be closed (see
/// [`Receiver::serve`]); it takes milliseconds unless a connection handle
/// was leaked.
const SOCKET_RELEASE_LIMIT: Duration = Duration::from_secs(10);
/// The retry hint given to a sender turned away because the receiver is full.
pub const BUSY_RETRY: Duration = Duration::from_secs(2);

/// Why a receiver could not start.
#[derive(Debug, thiserror::Error)]
pub enum ReceiverError {
    // Transparent: `{0}` plus the source would print the message twice
    // in `ferry: error: {e:#}`.
    #[error(transparent)]
    Identity(#[from] IdentityError),
    #[error(transparent)]
    Store(#[from] StoreError),
    #[error(transparent)]
    Transport(#[from] TransportError),
    #[error("could not read the address the receiver is bound to")]
    LocalAddr(#[source] std::io::Error),
    #[error(transparent)]
    Bucket(#[from] crate::bucket::OpenBucketError),
    #[error(transparent)]
    Recover(#[from] crate::bucket::CatalogCopyError),
    /// `--recover` with a catalog already in the state directory, or a
    /// fresh state directory for a bucket that already holds a store.
    #[error("{0}")]
    BucketState(String),
}

/// Opens the store of a receiver whose bytes are in a bucket: its catalog
/// recovered from the bucket first with `--recover`; a fresh state
/// directory for a bucket that already holds a store is refused (two
/// catalogs would disagree on what the bucket holds). Runs on a thread of
/// its own: the store drives the bucket's client with a runtime of its own.
fn open_bucket_store(
    settings: &ReceiverSettings,
    spec: &crate::bucket::BucketSpec,
    identity: &Identity,
) -> Result<Store, ReceiverError> {
    // A client for the checks below, on a runtime that ends with them, and
    // another for the store (a client's pooled connections belong to the
    // runtime that made them).
    let bucket = spec.open()?;
    let store_bucket = spec.open()?;
    let root = settings.store.clone();
    let recover = settings.recover;
    let holder = crate::bucket::Holder {
        receiver: identity.id.to_string(),
        host: crate::config::default_name().to_string(),
        pid: std::process::id(),
    };
    let opened = std::thread::scope(|s| {
        s.spawn(move || -> Result<Store, ReceiverError> {
            let catalog = crate::store::catalog_path(&root);
            let rt = tokio::runtime::Builder::new_current_thread()
                .enable_all()
                .build()
                .map_err(|e| ReceiverError::BucketState(format!("could not start the bucket's client: {e}")))?;
            let has_copies = rt.block_on(crate::bucket::has_catalog_copies(&bucket))?;
            let mut recovered = false;
            match (catalog.exists(), recover, has_copies) {
                (true, true, _) => {
                    return Err(ReceiverError::BucketState(format!(
                        "--recover rebuilds the catalog of a new state directory, but {} already has one; give an empty --state directory, or start without --recover",
                        catalog.display()
                    )))
                }
                (false, true, _) => {
                    std::fs::create_dir_all(catalog.parent().unwrap_or(&root)).map_err(|e| {
                        ReceiverError::BucketState(format!("could not create {}: {e}", root.display()))
                    })?;
                    let copy = rt.block_on(crate::bucket::recover(&bucket, &catalog))?;
                    tracing::info!(copy = %copy.key, bytes = copy.catalog_bytes, "catalog recovered from the bucket");
                    recovered = true;
                }
                (false, false, true) => {
                    return Err(ReceiverError::BucketState(format!(
                        "the bucket {} already holds a ferry store, and the state directory {} has no catalog: start with --recover to rebuild it from the bucket",
                        bucket.name(),
                        settings.state.display()
                    )))
                }
                _ => {}
            }
            drop(rt);
            if recovered {
                // What was acknowledged after the copy was taken is not in
                // it: senders whose newest acknowledged run is one of these
                // offer everything again on their next run.
                let lost = Store::mark_recovered(&root)?;
                tracing::info!(
                    from_run = lost.start,
                    "runs from this one on may have stored more than the copy knows: their senders offer everything again on their next run; new runs are numbered from {}",
                    lost.end
                );
            }
            Ok(Store::open_bucket(&root, store_bucket, holder)?)
        })
        .join()
        .unwrap_or_else(|panic| std::panic::resume_unwind(panic))
    })?;
    Ok(opened)
}

/// Who may get in, and with what.
#[derive(Debug, Clone, Default)]
pub struct Admission {
    pub allow: Vec<DeviceId>,
    pub pairing_secret: Option<Vec<u8>>,
}

/// State shared by every session of one receiver.
pub(crate) struct Shared {
    pub store: Arc<Store>,
    pub admission: Admission,
    pub clients: Arc<Semaphore>,
    pub max_clients: usize,
    pub status: Arc<ReceiverStatus>,
    /// Most bytes stored per sender; `None`: no limit.
    pub quota: Option<u64>,
    /// Bandwidth limit per sender connection; `None`: no limit.
    pub limit_rate: Option<RateSchedule>,
    /// Sessions not yet admitted (see [`MAX_PENDING_SESSIONS`]).
    pub pending: Arc<Semaphore>,
    /// See [`HELLO_TIMEOUT`].
    pub hello_timeout: Duration,
    /// The admin's revocations and pairing switch, re-read while serving.
    pub access: access::AccessState,
}

impl Shared {
    /// The state of a receiver storing into `store`, serving at most
    /// `max_clients` senders at once, with no quota or rate limit (a
    /// session can run on it without an endpoint: tests build one).
    pub(crate) fn new(
        store: Store,
        max_clients: usize,
        admission: Admission,
    ) -> Result<Shared, ReceiverError> {
        let access = access::AccessState::new(store.access()?);
        Ok(Shared {
            store: Arc::new(store),
            admission,
            clients: Arc::new(Semaphore::new(max_clients)),
            max_clients,
            status: Arc::new(ReceiverStatus::default()),
            quota: None,
            limit_rate: None,
            pending: Arc::new(Semaphore::new(MAX_PENDING_SESSIONS)),
            hello_timeout: HELLO_TIMEOUT,
            access,
        })
    }
}

/// A bound receiver, ready to [`serve`](Receiver::serve).
pub struct Receiver {
    endpoint: quinn::Endpoint,
    id: DeviceId,
    shared: Arc<Shared>,
    /// The retention policy and how often it is applied.
    retention: Option<(Retention, Duration)>,
    /// The endpoint's server configuration, to change its transport.
    server_config: quinn::ServerConfig,
    /// Resolves once the endpoint's socket is closed (`serve` waits for it).
    released: Option<transport::SocketReleased>,
    /// At shutdown, how long to wait for closed connections to drain:
    /// `None` until they have (three probe timeouts of each).
    drain_grace: Option<Duration>,
}

impl Receiver {
    /// Loads the identity from the state directory, opens the store and binds
    /// the listening address. Must be called inside a tokio runtime.
    pub fn bind(settings: &ReceiverSettings) -> Result<Receiver, ReceiverError> {
        // A receiver's buffers stay in the allocator's arenas (no effect
        // on what it stores; see `memory`).
        crate::memory::tune_receiver_allocator();
        // The port first: a receiver that cannot listen creates no state
        // or store directory.
        let socket = transport::listen_socket(settings.listen)?;
        let identity = Identity::load_or_create(&settings.state)?;
        let store = match &settings.bucket {
            None => Store::open(&settings.store)?,
            Some(spec) => open_bucket_store(settings, spec, &identity)?,
        };
        let admission = Admission {
            allow: settings.allow.clone(),
            pairing_secret: settings.pairing_secret.clone(),
        };
        let (endpoint, released) = transport::server_endpoint_released(&identity, socket)?;
        let mut receiver =
            Self::on_endpoint(identity, store, endpoint, settings.max_clients, admission)?;
        receiver.released = Some(released);
        Ok(receiver
            .with_retention(settings.retention, settings.prune_every)
            .with_quota(settings.quota)
            .with_limit_rate(settings.limit_rate.clone()))
    }

    /// Limits the bytes stored per sender (current and old versions
    /// together); a file that would go over is refused with
    /// [`FailCode::Quota`](ferry_proto::FailCode::Quota). `None`: no limit.
    /// Call before [`serve`](Receiver::serve).
    pub fn with_quota(mut self, quota: Option<u64>) -> Receiver {
        // `shared` is only cloned by `serve`, which consumes the receiver, so
        // this is its only handle and `get_mut` succeeds.
        if let Some(shared) = Arc::get_mut(&mut self.shared) {
            shared.quota = quota;
        }
        self
    }

    /// Limits each sender connection to `schedule`'s rate (each sender has
    /// its own limit); `None`: no limit. Call before
    /// [`serve`](Receiver::serve).
    ///
    /// Connections then start with a receive window sized for the lowest
    /// rate of the schedule (a sender gets no large burst before the limit
    /// applies); each admitted session widens or narrows its own to the rate
    /// in force ([`crate::ratelimit::receive_window`]).
    pub fn with_limit_rate(mut self, schedule: Option<RateSchedule>) -> Receiver {
        if let Some(schedule) = &schedule {
            let window = crate::ratelimit::initial_receive_window(schedule);
            let mut config = self.server_config.clone();
            config.transport = transport::transport_config_with_receive_window(window);
            self.endpoint.set_server_config(Some(config));
        }
        // As in `with_quota`: the only handle until `serve`.
        if let Some(shared) = Arc::get_mut(&mut self.shared) {
            shared.limit_rate = schedule;
        }
        self
    }

    /// Applies `policy` at start and then every `every` while serving. A
    /// policy that keeps everything schedules nothing.
    pub fn with_retention(mut self, policy: Retention, every: Duration) -> Receiver {
        self.retention = (!policy.keeps_everything()).then_some((policy, every));
        self
    }

    /// Binds with parts already built (the embedded receiver, tests).
    pub fn bind_with(
        identity: Identity,
        store: Store,
        listen: SocketAddr,
        max_clients: usize,
        admission: Admission,
    ) -> Result<Receiver, ReceiverError> {
        let socket = transport::listen_socket(listen)?;
        let (endpoint, released) = transport::server_endpoint_released(&identity, socket)?;
        let mut receiver = Self::on_endpoint(identity, store, endpoint, max_clients, admission)?;
        receiver.released = Some(released);
        Ok(receiver)
    }

    fn on_endpoint(
        identity: Identity,
        store: Store,
        endpoint: quinn::Endpoint,
        max_clients: usize,
        admission: Admission,
    ) -> Result<Receiver, ReceiverError> {
        let server_config = transport::server_config(&identity).map_err(TransportError::from)?;
        let shared = Arc::new(Shared::new(store, max_clients, admission)?);
        Ok(Receiver {
            endpoint,
            id: identity.id,
            shared,
            retention: None,
            server_config,
            released: None,
            drain_grace: None,
        })
    }

    /// Waits at most `grace` at shutdown for closed connections to drain.
    /// For the embedded receiver: its only peer is the sender of the same
    /// process, which has already closed, so the full drain (three probe
    /// timeouts, 50-100 ms on loopback) would only delay the end of every
    /// `ferry send --store` run.
    pub fn with_drain_grace(mut self, grace: Duration) -> Receiver {
        self.drain_grace = Some(grace);
        self
    }

    /// Gives senders `timeout` instead of [`HELLO_TIMEOUT`] to complete the
    /// handshake and say `Hello` (tests use a short one).
    pub fn with_hello_timeout(mut self, timeout: Duration) -> Receiver {
        // Until `serve` runs, this receiver holds the only reference to its
        // shared state (`status()` and `store()` hand out clones of inner
        // `Arc`s, not of `shared`), so `get_mut` succeeds.
        if let Some(shared) = Arc::get_mut(&mut self.shared) {
            shared.hello_timeout = timeout;
        }
        self
    }

    /// The address actually bound (useful with port 0).
    pub fn local_addr(&self) -> Result<SocketAddr, ReceiverError> {
        self.endpoint.local_addr().map_err(ReceiverError::LocalAddr)
    }

    /// This receiver's device id.
    pub fn id(&self) -> DeviceId {
        self.id
    }

    /// Live status: connected senders, the last error.
    pub fn status(&self) -> Arc<ReceiverStatus> {
        self.shared.status.clone()
    }

    /// The store this receiver writes to.
    pub fn store(&self) -> Arc<Store> {
        self.shared.store.clone()
    }

    /// Serves senders until `shutdown` is cancelled, then shuts down in the
    /// documented order. Returns once the UDP socket is closed: a receiver
    /// bound with [`bind`](Receiver::bind) or
    /// [`bind_with`](Receiver::bind_with) can at once be started again on
    /// the same port.
    pub async fn serve(self, shutdown: CancellationToken) {
        let sessions = TaskTracker::new();
        if let Some((policy, every)) = self.retention {
            let store = self.shared.store.clone();
            sessions.spawn(pruning::run(store, policy, every, shutdown.child_token()));
        }
        sessions.spawn(access::watch(self.shared.clone(), shutdown.child_token()));
        loop {
            let incoming = tokio::select! {
                _ = shutdown.cancelled() => break,
                incoming = self.endpoint.accept() => incoming,
            };
            let Some(incoming) = incoming else { break };
            let Ok(pending) = self.shared.pending.clone().try_acquire_owned() else {
                tracing::warn!(
                    remote = %incoming.remote_address(),
                    "connection refused: {MAX_PENDING_SESSIONS} connections are already in the handshake"
                );
                incoming.refuse();
                continue;
            };
            let shared = self.shared.clone();
            let token = shutdown.child_token();
            sessions.spawn(session::handle(incoming, shared, token, pending));
        }
        tracing::info!(
            "receiver stopping: waiting for {} session(s)",
            sessions.len()
        );
        sessions.close();
        sessions.wait().await;
        self.endpoint
            .close(quinn::VarInt::from_u32(0), b"receiver shutting down");
        match self.drain_grace {
            Some(grace) => {
                // An embedded receiver: its own process's sender closed the
                // connection, nobody binds its ephemeral port again, and
                // waiting out the drain would cost every run.
                let _ = tokio::time::timeout(grace, self.endpoint.wait_idle()).await;
                tracing::info!("receiver stopped");
                return;
            }
            None => self.endpoint.wait_idle().await,
        }
        // The socket closes when the last handle to the endpoint or to one
        // of its connections goes: ours first, then wait for the rest (the
        // endpoint's driver task, connection tasks winding down), so that a
        // receiver restarted on this port at once can bind it.
        drop(self.endpoint);
        drop(self.shared);
        if let Some(released) = self.released {
            if !released.wait(SOCKET_RELEASE_LIMIT).await {
                tracing::warn!(
                    "the receiver's UDP socket is still open {}s after it stopped",
                    SOCKET_RELEASE_LIMIT.as_secs()
                );
            }
        }
        tracing::info!("receiver stopped");
    }
}
