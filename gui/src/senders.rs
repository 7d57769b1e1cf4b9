//! The receiver's Senders view without a window: the list of senders read
//! from the receiver's store (off the UI thread, again every
//! [`LIST_EVERY`]), and the admin's actions on it: revoke, allow, pairing
//! on or off. They work whether the receiver runs in this launcher, as a
//! service, or not at all ([`ferry_agent::senders`]); a running receiver
//! applies them within a second.

use std::path::{Path, PathBuf};
use std::sync::mpsc;
use std::time::{Duration, Instant};

use ferry_agent::senders::{self, SendersReport};
use ferry_agent::store::HistoryError;
use tokio::runtime::Handle;

/// How often the list is read again while it is shown, at most: a list
/// that took long to read (a catalog of millions of versions) is read again
/// only after ten times as long, so the view costs at most a tenth of a core.
pub const LIST_EVERY: Duration = Duration::from_secs(2);

/// What one background job found.
struct Outcome {
    /// The store it read.
    store: PathBuf,
    /// The action's result in words (`Err`: what went wrong), if it was one.
    action: Option<Result<String, String>>,
    /// The list, read after the action.
    list: Result<SendersReport, Unread>,
    /// How long reading the list took.
    took: Duration,
}

/// Why there is no list.
enum Unread {
    /// No store there yet: nothing is wrong.
    NoStore(String),
    /// It could not be read.
    Failed(String),
}

/// The Senders view's state.
pub struct SendersView {
    runtime: Handle,
    /// The list, as last read; `None` when it could not be read.
    pub report: Option<SendersReport>,
    /// Why the last action failed.
    action_error: Option<String>,
    /// Why the list could not be read.
    list_error: Option<String>,
    /// What the last action did.
    pub message: Option<String>,
    /// Why there is no list when nothing is wrong (no store yet).
    pub hint: Option<String>,
    /// The store of `report`.
    store: Option<PathBuf>,
    pending: Option<mpsc::Receiver<Outcome>>,
    read_at: Option<Instant>,
    /// How long the last read took.
    took: Duration,
}

impl std::fmt::Debug for SendersView {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("SendersView")
            .field("report", &self.report)
            .field("error", &self.error())
            .finish_non_exhaustive()
    }
}

/// An action of the admin.
#[derive(Debug, Clone)]
enum Action {
    Revoke(String),
    Allow(String),
    Pairing(bool),
}

impl SendersView {
    pub fn new(runtime: Handle) -> SendersView {
        SendersView {
            runtime,
            report: None,
            action_error: None,
            list_error: None,
            message: None,
            hint: None,
            store: None,
            pending: None,
            read_at: None,
            took: Duration::ZERO,
        }
    }

    /// True while a read or an action is under way.
    pub fn is_busy(&self) -> bool {
        self.pending.is_some()
    }

    /// Takes a finished job's result, and reads the list of `store` (the
    /// receiver form's Store field, as typed) again when it is due.
    pub fn poll(&mut self, store: &str) {
        if let Some(rx) = &self.pending {
            match rx.try_recv() {
                Ok(outcome) => {
                    self.pending = None;
                    self.finish(outcome);
                }
                Err(mpsc::TryRecvError::Empty) => return,
                Err(mpsc::TryRecvError::Disconnected) => {
                    self.pending = None;
                    self.list_error = Some("Reading the senders stopped unexpectedly.".into());
                }
            }
        }
        let Some(root) = store_dir(store) else {
            self.report = None;
            self.store = None;
            self.list_error = None;
            self.hint = Some(
                "Choose where received files are stored (the Store field above) to see its senders."
                    .into(),
            );
            return;
        };
        let due = self.store.as_deref() != Some(root.as_path())
            || self
                .read_at
                .is_none_or(|at| at.elapsed() >= LIST_EVERY.max(self.took * 10));
        if due {
            self.spawn(root, None);
        }
    }

