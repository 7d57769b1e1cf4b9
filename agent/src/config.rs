//! Configuration in two stages: a serde config that flags, a TOML file and the
//! launcher all produce (every field optional, so "flags win over the file" is
//! a plain merge), then validated [`ReceiverSettings`] / [`SenderSettings`]
//! with defaults applied and everything checked, passed down explicitly.

use std::net::{SocketAddr, ToSocketAddrs};
use std::path::{Path, PathBuf};
use std::time::Duration;

use crate::compress::CompressMode;
use ferry_proto::Name;
use serde::{Deserialize, Serialize};

use crate::identity::DeviceId;
use crate::ratelimit::RateSchedule;
use crate::scan::ExcludeRules;
use crate::sender::guard::DeleteGuard;
use crate::store::Retention;

/// The port a receiver listens on unless told otherwise.
pub const DEFAULT_PORT: u16 = 7878;
/// How many senders a receiver serves at once unless told otherwise.
pub const DEFAULT_MAX_CLIENTS: usize = 8;

/// Why a configuration was rejected.
#[derive(Debug, thiserror::Error)]
pub enum ConfigError {
    #[error("cannot read config file {path}")]
    Read {
        path: PathBuf,
        source: std::io::Error,
    },
    #[error("config file {path} is not valid: {message}")]
    Parse { path: PathBuf, message: String },
    #[error("{what} is required: {hint}")]
    Missing {
        what: &'static str,
        hint: &'static str,
    },
    #[error("{field}: {message}")]
    Invalid {
        field: &'static str,
        message: String,
    },
    #[error("cannot read the pairing secret from {path}")]
    Secret {
        path: PathBuf,
        source: std::io::Error,
    },
}

fn invalid(field: &'static str, message: impl Into<String>) -> ConfigError {
    ConfigError::Invalid {
        field,
        message: message.into(),
    }
}

/// `ferry receive` settings as written in a TOML file or given as flags.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields, rename_all = "kebab-case")]
pub struct ReceiverConfig {
    pub host: Option<String>,
    pub port: Option<u16>,
    pub max_clients: Option<usize>,
    pub store: Option<PathBuf>,
    pub pairing_secret_file: Option<PathBuf>,
    pub allow: Vec<String>,
    pub state: Option<PathBuf>,
    /// Retention: keep the newest N old versions of each path.
    pub keep_versions: Option<u32>,
    /// Retention: keep old versions younger than this (e.g. `90d`).
    pub keep_for: Option<String>,
    /// Retention: thin old versions out with age (Syncthing's staggered).
    pub staggered: Option<bool>,
    /// How often retention is applied (default 1h).
    pub prune_every: Option<String>,
    /// Most bytes stored per sender, current and old versions together
    /// (e.g. `100GiB`); no limit if unset.
    pub quota: Option<String>,
    /// Bandwidth limit per sender connection, optionally by time of day
    /// (e.g. `08:00-18:00=2MB/s,10MB/s`); no limit if unset.
    pub limit_rate: Option<String>,
}

/// `ferry send` settings as written in a TOML file or given as flags.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields, rename_all = "kebab-case")]
pub struct SenderConfig {
    pub host: Option<String>,
    pub port: Option<u16>,
    pub source: Option<PathBuf>,
    pub every: Option<String>,
    pub once: Option<bool>,
    pub keep_copies: Option<PathBuf>,
    pub pairing_secret_file: Option<PathBuf>,
    pub name: Option<String>,
    pub folder: Option<String>,
    pub store: Option<PathBuf>,
    pub receiver_id: Option<String>,
    pub state: Option<PathBuf>,
    /// The mass-delete guard's threshold, in percent (default 50).
    pub max_delete_percent: Option<u8>,
    /// Let a run delete more than the threshold.
    pub allow_mass_delete: Option<bool>,
    /// When to compress content: `auto`, `on` or `off`.
    pub compress: Option<String>,
    /// Bandwidth limit of the whole sender, optionally by time of day
    /// (e.g. `08:00-18:00=2MB/s,10MB/s`); no limit if unset.
    pub limit_rate: Option<String>,
    /// Patterns (gitignore syntax) of what not to send, from the source root.
    pub exclude: Vec<String>,
    /// A file of such patterns, one a line.
    pub exclude_file: Option<PathBuf>,
    /// Skip directories holding a valid `CACHEDIR.TAG`.
    pub exclude_caches: Option<bool>,
    /// Skip directories holding an entry of one of these names.
    pub exclude_if_present: Vec<String>,
    /// Do not descend into other filesystems mounted inside the source.
    pub one_file_system: Option<bool>,
    /// Watch the source and send changes as they happen (inotify).
    pub watch: Option<bool>,
    /// How long changes must be quiet before a watch-triggered run (default 2s).
    pub watch_delay: Option<String>,
}

