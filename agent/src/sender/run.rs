//! One sender run, in order: scan, connect and be admitted
//! ([`super::control`]), plan against the index, send entries with several
//! in flight (bundles and a stream each), propagate deletions, finish,
//! record ([`super::record`]).

use std::path::PathBuf;
use std::sync::Arc;
use std::time::{Duration, Instant};

use ferry_proto::{RelPath, RunReport};
use tokio::sync::mpsc;
use tokio::task::JoinSet;
use tokio_util::sync::CancellationToken;

use super::bundle::{self, EntryOutcome};
use super::control::{admit, Admitted};
use super::file_stream::{send_entry, SendEntryError, SentKind, TransferContext};
use super::record::{self, Acked};
use super::sealed::Sealing;
use super::{RunError, SenderContext};
use crate::config::FolderProtect;
use crate::index::{Index, Plan, PlanItem, SenderRun};
use crate::link::Link;
use crate::scan::{self, Scan};
use crate::summary::{problem_lines, RunSummary};
use crate::tasks::blocking;
use crate::transport;

/// Entries a sender keeps in flight at once (also capped by the receiver):
/// many, so small files are not paced by round trips and the receiver can
/// make them durable in large batches.
pub const MAX_IN_FLIGHT: usize = 256;
/// Files larger than [`LARGE_FILE`] in flight at once: each holds a few
/// megabytes of read-ahead, and one or two already fill the link.
const MAX_LARGE_IN_FLIGHT: usize = 2;
const LARGE_FILE: u64 = 1024 * 1024;
/// Acknowledged entries recorded in the index per transaction.
const INDEX_BATCH: usize = 512;
/// How long a finished run waits for its connection close to be sent.
const CLOSE_GRACE: Duration = Duration::from_millis(30);
/// Deletions per `Delete` message.
const DELETE_BATCH: usize = 1000;

/// Runs once against the receiver at `remote` whose id must be accepted by
/// `ctx.check_receiver`. `changed` (watch mode): only these paths
/// (absolute) changed, so only the directories holding them are scanned;
/// `None`: the whole tree.
pub async fn run_once(
    ctx: &SenderContext,
    shutdown: &CancellationToken,
    changed: Option<Vec<PathBuf>>,
) -> Result<RunSummary, RunError> {
    let started = Instant::now();
    let started_ms = now_ms();
    if let Some(embedded) = ctx.embedded.clone() {
        // The embedded receiver, in this process, over a connection in
        // memory. Its store is checked beside the scan; connecting waits for
        // that check.
        let connect = async move {
            embedded.ready().wait().await.map_err(RunError::Embedded)?;
            Ok(embedded.connect())
        };
        let mut attempt = attempt(ctx, shutdown, changed, connect, started).await?;
        // No wire: what the connection in memory carried, both ways.
        attempt.summary.bytes_on_wire = attempt.link.bytes_both_ways();
        crate::link::Closable::close(&attempt.link, 0, b"done");
        return wrap_up(ctx, attempt, started, started_ms).await;
    }
    let remote = ctx.remote().await?;
    let endpoint = transport::client_endpoint(&ctx.identity, remote)?;
    let connect = async { Ok(transport::connect(&endpoint, remote).await?) };
    let mut attempt = attempt(ctx, shutdown, changed, connect, started).await?;
    attempt.summary.bytes_on_wire = transport::bytes_on_wire(&attempt.link);
    attempt.link.close(quinn::VarInt::from_u32(0), b"done");
    // Long enough for the close to leave; the full drain (three probe
    // timeouts) would add about 100 ms to every run for nothing.
    let _ = tokio::time::timeout(CLOSE_GRACE, endpoint.wait_idle()).await;
    wrap_up(ctx, attempt, started, started_ms).await
}

/// A run that reached the receiver, before it is wrapped up.
pub(super) struct Attempt<L> {
    pub summary: RunSummary,
    /// The source root the run read through.
    pub root: Arc<scan::SourceDir>,
    pub link: L,
    pub result: Result<(), RunError>,
}

