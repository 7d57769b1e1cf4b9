//! The embedded receiver: what stores a `ferry send --store DIR` run.
//!
//! A sender without `--host` does not write the store itself: it runs the
//! same receiver code as `ferry receive` (admission, sessions, group commit,
//! the store), in this process, admitting only this sender's device id,
//! with the receiver's identity kept inside the store (`DIR/.ferry`). The
//! sender then runs against it as against any receiver, over a connection
//! in memory ([`crate::link::memory`]) instead of QUIC on loopback: the two
//! halves of one process need neither a socket nor encryption between
//! them. The store it writes is a receiver's store that `ferry receive
//! --store DIR` can serve later.
//!
//! Opening the store checks every page of its catalog (`PRAGMA
//! quick_check`), which a running receiver pays once and a `--once` run
//! every time. Here it runs on a blocking thread beside the sender's scan:
//! the receiver serves no connection, and so writes nothing to the store,
//! until it has passed, and the sender connects only once [`StoreReady`]
//! says so. A damaged catalog fails the run with the same error as before,
//! the file untouched.
//!
//! This module sits above the receiver and below the roles that start it:
//! it imports [`crate::receiver`] and never the sender; the sender asks it
//! for a connection and the receiver's device id.

use std::path::Path;
use std::sync::Arc;

use tokio::sync::watch;
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;

use crate::identity::{DeviceId, Identity, IdentityError};
use crate::link::memory::{self, MemoryLink};
use crate::receiver::{Admission, ReceiverError, Shared};
use crate::store::{Store, StoreError};
use crate::tasks;

