//! The control stream of an admitted run: a state machine without I/O
//! ([`RunControl`]: events in, actions out) and its driver ([`drive`]).
//!
//! The sender asks for deletions (`Delete`, answered `Deleted`) and ends
//! the run with `Finish`: once every file stream is answered the run is
//! recorded complete and answered `Committed`. Any other message breaks
//! the protocol (answered `Refused`, the run fails); the sender leaving
//! (the stream ended or the connection went away) or the receiver stopping
//! records the run as interrupted.

use std::sync::atomic::Ordering;
use std::sync::Arc;
use std::time::Duration;

use ferry_proto::{
    Failure, Hello, Message, Name, PathFailure, Refusal, RefuseCode, RelPath, RunReport,
};
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;

use super::context::RunContext;
use super::{SessionError, CLOSE_DONE};
use crate::identity::DeviceId;
use crate::link::Link;
use crate::store::RunEnding;
use crate::stream::{Channel, StreamError};

/// How the run's control stream ended: `Ok(Some(report))` the sender
/// finished it, `Ok(None)` the sender left, `Err` it failed or the receiver
/// is stopping.
pub(super) type Outcome = Result<Option<RunReport>, SessionError>;

/// What happened, as the driver tells the machine.
#[derive(Debug)]
pub(super) enum Event {
    /// A message was read from the control stream.
    Received(Message),
    /// The stream ended, or the sender or its connection went away.
    Left,
    /// The receiver is shutting down.
    Shutdown,
    /// The deletions asked for are applied; these paths failed.
    Deleted(Vec<PathFailure>),
    /// The message of the last [`Action::Send`] or [`Action::Refuse`] is sent.
    Sent,
    /// Every file stream of the run is answered.
    FilesAnswered,
    /// The run's end is recorded in the catalog.
    Recorded,
    /// Carrying out the last action failed (the stream broke, the store).
    Failed(SessionError),
}

impl Event {
    /// The event for what a read of the control stream returned.
    pub(super) fn read(received: Result<Option<Message>, StreamError>) -> Event {
        match received {
            Ok(Some(message)) => Event::Received(message),
            Ok(None) => Event::Left,
            Err(e) if e.is_lost() => Event::Left,
            Err(e) => Event::Failed(e.into()),
        }
    }
}

/// What the driver must do next.
#[derive(Debug)]
pub(super) enum Action {
    /// Read the next message, or learn of the shutdown.
    Read,
    /// Delete these paths in the run; then [`Event::Deleted`].
    Delete(Vec<RelPath>),
    /// Send this message; then [`Event::Sent`].
    Send(Message),
    /// Send this refusal, whether or not it arrives; then [`Event::Sent`].
    Refuse(Message),
    /// Wait until every file stream is answered; then
    /// [`Event::FilesAnswered`].
    WaitForFiles,
    /// Record the run's end; `report`: the sender's, or `None` for one
    /// made of what arrived. Then [`Event::Recorded`].
    Record {
        ending: RunEnding,
        report: Option<RunReport>,
    },
    /// Send `Committed`, let the sender close, close: the run is done.
    Commit(Message),
    /// The session is over with this outcome (never `Ok(Some(_))`).
    End(Outcome),
}

/// Where the machine is.
#[derive(Debug)]
enum State {
    Reading,
    /// Waiting for the deletions' answer to be sent, then reading on.
    Answering,
    /// `Finish` arrived: the file streams are being waited for.
    Finishing(RunReport),
    /// The run is over; its end is being recorded, then this outcome.
    Ending(Outcome),
    /// `End` or `Commit` was given.
    Done,
}

/// The control stream of one admitted run, without I/O.
#[derive(Debug)]
pub(super) struct RunControl {
    /// The sender's name, for the refusal's words.
    name: Name,
    run: u64,
    state: State,
}

impl RunControl {
    pub(super) fn new(name: Name, run: u64) -> RunControl {
        RunControl {
            name,
            run,
            state: State::Reading,
        }
    }

    /// The first action: read.
    pub(super) fn start(&self) -> Action {
        Action::Read
    }