fn load_toml<T: for<'de> Deserialize<'de>>(path: &Path) -> Result<T, ConfigError> {
    let text = std::fs::read_to_string(path).map_err(|source| ConfigError::Read {
        path: path.to_owned(),
        source,
    })?;
    toml::from_str(&text).map_err(|e| ConfigError::Parse {
        path: path.to_owned(),
        message: e.to_string(),
    })
}

/// The directory relative paths in the config file at `path` are taken
/// from: the file's own, made absolute (a service's working directory is
/// `/`, not where the admin wrote the file).
fn config_dir(path: &Path) -> Result<PathBuf, ConfigError> {
    let dir = path.parent().unwrap_or(Path::new(""));
    std::path::absolute(dir).map_err(|source| ConfigError::Read {
        path: path.to_owned(),
        source,
    })
}

/// `path` taken from `dir` if it is relative (`~` is not expanded).
fn beneath(dir: &Path, path: &mut Option<PathBuf>) {
    if let Some(p) = path.as_mut() {
        if p.is_relative() {
            *p = dir.join(&*p);
        }
    }
}

impl ReceiverConfig {
    /// Reads a TOML config file. Relative paths in it are taken from the
    /// file's directory, not the current one (flags stay relative to the
    /// current directory).
    pub fn load(path: &Path) -> Result<Self, ConfigError> {
        let mut config: Self = load_toml(path)?;
        let dir = config_dir(path)?;
        beneath(&dir, &mut config.store);
        beneath(&dir, &mut config.pairing_secret_file);
        beneath(&dir, &mut config.state);
        Ok(config)
    }

    /// `self` with every field that `over` sets replaced by it (allow lists are
    /// joined).
    pub fn merge(self, over: ReceiverConfig) -> ReceiverConfig {
        let mut allow = self.allow;
        allow.extend(over.allow);
        ReceiverConfig {
            host: over.host.or(self.host),
            port: over.port.or(self.port),
            max_clients: over.max_clients.or(self.max_clients),
            store: over.store.or(self.store),
            pairing_secret_file: over.pairing_secret_file.or(self.pairing_secret_file),
            allow,
            state: over.state.or(self.state),
            keep_versions: over.keep_versions.or(self.keep_versions),
            keep_for: over.keep_for.or(self.keep_for),
            staggered: over.staggered.or(self.staggered),
            prune_every: over.prune_every.or(self.prune_every),
            quota: over.quota.or(self.quota),
            limit_rate: over.limit_rate.or(self.limit_rate),
        }
    }

    /// Checks everything and applies defaults.
    pub fn settings(&self) -> Result<ReceiverSettings, ConfigError> {
        let host = self.host.as_deref().unwrap_or("0.0.0.0");
        let port = self.port.unwrap_or(DEFAULT_PORT);
        let listen = resolve(host, port)?;
        let max_clients = self.max_clients.unwrap_or(DEFAULT_MAX_CLIENTS);
        if max_clients == 0 {
            return Err(invalid("max-clients", "must be at least 1"));
        }
        let store = self.store.clone().ok_or(ConfigError::Missing {
            what: "--store",
            hint: "give the directory where the receiver keeps what senders send",
        })?;
        let allow = self
            .allow
            .iter()
            .map(|id| {
                id.parse()
                    .map_err(|e| invalid("allow", format!("{id:?}: {e}")))
            })
            .collect::<Result<Vec<DeviceId>, _>>()?;
        let duration = |field: &'static str, text: &str| {
            humantime::parse_duration(text)
                .map_err(|e| invalid(field, format!("{text:?}: {e} (examples: 90d, 12h, 30m)")))
        };
        let retention = Retention {
            keep_versions: self.keep_versions,
            keep_for: self
                .keep_for
                .as_deref()
                .map(|d| duration("keep-for", d))
                .transpose()?,
            staggered: self.staggered.unwrap_or(false),
        };
        let prune_every = match &self.prune_every {
            Some(d) => duration("prune-every", d)?,
            None => crate::receiver::pruning::DEFAULT_PRUNE_EVERY,
        };
        if prune_every < Duration::from_secs(1) {
            return Err(invalid("prune-every", "must be at least 1s"));
        }
        let quota = self
            .quota
            .as_deref()
            .map(|q| parse_size(q).map_err(|e| invalid("quota", e)))
            .transpose()?;
        Ok(ReceiverSettings {
            limit_rate: parse_limit_rate(self.limit_rate.as_deref())?,
            quota,
            retention,
            prune_every,
            listen,
            max_clients,
            store,
            pairing_secret: read_secret(self.pairing_secret_file.as_deref())?,
            allow,
            state: self.state.clone().unwrap_or_else(default_state_dir),
        })
    }
}

