//! `ferry receive`'s configuration: [`ReceiverConfig`] as flags and the
//! TOML file give it, validated into [`ReceiverSettings`].

use std::net::{SocketAddr, ToSocketAddrs};
use std::path::{Path, PathBuf};
use std::time::Duration;

use serde::{Deserialize, Serialize};

use super::{
    beneath, config_dir, default_state_dir, invalid, load_toml, parse_limit_rate, read_secret,
    ConfigError, DEFAULT_PORT,
};
use crate::bucket::BucketSpec;
use crate::identity::DeviceId;
use crate::ratelimit::RateSchedule;
use crate::store::Retention;
use crate::units::parse_size;

/// How many senders a receiver serves at once unless told otherwise.
pub const DEFAULT_MAX_CLIENTS: usize = 8;
/// How often a receiver prunes unless told otherwise.
pub const DEFAULT_PRUNE_EVERY: Duration = Duration::from_secs(3600);

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
    /// With `store = "s3://BUCKET/PREFIX"`: the S3-compatible endpoint
    /// (`http(s)://host:port`); none: AWS, or `AWS_ENDPOINT_URL`.
    pub s3_endpoint: Option<String>,
    /// With a bucket store: its region (else `AWS_REGION`, the profile's).
    pub s3_region: Option<String>,
    /// With a bucket store: the profile of `~/.aws/credentials` to use.
    pub s3_profile: Option<String>,
    /// With a bucket store: `BUCKET.host` requests instead of `host/BUCKET`.
    pub s3_virtual_host: Option<bool>,
    /// With a bucket store: the access key (else the environment's or the
    /// profile's).
    pub s3_access_key_id: Option<String>,
    /// With a bucket store: the secret key that goes with `s3-access-key-id`.
    pub s3_secret_access_key: Option<String>,
    /// With a bucket store: how long one request to the bucket is retried
    /// before the files waiting on it fail (e.g. `30s`; default 2m).
    pub s3_retry_for: Option<String>,
    /// With a bucket store: rebuild the state directory's catalog from the
    /// newest copy in the bucket (the state directory must not have one).
    pub recover: Option<bool>,
}

impl ReceiverConfig {
    /// Reads a TOML config file. Relative paths in it are taken from the
    /// file's directory, not the current one (flags stay relative to the
    /// current directory).
    pub fn load(path: &Path) -> Result<Self, ConfigError> {
        let mut config: Self = load_toml(path)?;
        let dir = config_dir(path)?;
        if !config
            .store
            .as_ref()
            .is_some_and(|s| crate::bucket::is_bucket_url(&s.to_string_lossy()))
        {
            beneath(&dir, &mut config.store);
        }
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
            s3_endpoint: over.s3_endpoint.or(self.s3_endpoint),
            s3_region: over.s3_region.or(self.s3_region),
            s3_profile: over.s3_profile.or(self.s3_profile),
            s3_virtual_host: over.s3_virtual_host.or(self.s3_virtual_host),
            s3_access_key_id: over.s3_access_key_id.or(self.s3_access_key_id),
            s3_secret_access_key: over.s3_secret_access_key.or(self.s3_secret_access_key),
            s3_retry_for: over.s3_retry_for.or(self.s3_retry_for),
            recover: over.recover.or(self.recover),
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
            hint: "give the directory where the receiver keeps what senders send, or s3://BUCKET/PREFIX",
        })?;
        let duration = |field: &'static str, text: &str| {
            humantime::parse_duration(text)
                .map_err(|e| invalid(field, format!("{text:?}: {e} (examples: 90d, 12h, 30m)")))
        };
        let state = self.state.clone().unwrap_or_else(default_state_dir);
        let url = store.to_string_lossy().into_owned();
        let (store, bucket) = if crate::bucket::is_bucket_url(&url) {
            let spec = BucketSpec {
                endpoint: self.s3_endpoint.clone(),
                region: self.s3_region.clone(),
                profile: self.s3_profile.clone(),
                virtual_host: self.s3_virtual_host.unwrap_or(false),
                access_key_id: self.s3_access_key_id.clone(),
                secret_access_key: self.s3_secret_access_key.clone(),
                retry_for: self
                    .s3_retry_for
                    .as_deref()
                    .map(|d| duration("s3-retry-for", d))
                    .transpose()?,
                ..BucketSpec::parse(&url).map_err(|e| invalid("store", e.to_string()))?
            };
            // The catalog and staging stay on this machine, in the state.
            (state.join("store"), Some(spec))
        } else {
            let s3_only = [
                ("s3-endpoint", self.s3_endpoint.is_some()),
                ("s3-region", self.s3_region.is_some()),
                ("s3-profile", self.s3_profile.is_some()),
                ("s3-virtual-host", self.s3_virtual_host.is_some()),
                ("s3-access-key-id", self.s3_access_key_id.is_some()),
                ("s3-secret-access-key", self.s3_secret_access_key.is_some()),
                ("s3-retry-for", self.s3_retry_for.is_some()),
                ("recover", self.recover.unwrap_or(false)),
            ];
            if let Some((field, _)) = s3_only.iter().find(|(_, set)| *set) {
                return Err(invalid(
                    field,
                    "applies only to a store in a bucket (--store s3://BUCKET/PREFIX)",
                ));
            }
            (store, None)
        };
        let allow = self
            .allow
            .iter()
            .map(|id| {
                id.parse()
                    .map_err(|e| invalid("allow", format!("{id:?}: {e}")))
            })
            .collect::<Result<Vec<DeviceId>, _>>()?;
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
            None => DEFAULT_PRUNE_EVERY,
        };
        if prune_every < Duration::from_secs(1) {
            return Err(invalid("prune-every", "must be at least 1s"));
        }
        let quota = self
            .quota
            .as_deref()
            .map(|q| parse_size(q).map_err(|e| invalid("quota", e.to_string())))
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
            state,
            bucket,
            recover: self.recover.unwrap_or(false),
        })
    }
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
    /// The bucket, if the store keeps its bytes in one; `store` is then
    /// the local part (catalog, staging) in the state directory.
    pub bucket: Option<BucketSpec>,
    /// Rebuild the local part of a bucket store from the bucket's newest
    /// catalog copy.
    pub recover: bool,
}

