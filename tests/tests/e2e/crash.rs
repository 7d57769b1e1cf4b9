//! Processes killed mid-run, with the real `ferry` binary: a receiver or a
//! sender `kill -9`ed while a large file is in flight, and Ctrl-C on an idle
//! periodic sender and on a receiver.

use std::path::{Path, PathBuf};
use std::process::{Child, Command, ExitStatus, Stdio};
use std::time::{Duration, Instant};

use anyhow::{bail, Context};
use ferry_agent::store::{RunRecord, Store};
use ferry_tests::tree::{self, Node};

use crate::util::{ferry_bin, free_udp_port, poll_until};

pub(crate) const SECRET: &str = "crash tests pairing secret";
/// Size of the file that is in flight when a process dies.
const LARGE: usize = 128 * 1024 * 1024;

/// A child process whose stdout and stderr go to files; killed (SIGKILL)
/// and reaped when dropped, so a failing test leaves no process behind.
pub(crate) struct Proc {
    what: String,
    child: Child,
    stdout: PathBuf,
    stderr: PathBuf,
}

impl Proc {
    pub(crate) fn spawn(
        what: &str,
        logs: &Path,
        args: &[&std::ffi::OsStr],
    ) -> anyhow::Result<Proc> {
        let stdout = logs.join(format!("{what}.out"));
        let stderr = logs.join(format!("{what}.err"));
        let child = Command::new(ferry_bin())
            .args(args)
            .env("FERRY_LOG", "info")
            .stdin(Stdio::null())
            .stdout(std::fs::File::create(&stdout)?)
            .stderr(std::fs::File::create(&stderr)?)
            .spawn()
            .with_context(|| format!("starting the {what}"))?;
        Ok(Proc {
            what: what.to_string(),
            child,
            stdout,
            stderr,
        })
    }

    pub(crate) fn stdout(&self) -> String {
        std::fs::read_to_string(&self.stdout).unwrap_or_default()
    }

    pub(crate) fn stderr(&self) -> String {
        std::fs::read_to_string(&self.stderr).unwrap_or_default()
    }

    /// Waits up to `timeout` for the process to exit.
    pub(crate) fn wait_for(&mut self, timeout: Duration) -> anyhow::Result<Option<ExitStatus>> {
        let deadline = Instant::now() + timeout;
        loop {
            if let Some(status) = self.child.try_wait()? {
                return Ok(Some(status));
            }
            if Instant::now() >= deadline {
                return Ok(None);
            }
            std::thread::sleep(Duration::from_millis(20));
        }
    }

    /// Waits for exit and fails, with the process's stderr, if it does not
    /// exit in time.
    pub(crate) fn exit_status(&mut self, timeout: Duration) -> anyhow::Result<ExitStatus> {
        match self.wait_for(timeout)? {
            Some(status) => Ok(status),
            None => bail!(
                "the {} did not exit within {timeout:?}; stderr:\n{}",
                self.what,
                self.stderr()
            ),
        }
    }

    /// SIGKILL, and reap.
    pub(crate) fn kill9(&mut self) -> anyhow::Result<()> {
        self.child.kill()?;
        self.child.wait()?;
        Ok(())
    }

    /// Sends SIGINT (what Ctrl-C sends).
    pub(crate) fn interrupt(&self) -> anyhow::Result<()> {
        let status = Command::new("kill")
            .args(["-INT", &self.child.id().to_string()])
            .status()?;
        anyhow::ensure!(status.success(), "kill -INT failed: {status}");
        Ok(())
    }
}

impl Drop for Proc {
    fn drop(&mut self) {
        if let Ok(None) = self.child.try_wait() {
            let _ = self.child.kill();
            let _ = self.child.wait();
        }
    }
}

/// Waits until the receiver `proc` listens; fails, with its stderr, if it
/// exits or does not listen within 30 s.
pub(crate) fn listening(mut proc: Proc) -> anyhow::Result<Proc> {
    let listening = poll_until(Duration::from_secs(30), || {
        proc.stderr().contains("receiver listening").then_some(())
    });
    if listening.is_none() {
        let status = proc.wait_for(Duration::ZERO)?;
        bail!(
            "the {} did not start listening (exit: {status:?}); stderr:\n{}",
            proc.what,
            proc.stderr()
        );
    }
    Ok(proc)
}

/// One receiver and one sender's directories, all under a temp dir.
pub(crate) struct Setup {
    pub(crate) dir: tempfile::TempDir,
    pub(crate) port: u16,
    pub(crate) store: PathBuf,
    pub(crate) source: PathBuf,
    pub(crate) secret: PathBuf,
}

impl Setup {
    pub(crate) fn new() -> anyhow::Result<Setup> {
        let dir = tempfile::tempdir()?;
        let secret = dir.path().join("secret");
        std::fs::write(&secret, SECRET)?;
        let source = dir.path().join("src");
        std::fs::create_dir(&source)?;
        tree::write(&source, "small.txt", "small and early")?;
        Ok(Setup {
            port: free_udp_port()?,
            store: dir.path().join("store"),
            source,
            secret,
            dir,
        })
    }

