//! Walking the source tree: stat only, never following symlinks, never
//! opening special files.
//!
//! [`scan`] returns every file, directory and symlink below a root with the
//! metadata the index compares ([`ScanEntry`]), plus what it skipped (sockets,
//! FIFOs, devices) and what it could not read. [`hash_file`] is the one place
//! that reads file content for change detection.
//!
//! Every directory and file is opened relative to the source root's
//! descriptor ([`SourceDir`], module `source`), never following a symlink on
//! the way: a directory swapped for a link after the scan is refused, not
//! followed out of the source.
//!
//! The walk itself runs on a few threads at once (module `walk`): on a cold cache
//! it waits on the disk, and the disk answers several requests faster than
//! one after another.
//!
//! ## Layout
//!
//! - `source`: the source root's descriptor, every open relative to it.
//! - `exclude`: the user's exclusion rules (patterns, markers, `.ferryignore`).
//! - `walk`: the parallel walk, reading directories and stat'ing entries.
//! - `jobs`: the stack of jobs the walk's threads share.
//! - `markers`: the rule files a directory holds (marker files, `.ferryignore`).
//! - `start`: where the rules leave a path below the root (partial walks, watch).

use std::fs::Metadata;
use std::io::{self, Read};
use std::os::unix::ffi::OsStrExt;
use std::os::unix::fs::MetadataExt;
use std::path::{Path, PathBuf};

use ferry_proto::{Hash, RelPath};

mod exclude;
mod jobs;
mod markers;
mod source;
mod start;
mod walk;

pub use exclude::{ExcludeRules, RulesError, CACHEDIR_SIGNATURE, CACHEDIR_TAG, IGNORE_FILE};
pub use source::{OpenError, SourceDir};

/// Size of one read while hashing a file.
const HASH_READ: usize = 256 * 1024;

/// What a scanned path is.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ScanKind {
    /// A regular file.
    File,
    /// A directory.
    Dir,
    /// A symbolic link, with its target exactly as stored (never followed).
    // A thin box keeps this enum at two words: one scanned entry is held
    // per path of the tree, so every word counts, and links are rare.
    Symlink {
        /// The raw target bytes.
        target: Box<Vec<u8>>,
    },
}

/// One file, directory or symlink found by [`scan`], with its `lstat` data.
#[derive(Debug, Clone)]
pub struct ScanEntry {
    /// Path relative to the scanned root.
    pub path: RelPath,
    /// What it is.
    pub kind: ScanKind,
    /// `st_size` (for a symlink, the target's length).
    pub size: u64,
    /// Modification time in nanoseconds since the Unix epoch.
    pub mtime_ns: i64,
    /// Permission bits: `st_mode & 0o7777`.
    pub mode: u32,
    /// Inode number.
    pub ino: u64,
    /// Device number of the filesystem holding it ([`dev_id`]).
    pub dev: u32,
}

/// A device number as a scanned entry keeps it, in 32 bits: every Linux
/// `st_dev` fits (the kernel's `dev_t` is 32 bits) and is kept as it is; a
/// wider one (another system's) is folded. Four bytes less per entry: one
/// entry is held per path of the tree.
pub fn dev_id(st_dev: u64) -> u32 {
    (st_dev ^ (st_dev >> 32)) as u32
}

/// A path the scan skipped or could not read, and why.
#[derive(Debug, Clone)]
pub struct ScanProblem {
    /// The path **relative to the scanned root** (empty if the problem could
    /// not be tied to a path: then everything counts as below it).
    pub path: PathBuf,
    /// What happened, for the user.
    pub message: String,
}

/// The result of one [`scan`].
#[derive(Debug, Default)]
pub struct Scan {
    /// Everything found, sorted by path bytes (so parents come before their
    /// children); the root itself is not included.
    pub entries: Vec<ScanEntry>,
    /// Sockets, FIFOs and devices: not synced, reported as warnings.
    pub skipped: Vec<ScanProblem>,
    /// Directories that could not be read, entries that vanished while being
    /// looked at, names that are not valid relative paths.
    pub errors: Vec<ScanProblem>,
    /// What the walk did.
    pub stats: ScanStats,
    /// Directories excluded by a marker file, found by the walk (emptied
    /// once their entries are removed).
    marked: Vec<Vec<u8>>,
    /// `None` for a scan of the whole tree; else the only directories this
    /// scan looked at ([`scan_dirs`]): what the index knows elsewhere was
    /// not looked at, so it is neither unchanged nor deleted.
    pub partial: Option<Vec<ScanRoot>>,
}

