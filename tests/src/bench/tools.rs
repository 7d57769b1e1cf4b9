//! The programs compared: Ferry (receiver + `ferry send --once`), the rsync
//! daemon and client, rsync over ssh (sshd on a high port), and `cp -r`.
//! Each measured run starts a fresh server process and stops it afterwards,
//! so the server's CPU and peak RSS belong to that run alone.

use std::ffi::OsStr;
use std::os::unix::fs::MetadataExt;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::Duration;

use anyhow::{bail, Context};

use super::process::{self, drop_caches, Server};
use super::report::Sample;

const READY_TIMEOUT: Duration = Duration::from_secs(20);

/// Runs `program args` untimed and returns its stdout; fails with stderr.
pub fn output(program: impl AsRef<OsStr>, args: &[&OsStr]) -> anyhow::Result<String> {
    let program = program.as_ref();
    let out = Command::new(program)
        .args(args)
        .stdin(Stdio::null())
        .output()
        .with_context(|| format!("running {}", program.to_string_lossy()))?;
    if !out.status.success() {
        bail!(
            "{} failed ({}): {}",
            program.to_string_lossy(),
            out.status,
            String::from_utf8_lossy(&out.stderr)
        );
    }
    Ok(String::from_utf8_lossy(&out.stdout).into_owned())
}

/// Removes a directory tree if it exists.
pub fn remove_tree(path: &Path) -> anyhow::Result<()> {
    match std::fs::remove_dir_all(path) {
        Ok(()) => Ok(()),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(()),
        Err(e) => Err(e).with_context(|| format!("removing {}", path.display())),
    }
}

/// Whether this process runs as root (the owner of `/proc/self`).
pub fn is_root() -> bool {
    std::fs::metadata("/proc/self")
        .map(|m| m.uid() == 0)
        .unwrap_or(false)
}

/// Ferry's receiver and senders, one sender identity per data set.
pub struct Ferry {
    bin: PathBuf,
    dir: PathBuf,
    sender_ids: Vec<String>,
}

impl Ferry {
    /// Prepares `dir` with a receiver identity and one sender identity per
    /// name in `sets`.
    pub fn setup(bin: &Path, dir: &Path, sets: &[&str]) -> anyhow::Result<Ferry> {
        std::fs::create_dir_all(dir)?;
        let mut sender_ids = Vec::new();
        for set in sets {
            let state = dir.join(set).join("sstate");
            let id = output(bin, &["id".as_ref(), "--state".as_ref(), state.as_os_str()])?;
            sender_ids.push(id.trim().to_string());
        }
        Ok(Ferry {
            bin: bin.to_path_buf(),
            dir: dir.to_path_buf(),
            sender_ids,
        })
    }

    /// The `ferry` binary.
    pub fn bin(&self) -> &Path {
        &self.bin
    }

    /// The store (receiver's or embedded) of data set `set`.
    pub fn store(&self, set: &str) -> PathBuf {
        self.dir.join(set).join("store")
    }

    /// The sender state directory of data set `set`.
    pub fn sender_state(&self, set: &str) -> PathBuf {
        self.dir.join(set).join("sstate")
    }

    /// Where the receiver mirrors data set `set`.
    pub fn mirror(&self, set: &str) -> PathBuf {
        self.store(set).join("bench").join(set)
    }

    /// Forgets everything sent of `set`: an empty store and a sender state
    /// with only its identity (no index, no pinned receiver).
    pub fn reset(&self, set: &str) -> anyhow::Result<()> {
        remove_tree(&self.store(set))?;
        let state = self.sender_state(set);
        for entry in
            std::fs::read_dir(&state).with_context(|| format!("reading {}", state.display()))?
        {
            let entry = entry?;
            if entry.file_name() == "identity" {
                continue;
            }
            if entry.file_type()?.is_dir() {
                remove_tree(&entry.path())?;
            } else {
                std::fs::remove_file(entry.path())
                    .with_context(|| format!("removing {}", entry.path().display()))?;
            }
        }
        Ok(())
    }

    /// One measured run: a fresh receiver on the store of `set`, caches
    /// dropped, `ferry send --once --json` of `source`, receiver stopped.
    pub fn run(&self, set: &str, source: &Path, scratch: &Path) -> anyhow::Result<Sample> {
        self.run_with(set, source, &[], scratch)
    }

