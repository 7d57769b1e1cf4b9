//! What a run reports: the summary printed at its end (as text or JSON) and
//! live progress counters that the terminal's bar ([`crate::terminal`]) or the
//! launcher reads.

use std::sync::atomic::{AtomicU64, Ordering};

use serde::Serialize;

/// One file or directory that could not be sent, and why.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Problem {
    pub path: String,
    pub message: String,
}

/// The account of one sender run.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize)]
pub struct RunSummary {
    /// The run's number in the receiver's catalog, once it was committed.
    pub run_id: Option<u64>,
    /// Regular files and symlinks stored with new content.
    pub files_sent: u64,
    /// Files whose content was already on the receiver: only metadata moved.
    pub files_metadata_only: u64,
    /// Directories created or updated on the receiver.
    pub dirs_sent: u64,
    pub files_unchanged: u64,
    pub files_deleted: u64,
    /// The files' own size: the sum of the sizes of the files sent with
    /// content.
    pub bytes_file_data: u64,
    /// Of that, the bytes sent as content, before compression (the rest
    /// the receiver already had: unchanged chunks, a resumed transfer).
    pub bytes_file_data_new: u64,
    /// What that content took on the wire, after compression.
    pub bytes_file_data_wire: u64,
    /// UDP bytes the connection sent and received, both directions
    /// (content, headers, answers, handshake): everything.
    pub bytes_on_wire: u64,
    /// Entries that failed (each is in `problems`).
    pub errors: u64,
    /// Special files (sockets, FIFOs, devices) skipped.
    pub skipped: u64,
    pub duration_ms: u64,
    pub problems: Vec<Problem>,
    /// Files, directories and symlinks the run's scan looked at.
    pub entries_scanned: u64,
    /// Of those, directories.
    pub dirs_scanned: u64,
    /// The scan looked only at the directories that changed (watch mode).
    pub partial_scan: bool,
}

impl RunSummary {
    /// Records a failed entry.
    pub fn problem(&mut self, path: impl Into<String>, message: impl Into<String>) {
        self.errors += 1;
        self.problems.push(Problem {
            path: path.into(),
            message: message.into(),
        });
    }

    /// One line for people.
    pub fn line(&self) -> String {
        format!(
            "{} sent, {} metadata-only, {} unchanged, {} deleted, {} dirs; {}, {} on the wire in all; {} errors; {:.1}s",
            self.files_sent,
            self.files_metadata_only,
            self.files_unchanged,
            self.files_deleted,
            self.dirs_sent,
            data_figures(
                self.bytes_file_data,
                self.bytes_file_data_new,
                self.bytes_file_data_wire
            ),
            human_bytes(self.bytes_on_wire),
            self.errors,
            self.duration_ms as f64 / 1000.0
        )
    }
}

/// Examples named in a grouped problem line.
const PROBLEM_EXAMPLES: usize = 3;

/// The problems of a run for people: with `all`, one line per entry
/// (`path: why`); otherwise one line per reason, with how many entries it
/// hit and a few of their paths, most frequent reason first:
/// `2655 files not sent: the receiver's disk is full at …; … (a, b, c and
/// 2652 more)`. Paths inside a reason (the receiver's own paths, say) are
/// shown as `…` so that one reason is one line.
pub fn problem_lines(problems: &[Problem], all: bool) -> Vec<String> {
    if all {
        return problems
            .iter()
            .map(|p| match p.path.is_empty() {
                true => p.message.clone(),
                false => format!("{}: {}", p.path, p.message),
            })
            .collect();
    }
    let mut groups: Vec<(String, Vec<&str>)> = Vec::new();
    for p in problems {
        let reason = without_paths(&p.message);
        match groups.iter_mut().find(|(r, _)| *r == reason) {
            Some((_, paths)) => paths.push(&p.path),
            None => groups.push((reason, vec![&p.path])),
        }
    }
    // Stable: equally frequent reasons keep the order they first came in.
    groups.sort_by_key(|g| std::cmp::Reverse(g.1.len()));
    groups
        .into_iter()
        .map(|(reason, paths)| {
            let n = paths.len();
            let noun = if n == 1 { "file" } else { "files" };
            let shown: Vec<&str> = paths
                .iter()
                .copied()
                .filter(|p| !p.is_empty())
                .take(PROBLEM_EXAMPLES)
                .collect();
            let more = n - shown.len();
            let examples = match (shown.is_empty(), more) {
                (true, _) => String::new(),
                (false, 0) => format!(" ({})", shown.join(", ")),
                (false, more) => format!(" ({} and {more} more)", shown.join(", ")),
            };
            match reason.strip_prefix("not ") {
                // "not deleted on the receiver: ...".
                Some(_) => format!("{n} {noun} {reason}{examples}"),
                None => format!("{n} {noun} not sent: {reason}{examples}"),
            }
        })
        .collect()
}

