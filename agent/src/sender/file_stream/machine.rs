//! The sending side of one file stream as a state machine without I/O: it
//! knows how the entry was offered, takes the receiver's messages in order
//! and says what to do next, how the entry ended, or why the sequence is
//! invalid. The driver ([`super`]) does the I/O.

use ferry_proto::{FailCode, Go, Message};

use crate::stream::describe;

/// How the entry's `Entry` message offered it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Offer {
    /// Everything was sent at once (a directory, a symlink, a file's
    /// content inline): only the answer is left.
    Whole,
    /// A file offered by its hash: the receiver has it (`Stored`) or wants
    /// the content (`Want`).
    ByHash,
    /// A file sent as chunked content: the receiver says with `Go` whether
    /// it holds the base and what it kept of an interrupted transfer.
    Chunked,
}

/// What the driver must do after a message.
#[derive(Debug, PartialEq, Eq)]
pub enum Step {
    /// The receiver wants the content of an offered file: send it inline
    /// (`Data`, `End`), then call [`EntrySender::content_sent`].
    SendContent,
    /// The receiver is ready for the chunked content: `Keep` first if the
    /// resume it offers matches, then the chunks against the base if `go.base`,
    /// `End`, then call [`EntrySender::content_sent`].
    SendChunks(Go),
    /// The entry is over.
    Done(Ended),
}

/// How an entry ended, as the receiver answered it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Ended {
    /// Stored from what was sent.
    Stored,
    /// An offer by hash: the receiver held the content; only metadata was
    /// stored.
    AlreadyStored,
    /// The receiver's copy of the base is damaged: send the file whole.
    BaseDamaged(String),
    /// The receiver did not store it.
    Failed { code: FailCode, message: String },
}

