//! `s3-small`, `s3-large` (issue 19): Ferry to a receiver that keeps its
//! bytes in a bucket (`ferry receive --store s3://BUCKET/PREFIX`) against
//! `restic -r s3:http://127.0.0.1:PORT/BUCKET/PREFIX backup`, both into one
//! local `s3s-fs` started for the group; first sync then a no-change one
//! (rows `s3-<set>-first`, `s3-<set>-nochange`), alternating in each
//! repetition. Each tool and set gets a fresh prefix every repetition.
//!
//! Every copy is checked: Ferry's by `ferry restore --store s3://…` from
//! the bucket alone (the newest catalog copy, `AWS_ENDPOINT_URL` set),
//! restic's by `restic restore`; both compared with the source, metadata
//! too. The receiver logs its bucket use after each run (packs put, their
//! bytes, catalog copies, ranged GETs); a fresh receiver per run makes its
//! last line that run's, and the PUT target is read from it. Skipped with a
//! note when `s3s-fs` or restic is not installed.

use std::ffi::{OsStr, OsString};
use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::Duration;

use anyhow::{bail, Context};
use ferry_tests::s3::{S3Server, S3Target};
use serde::Serialize;

use super::backup_tools::{self, check_files, parse_restic_summary, restored, untimed};
use super::data::{DataSet, SetKind};
use super::goals;
use super::process::{self, drop_caches, Server};
use super::report::{median, Report, Sample};
use super::scenarios::{alternate, Extra, Job};
use super::tools::{self, remove_tree, send_summary, Ferry};

/// The group's scenarios, as `--scenarios` names them.
pub const SCENARIOS: &[&str] = &["s3-small", "s3-large"];
/// The reference of the `s3-*` rows.
pub const RESTIC_S3: &str = "restic s3";
/// The message of the receiver's log line with its bucket use.
const BUCKET_USE: &str = "bucket use since the receiver started";
/// How long a receiver may take to open the bucket and listen.
const READY_TIMEOUT: Duration = Duration::from_secs(30);

/// What the receiver asked of the bucket, from its last log line.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize)]
pub struct BucketUse {
    /// Packs put.
    pub packs_put: u64,
    /// Bytes of those packs.
    pub pack_bytes_put: u64,
    /// Catalog copies put.
    pub catalog_copies: u64,
    /// Ranged GETs (delta bases read back).
    pub ranged_gets: u64,
}

impl BucketUse {
    /// PUT requests counted for the target: packs and catalog copies (the
    /// lease's PUTs are not counted, see `goals::S3_PUTS_PER_1000_MAX`).
    pub fn puts(&self) -> u64 {
        self.packs_put + self.catalog_copies
    }
}

/// Reads the last "bucket use since the receiver started" line of a
/// receiver's log (tracing's text format: `key=value` fields).
pub fn parse_bucket_use(log: &str) -> anyhow::Result<BucketUse> {
    let line = log
        .lines()
        .rev()
        .find(|l| l.contains(BUCKET_USE))
        .with_context(|| format!("no {BUCKET_USE:?} line in the receiver's log"))?;
    let field = |name: &str| -> anyhow::Result<u64> {
        let prefix = format!("{name}=");
        line.split_whitespace()
            .find_map(|t| t.strip_prefix(prefix.as_str()))
            .with_context(|| format!("no {name} in {line:?}"))?
            .parse()
            .with_context(|| format!("{name} in {line:?}"))
    };
    Ok(BucketUse {
        packs_put: field("packs_put")?,
        pack_bytes_put: field("pack_bytes_put")?,
        catalog_copies: field("catalog_copies")?,
        ranged_gets: field("ranged_gets")?,
    })
}

/// `KEY=VALUE` arguments of `env` for a client of `server`.
fn key_env(server: &S3Server) -> Vec<OsString> {
    vec![
        format!("AWS_ACCESS_KEY_ID={}", server.access_key()).into(),
        format!("AWS_SECRET_ACCESS_KEY={}", server.secret_key()).into(),
    ]
}

/// The `s3://BUCKET/PREFIX` of `prefix` in `server`'s bucket.
fn bucket_url(server: &S3Server, prefix: &str) -> String {
    format!("s3://{}/{prefix}", server.bucket())
}

