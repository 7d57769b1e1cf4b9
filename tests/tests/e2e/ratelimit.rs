//! Bandwidth limits (`--limit-rate`): a limited sender and a limited
//! receiver each hold a run of incompressible files to the rate, within 20%,
//! with the real `ferry` binary; and a limited receiver paces the sender on
//! the wire from the first byte, not only by the end of the run.

use std::time::{Duration, Instant};

use anyhow::{bail, Context};
use ferry_agent::config::SenderConfig;
use ferry_agent::identity::Identity;
use ferry_agent::receiver::{Admission, Receiver};
use ferry_agent::status::SenderStatus;
use ferry_agent::store::Store;
use ferry_tests::tree;
use tokio_util::sync::CancellationToken;

use crate::crash::{Proc, Setup, SECRET};
use crate::sync::pseudo_random;
use crate::util::poll_until;

/// The limit under test, in bytes per second (`4MB/s`).
const RATE: f64 = 4_000_000.0;
const LIMIT: &str = "4MB/s";
/// Files of incompressible content: 12 MB, three seconds at the limit.
const FILES: usize = 3;
const FILE_SIZE: usize = 4_000_000;

/// Fills `source` with the incompressible files.
fn write_files(source: &std::path::Path) -> anyhow::Result<()> {
    for i in 0..FILES {
        tree::write(
            source,
            format!("data/{i}.bin"),
            pseudo_random(FILE_SIZE, 50 + i as u64),
        )?;
    }
    Ok(())
}

/// Starts `ferry receive` for `setup` with `extra` arguments and waits until
/// it listens.
fn receiver(setup: &Setup, extra: &[&str]) -> anyhow::Result<Proc> {
    let port = setup.port.to_string();
    let d = setup.dir.path();
    let rstate = d.join("rstate");
    let mut args: Vec<&std::ffi::OsStr> = vec![
        "receive".as_ref(),
        "--host".as_ref(),
        "127.0.0.1".as_ref(),
        "--port".as_ref(),
        port.as_ref(),
        "--store".as_ref(),
        setup.store.as_os_str(),
        "--state".as_ref(),
        rstate.as_os_str(),
        "--pairing-secret-file".as_ref(),
        setup.secret.as_os_str(),
    ];
    args.extend(extra.iter().map(std::ffi::OsStr::new));
    let mut proc = Proc::spawn("receiver", d, &args)?;
    let listening = poll_until(Duration::from_secs(30), || {
        proc.stderr().contains("receiver listening").then_some(())
    });
    if listening.is_none() {
        let status = proc.wait_for(Duration::ZERO)?;
        bail!(
            "the receiver did not start listening (exit: {status:?}); stderr:\n{}",
            proc.stderr()
        );
    }
    Ok(proc)
}

/// Runs `ferry send --once` with `extra` arguments and returns its JSON
/// summary's file bytes and duration in ms.
fn send_once(setup: &Setup, extra: &[&str]) -> anyhow::Result<(u64, u64)> {
    let mut args = vec!["--once"];
    args.extend_from_slice(extra);
    let mut sender = setup.sender("sender", &args)?;
    let status = sender.exit_status(Duration::from_secs(60))?;
    if !status.success() {
        bail!("the sender failed: {status}; stderr:\n{}", sender.stderr());
    }
    let stdout = sender.stdout();
    let line = stdout
        .lines()
        .rev()
        .find(|l| l.starts_with('{'))
        .with_context(|| format!("no JSON summary from the sender: {stdout}"))?;
    let summary: serde_json::Value = serde_json::from_str(line)?;
    let field = |name: &str| {
        summary[name]
            .as_u64()
            .with_context(|| format!("no {name} in the summary {line}"))
    };
    Ok((field("bytes_file_data")?, field("duration_ms")?))
}

/// Fails unless `bytes` in `ms` is within 20% of [`RATE`].
fn assert_rate_honoured(bytes: u64, ms: u64) {
    assert!(
        bytes >= (FILES * FILE_SIZE) as u64,
        "only {bytes} bytes of file data sent"
    );
    let rate = bytes as f64 / (ms.max(1) as f64 / 1000.0);
    assert!(
        (rate - RATE).abs() <= 0.2 * RATE,
        "{bytes} bytes in {ms} ms is {:.2} MB/s; the limit is {LIMIT}",
        rate / 1e6
    );
}

