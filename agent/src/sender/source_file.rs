//! Reading a source file for sending: opening it through the source root as
//! scanned, its metadata from `fstat`, and its content read and hashed (and
//! written to the local copy) as it is read. A file that changes while it is
//! read is refused, never sent torn.

use std::fs::File;
use std::io::Read;
use std::os::unix::fs::{FileExt, MetadataExt};

use ferry_proto::{Hash, MAX_DATA};
use tokio::sync::mpsc;

use crate::copies::{Copies, CopiesError, CopyWriter};
use crate::scan::{mtime_ns, OpenError, ScanEntry, SourceDir};
use crate::sparse::HoleReader;

/// Why a source file could not be read for sending.
#[derive(Debug, thiserror::Error)]
pub enum SourceError {
    #[error("cannot read")]
    Read(#[source] std::io::Error),
    #[error("changed while being read; it will be sent on the next run")]
    Changed,
    #[error("is no longer a regular file")]
    NotAFile,
    /// Not opened: the path leads through a symlink now, or to another
    /// file than the one scanned.
    #[error(transparent)]
    Moved(OpenError),
    /// The local copy (`--keep-copies`) could not be written.
    #[error("local copy")]
    Copy(#[source] CopiesError),
    /// The stream the content was read for went away (it reports why).
    #[error("the stream ended while the file was being read")]
    StreamGone,
}

impl From<OpenError> for SourceError {
    fn from(e: OpenError) -> SourceError {
        match e {
            OpenError::Io { source, .. } => SourceError::Read(source),
            OpenError::NotAFile { .. } => SourceError::NotAFile,
            other => SourceError::Moved(other),
        }
    }
}

/// How much of a file's content travelled.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ContentBytes {
    /// Bytes of content sent, before compression: the file's size less the
    /// chunks the receiver already had (or kept from an interrupted run).
    pub fresh: u64,
    /// What those bytes took on the wire, after compression.
    pub wire: u64,
}

/// Metadata of an open file, from `fstat`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) struct FileStat {
    pub size: u64,
    pub mtime_ns: i64,
    pub mode: u32,
    pub ino: u64,
    pub dev: u64,
}

pub(super) fn fstat(file: &File) -> std::io::Result<(FileStat, bool)> {
    let meta = file.metadata()?;
    let stat = FileStat {
        size: meta.len(),
        mtime_ns: mtime_ns(&meta),
        mode: meta.mode() & 0o7777,
        ino: meta.ino(),
        dev: meta.dev(),
    };
    Ok((stat, meta.is_file()))
}

/// Fails with [`SourceError::Changed`] unless the open file still has the
/// metadata it had when opened and `read` bytes were read of it.
pub(super) fn unchanged(file: &File, opened: &FileStat, read: u64) -> Result<(), SourceError> {
    let (now, _) = fstat(file).map_err(SourceError::Read)?;
    if read != opened.size || now != *opened {
        return Err(SourceError::Changed);
    }
    Ok(())
}

/// Opens the file `scanned` describes for sending: relative to the source
/// root without following any symlink, without blocking on a FIFO that
/// replaced it since the scan, and only if it is still the file scanned
/// ([`SourceDir::open_scanned`]).
pub(super) fn open(
    source: &SourceDir,
    scanned: &ScanEntry,
) -> Result<(File, FileStat), SourceError> {
    let file = source.open_scanned(scanned)?;
    let (stat, is_file) = fstat(&file).map_err(SourceError::Read)?;
    if !is_file {
        return Err(SourceError::NotAFile);
    }
    Ok((file, stat))
}

/// Starts the local copy of `scanned`, if copies are kept.
pub(super) fn begin_copy(
    copies: Option<&Copies>,
    scanned: &ScanEntry,
) -> Result<Option<CopyWriter>, SourceError> {
    copies
        .map(|copies| copies.begin(&scanned.path))
        .transpose()
        .map_err(SourceError::Copy)
}

