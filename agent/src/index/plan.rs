//! The run plan: a scan compared against the index.
//!
//! Cheap checks first: a file whose size, mtime, inode and mode all match the
//! index is unchanged without being read. Only a file whose size matches but
//! whose mtime or inode moved is hashed, to tell a touch from an edit.

use ferry_proto::{Hash, RelPath};
use std::collections::HashMap;

use super::plan_items::{PlanItems, Todo};
use super::{Index, IndexEntry, IndexError, UNCONFIRMED_INO};
use crate::scan::{hash_file, OpenError, Scan, ScanEntry, ScanKind, ScanProblem, SourceDir};

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
    /// Entries to send, in scan order (parents before children), held
    /// compactly (see [`PlanItems`]).
    pub items: PlanItems,
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
    /// Compares `scan` (taken of `root`) against this target's entries and
    /// turns its entries into the plan's items (moved, never copied).
    /// Files are read through `root` ([`SourceDir`]): never outside it.
    ///
    /// Hashes only files whose size is unchanged but whose mtime or inode
    /// moved. Index entries missing from the scan are deleted unless they lie
    /// below a path the scan could not read.
    ///
    /// Memory: the index is read as a stream in path order and merged with
    /// the scan (also in path order), so no second copy of the tree is held;
    /// a verdict of one byte per scanned entry is all that is added. The
    /// entries to send stay in the scan's own buffer, filtered in place
    /// ([`PlanItems`]), so a first sync holds no more than a no-change run. For a
    /// partial scan only the rows at or below its directories are read, so
    /// a triggered run's plan costs what it scanned, not the folder.
    pub fn plan(&self, root: &SourceDir, mut scan: Scan) -> Result<Plan, IndexError> {
        let mut entries = std::mem::take(&mut scan.entries);
        // The scan sorts its entries; the merge below relies on it.
        if !entries.is_sorted_by(|a, b| a.path <= b.path) {
            entries.sort_unstable_by(|a, b| a.path.cmp(&b.path));
        }
        let mut plan = Plan::default();
        let mut verdicts = vec![Verdict::New; entries.len()];
        // Content hashes of metadata-only entries, by path.
        let mut same_content: HashMap<RelPath, Hash> = HashMap::new();
        let mut next = 0;
        let mut deleted = Vec::new();
        // A partial scan (watch mode) speaks only of its directories and
        // what lies below them: only those rows are read.
        let scanned_dirs: Option<Vec<std::path::PathBuf>> = scan
            .partial
            .as_ref()
            .map(|roots| roots.iter().map(|r| r.path.clone()).collect());
        let visit = |old: IndexEntry| {
            // Scanned paths before this one are not in the index: new.
            while next < entries.len() && entries[next].path < old.path {
                next += 1;
            }
            if next < entries.len() && entries[next].path == old.path {
                let at = next;
                next += 1;
                verdicts[at] = match compare(root, &entries[at], &old) {
                    Ok(None) => Verdict::Unchanged,
                    Ok(Some(Action::New)) => Verdict::New,
                    Ok(Some(Action::Changed)) => Verdict::Changed,
                    Ok(Some(Action::MetadataOnly { hash })) => {
                        same_content.insert(entries[at].path.clone(), hash);
                        Verdict::MetadataOnly
                    }
                    Err(problem) => {
                        tracing::warn!(path = %entries[at].path, message = %problem.message, "cannot check file");
                        plan.problems.push(problem);
                        Verdict::Problem
                    }
                };
                return Ok(());
            }
            // Known to the index, absent from the scan. A partial scan
            // (watch mode) deletes only what it looked for.
            let scanned = |p: &std::path::Path| {
                entries
                    .binary_search_by(|e| e.path.as_path().cmp(p))
                    .is_ok()
            };
            if !scan.is_below_error(&old.path) && scan.saw_gone(&old.path, scanned) {
                deleted.push(old.path);
            }
            Ok(())
        };
        match &scanned_dirs {
            Some(dirs) => self.for_each_entry_under(dirs, visit)?,
            None => self.for_each_entry(visit)?,
        }
        deleted.sort_by(|a, b| {
            let depth = |p: &RelPath| p.components().count();
            depth(b).cmp(&depth(a)).then_with(|| a.cmp(b))
        });
        plan.deleted = deleted;
        plan.unchanged = verdicts
            .iter()
            .filter(|v| matches!(v, Verdict::Unchanged))
            .count() as u64;
        // The entries to send stay where the scan put them: the others are
        // dropped in place, and each kept one gets a byte of what to do.
        let to_send = verdicts
            .iter()
            .filter(|v| !matches!(v, Verdict::Unchanged | Verdict::Problem))
            .count();
        let mut todo = Vec::with_capacity(to_send);
        let mut at = 0;
        // `retain` visits each entry once, in order: `at` is its position.
        entries.retain(|entry| {
            let verdict = verdicts[at];
            at += 1;
            todo.push(match verdict {
                Verdict::Unchanged | Verdict::Problem => return false,
                Verdict::New => Todo::New,
                Verdict::Changed => Todo::Changed,
                Verdict::MetadataOnly if same_content.contains_key(&entry.path) => {
                    Todo::MetadataOnly
                }
                Verdict::MetadataOnly => Todo::Changed,
            });
            true
        });
        drop(verdicts);
        // A no-change run frees the scan's whole buffer here.
        entries.shrink_to_fit();
        plan.items = PlanItems::new(entries, todo, same_content);
        Ok(plan)
    }
}

