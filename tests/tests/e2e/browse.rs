//! Browsing a folder one directory at a time: `ferry ls` and
//! `Client::list` against a real receiver over QUIC on 127.0.0.1, and the
//! same against a store made by `ferry send --store`.

use std::path::Path;
use std::process::{Command, Output, Stdio};

use ferry_agent::reader::{Client, Piece};
use ferry_proto::{At, RelPath, VersionKind};
use ferry_tests::tree;

use crate::restore::remote;
use crate::util::{ferry_bin, send_config, TestReceiver, TestSender};

const SECRET: &str = "correct horse battery staple";

/// Run 1: files with metadata, a subtree, a symlink, a file to delete.
fn first_tree(root: &Path) -> anyhow::Result<()> {
    tree::write(root, "a.txt", "alpha")?;
    tree::chmod(root, "a.txt", 0o640)?;
    tree::set_mtime(root, "a.txt", 1_600_000_000, 123_456_789)?;
    tree::write(root, "sub/one.txt", "one")?;
    tree::write(root, "sub/deep/two.bin", vec![7u8; 3000])?;
    tree::write(root, "gone.txt", "to be deleted")?;
    std::os::unix::fs::symlink("a.txt", root.join("link"))?;
    Ok(())
}

/// Run 2: `a.txt` replaced by a longer file, `gone.txt` deleted, a new file.
fn second_tree(root: &Path) -> anyhow::Result<()> {
    tree::write(root, "a.txt", "alpha, second edition")?;
    std::fs::remove_file(root.join("gone.txt"))?;
    tree::write(root, "new.txt", "new")?;
    Ok(())
}

fn ferry(args: &[String], home: &Path) -> anyhow::Result<Output> {
    Ok(Command::new(ferry_bin())
        .args(args)
        .current_dir(home)
        .env("HOME", home)
        .env_remove("XDG_STATE_HOME")
        .env_remove("FERRY_LOG")
        .stdin(Stdio::null())
        .output()?)
}

/// `ferry ls BASE.. EXTRA.. --json`, which must exit 0: one object a line.
fn ls_json(base: &[String], extra: &[&str], home: &Path) -> anyhow::Result<Vec<serde_json::Value>> {
    let mut args: Vec<String> = vec!["ls".into()];
    args.extend(base.iter().cloned());
    args.extend(extra.iter().map(|s| s.to_string()));
    args.push("--json".into());
    let out = ferry(&args, home)?;
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(0), "ferry {args:?}: {stderr}");
    let text = String::from_utf8(out.stdout)?;
    text.lines().map(|l| Ok(serde_json::from_str(l)?)).collect()
}

fn names(entries: &[serde_json::Value]) -> Vec<String> {
    entries
        .iter()
        .map(|e| {
            format!(
                "{} {}",
                e["name"].as_str().unwrap_or("?"),
                e["kind"].as_str().unwrap_or("?")
            )
        })
        .collect()
}

fn find<'a>(entries: &'a [serde_json::Value], name: &str) -> &'a serde_json::Value {
    entries
        .iter()
        .find(|e| e["name"] == name)
        .unwrap_or(&serde_json::Value::Null)
}

