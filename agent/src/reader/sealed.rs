//! Reading a protected folder (`encrypted` or `write-only`): the key given
//! checked against the one the folder was first sent with, and the sealed
//! objects the receiver keeps opened back into the entries they hold.
//!
//! The receiver lists and serves objects at opaque paths
//! ([`ferry_proto::seal`]); which real path an object holds is only known
//! once its header (in its first block) is open. So listing a directory or
//! restoring a subtree opens the header of every object of the tree at the
//! point, and keeps those at or below the paths asked. Objects come in two
//! formats (whole, and chunked for large files); [`front`] reads the
//! header of either from the object's first bytes alone.
//!
//! ## Layout
//!
//! - [`front`]: how many first bytes a header needs, and the header opened
//!   from them, in either format.

pub mod front;

pub use front::{front_needs, open_front, starts_chunked};

use ferry_proto::seal::{FolderPublic, FolderSecret, OpenError, Opener, SealedHeader, SealedKind};
use ferry_proto::{DirEntry, Hash, Name, Protection, RelPath, VersionInfo, VersionKind};
use tokio::task::JoinSet;

use super::{FetchError, Fetcher, Piece};
use crate::store::protection::short_key;

/// Objects opened at once.
pub const OPEN_IN_FLIGHT: usize = 8;

/// Why a protected folder cannot be read with the key given (nothing was
/// read or written).
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum LockedError {
    #[error("folder {folder} is encrypted: give its key file with --key-file")]
    Encrypted { folder: Name },
    #[error("folder {folder} is write-only: restoring needs the key file `ferry key new` wrote (a public file cannot open it)")]
    WriteOnly { folder: Name },
    #[error("folder {folder} is encrypted: a public file cannot open it; give the key file `ferry key new` wrote")]
    PublicOfEncrypted { folder: Name },
    #[error("this key is not the folder's (key {key}…, folder uses {folder_key}…)")]
    WrongKey { key: String, folder_key: String },
}

/// A key as given on the command line, before its passphrase is asked.
#[derive(Debug, Clone, Copy)]
pub struct GivenKey<'a> {
    /// Its public half.
    pub public: &'a FolderPublic,
    /// True for a key file (it can open objects), false for a public file.
    pub secret: bool,
}

/// What reading the folder needs: nothing (`plain`), or the folder key of
/// this key id.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Needs {
    Nothing,
    Secret { key: Hash },
}

/// Checks `given` against the folder's protection. `Plain` needs nothing
/// (a key given is not used); a protected folder needs a key file whose key
/// id is the folder's. With `public_is_enough` (listing the versions of a
/// path needs only the naming half) a public file also does.
pub fn check_key(
    folder: &Name,
    protection: Protection,
    given: Option<GivenKey<'_>>,
    public_is_enough: bool,
) -> Result<Needs, LockedError> {
    let folder = folder.clone();
    let key = match protection {
        Protection::Plain => return Ok(Needs::Nothing),
        Protection::Encrypted { key } | Protection::WriteOnly { key } => key,
    };
    let Some(given) = given else {
        return Err(match protection {
            Protection::WriteOnly { .. } => LockedError::WriteOnly { folder },
            _ => LockedError::Encrypted { folder },
        });
    };
    let id = given.public.key_id();
    if id != key {
        return Err(LockedError::WrongKey {
            key: short_key(&id),
            folder_key: short_key(&key),
        });
    }
    if !given.secret && !public_is_enough {
        return Err(match protection {
            Protection::WriteOnly { .. } => LockedError::WriteOnly { folder },
            _ => LockedError::PublicOfEncrypted { folder },
        });
    }
    Ok(Needs::Secret { key })
}

/// Checks that `secret` is the key `needs` names (a key file whose public
/// half and secret disagree is not the folder's either).
pub fn check_secret(secret: &FolderSecret, key: &Hash) -> Result<(), LockedError> {
    let id = secret.public().key_id();
    if id != *key {
        return Err(LockedError::WrongKey {
            key: short_key(&id),
            folder_key: short_key(key),
        });
    }
    Ok(())
}

