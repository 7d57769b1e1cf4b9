//! Building and comparing directory trees.

use std::collections::BTreeMap;
use std::ffi::OsString;
use std::os::unix::ffi::OsStrExt;
use std::os::unix::fs::{MetadataExt, PermissionsExt};
use std::path::Path;

use anyhow::{bail, Context};

/// What a path in a tree is, with the metadata Ferry must carry.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Node {
    File {
        content_hash: [u8; 32],
        size: u64,
        mode: u32,
        mtime_ns: i64,
    },
    Dir {
        mode: u32,
    },
    Symlink {
        target: Vec<u8>,
    },
}

/// Writes a file (creating parents) with the given content.
pub fn write(root: &Path, rel: impl AsRef<Path>, content: impl AsRef<[u8]>) -> anyhow::Result<()> {
    let path = root.join(rel);
    if let Some(parent) = path.parent() {
        std::fs::create_dir_all(parent)?;
    }
    std::fs::write(&path, content).with_context(|| format!("writing {}", path.display()))
}

/// Sets a file's permission bits.
pub fn chmod(root: &Path, rel: impl AsRef<Path>, mode: u32) -> anyhow::Result<()> {
    std::fs::set_permissions(root.join(rel), std::fs::Permissions::from_mode(mode))?;
    Ok(())
}

/// Sets a path's mtime to `secs` seconds and `nanos` nanoseconds.
pub fn set_mtime(root: &Path, rel: impl AsRef<Path>, secs: i64, nanos: u32) -> anyhow::Result<()> {
    let t = filetime::FileTime::from_unix_time(secs, nanos);
    filetime::set_symlink_file_times(root.join(rel), t, t)?;
    Ok(())
}

fn mtime_ns(meta: &std::fs::Metadata) -> i64 {
    meta.mtime() * 1_000_000_000 + meta.mtime_nsec()
}

/// Every path below `root` (not following symlinks) with its metadata.
/// Directory mtimes are not compared: they change as entries come and go.
pub fn snapshot(root: &Path) -> anyhow::Result<BTreeMap<Vec<u8>, Node>> {
    snapshot_except(root, |_| false)
}

/// Same as [`snapshot`], without the paths (relative to `root`) for which
/// `skip` is true, nor anything below them: the walk never enters them. For
/// a tree where a running process creates and removes files of its own (a
/// receiver's `.ferry`): a file removed between the listing of its
/// directory and its read would fail the walk.
pub fn snapshot_except(
    root: &Path,
    skip: impl Fn(&[u8]) -> bool,
) -> anyhow::Result<BTreeMap<Vec<u8>, Node>> {
    let mut out = BTreeMap::new();
    walk(root, root, &skip, &mut out)?;
    Ok(out)
}

fn walk(
    root: &Path,
    dir: &Path,
    skip: &dyn Fn(&[u8]) -> bool,
    out: &mut BTreeMap<Vec<u8>, Node>,
) -> anyhow::Result<()> {
    for entry in std::fs::read_dir(dir).with_context(|| format!("reading {}", dir.display()))? {
        let entry = entry?;
        let path = entry.path();
        let rel = path.strip_prefix(root)?.as_os_str().as_bytes().to_vec();
        if skip(&rel) {
            continue;
        }
        let meta = std::fs::symlink_metadata(&path)?;
        let ft = meta.file_type();
        if ft.is_symlink() {
            let target: OsString = std::fs::read_link(&path)?.into_os_string();
            out.insert(
                rel,
                Node::Symlink {
                    target: target.as_bytes().to_vec(),
                },
            );
        } else if ft.is_dir() {
            out.insert(
                rel,
                Node::Dir {
                    mode: meta.mode() & 0o7777,
                },
            );
            walk(root, &path, skip, out)?;
        } else if ft.is_file() {
            let bytes = std::fs::read(&path)?;
            out.insert(
                rel,
                Node::File {
                    content_hash: *blake3::hash(&bytes).as_bytes(),
                    size: meta.len(),
                    mode: meta.mode() & 0o7777,
                    mtime_ns: mtime_ns(&meta),
                },
            );
        }
    }
    Ok(())
}

/// Fails with a readable difference unless the two trees hold the same paths
/// with the same content, modes, file mtimes (ns) and symlink targets.
pub fn assert_same(source: &Path, mirror: &Path) -> anyhow::Result<()> {
    let a = snapshot(source)?;
    let b = snapshot(mirror)?;
    let mut problems = Vec::new();
    for (path, node) in &a {
        match b.get(path) {
            None => problems.push(format!(
                "missing in mirror: {}",
                String::from_utf8_lossy(path)
            )),
            Some(other) if other != node => problems.push(format!(
                "differs: {}: source {node:?}, mirror {other:?}",
                String::from_utf8_lossy(path)
            )),
            Some(_) => {}
        }
    }
    for path in b.keys().filter(|p| !a.contains_key(*p)) {
        problems.push(format!(
            "extra in mirror: {}",
            String::from_utf8_lossy(path)
        ));
    }
    if !problems.is_empty() {
        bail!("trees differ:\n{}", problems.join("\n"));
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn snapshot_except_never_enters_a_skipped_directory() -> anyhow::Result<()> {
        let dir = tempfile::tempdir()?;
        write(dir.path(), "kept/a.txt", "a")?;
        write(dir.path(), "busy/inner/b.txt", "b")?;
        let snap = snapshot_except(dir.path(), |p| p == b"busy")?;
        let paths: Vec<&[u8]> = snap.keys().map(|k| k.as_slice()).collect();
        assert_eq!(paths, vec![&b"kept"[..], b"kept/a.txt"]);
        assert_eq!(snapshot(dir.path())?.len(), 5);
        Ok(())
    }
}
