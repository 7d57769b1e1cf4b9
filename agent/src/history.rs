//! The client side of read-only sessions: ask a receiver for this sender's
//! runs, the versions of a path, a folder's tree as of a point, and fetch
//! the bytes of a version. Authenticates exactly like a run (same identity,
//! same receiver pin), but never pairs.

use std::net::SocketAddr;
use std::path::PathBuf;
use std::time::Duration;

use ferry_proto::{
    At, Message, Name, NotServed, Open, RefuseCode, RelPath, Request, RunInfo, VersionInfo,
};

use crate::identity::{DeviceId, Identity, IdentityError};
use crate::pins::{PinError, Pins};
use crate::stream::{Channel, FramedRecv, StreamError};
use crate::tls::{self, TlsError};
use crate::transport::{self, TransportError};

/// Where to ask, and as whom.
#[derive(Debug, Clone)]
pub struct Remote {
    /// The receiver's host name or address.
    pub host: String,
    /// Its UDP port.
    pub port: u16,
    /// The receiver's expected id (otherwise the pinned one, or pinned now).
    pub receiver_id: Option<DeviceId>,
    /// This sender's state directory (identity, pins).
    pub state: PathBuf,
    /// This sender's name on the receiver.
    pub name: Name,
    /// The folder asked about.
    pub folder: Name,
}

