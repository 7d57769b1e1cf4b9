//! A connection in memory: two [`MemoryLink`]s, one per side, whose streams
//! are tokio pipes. It behaves as a QUIC connection does where sessions can
//! tell: a finished stream ends at a frame boundary, a reset one fails, a
//! stopped one fails its writer with `Stopped`, closing the link fails every
//! stream and tells the peer the code and reason, and dropping a side's last
//! handle closes it with code 0.

use std::future::Future;
use std::io;
use std::net::{Ipv4Addr, SocketAddr};
use std::pin::Pin;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex, PoisonError};
use std::task::{Context, Poll};

use bytes::Bytes;
use ferry_proto::PAIRING_EXPORTER_LEN;
use tokio::io::{AsyncRead, AsyncWrite, DuplexStream, ReadBuf};
use tokio::sync::mpsc;
use tokio_util::sync::{CancellationToken, WaitForCancellationFutureOwned};

use super::{Closable, Link};
use crate::identity::DeviceId;
use crate::stream::{Channel, RecvHalf, SendHalf};
use crate::tls::TlsError;

/// Bytes buffered per stream and direction before a writer waits.
const PIPE: usize = 256 * 1024;
/// Streams opened and not yet accepted before an opener waits.
const BACKLOG: usize = 1024;

/// A connected pair: the first is the sender's side (its peer is
/// `receiver`), the second the receiver's (its peer is `sender`).
pub fn pair(sender: DeviceId, receiver: DeviceId) -> (MemoryLink, MemoryLink) {
    static PAIRS: AtomicU64 = AtomicU64::new(0);
    let number = PAIRS.fetch_add(1, Ordering::Relaxed);
    let material = *blake3::hash(&number.to_le_bytes()).as_bytes();
    let conn = Arc::new(Conn {
        closed: CancellationToken::new(),
        why: Mutex::new(None),
        received: [AtomicU64::new(0), AtomicU64::new(0)],
    });
    let (to_receiver, from_sender) = mpsc::channel(BACKLOG);
    let (to_sender, from_receiver) = mpsc::channel(BACKLOG);
    let side = |index, peer, outgoing, incoming| {
        MemoryLink(Arc::new(Side {
            index,
            conn: conn.clone(),
            outgoing,
            incoming: tokio::sync::Mutex::new(incoming),
            peer,
            material,
            number,
        }))
    };
    (
        side(0, receiver, to_receiver, from_receiver),
        side(1, sender, to_sender, from_sender),
    )
}

/// One side of an in-memory connection. Clones are handles to the same side.
#[derive(Clone)]
pub struct MemoryLink(Arc<Side>);

type Halves = (MemSend, MemRecv);

struct Side {
    index: usize,
    conn: Arc<Conn>,
    outgoing: mpsc::Sender<Halves>,
    incoming: tokio::sync::Mutex<mpsc::Receiver<Halves>>,
    peer: DeviceId,
    material: [u8; PAIRING_EXPORTER_LEN],
    number: u64,
}

impl Drop for Side {
    fn drop(&mut self) {
        // As with QUIC: the last handle of a side closes the connection.
        self.conn.close(self.index, 0, b"");
    }
}

/// What both sides share.
struct Conn {
    closed: CancellationToken,
    /// Who closed (side index), with the code and reason.
    why: Mutex<Option<(usize, u32, Bytes)>>,
    /// Bytes each side has read.
    received: [AtomicU64; 2],
}

impl Conn {
    fn close(&self, side: usize, code: u32, reason: &[u8]) {
        let mut why = self.why.lock().unwrap_or_else(PoisonError::into_inner);
        if why.is_none() {
            *why = Some((side, code, Bytes::copy_from_slice(reason)));
        }
        drop(why);
        self.closed.cancel();
    }

    /// The error `side` sees once the connection is closed.
    fn error_for(&self, side: usize) -> Option<quinn::ConnectionError> {
        let why = self.why.lock().unwrap_or_else(PoisonError::into_inner);
        why.as_ref().map(|(closer, code, reason)| {
            if *closer == side {
                quinn::ConnectionError::LocallyClosed
            } else {
                quinn::ConnectionError::ApplicationClosed(quinn::ApplicationClose {
                    error_code: quinn::VarInt::from_u32(*code),
                    reason: reason.clone(),
                })
            }
        })
    }

