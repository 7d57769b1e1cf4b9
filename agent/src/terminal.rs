//! What a command shows on stderr: the progress bar of a run (on a terminal
//! only) and the lines printed around it, logs and summary, without tearing
//! the bar.
//!
//! One [`Terminal`] is made per process and handed down explicitly: the
//! tracing subscriber writes through it ([`tracing_subscriber::fmt::MakeWriter`]),
//! commands print their summary through it, and [`Terminal::progress`] draws
//! the bar of a [`SenderStatus`]'s counters. Every write first takes the bar
//! off the screen and redraws it after (indicatif's `suspend`), so a log line
//! or the summary always starts on a line of its own.

use std::io::{IsTerminal, Write};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use indicatif::{ProgressBar, ProgressDrawTarget, ProgressStyle};
use tokio_util::sync::CancellationToken;

use crate::status::{SenderPhase, SenderStatus};
use crate::summary::{human_bytes, ProgressSnapshot};

/// How often the bar is updated from the counters.
const TICK: Duration = Duration::from_millis(200);

/// Stderr of this process, shared by the logs, the summary and the bar.
#[derive(Clone, Debug, Default)]
pub struct Terminal {
    /// The bar on screen, if any.
    bar: Arc<Mutex<Option<ProgressBar>>>,
    /// Draw a bar at all: stderr is a terminal and the user did not ask for
    /// quiet.
    show_progress: bool,
    /// `-q`: no summary lines, only errors.
    quiet: bool,
}

impl Terminal {
    /// Stderr of this process. A bar is drawn only if stderr is a terminal
    /// and `quiet` is false; with `quiet`, [`Self::summary`] prints nothing.
    pub fn stderr(quiet: bool) -> Terminal {
        Terminal {
            bar: Arc::default(),
            show_progress: !quiet && std::io::stderr().is_terminal(),
            quiet,
        }
    }

    /// Prints one line on stderr (a problem, an error), below the bar.
    pub fn line(&self, line: &str) {
        let mut text = String::with_capacity(line.len() + 1);
        text.push_str(line);
        text.push('\n');
        self.write(text.as_bytes());
    }

    /// Prints a command's summary line, unless the user asked for quiet.
    pub fn summary(&self, line: &str) {
        if !self.quiet {
            self.line(line);
        }
    }

    /// Whether summaries are dropped (`-q`).
    pub fn is_quiet(&self) -> bool {
        self.quiet
    }

    /// Writes bytes to stderr with the bar, if any, taken off the screen
    /// meanwhile.
    fn write(&self, bytes: &[u8]) {
        let bar = self.bar.lock().ok().and_then(|b| b.clone());
        let write = || {
            let mut err = std::io::stderr().lock();
            let _ = err.write_all(bytes);
            let _ = err.flush();
        };
        match bar {
            Some(bar) => bar.suspend(write),
            None => write(),
        }
    }

    /// Draws a bar of `status`'s counters while a run is going, if stderr is
    /// a terminal (and not `-q`). The bar is cleared between runs and when
    /// the returned guard is finished or dropped.
    pub fn progress(&self, status: Arc<SenderStatus>) -> Option<ProgressGuard> {
        if !self.show_progress {
            return None;
        }
        let stop = CancellationToken::new();
        let token = stop.clone();
        let slot = self.bar.clone();
        let task = tokio::spawn(async move {
            let mut tick = tokio::time::interval(TICK);
            let mut started = Instant::now();
            loop {
                tokio::select! {
                    _ = token.cancelled() => break,
                    _ = tick.tick() => {}
                }
                let s = status.progress.snapshot();
                let running = matches!(
                    status.phase(),
                    SenderPhase::Starting | SenderPhase::Running { .. }
                );
                let Ok(mut bar) = slot.lock() else { break };
                let started_work = s.entries_total > 0
                    || s.bytes_total > 0
                    || s.entries_done > 0
                    || s.bytes_done > 0;
                if running && started_work {
                    bar.get_or_insert_with(new_bar)
                        .set_message(progress_text(s, started.elapsed()));
                } else {
                    if let Some(bar) = bar.take() {
                        bar.finish_and_clear();
                    }
                    if !running {
                        // The next run's rate is counted from its start.
                        started = Instant::now();
                    }
                }
            }
        });
        Some(ProgressGuard {
            stop,
            task: Some(task),
            slot: self.bar.clone(),
        })
    }
}