    /// Starts a receiver on the store of `set` (admitting every sender
    /// identity of this harness) and waits until it listens; returns it
    /// and its UDP port.
    pub fn start_receiver(&self, set: &str, scratch: &Path) -> anyhow::Result<(Server, u16)> {
        let port = process::free_udp_port()?;
        let port_s = port.to_string();
        let store = self.store(set);
        let rstate = self.dir.join("rstate");
        let mut args: Vec<&OsStr> = vec![
            "receive".as_ref(),
            "--host".as_ref(),
            "127.0.0.1".as_ref(),
            "--port".as_ref(),
            port_s.as_ref(),
            "--store".as_ref(),
            store.as_os_str(),
            "--state".as_ref(),
            rstate.as_os_str(),
        ];
        for id in &self.sender_ids {
            args.push("--allow".as_ref());
            args.push(id.as_ref());
        }
        let mut receiver = Server::spawn(
            "ferry receive",
            &self.bin,
            &args,
            &scratch.join("ferry-receive.time"),
            &scratch.join("ferry-receive.log"),
        )?;
        receiver.wait_ready(READY_TIMEOUT, |_| process::udp_bound(port))?;
        Ok((receiver, port))
    }

    /// [`Ferry::run`] with `extra` arguments for `ferry send`.
    pub fn run_with(
        &self,
        set: &str,
        source: &Path,
        extra: &[&OsStr],
        scratch: &Path,
    ) -> anyhow::Result<Sample> {
        let (receiver, port) = self.start_receiver(set, scratch)?;
        let port_s = port.to_string();
        drop_caches();
        let state = self.sender_state(set);
        let mut args: Vec<&OsStr> = vec![
            "send".as_ref(),
            "--host".as_ref(),
            "127.0.0.1".as_ref(),
            "--port".as_ref(),
            port_s.as_ref(),
            "--source".as_ref(),
            source.as_os_str(),
            "--state".as_ref(),
            state.as_os_str(),
            "--name".as_ref(),
            "bench".as_ref(),
            "--folder".as_ref(),
            set.as_ref(),
            "--once".as_ref(),
            "--json".as_ref(),
        ];
        args.extend_from_slice(extra);
        let done = process::run_timed(&self.bin, &args, &scratch.join("ferry-send.time"))?;
        let server = receiver.stop()?;
        let summary = send_summary(set, &done)?;
        Ok(Sample {
            wall_s: done.wall_s,
            wire_total: summary["bytes_on_wire"].as_u64(),
            sent: None,
            received: None,
            client: Some(done.usage),
            server: Some(server),
        })
    }
}

/// The JSON summary of a finished `ferry send --once --json` of `set`;
/// fails unless it exited 0 with no error.
pub fn send_summary(set: &str, done: &process::Finished) -> anyhow::Result<serde_json::Value> {
    if !done.status.success() {
        bail!(
            "ferry send of {set} failed ({}): {}",
            done.status,
            done.stderr.trim()
        );
    }
    let summary: serde_json::Value = done
        .stdout
        .lines()
        .rev()
        .find_map(|l| serde_json::from_str(l).ok())
        .with_context(|| format!("no JSON summary from ferry send: {:?}", done.stdout))?;
    if summary["errors"].as_u64() != Some(0) {
        bail!("ferry send of {set} reported errors: {summary}");
    }
    Ok(summary)
}

/// Parses `rsync --stats`: (total bytes sent, total bytes received).
pub fn parse_rsync_stats(stdout: &str) -> anyhow::Result<(u64, u64)> {
    let number = |label: &str| -> anyhow::Result<u64> {
        let line = stdout
            .lines()
            .find_map(|l| l.trim().strip_prefix(label))
            .with_context(|| format!("no {label:?} in rsync --stats output"))?;
        let digits: String = line
            .split_whitespace()
            .next()
            .unwrap_or("")
            .chars()
            .filter(char::is_ascii_digit)
            .collect();
        digits
            .parse()
            .with_context(|| format!("bad number in {label:?} line: {line:?}"))
    };
    Ok((
        number("Total bytes sent:")?,
        number("Total bytes received:")?,
    ))
}

/// An rsync client run, checked and parsed.
fn rsync_client(args: &[&OsStr], scratch: &Path, what: &str) -> anyhow::Result<Sample> {
    let done = process::run_timed("rsync", args, &scratch.join("rsync.time"))?;
    if !done.status.success() {
        bail!("{what} failed ({}): {}", done.status, done.stderr.trim());
    }
    let (sent, received) = parse_rsync_stats(&done.stdout)?;
    Ok(Sample {
        wall_s: done.wall_s,
        wire_total: Some(sent + received),
        sent: Some(sent),
        received: Some(received),
        client: Some(done.usage),
        server: None,
    })
}

