//! The parallel directory walk behind [`super::scan`].
//!
//! A cold scan is bound by I/O latency, not CPU: each `lstat` of an inode
//! that is not cached waits for the disk. So a small pool of threads (more
//! than there are cores: they mostly wait) share a stack of jobs (`super::jobs`) — "read this
//! directory" and "stat these names of that directory" — and the disk serves
//! their requests in parallel. Each directory is opened once, relative to the
//! source root's descriptor without following any symlink on the way
//! ([`SourceDir`]), and must be the directory its parent listed (same device
//! and inode); its entries are then stat'ed relative to that descriptor
//! (`fstatat`), so no full path is resolved per entry.
//!
//! Directories wait on a last-in first-out stack, which keeps the walk close
//! to depth-first; names to stat are taken before any new directory is
//! opened, which bounds the descriptors held open. Results are gathered per
//! thread and put in order by the caller.

use std::ffi::OsStr;
use std::io;
use std::os::unix::ffi::OsStrExt;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Condvar, Mutex};

use ferry_proto::RelPath;
use rustix::fs::{AtFlags, FileType, OFlags, Stat};

use super::exclude::{self, DirRules, ExcludeRules, IGNORE_FILE};
use super::jobs::{Job, OpenDir, Queue, Shared};
use super::markers::{has_marker, read_ignore_file};
use super::start::{root_dev, start_state};
use super::{join, Scan, ScanEntry, ScanKind, ScanProblem, SourceDir};
// The tests below build cache directories with these.
#[cfg(test)]
use super::exclude::{CACHEDIR_SIGNATURE, CACHEDIR_TAG};

/// Threads walking at once (the caller's included). They wait on the disk
/// far more than they compute, so this exceeds the core count on purpose.
const THREADS: usize = 16;

/// Names of one directory stat'ed by one job; a bigger directory is split so
/// that several threads stat it at once.
const STAT_CHUNK: usize = 64;

/// Walks everything below `source`, skipping the relative paths in
/// `exclude` and what `rules` exclude. The result is not yet sorted, and
/// directories excluded by a marker file are still in it (listed in
/// `marked`).
pub(super) fn walk(source: &SourceDir, exclude: &[PathBuf], rules: &ExcludeRules) -> Scan {
    walk_from(source, exclude, rules, &[(Vec::new(), true)])
}

/// Walks only the directories in `starts` (relative paths, empty for the
/// root), each with its subdirectories if its flag says so, as [`walk`]
/// would walk them: a start that `rules` exclude (itself or a directory
/// above it: a pattern, a marker file, another filesystem) is not looked at,
/// and the `.ferryignore` files above a start apply below it.
#[allow(clippy::unnecessary_cast)] // `st_*` widths differ between architectures
pub(super) fn walk_from(
    source: &SourceDir,
    exclude: &[PathBuf],
    rules: &ExcludeRules,
    starts: &[(Vec<u8>, bool)],
) -> Scan {
    let root_dev = match root_dev(source) {
        Ok(dev) => dev,
        Err(err) => {
            let mut out = Scan::default();
            out.errors.push(ScanProblem {
                path: PathBuf::new(),
                message: format!("cannot read: {err}"),
            });
            return out;
        }
    };
    let shared = Shared {
        queue: Mutex::new(Queue {
            reads: Vec::new(),
            stats: Vec::new(),
            busy: 0,
        }),
        wake: Condvar::new(),
        exclude,
        rules,
        root_dev,
        source,
    };
    let mut jobs = Vec::new();
    for (rel, descend) in starts {
        if let Some(ignore) = start_state(source, rules, root_dev, rel) {
            jobs.push(Job::Read {
                rel: rel.clone(),
                expect: None,
                ignore,
                descend: *descend,
            });
        }
    }
    shared.push(&mut jobs);
    std::thread::scope(|scope| {
        let mut helpers = Vec::new();
        for i in 1..THREADS {
            let spawned = std::thread::Builder::new()
                .name(format!("ferry-scan-{i}"))
                .spawn_scoped(scope, || work(&shared));
            match spawned {
                Ok(handle) => helpers.push(handle),
                // The calling thread works too, so fewer helpers only slow
                // the walk down.
                Err(err) => {
                    tracing::debug!(%err, "scan runs with fewer threads");
                    break;
                }
            }
        }
        let mut out = work(&shared);
        let mut parts = Vec::with_capacity(helpers.len());
        for handle in helpers {
            match handle.join() {
                Ok(part) => parts.push(part),
                // Only a bug can panic a worker; its jobs are lost, so the
                // scan must not claim to be complete.
                Err(_) => out.errors.push(ScanProblem {
                    path: PathBuf::new(),
                    message: "internal error: a scan thread failed".into(),
                }),
            }
        }
        // One exact allocation for every thread's entries: growing by
        // doubling while merging would hold up to twice the tree's entries.
        let total = out.entries.len() + parts.iter().map(|p| p.entries.len()).sum::<usize>();
        out.entries.reserve_exact(total - out.entries.len());
        for part in parts {
            merge(&mut out, part);
        }
        out
    })
}

