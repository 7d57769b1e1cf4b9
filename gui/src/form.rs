//! The launcher's two forms as a person types them (plain strings), checked
//! field by field, and turned into the agent's [`ReceiverConfig`] /
//! [`SenderConfig`] once valid.
//!
//! Checks here are the cheap ones that can run on every keystroke (no DNS,
//! no secret file); the agent's own `.settings()` has the final word when the
//! role starts.
//!
//! ## Layout
//!
//! - [`check`]: one field's text checked (host, port, limit, period, directory).

mod check;

use std::path::PathBuf;

use check::{
    check_creatable_dir, check_host, check_key_file, check_readable_dir, opt_path, opt_string,
    optional, parse_max_clients,
};
pub use check::{check_limit_rate, parse_period, parse_port};

use ferry_agent::compress::CompressMode;
use ferry_agent::config::{ReceiverConfig, SenderConfig, DEFAULT_MAX_CLIENTS, DEFAULT_PORT};
use ferry_agent::identity::DeviceId;
use ferry_agent::scan::ExcludeRules;

use crate::exclusions::pattern_lines;
use serde::{Deserialize, Serialize};

/// The receiver form, as typed.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(default, rename_all = "kebab-case")]
pub struct ReceiverForm {
    /// Address to listen on (`0.0.0.0` for every interface).
    pub host: String,
    /// Port to listen on; `0` picks a free one.
    pub port: String,
    /// How many senders are served at once.
    pub max_clients: String,
    /// Where received files are stored: a directory, or `s3://BUCKET/PREFIX`
    /// for a bucket of an S3-compatible object store.
    pub store: String,
    /// The pairing secret itself; kept in a 0600 file, never in the TOML.
    #[serde(skip)]
    pub pairing_secret: String,
    /// The state directory (identity); empty for the default.
    pub state: String,
    /// Bandwidth limit per sender connection (`--limit-rate`); empty for
    /// none.
    pub limit_rate: String,
    /// With a bucket store: the S3 endpoint (`http(s)://host:port`); empty
    /// for AWS (or `AWS_ENDPOINT_URL`).
    pub s3_endpoint: String,
    /// With a bucket store: the region; empty for the environment's or the
    /// profile's.
    pub s3_region: String,
    /// With a bucket store: the access key id; empty for the environment's
    /// or `~/.aws/credentials`.
    pub s3_access_key_id: String,
    /// The secret key that goes with it; kept in a 0600 file, never in the
    /// TOML.
    #[serde(skip)]
    pub s3_secret_access_key: String,
    /// With a bucket store and a new state directory: rebuild the catalog
    /// from the newest copy in the bucket (`--recover`). Not saved: it is
    /// for one start.
    #[serde(skip)]
    pub recover: bool,
}

impl Default for ReceiverForm {
    fn default() -> Self {
        Self {
            host: "0.0.0.0".into(),
            port: DEFAULT_PORT.to_string(),
            max_clients: DEFAULT_MAX_CLIENTS.to_string(),
            store: String::new(),
            pairing_secret: String::new(),
            state: String::new(),
            limit_rate: String::new(),
            s3_endpoint: String::new(),
            s3_region: String::new(),
            s3_access_key_id: String::new(),
            s3_secret_access_key: String::new(),
            recover: false,
        }
    }
}

impl ReceiverForm {
    /// True if the store field names a bucket (`s3://…`).
    pub fn in_bucket(&self) -> bool {
        ferry_agent::bucket::is_bucket_url(self.store.trim())
    }

    /// The store directory on this machine that holds the catalog: the
    /// Store field, or for a bucket store `STATE/store` (its catalog and
    /// the admin's settings stay in the state directory). Empty while the
    /// Store field is.
    pub fn local_store(&self) -> String {
        if !self.in_bucket() {
            return self.store.clone();
        }
        let state = match self.state.trim() {
            "" => ferry_agent::config::default_state_dir(),
            state => PathBuf::from(state),
        };
        state.join("store").display().to_string()
    }
}

