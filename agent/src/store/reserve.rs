//! Space kept back for the catalog's run bookkeeping on a full disk.
//!
//! `STORE/.ferry/reserve` holds [`RESERVE_BYTES`] of real (not sparse)
//! blocks. When the disk is full, a catalog write that a run cannot do
//! without (opening it, finishing it, marking old runs interrupted) gives
//! those blocks back to the filesystem and tries once more, so a sender's run
//! on a full disk still opens, gets its per-file failures ("the receiver's
//! disk is full") and ends with a summary. The reserve is put back when the
//! store is opened and after each run, once there is space for it.

use std::io::{self, Write};
use std::path::{Path, PathBuf};

use super::error::io_err;
use super::mirror::Tree;
use super::{Store, StoreError};

/// Size of the reserve: room for a few hundred catalog pages.
pub(crate) const RESERVE_BYTES: u64 = 1024 * 1024;

/// `STORE/.ferry/reserve`.
fn reserve_path(root: &Path) -> PathBuf {
    root.join(".ferry").join("reserve")
}

/// Makes sure the reserve holds its full size; `false` (and no reserve
/// file) where the disk has no room for it now. Reached from the store's
/// root without following a symlink, like everything in the store.
pub(crate) fn fill(tree: &Tree) -> Result<bool, StoreError> {
    let path = reserve_path(tree.root());
    match tree.lstat(&path)? {
        Some(meta) if meta.is_file() && meta.len() == RESERVE_BYTES => return Ok(true),
        Some(meta) if !meta.is_file() => {
            return Err(io_err(
                "use the space reserve",
                &path,
                io::Error::other("it is not a regular file: move it out of the store"),
            ))
        }
        Some(_) => tree.remove_file(&path)?,
        None => {}
    }
    let written = tree.create_new(&path, 0o600).and_then(|mut file| {
        // Written, not `set_len`: a sparse file would hold no blocks.
        let block = [0u8; 64 * 1024];
        for _ in 0..RESERVE_BYTES / block.len() as u64 {
            file.write_all(&block)
                .map_err(|e| io_err("create the space reserve", &path, e))?;
        }
        file.sync_all()
            .map_err(|e| io_err("create the space reserve", &path, e))
    });
    match written {
        Ok(()) => Ok(true),
        Err(e) => {
            // Half a reserve is no use and takes space the files need.
            let _ = tree.remove_file(&path);
            match e {
                StoreError::DiskFull { .. } => Ok(false),
                other => Err(other),
            }
        }
    }
}

/// Gives the reserve's blocks back to the filesystem; `true` if there were
/// any.
fn release(tree: &Tree) -> bool {
    tree.remove_file(&reserve_path(tree.root())).is_ok()
}

impl Store {
    /// Runs the catalog write `write`; if the disk is full, releases the
    /// reserve and runs it once more.
    pub(crate) fn with_reserve<T>(
        &self,
        write: impl Fn(&super::Catalog) -> Result<T, StoreError>,
    ) -> Result<T, StoreError> {
        let cat = self.catalog();
        match write(&cat) {
            Err(StoreError::DiskFull { .. }) if release(&self.tree) => {
                tracing::warn!(
                    "the receiver's disk is full: released the store's space reserve for the catalog"
                );
                write(&cat)
            }
            other => other,
        }
    }

    /// Puts the reserve back if it was used and there is room; a failure
    /// is only logged (the reserve is a help, not a promise).
    pub(crate) fn refill_reserve(&self) {
        match fill(&self.tree) {
            Ok(true) => {}
            Ok(false) => tracing::debug!("no room yet to put the space reserve back"),
            Err(e) => tracing::warn!(
                "could not keep the space reserve: {}",
                crate::chain::Chain(&e)
            ),
        }
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used)] // a failing unwrap is a failing test
mod tests {
    use super::*;
    use std::fs;
    use std::os::unix::fs::MetadataExt;

    #[test]
    fn the_reserve_holds_real_blocks_and_is_released_once() {
        let dir = tempfile::tempdir().unwrap();
        fs::create_dir(dir.path().join(".ferry")).unwrap();
        let tree = Tree::open(dir.path()).unwrap();
        assert!(fill(&tree).unwrap());
        let meta = fs::metadata(reserve_path(dir.path())).unwrap();
        assert_eq!(meta.len(), RESERVE_BYTES);
        assert!(meta.blocks() * 512 >= RESERVE_BYTES, "sparse reserve");
        assert!(release(&tree));
        assert!(!release(&tree));
        assert!(fill(&tree).unwrap());
    }
}
