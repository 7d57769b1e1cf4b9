//! Generators of arbitrary protocol values: a [`Source`] of randomness
//! (fuzzer bytes or a seeded [`Rng`]) and the paths, names, entries and
//! messages built from it.

use crate::message::*;
use crate::path::{Name, RelPath, MAX_COMPONENT_LEN, MAX_PATH_LEN};
use crate::request::{At, DirEntry, NotServed, Open, Request, RunInfo, VersionInfo, VersionKind};

/// A source of arbitrary values.
pub trait Source {
    /// The next 64 arbitrary bits.
    fn next_u64(&mut self) -> u64;

    /// A value in `0..n` (`0` when `n` is 0).
    fn below(&mut self, n: u64) -> u64 {
        if n == 0 {
            0
        } else {
            self.next_u64() % n
        }
    }

    /// A coin flip.
    fn flip(&mut self) -> bool {
        self.next_u64() & 1 == 1
    }

    /// An integer biased towards edge values (0, 1, small, max).
    fn edgy_u64(&mut self) -> u64 {
        match self.below(6) {
            0 => 0,
            1 => 1,
            2 => self.below(300),
            3 => u64::MAX - self.below(3),
            4 => 1 << self.below(64),
            _ => self.next_u64(),
        }
    }

    /// Up to `max` arbitrary bytes.
    fn bytes(&mut self, max: usize) -> Vec<u8> {
        let len = self.below(max as u64 + 1) as usize;
        (0..len).map(|_| self.next_u64() as u8).collect()
    }
}

/// Fuzzer input read as a stream of values; zeros once it is used up, so a
/// short input still yields (small) values.
#[derive(Debug)]
pub struct Bytes<'a> {
    data: &'a [u8],
}

impl<'a> Bytes<'a> {
    /// Reads values from `data`.
    pub fn new(data: &'a [u8]) -> Self {
        Self { data }
    }

    /// True once every byte was used.
    pub fn is_empty(&self) -> bool {
        self.data.is_empty()
    }
}

impl Source for Bytes<'_> {
    fn next_u64(&mut self) -> u64 {
        // One byte per value keeps inputs short and mutations meaningful;
        // `below` and friends only need a few bits most of the time.
        let Some((first, rest)) = self.data.split_first() else {
            return 0;
        };
        self.data = rest;
        let mut value = u64::from(*first);
        if first & 0x80 != 0 {
            // A high first byte asks for a wide value: take 7 more bytes.
            for _ in 0..7 {
                let Some((b, rest)) = self.data.split_first() else {
                    break;
                };
                self.data = rest;
                value = (value << 8) | u64::from(*b);
            }
        }
        value
    }
}

/// A small deterministic generator (splitmix64) for bounded, repeatable runs.
#[derive(Debug, Clone)]
pub struct Rng(u64);

impl Rng {
    /// A generator starting from `seed`.
    pub fn new(seed: u64) -> Self {
        Self(seed)
    }
}

impl Source for Rng {
    fn next_u64(&mut self) -> u64 {
        self.0 = self.0.wrapping_add(0x9e37_79b9_7f4a_7c15);
        let mut z = self.0;
        z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
        z ^ (z >> 31)
    }
}

/// Path components a hostile sender would try, and ordinary ones.
const COMPONENTS: &[&[u8]] = &[
    b"a", b"b", b"..", b".", b"", b".ferry", b"x\0y", b"caf\xe9", b"/", b"...", b"d d",
];

/// Arbitrary path bytes: components joined by `/`, often invalid, sometimes
/// at the length limits.
pub fn arbitrary_path_bytes(src: &mut impl Source) -> Vec<u8> {
    match src.below(8) {
        0 => src.bytes(24),
        1 => {
            // Near MAX_PATH_LEN, components of MAX_COMPONENT_LEN.
            let mut out = Vec::new();
            let target = MAX_PATH_LEN - 2 + src.below(4) as usize;
            while out.len() < target {
                if !out.is_empty() {
                    out.push(b'/');
                }
                let room = (target - out.len()).clamp(1, MAX_COMPONENT_LEN);
                out.extend(std::iter::repeat_n(b'p', room));
            }
            out
        }
        2 => vec![b'c'; MAX_COMPONENT_LEN - 1 + src.below(3) as usize],
        _ => {
            let parts = 1 + src.below(4);
            let mut out = Vec::new();
            for i in 0..parts {
                if i > 0 {
                    out.push(b'/');
                }
                out.extend_from_slice(COMPONENTS[src.below(COMPONENTS.len() as u64) as usize]);
            }
            if src.below(8) == 0 {
                out.insert(0, b'/');
            }
            out
        }
    }
}

/// A valid path (an arbitrary one when it validates, else a fixed one).
pub fn arbitrary_rel_path(src: &mut impl Source) -> RelPath {
    let bytes = arbitrary_path_bytes(src);
    RelPath::from_bytes(bytes).unwrap_or_else(|_| fixed_path(src.below(3)))
}

