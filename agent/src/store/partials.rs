//! Partial transfers of chunked content, kept in staging across restarts
//! so that a cut-off transfer resumes at its last durable chunk.
//!
//! A partial transfer is a staging file in `.ferry/staging` plus a catalog
//! row (sender, folder, path → staging file, durable length, chunk list).
//! The row is written only after the bytes it counts were `fdatasync`ed, so
//! after a crash the file holds at least that much; anything after it is
//! cut off when the transfer resumes, and every kept chunk is re-hashed
//! first, so a damaged one is sent again rather than trusted.

use std::io::Read;
use std::path::PathBuf;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use ferry_proto::{Hash, RelPath, Resume};

use super::error::StoreError;
use super::staging::StagingFile;
use super::{now_ms, Namespace, Staged, Store};
use crate::chunk::{self, ChunkInfo};

/// A kept partial transfer, verified and ready to continue.
#[derive(Debug)]
pub struct Resumable {
    /// The staging file, positioned after the kept bytes.
    pub staged: Staged,
    /// The chunks kept.
    pub chunks: Vec<ChunkInfo>,
    /// What to offer the sender.
    pub resume: Resume,
}

fn unique_nanos() -> u128 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .unwrap_or_default()
        .as_nanos()
}

fn staging_dir(store: &Store) -> PathBuf {
    store.root.join(".ferry").join("staging")
}

impl Store {
    /// A new staging file for chunked content, named so that it can be
    /// kept across restarts.
    pub fn stage_chunked(
        &self,
        ns: &Namespace,
        path: &RelPath,
        size: u64,
    ) -> Result<Staged, StoreError> {
        let _ = ns;
        let name = format!("chunked-{}-{}.part", unique_nanos(), self.next_counter());
        let file = StagingFile::create(&self.tree, staging_dir(self).join(name))?;
        Ok(Staged::new(file, path.clone(), size))
    }

    /// Makes what `staged` holds durable and records it as the partial
    /// transfer of its path, with the chunks it holds.
    pub fn save_partial(
        &self,
        ns: &Namespace,
        staged: &mut Staged,
        chunks: &[ChunkInfo],
    ) -> Result<(), StoreError> {
        staged.sync_data()?;
        self.catalog().put_partial(
            ns.sender_id,
            &ns.folder,
            staged.rel(),
            &staged.file_name(),
            staged.written(),
            &chunk::encode_list(chunks),
            now_ms(),
        )
    }

    /// Forgets the partial transfer of `path` kept in `staged`'s file.
    pub fn forget_partial(&self, ns: &Namespace, staged: &Staged) -> Result<(), StoreError> {
        self.catalog().drop_partial(
            ns.sender_id,
            &ns.folder,
            staged.rel(),
            Some(&staged.file_name()),
        )
    }

    /// Takes the partial transfer kept for `path`, if any: re-hashes its
    /// chunks, keeps those that are intact up to the first that is not, and
    /// returns it ready to continue for content of `size` bytes. The
    /// catalog row stays until the transfer ends or is saved again.
    pub fn resume_partial(
        &self,
        ns: &Namespace,
        path: &RelPath,
        size: u64,
    ) -> Result<Option<Resumable>, StoreError> {
        let row = self.catalog().partial(ns.sender_id, &ns.folder, path)?;
        let Some((name, len, list)) = row else {
            return Ok(None);
        };
        let forget = || {
            self.catalog()
                .drop_partial(ns.sender_id, &ns.folder, path, Some(&name))
        };
        let listed = chunk::decode_list(&list).unwrap_or_default();
        if name.contains('/') || listed.is_empty() {
            forget()?;
            return Ok(None);
        }
        // Claimed under a new name: a stale stream of the same transfer
        // (its connection not yet timed out) can no longer touch it.
        let claimed = format!("chunked-{}-{}.part", unique_nanos(), self.next_counter());
        let (old, new) = (
            staging_dir(self).join(&name),
            staging_dir(self).join(&claimed),
        );
        if self.tree.rename(&old, &new).is_err() {
            forget()?;
            return Ok(None);
        }
        forget()?;
        let Ok(staging) = StagingFile::open_existing(&self.tree, new) else {
            return Ok(None);
        };
        let durable = u64::try_from(len).unwrap_or(0);
        let mut hasher = blake3::Hasher::new();
        let mut kept = Vec::new();
        let mut at = 0u64;
        let mut buf = Vec::new();
        let mut reader = &staging.file;
        for info in listed {
            let end = at + u64::from(info.len);
            if end > durable || end > size {
                break;
            }
            buf.resize(info.len as usize, 0);
            if reader.read_exact(&mut buf).is_err() || blake3::hash(&buf).as_bytes() != &info.hash {
                tracing::warn!(path = %path, offset = at, "a kept chunk is damaged; it is fetched again");
                break;
            }
            hasher.update(&buf);
            kept.push(info);
            at = end;
        }
        if kept.is_empty() {
            // Nothing usable: the file goes when `staging` drops.
            forget()?;
            return Ok(None);
        }
        let prefix: Hash = *hasher.clone().finalize().as_bytes();
        let staged = Staged::resumed(staging, path.clone(), size, at, hasher)?;
        Ok(Some(Resumable {
            staged,
            chunks: kept,
            resume: Resume {
                len: at,
                hash: prefix,
            },
        }))
    }

