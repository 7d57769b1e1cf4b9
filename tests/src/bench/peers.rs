//! Ferry against what people would pick instead (issue 17): restic and borg
//! (local repository and over ssh) and Syncthing, on the same data sets,
//! first sync then a no-change resync, alternating with Ferry in each
//! repetition (who goes first alternates too), every copy checked.
//!
//! Rows: `backup-<set>-first|nochange` set Ferry to a receiver (over QUIC)
//! against restic and borg, local and over ssh; `store-<set>-...` set
//! Ferry's embedded local store (`ferry send --store`) against the local
//! repositories; `syncthing-<set>-...` Ferry to a receiver against
//! Syncthing. A tool that is not installed is skipped with a note.

use std::path::{Path, PathBuf};

use anyhow::{bail, Context};

use super::backup_tools::{self, BackupTools, Via};
use super::data::{DataSet, SetKind, Sizes};
use super::process;
use super::report::{Limit, Report, Sample};
use super::syncthing::SyncthingPair;
use super::tools::{remove_tree, Ferry, Sshd};

/// Scenarios `--quick` leaves out unless `--scenarios` names them (restic's
/// and borg's restores and Syncthing's start-ups make them slow for CI).
pub const NOT_QUICK: &[&str] = &["backup-large", "backup-text", "syncthing-large"];

/// Row labels of the tools.
pub const RESTIC_LOCAL: &str = "restic local";
/// restic over sftp to the bench's sshd.
pub const RESTIC_SFTP: &str = "restic sftp";
/// borg to a local repository.
pub const BORG_LOCAL: &str = "borg local";
/// borg over ssh (`borg serve`) to the bench's sshd.
pub const BORG_SSH: &str = "borg ssh";
/// Syncthing, send-only to receive-only.
pub const SYNCTHING: &str = "syncthing";

/// Issue 17's targets: (row scenario, reference, limit).
pub const TARGETS: &[(&str, &str, Limit)] = &[
    ("backup-small-nochange", RESTIC_LOCAL, Limit::WallRatio(0.3)),
    ("backup-small-nochange", BORG_LOCAL, Limit::WallRatio(0.3)),
    ("store-small-nochange", RESTIC_LOCAL, Limit::WallRatio(0.3)),
    ("store-small-nochange", BORG_LOCAL, Limit::WallRatio(0.3)),
    ("backup-small-first", RESTIC_SFTP, Limit::WallRatio(0.8)),
    ("backup-large-first", RESTIC_SFTP, Limit::CpuRatio(1.0)),
];

/// Ferry's sender with an embedded receiver (`ferry send --once --store`),
/// its own identity and store per data set.
pub struct FerryStore {
    bin: PathBuf,
    dir: PathBuf,
}

impl FerryStore {
    fn store(&self, set: &str) -> PathBuf {
        self.dir.join(set).join("store")
    }

    /// Where the embedded store mirrors `set`.
    pub fn mirror(&self, set: &str) -> PathBuf {
        self.store(set).join("bench").join(set)
    }

    /// Forgets everything stored of `set` (the identity too).
    pub fn reset(&self, set: &str) -> anyhow::Result<()> {
        remove_tree(&self.dir.join(set))
    }

    /// One measured `ferry send --once --json --store` (caches dropped
    /// first), its summary checked.
    pub fn run(&self, set: &str, source: &Path, scratch: &Path) -> anyhow::Result<Sample> {
        let store = self.store(set);
        let state = self.dir.join(set).join("sstate");
        process::drop_caches();
        let done = process::run_timed(
            &self.bin,
            &[
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
            ],
            &scratch.join("ferry-store.time"),
        )?;
        if !done.status.success() {
            bail!(
                "ferry send --store of {set} failed ({}): {}",
                done.status,
                done.stderr.trim()
            );
        }
        check_summary(&done.stdout).with_context(|| format!("ferry send --store of {set}"))?;
        Ok(Sample {
            wall_s: done.wall_s,
            client: Some(done.usage),
            ..Sample::default()
        })
    }
}

/// Fails unless the last JSON line of `ferry send --json` reports no error.
pub fn check_summary(stdout: &str) -> anyhow::Result<()> {
    let summary: serde_json::Value = stdout
        .lines()
        .rev()
        .find_map(|l| serde_json::from_str(l).ok())
        .with_context(|| format!("no JSON summary: {stdout:?}"))?;
    if summary["errors"].as_u64() != Some(0) {
        bail!("it reported errors: {summary}");
    }
    Ok(())
}

