//! How Ferry runs work besides the async I/O: the one way to put blocking
//! work (SQLite, fsync, walking, hashing) on tokio's blocking pool, and the
//! task model every long-lived part of the agent follows.
//!
//! ## The task model
//!
//! - One root [`CancellationToken`](tokio_util::sync::CancellationToken) per
//!   role (`sender::run`, `receiver::Receiver::serve`), passed down; each part
//!   that starts tasks takes a child token and tracks its tasks in a
//!   [`TaskTracker`](tokio_util::task::TaskTracker) (tasks that run until the
//!   owner stops) or a [`JoinSet`](tokio::task::JoinSet) (tasks whose results
//!   the owner collects). No task is detached: the owner waits for each, or
//!   cancels it through its token and then waits.
//! - Teardown, on the receiver: stop accepting (endpoint refuses new
//!   connections), cancel the sessions' token, each session stops reading new
//!   entries, lets its in-flight files end (a large file's staging stays
//!   resumable), records its run as interrupted, closes its connection; the
//!   receiver waits for the session tracker, closes the endpoint and waits
//!   until it is idle. On the sender: stop the schedule, the run in progress
//!   stops opening streams, in-flight entries end, the connection is closed,
//!   the index keeps what was acknowledged.
//! - Channels between tasks are bounded, so a slow consumer slows its
//!   producer instead of growing a queue.

/// The runtime cancelled a blocking task before it ran: it is shutting down.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
#[error("stopped: the runtime is shutting down")]
pub struct Cancelled;

/// Runs `f` on tokio's blocking pool and returns what it returned.
///
/// A panic in `f` is a bug: it is resumed in the caller, as
/// `std::thread::scope` does, never turned into an error message. The only
/// error is [`Cancelled`], when the runtime drops the task during shutdown;
/// each operation's error enum carries it as its own variant.
pub async fn blocking<T: Send + 'static>(
    f: impl FnOnce() -> T + Send + 'static,
) -> Result<T, Cancelled> {
    match tokio::task::spawn_blocking(f).await {
        Ok(value) => Ok(value),
        Err(e) if e.is_panic() => std::panic::resume_unwind(e.into_panic()),
        Err(_) => Err(Cancelled),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn returns_what_the_closure_returned() {
        assert_eq!(blocking(|| 41 + 1).await, Ok(42));
    }

    #[tokio::test]
    #[should_panic(expected = "a bug in blocking work")]
    async fn a_panic_is_resumed_in_the_caller() {
        let _ = blocking(|| panic!("a bug in blocking work")).await;
    }
}
