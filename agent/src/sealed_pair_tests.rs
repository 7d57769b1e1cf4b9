//! Encrypted and write-only folders in memory: the real sender and the real
//! receiver over [`crate::link::memory`], with a real store and a real index
//! ([`crate::pair_tests`]'s receiver). The receiver must keep nothing it
//! could read: no name, no 16-byte window of any content, no symlink
//! target, anywhere under the store (catalog included); every object a
//! `0600` regular file at a `hh/…` path; and the objects, opened with the
//! folder key, are exactly the source tree.

use std::collections::{BTreeMap, HashSet};
use std::hash::{BuildHasherDefault, Hasher};
use std::os::unix::ffi::OsStrExt;
use std::os::unix::fs::{MetadataExt, PermissionsExt};
use std::path::{Path, PathBuf};

use ferry_proto::seal::{FolderSecret, Opener, SealedKind};
use ferry_proto::{Name, Protection, RelPath};

use crate::config::FolderProtect;
use crate::pair_tests::{noise, Receiver};
use crate::scan::mtime_ns;
use crate::sender::pair_tests::sender;
use crate::sender::SenderContext;

/// A sender of `source` into a folder sealed to `secret`'s public half:
/// `Encrypted`, or `WriteOnly` if `write_only`.
fn sealed_sender(
    source: &Path,
    state: &Path,
    secret: &FolderSecret,
    write_only: bool,
) -> SenderContext {
    let mut ctx = sender(source, state);
    let public = secret.public();
    let key = public.key_id();
    let protection = match write_only {
        true => Protection::WriteOnly { key },
        false => Protection::Encrypted { key },
    };
    ctx.settings.protect = FolderProtect::Sealed { protection, public };
    ctx
}

fn set_mtime(path: &Path, secs: i64) {
    let time = filetime::FileTime::from_unix_time(secs, 123_456_789);
    filetime::set_symlink_file_times(path, time, time).unwrap();
}

fn chmod(path: &Path, mode: u32) {
    std::fs::set_permissions(path, std::fs::Permissions::from_mode(mode)).unwrap();
}

/// A tree with known names: nested directories, an empty one, a symlink, an
/// empty file, small files, a 3 MiB file, several modes and mtimes.
fn make_tree(source: &Path) {
    let deep = source.join("quokka-papers/marmot-ledgers/capybara-deep");
    std::fs::create_dir_all(&deep).unwrap();
    std::fs::create_dir_all(source.join("quokka-papers/empty-wombat-drawer")).unwrap();
    for i in 0..12 {
        let text = format!("ledger {i}: the quokka owes the marmot {i} acorns\n").repeat(i + 1);
        let path = source.join(format!("quokka-papers/marmot-ledgers/ledger-{i:02}.txt"));
        std::fs::write(&path, text).unwrap();
        set_mtime(&path, 1_600_000_000 + i as i64);
    }
    std::fs::write(
        deep.join("deep-ledger.txt"),
        b"the capybara keeps the deepest ledger of all\n",
    )
    .unwrap();
    std::fs::write(source.join("quokka-papers/nothing-at-all.txt"), b"").unwrap();
    // Periodic noise: every window of 3 MiB, but few distinct ones to look for.
    let block = noise(65_543, 9);
    let big: Vec<u8> = block.iter().copied().cycle().take(3 << 20).collect();
    std::fs::write(source.join("vault-archive.img"), big).unwrap();
    chmod(&source.join("vault-archive.img"), 0o640);
    chmod(
        &source.join("quokka-papers/marmot-ledgers/ledger-00.txt"),
        0o600,
    );
    chmod(
        &source.join("quokka-papers/marmot-ledgers/ledger-01.txt"),
        0o755,
    );
    std::os::unix::fs::symlink(
        "quokka-papers/marmot-ledgers/ledger-01.txt",
        source.join("latest-ledger-link"),
    )
    .unwrap();
    set_mtime(&source.join("latest-ledger-link"), 1_500_000_000);
    set_mtime(&source.join("vault-archive.img"), 1_400_000_000);
    chmod(&deep, 0o700);
}

