//! Running the measured programs under GNU `/usr/bin/time`, which reports
//! what `wait4` returns for the program: its CPU time and peak RSS *including
//! every descendant it waited for*. The Linux kernel folds a reaped child's
//! times into its parent's and keeps the largest `maxrss` seen, so for a
//! forking server (the rsync daemon forks per connection, sshd per session)
//! the CPU seconds are the sum over the server and its per-connection
//! children, and the peak RSS is that of the largest single process among
//! them (not a sum).
//!
//! Servers run in the foreground as the child of `time`; they are stopped
//! with SIGTERM (sent to the server, not to `time`) once their
//! per-connection children are gone, so those children are counted.

use std::ffi::OsStr;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, ExitStatus, Stdio};
use std::time::{Duration, Instant};

use anyhow::{bail, Context};
use serde::Serialize;

/// GNU time's binary.
pub const TIME_BIN: &str = "/usr/bin/time";
/// Elapsed, user and system seconds, peak RSS in KiB.
const TIME_FORMAT: &str = "%e %U %S %M";

/// What one process (with the descendants it waited for) used.
#[derive(Debug, Clone, Copy, Default, PartialEq, Serialize)]
pub struct Usage {
    /// User + system CPU seconds.
    pub cpu_s: f64,
    /// Peak resident set size, KiB.
    pub max_rss_kib: u64,
}

/// Parses the file `time -f '%e %U %S %M'` wrote (its last line; a line
/// before it may say the command failed or was killed).
pub fn parse_time_output(text: &str) -> anyhow::Result<Usage> {
    let line = text
        .lines()
        .rev()
        .find(|l| !l.trim().is_empty())
        .with_context(|| format!("empty output from {TIME_BIN}"))?;
    let fields: Vec<&str> = line.split_whitespace().collect();
    let [_elapsed, user, sys, rss] = fields[..] else {
        bail!("unexpected output from {TIME_BIN}: {line:?}");
    };
    let user: f64 = user
        .parse()
        .with_context(|| format!("user time in {line:?}"))?;
    let sys: f64 = sys
        .parse()
        .with_context(|| format!("system time in {line:?}"))?;
    let max_rss_kib = rss
        .parse()
        .with_context(|| format!("max RSS in {line:?}"))?;
    Ok(Usage {
        cpu_s: user + sys,
        max_rss_kib,
    })
}

/// Fails with a hint unless GNU time is installed.
pub fn check_time_available() -> anyhow::Result<()> {
    let ok = Command::new(TIME_BIN)
        .args(["-f", "%M", "true"])
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .status()
        .map(|s| s.success())
        .unwrap_or(false);
    if !ok {
        bail!("{TIME_BIN} (GNU time) is needed to measure CPU and memory: apt-get install time");
    }
    Ok(())
}

fn time_command(program: &OsStr, args: &[&OsStr], time_file: &Path) -> Command {
    let mut cmd = Command::new(TIME_BIN);
    cmd.arg("-o")
        .arg(time_file)
        .args(["-f", TIME_FORMAT])
        .arg(program)
        .args(args);
    cmd
}

fn read_usage(time_file: &Path) -> anyhow::Result<Usage> {
    let text = std::fs::read_to_string(time_file)
        .with_context(|| format!("reading {}", time_file.display()))?;
    parse_time_output(&text).with_context(|| format!("in {}", time_file.display()))
}

/// A client run that finished.
#[derive(Debug)]
pub struct Finished {
    /// Its exit status.
    pub status: ExitStatus,
    /// What it printed on stdout.
    pub stdout: String,
    /// What it printed on stderr.
    pub stderr: String,
    /// Wall seconds, from spawn to exit.
    pub wall_s: f64,
    /// CPU and peak RSS.
    pub usage: Usage,
}

