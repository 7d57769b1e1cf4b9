//! A protected folder's key in the Backups view: how the folder is kept,
//! whether its key is open, and loading it (the key file's passphrase
//! typed in a password field, never saved, wiped once used). Loading runs
//! on a blocking thread: Argon2id takes a good part of a second.

use std::path::{Path, PathBuf};
use std::sync::Arc;

use ferry_agent::keys;
use ferry_agent::reader::sealed::{self, GivenKey, Needs};
use ferry_proto::seal::FolderSecret;
use ferry_proto::{Name, Protection};
use zeroize::{Zeroize, Zeroizing};

use crate::form::Protect;

/// Where the folder's key stands.
#[derive(Clone, Default)]
pub enum KeyState {
    /// Not known yet, or a plain folder: nothing to unlock.
    #[default]
    Plain,
    /// Protected; no key open (the last attempt's failure, if any).
    Locked,
    /// The key is loading.
    Unlocking,
    /// The folder's key, checked against it.
    Unlocked(Arc<FolderSecret>),
}

impl std::fmt::Debug for KeyState {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(match self {
            KeyState::Plain => "Plain",
            KeyState::Locked => "Locked",
            KeyState::Unlocking => "Unlocking",
            KeyState::Unlocked(_) => "Unlocked",
        })
    }
}

/// The key panel's fields and the folder's protection (no `Debug`: it
/// holds the passphrase typed).
pub struct KeyPanel {
    /// How the folder is kept (`Plain` until the runs are loaded).
    pub protection: Protection,
    /// The folder asked about.
    pub folder: Option<Name>,
    pub state: KeyState,
    /// "Key file" as typed.
    pub key_file: String,
    /// "Passphrase" as typed; wiped when an unlock starts and when the view
    /// loads again.
    pub passphrase: String,
    /// Why the last unlock failed, in plain words.
    pub error: Option<String>,
    /// Said about the sender form's key file (e.g. it is the public half).
    pub hint: Option<String>,
}

impl Default for KeyPanel {
    fn default() -> KeyPanel {
        KeyPanel {
            protection: Protection::Plain,
            folder: None,
            state: KeyState::Plain,
            key_file: String::new(),
            passphrase: String::new(),
            error: None,
            hint: None,
        }
    }
}

/// The short key id shown: `ab12cd34`.
pub fn short(protection: &Protection) -> Option<String> {
    match protection {
        Protection::Plain => None,
        Protection::Encrypted { key } | Protection::WriteOnly { key } => {
            Some(keys::short_key_id(key))
        }
    }
}

impl KeyPanel {
    /// Takes in the folder's protection; the key file is prefilled from
    /// the sender form's (`protect`, `key_file`) when that is a whole key
    /// file.
    pub fn set_protection(
        &mut self,
        protection: Protection,
        folder: Option<Name>,
        protect: Protect,
        key_file: &str,
    ) {
        self.protection = protection;
        self.folder = folder;
        self.error = None;
        self.hint = None;
        self.state = match protection {
            Protection::Plain => KeyState::Plain,
            _ => KeyState::Locked,
        };
        if protection == Protection::Plain || !self.key_file.trim().is_empty() {
            return;
        }
        let from_form = key_file.trim();
        if protect == Protect::Plain || from_form.is_empty() {
            return;
        }
        // A small text file, read without its passphrase.
        match keys::load_public(Path::new(from_form)) {
            Ok((_, true)) => self.key_file = from_form.to_string(),
            Ok((_, false)) => {
                self.hint = Some(format!(
                    "This sender holds only the public half ({from_form}): restoring needs \
                     the key file `ferry key new` wrote, kept elsewhere"
                ))
            }
            Err(_) => {}
        }
    }

    /// Forgets the folder's protection, the key and the passphrase.
    pub fn reset(&mut self) {
        self.passphrase.zeroize();
        self.protection = Protection::Plain;
        self.folder = None;
        self.state = KeyState::Plain;
        self.error = None;
        self.hint = None;
    }

    /// The open key, if any.
    pub fn secret(&self) -> Option<Arc<FolderSecret>> {
        match &self.state {
            KeyState::Unlocked(secret) => Some(secret.clone()),
            _ => None,
        }
    }