/// Every entry below `root` (the root itself left out), by its path: kind,
/// mode, mtime and a content hash or link target.
fn tree(root: &Path) -> BTreeMap<String, String> {
    fn walk(root: &Path, dir: &Path, out: &mut BTreeMap<String, String>) {
        for entry in std::fs::read_dir(dir).unwrap() {
            let path = entry.unwrap().path();
            let rel = path.strip_prefix(root).unwrap().display().to_string();
            let meta = std::fs::symlink_metadata(&path).unwrap();
            let (mode, mtime) = (meta.mode() & 0o7777, mtime_ns(&meta));
            let what = if meta.file_type().is_symlink() {
                let target = std::fs::read_link(&path).unwrap();
                format!("link {mode:o} {mtime} {}", target.display())
            } else if meta.is_dir() {
                walk(root, &path, out);
                format!("dir {mode:o} {mtime}")
            } else {
                let bytes = std::fs::read(&path).unwrap();
                format!("file {mode:o} {mtime} {}", blake3::hash(&bytes))
            };
            out.insert(rel, what);
        }
    }
    let mut out = BTreeMap::new();
    walk(root, root, &mut out);
    out
}

/// The mirror's objects opened with `secret`, described as [`tree`] does;
/// also checks that every object is where its real path says and that
/// every entry of the mirror is a `hh/…` object or its directory.
fn opened(mirror: &Path, secret: &FolderSecret) -> BTreeMap<String, String> {
    let public = secret.public();
    let mut opener = Opener::new(secret);
    let mut out = BTreeMap::new();
    for shard in std::fs::read_dir(mirror).unwrap() {
        let shard = shard.unwrap();
        let name = shard.file_name();
        assert!(is_hex(name.as_bytes(), 2), "{name:?} in the mirror");
        assert!(shard.file_type().unwrap().is_dir(), "{name:?} is not a dir");
        for object in std::fs::read_dir(shard.path()).unwrap() {
            let object = object.unwrap();
            let leaf = object.file_name();
            assert!(is_hex(leaf.as_bytes(), 30), "{leaf:?} in {name:?}");
            let meta = std::fs::symlink_metadata(object.path()).unwrap();
            assert!(meta.is_file(), "{leaf:?} is not a regular file");
            assert_eq!(meta.mode() & 0o7777, 0o600, "{leaf:?}");
            assert_eq!(mtime_ns(&meta), 0, "{leaf:?}");
            let sealed = std::fs::read(object.path()).unwrap();
            let (header, content) = opener.open(&sealed).unwrap();
            let at = format!("{}/{}", name.to_string_lossy(), leaf.to_string_lossy());
            assert_eq!(public.opaque_path(&header.path).to_string(), at);
            let (mode, mtime) = (header.mode, header.mtime_ns);
            let what = match &header.kind {
                SealedKind::File => {
                    assert_eq!(content.len() as u64, header.size);
                    format!("file {mode:o} {mtime} {}", blake3::hash(&content))
                }
                SealedKind::Dir => format!("dir {mode:o} {mtime}"),
                SealedKind::Symlink { target } => {
                    format!("link {mode:o} {mtime} {}", String::from_utf8_lossy(target))
                }
            };
            assert!(out.insert(header.path.to_string(), what).is_none());
        }
    }
    out
}

fn is_hex(name: &[u8], len: usize) -> bool {
    name.len() == len && name.iter().all(|b| matches!(b, b'0'..=b'9' | b'a'..=b'f'))
}

/// A cheap hash of the integers the scan looks up (every byte of the
/// store is a lookup).
#[derive(Default)]
struct Mix(u64);