/// Runs `program args` to completion under `time`, capturing its output.
pub fn run_timed(
    program: impl AsRef<OsStr>,
    args: &[&OsStr],
    time_file: &Path,
) -> anyhow::Result<Finished> {
    let program = program.as_ref();
    let mut cmd = time_command(program, args, time_file);
    let started = Instant::now();
    let output = cmd
        .stdin(Stdio::null())
        .output()
        .with_context(|| format!("running {}", program.to_string_lossy()))?;
    let wall_s = started.elapsed().as_secs_f64();
    Ok(Finished {
        status: output.status,
        stdout: String::from_utf8_lossy(&output.stdout).into_owned(),
        stderr: String::from_utf8_lossy(&output.stderr).into_owned(),
        wall_s,
        usage: read_usage(time_file)?,
    })
}

/// A server process running under `time` until [`Server::stop`].
pub struct Server {
    name: String,
    time: Child,
    time_file: PathBuf,
    log: PathBuf,
}

impl Server {
    /// Starts `program args` with stdout and stderr going to `log`.
    pub fn spawn(
        name: &str,
        program: impl AsRef<OsStr>,
        args: &[&OsStr],
        time_file: &Path,
        log: &Path,
    ) -> anyhow::Result<Server> {
        let out =
            std::fs::File::create(log).with_context(|| format!("creating {}", log.display()))?;
        let err = out.try_clone()?;
        let time = time_command(program.as_ref(), args, time_file)
            .stdin(Stdio::null())
            .stdout(out)
            .stderr(err)
            .spawn()
            .with_context(|| format!("starting {name}"))?;
        Ok(Server {
            name: name.to_string(),
            time,
            time_file: time_file.to_path_buf(),
            log: log.to_path_buf(),
        })
    }

    /// What the server logged so far.
    pub fn log(&self) -> String {
        std::fs::read_to_string(&self.log).unwrap_or_default()
    }

    /// Fails (with its log) if the server has exited.
    pub fn ensure_running(&mut self) -> anyhow::Result<()> {
        if let Some(status) = self.time.try_wait()? {
            bail!(
                "{} exited early ({status}); its log:\n{}",
                self.name,
                self.log()
            );
        }
        Ok(())
    }

    /// Waits until `ready` holds, failing if the server exits or `timeout`
    /// passes first.
    pub fn wait_ready(
        &mut self,
        timeout: Duration,
        mut ready: impl FnMut(&Server) -> bool,
    ) -> anyhow::Result<()> {
        let deadline = Instant::now() + timeout;
        loop {
            self.ensure_running()?;
            if ready(self) {
                return Ok(());
            }
            if Instant::now() >= deadline {
                bail!(
                    "{} not ready after {timeout:?}; its log:\n{}",
                    self.name,
                    self.log()
                );
            }
            std::thread::sleep(Duration::from_millis(20));
        }
    }

    /// Stops the server with SIGTERM once its per-connection children have
    /// exited, and returns what it used.
    pub fn stop(mut self) -> anyhow::Result<Usage> {
        // `time` forks the server right after it starts: wait for that.
        let deadline = Instant::now() + Duration::from_secs(5);
        let mut server = children(self.time.id()).first().copied();
        while server.is_none() && self.time.try_wait()?.is_none() && Instant::now() < deadline {
            std::thread::sleep(Duration::from_millis(10));
            server = children(self.time.id()).first().copied();
        }
        if let Some(pid) = server {
            // Let the children of the last connection finish and be reaped,
            // so that their CPU time and RSS are counted.
            let deadline = Instant::now() + Duration::from_secs(10);
            while !children(pid).is_empty() && Instant::now() < deadline {
                std::thread::sleep(Duration::from_millis(20));
            }
            signal(pid, "TERM")?;
            let deadline = Instant::now() + Duration::from_secs(20);
            loop {
                if self.time.try_wait()?.is_some() {
                    break;
                }
                if Instant::now() >= deadline {
                    signal(pid, "KILL")?;
                    self.time.wait()?;
                    bail!(
                        "{} did not stop within 20 s of SIGTERM; killed it",
                        self.name
                    );
                }
                std::thread::sleep(Duration::from_millis(10));
            }
        } else {
            self.time.wait()?;
        }
        read_usage(&self.time_file).with_context(|| format!("measuring {}", self.name))
    }
}