/// What the peer scenarios share with the rest of the bench.
pub struct PeerBench<'a> {
    /// Repetitions.
    pub reps: usize,
    /// The scenarios asked for (`backup-*`, `syncthing-*` are this module's).
    pub scenarios: &'a [String],
    /// Data set sizes.
    pub sizes: Sizes,
    /// Where the data sets live.
    pub data_dir: &'a Path,
    /// The `ferry` binary.
    pub ferry_bin: &'a Path,
    /// Ferry's receiver and senders.
    pub ferry: &'a Ferry,
    /// The bench's sshd, if it could be set up.
    pub sshd: Option<&'a Sshd>,
    /// Where this module keeps its repositories and copies.
    pub work: &'a Path,
    /// Time files and logs.
    pub scratch: &'a Path,
}

impl PeerBench<'_> {
    fn wants(&self, scenario: &str) -> bool {
        self.scenarios.iter().any(|s| s == scenario)
    }
}

/// A run of one tool, as a closure so the order can alternate.
type Job<'b> = (
    &'static str,
    Box<dyn FnMut() -> anyhow::Result<Sample> + 'b>,
);

/// Runs `jobs` in order on even repetitions, in reverse on odd ones; the
/// samples come back in the order given.
fn alternate(
    rep: usize,
    reps: usize,
    label: &str,
    jobs: &mut [Job<'_>],
) -> anyhow::Result<Vec<Sample>> {
    let mut order: Vec<usize> = (0..jobs.len()).collect();
    if rep % 2 == 1 {
        order.reverse();
    }
    let mut samples: Vec<Option<Sample>> = vec![None; jobs.len()];
    for i in order {
        let (tool, job) = &mut jobs[i];
        let sample = job().with_context(|| format!("{label}, {tool}, repetition {}", rep + 1))?;
        eprintln!(
            "bench: {label} rep {}/{reps}: {tool} {:.2} s",
            rep + 1,
            sample.wall_s
        );
        samples[i] = Some(sample);
    }
    samples
        .into_iter()
        .map(|s| s.context("a job did not run"))
        .collect()
}

/// Runs the peer scenarios asked for, adding rows and notes to `report`.
pub fn run(cx: &PeerBench<'_>, report: &mut Report) -> anyhow::Result<()> {
    let backups: Vec<SetKind> = [
        ("backup-small", SetKind::Small),
        ("backup-large", SetKind::Large),
        ("backup-text", SetKind::Text),
    ]
    .into_iter()
    .filter(|(s, _)| cx.wants(s))
    .map(|(_, k)| k)
    .collect();
    if !backups.is_empty() {
        let restic = backup_tools::installed("restic", "version");
        let borg = backup_tools::installed("borg", "--version");
        if !restic {
            report
                .notes
                .push("restic rows skipped: restic not found (apt-get install restic)".into());
        }
        if !borg {
            report
                .notes
                .push("borg rows skipped: borg not found (apt-get install borgbackup)".into());
        }
        let sshd = cx
            .sshd
            .filter(|_| Path::new(backup_tools::SFTP_SERVER).is_file());
        if sshd.is_none() {
            report.notes.push(format!(
                "restic over sftp and borg over ssh skipped: no sshd or no {}",
                backup_tools::SFTP_SERVER
            ));
        }
        let tools = BackupTools::setup(&cx.work.join("backup"))?;
        let store = FerryStore {
            bin: cx.ferry_bin.to_path_buf(),
            dir: cx.work.join("ferry-store"),
        };
        for kind in backups {
            let set = DataSet::prepare(cx.data_dir, kind, cx.sizes)?;
            backup_set(cx, &set, &tools, &store, restic, borg, sshd, report)?;
        }
        tools.clear()?;
        remove_tree(&store.dir)?;
    }
    let syncs: Vec<SetKind> = [
        ("syncthing-small", SetKind::Small),
        ("syncthing-large", SetKind::Large),
    ]
    .into_iter()
    .filter(|(s, _)| cx.wants(s))
    .map(|(_, k)| k)
    .collect();
    if !syncs.is_empty() {
        if !backup_tools::installed("syncthing", "--version") {
            report.notes.push(
                "syncthing rows skipped: syncthing not found (apt-get install syncthing)".into(),
            );
            return Ok(());
        }
        let pair = SyncthingPair::setup(&cx.work.join("syncthing"))?;
        for kind in syncs {
            let set = DataSet::prepare(cx.data_dir, kind, cx.sizes)?;
            syncthing_set(cx, &set, &pair, report)?;
        }
        pair.clear()?;
    }
    Ok(())
}

/// The set's name in row labels: `small`, `large`, `text`.
fn short(kind: SetKind) -> &'static str {
    match kind {
        SetKind::Small => "small",
        SetKind::Large => "large",
        SetKind::Text => "text",
    }
}

