//! Part of the `ferry` binary (not the library): `ferry restore`, a tree as
//! of a point from a receiver or a store, or the local keep-copies, written
//! into a directory.

use std::path::PathBuf;
use std::process::ExitCode;
use std::sync::Arc;
use std::time::SystemTime;

use anyhow::bail;
use clap::Args;
use ferry_agent::restore::{self, Destination};
use ferry_agent::status::SenderStatus;
use ferry_agent::terminal::Terminal;
use ferry_proto::At;

use crate::cli_read::{parse_at, print_json, rel, KeyArgs, RemoteArgs, Unlocked};

/// `ferry restore`.
#[derive(Args)]
pub struct RestoreArgs {
    #[command(flatten)]
    remote: RemoteArgs,
    #[command(flatten)]
    key: KeyArgs,
    /// Read this store on this machine instead of asking a receiver (one made
    /// by `ferry send --store`, or a receiver's; works while it runs).
    #[arg(long, conflicts_with = "host")]
    store: Option<PathBuf>,
    /// Restore from this local keep-copies directory instead of the receiver.
    #[arg(long, conflicts_with_all = ["host", "store", "run", "at"])]
    from_copies: Option<PathBuf>,
    /// Directory to restore into (created if needed).
    #[arg(long)]
    to: PathBuf,
    /// The state just after this receiver run (see `ferry history --host`).
    #[arg(long, conflicts_with = "at")]
    run: Option<u64>,
    /// The state at this time: `2026-11-20 14:00` (UTC), RFC 3339, or a
    /// duration ago (`3h`, `2days`).
    #[arg(long)]
    at: Option<String>,
    /// Replace files that exist at the destination.
    #[arg(long)]
    overwrite: bool,
    /// Print the summary as one JSON object on stdout.
    #[arg(long)]
    json: bool,
    /// Only these paths (files or whole subtrees) of the folder.
    paths: Vec<String>,
}

/// Runs `ferry restore`. A restore that fails before writing anything
/// leaves no destination directory behind.
pub async fn restore(
    args: RestoreArgs,
    verbosity: crate::Verbosity,
    terminal: &Terminal,
) -> anyhow::Result<ExitCode> {
    let existed = args.to.exists();
    let to = args.to.clone();
    let result = restore_into(args, verbosity, terminal).await;
    if result.is_err() && !existed {
        // Only an empty directory is removed: nothing restored is lost.
        let _ = std::fs::remove_dir(&to);
    }
    result
}

async fn restore_into(
    args: RestoreArgs,
    verbosity: crate::Verbosity,
    terminal: &Terminal,
) -> anyhow::Result<ExitCode> {
    let paths = args
        .paths
        .iter()
        .map(|p| rel(p))
        .collect::<anyhow::Result<Vec<_>>>()?;
    let status = SenderStatus::new();
    let summary = if let Some(copies) = args.from_copies.clone() {
        let dest = Arc::new(Destination::new(&args.to, args.overwrite)?);
        let display = terminal.progress(status.clone());
        let status = status.clone();
        let summary = ferry_agent::tasks::blocking(move || {
            restore::restore_from_copies(&copies, &paths, &dest, &status.progress)
        })
        .await?;
        if let Some(display) = display {
            display.finish().await;
        }
        summary?
    } else {
        let Some(source) = args.remote.source(args.store.as_deref(), true)? else {
            bail!("give --host (restore from the receiver), --store DIR (from a store on this machine) or --from-copies DIR");
        };
        let at = match (&args.run, &args.at) {
            (Some(run), _) => At::Run(*run),
            (None, Some(at)) => At::Time(parse_at(at, SystemTime::now())?),
            (None, None) => At::Latest,
        };
        let mut client = source.open(false).await?;
        let unlocked = match source.folder(&client) {
            Some(folder) => {
                args.key
                    .or_config(&args.remote)?
                    .unlock(&mut client, &folder)
                    .await?
            }
            None => Unlocked::Plain,
        };
        let secret = match unlocked {
            Unlocked::Sealed(secret) => Some(secret),
            Unlocked::Plain => None,
        };
        // A protected folder's objects are at opaque paths: the whole tree
        // is asked for, and kept by real path once opened.
        let asked: &[_] = if secret.is_some() { &[] } else { &paths };
        let tree = client.tree_report(at, asked).await?;
        let nothing = tree.entries.is_empty() && tree.not_served.is_empty();
        if secret.is_none() && nothing && !paths.is_empty() {
            terminal.line("ferry: nothing stored at these paths as of that point");
        }
        // Only now that there is something to restore.
        let dest = Arc::new(Destination::new(&args.to, args.overwrite)?);
        let display = terminal.progress(status.clone());
        let fetcher = client.fetcher();
        let summary = match &secret {
            Some(secret) => {
                let summary = restore::restore_sealed_tree(
                    &fetcher,
                    tree,
                    secret,
                    &paths,
                    dest,
                    status.clone(),
                )
                .await;
                if summary.is_empty() && !paths.is_empty() {
                    terminal.line("ferry: nothing stored at these paths as of that point");
                }
                summary
            }
            None => restore::restore_remote_tree(&fetcher, tree, dest, status.clone()).await,
        };
        client.close().await;
        if let Some(display) = display {
            display.finish().await;
        }
        summary
    };
    if args.json {
        print_json(&summary)?;
    } else {
        if verbosity.verbose > 0 {
            for s in &summary.skipped {
                terminal.line(&format!(
                    "ferry: skipped {s}: it exists at the destination (use --overwrite to replace it)"
                ));
            }
        }
        for p in &summary.problems {
            terminal.line(&format!("ferry: {}: {}", p.path, p.message));
        }
        terminal.summary(&format!("ferry: {}", summary.line()));
    }
    // Files skipped because they exist are not a failure (as rsync
    // --ignore-existing): the summary counts them.
    Ok(if summary.problems.is_empty() {
        ExitCode::SUCCESS
    } else {
        ExitCode::from(1)
    })
}
