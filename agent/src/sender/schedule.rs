//! When the next run starts: the period, jitter, and exponential backoff
//! while the receiver is unreachable or busy. Pure logic; the caller sleeps.

use std::time::Duration;

/// The first retry delay after a failure.
pub const BACKOFF_BASE: Duration = Duration::from_secs(1);
/// The longest retry delay.
pub const BACKOFF_MAX: Duration = Duration::from_secs(300);

/// How a run ended, as far as scheduling cares.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum RunOutcome {
    /// The run was committed (possibly with file errors).
    Done,
    /// The receiver said it is full; it hinted when to come back.
    Busy { retry_after: Duration },
    /// The receiver could not be reached, or the connection broke.
    Unreachable,
    /// The receiver refused this sender; retrying soon will not help.
    Refused,
}

/// A one-shot sender (no period) tries a busy or unreachable receiver this
/// many times in all.
pub const ONCE_ATTEMPTS: u32 = 4;

/// Whether a one-shot sender stops after a failed attempt instead of
/// retrying. `failures` counts the failed attempts before this one;
/// `no_answer` says the receiver's address did not answer at all (nothing
/// listens there, or a firewall drops the packets): each further attempt
/// would wait out the whole handshake timeout again, so a one-shot run
/// reports it at once rather than after minutes.
pub fn once_gives_up(outcome: RunOutcome, failures: u32, no_answer: bool) -> bool {
    match outcome {
        RunOutcome::Done | RunOutcome::Refused => true,
        RunOutcome::Unreachable if no_answer => true,
        RunOutcome::Busy { .. } | RunOutcome::Unreachable => failures + 1 >= ONCE_ATTEMPTS,
    }
}

/// Backoff state across runs.
#[derive(Debug, Clone, Default)]
pub struct Schedule {
    failures: u32,
}

impl Schedule {
    pub fn new() -> Self {
        Self::default()
    }

    /// Consecutive failed attempts so far.
    pub fn failures(&self) -> u32 {
        self.failures
    }

    /// The delay before the next run. `every` is the period (`None` for a
    /// one-shot sender, whose retries are capped by [`BACKOFF_MAX`] alone);
    /// `jitter` is a number in `[0, 1)` that spreads senders apart.
    pub fn next(&mut self, outcome: RunOutcome, every: Option<Duration>, jitter: f64) -> Duration {
        let jitter = jitter.clamp(0.0, 1.0);
        match outcome {
            RunOutcome::Done => {
                self.failures = 0;
                let every = every.unwrap_or(Duration::ZERO);
                // Up to 5% later, never earlier: no two runs overlap.
                every + every.mul_f64(0.05 * jitter)
            }
            RunOutcome::Refused => {
                self.failures += 1;
                every.unwrap_or(BACKOFF_MAX)
            }
            RunOutcome::Busy { retry_after } => {
                self.failures += 1;
                let backoff = self.backoff(every);
                retry_after.max(backoff.mul_f64(0.5)) + retry_after.mul_f64(0.5 * jitter)
            }
            RunOutcome::Unreachable => {
                self.failures += 1;
                let backoff = self.backoff(every);
                backoff.mul_f64(0.5) + backoff.mul_f64(0.5 * jitter)
            }
        }
    }

    fn backoff(&self, every: Option<Duration>) -> Duration {
        let cap = every
            .map_or(BACKOFF_MAX, |e| e.min(BACKOFF_MAX))
            .max(BACKOFF_BASE);
        let exp = self.failures.saturating_sub(1).min(20);
        BACKOFF_BASE.saturating_mul(1 << exp).min(cap)
    }
}

/// A jitter value in `[0, 1)` from the clock: good enough to spread senders.
pub fn clock_jitter() -> f64 {
    let nanos = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.subsec_nanos())
        .unwrap_or(0);
    f64::from(nanos % 1_000_000) / 1_000_000.0
}

#[cfg(test)]
mod tests {
    use super::*;

    const MIN15: Duration = Duration::from_secs(900);

