//! What a run leaves on the sender: the entries the receiver acknowledged
//! and the deletions it carried out, in the index (and the local copies'
//! book), the run's row in the local history, and the keep-copies directory
//! completed from the source. All on the blocking pool.

use std::sync::{Arc, Mutex};

use ferry_proto::{Hash, RelPath};

use super::{RunError, SenderContext};
use crate::copies::{self, Copies, CopyRecord, Held};
use crate::index::ChunkRecord;
use crate::index::{Index, SenderRun};
use crate::scan::{self, ScanEntry};
use crate::summary::RunSummary;
use crate::tasks::blocking;

/// Entries the receiver acknowledged, with their content hash, for chunked
/// content their chunk list, and whether their local copy was written.
pub(super) type Acked = Vec<(ScanEntry, Option<Hash>, Option<ChunkRecord>, bool)>;

/// Runs `f` on the index, if the run opened one, on the blocking pool.
pub(super) async fn with_index<T: Send + 'static>(
    index: &Arc<Mutex<Option<Index>>>,
    f: impl FnOnce(&mut Index) -> Result<T, RunError> + Send + 'static,
) -> Result<Option<T>, RunError> {
    let index = index.clone();
    blocking(move || {
        let mut slot = index.lock().map_err(|_| RunError::IndexPoisoned)?;
        slot.as_mut().map(f).transpose()
    })
    .await?
}

/// Records acknowledged entries in the index, then their local copies.
pub(super) async fn record_stored(ctx: &SenderContext, acked: Acked) -> Result<(), RunError> {
    if acked.is_empty() {
        return Ok(());
    }
    let copies = ctx.copies.clone();
    with_index(&ctx.index, move |index| {
        let mut entries = Vec::with_capacity(acked.len());
        let mut lists = Vec::new();
        let mut copied = Vec::new();
        for (entry, hash, chunks, copy) in acked {
            if let Some(record) = chunks {
                lists.push(record);
            }
            if copy {
                copied.extend(copy_record(&entry, hash));
            }
            entries.push((entry, hash));
        }
        index.record_stored(&entries)?;
        index.record_chunks(&lists)?;
        // After the index: a copy recorded is one the index knows.
        if let Some(copies) = copies {
            if let Err(e) = copies.record(&copied) {
                tracing::warn!("{e}");
            }
        }
        Ok(())
    })
    .await?;
    Ok(())
}

/// Records deletions the receiver carried out: their local copies go, and
/// the index forgets them.
pub(super) async fn record_deleted(
    ctx: &SenderContext,
    done: Vec<RelPath>,
) -> Result<(), RunError> {
    let copies = ctx.copies.clone();
    let index = ctx.index.clone();
    blocking(move || {
        if let Some(copies) = copies {
            for path in &done {
                if let Err(e) = copies.remove(path) {
                    tracing::warn!(path = %path, "could not remove the local copy: {}", crate::chain::Chain(&e));
                }
            }
            if let Err(e) = copies.forget(&done) {
                tracing::warn!("{e}");
            }
        }
        let mut slot = index.lock().map_err(|_| RunError::IndexPoisoned)?;
        if let Some(index) = slot.as_mut() {
            index.record_deleted(&done)?;
        }
        Ok(())
    })
    .await?
}

/// Records the run in the local history; a failure is only logged.
pub(super) async fn record_run(ctx: &SenderContext, row: SenderRun) {
    let recorded = with_index(&ctx.index, move |index| Ok(index.record_run(&row)?)).await;
    if let Err(e) = recorded {
        tracing::warn!(
            "could not record the run in the local history: {}",
            crate::chain::Chain(&e)
        );
    }
}

/// What the local copy of an acknowledged entry holds.
fn copy_record(entry: &ScanEntry, hash: Option<Hash>) -> Option<CopyRecord> {
    let held = match (&entry.kind, hash) {
        (scan::ScanKind::File, Some(hash)) => Held::File {
            hash,
            size: entry.size,
        },
        (scan::ScanKind::File, None) => return None,
        (scan::ScanKind::Dir, _) => Held::Dir,
        (scan::ScanKind::Symlink { target }, _) => Held::Symlink {
            target: target.to_vec(),
        },
    };
    Some(CopyRecord {
        path: entry.path.clone(),
        held,
        mtime_ns: entry.mtime_ns,
        mode: entry.mode,
    })
}

/// Makes the keep-copies directory hold every entry the receiver holds
/// (see [`crate::copies::complete`]); a failure is one problem of the run.
pub(super) async fn complete_copies(
    ctx: &SenderContext,
    copies: Arc<Copies>,
    source: Arc<scan::SourceDir>,
    summary: &mut RunSummary,
) {
    let root = copies.root().to_path_buf();
    let entries = with_index(&ctx.index, |index| Ok(index.entries()?)).await;
    let done = match entries {
        Ok(Some(entries)) => blocking(move || copies::complete(&copies, &entries, &source))
            .await
            .map_err(|e| crate::chain::chain(&e))
            .and_then(|done| done.map(Some).map_err(|e| crate::chain::chain(&e))),
        Ok(None) => Ok(None),
        Err(e) => Err(crate::chain::chain(&e)),
    };
    match done {
        Ok(Some(done)) => {
            if done.copied + done.metadata + done.removed > 0 {
                tracing::info!(
                    copied = done.copied,
                    updated = done.metadata,
                    removed = done.removed,
                    "keep-copies: completed from the source"
                );
            }
            for (path, why) in &done.left {
                tracing::debug!(path = %path, "keep-copies: no copy yet: {why}");
            }
        }
        Ok(None) => {}
        Err(e) => {
            tracing::warn!("{e}");
            summary.problem(root.display().to_string(), e);
        }
    }
}
