//! Retention: which old versions the receiver keeps, and pruning the rest.
//!
//! Retention is the receiver's alone: a policy from its own settings, run on
//! its own schedule; no message of a sender triggers or widens it. Only
//! versions that are no longer current are candidates. The current mirror is
//! never touched, and only bytes inside `.ferry/versions` are ever removed.
//!
//! A version's age is the time since it stopped being current (the start of
//! the run that replaced or deleted it). Per path, a version is kept if any
//! enabled rule keeps it:
//!
//! - `keep_versions = N`: the N newest old versions.
//! - `keep_for = D` (not staggered): versions younger than D.
//! - `staggered` (as Syncthing's): one version per 30 s for the first hour,
//!   one per hour for the first day, one per day for the first 30 days, one
//!   per week after that; with `keep_for = D`, nothing older than D.
//!
//! With no rule enabled every version is kept.

use std::collections::{HashMap, HashSet};
use std::path::PathBuf;
use std::time::Duration;

use ferry_proto::{Name, RelPath};
use rusqlite::params;

use super::error::StoreError;
use super::{Namespace, Store};

/// The receiver's retention policy. The default keeps everything.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Retention {
    /// Keep the newest N old versions of each path.
    pub keep_versions: Option<u32>,
    /// Keep versions younger than this (staggered: the maximum age).
    pub keep_for: Option<Duration>,
    /// Thin versions out with age, as Syncthing's staggered versioning.
    pub staggered: bool,
}

impl Retention {
    /// True if this policy never removes anything.
    pub fn keeps_everything(&self) -> bool {
        self.keep_versions.is_none() && self.keep_for.is_none() && !self.staggered
    }
}

/// Why pruning failed.
#[derive(Debug, thiserror::Error)]
pub enum RetentionError {
    #[error("pruning old versions failed")]
    Store(#[from] StoreError),
}

/// What one pruning pass did.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct PruneReport {
    /// Version rows removed from the catalog.
    pub versions_removed: u64,
    /// Files and symlinks removed from the versions area.
    pub files_removed: u64,
    /// Bytes of those files.
    pub bytes_freed: u64,
}

/// One old version of a path, as retention sees it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct KeepCandidate {
    /// The version's id.
    pub id: i64,
    /// When it stopped being current, ms since the Unix epoch.
    pub replaced_ms: i64,
}

const SECOND: i64 = 1000;
const HOUR: i64 = 3600 * SECOND;
const DAY: i64 = 24 * HOUR;

/// The staggered spacing for a version of this age.
fn step(age_ms: i64) -> i64 {
    if age_ms < HOUR {
        30 * SECOND
    } else if age_ms < DAY {
        HOUR
    } else if age_ms < 30 * DAY {
        DAY
    } else {
        7 * DAY
    }
}

fn millis(d: Duration) -> i64 {
    i64::try_from(d.as_millis()).unwrap_or(i64::MAX)
}

/// The ids of `candidates` (old versions of one path, any order) that
/// `policy` keeps at time `now_ms`.
pub fn select_kept(policy: &Retention, candidates: &[KeepCandidate], now_ms: i64) -> HashSet<i64> {
    let mut newest_first = candidates.to_vec();
    newest_first.sort_by(|a, b| b.replaced_ms.cmp(&a.replaced_ms).then(b.id.cmp(&a.id)));
    if policy.keeps_everything() {
        return newest_first.iter().map(|c| c.id).collect();
    }
    let mut kept = HashSet::new();
    if let Some(n) = policy.keep_versions {
        let n = usize::try_from(n).unwrap_or(usize::MAX);
        kept.extend(newest_first.iter().take(n).map(|c| c.id));
    }
    let max_age = policy.keep_for.map(millis);
    if policy.staggered {
        // One version per slot: slots are `step`-long spans of time aligned
        // to the epoch, so a version keeps its slot as time passes; the
        // newest version of each slot is kept.
        let mut slots: HashSet<(i64, i64)> = HashSet::new();
        for c in &newest_first {
            let age = now_ms.saturating_sub(c.replaced_ms);
            if max_age.is_some_and(|max| age > max) {
                continue;
            }
            let s = step(age);
            if slots.insert((s, c.replaced_ms.div_euclid(s))) {
                kept.insert(c.id);
            }
        }
    } else if let Some(max) = max_age {
        kept.extend(
            newest_first
                .iter()
                .filter(|c| now_ms.saturating_sub(c.replaced_ms) < max)
                .map(|c| c.id),
        );
    }
    kept
}

