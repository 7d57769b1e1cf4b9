//! The sender's "Backups" view without a window: the receiver's runs of this
//! folder, a browser of the folder as of a run or a time (one directory
//! asked for when it is expanded), a file's versions, a selection, and a
//! restore of it with its progress and summary. Every question runs on the
//! launcher's runtime ([`work`]); answers arrive through [`Backups::poll`],
//! so the UI never waits. When the receiver cannot be reached, the view
//! falls back to the local keep-copies directory and says so.
//!
//! ## Layout
//!
//! - [`failure`]: a question not answered, in plain words.
//! - [`key`]: a protected folder's key: locked, unlocking, unlocked.
//! - [`opened`]: a protected folder's objects opened (headers, versions).
//! - [`place`]: where to ask and restore to; "Date and time" parsed.
//! - [`work`]: the questions and the restore, off the UI thread.

pub mod failure;
pub mod key;
pub mod opened;
pub mod place;
pub mod work;

use std::collections::{BTreeMap, BTreeSet};
use std::path::{Path, PathBuf};
use std::sync::{mpsc, Arc};
use std::time::{Instant, SystemTime};

use ferry_agent::restore::RestoreSummary;
use ferry_agent::status::SenderStatus;
use ferry_proto::{At, RelPath, RunInfo, VersionInfo};
use tokio::runtime::Handle;

use crate::agent::Notify;
use crate::form::{Protect, SenderForm};
pub use failure::Failure;
pub use key::{KeyPanel, KeyState};
use place::{default_destination, inside_source, optional_path, origin_of, parse_time};
pub use work::{Origin, Reply, Row, RowKind, Runs};

/// Something asked for: not yet answered, answered, or failed.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Loading<T> {
    /// Asked; the answer has not come yet.
    Pending,
    Ready(T),
    /// Why it could not be answered, in plain words.
    Failed(String),
}

/// A restore, running or ended.
#[derive(Debug)]
pub struct Restoring {
    /// Where it writes.
    pub dest: PathBuf,
    /// What it restores from, in words.
    pub from: String,
    /// Its live progress.
    pub status: Arc<SenderStatus>,
    pub started: Instant,
    /// `None` while it runs.
    pub result: Option<Result<RestoreSummary, String>>,
}

/// Opens a folder in the desktop's file manager.
pub type Opener = fn(&Path) -> Result<(), String>;

/// The view's whole state.
pub struct Backups {
    runtime: Handle,
    tx: mpsc::Sender<Reply>,
    rx: mpsc::Receiver<Reply>,
    notify: Option<Notify>,
    /// Answers to questions asked before this generation are dropped.
    generation: u64,
    /// A store on this machine to read instead of the receiver (empty: the
    /// receiver the sender form names).
    pub store_dir: String,
    /// Where the answers shown come from (`None` until loaded).
    pub origin: Option<Origin>,
    /// The read-only session with it, kept between questions.
    session: Option<work::Session>,
    opening: work::Opening,
    /// Said above everything else (e.g. "the receiver cannot be reached:
    /// showing the local copies").
    pub notice: Option<String>,
    /// The last failure, in plain words; cleared by the next load.
    pub error: Option<String>,
    /// The folder's runs, newest first.
    pub runs: Option<Loading<Vec<RunInfo>>>,
    /// The point browsed: a run or a time (`None`: not chosen yet).
    pub at: Option<At>,
    /// "Date and time" as typed.
    pub at_text: String,
    /// Listed directories by path ("" is the root).
    pub dirs: BTreeMap<String, Loading<Vec<Row>>>,
    /// Expanded directories by path.
    pub expanded: BTreeSet<String>,
    /// The file whose versions are shown, and them.
    pub versions: Option<(String, Loading<Vec<VersionInfo>>)>,
    /// A protected folder's objects at the point browsed that did not open
    /// (damaged, or not this folder's), in words; their entries are not
    /// listed.
    pub unopened: Vec<String>,
    /// Chosen files and folders, by path.
    pub selected: BTreeMap<String, RelPath>,
    /// "Restore to" as typed.
    pub restore_to: String,
    /// Restore over what exists there (and into the source folder).
    pub overwrite: bool,
    /// The folder chooser's shown directory (`None`: closed).
    pub chooser: Option<PathBuf>,
    /// The last restore.
    pub restoring: Option<Restoring>,
    /// The sender's keep-copies directory, if it keeps one.
    copies: Option<PathBuf>,
    /// What the shown answers were asked from (see [`Backups::outdated`]).
    loaded: Option<String>,
    /// "Open folder"; tests replace it.
    pub opener: Opener,
    /// Whether the view is shown (instead of the sender's form).
    pub open: bool,
    /// A protected folder's key.
    pub key: KeyPanel,
    /// The sender form's protection and key file, when last loaded.
    form_key: (Protect, String),
}

