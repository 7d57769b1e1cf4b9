//! Which bucket, where, and with which credentials.
//!
//! `s3://BUCKET/PREFIX` names the bucket and the prefix; the endpoint
//! (`--s3-endpoint`, for anything but AWS itself), the region and the
//! credentials come from the flags or the receiver's config file first, then
//! from where the AWS CLI and restic look:
//!
//! - credentials: `AWS_ACCESS_KEY_ID` / `AWS_SECRET_ACCESS_KEY` (and
//!   `AWS_SESSION_TOKEN`), else the profile (`--s3-profile`, `AWS_PROFILE`,
//!   else `default`) of the shared credentials file
//!   (`AWS_SHARED_CREDENTIALS_FILE`, else `~/.aws/credentials`);
//! - region: `AWS_REGION`, `AWS_DEFAULT_REGION`, the profile's `region` in
//!   `AWS_CONFIG_FILE` (else `~/.aws/config`), else `us-east-1`;
//! - endpoint: `AWS_ENDPOINT_URL_S3`, `AWS_ENDPOINT_URL`.
//!
//! Requests are path-style (`ENDPOINT/BUCKET/KEY`, what self-hosted stores
//! expect) unless `virtual_host` asks for `BUCKET.ENDPOINT/KEY`. Transient
//! failures (HTTP 5xx, throttling, timeouts) are retried with exponential
//! backoff by the client, for at most [`RETRY_FOR`].

use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use object_store::aws::AmazonS3Builder;
use object_store::{BackoffConfig, ClientOptions, RetryConfig};
use serde::{Deserialize, Serialize};

use super::Bucket;

/// How long one request is retried before its error is returned.
pub const RETRY_FOR: Duration = Duration::from_secs(120);

/// Whether a `--store` value names a bucket rather than a directory.
pub fn is_bucket_url(store: &str) -> bool {
    store.starts_with("s3://")
}

/// A bucket as the receiver was told of it.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct BucketSpec {
    /// The bucket's name.
    pub bucket: String,
    /// Ferry's objects live below `PREFIX/ferry/`; empty: the bucket's root.
    #[serde(default)]
    pub prefix: String,
    /// `https://host:port` of an S3-compatible store; none: AWS.
    #[serde(default)]
    pub endpoint: Option<String>,
    #[serde(default)]
    pub region: Option<String>,
    /// `BUCKET.host` requests instead of `host/BUCKET`.
    #[serde(default)]
    pub virtual_host: bool,
    /// The profile of the shared credentials and config files.
    #[serde(default)]
    pub profile: Option<String>,
    #[serde(default)]
    pub access_key_id: Option<String>,
    #[serde(default)]
    pub secret_access_key: Option<String>,
    /// How long one request is retried before it fails (default
    /// [`RETRY_FOR`]).
    #[serde(default)]
    pub retry_for: Option<Duration>,
}

/// A `s3://` address or a bucket setting that cannot be used.
#[derive(Debug, thiserror::Error)]
pub enum SpecError {
    #[error("{url:?} is not a bucket address: write s3://BUCKET or s3://BUCKET/PREFIX")]
    NotS3 { url: String },
    #[error("{url:?} names no bucket: write s3://BUCKET or s3://BUCKET/PREFIX")]
    NoBucket { url: String },
    #[error("the prefix of {url:?} has an empty, \".\" or \"..\" part")]
    BadPrefix { url: String },
    #[error("the S3 endpoint {endpoint:?} is not an http:// or https:// address")]
    BadEndpoint { endpoint: String },
    #[error(
        "an access key id is set ({from}) but no secret access key: set both, \
         or neither to use the environment or a profile"
    )]
    HalfCredentials { from: &'static str },
    #[error(
        "no S3 credentials: set AWS_ACCESS_KEY_ID and AWS_SECRET_ACCESS_KEY, \
         or a profile in {file} (profile {profile:?}), or access_key_id and \
         secret_access_key in the receiver's config file"
    )]
    NoCredentials { file: PathBuf, profile: String },
    #[error("could not read {path}")]
    ReadProfile {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
}

