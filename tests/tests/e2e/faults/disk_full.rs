//! The receiver's disk fills up during a run.

use std::collections::BTreeSet;

use std::sync::Arc;

use ferry_agent::index::Index;
use ferry_agent::reader::{Client, Remote};
use ferry_agent::restore::{restore_remote, Destination};
use ferry_agent::status::SenderStatus;
use ferry_proto::{At, Name, RelPath};
use ferry_tests::tree;

use super::{assert_mirror_holds_only_source_files, assert_staging_empty, QuotaReceiver, Tmpfs};
use crate::sync::pseudo_random;
use crate::util::{send_config, TestSender};

const MIB: usize = 1024 * 1024;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_full_disk_fails_clearly_stores_nothing_partial_and_the_run_after_freeing_space_completes(
) -> anyhow::Result<()> {
    let dir = tempfile::tempdir()?;
    // The whole store (mirror, staging, versions, catalog) on an 8 MiB
    // tmpfs; the source holds 15 MiB.
    let Some(tmpfs) = Tmpfs::mount(&dir.path().join("store"), "8m")? else {
        return Ok(());
    };
    let receiver = QuotaReceiver::start(dir.path(), "127.0.0.1:0".parse()?, None).await?;
    let sender = TestSender::new(dir.path(), "laptop")?;
    for i in 0..20 {
        tree::write(
            &sender.source,
            format!("small/{i:02}.txt"),
            format!("small file {i}"),
        )?;
    }
    for i in 0..5 {
        tree::write(
            &sender.source,
            format!("big{i}.bin"),
            pseudo_random(3 * MIB, i),
        )?;
    }
    let config = super::sender_config(&sender, receiver.addr)?;
    let mirror = dir.path().join("store/laptop/docs");

    let summary = send_config(&config).await?;
    eprintln!("disk full run: {}", summary.line());
    for p in &summary.problems {
        eprintln!("  {}: {}", p.path, p.message);
    }
    assert!(
        summary.errors > 0,
        "nothing failed on a full disk: {summary:?}"
    );
    let failed: BTreeSet<String> = summary.problems.iter().map(|p| p.path.clone()).collect();
    assert!(
        summary
            .problems
            .iter()
            .all(|p| p.message.contains("the receiver's disk is full")),
        "a problem does not say the disk is full: {:?}",
        summary.problems
    );
    let stored = assert_mirror_holds_only_source_files(&sender.source, &mirror)?;
    assert_staging_empty(&dir.path().join("store"))?;
    // 5 × 3 MiB cannot fit in 8 MiB, and the small files did fit.
    assert!((20..25).contains(&stored), "{stored} files in the mirror");

    // The sender's index records exactly what the mirror holds.
    let index = Index::open(
        &sender.state.join("index.db"),
        &format!("{}/docs", receiver.id),
    )?;
    let indexed: BTreeSet<String> = index
        .entries()?
        .into_iter()
        .filter(|e| e.hash.is_some())
        .map(|e| e.path.to_string())
        .collect();
    drop(index);
    for path in &failed {
        assert!(!indexed.contains(path), "{path} failed but is in the index");
        assert!(
            !mirror.join(path).exists(),
            "{path} failed but is in the mirror"
        );
    }
    assert_eq!(indexed.len(), stored, "index {indexed:?}");

    // Space freed: the next run sends exactly the failed files.
    tmpfs.resize("64m")?;
    let summary = send_config(&config).await?;
    assert_eq!(summary.errors, 0, "{summary:?}");
    assert_eq!(summary.files_sent, failed.len() as u64, "{summary:?}");
    tree::assert_same(&sender.source, &mirror)?;
    assert_staging_empty(&dir.path().join("store"))?;
    let runs = receiver.store.runs(None)?;
    assert_eq!(runs.len(), 2, "{runs:?}");
    assert!(runs.iter().all(|r| r.status == "complete"), "{runs:?}");
    receiver.stop().await?;
    drop(tmpfs);
    Ok(())
}

