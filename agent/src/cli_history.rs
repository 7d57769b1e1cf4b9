//! Part of the `ferry` binary (not the library): the `history`, `versions`,
//! `restore` and `verify` subcommands (and what `ferry ls` shares with them).

use std::fmt::Display;
use std::io::Write;
use std::path::{Path, PathBuf};
use std::process::ExitCode;
use std::sync::Arc;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use anyhow::{bail, Context};
use clap::Args;
use ferry_agent::config::{default_name, default_state_dir, SenderConfig, DEFAULT_PORT};
use ferry_agent::index::Index;
use ferry_agent::reader::{Client, ClientError, LocalStore, OpenStoreError, Remote};
use ferry_agent::restore::{self, Destination};
use ferry_agent::status::SenderStatus;
use ferry_agent::store;
use ferry_agent::summary::{human_bytes, recorded_data};
use ferry_agent::terminal::Terminal;
use ferry_proto::{At, Name, RelPath, VersionKind};

/// Which receiver to ask, as which sender; each can also come from the
/// sender's config file.
#[derive(Args, Clone)]
pub struct RemoteArgs {
    /// The sender's TOML config file (flags win over it).
    #[arg(short, long)]
    config: Option<PathBuf>,
    /// The receiver's host name or address.
    #[arg(long)]
    host: Option<String>,
    /// The receiver's UDP port [default: 7878].
    #[arg(long)]
    port: Option<u16>,
    /// This sender's name on the receiver [default: the host name].
    #[arg(long)]
    name: Option<String>,
    /// The folder on the receiver [default: the source's base name].
    #[arg(long)]
    folder: Option<String>,
    /// The receiver's expected device id (otherwise pinned on first contact).
    #[arg(long)]
    receiver_id: Option<String>,
    /// State directory (identity, index, known receivers).
    #[arg(long)]
    state: Option<PathBuf>,
}

impl RemoteArgs {
    /// The sender config these flags and the config file describe.
    pub(crate) fn config(&self) -> anyhow::Result<SenderConfig> {
        let file = match &self.config {
            Some(path) => SenderConfig::load(path)?,
            None => SenderConfig::default(),
        };
        Ok(file.merge(SenderConfig {
            host: self.host.clone(),
            port: self.port,
            name: self.name.clone(),
            folder: self.folder.clone(),
            receiver_id: self.receiver_id.clone(),
            state: self.state.clone(),
            ..SenderConfig::default()
        }))
    }

    fn state(&self) -> anyhow::Result<PathBuf> {
        Ok(self.config()?.state.unwrap_or_else(default_state_dir))
    }

    /// The receiver to ask (`--host`) or the local store to read (`store`,
    /// or with `config_store` the config file's `store` when it gives no
    /// host), as which sender and folder (defaults as for `ferry send`: the
    /// host name, the source's base name; a local store without either: the
    /// sender's only folder).
    pub(crate) fn source(
        &self,
        store: Option<&Path>,
        config_store: bool,
    ) -> anyhow::Result<Option<Source>> {
        let c = self.config()?;
        let name = match &c.name {
            Some(n) => Name::new(n.clone()).context("--name")?,
            None => default_name(),
        };
        let folder = match (&c.folder, &c.source) {
            (Some(f), _) => Some(f.clone()),
            (None, Some(source)) => Some(
                source
                    .canonicalize()
                    .unwrap_or_else(|_| source.clone())
                    .file_name()
                    .map(|n| n.to_string_lossy().trim_start_matches('.').to_string())
                    .unwrap_or_default(),
            ),
            (None, None) => None,
        };
        let folder = folder
            .map(|f| Name::new(f).context("--folder"))
            .transpose()?;
        let local = match (store, &c.host) {
            (Some(store), _) => Some(store.to_path_buf()),
            (None, None) if config_store => c.store.clone(),
            (None, _) => None,
        };
        if let Some(root) = local {
            return Ok(Some(Source::Local(LocalStore { root, name, folder })));
        }
        let Some(host) = c.host.clone() else {
            return Ok(None);
        };
        let Some(folder) = folder else {
            bail!("--folder is required: the folder name the sender sends to");
        };
        let receiver_id = match &c.receiver_id {
            Some(id) => Some(
                id.parse()
                    .map_err(|e| anyhow::anyhow!("--receiver-id: {e}"))?,
            ),
            None => None,
        };
        Ok(Some(Source::Remote(Remote {
            host,
            port: c.port.unwrap_or(DEFAULT_PORT),
            receiver_id,
            state: c.state.unwrap_or_else(default_state_dir),
            name,
            folder,
        })))
    }

    /// True if neither the flags nor the config file name a sender or folder.
    fn names_no_sender(&self) -> anyhow::Result<bool> {
        let c = self.config()?;
        Ok(c.name.is_none() && c.folder.is_none() && c.source.is_none())
    }
}

/// Where the read commands get their answers.
pub(crate) enum Source {
    /// A receiver, over QUIC.
    Remote(Remote),
    /// A store on this machine, read directly.
    Local(LocalStore),
}

impl Source {
    /// Opens the session; for a local store without a folder, `any_folder`
    /// takes the sender's first folder when it has several (its runs span
    /// them all).
    pub(crate) async fn open(&self, any_folder: bool) -> Result<Client, ClientError> {
        match self {
            Source::Remote(remote) => Ok(Client::connect(remote).await?),
            Source::Local(local) => match Client::open_store(local).await {
                Err(OpenStoreError::WhichFolder { folders, .. })
                    if any_folder && !folders.is_empty() =>
                {
                    let mut local = local.clone();
                    local.folder = folders.into_iter().next();
                    Ok(Client::open_store(&local).await?)
                }
                other => Ok(other?),
            },
        }
    }
}

