//! A local process racing the sender: a directory of the source swapped for
//! a symlink to a directory outside it, again and again, while runs go. The
//! sender must never read through the link: nothing of the outside
//! directory may reach the receiver, in the mirror or in any version.

use std::collections::HashSet;
use std::os::unix::ffi::OsStrExt;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::Duration;

use ferry_tests::tree::{self, Node};

use crate::sync::pseudo_random;
use crate::util::{send_config, TestReceiver, TestSender};

const SECRET: &str = "source race tests pairing secret";
/// Written in every file of the outside directory.
const MARKER: &[u8] = b"FERRY-OUTSIDE-THE-SOURCE-MARKER";
/// Runs made while the directory is being swapped.
const RUNS: u64 = 6;
/// Swaps one run may see at most (the swapper stops at the end of the run
/// anyway).
const MAX_SWAPS: usize = 200_000;

/// The names in the swapped directory, with their sizes: small files go in
/// bundles, the larger ones a stream each, the largest as chunks.
fn names() -> Vec<(String, usize)> {
    let mut names: Vec<(String, usize)> = (0..120).map(|i| (format!("s{i:03}"), 700)).collect();
    names.extend((0..6).map(|i| (format!("m{i}"), 200_000)));
    names.push(("big".into(), 3 << 20));
    names
}

/// Content of `name` inside the source for run `run`.
fn inside(name: &str, size: usize, run: u64) -> Vec<u8> {
    let seed = run * 1000 + name.bytes().map(u64::from).sum::<u64>();
    pseudo_random(size, seed)
}

/// Content of `name` in the outside directory: the marker, repeated.
fn outside(name: &str, size: usize) -> Vec<u8> {
    let mut data = Vec::with_capacity(size + MARKER.len());
    while data.len() < size {
        data.extend_from_slice(MARKER);
        data.extend_from_slice(name.as_bytes());
    }
    data.truncate(size.max(MARKER.len()));
    data
}

/// Swaps `src/d` between the real directory and a symlink to `outside`
/// until `stop`, and leaves the real directory in place.
fn swapper(src: PathBuf, outside: PathBuf, stop: Arc<AtomicBool>) -> anyhow::Result<usize> {
    let (d, real) = (src.join("d"), src.join(".d-real"));
    let mut swaps = 0;
    while !stop.load(Ordering::Relaxed) && swaps < MAX_SWAPS {
        std::fs::rename(&d, &real)?;
        std::os::unix::fs::symlink(&outside, &d)?;
        std::thread::sleep(Duration::from_micros(300));
        std::fs::remove_file(&d)?;
        std::fs::rename(&real, &d)?;
        std::thread::sleep(Duration::from_micros(300));
        swaps += 1;
    }
    Ok(swaps)
}

/// Every regular file below `dir` (symlinks not followed).
fn files_below(dir: &Path) -> anyhow::Result<Vec<(PathBuf, Vec<u8>)>> {
    let mut out = Vec::new();
    for (path, node) in tree::snapshot(dir)? {
        if matches!(node, Node::File { .. }) {
            let path = dir.join(std::ffi::OsStr::from_bytes(&path));
            let data = std::fs::read(&path)?;
            out.push((path, data));
        }
    }
    Ok(out)
}

fn contains(haystack: &[u8], needle: &[u8]) -> bool {
    haystack.windows(needle.len()).any(|w| w == needle)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_source_directory_swapped_for_a_symlink_never_sends_what_is_outside() -> anyhow::Result<()>
{
    let dir = tempfile::tempdir()?;
    let receiver = TestReceiver::with_secret(dir.path(), SECRET).await?;
    let sender = TestSender::new(dir.path(), "racer")?;
    let outside_dir = dir.path().join("outside");
    std::fs::create_dir(&outside_dir)?;
    let mut marker_hashes = HashSet::new();
    for (name, size) in names() {
        let data = outside(&name, size);
        marker_hashes.insert(*blake3::hash(&data).as_bytes());
        std::fs::write(outside_dir.join(&name), data)?;
    }
    std::fs::create_dir(sender.source.join("d"))?;
    std::fs::write(sender.source.join("top"), b"top")?;
    // A run that saw `d` as a symlink deletes everything below it: the
    // mass-delete guard must not stop it.
    let config = ferry_agent::config::SenderConfig {
        allow_mass_delete: Some(true),
        ..sender.with_secret(&receiver, SECRET)?
    };

    let mut total_swaps = 0;
    for run in 0..RUNS {
        // New content each run, so every file is read again.
        for (name, size) in names() {
            std::fs::write(
                sender.source.join("d").join(&name),
                inside(&name, size, run),
            )?;
        }
        let stop = Arc::new(AtomicBool::new(false));
        let swapping = {
            let (src, out, stop) = (sender.source.clone(), outside_dir.clone(), stop.clone());
            std::thread::spawn(move || swapper(src, out, stop))
        };
        let summary = send_config(&config).await;
        stop.store(true, Ordering::Relaxed);
        let swaps = swapping
            .join()
            .map_err(|_| anyhow::anyhow!("the swapper panicked"))??;
        total_swaps += swaps;
        let summary = summary?;
        assert!(summary.run_id.is_some(), "run {run} not committed");
        for problem in &summary.problems {
            assert!(
                !problem.message.contains("internal error"),
                "run {run}: {problem:?}"
            );
        }
    }
    assert!(total_swaps > RUNS as usize, "the swapper hardly ran");

    // Nothing of the outside directory anywhere in the store: the mirror,
    // the versions area, staging.
    for (path, data) in files_below(&receiver.store_dir)? {
        if path
            .extension()
            .is_some_and(|e| e == "db" || e == "db-wal" || e == "db-shm")
        {
            continue;
        }
        assert!(
            !contains(&data, MARKER),
            "{} holds content from outside the source",
            path.display()
        );
    }
    // Nor in the catalog: no version of any path has an outside file's
    // content.
    let catalog = rusqlite::Connection::open_with_flags(
        receiver.store_dir.join(".ferry/catalog.db"),
        rusqlite::OpenFlags::SQLITE_OPEN_READ_ONLY,
    )?;
    let mut stmt = catalog.prepare("SELECT path, hash FROM versions WHERE hash IS NOT NULL")?;
    let rows = stmt.query_map([], |r| {
        Ok((r.get::<_, Vec<u8>>(0)?, r.get::<_, Vec<u8>>(1)?))
    })?;
    let mut versions = 0;
    for row in rows {
        let (path, hash) = row?;
        versions += 1;
        assert!(
            !marker_hashes.contains(&hash[..]),
            "a version of {} has the content of a file outside the source",
            String::from_utf8_lossy(&path)
        );
    }
    // The racing runs read and stored content while the swapper ran (how
    // much depends on how the two interleave: 112 versions in one run
    // beside a whole test suite), so the checks above looked at real reads.
    assert!(versions > 0, "no version stored while the swapper ran");

    // Once the swapping stops, a run reads the real directory again.
    let summary = send_config(&config).await?;
    assert!(summary.run_id.is_some(), "{:?}", summary.problems);
    for problem in &summary.problems {
        assert!(!problem.message.contains("symlink"), "{problem:?}");
    }
    receiver.stop().await?;
    Ok(())
}
