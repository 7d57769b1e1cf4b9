//! `cargo run --release -p ferry-tests --bin bench -- [--quick] [--json FILE]
//! [--reps N] [--scenarios a,b,..] [--data DIR] [--ferry-bin PATH]`
//!
//! Measures Ferry against rsync (daemon, over ssh), `cp -r`, restic, borg
//! and Syncthing on loopback, a receiver on S3 against restic on S3, and encrypted folders against plain ones,
//! on deterministic data sets, and prints one table of medians. It asserts
//! no timing; it fails only when a tool fails or a copy differs from its
//! source. See README.md, "Performance".

#[path = "../bench/mod.rs"]
mod bench;

use std::path::{Path, PathBuf};
use std::process::ExitCode;

use anyhow::{bail, Context};
use clap::Parser;

use bench::data::Sizes;
use bench::scenarios::{self, Plan};

/// Ferry against rsync on loopback: a table of medians.
#[derive(Debug, Parser)]
#[command(name = "bench")]
struct Args {
    /// Small data sets (2,000 small files, 1 × 64 MiB, 200 text files) and
    /// one repetition, without backup-large, backup-text, syncthing-large and
    /// huge unless named in --scenarios: a few minutes; for CI.
    #[arg(long)]
    quick: bool,
    /// Also write the table as JSON to this file.
    #[arg(long, value_name = "FILE")]
    json: Option<PathBuf>,
    /// Repetitions of each measurement; the table shows medians [default: 3,
    /// 1 with --quick].
    #[arg(long, value_name = "N")]
    reps: Option<usize>,
    /// Comma-separated scenarios to measure [default: all]: small-first,
    /// small-nochange, small-modify, large-first, large-cp, large-ssh,
    /// large-append, large-insert, large-rename, large-overwrite, text-first,
    /// small-first-hot, large-first-hot, text-first-hot, store-first,
    /// store-nochange, exclude-first, exclude-nochange, watch-latency,
    /// watch-idle,
    /// backup-small, backup-large, backup-text (restic, borg),
    /// syncthing-small, syncthing-large, sealed-small-first,
    /// sealed-small-nochange, sealed-large-first, sealed-large-insert,
    /// sealed-large-rename, sealed-large-overwrite (an encrypted folder
    /// against the same sent plain), huge (1,000,000 tiny files against
    /// restic; not in --quick unless named), s3-small, s3-large (a receiver
    /// on a bucket against restic into it, one local s3s-fs).
    #[arg(long, value_name = "LIST")]
    scenarios: Option<String>,
    /// Where the data sets are generated and kept between runs [default:
    /// <target dir>/bench-data].
    #[arg(long, value_name = "DIR")]
    data: Option<PathBuf>,
    /// Use this ferry binary instead of building the release one (e.g. an
    /// older build, for "before" figures).
    #[arg(long, value_name = "PATH")]
    ferry_bin: Option<PathBuf>,
}

fn main() -> ExitCode {
    match run(Args::parse()) {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("bench: error: {e:#}");
            ExitCode::FAILURE
        }
    }
}

