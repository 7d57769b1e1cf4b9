//! Errors a person can read: each cause once, the real cause first, one
//! line per failed attempt or per reason, and a one-shot run that gives up
//! in seconds when nothing answers. The real `ferry` binary, its stderr
//! read as a user would.

use std::io::BufRead;
use std::path::Path;
use std::process::{Command, Output, Stdio};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use ferry_tests::tree;

use crate::faults::{QuotaReceiver, Tmpfs};
use crate::sync::pseudo_random;
use crate::util::{ferry_bin, free_udp_port, poll_until, TestSender};

async fn ferry(args: Vec<String>) -> anyhow::Result<Output> {
    let bin = ferry_bin();
    Ok(tokio::task::spawn_blocking(move || {
        Command::new(bin)
            .args(&args)
            .stdin(Stdio::null())
            .env_remove("FERRY_LOG")
            .output()
    })
    .await??)
}

fn strings(args: &[&str]) -> Vec<String> {
    args.iter().map(ToString::to_string).collect()
}

fn path(p: &Path) -> String {
    p.display().to_string()
}

/// Sending once to `port` where nothing listens, as `dir`'s sender.
fn send_to_nothing(dir: &Path, port: u16, extra: &[&str]) -> anyhow::Result<Vec<String>> {
    let source = dir.join("src");
    std::fs::create_dir_all(&source)?;
    tree::write(&source, "a.txt", "alpha")?;
    let mut args = strings(&["send", "--host", "127.0.0.1", "--port"]);
    args.push(port.to_string());
    args.extend(strings(&["--name", "laptop", "--folder", "docs"]));
    args.extend(["--source".into(), path(&source)]);
    args.extend(["--state".into(), path(&dir.join("state"))]);
    args.extend(strings(extra));
    Ok(args)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_receiver_whose_port_is_taken_names_the_os_error_once() -> anyhow::Result<()> {
    let dir = tempfile::tempdir()?;
    let taken = std::net::UdpSocket::bind("127.0.0.1:0")?;
    let port = taken.local_addr()?.port().to_string();
    let out = ferry(strings(&[
        "receive",
        "--host",
        "127.0.0.1",
        "--port",
        &port,
        "--store",
        &path(&dir.path().join("store")),
        "--state",
        &path(&dir.path().join("rstate")),
    ]))
    .await?;
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(2), "{stderr}");
    let line = stderr
        .lines()
        .find(|l| l.starts_with("ferry: error:"))
        .unwrap_or_default();
    assert!(line.contains(&format!("127.0.0.1:{port}")), "{stderr}");
    assert_eq!(
        line.matches("Address already in use").count(),
        1,
        "the cause is not named exactly once: {stderr}"
    );
    assert_eq!(
        stderr.matches("Address already in use").count(),
        1,
        "{stderr}"
    );
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_mass_delete_refusal_is_printed_once() -> anyhow::Result<()> {
    let dir = tempfile::tempdir()?;
    let source = dir.path().join("src");
    for i in 0..20 {
        tree::write(&source, format!("f{i:02}.txt"), format!("file {i}"))?;
    }
    let args = strings(&["send", "--once", "--name", "laptop", "--folder", "docs"])
        .into_iter()
        .chain(["--source".into(), path(&source)])
        .chain(["--store".into(), path(&dir.path().join("store"))])
        .chain(["--state".into(), path(&dir.path().join("state"))])
        .collect::<Vec<String>>();
    let first = ferry(args.clone()).await?;
    assert!(
        first.status.success(),
        "{}",
        String::from_utf8_lossy(&first.stderr)
    );
    for i in 0..15 {
        std::fs::remove_file(source.join(format!("f{i:02}.txt")))?;
    }
    let out = ferry(args).await?;
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(2), "{stderr}");
    assert_eq!(
        stderr.matches("--allow-mass-delete").count(),
        1,
        "the refusal is not printed exactly once: {stderr}"
    );
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_one_shot_send_where_nothing_listens_gives_up_in_seconds_with_one_line(
) -> anyhow::Result<()> {
    let dir = tempfile::tempdir()?;
    let port = free_udp_port()?;
    let args = send_to_nothing(dir.path(), port, &["--once"])?;
    // Built (if need be) before the clock starts.
    tokio::task::spawn_blocking(ferry_bin).await?;
    let started = Instant::now();
    let out = ferry(args).await?;
    let took = started.elapsed();
    let stderr = String::from_utf8_lossy(&out.stderr);
    eprintln!("gave up after {took:?}:\n{stderr}");
    assert_eq!(out.status.code(), Some(2), "{stderr}");
    // It took 46 s: four attempts of a 10 s handshake and their backoff.
    assert!(took < Duration::from_secs(30), "took {took:?}: {stderr}");
    let target = format!("127.0.0.1:{port}");
    assert_eq!(
        stderr.matches(&target).count(),
        1,
        "the failure is not told exactly once: {stderr}"
    );
    let line = stderr
        .lines()
        .find(|l| l.contains(&target))
        .unwrap_or_default();
    assert!(
        line.starts_with("ferry: error: could not reach the receiver"),
        "{stderr}"
    );
    assert!(line.contains("no answer"), "{stderr}");
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_periodic_sender_logs_each_failed_attempt_once_with_its_retry() -> anyhow::Result<()> {
    let dir = tempfile::tempdir()?;
    let port = free_udp_port()?;
    let args = send_to_nothing(dir.path(), port, &["--every", "1h"])?;
    let mut child = Command::new(ferry_bin())
        .args(&args)
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .env_remove("FERRY_LOG")
        .spawn()?;
    let lines = Arc::new(Mutex::new(Vec::<String>::new()));
    let reader = {
        let lines = lines.clone();
        let stderr = child.stderr.take();
        std::thread::spawn(move || {
            if let Some(stderr) = stderr {
                for line in std::io::BufReader::new(stderr)
                    .lines()
                    .map_while(Result::ok)
                {
                    if let Ok(mut lines) = lines.lock() {
                        lines.push(line);
                    }
                }
            }
        })
    };
    let failed = |lines: &[String]| lines.iter().filter(|l| l.contains("run failed")).count();
    // Two attempts of a 10 s handshake each, a second or two apart.
    let seen = tokio::task::spawn_blocking({
        let lines = lines.clone();
        move || {
            poll_until(Duration::from_secs(90), || {
                let lines = lines.lock().ok()?;
                (failed(&lines) >= 2).then_some(())
            })
        }
    })
    .await?;
    child.kill()?;
    child.wait()?;
    let _ = reader.join();
    let lines = lines.lock().map_err(|_| anyhow::anyhow!("lock"))?.clone();
    let text = lines.join("\n");
    assert!(
        seen.is_some(),
        "fewer than two failed attempts logged:\n{text}"
    );
    let target = format!("127.0.0.1:{port}");
    let attempts: Vec<&String> = lines.iter().filter(|l| l.contains(&target)).collect();
    assert!(
        attempts
            .iter()
            .all(|l| l.contains("run failed") && l.contains("retrying in")),
        "an attempt is logged more than once or without its retry:\n{text}"
    );
    assert_eq!(attempts.len(), failed(&lines), "{text}");
    Ok(())
}

const MIB: usize = 1024 * 1024;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn files_that_fail_on_a_full_disk_are_one_line_and_the_run_is_not_left_running(
) -> anyhow::Result<()> {
    let dir = tempfile::tempdir()?;
    let Some(_tmpfs) = Tmpfs::mount(&dir.path().join("store"), "8m")? else {
        return Ok(());
    };
    let receiver = QuotaReceiver::start(dir.path(), "127.0.0.1:0".parse()?, None).await?;
    let sender = TestSender::new(dir.path(), "laptop")?;
    for i in 0..8 {
        tree::write(
            &sender.source,
            format!("big{i}.bin"),
            pseudo_random(2 * MIB, i),
        )?;
    }
    let config = crate::faults::sender_config(&sender, receiver.addr)?;
    let secret = config.pairing_secret_file.clone().unwrap_or_default();
    let mut args = strings(&["send", "--once", "--host", "127.0.0.1", "--port"]);
    args.push(receiver.addr.port().to_string());
    args.extend(strings(&["--name", "laptop", "--folder", "docs"]));
    args.extend(["--source".into(), path(&sender.source)]);
    args.extend(["--state".into(), path(&sender.state)]);
    args.extend(["--pairing-secret-file".into(), path(&secret)]);

    let out = ferry(args.clone()).await?;
    let stderr = String::from_utf8_lossy(&out.stderr);
    eprintln!("{stderr}");
    assert_eq!(out.status.code(), Some(1), "{stderr}");
    let full: Vec<&str> = stderr
        .lines()
        .filter(|l| l.contains("disk is full"))
        .collect();
    assert_eq!(full.len(), 1, "not one line for the full disk:\n{stderr}");
    assert!(full[0].starts_with("ferry: "), "{stderr}");
    assert!(full[0].contains(" not sent: "), "{stderr}");

    // -v lists each file; --json carries each in `problems`.
    let mut verbose = args.clone();
    verbose.push("-v".into());
    let out = ferry(verbose).await?;
    let stderr = String::from_utf8_lossy(&out.stderr);
    let listed = stderr
        .lines()
        .filter(|l| l.starts_with("ferry: big") && l.contains("disk is full"))
        .count();
    assert!(listed >= 2, "-v does not list each file:\n{stderr}");
    let mut json = args;
    json.push("--json".into());
    let out = ferry(json).await?;
    let summary: serde_json::Value = serde_json::from_slice(&out.stdout)?;
    let problems = summary["problems"].as_array().cloned().unwrap_or_default();
    assert!(problems.len() >= 2, "{summary}");

    let runs = receiver.store.runs(None)?;
    assert!(
        runs.iter().all(|r| r.status != "running"),
        "a run is left running: {runs:?}"
    );
    receiver.stop().await?;
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_run_the_receiver_ends_fails_with_the_receivers_reason_first_and_is_recorded_interrupted(
) -> anyhow::Result<()> {
    use ferry_agent::chain::chain;
    use ferry_agent::receiver::Admission;
    use ferry_agent::status::SenderStatus;
    use tokio_util::sync::CancellationToken;

    let dir = tempfile::tempdir()?;
    let sender = TestSender::new(dir.path(), "laptop")?;
    let receiver = crate::util::TestReceiver::start(dir.path(), 8, {
        let identity = ferry_agent::identity::Identity::load_or_create(&sender.state)?;
        Admission {
            allow: vec![identity.id],
            pairing_secret: None,
        }
    })
    .await?;
    tree::write(&sender.source, "big.bin", pseudo_random(4 * MIB, 7))?;
    // Slow enough that the receiver is stopped in the middle of the run.
    let config = ferry_agent::config::SenderConfig {
        limit_rate: Some("256KB/s".into()),
        ..sender.config(&receiver)
    };
    let first = Arc::new(Mutex::new(None::<String>));
    let run = {
        let settings = config.settings()?;
        let first = first.clone();
        tokio::spawn(ferry_agent::sender::run(
            settings,
            CancellationToken::new(),
            SenderStatus::new(),
            move |result| {
                if let (Err(e), Ok(mut first)) = (result, first.lock()) {
                    first.get_or_insert_with(|| chain(e));
                }
            },
        ))
    };
    let store = receiver.store.clone();
    let running = tokio::task::spawn_blocking(move || {
        poll_until(Duration::from_secs(30), || {
            let runs = store.runs(None).ok()?;
            runs.iter().any(|r| r.status == "running").then_some(())
        })
    })
    .await?;
    assert!(running.is_some(), "the run never started");
    let store = receiver.store.clone();
    receiver.stop().await?;
    let _ = run.await?;
    let first = first.lock().map_err(|_| anyhow::anyhow!("lock"))?.clone();
    let first = first.unwrap_or_default();
    eprintln!("first failed attempt: {first}");
    assert!(
        first.starts_with("the receiver ended the session")
            || first.starts_with("receiver shutting down"),
        "the receiver's reason does not lead: {first}"
    );
    let runs = store.runs(None)?;
    assert!(runs.iter().all(|r| r.status != "running"), "{runs:?}");
    // Cut off by the receiver's stop: interrupted, not failed.
    assert!(
        runs.iter().any(|r| r.status == "interrupted"),
        "the cut-off run is not recorded as interrupted: {runs:?}"
    );
    Ok(())
}
