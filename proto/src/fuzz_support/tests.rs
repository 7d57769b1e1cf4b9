//! The fuzz harnesses, bounded: the kept corpus plus a fixed number of
//! seeded random cases per target, so every `cargo test` exercises them.

use std::collections::HashSet;
use std::path::PathBuf;

use super::*;

/// Random cases per target (fixed seed: a failure reproduces).
const CASES: u64 = 2_000;

fn corpus_dir(target: &str) -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
        .join("..")
        .join(corpus_home(target))
        .join("corpus")
        .join(target)
}

/// Every file of a target's corpus (the kept seeds and anything a fuzzing
/// run added).
fn corpus(target: &str) -> Vec<(PathBuf, Vec<u8>)> {
    let dir = corpus_dir(target);
    let mut files: Vec<_> = std::fs::read_dir(&dir)
        .unwrap_or_else(|e| panic!("corpus {}: {e}", dir.display()))
        .map(|e| e.unwrap().path())
        .collect();
    files.sort();
    assert!(!files.is_empty(), "empty corpus {}", dir.display());
    files
        .into_iter()
        .map(|p| {
            let bytes = std::fs::read(&p).unwrap();
            (p, bytes)
        })
        .collect()
}

/// The seeds in the repository are the ones [`seed_corpus`] generates. Set
/// `FERRY_WRITE_CORPUS=1` to (re)write them after a format change.
#[test]
fn kept_corpus_matches_the_generated_seeds() {
    let write = std::env::var_os("FERRY_WRITE_CORPUS").is_some();
    for (target, name, bytes) in seed_corpus() {
        let path = corpus_dir(target).join(&name);
        if write {
            std::fs::create_dir_all(corpus_dir(target)).unwrap();
            std::fs::write(&path, &bytes).unwrap();
        }
        let kept = std::fs::read(&path)
            .unwrap_or_else(|e| panic!("{}: {e} (FERRY_WRITE_CORPUS=1 writes it)", path.display()));
        assert_eq!(kept, bytes, "{} differs from its seed", path.display());
    }
}

#[test]
fn frame_decode_bounded() {
    for (_, bytes) in corpus("frame_decode") {
        check_frame_decode(&bytes);
    }
    let mut rng = Rng::new(1);
    for _ in 0..CASES {
        // Valid frames, frames with one byte changed, and noise.
        let message = arbitrary_message(&mut rng);
        let mut bytes = frame::encode(&message).unwrap();
        bytes.extend(frame::encode(&arbitrary_message(&mut rng)).unwrap());
        check_frame_decode(&bytes);
        let at = rng.below(bytes.len() as u64) as usize;
        bytes[at] ^= 1 << rng.below(8);
        check_frame_decode(&bytes);
        bytes.truncate(rng.below(bytes.len() as u64) as usize);
        check_frame_decode(&bytes);
        check_frame_decode(&rng.bytes(64));
    }
}

#[test]
fn message_decode_bounded() {
    for (_, bytes) in corpus("message_decode") {
        check_message_decode(&bytes);
    }
    let mut rng = Rng::new(2);
    for _ in 0..CASES {
        let message = arbitrary_message(&mut rng);
        let mut body = postcard::to_stdvec(&message).unwrap();
        check_message_decode(&body);
        let at = rng.below(body.len() as u64) as usize;
        body[at] = rng.next_u64() as u8;
        check_message_decode(&body);
        check_message_decode(&rng.bytes(48));
    }
}

#[test]
fn path_bounded() {
    for (_, bytes) in corpus("path") {
        check_path(&bytes);
    }
    let mut rng = Rng::new(3);
    for _ in 0..CASES {
        check_path(&arbitrary_path_bytes(&mut rng));
        check_path(&rng.bytes(8));
    }
}

/// Every kind of message round-trips through encode and decode, and the
/// generator reaches every kind.
#[test]
fn every_message_round_trips() {
    let mut rng = Rng::new(4);
    let mut kinds = HashSet::new();
    for _ in 0..CASES {
        let message = arbitrary_message(&mut rng);
        kinds.insert(std::mem::discriminant(&message));
        check_round_trip(&message);
    }
    assert_eq!(kinds.len(), 32, "the generator misses message kinds");
}

/// The independent rule itself, on cases decided by hand (so that it is not
/// wrong in the same way as the code it checks).
#[test]
fn path_rule_by_hand() {
    // Components of 254 bytes and a slash, then the rest: `n` bytes.
    let max = |n: usize| {
        let mut p = Vec::new();
        while n - p.len() > 255 {
            p.extend([b'x'; 254]);
            p.push(b'/');
        }
        p.extend(std::iter::repeat_n(b'x', n - p.len()));
        p
    };
    let cases: &[(&[u8], bool)] = &[
        (b"a", true),
        (b"a/b/c", true),
        (b"...", true),
        (b".a/a.", true),
        (b"..a", true),
        (b"\xff\xfe", true),
        (b"", false),
        (b"/", false),
        (b"/a", false),
        (b"a/", false),
        (b"a//b", false),
        (b".", false),
        (b"..", false),
        (b"a/./b", false),
        (b"a/..", false),
        (b"a\0", false),
        (&max(4096), true),
        (&max(4097), false),
        (&[b'c'; 255], true),
        (&[b'c'; 256], false),
    ];
    for (bytes, ok) in cases {
        assert_eq!(
            spec_rel_path(bytes),
            *ok,
            "{:?}",
            String::from_utf8_lossy(bytes)
        );
        check_path(bytes);
    }
}

/// A structured source never runs dry into a panic: empty input gives
/// zeros, and a generated message still comes out.
#[test]
fn bytes_source_is_total() {
    let mut empty = Bytes::new(&[]);
    assert_eq!(empty.next_u64(), 0);
    check_round_trip(&arbitrary_message(&mut empty));
    let mut wide = Bytes::new(&[0x80, 1, 2, 3, 4, 5, 6, 7, 9]);
    assert_eq!(wide.next_u64(), 0x8001_0203_0405_0607);
    assert_eq!(wide.next_u64(), 9);
    assert!(wide.is_empty());
}
