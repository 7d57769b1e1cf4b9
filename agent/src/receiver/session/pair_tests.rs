//! Whole sessions in memory: a scripted sender over [`memory::pair`]
//! against the real session driver ([`super::serve`]) and a real store in
//! a temporary directory, one test per message sequence the e2e `hostile`
//! tests send over QUIC, each followed by a run that must still work.

#![allow(clippy::unwrap_used)] // a failing unwrap is a failing test

use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use ferry_proto::fuzz_support::{raw_entry, raw_frame, RawKind};
use ferry_proto::{
    frame, Content, Entry, EntryKind, FailCode, Hello, Message, Name, Open, Protection, RefuseCode,
    RelPath, Request, RunReport, MAX_FRAME, PROTOCOL_VERSION,
};
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;

use super::serve;
use crate::identity::DeviceId;
use crate::link::memory::{self, MemoryLink};
use crate::link::{Closable, Link};
use crate::receiver::{Admission, Shared, BUSY_RETRY, MAX_STREAMS_PER_SENDER};
use crate::store::Store;
use crate::stream::Channel;

/// How long a test waits for one answer (a hang fails, never a slow answer).
const PATIENCE: Duration = Duration::from_secs(30);

fn sender_id() -> DeviceId {
    DeviceId::from_spki(b"mallory")
}

/// A receiver's shared state on a store in a temporary directory, and the
/// sessions it serves.
struct Arena {
    dir: tempfile::TempDir,
    shared: Arc<Shared>,
    shutdown: CancellationToken,
    sessions: TaskTracker,
}

impl Arena {
    /// A receiver that admits `mallory` and serves `max_clients` at once.
    fn new(max_clients: usize) -> Arena {
        let dir = tempfile::tempdir().unwrap();
        let store = Store::open(&dir.path().join("store")).unwrap();
        let admission = Admission {
            allow: vec![sender_id()],
            pairing_secret: None,
        };
        Arena {
            dir,
            shared: Arc::new(Shared::new(store, max_clients, admission).unwrap()),
            shutdown: CancellationToken::new(),
            sessions: TaskTracker::new(),
        }
    }

    /// A new connection from `peer`, served by the real session driver.
    fn link_from(&self, peer: DeviceId) -> MemoryLink {
        let (ours, theirs) = memory::pair(peer, DeviceId::from_spki(b"receiver"));
        let shared = self.shared.clone();
        self.sessions
            .spawn(serve(theirs, shared, self.shutdown.child_token()));
        ours
    }

    /// Opens the control stream of a new connection, sends `first` as it
    /// is, and reads the answer.
    async fn open_with(&self, peer: DeviceId, first: &[u8]) -> (MemoryLink, Channel, Answer) {
        let link = self.link_from(peer);
        let mut control = link.open().await.unwrap();
        let _ = control.send.send_raw(first).await;
        let answer = read(&mut control).await;
        (link, control, answer)
    }

    /// Says `Hello` as mallory; expects `Welcome`.
    async fn connect(&self) -> Run {
        self.connect_with(&hello()).await
    }

    /// Says `first` (a `Hello` or `HelloProtected`) as mallory; expects
    /// `Welcome`.
    async fn connect_with(&self, first: &Message) -> Run {
        let (link, control, answer) = self.open_with(sender_id(), &encode(first)).await;
        match answer {
            Answer::Reply(Message::Welcome(welcome)) => {
                assert_eq!(welcome.max_streams, MAX_STREAMS_PER_SENDER);
                Run {
                    link,
                    control,
                    run_id: welcome.run_id,
                }
            }
            other => panic!("expected Welcome, got {other:?}"),
        }
    }

    fn store_dir(&self) -> PathBuf {
        self.dir.path().join("store")
    }

    fn mirror(&self) -> PathBuf {
        self.store_dir().join("mallory/docs")
    }

    /// Every file and symlink below the mirror, by path, sorted.
    fn mirror_files(&self) -> Vec<String> {
        fn walk(root: &std::path::Path, dir: &std::path::Path, out: &mut Vec<String>) {
            let Ok(entries) = std::fs::read_dir(dir) else {
                return;
            };
            for entry in entries {
                let path = entry.unwrap().path();
                if path.is_dir() && !path.is_symlink() {
                    walk(root, &path, out);
                } else {
                    let rel = path.strip_prefix(root).unwrap();
                    out.push(rel.to_string_lossy().into_owned());
                }
            }
        }
        let mut out = Vec::new();
        walk(&self.mirror(), &self.mirror(), &mut out);
        out.sort();
        out
    }