impl std::fmt::Debug for Backups {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Backups")
            .field("origin", &self.origin)
            .field("at", &self.at)
            .finish_non_exhaustive()
    }
}

/// Opens `dir` with `xdg-open`.
pub fn xdg_open(dir: &Path) -> Result<(), String> {
    std::process::Command::new("xdg-open")
        .arg(dir)
        .spawn()
        .map(|_| ())
        .map_err(|e| format!("cannot open {} (xdg-open: {e})", dir.display()))
}

impl Backups {
    /// An empty view; its questions run on `runtime`.
    pub fn new(runtime: Handle) -> Backups {
        let (tx, rx) = mpsc::channel();
        Backups {
            runtime,
            tx,
            rx,
            notify: None,
            generation: 0,
            store_dir: String::new(),
            origin: None,
            session: None,
            opening: Default::default(),
            notice: None,
            error: None,
            runs: None,
            at: None,
            at_text: String::new(),
            dirs: BTreeMap::new(),
            expanded: BTreeSet::new(),
            versions: None,
            selected: BTreeMap::new(),
            unopened: Vec::new(),
            restore_to: String::new(),
            overwrite: false,
            chooser: None,
            restoring: None,
            copies: None,
            loaded: None,
            opener: xdg_open,
            open: false,
            key: KeyPanel::default(),
            form_key: (Protect::Plain, String::new()),
        }
    }

    /// Wakes the UI when an answer arrives.
    pub fn set_notify(&mut self, notify: Notify) {
        self.notify = Some(notify);
    }

    /// Whether a question is waiting for its answer (the UI then refreshes).
    pub fn busy(&self) -> bool {
        matches!(self.runs, Some(Loading::Pending))
            || self.dirs.values().any(|d| *d == Loading::Pending)
            || matches!(self.versions, Some((_, Loading::Pending)))
            || self.restoring.as_ref().is_some_and(|r| r.result.is_none())
            || matches!(self.key.state, KeyState::Unlocking)
    }

    fn spawn(&self, work: impl std::future::Future<Output = Reply> + Send + 'static) {
        let tx = self.tx.clone();
        let notify = self.notify.clone();
        self.runtime.spawn(async move {
            // The view dropped its end: nobody is listening.
            let _ = tx.send(work.await);
            if let Some(notify) = notify {
                notify();
            }
        });
    }

    /// Forgets everything shown and asks for the runs again: from the store
    /// typed, else from the receiver the sender `form` names.
    pub fn load(&mut self, form: &SenderForm) {
        self.generation += 1;
        self.notice = None;
        self.error = None;
        self.runs = None;
        self.at = None;
        self.clear_browser();
        self.key.reset();
        self.form_key = (form.protect, form.key_file.clone());
        self.loaded = Some(self.key(form));
        self.copies = optional_path(&form.keep_copies);
        let origin = match origin_of(form, &self.store_dir) {
            Ok(origin) => origin,
            Err(e) => {
                self.origin = None;
                if let Some(old) = self.session.take() {
                    self.runtime.spawn(old.close());
                }
                self.error = Some(e);
                return;
            }
        };
        if self.restore_to.trim().is_empty() {
            self.restore_to = default_destination(form, SystemTime::now())
                .display()
                .to_string();
        }
        self.ask_runs(origin);
    }

    /// What the answers depend on: the sender form's receiver, source,
    /// name, state and copies, and the store typed.
    fn key(&self, form: &SenderForm) -> String {
        let f = form;
        [
            &f.host,
            &f.port,
            &f.receiver_id,
            &f.source,
            &f.name,
            &f.state,
            &f.keep_copies,
            &self.store_dir,
        ]
        .map(|s| s.trim())
        .join("\n")
    }

    /// Whether anything was loaded yet (or tried).
    pub fn is_loaded(&self) -> bool {
        self.loaded.is_some()
    }

    /// True if what is shown was asked of another receiver, folder or store
    /// than the form and the store field now name.
    pub fn outdated(&self, form: &SenderForm) -> bool {
        self.loaded
            .as_ref()
            .is_some_and(|loaded| *loaded != self.key(form))
    }

    /// Browses the local keep-copies directory instead of the receiver.
    pub fn use_copies(&mut self, form: &SenderForm) {
        self.loaded = Some(self.key(form));
        self.generation += 1;
        self.notice = None;
        self.error = None;
        self.at = None;
        self.clear_browser();
        self.key.reset();
        match optional_path(&form.keep_copies) {
            Some(dir) => {
                self.copies = Some(dir.clone());
                self.ask_runs(Origin::Copies(dir));
            }
            None => {
                self.error = Some(
                    "This sender keeps no local copies: set \"Keep copies in\" in the sender form"
                        .into(),
                )
            }
        }
    }

