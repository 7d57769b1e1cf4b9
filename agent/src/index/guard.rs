//! The mass-delete guard: a run that would delete most of what it sent
//! before (say, the source disk was not mounted and the folder looks empty)
//! stops before anything is deleted, unless the user allows it.

/// Deletions above this share of the indexed entries trip the guard.
pub const DEFAULT_MAX_DELETE_PERCENT: u8 = 50;
/// Runs deleting at most this many entries never trip it (tiny folders).
pub const MIN_DELETIONS_GUARDED: u64 = 10;

/// The guard's settings.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct DeleteGuard {
    /// The largest share of the indexed entries one run may delete, in percent.
    pub max_percent: u8,
    /// `--allow-mass-delete`: the guard never trips.
    pub allow: bool,
}

impl Default for DeleteGuard {
    fn default() -> Self {
        DeleteGuard {
            max_percent: DEFAULT_MAX_DELETE_PERCENT,
            allow: false,
        }
    }
}

/// The guard tripped: what the run would have deleted.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("this run would delete {deleting} of the {indexed} files and directories sent before (more than {max_percent}%); nothing was deleted. If the source is not mounted or was moved, fix that; if the deletions are intended, run again with --allow-mass-delete (or raise --max-delete-percent)")]
pub struct MassDelete {
    pub deleting: u64,
    pub indexed: u64,
    pub max_percent: u8,
}

impl DeleteGuard {
    /// Checks a run that would delete `deleting` of `indexed` entries.
    pub fn check(&self, deleting: u64, indexed: u64) -> Result<(), MassDelete> {
        if self.allow || deleting <= MIN_DELETIONS_GUARDED || indexed == 0 {
            return Ok(());
        }
        // deleting / indexed > max_percent / 100, in integers.
        let over = u128::from(deleting) * 100 > u128::from(indexed) * u128::from(self.max_percent);
        if over {
            return Err(MassDelete {
                deleting,
                indexed,
                max_percent: self.max_percent,
            });
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn trips_above_the_share_and_the_minimum() {
        let guard = DeleteGuard::default();
        assert!(guard.check(0, 1000).is_ok());
        assert!(guard.check(500, 1000).is_ok(), "exactly 50% is allowed");
        let err = guard.check(501, 1000).unwrap_err();
        assert_eq!(err.deleting, 501);
        assert!(err.to_string().contains("--allow-mass-delete"), "{err}");
        assert!(guard.check(1000, 1000).is_err());
    }

    #[test]
    fn tiny_folders_and_allowed_runs_pass() {
        let guard = DeleteGuard::default();
        assert!(
            guard.check(10, 10).is_ok(),
            "at most 10 deletions never trip"
        );
        assert!(guard.check(11, 11).is_err());
        let allowed = DeleteGuard {
            allow: true,
            ..guard
        };
        assert!(allowed.check(1000, 1000).is_ok());
        let strict = DeleteGuard {
            max_percent: 10,
            allow: false,
        };
        assert!(strict.check(11, 100).is_err());
        assert!(strict.check(11, 200).is_ok());
    }
}