pub(super) fn fixed_path(which: u64) -> RelPath {
    let bytes: &[u8] = match which {
        0 => b"a",
        1 => b"dir/file",
        _ => b"caf\xe9/x",
    };
    // Each literal is non-empty, relative, short, without NUL and without an
    // empty, `.` or `..` component: every rule of `RelPath` holds.
    #[allow(clippy::expect_used)]
    RelPath::from_bytes(bytes).expect("fixed paths are valid")
}

/// A valid name.
pub fn arbitrary_name(src: &mut impl Source) -> Name {
    let candidates = ["laptop", "docs", "n", "ünï", "a b", "x.y"];
    let pick = candidates[src.below(candidates.len() as u64) as usize];
    // Each candidate is 1-255 bytes of UTF-8 without `/` or NUL and does
    // not start with `.`: a valid name. (Invalid names are `check_path`'s.)
    #[allow(clippy::expect_used)]
    Name::new(pick).expect("candidate names are valid")
}

fn hash(src: &mut impl Source) -> Hash {
    let mut out = [0u8; 32];
    let fill = src.below(3);
    for b in &mut out {
        *b = match fill {
            0 => 0,
            1 => 0xff,
            _ => src.next_u64() as u8,
        };
    }
    out
}

fn text(src: &mut impl Source) -> String {
    String::from_utf8_lossy(&src.bytes(12)).into_owned()
}

fn maybe<S: Source, T>(src: &mut S, f: impl FnOnce(&mut S) -> T) -> Option<T> {
    if src.flip() {
        Some(f(src))
    } else {
        None
    }
}

/// An arbitrary entry header.
pub fn arbitrary_entry(src: &mut impl Source) -> Entry {
    let kind = match src.below(5) {
        0 => EntryKind::Dir,
        4 => EntryKind::File {
            size: src.below(40),
            content: Content::Chunked {
                base: maybe(src, |s| Base {
                    path: arbitrary_rel_path(s),
                    hash: hash(s),
                }),
            },
        },
        1 => EntryKind::Symlink {
            target: if src.flip() {
                arbitrary_path_bytes(src)
            } else {
                src.bytes(8)
            },
        },
        2 => EntryKind::File {
            size: src.edgy_u64(),
            content: Content::Offer { hash: hash(src) },
        },
        _ => EntryKind::File {
            size: src.below(40),
            content: Content::Inline,
        },
    };
    Entry {
        path: arbitrary_rel_path(src),
        kind,
        mtime_ns: src.edgy_u64() as i64,
        mode: src.next_u64() as u32,
    }
}

fn failure(src: &mut impl Source) -> Failure {
    let codes = [
        FailCode::HashMismatch,
        FailCode::SizeMismatch,
        FailCode::Aborted,
        FailCode::Io,
        FailCode::Conflict,
        FailCode::BadRequest,
        FailCode::Quota,
    ];
    Failure {
        code: codes[src.below(codes.len() as u64) as usize],
        message: text(src),
    }
}

fn report(src: &mut impl Source) -> RunReport {
    RunReport {
        files_sent: src.edgy_u64(),
        files_unchanged: src.edgy_u64(),
        files_deleted: src.edgy_u64(),
        bytes_file_data: src.edgy_u64(),
        errors: src.edgy_u64(),
    }
}

fn at(src: &mut impl Source) -> At {
    match src.below(3) {
        0 => At::Latest,
        1 => At::Run(src.edgy_u64()),
        _ => At::Time(src.edgy_u64() as i64),
    }
}

fn version_kind(src: &mut impl Source) -> VersionKind {
    match src.below(3) {
        0 => VersionKind::Dir,
        1 => VersionKind::Symlink {
            target: src.bytes(8),
        },
        _ => VersionKind::File {
            size: src.edgy_u64(),
            hash: hash(src),
        },
    }
}