/// Opening a bucket failed.
#[derive(Debug, thiserror::Error)]
pub enum OpenBucketError {
    #[error(transparent)]
    Spec(#[from] SpecError),
    #[error("could not set up the S3 client for {name}")]
    Client {
        name: String,
        #[source]
        source: object_store::Error,
    },
}

/// Where the credentials came from, for messages.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum CredentialSource {
    Config,
    Environment,
    Profile { file: PathBuf, profile: String },
}

/// Resolved credentials.
#[derive(Clone, PartialEq, Eq)]
pub struct Credentials {
    pub access_key_id: String,
    pub secret_access_key: String,
    pub session_token: Option<String>,
    pub source: CredentialSource,
}

impl std::fmt::Debug for Credentials {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Credentials")
            .field("access_key_id", &self.access_key_id)
            .field("source", &self.source)
            .finish_non_exhaustive()
    }
}

/// The process environment, as the resolution reads it (a map in tests).
pub trait Env {
    fn var(&self, name: &str) -> Option<String>;
    fn home(&self) -> Option<PathBuf>;
}

/// The real environment.
pub struct ProcessEnv;

impl Env for ProcessEnv {
    fn var(&self, name: &str) -> Option<String> {
        std::env::var(name).ok().filter(|v| !v.is_empty())
    }
    fn home(&self) -> Option<PathBuf> {
        std::env::var_os("HOME").map(PathBuf::from)
    }
}

impl BucketSpec {
    /// The bucket and prefix of `s3://BUCKET/PREFIX`; everything else unset.
    pub fn parse(url: &str) -> Result<BucketSpec, SpecError> {
        let rest = url
            .strip_prefix("s3://")
            .ok_or_else(|| SpecError::NotS3 { url: url.into() })?;
        let (bucket, prefix) = rest.split_once('/').unwrap_or((rest, ""));
        if bucket.is_empty() {
            return Err(SpecError::NoBucket { url: url.into() });
        }
        let prefix = prefix.trim_matches('/');
        if !prefix.is_empty()
            && prefix
                .split('/')
                .any(|part| part.is_empty() || part == "." || part == "..")
        {
            return Err(SpecError::BadPrefix { url: url.into() });
        }
        Ok(BucketSpec {
            bucket: bucket.to_string(),
            prefix: prefix.to_string(),
            ..BucketSpec::default()
        })
    }

    /// `s3://BUCKET/PREFIX`.
    pub fn url(&self) -> String {
        if self.prefix.is_empty() {
            format!("s3://{}", self.bucket)
        } else {
            format!("s3://{}/{}", self.bucket, self.prefix)
        }
    }

    fn profile_name(&self, env: &dyn Env) -> String {
        self.profile
            .clone()
            .or_else(|| env.var("AWS_PROFILE"))
            .unwrap_or_else(|| "default".to_string())
    }

    /// The credentials, from the spec, the environment or the profile.
    pub fn credentials(&self, env: &dyn Env) -> Result<Credentials, SpecError> {
        match (&self.access_key_id, &self.secret_access_key) {
            (Some(id), Some(secret)) => {
                return Ok(Credentials {
                    access_key_id: id.clone(),
                    secret_access_key: secret.clone(),
                    session_token: None,
                    source: CredentialSource::Config,
                })
            }
            (Some(_), None) | (None, Some(_)) => {
                return Err(SpecError::HalfCredentials {
                    from: "in the receiver's settings",
                })
            }
            (None, None) => {}
        }
        match (
            env.var("AWS_ACCESS_KEY_ID"),
            env.var("AWS_SECRET_ACCESS_KEY"),
        ) {
            (Some(id), Some(secret)) => {
                return Ok(Credentials {
                    access_key_id: id,
                    secret_access_key: secret,
                    session_token: env.var("AWS_SESSION_TOKEN"),
                    source: CredentialSource::Environment,
                })
            }
            (Some(_), None) | (None, Some(_)) => {
                return Err(SpecError::HalfCredentials {
                    from: "in AWS_ACCESS_KEY_ID / AWS_SECRET_ACCESS_KEY",
                })
            }
            (None, None) => {}
        }
        let profile = self.profile_name(env);
        let file = env
            .var("AWS_SHARED_CREDENTIALS_FILE")
            .map(PathBuf::from)
            .or_else(|| env.home().map(|h| h.join(".aws/credentials")))
            .unwrap_or_else(|| PathBuf::from(".aws/credentials"));
        let section = read_ini(&file)?.and_then(|ini| section(&ini, &profile));
        let missing = || SpecError::NoCredentials {
            file: file.clone(),
            profile: profile.clone(),
        };
        let section = section.ok_or_else(missing)?;
        match (
            section.get("aws_access_key_id"),
            section.get("aws_secret_access_key"),
        ) {
            (Some(id), Some(secret)) => Ok(Credentials {
                access_key_id: id.clone(),
                secret_access_key: secret.clone(),
                session_token: section.get("aws_session_token").cloned(),
                source: CredentialSource::Profile {
                    file: file.clone(),
                    profile: profile.clone(),
                },
            }),
            (Some(_), None) | (None, Some(_)) => Err(SpecError::HalfCredentials {
                from: "in the credentials file",
            }),
            (None, None) => Err(missing()),
        }
    }

