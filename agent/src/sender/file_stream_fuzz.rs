//! The fuzz harness of the sender's state machines, [`EntrySender`] (one
//! file stream) and [`ControlSender`] (the control stream), also run a
//! bounded number of times by the unit tests.
//!
//! It feeds each machine arbitrary receiver messages (and, between them, what
//! the driver does: content sent, a `Delete` or `Finish` asked) and checks it
//! against a small reference model: it never panics, an entry ends as stored
//! only on `Stored`, it asks for content at most once, a message out of order
//! or the stream ending early is a protocol error, and once over it rejects
//! every message. Hidden from the docs: not part of the agent's API.

use ferry_proto::fuzz_support::{arbitrary_message, Bytes, Source};
use ferry_proto::{FailCode, Failure, Go, Message, Refusal, RefuseCode, RunReport, Welcome};

use super::control::machine::{ControlEvent, ControlSender};
use super::file_stream::machine::{Ended, EntrySender, Offer, Step};

/// A receiver message a real receiver might send on either stream, or
/// anything at all.
fn receiver_message(src: &mut impl Source) -> Option<Message> {
    let code = || FailCode::Io;
    Some(match src.below(12) {
        0 => return None,
        1 | 2 => Message::Stored,
        3 => Message::Want,
        4 => Message::Go(Go {
            base: src.flip(),
            resume: None,
        }),
        5 => Message::Failed(Failure {
            code: if src.flip() {
                FailCode::BaseDamaged
            } else {
                code()
            },
            message: "no".into(),
        }),
        6 => Message::Welcome(Welcome {
            run_id: src.below(5),
            paired: src.flip(),
            max_streams: src.below(300) as u32,
            resync: src.flip(),
        }),
        7 => Message::Busy {
            retry_after_ms: src.edgy_u64(),
        },
        8 => Message::Refused(Refusal {
            code: if src.flip() {
                RefuseCode::ShuttingDown
            } else {
                RefuseCode::UnknownSender
            },
            message: "no".into(),
        }),
        9 => Message::Deleted { failed: Vec::new() },
        10 => Message::Committed {
            run_id: src.below(9),
        },
        _ => arbitrary_message(src),
    })
}

/// The file stream as the protocol's crate doc states it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum EntryModel {
    AwaitOfferAnswer,
    AwaitGo,
    Sending,
    AwaitAnswer,
    Done,
}

/// Drives one file stream from `src`, checked at every step.
pub fn drive_entry(src: &mut impl Source, max_ops: usize) {
    let (offer, mut model) = match src.below(3) {
        0 => (Offer::Whole, EntryModel::AwaitAnswer),
        1 => (Offer::ByHash, EntryModel::AwaitOfferAnswer),
        _ => (Offer::Chunked, EntryModel::AwaitGo),
    };
    let mut machine = EntrySender::new(offer);
    let mut asked = 0;
    for _ in 0..max_ops {
        if src.below(4) == 0 {
            machine.content_sent();
            if model != EntryModel::Done {
                model = EntryModel::AwaitAnswer;
            }
            assert_eq!(machine.is_done(), model == EntryModel::Done);
            continue;
        }
        let message = receiver_message(src);
        let result = machine.on_message(message.clone());
        let after = match (model, &message, &result) {
            (
                EntryModel::AwaitOfferAnswer,
                Some(Message::Stored),
                Ok(Step::Done(Ended::AlreadyStored)),
            )
            | (EntryModel::AwaitAnswer, Some(Message::Stored), Ok(Step::Done(Ended::Stored))) => {
                EntryModel::Done
            }
            (EntryModel::AwaitOfferAnswer, Some(Message::Want), Ok(Step::SendContent))
            | (EntryModel::AwaitGo, Some(Message::Go(_)), Ok(Step::SendChunks(_))) => {
                asked += 1;
                EntryModel::Sending
            }
            (
                EntryModel::AwaitAnswer | EntryModel::Sending,
                Some(Message::Failed(f)),
                Ok(Step::Done(Ended::BaseDamaged(_))),
            ) if f.code == FailCode::BaseDamaged => EntryModel::Done,
            (
                EntryModel::AwaitOfferAnswer
                | EntryModel::AwaitGo
                | EntryModel::AwaitAnswer
                | EntryModel::Sending,
                Some(Message::Failed(f)),
                Ok(Step::Done(Ended::Failed { code, .. })),
            ) if *code == f.code => EntryModel::Done,
            // Out of order, after the end, or the stream ending early.
            (_, Some(Message::Stored), Err(_)) => {
                assert!(matches!(
                    model,
                    EntryModel::Sending | EntryModel::AwaitGo | EntryModel::Done
                ));
                EntryModel::Done
            }
            (_, Some(Message::Want), Err(_)) => {
                assert_ne!(model, EntryModel::AwaitOfferAnswer);
                EntryModel::Done
            }
            (_, Some(Message::Go(_)), Err(_)) => {
                assert_ne!(model, EntryModel::AwaitGo);
                EntryModel::Done
            }
            (_, Some(Message::Failed(_)), Err(_)) => {
                assert_eq!(model, EntryModel::Done);
                EntryModel::Done
            }
            (_, Some(_) | None, Err(_)) => EntryModel::Done,
            _ => panic!("{model:?} took {message:?} as {result:?}"),
        };
        model = after;
        assert_eq!(machine.is_done(), model == EntryModel::Done, "{model:?}");
        assert_eq!(machine.awaits_answer(), model == EntryModel::AwaitAnswer);
        assert!(asked <= 1, "content asked for twice");
    }
}

/// The control stream: who may say what, when.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum ControlModel {
    AwaitWelcome,
    Ready,
    AwaitDeleted,
    AwaitCommitted,
    Done,
}

