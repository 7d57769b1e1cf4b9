//! Staging: content being received, in `.ferry/staging`, verified and made
//! durable before it is renamed into the mirror.

use std::fs::File;
use std::io::{Seek, SeekFrom};
use std::path::{Path, PathBuf};
use std::sync::Arc;

use ferry_proto::{Hash, RelPath};

use super::error::{hex, io_err, StoreError};
use super::mirror::{self, Tree};
use super::{Namespace, Store};
use crate::sparse::HoleWriter;

/// A staging file that is removed when dropped, unless it was renamed away.
#[derive(Debug)]
pub(crate) struct StagingFile {
    tree: Arc<Tree>,
    pub path: PathBuf,
    pub file: File,
    /// False once the file has been renamed into the mirror.
    pub armed: bool,
}

impl StagingFile {
    /// Creates a new, empty staging file at `path` (which must not exist),
    /// reached from the store's root without following a symlink.
    pub fn create(tree: &Arc<Tree>, path: PathBuf) -> Result<StagingFile, StoreError> {
        let file = tree.create_new(&path, 0o600)?;
        Ok(StagingFile {
            tree: tree.clone(),
            path,
            file,
            armed: true,
        })
    }

    /// Opens the kept staging file of an interrupted transfer.
    pub fn open_existing(tree: &Arc<Tree>, path: PathBuf) -> Result<StagingFile, StoreError> {
        let file = tree.open_rw(&path)?;
        Ok(StagingFile {
            tree: tree.clone(),
            path,
            file,
            armed: true,
        })
    }
}

impl Drop for StagingFile {
    fn drop(&mut self) {
        if self.armed {
            if let Err(e) = self.tree.remove_file(&self.path) {
                tracing::warn!(path = %self.path.display(), error = %e, "could not remove a staging file");
            }
        }
    }
}

/// A file being received into `.ferry/staging`; removed on drop unless it
/// is finished and committed.
///
/// All-zero blocks of the content are not written: they stay holes, so a
/// sparse file is stored sparse whatever the sender did ([`HoleWriter`]).
#[derive(Debug)]
pub struct Staged {
    staging: StagingFile,
    rel: RelPath,
    declared: u64,
    /// `declared` is an upper bound, not the exact length.
    at_most: bool,
    written: u64,
    holes: HoleWriter,
    hasher: blake3::Hasher,
}

impl Staged {
    pub(crate) fn new(staging: StagingFile, rel: RelPath, declared: u64) -> Staged {
        Staged {
            staging,
            rel,
            declared,
            at_most: false,
            written: 0,
            holes: HoleWriter::default(),
            hasher: blake3::Hasher::new(),
        }
    }

    /// Continues a kept staging file after its first `written` bytes, which
    /// `hasher` has hashed; anything after them is cut off.
    pub(crate) fn resumed(
        mut staging: StagingFile,
        rel: RelPath,
        declared: u64,
        written: u64,
        hasher: blake3::Hasher,
    ) -> Result<Staged, StoreError> {
        staging
            .file
            .set_len(written)
            .and_then(|()| staging.file.seek(SeekFrom::Start(written)).map(|_| ()))
            .map_err(|e| io_err("continue the kept staging file", &staging.path, e))?;
        Ok(Staged {
            staging,
            rel,
            declared,
            at_most: false,
            written,
            holes: HoleWriter::at(written),
            hasher,
        })
    }

    /// Drops what was kept: the content starts again from its first byte.
    pub fn restart(&mut self) -> Result<(), StoreError> {
        self.staging
            .file
            .set_len(0)
            .and_then(|()| self.staging.file.seek(SeekFrom::Start(0)).map(|_| ()))
            .map_err(|e| io_err("truncate the staging file", &self.staging.path, e))?;
        self.written = 0;
        self.holes = HoleWriter::default();
        self.hasher = blake3::Hasher::new();
        Ok(())
    }

    /// The staging file's name (in `.ferry/staging`).
    pub fn file_name(&self) -> String {
        self.staging
            .path
            .file_name()
            .map(|n| n.to_string_lossy().into_owned())
            .unwrap_or_default()
    }