    #[test]
    fn success_waits_the_period_plus_a_little() {
        let mut s = Schedule::new();
        assert_eq!(s.next(RunOutcome::Done, Some(MIN15), 0.0), MIN15);
        let late = s.next(RunOutcome::Done, Some(MIN15), 0.99);
        assert!(late > MIN15 && late < MIN15.mul_f64(1.05));
    }

    #[test]
    fn unreachable_backs_off_exponentially_up_to_the_period() {
        let mut s = Schedule::new();
        let delays: Vec<Duration> = (0..12)
            .map(|_| s.next(RunOutcome::Unreachable, Some(MIN15), 0.999))
            .collect();
        assert!(delays.windows(2).all(|w| w[1] >= w[0]), "{delays:?}");
        assert!(delays[0] <= Duration::from_secs(1));
        assert!(delays[11] <= BACKOFF_MAX);
        assert!(delays[11] > Duration::from_secs(200));
        // A short period caps the backoff.
        let mut s = Schedule::new();
        for _ in 0..10 {
            assert!(
                s.next(
                    RunOutcome::Unreachable,
                    Some(Duration::from_secs(30)),
                    0.999
                ) <= Duration::from_secs(30)
            );
        }
        // Success resets.
        s.next(RunOutcome::Done, Some(MIN15), 0.0);
        assert_eq!(s.failures(), 0);
    }

    #[test]
    fn busy_honours_the_hint() {
        let mut s = Schedule::new();
        let hint = Duration::from_secs(2);
        let d = s.next(RunOutcome::Busy { retry_after: hint }, Some(MIN15), 0.0);
        assert!(d >= hint);
        let d = s.next(RunOutcome::Busy { retry_after: hint }, Some(MIN15), 0.99);
        assert!(d >= hint && d <= hint * 2);
    }

    #[test]
    fn a_one_shot_run_gives_up_at_once_when_nothing_answers() {
        // Before: four attempts of a 10 s handshake each, 46 s in all.
        assert!(once_gives_up(RunOutcome::Unreachable, 0, true));
        // A connection that broke is retried a few times.
        assert!(!once_gives_up(RunOutcome::Unreachable, 0, false));
        assert!(!once_gives_up(
            RunOutcome::Unreachable,
            ONCE_ATTEMPTS - 2,
            false
        ));
        assert!(once_gives_up(
            RunOutcome::Unreachable,
            ONCE_ATTEMPTS - 1,
            false
        ));
        let busy = RunOutcome::Busy {
            retry_after: Duration::from_secs(1),
        };
        assert!(!once_gives_up(busy, 0, false));
        assert!(once_gives_up(busy, ONCE_ATTEMPTS - 1, false));
        assert!(once_gives_up(RunOutcome::Refused, 0, false));
        assert!(once_gives_up(RunOutcome::Done, 0, false));
    }

    #[test]
    fn a_periodic_sender_backs_off_1_2_4_8_seconds_up_to_its_period() {
        // Without jitter each delay is half the backoff; with the most
        // jitter, the whole of it.
        let every = Some(Duration::from_secs(10));
        let mut low = Schedule::new();
        let mut high = Schedule::new();
        let secs =
            |s: &mut Schedule, j: f64| s.next(RunOutcome::Unreachable, every, j).as_secs_f64();
        let lows: Vec<f64> = (0..6).map(|_| secs(&mut low, 0.0)).collect();
        let highs: Vec<f64> = (0..6).map(|_| secs(&mut high, 0.999_999)).collect();
        assert_eq!(lows, [0.5, 1.0, 2.0, 4.0, 5.0, 5.0]);
        for (h, want) in highs.iter().zip([1.0, 2.0, 4.0, 8.0, 10.0, 10.0]) {
            assert!((h - want).abs() < 0.001, "{highs:?}");
        }
    }

    #[test]
    fn jitter_in_range() {
        let j = clock_jitter();
        assert!((0.0..1.0).contains(&j));
    }
}
