//! `watch-latency` and `watch-idle` (issue 15): a tree of 200,000 small
//! files (2,000 with `--quick`) under `ferry send --watch --json` to a
//! receiver, one sender for both scenarios.
//!
//! After the sender's first (full) run, the mirror is checked. Then:
//!
//! - `watch-idle`: nothing changes for 60 s (10 s with `--quick`); the
//!   sender's CPU seconds over that window come from `/proc/PID/stat`
//!   (utime + stime, all its threads), its peak RSS from `VmHWM` in
//!   `/proc/PID/status`, reset through `/proc/PID/clear_refs` at the start
//!   of the window (the peak over the whole life, first full run of the
//!   tree included, is reported beside it).
//! - `watch-latency`: 20 single-file changes (3 with `--quick`), one every
//!   5 s; each is timed from the file's close to the moment its version
//!   (same size and mtime) is current in the receiver's catalog. The
//!   catalog is read the way `ferry versions --store` reads it while a
//!   receiver runs (`Store::open_read_only`: SQLite read-only, WAL), in this
//!   process, every 10 ms: a row is there only once the receiver committed
//!   it (after the file was made durable, before it answered the sender),
//!   and polling in-process adds at most 10 ms, where spawning `ferry
//!   versions` per poll would add a process start and compete for the two
//!   cores. Each triggered run's `entries_scanned` comes from the sender's
//!   `--json` line for that run.
//!
//! The mirror is checked again at the end, and the changed files are
//! regenerated.

use std::ffi::OsStr;
use std::io::Write as _;
use std::os::unix::fs::MetadataExt;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use anyhow::{bail, Context};
use ferry_agent::store::Store;
use ferry_proto::{Name, RelPath};

use super::data::{Sizes, SplitMix64};
use super::goals;
use super::report::{median, Report};
use super::scenarios::Extra;
use super::tools::{remove_tree, Ferry};

/// Bump when the generated tree changes.
const TREE_VERSION: &str = "ferry-bench watch tree v1";
/// Files per directory of the tree: a triggered run lists one of them.
const FILES_PER_DIR: usize = 200;
/// The watch delay passed to the sender (the default, said explicitly).
const WATCH_DELAY_S: u64 = 2;
/// Time between two changes.
const CHANGE_EVERY: Duration = Duration::from_secs(5);
/// How often the catalog is polled.
const POLL: Duration = Duration::from_millis(10);
/// Longest wait for one change to be recorded.
const CHANGE_TIMEOUT: Duration = Duration::from_secs(120);
/// Longest wait for the first full run of the tree.
const FIRST_RUN_TIMEOUT: Duration = Duration::from_secs(3600);

/// The sizes of the watch scenarios.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct WatchSizes {
    /// Files in the tree.
    pub files: usize,
    /// Single-file changes in `watch-latency`.
    pub changes: usize,
    /// Seconds of the idle window of `watch-idle`.
    pub idle_s: u64,
}

impl WatchSizes {
    /// 200,000 files, 20 changes, 60 s idle; with `quick`: 2,000, 3, 10 s.
    pub fn new(quick: bool) -> WatchSizes {
        if quick {
            WatchSizes {
                files: 2_000,
                changes: 3,
                idle_s: 10,
            }
        } else {
            WatchSizes {
                files: 200_000,
                changes: 20,
                idle_s: 60,
            }
        }
    }
}

/// Where file `i` of the tree lives, relative to its root.
fn rel(i: usize) -> PathBuf {
    let dir = i / FILES_PER_DIR;
    PathBuf::from(format!("d{:02}/e{:02}/f{i:06}.txt", dir / 50, dir % 50))
}

/// The generated content of file `i`: 24 to 96 bytes.
fn content(i: usize) -> String {
    let mut rng = SplitMix64::new("watch", i as u64);
    let lines = rng.range(1, 4);
    (0..lines)
        .map(|_| format!("{i:06} {:016x}\n", rng.next_u64()))
        .collect()
}

/// The file the `k`th change rewrites: spread over the tree.
fn changed_file(k: usize, files: usize) -> usize {
    (k * 7_919 + 4_999) % files
}

/// The content the `k`th change writes: longer than any generated one.
fn changed_content(k: usize, i: usize) -> String {
    format!("changed {k} of file {i}: {}\n", "x".repeat(100 + k))
}

