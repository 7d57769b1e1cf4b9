//! Starting and stopping the agent in-process: a receiver or a sender runs as
//! a task on the launcher's tokio runtime, and reports to the UI through a
//! typed event stream ([`Event`]) plus the agent's live status objects, never
//! through log text.

use std::net::SocketAddr;
use std::sync::mpsc;
use std::sync::Arc;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use ferry_agent::config::{ReceiverConfig, SenderConfig, SenderSettings, Target};
use ferry_agent::identity::DeviceId;
use ferry_agent::index::{Index, SenderRun};
use ferry_agent::pins::Pins;
use ferry_agent::receiver::Receiver;
use ferry_agent::sender::RunError;
use ferry_agent::status::{ReceiverStatus, SenderStatus};
use ferry_agent::store::{RunRecord, Store};
use ferry_agent::summary::RunSummary;
use ferry_agent::tasks::blocking;
use tokio::runtime::Handle;
use tokio::task::JoinHandle;
use tokio_util::sync::CancellationToken;

use crate::settings::Role;

/// How often a running receiver re-reads its recent runs.
pub const RUNS_REFRESH: Duration = Duration::from_secs(1);
/// How many recent runs a receiver shows.
pub const RECENT_RUNS: usize = 50;

/// Called after every event so the UI wakes up (e.g. `Context::request_repaint`).
pub type Notify = Arc<dyn Fn() + Send + Sync>;

/// One past sender run, as the history table shows it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct HistoryRow {
    /// When the run ended.
    pub finished: SystemTime,
    /// Its summary, or why it failed.
    pub outcome: Result<RunSummary, String>,
}

/// What the running agent tells the UI.
#[derive(Debug)]
pub enum Event {
    /// The receiver is bound and serving.
    Listening {
        /// Its device id.
        id: DeviceId,
        /// The address actually bound.
        addr: SocketAddr,
        /// Live status: connected senders, the last error.
        status: Arc<ReceiverStatus>,
    },
    /// The receiver's recent runs, newest first.
    ReceiverRuns(Vec<RunRecord>),
    /// The sender's earlier runs to this receiver and folder, from its
    /// index, newest first; sent once before the first run.
    PastRuns(Vec<HistoryRow>),
    /// A sender run ended (complete or failed).
    RunFinished(HistoryRow),
    /// The task ended; `error` says why if it did not stop on request.
    Stopped {
        /// Why it stopped, in plain words, if it failed.
        error: Option<String>,
    },
}

/// A receiver or sender running on the launcher's runtime.
pub struct AgentTask {
    role: Role,
    token: CancellationToken,
    events: mpsc::Receiver<Event>,
    task: JoinHandle<()>,
    sender_status: Option<Arc<SenderStatus>>,
}

impl std::fmt::Debug for AgentTask {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("AgentTask")
            .field("role", &self.role)
            .field("stopping", &self.token.is_cancelled())
            .finish_non_exhaustive()
    }
}

fn send(tx: &mpsc::Sender<Event>, notify: &Notify, event: Event) {
    // The UI dropped its end: nobody is listening, nothing to do.
    let _ = tx.send(event);
    notify();
}

impl AgentTask {
    /// Starts a receiver with `config` on `runtime`.
    pub fn start_receiver(runtime: &Handle, config: ReceiverConfig, notify: Notify) -> AgentTask {
        let token = CancellationToken::new();
        let (tx, events) = mpsc::channel();
        let task = runtime.spawn(receiver_task(config, token.clone(), tx, notify));
        AgentTask {
            role: Role::Receiver,
            token,
            events,
            task,
            sender_status: None,
        }
    }

    /// Starts a periodic sender with `config` on `runtime`.
    pub fn start_sender(runtime: &Handle, config: SenderConfig, notify: Notify) -> AgentTask {
        let token = CancellationToken::new();
        let (tx, events) = mpsc::channel();
        let status = SenderStatus::new();
        let task = runtime.spawn(sender_task(
            config,
            token.clone(),
            status.clone(),
            tx,
            notify,
        ));
        AgentTask {
            role: Role::Sender,
            token,
            events,
            task,
            sender_status: Some(status),
        }
    }