/// Why one sealed object could not be opened.
#[derive(Debug, thiserror::Error)]
pub enum ObjectError {
    #[error(transparent)]
    Fetch(#[from] FetchError),
    #[error("cannot open the sealed object")]
    Open(#[from] OpenError),
    #[error(
        "the receiver's hash of the sealed object differs from the catalog's; it was discarded"
    )]
    ServerHash,
    #[error("the sealed object is not a file in the catalog")]
    NotAnObject,
    #[error("the sealed object ended before its header")]
    NoHeader,
    #[error("the sealed object ended early: the receiver stopped sending it")]
    Interrupted,
    /// The object opened, but its header names a path whose objects are
    /// kept elsewhere: it was moved (or copied) to this place by someone
    /// else than its sender. Not used.
    #[error("the sealed object of {real} was stored at another path; it was not used")]
    Misplaced { real: RelPath },
    #[error(transparent)]
    Cancelled(#[from] crate::tasks::Cancelled),
}

/// An object whose header is open.
#[derive(Debug, Clone)]
pub struct Opened {
    pub header: SealedHeader,
    /// The object's version, at its opaque path.
    pub version: VersionInfo,
}

/// An object that could not be opened, and why.
#[derive(Debug)]
pub struct Unopened {
    pub version: VersionInfo,
    pub error: ObjectError,
}

/// The headers of `entries` (objects of a tree), sorted by real path
/// (parents before children), and the objects that did not open.
pub async fn open_headers(
    fetcher: &Fetcher,
    secret: &FolderSecret,
    entries: Vec<VersionInfo>,
) -> (Vec<Opened>, Vec<Unopened>) {
    let mut openers: Vec<Opener> = Vec::new();
    let mut opened = Vec::new();
    let mut failed = Vec::new();
    let mut tasks: JoinSet<(
        Option<Opener>,
        VersionInfo,
        Result<SealedHeader, ObjectError>,
    )> = JoinSet::new();
    let mut items = entries.into_iter();
    loop {
        while tasks.len() < OPEN_IN_FLIGHT {
            let Some(v) = items.next() else { break };
            let opener = openers.pop().unwrap_or_else(|| Opener::new(secret));
            let fetcher = fetcher.clone();
            tasks.spawn(async move {
                let (opener, header) = read_header(&fetcher, opener, &v).await;
                (opener, v, header)
            });
        }
        let Some(joined) = tasks.join_next().await else {
            break;
        };
        // A task panicking is a bug: resumed here, as `tasks::blocking` does.
        let (opener, version, header) = match joined {
            Ok(done) => done,
            Err(e) if e.is_panic() => std::panic::resume_unwind(e.into_panic()),
            Err(_) => continue,
        };
        openers.extend(opener);
        match header {
            Ok(header) => opened.push(Opened { header, version }),
            Err(error) => failed.push(Unopened { version, error }),
        }
    }
    sort_by_real_path(&mut opened);
    (opened, failed)
}

/// Sorts opened objects by real path, bytewise: a directory comes before
/// what it holds.
pub fn sort_by_real_path(opened: &mut [Opened]) {
    opened.sort_by(|a, b| a.header.path.as_bytes().cmp(b.header.path.as_bytes()));
}

/// True if `path` is one of `under` or lies below one (all if `under` is
/// empty).
pub fn is_under(path: &RelPath, under: &[RelPath]) -> bool {
    under.is_empty() || under.iter().any(|u| path.starts_with(u))
}

/// Fetches the front of `v` (the bytes its header needs, see
/// [`front_needs`]) and opens its header; the rest of the object is not
/// fetched. The opener comes back unless the runtime is shutting down.
async fn read_header(
    fetcher: &Fetcher,
    mut opener: Opener,
    v: &VersionInfo,
) -> (Option<Opener>, Result<SealedHeader, ObjectError>) {
    let VersionKind::File { hash, .. } = v.kind else {
        return (Some(opener), Err(ObjectError::NotAnObject));
    };
    let (bytes, ended) = match fetch_front(fetcher, v.id, &hash).await {
        Ok(got) => got,
        Err(e) => return (Some(opener), Err(e)),
    };
    let stored = v.path.clone();
    let opened = crate::tasks::blocking(move || {
        let header = header_of(&mut opener, &bytes, ended, &stored);
        (opener, header)
    })
    .await;
    match opened {
        Ok((opener, header)) => (Some(opener), header),
        Err(cancelled) => (None, Err(cancelled.into())),
    }
}

/// The first bytes of version `id`, fetched until its header's front is in
/// (pieces as they come: a little more than [`front_needs`]), and whether
/// that was all of it (its end and hash checked). Fetching stops there.
pub(crate) async fn fetch_front(
    fetcher: &Fetcher,
    id: u64,
    hash: &Hash,
) -> Result<(Vec<u8>, bool), ObjectError> {
    let mut fetch = fetcher.fetch(id).await?;
    let mut bytes = Vec::new();
    while bytes.is_empty() || bytes.len() < front_needs(&bytes) {
        match fetch.next().await? {
            Piece::Data(data) => bytes.extend_from_slice(&data),
            Piece::End(sent) if sent != *hash => return Err(ObjectError::ServerHash),
            Piece::End(_) => return Ok((bytes, true)),
        }
    }
    Ok((bytes, false))
}

/// Opens the header in `bytes` (blocking, see [`open_front`]); `ended`:
/// `bytes` is the whole object. The header must belong at `stored`.
fn header_of(
    opener: &mut Opener,
    bytes: &[u8],
    ended: bool,
    stored: &RelPath,
) -> Result<SealedHeader, ObjectError> {
    let header = open_front(opener, bytes, ended)?;
    check_place(opener.public(), &header, stored)?;
    Ok(header)
}

/// Fails unless `header` (of an object stored at `stored`) names a path
/// whose objects are stored there: the receiver cannot move an object to
/// another path without this being noticed.
pub fn check_place(
    public: &FolderPublic,
    header: &SealedHeader,
    stored: &RelPath,
) -> Result<(), ObjectError> {
    if public.opaque_path(&header.path) == *stored {
        Ok(())
    } else {
        Err(ObjectError::Misplaced {
            real: header.path.clone(),
        })
    }
}

/// A directory's listing as `ferry ls` shows it, from the opened objects of
/// the tree: the children of `dir` (`None`: the root) sorted by name; if it
/// has none, the entry itself when it is not a directory; `None` if nothing
/// is at `dir`.
pub fn listing(opened: &[Opened], dir: Option<&RelPath>) -> Option<Vec<DirEntry>> {
    let mut children: Vec<DirEntry> = opened
        .iter()
        .filter(|o| o.header.path.parent().as_ref() == dir)
        .map(dir_entry)
        .collect();
    children.sort_by(|a, b| a.name().cmp(b.name()));
    let Some(dir) = dir else {
        return Some(children);
    };
    if !children.is_empty() {
        return Some(children);
    }
    let own = opened.iter().find(|o| o.header.path == *dir)?;
    Some(match own.header.kind {
        SealedKind::Dir => Vec::new(),
        _ => vec![dir_entry(own)],
    })
}

/// The entry an opened object holds, as a listing shows it: real path,
/// kind, size, mode and mtime from the header; the version and run of the
/// object (a file's hash is the sealed object's: the content's is not
/// known without opening all of it).
pub fn dir_entry(o: &Opened) -> DirEntry {
    let h = &o.header;
    let kind = match &h.kind {
        SealedKind::File => VersionKind::File {
            size: h.size,
            hash: match o.version.kind {
                VersionKind::File { hash, .. } => hash,
                _ => [0; 32],
            },
        },
        SealedKind::Dir => VersionKind::Dir,
        SealedKind::Symlink { target } => VersionKind::Symlink {
            target: target.clone(),
        },
    };
    DirEntry {
        path: h.path.clone(),
        kind,
        mtime_ns: h.mtime_ns,
        mode: h.mode,
        version: Some(o.version.id),
        run: Some(o.version.run),
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used)] // a failing unwrap is a failing test
mod tests {
    use super::*;

