//! Part of the `ferry` binary (not the library): `ferry versions PATH`,
//! every stored version of one path.

use std::path::PathBuf;
use std::process::ExitCode;

use clap::Args;
use ferry_agent::summary::human_bytes;
use ferry_proto::{VersionInfo, VersionKind};

use crate::cli_read::{note, out, print_json, rel, required, time, KeyArgs, RemoteArgs, Unlocked};

/// `ferry versions PATH`.
#[derive(Args)]
pub struct VersionsArgs {
    #[command(flatten)]
    remote: RemoteArgs,
    #[command(flatten)]
    key: KeyArgs,
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
    let folder = source.folder(&client);
    let unlocked = match &folder {
        Some(folder) => {
            args.key
                .or_config(&args.remote)?
                .unlock(&mut client, folder, true)
                .await?
        }
        None => Unlocked::Plain,
    };
    let folder = folder.map(|f| f.to_string()).unwrap_or_default();
    let sender = client.sender().clone();
    // A protected folder keeps the path's versions as objects at its
    // opaque path: sealed, padded, with the object's mode and time.
    let (asked, sealed) = match &unlocked {
        Unlocked::Sealed { public, .. } => (public.opaque_path(&path), true),
        Unlocked::Plain => (path.clone(), false),
    };
    let versions = client.versions(&asked).await?;
    client.close().await;
    if versions.is_empty() {
        note(format_args!(
            "ferry: no versions of {path} in {sender}/{folder}: it was never stored there (the path is relative to the folder, e.g. notes/todo.txt)"
        ));
        return Ok(ExitCode::from(1));
    }
    if sealed {
        for v in versions {
            sealed_line(&v, args.json)?;
        }
        return Ok(ExitCode::SUCCESS);
    }
    for v in versions {
        let (what, size) = match &v.kind {
            VersionKind::File { size, .. } => ("file", *size),
            VersionKind::Dir => ("dir", 0),
            VersionKind::Symlink { target } => ("symlink", target.len() as u64),
        };
        let state = state(&v);
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

/// The state of a version: current, or replaced or deleted in a run.
fn state(v: &VersionInfo) -> String {
    match (v.replaced_run, v.deleted) {
        (None, _) => "current".to_string(),
        (Some(r), true) => format!("deleted in run {r}"),
        (Some(r), false) => format!("replaced in run {r}"),
    }
}

/// One version of a protected folder's path: the sealed object's padded
/// size (the content is at most that), no mode or time (sealed).
fn sealed_line(v: &VersionInfo, json: bool) -> anyhow::Result<()> {
    let size = match &v.kind {
        VersionKind::File { size, .. } => *size,
        _ => 0,
    };
    if json {
        return print_json(&serde_json::json!({
            "version": v.id, "kind": "sealed", "sealed_size": size, "run": v.run,
            "stored": time(v.stored_ms), "replaced_run": v.replaced_run, "deleted": v.deleted,
        }));
    }
    out(format_args!(
        "run {:>6}  {}  sealed  {:>10} padded  {}",
        v.run,
        time(v.stored_ms),
        human_bytes(size),
        state(v)
    ))?;
    Ok(())
}
