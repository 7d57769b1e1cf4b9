//! The receiving side of one file stream as a state machine without I/O: it
//! takes the sender's messages in order and says what to do next, or why the
//! sequence is invalid. The driver ([`super::session`]) does the I/O.

use ferry_proto::{Base, Content, Entry, EntryKind, FailCode, Go, Hash, Message, Resume};

use crate::stream::describe;

/// What the driver must do after a message.
#[derive(Debug, PartialEq, Eq)]
pub enum Step {
    /// Create or update a directory; then answer.
    PutDir(Entry),
    /// Create or replace a symlink; then answer.
    PutSymlink(Entry),
    /// The sender offers content by hash: check whether the store holds it
    /// and call [`EntryReceiver::offer_answered`].
    CheckOffer { entry: Entry, hash: Hash },
    /// The sender sends chunked content: find the `base` (and anything kept
    /// of an interrupted transfer of this path), then call
    /// [`EntryReceiver::chunked_answered`].
    CheckChunked { entry: Entry, base: Option<Base> },
    /// Open a staging file of `size` bytes; content follows.
    Begin { entry: Entry, size: u64 },
    /// Append to the staging file (in chunked content: one chunk).
    Write(Vec<u8>),
    /// Append the base's chunks `start..start + count`, `len` bytes in all.
    Copy { start: u32, count: u32, len: u64 },
    /// Continue the interrupted transfer after its first `len` bytes.
    Keep(u64),
    /// The content is complete: verify against `hash` and commit.
    Finish { hash: Hash },
    /// The sender gave up on this entry.
    Aborted(String),
}

/// A message that is not allowed here.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{message}")]
pub struct Violation {
    pub code: FailCode,
    pub message: String,
}

