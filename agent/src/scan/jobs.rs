//! The stack of jobs the walk's threads share ("read this directory", "stat
//! these names of that directory"), and what every thread reads beside it.
//!
//! Stat jobs are taken before read jobs, which bounds the descriptors held
//! open; a job being worked on is counted until it is dropped, so the walk
//! ends exactly when the stack is empty and nobody can push to it.

use std::os::fd::OwnedFd;
use std::path::PathBuf;
use std::sync::{Arc, Condvar, Mutex, MutexGuard, PoisonError};

use super::exclude::{DirRules, ExcludeRules};
use super::SourceDir;

/// An open directory whose entries are being stat'ed.
pub(super) struct OpenDir {
    /// Its path relative to the scanned root (empty for the root).
    pub(super) rel: Vec<u8>,
    /// The descriptor its entries are stat'ed against.
    pub(super) fd: OwnedFd,
    /// The `.ferryignore` patterns that apply to its entries.
    pub(super) ignore: Option<Arc<DirRules>>,
    /// Whether its subdirectories are walked too.
    pub(super) descend: bool,
}

/// One unit of work.
pub(super) enum Job {
    /// Open and list a directory (relative path), which must be the one
    /// its parent listed (device and inode; `None` for the root).
    Read {
        rel: Vec<u8>,
        expect: Option<(u64, u64)>,
        ignore: Option<Arc<DirRules>>,
        descend: bool,
    },
    /// Stat these names (already checked) of an open directory.
    Stat {
        dir: Arc<OpenDir>,
        names: Vec<Vec<u8>>,
    },
}

/// The jobs waiting and how many are being worked on.
///
/// Stat jobs go first: a directory is only opened when no other one still
/// has names waiting, so at most about two descriptors per thread are open
/// at once, however wide or deep the tree.
#[derive(Default)]
pub(super) struct Queue {
    pub(super) reads: Vec<Job>,
    pub(super) stats: Vec<Job>,
    pub(super) busy: usize,
}

/// What the threads share.
pub(super) struct Shared<'a> {
    pub(super) queue: Mutex<Queue>,
    pub(super) wake: Condvar,
    /// Excluded paths, relative to the root.
    pub(super) exclude: &'a [PathBuf],
    /// The user's exclusion rules.
    pub(super) rules: &'a ExcludeRules,
    /// The device of the root (for `--one-file-system`).
    pub(super) root_dev: u64,
    /// The root every directory is opened from.
    pub(super) source: &'a SourceDir,
}

impl Shared<'_> {
    pub(super) fn lock(&self) -> MutexGuard<'_, Queue> {
        // A poisoned lock means a worker panicked; its guard has already
        // balanced `busy`, and the queue itself is always consistent.
        self.queue.lock().unwrap_or_else(PoisonError::into_inner)
    }

    pub(super) fn push(&self, jobs: &mut Vec<Job>) {
        if jobs.is_empty() {
            return;
        }
        let n = jobs.len();
        let mut queue = self.lock();
        for job in jobs.drain(..) {
            match job {
                Job::Read { .. } => queue.reads.push(job),
                Job::Stat { .. } => queue.stats.push(job),
            }
        }
        drop(queue);
        if n == 1 {
            self.wake.notify_one();
        } else {
            self.wake.notify_all();
        }
    }

    /// The next job, or `None` once the stack is empty and nobody is busy
    /// (so nothing more can be pushed).
    pub(super) fn next(&self) -> Option<Busy<'_, '_>> {
        let mut queue = self.lock();
        loop {
            if let Some(job) = queue.stats.pop().or_else(|| queue.reads.pop()) {
                queue.busy += 1;
                return Some(Busy {
                    shared: self,
                    job: Some(job),
                });
            }
            if queue.busy == 0 {
                return None;
            }
            queue = self
                .wake
                .wait(queue)
                .unwrap_or_else(PoisonError::into_inner);
        }
    }
}

/// A job being worked on; dropping it (even while unwinding) marks it done,
/// so the other threads never wait forever.
pub(super) struct Busy<'s, 'a> {
    pub(super) shared: &'s Shared<'a>,
    pub(super) job: Option<Job>,
}

impl Drop for Busy<'_, '_> {
    fn drop(&mut self) {
        let mut queue = self.shared.lock();
        queue.busy -= 1;
        if queue.busy == 0 && queue.reads.is_empty() && queue.stats.is_empty() {
            self.shared.wake.notify_all();
        }
    }
}