    /// The connection error as a stream's I/O error, once closed.
    fn lost(
        &self,
        side: usize,
        as_io: fn(quinn::ConnectionError) -> io::Error,
    ) -> Option<io::Error> {
        if !self.closed.is_cancelled() {
            return None;
        }
        let error = self
            .error_for(side)
            .unwrap_or(quinn::ConnectionError::LocallyClosed);
        Some(as_io(error))
    }
}

impl MemoryLink {
    /// Bytes carried by the connection's streams, both ways: what a run
    /// over it moved (there is no wire, and no packet overhead, to count).
    pub fn bytes_both_ways(&self) -> u64 {
        self.0
            .conn
            .received
            .iter()
            .map(|n| n.load(Ordering::Relaxed))
            .sum()
    }
}

impl Closable for MemoryLink {
    fn close(&self, code: u32, reason: &[u8]) {
        self.0.conn.close(self.0.index, code, reason);
    }

    fn is_closed(&self) -> bool {
        self.0.conn.closed.is_cancelled()
    }
}

impl Link for MemoryLink {
    async fn open(&self) -> Result<Channel, quinn::ConnectionError> {
        if let Some(e) = self.close_reason() {
            return Err(e);
        }
        let side = &self.0;
        let peer = 1 - side.index;
        // Each direction is one pipe, written at one end and read at the other.
        let (out_write, out_read) = tokio::io::duplex(PIPE);
        let (in_write, in_read) = tokio::io::duplex(PIPE);
        let (out_flags, in_flags) = (Arc::new(Flags::default()), Arc::new(Flags::default()));
        let conn = &side.conn;
        let local = (
            MemSend::new(out_write, out_flags.clone(), conn, side.index),
            MemRecv::new(in_read, in_flags.clone(), conn, side.index),
        );
        let remote = (
            MemSend::new(in_write, in_flags, conn, peer),
            MemRecv::new(out_read, out_flags, conn, peer),
        );
        if side.outgoing.send(remote).await.is_err() {
            return Err(self.close_reason().unwrap_or(quinn::ConnectionError::Reset));
        }
        Ok(Channel::new(local))
    }

    async fn accept(&self) -> Result<Channel, quinn::ConnectionError> {
        let mut incoming = self.0.incoming.lock().await;
        tokio::select! {
            biased;
            _ = self.0.conn.closed.cancelled() => {}
            next = incoming.recv() => {
                if let Some(halves) = next {
                    return Ok(Channel::new(halves));
                }
            }
        }
        Err(self.close_reason().unwrap_or(quinn::ConnectionError::Reset))
    }

    async fn closed(&self) -> quinn::ConnectionError {
        self.0.conn.closed.cancelled().await;
        self.close_reason()
            .unwrap_or(quinn::ConnectionError::LocallyClosed)
    }

    fn close_reason(&self) -> Option<quinn::ConnectionError> {
        if !self.0.conn.closed.is_cancelled() {
            return None;
        }
        self.0.conn.error_for(self.0.index)
    }

    fn remote_address(&self) -> SocketAddr {
        // Distinct per pair and side, for logs; nothing is bound.
        let port = 20_000 + (self.0.number % 20_000) as u16 * 2 + (1 - self.0.index) as u16;
        SocketAddr::from((Ipv4Addr::LOCALHOST, port))
    }

    fn peer(&self) -> Result<DeviceId, TlsError> {
        Ok(self.0.peer)
    }

    fn pairing_material(&self) -> Result<[u8; PAIRING_EXPORTER_LEN], TlsError> {
        Ok(self.0.material)
    }

    fn bytes_received(&self) -> u64 {
        self.0.conn.received[self.0.index].load(Ordering::Relaxed)
    }

    fn set_receive_window(&self, _bytes: u64) {}
}

/// What the two ends of one pipe tell each other besides bytes.
#[derive(Default)]
struct Flags {
    /// The writer reset the stream.
    reset: AtomicBool,
    /// The reader stopped it.
    stopped: AtomicBool,
}

