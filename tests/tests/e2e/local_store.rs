//! The local store as a first-class store, and commands that leave nothing
//! behind: the real `ferry` binary, a store made by `ferry send --store`, and
//! a real receiver whose store its admin reads while it runs.

use std::path::PathBuf;
use std::process::{Command, Output, Stdio};

use ferry_tests::tree;

use crate::util::{ferry_bin, send_config, TestReceiver, TestSender};

const SECRET: &str = "correct horse battery staple";

/// A scratch home: the default state directory of the commands run here.
struct Home {
    _dir: tempfile::TempDir,
    root: PathBuf,
}

impl Home {
    fn new() -> anyhow::Result<Home> {
        let dir = tempfile::tempdir()?;
        let root = dir.path().to_path_buf();
        Ok(Home { _dir: dir, root })
    }

    fn path(&self, rel: &str) -> PathBuf {
        self.root.join(rel)
    }

    /// `ferry ARGS` run in this home, with stdout sent to `stdout`.
    fn run_to(&self, args: &[&str], stdout: Stdio) -> anyhow::Result<Output> {
        Ok(Command::new(ferry_bin())
            .args(args)
            .current_dir(&self.root)
            .env("HOME", &self.root)
            .env_remove("XDG_STATE_HOME")
            .env_remove("FERRY_LOG")
            .stdin(Stdio::null())
            .stdout(stdout)
            .output()?)
    }

    fn run(&self, args: &[&str]) -> anyhow::Result<Output> {
        self.run_to(args, Stdio::piped())
    }

    /// Runs `ferry ARGS` and checks it exits 0.
    fn ok(&self, args: &[&str]) -> anyhow::Result<String> {
        let out = self.run(args)?;
        assert_eq!(
            out.status.code(),
            Some(0),
            "ferry {args:?}: {}",
            String::from_utf8_lossy(&out.stderr)
        );
        Ok(String::from_utf8(out.stdout)?)
    }

    /// The quick start: `ferry send --source src --store store --once`,
    /// with `files` written first.
    fn send_once(&self, files: &[(&str, &str)]) -> anyhow::Result<()> {
        for (path, content) in files {
            tree::write(&self.path("src"), path, *content)?;
        }
        self.ok(&["send", "--source", "src", "--store", "store", "--once"])?;
        Ok(())
    }
}

fn stderr(out: &Output) -> String {
    String::from_utf8_lossy(&out.stderr).into_owned()
}

fn json_lines(text: &str) -> anyhow::Result<Vec<serde_json::Value>> {
    text.lines().map(|l| Ok(serde_json::from_str(l)?)).collect()
}