    /// The region: the spec's, the environment's, the profile's, else
    /// `us-east-1`.
    pub fn region(&self, env: &dyn Env) -> Result<String, SpecError> {
        if let Some(region) = self
            .region
            .clone()
            .or_else(|| env.var("AWS_REGION"))
            .or_else(|| env.var("AWS_DEFAULT_REGION"))
        {
            return Ok(region);
        }
        let profile = self.profile_name(env);
        let file = env
            .var("AWS_CONFIG_FILE")
            .map(PathBuf::from)
            .or_else(|| env.home().map(|h| h.join(".aws/config")));
        let Some(file) = file else {
            return Ok("us-east-1".to_string());
        };
        let name = if profile == "default" {
            profile
        } else {
            format!("profile {profile}")
        };
        Ok(read_ini(&file)?
            .and_then(|ini| section(&ini, &name))
            .and_then(|s| s.get("region").cloned())
            .unwrap_or_else(|| "us-east-1".to_string()))
    }

    /// The endpoint: the spec's or the environment's; none means AWS.
    pub fn endpoint(&self, env: &dyn Env) -> Result<Option<String>, SpecError> {
        let endpoint = self
            .endpoint
            .clone()
            .or_else(|| env.var("AWS_ENDPOINT_URL_S3"))
            .or_else(|| env.var("AWS_ENDPOINT_URL"));
        match endpoint {
            Some(e) if !(e.starts_with("http://") || e.starts_with("https://")) => {
                Err(SpecError::BadEndpoint { endpoint: e })
            }
            other => Ok(other.map(|e| e.trim_end_matches('/').to_string())),
        }
    }

    /// The bucket, with the process's environment.
    pub fn open(&self) -> Result<Bucket, OpenBucketError> {
        self.open_with(&ProcessEnv)
    }

    /// The bucket, with `env` standing for the environment.
    pub fn open_with(&self, env: &dyn Env) -> Result<Bucket, OpenBucketError> {
        // reqwest's TLS is rustls without a bundled provider: use ring, as
        // quinn does. Installing twice is refused harmlessly.
        let _ = rustls::crypto::ring::default_provider().install_default();
        let credentials = self.credentials(env)?;
        let region = self.region(env)?;
        let endpoint = self.endpoint(env)?;
        let mut builder = AmazonS3Builder::new()
            .with_bucket_name(&self.bucket)
            .with_region(region)
            .with_access_key_id(credentials.access_key_id)
            .with_secret_access_key(credentials.secret_access_key)
            .with_virtual_hosted_style_request(self.virtual_host)
            .with_retry(RetryConfig {
                backoff: BackoffConfig {
                    init_backoff: Duration::from_millis(250),
                    max_backoff: Duration::from_secs(10),
                    base: 2.0,
                },
                // Bounded by RETRY_FOR rather than a count: ten jittered
                // tries from 250 ms cover only a few seconds, less than a
                // gateway takes to restart.
                max_retries: 60,
                retry_timeout: self.retry_for.unwrap_or(RETRY_FOR),
            })
            .with_client_options(
                ClientOptions::new()
                    .with_connect_timeout(Duration::from_secs(10))
                    .with_timeout(Duration::from_secs(120)),
            );
        if let Some(token) = credentials.session_token {
            builder = builder.with_token(token);
        }
        if let Some(endpoint) = endpoint {
            builder = builder
                .with_allow_http(endpoint.starts_with("http://"))
                .with_endpoint(endpoint);
        }
        let name = self.url();
        let store = builder.build().map_err(|source| OpenBucketError::Client {
            name: name.clone(),
            source,
        })?;
        Ok(Bucket::new(Arc::new(store), &self.prefix, name))
    }
}