/// What the merge decided for one scanned entry.
#[derive(Debug, Clone, Copy)]
enum Verdict {
    Unchanged,
    New,
    Changed,
    /// Its content hash is in the side table.
    MetadataOnly,
    /// Could not be checked: neither sent nor deleted.
    Problem,
}

/// `None` if `entry` is unchanged from `old`, else the action to take.
fn compare(
    root: &SourceDir,
    entry: &ScanEntry,
    old: &IndexEntry,
) -> Result<Option<Action>, ScanProblem> {
    if old.ino == UNCONFIRMED_INO {
        return Ok(Some(unconfirmed(root, entry, old)?));
    }
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

/// An entry the receiver may have lost ([`Index::unconfirm_all`]): sent
/// again. A file whose size and mtime are as recorded is offered by its
/// recorded hash (the receiver takes it without its bytes if it holds that
/// content there); anything else as a change would be.
fn unconfirmed(
    root: &SourceDir,
    entry: &ScanEntry,
    old: &IndexEntry,
) -> Result<Action, ScanProblem> {
    match (&entry.kind, &old.kind, old.hash) {
        (ScanKind::File, ScanKind::File, Some(hash))
            if entry.size == old.size && entry.mtime_ns == old.mtime_ns =>
        {
            Ok(Action::MetadataOnly { hash })
        }
        (ScanKind::File, ScanKind::File, _) => {
            Ok(compare_file(root, entry, old)?.unwrap_or(Action::Changed))
        }
        _ => Ok(Action::New),
    }
}

fn compare_file(
    root: &SourceDir,
    entry: &ScanEntry,
    old: &IndexEntry,
) -> Result<Option<Action>, ScanProblem> {
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
    let (hash, _) = hash_file(root, entry).map_err(|err| ScanProblem {
        path: entry.path.as_path().to_path_buf(),
        message: match err {
            OpenError::Io { source, .. } => format!("cannot read to check for changes: {source}"),
            other => format!("not checked for changes: {other}"),
        },
    })?;
    Ok(Some(if hash == old_hash {
        Action::MetadataOnly { hash }
    } else {
        Action::Changed
    }))
}

#[cfg(test)]
#[allow(clippy::unwrap_used, clippy::expect_used)] // tests fail loudly
mod tests {
    use std::fs;
    use std::os::unix::fs::{symlink, MetadataExt, PermissionsExt};
    use std::path::Path;

    use filetime::FileTime;

    use super::*;
    use crate::scan::scan;

    struct Fixture {
        dir: tempfile::TempDir,
        index: Index,
    }

    impl Fixture {
        fn new() -> Fixture {
            let dir = tempfile::tempdir().unwrap();
            fs::create_dir_all(dir.path().join("src/d/e")).unwrap();
            fs::create_dir_all(dir.path().join("src/empty")).unwrap();
            let index = Index::open(&dir.path().join("state/index.db"), "r/f").unwrap();
            let fx = Fixture { dir, index };
            fx.write("a.txt", b"hello world", 1_000);
            fx.write("d/b.bin", &[7; 100_000], 2_000);
            fx.write("d/e/c", b"c", 3_000);
            symlink("a.txt", fx.root().join("link")).unwrap();
            fx
        }

        fn root(&self) -> std::path::PathBuf {
            self.dir.path().join("src")
        }

        fn source(&self) -> SourceDir {
            SourceDir::open(&self.root()).unwrap()
        }

        /// Writes a file and sets its mtime (explicitly, since the clock may
        /// not tick between two writes in a test).
        fn write(&self, path: &str, data: &[u8], mtime_s: i64) {
            fs::write(self.root().join(path), data).unwrap();
            self.set_mtime(path, mtime_s);
        }

        fn set_mtime(&self, path: &str, mtime_s: i64) {
            let t = FileTime::from_unix_time(mtime_s, 5);
            filetime::set_file_mtime(self.root().join(path), t).unwrap();
        }

        fn plan(&self) -> Plan {
            let scan = scan(&self.root(), &[]).unwrap();
            self.index.plan(&self.source(), scan).unwrap()
        }

        /// Plans and records everything planned as acknowledged.
        fn sync(&mut self) -> Plan {
            let plan = self.plan();
            let stored: Vec<_> = plan
                .items
                .entries()
                .map(|entry| {
                    let hash = match entry.kind {
                        ScanKind::File => Some(hash_file(&self.source(), entry).unwrap().0),
                        _ => None,
                    };
                    (entry.clone(), hash)
                })
                .collect();
            self.index.record_stored(&stored).unwrap();
            self.index.record_deleted(&plan.deleted).unwrap();
            plan
        }
    }

    fn actions(plan: &Plan) -> Vec<(String, Action)> {
        plan.items
            .iter()
            .map(|(entry, action)| (entry.path.to_string(), action))
            .collect()
    }

    fn rel(s: &str) -> RelPath {
        RelPath::from_bytes(s).unwrap()
    }

    #[test]
    fn new_tree_is_all_new_then_nothing_to_do() {
        let mut fx = Fixture::new();
        let first = fx.sync();
        let expected: Vec<_> = ["a.txt", "d", "d/b.bin", "d/e", "d/e/c", "empty", "link"]
            .iter()
            .map(|p| (p.to_string(), Action::New))
            .collect();
        assert_eq!(actions(&first), expected);
        assert_eq!(first.unchanged, 0);
        assert!(first.deleted.is_empty());

        let second = fx.plan();
        assert!(second.items.is_empty(), "{:?}", actions(&second));
        assert_eq!(second.unchanged, 7);
        assert!(second.deleted.is_empty() && second.problems.is_empty());
    }

    #[test]
    fn unconfirmed_entries_are_offered_again_until_acknowledged() {
        let mut fx = Fixture::new();
        fx.sync();
        assert_eq!(fx.index.acked_run().unwrap(), None, "no run was set");
        fx.index.set_run(7);
        assert_eq!(fx.index.unconfirm_all().unwrap(), 7);
        // An edit while the receiver was being put back.
        fx.write("d/e/c", b"C2", 3_000);
        fs::remove_file(fx.root().join("a.txt")).unwrap();
        let b = *blake3::hash(&[7; 100_000]).as_bytes();
        let plan = fx.plan();
        // Files as recorded are offered by their hash (no read); the edited
        // one is sent; directories and symlinks again; deletions as ever.
        assert_eq!(
            actions(&plan),
            [
                ("d".to_string(), Action::New),
                ("d/b.bin".to_string(), Action::MetadataOnly { hash: b }),
                ("d/e".to_string(), Action::New),
                ("d/e/c".to_string(), Action::Changed),
                ("empty".to_string(), Action::New),
                ("link".to_string(), Action::New),
            ]
        );
        assert_eq!(plan.deleted, [rel("a.txt")]);
        assert_eq!(plan.unchanged, 0);
        // Half of it acknowledged (the run was cut off): only the rest is
        // offered on the next run, and the acknowledging run is recorded.
        let stored: Vec<_> = plan
            .items
            .entries()
            .filter(|e| e.path.as_bytes().starts_with(b"d"))
            .map(|e| {
                let hash =
                    matches!(e.kind, ScanKind::File).then(|| hash_file(&fx.source(), e).unwrap().0);
                (e.clone(), hash)
            })
            .collect();
        fx.index.record_stored(&stored).unwrap();
        assert_eq!(fx.index.acked_run().unwrap(), Some(7));
        let rest = fx.plan();
        assert_eq!(
            actions(&rest),
            [
                ("empty".to_string(), Action::New),
                ("link".to_string(), Action::New)
            ]
        );
        fx.sync();
        assert!(fx.plan().items.is_empty());
    }

    #[test]
    fn a_partial_scan_deletes_only_what_it_looked_for() {
        let mut fx = Fixture::new();
        fx.sync();
        // Gone: a top-level file, a directory deep down (with its file),
        // and the directory `d/e` is only seen gone from `d`'s listing.
        fs::remove_file(fx.root().join("a.txt")).unwrap();
        fs::remove_dir_all(fx.root().join("d/e")).unwrap();
        let partial = |roots: Vec<crate::scan::ScanRoot>| {
            let scan = crate::scan::scan_dirs(
                &fx.source(),
                &[],
                &crate::scan::ExcludeRules::default(),
                roots,
            );
            fx.index.plan(&fx.source(), scan).unwrap()
        };
        let root = |path: &str, recursive| crate::scan::ScanRoot {
            path: path.into(),
            recursive,
        };
        // Only `d` listed: a.txt is not looked for, d/e and d/e/c are gone,
        // and `d` itself (its mtime moved) is sent again.
        fx.set_mtime("d", 9_000);
        let plan = partial(vec![root("d", false)]);
        assert_eq!(plan.deleted, [rel("d/e/c"), rel("d/e")]);
        assert_eq!(actions(&plan), [("d".to_string(), Action::New)]);
        assert_eq!(plan.unchanged, 1); // d/b.bin
                                       // Only the root listed: a.txt is gone; d is there, so nothing below
                                       // it is judged.
        let plan = partial(vec![root("", false)]);
        assert_eq!(plan.deleted, [rel("a.txt")]);
        // `d` whole: its own listing and below.
        let plan = partial(vec![root("d", true)]);
        assert_eq!(plan.deleted, [rel("d/e/c"), rel("d/e")]);
    }

    #[test]
    fn touch_and_chmod_are_metadata_only() {
        let mut fx = Fixture::new();
        fx.sync();
        fx.set_mtime("a.txt", 5_000);
        fs::set_permissions(fx.root().join("d/b.bin"), fs::Permissions::from_mode(0o600)).unwrap();
        let plan = fx.plan();
        let hello = *blake3::hash(b"hello world").as_bytes();
        let bin = *blake3::hash(&[7; 100_000]).as_bytes();
        assert_eq!(
            actions(&plan),
            [
                ("a.txt".to_string(), Action::MetadataOnly { hash: hello }),
                ("d/b.bin".to_string(), Action::MetadataOnly { hash: bin }),
            ]
        );
        assert_eq!(plan.items.entries().nth(1).unwrap().mode, 0o600);
        assert_eq!(plan.unchanged, 5);
        fx.sync();
        assert!(fx.plan().items.is_empty());
    }

    #[test]
    fn content_changes_are_changed() {
        let mut fx = Fixture::new();
        fx.sync();
        fx.write("a.txt", b"HELLO world", 1_000); // same size, same mtime: ino kept, so...
        fx.set_mtime("a.txt", 1_001); // ...the edit shows in the mtime, as it would for real
        let mut appended = vec![7; 100_000];
        appended.push(8);
        fx.write("d/b.bin", &appended, 2_000);
        let plan = fx.plan();
        assert_eq!(
            actions(&plan),
            [
                ("a.txt".to_string(), Action::Changed),
                ("d/b.bin".to_string(), Action::Changed)
            ]
        );
    }

    #[test]
    fn replaced_file_with_same_content_is_metadata_only() {
        let mut fx = Fixture::new();
        fx.sync();
        // A new inode with the same size and mtime (an editor's save: write
        // a new file, rename it over the old one).
        let old_ino = fs::metadata(fx.root().join("d/e/c")).unwrap().ino();
        fx.write("d/e/c.new", b"c", 3_000);
        fs::rename(fx.root().join("d/e/c.new"), fx.root().join("d/e/c")).unwrap();
        fx.set_mtime("d/e", 3); // the directory changed too; keep the test on the file
        assert_ne!(
            fs::metadata(fx.root().join("d/e/c")).unwrap().ino(),
            old_ino
        );
        let plan = fx.plan();
        let hash = *blake3::hash(b"c").as_bytes();
        let got = actions(&plan);
        assert!(
            got.contains(&("d/e/c".to_string(), Action::MetadataOnly { hash })),
            "{got:?}"
        );
        assert!(got.contains(&("d/e".to_string(), Action::New)), "{got:?}");
    }

    #[test]
    fn kind_changes_and_symlink_retargets_are_new() {
        let mut fx = Fixture::new();
        fx.sync();
        fs::remove_dir(fx.root().join("empty")).unwrap();
        fx.write("empty", b"now a file", 9);
        fs::remove_file(fx.root().join("link")).unwrap();
        symlink("d", fx.root().join("link")).unwrap();
        let plan = fx.plan();
        assert_eq!(
            actions(&plan),
            [
                ("empty".to_string(), Action::New),
                ("link".to_string(), Action::New)
            ]
        );
    }

    /// The plan merges the scan and the index in path-bytes order: names
    /// that sort around `/` (`a b`, `a.txt`, `a/x`, `a0`, `ab`) and paths
    /// added, removed and kept between them must each get their own verdict.
    #[test]
    fn merge_in_path_order_matches_every_path_to_its_own_entry() {
        let mut fx = Fixture::new();
        fs::create_dir_all(fx.root().join("m/a")).unwrap();
        for name in ["m/a b", "m/a.txt", "m/a/x", "m/a0", "m/ab", "m/b"] {
            fx.write(name, name.as_bytes(), 100);
        }
        fx.sync();
        // Removed around kept ones, added between them, one changed.
        fs::remove_file(fx.root().join("m/a.txt")).unwrap();
        fs::remove_file(fx.root().join("m/ab")).unwrap();
        fx.write("m/a-new", b"new", 100);
        fx.write("m/a/w", b"new", 100);
        fx.write("m/a0", b"changed", 100);
        fx.write("m/aa", b"new", 100);
        let plan = fx.plan();
        let mut got: Vec<_> = actions(&plan)
            .into_iter()
            .filter(|(p, _)| p.starts_with("m/"))
            .collect();
        got.sort_by(|a, b| a.0.cmp(&b.0));
        assert_eq!(
            got,
            [
                ("m/a".to_string(), Action::New),
                ("m/a-new".to_string(), Action::New),
                ("m/a/w".to_string(), Action::New),
                ("m/a0".to_string(), Action::Changed),
                ("m/aa".to_string(), Action::New),
            ]
        );
        let deleted: Vec<_> = plan.deleted.iter().map(|p| p.to_string()).collect();
        assert_eq!(deleted, ["m/a.txt", "m/ab"]);
        // The fixture's 7 and `m/a b`, `m/a/x`, `m/b` (`m` and `m/a`, whose
        // mtimes moved as entries came and went, are sent again).
        assert_eq!(plan.unchanged, 7 + 3);
        // Items keep scan order: parents before children.
        let paths: Vec<_> = plan.items.entries().map(|e| e.path.clone()).collect();
        let mut sorted = paths.clone();
        sorted.sort();
        assert_eq!(paths, sorted);
    }

    #[test]
    fn deletions_are_deepest_first() {
        let mut fx = Fixture::new();
        fx.sync();
        fs::remove_dir_all(fx.root().join("d")).unwrap();
        fs::remove_file(fx.root().join("a.txt")).unwrap();
        let plan = fx.plan();
        let deleted: Vec<_> = plan.deleted.iter().map(|p| p.to_string()).collect();
        assert_eq!(deleted, ["d/e/c", "d/b.bin", "d/e", "a.txt", "d"]);
        fx.sync();
        assert_eq!(fx.index.len().unwrap(), 2); // `empty` and `link`
        assert!(fx.plan().deleted.is_empty());
    }

    #[test]
    fn unreadable_directory_does_not_delete_its_contents() {
        let mut fx = Fixture::new();
        fx.sync();
        // Tests run as root, so an unreadable directory is simulated: the scan
        // saw `d` but could not list it.
        let mut scan = scan(&fx.root(), &[]).unwrap();
        scan.entries
            .retain(|e| !e.path.starts_with(&rel("d")) || e.path == rel("d"));
        scan.errors.push(ScanProblem {
            path: "d".into(),
            message: "cannot read".into(),
        });
        fs::remove_file(fx.root().join("a.txt")).unwrap();
        scan.entries.retain(|e| e.path != rel("a.txt"));
        let plan = fx.index.plan(&fx.source(), scan).unwrap();
        let deleted: Vec<_> = plan.deleted.iter().map(|p| p.to_string()).collect();
        assert_eq!(deleted, ["a.txt"]);
    }

    #[test]
    fn vanished_file_is_a_problem_not_an_item_nor_a_deletion() {
        let mut fx = Fixture::new();
        fx.sync();
        fx.set_mtime("a.txt", 4_000);
        let scan = scan(&fx.root(), &[]).unwrap();
        fs::remove_file(fx.root().join("a.txt")).unwrap();
        let plan = fx.index.plan(&fx.source(), scan).unwrap();
        assert!(plan.items.is_empty(), "{:?}", actions(&plan));
        assert!(plan.deleted.is_empty());
        assert_eq!(plan.problems.len(), 1);
        assert_eq!(plan.problems[0].path, Path::new("a.txt"));
        assert_eq!(plan.unchanged, 6);
    }

    #[test]
    fn targets_plan_independently() {
        let mut fx = Fixture::new();
        fx.sync();
        let other = Index::open(&fx.dir.path().join("state/index.db"), "r/other").unwrap();
        let scan = scan(&fx.root(), &[]).unwrap();
        let plan = other.plan(&fx.source(), scan).unwrap();
        assert_eq!(plan.items.len(), 7);
        assert!(plan.items.iter().all(|(_, action)| action == Action::New));
    }
}
