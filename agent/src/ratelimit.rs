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

/// The receive window every connection of a limited receiver starts with:
/// the one for the schedule's lowest rate (see [`receive_window`]).
pub fn initial_receive_window(schedule: &RateSchedule) -> quinn::VarInt {
    let lowest = schedule
        .windows
        .iter()
        .map(|w| w.rate)
        .chain([schedule.default])
        .map(receive_window)
        .min()
        .unwrap_or_else(|| receive_window(None));
    varint(lowest)
}

/// A window as a QUIC integer (windows are far below 2^62).
fn varint(window: u64) -> quinn::VarInt {
    quinn::VarInt::from_u64(window).unwrap_or(quinn::VarInt::MAX)
}

/// A limiter for one receiver connection following `schedule`, which also
/// keeps the connection's receive window sized to the rate in force.
pub fn for_connection(
    conn: &quinn::Connection,
    schedule: RateSchedule,
) -> std::sync::Arc<RateLimiter> {
    let conn = conn.clone();
    RateLimiter::with_observer(schedule, move |rate| {
        conn.set_receive_window(varint(receive_window(rate)));
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
        let schedule: RateSchedule = "08:00-18:00=2MB/s,12:00-13:00=off,8MB/s".parse().unwrap();
        assert_eq!(initial_receive_window(&schedule).into_inner(), 500_000);
        let schedule: RateSchedule = "22:00-06:00=20MB/s".parse().unwrap();
        assert_eq!(initial_receive_window(&schedule).into_inner(), 5_000_000);
    }
}
