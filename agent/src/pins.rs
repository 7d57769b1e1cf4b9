//! The sender's record of the receivers it has met: `STATE/receivers.toml`,
//! one line `"host:port" = "DEVICE-ID"` per receiver.
//!
//! A receiver is pinned on first successful contact (or to the id the user
//! gave with `--receiver-id`). A receiver presenting a different id later is a
//! hard error, never a silent re-trust.
//!
//! Several writers may pin at once (senders of one launcher, or several
//! `ferry` processes sharing a state directory). A pin is written under an
//! exclusive `flock` of `STATE/.receivers.toml.lock`, after reading the file
//! again, so no writer's pin is lost and a receiver pinned meanwhile by
//! another writer is checked against that pin. `flock`, not `fcntl`: its lock
//! belongs to the open file, so it also excludes threads of one process, and
//! the kernel drops it when a writer dies. The lock is a file of its own
//! because the pins file is replaced by a rename at each write.

use std::collections::BTreeMap;
use std::fs;
use std::io;
use std::path::{Path, PathBuf};

use crate::identity::{write_atomic, DeviceId};

/// File name of the pins inside the state directory.
pub const PINS_FILE: &str = "receivers.toml";
/// Mode of the pins file (not secret, but only the owner may change it).
const PINS_MODE: u32 = 0o644;
/// The lock file beside the pins file (see the module doc).
const LOCK_FILE: &str = ".receivers.toml.lock";
/// First lines of a written pins file.
const HEADER: &str = "# Receivers this sender has met, and the device id each one proved.\n\
                      # Remove a line to accept a receiver's new id on the next contact.\n\n";

/// What went wrong reading, writing or checking the pins.
#[derive(Debug, thiserror::Error)]
pub enum PinError {
    /// The pins file exists but could not be read.
    #[error("could not read {path}")]
    Read {
        /// The pins file.
        path: PathBuf,
        /// The OS error.
        source: io::Error,
    },
    /// The pins file is not valid.
    #[error(
        "{path} is not a valid list of receivers (lines of \"host:port\" = \"DEVICE-ID\"); \
         fix or remove the bad line"
    )]
    Parse {
        /// The pins file.
        path: PathBuf,
        /// What the parser said.
        source: toml::de::Error,
    },
    /// The pins could not be encoded.
    #[error("could not encode the receivers for {path}")]
    Encode {
        /// The pins file.
        path: PathBuf,
        /// What the encoder said.
        source: toml::ser::Error,
    },
    /// The pins file could not be written.
    #[error("could not write {path}")]
    Write {
        /// The pins file.
        path: PathBuf,
        /// The OS error.
        source: io::Error,
    },
    /// The pins' lock file could not be opened or locked.
    #[error("could not lock {path}")]
    Lock {
        /// The lock file.
        path: PathBuf,
        /// The OS error.
        source: io::Error,
    },
    /// The receiver is not the one the user said to expect.
    #[error(
        "the receiver at {receiver} has device id {presented}, not {expected} as given with \
         --receiver-id; not sending anything. Check the id with `ferry id` on the receiver"
    )]
    Mismatch {
        /// The receiver as the user named it.
        receiver: String,
        /// The id the user gave.
        expected: DeviceId,
        /// The id the receiver proved.
        presented: DeviceId,
    },
    /// The receiver's id differs from the one pinned earlier.
    #[error(
        "the identity of the receiver at {receiver} changed: it was {pinned}, now it is \
         {presented}. This may be an attack, or the receiver was reinstalled; nothing was sent. \
         If you trust it, remove its line from {file} or pass --receiver-id {presented}"
    )]
    Changed {
        /// The receiver as the user named it.
        receiver: String,
        /// The id pinned earlier.
        pinned: DeviceId,
        /// The id the receiver proved now.
        presented: DeviceId,
        /// The pins file.
        file: PathBuf,
    },
}

/// The result of a successful [`Pins::check`].
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum PinOutcome {
    /// The receiver proved the id pinned earlier.
    Matched,
    /// The receiver was not pinned (or the user gave its id): its id is now
    /// pinned and saved.
    PinnedNow,
}