/// The tree of `files` files under `data_dir`, generated unless complete.
fn prepare(data_dir: &Path, files: usize) -> anyhow::Result<PathBuf> {
    let root = data_dir.join(format!("watch-{files}"));
    let marker = root.with_extension("ready");
    if std::fs::read_to_string(&marker).ok().as_deref() == Some(TREE_VERSION) {
        return Ok(root);
    }
    eprintln!("bench: generating the watch tree of {files} files ...");
    remove_tree(&root)?;
    for i in 0..files {
        let path = root.join(rel(i));
        if i % FILES_PER_DIR == 0 {
            if let Some(parent) = path.parent() {
                std::fs::create_dir_all(parent)?;
            }
        }
        std::fs::write(&path, content(i)).with_context(|| format!("writing {}", path.display()))?;
    }
    std::fs::write(&marker, TREE_VERSION)
        .with_context(|| format!("writing {}", marker.display()))?;
    Ok(root)
}

/// Measures the `watch-*` scenarios of the plan.
pub fn run(extra: &Extra<'_>, report: &mut Report) -> anyhow::Result<()> {
    let plan = extra.plan;
    let sizes = WatchSizes::new(plan.sizes == Sizes::quick());
    let root = prepare(&plan.data_dir, sizes.files)?;
    let name = format!("watch-{}", sizes.files);
    let ferry = Ferry::setup(&plan.ferry_bin, &extra.work.join("ferry-watch"), &[&name])?;
    ferry.reset(&name)?;
    if plan.reps > 1 {
        report.notes.push(format!(
            "watch-latency and watch-idle run once ({} changes, {} s idle), whatever --reps",
            sizes.changes, sizes.idle_s
        ));
    }
    let (receiver, port) = ferry.start_receiver(&name, extra.scratch)?;
    let mut sender = WatchingSender::start(&ferry, &name, &root, port, extra.scratch)?;
    let measured = measure(extra, report, &ferry, &name, &root, sizes, &mut sender);
    let stopped = sender.stop();
    let receiver_usage = receiver.stop();
    // Regenerate what the changes rewrote, even after a failure.
    let marker = root.with_extension("ready");
    let _ = std::fs::remove_file(&marker);
    for k in 0..sizes.changes {
        let i = changed_file(k, sizes.files);
        let path = root.join(rel(i));
        std::fs::write(&path, content(i)).with_context(|| format!("writing {}", path.display()))?;
    }
    std::fs::write(&marker, TREE_VERSION)?;
    measured?;
    stopped?;
    receiver_usage?;
    ferry.reset(&name)
}

fn measure(
    extra: &Extra<'_>,
    report: &mut Report,
    ferry: &Ferry,
    name: &str,
    root: &Path,
    sizes: WatchSizes,
    sender: &mut WatchingSender,
) -> anyhow::Result<()> {
    let plan = extra.plan;
    let started = Instant::now();
    let first = sender.wait_runs(1, FIRST_RUN_TIMEOUT)?;
    let first_s = started.elapsed().as_secs_f64();
    eprintln!(
        "bench: watch: first run of {} files in {first_s:.1} s",
        sizes.files
    );
    check_run(&first[0])?;
    ferry_tests::tree::assert_same(root, &ferry.mirror(name))
        .context("watch: the mirror differs after the first run")?;
    let mut details = serde_json::json!({
        "files": sizes.files,
        "watch_delay_s": WATCH_DELAY_S,
        "first_run_s": first_s,
        "first_run": first[0],
    });
    if plan.wants("watch-idle") {
        let idle = idle(sender, sizes.idle_s)?;
        report
            .checks
            .push(goals::idle_cpu(idle.cpu_s, sizes.idle_s));
        report.checks.push(goals::idle_rss(idle.peak_kib));
        report.notes.push(format!(
            "watch-idle: {} files, {} s idle: sender CPU {:.2} s, peak RSS {} MiB \
             ({} MiB over its life, first run included), {} run(s) meanwhile",
            sizes.files,
            sizes.idle_s,
            idle.cpu_s,
            idle.peak_kib >> 10,
            idle.life_peak_kib >> 10,
            idle.runs
        ));
        details["idle"] = serde_json::json!({
            "window_s": sizes.idle_s,
            "cpu_s": idle.cpu_s,
            "peak_rss_kib": idle.peak_kib,
            "life_peak_rss_kib": idle.life_peak_kib,
            "runs": idle.runs,
        });
    }
    if plan.wants("watch-latency") {
        let changes = latency(ferry, name, root, sizes, sender)?;
        ferry_tests::tree::assert_same(root, &ferry.mirror(name))
            .context("watch-latency: the mirror differs after the changes")?;
        let latencies: Vec<f64> = changes.latencies.iter().map(|(_, s)| *s).collect();
        let entries: Vec<u64> = changes
            .runs
            .iter()
            .filter_map(|r| r["entries_scanned"].as_u64())
            .collect();
        report
            .checks
            .extend(goals::watch_latency(&latencies, WATCH_DELAY_S as f64));
        report.checks.extend(goals::watch_entries(&entries));
        let shown: Vec<String> = latencies.iter().map(|s| format!("{s:.2}")).collect();
        report.notes.push(format!(
            "watch-latency: {} files, {} changes one every {} s, close to catalog row (s): {}; \
             median {}; {} triggered run(s), entries stat'ed {}..{}, all partial scans: {}",
            sizes.files,
            latencies.len(),
            CHANGE_EVERY.as_secs(),
            shown.join(" "),
            median(latencies.clone()).map_or("-".into(), |m| format!("{m:.2} s")),
            changes.runs.len(),
            entries.iter().min().copied().unwrap_or(0),
            entries.iter().max().copied().unwrap_or(0),
            changes.runs.iter().all(|r| r["partial_scan"] == true),
        ));
        details["latency"] = serde_json::json!({
            "changes": changes.latencies.iter().map(|(path, s)| serde_json::json!({"path": path, "latency_s": s})).collect::<Vec<_>>(),
            "runs": changes.runs,
        });
    }
    report.details.insert("watch".into(), details);
    Ok(())
}

