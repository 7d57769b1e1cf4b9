//! Sparse files: holes kept where content is written, skipped where it is
//! read.
//!
//! [`HoleWriter`] appends content to a new (or truncated) file and leaves
//! every all-zero block unwritten, so a 4 GiB file with a few megabytes of
//! data costs a few megabytes of disk whatever the sender did with it; the
//! length is set at the end. Zero detection is one `memcmp` per 4 KiB block
//! that stops at the first non-zero byte, and the non-zero blocks in a row
//! go to the file in one write: random content costs next to nothing more.
//!
//! [`HoleReader`] reads a file as a stream, filling its holes with zeros
//! from memory (`SEEK_DATA` / `SEEK_HOLE`) instead of asking the kernel to
//! read them: a sparse file's holes are never paged in.

use std::borrow::Borrow;
use std::fs::File;
use std::io::{self, Read};
use std::os::unix::fs::FileExt;

use rustix::fs::SeekFrom;

/// Granularity of zero detection: the common filesystem block size.
pub const BLOCK: usize = 4096;

static ZEROS: [u8; BLOCK] = [0; BLOCK];

/// Appends content to a file whose unwritten part reads as zeros (newly
/// created, or truncated to where writing starts), leaving holes for the
/// all-zero blocks. Call [`HoleWriter::finish`] before the file is used:
/// content that ends in zeros leaves the file short until then.
#[derive(Debug, Default, Clone, Copy)]
pub struct HoleWriter {
    /// Bytes of content appended so far (the logical length).
    pos: u64,
    /// The file's length as written (`pos` once zeros at the end are
    /// accounted for).
    len: u64,
}

impl HoleWriter {
    /// A writer that continues a file already `len` bytes long.
    pub fn at(len: u64) -> HoleWriter {
        HoleWriter { pos: len, len }
    }

    /// The logical length: everything appended so far.
    pub fn pos(&self) -> u64 {
        self.pos
    }

    /// Appends `data` at [`HoleWriter::pos`], skipping its all-zero
    /// blocks.
    pub fn write(&mut self, file: &File, data: &[u8]) -> io::Result<()> {
        let start = self.pos;
        // Blocks are aligned to the file, not to `data`.
        let mut at = 0usize;
        let mut run: Option<usize> = None;
        while at < data.len() {
            let offset = start + at as u64;
            let to_boundary = BLOCK - (offset % BLOCK as u64) as usize;
            let end = (at + to_boundary).min(data.len());
            let block = &data[at..end];
            if block == &ZEROS[..block.len()] {
                if let Some(from) = run.take() {
                    self.put(file, start, from, &data[from..at])?;
                }
            } else if run.is_none() {
                run = Some(at);
            }
            at = end;
        }
        if let Some(from) = run {
            self.put(file, start, from, &data[from..])?;
        }
        self.pos = start + data.len() as u64;
        Ok(())
    }

    fn put(&mut self, file: &File, start: u64, from: usize, bytes: &[u8]) -> io::Result<()> {
        let offset = start + from as u64;
        file.write_all_at(bytes, offset)?;
        self.len = self.len.max(offset + bytes.len() as u64);
        Ok(())
    }

    /// Sets the file's length to the content's when the content ended in a
    /// hole (then the last blocks were never written).
    pub fn finish(&mut self, file: &File) -> io::Result<()> {
        if self.len < self.pos {
            file.set_len(self.pos)?;
            self.len = self.pos;
        }
        Ok(())
    }
}

/// Reads a file from its start as a stream; holes come from memory, not
/// from the disk or the page cache.
#[derive(Debug)]
pub struct HoleReader<F> {
    file: F,
    pos: u64,
    /// Where the data around `pos` ends (the next hole); `pos..data_end`
    /// is read from the file.
    data_end: u64,
    /// Where the hole at `pos` ends (the next data); `pos..hole_end` is
    /// zeros.
    hole_end: u64,
    /// `SEEK_DATA` is not supported here: read everything.
    plain: bool,
}

impl<F: Borrow<File>> HoleReader<F> {
    /// A reader of `file` (a `File` or a `&File`) from offset 0.
    pub fn new(file: F) -> HoleReader<F> {
        HoleReader {
            file,
            pos: 0,
            data_end: 0,
            hole_end: 0,
            plain: false,
        }
    }

