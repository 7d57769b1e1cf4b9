//! `ferry receive --quota`: a sender over its quota is refused file by file,
//! nothing partial is stored, and other senders are unaffected.

use ferry_proto::Name;
use ferry_tests::tree;

use super::{assert_staging_empty, QuotaReceiver};
use crate::sync::pseudo_random;
use crate::util::{send_config, TestSender};

const KIB: usize = 1024;
const MIB: usize = 1024 * KIB;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_sender_over_its_quota_is_refused_file_by_file_and_others_are_unaffected(
) -> anyhow::Result<()> {
    let dir = tempfile::tempdir()?;
    let quota = 3 * MIB as u64;
    let receiver = QuotaReceiver::start(dir.path(), "127.0.0.1:0".parse()?, Some(quota)).await?;
    let laptop = TestSender::new(dir.path(), "laptop")?;
    let desktop = TestSender::new(dir.path(), "desktop")?;
    let laptop_config = super::sender_config(&laptop, receiver.addr)?;
    let desktop_config = super::sender_config(&desktop, receiver.addr)?;
    let mirror = dir.path().join("store/laptop/docs");

    // 2 MiB and a bit: fits.
    tree::write(&laptop.source, "a1.bin", pseudo_random(MIB, 1))?;
    tree::write(&laptop.source, "a2.bin", pseudo_random(MIB, 2))?;
    tree::write(&laptop.source, "small.txt", "small")?;
    let summary = send_config(&laptop_config).await?;
    assert_eq!(summary.errors, 0, "{summary:?}");
    tree::assert_same(&laptop.source, &mirror)?;

    // 512 KiB more fits; 1 MiB more would not fit even alone (3 MiB + 5 B);
    // a1 replaced by new content would keep its old version: does not fit
    // either. Whatever the order they arrive in, a3 is stored, a4 and the
    // new a1 are refused.
    tree::write(&laptop.source, "a3.bin", pseudo_random(512 * KIB, 3))?;
    tree::write(&laptop.source, "a4.bin", pseudo_random(MIB, 4))?;
    tree::write(&laptop.source, "a1.bin", pseudo_random(MIB, 11))?;
    let summary = send_config(&laptop_config).await?;
    let mut refused: Vec<&str> = summary.problems.iter().map(|p| p.path.as_str()).collect();
    refused.sort();
    assert_eq!(refused, ["a1.bin", "a4.bin"], "{summary:?}");
    assert_eq!(summary.errors, 2, "{summary:?}");
    for p in &summary.problems {
        assert!(
            p.message
                .contains("sender laptop is over its quota of 3.0 MiB on this receiver")
                && p.message
                    .contains("ask the admin to raise --quota or prune versions"),
            "{}: {}",
            p.path,
            p.message
        );
    }
    assert_eq!(std::fs::read(mirror.join("a1.bin"))?, pseudo_random(MIB, 1));
    assert!(!mirror.join("a4.bin").exists());
    assert_eq!(
        std::fs::read(mirror.join("a3.bin"))?,
        pseudo_random(512 * KIB, 3)
    );
    assert_staging_empty(&dir.path().join("store"))?;
    let laptop_id = receiver
        .store
        .sender_by_name(&Name::new("laptop")?)?
        .expect("laptop is registered")
        .id;
    let used = receiver.store.stored_bytes(laptop_id)?;
    assert_eq!(used, (2 * MIB + 512 * KIB + 5) as u64);

    // Another sender has its own quota.
    tree::write(
        &desktop.source,
        "d.bin",
        pseudo_random(2 * MIB + 512 * KIB, 5),
    )?;
    let summary = send_config(&desktop_config).await?;
    assert_eq!(summary.errors, 0, "{summary:?}");
    tree::assert_same(&desktop.source, &dir.path().join("store/desktop/docs"))?;

    // Refused again while over the quota, and nothing partial appears.
    let summary = send_config(&laptop_config).await?;
    assert_eq!(summary.errors, 2, "{summary:?}");
    let names: Vec<Vec<u8>> = tree::snapshot(&mirror)?.into_keys().collect();
    assert_eq!(names, [&b"a1.bin"[..], b"a2.bin", b"a3.bin", b"small.txt"]);
    assert_eq!(std::fs::read(mirror.join("a1.bin"))?, pseudo_random(MIB, 1));
    assert_staging_empty(&dir.path().join("store"))?;

    // The admin raises the quota: the refused files arrive, the old a1 is kept.
    let addr = receiver.addr;
    receiver.stop().await?;
    let receiver = QuotaReceiver::start(dir.path(), addr, Some(8 * MIB as u64)).await?;
    let summary = send_config(&laptop_config).await?;
    assert_eq!(summary.errors, 0, "{summary:?}");
    tree::assert_same(&laptop.source, &mirror)?;
    let used = receiver.store.stored_bytes(laptop_id)?;
    assert_eq!(used, (4 * MIB + 512 * KIB + 5) as u64);
    receiver.stop().await?;
    Ok(())
}
