//! The catalog changes of one op of a bucket store, as the catalog stands
//! inside the batch's transaction.

use ferry_proto::{Entry, EntryKind, RelPath};
use rusqlite::{params, OptionalExtension, Transaction};

use super::super::catalog::{self, Below, Change, NewVersion, VersionRow};
use super::super::error::StoreError;
use super::super::Namespace;
use super::write::PackedOp;

/// The current row of `path` inside `tx`.
pub(super) fn current_in(
    tx: &Transaction<'_>,
    ns: &Namespace,
    path: &[u8],
) -> rusqlite::Result<Option<VersionRow>> {
    let sql = format!(
        "SELECT {} FROM versions WHERE sender_id = ?1 AND folder = ?2 AND path = ?3
         AND replaced_run IS NULL ORDER BY id DESC LIMIT 1",
        catalog::VERSION_COLUMNS
    );
    tx.prepare_cached(&sql)?
        .query_row(
            params![ns.sender_id, ns.folder.as_str(), path],
            catalog::version_row,
        )
        .optional()
}

/// The catalog changes of one op of a bucket store, as the catalog stands
/// inside `tx` (the batch's earlier ops applied): the outer `Err` is the
/// catalog's, the inner one the op's own.
pub(super) fn changes_for(
    tx: &Transaction<'_>,
    ns: &Namespace,
    op: &PackedOp,
) -> rusqlite::Result<Result<Vec<Change>, StoreError>> {
    let mut changes = Vec::new();
    let (path, new) = match op {
        PackedOp::Delete(path) => {
            changes.push(Change::Retire {
                path: path.clone(),
                archive: None,
                deleted: true,
                below: Below::Gone,
            });
            return Ok(Ok(changes));
        }
        PackedOp::File {
            entry,
            size,
            hash,
            chunks,
            stored,
        } => (
            &entry.path,
            NewVersion {
                path: entry.path.clone(),
                kind: "file",
                size: *size,
                mtime_ns: entry.mtime_ns,
                mode: entry.mode,
                hash: Some(*hash),
                target: None,
                chunks: chunks.clone(),
                stored: Some(*stored),
            },
        ),
        PackedOp::Metadata { entry, hash } => {
            let EntryKind::File { size, .. } = entry.kind else {
                return Ok(Err(bad(entry, "update_metadata needs a file entry")));
            };
            let current = current_in(tx, ns, entry.path.as_bytes())?;
            let same = current.as_ref().is_some_and(|r| {
                r.kind == "file"
                    && r.hash.as_deref() == Some(hash.as_slice())
                    && r.size == catalog::sql_u64(size)
            });
            let Some(current) = current.filter(|_| same) else {
                return Ok(Err(StoreError::Conflict {
                    path: entry.path.clone(),
                    detail: "the stored content changed or is missing; send the content again"
                        .into(),
                }));
            };
            // The same blobs: a chunked version's list goes with it, so the
            // new version names its blobs even once the old one is pruned.
            let chunks: Option<Vec<u8>> = tx
                .prepare_cached("SELECT list FROM chunk_lists WHERE version_id = ?1")?
                .query_row([current.id], |r| r.get(0))
                .optional()?;
            (
                &entry.path,
                NewVersion {
                    path: entry.path.clone(),
                    kind: "file",
                    size,
                    mtime_ns: entry.mtime_ns,
                    mode: entry.mode,
                    hash: Some(*hash),
                    target: None,
                    chunks,
                    stored: None,
                },
            )
        }
        PackedOp::Dir(entry) => {
            if entry.kind != EntryKind::Dir {
                return Ok(Err(bad(entry, "put_dir needs a directory entry")));
            }
            (&entry.path, NewVersion::dir(entry))
        }
        PackedOp::Symlink(entry) => {
            let EntryKind::Symlink { target } = &entry.kind else {
                return Ok(Err(bad(entry, "put_symlink needs a symlink entry")));
            };
            (&entry.path, NewVersion::symlink(entry, target))
        }
    };
    // A file or symlink where a parent directory must be is replaced by it
    // (the directory itself gets its row when its entry comes).
    let bytes = path.as_bytes();
    for (i, _) in bytes.iter().enumerate().filter(|(_, b)| **b == b'/') {
        let parent = &bytes[..i];
        if let Some(row) = current_in(tx, ns, parent)? {
            if row.kind != "dir" {
                if let Ok(parent) = RelPath::from_bytes(parent.to_vec()) {
                    changes.push(Change::Retire {
                        path: parent,
                        archive: None,
                        deleted: false,
                        below: Below::Untouched,
                    });
                }
            }
        }
    }
    let current = current_in(tx, ns, bytes)?;
    match current {
        // The same directory: the row stands.
        Some(row)
            if new.kind == "dir"
                && row.kind == "dir"
                && row.mtime_ns == new.mtime_ns
                && row.mode == i64::from(new.mode) => {}
        // A directory with new metadata keeps what is below it, and so does
        // a directory replacing a file (nothing can be below a file).
        Some(_) if new.kind == "dir" => {
            changes.push(Change::Retire {
                path: path.clone(),
                archive: None,
                deleted: false,
                below: Below::Untouched,
            });
            changes.push(Change::Insert(new));
        }
        None if new.kind == "dir" => changes.push(Change::Insert(new)),
        // A file or symlink: whatever was there is replaced, and what was
        // below it (a directory, recorded or only implied by its children)
        // is deleted; every byte stays in its pack.
        _ => {
            changes.push(Change::Retire {
                path: path.clone(),
                archive: None,
                deleted: false,
                below: Below::Gone,
            });
            changes.push(Change::Insert(new));
        }
    }
    Ok(Ok(changes))
}

pub(super) fn bad(entry: &Entry, detail: &str) -> StoreError {
    StoreError::BadEntry {
        path: entry.path.clone(),
        detail: detail.to_owned(),
    }
}
