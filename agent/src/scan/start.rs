//! What the user's rules say about a path below the root before any walk
//! reaches it: the start of a partial walk, and watch mode's filter.

use std::io;
use std::sync::Arc;

use rustix::fs::{AtFlags, FileType, OFlags};

use super::exclude::{self, DirRules, ExcludeRules, IGNORE_FILE};
use super::markers::{has_marker, read_ignore_file};
use super::{join, SourceDir};

/// The device of the source root (for `--one-file-system`).
#[allow(clippy::unnecessary_cast)] // `st_*` widths differ between architectures
pub(super) fn root_dev(source: &SourceDir) -> io::Result<u64> {
    source.open_at(b"", OFlags::PATH).and_then(|fd| {
        rustix::fs::fstat(&fd)
            .map(|st| st.st_dev as u64)
            .map_err(io::Error::from)
    })
}

/// How a walk that starts at `rel` (not the root; a directory, or for
/// watch mode's filter any path) stands: the
/// `.ferryignore` chain of the directories above it, or `None` when the
/// full walk would never reach it (`rel` or a directory above it is
/// excluded by a pattern or a marker file, or lies on another filesystem
/// under `--one-file-system`). A directory above it that cannot be opened
/// leaves the error to the walk, which cannot open `rel` either.
#[allow(clippy::unnecessary_cast)] // `st_*` widths differ between architectures
pub(super) fn start_state(
    source: &SourceDir,
    rules: &ExcludeRules,
    root_dev: u64,
    rel: &[u8],
) -> Option<Option<Arc<DirRules>>> {
    let mut ignore: Option<Arc<DirRules>> = None;
    if rel.is_empty() {
        return Some(ignore);
    }
    let mut dir: Vec<u8> = Vec::new();
    for name in rel.split(|b| *b == b'/') {
        let flags = OFlags::RDONLY | OFlags::DIRECTORY;
        let Ok(fd) = source.open_at(&dir, flags) else {
            return Some(ignore);
        };
        if !dir.is_empty() && rules.has_markers() && has_marker(rules, &fd) {
            return None;
        }
        let has_ignore_file = rules.reads_ignore_files()
            && rustix::fs::statat(&fd, IGNORE_FILE, AtFlags::SYMLINK_NOFOLLOW).is_ok();
        if has_ignore_file {
            // A bad or unreadable file is reported by full scans; here it
            // applies what it can, as the full walk does.
            if let Ok(text) = read_ignore_file(&fd) {
                ignore = Some(exclude::with_ignore_file(ignore.take(), &dir, &text).rules);
            }
        }
        let child = join(&dir, name);
        let stat = rustix::fs::statat(&fd, name, AtFlags::SYMLINK_NOFOLLOW).ok();
        // Gone: judged as a directory, as what it was cannot be known.
        let is_dir = stat
            .as_ref()
            .is_none_or(|st| FileType::from_raw_mode(st.st_mode) == FileType::Directory);
        if exclude::is_excluded(rules, ignore.as_ref(), &child, is_dir) {
            return None;
        }
        if rules.one_file_system && stat.is_some_and(|st| st.st_dev as u64 != root_dev) {
            return None;
        }
        dir = child;
    }
    Some(ignore)
}

/// Whether a full walk would leave `rel` (relative to the root) out: it, or
/// a directory above it, is excluded by the user's rules. Watch mode asks
/// this of each changed path, so that changes there start no run.
#[allow(clippy::unnecessary_cast)] // `st_*` widths differ between architectures
pub(super) fn is_left_out(source: &SourceDir, rules: &ExcludeRules, rel: &[u8]) -> bool {
    if rel.is_empty()
        || !(rules.has_markers()
            || rules.reads_ignore_files()
            || rules.one_file_system
            || rules.global.is_some())
    {
        return false;
    }
    let root_dev = match root_dev(source) {
        Ok(dev) => dev,
        Err(_) => return false,
    };
    start_state(source, rules, root_dev, rel).is_none()
}
