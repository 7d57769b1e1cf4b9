//! Faults, each end to end over real QUIC on 127.0.0.1: the receiver's disk
//! filling up, `kill -9` of either side at random points, a file rewritten
//! while it is sent, a damaged catalog, the wall clock jumping back, and a
//! sender over its quota. The goal of each: nothing acknowledged is lost,
//! nothing partial or torn is stored, and the error says what happened.

mod catalog;
mod clock;
mod disk_full;
mod kill;
mod quota;
mod torn;

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::process::Command;

use anyhow::bail;
use ferry_agent::config::SenderConfig;
use ferry_agent::identity::Identity;
use ferry_agent::receiver::{Admission, Receiver};
use ferry_agent::store::Store;
use ferry_tests::tree::{self, Node};
use tokio_util::sync::CancellationToken;

use crate::util::TestSender;

const SECRET: &str = "faults tests pairing secret";

/// A deterministic pseudo-random sequence (splitmix64), so every run of a
/// test makes the same choices.
pub(crate) struct Rng(u64);

impl Rng {
    pub(crate) fn new(seed: u64) -> Rng {
        Rng(seed)
    }

    pub(crate) fn next(&mut self) -> u64 {
        self.0 = self.0.wrapping_add(0x9E37_79B9_7F4A_7C15);
        let mut z = self.0;
        z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
        z ^ (z >> 31)
    }

    /// A number in `0..n` (`n > 0`).
    pub(crate) fn below(&mut self, n: u64) -> u64 {
        self.next() % n.max(1)
    }
}

/// Every content (blake3) each path had when a run that completed
/// acknowledged it.
pub(crate) type Acknowledged =
    std::collections::BTreeMap<Vec<u8>, std::collections::BTreeSet<[u8; 32]>>;

/// Notes every file of `source` as acknowledged (a run just completed).
pub(crate) fn acknowledge(source: &Path, acked: &mut Acknowledged) -> anyhow::Result<()> {
    for (path, node) in tree::snapshot(source)? {
        if let Node::File { content_hash, .. } = node {
            acked.entry(path).or_default().insert(content_hash);
        }
    }
    Ok(())
}

/// Fails unless every acknowledged content of sender `laptop`, folder
/// `docs`, is still in the (stopped) store at `root`, current or archived,
/// byte for byte. Returns how many were checked.
pub(crate) fn assert_acknowledged_intact(
    root: &Path,
    acked: &Acknowledged,
) -> anyhow::Result<usize> {
    let store = Store::open(root)?;
    let sender = store
        .sender_by_name(&ferry_proto::Name::new("laptop")?)?
        .ok_or_else(|| anyhow::anyhow!("laptop is not registered"))?;
    let ns = store.namespace(&sender, &ferry_proto::Name::new("docs")?);
    let mut checked = 0;
    for (path, hashes) in acked {
        let versions = store.versions(&ns, &ferry_proto::RelPath::from_bytes(path.clone())?)?;
        for hash in hashes {
            let found = versions.iter().any(|v| {
                v.hash.as_ref() == Some(hash)
                    && std::fs::read(&v.location)
                        .is_ok_and(|bytes| blake3::hash(&bytes).as_bytes() == hash)
            });
            assert!(
                found,
                "an acknowledged version of {} is lost; versions: {versions:#?}",
                String::from_utf8_lossy(path)
            );
            checked += 1;
        }
    }
    Ok(checked)
}

/// A tmpfs mounted by a test, unmounted when dropped.
pub(crate) struct Tmpfs {
    dir: PathBuf,
}

impl Tmpfs {
    /// Mounts a tmpfs of `size` (`8m`) on `dir` (created if needed). `None`,
    /// with the reason printed, where this machine cannot mount.
    pub(crate) fn mount(dir: &Path, size: &str) -> anyhow::Result<Option<Tmpfs>> {
        std::fs::create_dir_all(dir)?;
        let output = Command::new("mount")
            .args(["-t", "tmpfs", "-o", &format!("size={size}"), "tmpfs"])
            .arg(dir)
            .output();
        match output {
            Ok(out) if out.status.success() => Ok(Some(Tmpfs {
                dir: dir.to_path_buf(),
            })),
            Ok(out) => {
                eprintln!(
                    "SKIPPED: cannot mount a tmpfs on {} ({}): {}",
                    dir.display(),
                    out.status,
                    String::from_utf8_lossy(&out.stderr).trim()
                );
                Ok(None)
            }
            Err(e) => {
                eprintln!("SKIPPED: cannot run mount: {e}");
                Ok(None)
            }
        }
    }

