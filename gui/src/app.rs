//! The launcher's state without a window: the forms, the running agent and
//! what it reported, and the actions the buttons trigger (start, stop, save).
//! The panels in [`crate::ui`] draw it; tests drive it directly or through
//! egui_kittest.

use std::collections::HashMap;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::{Duration, Instant};

use ferry_agent::identity::{DeviceId, Identity};
use ferry_agent::status::ReceiverStatus;
use ferry_agent::store::RunRecord;
use tokio::runtime::Handle;

use crate::agent::{AgentTask, Event, HistoryRow, Notify};
use crate::form::Validation;
use crate::settings::{LauncherSettings, Role};

/// How long window close waits for the agent's clean shutdown.
pub const SHUTDOWN_TIMEOUT: Duration = Duration::from_secs(10);
/// How many past sender runs the history table keeps.
pub const HISTORY_ROWS: usize = 100;
/// Changed settings are written at most this often while typing.
const AUTOSAVE_DELAY: Duration = Duration::from_millis(500);

/// What a running receiver has reported.
#[derive(Debug, Default)]
pub struct ReceiverView {
    /// The address it listens on.
    pub addr: Option<SocketAddr>,
    /// Its device id, as reported when it started.
    pub id: Option<DeviceId>,
    /// Live status: connected senders, last error.
    pub status: Option<Arc<ReceiverStatus>>,
    /// Recent runs, newest first.
    pub runs: Vec<RunRecord>,
}

/// The whole launcher state.
pub struct LauncherApp {
    config_dir: PathBuf,
    runtime: Handle,
    /// The forms and the chosen role, as persisted.
    pub settings: LauncherSettings,
    saved: LauncherSettings,
    changed_at: Option<Instant>,
    /// The running receiver or sender, until it has stopped.
    pub running: Option<AgentTask>,
    /// What the receiver reported (kept after it stops).
    pub receiver: ReceiverView,
    /// The sender's past runs (earlier ones from its index), newest first.
    pub history: Vec<HistoryRow>,
    /// The last failure (start, stop, save), in plain words.
    pub error: Option<String>,
    /// The last success worth telling (e.g. where a config file went).
    pub message: Option<String>,
    /// Where "Save as config file" writes, per role, as typed.
    pub config_file: HashMap<Role, String>,
    /// What the sender's exclude patterns leave out of its source.
    pub exclusion_count: crate::exclusions::ExclusionCount,
    /// The receiver's Senders view.
    pub senders: crate::senders::SendersView,
    ids: HashMap<PathBuf, Result<DeviceId, String>>,
    /// The sender's Backups view: browse and restore.
    pub backups: crate::backups::Backups,
}

impl std::fmt::Debug for LauncherApp {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("LauncherApp")
            .field("config_dir", &self.config_dir)
            .field("settings", &self.settings)
            .field("running", &self.running)
            .finish_non_exhaustive()
    }
}

impl LauncherApp {
    /// Loads the settings from `config_dir` (defaults if there are none, with
    /// the reason shown if they could not be read); agents run on `runtime`.
    pub fn new(config_dir: PathBuf, runtime: Handle) -> LauncherApp {
        let (settings, error) = match LauncherSettings::load(&config_dir) {
            Ok(s) => (s, None),
            Err(e) => (
                LauncherSettings::default(),
                Some(ferry_agent::chain::chain(&e)),
            ),
        };
        let config_file = [Role::Receiver, Role::Sender]
            .into_iter()
            .map(|role| (role, default_config_file(&config_dir, role)))
            .collect();
        let senders = crate::senders::SendersView::new(runtime.clone());
        LauncherApp {
            config_dir,
            runtime: runtime.clone(),
            saved: settings.clone(),
            settings,
            changed_at: None,
            running: None,
            receiver: ReceiverView::default(),
            history: Vec::new(),
            error,
            message: None,
            config_file,
            exclusion_count: Default::default(),
            senders,
            ids: HashMap::new(),
            backups: crate::backups::Backups::new(runtime),
        }
    }

    /// The directory holding `launcher.toml` and the secrets.
    pub fn config_dir(&self) -> &Path {
        &self.config_dir
    }

