//! The sender's real run over an in-memory link ([`crate::link::memory`])
//! against a scripted receiver: every answer a receiver may give, with no
//! socket. Each test asserts on the run's outcome and on the index.

use std::os::unix::fs::PermissionsExt;
use std::path::Path;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use ferry_proto::{
    Content, EntryKind, FailCode, Failure, Go, Message, Name, Refusal, RefuseCode, Resume, Welcome,
};
use tokio_util::sync::CancellationToken;

use super::run::{attempt, wrap_up};
use super::schedule::RunOutcome;
use super::{RunError, SenderContext};
use crate::config::{SenderSettings, Target};
use crate::identity::{DeviceId, Identity};
use crate::index::Index;
use crate::link::memory::{pair, MemoryLink};
use crate::link::{Closable, Link};
use crate::pins::Pins;
use crate::status::SenderStatus;
use crate::stream::Channel;
use crate::summary::RunSummary;

pub(crate) fn receiver_id() -> DeviceId {
    DeviceId::from_spki(b"the scripted receiver")
}

/// A sender of `source` keeping its state in `state`.
pub(crate) fn sender(source: &Path, state: &Path) -> SenderContext {
    let mut settings = SenderSettings {
        target: Target::Remote {
            host: "receiver.test".into(),
            port: 7878,
            receiver_id: Some(receiver_id()),
        },
        source: source.to_path_buf(),
        every: None,
        keep_copies: None,
        pairing_secret: None,
        name: Name::new("laptop").unwrap(),
        folder: Name::new("docs").unwrap(),
        state: state.to_path_buf(),
        delete_guard: Default::default(),
        compress: Default::default(),
        limit_rate: None,
        exclude: Default::default(),
        watch: None,
        protect: Default::default(),
    };
    settings.delete_guard.allow = true;
    SenderContext {
        identity: Identity::load_or_create(state).unwrap(),
        pins: Mutex::new(Pins::load(state).unwrap()),
        settings,
        status: SenderStatus::new(),
        copies: None,
        exclude: Vec::new(),
        index: Arc::new(Mutex::new(None)),
        embedded: None,
        limiter: None,
    }
}

/// One run of `ctx` over `link`, closed when done as `run_once` closes it.
pub(crate) async fn run(ctx: &SenderContext, link: MemoryLink) -> Result<RunSummary, RunError> {
    let shutdown = CancellationToken::new();
    let started = Instant::now();
    let connect = async { Ok(link) };
    let attempt = attempt(ctx, &shutdown, None, connect, started).await?;
    attempt.link.close(0, b"done");
    wrap_up(ctx, attempt, started, 0).await
}

/// Runs `ctx` against `receiver`, a script playing the receiver's side.
async fn against<F>(
    ctx: &SenderContext,
    receiver: impl FnOnce(MemoryLink) -> F,
) -> Result<RunSummary, RunError>
where
    F: std::future::Future<Output = ()> + Send + 'static,
{
    let sender_id = ctx.identity.id;
    let (ours, theirs) = pair(sender_id, receiver_id());
    let script = tokio::spawn(receiver(theirs));
    let result = run(ctx, ours).await;
    script.await.unwrap();
    result
}

/// The paths the index holds, sorted.
fn indexed(ctx: &SenderContext) -> Vec<String> {
    let target = format!("{}/docs", receiver_id());
    let index = Index::open(&ctx.settings.state.join("index.db"), &target).unwrap();
    let mut paths: Vec<String> = index
        .entries()
        .unwrap()
        .into_iter()
        .map(|e| e.path.to_string())
        .collect();
    paths.sort();
    paths
}

/// Accepts the control stream, checks `Hello`, answers `answer`.
async fn hello(link: &MemoryLink, answer: Message) -> Channel {
    let mut control = link.accept().await.unwrap();
    assert!(matches!(
        control.recv.recv_message().await.unwrap(),
        Message::Hello(_)
    ));
    control.send.send(&answer).await.unwrap();
    control
}