/// Reads the whole file in `MAX_DATA` pieces into `tx`, hashing it and
/// writing the local copy; fails if the file changes meanwhile.
pub(super) fn read_content(
    file: File,
    opened: FileStat,
    tx: mpsc::Sender<Vec<u8>>,
    mut copy: Option<CopyWriter>,
) -> Result<(Hash, Option<CopyWriter>), SourceError> {
    let hash = read_pieces(&file, &opened, &mut copy, |buf| {
        // The sending side gave up (the stream failed); it reports why.
        tx.blocking_send(buf).map_err(|_| SourceError::StreamGone)
    })?;
    Ok((hash, copy))
}

/// Reads the whole file in `MAX_DATA` pieces, each given to `each` after it
/// is hashed and written to the local copy; returns the content's hash once
/// the file is known not to have changed meanwhile.
pub(super) fn read_pieces<E: From<SourceError>>(
    file: &File,
    opened: &FileStat,
    copy: &mut Option<CopyWriter>,
    mut each: impl FnMut(Vec<u8>) -> Result<(), E>,
) -> Result<Hash, E> {
    // Holes come from memory: a sparse file's are not paged in.
    let mut reader = HoleReader::new(file);
    let mut hasher = blake3::Hasher::new();
    let mut total = 0u64;
    loop {
        let mut buf = vec![0u8; MAX_DATA];
        let mut filled = 0;
        while filled < buf.len() {
            match reader.read(&mut buf[filled..]) {
                Ok(0) => break,
                Ok(n) => filled += n,
                Err(e) if e.kind() == std::io::ErrorKind::Interrupted => {}
                Err(e) => return Err(SourceError::Read(e).into()),
            }
        }
        buf.truncate(filled);
        total += filled as u64;
        if total > opened.size {
            return Err(SourceError::Changed.into());
        }
        if filled == 0 {
            break;
        }
        hasher.update(&buf);
        if let Some(copy) = copy.as_mut() {
            copy.write(&buf).map_err(SourceError::Copy)?;
        }
        each(buf)?;
    }
    unchanged(file, opened, total)?;
    Ok(*hasher.finalize().as_bytes())
}

/// True if the first `len` bytes of `file` hash to `hash`.
pub(super) fn prefix_matches(file: &File, len: u64, hash: &Hash) -> Result<bool, SourceError> {
    let mut hasher = blake3::Hasher::new();
    let mut buf = vec![0u8; 1 << 20];
    let mut at = 0u64;
    while at < len {
        let n = (len - at).min(buf.len() as u64) as usize;
        match file.read_exact_at(&mut buf[..n], at) {
            Ok(()) => {}
            Err(e) if e.kind() == std::io::ErrorKind::UnexpectedEof => return Ok(false),
            Err(e) => return Err(SourceError::Read(e)),
        }
        hasher.update(&buf[..n]);
        at += n as u64;
    }
    Ok(hasher.finalize().as_bytes() == hash)
}

/// Files up to this size are read whole in one blocking call and sent in
/// one write; larger ones are streamed piece by piece.
const SMALL_FILE: u64 = 128 * 1024;

/// A file opened for sending.
pub(super) enum Opened {
    /// Read whole already: content, hash, and the local copy written.
    Small {
        stat: FileStat,
        data: Vec<u8>,
        hash: Hash,
        copy: Option<CopyWriter>,
    },
    /// To be streamed.
    Large {
        file: File,
        stat: FileStat,
        copy: Option<CopyWriter>,
    },
}

impl Opened {
    /// The file's metadata when it was opened.
    pub fn stat(&self) -> FileStat {
        match self {
            Opened::Small { stat, .. } | Opened::Large { stat, .. } => *stat,
        }
    }
}