/// Ferry's sender (one identity per set, from [`Ferry`]) and a receiver on
/// the bucket, its state under the group's work directory.
struct FerryOnS3<'a> {
    ferry: &'a Ferry,
    server: &'a S3Server,
    dir: &'a Path,
}

impl FerryOnS3<'_> {
    fn receiver_state(&self, set: &str) -> PathBuf {
        self.dir.join(set).join("rstate")
    }

    /// Forgets everything of `set`: a sender state with only its identity,
    /// no receiver state (the next run is a first one into `prefix`).
    fn reset(&self, set: &str) -> anyhow::Result<()> {
        self.ferry.reset(set)?;
        remove_tree(&self.receiver_state(set))
    }

    /// One measured run: a fresh receiver on `prefix`, caches dropped,
    /// `ferry send --once --json` of `source`, receiver stopped; the
    /// sample and the receiver's bucket use in the run.
    fn run(
        &self,
        set: &str,
        prefix: &str,
        source: &Path,
        scratch: &Path,
    ) -> anyhow::Result<(Sample, BucketUse)> {
        let sstate = self.ferry.sender_state(set);
        let id = tools::output(
            self.ferry.bin(),
            &["id".as_ref(), "--state".as_ref(), sstate.as_os_str()],
        )?;
        let port = process::free_udp_port()?.to_string();
        let url = bucket_url(self.server, prefix);
        let endpoint = self.server.endpoint();
        let rstate = self.receiver_state(set);
        let mut args = key_env(self.server);
        args.push("FERRY_LOG=info".into());
        args.push(self.ferry.bin().into());
        for a in [
            "receive",
            "--host",
            "127.0.0.1",
            "--port",
            &port,
            "--store",
            &url,
            "--s3-endpoint",
            &endpoint,
            "--allow",
            id.trim(),
            "--state",
        ] {
            args.push(a.into());
        }
        args.push(rstate.into());
        let args: Vec<&OsStr> = args.iter().map(OsString::as_os_str).collect();
        let log = scratch.join("ferry-receive-s3.log");
        // `env` sets the keys and execs the receiver: the usage is its own.
        let mut receiver = Server::spawn(
            "ferry receive --store s3://",
            "env",
            &args,
            &scratch.join("ferry-receive-s3.time"),
            &log,
        )?;
        let port_n: u16 = port.parse()?;
        receiver.wait_ready(READY_TIMEOUT, |_| process::udp_bound(port_n))?;
        drop_caches();
        let send: Vec<&OsStr> = vec![
            "send".as_ref(),
            "--host".as_ref(),
            "127.0.0.1".as_ref(),
            "--port".as_ref(),
            port.as_ref(),
            "--source".as_ref(),
            source.as_os_str(),
            "--state".as_ref(),
            sstate.as_os_str(),
            "--name".as_ref(),
            "bench".as_ref(),
            "--folder".as_ref(),
            set.as_ref(),
            "--once".as_ref(),
            "--json".as_ref(),
        ];
        let done =
            process::run_timed(self.ferry.bin(), &send, &scratch.join("ferry-send-s3.time"))?;
        let server = receiver.stop()?;
        let summary = send_summary(set, &done)?;
        let text =
            std::fs::read_to_string(&log).with_context(|| format!("reading {}", log.display()))?;
        let used = parse_bucket_use(&text)?;
        let sample = Sample {
            wall_s: done.wall_s,
            wire_total: summary["bytes_on_wire"].as_u64(),
            sent: None,
            received: None,
            client: Some(done.usage),
            server: Some(server),
        };
        Ok((sample, used))
    }

    /// Restores `set` from the bucket alone (`ferry restore --store
    /// s3://…`, untimed) and compares it with `source`.
    fn verify(&self, set: &str, prefix: &str, source: &Path, scratch: &Path) -> anyhow::Result<()> {
        let target = scratch.join("ferry-s3-restore");
        remove_tree(&target)?;
        let mut restore = Command::new(self.ferry.bin());
        restore
            .args(["restore", "--store", &bucket_url(self.server, prefix)])
            .args(["--name", "bench", "--folder", set, "--to"])
            .arg(&target)
            .env("AWS_ENDPOINT_URL", self.server.endpoint())
            .env("AWS_ACCESS_KEY_ID", self.server.access_key())
            .env("AWS_SECRET_ACCESS_KEY", self.server.secret_key());
        untimed(restore, "ferry restore --store s3://")?;
        ferry_tests::tree::assert_same(source, &target)
            .context("Ferry's restore from the bucket differs from the source")?;
        remove_tree(&target)
    }
}

