//! The front of a sealed object, in either format: how many of its first
//! bytes its header needs, and the header opened from them. Every reader
//! that opens headers (listing, versions, the launcher, restore) goes
//! through here, so a whole object (format 1) and a chunked one (format 2)
//! are told apart in one place, by the first byte.

use ferry_proto::seal::{
    is_chunked, OpenError, Opener, SealedHeader, BLOCK, FRONT_PREFIX, PREFIX, TAG,
};

use super::ObjectError;

/// Bytes a whole object's header needs: its first block, and one byte more
/// to tell whether that block is the last.
const WHOLE_FRONT: usize = PREFIX + BLOCK + TAG + 1;

/// Most bytes a chunked object's front may take: the prefix and a sealed
/// header of at most one block, padded, with room to spare (the proto
/// crate's opener refuses a longer front the same way).
const CHUNKED_FRONT: usize = FRONT_PREFIX + BLOCK + 4096;

/// How many first bytes of an object its header needs, as far as `bytes`
/// (its first bytes so far) tell: a chunked object says so in its prefix
/// (`2 ‖ E_h (32) ‖ front_len (u32 LE)`), a whole object needs its first
/// block. Never more than a bounded amount, whatever the bytes say.
pub fn front_needs(bytes: &[u8]) -> usize {
    match bytes.first() {
        Some(&first) if is_chunked(first) => {
            let len = bytes
                .get(FRONT_PREFIX - 4..FRONT_PREFIX)
                .and_then(|b| <[u8; 4]>::try_from(b).ok())
                .map(u32::from_le_bytes);
            match len {
                Some(len) => FRONT_PREFIX.saturating_add(len as usize).min(CHUNKED_FRONT),
                None => FRONT_PREFIX,
            }
        }
        _ => WHOLE_FRONT,
    }
}

/// True if `bytes`, an object's first bytes, are a chunked object's.
pub fn starts_chunked(bytes: &[u8]) -> bool {
    bytes.first().copied().is_some_and(is_chunked)
}

/// Opens the header in `bytes`, the first [`front_needs`] bytes of an
/// object or fewer (blocking). `ended`: `bytes` is the whole object. A
/// chunked object's header opens from its front alone (its content is
/// checked only when it is opened whole); a whole object's from its first
/// block, or, if that is its only block, with the object checked to its
/// end.
pub fn open_front(
    opener: &mut Opener,
    bytes: &[u8],
    ended: bool,
) -> Result<SealedHeader, ObjectError> {
    if starts_chunked(bytes) {
        return match opener.chunked_header(bytes)? {
            Some(header) => Ok(header),
            None if ended => Err(OpenError::Truncated.into()),
            // All that may be read for a front is there.
            None if bytes.len() >= front_needs(bytes) => {
                Err(OpenError::Malformed("a front longer than any header").into())
            }
            None => Err(ObjectError::NoHeader),
        };
    }
    let mut object = opener.object();
    let mut content = Vec::new();
    object.push(bytes, &mut content)?;
    if ended {
        Ok(object.finish(&mut content)?)
    } else {
        object.header().cloned().ok_or(ObjectError::NoHeader)
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used)] // a failing unwrap is a failing test
mod tests {
    use super::*;
    use ferry_proto::seal::{ChunkedSealer, FolderSecret, RunSealer, SealedKind, MAX_CHUNK};
    use ferry_proto::RelPath;

    fn header(size: u64) -> SealedHeader {
        SealedHeader {
            path: RelPath::from_bytes("big/video.mp4").unwrap(),
            kind: SealedKind::File,
            mode: 0o640,
            mtime_ns: 1_700_000_000_000_000_001,
            size,
        }
    }

    fn chunked(secret: &FolderSecret, content: &[u8]) -> Vec<u8> {
        let public = secret.public();
        let run = RunSealer::new(&public).unwrap();
        let mut sealer = ChunkedSealer::new(&public, &run, &header(content.len() as u64)).unwrap();
        let mut pieces = vec![sealer.take_front().unwrap()];
        for chunk in content.chunks(MAX_CHUNK) {
            sealer.push(chunk, None, &mut pieces).unwrap();
        }
        sealer.finish(&mut pieces).unwrap();
        pieces.into_iter().flat_map(|p| p.bytes).collect()
    }

    #[test]
    fn a_chunked_header_needs_its_front_only() {
        let secret = FolderSecret::generate().unwrap();
        let content: Vec<u8> = (0..400_000u32).map(|i| (i % 253) as u8).collect();
        let object = chunked(&secret, &content);
        assert!(starts_chunked(&object));
        // The first byte asks for the prefix, the prefix for the front.
        assert_eq!(front_needs(&object[..1]), FRONT_PREFIX);
        let needs = front_needs(&object[..FRONT_PREFIX]);
        assert!(needs > FRONT_PREFIX && needs < 4096, "{needs}");
        let mut opener = Opener::new(&secret);
        let opened = open_front(&mut opener, &object[..needs], false).unwrap();
        assert_eq!(opened, header(content.len() as u64));
        // One byte short is not enough, and says so.
        let short = open_front(&mut opener, &object[..needs - 1], false).unwrap_err();
        assert!(matches!(short, ObjectError::NoHeader), "{short:?}");
        let cut = open_front(&mut opener, &object[..needs - 1], true).unwrap_err();
        assert!(
            matches!(cut, ObjectError::Open(OpenError::Truncated)),
            "{cut:?}"
        );
        // A tampered front does not open.
        let mut bad = object[..needs].to_vec();
        bad[needs - 1] ^= 1;
        let bad = open_front(&mut opener, &bad, false).unwrap_err();
        assert!(
            matches!(bad, ObjectError::Open(OpenError::Authentication)),
            "{bad:?}"
        );
        // Whatever a front claims, what is read for it stays bounded.
        let mut huge = object[..FRONT_PREFIX].to_vec();
        huge[FRONT_PREFIX - 4..].copy_from_slice(&u32::MAX.to_le_bytes());
        assert_eq!(front_needs(&huge), CHUNKED_FRONT);
        huge.resize(CHUNKED_FRONT, 0);
        let huge = open_front(&mut opener, &huge, false).unwrap_err();
        assert!(
            matches!(huge, ObjectError::Open(OpenError::Malformed(_))),
            "{huge:?}"
        );
    }

    #[test]
    fn a_whole_object_needs_its_first_block() {
        let secret = FolderSecret::generate().unwrap();
        let run = RunSealer::new(&secret.public()).unwrap();
        let content = vec![7u8; 200_000];
        let mut object = run.object(header(content.len() as u64)).unwrap();
        let mut sealed = Vec::new();
        object.push(&content, &mut sealed).unwrap();
        object.finish(&mut sealed).unwrap();
        assert!(!starts_chunked(&sealed));
        assert_eq!(front_needs(&sealed), WHOLE_FRONT);
        let mut opener = Opener::new(&secret);
        let opened = open_front(&mut opener, &sealed[..WHOLE_FRONT], false).unwrap();
        assert_eq!(opened, header(content.len() as u64));
    }
}