impl SenderConfig {
    /// Reads a TOML config file. Relative paths in it are taken from the
    /// file's directory, not the current one (flags stay relative to the
    /// current directory).
    pub fn load(path: &Path) -> Result<Self, ConfigError> {
        let mut config: Self = load_toml(path)?;
        let dir = config_dir(path)?;
        beneath(&dir, &mut config.source);
        beneath(&dir, &mut config.keep_copies);
        beneath(&dir, &mut config.pairing_secret_file);
        beneath(&dir, &mut config.store);
        beneath(&dir, &mut config.state);
        beneath(&dir, &mut config.exclude_file);
        Ok(config)
    }

    /// `self` with every field that `over` sets replaced by it (pattern and
    /// marker lists are joined, `over`'s patterns last so that they win).
    pub fn merge(self, over: SenderConfig) -> SenderConfig {
        let mut exclude = self.exclude;
        exclude.extend(over.exclude);
        let mut exclude_if_present = self.exclude_if_present;
        exclude_if_present.extend(over.exclude_if_present);
        SenderConfig {
            exclude,
            exclude_if_present,
            exclude_file: over.exclude_file.or(self.exclude_file),
            exclude_caches: over.exclude_caches.or(self.exclude_caches),
            one_file_system: over.one_file_system.or(self.one_file_system),
            host: over.host.or(self.host),
            port: over.port.or(self.port),
            source: over.source.or(self.source),
            every: over.every.or(self.every),
            once: over.once.or(self.once),
            keep_copies: over.keep_copies.or(self.keep_copies),
            pairing_secret_file: over.pairing_secret_file.or(self.pairing_secret_file),
            name: over.name.or(self.name),
            folder: over.folder.or(self.folder),
            store: over.store.or(self.store),
            receiver_id: over.receiver_id.or(self.receiver_id),
            state: over.state.or(self.state),
            max_delete_percent: over.max_delete_percent.or(self.max_delete_percent),
            allow_mass_delete: over.allow_mass_delete.or(self.allow_mass_delete),
            compress: over.compress.or(self.compress),
            limit_rate: over.limit_rate.or(self.limit_rate),
            watch: over.watch.or(self.watch),
            watch_delay: over.watch_delay.or(self.watch_delay),
        }
    }

