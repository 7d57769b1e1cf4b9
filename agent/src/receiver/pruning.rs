//! The receiver's own pruning schedule: retention applied at start and then
//! every `every`, on the blocking pool, and interrupted transfers nobody
//! resumed within [`PARTIAL_GRACE`] removed. Nothing a sender sends reaches
//! it.

use std::sync::Arc;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use tokio_util::sync::CancellationToken;

use crate::store::{PruneReport, Retention, RetentionError, Store};

/// How long the kept part of an interrupted transfer waits for its sender
/// to come back and resume it before its staging file is removed.
pub const PARTIAL_GRACE: Duration = Duration::from_secs(24 * 3600);

/// Applies `policy` to `store` once, now (blocking).
pub fn prune_now(store: &Store, policy: &Retention) -> Result<PruneReport, RetentionError> {
    let now_ms = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| i64::try_from(d.as_millis()).unwrap_or(i64::MAX))
        .unwrap_or(0);
    store.prune(policy, now_ms)
}

/// Prunes at once and then every `every` until `shutdown`.
pub(crate) async fn run(
    store: Arc<Store>,
    policy: Retention,
    every: Duration,
    shutdown: CancellationToken,
) {
    loop {
        let s = store.clone();
        match crate::tasks::blocking(move || prune_now(&s, &policy)).await {
            Ok(Ok(report)) if report.versions_removed > 0 => tracing::info!(
                versions = report.versions_removed,
                files = report.files_removed,
                bytes = report.bytes_freed,
                "pruned old versions"
            ),
            Ok(Ok(_)) => tracing::debug!("retention: nothing to prune"),
            Ok(Err(e)) => {
                tracing::warn!("{}; retrying at the next pruning", crate::chain::Chain(&e))
            }
            // The runtime is stopping.
            Err(crate::tasks::Cancelled) => return,
        }
        let s = store.clone();
        match crate::tasks::blocking(move || s.expire_partials(PARTIAL_GRACE)).await {
            Ok(Ok(0)) => {}
            Ok(Ok(n)) => tracing::info!(
                transfers = n,
                "removed interrupted transfers no sender resumed within a day"
            ),
            Ok(Err(e)) => {
                tracing::warn!("{}; retrying at the next pruning", crate::chain::Chain(&e))
            }
            Err(crate::tasks::Cancelled) => return,
        }
        tokio::select! {
            _ = shutdown.cancelled() => return,
            _ = tokio::time::sleep(every.max(Duration::from_secs(1))) => {}
        }
    }
}