/// The receivers a sender has met, keyed by `host:port` as the user wrote it.
#[derive(Debug, Clone)]
pub struct Pins {
    path: PathBuf,
    pins: BTreeMap<String, DeviceId>,
}

impl Pins {
    /// Loads `state_dir/receivers.toml`; a missing file means no pins yet.
    pub fn load(state_dir: &Path) -> Result<Pins, PinError> {
        let path = state_dir.join(PINS_FILE);
        let pins = read(&path)?;
        Ok(Pins { path, pins })
    }

    /// The path of the pins file.
    pub fn path(&self) -> &Path {
        &self.path
    }

    /// The id pinned for `receiver`, if any.
    pub fn get(&self, receiver: &str) -> Option<DeviceId> {
        self.pins.get(receiver).copied()
    }

    /// Checks the id a receiver `presented` in the handshake against the id
    /// the user `expected` (from `--receiver-id`) and the pinned one, pinning
    /// and saving it on first contact or when it equals `expected`.
    pub fn check(
        &mut self,
        receiver: &str,
        presented: DeviceId,
        expected: Option<DeviceId>,
    ) -> Result<PinOutcome, PinError> {
        if !self.decide(receiver, presented, expected)? {
            return Ok(PinOutcome::Matched);
        }
        // About to write: under the lock, against the file as it is now, so
        // that another writer's pins are kept and its pin of this receiver
        // (if it made one meanwhile) is checked.
        if let Some(dir) = self.path.parent() {
            fs::create_dir_all(dir).map_err(|source| PinError::Write {
                path: self.path.clone(),
                source,
            })?;
        }
        let _lock = lock(&self.path)?;
        self.pins = read(&self.path)?;
        if !self.decide(receiver, presented, expected)? {
            return Ok(PinOutcome::Matched);
        }
        let before = self.pins.clone();
        self.pins.insert(receiver.to_string(), presented);
        if let Err(e) = self.save() {
            // Keep memory and disk in agreement.
            self.pins = before;
            return Err(e);
        }
        Ok(PinOutcome::PinnedNow)
    }

    /// Checks `presented` against `expected` and the pin in memory: an
    /// error, `false` if the pin stands as it is, `true` if `presented`
    /// must be pinned.
    fn decide(
        &self,
        receiver: &str,
        presented: DeviceId,
        expected: Option<DeviceId>,
    ) -> Result<bool, PinError> {
        let pinned = self.get(receiver);
        match expected {
            Some(expected) if expected != presented => {
                return Err(PinError::Mismatch {
                    receiver: receiver.to_string(),
                    expected,
                    presented,
                })
            }
            // The user vouched for this id: it replaces any earlier pin.
            Some(_) => {}
            None => {
                if let Some(pinned) = pinned.filter(|p| *p != presented) {
                    return Err(PinError::Changed {
                        receiver: receiver.to_string(),
                        pinned,
                        presented,
                        file: self.path.clone(),
                    });
                }
            }
        }
        Ok(pinned != Some(presented))
    }

    /// Writes the pins file atomically, creating the state directory if needed.
    fn save(&self) -> Result<(), PinError> {
        let body = toml::to_string(&self.pins).map_err(|source| PinError::Encode {
            path: self.path.clone(),
            source,
        })?;
        let write_err = |source| PinError::Write {
            path: self.path.clone(),
            source,
        };
        write_atomic(&self.path, format!("{HEADER}{body}").as_bytes(), PINS_MODE).map_err(write_err)
    }
}

/// The pins in the file at `path`; a missing file means no pins yet.
fn read(path: &Path) -> Result<BTreeMap<String, DeviceId>, PinError> {
    match fs::read_to_string(path) {
        Ok(text) => toml::from_str(&text).map_err(|source| PinError::Parse {
            path: path.to_path_buf(),
            source,
        }),
        Err(e) if e.kind() == io::ErrorKind::NotFound => Ok(BTreeMap::new()),
        Err(source) => Err(PinError::Read {
            path: path.to_path_buf(),
            source,
        }),
    }
}

