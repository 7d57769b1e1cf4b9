//! History, versions, retention and restore, end to end: a real receiver and
//! real senders over QUIC on 127.0.0.1, real files, real SQLite.

use std::time::Duration;

use ferry_agent::config::SenderConfig;
use ferry_agent::reader::{AskError, Client, ConnectError, FetchError, Piece, Remote};
use ferry_agent::receiver::pruning::prune_now;
use ferry_agent::restore::{restore_from_copies, restore_remote, Destination};
use ferry_agent::sender::{RunError, SenderError};
use ferry_agent::status::SenderStatus;
use ferry_agent::store::{self, FindingKind, Retention};
use ferry_agent::summary::Progress;
use ferry_proto::{At, Name, RefuseCode, RelPath, VersionKind};
use ferry_tests::tree;

use crate::util::{send, send_config, TestReceiver, TestSender};

const SECRET: &str = "correct horse battery staple";

pub(crate) fn remote(receiver: &TestReceiver, sender: &TestSender) -> anyhow::Result<Remote> {
    Ok(Remote {
        host: receiver.addr.ip().to_string(),
        port: receiver.addr.port(),
        receiver_id: None,
        state: sender.state.clone(),
        name: Name::new(sender.name.clone())?,
        folder: Name::new("docs")?,
    })
}

fn rel(s: &str) -> anyhow::Result<RelPath> {
    Ok(RelPath::from_bytes(s)?)
}

/// A first tree: files with metadata, a subtree, a symlink.
fn first_tree(root: &std::path::Path) -> anyhow::Result<()> {
    tree::write(root, "a.txt", "alpha")?;
    tree::chmod(root, "a.txt", 0o640)?;
    tree::set_mtime(root, "a.txt", 1_600_000_000, 123_456_789)?;
    tree::write(root, "sub/one.txt", "one")?;
    tree::write(root, "sub/deep/two.bin", vec![7u8; 300_000])?;
    tree::write(root, "gone.txt", "to be deleted")?;
    std::os::unix::fs::symlink("a.txt", root.join("link"))?;
    tree::set_mtime(root, "link", 1_500_000_000, 5)?;
    Ok(())
}

/// Changes the first tree: an edit, a deletion, a new file.
fn second_tree(root: &std::path::Path) -> anyhow::Result<()> {
    tree::write(root, "a.txt", "alpha, second edition")?;
    std::fs::remove_file(root.join("gone.txt"))?;
    std::fs::remove_dir_all(root.join("sub/deep"))?;
    tree::write(root, "new.txt", "new")?;
    Ok(())
}

