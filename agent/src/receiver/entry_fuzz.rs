//! The fuzz harness of [`EntryReceiver`] (target `entry_receiver` in
//! `agent/fuzz/`, feature `fuzz`), also run a bounded number of times by the
//! unit tests.
//!
//! It feeds the state machine arbitrary message sequences and offer answers
//! and checks it against a small reference model of the protocol's file
//! stream: it never panics, never accepts more content than declared,
//! finishes only with exactly the declared size, is done after `End`,
//! `Abort`, a directory, a symlink or any violation, and rejects every
//! message once done. Hidden from the docs: not part of the agent's API.

use ferry_proto::fuzz_support::{arbitrary_entry, arbitrary_message, Bytes, Source};
use ferry_proto::{frame, Content, EntryKind, FailCode, Go, Message, Resume};

use super::entry::{EntryReceiver, Step};

/// The protocol's file stream as the crate doc of `ferry-proto` states it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Model {
    AwaitEntry,
    AwaitAnswer {
        size: u64,
    },
    Receiving {
        size: u64,
        got: u64,
    },
    AwaitGo {
        size: u64,
        /// `size` is an upper bound (`ChunkedUpTo`).
        up_to: bool,
    },
    Chunked {
        size: u64,
        got: u64,
        first: bool,
        resume: Option<u64>,
        base: bool,
        up_to: bool,
    },
    Done,
}

/// The chunk lengths of the base the checker offers the machine.
const BASE: [u32; 4] = [5, 1, 7, 3];

/// The machine under test and the model it must agree with.
#[derive(Debug)]
struct Checker {
    machine: EntryReceiver,
    model: Model,
}

impl Checker {
    fn new() -> Self {
        Self {
            machine: EntryReceiver::new(),
            model: Model::AwaitEntry,
        }
    }

    fn awaits_answer(&self) -> bool {
        let awaits = self.machine.awaits_offer_answer();
        assert_eq!(awaits, matches!(self.model, Model::AwaitAnswer { .. }));
        awaits
    }

    /// Feeds one message and checks the outcome against the model.
    fn feed(&mut self, message: Message) {
        let before = self.model;
        let outcome = self.machine.on_message(message.clone());
        let (expected, next) = expect(before, &message);
        match (&outcome, &expected) {
            (Ok(step), Ok(())) => check_step(step, &message),
            (Err(v), Err(code)) => assert_eq!(
                v.code, *code,
                "{before:?} + {message:?}: wrong failure {v:?}"
            ),
            _ => {
                panic!("{before:?} + {message:?}: got {outcome:?}, the protocol says {expected:?}")
            }
        }
        self.model = next;
        assert_eq!(
            self.machine.is_done(),
            next == Model::Done,
            "{before:?} + {message:?} -> {next:?}, machine done: {}",
            self.machine.is_done()
        );
        if let (Ok(Step::Write(data)), Model::Receiving { size, got }) = (&outcome, next) {
            assert!(got <= size && data.len() as u64 <= got);
        }
        if let (Ok(Step::Write(data)), Model::Chunked { size, got, .. }) = (&outcome, next) {
            assert!(got <= size && data.len() as u64 <= got);
        }
    }

    fn awaits_go(&self) -> bool {
        let awaits = self.machine.awaits_go();
        assert_eq!(awaits, matches!(self.model, Model::AwaitGo { .. }));
        awaits
    }

    /// Answers chunked content (or tries to when no answer is pending).
    fn answer_chunked(&mut self, base: bool, resume: Option<u64>) {
        let offered = resume.map(|len| Resume { len, hash: [0; 32] });
        let reply = self
            .machine
            .chunked_answered(base.then_some(&BASE[..]), offered);
        match self.model {
            Model::AwaitGo { size, up_to } => {
                let resume = resume.filter(|&r| r > 0 && r <= size);
                let go = Go {
                    base,
                    resume: resume.map(|len| Resume { len, hash: [0; 32] }),
                };
                assert_eq!(reply, Some(Message::Go(go)));
                self.model = Model::Chunked {
                    size,
                    got: 0,
                    first: true,
                    resume,
                    base,
                    up_to,
                };
            }
            _ => {
                assert_eq!(reply, None);
                self.model = Model::Done;
            }
        }
        assert_eq!(self.machine.is_done(), self.model == Model::Done);
    }

    /// Answers an offer (or tries to when none is pending).
    fn answer(&mut self, have: bool) {
        let reply = self.machine.offer_answered(have);
        match self.model {
            Model::AwaitAnswer { size } if !have => {
                assert_eq!(reply, Some(Message::Want));
                self.model = Model::Receiving { size, got: 0 };
            }
            _ => {
                assert_eq!(reply, None);
                self.model = Model::Done;
            }
        }
        assert_eq!(self.machine.is_done(), self.model == Model::Done);
    }
}