/// Scans while connecting (`connect`) and being admitted, then plans and
/// sends. Fails only if the scan or the connection did; what failed after
/// is the attempt's `result`.
pub(super) async fn attempt<L: Link>(
    ctx: &SenderContext,
    shutdown: &CancellationToken,
    changed: Option<Vec<PathBuf>>,
    connect: impl std::future::Future<Output = Result<L, RunError>>,
    started: Instant,
) -> Result<Attempt<L>, RunError> {
    let mut summary = RunSummary::default();
    // 1. Scan (stat only) while the connection is being set up.
    let source = ctx.settings.source.clone();
    let exclude = ctx.exclude.clone();
    let rules = ctx.settings.exclude.clone();
    // The root is opened once: the scan and every read of the run go
    // through this descriptor, never outside it.
    let scanned = blocking(move || {
        let root = scan::SourceDir::open(&source).map_err(RunError::Scan)?;
        let scan = match changed {
            Some(changed) => {
                let roots = super::watch::scan_roots(&source, &changed);
                scan::scan_dirs(&root, &exclude, &rules, roots)
            }
            None => scan::scan_filtered(&root, &exclude, &rules),
        };
        Ok::<_, RunError>((Arc::new(root), scan))
    });
    // Admitted while the scan runs (see `admit`).
    let connected = async {
        let link = connect.await?;
        let admitted = admit(ctx, &link).await;
        Ok::<_, RunError>((link, admitted))
    };
    let (scan, connected) = tokio::join!(scanned, connected);
    let (root, scan): (Arc<scan::SourceDir>, Scan) = scan??;
    summary.entries_scanned = scan.entries.len() as u64;
    summary.partial_scan = scan.partial.is_some();
    summary.dirs_scanned = scan
        .entries
        .iter()
        .filter(|e| e.kind == scan::ScanKind::Dir)
        .count() as u64;
    tracing::debug!(
        entries = scan.entries.len(),
        stat_calls = scan.stats.stat_calls,
        excluded_dirs = scan.stats.excluded_dirs,
        excluded_files = scan.stats.excluded_files,
        partial = scan.partial.is_some(),
        ms = started.elapsed().as_millis() as u64,
        "scanned"
    );
    for skipped in &scan.skipped {
        summary.skipped += 1;
        tracing::warn!(path = %skipped.path.display(), "skipped: {}", skipped.message);
    }
    for problem in &scan.errors {
        summary.problem(problem.path.display().to_string(), problem.message.clone());
    }

    // 2. Plan, send.
    let (link, admitted) = connected?;
    let result = match admitted {
        Ok(admitted) => {
            session(
                ctx,
                &link,
                admitted,
                root.clone(),
                scan,
                &mut summary,
                shutdown,
            )
            .await
        }
        Err(e) => Err(e),
    }
    .map_err(|e| receiver_reason_first(&link, e));
    Ok(Attempt {
        summary,
        root,
        link,
        result,
    })
}

/// Completes the local copies of a run whose link is closed, and records it
/// in the local history.
pub(super) async fn wrap_up<L>(
    ctx: &SenderContext,
    attempt: Attempt<L>,
    started: Instant,
    started_ms: i64,
) -> Result<RunSummary, RunError> {
    let Attempt {
        mut summary,
        root,
        result,
        ..
    } = attempt;
    if let Some(copies) = ctx.copies.clone() {
        if result.is_ok() {
            record::complete_copies(ctx, copies.clone(), root, &mut summary).await;
        }
        copies.tidy();
    }
    summary.duration_ms = started.elapsed().as_millis() as u64;
    if result.is_err() {
        // The summary of a run that did not complete is not printed: say
        // here, in a line per reason, which files did not make it.
        for line in problem_lines(&summary.problems, false) {
            tracing::warn!("{line}");
        }
    }
    let outcome = match &result {
        Ok(()) if summary.errors == 0 => "complete".to_string(),
        Ok(()) => "complete with errors".to_string(),
        Err(e) => format!("failed: {}", crate::chain::Chain(&e)),
    };
    // Refusals and busy receivers are not runs worth a history row.
    if !matches!(
        result,
        Err(RunError::Busy { .. } | RunError::Refused { .. })
    ) {
        let row = SenderRun {
            id: 0,
            started_ms,
            finished_ms: now_ms(),
            files_sent: summary.files_sent,
            files_unchanged: summary.files_unchanged,
            files_deleted: summary.files_deleted,
            bytes_file_data: Some(summary.bytes_file_data),
            bytes_file_data_wire: summary.bytes_file_data_wire,
            bytes_on_wire: summary.bytes_on_wire,
            errors: summary.errors,
            receiver_run: summary.run_id,
            outcome,
        };
        // An SQLite write: on the blocking pool, like every other index use.
        record::record_run(ctx, row).await;
    }
    result.map(|()| summary)
}