    fn assert_staging_empty(&self) {
        let staging = self.store_dir().join(".ferry/staging");
        let left: Vec<_> = std::fs::read_dir(&staging)
            .map(|d| d.map(|e| e.unwrap().file_name()).collect())
            .unwrap_or_default();
        assert!(left.is_empty(), "left in staging: {left:?}");
    }

    /// The status of each run recorded, oldest first.
    fn run_statuses(&self) -> Vec<String> {
        let mut runs = self.shared.store.runs(None).unwrap();
        runs.sort_by_key(|r| r.id);
        runs.into_iter().map(|r| r.status).collect()
    }

    /// A proper run after the hostile ones: a file stored and committed.
    async fn legit_run(&self, path: &str) {
        let run = self.connect().await;
        run.stream(&good(path, "legit")).await.assert_stored(path);
        run.finish().await;
        let stored = std::fs::read(self.mirror().join(path)).unwrap();
        assert_eq!(stored, b"legit");
    }

    /// Stops the receiver: every session ends, and is waited for.
    async fn stop(self) {
        self.shutdown.cancel();
        self.sessions.close();
        tokio::time::timeout(PATIENCE, self.sessions.wait())
            .await
            .expect("the sessions did not stop");
    }
}

/// An admitted run, driven by hand.
struct Run {
    link: MemoryLink,
    control: Channel,
    run_id: u64,
}

impl Run {
    /// Opens a file stream, writes `bytes` as they are, ends the stream,
    /// and reads the answer.
    async fn stream(&self, bytes: &[u8]) -> Answer {
        let mut channel = self.link.open().await.unwrap();
        // The receiver may stop reading as soon as it has seen enough.
        let _ = channel.send.send_raw(bytes).await;
        channel.send.finish();
        read(&mut channel).await
    }

    /// Every answer on a bundle stream (`bytes` after `Bundle`), in order,
    /// until the receiver ends its side.
    async fn bundle(&self, bytes: &[u8]) -> Vec<Answer> {
        let mut channel = self.link.open().await.unwrap();
        let mut all = encode(&Message::Bundle);
        all.extend_from_slice(bytes);
        let _ = channel.send.send_raw(&all).await;
        channel.send.finish();
        let mut answers = Vec::new();
        loop {
            match read(&mut channel).await {
                Answer::Closed(why) if why == "finished" => return answers,
                closed @ Answer::Closed(_) => {
                    answers.push(closed);
                    return answers;
                }
                reply => answers.push(reply),
            }
        }
    }

    /// Asks for deletions; returns the paths that failed.
    async fn delete(&mut self, paths: &[&str]) -> Vec<String> {
        let paths = paths
            .iter()
            .map(|p| RelPath::from_bytes(*p).unwrap())
            .collect();
        self.control
            .send
            .send(&Message::Delete { paths })
            .await
            .unwrap();
        match read(&mut self.control).await {
            Answer::Reply(Message::Deleted { failed }) => {
                failed.into_iter().map(|f| f.path.to_string()).collect()
            }
            other => panic!("expected Deleted, got {other:?}"),
        }
    }

    /// Ends the run properly: it must be committed.
    async fn finish(mut self) -> u64 {
        let report = RunReport::default();
        self.control
            .send
            .send(&Message::Finish(report))
            .await
            .unwrap();
        match read(&mut self.control).await {
            Answer::Reply(Message::Committed { run_id }) => assert_eq!(run_id, self.run_id),
            other => panic!("expected Committed, got {other:?}"),
        }
        self.link.close(0, b"done");
        self.run_id
    }
}

/// What the receiver did with a stream.
#[derive(Debug)]
enum Answer {
    /// It answered this message.
    Reply(Message),
    /// It ended (`"finished"`) or broke the stream without a message.
    Closed(String),
}

impl Answer {
    fn assert_stored(&self, case: &str) {
        assert!(
            matches!(self, Answer::Reply(Message::Stored)),
            "{case}: expected Stored, got {self:?}"
        );
    }

    fn assert_failed(&self, code: FailCode, case: &str) {
        match self {
            Answer::Reply(Message::Failed(f)) if f.code == code => {}
            other => panic!("{case}: expected Failed({code:?}), got {other:?}"),
        }
    }

    /// A failure (any code), a refusal, or a closed stream.
    fn assert_rejected(&self, case: &str) {
        match self {
            Answer::Reply(Message::Failed(_) | Message::Refused(_)) | Answer::Closed(_) => {}
            other => panic!("{case}: expected a rejection, got {other:?}"),
        }
    }
}

/// The next message on `channel`, or how it ended.
async fn read(channel: &mut Channel) -> Answer {
    match tokio::time::timeout(PATIENCE, channel.recv.recv()).await {
        Err(_) => panic!("the receiver did not answer"),
        Ok(Ok(Some(message))) => Answer::Reply(message),
        Ok(Ok(None)) => Answer::Closed("finished".into()),
        Ok(Err(e)) => Answer::Closed(e.to_string()),
    }
}

