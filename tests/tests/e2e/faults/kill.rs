//! `kill -9` of the receiver or the sender at random points of a run,
//! repeated, with the real `ferry` binary: after each, the next run ends
//! with source and mirror identical, and every version a completed run
//! acknowledged is still in the store with its bytes.

use std::path::Path;
use std::time::{Duration, Instant};

use ferry_tests::tree;

use super::{acknowledge, assert_acknowledged_intact, Acknowledged, Rng};
use crate::crash::Setup;
use crate::sync::pseudo_random;

const ITERATIONS: u64 = 8;
const KIB: u64 = 1024;

/// A file size: mostly small, sometimes a few MiB.
fn size(rng: &mut Rng) -> usize {
    match rng.below(4) {
        0 => rng.below(4 * KIB) as usize,
        1 | 2 => (64 * KIB + rng.below(512 * KIB)) as usize,
        _ => (KIB * KIB + rng.below(4 * KIB * KIB)) as usize,
    }
}

/// Adds, changes and deletes a few files.
fn mutate(source: &Path, rng: &mut Rng, files: &mut Vec<String>) -> anyhow::Result<()> {
    for _ in 0..1 + rng.below(3) {
        let name = format!("d{}/f{}.bin", rng.below(3), rng.next() % 100_000);
        tree::write(source, &name, pseudo_random(size(rng), rng.next()))?;
        if !files.contains(&name) {
            files.push(name);
        }
    }
    for _ in 0..1 + rng.below(2) {
        let name = &files[rng.below(files.len() as u64) as usize];
        tree::write(source, name, pseudo_random(size(rng), rng.next()))?;
    }
    if files.len() > 6 {
        let name = files.swap_remove(rng.below(files.len() as u64) as usize);
        std::fs::remove_file(source.join(name))?;
    }
    Ok(())
}

#[test]
fn kill_9_of_either_side_at_random_points_loses_nothing() -> anyhow::Result<()> {
    crate::util::trace();
    let setup = Setup::new()?;
    let mut rng = Rng::new(0x00fe_77e5_eed5);
    let mut files = Vec::new();
    for _ in 0..4 {
        mutate(&setup.source, &mut rng, &mut files)?;
    }
    let mut acked = Acknowledged::new();
    let mut receiver = setup.receiver("receiver")?;
    let started = Instant::now();
    setup.send_once("first sender")?;
    let full_run = started.elapsed();
    acknowledge(&setup.source, &mut acked)?;

    let mut mid_run_kills = 0;
    for i in 0..ITERATIONS {
        mutate(&setup.source, &mut rng, &mut files)?;
        let mut sender = setup.sender(&format!("sender {i}"), &["--once"])?;
        // The fault's timing, not a synchronisation: anywhere from before
        // the connection to after the end of a run.
        let delay = Duration::from_millis(rng.below(full_run.as_millis() as u64 + 1));
        std::thread::sleep(delay);
        let running = sender.wait_for(Duration::ZERO)?.is_none();
        if i % 2 == 0 {
            receiver.kill9()?;
            // The sender notices only at its idle timeout; stop it.
            if sender.wait_for(Duration::from_secs(1))?.is_none() {
                sender.kill9()?;
            }
            receiver = setup.receiver(&format!("receiver restarted after kill {i}"))?;
        } else {
            sender.kill9()?;
        }
        mid_run_kills += usize::from(running);
        eprintln!(
            "kill {i}: {} after {delay:?}, sender {}",
            if i % 2 == 0 { "receiver" } else { "sender" },
            if running { "mid-run" } else { "already done" }
        );
        setup.send_once(&format!("sender {i} after the kill"))?;
        tree::assert_same(&setup.source, &setup.mirror())?;
        acknowledge(&setup.source, &mut acked)?;
    }
    receiver.interrupt()?;
    assert!(receiver.exit_status(Duration::from_secs(10))?.success());
    eprintln!("{mid_run_kills} of {ITERATIONS} kills hit a run in progress");

    // Every acknowledged content is still stored, current or archived.
    let checked = assert_acknowledged_intact(&setup.store, &acked)?;
    eprintln!(
        "{checked} acknowledged versions of {} paths intact",
        acked.len()
    );
    let runs = setup.runs()?;
    assert!(runs.len() as u64 > ITERATIONS, "{runs:?}");
    Ok(())
}