/// A bar on stderr that shows its message: indicatif draws it (at most a
/// few times a second), takes it off the screen for other output and clears
/// it; [`progress_text`] makes what it shows.
fn new_bar() -> ProgressBar {
    let bar = ProgressBar::with_draw_target(None, ProgressDrawTarget::stderr());
    if let Ok(style) = ProgressStyle::with_template("{wide_msg}") {
        bar.set_style(style);
    }
    bar
}

/// Characters between the brackets of the bar.
const BAR_WIDTH: usize = 25;

/// How far the run is, in thousandths: by bytes when it has content, by
/// entries otherwise.
fn permille(s: ProgressSnapshot) -> u64 {
    let (done, total) = if s.bytes_total > 0 {
        (s.bytes_done, s.bytes_total)
    } else {
        (s.entries_done, s.entries_total)
    };
    if total == 0 {
        return 0;
    }
    (u128::from(done.min(total)) * 1000 / u128::from(total)) as u64
}

/// The bar's text: a bar, percent, bytes, entries, rate and time left, e.g.
/// `[==========>              ]  42% 2.1 MiB / 5.0 MiB, 12/30 entries,
/// 1.0 MiB/s, ETA 3s`. The rate
/// is the average since the run started (`elapsed` ago).
/// While the size is unknown (0 entries in total), only what was done and
/// the rate: `1.5 MiB, 3 entries, 1.0 MiB/s`.
pub fn progress_text(s: ProgressSnapshot, elapsed: Duration) -> String {
    let percent = permille(s) / 10;
    let secs = elapsed.as_secs_f64();
    let rate = if secs > 0.0 {
        s.bytes_done as f64 / secs
    } else {
        0.0
    };
    if s.entries_total == 0 && s.bytes_total == 0 {
        return format!(
            "{}, {} entries, {}/s",
            human_bytes(s.bytes_done),
            s.entries_done,
            human_bytes(rate as u64)
        );
    }
    let left = s.bytes_total.saturating_sub(s.bytes_done);
    let eta = if left == 0 && s.bytes_total > 0 {
        "0s".to_string()
    } else if rate >= 1.0 {
        short_duration(Duration::from_secs_f64(left as f64 / rate))
    } else {
        "-".to_string()
    };
    let filled = (permille(s) * BAR_WIDTH as u64 / 1000) as usize;
    let mut bar = "=".repeat(filled);
    if filled < BAR_WIDTH {
        bar.push('>');
        bar.push_str(&" ".repeat(BAR_WIDTH - filled - 1));
    }
    format!(
        "[{bar}] {percent:>3}% {} / {}, {}/{} entries, {}/s, ETA {eta}",
        human_bytes(s.bytes_done),
        human_bytes(s.bytes_total),
        s.entries_done,
        s.entries_total,
        human_bytes(rate as u64),
    )
}

/// `75 s` → `1m15s`, rounded up to the second.
fn short_duration(d: Duration) -> String {
    let total = d.as_secs() + u64::from(d.subsec_nanos() > 0);
    let (h, m, s) = (total / 3600, total / 60 % 60, total % 60);
    if h > 0 {
        format!("{h}h{m:02}m")
    } else if m > 0 {
        format!("{m}m{s:02}s")
    } else {
        format!("{s}s")
    }
}

/// Keeps the bar going; finishing or dropping it clears the bar.
#[derive(Debug)]
pub struct ProgressGuard {
    stop: CancellationToken,
    task: Option<tokio::task::JoinHandle<()>>,
    slot: Arc<Mutex<Option<ProgressBar>>>,
}