impl Hasher for Mix {
    fn finish(&self) -> u64 {
        self.0
    }
    fn write(&mut self, bytes: &[u8]) {
        for b in bytes {
            self.0 = (self.0.rotate_left(8) ^ u64::from(*b)).wrapping_mul(0x9e37_79b9_7f4a_7c15);
        }
    }
    fn write_u64(&mut self, n: u64) {
        self.0 = (self.0 ^ n).wrapping_mul(0x9e37_79b9_7f4a_7c15);
    }
    fn write_u128(&mut self, n: u128) {
        self.write_u64(n as u64 ^ ((n >> 64) as u64).rotate_left(29));
    }
}

type Set<T> = HashSet<T, BuildHasherDefault<Mix>>;

/// What the receiver must never hold: every name and link target of the
/// source, and every 16-byte window of every file's content.
#[derive(Default)]
struct Secrets {
    names: Vec<Vec<u8>>,
    /// The first 6 bytes of each name.
    starts: Set<u64>,
    windows: Set<u128>,
}

/// The `N` bytes at the start of `bytes` as an integer.
fn word<const N: usize>(bytes: &[u8]) -> u128 {
    let mut w = [0u8; 16];
    w[..N].copy_from_slice(&bytes[..N]);
    u128::from_le_bytes(w)
}

impl Secrets {
    fn name(&mut self, name: Vec<u8>) {
        assert!(name.len() >= 6, "a name too short to look for");
        self.starts.insert(word::<6>(&name) as u64);
        self.names.push(name);
    }

    fn extend(&mut self, more: Secrets) {
        more.names.into_iter().for_each(|n| self.name(n));
        self.windows.extend(more.windows);
    }
}

fn secrets(source: &Path) -> Secrets {
    let mut secrets = Secrets::default();
    for rel in tree(source).keys() {
        let path = source.join(rel);
        secrets.name(path.file_name().unwrap().as_bytes().to_vec());
        let meta = std::fs::symlink_metadata(&path).unwrap();
        if meta.file_type().is_symlink() {
            let target = std::fs::read_link(&path).unwrap();
            secrets.name(target.as_os_str().as_bytes().to_vec());
        } else if meta.is_file() {
            let bytes = std::fs::read(&path).unwrap();
            for w in bytes.windows(16) {
                secrets.windows.insert(word::<16>(w));
            }
        }
    }
    secrets
}

/// Every file below `dir` and its path relative to `dir`.
fn every_file(root: &Path, dir: &Path, out: &mut Vec<(PathBuf, Vec<u8>)>) {
    for entry in std::fs::read_dir(dir).unwrap() {
        let path = entry.unwrap().path();
        let meta = std::fs::symlink_metadata(&path).unwrap();
        let bytes = if meta.is_dir() {
            every_file(root, &path, out);
            Vec::new()
        } else if meta.file_type().is_symlink() {
            std::fs::read_link(&path)
                .unwrap()
                .as_os_str()
                .as_bytes()
                .to_vec()
        } else {
            std::fs::read(&path).unwrap()
        };
        out.push((path.strip_prefix(root).unwrap().to_path_buf(), bytes));
    }
}

/// Scans every byte of every file under `store` (and every path in it) for
/// anything of `secrets`.
fn assert_nothing_readable(store: &Path, secrets: &Secrets) {
    let mut files = Vec::new();
    every_file(store, store, &mut files);
    assert!(files.len() > 10, "the store holds {} files", files.len());
    for (path, bytes) in &files {
        let name = path.as_os_str().as_bytes();
        for haystack in [name, &bytes[..]] {
            for (at, w) in haystack.windows(6).enumerate() {
                if !secrets.starts.contains(&(word::<6>(w) as u64)) {
                    continue;
                }
                for secret in &secrets.names {
                    assert!(
                        !haystack[at..].starts_with(secret),
                        "{} holds the name {:?} at {at}",
                        path.display(),
                        String::from_utf8_lossy(secret)
                    );
                }
            }
            let found = haystack
                .windows(16)
                .position(|w| secrets.windows.contains(&word::<16>(w)));
            if let Some(at) = found {
                panic!("{} holds file content at {at}", path.display());
            }
        }
    }
}

