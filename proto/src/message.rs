//! Every message of protocol `ferry/1`.
//!
//! Enum variants are only ever appended, never reordered or removed: postcard
//! encodes a variant by its index. `tests::pinned_encodings` fails loudly on
//! any accidental change of the format.

use serde::{Deserialize, Serialize};

use crate::path::{Name, RelPath};
use crate::request::{DirEntry, NotServed, Open, Request, RunInfo, VersionInfo};
pub use crate::types::{Hash, Protection, RunReport};

/// A message on a Ferry stream. Which variants may appear where is in the
/// crate documentation.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub enum Message {
    /// Sender → receiver, first message of the control stream.
    Hello(Hello),
    /// Receiver → sender: admitted; a run has been opened.
    Welcome(Welcome),
    /// Receiver → sender: too many senders connected; try again later.
    Busy { retry_after_ms: u64 },
    /// Receiver → sender: not admitted (or a request was refused).
    Refused(Refusal),
    /// Sender → receiver, first message of a file stream.
    Entry(Entry),
    /// Sender → receiver: the next piece of a file's content.
    Data(#[serde(with = "serde_bytes")] Vec<u8>),
    /// Sender → receiver: the content is complete and hashes to `hash`.
    End { hash: Hash },
    /// Sender → receiver: the content cannot be completed (the file changed or
    /// could not be read). The receiver discards what it got.
    Abort { reason: String },
    /// Receiver → sender: send the content of the offered file.
    Want,
    /// Receiver → sender: the entry is durable on the receiver.
    Stored,
    /// Receiver → sender: the entry was not stored.
    Failed(Failure),
    /// Sender → receiver on the control stream: these paths were deleted at
    /// the source. The receiver archives them; it never destroys them.
    Delete { paths: Vec<RelPath> },
    /// Receiver → sender: the deletions were recorded, except `failed`.
    Deleted { failed: Vec<PathFailure> },
    /// Sender → receiver on the control stream: the run is over.
    Finish(RunReport),
    /// Receiver → sender: the run is recorded in the receiver's catalog.
    Committed { run_id: u64 },
    /// Sender → receiver, first message of a read-only session's control
    /// stream (instead of `Hello`).
    Open(Open),
    /// Receiver → sender: the read-only session is open for this sender.
    Opened { sender: Name },
    /// Sender → receiver: one question of a read-only session.
    Request(Request),
    /// Receiver → sender: a batch of runs answering `Request::Runs`.
    RunList(Vec<RunInfo>),
    /// Receiver → sender: a batch of versions answering `Request::Versions`
    /// or `Request::Tree`.
    VersionList(Vec<VersionInfo>),
    /// Receiver → sender: the list is complete; for a tree, the run the
    /// point in time resolved to (`None`: the latest state).
    ListEnd { run: Option<u64> },
    /// Sender → receiver, first message of a restore stream: send the bytes
    /// of this version. Answered with `Data`*, `End { hash }` or `Failed`.
    Fetch { version: u64 },
    /// Receiver → sender, answering a [`Content::Chunked`] entry: send the
    /// content now.
    Go(Go),
    /// Sender → receiver in chunked content: the next `count` chunks are the
    /// base's chunks `start..start + count`, which the receiver already holds.
    Copy { start: u32, count: u32 },
    /// Sender → receiver: like `Data`, but zstd-compressed; the content is at
    /// most [`crate::MAX_DATA`] bytes once decompressed.
    DataZstd(#[serde(with = "serde_bytes")] Vec<u8>),
    /// Sender → receiver, first after `Go` with a `resume`: the first `len`
    /// bytes the receiver kept are right (their hash matched); the content
    /// continues at offset `len`.
    Keep { len: u64 },
    /// Sender → receiver, first message of a bundle stream: small entries
    /// one after another, each answered in order (see the crate doc).
    Bundle,
    /// Sender → receiver in a bundle: like `Data`, but the next piece of the
    /// bundle's one zstd stream, flushed at its end so that it decodes
    /// whole; at most [`crate::MAX_DATA`] bytes once decompressed.
    Zstream(#[serde(with = "serde_bytes")] Vec<u8>),
    /// Receiver → sender, answering `Request::Tree` (before `ListEnd`):
    /// versions of the tree that cannot be served, and why. The client
    /// reports each one and restores the rest.
    NotServed(Vec<NotServed>),
    /// Receiver → sender: a batch of a directory's children answering
    /// `Request::List`, in name order across batches.
    DirList(Vec<DirEntry>),
    /// Sender → receiver, first message of the control stream of a folder
    /// whose protection is not `Plain` (instead of `Hello`; a `Hello` means
    /// `Plain`). Answered as `Hello` is.
    HelloProtected {
        hello: Hello,
        protection: Protection,
    },
    /// Receiver → sender, answering `Request::Protection`: the folder's
    /// protection (`Plain` for a folder never sent).
    FolderProtection(Protection),
}

/// The opening of a session.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Hello {
    /// [`crate::PROTOCOL_VERSION`] of the sender.
    pub protocol: u32,
    /// The sender's name: its namespace on the receiver.
    pub name: Name,
    /// The folder this run sends, below the sender's namespace.
    pub folder: Name,
    /// Proof of the pairing secret, see [`crate::pairing_proof`]; only sent
    /// when the sender is not yet known to the receiver.
    pub pairing: Option<Hash>,
    /// Free-form description of the sending program, for logs.
    pub agent: String,
    /// The receiver's id of the newest run of this folder in which the
    /// sender recorded something the receiver acknowledged (`None`: it has
    /// recorded nothing). A receiver whose catalog does not vouch for that
    /// run (it lost runs: its store was put back from an older backup, or
    /// its catalog recovered from an older copy) answers with
    /// [`Welcome::resync`].
    pub last_run: Option<u64>,
}

/// Admission of a sender.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Welcome {
    /// The run this connection's work is recorded under.
    pub run_id: u64,
    /// True if this session paired the sender (it is known from now on).
    pub paired: bool,
    /// Files the receiver accepts in flight at once on this connection.
    pub max_streams: u32,
    /// The receiver cannot vouch for what the sender recorded as
    /// acknowledged ([`Hello::last_run`]): the sender offers every entry
    /// again this run (a file by its hash, so only content the receiver
    /// lacks is sent), until one such run has confirmed them all.
    pub resync: bool,
}