    pub(crate) fn mirror(&self) -> PathBuf {
        self.store.join("laptop/docs")
    }

    pub(crate) fn staging(&self) -> PathBuf {
        self.store.join(".ferry/staging")
    }

    /// Starts `ferry receive` on this setup's port, store and state.
    pub(crate) fn spawn_receiver(&self, what: &str) -> anyhow::Result<Proc> {
        let port = self.port.to_string();
        let d = self.dir.path();
        Proc::spawn(
            what,
            d,
            &[
                "receive".as_ref(),
                "--host".as_ref(),
                "127.0.0.1".as_ref(),
                "--port".as_ref(),
                port.as_ref(),
                "--store".as_ref(),
                self.store.as_os_str(),
                "--state".as_ref(),
                d.join("rstate").as_os_str(),
                "--pairing-secret-file".as_ref(),
                self.secret.as_os_str(),
            ],
        )
    }

    /// Starts `ferry receive` and waits until it listens.
    pub(crate) fn receiver(&self, what: &str) -> anyhow::Result<Proc> {
        listening(self.spawn_receiver(what)?)
    }

    /// Starts `ferry send` with `extra` arguments (`--once` or `--every`).
    pub(crate) fn sender(&self, what: &str, extra: &[&str]) -> anyhow::Result<Proc> {
        let port = self.port.to_string();
        let d = self.dir.path();
        let state = d.join("sstate");
        let mut args: Vec<&std::ffi::OsStr> = vec![
            "send".as_ref(),
            "--host".as_ref(),
            "127.0.0.1".as_ref(),
            "--port".as_ref(),
            port.as_ref(),
            "--source".as_ref(),
            self.source.as_os_str(),
            "--state".as_ref(),
            state.as_os_str(),
            "--pairing-secret-file".as_ref(),
            self.secret.as_os_str(),
            "--name".as_ref(),
            "laptop".as_ref(),
            "--folder".as_ref(),
            "docs".as_ref(),
            "--json".as_ref(),
        ];
        args.extend(extra.iter().map(std::ffi::OsStr::new));
        Proc::spawn(what, d, &args)
    }

    /// Runs `ferry send --once` to completion; it must succeed.
    pub(crate) fn send_once(&self, what: &str) -> anyhow::Result<()> {
        let mut sender = self.sender(what, &["--once"])?;
        let status = sender.exit_status(Duration::from_secs(60))?;
        if !status.success() {
            bail!("the {what} failed: {status}; stderr:\n{}", sender.stderr());
        }
        anyhow::ensure!(
            sender.stdout().contains("\"files_sent\""),
            "no JSON summary from the {what}: {}",
            sender.stdout()
        );
        Ok(())
    }

    /// Writes the large file into the source.
    fn add_large_file(&self) -> anyhow::Result<()> {
        let mut bytes = vec![0u8; LARGE];
        let mut hasher = blake3::Hasher::new();
        hasher.update(b"ferry crash tests large file");
        hasher.finalize_xof().fill(&mut bytes);
        tree::write(&self.source, "large.bin", bytes)
    }

    /// Waits until a staging file has some bytes in it (the large file is in
    /// flight), and returns its size.
    fn wait_for_staging(&self) -> anyhow::Result<u64> {
        poll_until(Duration::from_secs(30), || {
            std::fs::read_dir(self.staging())
                .ok()?
                .filter_map(|e| e.ok()?.metadata().ok())
                .map(|m| m.len())
                .find(|len| *len > 0)
        })
        .context("the large file never showed up in staging")
    }

    /// Fails unless every file in the mirror is exactly its source version
    /// and the large file is absent.
    fn assert_no_partial_file(&self) -> anyhow::Result<()> {
        let source = tree::snapshot(&self.source)?;
        let mirror = tree::snapshot(&self.mirror())?;
        assert!(
            !mirror.contains_key(&b"large.bin"[..]),
            "the large file is in the mirror although its transfer was cut"
        );
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
                    }) if h == content_hash && s == size => {}
                    other => bail!(
                        "{} in the mirror is not a fully sent version: mirror {node:?}, source {other:?}",
                        String::from_utf8_lossy(path)
                    ),
                }
            }
        }
        Ok(())
    }

    /// The receiver's catalog, read after the receiver has stopped; newest
    /// run first.
    pub(crate) fn runs(&self) -> anyhow::Result<Vec<RunRecord>> {
        let store = Store::open(&self.store).context("opening the stopped receiver's store")?;
        Ok(store.runs(None)?)
    }
}

fn statuses(runs: &[RunRecord]) -> Vec<&str> {
    runs.iter().rev().map(|r| r.status.as_str()).collect()
}

