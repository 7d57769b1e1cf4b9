//! Restore: write a folder's tree as of a point (from the receiver), or the
//! sender's local keep-copies, into a destination directory.
//!
//! Directories are created first, then files (several fetched at once) and
//! symlinks; directory modes and mtimes are set last. Every file is verified
//! against the catalog's blake3 while written and placed atomically (see
//! [`dest`]). Nothing at the destination is overwritten unless asked: such
//! entries are reported as skipped. One failing entry does not stop the
//! restore; it is reported and makes the summary's exit code non-zero.
//!
//! ## Layout
//!
//! - [`dest`]: the destination: slots, atomic files, symlinks, directories.
//! - `copies`: restoring from the `--keep-copies` directory.
//! - `sealed`: restoring a protected folder, its objects opened with its key.

mod copies;
pub mod dest;
mod sealed;

pub use copies::{restore_from_copies, CopiesRestoreError};
pub use dest::{Destination, Slot, WriteError};
pub use sealed::restore_sealed_tree;

use std::sync::Arc;

use ferry_proto::{VersionInfo, VersionKind};
use serde::Serialize;
use tokio::task::JoinSet;

use crate::reader::{FetchError, Fetcher, Piece, RemoteTree};
use crate::status::SenderStatus;
use crate::summary::{human_bytes, Problem, Progress};

/// Files fetched at once.
pub const RESTORE_IN_FLIGHT: usize = 8;

/// The account of one restore.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize)]
pub struct RestoreSummary {
    /// The run the tree was taken from (`None`: the latest state or copies).
    pub run: Option<u64>,
    /// Files written.
    pub files: u64,
    /// Symlinks written.
    pub links: u64,
    /// Directories created or updated.
    pub dirs: u64,
    /// Bytes of file content written.
    pub bytes: u64,
    /// Entries left alone because something is at their place (no
    /// `--overwrite`).
    pub skipped: Vec<String>,
    /// Entries that failed, and why.
    pub problems: Vec<Problem>,
    /// From `--from-copies`: recorded files missing from the copies
    /// directory (each is also in `problems`).
    pub copies_missing: u64,
    /// From `--from-copies`: recorded files whose copy does not match the
    /// hash recorded (each is also in `problems`; none was restored).
    pub copies_damaged: u64,
    pub duration_ms: u64,
}

impl RestoreSummary {
    /// One line for people; skipped entries are counted, with how to
    /// replace them (`ferry restore -v` lists them).
    pub fn line(&self) -> String {
        let skipped = match self.skipped.len() {
            0 => "0 skipped".to_string(),
            n => format!("{n} skipped (already at the destination: --overwrite replaces them, -v lists them)"),
        };
        let copies = match (self.copies_missing, self.copies_damaged) {
            (0, 0) => String::new(),
            (missing, damaged) => format!(
                "; the copies directory is incomplete or damaged: {missing} missing, {damaged} damaged"
            ),
        };
        format!(
            "restored {} files ({}), {} symlinks, {} directories; {skipped}, {} errors{copies}; {:.1}s",
            self.files,
            human_bytes(self.bytes),
            self.links,
            self.dirs,
            self.problems.len(),
            self.duration_ms as f64 / 1000.0
        )
    }

    /// True if nothing was restored, skipped or reported.
    pub fn is_empty(&self) -> bool {
        self.files + self.links + self.dirs == 0
            && self.skipped.is_empty()
            && self.problems.is_empty()
    }

    fn problem(&mut self, path: impl Into<String>, message: impl Into<String>) {
        self.problems.push(Problem {
            path: path.into(),
            message: message.into(),
        });
    }
}

/// What happened to one file or symlink.
enum Done {
    File(u64),
    Link,
    Skipped,
}

