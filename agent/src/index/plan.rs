//! The run plan: a scan compared against the index.
//!
//! Cheap checks first: a file whose size, mtime, inode and mode all match the
//! index is unchanged without being read. Only a file whose size matches but
//! whose mtime or inode moved is hashed, to tell a touch from an edit.

use std::collections::HashMap;
use std::path::Path;

use ferry_proto::{Hash, RelPath};

use super::{Index, IndexEntry, IndexError};
use crate::scan::{hash_file, Scan, ScanEntry, ScanKind, ScanProblem};

/// What to do with one scanned entry.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Action {
    /// Not known to the receiver (or its kind changed): send it whole.
    New,
    /// A file whose content changed: send it (chunks the receiver has are
    /// skipped by the transfer).
    Changed,
    /// A file whose content is the same as acknowledged (`hash`) but whose
    /// metadata (mode, mtime) changed: send the metadata only.
    MetadataOnly {
        /// The unchanged content hash.
        hash: Hash,
    },
}

/// One entry to send.
#[derive(Debug, Clone)]
pub struct PlanItem {
    /// The entry as scanned now.
    pub entry: ScanEntry,
    /// What to do with it.
    pub action: Action,
}

/// Everything one run has to do.
#[derive(Debug, Default)]
pub struct Plan {
    /// Entries to send, in scan order (parents before children).
    pub items: Vec<PlanItem>,
    /// Entries found unchanged.
    pub unchanged: u64,
    /// Paths to delete on the receiver, deepest first (children before
    /// parents).
    pub deleted: Vec<RelPath>,
    /// Files that could not be hashed (vanished, unreadable); paths relative
    /// to the root. They are neither sent nor deleted this run.
    pub problems: Vec<ScanProblem>,
}

impl Index {
    /// Compares `scan` (taken of `root`) against this target's entries.
    ///
    /// Hashes only files whose size is unchanged but whose mtime or inode
    /// moved. Index entries missing from the scan are deleted unless they lie
    /// below a path the scan could not read.
    pub fn plan(&self, root: &Path, scan: &Scan) -> Result<Plan, IndexError> {
        let mut known: HashMap<RelPath, IndexEntry> =
            self.entries()?.into_iter().map(|e| (e.path.clone(), e)).collect();
        let mut plan = Plan::default();
        for entry in &scan.entries {
            let old = known.remove(&entry.path);
            let decision = match old {
                None => Some(Action::New),
                Some(old) => match compare(root, entry, &old) {
                    Ok(decision) => decision,
                    Err(problem) => {
                        tracing::warn!(path = %entry.path, message = %problem.message, "cannot check file");
                        plan.problems.push(problem);
                        continue;
                    }
                },
            };
            match decision {
                Some(action) => plan.items.push(PlanItem { entry: entry.clone(), action }),
                None => plan.unchanged += 1,
            }
        }
        let mut deleted: Vec<RelPath> =
            known.into_keys().filter(|path| !scan.is_below_error(path)).collect();
        deleted.sort_by(|a, b| {
            let depth = |p: &RelPath| p.components().count();
            depth(b).cmp(&depth(a)).then_with(|| a.cmp(b))
        });
        plan.deleted = deleted;
        Ok(plan)
    }
}

/// `None` if `entry` is unchanged from `old`, else the action to take.
fn compare(root: &Path, entry: &ScanEntry, old: &IndexEntry) -> Result<Option<Action>, ScanProblem> {
    let same_meta = entry.mtime_ns == old.mtime_ns && entry.mode == old.mode;
    match (&entry.kind, &old.kind) {
        (ScanKind::Dir, ScanKind::Dir) => Ok((!same_meta).then_some(Action::New)),
        (ScanKind::Symlink { target }, ScanKind::Symlink { target: old_target }) => {
            Ok((!(same_meta && target == old_target)).then_some(Action::New))
        }
        (ScanKind::File, ScanKind::File) => compare_file(root, entry, old),
        _ => Ok(Some(Action::New)),
    }
}

fn compare_file(root: &Path, entry: &ScanEntry, old: &IndexEntry) -> Result<Option<Action>, ScanProblem> {
    if entry.size != old.size {
        return Ok(Some(Action::Changed));
    }
    let Some(old_hash) = old.hash else {
        // A file recorded without its hash cannot be proven unchanged.
        return Ok(Some(Action::Changed));
    };
    if entry.mtime_ns == old.mtime_ns && entry.ino == old.ino {
        return Ok((entry.mode != old.mode).then_some(Action::MetadataOnly { hash: old_hash }));
    }
    let (hash, _) = hash_file(&entry.path.under(root)).map_err(|err| ScanProblem {
        path: entry.path.as_path().to_path_buf(),
        message: format!("cannot read to check for changes: {err}"),
    })?;
    Ok(Some(if hash == old_hash { Action::MetadataOnly { hash } } else { Action::Changed }))
}