    /// Takes what happened; returns what to do next.
    pub(super) fn on(&mut self, event: Event) -> Action {
        let state = std::mem::replace(&mut self.state, State::Done);
        match (state, event) {
            // Whatever failed, the run is over: record it, then end.
            (State::Reading | State::Answering | State::Finishing(_), Event::Failed(e)) => {
                self.ending(Err(e))
            }
            (State::Ending(_), Event::Failed(e)) => Action::End(Err(e)),
            (State::Reading, Event::Received(Message::Delete { paths })) => {
                self.state = State::Answering;
                Action::Delete(paths)
            }
            (State::Reading, Event::Received(Message::Finish(report))) => {
                // Every entry was answered before the sender said Finish;
                // wait for their tasks to wind down all the same.
                self.state = State::Finishing(report);
                Action::WaitForFiles
            }
            (State::Reading, Event::Received(other)) => {
                let got = crate::stream::describe(&other);
                let message = format!("unexpected {got} on the control stream of {}", self.name);
                self.state = State::Ending(Err(SessionError::Refused(message.clone())));
                Action::Refuse(Message::Refused(Refusal {
                    code: RefuseCode::BadRequest,
                    message,
                }))
            }
            (State::Reading, Event::Left) => self.ending(Ok(None)),
            (State::Reading | State::Answering, Event::Shutdown) => {
                self.ending(Err(SessionError::Shutdown))
            }
            (State::Answering, Event::Deleted(failed)) => {
                self.state = State::Answering;
                Action::Send(Message::Deleted { failed })
            }
            (State::Answering, Event::Sent) => {
                self.state = State::Reading;
                Action::Read
            }
            (State::Finishing(report), Event::FilesAnswered) => self.ending(Ok(Some(report))),
            // The refusal is sent (or could not be): record the failed run.
            (State::Ending(outcome), Event::Sent) => self.ending(outcome),
            (State::Ending(Ok(Some(_))), Event::Recorded) => {
                Action::Commit(Message::Committed { run_id: self.run })
            }
            (State::Ending(outcome), Event::Recorded) => Action::End(outcome),
            // An event the driver should not have sent in this state (a bug
            // of the driver): the session ends rather than guess.
            (_, _) => Action::End(Err(SessionError::OutOfOrder)),
        }
    }

    /// The run is over with `outcome`: record it with the ending it means.
    fn ending(&mut self, outcome: Outcome) -> Action {
        let ending = match &outcome {
            Ok(Some(_)) => RunEnding::Complete,
            Ok(None) | Err(SessionError::Shutdown) => RunEnding::Interrupted,
            Err(_) => RunEnding::Failed,
        };
        let report = match &outcome {
            Ok(Some(report)) => Some(report.clone()),
            _ => None,
        };
        self.state = State::Ending(outcome);
        Action::Record { ending, report }
    }
}

/// Who the run is for, for the driver's log lines.
pub(super) struct Who<'a> {
    pub peer: DeviceId,
    pub hello: &'a Hello,
}

/// Drives the control stream of an admitted run to its end: reads, deletes,
/// waits for the file streams, records the run, answers `Committed`.
pub(super) async fn drive(
    link: &impl Link,
    who: Who<'_>,
    ctx: &Arc<RunContext>,
    mut control: Channel,
    files: &TaskTracker,
    shutdown: &CancellationToken,
) -> Result<(), SessionError> {
    let mut machine = RunControl::new(who.hello.name.clone(), ctx.run);
    let mut action = machine.start();
    loop {
        let event = match action {
            Action::Read => tokio::select! {
                _ = shutdown.cancelled() => Event::Shutdown,
                received = control.recv.recv() => Event::read(received),
            },
            Action::Delete(paths) => match delete(ctx, paths).await {
                Ok(failed) => Event::Deleted(failed),
                Err(e) => Event::Failed(e),
            },
            Action::Send(message) => match control.send.send(&message).await {
                Ok(()) => Event::Sent,
                Err(e) => Event::Failed(e.into()),
            },
            Action::Refuse(message) => {
                let _ = control.send.send(&message).await;
                Event::Sent
            }
            Action::WaitForFiles => {
                files.close();
                files.wait().await;
                Event::FilesAnswered
            }
            Action::Record { ending, report } => {
                let clean = report.as_ref().is_some_and(|r| r.errors == 0);
                if ctx.resync && ending == RunEnding::Complete && clean {
                    sweep(ctx).await?;
                }
                record(link, &who, ctx, ending, report).await?;
                Event::Recorded
            }
            Action::Commit(committed) => {
                control.send.send(&committed).await?;
                control.send.finish();
                tracing::debug!(peer = %who.peer, name = %who.hello.name, run = ctx.run, "run committed");
                // The sender closes once it has read `Committed`.
                let _ = tokio::time::timeout(Duration::from_secs(5), link.closed()).await;
                link.close(CLOSE_DONE, b"done");
                return Ok(());
            }
            Action::End(Ok(_)) => {
                tracing::warn!(peer = %who.peer, run = ctx.run, "sender left before finishing the run; recorded as interrupted");
                return Ok(());
            }
            Action::End(Err(e)) => return Err(e),
        };
        action = machine.on(event);
    }
}

