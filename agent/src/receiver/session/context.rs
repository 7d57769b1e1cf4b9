//! What every stream of one run shares: the run's context (store,
//! namespace, live counters, the group commit queue, quota, rate limit), and
//! the helpers that turn a stream's messages and the store's answers into an
//! entry's answer. Used by the file streams (`file`), the bundles (`bundle`)
//! and the sink (`sink`).

use std::sync::Arc;

use ferry_proto::{Entry, FailCode, Failure, Message};
use tokio::sync::{mpsc, oneshot};

use crate::receiver::quota::{QuotaBudget, Reservation};
use crate::status::Session;
use crate::store::commit::Commit;
use crate::store::{Namespace, Op, Store, StoreError};
use crate::stream::StreamError;

/// What every file stream of one run needs.
pub(super) struct RunContext {
    pub store: Arc<Store>,
    pub ns: Namespace,
    pub run: u64,
    pub live: Arc<Session>,
    /// The run's group commit queue ([`crate::store::commit`]).
    pub commits: mpsc::Sender<Commit>,
    /// The sender's quota, if the receiver sets one.
    pub quota: Option<Arc<QuotaBudget>>,
    /// The catalog cannot vouch for the sender's newest acknowledged run
    /// (`Welcome::resync`): it offers everything again, and what this store
    /// already holds exactly is acknowledged without a new version.
    pub resync: bool,
    /// In a resync run, the entries found stored exactly as offered (no new
    /// version): with those stored this run, what the sender still has.
    pub kept: std::sync::Mutex<Vec<ferry_proto::RelPath>>,
    /// This connection's bandwidth limit (`--limit-rate`), if any.
    pub limiter: Option<Arc<crate::ratelimit::RateLimiter>>,
}

/// Reserves room in the sender's quota for `size` bytes of `entry`.
pub(super) fn reserve(
    ctx: &RunContext,
    entry: &Entry,
    size: u64,
) -> Result<Option<Reservation>, Failure> {
    ctx.quota
        .as_ref()
        .map(|q| q.reserve(&entry.path, size))
        .transpose()
}

pub(super) fn failure(code: FailCode, message: impl Into<String>) -> Failure {
    Failure {
        code,
        message: message.into(),
    }
}

/// A store error as the entry's answer.
pub(super) fn store_failure(e: &StoreError) -> Failure {
    failure(e.fail_code(), crate::chain::chain(e))
}

/// Runs store work on the blocking pool; its error is the entry's answer.
pub(super) async fn on_store<T: Send + 'static>(
    f: impl FnOnce() -> Result<T, StoreError> + Send + 'static,
) -> Result<T, Failure> {
    match crate::tasks::blocking(f).await {
        Ok(done) => done.map_err(|e| store_failure(&e)),
        Err(cancelled) => Err(failure(FailCode::Io, cancelled.to_string())),
    }
}

/// Why a file stream ended without its content: the sender (or the
/// connection) went away.
pub(super) const STREAM_LOST: &str = "stream ended before the entry was complete";

/// A message as read from a stream.
pub(super) type Received = Result<Option<Message>, StreamError>;

/// The next message of an entry from what was read: compressed content
/// decompressed, a stream that ended or broke turned into the failure.
pub(super) fn entry_message(received: Received) -> Result<Message, Failure> {
    match received {
        Ok(Some(Message::DataZstd(packed))) => crate::compress::decompress(&packed)
            .map(Message::Data)
            .map_err(|e| failure(FailCode::BadRequest, crate::chain::chain(&e))),
        Ok(Some(message)) => Ok(message),
        Ok(None) => Err(failure(FailCode::Aborted, STREAM_LOST)),
        Err(e) if e.is_lost() => Err(failure(FailCode::Aborted, STREAM_LOST)),
        Err(e) => Err(failure(FailCode::BadRequest, crate::chain::chain(&e))),
    }
}

/// Hands a change to the run's committer and waits until it is durable.
pub(super) async fn commit(ctx: &Arc<RunContext>, op: Op) -> Result<(), Failure> {
    // A sender offering everything again: what is stored exactly as offered
    // is acknowledged as it is, without a version that changes nothing.
    let unchanged = match &op {
        Op::Metadata { entry, hash } if ctx.resync => Some((entry.clone(), Some(*hash))),
        Op::Dir(entry) | Op::Symlink(entry) if ctx.resync => Some((entry.clone(), None)),
        _ => None,
    };
    if let Some((entry, hash)) = unchanged {
        let c = ctx.clone();
        let path = entry.path.clone();
        if on_store(move || c.store.is_current(&c.ns, &entry, hash.as_ref())).await? {
            ctx.kept
                .lock()
                .unwrap_or_else(std::sync::PoisonError::into_inner)
                .push(path);
            return Ok(());
        }
    }
    let (tx, rx) = oneshot::channel();
    ctx.commits
        .send((op, tx))
        .await
        .map_err(|_| failure(FailCode::Io, "the receiver is shutting down this run"))?;
    match rx.await {
        Ok(result) => result.map_err(|e| failure(e.fail_code(), crate::chain::chain(&e))),
        Err(_) => Err(failure(
            FailCode::Io,
            "the change was not committed (internal error)",
        )),
    }
}

#[cfg(test)]
pub(super) mod testing {
    //! A run's context on a real store in a temporary directory, with its
    //! committer running, for tests that drive file and bundle streams.

    use std::sync::atomic::AtomicU64;

    use super::*;

    /// A run in progress: its context, and the committer's thread (which
    /// ends once every clone of the context is dropped).
    pub(crate) struct TestRun {
        pub dir: tempfile::TempDir,
        pub ctx: Arc<RunContext>,
        pub committer: std::thread::JoinHandle<()>,
    }

    impl TestRun {
        /// Drops the run's context and waits for its committer, which ends
        /// once no task holds the context (none was left behind).
        #[allow(clippy::unwrap_used)] // a failing unwrap is a failing test
        pub(crate) fn end(self) {
            drop(self.ctx);
            self.committer.join().unwrap();
        }
    }

    #[allow(clippy::unwrap_used)] // a failing unwrap is a failing test
    pub(crate) fn run() -> TestRun {
        let (dir, store, ns) = crate::store::tests::fixture();
        let store = Arc::new(store);
        let run = store.begin_run(&ns).unwrap();
        let (commits, queue) = crate::store::commit::queue();
        let committer = {
            let (store, ns) = (store.clone(), ns.clone());
            std::thread::spawn(move || crate::store::commit::committer(store, ns, run, queue))
        };
        let live = Arc::new(Session {
            peer: "peer".into(),
            name: "lap".into(),
            folder: "docs".into(),
            run,
            started: std::time::SystemTime::now(),
            entries: AtomicU64::new(0),
            bytes: AtomicU64::new(0),
        });
        let ctx = Arc::new(RunContext {
            store,
            ns,
            run,
            live,
            commits,
            quota: None,
            resync: false,
            kept: Default::default(),
            limiter: None,
        });
        TestRun {
            dir,
            ctx,
            committer,
        }
    }
}
