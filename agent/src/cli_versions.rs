//! Part of the `ferry` binary (not the library): `ferry versions PATH`,
//! every stored version of one path. A protected folder's versions are
//! sealed objects at the path's opaque path: their headers are opened with
//! the folder's key to show each version's real size, time and mode.

use std::path::PathBuf;
use std::process::ExitCode;

use anyhow::Context;
use clap::Args;
use ferry_agent::reader::sealed::{self, LockedError, Opened};
use ferry_agent::reader::Client;
use ferry_agent::summary::human_bytes;
use ferry_proto::seal::FolderSecret;
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

/// Runs `ferry versions`; exits 1 if the path has no version at all, or if
/// a protected folder's version did not open (it is noted on stderr).
pub async fn versions(args: VersionsArgs) -> anyhow::Result<ExitCode> {
    let source = required(args.remote.source(args.store.as_deref(), true)?)?;
    let path = rel(&args.path)?;
    let mut client = source.open(false).await?;
    let folder = source.folder(&client);
    let unlocked = match &folder {
        Some(folder) => {
            let key = args.key.or_config(&args.remote)?;
            // The real sizes and times are inside the sealed objects: the
            // key file (not its public half) and its passphrase are needed.
            let unlocked = key.unlock(&mut client, folder).await;
            unlocked.map_err(|e| {
                let context = match e.downcast_ref::<LockedError>() {
                    Some(LockedError::WriteOnly { .. } | LockedError::PublicOfEncrypted { .. }) => {
                        format!(
                            "cannot show the versions of {path} without the folder's key file \
                             (--key-file): their sizes and times are sealed"
                        )
                    }
                    _ => format!("cannot show the versions of {path}"),
                };
                e.context(context)
            })?
        }
        None => Unlocked::Plain,
    };
    let folder = folder.map(|f| f.to_string()).unwrap_or_default();
    let sender = client.sender().clone();
    let result = match &unlocked {
        Unlocked::Sealed(secret) => {
            let opaque = secret.public().opaque_path(&path);
            sealed_versions(&mut client, secret, &opaque).await
        }
        Unlocked::Plain => client
            .versions(&path)
            .await
            .map(|v| (v, false))
            .map_err(anyhow::Error::from),
    };
    client.close().await;
    let (versions, unopened) = result?;
    if versions.is_empty() && !unopened {
        note(format_args!(
            "ferry: no versions of {path} in {sender}/{folder}: it was never stored there (the path is relative to the folder, e.g. notes/todo.txt)"
        ));
        return Ok(ExitCode::from(1));
    }
    for v in &versions {
        if args.json {
            print_json(&json(v))?;
        } else {
            out(line(v))?;
        }
    }
    Ok(if unopened {
        ExitCode::from(1)
    } else {
        ExitCode::SUCCESS
    })
}

/// A protected folder's versions of the object at `opaque`, their headers
/// opened: the real kind, size, time and mode, newest first. Versions that
/// do not open are noted on stderr and left out (the bool: some did not).
async fn sealed_versions(
    client: &mut Client,
    secret: &FolderSecret,
    opaque: &ferry_proto::RelPath,
) -> anyhow::Result<(Vec<VersionInfo>, bool)> {
    let stored = client
        .versions(opaque)
        .await
        .context("cannot list the sealed versions")?;
    let (opened, unopened) = sealed::open_headers(&client.fetcher(), secret, stored).await;
    for u in &unopened {
        note(format_args!(
            "ferry: version {} (run {}, sealed object {}): {}",
            u.version.id,
            u.version.run,
            u.version.path,
            ferry_agent::chain::chain(&u.error)
        ));
    }
    let mut real: Vec<VersionInfo> = opened.iter().map(opened_version).collect();
    real.sort_by_key(|v| std::cmp::Reverse(v.id));
    Ok((real, !unopened.is_empty()))
}

/// The version an opened object holds: the header's real path, kind, size,
/// time and mode; the object's id, run and history (a file's hash is the
/// sealed object's, and is never shown).
fn opened_version(o: &Opened) -> VersionInfo {
    let real = sealed::dir_entry(o);
    VersionInfo {
        path: real.path,
        kind: real.kind,
        mtime_ns: real.mtime_ns,
        mode: real.mode,
        ..o.version.clone()
    }
}

