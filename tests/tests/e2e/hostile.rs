//! A hostile but admitted sender: hand-made frames and raw bytes straight at
//! the receiver. Each case must be answered `Failed`/`Refused` (or the stream
//! closed), write nothing outside the sender's namespace, leave nothing
//! partial in the mirror or in staging, and leave the receiver serving.

use std::collections::BTreeMap;
use std::os::unix::ffi::OsStrExt;
use std::path::{Path, PathBuf};
use std::time::Duration;

use anyhow::{bail, Context};
use ferry_agent::identity::Identity;
use ferry_agent::receiver::Admission;
use ferry_agent::stream::{Channel, FramedRecv};
use ferry_agent::transport;
use ferry_proto::fuzz_support::{raw_entry, raw_frame, RawKind};
use ferry_proto::{
    frame, Content, Entry, EntryKind, FailCode, Message, Name, RefuseCode, RelPath, RunReport,
};
use ferry_tests::tree::{self, Node};

use crate::sync::pseudo_random;
use crate::util::{send_config, TestReceiver, TestSender};

const SECRET: &str = "hostile tests pairing secret";
/// The hostile sender's name: its namespace is `store/mallory/docs`.
const HOSTILE: &str = "mallory";
/// How long any one answer may take.
const ANSWER_TIMEOUT: Duration = Duration::from_secs(15);

/// A receiver that admits the hostile sender by its device id (and proper
/// senders by pairing), and a snapshot of everything outside the hostile
/// namespace.
struct Arena {
    dir: tempfile::TempDir,
    receiver: TestReceiver,
    /// An empty directory outside the store that symlinks may point at.
    outside: PathBuf,
    /// A path outside the temp dir that an absolute wire path names.
    tmp_target: PathBuf,
    before: BTreeMap<Vec<u8>, Node>,
}

/// True if `path` is `prefix` or below it.
fn is_under(path: &[u8], prefix: &[u8]) -> bool {
    path == prefix || (path.starts_with(prefix) && path.get(prefix.len()) == Some(&b'/'))
}

impl Arena {
    async fn new() -> anyhow::Result<Arena> {
        let dir = tempfile::tempdir()?;
        let id = Identity::load_or_create(&dir.path().join("mallory-state"))?.id;
        let receiver = TestReceiver::start(
            dir.path(),
            8,
            Admission {
                allow: vec![id],
                pairing_secret: Some(SECRET.into()),
            },
        )
        .await?;
        let outside = dir.path().join("outside");
        std::fs::create_dir(&outside)?;
        let tmp_target = std::env::temp_dir().join(format!(
            "ferry-e2e-escape-{}-{}",
            std::process::id(),
            dir.path()
                .file_name()
                .map(|n| n.to_string_lossy().into_owned())
                .unwrap_or_default()
        ));
        let mut arena = Arena {
            dir,
            receiver,
            outside,
            tmp_target,
            before: BTreeMap::new(),
        };
        arena.before = arena.outside_namespace()?;
        Ok(arena)
    }

    /// Everything in the temp dir except the store's internals and the
    /// hostile sender's namespace. The walk does not enter them: the
    /// running receiver creates and removes files there (staging, its
    /// records) at times of its own, and a file removed between the listing
    /// of its directory and its read failed the walk under load.
    fn outside_namespace(&self) -> anyhow::Result<BTreeMap<Vec<u8>, Node>> {
        tree::snapshot_except(self.dir.path(), |path| {
            is_under(path, b"store/.ferry") || is_under(path, b"store/mallory")
        })
    }

    /// Fails if anything outside the hostile namespace changed, or if the
    /// absolute target outside the temp dir appeared.
    fn assert_nothing_outside(&self) -> anyhow::Result<()> {
        let after = self.outside_namespace()?;
        if after != self.before {
            let changed: Vec<String> = after
                .iter()
                .filter(|(p, n)| self.before.get(*p) != Some(*n))
                .map(|(p, _)| String::from_utf8_lossy(p).into_owned())
                .chain(
                    self.before
                        .keys()
                        .filter(|p| !after.contains_key(*p))
                        .map(|p| format!("(gone) {}", String::from_utf8_lossy(p))),
                )
                .collect();
            bail!("written outside the sender's namespace: {changed:?}");
        }
        assert!(
            std::fs::symlink_metadata(&self.tmp_target).is_err(),
            "{} was created",
            self.tmp_target.display()
        );
        assert_eq!(std::fs::read_dir(&self.outside)?.count(), 0);
        Ok(())
    }