#[test]
fn the_quick_start_store_is_read_back_by_history_versions_and_restore() -> anyhow::Result<()> {
    let home = Home::new()?;
    home.send_once(&[("a.txt", "first"), ("sub/b.txt", "bee")])?;
    home.send_once(&[("a.txt", "second edition")])?;

    // The admin's listing of every sender stays as it was.
    let all = home.ok(&["history", "--store", "store"])?;
    assert_eq!(all.lines().count(), 2, "{all}");
    assert!(all.contains("/src"), "{all}");

    // As this sender (the defaults of send): as a receiver answers.
    let runs =
        json_lines(&home.ok(&["history", "--store", "store", "--folder", "src", "--json"])?)?;
    assert_eq!(runs.len(), 2, "{runs:?}");
    assert!(runs
        .iter()
        .all(|r| r["folder"] == "src" && r["status"] == "complete"));
    let first_run = runs[1]["run"].as_u64().unwrap_or(0);

    let versions = home.ok(&["versions", "--store", "store", "a.txt"])?;
    assert_eq!(versions.lines().count(), 2, "{versions}");
    assert!(
        versions.contains("current") && versions.contains("replaced in run"),
        "{versions}"
    );

    home.ok(&["restore", "--store", "store", "--to", "latest"])?;
    assert_eq!(
        std::fs::read_to_string(home.path("latest/a.txt"))?,
        "second edition"
    );
    assert_eq!(
        std::fs::read_to_string(home.path("latest/sub/b.txt"))?,
        "bee"
    );

    let run = first_run.to_string();
    home.ok(&[
        "restore", "--store", "store", "--run", &run, "--to", "first", "a.txt",
    ])?;
    assert_eq!(std::fs::read_to_string(home.path("first/a.txt"))?, "first");
    assert!(!home.path("first/sub").exists());

    // A store that does not exist is not created by reading it.
    let out = home.run(&["versions", "--store", "nowhere", "a.txt"])?;
    assert_ne!(out.status.code(), Some(0), "{}", stderr(&out));
    assert!(!home.path("nowhere").exists());
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_receivers_store_read_by_its_admin_answers_as_the_receiver_does() -> anyhow::Result<()> {
    let dir = tempfile::tempdir()?;
    let receiver = TestReceiver::with_secret(dir.path(), SECRET).await?;
    let sender = TestSender::new(dir.path(), "laptop")?;
    let config = sender.with_secret(&receiver, SECRET)?;
    tree::write(&sender.source, "notes/todo.txt", "one")?;
    tree::write(&sender.source, "b.txt", "bee")?;
    send_config(&config).await?;
    tree::write(&sender.source, "notes/todo.txt", "two")?;
    send_config(&config).await?;

    let store = dir.path().join("store");
    let state = sender.state.display().to_string();
    let port = receiver.addr.port().to_string();
    let remote = [
        "--host",
        "127.0.0.1",
        "--port",
        &port,
        "--state",
        &state,
        "--name",
        "laptop",
        "--folder",
        "docs",
    ];
    let local = [
        "--store",
        store.to_str().unwrap_or_default(),
        "--name",
        "laptop",
        "--folder",
        "docs",
    ];
    for command in [
        vec!["history", "--json"],
        vec!["history"],
        vec!["versions", "notes/todo.txt", "--json"],
        vec!["versions", "notes/todo.txt"],
    ] {
        let owned = |extra: &[&str]| -> Vec<String> {
            command.iter().chain(extra).map(|s| s.to_string()).collect()
        };
        let (asked, read) = (owned(&remote), owned(&local));
        let (a, r) = tokio::task::spawn_blocking(move || -> anyhow::Result<(String, String)> {
            Ok((home_ok(&asked)?, home_ok(&read)?))
        })
        .await??;
        assert!(!a.is_empty());
        assert_eq!(a, r, "{command:?}");
    }

    // A restore from the store, while the receiver runs, as of the first run.
    let to = dir.path().join("restored");
    let args: Vec<String> = [
        "restore",
        "--to",
        to.to_str().unwrap_or_default(),
        "--at",
        "0s",
    ]
    .iter()
    .chain(local.iter())
    .map(|s| s.to_string())
    .collect();
    let out = tokio::task::spawn_blocking(move || Command::new(ferry_bin()).args(&args).output())
        .await??;
    assert_eq!(out.status.code(), Some(0), "{}", stderr(&out));
    assert_eq!(std::fs::read_to_string(to.join("notes/todo.txt"))?, "two");
    assert_eq!(std::fs::read_to_string(to.join("b.txt"))?, "bee");
    receiver.stop().await
}

/// `ferry ARGS` (exit 0) with the environment of the test process.
fn home_ok(args: &[String]) -> anyhow::Result<String> {
    let out = Command::new(ferry_bin())
        .args(args)
        .stdin(Stdio::null())
        .output()?;
    assert_eq!(
        out.status.code(),
        Some(0),
        "ferry {args:?}: {}",
        stderr(&out)
    );
    Ok(String::from_utf8(out.stdout)?)
}

#[test]
fn a_receiver_on_a_taken_port_creates_no_store_or_state() -> anyhow::Result<()> {
    let home = Home::new()?;
    let taken = std::net::UdpSocket::bind("127.0.0.1:0")?;
    let port = taken.local_addr()?.port().to_string();
    let out = home.run(&[
        "receive",
        "--host",
        "127.0.0.1",
        "--port",
        &port,
        "--store",
        "store",
        "--state",
        "state",
    ])?;
    assert_eq!(out.status.code(), Some(2), "{}", stderr(&out));
    assert!(stderr(&out).contains("in use"), "{}", stderr(&out));
    assert!(!home.path("store").exists(), "the store was created");
    assert!(
        !home.path("state").exists(),
        "the state directory was created"
    );
    Ok(())
}

#[test]
fn a_restore_of_a_missing_run_leaves_no_destination() -> anyhow::Result<()> {
    let home = Home::new()?;
    home.send_once(&[("a.txt", "a")])?;
    let out = home.run(&[
        "restore", "--store", "store", "--run", "999", "--to", "dest",
    ])?;
    assert_ne!(out.status.code(), Some(0), "{}", stderr(&out));
    assert!(stderr(&out).contains("run 999"), "{}", stderr(&out));
    assert!(!home.path("dest").exists(), "an empty destination was left");
    Ok(())
}

#[test]
fn versions_of_a_path_that_never_existed_exit_1() -> anyhow::Result<()> {
    let home = Home::new()?;
    home.send_once(&[("a.txt", "a")])?;
    for json in [false, true] {
        let mut args = vec!["versions", "--store", "store", "never.txt"];
        if json {
            args.push("--json");
        }
        let out = home.run(&args)?;
        assert_eq!(out.status.code(), Some(1), "{}", stderr(&out));
        assert!(
            stderr(&out).contains("no versions of never.txt"),
            "{}",
            stderr(&out)
        );
        assert!(out.stdout.is_empty());
    }
    Ok(())
}

#[test]
fn a_restore_into_a_full_directory_prints_one_line_for_the_skipped_files() -> anyhow::Result<()> {
    let home = Home::new()?;
    let files: Vec<(String, String)> = (0..40)
        .map(|i| (format!("d/f{i:02}.txt"), format!("content {i}")))
        .collect();
    let refs: Vec<(&str, &str)> = files
        .iter()
        .map(|(p, c)| (p.as_str(), c.as_str()))
        .collect();
    home.send_once(&refs)?;
    home.ok(&["restore", "--store", "store", "--to", "dest"])?;

    let out = home.run(&["restore", "--store", "store", "--to", "dest"])?;
    let err = stderr(&out);
    assert_eq!(out.status.code(), Some(0), "{err}");
    let skipped: Vec<&str> = err.lines().filter(|l| l.contains("skipped")).collect();
    assert_eq!(skipped.len(), 1, "{err}");
    assert!(skipped[0].contains("40 skipped"), "{err}");
    assert!(skipped[0].contains("--overwrite"), "{err}");

    let out = home.run(&["restore", "-v", "--store", "store", "--to", "dest"])?;
    let err = stderr(&out);
    assert_eq!(out.status.code(), Some(0), "{err}");
    let listed = err
        .lines()
        .filter(|l| l.contains("exists at the destination"))
        .count();
    assert_eq!(listed, 40, "{err}");
    Ok(())
}

#[test]
fn a_closed_stderr_ends_commands_with_their_usual_status_not_a_panic() -> anyhow::Result<()> {
    let home = Home::new()?;
    home.send_once(&[("a.txt", "a")])?;
    home.send_once(&[("a.txt", "b")])?;
    // Each of these writes its summary or message to stderr.
    let commands: [(&[&str], i32); 5] = [
        (
            &["send", "--source", "src", "--store", "store", "--once"],
            0,
        ),
        (&["restore", "--store", "store", "--to", "dest"], 0),
        (&["restore", "-v", "--store", "store", "--to", "dest"], 0),
        (&["versions", "--store", "store", "never/was.txt"], 1),
        (&["history", "--store", "store", "--run", "x"], 2),
    ];
    for (args, code) in commands {
        let (reader, writer) = std::io::pipe()?;
        drop(reader);
        let out = Command::new(ferry_bin())
            .args(args)
            .current_dir(&home.root)
            .env("HOME", &home.root)
            .env_remove("XDG_STATE_HOME")
            .env_remove("FERRY_LOG")
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::from(writer))
            .output()?;
        // A panic exits 101.
        assert_eq!(out.status.code(), Some(code), "ferry {args:?}");
    }
    Ok(())
}

