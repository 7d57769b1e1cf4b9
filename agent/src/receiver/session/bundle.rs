//! Bundle streams: many small entries on one stream, each answered in order
//! (see the `ferry_proto` crate doc). Reading goes on while earlier entries
//! are staged and committed, so a bundle keeps the group commit as full as
//! many streams would, without a stream per file.

use std::sync::atomic::Ordering;
use std::sync::Arc;

use ferry_proto::{Entry, FailCode, Failure, Message, MAX_BUNDLED};
use tokio::sync::{mpsc, oneshot};
use tokio::task::JoinHandle;
use tokio_util::task::TaskTracker;

use super::context::{commit, entry_message, failure, reserve, RunContext};
use crate::compress::StreamDecoder;
use crate::receiver::entry::{EntryReceiver, Step};
use crate::receiver::quota::Reservation;
use crate::store::Op;
use crate::stream::{Channel, FramedRecv};

/// Entries of one bundle read but not yet answered. Each holds at most
/// [`MAX_BUNDLED`] bytes until it is staged; more wait in the stream's
/// flow-control window.
const MAX_PENDING: usize = 256;

/// Files of a bundle staged by one task of the blocking pool, at most: one
/// hand-off per group rather than per file.
const STAGE_GROUP: usize = 32;
/// Groups of one bundle being staged at once.
const GROUPS_IN_FLIGHT: usize = 2;
/// Files of one bundle received and waiting to be staged, at most (each
/// holds up to [`MAX_BUNDLED`] bytes).
const MAX_ARRIVED: usize = 64;

/// How an entry of the bundle ends: its answer, once known.
enum Outcome {
    /// Being stored; the task gives the answer.
    Storing(JoinHandle<Result<(), Failure>>),
    /// A file handed to the stager, which answers.
    Staging(oneshot::Receiver<Result<(), Failure>>),
    /// Failed already (refused, aborted, over quota).
    Failed(Failure),
}

/// A whole file of a bundle, received, waiting to be staged and committed.
struct Arrived {
    entry: Entry,
    data: Vec<u8>,
    hash: ferry_proto::Hash,
    reservation: Option<Reservation>,
    done: oneshot::Sender<Result<(), Failure>>,
}

/// Stages the files of one bundle a group at a time (every file that has
/// arrived, up to [`STAGE_GROUP`]), hands each to the run's committer and
/// answers each once it is committed.
async fn stager(ctx: Arc<RunContext>, mut arrived: mpsc::Receiver<Arrived>) {
    let slots = Arc::new(tokio::sync::Semaphore::new(GROUPS_IN_FLIGHT));
    let mut groups = tokio::task::JoinSet::new();
    while let Some(first) = arrived.recv().await {
        let mut group = vec![first];
        while group.len() < STAGE_GROUP {
            let Ok(next) = arrived.try_recv() else { break };
            group.push(next);
        }
        let Ok(slot) = slots.clone().acquire_owned().await else {
            break;
        };
        let ctx = ctx.clone();
        groups.spawn(async move { store_group(&ctx, group, slot).await });
        while groups.try_join_next().is_some() {}
    }
    while groups.join_next().await.is_some() {}
}

/// Stages a group in one blocking call, then commits each file of it. The
/// `slot` is given back once the group is staged (not committed), so that
/// staging goes on while the committer works.
async fn store_group(
    ctx: &Arc<RunContext>,
    group: Vec<Arrived>,
    slot: tokio::sync::OwnedSemaphorePermit,
) {
    let (store, ns) = (ctx.store.clone(), ctx.ns.clone());
    let staged = crate::tasks::blocking(move || {
        group
            .into_iter()
            .map(|a| {
                let verified = store.stage_whole(&ns, &a.entry.path, a.data, &a.hash);
                (a.entry, a.reservation, a.done, verified)
            })
            .collect::<Vec<_>>()
    })
    .await;
    let Ok(staged) = staged else {
        // The runtime is stopping: the answers' senders are dropped, and
        // each entry of the group fails.
        return;
    };
    let mut waiting = Vec::with_capacity(staged.len());
    for (entry, reservation, done, verified) in staged {
        let staged = match verified {
            Ok(staged) => staged,
            Err(e) => {
                let _ = done.send(Err(failure(e.fail_code(), crate::chain::chain(&e))));
                continue;
            }
        };
        let on_disk = staged.stored();
        let (reply, committed) = oneshot::channel();
        if ctx
            .commits
            .send((Op::File { entry, staged }, reply))
            .await
            .is_err()
        {
            let _ = done.send(Err(failure(
                FailCode::Io,
                "the receiver is shutting down this run",
            )));
            continue;
        }
        waiting.push((committed, reservation, done, on_disk));
    }
    drop(slot);
    for (committed, reservation, done, on_disk) in waiting {
        let result = match committed.await {
            Ok(Ok(())) => {
                if let Some(reservation) = reservation {
                    reservation.keep_as(on_disk);
                }
                ctx.live.entries.fetch_add(1, Ordering::Relaxed);
                Ok(())
            }
            Ok(Err(e)) => Err(failure(e.fail_code(), crate::chain::chain(&e))),
            Err(_) => Err(failure(
                FailCode::Io,
                "the change was not committed (internal error)",
            )),
        };
        let _ = done.send(result);
    }
}

