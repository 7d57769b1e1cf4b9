//! The rule files a directory may hold: exclusion markers (`CACHEDIR.TAG`,
//! `--exclude-if-present`) and `.ferryignore`, read from its open
//! descriptor without following symlinks.

use std::ffi::OsStr;
use std::io;
use std::os::fd::OwnedFd;
use std::os::unix::ffi::OsStrExt;

use rustix::fs::{AtFlags, FileType, OFlags};

use super::exclude::{self, ExcludeRules, CACHEDIR_SIGNATURE, CACHEDIR_TAG, IGNORE_FILE};

/// Whether the open directory `fd` holds a marker that excludes it: a valid
/// `CACHEDIR.TAG` (`--exclude-caches`) or an entry named in
/// `--exclude-if-present`.
pub(super) fn has_marker(rules: &ExcludeRules, fd: &OwnedFd) -> bool {
    let present =
        |name: &OsStr| rustix::fs::statat(fd, name.as_bytes(), AtFlags::SYMLINK_NOFOLLOW).is_ok();
    if rules
        .exclude_if_present
        .iter()
        .any(|name| present(name.as_os_str()))
    {
        return true;
    }
    rules.exclude_caches && is_cache_dir(fd)
}

/// Whether the directory `fd` holds a `CACHEDIR.TAG` starting with the
/// signature (a regular file, not a symlink).
pub(super) fn is_cache_dir(fd: &OwnedFd) -> bool {
    let flags = OFlags::RDONLY | OFlags::NOFOLLOW | OFlags::NONBLOCK | OFlags::CLOEXEC;
    let Ok(tag) = rustix::fs::openat(fd, CACHEDIR_TAG, flags, rustix::fs::Mode::empty()) else {
        return false;
    };
    let mut head = [0u8; CACHEDIR_SIGNATURE.len()];
    let mut file = std::fs::File::from(tag);
    matches!(
        rustix::fs::fstat(&file),
        Ok(st) if FileType::from_raw_mode(st.st_mode) == FileType::RegularFile
    ) && std::io::Read::read_exact(&mut file, &mut head).is_ok()
        && &head == CACHEDIR_SIGNATURE
}

/// The content of the `.ferryignore` in the open directory `fd`, or why it
/// was not read.
pub(super) fn read_ignore_file(fd: &OwnedFd) -> Result<Vec<u8>, String> {
    use std::io::Read;
    let flags = OFlags::RDONLY | OFlags::NOFOLLOW | OFlags::NONBLOCK | OFlags::CLOEXEC;
    let file = rustix::fs::openat(fd, IGNORE_FILE, flags, rustix::fs::Mode::empty())
        .map_err(|e| format!("exclusion rules not read: {}", io::Error::from(e)))?;
    match rustix::fs::fstat(&file) {
        Ok(st) if FileType::from_raw_mode(st.st_mode) == FileType::RegularFile => {}
        Ok(_) => return Err("exclusion rules not read: not a regular file".into()),
        Err(e) => return Err(format!("exclusion rules not read: {}", io::Error::from(e))),
    }
    let mut text = Vec::new();
    std::fs::File::from(file)
        .take(exclude::MAX_RULES_FILE + 1)
        .read_to_end(&mut text)
        .map_err(|e| format!("exclusion rules not read: {e}"))?;
    if text.len() as u64 > exclude::MAX_RULES_FILE {
        return Err(format!(
            "exclusion rules not read: larger than {} bytes",
            exclude::MAX_RULES_FILE
        ));
    }
    Ok(text)
}
