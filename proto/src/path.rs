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
use unicode_normalization::UnicodeNormalization;
use unicode_properties::{GeneralCategory, UnicodeGeneralCategory};

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
///
/// Held as a boxed slice: no spare capacity and 8 bytes less than a `Vec`,
/// which counts in a scan of a million paths.
#[derive(Clone, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct RelPath(Box<[u8]>);

impl RelPath {
    /// Checks `bytes` and wraps them.
    pub fn from_bytes(bytes: impl Into<Vec<u8>>) -> Result<Self, PathError> {
        let bytes = bytes.into();
        validate_rel(&bytes)?;
        Ok(Self(bytes.into_boxed_slice()))
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
        self.0.into_vec()
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
        Some(RelPath(self.0[..cut].into()))
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
/// receiver's own `.ferry` directory). That is what decodes.
///
/// A *new* name — a sender registering, a folder's first run — must also
/// pass [`Name::check_new`]: printable characters only, in their plain form
/// (see [`NameRuleError`]). Names recorded before that rule existed keep
/// working, so the wire and the catalog accept them.
///
/// `Display` escapes what could forge or hide text in a log line (controls,
/// format characters such as bidi overrides, line separators, unassigned and
/// private-use code points, and `\`), so a name is always one visible token;
/// [`Name::as_str`] gives the name itself.
#[derive(Clone, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct Name(String);

/// Why a name is refused as a new sender or folder name.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum NameRuleError {
    #[error("name {name:?} contains {what} {ch:?} (U+{code:04X}): use printable characters only", code = u32::from(*ch))]
    Unprintable {
        name: String,
        ch: char,
        what: &'static str,
    },
    #[error("name {name:?} uses compatibility look-alike characters (full-width or styled letters, ligatures, ...): use its plain form {plain:?}")]
    NotPlain { name: String, plain: String },
}

/// What kind of character `c` is if it may not appear in a new name (and is
/// escaped in logs): controls (Cc), format characters incl. bidi overrides,
/// isolates and zero-width joiners (Cf), line and paragraph separators
/// (Zl, Zp), private-use (Co), unassigned (Cn) and surrogate (Cs) code points.
fn unprintable(c: char) -> Option<&'static str> {
    match c.general_category() {
        GeneralCategory::Control => Some("a control character"),
        GeneralCategory::Format => Some("an invisible format character"),
        GeneralCategory::LineSeparator | GeneralCategory::ParagraphSeparator => {
            Some("a line separator")
        }
        GeneralCategory::PrivateUse => Some("a private-use character"),
        GeneralCategory::Unassigned | GeneralCategory::Surrogate => {
            Some("an unassigned code point")
        }
        _ => None,
    }
}

impl Name {
    /// Checks the structural rule (what any stored or decoded name obeys)
    /// and wraps `name`. For a name chosen now, see [`Name::check_new`].
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

    /// The rule for a name that is new to a receiver: no character that
    /// [`unprintable`] lists, and equal to its NFKC form, so look-alikes
    /// such as full-width `ｌａｐ` (NFKC `lap`) or a decomposed `é` are not a
    /// second namespace beside the plain name. Cross-script look-alikes
    /// (Cyrillic `а` for Latin `a`) are not caught.
    pub fn check_new(&self) -> Result<(), NameRuleError> {
        if let Some((ch, what)) = self
            .0
            .chars()
            .find_map(|c| unprintable(c).map(|what| (c, what)))
        {
            return Err(NameRuleError::Unprintable {
                name: self.0.clone(),
                ch,
                what,
            });
        }
        let plain: String = self.0.nfkc().collect();
        if plain != self.0 {
            return Err(NameRuleError::NotPlain {
                name: self.0.clone(),
                plain,
            });
        }
        Ok(())
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
        use fmt::Write;
        for c in self.0.chars() {
            match c {
                '\\' | '\n' | '\r' | '\t' => write!(f, "{}", c.escape_debug())?,
                c if unprintable(c).is_some() => write!(f, "{}", c.escape_unicode())?,
                c => f.write_char(c)?,
            }
        }
        Ok(())
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

    fn rule(name: &str) -> Result<(), NameRuleError> {
        Name::new(name).unwrap().check_new()
    }

    #[test]
    fn new_names_refuse_newline_bidi_override_full_width_and_zero_width_joiner() {
        let unprintable = |name: &str, bad: char| match rule(name) {
            Err(NameRuleError::Unprintable { ch, .. }) => assert_eq!(ch, bad, "{name:?}"),
            other => panic!("{name:?}: {other:?}"),
        };
        unprintable("lap\nFORGED log line", '\n');
        unprintable("lap\u{202e}pot", '\u{202e}');
        unprintable("la\u{200d}p", '\u{200d}');
        unprintable("lap\u{2066}x\u{2069}", '\u{2066}');
        unprintable("lap\u{2028}", '\u{2028}');
        unprintable("lap\u{7f}", '\u{7f}');
        match rule("ｌａｐ") {
            Err(NameRuleError::NotPlain { plain, .. }) => assert_eq!(plain, "lap"),
            other => panic!("full-width accepted: {other:?}"),
        }
        // A decomposed é (e + U+0301) is a second spelling of the composed one.
        assert!(matches!(
            rule("cafe\u{301}"),
            Err(NameRuleError::NotPlain { .. })
        ));
        let message = rule("lap\u{202e}pot").unwrap_err().to_string();
        assert!(
            message.contains("U+202E") && !message.contains('\u{202e}'),
            "{message}"
        );
    }

    #[test]
    fn new_names_accept_printable_text_in_any_script() {
        for good in [
            "laptop",
            "Desk PC 2",
            "café",
            "ноутбук",
            "ラップトップ",
            "a-b_c (1)",
            "😀",
        ] {
            assert_eq!(rule(good), Ok(()), "{good:?}");
        }
    }

    #[test]
    fn display_escapes_what_would_forge_a_log_line() {
        let show = |name: &str| Name::new(name).unwrap().to_string();
        assert_eq!(show("lap\nINFO forged"), "lap\\nINFO forged");
        assert_eq!(show("lap\u{202e}pot"), "lap\\u{202e}pot");
        assert_eq!(show("la\u{200d}p"), "la\\u{200d}p");
        assert_eq!(show("a\\b"), "a\\\\b");
        assert_eq!(show("café ｌａｐ"), "café ｌａｐ");
        assert!(!show("x\r\n\u{2028}\u{85}").contains(['\r', '\n', '\u{2028}', '\u{85}']));
    }

    #[test]
    fn names_recorded_before_the_rule_still_decode() {
        // The wire and the catalog accept what they always did: a sender
        // registered as `lap\n` keeps its namespace.
        let bytes = postcard::to_stdvec("lap\n").unwrap();
        let name: Name = postcard::from_bytes(&bytes).unwrap();
        assert_eq!(name.as_str(), "lap\n");
        assert!(name.check_new().is_err());
    }
}