/// The sender form, as typed.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(default, rename_all = "kebab-case")]
pub struct SenderForm {
    /// The receiver's host name or address.
    pub host: String,
    /// The receiver's port.
    pub port: String,
    /// The directory to back up.
    pub source: String,
    /// How often to run (`15m`, `1h`).
    pub every: String,
    /// Optional directory for local copies of what was sent.
    pub keep_copies: String,
    /// Optional sender name (default: the host name).
    pub name: String,
    /// Optional receiver device id to pin.
    pub receiver_id: String,
    /// The pairing secret itself; kept in a 0600 file, never in the TOML.
    #[serde(skip)]
    pub pairing_secret: String,
    /// The state directory (identity, index); empty for the default.
    pub state: String,
    /// Bandwidth limit of the whole sender (`--limit-rate`); empty for none.
    pub limit_rate: String,
    /// When to compress content (`--compress`); kept as the config's text
    /// (`auto`, `on`, `off`).
    pub compress: CompressMode,
    /// Exclude patterns (`--exclude`), one a line, gitignore syntax.
    pub exclude: String,
    /// Send changes as they happen (`--watch`); the period is then that of
    /// the safety-net full scan.
    pub watch: bool,
    /// How the folder is kept on the receiver (`--protect`).
    pub protect: Protect,
    /// The folder key file (`--key-file`): the key for `Encrypted`, its
    /// public half for `WriteOnly`.
    pub key_file: String,
}

/// The folder protections in the launcher (`--protect`).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum Protect {
    /// A browsable mirror on the receiver.
    #[default]
    Plain,
    /// The receiver keeps only ciphertext; this machine holds the key.
    Encrypted,
    /// The receiver keeps only ciphertext; this machine holds only the
    /// key's public half and cannot read back what it sent.
    WriteOnly,
}

impl Protect {
    /// The value of `--protect` (and of `protect` in the config file).
    pub fn flag(self) -> &'static str {
        match self {
            Protect::Plain => "plain",
            Protect::Encrypted => "encrypted",
            Protect::WriteOnly => "write-only",
        }
    }
}

/// The protection choices in the order shown, with their names.
pub const PROTECT_CHOICES: [(Protect, &str); 3] = [
    (Protect::Plain, "Plain"),
    (Protect::Encrypted, "Encrypted"),
    (Protect::WriteOnly, "Write-only"),
];

impl Default for SenderForm {
    fn default() -> Self {
        Self {
            host: String::new(),
            port: DEFAULT_PORT.to_string(),
            source: String::new(),
            every: "15m".into(),
            keep_copies: String::new(),
            name: String::new(),
            receiver_id: String::new(),
            pairing_secret: String::new(),
            state: String::new(),
            limit_rate: String::new(),
            compress: CompressMode::Auto,
            exclude: String::new(),
            watch: false,
            protect: Protect::Plain,
            key_file: String::new(),
        }
    }
}

/// One field's problem, in plain words.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct FieldError {
    /// The field's label as shown in the form.
    pub field: &'static str,
    /// What is wrong and what to do.
    pub message: String,
}

impl std::fmt::Display for FieldError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{}: {}", self.field, self.message)
    }
}

/// The result of checking a form: every problem found, in form order.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Validation {
    /// Problems, at most one per field.
    pub errors: Vec<FieldError>,
}

impl Validation {
    /// Whether the form can be started.
    pub fn is_ok(&self) -> bool {
        self.errors.is_empty()
    }

    /// The problem with `field`, if any.
    pub fn error(&self, field: &str) -> Option<&str> {
        self.errors
            .iter()
            .find(|e| e.field == field)
            .map(|e| e.message.as_str())
    }

    /// Why Start is disabled: the first problem, or `None` when valid.
    pub fn reason(&self) -> Option<String> {
        self.errors.first().map(ToString::to_string)
    }

    fn check(&mut self, field: &'static str, result: Result<(), String>) {
        if let Err(message) = result {
            self.errors.push(FieldError { field, message });
        }
    }
}

