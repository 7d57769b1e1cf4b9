//! Group commit: one run's changes made durable and recorded together, on a
//! thread of the blocking pool of their own, and each answered once it is.
//!
//! The session's file tasks hand each change ([`Op`]) to the run's queue
//! (bounded at [`MAX_BATCH`]: a task waits for room while the committer is
//! behind) with a [`Reply`] to wait on; [`committer`] takes every change
//! that is waiting, makes it on disk, and answers it.

use std::collections::HashSet;
use std::sync::Arc;

use tokio::sync::{mpsc, oneshot};

use super::{Applied, Namespace, Op, Store, StoreError};

/// Where the result of one change goes.
pub(crate) type Reply = oneshot::Sender<Result<(), StoreError>>;

/// One change waiting for the run's committer, and where its result goes.
pub(crate) type Commit = (Op, Reply);

/// Most changes made durable together; also how many may wait in the queue.
pub(crate) const MAX_BATCH: usize = 1024;

/// The queue of one run's changes: file tasks send, [`committer`] takes.
pub(crate) fn queue() -> (mpsc::Sender<Commit>, mpsc::Receiver<Commit>) {
    mpsc::channel(MAX_BATCH)
}

/// Group commit, blocking, for one run until every sender of the queue is
/// gone: takes every change that is waiting (up to [`MAX_BATCH`]), makes it
/// on disk, and answers it once it is durable and recorded. One `syncfs`
/// serves two batches: it makes the names of the batch made last durable
/// and, at once, the content of the batch about to be made (staged before
/// it was handed over). While a batch is flushed and made, the next one
/// gathers. A batch holds the store's write lock from the moment it is made
/// until it is recorded.
pub(crate) fn committer(
    store: Arc<Store>,
    ns: Namespace,
    run: u64,
    mut rx: mpsc::Receiver<Commit>,
) {
    let mut held: Option<Commit> = None;
    let mut pending: Option<(Applied<'_>, Vec<Reply>)> = None;
    loop {
        // Wait for work only when nothing is left to record.
        let batch = gather(&mut rx, &mut held, pending.is_none());
        if batch.is_empty() && pending.is_none() {
            return;
        }
        let content = batch.iter().any(|(op, _)| matches!(op, Op::File { .. }));
        let started = std::time::Instant::now();
        let flushed = match pending.is_some() || content {
            true => store.flush().map_err(|e| crate::chain::chain(&e)),
            false => Ok(()),
        };
        if let Some((applied, replies)) = pending.take() {
            let count = replies.len();
            let results = store.record_applied(applied, flushed.clone());
            tracing::debug!(
                count,
                ms = started.elapsed().as_millis() as u64,
                "batch committed"
            );
            for (result, reply) in results.into_iter().zip(replies) {
                let _ = reply.send(result);
            }
        }
        if batch.is_empty() {
            continue;
        }
        let (ops, replies): (Vec<Op>, Vec<Reply>) = batch.into_iter().unzip();
        if let (Err(message), true) = (&flushed, content) {
            // The content may not be durable: none of it is put in place.
            for (op, reply) in ops.iter().zip(replies) {
                let _ = reply.send(Err(StoreError::BatchFailed {
                    path: op.path().clone(),
                    detail: message.clone(),
                }));
            }
            continue;
        }
        pending = Some((store.apply_ops(&ns, run, ops), replies));
    }
}

/// The changes waiting, for distinct paths, at most [`MAX_BATCH`]; with
/// `wait`, at least one unless the run is over. The same path twice waits
/// in `held` for the next batch.
fn gather(rx: &mut mpsc::Receiver<Commit>, held: &mut Option<Commit>, wait: bool) -> Vec<Commit> {
    let first = match held.take() {
        Some(commit) => commit,
        None if wait => match rx.blocking_recv() {
            Some(commit) => commit,
            None => return Vec::new(),
        },
        None => match rx.try_recv() {
            Ok(commit) => commit,
            Err(_) => return Vec::new(),
        },
    };
    let mut paths = HashSet::new();
    paths.insert(first.0.path().clone());
    let mut batch = vec![first];
    while batch.len() < MAX_BATCH {
        let Ok(next) = rx.try_recv() else { break };
        if !paths.insert(next.0.path().clone()) {
            *held = Some(next);
            break;
        }
        batch.push(next);
    }
    batch
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::store::tests::{file_entry, fixture};

    /// Changes handed to the committer all arrive, in order, durable and
    /// recorded, whether they land in one batch or in consecutive ones (the
    /// same path twice is split across two).
    #[test]
    #[allow(clippy::unwrap_used)] // a failing unwrap is a failing test
    fn the_committer_answers_every_change_once_it_is_recorded() {
        let (_dir, store, ns) = fixture();
        let store = Arc::new(store);
        let run = store.begin_run(&ns).unwrap();
        let (tx, rx) = queue();
        let worker = {
            let (store, ns) = (store.clone(), ns.clone());
            std::thread::spawn(move || committer(store, ns, run, rx))
        };
        let mut answers = Vec::new();
        for (i, (path, data)) in [("a", "one"), ("b", "two"), ("a", "three"), ("c", "four")]
            .into_iter()
            .enumerate()
        {
            let entry = file_entry(path, data.as_bytes(), i as i64, 0o644);
            let mut staged = store.stage(&ns, &entry.path, data.len() as u64).unwrap();
            staged.write(data.as_bytes()).unwrap();
            let staged = staged
                .finish(blake3::hash(data.as_bytes()).as_bytes())
                .unwrap();
            let (reply, answer) = oneshot::channel();
            tx.blocking_send((Op::File { entry, staged }, reply))
                .unwrap();
            answers.push(answer);
        }
        for answer in answers {
            answer.blocking_recv().unwrap().unwrap();
        }
        drop(tx);
        worker.join().unwrap();
        let mirror = store.root().join("lap/docs");
        assert_eq!(std::fs::read(mirror.join("a")).unwrap(), b"three");
        assert_eq!(std::fs::read(mirror.join("c")).unwrap(), b"four");
        let versions = store.versions(&ns, &crate::store::tests::rel("a")).unwrap();
        assert_eq!(versions.len(), 2, "{versions:?}");
        assert_eq!(store.current(&ns).unwrap().len(), 3);
    }

    /// A full batch stops gathering at [`MAX_BATCH`]; the same path twice
    /// is held back for the next batch, in order.
    #[test]
    #[allow(clippy::unwrap_used)] // a failing unwrap is a failing test
    fn gather_splits_at_a_repeated_path_and_keeps_it_for_the_next_batch() {
        let (tx, mut rx) = queue();
        let mut answers = Vec::new();
        for (i, path) in ["a", "b", "a", "c"].into_iter().enumerate() {
            let entry = file_entry(path, b"", i as i64, 0o644);
            let (reply, answer) = oneshot::channel();
            tx.try_send((Op::Dir(entry), reply)).unwrap();
            answers.push(answer);
        }
        drop(tx);
        let mut held = None;
        let paths = |batch: &[Commit]| -> Vec<String> {
            batch.iter().map(|(op, _)| op.path().to_string()).collect()
        };
        let first = gather(&mut rx, &mut held, true);
        assert_eq!(paths(&first), ["a", "b"]);
        let second = gather(&mut rx, &mut held, false);
        assert_eq!(paths(&second), ["a", "c"]);
        assert!(gather(&mut rx, &mut held, true).is_empty());
    }
}
