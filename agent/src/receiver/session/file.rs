//! One file stream of a run: the driver of the pure entry machine
//! ([`EntryReceiver`]): it reads the stream, carries out each [`Step`]
//! (look up what is held, open a [`Sink`], write, verify) and hands the
//! change to the run's group committer ([`crate::store::commit`]), then
//! answers `Stored` or `Failed`.

use std::sync::atomic::Ordering;
use std::sync::Arc;

use ferry_proto::{Entry, EntryKind, FailCode, Failure, Message};
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;

use super::bundle;
use super::context::{
    commit, entry_message, failure, on_store, reserve, Received, RunContext, STREAM_LOST,
};
use super::sink::Sink;
use crate::link::Link;
use crate::receiver::entry::{EntryReceiver, Step};
use crate::receiver::quota::Reservation;
use crate::receiver::rebuild::ChunkedFile;
use crate::store::Op;
use crate::stream::Channel;

/// Accepts file streams until the connection ends or `stop` is cancelled,
/// and runs each in a task of `files`.
pub(super) async fn accept_entries(
    link: impl Link,
    ctx: Arc<RunContext>,
    files: TaskTracker,
    stop: CancellationToken,
) {
    loop {
        let accepted = tokio::select! {
            _ = stop.cancelled() => return,
            accepted = link.accept() => accepted,
        };
        let Ok(channel) = accepted else { return };
        files.spawn(serve_stream(channel, ctx.clone()));
    }
}

/// Serves one file stream (an entry, or a bundle of them) to its answer.
async fn serve_stream(mut channel: Channel, ctx: Arc<RunContext>) {
    channel.recv.set_limiter(ctx.limiter.clone());
    let first = channel.recv.recv().await;
    if let Ok(Some(Message::Bundle)) = first {
        bundle::receive(channel, ctx).await;
        return;
    }
    let reply = match receive_entry(&mut channel, &ctx, first).await {
        Ok(()) => {
            ctx.live.entries.fetch_add(1, Ordering::Relaxed);
            Message::Stored
        }
        Err(failure) => {
            tracing::debug!("entry failed: {}", failure.message);
            channel.recv.stop();
            Message::Failed(failure)
        }
    };
    if channel.send.send(&reply).await.is_ok() {
        channel.send.finish();
    }
}

/// Receives one entry, whose first message has been read already, and
/// stores it; `Err` is the failure to report.
async fn receive_entry(
    channel: &mut Channel,
    ctx: &Arc<RunContext>,
    first: Received,
) -> Result<(), Failure> {
    let mut machine = EntryReceiver::new();
    let mut content: Option<(Entry, Sink)> = None;
    // Held while content arrives; given back unless the file is stored.
    let mut reservation: Option<Reservation> = None;
    let result = receive_steps(
        channel,
        ctx,
        first,
        &mut machine,
        &mut content,
        &mut reservation,
    )
    .await;
    if let Some((_, sink)) = content {
        // Cut off or refused: a chunked transfer keeps what arrived when
        // the stream was lost, for the next attempt to resume.
        let lost =
            matches!(&result, Err(f) if f.code == FailCode::Aborted && f.message == STREAM_LOST);
        sink.abandon(lost).await;
    }
    result
}

async fn receive_steps(
    channel: &mut Channel,
    ctx: &Arc<RunContext>,
    first: Received,
    machine: &mut EntryReceiver,
    content: &mut Option<(Entry, Sink)>,
    reservation: &mut Option<Reservation>,
) -> Result<(), Failure> {
    let mut first = Some(first);
    loop {
        let received = match first.take() {
            Some(received) => received,
            None => channel.recv.recv().await,
        };
        let message = entry_message(received)?;
        let step = machine
            .on_message(message)
            .map_err(|v| failure(v.code, v.message))?;
        match step {
            Step::PutDir(entry) => return commit(ctx, Op::Dir(entry)).await,
            Step::PutSymlink(entry) => return commit(ctx, Op::Symlink(entry)).await,
            Step::CheckOffer { entry, hash } => {
                let c = ctx.clone();
                let path = entry.path.clone();
                let have = on_store(move || c.store.holds(&c.ns, &path, &hash)).await?;
                match machine.offer_answered(have) {
                    None => return commit(ctx, Op::Metadata { entry, hash }).await,
                    Some(want) => {
                        let size = file_size(&entry);
                        *reservation = reserve(ctx, &entry, size)?;
                        channel
                            .send
                            .send(&want)
                            .await
                            .map_err(|e| failure(FailCode::Io, crate::chain::chain(&e)))?;
                        let sink = Sink::open(ctx, &entry, size).await?;
                        *content = Some((entry, sink));
                    }
                }
            }
            Step::CheckChunked { entry, base } => {
                let size = file_size(&entry);
                *reservation = reserve(ctx, &entry, size)?;
                let (store, ns, e) = (ctx.store.clone(), ctx.ns.clone(), entry.clone());
                let run = ctx.run;
                let (file, lens, resume) =
                    on_store(move || ChunkedFile::open(store, ns, run, &e, size, base.as_ref()))
                        .await?;
                let go = machine.chunked_answered(lens.as_deref(), resume.clone());
                *content = Some((entry, Sink::chunked(file, resume.is_some())));
                if let Some(go) = go {
                    channel
                        .send
                        .send(&go)
                        .await
                        .map_err(|e| failure(FailCode::Io, crate::chain::chain(&e)))?;
                }
            }
            Step::Begin { entry, size } => {
                *reservation = reserve(ctx, &entry, size)?;
                let sink = Sink::open(ctx, &entry, size).await?;
                *content = Some((entry, sink));
            }
            Step::Write(data) => {
                let Some((entry, sink)) = content.take() else {
                    return Err(failure(FailCode::BadRequest, "data without an entry"));
                };
                ctx.live
                    .bytes
                    .fetch_add(data.len() as u64, Ordering::Relaxed);
                *content = Some((entry, sink.write(data).await?));
            }
            Step::Copy { start, count, len } => {
                let Some((entry, sink)) = content.take() else {
                    return Err(failure(FailCode::BadRequest, "copy without an entry"));
                };
                ctx.live.bytes.fetch_add(len, Ordering::Relaxed);
                *content = Some((entry, sink.copy(start, count).await?));
            }
            Step::Keep(_) => {
                // The kept prefix is already in place: only note it.
                if let Some((_, sink)) = content.as_mut() {
                    sink.kept();
                }
            }
            Step::Finish { hash } => {
                let Some((entry, sink)) = content.take() else {
                    return Err(failure(FailCode::BadRequest, "end without an entry"));
                };
                let staged = sink.finish(ctx, &entry, hash).await?;
                // What the quota keeps: the bytes on disk (holes are free).
                let on_disk = staged.stored();
                let stored = commit(ctx, Op::File { entry, staged }).await;
                if let (Ok(()), Some(reservation)) = (&stored, reservation.take()) {
                    reservation.keep_as(on_disk);
                }
                return stored;
            }
            Step::Aborted(reason) => {
                return Err(failure(
                    FailCode::Aborted,
                    format!("the sender gave up: {reason}"),
                ));
            }
        }
    }
}

fn file_size(entry: &Entry) -> u64 {
    match entry.kind {
        EntryKind::File { size, .. } => size,
        _ => 0,
    }
}