fn merge(out: &mut Scan, part: Scan) {
    out.entries.extend(part.entries);
    out.skipped.extend(part.skipped);
    out.errors.extend(part.errors);
    out.marked.extend(part.marked);
    out.stats.add(&part.stats);
}

/// One thread's loop: take jobs until there are none left anywhere.
fn work(shared: &Shared<'_>) -> Scan {
    let mut out = Scan::default();
    let mut new_jobs = Vec::new();
    while let Some(mut busy) = shared.next() {
        match busy.job.take() {
            Some(Job::Read {
                rel,
                expect,
                ignore,
                descend,
            }) => read_dir(
                shared,
                (rel, descend),
                expect,
                ignore,
                &mut out,
                &mut new_jobs,
            ),
            Some(Job::Stat { dir, names }) => {
                stat_names(shared, &dir, names, &mut out, &mut new_jobs)
            }
            None => {}
        }
        shared.push(&mut new_jobs);
        drop(busy);
    }
    out
}

/// Lists one directory, then stats its entries (splitting a big one into
/// several jobs); with `descend`, its subdirectories become jobs too.
#[allow(clippy::unnecessary_cast)] // `st_*` widths differ between architectures
fn read_dir(
    shared: &Shared<'_>,
    (rel, descend): (Vec<u8>, bool),
    expect: Option<(u64, u64)>,
    mut ignore: Option<Arc<DirRules>>,
    out: &mut Scan,
    new_jobs: &mut Vec<Job>,
) {
    let problem = |out: &mut Scan, message: String| {
        let path = PathBuf::from(OsStr::from_bytes(&rel));
        tracing::warn!(path = %path.display(), %message, "scan error");
        out.errors.push(ScanProblem { path, message });
    };
    let flags = OFlags::RDONLY | OFlags::DIRECTORY;
    let fd = match shared.source.open_at(&rel, flags) {
        Ok(fd) => fd,
        // ENOTDIR: `O_NOFOLLOW | O_DIRECTORY` met a symlink (or a file)
        // where the directory was.
        Err(err)
            if matches!(
                err.raw_os_error(),
                Some(libc::ELOOP | libc::EXDEV | libc::ENOTDIR)
            ) =>
        {
            let message = "cannot read: it or a directory above it became a symlink (or a \
                           file) during the scan; not followed (Ferry reads only inside the source)";
            return problem(out, message.into());
        }
        Err(err) => return problem(out, format!("cannot read: {err}")),
    };
    if let Some((dev, ino)) = expect {
        match rustix::fs::fstat(&fd) {
            Ok(st) if st.st_dev as u64 == dev && st.st_ino as u64 == ino => {}
            Ok(_) => {
                let message = "cannot read: another directory took its place during the scan";
                return problem(out, message.into());
            }
            Err(err) => return problem(out, format!("cannot read: {}", io::Error::from(err))),
        }
    }
    if shared.rules.has_markers() && has_marker(shared.rules, &fd) {
        // Left out whole: its own entry is removed once the walk is done.
        out.stats.excluded_dirs += 1;
        out.marked.push(rel);
        return;
    }
    out.stats.dirs_read += 1;
    // One descriptor to list the directory, a duplicate to stat against.
    let (fd, list_fd) = match fd.try_clone() {
        Ok(dup) => (dup, fd),
        Err(err) => return problem(out, format!("cannot read: {err}")),
    };
    let mut names = Vec::new();
    let listing = match rustix::fs::Dir::new(list_fd) {
        Ok(listing) => listing,
        Err(err) => return problem(out, format!("cannot read: {}", io::Error::from(err))),
    };
    for item in listing {
        let item = match item {
            Ok(item) => item,
            // What was listed so far is still scanned; the error covers the
            // rest of this directory.
            Err(err) => {
                problem(out, format!("cannot read: {}", io::Error::from(err)));
                break;
            }
        };
        let name = item.file_name().to_bytes();
        if name == b"." || name == b".." {
            continue;
        }
        if is_excluded(shared.exclude, &rel, name) {
            continue;
        }
        names.push(name.to_vec());
    }
    if shared.rules.reads_ignore_files() && names.iter().any(|n| n == IGNORE_FILE.as_bytes()) {
        match read_ignore_file(&fd) {
            Ok(text) => {
                let parsed = exclude::with_ignore_file(ignore.take(), &rel, &text);
                ignore = Some(parsed.rules);
                for (line, message) in parsed.bad {
                    let path =
                        PathBuf::from(OsStr::from_bytes(&join(&rel, IGNORE_FILE.as_bytes())));
                    out.errors.push(ScanProblem {
                        path,
                        message: format!("line {line}: {message}"),
                    });
                }
            }
            // Read nothing: more is sent, never less.
            Err(message) => out.errors.push(ScanProblem {
                path: PathBuf::from(OsStr::from_bytes(&join(&rel, IGNORE_FILE.as_bytes()))),
                message,
            }),
        }
    }
    let dir = Arc::new(OpenDir {
        rel,
        fd,
        ignore,
        descend,
    });
    let mut chunks = names.chunks(STAT_CHUNK);
    let first = chunks.next().map(<[_]>::to_vec);
    for chunk in chunks {
        new_jobs.push(Job::Stat {
            dir: Arc::clone(&dir),
            names: chunk.to_vec(),
        });
    }
    // Let other threads take the rest of a big directory while this one
    // stats the first part.
    shared.push(new_jobs);
    if let Some(first) = first {
        stat_names(shared, &dir, first, out, new_jobs);
    }
}
/// Stats `names` inside `dir` and records each; subdirectories become new
/// jobs.
#[allow(clippy::unnecessary_cast)] // `st_*` widths differ between architectures
fn stat_names(
    shared: &Shared<'_>,
    dir: &OpenDir,
    names: Vec<Vec<u8>>,
    out: &mut Scan,
    new_jobs: &mut Vec<Job>,
) {
    for name in names {
        let child = join(&dir.rel, &name);
        let path = match RelPath::from_bytes(child.clone()) {
            Ok(path) => path,
            Err(err) => {
                let path = PathBuf::from(OsStr::from_bytes(&child));
                tracing::warn!(path = %path.display(), %err, "name cannot be synced");
                out.errors.push(ScanProblem {
                    path,
                    message: format!("cannot be synced: {err}"),
                });
                continue;
            }
        };
        let problem_path = || PathBuf::from(OsStr::from_bytes(&child));
        out.stats.stat_calls += 1;
        let stat = match rustix::fs::statat(&dir.fd, name.as_slice(), AtFlags::SYMLINK_NOFOLLOW) {
            Ok(stat) => stat,
            Err(err) => {
                out.errors.push(ScanProblem {
                    path: problem_path(),
                    message: format!("cannot stat: {}", io::Error::from(err)),
                });
                continue;
            }
        };
        let file_type = FileType::from_raw_mode(stat.st_mode);
        let is_dir = file_type == FileType::Directory;
        if exclude::is_excluded(shared.rules, dir.ignore.as_ref(), &child, is_dir) {
            // Never descended into: an excluded directory costs this stat.
            if is_dir {
                out.stats.excluded_dirs += 1;
            } else {
                out.stats.excluded_files += 1;
            }
            continue;
        }
        let kind = match file_type {
            FileType::RegularFile => ScanKind::File,
            FileType::Directory => {
                // Another filesystem's mount point is kept as an empty
                // directory under --one-file-system.
                let same_fs =
                    !shared.rules.one_file_system || stat.st_dev as u64 == shared.root_dev;
                if dir.descend && same_fs {
                    new_jobs.push(Job::Read {
                        rel: child.clone(),
                        expect: Some((stat.st_dev as u64, stat.st_ino as u64)),
                        ignore: dir.ignore.clone(),
                        descend: true,
                    });
                }
                ScanKind::Dir
            }
            FileType::Symlink => {
                match rustix::fs::readlinkat(&dir.fd, name.as_slice(), Vec::new()) {
                    Ok(target) => ScanKind::Symlink {
                        target: Box::new(target.into_bytes()),
                    },
                    Err(err) => {
                        let message = format!("cannot read symlink: {}", io::Error::from(err));
                        out.errors.push(ScanProblem {
                            path: problem_path(),
                            message,
                        });
                        continue;
                    }
                }
            }
            other => {
                let path = problem_path();
                let what = special_kind(other);
                tracing::warn!(path = %path.display(), "skipping {what}: only files, directories and symlinks are synced");
                out.skipped.push(ScanProblem {
                    path,
                    message: format!("skipped {what}"),
                });
                continue;
            }
        };
        out.entries.push(entry(path, kind, &stat));
    }
}

