//! The client of read-only sessions: ask a receiver for this sender's runs,
//! the versions of a path, a folder's tree as of a point, and fetch the
//! bytes of a version, and browse a folder one directory at a time
//! ([`Client::list`]). Authenticates exactly like a run (same identity,
//! same receiver pin), but never pairs. The same questions can be put to a
//! store on this machine ([`Client::open_store`]): the receiver's own
//! request handlers answer them from the store, opened read-only.
//!
//! ## Layout
//!
//! - [`local`]: a store on this machine, opened read-only and asked directly.
//! - [`fetch`]: fetching one version's bytes, from a receiver or a store.
//! - [`point_in_time`]: "a date and time, or a duration ago" parsed.
//! - [`sealed`]: a protected folder: the key checked, objects' headers opened.

pub mod fetch;
pub mod local;
pub mod point_in_time;
pub mod sealed;

use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

pub use ferry_proto::DirEntry;
use ferry_proto::{
    At, Message, Name, NotServed, Open, Protection, RefuseCode, RelPath, Request, RunInfo,
    VersionInfo,
};
pub use fetch::{Fetch, FetchError, Fetcher, Piece};
pub use local::{LocalStore, OpenStoreError};
pub use point_in_time::{parse_point_in_time, PointInTimeError};

use crate::identity::{DeviceId, Identity, IdentityError};
use crate::pins::{PinError, Pins};
use crate::receiver::requests::{Answer, Ctx};
use crate::stream::{Channel, StreamError};
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

/// Why a session with a receiver could not be opened ([`Client::connect`]).
#[derive(Debug, thiserror::Error)]
pub enum ConnectError {
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
}