/// restic with its repositories in the bucket, a fixed password file (as
/// the other restic rows) and a cache under the group's work directory.
struct ResticOnS3<'a> {
    server: &'a S3Server,
    password: PathBuf,
    cache: PathBuf,
}

impl ResticOnS3<'_> {
    fn repo(&self, prefix: &str) -> String {
        format!(
            "s3:{}/{}/{prefix}",
            self.server.endpoint(),
            self.server.bucket()
        )
    }

    /// restic's arguments for the repository at `prefix`.
    fn args(&self, prefix: &str) -> Vec<OsString> {
        vec![
            "--repo".into(),
            self.repo(prefix).into(),
            "--password-file".into(),
            self.password.clone().into(),
            "--cache-dir".into(),
            self.cache.clone().into(),
            "--quiet".into(),
        ]
    }

    fn untimed(&self, prefix: &str) -> Command {
        let mut cmd = Command::new("restic");
        cmd.args(self.args(prefix))
            .env("AWS_ACCESS_KEY_ID", self.server.access_key())
            .env("AWS_SECRET_ACCESS_KEY", self.server.secret_key());
        cmd
    }

    /// A new repository at `prefix` and an empty cache: the next backup
    /// is a first one.
    fn reset(&self, prefix: &str) -> anyhow::Result<()> {
        remove_tree(&self.cache)?;
        let mut init = self.untimed(prefix);
        init.arg("init");
        untimed(init, "restic init").map(|_| ())
    }

    /// One measured `restic backup` of `source` (caches dropped first),
    /// checked, then restored and compared with the source.
    fn run(
        &self,
        prefix: &str,
        source: &Path,
        files: usize,
        scratch: &Path,
    ) -> anyhow::Result<Sample> {
        let mut args = key_env(self.server);
        args.push("restic".into());
        args.extend(self.args(prefix));
        args.extend(["backup".into(), "--json".into(), source.into()]);
        let args: Vec<&OsStr> = args.iter().map(OsString::as_os_str).collect();
        drop_caches();
        // `env` sets the keys and execs restic: the time measured is restic's.
        let done = process::run_timed("env", &args, &scratch.join("restic-s3.time"))?;
        if !done.status.success() {
            bail!(
                "restic backup failed ({}): {}",
                done.status,
                done.stderr.trim()
            );
        }
        check_files("restic", parse_restic_summary(&done.stdout)?.files, files)?;
        let target = scratch.join("restic-s3-restore");
        remove_tree(&target)?;
        let mut restore = self.untimed(prefix);
        restore.args(["restore", "latest", "--target"]).arg(&target);
        untimed(restore, "restic restore")?;
        ferry_tests::tree::assert_same(source, &restored(&target, source))
            .context("restic's restore from the bucket differs from the source")?;
        remove_tree(&target)?;
        Ok(Sample {
            wall_s: done.wall_s,
            client: Some(done.usage),
            ..Sample::default()
        })
    }
}

/// Why the group cannot run here, if it cannot.
fn missing_tools() -> Option<&'static str> {
    if !backup_tools::installed("s3s-fs", "--version") {
        return Some("s3s-fs not found (cargo install s3s-fs@0.14.1 --features binary)");
    }
    if !backup_tools::installed("restic", "version") {
        return Some("restic not found (apt-get install restic)");
    }
    None
}