/// Field labels, shared by the panels, the validation and the tests.
pub mod label {
    /// Host field.
    pub const HOST: &str = "Host";
    /// Port field.
    pub const PORT: &str = "Port";
    /// Max clients field.
    pub const MAX_CLIENTS: &str = "Max clients";
    /// Store field: a directory or a bucket (`s3://BUCKET/PREFIX`).
    pub const STORE: &str = "Store";
    /// S3 endpoint field (bucket stores).
    pub const S3_ENDPOINT: &str = "S3 endpoint";
    /// S3 region field (bucket stores).
    pub const S3_REGION: &str = "S3 region";
    /// S3 access key id field (bucket stores).
    pub const S3_KEY: &str = "S3 access key id";
    /// S3 secret access key field (bucket stores).
    pub const S3_SECRET: &str = "S3 secret key";
    /// Recover-from-the-bucket checkbox (bucket stores).
    pub const RECOVER: &str = "Recover the catalog from the bucket";
    /// Pairing secret field.
    pub const SECRET: &str = "Pairing secret";
    /// State directory field.
    pub const STATE: &str = "State directory";
    /// Receiver host field.
    pub const RECEIVER_HOST: &str = "Receiver host";
    /// Receiver port field.
    pub const RECEIVER_PORT: &str = "Receiver port";
    /// Source directory field.
    pub const SOURCE: &str = "Source directory";
    /// Period field.
    pub const EVERY: &str = "Period";
    /// Keep-copies directory field.
    pub const KEEP_COPIES: &str = "Keep copies in";
    /// Sender name field.
    pub const NAME: &str = "Name";
    /// Receiver id field.
    pub const RECEIVER_ID: &str = "Receiver id";
    /// Bandwidth limit field (both roles).
    pub const LIMIT_RATE: &str = "Bandwidth limit";
    /// Compression choice (sender).
    pub const COMPRESS: &str = "Compression";
    /// Exclude patterns field (sender).
    pub const EXCLUDE: &str = "Exclude patterns";
    /// Watch mode checkbox (sender).
    pub const WATCH: &str = "Send changes as they happen";
    /// Folder protection choice (sender).
    pub const PROTECT: &str = "Protection";
    /// Folder key file field (sender).
    pub const KEY_FILE: &str = "Key file";
}

/// An example bandwidth schedule, shown as the limit field's hover hint.
pub const LIMIT_RATE_EXAMPLE: &str = "08:00-18:00=2MB/s,10MB/s";

/// The compression choices in the order shown, with their names.
pub const COMPRESS_CHOICES: [(CompressMode, &str); 3] = [
    (CompressMode::Auto, "Auto"),
    (CompressMode::On, "On"),
    (CompressMode::Off, "Off"),
];

/// The name a compression choice is shown with.
pub fn compress_name(mode: CompressMode) -> &'static str {
    COMPRESS_CHOICES
        .iter()
        .find(|(m, _)| *m == mode)
        .map_or("Auto", |(_, name)| name)
}

impl ReceiverForm {
    /// Checks every field.
    pub fn validate(&self) -> Validation {
        let mut v = Validation::default();
        v.check(
            label::HOST,
            check_host(&self.host, "is empty: use 0.0.0.0 to listen everywhere"),
        );
        v.check(label::PORT, parse_port(&self.port, true).map(|_| ()));
        v.check(
            label::MAX_CLIENTS,
            parse_max_clients(&self.max_clients).map(|_| ()),
        );
        v.check(label::LIMIT_RATE, check_limit_rate(&self.limit_rate));
        if self.in_bucket() {
            v.check(
                label::STORE,
                ferry_agent::bucket::BucketSpec::parse(self.store.trim())
                    .map(|_| ())
                    .map_err(|e| e.to_string()),
            );
            v.check(
                label::S3_ENDPOINT,
                optional(&self.s3_endpoint, |e| {
                    let e = e.trim();
                    match e.starts_with("http://") || e.starts_with("https://") {
                        true => Ok(()),
                        false => Err(format!("{e} is not an http:// or https:// address")),
                    }
                }),
            );
            let key = !self.s3_access_key_id.trim().is_empty();
            let secret = !self.s3_secret_access_key.trim().is_empty();
            v.check(
                label::S3_SECRET,
                match (key, secret) {
                    (true, false) => Err("is empty: give the secret of the access key id".into()),
                    (false, true) => Err("goes with an access key id: give it too".into()),
                    _ => Ok(()),
                },
            );
        } else {
            v.check(
                label::STORE,
                check_creatable_dir(&self.store, "where received files are kept"),
            );
        }
        v.check(
            label::STATE,
            optional(&self.state, |s| check_creatable_dir(s, "a state directory")),
        );
        v
    }