/// Fails unless a run's JSON summary says it went without error.
fn check_run(summary: &serde_json::Value) -> anyhow::Result<()> {
    if summary["errors"].as_u64() != Some(0) {
        bail!("a watch-mode run reported errors: {summary}");
    }
    Ok(())
}

/// What the idle window measured.
struct Idle {
    cpu_s: f64,
    peak_kib: u64,
    life_peak_kib: u64,
    runs: usize,
}

fn idle(sender: &mut WatchingSender, window_s: u64) -> anyhow::Result<Idle> {
    let pid = sender.child.id();
    let runs_before = sender.runs()?.len();
    let life_peak_kib = vm_hwm_kib(&read_proc(pid, "status")?).context("no VmHWM")?;
    // "5": reset the peak RSS to the current RSS (Linux 4.0+).
    std::fs::write(format!("/proc/{pid}/clear_refs"), "5")
        .context("resetting the sender's peak RSS")?;
    let ticks = clock_ticks();
    let cpu_before = cpu_ticks(&read_proc(pid, "stat")?).context("no CPU times")?;
    let end = Instant::now() + Duration::from_secs(window_s);
    while Instant::now() < end {
        sender.ensure_running()?;
        std::thread::sleep(
            Duration::from_millis(200).min(end.saturating_duration_since(Instant::now())),
        );
    }
    let cpu_after = cpu_ticks(&read_proc(pid, "stat")?).context("no CPU times")?;
    let peak_kib = vm_hwm_kib(&read_proc(pid, "status")?).context("no VmHWM")?;
    Ok(Idle {
        cpu_s: (cpu_after - cpu_before) as f64 / ticks,
        peak_kib,
        life_peak_kib,
        runs: sender.runs()?.len() - runs_before,
    })
}

fn read_proc(pid: u32, file: &str) -> anyhow::Result<String> {
    std::fs::read_to_string(format!("/proc/{pid}/{file}"))
        .with_context(|| format!("reading /proc/{pid}/{file}"))
}

/// utime + stime (clock ticks) from a `/proc/PID/stat` line: fields 14 and
/// 15, counted after the command's closing parenthesis.
pub fn cpu_ticks(stat: &str) -> Option<u64> {
    let rest = &stat[stat.rfind(')')? + 1..];
    let fields: Vec<&str> = rest.split_whitespace().collect();
    // fields[0] is field 3 (state).
    let utime: u64 = fields.get(11)?.parse().ok()?;
    let stime: u64 = fields.get(12)?.parse().ok()?;
    Some(utime + stime)
}

/// `VmHWM` (KiB) from `/proc/PID/status`.
pub fn vm_hwm_kib(status: &str) -> Option<u64> {
    status
        .lines()
        .find_map(|l| l.strip_prefix("VmHWM:"))?
        .split_whitespace()
        .next()?
        .parse()
        .ok()
}

/// Clock ticks per second (`getconf CLK_TCK`; 100 if that fails, the value
/// on every Linux of the last decades).
fn clock_ticks() -> f64 {
    Command::new("getconf")
        .arg("CLK_TCK")
        .output()
        .ok()
        .and_then(|o| String::from_utf8(o.stdout).ok())
        .and_then(|s| s.trim().parse().ok())
        .unwrap_or(100.0)
}

