//! Running as a service: the systemd units shipped in `agent/dist/`, config
//! files whose relative paths do not depend on the working directory, and
//! the receiver's log as an admin reads it.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::Duration;

use anyhow::{bail, Context};
use ferry_agent::identity::Identity;
use ferry_agent::transport;
use ferry_proto::Message;

use crate::util::{ferry_bin, free_udp_port, hello, poll_until, send_config, TestSender};

/// How long a `ferry receive` child has to say it is listening.
const START: Duration = Duration::from_secs(60);

/// A `ferry receive` child process, killed when dropped; its stderr goes to
/// a file.
struct Daemon {
    child: Child,
    log: PathBuf,
}

impl Daemon {
    /// Starts `ferry receive ARGS` in `cwd` and waits until it listens.
    fn receive(cwd: &Path, args: &[&str], log: PathBuf) -> anyhow::Result<Daemon> {
        let stderr = std::fs::File::create(&log)?;
        let child = Command::new(ferry_bin())
            .arg("receive")
            .args(args)
            .current_dir(cwd)
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(stderr)
            .spawn()?;
        let mut daemon = Daemon { child, log };
        let listening = poll_until(START, || {
            if let Ok(Some(status)) = daemon.child.try_wait() {
                return Some(Err(status));
            }
            daemon
                .text()
                .contains("receiver listening")
                .then_some(Ok(()))
        });
        match listening {
            Some(Ok(())) => Ok(daemon),
            Some(Err(status)) => bail!("ferry receive exited ({status}): {}", daemon.text()),
            None => bail!(
                "ferry receive did not listen within {START:?}: {}",
                daemon.text()
            ),
        }
    }

    /// Everything it logged so far.
    fn text(&self) -> String {
        std::fs::read_to_string(&self.log).unwrap_or_default()
    }
}

