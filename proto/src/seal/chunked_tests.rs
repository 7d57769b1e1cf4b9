//! Chunked objects: round trips in both formats through [`ObjectSource`],
//! determinism (what makes delta, rename and resume work), the header from
//! the first bytes alone, tampering, splicing, and the known answer that
//! pins the format.

use super::*;

fn bytes<const N: usize>(seed: u8) -> [u8; N] {
    let mut out = [0u8; N];
    blake3::Hasher::new()
        .update(&[seed, 2])
        .finalize_xof()
        .fill(&mut out);
    out
}

fn noise(len: usize, seed: u8) -> Vec<u8> {
    let mut out = vec![0u8; len];
    blake3::Hasher::new()
        .update(b"chunked content")
        .update(&[seed])
        .finalize_xof()
        .fill(&mut out);
    out
}

fn secret() -> FolderSecret {
    FolderSecret::from_bytes(&bytes(1))
}

fn header(size: u64) -> SealedHeader {
    SealedHeader {
        path: RelPath::from_bytes("photos/2026/big.raw").expect("valid path"),
        kind: SealedKind::File,
        mode: 0o640,
        mtime_ns: 1_764_500_000_987_654_321,
        size,
    }
}

/// Chunks of varied lengths, every third one compressible (text).
fn chunks(count: usize, seed: u8) -> Vec<Vec<u8>> {
    (0..count)
        .map(|i| {
            let len = 9_000 + (i * 7_919) % 100_000;
            if i % 3 == 0 {
                b"line of text, "
                    .iter()
                    .copied()
                    .cycle()
                    .take(len)
                    .collect()
            } else {
                noise(len, seed.wrapping_add(i as u8))
            }
        })
        .collect()
}

/// Seals `chunks` (compressing those zstd shrinks) into pieces.
fn seal(run: &RunSealer, chunks: &[Vec<u8>], salt: u8) -> Vec<Piece> {
    seal_as(run, chunks, salt, true)
}

fn seal_as(run: &RunSealer, chunks: &[Vec<u8>], salt: u8, compress: bool) -> Vec<Piece> {
    let size = chunks.iter().map(|c| c.len() as u64).sum();
    let public = secret().public();
    let mut sealer = ChunkedSealer::new(&public, run, &header(size)).expect("starts");
    let mut pieces = vec![sealer.take_front().expect("a front")];
    assert!(sealer.take_front().is_none());
    for chunk in chunks {
        let packed = zstd::bulk::compress(chunk, 1).expect("compresses");
        let packed = (compress && packed.len() < chunk.len()).then_some(&packed[..]);
        sealer.push(chunk, packed, &mut pieces).expect("push");
    }
    sealer
        .finish_with_salt(bytes(salt), &mut pieces)
        .expect("finish");
    pieces
}

fn run(seed: u8) -> RunSealer {
    RunSealer::with_ephemeral(&secret().public(), bytes(seed)).expect("run key")
}

fn object(pieces: &[Piece]) -> Vec<u8> {
    pieces.iter().flat_map(|p| p.bytes.clone()).collect()
}

fn open(secret: &FolderSecret, object: &[u8]) -> Result<(SealedHeader, Vec<u8>), ReadObjectError> {
    let mut content = Vec::new();
    let header = Opener::new(secret).open_source(object, &mut |b: &[u8]| {
        content.extend_from_slice(b);
        Ok(())
    })?;
    Ok((header, content))
}

#[test]
fn a_chunked_object_opens_to_its_header_and_content() {
    let chunks = chunks(300, 1);
    let content: Vec<u8> = chunks.concat();
    let pieces = seal(&run(5), &chunks, 9);
    assert!(pieces.len() > chunks.len() + 2, "groups are pieces too");
    assert_eq!(
        pieces.iter().map(|p| p.content).sum::<u64>(),
        content.len() as u64
    );
    let object = object(&pieces);
    assert!(is_chunked(object[0]));
    let (opened, got) = open(&secret(), &object).expect("opens");
    assert_eq!(opened, header(content.len() as u64));
    assert!(got == content, "the content opens exactly");
    // Every piece fits one Data message.
    assert!(pieces.iter().all(|p| p.bytes.len() <= crate::MAX_DATA));
    // Compressible chunks are stored compressed: the object is smaller.
    assert!(object.len() < content.len());
}

#[test]
fn the_header_opens_from_the_first_bytes_alone() {
    let pieces = seal(&run(5), &chunks(4, 2), 9);
    let front = &pieces[0].bytes;
    let mut opener = Opener::new(&secret());
    assert_eq!(opener.chunked_header(&[]), Ok(None));
    assert_eq!(opener.chunked_header(&front[..FRONT_PREFIX - 1]), Ok(None));
    assert_eq!(opener.chunked_header(&front[..front.len() - 1]), Ok(None));
    let size = chunks(4, 2).iter().map(|c| c.len() as u64).sum();
    assert_eq!(opener.chunked_header(front), Ok(Some(header(size))));
    let more = object(&pieces);
    assert_eq!(opener.chunked_header(&more), Ok(Some(header(size))));
    assert_eq!(
        opener.chunked_header(&[1, 2, 3]),
        Err(OpenError::Version(1))
    );
    let other = FolderSecret::from_bytes(&bytes(77));
    assert_eq!(
        Opener::new(&other).chunked_header(front),
        Err(OpenError::Authentication)
    );
}

