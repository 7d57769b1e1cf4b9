//! Where a key file's passphrase comes from: a file (`--passphrase-file`,
//! `$FERRY_PASSPHRASE_FILE`) for services and scripts, else the terminal.

use std::ffi::OsString;
use std::io::Read;
use std::path::{Path, PathBuf};

use zeroize::Zeroizing;

/// The environment variable naming a passphrase file, for services and
/// scripts that give no `--passphrase-file`.
pub const PASSPHRASE_ENV: &str = "FERRY_PASSPHRASE_FILE";

/// The most bytes read from a passphrase file (a passphrase is a line, not a
/// document; `/dev/zero` given by mistake must not fill the memory).
const MAX_PASSPHRASE_FILE: u64 = 64 * 1024;

/// Where the passphrase of a key file is read.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Passphrase {
    /// A file whose content is the passphrase (one trailing newline is not
    /// part of it).
    File(PathBuf),
    /// Asked on the terminal, without echo.
    Terminal,
}

/// `flag` if given, else `$FERRY_PASSPHRASE_FILE`, else the terminal.
pub fn passphrase_source(flag: Option<&Path>) -> Passphrase {
    source_from(flag, std::env::var_os(PASSPHRASE_ENV))
}

fn source_from(flag: Option<&Path>, env: Option<OsString>) -> Passphrase {
    match (flag, env.filter(|v| !v.is_empty())) {
        (Some(path), _) => Passphrase::File(path.to_owned()),
        (None, Some(path)) => Passphrase::File(PathBuf::from(path)),
        (None, None) => Passphrase::Terminal,
    }
}

/// Why no passphrase could be had.
#[derive(Debug, thiserror::Error)]
pub enum PassphraseError {
    #[error(
        "cannot read the passphrase file {path}: check --passphrase-file or FERRY_PASSPHRASE_FILE"
    )]
    Read {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error("the passphrase file {path} is empty: write the passphrase in it")]
    EmptyFile { path: PathBuf },
    #[error("the passphrase is empty: an empty passphrase protects nothing; type one")]
    EmptyTyped,
    #[error(
        "no terminal to ask the passphrase on: give --passphrase-file or set FERRY_PASSPHRASE_FILE"
    )]
    NoTerminal,
    #[error("cannot read the passphrase from the terminal")]
    Terminal {
        #[source]
        source: std::io::Error,
    },
    #[error("the two passphrases typed differ: nothing was written; run it again")]
    Mismatch,
}

impl Passphrase {
    /// Reads the passphrase; on the terminal, `prompt` is shown, and with
    /// `twice` it is asked again and both must match. Blocking (it may wait
    /// for the user): call it off the async threads.
    pub(crate) fn read(
        &self,
        prompt: &str,
        twice: bool,
    ) -> Result<Zeroizing<Vec<u8>>, PassphraseError> {
        match self {
            Passphrase::File(path) => read_file(path),
            Passphrase::Terminal => {
                // rpassword reads /dev/tty: without a controlling terminal (a
                // service, a cron job) there is no one to ask.
                if std::fs::File::open("/dev/tty").is_err() {
                    return Err(PassphraseError::NoTerminal);
                }
                let ask = |prompt: &str| {
                    rpassword::prompt_password(prompt)
                        .map(|s| Zeroizing::new(s.into_bytes()))
                        .map_err(|source| PassphraseError::Terminal { source })
                };
                let first = ask(prompt)?;
                if first.is_empty() {
                    return Err(PassphraseError::EmptyTyped);
                }
                if twice && ask("Type it again: ")? != first {
                    return Err(PassphraseError::Mismatch);
                }
                Ok(first)
            }
        }
    }
}

/// A passphrase file's content without one trailing newline (`\n` or
/// `\r\n`); an empty one is refused.
fn read_file(path: &Path) -> Result<Zeroizing<Vec<u8>>, PassphraseError> {
    let read = |source| PassphraseError::Read {
        path: path.to_owned(),
        source,
    };
    let file = std::fs::File::open(path).map_err(read)?;
    let mut bytes = Zeroizing::new(Vec::new());
    file.take(MAX_PASSPHRASE_FILE)
        .read_to_end(&mut bytes)
        .map_err(read)?;
    if bytes.ends_with(b"\n") {
        bytes.pop();
        if bytes.ends_with(b"\r") {
            bytes.pop();
        }
    }
    if bytes.is_empty() {
        return Err(PassphraseError::EmptyFile {
            path: path.to_owned(),
        });
    }
    Ok(bytes)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_flag_wins_over_the_environment_and_the_terminal_comes_last() {
        let flag = Path::new("/etc/ferry/pass");
        let env = Some(OsString::from("/run/pass"));
        assert_eq!(
            source_from(Some(flag), env.clone()),
            Passphrase::File(flag.to_owned())
        );
        assert_eq!(
            source_from(None, env),
            Passphrase::File(PathBuf::from("/run/pass"))
        );
        assert_eq!(
            source_from(None, Some(OsString::new())),
            Passphrase::Terminal
        );
        assert_eq!(source_from(None, None), Passphrase::Terminal);
    }

    #[test]
    fn a_passphrase_file_loses_one_trailing_newline_and_nothing_else() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("pass");
        let read = |content: &[u8]| {
            std::fs::write(&path, content).unwrap();
            Passphrase::File(path.clone()).read("unused", true)
        };
        assert_eq!(*read(b"correct horse\n").unwrap(), b"correct horse");
        assert_eq!(*read(b" spaced \r\n").unwrap(), b" spaced ");
        assert_eq!(*read(b"two\n\n").unwrap(), b"two\n");
        assert_eq!(*read(b"none").unwrap(), b"none");
        let err = read(b"\n").unwrap_err();
        assert!(matches!(err, PassphraseError::EmptyFile { .. }), "{err}");
        let missing = Passphrase::File(dir.path().join("missing"));
        let err = missing.read("unused", false).unwrap_err();
        assert!(
            err.to_string().contains("missing") && err.to_string().contains("--passphrase-file"),
            "{err}"
        );
    }
}