/// Fills the filesystem of `dir` with `filler`, then frees `pages` 4 KiB
/// pages of it.
fn fill_leaving(dir: &std::path::Path, filler: &std::path::Path, pages: u64) -> anyhow::Result<()> {
    use std::io::Write;
    let mut file = std::fs::OpenOptions::new()
        .create(true)
        .append(true)
        .open(filler)?;
    let block = vec![0xEEu8; 4096];
    while file.write_all(&block).is_ok() {}
    drop(file);
    let file = std::fs::OpenOptions::new().write(true).open(filler)?;
    let len = file.metadata()?.len();
    file.set_len(len.saturating_sub(pages * 4096))?;
    anyhow::ensure!(dir.exists());
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_disk_full_at_any_point_of_a_commit_loses_nothing_acknowledged() -> anyhow::Result<()> {
    let dir = tempfile::tempdir()?;
    let store_dir = dir.path().join("store");
    let Some(tmpfs) = Tmpfs::mount(&store_dir, "8m")? else {
        return Ok(());
    };
    let receiver = QuotaReceiver::start(dir.path(), "127.0.0.1:0".parse()?, None).await?;
    let sender = TestSender::new(dir.path(), "laptop")?;
    let config = super::sender_config(&sender, receiver.addr)?;
    let mirror = store_dir.join("laptop/docs");
    for i in 0..4 {
        tree::write(
            &sender.source,
            format!("f{i}.txt"),
            format!("version 0 of {i}"),
        )?;
    }
    let summary = send_config(&config).await?;
    assert_eq!(summary.errors, 0, "{summary:?}");
    let mut acked = vec![tree::snapshot(&sender.source)?];
    let filler = store_dir.join("filler");

    // With 0, 1, 2, ... pages left, the staging write, the rename, the
    // archive or the catalog's write-ahead log is the step that fails.
    for (round, pages) in [0u64, 2, 6, 16].into_iter().enumerate() {
        std::fs::remove_file(&filler).or_else(|e| match e.kind() {
            std::io::ErrorKind::NotFound => Ok(()),
            _ => Err(e),
        })?;
        for i in 0..4 {
            let text = format!("version {} of {i} ", round + 1).repeat(1 + i * 200);
            tree::write(&sender.source, format!("f{i}.txt"), text)?;
        }
        fill_leaving(&store_dir, &filler, pages)?;
        match send_config(&config).await {
            Ok(summary) => {
                eprintln!("{pages} pages free: {}", summary.line());
                if summary.errors == 0 {
                    acked.push(tree::snapshot(&sender.source)?);
                }
            }
            Err(e) => eprintln!("{pages} pages free: the run failed: {e:#}"),
        }
        // Each file in the mirror is a version the sender had.
        for (path, node) in tree::snapshot(&mirror)? {
            let known = acked.iter().any(|snap| snap.get(&path) == Some(&node))
                || tree::snapshot(&sender.source)?.get(&path) == Some(&node);
            let name = String::from_utf8_lossy(&path).into_owned();
            if matches!(node, ferry_tests::tree::Node::File { .. }) {
                let bytes = std::fs::read(mirror.join(&name))?;
                assert!(
                    bytes.starts_with(b"version ") || known,
                    "{name} in the mirror is not a version the sender had"
                );
            }
        }
    }

    // Space back: the next run completes, and the catalog still opens
    // (its integrity is checked at open) with every acknowledged version.
    std::fs::remove_file(&filler)?;
    tmpfs.resize("64m")?;
    let summary = send_config(&config).await?;
    assert_eq!(summary.errors, 0, "{summary:?}");
    tree::assert_same(&sender.source, &mirror)?;
    let addr = receiver.addr;
    receiver.stop().await?;
    let receiver = QuotaReceiver::start(dir.path(), addr, None).await?;
    let laptop = receiver
        .store
        .sender_by_name(&ferry_proto::Name::new("laptop")?)?
        .expect("registered");
    let ns = receiver
        .store
        .namespace(&laptop, &ferry_proto::Name::new("docs")?);
    for snap in &acked {
        for (path, node) in snap {
            let ferry_tests::tree::Node::File { content_hash, .. } = node else {
                continue;
            };
            let versions = receiver
                .store
                .versions(&ns, &ferry_proto::RelPath::from_bytes(path.clone())?)?;
            assert!(
                versions
                    .iter()
                    .any(|v| v.hash.as_ref() == Some(content_hash)
                        && std::fs::read(&v.location)
                            .is_ok_and(|b| blake3::hash(&b).as_bytes() == content_hash)),
                "an acknowledged version of {} is lost: {versions:?}",
                String::from_utf8_lossy(path)
            );
        }
    }
    eprintln!("{} acknowledged states checked", acked.len());
    receiver.stop().await?;
    drop(tmpfs);
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_receiver_started_on_a_full_disk_serves_history_and_restore_and_a_run_ends_with_per_file_errors(
) -> anyhow::Result<()> {
    // Before: the receiver did not start ("catalog ... disk I/O error" /
    // "database or disk is full"), so nothing could be restored until
    // space was freed.
    let dir = tempfile::tempdir()?;
    let store_dir = dir.path().join("store");
    let Some(tmpfs) = Tmpfs::mount(&store_dir, "8m")? else {
        return Ok(());
    };
    let receiver = QuotaReceiver::start(dir.path(), "127.0.0.1:0".parse()?, None).await?;
    let sender = TestSender::new(dir.path(), "laptop")?;
    let config = super::sender_config(&sender, receiver.addr)?;
    let mirror = store_dir.join("laptop/docs");
    for i in 0..5 {
        tree::write(&sender.source, format!("f{i}.txt"), format!("first {i}"))?;
    }
    let first = send_config(&config).await?;
    assert_eq!(first.errors, 0, "{first:?}");
    let acknowledged = tree::snapshot(&sender.source)?;
    let addr = receiver.addr;
    receiver.stop().await?;

    // Full to the last page, then the receiver restarts.
    let filler = store_dir.join("filler");
    fill_leaving(&store_dir, &filler, 0)?;
    let receiver = QuotaReceiver::start(dir.path(), addr, None).await?;

    // History, versions and a restore work.
    let remote = Remote {
        host: addr.ip().to_string(),
        port: addr.port(),
        receiver_id: None,
        state: sender.state.clone(),
        name: Name::new("laptop")?,
        folder: Name::new("docs")?,
    };
    let mut client = Client::connect(&remote).await?;
    assert_eq!(client.runs().await?.len(), 1);
    assert_eq!(
        client
            .versions(&RelPath::from_bytes("f3.txt")?)
            .await?
            .len(),
        1
    );
    let (_, latest) = client.tree(At::Latest, &[]).await?;
    let restored = dir.path().join("restored");
    let dest = Arc::new(Destination::new(&restored, false)?);
    let restore = restore_remote(&client.fetcher(), latest, dest, SenderStatus::new()).await;
    client.close().await;
    assert!(restore.problems.is_empty(), "{restore:?}");
    assert_eq!(tree::snapshot(&restored)?, acknowledged);

    // A run with changes larger than any space the receiver can find ends
    // with its summary; each failed file says the disk is full.
    for i in 0..3 {
        tree::write(
            &sender.source,
            format!("big{i}.bin"),
            pseudo_random(2 * MIB, 10 + i),
        )?;
    }
    tree::write(&sender.source, "f0.txt", "second")?;
    let summary = send_config(&config).await?;
    eprintln!("full disk run: {}", summary.line());
    for p in &summary.problems {
        eprintln!("  {}: {}", p.path, p.message);
    }
    assert!(summary.errors >= 3, "{summary:?}");
    assert!(
        summary
            .problems
            .iter()
            .all(|p| p.message.contains("the receiver's disk is full")),
        "{:?}",
        summary.problems
    );
    assert_mirror_holds_only_source_files(&sender.source, &mirror)?;

    // Space freed: the next run completes.
    std::fs::remove_file(&filler)?;
    let summary = send_config(&config).await?;
    assert_eq!(summary.errors, 0, "{summary:?}");
    tree::assert_same(&sender.source, &mirror)?;
    assert_staging_empty(&store_dir)?;
    receiver.stop().await?;
    drop(tmpfs);
    Ok(())
}