/// The [`ScanEntry`] for `stat`, with the same values `std::fs::Metadata`
/// gives (`st_*` field widths differ between architectures, hence the
/// casts).
#[allow(clippy::unnecessary_cast)]
pub(super) fn entry(path: RelPath, kind: ScanKind, stat: &Stat) -> ScanEntry {
    ScanEntry {
        path,
        kind,
        size: stat.st_size as u64,
        mtime_ns: (stat.st_mtime as i64)
            .saturating_mul(1_000_000_000)
            .saturating_add(stat.st_mtime_nsec as i64),
        mode: stat.st_mode as u32 & 0o7777,
        ino: stat.st_ino as u64,
        dev: super::dev_id(stat.st_dev as u64),
    }
}
/// Whether `parent/name` is one of the excluded relative paths.
fn is_excluded(exclude: &[PathBuf], parent: &[u8], name: &[u8]) -> bool {
    !exclude.is_empty() && {
        let child = join(parent, name);
        let child = Path::new(OsStr::from_bytes(&child));
        exclude.iter().any(|x| x == child)
    }
}

fn special_kind(file_type: FileType) -> &'static str {
    match file_type {
        FileType::Fifo => "FIFO",
        FileType::Socket => "socket",
        FileType::BlockDevice => "block device",
        FileType::CharacterDevice => "character device",
        _ => "special file",
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used, clippy::expect_used)] // tests fail loudly
mod tests {
    use super::*;
    use crate::scan::{mtime_ns, scan};
    use rustix::fs::Mode;
    use std::fs;
    use std::os::unix::fs::{symlink, MetadataExt, PermissionsExt};
    use std::process::Command;

