//! A directory's metadata as of a run, end to end: a directory whose mode
//! and mtime changed in a later run is restored, as of the earlier run, with
//! the mode and mtime it had then (the receiver versions a directory's
//! metadata change as a file's metadata-only change).

use std::os::unix::fs::MetadataExt;
use std::path::Path;

use ferry_agent::store;
use ferry_tests::tree;

use crate::util::{send_config, TestReceiver, TestSender};

const SECRET: &str = "correct horse battery staple";

/// The mode bits and mtime (s, ns) of the directory at `path`.
fn dir_meta(path: &Path) -> anyhow::Result<(u32, i64, i64)> {
    let m = std::fs::symlink_metadata(path)?;
    anyhow::ensure!(m.is_dir(), "{} is not a directory", path.display());
    Ok((m.mode() & 0o7777, m.mtime(), m.mtime_nsec()))
}

/// `ferry restore --run RUN` of the whole folder into `to`, as a process.
async fn ferry_restore(
    receiver: &TestReceiver,
    sender: &TestSender,
    run: u64,
    to: &Path,
) -> anyhow::Result<()> {
    let args: Vec<std::ffi::OsString> = vec![
        "restore".into(),
        "--host".into(),
        receiver.addr.ip().to_string().into(),
        "--port".into(),
        receiver.addr.port().to_string().into(),
        "--name".into(),
        sender.name.clone().into(),
        "--folder".into(),
        "docs".into(),
        "--state".into(),
        sender.state.clone().into(),
        "--to".into(),
        to.into(),
        "--run".into(),
        run.to_string().into(),
    ];
    let bin = crate::util::ferry_bin();
    let out = tokio::task::spawn_blocking(move || {
        std::process::Command::new(bin)
            .args(&args)
            .stdin(std::process::Stdio::null())
            .output()
    })
    .await??;
    anyhow::ensure!(
        out.status.success(),
        "ferry restore --run {run}: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn restore_as_of_an_earlier_run_gives_a_directory_its_mode_and_mtime_of_then(
) -> anyhow::Result<()> {
    let dir = tempfile::tempdir()?;
    let receiver = TestReceiver::with_secret(dir.path(), SECRET).await?;
    let sender = TestSender::new(dir.path(), "laptop")?;
    let config = sender.with_secret(&receiver, SECRET)?;
    let src = &sender.source;

    // Run 1: `d` at 0755 and T1, holding a file.
    tree::write(src, "d/f.txt", "eff")?;
    tree::chmod(src, "d", 0o755)?;
    tree::set_mtime(src, "d", 1_600_000_000, 111)?;
    let run1 = send_config(&config).await?.run_id.unwrap_or(0);

    // Run 2: `d` at 0700 and T2, its file unchanged.
    tree::chmod(src, "d", 0o700)?;
    tree::set_mtime(src, "d", 1_700_000_000, 222)?;
    let run2 = send_config(&config).await?.run_id.unwrap_or(0);
    assert!(run2 > run1, "{run1} {run2}");
    assert_eq!(
        dir_meta(&receiver.mirror("laptop", "docs").join("d"))?,
        (0o700, 1_700_000_000, 222),
        "the mirror"
    );

    let to1 = dir.path().join("restored-run1");
    ferry_restore(&receiver, &sender, run1, &to1).await?;
    assert_eq!(dir_meta(&to1.join("d"))?, (0o755, 1_600_000_000, 111));
    assert_eq!(std::fs::read(to1.join("d/f.txt"))?, b"eff");

    let to2 = dir.path().join("restored-run2");
    ferry_restore(&receiver, &sender, run2, &to2).await?;
    assert_eq!(dir_meta(&to2.join("d"))?, (0o700, 1_700_000_000, 222));
    assert_eq!(std::fs::read(to2.join("d/f.txt"))?, b"eff");

    // The old directory row (retired, no archive) is no finding of verify.
    let report = store::verify(&receiver.store_dir)?;
    assert!(report.findings.is_empty(), "{report:#?}");
    receiver.stop().await
}