/// Why one entry fetched from a receiver (or a store) was not restored.
#[derive(Debug, thiserror::Error)]
enum RemoteEntryError {
    #[error(transparent)]
    Write(#[from] WriteError),
    #[error(transparent)]
    Fetch(#[from] FetchError),
    #[error("the receiver's hash of the content differs from the catalog's; it was discarded")]
    ServerHash,
    #[error(transparent)]
    Cancelled(#[from] crate::tasks::Cancelled),
}

/// Runs `f`, one step of writing at the destination, on the blocking pool.
async fn write<T: Send + 'static>(
    f: impl FnOnce() -> Result<T, WriteError> + Send + 'static,
) -> Result<T, RemoteEntryError> {
    Ok(crate::tasks::blocking(f).await??)
}

/// Restores `tree` (from [`crate::reader::Client::tree_report`]) into
/// `dest`, fetching file content through `fetcher`; each version the
/// receiver could not serve is reported as a problem (the restore goes on
/// without it).
pub async fn restore_remote_tree(
    fetcher: &Fetcher,
    tree: RemoteTree,
    dest: Arc<Destination>,
    status: Arc<SenderStatus>,
) -> RestoreSummary {
    let mut summary = restore_remote(fetcher, tree.entries, dest, status).await;
    summary.run = tree.run;
    for n in tree.not_served {
        summary.problem(
            n.path,
            format!(
                "not restored: the receiver cannot serve version {}: {}",
                n.id, n.reason
            ),
        );
    }
    summary
}

/// Restores `entries` (a tree from [`crate::reader::Client::tree`]) into
/// `dest`, fetching file content through `fetcher`.
pub async fn restore_remote(
    fetcher: &Fetcher,
    entries: Vec<VersionInfo>,
    dest: Arc<Destination>,
    status: Arc<SenderStatus>,
) -> RestoreSummary {
    let progress = &status.progress;
    let started = std::time::Instant::now();
    let mut summary = RestoreSummary::default();
    let bytes: u64 = entries
        .iter()
        .map(|v| match v.kind {
            VersionKind::File { size, .. } => size,
            _ => 0,
        })
        .sum();
    progress.reset(entries.len() as u64, bytes);
    let (dirs, others): (Vec<_>, Vec<_>) = entries
        .into_iter()
        .partition(|v| matches!(v.kind, VersionKind::Dir));
    for v in dirs {
        let d = dest.clone();
        let path = v.path.clone();
        match write(move || d.dir(&v.path, v.mode, v.mtime_ns)).await {
            Ok(()) => summary.dirs += 1,
            Err(e) => summary.problem(path.to_string(), crate::chain::chain(&e)),
        }
        progress.entry_done();
    }
    let mut tasks: JoinSet<(String, Result<Done, RemoteEntryError>)> = JoinSet::new();
    let mut items = others.into_iter();
    loop {
        while tasks.len() < RESTORE_IN_FLIGHT {
            let Some(v) = items.next() else { break };
            let fetcher = fetcher.clone();
            let dest = dest.clone();
            let status = status.clone();
            tasks.spawn(async move {
                let path = v.path.to_string();
                (
                    path,
                    restore_one(&fetcher, &dest, v, &status.progress).await,
                )
            });
        }
        let Some(joined) = tasks.join_next().await else {
            break;
        };
        progress.entry_done();
        match joined {
            Ok((_, Ok(Done::File(n)))) => {
                summary.files += 1;
                summary.bytes += n;
            }
            Ok((_, Ok(Done::Link))) => summary.links += 1,
            Ok((path, Ok(Done::Skipped))) => summary.skipped.push(path),
            Ok((path, Err(e))) => summary.problem(path, crate::chain::chain(&e)),
            Err(e) => summary.problem("?", format!("internal error: {}", crate::chain::Chain(&e))),
        }
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

async fn restore_one(
    fetcher: &Fetcher,
    dest: &Arc<Destination>,
    v: VersionInfo,
    progress: &Progress,
) -> Result<Done, RemoteEntryError> {
    let d = dest.clone();
    let path = v.path.clone();
    let target = match write(move || d.slot(&path)).await? {
        Slot::Taken(_) => return Ok(Done::Skipped),
        Slot::Free(target) => target,
    };
    match v.kind {
        VersionKind::Dir => Ok(Done::Skipped),
        VersionKind::Symlink { target: link } => {
            let d = dest.clone();
            write(move || d.symlink(target, &link, v.mtime_ns)).await?;
            Ok(Done::Link)
        }
        VersionKind::File { size, hash } => {
            let d = dest.clone();
            let mut pending = write(move || d.begin_file(target)).await?;
            let mut fetch = fetcher.fetch(v.id).await?;
            loop {
                match fetch.next().await? {
                    Piece::Data(data) => {
                        let n = data.len() as u64;
                        pending = write(move || {
                            pending.write(&data)?;
                            Ok(pending)
                        })
                        .await?;
                        progress.add_bytes(n);
                    }
                    Piece::End(sent) => {
                        if sent != hash {
                            return Err(RemoteEntryError::ServerHash);
                        }
                        let n =
                            write(move || pending.commit(&hash, size, v.mode, v.mtime_ns)).await?;
                        return Ok(Done::File(n));
                    }
                }
            }
        }
    }
}