/// The writing end of one stream direction.
pub struct MemSend {
    pipe: Option<DuplexStream>,
    flags: Arc<Flags>,
    conn: Arc<Conn>,
    side: usize,
    closed: Pin<Box<WaitForCancellationFutureOwned>>,
}

impl MemSend {
    fn new(pipe: DuplexStream, flags: Arc<Flags>, conn: &Arc<Conn>, side: usize) -> Self {
        MemSend {
            pipe: Some(pipe),
            flags,
            conn: conn.clone(),
            side,
            closed: Box::pin(conn.closed.clone().cancelled_owned()),
        }
    }
}

fn write_error(error: quinn::WriteError) -> io::Error {
    io::Error::from(error)
}

fn stopped() -> io::Error {
    write_error(quinn::WriteError::Stopped(quinn::VarInt::from_u32(1)))
}

impl AsyncWrite for MemSend {
    fn poll_write(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        let this = self.get_mut();
        if let Some(e) = this.conn.lost(this.side, |e| {
            write_error(quinn::WriteError::ConnectionLost(e))
        }) {
            return Poll::Ready(Err(e));
        }
        if this.flags.stopped.load(Ordering::Acquire) {
            return Poll::Ready(Err(stopped()));
        }
        let Some(pipe) = this.pipe.as_mut() else {
            return Poll::Ready(Err(write_error(quinn::WriteError::ClosedStream)));
        };
        match Pin::new(pipe).poll_write(cx, buf) {
            Poll::Ready(Err(_)) if this.flags.stopped.load(Ordering::Acquire) => {
                Poll::Ready(Err(stopped()))
            }
            Poll::Pending => {
                // Wake when the connection closes, too.
                if this.closed.as_mut().poll(cx).is_ready() {
                    let lost = this.conn.lost(this.side, |e| {
                        write_error(quinn::WriteError::ConnectionLost(e))
                    });
                    if let Some(e) = lost {
                        return Poll::Ready(Err(e));
                    }
                }
                Poll::Pending
            }
            ready => ready,
        }
    }

    fn poll_flush(self: Pin<&mut Self>, _cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Poll::Ready(Ok(()))
    }

    fn poll_shutdown(self: Pin<&mut Self>, _cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        self.get_mut().pipe = None;
        Poll::Ready(Ok(()))
    }
}

impl SendHalf for MemSend {
    fn finish(&mut self) {
        // The reader sees the end once it has read what was written.
        self.pipe = None;
    }

    fn reset(&mut self) {
        self.flags.reset.store(true, Ordering::Release);
        self.pipe = None;
    }
}

/// The reading end of one stream direction.
pub struct MemRecv {
    pipe: Option<DuplexStream>,
    flags: Arc<Flags>,
    conn: Arc<Conn>,
    side: usize,
    closed: Pin<Box<WaitForCancellationFutureOwned>>,
}

impl MemRecv {
    fn new(pipe: DuplexStream, flags: Arc<Flags>, conn: &Arc<Conn>, side: usize) -> Self {
        MemRecv {
            pipe: Some(pipe),
            flags,
            conn: conn.clone(),
            side,
            closed: Box::pin(conn.closed.clone().cancelled_owned()),
        }
    }
}

fn read_error(error: quinn::ReadError) -> io::Error {
    io::Error::from(error)
}

impl AsyncRead for MemRecv {
    fn poll_read(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        let this = self.get_mut();
        if let Some(e) = this.conn.lost(this.side, |e| {
            read_error(quinn::ReadError::ConnectionLost(e))
        }) {
            return Poll::Ready(Err(e));
        }
        let Some(pipe) = this.pipe.as_mut() else {
            return Poll::Ready(Err(read_error(quinn::ReadError::ClosedStream)));
        };
        let before = buf.filled().len();
        match Pin::new(pipe).poll_read(cx, buf) {
            Poll::Ready(Ok(())) => {
                let n = buf.filled().len() - before;
                if n == 0 && this.flags.reset.load(Ordering::Acquire) {
                    let code = quinn::VarInt::from_u32(1);
                    return Poll::Ready(Err(read_error(quinn::ReadError::Reset(code))));
                }
                this.conn.received[this.side].fetch_add(n as u64, Ordering::Relaxed);
                Poll::Ready(Ok(()))
            }
            Poll::Pending => {
                if this.closed.as_mut().poll(cx).is_ready() {
                    let lost = this.conn.lost(this.side, |e| {
                        read_error(quinn::ReadError::ConnectionLost(e))
                    });
                    if let Some(e) = lost {
                        return Poll::Ready(Err(e));
                    }
                }
                Poll::Pending
            }
            ready => ready,
        }
    }
}

