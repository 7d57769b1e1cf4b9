//! Limits and abuse: the hello timeout, the cap on connections still in the
//! handshake, the longest path, the streams in flight, and a flood of
//! unknown peers while a known sender runs.

use std::net::SocketAddr;
use std::os::unix::ffi::OsStrExt;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::{Duration, Instant};

use anyhow::{bail, Context};
use ferry_agent::config::SenderConfig;
use ferry_agent::identity::{DeviceId, Identity};
use ferry_agent::receiver::{Admission, Receiver, MAX_PENDING_SESSIONS, MAX_STREAMS_PER_SENDER};
use ferry_agent::store::Store;
use ferry_agent::stream::{Channel, FramedRecv};
use ferry_agent::transport;
use ferry_proto::{
    frame, Content, Entry, EntryKind, FailCode, Message, Name, RefuseCode, RelPath, RunReport,
    MAX_COMPONENT_LEN, MAX_PATH_LEN,
};
use ferry_tests::tree;
use tokio_util::sync::CancellationToken;

use crate::util::{hello, send_config, trace, TestSender};

const SECRET: &str = "limits tests pairing secret";
/// How long any one answer may take.
const ANSWER_TIMEOUT: Duration = Duration::from_secs(15);

/// A receiver with a chosen hello timeout (the e2e `TestReceiver` always
/// uses the default of 10 s).
struct Limited {
    addr: SocketAddr,
    store_dir: PathBuf,
    store: Arc<Store>,
    token: CancellationToken,
    task: tokio::task::JoinHandle<()>,
}

impl Limited {
    async fn start(
        dir: &Path,
        max_clients: usize,
        allow: Vec<DeviceId>,
        hello_timeout: Duration,
    ) -> anyhow::Result<Limited> {
        trace();
        let store_dir = dir.join("store");
        let identity = Identity::load_or_create(&dir.join("rstate"))?;
        let store = {
            let store_dir = store_dir.clone();
            tokio::task::spawn_blocking(move || Store::open(&store_dir)).await??
        };
        let admission = Admission {
            allow,
            pairing_secret: Some(SECRET.into()),
        };
        let receiver = Receiver::bind_with(
            identity,
            store,
            "127.0.0.1:0".parse()?,
            max_clients,
            admission,
        )?
        .with_hello_timeout(hello_timeout);
        let addr = receiver.local_addr()?;
        let store = receiver.store();
        let token = CancellationToken::new();
        let task = tokio::spawn(receiver.serve(token.clone()));
        Ok(Limited {
            addr,
            store_dir,
            store,
            token,
            task,
        })
    }

    async fn stop(self) -> anyhow::Result<()> {
        self.token.cancel();
        drop(self.store);
        self.task.await?;
        Ok(())
    }

    /// Settings of a sender allowed by id, sending `dir/<name>-src`.
    fn sender(&self, dir: &Path, name: &str) -> anyhow::Result<(TestSender, SenderConfig)> {
        let sender = TestSender::new(dir, name)?;
        let config = SenderConfig {
            host: Some(self.addr.ip().to_string()),
            port: Some(self.addr.port()),
            source: Some(sender.source.clone()),
            name: Some(name.into()),
            folder: Some("docs".into()),
            state: Some(sender.state.clone()),
            once: Some(true),
            ..Default::default()
        };
        Ok((sender, config))
    }
}

/// A connection that has passed the TLS handshake, from `identity`.
async fn handshake(
    identity: &Identity,
    addr: SocketAddr,
) -> anyhow::Result<(quinn::Endpoint, quinn::Connection)> {
    let endpoint = transport::client_endpoint(identity, addr)?;
    let conn = transport::connect(&endpoint, addr).await?;
    Ok((endpoint, conn))
}