    /// The role shown.
    pub fn role(&self) -> Role {
        self.settings.role
    }

    /// Switches the shown role; refused while an agent runs.
    pub fn set_role(&mut self, role: Role) {
        if self.running.is_none() {
            self.settings.role = role;
        }
    }

    /// The shown form's problems.
    pub fn validation(&self) -> Validation {
        match self.settings.role {
            Role::Receiver => self.settings.receiver.validate(),
            Role::Sender => self.settings.sender.validate(),
        }
    }

    /// Why Start is disabled, or `None` when it is enabled.
    pub fn start_blocked(&self) -> Option<String> {
        if let Some(task) = &self.running {
            return Some(match task.is_stopping() {
                true => "stopping…".into(),
                false => "already running".into(),
            });
        }
        self.validation().reason()
    }

    /// Starts the shown role: saves the settings, writes the secret file and
    /// runs the agent. `notify` wakes the UI when the agent reports.
    pub fn start(&mut self, notify: Notify) {
        if let Some(reason) = self.start_blocked() {
            self.error = Some(format!("cannot start: {reason}"));
            return;
        }
        self.error = None;
        self.message = None;
        self.save_settings();
        let role = self.settings.role;
        let secret = match self.settings.write_secret(&self.config_dir, role) {
            Ok(s) => s,
            Err(e) => {
                self.error = Some(ferry_agent::chain::chain(&e));
                return;
            }
        };
        let task = match role {
            Role::Receiver => match self.settings.receiver.to_config(secret) {
                Ok(config) => {
                    self.receiver = ReceiverView::default();
                    AgentTask::start_receiver(&self.runtime, config, notify)
                }
                Err(v) => return self.refuse(v),
            },
            Role::Sender => match self.settings.sender.to_config(secret) {
                Ok(config) => AgentTask::start_sender(&self.runtime, config, notify),
                Err(v) => return self.refuse(v),
            },
        };
        self.running = Some(task);
    }

    fn refuse(&mut self, v: Validation) {
        self.error = v.reason().map(|r| format!("cannot start: {r}"));
    }

    /// Asks the running agent to stop; it shows "stopping…" until it has.
    pub fn stop(&mut self) {
        if let Some(task) = &self.running {
            task.stop();
        }
    }

    /// Starts the sender's next run now.
    pub fn run_now(&self) {
        if let Some(status) = self.running.as_ref().and_then(|t| t.sender_status()) {
            status.run_now();
        }
    }

    /// Takes in what the agent reported; call once per frame.
    pub fn poll(&mut self) {
        let Some(task) = &self.running else { return };
        // Read "finished" before draining, so no event sent before the end
        // is left behind.
        let finished = task.is_finished();
        let mut stopped = false;
        for event in task.poll() {
            match event {
                Event::Listening { id, addr, status } => {
                    self.receiver.id = Some(id);
                    self.receiver.addr = Some(addr);
                    self.receiver.status = Some(status);
                }
                Event::ReceiverRuns(runs) => self.receiver.runs = runs,
                Event::PastRuns(rows) => self.history = rows,
                Event::RunFinished(row) => self.history.insert(0, row),
                Event::Stopped { error } => {
                    stopped = true;
                    if error.is_some() {
                        self.error = error;
                    }
                }
            }
        }
        self.history.truncate(HISTORY_ROWS);
        if stopped || finished {
            self.running = None;
        }
    }

    /// Saves the settings if they changed a while ago (autosave while
    /// typing); call once per frame.
    pub fn autosave(&mut self) {
        if self.settings == self.saved {
            self.changed_at = None;
            return;
        }
        let changed_at = *self.changed_at.get_or_insert_with(Instant::now);
        if changed_at.elapsed() >= AUTOSAVE_DELAY {
            self.save_settings();
        }
    }

    /// Saves the settings now.
    pub fn save_settings(&mut self) {
        match self.settings.save(&self.config_dir) {
            Ok(()) => {
                self.saved = self.settings.clone();
                self.changed_at = None;
            }
            Err(e) => self.error = Some(ferry_agent::chain::chain(&e)),
        }
    }