    /// The hostile sender's mirror.
    fn mirror(&self) -> PathBuf {
        self.receiver.mirror(HOSTILE, "docs")
    }

    /// Files in the mirror (relative paths), empty if it does not exist.
    fn mirror_files(&self) -> anyhow::Result<Vec<String>> {
        if !self.mirror().exists() {
            return Ok(Vec::new());
        }
        Ok(tree::snapshot(&self.mirror())?
            .into_iter()
            .filter(|(_, n)| matches!(n, Node::File { .. }))
            .map(|(p, _)| String::from_utf8_lossy(&p).into_owned())
            .collect())
    }

    /// Fails unless `.ferry/staging` is empty (polled briefly: the staging
    /// file is dropped as the entry's task ends).
    fn assert_staging_empty(&self) -> anyhow::Result<()> {
        let staging = self.receiver.store_dir.join(".ferry/staging");
        let empty = crate::util::poll_until(Duration::from_secs(5), || {
            let n = std::fs::read_dir(&staging).ok()?.count();
            (n == 0).then_some(())
        });
        if empty.is_none() {
            let left: Vec<_> = std::fs::read_dir(&staging)?
                .filter_map(|e| e.ok().map(|e| e.file_name()))
                .collect();
            bail!("staging files left behind: {left:?}");
        }
        Ok(())
    }

    /// Connects as the hostile sender and gets admitted.
    async fn connect(&self) -> anyhow::Result<Hostile> {
        let identity = Identity::load_or_create(&self.dir.path().join("mallory-state"))?;
        let addr = self.receiver.addr;
        let endpoint = transport::client_endpoint(&identity, addr)?;
        let conn = transport::connect(&endpoint, addr).await?;
        let (control, answer) = crate::util::hello(&conn, HOSTILE, None).await?;
        match answer {
            Message::Welcome(_) => Ok(Hostile {
                _endpoint: endpoint,
                conn,
                control,
            }),
            other => bail!("expected Welcome, got {other:?}"),
        }
    }
}

/// An admitted session driven by hand.
struct Hostile {
    _endpoint: quinn::Endpoint,
    conn: quinn::Connection,
    control: Channel,
}

/// What the receiver did with a stream.
#[derive(Debug)]
enum Answer {
    /// It answered this message.
    Reply(Message),
    /// It ended or reset the stream without a message (why, as the read
    /// saw it; shown by `Debug` in failure messages).
    Closed(#[allow(dead_code)] String),
}

impl Answer {
    /// Fails unless the answer is `Failed` with `code`.
    fn assert_failed(&self, code: FailCode, case: &str) {
        match self {
            Answer::Reply(Message::Failed(f)) if f.code == code => {}
            other => panic!("{case}: expected Failed({code:?}), got {other:?}"),
        }
    }

    /// Fails unless the answer is a failure (any code) or a closed stream.
    fn assert_rejected(&self, case: &str) {
        match self {
            Answer::Reply(Message::Failed(_) | Message::Refused(_)) | Answer::Closed(_) => {}
            other => panic!("{case}: expected a rejection, got {other:?}"),
        }
    }
}

/// Writes `bytes` on a fresh stream pair, ends it, and reads one answer.
async fn exchange(
    (mut send, recv): (quinn::SendStream, quinn::RecvStream),
    bytes: &[u8],
) -> anyhow::Result<Answer> {
    let mut recv = FramedRecv::new(recv);
    let talk = async {
        // The receiver may stop reading as soon as it has seen enough, so a
        // failed write is part of the game; the answer is what counts.
        let _ = send.write_all(bytes).await;
        let _ = send.finish();
        recv.recv().await
    };
    Ok(
        match tokio::time::timeout(ANSWER_TIMEOUT, talk)
            .await
            .context("the receiver did not answer")?
        {
            Ok(Some(message)) => Answer::Reply(message),
            Ok(None) => Answer::Closed("finished".into()),
            Err(e) => Answer::Closed(e.to_string()),
        },
    )
}

impl Hostile {
    /// Opens a file stream, writes `bytes` as they are, and reads the answer.
    async fn file_stream(&self, bytes: &[u8]) -> anyhow::Result<Answer> {
        exchange(self.conn.open_bi().await?, bytes).await
    }