/// A connection the receiver closed with a reason (its disk is full, it is
/// shutting down) breaks every stream of the run; the reason is what the
/// user needs, so it replaces the stream error it caused.
fn receiver_reason_first(link: &impl Link, e: RunError) -> RunError {
    if !matches!(
        e,
        RunError::Protocol(_) | RunError::Connection(_) | RunError::Lost(_)
    ) {
        return e;
    }
    match link.close_reason() {
        Some(quinn::ConnectionError::ApplicationClosed(close)) if !close.reason.is_empty() => {
            RunError::ReceiverEnded(String::from_utf8_lossy(&close.reason).into_owned())
        }
        _ => e,
    }
}

fn now_ms() -> i64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_millis() as i64)
        .unwrap_or(0)
}

async fn session<L: Link>(
    ctx: &SenderContext,
    link: &L,
    admitted: Admitted,
    root: Arc<scan::SourceDir>,
    scan: Scan,
    summary: &mut RunSummary,
    shutdown: &CancellationToken,
) -> Result<(), RunError> {
    let Admitted {
        receiver_id,
        mut control,
        welcome,
    } = admitted;

    // 3. Plan against the index of this receiver and folder (opened before
    // `Hello`, see `admit`). A receiver that cannot vouch for what the index
    // says it acknowledged is offered everything again.
    let target = super::control::index_target(ctx, receiver_id);
    let index_path = ctx.settings.state.join("index.db");
    let source = root.clone();
    let index_slot = ctx.index.clone();
    let run_id = welcome.run_id;
    let resync = welcome.resync;
    // Offering everything again takes the whole tree: a partial scan (watch
    // mode) would leave the receiver to take the rest as deleted.
    let scan = match scan.partial {
        Some(_) if resync => {
            let (root, exclude, rules) = (
                root.clone(),
                ctx.exclude.clone(),
                ctx.settings.exclude.clone(),
            );
            let full = blocking(move || scan::scan_filtered(&root, &exclude, &rules)).await?;
            // Counted, so that the receiver takes nothing unread as deleted.
            for problem in &full.errors {
                summary.problem(problem.path.display().to_string(), problem.message.clone());
            }
            full
        }
        _ => scan,
    };
    let plan: (Plan, u64) = blocking(move || {
        let mut slot = index_slot.lock().map_err(|_| RunError::IndexPoisoned)?;
        let mut index = match slot.take() {
            Some(index) if index.target() == target => index,
            _ => Index::open(&index_path, &target)?,
        };
        index.set_run(run_id);
        if resync {
            let taken_back = index.unconfirm_all()?;
            tracing::warn!(
                entries = taken_back,
                "the receiver does not hold every run this sender recorded as stored (its store was put back from an older copy): every entry is offered again, and only what it lacks is sent"
            );
        }
        let plan = index.plan(&source, scan)?;
        let indexed = index.len()?;
        *slot = Some(index);
        Ok::<_, RunError>((plan, indexed))
    })
    .await??;
    // The mass-delete guard: stop before anything is sent or deleted.
    let (plan, indexed) = plan;
    ctx.settings
        .delete_guard
        .check(plan.deleted.len() as u64, indexed)?;
    summary.files_unchanged = plan.unchanged;
    for problem in &plan.problems {
        summary.problem(problem.path.display().to_string(), problem.message.clone());
    }
    let bytes_total = plan
        .items
        .entries()
        .filter(|e| matches!(e.kind, scan::ScanKind::File))
        .map(|e| e.size)
        .sum();
    // Running first: entering it clears the last run's counters.
    ctx.status.set_phase(crate::status::SenderPhase::Running {
        started: std::time::SystemTime::now(),
    });
    ctx.status
        .progress
        .reset(plan.items.len() as u64, bytes_total);
    tracing::info!(
        to_send = plan.items.len(),
        unchanged = plan.unchanged,
        to_delete = plan.deleted.len(),
        "run planned"
    );

    // 4. Entries, several in flight. One run key per attempt, shared by all
    // its entries.
    let seal = match &ctx.settings.protect {
        FolderProtect::Plain => None,
        FolderProtect::Sealed { public, .. } => {
            let sealing = Sealing::new(public).map_err(RunError::Seal)?;
            Some(Arc::new(sealing.compressing(ctx.settings.compress)))
        }
    };
    let transfer = Arc::new(TransferContext {
        link: link.clone(),
        source: root,
        copies: ctx.copies.clone(),
        status: ctx.status.clone(),
        index: ctx.index.clone(),
        compress: ctx.settings.compress,
        limiter: ctx.limiter.clone(),
        seal,
    });
    let in_flight = MAX_IN_FLIGHT.min(welcome.max_streams.max(1) as usize);
    // Small files, directories and symlinks go in bundles, a few lanes of
    // them; the rest a stream each, in the streams left.
    // The large ones are taken out of the plan's buffer, which the bundled
    // keep: a tree of a million small files is not copied a second time.
    let mut bundled = plan.items;
    let fits = |entry: &scan::ScanEntry, action: &crate::index::Action| match &transfer.seal {
        Some(seal) => seal.fits(entry),
        None => bundle::fits(entry, action),
    };
    let single: Vec<PlanItem> = bundled.split_off_where(|e, a| !fits(e, a));
    let lanes = bundle::lanes_for(bundled.len()).min(in_flight - 1);
    let queue: bundle::Queue = Arc::new(std::sync::Mutex::new(bundled));
    // Bounded: lanes wait while the loop below records a batch.
    let (outcome_tx, mut outcomes) = mpsc::channel::<EntryOutcome>(MAX_IN_FLIGHT);
    let mut lane_tasks = JoinSet::new();
    for _ in 0..lanes {
        lane_tasks.spawn(bundle::lane(
            transfer.clone(),
            queue.clone(),
            outcome_tx.clone(),
            shutdown.clone(),
        ));
    }
    drop(outcome_tx);
    // With no lane, bundled entries go a stream each; so do the ones lanes
    // left (a lane whose stream failed stops early).
    let mut lanes_done = lanes == 0;
    let single_slots = in_flight - lanes;
    let mut tasks: JoinSet<EntryOutcome> = JoinSet::new();
    let mut acked: Acked = Vec::new();
    let mut lost: Option<SendEntryError> = None;
    let mut items = single.into_iter();
    let large = Arc::new(tokio::sync::Semaphore::new(MAX_LARGE_IN_FLIGHT));
    loop {
        while tasks.len() < single_slots && lost.is_none() && !shutdown.is_cancelled() {
            let item = match items.next() {
                Some(item) => item,
                None if lanes_done => match queue.lock().ok().and_then(|mut q| q.pop_front()) {
                    Some(item) => item,
                    None => break,
                },
                None => break,
            };
            let transfer = transfer.clone();
            let token = shutdown.clone();
            let large = large.clone();
            tasks.spawn(async move {
                let path = item.entry.path.to_string();
                let _slot = match item.entry.size > LARGE_FILE {
                    true => large.acquire_owned().await.ok(),
                    false => None,
                };
                let result = tokio::select! {
                    r = send_entry(&transfer, item) => r,
                    _ = token.cancelled() => Err(SendEntryError::Stopped),
                };
                (path, result)
            });
        }
        let (path, result) = tokio::select! {
            Some(joined) = tasks.join_next() => joined_outcome(joined)?,
            outcome = outcomes.recv(), if !lanes_done => match outcome {
                Some(outcome) => outcome,
                None => {
                    lanes_done = true;
                    continue;
                }
            },
            else => break,
        };
        ctx.status.progress.entry_done();
        match result {
            Ok(sent) => {
                match sent.kind {
                    SentKind::Content(bytes) => {
                        summary.files_sent += 1;
                        summary.bytes_file_data += sent.entry.size;
                        summary.bytes_file_data_new += bytes.fresh;
                        summary.bytes_file_data_wire += bytes.wire;
                    }
                    SentKind::Symlink => summary.files_sent += 1,
                    SentKind::MetadataOnly => summary.files_metadata_only += 1,
                    SentKind::Dir => summary.dirs_sent += 1,
                }
                let copied = ctx.copies.is_some() && sent.kind != SentKind::MetadataOnly;
                acked.push((sent.entry, sent.hash, sent.chunks, copied));
                if acked.len() >= INDEX_BATCH {
                    record::record_stored(ctx, std::mem::take(&mut acked)).await?;
                }
            }
            Err(e) if e.is_connection_lost() => {
                lost.get_or_insert(e);
            }
            Err(_) if shutdown.is_cancelled() => {}
            Err(e) => {
                // Listed in the summary (one line per reason, -v: each).
                tracing::debug!(path = %path, "not sent: {}", crate::chain::Chain(&e));
                let mut message = crate::chain::chain(&e);
                if let Some(seal) = &transfer.seal {
                    message = seal.real_names(&message, &path);
                }
                summary.problem(path, message);
            }
        }
    }
    // Every lane has ended: its outcomes are all in.
    while lane_tasks.join_next().await.is_some() {}
    record::record_stored(ctx, acked).await?;
    if shutdown.is_cancelled() {
        return Err(RunError::Stopped);
    }
    if let Some(e) = lost {
        return Err(RunError::Lost(e));
    }

    // 5. Deletions: the receiver archives; it never destroys. A sealed
    // folder's entries are deleted by their opaque paths, each on its own
    // (the plan lists a directory's contents before it).
    for batch in plan.deleted.chunks(DELETE_BATCH) {
        let wire = match &transfer.seal {
            Some(seal) => seal.wire_paths(batch),
            None => batch.to_vec(),
        };
        let failed = control.delete(wire.clone()).await?;
        let mut done = batch.to_vec();
        let real = |sent: &RelPath| wire.iter().position(|p| p == sent).map(|i| &batch[i]);
        done.retain(|p| !failed.iter().any(|f| real(&f.path) == Some(p)));
        for f in failed {
            summary.problem(
                real(&f.path).unwrap_or(&f.path).to_string(),
                format!("not deleted on the receiver: {}", f.failure.message),
            );
        }
        summary.files_deleted += done.len() as u64;
        record::record_deleted(ctx, done).await?;
    }

    // 6. Finish: the receiver records the run.
    let report = RunReport {
        files_sent: summary.files_sent,
        files_unchanged: summary.files_unchanged,
        files_deleted: summary.files_deleted,
        bytes_file_data: summary.bytes_file_data,
        errors: summary.errors,
    };
    summary.run_id = Some(control.finish(report).await?);
    Ok(())
}

/// The outcome of an entry's task; a panic in it is resumed here.
fn joined_outcome(
    joined: Result<EntryOutcome, tokio::task::JoinError>,
) -> Result<EntryOutcome, RunError> {
    match joined {
        Ok(outcome) => Ok(outcome),
        Err(e) if e.is_panic() => std::panic::resume_unwind(e.into_panic()),
        // Only the runtime shutting down cancels a task of the set.
        Err(_) => Err(crate::tasks::Cancelled.into()),
    }
}

/// The canonical forms of paths that must never be scanned as part of the
/// source (Ferry's own state, keep-copies and embedded store, should they lie
/// inside it). Paths that do not exist are left out.
pub fn excluded_paths(paths: &[&std::path::Path]) -> Vec<PathBuf> {
    paths.iter().filter_map(|p| p.canonicalize().ok()).collect()
}