    /// The config `ferry receive --config` reads; `secret_file` is where the
    /// pairing secret was written (`None`: no pairing).
    pub fn to_config(&self, secret_file: Option<PathBuf>) -> Result<ReceiverConfig, Validation> {
        let v = self.validate();
        if !v.is_ok() {
            return Err(v);
        }
        Ok(ReceiverConfig {
            host: Some(self.host.trim().to_string()),
            port: parse_port(&self.port, true).ok(),
            max_clients: parse_max_clients(&self.max_clients).ok(),
            store: opt_path(&self.store),
            pairing_secret_file: secret_file,
            allow: Vec::new(),
            state: opt_path(&self.state),
            limit_rate: opt_string(&self.limit_rate),
            ..self.bucket_config()
        })
    }

    /// The bucket's part of the config: empty unless the store is a bucket
    /// (a local store refuses bucket settings).
    fn bucket_config(&self) -> ReceiverConfig {
        if !self.in_bucket() {
            return ReceiverConfig::default();
        }
        ReceiverConfig {
            s3_endpoint: opt_string(&self.s3_endpoint),
            s3_region: opt_string(&self.s3_region),
            s3_access_key_id: opt_string(&self.s3_access_key_id),
            s3_secret_access_key: opt_string(&self.s3_secret_access_key),
            recover: self.recover.then_some(true),
            ..ReceiverConfig::default()
        }
    }
}

impl SenderForm {
    /// Checks every field.
    pub fn validate(&self) -> Validation {
        let mut v = Validation::default();
        v.check(
            label::RECEIVER_HOST,
            check_host(
                &self.host,
                "is empty: give the receiver's host name or address",
            ),
        );
        v.check(
            label::RECEIVER_PORT,
            parse_port(&self.port, false).map(|_| ()),
        );
        v.check(
            label::SOURCE,
            check_readable_dir(&self.source, "the directory to back up"),
        );
        v.check(label::EVERY, parse_period(&self.every).map(|_| ()));
        v.check(label::LIMIT_RATE, check_limit_rate(&self.limit_rate));
        v.check(
            label::EXCLUDE,
            ExcludeRules::new(&pattern_lines(&self.exclude), None)
                .map(|_| ())
                .map_err(|e| ferry_agent::chain::chain(&e)),
        );
        v.check(
            label::KEEP_COPIES,
            optional(&self.keep_copies, |s| {
                check_creatable_dir(s, "a directory for copies")
            }),
        );
        v.check(
            label::NAME,
            optional(&self.name, |s| {
                ferry_proto::Name::new(s.trim().to_string())
                    .map(|_| ())
                    .map_err(|e| e.to_string())
            }),
        );
        v.check(
            label::RECEIVER_ID,
            optional(&self.receiver_id, |s| {
                s.trim()
                    .parse::<DeviceId>()
                    .map(|_| ())
                    .map_err(|e| e.to_string())
            }),
        );
        v.check(
            label::STATE,
            optional(&self.state, |s| check_creatable_dir(s, "a state directory")),
        );
        v.check(
            label::KEY_FILE,
            check_key_file(self.protect, &self.key_file),
        );
        v
    }

