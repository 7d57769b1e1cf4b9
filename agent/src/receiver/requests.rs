//! Read-only sessions on the receiver: history, versions, restore, and the
//! folder's protection (so a reader knows whether it must open objects).
//!
//! The session is admitted like a run, but never pairs and never opens a
//! run. The sender is found by the device id of the TLS session alone; the
//! folder comes from `Open`; every answer and every fetched byte comes from
//! that namespace. A version id of another sender or folder is answered as
//! if it did not exist.

use std::fs::File;
use std::io::{self, Read};
use std::sync::Arc;
use std::time::Duration;

use ferry_proto::{
    DirEntry, FailCode, Failure, Message, NotServed, Open, Protection, Refusal, RefuseCode,
    Request, RunInfo, VersionInfo, VersionKind, MAX_DATA, MAX_LIST_BYTES,
};
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;

use super::{Shared, BUSY_RETRY};
use crate::identity::DeviceId;
use crate::link::Link;
use crate::store::{Namespace, RunRecord, SkippedVersion, Store, VersionRecord};
use crate::stream::{Channel, StreamError};

/// QUIC close codes, as in the run session.
const CLOSE_DONE: u32 = 0;
const CLOSE_REFUSED: u32 = 1;

/// Serves a read-only session whose `Open` has been read; logs its outcome.
pub(super) async fn serve(
    conn: &impl Link,
    peer: DeviceId,
    shared: &Arc<Shared>,
    mut control: Channel,
    open: Open,
    shutdown: &CancellationToken,
) {
    let store = shared.store.clone();
    let device = peer.to_string();
    let found = crate::tasks::blocking(move || store.sender_by_device(&device))
        .await
        .map_err(|e| crate::chain::chain(&e))
        .and_then(|found| found.map_err(|e| crate::chain::chain(&e)));
    let sender = match found {
        Ok(sender) => sender,
        Err(message) => {
            return refuse(conn, &mut control, RefuseCode::BadRequest, message).await;
        }
    };
    let Some(sender) = sender else {
        let message = format!("device {peer} is not known to this receiver: run `ferry send` (with the pairing secret) once before asking for history or a restore");
        return refuse(conn, &mut control, RefuseCode::UnknownSender, message).await;
    };
    if shared.access.is_revoked(&peer) {
        let message = format!("the receiver's admin revoked this sender ({}): it is no longer admitted; its stored files stay on the receiver, where its admin can restore them", sender.name);
        return refuse(conn, &mut control, RefuseCode::Revoked, message).await;
    }
    shared.access.track(&peer, conn);
    if open.protocol != ferry_proto::PROTOCOL_VERSION {
        let message = format!(
            "this receiver speaks protocol {}, the client {}",
            ferry_proto::PROTOCOL_VERSION,
            open.protocol
        );
        return refuse(conn, &mut control, RefuseCode::Version, message).await;
    }
    if sender.name != open.name {
        let message = format!(
            "this device is registered as {}; ask with --name {}",
            sender.name, sender.name
        );
        return refuse(conn, &mut control, RefuseCode::WrongName, message).await;
    }
    let Ok(_slot) = shared.clients.clone().try_acquire_owned() else {
        let busy = Message::Busy {
            retry_after_ms: BUSY_RETRY.as_millis() as u64,
        };
        let _ = control.send.send(&busy).await;
        control.send.finish();
        let _ = tokio::time::timeout(Duration::from_secs(2), conn.closed()).await;
        return;
    };
    let ns = shared.store.namespace(&sender, &open.folder);
    tracing::info!(peer = %peer, name = %sender.name, folder = %ns.folder, "read-only session opened");
    let opened = Message::Opened {
        sender: sender.name.clone(),
    };
    if control.send.send(&opened).await.is_err() {
        return;
    }
    let ctx = Arc::new(Ctx {
        store: shared.store.clone(),
        ns,
    });
    // The fetch acceptor stops with the control stream, through its own
    // token; it is tracked with the fetches it starts.
    let fetches = TaskTracker::new();
    let stop = shutdown.child_token();
    fetches.spawn(accept_fetches(
        conn.clone(),
        ctx.clone(),
        fetches.clone(),
        stop.clone(),
    ));
    let result = answer_requests(&mut control, &ctx, shutdown).await;
    stop.cancel();
    fetches.close();
    match result {
        Ok(()) => {
            tokio::select! {
                _ = fetches.wait() => {}
                _ = shutdown.cancelled() => {}
            }
            conn.close(CLOSE_DONE, b"done");
        }
        Err(e) => {
            tracing::debug!(peer = %peer, "read-only session ended: {}", crate::chain::Chain(&e));
            conn.close(CLOSE_DONE, b"session ended");
        }
    }
    // The connection is closed: the fetches still running end at once.
    fetches.wait().await;
}

