//! What arrives, and what is kept: first sync, no-change runs, changes,
//! deletions, metadata-only updates, busy receivers, the embedded receiver.

use std::os::unix::ffi::OsStrExt;
use std::time::Duration;

use ferry_agent::config::SenderConfig;
use ferry_agent::receiver::Admission;
use ferry_agent::sender::{self, RunError};
use ferry_agent::status::SenderStatus;
use ferry_proto::{Name, RelPath};
use ferry_tests::tree;
use tokio_util::sync::CancellationToken;

use crate::util::{send_config, TestReceiver, TestSender};

const SECRET: &str = "correct horse battery staple";

/// A tree with everything Ferry must carry.
fn build_tree(root: &std::path::Path) -> anyhow::Result<()> {
    tree::write(root, "a.txt", "alpha")?;
    tree::write(root, "empty-file", "")?;
    tree::write(
        root,
        "nested/deeper/big.bin",
        pseudo_random(1024 * 1024 + 7, 1),
    )?;
    tree::write(root, "nested/script.sh", "#!/bin/sh\necho hi\n")?;
    tree::chmod(root, "nested/script.sh", 0o755)?;
    tree::write(root, "secret.txt", "s3cret")?;
    tree::chmod(root, "secret.txt", 0o600)?;
    std::fs::create_dir_all(root.join("empty-dir/inner-empty"))?;
    std::os::unix::fs::symlink("a.txt", root.join("link-rel"))?;
    std::os::unix::fs::symlink("/nonexistent/target", root.join("link-dangling"))?;
    let odd = std::ffi::OsStr::from_bytes(b"caf\xe9 \xff name");
    std::fs::write(root.join(odd), "latin-1 name")?;
    tree::set_mtime(root, "a.txt", 1_600_000_000, 123_456_789)?;
    tree::set_mtime(root, "link-rel", 1_500_000_000, 987_654_321)?;
    Ok(())
}

/// Deterministic incompressible bytes.
pub fn pseudo_random(len: usize, seed: u64) -> Vec<u8> {
    let mut out = Vec::with_capacity(len + 32);
    let mut counter = 0u64;
    while out.len() < len {
        let mut hasher = blake3::Hasher::new();
        hasher.update(&seed.to_le_bytes());
        hasher.update(&counter.to_le_bytes());
        out.extend_from_slice(hasher.finalize().as_bytes());
        counter += 1;
    }
    out.truncate(len);
    out
}

