//! Chunked objects (format 2) among whole ones: a folder mixing both
//! restores exactly, in place from a store on this machine and received
//! through a scratch file; a chunked object's header is read from its
//! front alone; a tampered or truncated one fails alone, leaving nothing.
//! Over QUIC too: a real receiver on 127.0.0.1 serving the store.

#![allow(clippy::unwrap_used)] // a failing unwrap is a failing test

use std::os::unix::fs::MetadataExt;
use std::path::Path;

use ferry_proto::seal::{ChunkedSealer, FolderPublic, RunSealer, MAX_CHUNK};
use ferry_proto::{At, MAX_DATA};

use super::tests::{
    client, find_file, mtime, name, rel, restore, sealed_store_of, sealed_store_with, source,
    Sealed, T,
};
use super::*;
use crate::identity::Identity;
use crate::reader::sealed::{fetch_front, open_headers};
use crate::reader::{Client, Remote};
use crate::receiver::{Admission, Receiver};
use crate::status::SenderStatus;
use crate::store::Store;
use tokio_util::sync::CancellationToken;

/// `content` sealed as a chunked object of `header` in the run `run`:
/// chunks of varied lengths up to [`MAX_CHUNK`], every third one
/// compressed when zstd shrinks it.
pub(super) fn seal_chunked(
    public: &FolderPublic,
    run: &RunSealer,
    header: &SealedHeader,
    content: &[u8],
) -> Vec<u8> {
    let mut sealer = ChunkedSealer::new(public, run, header).unwrap();
    let mut pieces = vec![sealer.take_front().unwrap()];
    let mut at = 0;
    let mut i = 0usize;
    while at < content.len() {
        let len = (20_000 + i * 37_813 % (MAX_CHUNK - 20_000)).min(content.len() - at);
        let chunk = &content[at..at + len];
        let packed = zstd::bulk::compress(chunk, 3).unwrap();
        let packed = (i.is_multiple_of(3) && packed.len() < chunk.len()).then_some(&packed[..]);
        sealer.push(chunk, packed, &mut pieces).unwrap();
        at += len;
        i += 1;
    }
    sealer.finish(&mut pieces).unwrap();
    pieces.into_iter().flat_map(|p| p.bytes).collect()
}

fn noise(len: usize, seed: u8) -> Vec<u8> {
    let mut out = vec![0u8; len];
    blake3::Hasher::new()
        .update(b"chunked restore")
        .update(&[seed])
        .finalize_xof()
        .fill(&mut out);
    out
}

/// The large files of the test folder, kept as chunked objects: random
/// bytes, and text with random runs (some chunks compress).
fn large() -> Vec<(SealedHeader, Vec<u8>)> {
    let text: Vec<u8> = b"the quokka owes the marmot acorns; "
        .iter()
        .copied()
        .cycle()
        .take(400_000)
        .chain(noise(300_000, 2))
        .collect();
    let file = |path: &str, mode: u32, mtime_ns: i64, content: Vec<u8>| {
        let header = SealedHeader {
            path: rel(path),
            kind: SealedKind::File,
            mode,
            mtime_ns,
            size: content.len() as u64,
        };
        (header, content)
    };
    vec![
        file("a/large.bin", 0o640, T + 1, noise(1_500_000, 1)),
        file("film.txt", 0o604, T - 7, text),
    ]
}

/// The stored object of `path` in `s`.
fn stored_object<'a>(s: &'a Sealed, path: &str) -> &'a [u8] {
    let (_, object) = s.objects.iter().find(|(p, _)| *p == rel(path)).unwrap();
    object
}

/// Names below `dir` a restore left behind besides what it restored.
fn leftovers(dir: &Path) -> Vec<String> {
    let mut out = Vec::new();
    for entry in std::fs::read_dir(dir).unwrap() {
        let entry = entry.unwrap();
        let name = entry.file_name().to_string_lossy().into_owned();
        if name.contains("ferry-restore") {
            out.push(name);
        }
        if entry.file_type().unwrap().is_dir() {
            out.extend(leftovers(&entry.path()));
        }
    }
    out
}

/// Checks that every entry of `entries` is at `to` exactly (bytes, mode,
/// mtime).
fn assert_restored(to: &Path, entries: &[(SealedHeader, Vec<u8>)]) {
    for (header, content) in entries {
        let at = header.path.under(to);
        let m = std::fs::symlink_metadata(&at).unwrap();
        if header.kind == SealedKind::File {
            assert!(std::fs::read(&at).unwrap() == *content, "{}", header.path);
        }
        if !matches!(header.kind, SealedKind::Symlink { .. }) {
            assert_eq!(m.mode() & 0o7777, header.mode, "{}", header.path);
        }
        assert_eq!(mtime(&at), header.mtime_ns, "{}", header.path);
    }
}

