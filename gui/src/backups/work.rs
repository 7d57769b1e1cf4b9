//! The Backups view's work, run on the launcher's tokio runtime, never on
//! the UI thread: each question opens the same read-only, authenticated
//! session `ferry history`/`restore` use ([`Client`]), asks, and closes;
//! the answer comes back to the view as a [`Reply`]. The local keep-copies
//! directory is read the way `ferry restore --from-copies` reads it.

use std::os::unix::ffi::OsStrExt;
use std::os::unix::fs::{MetadataExt, PermissionsExt};
use std::path::{Path, PathBuf};
use std::sync::Arc;

use ferry_agent::history::{Client, ClientError, LocalStore, Remote};
use ferry_agent::restore::{self, Destination, RestoreSummary};
use ferry_agent::status::SenderStatus;
use ferry_proto::{At, RefuseCode, RelPath, RunInfo, VersionInfo, VersionKind};

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

/// Why a question could not be answered, in plain words.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Failure {
    pub message: String,
    /// The receiver could not be reached (the local copies may stand in).
    pub unreachable: bool,
}

impl Failure {
    fn plain(message: impl Into<String>) -> Failure {
        Failure {
            message: message.into(),
            unreachable: false,
        }
    }
}

/// An answer for the view; the number is the request generation it was
/// asked in, so an answer to a superseded question is dropped.
#[derive(Debug)]
pub enum Reply {
    /// The folder's runs, newest first.
    Runs(u64, Result<Vec<RunInfo>, Failure>),
    /// One directory's entries (`dir` empty: the folder's root).
    Dir(u64, String, Result<Vec<Row>, Failure>),
    /// Every stored version of a file.
    Versions(u64, String, Result<Vec<VersionInfo>, Failure>),
    /// A restore ended.
    Restored(u64, Result<RestoreSummary, String>),
}

/// Puts `e` in plain words.
pub fn failure(origin: &Origin, e: &ClientError) -> Failure {
    let chain = ferry_agent::chain::chain(e);
    let place = match origin {
        Origin::Receiver(r) => format!("{}:{}", r.host, r.port),
        _ => String::new(),
    };
    match e {
        ClientError::Transport(_) | ClientError::Connection(_) | ClientError::Busy { .. } => {
            Failure {
                message: format!("Cannot reach the receiver at {place}: {chain}"),
                unreachable: true,
            }
        }
        ClientError::Refused {
            code: RefuseCode::UnknownSender,
            message,
        } => Failure::plain(format!(
            "The receiver at {place} does not admit this sender (it was revoked, or has \
             not paired yet): {message}"
        )),
        ClientError::Refused { message, .. } => {
            Failure::plain(format!("The receiver at {place} refused: {message}"))
        }
        _ => Failure::plain(chain),
    }
}

async fn open(origin: &Origin) -> Result<Client, ClientError> {
    match origin {
        Origin::Receiver(remote) => Client::connect(remote).await,
        Origin::Store(local) => Client::open_store(local).await,
        Origin::Copies(_) => Err(ClientError::Unanswered {
            message: "the local copies keep no runs".into(),
        }),
    }
}

/// The folder's runs, newest first (the local copies have none).
pub async fn runs(origin: Origin) -> Result<Vec<RunInfo>, Failure> {
    if let Origin::Copies(_) = origin {
        return Ok(Vec::new());
    }
    let mut client = open(&origin).await.map_err(|e| failure(&origin, &e))?;
    let folder = match (&origin, client.local_folder()) {
        (_, Some(folder)) => Some(folder.clone()),
        (Origin::Receiver(r), None) => Some(r.folder.clone()),
        _ => None,
    };
    let runs = client.runs().await.map_err(|e| failure(&origin, &e));
    client.close().await;
    let mut runs = runs?;
    if let Some(folder) = folder {
        runs.retain(|r| r.folder == folder);
    }
    runs.sort_by_key(|r| std::cmp::Reverse(r.id));
    Ok(runs)
}

/// The entries of `dir` (`None`: the root) as of `at`, directories first,
/// then by name.
pub async fn list(origin: Origin, at: At, dir: Option<RelPath>) -> Result<Vec<Row>, Failure> {
    let mut rows = match &origin {
        Origin::Copies(root) => {
            let root = root.clone();
            tokio::task::spawn_blocking(move || list_copies(&root, dir.as_ref()))
                .await
                .map_err(|e| Failure::plain(format!("internal error: {e}")))??
        }
        _ => {
            let mut client = open(&origin).await.map_err(|e| failure(&origin, &e))?;
            let under: Vec<RelPath> = dir.iter().cloned().collect();
            let tree = client.tree(at, &under).await;
            client.close().await;
            let (_, entries) = tree.map_err(|e| failure(&origin, &e))?;
            children(entries, dir.as_ref())
        }
    };
    rows.sort_by(|a, b| {
        (a.kind != RowKind::Dir)
            .cmp(&(b.kind != RowKind::Dir))
            .then_with(|| a.name.cmp(&b.name))
    });
    Ok(rows)
}