fn violation(code: FailCode, message: impl Into<String>) -> Violation {
    Violation {
        code,
        message: message.into(),
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum State {
    AwaitEntry,
    AwaitOfferAnswer {
        size: u64,
    },
    Receiving {
        size: u64,
        received: u64,
    },
    AwaitGo {
        size: u64,
    },
    Chunked {
        size: u64,
        received: u64,
        first: bool,
    },
    Done,
}

/// The state of one file stream on the receiver.
#[derive(Debug)]
pub struct EntryReceiver {
    state: State,
    /// End offsets of the base's chunks, when `Copy` is allowed.
    base_ends: Option<Vec<u64>>,
    /// What `Go` offered to resume.
    resume: Option<u64>,
    /// The entry's size is an upper bound ([`Content::ChunkedUpTo`]).
    up_to: bool,
}

impl Default for EntryReceiver {
    fn default() -> Self {
        Self::new()
    }
}

impl EntryReceiver {
    pub fn new() -> Self {
        Self {
            state: State::AwaitEntry,
            base_ends: None,
            resume: None,
            up_to: false,
        }
    }

    /// True once no more messages are expected from the sender.
    pub fn is_done(&self) -> bool {
        self.state == State::Done
    }

    /// True while the driver waits for [`Self::offer_answered`].
    pub fn awaits_offer_answer(&self) -> bool {
        matches!(self.state, State::AwaitOfferAnswer { .. })
    }

    /// True while the driver waits for [`Self::chunked_answered`].
    pub fn awaits_go(&self) -> bool {
        matches!(self.state, State::AwaitGo { .. })
    }

    /// Feeds the next message from the sender.
    pub fn on_message(&mut self, message: Message) -> Result<Step, Violation> {
        match (self.state, message) {
            (State::AwaitEntry, Message::Entry(entry)) => match &entry.kind {
                EntryKind::Dir => {
                    self.state = State::Done;
                    Ok(Step::PutDir(entry))
                }
                EntryKind::Symlink { target } => {
                    if target.is_empty() || target.contains(&0) {
                        // A violation ends the stream, like every other one.
                        self.state = State::Done;
                        return Err(violation(
                            FailCode::BadRequest,
                            "symlink target is empty or has a NUL byte",
                        ));
                    }
                    self.state = State::Done;
                    Ok(Step::PutSymlink(entry))
                }
                EntryKind::File {
                    size,
                    content: Content::Inline,
                } => {
                    let size = *size;
                    self.state = State::Receiving { size, received: 0 };
                    Ok(Step::Begin { entry, size })
                }
                EntryKind::File {
                    size,
                    content: Content::Offer { hash },
                } => {
                    let hash = *hash;
                    self.state = State::AwaitOfferAnswer { size: *size };
                    Ok(Step::CheckOffer { entry, hash })
                }
                EntryKind::File {
                    size,
                    content: content @ (Content::Chunked { base } | Content::ChunkedUpTo { base }),
                } => {
                    self.up_to = !content.size_is_exact();
                    let base = base.clone();
                    self.state = State::AwaitGo { size: *size };
                    Ok(Step::CheckChunked { entry, base })
                }
            },
            (
                State::Chunked {
                    size,
                    received,
                    first,
                },
                message,
            ) => self.chunked(size, received, first, message),
            (State::Receiving { size, received }, Message::Data(data)) => {
                let received = received + data.len() as u64;
                if received > size {
                    self.state = State::Done;
                    return Err(violation(
                        FailCode::SizeMismatch,
                        format!("more content than the declared {size} bytes"),
                    ));
                }
                self.state = State::Receiving { size, received };
                Ok(Step::Write(data))
            }
            (State::Receiving { size, received }, Message::End { hash }) => {
                self.state = State::Done;
                if received != size {
                    return Err(violation(
                        FailCode::SizeMismatch,
                        format!("{received} bytes of content, but {size} were declared"),
                    ));
                }
                Ok(Step::Finish { hash })
            }
            (
                State::Receiving { .. } | State::AwaitOfferAnswer { .. } | State::AwaitGo { .. },
                Message::Abort { reason },
            ) => {
                self.state = State::Done;
                Ok(Step::Aborted(reason))
            }
            (state, message) => {
                self.state = State::Done;
                Err(violation(
                    FailCode::BadRequest,
                    format!(
                        "unexpected {} on a file stream ({state:?})",
                        describe(&message)
                    ),
                ))
            }
        }
    }

    /// One message of chunked content.
    fn chunked(
        &mut self,
        size: u64,
        received: u64,
        first: bool,
        message: Message,
    ) -> Result<Step, Violation> {
        self.state = State::Done;
        let add = |len: u64| {
            let total = received.saturating_add(len);
            if total > size {
                Err(violation(
                    FailCode::SizeMismatch,
                    format!("more content than the declared {size} bytes"),
                ))
            } else {
                Ok(total)
            }
        };
        let step = match message {
            Message::Keep { len } if first && self.resume == Some(len) => {
                self.state = State::Chunked {
                    size,
                    received: len,
                    first: false,
                };
                return Ok(Step::Keep(len));
            }
            Message::Data(data) => {
                let received = add(data.len() as u64)?;
                self.state = State::Chunked {
                    size,
                    received,
                    first: false,
                };
                Step::Write(data)
            }
            Message::Copy { start, count } => {
                let ends = self.base_ends.as_deref().ok_or_else(|| {
                    violation(FailCode::BadRequest, "Copy without a base to copy from")
                })?;
                let (start, count) = (start as usize, count as usize);
                let end = start
                    .checked_add(count)
                    .filter(|&e| count > 0 && e <= ends.len());
                let Some(end) = end else {
                    return Err(violation(
                        FailCode::BadRequest,
                        format!(
                            "Copy of chunks {start}+{count} of a base with {} chunks",
                            ends.len()
                        ),
                    ));
                };
                let from = if start == 0 { 0 } else { ends[start - 1] };
                let len = ends[end - 1] - from;
                let received = add(len)?;
                self.state = State::Chunked {
                    size,
                    received,
                    first: false,
                };
                Step::Copy {
                    start: start as u32,
                    count: count as u32,
                    len,
                }
            }
            Message::End { hash } if received == size || (self.up_to && received <= size) => {
                Step::Finish { hash }
            }
            Message::End { .. } => {
                return Err(violation(
                    FailCode::SizeMismatch,
                    format!("{received} bytes of content, but {size} were declared"),
                ))
            }
            Message::Abort { reason } => Step::Aborted(reason),
            other => {
                return Err(violation(
                    FailCode::BadRequest,
                    format!("unexpected {} in chunked content", describe(&other)),
                ))
            }
        };
        Ok(step)
    }

    /// The answer to [`Step::CheckChunked`]: the chunk lengths of the base
    /// if the store holds it, and what it kept of an interrupted transfer.
    /// Returns the `Go` to send (`None` if no answer was pending).
    pub fn chunked_answered(
        &mut self,
        base: Option<&[u32]>,
        resume: Option<Resume>,
    ) -> Option<Message> {
        let State::AwaitGo { size } = self.state else {
            self.state = State::Done;
            return None;
        };
        self.base_ends = base.map(|lens| {
            lens.iter()
                .scan(0u64, |end, &len| {
                    *end += u64::from(len);
                    Some(*end)
                })
                .collect()
        });
        let resume = resume.filter(|r| r.len > 0 && r.len <= size);
        self.resume = resume.as_ref().map(|r| r.len);
        self.state = State::Chunked {
            size,
            received: 0,
            first: true,
        };
        Some(Message::Go(Go {
            base: base.is_some(),
            resume,
        }))
    }

    /// The answer to [`Step::CheckOffer`]: `have` = the store holds the
    /// content. Returns the message to send the sender (`Want` or nothing:
    /// when the content is held, the driver updates metadata and answers
    /// `Stored` itself).
    pub fn offer_answered(&mut self, have: bool) -> Option<Message> {
        match self.state {
            State::AwaitOfferAnswer { size } if !have => {
                self.state = State::Receiving { size, received: 0 };
                Some(Message::Want)
            }
            _ => {
                self.state = State::Done;
                None
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use ferry_proto::RelPath;

    fn file(size: u64, content: Content) -> Message {
        Message::Entry(Entry {
            path: RelPath::from_bytes("f").unwrap(),
            kind: EntryKind::File { size, content },
            mtime_ns: 0,
            mode: 0o644,
        })
    }

    #[test]
    fn inline_file() {
        let mut r = EntryReceiver::new();
        assert!(matches!(
            r.on_message(file(3, Content::Inline)),
            Ok(Step::Begin { size: 3, .. })
        ));
        assert_eq!(
            r.on_message(Message::Data(b"ab".to_vec())),
            Ok(Step::Write(b"ab".to_vec()))
        );
        assert_eq!(
            r.on_message(Message::Data(b"c".to_vec())),
            Ok(Step::Write(b"c".to_vec()))
        );
        assert_eq!(
            r.on_message(Message::End { hash: [1; 32] }),
            Ok(Step::Finish { hash: [1; 32] })
        );
        assert!(r.is_done());
    }

    #[test]
    fn offer_held_and_wanted() {
        let mut r = EntryReceiver::new();
        assert!(matches!(
            r.on_message(file(1, Content::Offer { hash: [2; 32] })),
            Ok(Step::CheckOffer { .. })
        ));
        assert!(r.awaits_offer_answer());
        assert_eq!(r.offer_answered(true), None);
        assert!(r.is_done());

        let mut r = EntryReceiver::new();
        r.on_message(file(1, Content::Offer { hash: [2; 32] }))
            .unwrap();
        assert_eq!(r.offer_answered(false), Some(Message::Want));
        assert_eq!(
            r.on_message(Message::Data(b"x".to_vec())),
            Ok(Step::Write(b"x".to_vec()))
        );
        assert!(matches!(
            r.on_message(Message::End { hash: [2; 32] }),
            Ok(Step::Finish { .. })
        ));
    }

    #[test]
    fn size_lies_rejected() {
        let mut r = EntryReceiver::new();
        r.on_message(file(1, Content::Inline)).unwrap();
        let err = r.on_message(Message::Data(b"xy".to_vec())).unwrap_err();
        assert_eq!(err.code, FailCode::SizeMismatch);

        let mut r = EntryReceiver::new();
        r.on_message(file(5, Content::Inline)).unwrap();
        let err = r.on_message(Message::End { hash: [0; 32] }).unwrap_err();
        assert_eq!(err.code, FailCode::SizeMismatch);
    }

    #[test]
    fn out_of_order_rejected() {
        for first in [
            Message::Data(vec![1]),
            Message::End { hash: [0; 32] },
            Message::Want,
            Message::Stored,
        ] {
            let err = EntryReceiver::new().on_message(first).unwrap_err();
            assert_eq!(err.code, FailCode::BadRequest);
        }
        let mut r = EntryReceiver::new();
        r.on_message(file(1, Content::Inline)).unwrap();
        assert!(r.on_message(file(1, Content::Inline)).is_err());
        let mut r = EntryReceiver::new();
        let link = Message::Entry(Entry {
            path: RelPath::from_bytes("l").unwrap(),
            kind: EntryKind::Symlink { target: Vec::new() },
            mtime_ns: 0,
            mode: 0,
        });
        assert!(r.on_message(link).is_err());
    }

    /// Regression: a symlink with an empty target was refused but left the
    /// machine waiting for an entry, so a second `Entry` was accepted on the
    /// same stream (found by the `entry_receiver` fuzz harness).
    #[test]
    fn bad_symlink_ends_the_stream() {
        let mut r = EntryReceiver::new();
        let link = Message::Entry(Entry {
            path: RelPath::from_bytes("l").unwrap(),
            kind: EntryKind::Symlink { target: Vec::new() },
            mtime_ns: 0,
            mode: 0,
        });
        assert!(r.on_message(link).is_err());
        assert!(r.is_done());
        let err = r.on_message(file(0, Content::Inline)).unwrap_err();
        assert_eq!(err.code, FailCode::BadRequest);
    }

    fn chunked(size: u64) -> EntryReceiver {
        let mut r = EntryReceiver::new();
        let entry = file(
            size,
            Content::Chunked {
                base: Some(Base {
                    path: RelPath::from_bytes("old").unwrap(),
                    hash: [3; 32],
                }),
            },
        );
        assert!(matches!(
            r.on_message(entry),
            Ok(Step::CheckChunked { base: Some(_), .. })
        ));
        assert!(r.awaits_go());
        r
    }

    #[test]
    fn chunked_content_copies_from_the_base() {
        let mut r = chunked(10);
        let go = r.chunked_answered(Some(&[4, 3, 5]), None).unwrap();
        assert_eq!(
            go,
            Message::Go(Go {
                base: true,
                resume: None
            })
        );
        assert_eq!(
            r.on_message(Message::Copy { start: 1, count: 2 }),
            Ok(Step::Copy {
                start: 1,
                count: 2,
                len: 8
            })
        );
        assert_eq!(
            r.on_message(Message::Data(b"ab".to_vec())),
            Ok(Step::Write(b"ab".to_vec()))
        );
        assert_eq!(
            r.on_message(Message::End { hash: [1; 32] }),
            Ok(Step::Finish { hash: [1; 32] })
        );
        assert!(r.is_done());
    }

    #[test]
    fn content_up_to_a_size_may_end_short_but_never_long() {
        for (sent, ok) in [(7usize, true), (10, true), (0, true), (11, false)] {
            let mut r = EntryReceiver::new();
            let entry = file(10, Content::ChunkedUpTo { base: None });
            assert!(matches!(
                r.on_message(entry),
                Ok(Step::CheckChunked { base: None, .. })
            ));
            r.chunked_answered(None, None).unwrap();
            let data = r.on_message(Message::Data(vec![1; sent]));
            let end = data.and_then(|_| r.on_message(Message::End { hash: [1; 32] }));
            match end {
                Ok(step) => {
                    assert!(ok, "{sent} bytes of at most 10 taken");
                    assert_eq!(step, Step::Finish { hash: [1; 32] });
                }
                Err(v) => {
                    assert!(!ok, "{sent} bytes of at most 10 refused: {v}");
                    assert_eq!(v.code, FailCode::SizeMismatch);
                }
            }
        }
        // Exact chunked content must still be exact.
        let mut r = chunked(10);
        r.chunked_answered(None, None).unwrap();
        r.on_message(Message::Data(vec![1; 7])).unwrap();
        let short = r.on_message(Message::End { hash: [1; 32] }).unwrap_err();
        assert_eq!(short.code, FailCode::SizeMismatch);
    }

    #[test]
    fn copies_outside_the_base_or_size_are_refused() {
        for (copy, code) in [
            (Message::Copy { start: 2, count: 2 }, FailCode::BadRequest),
            (Message::Copy { start: 0, count: 0 }, FailCode::BadRequest),
            (
                Message::Copy {
                    start: u32::MAX,
                    count: u32::MAX,
                },
                FailCode::BadRequest,
            ),
            (Message::Copy { start: 0, count: 3 }, FailCode::SizeMismatch),
        ] {
            let mut r = chunked(6);
            r.chunked_answered(Some(&[4, 3, 5]), None).unwrap();
            assert_eq!(r.on_message(copy).unwrap_err().code, code);
            assert!(r.is_done());
        }
        // Without a base, Copy is not allowed at all.
        let mut r = chunked(6);
        r.chunked_answered(None, None).unwrap();
        let err = r
            .on_message(Message::Copy { start: 0, count: 1 })
            .unwrap_err();
        assert_eq!(err.code, FailCode::BadRequest);
    }

    #[test]
    fn keep_only_what_was_offered_and_only_first() {
        let resume = Resume {
            len: 4,
            hash: [9; 32],
        };
        let mut r = chunked(10);
        r.chunked_answered(None, Some(resume.clone())).unwrap();
        assert_eq!(r.on_message(Message::Keep { len: 4 }), Ok(Step::Keep(4)));
        assert!(matches!(
            r.on_message(Message::Data(vec![0; 6])),
            Ok(Step::Write(_))
        ));
        assert!(matches!(
            r.on_message(Message::End { hash: [0; 32] }),
            Ok(Step::Finish { .. })
        ));

        let mut r = chunked(10);
        r.chunked_answered(None, Some(resume.clone())).unwrap();
        assert!(r.on_message(Message::Keep { len: 5 }).is_err());

        let mut r = chunked(10);
        r.chunked_answered(None, Some(resume)).unwrap();
        r.on_message(Message::Data(vec![0; 1])).unwrap();
        assert!(r.on_message(Message::Keep { len: 4 }).is_err());

        // A resume longer than the file is not offered.
        let mut r = chunked(3);
        let go = r.chunked_answered(
            None,
            Some(Resume {
                len: 4,
                hash: [0; 32],
            }),
        );
        assert_eq!(
            go,
            Some(Message::Go(Go {
                base: false,
                resume: None
            }))
        );
    }

    #[test]
    fn abort_ends_the_entry() {
        let mut r = EntryReceiver::new();
        r.on_message(file(9, Content::Inline)).unwrap();
        assert_eq!(
            r.on_message(Message::Abort {
                reason: "changed".into()
            }),
            Ok(Step::Aborted("changed".into()))
        );
        assert!(r.is_done());
    }
}