/// An INI file's sections by name, each its keys and values.
type Ini = HashMap<String, HashMap<String, String>>;

/// An INI file's sections (`[name]`, `key = value`, `#` and `;` comments),
/// or `None` if the file does not exist.
fn read_ini(path: &Path) -> Result<Option<Ini>, SpecError> {
    match std::fs::read_to_string(path) {
        Ok(text) => Ok(Some(parse_ini(&text))),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(None),
        Err(source) => Err(SpecError::ReadProfile {
            path: path.to_path_buf(),
            source,
        }),
    }
}

fn parse_ini(text: &str) -> Ini {
    let mut sections = Ini::new();
    let mut current: Option<String> = None;
    for line in text.lines() {
        let line = line.trim();
        if line.is_empty() || line.starts_with('#') || line.starts_with(';') {
            continue;
        }
        if let Some(name) = line.strip_prefix('[').and_then(|l| l.strip_suffix(']')) {
            let name = name.trim().to_string();
            sections.entry(name.clone()).or_default();
            current = Some(name);
        } else if let (Some(name), Some((key, value))) = (&current, line.split_once('=')) {
            sections
                .entry(name.clone())
                .or_default()
                .insert(key.trim().to_string(), value.trim().to_string());
        }
    }
    sections
}

fn section(ini: &Ini, name: &str) -> Option<HashMap<String, String>> {
    ini.get(name).cloned()
}

#[cfg(test)]
mod tests {
    use super::*;