#[tokio::test]
async fn a_folder_mixing_both_formats_restores_exactly() {
    let s = sealed_store_with(&large());
    let to = s.dir.path().join("restored");
    let summary = restore(&s, &[], &to).await;
    assert_eq!(summary.problems, Vec::new());
    assert_eq!((summary.files, summary.links, summary.dirs), (6, 1, 2));
    let bytes: usize = large().iter().map(|(_, c)| c.len()).sum();
    assert_eq!(summary.bytes, (300_000 + 5 + 3 + bytes) as u64);
    assert_restored(&to, &source());
    assert_restored(&to, &large());
    assert_eq!(leftovers(&to), Vec::<String>::new());
    // A subtree keeps only what is asked; a chunked object outside is not
    // written.
    let sub = s.dir.path().join("sub");
    let summary = restore(&s, &[rel("a/large.bin")], &sub).await;
    assert_eq!(summary.problems, Vec::new());
    assert_eq!(summary.files, 1);
    assert!(!sub.join("film.txt").exists());
    assert_restored(&sub, &large()[..1]);
}

/// Feeds `object` to [`write_object`] in pieces from another thread, as
/// the fetch of a receiver does, ending with `End` only if `whole`.
fn receive(
    s: &Sealed,
    path: &str,
    object: Vec<u8>,
    whole: bool,
    dest: &Destination,
) -> Result<Restored, Failed> {
    let (tx, rx) = mpsc::channel(FEED_DEPTH);
    let feeder = std::thread::spawn(move || {
        for piece in object.chunks(100_000) {
            if tx.blocking_send(Feed::Data(piece.to_vec())).is_err() {
                return;
            }
        }
        if whole {
            let _ = tx.blocking_send(Feed::End);
        }
    });
    let mut opener = Opener::new(&s.secret);
    let stored = s.public.opaque_path(&rel(path));
    let done = write_object(&mut opener, rx, &stored, dest, &[]);
    feeder.join().unwrap();
    done
}

#[test]
fn a_chunked_object_received_is_kept_in_a_scratch_file_and_restored_exactly() {
    let s = sealed_store_with(&large());
    let to = s.dir.path().join("received");
    let dest = Destination::new(&to, false).unwrap();
    for (header, content) in large() {
        let path = header.path.to_string();
        let object = stored_object(&s, &path).to_vec();
        let done = receive(&s, &path, object, true, &dest).unwrap();
        assert!(
            matches!(done, Restored::File(n) if n == content.len() as u64),
            "{done:?}"
        );
    }
    assert_restored(&to, &large());
    // The scratch file went with its handle.
    assert_eq!(leftovers(&to), Vec::<String>::new());
    let names: Vec<_> = std::fs::read_dir(to.join("a")).unwrap().collect();
    assert_eq!(names.len(), 1, "{names:?}");

    // Received again, its place is taken: nothing more is read or written.
    let object = stored_object(&s, "a/large.bin").to_vec();
    let done = receive(&s, "a/large.bin", object, true, &dest).unwrap();
    assert!(matches!(done, Restored::Skipped(_)), "{done:?}");

    // A fetch that stops before the end, and a tampered object, fail that
    // file only, and leave nothing.
    let other = s.dir.path().join("failed");
    let dest = Destination::new(&other, false).unwrap();
    let object = stored_object(&s, "film.txt").to_vec();
    let half = object[..object.len() / 2].to_vec();
    let failed = receive(&s, "film.txt", half, false, &dest).unwrap_err();
    assert_eq!(failed.real, Some(rel("film.txt")));
    assert!(
        matches!(failed.error, EntryError::Object(ObjectError::Interrupted)),
        "{:?}",
        failed.error
    );
    let mut tampered = object.clone();
    tampered[object.len() / 2] ^= 1;
    let failed = receive(&s, "film.txt", tampered, true, &dest).unwrap_err();
    assert_eq!(failed.real, Some(rel("film.txt")));
    let message = crate::chain::chain(&failed.error);
    assert!(message.contains("does not open"), "{message}");
    assert_eq!(std::fs::read_dir(&other).unwrap().count(), 0);
}

#[tokio::test]
async fn headers_of_a_chunked_object_are_read_from_its_front_alone() {
    let s = sealed_store_with(&large());
    let large_object = stored_object(&s, "a/large.bin").to_vec();
    let opaque = s.public.opaque_path(&rel("a/large.bin"));
    let mut client = client(&s).await;
    let tree = client.tree_report(At::Latest, &[]).await.unwrap();
    let v = tree.entries.iter().find(|v| v.path == opaque).unwrap();
    let VersionKind::File { hash, .. } = v.kind else {
        panic!("an object is a file")
    };
    // One piece of the fetch holds the front: the rest is not fetched.
    let (front, ended) = fetch_front(&client.fetcher(), v.id, &hash).await.unwrap();
    assert!(!ended);
    assert!(front.len() <= MAX_DATA, "{}", front.len());
    assert!(front.len() < large_object.len() / 4, "{}", front.len());

    // Cut after its front, the object still lists, and fails alone when
    // restored.
    let root = s.dir.path().join("store");
    let stored = find_file(&root, &large_object).unwrap();
    std::fs::write(&stored, &large_object[..large_object.len() / 2]).unwrap();
    let (opened, unopened) = open_headers(&client.fetcher(), &s.secret, tree.entries).await;
    assert!(unopened.is_empty(), "{unopened:?}");
    assert_eq!(opened.len(), source().len() + large().len());
    let entry = opened
        .iter()
        .find(|o| o.header.path == rel("a/large.bin"))
        .unwrap();
    assert_eq!(entry.header, large()[0].0);

    let to = s.dir.path().join("restored");
    let summary = restore(&s, &[], &to).await;
    assert_eq!(summary.problems.len(), 1, "{:?}", summary.problems);
    assert_eq!(
        summary.problems[0].path,
        format!("sealed object {opaque} (a/large.bin)")
    );
    assert_eq!(summary.files, 5);
    assert!(!to.join("a/large.bin").exists());
    assert_restored(&to, &large()[1..]);
    assert_eq!(leftovers(&to), Vec::<String>::new());
}