/// Why a question could not be answered.
#[derive(Debug, thiserror::Error)]
pub enum ClientError {
    #[error(transparent)]
    Identity(#[from] IdentityError),
    #[error(transparent)]
    Pin(#[from] PinError),
    #[error(transparent)]
    Transport(#[from] TransportError),
    #[error(transparent)]
    Tls(#[from] TlsError),
    #[error("the receiver is busy; try again in {retry_after:?}")]
    Busy { retry_after: Duration },
    #[error("the receiver refused: {message}")]
    Refused { code: RefuseCode, message: String },
    #[error("the connection to the receiver broke")]
    Protocol(#[from] StreamError),
    #[error("connection to the receiver lost")]
    Connection(#[from] quinn::ConnectionError),
    #[error("the receiver could not send version {version}: {message}")]
    Fetch { version: u64, message: String },
}

/// A folder's tree as the receiver gave it.
#[derive(Debug, Clone, Default)]
pub struct RemoteTree {
    /// The run the point resolved to (`None`: the latest state).
    pub run: Option<u64>,
    /// The versions that can be restored, in path order.
    pub entries: Vec<VersionInfo>,
    /// The versions the receiver cannot serve, and why.
    pub not_served: Vec<NotServed>,
}

/// An open read-only session.
pub struct Client {
    endpoint: quinn::Endpoint,
    conn: quinn::Connection,
    control: Channel,
    sender: Name,
    receiver: DeviceId,
}

impl Client {
    /// Connects, checks the receiver's id against the pin, and opens a
    /// read-only session for `remote.folder`.
    pub async fn connect(remote: &Remote) -> Result<Client, ClientError> {
        let identity = Identity::load_or_create(&remote.state)?;
        let addr: SocketAddr = transport::resolve(&remote.host, remote.port).await?;
        let endpoint = transport::client_endpoint(&identity, addr)?;
        let conn = transport::connect(&endpoint, addr).await?;
        let receiver = tls::peer_id(&conn)?;
        let mut pins = Pins::load(&remote.state)?;
        pins.check(
            &format!("{}:{}", remote.host, remote.port),
            receiver,
            remote.receiver_id,
        )?;
        let mut control = Channel::new(conn.open_bi().await?);
        control
            .send
            .send(&Message::Open(Open {
                protocol: ferry_proto::PROTOCOL_VERSION,
                name: remote.name.clone(),
                folder: remote.folder.clone(),
                agent: format!("ferry {}", env!("CARGO_PKG_VERSION")),
            }))
            .await?;
        let sender = match control.recv.expect().await? {
            Message::Opened { sender } => sender,
            Message::Busy { retry_after_ms } => {
                return Err(ClientError::Busy {
                    retry_after: Duration::from_millis(retry_after_ms.min(3_600_000)),
                })
            }
            Message::Refused(r) => {
                conn.close(quinn::VarInt::from_u32(0), b"refused");
                return Err(ClientError::Refused {
                    code: r.code,
                    message: r.message,
                });
            }
            other => return Err(StreamError::unexpected("Opened", &other).into()),
        };
        Ok(Client {
            endpoint,
            conn,
            control,
            sender,
            receiver,
        })
    }

    /// The name the receiver knows this sender by.
    pub fn sender(&self) -> &Name {
        &self.sender
    }

    /// The receiver's device id.
    pub fn receiver(&self) -> DeviceId {
        self.receiver
    }

    /// This sender's runs as the receiver recorded them, newest first.
    pub async fn runs(&mut self) -> Result<Vec<RunInfo>, ClientError> {
        self.control
            .send
            .send(&Message::Request(Request::Runs))
            .await?;
        let mut out = Vec::new();
        loop {
            match self.answer().await? {
                Message::RunList(batch) => out.extend(batch),
                Message::ListEnd { .. } => return Ok(out),
                other => return Err(StreamError::unexpected("RunList", &other).into()),
            }
        }
    }

    /// Every stored version of `path`, newest first.
    pub async fn versions(&mut self, path: &RelPath) -> Result<Vec<VersionInfo>, ClientError> {
        let request = Request::Versions { path: path.clone() };
        Ok(self.version_list(request).await?.entries)
    }

    /// The folder's tree as of `at` (below `under` if not empty), and the
    /// run it resolved to; versions the receiver cannot serve are left out
    /// (see [`Client::tree_report`]).
    pub async fn tree(
        &mut self,
        at: At,
        under: &[RelPath],
    ) -> Result<(Option<u64>, Vec<VersionInfo>), ClientError> {
        let tree = self.tree_report(at, under).await?;
        Ok((tree.run, tree.entries))
    }

    /// The folder's tree as of `at` (below `under` if not empty), the run
    /// it resolved to, and the versions the receiver cannot serve.
    pub async fn tree_report(
        &mut self,
        at: At,
        under: &[RelPath],
    ) -> Result<RemoteTree, ClientError> {
        let request = Request::Tree {
            at,
            under: under.to_vec(),
        };
        self.version_list(request).await
    }

    async fn version_list(&mut self, request: Request) -> Result<RemoteTree, ClientError> {
        self.control.send.send(&Message::Request(request)).await?;
        let mut out = RemoteTree::default();
        loop {
            match self.answer().await? {
                Message::VersionList(batch) => out.entries.extend(batch),
                Message::NotServed(batch) => out.not_served.extend(batch),
                Message::ListEnd { run } => {
                    out.run = run;
                    return Ok(out);
                }
                other => return Err(StreamError::unexpected("VersionList", &other).into()),
            }
        }
    }

    async fn answer(&mut self) -> Result<Message, ClientError> {
        match self.control.recv.expect().await? {
            Message::Refused(r) => Err(ClientError::Refused {
                code: r.code,
                message: r.message,
            }),
            other => Ok(other),
        }
    }

    /// A handle that fetches versions' bytes, usable from several tasks.
    pub fn fetcher(&self) -> Fetcher {
        Fetcher {
            conn: self.conn.clone(),
        }
    }

    /// Ends the session cleanly.
    pub async fn close(mut self) {
        self.control.send.finish();
        self.conn.close(quinn::VarInt::from_u32(0), b"done");
        self.endpoint.wait_idle().await;
    }
}

/// Fetches versions' bytes over the session's connection, one stream each.
#[derive(Clone)]
pub struct Fetcher {
    conn: quinn::Connection,
}

impl Fetcher {
    /// Asks for the bytes of `version` on a stream of its own.
    pub async fn fetch(&self, version: u64) -> Result<Fetch, ClientError> {
        let mut channel = Channel::new(self.conn.open_bi().await?);
        channel.send.send(&Message::Fetch { version }).await?;
        channel.send.finish();
        Ok(Fetch {
            version,
            recv: channel.recv,
        })
    }
}

/// The bytes of one version, as they arrive.
pub struct Fetch {
    version: u64,
    recv: FramedRecv,
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
    pub async fn next(&mut self) -> Result<Piece, ClientError> {
        match self.recv.expect().await? {
            Message::Data(data) => Ok(Piece::Data(data)),
            Message::End { hash } => Ok(Piece::End(hash)),
            Message::Failed(f) => Err(ClientError::Fetch {
                version: self.version,
                message: f.message,
            }),
            other => Err(StreamError::unexpected("Data", &other).into()),
        }
    }
}