    /// Makes what was written durable (`fdatasync`), zeros at its end
    /// included (the file's length is set first).
    pub fn sync_data(&mut self) -> Result<(), StoreError> {
        self.holes
            .finish(&self.staging.file)
            .map_err(|e| io_err("set the length of the staging file", &self.staging.path, e))?;
        self.staging
            .file
            .sync_data()
            .map_err(|e| io_err("fsync the staging file", &self.staging.path, e))
    }

    /// Leaves the staging file in place (an interrupted transfer to resume).
    pub fn keep(mut self) {
        self.staging.armed = false;
    }

    /// The path the content is for.
    pub fn rel(&self) -> &RelPath {
        &self.rel
    }

    /// Appends `data`, hashing it as it goes; its all-zero blocks are left
    /// as holes. More bytes than the declared size is
    /// [`StoreError::SizeMismatch`].
    pub fn write(&mut self, data: &[u8]) -> Result<(), StoreError> {
        let len = data.len() as u64;
        let total = self.written.saturating_add(len);
        if total > self.declared {
            return Err(StoreError::SizeMismatch {
                path: self.rel.clone(),
                declared: self.declared,
                actual: total,
            });
        }
        self.holes
            .write(&self.staging.file, data)
            .map_err(|e| io_err("write the staging file", &self.staging.path, e))?;
        self.hasher.update(data);
        self.written = total;
        Ok(())
    }

    /// Makes the declared size an upper bound: content that ends short of
    /// it is complete ([`ferry_proto::Content::ChunkedUpTo`]).
    pub fn declared_at_most(&mut self) {
        self.at_most = true;
    }

    /// Bytes written so far.
    pub fn written(&self) -> u64 {
        self.written
    }

    /// Checks the size and the hash. Durability comes at commit: one fsync
    /// per file ([`super::Store::commit_file`]) or one flush per batch
    /// ([`super::Store::apply_batch`]).
    pub fn finish(mut self, hash: &Hash) -> Result<Verified, StoreError> {
        if self.written > self.declared || (self.written < self.declared && !self.at_most) {
            return Err(StoreError::SizeMismatch {
                path: self.rel.clone(),
                declared: self.declared,
                actual: self.written,
            });
        }
        let actual = *self.hasher.finalize().as_bytes();
        if actual != *hash {
            return Err(StoreError::HashMismatch {
                path: self.rel.clone(),
                expected: hex(hash),
                actual: hex(&actual),
            });
        }
        // Content that ends in zeros left the file short.
        self.holes
            .finish(&self.staging.file)
            .map_err(|e| io_err("set the length of the staging file", &self.staging.path, e))?;
        let meta = self
            .staging
            .file
            .metadata()
            .map_err(|e| io_err("examine the staging file", &self.staging.path, e))?;
        Ok(Verified {
            stored: crate::sparse::allocated(&meta).min(self.written),
            staging: Held::File(self.staging),
            rel: self.rel,
            size: self.written,
            hash: actual,
            chunks: None,
        })
    }
}

/// Where verified content waits for its commit.
#[derive(Debug)]
pub(crate) enum Held {
    /// A staging file (removed on drop unless renamed into the mirror).
    File(StagingFile),
    /// In memory: a small whole file bound for a bucket's pack, which
    /// never needs a file of its own here ([`Verified::in_memory`]).
    Memory(Vec<u8>),
}

/// A staged file whose content is verified, ready to commit.
/// Removed on drop unless committed.
#[derive(Debug)]
pub struct Verified {
    pub(crate) staging: Held,
    pub(crate) rel: RelPath,
    pub(crate) size: u64,
    pub(crate) hash: Hash,
    /// The encoded chunk list, recorded with the version (chunked content).
    pub(crate) chunks: Option<Vec<u8>>,
    /// Bytes it takes on disk (allocated blocks), at most `size`: what the
    /// sender's quota counts.
    pub(crate) stored: u64,
}