    /// "This folder is encrypted (key ab12…)", or `None` for a plain one.
    pub fn describe(&self) -> Option<String> {
        let key = short(&self.protection)?;
        let mode = match self.protection {
            Protection::WriteOnly { .. } => "write-only: its sender cannot read it back",
            _ => "encrypted",
        };
        Some(format!("This folder is {mode} (key {key}…)"))
    }

    /// Why browsing and restoring wait, or `None` when they need nothing.
    pub fn blocked(&self) -> Option<String> {
        match self.state {
            KeyState::Plain | KeyState::Unlocked(_) => None,
            KeyState::Unlocking => Some("the key is being opened".into()),
            KeyState::Locked => Some(
                "the folder is protected: give its key file and passphrase and press \
                 \"Unlock\" to browse and restore it"
                    .into(),
            ),
        }
    }

    /// Starts an unlock: checks the fields, takes the passphrase out of its
    /// field (wiping it) and returns what the blocking load needs, or says
    /// why it cannot start.
    pub fn start(&mut self) -> Option<Unlock> {
        if !matches!(self.state, KeyState::Locked) {
            return None;
        }
        let key_file = self.key_file.trim();
        if key_file.is_empty() {
            self.error = Some("Give the folder's key file (the one `ferry key new` wrote)".into());
            return None;
        }
        if self.passphrase.is_empty() {
            self.error = Some("Type the key file's passphrase".into());
            return None;
        }
        let passphrase = Zeroizing::new(std::mem::take(&mut self.passphrase));
        self.error = None;
        self.state = KeyState::Unlocking;
        Some(Unlock {
            key_file: PathBuf::from(key_file),
            passphrase,
            folder: self.folder.clone(),
            protection: self.protection,
        })
    }

    /// Takes in an unlock's result.
    pub fn finish(&mut self, result: Result<Arc<FolderSecret>, String>) {
        if !matches!(self.state, KeyState::Unlocking) {
            return;
        }
        match result {
            Ok(secret) => self.state = KeyState::Unlocked(secret),
            Err(e) => {
                self.state = KeyState::Locked;
                self.error = Some(e);
            }
        }
    }
}

/// What an unlock needs, off the UI thread.
pub struct Unlock {
    key_file: PathBuf,
    passphrase: Zeroizing<String>,
    folder: Option<Name>,
    protection: Protection,
}