    /// One entry as a simple one-thread walk with `std` sees it.
    type Seen = (Vec<u8>, ScanKind, u64, i64, u32, u64, u32);

    fn reference(root: &Path, rel: &Path, out: &mut Vec<Seen>) {
        for item in fs::read_dir(root.join(rel)).unwrap() {
            let item = item.unwrap();
            let rel = rel.join(item.file_name());
            let meta = fs::symlink_metadata(root.join(&rel)).unwrap();
            let kind = if meta.is_dir() {
                reference(root, &rel, out);
                ScanKind::Dir
            } else if meta.is_symlink() {
                let target = fs::read_link(root.join(&rel)).unwrap();
                ScanKind::Symlink {
                    target: target.as_os_str().as_bytes().to_vec().into(),
                }
            } else if meta.is_file() {
                ScanKind::File
            } else {
                continue;
            };
            out.push((
                rel.as_os_str().as_bytes().to_vec(),
                kind,
                meta.size(),
                mtime_ns(&meta),
                meta.mode() & 0o7777,
                meta.ino(),
                crate::scan::dev_id(meta.dev()),
            ));
        }
    }

    fn seen(scan: &Scan) -> Vec<Seen> {
        let seen = scan.entries.iter().map(|e| {
            let path = e.path.as_bytes().to_vec();
            (
                path,
                e.kind.clone(),
                e.size,
                e.mtime_ns,
                e.mode,
                e.ino,
                e.dev,
            )
        });
        seen.collect()
    }

