//! This node's identity: a persistent key pair, a self-signed certificate and
//! the device id derived from the public key.
//!
//! The identity lives in `STATE/identity/` as `key.der` (PKCS#8, mode 0600) and
//! `cert.der` (X.509). It is created on first start and never silently
//! replaced: a new key means a new device id, which every peer would have to be
//! told about.
//!
//! ## Layout
//!
//! - this file: the key pair and certificate, created and loaded.
//! - `device_id`: the [`DeviceId`] (a hash of the public key), its text form
//!   and parsing.

mod device_id;

use std::fmt;
use std::fs;
use std::io::{self, Write};
use std::os::unix::fs::{DirBuilderExt, OpenOptionsExt, PermissionsExt};
use std::path::{Path, PathBuf};

use rcgen::PublicKeyData;
use rustls::pki_types::{CertificateDer, PrivateKeyDer, PrivatePkcs8KeyDer};

pub use device_id::{DeviceId, ParseDeviceIdError, DEVICE_ID_CHARS};

/// Folder inside the state directory that holds the identity.
pub const IDENTITY_DIR: &str = "identity";
/// File name of the certificate (DER) inside [`IDENTITY_DIR`].
pub const CERT_FILE: &str = "cert.der";
/// File name of the private key (PKCS#8 DER) inside [`IDENTITY_DIR`].
pub const KEY_FILE: &str = "key.der";
/// Subject common name and DNS name of every Ferry certificate.
pub const CERT_NAME: &str = "ferry";

/// Mode of the state and identity folders.
const DIR_MODE: u32 = 0o700;
/// Mode of the key and certificate files.
const FILE_MODE: u32 = 0o600;

/// What went wrong creating, loading or parsing an identity.
#[derive(Debug, thiserror::Error)]
pub enum IdentityError {
    /// A folder could not be created.
    #[error("could not create the folder {path}")]
    CreateDir {
        /// The folder.
        path: PathBuf,
        /// The OS error.
        source: io::Error,
    },
    /// A file could not be read or examined.
    #[error("could not read {path}")]
    Read {
        /// The file.
        path: PathBuf,
        /// The OS error.
        source: io::Error,
    },
    /// A file could not be written.
    #[error("could not write {path}")]
    Write {
        /// The file.
        path: PathBuf,
        /// The OS error.
        source: io::Error,
    },
    /// One of the two identity files exists and the other does not.
    #[error(
        "{missing} is missing while {present} exists, so this machine's identity cannot be \
         loaded. Restore the missing file from a backup if you can. Deleting the folder {dir} \
         would give this machine a NEW device id that all its peers must be told about"
    )]
    Incomplete {
        /// The file that is missing.
        missing: PathBuf,
        /// The file that exists.
        present: PathBuf,
        /// The identity folder.
        dir: PathBuf,
    },
    /// A file exists but does not hold what it should.
    #[error(
        "{path} is corrupt ({reason}), so this machine's identity cannot be loaded. Restore it \
         from a backup if you can. Deleting the folder {dir} would give this machine a NEW \
         device id that all its peers must be told about"
    )]
    Corrupt {
        /// The corrupt file.
        path: PathBuf,
        /// What is wrong with it.
        reason: String,
        /// The identity folder.
        dir: PathBuf,
    },
    /// The private key file can be read by other users.
    #[error(
        "{path} is readable by other users (mode {mode:03o}); refusing to use a private key \
         others can read. Run `chmod 600 {path}` and start again"
    )]
    KeyTooOpen {
        /// The key file.
        path: PathBuf,
        /// Its permission bits.
        mode: u32,
    },
    /// Key or certificate generation failed.
    #[error("could not generate a key pair and certificate")]
    Generate(#[from] rcgen::Error),
    /// Bytes that should be an X.509 certificate are not one.
    #[error("not a well-formed X.509 certificate: {reason}")]
    BadCertificate {
        /// What the parser said.
        reason: String,
    },
}