    /// Which role is running.
    pub fn role(&self) -> Role {
        self.role
    }

    /// The sender's live status (progress, phase, "run now").
    pub fn sender_status(&self) -> Option<&Arc<SenderStatus>> {
        self.sender_status.as_ref()
    }

    /// Asks the task to stop; it ends after finishing its clean shutdown.
    pub fn stop(&self) {
        self.token.cancel();
    }

    /// Whether [`Self::stop`] was called.
    pub fn is_stopping(&self) -> bool {
        self.token.is_cancelled()
    }

    /// Whether the task has ended.
    pub fn is_finished(&self) -> bool {
        self.task.is_finished()
    }

    /// The events that arrived since the last call.
    pub fn poll(&self) -> Vec<Event> {
        self.events.try_iter().collect()
    }

    /// Stops the task and waits up to `timeout` for it to end (window close).
    /// Must not be called from inside the runtime. Returns whether it ended.
    pub fn shutdown(self, runtime: &Handle, timeout: Duration) -> bool {
        self.token.cancel();
        // The timer must be created inside the runtime: build it in the
        // future that `block_on` polls there.
        let task = self.task;
        runtime
            .block_on(async move { tokio::time::timeout(timeout, task).await })
            .is_ok()
    }
}

async fn receiver_task(
    config: ReceiverConfig,
    token: CancellationToken,
    tx: mpsc::Sender<Event>,
    notify: Notify,
) {
    let result = serve_receiver(config, &token, &tx, &notify).await;
    send(
        &tx,
        &notify,
        Event::Stopped {
            error: result.err(),
        },
    );
}

async fn serve_receiver(
    config: ReceiverConfig,
    token: &CancellationToken,
    tx: &mpsc::Sender<Event>,
    notify: &Notify,
) -> Result<(), String> {
    let settings = blocking(move || config.settings().map_err(|e| ferry_agent::chain::chain(&e)))
        .await
        .map_err(|e| e.to_string())??;
    // `bind` opens the store (blocking) and needs the runtime: blocking
    // threads run inside it.
    let receiver = blocking(move || {
        Receiver::bind(&settings).map_err(|e| {
            format!(
                "the receiver could not start: {}",
                ferry_agent::chain::Chain(&e)
            )
        })
    })
    .await
    .map_err(|e| e.to_string())??;
    let addr = receiver.local_addr().map_err(|e| {
        format!(
            "the receiver could not start: {}",
            ferry_agent::chain::Chain(&e)
        )
    })?;
    let store = receiver.store();
    send(
        tx,
        notify,
        Event::Listening {
            id: receiver.id(),
            addr,
            status: receiver.status(),
        },
    );
    let mut serve = tokio::spawn(receiver.serve(token.clone()));
    let mut tick = tokio::time::interval(RUNS_REFRESH);
    loop {
        tokio::select! {
            _ = token.cancelled() => break,
            ended = &mut serve => {
                return ended.map_err(|e| format!("the receiver stopped unexpectedly: {}", ferry_agent::chain::Chain(&e)));
            }
            _ = tick.tick() => send(tx, notify, Event::ReceiverRuns(recent_runs(&store).await)),
        }
    }
    serve.await.map_err(|e| {
        format!(
            "the receiver did not stop cleanly: {}",
            ferry_agent::chain::Chain(&e)
        )
    })
}

async fn recent_runs(store: &Arc<Store>) -> Vec<RunRecord> {
    let store = store.clone();
    blocking(move || {
        store
            .runs(None)
            .map(|mut runs| {
                runs.truncate(RECENT_RUNS);
                runs
            })
            .map_err(|e| ferry_agent::chain::chain(&e))
    })
    .await
    .ok()
    .and_then(Result::ok)
    .unwrap_or_default()
}