#[test]
fn a_receiver_killed_mid_file_leaves_no_partial_file_and_the_next_run_completes(
) -> anyhow::Result<()> {
    crate::util::trace();
    let setup = Setup::new()?;
    let mut receiver = setup.receiver("receiver")?;
    setup.send_once("pairing sender")?;
    assert_eq!(
        std::fs::read(setup.mirror().join("small.txt"))?,
        b"small and early"
    );

    setup.add_large_file()?;
    let mut sender = setup.sender("sender", &["--once"])?;
    let staged = setup.wait_for_staging()?;
    receiver.kill9()?;
    assert!(staged < LARGE as u64, "staging held the whole file already");
    setup.assert_no_partial_file()?;

    // The sender only learns that the receiver is gone when the connection
    // times out; give it a short, bounded wait, then stop it.
    match sender.wait_for(Duration::from_secs(3))? {
        Some(status) => {
            assert!(!status.success(), "the sender claimed success: {status}");
            assert!(
                sender.stderr().contains("error") || sender.stderr().contains("WARN"),
                "no error on the sender's stderr:\n{}",
                sender.stderr()
            );
        }
        None => sender.kill9()?,
    }
    assert!(
        !sender.stdout().contains("\"files_sent\""),
        "the sender printed a summary of a run that was cut: {}",
        sender.stdout()
    );
    setup.assert_no_partial_file()?;

    // Restarted on the same port, store and state: the next run completes.
    let mut receiver = setup.receiver("restarted receiver")?;
    setup.send_once("second sender")?;
    tree::assert_same(&setup.source, &setup.mirror())?;
    receiver.interrupt()?;
    let status = receiver.exit_status(Duration::from_secs(10))?;
    assert!(status.success(), "receiver exit: {status}");
    assert_eq!(std::fs::read_dir(setup.staging())?.count(), 0);

    let runs = setup.runs()?;
    let statuses = statuses(&runs);
    assert_eq!(statuses.len(), 3, "{runs:?}");
    assert_eq!(statuses[0], "complete", "{runs:?}");
    assert!(
        matches!(statuses[1], "interrupted" | "failed"),
        "the cut run is recorded as {:?}",
        statuses[1]
    );
    assert_eq!(statuses[2], "complete", "{runs:?}");
    Ok(())
}

#[test]
fn a_sender_killed_mid_file_leaves_no_partial_file_and_the_next_run_completes() -> anyhow::Result<()>
{
    crate::util::trace();
    let setup = Setup::new()?;
    let mut receiver = setup.receiver("receiver")?;
    setup.send_once("pairing sender")?;

    setup.add_large_file()?;
    let mut sender = setup.sender("sender", &["--once"])?;
    let staged = setup.wait_for_staging()?;
    sender.kill9()?;
    assert!(staged < LARGE as u64, "staging held the whole file already");
    setup.assert_no_partial_file()?;

    // The receiver keeps serving: the next run completes.
    assert_eq!(
        receiver.wait_for(Duration::ZERO)?,
        None,
        "the receiver died"
    );
    setup.send_once("second sender")?;
    tree::assert_same(&setup.source, &setup.mirror())?;
    assert_eq!(
        receiver.wait_for(Duration::ZERO)?,
        None,
        "the receiver died"
    );

    receiver.interrupt()?;
    let status = receiver.exit_status(Duration::from_secs(10))?;
    assert!(status.success(), "receiver exit: {status}");
    // The cut file's staging was discarded when its stream ended.
    assert_eq!(std::fs::read_dir(setup.staging())?.count(), 0);
    let runs = setup.runs()?;
    let statuses = statuses(&runs);
    assert_eq!(statuses.len(), 3, "{runs:?}");
    assert_eq!(statuses[0], "complete", "{runs:?}");
    assert!(
        matches!(statuses[1], "interrupted" | "failed"),
        "the killed sender's run is recorded as {:?}",
        statuses[1]
    );
    assert_eq!(statuses[2], "complete", "{runs:?}");
    Ok(())
}

#[test]
fn ctrl_c_stops_an_idle_periodic_sender_and_a_receiver_promptly() -> anyhow::Result<()> {
    crate::util::trace();
    let setup = Setup::new()?;
    let mut receiver = setup.receiver("receiver")?;
    let mut sender = setup.sender("periodic sender", &["--every", "1h"])?;
    // The first run happens at start; then the sender idles for an hour.
    let first = poll_until(Duration::from_secs(30), || {
        sender.stdout().contains("\"files_sent\"").then_some(())
    });
    anyhow::ensure!(
        first.is_some(),
        "the periodic sender never finished its first run; stderr:\n{}",
        sender.stderr()
    );
    assert_eq!(
        std::fs::read(setup.mirror().join("small.txt"))?,
        b"small and early"
    );

    sender.interrupt()?;
    let status = sender.exit_status(Duration::from_secs(10))?;
    assert!(
        status.success(),
        "periodic sender exit: {status}; stderr:\n{}",
        sender.stderr()
    );

    receiver.interrupt()?;
    let status = receiver.exit_status(Duration::from_secs(10))?;
    assert!(
        status.success(),
        "receiver exit: {status}; stderr:\n{}",
        receiver.stderr()
    );
    // The store is not left locked: it opens, and a new receiver serves it.
    let runs = setup.runs()?;
    assert_eq!(statuses(&runs), vec!["complete"], "{runs:?}");
    let mut again = setup.receiver("second receiver")?;
    again.interrupt()?;
    assert!(again.exit_status(Duration::from_secs(10))?.success());
    Ok(())
}