    /// Checks everything and applies defaults.
    pub fn settings(&self) -> Result<SenderSettings, ConfigError> {
        let source = self.source.clone().ok_or(ConfigError::Missing {
            what: "--source",
            hint: "give the directory to back up",
        })?;
        let meta = std::fs::metadata(&source)
            .map_err(|e| invalid("source", format!("{}: {e}", source.display())))?;
        if !meta.is_dir() {
            return Err(invalid(
                "source",
                format!("{} is not a directory", source.display()),
            ));
        }
        let source = source
            .canonicalize()
            .map_err(|e| invalid("source", format!("{}: {e}", source.display())))?;
        let target = match (&self.host, &self.store) {
            (Some(host), None) => Target::Remote {
                host: host.clone(),
                port: self.port.unwrap_or(DEFAULT_PORT),
                receiver_id: self
                    .receiver_id
                    .as_deref()
                    .map(|id| {
                        id.parse()
                            .map_err(|e| invalid("receiver-id", format!("{e}")))
                    })
                    .transpose()?,
            },
            (None, Some(store)) => Target::Embedded {
                store: store.clone(),
            },
            (Some(_), Some(_)) => {
                return Err(invalid(
                    "store",
                    "give either --host (send to a receiver) or --store (store locally), not both",
                ))
            }
            (None, None) => {
                return Err(ConfigError::Missing {
                    what: "--host or --store",
                    hint:
                        "--host HOST sends to a running `ferry receive`; --store DIR stores locally",
                })
            }
        };
        let watch = self.watch_settings()?;
        let every = match (&self.every, self.once.unwrap_or(false)) {
            (None, false) if watch.is_some() => Some(crate::sender::watch::DEFAULT_WATCH_EVERY),
            (_, true) | (None, false) => None,
            (Some(every), false) => {
                let every = humantime::parse_duration(every).map_err(|e| {
                    invalid("every", format!("{every:?}: {e} (examples: 30s, 15m, 1h)"))
                })?;
                if every < Duration::from_secs(1) {
                    return Err(invalid("every", "must be at least 1s"));
                }
                Some(every)
            }
        };
        let name = match &self.name {
            Some(name) => Name::new(name.clone()).map_err(|e| invalid("name", e.to_string()))?,
            None => default_name(),
        };
        let folder = match &self.folder {
            Some(folder) => folder.clone(),
            // The base name, without leading dots (`~/.config` → `config`).
            None => source
                .file_name()
                .map(|n| n.to_string_lossy().trim_start_matches('.').to_string())
                .filter(|n| !n.is_empty())
                .unwrap_or_else(|| "root".to_string()),
        };
        let folder = Name::new(folder).map_err(|e| invalid("folder", e.to_string()))?;
        let max_percent = self
            .max_delete_percent
            .unwrap_or(crate::sender::guard::DEFAULT_MAX_DELETE_PERCENT);
        if max_percent > 100 {
            return Err(invalid("max-delete-percent", "must be between 0 and 100"));
        }
        let compress = match &self.compress {
            Some(mode) => mode.parse().map_err(|e| invalid("compress", e))?,
            None => CompressMode::default(),
        };
        let mut exclude = ExcludeRules::new(&self.exclude, self.exclude_file.as_deref())
            .map_err(|e| invalid("exclude", crate::chain::chain(&e)))?;
        exclude.exclude_caches = self.exclude_caches.unwrap_or(false);
        exclude.one_file_system = self.one_file_system.unwrap_or(false);
        for name in &self.exclude_if_present {
            if name.is_empty() || name.contains('/') || name == "." || name == ".." {
                return Err(invalid(
                    "exclude-if-present",
                    format!("{name:?} is not a file name (give a name such as .nobackup)"),
                ));
            }
            exclude.exclude_if_present.push(PathBuf::from(name));
        }
        Ok(SenderSettings {
            exclude,
            watch,
            compress,
            limit_rate: parse_limit_rate(self.limit_rate.as_deref())?,
            delete_guard: DeleteGuard {
                max_percent,
                allow: self.allow_mass_delete.unwrap_or(false),
            },
            target,
            source,
            every,
            keep_copies: self.keep_copies.clone(),
            pairing_secret: read_secret(self.pairing_secret_file.as_deref())?,
            name,
            folder,
            state: self.state.clone().unwrap_or_else(default_state_dir),
        })
    }
}

impl SenderConfig {
    /// `--watch` and `--watch-delay` checked: `None` if not watching.
    fn watch_settings(&self) -> Result<Option<WatchSettings>, ConfigError> {
        if !self.watch.unwrap_or(false) {
            if self.watch_delay.is_some() {
                return Err(invalid("watch-delay", "only applies with --watch"));
            }
            return Ok(None);
        }
        if self.once.unwrap_or(false) {
            return Err(invalid(
                "watch",
                "--once and --watch cannot go together: --once runs one transfer and exits, \
                 --watch keeps running and sends changes as they happen; give one of them",
            ));
        }
        let delay = match &self.watch_delay {
            Some(text) => humantime::parse_duration(text).map_err(|e| {
                invalid(
                    "watch-delay",
                    format!("{text:?}: {e} (examples: 500ms, 2s)"),
                )
            })?,
            None => crate::sender::watch::DEFAULT_WATCH_DELAY,
        };
        if delay > Duration::from_secs(3600) {
            return Err(invalid("watch-delay", "must be at most 1h"));
        }
        Ok(Some(WatchSettings { delay }))
    }
}

/// Watch mode, validated.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct WatchSettings {
    /// How long a changed path must be quiet before a run sends it.
    pub delay: Duration,
}

/// A validated receiver configuration.
#[derive(Debug, Clone)]
pub struct ReceiverSettings {
    pub listen: SocketAddr,
    pub max_clients: usize,
    pub store: PathBuf,
    pub pairing_secret: Option<Vec<u8>>,
    pub allow: Vec<DeviceId>,
    /// Where the receiver's identity lives.
    pub state: PathBuf,
    /// Which old versions are kept.
    pub retention: Retention,
    /// How often retention is applied.
    pub prune_every: Duration,
    /// Most bytes stored per sender (current and old versions); `None`: no
    /// limit.
    pub quota: Option<u64>,
    /// Bandwidth limit per sender connection; `None`: no limit.
    pub limit_rate: Option<RateSchedule>,
}

