//! Validated names and relative paths.
//!
//! Linux file names are bytes, not text, so [`RelPath`] carries bytes. It is
//! checked when it is built *and* when it is decoded from the wire, so no value
//! of the type can name anything outside the directory it is joined to.

use std::ffi::OsStr;
use std::fmt;
use std::os::unix::ffi::OsStrExt;
use std::path::{Component, Path, PathBuf};

use serde::{Deserialize, Deserializer, Serialize, Serializer};

/// Longest relative path accepted, in bytes (Linux's `PATH_MAX`).
pub const MAX_PATH_LEN: usize = 4096;
/// Longest single path component or [`Name`], in bytes (Linux's `NAME_MAX`).
pub const MAX_COMPONENT_LEN: usize = 255;

/// Why a path or name was rejected.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum PathError {
    #[error("path is empty")]
    Empty,
    #[error("path is absolute: {0}")]
    Absolute(String),
    #[error("path has an empty component (`//` or a trailing `/`): {0}")]
    EmptyComponent(String),
    #[error("path has a `.` or `..` component: {0}")]
    DotComponent(String),
    #[error("path contains a NUL byte: {0}")]
    Nul(String),
    #[error("path is {len} bytes long, more than the {max} allowed")]
    TooLong { len: usize, max: usize },
    #[error("path component is longer than {MAX_COMPONENT_LEN} bytes: {0}")]
    ComponentTooLong(String),
    #[error("name {0:?} is not allowed: use 1-255 bytes of UTF-8 with no `/`, no NUL, not starting with `.`")]
    BadName(String),
}

/// A relative path of one or more non-empty components separated by `/`,
/// with no `.` or `..` component, no NUL and at most [`MAX_PATH_LEN`] bytes.
#[derive(Clone, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct RelPath(Vec<u8>);

impl RelPath {
    /// Checks `bytes` and wraps them.
    pub fn from_bytes(bytes: impl Into<Vec<u8>>) -> Result<Self, PathError> {
        let bytes = bytes.into();
        validate_rel(&bytes)?;
        Ok(Self(bytes))
    }

    /// Builds a path from a relative filesystem path (e.g. a walk entry with
    /// its root stripped).
    pub fn from_path(path: &Path) -> Result<Self, PathError> {
        let mut out = Vec::new();
        for component in path.components() {
            match component {
                Component::Normal(name) => {
                    if !out.is_empty() {
                        out.push(b'/');
                    }
                    out.extend_from_slice(name.as_bytes());
                }
                Component::RootDir | Component::Prefix(_) => {
                    return Err(PathError::Absolute(path.display().to_string()))
                }
                Component::CurDir | Component::ParentDir => {
                    return Err(PathError::DotComponent(path.display().to_string()))
                }
            }
        }
        Self::from_bytes(out)
    }

    pub fn as_bytes(&self) -> &[u8] {
        &self.0
    }

    pub fn into_bytes(self) -> Vec<u8> {
        self.0
    }

    /// The path as an OS path, to be joined to a root directory.
    pub fn as_path(&self) -> &Path {
        Path::new(OsStr::from_bytes(&self.0))
    }

    /// `root` joined with this path.
    pub fn under(&self, root: &Path) -> PathBuf {
        root.join(self.as_path())
    }

    /// The components, in order.
    pub fn components(&self) -> impl Iterator<Item = &[u8]> {
        self.0.split(|b| *b == b'/')
    }

    /// The parent path, or `None` for a single component.
    pub fn parent(&self) -> Option<RelPath> {
        let cut = self.0.iter().rposition(|b| *b == b'/')?;
        Some(RelPath(self.0[..cut].to_vec()))
    }

    /// True if `self` is `other` or lies below it.
    pub fn starts_with(&self, other: &RelPath) -> bool {
        self.0 == other.0
            || (self.0.len() > other.0.len()
                && self.0.starts_with(&other.0)
                && self.0[other.0.len()] == b'/')
    }
}

fn validate_rel(bytes: &[u8]) -> Result<(), PathError> {
    let show = || String::from_utf8_lossy(bytes).into_owned();
    if bytes.is_empty() {
        return Err(PathError::Empty);
    }
    if bytes.len() > MAX_PATH_LEN {
        return Err(PathError::TooLong {
            len: bytes.len(),
            max: MAX_PATH_LEN,
        });
    }
    if bytes.contains(&0) {
        return Err(PathError::Nul(show()));
    }
    if bytes[0] == b'/' {
        return Err(PathError::Absolute(show()));
    }
    for component in bytes.split(|b| *b == b'/') {
        match component {
            b"" => return Err(PathError::EmptyComponent(show())),
            b"." | b".." => return Err(PathError::DotComponent(show())),
            c if c.len() > MAX_COMPONENT_LEN => return Err(PathError::ComponentTooLong(show())),
            _ => {}
        }
    }
    Ok(())
}

