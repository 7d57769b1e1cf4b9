//! Round trips, splits, tampering, truncation, splicing, malformed
//! plaintexts, Padmé, opaque paths, and the known-answer tests that pin the
//! format.

use super::keys::object_key;
use super::*;
use x25519_dalek::StaticSecret;

fn bytes<const N: usize>(seed: u8) -> [u8; N] {
    let mut out = [0u8; N];
    blake3::Hasher::new()
        .update(&[seed])
        .finalize_xof()
        .fill(&mut out);
    out
}

fn content(len: usize, seed: u8) -> Vec<u8> {
    let mut out = vec![0u8; len];
    blake3::Hasher::new()
        .update(b"content")
        .update(&[seed])
        .finalize_xof()
        .fill(&mut out);
    out
}

fn secret() -> FolderSecret {
    FolderSecret::from_bytes(&bytes(1))
}

fn path(p: &str) -> RelPath {
    RelPath::from_bytes(p).expect("valid path")
}

fn file(p: &str, size: u64) -> SealedHeader {
    SealedHeader {
        path: path(p),
        kind: SealedKind::File,
        mode: 0o644,
        mtime_ns: 1_764_500_000_123_456_789,
        size,
    }
}

/// Seals `content` under `header` in one push, with a given run and salt.
fn seal(run: &RunSealer, header: &SealedHeader, content: &[u8], salt: u8) -> Vec<u8> {
    let mut object = run
        .object_with_salt(header, bytes(salt))
        .expect("object starts");
    let mut out = Vec::new();
    object.push(content, &mut out).expect("push");
    object.finish(&mut out).expect("finish");
    out
}

fn run(seed: u8) -> RunSealer {
    RunSealer::with_ephemeral(&secret().public(), bytes(seed)).expect("run key")
}

/// The header length of `file(p, size)` (postcard, without the u32).
fn header_len(header: &SealedHeader) -> usize {
    postcard::to_allocvec(header).expect("encodes").len()
}

/// Seals an arbitrary plaintext as blocks of the format, for objects a
/// correct sealer never makes.
fn seal_plain(plain: &[u8], last_flags: impl Fn(u64, u64) -> bool) -> Vec<u8> {
    let (ephemeral, run) = secret()
        .public()
        .run_key(StaticSecret::from(bytes::<32>(9)))
        .expect("run key");
    let mut prefix = [0u8; PREFIX];
    prefix[0] = VERSION;
    prefix[1..33].copy_from_slice(&ephemeral);
    prefix[33..].copy_from_slice(&bytes::<16>(10));
    let key = object_key(&run, &prefix);
    let mut out = prefix.to_vec();
    let blocks = plain.chunks(BLOCK).count() as u64;
    for (i, chunk) in plain.chunks(BLOCK).enumerate() {
        let mut block = chunk.to_vec();
        let tag = key
            .seal_in_place_separate_tag(
                nonce(i as u64, last_flags(i as u64, blocks)),
                ring::aead::Aad::from(&prefix),
                &mut block,
            )
            .expect("seals");
        out.extend_from_slice(&block);
        out.extend_from_slice(tag.as_ref());
    }
    out
}

fn is_last(i: u64, blocks: u64) -> bool {
    i + 1 == blocks
}

fn plain_of(header: &SealedHeader, content: &[u8], plain_len: usize) -> Vec<u8> {
    let encoded = postcard::to_allocvec(header).expect("encodes");
    let mut plain = (encoded.len() as u32).to_le_bytes().to_vec();
    plain.extend_from_slice(&encoded);
    plain.extend_from_slice(content);
    plain.resize(plain_len, 0);
    plain
}

fn open(sealed: &[u8]) -> Result<(SealedHeader, Vec<u8>), OpenError> {
    Opener::new(&secret()).open(sealed)
}