/// What the changes measured.
struct Changes {
    /// Changed path and seconds from close to catalog row.
    latencies: Vec<(String, f64)>,
    /// The JSON summaries of the runs after the first.
    runs: Vec<serde_json::Value>,
}

fn latency(
    ferry: &Ferry,
    name: &str,
    root: &Path,
    sizes: WatchSizes,
    sender: &mut WatchingSender,
) -> anyhow::Result<Changes> {
    let runs_before = sender.runs()?.len();
    let store =
        Store::open_read_only(&ferry.store(name)).context("opening the receiver's store")?;
    let bench = Name::new("bench")?;
    let record = store
        .sender_by_name(&bench)?
        .context("the sender is not in the receiver's catalog")?;
    let ns = store.namespace(&record, &Name::new(name)?);
    let mut latencies = Vec::new();
    let mut run_ids = Vec::new();
    let start = Instant::now();
    for k in 0..sizes.changes {
        let due = start + CHANGE_EVERY * k as u32;
        while Instant::now() < due {
            sender.ensure_running()?;
            std::thread::sleep(
                Duration::from_millis(100).min(due.saturating_duration_since(Instant::now())),
            );
        }
        let i = changed_file(k, sizes.files);
        let rel = rel(i);
        let path = root.join(&rel);
        let (size, mtime_ns, closed) = {
            let mut file = std::fs::File::create(&path)
                .with_context(|| format!("opening {}", path.display()))?;
            file.write_all(changed_content(k, i).as_bytes())
                .with_context(|| format!("writing {}", path.display()))?;
            let meta = file.metadata()?;
            drop(file);
            let closed = Instant::now();
            (
                meta.len(),
                meta.mtime() * 1_000_000_000 + meta.mtime_nsec(),
                closed,
            )
        };
        let wanted = RelPath::from_path(&rel)?;
        let run = loop {
            let versions = store.versions(&ns, &wanted)?;
            if let Some(v) = versions
                .iter()
                .find(|v| v.current && v.size == size && v.mtime_ns == mtime_ns)
            {
                break v.run;
            }
            if closed.elapsed() > CHANGE_TIMEOUT {
                bail!(
                    "watch-latency: {} not recorded within {CHANGE_TIMEOUT:?} of its change; \
                     the sender's log:\n{}",
                    rel.display(),
                    sender.log()
                );
            }
            sender.ensure_running()?;
            std::thread::sleep(POLL);
        };
        let seconds = closed.elapsed().as_secs_f64();
        eprintln!(
            "bench: watch-latency change {}/{}: {} recorded after {seconds:.2} s (run {run})",
            k + 1,
            sizes.changes,
            rel.display()
        );
        latencies.push((rel.display().to_string(), seconds));
        run_ids.push(run);
    }
    // The sender prints a run's summary once the receiver answered it.
    let deadline = Instant::now() + CHANGE_TIMEOUT;
    loop {
        let runs = sender.runs()?;
        let seen: Vec<u64> = runs.iter().filter_map(|r| r["run_id"].as_u64()).collect();
        if run_ids.iter().all(|id| seen.contains(id)) {
            let runs: Vec<serde_json::Value> = runs.into_iter().skip(runs_before).collect();
            for r in &runs {
                check_run(r)?;
            }
            return Ok(Changes { latencies, runs });
        }
        if Instant::now() > deadline {
            bail!("watch-latency: no summary from the sender for runs {run_ids:?}");
        }
        sender.ensure_running()?;
        std::thread::sleep(Duration::from_millis(50));
    }
}

/// `ferry send --watch --json` to a receiver, its stdout (one JSON summary
/// a run) and stderr in files.
struct WatchingSender {
    child: Child,
    out: PathBuf,
    log: PathBuf,
}

impl WatchingSender {
    fn start(
        ferry: &Ferry,
        name: &str,
        root: &Path,
        port: u16,
        scratch: &Path,
    ) -> anyhow::Result<WatchingSender> {
        let out = scratch.join("watch-send.json");
        let log = scratch.join("watch-send.log");
        let state = ferry.sender_state(name);
        let port_s = port.to_string();
        let delay = format!("{WATCH_DELAY_S}s");
        let args: Vec<&OsStr> = vec![
            "send".as_ref(),
            "--host".as_ref(),
            "127.0.0.1".as_ref(),
            "--port".as_ref(),
            port_s.as_ref(),
            "--source".as_ref(),
            root.as_os_str(),
            "--state".as_ref(),
            state.as_os_str(),
            "--name".as_ref(),
            "bench".as_ref(),
            "--folder".as_ref(),
            name.as_ref(),
            "--watch".as_ref(),
            "--watch-delay".as_ref(),
            delay.as_ref(),
            "--json".as_ref(),
        ];
        let child = Command::new(ferry.bin())
            .args(&args)
            .stdin(Stdio::null())
            .stdout(std::fs::File::create(&out)?)
            .stderr(std::fs::File::create(&log)?)
            .spawn()
            .context("starting ferry send --watch")?;
        Ok(WatchingSender { child, out, log })
    }

