//! Making the copies hold every entry as last acknowledged, without asking
//! the receiver for anything.
//!
//! The sender's index knows every entry the receiver acknowledged and, for
//! a file, the hash of its content. After a run, each entry whose copy is
//! missing or out of date (the file was sent before `--keep-copies` was
//! given, only its metadata changed, or a run was killed) is copied from the
//! source, but only if the source still holds that content (checked by its
//! hash while copying; otherwise the next run sends the file and writes its
//! copy). Whatever the index does not hold is removed from the copies.

use std::collections::{HashMap, HashSet};
use std::fs;
use std::io::{self, Read};
use std::os::unix::ffi::OsStrExt;
use std::os::unix::fs::PermissionsExt;

use ferry_proto::RelPath;

use super::{file_time, is_reserved, Copies, CopiesError, CopyRecord, Held};
use crate::index::IndexEntry;
use crate::scan::{ScanKind, SourceDir};
use crate::sparse::HoleReader;

/// Records written per transaction.
const BATCH: usize = 512;

/// What [`complete`] did.
#[derive(Debug, Default, Clone, PartialEq, Eq)]
pub struct Completed {
    /// Files, symlinks and directories copied (or re-created) from the source.
    pub copied: u64,
    /// Copies whose content was right and only metadata was updated.
    pub metadata: u64,
    /// Paths removed because the receiver no longer holds them.
    pub removed: u64,
    /// Files whose copy could not be made now, and why (the source changed
    /// since it was sent: the next run sends it and writes its copy).
    pub left: Vec<(RelPath, String)>,
}

/// Makes `copies` hold exactly `entries` (the index of what the receiver
/// acknowledged), reading missing content from `source` (blocking).
pub fn complete(
    copies: &Copies,
    entries: &[IndexEntry],
    source: &SourceDir,
) -> Result<Completed, CopiesError> {
    let mut done = Completed::default();
    let wanted: HashSet<&RelPath> = entries.iter().map(|e| &e.path).collect();
    let records: HashMap<RelPath, CopyRecord> = copies
        .records()?
        .into_iter()
        .map(|r| (r.path.clone(), r))
        .collect();

    // 1. What the receiver no longer holds (or never acknowledged).
    let stale: Vec<RelPath> = records
        .keys()
        .filter(|p| !wanted.contains(p))
        .cloned()
        .collect();
    copies.forget(&stale)?;
    done.removed += remove_unwanted(copies, &wanted)?;

    // 2. Files and symlinks; directories last, deepest first, so that
    //    writing their content does not change their mtime afterwards.
    let mut fresh = Vec::new();
    let mut dirs = Vec::new();
    for entry in entries {
        let record = records.get(&entry.path);
        let on_disk = fs::symlink_metadata(entry.path.under(copies.root())).ok();
        match &entry.kind {
            ScanKind::Dir => {
                let fine = record.is_some_and(|r| {
                    r.held == Held::Dir && r.mtime_ns == entry.mtime_ns && r.mode == entry.mode
                }) && on_disk.is_some_and(|m| m.is_dir());
                if !fine {
                    dirs.push(entry);
                }
            }
            ScanKind::Symlink { target } => {
                let held = Held::Symlink {
                    target: target.to_vec(),
                };
                let fine = record.is_some_and(|r| r.held == held)
                    && fs::read_link(entry.path.under(copies.root()))
                        .is_ok_and(|t| t.as_os_str().as_bytes() == &target[..]);
                if !fine {
                    copies.put_symlink(&entry.path, target)?;
                    fresh.push(record_of(entry, held));
                    done.copied += 1;
                }
            }
            ScanKind::File => {
                let Some(hash) = entry.hash else { continue };
                let held = Held::File {
                    hash,
                    size: entry.size,
                };
                let same_content = record.is_some_and(|r| r.held == held)
                    && on_disk
                        .as_ref()
                        .is_some_and(|m| m.is_file() && m.len() == entry.size);
                let same_meta =
                    record.is_some_and(|r| r.mtime_ns == entry.mtime_ns && r.mode == entry.mode);
                if same_content && same_meta {
                    continue;
                }
                if same_content {
                    let dest = entry.path.under(copies.root());
                    fs::set_permissions(&dest, fs::Permissions::from_mode(entry.mode & 0o7777))
                        .map_err(super::io_err("set the mode of", &dest))?;
                    filetime::set_file_mtime(&dest, file_time(entry.mtime_ns))
                        .map_err(super::io_err("set the mtime of", &dest))?;
                    done.metadata += 1;
                } else {
                    match copy_from_source(copies, source, entry, &hash)? {
                        Ok(()) => done.copied += 1,
                        Err(why) => {
                            done.left.push((entry.path.clone(), why));
                            continue;
                        }
                    }
                }
                fresh.push(record_of(entry, held));
            }
        }
        if fresh.len() >= BATCH {
            copies.record(&std::mem::take(&mut fresh))?;
        }
    }
    for entry in dirs.iter().rev() {
        copies.put_dir(&entry.path, entry.mtime_ns, entry.mode)?;
        fresh.push(record_of(entry, Held::Dir));
        done.copied += 1;
    }
    copies.record(&fresh)?;
    Ok(done)
}

fn record_of(entry: &IndexEntry, held: Held) -> CopyRecord {
    CopyRecord {
        path: entry.path.clone(),
        held,
        mtime_ns: entry.mtime_ns,
        mode: entry.mode,
    }
}

