//! Live status of a running sender or receiver, shared with whoever shows it
//! (the terminal display, the launcher). Readers poll; nothing here blocks
//! the agent for long (short mutex sections, atomics).

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::SystemTime;

use tokio::sync::Notify;

use crate::summary::{Progress, RunSummary};

/// What a sender is doing now: the loop moves Starting → Connecting →
/// Running (sending) → Waiting (idle) or Retrying → Connecting …, and
/// Stopped at the end.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum SenderPhase {
    Starting,
    /// Scanning the source, connecting to the receiver and planning; the
    /// progress counters still hold the previous run's figures.
    Connecting {
        started: SystemTime,
    },
    /// Sending: the progress counters are this run's.
    Running {
        started: SystemTime,
    },
    /// Idle after a run that ended well, until the next one.
    Waiting {
        next_run: SystemTime,
    },
    /// The last attempt failed (`because`, in plain words); the next one
    /// starts at `at`.
    Retrying {
        at: SystemTime,
        because: String,
    },
    Stopped,
}

impl SenderPhase {
    /// The phase after an attempt that ended with `failure` (`None` when
    /// it ended well), the next one being due at `next_run`.
    pub fn after_run(failure: Option<String>, next_run: SystemTime) -> SenderPhase {
        match failure {
            None => SenderPhase::Waiting { next_run },
            Some(because) => SenderPhase::Retrying {
                at: next_run,
                because,
            },
        }
    }

    /// Whether the progress counters describe the run in progress.
    pub fn is_sending(&self) -> bool {
        matches!(self, SenderPhase::Running { .. })
    }
}

/// A sender's live status.
#[derive(Debug)]
pub struct SenderStatus {
    /// Counters of the run in progress.
    pub progress: Progress,
    phase: Mutex<SenderPhase>,
    last: Mutex<Option<Result<RunSummary, String>>>,
    run_now: Notify,
    watching: Mutex<Option<Watching>>,
}

/// What a watching sender (`--watch`) shows.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Watching {
    /// Directories under watch (those the last full scan found, and the root).
    pub directories: u64,
    /// When a run triggered by changes last sent or deleted something.
    pub last_change_sent: Option<SystemTime>,
}

impl Default for SenderStatus {
    fn default() -> Self {
        Self {
            progress: Progress::default(),
            phase: Mutex::new(SenderPhase::Starting),
            last: Mutex::new(None),
            run_now: Notify::new(),
            watching: Mutex::new(None),
        }
    }
}

impl SenderStatus {
    pub fn new() -> Arc<Self> {
        Arc::new(Self::default())
    }

    /// Starts the next run now instead of at the end of the period.
    pub fn run_now(&self) {
        self.run_now.notify_one();
    }

    /// Resolves when [`Self::run_now`] is called.
    pub async fn run_now_requested(&self) {
        self.run_now.notified().await
    }

    pub fn phase(&self) -> SenderPhase {
        self.phase
            .lock()
            .map(|p| p.clone())
            .unwrap_or(SenderPhase::Stopped)
    }

    /// Sets what the sender is doing; a new run starts its counters at zero,
    /// so that no display shows the last run's figures as this one's.
    pub fn set_phase(&self, phase: SenderPhase) {
        if matches!(phase, SenderPhase::Running { .. }) {
            self.progress.reset(0, 0);
        }
        if let Ok(mut p) = self.phase.lock() {
            *p = phase;
        }
    }

    /// The last run's outcome: its summary, or why it failed.
    pub fn last(&self) -> Option<Result<RunSummary, String>> {
        self.last.lock().ok().and_then(|l| l.clone())
    }

    pub fn set_last(&self, outcome: Result<RunSummary, String>) {
        if let Ok(mut l) = self.last.lock() {
            *l = Some(outcome);
        }
    }

    /// `None` unless the sender watches its source.
    pub fn watching(&self) -> Option<Watching> {
        self.watching.lock().ok().and_then(|w| *w)
    }

    /// Starts, updates (`f`) or ends (`None`) what [`Self::watching`] says.
    pub fn update_watching(&self, f: impl FnOnce(Option<Watching>) -> Option<Watching>) {
        if let Ok(mut w) = self.watching.lock() {
            *w = f(*w);
        }
    }
}

/// One sender connected to a receiver.
#[derive(Debug)]
pub struct Session {
    pub peer: String,
    pub name: String,
    pub folder: String,
    pub run: u64,
    pub started: SystemTime,
    /// Entries stored so far in this run.
    pub entries: AtomicU64,
    /// File content bytes received so far in this run.
    pub bytes: AtomicU64,
}

