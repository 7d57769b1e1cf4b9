//! Part of the `ferry` binary (not the library): `ferry ls`, one directory
//! of a folder as of a run or a time, from the receiver or a local store.

use std::path::PathBuf;
use std::process::ExitCode;
use std::time::SystemTime;

use clap::Args;
use ferry_agent::reader::{sealed, Client, DirEntry};
use ferry_agent::summary::human_bytes;
use ferry_proto::seal::FolderSecret;
use ferry_proto::{At, RelPath, VersionKind};

use crate::cli_read::{
    note, out, parse_at, print_json, rel, required, time, KeyArgs, RemoteArgs, Unlocked,
};

/// `ferry ls [PATH]`.
#[derive(Args)]
pub struct LsArgs {
    #[command(flatten)]
    remote: RemoteArgs,
    #[command(flatten)]
    key: KeyArgs,
    /// Read this store on this machine instead of asking a receiver (one made
    /// by `ferry send --store`, or a receiver's; works while it runs).
    #[arg(long, conflicts_with = "host")]
    store: Option<PathBuf>,
    /// The state just after this receiver run (see `ferry history --host`).
    #[arg(long, conflicts_with = "at")]
    run: Option<u64>,
    /// The state at this time: `2026-11-20 14:00` (UTC), RFC 3339, or a
    /// duration ago (`3h`, `2days`).
    #[arg(long)]
    at: Option<String>,
    /// The directory in the folder, e.g. `notes` [default: the folder's root].
    path: Option<String>,
    /// One JSON object per entry on stdout.
    #[arg(long)]
    json: bool,
}

/// The directory `path` names: `None` for the folder's root.
fn dir(path: Option<&str>) -> anyhow::Result<Option<RelPath>> {
    match path.map(|p| p.trim_start_matches("./").trim_matches('/')) {
        None | Some("" | ".") => Ok(None),
        Some(_) => path.map(rel).transpose(),
    }
}

/// Runs `ferry ls`: the children of a directory, or the entry itself if
/// the path is not a directory; exits 1 if nothing is at the path.
pub async fn ls(args: LsArgs) -> anyhow::Result<ExitCode> {
    let source = required(args.remote.source(args.store.as_deref(), true)?)?;
    let dir = dir(args.path.as_deref())?;
    let at = match (&args.run, &args.at) {
        (Some(run), _) => At::Run(*run),
        (None, Some(at)) => At::Time(parse_at(at, SystemTime::now())?),
        (None, None) => At::Latest,
    };
    let mut client = source.open(false).await?;
    let folder = source.folder(&client);
    let unlocked = match &folder {
        Some(folder) => {
            args.key
                .or_config(&args.remote)?
                .unlock(&mut client, folder)
                .await
        }
        None => Ok(Unlocked::Plain),
    };
    let mut failed = false;
    let result = match unlocked {
        Ok(Unlocked::Sealed(secret)) => {
            let sealed = list_sealed(&mut client, &secret, at, dir.as_ref()).await;
            sealed.map(|(entries, unopened)| {
                failed = unopened;
                entries
            })
        }
        Ok(Unlocked::Plain) => list(&mut client, at, dir.as_ref()).await,
        Err(e) => Err(e),
    };
    let folder = folder.map(|f| f.to_string()).unwrap_or_default();
    let sender = client.sender().clone();
    client.close().await;
    let Some(entries) = result? else {
        let path = dir.map(|d| d.to_string()).unwrap_or_default();
        note(format_args!(
            "ferry: nothing at {path} in {sender}/{folder} as of that point (the path is relative to the folder; see `ferry ls` of its parent)"
        ));
        return Ok(ExitCode::from(1));
    };
    for e in &entries {
        if args.json {
            print_json(&json(e))?;
        } else {
            out(line(e))?;
        }
    }
    Ok(if failed {
        ExitCode::from(1)
    } else {
        ExitCode::SUCCESS
    })
}

