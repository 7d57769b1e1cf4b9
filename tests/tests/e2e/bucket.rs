//! The bucket layer against a real S3 server (`s3s-fs` on 127.0.0.1,
//! started by the test): the lease that keeps a second receiver out, the
//! catalog's copies and a recovery from them, and packs read back by range.
//! Ferry's own client (`BucketSpec::open`: credentials, path-style,
//! retries) talks to it, as a receiver would.

use std::process::Command;
use std::time::{Duration, SystemTime};

use ferry_agent::bucket::{
    list_packs, put_pack, read_blob, recover, upload_catalog, Bucket, BucketSpec, Holder, Lease,
    LeaseError, PackWriter,
};
use ferry_agent::store::catalog_path;
use ferry_tests::s3::{S3Server, S3Target, SeaweedCluster};
use ferry_tests::tree;

use crate::util::ferry_bin;

fn bucket(server: &S3Server, prefix: &str) -> anyhow::Result<Bucket> {
    let mut spec = BucketSpec::parse(&format!("s3://{}/{prefix}", server.bucket()))?;
    spec.endpoint = Some(server.endpoint());
    spec.access_key_id = Some(server.access_key().into());
    spec.secret_access_key = Some(server.secret_key().into());
    Ok(spec.open()?)
}

fn holder(receiver: &str, host: &str) -> Holder {
    Holder {
        receiver: receiver.into(),
        host: host.into(),
        pid: std::process::id(),
    }
}

/// Two receivers on one prefix: the second is refused while the first
/// holds and renews the lease, and gets it once the first gives it back; a
/// receiver under another prefix of the same bucket is not affected.
#[tokio::test]
async fn a_second_receiver_on_one_prefix_is_refused_by_the_lease() -> anyhow::Result<()> {
    let server = S3Server::start()?;
    let b = bucket(&server, "office")?;
    let now = SystemTime::now();
    let mut first = Lease::acquire(&b, holder("AAAA", "nas"), now).await?;
    let refused = Lease::acquire(&b, holder("BBBB", "backup-2"), now).await;
    match &refused {
        Err(LeaseError::Held { holder, .. }) => assert_eq!(holder.receiver, "AAAA"),
        other => panic!("the second receiver was not refused: {other:?}"),
    }
    first.renew(now + Duration::from_secs(20)).await?;
    let elsewhere = bucket(&server, "home")?;
    Lease::acquire(&elsewhere, holder("BBBB", "backup-2"), now)
        .await?
        .release(now)
        .await?;
    first.release(now).await?;
    Lease::acquire(&b, holder("BBBB", "backup-2"), now).await?;
    Ok(())
}

/// A real store's catalog (made by `ferry send --store`) copied to the
/// bucket and recovered into an empty state directory reads the same
/// history and versions as the original.
#[tokio::test]
async fn a_catalog_recovered_from_the_bucket_reads_the_same_history() -> anyhow::Result<()> {
    let server = S3Server::start()?;
    let b = bucket(&server, "rx")?;
    let dir = tempfile::tempdir()?;
    let (src, store, state) = (
        dir.path().join("src"),
        dir.path().join("store"),
        dir.path().join("state"),
    );
    tree::write(&src, "a.txt", b"one")?;
    tree::write(&src, "d/b.bin", [7u8; 70_000])?;
    let send = |args: &[&str]| -> anyhow::Result<()> {
        let out = Command::new(ferry_bin())
            .args(["send", "--once", "-q", "--source"])
            .arg(&src)
            .arg("--store")
            .arg(&store)
            .arg("--state")
            .arg(&state)
            .args(args)
            .output()?;
        anyhow::ensure!(
            out.status.success(),
            "{}",
            String::from_utf8_lossy(&out.stderr)
        );
        Ok(())
    };
    send(&[])?;
    std::fs::write(src.join("a.txt"), b"two")?;
    send(&[])?;
    let up = upload_catalog(&b, &catalog_path(&store), SystemTime::now()).await?;
    assert!(up.stored_bytes > 0);

    let fresh = dir.path().join("recovered");
    let got = recover(&b, &catalog_path(&fresh)).await?;
    assert_eq!(got.key, up.key);
    let read = |root: &std::path::Path, what: &str| -> anyhow::Result<String> {
        let out = Command::new(ferry_bin())
            .args([what, "--store"])
            .arg(root)
            .output()?;
        anyhow::ensure!(
            out.status.success(),
            "{}",
            String::from_utf8_lossy(&out.stderr)
        );
        Ok(String::from_utf8(out.stdout)?)
    };
    let history = read(&store, "history")?;
    assert!(history.lines().count() >= 2, "{history}");
    assert_eq!(read(&fresh, "history")?, history);
    Ok(())
}

/// Packs put through Ferry's client come back blob by blob from their
/// ranges, and are listed.
#[tokio::test]
async fn packs_round_trip_through_a_real_s3_server() -> anyhow::Result<()> {
    let server = S3Server::start()?;
    let b = bucket(&server, "")?;
    let mut w = PackWriter::new();
    let blobs: Vec<Vec<u8>> = (0..300u32)
        .map(|i| (0..(1000 + i * 37)).map(|j| (j * 31 + i) as u8).collect())
        .collect();
    for blob in &blobs {
        w.push(*blake3::hash(blob).as_bytes(), blob);
    }
    let (id, bytes, entries) = w.finish();
    put_pack(&b, &id, bytes).await?;
    for i in [0, 1, 150, 299] {
        assert_eq!(read_blob(&b, &id, &entries[i]).await?, blobs[i]);
    }
    let listed = list_packs(&b).await?;
    assert_eq!(listed.len(), 1);
    assert_eq!(listed[0].id, id);
    Ok(())
}

/// Eight receivers racing for one prefix of a distributed store (SeaweedFS,
/// whose conditional writes are atomic): exactly one gets the lease.
#[tokio::test]
async fn racing_receivers_on_seaweedfs_leave_exactly_one_holder() -> anyhow::Result<()> {
    let Some(cluster) = SeaweedCluster::start()? else {
        return Ok(());
    };
    let mut spec = BucketSpec::parse(&format!("s3://{}/race", cluster.bucket()))?;
    spec.endpoint = Some(cluster.endpoint());
    spec.access_key_id = Some(cluster.access_key().into());
    spec.secret_access_key = Some(cluster.secret_key().into());
    let now = SystemTime::now();
    let tries = (0..8).map(|i| {
        let b = spec.open();
        async move {
            let b = b?;
            anyhow::Ok(Lease::acquire(&b, holder(&format!("R{i}"), &format!("host{i}")), now).await)
        }
    });
    let results = futures_util::future::join_all(tries).await;
    let mut won = 0;
    for r in results {
        match r? {
            Ok(_) => won += 1,
            Err(LeaseError::Held { .. }) | Err(LeaseError::Lost { .. }) => {}
            Err(other) => return Err(other.into()),
        }
    }
    assert_eq!(won, 1, "exactly one receiver holds the lease");
    Ok(())
}