/// Counts of one walk: what it looked at and what the exclusion rules left
/// out (an excluded directory counts once, whatever it holds).
#[derive(Debug, Default, Clone, Copy, PartialEq, Eq)]
pub struct ScanStats {
    /// Directories listed.
    pub dirs_read: u64,
    /// Entries stat'ed.
    pub stat_calls: u64,
    /// Files (and symlinks) excluded by a pattern.
    pub excluded_files: u64,
    /// Directories excluded by a pattern or a marker file.
    pub excluded_dirs: u64,
}

impl ScanStats {
    fn add(&mut self, other: &ScanStats) {
        self.dirs_read += other.dirs_read;
        self.stat_calls += other.stat_calls;
        self.excluded_files += other.excluded_files;
        self.excluded_dirs += other.excluded_dirs;
    }
}

/// One directory a partial scan looks at.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ScanRoot {
    /// Relative to the source root; empty for the root itself.
    pub path: PathBuf,
    /// With everything below it (a directory that appeared), or only its
    /// own entries (a directory whose entries changed).
    pub recursive: bool,
}

impl Scan {
    /// True if `path` is at or below a path listed in [`Scan::errors`]: what
    /// the index knows there must not be treated as deleted, because the scan
    /// could not see it.
    pub fn is_below_error(&self, path: &RelPath) -> bool {
        let path = path.as_path();
        self.errors.iter().any(|e| path.starts_with(&e.path))
    }

    /// Whether `path`, known to the index but absent from this scan, is
    /// gone: always for a full scan; for a partial one, only if the scan
    /// looked where it, or the nearest of its parents, would be listed
    /// and found nothing there (a directory moved away takes everything
    /// below it). `scanned` tells whether a path is in [`Scan::entries`].
    pub fn saw_gone(&self, path: &RelPath, scanned: impl Fn(&Path) -> bool) -> bool {
        let Some(roots) = &self.partial else {
            return true;
        };
        let listed_by_scan = |p: &Path| {
            roots.iter().any(|r| {
                if r.recursive {
                    p.starts_with(&r.path) && p != r.path
                } else {
                    p.parent() == Some(r.path.as_path())
                }
            })
        };
        let mut at = Some(path.as_path());
        while let Some(p) = at.filter(|p| !p.as_os_str().is_empty()) {
            if listed_by_scan(p) {
                // The path itself is absent; a parent must be too.
                return p == path.as_path() || !scanned(p);
            }
            at = p.parent();
        }
        false
    }
}

/// Why a scan could not start.
#[derive(Debug, thiserror::Error)]
pub enum ScanError {
    /// The root cannot be examined (missing, no permission, ...).
    #[error("cannot scan source directory {}; check that it exists and is readable", root.display())]
    Root {
        /// The root given.
        root: PathBuf,
        /// The underlying error.
        source: io::Error,
    },
    /// The root is something other than a directory.
    #[error("cannot scan {}: it is not a directory; give the folder to send", root.display())]
    NotADirectory {
        /// The root given.
        root: PathBuf,
    },
}

/// Walks `root` (stat only) and lists its files, directories and symlinks.
///
/// Symlinks are reported, never followed; special files are skipped with a
/// warning. Paths in `exclude` (absolute, canonical) are not descended into
/// and not reported. Only a root that is missing, not a directory or not
/// readable is an error; every other problem is recorded in the result.
pub fn scan(root: &Path, exclude: &[PathBuf]) -> Result<Scan, ScanError> {
    Ok(scan_dir(&SourceDir::open(root)?, exclude))
}

/// [`scan`] of a source already open: the run then reads every file
/// through the same descriptor.
pub fn scan_dir(source: &SourceDir, exclude: &[PathBuf]) -> Scan {
    scan_filtered(source, exclude, &ExcludeRules::default())
}