/// The direct children of `dir` among a subtree's versions. A directory
/// known only from what it holds is listed too, without a time or mode: the
/// receiver keeps one row per directory and updates it in place, so as of
/// an earlier run a directory whose metadata changed later has no row.
fn children(entries: Vec<VersionInfo>, dir: Option<&RelPath>) -> Vec<Row> {
    let depth = dir.map_or(0, |d| d.components().count());
    let mut rows: Vec<Row> = Vec::new();
    let mut implied = std::collections::BTreeSet::new();
    for v in entries {
        if v.path.parent().as_ref() == dir {
            rows.push(row(&v));
            continue;
        }
        let inside = dir.is_none_or(|d| v.path.starts_with(d));
        let first: Vec<&[u8]> = v.path.components().take(depth + 1).collect();
        if inside && first.len() == depth + 1 {
            if let Ok(p) = RelPath::from_bytes(first.join(&b'/')) {
                implied.insert(p);
            }
        }
    }
    for path in implied {
        if rows.iter().all(|r| r.path != path) {
            rows.push(Row {
                name: name_of(&path),
                path,
                kind: RowKind::Dir,
                mtime_ns: 0,
                mode: 0,
                run: None,
            });
        }
    }
    rows
}

fn name_of(path: &RelPath) -> String {
    let last = path.components().last().unwrap_or_default();
    String::from_utf8_lossy(last).into_owned()
}

fn row(v: &VersionInfo) -> Row {
    Row {
        path: v.path.clone(),
        name: name_of(&v.path),
        kind: match &v.kind {
            VersionKind::File { size, .. } => RowKind::File { size: *size },
            VersionKind::Dir => RowKind::Dir,
            VersionKind::Symlink { target } => RowKind::Symlink {
                target: String::from_utf8_lossy(target).into_owned(),
            },
        },
        mtime_ns: v.mtime_ns,
        mode: v.mode,
        run: Some(v.run),
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

/// Every stored version of `path`, newest first.
pub async fn versions(origin: Origin, path: RelPath) -> Result<Vec<VersionInfo>, Failure> {
    if let Origin::Copies(_) = origin {
        return Err(Failure::plain(
            "The local copies hold only the version last sent; earlier versions are on the receiver.",
        ));
    }
    let mut client = open(&origin).await.map_err(|e| failure(&origin, &e))?;
    let versions = client.versions(&path).await;
    client.close().await;
    versions.map_err(|e| failure(&origin, &e))
}

/// What to restore, and where.
#[derive(Debug, Clone)]
pub struct RestoreJob {
    pub origin: Origin,
    pub at: At,
    /// The files and folders chosen (each folder with all it holds).
    pub paths: Vec<RelPath>,
    pub dest: PathBuf,
    /// Replace what exists at the destination.
    pub overwrite: bool,
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
    match &job.origin {
        Origin::Copies(copies) => {
            let copies = copies.clone();
            let paths = job.paths.clone();
            tokio::task::spawn_blocking(move || {
                let dest = make_dest()?;
                restore::restore_from_copies(&copies, &paths, &dest, &status.progress)
                    .map_err(|e| ferry_agent::chain::chain(&e))
            })
            .await
            .map_err(|e| format!("internal error: {e}"))?
        }
        origin => {
            let mut client = open(origin)
                .await
                .map_err(|e| failure(origin, &e).message)?;
            let tree = match client.tree_report(job.at, &job.paths).await {
                Ok(tree) => tree,
                Err(e) => {
                    client.close().await;
                    return Err(failure(origin, &e).message);
                }
            };
            let dest = match tokio::task::spawn_blocking(make_dest).await {
                Ok(Ok(dest)) => dest,
                Ok(Err(e)) => {
                    client.close().await;
                    return Err(e);
                }
                Err(e) => return Err(format!("internal error: {e}")),
            };
            let summary = restore::restore_remote_tree(&client.fetcher(), tree, dest, status).await;
            client.close().await;
            Ok(summary)
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn rel(s: &str) -> RelPath {
        RelPath::from_bytes(s.as_bytes()).unwrap()
    }

    fn version(path: &str, kind: VersionKind) -> VersionInfo {
        VersionInfo {
            id: 1,
            path: rel(path),
            kind,
            mtime_ns: 0,
            mode: 0o644,
            run: 3,
            stored_ms: 0,
            replaced_run: None,
            deleted: false,
        }
    }

    #[test]
    fn children_are_the_direct_entries_of_a_directory() {
        let file = VersionKind::File {
            size: 5,
            hash: [0; 32],
        };
        let entries = vec![
            version("a.txt", file.clone()),
            version("sub", VersionKind::Dir),
            version("sub/b.txt", file.clone()),
            version("sub/deeper/c.txt", file.clone()),
            version("implied/d.txt", file),
        ];
        let names = |rows: Vec<Row>| rows.into_iter().map(|r| r.name).collect::<Vec<_>>();
        assert_eq!(
            names(children(entries.clone(), None)),
            ["a.txt", "sub", "implied"]
        );
        assert_eq!(
            names(children(entries, Some(&rel("sub")))),
            ["b.txt", "deeper"]
        );
    }

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