#[test]
fn files_of_every_edge_size_round_trip() {
    let header0 = file("a/b.txt", 0);
    let h = header_len(&header0) + 1; // size grows the varint past 127
    let sizes = [
        0,
        1,
        100,
        BLOCK - 1,
        BLOCK,
        BLOCK + 1,
        BLOCK - 4 - h, // plain is exactly one full block
        2 * BLOCK - 4 - h,
        3 * BLOCK + 5,
        7 * BLOCK + 12_345,
        (4 << 20) + 1, // padded by two whole blocks of zeros and more
    ];
    let run = run(2);
    for size in sizes {
        let header = file("a/b.txt", size as u64);
        let data = content(size, 3);
        let sealed = seal(&run, &header, &data, 4);
        assert_eq!(
            RunSealer::object_len(&header).expect("len"),
            sealed.len() as u64,
            "object_len of {size}"
        );
        let layout = Layout::new(header_len(&header), size as u64).expect("layout");
        assert_eq!(
            (sealed.len() - PREFIX).div_ceil(BLOCK + TAG) as u64,
            layout.blocks
        );
        let (opened, got) = open(&sealed).expect("opens");
        assert_eq!(opened, header, "header of {size}");
        assert!(got == data, "content of {size}");
    }
}

#[test]
fn a_directory_and_a_symlink_round_trip() {
    let run = run(2);
    for header in [
        SealedHeader {
            path: path("photos/2026"),
            kind: SealedKind::Dir,
            mode: 0o755,
            mtime_ns: -5,
            size: 0,
        },
        SealedHeader {
            path: path("latest"),
            kind: SealedKind::Symlink {
                target: b"photos/2026/\xff".to_vec(),
            },
            mode: 0o777,
            mtime_ns: 0,
            size: 0,
        },
    ] {
        let sealed = seal(&run, &header, &[], 5);
        assert_eq!(
            RunSealer::object_len(&header).expect("len"),
            sealed.len() as u64
        );
        assert_eq!(open(&sealed).expect("opens"), (header, Vec::new()));
    }
}

/// Split sizes from a seed: 1s, primes, whole blocks and empties mixed.
fn splits(total: usize, seed: u64) -> Vec<usize> {
    let mut state = seed;
    let mut out = Vec::new();
    let mut left = total;
    while left > 0 {
        state = state
            .wrapping_mul(6_364_136_223_846_793_005)
            .wrapping_add(1_442_695_040_888_963_407);
        let n = match (state >> 33) % 5 {
            0 => 0,
            1 => 1,
            2 => 7919,
            3 => BLOCK + TAG,
            _ => ((state >> 20) as usize) % (3 * BLOCK),
        };
        let n = n.min(left);
        out.push(n);
        left -= n;
    }
    out
}

#[test]
fn pushing_content_in_any_split_gives_the_same_bytes() {
    let run = run(2);
    for size in [0, 10, BLOCK + 3, 5 * BLOCK / 2] {
        let header = file("x", size as u64);
        let data = content(size, 6);
        let whole = seal(&run, &header, &data, 7);
        let mut cases: Vec<Vec<usize>> = (1..6).map(|seed| splits(size, seed)).collect();
        cases.push(vec![1; size]);
        for split in cases {
            let mut object = run.object_with_salt(&header, bytes(7)).expect("starts");
            let mut out = Vec::new();
            let mut at = 0;
            for n in split {
                object.push(&data[at..at + n], &mut out).expect("push");
                at += n;
            }
            object.finish(&mut out).expect("finish");
            assert!(out == whole, "size {size}");
        }
    }
}

#[test]
fn opening_with_pushes_in_any_split_gives_the_content() {
    let run = run(2);
    for size in [0, 10, BLOCK - 30, BLOCK + 3, 5 * BLOCK / 2] {
        let header = file("x", size as u64);
        let data = content(size, 6);
        let sealed = seal(&run, &header, &data, 7);
        let mut cases: Vec<Vec<usize>> = (1..6).map(|seed| splits(sealed.len(), seed)).collect();
        cases.push(vec![1; sealed.len()]);
        for split in cases {
            let mut opener = Opener::new(&secret());
            let mut object = opener.object();
            let mut out = Vec::new();
            let mut at = 0;
            for n in split {
                object.push(&sealed[at..at + n], &mut out).expect("push");
                at += n;
                assert!(out.len() <= data.len() && out == data[..out.len()]);
            }
            assert_eq!(object.finish(&mut out).expect("finish"), header);
            assert!(out == data, "size {size}");
        }
    }
}