/// Parses a size such as `100GiB`, `10MiB`, `1TB`, `512k` or `4096` (bytes):
/// a whole or decimal number, then an optional unit, case-insensitive. `K`,
/// `M`, `G`, `T` with `iB` are powers of 1024, with `B` powers of 1000; a
/// bare letter is a power of 1024.
pub fn parse_size(text: &str) -> Result<u64, String> {
    let t = text.trim();
    let split = t
        .find(|c: char| !(c.is_ascii_digit() || c == '.'))
        .unwrap_or(t.len());
    let (number, unit) = t.split_at(split);
    let examples = "examples: 500MiB, 100GiB, 1TB, 4096";
    let number: f64 = number
        .parse()
        .map_err(|_| format!("{text:?} is not a size ({examples})"))?;
    let unit = unit.trim().to_ascii_lowercase();
    let factor: u64 = match unit.as_str() {
        "" | "b" => 1,
        "k" | "kib" => 1 << 10,
        "m" | "mib" => 1 << 20,
        "g" | "gib" => 1 << 30,
        "t" | "tib" => 1 << 40,
        "kb" => 1_000,
        "mb" => 1_000_000,
        "gb" => 1_000_000_000,
        "tb" => 1_000_000_000_000,
        _ => {
            return Err(format!(
                "{text:?} has an unknown unit {unit:?} ({examples})"
            ))
        }
    };
    let bytes = (number * factor as f64).round();
    if !bytes.is_finite() || bytes < 1.0 || bytes >= u64::MAX as f64 {
        return Err(format!(
            "{text:?} is out of range: give at least one byte ({examples})"
        ));
    }
    // In range: checked just above.
    Ok(bytes as u64)
}

/// Where a sender sends.
#[derive(Debug, Clone, PartialEq)]
pub enum Target {
    /// A receiver on the network.
    Remote {
        host: String,
        port: u16,
        receiver_id: Option<DeviceId>,
    },
    /// A receiver started inside this process on loopback, storing into `store`.
    Embedded { store: PathBuf },
}

/// A validated sender configuration.
#[derive(Debug, Clone)]
pub struct SenderSettings {
    pub target: Target,
    /// The source directory, canonical.
    pub source: PathBuf,
    /// `None`: one run, then exit.
    pub every: Option<Duration>,
    pub keep_copies: Option<PathBuf>,
    pub pairing_secret: Option<Vec<u8>>,
    pub name: Name,
    pub folder: Name,
    pub state: PathBuf,
    /// The mass-delete guard.
    pub delete_guard: DeleteGuard,
    /// When to compress content.
    pub compress: CompressMode,
    /// Bandwidth limit of the whole sender; `None`: no limit.
    pub limit_rate: Option<RateSchedule>,
    /// What the user chose not to send.
    pub exclude: ExcludeRules,
    /// Watch mode (`--watch`); `None`: periodic runs only.
    pub watch: Option<WatchSettings>,
}

/// `--limit-rate` parsed; a schedule that never limits is no limit at all.
fn parse_limit_rate(text: Option<&str>) -> Result<Option<RateSchedule>, ConfigError> {
    let Some(text) = text else { return Ok(None) };
    let schedule: RateSchedule = text
        .parse()
        .map_err(|e: crate::ratelimit::ScheduleError| invalid("limit-rate", e.to_string()))?;
    Ok((!schedule.is_unlimited()).then_some(schedule))
}

fn resolve(host: &str, port: u16) -> Result<SocketAddr, ConfigError> {
    (host, port)
        .to_socket_addrs()
        .map_err(|e| invalid("host", format!("{host:?} does not resolve: {e}")))?
        .next()
        .ok_or_else(|| invalid("host", format!("{host:?} has no address")))
}

/// Reads a pairing secret file: its content with surrounding whitespace
/// removed. An empty secret is refused.
pub fn read_secret(path: Option<&Path>) -> Result<Option<Vec<u8>>, ConfigError> {
    let Some(path) = path else { return Ok(None) };
    let bytes = std::fs::read(path).map_err(|source| ConfigError::Secret {
        path: path.to_owned(),
        source,
    })?;
    let text = bytes.trim_ascii();
    if text.is_empty() {
        return Err(invalid(
            "pairing-secret-file",
            format!("{} is empty", path.display()),
        ));
    }
    Ok(Some(text.to_vec()))
}