    /// The config `ferry send --config` reads; `secret_file` is where the
    /// pairing secret was written (`None`: no pairing).
    pub fn to_config(&self, secret_file: Option<PathBuf>) -> Result<SenderConfig, Validation> {
        let v = self.validate();
        if !v.is_ok() {
            return Err(v);
        }
        Ok(SenderConfig {
            host: opt_string(&self.host),
            port: parse_port(&self.port, false).ok(),
            source: opt_path(&self.source),
            every: opt_string(&self.every),
            once: None,
            keep_copies: opt_path(&self.keep_copies),
            pairing_secret_file: secret_file,
            name: opt_string(&self.name),
            folder: None,
            store: None,
            receiver_id: opt_string(&self.receiver_id),
            state: opt_path(&self.state),
            limit_rate: opt_string(&self.limit_rate),
            compress: Some(self.compress.to_string()),
            exclude: pattern_lines(&self.exclude),
            watch: self.watch.then_some(true),
            protect: (self.protect != Protect::Plain).then(|| self.protect.flag().to_string()),
            key_file: match self.protect {
                Protect::Plain => None,
                Protect::Encrypted | Protect::WriteOnly => opt_path(&self.key_file),
            },
            ..SenderConfig::default()
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn receiver_form_reports_each_field() {
        let dir = tempfile::tempdir().unwrap();
        let mut form = ReceiverForm {
            port: "99999".into(),
            max_clients: "0".into(),
            ..Default::default()
        };
        let v = form.validate();
        assert!(v.error(label::PORT).is_some());
        assert!(v.error(label::MAX_CLIENTS).is_some());
        assert!(v.error(label::STORE).unwrap().contains("empty"));
        assert!(v.reason().unwrap().starts_with("Port"));
        form.port = "0".into();
        form.max_clients = "2".into();
        form.store = dir.path().join("new-store").display().to_string();
        assert!(form.validate().is_ok(), "{:?}", form.validate());
        form.store = dir.path().join("a/b").display().to_string();
        assert!(form.validate().error(label::STORE).is_some());
    }

    #[test]
    fn a_bucket_store_is_checked_and_becomes_the_receivers_bucket_settings() {
        let dir = tempfile::tempdir().unwrap();
        let mut form = ReceiverForm {
            store: "s3://".into(),
            state: dir.path().join("state").display().to_string(),
            ..Default::default()
        };
        assert!(form.in_bucket());
        assert!(form.validate().error(label::STORE).is_some());
        form.store = "s3://backups/office".into();
        form.s3_endpoint = "10.0.0.5:8333".into();
        form.s3_access_key_id = "AKIA".into();
        let v = form.validate();
        assert!(v.error(label::S3_ENDPOINT).unwrap().contains("http://"));
        assert!(v.error(label::S3_SECRET).unwrap().contains("secret"));
        form.s3_endpoint = "http://10.0.0.5:8333".into();
        form.s3_secret_access_key = "shh".into();
        form.recover = true;
        let config = form.to_config(None).unwrap();
        assert_eq!(config.store, Some(PathBuf::from("s3://backups/office")));
        assert_eq!(config.s3_endpoint.as_deref(), Some("http://10.0.0.5:8333"));
        assert_eq!(config.s3_access_key_id.as_deref(), Some("AKIA"));
        assert_eq!(config.s3_secret_access_key.as_deref(), Some("shh"));
        assert_eq!(config.recover, Some(true));
        let settings = config.settings().unwrap();
        let bucket = settings.bucket.expect("a bucket store");
        assert_eq!(bucket.endpoint.as_deref(), Some("http://10.0.0.5:8333"));
        // The catalog (and the admin's settings) stay in the state.
        assert_eq!(settings.store, dir.path().join("state/store"));
        assert_eq!(form.local_store(), settings.store.display().to_string());
        // A directory store sends no bucket settings, whatever was typed.
        form.store = dir.path().join("store").display().to_string();
        let config = form.to_config(None).unwrap();
        assert_eq!((&config.s3_endpoint, config.recover), (&None, None));
        assert!(config.settings().unwrap().bucket.is_none());
    }

    #[test]
    fn sender_form_reports_each_field() {
        let dir = tempfile::tempdir().unwrap();
        let file = dir.path().join("f");
        std::fs::write(&file, "x").unwrap();
        let mut form = SenderForm {
            host: "bad host!".into(),
            source: file.display().to_string(),
            every: "often".into(),
            name: "a/b".into(),
            receiver_id: "nope".into(),
            ..Default::default()
        };
        let v = form.validate();
        for field in [
            label::RECEIVER_HOST,
            label::SOURCE,
            label::EVERY,
            label::NAME,
            label::RECEIVER_ID,
        ] {
            assert!(v.error(field).is_some(), "{field}: {v:?}");
        }
        assert!(v.error(label::SOURCE).unwrap().contains("not a directory"));
        form.host = "backup.lan".into();
        form.source = dir.path().display().to_string();
        form.every = "1h".into();
        form.name = "laptop".into();
        form.receiver_id = String::new();
        assert!(form.validate().is_ok(), "{:?}", form.validate());
        let config = form.to_config(None).unwrap();
        assert_eq!(config.every.as_deref(), Some("1h"));
        assert_eq!(config.host.as_deref(), Some("backup.lan"));
        assert_eq!(config.keep_copies, None);
    }

    #[test]
    fn a_bad_bandwidth_limit_disables_start_on_both_roles() {
        let dir = tempfile::tempdir().unwrap();
        let mut receiver = ReceiverForm {
            store: dir.path().join("store").display().to_string(),
            limit_rate: "25:00-18:00=1MB/s".into(),
            ..Default::default()
        };
        let v = receiver.validate();
        assert!(!v.is_ok());
        assert!(v.error(label::LIMIT_RATE).is_some(), "{v:?}");
        let reason = v.reason().unwrap();
        assert!(reason.starts_with("Bandwidth limit: "), "{reason}");
        assert!(reason.contains("25:00"), "{reason}");
        assert!(receiver.to_config(None).is_err());
        receiver.limit_rate = " 08:00-18:00=2MB/s,10MB/s ".into();
        assert!(receiver.validate().is_ok(), "{:?}", receiver.validate());
        let config = receiver.to_config(None).unwrap();
        assert_eq!(
            config.limit_rate.as_deref(),
            Some("08:00-18:00=2MB/s,10MB/s")
        );
        let schedule = config.settings().unwrap().limit_rate.unwrap();
        assert_eq!(schedule.rate_at(12 * 60), Some(2_000_000));
        receiver.limit_rate = "  ".into();
        assert_eq!(receiver.to_config(None).unwrap().limit_rate, None);

        let mut sender = SenderForm {
            host: "backup.lan".into(),
            source: dir.path().display().to_string(),
            limit_rate: "25:00-18:00=1MB/s".into(),
            ..Default::default()
        };
        let reason = sender.validate().reason().unwrap();
        assert!(reason.starts_with("Bandwidth limit: "), "{reason}");
        sender.limit_rate = "10MB/s".into();
        let config = sender.to_config(None).unwrap();
        assert_eq!(config.limit_rate.as_deref(), Some("10MB/s"));
        sender.limit_rate.clear();
        assert_eq!(sender.to_config(None).unwrap().limit_rate, None);
    }

    #[test]
    fn watch_reaches_the_sender_config() {
        let dir = tempfile::tempdir().unwrap();
        let mut form = SenderForm {
            host: "127.0.0.1".into(),
            source: dir.path().display().to_string(),
            ..Default::default()
        };
        assert_eq!(form.to_config(None).unwrap().watch, None);
        form.watch = true;
        let config = form.to_config(None).unwrap();
        assert_eq!(config.watch, Some(true));
        assert!(config.settings().unwrap().watch.is_some());
    }

    #[test]
    fn compression_reaches_the_sender_config() {
        let dir = tempfile::tempdir().unwrap();
        let mut form = SenderForm {
            host: "127.0.0.1".into(),
            source: dir.path().display().to_string(),
            ..Default::default()
        };
        assert_eq!(form.compress, CompressMode::Auto);
        for (mode, text) in [
            (CompressMode::Auto, "auto"),
            (CompressMode::On, "on"),
            (CompressMode::Off, "off"),
        ] {
            form.compress = mode;
            let config = form.to_config(None).unwrap();
            assert_eq!(config.compress.as_deref(), Some(text));
            // What the saved config file says, `ferry send --config` reads.
            let file: SenderConfig = toml::from_str(&toml::to_string(&config).unwrap()).unwrap();
            assert_eq!(file.settings().unwrap().compress, mode);
        }
        assert_eq!(compress_name(CompressMode::Off), "Off");
    }

    #[test]
    fn forms_saved_before_the_new_fields_still_load() {
        let receiver: ReceiverForm = toml::from_str("store = \"/srv/ferry\"\n").unwrap();
        assert_eq!(receiver.limit_rate, "");
        let sender: SenderForm = toml::from_str("host = \"backup.lan\"\nevery = \"1h\"\n").unwrap();
        assert_eq!(sender.limit_rate, "");
        assert_eq!(sender.compress, CompressMode::Auto);
        let sender: SenderForm =
            toml::from_str("compress = \"off\"\nlimit-rate = \"1MB/s\"\n").unwrap();
        assert_eq!(sender.compress, CompressMode::Off);
        assert_eq!(sender.limit_rate, "1MB/s");
    }

    #[test]
    fn the_protection_and_its_key_file_reach_the_sender_config() {
        let dir = tempfile::tempdir().unwrap();
        let passphrase = dir.path().join("passphrase");
        std::fs::write(&passphrase, "launcher test passphrase").unwrap();
        let key = dir.path().join("folder.key");
        let public = ferry_agent::keys::create_key_file(
            &key,
            &ferry_agent::keys::Passphrase::File(passphrase),
        )
        .unwrap();
        let public_file = dir.path().join("folder.pub");
        ferry_agent::keys::write_public_file(&public_file, &public).unwrap();
        let source = dir.path().join("src");
        std::fs::create_dir(&source).unwrap();
        let form = |protect, key_file: &std::path::Path| SenderForm {
            host: "backup.lan".into(),
            source: source.display().to_string(),
            protect,
            key_file: key_file.display().to_string(),
            ..SenderForm::default()
        };

        // Each mode with its kind of file is accepted, and reaches the
        // settings the sender runs with.
        for (protect, file, expected) in [
            (
                Protect::Encrypted,
                &key,
                ferry_proto::Protection::Encrypted {
                    key: public.key_id(),
                },
            ),
            (
                Protect::WriteOnly,
                &public_file,
                ferry_proto::Protection::WriteOnly {
                    key: public.key_id(),
                },
            ),
        ] {
            let config = form(protect, file).to_config(None).unwrap();
            assert_eq!(config.protect.as_deref(), Some(protect.flag()));
            assert_eq!(config.key_file.as_deref(), Some(file.as_path()));
            match config.settings().unwrap().protect {
                ferry_agent::config::FolderProtect::Sealed { protection, .. } => {
                    assert_eq!(protection, expected)
                }
                other => panic!("{protect:?}: {other:?}"),
            }
        }

        // The wrong kind of file, none, or one that is not a key: the key
        // file field says what is needed.
        for (protect, file, says) in [
            (Protect::Encrypted, public_file.clone(), "public half"),
            (Protect::WriteOnly, key.clone(), "whole key"),
            (Protect::Encrypted, std::path::PathBuf::new(), "is empty"),
            (Protect::WriteOnly, source.join("missing"), "key file"),
        ] {
            let v = form(protect, &file).validate();
            let problem = v.error(label::KEY_FILE).unwrap_or_default().to_string();
            assert!(problem.contains(says), "{protect:?} {file:?}: {problem:?}");
            assert!(form(protect, &file).to_config(None).is_err());
        }

        // Plain ignores a key file left in the field.
        let config = form(Protect::Plain, &key).to_config(None).unwrap();
        assert_eq!((config.protect, config.key_file), (None, None));
    }
}