    /// A tree deep enough and wide enough that every thread is busy and big
    /// directories are split into several stat jobs.
    fn build_tree(root: &Path) {
        let mut dir = root.to_path_buf();
        for depth in 0..40 {
            dir = dir.join(format!("d{depth}"));
            fs::create_dir(&dir).unwrap();
            fs::write(dir.join("f"), vec![b'x'; depth]).unwrap();
            symlink(format!("../target-{depth}"), dir.join("up")).unwrap();
        }
        for i in 0..(STAT_CHUNK * 3 + 5) {
            let wide = root.join("wide");
            fs::create_dir_all(&wide).unwrap();
            fs::write(wide.join(format!("file-{i:04}")), i.to_string()).unwrap();
            if i % 10 == 0 {
                let sub = wide.join(format!("sub-{i:04}"));
                fs::create_dir(&sub).unwrap();
                fs::write(sub.join("inner"), b"y").unwrap();
                fs::write(sub.join("inner.txt"), b"yy").unwrap();
            }
        }
        fs::write(root.join(OsStr::from_bytes(b"wide/\xff\xfe")), b"z").unwrap();
        fs::set_permissions(
            root.join("wide/file-0007"),
            fs::Permissions::from_mode(0o600),
        )
        .unwrap();
    }

    #[test]
    fn deep_and_wide_tree_matches_a_simple_walk() {
        let dir = tempfile::tempdir().unwrap();
        build_tree(dir.path());
        let mut expected = Vec::new();
        reference(dir.path(), Path::new(""), &mut expected);
        expected.sort_by(|a, b| a.0.cmp(&b.0));

        let scan = scan(dir.path(), &[]).unwrap();
        assert!(scan.errors.is_empty(), "{:?}", scan.errors);
        assert!(scan.skipped.is_empty(), "{:?}", scan.skipped);
        assert_eq!(seen(&scan), expected);
        assert!(expected.len() > STAT_CHUNK * 4, "tree too small");
        // Parents come right before their children.
        for pair in scan.entries.windows(2) {
            assert!(pair[0].path.as_bytes() < pair[1].path.as_bytes());
        }
        // The same tree scans the same every time.
        for _ in 0..3 {
            assert_eq!(
                seen(&super::super::scan(dir.path(), &[]).unwrap()),
                expected
            );
        }
    }

    #[test]
    fn exclude_inside_a_big_directory_and_deep_down() {
        let dir = tempfile::tempdir().unwrap();
        let root = dir.path().canonicalize().unwrap();
        build_tree(&root);
        let deep = root.join("d0/d1/d2");
        let exclude = [
            root.join("wide/sub-0100"),
            root.join("wide/file-0150"),
            deep,
        ];
        let scan = scan(&root, &exclude).unwrap();
        let paths: Vec<&[u8]> = scan.entries.iter().map(|e| e.path.as_bytes()).collect();
        assert!(paths.contains(&&b"wide/sub-0090/inner"[..]));
        assert!(paths.contains(&&b"wide/file-0149"[..]));
        assert!(paths.contains(&&b"d0/d1/f"[..]));
        for gone in [
            &b"wide/sub-0100"[..],
            b"wide/sub-0100/inner",
            b"wide/file-0150",
        ] {
            assert!(!paths.contains(&gone), "{gone:?} not excluded");
        }
        assert!(!paths.iter().any(|p| p.starts_with(b"d0/d1/d2")));
        assert!(scan.errors.is_empty(), "{:?}", scan.errors);
    }

    #[test]
    fn skipped_files_are_reported_in_path_order() {
        let dir = tempfile::tempdir().unwrap();
        let root = dir.path();
        let mut fifos = Vec::new();
        for i in (0..20).rev() {
            let sub = root.join(format!("s{i:02}"));
            fs::create_dir(&sub).unwrap();
            let fifo = sub.join("fifo");
            assert!(Command::new("mkfifo")
                .arg(&fifo)
                .status()
                .unwrap()
                .success());
            fifos.push(PathBuf::from(format!("s{i:02}/fifo")));
        }
        fifos.sort();
        let scan = scan(root, &[]).unwrap();
        let skipped: Vec<PathBuf> = scan.skipped.iter().map(|p| p.path.clone()).collect();
        assert_eq!(skipped, fifos);
        assert_eq!(scan.entries.len(), 20);
    }