fn hello() -> Message {
    Message::Hello(Hello {
        protocol: PROTOCOL_VERSION,
        name: Name::new("mallory").unwrap(),
        folder: Name::new("docs").unwrap(),
        pairing: None,
        agent: "pair test".into(),
        last_run: None,
    })
}

fn encode(message: &Message) -> Vec<u8> {
    frame::encode(message).unwrap()
}

/// The frame of a file's `Entry` (mtime 0, mode 0o644).
fn file_header(path: &str, size: u64, content: Content) -> Vec<u8> {
    encode(&Message::Entry(Entry {
        path: RelPath::from_bytes(path).unwrap(),
        kind: EntryKind::File { size, content },
        mtime_ns: 0,
        mode: 0o644,
    }))
}

/// A file entry with inline content: Entry (declaring `declared` bytes),
/// Data, End with `hash`.
fn file_entry(path: &str, declared: u64, content: &[u8], hash: [u8; 32]) -> Vec<u8> {
    let mut out = file_header(path, declared, Content::Inline);
    out.extend(encode(&Message::Data(content.to_vec())));
    out.extend(encode(&Message::End { hash }));
    out
}

/// A valid file entry holding `text`.
fn good(path: &str, text: &str) -> Vec<u8> {
    file_entry(
        path,
        text.len() as u64,
        text.as_bytes(),
        *blake3::hash(text.as_bytes()).as_bytes(),
    )
}