/// As [`list`] for a protected folder: the headers of every object of the
/// tree at `at` opened, the real children of `dir` kept; objects that do
/// not open are noted on stderr (the bool: some did not).
async fn list_sealed(
    client: &mut Client,
    secret: &FolderSecret,
    at: At,
    dir: Option<&RelPath>,
) -> anyhow::Result<(Option<Vec<DirEntry>>, bool)> {
    let tree = client.tree_report(at, &[]).await?;
    for n in &tree.not_served {
        note(format_args!(
            "ferry: sealed object {}: the receiver cannot serve version {}: {}",
            n.path, n.id, n.reason
        ));
    }
    let (opened, unopened) = sealed::open_headers(&client.fetcher(), secret, tree.entries).await;
    for u in &unopened {
        note(format_args!(
            "ferry: sealed object {}: {}",
            u.version.path,
            ferry_agent::chain::chain(&u.error)
        ));
    }
    let failed = !unopened.is_empty() || !tree.not_served.is_empty();
    Ok((sealed::listing(&opened, dir), failed))
}

/// The children of `dir`; if it has none and is not a directory, the entry
/// itself (as `ls` lists a file); `None` if nothing is there.
async fn list(
    client: &mut Client,
    at: At,
    dir: Option<&RelPath>,
) -> anyhow::Result<Option<Vec<DirEntry>>> {
    let entries = client.list(at, dir).await?;
    let Some(dir) = dir else {
        return Ok(Some(entries));
    };
    if !entries.is_empty() {
        return Ok(Some(entries));
    }
    let parent = dir.parent();
    let siblings = client.list(at, parent.as_ref()).await?;
    Ok(match siblings.into_iter().find(|e| e.path == *dir) {
        Some(e) if e.kind == VersionKind::Dir => Some(Vec::new()),
        Some(e) => Some(vec![e]),
        None => None,
    })
}

fn kind(e: &DirEntry) -> (&'static str, Option<u64>) {
    match &e.kind {
        VersionKind::File { size, .. } => ("file", Some(*size)),
        VersionKind::Dir => ("dir", None),
        VersionKind::Symlink { .. } => ("symlink", None),
    }
}

/// `file  0644    1.2 KiB  2026-11-20T14:00:00Z  run 3  name`.
fn line(e: &DirEntry) -> String {
    let (what, size) = kind(e);
    let name = String::from_utf8_lossy(e.name());
    let size = size.map(human_bytes).unwrap_or_else(|| "-".into());
    let run = e.run.map(|r| r.to_string()).unwrap_or_else(|| "-".into());
    let shown = match &e.kind {
        VersionKind::Dir => format!("{name}/"),
        VersionKind::Symlink { target } => {
            format!("{name} -> {}", String::from_utf8_lossy(target))
        }
        VersionKind::File { .. } => name.into_owned(),
    };
    format!(
        "{what:<7} {:04o} {size:>10}  {}  run {run:>6}  {shown}",
        e.mode,
        time(e.mtime_ns / 1_000_000)
    )
}

fn json(e: &DirEntry) -> serde_json::Value {
    let (what, size) = kind(e);
    let target = match &e.kind {
        VersionKind::Symlink { target } => Some(String::from_utf8_lossy(target).into_owned()),
        _ => None,
    };
    serde_json::json!({
        "name": String::from_utf8_lossy(e.name()), "path": e.path.to_string(), "kind": what,
        "size": size, "target": target, "mtime": time(e.mtime_ns / 1_000_000),
        "mtime_ns": e.mtime_ns, "mode": format!("{:o}", e.mode), "version": e.version,
        "run": e.run,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_root_can_be_named_several_ways() {
        for root in [None, Some(""), Some("."), Some("./"), Some("/")] {
            assert_eq!(dir(root).unwrap(), None, "{root:?}");
        }
        assert_eq!(dir(Some("./a/b/")).unwrap().unwrap().to_string(), "a/b");
        assert!(dir(Some("../x")).is_err());
    }
}
