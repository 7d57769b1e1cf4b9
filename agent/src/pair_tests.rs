//! A whole run in memory: the real sender and the real receiver, over an
//! in-memory link ([`crate::link::memory`]), with a real store and a real
//! index in temporary directories and no socket. The sender's and the
//! receiver's own pair tests script the other side; here both are real.

use std::collections::BTreeMap;
use std::os::unix::fs::PermissionsExt;
use std::path::Path;
use std::sync::Arc;

use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;

use crate::link::memory;
use crate::receiver::{serve, Admission, Shared};
use crate::sender::pair_tests::{receiver_id, run, sender};
use crate::sender::SenderContext;
use crate::store::Store;
use crate::summary::RunSummary;

/// A receiver on a store in a temporary directory that admits one sender.
pub(crate) struct Receiver {
    pub store_dir: std::path::PathBuf,
    pub shared: Arc<Shared>,
    pub shutdown: CancellationToken,
    sessions: TaskTracker,
}

impl Receiver {
    pub fn new(store_dir: &Path, sender: &SenderContext) -> Receiver {
        let store = Store::open(store_dir).unwrap();
        let admission = Admission {
            allow: vec![sender.identity.id],
            pairing_secret: None,
        };
        Receiver {
            store_dir: store_dir.to_path_buf(),
            shared: Arc::new(Shared::new(store, 2, admission).unwrap()),
            shutdown: CancellationToken::new(),
            sessions: TaskTracker::new(),
        }
    }

    /// One run of `sender` against this receiver, over a new link.
    pub async fn run(&self, sender: &SenderContext) -> RunSummary {
        let (ours, theirs) = memory::pair(sender.identity.id, receiver_id());
        self.sessions.spawn(serve(
            theirs,
            self.shared.clone(),
            self.shutdown.child_token(),
        ));
        let summary = run(sender, ours).await.unwrap();
        // The session ends once the sender has closed the link.
        self.sessions.close();
        self.sessions.wait().await;
        self.sessions.reopen();
        summary
    }

    pub fn mirror(&self) -> std::path::PathBuf {
        self.store_dir.join("laptop/docs")
    }

    pub fn statuses(&self) -> Vec<String> {
        let runs = self.shared.store.runs(None).unwrap();
        runs.into_iter().map(|r| r.status).collect()
    }
}

/// Every file, directory and symlink below `root`: content, target, mode.
fn tree(root: &Path) -> BTreeMap<String, String> {
    fn walk(root: &Path, dir: &Path, out: &mut BTreeMap<String, String>) {
        for entry in std::fs::read_dir(dir).unwrap() {
            let path = entry.unwrap().path();
            let rel = path.strip_prefix(root).unwrap().display().to_string();
            let meta = std::fs::symlink_metadata(&path).unwrap();
            let mode = meta.permissions().mode() & 0o7777;
            let what = if meta.file_type().is_symlink() {
                format!("link {}", std::fs::read_link(&path).unwrap().display())
            } else if meta.is_dir() {
                walk(root, &path, out);
                format!("dir {mode:o}")
            } else {
                let bytes = std::fs::read(&path).unwrap();
                format!("file {mode:o} {}", blake3::hash(&bytes))
            };
            out.insert(rel, what);
        }
    }
    let mut out = BTreeMap::new();
    walk(root, root, &mut out);
    out
}

