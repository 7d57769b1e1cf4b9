//! Restoring a chunked object (format 2): its header opened from its front
//! as soon as the front is in (so an object outside the paths asked, or
//! whose place is taken, is not fetched further), then the object opened
//! whole, chunk by chunk, from a file: a scratch file beside its real path
//! that the fetched bytes are written to, or, from a store on this machine,
//! the stored file itself. Its content goes to the destination's temporary
//! file, kept only once the whole object has opened (every piece, group and
//! the trailer authenticated). Memory holds one piece or group at a time,
//! never the object.

use std::fs::File;
use std::io::Write;

use ferry_proto::seal::{ObjectSource, Opener, ReadObjectError, SealedHeader, FRONT_PREFIX};
use ferry_proto::RelPath;

use super::{decide, EntryError, Failed, Fed, Restored, Target};
use crate::reader::sealed::{check_place, front_needs, open_front, starts_chunked, ObjectError};
use crate::restore::dest::{Destination, PendingFile, WriteError};

/// The chunked object fed through `fed` (`first` its first bytes): its
/// front read, the rest received into a scratch file, then opened and
/// written (blocking).
pub(super) fn write_received(
    opener: &mut Opener,
    first: Vec<u8>,
    mut fed: Fed,
    stored: &RelPath,
    dest: &Destination,
    under: &[RelPath],
) -> Result<Restored, Failed> {
    let mut front = first;
    while front.len() < front_needs(&front) {
        match fed.next() {
            Some(data) => front.extend_from_slice(&data),
            None => break,
        }
    }
    if front.len() < front_needs(&front) && !fed.ended {
        return Err(ObjectError::Interrupted.into());
    }
    let header = open_front(opener, &front, fed.ended)?;
    let failed = |error: EntryError| Failed {
        real: Some(header.path.clone()),
        error,
    };
    let pending = match place(opener, &header, stored, dest, under).map_err(failed)? {
        Placed::Done(done) => return Ok(done),
        Placed::File(pending) => pending,
    };
    let target = pending.target().to_path_buf();
    let receiving = |source: std::io::Error| {
        failed(EntryError::Write(WriteError::Io {
            action: "keep the received sealed object beside",
            path: target.clone(),
            source,
        }))
    };
    let mut scratch = dest
        .scratch_beside(pending.target())
        .map_err(|e| failed(e.into()))?;
    scratch.write_all(&front).map_err(receiving)?;
    drop(front);
    while let Some(data) = fed.next() {
        scratch.write_all(&data).map_err(receiving)?;
    }
    if !fed.ended {
        return Err(failed(ObjectError::Interrupted.into()));
    }
    open_into(opener, &scratch, &header, pending).map_err(failed)
}

/// Restores the object stored in `file` (a store on this machine) if it is
/// chunked, opened in place (blocking); `None` if it is a whole object.
pub(super) fn restore_in_place(
    opener: &mut Opener,
    file: &File,
    stored: &RelPath,
    dest: &Destination,
    under: &[RelPath],
) -> Option<Result<Restored, Failed>> {
    let read = |len: u64| -> Result<Vec<u8>, EntryError> {
        let mut buf = vec![0u8; len as usize];
        file.read_at(0, &mut buf).map_err(EntryError::Read)?;
        Ok(buf)
    };
    let len = match file.object_len() {
        Ok(len) => len,
        Err(e) => return Some(Err(EntryError::Read(e).into())),
    };
    let first = match read(len.min(1)) {
        Ok(first) => first,
        Err(e) => return Some(Err(e.into())),
    };
    if !starts_chunked(&first) {
        return None;
    }
    Some(open_in_place(opener, file, len, stored, dest, under, read))
}

fn open_in_place(
    opener: &mut Opener,
    file: &File,
    len: u64,
    stored: &RelPath,
    dest: &Destination,
    under: &[RelPath],
    read: impl Fn(u64) -> Result<Vec<u8>, EntryError>,
) -> Result<Restored, Failed> {
    let prefix = read(len.min(FRONT_PREFIX as u64))?;
    let needs = (front_needs(&prefix) as u64).min(len);
    let front = read(needs)?;
    let header = open_front(opener, &front, needs == len)?;
    let failed = |error: EntryError| Failed {
        real: Some(header.path.clone()),
        error,
    };
    match place(opener, &header, stored, dest, under).map_err(failed)? {
        Placed::Done(done) => Ok(done),
        Placed::File(pending) => open_into(opener, file, &header, pending).map_err(failed),
    }
}

impl From<EntryError> for Failed {
    fn from(error: EntryError) -> Failed {
        Failed { real: None, error }
    }
}

/// What an opened header leads to.
enum Placed {
    /// Nothing to write (outside the paths asked, or its place taken).
    Done(Restored),
    File(Box<PendingFile>),
}

/// Checks that `header` belongs where it is stored and decides its place.
fn place(
    opener: &Opener,
    header: &SealedHeader,
    stored: &RelPath,
    dest: &Destination,
    under: &[RelPath],
) -> Result<Placed, EntryError> {
    check_place(opener.public(), header, stored)?;
    match decide(header, dest, under)? {
        Target::File(pending) => Ok(Placed::File(pending)),
        Target::Outside => Ok(Placed::Done(Restored::Outside)),
        Target::Skipped(path) => Ok(Placed::Done(Restored::Skipped(path))),
        // A chunked object's front opens only for a file.
        Target::Dir | Target::Link(_) => Err(EntryError::KindChanged),
    }
}

/// Opens the whole chunked object in `src` (whose front opened to `front`)
/// into `pending`, and commits it once all of it has opened.
fn open_into(
    opener: &mut Opener,
    src: &File,
    front: &SealedHeader,
    mut pending: Box<PendingFile>,
) -> Result<Restored, EntryError> {
    let mut write_error: Option<WriteError> = None;
    let mut out = |chunk: &[u8]| {
        pending.write(chunk).map_err(|e| {
            write_error = Some(e);
            std::io::Error::other("the restored file could not be written")
        })
    };
    let opened = opener.open_source(src, &mut out);
    let header = match opened {
        Ok(header) => header,
        Err(ReadObjectError::Open(e)) => return Err(ObjectError::Open(e).into()),
        Err(ReadObjectError::Write(e)) => {
            return Err(match write_error {
                Some(e) => e.into(),
                None => EntryError::Read(e),
            })
        }
        Err(ReadObjectError::Read(e)) => return Err(EntryError::Read(e)),
    };
    if header != *front {
        return Err(EntryError::KindChanged);
    }
    let n = pending.commit_opened(header.size, header.mode, header.mtime_ns)?;
    Ok(Restored::File(n))
}
