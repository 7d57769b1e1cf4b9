//! The sender's side of the control stream as a state machine without I/O:
//! `Hello` answered by `Welcome`, `Busy` or `Refused`; each `Delete` by
//! `Deleted`; `Finish` by `Committed`. The driver ([`super`]) does the I/O.

use std::time::Duration;

use ferry_proto::{
    Hello, Message, PathFailure, Protection, RefuseCode, RelPath, RunReport, Welcome,
};

use super::super::file_stream::machine::Violation;
use crate::stream::describe;

/// The longest wait a receiver's `Busy` is taken at its word for.
pub const MAX_RETRY_AFTER: Duration = Duration::from_secs(3600);

/// What the receiver said, for the driver to act on.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ControlEvent {
    /// Admitted: entries may be sent, up to `welcome.max_streams` at once.
    Admitted(Welcome),
    /// All its client slots are in use: try again after `retry_after`.
    Busy { retry_after: Duration },
    /// Refused; `permanent` if retrying soon will not help.
    Refused {
        code: RefuseCode,
        message: String,
        permanent: bool,
    },
    /// The last `Delete` was carried out except for `failed`.
    Deleted { failed: Vec<PathFailure> },
    /// The run is recorded under `run_id`.
    Committed { run_id: u64 },
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum State {
    /// Nothing sent yet.
    Start,
    AwaitWelcome,
    /// Admitted, no request outstanding.
    Ready,
    AwaitDeleted,
    AwaitCommitted,
    Done,
}

/// True if the refusal will not go away by retrying soon.
pub fn is_permanent(code: RefuseCode) -> bool {
    !matches!(code, RefuseCode::ShuttingDown)
}

/// The state of the control stream on the sender.
#[derive(Debug)]
pub struct ControlSender {
    state: State,
}

impl Default for ControlSender {
    fn default() -> Self {
        Self::new()
    }
}

impl ControlSender {
    pub fn new() -> Self {
        Self {
            state: State::Start,
        }
    }

    /// True once admitted and no request is outstanding: `delete` and
    /// `finish` may be sent.
    pub fn is_ready(&self) -> bool {
        self.state == State::Ready
    }

    /// True once the stream is over (refused, busy, committed, or a
    /// protocol error).
    #[cfg_attr(not(test), allow(dead_code))] // the tests' and fuzz harness's view
    pub fn is_done(&self) -> bool {
        self.state == State::Done
    }

    /// The `Hello` to send first.
    pub fn hello(&mut self, hello: Hello) -> Message {
        self.state = State::AwaitWelcome;
        Message::Hello(hello)
    }

    /// The first message of a folder whose protection is `protection`:
    /// `Hello` for a plain folder, else `HelloProtected` (answered alike).
    pub fn hello_protected(&mut self, hello: Hello, protection: Protection) -> Message {
        match protection {
            Protection::Plain => self.hello(hello),
            protection => {
                self.state = State::AwaitWelcome;
                Message::HelloProtected { hello, protection }
            }
        }
    }

    /// A `Delete` of `paths` to send, once ready.
    pub fn delete(&mut self, paths: Vec<RelPath>) -> Message {
        self.state = State::AwaitDeleted;
        Message::Delete { paths }
    }

    /// The `Finish` to send last, once ready.
    pub fn finish(&mut self, report: RunReport) -> Message {
        self.state = State::AwaitCommitted;
        Message::Finish(report)
    }