fn welcome(max_streams: u32) -> Message {
    Message::Welcome(Welcome {
        run_id: 1,
        paired: false,
        max_streams,
        resync: false,
    })
}

fn failed(message: &str) -> Message {
    Message::Failed(Failure {
        code: FailCode::Io,
        message: message.into(),
    })
}

/// Takes `Finish`, answers `Committed`.
async fn commit(control: &mut Channel, run_id: u64) {
    assert!(matches!(
        control.recv.recv_message().await.unwrap(),
        Message::Finish(_)
    ));
    control
        .send
        .send(&Message::Committed { run_id })
        .await
        .unwrap();
}

/// The next entry stream: its channel and its `Entry`.
async fn entry(link: &MemoryLink) -> (Channel, ferry_proto::Entry) {
    let mut channel = link.accept().await.unwrap();
    match channel.recv.recv_message().await.unwrap() {
        Message::Entry(entry) => (channel, entry),
        other => panic!("expected an entry, got {other:?}"),
    }
}

/// Reads content up to and including `End` (or `Abort`).
async fn content(channel: &mut Channel) -> Vec<Message> {
    let mut got = Vec::new();
    loop {
        let message = channel.recv.recv_message().await.unwrap();
        let last = matches!(message, Message::End { .. } | Message::Abort { .. });
        got.push(message);
        if last {
            return got;
        }
    }
}

/// Plain bytes of content messages (`Data` only: the tests' files do not
/// compress well, or are left uncompressed).
fn data_len(messages: &[Message]) -> usize {
    messages
        .iter()
        .map(|m| match m {
            Message::Data(d) => d.len(),
            _ => 0,
        })
        .sum()
}

/// Noise: incompressible content of `len` bytes.
fn noise(len: usize) -> Vec<u8> {
    let mut data = vec![0u8; len];
    blake3::Hasher::new().finalize_xof().fill(&mut data);
    data
}

fn dirs() -> (tempfile::TempDir, tempfile::TempDir) {
    (tempfile::tempdir().unwrap(), tempfile::tempdir().unwrap())
}

#[tokio::test]
async fn busy_is_a_retry_after_the_receivers_hint() {
    let (source, state) = dirs();
    let ctx = sender(source.path(), state.path());
    let result = against(&ctx, |link| async move {
        let _control = hello(
            &link,
            Message::Busy {
                retry_after_ms: 2_000,
            },
        )
        .await;
        link.closed().await;
    })
    .await;
    let err = result.unwrap_err();
    assert!(
        matches!(err, RunError::Busy { retry_after } if retry_after == Duration::from_secs(2)),
        "{err:?}"
    );
    assert_eq!(
        err.outcome(),
        Some(RunOutcome::Busy {
            retry_after: Duration::from_secs(2)
        })
    );
}

#[tokio::test]
async fn a_refusal_is_final_unless_the_receiver_is_shutting_down() {
    for (code, outcome) in [
        (RefuseCode::UnknownSender, RunOutcome::Refused),
        (RefuseCode::ShuttingDown, RunOutcome::Unreachable),
    ] {
        let (source, state) = dirs();
        let ctx = sender(source.path(), state.path());
        let refusal = Message::Refused(Refusal {
            code,
            message: "not you".into(),
        });
        let err = against(&ctx, |link| async move {
            let _control = hello(&link, refusal).await;
            link.closed().await;
        })
        .await
        .unwrap_err();
        assert!(
            matches!(&err, RunError::Refused { code: c, message } if *c == code && message == "not you"),
            "{err:?}"
        );
        assert_eq!(err.outcome(), Some(outcome));
    }
}