/// What the protocol allows: `Ok` or the failure code, and the next state.
fn expect(state: Model, message: &Message) -> (Result<(), FailCode>, Model) {
    use Model::*;
    let bad = (Err(FailCode::BadRequest), Done);
    match (state, message) {
        (AwaitEntry, Message::Entry(entry)) => match &entry.kind {
            EntryKind::Dir => (Ok(()), Done),
            EntryKind::Symlink { target } if target.is_empty() || target.contains(&0) => bad,
            EntryKind::Symlink { .. } => (Ok(()), Done),
            EntryKind::File {
                size,
                content: Content::Inline,
            } => (
                Ok(()),
                Receiving {
                    size: *size,
                    got: 0,
                },
            ),
            EntryKind::File {
                size,
                content: Content::Offer { .. },
            } => (Ok(()), AwaitAnswer { size: *size }),
            EntryKind::File {
                size,
                content: Content::Chunked { .. },
            } => (
                Ok(()),
                AwaitGo {
                    size: *size,
                    up_to: false,
                },
            ),
            EntryKind::File {
                size,
                content: Content::ChunkedUpTo { .. },
            } => (
                Ok(()),
                AwaitGo {
                    size: *size,
                    up_to: true,
                },
            ),
        },
        (
            Chunked {
                size,
                got,
                first,
                resume,
                base,
                up_to,
            },
            message,
        ) => {
            let grow = |len: u64| {
                let got = got.saturating_add(len);
                if got > size {
                    (Err(FailCode::SizeMismatch), Done)
                } else {
                    let next = Chunked {
                        size,
                        got,
                        first: false,
                        resume,
                        base,
                        up_to,
                    };
                    (Ok(()), next)
                }
            };
            match message {
                Message::Keep { len } if first && resume == Some(*len) => (
                    Ok(()),
                    Chunked {
                        size,
                        got: *len,
                        first: false,
                        resume,
                        base,
                        up_to,
                    },
                ),
                Message::Data(data) => grow(data.len() as u64),
                Message::Copy { start, count } => {
                    let (start, count) = (*start as usize, *count as usize);
                    if !base || count == 0 || start.saturating_add(count) > BASE.len() {
                        bad
                    } else {
                        grow(
                            BASE[start..start + count]
                                .iter()
                                .map(|&l| u64::from(l))
                                .sum(),
                        )
                    }
                }
                Message::End { .. } if got > size || (got < size && !up_to) => {
                    (Err(FailCode::SizeMismatch), Done)
                }
                Message::End { .. } | Message::Abort { .. } => (Ok(()), Done),
                _ => bad,
            }
        }
        (Receiving { size, got }, Message::Data(data)) => {
            let got = got.saturating_add(data.len() as u64);
            if got > size {
                (Err(FailCode::SizeMismatch), Done)
            } else {
                (Ok(()), Receiving { size, got })
            }
        }
        (Receiving { size, got }, Message::End { .. }) if got != size => {
            (Err(FailCode::SizeMismatch), Done)
        }
        (Receiving { .. }, Message::End { .. }) => (Ok(()), Done),
        (Receiving { .. } | AwaitAnswer { .. } | AwaitGo { .. }, Message::Abort { .. }) => {
            (Ok(()), Done)
        }
        _ => bad,
    }
}

/// The step names what the message carried, unchanged.
fn check_step(step: &Step, message: &Message) {
    let Message::Entry(sent) = message else {
        match (step, message) {
            (Step::Write(a), Message::Data(b)) => assert_eq!(a, b),
            (Step::Keep(a), Message::Keep { len: b }) => assert_eq!(a, b),
            (Step::Copy { start, count, len }, Message::Copy { start: s, count: c }) => {
                let (from, to) = (*s as usize, (*s + *c) as usize);
                let sum: u64 = BASE[from..to].iter().map(|&l| u64::from(l)).sum();
                assert!(start == s && count == c && *len == sum);
            }
            (Step::Finish { hash: a }, Message::End { hash: b }) => assert_eq!(a, b),
            (Step::Aborted(a), Message::Abort { reason: b }) => assert_eq!(a, b),
            _ => panic!("step {step:?} from {message:?}"),
        }
        return;
    };
    match (step, &sent.kind) {
        (Step::PutDir(e), EntryKind::Dir) | (Step::PutSymlink(e), EntryKind::Symlink { .. }) => {
            assert_eq!(e, sent)
        }
        (
            Step::Begin { entry, size },
            EntryKind::File {
                size: declared,
                content: Content::Inline,
            },
        ) => assert!(entry == sent && size == declared),
        (
            Step::CheckOffer { entry, hash },
            EntryKind::File {
                content: Content::Offer { hash: offered },
                ..
            },
        ) => assert!(entry == sent && hash == offered),
        (
            Step::CheckChunked { entry, base },
            EntryKind::File {
                content: Content::Chunked { base: offered } | Content::ChunkedUpTo { base: offered },
                ..
            },
        ) => assert!(entry == sent && base == offered),
        _ => panic!("step {step:?} from {message:?}"),
    }
}