#[allow(clippy::too_many_arguments)]
fn backup_set(
    cx: &PeerBench<'_>,
    set: &DataSet,
    tools: &BackupTools,
    store: &FerryStore,
    restic: bool,
    borg: bool,
    sshd: Option<&Sshd>,
    report: &mut Report,
) -> anyhow::Result<()> {
    let (name, root, files, scratch) = (&set.name, &set.root, set.files, cx.scratch);
    for rep in 0..cx.reps {
        cx.ferry.reset(name)?;
        store.reset(name)?;
        tools.reset(name)?;
        for phase in ["first", "nochange"] {
            let label = format!("backup-{}-{phase}", short(set.kind));
            let mut jobs: Vec<Job<'_>> = vec![
                ("ferry", Box::new(|| cx.ferry.run(name, root, scratch))),
                ("ferry --store", Box::new(|| store.run(name, root, scratch))),
            ];
            let mut refs: Vec<&'static str> = Vec::new();
            if restic {
                jobs.push((
                    RESTIC_LOCAL,
                    Box::new(|| tools.restic_run(Via::Local, name, root, files, None, scratch)),
                ));
                refs.push(RESTIC_LOCAL);
                if sshd.is_some() {
                    jobs.push((
                        RESTIC_SFTP,
                        Box::new(|| tools.restic_run(Via::Ssh, name, root, files, sshd, scratch)),
                    ));
                    refs.push(RESTIC_SFTP);
                }
            }
            if borg {
                jobs.push((
                    BORG_LOCAL,
                    Box::new(|| tools.borg_run(Via::Local, name, root, files, None, scratch)),
                ));
                refs.push(BORG_LOCAL);
                if sshd.is_some() {
                    jobs.push((
                        BORG_SSH,
                        Box::new(|| tools.borg_run(Via::Ssh, name, root, files, sshd, scratch)),
                    ));
                    refs.push(BORG_SSH);
                }
            }
            let mut samples = alternate(rep, cx.reps, &label, &mut jobs)?.into_iter();
            drop(jobs);
            ferry_tests::tree::assert_same(root, &cx.ferry.mirror(name))
                .with_context(|| format!("{label}: Ferry's mirror differs from the source"))?;
            ferry_tests::tree::assert_same(root, &store.mirror(name)).with_context(|| {
                format!("{label}: Ferry's embedded store differs from the source")
            })?;
            let (Some(ferry), Some(embedded)) = (samples.next(), samples.next()) else {
                bail!("{label}: Ferry's samples are missing");
            };
            let bytes = if phase == "first" { set.bytes } else { 0 };
            let store_label = format!("store-{}-{phase}", short(set.kind));
            for (tool, sample) in refs.into_iter().zip(samples) {
                report.add(&label, tool, bytes, Some(ferry.clone()), sample.clone());
                if tool == RESTIC_LOCAL || tool == BORG_LOCAL {
                    report.add(&store_label, tool, bytes, Some(embedded.clone()), sample);
                }
            }
        }
    }
    cx.ferry.reset(name)?;
    store.reset(name)?;
    tools.reset(name)
}