/// Takes the exclusive lock of the pins file at `pins` (blocking until
/// another writer, which holds it for one write, lets go); dropping the
/// returned file releases it.
fn lock(pins: &Path) -> Result<fs::File, PinError> {
    use std::os::unix::fs::OpenOptionsExt;
    let path = pins.with_file_name(LOCK_FILE);
    let lock_err = |source| PinError::Lock {
        path: path.clone(),
        source,
    };
    let file = fs::OpenOptions::new()
        .read(true)
        .write(true)
        .create(true)
        .truncate(false)
        .mode(PINS_MODE)
        .open(&path)
        .map_err(lock_err)?;
    rustix::fs::flock(&file, rustix::fs::FlockOperation::LockExclusive)
        .map_err(|e| lock_err(e.into()))?;
    Ok(file)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn id(n: u8) -> DeviceId {
        DeviceId::from([n; 32])
    }

    #[test]
    fn missing_file_is_empty() -> anyhow::Result<()> {
        let tmp = tempfile::tempdir()?;
        let pins = Pins::load(tmp.path())?;
        assert_eq!(pins.get("nas:7878"), None);
        assert!(!pins.path().exists());
        Ok(())
    }

    #[test]
    fn first_contact_pins_and_same_id_matches() -> anyhow::Result<()> {
        let tmp = tempfile::tempdir()?;
        let mut pins = Pins::load(tmp.path())?;
        assert_eq!(pins.check("nas:7878", id(1), None)?, PinOutcome::PinnedNow);
        assert_eq!(pins.check("nas:7878", id(1), None)?, PinOutcome::Matched);

        // The pin survives a reload, as a readable line.
        let mut reloaded = Pins::load(tmp.path())?;
        assert_eq!(reloaded.get("nas:7878"), Some(id(1)));
        assert_eq!(
            reloaded.check("nas:7878", id(1), None)?,
            PinOutcome::Matched
        );
        let text = fs::read_to_string(tmp.path().join(PINS_FILE))?;
        assert!(
            text.contains(&format!("\"nas:7878\" = \"{}\"", id(1))),
            "{text}"
        );
        Ok(())
    }

    #[test]
    fn changed_id_is_an_error_naming_the_file() -> anyhow::Result<()> {
        let tmp = tempfile::tempdir()?;
        let mut pins = Pins::load(tmp.path())?;
        pins.check("nas:7878", id(1), None)?;
        let err = pins.check("nas:7878", id(2), None).err();
        let file = tmp.path().join(PINS_FILE);
        assert!(matches!(
            &err,
            Some(PinError::Changed { pinned, presented, file: f, .. })
                if *pinned == id(1) && *presented == id(2) && *f == file
        ));
        let msg = err.map(|e| e.to_string()).unwrap_or_default();
        assert!(msg.contains(&file.display().to_string()), "{msg}");
        assert!(msg.contains(&format!("--receiver-id {}", id(2))), "{msg}");
        assert!(msg.contains("attack"), "{msg}");
        // Nothing changed on disk.
        assert_eq!(Pins::load(tmp.path())?.get("nas:7878"), Some(id(1)));
        Ok(())
    }

    #[test]
    fn expected_mismatch_is_an_error_naming_both_ids() -> anyhow::Result<()> {
        let tmp = tempfile::tempdir()?;
        let mut pins = Pins::load(tmp.path())?;
        let err = pins.check("nas:7878", id(2), Some(id(3))).err();
        assert!(matches!(err, Some(PinError::Mismatch { .. })));
        let msg = err.map(|e| e.to_string()).unwrap_or_default();
        assert!(
            msg.contains(&id(2).to_string()) && msg.contains(&id(3).to_string()),
            "{msg}"
        );
        assert_eq!(pins.get("nas:7878"), None);
        Ok(())
    }

    #[test]
    fn expected_id_repins_a_changed_receiver() -> anyhow::Result<()> {
        let tmp = tempfile::tempdir()?;
        let mut pins = Pins::load(tmp.path())?;
        assert_eq!(
            pins.check("nas:7878", id(1), Some(id(1)))?,
            PinOutcome::PinnedNow
        );
        assert_eq!(
            pins.check("nas:7878", id(1), Some(id(1)))?,
            PinOutcome::Matched
        );
        assert_eq!(
            pins.check("nas:7878", id(2), Some(id(2)))?,
            PinOutcome::PinnedNow
        );
        assert_eq!(Pins::load(tmp.path())?.get("nas:7878"), Some(id(2)));
        Ok(())
    }

    #[test]
    fn receivers_are_pinned_separately() -> anyhow::Result<()> {
        let tmp = tempfile::tempdir()?;
        let mut pins = Pins::load(tmp.path())?;
        pins.check("nas:7878", id(1), None)?;
        assert_eq!(
            pins.check("[::1]:7878", id(2), None)?,
            PinOutcome::PinnedNow
        );
        let reloaded = Pins::load(tmp.path())?;
        assert_eq!(reloaded.get("nas:7878"), Some(id(1)));
        assert_eq!(reloaded.get("[::1]:7878"), Some(id(2)));
        Ok(())
    }

    /// Many first contacts at once, each writer with its own `Pins` (as
    /// senders of one launcher, or processes sharing the state directory):
    /// none fails, and every pin is in the file afterwards.
    #[test]
    fn concurrent_first_contacts_keep_every_pin() -> anyhow::Result<()> {
        const WRITERS: u8 = 24;
        let tmp = tempfile::tempdir()?;
        let state = tmp.path().join("state");
        let start = std::sync::Barrier::new(usize::from(WRITERS));
        std::thread::scope(|s| {
            let handles: Vec<_> = (0..WRITERS)
                .map(|n| {
                    let (state, start) = (&state, &start);
                    s.spawn(move || -> anyhow::Result<PinOutcome> {
                        let mut pins = Pins::load(state)?;
                        start.wait();
                        Ok(pins.check(&format!("host{n}:7878"), id(n), None)?)
                    })
                })
                .collect();
            for h in handles {
                let outcome = h
                    .join()
                    .map_err(|_| anyhow::anyhow!("a writer panicked"))??;
                assert_eq!(outcome, PinOutcome::PinnedNow);
            }
            anyhow::Ok(())
        })?;
        let pins = Pins::load(&state)?;
        for n in 0..WRITERS {
            assert_eq!(pins.get(&format!("host{n}:7878")), Some(id(n)), "{n}");
        }
        // No temporary file is left behind.
        let mut names: Vec<String> = fs::read_dir(&state)?
            .map(|e| Ok(e?.file_name().to_string_lossy().into_owned()))
            .collect::<anyhow::Result<_>>()?;
        names.sort();
        assert_eq!(names, [LOCK_FILE, PINS_FILE]);
        Ok(())
    }

    /// Two writers meeting one receiver at once with different ids: the
    /// first pin stands and the other writer gets `Changed`, as it would
    /// have one run later.
    #[test]
    fn a_pin_made_meanwhile_by_another_writer_is_checked() -> anyhow::Result<()> {
        let tmp = tempfile::tempdir()?;
        let mut first = Pins::load(tmp.path())?;
        let mut second = Pins::load(tmp.path())?;
        let mut third = Pins::load(tmp.path())?;
        assert_eq!(first.check("nas:7878", id(1), None)?, PinOutcome::PinnedNow);
        let err = second.check("nas:7878", id(2), None).err();
        assert!(
            matches!(err, Some(PinError::Changed { pinned, .. }) if pinned == id(1)),
            "{err:?}"
        );
        assert_eq!(third.check("nas:7878", id(1), None)?, PinOutcome::Matched);
        assert_eq!(Pins::load(tmp.path())?.get("nas:7878"), Some(id(1)));
        Ok(())
    }

    #[test]
    fn invalid_file_is_reported_with_its_path() -> anyhow::Result<()> {
        let tmp = tempfile::tempdir()?;
        let file = tmp.path().join(PINS_FILE);
        fs::write(&file, "\"nas:7878\" = \"not-an-id\"\n")?;
        let err = Pins::load(tmp.path()).err();
        assert!(matches!(err, Some(PinError::Parse { .. })));
        // The parser's words are the error's source, not its message.
        let msg = err.map(|e| crate::chain::chain(&e)).unwrap_or_default();
        assert!(msg.contains(&file.display().to_string()), "{msg}");
        assert!(msg.contains("not a Ferry device id"), "{msg}");
        Ok(())
    }
}
