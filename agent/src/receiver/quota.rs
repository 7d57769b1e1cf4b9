//! The per-sender quota (`ferry receive --quota`): the bytes a sender has
//! stored, current and old versions together, may not go over it.
//!
//! A run starts from what the catalog says the sender has stored
//! ([`Store::stored_bytes`](crate::store::Store::stored_bytes)); each file
//! that is about to be received reserves its declared size first, so files
//! in flight count too. A file that does not fit is refused before any byte
//! is staged. A reservation is given back if the file is not stored, and kept
//! once it is (the catalog then counts it for the next run) for the bytes
//! the file takes on disk: a sparse file's holes are given back.

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;

use ferry_proto::{FailCode, Failure, Name, RelPath};

/// One run's view of its sender's quota.
#[derive(Debug)]
pub(crate) struct QuotaBudget {
    limit: u64,
    used: AtomicU64,
    sender: Name,
}

/// Bytes reserved for one file; given back when dropped unless
/// [`kept`](Reservation::keep_as).
#[derive(Debug)]
pub(crate) struct Reservation {
    budget: Arc<QuotaBudget>,
    size: u64,
    kept: bool,
}

impl QuotaBudget {
    /// A budget of `limit` bytes of which `used` are already stored.
    pub fn new(limit: u64, used: u64, sender: Name) -> Arc<QuotaBudget> {
        Arc::new(QuotaBudget {
            limit,
            used: AtomicU64::new(used),
            sender,
        })
    }

    /// Reserves `size` bytes for `path`, or refuses it with
    /// [`FailCode::Quota`] if that would go over the limit.
    pub fn reserve(self: &Arc<Self>, path: &RelPath, size: u64) -> Result<Reservation, Failure> {
        let reserved = self
            .used
            .fetch_update(Ordering::AcqRel, Ordering::Acquire, |used| {
                used.checked_add(size).filter(|total| *total <= self.limit)
            });
        match reserved {
            Ok(_) => Ok(Reservation {
                budget: self.clone(),
                size,
                kept: false,
            }),
            Err(used) => Err(Failure {
                code: FailCode::Quota,
                message: format!(
                    "{path} ({}) was not stored: sender {} is over its quota of {} on this receiver \
                     ({} stored or in flight); ask the admin to raise --quota or prune versions",
                    human(size),
                    self.sender,
                    human(self.limit),
                    human(used)
                ),
            }),
        }
    }
}

impl Reservation {
    /// The file was stored in `stored` bytes (fewer than reserved when it
    /// has holes): those stay counted, the rest is given back.
    pub fn keep_as(mut self, stored: u64) {
        let unused = self.size.saturating_sub(stored);
        self.budget.used.fetch_sub(unused, Ordering::AcqRel);
        self.kept = true;
    }
}

impl Drop for Reservation {
    fn drop(&mut self) {
        if !self.kept {
            self.budget.used.fetch_sub(self.size, Ordering::AcqRel);
        }
    }
}

/// `1536` → `"1.5 KiB"`, `100` → `"100 B"`.
fn human(bytes: u64) -> String {
    const UNITS: [&str; 5] = ["KiB", "MiB", "GiB", "TiB", "PiB"];
    if bytes < 1024 {
        return format!("{bytes} B");
    }
    let mut value = bytes as f64 / 1024.0;
    let mut unit = 0;
    while value >= 1024.0 && unit + 1 < UNITS.len() {
        value /= 1024.0;
        unit += 1;
    }
    format!("{value:.1} {}", UNITS[unit])
}

#[cfg(test)]
#[allow(clippy::unwrap_used)] // a failing unwrap is a failing test
mod tests {
    use super::*;

    fn path(s: &str) -> RelPath {
        RelPath::from_bytes(s).unwrap()
    }

    #[test]
    fn in_flight_files_count_and_failed_ones_give_their_bytes_back() {
        let budget = QuotaBudget::new(100, 40, Name::new("lap").unwrap());
        let a = budget.reserve(&path("a"), 30).unwrap();
        // 40 stored + 30 in flight: 31 more do not fit, 30 do.
        let refused = budget.reserve(&path("b"), 31).unwrap_err();
        assert_eq!(refused.code, FailCode::Quota);
        assert!(
            refused
                .message
                .contains("sender lap is over its quota of 100 B")
                && refused.message.contains("raise --quota"),
            "{}",
            refused.message
        );
        let b = budget.reserve(&path("b"), 30).unwrap();
        assert!(budget.reserve(&path("c"), 1).is_err());
        drop(b); // not stored: its bytes come back
        a.keep_as(30); // stored: its bytes stay
        assert!(budget.reserve(&path("c"), 31).is_err());
        let c = budget.reserve(&path("c"), 30).unwrap();
        c.keep_as(30);
        assert!(budget.reserve(&path("d"), 1).is_err());
        assert!(budget.reserve(&path("empty"), 0).is_ok());
    }

    #[test]
    fn a_sparse_file_keeps_only_what_it_takes_on_disk() {
        let budget = QuotaBudget::new(100, 0, Name::new("lap").unwrap());
        // 90 declared, 10 of them stored: 80 come back.
        budget.reserve(&path("sparse"), 90).unwrap().keep_as(10);
        budget.reserve(&path("b"), 90).unwrap().keep_as(90);
        assert!(budget.reserve(&path("c"), 1).is_err());
    }

    #[test]
    fn sizes_are_readable() {
        assert_eq!(human(100), "100 B");
        assert_eq!(human(1536), "1.5 KiB");
        assert_eq!(human(100 << 30), "100.0 GiB");
    }
}