/// Measures the `s3-*` scenarios of the plan against one `s3s-fs`.
pub fn run(extra: &Extra<'_>, report: &mut Report) -> anyhow::Result<()> {
    let plan = extra.plan;
    let kinds: Vec<SetKind> = [("s3-small", SetKind::Small), ("s3-large", SetKind::Large)]
        .into_iter()
        .filter(|(s, _)| plan.wants(s))
        .map(|(_, k)| k)
        .collect();
    if kinds.is_empty() {
        return Ok(());
    }
    if let Some(why) = missing_tools() {
        eprintln!("bench: the s3 group is skipped: {why}");
        report.notes.push(format!("s3 rows skipped: {why}"));
        return Ok(());
    }
    let server = S3Server::start().context("starting s3s-fs for the s3 group")?;
    let dir = extra.work.join("s3");
    remove_tree(&dir)?;
    std::fs::create_dir_all(&dir)?;
    let password = dir.join("restic-password");
    std::fs::write(&password, "ferry-bench\n")?;
    let restic = ResticOnS3 {
        server: &server,
        password,
        cache: dir.join("restic-cache"),
    };
    let sets = kinds
        .into_iter()
        .map(|kind| DataSet::prepare(&plan.data_dir, kind, plan.sizes))
        .collect::<anyhow::Result<Vec<_>>>()?;
    let names: Vec<&str> = sets.iter().map(|s| s.name.as_str()).collect();
    let ferry = Ferry::setup(&plan.ferry_bin, &dir.join("ferry"), &names)?;
    let ferry = FerryOnS3 {
        ferry: &ferry,
        server: &server,
        dir: &dir.join("ferry"),
    };
    let mut uses: Vec<(String, BucketUse)> = Vec::new();
    for set in &sets {
        measure_set(extra, set, &ferry, &restic, &server, report, &mut uses)?;
    }
    add_bucket_use(report, &sets, &uses);
    remove_tree(&dir)
}

/// The rows of one set: per repetition fresh prefixes, then the first
/// sync and the no-change one, each alternating with restic.
fn measure_set(
    extra: &Extra<'_>,
    set: &DataSet,
    ferry: &FerryOnS3<'_>,
    restic: &ResticOnS3<'_>,
    server: &S3Server,
    report: &mut Report,
    uses: &mut Vec<(String, BucketUse)>,
) -> anyhow::Result<()> {
    let (plan, scratch) = (extra.plan, extra.scratch);
    let short = short_of(set.kind);
    for rep in 0..plan.reps {
        let ferry_prefix = format!("ferry-{}-{rep}", set.name);
        let restic_prefix = format!("restic-{}-{rep}", set.name);
        ferry.reset(&set.name)?;
        restic.reset(&restic_prefix)?;
        for (phase, bytes) in [("first", set.bytes), ("nochange", 0)] {
            let row = format!("s3-{short}-{phase}");
            let used = std::cell::Cell::new(BucketUse::default());
            let (sample, mut others) = alternate(
                plan.reps,
                rep,
                &row,
                Box::new(|| {
                    let (sample, u) = ferry.run(&set.name, &ferry_prefix, &set.root, scratch)?;
                    used.set(u);
                    Ok(sample)
                }),
                vec![(
                    RESTIC_S3,
                    Box::new(|| restic.run(&restic_prefix, &set.root, set.files, scratch))
                        as Job<'_>,
                )],
            )?;
            ferry
                .verify(&set.name, &ferry_prefix, &set.root, scratch)
                .with_context(|| format!("{row}, repetition {}", rep + 1))?;
            uses.push((row.clone(), used.get()));
            report.add(&row, RESTIC_S3, bytes, Some(sample), others.remove(0));
        }
        // Each repetition's objects go: the disk holds one copy per tool.
        for prefix in [&ferry_prefix, &restic_prefix] {
            remove_tree(&server.root().join(server.bucket()).join(prefix))?;
        }
    }
    ferry.reset(&set.name)
}