fn run(args: Args) -> anyhow::Result<()> {
    let exe = std::env::current_exe().context("finding the bench binary")?;
    // <target>/<profile>/bench
    let profile_dir = exe
        .parent()
        .with_context(|| format!("unexpected location {}", exe.display()))?;
    let target = profile_dir
        .parent()
        .with_context(|| format!("unexpected location {}", exe.display()))?;
    let ferry_bin = match args.ferry_bin {
        Some(bin) => bin,
        None => build_ferry(profile_dir, target)?,
    };
    bench::process::check_time_available()?;
    if std::process::Command::new("rsync")
        .arg("--version")
        .output()
        .map(|o| !o.status.success())
        .unwrap_or(true)
    {
        bail!("rsync is needed for the comparison: apt-get install rsync");
    }
    let reps = args.reps.unwrap_or(if args.quick { 1 } else { 3 });
    if reps == 0 {
        bail!("--reps must be at least 1");
    }
    let plan = Plan {
        reps,
        scenarios: match &args.scenarios {
            Some(list) => scenarios::parse_scenarios(list)?,
            None => scenarios::ALL
                .iter()
                .filter(|s| {
                    !args.quick
                        || !(bench::peers::NOT_QUICK.contains(s) || **s == bench::huge::SCENARIO)
                })
                .map(|s| s.to_string())
                .collect(),
        },
        sizes: if args.quick {
            Sizes::quick()
        } else {
            Sizes::full()
        },
        data_dir: args
            .data
            .unwrap_or_else(|| scenarios::default_data_dir(target)),
        ferry_bin,
    };
    std::fs::create_dir_all(&plan.data_dir)
        .with_context(|| format!("creating {}", plan.data_dir.display()))?;
    let started = std::time::Instant::now();
    let report = scenarios::run(&plan)?;
    println!(
        "\nFerry vs rsync on 127.0.0.1, medians of {reps} run(s){} ({:.0} s in all):\n",
        if args.quick { ", --quick sets" } else { "" },
        started.elapsed().as_secs_f64()
    );
    print!("{}", report.table());
    if let Some(path) = &args.json {
        let json = report.json(meta(&plan, args.quick));
        std::fs::write(path, serde_json::to_string_pretty(&json)?)
            .with_context(|| format!("writing {}", path.display()))?;
        eprintln!("bench: wrote {}", path.display());
    }
    Ok(())
}

/// Builds `ferry` with the bench's own profile into its target directory,
/// once per run (a no-op when it is up to date), and returns its path.
fn build_ferry(profile_dir: &Path, target: &Path) -> anyhow::Result<PathBuf> {
    let profile = profile_dir
        .file_name()
        .and_then(|n| n.to_str())
        .with_context(|| format!("unexpected location {}", profile_dir.display()))?;
    let mut cargo = ferry_tests::cargo::cargo();
    cargo.args(["build", "-q", "-p", "ferry-agent", "--bin", "ferry"]);
    match profile {
        "release" => {
            cargo.arg("--release");
        }
        "debug" => {
            eprintln!("bench: warning: a debug build measures nothing useful; use --release");
        }
        other => {
            cargo.args(["--profile", other]);
        }
    }
    eprintln!("bench: cargo build --{profile} -p ferry-agent --bin ferry ...");
    let status = cargo
        .env("CARGO_TARGET_DIR", target)
        .current_dir(env!("CARGO_MANIFEST_DIR"))
        .status()
        .context("running cargo build")?;
    if !status.success() {
        bail!("cargo build of the ferry binary failed: {status}");
    }
    let bin = profile_dir.join("ferry");
    if !bin.is_file() {
        bail!("no ferry binary at {} after cargo build", bin.display());
    }
    Ok(bin)
}

/// Where and how the figures were taken.
fn meta(plan: &Plan, quick: bool) -> serde_json::Value {
    let first_line = |program: &str, arg: &str| -> Option<String> {
        let out = std::process::Command::new(program).arg(arg).output().ok()?;
        // `ssh -V` prints on stderr.
        let text = [out.stdout, out.stderr].concat();
        String::from_utf8_lossy(&text)
            .lines()
            .next()
            .map(str::to_string)
    };
    serde_json::json!({
        "quick": quick,
        "reps": plan.reps,
        "scenarios": plan.scenarios,
        "sizes": {
            "small_files": plan.sizes.small_files,
            "large_files": plan.sizes.large_files,
            "large_size": plan.sizes.large_size,
            "text_files": plan.sizes.text_files,
        },
        "cpus": std::thread::available_parallelism().map(|n| n.get()).ok(),
        "kernel": std::fs::read_to_string("/proc/sys/kernel/osrelease").ok().map(|s| s.trim().to_string()),
        "rsync": first_line("rsync", "--version"),
        "ssh": first_line("ssh", "-V"),
        "unix_time": std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map(|d| d.as_secs())
            .ok(),
        "ferry_bin": plan.ferry_bin,
        "restic": first_line("restic", "version"),
        "borg": first_line("borg", "--version"),
        "syncthing": first_line("syncthing", "--version"),
    })
}
