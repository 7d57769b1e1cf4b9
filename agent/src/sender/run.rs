//! One sender run: scan, connect, plan against the index, send entries with
//! several in flight, propagate deletions, finish, record.

use std::path::PathBuf;
use std::sync::Arc;
use std::time::{Duration, Instant};

use ferry_proto::{Hash, Hello, Message, RefuseCode, RunReport};
use tokio::sync::mpsc;
use tokio::task::JoinSet;
use tokio_util::sync::CancellationToken;

use super::bundle;
use super::transfer::{send_entry, EntryError, SentKind, TransferContext};
use super::{RunError, SenderContext};
use crate::chunk::ChunkInfo;
use crate::copies::{self, Copies, CopyRecord, Held};
use crate::index::{Index, Plan, PlanItem, SenderRun};
use crate::scan::{self, Scan, ScanEntry};
use crate::stream::{Channel, StreamError};
use crate::summary::{problem_lines, RunSummary};
use crate::{tls, transport};

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

async fn blocking<T: Send + 'static>(
    f: impl FnOnce() -> Result<T, RunError> + Send + 'static,
) -> Result<T, RunError> {
    tokio::task::spawn_blocking(f)
        .await
        .map_err(|e| RunError::Internal(crate::chain::chain(&e)))?
}

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
    let mut summary = RunSummary::default();

    // 1. Scan (stat only) while the connection is being set up.
    let remote = ctx.remote().await?;
    let endpoint = transport::client_endpoint(&ctx.identity, remote)?;
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
        Ok((Arc::new(root), scan))
    });
    // Admitted while the scan runs (see `admit`).
    let connected = async {
        let conn = transport::connect(&endpoint, remote).await?;
        let admitted = admit(ctx, &conn).await;
        Ok::<_, RunError>((conn, admitted))
    };
    let (scan, connected) = tokio::join!(scanned, connected);
    let (root, scan): (Arc<scan::SourceDir>, Scan) = scan?;
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
    let (conn, admitted) = connected?;
    let result = match admitted {
        Ok(admitted) => {
            session(
                ctx,
                &conn,
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
    .map_err(|e| receiver_reason_first(&conn, e));
    summary.bytes_on_wire = transport::bytes_on_wire(&conn);
    conn.close(quinn::VarInt::from_u32(0), b"done");
    // Long enough for the close to leave; the full drain (three probe
    // timeouts) would add about 100 ms to every run for nothing.
    let _ = tokio::time::timeout(CLOSE_GRACE, endpoint.wait_idle()).await;
    if let Some(copies) = ctx.copies.clone() {
        if result.is_ok() {
            complete_copies(ctx, copies.clone(), root, &mut summary).await;
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
        let index = ctx.index.clone();
        let recorded = blocking(move || {
            let mut slot = index
                .lock()
                .map_err(|_| RunError::Internal("index lock".into()))?;
            match slot.as_mut() {
                Some(index) => Ok(index.record_run(&row)?),
                None => Ok(0),
            }
        })
        .await;
        if let Err(e) = recorded {
            tracing::warn!(
                "could not record the run in the local history: {}",
                crate::chain::Chain(&e)
            );
        }
    }
    result.map(|()| summary)
}

/// A connection the receiver closed with a reason (its disk is full, it is
/// shutting down) breaks every stream of the run; the reason is what the
/// user needs, so it replaces the stream error it caused.
fn receiver_reason_first(conn: &quinn::Connection, e: RunError) -> RunError {
    if !matches!(
        e,
        RunError::Protocol(_) | RunError::Connection(_) | RunError::Lost(_)
    ) {
        return e;
    }
    match conn.close_reason() {
        Some(quinn::ConnectionError::ApplicationClosed(close)) if !close.reason.is_empty() => {
            RunError::ReceiverEnded(String::from_utf8_lossy(&close.reason).into_owned())
        }
        _ => e,
    }
}

/// Makes the keep-copies directory hold every entry the receiver holds
/// (see [`crate::copies::complete`]); a failure is one problem of the run.
async fn complete_copies(
    ctx: &SenderContext,
    copies: Arc<Copies>,
    source: Arc<scan::SourceDir>,
    summary: &mut RunSummary,
) {
    let index = ctx.index.clone();
    let root = copies.root().to_path_buf();
    let done = blocking(move || {
        let entries = {
            let slot = index
                .lock()
                .map_err(|_| RunError::Internal("index lock".into()))?;
            match slot.as_ref() {
                Some(index) => index.entries()?,
                None => return Ok(None),
            }
        };
        Ok(Some(copies::complete(&copies, &entries, &source)))
    })
    .await;
    let done = match done {
        Ok(Some(Ok(done))) => Ok(Some(done)),
        Ok(Some(Err(e))) => Err(crate::chain::chain(&e)),
        Ok(None) => Ok(None),
        Err(e) => Err(crate::chain::chain(&e)),
    };
    match done {
        Ok(Some(done)) => {
            if done.copied + done.metadata + done.removed > 0 {
                tracing::info!(
                    copied = done.copied,
                    updated = done.metadata,
                    removed = done.removed,
                    "keep-copies: completed from the source"
                );
            }
            for (path, why) in &done.left {
                tracing::debug!(path = %path, "keep-copies: no copy yet: {why}");
            }
        }
        Ok(None) => {}
        Err(e) => {
            tracing::warn!("{e}");
            summary.problem(root.display().to_string(), e);
        }
    }
}

fn now_ms() -> i64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_millis() as i64)
        .unwrap_or(0)
}

/// A connection on which the receiver has welcomed this sender.
struct Admitted {
    receiver_id: crate::identity::DeviceId,
    control: Channel,
    welcome: ferry_proto::Welcome,
}

/// Checks the receiver, says `Hello` and waits for `Welcome`: done while
/// the scan runs, since a receiver gives a sender only so long
/// ([`crate::receiver::HELLO_TIMEOUT`]) between connecting and `Hello`, and
/// scanning a tree of a million files can take longer.
async fn admit(ctx: &SenderContext, conn: &quinn::Connection) -> Result<Admitted, RunError> {
    let receiver_id = tls::peer_id(conn)?;
    ctx.check_receiver(receiver_id)?;
    let pairing = match &ctx.settings.pairing_secret {
        Some(secret) => Some(ferry_proto::pairing_proof(
            secret,
            &tls::pairing_material(conn)?,
        )),
        None => None,
    };
    let mut control = Channel::new(conn.open_bi().await?);
    control
        .send
        .send(&Message::Hello(Hello {
            protocol: ferry_proto::PROTOCOL_VERSION,
            name: ctx.settings.name.clone(),
            folder: ctx.settings.folder.clone(),
            pairing,
            agent: format!("ferry {}", env!("CARGO_PKG_VERSION")),
        }))
        .await?;
    let welcome = match control.recv.expect().await? {
        Message::Welcome(welcome) => welcome,
        Message::Busy { retry_after_ms } => {
            return Err(RunError::Busy {
                retry_after: Duration::from_millis(retry_after_ms.min(3_600_000)),
            })
        }
        Message::Refused(refusal) => {
            return Err(RunError::Refused {
                code: refusal.code,
                message: refusal.message,
            })
        }
        other => return Err(StreamError::unexpected("Welcome", &other).into()),
    };
    if welcome.paired {
        tracing::info!(receiver = %receiver_id, "paired with the receiver; later runs need no pairing secret");
    }
    Ok(Admitted {
        receiver_id,
        control,
        welcome,
    })
}

async fn session(
    ctx: &SenderContext,
    conn: &quinn::Connection,
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

    // 3. Plan against the index of this receiver and folder.
    let target = format!("{}/{}", receiver_id, ctx.settings.folder.as_str());
    let index_path = ctx.settings.state.join("index.db");
    let source = root.clone();
    let index_slot = ctx.index.clone();
    let plan: (Plan, u64) = blocking(move || {
        let mut slot = index_slot
            .lock()
            .map_err(|_| RunError::Internal("index lock".into()))?;
        let index = Index::open(&index_path, &target)?;
        let plan = index.plan(&source, scan)?;
        let indexed = index.len()?;
        *slot = Some(index);
        Ok((plan, indexed))
    })
    .await?;
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
        .iter()
        .filter(|i| matches!(i.entry.kind, scan::ScanKind::File))
        .map(|i| i.entry.size)
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

    // 4. Entries, several in flight.
    let transfer = Arc::new(TransferContext {
        conn: conn.clone(),
        source: root,
        copies: ctx.copies.clone(),
        status: ctx.status.clone(),
        index: ctx.index.clone(),
        compress: ctx.settings.compress,
        limiter: ctx.limiter.clone(),
    });
    let in_flight = MAX_IN_FLIGHT.min(welcome.max_streams.max(1) as usize);
    // Small files, directories and symlinks go in bundles, a few lanes of
    // them; the rest a stream each, in the streams left.
    // The large ones are taken out of the plan's buffer, which the bundled
    // keep: a tree of a million small files is not copied a second time.
    let mut bundled = plan.items;
    let single: Vec<PlanItem> = bundled.extract_if(.., |i| !bundle::fits(i)).collect();
    let lanes = bundle::lanes_for(bundled.len()).min(in_flight - 1);
    let queue: bundle::Queue = Arc::new(std::sync::Mutex::new(bundled.into()));
    let (outcome_tx, mut outcomes) = mpsc::unbounded_channel();
    for _ in 0..lanes {
        tokio::spawn(bundle::lane(
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
    let mut tasks: JoinSet<bundle::Outcome> = JoinSet::new();
    let mut acked: Acked = Vec::new();
    let mut lost: Option<EntryError> = None;
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
                    _ = token.cancelled() => Err(EntryError::Internal("stopped".into())),
                };
                (path, result)
            });
        }
        let (path, result) = tokio::select! {
            Some(joined) = tasks.join_next() => {
                joined.map_err(|e| RunError::Internal(crate::chain::chain(&e)))?
            }
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
                    record_stored(ctx, std::mem::take(&mut acked)).await?;
                }
            }
            Err(e) if e.is_connection_lost() => {
                lost.get_or_insert(e);
            }
            Err(_) if shutdown.is_cancelled() => {}
            Err(e) => {
                // Listed in the summary (one line per reason, -v: each).
                tracing::debug!(path = %path, "not sent: {}", crate::chain::Chain(&e));
                summary.problem(path, crate::chain::chain(&e));
            }
        }
    }
    record_stored(ctx, acked).await?;
    if shutdown.is_cancelled() {
        return Err(RunError::Stopped);
    }
    if let Some(e) = lost {
        return Err(RunError::Lost(crate::chain::chain(&e)));
    }

    // 5. Deletions: the receiver archives; it never destroys.
    for batch in plan.deleted.chunks(DELETE_BATCH) {
        control
            .send
            .send(&Message::Delete {
                paths: batch.to_vec(),
            })
            .await?;
        let failed = match control.recv.expect().await? {
            Message::Deleted { failed } => failed,
            other => return Err(StreamError::unexpected("Deleted", &other).into()),
        };
        let mut done = batch.to_vec();
        done.retain(|p| !failed.iter().any(|f| &f.path == p));
        for f in failed {
            summary.problem(
                f.path.to_string(),
                format!("not deleted on the receiver: {}", f.failure.message),
            );
        }
        summary.files_deleted += done.len() as u64;
        let copies = ctx.copies.clone();
        let index = ctx.index.clone();
        blocking(move || {
            if let Some(copies) = copies {
                for path in &done {
                    if let Err(e) = copies.remove(path) {
                        tracing::warn!(path = %path, "could not remove the local copy: {}", crate::chain::Chain(&e));
                    }
                }
                if let Err(e) = copies.forget(&done) {
                    tracing::warn!("{e}");
                }
            }
            let mut slot = index
                .lock()
                .map_err(|_| RunError::Internal("index lock".into()))?;
            if let Some(index) = slot.as_mut() {
                index.record_deleted(&done)?;
            }
            Ok(())
        })
        .await?;
    }

    // 6. Finish: the receiver records the run.
    let report = RunReport {
        files_sent: summary.files_sent,
        files_unchanged: summary.files_unchanged,
        files_deleted: summary.files_deleted,
        bytes_file_data: summary.bytes_file_data,
        errors: summary.errors,
    };
    control.send.send(&Message::Finish(report)).await?;
    match control.recv.expect().await? {
        Message::Committed { run_id } => summary.run_id = Some(run_id),
        other => return Err(StreamError::unexpected("Committed", &other).into()),
    }
    control.send.finish();
    Ok(())
}

