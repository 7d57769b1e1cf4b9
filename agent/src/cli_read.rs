//! Part of the `ferry` binary (not the library): what the read commands
//! (`history`, `versions`, `ls`, `restore`) share: which receiver or store
//! to ask, the key of a protected folder, paths and times as typed, and
//! lines printed.

use std::fmt::Display;
use std::io::Write;
use std::path::{Path, PathBuf};
use std::time::SystemTime;

use anyhow::{bail, Context};
use clap::Args;
use ferry_agent::config::{default_name, default_state_dir, SenderConfig, DEFAULT_PORT};
use ferry_agent::keys;
use ferry_agent::reader::sealed::{self, GivenKey, Needs};
use ferry_agent::reader::{
    parse_point_in_time, Client, ClientError, LocalStore, OpenStoreError, Remote,
};
use ferry_proto::seal::FolderSecret;
use ferry_proto::{Name, Protection, RelPath};

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

    pub(crate) fn state(&self) -> anyhow::Result<PathBuf> {
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
    pub(crate) fn names_no_sender(&self) -> anyhow::Result<bool> {
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

impl Source {
    /// The folder the session reads: the one asked for, or the store's
    /// only (or first) folder of the sender.
    pub(crate) fn folder(&self, client: &Client) -> Option<Name> {
        match (self, client.local_folder()) {
            (_, Some(folder)) => Some(folder.clone()),
            (Source::Remote(remote), None) => Some(remote.folder.clone()),
            (Source::Local(_), None) => None,
        }
    }
}

/// The key of a protected folder (`encrypted` or `write-only`); a plain
/// folder needs none.
#[derive(Args, Clone, Default)]
pub struct KeyArgs {
    /// The folder's key file (from `ferry key new`), to read a protected
    /// folder.
    #[arg(long)]
    key_file: Option<PathBuf>,
    /// Read the key file's passphrase from this file [default:
    /// $FERRY_PASSPHRASE_FILE, else ask on the terminal].
    #[arg(long)]
    passphrase_file: Option<PathBuf>,
}

/// What reading a folder takes, the key given checked against it.
pub(crate) enum Unlocked {
    /// A plain folder: read as it is.
    Plain,
    /// A protected folder: its objects are named and opened with this key.
    Sealed(FolderSecret),
}

impl KeyArgs {
    /// These flags, each else from the sender's config file (`key-file`,
    /// `passphrase-file`) that `remote` names.
    pub(crate) fn or_config(&self, remote: &RemoteArgs) -> anyhow::Result<KeyArgs> {
        let c = remote.config()?;
        Ok(KeyArgs {
            key_file: self.key_file.clone().or(c.key_file),
            passphrase_file: self.passphrase_file.clone().or(c.passphrase_file),
        })
    }

    /// Learns `folder`'s protection and checks the key given against it:
    /// before the passphrase is asked, and before anything is written. A
    /// protected folder needs its key file (a public file opens nothing).
    pub(crate) async fn unlock(
        &self,
        client: &mut Client,
        folder: &Name,
    ) -> anyhow::Result<Unlocked> {
        let protection = client.protection().await?;
        let Some(path) = self.key_file.clone() else {
            // Without a key, only a plain folder can be read; otherwise
            // this says what to give.
            sealed::check_key(folder, protection, None, false)?;
            return Ok(Unlocked::Plain);
        };
        if protection == Protection::Plain {
            return Ok(Unlocked::Plain);
        }
        let p = path.clone();
        let (public, key_file) =
            ferry_agent::tasks::blocking(move || keys::load_public(&p)).await??;
        let given = GivenKey {
            public: &public,
            secret: key_file,
        };
        let Needs::Secret { key } = sealed::check_key(folder, protection, Some(given), false)?
        else {
            return Ok(Unlocked::Plain);
        };
        let passphrase = keys::passphrase_source(self.passphrase_file.as_deref());
        let secret =
            ferry_agent::tasks::blocking(move || keys::load_secret(&path, &passphrase)).await??;
        sealed::check_secret(&secret, &key)?;
        Ok(Unlocked::Sealed(secret))
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

pub(crate) fn time(ms: i64) -> String {
    ferry_agent::units::utc_seconds(ms)
}

pub(crate) fn rel(path: &str) -> anyhow::Result<RelPath> {
    let trimmed = path.trim_start_matches("./").trim_end_matches('/');
    RelPath::from_bytes(trimmed.as_bytes())
        .with_context(|| format!("{path:?} is not a path in the folder (relative, no `..`)"))
}

/// Parses `--at`: a date and time (UTC), or a duration ago.
pub fn parse_at(text: &str, now: SystemTime) -> anyhow::Result<i64> {
    parse_point_in_time(text, now).map_err(|e| anyhow::anyhow!("--at {e}"))
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

/// Writes a line to stderr; a closed stderr is not an error (nothing is
/// left to tell), so this never panics where the standard macro would.
pub(crate) fn note(line: std::fmt::Arguments<'_>) {
    let _ = writeln!(std::io::stderr().lock(), "{line}");
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::{Duration, UNIX_EPOCH};

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
