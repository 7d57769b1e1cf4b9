//! The sender's `--keep-copies` directory: it holds every entry as last
//! sent, even when it was added to a sender that had sent before, and a
//! restore from it says when it is incomplete or damaged.

use std::path::Path;
use std::process::Command;
use std::time::Duration;

use ferry_agent::config::SenderConfig;
use ferry_tests::tree;

use crate::crash::Setup;
use crate::util::{ferry_bin, poll_until, send_config, TestReceiver, TestSender};

const SECRET: &str = "copies test secret";

fn write_tree(source: &Path) -> anyhow::Result<()> {
    tree::write(source, "a.txt", "alpha")?;
    tree::write(source, "notes/todo.txt", "buy milk")?;
    tree::write(source, "notes/deep/b.txt", "beta")?;
    let big: Vec<u8> = (0..300_000u32).map(|i| (i % 251) as u8).collect();
    tree::write(source, "big.bin", big)?;
    std::os::unix::fs::symlink("a.txt", source.join("link"))?;
    Ok(())
}

/// `ferry restore --from-copies COPIES --to TO`: exit code and stderr.
async fn restore_from_copies(copies: &Path, to: &Path) -> anyhow::Result<(Option<i32>, String)> {
    let (bin, copies, to) = (ferry_bin(), copies.to_path_buf(), to.to_path_buf());
    let out = tokio::task::spawn_blocking(move || {
        Command::new(bin)
            .arg("restore")
            .arg("--from-copies")
            .arg(copies)
            .arg("--to")
            .arg(to)
            .stdin(std::process::Stdio::null())
            .output()
    })
    .await??;
    Ok((
        out.status.code(),
        String::from_utf8_lossy(&out.stderr).into_owned(),
    ))
}

/// Fails if `dir` holds a `.ferry-tmp` or an empty directory anywhere.
fn assert_tidy(dir: &Path) -> anyhow::Result<()> {
    for entry in std::fs::read_dir(dir)? {
        let entry = entry?;
        let path = entry.path();
        anyhow::ensure!(
            entry.file_name() != ".ferry-tmp",
            "left behind: {}",
            path.display()
        );
        if entry.file_type()?.is_dir() {
            anyhow::ensure!(
                std::fs::read_dir(&path)?.next().is_some(),
                "empty directory left behind: {}",
                path.display()
            );
            assert_tidy(&path)?;
        }
    }
    Ok(())
}

