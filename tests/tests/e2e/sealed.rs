//! Encrypted and write-only folders, end to end, as a user runs them: the
//! real `ferry` binary makes the keys, sends over real QUIC to a real
//! receiver on 127.0.0.1 and restores. The receiver keeps nothing it could
//! read: no name, no 16-byte window of any content, anywhere under its
//! store; the key restores everything exactly; without it nothing opens.

use std::path::{Path, PathBuf};

use ferry_tests::tree;

use crate::sync::pseudo_random;
use crate::util::TestReceiver;

mod cli;
mod windows;

pub(crate) use cli::{assert_ok, stderr, Cli, SECRET};
use windows::Windows;

/// A receiver in this process, and one person who uses the CLI against it.
struct Setup {
    _dir: tempfile::TempDir,
    receiver: TestReceiver,
    cli: Cli,
}

impl Setup {
    async fn new() -> anyhow::Result<Setup> {
        let dir = tempfile::tempdir()?;
        let receiver = TestReceiver::with_secret(dir.path(), SECRET).await?;
        let cli = Cli::new(dir.path(), receiver.addr)?;
        Ok(Setup {
            _dir: dir,
            receiver,
            cli,
        })
    }
}

/// A tree whose names and contents are easy to look for: every name is a
/// distinctive word, every content is pseudo-random (no run of 16 bytes
/// repeats by chance), with the metadata a restore must bring back.
pub(crate) fn write_tree(root: &Path, seed: u64) -> anyhow::Result<Vec<Vec<u8>>> {
    let mut contents = Vec::new();
    let files: [(&str, usize); 6] = [
        ("quarterly-report-zebrafish.txt", 1_234),
        ("projects/aubergine-plan/notes-marmalade.md", 20_000),
        ("projects/aubergine-plan/budget-tangerine.csv", 65_536),
        (
            "photos/holiday-kilimanjaro/img-0001-pelican.raw",
            3 * 1024 * 1024 + 17,
        ),
        ("photos/holiday-kilimanjaro/img-0002-flamingo.raw", 200_000),
        ("letters/to-grandmother-october.txt", 90),
    ];
    for (i, (path, len)) in files.iter().enumerate() {
        let bytes = pseudo_random(*len, seed * 100 + i as u64);
        tree::write(root, path, &bytes)?;
        contents.push(bytes);
    }
    tree::write(root, "letters/empty-envelope.txt", "")?;
    tree::chmod(root, "letters/to-grandmother-october.txt", 0o600)?;
    tree::chmod(root, "quarterly-report-zebrafish.txt", 0o751)?;
    tree::set_mtime(
        root,
        "quarterly-report-zebrafish.txt",
        1_500_000_000,
        987_654_321,
    )?;
    std::fs::create_dir_all(root.join("archive-catacombs/unused-labyrinth"))?;
    std::os::unix::fs::symlink(
        "../projects/aubergine-plan/secret-symlink-destination",
        root.join("letters/shortcut-periwinkle"),
    )?;
    Ok(contents)
}

/// Every name of the tree, and the symlink's target.
const NAMES: &[&str] = &[
    "quarterly-report-zebrafish",
    "aubergine-plan",
    "notes-marmalade",
    "budget-tangerine",
    "holiday-kilimanjaro",
    "pelican",
    "flamingo",
    "to-grandmother-october",
    "empty-envelope",
    "archive-catacombs",
    "unused-labyrinth",
    "shortcut-periwinkle",
    "secret-symlink-destination",
];

/// Every file under `root` (the whole store: objects, versions, staging,
/// the catalog and its journal), read whole.
pub(crate) fn every_file(root: &Path) -> anyhow::Result<Vec<(PathBuf, Vec<u8>)>> {
    let mut out = Vec::new();
    for entry in walkdir::WalkDir::new(root) {
        let entry = entry?;
        if entry.file_type().is_file() {
            out.push((entry.path().to_path_buf(), std::fs::read(entry.path())?));
        }
    }
    Ok(out)
}