/// Deterministic bytes that are no valid message.
fn noise(len: usize, seed: u64) -> Vec<u8> {
    let mut x = seed.wrapping_mul(0x9E37_79B9_7F4A_7C15) | 1;
    (0..len)
        .map(|_| {
            x ^= x << 13;
            x ^= x >> 7;
            x ^= x << 17;
            (x >> 24) as u8
        })
        .collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_full_run_stores_entries_deletes_and_is_committed() {
    let arena = Arena::new(4);
    let mut run = arena.connect().await;
    run.stream(&good("a.txt", "alpha"))
        .await
        .assert_stored("a.txt");
    run.stream(&raw_entry(b"d", RawKind::Dir))
        .await
        .assert_stored("d");
    run.stream(&good("d/b.txt", "beta"))
        .await
        .assert_stored("d/b.txt");
    run.stream(&raw_entry(b"d/link", RawKind::Symlink { target: b"b.txt" }))
        .await
        .assert_stored("d/link");
    assert_eq!(run.delete(&["a.txt"]).await, Vec::<String>::new());
    let run_id = run.finish().await;
    assert_eq!(arena.mirror_files(), ["d/b.txt", "d/link"]);
    let ns = arena.shared.store.namespace(
        &arena
            .shared
            .store
            .sender_by_device(&sender_id().to_string())
            .unwrap()
            .unwrap(),
        &Name::new("docs").unwrap(),
    );
    let current = arena.shared.store.current(&ns).unwrap();
    assert_eq!(current.len(), 3, "{current:?}");
    let a = arena
        .shared
        .store
        .versions(&ns, &RelPath::from_bytes("a.txt").unwrap())
        .unwrap();
    assert!(a.iter().any(|v| v.deleted), "{a:?}");
    let runs = arena.shared.store.runs(None).unwrap();
    assert!(
        runs.iter()
            .any(|r| r.id == run_id && r.status == "complete"),
        "{runs:?}"
    );
    arena.assert_staging_empty();
    arena.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn traversal_absolute_and_nul_paths_are_refused_and_write_nothing() {
    let arena = Arena::new(4);
    let run = arena.connect().await;
    let absolute = arena.dir.path().join("abs-escape");
    let paths: Vec<Vec<u8>> = vec![
        b"../../escape".to_vec(),
        b"ok/../../../../escape".to_vec(),
        b"/tmp/escape".to_vec(),
        absolute.to_string_lossy().as_bytes().to_vec(),
        b"a\0b".to_vec(),
        b"nul\0/../../../escape".to_vec(),
        b"".to_vec(),
        b"./x".to_vec(),
        b"a//b".to_vec(),
    ];
    let hash = *blake3::hash(b"pwned").as_bytes();
    for path in &paths {
        let shown = String::from_utf8_lossy(path).into_owned();
        let mut file = raw_entry(path, RawKind::File { size: 5 });
        file.extend(encode(&Message::Data(b"pwned".to_vec())));
        file.extend(encode(&Message::End { hash }));
        let kinds = [
            ("file", file),
            ("dir", raw_entry(path, RawKind::Dir)),
            (
                "symlink",
                raw_entry(path, RawKind::Symlink { target: b"/etc" }),
            ),
        ];
        for (kind, bytes) in kinds {
            run.stream(&bytes)
                .await
                .assert_failed(FailCode::BadRequest, &format!("{kind} at {shown:?}"));
        }
    }
    run.finish().await;
    assert_eq!(arena.mirror_files(), Vec::<String>::new());
    assert!(!arena.dir.path().join("escape").exists());
    assert!(!arena.dir.path().join("abs-escape").exists());
    arena.assert_staging_empty();
    arena.legit_run("after-traversal.txt").await;
    arena.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_oversized_frame_is_refused_and_the_receiver_keeps_serving() {
    let arena = Arena::new(4);
    let run = arena.connect().await;
    let mut huge = 0xFFFF_FFFFu32.to_be_bytes().to_vec();
    huge.extend(vec![0u8; 64 * 1024]);
    run.stream(&huge)
        .await
        .assert_failed(FailCode::BadRequest, "0xFFFFFFFF frame header");
    let mut just_over = ((MAX_FRAME + 1) as u32).to_be_bytes().to_vec();
    just_over.extend(vec![0u8; 1024]);
    run.stream(&just_over)
        .await
        .assert_failed(FailCode::BadRequest, "MAX_FRAME + 1 frame header");
    let mut after_entry = file_header("big-frame.bin", 1 << 20, Content::Inline);
    after_entry.extend(encode(&Message::Data(vec![1; 1000])));
    after_entry.extend(0xFFFF_FFF0u32.to_be_bytes());
    after_entry.extend(vec![0u8; 4096]);
    run.stream(&after_entry)
        .await
        .assert_failed(FailCode::BadRequest, "oversized Data frame");
    run.finish().await;
    assert_eq!(arena.mirror_files(), Vec::<String>::new());
    arena.assert_staging_empty();
    arena.legit_run("after-oversized.txt").await;
    arena.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn garbage_on_file_and_control_streams_is_refused() {
    let arena = Arena::new(4);
    let run = arena.connect().await;
    run.stream(&noise(4096, 3))
        .await
        .assert_rejected("raw garbage on a file stream");
    run.stream(&raw_frame(&noise(1000, 4)))
        .await
        .assert_failed(FailCode::BadRequest, "framed garbage on a file stream");
    let mut after_entry = file_header("garbage-after.bin", 10_000, Content::Inline);
    after_entry.extend(raw_frame(&noise(500, 5)));
    run.stream(&after_entry)
        .await
        .assert_failed(FailCode::BadRequest, "garbage after an entry header");
    run.stream(&encode(&Message::Data(b"orphan".to_vec())))
        .await
        .assert_failed(FailCode::BadRequest, "Data without Entry");
    run.stream(&encode(&Message::Finish(RunReport::default())))
        .await
        .assert_failed(FailCode::BadRequest, "Finish on a file stream");
    run.finish().await;
    let runs_before = arena.run_statuses().len();

    // Garbage in place of Hello, raw and framed: refused, no run recorded.
    for (case, bytes) in [
        ("raw garbage instead of Hello", noise(4096, 6)),
        ("framed garbage instead of Hello", raw_frame(&noise(700, 7))),
        (
            "Finish instead of Hello",
            encode(&Message::Finish(RunReport::default())),
        ),
    ] {
        let (link, _control, answer) = arena.open_with(sender_id(), &bytes).await;
        match &answer {
            Answer::Reply(Message::Refused(r)) => {
                assert_eq!(r.code, RefuseCode::BadRequest, "{case}")
            }
            Answer::Closed(_) => {}
            other => panic!("{case}: expected Refused(BadRequest), got {other:?}"),
        }
        link.close(0, b"bye");
    }
    assert_eq!(arena.run_statuses().len(), runs_before);

    // A message that does not belong on the control stream mid-run: refused,
    // the run recorded as failed.
    let mut run = arena.connect().await;
    run.control.send.send(&Message::Stored).await.unwrap();
    match read(&mut run.control).await {
        Answer::Reply(Message::Refused(r)) => {
            assert_eq!(r.code, RefuseCode::BadRequest);
            assert!(
                r.message.contains("on the control stream of mallory"),
                "{}",
                r.message
            );
        }
        other => panic!("expected Refused, got {other:?}"),
    }
    run.link.close(0, b"bye");
    let statuses = tokio::time::timeout(PATIENCE, async {
        loop {
            let statuses = arena.run_statuses();
            if statuses.last().map(String::as_str) == Some("failed") {
                return statuses;
            }
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
    })
    .await
    .expect("the refused run was never recorded as failed");
    assert_eq!(statuses.len(), runs_before + 1);
    assert_eq!(arena.mirror_files(), Vec::<String>::new());
    arena.assert_staging_empty();
    arena.legit_run("after-garbage.txt").await;
    arena.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn wrong_size_or_hash_leaves_nothing_in_mirror_or_staging() {
    let arena = Arena::new(4);
    let run = arena.connect().await;
    let long = noise(20, 8);
    run.stream(&file_entry(
        "too-long.txt",
        10,
        &long,
        *blake3::hash(&long).as_bytes(),
    ))
    .await
    .assert_failed(FailCode::SizeMismatch, "more data than declared");
    let short = noise(10, 9);
    run.stream(&file_entry(
        "too-short.txt",
        100,
        &short,
        *blake3::hash(&short).as_bytes(),
    ))
    .await
    .assert_failed(FailCode::SizeMismatch, "less data than declared");
    run.stream(&file_entry("bad-hash.txt", 5, b"hello", [0; 32]))
        .await
        .assert_failed(FailCode::HashMismatch, "wrong End hash");
    // The stream ends in the middle of a large file's content (streamed
    // to staging rather than gathered in memory).
    let mut cut = file_header("cut.txt", 1 << 20, Content::Inline);
    cut.extend(encode(&Message::Data(vec![7; 10])));
    run.stream(&cut)
        .await
        .assert_rejected("stream ended inside the content");
    // And one reset by the sender in the middle of the content.
    let mut channel = run.link.open().await.unwrap();
    channel.send.send_raw(&cut).await.unwrap();
    channel.send.reset();
    let answer = read(&mut channel).await;
    assert!(
        matches!(
            answer,
            Answer::Reply(Message::Failed(_)) | Answer::Closed(_)
        ),
        "reset stream: {answer:?}"
    );
    run.finish().await;
    assert_eq!(arena.mirror_files(), Vec::<String>::new());
    arena.assert_staging_empty();
    arena.legit_run("after-bad-content.txt").await;
    arena.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_bundle_that_breaks_the_rules_ends_and_keeps_what_came_before() {
    let arena = Arena::new(4);
    let run = arena.connect().await;
    let stored = |a: &Answer, case: &str| a.assert_stored(case);

    let mut bytes = good("b/one.txt", "first");
    bytes.extend(file_entry("b/two.txt", 5, b"wrong", [0; 32]));
    bytes.extend(good("b/three.txt", "third"));
    let answers = run.bundle(&bytes).await;
    assert_eq!(answers.len(), 3, "{answers:?}");
    stored(&answers[0], "first entry");
    answers[1].assert_failed(FailCode::HashMismatch, "wrong hash in a bundle");
    stored(&answers[2], "entry after a failed one");

    let offer = file_header("b/offered.txt", 5, Content::Offer { hash: [1; 32] });
    let mut oversized = file_header("b/huge.bin", 1 << 20, Content::Inline);
    oversized.extend(encode(&Message::Data(vec![1; 1000])));
    let mut garbage = file_header("b/garbage.txt", 5, Content::Inline);
    garbage.extend(encode(&Message::Zstream(b"not zstd at all".to_vec())));
    for (case, breaking) in [
        ("an offer in a bundle", offer),
        ("a file too large for a bundle", oversized),
        ("a Zstream piece that is not zstd", garbage),
    ] {
        let mut bytes = good("b/before.txt", case);
        bytes.extend(breaking);
        bytes.extend(good("b/after.txt", "never read"));
        let answers = run.bundle(&bytes).await;
        assert_eq!(answers.len(), 2, "{case}: {answers:?}");
        stored(&answers[0], case);
        answers[1].assert_failed(FailCode::BadRequest, case);
    }
    run.finish().await;
    assert_eq!(
        arena.mirror_files(),
        ["b/before.txt", "b/one.txt", "b/three.txt"]
    );
    arena.assert_staging_empty();
    arena.legit_run("after-bundles.txt").await;
    arena.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_sender_is_told_to_come_back_when_the_slots_are_full() {
    let arena = Arena::new(1);
    let first = arena.connect().await;
    let (link, _control, answer) = arena.open_with(sender_id(), &encode(&hello())).await;
    match answer {
        Answer::Reply(Message::Busy { retry_after_ms }) => {
            assert_eq!(retry_after_ms, BUSY_RETRY.as_millis() as u64)
        }
        other => panic!("expected Busy, got {other:?}"),
    }
    link.close(0, b"later");
    first.finish().await;
    // The slot is given back once the first run ends.
    let again = tokio::time::timeout(PATIENCE, async {
        loop {
            let (link, control, answer) = arena.open_with(sender_id(), &encode(&hello())).await;
            match answer {
                Answer::Reply(Message::Welcome(w)) => {
                    return Run {
                        link,
                        control,
                        run_id: w.run_id,
                    }
                }
                _ => {
                    link.close(0, b"later");
                    tokio::time::sleep(Duration::from_millis(10)).await;
                }
            }
        }
    })
    .await
    .expect("the slot was never given back");
    again.finish().await;
    arena.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_unknown_device_is_refused_and_no_run_is_recorded() {
    let arena = Arena::new(4);
    let stranger = DeviceId::from_spki(b"stranger");
    let (link, _control, answer) = arena.open_with(stranger, &encode(&hello())).await;
    match answer {
        Answer::Reply(Message::Refused(r)) => assert_eq!(r.code, RefuseCode::UnknownSender),
        other => panic!("expected Refused(UnknownSender), got {other:?}"),
    }
    link.close(0, b"bye");
    assert!(arena.run_statuses().is_empty());
    arena.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn shutdown_closes_the_session_and_records_the_run_interrupted() {
    let arena = Arena::new(4);
    let run = arena.connect().await;
    run.stream(&good("kept.txt", "kept"))
        .await
        .assert_stored("kept.txt");
    arena.shutdown.cancel();
    let closed = tokio::time::timeout(PATIENCE, run.link.closed())
        .await
        .expect("the session did not close at shutdown");
    match closed {
        quinn::ConnectionError::ApplicationClosed(close) => {
            assert_eq!(close.error_code, quinn::VarInt::from_u32(2));
            assert_eq!(&close.reason[..], b"receiver shutting down");
        }
        other => panic!("expected an application close, got {other:?}"),
    }
    let statuses = arena.run_statuses();
    assert_eq!(statuses, ["interrupted"]);
    assert_eq!(arena.mirror_files(), ["kept.txt"]);
    arena.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_sender_that_leaves_mid_run_is_recorded_interrupted() {
    let arena = Arena::new(4);
    let mut run = arena.connect().await;
    run.stream(&good("kept.txt", "kept"))
        .await
        .assert_stored("kept.txt");
    run.control.send.finish();
    run.link.close(0, b"gone");
    let statuses = tokio::time::timeout(PATIENCE, async {
        loop {
            let statuses = arena.run_statuses();
            if statuses != ["running"] {
                return statuses;
            }
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
    })
    .await
    .expect("the run was never recorded as ended");
    assert_eq!(statuses, ["interrupted"]);
    assert_eq!(arena.mirror_files(), ["kept.txt"]);
    arena.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_planted_symlink_is_archived_never_written_through() {
    let arena = Arena::new(1);
    // A directory outside the store that a symlink in the mirror points to.
    let outside = arena.dir.path().join("outside");
    std::fs::create_dir_all(&outside).unwrap();
    let target = outside.as_os_str().as_encoded_bytes().to_vec();
    let run = arena.connect().await;
    for name in ["evil", "evil-dir", "evil-link"] {
        let planted = encode(&Message::Entry(Entry {
            path: RelPath::from_bytes(name).unwrap(),
            kind: EntryKind::Symlink {
                target: target.clone(),
            },
            mtime_ns: 0,
            mode: 0o777,
        }));
        run.stream(&planted).await.assert_stored(name);
        assert_eq!(
            std::fs::read_link(arena.mirror().join(name)).unwrap(),
            outside,
            "{name} was not planted"
        );
    }
    // Then content, a directory and a symlink below each planted link.
    let content = b"through the looking glass";
    let file = file_entry(
        "evil/file.txt",
        content.len() as u64,
        content,
        *blake3::hash(content).as_bytes(),
    );
    run.stream(&file).await.assert_stored("a file below a link");
    let dir = encode(&Message::Entry(Entry {
        path: RelPath::from_bytes("evil-dir/sub/deeper").unwrap(),
        kind: EntryKind::Dir,
        mtime_ns: 0,
        mode: 0o755,
    }));
    run.stream(&dir)
        .await
        .assert_stored("a directory below a link");
    let link = encode(&Message::Entry(Entry {
        path: RelPath::from_bytes("evil-link/inner").unwrap(),
        kind: EntryKind::Symlink {
            target: b"/etc/passwd".to_vec(),
        },
        mtime_ns: 0,
        mode: 0o777,
    }));
    run.stream(&link)
        .await
        .assert_stored("a symlink below a link");
    run.finish().await;

    // Nothing went through the links: the outside directory is empty, the
    // links became real directories holding what was sent.
    assert_eq!(std::fs::read_dir(&outside).unwrap().count(), 0);
    for name in ["evil", "evil-dir", "evil-link"] {
        let meta = std::fs::symlink_metadata(arena.mirror().join(name)).unwrap();
        assert!(meta.is_dir(), "{name} is not a real directory: {meta:?}");
    }
    let stored = std::fs::read(arena.mirror().join("evil/file.txt")).unwrap();
    assert_eq!(stored, content);
    assert!(arena.mirror().join("evil-dir/sub/deeper").is_dir());
    assert_eq!(
        std::fs::read_link(arena.mirror().join("evil-link/inner")).unwrap(),
        std::path::Path::new("/etc/passwd")
    );
    arena.legit_run("after-symlinks.txt").await;
    arena.stop().await;
}

const ENCRYPTED: Protection = Protection::Encrypted { key: [0xab; 32] };

/// Mallory's `Hello` for `folder`, kept as `protection` (`HelloProtected`
/// unless plain).
fn hello_for(folder: &str, protection: Protection) -> Message {
    let Message::Hello(mut hello) = hello() else {
        unreachable!("hello() is a Hello")
    };
    hello.folder = Name::new(folder).unwrap();
    match protection {
        Protection::Plain => Message::Hello(hello),
        protection => Message::HelloProtected { hello, protection },
    }
}

impl Arena {
    /// Says `first` as mallory; expects a refusal with `code`, returns
    /// its message.
    async fn refused(&self, first: &Message, code: RefuseCode) -> String {
        let (link, _control, answer) = self.open_with(sender_id(), &encode(first)).await;
        link.close(0, b"bye");
        match answer {
            Answer::Reply(Message::Refused(r)) if r.code == code => r.message,
            other => panic!("expected Refused({code:?}), got {other:?}"),
        }
    }

    /// The protection of mallory's `folder`, as a read session answers it.
    async fn asked_protection(&self, folder: &str) -> Protection {
        let open = Message::Open(Open {
            protocol: PROTOCOL_VERSION,
            name: Name::new("mallory").unwrap(),
            folder: Name::new(folder).unwrap(),
            agent: "pair test".into(),
        });
        let (link, mut control, answer) = self.open_with(sender_id(), &encode(&open)).await;
        assert!(
            matches!(answer, Answer::Reply(Message::Opened { .. })),
            "{answer:?}"
        );
        let request = Message::Request(Request::Protection);
        control.send.send(&request).await.unwrap();
        let answer = read(&mut control).await;
        control.send.finish();
        link.close(0, b"done");
        match answer {
            Answer::Reply(Message::FolderProtection(p)) => p,
            other => panic!("expected FolderProtection, got {other:?}"),
        }
    }

    /// What the store has fixed mallory's `folder` to (`None`: nothing).
    fn fixed(&self, folder: &str) -> Option<Protection> {
        let store = &self.shared.store;
        let sender = store
            .sender_by_device(&sender_id().to_string())
            .unwrap()
            .unwrap();
        store
            .recorded_protection(&sender, &Name::new(folder).unwrap())
            .unwrap()
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_protected_folder_is_fixed_by_its_first_run_and_refuses_another_mode_or_key() {
    let arena = Arena::new(4);
    arena.legit_run("a.txt").await;
    // Never sent: plain.
    assert_eq!(arena.asked_protection("vault").await, Protection::Plain);
    // A sealed object travels as an ordinary file at an opaque path.
    let run = arena.connect_with(&hello_for("vault", ENCRYPTED)).await;
    let object = noise(300, 7);
    let hash = *blake3::hash(&object).as_bytes();
    run.stream(&file_entry("3f/a1c2", 300, &object, hash))
        .await
        .assert_stored("3f/a1c2");
    run.finish().await;
    assert_eq!(arena.fixed("vault"), Some(ENCRYPTED));
    assert_eq!(arena.asked_protection("vault").await, ENCRYPTED);
    let stored = std::fs::read(arena.store_dir().join("mallory/vault/3f/a1c2")).unwrap();
    assert_eq!(stored, object);

    let plain = arena
        .refused(
            &hello_for("vault", Protection::Plain),
            RefuseCode::Protection,
        )
        .await;
    assert!(
        plain.starts_with("folder vault of mallory is encrypted with key abababababab…: send it with --protect encrypted"),
        "{plain}"
    );
    let other_key = Protection::Encrypted { key: [0xef; 32] };
    let other = arena
        .refused(&hello_for("vault", other_key), RefuseCode::Protection)
        .await;
    assert!(other.contains("not efefefefefef…"), "{other}");
    let write_only = Protection::WriteOnly { key: [0xab; 32] };
    let mode = arena
        .refused(&hello_for("vault", write_only), RefuseCode::Protection)
        .await;
    assert!(mode.contains("not write-only with key"), "{mode}");
    // The plain folder refuses a protected run.
    let sealed = arena
        .refused(&hello_for("docs", ENCRYPTED), RefuseCode::Protection)
        .await;
    assert!(sealed.contains("was first sent unencrypted"), "{sealed}");
    assert_eq!(arena.fixed("docs"), Some(Protection::Plain));
    // Refused runs were never begun; the folder's own mode still works.
    assert_eq!(arena.run_statuses(), ["complete", "complete"]);
    arena
        .connect_with(&hello_for("vault", ENCRYPTED))
        .await
        .finish()
        .await;
    assert_eq!(arena.fixed("vault"), Some(ENCRYPTED));
    arena.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_busy_or_refused_session_fixes_no_protection() {
    let arena = Arena::new(1);
    let first = arena.connect().await;
    let (link, _control, answer) = arena
        .open_with(sender_id(), &encode(&hello_for("vault", ENCRYPTED)))
        .await;
    link.close(0, b"later");
    assert!(
        matches!(answer, Answer::Reply(Message::Busy { .. })),
        "{answer:?}"
    );
    assert_eq!(arena.fixed("vault"), None);
    first.finish().await;
    // A stranger's protected Hello is refused before anything is looked up
    // for it.
    let stranger = DeviceId::from_spki(b"stranger");
    let (link, _control, answer) = arena
        .open_with(stranger, &encode(&hello_for("vault", ENCRYPTED)))
        .await;
    link.close(0, b"bye");
    assert!(
        matches!(&answer, Answer::Reply(Message::Refused(r)) if r.code == RefuseCode::UnknownSender),
        "{answer:?}"
    );
    assert_eq!(arena.fixed("vault"), None);
    // Nothing was fixed: the folder's first admitted run chooses, here plain.
    let again = tokio::time::timeout(PATIENCE, async {
        loop {
            let first = encode(&hello_for("vault", Protection::Plain));
            let (link, control, answer) = arena.open_with(sender_id(), &first).await;
            match answer {
                Answer::Reply(Message::Welcome(w)) => {
                    return Run {
                        link,
                        control,
                        run_id: w.run_id,
                    }
                }
                _ => {
                    link.close(0, b"later");
                    tokio::time::sleep(Duration::from_millis(10)).await;
                }
            }
        }
    })
    .await
    .expect("the slot was never given back");
    again.finish().await;
    assert_eq!(arena.fixed("vault"), Some(Protection::Plain));
    arena.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_sealed_object_is_kept_as_it_came_and_opens_with_the_folder_key() {
    use ferry_proto::seal::{FolderSecret, Opener, RunSealer, SealedHeader, SealedKind};
    let arena = Arena::new(4);
    let secret = FolderSecret::from_bytes(&[0x42; 64]);
    let public = secret.public();
    let protection = Protection::WriteOnly {
        key: public.key_id(),
    };
    let real = RelPath::from_bytes("notes/plans.txt").unwrap();
    let content = b"meet at noon".to_vec();
    let header = SealedHeader {
        path: real.clone(),
        kind: SealedKind::File,
        mode: 0o640,
        mtime_ns: 1_700_000_000_000_000_000,
        size: content.len() as u64,
    };
    let mut object = Vec::new();
    let mut sealer = RunSealer::new(&public)
        .unwrap()
        .object(header.clone())
        .unwrap();
    sealer.push(&content, &mut object).unwrap();
    sealer.finish(&mut object).unwrap();
    let opaque = public.opaque_path(&real);
    // As the design has it: a regular file, mode 0600, mtime 0.
    let mut stream = encode(&Message::Entry(Entry {
        path: opaque.clone(),
        kind: EntryKind::File {
            size: object.len() as u64,
            content: Content::Inline,
        },
        mtime_ns: 0,
        mode: 0o600,
    }));
    stream.extend(encode(&Message::Data(object.clone())));
    stream.extend(encode(&Message::End {
        hash: *blake3::hash(&object).as_bytes(),
    }));

    let run = arena.connect_with(&hello_for("docs", protection)).await;
    run.stream(&stream).await.assert_stored("sealed object");
    run.finish().await;
    assert_eq!(arena.fixed("docs"), Some(protection));
    assert_eq!(arena.asked_protection("docs").await, protection);
    // The receiver keeps the object byte for byte, under its opaque name.
    assert_eq!(arena.mirror_files(), [opaque.to_string()]);
    let kept = std::fs::read(arena.mirror().join(opaque.to_string())).unwrap();
    assert_eq!(kept, object);
    let (opened, plain) = Opener::new(&secret).open(&kept).unwrap();
    assert_eq!((opened, plain), (header, content));
    arena.stop().await;
}
