//! One connection between a sender and a receiver, as the sessions see it:
//! open and accept bidirectional streams, close with a code and a reason,
//! and the few facts a session asks of its connection (the peer's device
//! id, the pairing keying material, bytes received).
//!
//! Sessions take any [`Link`], so the same driver runs over QUIC
//! (`quinn::Connection`, in production) and over an in-memory pair of
//! links ([`memory::pair`], in tests: a whole run, sender and receiver, with
//! no socket).
//!
//! ## Layout
//!
//! - this file: the [`Link`] and [`Closable`] traits and their QUIC
//!   implementation.
//! - `memory` (tests only): a connection in memory, tokio pipes per stream.

use std::future::Future;
use std::net::SocketAddr;

use ferry_proto::PAIRING_EXPORTER_LEN;

use crate::identity::DeviceId;
use crate::stream::Channel;
use crate::tls::{self, TlsError};

pub mod memory;

/// What every connection can do without knowing its kind: close, and tell
/// whether it is closed. Object-safe, for keeping many connections (the
/// receiver closes a revoked sender's connections).
pub trait Closable: Send + Sync + 'static {
    /// Closes the connection at once with an application `code` and a
    /// `reason` the peer can read; streams of it fail from then on.
    fn close(&self, code: u32, reason: &[u8]);
    /// True once the connection is closed, by either side.
    fn is_closed(&self) -> bool;
}

/// One connection between a sender and a receiver.
pub trait Link: Closable + Clone {
    /// Opens a bidirectional stream.
    fn open(&self) -> impl Future<Output = Result<Channel, quinn::ConnectionError>> + Send;
    /// The peer's next bidirectional stream.
    fn accept(&self) -> impl Future<Output = Result<Channel, quinn::ConnectionError>> + Send;
    /// Resolves when the connection is closed, with why.
    fn closed(&self) -> impl Future<Output = quinn::ConnectionError> + Send;
    /// Why the connection is closed, if it is.
    fn close_reason(&self) -> Option<quinn::ConnectionError>;
    /// The peer's address (for logs).
    fn remote_address(&self) -> SocketAddr;
    /// The peer's device id, from its certificate.
    fn peer(&self) -> Result<DeviceId, TlsError>;
    /// Keying material for pairing proofs: equal at both ends of one
    /// connection, different on every other.
    fn pairing_material(&self) -> Result<[u8; PAIRING_EXPORTER_LEN], TlsError>;
    /// Bytes received on this connection so far.
    fn bytes_received(&self) -> u64;
    /// Sizes the connection's receive window (the rate limiter keeps it
    /// near the rate in force).
    fn set_receive_window(&self, bytes: u64);
}

impl Closable for quinn::Connection {
    fn close(&self, code: u32, reason: &[u8]) {
        quinn::Connection::close(self, quinn::VarInt::from_u32(code), reason);
    }

    fn is_closed(&self) -> bool {
        quinn::Connection::close_reason(self).is_some()
    }
}

impl Link for quinn::Connection {
    async fn open(&self) -> Result<Channel, quinn::ConnectionError> {
        Ok(Channel::new(self.open_bi().await?))
    }

    async fn accept(&self) -> Result<Channel, quinn::ConnectionError> {
        Ok(Channel::new(self.accept_bi().await?))
    }

    async fn closed(&self) -> quinn::ConnectionError {
        quinn::Connection::closed(self).await
    }

    fn close_reason(&self) -> Option<quinn::ConnectionError> {
        quinn::Connection::close_reason(self)
    }

    fn remote_address(&self) -> SocketAddr {
        quinn::Connection::remote_address(self)
    }

    fn peer(&self) -> Result<DeviceId, TlsError> {
        tls::peer_id(self)
    }

    fn pairing_material(&self) -> Result<[u8; PAIRING_EXPORTER_LEN], TlsError> {
        tls::pairing_material(self)
    }

    fn bytes_received(&self) -> u64 {
        self.stats().udp_rx.bytes
    }

    fn set_receive_window(&self, bytes: u64) {
        quinn::Connection::set_receive_window(
            self,
            quinn::VarInt::from_u64(bytes).unwrap_or(quinn::VarInt::MAX),
        );
    }
}