/// Drives one control stream from `src`, checked at every step.
pub fn drive_control(src: &mut impl Source, max_ops: usize) {
    let mut machine = ControlSender::new();
    let hello = ferry_proto::Hello {
        protocol: ferry_proto::PROTOCOL_VERSION,
        name: ferry_proto::Name::new("fuzz").unwrap_or_else(|_| unreachable!("a valid name")),
        folder: ferry_proto::Name::new("docs").unwrap_or_else(|_| unreachable!("a valid name")),
        pairing: None,
        agent: "ferry fuzz".into(),
        last_run: None,
    };
    assert!(matches!(machine.hello(hello), Message::Hello(_)));
    let mut model = ControlModel::AwaitWelcome;
    for _ in 0..max_ops {
        if model == ControlModel::Ready && src.flip() {
            if src.flip() {
                machine.delete(Vec::new());
                model = ControlModel::AwaitDeleted;
            } else {
                machine.finish(RunReport::default());
                model = ControlModel::AwaitCommitted;
            }
            continue;
        }
        let message = receiver_message(src);
        let result = machine.on_message(message.clone());
        model = match (model, &message, &result) {
            (
                ControlModel::AwaitWelcome,
                Some(Message::Welcome(w)),
                Ok(ControlEvent::Admitted(got)),
            ) => {
                assert_eq!(w, got);
                ControlModel::Ready
            }
            (
                ControlModel::AwaitWelcome,
                Some(Message::Busy { .. }),
                Ok(ControlEvent::Busy { retry_after }),
            ) => {
                assert!(*retry_after <= super::control::machine::MAX_RETRY_AFTER);
                ControlModel::Done
            }
            (
                ControlModel::AwaitWelcome,
                Some(Message::Refused(r)),
                Ok(ControlEvent::Refused {
                    code, permanent, ..
                }),
            ) => {
                assert_eq!(r.code, *code);
                assert_eq!(*permanent, r.code != RefuseCode::ShuttingDown);
                ControlModel::Done
            }
            (
                ControlModel::AwaitDeleted,
                Some(Message::Deleted { .. }),
                Ok(ControlEvent::Deleted { .. }),
            ) => ControlModel::Ready,
            (
                ControlModel::AwaitCommitted,
                Some(Message::Committed { run_id }),
                Ok(ControlEvent::Committed { run_id: got }),
            ) => {
                assert_eq!(run_id, got);
                ControlModel::Done
            }
            (_, _, Err(_)) => {
                // A protocol error only where the message was not the answer
                // awaited.
                let awaited = matches!(
                    (model, &message),
                    (
                        ControlModel::AwaitWelcome,
                        Some(Message::Welcome(_) | Message::Busy { .. } | Message::Refused(_))
                    ) | (ControlModel::AwaitDeleted, Some(Message::Deleted { .. }))
                        | (
                            ControlModel::AwaitCommitted,
                            Some(Message::Committed { .. })
                        )
                );
                assert!(!awaited, "{model:?} refused {message:?}");
                ControlModel::Done
            }
            _ => panic!("{model:?} took {message:?} as {result:?}"),
        };
        assert_eq!(machine.is_done(), model == ControlModel::Done);
        assert_eq!(machine.is_ready(), model == ControlModel::Ready);
    }
}

/// The fuzz entry point: byte 0 chooses the machine (even: a file stream,
/// odd: the control stream), the rest drives it.
pub fn check_sender_streams(data: &[u8]) {
    let Some((&mode, rest)) = data.split_first() else {
        return;
    };
    let mut src = Bytes::new(rest);
    if mode & 1 == 0 {
        drive_entry(&mut src, rest.len());
    } else {
        drive_control(&mut src, rest.len());
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use ferry_proto::fuzz_support::Rng;

    /// 4,000 seeded random runs of each machine, and as many of raw bytes.
    #[test]
    fn sender_streams_bounded() {
        let mut rng = Rng::new(11);
        for _ in 0..4_000 {
            drive_entry(&mut rng, 12);
            drive_control(&mut rng, 16);
            check_sender_streams(&rng.bytes(48));
        }
    }

    /// The model is not vacuous: it sees an entry stored, content asked
    /// for, and a run admitted and committed.
    #[test]
    fn the_checks_see_every_ending() {
        let mut rng = Rng::new(3);
        let (mut stored, mut asked, mut committed) = (0, 0, 0);
        for _ in 0..2_000 {
            let offer = [Offer::Whole, Offer::ByHash, Offer::Chunked][rng.below(3) as usize];
            let mut m = EntrySender::new(offer);
            for _ in 0..4 {
                match m.on_message(receiver_message(&mut rng)) {
                    Ok(Step::Done(Ended::Stored | Ended::AlreadyStored)) => stored += 1,
                    Ok(Step::SendContent | Step::SendChunks(_)) => {
                        asked += 1;
                        m.content_sent();
                    }
                    _ => {}
                }
            }
            let mut c = ControlSender::new();
            c.hello(ferry_proto::Hello {
                protocol: 1,
                name: ferry_proto::Name::new("a").unwrap(),
                folder: ferry_proto::Name::new("b").unwrap(),
                pairing: None,
                agent: String::new(),
                last_run: None,
            });
            for _ in 0..6 {
                if c.is_ready() {
                    c.finish(RunReport::default());
                }
                if let Ok(ControlEvent::Committed { .. }) = c.on_message(receiver_message(&mut rng))
                {
                    committed += 1;
                }
            }
        }
        assert!(
            stored > 50 && asked > 50 && committed > 5,
            "{stored} {asked} {committed}"
        );
    }
}
