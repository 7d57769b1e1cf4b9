//! Who gets in: the handshake of a sender that completed TLS, without I/O.
//! The connection driver reads the first message and asks [`opening`] what
//! it asks for; for a `Hello` (or `HelloProtected`) it checks the pairing
//! proof ([`proof`]), looks up what the store knows ([`Known`]), gathers the
//! [`Facts`], asks [`decide`], and carries out the verdict.
//!
//! A folder's protection is fixed by its first run: a sender admitted
//! otherwise is refused when it asks for another one than the folder's
//! ([`protection_refusal`]), and the driver records a new folder's only when
//! its run begins (never for a refused or busy session).

use ferry_proto::frame::FrameError;
use ferry_proto::{Hash, Hello, Message, Name, Open, Protection, RefuseCode, PROTOCOL_VERSION};

use crate::identity::DeviceId;
use crate::store::SenderRecord;
use crate::stream::StreamError;

/// What the first message on a connection's control stream asks for.
#[derive(Debug)]
pub(crate) enum Opening {
    /// A run: `Hello` (plain) or `HelloProtected`, to admit or refuse.
    Run(Hello, Protection),
    /// A read-only session: `Open` (history, versions, restore).
    Requests(Open),
    /// Neither: refuse with this code and message.
    Refuse { code: RefuseCode, message: String },
}

/// What the first message (or the failure to read it) asks for.
pub(crate) fn opening(first: Result<Message, StreamError>) -> Opening {
    match first {
        Ok(Message::Hello(hello)) => Opening::Run(hello, Protection::Plain),
        Ok(Message::HelloProtected { hello, protection }) => Opening::Run(hello, protection),
        Ok(Message::Open(open)) => Opening::Requests(open),
        Ok(other) => Opening::Refuse {
            code: RefuseCode::BadRequest,
            message: format!("expected Hello, got {}", crate::stream::describe(&other)),
        },
        // A message that does not decode is most likely another version's.
        Err(
            e @ StreamError::Frame(
                FrameError::Malformed(_) | FrameError::TrailingBytes { .. },
            ),
        ) => Opening::Refuse {
            code: RefuseCode::BadRequest,
            message: format!(
                "bad Hello ({}): is the sender another Ferry version? this receiver speaks protocol {PROTOCOL_VERSION}; run the same Ferry version on both",
                crate::chain::Chain(&e)
            ),
        },
        Err(e) => Opening::Refuse {
            code: RefuseCode::BadRequest,
            message: format!("bad Hello: {}", crate::chain::Chain(&e)),
        },
    }
}

/// Checks the pairing proof a `Hello` offers against this receiver's
/// `secret`; `material` (the TLS session's exported keying material) is
/// asked for only when there is a proof to check.
pub(crate) fn proof<E>(
    offered: Option<&Hash>,
    secret: Option<&[u8]>,
    material: impl FnOnce() -> Result<[u8; 32], E>,
) -> Result<Proof, E> {
    Ok(match (offered, secret) {
        (None, _) => Proof::Absent,
        (Some(_), None) => Proof::NotAccepted,
        (Some(offered), Some(secret)) => {
            let expected = ferry_proto::pairing_proof(secret, &material()?);
            if ferry_proto::proofs_match(offered, &expected) {
                Proof::Valid
            } else {
                Proof::Invalid
            }
        }
    })
}

/// What the store knows about a peer and the name and folder it asks for.
#[derive(Debug, Clone, Default)]
pub(crate) struct Known {
    /// The sender this device is registered as, if any.
    pub by_device: Option<SenderRecord>,
    /// The sender holding the name the `Hello` asks for, if any.
    pub by_name: Option<SenderRecord>,
    /// True if this device has sent the `Hello`'s folder before.
    pub folder_known: bool,
    /// The protection the folder is fixed to; `None` for a folder this
    /// device has never sent (its first run fixes it).
    pub protection: Option<Protection>,
}

/// What the receiver's admin set, as it stands when the `Hello` arrives.
#[derive(Debug, Clone, Copy)]
pub(crate) struct Policy {
    pub allowed: bool,
    pub revoked: bool,
    pub pairing_off: bool,
}

impl<'a> Facts<'a> {
    /// Gathers the facts of `hello` from `peer`.
    pub(crate) fn gather(
        peer: DeviceId,
        asked: &'a Asked,
        known: &'a Known,
        proof: Proof,
        policy: Policy,
    ) -> Facts<'a> {
        Facts {
            peer,
            hello: &asked.hello,
            protection: asked.protection,
            fixed: known.protection,
            registered_as: known.by_device.as_ref().map(|s| &s.name),
            name_taken: known
                .by_name
                .as_ref()
                .is_some_and(|s| s.device != peer.to_string()),
            folder_known: known.folder_known,
            allowed: policy.allowed,
            proof,
            revoked: policy.revoked,
            pairing_off: policy.pairing_off,
        }
    }
}