/// A node's identity: its certificate, private key and device id.
pub struct Identity {
    /// The self-signed certificate (DER).
    pub cert: CertificateDer<'static>,
    /// The private key (PKCS#8 DER).
    pub key: PrivateKeyDer<'static>,
    /// The device id: blake3 of the certificate's SubjectPublicKeyInfo.
    pub id: DeviceId,
}

impl Clone for Identity {
    fn clone(&self) -> Self {
        Identity {
            cert: self.cert.clone(),
            key: self.key.clone_key(),
            id: self.id,
        }
    }
}

impl fmt::Debug for Identity {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Identity")
            .field("id", &self.id)
            .field("cert_len", &self.cert.len())
            .field("key", &"<redacted>")
            .finish()
    }
}

impl Identity {
    /// A new in-memory identity: an ECDSA P-256 key and a self-signed
    /// certificate for [`CERT_NAME`], valid from 1975 to 4096.
    pub fn generate() -> Result<Identity, IdentityError> {
        let key_pair = rcgen::KeyPair::generate()?;
        let mut params = rcgen::CertificateParams::new(vec![CERT_NAME.to_string()])?;
        let mut name = rcgen::DistinguishedName::new();
        name.push(rcgen::DnType::CommonName, CERT_NAME);
        params.distinguished_name = name;
        let cert = params.self_signed(&key_pair)?;
        Ok(Identity {
            cert: cert.der().clone(),
            key: PrivateKeyDer::Pkcs8(PrivatePkcs8KeyDer::from(key_pair.serialize_der())),
            id: DeviceId::from_spki(&key_pair.subject_public_key_info()),
        })
    }

    /// Loads the identity from `state_dir/identity/`, creating the folders
    /// (mode 0700) and a new identity (files mode 0600) on first start.
    ///
    /// Never replaces an existing identity: if one file is missing, a file is
    /// corrupt, or the key is readable by others, this returns an error and
    /// touches nothing.
    pub fn load_or_create(state_dir: &Path) -> Result<Identity, IdentityError> {
        let dir = state_dir.join(IDENTITY_DIR);
        create_private_dir(state_dir)?;
        create_private_dir(&dir)?;
        let cert_path = dir.join(CERT_FILE);
        let key_path = dir.join(KEY_FILE);
        match (exists(&cert_path)?, exists(&key_path)?) {
            (true, true) => load(&dir, &cert_path, &key_path),
            (false, false) => {
                let identity = Identity::generate()?;
                // The key goes first: a crash between the two renames leaves a
                // key without a certificate, which is reported, not replaced.
                write_atomic(&key_path, identity.key.secret_der(), FILE_MODE).map_err(
                    |source| IdentityError::Write {
                        path: key_path,
                        source,
                    },
                )?;
                write_atomic(&cert_path, &identity.cert, FILE_MODE).map_err(|source| {
                    IdentityError::Write {
                        path: cert_path,
                        source,
                    }
                })?;
                Ok(identity)
            }
            (true, false) => Err(IdentityError::Incomplete {
                missing: key_path,
                present: cert_path,
                dir,
            }),
            (false, true) => Err(IdentityError::Incomplete {
                missing: cert_path,
                present: key_path,
                dir,
            }),
        }
    }
}