/// Receives a bundle whose `Bundle` message has been read, until the sender
/// finishes the stream or breaks its rules.
pub(super) async fn receive(channel: Channel, ctx: Arc<RunContext>) {
    let Channel { mut send, mut recv } = channel;
    // The bundle's tasks: the answerer, the stager, one per directory or
    // symlink being stored; all waited for before the bundle ends.
    let tasks = TaskTracker::new();
    let (outcomes, mut answers) = mpsc::channel::<Outcome>(MAX_PENDING);
    let answering = tasks.spawn(async move {
        while let Some(outcome) = answers.recv().await {
            let result = match outcome {
                Outcome::Storing(task) => task.await.unwrap_or_else(|e| {
                    Err(failure(
                        FailCode::Io,
                        format!("internal error: {}", crate::chain::Chain(&e)),
                    ))
                }),
                Outcome::Staging(answer) => answer.await.unwrap_or_else(|_| {
                    Err(failure(
                        FailCode::Io,
                        "the file was not staged (internal error)",
                    ))
                }),
                Outcome::Failed(f) => Err(f),
            };
            let reply = match result {
                Ok(()) => Message::Stored,
                Err(f) => {
                    tracing::debug!("bundled entry failed: {}", f.message);
                    Message::Failed(f)
                }
            };
            if send.send(&reply).await.is_err() {
                return;
            }
        }
        send.finish();
    });
    let (to_stage, arrived) = mpsc::channel(MAX_ARRIVED);
    let staging = tasks.spawn(stager(ctx.clone(), arrived));
    let mut decoder = None;
    loop {
        let outcome = match next_entry(&mut recv, &ctx, &mut decoder, &to_stage, &tasks).await {
            Ok(None) => break,
            Ok(Some(outcome)) => outcome,
            Err(f) => {
                // The rules are broken (or the stream is gone): answer this
                // entry and read no more.
                recv.stop();
                let _ = outcomes.send(Outcome::Failed(f)).await;
                break;
            }
        };
        if outcomes.send(outcome).await.is_err() {
            // The answers cannot be sent: the stream is gone.
            recv.stop();
            break;
        }
    }
    drop(outcomes);
    drop(to_stage);
    let _ = staging.await;
    let _ = answering.await;
    tasks.close();
    tasks.wait().await;
}

