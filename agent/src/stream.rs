//! A framed message stream: [`Message`] in, [`Message`] out, with the frame
//! size checked before anything is allocated. It runs over any pair of
//! byte-stream halves ([`SendHalf`], [`RecvHalf`]): a QUIC stream in
//! production, an in-memory pipe ([`crate::link::memory`]) in tests.

use std::io;
use std::sync::Arc;

use ferry_proto::frame::{self, FrameError};
use ferry_proto::Message;
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt};

use crate::ratelimit::RateLimiter;

/// Why a message could not be sent or received.
#[derive(Debug, thiserror::Error)]
pub enum StreamError {
    #[error(transparent)]
    Frame(#[from] FrameError),
    #[error("could not send")]
    Write(#[source] io::Error),
    #[error("could not receive")]
    Read(#[source] io::Error),
    #[error("the peer closed the stream before the expected message")]
    Closed,
    #[error("protocol error: expected {expected}, got {got}")]
    Unexpected { expected: &'static str, got: String },
}

impl StreamError {
    /// An `Unexpected` error naming the message that arrived instead.
    pub fn unexpected(expected: &'static str, got: &Message) -> Self {
        StreamError::Unexpected {
            expected,
            got: describe(got),
        }
    }

    /// The code the peer gave when it stopped reading this stream (it
    /// wants no more of it), if that is why a send failed.
    pub fn stopped_code(&self) -> Option<u64> {
        match self {
            StreamError::Write(e) => match e.get_ref()?.downcast_ref::<quinn::WriteError>()? {
                quinn::WriteError::Stopped(code) => Some(code.into_inner()),
                _ => None,
            },
            _ => None,
        }
    }

    /// The stream or its connection went away (as opposed to the peer
    /// saying something wrong on it).
    pub fn is_lost(&self) -> bool {
        matches!(self, StreamError::Write(_) | StreamError::Read(_))
    }
}

/// The sending half of a byte stream, as a [`FramedSend`] needs it.
pub trait SendHalf: AsyncWrite + Send + Sync + Unpin + 'static {
    /// Ends the stream after everything written has been delivered.
    fn finish(&mut self);
    /// Abandons the stream: the peer sees it reset.
    fn reset(&mut self);
    /// Writes all of `bytes`, handed over: a QUIC stream keeps the buffer
    /// itself until it is acknowledged instead of copying it.
    fn write_owned(&mut self, bytes: Vec<u8>) -> WriteOwned<'_> {
        Box::pin(async move {
            let written = self.write_all(&bytes).await;
            crate::memory::FRAMES.recycle(bytes);
            written
        })
    }
}

/// What [`SendHalf::write_owned`] returns.
pub type WriteOwned<'a> =
    std::pin::Pin<Box<dyn std::future::Future<Output = io::Result<()>> + Send + 'a>>;

/// The receiving half of a byte stream, as a [`FramedRecv`] needs it.
pub trait RecvHalf: AsyncRead + Send + Sync + Unpin + 'static {
    /// Tells the peer to stop sending on this stream.
    fn stop(&mut self);
}

impl SendHalf for quinn::SendStream {
    fn finish(&mut self) {
        // Finishing twice, or after the peer stopped the stream, is harmless.
        let _ = quinn::SendStream::finish(self);
    }

    fn reset(&mut self) {
        let _ = quinn::SendStream::reset(self, quinn::VarInt::from_u32(1));
    }

    fn write_owned(&mut self, bytes: Vec<u8>) -> WriteOwned<'_> {
        Box::pin(async move {
            let owned = crate::memory::Recycled(bytes, &crate::memory::FRAMES);
            self.write_chunk(bytes::Bytes::from_owner(owned))
                .await
                .map_err(io::Error::from)
        })
    }
}

impl RecvHalf for quinn::RecvStream {
    fn stop(&mut self) {
        let _ = quinn::RecvStream::stop(self, quinn::VarInt::from_u32(1));
    }
}

