//! What the launcher remembers between launches: the chosen role and both
//! forms in `launcher.toml`, and each role's pairing secret in its own file
//! (mode 0600) beside it, which the configs then name as
//! `pairing-secret-file`.

use std::io::{Read, Write};
use std::os::unix::fs::{OpenOptionsExt, PermissionsExt};
use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};

use crate::form::{ReceiverForm, SenderForm};

/// The launcher's settings file name inside the config directory.
pub const SETTINGS_FILE: &str = "launcher.toml";
/// The receiver's pairing secret file name inside the config directory.
pub const RECEIVER_SECRET_FILE: &str = "receiver.secret";
/// The sender's pairing secret file name inside the config directory.
pub const SENDER_SECRET_FILE: &str = "sender.secret";
/// The secret key of a bucket store's access key, inside the config
/// directory.
pub const RECEIVER_S3_SECRET_FILE: &str = "receiver-s3.secret";

/// Which role the launcher shows.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum Role {
    /// Accept senders and store what they send.
    Receiver,
    /// Back up a directory to a receiver.
    #[default]
    Sender,
}

/// Everything the launcher persists.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(default, rename_all = "kebab-case")]
pub struct LauncherSettings {
    /// The role shown at start.
    pub role: Role,
    /// The receiver form.
    pub receiver: ReceiverForm,
    /// The sender form.
    pub sender: SenderForm,
}

/// Why the settings could not be read or written.
#[derive(Debug, thiserror::Error)]
pub enum SettingsError {
    #[error("cannot create the launcher's config directory {path}")]
    CreateDir {
        path: PathBuf,
        source: std::io::Error,
    },
    #[error("cannot read {path}")]
    Read {
        path: PathBuf,
        source: std::io::Error,
    },
    #[error("{path} is not valid launcher settings ({message}); fix or delete it")]
    Parse { path: PathBuf, message: String },
    #[error("cannot write {path}")]
    Write {
        path: PathBuf,
        source: std::io::Error,
    },
    #[error("cannot encode the settings: {0}")]
    Encode(String),
    #[error("cannot generate a secret: reading /dev/urandom failed")]
    Random(#[source] std::io::Error),
}

/// `$XDG_CONFIG_HOME/ferry`, else `~/.config/ferry`, else `./.ferry-config`.
pub fn default_config_dir() -> PathBuf {
    if let Some(dir) = std::env::var_os("XDG_CONFIG_HOME").filter(|d| !d.is_empty()) {
        return PathBuf::from(dir).join("ferry");
    }
    match std::env::var_os("HOME").filter(|d| !d.is_empty()) {
        Some(home) => PathBuf::from(home).join(".config/ferry"),
        None => PathBuf::from(".ferry-config"),
    }
}

fn secret_path(dir: &Path, role: Role) -> PathBuf {
    dir.join(match role {
        Role::Receiver => RECEIVER_SECRET_FILE,
        Role::Sender => SENDER_SECRET_FILE,
    })
}

impl LauncherSettings {
    /// Reads the settings and secrets from `dir`; defaults when nothing was
    /// saved yet.
    pub fn load(dir: &Path) -> Result<LauncherSettings, SettingsError> {
        let path = dir.join(SETTINGS_FILE);
        let mut settings: LauncherSettings = match std::fs::read_to_string(&path) {
            Ok(text) => toml::from_str(&text).map_err(|e| SettingsError::Parse {
                path: path.clone(),
                message: e.to_string(),
            })?,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => LauncherSettings::default(),
            Err(source) => return Err(SettingsError::Read { path, source }),
        };
        settings.receiver.pairing_secret = read_secret(&secret_path(dir, Role::Receiver))?;
        settings.sender.pairing_secret = read_secret(&secret_path(dir, Role::Sender))?;
        settings.receiver.s3_secret_access_key = read_secret(&dir.join(RECEIVER_S3_SECRET_FILE))?;
        Ok(settings)
    }

    /// Writes the settings and secrets to `dir`, creating it.
    pub fn save(&self, dir: &Path) -> Result<(), SettingsError> {
        create_dir(dir)?;
        let text =
            toml::to_string_pretty(self).map_err(|e| SettingsError::Encode(e.to_string()))?;
        let path = dir.join(SETTINGS_FILE);
        let tmp = dir.join(format!("{SETTINGS_FILE}.tmp"));
        std::fs::write(&tmp, text).map_err(|source| SettingsError::Write {
            path: tmp.clone(),
            source,
        })?;
        std::fs::rename(&tmp, &path).map_err(|source| SettingsError::Write { path, source })?;
        self.write_secret(dir, Role::Receiver)?;
        self.write_secret(dir, Role::Sender)?;
        write_secret_file(
            dir,
            dir.join(RECEIVER_S3_SECRET_FILE),
            &self.receiver.s3_secret_access_key,
        )?;
        Ok(())
    }

