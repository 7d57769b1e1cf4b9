//! `ferry restore --from-copies DIR`: restore from the sender's local
//! keep-copies directory (no network), with the same atomic, no-overwrite
//! writes as a restore from the receiver.
//!
//! The copies' bookkeeping ([`crate::copies::book`]) says what the directory
//! should hold: every recorded entry is restored, and a file that is missing
//! or whose bytes do not match the recorded hash is reported (and not
//! written), so an incomplete or damaged copies directory cannot pass for a
//! complete restore. A directory made by an older Ferry, with no
//! bookkeeping, is restored as it is, unchecked.

use crate::sparse::HoleReader;
use std::io::{self, Read};
use std::os::unix::ffi::OsStrExt;
use std::os::unix::fs::{MetadataExt, OpenOptionsExt};
use std::path::{Path, PathBuf};

use ferry_proto::RelPath;

use super::dest::{Destination, PendingFile, Slot, WriteError};
use super::RestoreSummary;
use crate::copies::{is_reserved, Book, CopiesError, CopyRecord, Held};
use crate::summary::Progress;

/// Why a restore from copies could not run at all.
#[derive(Debug, thiserror::Error)]
pub enum CopiesRestoreError {
    #[error("cannot read the keep-copies directory {path}; check the --from-copies path")]
    Open {
        path: PathBuf,
        #[source]
        source: io::Error,
    },
    #[error(transparent)]
    Destination(#[from] WriteError),
    #[error(transparent)]
    Book(#[from] CopiesError),
}

/// Why one recorded copy could not be restored.
#[derive(Debug, thiserror::Error)]
enum RecordedError {
    #[error("missing from the copies directory")]
    Missing,
    #[error("damaged in the copies directory: {why}; it was not restored")]
    Damaged { why: &'static str },
    #[error(transparent)]
    Write(#[from] WriteError),
}

/// Restores the copies below `copies` (only at or below `under`, if not
/// empty) into `dest` (blocking).
pub fn restore_from_copies(
    copies: &Path,
    under: &[RelPath],
    dest: &Destination,
    progress: &Progress,
) -> Result<RestoreSummary, CopiesRestoreError> {
    let started = std::time::Instant::now();
    std::fs::metadata(copies)
        .and_then(|m| {
            if m.is_dir() {
                Ok(())
            } else {
                Err(io::Error::new(
                    io::ErrorKind::NotADirectory,
                    "not a directory",
                ))
            }
        })
        .map_err(|source| CopiesRestoreError::Open {
            path: copies.to_path_buf(),
            source,
        })?;
    let mut summary = match Book::open_existing(copies)? {
        Some(book) => from_book(copies, &book.all()?, under, dest, progress),
        None => {
            tracing::warn!(
                "{} has no record of what it should hold (made by an older Ferry?): restoring what is there, unchecked",
                copies.display()
            );
            from_walk(copies, under, dest, progress)
        }
    };
    for e in dest.finish_dirs() {
        summary.problem("", crate::chain::chain(&e));
    }
    summary.duration_ms = started.elapsed().as_millis() as u64;
    Ok(summary)
}

/// Restores every recorded entry, checking each file against its hash.
fn from_book(
    copies: &Path,
    records: &[CopyRecord],
    under: &[RelPath],
    dest: &Destination,
    progress: &Progress,
) -> RestoreSummary {
    let mut summary = RestoreSummary::default();
    let chosen: Vec<&CopyRecord> = records
        .iter()
        .filter(|r| under.is_empty() || under.iter().any(|u| r.path.starts_with(u)))
        .collect();
    // The work ahead, so that a progress bar moves as bytes are copied.
    let bytes = chosen
        .iter()
        .map(|r| match r.held {
            Held::File { size, .. } => size,
            _ => 0,
        })
        .sum();
    progress.reset(chosen.len() as u64, bytes);
    for record in chosen {
        let rel = &record.path;
        progress.entry_done();
        match restore_recorded(copies, record, dest, progress) {
            Ok(Copied::Dir) => summary.dirs += 1,
            Ok(Copied::Link) => summary.links += 1,
            Ok(Copied::File(n)) => {
                summary.files += 1;
                summary.bytes += n;
            }
            Ok(Copied::Skipped) => summary.skipped.push(rel.to_string()),
            Err(e) => {
                match e {
                    RecordedError::Missing => summary.copies_missing += 1,
                    RecordedError::Damaged { .. } => summary.copies_damaged += 1,
                    RecordedError::Write(_) => {}
                }
                summary.problem(rel.to_string(), crate::chain::chain(&e));
            }
        }
    }
    summary
}

fn restore_recorded(
    copies: &Path,
    record: &CopyRecord,
    dest: &Destination,
    progress: &Progress,
) -> Result<Copied, RecordedError> {
    let rel = &record.path;
    let source = rel.under(copies);
    let io = |action: &'static str| {
        let path = source.clone();
        move |source_err: io::Error| match source_err.kind() {
            io::ErrorKind::NotFound => RecordedError::Missing,
            _ => RecordedError::Write(WriteError::Io {
                action,
                path,
                source: source_err,
            }),
        }
    };
    let meta = std::fs::symlink_metadata(&source).map_err(io("inspect"))?;
    match &record.held {
        Held::Dir => {
            if !meta.is_dir() {
                return Err(RecordedError::Damaged {
                    why: "it is not a directory",
                });
            }
            dest.dir(rel, record.mode, record.mtime_ns)?;
            Ok(Copied::Dir)
        }
        Held::Symlink { target } => {
            let link = std::fs::read_link(&source).map_err(io("read the link"))?;
            if link.as_os_str().as_bytes() != target.as_slice() {
                return Err(RecordedError::Damaged {
                    why: "the link's target is not the one sent",
                });
            }
            let slot = match dest.slot(rel)? {
                Slot::Taken(_) => return Ok(Copied::Skipped),
                Slot::Free(t) => t,
            };
            dest.symlink(slot, target, record.mtime_ns)?;
            Ok(Copied::Link)
        }
        Held::File { hash, size } => {
            if !meta.is_file() {
                return Err(RecordedError::Damaged {
                    why: "it is not a regular file",
                });
            }
            if meta.len() != *size {
                return Err(RecordedError::Damaged {
                    why: "its size is not the one recorded",
                });
            }
            let file = std::fs::OpenOptions::new()
                .read(true)
                .custom_flags(libc::O_NOFOLLOW | libc::O_CLOEXEC)
                .open(&source)
                .map_err(io("open"))?;
            let slot = match dest.slot(rel)? {
                Slot::Taken(_) => return Ok(Copied::Skipped),
                Slot::Free(t) => t,
            };
            let mut reader = HoleReader::new(&file);
            let mut pending = dest.begin_file(slot)?;
            let (got, read) = copy_hashed(&mut reader, &mut pending, &source, progress)?;
            // A mismatch drops `pending`, which removes its temporary file.
            if read != *size || &got != hash {
                return Err(RecordedError::Damaged {
                    why: "its bytes do not match the hash recorded when it was copied",
                });
            }
            Ok(Copied::File(pending.commit(
                hash,
                *size,
                record.mode,
                record.mtime_ns,
            )?))
        }
    }
}

/// Restores what is in a copies directory that has no bookkeeping.
fn from_walk(
    copies: &Path,
    under: &[RelPath],
    dest: &Destination,
    progress: &Progress,
) -> RestoreSummary {
    let mut summary = RestoreSummary::default();
    let mut chosen: Vec<(walkdir::DirEntry, RelPath)> = Vec::new();
    let walk = walkdir::WalkDir::new(copies)
        .min_depth(1)
        .follow_links(false)
        .sort_by_file_name()
        .into_iter()
        .filter_entry(|e| !(e.depth() == 1 && is_reserved(e.file_name().as_bytes())));
    for entry in walk {
        let entry = match entry {
            Ok(e) => e,
            Err(e) => {
                let path = e
                    .path()
                    .map(|p| p.display().to_string())
                    .unwrap_or_default();
                summary.problem(path, crate::chain::chain(&e));
                continue;
            }
        };
        let Ok(rel) = entry
            .path()
            .strip_prefix(copies)
            .map_err(|_| ())
            .and_then(|p| RelPath::from_path(p).map_err(|_| ()))
        else {
            summary.problem(entry.path().display().to_string(), "not a restorable path");
            continue;
        };
        if !under.is_empty() && !under.iter().any(|u| rel.starts_with(u)) {
            continue;
        }
        chosen.push((entry, rel));
    }
    // The work ahead (sizes as walked), so that a progress bar moves.
    let bytes = chosen
        .iter()
        .filter_map(|(e, _)| e.metadata().ok().filter(|m| m.is_file()))
        .map(|m| m.len())
        .sum();
    progress.reset(chosen.len() as u64, bytes);
    for (entry, rel) in chosen {
        progress.entry_done();
        match restore_entry(entry.path(), &rel, dest, progress) {
            Ok(Copied::Dir) => summary.dirs += 1,
            Ok(Copied::Link) => summary.links += 1,
            Ok(Copied::File(n)) => {
                summary.files += 1;
                summary.bytes += n;
            }
            Ok(Copied::Skipped) => summary.skipped.push(rel.to_string()),
            Err(e) => summary.problem(rel.to_string(), crate::chain::chain(&e)),
        }
    }
    summary
}

enum Copied {
    Dir,
    Link,
    File(u64),
    Skipped,
}

fn mtime_ns(m: &std::fs::Metadata) -> i64 {
    m.mtime().saturating_mul(1_000_000_000) + m.mtime_nsec()
}

fn restore_entry(
    source: &Path,
    rel: &RelPath,
    dest: &Destination,
    progress: &Progress,
) -> Result<Copied, WriteError> {
    let io = |action: &'static str| {
        move |source_err: io::Error| WriteError::Io {
            action,
            path: source.to_path_buf(),
            source: source_err,
        }
    };
    let meta = std::fs::symlink_metadata(source).map_err(io("inspect"))?;
    if meta.is_dir() {
        dest.dir(rel, meta.mode(), mtime_ns(&meta))?;
        return Ok(Copied::Dir);
    }
    let target = match dest.slot(rel)? {
        Slot::Taken(_) => return Ok(Copied::Skipped),
        Slot::Free(t) => t,
    };
    if meta.is_symlink() {
        let link = std::fs::read_link(source).map_err(io("read the link"))?;
        dest.symlink(target, link.as_os_str().as_bytes(), mtime_ns(&meta))?;
        return Ok(Copied::Link);
    }
    if !meta.is_file() {
        return Ok(Copied::Skipped);
    }
    let file = std::fs::OpenOptions::new()
        .read(true)
        .custom_flags(libc::O_NOFOLLOW | libc::O_CLOEXEC)
        .open(source)
        .map_err(io("open"))?;
    // Holes are read as zeros from memory and written back as holes.
    let mut reader = HoleReader::new(&file);
    let mut pending = dest.begin_file(target)?;
    let (hash, size) = copy_hashed(&mut reader, &mut pending, source, progress)?;
    let written = pending.commit(&hash, size, meta.mode(), mtime_ns(&meta))?;
    Ok(Copied::File(written))
}

/// Copies what `reader` gives into `pending`, hashing it on the way;
/// returns the hash and the byte count. `path` names the copy in errors.
fn copy_hashed(
    reader: &mut impl Read,
    pending: &mut PendingFile,
    path: &Path,
    progress: &Progress,
) -> Result<([u8; 32], u64), WriteError> {
    let mut hasher = blake3::Hasher::new();
    let mut buf = vec![0u8; 256 * 1024];
    let mut size = 0u64;
    loop {
        let n = read_some(reader, &mut buf).map_err(|source| WriteError::Io {
            action: "read",
            path: path.to_path_buf(),
            source,
        })?;
        if n == 0 {
            break;
        }
        hasher.update(&buf[..n]);
        pending.write(&buf[..n])?;
        size += n as u64;
        progress.add_bytes(n as u64);
    }
    Ok((*hasher.finalize().as_bytes(), size))
}

fn read_some(file: &mut impl Read, buf: &mut [u8]) -> io::Result<usize> {
    loop {
        match file.read(buf) {
            Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
            other => return other,
        }
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used)] // a failing unwrap is a failing test
mod tests {
    use super::*;

    #[test]
    fn copies_are_restored_without_their_temp_dir_and_nothing_is_overwritten() {
        let dir = tempfile::tempdir().unwrap();
        let copies = dir.path().join("copies");
        std::fs::create_dir_all(copies.join(".ferry-tmp")).unwrap();
        std::fs::write(copies.join(".ferry-tmp/junk"), "x").unwrap();
        std::fs::create_dir_all(copies.join("d/e")).unwrap();
        std::fs::write(copies.join("d/a.txt"), "alpha").unwrap();
        std::fs::write(copies.join("top"), "top").unwrap();
        std::os::unix::fs::symlink("d/a.txt", copies.join("link")).unwrap();
        let to = dir.path().join("to");
        std::fs::create_dir_all(&to).unwrap();
        std::fs::write(to.join("top"), "mine").unwrap();
        let dest = Destination::new(&to, false).unwrap();
        let progress = Progress::default();
        let s = restore_from_copies(&copies, &[], &dest, &progress).unwrap();
        assert_eq!((s.files, s.links, s.dirs), (1, 1, 2), "{s:?}");
        // The totals are known before the copying: a progress bar moves.
        let p = progress.snapshot();
        assert_eq!((p.entries_total, p.entries_done), (5, 5), "{p:?}");
        assert_eq!(
            (p.bytes_total, p.bytes_done),
            (8, 5),
            "alpha and top; top kept"
        );
        assert_eq!(s.skipped, ["top"]);
        assert!(s.problems.is_empty(), "{s:?}");
        assert_eq!(std::fs::read(to.join("d/a.txt")).unwrap(), b"alpha");
        assert_eq!(std::fs::read(to.join("top")).unwrap(), b"mine");
        assert!(!to.join(".ferry-tmp").exists());
        assert!(to.join("d/e").is_dir());
        // A subtree only.
        let to2 = dir.path().join("to2");
        let dest = Destination::new(&to2, false).unwrap();
        let only = [RelPath::from_bytes("d").unwrap()];
        let s = restore_from_copies(&copies, &only, &dest, &progress).unwrap();
        assert_eq!(s.files, 1);
        let p = progress.snapshot();
        assert_eq!((p.entries_total, p.bytes_total, p.bytes_done), (3, 5, 5));
        assert!(!to2.join("top").exists());
    }

    #[test]
    fn a_copy_missing_or_not_matching_its_recorded_hash_is_reported_and_not_restored() {
        let dir = tempfile::tempdir().unwrap();
        let copies = crate::copies::Copies::open(&dir.path().join("copies")).unwrap();
        let rel = |p: &str| RelPath::from_bytes(p).unwrap();
        let mut records = Vec::new();
        for (name, data) in [("good", "fine"), ("gone", "lost"), ("bad", "orig")] {
            let mut w = copies.begin(&rel(name)).unwrap();
            w.write(data.as_bytes()).unwrap();
            w.commit(1_000_000_000, 0o644).unwrap();
            records.push(CopyRecord {
                path: rel(name),
                held: Held::File {
                    hash: *blake3::hash(data.as_bytes()).as_bytes(),
                    size: 4,
                },
                mtime_ns: 1_000_000_000,
                mode: 0o644,
            });
        }
        copies.record(&records).unwrap();
        copies.tidy();
        std::fs::remove_file(copies.root().join("gone")).unwrap();
        std::fs::write(copies.root().join("bad"), "ORIG").unwrap();
        let to = dir.path().join("to");
        let dest = Destination::new(&to, false).unwrap();
        let progress = Progress::default();
        let s = restore_from_copies(copies.root(), &[], &dest, &progress).unwrap();
        assert_eq!((s.files, s.copies_missing, s.copies_damaged), (1, 1, 1));
        // The recorded sizes are the total, known before the copying.
        let p = progress.snapshot();
        assert_eq!((p.entries_total, p.bytes_total), (3, 12), "{p:?}");
        let named: Vec<_> = s.problems.iter().map(|p| p.path.as_str()).collect();
        assert_eq!(named, ["bad", "gone"]);
        assert!(s.line().contains("1 missing, 1 damaged"), "{}", s.line());
        assert_eq!(std::fs::read(to.join("good")).unwrap(), b"fine");
        let left: Vec<_> = std::fs::read_dir(&to)
            .unwrap()
            .map(|e| e.unwrap().file_name())
            .collect();
        assert_eq!(left, ["good"], "nothing else written, no temporary file");
    }
}