/// Why a question (runs, versions, a tree, a listing) got no answer.
#[derive(Debug, thiserror::Error)]
pub enum AskError {
    #[error("the receiver refused: {message}")]
    Refused { code: RefuseCode, message: String },
    #[error("the connection to the receiver broke")]
    Protocol(#[from] StreamError),
    /// The local store cannot answer the question (the message says why).
    #[error("{message}")]
    Unanswered { message: String },
    /// The store's handlers answered another question than the one asked.
    #[error("the store answered another question than the {asked} asked for")]
    OtherAnswer { asked: &'static str },
    #[error(transparent)]
    Cancelled(#[from] crate::tasks::Cancelled),
}

/// Any error of a read-only session, for a caller that opens, asks and
/// fetches in one place (each operation has its own error).
#[derive(Debug, thiserror::Error)]
pub enum ClientError {
    #[error(transparent)]
    Connect(#[from] ConnectError),
    #[error(transparent)]
    OpenStore(#[from] OpenStoreError),
    #[error(transparent)]
    Ask(#[from] AskError),
    #[error(transparent)]
    Fetch(#[from] FetchError),
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

/// One directory of a folder as the receiver gave it ([`Client::listing`]).
#[derive(Debug, Clone, Default)]
pub struct Listing {
    /// The run the point resolved to (`None`: the latest state).
    pub run: Option<u64>,
    /// The directory's children, sorted by name.
    pub entries: Vec<DirEntry>,
}

/// An open read-only session: with a receiver, or on a local store.
pub struct Client {
    session: Session,
    sender: Name,
    /// The folder's protection, once asked ([`Client::protection`]).
    protection: Option<Protection>,
}

enum Session {
    Remote {
        endpoint: quinn::Endpoint,
        conn: quinn::Connection,
        control: Channel,
        receiver: DeviceId,
    },
    /// A local store, answered by the receiver's own request handlers.
    Local(Arc<Ctx>),
}

impl Client {
    /// Connects, checks the receiver's id against the pin, and opens a
    /// read-only session for `remote.folder`.
    pub async fn connect(remote: &Remote) -> Result<Client, ConnectError> {
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
        let sender = match control.recv.recv_message().await? {
            Message::Opened { sender } => sender,
            Message::Busy { retry_after_ms } => {
                return Err(ConnectError::Busy {
                    retry_after: Duration::from_millis(retry_after_ms.min(3_600_000)),
                })
            }
            Message::Refused(r) => {
                conn.close(quinn::VarInt::from_u32(0), b"refused");
                return Err(ConnectError::Refused {
                    code: r.code,
                    message: r.message,
                });
            }
            other => return Err(StreamError::unexpected("Opened", &other).into()),
        };
        Ok(Client {
            session: Session::Remote {
                endpoint,
                conn,
                control,
                receiver,
            },
            sender,
            protection: None,
        })
    }

    /// Opens `local.folder` of `local.name` in a store on this machine, read
    /// only (a receiver may be running on it). The answers are the ones a
    /// receiver gives: the same handlers compute them.
    pub async fn open_store(local: &LocalStore) -> Result<Client, OpenStoreError> {
        let local = local.clone();
        let ctx = crate::tasks::blocking(move || local::open(local)).await??;
        Ok(Client {
            sender: ctx.ns.sender.clone(),
            session: Session::Local(Arc::new(ctx)),
            protection: None,
        })
    }

    /// The name the receiver knows this sender by.
    pub fn sender(&self) -> &Name {
        &self.sender
    }

    /// The folder asked about, when reading a local store (`None` when
    /// asking a receiver: it is the one asked for).
    pub fn local_folder(&self) -> Option<&Name> {
        match &self.session {
            Session::Remote { .. } => None,
            Session::Local(ctx) => Some(&ctx.ns.folder),
        }
    }

    /// The receiver's device id (`None` for a local store).
    pub fn receiver(&self) -> Option<DeviceId> {
        match &self.session {
            Session::Remote { receiver, .. } => Some(*receiver),
            Session::Local(_) => None,
        }
    }

    /// This sender's runs as the receiver recorded them, newest first.
    pub async fn runs(&mut self) -> Result<Vec<RunInfo>, AskError> {
        let control = match &mut self.session {
            Session::Local(ctx) => {
                return match local::ask(ctx, Request::Runs).await? {
                    Answer::Runs(runs) => Ok(runs),
                    _ => Err(AskError::OtherAnswer { asked: "runs" }),
                }
            }
            Session::Remote { control, .. } => control,
        };
        control.send.send(&Message::Request(Request::Runs)).await?;
        let mut out = Vec::new();
        loop {
            match answer(control).await? {
                Message::RunList(batch) => out.extend(batch),
                Message::ListEnd { .. } => return Ok(out),
                other => return Err(StreamError::unexpected("RunList", &other).into()),
            }
        }
    }

    /// The folder's protection (`Plain` for a folder never sent), asked
    /// once per session.
    pub async fn protection(&mut self) -> Result<Protection, AskError> {
        if let Some(known) = self.protection {
            return Ok(known);
        }
        let known = match &mut self.session {
            Session::Local(ctx) => local::protection(ctx).await?,
            Session::Remote { control, .. } => {
                control
                    .send
                    .send(&Message::Request(Request::Protection))
                    .await?;
                match answer(control).await? {
                    Message::FolderProtection(p) => p,
                    other => return Err(StreamError::unexpected("FolderProtection", &other).into()),
                }
            }
        };
        self.protection = Some(known);
        Ok(known)
    }

    /// Every stored version of `path`, newest first.
    pub async fn versions(&mut self, path: &RelPath) -> Result<Vec<VersionInfo>, AskError> {
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
    ) -> Result<(Option<u64>, Vec<VersionInfo>), AskError> {
        let tree = self.tree_report(at, under).await?;
        Ok((tree.run, tree.entries))
    }

    /// The folder's tree as of `at` (below `under` if not empty), the run
    /// it resolved to, and the versions the receiver cannot serve.
    pub async fn tree_report(&mut self, at: At, under: &[RelPath]) -> Result<RemoteTree, AskError> {
        let request = Request::Tree {
            at,
            under: under.to_vec(),
        };
        self.version_list(request).await
    }

    /// The immediate children of `dir` (`None`: the folder's root) as of
    /// `at`, sorted by name (bytewise): each with its kind (a file's size
    /// and hash, a symlink's target), mtime, mode, and the version id and
    /// run that [`Client::versions`] lists and [`Fetcher::fetch`] takes. A
    /// directory that did not exist then, or a file, has no children.
    pub async fn list(&mut self, at: At, dir: Option<&RelPath>) -> Result<Vec<DirEntry>, AskError> {
        Ok(self.listing(at, dir).await?.entries)
    }

    /// As [`Client::list`], with the run `at` resolved to.
    pub async fn listing(&mut self, at: At, dir: Option<&RelPath>) -> Result<Listing, AskError> {
        let request = Request::List {
            at,
            dir: dir.cloned(),
        };
        let control = match &mut self.session {
            Session::Local(ctx) => {
                return match local::ask(ctx, request).await? {
                    Answer::Dir(run, entries) => Ok(Listing { run, entries }),
                    _ => Err(AskError::OtherAnswer { asked: "listing" }),
                }
            }
            Session::Remote { control, .. } => control,
        };
        control.send.send(&Message::Request(request)).await?;
        let mut out = Listing::default();
        loop {
            match answer(control).await? {
                Message::DirList(batch) => out.entries.extend(batch),
                Message::ListEnd { run } => {
                    out.run = run;
                    return Ok(out);
                }
                other => return Err(StreamError::unexpected("DirList", &other).into()),
            }
        }
    }

    async fn version_list(&mut self, request: Request) -> Result<RemoteTree, AskError> {
        let control = match &mut self.session {
            Session::Local(ctx) => {
                return match local::ask(ctx, request).await? {
                    Answer::Versions(run, entries, not_served) => Ok(RemoteTree {
                        run,
                        entries,
                        not_served,
                    }),
                    _ => Err(AskError::OtherAnswer { asked: "versions" }),
                }
            }
            Session::Remote { control, .. } => control,
        };
        control.send.send(&Message::Request(request)).await?;
        let mut out = RemoteTree::default();
        loop {
            match answer(control).await? {
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

    /// A handle that fetches versions' bytes, usable from several tasks.
    pub fn fetcher(&self) -> Fetcher {
        match &self.session {
            Session::Remote { conn, .. } => Fetcher::remote(conn.clone()),
            Session::Local(ctx) => Fetcher::local(ctx.clone()),
        }
    }

    /// Ends the session cleanly.
    pub async fn close(self) {
        if let Session::Remote {
            endpoint,
            conn,
            mut control,
            ..
        } = self.session
        {
            control.send.finish();
            conn.close(quinn::VarInt::from_u32(0), b"done");
            endpoint.wait_idle().await;
        }
    }
}

async fn answer(control: &mut Channel) -> Result<Message, AskError> {
    match control.recv.recv_message().await? {
        Message::Refused(r) => Err(AskError::Refused {
            code: r.code,
            message: r.message,
        }),
        other => Ok(other),
    }
}
