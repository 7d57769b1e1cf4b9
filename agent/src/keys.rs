//! # Folder keys on disk: key files, public files, passphrases
//!
//! A protected folder (`ferry send --protect encrypted|write-only`) is sealed
//! to a folder key (`ferry_proto::seal`). Two kinds of text file hold one,
//! each opening with a magic line that names it:
//!
//! - the **key file** (`ferry key new --out F`): the public half in the clear
//!   (sending and `ferry key public` need no passphrase) and the secret half
//!   (`FolderSecret::to_bytes()`) sealed with AES-256-GCM under a key that
//!   Argon2id derives from a passphrase and a random 16-byte salt
//!   (m = 64 MiB, t = 3, p = 1, written in the file so they can change),
//!   with the magic line and the public half as associated data;
//! - the **public file** (`ferry key public F`): the public half only, what a
//!   write-only sender holds.
//!
//! ```text
//! ferry folder key v1                     ferry folder public key v1
//! # comments                              # comments
//! key-id: <32 bytes hex>                  key-id: <32 bytes hex>
//! public: <64 bytes hex: pk ‖ ns>         public: <64 bytes hex>
//! kdf: argon2id m=65536 t=3 p=1
//! salt: <16 bytes hex>
//! nonce: <12 bytes hex>
//! sealed-secret: <64 + 16 bytes hex>
//! ```
//!
//! Both are written with mode 0600, atomically (temp file, fsync, rename
//! that never replaces an existing file).
//!
//! ## Layout
//!
//! - `format`: the text of both kinds, parsed and rendered.
//! - `lock`: Argon2id and AES-256-GCM around the secret half.
//! - `passphrase`: where the passphrase comes from (file, environment,
//!   terminal).
//!
//! This file holds the operations: load the public half or the whole key,
//! create a key file, write a public file.

mod format;
mod lock;
mod passphrase;

pub use passphrase::{passphrase_source, Passphrase, PassphraseError, PASSPHRASE_ENV};

use std::io::{Read, Write};
use std::os::unix::fs::OpenOptionsExt;
use std::path::{Path, PathBuf};

use ferry_proto::seal::{FolderPublic, FolderSecret};
use ferry_proto::Hash;

use format::{KdfParams, Parsed, Problem, SealedSecret};
use lock::LockError;

/// The most bytes read from a file given as a key (key files are well under
/// 1 KiB; a wrong path to a large file must not be read whole).
const MAX_KEY_FILE: u64 = 16 * 1024;

/// Why a key could not be loaded.
#[derive(Debug, thiserror::Error)]
pub enum KeyError {
    #[error("cannot read the key file {path}: check the path given with --key-file")]
    Read {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error(
        "{path} is not a Ferry key file: give the file `ferry key new` or `ferry key public` wrote"
    )]
    NotAKeyFile { path: PathBuf },
    #[error(
        "{path} holds only the public half (a write-only folder's sender key); \
         restoring needs the key file `ferry key new` wrote"
    )]
    PublicOnly { path: PathBuf },
    #[error(
        "the passphrase does not open {path}; nothing was changed \
         (check the passphrase, or the file was changed: use your copy of it)"
    )]
    WrongPassphrase { path: PathBuf },
    #[error("no passphrase to open {path}")]
    Passphrase {
        path: PathBuf,
        #[source]
        source: PassphraseError,
    },
    #[error("the key file {path} is damaged (its {what} line): use your copy of it")]
    Damaged { path: PathBuf, what: &'static str },
    #[error(
        "the key file {path} asks for key-derivation costs that cannot be used \
         (damaged, or from a newer Ferry): use your copy of it"
    )]
    Kdf {
        path: PathBuf,
        #[source]
        source: argon2::Error,
    },
}

/// Why a key file or public file could not be written.
#[derive(Debug, thiserror::Error)]
pub enum WriteKeyError {
    #[error(
        "{path} already exists: Ferry never overwrites a key file; \
         give another --out (move the old file away only if no folder uses it)"
    )]
    Exists { path: PathBuf },
    #[error("cannot write {path}: check that its directory exists and is writable")]
    Write {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error("no passphrase for the new key file {path}")]
    Passphrase {
        path: PathBuf,
        #[source]
        source: PassphraseError,
    },
    #[error("the system gave no randomness for the new key {path}; nothing was written")]
    Random {
        path: PathBuf,
        #[source]
        source: ferry_proto::seal::RandomnessError,
    },
    #[error("cannot lock the new key file {path} with the passphrase; nothing was written")]
    Lock {
        path: PathBuf,
        #[source]
        source: LockFailure,
    },
}

