//! Checking that a copy equals its source, so that every measured run also
//! proves the tool did its job.

use std::collections::BTreeMap;
use std::path::Path;

use anyhow::{bail, Context};

/// Fails unless the two trees hold the same paths with the same file
/// contents (metadata is not compared: `cp -r` does not keep it). Use
/// `ferry_tests::tree::assert_same` where metadata must match too.
pub fn same_content(source: &Path, copy: &Path) -> anyhow::Result<()> {
    let a = contents(source)?;
    let b = contents(copy)?;
    let mut problems = Vec::new();
    for (path, hash) in &a {
        match b.get(path) {
            None => problems.push(format!("missing in copy: {path}")),
            Some(other) if other != hash => problems.push(format!("differs: {path}")),
            Some(_) => {}
        }
    }
    for path in b.keys().filter(|p| !a.contains_key(*p)) {
        problems.push(format!("extra in copy: {path}"));
    }
    if !problems.is_empty() {
        problems.truncate(20);
        bail!(
            "{} and {} differ:\n{}",
            source.display(),
            copy.display(),
            problems.join("\n")
        );
    }
    Ok(())
}

/// Relative path (files and directories) to the file's blake3 hash (`None`
/// for a directory).
fn contents(root: &Path) -> anyhow::Result<BTreeMap<String, Option<blake3::Hash>>> {
    let mut out = BTreeMap::new();
    let mut dirs = vec![root.to_path_buf()];
    while let Some(dir) = dirs.pop() {
        for entry in
            std::fs::read_dir(&dir).with_context(|| format!("reading {}", dir.display()))?
        {
            let path = entry?.path();
            let rel = path.strip_prefix(root)?.to_string_lossy().into_owned();
            let meta = std::fs::symlink_metadata(&path)?;
            if meta.is_dir() {
                out.insert(rel, None);
                dirs.push(path);
            } else {
                let mut hasher = blake3::Hasher::new();
                let file = std::fs::File::open(&path)
                    .with_context(|| format!("opening {}", path.display()))?;
                hasher
                    .update_reader(file)
                    .with_context(|| format!("reading {}", path.display()))?;
                out.insert(rel, Some(hasher.finalize()));
            }
        }
    }
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn finds_missing_extra_and_changed_files() -> anyhow::Result<()> {
        let a = tempfile::tempdir()?;
        let b = tempfile::tempdir()?;
        for dir in [a.path(), b.path()] {
            ferry_tests::tree::write(dir, "x/one", "1")?;
            ferry_tests::tree::write(dir, "two", "2")?;
        }
        same_content(a.path(), b.path())?;
        ferry_tests::tree::write(b.path(), "two", "3")?;
        let err = same_content(a.path(), b.path()).map(|_| ()).unwrap_err();
        assert!(err.to_string().contains("differs: two"), "{err}");
        ferry_tests::tree::write(b.path(), "two", "2")?;
        ferry_tests::tree::write(b.path(), "x/three", "3")?;
        let err = same_content(a.path(), b.path()).map(|_| ()).unwrap_err();
        assert!(err.to_string().contains("extra in copy: x/three"), "{err}");
        std::fs::remove_file(a.path().join("two"))?;
        std::fs::remove_file(b.path().join("x/three"))?;
        let err = same_content(b.path(), a.path()).map(|_| ()).unwrap_err();
        assert!(err.to_string().contains("missing in copy: two"), "{err}");
        Ok(())
    }
}