    /// Finds what lies at `pos`: data up to `data_end`, or a hole up to
    /// `hole_end`.
    fn locate(&mut self) -> io::Result<()> {
        let file = self.file.borrow();
        match rustix::fs::seek(file, SeekFrom::Data(self.pos)) {
            Ok(data) if data > self.pos => {
                self.hole_end = data;
            }
            Ok(_) => {
                let hole = rustix::fs::seek(file, SeekFrom::Hole(self.pos))?;
                self.data_end = hole;
            }
            // No data after `pos`: the rest is a hole up to the end of the
            // file (its length is checked by the caller's `fstat`).
            Err(rustix::io::Errno::NXIO) => {
                let len = file.metadata()?.len();
                self.hole_end = len.max(self.pos);
            }
            Err(rustix::io::Errno::INVAL | rustix::io::Errno::OPNOTSUPP) => self.plain = true,
            Err(e) => return Err(e.into()),
        }
        Ok(())
    }
}

impl<F: Borrow<File>> Read for HoleReader<F> {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        if buf.is_empty() {
            return Ok(0);
        }
        if !self.plain && self.pos >= self.data_end && self.pos >= self.hole_end {
            self.locate()?;
        }
        let n = if self.plain {
            self.file.borrow().read_at(buf, self.pos)?
        } else if self.pos < self.hole_end {
            let left = self.hole_end - self.pos;
            let n = buf.len().min(usize::try_from(left).unwrap_or(usize::MAX));
            buf[..n].fill(0);
            n
        } else {
            let left = self.data_end.saturating_sub(self.pos);
            let want = buf.len().min(usize::try_from(left).unwrap_or(usize::MAX));
            let n = self.file.borrow().read_at(&mut buf[..want], self.pos)?;
            if n == 0 {
                // The file shrank since it was located: it ends here.
                self.data_end = self.pos;
            }
            n
        };
        self.pos += n as u64;
        Ok(n)
    }
}

/// Bytes a file takes on disk: its allocated blocks (`st_blocks * 512`).
pub fn allocated(meta: &std::fs::Metadata) -> u64 {
    use std::os::unix::fs::MetadataExt;
    meta.blocks().saturating_mul(512)
}

#[cfg(test)]
#[allow(clippy::unwrap_used)] // a failing unwrap is a failing test
mod tests {
    use super::*;

    fn content() -> Vec<u8> {
        // 1 MiB of zeros, 10 000 bytes of data at an odd offset, 3 MiB of
        // zeros, data again, and zeros to the end.
        let mut data = vec![0u8; 5 << 20];
        for (i, b) in data[(1 << 20) + 7..(1 << 20) + 10_007]
            .iter_mut()
            .enumerate()
        {
            *b = (i % 251) as u8 + 1;
        }
        data[(4 << 20) + 100] = 9;
        data
    }

    #[test]
    fn zero_blocks_stay_holes_and_the_content_reads_back_whole() {
        let dir = tempfile::tempdir().unwrap();
        let data = content();
        // Written in pieces that do not line up with blocks.
        let file = File::create(dir.path().join("f")).unwrap();
        let mut writer = HoleWriter::default();
        for piece in data.chunks(100_003) {
            writer.write(&file, piece).unwrap();
        }
        writer.finish(&file).unwrap();
        drop(file);
        assert_eq!(std::fs::read(dir.path().join("f")).unwrap(), data);
        let meta = std::fs::metadata(dir.path().join("f")).unwrap();
        assert_eq!(meta.len(), data.len() as u64);
        assert!(
            allocated(&meta) <= 64 << 10,
            "{} bytes allocated for 10 KB of data",
            allocated(&meta)
        );

        // Read back through the hole reader, in odd pieces.
        let file = File::open(dir.path().join("f")).unwrap();
        let mut reader = HoleReader::new(&file);
        let mut back = Vec::new();
        let mut buf = vec![0u8; 77_777];
        loop {
            let n = reader.read(&mut buf).unwrap();
            if n == 0 {
                break;
            }
            back.extend_from_slice(&buf[..n]);
        }
        assert_eq!(back.len(), data.len());
        assert!(back == data);
    }

    #[test]
    fn dense_content_is_written_in_one_piece() {
        let dir = tempfile::tempdir().unwrap();
        let mut data = vec![0u8; 3 * BLOCK + 5];
        blake3::Hasher::new().finalize_xof().fill(&mut data);
        let file = File::create(dir.path().join("f")).unwrap();
        let mut writer = HoleWriter::at(0);
        writer.write(&file, &data).unwrap();
        writer.finish(&file).unwrap();
        assert_eq!(writer.pos(), data.len() as u64);
        assert_eq!(std::fs::read(dir.path().join("f")).unwrap(), data);
        // A file that is all zeros is all hole.
        let file = File::create(dir.path().join("z")).unwrap();
        let mut writer = HoleWriter::default();
        writer.write(&file, &[0u8; 1 << 20]).unwrap();
        writer.finish(&file).unwrap();
        let meta = file.metadata().unwrap();
        assert_eq!((meta.len(), allocated(&meta)), (1 << 20, 0));
    }
}