    /// Ends the run properly: the session must still work.
    async fn finish(mut self) -> anyhow::Result<()> {
        self.control
            .send
            .send(&Message::Finish(RunReport::default()))
            .await?;
        match tokio::time::timeout(ANSWER_TIMEOUT, self.control.recv.recv_message()).await?? {
            Message::Committed { .. } => {}
            other => bail!("expected Committed after the hostile streams, got {other:?}"),
        }
        self.conn.close(quinn::VarInt::from_u32(0), b"done");
        Ok(())
    }
}

fn encode(message: &Message) -> anyhow::Result<Vec<u8>> {
    Ok(frame::encode(message)?)
}

/// The frame of a file's `Entry` (mtime 0, mode 0o644).
fn file_header(path: &str, size: u64, content: Content) -> anyhow::Result<Vec<u8>> {
    encode(&Message::Entry(Entry {
        path: RelPath::from_bytes(path)?,
        kind: EntryKind::File { size, content },
        mtime_ns: 0,
        mode: 0o644,
    }))
}

/// A valid file entry with inline content: Entry, Data, End.
fn file_entry(
    path: &str,
    declared: u64,
    content: &[u8],
    hash: [u8; 32],
) -> anyhow::Result<Vec<u8>> {
    let mut out = file_header(path, declared, Content::Inline)?;
    out.extend(encode(&Message::Data(content.to_vec()))?);
    out.extend(encode(&Message::End { hash })?);
    Ok(out)
}

/// Case 1: paths that escape the namespace, absolute paths, NUL bytes.
async fn traversal(arena: &Arena) -> anyhow::Result<()> {
    let hostile = arena.connect().await?;
    let abs_in_dir = arena.dir.path().join("abs-escape");
    let outside = arena.outside.as_os_str().as_bytes().to_vec();
    let paths: Vec<Vec<u8>> = vec![
        b"../../escape".to_vec(),
        b"../../../escape".to_vec(),
        b"ok/../../../../escape".to_vec(),
        arena.tmp_target.as_os_str().as_bytes().to_vec(),
        abs_in_dir.as_os_str().as_bytes().to_vec(),
        b"a\0b".to_vec(),
        b"nul\0/../../../escape".to_vec(),
        b"".to_vec(),
        b"./x".to_vec(),
        b"a//b".to_vec(),
    ];
    let content = b"pwned";
    let hash = *blake3::hash(content).as_bytes();
    for path in &paths {
        let shown = String::from_utf8_lossy(path).into_owned();
        let mut file = raw_entry(path, RawKind::File { size: 5 });
        file.extend(encode(&Message::Data(content.to_vec()))?);
        file.extend(encode(&Message::End { hash })?);
        let kinds = [
            ("file", file),
            ("dir", raw_entry(path, RawKind::Dir)),
            (
                "symlink",
                raw_entry(path, RawKind::Symlink { target: &outside }),
            ),
        ];
        for (kind, bytes) in kinds {
            hostile
                .file_stream(&bytes)
                .await?
                .assert_failed(FailCode::BadRequest, &format!("{kind} at {shown:?}"));
        }
    }
    hostile.finish().await?;
    arena.assert_nothing_outside()?;
    assert_eq!(arena.mirror_files()?, Vec::<String>::new());
    assert!(
        std::fs::symlink_metadata(arena.dir.path().join("store/escape")).is_err()
            && std::fs::symlink_metadata(arena.dir.path().join("escape")).is_err()
    );
    arena.assert_staging_empty()
}

/// Case 2: frame headers announcing more than `MAX_FRAME`.
async fn oversized_frames(arena: &Arena) -> anyhow::Result<()> {
    let hostile = arena.connect().await?;
    let mut huge = 0xFFFF_FFFFu32.to_be_bytes().to_vec();
    huge.extend(vec![0u8; 64 * 1024]);
    hostile
        .file_stream(&huge)
        .await?
        .assert_failed(FailCode::BadRequest, "0xFFFFFFFF frame header");
    let mut just_over = ((frame::MAX_FRAME + 1) as u32).to_be_bytes().to_vec();
    just_over.extend(vec![0u8; 1024]);
    hostile
        .file_stream(&just_over)
        .await?
        .assert_failed(FailCode::BadRequest, "MAX_FRAME + 1 frame header");
    // After a valid entry header, in place of its content.
    let mut after_entry = file_header("big-frame.bin", 1 << 20, Content::Inline)?;
    after_entry.extend(encode(&Message::Data(vec![1; 1000]))?);
    after_entry.extend(0xFFFF_FFF0u32.to_be_bytes());
    after_entry.extend(vec![0u8; 4096]);
    hostile
        .file_stream(&after_entry)
        .await?
        .assert_failed(FailCode::BadRequest, "oversized Data frame");
    hostile.finish().await?;
    arena.assert_nothing_outside()?;
    assert_eq!(arena.mirror_files()?, Vec::<String>::new());
    arena.assert_staging_empty()
}

/// Case 3: garbage on file streams and on the control stream.
async fn garbage(arena: &Arena) -> anyhow::Result<()> {
    let hostile = arena.connect().await?;
    let noise = pseudo_random(4096, 3);
    hostile
        .file_stream(&noise)
        .await?
        .assert_rejected("raw garbage on a file stream");
    hostile
        .file_stream(&raw_frame(&pseudo_random(1000, 4)))
        .await?
        .assert_failed(FailCode::BadRequest, "framed garbage on a file stream");
    let mut after_entry = file_header("garbage-after.bin", 10_000, Content::Inline)?;
    after_entry.extend(raw_frame(&pseudo_random(500, 5)));
    hostile
        .file_stream(&after_entry)
        .await?
        .assert_failed(FailCode::BadRequest, "garbage after an entry header");
    // Out of order: content without an entry, a control message on a file stream.
    hostile
        .file_stream(&encode(&Message::Data(b"orphan".to_vec()))?)
        .await?
        .assert_failed(FailCode::BadRequest, "Data without Entry");
    hostile
        .file_stream(&encode(&Message::Finish(RunReport::default()))?)
        .await?
        .assert_failed(FailCode::BadRequest, "Finish on a file stream");
    hostile.finish().await?;

    // Garbage in place of Hello, raw and framed: refused, no run recorded.
    let runs_before = arena.receiver.store.runs(None)?.len();
    let identity = Identity::load_or_create(&arena.dir.path().join("mallory-state"))?;
    for (case, bytes) in [
        ("raw garbage instead of Hello", pseudo_random(4096, 6)),
        (
            "framed garbage instead of Hello",
            raw_frame(&pseudo_random(700, 7)),
        ),
    ] {
        let endpoint = transport::client_endpoint(&identity, arena.receiver.addr)?;
        let conn = transport::connect(&endpoint, arena.receiver.addr).await?;
        let answer = exchange(conn.open_bi().await?, &bytes).await?;
        match &answer {
            Answer::Reply(Message::Refused(r)) => {
                assert_eq!(r.code, RefuseCode::BadRequest, "{case}")
            }
            Answer::Closed(_) => {}
            other => panic!("{case}: expected Refused(BadRequest), got {other:?}"),
        }
        conn.close(quinn::VarInt::from_u32(0), b"bye");
    }
    assert_eq!(arena.receiver.store.runs(None)?.len(), runs_before);
    arena.assert_nothing_outside()?;
    assert_eq!(arena.mirror_files()?, Vec::<String>::new());
    arena.assert_staging_empty()
}

/// Case 4: content longer or shorter than declared, a wrong hash, a stream
/// cut short: nothing in the mirror, nothing left in staging.
async fn bad_content(arena: &Arena) -> anyhow::Result<()> {
    let hostile = arena.connect().await?;
    let long = pseudo_random(20, 8);
    hostile
        .file_stream(&file_entry(
            "too-long.txt",
            10,
            &long,
            *blake3::hash(&long).as_bytes(),
        )?)
        .await?
        .assert_failed(FailCode::SizeMismatch, "more data than declared");
    let short = pseudo_random(10, 9);
    hostile
        .file_stream(&file_entry(
            "too-short.txt",
            100,
            &short,
            *blake3::hash(&short).as_bytes(),
        )?)
        .await?
        .assert_failed(FailCode::SizeMismatch, "less data than declared");
    hostile
        .file_stream(&file_entry("bad-hash.txt", 5, b"hello", [0; 32])?)
        .await?
        .assert_failed(FailCode::HashMismatch, "wrong End hash");
    // The stream ends in the middle of the content. (Large enough to be
    // streamed to staging rather than gathered in memory.)
    let mut cut = file_header("cut.txt", 1 << 20, Content::Inline)?;
    cut.extend(encode(&Message::Data(vec![7; 10]))?);
    hostile
        .file_stream(&cut)
        .await?
        .assert_rejected("stream ended inside the content");
    // And one reset by the sender in the middle of the content.
    let (mut send, recv) = hostile.conn.open_bi().await?;
    send.write_all(&cut).await?;
    let staging = arena.receiver.store_dir.join(".ferry/staging");
    let staged = crate::util::poll_until(Duration::from_secs(10), || {
        let n = std::fs::read_dir(&staging).ok()?.count();
        (n > 0).then_some(())
    });
    assert!(staged.is_some(), "the receiver never staged cut.txt");
    send.reset(quinn::VarInt::from_u32(9))?;
    let mut recv = FramedRecv::new(recv);
    let answer = tokio::time::timeout(ANSWER_TIMEOUT, recv.recv()).await?;
    assert!(
        matches!(answer, Ok(Some(Message::Failed(_))) | Ok(None) | Err(_)),
        "reset stream: {answer:?}"
    );
    hostile.finish().await?;
    arena.assert_staging_empty()?;
    arena.assert_nothing_outside()?;
    assert_eq!(arena.mirror_files()?, Vec::<String>::new());
    Ok(())
}

/// Every answer on a bundle stream (`bytes` after `Bundle`), in order, until
/// the receiver ends its side.
async fn bundle_answers(hostile: &Hostile, bytes: &[u8]) -> anyhow::Result<Vec<Answer>> {
    let (mut send, recv) = hostile.conn.open_bi().await?;
    let mut recv = FramedRecv::new(recv);
    let talk = async {
        let mut all = encode(&Message::Bundle)?;
        all.extend_from_slice(bytes);
        // As in `exchange`: the receiver may stop reading early.
        let _ = send.write_all(&all).await;
        let _ = send.finish();
        let mut answers = Vec::new();
        loop {
            match recv.recv().await {
                Ok(Some(message)) => answers.push(Answer::Reply(message)),
                Ok(None) => return anyhow::Ok(answers),
                Err(e) => {
                    answers.push(Answer::Closed(e.to_string()));
                    return Ok(answers);
                }
            }
        }
    };
    tokio::time::timeout(ANSWER_TIMEOUT, talk)
        .await
        .context("the receiver did not answer the bundle")?
}

/// Bundles that break the rules partway: what came before is stored, the
/// entry that breaks them is refused, nothing after it is read, and an entry
/// that merely fails (wrong hash) does not end the bundle.
async fn bad_bundles(arena: &Arena) -> anyhow::Result<()> {
    let hostile = arena.connect().await?;
    let ok = |name: &str, text: &str| {
        file_entry(
            name,
            text.len() as u64,
            text.as_bytes(),
            *blake3::hash(text.as_bytes()).as_bytes(),
        )
    };
    let stored = |a: &Answer, case: &str| match a {
        Answer::Reply(Message::Stored) => {}
        other => panic!("{case}: expected Stored, got {other:?}"),
    };

    // A wrong hash fails one entry; the bundle goes on.
    let mut bytes = ok("b/one.txt", "first")?;
    bytes.extend(file_entry("b/two.txt", 5, b"wrong", [0; 32])?);
    bytes.extend(ok("b/three.txt", "third")?);
    let answers = bundle_answers(&hostile, &bytes).await?;
    assert_eq!(answers.len(), 3, "{answers:?}");
    stored(&answers[0], "first entry");
    answers[1].assert_failed(FailCode::HashMismatch, "wrong hash in a bundle");
    stored(&answers[2], "entry after a failed one");

    // An offer, a file too large for a bundle, a compressed piece that is
    // not zstd: each ends its bundle, after what came before was stored.
    let offer = file_header("b/offered.txt", 5, Content::Offer { hash: [1; 32] })?;
    let mut oversized = file_header("b/huge.bin", 1 << 20, Content::Inline)?;
    oversized.extend(encode(&Message::Data(vec![1; 1000]))?);
    let mut garbage = file_header("b/garbage.txt", 5, Content::Inline)?;
    garbage.extend(encode(&Message::Zstream(b"not zstd at all".to_vec()))?);
    for (case, breaking) in [
        ("an offer in a bundle", offer),
        ("a file too large for a bundle", oversized),
        ("a Zstream piece that is not zstd", garbage),
    ] {
        let mut bytes = ok("b/before.txt", case)?;
        bytes.extend(breaking);
        bytes.extend(ok("b/after.txt", "never read")?);
        let answers = bundle_answers(&hostile, &bytes).await?;
        assert!(answers.len() == 2, "{case}: {answers:?}");
        stored(&answers[0], case);
        answers[1].assert_failed(FailCode::BadRequest, case);
    }
    hostile.finish().await?;
    arena.assert_staging_empty()?;
    arena.assert_nothing_outside()?;
    assert_eq!(
        arena.mirror_files()?,
        ["b/before.txt", "b/one.txt", "b/three.txt"]
    );
    Ok(())
}

/// Finds, below `dir`, a symlink pointing at `target`.
fn find_symlink_to(dir: &Path, target: &Path) -> anyhow::Result<Option<Vec<u8>>> {
    if !dir.exists() {
        return Ok(None);
    }
    Ok(tree::snapshot(dir)?.into_iter().find_map(|(p, n)| match n {
        Node::Symlink { target: t } if t == target.as_os_str().as_bytes() => Some(p),
        _ => None,
    }))
}

/// Case 5: a symlink the sender planted legitimately is never written
/// through; it is archived and replaced by a real directory.
async fn planted_symlink(arena: &Arena) -> anyhow::Result<()> {
    let hostile = arena.connect().await?;
    let outside = arena.outside.as_os_str().as_bytes().to_vec();
    let mirror = arena.mirror();
    for name in ["evil", "evil-dir", "evil-link"] {
        let answer = hostile
            .file_stream(&encode(&Message::Entry(Entry {
                path: RelPath::from_bytes(name)?,
                kind: EntryKind::Symlink {
                    target: outside.clone(),
                },
                mtime_ns: 0,
                mode: 0o777,
            }))?)
            .await?;
        assert!(
            matches!(answer, Answer::Reply(Message::Stored)),
            "{name}: {answer:?}"
        );
        assert_eq!(
            std::fs::read_link(mirror.join(name))?,
            arena.outside,
            "{name} was not planted"
        );
    }
    let content = b"through the looking glass";
    let answer = hostile
        .file_stream(&file_entry(
            "evil/file.txt",
            content.len() as u64,
            content,
            *blake3::hash(content).as_bytes(),
        )?)
        .await?;
    assert!(
        matches!(answer, Answer::Reply(Message::Stored)),
        "{answer:?}"
    );
    let dir_entry = Entry {
        path: RelPath::from_bytes("evil-dir/sub/deeper")?,
        kind: EntryKind::Dir,
        mtime_ns: 0,
        mode: 0o755,
    };
    let answer = hostile
        .file_stream(&encode(&Message::Entry(dir_entry))?)
        .await?;
    assert!(
        matches!(answer, Answer::Reply(Message::Stored)),
        "{answer:?}"
    );
    let link_entry = Entry {
        path: RelPath::from_bytes("evil-link/inner")?,
        kind: EntryKind::Symlink {
            target: b"/etc/passwd".to_vec(),
        },
        mtime_ns: 0,
        mode: 0o777,
    };
    let answer = hostile
        .file_stream(&encode(&Message::Entry(link_entry))?)
        .await?;
    assert!(
        matches!(answer, Answer::Reply(Message::Stored)),
        "{answer:?}"
    );
    hostile.finish().await?;

    // Nothing went through the links.
    arena.assert_nothing_outside()?;
    // Real directories now, with the content inside the mirror.
    for name in ["evil", "evil-dir", "evil-link"] {
        let meta = std::fs::symlink_metadata(mirror.join(name))?;
        assert!(meta.is_dir(), "{name} is not a real directory: {meta:?}");
    }
    assert_eq!(std::fs::read(mirror.join("evil/file.txt"))?, content);
    assert!(std::fs::symlink_metadata(mirror.join("evil-dir/sub/deeper"))?.is_dir());
    assert!(std::fs::symlink_metadata(mirror.join("evil-link/inner"))?
        .file_type()
        .is_symlink());
    // The old symlinks are kept in the versions area and in the catalog.
    let versions_dir = arena
        .receiver
        .store_dir
        .join(".ferry/versions")
        .join(HOSTILE);
    let archived = find_symlink_to(&versions_dir, &arena.outside)?;
    assert!(
        archived.is_some_and(|p| String::from_utf8_lossy(&p).contains("evil")),
        "the planted symlink is not in {}",
        versions_dir.display()
    );
    let store = &arena.receiver.store;
    let record = store
        .sender_by_name(&Name::new(HOSTILE)?)?
        .context("hostile sender not registered")?;
    let ns = store.namespace(&record, &Name::new("docs")?);
    let versions = store.versions(&ns, &RelPath::from_bytes("evil")?)?;
    let old = versions
        .iter()
        .find(|v| !v.current && v.kind == "symlink")
        .with_context(|| format!("no archived symlink version of evil: {versions:?}"))?;
    assert_eq!(std::fs::read_link(&old.location)?, arena.outside);
    arena.assert_staging_empty()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn traversal_absolute_and_nul_paths_are_refused_and_write_nothing() -> anyhow::Result<()> {
    let arena = Arena::new().await?;
    traversal(&arena).await?;
    arena.receiver.stop().await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_oversized_frame_is_refused_and_the_receiver_keeps_serving() -> anyhow::Result<()> {
    let arena = Arena::new().await?;
    oversized_frames(&arena).await?;
    legit_run(&arena).await?;
    arena.receiver.stop().await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn garbage_on_file_and_control_streams_is_refused() -> anyhow::Result<()> {
    let arena = Arena::new().await?;
    garbage(&arena).await?;
    arena.receiver.stop().await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn wrong_size_or_hash_leaves_nothing_in_mirror_or_staging() -> anyhow::Result<()> {
    let arena = Arena::new().await?;
    bad_content(&arena).await?;
    arena.receiver.stop().await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_bundle_that_breaks_the_rules_ends_and_keeps_what_came_before() -> anyhow::Result<()> {
    let arena = Arena::new().await?;
    bad_bundles(&arena).await?;
    legit_run(&arena).await?;
    arena.receiver.stop().await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_planted_symlink_is_archived_never_written_through() -> anyhow::Result<()> {
    let arena = Arena::new().await?;
    planted_symlink(&arena).await?;
    arena.receiver.stop().await
}

/// A proper sender, paired, sends a small tree to the arena's receiver.
async fn legit_run(arena: &Arena) -> anyhow::Result<()> {
    let sender = TestSender::new(arena.dir.path(), "laptop")?;
    tree::write(&sender.source, "a.txt", "alpha")?;
    tree::write(&sender.source, "sub/b.bin", pseudo_random(300_000, 10))?;
    let summary = send_config(&sender.with_secret(&arena.receiver, SECRET)?).await?;
    assert_eq!(summary.errors, 0, "{summary:?}");
    assert_eq!(summary.files_sent, 2, "{summary:?}");
    tree::assert_same(&sender.source, &arena.receiver.mirror("laptop", "docs"))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_receiver_survives_every_hostile_case() -> anyhow::Result<()> {
    let arena = Arena::new().await?;
    traversal(&arena).await?;
    oversized_frames(&arena).await?;
    garbage(&arena).await?;
    bad_content(&arena).await?;
    bad_bundles(&arena).await?;
    planted_symlink(&arena).await?;
    legit_run(&arena).await?;
    let runs = arena.receiver.store.runs(None)?;
    assert!(
        runs.iter()
            .any(|r| r.sender.as_str() == "laptop" && r.status == "complete"),
        "{runs:?}"
    );
    arena.receiver.stop().await
}