    fn finish(&mut self, outcome: Outcome) {
        self.read_at = Some(Instant::now());
        self.took = outcome.took;
        self.store = Some(outcome.store);
        match outcome.action {
            Some(Ok(message)) => self.message = Some(message),
            Some(Err(e)) => self.action_error = Some(e),
            None => {}
        }
        match outcome.list {
            Ok(report) => {
                self.report = Some(report);
                self.list_error = None;
                self.hint = None;
            }
            Err(Unread::NoStore(hint)) => {
                self.report = None;
                self.list_error = None;
                self.hint = Some(hint);
            }
            Err(Unread::Failed(e)) => {
                // Never a stale list beside an error.
                self.report = None;
                self.list_error = Some(e);
            }
        }
    }

    /// What went wrong, in plain words: the last action's failure (until
    /// the next action), else why the list could not be read.
    pub fn error(&self) -> Option<&str> {
        self.action_error.as_deref().or(self.list_error.as_deref())
    }

    /// Revokes the sender named `name` in `store`.
    pub fn revoke(&mut self, store: &str, name: &str) {
        self.act(store, Action::Revoke(name.to_owned()));
    }

    /// Admits the revoked sender named `name` again.
    pub fn allow(&mut self, store: &str, name: &str) {
        self.act(store, Action::Allow(name.to_owned()));
    }

    /// Switches pairing on or off.
    pub fn set_pairing(&mut self, store: &str, on: bool) {
        self.act(store, Action::Pairing(on));
    }

    fn act(&mut self, store: &str, action: Action) {
        match store_dir(store) {
            Some(root) => {
                self.message = None;
                self.action_error = None;
                self.spawn(root, Some(action));
            }
            None => {
                self.action_error = Some("Choose the Store first.".into());
            }
        }
    }

    /// Starts a job; a newer job replaces an older one's answer.
    fn spawn(&mut self, root: PathBuf, action: Option<Action>) {
        let (tx, rx) = mpsc::channel();
        self.pending = Some(rx);
        self.runtime.spawn_blocking(move || {
            let action = action.map(|a| run_action(&root, a));
            let started = Instant::now();
            let list = senders::list(&root).map_err(|e| list_error(&root, &e));
            let _ = tx.send(Outcome {
                store: root,
                action,
                list,
                took: started.elapsed(),
            });
        });
    }
}

fn store_dir(store: &str) -> Option<PathBuf> {
    let store = store.trim();
    (!store.is_empty()).then(|| PathBuf::from(store))
}

fn run_action(root: &Path, action: Action) -> Result<String, String> {
    let words = |e: &dyn std::error::Error| ferry_agent::chain::chain(e);
    match action {
        Action::Revoke(name) => match senders::set_revoked(root, &name, true) {
            Ok(_) => Ok(format!(
                "Revoked {name}: it is refused from now on (a running receiver closes its connection within seconds); its files and history stay."
            )),
            Err(e) => Err(format!("Could not revoke {name}: {}", words(&e))),
        },
        Action::Allow(name) => match senders::set_revoked(root, &name, false) {
            Ok(_) => Ok(format!("{name} is admitted again.")),
            Err(e) => Err(format!("Could not allow {name}: {}", words(&e))),
        },
        Action::Pairing(on) => match senders::set_pairing(root, on) {
            Ok(()) if on => Ok("Pairing is on: new senders with the pairing secret are admitted.".into()),
            Ok(()) => Ok("Pairing is off: new senders are refused, even with the pairing secret; known senders keep working.".into()),
            Err(e) => Err(format!("Could not switch pairing: {}", words(&e))),
        },
    }
}

fn list_error(root: &Path, e: &HistoryError) -> Unread {
    match e {
        HistoryError::NoCatalog { .. } => Unread::NoStore(format!(
            "There is no store at {} yet: start the receiver once, and its senders show here.",
            root.display()
        )),
        other => Unread::Failed(format!(
            "Could not read the senders of {}: {}",
            root.display(),
            ferry_agent::chain::chain(other)
        )),
    }
}
