//! `--protect` and `--key-file` checked into a [`FolderProtect`]: the mode
//! named, the key file read (its public half only: sending needs no
//! passphrase), and the kind of file matched to the mode.

use std::path::Path;

use ferry_proto::Protection;

use super::{invalid, sender::FolderProtect, ConfigError};
use crate::keys;

/// The folder's protection from `protect` (`plain`, `encrypted`,
/// `write-only`; `None`: plain) and `key_file`.
pub(super) fn folder_protect(
    protect: Option<&str>,
    key_file: Option<&Path>,
) -> Result<FolderProtect, ConfigError> {
    let write_only = match protect.map(str::trim) {
        None | Some("plain") => {
            return match key_file {
                None => Ok(FolderProtect::Plain),
                Some(_) => Err(invalid(
                    "key-file",
                    "only applies with --protect encrypted or --protect write-only \
                     (without it the folder is sent plain)",
                )),
            };
        }
        Some("encrypted") => false,
        Some("write-only") => true,
        Some(other) => {
            return Err(invalid(
                "protect",
                format!("{other:?}: give plain, encrypted or write-only"),
            ))
        }
    };
    let key_file = key_file.ok_or(ConfigError::Missing {
        what: "--key-file",
        hint: "--protect encrypted needs the key file `ferry key new` wrote, \
               --protect write-only its public half (`ferry key public`)",
    })?;
    let (public, whole) =
        keys::load_public(key_file).map_err(|source| ConfigError::Key { source })?;
    let key = public.key_id();
    let protection = match (write_only, whole) {
        (false, true) => Protection::Encrypted { key },
        (true, false) => Protection::WriteOnly { key },
        (false, false) => {
            return Err(invalid(
                "key-file",
                format!(
                    "{} holds only the public half: --protect encrypted needs the key file \
                     `ferry key new` wrote (for a sender that must not read back what it sent, \
                     use --protect write-only)",
                    key_file.display()
                ),
            ))
        }
        (true, true) => {
            return Err(invalid(
                "key-file",
                format!(
                    "{} is a whole key: a write-only sender must not hold the key: give it \
                     `ferry key public {}` and keep the key file elsewhere",
                    key_file.display(),
                    key_file.display()
                ),
            ))
        }
    };
    Ok(FolderProtect::Sealed { protection, public })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::SenderConfig;
    use crate::keys::test_key_files;

    fn err(protect: Option<&str>, key_file: Option<&Path>) -> String {
        match folder_protect(protect, key_file) {
            Ok(p) => panic!("accepted: {p:?}"),
            Err(e) => crate::chain::chain(&e),
        }
    }

    #[test]
    fn each_mode_takes_its_kind_of_key_file() {
        let dir = tempfile::tempdir().unwrap();
        let (key, public_file, public) = test_key_files(dir.path());
        let id = public.key_id();
        assert!(matches!(
            folder_protect(None, None).unwrap(),
            FolderProtect::Plain
        ));
        assert!(matches!(
            folder_protect(Some("plain"), None).unwrap(),
            FolderProtect::Plain
        ));
        match folder_protect(Some("encrypted"), Some(&key)).unwrap() {
            FolderProtect::Sealed {
                protection: Protection::Encrypted { key },
                public: p,
            } => assert!(key == id && p == public),
            other => panic!("{other:?}"),
        }
        match folder_protect(Some("write-only"), Some(&public_file)).unwrap() {
            FolderProtect::Sealed {
                protection: Protection::WriteOnly { key },
                public: p,
            } => assert!(key == id && p == public),
            other => panic!("{other:?}"),
        }
    }

    #[test]
    fn each_mismatch_is_a_clear_error() {
        let dir = tempfile::tempdir().unwrap();
        let (key, public_file, _) = test_key_files(dir.path());
        let e = err(Some("secret"), Some(&key));
        assert!(
            e.contains("protect") && e.contains("plain, encrypted or write-only"),
            "{e}"
        );
        let e = err(None, Some(&key));
        assert!(
            e.contains("key-file") && e.contains("only applies with --protect"),
            "{e}"
        );
        let e = err(Some("plain"), Some(&public_file));
        assert!(e.contains("only applies with --protect"), "{e}");
        for mode in ["encrypted", "write-only"] {
            let e = err(Some(mode), None);
            assert!(e.contains("--key-file is required"), "{e}");
        }
        let e = err(Some("encrypted"), Some(&public_file));
        assert!(
            e.contains("only the public half") && e.contains("write-only"),
            "{e}"
        );
        let e = err(Some("write-only"), Some(&key));
        assert!(
            e.contains("must not hold the key") && e.contains("`ferry key public"),
            "{e}"
        );
        let missing = dir.path().join("lost.key");
        let e = err(Some("encrypted"), Some(&missing));
        assert!(e.contains("key-file") && e.contains("lost.key"), "{e}");
        std::fs::write(&missing, "not a key").unwrap();
        let e = err(Some("encrypted"), Some(&missing));
        assert!(e.contains("not a Ferry key file"), "{e}");
    }

    #[test]
    fn the_config_file_sets_the_mode_and_flags_win() {
        let dir = tempfile::tempdir().unwrap();
        test_key_files(dir.path());
        std::fs::create_dir(dir.path().join("src")).unwrap();
        let path = dir.path().join("sender.toml");
        std::fs::write(
            &path,
            "source = \"src\"\nstore = \"store\"\nprotect = \"encrypted\"\n\
             key-file = \"folder.key\"\npassphrase-file = \"pass\"\n",
        )
        .unwrap();
        let file = SenderConfig::load(&path).unwrap();
        assert_eq!(file.key_file, Some(dir.path().join("folder.key")));
        assert_eq!(file.passphrase_file, Some(dir.path().join("pass")));
        let settings = file.clone().settings().unwrap();
        assert!(matches!(
            settings.protect,
            FolderProtect::Sealed {
                protection: Protection::Encrypted { .. },
                ..
            }
        ));
        let flags = SenderConfig {
            protect: Some("write-only".into()),
            key_file: Some(dir.path().join("folder.pub")),
            ..Default::default()
        };
        assert!(matches!(
            file.merge(flags).settings().unwrap().protect,
            FolderProtect::Sealed {
                protection: Protection::WriteOnly { .. },
                ..
            }
        ));
        // The spelling with underscores is read too.
        let underscored: SenderConfig =
            toml::from_str("key_file = \"k\"\npassphrase_file = \"p\"\n").unwrap();
        assert_eq!(underscored.key_file, Some("k".into()));
        assert_eq!(underscored.passphrase_file, Some("p".into()));
    }
}