    /// Writes the shown role's config to `path` as the TOML that
    /// `ferry receive --config` / `ferry send --config` reads.
    pub fn save_config_file(&mut self, path: &Path) -> Result<PathBuf, String> {
        let role = self.settings.role;
        let secret = self
            .settings
            .write_secret(&self.config_dir, role)
            .map_err(|e| ferry_agent::chain::chain(&e))?;
        let invalid = |v: Validation| v.reason().unwrap_or_default();
        // A bucket's secret key is written in the file: then only its owner
        // may read it.
        let (text, command, private) = match role {
            Role::Receiver => {
                let mut config = self.settings.receiver.to_config(secret).map_err(invalid)?;
                // Recovering is for one start, not for every start of a
                // service (a second one would be refused).
                config.recover = None;
                let private = config.s3_secret_access_key.is_some();
                (toml::to_string_pretty(&config), "ferry receive", private)
            }
            Role::Sender => {
                let config = self.settings.sender.to_config(secret).map_err(invalid)?;
                (toml::to_string_pretty(&config), "ferry send", false)
            }
        };
        let text = text.map_err(|e| {
            format!(
                "cannot encode the config: {}",
                ferry_agent::chain::Chain(&e)
            )
        })?;
        let header = format!(
            "# Written by ferry-gui. Run headless with: {command} --config {}\n\n",
            path.display()
        );
        if let Some(parent) = path.parent().filter(|p| !p.as_os_str().is_empty()) {
            std::fs::create_dir_all(parent)
                .map_err(|e| format!("cannot create {}: {e}", parent.display()))?;
        }
        let write = || -> std::io::Result<()> {
            use std::io::Write;
            use std::os::unix::fs::{OpenOptionsExt, PermissionsExt};
            let mut file = std::fs::OpenOptions::new()
                .write(true)
                .create(true)
                .truncate(true)
                .mode(if private { 0o600 } else { 0o644 })
                .open(path)?;
            if private {
                // `mode` applies only to a new file.
                file.set_permissions(std::fs::Permissions::from_mode(0o600))?;
            }
            file.write_all((header + &text).as_bytes())
        };
        write().map_err(|e| format!("cannot write {}: {e}", path.display()))?;
        Ok(path.to_owned())
    }

    /// The "Save as config file" button: writes to the typed path and says
    /// where it went or why it failed.
    pub fn save_config_clicked(&mut self) {
        let typed = self
            .config_file
            .get(&self.settings.role)
            .cloned()
            .unwrap_or_default();
        if typed.trim().is_empty() {
            self.error = Some("Config file: give a path to write to".into());
            return;
        }
        match self.save_config_file(Path::new(typed.trim())) {
            Ok(path) => {
                self.error = None;
                self.message = Some(format!("Saved {}", path.display()));
            }
            Err(e) => {
                self.message = None;
                self.error = Some(e);
            }
        }
    }

    /// This node's device id for the shown role (its identity is created on
    /// first use, as the agent would).
    pub fn device_id(&mut self) -> Result<DeviceId, String> {
        let form_state = match self.settings.role {
            Role::Receiver => &self.settings.receiver.state,
            Role::Sender => &self.settings.sender.state,
        };
        let state = match form_state.trim() {
            "" => ferry_agent::config::default_state_dir(),
            s => PathBuf::from(s),
        };
        if self.settings.role == Role::Receiver {
            if let Some(id) = self.receiver.id.filter(|_| self.running.is_some()) {
                return Ok(id);
            }
        }
        self.ids
            .entry(state.clone())
            .or_insert_with(|| {
                Identity::load_or_create(&state)
                    .map(|i| i.id)
                    .map_err(|e| ferry_agent::chain::chain(&e))
            })
            .clone()
    }

    /// Stops the agent and waits for it (window close), then saves.
    pub fn shutdown(&mut self) {
        if let Some(task) = self.running.take() {
            if !task.shutdown(&self.runtime, SHUTDOWN_TIMEOUT) {
                tracing::warn!("the agent did not stop within {SHUTDOWN_TIMEOUT:?}");
            }
        }
        self.save_settings();
    }
}

fn default_config_file(dir: &Path, role: Role) -> String {
    let name = match role {
        Role::Receiver => "receiver.toml",
        Role::Sender => "sender.toml",
    };
    dir.join(name).display().to_string()
}
