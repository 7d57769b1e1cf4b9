//! The client side of read-only sessions: ask a receiver for this sender's
//! runs, the versions of a path, a folder's tree as of a point, and fetch
//! the bytes of a version, and browse a folder one directory at a time
//! ([`Client::list`]). Authenticates exactly like a run (same identity,
//! same receiver pin), but never pairs. The same questions can be put to a
//! store on this machine ([`Client::open_store`]): the receiver's own
//! request handlers answer them from the store, opened read-only.

use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

pub use ferry_proto::DirEntry;
use ferry_proto::{
    At, Message, Name, NotServed, Open, RefuseCode, RelPath, Request, RunInfo, VersionInfo,
};

use crate::identity::{DeviceId, Identity, IdentityError};
use crate::pins::{PinError, Pins};
use crate::receiver::requests::{self, Answer, Ctx, VersionReader};
use crate::store::{HistoryError, Store};
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

/// A store on this machine to read instead of asking a receiver (`--store`):
/// one made by `ferry send --store`, or a receiver's, read by its admin.
#[derive(Debug, Clone)]
pub struct LocalStore {
    /// The store's directory.
    pub root: PathBuf,
    /// The sender whose folder is read.
    pub name: Name,
    /// The folder; `None`: the sender's only folder in the store.
    pub folder: Option<Name>,
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
    /// The local store cannot be read.
    #[error(transparent)]
    Store(#[from] HistoryError),
    /// The local store has no sender of that name.
    #[error("the store {} has no sender named {name} (it has: {known}); give --name", root.display())]
    UnknownSender {
        root: PathBuf,
        name: Name,
        known: String,
    },
    /// No folder was given and the sender does not have exactly one.
    #[error("{name} has {} in the store {}; give --folder", folder_list(folders), root.display())]
    WhichFolder {
        root: PathBuf,
        name: Name,
        /// The sender's folders in the store, by name.
        folders: Vec<Name>,
    },
    /// The local store cannot answer the question (the message says why).
    #[error("{message}")]
    Unanswered { message: String },
    #[error("internal error: {0}")]
    Internal(String),
}

fn folder_list(folders: &[Name]) -> String {
    match folders {
        [] => "sent nothing".into(),
        _ => {
            let names: Vec<&str> = folders.iter().map(Name::as_str).collect();
            format!("the folders {}", names.join(", "))
        }
    }
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
        let sender = match control.recv.recv_message().await? {
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
            session: Session::Remote {
                endpoint,
                conn,
                control,
                receiver,
            },
            sender,
        })
    }

    /// Opens `local.folder` of `local.name` in a store on this machine, read
    /// only (a receiver may be running on it). The answers are the ones a
    /// receiver gives: the same handlers compute them.
    pub async fn open_store(local: &LocalStore) -> Result<Client, ClientError> {
        let local = local.clone();
        let ctx = tokio::task::spawn_blocking(move || open_local(local))
            .await
            .map_err(|e| ClientError::Internal(e.to_string()))??;
        Ok(Client {
            sender: ctx.ns.sender.clone(),
            session: Session::Local(Arc::new(ctx)),
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
    pub async fn runs(&mut self) -> Result<Vec<RunInfo>, ClientError> {
        let control = match &mut self.session {
            Session::Local(ctx) => {
                return match ask_local(ctx, Request::Runs).await? {
                    Answer::Runs(runs) => Ok(runs),
                    _ => Err(ClientError::Internal("another answer for runs".into())),
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

    /// The immediate children of `dir` (`None`: the folder's root) as of
    /// `at`, sorted by name (bytewise): each with its kind (a file's size
    /// and hash, a symlink's target), mtime, mode, and the version id and
    /// run that [`Client::versions`] lists and [`Fetcher::fetch`] takes. A
    /// directory that did not exist then, or a file, has no children.
    pub async fn list(
        &mut self,
        at: At,
        dir: Option<&RelPath>,
    ) -> Result<Vec<DirEntry>, ClientError> {
        Ok(self.listing(at, dir).await?.entries)
    }

    /// As [`Client::list`], with the run `at` resolved to.
    pub async fn listing(&mut self, at: At, dir: Option<&RelPath>) -> Result<Listing, ClientError> {
        let request = Request::List {
            at,
            dir: dir.cloned(),
        };
        let control = match &mut self.session {
            Session::Local(ctx) => {
                return match ask_local(ctx, request).await? {
                    Answer::Dir(run, entries) => Ok(Listing { run, entries }),
                    _ => Err(ClientError::Internal("another answer for a listing".into())),
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

    async fn version_list(&mut self, request: Request) -> Result<RemoteTree, ClientError> {
        let control = match &mut self.session {
            Session::Local(ctx) => {
                return match ask_local(ctx, request).await? {
                    Answer::Versions(run, entries, not_served) => Ok(RemoteTree {
                        run,
                        entries,
                        not_served,
                    }),
                    _ => Err(ClientError::Internal("another answer for versions".into())),
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
            Session::Remote { conn, .. } => Fetcher(FetchFrom::Remote(conn.clone())),
            Session::Local(ctx) => Fetcher(FetchFrom::Local(ctx.clone())),
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

async fn answer(control: &mut Channel) -> Result<Message, ClientError> {
    match control.recv.recv_message().await? {
        Message::Refused(r) => Err(ClientError::Refused {
            code: r.code,
            message: r.message,
        }),
        other => Ok(other),
    }
}

/// Opens the store and finds the namespace (blocking).
fn open_local(local: LocalStore) -> Result<Ctx, ClientError> {
    let store = Store::open_read_only(&local.root)?;
    let runs = store.runs(None).map_err(HistoryError::from)?;
    let sender = store
        .sender_by_name(&local.name)
        .map_err(HistoryError::from)?;
    let Some(sender) = sender else {
        let mut known: Vec<&str> = runs.iter().map(|r| r.sender.as_str()).collect();
        known.sort_unstable();
        known.dedup();
        return Err(ClientError::UnknownSender {
            root: local.root,
            name: local.name,
            known: known.join(", "),
        });
    };
    let folder = match local.folder {
        Some(folder) => folder,
        None => {
            let mut folders: Vec<Name> = runs
                .into_iter()
                .filter(|r| r.sender == sender.name)
                .map(|r| r.folder)
                .collect();
            folders.sort_unstable_by(|a, b| a.as_str().cmp(b.as_str()));
            folders.dedup();
            match <[Name; 1]>::try_from(folders) {
                Ok([only]) => only,
                Err(folders) => {
                    return Err(ClientError::WhichFolder {
                        root: local.root,
                        name: sender.name,
                        folders,
                    });
                }
            }
        }
    };
    let ns = store.namespace(&sender, &folder);
    Ok(Ctx {
        store: Arc::new(store),
        ns,
    })
}

/// Answers `request` from the local store, as a receiver would.
async fn ask_local(ctx: &Arc<Ctx>, request: Request) -> Result<Answer, ClientError> {
    let ctx = ctx.clone();
    tokio::task::spawn_blocking(move || requests::answer(&ctx, request))
        .await
        .map_err(|e| ClientError::Internal(e.to_string()))?
        .map_err(|message| ClientError::Unanswered { message })
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
    /// Asks for the bytes of `version` (on a stream of its own).
    pub async fn fetch(&self, version: u64) -> Result<Fetch, ClientError> {
        let source = match &self.0 {
            FetchFrom::Remote(conn) => {
                let mut channel = Channel::new(conn.open_bi().await?);
                channel.send.send(&Message::Fetch { version }).await?;
                channel.send.finish();
                FetchSource::Remote(channel.recv)
            }
            FetchFrom::Local(ctx) => {
                let ctx = ctx.clone();
                let file =
                    tokio::task::spawn_blocking(move || requests::open_version(&ctx, version))
                        .await
                        .map_err(|e| ClientError::Internal(e.to_string()))?
                        .map_err(|f| ClientError::Fetch {
                            version,
                            message: f.message,
                        })?;
                FetchSource::Local(Some(Box::new(VersionReader::new(version, file))))
            }
        };
        Ok(Fetch { version, source })
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
    pub async fn next(&mut self) -> Result<Piece, ClientError> {
        let version = self.version;
        let recv = match &mut self.source {
            FetchSource::Remote(recv) => recv,
            FetchSource::Local(slot) => {
                let Some(mut reader) = slot.take() else {
                    return Err(ClientError::Internal(format!(
                        "version {version} was read to its end"
                    )));
                };
                let (reader, chunk) = tokio::task::spawn_blocking(move || {
                    let chunk = reader.next_chunk();
                    (reader, chunk)
                })
                .await
                .map_err(|e| ClientError::Internal(e.to_string()))?;
                let chunk = chunk.map_err(|f| ClientError::Fetch {
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
            Message::Failed(f) => Err(ClientError::Fetch {
                version,
                message: f.message,
            }),
            other => Err(StreamError::unexpected("Data", &other).into()),
        }
    }
}