impl Drop for Daemon {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// Runs the `ferry` binary to its end in `cwd`.
fn ferry(cwd: &Path, args: &[&str]) -> anyhow::Result<std::process::Output> {
    Ok(Command::new(ferry_bin())
        .args(args)
        .current_dir(cwd)
        .stdin(Stdio::null())
        .output()?)
}

/// `cd / && ferry send --config /etc/ferry/s.toml` took `source = "docs"`
/// from `/`: relative paths in a config file are now the file's directory's,
/// for both roles; nothing lands in the working directory.
#[test]
fn relative_paths_in_config_files_do_not_depend_on_the_working_directory() -> anyhow::Result<()> {
    let dir = tempfile::tempdir()?;
    let elsewhere = dir.path().join("elsewhere");
    let (r, s) = (dir.path().join("r"), dir.path().join("s"));
    for d in [&elsewhere, &r, &s.join("data/sub")] {
        std::fs::create_dir_all(d)?;
    }
    std::fs::write(r.join("secret"), "correct horse\n")?;
    std::fs::write(s.join("secret"), "correct horse\n")?;
    std::fs::write(s.join("data/a.txt"), "alpha")?;
    std::fs::write(s.join("data/sub/b.txt"), "beta")?;
    let port = free_udp_port()?;
    std::fs::write(
        r.join("receiver.toml"),
        format!(
            "host = \"127.0.0.1\"\nport = {port}\nstore = \"store\"\nstate = \"state\"\n\
             pairing-secret-file = \"secret\"\n"
        ),
    )?;
    std::fs::write(
        s.join("sender.toml"),
        format!(
            "host = \"127.0.0.1\"\nport = {port}\nsource = \"data\"\nstate = \"state\"\n\
             keep-copies = \"copies\"\npairing-secret-file = \"secret\"\nname = \"lap\"\n\
             folder = \"docs\"\nonce = true\n"
        ),
    )?;
    let config = r.join("receiver.toml");
    let daemon = Daemon::receive(
        &elsewhere,
        &["--config", &config.to_string_lossy()],
        dir.path().join("receiver.log"),
    )?;
    let config = s.join("sender.toml");
    let out = ferry(&elsewhere, &["send", "--config", &config.to_string_lossy()])?;
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(
        out.status.success(),
        "{stderr}\nreceiver: {}",
        daemon.text()
    );
    drop(daemon);
    assert_eq!(std::fs::read(r.join("store/lap/docs/a.txt"))?, b"alpha");
    assert_eq!(std::fs::read(r.join("store/lap/docs/sub/b.txt"))?, b"beta");
    assert!(
        r.join("state/identity").is_dir(),
        "receiver state not in r/"
    );
    assert!(s.join("state/identity").is_dir(), "sender state not in s/");
    assert_eq!(std::fs::read(s.join("copies/sub/b.txt"))?, b"beta");
    let left: Vec<_> = std::fs::read_dir(&elsewhere)?.collect::<Result<_, _>>()?;
    assert!(
        left.is_empty(),
        "written to the working directory: {left:?}"
    );
    Ok(())
}

/// The receiver logged "sender connected" and "run committed" only, a field
/// with no value as `"None"`; now one line per run says who, what, how much,
/// how long and how it ended, and a refusal names the remote address.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn receiver_logs_one_line_per_run_and_refusals_with_their_remote_address(
) -> anyhow::Result<()> {
    let dir = tempfile::tempdir()?;
    let secret = dir.path().join("secret");
    std::fs::write(&secret, "correct horse")?;
    let port = free_udp_port()?;
    let (store, state) = (dir.path().join("store"), dir.path().join("rstate"));
    let args = [
        "--log-format",
        "json",
        "--host",
        "127.0.0.1",
        "--port",
        &port.to_string(),
        "--store",
        &store.to_string_lossy(),
        "--state",
        &state.to_string_lossy(),
        "--pairing-secret-file",
        &secret.to_string_lossy(),
    ]
    .map(String::from);
    let (cwd, log) = (dir.path().to_owned(), dir.path().join("receiver.log"));
    let daemon = tokio::task::spawn_blocking(move || {
        let args: Vec<&str> = args.iter().map(String::as_str).collect();
        Daemon::receive(&cwd, &args, log)
    })
    .await??;
    let addr = format!("127.0.0.1:{port}").parse()?;

    // An unknown device, refused at admission.
    let stranger = Identity::generate()?;
    let endpoint = transport::client_endpoint(&stranger, addr)?;
    let from = endpoint.local_addr()?.port();
    let conn = transport::connect(&endpoint, addr).await?;
    let (_control, answer) = hello(&conn, "stranger", None).await?;
    assert!(matches!(answer, Message::Refused(_)), "{answer:?}");
    conn.close(quinn::VarInt::from_u32(0), b"bye");

    // A sender's run: two files.
    let sender = TestSender::new(dir.path(), "lap")?;
    std::fs::write(sender.source.join("a.txt"), "alpha")?;
    std::fs::write(sender.source.join("b.txt"), vec![7u8; 3000])?;
    let config = ferry_agent::config::SenderConfig {
        host: Some("127.0.0.1".into()),
        port: Some(port),
        source: Some(sender.source.clone()),
        name: Some("lap".into()),
        folder: Some("docs".into()),
        state: Some(sender.state.clone()),
        once: Some(true),
        pairing_secret_file: Some(secret.clone()),
        // The files' own size whatever "file data" comes to mean on the wire.
        compress: Some("off".into()),
        ..Default::default()
    };
    let summary = send_config(&config).await?;
    assert_eq!(summary.errors, 0);

    let lines = poll_until(Duration::from_secs(30), || {
        let lines = json_lines(&daemon.text()).ok()?;
        let run = lines
            .iter()
            .any(|l| message(l).starts_with("run completed"));
        let refused = lines.iter().any(|l| message(l).starts_with("refused"));
        (run && refused).then_some(lines)
    })
    .with_context(|| format!("no run line or no refusal logged:\n{}", daemon.text()))?;
    let text = daemon.text();
    assert!(
        !text.contains("\"None\""),
        "a value logged as None:\n{text}"
    );

    let runs: Vec<_> = lines
        .iter()
        .filter(|l| message(l).starts_with("run "))
        .collect();
    assert_eq!(runs.len(), 1, "{text}");
    let run = &runs[0]["fields"];
    assert_eq!(runs[0]["level"], "INFO", "{text}");
    assert_eq!(run["sender"], "lap", "{run}");
    assert_eq!(run["folder"], "docs", "{run}");
    assert_eq!(run["result"], "completed", "{run}");
    assert_eq!(run["files"], 2, "{run}");
    assert_eq!(run["bytes"], 3005, "{run}");
    assert_eq!(run["failures"], 0, "{run}");
    assert!(run["duration_ms"].is_u64(), "{run}");
    assert!(run["bytes_received"].as_u64() > Some(0), "{run}");

    let refused: Vec<_> = lines
        .iter()
        .filter(|l| message(l).starts_with("refused"))
        .collect();
    assert_eq!(refused.len(), 1, "{text}");
    assert_eq!(
        refused[0]["fields"]["remote"],
        format!("127.0.0.1:{from}"),
        "{text}"
    );
    drop(daemon);
    Ok(())
}

/// The log as JSON objects, one a line.
fn json_lines(text: &str) -> anyhow::Result<Vec<serde_json::Value>> {
    text.lines()
        .filter(|l| !l.trim().is_empty())
        .map(|l| serde_json::from_str(l).with_context(|| format!("not JSON: {l}")))
        .collect()
}

fn message(line: &serde_json::Value) -> &str {
    line["fields"]["message"].as_str().unwrap_or_default()
}

/// A unit file: its sections, each key's values in order.
type Unit = BTreeMap<String, BTreeMap<String, Vec<String>>>;

