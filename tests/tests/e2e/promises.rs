//! The store's promises under attack: entries that change kind (file,
//! directory, symlink) in one run, a receiver killed while they do, and a
//! local program swapping the store's directories for symlinks while runs
//! write below them. What was acknowledged stays restorable, `verify` finds
//! nothing wrong, and nothing is written outside the store.

use std::collections::BTreeSet;
use std::path::Path;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::Duration;

use ferry_agent::store::{self, Namespace, Store};
use ferry_proto::{At, Name};
use ferry_tests::tree;

use crate::crash::Setup;
use crate::faults::{acknowledge, assert_acknowledged_intact, Acknowledged, Rng};
use crate::restore::{remote, restore_tree};
use crate::sync::pseudo_random;
use crate::util::{send_config, TestReceiver, TestSender};

const SECRET: &str = "promises pairing secret";

fn namespace(store: &Store) -> anyhow::Result<Namespace> {
    let sender = store
        .sender_by_name(&Name::new("laptop")?)?
        .ok_or_else(|| anyhow::anyhow!("laptop is not registered"))?;
    Ok(store.namespace(&sender, &Name::new("docs")?))
}

/// Sending 100 files, then replacing each by a directory holding a 200 KB
/// file (and 20 symlinks by directories), with fillers elsewhere: once,
/// some of the new files were applied in the same group-commit batch before
/// their directory's entry, which then marked them deleted in the catalog.
/// The restore of the latest state missed them and the next run never sent
/// them again, silently.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn children_of_directories_that_replaced_files_and_links_stay_current_and_restorable(
) -> anyhow::Result<()> {
    let dir = tempfile::tempdir()?;
    let receiver = TestReceiver::with_secret(dir.path(), SECRET).await?;
    let sender = TestSender::new(dir.path(), "laptop")?;
    let config = sender.with_secret(&receiver, SECRET)?;
    let source = &sender.source;
    for i in 0..100 {
        tree::write(source, format!("d{i:03}"), format!("small file {i}"))?;
    }
    for i in 0..20 {
        std::os::unix::fs::symlink("anywhere", source.join(format!("l{i:02}")))?;
    }
    let first = send_config(&config).await?;
    assert_eq!(first.errors, 0, "{first:?}");

    for i in 0..100u64 {
        let d = format!("d{i:03}");
        std::fs::remove_file(source.join(&d))?;
        tree::write(source, format!("{d}/big"), pseudo_random(200_000, i))?;
    }
    for i in 0..20 {
        let l = format!("l{i:02}");
        std::fs::remove_file(source.join(&l))?;
        tree::write(
            source,
            format!("{l}/inner"),
            format!("below a former link {i}"),
        )?;
    }
    for i in 0..150 {
        tree::write(source, format!("filler/f{i:03}"), format!("filler {i}"))?;
    }
    let second = send_config(&config).await?;
    assert_eq!(second.errors, 0, "{second:?}");
    tree::assert_same(source, &receiver.mirror("laptop", "docs"))?;

    // The catalog holds every new file as current.
    let ns = namespace(&receiver.store)?;
    let current: BTreeSet<String> = receiver
        .store
        .current(&ns)?
        .into_iter()
        .filter(|v| v.kind == "file")
        .map(|v| v.path.to_string())
        .collect();
    let lost: Vec<String> = (0..100)
        .map(|i| format!("d{i:03}/big"))
        .chain((0..20).map(|i| format!("l{i:02}/inner")))
        .filter(|p| !current.contains(p))
        .collect();
    assert!(lost.is_empty(), "not current in the catalog: {lost:?}");

    // A restore of the latest state is the source, and so is one as of
    // the second run.
    let remote = remote(&receiver, &sender)?;
    for (what, at) in [
        ("latest", At::Latest),
        ("run", At::Run(second.run_id.unwrap_or(0))),
    ] {
        let to = dir.path().join(format!("restored-{what}"));
        let (_, summary) = restore_tree(&remote, at, &[], &to).await?;
        assert!(summary.problems.is_empty(), "{summary:?}");
        tree::assert_same(source, &to)?;
    }
    // Nothing is left for the next run, and verify agrees.
    let third = send_config(&config).await?;
    assert_eq!((third.files_sent, third.errors), (0, 0), "{third:?}");
    let report = store::verify(&receiver.store_dir)?;
    assert!(report.findings.is_empty(), "{:?}", report.findings);
    Ok(())
}