/// An old version row, with what pruning needs.
struct OldRow {
    id: i64,
    sender_id: i64,
    sender: String,
    folder: String,
    path: Vec<u8>,
    kind: String,
    replaced_ms: i64,
}

impl Store {
    /// Applies `policy` at time `now_ms`: removes the old versions it does
    /// not keep (catalog rows first, then their bytes in the versions area).
    /// Bytes a kept version still shares are left in place.
    pub fn prune(&self, policy: &Retention, now_ms: i64) -> Result<PruneReport, RetentionError> {
        let mut report = PruneReport::default();
        if policy.keeps_everything() {
            return Ok(report);
        }
        let _write = self.write_lock();
        let rows = self.old_rows(now_ms)?;
        let mut groups: HashMap<(i64, String, Vec<u8>), Vec<&OldRow>> = HashMap::new();
        for row in &rows {
            groups
                .entry((row.sender_id, row.folder.clone(), row.path.clone()))
                .or_default()
                .push(row);
        }
        let versions_root = self.root.join(".ferry").join("versions");
        let mut drop_ids: Vec<i64> = Vec::new();
        let mut drop_files: Vec<PathBuf> = Vec::new();
        let mut drop_dirs: Vec<PathBuf> = Vec::new();
        for group in groups.values() {
            let candidates: Vec<KeepCandidate> = group
                .iter()
                .map(|r| KeepCandidate {
                    id: r.id,
                    replaced_ms: r.replaced_ms,
                })
                .collect();
            let kept = select_kept(policy, &candidates, now_ms);
            if kept.len() == candidates.len() {
                continue;
            }
            let first = group[0];
            let (Ok(sender), Ok(folder), Ok(path)) = (
                Name::new(first.sender.clone()),
                Name::new(first.folder.clone()),
                RelPath::from_bytes(first.path.clone()),
            ) else {
                tracing::warn!(id = first.id, "skipping a version with an unreadable name");
                continue;
            };
            let ns = Namespace {
                sender_id: first.sender_id,
                sender,
                folder,
            };
            let all = self.versions(&ns, &path)?;
            // Bytes shared with a kept (or current) version stay, and so does
            // the row that owns them, so the older row can still find them.
            let kept_locations: HashSet<&PathBuf> = all
                .iter()
                .filter(|v| v.current || kept.contains(&v.id))
                .map(|v| &v.location)
                .collect();
            for v in &all {
                if self.place.shares_by_hash() {
                    // A bucket store's bytes are blobs shared by hash: the
                    // packs no kept version uses are collected below.
                    if !(v.current || kept.contains(&v.id)) {
                        drop_ids.push(v.id);
                    }
                    continue;
                }
                // A directory without an archive of its own owns no bytes
                // (its location is the mirror's): nothing else depends on it.
                let owns_nothing = v.kind == "dir" && !v.location.starts_with(&versions_root);
                let shares_kept = !owns_nothing && kept_locations.contains(&v.location);
                if v.current || kept.contains(&v.id) || shares_kept {
                    continue;
                }
                drop_ids.push(v.id);
                if !v.location.starts_with(&versions_root) {
                    continue; // the mirror's bytes, or gone: never removed here
                }
                if group.iter().any(|r| r.id == v.id && r.kind == "dir") {
                    drop_dirs.push(v.location.clone());
                } else {
                    drop_files.push(v.location.clone());
                }
            }
        }
        if drop_ids.is_empty() {
            return Ok(report);
        }
        self.delete_rows(&drop_ids)?;
        report.versions_removed = drop_ids.len() as u64;
        self.place.free(self, drop_files, drop_dirs, &mut report)?;
        Ok(report)
    }

    /// What retention dropped in a local store: the versions area's `files`,
    /// then its `dirs` once empty.
    pub(in crate::store) fn free_local(
        &self,
        mut drop_files: Vec<PathBuf>,
        mut drop_dirs: Vec<PathBuf>,
        report: &mut PruneReport,
    ) -> Result<(), StoreError> {
        drop_files.sort();
        drop_files.dedup();
        for file in drop_files {
            match self.tree.lstat(&file)? {
                Some(m) if !m.is_dir() => {
                    self.tree.remove_file(&file)?;
                    report.files_removed += 1;
                    report.bytes_freed += if m.is_file() { m.len() } else { 0 };
                }
                _ => {}
            }
        }
        // Archived directories: deepest first, and only once empty (their
        // children are versions of their own).
        drop_dirs.sort_by_key(|d| std::cmp::Reverse(d.components().count()));
        for dir in drop_dirs {
            if self.tree.lstat(&dir)?.is_some_and(|m| m.is_dir()) {
                let _ = self.tree.remove_dir(&dir);
            }
        }
        Ok(())
    }