    fn ask_runs(&mut self, origin: Origin) {
        self.origin = Some(origin.clone());
        if let Some(old) = self.session.take() {
            self.runtime.spawn(old.close());
        }
        let session = work::Session::new(origin, self.opening.clone());
        self.session = Some(session.clone());
        self.runs = Some(Loading::Pending);
        let generation = self.generation;
        self.spawn(async move { Reply::Runs(generation, work::runs(session).await) });
    }

    fn clear_browser(&mut self) {
        self.dirs.clear();
        self.unopened.clear();
        self.expanded.clear();
        self.versions = None;
        self.selected.clear();
    }

    /// Browses the folder as of run `id`.
    pub fn pick_run(&mut self, id: u64) {
        self.browse(At::Run(id));
    }

    /// Browses the folder as of the time typed in "Date and time".
    pub fn pick_time(&mut self) {
        match parse_time(&self.at_text, SystemTime::now()) {
            Ok(ms) => {
                self.error = None;
                self.browse(At::Time(ms));
            }
            Err(e) => self.error = Some(e),
        }
    }

    fn browse(&mut self, at: At) {
        self.generation += 1;
        self.at = Some(at);
        self.clear_browser();
        self.ask_dir(String::new());
    }

    fn ask_dir(&mut self, key: String) {
        let (Some(session), Some(at)) = (self.session.clone(), self.at) else {
            return;
        };
        // Locked: the objects' names mean nothing; the view says why.
        if self.key.blocked().is_some() {
            return;
        }
        let secret = self.key.secret();
        let dir = match key.as_str() {
            "" => None,
            k => match RelPath::from_bytes(k.as_bytes()) {
                Ok(p) => Some(p),
                Err(_) => return,
            },
        };
        self.dirs.insert(key.clone(), Loading::Pending);
        let generation = self.generation;
        self.spawn(async move {
            Reply::Dir(generation, key, work::list(session, at, dir, secret).await)
        });
    }

    /// Expands or collapses the directory `path`; its entries are asked for
    /// the first time it is expanded (or again if that failed).
    pub fn toggle_dir(&mut self, path: &RelPath) {
        let key = path.to_string();
        if self.expanded.remove(&key) {
            return;
        }
        self.expanded.insert(key.clone());
        match self.dirs.get(&key) {
            Some(Loading::Ready(_)) | Some(Loading::Pending) => {}
            _ => self.ask_dir(key),
        }
    }

    /// Shows the versions of the file `path`.
    pub fn show_versions(&mut self, path: &RelPath) {
        let Some(session) = self.session.clone() else {
            return;
        };
        if self.key.blocked().is_some() {
            return;
        }
        let key = path.to_string();
        self.versions = Some((key.clone(), Loading::Pending));
        let generation = self.generation;
        // A protected folder keeps a path's versions at its opaque path.
        let secret = self.key.secret();
        let path = match &secret {
            Some(secret) => secret.public().opaque_path(path),
            None => path.clone(),
        };
        self.spawn(async move {
            Reply::Versions(generation, key, work::versions(session, path, secret).await)
        });
    }

    /// Selects or unselects `path` for the restore.
    pub fn toggle_selected(&mut self, path: &RelPath) {
        let key = path.to_string();
        if self.selected.remove(&key).is_none() {
            self.selected.insert(key, path.clone());
        }
    }

    /// Why "Restore to…" cannot start now, or `None` when it can.
    pub fn restore_blocked(&self, source: &str) -> Option<String> {
        if self.restoring.as_ref().is_some_and(|r| r.result.is_none()) {
            return Some("a restore is running".into());
        }
        if let Some(why) = self.key.blocked() {
            return Some(why);
        }
        if self.at.is_none() {
            return Some("pick a run or a date and time first".into());
        }
        if self.selected.is_empty() {
            return Some("select files or folders to restore".into());
        }
        let dest = self.restore_to.trim();
        if dest.is_empty() {
            return Some("give a folder to restore to".into());
        }
        if !self.overwrite && inside_source(Path::new(dest), source) {
            return Some(
                "that folder is the backed-up folder itself (or inside it): choose another, \
                 or tick \"Overwrite\" to restore over it"
                    .into(),
            );
        }
        None
    }

