//! Part of the `ferry` binary (not the library): `ferry history`, the runs
//! of a receiver, of a store on this machine, or of this sender's own index.

use std::path::PathBuf;
use std::process::ExitCode;

use anyhow::bail;
use clap::Args;
use ferry_agent::index::Index;
use ferry_agent::store;
use ferry_agent::store::protection::describe;
use ferry_agent::summary::{human_bytes, recorded_data};

use crate::cli_read::{out, print_json, time, RemoteArgs};

/// `ferry history`.
#[derive(Args)]
pub struct HistoryArgs {
    #[command(flatten)]
    remote: RemoteArgs,
    /// Read this store on this machine instead of asking a receiver (one made
    /// by `ferry send --store`, or a receiver's; works while it runs).
    /// Without --name/--folder: every sender's runs.
    #[arg(long, conflicts_with = "host")]
    store: Option<PathBuf>,
    /// One JSON object per run on stdout.
    #[arg(long)]
    json: bool,
}

/// Runs `ferry history`.
pub async fn history(args: HistoryArgs) -> anyhow::Result<ExitCode> {
    if let (Some(store_dir), true) = (&args.store, args.remote.names_no_sender()?) {
        let dir = store_dir.clone();
        let runs = ferry_agent::tasks::blocking(move || store::read_runs(&dir)).await??;
        for r in runs {
            if args.json {
                print_json(&serde_json::json!({
                    "run": r.id, "sender": r.sender.as_str(), "folder": r.folder.as_str(),
                    "started": time(r.started_ms), "finished": r.finished_ms.map(time),
                    "status": r.status, "files_sent": r.report.files_sent,
                    "files_deleted": r.report.files_deleted, "bytes_file_data": r.report.bytes_file_data,
                    "bytes_received": r.bytes_received, "errors": r.report.errors,
                }))?;
            } else {
                out(format_args!(
                    "run {:>6}  {}  {}/{}  {:<11}  {} files sent, {} deleted, {} of file data, {} received on the wire, {} errors",
                    r.id,
                    time(r.started_ms),
                    r.sender,
                    r.folder,
                    r.status,
                    r.report.files_sent,
                    r.report.files_deleted,
                    human_bytes(r.report.bytes_file_data),
                    human_bytes(r.bytes_received),
                    r.report.errors
                ))?;
            }
        }
        return Ok(ExitCode::SUCCESS);
    }
    // Without --host or --store: this sender's own index, as before (even
    // if its config file stores locally).
    if let Some(source) = args.remote.source(args.store.as_deref(), false)? {
        let mut client = source.open(true).await?;
        let runs = client.runs().await?;
        // The protection of the session's folder (the runs may be of
        // several folders of the sender).
        let protection = match source.folder(&client) {
            Some(folder) => Some((folder, client.protection().await?)),
            None => None,
        };
        client.close().await;
        if let (Some((folder, protection)), false) = (&protection, args.json) {
            out(format_args!("folder {folder}: {}", describe(protection)))?;
        }
        for r in runs {
            if args.json {
                let protection = protection
                    .as_ref()
                    .filter(|(folder, _)| *folder == r.folder)
                    .map(|(_, p)| describe(p));
                print_json(&serde_json::json!({
                    "run": r.id, "folder": r.folder.as_str(), "protection": protection,
                    "started": time(r.started_ms),
                    "finished": r.finished_ms.map(time), "status": r.status,
                    "files_sent": r.report.files_sent, "files_deleted": r.report.files_deleted,
                    "bytes_file_data": r.report.bytes_file_data,
                    "bytes_received": r.bytes_received, "errors": r.report.errors,
                }))?;
            } else {
                out(format_args!(
                    "run {:>6}  {}  {:<12}  {:<11}  {} files sent, {} deleted, {} of file data, {} received on the wire, {} errors",
                    r.id,
                    time(r.started_ms),
                    r.folder,
                    r.status,
                    r.report.files_sent,
                    r.report.files_deleted,
                    human_bytes(r.report.bytes_file_data),
                    human_bytes(r.bytes_received),
                    r.report.errors
                ))?;
            }
        }
        return Ok(ExitCode::SUCCESS);
    }
    let state = args.remote.state()?;
    let index_path = state.join("index.db");
    if !index_path.is_file() {
        bail!(
            "no runs recorded in {}: this sender has not run yet (or give --state)",
            state.display()
        );
    }
    let runs =
        ferry_agent::tasks::blocking(move || Index::open(&index_path, "")?.runs_of_all_targets())
            .await??;
    for (target, r) in runs {
        if args.json {
            print_json(&serde_json::json!({
                "target": target, "started": time(r.started_ms), "finished": time(r.finished_ms),
                "files_sent": r.files_sent, "files_unchanged": r.files_unchanged,
                "files_deleted": r.files_deleted, "bytes_file_data": r.bytes_file_data,
                "bytes_file_data_wire": r.bytes_file_data_wire, "bytes_on_wire": r.bytes_on_wire,
                "errors": r.errors, "receiver_run": r.receiver_run, "outcome": r.outcome,
            }))?;
        } else {
            let run = r
                .receiver_run
                .map(|n| format!("run {n}"))
                .unwrap_or_else(|| "-".into());
            out(format_args!(
                "{}  {:>9}  {} sent, {} unchanged, {} deleted, {}, {} errors  {}  ({target})",
                time(r.started_ms),
                run,
                r.files_sent,
                r.files_unchanged,
                r.files_deleted,
                recorded_data(r.bytes_file_data, r.bytes_file_data_wire),
                r.errors,
                r.outcome
            ))?;
        }
    }
    Ok(ExitCode::SUCCESS)
}
