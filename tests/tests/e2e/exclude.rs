//! Exclusion rules end to end: a real receiver, the real `ferry` binary or
//! the sender library over QUIC on 127.0.0.1, real files.

use std::collections::BTreeSet;
use std::path::Path;
use std::process::{Command, Output, Stdio};

use ferry_agent::config::SenderConfig;
use ferry_agent::scan::CACHEDIR_SIGNATURE;
use ferry_proto::{At, Name, RelPath};
use ferry_tests::tree;

use crate::restore::{remote, restore_tree};
use crate::util::{ferry_bin, send_config, TestReceiver, TestSender};

const SECRET: &str = "correct horse battery staple";

/// Every path below `root` (files, directories, symlinks), relative.
fn listing(root: &Path) -> anyhow::Result<BTreeSet<String>> {
    let snapshot = tree::snapshot(root)?;
    Ok(snapshot
        .keys()
        .map(|k| String::from_utf8_lossy(k).into_owned())
        .collect())
}

fn set(paths: &[&str]) -> BTreeSet<String> {
    paths.iter().map(|p| p.to_string()).collect()
}

/// `ferry send` once from `sender` to `receiver` with `extra` flags.
async fn ferry_send(
    receiver: &TestReceiver,
    sender: &TestSender,
    extra: &[&str],
) -> anyhow::Result<Output> {
    let secret = sender.state.with_extension("secret");
    std::fs::write(&secret, SECRET)?;
    let mut args: Vec<String> = [
        "send",
        "--host",
        "127.0.0.1",
        "--name",
        &sender.name,
        "--folder",
        "docs",
    ]
    .iter()
    .map(|s| s.to_string())
    .collect();
    args.push("--port".into());
    args.push(receiver.addr.port().to_string());
    for (flag, path) in [
        ("--source", &sender.source),
        ("--state", &sender.state),
        ("--pairing-secret-file", &secret),
    ] {
        args.push(flag.into());
        args.push(path.display().to_string());
    }
    args.extend(extra.iter().map(|s| s.to_string()));
    let bin = ferry_bin();
    Ok(tokio::task::spawn_blocking(move || {
        Command::new(bin)
            .args(&args)
            .env_remove("FERRY_LOG")
            .stdin(Stdio::null())
            .output()
    })
    .await??)
}