/// Deletes `paths` in the run; the paths that failed, with why.
async fn delete(
    ctx: &Arc<RunContext>,
    paths: Vec<RelPath>,
) -> Result<Vec<PathFailure>, SessionError> {
    let ctx = ctx.clone();
    let failed = crate::tasks::blocking(move || {
        let mut failed = Vec::new();
        for path in paths {
            if let Err(e) = ctx.store.delete(&ctx.ns, ctx.run, &path) {
                failed.push(PathFailure {
                    path,
                    failure: Failure {
                        code: e.fail_code(),
                        message: crate::chain::chain(&e),
                    },
                });
            }
        }
        failed
    })
    .await?;
    Ok(failed)
}

/// The end of a resync run (`Welcome::resync`) that went through without
/// an error: the sender offered every entry it has, so an entry current here
/// that was neither stored this run nor found as offered is one the sender
/// deleted in a run this store lost. It is archived, as a deletion is.
async fn sweep(ctx: &Arc<RunContext>) -> Result<(), SessionError> {
    let run = ctx.run;
    let ctx = ctx.clone();
    let swept = crate::tasks::blocking(move || -> Result<u64, crate::store::StoreError> {
        let mut kept = std::mem::take(
            &mut *ctx
                .kept
                .lock()
                .unwrap_or_else(std::sync::PoisonError::into_inner),
        );
        kept.sort_unstable();
        let mut gone: Vec<RelPath> = ctx
            .store
            .current(&ctx.ns)?
            .into_iter()
            .filter(|v| v.run != ctx.run && kept.binary_search(&v.path).is_err())
            .map(|v| v.path)
            .collect();
        // Parents first: a deleted directory takes what is below it.
        gone.sort_unstable();
        let mut swept = 0;
        let mut last: Option<RelPath> = None;
        for path in gone {
            if last.as_ref().is_some_and(|dir| path.starts_with(dir)) {
                continue;
            }
            ctx.store.delete(&ctx.ns, ctx.run, &path)?;
            swept += 1;
            last = Some(path);
        }
        Ok(swept)
    })
    .await??;
    if swept > 0 {
        tracing::info!(
            run,
            entries = swept,
            "archived what the sender deleted in runs this store lost"
        );
    }
    Ok(())
}

/// Records the run's end in the catalog and logs the line an admin reads.
async fn record(
    link: &impl Link,
    who: &Who<'_>,
    ctx: &Arc<RunContext>,
    ending: RunEnding,
    report: Option<RunReport>,
) -> Result<(), SessionError> {
    let bytes_received = link.bytes_received();
    let report = report.unwrap_or_else(|| RunReport {
        files_sent: ctx.live.entries.load(Ordering::Relaxed),
        ..RunReport::default()
    });
    let (store, ns, run) = (ctx.store.clone(), ctx.ns.clone(), ctx.run);
    let logged = report.clone();
    let recorded =
        crate::tasks::blocking(move || store.finish_run(&ns, run, &report, bytes_received, ending))
            .await;
    log_run_end(ctx, who, ending, &logged, bytes_received);
    Ok(recorded??)
}

/// The one line an admin reads per run: who, what, how much, how long, and
/// how it ended (`completed`, `failed`, or `interrupted` when the sender left
/// or the receiver stopped).
fn log_run_end(
    ctx: &RunContext,
    who: &Who<'_>,
    ending: RunEnding,
    report: &RunReport,
    bytes_received: u64,
) {
    let result = match ending {
        RunEnding::Complete => "completed",
        RunEnding::Interrupted => "interrupted",
        RunEnding::Failed => "failed",
    };
    let duration = ctx.live.started.elapsed().unwrap_or_default();
    tracing::info!(
        peer = %who.peer,
        sender = %who.hello.name,
        folder = %who.hello.folder,
        run = ctx.run,
        result = %result,
        files = report.files_sent,
        unchanged = report.files_unchanged,
        deleted = report.files_deleted,
        bytes = report.bytes_file_data,
        bytes_received,
        failures = report.errors,
        duration_ms = duration.as_millis() as u64,
        "run {result}: {} file(s) sent ({}), {} failed, {:.1}s",
        report.files_sent,
        crate::summary::human_bytes(report.bytes_file_data),
        report.errors,
        duration.as_secs_f64(),
    );
}

#[cfg(test)]
mod tests {
    use super::*;
    use ferry_proto::{FailCode, FrameError};

    fn machine() -> RunControl {
        RunControl::new(Name::new("lap").expect("a valid name"), 7)
    }

    fn rel(s: &str) -> RelPath {
        RelPath::from_bytes(s).expect("a valid path")
    }

    fn report(files: u64) -> RunReport {
        RunReport {
            files_sent: files,
            ..RunReport::default()
        }
    }

    /// Feeds `events` in order; returns the action each one gave.
    fn feed(m: &mut RunControl, events: Vec<Event>) -> Vec<Action> {
        events.into_iter().map(|e| m.on(e)).collect()
    }

    #[test]
    fn it_starts_by_reading() {
        assert!(matches!(machine().start(), Action::Read));
    }

