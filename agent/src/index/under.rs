//! Reading only the index rows a partial scan can speak about.
//!
//! A run that watch mode triggered scans a few directories; its plan needs
//! the index rows of those directories and of everything below them (what
//! it may find unchanged, changed or gone), never the rest of the folder.
//! Paths are stored as bytes and compared as bytes, so the rows at or below
//! `p` are `p` itself and the range [`p/`, `p0`) (`0` follows `/`): one
//! seek on the primary key each, whatever the size of the folder.

use std::os::unix::ffi::OsStrExt;
use std::path::PathBuf;

use super::{Index, IndexEntry, IndexError, RawEntry};

/// A range of path bytes, `lo` included, `hi` excluded.
type Range = (Vec<u8>, Vec<u8>);

impl Index {
    /// Calls `f` with every entry recorded for this target at or below one
    /// of `dirs` (relative to the source root; an empty path is the root,
    /// so every entry), in path-bytes order, each entry once even where
    /// `dirs` overlap, one row at a time.
    pub fn for_each_entry_under(
        &self,
        dirs: &[PathBuf],
        mut f: impl FnMut(IndexEntry) -> Result<(), IndexError>,
    ) -> Result<(), IndexError> {
        if dirs.iter().any(|d| d.as_os_str().is_empty()) {
            return self.for_each_entry(f);
        }
        let what = "reading entries under the scanned directories";
        let mut stmt = self
            .conn
            .prepare_cached(
                "SELECT path, kind, link_target, size, mtime_ns, mode, ino, hash
                 FROM entries WHERE target = ?1 AND path >= ?2 AND path < ?3
                 ORDER BY path",
            )
            .map_err(|e| self.sql(what, e))?;
        // Ranges in order of their start: rows then come out in path
        // order; a row already passed (ranges that overlap) is skipped.
        let mut last: Option<Vec<u8>> = None;
        for (lo, hi) in ranges(dirs) {
            let rows = stmt
                .query_map(rusqlite::params![&self.target, lo, hi], RawEntry::read)
                .map_err(|e| self.sql(what, e))?;
            for row in rows {
                let raw = row.map_err(|e| self.sql(what, e))?;
                if last.as_ref().is_some_and(|l| raw.path <= *l) {
                    continue;
                }
                last = Some(raw.path.clone());
                f(self.decode(raw)?)?;
            }
        }
        Ok(())
    }
}

/// For each of `dirs` (none empty): its own path, then what lies below it;
/// sorted by start.
fn ranges(dirs: &[PathBuf]) -> Vec<Range> {
    let mut out: Vec<Range> = dirs
        .iter()
        .flat_map(|d| {
            let p = d.as_os_str().as_bytes();
            // The smallest byte string greater than `p` is `p` + NUL.
            let exact = (p.to_vec(), [p, b"\0"].concat());
            let below = ([p, b"/"].concat(), [p, b"0"].concat());
            [exact, below]
        })
        .collect();
    out.sort();
    out
}

#[cfg(test)]
#[allow(clippy::unwrap_used, clippy::expect_used)] // tests fail loudly
mod tests {
    use ferry_proto::RelPath;

    use super::*;
    use crate::scan::{ScanEntry, ScanKind};

    fn entry(path: &str) -> ScanEntry {
        ScanEntry {
            path: RelPath::from_bytes(path.as_bytes().to_vec()).unwrap(),
            kind: ScanKind::File,
            size: 1,
            mtime_ns: 1,
            mode: 0o644,
            ino: 1,
            dev: 1,
        }
    }

    fn under(index: &Index, dirs: &[&str]) -> Vec<String> {
        let dirs: Vec<PathBuf> = dirs.iter().map(PathBuf::from).collect();
        let mut out = Vec::new();
        index
            .for_each_entry_under(&dirs, |e| {
                out.push(e.path.to_string());
                Ok(())
            })
            .unwrap();
        out
    }

    #[test]
    fn reads_each_directory_its_subtree_and_nothing_else_in_path_order() {
        let dir = tempfile::tempdir().unwrap();
        let mut index = Index::open(&dir.path().join("index.db"), "r/f").unwrap();
        let paths = [
            "a", "a.b", "a.b/x", "a/b", "a/b/c", "a/c", "a0", "ab", "b", "b/a", "c/d/e",
        ];
        let items: Vec<_> = paths.iter().map(|p| (entry(p), None)).collect();
        index.record_stored(&items).unwrap();
        assert_eq!(under(&index, &["a"]), ["a", "a/b", "a/b/c", "a/c"]);
        assert_eq!(under(&index, &["b", "a.b"]), ["a.b", "a.b/x", "b", "b/a"]);
        // Overlapping directories: each row once.
        assert_eq!(under(&index, &["a/b", "a"]), ["a", "a/b", "a/b/c", "a/c"]);
        assert_eq!(under(&index, &["c/d", "zz"]), ["c/d/e"]);
        assert_eq!(under(&index, &[""]).len(), paths.len());
        assert!(under(&index, &[]).is_empty());
    }
}
