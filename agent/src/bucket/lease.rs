//! One writer per prefix: the lease object `PREFIX/ferry/lock`.
//!
//! A receiver takes the lease before it writes anything under the prefix
//! and renews it every third of [`LEASE_TTL`] while it runs. The object
//! says who holds it (the receiver's device id, its host and process id), a
//! token of this process, and when it expires. Every write of it is
//! conditional, so two receivers racing cannot both win:
//!
//! - no lease object: create it only if none exists (`If-None-Match: *`);
//! - a lease that expired, or one held by this same receiver on this same
//!   host (a restart after a crash): replace it only if it is still the
//!   version read (`If-Match: <e-tag>`);
//! - renewing: replace it only if it is still the version this process
//!   wrote; otherwise the lease was taken over and this receiver must stop
//!   writing ([`LeaseError::Lost`]).
//!
//! After each write the object is read back and its token compared, so a
//! store that ignores conditional headers still cannot hand the lease to two
//! receivers at the same time without one of them noticing.

use std::time::{Duration, SystemTime, UNIX_EPOCH};

use object_store::{ObjectStoreExt, PutMode, PutOptions, PutPayload, UpdateVersion};
use serde::{Deserialize, Serialize};

use super::Bucket;

/// How long a lease lasts unless renewed.
pub const LEASE_TTL: Duration = Duration::from_secs(60);

/// A lease with less than this left is not given back but left to end.
const RELEASE_MARGIN: Duration = Duration::from_secs(10);

/// Who holds a lease.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Holder {
    /// The receiver's device id.
    pub receiver: String,
    pub host: String,
    pub pid: u32,
}

#[derive(Debug, Clone, Serialize, Deserialize)]
struct LeaseBody {
    holder: Holder,
    token: String,
    expires_unix_ms: u64,
}

/// The lease could not be taken, renewed or given back.
#[derive(Debug, thiserror::Error)]
pub enum LeaseError {
    #[error(
        "another receiver writes to {bucket}: {} on {} (pid {}), its lease \
         ends in {} s unless renewed; stop it first, or give this receiver \
         another prefix", holder.receiver, holder.host, holder.pid, expires_in.as_secs()
    )]
    Held {
        bucket: String,
        holder: Holder,
        expires_in: Duration,
    },
    #[error("another receiver took over the lease on {bucket}: this receiver stops writing there")]
    Lost { bucket: String },
    #[error("{bucket} has a lock object that is not a Ferry lease ({key})")]
    Unreadable {
        bucket: String,
        key: String,
        #[source]
        source: serde_json::Error,
    },
    #[error("could not {action} the lease on {bucket}")]
    Store {
        bucket: String,
        action: &'static str,
        #[source]
        source: object_store::Error,
    },
}

/// A lease this process holds.
#[derive(Debug)]
pub struct Lease {
    bucket: Bucket,
    body: LeaseBody,
    version: UpdateVersion,
}

fn unix_ms(t: SystemTime) -> u64 {
    t.duration_since(UNIX_EPOCH)
        .map(|d| d.as_millis() as u64)
        .unwrap_or(0)
}