    #[test]
    fn delete_is_applied_answered_and_reading_goes_on() {
        let mut m = machine();
        let paths = vec![rel("a"), rel("b/c")];
        let a = m.on(Event::Received(Message::Delete {
            paths: paths.clone(),
        }));
        assert!(matches!(&a, Action::Delete(p) if *p == paths), "{a:?}");
        let failed = vec![PathFailure {
            path: rel("b/c"),
            failure: Failure {
                code: FailCode::Io,
                message: "disk".into(),
            },
        }];
        let a = m.on(Event::Deleted(failed.clone()));
        assert!(
            matches!(&a, Action::Send(Message::Deleted { failed: f }) if *f == failed),
            "{a:?}"
        );
        assert!(matches!(m.on(Event::Sent), Action::Read));
        // A second Delete is served the same way.
        let a = m.on(Event::Received(Message::Delete { paths: vec![] }));
        assert!(matches!(a, Action::Delete(p) if p.is_empty()));
    }

    #[test]
    fn finish_waits_for_the_files_records_complete_and_commits() {
        let mut m = machine();
        let a = m.on(Event::Received(Message::Finish(report(3))));
        assert!(matches!(a, Action::WaitForFiles), "{a:?}");
        let a = m.on(Event::FilesAnswered);
        assert!(
            matches!(&a, Action::Record { ending: RunEnding::Complete, report: Some(r) } if r.files_sent == 3),
            "{a:?}"
        );
        let a = m.on(Event::Recorded);
        assert!(
            matches!(a, Action::Commit(Message::Committed { run_id: 7 })),
            "{a:?}"
        );
    }

    #[test]
    fn a_sender_that_leaves_is_recorded_interrupted_and_ends_well() {
        let mut m = machine();
        let a = m.on(Event::read(Ok(None)));
        assert!(
            matches!(
                a,
                Action::Record {
                    ending: RunEnding::Interrupted,
                    report: None
                }
            ),
            "{a:?}"
        );
        assert!(matches!(m.on(Event::Recorded), Action::End(Ok(None))));
    }

    #[test]
    fn shutdown_records_interrupted_and_ends_as_shutdown() {
        let mut m = machine();
        let a = m.on(Event::Shutdown);
        assert!(
            matches!(
                a,
                Action::Record {
                    ending: RunEnding::Interrupted,
                    ..
                }
            ),
            "{a:?}"
        );
        let a = m.on(Event::Recorded);
        assert!(
            matches!(a, Action::End(Err(SessionError::Shutdown))),
            "{a:?}"
        );
    }

    #[test]
    fn another_message_is_refused_then_the_run_fails() {
        let mut m = machine();
        let a = m.on(Event::Received(Message::Stored));
        let Action::Refuse(Message::Refused(refusal)) = a else {
            panic!("not a refusal: {a:?}");
        };
        assert_eq!(refusal.code, RefuseCode::BadRequest);
        assert!(
            refusal.message.contains("on the control stream of lap"),
            "{}",
            refusal.message
        );
        let a = m.on(Event::Sent);
        assert!(
            matches!(
                a,
                Action::Record {
                    ending: RunEnding::Failed,
                    ..
                }
            ),
            "{a:?}"
        );
        let a = m.on(Event::Recorded);
        assert!(
            matches!(&a, Action::End(Err(SessionError::Refused(m))) if *m == refusal.message),
            "{a:?}"
        );
    }

    #[test]
    fn a_broken_stream_or_failed_delete_fails_the_run() {
        let mut m = machine();
        let broken = Event::read(Err(StreamError::Frame(FrameError::TooLarge {
            len: 1 << 30,
            max: 1 << 20,
        })));
        let a = m.on(broken);
        assert!(
            matches!(
                a,
                Action::Record {
                    ending: RunEnding::Failed,
                    ..
                }
            ),
            "{a:?}"
        );
        let a = m.on(Event::Recorded);
        assert!(
            matches!(a, Action::End(Err(SessionError::Stream(_)))),
            "{a:?}"
        );

        let mut m = machine();
        let actions = feed(
            &mut m,
            vec![
                Event::Received(Message::Delete {
                    paths: vec![rel("a")],
                }),
                Event::Failed(SessionError::Cancelled(crate::tasks::Cancelled)),
                Event::Recorded,
            ],
        );
        assert!(matches!(
            actions[1],
            Action::Record {
                ending: RunEnding::Failed,
                ..
            }
        ));
        assert!(matches!(
            actions[2],
            Action::End(Err(SessionError::Cancelled(_)))
        ));
    }

    #[test]
    fn an_event_out_of_order_ends_the_session() {
        let mut m = machine();
        assert!(matches!(
            m.on(Event::Recorded),
            Action::End(Err(SessionError::OutOfOrder))
        ));
    }
}
