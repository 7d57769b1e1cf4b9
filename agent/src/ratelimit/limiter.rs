//! [`RateLimiter`]: a token bucket shared by every stream it paces, whose rate
//! follows a [`RateSchedule`].

use std::sync::{Arc, Mutex, MutexGuard};
use std::time::Duration;

use tokio::time::Instant;

use super::schedule::{local_minute_of_day, Rate, RateSchedule};

/// Smallest burst: what may go out at once after an idle moment.
pub const MIN_BURST: u64 = 64 * 1024;
/// How often the schedule's rate is looked up again.
pub const RECHECK: Duration = Duration::from_secs(1);

/// The burst allowed at `rate`: a tenth of a second's worth, at least
/// [`MIN_BURST`].
pub fn burst(rate: u64) -> u64 {
    (rate / 10).max(MIN_BURST)
}

/// Where the limiter reads the local minute of the day.
type Clock = Box<dyn Fn() -> u16 + Send + Sync>;
/// Told the new rate whenever the schedule's rate changes.
type Observer = Box<dyn Fn(Rate) + Send + Sync>;

/// Paces bytes so that their long-run rate stays at the schedule's current
/// rate. Shared (`Arc`) by all the streams it limits together; each calls
/// [`acquire`](RateLimiter::acquire) for the bytes it moves. Uses tokio's
/// clock, so it works under `tokio::time::pause()`.
pub struct RateLimiter {
    schedule: RateSchedule,
    clock: Clock,
    observer: Option<Observer>,
    bucket: Mutex<Bucket>,
}

struct Bucket {
    /// The rate in force; `None`: no limit.
    rate: Rate,
    /// Bytes that may go now; negative while waiters have borrowed ahead.
    tokens: f64,
    /// When `tokens` was last refilled.
    refilled: Instant,
    /// When `rate` was last read from the schedule.
    checked: Instant,
}

impl std::fmt::Debug for RateLimiter {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("RateLimiter")
            .field("schedule", &self.schedule.to_string())
            .field("rate", &self.current_rate())
            .finish()
    }
}

impl RateLimiter {
    /// A limiter following `schedule` by this machine's local time.
    pub fn new(schedule: RateSchedule) -> Arc<RateLimiter> {
        Self::with_clock(schedule, local_minute_of_day)
    }

    /// A limiter following `schedule` by `clock`, which gives the local
    /// minute of the day (tests pass their own).
    pub fn with_clock(
        schedule: RateSchedule,
        clock: impl Fn() -> u16 + Send + Sync + 'static,
    ) -> Arc<RateLimiter> {
        Self::build(schedule, Box::new(clock), None)
    }

    /// A limiter that also tells `observer` the rate in force: once now, and
    /// again each time the schedule moves to another rate (the receiver
    /// sizes its flow-control window by it).
    pub fn with_observer(
        schedule: RateSchedule,
        observer: impl Fn(Rate) + Send + Sync + 'static,
    ) -> Arc<RateLimiter> {
        Self::build(
            schedule,
            Box::new(local_minute_of_day),
            Some(Box::new(observer)),
        )
    }

    fn build(schedule: RateSchedule, clock: Clock, observer: Option<Observer>) -> Arc<Self> {
        let now = Instant::now();
        let rate = schedule.rate_at(clock());
        if let Some(observer) = &observer {
            observer(rate);
        }
        Arc::new(RateLimiter {
            bucket: Mutex::new(Bucket {
                rate,
                tokens: rate.map_or(0.0, |r| burst(r) as f64),
                refilled: now,
                checked: now,
            }),
            schedule,
            clock,
            observer,
        })
    }

    /// The schedule this limiter follows.
    pub fn schedule(&self) -> &RateSchedule {
        &self.schedule
    }

    /// The rate in force (as last read from the schedule); `None`: no limit.
    pub fn current_rate(&self) -> Rate {
        self.lock().rate
    }