    #[test]
    fn a_directory_swapped_during_the_scan_is_an_error_at_its_path() {
        let dir = tempfile::tempdir().unwrap();
        let outside = tempfile::tempdir().unwrap();
        fs::write(outside.path().join("secret"), b"x").unwrap();
        fs::create_dir(dir.path().join("d")).unwrap();
        fs::create_dir(dir.path().join("e")).unwrap();
        let d = fs::symlink_metadata(dir.path().join("d")).unwrap();
        let source = SourceDir::open(dir.path()).unwrap();
        let rules = ExcludeRules::default();
        let shared = Shared {
            queue: Mutex::new(Queue::default()),
            wake: Condvar::new(),
            exclude: &[],
            rules: &rules,
            root_dev: 0,
            source: &source,
        };
        // `d` listed by its parent, then swapped for a symlink to outside
        // before it is opened: not followed.
        fs::rename(dir.path().join("d"), dir.path().join("d.old")).unwrap();
        symlink(outside.path(), dir.path().join("d")).unwrap();
        let (mut out, mut jobs) = (Scan::default(), Vec::new());
        read_dir(
            &shared,
            (b"d".to_vec(), true),
            Some((d.dev(), d.ino())),
            None,
            &mut out,
            &mut jobs,
        );
        assert!(
            out.entries.is_empty() && jobs.is_empty(),
            "{:?}",
            out.entries
        );
        assert_eq!(out.errors.len(), 1, "{:?}", out.errors);
        assert_eq!(out.errors[0].path, PathBuf::from("d"));
        assert!(
            out.errors[0].message.contains("symlink"),
            "{:?}",
            out.errors
        );

        // Another directory in its place is not listed as it either.
        let mut out = Scan::default();
        read_dir(
            &shared,
            (b"e".to_vec(), true),
            Some((d.dev(), d.ino())),
            None,
            &mut out,
            &mut jobs,
        );
        assert_eq!(out.errors.len(), 1, "{:?}", out.errors);
        assert!(
            out.errors[0].message.contains("another directory"),
            "{:?}",
            out.errors
        );

        // The same through a whole scan: nothing outside is listed.
        let scan = crate::scan::scan_dir(&source, &[]);
        assert!(
            scan.entries
                .iter()
                .all(|e| !e.path.as_bytes().starts_with(b"d/")),
            "{:?}",
            scan.entries
        );
    }

    fn scan_with(root: &Path, rules: &ExcludeRules) -> Scan {
        let source = SourceDir::open(root).unwrap();
        crate::scan::scan_filtered(&source, &[], rules)
    }

    fn paths(scan: &Scan) -> Vec<String> {
        let paths = scan
            .entries
            .iter()
            .map(|e| e.path.as_path().to_string_lossy());
        paths.map(|p| p.to_string()).collect()
    }

    #[test]
    fn an_excluded_directory_costs_one_stat_and_is_never_listed() {
        let dir = tempfile::tempdir().unwrap();
        let root = dir.path();
        fs::create_dir_all(root.join("app/node_modules/pkg")).unwrap();
        for i in 0..300 {
            fs::write(root.join(format!("app/node_modules/pkg/f{i}")), b"x").unwrap();
        }
        fs::write(root.join("app/main.js"), b"x").unwrap();
        fs::write(root.join("app/debug.log"), b"x").unwrap();
        let rules = ExcludeRules::new(&["node_modules/".into(), "*.log".into()], None).unwrap();
        let scan = scan_with(root, &rules);
        assert_eq!(paths(&scan), ["app", "app/main.js"]);
        // The root and `app` are listed; `node_modules` is stat'ed once.
        assert_eq!(scan.stats.dirs_read, 2, "{:?}", scan.stats);
        assert_eq!(scan.stats.stat_calls, 4, "{:?}", scan.stats);
        assert_eq!(scan.stats.excluded_dirs, 1);
        assert_eq!(scan.stats.excluded_files, 1);
        assert!(scan.errors.is_empty(), "{:?}", scan.errors);
        // Without rules, everything is walked.
        let all = scan_with(root, &ExcludeRules::default());
        assert_eq!(all.entries.len(), 305);
        assert_eq!(all.stats.dirs_read, 4);
    }