/// Why a sender was refused.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub enum RefuseCode {
    /// The sender's device id is not allowed and it offered no pairing proof.
    UnknownSender,
    /// The pairing proof did not match the receiver's secret.
    BadPairingSecret,
    /// The name is registered to another device.
    NameTaken,
    /// The sender speaks another protocol version.
    Version,
    /// The request was malformed or out of order.
    BadRequest,
    /// The receiver is shutting down.
    ShuttingDown,
    /// This device is registered under another name.
    WrongName,
    /// The sender or folder name is new to the receiver and breaks the rule
    /// for new names ([`crate::Name::check_new`]).
    BadName,
    /// The receiver's admin revoked this device: it is no longer admitted
    /// (its stored files stay on the receiver). Retrying will not help.
    Revoked,
    /// The folder's protection or key is not the one it was first sent
    /// with (a folder's protection is fixed), or plaintext was sent into a
    /// protected folder. Retrying will not help.
    Protection,
}

/// A refusal with words for the person reading the log.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Refusal {
    pub code: RefuseCode,
    pub message: String,
}

/// What a file stream carries.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Entry {
    pub path: RelPath,
    pub kind: EntryKind,
    /// Modification time, nanoseconds since the Unix epoch.
    pub mtime_ns: i64,
    /// Permission bits (`st_mode & 0o7777`).
    pub mode: u32,
}

/// The kind of an entry and what follows its header.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub enum EntryKind {
    /// A regular file of `size` bytes.
    File { size: u64, content: Content },
    /// A directory (sent so that empty directories and their metadata arrive).
    Dir,
    /// A symbolic link, stored as a link, never followed.
    Symlink {
        #[serde(with = "serde_bytes")]
        target: Vec<u8>,
    },
}

/// How a file's content travels.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub enum Content {
    /// `Data` frames and `End` follow at once.
    Inline,
    /// The sender knows the content's hash and waits: the receiver answers
    /// `Stored` if it already holds that content at this path (a metadata
    /// change, or a file stored before the sender's acknowledgement was lost),
    /// else `Want`, and then `Data`/`End` follow.
    Offer { hash: Hash },
    /// The content follows in chunks, each one `Data`/`DataZstd` message or
    /// part of a `Copy` of the `base`'s chunks, after the receiver's `Go`.
    /// Files whose previous content the receiver holds cost only the chunks
    /// that changed; an interrupted transfer resumes where it stopped.
    Chunked { base: Option<Base> },
    /// As `Chunked`, for content whose exact length is known only at its
    /// end (a sealed folder's chunked object, [`crate::seal`]): the entry's
    /// `size` is an upper bound, and the content is what arrives before
    /// `End`.
    ChunkedUpTo { base: Option<Base> },
}