/// `message` with each word that is a path (holds a `/`) replaced by `…`.
fn without_paths(message: &str) -> String {
    message
        .split(' ')
        .map(|word| {
            let bare = word.trim_end_matches([';', ',', ':', ')', '.']);
            match bare.contains('/') && !bare.contains("//") {
                true => format!("…{}", &word[bare.len()..]),
                false => word.to_string(),
            }
        })
        .collect::<Vec<_>>()
        .join(" ")
}

/// The file data of a run in words: the files' own size, what of it was
/// new to the receiver (when not all), and what that took on the wire,
/// with compression's saving: `5.3 MiB of file data, 47.1 KiB on the wire
/// (compression saved 99%)`.
pub fn data_figures(own: u64, new: u64, wire: u64) -> String {
    let mut out = format!("{} of file data", human_bytes(own));
    if new != own {
        out.push_str(&format!(", {} of it new", human_bytes(new)));
    }
    out.push_str(&format!(", {} on the wire", human_bytes(wire)));
    if let Some(saved) = saving_percent(new, wire) {
        out.push_str(&format!(" (compression saved {saved}%)"));
    }
    out
}

/// A recorded run's file data in words: the files' own size (unknown for
/// runs recorded before Ferry kept it) and what their content took on the
/// wire.
pub fn recorded_data(own: Option<u64>, wire: u64) -> String {
    match own {
        Some(own) => format!(
            "{} of file data, {} on the wire",
            human_bytes(own),
            human_bytes(wire)
        ),
        None => format!("{} of file data on the wire", human_bytes(wire)),
    }
}

/// A run's file data in a table cell: `5.3 MiB (47.1 KiB on the wire)`.
/// A run with content on the wire but no size recorded (recorded before
/// Ferry kept the files' size) shows the wire figure alone.
pub fn data_cell(own: u64, wire: u64) -> String {
    if own == 0 && wire > 0 {
        return format!("{} on the wire", human_bytes(wire));
    }
    format!("{} ({} on the wire)", human_bytes(own), human_bytes(wire))
}

/// How much smaller `after` is than `before`, in whole percent; `None`
/// when nothing was saved.
pub fn saving_percent(before: u64, after: u64) -> Option<u64> {
    if before == 0 || after >= before {
        return None;
    }
    let saved = (before - after) as u128 * 100 / before as u128;
    Some(saved as u64)
}

/// `1536` → `1.5 KiB`.
pub fn human_bytes(n: u64) -> String {
    const UNITS: [&str; 5] = ["B", "KiB", "MiB", "GiB", "TiB"];
    let mut value = n as f64;
    let mut unit = 0;
    while value >= 1024.0 && unit + 1 < UNITS.len() {
        value /= 1024.0;
        unit += 1;
    }
    if unit == 0 {
        format!("{n} B")
    } else {
        format!("{value:.1} {}", UNITS[unit])
    }
}

/// Live counters of a run, shared between the run and whoever displays it.
#[derive(Debug, Default)]
pub struct Progress {
    pub entries_total: AtomicU64,
    pub entries_done: AtomicU64,
    pub bytes_total: AtomicU64,
    pub bytes_done: AtomicU64,
}