/// A short name of a message's kind, for errors and logs (never its payload).
pub fn describe(message: &Message) -> String {
    let kind = match message {
        Message::Hello(_) => "Hello",
        Message::Welcome(_) => "Welcome",
        Message::Busy { .. } => "Busy",
        Message::Refused(_) => "Refused",
        Message::Entry(_) => "Entry",
        Message::Data(_) => "Data",
        Message::End { .. } => "End",
        Message::Abort { .. } => "Abort",
        Message::Want => "Want",
        Message::Stored => "Stored",
        Message::Failed(_) => "Failed",
        Message::Delete { .. } => "Delete",
        Message::Deleted { .. } => "Deleted",
        Message::Finish(_) => "Finish",
        Message::Committed { .. } => "Committed",
        Message::Open(_) => "Open",
        Message::Opened { .. } => "Opened",
        Message::Request(_) => "Request",
        Message::RunList(_) => "RunList",
        Message::VersionList(_) => "VersionList",
        Message::ListEnd { .. } => "ListEnd",
        Message::Fetch { .. } => "Fetch",
        Message::Go(_) => "Go",
        Message::Copy { .. } => "Copy",
        Message::DataZstd(_) => "DataZstd",
        Message::Keep { .. } => "Keep",
        Message::Bundle => "Bundle",
        Message::Zstream(_) => "Zstream",
        Message::NotServed(_) => "NotServed",
        Message::DirList(_) => "DirList",
        Message::HelloProtected { .. } => "HelloProtected",
        Message::FolderProtection(_) => "FolderProtection",
    };
    kind.to_string()
}

/// The sending half: writes one frame per message.
pub struct FramedSend {
    inner: Box<dyn SendHalf>,
    limiter: Option<Arc<RateLimiter>>,
}

impl FramedSend {
    pub fn new(inner: impl SendHalf) -> Self {
        Self {
            inner: Box::new(inner),
            limiter: None,
        }
    }

    /// Paces every write of this stream with `limiter` (shared with the
    /// other streams it limits); `None`: no limit.
    pub fn set_limiter(&mut self, limiter: Option<Arc<RateLimiter>>) {
        self.limiter = limiter;
    }

    /// Waits until the limiter, if any, lets `bytes` go.
    async fn pace(&self, bytes: usize) {
        if let Some(limiter) = &self.limiter {
            limiter.acquire(bytes).await;
        }
    }

    async fn write(&mut self, bytes: &[u8]) -> Result<(), StreamError> {
        self.inner
            .write_all(bytes)
            .await
            .map_err(StreamError::Write)
    }

    /// Sends one message.
    pub async fn send(&mut self, message: &Message) -> Result<(), StreamError> {
        let bytes = frame::encode(message)?;
        self.pace(bytes.len()).await;
        self.write(&bytes).await
    }

    /// Sends bytes that are already frames (see [`ferry_proto::frame`]).
    pub async fn send_raw(&mut self, frames: &[u8]) -> Result<(), StreamError> {
        self.pace(frames.len()).await;
        self.write(frames).await
    }

    /// Sends bytes that are already frames, handing the buffer over to the
    /// stream (no copy on a QUIC stream).
    pub async fn send_owned(&mut self, frames: Vec<u8>) -> Result<(), StreamError> {
        self.pace(frames.len()).await;
        self.inner
            .write_owned(frames)
            .await
            .map_err(StreamError::Write)
    }

    /// Sends `data` as one `Data` message without copying it into a message
    /// first. `data` must be at most [`ferry_proto::MAX_DATA`] bytes.
    pub async fn send_data(&mut self, data: &[u8]) -> Result<(), StreamError> {
        let header = frame::data_header(data.len())?;
        self.pace(header.len() + data.len()).await;
        self.write(&header).await?;
        self.write(data).await
    }

    /// Ends the stream after everything written has been delivered.
    pub fn finish(&mut self) {
        self.inner.finish();
    }

    /// Abandons the stream: the peer sees it reset.
    pub fn reset(&mut self) {
        self.inner.reset();
    }
}

/// The receiving half: reads one frame at a time.
pub struct FramedRecv {
    inner: Box<dyn RecvHalf>,
    limiter: Option<Arc<RateLimiter>>,
}