/// A receiver message that is not allowed here: a protocol error.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum Violation {
    #[error("protocol error: expected {expected}, got {got}")]
    Unexpected { expected: &'static str, got: String },
    #[error("the peer closed the stream before the expected message")]
    Ended { expected: &'static str },
}

impl From<Violation> for crate::stream::StreamError {
    /// Worded as the stream words a protocol error.
    fn from(v: Violation) -> Self {
        match v {
            Violation::Unexpected { expected, got } => Self::Unexpected { expected, got },
            Violation::Ended { .. } => Self::Closed,
        }
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum State {
    /// An offer by hash waits for `Stored`, `Want` or `Failed`.
    AwaitOfferAnswer,
    /// Chunked content waits for `Go` or `Failed`.
    AwaitGo,
    /// Content is on the way: only a `Failed` (the receiver stopping the
    /// stream) may come.
    Sending,
    /// Everything was sent: `Stored` or `Failed`.
    AwaitAnswer,
    Done,
}

/// The state of one file stream on the sender.
#[derive(Debug)]
pub struct EntrySender {
    state: State,
}

impl EntrySender {
    /// A stream whose `Entry` (and, for [`Offer::Whole`], everything else)
    /// was sent as `offer`.
    pub fn new(offer: Offer) -> Self {
        let state = match offer {
            Offer::Whole => State::AwaitAnswer,
            Offer::ByHash => State::AwaitOfferAnswer,
            Offer::Chunked => State::AwaitGo,
        };
        Self { state }
    }

    /// True once the entry is over: nothing more is allowed.
    #[cfg_attr(not(test), allow(dead_code))] // the tests' and fuzz harness's view
    pub fn is_done(&self) -> bool {
        self.state == State::Done
    }

    /// True while the receiver's answer to the whole entry is awaited.
    pub fn awaits_answer(&self) -> bool {
        self.state == State::AwaitAnswer
    }

    /// The content (or an `Abort` instead) was sent: the answer is next.
    pub fn content_sent(&mut self) {
        if self.state != State::Done {
            self.state = State::AwaitAnswer;
        }
    }

    /// The receiver's next message, `None` when its side of the stream
    /// ended. Any violation ends the entry.
    pub fn on_message(&mut self, message: Option<Message>) -> Result<Step, Violation> {
        let state = std::mem::replace(&mut self.state, State::Done);
        let expected = match state {
            State::AwaitOfferAnswer => "Stored, Want or Failed",
            State::AwaitGo => "Go or Failed",
            State::Sending => "Failed",
            State::AwaitAnswer => "Stored or Failed",
            State::Done => "nothing",
        };
        let Some(message) = message else {
            return Err(Violation::Ended { expected });
        };
        let ended = match (state, message) {
            (State::AwaitOfferAnswer, Message::Stored) => Ended::AlreadyStored,
            (State::AwaitAnswer, Message::Stored) => Ended::Stored,
            (State::AwaitOfferAnswer, Message::Want) => {
                self.state = State::Sending;
                return Ok(Step::SendContent);
            }
            (State::AwaitGo, Message::Go(go)) => {
                self.state = State::Sending;
                return Ok(Step::SendChunks(go));
            }
            (State::AwaitAnswer | State::Sending, Message::Failed(f))
                if f.code == FailCode::BaseDamaged =>
            {
                Ended::BaseDamaged(f.message)
            }
            (
                State::AwaitOfferAnswer | State::AwaitGo | State::Sending | State::AwaitAnswer,
                Message::Failed(f),
            ) => Ended::Failed {
                code: f.code,
                message: f.message,
            },
            (_, other) => {
                return Err(Violation::Unexpected {
                    expected,
                    got: describe(&other),
                })
            }
        };
        Ok(Step::Done(ended))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use ferry_proto::{Failure, Resume};

    fn failed(code: FailCode) -> Message {
        Message::Failed(Failure {
            code,
            message: "no".into(),
        })
    }

    fn unexpected(expected: &'static str, got: &str) -> Violation {
        Violation::Unexpected {
            expected,
            got: got.into(),
        }
    }

    #[test]
    fn a_whole_entry_is_stored_or_failed() {
        let mut m = EntrySender::new(Offer::Whole);
        assert!(m.awaits_answer());
        assert_eq!(
            m.on_message(Some(Message::Stored)),
            Ok(Step::Done(Ended::Stored))
        );
        assert!(m.is_done());
        let mut m = EntrySender::new(Offer::Whole);
        assert_eq!(
            m.on_message(Some(failed(FailCode::Io))),
            Ok(Step::Done(Ended::Failed {
                code: FailCode::Io,
                message: "no".into()
            }))
        );
        let mut m = EntrySender::new(Offer::Whole);
        assert_eq!(
            m.on_message(Some(failed(FailCode::BaseDamaged))),
            Ok(Step::Done(Ended::BaseDamaged("no".into())))
        );
    }

    #[test]
    fn an_offer_is_already_stored_or_wanted() {
        let mut m = EntrySender::new(Offer::ByHash);
        assert_eq!(
            m.on_message(Some(Message::Stored)),
            Ok(Step::Done(Ended::AlreadyStored))
        );
        let mut m = EntrySender::new(Offer::ByHash);
        assert_eq!(m.on_message(Some(Message::Want)), Ok(Step::SendContent));
        assert!(!m.awaits_answer());
        m.content_sent();
        assert!(m.awaits_answer());
        assert_eq!(
            m.on_message(Some(Message::Stored)),
            Ok(Step::Done(Ended::Stored))
        );
        // A damaged base means nothing to an offer: an ordinary failure.
        let mut m = EntrySender::new(Offer::ByHash);
        assert!(matches!(
            m.on_message(Some(failed(FailCode::BaseDamaged))),
            Ok(Step::Done(Ended::Failed { .. }))
        ));
    }

    #[test]
    fn chunked_content_waits_for_go() {
        let go = Go {
            base: true,
            resume: Some(Resume {
                len: 10,
                hash: [1; 32],
            }),
        };
        let mut m = EntrySender::new(Offer::Chunked);
        assert_eq!(
            m.on_message(Some(Message::Go(go.clone()))),
            Ok(Step::SendChunks(go))
        );
        m.content_sent();
        assert_eq!(
            m.on_message(Some(failed(FailCode::BaseDamaged))),
            Ok(Step::Done(Ended::BaseDamaged("no".into())))
        );
        let mut m = EntrySender::new(Offer::Chunked);
        assert!(matches!(
            m.on_message(Some(failed(FailCode::Quota))),
            Ok(Step::Done(Ended::Failed {
                code: FailCode::Quota,
                ..
            }))
        ));
    }

    #[test]
    fn a_receiver_that_stops_the_content_says_why_with_failed() {
        let mut m = EntrySender::new(Offer::ByHash);
        m.on_message(Some(Message::Want)).unwrap();
        assert!(matches!(
            m.on_message(Some(failed(FailCode::Io))),
            Ok(Step::Done(Ended::Failed { .. }))
        ));
        let mut m = EntrySender::new(Offer::Chunked);
        m.on_message(Some(Message::Go(Go {
            base: false,
            resume: None,
        })))
        .unwrap();
        assert_eq!(
            m.on_message(Some(Message::Stored)),
            Err(unexpected("Failed", "Stored"))
        );
        assert!(m.is_done());
    }

    #[test]
    fn messages_out_of_order_are_protocol_errors() {
        let cases = [
            (Offer::Whole, Message::Want, "Stored or Failed", "Want"),
            (
                Offer::ByHash,
                Message::Go(Go {
                    base: false,
                    resume: None,
                }),
                "Stored, Want or Failed",
                "Go",
            ),
            (Offer::Chunked, Message::Stored, "Go or Failed", "Stored"),
            (Offer::Chunked, Message::Want, "Go or Failed", "Want"),
        ];
        for (offer, message, expected, got) in cases {
            let mut m = EntrySender::new(offer);
            assert_eq!(m.on_message(Some(message)), Err(unexpected(expected, got)));
            assert!(m.is_done());
            // Done: nothing else is accepted.
            assert_eq!(
                m.on_message(Some(Message::Stored)),
                Err(unexpected("nothing", "Stored"))
            );
        }
    }

    #[test]
    fn the_stream_ending_early_is_a_protocol_error() {
        let mut m = EntrySender::new(Offer::Chunked);
        assert_eq!(
            m.on_message(None),
            Err(Violation::Ended {
                expected: "Go or Failed"
            })
        );
        assert!(m.is_done());
        let mut m = EntrySender::new(Offer::Whole);
        m.on_message(Some(Message::Stored)).unwrap();
        // After the answer the entry is over, whatever comes.
        m.content_sent();
        assert!(m.is_done());
    }
}