#[tokio::test]
async fn dirs_files_and_symlinks_each_on_a_stream_are_stored_and_committed() {
    let (source, state) = dirs();
    std::fs::create_dir(source.path().join("d")).unwrap();
    std::fs::write(source.path().join("d/a"), b"hello").unwrap();
    std::os::unix::fs::symlink("d/a", source.path().join("l")).unwrap();
    let ctx = sender(source.path(), state.path());
    // One stream at a time: no bundle.
    let summary = against(&ctx, |link| async move {
        let mut control = hello(&link, welcome(1)).await;
        for _ in 0..3 {
            let (mut channel, entry) = entry(&link).await;
            if let EntryKind::File { content: c, size } = &entry.kind {
                assert_eq!(*c, Content::Inline);
                let got = content(&mut channel).await;
                assert_eq!(data_len(&got) as u64, *size);
            }
            channel.send.send(&Message::Stored).await.unwrap();
        }
        commit(&mut control, 7).await;
        link.closed().await;
    })
    .await
    .unwrap();
    assert_eq!(summary.run_id, Some(7));
    assert_eq!((summary.files_sent, summary.dirs_sent), (2, 1));
    assert_eq!(summary.errors, 0);
    assert_eq!(indexed(&ctx), ["d", "d/a", "l"]);
}

#[tokio::test]
async fn a_failed_entry_is_a_problem_of_the_run_and_not_indexed() {
    let (source, state) = dirs();
    std::fs::write(source.path().join("a"), b"aaa").unwrap();
    std::fs::write(source.path().join("b"), b"bbb").unwrap();
    let ctx = sender(source.path(), state.path());
    let summary = against(&ctx, |link| async move {
        let mut control = hello(&link, welcome(1)).await;
        for _ in 0..2 {
            let (mut channel, entry) = entry(&link).await;
            content(&mut channel).await;
            let answer = match entry.path.to_string().as_str() {
                "b" => failed("disk full"),
                _ => Message::Stored,
            };
            channel.send.send(&answer).await.unwrap();
        }
        commit(&mut control, 1).await;
        link.closed().await;
    })
    .await
    .unwrap();
    assert_eq!(summary.errors, 1);
    assert!(
        summary
            .problems
            .iter()
            .any(|p| p.message.contains("disk full")),
        "{:?}",
        summary.problems
    );
    assert_eq!(indexed(&ctx), ["a"]);
}

#[tokio::test]
async fn a_bundle_is_answered_in_order() {
    let (source, state) = dirs();
    for name in ["a", "b", "c"] {
        std::fs::write(source.path().join(name), name.repeat(5)).unwrap();
    }
    let ctx = sender(source.path(), state.path());
    let summary = against(&ctx, |link| async move {
        let mut control = hello(&link, welcome(8)).await;
        let mut bundle = link.accept().await.unwrap();
        assert_eq!(bundle.recv.recv_message().await.unwrap(), Message::Bundle);
        for _ in 0..3 {
            let Message::Entry(entry) = bundle.recv.recv_message().await.unwrap() else {
                panic!("not an entry");
            };
            content(&mut bundle).await;
            let answer = match entry.path.to_string().as_str() {
                "b" => failed("conflict"),
                _ => Message::Stored,
            };
            bundle.send.send(&answer).await.unwrap();
        }
        bundle.send.finish();
        commit(&mut control, 2).await;
        link.closed().await;
    })
    .await
    .unwrap();
    assert_eq!((summary.files_sent, summary.errors), (2, 1));
    assert_eq!(indexed(&ctx), ["a", "c"]);
}

