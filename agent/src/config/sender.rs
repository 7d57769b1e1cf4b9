//! `ferry send`'s configuration: [`SenderConfig`] as flags and the TOML
//! file give it, validated into [`SenderSettings`] with its [`Target`].

use std::path::{Path, PathBuf};
use std::time::Duration;

use ferry_proto::Name;
use serde::{Deserialize, Serialize};

use super::{
    beneath, config_dir, default_name, default_state_dir, invalid, load_toml, parse_limit_rate,
    read_secret, ConfigError, DEFAULT_PORT,
};
use crate::compress::CompressMode;
use crate::identity::DeviceId;
use crate::index::guard::{DeleteGuard, DEFAULT_MAX_DELETE_PERCENT};
use crate::ratelimit::RateSchedule;
use crate::scan::ExcludeRules;

/// The watch delay unless `--watch-delay` says otherwise.
pub const DEFAULT_WATCH_DELAY: Duration = Duration::from_secs(2);
/// The period of the safety-net full scan in watch mode unless `--every`
/// says otherwise.
pub const DEFAULT_WATCH_EVERY: Duration = Duration::from_secs(3600);

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
            (None, false) if watch.is_some() => Some(DEFAULT_WATCH_EVERY),
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
            .unwrap_or(DEFAULT_MAX_DELETE_PERCENT);
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
            protect: FolderProtect::Plain,
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
            None => DEFAULT_WATCH_DELAY,
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
    /// How the folder travels and is kept (`--protect`, `--key-file`).
    pub protect: FolderProtect,
}

/// A folder's protection as the sender applies it.
#[derive(Debug, Clone, Default)]
pub enum FolderProtect {
    /// Files travel and are kept as they are.
    #[default]
    Plain,
    /// Every entry travels as a sealed object (`ferry_proto::seal`) at an
    /// opaque path: `Encrypted` when the sender holds the whole key,
    /// `WriteOnly` when it holds only the public half.
    Sealed {
        /// `Encrypted { key }` or `WriteOnly { key }` (`key` is `public.key_id()`).
        protection: ferry_proto::Protection,
        public: ferry_proto::seal::FolderPublic,
    },
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