#[tokio::test]
async fn a_tampered_chunked_object_fails_alone_and_the_rest_is_restored() {
    let s = sealed_store_with(&large());
    let film = stored_object(&s, "film.txt").to_vec();
    let opaque = s.public.opaque_path(&rel("film.txt"));
    let root = s.dir.path().join("store");
    let stored = find_file(&root, &film).unwrap();
    let mut tampered = film.clone();
    tampered[film.len() / 3] ^= 0x40;
    std::fs::write(&stored, &tampered).unwrap();

    let to = s.dir.path().join("restored");
    let summary = restore(&s, &[], &to).await;
    assert_eq!(summary.problems.len(), 1, "{:?}", summary.problems);
    let problem = &summary.problems[0];
    assert_eq!(problem.path, format!("sealed object {opaque} (film.txt)"));
    assert!(problem.message.contains("does not open"), "{problem:?}");
    assert_eq!((summary.files, summary.links, summary.dirs), (5, 1, 2));
    assert!(!to.join("film.txt").exists());
    assert_restored(&to, &source());
    assert_restored(&to, &large()[..1]);
    assert_eq!(leftovers(&to), Vec::<String>::new());
    // The store's own check of objects (without the key) sees it too.
    let report = crate::store::verify(&root).unwrap();
    assert_eq!(report.findings.len(), 1, "{:?}", report.findings);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn over_quic_chunked_objects_are_listed_from_their_front_and_restored_exactly() {
    let state = tempfile::tempdir().unwrap();
    let sender = Identity::load_or_create(state.path()).unwrap();
    let s = sealed_store_of(&sender.id.to_string(), &large());
    let store = Store::open(&s.dir.path().join("store")).unwrap();
    let receiver = Receiver::bind_with(
        Identity::load_or_create(&s.dir.path().join("rstate")).unwrap(),
        store,
        "127.0.0.1:0".parse().unwrap(),
        4,
        Admission {
            allow: vec![],
            pairing_secret: None,
        },
    )
    .unwrap();
    let addr = receiver.local_addr().unwrap();
    let remote = Remote {
        host: addr.ip().to_string(),
        port: addr.port(),
        receiver_id: Some(receiver.id()),
        state: state.path().to_path_buf(),
        name: name("lap"),
        folder: name("docs"),
    };
    let shutdown = CancellationToken::new();
    let serving = tokio::spawn(receiver.serve(shutdown.clone()));

    let mut client = Client::connect(&remote).await.unwrap();
    let tree = client.tree_report(At::Latest, &[]).await.unwrap();
    // Headers: each object's fetch stops after its front.
    let (opened, unopened) = open_headers(&client.fetcher(), &s.secret, tree.entries.clone()).await;
    assert!(unopened.is_empty(), "{unopened:?}");
    assert_eq!(opened.len(), source().len() + large().len());
    // The whole folder, each chunked object through a scratch file.
    let to = s.dir.path().join("restored");
    let dest = Arc::new(Destination::new(&to, false).unwrap());
    let fetcher = client.fetcher();
    let summary =
        restore_sealed_tree(&fetcher, tree, &s.secret, &[], dest, SenderStatus::new()).await;
    assert_eq!(summary.problems, Vec::new());
    assert_eq!((summary.files, summary.links, summary.dirs), (6, 1, 2));
    assert_restored(&to, &source());
    assert_restored(&to, &large());
    assert_eq!(leftovers(&to), Vec::<String>::new());
    // A subtree: the chunked objects outside it stop after their front.
    let tree = client.tree_report(At::Latest, &[]).await.unwrap();
    let sub = s.dir.path().join("sub");
    let dest = Arc::new(Destination::new(&sub, false).unwrap());
    let summary = restore_sealed_tree(
        &fetcher,
        tree,
        &s.secret,
        &[rel("top.txt")],
        dest,
        SenderStatus::new(),
    )
    .await;
    assert_eq!(summary.problems, Vec::new());
    assert_eq!(summary.files, 1);
    assert_eq!(std::fs::read(sub.join("top.txt")).unwrap(), b"top");
    drop(client);
    shutdown.cancel();
    serving.await.unwrap();
}