    /// Writes `role`'s pairing secret to its file in `dir` (mode 0600) and
    /// returns the file, or removes the file and returns `None` when the
    /// secret is empty (no pairing).
    pub fn write_secret(&self, dir: &Path, role: Role) -> Result<Option<PathBuf>, SettingsError> {
        let secret = match role {
            Role::Receiver => &self.receiver.pairing_secret,
            Role::Sender => &self.sender.pairing_secret,
        };
        write_secret_file(dir, secret_path(dir, role), secret)
    }
}

/// Writes `secret` to `path` in `dir` (mode 0600) and returns the file, or
/// removes the file and returns `None` when the secret is empty.
fn write_secret_file(
    dir: &Path,
    path: PathBuf,
    secret: &str,
) -> Result<Option<PathBuf>, SettingsError> {
    if secret.trim().is_empty() {
        match std::fs::remove_file(&path) {
            Ok(()) => {}
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
            Err(source) => return Err(SettingsError::Write { path, source }),
        }
        return Ok(None);
    }
    create_dir(dir)?;
    let write = || -> std::io::Result<()> {
        let mut file = std::fs::OpenOptions::new()
            .write(true)
            .create(true)
            .truncate(true)
            .mode(0o600)
            .open(&path)?;
        // `mode` only applies to new files: tighten an older one too.
        file.set_permissions(std::fs::Permissions::from_mode(0o600))?;
        file.write_all(secret.trim().as_bytes())?;
        file.write_all(b"\n")?;
        file.sync_all()
    };
    write().map_err(|source| SettingsError::Write {
        path: path.clone(),
        source,
    })?;
    Ok(Some(path))
}

fn create_dir(dir: &Path) -> Result<(), SettingsError> {
    std::fs::create_dir_all(dir).map_err(|source| SettingsError::CreateDir {
        path: dir.to_owned(),
        source,
    })
}

fn read_secret(path: &Path) -> Result<String, SettingsError> {
    match std::fs::read_to_string(path) {
        Ok(text) => Ok(text.trim().to_string()),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(String::new()),
        Err(source) => Err(SettingsError::Read {
            path: path.to_owned(),
            source,
        }),
    }
}

/// A new pairing secret: 32 random bytes from `/dev/urandom`, as 64 hex
/// digits.
pub fn generate_secret() -> Result<String, SettingsError> {
    let mut bytes = [0u8; 32];
    std::fs::File::open("/dev/urandom")
        .and_then(|mut f| f.read_exact(&mut bytes))
        .map_err(SettingsError::Random)?;
    Ok(bytes.iter().map(|b| format!("{b:02x}")).collect())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn settings_survive_save_and_load() {
        let dir = tempfile::tempdir().unwrap();
        let config = dir.path().join("ferry");
        assert_eq!(
            LauncherSettings::load(&config).unwrap(),
            LauncherSettings::default()
        );
        let mut settings = LauncherSettings {
            role: Role::Receiver,
            ..Default::default()
        };
        settings.receiver.port = "9000".into();
        settings.receiver.pairing_secret = generate_secret().unwrap();
        settings.sender.every = "1h".into();
        settings.save(&config).unwrap();
        let loaded = LauncherSettings::load(&config).unwrap();
        assert_eq!(loaded, settings);
        let text = std::fs::read_to_string(config.join(SETTINGS_FILE)).unwrap();
        assert!(!text.contains(&settings.receiver.pairing_secret));
        let mode = std::fs::metadata(config.join(RECEIVER_SECRET_FILE))
            .unwrap()
            .permissions()
            .mode();
        assert_eq!(mode & 0o777, 0o600);
        assert!(!config.join(SENDER_SECRET_FILE).exists());
    }

    #[test]
    fn broken_settings_file_is_reported() {
        let dir = tempfile::tempdir().unwrap();
        std::fs::write(dir.path().join(SETTINGS_FILE), "role = 3\n").unwrap();
        let err = LauncherSettings::load(dir.path()).unwrap_err();
        assert!(err.to_string().contains(SETTINGS_FILE), "{err}");
    }

    #[test]
    fn secrets_are_random_hex() {
        let a = generate_secret().unwrap();
        let b = generate_secret().unwrap();
        assert_eq!(a.len(), 64);
        assert!(a.chars().all(|c| c.is_ascii_hexdigit()));
        assert_ne!(a, b);
    }
}
