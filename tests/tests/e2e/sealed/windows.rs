//! What a store must not contain, found fast enough for a 32 MiB object in
//! an unoptimized test build: every 16-byte window of some contents, and
//! some names. A file is probed only every few bytes, through small tables
//! of what the needles contain; a hit is then checked exactly at each
//! position it could belong to, so nothing is missed.
//!
//! Contents: a 16-byte window at `p` covers a position `p'`, a multiple of
//! 8, with `p' + 8 <= p + 16`; a bitmap of the first 4 bytes of every
//! content position that can start such an 8-byte piece rejects most
//! probes. Names: an occurrence of `L` bytes covers a multiple of
//! `stride = shortest - 1` together with the byte after it; a table of the
//! byte pairs names hold at their first `stride` offsets rejects most
//! probes.

use std::collections::HashSet;

/// Bits of the 4 bytes at a position that index the bitmap (16 MiB).
const BITS: u32 = 27;
/// Content probes are this far apart.
const STEP: usize = 8;

/// The bitmap's index of the 4 bytes at `at`.
fn slot(bytes: &[u8], at: usize) -> usize {
    usize::from(bytes[at])
        | usize::from(bytes[at + 1]) << 8
        | usize::from(bytes[at + 2]) << 16
        | usize::from(bytes[at + 3] & ((1 << (BITS - 24)) - 1)) << 24
}

/// The pair table's index of the 2 bytes at `at`.
fn pair(bytes: &[u8], at: usize) -> usize {
    usize::from(bytes[at]) << 8 | usize::from(bytes[at + 1])
}

fn window(bytes: &[u8], at: usize) -> [u8; 16] {
    let mut window = [0u8; 16];
    window.copy_from_slice(&bytes[at..at + 16]);
    window
}

/// Every 16-byte window of some contents, and names.
pub(crate) struct Windows<'a> {
    bitmap: Vec<u64>,
    windows: HashSet<[u8; 16]>,
    names: &'a [&'a str],
    name_pairs: Vec<bool>,
    stride: usize,
}

/// What a scan found, and where.
#[derive(Debug)]
pub(crate) enum Found<'a> {
    Name { name: &'a str, at: usize },
    Content { at: usize },
}

impl<'a> Windows<'a> {
    /// `names` must each be at least 2 bytes long.
    pub(crate) fn of(contents: &[Vec<u8>], names: &'a [&'a str]) -> Windows<'a> {
        let mut bitmap = vec![0u64; 1 << (BITS - 6)];
        let count = contents.iter().map(Vec::len).sum();
        let mut windows = HashSet::with_capacity(count);
        for bytes in contents {
            for at in 0..bytes.len().saturating_sub(STEP) {
                let slot = slot(bytes, at);
                bitmap[slot / 64] |= 1 << (slot % 64);
            }
            for at in 0..bytes.len().saturating_sub(15) {
                windows.insert(window(bytes, at));
            }
        }
        let shortest = names.iter().map(|n| n.len()).min().unwrap_or(2);
        assert!(shortest >= 2, "a name of less than 2 bytes: {names:?}");
        let stride = shortest - 1;
        let mut name_pairs = vec![false; 1 << 16];
        for name in names {
            for at in 0..stride {
                name_pairs[pair(name.as_bytes(), at)] = true;
            }
        }
        Windows {
            bitmap,
            windows,
            names,
            name_pairs,
            stride,
        }
    }

    /// A name or a window that appears in `bytes`, if any does.
    pub(crate) fn find_in(&self, bytes: &[u8]) -> Option<Found<'a>> {
        let mut at = 0;
        while at + STEP <= bytes.len() {
            let slot = slot(bytes, at);
            if self.bitmap[slot / 64] & (1 << (slot % 64)) != 0 {
                for start in at.saturating_sub(STEP - 1)..=at {
                    if start + 16 <= bytes.len() && self.windows.contains(&window(bytes, start)) {
                        return Some(Found::Content { at: start });
                    }
                }
            }
            at += STEP;
        }
        let mut at = 0;
        while at + 2 <= bytes.len() {
            if self.name_pairs[pair(bytes, at)] {
                for start in at.saturating_sub(self.stride - 1)..=at {
                    let rest = &bytes[start..];
                    if let Some(name) = self.names.iter().find(|n| rest.starts_with(n.as_bytes())) {
                        return Some(Found::Name { name, at: start });
                    }
                }
            }
            at += self.stride;
        }
        None
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn finds_every_window_and_name_at_every_offset_and_nothing_else() {
        let content: Vec<u8> = (0..200u8).collect();
        let names = ["pelican", "okapi-and-more"];
        let w = Windows::of(std::slice::from_ref(&content), &names);
        for offset in 0..20 {
            let mut hay = vec![0xffu8; 40 + offset];
            assert!(w.find_in(&hay).is_none());
            hay.extend_from_slice(&content[37..53]);
            let at = 40 + offset;
            assert!(
                matches!(w.find_in(&hay), Some(Found::Content { at: a }) if a == at),
                "{offset}: {:?}",
                w.find_in(&hay)
            );
            let mut hay = vec![0xffu8; 40 + offset];
            hay.extend_from_slice(&content[37..52]);
            hay.push(0xff);
            assert!(w.find_in(&hay).is_none(), "15 bytes are not a window");
            for name in names {
                let mut hay = vec![0xffu8; 40 + offset];
                hay.extend_from_slice(name.as_bytes());
                hay.extend_from_slice(&[0xff; 3]);
                assert!(
                    matches!(w.find_in(&hay), Some(Found::Name { name: n, at: a }) if n == name && a == at),
                    "{name} at {offset}: {:?}",
                    w.find_in(&hay)
                );
                hay[at + 3] = b'x';
                assert!(w.find_in(&hay).is_none(), "{name} at {offset}, broken");
            }
        }
    }
}