impl Content {
    /// True if the entry's `size` is the content's exact length (false: at
    /// most).
    pub fn size_is_exact(&self) -> bool {
        !matches!(self, Content::ChunkedUpTo { .. })
    }
}

/// A version the receiver holds, that chunked content may copy from: the
/// content `hash` as stored at `path` of the same sender and folder (now or
/// earlier).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Base {
    pub path: RelPath,
    pub hash: Hash,
}

/// The receiver's answer to chunked content.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Go {
    /// True if the receiver holds the offered base with its chunk list:
    /// `Copy` may be used. False: every chunk is sent.
    pub base: bool,
    /// The receiver kept the first bytes of an interrupted transfer of this
    /// path: the sender may skip them with `Keep` if they are right.
    pub resume: Option<Resume>,
}

/// What the receiver kept of an interrupted transfer.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Resume {
    /// Bytes kept, at a chunk boundary.
    pub len: u64,
    /// blake3 of those bytes.
    pub hash: Hash,
}

/// Why an entry was not stored.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub enum FailCode {
    /// The content did not hash to what `End` said.
    HashMismatch,
    /// The size did not match the header.
    SizeMismatch,
    /// The sender aborted the entry.
    Aborted,
    /// The receiver could not write (disk full, permissions, ...).
    Io,
    /// The entry conflicts with what is stored (e.g. a file below a path the
    /// receiver holds as a file).
    Conflict,
    /// The message sequence was invalid.
    BadRequest,
    /// The receiver's quota for this sender is used up.
    Quota,
    /// The base of chunked content turned out damaged or changed on the
    /// receiver: send the file again without a base.
    BaseDamaged,
}

/// An entry that failed, with words for the person reading the log.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Failure {
    pub code: FailCode,
    pub message: String,
}

