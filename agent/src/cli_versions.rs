//! Part of the `ferry` binary (not the library): `ferry versions PATH`,
//! every stored version of one path.

use std::path::PathBuf;
use std::process::ExitCode;

use clap::Args;
use ferry_agent::summary::human_bytes;
use ferry_proto::VersionKind;

use crate::cli_read::{note, out, print_json, rel, required, time, RemoteArgs, Source};

/// `ferry versions PATH`.
#[derive(Args)]
pub struct VersionsArgs {
    #[command(flatten)]
    remote: RemoteArgs,
    /// Read this store on this machine instead of asking a receiver (one made
    /// by `ferry send --store`, or a receiver's; works while it runs).
    #[arg(long, conflicts_with = "host")]
    store: Option<PathBuf>,
    /// The path in the folder, e.g. `notes/todo.txt`.
    path: String,
    /// One JSON object per version on stdout.
    #[arg(long)]
    json: bool,
}

/// Runs `ferry versions`; exits 1 if the path has no version at all.
pub async fn versions(args: VersionsArgs) -> anyhow::Result<ExitCode> {
    let source = required(args.remote.source(args.store.as_deref(), true)?)?;
    let path = rel(&args.path)?;
    let mut client = source.open(false).await?;
    let folder = match (&source, client.local_folder()) {
        (_, Some(folder)) => folder.to_string(),
        (Source::Remote(remote), None) => remote.folder.to_string(),
        (Source::Local(_), None) => String::new(),
    };
    let sender = client.sender().clone();
    let versions = client.versions(&path).await?;
    client.close().await;
    if versions.is_empty() {
        note(format_args!(
            "ferry: no versions of {path} in {sender}/{folder}: it was never stored there (the path is relative to the folder, e.g. notes/todo.txt)"
        ));
        return Ok(ExitCode::from(1));
    }
    for v in versions {
        let (what, size) = match &v.kind {
            VersionKind::File { size, .. } => ("file", *size),
            VersionKind::Dir => ("dir", 0),
            VersionKind::Symlink { target } => ("symlink", target.len() as u64),
        };
        let state = match (v.replaced_run, v.deleted) {
            (None, _) => "current".to_string(),
            (Some(r), true) => format!("deleted in run {r}"),
            (Some(r), false) => format!("replaced in run {r}"),
        };
        if args.json {
            print_json(&serde_json::json!({
                "version": v.id, "kind": what, "size": size, "run": v.run,
                "stored": time(v.stored_ms), "mtime": time(v.mtime_ns / 1_000_000),
                "mode": format!("{:o}", v.mode), "replaced_run": v.replaced_run, "deleted": v.deleted,
            }))?;
        } else {
            out(format_args!(
                "run {:>6}  {}  {:<7} {:>10}  mode {:o}  modified {}  {}",
                v.run,
                time(v.stored_ms),
                what,
                human_bytes(size),
                v.mode,
                time(v.mtime_ns / 1_000_000),
                state
            ))?;
        }
    }
    Ok(ExitCode::SUCCESS)
}
