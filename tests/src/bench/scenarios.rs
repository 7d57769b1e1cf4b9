//! What is measured and in which order. Per data set and repetition: a first
//! sync into empty destinations, then the resync scenarios on top of it.
//! Within a repetition Ferry and the reference alternate who goes first
//! (Ferry first on even repetitions), and every run is checked afterwards:
//! the copy must equal the source.

use std::path::{Path, PathBuf};

use anyhow::{bail, Context};

use super::data::{DataSet, SetKind, Sizes, OVERWRITE_LEN};
use super::goals::RSYNC_FSYNC;
use super::process;
use super::report::{Report, Sample, RSYNC, RSYNC_Z};
use super::tools::{self, remove_tree, Ferry, RsyncDaemon, Sshd};
use super::{exclude, huge, s3, sealed, store, verify, watch};

/// Every scenario, as `--scenarios` names them.
pub const ALL: &[&str] = &[
    "small-first",
    "small-nochange",
    "small-modify",
    "large-first",
    "large-cp",
    "large-ssh",
    "large-append",
    "large-insert",
    "large-rename",
    "large-overwrite",
    "text-first",
    "small-first-hot",
    "large-first-hot",
    "text-first-hot",
    "store-first",
    "store-nochange",
    "exclude-first",
    "exclude-nochange",
    "watch-latency",
    "watch-idle",
    "backup-small",
    "backup-large",
    "backup-text",
    "syncthing-small",
    "syncthing-large",
    "sealed-small-first",
    "sealed-small-nochange",
    "sealed-large-first",
    "sealed-large-insert",
    "sealed-large-rename",
    "sealed-large-overwrite",
    "huge",
    "s3-small",
    "s3-large",
];

/// What to run.
#[derive(Debug, Clone)]
pub struct Plan {
    /// Repetitions of each measurement.
    pub reps: usize,
    /// Scenarios to measure (names from [`ALL`]).
    pub scenarios: Vec<String>,
    /// Data set sizes.
    pub sizes: Sizes,
    /// Where the data sets live (kept between runs).
    pub data_dir: PathBuf,
    /// The `ferry` binary.
    pub ferry_bin: PathBuf,
}

impl Plan {
    /// Whether `scenario` is to be measured.
    pub fn wants(&self, scenario: &str) -> bool {
        self.scenarios.iter().any(|s| s == scenario)
    }

    fn wants_set(&self, prefix: &str) -> bool {
        self.scenarios.iter().any(|s| s.starts_with(prefix))
    }
}

/// Everything the runs share.
struct Bench<'a> {
    plan: &'a Plan,
    ferry: Ferry,
    rsync: RsyncDaemon,
    sshd: Option<Sshd>,
    zstd: bool,
    work: PathBuf,
    scratch: PathBuf,
    report: Report,
}