impl RecvHalf for MemRecv {
    fn stop(&mut self) {
        self.flags.stopped.store(true, Ordering::Release);
        // Dropping the pipe's end wakes a writer waiting for room.
        self.pipe = None;
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use ferry_proto::Message;

    fn ids() -> (DeviceId, DeviceId) {
        (
            DeviceId::from_spki(b"sender"),
            DeviceId::from_spki(b"receiver"),
        )
    }

    #[tokio::test]
    async fn messages_cross_and_a_finished_stream_ends_cleanly() {
        let (s, r) = ids();
        let (sender, receiver) = pair(s, r);
        assert_eq!(sender.peer().ok(), Some(r));
        assert_eq!(receiver.peer().ok(), Some(s));
        assert_eq!(
            sender.pairing_material().ok(),
            receiver.pairing_material().ok()
        );
        let mut out = sender.open().await.unwrap();
        let mut inc = receiver.accept().await.unwrap();
        out.send.send(&Message::Want).await.unwrap();
        out.send.finish();
        assert!(matches!(
            inc.recv.recv().await.unwrap(),
            Some(Message::Want)
        ));
        assert!(inc.recv.recv().await.unwrap().is_none());
        inc.send.send(&Message::Stored).await.unwrap();
        assert!(matches!(
            out.recv.recv_message().await.unwrap(),
            Message::Stored
        ));
        assert!(receiver.bytes_received() > 0);
    }

    #[tokio::test]
    async fn a_stopped_stream_fails_its_writer_with_the_stop() {
        let (s, r) = ids();
        let (sender, receiver) = pair(s, r);
        let mut out = sender.open().await.unwrap();
        let mut inc = receiver.accept().await.unwrap();
        inc.recv.stop();
        let big = vec![7u8; 200 * 1024];
        let mut error = None;
        for _ in 0..8 {
            if let Err(e) = out.send.send_data(&big).await {
                error = Some(e);
                break;
            }
        }
        assert_eq!(error.and_then(|e| e.stopped_code()), Some(1));
    }

    #[tokio::test]
    async fn a_reset_stream_is_an_error_not_an_end() {
        let (s, r) = ids();
        let (sender, receiver) = pair(s, r);
        let mut out = sender.open().await.unwrap();
        let mut inc = receiver.accept().await.unwrap();
        out.send.reset();
        assert!(inc.recv.recv().await.unwrap_err().is_lost());
    }

    #[tokio::test]
    async fn closing_fails_waiting_streams_and_tells_the_peer_why() {
        let (s, r) = ids();
        let (sender, receiver) = pair(s, r);
        let mut out = sender.open().await.unwrap();
        let _inc = receiver.accept().await.unwrap();
        let waiting = tokio::spawn(async move { out.recv.recv().await });
        receiver.close(3, b"disk full");
        assert!(waiting.await.unwrap().unwrap_err().is_lost());
        match sender.closed().await {
            quinn::ConnectionError::ApplicationClosed(close) => {
                assert_eq!(close.error_code.into_inner(), 3);
                assert_eq!(&close.reason[..], b"disk full");
            }
            other => panic!("unexpected close: {other}"),
        }
        assert!(matches!(
            receiver.close_reason(),
            Some(quinn::ConnectionError::LocallyClosed)
        ));
        assert!(sender.open().await.is_err());
        assert!(receiver.accept().await.is_err());
    }

    #[tokio::test]
    async fn dropping_a_side_closes_the_connection() {
        let (s, r) = ids();
        let (sender, receiver) = pair(s, r);
        drop(receiver);
        assert!(sender.is_closed());
        assert!(sender.accept().await.is_err());
    }
}