/// The copies, without the copies' own bookkeeping, as a tree to compare.
fn copies_as_tree(copies: &Path, into: &Path) -> anyhow::Result<()> {
    let status = Command::new("cp")
        .arg("-a")
        .arg(copies)
        .arg(into)
        .status()?;
    anyhow::ensure!(status.success(), "cp -a failed");
    match std::fs::remove_file(into.join(".ferry-copies.db")) {
        Err(e) if e.kind() != std::io::ErrorKind::NotFound => Err(e.into()),
        _ => Ok(()),
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn keep_copies_added_to_a_sender_that_sent_before_holds_every_file_without_resending(
) -> anyhow::Result<()> {
    let dir = tempfile::tempdir()?;
    let receiver = TestReceiver::with_secret(dir.path(), SECRET).await?;
    let sender = TestSender::new(dir.path(), "laptop")?;
    write_tree(&sender.source)?;
    let plain = sender.with_secret(&receiver, SECRET)?;
    let first = send_config(&plain).await?;
    assert_eq!((first.files_sent, first.errors), (5, 0), "{first:?}");

    // The same sender, now keeping copies; nothing changed in the source.
    let copies = dir.path().join("copies");
    let keeping = SenderConfig {
        keep_copies: Some(copies.clone()),
        ..plain.clone()
    };
    let second = send_config(&keeping).await?;
    assert_eq!((second.files_sent, second.errors), (0, 0), "{second:?}");
    let runs = receiver.store.runs(None)?;
    assert_eq!(runs[0].id, second.run_id.unwrap_or_default());
    assert_eq!(runs[0].report.files_sent, 0, "nothing re-sent");
    let as_tree = dir.path().join("copies-tree");
    copies_as_tree(&copies, &as_tree)?;
    tree::assert_same(&sender.source, &as_tree)?;
    assert_tidy(&copies)?;

    // A restore from them is whole, and says nothing is wrong.
    let to = dir.path().join("restored");
    let (code, stderr) = restore_from_copies(&copies, &to).await?;
    assert_eq!(code, Some(0), "{stderr}");
    tree::assert_same(&sender.source, &to)?;

    // A file edited since is sent once; its copy follows; a deleted one goes.
    tree::write(&sender.source, "notes/todo.txt", "buy milk and bread")?;
    std::fs::remove_dir_all(sender.source.join("notes/deep"))?;
    let third = send_config(&keeping).await?;
    assert_eq!((third.files_sent, third.errors), (1, 0), "{third:?}");
    let as_tree = dir.path().join("copies-tree-2");
    copies_as_tree(&copies, &as_tree)?;
    tree::assert_same(&sender.source, &as_tree)?;
    assert_tidy(&copies)?;
    receiver.stop().await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_restore_from_incomplete_or_damaged_copies_names_each_file_and_exits_1(
) -> anyhow::Result<()> {
    let dir = tempfile::tempdir()?;
    let receiver = TestReceiver::with_secret(dir.path(), SECRET).await?;
    let sender = TestSender::new(dir.path(), "laptop")?;
    write_tree(&sender.source)?;
    let copies = dir.path().join("copies");
    let config = SenderConfig {
        keep_copies: Some(copies.clone()),
        ..sender.with_secret(&receiver, SECRET)?
    };
    let sent = send_config(&config).await?;
    assert_eq!(sent.errors, 0, "{sent:?}");
    receiver.stop().await?;

    std::fs::remove_file(copies.join("notes/todo.txt"))?;
    let mut bytes = std::fs::read(copies.join("big.bin"))?;
    bytes[150_000] ^= 0x01;
    std::fs::write(copies.join("big.bin"), bytes)?;
    let to = dir.path().join("restored");
    let (code, stderr) = restore_from_copies(&copies, &to).await?;
    assert_eq!(code, Some(1), "{stderr}");
    assert!(
        stderr.contains("notes/todo.txt: missing from the copies directory"),
        "{stderr}"
    );
    assert!(stderr.contains("big.bin: damaged"), "{stderr}");
    assert!(
        stderr.contains("the copies directory is incomplete or damaged: 1 missing, 1 damaged"),
        "{stderr}"
    );
    // The damaged bytes were not restored; the rest was.
    assert!(!to.join("big.bin").exists());
    assert_eq!(std::fs::read(to.join("notes/deep/b.txt"))?, b"beta");
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_killed_run_leaves_no_temporary_files_or_empty_directories_in_the_copies(
) -> anyhow::Result<()> {
    let setup = Setup::new()?;
    let mut big = vec![0u8; 8 << 20];
    let mut hasher = blake3::Hasher::new();
    hasher.update(b"ferry keep-copies kill test");
    hasher.finalize_xof().fill(&mut big);
    tree::write(&setup.source, "dir/sub/big.bin", big)?;
    let copies = setup.dir.path().join("copies");
    let copies_arg = copies.to_string_lossy().into_owned();
    let _receiver = setup.receiver("receiver")?;
    // Slow enough to be caught while the big file's copy is being written.
    let mut sender = setup.sender(
        "slow sender",
        &[
            "--once",
            "--keep-copies",
            &copies_arg,
            "--limit-rate",
            "1MB/s",
        ],
    )?;
    let writing = poll_until(Duration::from_secs(60), || {
        let tmp = copies.join(".ferry-tmp");
        std::fs::read_dir(tmp).ok()?.next().map(|_| ())
    });
    anyhow::ensure!(
        writing.is_some(),
        "no copy was being written; sender stderr:\n{}",
        sender.stderr()
    );
    sender.kill9()?;

    let mut again = setup.sender("sender", &["--once", "--keep-copies", &copies_arg])?;
    let status = again.exit_status(Duration::from_secs(120))?;
    anyhow::ensure!(status.success(), "{status}: {}", again.stderr());
    assert_tidy(&copies)?;
    let as_tree = setup.dir.path().join("copies-tree");
    copies_as_tree(&copies, &as_tree)?;
    tree::assert_same(&setup.source, &as_tree)?;
    Ok(())
}