/// Stores `a` (mode 0644) in a first run, then makes it 0600: the second
/// run offers it by hash.
async fn offered(
    answer_offer: Message,
) -> (
    SenderContext,
    RunSummary,
    Vec<Message>,
    [tempfile::TempDir; 2],
) {
    let (source, state) = dirs();
    let path = source.path().join("a");
    std::fs::write(&path, b"offered content").unwrap();
    std::fs::set_permissions(&path, std::fs::Permissions::from_mode(0o644)).unwrap();
    let ctx = sender(source.path(), state.path());
    let stored_all = |link: MemoryLink| async move {
        let mut control = hello(&link, welcome(1)).await;
        let (mut channel, _) = entry(&link).await;
        content(&mut channel).await;
        channel.send.send(&Message::Stored).await.unwrap();
        commit(&mut control, 1).await;
        link.closed().await;
    };
    against(&ctx, stored_all).await.unwrap();
    std::fs::set_permissions(&path, std::fs::Permissions::from_mode(0o600)).unwrap();
    let (tx, rx) = std::sync::mpsc::channel();
    let summary = against(&ctx, |link| async move {
        let mut control = hello(&link, welcome(1)).await;
        let (mut channel, entry) = entry(&link).await;
        assert!(matches!(
            entry.kind,
            EntryKind::File {
                content: Content::Offer { .. },
                ..
            }
        ));
        let wants = answer_offer == Message::Want;
        channel.send.send(&answer_offer).await.unwrap();
        let mut got = Vec::new();
        if wants {
            got = content(&mut channel).await;
            channel.send.send(&Message::Stored).await.unwrap();
        }
        tx.send(got).unwrap();
        commit(&mut control, 2).await;
        link.closed().await;
    })
    .await
    .unwrap();
    (ctx, summary, rx.recv().unwrap(), [source, state])
}

#[tokio::test]
async fn an_offer_the_receiver_holds_sends_only_metadata() {
    let (ctx, summary, got, _dirs) = offered(Message::Stored).await;
    assert!(got.is_empty());
    assert_eq!((summary.files_metadata_only, summary.files_sent), (1, 0));
    assert_eq!(indexed(&ctx), ["a"]);
}

#[tokio::test]
async fn an_offer_the_receiver_wants_sends_the_content() {
    let (ctx, summary, got, _dirs) = offered(Message::Want).await;
    assert_eq!(data_len(&got), b"offered content".len());
    assert!(matches!(got.last(), Some(Message::End { .. })));
    assert_eq!((summary.files_metadata_only, summary.files_sent), (0, 1));
    assert_eq!(indexed(&ctx), ["a"]);
}

/// Sends a large file as chunked content; the receiver answers `go`.
/// Returns the content messages it got.
async fn chunked(
    go: impl FnOnce(&[u8]) -> Go + Send + 'static,
) -> (RunSummary, Vec<Message>, Vec<u8>) {
    let (source, state) = dirs();
    let data = noise(3 * crate::chunk::MAX_CHUNK + 100);
    std::fs::write(source.path().join("big"), &data).unwrap();
    let ctx = sender(source.path(), state.path());
    let (tx, rx) = std::sync::mpsc::channel();
    let file = data.clone();
    let summary = against(&ctx, |link| async move {
        let mut control = hello(&link, welcome(4)).await;
        let (mut channel, entry) = entry(&link).await;
        assert!(matches!(
            entry.kind,
            EntryKind::File {
                content: Content::Chunked { base: None },
                ..
            }
        ));
        channel.send.send(&Message::Go(go(&file))).await.unwrap();
        let got = content(&mut channel).await;
        channel.send.send(&Message::Stored).await.unwrap();
        tx.send(got).unwrap();
        commit(&mut control, 3).await;
        link.closed().await;
    })
    .await
    .unwrap();
    assert_eq!(indexed(&ctx), ["big"]);
    (summary, rx.recv().unwrap(), data)
}

#[tokio::test]
async fn chunked_content_without_resume_is_sent_whole() {
    let (summary, got, data) = chunked(|_| Go {
        base: false,
        resume: None,
    })
    .await;
    assert!(!got.iter().any(|m| matches!(m, Message::Keep { .. })));
    assert_eq!(data_len(&got), data.len());
    assert_eq!(
        got.last(),
        Some(&Message::End {
            hash: *blake3::hash(&data).as_bytes()
        })
    );
    assert_eq!(summary.bytes_file_data_new, data.len() as u64);
}

#[tokio::test]
async fn chunked_content_resumes_after_what_the_receiver_kept() {
    let kept = 1000;
    let (summary, got, data) = chunked(move |file| Go {
        base: false,
        resume: Some(Resume {
            len: kept,
            hash: *blake3::hash(&file[..kept as usize]).as_bytes(),
        }),
    })
    .await;
    assert_eq!(got.first(), Some(&Message::Keep { len: kept }));
    assert_eq!(data_len(&got), data.len() - kept as usize);
    assert_eq!(summary.bytes_file_data_new, data.len() as u64 - kept);
}