/// The versions the receiver keeps of the object of `path`.
fn versions(receiver: &Receiver, secret: &FolderSecret, path: &str) -> usize {
    let store = &receiver.shared.store;
    let laptop = store
        .sender_by_name(&Name::new("laptop").unwrap())
        .unwrap()
        .unwrap();
    let ns = store.namespace(&laptop, &Name::new("docs").unwrap());
    let opaque = secret
        .public()
        .opaque_path(&RelPath::from_bytes(path.as_bytes().to_vec()).unwrap());
    store.versions(&ns, &opaque).unwrap().len()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_encrypted_folder_is_kept_sealed_and_opens_to_the_source() {
    let dir = tempfile::tempdir().unwrap();
    let source = dir.path().join("source");
    make_tree(&source);
    let secret = FolderSecret::generate().unwrap();
    let ctx = sealed_sender(&source, &dir.path().join("state"), &secret, false);
    let receiver = Receiver::new(&dir.path().join("store"), &ctx);

    let first = receiver.run(&ctx).await;
    assert_eq!(first.errors, 0, "{:?}", first.problems);
    // 12 ledgers, the deep one, the empty file, the vault, the link.
    assert_eq!(first.files_sent, 16);
    assert_eq!(first.dirs_sent, 4);
    let secrets = secrets(&source);
    assert_nothing_readable(&receiver.store_dir, &secrets);
    assert_eq!(opened(&receiver.mirror(), &secret), tree(&source));

    // An edit, a new file, a chmod (a metadata-only change re-sends its
    // object), a deleted file and a deleted directory with its contents.
    let ledgers = source.join("quokka-papers/marmot-ledgers");
    std::fs::write(
        ledgers.join("ledger-03.txt"),
        b"ledger 3 was settled in full today\n",
    )
    .unwrap();
    std::fs::write(
        ledgers.join("ledger-new.txt"),
        b"a new ledger opened for the wombat\n",
    )
    .unwrap();
    chmod(&ledgers.join("ledger-04.txt"), 0o444);
    std::fs::remove_file(ledgers.join("ledger-05.txt")).unwrap();
    std::fs::remove_dir_all(ledgers.join("capybara-deep")).unwrap();
    let second = receiver.run(&ctx).await;
    assert_eq!(second.errors, 0, "{:?}", second.problems);
    assert_eq!(second.files_sent, 3);
    assert_eq!(second.files_deleted, 3);
    assert_eq!(opened(&receiver.mirror(), &secret), tree(&source));
    let mut secrets = secrets;
    secrets.extend(self::secrets(&source));
    assert_nothing_readable(&receiver.store_dir, &secrets);
    // The deleted entries' objects are archived (their one version kept),
    // the edited one's old version kept beside the current one.
    for gone in [
        "quokka-papers/marmot-ledgers/ledger-05.txt",
        "quokka-papers/marmot-ledgers/capybara-deep",
        "quokka-papers/marmot-ledgers/capybara-deep/deep-ledger.txt",
    ] {
        assert_eq!(versions(&receiver, &secret, gone), 1, "{gone}");
    }
    let edited = "quokka-papers/marmot-ledgers/ledger-03.txt";
    assert_eq!(versions(&receiver, &secret, edited), 2);

    // Nothing changed: nothing is sent.
    let third = receiver.run(&ctx).await;
    assert_eq!(third.files_sent + third.dirs_sent + third.files_deleted, 0);
    assert_eq!(receiver.statuses(), vec!["complete"; 3]);
    receiver.shutdown.cancel();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_write_only_folder_is_kept_sealed_and_opens_with_the_private_key() {
    let dir = tempfile::tempdir().unwrap();
    let source = dir.path().join("source");
    make_tree(&source);
    let secret = FolderSecret::generate().unwrap();
    let ctx = sealed_sender(&source, &dir.path().join("state"), &secret, true);
    let receiver = Receiver::new(&dir.path().join("store"), &ctx);

    let first = receiver.run(&ctx).await;
    assert_eq!(first.errors, 0, "{:?}", first.problems);
    assert_nothing_readable(&receiver.store_dir, &secrets(&source));
    assert_eq!(opened(&receiver.mirror(), &secret), tree(&source));

    std::fs::write(source.join("vault-archive.img"), b"the vault was emptied").unwrap();
    let second = receiver.run(&ctx).await;
    assert_eq!(second.errors, 0, "{:?}", second.problems);
    assert_eq!(second.files_sent, 1);
    assert_eq!(opened(&receiver.mirror(), &secret), tree(&source));
    assert_eq!(versions(&receiver, &secret, "vault-archive.img"), 2);
    receiver.shutdown.cancel();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_large_sealed_file_costs_what_changed_on_the_wire() {
    const MIB: usize = 1 << 20;
    let dir = tempfile::tempdir().unwrap();
    let source = dir.path().join("source");
    std::fs::create_dir_all(source.join("otter-films")).unwrap();
    let big = source.join("otter-films/otter-documentary.raw");
    let mut data = noise(4 * MIB, 11);
    std::fs::write(&big, &data).unwrap();
    let secret = FolderSecret::generate().unwrap();
    let ctx = sealed_sender(&source, &dir.path().join("state"), &secret, false);
    let receiver = Receiver::new(&dir.path().join("store"), &ctx);
    let mut secrets = secrets(&source);

    let first = receiver.run(&ctx).await;
    assert_eq!(first.errors, 0, "{:?}", first.problems);
    assert!(first.bytes_file_data_wire > 4 * MIB as u64);
    assert_eq!(opened(&receiver.mirror(), &secret), tree(&source));

    // Each change costs about what it changed; every version opens to the
    // source as it was.
    let check = |what: &str, wire: u64, limit: usize| {
        assert!(
            wire <= limit as u64,
            "{what}: {wire} bytes of file data on the wire"
        );
    };
    data.insert(0, 0x42);
    std::fs::write(&big, &data).unwrap();
    let inserted = receiver.run(&ctx).await;
    assert_eq!(inserted.errors, 0, "{:?}", inserted.problems);
    check("1 byte inserted", inserted.bytes_file_data_wire, 256 << 10);
    assert_eq!(opened(&receiver.mirror(), &secret), tree(&source));

    data[2 * MIB..3 * MIB].copy_from_slice(&noise(MIB, 12));
    std::fs::write(&big, &data).unwrap();
    let overwritten = receiver.run(&ctx).await;
    assert_eq!(overwritten.errors, 0, "{:?}", overwritten.problems);
    check(
        "1 MiB overwritten",
        overwritten.bytes_file_data_wire,
        MIB + (384 << 10),
    );
    assert_eq!(opened(&receiver.mirror(), &secret), tree(&source));

    let renamed = source.join("otter-films/otter-documentary-final.raw");
    std::fs::rename(&big, &renamed).unwrap();
    let moved = receiver.run(&ctx).await;
    assert_eq!(moved.errors, 0, "{:?}", moved.problems);
    check("renamed", moved.bytes_file_data_wire, 128 << 10);
    assert_eq!(opened(&receiver.mirror(), &secret), tree(&source));

    chmod(&renamed, 0o400);
    let touched = receiver.run(&ctx).await;
    assert_eq!(touched.errors, 0, "{:?}", touched.problems);
    check("chmod", touched.bytes_file_data_wire, 128 << 10);
    assert_eq!(opened(&receiver.mirror(), &secret), tree(&source));

    let path = "otter-films/otter-documentary-final.raw";
    assert_eq!(versions(&receiver, &secret, path), 2);
    assert_eq!(
        versions(&receiver, &secret, "otter-films/otter-documentary.raw"),
        3
    );
    secrets.extend(self::secrets(&source));
    assert_nothing_readable(&receiver.store_dir, &secrets);
    receiver.shutdown.cancel();
}