/// Turns every top-level file into a directory with files in it and every
/// top-level directory into a file.
fn swap_kinds(source: &Path, round: u64) -> anyhow::Result<()> {
    let mut names: Vec<_> = std::fs::read_dir(source)?
        .map(|e| e.map(|e| e.file_name()))
        .collect::<Result<_, _>>()?;
    names.sort();
    for (i, name) in names.into_iter().enumerate() {
        let path = source.join(&name);
        if path.symlink_metadata()?.is_dir() {
            std::fs::remove_dir_all(&path)?;
            std::fs::write(&path, format!("file in round {round}"))?;
        } else {
            std::fs::remove_file(&path)?;
            std::fs::create_dir(&path)?;
            let seed = round * 1000 + i as u64;
            std::fs::write(path.join("big"), pseudo_random(100_000, seed))?;
            std::fs::create_dir(path.join("sub"))?;
            std::fs::write(path.join("sub/small"), format!("small {seed}"))?;
        }
    }
    Ok(())
}

/// One run that may delete most of what was sent (a directory turned into
/// a file deletes what was in it).
const ALL: &[&str] = &["--once", "--allow-mass-delete"];

fn send_all(setup: &Setup, what: &str) -> anyhow::Result<()> {
    let mut sender = setup.sender(what, ALL)?;
    let status = sender.exit_status(Duration::from_secs(60))?;
    anyhow::ensure!(
        status.success(),
        "the {what} failed: {status}; stderr:\n{}",
        sender.stderr()
    );
    Ok(())
}

/// `kill -9` of the receiver while files turn into directories and back:
/// once, versions were recorded deleted without an archive while their
/// bytes sat in the versions area, and other versions pointed below an
/// archived name that was a file.
#[test]
fn kill_9_of_the_receiver_during_file_directory_replacements_loses_no_version() -> anyhow::Result<()>
{
    crate::util::trace();
    let setup = Setup::new()?;
    for i in 0..40 {
        tree::write(&setup.source, format!("e{i:02}"), format!("first {i}"))?;
    }
    let mut receiver = setup.receiver("receiver")?;
    send_all(&setup, "first sender")?;
    let mut acked = Acknowledged::new();
    acknowledge(&setup.source, &mut acked)?;
    let mut rng = Rng::new(0x00c0_ffee_d1e5);
    for round in 1..=4u64 {
        swap_kinds(&setup.source, round)?;
        let mut sender = setup.sender(&format!("sender {round}"), ALL)?;
        std::thread::sleep(Duration::from_millis(50 + rng.below(400)));
        receiver.kill9()?;
        if sender.wait_for(Duration::from_secs(1))?.is_none() {
            sender.kill9()?;
        }
        receiver = setup.receiver(&format!("receiver after kill {round}"))?;
        send_all(&setup, &format!("sender {round} after the kill"))?;
        tree::assert_same(&setup.source, &setup.mirror())?;
        acknowledge(&setup.source, &mut acked)?;
    }
    receiver.interrupt()?;
    assert!(receiver.exit_status(Duration::from_secs(10))?.success());

    let report = store::verify(&setup.store)?;
    assert!(report.findings.is_empty(), "{:#?}", report.findings);
    assert_acknowledged_intact(&setup.store, &acked)?;
    Ok(())
}