/// Loads and cross-checks an existing key and certificate.
fn load(dir: &Path, cert_path: &Path, key_path: &Path) -> Result<Identity, IdentityError> {
    let corrupt = |path: &Path, reason: String| IdentityError::Corrupt {
        path: path.to_path_buf(),
        reason,
        dir: dir.to_path_buf(),
    };
    let read_err = |path: &Path| {
        let path = path.to_path_buf();
        move |source| IdentityError::Read { path, source }
    };

    let mode = fs::metadata(key_path)
        .map_err(read_err(key_path))?
        .permissions()
        .mode();
    if mode & 0o077 != 0 {
        return Err(IdentityError::KeyTooOpen {
            path: key_path.to_path_buf(),
            mode: mode & 0o777,
        });
    }

    let key_der = fs::read(key_path).map_err(read_err(key_path))?;
    let key = PrivateKeyDer::Pkcs8(PrivatePkcs8KeyDer::from(key_der));
    let key_pair = rcgen::KeyPair::try_from(&key)
        .map_err(|e| corrupt(key_path, format!("not a usable PKCS#8 private key: {e}")))?;

    let cert_der = fs::read(cert_path).map_err(read_err(cert_path))?;
    let cert_id = DeviceId::from_cert(&cert_der).map_err(|e| corrupt(cert_path, e.to_string()))?;
    let key_id = DeviceId::from_spki(&key_pair.subject_public_key_info());
    if cert_id != key_id {
        return Err(corrupt(
            cert_path,
            format!("it does not belong to the key in {}", key_path.display()),
        ));
    }
    Ok(Identity {
        cert: CertificateDer::from(cert_der),
        key,
        id: key_id,
    })
}

/// Whether `path` exists (without following a final symlink's absence).
fn exists(path: &Path) -> Result<bool, IdentityError> {
    path.try_exists().map_err(|source| IdentityError::Read {
        path: path.to_path_buf(),
        source,
    })
}

/// Creates `path` and its missing parents with mode 0700; an existing folder is
/// left as it is.
fn create_private_dir(path: &Path) -> Result<(), IdentityError> {
    fs::DirBuilder::new()
        .recursive(true)
        .mode(DIR_MODE)
        .create(path)
        .map_err(|source| IdentityError::CreateDir {
            path: path.to_path_buf(),
            source,
        })
}

/// Writes `bytes` to `path` atomically: a temporary file in the same folder
/// with permission bits `mode`, fsynced, renamed over `path`, then the folder
/// fsynced. Readers see either the old file or the complete new one.
pub(crate) fn write_atomic(path: &Path, bytes: &[u8], mode: u32) -> io::Result<()> {
    let parent = match path.parent() {
        Some(p) if !p.as_os_str().is_empty() => p,
        _ => Path::new("."),
    };
    let name = path
        .file_name()
        .ok_or_else(|| io::Error::new(io::ErrorKind::InvalidInput, "the path has no file name"))?;
    // Unique among live writers: the process id tells processes apart, the
    // counter the writes of one process (threads writing the same file at
    // once must not share, and rename away, one another's temporary file).
    static NEXT: std::sync::atomic::AtomicU64 = std::sync::atomic::AtomicU64::new(0);
    let n = NEXT.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
    let mut tmp_name = std::ffi::OsString::from(".");
    tmp_name.push(name);
    tmp_name.push(format!(".tmp-{}-{n}", std::process::id()));
    let tmp = parent.join(tmp_name);

    let result = (|| {
        let mut file = fs::OpenOptions::new()
            .write(true)
            .create(true)
            .truncate(true)
            .mode(mode)
            .open(&tmp)?;
        // A leftover temp file keeps its old mode; make sure of ours.
        file.set_permissions(fs::Permissions::from_mode(mode))?;
        file.write_all(bytes)?;
        file.sync_all()?;
        fs::rename(&tmp, path)?;
        fs::File::open(parent)?.sync_all()
    })();
    if result.is_err() {
        // Best effort: the original error is the one worth reporting.
        let _ = fs::remove_file(&tmp);
    }
    result
}

#[cfg(test)]
mod tests {
    use super::*;

    fn mode_of(path: &Path) -> anyhow::Result<u32> {
        Ok(fs::metadata(path)?.permissions().mode() & 0o777)
    }

    #[test]
    fn generate_gives_distinct_ids_matching_the_cert() -> anyhow::Result<()> {
        let a = Identity::generate()?;
        let b = Identity::generate()?;
        assert_ne!(a.id, b.id);
        assert_eq!(DeviceId::from_cert(&a.cert)?, a.id);
        let debug = format!("{a:?}");
        assert!(debug.contains(&a.id.to_string()));
        assert!(debug.contains("redacted"));
        Ok(())
    }