    fn old_rows(&self, now_ms: i64) -> Result<Vec<OldRow>, StoreError> {
        let cat = self.catalog();
        let read = || -> rusqlite::Result<Vec<OldRow>> {
            let mut stmt = cat.conn().prepare(
                "SELECT v.id, v.sender_id, s.name, v.folder, v.path, v.kind, r.started_ms
                 FROM versions v JOIN senders s ON s.id = v.sender_id
                 LEFT JOIN runs r ON r.id = v.replaced_run
                 WHERE v.replaced_run IS NOT NULL",
            )?;
            let rows = stmt.query_map([], |r| {
                Ok(OldRow {
                    id: r.get(0)?,
                    sender_id: r.get(1)?,
                    sender: r.get(2)?,
                    folder: r.get(3)?,
                    path: r.get(4)?,
                    kind: r.get(5)?,
                    // Unknown replacement time: treat as now (kept longest).
                    replaced_ms: r.get::<_, Option<i64>>(6)?.unwrap_or(now_ms),
                })
            })?;
            rows.collect()
        };
        read().map_err(|e| cat.err(e))
    }

    fn delete_rows(&self, ids: &[i64]) -> Result<(), StoreError> {
        let mut cat = self.catalog();
        let path = cat.path().to_path_buf();
        let err = |source| StoreError::Catalog {
            path: path.clone(),
            source,
        };
        let conn = cat.conn_mut();
        let tx = conn.transaction().map_err(err)?;
        for id in ids {
            tx.execute(
                "DELETE FROM versions WHERE id = ?1 AND replaced_run IS NOT NULL",
                params![id],
            )
            .map_err(err)?;
        }
        tx.commit().map_err(err)
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used)] // a failing unwrap is a failing test
mod tests {
    use super::super::tests::{fixture, put_file};
    use super::*;
    use ferry_proto::RunReport;
    use std::fs;

    fn c(id: i64, replaced_ms: i64) -> KeepCandidate {
        KeepCandidate { id, replaced_ms }
    }

    fn sorted(set: HashSet<i64>) -> Vec<i64> {
        let mut v: Vec<i64> = set.into_iter().collect();
        v.sort();
        v
    }

    #[test]
    fn default_keeps_everything() {
        let all = [c(1, 0), c(2, 5)];
        assert_eq!(
            sorted(select_kept(&Retention::default(), &all, 1 << 40)),
            [1, 2]
        );
    }

    #[test]
    fn keep_last_n_and_younger_than_are_a_union() {
        let now = 100 * DAY;
        let all = [
            c(1, now - 50 * DAY),
            c(2, now - 20 * DAY),
            c(3, now - DAY),
            c(4, now - HOUR),
        ];
        let last2 = Retention {
            keep_versions: Some(2),
            ..Default::default()
        };
        assert_eq!(sorted(select_kept(&last2, &all, now)), [3, 4]);
        let young = Retention {
            keep_for: Some(Duration::from_secs(30 * 86400)),
            ..Default::default()
        };
        assert_eq!(sorted(select_kept(&young, &all, now)), [2, 3, 4]);
        let both = Retention {
            keep_versions: Some(1),
            keep_for: Some(Duration::from_secs(2 * 86400)),
            ..Default::default()
        };
        assert_eq!(sorted(select_kept(&both, &all, now)), [3, 4]);
        let zero = Retention {
            keep_versions: Some(0),
            ..Default::default()
        };
        assert!(select_kept(&zero, &all, now).is_empty());
    }

