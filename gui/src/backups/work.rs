//! The Backups view's work, run on the launcher's tokio runtime, never on
//! the UI thread: each question opens the same read-only, authenticated
//! session `ferry history`/`restore` use ([`Client`]), asks, and closes;
//! the answer comes back to the view as a [`Reply`]. The local keep-copies
//! directory is read the way `ferry restore --from-copies` reads it.

use std::os::unix::ffi::OsStrExt;
use std::os::unix::fs::{MetadataExt, PermissionsExt};
use std::path::{Path, PathBuf};
use std::sync::Arc;

use super::failure::{failure, Failure};
use super::opened;
use ferry_agent::reader::sealed::{self, Opened};
use ferry_agent::reader::{
    AskError, Client, ClientError, ConnectError, FetchError, Fetcher, LocalStore, Remote,
    RemoteTree,
};
use ferry_agent::restore::{self, Destination, RestoreSummary};
use ferry_agent::status::SenderStatus;
use ferry_proto::seal::FolderSecret;
use ferry_proto::{At, DirEntry, Name, Protection, RelPath, RunInfo, VersionInfo, VersionKind};

/// Where the view's answers come from.
#[derive(Debug, Clone)]
pub enum Origin {
    /// The receiver the sender form names, over QUIC.
    Receiver(Remote),
    /// A store on this machine (`ferry send --store`, or a receiver's).
    Store(LocalStore),
    /// The sender's local keep-copies directory: the files as last sent.
    Copies(PathBuf),
}

impl Origin {
    /// Which source this is, in plain words.
    pub fn describe(&self) -> String {
        match self {
            Origin::Receiver(r) => format!(
                "the receiver at {}:{} (folder {} of {})",
                r.host, r.port, r.folder, r.name
            ),
            Origin::Store(s) => match &s.folder {
                Some(folder) => format!(
                    "the store {} (folder {folder} of {})",
                    s.root.display(),
                    s.name
                ),
                None => format!("the store {} ({})", s.root.display(), s.name),
            },
            Origin::Copies(dir) => format!(
                "the local copies in {} (the files as last sent; no earlier versions)",
                dir.display()
            ),
        }
    }
}

/// What a listed entry is.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum RowKind {
    /// A regular file of this many bytes.
    File { size: u64 },
    /// A directory (its entries are listed when it is expanded).
    Dir,
    /// A symbolic link to this target.
    Symlink { target: String },
}

/// One entry of a listed directory.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Row {
    /// Its path in the folder.
    pub path: RelPath,
    /// Its name in its directory.
    pub name: String,
    pub kind: RowKind,
    /// Modified time, ns since the Unix epoch.
    pub mtime_ns: i64,
    /// Permission bits.
    pub mode: u32,
    /// The run that stored it (`None` for the local copies).
    pub run: Option<u64>,
}

/// The folder's runs and how it is kept.
#[derive(Debug, Clone)]
pub struct Runs {
    /// Newest first.
    pub runs: Vec<RunInfo>,
    /// `Plain` for the local copies and a folder never sent.
    pub protection: Protection,
    /// The folder asked about, when known.
    pub folder: Option<Name>,
}

/// An answer for the view; the number is the request generation it was
/// asked in, so an answer to a superseded question is dropped.
#[derive(Debug)]
pub enum Reply {
    /// The folder's runs, newest first, and its protection.
    Runs(u64, Result<Runs, Failure>),
    /// One directory's entries (`dir` empty: the folder's root), and the
    /// protected folder's objects that did not open, in words.
    Dir(u64, String, Result<(Vec<Row>, Vec<String>), Failure>),
    /// Every stored version of a file.
    Versions(u64, String, Result<Vec<VersionInfo>, Failure>),
    /// A restore ended.
    Restored(u64, Result<RestoreSummary, String>),
    /// The key typed was loaded and checked against the folder (or why not).
    Unlocked(u64, Result<Arc<FolderSecret>, String>),
}

async fn open(origin: &Origin) -> Result<Client, ClientError> {
    match origin {
        Origin::Receiver(remote) => Ok(Client::connect(remote).await?),
        Origin::Store(local) => Ok(Client::open_store(local).await?),
        Origin::Copies(_) => Err(AskError::Unanswered {
            message: "the local copies keep no runs".into(),
        }
        .into()),
    }
}