    struct MapEnv(HashMap<&'static str, String>, Option<PathBuf>);

    impl Env for MapEnv {
        fn var(&self, name: &str) -> Option<String> {
            self.0.get(name).cloned()
        }
        fn home(&self) -> Option<PathBuf> {
            self.1.clone()
        }
    }

    fn env(vars: &[(&'static str, &str)], home: Option<&Path>) -> MapEnv {
        MapEnv(
            vars.iter().map(|(k, v)| (*k, v.to_string())).collect(),
            home.map(Path::to_path_buf),
        )
    }

    #[test]
    fn urls_name_a_bucket_and_a_clean_prefix() {
        let spec = BucketSpec::parse("s3://backups/office/ferry-rx/").unwrap();
        assert_eq!(spec.bucket, "backups");
        assert_eq!(spec.prefix, "office/ferry-rx");
        assert_eq!(spec.url(), "s3://backups/office/ferry-rx");
        assert_eq!(BucketSpec::parse("s3://b").unwrap().prefix, "");
        assert_eq!(BucketSpec::parse("s3://b").unwrap().url(), "s3://b");
        for bad in ["/srv/store", "s3:/b", "s3://", "s3:///p"] {
            let e = BucketSpec::parse(bad).unwrap_err();
            assert!(
                matches!(e, SpecError::NotS3 { .. } | SpecError::NoBucket { .. }),
                "{bad}: {e}"
            );
        }
        for bad in ["s3://b/a//c", "s3://b/a/../c", "s3://b/./c"] {
            assert!(matches!(
                BucketSpec::parse(bad),
                Err(SpecError::BadPrefix { .. })
            ));
        }
        assert!(is_bucket_url("s3://b") && !is_bucket_url("/srv/s3://b"));
    }

    #[test]
    fn credentials_come_from_settings_then_environment_then_profile() {
        let home = tempfile::tempdir().unwrap();
        std::fs::create_dir(home.path().join(".aws")).unwrap();
        std::fs::write(
            home.path().join(".aws/credentials"),
            "# comment\n[default]\naws_access_key_id = DEF\naws_secret_access_key = defsecret\n\n\
             [office]\naws_access_key_id=OFF\naws_secret_access_key= offsecret \naws_session_token = tok\n",
        )
        .unwrap();
        std::fs::write(
            home.path().join(".aws/config"),
            "[default]\nregion = eu-west-1\n[profile office]\nregion = eu-central-1\n",
        )
        .unwrap();
        let mut spec = BucketSpec::parse("s3://b/p").unwrap();

        let from_profile = spec.credentials(&env(&[], Some(home.path()))).unwrap();
        assert_eq!(from_profile.access_key_id, "DEF");
        assert_eq!(from_profile.secret_access_key, "defsecret");
        assert_eq!(
            spec.region(&env(&[], Some(home.path()))).unwrap(),
            "eu-west-1"
        );

        let office = env(&[("AWS_PROFILE", "office")], Some(home.path()));
        let c = spec.credentials(&office).unwrap();
        assert_eq!(
            (c.access_key_id.as_str(), c.secret_access_key.as_str()),
            ("OFF", "offsecret")
        );
        assert_eq!(c.session_token.as_deref(), Some("tok"));
        assert_eq!(spec.region(&office).unwrap(), "eu-central-1");

        let vars = env(
            &[
                ("AWS_ACCESS_KEY_ID", "ENV"),
                ("AWS_SECRET_ACCESS_KEY", "envsecret"),
                ("AWS_REGION", "ap-south-1"),
            ],
            Some(home.path()),
        );
        let c = spec.credentials(&vars).unwrap();
        assert_eq!(c.access_key_id, "ENV");
        assert_eq!(c.source, CredentialSource::Environment);
        assert_eq!(spec.region(&vars).unwrap(), "ap-south-1");

        spec.access_key_id = Some("CFG".into());
        spec.secret_access_key = Some("cfgsecret".into());
        assert_eq!(spec.credentials(&vars).unwrap().access_key_id, "CFG");
        assert!(!format!("{:?}", spec.credentials(&vars).unwrap()).contains("secret"));
    }

    #[test]
    fn missing_or_half_credentials_say_what_to_set() {
        let home = tempfile::tempdir().unwrap();
        let spec = BucketSpec::parse("s3://b").unwrap();
        let e = spec.credentials(&env(&[], Some(home.path()))).unwrap_err();
        assert!(matches!(e, SpecError::NoCredentials { .. }));
        assert!(e.to_string().contains("AWS_ACCESS_KEY_ID"), "{e}");
        let half = env(&[("AWS_ACCESS_KEY_ID", "X")], Some(home.path()));
        assert!(matches!(
            spec.credentials(&half),
            Err(SpecError::HalfCredentials { .. })
        ));
        assert_eq!(
            spec.region(&env(&[], Some(home.path()))).unwrap(),
            "us-east-1"
        );
    }

    #[test]
    fn endpoints_must_be_http_addresses() {
        let mut spec = BucketSpec::parse("s3://b").unwrap();
        assert_eq!(spec.endpoint(&env(&[], None)).unwrap(), None);
        let vars = env(&[("AWS_ENDPOINT_URL", "http://127.0.0.1:9000/")], None);
        assert_eq!(
            spec.endpoint(&vars).unwrap().as_deref(),
            Some("http://127.0.0.1:9000")
        );
        spec.endpoint = Some("127.0.0.1:9000".into());
        assert!(matches!(
            spec.endpoint(&vars),
            Err(SpecError::BadEndpoint { .. })
        ));
    }

    #[test]
    fn a_bucket_opens_without_contacting_the_store() {
        let mut spec = BucketSpec::parse("s3://b/p").unwrap();
        spec.endpoint = Some("http://127.0.0.1:1".into());
        spec.access_key_id = Some("k".into());
        spec.secret_access_key = Some("s".into());
        let bucket = spec.open_with(&env(&[], None)).unwrap();
        assert_eq!(bucket.name(), "s3://b/p");
        assert_eq!(bucket.key(&["lock"]).as_ref(), "p/ferry/lock");
    }
}
