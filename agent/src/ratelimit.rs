//! Bandwidth limits (`--limit-rate`): a [`RateSchedule`] of rates by local
//! time of day, and a [`RateLimiter`] that paces every stream it is attached
//! to (see [`crate::stream`]) so their bytes together keep to the rate.
//!
//! The sender keeps one limiter for the whole process; the receiver keeps one
//! per admitted sender connection and also shrinks that connection's
//! flow-control window to [`receive_window`], so the sender cannot run far
//! ahead of the limit.
//!
//! ## Layout
//!
//! - [`schedule`]: the `--limit-rate` grammar, parsed and shown.
//! - [`limiter`]: the token bucket.

pub mod limiter;
pub mod schedule;

pub use limiter::RateLimiter;
pub use schedule::{Rate, RateSchedule, ScheduleError};

/// Smallest connection receive window of a limited receiver session.
pub const MIN_RECEIVE_WINDOW: u64 = 256 * 1024;

/// The connection receive window for a sender limited to `rate`: a quarter
/// second's worth, at least [`MIN_RECEIVE_WINDOW`]; `None` (no limit): the
/// transport's usual window.
pub fn receive_window(rate: Rate) -> u64 {
    match rate {
        Some(rate) => (rate / 4).max(MIN_RECEIVE_WINDOW),
        None => u64::from(crate::transport::CONNECTION_RECEIVE_WINDOW),
    }
}

/// A limiter for one receiver connection following `schedule`, which also
/// keeps the connection's receive window sized to the rate in force.
pub fn for_connection(
    conn: &quinn::Connection,
    schedule: RateSchedule,
) -> std::sync::Arc<RateLimiter> {
    let conn = conn.clone();
    RateLimiter::with_observer(schedule, move |rate| {
        // receive_window() is at most a few GiB here, far below 2^62.
        let window = quinn::VarInt::from_u64(receive_window(rate)).unwrap_or(quinn::VarInt::MAX);
        conn.set_receive_window(window);
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn receive_windows_follow_the_rate() {
        assert_eq!(receive_window(Some(4_000_000)), 1_000_000);
        assert_eq!(receive_window(Some(100_000)), MIN_RECEIVE_WINDOW);
        assert_eq!(
            receive_window(None),
            u64::from(crate::transport::CONNECTION_RECEIVE_WINDOW)
        );
    }
}