/// A read-only session with one origin, opened on the first question and
/// kept for the next ones (one handshake per view, not per click); a kept
/// session that broke is opened again once.
#[derive(Clone)]
pub struct Session {
    origin: Origin,
    client: Arc<tokio::sync::Mutex<Option<Client>>>,
    opening: Opening,
    /// A protected folder's opened headers, for the last point listed.
    headers: Arc<tokio::sync::Mutex<Option<Headers>>>,
}

/// A protected folder's opened headers at one point.
type Headers = (At, Arc<(Vec<Opened>, Vec<String>)>);

/// Held while a session opens: one at a time per view, because two first
/// contacts at once would both write the receiver pins file (its atomic
/// write uses one temporary name) and one of them fail.
pub type Opening = Arc<tokio::sync::Mutex<()>>;

impl std::fmt::Debug for Session {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Session")
            .field("origin", &self.origin)
            .finish_non_exhaustive()
    }
}

/// A question for a session.
enum Ask {
    Runs,
    /// A protected folder's objects at a point, their headers opened.
    Headers(At, Arc<FolderSecret>),
    List(At, Option<RelPath>),
    /// With a key: the path is an object's opaque path, whose versions
    /// are opened to show their real size, time and mode.
    Versions(RelPath, Option<Arc<FolderSecret>>),
    Tree(At, Vec<RelPath>),
}

/// Its answer.
enum Got {
    Runs(Runs),
    Headers(Vec<Opened>, Vec<String>),
    List(Vec<DirEntry>),
    Versions(Vec<VersionInfo>),
    Tree(RemoteTree, Fetcher),
}

async fn ask_client(client: &mut Client, origin: &Origin, ask: &Ask) -> Result<Got, ClientError> {
    Ok(match ask {
        Ask::Runs => {
            let folder = match (origin, client.local_folder()) {
                (_, Some(folder)) => Some(folder.clone()),
                (Origin::Receiver(r), None) => Some(r.folder.clone()),
                _ => None,
            };
            let mut runs = client.runs().await?;
            if let Some(folder) = folder {
                runs.retain(|r| r.folder == folder);
            }
            runs.sort_by_key(|r| std::cmp::Reverse(r.id));
            // A store read without a folder (no source in the form) has
            // none to ask about.
            let folder = client.local_folder().cloned().or(match origin {
                Origin::Receiver(r) => Some(r.folder.clone()),
                _ => None,
            });
            let protection = match folder {
                Some(_) => client.protection().await?,
                None => Protection::Plain,
            };
            Got::Runs(Runs {
                runs,
                protection,
                folder,
            })
        }
        Ask::Headers(at, secret) => {
            let tree = client.tree_report(*at, &[]).await?;
            let (opened, failed) = opened::headers(client, secret, tree).await;
            Got::Headers(opened, failed)
        }
        Ask::List(at, dir) => Got::List(client.list(*at, dir.as_ref()).await?),
        Ask::Versions(path, None) => Got::Versions(client.versions(path).await?),
        Ask::Versions(path, Some(secret)) => {
            let versions = client.versions(path).await?;
            Got::Versions(opened::versions(client, secret, versions).await)
        }
        Ask::Tree(at, paths) => {
            let tree = client.tree_report(*at, paths).await?;
            Got::Tree(tree, client.fetcher())
        }
    })
}

/// Worth opening a kept session again for: it may just have gone stale.
fn broken(e: &ClientError) -> bool {
    matches!(
        e,
        ClientError::Connect(
            ConnectError::Connection(_) | ConnectError::Protocol(_) | ConnectError::Transport(_)
        ) | ClientError::Ask(AskError::Protocol(_))
            | ClientError::Fetch(FetchError::Connection(_) | FetchError::Protocol(_))
    )
}

impl Session {
    /// A session with `origin`, not opened yet; `opening` is shared by
    /// all the view's sessions.
    pub fn new(origin: Origin, opening: Opening) -> Session {
        Session {
            origin,
            client: Arc::new(tokio::sync::Mutex::new(None)),
            opening,
            headers: Arc::new(tokio::sync::Mutex::new(None)),
        }
    }

    /// Where it asks.
    pub fn origin(&self) -> &Origin {
        &self.origin
    }

    async fn ask(&self, ask: Ask) -> Result<Got, Failure> {
        let origin = &self.origin;
        let mut slot = self.client.lock().await;
        let mut reopened = slot.is_none();
        loop {
            if slot.is_none() {
                let _one = self.opening.lock().await;
                *slot = Some(open(origin).await.map_err(|e| failure(origin, &e))?);
            }
            let Some(client) = slot.as_mut() else {
                continue;
            };
            match ask_client(client, origin, &ask).await {
                Ok(got) => return Ok(got),
                Err(e) => {
                    if let Some(client) = slot.take() {
                        client.close().await;
                    }
                    if reopened || !broken(&e) {
                        return Err(failure(origin, &e));
                    }
                    reopened = true;
                }
            }
        }
    }