#[test]
fn the_header_is_known_once_block_0_is_open() {
    let header = file("big", 3 * BLOCK as u64);
    let sealed = seal(&run(2), &header, &content(3 * BLOCK, 1), 3);
    let mut opener = Opener::new(&secret());
    let mut object = opener.object();
    let mut out = Vec::new();
    object
        .push(&sealed[..PREFIX + BLOCK + TAG], &mut out)
        .expect("push");
    assert_eq!(object.header(), None, "block 0 might still be the last");
    object
        .push(&sealed[PREFIX + BLOCK + TAG..][..1], &mut out)
        .expect("push");
    assert_eq!(object.header(), Some(&header));
}

/// The offsets worth tampering with in `sealed`: every prefix byte, the
/// first, a middle and the last ciphertext byte and every tag byte of each
/// block.
fn tamper_offsets(sealed: &[u8]) -> Vec<usize> {
    let mut offsets: Vec<usize> = (0..PREFIX).collect();
    let mut start = PREFIX;
    while start < sealed.len() {
        let end = (start + BLOCK + TAG).min(sealed.len());
        let tag = end - TAG;
        offsets.extend([start, (start + tag) / 2, tag.saturating_sub(1).max(start)]);
        offsets.extend(tag..end);
        start = end;
    }
    offsets
}

#[test]
fn tampering_with_any_byte_fails_without_a_header() {
    let run = run(2);
    for size in [0, 300, 2 * BLOCK + 77] {
        let header = file("secret/plans.txt", size as u64);
        let sealed = seal(&run, &header, &content(size, 8), 9);
        for at in tamper_offsets(&sealed) {
            let mut bad = sealed.clone();
            bad[at] ^= 0x01;
            let mut opener = Opener::new(&secret());
            let mut object = opener.object();
            let mut out = Vec::new();
            let pushed = object.push(&bad, &mut out);
            if at < PREFIX + BLOCK + TAG {
                assert_eq!(object.header(), None, "byte {at} of block 0 or before");
                assert!(out.is_empty(), "nothing opened from byte {at}");
            }
            let error = match pushed {
                Err(error) => error,
                Ok(()) => object.finish(&mut out).expect_err("tampered object opened"),
            };
            let expected = if at == 0 {
                OpenError::Version(VERSION ^ 1)
            } else {
                OpenError::Authentication
            };
            assert_eq!(error, expected, "size {size}, byte {at}");
            assert!(open(&bad).is_err());
        }
    }
}

#[test]
fn truncating_at_or_inside_any_block_fails() {
    let header = file("t", 3 * BLOCK as u64);
    let sealed = seal(&run(2), &header, &content(3 * BLOCK, 1), 3);
    let mut cuts = vec![0, 1, PREFIX - 1, PREFIX, PREFIX + 1, PREFIX + TAG];
    let mut boundary = PREFIX;
    while boundary < sealed.len() {
        cuts.extend([boundary, boundary + 1, boundary + BLOCK / 2]);
        boundary += BLOCK + TAG;
    }
    cuts.push(sealed.len() - 1);
    for cut in cuts.into_iter().filter(|&cut| cut < sealed.len()) {
        let error = open(&sealed[..cut]).expect_err("truncated object opened");
        assert!(
            matches!(error, OpenError::Truncated | OpenError::Authentication),
            "cut at {cut}: {error:?}"
        );
    }
    let small = seal(&run(2), &file("s", 10), b"0123456789", 3);
    for cut in 0..small.len() {
        assert!(open(&small[..cut]).is_err(), "cut at {cut}");
    }
}

#[test]
fn swapped_spliced_or_appended_blocks_fail() {
    let run = run(2);
    let size = 4 * BLOCK;
    let a = seal(&run, &file("a", size as u64), &content(size, 1), 3);
    let b = seal(&run, &file("a", size as u64), &content(size, 2), 4);
    let block = |i: usize| PREFIX + i * (BLOCK + TAG)..PREFIX + (i + 1) * (BLOCK + TAG);

    let mut swapped = a.clone();
    swapped[block(1)].copy_from_slice(&a[block(2)]);
    swapped[block(2)].copy_from_slice(&a[block(1)]);
    assert_eq!(open(&swapped), Err(OpenError::Authentication));

    for i in 0..4 {
        let mut spliced = a.clone();
        spliced[block(i)].copy_from_slice(&b[block(i)]);
        assert_eq!(open(&spliced), Err(OpenError::Authentication), "block {i}");
    }

    let mut appended = a.clone();
    appended.extend_from_slice(&a[block(1)]);
    assert_eq!(
        open(&appended),
        Err(OpenError::Malformed("bytes after the last block"))
    );
    let small = seal(&run, &file("s", 10), b"0123456789", 3);
    let mut appended = small.clone();
    appended.extend_from_slice(&small[PREFIX..]);
    assert!(open(&appended).is_err());
    // The last block of one object moved in front of another's.
    let mut dropped = a[..block(2).end].to_vec();
    dropped.extend_from_slice(&a[block(3)]);
    assert!(open(&dropped).is_err());
}

