//! Restoring a protected folder: every object of the tree fetched and
//! opened with the folder key, and the entry it holds written at its real
//! path with the same writer as a plain restore.
//!
//! Each object is fetched on its own stream (several at once) and opened on
//! a blocking thread as its bytes arrive. Its header, in the first block,
//! names the real path: an object outside the paths asked is dropped there;
//! a file's content is written to a temporary file as its blocks open, and
//! put in place only once the whole object has opened (every block
//! authenticated, the end and the padding checked); a directory or symlink
//! is made only then too. The destination makes a file's parents as it
//! places it, so objects can be written in any order; directories' modes
//! and mtimes are applied last, deepest first. An object that does not open
//! (tampered with, truncated, another folder's) is reported by its opaque
//! path, and the restore goes on.
//!
//! A chunked object (format 2, large files) cannot be opened as it arrives:
//! its trailer is at its end. Its header is read from its front as above,
//! then it is kept whole in a scratch file beside its real path and opened
//! from there (`chunked`); from a store on this machine, it is opened in
//! place.
//!
//! ## Layout
//!
//! - `chunked`: restoring a chunked object, received or in place.
//! - `chunked_tests` (tests only): chunked objects among whole ones.

mod chunked;
#[cfg(test)]
mod chunked_tests;

use std::sync::Arc;

use ferry_proto::seal::{FolderSecret, Opener, SealedHeader, SealedKind};
use ferry_proto::{Hash, RelPath, VersionInfo, VersionKind};
use tokio::sync::mpsc;
use tokio::task::JoinSet;

use super::dest::{Destination, PendingFile, Slot, WriteError};
use super::{RestoreSummary, RESTORE_IN_FLIGHT};
use crate::reader::sealed::{check_place, is_under, starts_chunked, ObjectError};
use crate::reader::{Fetcher, Piece, RemoteTree};
use crate::status::SenderStatus;
use crate::summary::Progress;

/// Pieces handed from the fetch to the opener at once.
const FEED_DEPTH: usize = 4;

/// What happened to one object.
#[derive(Debug)]
enum Restored {
    File(u64),
    Link,
    Dir,
    /// Something is at its real path (no `--overwrite`).
    Skipped(RelPath),
    /// Its real path is not among those asked.
    Outside,
}

