//! Part of the `ferry` binary (not the library): `ferry verify`, a
//! receiver store checked against its catalog.

use std::path::PathBuf;
use std::process::ExitCode;

use clap::Args;
use ferry_agent::store;
use ferry_agent::summary::human_bytes;
use ferry_agent::terminal::Terminal;

use crate::cli_read::print_json;

/// `ferry verify`.
#[derive(Args)]
pub struct VerifyArgs {
    /// The receiver store to check: its directory, or s3://BUCKET/PREFIX
    /// (the endpoint and keys from AWS_ENDPOINT_URL, AWS_ACCESS_KEY_ID, ...).
    #[arg(long)]
    store: PathBuf,
    /// Print the report as one JSON object on stdout.
    #[arg(long)]
    json: bool,
}

/// Runs `ferry verify`.
pub async fn verify(args: VerifyArgs, terminal: &Terminal) -> anyhow::Result<ExitCode> {
    let dir = args.store.clone();
    let url = dir.to_string_lossy().into_owned();
    let report = if ferry_agent::bucket::is_bucket_url(&url) {
        // The bucket against the newest catalog copy in it; the endpoint
        // and keys as the AWS CLI takes them.
        ferry_agent::tasks::blocking(move || -> anyhow::Result<store::VerifyReport> {
            let bucket = ferry_agent::bucket::BucketSpec::parse(&url)?.open()?;
            Ok(store::Store::open_bucket_copy(bucket)?.verify()?)
        })
        .await??
    } else {
        ferry_agent::tasks::blocking(move || -> anyhow::Result<store::VerifyReport> {
            // A bucket receiver's state is refused here (its bytes are in
            // the bucket), rather than reported as every version lost.
            drop(store::Store::open_for_reading(&dir)?);
            Ok(store::verify(&dir)?)
        })
        .await??
    };
    if args.json {
        print_json(&report)?;
    } else {
        for f in &report.findings {
            match f.version {
                Some(version) => {
                    let which = if f.current { "current" } else { "old version" };
                    terminal.line(&format!(
                        "ferry: {}/{}/{} ({which} {version}, at {}): {}",
                        f.sender,
                        f.folder,
                        f.path,
                        f.location.display(),
                        f.kind
                    ));
                }
                None => terminal.line(&format!("ferry: {}: {}", f.location.display(), f.kind)),
            }
        }
        terminal.summary(&format!(
            "ferry: verified {} files ({}) and {} symlinks, walked {} entries: {} problems",
            report.files_checked,
            human_bytes(report.bytes_checked),
            report.links_checked,
            report.entries_walked,
            report.findings.len()
        ));
        if report.unrecorded > 0 && !terminal.is_quiet() {
            terminal.line(&format!(
                "ferry: {} never acknowledged copies that interrupted commits left are kept in the versions area (named ~u<n>); they are not problems",
                report.unrecorded
            ));
        }
    }
    Ok(if report.findings.is_empty() {
        ExitCode::SUCCESS
    } else {
        ExitCode::from(1)
    })
}