pub(crate) async fn restore_tree(
    remote: &Remote,
    at: At,
    under: &[RelPath],
    to: &std::path::Path,
) -> anyhow::Result<(Option<u64>, ferry_agent::restore::RestoreSummary)> {
    let mut client = Client::connect(remote).await?;
    let (run, tree) = client.tree(at, under).await?;
    let dest = std::sync::Arc::new(Destination::new(to, false)?);
    let summary = restore_remote(&client.fetcher(), tree, dest, SenderStatus::new()).await;
    client.close().await;
    Ok((run, summary))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn restore_after_modify_and_delete_gives_the_earlier_bytes_and_metadata() -> anyhow::Result<()>
{
    let dir = tempfile::tempdir()?;
    let receiver = TestReceiver::with_secret(dir.path(), SECRET).await?;
    let sender = TestSender::new(dir.path(), "laptop")?;
    let config = sender.with_secret(&receiver, SECRET)?;
    first_tree(&sender.source)?;
    let first = send_config(&config).await?;
    let snapshot1 = tree::snapshot(&sender.source)?;
    let first_ended = std::time::SystemTime::now();
    tokio::time::sleep(Duration::from_millis(30)).await;
    second_tree(&sender.source)?;
    let second = send_config(&config).await?;
    assert_ne!(first.run_id, second.run_id);

    let remote = remote(&receiver, &sender)?;
    // As of the first run.
    let to = dir.path().join("restored-run1");
    let (run, summary) =
        restore_tree(&remote, At::Run(first.run_id.unwrap_or(0)), &[], &to).await?;
    assert_eq!(run, first.run_id);
    assert!(summary.problems.is_empty(), "{summary:?}");
    assert_eq!(summary.files, 4, "{summary:?}");
    assert_eq!(summary.links, 1, "{summary:?}");
    assert_eq!(tree::snapshot(&to)?, snapshot1);

    // As of a time between the two runs: the first run's state.
    let between = first_ended
        .duration_since(std::time::UNIX_EPOCH)?
        .as_millis() as i64;
    let to = dir.path().join("restored-between");
    let (run, summary) = restore_tree(&remote, At::Time(between), &[], &to).await?;
    assert_eq!(run, first.run_id);
    assert!(summary.problems.is_empty(), "{summary:?}");
    assert_eq!(tree::snapshot(&to)?, snapshot1);

    // The latest state is the current source.
    let to = dir.path().join("restored-latest");
    restore_tree(&remote, At::Latest, &[], &to).await?;
    tree::assert_same(&sender.source, &to)?;
    receiver.stop().await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn restore_of_one_file_and_of_a_subtree_without_overwriting() -> anyhow::Result<()> {
    let dir = tempfile::tempdir()?;
    let receiver = TestReceiver::with_secret(dir.path(), SECRET).await?;
    let sender = TestSender::new(dir.path(), "laptop")?;
    let config = sender.with_secret(&receiver, SECRET)?;
    first_tree(&sender.source)?;
    send_config(&config).await?;
    let remote = remote(&receiver, &sender)?;

    let to = dir.path().join("one");
    let (_, summary) = restore_tree(&remote, At::Latest, &[rel("sub/one.txt")?], &to).await?;
    assert_eq!((summary.files, summary.dirs), (1, 0), "{summary:?}");
    assert_eq!(std::fs::read(to.join("sub/one.txt"))?, b"one");
    assert_eq!(std::fs::read_dir(&to)?.count(), 1);

    let to = dir.path().join("subtree");
    std::fs::create_dir_all(to.join("sub"))?;
    std::fs::write(to.join("sub/one.txt"), "mine, keep it")?;
    let (_, summary) = restore_tree(&remote, At::Latest, &[rel("sub")?], &to).await?;
    assert_eq!(summary.skipped, ["sub/one.txt"], "{summary:?}");
    assert_eq!(summary.files, 1, "{summary:?}");
    assert_eq!(std::fs::read(to.join("sub/one.txt"))?, b"mine, keep it");
    assert_eq!(
        std::fs::read(to.join("sub/deep/two.bin"))?,
        vec![7u8; 300_000]
    );
    assert!(!to.join("a.txt").exists());
    // No temporary file is left behind.
    let leftovers = walk_names(&to)?;
    assert!(
        leftovers.iter().all(|n| !n.contains("ferry-restore")),
        "{leftovers:?}"
    );
    receiver.stop().await
}

fn walk_names(root: &std::path::Path) -> anyhow::Result<Vec<String>> {
    Ok(tree::snapshot(root)?
        .keys()
        .map(|k| String::from_utf8_lossy(k).into_owned())
        .collect())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn versions_are_listed_and_retention_keeps_what_the_policy_says() -> anyhow::Result<()> {
    let dir = tempfile::tempdir()?;
    let receiver = TestReceiver::with_secret(dir.path(), SECRET).await?;
    let sender = TestSender::new(dir.path(), "laptop")?;
    let config = sender.with_secret(&receiver, SECRET)?;
    tree::write(&sender.source, "stable.txt", "never changes")?;
    for i in 0..4 {
        tree::write(&sender.source, "f.txt", format!("version {i}"))?;
        send_config(&config).await?;
    }
    let remote = remote(&receiver, &sender)?;
    let mut client = Client::connect(&remote).await?;
    let versions = client.versions(&rel("f.txt")?).await?;
    assert_eq!(versions.len(), 4);
    assert!(versions[0].replaced_run.is_none());
    assert!(versions[1..].iter().all(|v| v.replaced_run.is_some()));
    let runs = client.runs().await?;
    assert_eq!(runs.len(), 4);
    assert!(runs.iter().all(|r| r.status == "complete"));
    client.close().await;

    // Keep the newest two old versions.
    let policy = Retention {
        keep_versions: Some(2),
        ..Retention::default()
    };
    let store = receiver.store.clone();
    let report = tokio::task::spawn_blocking(move || prune_now(&store, &policy)).await??;
    assert_eq!(report.versions_removed, 1, "{report:?}");
    let ns_versions = |path: &str| -> anyhow::Result<Vec<Vec<u8>>> {
        let mut client_side = Vec::new();
        let sender = receiver.store.sender_by_name(&Name::new("laptop")?)?;
        let ns = receiver.store.namespace(
            &sender.ok_or_else(|| anyhow::anyhow!("no sender"))?,
            &Name::new("docs")?,
        );
        for v in receiver.store.versions(&ns, &rel(path)?)? {
            client_side.push(std::fs::read(&v.location)?);
        }
        Ok(client_side)
    };
    let kept = ns_versions("f.txt")?;
    assert_eq!(
        kept,
        [
            b"version 3".to_vec(),
            b"version 2".to_vec(),
            b"version 1".to_vec()
        ]
    );
    // Nothing else is lost: the current files, the unchanged file.
    assert_eq!(ns_versions("stable.txt")?, [b"never changes".to_vec()]);
    tree::assert_same(&sender.source, &receiver.mirror("laptop", "docs"))?;
    assert!(store::verify(&receiver.store_dir)?.findings.is_empty());
    receiver.stop().await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_second_sender_cannot_list_or_restore_the_first_senders_files() -> anyhow::Result<()> {
    let dir = tempfile::tempdir()?;
    let receiver = TestReceiver::with_secret(dir.path(), SECRET).await?;
    let alice = TestSender::new(dir.path(), "alice")?;
    tree::write(&alice.source, "secret.txt", "alice's secret")?;
    let alice_run = send_config(&alice.with_secret(&receiver, SECRET)?).await?;
    let bob = TestSender::new(dir.path(), "bob")?;
    tree::write(&bob.source, "bob.txt", "bob's")?;
    send_config(&bob.with_secret(&receiver, SECRET)?).await?;

    let mut as_alice = Client::connect(&remote(&receiver, &alice)?).await?;
    let (_, alice_tree) = as_alice.tree(At::Latest, &[]).await?;
    let secret_id = alice_tree
        .iter()
        .find(|v| v.path.as_bytes() == b"secret.txt")
        .map(|v| v.id)
        .ok_or_else(|| anyhow::anyhow!("alice's file not listed"))?;
    as_alice.close().await;

    let mut as_bob = Client::connect(&remote(&receiver, &bob)?).await?;
    let (_, bob_tree) = as_bob.tree(At::Latest, &[]).await?;
    assert!(bob_tree.iter().all(|v| v.path.as_bytes() != b"secret.txt"));
    assert!(as_bob.versions(&rel("secret.txt")?).await?.is_empty());
    assert!(as_bob
        .runs()
        .await?
        .iter()
        .all(|r| Some(r.id) != alice_run.run_id));
    // A crafted request for Alice's run is refused...
    let err = as_bob
        .tree(At::Run(alice_run.run_id.unwrap_or(0)), &[])
        .await
        .err();
    assert!(
        matches!(
            err,
            Some(AskError::Refused {
                code: RefuseCode::BadRequest,
                ..
            })
        ),
        "{err:?}"
    );
    // ... and a crafted fetch of Alice's version id gets nothing.
    let mut fetch = as_bob.fetcher().fetch(secret_id).await?;
    match fetch.next().await {
        Err(FetchError::Failed { .. }) => {}
        other => anyhow::bail!("bob fetched alice's version: {other:?}"),
    }
    as_bob.close().await;

    // Bob claiming to be Alice is refused: the device decides, not the name.
    let mut bob_as_alice = remote(&receiver, &bob)?;
    bob_as_alice.name = Name::new("alice")?;
    match Client::connect(&bob_as_alice).await {
        Err(ConnectError::Refused {
            code: RefuseCode::WrongName,
            ..
        }) => {}
        other => anyhow::bail!("expected WrongName, got {:?}", other.err()),
    }
    // A device that never paired is refused, and not paired by asking.
    let stranger = TestSender::new(dir.path(), "stranger")?;
    match Client::connect(&remote(&receiver, &stranger)?).await {
        Err(ConnectError::Refused {
            code: RefuseCode::UnknownSender,
            ..
        }) => {}
        other => anyhow::bail!("expected UnknownSender, got {:?}", other.err()),
    }
    let stranger_id = ferry_agent::identity::Identity::load_or_create(&stranger.state)?.id;
    assert!(receiver
        .store
        .sender_by_device(&stranger_id.to_string())?
        .is_none());
    receiver.stop().await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_mass_delete_guard_trips_and_allow_mass_delete_passes() -> anyhow::Result<()> {
    let dir = tempfile::tempdir()?;
    let receiver = TestReceiver::with_secret(dir.path(), SECRET).await?;
    let sender = TestSender::new(dir.path(), "laptop")?;
    let config = sender.with_secret(&receiver, SECRET)?;
    for i in 0..20 {
        tree::write(&sender.source, format!("f{i:02}.txt"), format!("{i}"))?;
    }
    send_config(&config).await?;
    // The "disk" is gone: 15 of 20 files vanish.
    for i in 0..15 {
        std::fs::remove_file(sender.source.join(format!("f{i:02}.txt")))?;
    }
    match send(config.settings()?).await {
        Err(SenderError::Run(RunError::MassDelete(e))) => {
            assert_eq!((e.deleting, e.indexed), (15, 20));
            assert!(e.to_string().contains("--allow-mass-delete"), "{e}");
        }
        other => anyhow::bail!("the guard did not trip: {other:?}"),
    }
    // Nothing was deleted on the receiver.
    let mirror = receiver.mirror("laptop", "docs");
    assert_eq!(std::fs::read_dir(&mirror)?.count(), 20);
    let allowed = SenderConfig {
        allow_mass_delete: Some(true),
        ..config.clone()
    };
    let summary = send_config(&allowed).await?;
    assert_eq!(summary.files_deleted, 15, "{summary:?}");
    assert_eq!(std::fs::read_dir(&mirror)?.count(), 5);
    receiver.stop().await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn verify_finds_a_byte_flipped_in_the_store() -> anyhow::Result<()> {
    let dir = tempfile::tempdir()?;
    let receiver = TestReceiver::with_secret(dir.path(), SECRET).await?;
    let sender = TestSender::new(dir.path(), "laptop")?;
    let config = sender.with_secret(&receiver, SECRET)?;
    first_tree(&sender.source)?;
    send_config(&config).await?;
    // Verify runs while the receiver holds the store.
    let clean = store::verify(&receiver.store_dir)?;
    assert!(clean.findings.is_empty(), "{clean:?}");
    assert_eq!(clean.files_checked, 4);
    let victim = receiver.mirror("laptop", "docs").join("sub/deep/two.bin");
    let mut bytes = std::fs::read(&victim)?;
    bytes[150_000] ^= 0x01;
    std::fs::write(&victim, bytes)?;
    let report = store::verify(&receiver.store_dir)?;
    assert_eq!(report.findings.len(), 1, "{report:?}");
    assert_eq!(report.findings[0].path, "sub/deep/two.bin");
    assert!(matches!(
        report.findings[0].kind,
        FindingKind::HashMismatch { .. }
    ));
    // A restore of that file refuses the damaged bytes.
    let to = dir.path().join("restored");
    let (_, summary) = restore_tree(
        &remote(&receiver, &sender)?,
        At::Latest,
        &[rel("sub/deep")?],
        &to,
    )
    .await?;
    assert_eq!(summary.problems.len(), 1, "{summary:?}");
    assert!(!to.join("sub/deep/two.bin").exists());
    receiver.stop().await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn restore_from_the_local_copies_needs_no_receiver() -> anyhow::Result<()> {
    let dir = tempfile::tempdir()?;
    let receiver = TestReceiver::with_secret(dir.path(), SECRET).await?;
    let sender = TestSender::new(dir.path(), "laptop")?;
    let copies = dir.path().join("copies");
    let config = SenderConfig {
        keep_copies: Some(copies.clone()),
        ..sender.with_secret(&receiver, SECRET)?
    };
    first_tree(&sender.source)?;
    let sent = send_config(&config).await?;
    assert_eq!(sent.errors, 0, "{sent:?}");
    receiver.stop().await?;
    let to = dir.path().join("from-copies");
    let dest = Destination::new(&to, false)?;
    let summary = restore_from_copies(&copies, &[], &dest, &Progress::default())?;
    assert!(summary.problems.is_empty(), "{summary:?}");
    assert_eq!(summary.files, 4, "{summary:?}");
    tree::assert_same(&sender.source, &to)?;
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_fetched_version_streams_its_exact_bytes() -> anyhow::Result<()> {
    let dir = tempfile::tempdir()?;
    let receiver = TestReceiver::with_secret(dir.path(), SECRET).await?;
    let sender = TestSender::new(dir.path(), "laptop")?;
    let config = sender.with_secret(&receiver, SECRET)?;
    let big: Vec<u8> = (0..1_000_003u32).map(|i| (i % 251) as u8).collect();
    tree::write(&sender.source, "big.bin", &big)?;
    send_config(&config).await?;
    let mut client = Client::connect(&remote(&receiver, &sender)?).await?;
    let versions = client.versions(&rel("big.bin")?).await?;
    let VersionKind::File { hash, .. } = versions[0].kind else {
        anyhow::bail!("not a file");
    };
    let mut fetch = client.fetcher().fetch(versions[0].id).await?;
    let mut got = Vec::new();
    let end = loop {
        match fetch.next().await? {
            Piece::Data(d) => {
                assert!(d.len() <= ferry_proto::MAX_DATA);
                got.extend(d);
            }
            Piece::End(h) => break h,
        }
    };
    assert_eq!(end, hash);
    assert_eq!(got, big);
    client.close().await;
    receiver.stop().await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_receiver_prunes_on_its_own_schedule() -> anyhow::Result<()> {
    let dir = tempfile::tempdir()?;
    let receiver = TestReceiver::with_secret(dir.path(), SECRET).await?;
    let sender = TestSender::new(dir.path(), "laptop")?;
    let config = sender.with_secret(&receiver, SECRET)?;
    for i in 0..3 {
        tree::write(&sender.source, "f.txt", format!("version {i}"))?;
        send_config(&config).await?;
    }
    let addr = receiver.addr;
    receiver.stop().await?;

    // Restart with a policy: it prunes at start, by itself.
    let identity = ferry_agent::identity::Identity::load_or_create(&dir.path().join("rstate"))?;
    let store_dir = dir.path().join("store");
    let opened =
        tokio::task::spawn_blocking(move || ferry_agent::store::Store::open(&store_dir)).await??;
    let policy = Retention {
        keep_versions: Some(0),
        ..Retention::default()
    };
    let server = ferry_agent::receiver::Receiver::bind_with(
        identity,
        opened,
        addr,
        8,
        ferry_agent::receiver::Admission::default(),
    )?
    .with_retention(policy, Duration::from_secs(3600));
    let store = server.store();
    let token = tokio_util::sync::CancellationToken::new();
    let task = tokio::spawn(server.serve(token.clone()));
    let sender_record = store
        .sender_by_name(&Name::new("laptop")?)?
        .ok_or_else(|| anyhow::anyhow!("sender missing"))?;
    let ns = store.namespace(&sender_record, &Name::new("docs")?);
    let mut left = usize::MAX;
    for _ in 0..100 {
        left = store.versions(&ns, &rel("f.txt")?)?.len();
        if left == 1 {
            break;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    assert_eq!(left, 1, "old versions were not pruned");
    assert_eq!(
        std::fs::read(dir.path().join("store/laptop/docs/f.txt"))?,
        b"version 2"
    );
    token.cancel();
    drop(store);
    task.await?;
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_damaged_catalog_row_is_skipped_and_reported_and_the_rest_restored() -> anyhow::Result<()>
{
    let dir = tempfile::tempdir()?;
    let receiver = TestReceiver::with_secret(dir.path(), SECRET).await?;
    let sender = TestSender::new(dir.path(), "laptop")?;
    let config = sender.with_secret(&receiver, SECRET)?;
    first_tree(&sender.source)?;
    let first = send_config(&config).await?.run_id.unwrap_or(0);
    second_tree(&sender.source)?;
    send_config(&config).await?;

    // Damage the catalog of the running receiver: a path that does not
    // decode, and an archive that points outside the store.
    let catalog = rusqlite::Connection::open(store::catalog_path(&receiver.store_dir))?;
    let changed = catalog.execute(
        "UPDATE versions SET path = CAST('../escape' AS BLOB) WHERE path = CAST('sub/one.txt' AS BLOB)",
        [],
    )?;
    assert_eq!(changed, 1);
    let changed = catalog.execute(
        "UPDATE versions SET archive = CAST('../../etc/passwd' AS BLOB) WHERE path = CAST('gone.txt' AS BLOB)",
        [],
    )?;
    assert_eq!(changed, 1);
    drop(catalog);

    let report = store::verify(&receiver.store_dir)?;
    let kinds: Vec<(&str, &FindingKind)> = report
        .findings
        .iter()
        .filter(|f| f.version.is_some())
        .map(|f| (f.path.as_str(), &f.kind))
        .collect();
    assert!(
        kinds
            .iter()
            .any(|(p, k)| *p == "../escape" && matches!(k, FindingKind::InvalidPath { .. })),
        "{report:#?}"
    );
    assert!(
        kinds
            .iter()
            .any(|(p, k)| *p == "gone.txt" && matches!(k, FindingKind::Outside { .. })),
        "{report:#?}"
    );

    // `ferry restore` as of the first run: the rest is restored, the two
    // bad rows are reported, and the exit code says so.
    let to = dir.path().join("restored");
    let args: Vec<std::ffi::OsString> = vec![
        "restore".into(),
        "--host".into(),
        receiver.addr.ip().to_string().into(),
        "--port".into(),
        receiver.addr.port().to_string().into(),
        "--name".into(),
        "laptop".into(),
        "--folder".into(),
        "docs".into(),
        "--state".into(),
        sender.state.clone().into(),
        "--to".into(),
        to.clone().into(),
        "--run".into(),
        first.to_string().into(),
        "--json".into(),
    ];
    let bin = crate::util::ferry_bin();
    let out = tokio::task::spawn_blocking(move || {
        std::process::Command::new(bin)
            .args(&args)
            .stdin(std::process::Stdio::null())
            .output()
    })
    .await??;
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(1), "{stderr}");
    let summary: serde_json::Value = serde_json::from_slice(&out.stdout)?;
    assert_eq!(summary["files"], 2, "{summary}");
    assert_eq!(summary["links"], 1, "{summary}");
    let problems = summary["problems"].as_array().cloned().unwrap_or_default();
    let mut bad: Vec<&str> = problems.iter().filter_map(|p| p["path"].as_str()).collect();
    bad.sort();
    assert_eq!(bad, ["../escape", "gone.txt"], "{summary}");
    let reasons = summary["problems"].to_string();
    assert!(reasons.contains("not beneath the store"), "{reasons}");
    assert!(reasons.contains("invalid"), "{reasons}");
    assert_eq!(std::fs::read(to.join("a.txt"))?, b"alpha");
    assert_eq!(
        std::fs::read(to.join("sub/deep/two.bin"))?,
        vec![7u8; 300_000]
    );
    assert!(!to.join("gone.txt").exists());
    assert!(!to.join("sub/one.txt").exists());
    receiver.stop().await
}
