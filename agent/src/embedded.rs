//! The embedded receiver: what stores a `ferry send --store DIR` run.
//!
//! A sender without `--host` does not write the store itself: it starts the
//! same receiver code as `ferry receive`, in this process, on a loopback port
//! only the sender knows, admitting only this sender's device id, with the
//! receiver's identity kept inside the store (`DIR/.ferry`). The sender then
//! connects to it as to any receiver; the store it writes is a receiver's
//! store that `ferry receive --store DIR` can serve later.
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
//! for a receiver and gets a plain address and device id back.

use std::net::{Ipv4Addr, SocketAddr};
use std::path::Path;
use std::sync::Arc;
use std::time::Duration;

use tokio::sync::watch;
use tokio_util::sync::CancellationToken;

use crate::identity::{DeviceId, Identity, IdentityError};
use crate::receiver::{Admission, Receiver, ReceiverError};
use crate::store::{Store, StoreError};
use crate::tasks;

/// How long the embedded receiver waits, when the sender is done, for the
/// connection the sender closed to drain (see [`Receiver::with_drain_grace`]).
pub const DRAIN_GRACE: Duration = Duration::from_millis(5);

/// Why the embedded receiver could not start.
#[derive(Debug, thiserror::Error)]
pub enum EmbeddedError {
    /// The store directory could not be opened or created.
    #[error("could not open the local store")]
    Store(#[from] StoreError),
    /// The receiver's identity in the store could not be read or created.
    #[error(transparent)]
    Identity(#[from] IdentityError),
    /// The receiver could not listen on loopback.
    #[error("could not start the embedded receiver")]
    Receiver(#[from] ReceiverError),
    /// The runtime shut down while the store was being opened.
    #[error("stopped while opening the local store")]
    Cancelled(#[from] tasks::Cancelled),
}

/// A receiver serving one store to one sender, in this process. Stop it with
/// [`EmbeddedReceiver::stop`]; dropped without that, it is only cancelled.
#[derive(Debug)]
pub struct EmbeddedReceiver {
    addr: SocketAddr,
    id: DeviceId,
    ready: StoreReady,
    token: CancellationToken,
    task: tokio::task::JoinHandle<()>,
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

impl EmbeddedReceiver {
    /// Opens (or creates) the store at `store` and serves it on loopback to
    /// the sender `sender` alone, until [`stop`](EmbeddedReceiver::stop) or
    /// `shutdown`.
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
        let loopback = SocketAddr::from((Ipv4Addr::LOCALHOST, 0));
        let receiver = Receiver::bind_with(identity, store, loopback, 1, admission)?
            .with_drain_grace(DRAIN_GRACE);
        let addr = receiver.local_addr()?;
        let id = receiver.id();
        let token = shutdown.child_token();
        let (said, ready) = watch::channel(None);
        let serve_token = token.clone();
        let task = tokio::spawn(async move {
            let store = receiver.store();
            let checked = match tasks::blocking(move || store.check_and_recover()).await {
                Ok(Ok(())) => Ok(()),
                Ok(Err(e)) => Err(Arc::new(EmbeddedError::Store(e))),
                Err(cancelled) => Err(Arc::new(EmbeddedError::Cancelled(cancelled))),
            };
            let serve = checked.is_ok();
            said.send_replace(Some(checked));
            if serve {
                receiver.serve(serve_token).await;
            }
        });
        Ok(EmbeddedReceiver {
            addr,
            id,
            ready: StoreReady(ready),
            token,
            task,
        })
    }

    /// Tells when the store is checked and served (see the module's doc).
    pub fn ready(&self) -> StoreReady {
        self.ready.clone()
    }

    /// Where the sender connects.
    pub fn addr(&self) -> SocketAddr {
        self.addr
    }

    /// The device id the sender must find there.
    pub fn id(&self) -> DeviceId {
        self.id
    }

    /// Stops serving and waits until the receiver is down (its connection
    /// drained for [`DRAIN_GRACE`], its store closed).
    pub async fn stop(mut self) {
        self.token.cancel();
        // A panic in the receiver is a bug: resumed here, as
        // `tasks::blocking` does. A cancelled task has nothing to report.
        if let Err(e) = (&mut self.task).await {
            if e.is_panic() {
                std::panic::resume_unwind(e.into_panic());
            }
        }
    }
}

impl Drop for EmbeddedReceiver {
    fn drop(&mut self) {
        // Once stopped this does nothing; otherwise the receiver still
        // winds down by itself.
        self.token.cancel();
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn serves_a_new_store_on_loopback_and_stops() -> anyhow::Result<()> {
        let dir = tempfile::tempdir()?;
        let sender = Identity::generate()?;
        let shutdown = CancellationToken::new();
        let store = dir.path().join("store");
        let embedded = EmbeddedReceiver::start(&store, sender.id, &shutdown).await?;
        assert!(embedded.addr().ip().is_loopback());
        assert_ne!(embedded.addr().port(), 0);
        // The receiver's identity lives in the store, and is the one served.
        let kept = Identity::load_or_create(&store.join(".ferry"))?;
        assert_eq!(kept.id, embedded.id());
        assert_ne!(embedded.id(), sender.id);
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