/// Median PUTs per row as notes and in the JSON, and the PUT target of the
/// small set's first sync (per 1,000 of its files) as a check.
fn add_bucket_use(report: &mut Report, sets: &[DataSet], uses: &[(String, BucketUse)]) {
    // Each row once, in the order first measured (repetitions interleave).
    let mut rows: Vec<&str> = Vec::new();
    for (row, _) in uses {
        if !rows.contains(&row.as_str()) {
            rows.push(row);
        }
    }
    let mut details = serde_json::Map::new();
    for row in rows {
        let runs: Vec<BucketUse> = uses
            .iter()
            .filter(|(r, _)| r == row)
            .map(|(_, u)| *u)
            .collect();
        let med = |f: fn(&BucketUse) -> u64| median(runs.iter().map(|u| f(u) as f64).collect());
        let puts = med(BucketUse::puts).unwrap_or(0.0);
        let files = sets
            .iter()
            .find(|s| row.starts_with(&format!("s3-{}", short_of(s.kind))))
            .map_or(0, |s| s.files);
        report.notes.push(format!(
            "{row}: the receiver's PUTs (medians): {puts:.0} = {:.0} packs ({:.1} MB) + {:.0} catalog copy(ies), and {:.0} ranged GETs, for {files} files",
            med(|u| u.packs_put).unwrap_or(0.0),
            med(|u| u.pack_bytes_put).unwrap_or(0.0) / 1e6,
            med(|u| u.catalog_copies).unwrap_or(0.0),
            med(|u| u.ranged_gets).unwrap_or(0.0),
        ));
        if row == "s3-small-first" && files > 0 {
            report
                .checks
                .push(goals::s3_puts(puts * 1000.0 / files as f64, files));
        }
        details.insert(row.to_string(), serde_json::json!(runs));
    }
    report
        .details
        .insert("s3".into(), serde_json::Value::Object(details));
}

fn short_of(kind: SetKind) -> &'static str {
    match kind {
        SetKind::Small => "small",
        SetKind::Large => "large",
        SetKind::Text => "text",
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn interleaved_repetitions_give_one_note_and_one_put_check_a_row() {
        let set = DataSet {
            kind: SetKind::Small,
            name: "small-2000".into(),
            root: PathBuf::from("/nowhere"),
            files: 2_000,
            file_size: 0,
            bytes: 1,
        };
        let run = |packs_put| BucketUse {
            packs_put,
            pack_bytes_put: 1_000_000,
            catalog_copies: 1,
            ranged_gets: 0,
        };
        let uses: Vec<(String, BucketUse)> = [(20, 0), (30, 0), (25, 0)]
            .into_iter()
            .flat_map(|(first, nochange)| {
                [
                    ("s3-small-first".to_string(), run(first)),
                    ("s3-small-nochange".to_string(), run(nochange)),
                ]
            })
            .collect();
        let mut report = Report::default();
        add_bucket_use(&mut report, &[set], &uses);
        assert_eq!(report.notes.len(), 2, "{:?}", report.notes);
        assert!(
            report.notes[0]
                .starts_with("s3-small-first: the receiver's PUTs (medians): 26 = 25 packs"),
            "{:?}",
            report.notes
        );
        assert_eq!(report.checks.len(), 1);
        assert_eq!(report.checks[0].ferry, 13.0, "26 PUTs for 2,000 files");
        assert!(report.checks[0].met);
        assert_eq!(report.details["s3"]["s3-small-first"][1]["packs_put"], 30);
    }

    #[test]
    fn reads_the_receivers_last_bucket_use_line() -> anyhow::Result<()> {
        let log = "2026-11-30T22:00:00.000000Z  INFO ferry_agent::receiver: receiver listening addr=127.0.0.1:4000\n\
            2026-11-30T22:00:01.000000Z  INFO ferry_agent::store::packed: bucket use since the receiver started catalog_copy=ferry/catalog/1.db.zst catalog_bytes=5000 packs_put=3 pack_bytes_put=45000000 catalog_copies=1 ranged_gets=0\n\
            2026-11-30T22:00:02.000000Z  INFO ferry_agent::store::packed: bucket use since the receiver started catalog_copy=ferry/catalog/2.db.zst catalog_bytes=5100 packs_put=4 pack_bytes_put=46000000 catalog_copies=2 ranged_gets=7\n\
            2026-11-30T22:00:03.000000Z  INFO ferry_agent::receiver: stopping\n";
        let used = parse_bucket_use(log)?;
        assert_eq!(
            used,
            BucketUse {
                packs_put: 4,
                pack_bytes_put: 46_000_000,
                catalog_copies: 2,
                ranged_gets: 7
            }
        );
        assert_eq!(used.puts(), 6);
        assert!(parse_bucket_use("INFO receiver listening\n").is_err());
        let cut = "INFO x: bucket use since the receiver started packs_put=3 catalog_copies=1\n";
        assert!(parse_bucket_use(cut).is_err(), "a missing field fails");
        Ok(())
    }
}