#[test]
fn another_key_does_not_open() {
    let sealed = seal(&run(2), &file("a", 5), b"hello", 3);
    let other = FolderSecret::from_bytes(&bytes(99));
    assert_eq!(
        Opener::new(&other).open(&sealed),
        Err(OpenError::Authentication)
    );
    // Same X25519 key, another naming secret: the same key opens; naming
    // is not part of the object's key.
    let mut mixed = secret().to_bytes();
    mixed[32..].copy_from_slice(&bytes::<32>(98));
    assert!(Opener::new(&FolderSecret::from_bytes(&mixed))
        .open(&sealed)
        .is_ok());
}

#[test]
fn a_low_order_key_is_refused() {
    let mut weak = [0u8; 64];
    weak[32..].copy_from_slice(&bytes::<32>(5));
    let weak = FolderPublic::from_bytes(&weak);
    assert!(matches!(
        RunSealer::new(&weak),
        Err(SealError::WeakPublicKey)
    ));
    let mut sealed = seal(&run(2), &file("a", 5), b"hello", 3);
    sealed[1..33].fill(0);
    assert_eq!(open(&sealed), Err(OpenError::Authentication));
}

#[test]
fn malformed_plaintexts_are_refused() {
    let header = file("m", 10);
    let data = b"0123456789";
    let plain_len = padme((4 + header_len(&header) + 10) as u64) as usize;
    let good = plain_of(&header, data, plain_len);
    assert!(
        open(&seal_plain(&good, is_last)).is_ok(),
        "the crafted form"
    );
    assert!(plain_len > 4 + header_len(&header) + 10, "room for padding");

    let mut padded = good.clone();
    *padded.last_mut().expect("padding") = 1;
    assert_eq!(
        open(&seal_plain(&padded, is_last)),
        Err(OpenError::Malformed("non-zero padding"))
    );

    let mut longer = good.clone();
    longer.push(0);
    assert_eq!(
        open(&seal_plain(&longer, is_last)),
        Err(OpenError::Malformed(
            "a length that disagrees with the header"
        ))
    );

    let mut bad_len = good.clone();
    bad_len[..4].copy_from_slice(&(BLOCK as u32).to_le_bytes());
    assert_eq!(
        open(&seal_plain(&bad_len, is_last)),
        Err(OpenError::Malformed("a header longer than its block"))
    );

    let dir = SealedHeader {
        kind: SealedKind::Dir,
        ..header.clone()
    };
    let plain = plain_of(&dir, data, plain_len);
    assert_eq!(
        open(&seal_plain(&plain, is_last)),
        Err(OpenError::Malformed("a directory or symlink with content"))
    );

    // One block sealed as not the last.
    assert_eq!(
        open(&seal_plain(&good, |_, _| false)),
        Err(OpenError::Authentication)
    );
    // A last block in the middle, and blocks with a wrong length.
    let big = file("m", 2 * BLOCK as u64);
    let big_len = padme((4 + header_len(&big) + 2 * BLOCK) as u64) as usize;
    let plain = plain_of(&big, &content(2 * BLOCK, 1), big_len);
    assert!(
        open(&seal_plain(&plain, is_last)).is_ok(),
        "the crafted form"
    );
    assert!(open(&seal_plain(&plain, |_, _| true)).is_err());
    assert!(open(&seal_plain(&plain[..plain.len() - 1], is_last)).is_err());
}

#[test]
fn a_header_longer_than_a_block_is_refused() {
    let long = SealedHeader {
        path: path(&"d/".repeat(1000)[..1999]),
        kind: SealedKind::Symlink {
            target: vec![b'x'; BLOCK],
        },
        mode: 0o777,
        mtime_ns: 0,
        size: 0,
    };
    assert!(matches!(
        RunSealer::object_len(&long),
        Err(SealError::HeaderTooLong { .. })
    ));
    assert!(matches!(
        run(2).object(long),
        Err(SealError::HeaderTooLong { .. })
    ));
}