/// Why the embedded receiver could not start.
#[derive(Debug, thiserror::Error)]
pub enum EmbeddedError {
    /// The store directory could not be opened or created.
    #[error("could not open the local store")]
    Store(#[from] StoreError),
    /// The receiver's identity in the store could not be read or created.
    #[error(transparent)]
    Identity(#[from] IdentityError),
    /// The receiver's state could not be set up.
    #[error("could not start the embedded receiver")]
    Receiver(#[from] ReceiverError),
    /// The runtime shut down while the store was being opened.
    #[error("stopped while opening the local store")]
    Cancelled(#[from] tasks::Cancelled),
}

/// A receiver serving one store to one sender, in this process. Stop it with
/// [`EmbeddedReceiver::stop`]; dropped without that, it is only cancelled.
pub struct EmbeddedReceiver {
    links: EmbeddedLinks,
    task: tokio::task::JoinHandle<()>,
}

/// What a run needs of the embedded receiver: its id, when its store is
/// ready, and a new connection to it ([`EmbeddedLinks::connect`]).
#[derive(Clone)]
pub struct EmbeddedLinks {
    id: DeviceId,
    sender: DeviceId,
    shared: Arc<Shared>,
    sessions: TaskTracker,
    token: CancellationToken,
    ready: StoreReady,
}

impl std::fmt::Debug for EmbeddedLinks {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("EmbeddedLinks")
            .field("id", &self.id)
            .field("sender", &self.sender)
            .finish_non_exhaustive()
    }
}

/// Whether the embedded receiver's store has passed its check and is
/// served: what a sender waits for before it connects.
#[derive(Debug, Clone)]
pub struct StoreReady(watch::Receiver<Option<Result<(), Arc<EmbeddedError>>>>);

impl StoreReady {
    /// Waits until the store's catalog has been checked: `Ok` once the
    /// receiver serves it, else why it never will (a damaged catalog).
    pub async fn wait(&mut self) -> Result<(), Arc<EmbeddedError>> {
        match self.0.wait_for(Option::is_some).await {
            Ok(outcome) => outcome.clone().unwrap_or(Ok(())),
            // The receiver's task ended without saying: it was stopped.
            Err(_) => Err(Arc::new(EmbeddedError::Cancelled(tasks::Cancelled))),
        }
    }
}

impl EmbeddedLinks {
    /// The device id the sender must find at the other end.
    pub fn id(&self) -> DeviceId {
        self.id
    }

    /// Tells when the store is checked and served (see the module's doc).
    pub fn ready(&self) -> StoreReady {
        self.ready.clone()
    }

    /// A new connection to the receiver, served until the sender closes or
    /// drops its end, or the receiver stops.
    pub fn connect(&self) -> MemoryLink {
        let (ours, theirs) = memory::pair(self.sender, self.id);
        self.sessions.spawn(crate::receiver::serve(
            theirs,
            self.shared.clone(),
            self.token.child_token(),
        ));
        ours
    }
}

impl EmbeddedReceiver {
    /// Opens (or creates) the store at `store` and serves it to the sender
    /// `sender` alone, until [`stop`](EmbeddedReceiver::stop) or `shutdown`.
    pub async fn start(
        store: &Path,
        sender: DeviceId,
        shutdown: &CancellationToken,
    ) -> Result<EmbeddedReceiver, EmbeddedError> {
        let store_dir = store.to_owned();
        let (store, identity) = tasks::blocking(move || -> Result<_, EmbeddedError> {
            let store = Store::open_unchecked(&store_dir)?;
            let identity = Identity::load_or_create(&store.root().join(".ferry"))?;
            Ok((store, identity))
        })
        .await??;
        let admission = Admission {
            allow: vec![sender],
            pairing_secret: None,
        };
        let shared = Arc::new(Shared::new(store, 1, admission)?);
        let token = shutdown.child_token();
        let (said, ready) = watch::channel(None);
        let checked_store = shared.store.clone();
        let task = tokio::spawn(async move {
            let checked = match tasks::blocking(move || checked_store.check_and_recover()).await {
                Ok(Ok(())) => Ok(()),
                Ok(Err(e)) => Err(Arc::new(EmbeddedError::Store(e))),
                Err(cancelled) => Err(Arc::new(EmbeddedError::Cancelled(cancelled))),
            };
            said.send_replace(Some(checked));
        });
        Ok(EmbeddedReceiver {
            links: EmbeddedLinks {
                id: identity.id,
                sender,
                shared,
                sessions: TaskTracker::new(),
                token,
                ready: StoreReady(ready),
            },
            task,
        })
    }

    /// What a run needs to connect (see [`EmbeddedLinks`]).
    pub fn links(&self) -> EmbeddedLinks {
        self.links.clone()
    }

    /// The device id the sender must find there.
    pub fn id(&self) -> DeviceId {
        self.links.id
    }

    /// Stops serving and waits until every session has ended (each records
    /// its run as a receiver's does).
    pub async fn stop(mut self) {
        self.links.token.cancel();
        // A panic in the check is a bug: resumed here, as `tasks::blocking`
        // does. A cancelled task has nothing to report.
        if let Err(e) = (&mut self.task).await {
            if e.is_panic() {
                std::panic::resume_unwind(e.into_panic());
            }
        }
        self.links.sessions.close();
        self.links.sessions.wait().await;
    }
}

impl Drop for EmbeddedReceiver {
    fn drop(&mut self) {
        // Once stopped this does nothing; otherwise the sessions still wind
        // down by themselves.
        self.links.token.cancel();
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn serves_a_new_store_in_this_process_and_stops() -> anyhow::Result<()> {
        let dir = tempfile::tempdir()?;
        let sender = Identity::generate()?;
        let shutdown = CancellationToken::new();
        let store = dir.path().join("store");
        let embedded = EmbeddedReceiver::start(&store, sender.id, &shutdown).await?;
        embedded
            .links()
            .ready()
            .wait()
            .await
            .map_err(|e| anyhow::anyhow!("{e}"))?;
        // The receiver's identity lives in the store, and is the one served.
        let kept = Identity::load_or_create(&store.join(".ferry"))?;
        assert_eq!(kept.id, embedded.id());
        assert_ne!(embedded.id(), sender.id);
        let link = embedded.links().connect();
        assert_eq!(crate::link::Link::peer(&link)?, embedded.id());
        drop(link);
        embedded.stop().await;
        assert!(!shutdown.is_cancelled(), "only the receiver's own token");
        Ok(())
    }

    #[tokio::test]
    async fn a_store_that_cannot_be_created_says_so_once() -> anyhow::Result<()> {
        let dir = tempfile::tempdir()?;
        let file = dir.path().join("a-file");
        std::fs::write(&file, "not a directory")?;
        let sender = Identity::generate()?;
        let err =
            EmbeddedReceiver::start(&file.join("store"), sender.id, &CancellationToken::new())
                .await
                .err()
                .ok_or_else(|| anyhow::anyhow!("a store below a file was opened"))?;
        assert!(matches!(err, EmbeddedError::Store(_)), "{err:?}");
        let text = crate::chain::chain(&err);
        assert!(text.starts_with("could not open the local store"), "{text}");
        assert_eq!(text.matches("could not open the local store").count(), 1);
        Ok(())
    }
}
