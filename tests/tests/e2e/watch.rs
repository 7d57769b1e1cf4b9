//! Watch mode (`ferry send --watch`): changes made while the sender runs
//! arrive at the receiver without waiting for the period (1 h here), under
//! what real programs do to files.

use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use anyhow::Context;
use ferry_agent::config::SenderConfig;
use ferry_agent::receiver::Admission;
use ferry_agent::sender;
use ferry_agent::status::SenderStatus;
use ferry_agent::summary::RunSummary;
use ferry_tests::tree;
use tokio_util::sync::CancellationToken;

use crate::util::{ferry_bin, TestReceiver, TestSender};

const SECRET: &str = "watch secret";
/// Generous: the machine is shared and slow; the test fails only if a change
/// never arrives.
const ARRIVES: Duration = Duration::from_secs(90);

/// A watching sender running in this test's runtime.
struct Watching {
    token: CancellationToken,
    task: tokio::task::JoinHandle<anyhow::Result<()>>,
    runs: Arc<Mutex<Vec<RunSummary>>>,
    /// Attempts that failed (receiver down).
    failed: Arc<std::sync::atomic::AtomicUsize>,
    status: Arc<SenderStatus>,
}

impl Watching {
    /// Starts `--watch --every 1h --watch-delay 200ms` and waits for its
    /// first (full) run to be done.
    async fn start(config: SenderConfig) -> anyhow::Result<Watching> {
        let config = SenderConfig {
            once: None,
            every: Some("1h".into()),
            watch: Some(true),
            watch_delay: Some("200ms".into()),
            ..config
        };
        let settings = config.settings()?;
        let token = CancellationToken::new();
        let runs = Arc::new(Mutex::new(Vec::new()));
        let failed = Arc::new(std::sync::atomic::AtomicUsize::new(0));
        let status = SenderStatus::new();
        let task = {
            let token = token.clone();
            let runs = runs.clone();
            let failed = failed.clone();
            let status = status.clone();
            tokio::spawn(async move {
                let ran = sender::run(settings, token, status, |result| match result {
                    Ok(summary) => {
                        if let Ok(mut runs) = runs.lock() {
                            runs.push(summary.clone());
                        }
                    }
                    Err(_) => {
                        failed.fetch_add(1, std::sync::atomic::Ordering::SeqCst);
                    }
                })
                .await;
                match ran {
                    // Stopped in the middle of a run: what the test asked.
                    Ok(_) | Err(sender::SenderError::Run(sender::RunError::Stopped)) => Ok(()),
                    Err(e) => Err(e.into()),
                }
            })
        };
        let watching = Watching {
            token,
            task,
            runs,
            failed,
            status,
        };
        wait_for("the first run", || watching.runs() >= 1).await?;
        Ok(watching)
    }

    /// Runs completed so far.
    fn runs(&self) -> usize {
        self.summaries().len()
    }

    fn summaries(&self) -> Vec<RunSummary> {
        self.runs.lock().map(|r| r.clone()).unwrap_or_default()
    }

    async fn stop(self) -> anyhow::Result<()> {
        self.token.cancel();
        self.task.await??;
        Ok(())
    }
}

