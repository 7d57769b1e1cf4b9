//! Sparse files keep their holes: on the receiver, in the sender's local
//! copies, and in a restore; the quota counts what is stored.

use std::fs::File;
use std::os::unix::fs::{FileExt, MetadataExt};
use std::path::Path;

use ferry_agent::reader::{Client, Remote};
use ferry_agent::restore::{restore_from_copies, restore_remote, Destination};
use ferry_agent::status::SenderStatus;
use ferry_agent::summary::Progress;
use ferry_proto::{At, Name};

use crate::sync::pseudo_random;
use crate::util::{send_config, TestReceiver, TestSender};

const SECRET: &str = "sparse tests pairing secret";
const MIB: u64 = 1 << 20;
/// The sparse file's logical size.
const LOGICAL: u64 = 256 * MIB;
/// Its data: three pieces of 1 MiB (the rest is holes, the end too).
const DATA_AT: [u64; 3] = [0, 100 * MIB + 12_345, 200 * MIB];
/// What "far below the logical size" means here.
const AT_MOST: u64 = 16 * MIB;

fn make_sparse(path: &Path) -> anyhow::Result<()> {
    let file = File::create(path)?;
    file.set_len(LOGICAL)?;
    for (i, at) in DATA_AT.iter().enumerate() {
        file.write_all_at(&pseudo_random(MIB as usize, i as u64 + 7), *at)?;
    }
    Ok(())
}

/// The blake3 of a file's content, read in pieces.
fn hash(path: &Path) -> anyhow::Result<[u8; 32]> {
    let mut hasher = blake3::Hasher::new();
    hasher.update_reader(File::open(path)?)?;
    Ok(*hasher.finalize().as_bytes())
}

/// Fails unless `path` holds the same bytes as `source` and takes far less
/// than its logical size on disk.
fn assert_sparse_copy(what: &str, path: &Path, source: &Path) -> anyhow::Result<()> {
    let meta = std::fs::metadata(path)?;
    assert_eq!(meta.len(), LOGICAL, "{what}: length");
    let allocated = meta.blocks() * 512;
    assert!(
        allocated <= AT_MOST,
        "{what}: {allocated} bytes allocated for {LOGICAL} logical ({} of data)",
        3 * MIB
    );
    assert!(hash(path)? == hash(source)?, "{what}: content differs");
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_sparse_file_is_stored_and_restored_sparse_and_counted_as_stored() -> anyhow::Result<()> {
    let dir = tempfile::tempdir()?;
    let receiver = TestReceiver::with_secret(dir.path(), SECRET).await?;
    let sender = TestSender::new(dir.path(), "laptop")?;
    let copies = dir.path().join("copies");
    let config = ferry_agent::config::SenderConfig {
        keep_copies: Some(copies.clone()),
        ..sender.with_secret(&receiver, SECRET)?
    };
    let source = sender.source.join("disk.img");
    make_sparse(&source)?;
    // Small sparse files go in a bundle or a stream of their own.
    let small = sender.source.join("small.bin");
    {
        let file = File::create(&small)?;
        file.set_len(100_000)?;
        file.write_all_at(b"end", 99_000)?;
    }

    let summary = send_config(&config).await?;
    assert_eq!(summary.errors, 0, "{:?}", summary.problems);
    assert!(
        summary.bytes_on_wire < AT_MOST,
        "{} bytes on the wire",
        summary.bytes_on_wire
    );
    let mirror = receiver.mirror("laptop", "docs");
    assert_sparse_copy("stored", &mirror.join("disk.img"), &source)?;
    assert_sparse_copy("local copy", &copies.join("disk.img"), &source)?;
    assert_eq!(
        std::fs::read(mirror.join("small.bin"))?,
        std::fs::read(&small)?
    );

    // The quota counts what is stored, not the logical size.
    let record = receiver
        .store
        .sender_by_name(&Name::new("laptop")?)?
        .ok_or_else(|| anyhow::anyhow!("sender not recorded"))?;
    let stored = receiver.store.stored_bytes(record.id)?;
    assert!(
        (3 * MIB..=AT_MOST).contains(&stored),
        "{stored} bytes counted against the quota"
    );

    // A restore from the receiver keeps the holes.
    let remote = Remote {
        host: receiver.addr.ip().to_string(),
        port: receiver.addr.port(),
        receiver_id: None,
        state: sender.state.clone(),
        name: Name::new("laptop")?,
        folder: Name::new("docs")?,
    };
    let to = dir.path().join("restored");
    let mut client = Client::connect(&remote).await?;
    let (_, tree) = client.tree(At::Latest, &[]).await?;
    let dest = std::sync::Arc::new(Destination::new(&to, false)?);
    let restored = restore_remote(&client.fetcher(), tree, dest, SenderStatus::new()).await;
    client.close().await;
    assert!(restored.problems.is_empty(), "{:?}", restored.problems);
    assert_sparse_copy("restored", &to.join("disk.img"), &source)?;
    assert_eq!(std::fs::read(to.join("small.bin"))?, std::fs::read(&small)?);

    // So does a restore from the local copies.
    let to = dir.path().join("from-copies");
    let dest = Destination::new(&to, false)?;
    let summary = restore_from_copies(&copies, &[], &dest, &Progress::default())?;
    assert!(summary.problems.is_empty(), "{:?}", summary.problems);
    assert_sparse_copy("restored from copies", &to.join("disk.img"), &source)?;
    receiver.stop().await?;
    Ok(())
}