impl Drop for Server {
    fn drop(&mut self) {
        // After a failure: do not leave the server behind.
        if let Ok(None) = self.time.try_wait() {
            if let Some(pid) = children(self.time.id()).first() {
                let _ = signal(*pid, "KILL");
            }
            let _ = self.time.wait();
        }
    }
}

/// Sends a signal with `kill(1)` (std has no safe kill for a grandchild).
fn signal(pid: u32, name: &str) -> anyhow::Result<()> {
    let status = Command::new("kill")
        .arg(format!("-{name}"))
        .arg(pid.to_string())
        .stderr(Stdio::null())
        .status()
        .context("running kill")?;
    if !status.success() && std::path::Path::new(&format!("/proc/{pid}")).exists() {
        bail!("kill -{name} {pid} failed: {status}");
    }
    Ok(())
}

/// The pids whose parent is `parent`, from `/proc/*/stat`.
pub fn children(parent: u32) -> Vec<u32> {
    let Ok(entries) = std::fs::read_dir("/proc") else {
        return Vec::new();
    };
    let mut out = Vec::new();
    for entry in entries.flatten() {
        let Some(pid) = entry
            .file_name()
            .to_str()
            .and_then(|s| s.parse::<u32>().ok())
        else {
            continue;
        };
        let Ok(stat) = std::fs::read_to_string(entry.path().join("stat")) else {
            continue;
        };
        if parent_of(&stat) == Some(parent) {
            out.push(pid);
        }
    }
    out.sort_unstable();
    out
}

/// The ppid field of a `/proc/<pid>/stat` line ("pid (comm) state ppid ...";
/// comm may hold spaces and parentheses, so split after the last ')').
fn parent_of(stat: &str) -> Option<u32> {
    let rest = &stat[stat.rfind(')')? + 1..];
    rest.split_whitespace().nth(1)?.parse().ok()
}

/// Set while a [`KeepPageCache`] guard lives.
static KEEP_PAGE_CACHE: std::sync::atomic::AtomicBool = std::sync::atomic::AtomicBool::new(false);

/// While it lives, [`drop_caches`] only writes dirty pages and keeps the
/// page cache: the `-hot` variants of the first syncs, whatever tool runs.
pub struct KeepPageCache(());

impl KeepPageCache {
    /// Keeps the page cache until the guard is dropped.
    pub fn start() -> KeepPageCache {
        KEEP_PAGE_CACHE.store(true, std::sync::atomic::Ordering::SeqCst);
        KeepPageCache(())
    }
}

impl Drop for KeepPageCache {
    fn drop(&mut self) {
        KEEP_PAGE_CACHE.store(false, std::sync::atomic::Ordering::SeqCst);
    }
}

/// Writes dirty pages and drops the page cache so the next run starts cold
/// (unless a [`KeepPageCache`] guard lives: then it only writes them).
/// Dropping needs root; without it the run is warm, which is reported once.
pub fn drop_caches() {
    let _ = Command::new("sync").status();
    if KEEP_PAGE_CACHE.load(std::sync::atomic::Ordering::SeqCst) {
        return;
    }
    if std::fs::write("/proc/sys/vm/drop_caches", "3").is_err() {
        static WARNED: std::sync::Once = std::sync::Once::new();
        WARNED.call_once(|| {
            eprintln!("bench: cannot drop the page cache (not root?): runs are not cold");
        });
    }
}

/// Reads every file below `root`, so that a `-hot` run finds the source in
/// the page cache.
pub fn warm_page_cache(root: &Path) -> anyhow::Result<()> {
    let mut dirs = vec![root.to_path_buf()];
    while let Some(dir) = dirs.pop() {
        for entry in
            std::fs::read_dir(&dir).with_context(|| format!("reading {}", dir.display()))?
        {
            let entry = entry?;
            let kind = entry.file_type()?;
            if kind.is_dir() {
                dirs.push(entry.path());
            } else if kind.is_file() {
                let mut file = std::fs::File::open(entry.path())
                    .with_context(|| format!("opening {}", entry.path().display()))?;
                std::io::copy(&mut file, &mut std::io::sink())
                    .with_context(|| format!("reading {}", entry.path().display()))?;
            }
        }
    }
    Ok(())
}