/// What both the receiver and the local store must answer, given the
/// `ferry ls` arguments that name the source and the first run's id.
fn check_listings(base: &[String], run1: u64, home: &Path) -> anyhow::Result<()> {
    let run1 = run1.to_string();
    let old = ls_json(base, &["--run", &run1], home)?;
    assert_eq!(
        names(&old),
        ["a.txt file", "gone.txt file", "link symlink", "sub dir"],
        "{old:?}"
    );
    let a = find(&old, "a.txt");
    assert_eq!(a["size"], 5, "{a}");
    assert_eq!(a["mode"], "640", "{a}");
    assert_eq!(a["mtime_ns"], 1_600_000_000_123_456_789i64, "{a}");
    assert_eq!(a["run"].as_u64().map(|r| r.to_string()), Some(run1.clone()));
    assert_eq!(find(&old, "link")["target"], "a.txt");

    let latest = ls_json(base, &[], home)?;
    assert_eq!(
        names(&latest),
        ["a.txt file", "link symlink", "new.txt file", "sub dir"],
        "{latest:?}"
    );
    assert_eq!(find(&latest, "a.txt")["size"], 21);
    assert_ne!(find(&latest, "a.txt")["version"], a["version"]);

    let sub = ls_json(base, &["--run", &run1, "sub"], home)?;
    assert_eq!(names(&sub), ["deep dir", "one.txt file"], "{sub:?}");
    assert_eq!(find(&sub, "one.txt")["path"], "sub/one.txt");
    let deep = ls_json(base, &["sub/deep/"], home)?;
    assert_eq!(names(&deep), ["two.bin file"], "{deep:?}");
    assert_eq!(find(&deep, "two.bin")["size"], 3000);
    // A file is listed as itself, as `ls` does.
    let file = ls_json(base, &["--run", &run1, "gone.txt"], home)?;
    assert_eq!(names(&file), ["gone.txt file"], "{file:?}");

    // Text output: one line per entry, directories marked.
    let mut args: Vec<String> = vec!["ls".into()];
    args.extend(base.iter().cloned());
    let out = ferry(&args, home)?;
    let text = String::from_utf8(out.stdout)?;
    assert_eq!(text.lines().count(), 4, "{text}");
    assert!(text.contains(" sub/"), "{text}");
    assert!(text.contains("link -> a.txt"), "{text}");

    // Nothing there: exit 1 and a plain reason.
    args.push("gone.txt".into());
    let out = ferry(&args, home)?;
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(1), "{stderr}");
    assert!(stderr.contains("nothing at gone.txt"), "{stderr}");
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn ls_and_client_list_browse_a_receiver_as_of_each_run() -> anyhow::Result<()> {
    let dir = tempfile::tempdir()?;
    let receiver = TestReceiver::with_secret(dir.path(), SECRET).await?;
    let sender = TestSender::new(dir.path(), "laptop")?;
    let config = sender.with_secret(&receiver, SECRET)?;
    first_tree(&sender.source)?;
    let run1 = send_config(&config).await?.run_id.unwrap_or(0);
    second_tree(&sender.source)?;
    send_config(&config).await?;

    // The library call the launcher uses.
    let mut client = Client::connect(&remote(&receiver, &sender)?).await?;
    let root = client.list(At::Run(run1), None).await?;
    let a = root
        .iter()
        .find(|e| e.name() == b"a.txt")
        .ok_or_else(|| anyhow::anyhow!("no a.txt in {root:?}"))?;
    assert_eq!(
        a.kind,
        VersionKind::File {
            size: 5,
            hash: *blake3::hash(b"alpha").as_bytes()
        }
    );
    assert_eq!(a.run, Some(run1));
    let versions = client.versions(&RelPath::from_bytes("a.txt")?).await?;
    assert_eq!(versions.len(), 2);
    assert_eq!(Some(versions[1].id), a.version);
    let mut fetch = client.fetcher().fetch(a.version.unwrap_or(0)).await?;
    let mut bytes = Vec::new();
    while let Piece::Data(data) = fetch.next().await? {
        bytes.extend(data);
    }
    assert_eq!(bytes, b"alpha");
    let sub = client
        .listing(At::Latest, Some(&RelPath::from_bytes("sub")?))
        .await?;
    assert_eq!(sub.run, None);
    assert_eq!(sub.entries.len(), 2);
    client.close().await;

    // The command line, over QUIC.
    let base: Vec<String> = vec![
        "--host".into(),
        receiver.addr.ip().to_string(),
        "--port".into(),
        receiver.addr.port().to_string(),
        "--name".into(),
        "laptop".into(),
        "--folder".into(),
        "docs".into(),
        "--state".into(),
        sender.state.display().to_string(),
    ];
    let home = dir.path().to_path_buf();
    tokio::task::spawn_blocking(move || check_listings(&base, run1, &home)).await??;
    receiver.stop().await
}

#[test]
fn ls_browses_a_local_store_as_of_each_run() -> anyhow::Result<()> {
    let dir = tempfile::tempdir()?;
    let home = dir.path();
    let src = home.join("src");
    std::fs::create_dir_all(&src)?;
    let send: Vec<String> = ["send", "--source", "src", "--store", "store", "--once"]
        .map(String::from)
        .to_vec();
    first_tree(&src)?;
    let out = ferry(&send, home)?;
    assert_eq!(
        out.status.code(),
        Some(0),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    second_tree(&src)?;
    let out = ferry(&send, home)?;
    assert_eq!(
        out.status.code(),
        Some(0),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let history: Vec<String> = ["history", "--store", "store", "--folder", "src", "--json"]
        .map(String::from)
        .to_vec();
    let out = ferry(&history, home)?;
    let runs: Vec<serde_json::Value> = String::from_utf8(out.stdout)?
        .lines()
        .map(serde_json::from_str)
        .collect::<Result<_, _>>()?;
    assert_eq!(runs.len(), 2, "{runs:?}");
    let run1 = runs[1]["run"].as_u64().unwrap_or(0);
    check_listings(&["--store".into(), "store".into()], run1, home)
}