/// Entries the receiver acknowledged, with their content hash, for chunked
/// content their chunk list, and whether their local copy was written.
type Acked = Vec<(ScanEntry, Option<Hash>, Option<Vec<ChunkInfo>>, bool)>;

async fn record_stored(ctx: &SenderContext, acked: Acked) -> Result<(), RunError> {
    if acked.is_empty() {
        return Ok(());
    }
    let index = ctx.index.clone();
    let copies = ctx.copies.clone();
    blocking(move || {
        let mut slot = index
            .lock()
            .map_err(|_| RunError::Internal("index lock".into()))?;
        if let Some(index) = slot.as_mut() {
            let mut entries = Vec::with_capacity(acked.len());
            let mut lists = Vec::new();
            let mut copied = Vec::new();
            for (entry, hash, chunks, copy) in acked {
                if let (Some(hash), Some(chunks)) = (hash, chunks) {
                    lists.push((entry.path.clone(), hash, chunks));
                }
                if copy {
                    copied.extend(copy_record(&entry, hash));
                }
                entries.push((entry, hash));
            }
            index.record_stored(&entries)?;
            index.record_chunks(&lists)?;
            // After the index: a copy recorded is one the index knows.
            if let Some(copies) = copies {
                if let Err(e) = copies.record(&copied) {
                    tracing::warn!("{e}");
                }
            }
        }
        Ok(())
    })
    .await
}

/// What the local copy of an acknowledged entry holds.
fn copy_record(entry: &ScanEntry, hash: Option<Hash>) -> Option<CopyRecord> {
    let held = match (&entry.kind, hash) {
        (scan::ScanKind::File, Some(hash)) => Held::File {
            hash,
            size: entry.size,
        },
        (scan::ScanKind::File, None) => return None,
        (scan::ScanKind::Dir, _) => Held::Dir,
        (scan::ScanKind::Symlink { target }, _) => Held::Symlink {
            target: target.clone(),
        },
    };
    Some(CopyRecord {
        path: entry.path.clone(),
        held,
        mtime_ns: entry.mtime_ns,
        mode: entry.mode,
    })
}

/// The canonical forms of paths that must never be scanned as part of the
/// source (Ferry's own state, keep-copies and embedded store, should they lie
/// inside it). Paths that do not exist are left out.
pub fn excluded_paths(paths: &[&std::path::Path]) -> Vec<PathBuf> {
    paths.iter().filter_map(|p| p.canonicalize().ok()).collect()
}

/// True if the refusal will not go away by retrying soon.
pub fn is_permanent(code: RefuseCode) -> bool {
    !matches!(code, RefuseCode::ShuttingDown)
}
