//! A large file rewritten in place, again and again, while it is being sent
//! is never stored torn.

use std::io::{Seek, SeekFrom, Write};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};

use ferry_proto::{Name, RelPath};
use ferry_tests::tree;

use super::Tmpfs;
use crate::util::{send_config, TestReceiver, TestSender};

const SIZE: usize = 64 * 1024 * 1024;

/// Rewrites `path` in place, 1 MiB at a time, each whole pass with one byte
/// value (1, 2, 3, ...), until `stop`; records each value whose pass
/// completed.
fn rewrite_until(path: PathBuf, stop: Arc<AtomicBool>, complete: Arc<Mutex<Vec<u8>>>) {
    let chunk_len = 1024 * 1024;
    let mut generation: u8 = 1;
    while !stop.load(Ordering::Relaxed) {
        generation = generation % 250 + 1;
        let chunk = vec![generation; chunk_len];
        let Ok(mut file) = std::fs::OpenOptions::new().write(true).open(&path) else {
            return;
        };
        if file.seek(SeekFrom::Start(0)).is_err() {
            return;
        }
        for _ in 0..SIZE / chunk_len {
            if file.write_all(&chunk).is_err() {
                return;
            }
        }
        complete
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
            .push(generation);
    }
}

/// Fails unless `path` holds one complete pass: every byte the same, a
/// value whose pass completed.
fn assert_whole(path: &Path, complete: &[u8]) -> anyhow::Result<()> {
    let bytes = std::fs::read(path)?;
    assert_eq!(bytes.len(), SIZE, "{} has the wrong size", path.display());
    let first = bytes[0];
    let torn = bytes.iter().position(|b| *b != first);
    assert!(
        torn.is_none(),
        "{} is torn: byte {first} at 0, byte {} at {:?}",
        path.display(),
        torn.map_or(0, |i| bytes[i]),
        torn
    );
    assert!(
        complete.contains(&first),
        "{} holds pass {first}, which never completed ({complete:?})",
        path.display()
    );
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_file_rewritten_while_sent_is_never_stored_torn() -> anyhow::Result<()> {
    let dir = tempfile::tempdir()?;
    let receiver = TestReceiver::with_secret(dir.path(), super::SECRET).await?;
    let sender = TestSender::new(dir.path(), "laptop")?;
    // The source on a tmpfs where possible, to spare the shared disk the
    // rewrites; on disk otherwise.
    let _tmpfs = Tmpfs::mount(&sender.source, "160m")?;
    let config = super::sender_config(&sender, receiver.addr)?;
    tree::write(&sender.source, "small.txt", "small")?;
    tree::write(&sender.source, "big.bin", vec![0u8; SIZE])?;
    let big = sender.source.join("big.bin");
    let mirror = receiver.mirror("laptop", "docs");
    let complete = Arc::new(Mutex::new(vec![0u8]));
    let stop = Arc::new(AtomicBool::new(false));
    let writer = {
        let (big, stop, complete) = (big.clone(), stop.clone(), complete.clone());
        std::thread::spawn(move || rewrite_until(big, stop, complete))
    };

    // A run may read the file between two passes and store it whole, which
    // is fine; up to three runs, one must notice the change.
    let mut noticed = false;
    for attempt in 0..3 {
        let summary = send_config(&config).await?;
        eprintln!("attempt {attempt}: {}", summary.line());
        let whole = complete.lock().unwrap_or_else(|e| e.into_inner()).clone();
        if mirror.join("big.bin").exists() {
            assert_whole(&mirror.join("big.bin"), &whole)?;
        }
        assert_eq!(std::fs::read(mirror.join("small.txt"))?, b"small");
        if let Some(p) = summary.problems.iter().find(|p| p.path == "big.bin") {
            assert!(
                p.message.contains("changed while being read"),
                "unexpected problem: {}",
                p.message
            );
            assert_eq!(summary.errors, 1, "{summary:?}");
            noticed = true;
            break;
        }
    }
    stop.store(true, Ordering::Relaxed);
    writer
        .join()
        .map_err(|_| anyhow::anyhow!("the writer thread panicked"))?;
    assert!(
        noticed,
        "no run noticed the file changing while it was read"
    );

    // The writer stopped: the next run stores the last pass.
    let whole = complete.lock().unwrap_or_else(|e| e.into_inner()).clone();
    let summary = send_config(&config).await?;
    assert_eq!(summary.errors, 0, "{summary:?}");
    tree::assert_same(&sender.source, &mirror)?;
    assert_whole(&mirror.join("big.bin"), &whole)?;
    // No version of it, current or old, is torn.
    let store = receiver.store.clone();
    let laptop = store
        .sender_by_name(&Name::new("laptop")?)?
        .expect("registered");
    let ns = store.namespace(&laptop, &Name::new("docs")?);
    let versions = store.versions(&ns, &RelPath::from_bytes("big.bin")?)?;
    assert!(!versions.is_empty());
    for v in &versions {
        assert_whole(&v.location, &whole)?;
    }
    drop(store);
    receiver.stop().await?;
    Ok(())
}