#[test]
fn content_must_match_the_announced_size() {
    let run = run(2);
    let mut object = run.object(file("a", 3)).expect("starts");
    let mut out = Vec::new();
    assert!(matches!(
        object.push(b"abcd", &mut out),
        Err(SealError::SizeMismatch {
            expected: 3,
            got: 4
        })
    ));
    assert!(out.is_empty(), "a refused push writes nothing");
    object.push(b"ab", &mut out).expect("push");
    assert!(matches!(
        object.finish(&mut out),
        Err(SealError::SizeMismatch {
            expected: 3,
            got: 2
        })
    ));
    let dir = SealedHeader {
        kind: SealedKind::Dir,
        ..file("d", 1)
    };
    assert!(matches!(
        run.object(dir),
        Err(SealError::ContentOfNonFile { size: 1 })
    ));
    assert!(matches!(
        RunSealer::object_len(&file("huge", u64::MAX - 100)),
        Err(SealError::TooLarge { .. })
    ));
}

#[test]
fn the_version_byte_is_checked_first() {
    let mut sealed = seal(&run(2), &file("a", 5), b"hello", 3);
    sealed[0] = 2;
    let mut opener = Opener::new(&secret());
    let mut object = opener.object();
    let mut out = Vec::new();
    assert_eq!(
        object.push(&sealed[..1], &mut out),
        Err(OpenError::Version(2))
    );
    assert_eq!(
        object.push(&sealed[1..], &mut out),
        Err(OpenError::Version(2)),
        "a failure repeats"
    );
    assert_eq!(object.finish(&mut out), Err(OpenError::Version(2)));
}

#[test]
fn fresh_runs_and_objects_draw_fresh_randomness() {
    let public = secret().public();
    let first = RunSealer::new(&public).expect("run");
    let second = RunSealer::new(&public).expect("run");
    let header = file("a", 1);
    let mut a = Vec::new();
    let mut object = first.object(header.clone()).expect("object");
    object.push(b"x", &mut a).expect("push");
    object.finish(&mut a).expect("finish");
    let mut b = Vec::new();
    let mut object = first.object(header.clone()).expect("object");
    object.push(b"x", &mut b).expect("push");
    object.finish(&mut b).expect("finish");
    let mut c = Vec::new();
    let mut object = second.object(header.clone()).expect("object");
    object.push(b"x", &mut c).expect("push");
    object.finish(&mut c).expect("finish");
    assert_eq!(a[1..33], b[1..33], "one E per run");
    assert_ne!(a[33..PREFIX], b[33..PREFIX], "one salt per object");
    assert_ne!(a[1..33], c[1..33], "a fresh E per run");
    // One opener opens objects of several runs.
    let mut opener = Opener::new(&secret());
    for sealed in [&a, &b, &c] {
        assert_eq!(
            opener.open(sealed).expect("opens"),
            (header.clone(), b"x".to_vec())
        );
    }
    let generated = FolderSecret::generate().expect("key");
    assert_ne!(
        generated.to_bytes(),
        FolderSecret::generate().expect("key").to_bytes()
    );
}

#[test]
fn padme_pads_by_at_most_twelve_percent() {
    let known = [
        (0, 0),
        (1, 1),
        (2, 2),
        (7, 7),
        (8, 8),
        (9, 10),
        (17, 18),
        (100, 104),
        (1000, 1024),
        (1025, 1088),
        (65_537, 67_584),
        (1_000_000, 1_015_808),
        (u64::MAX, u64::MAX),
    ];
    for (len, padded) in known {
        assert_eq!(padme(len), padded, "padme({len})");
    }
    let mut lens: Vec<u64> = (0..70_000).collect();
    lens.extend((10..62).flat_map(|bit| {
        let p = 1u64 << bit;
        [p - 1, p, p + 1, p + p / 3, p + p / 2 + 7]
    }));
    for len in lens {
        let padded = padme(len);
        assert!(padded >= len, "padme({len}) = {padded}");
        assert!(
            u128::from(padded - len) * 100 <= u128::from(len) * 12,
            "padme({len}) = {padded} is over 12%"
        );
        assert_eq!(padme(padded), padded, "padme is idempotent at {len}");
    }
}