fn syncthing_set(
    cx: &PeerBench<'_>,
    set: &DataSet,
    pair: &SyncthingPair,
    report: &mut Report,
) -> anyhow::Result<()> {
    for rep in 0..cx.reps {
        cx.ferry.reset(&set.name)?;
        pair.reset()?;
        for phase in ["first", "nochange"] {
            let label = format!("syncthing-{}-{phase}", short(set.kind));
            let mut jobs: Vec<Job<'_>> = vec![
                (
                    "ferry",
                    Box::new(|| cx.ferry.run(&set.name, &set.root, cx.scratch)),
                ),
                (SYNCTHING, Box::new(|| pair.run(set, cx.scratch))),
            ];
            let samples = alternate(rep, cx.reps, &label, &mut jobs)?;
            drop(jobs);
            ferry_tests::tree::assert_same(&set.root, &cx.ferry.mirror(&set.name))
                .with_context(|| format!("{label}: Ferry's mirror differs from the source"))?;
            let [ferry, other]: [Sample; 2] = samples
                .try_into()
                .map_err(|_| anyhow::anyhow!("{label}: samples are missing"))?;
            let bytes = if phase == "first" { set.bytes } else { 0 };
            report.add(&label, SYNCTHING, bytes, Some(ferry), other);
        }
    }
    cx.ferry.reset(&set.name)?;
    pair.reset()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn alternates_the_order_and_keeps_the_samples_in_place() -> anyhow::Result<()> {
        let order = std::cell::RefCell::new(Vec::new());
        for rep in 0..2 {
            let mut jobs: Vec<Job<'_>> = vec![
                (
                    "a",
                    Box::new(|| {
                        order.borrow_mut().push("a");
                        Ok(Sample {
                            wall_s: 1.0,
                            ..Sample::default()
                        })
                    }),
                ),
                (
                    "b",
                    Box::new(|| {
                        order.borrow_mut().push("b");
                        Ok(Sample {
                            wall_s: 2.0,
                            ..Sample::default()
                        })
                    }),
                ),
            ];
            let samples = alternate(rep, 2, "t", &mut jobs)?;
            assert_eq!(samples[0].wall_s, 1.0);
            assert_eq!(samples[1].wall_s, 2.0);
        }
        assert_eq!(*order.borrow(), ["a", "b", "b", "a"]);
        Ok(())
    }

    #[test]
    fn a_failing_job_names_its_tool() {
        let mut jobs: Vec<Job<'_>> = vec![("restic local", Box::new(|| bail!("boom")))];
        let err = alternate(0, 1, "backup-small-first", &mut jobs).unwrap_err();
        assert_eq!(
            format!("{err:#}"),
            "backup-small-first, restic local, repetition 1: boom"
        );
    }

    #[test]
    fn ferrys_summary_must_report_no_error() {
        assert!(check_summary("log line\n{\"errors\":0,\"files\":3}\n").is_ok());
        assert!(check_summary("{\"errors\":2}\n").is_err());
        assert!(check_summary("no json").is_err());
    }

    #[test]
    fn issue_17_targets_are_checked_with_their_ratio() {
        let run = |wall_s: f64, cpu: f64| Sample {
            wall_s,
            client: Some(process::Usage {
                cpu_s: cpu,
                max_rss_kib: 1,
            }),
            ..Sample::default()
        };
        let mut report = Report::default();
        report.add(
            "backup-small-nochange",
            RESTIC_LOCAL,
            0,
            Some(run(0.1, 0.1)),
            run(1.0, 1.0),
        );
        report.add(
            "backup-small-nochange",
            BORG_LOCAL,
            0,
            Some(run(0.1, 0.1)),
            run(0.2, 1.0),
        );
        report.add(
            "backup-large-first",
            RESTIC_SFTP,
            1_000_000_000,
            Some(run(2.0, 2.5)),
            run(3.0, 3.0),
        );
        let checks = report.targets();
        let got: Vec<(&str, &str, &str, bool)> = checks
            .iter()
            .map(|t| (t.scenario.as_str(), t.reference.as_str(), t.measure, t.met))
            .collect();
        assert_eq!(
            got,
            [
                ("backup-small-nochange", RESTIC_LOCAL, "wall", true),
                ("backup-small-nochange", BORG_LOCAL, "wall", false),
                ("backup-large-first", RESTIC_SFTP, "cpu", true),
            ]
        );
        assert_eq!(checks[1].ratio, Some(0.5));
        let table = report.table();
        assert!(
            table.contains("backup-small-nochange vs borg local: wall 0.10, target <= 0.3 x borg local's = 0.06: MISSED (ratio 0.50)"),
            "{table}"
        );
        assert!(
            table.contains("backup-large-first vs restic sftp: cpu 2.50, target <= 1 x restic sftp's CPU-s/GB = 3.00: met (ratio 0.83)"),
            "{table}"
        );
    }
}