async fn paired(dir: &std::path::Path) -> anyhow::Result<(TestReceiver, TestSender, SenderConfig)> {
    let receiver = TestReceiver::with_secret(dir, SECRET).await?;
    let sender = TestSender::new(dir, "laptop")?;
    let config = sender.with_secret(&receiver, SECRET)?;
    Ok((receiver, sender, config))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn first_sync_arrives_byte_for_byte_with_metadata() -> anyhow::Result<()> {
    let dir = tempfile::tempdir()?;
    let (receiver, sender, config) = paired(dir.path()).await?;
    build_tree(&sender.source)?;
    let summary = send_config(&config).await?;
    tree::assert_same(&sender.source, &receiver.mirror("laptop", "docs"))?;
    // 6 regular files + 2 symlinks; 4 directories.
    assert_eq!(summary.files_sent, 8, "{summary:?}");
    assert_eq!(summary.dirs_sent, 4, "{summary:?}");
    assert_eq!(summary.errors, 0);
    assert_eq!(summary.bytes_file_data, 5 + 1024 * 1024 + 7 + 18 + 6 + 12);
    assert!(
        summary.bytes_on_wire > summary.bytes_file_data,
        "{summary:?}"
    );
    // The run is in the receiver's catalog.
    let runs = receiver.store.runs(None)?;
    assert_eq!(runs.len(), 1);
    assert_eq!(runs[0].status, "complete");
    assert_eq!(Some(runs[0].id), summary.run_id);
    receiver.stop().await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_run_after_no_change_sends_no_file_data() -> anyhow::Result<()> {
    let dir = tempfile::tempdir()?;
    let (receiver, sender, config) = paired(dir.path()).await?;
    build_tree(&sender.source)?;
    let first = send_config(&config).await?;
    let second = send_config(&config).await?;
    assert_eq!(second.files_sent, 0, "{second:?}");
    assert_eq!(second.dirs_sent, 0, "{second:?}");
    assert_eq!(second.bytes_file_data, 0);
    assert_eq!(second.files_unchanged, first.files_sent + first.dirs_sent);
    assert!(second.bytes_on_wire < 64 * 1024, "{second:?}");
    assert_eq!(receiver.store.runs(None)?.len(), 2);
    tree::assert_same(&sender.source, &receiver.mirror("laptop", "docs"))?;
    receiver.stop().await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn changes_and_deletions_arrive_and_old_versions_are_kept() -> anyhow::Result<()> {
    let dir = tempfile::tempdir()?;
    let (receiver, sender, config) = paired(dir.path()).await?;
    build_tree(&sender.source)?;
    send_config(&config).await?;

    tree::write(&sender.source, "a.txt", "alpha, second edition")?;
    std::fs::remove_file(sender.source.join("secret.txt"))?;
    std::fs::remove_dir_all(sender.source.join("nested"))?;
    tree::write(&sender.source, "new/file.txt", "new")?;
    let summary = send_config(&config).await?;
    assert_eq!(summary.errors, 0, "{summary:?}");
    assert_eq!(summary.files_sent, 2, "{summary:?}");
    // secret.txt, nested/, nested/script.sh, nested/deeper/, nested/deeper/big.bin
    assert_eq!(summary.files_deleted, 5, "{summary:?}");
    let mirror = receiver.mirror("laptop", "docs");
    tree::assert_same(&sender.source, &mirror)?;

    // Every replaced or deleted file is still on the receiver, intact.
    let store = receiver.store.clone();
    let record = store
        .sender_by_name(&Name::new("laptop")?)?
        .expect("sender registered");
    let ns = store.namespace(&record, &Name::new("docs")?);
    let kept = |path: &str, content: &[u8]| -> anyhow::Result<()> {
        let versions = store.versions(&ns, &RelPath::from_bytes(path)?)?;
        let old = versions
            .iter()
            .find(|v| !v.current)
            .ok_or_else(|| anyhow::anyhow!("no old version of {path}"))?;
        assert_eq!(
            std::fs::read(&old.location)?,
            content,
            "old version of {path}"
        );
        Ok(())
    };
    kept("a.txt", b"alpha")?;
    kept("secret.txt", b"s3cret")?;
    kept("nested/deeper/big.bin", &pseudo_random(1024 * 1024 + 7, 1))?;
    let a = store.versions(&ns, &RelPath::from_bytes("a.txt")?)?;
    assert_eq!(a.len(), 2);
    assert!(a.iter().any(|v| v.current
        && std::fs::read(&v.location).ok().as_deref() == Some(&b"alpha, second edition"[..])));
    receiver.stop().await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn metadata_only_changes_move_no_content() -> anyhow::Result<()> {
    let dir = tempfile::tempdir()?;
    let (receiver, sender, config) = paired(dir.path()).await?;
    build_tree(&sender.source)?;
    send_config(&config).await?;
    tree::chmod(&sender.source, "a.txt", 0o640)?;
    tree::set_mtime(&sender.source, "nested/deeper/big.bin", 1_234_567_890, 5)?;
    let summary = send_config(&config).await?;
    assert_eq!(summary.files_metadata_only, 2, "{summary:?}");
    assert_eq!(summary.files_sent, 0, "{summary:?}");
    assert_eq!(summary.bytes_file_data, 0);
    tree::assert_same(&sender.source, &receiver.mirror("laptop", "docs"))?;
    receiver.stop().await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn special_files_are_skipped_and_the_run_goes_on() -> anyhow::Result<()> {
    let dir = tempfile::tempdir()?;
    let (receiver, sender, config) = paired(dir.path()).await?;
    tree::write(&sender.source, "ok.txt", "fine")?;
    let status = std::process::Command::new("mkfifo")
        .arg(sender.source.join("pipe"))
        .status()?;
    assert!(status.success());
    let _socket = std::os::unix::net::UnixListener::bind(sender.source.join("sock"))?;
    let summary = tokio::time::timeout(Duration::from_secs(60), send_config(&config)).await??;
    assert_eq!(summary.skipped, 2, "{summary:?}");
    assert_eq!(summary.files_sent, 1);
    let mirror = receiver.mirror("laptop", "docs");
    assert_eq!(std::fs::read(mirror.join("ok.txt"))?, b"fine");
    assert!(!mirror.join("pipe").exists() && !mirror.join("sock").exists());
    receiver.stop().await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_busy_receiver_turns_the_next_sender_away_and_it_retries() -> anyhow::Result<()> {
    let dir = tempfile::tempdir()?;
    let receiver = TestReceiver::start(
        dir.path(),
        1,
        Admission {
            allow: vec![],
            pairing_secret: Some(SECRET.into()),
        },
    )
    .await?;
    let first = TestSender::new(dir.path(), "first")?;
    let second = TestSender::new(dir.path(), "second")?;
    tree::write(&first.source, "f.txt", "first")?;
    tree::write(&second.source, "s.txt", "second")?;
    // Both pair; then `first` holds the only slot with a session it does not finish.
    send_config(&first.with_secret(&receiver, SECRET)?).await?;
    let holder = crate::trust::hold_slot(&first.state, receiver.addr, "first").await?;

    let settings = second.with_secret(&receiver, SECRET)?.settings()?;
    let (tx, mut rx) = tokio::sync::mpsc::unbounded_channel();
    let run = tokio::spawn(sender::run(
        settings,
        CancellationToken::new(),
        SenderStatus::new(),
        move |r| {
            let _ = tx.send(matches!(r, Err(RunError::Busy { .. })));
        },
    ));
    let was_busy = tokio::time::timeout(Duration::from_secs(30), rx.recv()).await?;
    assert_eq!(
        was_busy,
        Some(true),
        "the second sender was not told the receiver is busy"
    );
    drop(holder);
    let summary = tokio::time::timeout(Duration::from_secs(60), run).await???;
    assert_eq!(summary.files_sent, 1);
    assert_eq!(
        std::fs::read(receiver.mirror("second", "docs").join("s.txt"))?,
        b"second"
    );
    receiver.stop().await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_embedded_receiver_stores_locally() -> anyhow::Result<()> {
    let dir = tempfile::tempdir()?;
    let sender = TestSender::new(dir.path(), "solo")?;
    build_tree(&sender.source)?;
    let store = dir.path().join("usb");
    let config = SenderConfig {
        source: Some(sender.source.clone()),
        store: Some(store.clone()),
        state: Some(sender.state.clone()),
        name: Some("solo".into()),
        folder: Some("docs".into()),
        once: Some(true),
        ..Default::default()
    };
    let first = send_config(&config).await?;
    assert_eq!(first.errors, 0);
    tree::assert_same(&sender.source, &store.join("solo/docs"))?;
    let second = send_config(&config).await?;
    assert_eq!(second.bytes_file_data, 0, "{second:?}");
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_periodic_sender_runs_again_and_stops_cleanly() -> anyhow::Result<()> {
    let dir = tempfile::tempdir()?;
    let (receiver, sender, config) = paired(dir.path()).await?;
    tree::write(&sender.source, "a.txt", "1")?;
    let config = SenderConfig {
        every: Some("1s".into()),
        once: None,
        ..config
    };
    let settings = config.settings()?;
    let shutdown = CancellationToken::new();
    let (tx, mut rx) = tokio::sync::mpsc::unbounded_channel();
    let run = tokio::spawn(sender::run(
        settings,
        shutdown.clone(),
        SenderStatus::new(),
        move |r| {
            let _ = tx.send(r.as_ref().map(|s| s.files_sent).map_err(|e| e.to_string()));
        },
    ));
    // First run at start.
    let first = tokio::time::timeout(Duration::from_secs(30), rx.recv()).await?;
    assert_eq!(first, Some(Ok(1)));
    tree::write(&sender.source, "b.txt", "2")?;
    // The next run picks up the change by itself.
    let second = tokio::time::timeout(Duration::from_secs(30), rx.recv()).await?;
    assert_eq!(second, Some(Ok(1)));
    shutdown.cancel();
    let last = tokio::time::timeout(Duration::from_secs(10), run).await??;
    assert!(last.is_ok(), "{last:?}");
    tree::assert_same(&sender.source, &receiver.mirror("laptop", "docs"))?;
    // Runs never overlap: each is recorded complete, one after the other.
    let runs = receiver.store.runs(None)?;
    assert!(runs.len() >= 2);
    assert!(runs.iter().all(|r| r.status == "complete"), "{runs:?}");
    let mut by_start: Vec<_> = runs.iter().map(|r| (r.started_ms, r.finished_ms)).collect();
    by_start.sort();
    assert!(
        by_start
            .windows(2)
            .all(|w| w[0].1.is_some_and(|end| end <= w[1].0)),
        "{by_start:?}"
    );
    receiver.stop().await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_store_inside_the_source_is_not_backed_up_into_itself() -> anyhow::Result<()> {
    let dir = tempfile::tempdir()?;
    let sender = TestSender::new(dir.path(), "solo")?;
    tree::write(&sender.source, "a.txt", "alpha")?;
    let store = sender.source.join("backup");
    let config = SenderConfig {
        source: Some(sender.source.clone()),
        store: Some(store.clone()),
        // The state directory inside the source too.
        state: Some(sender.source.join(".state")),
        name: Some("solo".into()),
        folder: Some("docs".into()),
        once: Some(true),
        ..Default::default()
    };
    let first = send_config(&config).await?;
    assert_eq!(first.files_sent, 1, "{first:?}");
    let second = send_config(&config).await?;
    assert_eq!(second.files_sent + second.dirs_sent, 0, "{second:?}");
    let mirror = store.join("solo/docs");
    assert_eq!(std::fs::read(mirror.join("a.txt"))?, b"alpha");
    assert!(!mirror.join("backup").exists() && !mirror.join(".state").exists());
    Ok(())
}