/// Polls `check` every 50 ms until it holds, for at most [`ARRIVES`].
async fn wait_for(what: &str, mut check: impl FnMut() -> bool) -> anyhow::Result<()> {
    let deadline = Instant::now() + ARRIVES;
    while !check() {
        if Instant::now() > deadline {
            anyhow::bail!("{what}: not seen within {ARRIVES:?}");
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    Ok(())
}

fn content(path: &Path) -> Option<String> {
    std::fs::read_to_string(path).ok()
}

async fn setup(dir: &Path) -> anyhow::Result<(TestReceiver, TestSender)> {
    let receiver = TestReceiver::with_secret(dir, SECRET).await?;
    let sender = TestSender::new(dir, "laptop")?;
    tree::write(&sender.source, "a.txt", "one")?;
    tree::write(&sender.source, "d/deep/b.txt", "bee")?;
    Ok((receiver, sender))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_change_arrives_without_waiting_for_the_period() -> anyhow::Result<()> {
    let dir = tempfile::tempdir()?;
    let (receiver, sender) = setup(dir.path()).await?;
    let watching = Watching::start(sender.with_secret(&receiver, SECRET)?).await?;
    let mirror = receiver.mirror("laptop", "docs");
    assert_eq!(content(&mirror.join("a.txt")).as_deref(), Some("one"));

    tree::write(&sender.source, "a.txt", "two")?;
    tree::write(&sender.source, "d/deep/new.txt", "new")?;
    wait_for("the changed and the new file", || {
        content(&mirror.join("a.txt")).as_deref() == Some("two")
            && content(&mirror.join("d/deep/new.txt")).as_deref() == Some("new")
    })
    .await?;
    // Not the period: it is an hour. (The mirror is written before the
    // run ends: wait for its summary.)
    wait_for("the second run", || watching.runs() >= 2).await?;
    watching.stop().await?;
    receiver.stop().await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_triggered_run_scans_only_the_directories_that_changed() -> anyhow::Result<()> {
    let dir = tempfile::tempdir()?;
    let (receiver, sender) = setup(dir.path()).await?;
    for d in 0..20 {
        for f in 0..20 {
            tree::write(&sender.source, format!("many/{d}/{f}.txt"), "x")?;
        }
    }
    let watching = Watching::start(sender.with_secret(&receiver, SECRET)?).await?;
    let first = watching.summaries()[0].clone();
    assert!(!first.partial_scan);
    assert!(first.entries_scanned > 420, "{first:?}");
    let mirror = receiver.mirror("laptop", "docs");

    tree::write(&sender.source, "many/7/3.txt", "changed")?;
    wait_for("the change", || {
        content(&mirror.join("many/7/3.txt")).as_deref() == Some("changed")
    })
    .await?;
    let sent_it = |s: &&RunSummary| s.files_sent == 1;
    wait_for("the run that sent the change", || {
        watching.summaries().iter().skip(1).any(|s| sent_it(&s))
    })
    .await?;
    let runs = watching.summaries();
    let triggered = runs
        .iter()
        .skip(1)
        .find(sent_it)
        .context("the run that sent the change")?;
    assert!(triggered.partial_scan, "{triggered:?}");
    // many/7 alone: 20 entries, of a tree of more than 420.
    assert!(triggered.entries_scanned <= 25, "{triggered:?}");
    // What the launcher shows: the root, d, d/deep, many and its 20.
    let shown = watching.status.watching().context("watching status")?;
    assert_eq!(shown.directories, 24);
    assert!(shown.last_change_sent.is_some());
    watching.stop().await?;
    receiver.stop().await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_editor_save_by_renaming_a_temporary_file_over_the_original_arrives(
) -> anyhow::Result<()> {
    let dir = tempfile::tempdir()?;
    let (receiver, sender) = setup(dir.path()).await?;
    let watching = Watching::start(sender.with_secret(&receiver, SECRET)?).await?;
    let mirror = receiver.mirror("laptop", "docs");

    // What vim, gedit and most "safe save" code do.
    let tmp = sender.source.join(".a.txt.swp-save");
    std::fs::write(&tmp, "saved by the editor")?;
    std::fs::rename(&tmp, sender.source.join("a.txt"))?;
    wait_for("the saved file, and no temporary file", || {
        content(&mirror.join("a.txt")).as_deref() == Some("saved by the editor")
            && !mirror.join(".a.txt.swp-save").exists()
    })
    .await?;
    watching.stop().await?;
    receiver.stop().await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn directories_moved_into_out_of_and_within_the_tree_arrive() -> anyhow::Result<()> {
    let dir = tempfile::tempdir()?;
    let (receiver, sender) = setup(dir.path()).await?;
    tree::write(&sender.source, "leaving/x.txt", "x")?;
    let watching = Watching::start(sender.with_secret(&receiver, SECRET)?).await?;
    let mirror = receiver.mirror("laptop", "docs");
    assert!(mirror.join("leaving/x.txt").exists());

    // In: a directory made outside the source (no events for its content).
    let outside = dir.path().join("outside");
    tree::write(&outside, "arrived/inner/c.txt", "sea")?;
    std::fs::rename(outside.join("arrived"), sender.source.join("arrived"))?;
    // Out.
    std::fs::rename(sender.source.join("leaving"), outside.join("left"))?;
    // Within: renamed, and then changed at its new place.
    std::fs::rename(sender.source.join("d"), sender.source.join("e"))?;
    wait_for("the moves", || {
        content(&mirror.join("arrived/inner/c.txt")).as_deref() == Some("sea")
            && !mirror.join("leaving").exists()
            && !mirror.join("d").exists()
            && content(&mirror.join("e/deep/b.txt")).as_deref() == Some("bee")
    })
    .await?;
    // A directory moved in is watched too: a change inside it arrives.
    tree::write(&sender.source, "arrived/inner/c.txt", "sea, later")?;
    tree::write(&sender.source, "e/deep/b.txt", "bee, later")?;
    wait_for("changes inside the moved directories", || {
        content(&mirror.join("arrived/inner/c.txt")).as_deref() == Some("sea, later")
            && content(&mirror.join("e/deep/b.txt")).as_deref() == Some("bee, later")
    })
    .await?;
    watching.stop().await?;
    receiver.stop().await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_deletion_arrives_and_the_receiver_keeps_the_old_version() -> anyhow::Result<()> {
    let dir = tempfile::tempdir()?;
    let (receiver, sender) = setup(dir.path()).await?;
    let watching = Watching::start(sender.with_secret(&receiver, SECRET)?).await?;
    let mirror = receiver.mirror("laptop", "docs");

    std::fs::remove_file(sender.source.join("a.txt"))?;
    wait_for("the deletion", || !mirror.join("a.txt").exists()).await?;
    let versions = receiver.store_dir.join(".ferry/versions/laptop");
    assert!(
        files_below(&versions)?
            .iter()
            .any(|p| p.to_string_lossy().contains("a.txt")),
        "the deleted file was archived"
    );
    watching.stop().await?;
    receiver.stop().await
}

fn files_below(dir: &Path) -> anyhow::Result<Vec<PathBuf>> {
    let mut files = Vec::new();
    for entry in std::fs::read_dir(dir)? {
        let entry = entry?;
        if entry.file_type()?.is_dir() {
            files.extend(files_below(&entry.path())?);
        } else {
            files.push(entry.path());
        }
    }
    Ok(files)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn changes_made_while_the_receiver_is_down_arrive_when_it_is_back() -> anyhow::Result<()> {
    let dir = tempfile::tempdir()?;
    let (receiver, sender) = setup(dir.path()).await?;
    let watching = Watching::start(sender.with_secret(&receiver, SECRET)?).await?;
    let addr = receiver.addr;
    let mirror = receiver.mirror("laptop", "docs");
    receiver.stop().await?;

    tree::write(
        &sender.source,
        "a.txt",
        "written while the receiver was down",
    )?;
    tree::write(&sender.source, "while-down.txt", "new")?;
    // The triggered run finds the receiver down.
    wait_for("a run failing while the receiver is down", || {
        watching.failed.load(std::sync::atomic::Ordering::SeqCst) >= 1
    })
    .await?;
    let admission = Admission {
        allow: vec![],
        pairing_secret: Some(SECRET.as_bytes().to_vec()),
    };
    let receiver = TestReceiver::start_at(dir.path(), addr, 8, admission).await?;
    wait_for("the changes made while the receiver was down", || {
        content(&mirror.join("a.txt")).as_deref() == Some("written while the receiver was down")
            && content(&mirror.join("while-down.txt")).as_deref() == Some("new")
    })
    .await?;
    watching.stop().await?;
    receiver.stop().await
}

/// The real binary with a tiny test-only limit on the changes kept between
/// two batches: the burst overflows it, the sender says so once and falls
/// back to a full scan, and nothing is missed.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_overflow_of_events_falls_back_to_a_full_scan() -> anyhow::Result<()> {
    let dir = tempfile::tempdir()?;
    let sender = TestSender::new(dir.path(), "laptop")?;
    tree::write(&sender.source, "a.txt", "one")?;
    let store = dir.path().join("store");
    let log = dir.path().join("sender.log");
    let json = dir.path().join("summaries.json");
    let mut child = std::process::Command::new(ferry_bin())
        .args(["send", "--watch", "--watch-delay", "1s", "--name", "laptop"])
        .arg("--source")
        .arg(&sender.source)
        .arg("--store")
        .arg(&store)
        .arg("--state")
        .arg(&sender.state)
        .env("FERRY_WATCH_QUEUE_LIMIT", "5")
        .arg("--json")
        .stdout(std::fs::File::create(&json)?)
        .stderr(std::fs::File::create(&log)?)
        .spawn()
        .context("starting ferry send --watch")?;
    let mirror = store.join("laptop").join("laptop-src");
    let result = async {
        wait_for("the first run", || mirror.join("a.txt").exists()).await?;
        for i in 0..40 {
            tree::write(&sender.source, format!("burst/{i}/f.txt"), format!("{i}"))?;
        }
        wait_for("every file of the burst", || {
            (0..40).all(|i| {
                content(&mirror.join(format!("burst/{i}/f.txt"))).as_deref()
                    == Some(i.to_string().as_str())
            })
        })
        .await?;
        let text = std::fs::read_to_string(&log)?;
        assert!(
            text.contains("more than 5 paths changed at once; doing a full scan"),
            "the overflow is logged: {text}"
        );
        // A run after the first was a full scan (the period is an hour:
        // only the overflow can have made it one).
        let runs = || -> Vec<serde_json::Value> {
            std::fs::read_to_string(&json)
                .unwrap_or_default()
                .lines()
                .filter_map(|line| serde_json::from_str(line).ok())
                .collect()
        };
        wait_for("a full scan after the first run", || {
            runs().iter().skip(1).any(|r| r["partial_scan"] == false)
        })
        .await?;
        anyhow::Ok(())
    }
    .await;
    let _ = child.kill();
    let _ = child.wait();
    result
}

#[test]
fn once_and_watch_together_is_an_error_that_says_why() -> anyhow::Result<()> {
    let dir = tempfile::tempdir()?;
    let config = SenderConfig {
        source: Some(dir.path().to_path_buf()),
        store: Some(dir.path().join("store")),
        once: Some(true),
        watch: Some(true),
        ..Default::default()
    };
    let err = config.settings().err().context("--once --watch accepted")?;
    assert!(
        err.to_string()
            .contains("--once and --watch cannot go together"),
        "{err}"
    );
    Ok(())
}

/// A local store and the keep-copies directory inside the source: the
/// run's own writes there trigger no run, and are never sent.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_store_and_copies_inside_the_source_trigger_nothing() -> anyhow::Result<()> {
    let dir = tempfile::tempdir()?;
    let sender = TestSender::new(dir.path(), "laptop")?;
    tree::write(&sender.source, "a.txt", "one")?;
    let store = sender.source.join(".ferry-store");
    let config = SenderConfig {
        source: Some(sender.source.clone()),
        store: Some(store.clone()),
        keep_copies: Some(sender.source.join(".ferry-copies")),
        name: Some("laptop".into()),
        folder: Some("docs".into()),
        state: Some(sender.state.clone()),
        ..Default::default()
    };
    let watching = Watching::start(config).await?;
    let mirror = store.join("laptop/docs");
    tree::write(&sender.source, "a.txt", "two")?;
    wait_for("the change", || {
        content(&mirror.join("a.txt")).as_deref() == Some("two") && watching.runs() >= 2
    })
    .await?;
    // Ten times the watch delay: a run triggered by its own writes would
    // have started by now.
    tokio::time::sleep(Duration::from_secs(2)).await;
    let runs = watching.summaries();
    assert_eq!(runs.len(), 2, "{runs:?}");
    assert!(!mirror.join(".ferry-store").exists());
    assert!(!mirror.join(".ferry-copies").exists());
    watching.stop().await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn changes_in_excluded_paths_start_no_run_and_are_not_sent() -> anyhow::Result<()> {
    let dir = tempfile::tempdir()?;
    let (receiver, sender) = setup(dir.path()).await?;
    tree::write(&sender.source, "node_modules/pkg/index.js", "v1")?;
    tree::write(&sender.source, "d/.ferryignore", "*.o\n")?;
    let config = SenderConfig {
        exclude: vec!["node_modules/".into()],
        ..sender.with_secret(&receiver, SECRET)?
    };
    let watching = Watching::start(config).await?;
    let mirror = receiver.mirror("laptop", "docs");
    assert!(!mirror.join("node_modules").exists());

    // Excluded by a flag and by a .ferryignore above the change.
    tree::write(&sender.source, "node_modules/pkg/index.js", "v2")?;
    tree::write(&sender.source, "node_modules/pkg/new.js", "new")?;
    tree::write(&sender.source, "d/deep/x.o", "object")?;
    // Ten times the watch delay: a run these changes started would have
    // begun by now, before the change below.
    tokio::time::sleep(Duration::from_secs(2)).await;
    tree::write(&sender.source, "a.txt", "two")?;
    wait_for("the included change", || {
        watching.summaries().iter().any(|s| s.files_sent == 1)
    })
    .await?;
    assert_eq!(content(&mirror.join("a.txt")).as_deref(), Some("two"));
    let runs = watching.summaries();
    assert_eq!(
        runs.len(),
        2,
        "changes in excluded paths started a run: {runs:?}"
    );
    assert!(!mirror.join("node_modules").exists());
    assert!(!mirror.join("d/deep/x.o").exists());
    watching.stop().await?;
    receiver.stop().await
}