/// Drives one file stream from `src`: messages a sender would send (and
/// some it would not) and offer answers, checked at every step.
pub fn drive(src: &mut impl Source, max_ops: usize) {
    let mut checker = Checker::new();
    for _ in 0..max_ops {
        match src.below(11) {
            0 | 1 => checker.feed(Message::Entry(arbitrary_entry(src))),
            9 => {
                let base = src.flip();
                let resume = src.flip().then(|| src.below(20));
                checker.answer_chunked(base, resume);
            }
            10 => {
                let message = if src.flip() {
                    Message::Copy {
                        start: src.below(5) as u32,
                        count: src.below(4) as u32,
                    }
                } else {
                    Message::Keep { len: src.below(20) }
                };
                checker.feed(message);
            }
            2..=4 => checker.feed(Message::Data(src.bytes(16))),
            5 => {
                let mut hash = [0u8; 32];
                hash[0] = src.next_u64() as u8;
                checker.feed(Message::End { hash });
            }
            6 => checker.feed(Message::Abort {
                reason: "changed".into(),
            }),
            7 => {
                let have = src.flip();
                checker.answer(have);
            }
            _ => checker.feed(arbitrary_message(src)),
        }
    }
}

/// The fuzz entry point. Byte 0 chooses the reading of the rest: odd, a
/// stream of frames as a sender would write them (bit 1 of byte 0 answers an
/// offer: set means the receiver holds the content); even, bytes that drive
/// [`drive`].
pub fn check_entry_receiver(data: &[u8]) {
    let Some((&mode, rest)) = data.split_first() else {
        return;
    };
    if mode & 1 == 0 {
        drive(&mut Bytes::new(rest), rest.len());
        return;
    }
    let mut checker = Checker::new();
    let mut rest = rest;
    // A frame that does not decode ends the stream in the driver: stop.
    while let Ok(Some((message, used))) = frame::decode(rest) {
        rest = &rest[used..];
        checker.feed(message);
        if checker.awaits_answer() {
            checker.answer(mode & 2 != 0);
        }
        if checker.awaits_go() {
            checker.answer_chunked(
                mode & 2 != 0,
                (mode & 4 != 0).then_some(u64::from(mode >> 3)),
            );
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use ferry_proto::fuzz_support::Rng;

    /// The kept corpus, then 2,000 seeded random streams of each reading.
    #[test]
    fn entry_receiver_bounded() {
        let dir =
            std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("fuzz/corpus/entry_receiver");
        let mut seeds = 0;
        for file in std::fs::read_dir(&dir).unwrap() {
            check_entry_receiver(&std::fs::read(file.unwrap().path()).unwrap());
            seeds += 1;
        }
        assert!(seeds > 0, "empty corpus {}", dir.display());
        let mut rng = Rng::new(7);
        for _ in 0..2_000 {
            drive(&mut rng, 24);
            // Real frames: a generated entry, its content, sometimes a lie.
            let mut bytes = vec![(rng.next_u64() as u8) | 1];
            for _ in 0..rng.below(6) {
                let message = match rng.below(4) {
                    0 => Message::Entry(arbitrary_entry(&mut rng)),
                    1 | 2 => Message::Data(rng.bytes(12)),
                    _ => Message::End { hash: [0; 32] },
                };
                bytes.extend(frame::encode(&message).unwrap());
            }
            check_entry_receiver(&bytes);
            check_entry_receiver(&rng.bytes(64));
        }
    }

    /// The model is not vacuous: a machine that accepted too much content
    /// would be caught.
    #[test]
    #[should_panic(expected = "the protocol says")]
    fn checker_catches_excess_content() {
        let mut checker = Checker::new();
        checker.feed(Message::Entry(ferry_proto::Entry {
            path: ferry_proto::RelPath::from_bytes("f").unwrap(),
            kind: EntryKind::File {
                size: 5,
                content: Content::Inline,
            },
            mtime_ns: 0,
            mode: 0,
        }));
        // Pretend the protocol allowed only 1 byte: the machine says Ok.
        checker.model = Model::Receiving { size: 1, got: 0 };
        checker.feed(Message::Data(b"xy".to_vec()));
    }
}