/// [`scan_dir`] that also leaves out what the user's exclusion `rules`
/// exclude: an excluded directory is stat'ed once and never listed.
pub fn scan_filtered(source: &SourceDir, exclude: &[PathBuf], rules: &ExcludeRules) -> Scan {
    // Exclusions as paths relative to the root; those elsewhere (or the
    // root itself) can never match an entry.
    let exclude: Vec<PathBuf> = exclude
        .iter()
        .filter_map(|x| x.strip_prefix(source.path()).ok())
        .filter(|x| !x.as_os_str().is_empty())
        .map(Path::to_path_buf)
        .collect();
    let out = walk::walk(source, &exclude, rules);
    sorted(out)
}

/// A partial scan: only the directories in `roots` (see [`ScanRoot`]), for a
/// run that watch mode triggered. `exclude` and `rules` as for
/// [`scan_filtered`]; a root that the rules exclude (or that lies below an
/// excluded directory) is not looked at.
pub fn scan_dirs(
    source: &SourceDir,
    exclude: &[PathBuf],
    rules: &ExcludeRules,
    roots: Vec<ScanRoot>,
) -> Scan {
    let exclude: Vec<PathBuf> = exclude
        .iter()
        .filter_map(|x| x.strip_prefix(source.path()).ok())
        .filter(|x| !x.as_os_str().is_empty())
        .map(Path::to_path_buf)
        .collect();
    // A root at or below an exclusion is not looked at (the walk checks
    // only the names it lists).
    let roots: Vec<ScanRoot> = roots
        .into_iter()
        .filter(|r| !exclude.iter().any(|x| r.path.starts_with(x)))
        .filter(|r| !start::is_left_out(source, rules, r.path.as_os_str().as_bytes()))
        .collect();
    let starts: Vec<(Vec<u8>, bool)> = roots
        .iter()
        .map(|r| (r.path.as_os_str().as_bytes().to_vec(), r.recursive))
        .collect();
    let mut out = walk::walk_from(source, &exclude, rules, &starts);
    // Each root's own entry too: a name added or removed changed its mtime.
    // (Opened as the walk opens it; an error there is the walk's to report.)
    for (rel, _) in starts.iter().filter(|(rel, _)| !rel.is_empty()) {
        let flags = rustix::fs::OFlags::RDONLY | rustix::fs::OFlags::DIRECTORY;
        let stat = source
            .open_at(rel, flags)
            .ok()
            .and_then(|fd| rustix::fs::fstat(&fd).ok());
        if let (Some(stat), Ok(path)) = (stat, RelPath::from_bytes(rel.clone())) {
            out.entries.push(walk::entry(path, ScanKind::Dir, &stat));
        }
    }
    let mut out = sorted(out);
    // Roots never overlap ([`ScanRoot`]s are made so), but a duplicate
    // entry must never reach the plan.
    out.entries.dedup_by(|a, b| a.path == b.path);
    out.partial = Some(roots);
    out
}

/// `out` with its entries and reports in path order.
fn sorted(mut out: Scan) -> Scan {
    out.entries.sort_unstable_by(|a, b| a.path.cmp(&b.path));
    if !out.marked.is_empty() {
        let mut marked = std::mem::take(&mut out.marked);
        marked.sort_unstable();
        out.entries.retain(|e| {
            marked
                .binary_search_by(|m| m.as_slice().cmp(e.path.as_bytes()))
                .is_err()
        });
    }
    // Threads finish in any order: sort the reports too, so that a scan of
    // the same tree always reads the same.
    let by_path = |a: &ScanProblem, b: &ScanProblem| {
        (a.path.as_os_str().as_bytes(), &a.message)
            .cmp(&(b.path.as_os_str().as_bytes(), &b.message))
    };
    out.skipped.sort_by(by_path);
    out.errors.sort_by(by_path);
    out
}

/// Whether a scan under `rules` leaves out `path` (relative to the root):
/// it or a directory above it is excluded (a pattern, a `.ferryignore`, a
/// marker file, another filesystem).
pub fn is_left_out(source: &SourceDir, rules: &ExcludeRules, path: &Path) -> bool {
    start::is_left_out(source, rules, path.as_os_str().as_bytes())
}

/// Hashes the content of the regular file `entry` describes with blake3;
/// returns the hash and the number of bytes read.
///
/// The file is opened through `source` ([`SourceDir::open_scanned`]): no
/// symlink followed, never blocking on a FIFO swapped in since the scan, and
/// only if it is still the file the scan saw.
pub fn hash_file(source: &SourceDir, entry: &ScanEntry) -> Result<(Hash, u64), OpenError> {
    let file = source.open_scanned(entry)?;
    hash_reader(&mut crate::sparse::HoleReader::new(&file)).map_err(|source| OpenError::Io {
        path: entry.path.clone(),
        source,
    })
}