/// The handshake of one connection after TLS, without I/O: the driver
/// feeds what it read and looked up ([`Event`]), and carries out what the
/// machine returns ([`Action`]) until a run begins or the session ends.
#[derive(Debug)]
pub(crate) struct Handshake {
    peer: DeviceId,
    state: Stage,
}

/// What a sender asks for: a run of `hello`'s folder, kept as `protection`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct Asked {
    pub hello: Hello,
    pub protection: Protection,
}

/// Where the handshake is.
#[derive(Debug)]
enum Stage {
    /// Waiting for the first message.
    First,
    /// `Hello` read: its pairing proof is being checked.
    Proving(Asked),
    /// The proof is known: the store is being asked about the peer.
    LookingUp(Asked, Proof),
    /// Admitted: a client slot is being taken.
    Admitted {
        asked: Asked,
        known: Known,
        register: bool,
        paired: bool,
    },
    /// An ending action was given.
    Over,
}

/// What happened, as the handshake's driver tells it.
#[derive(Debug)]
pub(crate) enum Event {
    /// The first message on the control stream, or why it was unreadable.
    First(Result<Message, StreamError>),
    /// The pairing proof asked for by [`Action::CheckProof`].
    Proved(Proof),
    /// What the store knows, and the admin's policy, asked for by
    /// [`Action::LookUp`].
    Found(Known, Policy),
    /// Whether a client slot was free ([`Action::TakeSlot`]).
    Slot(bool),
}

/// What the handshake's driver must do next.
#[derive(Debug)]
pub(crate) enum Action {
    /// Check the pairing proof `hello` offers; then [`Event::Proved`].
    CheckProof(Option<Hash>),
    /// Look up `hello`'s sender and folder, and the admin's policy for the
    /// peer; then [`Event::Found`].
    LookUp(Hello),
    /// The peer is admitted: watch it for revocation, give back its
    /// pending slot and take a client slot; then [`Event::Slot`].
    TakeSlot,
    /// Serve a read-only session for this `Open`: the handshake is over.
    ServeRequests(Open),
    /// Refuse with this code and message, and close: the session is over.
    Refuse { code: RefuseCode, message: String },
    /// Tell the sender to retry later: the session is over.
    Busy(Hello),
    /// Register the sender if `register`, fix the folder's protection if
    /// it has none yet (`asked.protection`; refuse with
    /// [`protection_refusal`] if another run fixed another meanwhile),
    /// begin its run and welcome it.
    BeginRun {
        asked: Asked,
        known: Known,
        register: bool,
        paired: bool,
    },
}

impl Handshake {
    pub(crate) fn new(peer: DeviceId) -> Handshake {
        Handshake {
            peer,
            state: Stage::First,
        }
    }

    /// Takes what happened; returns what to do next. An event the driver
    /// should not have sent now ends the handshake with a refusal.
    pub(crate) fn on(&mut self, event: Event) -> Action {
        match (std::mem::replace(&mut self.state, Stage::Over), event) {
            (Stage::First, Event::First(first)) => match opening(first) {
                Opening::Run(hello, protection) => {
                    let offered = hello.pairing;
                    self.state = Stage::Proving(Asked { hello, protection });
                    Action::CheckProof(offered)
                }
                Opening::Requests(open) => Action::ServeRequests(open),
                Opening::Refuse { code, message } => Action::Refuse { code, message },
            },
            (Stage::Proving(asked), Event::Proved(proof)) => {
                let hello = asked.hello.clone();
                self.state = Stage::LookingUp(asked, proof);
                Action::LookUp(hello)
            }
            (Stage::LookingUp(asked, proof), Event::Found(known, policy)) => {
                match decide(&Facts::gather(self.peer, &asked, &known, proof, policy)) {
                    Verdict::Admit { register, paired } => {
                        self.state = Stage::Admitted {
                            asked,
                            known,
                            register,
                            paired,
                        };
                        Action::TakeSlot
                    }
                    Verdict::Refuse { code, message } => Action::Refuse { code, message },
                }
            }
            (
                Stage::Admitted {
                    asked,
                    known,
                    register,
                    paired,
                },
                Event::Slot(free),
            ) => match free {
                true => Action::BeginRun {
                    asked,
                    known,
                    register,
                    paired,
                },
                false => Action::Busy(asked.hello),
            },
            // A bug of the driver: end rather than guess.
            (_, _) => Action::Refuse {
                code: RefuseCode::BadRequest,
                message: "the receiver's handshake went out of order".into(),
            },
        }
    }
}