/// Swaps `dir` and a symlink to `outside` back and forth until `stop`.
fn swap_with_symlink(dir: &Path, outside: &Path, stop: &AtomicBool) -> u64 {
    let aside = dir.with_extension("aside");
    let mut swaps = 0;
    while !stop.load(Ordering::Relaxed) && swaps < 200_000 {
        if std::fs::rename(dir, &aside).is_ok() {
            let _ = std::os::unix::fs::symlink(outside, dir);
            std::thread::yield_now();
            let _ = std::fs::remove_file(dir);
            let _ = std::fs::rename(&aside, dir);
        }
        swaps += 1;
        std::thread::yield_now();
    }
    swaps
}

/// Writes `n` small files and one large one below `sub/` for a round.
fn add_files(source: &Path, round: usize, n: usize) -> anyhow::Result<()> {
    for i in 0..n {
        let data = format!("round {round} file {i}");
        tree::write(source, format!("sub/r{round}/f{i:03}"), data)?;
    }
    tree::write(
        source,
        format!("sub/big{round}"),
        pseudo_random(3_000_000, round as u64),
    )
}

/// Runs the sender while another thread swaps `target` for a symlink to
/// `outside`; returns the run's summary line. Nothing may land outside.
async fn race(
    config: &ferry_agent::config::SenderConfig,
    target: &Path,
    outside: &Path,
) -> anyhow::Result<String> {
    let stop = Arc::new(AtomicBool::new(false));
    let swapper = {
        let (target, outside, stop) = (target.to_path_buf(), outside.to_path_buf(), stop.clone());
        std::thread::spawn(move || swap_with_symlink(&target, &outside, &stop))
    };
    let racing = send_config(config).await;
    stop.store(true, Ordering::Relaxed);
    let swaps = swapper
        .join()
        .map_err(|_| anyhow::anyhow!("the swapper panicked"))?;
    let summary = racing?;
    let landed: Vec<_> = std::fs::read_dir(outside)?.collect();
    assert!(
        landed.is_empty(),
        "{} entries were written outside the store through {}",
        landed.len(),
        target.display()
    );
    Ok(format!(
        "{swaps} swaps of {}: {}",
        target.display(),
        summary.line()
    ))
}

/// A local program swaps the store's staging directory, and then a
/// directory of the mirror, for a symlink to a directory outside the store
/// while runs write below them: once, about a thousand files landed in the
/// symlink's target. Nothing may land there, and the runs end with their
/// summaries; once staging is back, the next run completes the mirror.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn store_directories_swapped_for_symlinks_mid_run_are_never_written_through(
) -> anyhow::Result<()> {
    let dir = tempfile::tempdir()?;
    let outside = dir.path().join("outside");
    std::fs::create_dir(&outside)?;
    let receiver = TestReceiver::with_secret(dir.path(), SECRET).await?;
    let sender = TestSender::new(dir.path(), "laptop")?;
    let config = sender.with_secret(&receiver, SECRET)?;
    tree::write(&sender.source, "sub/seed", "seed")?;
    send_config(&config).await?;

    // Staging: the swapper puts it back after each swap, so afterwards the
    // mirror is completed and every stored version verifies.
    add_files(&sender.source, 0, 300)?;
    let staging = receiver.store_dir.join(".ferry/staging");
    eprintln!("{}", race(&config, &staging, &outside).await?);
    assert!(std::fs::symlink_metadata(&staging)?.is_dir());
    let after = send_config(&config).await?;
    assert_eq!(after.errors, 0, "{after:?}");
    tree::assert_same(&sender.source, &receiver.mirror("laptop", "docs"))?;
    let report = store::verify(&receiver.store_dir)?;
    assert!(report.findings.is_empty(), "{:#?}", report.findings);

    // A directory of the mirror that the run writes into.
    add_files(&sender.source, 1, 300)?;
    let sub = receiver.mirror("laptop", "docs").join("sub");
    eprintln!("{}", race(&config, &sub, &outside).await?);
    Ok(())
}