/// Fails if any name in [`NAMES`], or any 16-byte window of any of
/// `contents`, appears in any file under `store` (or in a file's name).
pub(crate) fn assert_nothing_readable(store: &Path, contents: &[Vec<u8>]) -> anyhow::Result<()> {
    let readable = Windows::of(contents, NAMES);
    let files = every_file(store)?;
    assert!(files.len() > 5, "the store holds {} files", files.len());
    for (path, bytes) in &files {
        let shown = path.display().to_string();
        for name in NAMES {
            assert!(!shown.contains(name), "{name} names a stored file: {shown}");
        }
        let found = readable.find_in(bytes);
        assert!(found.is_none(), "{found:?} in {shown}");
    }
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_encrypted_folder_keeps_nothing_readable_and_its_key_restores_it_exactly(
) -> anyhow::Result<()> {
    let setup = Setup::new().await?;
    setup.cli.keys("folder.key").await?;
    let contents = write_tree(&setup.cli.src(), 1)?;
    let sealed = ["--protect", "encrypted", "--key-file", "folder.key"];
    let mut first_flags = sealed.to_vec();
    first_flags.push("--json");
    let out = setup.cli.send("docs", &first_flags).await?;
    assert_ok(&out, "first encrypted run");
    let summary: serde_json::Value = serde_json::from_slice(&out.stdout)?;
    let first_run = summary["run_id"]
        .as_u64()
        .ok_or_else(|| anyhow::anyhow!("no run id in {summary}"))?
        .to_string();

    assert_nothing_readable(&setup.receiver.store_dir, &contents)?;
    // What the receiver keeps are 0600 files at opaque paths.
    for (path, _) in every_file(&setup.receiver.mirror("laptop", "docs"))? {
        let meta = std::fs::metadata(&path)?;
        assert_eq!(
            std::os::unix::fs::PermissionsExt::mode(&meta.permissions()) & 0o7777,
            0o600
        );
    }

    let key = [
        "--key-file",
        "folder.key",
        "--passphrase-file",
        "passphrase",
    ];
    assert_ok(
        &setup.cli.restore("docs", "restored", &key).await?,
        "restore",
    );
    tree::assert_same(&setup.cli.src(), &setup.cli.path("restored"))?;

    // A second run: an edit, a deletion, a new file; the first state stays
    // restorable as of its run, the new one as the latest.
    let first = tree::snapshot(&setup.cli.src())?;
    tree::write(
        &setup.cli.src(),
        "letters/to-grandmother-october.txt",
        "rewritten",
    )?;
    std::fs::remove_file(
        setup
            .cli
            .src()
            .join("projects/aubergine-plan/budget-tangerine.csv"),
    )?;
    tree::write(
        &setup.cli.src(),
        "new-arrival-okapi.txt",
        pseudo_random(5_000, 77),
    )?;
    assert_ok(
        &setup.cli.send("docs", &sealed).await?,
        "second encrypted run",
    );
    assert_ok(
        &setup.cli.restore("docs", "latest", &key).await?,
        "restore latest",
    );
    tree::assert_same(&setup.cli.src(), &setup.cli.path("latest"))?;
    let mut at_first = key.to_vec();
    at_first.extend(["--run", first_run.as_str()]);
    assert_ok(
        &setup.cli.restore("docs", "as-of-first", &at_first).await?,
        "restore run 1",
    );
    assert_eq!(tree::snapshot(&setup.cli.path("as-of-first"))?, first);

    // The receiver's own check finds every object intact, without a key.
    let report = ferry_agent::store::verify(&setup.receiver.store_dir)?;
    assert!(report.findings.is_empty(), "{:?}", report.findings);
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn without_the_key_or_with_another_nothing_is_restored() -> anyhow::Result<()> {
    let setup = Setup::new().await?;
    setup.cli.keys("folder.key").await?;
    setup.cli.keys("other.key").await?;
    write_tree(&setup.cli.src(), 2)?;
    let sealed = ["--protect", "encrypted", "--key-file", "folder.key"];
    assert_ok(&setup.cli.send("docs", &sealed).await?, "encrypted run");

    let cases: [(&str, Vec<&str>, &str); 4] = [
        ("no key", vec![], "--key-file"),
        (
            "another key",
            vec!["--key-file", "other.key", "--passphrase-file", "passphrase"],
            "not the folder's",
        ),
        (
            "the public half",
            vec!["--key-file", "folder.key.pub"],
            "ferry key new",
        ),
        (
            "a wrong passphrase",
            vec!["--key-file", "folder.key", "--passphrase-file", "pairing"],
            "passphrase",
        ),
    ];
    for (i, (what, flags, says)) in cases.into_iter().enumerate() {
        let to = format!("attempt-{i}");
        let out = setup.cli.restore("docs", &to, &flags).await?;
        assert_ne!(out.status.code(), Some(0), "{what}: restore succeeded");
        assert!(stderr(&out).contains(says), "{what}: {}", stderr(&out));
        let written = std::fs::read_dir(setup.cli.path(&to))
            .map(|d| d.count())
            .unwrap_or(0);
        assert_eq!(written, 0, "{what}: something was written");
    }
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_write_only_sender_cannot_restore_and_the_key_restores_everything() -> anyhow::Result<()>
{
    let setup = Setup::new().await?;
    setup.cli.keys("vault.key").await?;
    let contents = write_tree(&setup.cli.src(), 3)?;
    // A write-only sender must not be given the whole key.
    let out = setup
        .cli
        .send(
            "vault",
            &["--protect", "write-only", "--key-file", "vault.key"],
        )
        .await?;
    assert_ne!(out.status.code(), Some(0));
    assert!(
        stderr(&out).contains("ferry key public"),
        "{}",
        stderr(&out)
    );

    let sealed = ["--protect", "write-only", "--key-file", "vault.key.pub"];
    assert_ok(&setup.cli.send("vault", &sealed).await?, "write-only run");
    assert_nothing_readable(&setup.receiver.store_dir, &contents)?;

    // What the sender holds cannot restore; the message says what can.
    let out = setup
        .cli
        .restore("vault", "refused", &["--key-file", "vault.key.pub"])
        .await?;
    assert_ne!(out.status.code(), Some(0));
    assert!(stderr(&out).contains("ferry key new"), "{}", stderr(&out));
    assert!(
        !setup.cli.path("refused").exists()
            || std::fs::read_dir(setup.cli.path("refused"))?.count() == 0
    );

    let key = ["--key-file", "vault.key", "--passphrase-file", "passphrase"];
    assert_ok(
        &setup.cli.restore("vault", "restored", &key).await?,
        "restore with the key",
    );
    tree::assert_same(&setup.cli.src(), &setup.cli.path("restored"))?;
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_folder_keeps_the_protection_and_key_it_was_first_sent_with() -> anyhow::Result<()> {
    let setup = Setup::new().await?;
    setup.cli.keys("folder.key").await?;
    setup.cli.keys("other.key").await?;
    write_tree(&setup.cli.src(), 4)?;
    let sealed = ["--protect", "encrypted", "--key-file", "folder.key"];
    assert_ok(&setup.cli.send("docs", &sealed).await?, "encrypted run");
    let objects = tree::snapshot(&setup.receiver.mirror("laptop", "docs"))?;

    tree::write(&setup.cli.src(), "plaintext-would-leak.txt", "plaintext")?;
    for (what, flags) in [
        ("plain", vec![]),
        (
            "another key",
            vec!["--protect", "encrypted", "--key-file", "other.key"],
        ),
        (
            "write-only",
            vec!["--protect", "write-only", "--key-file", "folder.key.pub"],
        ),
    ] {
        let out = setup.cli.send("docs", &flags).await?;
        assert_ne!(out.status.code(), Some(0), "{what} was accepted");
        assert!(stderr(&out).contains("docs"), "{what}: {}", stderr(&out));
        assert_eq!(
            tree::snapshot(&setup.receiver.mirror("laptop", "docs"))?,
            objects,
            "{what} changed the folder"
        );
    }
    // And a plain folder stays plain.
    assert_ok(&setup.cli.send("plain", &[]).await?, "plain run");
    let out = setup.cli.send("plain", &sealed).await?;
    assert_ne!(
        out.status.code(),
        Some(0),
        "a plain folder turned encrypted"
    );
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_tampered_object_fails_alone_and_the_rest_is_restored() -> anyhow::Result<()> {
    let setup = Setup::new().await?;
    setup.cli.keys("folder.key").await?;
    write_tree(&setup.cli.src(), 5)?;
    let sealed = ["--protect", "encrypted", "--key-file", "folder.key"];
    assert_ok(&setup.cli.send("docs", &sealed).await?, "encrypted run");

    // Flip one byte in the middle of the largest object (the 3 MiB file).
    let mirror = setup.receiver.mirror("laptop", "docs");
    let (victim, mut bytes) = every_file(&mirror)?
        .into_iter()
        .max_by_key(|(_, b)| b.len())
        .ok_or_else(|| anyhow::anyhow!("no object"))?;
    let middle = bytes.len() / 2;
    bytes[middle] ^= 0x40;
    std::fs::write(&victim, &bytes)?;

    let key = [
        "--key-file",
        "folder.key",
        "--passphrase-file",
        "passphrase",
    ];
    let out = setup.cli.restore("docs", "restored", &key).await?;
    assert_eq!(out.status.code(), Some(1), "{}", stderr(&out));
    let big = "photos/holiday-kilimanjaro/img-0001-pelican.raw";
    let expected = tree::snapshot(&setup.cli.src())?
        .into_iter()
        .filter(|(path, _)| path.as_slice() != big.as_bytes())
        .collect::<std::collections::BTreeMap<_, _>>();
    let restored = tree::snapshot(&setup.cli.path("restored"))?;
    assert_eq!(restored, expected, "{}", stderr(&out));
    Ok(())
}

/// Writes `rel` under `root` with `len` pseudo-random bytes, `mode` and an
/// mtime of `secs` since the epoch.
fn write_file(root: &Path, rel: &str, len: usize, mode: u32, secs: u64) -> anyhow::Result<()> {
    use std::os::unix::fs::PermissionsExt;
    tree::write(root, rel, pseudo_random(len, secs))?;
    let path = root.join(rel);
    std::fs::set_permissions(&path, std::fs::Permissions::from_mode(mode))?;
    let t = std::time::UNIX_EPOCH + std::time::Duration::from_secs(secs);
    std::fs::File::options()
        .write(true)
        .open(&path)?
        .set_modified(t)?;
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn versions_of_an_encrypted_file_show_its_real_sizes_times_and_modes() -> anyhow::Result<()> {
    let setup = Setup::new().await?;
    setup.cli.keys("folder.key").await?;
    let sealed = ["--protect", "encrypted", "--key-file", "folder.key"];
    write_file(&setup.cli.src(), "notes/a.txt", 5, 0o640, 1_700_000_000)?;
    assert_ok(&setup.cli.send("docs", &sealed).await?, "first run");
    write_file(&setup.cli.src(), "notes/a.txt", 3_000, 0o600, 1_750_000_000)?;
    assert_ok(&setup.cli.send("docs", &sealed).await?, "second run");

    let versions = |extra: &[&str]| {
        let mut args: Vec<String> = vec!["versions".into(), "notes/a.txt".into()];
        args.extend(setup.cli.remote("docs"));
        args.extend(extra.iter().map(|s| s.to_string()));
        args
    };
    let key = [
        "--key-file",
        "folder.key",
        "--passphrase-file",
        "passphrase",
    ];
    let args = versions(&[key.as_slice(), &["--json"]].concat());
    let args: Vec<&str> = args.iter().map(String::as_str).collect();
    let json = setup.cli.ok(&args).await?;
    let seen: Vec<serde_json::Value> = json
        .lines()
        .map(serde_json::from_str)
        .collect::<Result<_, _>>()?;
    let figures: Vec<(u64, &str, &str, &str)> = seen
        .iter()
        .map(|v| {
            (
                v["size"].as_u64().unwrap_or(u64::MAX),
                v["mode"].as_str().unwrap_or(""),
                v["mtime"].as_str().unwrap_or(""),
                v["kind"].as_str().unwrap_or(""),
            )
        })
        .collect();
    // Newest first: the header's figures, not the padded object's.
    assert_eq!(
        figures,
        [
            (3_000, "600", "2025-06-15T15:06:40Z", "file"),
            (5, "640", "2023-11-14T22:13:20Z", "file"),
        ],
        "{json}"
    );
    assert!(seen[0]["replaced_run"].is_null() && !seen[1]["replaced_run"].is_null());

    let args = versions(&key);
    let args: Vec<&str> = args.iter().map(String::as_str).collect();
    let text = setup.cli.ok(&args).await?;
    let lines: Vec<&str> = text.lines().collect();
    assert_eq!(lines.len(), 2, "{text}");
    let size = ferry_agent::summary::human_bytes;
    assert!(
        lines[0].contains(&size(3_000)) && lines[0].contains("mode 600"),
        "{text}"
    );
    assert!(
        lines[1].contains(&format!(" {}", size(5))) && lines[1].contains("mode 640"),
        "{text}"
    );
    assert!(
        !text.contains("sealed") && !text.contains("padded"),
        "{text}"
    );

    // Without the key file, or with its public half: no opaque figures, an
    // error that names --key-file.
    for (what, extra) in [
        ("no key", vec![]),
        ("the public half", vec!["--key-file", "folder.key.pub"]),
    ] {
        let args = versions(&extra);
        let args: Vec<&str> = args.iter().map(String::as_str).collect();
        let out = setup.cli.run(&args).await?;
        assert_ne!(out.status.code(), Some(0), "{what}");
        assert!(
            out.stdout.is_empty(),
            "{what}: {}",
            String::from_utf8_lossy(&out.stdout)
        );
        assert!(
            stderr(&out).contains("--key-file"),
            "{what}: {}",
            stderr(&out)
        );
    }

    // `ls --json` of the folder shows the real size too, and no hash.
    let mut args: Vec<String> = vec!["ls".into(), "notes".into(), "--json".into()];
    args.extend(setup.cli.remote("docs"));
    args.extend(key.iter().map(|s| s.to_string()));
    let args: Vec<&str> = args.iter().map(String::as_str).collect();
    let listed: serde_json::Value = serde_json::from_str(setup.cli.ok(&args).await?.trim())?;
    assert_eq!(listed["path"], "notes/a.txt");
    assert_eq!(listed["size"], 3_000);
    assert_eq!(listed["mode"], "600");
    assert!(listed.get("hash").is_none(), "{listed}");
    Ok(())
}