fn resolve(host: &str, port: u16) -> Result<SocketAddr, ConfigError> {
    (host, port)
        .to_socket_addrs()
        .map_err(|e| invalid("host", format!("{host:?} does not resolve: {e}")))?
        .next()
        .ok_or_else(|| invalid("host", format!("{host:?} has no address")))
}

#[cfg(test)]
mod tests {
    use super::*;

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
    fn unknown_keys_rejected() {
        assert!(toml::from_str::<ReceiverConfig>("prot = 1\n").is_err());
    }

    #[test]
    fn a_bucket_store_keeps_its_catalog_in_the_state_and_takes_its_settings_from_the_file() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("receiver.toml");
        std::fs::write(
            &path,
            "store = \"s3://backups/office\"\nstate = \"state\"\ns3-endpoint = \"http://10.0.0.5:8333\"\ns3-access-key-id = \"id\"\ns3-secret-access-key = \"secret\"\ns3-retry-for = \"30s\"\n",
        )
        .unwrap();
        let flags = ReceiverConfig {
            s3_region: Some("eu-1".into()),
            recover: Some(true),
            ..Default::default()
        };
        let settings = ReceiverConfig::load(&path)
            .unwrap()
            .merge(flags)
            .settings()
            .unwrap();
        // The address is not taken for a path relative to the file.
        let spec = settings.bucket.unwrap();
        assert_eq!(spec.url(), "s3://backups/office");
        assert_eq!(spec.endpoint.as_deref(), Some("http://10.0.0.5:8333"));
        assert_eq!(spec.region.as_deref(), Some("eu-1"));
        assert_eq!(spec.access_key_id.as_deref(), Some("id"));
        assert_eq!(spec.retry_for, Some(Duration::from_secs(30)));
        assert!(settings.recover);
        assert_eq!(settings.store, dir.path().join("state/store"));
    }

    #[test]
    fn bucket_settings_without_a_bucket_store_are_refused() {
        for config in [
            ReceiverConfig {
                s3_endpoint: Some("http://x".into()),
                ..Default::default()
            },
            ReceiverConfig {
                recover: Some(true),
                ..Default::default()
            },
        ] {
            let config = ReceiverConfig {
                store: Some(PathBuf::from("/srv/ferry")),
                ..config
            };
            let err = config.settings().unwrap_err().to_string();
            assert!(err.contains("s3://BUCKET"), "{err}");
        }
        let bad = ReceiverConfig {
            store: Some(PathBuf::from("s3:///nobucket")),
            ..Default::default()
        };
        assert!(bad.settings().unwrap_err().to_string().contains("bucket"));
    }
}