#[test]
fn unchanged_chunks_seal_to_the_same_pieces_in_another_run() {
    let mut chunks = chunks(200, 3);
    let first = seal(&run(5), &chunks, 9);
    let again = seal(&run(6), &chunks, 10);
    // The same file as opened: the same front, pieces and groups; only the
    // trailer (the run's key, a fresh salt) differs. A resumed transfer's
    // kept prefix therefore matches.
    assert_eq!(first.len(), again.len());
    let n = first.len();
    assert_eq!(first[..n - 1], again[..n - 1]);
    assert_ne!(first[n - 1], again[n - 1]);
    // One chunk changed: its piece, its group and the trailer differ; every
    // other piece is the same bytes with the same id.
    chunks[100] = noise(chunks[100].len(), 200);
    let changed = seal(&run(6), &chunks, 10);
    let old: std::collections::HashSet<_> = first.iter().map(|p| p.id).collect();
    let fresh: Vec<&Piece> = changed.iter().filter(|p| !old.contains(&p.id)).collect();
    assert_eq!(fresh.len(), 3, "the chunk, its group, the trailer");
    for piece in &changed {
        if let Some(same) = first.iter().find(|p| p.id == piece.id) {
            assert_eq!(same.bytes, piece.bytes, "equal ids, equal bytes");
        }
    }
    let (_, content) = open(&secret(), &object(&changed)).expect("opens");
    assert!(content == chunks.concat());
}

#[test]
fn the_same_chunk_compressed_or_not_gets_another_piece() {
    let chunk = b"abc".repeat(10_000);
    let public = secret().public();
    let r = run(5);
    let mut raw = ChunkedSealer::new(&public, &r, &header(30_000)).expect("starts");
    let mut packed = ChunkedSealer::new(&public, &r, &header(30_000)).expect("starts");
    let (mut a, mut b) = (Vec::new(), Vec::new());
    raw.push(&chunk, None, &mut a).expect("push");
    let z = zstd::bulk::compress(&chunk, 1).expect("compresses");
    packed.push(&chunk, Some(&z), &mut b).expect("push");
    assert_ne!(a[0].id, b[0].id);
    // Different nonces under the chunk's one key.
    assert_ne!(a[0].bytes[..12], b[0].bytes[..12]);
}

#[test]
fn a_wrong_key_or_a_write_only_holder_cannot_open() {
    let pieces = seal(&run(5), &chunks(10, 4), 9);
    let other = FolderSecret::from_bytes(&bytes(99));
    assert!(matches!(
        open(&other, &object(&pieces)),
        Err(ReadObjectError::Open(OpenError::Authentication))
    ));
}

#[test]
fn tampering_truncation_and_splicing_fail_the_object() {
    let chunks = chunks(150, 5);
    let pieces = seal(&run(5), &chunks, 9);
    let good = object(&pieces);
    let fails = |object: &[u8], what: &str| {
        let got = open(&secret(), object);
        assert!(
            matches!(got, Err(ReadObjectError::Open(_))),
            "{what}: {:?}",
            got.map(|(h, _)| h)
        );
    };
    // A flipped byte in every piece, one at a time.
    let mut at = 0;
    for (i, piece) in pieces.iter().enumerate() {
        let mut bad = good.clone();
        bad[at + piece.bytes.len() / 2] ^= 1;
        fails(&bad, &format!("piece {i} flipped"));
        at += piece.bytes.len();
    }
    // Truncated anywhere, and bytes added.
    for cut in [
        1,
        FRONT_PREFIX,
        5000,
        good.len() / 2,
        good.len() - 5,
        good.len() - 1,
    ] {
        fails(&good[..cut], &format!("cut at {cut}"));
    }
    fails(&[good.clone(), vec![0]].concat(), "a byte appended");
    // A footer naming a trailer far longer than the object: refused before
    // anything that long is read or allocated.
    let mut long = good.clone();
    let n = long.len();
    let most = (n - 4 - FRONT_PREFIX - 200) as u32;
    long[n - 4..].copy_from_slice(&most.to_le_bytes());
    let got = open(&secret(), &long).map(|(h, _)| h);
    assert!(
        matches!(got, Err(ReadObjectError::Open(OpenError::Malformed(m))) if m.contains("trailer longer")),
        "{got:?}"
    );
    // Two data pieces swapped.
    let mut swapped = pieces.clone();
    swapped.swap(1, 2);
    fails(&object(&swapped), "pieces swapped");
    // A piece dropped.
    let mut dropped = pieces.clone();
    dropped.remove(3);
    fails(&object(&dropped), "a piece dropped");
    // The trailer of another object of the same run (another file).
    let other = seal(&run(5), &chunks[..149], 9);
    let mut spliced = pieces.clone();
    let last = spliced.len() - 1;
    spliced[last] = other[other.len() - 1].clone();
    fails(&object(&spliced), "another object's trailer");
    // The front of another object.
    let public = secret().public();
    let mut h = header(chunks.iter().map(|c| c.len() as u64).sum());
    h.mode = 0o600;
    let mut sealer = ChunkedSealer::new(&public, &run(5), &h).expect("starts");
    let mut spliced = pieces;
    spliced[0] = sealer.take_front().expect("front");
    fails(&object(&spliced), "another object's front");
}

