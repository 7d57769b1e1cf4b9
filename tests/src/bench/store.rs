//! `store-first` and `store-nochange` (issue 17): Ferry's embedded store
//! (`ferry send --once --store DIR`: the receiver's code in the sender's
//! process, no receiver process) against Ferry to a receiver, on the small
//! set. In these rows the Ferry column is the embedded store and the
//! reference is Ferry to a receiver.

use std::ffi::OsStr;
use std::path::Path;

use anyhow::Context;

use super::data::{DataSet, SetKind};
use super::goals::FERRY_RECEIVER;
use super::process::{self, drop_caches};
use super::report::{Report, Sample};
use super::scenarios::{alternate, Extra};
use super::tools::{send_summary, Ferry};

/// Measures the `store-*` scenarios of the plan.
pub fn run(extra: &Extra<'_>, report: &mut Report) -> anyhow::Result<()> {
    let plan = extra.plan;
    let set = DataSet::prepare(&plan.data_dir, SetKind::Small, plan.sizes)?;
    let local = format!("{}-local", set.name);
    let remote = format!("{}-remote", set.name);
    let ferry = Ferry::setup(
        &plan.ferry_bin,
        &extra.work.join("ferry-store"),
        &[&local, &remote],
    )?;
    let scratch = extra.scratch;
    for rep in 0..plan.reps {
        for (scenario, bytes) in [("store-first", set.bytes), ("store-nochange", 0)] {
            // The first sync is also the base of the no-change run.
            if scenario == "store-nochange" && !plan.wants(scenario) {
                continue;
            }
            // Before a first sync each store is emptied right before its
            // own run (untimed), so that neither creates its files right
            // after the other's were deleted.
            let first = scenario == "store-first";
            let (embedded, mut others) = alternate(
                plan.reps,
                rep,
                scenario,
                Box::new(|| {
                    if first {
                        ferry.reset(&local)?;
                    }
                    embedded_run(&ferry, &local, &set.root, scratch)
                }),
                vec![(
                    FERRY_RECEIVER,
                    Box::new(|| {
                        if first {
                            ferry.reset(&remote)?;
                        }
                        ferry.run(&remote, &set.root, scratch)
                    }),
                )],
            )?;
            ferry_tests::tree::assert_same(&set.root, &ferry.mirror(&local))
                .with_context(|| format!("{scenario}: the embedded store differs"))?;
            ferry_tests::tree::assert_same(&set.root, &ferry.mirror(&remote))
                .with_context(|| format!("{scenario}: the receiver's mirror differs"))?;
            if plan.wants(scenario) {
                report.add(
                    scenario,
                    FERRY_RECEIVER,
                    bytes,
                    Some(embedded),
                    others.remove(0),
                );
            }
        }
    }
    ferry.reset(&local)?;
    ferry.reset(&remote)
}

/// One measured `ferry send --once --json --store` of `source` into the
/// store of `set` (caches dropped first). Its CPU and peak RSS are those of
/// the one process that sends and stores.
fn embedded_run(ferry: &Ferry, set: &str, source: &Path, scratch: &Path) -> anyhow::Result<Sample> {
    let store = ferry.store(set);
    let state = ferry.sender_state(set);
    drop_caches();
    let args: Vec<&OsStr> = vec![
        "send".as_ref(),
        "--store".as_ref(),
        store.as_os_str(),
        "--source".as_ref(),
        source.as_os_str(),
        "--state".as_ref(),
        state.as_os_str(),
        "--name".as_ref(),
        "bench".as_ref(),
        "--folder".as_ref(),
        set.as_ref(),
        "--once".as_ref(),
        "--json".as_ref(),
    ];
    let done = process::run_timed(ferry.bin(), &args, &scratch.join("ferry-store.time"))?;
    let summary = send_summary(set, &done)?;
    Ok(Sample {
        wall_s: done.wall_s,
        wire_total: summary["bytes_on_wire"].as_u64(),
        sent: None,
        received: None,
        client: Some(done.usage),
        server: None,
    })
}