/// The rsync daemon's configuration: module `m` at `root`.
pub struct RsyncDaemon {
    config: PathBuf,
    /// The module's directory.
    pub root: PathBuf,
}

impl RsyncDaemon {
    /// Writes the configuration under `dir`.
    pub fn setup(dir: &Path) -> anyhow::Result<RsyncDaemon> {
        let root = dir.join("module");
        std::fs::create_dir_all(&root)?;
        // As root the daemon would switch to "nobody" unless told otherwise.
        let ids = if is_root() {
            "uid = root\ngid = root\n"
        } else {
            ""
        };
        let config = dir.join("rsyncd.conf");
        std::fs::write(
            &config,
            format!(
                "use chroot = no\n{ids}log file = {}\n[m]\npath = {}\nread only = no\n",
                dir.join("rsyncd.log").display(),
                root.display()
            ),
        )?;
        Ok(RsyncDaemon { config, root })
    }

    /// One measured run: a fresh daemon, caches dropped, `rsync -a --stats
    /// EXTRA source/ rsync://.../m/set/`, daemon stopped.
    pub fn run(
        &self,
        set: &str,
        source: &Path,
        extra: &[&str],
        scratch: &Path,
    ) -> anyhow::Result<Sample> {
        let port = process::free_tcp_port()?;
        let config = format!("--config={}", self.config.display());
        let port_arg = format!("--port={port}");
        let mut daemon = Server::spawn(
            "rsync daemon",
            "rsync",
            &[
                "--daemon".as_ref(),
                "--no-detach".as_ref(),
                config.as_ref(),
                port_arg.as_ref(),
                "--address=127.0.0.1".as_ref(),
            ],
            &scratch.join("rsyncd.time"),
            &scratch.join("rsyncd.out"),
        )?;
        daemon.wait_ready(READY_TIMEOUT, |_| process::tcp_listening(port))?;
        drop_caches();
        let src = format!("{}/", source.display());
        let dst = format!("rsync://127.0.0.1:{port}/m/{set}/");
        let mut args: Vec<&OsStr> = vec!["-a".as_ref(), "--stats".as_ref()];
        args.extend(extra.iter().map(OsStr::new));
        args.push(src.as_ref());
        args.push(dst.as_ref());
        let sample = rsync_client(&args, scratch, "rsync to the daemon");
        let server = daemon.stop()?;
        Ok(Sample {
            server: Some(server),
            ..sample?
        })
    }
}

/// Whether this rsync can compress with zstd (`rsync --version` lists it).
pub fn rsync_has_zstd() -> bool {
    output("rsync", &["--version".as_ref()])
        .map(|v| {
            v.split("Compress list:")
                .nth(1)
                .is_some_and(|rest| rest.lines().nth(1).is_some_and(|l| l.contains("zstd")))
        })
        .unwrap_or(false)
}

/// sshd on a high port of 127.0.0.1 that admits a generated key.
pub struct Sshd {
    config: PathBuf,
    key: PathBuf,
    user: String,
}

impl Sshd {
    /// Generates host and client keys and a configuration under `dir`, or
    /// says why sshd cannot be used here.
    pub fn setup(dir: &Path) -> anyhow::Result<Sshd> {
        let sshd = Path::new("/usr/sbin/sshd");
        if !sshd.is_file() {
            bail!(
                "{} not found (apt-get install openssh-server)",
                sshd.display()
            );
        }
        remove_tree(dir)?;
        std::fs::create_dir_all(dir)?;
        // sshd refuses to start without its privilege separation directory.
        let _ = std::fs::create_dir_all("/run/sshd");
        let host_key = dir.join("host_ed25519");
        let key = dir.join("client_ed25519");
        for path in [&host_key, &key] {
            output(
                "ssh-keygen",
                &[
                    "-q".as_ref(),
                    "-t".as_ref(),
                    "ed25519".as_ref(),
                    "-N".as_ref(),
                    "".as_ref(),
                    "-f".as_ref(),
                    path.as_os_str(),
                ],
            )?;
        }
        let authorized = dir.join("authorized_keys");
        std::fs::copy(key.with_extension("pub"), &authorized)?;
        let config = dir.join("sshd_config");
        std::fs::write(
            &config,
            format!(
                "ListenAddress 127.0.0.1\nHostKey {}\nAuthorizedKeysFile {}\nPidFile none\n\
                 PermitRootLogin prohibit-password\nPasswordAuthentication no\n\
                 KbdInteractiveAuthentication no\nUsePAM no\nStrictModes no\nLogLevel ERROR\n",
                host_key.display(),
                authorized.display()
            ),
        )?;
        output(sshd, &["-t".as_ref(), "-f".as_ref(), config.as_os_str()])
            .context("sshd rejects the generated configuration")?;
        let user = output("id", &["-un".as_ref()])?.trim().to_string();
        Ok(Sshd { config, key, user })
    }