    fn log(&self) -> String {
        std::fs::read_to_string(&self.log).unwrap_or_default()
    }

    fn ensure_running(&mut self) -> anyhow::Result<()> {
        if let Some(status) = self.child.try_wait()? {
            bail!(
                "ferry send --watch exited ({status}); its log:\n{}",
                self.log()
            );
        }
        Ok(())
    }

    /// The run summaries printed so far (complete lines only).
    fn runs(&self) -> anyhow::Result<Vec<serde_json::Value>> {
        let text = std::fs::read_to_string(&self.out)
            .with_context(|| format!("reading {}", self.out.display()))?;
        Ok(text
            .split_inclusive('\n')
            .filter(|l| l.ends_with('\n'))
            .filter_map(|l| serde_json::from_str(l).ok())
            .collect())
    }

    /// Waits until `n` runs have been printed; returns them.
    fn wait_runs(&mut self, n: usize, timeout: Duration) -> anyhow::Result<Vec<serde_json::Value>> {
        let deadline = Instant::now() + timeout;
        loop {
            let runs = self.runs()?;
            if runs.len() >= n {
                return Ok(runs);
            }
            if Instant::now() > deadline {
                bail!("ferry send --watch: no run summary within {timeout:?}");
            }
            self.ensure_running()?;
            std::thread::sleep(Duration::from_millis(100));
        }
    }

    /// Stops the sender with SIGTERM (SIGKILL after 20 s).
    fn stop(mut self) -> anyhow::Result<()> {
        if self.child.try_wait()?.is_some() {
            return Ok(());
        }
        let _ = Command::new("kill")
            .arg("-TERM")
            .arg(self.child.id().to_string())
            .status();
        let deadline = Instant::now() + Duration::from_secs(20);
        while self.child.try_wait()?.is_none() {
            if Instant::now() > deadline {
                self.child.kill()?;
                self.child.wait()?;
                bail!("ferry send --watch did not stop within 20 s of SIGTERM");
            }
            std::thread::sleep(Duration::from_millis(20));
        }
        Ok(())
    }
}

impl Drop for WatchingSender {
    fn drop(&mut self) {
        if let Ok(None) = self.child.try_wait() {
            let _ = self.child.kill();
            let _ = self.child.wait();
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reads_cpu_ticks_and_the_peak_rss() {
        let stat = "4242 (ferry (send)) S 1 4242 4242 0 -1 4194560 900 0 0 0 \
                    150 25 0 0 20 0 9 0 100 200000000 3000";
        assert_eq!(cpu_ticks(stat), Some(175));
        assert_eq!(cpu_ticks("4242 (x) S 1"), None);
        let status = "Name:\tferry\nVmPeak:\t  900 kB\nVmHWM:\t   20480 kB\nVmRSS:\t 1 kB\n";
        assert_eq!(vm_hwm_kib(status), Some(20480));
        assert_eq!(vm_hwm_kib("Name: x\n"), None);
    }

    #[test]
    fn the_tree_and_its_changes() -> anyhow::Result<()> {
        let dir = tempfile::tempdir()?;
        let root = prepare(dir.path(), 450)?;
        let snapshot = ferry_tests::tree::snapshot(&root)?;
        // 450 files in 3 directories below one parent.
        assert_eq!(snapshot.len(), 450 + 3 + 1);
        assert!(root.join(rel(449)).is_file());
        let sizes = WatchSizes::new(false);
        let picked: Vec<usize> = (0..sizes.changes)
            .map(|k| changed_file(k, sizes.files))
            .collect();
        let mut distinct = picked.clone();
        distinct.sort_unstable();
        distinct.dedup();
        assert_eq!(distinct.len(), picked.len(), "{picked:?}");
        for k in 0..sizes.changes {
            assert!(changed_content(k, 0).len() > content(0).len());
            assert!((24..=96).contains(&content(k).len()));
        }
        Ok(())
    }
}