fn ok(out: &Output) {
    assert_eq!(
        out.status.code(),
        Some(0),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn each_pattern_source_and_its_precedence() -> anyhow::Result<()> {
    let dir = tempfile::tempdir()?;
    let receiver = TestReceiver::with_secret(dir.path(), SECRET).await?;
    let sender = TestSender::new(dir.path(), "laptop")?;
    let src = &sender.source;
    for f in [
        "a.log",
        "a.iso",
        "notes.txt",
        "keep.iso",
        "app/node_modules/pkg/index.js",
        "app/main.js",
        "app/debug.log",
        "app/x.tmp",
        "app/vendor/lib.tmp",
        "app/vendor/keep.tmp",
        "app/vendor/trace.log",
        "docs/build/out.html",
        "build/out.o",
    ] {
        tree::write(src, f, f)?;
    }
    // The root file; `app`'s re-includes logs below it; `vendor`'s wins over
    // both for its own files.
    tree::write(src, ".ferryignore", "*.tmp\n/build/\n")?;
    tree::write(src, "app/.ferryignore", "!*.log\nnode_modules/\n")?;
    tree::write(src, "app/vendor/.ferryignore", "!keep.tmp\n*.log\n")?;
    let rules = dir.path().join("rules.txt");
    std::fs::write(&rules, "# big images\n*.iso\n")?;
    let rules = rules.display().to_string();
    let out = ferry_send(
        &receiver,
        &sender,
        &[
            "--exclude-file",
            &rules,
            "--exclude",
            "*.log",
            "--exclude",
            "!keep.iso",
        ],
    )
    .await?;
    ok(&out);
    let expected = set(&[
        ".ferryignore",
        "app",
        "app/.ferryignore",
        "app/debug.log",
        "app/main.js",
        "app/vendor",
        "app/vendor/.ferryignore",
        "app/vendor/keep.tmp",
        "docs",
        "docs/build",
        "docs/build/out.html",
        "keep.iso",
        "notes.txt",
    ]);
    assert_eq!(listing(&receiver.mirror("laptop", "docs"))?, expected);
    receiver.stop().await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn cache_and_marked_directories_are_not_sent() -> anyhow::Result<()> {
    let dir = tempfile::tempdir()?;
    let receiver = TestReceiver::with_secret(dir.path(), SECRET).await?;
    let sender = TestSender::new(dir.path(), "laptop")?;
    let src = &sender.source;
    tree::write(src, "doc.txt", "doc")?;
    tree::write(src, ".cache/thumbs/a.png", "png")?;
    let mut tag = CACHEDIR_SIGNATURE.to_vec();
    tag.extend_from_slice(b"\n# This file is a cache directory tag.\n");
    tree::write(src, ".cache/CACHEDIR.TAG", tag)?;
    tree::write(src, "not-a-cache/CACHEDIR.TAG", "no signature here")?;
    tree::write(src, "scratch/.nobackup", "")?;
    tree::write(src, "scratch/big.bin", "big")?;
    let config = SenderConfig {
        exclude_caches: Some(true),
        exclude_if_present: vec![".nobackup".into()],
        ..sender.with_secret(&receiver, SECRET)?
    };
    let summary = send_config(&config).await?;
    assert_eq!(summary.errors, 0, "{summary:?}");
    assert_eq!(
        listing(&receiver.mirror("laptop", "docs"))?,
        set(&["doc.txt", "not-a-cache", "not-a-cache/CACHEDIR.TAG"])
    );
    receiver.stop().await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_path_excluded_after_it_was_sent_is_archived_not_destroyed() -> anyhow::Result<()> {
    let dir = tempfile::tempdir()?;
    let receiver = TestReceiver::with_secret(dir.path(), SECRET).await?;
    let sender = TestSender::new(dir.path(), "laptop")?;
    let src = &sender.source;
    for i in 0..20 {
        tree::write(src, format!("keep/{i}.txt"), format!("keep {i}"))?;
    }
    tree::write(src, "trace.log", "the log as first sent")?;
    tree::write(src, "build/out.o", "object code")?;
    let config = sender.with_secret(&receiver, SECRET)?;
    let first = send_config(&config).await?;
    assert_eq!(first.errors, 0, "{first:?}");
    let mirror = receiver.mirror("laptop", "docs");
    assert!(mirror.join("trace.log").exists());

    // Now excluded: the files are still in the source, but leave the mirror
    // as deletions do (counted as such).
    let excluding = SenderConfig {
        exclude: vec!["*.log".into(), "build/".into()],
        ..config.clone()
    };
    let second = send_config(&excluding).await?;
    assert_eq!(second.errors, 0, "{second:?}");
    assert_eq!(second.files_deleted, 3, "{second:?}");
    assert!(!mirror.join("trace.log").exists() && !mirror.join("build").exists());
    assert!(
        src.join("trace.log").exists(),
        "the source is never touched"
    );

    // The catalog keeps the file as an old version, its bytes in the
    // versions area.
    let store = &receiver.store;
    let who = store
        .sender_by_name(&Name::new("laptop")?)?
        .ok_or_else(|| anyhow::anyhow!("no sender"))?;
    let ns = store.namespace(&who, &Name::new("docs")?);
    let versions = store.versions(&ns, &RelPath::from_bytes("trace.log")?)?;
    assert_eq!(versions.len(), 1, "{versions:?}");
    assert_eq!(versions[0].replaced_run, second.run_id);
    assert!(versions[0]
        .location
        .starts_with(receiver.store_dir.join(".ferry/versions")));
    assert_eq!(
        std::fs::read(&versions[0].location)?,
        b"the log as first sent"
    );

    // A restore of the first run still gives it.
    let remote = remote(&receiver, &sender)?;
    let to = dir.path().join("restored");
    restore_tree(&remote, At::Run(first.run_id.unwrap_or(0)), &[], &to).await?;
    assert_eq!(
        std::fs::read(to.join("trace.log"))?,
        b"the log as first sent"
    );
    assert_eq!(std::fs::read(to.join("build/out.o"))?, b"object code");

    // Excluding most of what was sent trips the mass-delete guard.
    let most = SenderConfig {
        exclude: vec!["keep/".into()],
        ..config
    };
    let err = send_config(&most).await.unwrap_err();
    assert!(
        format!("{err:#}").contains("--allow-mass-delete"),
        "{err:#}"
    );
    assert!(mirror.join("keep/0.txt").exists());
    receiver.stop().await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn one_file_system_does_not_cross_into_a_mounted_filesystem() -> anyhow::Result<()> {
    let dir = tempfile::tempdir()?;
    let receiver = TestReceiver::with_secret(dir.path(), SECRET).await?;
    let sender = TestSender::new(dir.path(), "laptop")?;
    let src = &sender.source;
    tree::write(src, "home.txt", "home")?;
    std::fs::create_dir(src.join("mnt"))?;
    // We run as root: a tmpfs mounted inside the source is another
    // filesystem (another st_dev).
    let mounted = Command::new("mount")
        .args(["-t", "tmpfs", "-o", "size=1m", "ferry-e2e"])
        .arg(src.join("mnt"))
        .status()?;
    assert!(
        mounted.success(),
        "mount of a tmpfs failed (the tests run as root)"
    );
    struct Unmount(std::path::PathBuf);
    impl Drop for Unmount {
        fn drop(&mut self) {
            let _ = Command::new("umount").arg(&self.0).status();
        }
    }
    let _unmount = Unmount(src.join("mnt"));
    tree::write(src, "mnt/elsewhere.txt", "elsewhere")?;
    let out = ferry_send(&receiver, &sender, &["--one-file-system"]).await?;
    ok(&out);
    assert_eq!(
        listing(&receiver.mirror("laptop", "docs"))?,
        set(&["home.txt", "mnt"])
    );
    receiver.stop().await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_config_file_gives_the_same_rules() -> anyhow::Result<()> {
    let dir = tempfile::tempdir()?;
    let receiver = TestReceiver::with_secret(dir.path(), SECRET).await?;
    let sender = TestSender::new(dir.path(), "laptop")?;
    let src = &sender.source;
    for f in [
        "a.txt",
        "a.bak",
        "b.iso",
        "keep.iso",
        "tmp/x",
        "scratch/.nobackup",
    ] {
        tree::write(src, f, f)?;
    }
    // exclude-file is taken from the config file's directory.
    let etc = dir.path().join("etc");
    tree::write(&etc, "rules.txt", "*.iso\n")?;
    tree::write(
        &etc,
        "sender.toml",
        "exclude = [\"*.bak\", \"tmp/\"]\nexclude-file = \"rules.txt\"\n\
         exclude-if-present = [\".nobackup\"]\n",
    )?;
    let config = etc.join("sender.toml").display().to_string();
    // A flag's pattern comes after the file's and wins.
    let out = ferry_send(
        &receiver,
        &sender,
        &["-c", &config, "--exclude", "!keep.iso"],
    )
    .await?;
    ok(&out);
    assert_eq!(
        listing(&receiver.mirror("laptop", "docs"))?,
        set(&["a.txt", "keep.iso"])
    );
    receiver.stop().await
}