/// `$XDG_STATE_HOME/ferry`, else `~/.local/state/ferry`, else `./.ferry-state`.
pub fn default_state_dir() -> PathBuf {
    if let Some(dir) = std::env::var_os("XDG_STATE_HOME").filter(|d| !d.is_empty()) {
        return PathBuf::from(dir).join("ferry");
    }
    match std::env::var_os("HOME").filter(|d| !d.is_empty()) {
        Some(home) => PathBuf::from(home).join(".local/state/ferry"),
        None => PathBuf::from(".ferry-state"),
    }
}

/// This machine's host name as a sender name, or `sender` if it has none
/// usable.
pub fn default_name() -> Name {
    let raw = std::fs::read_to_string("/proc/sys/kernel/hostname")
        .or_else(|_| std::fs::read_to_string("/etc/hostname"))
        .unwrap_or_default();
    let cleaned: String = raw
        .trim()
        .chars()
        .filter(|c| *c != '/' && *c != '\0')
        .collect();
    let cleaned = cleaned.trim_start_matches('.').to_string();
    Name::new(cleaned).unwrap_or_else(|_| fallback_name())
}

fn fallback_name() -> Name {
    // "sender" is a valid name: one component, no dot, no slash.
    Name::new("sender").unwrap_or_else(|_| unreachable!())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn flags_win_over_file() {
        let file: SenderConfig = toml::from_str(
            "host = \"backup.lan\"\nport = 9000\nsource = \"/tmp\"\nevery = \"15m\"\n",
        )
        .unwrap();
        let flags = SenderConfig {
            port: Some(7000),
            ..Default::default()
        };
        let merged = file.merge(flags);
        assert_eq!(merged.port, Some(7000));
        assert_eq!(merged.host.as_deref(), Some("backup.lan"));
        let settings = merged.settings().unwrap();
        assert_eq!(settings.every, Some(Duration::from_secs(900)));
        assert_eq!(settings.folder.as_str(), "tmp");
    }

    #[test]
    fn receiver_config_file_is_read() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("receiver.toml");
        std::fs::write(
            &path,
            "host = \"127.0.0.1\"\nport = 9999\nmax-clients = 3\nstore = \"/srv/ferry\"\n",
        )
        .unwrap();
        let file = ReceiverConfig::load(&path).unwrap();
        let flags = ReceiverConfig {
            port: Some(7000),
            ..Default::default()
        };
        let settings = file.merge(flags).settings().unwrap();
        assert_eq!(settings.listen, "127.0.0.1:7000".parse().unwrap());
        assert_eq!(settings.max_clients, 3);
        assert_eq!(settings.store, PathBuf::from("/srv/ferry"));
        let err = ReceiverConfig::load(&dir.path().join("missing.toml")).unwrap_err();
        assert!(err.to_string().contains("missing.toml"));
    }

    #[test]
    fn retention_and_guard_settings() {
        let file: ReceiverConfig = toml::from_str(
            "store = \"/s\"\nkeep-versions = 10\nkeep-for = \"90d\"\nstaggered = true\nprune-every = \"10m\"\n",
        )
        .unwrap();
        let settings = file.settings().unwrap();
        assert_eq!(settings.retention.keep_versions, Some(10));
        assert_eq!(
            settings.retention.keep_for,
            Some(Duration::from_secs(90 * 86400))
        );
        assert!(settings.retention.staggered);
        assert_eq!(settings.prune_every, Duration::from_secs(600));
        let plain = ReceiverConfig {
            store: Some("/s".into()),
            ..Default::default()
        };
        assert!(plain.settings().unwrap().retention.keeps_everything());
        let bad = ReceiverConfig {
            keep_for: Some("forever".into()),
            ..plain
        };
        assert!(bad.settings().unwrap_err().to_string().contains("keep-for"));

        let dir = tempfile::tempdir().unwrap();
        let base = SenderConfig {
            source: Some(dir.path().to_owned()),
            host: Some("127.0.0.1".into()),
            ..Default::default()
        };
        let guard = base.settings().unwrap().delete_guard;
        assert_eq!((guard.max_percent, guard.allow), (50, false));
        let err = SenderConfig {
            max_delete_percent: Some(101),
            ..base
        };
        assert!(err
            .settings()
            .unwrap_err()
            .to_string()
            .contains("max-delete-percent"));
    }

    #[test]
    fn relative_paths_in_a_config_file_are_taken_from_its_directory() {
        let dir = tempfile::tempdir().unwrap();
        let etc = dir.path().join("etc");
        std::fs::create_dir(&etc).unwrap();
        let path = etc.join("sender.toml");
        std::fs::write(
            &path,
            "source = \"docs\"\nkeep-copies = \"../copies\"\npairing-secret-file = \"secret\"\n\
             store = \"store\"\nstate = \"/abs/state\"\n",
        )
        .unwrap();
        let sender = SenderConfig::load(&path).unwrap();
        assert_eq!(sender.source, Some(etc.join("docs")));
        assert_eq!(sender.keep_copies, Some(etc.join("../copies")));
        assert_eq!(sender.pairing_secret_file, Some(etc.join("secret")));
        assert_eq!(sender.store, Some(etc.join("store")));
        assert_eq!(sender.state, Some(PathBuf::from("/abs/state")));
        // Flags merged over the file stay as given.
        let flags = SenderConfig {
            store: Some("here".into()),
            ..Default::default()
        };
        assert_eq!(sender.merge(flags).store, Some(PathBuf::from("here")));

        let path = etc.join("receiver.toml");
        std::fs::write(
            &path,
            "store = \"store\"\npairing-secret-file = \"secret\"\nstate = \"state\"\n",
        )
        .unwrap();
        let receiver = ReceiverConfig::load(&path).unwrap();
        assert_eq!(receiver.store, Some(etc.join("store")));
        assert_eq!(receiver.pairing_secret_file, Some(etc.join("secret")));
        assert_eq!(receiver.state, Some(etc.join("state")));
    }

    #[test]
    fn unknown_keys_rejected() {
        assert!(toml::from_str::<ReceiverConfig>("prot = 1\n").is_err());
    }

    #[test]
    fn clear_errors() {
        let dir = tempfile::tempdir().unwrap();
        let base = SenderConfig {
            source: Some(dir.path().to_owned()),
            host: Some("127.0.0.1".into()),
            ..Default::default()
        };
        let err = SenderConfig {
            every: Some("soon".into()),
            ..base.clone()
        }
        .settings();
        assert!(err.unwrap_err().to_string().contains("every"));
        let err = SenderConfig {
            store: Some("/x".into()),
            ..base.clone()
        }
        .settings();
        assert!(err.unwrap_err().to_string().contains("not both"));
        let err = SenderConfig {
            name: Some("a/b".into()),
            ..base.clone()
        }
        .settings();
        assert!(err.unwrap_err().to_string().contains("name"));
        let err = SenderConfig {
            source: Some(dir.path().join("nope")),
            ..base.clone()
        };
        assert!(err.settings().unwrap_err().to_string().contains("source"));
        let once = SenderConfig {
            every: Some("1h".into()),
            once: Some(true),
            ..base
        };
        assert_eq!(once.settings().unwrap().every, None);
        let err = ReceiverConfig {
            max_clients: Some(0),
            store: Some("/s".into()),
            ..Default::default()
        };
        assert!(err
            .settings()
            .unwrap_err()
            .to_string()
            .contains("max-clients"));
        let err = ReceiverConfig::default().settings().unwrap_err();
        assert!(err.to_string().contains("--store"));
    }

    #[test]
    fn secret_is_trimmed_and_empty_refused() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("s");
        std::fs::write(&path, "  hunter2 \n").unwrap();
        assert_eq!(read_secret(Some(&path)).unwrap(), Some(b"hunter2".to_vec()));
        std::fs::write(&path, "\n").unwrap();
        assert!(read_secret(Some(&path)).is_err());
        assert!(read_secret(Some(&dir.path().join("missing"))).is_err());
    }

    #[test]
    fn default_name_is_valid() {
        assert!(!default_name().as_str().is_empty());
    }

    #[test]
    fn quota_sizes_parse() {
        assert_eq!(parse_size("100GiB").unwrap(), 100 << 30);
        assert_eq!(parse_size("10MiB").unwrap(), 10 << 20);
        assert_eq!(parse_size("1TB").unwrap(), 1_000_000_000_000);
        assert_eq!(parse_size(" 1.5 kib ").unwrap(), 1536);
        assert_eq!(parse_size("4096").unwrap(), 4096);
        assert_eq!(parse_size("2g").unwrap(), 2 << 30);
        for bad in ["", "GiB", "10 parsecs", "0", "-1MiB", "1.2.3MB", "1e30TB"] {
            assert!(parse_size(bad).is_err(), "{bad:?} parsed");
        }
        let config = ReceiverConfig {
            store: Some("/s".into()),
            quota: Some("5MiB".into()),
            ..Default::default()
        };
        assert_eq!(config.settings().unwrap().quota, Some(5 << 20));
        let bad = ReceiverConfig {
            quota: Some("lots".into()),
            ..config
        };
        let err = bad.settings().unwrap_err().to_string();
        assert!(err.contains("quota") && err.contains("lots"), "{err}");
        let file: ReceiverConfig = toml::from_str("quota = \"1TB\"\n").unwrap();
        assert_eq!(file.quota.as_deref(), Some("1TB"));
    }

    #[test]
    fn limit_rate_reaches_both_settings() {
        let file: ReceiverConfig =
            toml::from_str("store = \"/s\"\nlimit-rate = \"08:00-18:00=2MB/s,10MB/s\"\n").unwrap();
        let schedule = file.settings().unwrap().limit_rate.unwrap();
        assert_eq!(schedule.to_string(), "08:00-18:00=2MB/s,10MB/s");
        assert_eq!(schedule.rate_at(12 * 60), Some(2_000_000));
        let plain = ReceiverConfig {
            store: Some("/s".into()),
            ..Default::default()
        };
        assert!(plain.clone().settings().unwrap().limit_rate.is_none());
        // A schedule that never limits is no limit.
        let off = ReceiverConfig {
            limit_rate: Some("off".into()),
            ..plain.clone()
        };
        assert!(off.settings().unwrap().limit_rate.is_none());
        let bad = ReceiverConfig {
            limit_rate: Some("25:00-18:00=1MB/s".into()),
            ..plain
        };
        let err = bad.settings().unwrap_err().to_string();
        assert!(
            err.contains("limit-rate") && err.contains("hour out of range"),
            "{err}"
        );

        let dir = tempfile::tempdir().unwrap();
        let file = SenderConfig {
            source: Some(dir.path().to_owned()),
            host: Some("127.0.0.1".into()),
            limit_rate: Some("1MB/s".into()),
            ..Default::default()
        };
        let flags = SenderConfig {
            limit_rate: Some("4MiB/s".into()),
            ..Default::default()
        };
        let schedule = file.clone().merge(flags).settings().unwrap().limit_rate;
        assert_eq!(schedule.unwrap().rate_at(0), Some(4 << 20));
        let schedule = file.clone().merge(SenderConfig::default()).settings();
        assert_eq!(
            schedule.unwrap().limit_rate.unwrap().rate_at(0),
            Some(1_000_000)
        );
        let bad = SenderConfig {
            limit_rate: Some("fast".into()),
            ..file
        };
        let err = bad.settings().unwrap_err().to_string();
        assert!(
            err.contains("limit-rate") && err.contains("\"fast\""),
            "{err}"
        );
    }

    #[test]
    fn exclusion_settings_from_the_file_and_flags() {
        let dir = tempfile::tempdir().unwrap();
        std::fs::create_dir(dir.path().join("src")).unwrap();
        std::fs::write(dir.path().join("rules.txt"), "*.iso\n").unwrap();
        let path = dir.path().join("sender.toml");
        std::fs::write(
            &path,
            "source = \"src\"\nstore = \"/s\"\nexclude = [\"*.tmp\"]\nexclude-file = \"rules.txt\"\n\
             exclude-caches = true\nexclude-if-present = [\".nobackup\"]\none-file-system = true\n",
        )
        .unwrap();
        let file = SenderConfig::load(&path).unwrap();
        assert_eq!(file.exclude_file, Some(dir.path().join("rules.txt")));
        let flags = SenderConfig {
            exclude: vec!["!keep.tmp".into()],
            exclude_if_present: vec![".skip".into()],
            ..Default::default()
        };
        let merged = file.merge(flags);
        assert_eq!(merged.exclude, ["*.tmp", "!keep.tmp"]);
        let rules = merged.settings().unwrap().exclude;
        assert!(rules.exclude_caches && rules.one_file_system);
        assert_eq!(
            rules.exclude_if_present,
            [PathBuf::from(".nobackup"), PathBuf::from(".skip")]
        );

        let bad = SenderConfig {
            exclude_if_present: vec!["a/b".into()],
            ..merged.clone()
        };
        let err = bad.settings().unwrap_err().to_string();
        assert!(err.contains("exclude-if-present"), "{err}");
        let missing = SenderConfig {
            exclude_file: Some(dir.path().join("nope.txt")),
            ..merged
        };
        let err = missing.settings().unwrap_err().to_string();
        assert!(err.contains("nope.txt"), "{err}");
    }
}