/// What failed while sealing a new key under its passphrase.
#[derive(Debug, thiserror::Error)]
#[error(transparent)]
pub struct LockFailure(LockError);

/// The public half of either kind of file, and whether it was a key file
/// (true) or a public file. Needs no passphrase.
pub fn load_public(path: &Path) -> Result<(FolderPublic, bool), KeyError> {
    match parse(path)? {
        Parsed::Key { public, .. } => Ok((public, true)),
        Parsed::Public(public) => Ok((public, false)),
    }
}

/// The whole key: needs a key file and its passphrase. Blocking (the
/// passphrase may be asked on the terminal; Argon2id takes 64 MiB and a
/// good part of a second): in async code, call it through
/// [`crate::tasks::blocking`].
pub fn load_secret(path: &Path, passphrase: &Passphrase) -> Result<FolderSecret, KeyError> {
    let (public, sealed) = match parse(path)? {
        Parsed::Key { public, secret } => (public, secret),
        Parsed::Public(_) => {
            return Err(KeyError::PublicOnly {
                path: path.to_owned(),
            })
        }
    };
    let phrase = passphrase
        .read(&format!("Passphrase for {}: ", path.display()), false)
        .map_err(|source| KeyError::Passphrase {
            path: path.to_owned(),
            source,
        })?;
    open_secret(path, public, sealed, &phrase)
}

/// As [`load_secret`], with the passphrase already in hand (the launcher's
/// password field). Blocking, as [`load_secret`].
pub fn load_secret_with_passphrase(path: &Path, phrase: &[u8]) -> Result<FolderSecret, KeyError> {
    let (public, sealed) = match parse(path)? {
        Parsed::Key { public, secret } => (public, secret),
        Parsed::Public(_) => {
            return Err(KeyError::PublicOnly {
                path: path.to_owned(),
            })
        }
    };
    open_secret(path, public, sealed, phrase)
}

fn open_secret(
    path: &Path,
    public: FolderPublic,
    sealed: SealedSecret,
    phrase: &[u8],
) -> Result<FolderSecret, KeyError> {
    let bytes = lock::open(&sealed, &public.to_bytes(), phrase).map_err(|e| match e {
        LockError::Kdf(source) => KeyError::Kdf {
            path: path.to_owned(),
            source,
        },
        LockError::Open | LockError::Random => KeyError::WrongPassphrase {
            path: path.to_owned(),
        },
    })?;
    let secret = FolderSecret::from_bytes(&bytes);
    // The public half is authenticated with the secret, so a mismatch means
    // a file written wrong, not one changed since.
    if secret.public() != public {
        return Err(KeyError::Damaged {
            path: path.to_owned(),
            what: "public",
        });
    }
    Ok(secret)
}

/// Creates a key file at `out` for a new folder key, sealed under a
/// passphrase from `passphrase` (asked twice on a terminal; an empty one
/// refused). Refuses an existing `out` before asking anything. Returns the
/// new key's public half. Blocking, as [`load_secret`].
pub fn create_key_file(out: &Path, passphrase: &Passphrase) -> Result<FolderPublic, WriteKeyError> {
    create_with(out, passphrase, KdfParams::DEFAULT)
}

fn create_with(
    out: &Path,
    passphrase: &Passphrase,
    kdf: KdfParams,
) -> Result<FolderPublic, WriteKeyError> {
    if out.symlink_metadata().is_ok() {
        return Err(WriteKeyError::Exists {
            path: out.to_owned(),
        });
    }
    let phrase = passphrase
        .read(
            &format!("Passphrase for the new key {}: ", out.display()),
            true,
        )
        .map_err(|source| WriteKeyError::Passphrase {
            path: out.to_owned(),
            source,
        })?;
    let secret = FolderSecret::generate().map_err(|source| WriteKeyError::Random {
        path: out.to_owned(),
        source,
    })?;
    let public = secret.public();
    let bytes = zeroize::Zeroizing::new(secret.to_bytes());
    let sealed =
        lock::seal(&bytes, &public.to_bytes(), &phrase, kdf).map_err(|e| WriteKeyError::Lock {
            path: out.to_owned(),
            source: LockFailure(e),
        })?;
    write_new(out, format::render_key(&public, &sealed).as_bytes())?;
    Ok(public)
}

