//! Restoring a protected folder: every object of the tree fetched and
//! opened with the folder key, and the entry it holds written at its real
//! path with the same writer as a plain restore.
//!
//! Each object is fetched on its own stream (several at once) and opened on
//! a blocking thread as its bytes arrive. Its header, in the first block,
//! names the real path: an object outside the paths asked is dropped there;
//! a file's content is written to a temporary file as its blocks open, and
//! put in place only once the whole object has opened (every block
//! authenticated, the end and the padding checked); a directory or symlink
//! is made only then too. The destination makes a file's parents as it
//! places it, so objects can be written in any order; directories' modes
//! and mtimes are applied last, deepest first. An object that does not open
//! (tampered with, truncated, another folder's) is reported by its opaque
//! path, and the restore goes on.

use std::sync::Arc;

use ferry_proto::seal::{FolderSecret, Opener, SealedHeader, SealedKind};
use ferry_proto::{Hash, RelPath, VersionInfo, VersionKind};
use tokio::sync::mpsc;
use tokio::task::JoinSet;

use super::dest::{Destination, PendingFile, Slot, WriteError};
use super::{RestoreSummary, RESTORE_IN_FLIGHT};
use crate::reader::sealed::{is_under, ObjectError};
use crate::reader::{Fetcher, Piece, RemoteTree};
use crate::status::SenderStatus;
use crate::summary::Progress;

/// Pieces handed from the fetch to the opener at once.
const FEED_DEPTH: usize = 4;

/// What happened to one object.
#[derive(Debug)]
enum Restored {
    File(u64),
    Link,
    Dir,
    /// Something is at its real path (no `--overwrite`).
    Skipped(RelPath),
    /// Its real path is not among those asked.
    Outside,
}