impl FramedRecv {
    pub fn new(inner: impl RecvHalf) -> Self {
        Self {
            inner: Box::new(inner),
            limiter: None,
        }
    }

    /// Paces this stream with `limiter` (shared with the other streams it
    /// limits): after each frame is read, waits until its bytes are due, so
    /// flow control holds the peer to the rate. `None`: no limit.
    pub fn set_limiter(&mut self, limiter: Option<Arc<RateLimiter>>) {
        self.limiter = limiter;
    }

    /// The next message, or `None` if the peer finished the stream at a frame
    /// boundary.
    pub async fn recv(&mut self) -> Result<Option<Message>, StreamError> {
        let frame = self.read_frame().await?;
        if let (Some(limiter), Some((_, bytes))) = (&self.limiter, &frame) {
            limiter.acquire(*bytes).await;
        }
        Ok(frame.map(|(message, _)| message))
    }

    /// The next message and its size on the stream (header included).
    async fn read_frame(&mut self) -> Result<Option<(Message, usize)>, StreamError> {
        let mut header = [0u8; 4];
        let mut got = 0;
        while got < header.len() {
            match self.inner.read(&mut header[got..]).await {
                Ok(0) if got == 0 => return Ok(None),
                Ok(0) => return Err(FrameError::Truncated.into()),
                Ok(n) => got += n,
                Err(e) => return Err(StreamError::Read(e)),
            }
        }
        let len = frame::body_len(header)?;
        // The first bytes tell a Data frame, whose content is read straight
        // into its own buffer; anything else is decoded whole.
        let mut prefix = [0u8; 4];
        let have = len.min(prefix.len());
        self.read_body(&mut prefix[..have]).await?;
        if let Some((n, used)) = frame::data_prefix(&prefix[..have]) {
            if used + n == len {
                let mut data = Vec::with_capacity(n);
                data.extend_from_slice(&prefix[used..have]);
                self.read_data(&mut data, n).await?;
                return Ok(Some((Message::Data(data), header.len() + len)));
            }
        }
        let mut body = vec![0u8; len];
        body[..have].copy_from_slice(&prefix[..have]);
        self.read_body(&mut body[have..]).await?;
        Ok(Some((frame::decode_body(&body)?, header.len() + len)))
    }

    /// Reads exactly `buf.len()` bytes of a frame body.
    async fn read_body(&mut self, buf: &mut [u8]) -> Result<(), StreamError> {
        match self.inner.read_exact(buf).await {
            Ok(_) => Ok(()),
            Err(e) if e.kind() == io::ErrorKind::UnexpectedEof => Err(FrameError::Truncated.into()),
            Err(e) => Err(StreamError::Read(e)),
        }
    }

    /// Reads into `data` until it holds `n` bytes of a frame body, into its
    /// spare capacity: nothing is zeroed first.
    async fn read_data(&mut self, data: &mut Vec<u8>, n: usize) -> Result<(), StreamError> {
        use bytes::BufMut;
        while data.len() < n {
            let want = n - data.len();
            match self.inner.read_buf(&mut (&mut *data).limit(want)).await {
                Ok(0) => return Err(FrameError::Truncated.into()),
                Ok(_) => {}
                Err(e) => return Err(StreamError::Read(e)),
            }
        }
        Ok(())
    }

    /// The next message; the end of the stream is an error.
    pub async fn recv_message(&mut self) -> Result<Message, StreamError> {
        self.recv().await?.ok_or(StreamError::Closed)
    }

    /// Tells the peer to stop sending on this stream.
    pub fn stop(&mut self) {
        self.inner.stop();
    }
}

/// Both halves of a bidirectional stream.
pub struct Channel {
    pub send: FramedSend,
    pub recv: FramedRecv,
}

impl Channel {
    pub fn new((send, recv): (impl SendHalf, impl RecvHalf)) -> Self {
        Self {
            send: FramedSend::new(send),
            recv: FramedRecv::new(recv),
        }
    }
}