/// Bytes that do not compress, from a seed.
pub(crate) fn noise(len: usize, seed: u8) -> Vec<u8> {
    let mut out = Vec::with_capacity(len);
    let mut counter = 0u64;
    while out.len() < len {
        let block = blake3::hash(&[&[seed][..], &counter.to_le_bytes()].concat());
        out.extend_from_slice(block.as_bytes());
        counter += 1;
    }
    out.truncate(len);
    out
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_first_run_a_change_and_no_change_arrive_exactly() {
    let dir = tempfile::tempdir().unwrap();
    let source = dir.path().join("source");
    std::fs::create_dir_all(source.join("notes/deep")).unwrap();
    for i in 0..40 {
        let text = format!("note {i}\n").repeat(i + 1);
        std::fs::write(source.join(format!("notes/n{i:02}.txt")), text).unwrap();
    }
    std::fs::write(source.join("notes/deep/empty"), b"").unwrap();
    std::fs::set_permissions(
        source.join("notes/n00.txt"),
        std::fs::Permissions::from_mode(0o600),
    )
    .unwrap();
    std::os::unix::fs::symlink("notes/n01.txt", source.join("latest")).unwrap();
    let mut big = noise(3 << 20, 1);
    std::fs::write(source.join("disk.img"), &big).unwrap();

    let ctx = sender(&source, &dir.path().join("state"));
    let receiver = Receiver::new(&dir.path().join("store"), &ctx);

    // The first run sends everything; the mirror is the source.
    let first = receiver.run(&ctx).await;
    assert_eq!(first.errors, 0, "{:?}", first.problems);
    assert_eq!(first.files_sent, 43);
    assert_eq!(tree(&receiver.mirror()), tree(&source));

    // A small edit in the large file travels as a delta; a deletion is
    // archived, not lost; a new file arrives.
    big[1_500_000..1_500_100].fill(0xee);
    std::fs::write(source.join("disk.img"), &big).unwrap();
    std::fs::remove_file(source.join("notes/n05.txt")).unwrap();
    std::fs::write(source.join("notes/new.txt"), b"new\n").unwrap();
    let second = receiver.run(&ctx).await;
    assert_eq!(second.errors, 0, "{:?}", second.problems);
    assert_eq!(second.files_sent, 2);
    assert_eq!(second.files_deleted, 1);
    assert!(
        second.bytes_file_data_wire < 1 << 20,
        "a 100-byte edit of a 3 MiB file sent {} bytes",
        second.bytes_file_data_wire
    );
    assert_eq!(tree(&receiver.mirror()), tree(&source));
    let store = &receiver.shared.store;
    let laptop = store
        .sender_by_name(&ferry_proto::Name::new("laptop").unwrap())
        .unwrap()
        .unwrap();
    let ns = store.namespace(&laptop, &ferry_proto::Name::new("docs").unwrap());
    let gone = ferry_proto::RelPath::from_bytes(b"notes/n05.txt".to_vec()).unwrap();
    let versions = receiver.shared.store.versions(&ns, &gone).unwrap();
    assert_eq!(versions.len(), 1, "the deleted file's version is kept");

    // Nothing changed: nothing is sent, and every run is recorded complete.
    let third = receiver.run(&ctx).await;
    assert_eq!(third.files_sent, 0);
    assert_eq!(third.files_deleted, 0);
    assert_eq!(tree(&receiver.mirror()), tree(&source));
    assert_eq!(receiver.statuses(), vec!["complete"; 3]);
    receiver.shutdown.cancel();
}

/// The same runs to a receiver that keeps its bytes in a bucket (an
/// in-memory object store): every current file reads back exact from the
/// bucket, the delta's base chunks are read from it, and the deleted
/// file's version is kept.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn runs_to_a_bucket_store_arrive_exactly_and_a_delta_reads_its_base_from_the_bucket() {
    let dir = tempfile::tempdir().unwrap();
    let source = dir.path().join("source");
    std::fs::create_dir_all(source.join("notes")).unwrap();
    for i in 0..30 {
        let text = format!("note {i}\n").repeat(i + 1);
        std::fs::write(source.join(format!("notes/n{i:02}.txt")), text).unwrap();
    }
    let mut big = noise(3 << 20, 2);
    std::fs::write(source.join("disk.img"), &big).unwrap();
    let ctx = sender(&source, &dir.path().join("state"));
    let state = dir.path().join("rstate");
    // Opened on a thread of its own: the store drives the bucket with a
    // runtime of its own, which cannot start inside this one.
    let store = std::thread::spawn(move || {
        let holder = crate::bucket::Holder {
            receiver: "receiver".into(),
            host: "test".into(),
            pid: 1,
        };
        Store::open_bucket(&state, crate::bucket::memory_bucket(), holder).unwrap()
    })
    .join()
    .unwrap();
    let receiver = Receiver {
        store_dir: dir.path().join("rstate"),
        shared: Arc::new(
            Shared::new(
                store,
                2,
                Admission {
                    allow: vec![ctx.identity.id],
                    pairing_secret: None,
                },
            )
            .unwrap(),
        ),
        shutdown: CancellationToken::new(),
        sessions: TaskTracker::new(),
    };
    let first = receiver.run(&ctx).await;
    assert_eq!(first.errors, 0, "{:?}", first.problems);
    big[1_500_000..1_500_100].fill(0xee);
    std::fs::write(source.join("disk.img"), &big).unwrap();
    std::fs::remove_file(source.join("notes/n05.txt")).unwrap();
    let second = receiver.run(&ctx).await;
    assert_eq!(second.errors, 0, "{:?}", second.problems);
    assert!(
        second.bytes_file_data_wire < 1 << 20,
        "a 100-byte edit of a 3 MiB file sent {} bytes",
        second.bytes_file_data_wire
    );
    let store = receiver.shared.store.clone();
    let source2 = source.clone();
    tokio::task::spawn_blocking(move || {
        use std::io::Read;
        let laptop = store
            .sender_by_name(&ferry_proto::Name::new("laptop").unwrap())
            .unwrap()
            .unwrap();
        let ns = store.namespace(&laptop, &ferry_proto::Name::new("docs").unwrap());
        let files: Vec<_> = store
            .current(&ns)
            .unwrap()
            .into_iter()
            .filter(|v| v.kind == "file")
            .collect();
        assert_eq!(files.len(), 30);
        for v in files {
            let mut got = Vec::new();
            store
                .open_version(&v)
                .unwrap()
                .read_to_end(&mut got)
                .unwrap();
            let want = std::fs::read(source2.join(v.path.to_string())).unwrap();
            assert!(got == want, "{} differs", v.path);
        }
        let gone = ferry_proto::RelPath::from_bytes(b"notes/n05.txt".to_vec()).unwrap();
        let versions = store.versions(&ns, &gone).unwrap();
        assert!(versions[0].deleted);
        let mut got = Vec::new();
        store
            .open_version(&versions[0])
            .unwrap()
            .read_to_end(&mut got)
            .unwrap();
        assert_eq!(got, "note 5\n".repeat(6).into_bytes());
    })
    .await
    .unwrap();
    assert_eq!(receiver.statuses(), vec!["complete"; 2]);
    receiver.shutdown.cancel();
}