/// A version's kind in words and its size (a symlink's: its target's).
fn kind(v: &VersionInfo) -> (&'static str, u64) {
    match &v.kind {
        VersionKind::File { size, .. } => ("file", *size),
        VersionKind::Dir => ("dir", 0),
        VersionKind::Symlink { target } => ("symlink", target.len() as u64),
    }
}

/// `run      3  2026-11-20T14:00:00Z  file        5 B  mode 644  modified …  current`.
fn line(v: &VersionInfo) -> String {
    let (what, size) = kind(v);
    format!(
        "run {:>6}  {}  {:<7} {:>10}  mode {:o}  modified {}  {}",
        v.run,
        time(v.stored_ms),
        what,
        human_bytes(size),
        v.mode,
        time(v.mtime_ns / 1_000_000),
        state(v)
    )
}

fn json(v: &VersionInfo) -> serde_json::Value {
    let (what, size) = kind(v);
    serde_json::json!({
        "version": v.id, "kind": what, "size": size, "run": v.run,
        "stored": time(v.stored_ms), "mtime": time(v.mtime_ns / 1_000_000),
        "mode": format!("{:o}", v.mode), "replaced_run": v.replaced_run, "deleted": v.deleted,
    })
}

/// The state of a version: current, or replaced or deleted in a run.
fn state(v: &VersionInfo) -> String {
    match (v.replaced_run, v.deleted) {
        (None, _) => "current".to_string(),
        (Some(r), true) => format!("deleted in run {r}"),
        (Some(r), false) => format!("replaced in run {r}"),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use ferry_proto::seal::{SealedHeader, SealedKind};
    use ferry_proto::RelPath;

    /// Version 9 of run 3: a sealed object of 4096 padded bytes at an
    /// opaque path, whose header holds `kind` at `notes/a.txt`.
    fn opened(kind: SealedKind, size: u64) -> Opened {
        Opened {
            header: SealedHeader {
                path: RelPath::from_bytes("notes/a.txt").unwrap(),
                kind,
                mode: 0o640,
                mtime_ns: 1_700_000_000_123_456_789,
                size,
            },
            version: VersionInfo {
                id: 9,
                path: RelPath::from_bytes("3f/0123456789abcdef0123456789abcd").unwrap(),
                kind: VersionKind::File {
                    size: 4096,
                    hash: [0xee; 32],
                },
                mtime_ns: 5_000_000_000,
                mode: 0o600,
                run: 3,
                stored_ms: 1_800_000_000_000,
                replaced_run: Some(4),
                deleted: false,
            },
        }
    }

    #[test]
    fn a_sealed_version_shows_its_real_size_time_and_mode_not_the_objects() {
        let v = opened_version(&opened(SealedKind::File, 5));
        assert_eq!(v.path.to_string(), "notes/a.txt");
        assert_eq!((v.id, v.run, v.replaced_run), (9, 3, Some(4)));

        let shown = line(&v);
        assert!(shown.contains("file"), "{shown}");
        assert!(shown.contains(" 5 B"), "{shown}");
        assert!(!shown.contains("KiB"), "the padded size: {shown}");
        assert!(shown.contains("mode 640"), "{shown}");
        assert!(
            shown.contains("modified 2023-11-14T22:13:20Z"),
            "the header's time: {shown}"
        );
        assert!(
            shown.contains("2027-01-15T08:00:00Z"),
            "when stored: {shown}"
        );
        assert!(shown.ends_with("replaced in run 4"), "{shown}");

        let j = json(&v);
        assert_eq!(j["size"], 5);
        assert_eq!(j["kind"], "file");
        assert_eq!(j["mode"], "640");
        assert_eq!(j["mtime"], "2023-11-14T22:13:20Z");
        assert_eq!(j["version"], 9);
        let fields: Vec<&str> = j.as_object().unwrap().keys().map(String::as_str).collect();
        assert!(
            !fields
                .iter()
                .any(|f| f.contains("hash") || f.contains("sealed")),
            "{fields:?}"
        );
    }

    #[test]
    fn a_sealed_symlink_or_directory_shows_its_real_kind() {
        let link = SealedKind::Symlink {
            target: b"../b.txt".to_vec(),
        };
        let v = opened_version(&opened(link, 0));
        assert_eq!(kind(&v), ("symlink", 8));
        assert!(line(&v).contains("symlink"));
        let v = opened_version(&opened(SealedKind::Dir, 0));
        assert_eq!(kind(&v), ("dir", 0));
        assert_eq!(json(&v)["kind"], "dir");
    }
}