/// Reads the next entry of the bundle: `None` when the sender finished the
/// stream between entries; `Err` when the bundle cannot go on.
async fn next_entry(
    recv: &mut FramedRecv,
    ctx: &Arc<RunContext>,
    decoder: &mut Option<StreamDecoder>,
    to_stage: &mpsc::Sender<Arrived>,
    tasks: &TaskTracker,
) -> Result<Option<Outcome>, Failure> {
    let mut machine = EntryReceiver::new();
    let mut content: Option<(Entry, Vec<u8>)> = None;
    // Set when the entry failed but its content is still to be read past.
    let mut failed: Option<Failure> = None;
    let mut reservation = None;
    let mut first = true;
    loop {
        let received = recv.recv().await;
        if first && matches!(received, Ok(None)) {
            return Ok(None);
        }
        first = false;
        let message = match entry_message(received)? {
            Message::Zstream(packed) => {
                if decoder.is_none() {
                    *decoder = Some(
                        StreamDecoder::new()
                            .map_err(|e| failure(FailCode::Io, crate::chain::chain(&e)))?,
                    );
                }
                let data = decoder
                    .as_mut()
                    .map(|d| d.piece(&packed))
                    .transpose()
                    .map_err(|e| failure(FailCode::BadRequest, crate::chain::chain(&e)))?
                    .unwrap_or_default();
                Message::Data(data)
            }
            message => message,
        };
        let step = machine
            .on_message(message)
            .map_err(|v| failure(v.code, v.message))?;
        match step {
            Step::PutDir(entry) => return Ok(Some(storing(ctx, tasks, Op::Dir(entry)))),
            Step::PutSymlink(entry) => return Ok(Some(storing(ctx, tasks, Op::Symlink(entry)))),
            Step::Begin { entry, size } => {
                if size > MAX_BUNDLED {
                    return Err(failure(
                        FailCode::BadRequest,
                        format!(
                            "{}: {size} bytes is too large for a bundle (at most {MAX_BUNDLED})",
                            entry.path
                        ),
                    ));
                }
                match reserve(ctx, &entry, size) {
                    Ok(r) => reservation = r,
                    Err(f) => failed = Some(f),
                }
                content = Some((entry, Vec::with_capacity(size as usize)));
            }
            Step::Write(data) => {
                ctx.live
                    .bytes
                    .fetch_add(data.len() as u64, Ordering::Relaxed);
                if let (Some((_, buf)), None) = (content.as_mut(), &failed) {
                    buf.extend_from_slice(&data);
                }
            }
            Step::Finish { hash } => {
                let Some((entry, buf)) = content.take() else {
                    return Err(failure(FailCode::BadRequest, "end without an entry"));
                };
                if let Some(f) = failed {
                    return Ok(Some(Outcome::Failed(f)));
                }
                let (done, answer) = oneshot::channel();
                let file = Arrived {
                    entry,
                    data: buf,
                    hash,
                    reservation,
                    done,
                };
                if to_stage.send(file).await.is_err() {
                    return Err(failure(FailCode::Io, "the stager is gone (internal error)"));
                }
                return Ok(Some(Outcome::Staging(answer)));
            }
            Step::Aborted(reason) => {
                return Ok(Some(Outcome::Failed(failure(
                    FailCode::Aborted,
                    format!("the sender gave up: {reason}"),
                ))));
            }
            Step::CheckOffer { .. }
            | Step::CheckChunked { .. }
            | Step::Copy { .. }
            | Step::Keep(_) => {
                return Err(failure(
                    FailCode::BadRequest,
                    "a bundle carries only whole small files, directories and symlinks",
                ));
            }
        }
    }
}

/// Hands a directory or symlink to the committer, in a task of `tasks`.
fn storing(ctx: &Arc<RunContext>, tasks: &TaskTracker, op: Op) -> Outcome {
    let ctx = ctx.clone();
    Outcome::Storing(tasks.spawn(async move {
        commit(&ctx, op).await?;
        ctx.live.entries.fetch_add(1, Ordering::Relaxed);
        Ok(())
    }))
}

#[cfg(test)]
#[allow(clippy::unwrap_used)] // a failing unwrap is a failing test
mod tests {
    use ferry_proto::{frame, Content, EntryKind, RelPath};

    use super::*;
    use crate::identity::DeviceId;
    use crate::link::{memory, Link};
    use crate::receiver::session::context::testing::{self, TestRun};

    fn encode(message: &Message) -> Vec<u8> {
        frame::encode(message).unwrap()
    }

    fn entry(path: &str, kind: EntryKind) -> Vec<u8> {
        encode(&Message::Entry(Entry {
            path: RelPath::from_bytes(path).unwrap(),
            kind,
            mtime_ns: 0,
            mode: 0o644,
        }))
    }

    /// A whole small file: Entry, Data, End with `hash`.
    fn file(path: &str, data: &[u8], hash: [u8; 32]) -> Vec<u8> {
        let mut out = entry(
            path,
            EntryKind::File {
                size: data.len() as u64,
                content: Content::Inline,
            },
        );
        out.extend(encode(&Message::Data(data.to_vec())));
        out.extend(encode(&Message::End { hash }));
        out
    }

    fn good(path: &str, text: &str) -> Vec<u8> {
        file(
            path,
            text.as_bytes(),
            *blake3::hash(text.as_bytes()).as_bytes(),
        )
    }