    /// Ends the session cleanly (the view moved on to another origin).
    pub async fn close(self) {
        if let Some(client) = self.client.lock().await.take() {
            client.close().await;
        }
    }
}

/// The folder's runs, newest first (the local copies have none), and its
/// protection.
pub async fn runs(session: Session) -> Result<Runs, Failure> {
    if let Origin::Copies(_) = session.origin {
        return Ok(Runs {
            runs: Vec::new(),
            protection: Protection::Plain,
            folder: None,
        });
    }
    match session.ask(Ask::Runs).await? {
        Got::Runs(runs) => Ok(runs),
        _ => Err(Failure::plain("internal error: another answer for runs")),
    }
}

/// A protected folder's headers at `at`, opened once per point and kept,
/// and the objects that did not open.
async fn headers(
    session: &Session,
    at: At,
    secret: Arc<FolderSecret>,
) -> Result<Arc<(Vec<Opened>, Vec<String>)>, Failure> {
    let mut kept = session.headers.lock().await;
    if let Some((point, opened)) = kept.as_ref() {
        if *point == at {
            return Ok(opened.clone());
        }
    }
    match session.ask(Ask::Headers(at, secret)).await? {
        Got::Headers(opened, failed) => {
            let opened = Arc::new((opened, failed));
            *kept = Some((at, opened.clone()));
            Ok(opened)
        }
        _ => Err(Failure::plain("internal error: another answer for headers")),
    }
}

/// The entries of `dir` (`None`: the root) as of `at`, directories first,
/// then by name; with `secret`, the real entries of a protected folder
/// (and its objects that did not open).
pub async fn list(
    session: Session,
    at: At,
    dir: Option<RelPath>,
    secret: Option<Arc<FolderSecret>>,
) -> Result<(Vec<Row>, Vec<String>), Failure> {
    let mut failed = Vec::new();
    let mut rows = match &session.origin {
        _ if secret.is_some() => {
            let opened = match secret {
                Some(secret) => headers(&session, at, secret).await?,
                None => return Err(Failure::plain("internal error: no key")),
            };
            failed = opened.1.clone();
            sealed::listing(&opened.0, dir.as_ref())
                .unwrap_or_default()
                .into_iter()
                .map(row_of)
                .collect()
        }
        Origin::Copies(root) => {
            let root = root.clone();
            ferry_agent::tasks::blocking(move || list_copies(&root, dir.as_ref()))
                .await
                .map_err(|e| Failure::plain(e.to_string()))??
        }
        _ => match session.ask(Ask::List(at, dir)).await? {
            Got::List(entries) => entries.into_iter().map(row_of).collect(),
            _ => return Err(Failure::plain("internal error: another answer for a list")),
        },
    };
    rows.sort_by(|a, b| {
        (a.kind != RowKind::Dir)
            .cmp(&(b.kind != RowKind::Dir))
            .then_with(|| a.name.cmp(&b.name))
    });
    Ok((rows, failed))
}

/// One listed entry as a row.
fn row_of(e: DirEntry) -> Row {
    Row {
        name: String::from_utf8_lossy(e.name()).into_owned(),
        kind: match e.kind {
            VersionKind::File { size, .. } => RowKind::File { size },
            VersionKind::Dir => RowKind::Dir,
            VersionKind::Symlink { target } => RowKind::Symlink {
                target: String::from_utf8_lossy(&target).into_owned(),
            },
        },
        path: e.path,
        mtime_ns: e.mtime_ns,
        mode: e.mode,
        run: e.run,
    }
}