impl Verified {
    /// Whole content received in memory, checked against `hash`, kept in
    /// memory until it is packed: for a store whose bytes go to a bucket,
    /// where a staging file per small file would only be written, read back
    /// and deleted.
    pub(crate) fn in_memory(
        rel: RelPath,
        data: Vec<u8>,
        hash: &Hash,
    ) -> Result<Verified, StoreError> {
        let actual = *blake3::hash(&data).as_bytes();
        if actual != *hash {
            return Err(StoreError::HashMismatch {
                path: rel,
                expected: hex(hash),
                actual: hex(&actual),
            });
        }
        let size = data.len() as u64;
        Ok(Verified {
            staging: Held::Memory(data),
            rel,
            size,
            hash: actual,
            chunks: None,
            stored: size,
        })
    }

    /// The staging file holding the content; content held in memory has
    /// none (it only goes to a bucket).
    pub(crate) fn file(&mut self) -> Result<&mut StagingFile, StoreError> {
        match &mut self.staging {
            Held::File(file) => Ok(file),
            Held::Memory(_) => Err(StoreError::BadEntry {
                path: self.rel.clone(),
                detail: "content held in memory cannot be renamed into a mirror (internal error)"
                    .into(),
            }),
        }
    }

    /// Checks that this content is for `entry` (a file entry of this path
    /// and size).
    pub(crate) fn fits(&self, entry: &ferry_proto::Entry) -> Result<(), StoreError> {
        let bad = |detail: &str| StoreError::BadEntry {
            path: entry.path.clone(),
            detail: detail.to_owned(),
        };
        let ferry_proto::EntryKind::File { size, ref content } = entry.kind else {
            return Err(bad("commit_file needs a file entry"));
        };
        if self.rel != entry.path {
            return Err(bad("the staged content belongs to another path"));
        }
        // A size that is an upper bound was checked as one when staged.
        if self.size > size || (self.size != size && content.size_is_exact()) {
            return Err(StoreError::SizeMismatch {
                path: entry.path.clone(),
                declared: size,
                actual: self.size,
            });
        }
        Ok(())
    }

    /// Records `chunks` ([`crate::chunk::encode_list`]) with the version.
    pub fn with_chunks(mut self, chunks: Vec<u8>) -> Verified {
        self.chunks = Some(chunks);
        self
    }

    /// Makes the content durable (fsync).
    pub(crate) fn sync(&self) -> Result<(), StoreError> {
        match &self.staging {
            Held::File(staging) => staging
                .file
                .sync_all()
                .map_err(|e| io_err("fsync the staging file", &staging.path, e)),
            // Durable once packed and put.
            Held::Memory(_) => Ok(()),
        }
    }

    /// The verified content's hash.
    pub fn hash(&self) -> &Hash {
        &self.hash
    }

    /// The content's size.
    pub fn size(&self) -> u64 {
        self.size
    }

    /// Bytes the content takes on disk, at most its size: a sparse file's
    /// holes are not stored, and do not count against a quota.
    pub fn stored(&self) -> u64 {
        self.stored
    }
}

/// Removes whatever a previous process left in the staging directory,
/// except the files named in `keep` (interrupted transfers to resume).
pub(crate) fn clear(
    tree: &Tree,
    dir: &Path,
    keep: &std::collections::HashSet<String>,
) -> Result<usize, StoreError> {
    let mut removed = 0;
    for name in tree.read_dir(dir)? {
        if keep.contains(String::from_utf8_lossy(&name).as_ref()) {
            continue;
        }
        tree.remove_all(&mirror::join_bytes(dir, &name))?;
        removed += 1;
    }
    Ok(removed)
}

impl Store {
    /// A small whole file received in memory, checked against `hash` and
    /// held for its commit where this store's place wants it (see
    /// `place::Place::stage_whole`).
    pub fn stage_whole(
        &self,
        ns: &Namespace,
        path: &RelPath,
        data: Vec<u8>,
        hash: &Hash,
    ) -> Result<Verified, StoreError> {
        self.place.stage_whole(self, ns, path, data, hash)
    }

    /// Starts receiving `size` bytes of content for `path` into a new
    /// staging file.
    pub fn stage(&self, ns: &Namespace, path: &RelPath, size: u64) -> Result<Staged, StoreError> {
        let _ = ns; // staging is shared by all namespaces: same filesystem as the mirror
        let name = format!("{}.part", self.next_counter());
        let file = StagingFile::create(
            &self.tree,
            self.root.join(".ferry").join("staging").join(name),
        )?;
        Ok(Staged::new(file, path.clone(), size))
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used)] // a failing unwrap is a failing test
mod tests {
    use super::*;
    use std::fs;

