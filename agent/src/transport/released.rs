//! Knowing when an endpoint's UDP socket is closed.
//!
//! quinn closes an endpoint's socket when the last thing holding it goes:
//! the endpoint's driver task, which ends a moment after the last
//! [`quinn::Endpoint`] handle is dropped, and every connection's state,
//! which lives as long as any handle to the connection. A receiver that
//! returned from `serve` before then could not be restarted at once on the
//! same port ("Address already in use"). The socket is therefore wrapped in
//! [`Tracked`], whose last drop closes the socket and then signals
//! [`SocketReleased`].

use std::fmt;
use std::io::{self, IoSliceMut};
use std::net::SocketAddr;
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll};
use std::time::Duration;

use quinn::udp::{RecvMeta, Transmit};
use quinn::{AsyncUdpSocket, UdpPoller};
use tokio::sync::oneshot;

/// Resolves once the tracked socket is closed.
#[derive(Debug)]
pub struct SocketReleased(oneshot::Receiver<()>);

impl SocketReleased {
    /// Waits until the socket is closed, at most `limit`; returns whether
    /// it was. (A connection handle kept somewhere keeps the socket open;
    /// the bound keeps such a leak from hanging a shutdown.)
    pub async fn wait(self, limit: Duration) -> bool {
        // The sender is never used to send: it is dropped, right after
        // the socket, which ends the wait with `Err`.
        tokio::time::timeout(limit, self.0).await.is_ok()
    }
}

/// Wraps `socket` so that [`SocketReleased`] resolves once it is closed.
pub fn track(socket: Arc<dyn AsyncUdpSocket>) -> (Arc<dyn AsyncUdpSocket>, SocketReleased) {
    let (closed, released) = oneshot::channel();
    let tracked = Tracked {
        inner: socket,
        _closed: closed,
    };
    (Arc::new(tracked), SocketReleased(released))
}

/// A socket that signals when it is dropped. Fields drop in order: the
/// socket is closed before `_closed` is dropped.
struct Tracked {
    inner: Arc<dyn AsyncUdpSocket>,
    _closed: oneshot::Sender<()>,
}

impl fmt::Debug for Tracked {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_tuple("Tracked").field(&self.inner).finish()
    }
}

impl AsyncUdpSocket for Tracked {
    fn create_io_poller(self: Arc<Self>) -> Pin<Box<dyn UdpPoller>> {
        // The inner poller holds the inner socket: it keeps `self` too, so
        // that `self` (and its signal) outlives every poller.
        Box::pin(TrackedPoller {
            inner: self.inner.clone().create_io_poller(),
            _socket: self,
        })
    }

    fn try_send(&self, transmit: &Transmit) -> io::Result<()> {
        self.inner.try_send(transmit)
    }

    fn poll_recv(
        &self,
        cx: &mut Context,
        bufs: &mut [IoSliceMut<'_>],
        meta: &mut [RecvMeta],
    ) -> Poll<io::Result<usize>> {
        self.inner.poll_recv(cx, bufs, meta)
    }

    fn local_addr(&self) -> io::Result<SocketAddr> {
        self.inner.local_addr()
    }

    fn max_transmit_segments(&self) -> usize {
        self.inner.max_transmit_segments()
    }

    fn max_receive_segments(&self) -> usize {
        self.inner.max_receive_segments()
    }

    fn may_fragment(&self) -> bool {
        self.inner.may_fragment()
    }
}

/// A poller of the inner socket that keeps the [`Tracked`] socket alive.
/// Fields drop in order: the inner poller goes first.
#[derive(Debug)]
struct TrackedPoller {
    inner: Pin<Box<dyn UdpPoller>>,
    _socket: Arc<Tracked>,
}

impl UdpPoller for TrackedPoller {
    fn poll_writable(mut self: Pin<&mut Self>, cx: &mut Context) -> Poll<io::Result<()>> {
        self.inner.as_mut().poll_writable(cx)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use quinn::Runtime;

    #[tokio::test]
    async fn the_signal_comes_once_the_port_is_free_again() -> anyhow::Result<()> {
        let std = std::net::UdpSocket::bind("127.0.0.1:0")?;
        let addr = std.local_addr()?;
        let (socket, released) = track(quinn::TokioRuntime.wrap_udp_socket(std)?);
        let poller = socket.clone().create_io_poller();
        drop(socket);
        // The poller still holds the socket.
        assert!(std::net::UdpSocket::bind(addr).is_err());
        let waiting = tokio::spawn(released.wait(Duration::from_secs(30)));
        drop(poller);
        assert!(waiting.await?);
        std::net::UdpSocket::bind(addr)?;
        Ok(())
    }
}