/// Waits until the receiver closes `conn`; how long that took.
async fn closed_by_receiver(
    conn: &quinn::Connection,
    within: Duration,
) -> anyhow::Result<Duration> {
    let start = Instant::now();
    let reason = tokio::time::timeout(within, conn.closed())
        .await
        .context("the receiver did not drop the connection")?;
    match reason {
        quinn::ConnectionError::ApplicationClosed(_) => Ok(start.elapsed()),
        other => bail!("connection ended otherwise than closed by the receiver: {other}"),
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_peer_that_never_says_hello_is_dropped_after_the_hello_timeout() -> anyhow::Result<()> {
    let dir = tempfile::tempdir()?;
    let known = Identity::load_or_create(&dir.path().join("known-state"))?.id;
    let timeout = Duration::from_millis(600);
    let receiver = Limited::start(dir.path(), 1, vec![known], timeout).await?;
    let stranger = Identity::generate()?;
    let started = Instant::now();
    // One opens no stream at all, one opens the control stream and sends
    // half a frame header.
    let (_e1, silent) = handshake(&stranger, receiver.addr).await?;
    let (_e2, halting) = handshake(&stranger, receiver.addr).await?;
    let (mut send, _recv) = halting.open_bi().await?;
    send.write_all(&[0, 0]).await?;

    // Neither holds the only client slot: a known sender runs meanwhile.
    let (sender, config) = receiver.sender(dir.path(), "known")?;
    tree::write(&sender.source, "a.txt", "a")?;
    send_config(&config).await?;
    tree::assert_same(&sender.source, &receiver.store_dir.join("known/docs"))?;

    for conn in [&silent, &halting] {
        closed_by_receiver(conn, Duration::from_secs(10)).await?;
    }
    let waited = started.elapsed();
    assert!(
        waited >= timeout - Duration::from_millis(100),
        "dropped after {waited:?}, before the {timeout:?} timeout"
    );
    receiver.stop().await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn connections_past_the_pending_cap_are_refused_and_the_cap_frees_up() -> anyhow::Result<()> {
    let dir = tempfile::tempdir()?;
    let known = Identity::load_or_create(&dir.path().join("known-state"))?.id;
    let timeout = Duration::from_secs(5);
    let receiver = Limited::start(dir.path(), 1, vec![known], timeout).await?;
    let stranger = Identity::generate()?;
    let endpoint = transport::client_endpoint(&stranger, receiver.addr)?;
    // Fill every pending slot with connections that never say Hello.
    let started = Instant::now();
    let mut connecting = tokio::task::JoinSet::new();
    for _ in 0..MAX_PENDING_SESSIONS {
        let (endpoint, addr) = (endpoint.clone(), receiver.addr);
        connecting.spawn(async move { transport::connect(&endpoint, addr).await });
    }
    let mut silent = Vec::new();
    while let Some(conn) = connecting.join_next().await {
        silent.push(conn??);
    }
    // The next one is refused at once, not queued.
    let refused = transport::connect(&endpoint, receiver.addr).await;
    assert!(
        started.elapsed() < timeout,
        "filling the slots took {:?}, longer than the hello timeout: the test proves nothing",
        started.elapsed()
    );
    assert!(refused.is_err(), "connection past the cap was accepted");
    // Once the silent ones time out, a known sender gets in.
    for conn in &silent {
        closed_by_receiver(conn, Duration::from_secs(15)).await?;
    }
    let (sender, config) = receiver.sender(dir.path(), "known")?;
    tree::write(&sender.source, "a.txt", "a")?;
    send_config(&config).await?;
    tree::assert_same(&sender.source, &receiver.store_dir.join("known/docs"))?;
    receiver.stop().await
}

/// A path of exactly `len` bytes: components of [`MAX_COMPONENT_LEN`] bytes
/// where they fit.
fn long_path(len: usize) -> Vec<u8> {
    let mut p = Vec::new();
    while len - p.len() > MAX_COMPONENT_LEN + 1 {
        p.extend(std::iter::repeat_n(b'p', MAX_COMPONENT_LEN));
        p.push(b'/');
    }
    // What is left (at most 256 bytes) as one or two components.
    let rest = len - p.len();
    if rest > MAX_COMPONENT_LEN {
        p.extend(std::iter::repeat_n(b'q', rest - 2));
        p.extend_from_slice(b"/r");
    } else {
        p.extend(std::iter::repeat_n(b'q', rest));
    }
    p
}

/// An admitted connection driven by hand.
struct Admitted {
    _endpoint: quinn::Endpoint,
    conn: quinn::Connection,
    control: Channel,
}

impl Admitted {
    async fn connect(state: &Path, addr: SocketAddr, name: &str) -> anyhow::Result<Admitted> {
        let identity = Identity::load_or_create(state)?;
        let (endpoint, conn) = handshake(&identity, addr).await?;
        match hello(&conn, name, None).await? {
            (control, Message::Welcome(_)) => Ok(Admitted {
                _endpoint: endpoint,
                conn,
                control,
            }),
            (_, other) => bail!("expected Welcome, got {other:?}"),
        }
    }

    async fn finish(mut self) -> anyhow::Result<()> {
        self.control
            .send
            .send(&Message::Finish(RunReport::default()))
            .await?;
        match tokio::time::timeout(ANSWER_TIMEOUT, self.control.recv.recv_message()).await?? {
            Message::Committed { .. } => {}
            other => bail!("expected Committed, got {other:?}"),
        }
        self.conn.close(quinn::VarInt::from_u32(0), b"done");
        Ok(())
    }
}

/// `Entry` (inline, `content.len()` bytes), `Data`, `End` for a file.
fn file_frames(path: &[u8], content: &[u8]) -> anyhow::Result<Vec<u8>> {
    let mut out = frame::encode(&Message::Entry(Entry {
        path: RelPath::from_bytes(path)?,
        kind: EntryKind::File {
            size: content.len() as u64,
            content: Content::Inline,
        },
        mtime_ns: 0,
        mode: 0o644,
    }))?;
    out.extend(frame::encode(&Message::Data(content.to_vec()))?);
    out.extend(frame::encode(&Message::End {
        hash: *blake3::hash(content).as_bytes(),
    })?);
    Ok(out)
}

/// Writes `bytes` on a new file stream, ends it, and returns the answer.
async fn file_stream(conn: &quinn::Connection, bytes: &[u8]) -> anyhow::Result<Option<Message>> {
    let (mut send, recv) = conn.open_bi().await?;
    let mut recv = FramedRecv::new(recv);
    let _ = send.write_all(bytes).await;
    let _ = send.finish();
    Ok(tokio::time::timeout(ANSWER_TIMEOUT, recv.recv())
        .await?
        .ok()
        .flatten())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_longest_path_is_handled_and_a_longer_one_refused() -> anyhow::Result<()> {
    let dir = tempfile::tempdir()?;
    let state = dir.path().join("long-state");
    let id = Identity::load_or_create(&state)?.id;
    let receiver = Limited::start(dir.path(), 1, vec![id], Duration::from_secs(10)).await?;
    let session = Admitted::connect(&state, receiver.addr, "long").await?;

    // The protocol's longest path is valid, but joined under the store root
    // it exceeds the kernel's PATH_MAX: a clean `Io` failure, nothing stored.
    let longest = long_path(MAX_PATH_LEN);
    assert_eq!(longest.len(), MAX_PATH_LEN);
    assert!(RelPath::from_bytes(longest.clone()).is_ok());
    match file_stream(&session.conn, &file_frames(&longest, b"deep")?).await? {
        Some(Message::Failed(f))
            if f.code == FailCode::Io
                && f.message.contains("PATH_MAX")
                && !f.message.contains("os error") => {}
        other => bail!("a {MAX_PATH_LEN}-byte path under the store root: {other:?}"),
    }

    // A path whose archive (in the versions area, with a `~<stamp>~v<id>`
    // suffix of at most 40 bytes) still fits PATH_MAX (4095 bytes and a
    // NUL) is stored, replaced, and its old version kept.
    let versions = receiver.store_dir.join(".ferry/versions/long/docs/");
    let fits = long_path(4095 - versions.as_os_str().len() - 40);
    for content in [&b"one"[..], b"two"] {
        let answer = file_stream(&session.conn, &file_frames(&fits, content)?).await?;
        assert_eq!(answer, Some(Message::Stored), "{}-byte path", fits.len());
    }
    let stored = receiver
        .store
        .versions(&ns(&receiver, "long")?, &RelPath::from_bytes(fits.clone())?)?;
    assert_eq!(
        stored.len(),
        2,
        "both versions of the {}-byte path kept",
        fits.len()
    );

    // A path that fits the mirror but not the versions area: replacing it
    // may fail, but never loses what the mirror holds.
    let mirror = receiver.store_dir.join("long/docs/");
    let tight = long_path(4095 - mirror.as_os_str().len());
    let tight_abs = mirror.join(std::ffi::OsStr::from_bytes(&tight));
    let answer = file_stream(&session.conn, &file_frames(&tight, b"first")?).await?;
    assert_eq!(answer, Some(Message::Stored), "{}-byte path", tight.len());
    match file_stream(&session.conn, &file_frames(&tight, b"second")?).await? {
        Some(Message::Stored) => assert_eq!(std::fs::read(&tight_abs)?, b"second"),
        Some(Message::Failed(f)) if f.code == FailCode::Io => {
            assert_eq!(std::fs::read(&tight_abs)?, b"first")
        }
        other => bail!("replacing a {}-byte path: {other:?}", tight.len()),
    }

    // One byte more does not even build, and hand-encoded it does not decode.
    let longer = long_path(MAX_PATH_LEN + 1);
    assert!(RelPath::from_bytes(longer.clone()).is_err());
    let mut body = vec![0x04];
    body.extend_from_slice(&[0x81, 0x20]); // varint 4097
    body.extend_from_slice(&longer);
    body.extend_from_slice(&[0x00, 0x04, 0x00, 0x00, 0xa4, 0x03]); // File 4 Inline, mtime 0, 0o644
    let mut raw = (body.len() as u32).to_be_bytes().to_vec();
    raw.extend_from_slice(&body);
    match file_stream(&session.conn, &raw).await? {
        Some(Message::Failed(f)) if f.code == FailCode::BadRequest => {}
        other => bail!("a {}-byte path was not refused: {other:?}", longer.len()),
    }
    // The session goes on.
    let answer = file_stream(&session.conn, &file_frames(b"after", b"ok")?).await?;
    assert_eq!(answer, Some(Message::Stored));
    session.finish().await?;
    assert_eq!(
        std::fs::read(receiver.store_dir.join("long/docs/after"))?,
        b"ok"
    );
    receiver.stop().await
}

/// The namespace of sender `name`'s folder "docs".
fn ns(receiver: &Limited, name: &str) -> anyhow::Result<ferry_agent::store::Namespace> {
    let sender = receiver
        .store
        .sender_by_name(&Name::new(name)?)?
        .context("sender not registered")?;
    Ok(receiver.store.namespace(&sender, &Name::new("docs")?))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn streams_past_the_limit_wait_for_flow_control() -> anyhow::Result<()> {
    let dir = tempfile::tempdir()?;
    let state = dir.path().join("many-state");
    let id = Identity::load_or_create(&state)?.id;
    let receiver = Limited::start(dir.path(), 1, vec![id], Duration::from_secs(10)).await?;
    let session = Admitted::connect(&state, receiver.addr, "many").await?;

    // Open file streams, each with an entry whose content has not come yet,
    // until QUIC flow control holds the next one back.
    let mut open = Vec::new();
    loop {
        let next = tokio::time::timeout(Duration::from_millis(300), session.conn.open_bi()).await;
        let Ok(pair) = next else { break };
        let (mut send, recv) = pair?;
        let path = format!("f{}", open.len());
        let header = file_frames(path.as_bytes(), b"x")?;
        // Everything but the `Data` and `End` frames: the entry waits.
        let entry_len = header.len()
            - frame::encode(&Message::Data(b"x".to_vec()))?.len()
            - frame::encode(&Message::End { hash: [0; 32] })?.len();
        send.write_all(&header[..entry_len]).await?;
        open.push((send, FramedRecv::new(recv), header[entry_len..].to_vec()));
        assert!(
            open.len() <= MAX_STREAMS_PER_SENDER as usize,
            "more than {MAX_STREAMS_PER_SENDER} file streams open at once"
        );
    }
    // The control stream is one of the connection's streams.
    assert_eq!(open.len(), MAX_STREAMS_PER_SENDER as usize - 1);

    // Completing files frees streams: the waiting open goes through. (quinn
    // announces new stream credit once more than 1/8 of the window, 32
    // streams, has been freed.)
    let waiting = tokio::spawn({
        let conn = session.conn.clone();
        async move { conn.open_bi().await }
    });
    for (mut send, mut recv, rest) in open.drain(..33) {
        send.write_all(&rest).await?;
        send.finish()?;
        assert_eq!(recv.recv().await?, Some(Message::Stored));
    }
    let (mut send, recv) = tokio::time::timeout(ANSWER_TIMEOUT, waiting)
        .await
        .context("no stream credit after 33 files completed")???;
    let mut recv = FramedRecv::new(recv);
    send.write_all(&file_frames(b"late", b"late")?).await?;
    send.finish()?;
    assert_eq!(recv.recv().await?, Some(Message::Stored));

    // Every held file completes, and the run commits.
    for (mut send, mut recv, rest) in open {
        send.write_all(&rest).await?;
        send.finish()?;
        assert_eq!(recv.recv().await?, Some(Message::Stored));
    }
    session.finish().await?;
    let mirror = receiver.store_dir.join("many/docs");
    assert_eq!(
        std::fs::read_dir(&mirror)?.count(),
        MAX_STREAMS_PER_SENDER as usize
    );
    receiver.stop().await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_flood_of_unknown_peers_does_not_keep_a_known_sender_out() -> anyhow::Result<()> {
    const FLOOD: usize = 200;
    const AT_ONCE: usize = 16;
    let dir = tempfile::tempdir()?;
    let known = Identity::load_or_create(&dir.path().join("known-state"))?.id;
    let receiver = Limited::start(dir.path(), 1, vec![known], Duration::from_secs(10)).await?;
    let (sender, config) = receiver.sender(dir.path(), "known")?;
    for i in 0..40 {
        tree::write(
            &sender.source,
            format!("d{}/f{i}", i % 4),
            format!("file {i}"),
        )?;
    }

    // Fresh identities, half without a pairing proof and half with a wrong
    // one, each saying Hello and expecting its refusal.
    let addr = receiver.addr;
    let gate = Arc::new(tokio::sync::Semaphore::new(AT_ONCE));
    let mut flood = tokio::task::JoinSet::new();
    for i in 0..FLOOD {
        let gate = gate.clone();
        flood.spawn(async move {
            let _turn = gate.acquire_owned().await?;
            let identity = Identity::generate()?;
            let (_endpoint, conn) = handshake(&identity, addr).await?;
            let proof = (i % 2 == 1).then_some([0x5a; 32]);
            let (_control, answer) = hello(&conn, &format!("intruder-{i}"), proof).await?;
            conn.close(quinn::VarInt::from_u32(0), b"refused");
            anyhow::Ok(answer)
        });
    }

    // The known sender runs three times while the flood goes on.
    let mut runs = 0;
    while runs < 3 {
        tree::write(&sender.source, "changing", format!("run {runs}"))?;
        let summary = send_config(&config)
            .await
            .with_context(|| format!("run {runs} during the flood"))?;
        assert!(summary.run_id.is_some());
        tree::assert_same(&sender.source, &receiver.store_dir.join("known/docs"))?;
        runs += 1;
    }
    let flood_was_running = !flood.is_empty();

    let mut refused = 0;
    while let Some(result) = flood.join_next().await {
        match result?? {
            Message::Refused(r)
                if matches!(
                    r.code,
                    RefuseCode::UnknownSender | RefuseCode::BadPairingSecret
                ) =>
            {
                refused += 1
            }
            other => bail!("an unknown peer got {other:?}"),
        }
    }
    assert_eq!(refused, FLOOD);
    assert!(
        flood_was_running,
        "the flood ended before the runs: no overlap tested"
    );
    // None of them was recorded.
    for i in 0..FLOOD {
        assert!(receiver
            .store
            .sender_by_name(&Name::new(format!("intruder-{i}"))?)?
            .is_none());
    }
    receiver.stop().await
}
