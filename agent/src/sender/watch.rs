//! Watch mode (`ferry send --watch`): inotify on the source tree (through the
//! `notify` crate, one recursive watch that adds a watch for each directory
//! created or moved in), events gathered until they settle, and a run of
//! what changed.
//!
//! The handler runs on notify's own thread and only records *which paths*
//! changed and when (`Pending`); the sender's loop takes a [`Batch`] of
//! the paths that have been quiet for the watch delay, so a file still being
//! written waits for the next batch. Everything the events cannot vouch for
//! becomes a full scan: the kernel's queue overflowed, a watch could not be
//! added (`fs.inotify.max_user_watches`), or more paths changed between two
//! batches than `Pending` keeps ([`DEFAULT_QUEUE_LIMIT`]).
//!
//! Paths below the never-scanned directories (the state directory,
//! `--keep-copies`, an embedded `--store` inside the source) are dropped as
//! they arrive: the run's own writes there never trigger another run.

use std::collections::{BTreeMap, BTreeSet};
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::{Duration, Instant};

use notify::event::{AccessKind, AccessMode, EventKind};
use notify::{RecommendedWatcher, RecursiveMode, Watcher as _};
use tokio::sync::Notify;

use crate::scan::ScanRoot;

/// Changed paths kept between two batches; past that the batch is a full
/// scan (cheaper than a scan per directory, and no path list grows without
/// bound). `FERRY_WATCH_QUEUE_LIMIT` lowers it, for tests.
pub const DEFAULT_QUEUE_LIMIT: usize = 100_000;

/// Why watching could not start.
#[derive(Debug, thiserror::Error)]
pub enum WatchError {
    #[error("cannot watch {}; the sender goes on with periodic full scans only", path.display())]
    Start {
        path: PathBuf,
        #[source]
        source: notify::Error,
    },
}

/// What a triggered run should look at.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Batch {
    /// Everything: the events cannot be trusted (overflow, a watch not added).
    Full,
    /// The paths (absolute) that changed and have been quiet for the delay.
    Paths(Vec<PathBuf>),
}

/// Changed paths not yet taken, each with when it last changed.
#[derive(Debug, Default)]
struct Pending {
    paths: BTreeMap<PathBuf, Instant>,
    /// Set when the events lost something: the next batch is a full scan.
    overflow: Option<Instant>,
    /// The warning for a lost event was already logged.
    warned: bool,
    /// A directory could not be watched (out of inotify watches): its
    /// changes would go unseen, so the sender falls back to periodic runs.
    out_of_watches: bool,
}

/// A running watch of the source tree.
pub struct SourceWatch {
    /// Dropping it stops notify's thread and removes every watch.
    _watcher: RecommendedWatcher,
    shared: Arc<Shared>,
}

struct Shared {
    pending: Mutex<Pending>,
    changed: Notify,
    root: PathBuf,
    exclude: Vec<PathBuf>,
    limit: usize,
}

impl Shared {
    fn lock(&self) -> MutexGuard<'_, Pending> {
        // A handler that panicked cannot leave `Pending` half-updated in a
        // way that matters: every field is valid on its own.
        self.pending
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
    }

    fn handle(&self, event: notify::Result<notify::Event>) {
        let now = Instant::now();
        let mut pending = self.lock();
        match event {
            Ok(event) if event.need_rescan() => {
                lost(&mut pending, now, "the inotify queue overflowed")
            }
            Ok(event) => {
                if !is_change(&event.kind) {
                    return;
                }
                for path in event.paths {
                    if !path.starts_with(&self.root)
                        || self.exclude.iter().any(|x| path.starts_with(x))
                    {
                        continue;
                    }
                    pending.paths.insert(path, now);
                }
                if pending.paths.len() > self.limit {
                    lost(
                        &mut pending,
                        now,
                        &format!("more than {} paths changed at once", self.limit),
                    );
                }
            }
            Err(e) => {
                let why = match e.kind {
                    notify::ErrorKind::MaxFilesWatch => {
                        pending.out_of_watches = true;
                        "out of inotify watches (raise fs.inotify.max_user_watches)".to_string()
                    }
                    _ => crate::chain::chain(&e),
                };
                lost(&mut pending, now, &why);
            }
        }
        drop(pending);
        self.changed.notify_one();
    }
}