/// A consistent-enough reading of [`Progress`].
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct ProgressSnapshot {
    pub entries_total: u64,
    pub entries_done: u64,
    pub bytes_total: u64,
    pub bytes_done: u64,
}

impl Progress {
    /// Starts a new run with this much work.
    pub fn reset(&self, entries: u64, bytes: u64) {
        self.entries_total.store(entries, Ordering::Relaxed);
        self.bytes_total.store(bytes, Ordering::Relaxed);
        self.entries_done.store(0, Ordering::Relaxed);
        self.bytes_done.store(0, Ordering::Relaxed);
    }

    pub fn add_bytes(&self, n: u64) {
        self.bytes_done.fetch_add(n, Ordering::Relaxed);
    }

    pub fn entry_done(&self) {
        self.entries_done.fetch_add(1, Ordering::Relaxed);
    }

    pub fn snapshot(&self) -> ProgressSnapshot {
        ProgressSnapshot {
            entries_total: self.entries_total.load(Ordering::Relaxed),
            entries_done: self.entries_done.load(Ordering::Relaxed),
            bytes_total: self.bytes_total.load(Ordering::Relaxed),
            bytes_done: self.bytes_done.load(Ordering::Relaxed),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn bytes_are_readable() {
        assert_eq!(human_bytes(5), "5 B");
        assert_eq!(human_bytes(1536), "1.5 KiB");
        assert_eq!(human_bytes(3 << 30), "3.0 GiB");
    }

    #[test]
    fn file_data_is_the_files_size_and_the_wire_figure_is_apart() {
        assert_eq!(
            data_figures(5_557_452, 5_557_452, 48_230),
            "5.3 MiB of file data, 47.1 KiB on the wire (compression saved 99%)"
        );
        assert_eq!(
            data_figures(256 << 20, 32 << 10, 20 << 10),
            "256.0 MiB of file data, 32.0 KiB of it new, 20.0 KiB on the wire (compression saved 37%)"
        );
        assert_eq!(
            data_figures(1000, 1000, 1000),
            "1000 B of file data, 1000 B on the wire"
        );
        assert_eq!(saving_percent(0, 0), None);
        assert_eq!(saving_percent(u64::MAX, 1), Some(99));
    }

    #[test]
    fn summary_json_has_the_documented_fields() {
        let mut s = RunSummary::default();
        s.problem("a", "gone");
        let v: serde_json::Value = serde_json::to_value(&s).unwrap();
        for key in [
            "files_sent",
            "files_unchanged",
            "files_deleted",
            "bytes_file_data",
            "bytes_file_data_new",
            "bytes_file_data_wire",
            "bytes_on_wire",
            "errors",
            "duration_ms",
        ] {
            assert!(v.get(key).is_some(), "{key} missing");
        }
        assert_eq!(v["errors"], 1);
    }

    #[test]
    fn problems_of_one_reason_are_one_line_with_a_few_examples() {
        let mut summary = RunSummary::default();
        for i in 0..2655 {
            summary.problem(
                format!("a/{i}"),
                format!("the receiver did not store it: the receiver's disk is full at /st/.ferry/staging/{i}; free space and the sender will retry"),
            );
        }
        summary.problem("b", "cannot read: Permission denied (os error 13)");
        summary.problem("c", "not deleted on the receiver: busy");
        let lines = problem_lines(&summary.problems, false);
        assert_eq!(
            lines,
            [
                "2655 files not sent: the receiver did not store it: the receiver's disk is full at …; free space and the sender will retry (a/0, a/1, a/2 and 2652 more)",
                "1 file not sent: cannot read: Permission denied (os error 13) (b)",
                "1 file not deleted on the receiver: busy (c)",
            ]
        );
        let all = problem_lines(&summary.problems, true);
        assert_eq!(all.len(), 2657);
        assert_eq!(all[2656], "c: not deleted on the receiver: busy");
    }
}