impl Unlock {
    /// Loads the key file with the passphrase and checks it is the
    /// folder's. Blocking (Argon2id).
    pub fn run(self) -> Result<Arc<FolderSecret>, String> {
        let plain = |e: &dyn std::error::Error| ferry_agent::chain::chain(e);
        let (public, whole) = keys::load_public(&self.key_file).map_err(|e| plain(&e))?;
        let folder = self
            .folder
            .ok_or_else(|| "no folder to check the key against".to_string())?;
        let given = GivenKey {
            public: &public,
            secret: whole,
        };
        let key = match sealed::check_key(&folder, self.protection, Some(given), false) {
            Ok(Needs::Secret { key }) => key,
            Ok(Needs::Nothing) => return Err("this folder is not protected".into()),
            Err(e) => return Err(plain(&e)),
        };
        let secret = keys::load_secret_with_passphrase(&self.key_file, self.passphrase.as_bytes())
            .map_err(|e| plain(&e))?;
        sealed::check_secret(&secret, &key).map_err(|e| plain(&e))?;
        Ok(Arc::new(secret))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use ferry_agent::keys::Passphrase;

    fn folder() -> Option<Name> {
        Some(Name::new("docs".to_string()).unwrap())
    }

    /// A key file locked with `phrase`, and its public file, in `dir`.
    fn key_files(dir: &Path, phrase: &str) -> (PathBuf, PathBuf, Protection) {
        let phrase_file = dir.join("phrase");
        std::fs::write(&phrase_file, phrase).unwrap();
        let key = dir.join("folder.key");
        let public = keys::create_key_file(&key, &Passphrase::File(phrase_file)).unwrap();
        let pub_file = dir.join("folder.pub");
        keys::write_public_file(&pub_file, &public).unwrap();
        (
            key,
            pub_file,
            Protection::Encrypted {
                key: public.key_id(),
            },
        )
    }

    fn locked(protection: Protection, key_file: &Path) -> KeyPanel {
        let mut panel = KeyPanel::default();
        panel.set_protection(protection, folder(), Protect::Plain, "");
        panel.key_file = key_file.display().to_string();
        panel
    }

    #[test]
    fn a_plain_folder_needs_no_key_and_blocks_nothing() {
        let mut panel = KeyPanel::default();
        panel.set_protection(Protection::Plain, folder(), Protect::Plain, "");
        assert!(matches!(panel.state, KeyState::Plain));
        assert_eq!(panel.describe(), None);
        assert_eq!(panel.blocked(), None);
        assert!(panel.start().is_none(), "nothing to unlock");
    }

    #[test]
    fn a_protected_folder_is_locked_until_its_key_opens() {
        let mut panel = KeyPanel::default();
        let key = [0xab; 32];
        panel.set_protection(Protection::WriteOnly { key }, folder(), Protect::Plain, "");
        let said = panel.describe().unwrap();
        assert!(said.starts_with("This folder is write-only"), "{said}");
        assert!(said.contains("(key abababab"), "{said}");
        assert!(panel.blocked().unwrap().contains("Unlock"));

        // Empty fields: says what to give, stays locked.
        assert!(panel.start().is_none());
        assert!(panel.error.as_deref().unwrap().contains("key file"));
        panel.key_file = "/k".into();
        assert!(panel.start().is_none());
        assert!(panel.error.as_deref().unwrap().contains("passphrase"));
        assert!(matches!(panel.state, KeyState::Locked));

        // Starting wipes the field; a failure locks again with the reason.
        panel.passphrase = "secret words".into();
        assert!(panel.start().is_some());
        assert!(panel.passphrase.is_empty());
        assert!(matches!(panel.state, KeyState::Unlocking));
        assert!(panel.blocked().unwrap().contains("being opened"));
        panel.finish(Err("wrong".into()));
        assert!(matches!(panel.state, KeyState::Locked));
        assert_eq!(panel.error.as_deref(), Some("wrong"));

        panel.passphrase = "secret words".into();
        panel.start().unwrap();
        panel.finish(Ok(Arc::new(FolderSecret::generate().unwrap())));
        assert!(panel.secret().is_some());
        assert_eq!(panel.blocked(), None);

        // Loading again forgets the key.
        panel.reset();
        assert!(panel.secret().is_none());
    }

    #[test]
    fn the_right_key_file_and_passphrase_unlock_and_others_say_why_not() {
        let dir = tempfile::tempdir().unwrap();
        let (key, public, protection) = key_files(dir.path(), "right horse");

        let mut panel = locked(protection, &key);
        panel.passphrase = "right horse".into();
        let secret = panel.start().unwrap().run().unwrap();
        assert_eq!(
            Protection::Encrypted {
                key: secret.public().key_id()
            },
            protection
        );

        let mut panel = locked(protection, &key);
        panel.passphrase = "wrong horse".into();
        let e = panel.start().unwrap().run().unwrap_err();
        assert!(e.contains("passphrase does not open"), "{e}");

        let mut panel = locked(protection, &public);
        panel.passphrase = "right horse".into();
        let e = panel.start().unwrap().run().unwrap_err();
        assert!(e.contains("public file cannot open it"), "{e}");

        let other = tempfile::tempdir().unwrap();
        let (other_key, _, _) = key_files(other.path(), "right horse");
        let mut panel = locked(protection, &other_key);
        panel.passphrase = "right horse".into();
        let e = panel.start().unwrap().run().unwrap_err();
        assert!(e.contains("not the folder's"), "{e}");
    }

    #[test]
    fn the_form_key_file_is_prefilled_only_when_it_is_a_whole_key_file() {
        let dir = tempfile::tempdir().unwrap();
        let (key, public, protection) = key_files(dir.path(), "p");
        let mut panel = KeyPanel::default();
        let k = key.display().to_string();
        panel.set_protection(protection, folder(), Protect::Encrypted, &k);
        assert_eq!(panel.key_file, k);

        let mut panel = KeyPanel::default();
        let p = public.display().to_string();
        panel.set_protection(protection, folder(), Protect::WriteOnly, &p);
        assert_eq!(panel.key_file, "");
        assert!(panel
            .hint
            .as_deref()
            .unwrap()
            .contains("only the public half"));
    }
}