/// A structurally valid message of any kind (every variant of [`Message`]
/// and of its parts can come out).
pub fn arbitrary_message(src: &mut impl Source) -> Message {
    match src.below(32) {
        0 => Message::Hello(Hello {
            protocol: src.edgy_u64() as u32,
            name: arbitrary_name(src),
            folder: arbitrary_name(src),
            pairing: maybe(src, hash),
            agent: text(src),
            last_run: maybe(src, |s| s.edgy_u64()),
        }),
        1 => Message::Welcome(Welcome {
            run_id: src.edgy_u64(),
            paired: src.flip(),
            max_streams: src.edgy_u64() as u32,
            resync: src.flip(),
        }),
        2 => Message::Busy {
            retry_after_ms: src.edgy_u64(),
        },
        3 => {
            let codes = [
                RefuseCode::UnknownSender,
                RefuseCode::BadPairingSecret,
                RefuseCode::NameTaken,
                RefuseCode::Version,
                RefuseCode::BadRequest,
                RefuseCode::ShuttingDown,
                RefuseCode::WrongName,
                RefuseCode::BadName,
                RefuseCode::Revoked,
                RefuseCode::Protection,
            ];
            Message::Refused(Refusal {
                code: codes[src.below(codes.len() as u64) as usize],
                message: text(src),
            })
        }
        4 => Message::Entry(arbitrary_entry(src)),
        5 => Message::Data(src.bytes(40)),
        6 => Message::End { hash: hash(src) },
        7 => Message::Abort { reason: text(src) },
        8 => Message::Want,
        9 => Message::Stored,
        10 => Message::Failed(failure(src)),
        11 => Message::Delete {
            paths: (0..src.below(3)).map(|_| arbitrary_rel_path(src)).collect(),
        },
        12 => Message::Deleted {
            failed: (0..src.below(3))
                .map(|_| PathFailure {
                    path: arbitrary_rel_path(src),
                    failure: failure(src),
                })
                .collect(),
        },
        13 => Message::Finish(report(src)),
        14 => Message::Committed {
            run_id: src.edgy_u64(),
        },
        15 => Message::Open(Open {
            protocol: src.edgy_u64() as u32,
            name: arbitrary_name(src),
            folder: arbitrary_name(src),
            agent: text(src),
        }),
        16 => Message::Opened {
            sender: arbitrary_name(src),
        },
        17 => Message::Request(match src.below(5) {
            0 => Request::Runs,
            1 => Request::Versions {
                path: arbitrary_rel_path(src),
            },
            2 => Request::Tree {
                at: at(src),
                under: (0..src.below(3)).map(|_| arbitrary_rel_path(src)).collect(),
            },
            3 => Request::List {
                at: at(src),
                dir: maybe(src, arbitrary_rel_path),
            },
            _ => Request::Protection,
        }),
        18 => Message::RunList(
            (0..src.below(3))
                .map(|_| RunInfo {
                    id: src.edgy_u64(),
                    folder: arbitrary_name(src),
                    started_ms: src.edgy_u64() as i64,
                    finished_ms: maybe(src, |s| s.next_u64() as i64),
                    status: text(src),
                    report: report(src),
                    bytes_received: src.edgy_u64(),
                })
                .collect(),
        ),
        19 => Message::VersionList(
            (0..src.below(3))
                .map(|_| VersionInfo {
                    id: src.edgy_u64(),
                    path: arbitrary_rel_path(src),
                    kind: version_kind(src),
                    mtime_ns: src.edgy_u64() as i64,
                    mode: src.next_u64() as u32,
                    run: src.edgy_u64(),
                    stored_ms: src.edgy_u64() as i64,
                    replaced_run: maybe(src, |s| s.next_u64()),
                    deleted: src.flip(),
                })
                .collect(),
        ),
        20 => Message::ListEnd {
            run: maybe(src, |s| s.next_u64()),
        },
        21 => Message::Fetch {
            version: src.edgy_u64(),
        },
        22 => Message::Go(Go {
            base: src.flip(),
            resume: maybe(src, |s| Resume {
                len: s.edgy_u64(),
                hash: hash(s),
            }),
        }),
        23 => Message::Copy {
            start: src.edgy_u64() as u32,
            count: src.edgy_u64() as u32,
        },
        24 => Message::DataZstd(src.bytes(16)),
        25 => Message::Keep {
            len: src.edgy_u64(),
        },
        26 => Message::Bundle,
        27 => Message::Zstream(src.bytes(16)),
        28 => Message::NotServed(vec![NotServed {
            id: src.edgy_u64(),
            path: text(src),
            reason: text(src),
        }]),
        29 => Message::DirList(
            (0..src.below(3))
                .map(|_| DirEntry {
                    path: arbitrary_rel_path(src),
                    kind: version_kind(src),
                    mtime_ns: src.edgy_u64() as i64,
                    mode: src.next_u64() as u32,
                    version: maybe(src, |s| s.edgy_u64()),
                    run: maybe(src, |s| s.edgy_u64()),
                })
                .collect(),
        ),
        30 => Message::HelloProtected {
            hello: Hello {
                protocol: src.edgy_u64() as u32,
                name: arbitrary_name(src),
                folder: arbitrary_name(src),
                pairing: maybe(src, hash),
                agent: text(src),
                last_run: maybe(src, |s| s.edgy_u64()),
            },
            protection: protection(src),
        },
        _ => Message::FolderProtection(protection(src)),
    }
}

fn protection(src: &mut impl Source) -> Protection {
    match src.below(3) {
        0 => Protection::Plain,
        1 => Protection::Encrypted { key: hash(src) },
        _ => Protection::WriteOnly { key: hash(src) },
    }
}
