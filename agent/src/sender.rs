//! The sender: one run ([`run::run_once`]), and the loop around it that runs
//! every period, never two runs at once, with backoff while the receiver is
//! unreachable or busy; with `--watch` ([`watch`]), also a run of the
//! directories that changed as soon as their changes settle.
//!
//! ## Layout
//!
//! - `run`: one run in order (scan, connect, plan, send, delete, finish,
//!   record), a thin driver of the streams below.
//! - `control`: the control stream (`Hello`/`Welcome`, `Delete`/`Deleted`,
//!   `Finish`/`Committed`); its state machine in `control/machine.rs`.
//! - `file_stream`: one entry on a stream of its own (content inline,
//!   offered by hash, or chunked); its state machine in
//!   `file_stream/machine.rs`.
//! - `bundle`: bundles, small entries one after another on a long-lived
//!   stream; the answers matched in order in `bundle/answers.rs`.
//! - `delta_reader`: a large file read as chunks against a base the receiver
//!   holds, framed on a blocking thread.
//! - `sealed`: an encrypted or write-only folder's entries as sealed
//!   objects at opaque paths, the one seam between plain and sealed sending.
//! - `source_file`: opening, checking and reading a source file.
//! - `record`: what a run leaves in the index, the history and the copies.
//! - `schedule`: when the next run starts (period, backoff, busy hints).
//! - `watch`: inotify, for runs of what changed.
//! - `guard`: the mass-delete guard.
//! - `file_stream_fuzz`: the fuzz harness of the sender's state machines.
//! - `pair_tests`: a whole run over an in-memory link against a scripted
//!   receiver.

mod bundle;
mod control;
mod delta_reader;
mod file_stream;
#[cfg(any(test, feature = "fuzz"))]
#[doc(hidden)]
pub mod file_stream_fuzz;
#[cfg(test)]
pub(crate) mod pair_tests;
mod record;
mod run;
pub mod schedule;
mod sealed;
mod sealed_delta;
mod source_file;
pub mod watch;

pub use delta_reader::DeltaError;
pub use file_stream::{SendEntryError, SentKind};
pub use run::MAX_IN_FLIGHT;
pub use source_file::SourceError;

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};
use std::time::{Duration, SystemTime};

use ferry_proto::RefuseCode;
use tokio_util::sync::CancellationToken;

use crate::config::{SenderSettings, Target};
use crate::copies::{Copies, CopiesError};
use crate::embedded::{EmbeddedError, EmbeddedLinks, EmbeddedReceiver};
use crate::identity::{DeviceId, Identity, IdentityError};
use crate::index::{guard, Index, IndexError};
use crate::pins::{PinError, Pins};
use crate::ratelimit::RateLimiter;
use crate::scan::ScanError;
use crate::status::{SenderPhase, SenderStatus};
use crate::stream::StreamError;
use crate::summary::RunSummary;
use crate::tls::TlsError;
use crate::transport::{self, TransportError};
use schedule::{RunOutcome, Schedule};