impl ProgressGuard {
    /// Stops the bar and waits until it is off the screen.
    pub async fn finish(mut self) {
        self.stop.cancel();
        if let Some(task) = self.task.take() {
            let _ = task.await;
        }
        self.clear();
    }

    fn clear(&self) {
        if let Some(bar) = self.slot.lock().ok().and_then(|mut b| b.take()) {
            bar.finish_and_clear();
        }
    }
}

impl Drop for ProgressGuard {
    fn drop(&mut self) {
        self.stop.cancel();
        self.clear();
    }
}

/// One log event's text, written in one piece when the event is done.
pub struct LogWriter {
    terminal: Terminal,
    buf: Vec<u8>,
}

impl Write for LogWriter {
    fn write(&mut self, bytes: &[u8]) -> std::io::Result<usize> {
        self.buf.extend_from_slice(bytes);
        Ok(bytes.len())
    }

    fn flush(&mut self) -> std::io::Result<()> {
        if !self.buf.is_empty() {
            self.terminal.write(&self.buf);
            self.buf.clear();
        }
        Ok(())
    }
}

impl Drop for LogWriter {
    fn drop(&mut self) {
        let _ = self.flush();
    }
}

impl<'a> tracing_subscriber::fmt::MakeWriter<'a> for Terminal {
    type Writer = LogWriter;

    fn make_writer(&'a self) -> LogWriter {
        LogWriter {
            terminal: self.clone(),
            buf: Vec::new(),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn snap(entries: (u64, u64), bytes: (u64, u64)) -> ProgressSnapshot {
        ProgressSnapshot {
            entries_done: entries.0,
            entries_total: entries.1,
            bytes_done: bytes.0,
            bytes_total: bytes.1,
        }
    }

    #[test]
    fn progress_text_has_percent_rate_and_eta() {
        let mib = 1 << 20;
        let text = progress_text(snap((12, 30), (2 * mib, 5 * mib)), Duration::from_secs(2));
        assert_eq!(
            text,
            "[==========>              ]  40% 2.0 MiB / 5.0 MiB, 12/30 entries, 1.0 MiB/s, ETA 3s"
        );
        let text = progress_text(snap((1, 2), (mib, 101 * mib)), Duration::from_secs(1));
        assert!(text.ends_with("1.0 MiB/s, ETA 1m40s"), "{text}");
        let text = progress_text(snap((1, 2), (mib, 7201 * mib)), Duration::from_secs(1));
        assert!(text.ends_with("ETA 2h00m"), "{text}");
    }

    #[test]
    fn progress_text_without_a_rate_has_no_eta() {
        let text = progress_text(snap((0, 3), (0, 300)), Duration::ZERO);
        assert_eq!(
            text,
            "[>                        ]   0% 0 B / 300 B, 0/3 entries, 0 B/s, ETA -"
        );
    }

    #[test]
    fn progress_of_unknown_size_has_no_percent() {
        let text = progress_text(snap((3, 0), (3 << 20, 0)), Duration::from_secs(3));
        assert_eq!(text, "3.0 MiB, 3 entries, 1.0 MiB/s");
    }

    #[test]
    fn a_run_of_only_directories_counts_entries() {
        let text = progress_text(snap((3, 4), (0, 0)), Duration::from_secs(1));
        assert!(text.contains("]  75% "), "{text}");
        let done = progress_text(snap((5, 5), (100, 100)), Duration::from_secs(1));
        assert!(
            done.starts_with(&format!("[{}] 100% ", "=".repeat(25))) && done.ends_with("ETA 0s"),
            "{done}"
        );
    }

    #[test]
    fn quiet_or_not_a_terminal_draws_no_bar() {
        // `-q` never draws; neither does a stderr that is not a terminal
        // (tests run with it captured or piped, where no bar is drawn).
        assert!(Terminal::stderr(true)
            .progress(SenderStatus::new())
            .is_none());
        if !std::io::stderr().is_terminal() {
            assert!(Terminal::stderr(false)
                .progress(SenderStatus::new())
                .is_none());
        }
    }
}