/// Why one object's entry was not restored.
#[derive(Debug, thiserror::Error)]
enum EntryError {
    #[error(transparent)]
    Object(#[from] ObjectError),
    #[error(transparent)]
    Write(#[from] WriteError),
    #[error("the sealed object's header is not the one its first block showed")]
    KindChanged,
}

/// One object that failed: its real path if its header opened.
struct Failed {
    real: Option<RelPath>,
    error: EntryError,
}

impl From<ObjectError> for Failed {
    fn from(error: ObjectError) -> Failed {
        Failed {
            real: None,
            error: error.into(),
        }
    }
}

/// Restores the sealed objects of `tree` (from
/// [`crate::reader::Client::tree_report`] of a protected folder, asked for
/// the whole tree) into `dest`, keeping the entries whose real path is at or
/// below one of `under` (all if empty). `secret` must be the folder's key
/// (see [`crate::reader::sealed::check_key`]).
pub async fn restore_sealed_tree(
    fetcher: &Fetcher,
    tree: RemoteTree,
    secret: &FolderSecret,
    under: &[RelPath],
    dest: Arc<Destination>,
    status: Arc<SenderStatus>,
) -> RestoreSummary {
    let progress = &status.progress;
    let started = std::time::Instant::now();
    let mut summary = RestoreSummary {
        run: tree.run,
        ..RestoreSummary::default()
    };
    let bytes: u64 = tree
        .entries
        .iter()
        .map(|v| match v.kind {
            VersionKind::File { size, .. } => size,
            _ => 0,
        })
        .sum();
    progress.reset(tree.entries.len() as u64, bytes);
    let under: Arc<[RelPath]> = under.into();
    let mut openers: Vec<Opener> = Vec::new();
    let mut tasks: JoinSet<(Option<Opener>, RelPath, Result<Restored, Failed>)> = JoinSet::new();
    let mut items = tree.entries.into_iter();
    loop {
        while tasks.len() < RESTORE_IN_FLIGHT {
            let Some(v) = items.next() else { break };
            let opener = openers.pop().unwrap_or_else(|| Opener::new(secret));
            let fetcher = fetcher.clone();
            let dest = dest.clone();
            let under = under.clone();
            let status = status.clone();
            tasks.spawn(async move {
                let opaque = v.path.clone();
                let (opener, done) =
                    restore_object(&fetcher, opener, v, dest, under, &status.progress).await;
                (opener, opaque, done)
            });
        }
        let Some(joined) = tasks.join_next().await else {
            break;
        };
        progress.entry_done();
        // A task panicking is a bug: resumed here, as `tasks::blocking` does.
        let (opener, opaque, done) = match joined {
            Ok(done) => done,
            Err(e) if e.is_panic() => std::panic::resume_unwind(e.into_panic()),
            Err(e) => {
                summary.problem("?", format!("internal error: {}", crate::chain::Chain(&e)));
                continue;
            }
        };
        openers.extend(opener);
        match done {
            Ok(Restored::File(n)) => {
                summary.files += 1;
                summary.bytes += n;
            }
            Ok(Restored::Link) => summary.links += 1,
            Ok(Restored::Dir) => summary.dirs += 1,
            Ok(Restored::Skipped(real)) => summary.skipped.push(real.to_string()),
            Ok(Restored::Outside) => {}
            Err(Failed { real, error }) => summary.problem(
                object_name(&opaque, real.as_ref()),
                crate::chain::chain(&error),
            ),
        }
    }
    for n in tree.not_served {
        summary.problem(
            format!("sealed object {}", n.path),
            format!(
                "not restored: the receiver cannot serve version {}: {}",
                n.id, n.reason
            ),
        );
    }
    let d = dest.clone();
    if let Ok(errors) = crate::tasks::blocking(move || d.finish_dirs()).await {
        for e in errors {
            summary.problem("", crate::chain::chain(&e));
        }
    }
    summary.duration_ms = started.elapsed().as_millis() as u64;
    summary
}

/// How a failed object is named in the summary: by its opaque path, and
/// its real path when its header opened.
fn object_name(opaque: &RelPath, real: Option<&RelPath>) -> String {
    match real {
        Some(real) => format!("sealed object {opaque} ({real})"),
        None => format!("sealed object {opaque}"),
    }
}

/// One step of an object's bytes, from the fetch to the opener.
enum Feed {
    Data(Vec<u8>),
    /// All bytes came, and their hash is the catalog's.
    End,
}

/// Fetches object `v` and, on a blocking thread, opens it and writes what
/// it holds. The opener comes back unless the runtime is shutting down.
async fn restore_object(
    fetcher: &Fetcher,
    mut opener: Opener,
    v: VersionInfo,
    dest: Arc<Destination>,
    under: Arc<[RelPath]>,
    progress: &Progress,
) -> (Option<Opener>, Result<Restored, Failed>) {
    let VersionKind::File { hash, .. } = v.kind else {
        return (Some(opener), Err(ObjectError::NotAnObject.into()));
    };
    let (tx, rx) = mpsc::channel(FEED_DEPTH);
    let write = crate::tasks::blocking(move || {
        let done = write_object(&mut opener, rx, &dest, &under);
        (opener, done)
    });
    let (fed, written) = tokio::join!(feed(fetcher, v.id, &hash, tx, progress), write);
    let (opener, done) = match written {
        Ok((opener, done)) => (Some(opener), done),
        Err(cancelled) => (None, Err(ObjectError::from(cancelled).into())),
    };
    // A failed fetch explains an object that ended early.
    let done = match (fed, done) {
        (Err(e), Err(Failed { real, .. })) => Err(Failed {
            real,
            error: e.into(),
        }),
        (_, done) => done,
    };
    (opener, done)
}

/// Sends the bytes of version `id` to the opener, then `End` if their hash
/// is `hash`. Stops quietly when the opener stops reading (it needs no
/// more).
async fn feed(
    fetcher: &Fetcher,
    id: u64,
    hash: &Hash,
    tx: mpsc::Sender<Feed>,
    progress: &Progress,
) -> Result<(), ObjectError> {
    let mut fetch = fetcher.fetch(id).await?;
    loop {
        match fetch.next().await? {
            Piece::Data(data) => {
                progress.add_bytes(data.len() as u64);
                if tx.send(Feed::Data(data)).await.is_err() {
                    return Ok(());
                }
            }
            Piece::End(sent) if sent != *hash => return Err(ObjectError::ServerHash),
            Piece::End(_) => {
                let _ = tx.send(Feed::End).await;
                return Ok(());
            }
        }
    }
}

/// Where an object's entry goes, decided once its header is open.
enum Target {
    // Boxed: the hasher is large.
    File(Box<PendingFile>),
    Link(std::path::PathBuf),
    Dir,
    /// Something is at this real path.
    Skipped(RelPath),
    Outside,
}

/// Opens the object fed through `rx` and writes its entry (blocking).
fn write_object(
    opener: &mut Opener,
    mut rx: mpsc::Receiver<Feed>,
    dest: &Destination,
    under: &[RelPath],
) -> Result<Restored, Failed> {
    let mut object = opener.object();
    let mut content = Vec::new();
    // The real path, once the header is open, names the entry in errors.
    let mut real: Option<RelPath> = None;
    let failed = |real: &Option<RelPath>, error: EntryError| Failed {
        real: real.clone(),
        error,
    };
    let mut target: Option<Target> = None;
    let mut ended = false;
    while let Some(feed) = rx.blocking_recv() {
        let data = match feed {
            Feed::Data(data) => data,
            Feed::End => {
                ended = true;
                break;
            }
        };
        object
            .push(&data, &mut content)
            .map_err(|e| failed(&real, ObjectError::from(e).into()))?;
        if target.is_none() {
            if let Some(header) = object.header() {
                real = Some(header.path.clone());
                target = Some(decide(header, dest, under).map_err(|e| failed(&real, e))?);
            }
        }
        match &mut target {
            Some(Target::Outside) => return Ok(Restored::Outside),
            Some(Target::Skipped(path)) => return Ok(Restored::Skipped(path.clone())),
            Some(Target::File(pending)) => {
                pending
                    .write(&content)
                    .map_err(|e| failed(&real, e.into()))?;
                content.clear();
            }
            _ => {}
        }
    }
    if !ended {
        return Err(failed(&real, ObjectError::Interrupted.into()));
    }
    let header = object
        .finish()
        .map_err(|e| failed(&real, ObjectError::from(e).into()))?;
    let real = Some(header.path.clone());
    let target = match target {
        Some(decided) => decided,
        // An object of one block may open only at its end.
        None => decide(&header, dest, under).map_err(|e| failed(&real, e))?,
    };
    let failed = |error: EntryError| failed(&real, error);
    match target {
        Target::Outside => Ok(Restored::Outside),
        Target::Skipped(path) => Ok(Restored::Skipped(path)),
        Target::Dir => {
            dest.dir(&header.path, header.mode, header.mtime_ns)
                .map_err(|e| failed(e.into()))?;
            Ok(Restored::Dir)
        }
        Target::Link(slot) => {
            let SealedKind::Symlink { target } = &header.kind else {
                return Err(failed(EntryError::KindChanged));
            };
            dest.symlink(slot, target, header.mtime_ns)
                .map_err(|e| failed(e.into()))?;
            Ok(Restored::Link)
        }
        Target::File(mut pending) => {
            pending.write(&content).map_err(|e| failed(e.into()))?;
            let n = pending
                .commit_opened(header.size, header.mode, header.mtime_ns)
                .map_err(|e| failed(e.into()))?;
            Ok(Restored::File(n))
        }
    }
}

/// Where the entry `header` describes goes (blocking): nowhere if it is not
/// among the paths asked or its place is taken.
fn decide(
    header: &SealedHeader,
    dest: &Destination,
    under: &[RelPath],
) -> Result<Target, EntryError> {
    if !is_under(&header.path, under) {
        return Ok(Target::Outside);
    }
    if header.kind == SealedKind::Dir {
        return Ok(Target::Dir);
    }
    let slot = match dest.slot(&header.path)? {
        Slot::Taken(_) => return Ok(Target::Skipped(header.path.clone())),
        Slot::Free(slot) => slot,
    };
    Ok(match header.kind {
        SealedKind::File => Target::File(Box::new(dest.begin_file(slot)?)),
        _ => Target::Link(slot),
    })
}