/// Why one object's entry was not restored.
#[derive(Debug, thiserror::Error)]
enum EntryError {
    #[error(transparent)]
    Object(#[from] ObjectError),
    #[error(transparent)]
    Write(#[from] WriteError),
    #[error("the sealed object's header is not the one its first block showed")]
    KindChanged,
    #[error("cannot read the sealed object")]
    Read(#[source] std::io::Error),
}

/// One object that failed: its real path if its header opened.
#[derive(Debug)]
struct Failed {
    real: Option<RelPath>,
    error: EntryError,
}

impl From<ObjectError> for Failed {
    fn from(error: ObjectError) -> Failed {
        Failed {
            real: None,
            error: error.into(),
        }
    }
}

/// Restores the sealed objects of `tree` (from
/// [`crate::reader::Client::tree_report`] of a protected folder, asked for
/// the whole tree) into `dest`, keeping the entries whose real path is at or
/// below one of `under` (all if empty). `secret` must be the folder's key
/// (see [`crate::reader::sealed::check_key`]).
pub async fn restore_sealed_tree(
    fetcher: &Fetcher,
    tree: RemoteTree,
    secret: &FolderSecret,
    under: &[RelPath],
    dest: Arc<Destination>,
    status: Arc<SenderStatus>,
) -> RestoreSummary {
    let progress = &status.progress;
    let started = std::time::Instant::now();
    let mut summary = RestoreSummary {
        run: tree.run,
        ..RestoreSummary::default()
    };
    let bytes: u64 = tree
        .entries
        .iter()
        .map(|v| match v.kind {
            VersionKind::File { size, .. } => size,
            _ => 0,
        })
        .sum();
    progress.reset(tree.entries.len() as u64, bytes);
    let under: Arc<[RelPath]> = under.into();
    let mut openers: Vec<Opener> = Vec::new();
    let mut tasks: JoinSet<(Option<Opener>, RelPath, Result<Restored, Failed>)> = JoinSet::new();
    let mut items = tree.entries.into_iter();
    loop {
        while tasks.len() < RESTORE_IN_FLIGHT {
            let Some(v) = items.next() else { break };
            let opener = openers.pop().unwrap_or_else(|| Opener::new(secret));
            let fetcher = fetcher.clone();
            let dest = dest.clone();
            let under = under.clone();
            let status = status.clone();
            tasks.spawn(async move {
                let opaque = v.path.clone();
                let (opener, done) =
                    restore_object(&fetcher, opener, v, dest, under, &status.progress).await;
                (opener, opaque, done)
            });
        }
        let Some(joined) = tasks.join_next().await else {
            break;
        };
        progress.entry_done();
        // A task panicking is a bug: resumed here, as `tasks::blocking` does.
        let (opener, opaque, done) = match joined {
            Ok(done) => done,
            Err(e) if e.is_panic() => std::panic::resume_unwind(e.into_panic()),
            Err(e) => {
                summary.problem("?", format!("internal error: {}", crate::chain::Chain(&e)));
                continue;
            }
        };
        openers.extend(opener);
        match done {
            Ok(Restored::File(n)) => {
                summary.files += 1;
                summary.bytes += n;
            }
            Ok(Restored::Link) => summary.links += 1,
            Ok(Restored::Dir) => summary.dirs += 1,
            Ok(Restored::Skipped(real)) => summary.skipped.push(real.to_string()),
            Ok(Restored::Outside) => {}
            Err(Failed { real, error }) => summary.problem(
                object_name(&opaque, real.as_ref()),
                crate::chain::chain(&error),
            ),
        }
    }
    for n in tree.not_served {
        summary.problem(
            format!("sealed object {}", n.path),
            format!(
                "not restored: the receiver cannot serve version {}: {}",
                n.id, n.reason
            ),
        );
    }
    let d = dest.clone();
    if let Ok(errors) = crate::tasks::blocking(move || d.finish_dirs()).await {
        for e in errors {
            summary.problem("", crate::chain::chain(&e));
        }
    }
    summary.duration_ms = started.elapsed().as_millis() as u64;
    summary
}

/// How a failed object is named in the summary: by its opaque path, and
/// its real path when its header opened.
fn object_name(opaque: &RelPath, real: Option<&RelPath>) -> String {
    match real {
        Some(real) => format!("sealed object {opaque} ({real})"),
        None => format!("sealed object {opaque}"),
    }
}

/// One step of an object's bytes, from the fetch to the opener.
enum Feed {
    Data(Vec<u8>),
    /// All bytes came, and their hash is the catalog's.
    End,
}

/// Fetches object `v` and, on a blocking thread, opens it and writes what
/// it holds. The opener comes back unless the runtime is shutting down.
async fn restore_object(
    fetcher: &Fetcher,
    mut opener: Opener,
    v: VersionInfo,
    dest: Arc<Destination>,
    under: Arc<[RelPath]>,
    progress: &Progress,
) -> (Option<Opener>, Result<Restored, Failed>) {
    let VersionKind::File { hash, size } = v.kind else {
        return (Some(opener), Err(ObjectError::NotAnObject.into()));
    };
    // From a store on this machine, a chunked object is opened in place.
    match fetcher.stored_file(v.id).await {
        None => {}
        Some(Err(e)) => return (Some(opener), Err(ObjectError::from(e).into())),
        Some(Ok(file)) => {
            let (stored, dest, under) = (v.path.clone(), dest.clone(), under.clone());
            let done = crate::tasks::blocking(move || {
                let done = chunked::restore_in_place(&mut opener, &file, &stored, &dest, &under);
                (opener, done)
            })
            .await;
            match done {
                Ok((back, Some(done))) => {
                    progress.add_bytes(size);
                    return (Some(back), done);
                }
                // A whole object: fetched and opened as it comes, below.
                Ok((back, None)) => opener = back,
                Err(cancelled) => return (None, Err(ObjectError::from(cancelled).into())),
            }
        }
    }
    let (tx, rx) = mpsc::channel(FEED_DEPTH);
    let stored = v.path.clone();
    let write = crate::tasks::blocking(move || {
        let done = write_object(&mut opener, rx, &stored, &dest, &under);
        (opener, done)
    });
    let (fed, written) = tokio::join!(feed(fetcher, v.id, &hash, tx, progress), write);
    let (opener, done) = match written {
        Ok((opener, done)) => (Some(opener), done),
        Err(cancelled) => (None, Err(ObjectError::from(cancelled).into())),
    };
    // A failed fetch explains an object that ended early; an object that
    // failed to open is reported as such, even if its fetch failed after;
    // one not needed (outside the paths asked, or its place taken) is not
    // a failure, whatever its fetch did after.
    let done = match (fed, done) {
        (
            Err(e),
            Err(Failed {
                real,
                error: EntryError::Object(ObjectError::Interrupted),
            }),
        ) => Err(Failed {
            real,
            error: e.into(),
        }),
        (_, done) => done,
    };
    (opener, done)
}

/// Sends the bytes of version `id` to the opener, then `End` if their hash
/// is `hash`. Stops quietly when the opener stops reading (it needs no
/// more).
async fn feed(
    fetcher: &Fetcher,
    id: u64,
    hash: &Hash,
    tx: mpsc::Sender<Feed>,
    progress: &Progress,
) -> Result<(), ObjectError> {
    let mut fetch = fetcher.fetch(id).await?;
    loop {
        match fetch.next().await? {
            Piece::Data(data) => {
                progress.add_bytes(data.len() as u64);
                if tx.send(Feed::Data(data)).await.is_err() {
                    return Ok(());
                }
            }
            Piece::End(sent) if sent != *hash => return Err(ObjectError::ServerHash),
            Piece::End(_) => {
                let _ = tx.send(Feed::End).await;
                return Ok(());
            }
        }
    }
}

/// Where an object's entry goes, decided once its header is open.
enum Target {
    // Boxed: the hasher is large.
    File(Box<PendingFile>),
    Link(std::path::PathBuf),
    Dir,
    /// Something is at this real path.
    Skipped(RelPath),
    Outside,
}

/// An object's bytes as the fetch feeds them (blocking).
struct Fed {
    rx: mpsc::Receiver<Feed>,
    /// All bytes came, their hash the catalog's.
    ended: bool,
}

impl Fed {
    /// The next bytes; `None` once they end ([`Fed::ended`] tells whether
    /// all came) or the fetch stopped.
    fn next(&mut self) -> Option<Vec<u8>> {
        if self.ended {
            return None;
        }
        match self.rx.blocking_recv()? {
            Feed::Data(data) => Some(data),
            Feed::End => {
                self.ended = true;
                None
            }
        }
    }
}

/// Opens the object fed through `rx` and writes its entry (blocking); its
/// first byte tells its format.
fn write_object(
    opener: &mut Opener,
    rx: mpsc::Receiver<Feed>,
    stored: &RelPath,
    dest: &Destination,
    under: &[RelPath],
) -> Result<Restored, Failed> {
    let mut fed = Fed { rx, ended: false };
    let mut first = Vec::new();
    while first.is_empty() {
        match fed.next() {
            Some(data) => first = data,
            None => break,
        }
    }
    if starts_chunked(&first) {
        return chunked::write_received(opener, first, fed, stored, dest, under);
    }
    write_whole(opener, first, fed, stored, dest, under)
}

/// Opens a whole object (format 1) as its blocks come, `first` its first
/// bytes, and writes its entry (blocking).
fn write_whole(
    opener: &mut Opener,
    first: Vec<u8>,
    mut fed: Fed,
    stored: &RelPath,
    dest: &Destination,
    under: &[RelPath],
) -> Result<Restored, Failed> {
    let public = opener.public().clone();
    let mut object = opener.object();
    let mut content = Vec::new();
    // The real path, once the header is open, names the entry in errors.
    let mut real: Option<RelPath> = None;
    let failed = |real: &Option<RelPath>, error: EntryError| Failed {
        real: real.clone(),
        error,
    };
    let mut target: Option<Target> = None;
    let mut next = Some(first);
    while let Some(data) = next.take().or_else(|| fed.next()) {
        if let Err(e) = object.push(&data, &mut content) {
            // A later block may fail in the push that opened the header.
            let real = real.or_else(|| object.header().map(|h| h.path.clone()));
            return Err(failed(&real, ObjectError::from(e).into()));
        }
        if target.is_none() {
            if let Some(header) = object.header() {
                real = Some(header.path.clone());
                check_place(&public, header, stored).map_err(|e| failed(&real, e.into()))?;
                target = Some(decide(header, dest, under).map_err(|e| failed(&real, e))?);
            }
        }
        match &mut target {
            Some(Target::Outside) => return Ok(Restored::Outside),
            Some(Target::Skipped(path)) => return Ok(Restored::Skipped(path.clone())),
            Some(Target::File(pending)) => {
                pending
                    .write(&content)
                    .map_err(|e| failed(&real, e.into()))?;
                content.clear();
            }
            _ => {}
        }
    }
    if !fed.ended {
        return Err(failed(&real, ObjectError::Interrupted.into()));
    }
    // The last block's content may come only now.
    let header = object
        .finish(&mut content)
        .map_err(|e| failed(&real, ObjectError::from(e).into()))?;
    let real = Some(header.path.clone());
    check_place(&public, &header, stored).map_err(|e| failed(&real, e.into()))?;
    let target = match target {
        Some(decided) => decided,
        // An object of one block may open only at its end.
        None => decide(&header, dest, under).map_err(|e| failed(&real, e))?,
    };
    let failed = |error: EntryError| failed(&real, error);
    match target {
        Target::Outside => Ok(Restored::Outside),
        Target::Skipped(path) => Ok(Restored::Skipped(path)),
        Target::Dir => {
            dest.dir(&header.path, header.mode, header.mtime_ns)
                .map_err(|e| failed(e.into()))?;
            Ok(Restored::Dir)
        }
        Target::Link(slot) => {
            let SealedKind::Symlink { target } = &header.kind else {
                return Err(failed(EntryError::KindChanged));
            };
            dest.symlink(slot, target, header.mtime_ns)
                .map_err(|e| failed(e.into()))?;
            Ok(Restored::Link)
        }
        Target::File(mut pending) => {
            pending.write(&content).map_err(|e| failed(e.into()))?;
            let n = pending
                .commit_opened(header.size, header.mode, header.mtime_ns)
                .map_err(|e| failed(e.into()))?;
            Ok(Restored::File(n))
        }
    }
}

/// Where the entry `header` describes goes (blocking): nowhere if it is not
/// among the paths asked or its place is taken.
fn decide(
    header: &SealedHeader,
    dest: &Destination,
    under: &[RelPath],
) -> Result<Target, EntryError> {
    if !is_under(&header.path, under) {
        return Ok(Target::Outside);
    }
    if header.kind == SealedKind::Dir {
        return Ok(Target::Dir);
    }
    let slot = match dest.slot(&header.path)? {
        Slot::Taken(_) => return Ok(Target::Skipped(header.path.clone())),
        Slot::Free(slot) => slot,
    };
    Ok(match header.kind {
        SealedKind::File => Target::File(Box::new(dest.begin_file(slot)?)),
        _ => Target::Link(slot),
    })
}

#[cfg(test)]
#[allow(clippy::unwrap_used)] // a failing unwrap is a failing test
mod tests {
    use super::*;
    use crate::reader::sealed::{check_key, open_headers, GivenKey, LockedError, Needs};
    use crate::reader::{Client, LocalStore};
    use crate::store::protection::short_key;
    use crate::store::{Namespace, RunEnding, Store};
    use ferry_proto::seal::{FolderPublic, RunSealer};
    use ferry_proto::{At, Content, Entry, EntryKind, Name, Protection, RunReport};
    use std::os::unix::fs::MetadataExt;
    use std::path::{Path, PathBuf};

    pub(super) fn rel(s: &str) -> RelPath {
        RelPath::from_bytes(s).unwrap()
    }

    pub(super) fn name(s: &str) -> Name {
        Name::new(s).unwrap()
    }

    pub(super) const T: i64 = 1_700_000_000_123_456_789;

    /// What the test folder holds: path, kind, mode, mtime, content.
    pub(super) fn source() -> Vec<(SealedHeader, Vec<u8>)> {
        let big: Vec<u8> = (0..300_000u32).map(|i| (i * 7 % 251) as u8).collect();
        let entry = |path: &str, kind: SealedKind, mode: u32, content: &[u8]| {
            let header = SealedHeader {
                path: rel(path),
                kind,
                mode,
                mtime_ns: T,
                size: content.len() as u64,
            };
            (header, content.to_vec())
        };
        vec![
            entry("a", SealedKind::Dir, 0o750, b""),
            entry("a/b.txt", SealedKind::File, 0o640, b"hello"),
            entry(
                "a/l",
                SealedKind::Symlink {
                    target: b"b.txt".to_vec(),
                },
                0o777,
                b"",
            ),
            entry("a/empty", SealedKind::Dir, 0o700, b""),
            entry("big.bin", SealedKind::File, 0o600, &big),
            entry("top.txt", SealedKind::File, 0o644, b"top"),
            entry("zero.txt", SealedKind::File, 0o644, b""),
        ]
    }

    fn seal(sealer: &RunSealer, header: &SealedHeader, content: &[u8]) -> Vec<u8> {
        let mut object = sealer.object(header.clone()).unwrap();
        let mut sealed = Vec::new();
        object.push(content, &mut sealed).unwrap();
        object.finish(&mut sealed).unwrap();
        sealed
    }

    /// Stores `data` at `opaque` as a run stores an object: a regular
    /// file, mode 0600, mtime 0.
    fn put(store: &Store, ns: &Namespace, run: u64, opaque: RelPath, data: &[u8]) {
        let entry = Entry {
            path: opaque,
            kind: EntryKind::File {
                size: data.len() as u64,
                content: Content::Inline,
            },
            mtime_ns: 0,
            mode: 0o600,
        };
        let mut staged = store.stage(ns, &entry.path, data.len() as u64).unwrap();
        staged.write(data).unwrap();
        let verified = staged.finish(blake3::hash(data).as_bytes()).unwrap();
        store.commit_file(ns, run, &entry, verified).unwrap();
    }

    /// A store holding the test folder `docs` of `lap`, encrypted to a new
    /// key; the objects as stored, by real path.
    pub(super) struct Sealed {
        pub(super) dir: tempfile::TempDir,
        pub(super) secret: FolderSecret,
        pub(super) public: FolderPublic,
        pub(super) objects: Vec<(RelPath, Vec<u8>)>,
    }

    fn sealed_store() -> Sealed {
        sealed_store_with(&[])
    }

    /// [`sealed_store`] with `chunked` (files) sealed as chunked objects
    /// too, in the same run.
    pub(super) fn sealed_store_with(chunked: &[(SealedHeader, Vec<u8>)]) -> Sealed {
        sealed_store_of("dev-1", chunked)
    }

    /// [`sealed_store_with`], sent by the device `device`.
    pub(super) fn sealed_store_of(device: &str, chunked: &[(SealedHeader, Vec<u8>)]) -> Sealed {
        let dir = tempfile::tempdir().unwrap();
        let store = Store::open(&dir.path().join("store")).unwrap();
        let sender = store.add_sender(device, &name("lap")).unwrap();
        let ns = store.namespace(&sender, &name("docs"));
        let secret = FolderSecret::generate().unwrap();
        let public = secret.public();
        let protection = Protection::Encrypted {
            key: public.key_id(),
        };
        assert_eq!(store.fix_protection(&ns, &protection).unwrap(), protection);
        let run = store.begin_run(&ns).unwrap();
        let sealer = RunSealer::new(&public).unwrap();
        let mut objects = Vec::new();
        for (header, content) in source() {
            let object = seal(&sealer, &header, &content);
            put(&store, &ns, run, public.opaque_path(&header.path), &object);
            objects.push((header.path, object));
        }
        for (header, content) in chunked {
            let object = super::chunked_tests::seal_chunked(&public, &sealer, header, content);
            put(&store, &ns, run, public.opaque_path(&header.path), &object);
            objects.push((header.path.clone(), object));
        }
        store
            .finish_run(&ns, run, &RunReport::default(), 0, RunEnding::Complete)
            .unwrap();
        Sealed {
            dir,
            secret,
            public,
            objects,
        }
    }

    pub(super) async fn client(s: &Sealed) -> Client {
        Client::open_store(&LocalStore {
            root: s.dir.path().join("store"),
            name: name("lap"),
            folder: Some(name("docs")),
        })
        .await
        .unwrap()
    }

    pub(super) async fn restore(s: &Sealed, under: &[RelPath], to: &Path) -> RestoreSummary {
        let mut client = client(s).await;
        let tree = client.tree_report(At::Latest, &[]).await.unwrap();
        let dest = Arc::new(Destination::new(to, false).unwrap());
        let status = SenderStatus::new();
        restore_sealed_tree(&client.fetcher(), tree, &s.secret, under, dest, status).await
    }

    pub(super) fn mtime(path: &Path) -> i64 {
        let m = std::fs::symlink_metadata(path).unwrap();
        m.mtime() * 1_000_000_000 + m.mtime_nsec()
    }

    #[tokio::test]
    async fn a_protected_folder_restores_exactly_with_its_key() {
        let s = sealed_store();
        // The store holds no real name.
        let mut client = client(&s).await;
        let tree = client.tree_report(At::Latest, &[]).await.unwrap();
        assert_eq!(tree.entries.len(), source().len());
        for v in &tree.entries {
            assert!(!v.path.to_string().contains(".txt"), "{}", v.path);
            assert_eq!((v.mode, v.mtime_ns), (0o600, 0));
        }
        let to = s.dir.path().join("restored");
        let summary = restore(&s, &[], &to).await;
        assert_eq!(summary.problems, Vec::new());
        assert_eq!((summary.files, summary.links, summary.dirs), (4, 1, 2));
        assert_eq!(summary.bytes, 300_000 + 5 + 3);
        for (header, content) in source() {
            let at = header.path.under(&to);
            let m = std::fs::symlink_metadata(&at).unwrap();
            match &header.kind {
                SealedKind::File => {
                    assert_eq!(std::fs::read(&at).unwrap(), content, "{}", header.path);
                    assert_eq!(m.mode() & 0o7777, header.mode, "{}", header.path);
                }
                SealedKind::Dir => {
                    assert!(m.is_dir(), "{}", header.path);
                    assert_eq!(m.mode() & 0o7777, header.mode, "{}", header.path);
                }
                SealedKind::Symlink { target } => {
                    let link = std::fs::read_link(&at).unwrap();
                    assert_eq!(link.as_os_str().as_encoded_bytes(), target.as_slice());
                }
            }
            assert_eq!(mtime(&at), T, "{}", header.path);
        }
    }

    #[tokio::test]
    async fn a_subtree_keeps_the_real_paths_at_or_below_those_asked() {
        let s = sealed_store();
        let to = s.dir.path().join("restored");
        let summary = restore(&s, &[rel("a")], &to).await;
        assert_eq!(summary.problems, Vec::new());
        assert_eq!((summary.files, summary.links, summary.dirs), (1, 1, 2));
        let mut names: Vec<PathBuf> = std::fs::read_dir(&to)
            .unwrap()
            .map(|e| e.unwrap().file_name().into())
            .collect();
        names.sort();
        assert_eq!(names, [PathBuf::from("a")]);
        assert_eq!(std::fs::read(to.join("a/b.txt")).unwrap(), b"hello");
        // Restored again: everything is there already, nothing replaced.
        let again = restore(&s, &[rel("a/b.txt")], &to).await;
        assert_eq!(again.files, 0);
        assert_eq!(again.skipped, ["a/b.txt"]);
    }

    #[tokio::test]
    async fn a_tampered_object_is_reported_by_its_opaque_path_and_the_rest_restored() {
        let s = sealed_store();
        let (real, object) = s
            .objects
            .iter()
            .find(|(path, _)| *path == rel("big.bin"))
            .unwrap();
        let root = s.dir.path().join("store");
        // `ferry verify` checks objects against the catalog without the key.
        let report = crate::store::verify(&root).unwrap();
        assert_eq!(report.findings.len(), 0, "{:?}", report.findings);
        assert_eq!(report.files_checked, source().len() as u64);
        let stored = find_file(&root, object).unwrap();
        let mut bytes = object.clone();
        bytes[object.len() / 2] ^= 1;
        std::fs::write(&stored, &bytes).unwrap();
        let report = crate::store::verify(&root).unwrap();
        assert_eq!(report.findings.len(), 1, "{:?}", report.findings);
        assert_eq!(
            report.findings[0].path,
            s.public.opaque_path(real).to_string()
        );
        let to = s.dir.path().join("restored");
        let summary = restore(&s, &[], &to).await;
        assert_eq!(summary.problems.len(), 1, "{:?}", summary.problems);
        let problem = &summary.problems[0];
        let opaque = s.public.opaque_path(real).to_string();
        assert_eq!(
            problem.path,
            format!("sealed object {opaque} (big.bin)"),
            "{problem:?}"
        );
        assert!(problem.message.contains("does not open"), "{problem:?}");
        assert_eq!((summary.files, summary.links, summary.dirs), (3, 1, 2));
        assert!(!to.join("big.bin").exists());
        // Nothing half-written is left beside the others.
        let left: Vec<_> = std::fs::read_dir(&to).unwrap().collect();
        assert_eq!(left.len(), 3, "{left:?}");
    }

    #[tokio::test]
    async fn an_object_moved_to_another_path_is_refused_there() {
        let s = sealed_store();
        // A dishonest receiver records one entry's object (and its hash)
        // under another path's place as if a run had sent it there.
        let (real, object) = s.objects[0].clone();
        {
            let store = Store::open(&s.dir.path().join("store")).unwrap();
            let sender = store.sender_by_name(&name("lap")).unwrap().unwrap();
            let ns = store.namespace(&sender, &name("docs"));
            let run = store.begin_run(&ns).unwrap();
            put(
                &store,
                &ns,
                run,
                s.public.opaque_path(&rel("planted.txt")),
                &object,
            );
            store
                .finish_run(&ns, run, &RunReport::default(), 0, RunEnding::Complete)
                .unwrap();
        }
        let to = s.dir.path().join("restored");
        let summary = restore(&s, &[], &to).await;
        assert_eq!(summary.problems.len(), 1, "{:?}", summary.problems);
        let problem = &summary.problems[0];
        assert!(
            problem.message.contains("stored at another path"),
            "{problem:?}"
        );
        assert!(problem.path.contains(&real.to_string()), "{problem:?}");
        assert!(!to.join("planted.txt").exists());
        // The entry itself comes back once, from its own object.
        let content = &source()
            .into_iter()
            .find(|(h, _)| h.path == real)
            .unwrap()
            .1;
        if let Ok(bytes) = std::fs::read(real.under(&to)) {
            assert_eq!(&bytes, content);
        }
        // Listing headers refuses it the same way.
        let mut client = client(&s).await;
        let tree = client.tree_report(At::Latest, &[]).await.unwrap();
        let (opened, failed) =
            crate::reader::sealed::open_headers(&client.fetcher(), &s.secret, tree.entries).await;
        assert_eq!(opened.len(), source().len());
        assert_eq!(failed.len(), 1);
        assert!(matches!(failed[0].error, ObjectError::Misplaced { .. }));
    }

    #[tokio::test]
    async fn the_key_is_checked_before_anything_is_read() {
        let s = sealed_store();
        let mut client = client(&s).await;
        let protection = client.protection().await.unwrap();
        let docs = name("docs");
        let key = s.public.key_id();
        assert_eq!(protection, Protection::Encrypted { key });
        let given = |public, secret| Some(GivenKey { public, secret });
        assert_eq!(
            check_key(&docs, protection, given(&s.public, true), false),
            Ok(Needs::Secret { key })
        );
        assert_eq!(
            check_key(&docs, protection, None, false),
            Err(LockedError::Encrypted {
                folder: docs.clone()
            })
        );
        assert_eq!(
            check_key(&docs, protection, given(&s.public, false), false),
            Err(LockedError::PublicOfEncrypted {
                folder: docs.clone()
            })
        );
        // Listing a path's versions needs only the names.
        assert!(check_key(&docs, protection, given(&s.public, false), true).is_ok());
        let write_only = Protection::WriteOnly { key };
        let e = check_key(&docs, write_only, given(&s.public, false), false).unwrap_err();
        assert_eq!(
            e,
            LockedError::WriteOnly {
                folder: docs.clone()
            }
        );
        let other = FolderSecret::generate().unwrap();
        let e = check_key(&docs, protection, given(&other.public(), true), false).unwrap_err();
        let text = e.to_string();
        assert!(
            text.starts_with("this key is not the folder's (key "),
            "{text}"
        );
        assert!(text.contains(&short_key(&key)), "{text}");
        assert!(crate::reader::sealed::check_secret(&other, &key).is_err());
    }

    #[test]
    fn key_files_and_public_files_are_checked_as_the_commands_check_them() {
        let dir = tempfile::tempdir().unwrap();
        let (key_file, public_file, public) = crate::keys::test_key_files(dir.path());
        let docs = name("docs");
        let write_only = Protection::WriteOnly {
            key: public.key_id(),
        };
        // The public file a write-only sender holds names, and opens nothing.
        let (from_public, secret) = crate::keys::load_public(&public_file).unwrap();
        assert!(!secret);
        let given = GivenKey {
            public: &from_public,
            secret,
        };
        assert_eq!(
            check_key(&docs, write_only, Some(given), false),
            Err(LockedError::WriteOnly {
                folder: docs.clone()
            })
        );
        assert!(check_key(&docs, write_only, Some(given), true).is_ok());
        // The key file opens it, once its passphrase is given.
        let (from_key, secret) = crate::keys::load_public(&key_file).unwrap();
        assert!(secret);
        let given = GivenKey {
            public: &from_key,
            secret,
        };
        let key = public.key_id();
        assert_eq!(
            check_key(&docs, write_only, Some(given), false),
            Ok(Needs::Secret { key })
        );
        let passphrase = crate::keys::passphrase_source(Some(&dir.path().join("pass")));
        let opened = crate::keys::load_secret(&key_file, &passphrase).unwrap();
        assert!(crate::reader::sealed::check_secret(&opened, &key).is_ok());
    }

    #[tokio::test]
    async fn another_folders_key_opens_nothing_and_writes_nothing() {
        let s = sealed_store();
        let other = Sealed {
            secret: FolderSecret::generate().unwrap(),
            ..s
        };
        let to = other.dir.path().join("restored");
        let summary = restore(&other, &[], &to).await;
        assert_eq!(summary.problems.len(), source().len());
        assert!(summary.problems[0].message.contains("does not open"));
        assert_eq!(std::fs::read_dir(&to).unwrap().count(), 0);
    }

    #[tokio::test]
    async fn headers_list_the_real_children_of_a_directory() {
        let s = sealed_store();
        let mut client = client(&s).await;
        let tree = client.tree_report(At::Latest, &[]).await.unwrap();
        let (opened, unopened) = open_headers(&client.fetcher(), &s.secret, tree.entries).await;
        assert!(unopened.is_empty(), "{unopened:?}");
        let paths: Vec<String> = opened.iter().map(|o| o.header.path.to_string()).collect();
        assert_eq!(
            paths,
            ["a", "a/b.txt", "a/empty", "a/l", "big.bin", "top.txt", "zero.txt"]
        );
        let root = crate::reader::sealed::listing(&opened, None).unwrap();
        let names: Vec<&[u8]> = root.iter().map(|e| e.name()).collect();
        assert_eq!(
            names,
            [b"a".as_slice(), b"big.bin", b"top.txt", b"zero.txt"]
        );
        assert_eq!(
            root[1].kind,
            ferry_proto::VersionKind::File {
                size: 300_000,
                hash: match &tree_hash(&opened, "big.bin") {
                    Some(h) => *h,
                    None => [0; 32],
                }
            }
        );
    }

    fn tree_hash(opened: &[crate::reader::sealed::Opened], path: &str) -> Option<Hash> {
        let o = opened.iter().find(|o| o.header.path == rel(path))?;
        match o.version.kind {
            VersionKind::File { hash, .. } => Some(hash),
            _ => None,
        }
    }

    /// The file below `root` (not in `.ferry`) whose bytes are `bytes`.
    pub(super) fn find_file(root: &Path, bytes: &[u8]) -> Option<PathBuf> {
        for entry in std::fs::read_dir(root).ok()? {
            let path = entry.ok()?.path();
            if path.file_name() == Some(std::ffi::OsStr::new(".ferry")) {
                continue;
            }
            let m = std::fs::symlink_metadata(&path).ok()?;
            if m.is_dir() {
                if let Some(found) = find_file(&path, bytes) {
                    return Some(found);
                }
            } else if m.len() == bytes.len() as u64 && std::fs::read(&path).ok()? == bytes {
                return Some(path);
            }
        }
        None
    }
}