    /// One measured run: a fresh sshd, caches dropped, `rsync -a --stats -e
    /// "ssh ... -c aes128-gcm@openssh.com" source/ user@127.0.0.1:dest/`,
    /// sshd stopped.
    pub fn run(&self, source: &Path, dest: &Path, scratch: &Path) -> anyhow::Result<Sample> {
        self.run_client(scratch, |login| {
            let src = format!("{}/", source.display());
            let dst = format!("{}:{}/", login.target, dest.display());
            rsync_client(
                &[
                    "-a".as_ref(),
                    "--stats".as_ref(),
                    "-e".as_ref(),
                    login.ssh.as_ref(),
                    src.as_ref(),
                    dst.as_ref(),
                ],
                scratch,
                "rsync over ssh",
            )
        })
    }

    /// One measured run of some ssh client: a fresh sshd, caches dropped,
    /// `client(login)`, sshd stopped; the sample gets sshd's usage (with the
    /// session's children: `rsync`, `sftp-server`, `borg serve`).
    pub fn run_client(
        &self,
        scratch: &Path,
        client: impl FnOnce(&SshLogin) -> anyhow::Result<Sample>,
    ) -> anyhow::Result<Sample> {
        let port = process::free_tcp_port()?;
        let port_s = port.to_string();
        let mut sshd = Server::spawn(
            "sshd",
            "/usr/sbin/sshd",
            &[
                "-D".as_ref(),
                "-e".as_ref(),
                "-f".as_ref(),
                self.config.as_os_str(),
                "-p".as_ref(),
                port_s.as_ref(),
            ],
            &scratch.join("sshd.time"),
            &scratch.join("sshd.log"),
        )?;
        sshd.wait_ready(READY_TIMEOUT, |_| process::tcp_listening(port))?;
        drop_caches();
        let login = SshLogin {
            ssh: format!(
                "ssh -p {port} -i {} -o StrictHostKeyChecking=no -o UserKnownHostsFile=/dev/null \
                 -o BatchMode=yes -o LogLevel=ERROR -c aes128-gcm@openssh.com",
                self.key.display()
            ),
            target: format!("{}@127.0.0.1", self.user),
            port,
        };
        let sample = client(&login);
        let server = sshd.stop()?;
        Ok(Sample {
            server: Some(server),
            ..sample?
        })
    }
}

/// How a client reaches the bench's sshd for one run.
pub struct SshLogin {
    /// The `ssh` command line (port, key, options, cipher), without the host.
    pub ssh: String,
    /// `user@127.0.0.1`.
    pub target: String,
    /// sshd's port.
    pub port: u16,
}

/// One measured `cp -r source dest` (caches dropped first).
pub fn cp(source: &Path, dest: &Path, scratch: &Path) -> anyhow::Result<Sample> {
    drop_caches();
    let done = process::run_timed(
        "cp",
        &["-r".as_ref(), source.as_os_str(), dest.as_os_str()],
        &scratch.join("cp.time"),
    )?;
    if !done.status.success() {
        bail!("cp -r failed ({}): {}", done.status, done.stderr.trim());
    }
    Ok(Sample {
        wall_s: done.wall_s,
        wire_total: None,
        sent: None,
        received: None,
        client: Some(done.usage),
        server: None,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_rsync_stats() -> anyhow::Result<()> {
        let out = "Number of files: 3\nTotal file size: 1,234 bytes\n\
                   Total bytes sent: 175,123,456\nTotal bytes received: 389\n\n\
                   sent 175,123,456 bytes  received 389 bytes\n";
        assert_eq!(parse_rsync_stats(out)?, (175_123_456, 389));
        assert!(parse_rsync_stats("sent 1 bytes").is_err());
        Ok(())
    }
}
