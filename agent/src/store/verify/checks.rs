//! Checking one version's bytes against its row: a file's size and hash,
//! a symlink's target.

use std::io::{self, Read};
use std::path::Path;

use rustix::fs::FileType;

use super::beneath::{open_regular, Beneath, Found};
use super::FindingKind;
use crate::store::catalog::VersionRow;
use crate::store::error::hex;

pub(super) fn check_file(
    dir: &Beneath,
    rel: &Path,
    v: &VersionRow,
    buf: &mut [u8],
    bytes: &mut u64,
) -> Option<FindingKind> {
    let parent = match dir.find(rel) {
        Ok(Found::Missing) => return Some(FindingKind::Missing),
        Ok(Found::Outside(why)) => return Some(outside(why)),
        Ok(Found::At(parent, FileType::RegularFile)) => parent,
        Ok(Found::At(..)) => return Some(FindingKind::WrongKind),
        Err(e) => return Some(unreadable(e)),
    };
    let leaf = rel.file_name().unwrap_or_default();
    let mut file = match open_regular(&parent, Path::new(leaf)) {
        Ok(f) => f,
        Err(e) => return Some(unreadable(e)),
    };
    let len = match file.metadata() {
        Ok(m) => m.len(),
        Err(e) => return Some(unreadable(e)),
    };
    let expected_size = u64::try_from(v.size).unwrap_or(0);
    if len != expected_size {
        return Some(FindingKind::SizeMismatch {
            expected: expected_size,
            actual: len,
        });
    }
    let actual = match hash_reader(&mut file, buf) {
        Ok((hash, n)) => {
            *bytes += n;
            hash
        }
        Err(e) => return Some(unreadable(e)),
    };
    match &v.hash {
        Some(expected) if expected.as_slice() == actual.as_bytes() => None,
        expected => Some(FindingKind::HashMismatch {
            expected: expected.as_deref().map(hex).unwrap_or_default(),
            actual: actual.to_hex().to_string(),
        }),
    }
}

pub(super) fn check_link(dir: &Beneath, rel: &Path, v: &VersionRow) -> Option<FindingKind> {
    let parent = match dir.find(rel) {
        Ok(Found::Missing) => return Some(FindingKind::Missing),
        Ok(Found::Outside(why)) => return Some(outside(why)),
        Ok(Found::At(parent, FileType::Symlink)) => parent,
        Ok(Found::At(..)) => return Some(FindingKind::WrongKind),
        Err(e) => return Some(unreadable(e)),
    };
    let leaf = rel.file_name().unwrap_or_default();
    match rustix::fs::readlinkat(&parent, leaf, Vec::new()) {
        Ok(target) if Some(target.as_bytes()) == v.target.as_deref() => None,
        Ok(_) => Some(FindingKind::LinkChanged),
        Err(e) => Some(unreadable(e.into())),
    }
}

fn outside(why: &str) -> FindingKind {
    FindingKind::Outside {
        reason: why.to_owned(),
    }
}

fn unreadable(e: io::Error) -> FindingKind {
    FindingKind::Unreadable {
        error: crate::chain::chain(&e),
    }
}

/// blake3 of everything `reader` gives, and its length.
fn hash_reader(reader: &mut impl Read, buf: &mut [u8]) -> io::Result<(blake3::Hash, u64)> {
    let mut hasher = blake3::Hasher::new();
    let mut n = 0u64;
    loop {
        let got = match reader.read(buf) {
            Ok(got) => got,
            Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
            Err(e) => return Err(e),
        };
        if got == 0 {
            break;
        }
        hasher.update(&buf[..got]);
        n += got as u64;
    }
    Ok((hasher.finalize(), n))
}