    /// Sends `bytes` as a bundle to a run on a fresh store; returns the
    /// run and every answer, in order, until the receiver ends its side.
    async fn bundle(bytes: Vec<u8>) -> (TestRun, Vec<Message>) {
        let run = testing::run();
        let (sender, receiver) = memory::pair(
            DeviceId::from_spki(b"sender"),
            DeviceId::from_spki(b"receiver"),
        );
        let mut ours = sender.open().await.unwrap();
        ours.send.send(&Message::Bundle).await.unwrap();
        let mut theirs = receiver.accept().await.unwrap();
        assert!(matches!(
            theirs.recv.recv().await,
            Ok(Some(Message::Bundle))
        ));
        let receiving = tokio::spawn(receive(theirs, run.ctx.clone()));
        // The receiver may stop reading early: a failed write is allowed.
        let _ = ours.send.send_raw(&bytes).await;
        ours.send.finish();
        let mut answers = Vec::new();
        while let Ok(Some(message)) = ours.recv.recv().await {
            answers.push(message);
        }
        receiving.await.unwrap();
        (run, answers)
    }

    fn mirror(run: &TestRun) -> std::path::PathBuf {
        run.dir.path().join("store/lap/docs")
    }

    fn failed(answer: &Message) -> FailCode {
        match answer {
            Message::Failed(f) => f.code,
            other => panic!("expected Failed, got {other:?}"),
        }
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn files_dirs_and_symlinks_are_stored_and_answered_in_order() {
        let mut bytes = good("a.txt", "alpha");
        bytes.extend(entry("d", EntryKind::Dir));
        bytes.extend(entry(
            "d/link",
            EntryKind::Symlink {
                target: "../a.txt".into(),
            },
        ));
        bytes.extend(good("d/b.txt", "beta"));
        let (run, answers) = bundle(bytes).await;
        assert_eq!(answers, vec![Message::Stored; 4]);
        assert_eq!(std::fs::read(mirror(&run).join("a.txt")).unwrap(), b"alpha");
        assert_eq!(
            std::fs::read(mirror(&run).join("d/b.txt")).unwrap(),
            b"beta"
        );
        let link = std::fs::read_link(mirror(&run).join("d/link")).unwrap();
        assert_eq!(link, std::path::Path::new("../a.txt"));
        assert_eq!(run.ctx.live.entries.load(Ordering::Relaxed), 4);
        assert_eq!(run.ctx.store.current(&run.ctx.ns).unwrap().len(), 4);
        run.end();
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn a_wrong_hash_fails_one_entry_and_the_bundle_goes_on() {
        let mut bytes = good("one.txt", "first");
        bytes.extend(file("two.txt", b"wrong", [0; 32]));
        bytes.extend(good("three.txt", "third"));
        let (run, answers) = bundle(bytes).await;
        assert_eq!(answers.len(), 3, "{answers:?}");
        assert_eq!(answers[0], Message::Stored);
        assert_eq!(failed(&answers[1]), FailCode::HashMismatch);
        assert_eq!(answers[2], Message::Stored);
        assert!(mirror(&run).join("three.txt").exists());
        assert!(!mirror(&run).join("two.txt").exists());
        run.end();
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn an_entry_that_breaks_the_rules_ends_the_bundle_after_what_came_before() {
        let offer = entry(
            "offered.txt",
            EntryKind::File {
                size: 5,
                content: Content::Offer { hash: [1; 32] },
            },
        );
        let mut huge = entry(
            "huge.bin",
            EntryKind::File {
                size: MAX_BUNDLED + 1,
                content: Content::Inline,
            },
        );
        huge.extend(encode(&Message::Data(vec![1; 1000])));
        let mut not_zstd = entry(
            "garbage.txt",
            EntryKind::File {
                size: 5,
                content: Content::Inline,
            },
        );
        not_zstd.extend(encode(&Message::Zstream(b"not zstd at all".to_vec())));
        for (case, breaking) in [
            ("offer", offer),
            ("too large", huge),
            ("not zstd", not_zstd),
        ] {
            let mut bytes = good("before.txt", case);
            bytes.extend(breaking);
            bytes.extend(good("after.txt", "never read"));
            let (run, answers) = bundle(bytes).await;
            assert_eq!(answers.len(), 2, "{case}: {answers:?}");
            assert_eq!(answers[0], Message::Stored, "{case}");
            assert_eq!(failed(&answers[1]), FailCode::BadRequest, "{case}");
            assert!(mirror(&run).join("before.txt").exists(), "{case}");
            assert!(!mirror(&run).join("after.txt").exists(), "{case}");
            run.end();
        }
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn an_empty_bundle_is_answered_with_nothing() {
        let (run, answers) = bundle(Vec::new()).await;
        assert!(answers.is_empty(), "{answers:?}");
        assert!(run.ctx.store.current(&run.ctx.ns).unwrap().is_empty());
        run.end();
    }
}