async fn sender_task(
    config: SenderConfig,
    token: CancellationToken,
    status: Arc<SenderStatus>,
    tx: mpsc::Sender<Event>,
    notify: Notify,
) {
    let result = run_sender(config, token, status, &tx, &notify).await;
    send(
        &tx,
        &notify,
        Event::Stopped {
            error: result.err(),
        },
    );
}

async fn run_sender(
    config: SenderConfig,
    token: CancellationToken,
    status: Arc<SenderStatus>,
    tx: &mpsc::Sender<Event>,
    notify: &Notify,
) -> Result<(), String> {
    let settings = blocking(move || config.settings().map_err(|e| ferry_agent::chain::chain(&e)))
        .await
        .map_err(|e| e.to_string())??;
    let for_history = settings.clone();
    let past = blocking(move || past_runs(&for_history))
        .await
        .map_err(|e| e.to_string())?;
    send(tx, notify, Event::PastRuns(past));
    let run_tx = tx.clone();
    let run_notify = notify.clone();
    let on_run = move |result: &Result<RunSummary, RunError>| {
        if matches!(result, Err(RunError::Stopped)) {
            return;
        }
        let row = HistoryRow {
            finished: SystemTime::now(),
            outcome: match result {
                Ok(summary) => Ok(summary.clone()),
                Err(e) => Err(ferry_agent::chain::chain(&e)),
            },
        };
        send(&run_tx, &run_notify, Event::RunFinished(row));
    };
    match ferry_agent::sender::run(settings, token, status, on_run).await {
        Ok(_) => Ok(()),
        Err(ferry_agent::sender::SenderError::Run(RunError::Stopped)) => Ok(()),
        Err(e) => Err(ferry_agent::chain::chain(&e)),
    }
}

/// The sender's earlier runs to its receiver and folder, newest first, from
/// its index; empty when it never reached that receiver or the index cannot
/// be read (the history is a convenience, not worth failing a start for).
pub fn past_runs(settings: &SenderSettings) -> Vec<HistoryRow> {
    let Target::Remote {
        host,
        port,
        receiver_id,
    } = &settings.target
    else {
        return Vec::new();
    };
    let pinned = || {
        Pins::load(&settings.state)
            .ok()
            .and_then(|pins| pins.get(&format!("{host}:{port}")))
    };
    let Some(id) = receiver_id.or_else(pinned) else {
        return Vec::new();
    };
    let path = settings.state.join("index.db");
    if !path.exists() {
        return Vec::new();
    }
    let target = format!("{id}/{}", settings.folder.as_str());
    match Index::open(&path, &target).and_then(|index| index.runs()) {
        Ok(rows) => rows.iter().map(history_row).collect(),
        Err(e) => {
            tracing::warn!(
                "cannot read the sender's run history: {}",
                ferry_agent::chain::Chain(&e)
            );
            Vec::new()
        }
    }
}

fn history_row(row: &SenderRun) -> HistoryRow {
    let finished = UNIX_EPOCH + Duration::from_millis(u64::try_from(row.finished_ms).unwrap_or(0));
    let outcome = match row.outcome.strip_prefix("failed: ") {
        Some(why) => Err(why.to_string()),
        None => Ok(RunSummary {
            run_id: row.receiver_run,
            files_sent: row.files_sent,
            files_unchanged: row.files_unchanged,
            files_deleted: row.files_deleted,
            // Unknown for runs recorded before Ferry kept it: the cell then
            // shows the wire figure alone.
            bytes_file_data: row.bytes_file_data.unwrap_or(0),
            bytes_file_data_wire: row.bytes_file_data_wire,
            bytes_on_wire: row.bytes_on_wire,
            errors: row.errors,
            duration_ms: u64::try_from(row.finished_ms - row.started_ms).unwrap_or(0),
            ..RunSummary::default()
        }),
    };
    HistoryRow { finished, outcome }
}
