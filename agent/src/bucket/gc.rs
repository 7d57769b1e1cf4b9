//! Which packs retention may delete or rewrite.
//!
//! Retention first removes versions from the catalog; what it may then
//! remove from the bucket is decided here, from each pack's use as the
//! catalog counts it (the bytes of its blobs that a kept version still
//! references at the location in this pack):
//!
//! - a pack written at or after the start of the oldest run still in
//!   progress is never touched: that run's blobs are in packs already, but
//!   no catalog row references them until it commits;
//! - a pack with no live byte is deleted;
//! - a pack whose live bytes are under [`REWRITE_BELOW`] of its size is
//!   rewritten: its live blobs are put in a new pack, the catalog is
//!   pointed at it, and only then the old pack is deleted (a crash in
//!   between leaves a blob in two packs, one unreferenced: the next pass
//!   deletes it).

use super::PackId;

/// A pack with less than this share of live bytes is rewritten.
pub const REWRITE_BELOW: f64 = 0.5;

/// One pack as the catalog sees it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct PackUse {
    pub id: PackId,
    /// When it was written (the receiver's clock, Unix ms).
    pub written_ms: u64,
    pub stored_bytes: u64,
    /// Stored bytes of the blobs the catalog locates in it (the pack
    /// without its header and index).
    pub blob_bytes: u64,
    /// Stored bytes of its blobs that kept versions reference here.
    pub live_bytes: u64,
}

/// What to do.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct GcPlan {
    pub delete: Vec<PackId>,
    pub rewrite: Vec<PackId>,
    /// Packs left alone because a run in progress may need them.
    pub in_progress: usize,
    /// Bytes the deletions and rewrites free (a rewrite frees its dead bytes).
    pub freed_bytes: u64,
}

/// The plan for `packs`, with the oldest run in progress started at
/// `oldest_running_ms` (none: no run in progress).
pub fn plan(packs: &[PackUse], oldest_running_ms: Option<u64>) -> GcPlan {
    let mut out = GcPlan::default();
    for pack in packs {
        if oldest_running_ms.is_some_and(|start| pack.written_ms >= start) {
            out.in_progress += 1;
            continue;
        }
        let live = pack.live_bytes.min(pack.stored_bytes);
        if live == 0 {
            out.delete.push(pack.id);
            out.freed_bytes += pack.stored_bytes;
        } else if (live as f64) < REWRITE_BELOW * pack.blob_bytes as f64 {
            // Judged by its blobs alone: a small pack's header and index
            // would otherwise make it look mostly dead, and be rewritten
            // again and again.
            out.rewrite.push(pack.id);
            out.freed_bytes += pack.stored_bytes - live;
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    fn pack(n: u8, written_ms: u64, stored: u64, live: u64) -> PackUse {
        PackUse {
            id: PackId([n; 32]),
            written_ms,
            stored_bytes: stored,
            blob_bytes: stored,
            live_bytes: live,
        }
    }

    #[test]
    fn a_small_live_pack_is_not_rewritten_for_its_overhead() {
        // 9 live bytes of blobs in a 120-byte pack: all its blobs are live.
        let small = PackUse {
            id: PackId([5; 32]),
            written_ms: 1,
            stored_bytes: 120,
            blob_bytes: 9,
            live_bytes: 9,
        };
        let p = plan(&[small], None);
        assert!(p.rewrite.is_empty() && p.delete.is_empty(), "{p:?}");
    }

    #[test]
    fn dead_packs_go_sparse_ones_are_rewritten_live_ones_stay() {
        let packs = [
            pack(1, 100, 1000, 0),
            pack(2, 100, 1000, 499),
            pack(3, 100, 1000, 500),
            pack(4, 100, 1000, 1000),
        ];
        let p = plan(&packs, None);
        assert_eq!(p.delete, vec![PackId([1; 32])]);
        assert_eq!(p.rewrite, vec![PackId([2; 32])]);
        assert_eq!(p.freed_bytes, 1000 + 501);
        assert_eq!(p.in_progress, 0);
    }

    #[test]
    fn packs_a_run_in_progress_may_need_are_never_touched() {
        // A run started at 200: its blobs are in packs written since, which
        // no catalog row references yet (live 0) until it commits.
        let packs = [
            pack(1, 150, 1000, 0),
            pack(2, 200, 1000, 0),
            pack(3, 250, 1000, 10),
        ];
        let p = plan(&packs, Some(200));
        assert_eq!(p.delete, vec![PackId([1; 32])]);
        assert!(p.rewrite.is_empty());
        assert_eq!(p.in_progress, 2);
        // Once it has committed (none running), they are judged like any other.
        let p = plan(&packs, None);
        assert_eq!(p.delete.len(), 2);
        assert_eq!(p.rewrite, vec![PackId([3; 32])]);
    }
}
