//! A receiver restarted on a damaged catalog refuses to start, says which
//! file is damaged, and leaves it as it was.

use std::time::Duration;

use anyhow::Context;
use ferry_tests::tree;

use crate::crash::Setup;

/// SQLite's default page size, which the catalog uses.
const PAGE: usize = 4096;

/// Starts `ferry receive` on `setup`'s store and expects it to refuse:
/// returns its stderr.
fn refused_start(setup: &Setup, what: &str) -> anyhow::Result<String> {
    let mut proc = setup.spawn_receiver(what)?;
    let status = proc.exit_status(Duration::from_secs(30))?;
    let stderr = proc.stderr();
    assert!(
        !status.success(),
        "the {what} started: {status}; stderr:\n{stderr}"
    );
    assert!(
        !stderr.contains("receiver listening"),
        "the {what} listened on a damaged catalog:\n{stderr}"
    );
    Ok(stderr)
}

#[test]
fn a_receiver_with_a_damaged_catalog_refuses_to_start_and_leaves_it_untouched() -> anyhow::Result<()>
{
    crate::util::trace();
    let setup = Setup::new()?;
    // Enough files that the catalog spans many pages.
    for i in 0..400 {
        tree::write(
            &setup.source,
            format!("d{}/file-{i:03}.txt", i % 7),
            format!("{i}"),
        )?;
    }
    let mut receiver = setup.receiver("receiver")?;
    setup.send_once("sender")?;
    receiver.interrupt()?;
    assert!(receiver.exit_status(Duration::from_secs(10))?.success());
    let catalog = setup.store.join(".ferry/catalog.db");
    assert!(
        !setup.store.join(".ferry/catalog.db-wal").exists()
            || std::fs::metadata(setup.store.join(".ferry/catalog.db-wal"))?.len() == 0,
        "the WAL was not checkpointed at a clean stop"
    );
    let good = std::fs::read(&catalog).context("reading the catalog")?;
    let pages = good.len() / PAGE;
    assert!(pages >= 16, "the catalog has only {pages} pages");

    // 1. One page in the middle overwritten with garbage.
    let mut damaged = good.clone();
    let at = (pages / 2) * PAGE;
    let mut rng = super::Rng::new(7);
    for b in &mut damaged[at..at + PAGE] {
        *b = rng.next() as u8;
    }
    std::fs::write(&catalog, &damaged)?;
    let stderr = refused_start(&setup, "receiver on a damaged page")?;
    eprintln!("damaged page:\n{stderr}");
    assert!(
        stderr.contains(&catalog.display().to_string()) && stderr.contains("damaged"),
        "the message does not name the damaged catalog:\n{stderr}"
    );
    assert_eq!(
        stderr.matches("is damaged").count(),
        1,
        "the message is repeated:\n{stderr}"
    );
    assert_eq!(
        std::fs::read(&catalog)?,
        damaged,
        "the damaged catalog was modified"
    );

    // 2. Truncated to half its pages.
    let truncated = &good[..(pages / 2) * PAGE];
    std::fs::write(&catalog, truncated)?;
    let stderr = refused_start(&setup, "receiver on a truncated catalog")?;
    eprintln!("truncated:\n{stderr}");
    assert!(
        stderr.contains(&catalog.display().to_string()) && stderr.contains("damaged"),
        "the message does not name the damaged catalog:\n{stderr}"
    );
    assert_eq!(
        std::fs::read(&catalog)?,
        truncated,
        "the truncated catalog was modified"
    );

    // 3. The admin puts the good catalog back: history is all there.
    std::fs::write(&catalog, &good)?;
    let runs = setup.runs()?;
    assert_eq!(runs.len(), 1, "{runs:?}");
    assert_eq!(runs[0].status, "complete");
    let mut receiver = setup.receiver("receiver on the restored catalog")?;
    tree::write(&setup.source, "after.txt", "after the repair")?;
    setup.send_once("sender after the repair")?;
    tree::assert_same(&setup.source, &setup.mirror())?;
    receiver.interrupt()?;
    assert!(receiver.exit_status(Duration::from_secs(10))?.success());
    Ok(())
}

/// `ferry send --once --store DIR` in `home`, from `home/src`.
fn send_to_store(home: &std::path::Path) -> anyhow::Result<std::process::Output> {
    Ok(std::process::Command::new(crate::util::ferry_bin())
        .args(["send", "--source", "src", "--store", "store", "--once"])
        .current_dir(home)
        .env("HOME", home)
        .env_remove("XDG_STATE_HOME")
        .env_remove("FERRY_LOG")
        .stdin(std::process::Stdio::null())
        .output()?)
}

/// The embedded store checks its catalog beside the sender's scan rather
/// than before it: a damaged catalog must still fail the run, be named once,
/// and be left as it was (nothing written, not even to its WAL).
#[test]
fn an_embedded_once_run_on_a_damaged_catalog_is_refused_and_leaves_it_untouched(
) -> anyhow::Result<()> {
    crate::util::trace();
    let home = tempfile::tempdir()?;
    let src = home.path().join("src");
    for i in 0..400 {
        tree::write(&src, format!("d{}/file-{i:03}.txt", i % 7), format!("{i}"))?;
    }
    let first = send_to_store(home.path())?;
    assert!(
        first.status.success(),
        "the first run failed: {}",
        String::from_utf8_lossy(&first.stderr)
    );
    let catalog = home.path().join("store/.ferry/catalog.db");
    let wal = home.path().join("store/.ferry/catalog.db-wal");
    let wal_len = || std::fs::metadata(&wal).map(|m| m.len()).unwrap_or(0);
    assert_eq!(wal_len(), 0, "the WAL was not checkpointed at a clean stop");
    let good = std::fs::read(&catalog).context("reading the catalog")?;
    let pages = good.len() / PAGE;
    assert!(pages >= 16, "the catalog has only {pages} pages");

    let mut damaged = good.clone();
    let at = (pages / 2) * PAGE;
    let mut rng = super::Rng::new(11);
    for b in &mut damaged[at..at + PAGE] {
        *b = rng.next() as u8;
    }
    std::fs::write(&catalog, &damaged)?;
    tree::write(&src, "new.txt", "sent after the damage")?;
    let refused = send_to_store(home.path())?;
    let stderr = String::from_utf8_lossy(&refused.stderr);
    eprintln!("embedded run on a damaged page:\n{stderr}");
    assert!(
        !refused.status.success(),
        "the run on a damaged catalog succeeded:\n{stderr}"
    );
    assert!(
        stderr.contains(&catalog.display().to_string()) && stderr.contains("damaged"),
        "the message does not name the damaged catalog:\n{stderr}"
    );
    assert_eq!(
        stderr.matches("is damaged").count(),
        1,
        "the message is repeated:\n{stderr}"
    );
    assert_eq!(
        std::fs::read(&catalog)?,
        damaged,
        "the damaged catalog was modified"
    );
    assert_eq!(wal_len(), 0, "something was written to the damaged catalog");

    // The good catalog put back: the next run stores the new file.
    std::fs::write(&catalog, &good)?;
    let repaired = send_to_store(home.path())?;
    assert!(
        repaired.status.success(),
        "the run after the repair failed: {}",
        String::from_utf8_lossy(&repaired.stderr)
    );
    Ok(())
}