impl fmt::Debug for RelPath {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "RelPath({:?})", String::from_utf8_lossy(&self.0))
    }
}

impl fmt::Display for RelPath {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&String::from_utf8_lossy(&self.0))
    }
}

impl Serialize for RelPath {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.serialize_bytes(&self.0)
    }
}

impl<'de> Deserialize<'de> for RelPath {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        let bytes: serde_bytes::ByteBuf = Deserialize::deserialize(d)?;
        RelPath::from_bytes(bytes.into_vec()).map_err(serde::de::Error::custom)
    }
}

/// A sender name or folder name: one path component of UTF-8, 1–255 bytes,
/// no `/`, no NUL, not starting with `.` (so it can never be `.`, `..` or the
/// receiver's own `.ferry` directory).
#[derive(Clone, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct Name(String);

impl Name {
    pub fn new(name: impl Into<String>) -> Result<Self, PathError> {
        let name = name.into();
        let ok = !name.is_empty()
            && name.len() <= MAX_COMPONENT_LEN
            && !name.starts_with('.')
            && !name.contains(['/', '\0']);
        if ok {
            Ok(Self(name))
        } else {
            Err(PathError::BadName(name))
        }
    }

    pub fn as_str(&self) -> &str {
        &self.0
    }
}

impl fmt::Debug for Name {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "Name({:?})", self.0)
    }
}

impl fmt::Display for Name {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

impl AsRef<Path> for Name {
    fn as_ref(&self) -> &Path {
        Path::new(&self.0)
    }
}

impl Serialize for Name {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.serialize_str(&self.0)
    }
}

impl<'de> Deserialize<'de> for Name {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        let s = String::deserialize(d)?;
        Name::new(s).map_err(serde::de::Error::custom)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn accepts_any_linux_name_bytes() {
        let p = RelPath::from_bytes(b"dir/caf\xe9 \xff\xfe.txt".to_vec()).unwrap();
        assert_eq!(p.components().count(), 2);
        assert_eq!(p.parent().unwrap().as_bytes(), b"dir");
        let p = RelPath::from_bytes(b"...hidden/..x/x..".to_vec()).unwrap();
        assert_eq!(p.components().count(), 3);
    }

    #[test]
    fn rejects_escapes() {
        for bad in [
            &b""[..],
            b"/etc/passwd",
            b"..",
            b"a/../../b",
            b"./a",
            b"a/./b",
            b"a//b",
            b"a/",
            b"a\0b",
        ] {
            assert!(
                RelPath::from_bytes(bad.to_vec()).is_err(),
                "{:?} accepted",
                bad
            );
        }
        assert!(RelPath::from_bytes(vec![b'a'; MAX_PATH_LEN + 1]).is_err());
        assert!(RelPath::from_bytes(vec![b'a'; MAX_COMPONENT_LEN + 1]).is_err());
    }

    #[test]
    fn decode_validates() {
        let bytes = postcard::to_stdvec(&serde_bytes::Bytes::new(b"a/../b")).unwrap();
        assert!(postcard::from_bytes::<RelPath>(&bytes).is_err());
        let bytes = postcard::to_stdvec(&serde_bytes::Bytes::new(b"a/b")).unwrap();
        assert_eq!(
            postcard::from_bytes::<RelPath>(&bytes).unwrap().as_bytes(),
            b"a/b"
        );
    }

    #[test]
    fn from_path_and_starts_with() {
        let p = RelPath::from_path(Path::new("a/b/c")).unwrap();
        assert_eq!(p.as_bytes(), b"a/b/c");
        assert!(RelPath::from_path(Path::new("/a")).is_err());
        assert!(RelPath::from_path(Path::new("a/../b")).is_err());
        let a = RelPath::from_bytes("a").unwrap();
        assert!(p.starts_with(&a));
        assert!(!RelPath::from_bytes("ab").unwrap().starts_with(&a));
        assert_eq!(p.under(Path::new("/r")), PathBuf::from("/r/a/b/c"));
    }

    #[test]
    fn names() {
        assert!(Name::new("laptop").is_ok());
        for bad in ["", ".ferry", "..", "a/b", "a\0"] {
            assert!(Name::new(bad).is_err(), "{bad:?} accepted");
        }
    }
}