/// One directory of the keep-copies directory, without its bookkeeping.
fn list_copies(root: &Path, dir: Option<&RelPath>) -> Result<Vec<Row>, Failure> {
    let at = match dir {
        Some(d) => d.under(root),
        None => root.to_path_buf(),
    };
    let read = std::fs::read_dir(&at).map_err(|e| {
        Failure::plain(format!(
            "cannot read the local copies in {}: {e}",
            at.display()
        ))
    })?;
    let mut rows = Vec::new();
    for entry in read {
        let entry = entry.map_err(|e| {
            Failure::plain(format!(
                "cannot read the local copies in {}: {e}",
                at.display()
            ))
        })?;
        let name = entry.file_name();
        if dir.is_none() && ferry_agent::copies::is_reserved(name.as_bytes()) {
            continue;
        }
        let path = match dir {
            Some(d) => {
                let mut bytes = d.as_bytes().to_vec();
                bytes.push(b'/');
                bytes.extend_from_slice(name.as_bytes());
                RelPath::from_bytes(bytes)
            }
            None => RelPath::from_bytes(name.as_bytes()),
        };
        let (Ok(path), Ok(meta)) = (path, entry.path().symlink_metadata()) else {
            continue;
        };
        let kind = if meta.is_dir() {
            RowKind::Dir
        } else if meta.file_type().is_symlink() {
            let target = std::fs::read_link(entry.path()).unwrap_or_default();
            RowKind::Symlink {
                target: target.display().to_string(),
            }
        } else {
            RowKind::File { size: meta.len() }
        };
        rows.push(Row {
            path,
            name: name.to_string_lossy().into_owned(),
            kind,
            mtime_ns: meta.mtime() * 1_000_000_000 + meta.mtime_nsec(),
            mode: meta.permissions().mode() & 0o7777,
            run: None,
        });
    }
    Ok(rows)
}

/// Every stored version of `path`, newest first; with `secret`, `path` is
/// a protected folder's opaque path and the versions are opened.
pub async fn versions(
    session: Session,
    path: RelPath,
    secret: Option<Arc<FolderSecret>>,
) -> Result<Vec<VersionInfo>, Failure> {
    if let Origin::Copies(_) = session.origin {
        return Err(Failure::plain(
            "The local copies hold only the version last sent; earlier versions are on the receiver.",
        ));
    }
    match session.ask(Ask::Versions(path, secret)).await? {
        Got::Versions(v) => Ok(v),
        _ => Err(Failure::plain(
            "internal error: another answer for versions",
        )),
    }
}

/// What to restore, and where.
#[derive(Debug, Clone)]
pub struct RestoreJob {
    pub session: Session,
    pub at: At,
    /// The files and folders chosen (each folder with all it holds).
    pub paths: Vec<RelPath>,
    pub dest: PathBuf,
    /// Replace what exists at the destination.
    pub overwrite: bool,
    /// A protected folder's key: the objects are opened, `paths` are real.
    pub secret: Option<Arc<FolderSecret>>,
}

/// Restores `job`, reporting progress through `status`.
pub async fn restore(job: RestoreJob, status: Arc<SenderStatus>) -> Result<RestoreSummary, String> {
    let dest = job.dest.clone();
    let overwrite = job.overwrite;
    let make_dest = move || {
        Destination::new(&dest, overwrite)
            .map(Arc::new)
            .map_err(|e| ferry_agent::chain::chain(&e))
    };
    if let Origin::Copies(copies) = &job.session.origin {
        let copies = copies.clone();
        let paths = job.paths.clone();
        return ferry_agent::tasks::blocking(move || {
            let dest = make_dest()?;
            restore::restore_from_copies(&copies, &paths, &dest, &status.progress)
                .map_err(|e| ferry_agent::chain::chain(&e))
        })
        .await
        .map_err(|e| e.to_string())?;
    }
    // A protected folder's objects are asked for whole: their real paths
    // are only known once opened.
    let asked = match job.secret {
        Some(_) => Vec::new(),
        None => job.paths.clone(),
    };
    let (tree, fetcher) = match job.session.ask(Ask::Tree(job.at, asked)).await {
        Ok(Got::Tree(tree, fetcher)) => (tree, fetcher),
        Ok(_) => return Err("internal error: another answer for a tree".into()),
        Err(f) => return Err(f.message),
    };
    // Only now that there is something to restore.
    let dest = ferry_agent::tasks::blocking(make_dest)
        .await
        .map_err(|e| e.to_string())??;
    Ok(match job.secret {
        Some(secret) => {
            restore::restore_sealed_tree(&fetcher, tree, &secret, &job.paths, dest, status).await
        }
        None => restore::restore_remote_tree(&fetcher, tree, dest, status).await,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_copies_bookkeeping_is_not_listed() {
        let dir = tempfile::tempdir().unwrap();
        std::fs::create_dir(dir.path().join(".ferry-tmp")).unwrap();
        std::fs::write(dir.path().join("kept.txt"), "x").unwrap();
        let rows = list_copies(dir.path(), None).unwrap();
        assert_eq!(rows.len(), 1);
        assert_eq!(rows[0].name, "kept.txt");
        assert_eq!(rows[0].kind, RowKind::File { size: 1 });
    }
}
