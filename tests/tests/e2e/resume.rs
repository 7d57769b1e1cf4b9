//! Resuming interrupted transfers: a large file cut off by killing the
//! sender or the receiver is continued by the next run from what the
//! receiver made durable, and only the rest crosses the wire. A kept chunk
//! that was damaged meanwhile is noticed and sent again. Real processes,
//! `kill -9`, real QUIC on loopback; the sender is slowed with
//! `--limit-rate` so that the kill lands mid-file.

use std::path::{Path, PathBuf};
use std::time::Duration;

use anyhow::Context;
use ferry_tests::tree;

use crate::crash::{Proc, Setup};
use crate::util::poll_until;

const MIB: u64 = 1024 * 1024;
const LARGE: u64 = 64 * MIB;
/// Staging size at which the test cuts the transfer: the receiver makes its
/// progress durable every 16 MiB, so at least 16 MiB are kept by then.
const CUT_AT: u64 = 36 * MIB;
const KEPT_AT_LEAST: u64 = 16 * MIB;

fn add_large_file(setup: &Setup) -> anyhow::Result<()> {
    let mut bytes = vec![0u8; LARGE as usize];
    blake3::Hasher::new()
        .update(b"ferry resume tests")
        .finalize_xof()
        .fill(&mut bytes);
    tree::write(&setup.source, "large.bin", bytes)
}

/// A staging file under `staging`, once one holds at least `size` bytes.
pub(crate) fn wait_for_staging(staging: &Path, size: u64) -> anyhow::Result<PathBuf> {
    poll_until(Duration::from_secs(60), || {
        std::fs::read_dir(staging)
            .ok()?
            .filter_map(|e| {
                let e = e.ok()?;
                let len = e.metadata().ok()?.len();
                (len >= size).then(|| e.path())
            })
            .next()
    })
    .context("the large file never reached the size in staging")
}

/// Runs `ferry send --once` without a limit; returns its file bytes sent.
fn resend(setup: &Setup) -> anyhow::Result<u64> {
    let mut sender = setup.sender("resuming sender", &["--once"])?;
    let status = sender.exit_status(Duration::from_secs(120))?;
    anyhow::ensure!(
        status.success(),
        "the resuming sender failed: {status}; stderr:\n{}",
        sender.stderr()
    );
    let summary: serde_json::Value = serde_json::from_str(sender.stdout().trim())
        .with_context(|| format!("sender output: {}", sender.stdout()))?;
    tree::assert_same(&setup.source, &setup.mirror())?;
    summary["bytes_file_data_new"]
        .as_u64()
        .context("no bytes_file_data_new in the summary")
}

fn slow_sender(setup: &Setup) -> anyhow::Result<Proc> {
    setup.sender("slow sender", &["--once", "--limit-rate", "20MB/s"])
}

#[test]
fn a_transfer_cut_by_killing_the_sender_resumes_without_resending_kept_chunks() -> anyhow::Result<()>
{
    crate::util::trace();
    let setup = Setup::new()?;
    let mut receiver = setup.receiver("receiver")?;
    setup.send_once("pairing sender")?;
    add_large_file(&setup)?;

    let mut sender = slow_sender(&setup)?;
    wait_for_staging(&setup.staging(), CUT_AT)?;
    sender.kill9()?;

    let sent = resend(&setup)?;
    assert!(
        sent <= LARGE - KEPT_AT_LEAST,
        "{} MiB of the {} MiB file were sent again",
        sent / MIB,
        LARGE / MIB
    );
    assert_eq!(
        receiver.wait_for(Duration::ZERO)?,
        None,
        "the receiver died"
    );
    receiver.interrupt()?;
    receiver.exit_status(Duration::from_secs(20))?;
    // Nothing is left to resume: the staging area is empty.
    assert_eq!(std::fs::read_dir(setup.staging())?.count(), 0);
    Ok(())
}

#[test]
fn a_transfer_cut_by_killing_the_receiver_resumes_after_its_restart() -> anyhow::Result<()> {
    crate::util::trace();
    let setup = Setup::new()?;
    let mut receiver = setup.receiver("receiver")?;
    setup.send_once("pairing sender")?;
    add_large_file(&setup)?;

    let mut sender = slow_sender(&setup)?;
    wait_for_staging(&setup.staging(), CUT_AT)?;
    receiver.kill9()?;
    sender.kill9()?;

    let mut receiver = setup.receiver("restarted receiver")?;
    let sent = resend(&setup)?;
    assert!(
        sent <= LARGE - KEPT_AT_LEAST,
        "{} MiB of the {} MiB file were sent again",
        sent / MIB,
        LARGE / MIB
    );
    receiver.interrupt()?;
    receiver.exit_status(Duration::from_secs(20))?;
    assert_eq!(std::fs::read_dir(setup.staging())?.count(), 0);
    Ok(())
}

#[test]
fn a_damaged_kept_chunk_is_detected_and_sent_again() -> anyhow::Result<()> {
    crate::util::trace();
    let setup = Setup::new()?;
    let mut receiver = setup.receiver("receiver")?;
    setup.send_once("pairing sender")?;
    add_large_file(&setup)?;

    let mut sender = slow_sender(&setup)?;
    let staged = wait_for_staging(&setup.staging(), CUT_AT)?;
    receiver.kill9()?;
    sender.kill9()?;

    // A byte flips in the kept part, 4 MiB in.
    let damage_at = 4 * MIB;
    let mut bytes = std::fs::read(&staged)?;
    bytes[damage_at as usize] ^= 0x01;
    std::fs::write(&staged, &bytes)?;

    let mut receiver = setup.receiver("restarted receiver")?;
    let sent = resend(&setup)?;
    // Kept: the chunks before the damaged one (a chunk is at most 128 KiB).
    let resent_from = LARGE - sent;
    assert!(
        resent_from <= damage_at && resent_from + 128 * 1024 > damage_at,
        "resent from {resent_from}, the damage is at {damage_at}"
    );
    receiver.interrupt()?;
    receiver.exit_status(Duration::from_secs(20))?;
    Ok(())
}