/// The receiver's store is put back from a copy taken before the sender's
/// last run (a restored backup of the receiver's disk): the sender is told
/// its acknowledgements cannot be vouched for, offers everything again, and
/// the store ends as the source is, with no version added for what it held
/// already and the deletion it lost carried out again.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_store_put_back_from_an_older_copy_is_brought_up_to_date() {
    let dir = tempfile::tempdir().unwrap();
    let source = dir.path().join("source");
    std::fs::create_dir_all(source.join("notes")).unwrap();
    for i in 0..30 {
        let text = format!("note {i}\n").repeat(i + 1);
        std::fs::write(source.join(format!("notes/n{i:02}.txt")), text).unwrap();
    }
    std::fs::write(source.join("disk.img"), noise(2 << 20, 3)).unwrap();
    let ctx = sender(&source, &dir.path().join("state"));
    let store_dir = dir.path().join("store");
    let copy = dir.path().join("store-copy");

    let receiver = Receiver::new(&store_dir, &ctx);
    assert_eq!(receiver.run(&ctx).await.errors, 0);
    receiver.shutdown.cancel();
    drop(receiver);
    let copied = std::process::Command::new("cp")
        .arg("-a")
        .arg(&store_dir)
        .arg(&copy)
        .status()
        .unwrap();
    assert!(copied.success());

    // A run the copy will not know: an edit, a deletion, a new directory,
    // a mode change.
    std::fs::write(source.join("notes/n01.txt"), b"edited\n").unwrap();
    std::fs::remove_file(source.join("notes/n05.txt")).unwrap();
    std::fs::create_dir(source.join("fresh")).unwrap();
    std::fs::write(source.join("fresh/f.txt"), b"fresh\n").unwrap();
    std::fs::set_permissions(
        source.join("notes/n02.txt"),
        std::fs::Permissions::from_mode(0o600),
    )
    .unwrap();
    let receiver = Receiver::new(&store_dir, &ctx);
    assert_eq!(receiver.run(&ctx).await.errors, 0);
    receiver.shutdown.cancel();
    drop(receiver);

    // The disk is put back.
    std::fs::remove_dir_all(&store_dir).unwrap();
    std::fs::rename(&copy, &store_dir).unwrap();
    let receiver = Receiver::new(&store_dir, &ctx);
    assert_ne!(tree(&receiver.mirror()), tree(&source));
    let resync = receiver.run(&ctx).await;
    assert_eq!(resync.errors, 0, "{:?}", resync.problems);
    assert_eq!(tree(&receiver.mirror()), tree(&source));
    assert!(
        resync.bytes_file_data_wire < 1 << 20,
        "what the store held was sent again: {} bytes",
        resync.bytes_file_data_wire
    );
    let store = receiver.shared.store.clone();
    let laptop = store
        .sender_by_name(&ferry_proto::Name::new("laptop").unwrap())
        .unwrap()
        .unwrap();
    let ns = store.namespace(&laptop, &ferry_proto::Name::new("docs").unwrap());
    let rel = |p: &str| ferry_proto::RelPath::from_bytes(p.as_bytes().to_vec()).unwrap();
    for (path, versions) in [
        ("notes/n10.txt", 1),
        ("disk.img", 1),
        ("notes/n01.txt", 2),
        ("notes/n05.txt", 1),
    ] {
        assert_eq!(
            store.versions(&ns, &rel(path)).unwrap().len(),
            versions,
            "{path}"
        );
    }
    let gone = store.versions(&ns, &rel("notes/n05.txt")).unwrap();
    assert!(gone[0].deleted, "the lost deletion is carried out again");

    // Confirmed: the next run has nothing to do.
    let after = receiver.run(&ctx).await;
    assert_eq!(
        (
            after.files_sent,
            after.files_metadata_only,
            after.files_deleted
        ),
        (0, 0, 0)
    );
    assert_eq!(receiver.statuses(), vec!["complete"; 3]);
    receiver.shutdown.cancel();
    drop(receiver);

    // The store is lost altogether (a new, empty one at the same place):
    // everything is sent again, not taken as stored.
    std::fs::remove_dir_all(&store_dir).unwrap();
    let receiver = Receiver::new(&store_dir, &ctx);
    let fresh = receiver.run(&ctx).await;
    assert_eq!(fresh.errors, 0, "{:?}", fresh.problems);
    assert_eq!(tree(&receiver.mirror()), tree(&source));
    receiver.shutdown.cancel();
}