/// Events were lost: warn once, and make the next batch a full scan.
fn lost(pending: &mut Pending, now: Instant, why: &str) {
    if !pending.warned {
        tracing::warn!("watch: {why}; doing a full scan");
        pending.warned = true;
    }
    pending.overflow = Some(now);
    pending.paths.clear();
}

/// Whether an event can mean a change of content, metadata or names (not a
/// mere open or read, which the run itself causes).
fn is_change(kind: &EventKind) -> bool {
    match kind {
        EventKind::Access(AccessKind::Close(AccessMode::Write)) => true,
        EventKind::Access(_) => false,
        _ => true,
    }
}

impl SourceWatch {
    /// Watches `root` (canonical) recursively, ignoring paths below `exclude`
    /// (absolute, canonical).
    pub fn start(root: &Path, exclude: &[PathBuf]) -> Result<SourceWatch, WatchError> {
        let limit = std::env::var("FERRY_WATCH_QUEUE_LIMIT")
            .ok()
            .and_then(|v| v.parse().ok())
            .unwrap_or(DEFAULT_QUEUE_LIMIT);
        let shared = Arc::new(Shared {
            pending: Mutex::new(Pending::default()),
            changed: Notify::new(),
            root: root.to_path_buf(),
            exclude: exclude.to_vec(),
            limit,
        });
        let handler = {
            let shared = shared.clone();
            move |event| shared.handle(event)
        };
        let start = |source| WatchError::Start {
            path: root.to_path_buf(),
            source,
        };
        let config = notify::Config::default().with_follow_symlinks(false);
        let mut watcher = RecommendedWatcher::new(handler, config).map_err(start)?;
        watcher
            .watch(root, RecursiveMode::Recursive)
            .map_err(start)?;
        Ok(SourceWatch {
            _watcher: watcher,
            shared,
        })
    }

    /// Forgets every change seen so far: a full scan is starting, and it
    /// sees them all.
    pub fn clear(&self) {
        let mut pending = self.shared.lock();
        pending.paths.clear();
        pending.overflow = None;
        pending.warned = false;
    }

    /// Waits until some changes have been quiet for `delay` and takes them.
    /// A path changed again within the delay stays for a later batch.
    pub async fn next_batch(&self, delay: Duration) -> Batch {
        loop {
            let wait = {
                let mut pending = self.shared.lock();
                match take(&mut pending, Instant::now(), delay) {
                    Ok(batch) => return batch,
                    Err(wait) => wait,
                }
            };
            match wait {
                Some(wait) => tokio::time::sleep(wait).await,
                None => self.shared.changed.notified().await,
            }
        }
    }

    /// Whether a directory could not be watched: events no longer cover
    /// the whole tree, and only periodic full scans can be trusted.
    pub fn out_of_watches(&self) -> bool {
        self.shared.lock().out_of_watches
    }
}