/// Sends the files with `sender_extra` and `receiver_extra` arguments,
/// checks the rate and the mirror.
fn limited_run(receiver_extra: &[&str], sender_extra: &[&str]) -> anyhow::Result<()> {
    crate::util::trace();
    let setup = Setup::new()?;
    write_files(&setup.source)?;
    let mut receiver = receiver(&setup, receiver_extra)?;
    let (bytes, ms) = send_once(&setup, sender_extra)?;
    assert_rate_honoured(bytes, ms);
    tree::assert_same(&setup.source, &setup.mirror())?;
    receiver.interrupt()?;
    receiver.exit_status(Duration::from_secs(30))?;
    Ok(())
}

#[test]
fn a_sender_limit_rate_is_honoured_within_20_percent() -> anyhow::Result<()> {
    limited_run(&[], &["--limit-rate", LIMIT])
}

#[test]
fn a_receiver_limit_rate_is_honoured_within_20_percent() -> anyhow::Result<()> {
    limited_run(&["--limit-rate", LIMIT], &[])
}

/// A limited receiver starts each connection with a small receive window,
/// so the sender cannot push megabytes ahead of the limit at the start: one
/// second into the content, no more than a second's worth plus the window
/// and the burst has left the sender (without the small window, all 12 MB
/// would be gone at once into the receiver's buffers).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_limited_receiver_paces_the_sender_from_the_first_byte() -> anyhow::Result<()> {
    crate::util::trace();
    let dir = tempfile::tempdir()?;
    let store_dir = dir.path().join("store");
    let identity = Identity::load_or_create(&dir.path().join("rstate"))?;
    let store = tokio::task::spawn_blocking(move || Store::open(&store_dir)).await??;
    let admission = Admission {
        allow: vec![],
        pairing_secret: Some(SECRET.as_bytes().to_vec()),
    };
    let receiver = Receiver::bind_with(identity, store, "127.0.0.1:0".parse()?, 4, admission)?
        .with_limit_rate(Some(LIMIT.parse()?));
    let addr = receiver.local_addr()?;
    let stop = CancellationToken::new();
    let served = tokio::spawn(receiver.serve(stop.clone()));

    let source = dir.path().join("src");
    write_files(&source)?;
    let secret = dir.path().join("secret");
    std::fs::write(&secret, SECRET)?;
    let settings = SenderConfig {
        host: Some(addr.ip().to_string()),
        port: Some(addr.port()),
        source: Some(source.clone()),
        name: Some("laptop".into()),
        folder: Some("docs".into()),
        state: Some(dir.path().join("sstate")),
        once: Some(true),
        pairing_secret_file: Some(secret),
        ..Default::default()
    }
    .settings()?;
    let status = SenderStatus::new();
    let sending = tokio::spawn(ferry_agent::sender::run(
        settings,
        CancellationToken::new(),
        status.clone(),
        |_| {},
    ));

    let sent = || status.progress.snapshot().bytes_done;
    let deadline = Instant::now() + Duration::from_secs(30);
    while sent() == 0 {
        anyhow::ensure!(Instant::now() < deadline, "no file data left the sender");
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
    tokio::time::sleep(Duration::from_secs(1)).await;
    let after_a_second = sent();
    // 4 MB in the second, 1 MB of window, 0.4 MB of burst, a frame per
    // stream in flight: about 5.5 MB; 12 MB without the small window.
    assert!(
        after_a_second <= 8_500_000,
        "{after_a_second} bytes left the sender in its first second at {LIMIT}"
    );

    let summary = sending.await??;
    assert_eq!(summary.bytes_file_data, (FILES * FILE_SIZE) as u64);
    tree::assert_same(&source, &dir.path().join("store/laptop/docs"))?;
    stop.cancel();
    served.await?;
    Ok(())
}