    fn lock(&self) -> MutexGuard<'_, Bucket> {
        // The bucket holds plain numbers, valid whatever a panicking holder
        // left half-done: take it back from a poisoned lock.
        self.bucket.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// Waits until `bytes` may go, keeping the long-run rate at the current
    /// rate. Returns at once while there is no limit.
    pub async fn acquire(&self, bytes: usize) {
        if self.schedule.is_unlimited() {
            return;
        }
        if let Some(wait) = self.reserve(bytes) {
            tokio::time::sleep(wait).await;
        }
    }

    /// Takes `bytes` from the bucket (borrowing ahead if it must) and returns
    /// how long the caller has to wait for them.
    fn reserve(&self, bytes: usize) -> Option<Duration> {
        let now = Instant::now();
        let mut changed = None;
        let wait = {
            let mut bucket = self.lock();
            if now.duration_since(bucket.checked) >= RECHECK {
                bucket.checked = now;
                let rate = self.schedule.rate_at((self.clock)());
                if rate != bucket.rate {
                    changed = Some(rate);
                    bucket.tokens = match (bucket.rate, rate) {
                        // From no limit: start with a full burst.
                        (None, Some(r)) => burst(r) as f64,
                        // A smaller burst caps what is saved up; a debt stays.
                        (Some(_), Some(r)) => bucket.tokens.min(burst(r) as f64),
                        (_, None) => 0.0,
                    };
                    bucket.refilled = now;
                    bucket.rate = rate;
                }
            }
            match bucket.rate {
                None => {
                    bucket.refilled = now;
                    None
                }
                Some(rate) => {
                    let rate = rate as f64;
                    let elapsed = now.duration_since(bucket.refilled).as_secs_f64();
                    let cap = burst(rate as u64) as f64;
                    bucket.tokens = (bucket.tokens + elapsed * rate).min(cap) - bytes as f64;
                    bucket.refilled = now;
                    (bucket.tokens < 0.0).then(|| Duration::from_secs_f64(-bucket.tokens / rate))
                }
            }
        };
        if let (Some(rate), Some(observer)) = (changed, &self.observer) {
            tracing::info!(
                rate = %super::schedule::format_rate(rate),
                "bandwidth limit changed by the time of day"
            );
            observer(rate);
        }
        wait
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::atomic::{AtomicU16, AtomicUsize, Ordering};

    const MB: u64 = 1_000_000;

    /// Sends `total` bytes through `limiter` in `chunk`-byte acquires and
    /// returns the (paused) time it took.
    async fn pace(limiter: &RateLimiter, total: u64, chunk: usize) -> Duration {
        let start = Instant::now();
        let mut sent = 0;
        while sent < total {
            limiter.acquire(chunk).await;
            sent += chunk as u64;
        }
        start.elapsed()
    }

    fn assert_near(took: Duration, expected: f64, slack: f64) {
        let took = took.as_secs_f64();
        assert!(
            (took - expected).abs() <= slack,
            "took {took:.3} s, expected {expected:.3} s ± {slack:.3}"
        );
    }

    #[tokio::test(start_paused = true)]
    async fn n_bytes_at_r_take_n_over_r_less_the_burst() {
        for (rate, chunk) in [(MB, 16 * 1024), (4 * MB, 256 * 1024 + 9), (300_000, 1000)] {
            let limiter = RateLimiter::with_clock(RateSchedule::constant(Some(rate)), || 0);
            let total = 10 * rate;
            let took = pace(&limiter, total, chunk).await;
            // The first burst goes at once; the rest at `rate`.
            let expected = (total - burst(rate)) as f64 / rate as f64;
            let slack = (burst(rate) + chunk as u64) as f64 / rate as f64;
            assert_near(took, expected, slack);
            assert!(took.as_secs_f64() > 9.0, "{rate}: {took:?}");
        }
    }

    #[tokio::test(start_paused = true)]
    async fn streams_sharing_a_limiter_share_the_rate() {
        let rate = 2 * MB;
        let limiter = RateLimiter::with_clock(RateSchedule::constant(Some(rate)), || 0);
        let start = Instant::now();
        let mut tasks = tokio::task::JoinSet::new();
        for _ in 0..4 {
            let limiter = limiter.clone();
            tasks.spawn(async move { pace(&limiter, 3 * MB, 64 * 1024).await });
        }
        while let Some(done) = tasks.join_next().await {
            assert!(done.is_ok());
        }
        // 12 MB together at 2 MB/s.
        assert_near(
            start.elapsed(),
            (12 * MB - burst(rate)) as f64 / rate as f64,
            0.5,
        );
    }

    #[tokio::test(start_paused = true)]
    async fn unlimited_never_sleeps() {
        for schedule in [RateSchedule::constant(None), "off".parse().unwrap()] {
            let limiter = RateLimiter::with_clock(schedule, || 0);
            let took = pace(&limiter, 1 << 40, 1 << 30).await;
            assert_eq!(took, Duration::ZERO);
        }
        // Outside every window of a schedule with no default: no limit
        // either, and no time passes.
        let schedule: RateSchedule = "08:00-09:00=1kB/s".parse().unwrap();
        let limiter = RateLimiter::with_clock(schedule, || 12 * 60);
        assert_eq!(limiter.current_rate(), None);
        assert_eq!(pace(&limiter, 1 << 30, 1 << 20).await, Duration::ZERO);
    }

    #[tokio::test(start_paused = true)]
    async fn the_rate_follows_the_schedule_read_at_most_once_a_second() {
        let minute = Arc::new(AtomicU16::new(7 * 60 + 59));
        let reads = Arc::new(AtomicUsize::new(0));
        let schedule: RateSchedule = "08:00-18:00=1MB/s,4MB/s".parse().unwrap();
        let (m, r) = (minute.clone(), reads.clone());
        let limiter = RateLimiter::with_clock(schedule, move || {
            r.fetch_add(1, Ordering::Relaxed);
            m.load(Ordering::Relaxed)
        });
        assert_eq!(limiter.current_rate(), Some(4 * MB));
        // 8 MB at 4 MB/s: about 2 s, so about two more reads of the clock,
        // however many acquires.
        let took = pace(&limiter, 8 * MB, 4096).await;
        assert_near(took, (8 * MB - burst(4 * MB)) as f64 / (4 * MB) as f64, 0.2);
        let read = reads.load(Ordering::Relaxed);
        assert!((2..=4).contains(&read), "{read} clock reads");
        // 08:00: the window's 1 MB/s takes over within a second.
        minute.store(8 * 60, Ordering::Relaxed);
        tokio::time::sleep(RECHECK).await;
        limiter.acquire(1).await;
        assert_eq!(limiter.current_rate(), Some(MB));
        let took = pace(&limiter, 3 * MB, 4096).await;
        assert_near(took, 3.0, 0.2);
    }

    #[tokio::test(start_paused = true)]
    async fn the_observer_hears_the_rate_now_and_on_each_change() {
        let heard = Arc::new(Mutex::new(Vec::new()));
        let h = heard.clone();
        let minute = Arc::new(AtomicU16::new(21 * 60 + 59));
        let m = minute.clone();
        let schedule: RateSchedule = "22:00-06:00=off,1MB/s".parse().unwrap();
        let limiter = RateLimiter::build(
            schedule,
            Box::new(move || m.load(Ordering::Relaxed)),
            Some(Box::new(move |rate| h.lock().unwrap().push(rate))),
        );
        pace(&limiter, 3 * MB, 64 * 1024).await;
        assert_eq!(*heard.lock().unwrap(), vec![Some(MB)]);
        // 22:00: no limit any more; the change is heard once.
        minute.store(22 * 60, Ordering::Relaxed);
        tokio::time::sleep(RECHECK).await;
        assert_eq!(pace(&limiter, 100 * MB, 1 << 20).await, Duration::ZERO);
        assert_eq!(*heard.lock().unwrap(), vec![Some(MB), None]);
        // 06:00: limited again, starting from a full burst.
        minute.store(6 * 60, Ordering::Relaxed);
        tokio::time::sleep(RECHECK).await;
        let took = pace(&limiter, 2 * MB, 64 * 1024).await;
        assert_near(took, (2 * MB - burst(MB)) as f64 / MB as f64, 0.2);
        assert_eq!(*heard.lock().unwrap(), vec![Some(MB), None, Some(MB)]);
    }
}