#[test]
fn sizes_and_chunk_lengths_are_checked_when_sealing() {
    let public = secret().public();
    let r = run(5);
    let mut out = Vec::new();
    let mut sealer = ChunkedSealer::new(&public, &r, &header(10)).expect("starts");
    assert!(matches!(
        sealer.push(&[1; 11], None, &mut out),
        Err(SealError::SizeMismatch { .. })
    ));
    assert!(matches!(
        sealer.push(&[], None, &mut out),
        Err(SealError::ChunkLength { len: 0 })
    ));
    sealer.push(&[1; 4], None, &mut out).expect("push");
    assert!(matches!(
        sealer.finish(&mut out),
        Err(SealError::SizeMismatch { .. })
    ));
    let big = vec![0u8; MAX_CHUNK + 1];
    let mut sealer = ChunkedSealer::new(&public, &r, &header(big.len() as u64)).expect("starts");
    assert!(matches!(
        sealer.push(&big, None, &mut out),
        Err(SealError::ChunkLength { .. })
    ));
    let mut dir = header(0);
    dir.kind = SealedKind::Dir;
    assert!(ChunkedSealer::new(&public, &r, &dir).is_err());
}

#[test]
fn whole_objects_open_through_the_same_source() {
    let r = run(5);
    let h = header(200_000);
    let content = noise(200_000, 8);
    let mut object = r.object(h.clone()).expect("object");
    let mut sealed = Vec::new();
    object.push(&content, &mut sealed).expect("push");
    object.finish(&mut sealed).expect("finish");
    assert!(!is_chunked(sealed[0]));
    let (opened, got) = open(&secret(), &sealed).expect("opens");
    assert_eq!((opened, got), (h, content));
}

#[test]
fn the_announced_bound_holds_for_the_worst_case() {
    // Every chunk at the minimum, incompressible, every one ending a group
    // (worst padding of pieces, groups and trailer); and the usual case.
    let public = secret().public();
    for (count, len) in [
        (1usize, 1usize),
        (1, MIN_CHUNK),
        (40, MIN_CHUNK),
        (3, MAX_CHUNK),
        (1000, MIN_CHUNK),
    ] {
        let size = (count * len) as u64;
        let mut sealer = ChunkedSealer::new(&public, &run(5), &header(size)).expect("starts");
        let mut pieces = vec![sealer.take_front().expect("front")];
        for i in 0..count {
            sealer
                .push(&noise(len, i as u8), None, &mut pieces)
                .expect("push");
        }
        sealer.finish(&mut pieces).expect("finish");
        let got: u64 = pieces.iter().map(|p| p.bytes.len() as u64).sum();
        let bound = ChunkedSealer::max_len(&header(size)).expect("bound");
        assert!(got <= bound, "{count} chunks of {len}: {got} > {bound}");
        assert!(
            bound <= size + size / 5 + 4096,
            "{count}×{len}: a loose bound {bound}"
        );
    }
}

#[test]
fn the_chunker_seed_is_the_folders() {
    assert_eq!(
        secret().public().chunker_seed(),
        secret().public().chunker_seed()
    );
    let other = FolderSecret::from_bytes(&bytes(99)).public();
    assert_ne!(secret().public().chunker_seed(), other.chunker_seed());
}

/// Pins the chunked format: a change here is a change of what receivers
/// store, which every later reader must still open.
#[test]
fn known_answer() {
    let mut chunks = chunks(70, 6);
    chunks.push(vec![7; 1]);
    // Raw chunks only: a compressed piece's bytes are zstd's, not the
    // format's.
    let pieces = seal_as(&run(5), &chunks, 9, false);
    let hex = |b: &[u8]| b.iter().map(|x| format!("{x:02x}")).collect::<String>();
    assert_eq!(
        hex(&pieces[0].bytes[..FRONT_PREFIX]),
        "02da6482958a5defc7a806668ee756da334f3f0c2da663de08af40ee43917d005138000000"
    );
    assert_eq!(
        hex(blake3::hash(&object(&pieces)).as_bytes()),
        "738c47889269b5d5f6a04a0f535359417cfa12a82f9bfa990ea3a6ad51983a94"
    );
    assert_eq!(secret().public().chunker_seed(), 633692960422480429);
}