fn token() -> String {
    use ring::rand::SecureRandom;
    let mut bytes = [0u8; 16];
    // A token only has to differ between processes: if the system's random
    // source failed, the time and process id still make it differ.
    if ring::rand::SystemRandom::new().fill(&mut bytes).is_err() {
        let seed = format!("{:?} {}", SystemTime::now(), std::process::id());
        bytes.copy_from_slice(&blake3::hash(seed.as_bytes()).as_bytes()[..16]);
    }
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

/// What is in the lease object now: its body and version, or `None`.
async fn read(bucket: &Bucket) -> Result<Option<(LeaseBody, UpdateVersion)>, LeaseError> {
    let key = bucket.key(&["lock"]);
    let got = match bucket.store().get(&key).await {
        Ok(got) => got,
        Err(object_store::Error::NotFound { .. }) => return Ok(None),
        Err(source) => {
            return Err(LeaseError::Store {
                bucket: bucket.name().into(),
                action: "read",
                source,
            })
        }
    };
    let version = UpdateVersion {
        e_tag: got.meta.e_tag.clone(),
        version: got.meta.version.clone(),
    };
    let bytes = got.bytes().await.map_err(|source| LeaseError::Store {
        bucket: bucket.name().into(),
        action: "read",
        source,
    })?;
    let body = serde_json::from_slice(&bytes).map_err(|source| LeaseError::Unreadable {
        bucket: bucket.name().into(),
        key: key.to_string(),
        source,
    })?;
    Ok(Some((body, version)))
}

enum Written {
    Ours(UpdateVersion),
    /// The condition failed, or the object read back is someone else's.
    Lost,
}

async fn write(bucket: &Bucket, body: &LeaseBody, mode: PutMode) -> Result<Written, LeaseError> {
    let key = bucket.key(&["lock"]);
    // serde_json of plain strings and numbers cannot fail.
    let payload = serde_json::to_vec_pretty(body).unwrap_or_default();
    let opts = PutOptions {
        mode,
        ..PutOptions::default()
    };
    match bucket
        .store()
        .put_opts(&key, PutPayload::from(payload), opts)
        .await
    {
        Ok(_) => {}
        Err(object_store::Error::AlreadyExists { .. })
        | Err(object_store::Error::Precondition { .. }) => return Ok(Written::Lost),
        Err(source) => {
            return Err(LeaseError::Store {
                bucket: bucket.name().into(),
                action: "write",
                source,
            })
        }
    }
    match read(bucket).await? {
        Some((now, version)) if now.token == body.token => Ok(Written::Ours(version)),
        _ => Ok(Written::Lost),
    }
}

impl Lease {
    /// Takes the lease on `bucket` for `holder`, at `now`.
    pub async fn acquire(
        bucket: &Bucket,
        holder: Holder,
        now: SystemTime,
    ) -> Result<Lease, LeaseError> {
        let body = LeaseBody {
            holder,
            token: token(),
            expires_unix_ms: unix_ms(now + LEASE_TTL),
        };
        let current = read(bucket).await?;
        let mode = match &current {
            None => PutMode::Create,
            Some((held, version)) => {
                let expired = held.expires_unix_ms <= unix_ms(now);
                let same = held.holder.receiver == body.holder.receiver
                    && held.holder.host == body.holder.host;
                if !expired && !same {
                    return Err(held_error(bucket, held, now));
                }
                PutMode::Update(version.clone())
            }
        };
        match write(bucket, &body, mode).await? {
            Written::Ours(version) => Ok(Lease {
                bucket: bucket.clone(),
                body,
                version,
            }),
            Written::Lost => match read(bucket).await? {
                Some((held, _)) => Err(held_error(bucket, &held, now)),
                None => Err(LeaseError::Lost {
                    bucket: bucket.name().into(),
                }),
            },
        }
    }

    /// Extends the lease to `now + LEASE_TTL`; [`LeaseError::Lost`] if
    /// another receiver took it over meanwhile.
    pub async fn renew(&mut self, now: SystemTime) -> Result<(), LeaseError> {
        let mut body = self.body.clone();
        body.expires_unix_ms = unix_ms(now + LEASE_TTL);
        match write(&self.bucket, &body, PutMode::Update(self.version.clone())).await? {
            Written::Ours(version) => {
                self.body = body;
                self.version = version;
                Ok(())
            }
            Written::Lost => Err(LeaseError::Lost {
                bucket: self.bucket.name().into(),
            }),
        }
    }

    /// When the lease ends unless renewed.
    pub fn expires(&self) -> SystemTime {
        UNIX_EPOCH + Duration::from_millis(self.body.expires_unix_ms)
    }

    /// Gives the lease back at `now` (deletes the object if it is still ours). A
    /// lease about to end is left to end instead: S3 has no conditional
    /// delete, and another receiver may take an ended lease between the
    /// read and the delete, whose lease the delete would then remove.
    pub async fn release(self, now: SystemTime) -> Result<(), LeaseError> {
        if now + RELEASE_MARGIN >= self.expires() {
            return Ok(());
        }
        match read(&self.bucket).await? {
            Some((held, _)) if held.token == self.body.token => {}
            _ => return Ok(()),
        }
        let key = self.bucket.key(&["lock"]);
        match self.bucket.store().delete(&key).await {
            Ok(()) | Err(object_store::Error::NotFound { .. }) => Ok(()),
            Err(source) => Err(LeaseError::Store {
                bucket: self.bucket.name().into(),
                action: "give back",
                source,
            }),
        }
    }
}

fn held_error(bucket: &Bucket, held: &LeaseBody, now: SystemTime) -> LeaseError {
    LeaseError::Held {
        bucket: bucket.name().into(),
        holder: held.holder.clone(),
        expires_in: Duration::from_millis(held.expires_unix_ms.saturating_sub(unix_ms(now))),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::bucket::memory_bucket;

    fn holder(receiver: &str, host: &str) -> Holder {
        Holder {
            receiver: receiver.into(),
            host: host.into(),
            pid: 42,
        }
    }

    #[tokio::test]
    async fn a_second_receiver_is_refused_until_the_lease_expires() {
        let bucket = memory_bucket();
        let t0 = SystemTime::UNIX_EPOCH + Duration::from_secs(1_000_000);
        let mut first = Lease::acquire(&bucket, holder("AAAA", "nas"), t0)
            .await
            .unwrap();
        let err = Lease::acquire(
            &bucket,
            holder("BBBB", "other"),
            t0 + Duration::from_secs(5),
        )
        .await
        .unwrap_err();
        match &err {
            LeaseError::Held {
                holder, expires_in, ..
            } => {
                assert_eq!(holder.receiver, "AAAA");
                assert_eq!(*expires_in, LEASE_TTL - Duration::from_secs(5));
            }
            other => panic!("{other}"),
        }
        assert!(err.to_string().contains("AAAA on nas"), "{err}");

        // Renewed in time, it stays held.
        first.renew(t0 + Duration::from_secs(50)).await.unwrap();
        assert!(matches!(
            Lease::acquire(
                &bucket,
                holder("BBBB", "other"),
                t0 + Duration::from_secs(70)
            )
            .await,
            Err(LeaseError::Held { .. })
        ));
        // Not renewed, it expires and the other receiver takes it over; the
        // first one learns it lost it at its next renewal.
        let after = first.expires() + Duration::from_secs(1);
        let second = Lease::acquire(&bucket, holder("BBBB", "other"), after)
            .await
            .unwrap();
        assert!(matches!(
            first.renew(after).await,
            Err(LeaseError::Lost { .. })
        ));
        // Giving back a lost lease leaves the new holder's in place.
        first.release(after).await.unwrap();
        assert!(matches!(
            Lease::acquire(&bucket, holder("CCCC", "third"), after).await,
            Err(LeaseError::Held { .. })
        ));
        second.release(after).await.unwrap();
        Lease::acquire(&bucket, holder("CCCC", "third"), after)
            .await
            .unwrap();
    }

    #[tokio::test]
    async fn the_same_receiver_on_the_same_host_takes_its_lease_back_after_a_crash() {
        let bucket = memory_bucket();
        let t0 = SystemTime::UNIX_EPOCH + Duration::from_secs(1_000_000);
        let crashed = Lease::acquire(&bucket, holder("AAAA", "nas"), t0)
            .await
            .unwrap();
        drop(crashed);
        let mut again = Lease::acquire(&bucket, holder("AAAA", "nas"), t0 + Duration::from_secs(1))
            .await
            .unwrap();
        again.renew(t0 + Duration::from_secs(2)).await.unwrap();
        // The same receiver id on another host is another installation.
        assert!(matches!(
            Lease::acquire(
                &bucket,
                holder("AAAA", "laptop"),
                t0 + Duration::from_secs(3)
            )
            .await,
            Err(LeaseError::Held { .. })
        ));
    }

    #[tokio::test]
    async fn a_lock_object_that_is_not_a_lease_is_named() {
        let bucket = memory_bucket();
        bucket
            .store()
            .put(&bucket.key(&["lock"]), PutPayload::from_static(b"not json"))
            .await
            .unwrap();
        let err = Lease::acquire(&bucket, holder("AAAA", "nas"), SystemTime::now())
            .await
            .unwrap_err();
        assert!(matches!(err, LeaseError::Unreadable { .. }), "{err}");
    }

    #[tokio::test]
    async fn a_lease_about_to_end_is_left_to_end_not_deleted() {
        let bucket = memory_bucket();
        let t0 = SystemTime::UNIX_EPOCH + Duration::from_secs(2_000_000);
        let lease = Lease::acquire(&bucket, holder("AAAA", "nas"), t0)
            .await
            .unwrap();
        let late = lease.expires() - Duration::from_secs(5);
        lease.release(late).await.unwrap();
        // Still there until it ends: another receiver waits for it.
        assert!(matches!(
            Lease::acquire(&bucket, holder("BBBB", "other"), late).await,
            Err(LeaseError::Held { .. })
        ));
    }
}
