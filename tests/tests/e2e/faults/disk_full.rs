//! The receiver's disk fills up during a run.

use std::collections::BTreeSet;

use ferry_agent::index::Index;
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
        tree::write(&sender.source, format!("small/{i:02}.txt"), format!("small file {i}"))?;
    }
    for i in 0..5 {
        tree::write(&sender.source, format!("big{i}.bin"), pseudo_random(3 * MIB, i))?;
    }
    let config = super::sender_config(&sender, receiver.addr)?;
    let mirror = dir.path().join("store/laptop/docs");

    let summary = send_config(&config).await?;
    eprintln!("disk full run: {}", summary.line());
    for p in &summary.problems {
        eprintln!("  {}: {}", p.path, p.message);
    }
    assert!(summary.errors > 0, "nothing failed on a full disk: {summary:?}");
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
    assert!(stored >= 20 && stored < 25, "{stored} files in the mirror");

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
        assert!(!mirror.join(path).exists(), "{path} failed but is in the mirror");
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