    fn rel(s: &str) -> RelPath {
        RelPath::from_bytes(s).unwrap()
    }

    fn name(s: &str) -> Name {
        Name::new(s).unwrap()
    }

    fn opened(path: &str, kind: SealedKind, id: u64) -> Opened {
        let size = if kind == SealedKind::File { 5 } else { 0 };
        Opened {
            header: SealedHeader {
                path: rel(path),
                kind,
                mode: 0o640,
                mtime_ns: 7,
                size,
            },
            version: VersionInfo {
                id,
                path: rel("ab/cdef"),
                kind: VersionKind::File {
                    size: 100,
                    hash: [id as u8; 32],
                },
                mtime_ns: 0,
                mode: 0o600,
                run: 3,
                stored_ms: 0,
                replaced_run: None,
                deleted: false,
            },
        }
    }

    #[test]
    fn subtrees_keep_their_paths_and_what_is_below_only() {
        let under = [rel("a/b"), rel("c")];
        assert!(is_under(&rel("a/b"), &under));
        assert!(is_under(&rel("a/b/x"), &under));
        assert!(is_under(&rel("c/d/e"), &under));
        assert!(!is_under(&rel("a"), &under));
        assert!(!is_under(&rel("a/bc"), &under));
        assert!(!is_under(&rel("cd"), &under));
        assert!(is_under(&rel("anything"), &[]));
    }