/// A copy of a [`Session`]'s state.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SessionView {
    pub peer: String,
    pub name: String,
    pub folder: String,
    pub run: u64,
    pub started: SystemTime,
    pub entries: u64,
    pub bytes: u64,
}

/// A receiver's live status.
#[derive(Debug, Default)]
pub struct ReceiverStatus {
    sessions: Mutex<Vec<Arc<Session>>>,
    last_error: Mutex<Option<String>>,
}

impl ReceiverStatus {
    /// Registers a session; it is listed until [`Self::remove`].
    pub fn add(&self, session: Arc<Session>) {
        if let Ok(mut s) = self.sessions.lock() {
            s.push(session);
        }
    }

    pub fn remove(&self, session: &Arc<Session>) {
        if let Ok(mut s) = self.sessions.lock() {
            s.retain(|x| !Arc::ptr_eq(x, session));
        }
    }

    /// The connected senders.
    pub fn sessions(&self) -> Vec<SessionView> {
        let Ok(sessions) = self.sessions.lock() else {
            return Vec::new();
        };
        sessions
            .iter()
            .map(|s| SessionView {
                peer: s.peer.clone(),
                name: s.name.clone(),
                folder: s.folder.clone(),
                run: s.run,
                started: s.started,
                entries: s.entries.load(Ordering::Relaxed),
                bytes: s.bytes.load(Ordering::Relaxed),
            })
            .collect()
    }

    /// The last problem worth telling a person about, in plain words.
    pub fn last_error(&self) -> Option<String> {
        self.last_error.lock().ok().and_then(|e| e.clone())
    }

    pub fn set_error(&self, message: String) {
        if let Ok(mut e) = self.last_error.lock() {
            *e = Some(message);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sessions_are_listed_until_removed() {
        let status = ReceiverStatus::default();
        let s = Arc::new(Session {
            peer: "P".into(),
            name: "n".into(),
            folder: "f".into(),
            run: 1,
            started: SystemTime::UNIX_EPOCH,
            entries: AtomicU64::new(0),
            bytes: AtomicU64::new(0),
        });
        status.add(s.clone());
        s.bytes.fetch_add(10, Ordering::Relaxed);
        assert_eq!(status.sessions()[0].bytes, 10);
        status.remove(&s);
        assert!(status.sessions().is_empty());
    }

    #[test]
    fn a_new_run_does_not_show_the_last_runs_progress() {
        let status = SenderStatus::new();
        status.progress.reset(3, 300);
        status.progress.add_bytes(300);
        status.set_phase(SenderPhase::Waiting {
            next_run: SystemTime::UNIX_EPOCH,
        });
        assert_eq!(status.progress.snapshot().bytes_done, 300);
        status.set_phase(SenderPhase::Running {
            started: SystemTime::UNIX_EPOCH,
        });
        assert_eq!(
            status.progress.snapshot(),
            crate::summary::ProgressSnapshot::default()
        );
    }

    #[test]
    fn a_failed_attempt_is_retrying_with_its_reason_and_a_good_one_is_idle() {
        let status = SenderStatus::new();
        assert_eq!(status.phase(), SenderPhase::Starting);
        let t0 = SystemTime::UNIX_EPOCH + std::time::Duration::from_secs(1000);
        status.set_phase(SenderPhase::Connecting { started: t0 });
        assert!(!status.phase().is_sending(), "connecting is not sending");
        let next = t0 + std::time::Duration::from_secs(8);
        status.set_phase(SenderPhase::after_run(
            Some("could not connect to 127.0.0.1:9: timed out".into()),
            next,
        ));
        assert_eq!(
            status.phase(),
            SenderPhase::Retrying {
                at: next,
                because: "could not connect to 127.0.0.1:9: timed out".into()
            }
        );
        assert!(!status.phase().is_sending());
        status.set_phase(SenderPhase::Running { started: next });
        assert!(status.phase().is_sending());
        status.set_phase(SenderPhase::after_run(None, next));
        assert_eq!(status.phase(), SenderPhase::Waiting { next_run: next });
        assert!(!status.phase().is_sending());
    }

    #[tokio::test]
    async fn run_now_wakes_a_waiter() {
        let status = SenderStatus::new();
        status.run_now();
        tokio::time::timeout(
            std::time::Duration::from_secs(1),
            status.run_now_requested(),
        )
        .await
        .unwrap();
    }
}
