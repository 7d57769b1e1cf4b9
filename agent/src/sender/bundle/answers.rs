//! The answers of a bundle stream matched to its entries, as a state machine
//! without I/O: the receiver answers each entry of a bundle, in the order
//! the entries were sent, with `Stored` or `Failed`.

use std::collections::VecDeque;

use ferry_proto::Message;

use super::super::file_stream::machine::Violation;
use crate::stream::describe;

/// How the receiver answered one entry of a bundle.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum BundleAnswer {
    Stored,
    /// Not stored, with the receiver's words.
    Failed(String),
    /// Not an answer: a protocol error, charged to this entry.
    Violation(Violation),
}

/// The entries of one bundle sent and not yet answered, oldest first.
#[derive(Debug)]
pub struct AnswerMatcher<T> {
    unanswered: VecDeque<T>,
}

impl<T> Default for AnswerMatcher<T> {
    fn default() -> Self {
        Self {
            unanswered: VecDeque::new(),
        }
    }
}

impl<T> AnswerMatcher<T> {
    /// `entry` was sent: it is answered after every entry sent before it.
    pub fn sent(&mut self, entry: T) {
        self.unanswered.push_back(entry);
    }

    /// Entries sent and not yet answered.
    #[cfg_attr(not(test), allow(dead_code))] // the tests' view
    pub fn unanswered(&self) -> usize {
        self.unanswered.len()
    }

    /// The receiver's next message (`None`: its side of the stream ended),
    /// matched to the oldest unanswered entry. `Err` with the message when
    /// no entry is waiting for an answer: nothing to charge it to.
    pub fn on_message(&mut self, message: Option<Message>) -> Result<(T, BundleAnswer), Violation> {
        let expected = "Stored or Failed";
        let Some(entry) = self.unanswered.pop_front() else {
            return Err(match message {
                Some(other) => Violation::Unexpected {
                    expected: "nothing",
                    got: describe(&other),
                },
                None => Violation::Ended {
                    expected: "nothing",
                },
            });
        };
        let answer = match message {
            Some(Message::Stored) => BundleAnswer::Stored,
            Some(Message::Failed(f)) => BundleAnswer::Failed(f.message),
            Some(other) => BundleAnswer::Violation(Violation::Unexpected {
                expected,
                got: describe(&other),
            }),
            None => BundleAnswer::Violation(Violation::Ended { expected }),
        };
        Ok((entry, answer))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use ferry_proto::{FailCode, Failure};

    #[test]
    fn answers_go_to_the_entries_in_the_order_sent() {
        let mut m = AnswerMatcher::default();
        m.sent("a");
        m.sent("b");
        m.sent("c");
        assert_eq!(m.unanswered(), 3);
        assert_eq!(
            m.on_message(Some(Message::Stored)),
            Ok(("a", BundleAnswer::Stored))
        );
        let failed = Message::Failed(Failure {
            code: FailCode::Io,
            message: "disk".into(),
        });
        assert_eq!(
            m.on_message(Some(failed)),
            Ok(("b", BundleAnswer::Failed("disk".into())))
        );
        assert_eq!(
            m.on_message(Some(Message::Want)),
            Ok((
                "c",
                BundleAnswer::Violation(Violation::Unexpected {
                    expected: "Stored or Failed",
                    got: "Want".into()
                })
            ))
        );
        assert_eq!(m.unanswered(), 0);
    }

    #[test]
    fn an_ended_stream_fails_the_entry_waiting() {
        let mut m = AnswerMatcher::default();
        m.sent(1);
        assert_eq!(
            m.on_message(None),
            Ok((
                1,
                BundleAnswer::Violation(Violation::Ended {
                    expected: "Stored or Failed"
                })
            ))
        );
    }

    #[test]
    fn an_answer_with_nothing_sent_is_a_protocol_error() {
        let mut m = AnswerMatcher::<u8>::default();
        assert_eq!(
            m.on_message(Some(Message::Stored)),
            Err(Violation::Unexpected {
                expected: "nothing",
                got: "Stored".into()
            })
        );
        assert_eq!(
            m.on_message(None),
            Err(Violation::Ended {
                expected: "nothing"
            })
        );
    }
}