/// The directories a run triggered by `changed` (absolute paths below
/// `source`) scans: the directory listing each changed path (a change of
/// content, a name added, removed or renamed there), and everything below
/// each changed path that is a directory now (created, moved in or renamed
/// within the tree). A listing directory that no longer exists is replaced
/// by its nearest existing parent, where its absence is seen. Roots never
/// overlap.
pub fn scan_roots(source: &Path, changed: &[PathBuf]) -> Vec<ScanRoot> {
    let mut listed: BTreeSet<PathBuf> = BTreeSet::new();
    let mut below: BTreeSet<PathBuf> = BTreeSet::new();
    for path in changed {
        let Ok(rel) = path.strip_prefix(source) else {
            continue;
        };
        let mut dir = rel.parent().unwrap_or(Path::new(""));
        while !is_real_dir(source, dir) {
            dir = dir.parent().unwrap_or(Path::new(""));
        }
        listed.insert(dir.to_path_buf());
        if !rel.as_os_str().is_empty() && is_real_dir(source, rel) {
            below.insert(rel.to_path_buf());
        }
    }
    // A directory inside another one scanned whole adds nothing.
    let under = |p: &Path, set: &BTreeSet<PathBuf>| {
        p.ancestors()
            .skip(1)
            .any(|a| set.contains(a) && !a.as_os_str().is_empty())
    };
    let whole: Vec<PathBuf> = below
        .iter()
        .filter(|p| !under(p, &below))
        .cloned()
        .collect();
    let whole_set: BTreeSet<PathBuf> = whole.iter().cloned().collect();
    let mut roots: Vec<ScanRoot> = listed
        .into_iter()
        .filter(|p| !whole_set.contains(p) && !under(p, &whole_set))
        .map(|path| ScanRoot {
            path,
            recursive: false,
        })
        .collect();
    roots.extend(whole.into_iter().map(|path| ScanRoot {
        path,
        recursive: true,
    }));
    roots
}

/// Whether `rel` below `source` is a directory reached without any symlink
/// (the root itself is).
fn is_real_dir(source: &Path, rel: &Path) -> bool {
    let mut at = source.to_path_buf();
    for part in rel.components() {
        at.push(part);
        match std::fs::symlink_metadata(&at) {
            Ok(meta) if meta.is_dir() => {}
            _ => return false,
        }
    }
    true
}

/// The batch of what has been quiet for `delay` at `now`, or how long to
/// wait for the next one (`None`: until something changes).
fn take(pending: &mut Pending, now: Instant, delay: Duration) -> Result<Batch, Option<Duration>> {
    if let Some(at) = pending.overflow {
        let quiet = now.saturating_duration_since(at);
        if quiet >= delay {
            pending.overflow = None;
            pending.warned = false;
            pending.paths.clear();
            return Ok(Batch::Full);
        }
        return Err(Some(delay - quiet));
    }
    let settled: Vec<PathBuf> = pending
        .paths
        .iter()
        .filter(|(_, at)| now.saturating_duration_since(**at) >= delay)
        .map(|(path, _)| path.clone())
        .collect();
    if !settled.is_empty() {
        for path in &settled {
            pending.paths.remove(path);
        }
        return Ok(Batch::Paths(settled));
    }
    let next = pending
        .paths
        .values()
        .map(|at| delay.saturating_sub(now.saturating_duration_since(*at)))
        .min();
    Err(next)
}

#[cfg(test)]
#[allow(clippy::unwrap_used, clippy::expect_used)] // tests fail loudly
mod tests {
    use super::*;

    const DELAY: Duration = Duration::from_secs(2);

    #[test]
    fn a_path_changed_within_the_delay_waits_for_the_next_batch() {
        let t0 = Instant::now();
        let mut pending = Pending::default();
        pending.paths.insert("/s/a".into(), t0);
        pending
            .paths
            .insert("/s/b".into(), t0 + Duration::from_secs(1));
        // Nothing is quiet yet: wait the rest of a's delay.
        assert_eq!(
            take(&mut pending, t0 + Duration::from_millis(500), DELAY),
            Err(Some(Duration::from_millis(1500)))
        );
        // a is quiet, b changed one second ago: only a.
        assert_eq!(
            take(&mut pending, t0 + DELAY, DELAY),
            Ok(Batch::Paths(vec!["/s/a".into()]))
        );
        assert_eq!(
            take(&mut pending, t0 + DELAY, DELAY),
            Err(Some(Duration::from_secs(1)))
        );
        assert_eq!(
            take(&mut pending, t0 + Duration::from_secs(3), DELAY),
            Ok(Batch::Paths(vec!["/s/b".into()]))
        );
        assert_eq!(
            take(&mut pending, t0 + Duration::from_secs(9), DELAY),
            Err(None)
        );
    }