#[test]
fn opaque_paths_are_stable_hex_paths_keyed_by_the_naming_secret() {
    let public = secret().public();
    let p = path("documents/taxes/2026.pdf");
    let opaque = public.opaque_path(&p);
    assert_eq!(opaque, public.opaque_path(&p), "stable");
    let text = opaque.as_bytes();
    assert_eq!(text.len(), 33);
    assert_eq!(text[2], b'/');
    assert!(text
        .iter()
        .enumerate()
        .all(|(i, c)| i == 2 || matches!(c, b'0'..=b'9' | b'a'..=b'f')));
    assert_eq!(
        RelPath::from_bytes(text.to_vec()).expect("a valid path"),
        opaque
    );
    assert_ne!(
        opaque,
        public.opaque_path(&path("documents/taxes/2025.pdf"))
    );
    assert_ne!(opaque, public.opaque_path(&path("documents")));
    let mut other = public.to_bytes();
    other[63] ^= 1;
    assert_ne!(opaque, FolderPublic::from_bytes(&other).opaque_path(&p));
    let mut other_pk = public.to_bytes();
    other_pk[0] ^= 1;
    assert_eq!(
        opaque,
        FolderPublic::from_bytes(&other_pk).opaque_path(&p),
        "names depend on the naming secret only"
    );
}

#[test]
fn key_bytes_round_trip() {
    let raw: [u8; 64] = bytes(1);
    let key = FolderSecret::from_bytes(&raw);
    assert_eq!(key.to_bytes(), raw);
    let public = key.public();
    assert_eq!(FolderPublic::from_bytes(&public.to_bytes()), public);
    assert_eq!(public.to_bytes()[32..], raw[32..], "the same naming secret");
    assert_ne!(public.to_bytes()[..32], raw[..32]);
    assert_ne!(
        public.key_id(),
        FolderSecret::from_bytes(&bytes(2)).public().key_id()
    );
}