fn hash_reader(file: &mut impl Read) -> io::Result<(Hash, u64)> {
    let mut hasher = blake3::Hasher::new();
    let mut buf = vec![0u8; HASH_READ];
    let mut total = 0u64;
    loop {
        let n = match file.read(&mut buf) {
            Ok(0) => break,
            Ok(n) => n,
            Err(err) if err.kind() == io::ErrorKind::Interrupted => continue,
            Err(err) => return Err(err),
        };
        hasher.update(&buf[..n]);
        total += n as u64;
    }
    Ok((*hasher.finalize().as_bytes(), total))
}

/// Modification time in nanoseconds: `st_mtime * 1e9 + st_mtime_nsec`.
pub fn mtime_ns(meta: &Metadata) -> i64 {
    meta.mtime()
        .saturating_mul(1_000_000_000)
        .saturating_add(meta.mtime_nsec())
}

/// `parent/name`, or `name` at the root.
fn join(parent: &[u8], name: &[u8]) -> Vec<u8> {
    let mut out = Vec::with_capacity(parent.len() + 1 + name.len());
    if !parent.is_empty() {
        out.extend_from_slice(parent);
        out.push(b'/');
    }
    out.extend_from_slice(name);
    out
}

#[cfg(test)]
#[allow(clippy::unwrap_used, clippy::expect_used)] // tests fail loudly
mod tests {
    use super::*;
    use filetime::FileTime;
    use std::ffi::OsStr;
    use std::fs;
    use std::os::unix::fs::{symlink, PermissionsExt};
    use std::process::Command;

    /// A scan holds one entry per path of the tree (a million of them is
    /// 64 MB at this size, plus the paths): a field or a fat link target
    /// more is 8 MB more.
    #[test]
    fn a_scanned_entry_stays_eight_words() {
        assert_eq!(std::mem::size_of::<ScanKind>(), 16);
        assert!(std::mem::size_of::<ScanEntry>() <= 64);
    }

    #[test]
    fn a_linux_device_number_is_kept_as_it_is_and_a_wider_one_folded() {
        let disk = std::fs::metadata("/").unwrap().dev();
        assert_eq!(u64::from(dev_id(disk)), disk);
        assert_eq!(dev_id(0xfd01), 0xfd01);
        assert_eq!(dev_id(u64::from(u32::MAX)), u32::MAX);
        // The high half of a wider number still counts.
        assert_ne!(dev_id((1 << 32) | 5), dev_id(5));
    }

    fn rel(s: &[u8]) -> RelPath {
        RelPath::from_bytes(s.to_vec()).unwrap()
    }