#[tokio::test]
async fn a_resume_that_does_not_match_the_file_is_not_kept() {
    let (_, got, data) = chunked(|_| Go {
        base: false,
        resume: Some(Resume {
            len: 1000,
            hash: [9; 32],
        }),
    })
    .await;
    assert!(!got.iter().any(|m| matches!(m, Message::Keep { .. })));
    assert_eq!(data_len(&got), data.len());
}

#[tokio::test]
async fn deletions_are_sent_on_the_control_stream_and_forgotten() {
    let (source, state) = dirs();
    std::fs::write(source.path().join("a"), b"a").unwrap();
    std::fs::write(source.path().join("b"), b"b").unwrap();
    let ctx = sender(source.path(), state.path());
    against(&ctx, |link| async move {
        let mut control = hello(&link, welcome(1)).await;
        for _ in 0..2 {
            let (mut channel, _) = entry(&link).await;
            content(&mut channel).await;
            channel.send.send(&Message::Stored).await.unwrap();
        }
        commit(&mut control, 1).await;
        link.closed().await;
    })
    .await
    .unwrap();
    std::fs::remove_file(source.path().join("b")).unwrap();
    let summary = against(&ctx, |link| async move {
        let mut control = hello(&link, welcome(1)).await;
        match control.recv.recv_message().await.unwrap() {
            Message::Delete { paths } => {
                let paths: Vec<String> = paths.iter().map(ToString::to_string).collect();
                assert_eq!(paths, ["b"]);
            }
            other => panic!("expected Delete, got {other:?}"),
        }
        control
            .send
            .send(&Message::Deleted { failed: Vec::new() })
            .await
            .unwrap();
        commit(&mut control, 2).await;
        link.closed().await;
    })
    .await
    .unwrap();
    assert_eq!((summary.files_deleted, summary.run_id), (1, Some(2)));
    assert_eq!(indexed(&ctx), ["a"]);
}

#[tokio::test]
async fn a_receiver_closing_mid_run_is_reported_by_its_reason() {
    let (source, state) = dirs();
    std::fs::write(source.path().join("a"), b"a").unwrap();
    let ctx = sender(source.path(), state.path());
    let err = against(&ctx, |link| async move {
        let _control = hello(&link, welcome(1)).await;
        let (_channel, _) = entry(&link).await;
        link.close(1, b"the receiver's disk is full");
    })
    .await
    .unwrap_err();
    assert!(
        matches!(&err, RunError::ReceiverEnded(reason) if reason == "the receiver's disk is full"),
        "{err:?}"
    );
    assert_eq!(err.outcome(), Some(RunOutcome::Unreachable));
    assert!(indexed(&ctx).is_empty());
}

#[tokio::test]
async fn a_protocol_error_on_the_control_stream_ends_the_run() {
    let (source, state) = dirs();
    let ctx = sender(source.path(), state.path());
    let err = against(&ctx, |link| async move {
        let mut control = hello(&link, welcome(1)).await;
        assert!(matches!(
            control.recv.recv_message().await.unwrap(),
            Message::Finish(_)
        ));
        control.send.send(&Message::Want).await.unwrap();
        link.closed().await;
    })
    .await
    .unwrap_err();
    assert_eq!(
        crate::chain::chain(&err),
        "the connection to the receiver broke: protocol error: expected Committed, got Want"
    );
}

/// `sender`, into a folder encrypted to `secret`.
fn sealed(source: &Path, state: &Path, secret: &ferry_proto::seal::FolderSecret) -> SenderContext {
    let mut ctx = sender(source, state);
    let public = secret.public();
    let protection = ferry_proto::Protection::Encrypted {
        key: public.key_id(),
    };
    ctx.settings.protect = crate::config::FolderProtect::Sealed { protection, public };
    ctx
}