/// What the driver found out about the pairing proof.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Proof {
    /// The sender offered none.
    Absent,
    /// It matched this receiver's secret for this TLS session.
    Valid,
    /// It did not match.
    Invalid,
    /// The sender offered one, but this receiver has no pairing secret.
    NotAccepted,
}

/// Everything the decision depends on.
#[derive(Debug, Clone)]
pub struct Facts<'a> {
    pub peer: DeviceId,
    pub hello: &'a Hello,
    /// The protection the sender keeps the folder in (`Plain` for `Hello`).
    pub protection: Protection,
    /// The protection the folder is fixed to; `None`: a folder this device
    /// has never sent.
    pub fixed: Option<Protection>,
    /// The name this device is registered under, if it is known.
    pub registered_as: Option<&'a Name>,
    /// True if another device holds `hello.name`.
    pub name_taken: bool,
    /// True if this device has sent `hello.folder` before (so its name
    /// predates any rule for new names).
    pub folder_known: bool,
    /// True if the admin listed the peer with `--allow`.
    pub allowed: bool,
    pub proof: Proof,
    /// True if the receiver's admin revoked this device.
    pub revoked: bool,
    /// True if the receiver's admin switched pairing off.
    pub pairing_off: bool,
}

/// The outcome.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Verdict {
    /// Let it in; `register` says the device must be recorded as a known
    /// sender under `hello.name` first; `paired` that pairing admitted it.
    Admit {
        register: bool,
        paired: bool,
    },
    Refuse {
        code: RefuseCode,
        message: String,
    },
}

fn refuse(code: RefuseCode, message: String) -> Verdict {
    Verdict::Refuse { code, message }
}

/// Why a run of `hello`'s folder, fixed to `fixed`, cannot be kept as
/// `asked` (a folder's protection never changes); `None` if it can.
pub(crate) fn protection_refusal(
    hello: &Hello,
    fixed: &Protection,
    asked: &Protection,
) -> Option<String> {
    use crate::store::protection::{describe, mode_name, short_key};
    if fixed == asked {
        return None;
    }
    let folder = format!("folder {} of {}", hello.folder, hello.name);
    Some(match (fixed, asked) {
        (Protection::Encrypted { .. }, Protection::Plain) => format!(
            "{folder} is {}: send it with --protect encrypted and its key file",
            describe(fixed)
        ),
        (Protection::WriteOnly { .. }, Protection::Plain) => format!(
            "{folder} is {}: send it with --protect write-only and its public key file",
            describe(fixed)
        ),
        (Protection::Plain, _) => format!(
            "{folder} was first sent unencrypted; a folder's protection is fixed: send without --protect, or to a new folder name (--folder) to keep it {}",
            mode_name(asked)
        ),
        (_, _) => {
            let not = match asked {
                Protection::Encrypted { key } | Protection::WriteOnly { key }
                    if mode_name(asked) == mode_name(fixed) =>
                {
                    format!("{}…", short_key(key))
                }
                _ => describe(asked),
            };
            format!(
                "{folder} is {}, not {not}; a folder's protection is fixed: use the key file it was first sent with, or send to a new folder name (--folder)",
                describe(fixed)
            )
        }
    })
}