    fn find<'a>(scan: &'a Scan, path: &[u8]) -> &'a ScanEntry {
        scan.entries
            .iter()
            .find(|e| e.path.as_bytes() == path)
            .unwrap()
    }

    #[test]
    fn lists_files_dirs_and_symlinks_with_metadata() {
        let dir = tempfile::tempdir().unwrap();
        let root = dir.path();
        fs::create_dir_all(root.join("a/empty")).unwrap();
        fs::write(root.join("a/f.txt"), b"hello").unwrap();
        fs::set_permissions(root.join("a/f.txt"), fs::Permissions::from_mode(0o4640)).unwrap();
        let t = FileTime::from_unix_time(1_700_000_000, 123_456_789);
        filetime::set_file_mtime(root.join("a/f.txt"), t).unwrap();
        symlink("a/f.txt", root.join("link")).unwrap();
        symlink("nowhere/at/all", root.join("dangling")).unwrap();
        filetime::set_symlink_file_times(root.join("dangling"), t, FileTime::from_unix_time(5, 7))
            .unwrap();
        fs::write(root.join(OsStr::from_bytes(b"caf\xe9")), b"x").unwrap();
        fs::write(root.join("a.txt"), b"").unwrap();

        let scan = scan(root, &[]).unwrap();
        assert!(scan.errors.is_empty(), "{:?}", scan.errors);
        assert!(scan.skipped.is_empty());
        let paths: Vec<&[u8]> = scan.entries.iter().map(|e| e.path.as_bytes()).collect();
        let expected: Vec<&[u8]> = vec![
            b"a",
            b"a.txt",
            b"a/empty",
            b"a/f.txt",
            b"caf\xe9",
            b"dangling",
            b"link",
        ];
        assert_eq!(paths, expected);

        let f = find(&scan, b"a/f.txt");
        assert_eq!(f.kind, ScanKind::File);
        assert_eq!(f.size, 5);
        assert_eq!(f.mtime_ns, 1_700_000_000_123_456_789);
        assert_eq!(f.mode, 0o4640);
        assert_eq!(f.ino, fs::metadata(root.join("a/f.txt")).unwrap().ino());
        assert_ne!(f.dev, 0);
        assert_eq!(find(&scan, b"a/empty").kind, ScanKind::Dir);
        assert_eq!(
            find(&scan, b"link").kind,
            ScanKind::Symlink {
                target: b"a/f.txt".to_vec().into()
            }
        );
        let dangling = find(&scan, b"dangling");
        assert_eq!(
            dangling.kind,
            ScanKind::Symlink {
                target: b"nowhere/at/all".to_vec().into()
            }
        );
        assert_eq!(dangling.mtime_ns, 5_000_000_007);
        assert_eq!(find(&scan, b"caf\xe9").size, 1);
    }

    #[test]
    fn skips_fifos_and_sockets_without_blocking() {
        let dir = tempfile::tempdir().unwrap();
        let root = dir.path();
        let status = Command::new("mkfifo")
            .arg(root.join("fifo"))
            .status()
            .unwrap();
        assert!(status.success());
        let _listener = std::os::unix::net::UnixListener::bind(root.join("sock")).unwrap();
        fs::write(root.join("file"), b"x").unwrap();

        let scan = scan(root, &[]).unwrap();
        let paths: Vec<&[u8]> = scan.entries.iter().map(|e| e.path.as_bytes()).collect();
        assert_eq!(paths, vec![&b"file"[..]]);
        let mut skipped: Vec<_> = scan.skipped.iter().map(|p| p.path.clone()).collect();
        skipped.sort();
        assert_eq!(skipped, vec![PathBuf::from("fifo"), PathBuf::from("sock")]);
        assert!(scan.skipped.iter().any(|p| p.message.contains("FIFO")));
        assert!(scan.errors.is_empty());

        // Opening a FIFO is refused instead of blocking on it.
        let source = SourceDir::open(root).unwrap();
        assert!(matches!(
            source.open_file(&rel(b"fifo")),
            Err(OpenError::NotAFile { .. })
        ));
    }

    #[test]
    fn exclude_is_not_descended_into() {
        let dir = tempfile::tempdir().unwrap();
        let root = dir.path().canonicalize().unwrap();
        fs::create_dir_all(root.join("keep/sub")).unwrap();
        fs::write(root.join("keep/sub/f"), b"x").unwrap();
        fs::write(root.join("g"), b"x").unwrap();
        let scan = scan(&root, &[root.join("keep")]).unwrap();
        let paths: Vec<&[u8]> = scan.entries.iter().map(|e| e.path.as_bytes()).collect();
        assert_eq!(paths, vec![&b"g"[..]]);
    }

    #[test]
    fn bad_root_is_an_error_naming_it() {
        let dir = tempfile::tempdir().unwrap();
        let missing = dir.path().join("missing");
        let err = scan(&missing, &[]).unwrap_err();
        assert!(matches!(err, ScanError::Root { .. }));
        assert!(err.to_string().contains("missing"));
        fs::write(dir.path().join("file"), b"x").unwrap();
        let err = scan(&dir.path().join("file"), &[]).unwrap_err();
        assert!(matches!(err, ScanError::NotADirectory { .. }), "{err}");
    }

    #[test]
    fn a_partial_scan_applies_the_exclusion_rules_of_the_directories_above_it() {
        let dir = tempfile::tempdir().unwrap();
        let root = dir.path().canonicalize().unwrap();
        fs::create_dir_all(root.join("a/b/build")).unwrap();
        fs::create_dir_all(root.join("cache/sub")).unwrap();
        fs::write(root.join(".ferryignore"), "build/\n").unwrap();
        fs::write(root.join("a/.ferryignore"), "*.tmp\n!keep.tmp\n").unwrap();
        for f in [
            "a/b/x.tmp",
            "a/b/keep.tmp",
            "a/b/y.txt",
            "a/b/z.log",
            "a/b/build/o",
        ] {
            fs::write(root.join(f), b"x").unwrap();
        }
        fs::write(root.join("cache/CACHEDIR.TAG"), CACHEDIR_SIGNATURE).unwrap();
        fs::write(root.join("cache/sub/c"), b"x").unwrap();
        let source = SourceDir::open(&root).unwrap();
        let mut rules = ExcludeRules::new(&["*.log".to_string()], None).unwrap();
        rules.exclude_caches = true;
        let roots = vec![
            ScanRoot {
                path: "a/b".into(),
                recursive: true,
            },
            ScanRoot {
                path: "cache/sub".into(),
                recursive: true,
            },
        ];
        let partial = scan_dirs(&source, &[], &rules, roots);
        let paths: Vec<String> = partial.entries.iter().map(|e| e.path.to_string()).collect();
        // What the full scan holds below the same directories.
        let full = scan_filtered(&source, &[], &rules);
        let below: Vec<String> = full
            .entries
            .iter()
            .map(|e| e.path.to_string())
            .filter(|p| p == "a/b" || p.starts_with("a/b/") || p.starts_with("cache/"))
            .collect();
        assert_eq!(paths, below);
        assert_eq!(paths, ["a/b", "a/b/keep.tmp", "a/b/y.txt"]);
        // Watch mode's filter agrees.
        for (path, left_out) in [
            ("a/b/x.tmp", true),
            ("a/b/keep.tmp", false),
            ("a/b/z.log", true),
            ("a/b/build/o", true),
            ("cache/sub/c", true),
            ("a/b/y.txt", false),
            ("a/b/new.txt", false),
        ] {
            assert_eq!(
                is_left_out(&source, &rules, Path::new(path)),
                left_out,
                "{path}"
            );
        }
    }

    #[test]
    fn a_partial_scan_never_looks_below_an_exclusion() {
        let dir = tempfile::tempdir().unwrap();
        let root = dir.path().canonicalize().unwrap();
        fs::create_dir_all(root.join("copies/inner")).unwrap();
        fs::write(root.join("copies/inner/x"), b"x").unwrap();
        fs::write(root.join("a"), b"a").unwrap();
        let source = SourceDir::open(&root).unwrap();
        let roots = vec![
            ScanRoot {
                path: "copies/inner".into(),
                recursive: true,
            },
            ScanRoot {
                path: "".into(),
                recursive: false,
            },
        ];
        let scan = scan_dirs(
            &source,
            &[root.join("copies")],
            &ExcludeRules::default(),
            roots,
        );
        let paths: Vec<String> = scan.entries.iter().map(|e| e.path.to_string()).collect();
        assert_eq!(paths, ["a"]);
        assert!(scan.errors.is_empty(), "{:?}", scan.errors);
    }

    #[test]
    fn below_error() {
        let scan = Scan {
            errors: vec![ScanProblem {
                path: "a/b".into(),
                message: "cannot read".into(),
            }],
            ..Scan::default()
        };
        assert!(scan.is_below_error(&rel(b"a/b")));
        assert!(scan.is_below_error(&rel(b"a/b/c")));
        assert!(!scan.is_below_error(&rel(b"a/bc")));
        assert!(!scan.is_below_error(&rel(b"a")));
    }

    #[test]
    fn hash_file_hashes_content() {
        let dir = tempfile::tempdir().unwrap();
        let data: Vec<u8> = (0..(HASH_READ * 2 + 17)).map(|i| (i % 251) as u8).collect();
        fs::write(dir.path().join("f"), &data).unwrap();
        symlink("f", dir.path().join("l")).unwrap();
        let source = SourceDir::open(dir.path()).unwrap();
        let scan = scan_dir(&source, &[]);
        let (hash, n) = hash_file(&source, find(&scan, b"f")).unwrap();
        assert_eq!(n, data.len() as u64);
        assert_eq!(hash, *blake3::hash(&data).as_bytes());
        // A symlink scanned as a file (or swapped in since) is not followed.
        let link = ScanEntry {
            kind: ScanKind::File,
            ..find(&scan, b"l").clone()
        };
        assert!(
            matches!(hash_file(&source, &link), Err(OpenError::Symlink { .. })),
            "symlink followed"
        );
    }
}