    #[test]
    fn real_paths_sort_parents_before_children() {
        let mut all = vec![
            opened("a/b/f", SealedKind::File, 1),
            opened("a.txt", SealedKind::File, 2),
            opened("a/b", SealedKind::Dir, 3),
            opened("a", SealedKind::Dir, 4),
        ];
        sort_by_real_path(&mut all);
        let paths: Vec<String> = all.iter().map(|o| o.header.path.to_string()).collect();
        assert_eq!(paths, ["a", "a.txt", "a/b", "a/b/f"]);
    }

    #[test]
    fn a_listing_shows_real_children_of_a_directory_or_the_entry_itself() {
        let all = vec![
            opened("a", SealedKind::Dir, 1),
            opened("a/z", SealedKind::File, 2),
            opened(
                "a/l",
                SealedKind::Symlink {
                    target: b"z".to_vec(),
                },
                3,
            ),
            opened("a/e", SealedKind::Dir, 4),
            opened("top.txt", SealedKind::File, 5),
        ];
        let root = listing(&all, None).unwrap();
        let names: Vec<&[u8]> = root.iter().map(DirEntry::name).collect();
        assert_eq!(names, [b"a".as_slice(), b"top.txt"]);
        let a = listing(&all, Some(&rel("a"))).unwrap();
        let names: Vec<&[u8]> = a.iter().map(DirEntry::name).collect();
        assert_eq!(names, [b"e".as_slice(), b"l", b"z"]);
        let z = &a[2];
        assert_eq!(
            z.kind,
            VersionKind::File {
                size: 5,
                hash: [2; 32]
            }
        );
        assert_eq!(
            (z.mode, z.mtime_ns, z.version, z.run),
            (0o640, 7, Some(2), Some(3))
        );
        assert_eq!(listing(&all, Some(&rel("a/e"))).unwrap(), Vec::new());
        let file = listing(&all, Some(&rel("top.txt"))).unwrap();
        assert_eq!(file.len(), 1);
        assert_eq!(file[0].path, rel("top.txt"));
        assert_eq!(listing(&all, Some(&rel("nothing"))), None);
    }

    #[test]
    fn without_a_key_a_protected_folder_says_what_to_give() {
        let docs = name("docs");
        assert_eq!(
            check_key(&docs, Protection::Plain, None, false),
            Ok(Needs::Nothing)
        );
        let e = check_key(&docs, Protection::Encrypted { key: [1; 32] }, None, false).unwrap_err();
        assert_eq!(
            e.to_string(),
            "folder docs is encrypted: give its key file with --key-file"
        );
        let e = check_key(&docs, Protection::WriteOnly { key: [1; 32] }, None, true).unwrap_err();
        assert_eq!(
            e.to_string(),
            "folder docs is write-only: restoring needs the key file `ferry key new` wrote (a public file cannot open it)"
        );
    }
}