    #[test]
    fn cache_and_marker_directories_are_left_out_whole() {
        let dir = tempfile::tempdir().unwrap();
        let root = dir.path();
        for d in ["cache", "fake-cache", "marked", "plain"] {
            fs::create_dir_all(root.join(d).join("sub")).unwrap();
            fs::write(root.join(d).join("sub/f"), b"x").unwrap();
        }
        let mut tag = CACHEDIR_SIGNATURE.to_vec();
        tag.extend_from_slice(b"\n# a cache\n");
        fs::write(root.join("cache").join(CACHEDIR_TAG), &tag).unwrap();
        // A tag without the signature is not a cache tag.
        fs::write(
            root.join("fake-cache").join(CACHEDIR_TAG),
            b"Signature: nope",
        )
        .unwrap();
        fs::write(root.join("marked/.nobackup"), b"").unwrap();
        let rules = ExcludeRules {
            exclude_caches: true,
            exclude_if_present: vec![".nobackup".into()],
            ..ExcludeRules::default()
        };
        let scan = scan_with(root, &rules);
        assert_eq!(
            paths(&scan),
            [
                "fake-cache",
                "fake-cache/CACHEDIR.TAG",
                "fake-cache/sub",
                "fake-cache/sub/f",
                "plain",
                "plain/sub",
                "plain/sub/f"
            ]
        );
        assert_eq!(scan.stats.excluded_dirs, 2);
        // Either option alone excludes only its own kind.
        let caches = ExcludeRules {
            exclude_caches: true,
            ..ExcludeRules::default()
        };
        let scan = scan_with(root, &caches);
        assert!(paths(&scan).contains(&"marked/sub/f".to_string()));
        assert!(!paths(&scan).iter().any(|p| p.starts_with("cache")));
    }

    #[test]
    fn one_file_system_keeps_a_mount_point_empty() {
        let dir = tempfile::tempdir().unwrap();
        let root = dir.path();
        fs::create_dir_all(root.join("mnt")).unwrap();
        fs::write(root.join("f"), b"x").unwrap();
        let mounted = Command::new("mount")
            .args(["-t", "tmpfs", "-o", "size=1m", "ferry-test"])
            .arg(root.join("mnt"))
            .status()
            .unwrap();
        assert!(mounted.success(), "mounting a tmpfs needs root");
        struct Unmount(PathBuf);
        impl Drop for Unmount {
            fn drop(&mut self) {
                let _ = Command::new("umount").arg(&self.0).status();
            }
        }
        let _unmount = Unmount(root.join("mnt"));
        fs::write(root.join("mnt/other"), b"x").unwrap();
        let all = scan_with(root, &ExcludeRules::default());
        assert_eq!(paths(&all), ["f", "mnt", "mnt/other"]);
        let rules = ExcludeRules {
            one_file_system: true,
            ..ExcludeRules::default()
        };
        let one = scan_with(root, &rules);
        assert_eq!(paths(&one), ["f", "mnt"]);
        assert_eq!(one.stats.dirs_read, 1);
    }

    /// Lays out the same tree of files and pattern files (named `ignore`) at
    /// `root`.
    fn oracle_tree(root: &Path, ignore: &str) {
        let rules: &[(&str, &str)] = &[
            (
                "",
                "*.log\n!keep.log\n/top.txt\nbuild/\ndocs/**/*.tmp\n**/cache\nlit\\#hash\n[ab].bin\n",
            ),
            ("a", "!*.log\n*.txt\n!/b/\nx/\n"),
            ("a/b", "*.txt\n!top.txt\n/only-here\n**/deep/**\n"),
            ("docs", "!build/\n*.md\n!README.md\n"),
            ("c/d", "*\n!*.keep\n!*/\n"),
        ];
        let dirs = [
            "",
            "a",
            "a/b",
            "a/b/c",
            "a/b/deep",
            "a/b/deep/e",
            "a/x",
            "a/y/x",
            "docs",
            "docs/build",
            "docs/sub/z",
            "build",
            "c",
            "c/d",
            "c/d/e",
            "cache",
            "a/cache",
        ];
        let names = [
            "f.log",
            "keep.log",
            "top.txt",
            "n.txt",
            "only-here",
            "g.tmp",
            "README.md",
            "notes.md",
            "lit#hash",
            "a.bin",
            "c.bin",
            "plain",
            "x.keep",
            ".hidden",
        ];
        for d in dirs {
            fs::create_dir_all(root.join(d)).unwrap();
            for n in names {
                fs::write(root.join(d).join(n), d).unwrap();
            }
        }
        for (d, text) in rules {
            fs::write(root.join(d).join(ignore), text).unwrap();
        }
    }