/// Test support: a key file `folder.key` (passphrase `pass`, in the file
/// `pass`) and its public file `folder.pub` in `dir`, made with small
/// Argon2id costs.
#[cfg(test)]
pub(crate) fn test_key_files(dir: &Path) -> (PathBuf, PathBuf, FolderPublic) {
    let pass = dir.join("pass");
    let (key, public_file) = (dir.join("folder.key"), dir.join("folder.pub"));
    let cheap = KdfParams {
        m_kib: 64,
        t: 1,
        p: 1,
    };
    let made = std::fs::write(&pass, "pass").map_err(|source| WriteKeyError::Write {
        path: pass.clone(),
        source,
    });
    let public = made
        .and_then(|()| create_with(&key, &Passphrase::File(pass), cheap))
        .and_then(|public| write_public_file(&public_file, &public).map(|()| public));
    match public {
        Ok(public) => (key, public_file, public),
        Err(e) => panic!("test keys: {}", crate::chain::chain(&e)),
    }
}

/// The text of a public file holding `public`.
pub fn public_file_text(public: &FolderPublic) -> String {
    format::render_public(public)
}

/// Writes a public file holding `public` at `out` (never over an existing
/// file).
pub fn write_public_file(out: &Path, public: &FolderPublic) -> Result<(), WriteKeyError> {
    write_new(out, public_file_text(public).as_bytes())
}

/// A key id in full, lowercase hex.
pub fn key_id_hex(id: &Hash) -> String {
    format::hex(id)
}

/// A key id as people compare it: its first 8 bytes in hex.
pub fn short_key_id(id: &Hash) -> String {
    format::hex(&id[..8])
}

fn parse(path: &Path) -> Result<Parsed, KeyError> {
    let read = |source| KeyError::Read {
        path: path.to_owned(),
        source,
    };
    let file = std::fs::File::open(path).map_err(read)?;
    let mut bytes = Vec::new();
    file.take(MAX_KEY_FILE)
        .read_to_end(&mut bytes)
        .map_err(read)?;
    let not_ferry = || KeyError::NotAKeyFile {
        path: path.to_owned(),
    };
    let text = std::str::from_utf8(&bytes).map_err(|_| not_ferry())?;
    format::parse(text).map_err(|p| match p {
        Problem::NotFerry => not_ferry(),
        Problem::Damaged(what) => KeyError::Damaged {
            path: path.to_owned(),
            what,
        },
    })
}