/// Parses a systemd unit file as `systemd.syntax(7)` describes it
/// (comments, sections, `Key=value`, backslash continuation).
fn parse_unit(text: &str) -> anyhow::Result<Unit> {
    let mut unit = Unit::new();
    let mut section: Option<String> = None;
    let mut pending = String::new();
    for (n, raw) in text.lines().enumerate() {
        let line = raw.trim();
        if pending.is_empty() && (line.is_empty() || line.starts_with(['#', ';'])) {
            continue;
        }
        if let Some(start) = line.strip_suffix('\\') {
            pending.push_str(start);
            pending.push(' ');
            continue;
        }
        let line = std::mem::take(&mut pending) + line;
        if let Some(name) = line.strip_prefix('[').and_then(|l| l.strip_suffix(']')) {
            unit.entry(name.to_string()).or_default();
            section = Some(name.to_string());
            continue;
        }
        let Some(name) = &section else {
            bail!("line {}: {line:?} outside a section", n + 1)
        };
        let Some((key, value)) = line.split_once('=') else {
            bail!("line {}: {line:?} is not Key=value", n + 1)
        };
        unit.entry(name.clone())
            .or_default()
            .entry(key.trim().to_string())
            .or_default()
            .push(value.trim().to_string());
    }
    Ok(unit)
}

/// The single value of `key` in `section`.
fn value<'a>(unit: &'a Unit, section: &str, key: &str) -> anyhow::Result<&'a str> {
    match unit
        .get(section)
        .and_then(|s| s.get(key))
        .map(Vec::as_slice)
    {
        Some([v]) => Ok(v),
        other => bail!("[{section}] {key}: expected one value, found {other:?}"),
    }
}

fn dist() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../agent/dist")
}

/// There was no systemd unit: the receiver's and the senders' (a template,
/// one instance per config file) now ship in `agent/dist/`, hardened, and
/// start the real `ferry` with flags it accepts. Where `systemd-analyze` is
/// installed (`.ci/run` installs it), each passes `systemd-analyze verify`
/// with the `ferry` just built in place of `/usr/local/bin/ferry`.
#[test]
fn systemd_units_ship_hardened_and_pass_systemd_analyze_verify() -> anyhow::Result<()> {
    let units = [
        (
            "ferry-receiver.service",
            "ferry-receiver.service",
            "receive --config /etc/ferry/receiver.toml",
            "yes",
        ),
        (
            "ferry-sender@.service",
            "ferry-sender@laptop.service",
            "send --config /etc/ferry/sender-%i.toml",
            "read-only",
        ),
    ];
    let bin = ferry_bin();
    let tmp = tempfile::tempdir()?;
    let mut to_verify = Vec::new();
    for (file, instance, command, protect_home) in units {
        let path = dist().join(file);
        let text = std::fs::read_to_string(&path).with_context(|| format!("{}", path.display()))?;
        let unit = parse_unit(&text).with_context(|| file.to_string())?;
        value(&unit, "Unit", "Description")?;
        assert_eq!(value(&unit, "Install", "WantedBy")?, "multi-user.target");
        let exec = value(&unit, "Service", "ExecStart")?;
        let args = exec
            .strip_prefix("/usr/local/bin/ferry ")
            .with_context(|| format!("{file}: ExecStart {exec:?}"))?;
        assert!(args.starts_with(command), "{file}: ExecStart {exec:?}");
        for (key, want) in [
            ("DynamicUser", "yes"),
            ("ProtectSystem", "strict"),
            ("ProtectHome", protect_home),
            ("NoNewPrivileges", "yes"),
            ("PrivateTmp", "yes"),
            ("Restart", "on-failure"),
        ] {
            assert_eq!(value(&unit, "Service", key)?, want, "{file}: {key}");
        }
        for key in ["RestartSec", "StateDirectory", "Environment"] {
            value(&unit, "Service", key)?;
        }
        // The flags are the real binary's: it accepts them (then --help).
        let mut cli: Vec<&str> = args.split_whitespace().collect();
        cli.push("--help");
        let out = ferry(tmp.path(), &cli)?;
        assert!(
            out.status.success(),
            "{file}: ferry {args}: {}",
            String::from_utf8_lossy(&out.stderr)
        );
        let copy = tmp.path().join(file);
        std::fs::write(
            &copy,
            text.replace("/usr/local/bin/ferry", &bin.to_string_lossy()),
        )?;
        to_verify.push(tmp.path().join(instance));
    }
    let analyze = Command::new("systemd-analyze")
        .arg("verify")
        .args(&to_verify)
        .output();
    let out = match analyze {
        Ok(out) => out,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
            eprintln!("systemd-analyze is not installed: only the units' fields were checked");
            return Ok(());
        }
        Err(e) => return Err(e.into()),
    };
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(out.status.success(), "systemd-analyze verify: {stderr}");
    // Unknown keys and bad values are warnings on stderr, not failures.
    let about_ours: Vec<&str> = stderr
        .lines()
        .filter(|l| l.contains("ferry") || l.contains(&*tmp.path().to_string_lossy()))
        .collect();
    assert!(about_ours.is_empty(), "systemd-analyze verify: {stderr}");
    Ok(())
}