    /// Restores the selection into "Restore to".
    pub fn restore(&mut self, source: &str) {
        if let Some(why) = self.restore_blocked(source) {
            self.error = Some(format!("Cannot restore: {why}"));
            return;
        }
        let (Some(session), Some(at)) = (self.session.clone(), self.at) else {
            return;
        };
        self.error = None;
        let dest = PathBuf::from(self.restore_to.trim());
        let status = SenderStatus::new();
        self.restoring = Some(Restoring {
            dest: dest.clone(),
            from: session.origin().describe(),
            status: status.clone(),
            started: Instant::now(),
            result: None,
        });
        let job = work::RestoreJob {
            session,
            at,
            paths: self.selected.values().cloned().collect(),
            dest,
            overwrite: self.overwrite,
            secret: self.key.secret(),
        };
        // A restore outlives the browsing generation that started it.
        let generation = self.generation;
        self.spawn(async move { Reply::Restored(generation, work::restore(job, status).await) });
    }

    /// "Unlock": loads the key typed on a blocking thread and checks it
    /// against the folder; the passphrase field is wiped now.
    pub fn unlock(&mut self) {
        let Some(unlock) = self.key.start() else {
            return;
        };
        let generation = self.generation;
        self.spawn(async move {
            let result = ferry_agent::tasks::blocking(move || unlock.run())
                .await
                .unwrap_or_else(|e| Err(e.to_string()));
            Reply::Unlocked(generation, result)
        });
    }

    /// "Open folder": shows the last restore's destination.
    pub fn open_folder(&mut self) {
        if let Some(r) = &self.restoring {
            if let Err(e) = (self.opener)(&r.dest) {
                self.error = Some(e);
            }
        }
    }

    /// Takes in the answers that arrived; call once per frame.
    pub fn poll(&mut self) {
        while let Ok(reply) = self.rx.try_recv() {
            match reply {
                Reply::Restored(_, result) => {
                    if let Some(r) = &mut self.restoring {
                        r.result = Some(result);
                    }
                }
                Reply::Runs(g, result) if g == self.generation => self.take_runs(result),
                Reply::Unlocked(g, result) if g == self.generation => {
                    let unlocked = result.is_ok();
                    self.key.finish(result);
                    // Browse the point chosen while locked, now with names.
                    if let (true, Some(at)) = (unlocked, self.at) {
                        self.browse(at);
                    }
                }
                Reply::Dir(g, key, result) if g == self.generation => {
                    let shown = match result {
                        Ok((rows, failed)) => {
                            self.unopened = failed;
                            Loading::Ready(rows)
                        }
                        Err(f) => Loading::Failed(f.message),
                    };
                    self.dirs.insert(key, shown);
                }
                Reply::Versions(g, key, result) if g == self.generation => {
                    if self.versions.as_ref().is_some_and(|(k, _)| *k == key) {
                        let shown = match result {
                            Ok(v) => Loading::Ready(v),
                            Err(f) => Loading::Failed(f.message),
                        };
                        self.versions = Some((key, shown));
                    }
                }
                // An answer to a question asked before a reload or another
                // point: stale.
                Reply::Runs(..) | Reply::Dir(..) | Reply::Versions(..) => {}
                // The view loaded again meanwhile: that key was for the
                // folder shown before.
                Reply::Unlocked(..) => {}
            }
        }
    }

    fn take_runs(&mut self, result: Result<Runs, Failure>) {
        match result {
            Ok(Runs {
                runs,
                protection,
                folder,
            }) => {
                self.key
                    .set_protection(protection, folder, self.form_key.0, &self.form_key.1);
                if let Some(newest) = runs.first() {
                    let id = newest.id;
                    self.runs = Some(Loading::Ready(runs));
                    self.pick_run(id);
                } else if let Some(Origin::Copies(_)) = self.origin {
                    self.runs = Some(Loading::Ready(runs));
                    self.browse(At::Latest);
                } else {
                    let from = self
                        .origin
                        .as_ref()
                        .map(Origin::describe)
                        .unwrap_or_default();
                    self.runs = Some(Loading::Ready(runs));
                    self.notice = Some(format!(
                        "No runs of this folder in {from}: has it been sent yet, under this \
                         name and folder?"
                    ));
                }
            }
            Err(f) => {
                let copies = self.copies.clone();
                match (f.unreachable, copies) {
                    (true, Some(dir)) => {
                        self.notice = Some(format!(
                            "{} Restoring from the local copies in {} instead (the files as \
                             last sent).",
                            f.message,
                            dir.display()
                        ));
                        self.generation += 1;
                        self.ask_runs(Origin::Copies(dir));
                    }
                    _ => {
                        self.runs = Some(Loading::Failed(f.message.clone()));
                        self.error = Some(f.message);
                    }
                }
            }
        }
    }
}