/// Writes `content` to a new file at `path`, mode 0600: a temporary file
/// beside it, fsync, a rename that fails if `path` exists, fsync of the
/// directory. A crash leaves either no file or the whole one.
fn write_new(path: &Path, content: &[u8]) -> Result<(), WriteKeyError> {
    let failed = |source| WriteKeyError::Write {
        path: path.to_owned(),
        source,
    };
    let exists = || WriteKeyError::Exists {
        path: path.to_owned(),
    };
    let name = path
        .file_name()
        .ok_or_else(|| failed(std::io::ErrorKind::InvalidInput.into()))?;
    let dir = match path.parent() {
        Some(dir) if !dir.as_os_str().is_empty() => dir,
        _ => Path::new("."),
    };
    let mut temp_name = std::ffi::OsString::from(".");
    temp_name.push(name);
    temp_name.push(format!(".{}.tmp", std::process::id()));
    let temp = dir.join(temp_name);
    let written = (|| {
        let mut file = std::fs::OpenOptions::new()
            .write(true)
            .create_new(true)
            .mode(0o600)
            .open(&temp)?;
        file.write_all(content)?;
        file.sync_all()
    })();
    if let Err(e) = written {
        let _ = std::fs::remove_file(&temp);
        return Err(failed(e));
    }
    let renamed = rustix::fs::renameat_with(
        rustix::fs::CWD,
        &temp,
        rustix::fs::CWD,
        path,
        rustix::fs::RenameFlags::NOREPLACE,
    );
    if let Err(errno) = renamed {
        let _ = std::fs::remove_file(&temp);
        return Err(match errno {
            rustix::io::Errno::EXIST => exists(),
            other => failed(other.into()),
        });
    }
    std::fs::File::open(dir)
        .and_then(|d| d.sync_all())
        .map_err(failed)
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::os::unix::fs::PermissionsExt;

    /// Small costs: these tests are about the files, not Argon2's strength.
    const CHEAP: KdfParams = KdfParams {
        m_kib: 64,
        t: 1,
        p: 1,
    };

    struct Dir {
        dir: tempfile::TempDir,
        pass: Passphrase,
    }

    impl Dir {
        fn new() -> Dir {
            let dir = tempfile::tempdir().unwrap();
            let path = dir.path().join("pass");
            std::fs::write(&path, "correct horse battery staple\n").unwrap();
            Dir {
                pass: Passphrase::File(path),
                dir,
            }
        }
        fn path(&self, name: &str) -> PathBuf {
            self.dir.path().join(name)
        }
        fn key(&self) -> (PathBuf, FolderPublic) {
            let path = self.path("folder.key");
            let public = create_with(&path, &self.pass, CHEAP).unwrap();
            (path, public)
        }
        fn passphrase(&self, text: &str) -> Passphrase {
            let path = self.path("other-pass");
            std::fs::write(&path, text).unwrap();
            Passphrase::File(path)
        }
    }

    /// The error of a load that must fail (`FolderSecret` has no `Debug`).
    fn refused(loaded: Result<FolderSecret, KeyError>) -> KeyError {
        match loaded {
            Ok(_) => panic!("the key opened"),
            Err(e) => e,
        }
    }

    fn mode(path: &Path) -> u32 {
        std::fs::metadata(path).unwrap().permissions().mode() & 0o777
    }

    #[test]
    fn a_key_file_and_its_public_file_round_trip() {
        let dir = Dir::new();
        let (path, public) = dir.key();
        assert_eq!(mode(&path), 0o600);
        let text = std::fs::read_to_string(&path).unwrap();
        assert!(text.starts_with("ferry folder key v1\n"), "{text}");
        assert!(text.contains("kdf: argon2id m=64 t=1 p=1\n"), "{text}");
        assert!(text.contains(&key_id_hex(&public.key_id())), "{text}");

        assert_eq!(load_public(&path).unwrap(), (public.clone(), true));
        let secret = load_secret(&path, &dir.pass).unwrap();
        assert_eq!(secret.public(), public);

        let out = dir.path("folder.pub");
        write_public_file(&out, &public).unwrap();
        assert_eq!(mode(&out), 0o600);
        assert!(std::fs::read_to_string(&out)
            .unwrap()
            .starts_with("ferry folder public key v1\n"));
        assert_eq!(load_public(&out).unwrap(), (public.clone(), false));
        assert_eq!(short_key_id(&public.key_id()).len(), 16);
        assert!(key_id_hex(&public.key_id()).starts_with(&short_key_id(&public.key_id())));
        // No temporary file is left behind.
        let mut names: Vec<_> = std::fs::read_dir(dir.dir.path())
            .unwrap()
            .map(|e| e.unwrap().file_name().into_string().unwrap())
            .collect();
        names.sort();
        assert_eq!(names, ["folder.key", "folder.pub", "pass"]);
    }

    #[test]
    fn the_default_costs_make_a_key_file_that_opens() {
        let dir = Dir::new();
        let path = dir.path("strong.key");
        let public = create_key_file(&path, &dir.pass).unwrap();
        let text = std::fs::read_to_string(&path).unwrap();
        assert!(text.contains("kdf: argon2id m=65536 t=3 p=1\n"), "{text}");
        assert_eq!(load_secret(&path, &dir.pass).unwrap().public(), public);
    }

    #[test]
    fn a_wrong_passphrase_opens_nothing_and_says_so() {
        let dir = Dir::new();
        let (path, _) = dir.key();
        let before = std::fs::read(&path).unwrap();
        let wrong = dir.passphrase("correct horse battery stapler\n");
        let err = refused(load_secret(&path, &wrong));
        assert!(matches!(err, KeyError::WrongPassphrase { .. }), "{err}");
        let text = err.to_string();
        assert!(
            text.contains("does not open") && text.contains("nothing was changed"),
            "{text}"
        );
        assert!(text.contains("folder.key"), "{text}");
        assert_eq!(std::fs::read(&path).unwrap(), before);
    }

    #[test]
    fn a_tampered_key_file_is_refused() {
        let dir = Dir::new();
        let (path, _) = dir.key();
        let text = std::fs::read_to_string(&path).unwrap();
        let line = |name: &str| {
            text.lines()
                .find(|l| l.starts_with(name))
                .unwrap()
                .to_string()
        };
        let flip = |line: &str| {
            let mut bytes = line.as_bytes().to_vec();
            let last = bytes.len() - 1;
            bytes[last] = if bytes[last] == b'0' { b'1' } else { b'0' };
            String::from_utf8(bytes).unwrap()
        };
        let tampered = dir.path("tampered.key");
        let write = |text: String| {
            let _ = std::fs::remove_file(&tampered);
            std::fs::write(&tampered, text).unwrap();
        };
        // A changed sealed secret, salt, nonce or cost fails authentication.
        for name in ["sealed-secret:", "salt:", "nonce:"] {
            let l = line(name);
            write(text.replace(&l, &flip(&l)));
            let err = refused(load_secret(&tampered, &dir.pass));
            assert!(
                matches!(err, KeyError::WrongPassphrase { .. }),
                "{name} {err}"
            );
        }
        write(text.replace("t=1 ", "t=2 "));
        let err = refused(load_secret(&tampered, &dir.pass));
        assert!(matches!(err, KeyError::WrongPassphrase { .. }), "{err}");
        // A changed public half or key id is seen without the passphrase.
        for name in ["public:", "key-id:"] {
            let l = line(name);
            write(text.replace(&l, &flip(&l)));
            let err = load_public(&tampered).unwrap_err();
            assert!(
                matches!(err, KeyError::Damaged { what: "key-id", .. }),
                "{err}"
            );
            assert!(err.to_string().contains("damaged"), "{err}");
        }
        // A missing or doubled line.
        write(text.replace(&format!("{}\n", line("salt:")), ""));
        let err = load_public(&tampered).unwrap_err();
        assert!(
            matches!(err, KeyError::Damaged { what: "salt", .. }),
            "{err}"
        );
        write(format!("{text}{}\n", line("nonce:")));
        let err = load_public(&tampered).unwrap_err();
        assert!(
            matches!(err, KeyError::Damaged { what: "nonce", .. }),
            "{err}"
        );
        // Truncated to its first line.
        write("ferry folder key v1\n".to_string());
        assert!(matches!(
            load_public(&tampered).unwrap_err(),
            KeyError::Damaged { .. }
        ));
    }

    #[test]
    fn a_public_file_cannot_open_the_folder() {
        let dir = Dir::new();
        let (_, public) = dir.key();
        let out = dir.path("folder.pub");
        write_public_file(&out, &public).unwrap();
        let err = refused(load_secret(&out, &dir.pass));
        assert!(matches!(err, KeyError::PublicOnly { .. }), "{err}");
        let text = err.to_string();
        assert!(
            text.contains("only the public half") && text.contains("`ferry key new`"),
            "{text}"
        );
    }

    #[test]
    fn nothing_is_overwritten() {
        let dir = Dir::new();
        let (path, public) = dir.key();
        let before = std::fs::read(&path).unwrap();
        let err = create_with(&path, &dir.pass, CHEAP).unwrap_err();
        assert!(matches!(err, WriteKeyError::Exists { .. }), "{err}");
        assert!(err.to_string().contains("never overwrites"), "{err}");
        let err = write_public_file(&path, &public).unwrap_err();
        assert!(matches!(err, WriteKeyError::Exists { .. }), "{err}");
        assert_eq!(std::fs::read(&path).unwrap(), before);
        // Not through a dangling symlink either.
        let link = dir.path("link.key");
        std::os::unix::fs::symlink(dir.path("elsewhere"), &link).unwrap();
        assert!(matches!(
            create_with(&link, &dir.pass, CHEAP),
            Err(WriteKeyError::Exists { .. })
        ));
        assert!(!dir.path("elsewhere").exists());
        // The rename itself refuses a file that appeared after the check.
        let late = dir.path("late.key");
        std::fs::write(&late, "theirs").unwrap();
        assert!(matches!(
            write_new(&late, b"ours"),
            Err(WriteKeyError::Exists { .. })
        ));
        assert_eq!(std::fs::read(&late).unwrap(), b"theirs");
    }

    #[test]
    fn an_empty_passphrase_is_refused_and_nothing_written() {
        let dir = Dir::new();
        let out = dir.path("new.key");
        let err = create_with(&out, &dir.passphrase("\n"), CHEAP).unwrap_err();
        assert!(matches!(err, WriteKeyError::Passphrase { .. }), "{err}");
        assert!(!out.exists());
        let missing = dir.path("nowhere/new.key");
        let err = create_with(&missing, &dir.pass, CHEAP).unwrap_err();
        assert!(matches!(err, WriteKeyError::Write { .. }), "{err}");
    }

    #[test]
    fn files_that_are_not_keys_are_named_so() {
        let dir = Dir::new();
        let err = load_public(&dir.path("missing.key")).unwrap_err();
        assert!(matches!(err, KeyError::Read { .. }), "{err}");
        assert!(err.to_string().contains("--key-file"), "{err}");
        for content in [&b"[sender]\nhost = 1\n"[..], b"\xff\xfe", b""] {
            let path = dir.path("other");
            std::fs::write(&path, content).unwrap();
            let err = load_public(&path).unwrap_err();
            assert!(matches!(err, KeyError::NotAKeyFile { .. }), "{err}");
            assert!(err.to_string().contains("`ferry key new`"), "{err}");
        }
    }
}