fn hex(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

/// Fixed keys, ephemeral, salts, headers and contents: any change of the
/// format (derivations, nonces, layout, header encoding, padding) changes
/// these values. They were reproduced, byte for byte, by a separate
/// implementation written from the module doc alone (Python, with pyca
/// `cryptography` for X25519 and AES-GCM and the `blake3` package), so they
/// pin the spec, not only this code.
#[test]
fn known_answers() {
    let mut raw = [0u8; 64];
    for (i, b) in raw.iter_mut().enumerate() {
        *b = i as u8;
    }
    let key = FolderSecret::from_bytes(&raw);
    let public = key.public();
    let run = RunSealer::with_ephemeral(&public, [0x42; 32]).expect("run key");
    let small = file("docs/report.txt", 11);
    let small_object = {
        let mut object = run.object_with_salt(&small, [0x17; 16]).expect("starts");
        let mut out = Vec::new();
        object.push(b"hello world", &mut out).expect("push");
        object.finish(&mut out).expect("finish");
        out
    };
    let big_content: Vec<u8> = (0..2 * BLOCK + 1000).map(|i| (i % 251) as u8).collect();
    let big = file("media/clip.bin", big_content.len() as u64);
    let big_object = {
        let mut object = run.object_with_salt(&big, [0x18; 16]).expect("starts");
        let mut out = Vec::new();
        object.push(&big_content, &mut out).expect("push");
        object.finish(&mut out).expect("finish");
        out
    };
    let link = SealedHeader {
        path: path("current"),
        kind: SealedKind::Symlink {
            target: b"media".to_vec(),
        },
        mode: 0o777,
        mtime_ns: 1,
        size: 0,
    };
    let link_object = {
        let object = run.object_with_salt(&link, [0x19; 16]).expect("starts");
        let mut out = Vec::new();
        object.finish(&mut out).expect("finish");
        out
    };
    let answers = [
        hex(&public.to_bytes()[..32]),
        hex(&public.key_id()),
        public.opaque_path(&path("docs/report.txt")).to_string(),
        hex(&small_object[..PREFIX]),
        small_object.len().to_string(),
        blake3::hash(&small_object).to_hex().to_string(),
        big_object.len().to_string(),
        blake3::hash(&big_object).to_hex().to_string(),
        link_object.len().to_string(),
        blake3::hash(&link_object).to_hex().to_string(),
    ];
    let expected = [
        "8f40c5adb68f25624ae5b214ea767a6ec94d829d3d7b5e1ad1ba6f3e2138285f",
        "4c6d2ae516326a0943f850cfdeac382339dda8556c33cfc7de0a2638ac75da62",
        "7e/18f161ce1c675f0f042b4dcecfbc5c",
        "01132c442be010fbd57e72603328aa76e71fccc1503aae219327d14d9c9993f47217171717171717171717171717171717",
        "109",
        "c4183e31a88b04dc40592777f24e774ec1bd4c9af3fa1263f3142efe47ac68cf",
        "135265",
        "61c49f397cfdae5d92223325676c1e66dd82fa4def746b316e5232131972cc79",
        "89",
        "132d8eb7487975f1c2e080bfe48fb7b7535cecc3ea177c849e6853c2765647e2",
    ];
    assert_eq!(answers, expected, "the sealed format changed");
    let mut opener = Opener::new(&key);
    assert_eq!(opener.public(), &public);
    assert_eq!(
        opener.open(&small_object).expect("opens"),
        (small, b"hello world".to_vec())
    );
    assert_eq!(opener.open(&big_object).expect("opens"), (big, big_content));
    assert_eq!(
        opener.open(&link_object).expect("opens"),
        (link, Vec::new())
    );
}

#[test]
fn sealers_and_openers_move_across_threads() {
    fn send<T: Send>() {}
    fn shared<T: Send + Sync>() {}
    shared::<FolderSecret>();
    shared::<FolderPublic>();
    shared::<RunSealer>();
    send::<ObjectSealer>();
    send::<Opener>();
    send::<ObjectOpener<'static>>();
}

#[test]
fn a_packed_file_opens_to_its_content_and_logical_header() {
    let r = run(5);
    let text = b"a quokka ledger line, over and over; ".repeat(500);
    let packed = zstd::bulk::compress(&text, 3).expect("compresses");
    let h = file("notes/ledger.txt", text.len() as u64);
    let object = r.packed_object(&h, &packed).expect("seals");
    assert!(object.len() < text.len() / 4);
    // Whole, and pushed in pieces of every size: the content comes whole at
    // the end, the header as the file's.
    let (opened, content) = Opener::new(&secret()).open(&object).expect("opens");
    assert_eq!((opened, content.as_slice()), (h.clone(), text.as_slice()));
    for step in [1, 7, 100, 4096] {
        let mut opener = Opener::new(&secret());
        let mut object_opener = opener.object();
        let mut out = Vec::new();
        for piece in object.chunks(step) {
            object_opener.push(piece, &mut out).expect("push");
            assert!(out.is_empty(), "content before the end");
        }
        assert_eq!(object_opener.finish(&mut out).expect("finish"), h);
        assert!(out == text);
    }
    // A packed claim that does not hold, or a directory: refused.
    let mut liar = h.clone();
    liar.size += 1;
    let object = r.packed_object(&liar, &packed).expect("seals");
    assert_eq!(
        Opener::new(&secret()).open(&object).map(|(h, _)| h),
        Err(OpenError::Malformed("packed content of another size"))
    );
    let garbage = r.packed_object(&h, b"not zstd at all").expect("seals");
    assert!(matches!(
        Opener::new(&secret()).open(&garbage),
        Err(OpenError::Malformed(_))
    ));
    let mut dir = h.clone();
    (dir.kind, dir.size) = (SealedKind::Dir, 0);
    assert!(r.packed_object(&dir, &packed).is_err());
}

/// Pins a packed object: its header's stored form (kind 3, the file's size,
/// then the compressed length as `size`).
#[test]
fn packed_known_answer() {
    let h = file("a.txt", 12);
    let object = run(5)
        .packed_object_with_salt(&h, b"packed bytes", bytes(7))
        .expect("seals");
    let hex = |b: &[u8]| b.iter().map(|x| format!("{x:02x}")).collect::<String>();
    assert_eq!(
        hex(blake3::hash(&object).as_bytes()),
        "d8fe9b611ef6db35d796124464c4a669fe8de5f055aa2f0431ad15b6b404f312"
    );
}