/// Decides whether a sender is admitted.
pub fn decide(facts: &Facts<'_>) -> Verdict {
    let hello = facts.hello;
    if hello.protocol != PROTOCOL_VERSION {
        return refuse(
            RefuseCode::Version,
            format!(
                "this receiver speaks protocol {PROTOCOL_VERSION}, the sender {}: run the same Ferry version on both",
                hello.protocol
            ),
        );
    }
    if facts.revoked {
        let name = facts
            .registered_as
            .map_or(hello.name.as_str(), Name::as_str);
        return refuse(
            RefuseCode::Revoked,
            format!(
                "the receiver's admin revoked this sender ({name:?}, device {}): it is no longer admitted; its stored files stay on the receiver. Ask the admin to run `ferry senders allow {name}` to back up again",
                facts.peer
            ),
        );
    }
    if let Some(name) = facts.registered_as {
        if name != &hello.name {
            return refuse(
                RefuseCode::WrongName,
                format!(
                    "this device ({}) is registered on the receiver as {name:?}, not {:?}: run the sender with --name {name}",
                    facts.peer, hello.name.as_str()
                ),
            );
        }
        if !facts.folder_known {
            if let Err(e) = hello.folder.check_new() {
                return refuse(
                    RefuseCode::BadName,
                    format!("folder {e}: choose another with --folder"),
                );
            }
        }
        if let Some(fixed) = &facts.fixed {
            if let Some(message) = protection_refusal(hello, fixed, &facts.protection) {
                return refuse(RefuseCode::Protection, message);
            }
        }
        return Verdict::Admit {
            register: false,
            paired: false,
        };
    }
    // An unknown device: its right to register comes first, so a stranger
    // learns nothing about the names this receiver holds.
    let paired = match (facts.allowed, facts.proof) {
        (true, _) => false,
        (false, Proof::Valid | Proof::Invalid) if facts.pairing_off => {
            return refuse(
                RefuseCode::UnknownSender,
                format!(
                    "device {} is not known and this receiver is not accepting new senders now (its admin switched pairing off): ask the admin to run `ferry senders pairing on`, or to add --allow {}",
                    facts.peer, facts.peer
                ),
            )
        }
        (false, Proof::Valid) => true,
        (false, Proof::Invalid) => {
            return refuse(
                RefuseCode::BadPairingSecret,
                format!(
                    "device {} offered a pairing secret that does not match this receiver's: check --pairing-secret-file on both sides",
                    facts.peer
                ),
            )
        }
        (false, Proof::NotAccepted) => {
            return refuse(
                RefuseCode::UnknownSender,
                format!(
                    "device {} is not known and this receiver does not accept pairing: ask its admin to run `ferry receive` with --allow {} or with --pairing-secret-file",
                    facts.peer, facts.peer
                ),
            )
        }
        (false, Proof::Absent) => {
            return refuse(
                RefuseCode::UnknownSender,
                format!(
                    "device {} is not known to this receiver: pair it once with --pairing-secret-file (the receiver's secret), or ask the receiver's admin to add --allow {}",
                    facts.peer, facts.peer
                ),
            )
        }
    };
    if facts.name_taken {
        return refuse(
            RefuseCode::NameTaken,
            format!(
                "the name {:?} belongs to another device on this receiver: choose another with --name",
                hello.name.as_str()
            ),
        );
    }
    if let Err(e) = hello.name.check_new() {
        return refuse(
            RefuseCode::BadName,
            format!("sender {e}: choose another with --name"),
        );
    }
    if let Err(e) = hello.folder.check_new() {
        return refuse(
            RefuseCode::BadName,
            format!("folder {e}: choose another with --folder"),
        );
    }
    Verdict::Admit {
        register: true,
        paired,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn hello(name: &str, protocol: u32) -> Hello {
        Hello {
            protocol,
            name: Name::new(name).unwrap(),
            folder: Name::new("docs").unwrap(),
            pairing: None,
            agent: String::new(),
            last_run: None,
        }
    }

    fn facts<'a>(hello: &'a Hello) -> Facts<'a> {
        Facts {
            peer: DeviceId::from_spki(b"peer"),
            hello,
            protection: Protection::Plain,
            fixed: None,
            registered_as: None,
            name_taken: false,
            folder_known: false,
            allowed: false,
            proof: Proof::Absent,
            revoked: false,
            pairing_off: false,
        }
    }

    #[test]
    fn a_revoked_device_is_refused_even_when_listed_and_named_right() {
        let h = hello("lap", PROTOCOL_VERSION);
        let name = Name::new("lap").unwrap();
        let revoked = Facts {
            registered_as: Some(&name),
            allowed: true,
            revoked: true,
            ..facts(&h)
        };
        let (code, message) = refused(&revoked).expect("admitted");
        assert_eq!(code, RefuseCode::Revoked);
        assert!(message.contains("ferry senders allow lap"), "{message}");
    }

    #[test]
    fn pairing_off_refuses_a_right_secret_but_not_a_known_or_listed_device() {
        let h = hello("lap", PROTOCOL_VERSION);
        for proof in [Proof::Valid, Proof::Invalid] {
            let (code, message) = refused(&Facts {
                proof,
                pairing_off: true,
                ..facts(&h)
            })
            .expect("admitted");
            assert_eq!(code, RefuseCode::UnknownSender);
            assert!(message.contains("pairing on"), "{message}");
        }
        let name = Name::new("lap").unwrap();
        let known = Facts {
            registered_as: Some(&name),
            pairing_off: true,
            ..facts(&h)
        };
        assert!(refused(&known).is_none());
        let listed = Facts {
            allowed: true,
            proof: Proof::Valid,
            pairing_off: true,
            ..facts(&h)
        };
        assert!(refused(&listed).is_none());
    }

    #[test]
    fn unknown_sender_refused_with_what_to_do() {
        let h = hello("lap", PROTOCOL_VERSION);
        let Verdict::Refuse { code, message } = decide(&facts(&h)) else {
            panic!()
        };
        assert_eq!(code, RefuseCode::UnknownSender);
        assert!(message.contains("--allow") && message.contains("--pairing-secret-file"));
    }

    #[test]
    fn known_allowed_and_paired_admitted() {
        let h = hello("lap", PROTOCOL_VERSION);
        let name = Name::new("lap").unwrap();
        let known = Facts {
            registered_as: Some(&name),
            ..facts(&h)
        };
        assert_eq!(
            decide(&known),
            Verdict::Admit {
                register: false,
                paired: false
            }
        );
        let allowed = Facts {
            allowed: true,
            ..facts(&h)
        };
        assert_eq!(
            decide(&allowed),
            Verdict::Admit {
                register: true,
                paired: false
            }
        );
        let paired = Facts {
            proof: Proof::Valid,
            ..facts(&h)
        };
        assert_eq!(
            decide(&paired),
            Verdict::Admit {
                register: true,
                paired: true
            }
        );
    }

    #[test]
    fn bad_secret_wrong_name_taken_name_and_version_refused() {
        let h = hello("lap", PROTOCOL_VERSION);
        let code = |f: Facts<'_>| match decide(&f) {
            Verdict::Refuse { code, .. } => Some(code),
            Verdict::Admit { .. } => None,
        };
        assert_eq!(
            code(Facts {
                proof: Proof::Invalid,
                ..facts(&h)
            }),
            Some(RefuseCode::BadPairingSecret)
        );
        assert_eq!(
            code(Facts {
                proof: Proof::NotAccepted,
                ..facts(&h)
            }),
            Some(RefuseCode::UnknownSender)
        );
        let other = Name::new("desk").unwrap();
        assert_eq!(
            code(Facts {
                registered_as: Some(&other),
                ..facts(&h)
            }),
            Some(RefuseCode::WrongName)
        );
        // A taken name is refused even with a valid proof: no sender can
        // write into another's namespace.
        let taken = Facts {
            name_taken: true,
            proof: Proof::Valid,
            ..facts(&h)
        };
        assert_eq!(code(taken), Some(RefuseCode::NameTaken));
        let old = hello("lap", 0);
        assert_eq!(
            code(Facts {
                allowed: true,
                ..facts(&old)
            }),
            Some(RefuseCode::Version)
        );
    }

    fn refused(f: &Facts<'_>) -> Option<(RefuseCode, String)> {
        match decide(f) {
            Verdict::Refuse { code, message } => Some((code, message)),
            Verdict::Admit { .. } => None,
        }
    }

    #[test]
    fn stranger_cannot_tell_a_taken_name_from_a_free_one() {
        let h = hello("lap", PROTOCOL_VERSION);
        for proof in [Proof::Absent, Proof::Invalid, Proof::NotAccepted] {
            let free = refused(&Facts { proof, ..facts(&h) });
            let taken = refused(&Facts {
                proof,
                name_taken: true,
                ..facts(&h)
            });
            assert!(free.is_some(), "{proof:?}");
            assert_eq!(free, taken, "{proof:?}");
        }
    }

    #[test]
    fn new_sender_or_folder_with_an_unprintable_or_look_alike_name_refused() {
        let bad_hello = |name: &str, folder: &str| Hello {
            protocol: PROTOCOL_VERSION,
            name: Name::new(name).unwrap(),
            folder: Name::new(folder).unwrap(),
            pairing: None,
            agent: String::new(),
            last_run: None,
        };
        for (name, folder) in [
            ("lap\nforged", "docs"),
            ("lap\u{202e}", "docs"),
            ("ｌａｐ", "docs"),
            ("l\u{200d}ap", "docs"),
            ("lap", "docs\u{202e}"),
        ] {
            let h = bad_hello(name, folder);
            let (code, message) = refused(&Facts {
                proof: Proof::Valid,
                ..facts(&h)
            })
            .expect("admitted");
            assert_eq!(code, RefuseCode::BadName, "{name:?}/{folder:?}");
            assert!(
                !message.contains(['\n', '\u{202e}', '\u{200d}']),
                "{message}"
            );
        }
    }

    #[test]
    fn names_registered_before_the_rule_keep_working() {
        // A sender registered as `lap\n` (before the rule) keeps its name and
        // its folders; only a folder new to it is checked.
        let h = Hello {
            protocol: PROTOCOL_VERSION,
            name: Name::new("lap\n").unwrap(),
            folder: Name::new("ｄｏｃｓ").unwrap(),
            pairing: None,
            agent: String::new(),
            last_run: None,
        };
        let name = Name::new("lap\n").unwrap();
        let known = Facts {
            registered_as: Some(&name),
            folder_known: true,
            ..facts(&h)
        };
        assert_eq!(
            decide(&known),
            Verdict::Admit {
                register: false,
                paired: false
            }
        );
        let new_folder = Facts {
            folder_known: false,
            ..known
        };
        assert_eq!(
            refused(&new_folder).map(|(code, _)| code),
            Some(RefuseCode::BadName)
        );
    }

    #[test]
    fn the_first_message_opens_a_run_a_request_session_or_a_refusal() {
        let h = hello("lap", PROTOCOL_VERSION);
        assert!(
            matches!(opening(Ok(Message::Hello(h.clone()))), Opening::Run(got, Protection::Plain) if got == h)
        );
        let sealed = Protection::Encrypted { key: [1; 32] };
        let protected = Message::HelloProtected {
            hello: h.clone(),
            protection: sealed,
        };
        assert!(matches!(opening(Ok(protected)), Opening::Run(got, p) if got == h && p == sealed));
        let open = Open {
            protocol: PROTOCOL_VERSION,
            name: Name::new("lap").unwrap(),
            folder: Name::new("docs").unwrap(),
            agent: String::new(),
        };
        assert!(matches!(
            opening(Ok(Message::Open(open))),
            Opening::Requests(_)
        ));
        let Opening::Refuse { code, message } = opening(Ok(Message::Stored)) else {
            panic!("a Stored first was not refused");
        };
        assert_eq!(code, RefuseCode::BadRequest);
        assert!(message.starts_with("expected Hello, got "), "{message}");
        let garbage = Err(StreamError::Frame(ferry_proto::FrameError::Truncated));
        let Opening::Refuse { code, message } = opening(garbage) else {
            panic!("garbage was not refused");
        };
        assert_eq!(code, RefuseCode::BadRequest);
        assert_eq!(message, "bad Hello: stream ended inside a frame");
    }

    #[test]
    fn the_pairing_proof_is_checked_only_when_one_is_offered_and_accepted() {
        let material = [7u8; 32];
        let secret = b"sesame".as_slice();
        let right = ferry_proto::pairing_proof(secret, &material);
        let wrong = ferry_proto::pairing_proof(b"other", &material);
        let never = || -> Result<[u8; 32], ()> { panic!("material asked for") };
        assert_eq!(proof(None, Some(secret), never), Ok(Proof::Absent));
        assert_eq!(proof(Some(&right), None, never), Ok(Proof::NotAccepted));
        let have = || Ok::<_, ()>(material);
        assert_eq!(proof(Some(&right), Some(secret), have), Ok(Proof::Valid));
        assert_eq!(proof(Some(&wrong), Some(secret), have), Ok(Proof::Invalid));
        assert_eq!(
            proof(Some(&right), Some(secret), || Err("no export")),
            Err("no export")
        );
    }

    #[test]
    fn facts_are_gathered_from_what_the_store_knows() {
        let h = hello("lap", PROTOCOL_VERSION);
        let peer = DeviceId::from_spki(b"peer");
        let record = |device: &str, name: &str| SenderRecord {
            id: 1,
            device: device.into(),
            name: Name::new(name).unwrap(),
        };
        let policy = Policy {
            allowed: true,
            revoked: false,
            pairing_off: true,
        };
        let known = Known {
            by_device: Some(record(&peer.to_string(), "lap")),
            by_name: Some(record(&peer.to_string(), "lap")),
            folder_known: true,
            protection: Some(Protection::Plain),
        };
        let asked = Asked {
            hello: h,
            protection: Protection::WriteOnly { key: [4; 32] },
        };
        let f = Facts::gather(peer, &asked, &known, Proof::Absent, policy);
        assert_eq!(f.protection, asked.protection);
        assert_eq!(f.fixed, Some(Protection::Plain));
        assert_eq!(f.registered_as.map(Name::as_str), Some("lap"));
        assert!(!f.name_taken, "its own name is not taken");
        assert!(f.folder_known && f.allowed && f.pairing_off && !f.revoked);
        let other = Known {
            by_name: Some(record("someone else", "lap")),
            ..Known::default()
        };
        let f = Facts::gather(peer, &asked, &other, Proof::Valid, policy);
        assert_eq!(f.fixed, None);
        assert!(f.name_taken && f.registered_as.is_none());
        assert_eq!(f.proof, Proof::Valid);
    }

    /// The policy of a receiver that lists the peer with `--allow`.
    const LISTED: Policy = Policy {
        allowed: true,
        revoked: false,
        pairing_off: false,
    };

    #[test]
    fn a_listed_sender_is_proved_looked_up_admitted_and_its_run_begun() {
        let peer = DeviceId::from_spki(b"peer");
        let h = hello("lap", PROTOCOL_VERSION);
        let mut m = Handshake::new(peer);
        let a = m.on(Event::First(Ok(Message::Hello(h.clone()))));
        assert!(matches!(a, Action::CheckProof(None)), "{a:?}");
        let a = m.on(Event::Proved(Proof::Absent));
        assert!(matches!(&a, Action::LookUp(got) if *got == h), "{a:?}");
        let a = m.on(Event::Found(Known::default(), LISTED));
        assert!(matches!(a, Action::TakeSlot), "{a:?}");
        let a = m.on(Event::Slot(true));
        assert!(
            matches!(&a, Action::BeginRun { asked, register: true, paired: false, .. } if asked.hello == h && asked.protection == Protection::Plain),
            "{a:?}"
        );
    }

    #[test]
    fn no_free_slot_means_busy() {
        let mut m = Handshake::new(DeviceId::from_spki(b"peer"));
        m.on(Event::First(Ok(Message::Hello(hello(
            "lap",
            PROTOCOL_VERSION,
        )))));
        m.on(Event::Proved(Proof::Absent));
        m.on(Event::Found(Known::default(), LISTED));
        assert!(matches!(m.on(Event::Slot(false)), Action::Busy(_)));
    }

    #[test]
    fn open_is_served_and_other_first_messages_or_strangers_refused() {
        let open = Open {
            protocol: PROTOCOL_VERSION,
            name: Name::new("lap").unwrap(),
            folder: Name::new("docs").unwrap(),
            agent: String::new(),
        };
        let peer = DeviceId::from_spki(b"peer");
        let a = Handshake::new(peer).on(Event::First(Ok(Message::Open(open))));
        assert!(matches!(a, Action::ServeRequests(_)), "{a:?}");
        let a = Handshake::new(peer).on(Event::First(Ok(Message::Stored)));
        assert!(
            matches!(
                a,
                Action::Refuse {
                    code: RefuseCode::BadRequest,
                    ..
                }
            ),
            "{a:?}"
        );
        // A stranger offering a proof: checked, then refused.
        let mut m = Handshake::new(peer);
        let mut h = hello("lap", PROTOCOL_VERSION);
        h.pairing = Some([3; 32]);
        let a = m.on(Event::First(Ok(Message::Hello(h))));
        assert!(
            matches!(a, Action::CheckProof(Some(p)) if p == [3; 32]),
            "{a:?}"
        );
        m.on(Event::Proved(Proof::Invalid));
        let stranger = Policy {
            allowed: false,
            ..LISTED
        };
        let a = m.on(Event::Found(Known::default(), stranger));
        assert!(
            matches!(
                a,
                Action::Refuse {
                    code: RefuseCode::BadPairingSecret,
                    ..
                }
            ),
            "{a:?}"
        );
        // An event out of order ends the handshake.
        let a = Handshake::new(peer).on(Event::Slot(true));
        assert!(matches!(a, Action::Refuse { .. }), "{a:?}");
    }

    const ENCRYPTED: Protection = Protection::Encrypted { key: [0xab; 32] };
    const OTHER_KEY: Protection = Protection::Encrypted { key: [0xef; 32] };
    const WRITE_ONLY: Protection = Protection::WriteOnly { key: [0xab; 32] };

    /// The verdict on `lap` (registered) sending `docs` as `asked` when the
    /// folder is fixed to `fixed`.
    fn verdict_on(fixed: Option<Protection>, asked: Protection) -> Verdict {
        let h = hello("lap", PROTOCOL_VERSION);
        let name = Name::new("lap").unwrap();
        decide(&Facts {
            registered_as: Some(&name),
            folder_known: fixed.is_some(),
            protection: asked,
            fixed,
            ..facts(&h)
        })
    }

    const ADMIT: Verdict = Verdict::Admit {
        register: false,
        paired: false,
    };

    #[test]
    fn a_new_folder_is_admitted_in_any_mode_and_a_fixed_one_in_its_own() {
        for asked in [Protection::Plain, ENCRYPTED, WRITE_ONLY] {
            assert_eq!(verdict_on(None, asked), ADMIT, "{asked:?}");
            assert_eq!(verdict_on(Some(asked), asked), ADMIT, "{asked:?}");
        }
    }

    fn protection_refused(fixed: Protection, asked: Protection) -> String {
        match verdict_on(Some(fixed), asked) {
            Verdict::Refuse {
                code: RefuseCode::Protection,
                message,
            } => message,
            other => panic!("{fixed:?} asked as {asked:?}: {other:?}"),
        }
    }

    #[test]
    fn plain_into_a_protected_folder_is_refused_with_what_to_do() {
        let m = protection_refused(ENCRYPTED, Protection::Plain);
        assert_eq!(
            m,
            "folder docs of lap is encrypted with key abababababab…: send it with --protect encrypted and its key file"
        );
        let m = protection_refused(WRITE_ONLY, Protection::Plain);
        assert!(m.starts_with("folder docs of lap is write-only with key abababababab…: send it with --protect write-only"), "{m}");
    }

    #[test]
    fn a_protected_sender_into_a_plain_folder_is_refused() {
        for asked in [ENCRYPTED, WRITE_ONLY] {
            let m = protection_refused(Protection::Plain, asked);
            assert!(m.starts_with("folder docs of lap was first sent unencrypted; a folder's protection is fixed: "), "{m}");
            assert!(m.contains("new folder name"), "{m}");
        }
    }

    #[test]
    fn another_key_or_mode_is_refused_naming_both() {
        let m = protection_refused(ENCRYPTED, OTHER_KEY);
        assert!(
            m.starts_with(
                "folder docs of lap is encrypted with key abababababab…, not efefefefefef…;"
            ),
            "{m}"
        );
        let m = protection_refused(ENCRYPTED, WRITE_ONLY);
        assert!(
            m.starts_with("folder docs of lap is encrypted with key abababababab…, not write-only with key abababababab…;"),
            "{m}"
        );
        let m = protection_refused(WRITE_ONLY, ENCRYPTED);
        assert!(m.contains("is write-only with key"), "{m}");
    }

    #[test]
    fn identity_is_decided_before_protection() {
        // A stranger or a wrong name learns nothing about the folder.
        let h = hello("lap", PROTOCOL_VERSION);
        let other = Name::new("desk").unwrap();
        let wrong_name = Facts {
            registered_as: Some(&other),
            protection: Protection::Plain,
            fixed: Some(ENCRYPTED),
            ..facts(&h)
        };
        assert_eq!(
            refused(&wrong_name).map(|(code, _)| code),
            Some(RefuseCode::WrongName)
        );
        let stranger = Facts {
            fixed: Some(ENCRYPTED),
            ..facts(&h)
        };
        assert_eq!(
            refused(&stranger).map(|(code, _)| code),
            Some(RefuseCode::UnknownSender)
        );
    }

    /// A registered `lap` whose `docs` is fixed to `fixed`.
    fn known_lap(peer: DeviceId, fixed: Option<Protection>) -> Known {
        let lap = SenderRecord {
            id: 1,
            device: peer.to_string(),
            name: Name::new("lap").unwrap(),
        };
        Known {
            by_device: Some(lap.clone()),
            by_name: Some(lap),
            folder_known: fixed.is_some(),
            protection: fixed,
        }
    }

    /// Drives a handshake of `first` up to the look-up's answer.
    fn looked_up(peer: DeviceId, first: Message, known: Known) -> (Handshake, Action) {
        let mut m = Handshake::new(peer);
        m.on(Event::First(Ok(first)));
        m.on(Event::Proved(Proof::Absent));
        let a = m.on(Event::Found(known, LISTED));
        (m, a)
    }

    #[test]
    fn a_first_protected_run_begins_with_its_protection_to_record() {
        let peer = DeviceId::from_spki(b"peer");
        let h = hello("lap", PROTOCOL_VERSION);
        let first = Message::HelloProtected {
            hello: h.clone(),
            protection: WRITE_ONLY,
        };
        let (mut m, a) = looked_up(peer, first, known_lap(peer, None));
        assert!(matches!(a, Action::TakeSlot), "{a:?}");
        let a = m.on(Event::Slot(true));
        assert!(
            matches!(&a, Action::BeginRun { asked, register: false, .. } if asked.hello == h && asked.protection == WRITE_ONLY),
            "{a:?}"
        );
        // The same mode and key again: admitted.
        let again = Message::HelloProtected {
            hello: h,
            protection: WRITE_ONLY,
        };
        let (_, a) = looked_up(peer, again, known_lap(peer, Some(WRITE_ONLY)));
        assert!(matches!(a, Action::TakeSlot), "{a:?}");
    }

    #[test]
    fn refused_and_busy_sessions_never_reach_the_run_that_records() {
        let peer = DeviceId::from_spki(b"peer");
        let h = hello("lap", PROTOCOL_VERSION);
        // Plain into an encrypted folder: refused before any slot is taken.
        let (mut m, a) = looked_up(
            peer,
            Message::Hello(h.clone()),
            known_lap(peer, Some(ENCRYPTED)),
        );
        assert!(
            matches!(
                a,
                Action::Refuse {
                    code: RefuseCode::Protection,
                    ..
                }
            ),
            "{a:?}"
        );
        // The handshake is over: nothing more begins.
        assert!(matches!(m.on(Event::Slot(true)), Action::Refuse { .. }));
        // A new folder's first run, but no slot: busy, nothing begun.
        let first = Message::HelloProtected {
            hello: h,
            protection: ENCRYPTED,
        };
        let (mut m, _) = looked_up(peer, first, known_lap(peer, None));
        assert!(matches!(m.on(Event::Slot(false)), Action::Busy(_)));
    }
}
