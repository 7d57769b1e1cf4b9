//! "What do my patterns exclude?": a walk of the sender's source with the
//! form's exclusion rules, on a thread of its own (never the UI thread), and
//! its answer for the panel.

use std::path::PathBuf;
use std::sync::{Arc, Mutex, PoisonError};

use ferry_agent::scan::{scan_filtered, ExcludeRules, SourceDir};

/// What one count found, for the patterns and source it was made with.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Counted {
    /// The source walked.
    pub source: String,
    /// The patterns, as typed.
    pub patterns: String,
    /// Files and symlinks excluded.
    pub files: u64,
    /// Directories excluded (each counts once, whatever it holds).
    pub dirs: u64,
    /// Entries that would be sent.
    pub kept: u64,
}

/// Where a count stands.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub enum CountState {
    /// None asked for yet.
    #[default]
    Idle,
    /// Walking.
    Counting,
    /// Done.
    Done(Counted),
    /// The patterns or the source could not be used.
    Failed(String),
}

/// The count shared between the panel and the thread that makes it.
#[derive(Debug, Clone, Default)]
pub struct ExclusionCount(Arc<Mutex<CountState>>);

impl ExclusionCount {
    /// Where the count stands now.
    pub fn state(&self) -> CountState {
        self.0
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .clone()
    }

    fn set(&self, state: CountState) {
        *self.0.lock().unwrap_or_else(PoisonError::into_inner) = state;
    }

    /// Starts counting what `patterns` (one a line) and the `.ferryignore`
    /// files exclude in `source`; `done` is called from the thread at the
    /// end (to repaint).
    pub fn start(&self, source: &str, patterns: &str, done: impl FnOnce() + Send + 'static) {
        if self.state() == CountState::Counting {
            return;
        }
        self.set(CountState::Counting);
        let this = self.clone();
        let (source, patterns) = (source.to_string(), patterns.to_string());
        let spawned = std::thread::Builder::new()
            .name("ferry-gui-exclude-count".into())
            .spawn(move || {
                this.set(count(source, patterns));
                done();
            });
        if let Err(e) = spawned {
            self.set(CountState::Failed(format!("cannot start counting: {e}")));
        }
    }
}

/// The patterns of a multi-line field: one a line, blank lines left out.
pub fn pattern_lines(text: &str) -> Vec<String> {
    text.lines()
        .filter(|l| !l.trim().is_empty())
        .map(str::to_string)
        .collect()
}

fn count(source: String, patterns: String) -> CountState {
    let rules = match ExcludeRules::new(&pattern_lines(&patterns), None) {
        Ok(rules) => rules,
        Err(e) => return CountState::Failed(ferry_agent::chain::chain(&e)),
    };
    let dir = match SourceDir::open(&PathBuf::from(source.trim())) {
        Ok(dir) => dir,
        Err(e) => return CountState::Failed(ferry_agent::chain::chain(&e)),
    };
    let scan = scan_filtered(&dir, &[], &rules);
    CountState::Done(Counted {
        source,
        patterns,
        files: scan.stats.excluded_files,
        dirs: scan.stats.excluded_dirs,
        kept: scan.entries.len() as u64,
    })
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;
    use std::time::{Duration, Instant};

    #[test]
    fn counts_off_the_calling_thread() {
        let dir = tempfile::tempdir().unwrap();
        std::fs::create_dir_all(dir.path().join("node_modules/x")).unwrap();
        std::fs::write(dir.path().join("node_modules/x/a.js"), "a").unwrap();
        std::fs::write(dir.path().join("a.log"), "a").unwrap();
        std::fs::write(dir.path().join("b.txt"), "b").unwrap();
        let count = ExclusionCount::default();
        let source = dir.path().display().to_string();
        count.start(&source, "node_modules/\n\n*.log\n", || {});
        let start = Instant::now();
        while count.state() == CountState::Counting {
            assert!(
                start.elapsed() < Duration::from_secs(60),
                "count never ended"
            );
            std::thread::sleep(Duration::from_millis(10));
        }
        let CountState::Done(counted) = count.state() else {
            panic!("{:?}", count.state());
        };
        assert_eq!((counted.files, counted.dirs, counted.kept), (1, 1, 1));
    }
}