    fn staged(dir: &Path, size: u64) -> Staged {
        let tree = Arc::new(Tree::open(dir).unwrap());
        let file = StagingFile::create(&tree, dir.join("s1")).unwrap();
        Staged::new(file, RelPath::from_bytes("a/b").unwrap(), size)
    }

    #[test]
    fn content_held_in_memory_is_checked_and_has_no_file_to_rename() {
        let data = b"small file".to_vec();
        let rel = RelPath::from_bytes("a/b").unwrap();
        let wrong = *blake3::hash(b"other").as_bytes();
        assert!(matches!(
            Verified::in_memory(rel.clone(), data.clone(), &wrong),
            Err(StoreError::HashMismatch { .. })
        ));
        let hash = *blake3::hash(&data).as_bytes();
        let mut held = Verified::in_memory(rel, data, &hash).unwrap();
        assert_eq!((held.size(), held.stored(), *held.hash()), (10, 10, hash));
        held.sync().unwrap();
        assert!(held.file().is_err(), "a mirror cannot rename it into place");
    }

    #[test]
    fn verified_content_and_cleanup_on_drop() {
        let dir = tempfile::tempdir().unwrap();
        let mut s = staged(dir.path(), 5);
        s.write(b"he").unwrap();
        s.write(b"llo").unwrap();
        let v = s.finish(blake3::hash(b"hello").as_bytes()).unwrap();
        assert_eq!(fs::read(dir.path().join("s1")).unwrap(), b"hello");
        assert_eq!(v.size(), 5);
        drop(v);
        assert!(!dir.path().join("s1").exists());
    }

    #[test]
    fn zeros_are_staged_as_holes_and_the_length_is_kept() {
        let dir = tempfile::tempdir().unwrap();
        let mut data = vec![0u8; 8 << 20];
        data[(4 << 20) + 1] = 1;
        let mut s = staged(dir.path(), data.len() as u64);
        // Half of it, ending in zeros, saved as a kept partial would be.
        s.write(&data[..5 << 20]).unwrap();
        s.sync_data().unwrap();
        let meta = fs::metadata(dir.path().join("s1")).unwrap();
        assert_eq!(meta.len(), 5 << 20);
        s.write(&data[5 << 20..]).unwrap();
        let v = s.finish(blake3::hash(&data).as_bytes()).unwrap();
        let meta = fs::metadata(dir.path().join("s1")).unwrap();
        assert_eq!(meta.len(), data.len() as u64);
        assert!(crate::sparse::allocated(&meta) <= 64 << 10, "{meta:?}");
        assert_eq!(v.stored(), crate::sparse::allocated(&meta));
        assert!(fs::read(dir.path().join("s1")).unwrap() == data);
    }

    #[test]
    fn short_content_is_size_mismatch() {
        let dir = tempfile::tempdir().unwrap();
        let mut s = staged(dir.path(), 5);
        s.write(b"hey").unwrap();
        let err = s.finish(blake3::hash(b"hey").as_bytes()).unwrap_err();
        assert!(
            matches!(
                err,
                StoreError::SizeMismatch {
                    declared: 5,
                    actual: 3,
                    ..
                }
            ),
            "{err}"
        );
        assert!(!dir.path().join("s1").exists());
    }

    #[test]
    fn clear_removes_leftovers() {
        let dir = tempfile::tempdir().unwrap();
        fs::write(dir.path().join("x"), b"1").unwrap();
        fs::create_dir(dir.path().join("d")).unwrap();
        fs::write(dir.path().join("d/y"), b"1").unwrap();
        fs::write(dir.path().join("kept.part"), b"1").unwrap();
        let keep = ["kept.part".to_string()].into_iter().collect();
        let tree = Tree::open(dir.path()).unwrap();
        assert_eq!(clear(&tree, dir.path(), &keep).unwrap(), 2);
        assert_eq!(fs::read_dir(dir.path()).unwrap().count(), 1);
    }
}