    #[test]
    fn staggered_thins_out_with_age() {
        let now = 400 * DAY;
        let mut all = Vec::new();
        // One version every 10 minutes for the last 3 days.
        for i in 0..(3 * 24 * 6) {
            all.push(c(i, now - i * 10 * 60 * SECOND));
        }
        // One a day from 3 to 100 days ago.
        for d in 3..100 {
            all.push(c(10_000 + d, now - d * DAY - 7));
        }
        let policy = Retention {
            staggered: true,
            keep_for: Some(Duration::from_secs(60 * 86400)),
            ..Default::default()
        };
        let kept = select_kept(&policy, &all, now);
        let ages: Vec<i64> = all
            .iter()
            .filter(|c| kept.contains(&c.id))
            .map(|c| now - c.replaced_ms)
            .collect();
        // Everything in the first hour (spaced 10 min > 30 s): 6 versions.
        assert_eq!(ages.iter().filter(|a| **a < HOUR).count(), 6);
        // One per hour for the rest of the first day.
        let first_day = ages.iter().filter(|a| **a >= HOUR && **a < DAY).count();
        assert!((22..=24).contains(&first_day), "{first_day}");
        // About one a day from day 1 to 30, one a week after, none after 60.
        let month = ages.iter().filter(|a| **a >= DAY && **a < 30 * DAY).count();
        assert!((28..=31).contains(&month), "{month}");
        let later = ages.iter().filter(|a| **a >= 30 * DAY).count();
        assert!((4..=6).contains(&later), "{later}");
        assert!(ages.iter().all(|a| *a <= 60 * DAY));
    }

    #[test]
    fn prune_removes_only_what_the_policy_drops() {
        let (dir, store, ns) = fixture();
        let mut run = 0;
        for (i, content) in ["v1", "v2", "v3", "v4"].iter().enumerate() {
            run = store.begin_run(&ns).unwrap();
            put_file(&store, &ns, run, "f", content.as_bytes(), i as i64);
            put_file(
                &store,
                &ns,
                run,
                "other",
                format!("o{i}").as_bytes(),
                i as i64,
            );
            store
                .finish_run(
                    &ns,
                    run,
                    &RunReport::default(),
                    0,
                    crate::store::RunEnding::Complete,
                )
                .unwrap();
        }
        let _ = run;
        let old = |store: &Store| {
            store
                .versions(&ns, &super::super::tests::rel("f"))
                .unwrap()
                .into_iter()
                .filter(|v| !v.current)
                .collect::<Vec<_>>()
        };
        assert_eq!(old(&store).len(), 3);
        let policy = Retention {
            keep_versions: Some(1),
            ..Default::default()
        };
        let report = store.prune(&policy, super::super::now_ms()).unwrap();
        assert_eq!(report.versions_removed, 4, "{report:?}"); // 2 of f, 2 of other
        assert_eq!(report.files_removed, 4);
        let left = old(&store);
        assert_eq!(left.len(), 1);
        assert_eq!(fs::read(&left[0].location).unwrap(), b"v3");
        // The current mirror is untouched.
        assert_eq!(
            fs::read(dir.path().join("store/lap/docs/f")).unwrap(),
            b"v4"
        );
        assert_eq!(
            fs::read(dir.path().join("store/lap/docs/other")).unwrap(),
            b"o3"
        );
        // A second pass has nothing to do.
        let again = store.prune(&policy, super::super::now_ms()).unwrap();
        assert_eq!(again, PruneReport::default());
    }
    /// A directory's old metadata versions (rows without an archive) are
    /// pruned as a file's are; the directory and what it holds stay.
    #[test]
    fn prune_drops_old_directory_metadata_versions() {
        let (dir, store, ns) = fixture();
        for i in 1..=3 {
            let run = store.begin_run(&ns).unwrap();
            let entry = ferry_proto::Entry {
                path: super::super::tests::rel("d"),
                kind: ferry_proto::EntryKind::Dir,
                mtime_ns: i,
                mode: 0o700,
            };
            store.put_dir(&ns, run, &entry).unwrap();
            if i == 1 {
                put_file(&store, &ns, run, "d/f", b"f", 1);
            }
            store
                .finish_run(
                    &ns,
                    run,
                    &RunReport::default(),
                    0,
                    crate::store::RunEnding::Complete,
                )
                .unwrap();
        }
        let d = super::super::tests::rel("d");
        assert_eq!(store.versions(&ns, &d).unwrap().len(), 3);
        let policy = Retention {
            keep_versions: Some(1),
            ..Default::default()
        };
        let report = store.prune(&policy, super::super::now_ms()).unwrap();
        assert_eq!(report.versions_removed, 1, "{report:?}");
        let left: Vec<i64> = store
            .versions(&ns, &d)
            .unwrap()
            .iter()
            .map(|v| v.mtime_ns)
            .collect();
        assert_eq!(left, [3, 2]);
        assert!(dir.path().join("store/lap/docs/d/f").is_file());
    }
}