/// A deletion that failed.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct PathFailure {
    pub path: RelPath,
    pub failure: Failure,
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::request::{At, VersionKind};

    fn hex(bytes: &[u8]) -> String {
        bytes.iter().map(|b| format!("{b:02x}")).collect()
    }

    fn path(s: &str) -> RelPath {
        RelPath::from_bytes(s).unwrap()
    }

    fn name(s: &str) -> Name {
        Name::new(s).unwrap()
    }

    /// One value of every message kind and its exact encoding. A change here
    /// is a change of the wire format: it needs a new protocol version.
    #[test]
    fn pinned_encodings() {
        let cases: Vec<(Message, &str)> = vec![
            (
                Message::Hello(Hello {
                    protocol: 1,
                    name: name("lap"),
                    folder: name("docs"),
                    pairing: Some([7; 32]),
                    agent: "f".into(),
                    last_run: Some(300),
                }),
                "0001036c617004646f637301\
                 0707070707070707070707070707070707070707070707070707070707070707\
                 016601ac02",
            ),
            (
                Message::Welcome(Welcome {
                    run_id: 300,
                    paired: true,
                    max_streams: 64,
                    resync: false,
                }),
                "01ac02014000",
            ),
            (
                Message::Welcome(Welcome {
                    run_id: 1,
                    paired: false,
                    max_streams: 1,
                    resync: true,
                }),
                "0101000101",
            ),
            (
                Message::Busy {
                    retry_after_ms: 1000,
                },
                "02e807",
            ),
            (
                Message::Refused(Refusal {
                    code: RefuseCode::UnknownSender,
                    message: "no".into(),
                }),
                "0300026e6f",
            ),
            (
                Message::Entry(Entry {
                    path: path("a/b"),
                    kind: EntryKind::File {
                        size: 5,
                        content: Content::Inline,
                    },
                    mtime_ns: -1,
                    mode: 0o644,
                }),
                "0403612f6200050001a403",
            ),
            (
                Message::Entry(Entry {
                    path: path("d"),
                    kind: EntryKind::File {
                        size: 0,
                        content: Content::Offer { hash: [1; 32] },
                    },
                    mtime_ns: 2,
                    mode: 0o600,
                }),
                "040164000001\
                 0101010101010101010101010101010101010101010101010101010101010101\
                 048003",
            ),
            (
                Message::Entry(Entry {
                    path: path("d"),
                    kind: EntryKind::Dir,
                    mtime_ns: 0,
                    mode: 0o755,
                }),
                "0401640100ed03",
            ),
            (
                Message::Entry(Entry {
                    path: path("l"),
                    kind: EntryKind::Symlink {
                        target: b"../t".to_vec(),
                    },
                    mtime_ns: 0,
                    mode: 0o777,
                }),
                "04016c02042e2e2f7400ff03",
            ),
            (Message::Data(b"hi".to_vec()), "05026869"),
            (
                Message::End { hash: [2; 32] },
                "06\
                 0202020202020202020202020202020202020202020202020202020202020202",
            ),
            (Message::Abort { reason: "x".into() }, "070178"),
            (Message::Want, "08"),
            (Message::Stored, "09"),
            (
                Message::Failed(Failure {
                    code: FailCode::HashMismatch,
                    message: "h".into(),
                }),
                "0a000168",
            ),
            (
                Message::Delete {
                    paths: vec![path("x")],
                },
                "0b010178",
            ),
            (
                Message::Deleted {
                    failed: vec![PathFailure {
                        path: path("x"),
                        failure: Failure {
                            code: FailCode::Io,
                            message: String::new(),
                        },
                    }],
                },
                "0c0101780300",
            ),
            (
                Message::Finish(RunReport {
                    files_sent: 1,
                    files_unchanged: 2,
                    files_deleted: 3,
                    bytes_file_data: 4,
                    errors: 5,
                }),
                "0d0102030405",
            ),
            (Message::Committed { run_id: 9 }, "0e09"),
            (
                Message::Open(Open {
                    protocol: 1,
                    name: name("lap"),
                    folder: name("docs"),
                    agent: "f".into(),
                }),
                "0f01036c617004646f63730166",
            ),
            (
                Message::Opened {
                    sender: name("lap"),
                },
                "10036c6170",
            ),
            (Message::Request(Request::Runs), "1100"),
            (
                Message::Request(Request::Versions { path: path("a/b") }),
                "110103612f62",
            ),
            (
                Message::Request(Request::Tree {
                    at: At::Run(5),
                    under: vec![path("d")],
                }),
                "11020105010164",
            ),
            (
                Message::Request(Request::Tree {
                    at: At::Time(-1),
                    under: vec![],
                }),
                "1102020100",
            ),
            (
                Message::RunList(vec![RunInfo {
                    id: 3,
                    folder: name("d"),
                    started_ms: 1,
                    finished_ms: None,
                    status: "x".into(),
                    report: RunReport::default(),
                    bytes_received: 7,
                }]),
                "120103016402000178000000000007",
            ),
            (
                Message::VersionList(vec![VersionInfo {
                    id: 4,
                    path: path("f"),
                    kind: VersionKind::Symlink {
                        target: b"t".to_vec(),
                    },
                    mtime_ns: 1,
                    mode: 0o644,
                    run: 2,
                    stored_ms: 3,
                    replaced_run: Some(5),
                    deleted: true,
                }]),
                "130104016602017402a4030206010501",
            ),
            (
                Message::VersionList(vec![VersionInfo {
                    id: 1,
                    path: path("f"),
                    kind: VersionKind::File {
                        size: 2,
                        hash: [9; 32],
                    },
                    mtime_ns: 0,
                    mode: 0,
                    run: 1,
                    stored_ms: 0,
                    replaced_run: None,
                    deleted: false,
                }]),
                "13010101660002\
                 0909090909090909090909090909090909090909090909090909090909090909\
                 000001000000",
            ),
            (Message::ListEnd { run: Some(8) }, "140108"),
            (Message::ListEnd { run: None }, "1400"),
            (Message::Fetch { version: 300 }, "15ac02"),
            (
                Message::Entry(Entry {
                    path: path("d"),
                    kind: EntryKind::File {
                        size: 1,
                        content: Content::Chunked {
                            base: Some(Base {
                                path: path("e"),
                                hash: [3; 32],
                            }),
                        },
                    },
                    mtime_ns: 0,
                    mode: 0,
                }),
                "04016400010201016503030303030303030303030303030303030303030303030303030303030303030000",
            ),
            (
                Message::Entry(Entry {
                    path: path("d"),
                    kind: EntryKind::File {
                        size: 300,
                        content: Content::ChunkedUpTo { base: None },
                    },
                    mtime_ns: 0,
                    mode: 0o600,
                }),
                "04016400ac020300008003",
            ),
            (
                Message::Go(Go {
                    base: true,
                    resume: Some(Resume {
                        len: 2,
                        hash: [4; 32],
                    }),
                }),
                "16010102\
                 0404040404040404040404040404040404040404040404040404040404040404",
            ),
            (Message::Copy { start: 1, count: 2 }, "170102"),
            (Message::DataZstd(b"z".to_vec()), "18017a"),
            (Message::Keep { len: 5 }, "1905"),
            (Message::Bundle, "1a"),
            (Message::Zstream(b"z".to_vec()), "1b017a"),
            (
                Message::NotServed(vec![NotServed {
                    id: 3,
                    path: "a".into(),
                    reason: "r".into(),
                }]),
                "1c010301610172",
            ),
            (
                Message::Request(Request::List {
                    at: At::Run(5),
                    dir: Some(path("d")),
                }),
                "11030105010164",
            ),
            (
                Message::Request(Request::List {
                    at: At::Latest,
                    dir: None,
                }),
                "11030000",
            ),
            (
                Message::DirList(vec![
                    DirEntry {
                        path: path("d/f"),
                        kind: VersionKind::File {
                            size: 2,
                            hash: [9; 32],
                        },
                        mtime_ns: 1,
                        mode: 0o644,
                        version: Some(7),
                        run: Some(3),
                    },
                    DirEntry {
                        path: path("l"),
                        kind: VersionKind::Symlink {
                            target: b"t".to_vec(),
                        },
                        mtime_ns: -1,
                        mode: 0,
                        version: None,
                        run: None,
                    },
                ]),
                "1d0203642f660002\
                 0909090909090909090909090909090909090909090909090909090909090909\
                 02a40301070103\
                 016c02017401000000",
            ),
            (
                Message::HelloProtected {
                    hello: Hello {
                        protocol: 1,
                        name: name("lap"),
                        folder: name("docs"),
                        pairing: None,
                        agent: "f".into(),
                        last_run: None,
                    },
                    protection: Protection::Encrypted { key: [5; 32] },
                },
                "1e01036c617004646f637300016600\
                 01\
                 0505050505050505050505050505050505050505050505050505050505050505",
            ),
            (
                Message::HelloProtected {
                    hello: Hello {
                        protocol: 1,
                        name: name("lap"),
                        folder: name("docs"),
                        pairing: Some([7; 32]),
                        agent: String::new(),
                        last_run: None,
                    },
                    protection: Protection::Plain,
                },
                "1e01036c617004646f637301\
                 0707070707070707070707070707070707070707070707070707070707070707\
                 000000",
            ),
            (Message::FolderProtection(Protection::Plain), "1f00"),
            (
                Message::FolderProtection(Protection::Encrypted { key: [8; 32] }),
                "1f01\
                 0808080808080808080808080808080808080808080808080808080808080808",
            ),
            (
                Message::FolderProtection(Protection::WriteOnly { key: [6; 32] }),
                "1f02\
                 0606060606060606060606060606060606060606060606060606060606060606",
            ),
            (Message::Request(Request::Protection), "1104"),
            (
                Message::Refused(Refusal {
                    code: RefuseCode::Protection,
                    message: "no".into(),
                }),
                "0309026e6f",
            ),
        ];
        for (message, expected) in cases {
            let bytes = postcard::to_stdvec(&message).unwrap();
            assert_eq!(hex(&bytes), expected, "encoding of {message:?} changed");
            let back: Message = postcard::from_bytes(&bytes).unwrap();
            assert_eq!(back, message);
        }
    }

    #[test]
    fn revoked_refusal_is_pinned() {
        let message = Message::Refused(Refusal {
            code: RefuseCode::Revoked,
            message: "no".into(),
        });
        let bytes = postcard::to_stdvec(&message).unwrap();
        assert_eq!(hex(&bytes), "0308026e6f");
        assert_eq!(postcard::from_bytes::<Message>(&bytes).unwrap(), message);
    }

    #[test]
    fn hostile_paths_fail_to_decode() {
        // An Entry whose path is "../x", hand-encoded.
        let bytes = [0x04, 0x04, b'.', b'.', b'/', b'x', 0x01, 0x00, 0xed, 0x03];
        assert!(postcard::from_bytes::<Message>(&bytes).is_err());
        // A Hello whose name is ".ferry".
        let mut bytes = vec![0x00, 0x01, 0x06];
        bytes.extend_from_slice(b".ferry");
        bytes.extend_from_slice(&[0x01, b'd', 0x00, 0x00, 0x00]);
        assert!(postcard::from_bytes::<Message>(&bytes).is_err());
    }
}