    /// The receiver's next message, `None` when its side of the stream
    /// ended. Any violation ends the stream.
    pub fn on_message(&mut self, message: Option<Message>) -> Result<ControlEvent, Violation> {
        let state = std::mem::replace(&mut self.state, State::Done);
        let expected = match state {
            State::AwaitWelcome => "Welcome",
            State::AwaitDeleted => "Deleted",
            State::AwaitCommitted => "Committed",
            State::Start | State::Ready | State::Done => "nothing",
        };
        let Some(message) = message else {
            return Err(Violation::Ended { expected });
        };
        let event = match (state, message) {
            (State::AwaitWelcome, Message::Welcome(welcome)) => {
                self.state = State::Ready;
                ControlEvent::Admitted(welcome)
            }
            (State::AwaitWelcome, Message::Busy { retry_after_ms }) => ControlEvent::Busy {
                retry_after: Duration::from_millis(retry_after_ms).min(MAX_RETRY_AFTER),
            },
            (State::AwaitWelcome, Message::Refused(refusal)) => ControlEvent::Refused {
                code: refusal.code,
                message: refusal.message,
                permanent: is_permanent(refusal.code),
            },
            (State::AwaitDeleted, Message::Deleted { failed }) => {
                self.state = State::Ready;
                ControlEvent::Deleted { failed }
            }
            (State::AwaitCommitted, Message::Committed { run_id }) => {
                ControlEvent::Committed { run_id }
            }
            (_, other) => {
                return Err(Violation::Unexpected {
                    expected,
                    got: describe(&other),
                })
            }
        };
        Ok(event)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use ferry_proto::{FailCode, Failure, Name, Refusal};

    fn hello() -> Hello {
        Hello {
            protocol: ferry_proto::PROTOCOL_VERSION,
            name: Name::new("laptop").unwrap(),
            folder: Name::new("docs").unwrap(),
            pairing: None,
            agent: "ferry test".into(),
            last_run: None,
        }
    }

    fn welcomed() -> ControlSender {
        let mut m = ControlSender::new();
        m.hello(hello());
        let welcome = Welcome {
            run_id: 1,
            paired: false,
            max_streams: 8,
            resync: false,
        };
        assert_eq!(
            m.on_message(Some(Message::Welcome(welcome.clone()))),
            Ok(ControlEvent::Admitted(welcome))
        );
        assert!(m.is_ready());
        m
    }

    fn unexpected(expected: &'static str, got: &str) -> Violation {
        Violation::Unexpected {
            expected,
            got: got.into(),
        }
    }

    #[test]
    fn a_whole_run_welcome_deletes_and_commit() {
        let mut m = welcomed();
        let path = RelPath::from_bytes(b"a").unwrap();
        assert!(matches!(
            m.delete(vec![path.clone()]),
            Message::Delete { .. }
        ));
        assert!(!m.is_ready());
        let failed = vec![PathFailure {
            path,
            failure: Failure {
                code: FailCode::Io,
                message: "busy".into(),
            },
        }];
        assert_eq!(
            m.on_message(Some(Message::Deleted {
                failed: failed.clone()
            })),
            Ok(ControlEvent::Deleted { failed })
        );
        assert!(m.is_ready());
        m.finish(RunReport::default());
        assert_eq!(
            m.on_message(Some(Message::Committed { run_id: 9 })),
            Ok(ControlEvent::Committed { run_id: 9 })
        );
        assert!(m.is_done());
    }

    #[test]
    fn busy_is_retried_after_the_receivers_hint_at_most_an_hour() {
        let mut m = ControlSender::new();
        m.hello(hello());
        assert_eq!(
            m.on_message(Some(Message::Busy {
                retry_after_ms: 1500
            })),
            Ok(ControlEvent::Busy {
                retry_after: Duration::from_millis(1500)
            })
        );
        assert!(m.is_done());
        let mut m = ControlSender::new();
        m.hello(hello());
        assert_eq!(
            m.on_message(Some(Message::Busy {
                retry_after_ms: u64::MAX
            })),
            Ok(ControlEvent::Busy {
                retry_after: MAX_RETRY_AFTER
            })
        );
    }

    #[test]
    fn a_refusal_is_permanent_unless_the_receiver_is_shutting_down() {
        for (code, permanent) in [
            (RefuseCode::UnknownSender, true),
            (RefuseCode::Revoked, true),
            (RefuseCode::ShuttingDown, false),
        ] {
            let mut m = ControlSender::new();
            m.hello(hello());
            let refusal = Refusal {
                code,
                message: "no".into(),
            };
            assert_eq!(
                m.on_message(Some(Message::Refused(refusal))),
                Ok(ControlEvent::Refused {
                    code,
                    message: "no".into(),
                    permanent
                })
            );
            assert!(m.is_done());
        }
    }

    #[test]
    fn answers_out_of_order_are_protocol_errors() {
        let mut m = ControlSender::new();
        m.hello(hello());
        assert_eq!(
            m.on_message(Some(Message::Committed { run_id: 1 })),
            Err(unexpected("Welcome", "Committed"))
        );
        assert!(m.is_done());
        let mut m = welcomed();
        m.delete(Vec::new());
        assert_eq!(
            m.on_message(Some(Message::Committed { run_id: 1 })),
            Err(unexpected("Deleted", "Committed"))
        );
        let mut m = welcomed();
        m.finish(RunReport::default());
        assert_eq!(
            m.on_message(Some(Message::Deleted { failed: vec![] })),
            Err(unexpected("Committed", "Deleted"))
        );
        // Nothing asked: nothing may come.
        let mut m = welcomed();
        assert_eq!(
            m.on_message(Some(Message::Stored)),
            Err(unexpected("nothing", "Stored"))
        );
    }

    #[test]
    fn the_stream_ending_early_is_a_protocol_error() {
        let mut m = ControlSender::new();
        m.hello(hello());
        assert_eq!(
            m.on_message(None),
            Err(Violation::Ended {
                expected: "Welcome"
            })
        );
        let mut m = welcomed();
        m.finish(RunReport::default());
        assert_eq!(
            m.on_message(None),
            Err(Violation::Ended {
                expected: "Committed"
            })
        );
        assert!(m.is_done());
    }

    #[test]
    fn a_protected_folder_says_hello_with_its_protection_and_is_answered_alike() {
        let mut m = ControlSender::new();
        assert_eq!(
            m.hello_protected(hello(), Protection::Plain),
            Message::Hello(hello())
        );
        let protection = Protection::Encrypted { key: [7; 32] };
        let mut m = ControlSender::new();
        assert_eq!(
            m.hello_protected(hello(), protection),
            Message::HelloProtected {
                hello: hello(),
                protection
            }
        );
        let refusal = Refusal {
            code: RefuseCode::Protection,
            message: "this folder is encrypted under another key".into(),
        };
        assert_eq!(
            m.on_message(Some(Message::Refused(refusal))),
            Ok(ControlEvent::Refused {
                code: RefuseCode::Protection,
                message: "this folder is encrypted under another key".into(),
                permanent: true
            })
        );
        let mut m = ControlSender::new();
        m.hello_protected(hello(), Protection::WriteOnly { key: [1; 32] });
        let welcome = Welcome {
            run_id: 3,
            paired: false,
            max_streams: 4,
            resync: false,
        };
        assert_eq!(
            m.on_message(Some(Message::Welcome(welcome.clone()))),
            Ok(ControlEvent::Admitted(welcome))
        );
        assert!(m.is_ready());
    }
}