/// A TCP port on 127.0.0.1 that was free a moment ago.
pub fn free_tcp_port() -> anyhow::Result<u16> {
    Ok(std::net::TcpListener::bind("127.0.0.1:0")?
        .local_addr()?
        .port())
}

/// A UDP port on 127.0.0.1 that was free a moment ago.
pub fn free_udp_port() -> anyhow::Result<u16> {
    Ok(std::net::UdpSocket::bind("127.0.0.1:0")?
        .local_addr()?
        .port())
}

/// Whether a TCP socket listens on 127.0.0.1:`port`, from `/proc/net/tcp`
/// (connecting to find out would make a forking server fork once more, and
/// that child would be counted in its usage).
pub fn tcp_listening(port: u16) -> bool {
    socket_in("/proc/net/tcp", port, Some("0A"))
}

/// Whether a UDP socket is bound to 127.0.0.1:`port`, from `/proc/net/udp`.
pub fn udp_bound(port: u16) -> bool {
    socket_in("/proc/net/udp", port, None)
}

/// Whether `table` (a `/proc/net/{tcp,udp}` file) has a socket on
/// 127.0.0.1:`port` (or any address: 0.0.0.0) in state `state` (hex).
fn socket_in(table: &str, port: u16, state: Option<&str>) -> bool {
    let Ok(text) = std::fs::read_to_string(table) else {
        return false;
    };
    let wanted = [
        format!("0100007F:{port:04X}"),
        format!("00000000:{port:04X}"),
    ];
    text.lines().skip(1).any(|line| {
        let fields: Vec<&str> = line.split_whitespace().collect();
        fields.len() > 3
            && wanted.iter().any(|w| w == fields[1])
            && state.is_none_or(|s| s == fields[3])
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_time_output_with_and_without_a_status_line() -> anyhow::Result<()> {
        let usage = parse_time_output("1.50 0.75 0.25 10240\n")?;
        assert_eq!(
            usage,
            Usage {
                cpu_s: 1.0,
                max_rss_kib: 10240
            }
        );
        let usage = parse_time_output("Command terminated by signal 15\n0.10 0.02 0.01 2048\n")?;
        assert_eq!(usage.max_rss_kib, 2048);
        assert!(parse_time_output("").is_err());
        assert!(parse_time_output("Command exited with non-zero status 1\n").is_err());
        Ok(())
    }

    #[test]
    fn sees_a_listening_tcp_port() -> anyhow::Result<()> {
        let listener = std::net::TcpListener::bind("127.0.0.1:0")?;
        let port = listener.local_addr()?.port();
        assert!(tcp_listening(port));
        // (No check after closing it: any process may reuse the port at
        // once, which made that check flaky.)
        drop(listener);
        assert!(!tcp_listening(0));
        let socket = std::net::UdpSocket::bind("127.0.0.1:0")?;
        assert!(udp_bound(socket.local_addr()?.port()));
        Ok(())
    }

    #[test]
    fn reads_the_parent_from_proc_stat() {
        assert_eq!(parent_of("42 (a) b (c)) S 17 42 42 0"), Some(17));
        assert_eq!(parent_of("garbage"), None);
    }

    #[test]
    fn measures_a_client_and_a_server() -> anyhow::Result<()> {
        check_time_available()?;
        let dir = tempfile::tempdir()?;
        let done = run_timed(
            "sh",
            &["-c".as_ref(), "echo hi".as_ref()],
            &dir.path().join("t1"),
        )?;
        assert!(done.status.success());
        assert_eq!(done.stdout.trim(), "hi");
        assert!(done.usage.max_rss_kib > 0);

        let mut server = Server::spawn(
            "sleeper",
            "sleep",
            &["30".as_ref()],
            &dir.path().join("t2"),
            &dir.path().join("log"),
        )?;
        let time_pid = server.time.id();
        server.wait_ready(Duration::from_secs(5), |_| !children(time_pid).is_empty())?;
        let started = Instant::now();
        let usage = server.stop()?;
        assert!(started.elapsed() < Duration::from_secs(20));
        assert!(usage.max_rss_kib > 0);
        Ok(())
    }
}