/// The source of a read command, or the error saying how to give one.
pub(crate) fn required(source: Option<Source>) -> anyhow::Result<Source> {
    match source {
        Some(source) => Ok(source),
        None => bail!(
            "give --host HOST (ask the receiver) or --store DIR (read a store on this machine)"
        ),
    }
}

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

/// `ferry restore`.
#[derive(Args)]
pub struct RestoreArgs {
    #[command(flatten)]
    remote: RemoteArgs,
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

/// `ferry verify`.
#[derive(Args)]
pub struct VerifyArgs {
    /// The receiver store to check.
    #[arg(long)]
    store: PathBuf,
    /// Print the report as one JSON object on stdout.
    #[arg(long)]
    json: bool,
}

pub(crate) fn time(ms: i64) -> String {
    let t = if ms >= 0 {
        UNIX_EPOCH + Duration::from_millis(ms.unsigned_abs())
    } else {
        UNIX_EPOCH
    };
    humantime::format_rfc3339_seconds(t).to_string()
}

pub(crate) fn rel(path: &str) -> anyhow::Result<RelPath> {
    let trimmed = path.trim_start_matches("./").trim_end_matches('/');
    RelPath::from_bytes(trimmed.as_bytes())
        .with_context(|| format!("{path:?} is not a path in the folder (relative, no `..`)"))
}

/// Parses `--at`: a date and time (UTC), or a duration ago.
pub fn parse_at(text: &str, now: SystemTime) -> anyhow::Result<i64> {
    let t = text.trim();
    let candidates = [t.to_string(), format!("{t}:00"), format!("{t} 00:00:00")];
    let parsed = candidates
        .iter()
        .find_map(|c| humantime::parse_rfc3339_weak(c).ok())
        .or_else(|| {
            humantime::parse_duration(t)
                .ok()
                .and_then(|d| now.checked_sub(d))
        });
    let Some(at) = parsed else {
        bail!(
            "--at {text:?}: give a time like \"2026-11-20 14:00\" (UTC) or a duration ago like 3h"
        );
    };
    let ms = at
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_millis())
        .unwrap_or(0);
    Ok(i64::try_from(ms).unwrap_or(i64::MAX))
}

/// Prints `line` on stdout. A closed stdout (`ferry history --json | head
/// -1`) ends the command quietly, with exit 0, as it ends `ripgrep`: there
/// is no one left to tell. Exiting here loses nothing: the read commands
/// change nothing, and `ferry send` and `restore` print only after a run or
/// a restore is complete and recorded.
pub(crate) fn out(line: impl Display) -> std::io::Result<()> {
    let mut stdout = std::io::stdout().lock();
    let written = writeln!(stdout, "{line}").and_then(|()| stdout.flush());
    match written {
        Err(e) if e.kind() == std::io::ErrorKind::BrokenPipe => std::process::exit(0),
        other => other,
    }
}

pub(crate) fn print_json(value: &impl serde::Serialize) -> anyhow::Result<()> {
    out(serde_json::to_string(value)?)?;
    Ok(())
}

/// Runs `ferry history`.
pub async fn history(args: HistoryArgs) -> anyhow::Result<ExitCode> {
    if let (Some(store_dir), true) = (&args.store, args.remote.names_no_sender()?) {
        let dir = store_dir.clone();
        let runs = tokio::task::spawn_blocking(move || store::read_runs(&dir)).await??;
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
        client.close().await;
        for r in runs {
            if args.json {
                print_json(&serde_json::json!({
                    "run": r.id, "folder": r.folder.as_str(), "started": time(r.started_ms),
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
        tokio::task::spawn_blocking(move || Index::open(&index_path, "")?.runs_of_all_targets())
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
        let summary = tokio::task::spawn_blocking(move || {
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
        let tree = client.tree_report(at, &paths).await?;
        if tree.entries.is_empty() && tree.not_served.is_empty() && !paths.is_empty() {
            terminal.line("ferry: nothing stored at these paths as of that point");
        }
        // Only now that there is something to restore.
        let dest = Arc::new(Destination::new(&args.to, args.overwrite)?);
        let display = terminal.progress(status.clone());
        let summary =
            restore::restore_remote_tree(&client.fetcher(), tree, dest, status.clone()).await;
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

/// Runs `ferry verify`.
pub async fn verify(args: VerifyArgs, terminal: &Terminal) -> anyhow::Result<ExitCode> {
    let dir = args.store.clone();
    let report = tokio::task::spawn_blocking(move || store::verify(&dir)).await??;
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

/// Writes a line to stderr; a closed stderr is not an error (nothing is
/// left to tell), so this never panics where the standard macro would.
pub(crate) fn note(line: std::fmt::Arguments<'_>) {
    use std::io::Write;
    let _ = writeln!(std::io::stderr().lock(), "{line}");
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn at_accepts_dates_and_durations_ago() {
        let now = UNIX_EPOCH + Duration::from_secs(2_000_000_000);
        let t = parse_at("2026-11-20 14:00", now).unwrap();
        assert_eq!(t, parse_at("2026-11-20T14:00:00Z", now).unwrap());
        assert_eq!(t % 60_000, 0);
        assert_eq!(parse_at("2026-11-20", now).unwrap() + 14 * 3_600_000, t);
        assert_eq!(parse_at("1h", now).unwrap(), 2_000_000_000_000 - 3_600_000);
        assert!(parse_at("yesterday-ish", now).is_err());
    }
}