async fn refuse(conn: &impl Link, control: &mut Channel, code: RefuseCode, message: String) {
    tracing::warn!(remote = %conn.remote_address(), "read-only session refused: {message}");
    let _ = control
        .send
        .send(&Message::Refused(Refusal { code, message }))
        .await;
    control.send.finish();
    let _ = tokio::time::timeout(Duration::from_secs(2), conn.closed()).await;
    conn.close(CLOSE_REFUSED, b"refused");
}

/// What every handler of one session needs.
pub(crate) struct Ctx {
    pub store: Arc<Store>,
    pub ns: Namespace,
}

/// Why answering a request failed on the receiver's side.
#[derive(Debug, thiserror::Error)]
enum AnswerError {
    #[error(transparent)]
    Stream(#[from] StreamError),
    #[error(transparent)]
    Cancelled(#[from] crate::tasks::Cancelled),
}

/// Answers requests until the client finishes the control stream.
async fn answer_requests(
    control: &mut Channel,
    ctx: &Arc<Ctx>,
    shutdown: &CancellationToken,
) -> Result<(), AnswerError> {
    loop {
        let message = tokio::select! {
            _ = shutdown.cancelled() => return Ok(()),
            m = control.recv.recv() => m,
        };
        let request = match message {
            Ok(Some(Message::Request(request))) => request,
            Ok(None) => return Ok(()),
            Ok(Some(other)) => {
                let message = format!(
                    "expected a Request, got {}",
                    crate::stream::describe(&other)
                );
                refused(control, message).await?;
                return Ok(());
            }
            Err(e) => return Err(e.into()),
        };
        let c = ctx.clone();
        let answer = crate::tasks::blocking(move || answer(&c, request)).await?;
        match answer {
            Ok(Answer::Runs(runs)) => send_lists(control, runs, Message::RunList, None).await?,
            Ok(Answer::Versions(run, versions, not_served)) => {
                for batch in batches(versions) {
                    control.send.send(&Message::VersionList(batch)).await?;
                }
                send_lists(control, not_served, Message::NotServed, run).await?
            }
            Ok(Answer::Dir(run, entries)) => {
                send_lists(control, entries, Message::DirList, run).await?
            }
            Ok(Answer::Protection(protection)) => {
                control
                    .send
                    .send(&Message::FolderProtection(protection))
                    .await?
            }
            Err(message) => refused(control, message).await?,
        }
    }
}

async fn refused(control: &mut Channel, message: String) -> Result<(), AnswerError> {
    let refusal = Message::Refused(Refusal {
        code: RefuseCode::BadRequest,
        message,
    });
    Ok(control.send.send(&refusal).await?)
}

/// Sends `items` in messages of at most [`MAX_LIST_BYTES`], then `ListEnd`.
async fn send_lists<T: serde::Serialize>(
    control: &mut Channel,
    items: Vec<T>,
    wrap: fn(Vec<T>) -> Message,
    run: Option<u64>,
) -> Result<(), AnswerError> {
    for batch in batches(items) {
        control.send.send(&wrap(batch)).await?;
    }
    control.send.send(&Message::ListEnd { run }).await?;
    Ok(())
}

/// Splits `items` so that each batch encodes to at most [`MAX_LIST_BYTES`]
/// (an item is far smaller than that: two paths of at most 4 KiB).
pub(crate) fn batches<T: serde::Serialize>(items: Vec<T>) -> Vec<Vec<T>> {
    let mut out = Vec::new();
    let mut batch = Vec::new();
    let mut size = 0;
    for item in items {
        let len = postcard::to_stdvec(&item).map(|v| v.len()).unwrap_or(0);
        if !batch.is_empty() && size + len > MAX_LIST_BYTES {
            out.push(std::mem::take(&mut batch));
            size = 0;
        }
        size += len;
        batch.push(item);
    }
    if !batch.is_empty() {
        out.push(batch);
    }
    out
}

/// The answer to one request.
pub(crate) enum Answer {
    Runs(Vec<RunInfo>),
    /// The versions (or the tree and the run it resolved to), and the tree's
    /// versions that cannot be served.
    Versions(Option<u64>, Vec<VersionInfo>, Vec<NotServed>),
    /// A directory's children, and the run the point resolved to.
    Dir(Option<u64>, Vec<DirEntry>),
    /// The folder's protection (`Plain` for a folder never sent).
    Protection(Protection),
}

/// Answers one request from the session's namespace (blocking); `Err` is
/// the refusal's message.
pub(crate) fn answer(ctx: &Ctx, request: Request) -> Result<Answer, String> {
    let store = &ctx.store;
    let ns = &ctx.ns;
    let starts = store
        .run_starts(ns.sender_id)
        .map_err(|e| crate::chain::chain(&e))?;
    let info = |v: VersionRecord| version_info(v, &starts);
    match request {
        Request::Runs => {
            let runs = store
                .runs(Some(ns.sender_id))
                .map_err(|e| crate::chain::chain(&e))?;
            Ok(Answer::Runs(runs.into_iter().map(run_info).collect()))
        }
        Request::Versions { path } => {
            let versions = store
                .versions(ns, &path)
                .map_err(|e| crate::chain::chain(&e))?;
            Ok(Answer::Versions(
                None,
                versions.into_iter().filter_map(info).collect(),
                Vec::new(),
            ))
        }
        Request::Tree { at, under } => {
            let tree = store
                .tree_report(ns, at, &under)
                .map_err(|e| crate::chain::chain(&e))?;
            Ok(Answer::Versions(
                tree.run,
                tree.entries.into_iter().filter_map(info).collect(),
                tree.skipped.into_iter().map(not_served).collect(),
            ))
        }
        Request::List { at, dir } => {
            let listing = store
                .list_dir(ns, at, dir.as_ref())
                .map_err(|e| crate::chain::chain(&e))?;
            Ok(Answer::Dir(listing.run, listing.entries))
        }
        Request::Protection => {
            let protection = store
                .folder_protection(&ns.sender, &ns.folder)
                .map_err(|e| crate::chain::chain(&e))?;
            Ok(Answer::Protection(protection))
        }
    }
}

fn run_info(r: RunRecord) -> RunInfo {
    RunInfo {
        id: r.id,
        folder: r.folder,
        started_ms: r.started_ms,
        finished_ms: r.finished_ms,
        status: r.status,
        report: r.report,
        bytes_received: r.bytes_received,
    }
}

fn not_served(s: SkippedVersion) -> NotServed {
    NotServed {
        id: u64::try_from(s.id).unwrap_or(0),
        path: s.path,
        reason: s.reason.to_string(),
    }
}

fn version_info(
    v: VersionRecord,
    starts: &std::collections::HashMap<u64, i64>,
) -> Option<VersionInfo> {
    let kind = match v.kind.as_str() {
        "file" => VersionKind::File {
            size: v.size,
            hash: v.hash?,
        },
        "dir" => VersionKind::Dir,
        "symlink" => VersionKind::Symlink { target: v.target? },
        _ => return None,
    };
    Some(VersionInfo {
        id: u64::try_from(v.id).ok()?,
        kind,
        mtime_ns: v.mtime_ns,
        mode: v.mode,
        run: v.run,
        stored_ms: starts.get(&v.run).copied().unwrap_or(0),
        replaced_run: v.replaced_run,
        deleted: v.deleted,
        path: v.path,
    })
}

/// Accepts restore streams until the connection ends or `stop` is
/// cancelled, and runs each in a task of `tasks`.
async fn accept_fetches(
    conn: impl Link,
    ctx: Arc<Ctx>,
    tasks: TaskTracker,
    stop: CancellationToken,
) {
    loop {
        let accepted = tokio::select! {
            _ = stop.cancelled() => return,
            accepted = conn.accept() => accepted,
        };
        let Ok(mut channel) = accepted else { return };
        let ctx = ctx.clone();
        tasks.spawn(async move {
            if let Err(failure) = serve_fetch(&mut channel, &ctx).await {
                tracing::debug!("fetch failed: {}", failure.message);
                let _ = channel.send.send(&Message::Failed(failure)).await;
            }
            channel.send.finish();
        });
    }
}

fn fail(code: FailCode, message: impl Into<String>) -> Failure {
    Failure {
        code,
        message: message.into(),
    }
}

/// Streams one version's bytes: `Data`*, `End { hash }`.
async fn serve_fetch(channel: &mut Channel, ctx: &Arc<Ctx>) -> Result<(), Failure> {
    let version = match channel.recv.recv_message().await {
        Ok(Message::Fetch { version }) => version,
        Ok(other) => {
            let got = crate::stream::describe(&other);
            return Err(fail(
                FailCode::BadRequest,
                format!("expected Fetch, got {got}"),
            ));
        }
        Err(e) => return Err(fail(FailCode::BadRequest, crate::chain::chain(&e))),
    };
    let c = ctx.clone();
    let opened = crate::tasks::blocking(move || open_version(&c, version))
        .await
        .map_err(|e| fail(FailCode::Io, crate::chain::chain(&e)))?;
    let mut reader = VersionReader::new(version, opened?);
    loop {
        let (back, chunk) = crate::tasks::blocking(move || {
            let chunk = reader.next_chunk();
            (reader, chunk)
        })
        .await
        .map_err(|e| fail(FailCode::Io, crate::chain::chain(&e)))?;
        reader = back;
        let Some(chunk) = chunk? else { break };
        channel
            .send
            .send_data(&chunk)
            .await
            .map_err(|e| fail(FailCode::Io, crate::chain::chain(&e)))?;
    }
    let hash = reader.hash();
    channel
        .send
        .send(&Message::End { hash })
        .await
        .map_err(|e| fail(FailCode::Io, crate::chain::chain(&e)))
}

/// The bytes of one stored version, read in pieces of at most [`MAX_DATA`]
/// and hashed as read: what a fetch streams to a client, and what a local
/// restore (`ferry restore --store`) reads directly.
pub(crate) struct VersionReader {
    version: u64,
    // Holes are read as zeros from memory, not paged in.
    file: crate::sparse::HoleReader<File>,
    hasher: blake3::Hasher,
}

impl VersionReader {
    /// Reads `file`, the bytes of `version` (from [`open_version`]).
    pub(crate) fn new(version: u64, file: File) -> VersionReader {
        VersionReader {
            version,
            file: crate::sparse::HoleReader::new(file),
            hasher: blake3::Hasher::new(),
        }
    }

    /// The next piece (blocking), `None` at the end.
    pub(crate) fn next_chunk(&mut self) -> Result<Option<Vec<u8>>, Failure> {
        let mut buf = vec![0u8; MAX_DATA];
        let n = read_full(&mut self.file, &mut buf).map_err(|e| {
            fail(
                FailCode::Io,
                format!(
                    "reading version {}: {}",
                    self.version,
                    crate::chain::Chain(&e)
                ),
            )
        })?;
        if n == 0 {
            return Ok(None);
        }
        buf.truncate(n);
        self.hasher.update(&buf);
        Ok(Some(buf))
    }

    /// The hash of everything read.
    pub(crate) fn hash(&self) -> [u8; 32] {
        *self.hasher.finalize().as_bytes()
    }
}

/// Opens the bytes of `version` if it is a file of the session's namespace.
pub(crate) fn open_version(ctx: &Ctx, version: u64) -> Result<File, Failure> {
    let record = ctx
        .store
        .version_in(&ctx.ns, version)
        .map_err(|e| fail(FailCode::Io, crate::chain::chain(&e)))?;
    let Some(record) = record else {
        return Err(fail(
            FailCode::BadRequest,
            format!(
                "there is no version {version} in your folder {}",
                ctx.ns.folder
            ),
        ));
    };
    if record.kind != "file" {
        return Err(fail(
            FailCode::BadRequest,
            format!(
                "version {version} of {} is a {}, not a file",
                record.path, record.kind
            ),
        ));
    }
    if let Some(why) = &record.unservable {
        return Err(fail(
            FailCode::Io,
            format!(
                "{} (version {version}) cannot be served: {why}",
                record.path
            ),
        ));
    }
    ctx.store.open_version(&record).map_err(|e| {
        fail(
            FailCode::Io,
            format!(
                "the stored bytes of {} (version {version}) cannot be read: {}",
                record.path,
                crate::chain::Chain(&e)
            ),
        )
    })
}

fn read_full(file: &mut impl Read, buf: &mut [u8]) -> io::Result<usize> {
    let mut n = 0;
    while n < buf.len() {
        match file.read(&mut buf[n..]) {
            Ok(0) => break,
            Ok(got) => n += got,
            Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
            Err(e) => return Err(e),
        }
    }
    Ok(n)
}

#[cfg(test)]
#[allow(clippy::unwrap_used)] // a failing unwrap is a failing test
mod tests {
    use super::*;
    use crate::store::StoreError;
    use ferry_proto::{At, Content, Entry, EntryKind, Name, RelPath, RunReport};

    fn put(store: &Store, ns: &Namespace, run: u64, path: &str, data: &[u8]) {
        let entry = Entry {
            path: RelPath::from_bytes(path).unwrap(),
            kind: EntryKind::File {
                size: data.len() as u64,
                content: Content::Inline,
            },
            mtime_ns: 1,
            mode: 0o644,
        };
        let mut staged = store.stage(ns, &entry.path, data.len() as u64).unwrap();
        staged.write(data).unwrap();
        let verified = staged.finish(blake3::hash(data).as_bytes()).unwrap();
        store.commit_file(ns, run, &entry, verified).unwrap();
    }

    /// Two senders, one file each; contexts as the receiver builds them.
    fn two_senders() -> (tempfile::TempDir, Ctx, Ctx) {
        let dir = tempfile::tempdir().unwrap();
        let store = Arc::new(Store::open(dir.path()).unwrap());
        let docs = Name::new("docs").unwrap();
        let mut ctxs = Vec::new();
        for (device, name) in [("dev-a", "alice"), ("dev-b", "bob")] {
            let sender = store.add_sender(device, &Name::new(name).unwrap()).unwrap();
            let ns = store.namespace(&sender, &docs);
            let run = store.begin_run(&ns).unwrap();
            put(&store, &ns, run, "secret.txt", name.as_bytes());
            store
                .finish_run(
                    &ns,
                    run,
                    &RunReport::default(),
                    0,
                    crate::store::RunEnding::Complete,
                )
                .unwrap();
            ctxs.push(Ctx {
                store: store.clone(),
                ns,
            });
        }
        let bob = ctxs.pop().unwrap();
        let alice = ctxs.pop().unwrap();
        (dir, alice, bob)
    }

    fn tree(ctx: &Ctx, at: At) -> Result<(Option<u64>, Vec<VersionInfo>), String> {
        match answer(ctx, Request::Tree { at, under: vec![] })? {
            Answer::Versions(run, v, _) => Ok((run, v)),
            _ => Err("another answer".into()),
        }
    }

    fn protection(ctx: &Ctx) -> Protection {
        match answer(ctx, Request::Protection).unwrap() {
            Answer::Protection(p) => p,
            _ => panic!("another answer"),
        }
    }

    #[test]
    fn the_protection_answered_is_the_senders_own_folders() {
        let (_dir, alice, bob) = two_senders();
        // Sent before protection existed: plain.
        assert_eq!(protection(&alice), Protection::Plain);
        let pics = Name::new("pics").unwrap();
        let bob_sender = bob.store.sender_by_name(&bob.ns.sender).unwrap().unwrap();
        let bob_pics = Ctx {
            store: bob.store.clone(),
            ns: bob.store.namespace(&bob_sender, &pics),
        };
        // Never sent: plain.
        assert_eq!(protection(&bob_pics), Protection::Plain);
        let sealed = Protection::WriteOnly { key: [9; 32] };
        assert_eq!(
            bob.store.fix_protection(&bob_pics.ns, &sealed).unwrap(),
            sealed
        );
        assert_eq!(protection(&bob_pics), sealed);
        let alice_sender = alice
            .store
            .sender_by_name(&alice.ns.sender)
            .unwrap()
            .unwrap();
        let alice_pics = Ctx {
            store: alice.store.clone(),
            ns: alice.store.namespace(&alice_sender, &pics),
        };
        assert_eq!(protection(&alice_pics), Protection::Plain);
        assert_eq!(protection(&bob), Protection::Plain);
    }

    #[test]
    fn a_sender_sees_only_its_own_runs_versions_and_bytes() {
        let (_dir, alice, bob) = two_senders();
        let (_, alice_tree) = tree(&alice, At::Latest).unwrap();
        assert_eq!(alice_tree.len(), 1);
        let alice_version = alice_tree[0].id;
        let mut content = String::new();
        open_version(&alice, alice_version)
            .unwrap()
            .read_to_string(&mut content)
            .unwrap();
        assert_eq!(content, "alice");
        // Bob asks for Alice's version id: it does not exist for him.
        let err = open_version(&bob, alice_version).unwrap_err();
        assert_eq!(err.code, FailCode::BadRequest);
        // Bob asks for Alice's run: refused.
        let Answer::Runs(alice_runs) = answer(&alice, Request::Runs).unwrap() else {
            panic!("runs expected")
        };
        assert_eq!(alice_runs.len(), 1);
        let err = tree(&bob, At::Run(alice_runs[0].id)).unwrap_err();
        assert!(err.contains("not a run of bob/docs"), "{err}");
        let Answer::Runs(bob_runs) = answer(&bob, Request::Runs).unwrap() else {
            panic!("runs expected")
        };
        assert_eq!(bob_runs.len(), 1);
        assert_ne!(bob_runs[0].id, alice_runs[0].id);
        // Bob's versions of the same path are his own.
        let Answer::Versions(_, versions, _) = answer(
            &bob,
            Request::Versions {
                path: RelPath::from_bytes("secret.txt").unwrap(),
            },
        )
        .unwrap() else {
            panic!("versions expected")
        };
        assert_eq!(versions.len(), 1);
        assert_ne!(versions[0].id, alice_version);
    }

    #[test]
    fn a_listing_holds_only_the_senders_own_entries() {
        let (_dir, alice, bob) = two_senders();
        let list = |ctx: &Ctx, at: At| match answer(ctx, Request::List { at, dir: None }) {
            Ok(Answer::Dir(run, entries)) => Ok((run, entries)),
            Ok(_) => Err("another answer".to_string()),
            Err(e) => Err(e),
        };
        let (_, alice_tree) = tree(&alice, At::Latest).unwrap();
        let (run, entries) = list(&alice, At::Latest).unwrap();
        assert_eq!(run, None);
        assert_eq!(entries.len(), 1);
        assert_eq!(entries[0].name(), b"secret.txt");
        assert_eq!(entries[0].version, Some(alice_tree[0].id));
        let (_, bobs) = list(&bob, At::Latest).unwrap();
        assert_eq!(bobs.len(), 1);
        assert_ne!(bobs[0].version, entries[0].version);
        // Alice's run is not Bob's: refused, as for a tree.
        let err = list(&bob, At::Run(entries[0].run.unwrap())).unwrap_err();
        assert!(err.contains("not a run of bob/docs"), "{err}");
    }

    #[test]
    fn a_symlinked_parent_never_leads_out_of_the_store() {
        let dir = tempfile::tempdir().unwrap();
        let store = Store::open(dir.path()).unwrap();
        let root = store.root().to_path_buf();
        let outside = tempfile::tempdir().unwrap();
        std::fs::write(outside.path().join("passwd"), "x").unwrap();
        std::os::unix::fs::symlink(outside.path(), root.join("link")).unwrap();
        let err = store.open_stored(&root.join("link/passwd")).unwrap_err();
        assert!(matches!(err, StoreError::SymlinkInWay { .. }), "{err}");
        std::os::unix::fs::symlink(outside.path().join("passwd"), root.join("leaf")).unwrap();
        assert!(store.open_stored(&root.join("leaf")).is_err());
        let err = store
            .open_stored(&outside.path().join("passwd"))
            .unwrap_err();
        assert!(matches!(err, StoreError::OutsideStore { .. }), "{err}");
        let err = store.open_stored(&root.join(".ferry/../../x")).unwrap_err();
        assert!(matches!(err, StoreError::OutsideStore { .. }), "{err}");
    }

    #[test]
    fn a_tree_with_bad_rows_is_served_without_them() {
        let (dir, alice, _bob) = two_senders();
        let run = alice.store.begin_run(&alice.ns).unwrap();
        put(&alice.store, &alice.ns, run, "secret.txt", b"second");
        put(&alice.store, &alice.ns, run, "other.txt", b"other");
        let old = alice
            .store
            .versions(&alice.ns, &RelPath::from_bytes("secret.txt").unwrap())
            .unwrap()[1]
            .id;
        let conn = rusqlite::Connection::open(dir.path().join(".ferry/catalog.db")).unwrap();
        conn.execute(
            "UPDATE versions SET archive = '/etc/passwd' WHERE id = ?1",
            [old],
        )
        .unwrap();
        conn.execute(
            "UPDATE versions SET path = '/abs' WHERE path = CAST('other.txt' AS BLOB)",
            [],
        )
        .unwrap();
        let err = open_version(&alice, old as u64).unwrap_err();
        assert!(err.message.contains("cannot be served"), "{}", err.message);
        let first = alice
            .store
            .runs(Some(alice.ns.sender_id))
            .unwrap()
            .last()
            .unwrap()
            .id;
        let Answer::Versions(_, entries, not_served) = answer(
            &alice,
            Request::Tree {
                at: At::Run(first),
                under: vec![],
            },
        )
        .unwrap() else {
            panic!("versions expected")
        };
        assert!(entries.is_empty(), "{entries:?}");
        assert_eq!(not_served.len(), 1);
        assert_eq!(not_served[0].id, old as u64);
        let Answer::Versions(_, entries, not_served) = answer(
            &alice,
            Request::Tree {
                at: At::Latest,
                under: vec![],
            },
        )
        .unwrap() else {
            panic!("versions expected")
        };
        assert_eq!(entries.len(), 1);
        assert_eq!(not_served.len(), 1);
        assert_eq!(not_served[0].path, "/abs");
    }

    #[test]
    fn lists_are_split_below_the_frame_limit() {
        let items: Vec<Vec<u8>> = (0..100).map(|_| vec![7u8; 4000]).collect();
        let batches = batches(items);
        assert!(batches.len() > 1);
        assert_eq!(batches.iter().map(Vec::len).sum::<usize>(), 100);
        for b in &batches {
            let len = postcard::to_stdvec(b).unwrap().len();
            assert!(len <= MAX_LIST_BYTES + 16, "{len}");
        }
    }
}