/// Why a run did not complete.
#[derive(Debug, thiserror::Error)]
pub enum RunError {
    #[error(transparent)]
    Scan(#[from] ScanError),
    #[error(transparent)]
    Index(#[from] IndexError),
    #[error(transparent)]
    Transport(#[from] TransportError),
    #[error(transparent)]
    Tls(#[from] TlsError),
    #[error(transparent)]
    Pin(#[from] PinError),
    #[error("the receiver is busy (all its client slots are in use); retrying in {retry_after:?}")]
    Busy { retry_after: Duration },
    #[error("the receiver refused this sender: {message}")]
    Refused { code: RefuseCode, message: String },
    #[error("the receiver's identity is not the one expected: {0}")]
    WrongReceiver(String),
    #[error("the connection to the receiver broke")]
    Protocol(#[from] StreamError),
    #[error("connection to the receiver lost")]
    Connection(#[from] quinn::ConnectionError),
    #[error("the run was cut off")]
    Lost(#[source] SendEntryError),
    /// The receiver closed the connection and said why (its disk is full,
    /// it is shutting down): that reason, not the broken stream it caused.
    #[error("{0}")]
    ReceiverEnded(String),
    #[error(transparent)]
    MassDelete(#[from] guard::MassDelete),
    /// The folder's key cannot seal this run (a key that is not a usable
    /// public key, no randomness).
    #[error("cannot seal the encrypted folder's entries")]
    Seal(#[source] ferry_proto::seal::SealError),
    /// The sender was stopped (shutdown) during the run.
    #[error("stopped")]
    Stopped,
    #[error(transparent)]
    Cancelled(#[from] crate::tasks::Cancelled),
    #[error("the index is unusable: a thread panicked while holding it")]
    IndexPoisoned,
    #[error("the pinned identities are unusable: a thread panicked while holding them")]
    PinsPoisoned,
    /// A run was asked of an embedded receiver that is not running.
    #[error("embedded receiver not started")]
    EmbeddedNotStarted,
    /// The embedded receiver's store did not pass its check (a damaged
    /// catalog): no run can store into it.
    #[error(transparent)]
    Embedded(Arc<EmbeddedError>),
}

impl RunError {
    /// True if the receiver's address did not answer at all.
    pub fn is_no_answer(&self) -> bool {
        matches!(
            self,
            RunError::Transport(TransportError::HandshakeTimeout { .. })
        )
    }

    /// How the scheduler should treat this failure.
    pub fn outcome(&self) -> Option<RunOutcome> {
        match self {
            RunError::Busy { retry_after } => Some(RunOutcome::Busy {
                retry_after: *retry_after,
            }),
            RunError::Transport(_)
            | RunError::Connection(_)
            | RunError::Lost(_)
            | RunError::ReceiverEnded(_)
            | RunError::Protocol(_) => Some(RunOutcome::Unreachable),
            // A folder kept under another protection or key: only the
            // user can settle it, and no later run would be admitted.
            RunError::Refused {
                code: RefuseCode::Protection,
                ..
            } => None,
            RunError::Refused { code, .. } if !control::machine::is_permanent(*code) => {
                Some(RunOutcome::Unreachable)
            }
            RunError::Refused { .. } => Some(RunOutcome::Refused),
            // The source may be mounted again by the next period.
            RunError::MassDelete(_) => Some(RunOutcome::Refused),
            // A changed receiver identity, a broken index, an unreadable
            // source: retrying will not fix them.
            _ => None,
        }
    }
}

/// Why a sender could not start.
#[derive(Debug, thiserror::Error)]
pub enum SenderError {
    #[error(transparent)]
    Identity(#[from] IdentityError),
    #[error(transparent)]
    Pins(#[from] PinError),
    #[error(transparent)]
    Copies(#[from] CopiesError),
    #[error(transparent)]
    Embedded(#[from] EmbeddedError),
    #[error(transparent)]
    Run(#[from] RunError),
}

/// What one sender keeps between runs.
pub struct SenderContext {
    pub settings: SenderSettings,
    pub identity: Identity,
    pub status: Arc<SenderStatus>,
    copies: Option<Arc<Copies>>,
    exclude: Vec<PathBuf>,
    index: Arc<Mutex<Option<Index>>>,
    pins: Mutex<Pins>,
    /// Set for the embedded receiver: its id, when its store is checked (a
    /// run connects only then), and connections to it in memory.
    embedded: Option<EmbeddedLinks>,
    /// The bandwidth limit (`--limit-rate`), one for the whole process.
    limiter: Option<Arc<RateLimiter>>,
}

impl SenderContext {
    async fn remote(&self) -> Result<SocketAddr, RunError> {
        match &self.settings.target {
            Target::Remote { host, port, .. } => Ok(transport::resolve(host, *port).await?),
            Target::Embedded { .. } => Err(RunError::EmbeddedNotStarted),
        }
    }

    /// Checks the receiver's id against what was given or pinned before.
    fn check_receiver(&self, presented: DeviceId) -> Result<(), RunError> {
        match (&self.embedded, &self.settings.target) {
            (Some(embedded), _) if embedded.id() == presented => Ok(()),
            (Some(embedded), _) => Err(RunError::WrongReceiver(format!(
                "expected {}, got {presented}",
                embedded.id()
            ))),
            (
                None,
                Target::Remote {
                    host,
                    port,
                    receiver_id,
                },
            ) => {
                let mut pins = self.pins.lock().map_err(|_| RunError::PinsPoisoned)?;
                let outcome = pins.check(&format!("{host}:{port}"), presented, *receiver_id)?;
                if matches!(outcome, crate::pins::PinOutcome::PinnedNow) {
                    tracing::info!(receiver = %presented, "pinned the receiver's identity on first contact");
                }
                Ok(())
            }
            (None, Target::Embedded { .. }) => Err(RunError::EmbeddedNotStarted),
        }
    }
}

/// Runs the sender until done (`--once`, or no period) or until `shutdown`.
/// Calls `on_run` after every attempt. Returns the last run's summary.
pub async fn run(
    settings: SenderSettings,
    shutdown: CancellationToken,
    status: Arc<SenderStatus>,
    mut on_run: impl FnMut(&Result<RunSummary, RunError>),
) -> Result<RunSummary, SenderError> {
    let identity = Identity::load_or_create(&settings.state)?;
    let pins = Pins::load(&settings.state)?;
    let copies = match &settings.keep_copies {
        Some(dir) => Some(Arc::new(Copies::open(dir)?)),
        None => None,
    };

    // The embedded receiver (`--store`): the run connects to it in memory
    // and checks its device id, as of any receiver.
    let receiver = match &settings.target {
        Target::Embedded { store } => {
            Some(EmbeddedReceiver::start(store, identity.id, &shutdown).await?)
        }
        Target::Remote { .. } => None,
    };
    let embedded = receiver.as_ref().map(EmbeddedReceiver::links);

    // Computed once the embedded store exists, so that it can be excluded.
    let mut never_scan = vec![settings.state.as_path()];
    never_scan.extend(settings.keep_copies.as_deref());
    if let Target::Embedded { store } = &settings.target {
        never_scan.push(store);
    }
    let exclude = run::excluded_paths(&never_scan);
    let limiter = settings.limit_rate.clone().map(RateLimiter::new);
    if let Some(limiter) = &limiter {
        tracing::info!(limit_rate = %limiter.schedule(), "bandwidth limited");
    }
    let ctx = SenderContext {
        limiter,
        settings,
        identity,
        status,
        copies,
        exclude,
        index: Arc::new(Mutex::new(None)),
        pins: Mutex::new(pins),
        embedded,
    };
    let result = schedule_loop(&ctx, &shutdown, &mut on_run).await;
    if let Some(receiver) = receiver {
        receiver.stop().await;
    }
    result
}

async fn schedule_loop(
    ctx: &SenderContext,
    shutdown: &CancellationToken,
    on_run: &mut impl FnMut(&Result<RunSummary, RunError>),
) -> Result<RunSummary, SenderError> {
    let every = ctx.settings.every;
    let mut schedule = Schedule::new();
    // Started before the first run, so that nothing changed during it is
    // missed. A watch that cannot start leaves periodic runs.
    // What the next run looks at: `None` for everything, else the paths
    // that changed.
    let mut changed: Option<Vec<std::path::PathBuf>> = None;
    let mut watch = match &ctx.settings.watch {
        Some(settings) => match watch::SourceWatch::start(&ctx.settings.source, &ctx.exclude) {
            Ok(w) => {
                tracing::info!(source = %ctx.settings.source.display(), "watching for changes");
                ctx.status.update_watching(|_| {
                    Some(crate::status::Watching {
                        directories: 1,
                        last_change_sent: None,
                    })
                });
                Some((w, settings.delay))
            }
            Err(e) => {
                tracing::warn!("{}", crate::chain::Chain(&e));
                None
            }
        },
        None => None,
    };
    loop {
        // Running (sending) is set by the run once it has planned.
        ctx.status.set_phase(SenderPhase::Connecting {
            started: SystemTime::now(),
        });
        // A full scan sees every change made before it starts.
        if let (Some((watch, _)), None) = (&watch, &changed) {
            watch.clear();
        }
        let triggered = changed.is_some();
        let result = run::run_once(ctx, shutdown, changed.take()).await;
        if let (Some(_), Ok(summary)) = (&watch, &result) {
            let sent = summary.files_sent
                + summary.files_metadata_only
                + summary.dirs_sent
                + summary.files_deleted;
            ctx.status.update_watching(|w| {
                w.map(|mut w| {
                    if !summary.partial_scan {
                        w.directories = summary.dirs_scanned + 1;
                    }
                    if triggered && sent > 0 {
                        w.last_change_sent = Some(SystemTime::now());
                    }
                    w
                })
            });
        }
        on_run(&result);
        ctx.status.set_last(
            result
                .as_ref()
                .map(Clone::clone)
                .map_err(|e| crate::chain::chain(e)),
        );
        let outcome = match &result {
            Ok(_) => RunOutcome::Done,
            Err(e) => match e.outcome() {
                Some(outcome) => outcome,
                // Stopped, or a failure that retrying cannot fix.
                None => return finish(ctx, result),
            },
        };
        let give_up = every.is_none()
            && schedule::once_gives_up(
                outcome,
                schedule.failures(),
                result.as_ref().is_err_and(RunError::is_no_answer),
            );
        if give_up {
            // The caller reports the last result: nothing is logged here,
            // so that a failure is told once.
            return finish(ctx, result);
        }
        let delay = schedule.next(outcome, every, schedule::clock_jitter());
        let next = humantime::format_duration(Duration::from_secs(delay.as_secs().max(1)));
        match &result {
            // One line per failed attempt, with when the next one starts.
            Err(e) => tracing::warn!("run failed: {}; retrying in {next}", crate::chain::Chain(e)),
            Ok(_) if watch.is_some() => {
                tracing::info!("next full scan in {next}, or when something changes")
            }
            Ok(_) => tracing::info!("next run in {next}"),
        }
        ctx.status.set_phase(SenderPhase::after_run(
            result.as_ref().err().map(|e| crate::chain::chain(e)),
            SystemTime::now() + delay,
        ));
        // After a failure the retry waits its backoff whatever changes: it
        // is a full scan, and sees them.
        let next_run = tokio::time::Instant::now() + delay;
        loop {
            let changes = async {
                match &watch {
                    Some((watch, delay)) if outcome == RunOutcome::Done => {
                        watch.next_batch(*delay).await
                    }
                    _ => std::future::pending().await,
                }
            };
            tokio::select! {
                _ = shutdown.cancelled() => return finish(ctx, result),
                _ = ctx.status.run_now_requested() => {}
                _ = tokio::time::sleep_until(next_run) => {}
                batch = changes => {
                    if let watch::Batch::Paths(paths) = batch {
                        let (source, rules) =
                            (ctx.settings.source.clone(), ctx.settings.exclude.clone());
                        // Stats and reads `.ferryignore` files: off the runtime.
                        let paths = crate::tasks::blocking(move || {
                            without_left_out(&source, &rules, paths)
                        })
                        .await;
                        let Ok(paths) = paths else {
                            // The runtime is shutting down: the loop ends
                            // at the next turn, or a full scan sees the
                            // changes.
                            changed = None;
                            break;
                        };
                        if paths.is_empty() {
                            // Only excluded paths changed: nothing to send.
                            tracing::debug!("changes settled, all in excluded paths");
                            continue;
                        }
                        tracing::debug!(changed = paths.len(), "changes settled");
                        changed = Some(paths);
                    }
                }
            }
            break;
        }
        if watch.as_ref().is_some_and(|(w, _)| w.out_of_watches()) {
            tracing::warn!(
                "watch: stopped (a directory could not be watched); \
                 going on with periodic full scans only"
            );
            changed = None;
            watch = None;
            ctx.status.update_watching(|_| None);
        }
    }
}

/// `paths` (absolute, below the source) without those the user's exclusion
/// rules leave out: a change there must not start a run.
fn without_left_out(
    root: &Path,
    rules: &crate::scan::ExcludeRules,
    paths: Vec<PathBuf>,
) -> Vec<PathBuf> {
    let Ok(source) = crate::scan::SourceDir::open(root) else {
        // The run reports why the source cannot be read.
        return paths;
    };
    paths
        .into_iter()
        .filter(|path| match path.strip_prefix(root) {
            Ok(rel) => !crate::scan::is_left_out(&source, rules, rel),
            Err(_) => true,
        })
        .collect()
}

fn finish(
    ctx: &SenderContext,
    result: Result<RunSummary, RunError>,
) -> Result<RunSummary, SenderError> {
    ctx.status.set_phase(SenderPhase::Stopped);
    Ok(result?)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::copies::CopiesError;

    /// Asserts that `{:#}` (anyhow's rendering in `main`) and
    /// [`crate::chain::chain`] of `e` hold each cause's text once.
    fn each_cause_once(e: impl std::error::Error + Send + Sync + 'static) {
        let mut causes = Vec::new();
        let mut cause = e.source();
        while let Some(c) = cause {
            causes.push(c.to_string());
            cause = c.source();
        }
        let line = crate::chain::chain(&e);
        let alternate = format!("{:#}", anyhow::Error::new(e));
        for rendered in [&alternate, &line] {
            for c in &causes {
                assert_eq!(
                    rendered.matches(c.as_str()).count(),
                    1,
                    "{c:?} in {rendered}"
                );
            }
        }
    }

    fn copy_failed() -> CopiesError {
        CopiesError::Io {
            what: "write",
            path: "/copies/a".into(),
            source: std::io::Error::other("disk on fire"),
        }
    }

    #[test]
    fn the_senders_errors_name_each_cause_once() {
        let read = || SourceError::Read(std::io::Error::other("bad sector"));
        each_cause_once(SendEntryError::Source(read()));
        each_cause_once(SendEntryError::Source(SourceError::Copy(copy_failed())));
        each_cause_once(SendEntryError::Delta(DeltaError::Source(read())));
        each_cause_once(SendEntryError::Copy(copy_failed()));
        each_cause_once(SendEntryError::Compress(std::io::Error::other("zstd")));
        each_cause_once(RunError::Lost(SendEntryError::Source(read())));
        each_cause_once(SenderError::Run(RunError::Lost(SendEntryError::Copy(
            copy_failed(),
        ))));
        each_cause_once(RunError::Cancelled(crate::tasks::Cancelled));
        let weak = || ferry_proto::seal::SealError::WeakPublicKey;
        each_cause_once(RunError::Seal(weak()));
        each_cause_once(RunError::Lost(SendEntryError::Seal(weak())));
    }

    #[test]
    fn a_cut_off_run_says_so_before_its_cause() {
        let e = RunError::Lost(SendEntryError::Source(SourceError::Changed));
        assert_eq!(
            crate::chain::chain(&e),
            "the run was cut off: changed while being read; it will be sent on the next run"
        );
    }
}