    #[test]
    fn patterns_match_what_git_ignores_on_the_same_tree() {
        let dir = tempfile::tempdir().unwrap();
        let ferry = dir.path().join("ferry");
        let git = dir.path().join("git");
        oracle_tree(&ferry, ".ferryignore");
        oracle_tree(&git, ".gitignore");
        // The global patterns play git's info/exclude.
        let global = ["*.bin", "!c.bin", "plain", "/a/b/c/"];
        let run = |args: &[&str]| {
            let out = Command::new("git")
                .args(args)
                .current_dir(&git)
                .env("GIT_CONFIG_GLOBAL", "/dev/null")
                .env("GIT_CONFIG_NOSYSTEM", "1")
                .output()
                .expect("git is installed (a test dependency)");
            assert!(out.status.success(), "{out:?}");
            out.stdout
        };
        run(&["init", "-q"]);
        fs::write(git.join(".git/info/exclude"), global.join("\n")).unwrap();
        let listed = run(&["ls-files", "-z", "--others", "--exclude-standard"]);
        let mut expected: Vec<String> = listed
            .split(|b| *b == 0)
            .filter(|p| !p.is_empty())
            .map(|p| {
                String::from_utf8(p.to_vec())
                    .unwrap()
                    .replace(".gitignore", ".ferryignore")
            })
            .collect();
        expected.sort();

        let global: Vec<String> = global.iter().map(|p| p.to_string()).collect();
        let rules = ExcludeRules::new(&global, None).unwrap();
        let scan = scan_with(&ferry, &rules);
        assert!(scan.errors.is_empty(), "{:?}", scan.errors);
        let mut files: Vec<String> = scan
            .entries
            .iter()
            .filter(|e| e.kind == ScanKind::File)
            .map(|e| e.path.as_path().to_string_lossy().to_string())
            .collect();
        files.sort();
        assert!(expected.len() > 50, "{expected:?}");
        assert!(expected.len() < 14 * 17, "nothing excluded");
        assert_eq!(files, expected);
    }

    #[test]
    fn a_path_too_long_to_sync_is_an_error_and_not_descended() {
        let dir = tempfile::tempdir().unwrap();
        let name = vec![b'n'; 250];
        // 17 levels of 250 bytes: more than a synced path may hold (the
        // temporary root must be under ~80 bytes for level 16 to open).
        // Built with descriptors: the absolute path outgrows PATH_MAX.
        let mut fd = rustix::fs::openat(
            rustix::fs::CWD,
            dir.path(),
            OFlags::DIRECTORY,
            Mode::empty(),
        )
        .unwrap();
        for _ in 0..17 {
            rustix::fs::mkdirat(&fd, name.as_slice(), Mode::from_raw_mode(0o755)).unwrap();
            fd =
                rustix::fs::openat(&fd, name.as_slice(), OFlags::DIRECTORY, Mode::empty()).unwrap();
        }
        rustix::fs::mkdirat(&fd, "below", Mode::from_raw_mode(0o755)).unwrap();
        let scan = scan(dir.path(), &[]).unwrap();
        let too_long: Vec<_> = scan
            .errors
            .iter()
            .filter(|e| e.message.starts_with("cannot be synced"))
            .collect();
        assert_eq!(too_long.len(), 1, "{:?}", scan.errors);
        assert!(too_long[0].path.as_os_str().len() > ferry_proto::MAX_PATH_LEN);
        assert!(scan.entries.iter().all(|e| e.path.as_bytes().len() <= 4096));
        assert!(scan.entries.len() >= 15, "{}", scan.entries.len());
    }
}