/// Opens the file (and its local copy); reads it whole if it is small.
pub(super) fn prepare(
    source: &SourceDir,
    scanned: &ScanEntry,
    copies: Option<&Copies>,
) -> Result<Opened, SourceError> {
    let (mut file, stat) = open(source, scanned)?;
    let mut copy = begin_copy(copies, scanned)?;
    if stat.size > SMALL_FILE {
        return Ok(Opened::Large { file, stat, copy });
    }
    let mut data = Vec::with_capacity(stat.size as usize + 1);
    // One byte more than expected reveals a file that grew.
    (&mut file)
        .take(stat.size + 1)
        .read_to_end(&mut data)
        .map_err(SourceError::Read)?;
    unchanged(&file, &stat, data.len() as u64)?;
    if let Some(copy) = copy.as_mut() {
        copy.write(&data).map_err(SourceError::Copy)?;
    }
    let hash = *blake3::hash(&data).as_bytes();
    Ok(Opened::Small {
        stat,
        data,
        hash,
        copy,
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::scan::ScanKind;
    use std::io::Write;
    use std::os::unix::ffi::OsStrExt;
    use std::path::Path;

    /// Opens `path` as a run would after scanning it: through its parent
    /// directory opened as the source.
    fn open(path: &Path) -> Result<(File, FileStat), SourceError> {
        let source = SourceDir::open(path.parent().unwrap()).unwrap();
        let meta = std::fs::symlink_metadata(path).unwrap();
        let name = path.file_name().unwrap().as_bytes();
        let entry = ScanEntry {
            path: ferry_proto::RelPath::from_bytes(name).unwrap(),
            kind: ScanKind::File,
            size: meta.len(),
            mtime_ns: mtime_ns(&meta),
            mode: meta.mode() & 0o7777,
            ino: meta.ino(),
            dev: crate::scan::dev_id(meta.dev()),
        };
        super::open(&source, &entry)
    }

    type ReadResult = Result<(Hash, Option<CopyWriter>), SourceError>;

    fn read_all(path: &Path) -> (ReadResult, Vec<u8>) {
        let (file, stat) = open(path).unwrap();
        let (tx, mut rx) = mpsc::channel(1024);
        let result = read_content(file, stat, tx, None);
        let mut got = Vec::new();
        while let Ok(chunk) = rx.try_recv() {
            got.extend_from_slice(&chunk);
        }
        (result, got)
    }

    #[test]
    fn content_is_read_whole_and_hashed() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("f");
        let data: Vec<u8> = (0..MAX_DATA * 2 + 17).map(|i| (i % 251) as u8).collect();
        std::fs::write(&path, &data).unwrap();
        let (result, got) = read_all(&path);
        let (hash, _) = result.unwrap();
        assert_eq!(got, data);
        assert_eq!(hash, *blake3::hash(&data).as_bytes());
    }

    #[test]
    fn a_file_that_grows_or_shrinks_while_read_is_not_sent_torn() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("f");
        std::fs::write(&path, vec![1u8; 1000]).unwrap();
        let (file, stat) = open(&path).unwrap();
        std::fs::OpenOptions::new()
            .append(true)
            .open(&path)
            .unwrap()
            .write_all(b"more")
            .unwrap();
        let (tx, _rx) = mpsc::channel(1024);
        assert!(matches!(
            read_content(file, stat, tx, None),
            Err(SourceError::Changed)
        ));

        let (file, stat) = open(&path).unwrap();
        std::fs::OpenOptions::new()
            .write(true)
            .open(&path)
            .unwrap()
            .set_len(10)
            .unwrap();
        let (tx, _rx) = mpsc::channel(1024);
        assert!(matches!(
            read_content(file, stat, tx, None),
            Err(SourceError::Changed)
        ));
    }

    #[test]
    fn a_rewrite_in_place_with_a_new_mtime_is_detected() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("f");
        std::fs::write(&path, b"aaaa").unwrap();
        filetime::set_file_mtime(&path, filetime::FileTime::from_unix_time(1_000, 0)).unwrap();
        let (file, stat) = open(&path).unwrap();
        std::fs::write(&path, b"bbbb").unwrap();
        let (tx, _rx) = mpsc::channel(1024);
        assert!(matches!(
            read_content(file, stat, tx, None),
            Err(SourceError::Changed)
        ));
    }

    #[test]
    fn symlinks_and_fifos_are_not_opened_as_files() {
        let dir = tempfile::tempdir().unwrap();
        std::fs::write(dir.path().join("t"), b"x").unwrap();
        std::os::unix::fs::symlink("t", dir.path().join("l")).unwrap();
        assert!(open(&dir.path().join("l")).is_err());
        let fifo = dir.path().join("p");
        assert!(std::process::Command::new("mkfifo")
            .arg(&fifo)
            .status()
            .unwrap()
            .success());
        assert!(matches!(open(&fifo), Err(SourceError::NotAFile)));
    }
}
