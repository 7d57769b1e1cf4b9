//! The receiving side of one file stream as a state machine without I/O: it
//! takes the sender's messages in order and says what to do next, or why the
//! sequence is invalid. The driver ([`super::session`]) does the I/O.

use ferry_proto::{Content, Entry, EntryKind, FailCode, Hash, Message};

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
    /// Open a staging file of `size` bytes; content follows.
    Begin { entry: Entry, size: u64 },
    /// Append to the staging file.
    Write(Vec<u8>),
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
    AwaitOfferAnswer { size: u64 },
    Receiving { size: u64, received: u64 },
    Done,
}

/// The state of one file stream on the receiver.
#[derive(Debug)]
pub struct EntryReceiver {
    state: State,
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
            },
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
                State::Receiving { .. } | State::AwaitOfferAnswer { .. },
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