/// Copies `entry` from the source if the source still holds the content
/// with `hash`; the inner error says why not.
fn copy_from_source(
    copies: &Copies,
    source: &SourceDir,
    entry: &IndexEntry,
    hash: &ferry_proto::Hash,
) -> Result<Result<(), String>, CopiesError> {
    let (file, _) = match source.open_file(&entry.path) {
        Ok(opened) => opened,
        Err(e) => return Ok(Err(format!("not in the source as sent: {e}"))),
    };
    let mut writer = copies.begin(&entry.path)?;
    let mut reader = HoleReader::new(&file);
    let mut hasher = blake3::Hasher::new();
    let mut buf = vec![0u8; 256 * 1024];
    loop {
        let n = match reader.read(&mut buf) {
            Ok(0) => break,
            Ok(n) => n,
            Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
            Err(e) => return Ok(Err(format!("cannot read it in the source: {e}"))),
        };
        hasher.update(&buf[..n]);
        writer.write(&buf[..n])?;
    }
    if hasher.finalize().as_bytes() != hash {
        // The writer's temporary file is removed when it is dropped.
        return Ok(Err("changed in the source since it was sent".into()));
    }
    writer.commit(entry.mtime_ns, entry.mode)?;
    Ok(Ok(()))
}

/// Removes every path of the copies directory that is not `wanted`
/// (left by a killed run, or deleted since); returns how many.
fn remove_unwanted(copies: &Copies, wanted: &HashSet<&RelPath>) -> Result<u64, CopiesError> {
    let root = copies.root();
    let mut removed = 0;
    let mut walk = walkdir::WalkDir::new(root)
        .min_depth(1)
        .follow_links(false)
        .into_iter();
    while let Some(next) = walk.next() {
        let Ok(entry) = next else { continue };
        if entry.depth() == 1 && is_reserved(entry.file_name().as_bytes()) {
            if entry.file_type().is_dir() {
                walk.skip_current_dir();
            }
            continue;
        }
        let Ok(rel) = entry
            .path()
            .strip_prefix(root)
            .map_err(|_| ())
            .and_then(|p| RelPath::from_path(p).map_err(|_| ()))
        else {
            continue;
        };
        if wanted.contains(&rel) {
            continue;
        }
        if entry.file_type().is_dir() {
            walk.skip_current_dir();
        }
        copies.remove(&rel)?;
        removed += 1;
    }
    Ok(removed)
}

#[cfg(test)]
#[allow(clippy::unwrap_used)] // a failing unwrap is a failing test
mod tests {
    use super::*;

    fn entry(path: &str, kind: ScanKind, data: &[u8], mtime_ns: i64) -> IndexEntry {
        IndexEntry {
            path: RelPath::from_bytes(path).unwrap(),
            hash: matches!(kind, ScanKind::File).then(|| *blake3::hash(data).as_bytes()),
            kind,
            size: data.len() as u64,
            mtime_ns,
            mode: 0o640,
            ino: 1,
        }
    }

    #[test]
    fn missing_copies_come_from_the_source_only_if_it_still_holds_what_was_sent() {
        let dir = tempfile::tempdir().unwrap();
        let src = dir.path().join("src");
        fs::create_dir_all(src.join("d")).unwrap();
        fs::write(src.join("d/same"), b"as sent").unwrap();
        fs::write(src.join("changed"), b"edited since").unwrap();
        let source = SourceDir::open(&src).unwrap();
        let copies = Copies::open(&dir.path().join("copies")).unwrap();
        // Left by a killed run: nothing the receiver holds.
        fs::create_dir_all(copies.root().join("empty/deeper")).unwrap();
        let entries = vec![
            entry("changed", ScanKind::File, b"what was sent", 1),
            entry("d", ScanKind::Dir, b"", 2_000_000_000),
            entry("d/same", ScanKind::File, b"as sent", 3_000_000_000),
            entry(
                "l",
                ScanKind::Symlink {
                    target: b"d/same".to_vec().into(),
                },
                b"",
                4,
            ),
        ];
        let done = complete(&copies, &entries, &source).unwrap();
        assert_eq!((done.copied, done.removed), (3, 1), "{done:?}");
        assert_eq!(done.left.len(), 1);
        assert_eq!(done.left[0].0.to_string(), "changed");
        assert_eq!(fs::read(copies.root().join("d/same")).unwrap(), b"as sent");
        assert!(!copies.root().join("changed").exists());
        assert!(!copies.root().join("empty").exists());
        let meta = fs::metadata(copies.root().join("d")).unwrap();
        assert_eq!(crate::scan::mtime_ns(&meta), 2_000_000_000);
        let recorded: Vec<_> = copies
            .records()
            .unwrap()
            .into_iter()
            .map(|r| r.path.to_string())
            .collect();
        assert_eq!(recorded, ["d", "d/same", "l"]);

        // Nothing to do the second time; a metadata change is applied in
        // place; an entry the index no longer holds goes.
        let done = complete(&copies, &entries, &source).unwrap();
        assert_eq!((done.copied, done.metadata, done.removed), (0, 0, 0));
        let mut newer = entries[1..3].to_vec();
        newer[1].mtime_ns = 9_000_000_000;
        let done = complete(&copies, &newer, &source).unwrap();
        assert_eq!((done.copied, done.metadata, done.removed), (0, 1, 1));
        let meta = fs::metadata(copies.root().join("d/same")).unwrap();
        assert_eq!(crate::scan::mtime_ns(&meta), 9_000_000_000);
        assert!(fs::symlink_metadata(copies.root().join("l")).is_err());
        copies.tidy();
        assert!(!copies.root().join(super::super::TMP_DIR).exists());
    }
}