    #[test]
    fn lost_events_make_the_next_batch_a_full_scan() {
        let t0 = Instant::now();
        let mut pending = Pending::default();
        pending.paths.insert("/s/a".into(), t0);
        lost(&mut pending, t0, "test");
        assert!(pending.paths.is_empty());
        assert_eq!(take(&mut pending, t0, DELAY), Err(Some(DELAY)));
        assert_eq!(take(&mut pending, t0 + DELAY, DELAY), Ok(Batch::Full));
        assert_eq!(take(&mut pending, t0 + DELAY, DELAY), Err(None));
    }

    #[test]
    fn running_out_of_watches_is_a_full_scan_and_says_so() {
        let shared = Shared {
            pending: Mutex::new(Pending::default()),
            changed: Notify::new(),
            root: "/s".into(),
            exclude: vec![],
            limit: 10,
        };
        shared.handle(Err(notify::Error::new(notify::ErrorKind::MaxFilesWatch)));
        let mut pending = shared.lock();
        assert!(pending.out_of_watches);
        let later = Instant::now() + DELAY;
        assert_eq!(take(&mut pending, later, DELAY), Ok(Batch::Full));
    }

    #[test]
    fn opening_or_reading_is_not_a_change() {
        assert!(!is_change(&EventKind::Access(AccessKind::Open(
            AccessMode::Any
        ))));
        assert!(!is_change(&EventKind::Access(AccessKind::Close(
            AccessMode::Read
        ))));
        assert!(is_change(&EventKind::Access(AccessKind::Close(
            AccessMode::Write
        ))));
        assert!(is_change(&EventKind::Remove(
            notify::event::RemoveKind::File
        )));
    }

    fn roots(source: &Path, changed: &[&str]) -> Vec<(String, bool)> {
        let changed: Vec<PathBuf> = changed.iter().map(|c| source.join(c)).collect();
        scan_roots(source, &changed)
            .into_iter()
            .map(|r| (r.path.display().to_string(), r.recursive))
            .collect()
    }

    #[test]
    fn scan_roots_are_the_listing_directories_and_new_directories_whole() {
        let dir = tempfile::tempdir().unwrap();
        let source = dir.path();
        std::fs::create_dir_all(source.join("a/b/c")).unwrap();
        std::fs::create_dir_all(source.join("moved-in/x")).unwrap();
        std::os::unix::fs::symlink("a", source.join("link")).unwrap();
        // A file changed at the top and deep down; a directory moved in
        // (and a change inside it: covered by it); a deleted directory
        // (seen from its nearest parent); a path through a symlink.
        let got = roots(
            source,
            &[
                "top.txt",
                "a/b/c/f",
                "moved-in",
                "moved-in/x/y",
                "a/gone/deeper/f",
                "link/b/f",
            ],
        );
        assert_eq!(
            got,
            vec![
                (String::new(), false),
                ("a".into(), false),
                ("a/b/c".into(), false),
                ("moved-in".into(), true),
            ]
        );
    }

    #[tokio::test]
    async fn changes_below_excluded_directories_are_ignored() {
        let dir = tempfile::tempdir().unwrap();
        let root = dir.path().canonicalize().unwrap();
        let copies = root.join("copies");
        std::fs::create_dir(&copies).unwrap();
        let watch = SourceWatch::start(&root, std::slice::from_ref(&copies)).unwrap();
        std::fs::write(copies.join("x"), b"x").unwrap();
        std::fs::write(root.join("a"), b"a").unwrap();
        let batch = tokio::time::timeout(Duration::from_secs(60), watch.next_batch(Duration::ZERO))
            .await
            .unwrap();
        assert_eq!(batch, Batch::Paths(vec![root.join("a")]));
    }
}
