//! Configuration in two stages: a serde config that flags, a TOML file and the
//! launcher all produce (every field optional, so "flags win over the file" is
//! a plain merge), then validated [`ReceiverSettings`] / [`SenderSettings`]
//! with defaults applied and everything checked, passed down explicitly.
//!
//! ## Layout
//!
//! - `receiver`: `ferry receive`'s config and settings.
//! - `sender`: `ferry send`'s config and settings, and where it sends.
//!
//! This file holds what both roles share: the error, the port, reading a
//! TOML file, the pairing secret, the default state directory and sender
//! name.
//! Units (sizes) are read by [`crate::units`].

mod receiver;
mod sender;

pub use receiver::{ReceiverConfig, ReceiverSettings, DEFAULT_MAX_CLIENTS, DEFAULT_PRUNE_EVERY};
pub use sender::{
    FolderProtect, SenderConfig, SenderSettings, Target, WatchSettings, DEFAULT_WATCH_DELAY,
    DEFAULT_WATCH_EVERY,
};

use std::path::{Path, PathBuf};

use ferry_proto::Name;
use serde::Deserialize;

use crate::ratelimit::RateSchedule;

/// The port a receiver listens on, and a sender sends to, unless told
/// otherwise.
pub const DEFAULT_PORT: u16 = 7878;

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

/// `--limit-rate` parsed; a schedule that never limits is no limit at all.
fn parse_limit_rate(text: Option<&str>) -> Result<Option<RateSchedule>, ConfigError> {
    let Some(text) = text else { return Ok(None) };
    let schedule: RateSchedule = text
        .parse()
        .map_err(|e: crate::ratelimit::ScheduleError| invalid("limit-rate", e.to_string()))?;
    Ok((!schedule.is_unlimited()).then_some(schedule))
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
    use crate::units::parse_size;
    use std::time::Duration;

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
}