    /// Changes the size of the mounted tmpfs.
    pub(crate) fn resize(&self, size: &str) -> anyhow::Result<()> {
        let out = Command::new("mount")
            .args(["-o", &format!("remount,size={size}")])
            .arg(&self.dir)
            .output()?;
        if !out.status.success() {
            bail!(
                "remounting {} with size {size} failed: {}",
                self.dir.display(),
                String::from_utf8_lossy(&out.stderr)
            );
        }
        Ok(())
    }
}

impl Drop for Tmpfs {
    fn drop(&mut self) {
        let ok = Command::new("umount")
            .arg(&self.dir)
            .status()
            .is_ok_and(|s| s.success());
        if !ok {
            // Still busy (a failing test left something open): detach it.
            let _ = Command::new("umount").arg("-l").arg(&self.dir).status();
        }
    }
}

/// Fails unless every file in `mirror` is byte for byte the file at the
/// same path in `source`: nothing partial reached the mirror.
pub(crate) fn assert_mirror_holds_only_source_files(
    source: &Path,
    mirror: &Path,
) -> anyhow::Result<usize> {
    let source = tree::snapshot(source)?;
    let mirror = match mirror.exists() {
        true => tree::snapshot(mirror)?,
        false => Default::default(),
    };
    let mut files = 0;
    for (path, node) in &mirror {
        if let Node::File {
            content_hash, size, ..
        } = node
        {
            match source.get(path) {
                Some(Node::File {
                    content_hash: h,
                    size: s,
                    ..
                }) if h == content_hash && s == size => files += 1,
                other => bail!(
                    "{} in the mirror is not a fully sent version: mirror {node:?}, source {other:?}",
                    String::from_utf8_lossy(path)
                ),
            }
        }
    }
    Ok(files)
}

/// Fails unless the store's staging area is empty.
pub(crate) fn assert_staging_empty(store: &Path) -> anyhow::Result<()> {
    let left: Vec<_> = std::fs::read_dir(store.join(".ferry/staging"))?
        .filter_map(|e| e.ok().map(|e| e.file_name()))
        .collect();
    anyhow::ensure!(left.is_empty(), "staging files left behind: {left:?}");
    Ok(())
}

/// A receiver in this process with the options the in-process
/// [`TestReceiver`](crate::util::TestReceiver) does not take (a quota).
pub(crate) struct QuotaReceiver {
    pub(crate) addr: SocketAddr,
    pub(crate) id: ferry_agent::identity::DeviceId,
    pub(crate) store: std::sync::Arc<Store>,
    token: CancellationToken,
    task: tokio::task::JoinHandle<()>,
}

impl QuotaReceiver {
    /// Stores into `dir/store`, identity in `dir/rstate`, on `addr`.
    pub(crate) async fn start(
        dir: &Path,
        addr: SocketAddr,
        quota: Option<u64>,
    ) -> anyhow::Result<QuotaReceiver> {
        crate::util::trace();
        let identity = Identity::load_or_create(&dir.join("rstate"))?;
        let store_dir = dir.join("store");
        let store = tokio::task::spawn_blocking(move || Store::open(&store_dir)).await??;
        let admission = Admission {
            allow: vec![],
            pairing_secret: Some(SECRET.as_bytes().to_vec()),
        };
        let receiver = Receiver::bind_with(identity, store, addr, 8, admission)?.with_quota(quota);
        let token = CancellationToken::new();
        Ok(QuotaReceiver {
            addr: receiver.local_addr()?,
            id: receiver.id(),
            store: receiver.store(),
            task: tokio::spawn(receiver.serve(token.clone())),
            token,
        })
    }

    /// Stops it and waits until the store is released.
    pub(crate) async fn stop(self) -> anyhow::Result<()> {
        self.token.cancel();
        drop(self.store);
        self.task.await?;
        Ok(())
    }
}

/// Config for `sender` sending its folder "docs" once to `addr`, pairing
/// with [`SECRET`].
pub(crate) fn sender_config(sender: &TestSender, addr: SocketAddr) -> anyhow::Result<SenderConfig> {
    let secret = sender.state.with_extension("secret");
    std::fs::write(&secret, SECRET)?;
    Ok(SenderConfig {
        host: Some(addr.ip().to_string()),
        port: Some(addr.port()),
        source: Some(sender.source.clone()),
        name: Some(sender.name.clone()),
        folder: Some("docs".into()),
        state: Some(sender.state.clone()),
        once: Some(true),
        pairing_secret_file: Some(secret),
        ..Default::default()
    })
}
