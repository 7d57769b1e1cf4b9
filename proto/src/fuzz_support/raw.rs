//! Hand-encoded frames for tests that attack a receiver: an `Entry` with
//! any path bytes at all (`..`, absolute, NUL), which the real encoder
//! cannot produce since a [`RelPath`](crate::RelPath) is validated. Used by
//! the e2e `hostile` tests and the receiver's in-memory pair tests.

/// Appends `n` as a postcard varint.
pub fn varint(mut n: u64, out: &mut Vec<u8>) {
    loop {
        let byte = (n & 0x7f) as u8;
        n >>= 7;
        if n == 0 {
            out.push(byte);
            return;
        }
        out.push(byte | 0x80);
    }
}

/// A frame around `body`, length prefix included.
pub fn raw_frame(body: &[u8]) -> Vec<u8> {
    let mut out = (body.len() as u32).to_be_bytes().to_vec();
    out.extend_from_slice(body);
    out
}

/// The kinds of entries hand-encoded by [`raw_entry`].
#[derive(Clone, Copy)]
pub enum RawKind<'a> {
    File { size: u64 },
    Dir,
    Symlink { target: &'a [u8] },
}

/// The frame of `Message::Entry` with any path bytes at all, mtime 0 and
/// mode 0o644 (the pinned encoding of [`crate::message`]).
pub fn raw_entry(path: &[u8], kind: RawKind) -> Vec<u8> {
    let mut out = vec![0x04];
    varint(path.len() as u64, &mut out);
    out.extend_from_slice(path);
    match kind {
        RawKind::File { size } => {
            out.push(0x00);
            varint(size, &mut out);
            out.push(0x00); // Content::Inline
        }
        RawKind::Dir => out.push(0x01),
        RawKind::Symlink { target } => {
            out.push(0x02);
            varint(target.len() as u64, &mut out);
            out.extend_from_slice(target);
        }
    }
    out.push(0x00); // mtime_ns 0
    varint(0o644, &mut out);
    raw_frame(&out)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::{frame, Content, Entry, EntryKind, Message, RelPath};

    fn encode(message: &Message) -> Vec<u8> {
        frame::encode(message).unwrap()
    }

    fn entry(path: &str, kind: EntryKind) -> Vec<u8> {
        encode(&Message::Entry(Entry {
            path: RelPath::from_bytes(path).unwrap(),
            kind,
            mtime_ns: 0,
            mode: 0o644,
        }))
    }

    #[test]
    fn the_hand_encoder_matches_the_real_one() {
        // The hostile frames differ from real ones only in their path bytes.
        let file = EntryKind::File {
            size: 5,
            content: Content::Inline,
        };
        assert_eq!(
            raw_entry(b"a/b", RawKind::File { size: 5 }),
            entry("a/b", file)
        );
        let link = EntryKind::Symlink {
            target: b"../t".to_vec(),
        };
        assert_eq!(
            raw_entry(b"l", RawKind::Symlink { target: b"../t" }),
            entry("l", link)
        );
        assert_eq!(raw_entry(b"d", RawKind::Dir), entry("d", EntryKind::Dir));
    }
}
