//! The admin's settings as the running receiver applies them: revoked
//! senders and the pairing switch, re-read from the catalog every
//! [`ACCESS_POLL`]; a revoked sender's open connections are closed on the
//! next read. The same task keeps the store's live record (who is connected)
//! up to date; see [`crate::senders`].

use std::collections::HashSet;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex, PoisonError, RwLock};
use std::time::Instant;

use tokio_util::sync::CancellationToken;

use super::Shared;
use crate::identity::DeviceId;
use crate::link::{Closable, Link};
use crate::senders::{self, LiveRecord, LiveSession, ACCESS_POLL, LIVE_HEARTBEAT};
use crate::store::Access;

/// QUIC close code of a connection closed because its sender was revoked.
pub(crate) const CLOSE_REVOKED: u32 = 4;

/// The admin's settings in force, and the connections they may close.
#[derive(Default)]
pub(crate) struct AccessState {
    revoked: RwLock<HashSet<String>>,
    pairing_off: AtomicBool,
    /// Admitted connections, by device id (closed ones are dropped on
    /// each read of the settings).
    connections: Mutex<Vec<(String, Box<dyn Closable>)>>,
}

impl AccessState {
    pub fn new(access: Access) -> AccessState {
        let state = AccessState::default();
        state.set(access);
        state
    }

    pub fn is_revoked(&self, peer: &DeviceId) -> bool {
        self.revoked
            .read()
            .unwrap_or_else(PoisonError::into_inner)
            .contains(&peer.to_string())
    }

    pub fn pairing_off(&self) -> bool {
        self.pairing_off.load(Ordering::Relaxed)
    }

    fn set(&self, access: Access) {
        *self.revoked.write().unwrap_or_else(PoisonError::into_inner) = access.revoked;
        self.pairing_off
            .store(access.pairing_off, Ordering::Relaxed);
    }

    /// Watches an admitted connection, so that revoking its sender closes it.
    pub fn track(&self, peer: &DeviceId, link: &impl Link) {
        self.connections
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .push((peer.to_string(), Box::new(link.clone())));
    }

    /// Closes the connections of revoked senders, forgets closed ones;
    /// returns how many it closed.
    fn close_revoked(&self) -> usize {
        let revoked = self.revoked.read().unwrap_or_else(PoisonError::into_inner);
        let mut conns = self
            .connections
            .lock()
            .unwrap_or_else(PoisonError::into_inner);
        let mut closed = 0;
        conns.retain(|(device, conn)| {
            if conn.is_closed() {
                return false;
            }
            if !revoked.contains(device) {
                return true;
            }
            tracing::warn!(peer = %device, "closing the connection of a revoked sender");
            conn.close(
                CLOSE_REVOKED,
                b"the receiver's admin revoked this sender: it is no longer admitted (its stored files stay on the receiver)",
            );
            closed += 1;
            false
        });
        closed
    }
}

/// Re-reads the admin's settings and keeps the live record until
/// `shutdown`; removes the record at the end.
pub(crate) async fn watch(shared: Arc<Shared>, shutdown: CancellationToken) {
    let root = shared.store.root().to_path_buf();
    let mut last_written: Option<(Instant, Vec<LiveSession>)> = None;
    let mut failing = false;
    loop {
        let store = shared.store.clone();
        match crate::tasks::blocking(move || store.access()).await {
            Ok(Ok(access)) => {
                failing = false;
                shared.access.set(access);
                shared.access.close_revoked();
            }
            Ok(Err(e)) if !failing => {
                failing = true;
                tracing::warn!(
                    "could not read the revoked senders and the pairing switch (the last ones read stay in force): {}",
                    crate::chain::Chain(&e)
                );
            }
            _ => {}
        }
        let connected: Vec<LiveSession> = shared
            .status
            .sessions()
            .into_iter()
            .map(|s| LiveSession {
                device: s.peer,
                name: s.name,
                folder: s.folder,
                run: s.run,
            })
            .collect();
        let due = match &last_written {
            None => true,
            Some((at, sessions)) => *sessions != connected || at.elapsed() >= LIVE_HEARTBEAT,
        };
        if due {
            let record = LiveRecord {
                pid: std::process::id(),
                updated_ms: senders::now_ms(),
                pairing_secret: shared.admission.pairing_secret.is_some(),
                quota: shared.quota,
                connected: connected.clone(),
            };
            let root = root.clone();
            let written = crate::tasks::blocking(move || senders::write_live(&root, &record)).await;
            if let Ok(Err(e)) = written {
                tracing::debug!("{}", crate::chain::Chain(&e));
            }
            last_written = Some((Instant::now(), connected));
        }
        tokio::select! {
            _ = shutdown.cancelled() => break,
            _ = tokio::time::sleep(ACCESS_POLL) => {}
        }
    }
    senders::remove_live(&root);
}