    /// True if a run after `run` stored `path` (a transfer of `run` that is
    /// cut off now is stale: nothing of it is worth keeping).
    pub fn stored_after(
        &self,
        ns: &Namespace,
        path: &RelPath,
        run: u64,
    ) -> Result<bool, StoreError> {
        let row = self.catalog().current_row(ns.sender_id, &ns.folder, path)?;
        Ok(row.is_some_and(|r| u64::try_from(r.run_id).unwrap_or(0) > run))
    }

    /// Removes partial transfers not touched for `max_age`, and their
    /// staging files. Returns how many were removed.
    pub fn expire_partials(&self, max_age: Duration) -> Result<usize, StoreError> {
        let cutoff =
            now_ms().saturating_sub(i64::try_from(max_age.as_millis()).unwrap_or(i64::MAX));
        let old: Vec<String> = self
            .catalog()
            .partial_files()?
            .into_iter()
            .filter(|(_, updated)| *updated < cutoff)
            .map(|(name, _)| name)
            .collect();
        for name in &old {
            let path = staging_dir(self).join(name);
            if self.tree.lstat(&path)?.is_some() {
                self.tree.remove_file(&path)?;
            }
            self.catalog().drop_partial_file(name)?;
        }
        Ok(old.len())
    }

    /// The staging files of kept partial transfers (spared at open); rows
    /// whose file is gone are forgotten.
    pub(crate) fn kept_partials(&self) -> Result<std::collections::HashSet<String>, StoreError> {
        let mut keep = std::collections::HashSet::new();
        for (name, _) in self.catalog().partial_files()? {
            if staging_dir(self).join(&name).is_file() {
                keep.insert(name);
            } else {
                self.catalog().drop_partial_file(&name)?;
            }
        }
        Ok(keep)
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used)] // a failing unwrap is a failing test
mod tests {
    use super::super::tests::{file_entry, fixture, rel};
    use super::*;
    use std::os::unix::fs::FileExt;

    fn random(len: usize, seed: u8) -> Vec<u8> {
        let mut out = vec![0u8; len];
        blake3::Hasher::new()
            .update(&[seed])
            .finalize_xof()
            .fill(&mut out);
        out
    }

    /// Stages `data` as chunked content and keeps it as a partial after
    /// `keep_chunks` chunks.
    fn partial(store: &Store, ns: &Namespace, path: &str, data: &[u8], keep_chunks: usize) {
        let list = chunk::chunk_list(data);
        let mut staged = store
            .stage_chunked(ns, &rel(path), data.len() as u64)
            .unwrap();
        let mut at = 0;
        for c in &list[..keep_chunks] {
            staged.write(&data[at..at + c.len as usize]).unwrap();
            at += c.len as usize;
        }
        store
            .save_partial(ns, &mut staged, &list[..keep_chunks])
            .unwrap();
        // Bytes after the durable point, as a crash would leave them.
        staged.write(&data[at..at + 100]).unwrap();
        staged.keep();
    }

    #[test]
    fn a_partial_survives_a_restart_and_resumes_at_its_last_chunk() {
        let (dir, store, ns) = fixture();
        let data = random(1 << 20, 1);
        partial(&store, &ns, "big", &data, 3);
        let kept: u64 = chunk::chunk_list(&data)[..3]
            .iter()
            .map(|c| u64::from(c.len))
            .sum();
        drop(store);
        let store = Store::open(&dir.path().join("store")).unwrap();
        let r = store
            .resume_partial(&ns, &rel("big"), data.len() as u64)
            .unwrap()
            .unwrap();
        assert_eq!(r.resume.len, kept);
        assert_eq!(
            r.resume.hash,
            *blake3::hash(&data[..kept as usize]).as_bytes()
        );
        assert_eq!(r.chunks.len(), 3);
        let mut staged = r.staged;
        staged.write(&data[kept as usize..]).unwrap();
        let verified = staged.finish(blake3::hash(&data).as_bytes()).unwrap();
        let run = store.begin_run(&ns).unwrap();
        let entry = file_entry("big", &data, 1, 0o644);
        store.commit_file(&ns, run, &entry, verified).unwrap();
        assert_eq!(
            std::fs::read(store.root().join("lap/docs/big")).unwrap(),
            data
        );
    }

    #[test]
    fn a_damaged_kept_chunk_and_what_follows_are_dropped() {
        let (_dir, store, ns) = fixture();
        let data = random(1 << 20, 2);
        partial(&store, &ns, "big", &data, 4);
        let list = chunk::chunk_list(&data);
        let second = u64::from(list[0].len) + 10;
        let name = store.catalog().partial_files().unwrap()[0].0.clone();
        let file = std::fs::OpenOptions::new()
            .write(true)
            .open(staging_dir(&store).join(name))
            .unwrap();
        file.write_all_at(b"XX", second).unwrap();
        let r = store
            .resume_partial(&ns, &rel("big"), data.len() as u64)
            .unwrap()
            .unwrap();
        assert_eq!(r.resume.len, u64::from(list[0].len));
        assert_eq!(r.chunks, list[..1]);
    }

    #[test]
    fn old_partials_expire_with_their_files() {
        let (_dir, store, ns) = fixture();
        let data = random(600_000, 3);
        partial(&store, &ns, "big", &data, 2);
        assert_eq!(store.expire_partials(Duration::from_secs(3600)).unwrap(), 0);
        std::thread::sleep(Duration::from_millis(5));
        assert_eq!(store.expire_partials(Duration::ZERO).unwrap(), 1);
        assert_eq!(std::fs::read_dir(staging_dir(&store)).unwrap().count(), 0);
        assert!(store
            .resume_partial(&ns, &rel("big"), data.len() as u64)
            .unwrap()
            .is_none());
    }
}