/// Runs `ferry ARGS` with stdout a pipe whose reading end is already closed.
fn into_closed_pipe(home: &Home, args: &[&str]) -> anyhow::Result<Output> {
    let (reader, writer) = std::io::pipe()?;
    drop(reader);
    home.run_to(args, Stdio::from(writer))
}

#[test]
fn a_closed_stdout_ends_history_versions_and_send_quietly() -> anyhow::Result<()> {
    let home = Home::new()?;
    home.send_once(&[("a.txt", "a")])?;
    home.send_once(&[("a.txt", "b")])?;
    let commands: [&[&str]; 6] = [
        &["id"],
        &["history", "--store", "store", "--json"],
        &["history", "--store", "store", "--folder", "src", "--json"],
        &["history", "--store", "store"],
        &["versions", "--store", "store", "a.txt", "--json"],
        &[
            "send", "--source", "src", "--store", "store", "--once", "--json",
        ],
    ];
    for args in commands {
        let out = into_closed_pipe(&home, args)?;
        let err = stderr(&out);
        assert_eq!(out.status.code(), Some(0), "ferry {args:?}: {err}");
        assert!(
            !err.contains("panicked") && !err.contains("Broken pipe"),
            "ferry {args:?}: {err}"
        );
    }
    Ok(())
}