#[tokio::test]
async fn a_sealed_folder_says_hello_protected_and_a_protection_refusal_is_final() {
    let (source, state) = dirs();
    let secret = ferry_proto::seal::FolderSecret::generate().unwrap();
    let ctx = sealed(source.path(), state.path(), &secret);
    let key = secret.public().key_id();
    let err = against(&ctx, |link| async move {
        let mut control = link.accept().await.unwrap();
        match control.recv.recv_message().await.unwrap() {
            Message::HelloProtected { hello, protection } => {
                assert_eq!(hello.folder.as_str(), "docs");
                assert_eq!(protection, ferry_proto::Protection::Encrypted { key });
            }
            other => panic!("expected HelloProtected, got {other:?}"),
        }
        let refusal = Refusal {
            code: RefuseCode::Protection,
            message: "docs is a plain folder; it cannot be continued encrypted".into(),
        };
        control.send.send(&Message::Refused(refusal)).await.unwrap();
        link.closed().await;
    })
    .await
    .unwrap_err();
    assert!(
        matches!(&err, RunError::Refused { code: RefuseCode::Protection, message } if message.contains("plain folder")),
        "{err:?}"
    );
    // No retry: only the user can settle it.
    assert_eq!(err.outcome(), None);
}

#[tokio::test]
async fn a_sealed_folder_deletes_by_opaque_paths_and_reports_real_ones() {
    let (source, state) = dirs();
    std::fs::write(source.path().join("a"), b"a").unwrap();
    std::fs::write(source.path().join("b"), b"b").unwrap();
    let secret = ferry_proto::seal::FolderSecret::generate().unwrap();
    let ctx = sealed(source.path(), state.path(), &secret);
    let public = secret.public();
    against(&ctx, |link| async move {
        let mut control = link.accept().await.unwrap();
        let hello = control.recv.recv_message().await.unwrap();
        assert!(matches!(hello, Message::HelloProtected { .. }));
        control.send.send(&welcome(1)).await.unwrap();
        for _ in 0..2 {
            let (mut channel, entry) = entry(&link).await;
            // A 0600 regular file of mtime 0, content raw.
            assert_eq!((entry.mode, entry.mtime_ns), (0o600, 0));
            assert!(matches!(
                entry.kind,
                EntryKind::File {
                    content: Content::Inline,
                    ..
                }
            ));
            let got = content(&mut channel).await;
            assert!(got
                .iter()
                .all(|m| matches!(m, Message::Data(_) | Message::End { .. })));
            channel.send.send(&Message::Stored).await.unwrap();
        }
        commit(&mut control, 1).await;
        link.closed().await;
    })
    .await
    .unwrap();
    assert_eq!(indexed(&ctx), ["a", "b"]);
    std::fs::remove_file(source.path().join("b")).unwrap();
    let b = public.opaque_path(&ferry_proto::RelPath::from_bytes("b").unwrap());
    let summary = against(&ctx, |link| async move {
        let mut control = link.accept().await.unwrap();
        control.recv.recv_message().await.unwrap();
        control.send.send(&welcome(1)).await.unwrap();
        match control.recv.recv_message().await.unwrap() {
            Message::Delete { paths } => assert_eq!(paths, std::slice::from_ref(&b)),
            other => panic!("expected Delete, got {other:?}"),
        }
        let failed = vec![ferry_proto::PathFailure {
            path: b,
            failure: Failure {
                code: FailCode::Io,
                message: "disk on fire".into(),
            },
        }];
        control
            .send
            .send(&Message::Deleted { failed })
            .await
            .unwrap();
        commit(&mut control, 2).await;
        link.closed().await;
    })
    .await
    .unwrap();
    assert_eq!(summary.files_deleted, 0);
    assert_eq!(summary.problems.len(), 1, "{:?}", summary.problems);
    assert_eq!(summary.problems[0].path, "b");
    assert!(summary.problems[0].message.contains("disk on fire"));
    assert_eq!(indexed(&ctx), ["a", "b"], "not deleted: still indexed");
}