/// Runs the plan and returns the report. The destinations live in
/// `data_dir/work`, removed at the start and the end.
pub fn run(plan: &Plan) -> anyhow::Result<Report> {
    let work = plan.data_dir.join("work");
    remove_tree(&work)?;
    let scratch = work.join("scratch");
    std::fs::create_dir_all(&scratch)?;
    let mut report = Report::default();
    let sshd = if plan.wants("large-ssh") || plan.wants_set("backup-") {
        match Sshd::setup(&work.join("ssh")) {
            Ok(sshd) => Some(sshd),
            Err(e) => {
                report.notes.push(format!(
                    "large-ssh (and restic, borg over ssh) skipped: {e:#}"
                ));
                None
            }
        }
    } else {
        None
    };
    let zstd = tools::rsync_has_zstd();
    if plan.wants("text-first") && !zstd {
        report
            .notes
            .push("this rsync cannot compress with zstd: no rsync -z row".into());
    }
    let names: Vec<String> = [SetKind::Small, SetKind::Large, SetKind::Text]
        .into_iter()
        .map(|kind| DataSet::name_for(kind, plan.sizes))
        .collect();
    let names: Vec<&str> = names.iter().map(String::as_str).collect();
    let mut bench = Bench {
        plan,
        ferry: Ferry::setup(&plan.ferry_bin, &work.join("ferry"), &names)?,
        rsync: RsyncDaemon::setup(&work.join("rsync"))?,
        sshd,
        zstd,
        work: work.clone(),
        scratch,
        report,
    };
    if plan.wants_set("small-") {
        let set = DataSet::prepare(&plan.data_dir, SetKind::Small, plan.sizes)?;
        bench.small(&set)?;
    }
    if plan.wants_set("large-") {
        let set = DataSet::prepare(&plan.data_dir, SetKind::Large, plan.sizes)?;
        bench.large(&set)?;
    }
    if plan.wants_set("text-") {
        let set = DataSet::prepare(&plan.data_dir, SetKind::Text, plan.sizes)?;
        bench.text(&set)?;
    }
    let peers = super::peers::PeerBench {
        reps: plan.reps,
        scenarios: &plan.scenarios,
        sizes: plan.sizes,
        data_dir: &plan.data_dir,
        ferry_bin: &plan.ferry_bin,
        ferry: &bench.ferry,
        sshd: bench.sshd.as_ref(),
        work: &work.join("peers"),
        scratch: &bench.scratch,
    };
    super::peers::run(&peers, &mut bench.report)?;
    let mut report = bench.report;
    // Issues 15, 17, 18 and 19: each with its own Ferry identities and stores.
    let more = Extra {
        plan,
        work: &work,
        scratch: &work.join("scratch"),
    };
    if plan.wants_set("store-") {
        store::run(&more, &mut report)?;
    }
    if plan.wants_set("exclude-") {
        exclude::run(&more, &mut report)?;
    }
    if plan.wants_set("watch-") {
        watch::run(&more, &mut report)?;
    }
    if plan.wants_set("sealed-") {
        sealed::run(&more, &mut report)?;
    }
    if plan.wants(huge::SCENARIO) {
        huge::run(&more, &mut report)?;
    }
    if s3::SCENARIOS.iter().any(|s| plan.wants(s)) {
        s3::run(&more, &mut report)?;
    }
    remove_tree(&work)?;
    Ok(report)
}

/// A reference tool's run: a closure so the order can alternate.
pub type Job<'b> = Box<dyn FnOnce() -> anyhow::Result<Sample> + 'b>;

/// What the scenarios of issues 15, 17, 18 and 19 (in their own modules) share.
pub struct Extra<'a> {
    /// The plan.
    pub plan: &'a Plan,
    /// The harness's working directory (removed at the end).
    pub work: &'a Path,
    /// Where `time` and logs go.
    pub scratch: &'a Path,
}

/// Runs Ferry and `others` in an order that alternates with `rep` (Ferry
/// first on even repetitions); returns Ferry's sample and the others' in
/// the order given.
pub fn alternate(
    reps: usize,
    rep: usize,
    label: &str,
    ferry: Job<'_>,
    others: Vec<(&str, Job<'_>)>,
) -> anyhow::Result<(Sample, Vec<Sample>)> {
    let run = |tool: &str, job: Job<'_>| -> anyhow::Result<Sample> {
        let sample = job().with_context(|| format!("{label}, {tool}, repetition {}", rep + 1))?;
        eprintln!(
            "bench: {label} rep {}/{reps}: {tool} {:.2} s",
            rep + 1,
            sample.wall_s
        );
        Ok(sample)
    };
    if rep.is_multiple_of(2) {
        let f = run("ferry", ferry)?;
        let mut o = Vec::new();
        for (tool, job) in others {
            o.push(run(tool, job)?);
        }
        Ok((f, o))
    } else {
        let mut o = Vec::new();
        for (tool, job) in others {
            o.push(run(tool, job)?);
        }
        Ok((run("ferry", ferry)?, o))
    }
}