    #[test]
    fn identity_persists_with_private_modes() -> anyhow::Result<()> {
        let tmp = tempfile::tempdir()?;
        let state = tmp.path().join("state");
        let first = Identity::load_or_create(&state)?;
        let second = Identity::load_or_create(&state)?;
        assert_eq!(first.id, second.id);
        assert_eq!(first.cert, second.cert);
        assert_eq!(first.key.secret_der(), second.key.secret_der());

        let dir = state.join(IDENTITY_DIR);
        assert_eq!(mode_of(&dir.join(KEY_FILE))?, 0o600);
        assert_eq!(mode_of(&dir.join(CERT_FILE))?, 0o600);
        assert_eq!(mode_of(&dir)?, 0o700);
        assert_eq!(mode_of(&state)?, 0o700);
        // No temporary files are left behind.
        assert_eq!(fs::read_dir(&dir)?.count(), 2);
        Ok(())
    }

    #[test]
    fn corrupt_key_is_reported_and_left_alone() -> anyhow::Result<()> {
        let tmp = tempfile::tempdir()?;
        Identity::load_or_create(tmp.path())?;
        let key_path = tmp.path().join(IDENTITY_DIR).join(KEY_FILE);
        fs::write(&key_path, b"garbage")?;

        let err = Identity::load_or_create(tmp.path()).err();
        assert!(matches!(err, Some(IdentityError::Corrupt { ref path, .. }) if *path == key_path));
        let msg = err.map(|e| e.to_string()).unwrap_or_default();
        assert!(msg.contains(&key_path.display().to_string()), "{msg}");
        assert!(msg.contains("NEW device id"), "{msg}");
        assert_eq!(fs::read(&key_path)?, b"garbage");
        Ok(())
    }

    #[test]
    fn cert_of_another_key_is_corrupt() -> anyhow::Result<()> {
        let tmp = tempfile::tempdir()?;
        Identity::load_or_create(tmp.path())?;
        let cert_path = tmp.path().join(IDENTITY_DIR).join(CERT_FILE);
        let other = Identity::generate()?;
        fs::write(&cert_path, &other.cert)?;
        let err = Identity::load_or_create(tmp.path()).err();
        assert!(matches!(err, Some(IdentityError::Corrupt { ref path, .. }) if *path == cert_path));
        assert_eq!(fs::read(&cert_path)?, other.cert.as_ref());
        Ok(())
    }

    #[test]
    fn one_missing_file_is_an_error_not_a_new_identity() -> anyhow::Result<()> {
        let tmp = tempfile::tempdir()?;
        Identity::load_or_create(tmp.path())?;
        let dir = tmp.path().join(IDENTITY_DIR);
        fs::remove_file(dir.join(CERT_FILE))?;
        let err = Identity::load_or_create(tmp.path()).err();
        assert!(
            matches!(err, Some(IdentityError::Incomplete { ref missing, .. }) if *missing == dir.join(CERT_FILE))
        );
        assert!(!dir.join(CERT_FILE).exists());
        Ok(())
    }

    #[test]
    fn key_readable_by_others_is_refused() -> anyhow::Result<()> {
        let tmp = tempfile::tempdir()?;
        Identity::load_or_create(tmp.path())?;
        let key_path = tmp.path().join(IDENTITY_DIR).join(KEY_FILE);
        fs::set_permissions(&key_path, fs::Permissions::from_mode(0o644))?;
        let err = Identity::load_or_create(tmp.path()).err();
        assert!(matches!(
            err,
            Some(IdentityError::KeyTooOpen { mode: 0o644, .. })
        ));
        let msg = err.map(|e| e.to_string()).unwrap_or_default();
        assert!(msg.contains("chmod 600"), "{msg}");
        assert_eq!(mode_of(&key_path)?, 0o644);
        Ok(())
    }
}
