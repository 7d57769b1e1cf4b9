//! Fetching one version's bytes: over the session's connection, one stream
//! each, or read from a store on this machine, as [`Piece`]s ending with the
//! hash the bytes were sent under.

use std::sync::Arc;

use ferry_proto::Message;

use crate::receiver::requests::{self, Ctx, VersionReader};
use crate::stream::{Channel, FramedRecv, StreamError};

/// Why a version's bytes could not be fetched.
#[derive(Debug, thiserror::Error)]
pub enum FetchError {
    #[error("the connection to the receiver broke")]
    Protocol(#[from] StreamError),
    #[error("connection to the receiver lost")]
    Connection(#[from] quinn::ConnectionError),
    /// The receiver (or the store) could not send the version.
    #[error("the receiver could not send version {version}: {message}")]
    Failed { version: u64, message: String },
    /// [`Fetch::next`] was called again after it gave the end.
    #[error("version {version} was read to its end")]
    PastEnd { version: u64 },
    #[error(transparent)]
    Cancelled(#[from] crate::tasks::Cancelled),
}

/// Fetches versions' bytes: over the session's connection, one stream each,
/// or from the local store.
#[derive(Clone)]
pub struct Fetcher(FetchFrom);

#[derive(Clone)]
enum FetchFrom {
    Remote(quinn::Connection),
    Local(Arc<Ctx>),
}

impl Fetcher {
    pub(super) fn remote(conn: quinn::Connection) -> Fetcher {
        Fetcher(FetchFrom::Remote(conn))
    }

    pub(super) fn local(ctx: Arc<Ctx>) -> Fetcher {
        Fetcher(FetchFrom::Local(ctx))
    }

    /// Asks for the bytes of `version` (on a stream of its own).
    pub async fn fetch(&self, version: u64) -> Result<Fetch, FetchError> {
        let source = match &self.0 {
            FetchFrom::Remote(conn) => {
                let mut channel = Channel::new(conn.open_bi().await?);
                channel.send.send(&Message::Fetch { version }).await?;
                channel.send.finish();
                FetchSource::Remote(channel.recv)
            }
            FetchFrom::Local(ctx) => {
                let ctx = ctx.clone();
                let file = crate::tasks::blocking(move || requests::open_version(&ctx, version))
                    .await?
                    .map_err(|f| FetchError::Failed {
                        version,
                        message: f.message,
                    })?;
                FetchSource::Local(Some(Box::new(VersionReader::new(version, file))))
            }
        };
        Ok(Fetch { version, source })
    }

    /// The stored file of `version` when the fetcher reads a store on this
    /// machine (to be read in place, at any offset, without a copy);
    /// `None` over a connection, where bytes can only be fetched in order.
    /// Its bytes are not checked against the catalog's hash.
    pub async fn stored_file(&self, version: u64) -> Option<Result<std::fs::File, FetchError>> {
        let FetchFrom::Local(ctx) = &self.0 else {
            return None;
        };
        let ctx = ctx.clone();
        let opened = crate::tasks::blocking(move || requests::open_version(&ctx, version)).await;
        Some(match opened {
            Ok(file) => file.map_err(|f| FetchError::Failed {
                version,
                message: f.message,
            }),
            Err(cancelled) => Err(cancelled.into()),
        })
    }
}

/// The bytes of one version, as they arrive.
pub struct Fetch {
    version: u64,
    source: FetchSource,
}

enum FetchSource {
    Remote(FramedRecv),
    /// `None` once the end was given (boxed: the hasher is large).
    Local(Option<Box<VersionReader>>),
}

/// One step of a [`Fetch`].
#[derive(Debug)]
pub enum Piece {
    /// The next bytes.
    Data(Vec<u8>),
    /// All bytes were sent; the receiver hashed them to this.
    End([u8; 32]),
}

impl Fetch {
    /// The next piece of content.
    pub async fn next(&mut self) -> Result<Piece, FetchError> {
        let version = self.version;
        let recv = match &mut self.source {
            FetchSource::Remote(recv) => recv,
            FetchSource::Local(slot) => {
                let Some(mut reader) = slot.take() else {
                    return Err(FetchError::PastEnd { version });
                };
                let (reader, chunk) = crate::tasks::blocking(move || {
                    let chunk = reader.next_chunk();
                    (reader, chunk)
                })
                .await?;
                let chunk = chunk.map_err(|f| FetchError::Failed {
                    version,
                    message: f.message,
                })?;
                return Ok(match chunk {
                    Some(data) => {
                        *slot = Some(reader);
                        Piece::Data(data)
                    }
                    None => Piece::End(reader.hash()),
                });
            }
        };
        match recv.recv_message().await? {
            Message::Data(data) => Ok(Piece::Data(data)),
            Message::End { hash } => Ok(Piece::End(hash)),
            Message::Failed(f) => Err(FetchError::Failed {
                version,
                message: f.message,
            }),
            other => Err(StreamError::unexpected("Data", &other).into()),
        }
    }
}