impl Bench<'_> {
    fn rsync_dst(&self, name: &str) -> PathBuf {
        self.rsync.root.join(name)
    }

    /// Runs Ferry and the `others` in alternating order; returns Ferry's
    /// sample and the others' in the order given.
    fn alternate(
        &self,
        rep: usize,
        label: &str,
        ferry: Job<'_>,
        others: Vec<(&str, Job<'_>)>,
    ) -> anyhow::Result<(Sample, Vec<Sample>)> {
        alternate(self.plan.reps, rep, label, ferry, others)
    }

    /// Ferry against the rsync daemon (with `rsync_args`) on `set` as it is
    /// now, both copies checked (metadata too) afterwards.
    fn pair(
        &mut self,
        rep: usize,
        scenario: &str,
        set: &DataSet,
        rsync_args: &[&str],
        bytes: u64,
    ) -> anyhow::Result<()> {
        let (ferry, mut others) = self.alternate(
            rep,
            scenario,
            Box::new(|| self.ferry.run(&set.name, &set.root, &self.scratch)),
            vec![(
                RSYNC,
                Box::new(|| {
                    self.rsync
                        .run(&set.name, &set.root, rsync_args, &self.scratch)
                }),
            )],
        )?;
        self.check_mirrors(scenario, set)?;
        if self.plan.wants(scenario) {
            let rsync = others.remove(0);
            self.report.add(scenario, RSYNC, bytes, Some(ferry), rsync);
        }
        Ok(())
    }

    fn check_mirrors(&self, scenario: &str, set: &DataSet) -> anyhow::Result<()> {
        ferry_tests::tree::assert_same(&set.root, &self.ferry.mirror(&set.name))
            .with_context(|| format!("{scenario}: Ferry's mirror differs from the source"))?;
        ferry_tests::tree::assert_same(&set.root, &self.rsync_dst(&set.name))
            .with_context(|| format!("{scenario}: rsync's copy differs from the source"))
    }

    fn fresh(&self, set: &DataSet) -> anyhow::Result<()> {
        self.ferry.reset(&set.name)?;
        remove_tree(&self.rsync_dst(&set.name))
    }

    /// A first sync of `set` into empty destinations: Ferry against the
    /// rsync daemon and, on the small and large sets when the scenario is
    /// wanted, `rsync --fsync`. With `hot` the source is read first and the
    /// page cache kept (the `-hot` variants); otherwise it is dropped before
    /// each run, as everywhere.
    fn first_sync(
        &mut self,
        rep: usize,
        scenario: &str,
        set: &DataSet,
        hot: bool,
    ) -> anyhow::Result<()> {
        self.fresh(set)?;
        let fsync = set.kind != SetKind::Text && self.plan.wants(scenario);
        let fsync_name = format!("{}-fsync", set.name);
        remove_tree(&self.rsync_dst(&fsync_name))?;
        let keep = if hot {
            process::warm_page_cache(&set.root)?;
            Some(process::KeepPageCache::start())
        } else {
            None
        };
        let mut others: Vec<(&str, Job<'_>)> = vec![(
            RSYNC,
            Box::new(|| self.rsync.run(&set.name, &set.root, &[], &self.scratch)),
        )];
        if fsync {
            others.push((
                RSYNC_FSYNC,
                Box::new(|| {
                    self.rsync
                        .run(&fsync_name, &set.root, &["--fsync"], &self.scratch)
                }),
            ));
        }
        let (ferry, mut results) = self.alternate(
            rep,
            scenario,
            Box::new(|| self.ferry.run(&set.name, &set.root, &self.scratch)),
            others,
        )?;
        drop(keep);
        self.check_mirrors(scenario, set)?;
        let rsync = results.remove(0);
        if self.plan.wants(scenario) {
            self.report
                .add(scenario, RSYNC, set.bytes, Some(ferry.clone()), rsync);
        }
        if fsync {
            ferry_tests::tree::assert_same(&set.root, &self.rsync_dst(&fsync_name))
                .with_context(|| format!("{scenario}: rsync --fsync's copy differs"))?;
            let synced = results.remove(0);
            self.report
                .add(scenario, RSYNC_FSYNC, set.bytes, Some(ferry), synced);
            remove_tree(&self.rsync_dst(&fsync_name))?;
        }
        Ok(())
    }

    fn small(&mut self, set: &DataSet) -> anyhow::Result<()> {
        let cold = ["small-first", "small-nochange", "small-modify"];
        for rep in 0..self.plan.reps {
            if self.plan.wants("small-first-hot") {
                self.first_sync(rep, "small-first-hot", set, true)?;
            }
            if !cold.iter().any(|s| self.plan.wants(s)) {
                continue;
            }
            self.first_sync(rep, "small-first", set, false)?;
            if self.plan.wants("small-nochange") {
                self.pair(rep, "small-nochange", set, &["--delete"], 0)?;
            }
            if self.plan.wants("small-modify") {
                let picked = set.one_percent();
                set.begin_edit()?;
                for &i in &picked {
                    set.rewrite_small(i)?;
                }
                let bytes = picked
                    .iter()
                    .map(|&i| std::fs::metadata(set.root.join(set.rel(i))).map(|m| m.len()))
                    .sum::<std::io::Result<u64>>()?;
                self.pair(rep, "small-modify", set, &["--delete"], bytes)?;
                for &i in &picked {
                    set.restore_file(i)?;
                }
                set.end_edit()?;
            }
        }
        self.fresh(set)
    }

    fn large(&mut self, set: &DataSet) -> anyhow::Result<()> {
        for rep in 0..self.plan.reps {
            if self.plan.wants("large-first-hot") {
                self.first_sync(rep, "large-first-hot", set, true)?;
            }
            if !ALL
                .iter()
                .any(|s| s.starts_with("large-") && *s != "large-first-hot" && self.plan.wants(s))
            {
                continue;
            }
            self.fresh(set)?;
            let fsync = self.plan.wants("large-first");
            let fsync_name = format!("{}-fsync", set.name);
            remove_tree(&self.rsync_dst(&fsync_name))?;
            let cp_dst = self.work.join("cp").join(&set.name);
            let ssh_dst = self.work.join("ssh-dst").join(&set.name);
            remove_tree(&cp_dst)?;
            remove_tree(&ssh_dst)?;
            if let Some(parent) = ssh_dst.parent() {
                std::fs::create_dir_all(parent)?;
            }
            if let Some(parent) = cp_dst.parent() {
                std::fs::create_dir_all(parent)?;
            }
            let mut others: Vec<(&str, Job<'_>)> = vec![(
                RSYNC,
                Box::new(|| self.rsync.run(&set.name, &set.root, &[], &self.scratch)),
            )];
            if fsync {
                others.push((
                    RSYNC_FSYNC,
                    Box::new(|| {
                        self.rsync
                            .run(&fsync_name, &set.root, &["--fsync"], &self.scratch)
                    }),
                ));
            }
            let want_cp = self.plan.wants("large-cp");
            if want_cp {
                others.push((
                    "cp -r",
                    Box::new(|| tools::cp(&set.root, &cp_dst, &self.scratch)),
                ));
            }
            let want_ssh = self.plan.wants("large-ssh") && self.sshd.is_some();
            if let Some(sshd) = self.sshd.as_ref().filter(|_| want_ssh) {
                others.push((
                    "rsync over ssh",
                    Box::new(|| sshd.run(&set.root, &ssh_dst, &self.scratch)),
                ));
            }
            let (ferry, mut results) = self.alternate(
                rep,
                "large-first",
                Box::new(|| self.ferry.run(&set.name, &set.root, &self.scratch)),
                others,
            )?;
            self.check_mirrors("large-first", set)?;
            let rsync = results.remove(0);
            if self.plan.wants("large-first") {
                self.report
                    .add("large-first", RSYNC, set.bytes, Some(ferry.clone()), rsync);
            }
            if fsync {
                ferry_tests::tree::assert_same(&set.root, &self.rsync_dst(&fsync_name))
                    .context("large-first: rsync --fsync's copy differs")?;
                let synced = results.remove(0);
                self.report.add(
                    "large-first",
                    RSYNC_FSYNC,
                    set.bytes,
                    Some(ferry.clone()),
                    synced,
                );
                remove_tree(&self.rsync_dst(&fsync_name))?;
            }
            if want_cp {
                verify::same_content(&set.root, &cp_dst)
                    .context("large-cp: cp -r's copy differs")?;
                let cp = results.remove(0);
                self.report
                    .add("large-cp", "cp -r", set.bytes, Some(ferry.clone()), cp);
                remove_tree(&cp_dst)?;
            }
            if want_ssh {
                ferry_tests::tree::assert_same(&set.root, &ssh_dst)
                    .context("large-ssh: rsync over ssh's copy differs")?;
                let ssh = results.remove(0);
                self.report
                    .add("large-ssh", "rsync over ssh", set.bytes, Some(ferry), ssh);
                remove_tree(&ssh_dst)?;
            }
            self.large_edits(rep, set)?;
        }
        self.fresh(set)
    }

    /// The delta scenarios, one after the other on the same set (each on its
    /// own file when the set has four; with fewer, on top of each other, the
    /// rename last); the edited files are regenerated afterwards.
    fn large_edits(&mut self, rep: usize, set: &DataSet) -> anyhow::Result<()> {
        let n = set.files;
        let edits: [(&str, usize); 4] = [
            ("large-append", 0),
            ("large-insert", 1 % n),
            ("large-overwrite", 3 % n),
            ("large-rename", 2 % n),
        ];
        if !edits.iter().any(|(s, _)| self.plan.wants(s)) {
            return Ok(());
        }
        set.begin_edit()?;
        let mut touched = Vec::new();
        for (scenario, i) in edits {
            if !self.plan.wants(scenario) {
                continue;
            }
            let bytes = match scenario {
                "large-append" => {
                    set.append_byte(i)?;
                    1
                }
                "large-insert" => {
                    set.insert_byte(i)?;
                    1
                }
                "large-overwrite" => {
                    set.overwrite_middle(i)?;
                    OVERWRITE_LEN.min(set.file_size)
                }
                "large-rename" => {
                    set.rename_file(i)?;
                    0
                }
                other => bail!("unknown edit {other}"),
            };
            touched.push(i);
            self.pair(rep, scenario, set, &["--delete"], bytes)?;
        }
        touched.dedup();
        for i in touched {
            set.restore_file(i)?;
        }
        set.end_edit()
    }

    fn text(&mut self, set: &DataSet) -> anyhow::Result<()> {
        let z_name = format!("{}-z", set.name);
        for rep in 0..self.plan.reps {
            if self.plan.wants("text-first-hot") {
                self.first_sync(rep, "text-first-hot", set, true)?;
            }
            if !self.plan.wants("text-first") {
                continue;
            }
            self.fresh(set)?;
            remove_tree(&self.rsync_dst(&z_name))?;
            let mut others: Vec<(&str, Job<'_>)> = vec![(
                RSYNC,
                Box::new(|| self.rsync.run(&set.name, &set.root, &[], &self.scratch)),
            )];
            if self.zstd {
                others.push((
                    RSYNC_Z,
                    Box::new(|| {
                        self.rsync.run(
                            &z_name,
                            &set.root,
                            &["-z", "--compress-choice=zstd"],
                            &self.scratch,
                        )
                    }),
                ));
            }
            let (ferry, mut results) = self.alternate(
                rep,
                "text-first",
                Box::new(|| self.ferry.run(&set.name, &set.root, &self.scratch)),
                others,
            )?;
            self.check_mirrors("text-first", set)?;
            let rsync = results.remove(0);
            self.report
                .add("text-first", RSYNC, set.bytes, Some(ferry.clone()), rsync);
            if self.zstd {
                ferry_tests::tree::assert_same(&set.root, &self.rsync_dst(&z_name))
                    .context("text-first: rsync -z's copy differs")?;
                let z = results.remove(0);
                self.report
                    .add("text-first", RSYNC_Z, set.bytes, Some(ferry), z);
            }
        }
        self.fresh(set)?;
        remove_tree(&self.rsync_dst(&z_name))
    }
}

/// Checks `--scenarios` names.
pub fn parse_scenarios(list: &str) -> anyhow::Result<Vec<String>> {
    let mut out = Vec::new();
    for name in list.split(',').map(str::trim).filter(|s| !s.is_empty()) {
        if !ALL.contains(&name) {
            bail!("unknown scenario {name:?}; known: {}", ALL.join(","));
        }
        out.push(name.to_string());
    }
    if out.is_empty() {
        bail!("no scenario given; known: {}", ALL.join(","));
    }
    Ok(out)
}

/// The default data directory: `<target dir>/bench-data`.
pub fn default_data_dir(target: &Path) -> PathBuf {
    target.join("bench-data")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn scenario_names_are_checked() -> anyhow::Result<()> {
        assert_eq!(
            parse_scenarios("small-first, large-ssh")?,
            ["small-first", "large-ssh"]
        );
        assert!(parse_scenarios("small-first,nope").is_err());
        assert!(parse_scenarios(" , ").is_err());
        Ok(())
    }
}
