//! The receiver admin's `ferry senders`: the list, revoking and re-admitting
//! a sender and switching pairing, with the real binary beside a running
//! receiver, taking effect without a restart.

use std::net::SocketAddr;
use std::path::Path;
use std::process::{Command, Output, Stdio};
use std::time::{Duration, Instant};

use ferry_agent::config::SenderConfig;
use ferry_agent::identity::Identity;
use ferry_agent::receiver::{Admission, Receiver};
use ferry_agent::sender::{RunError, SenderError};
use ferry_agent::store::Store;
use ferry_agent::transport;
use ferry_proto::RefuseCode;
use ferry_tests::tree;
use tokio_util::sync::CancellationToken;

use crate::util::{ferry_bin, send, send_config, TestReceiver, TestSender};

const SECRET: &str = "pairing secret for the senders tests";
/// How long a change of the admin's settings may take to reach the running
/// receiver, at most, on a loaded machine (it polls every second).
const PICKED_UP: Duration = Duration::from_secs(20);

/// An admitted connection that stays open until dropped.
struct Held {
    _endpoint: quinn::Endpoint,
    conn: quinn::Connection,
    _control: ferry_agent::stream::Channel,
}

impl Held {
    fn conn(&self) -> &quinn::Connection {
        &self.conn
    }
}

/// Connects as the sender whose state is `state`, says Hello as `name` and
/// waits for Welcome.
async fn hold_slot(state: &Path, addr: SocketAddr, name: &str) -> anyhow::Result<Held> {
    let identity = Identity::load_or_create(state)?;
    let endpoint = transport::client_endpoint(&identity, addr)?;
    let conn = transport::connect(&endpoint, addr).await?;
    let (control, answer) = crate::util::hello(&conn, name, None).await?;
    anyhow::ensure!(
        matches!(answer, ferry_proto::Message::Welcome(_)),
        "expected Welcome, got {answer:?}"
    );
    Ok(Held {
        _endpoint: endpoint,
        conn,
        _control: control,
    })
}

/// `sender`'s config for a one-shot run of folder "docs" to `addr`,
/// pairing with `secret`.
fn config_for(sender: &TestSender, addr: SocketAddr, secret: &str) -> anyhow::Result<SenderConfig> {
    let path = sender.state.with_extension("secret");
    std::fs::write(&path, secret)?;
    Ok(SenderConfig {
        host: Some(addr.ip().to_string()),
        port: Some(addr.port()),
        source: Some(sender.source.clone()),
        name: Some(sender.name.clone()),
        folder: Some("docs".into()),
        state: Some(sender.state.clone()),
        once: Some(true),
        pairing_secret_file: Some(path),
        ..Default::default()
    })
}

/// Runs `ferry ARGS` off the async runtime.
async fn ferry(args: &[&str]) -> anyhow::Result<Output> {
    let args: Vec<String> = args.iter().map(|s| s.to_string()).collect();
    Ok(tokio::task::spawn_blocking(move || {
        Command::new(ferry_bin())
            .args(&args)
            .stdin(Stdio::null())
            .output()
    })
    .await??)
}

/// `ferry ARGS`, which must exit 0; its stdout.
async fn ferry_ok(args: &[&str]) -> anyhow::Result<String> {
    let out = ferry(args).await?;
    anyhow::ensure!(
        out.status.success(),
        "ferry {args:?}: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    Ok(String::from_utf8(out.stdout)?)
}

async fn list_json(store: &Path) -> anyhow::Result<serde_json::Value> {
    let store = store.to_str().unwrap_or_default();
    let text = ferry_ok(&["senders", "list", "--store", store, "--json"]).await?;
    Ok(serde_json::from_str(&text)?)
}

fn sender<'a>(list: &'a serde_json::Value, name: &str) -> &'a serde_json::Value {
    list["senders"]
        .as_array()
        .and_then(|all| all.iter().find(|s| s["name"] == name))
        .unwrap_or_else(|| panic!("no sender {name} in {list}"))
}

/// The refusal a one-shot in-process send got, if it was refused.
fn refusal<T>(result: &Result<T, SenderError>) -> Option<(RefuseCode, String)> {
    match result {
        Err(SenderError::Run(RunError::Refused { code, message })) => {
            Some((*code, message.clone()))
        }
        _ => None,
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_revoked_sender_is_refused_and_cut_off_while_its_files_stay_and_allow_readmits_it(
) -> anyhow::Result<()> {
    let dir = tempfile::tempdir()?;
    let receiver = TestReceiver::with_secret(dir.path(), SECRET).await?;
    let lap = TestSender::new(dir.path(), "lap")?;
    let config = lap.with_secret(&receiver, SECRET)?;
    tree::write(&lap.source, "notes/a.txt", "first")?;
    send_config(&config).await?;
    let store = receiver.store_dir.clone();
    let store_arg = store.to_str().unwrap_or_default().to_string();

    // A connection of lap's that stays open.
    let held = hold_slot(&lap.state, receiver.addr, "lap").await?;

    let said = ferry_ok(&["senders", "revoke", "lap", "--store", &store_arg]).await?;
    assert!(said.contains("revoked lap"), "{said}");

    // The open connection is closed, saying why.
    let deadline = Instant::now() + PICKED_UP;
    let reason = loop {
        if let Some(reason) = held.conn().close_reason() {
            break reason.to_string();
        }
        assert!(
            Instant::now() < deadline,
            "the revoked sender's connection is still open"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    };
    assert!(reason.contains("revoked"), "{reason}");
    drop(held);

    // Its next run, by the real binary, is refused in plain words, at once
    // (a one-shot sender does not retry a refusal).
    let port = receiver.addr.port().to_string();
    let (source, state) = (
        lap.source.display().to_string(),
        lap.state.display().to_string(),
    );
    let out = ferry(&[
        "send",
        "--host",
        "127.0.0.1",
        "--port",
        &port,
        "--source",
        &source,
        "--state",
        &state,
        "--name",
        "lap",
        "--folder",
        "docs",
    ])
    .await?;
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(!out.status.success(), "{stderr}");
    assert!(
        stderr.contains("revoked this sender") && stderr.contains("ferry senders allow lap"),
        "{stderr}"
    );
    // Its read-only sessions are refused too.
    let out = ferry(&[
        "history",
        "--host",
        "127.0.0.1",
        "--port",
        &port,
        "--state",
        &state,
        "--name",
        "lap",
        "--folder",
        "docs",
    ])
    .await?;
    assert!(!out.status.success());
    assert!(String::from_utf8_lossy(&out.stderr).contains("revoked"));

    // The list says so; the admin still reads its history and restores it.
    let list = list_json(&store).await?;
    assert_eq!(sender(&list, "lap")["revoked"], true);
    let history = ferry_ok(&["history", "--store", &store_arg]).await?;
    assert!(history.contains("lap"), "{history}");
    let to = dir.path().join("restored");
    let to_arg = to.display().to_string();
    ferry_ok(&[
        "restore", "--store", &store_arg, "--name", "lap", "--folder", "docs", "--to", &to_arg,
    ])
    .await?;
    assert_eq!(std::fs::read_to_string(to.join("notes/a.txt"))?, "first");

    // Allowed again: admitted within seconds, without a restart.
    let said = ferry_ok(&["senders", "allow", "lap", "--store", &store_arg]).await?;
    assert!(said.contains("admitted again"), "{said}");
    tree::write(&lap.source, "notes/a.txt", "second")?;
    let deadline = Instant::now() + PICKED_UP;
    loop {
        let result = send(config.settings()?).await;
        match refusal(&result) {
            Some((RefuseCode::Revoked, _)) if Instant::now() < deadline => {
                tokio::time::sleep(Duration::from_millis(100)).await;
            }
            _ => {
                result?;
                break;
            }
        }
    }
    assert_eq!(
        std::fs::read_to_string(receiver.mirror("lap", "docs").join("notes/a.txt"))?,
        "second"
    );
    assert_eq!(sender(&list_json(&store).await?, "lap")["revoked"], false);
    receiver.stop().await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn pairing_switched_off_refuses_a_new_sender_with_the_secret_and_on_admits_it(
) -> anyhow::Result<()> {
    let dir = tempfile::tempdir()?;
    let receiver = TestReceiver::with_secret(dir.path(), SECRET).await?;
    let store_arg = receiver.store_dir.display().to_string();
    let said = ferry_ok(&["senders", "pairing", "off", "--store", &store_arg]).await?;
    assert!(said.contains("pairing is off"), "{said}");

    // A probe with a wrong secret tells when the running receiver has
    // picked the switch up: refused for a bad secret before, for pairing
    // being off after (a wrong secret registers nothing either way).
    let probe = TestSender::new(dir.path(), "probe")?;
    let probe_config = probe.with_secret(&receiver, "wrong secret")?;
    let deadline = Instant::now() + PICKED_UP;
    loop {
        let result = send(probe_config.settings()?).await;
        match refusal(&result) {
            Some((RefuseCode::UnknownSender, message)) => {
                assert!(message.contains("ferry senders pairing on"), "{message}");
                break;
            }
            Some((RefuseCode::BadPairingSecret, _)) if Instant::now() < deadline => {
                tokio::time::sleep(Duration::from_millis(100)).await;
            }
            other => panic!("unexpected answer to the probe: {other:?}"),
        }
    }

    // The right secret does not get a new sender in now.
    let desk = TestSender::new(dir.path(), "desk")?;
    tree::write(&desk.source, "x", "x")?;
    let config = desk.with_secret(&receiver, SECRET)?;
    let (code, message) = refusal(&send(config.settings()?).await).expect("admitted");
    assert_eq!(code, RefuseCode::UnknownSender);
    assert!(message.contains("switched pairing off"), "{message}");
    let id = Identity::load_or_create(&desk.state)?.id;
    assert!(receiver.store.sender_by_device(&id.to_string())?.is_none());
    let list = list_json(&receiver.store_dir).await?;
    assert_eq!(list["pairing"], false);

    // Switched on again: admitted within seconds.
    ferry_ok(&["senders", "pairing", "on", "--store", &store_arg]).await?;
    let deadline = Instant::now() + PICKED_UP;
    loop {
        let result = send(config.settings()?).await;
        match refusal(&result) {
            Some((RefuseCode::UnknownSender, _)) if Instant::now() < deadline => {
                tokio::time::sleep(Duration::from_millis(100)).await;
            }
            _ => {
                result?;
                break;
            }
        }
    }
    assert!(receiver.mirror("desk", "docs").join("x").is_file());
    assert_eq!(list_json(&receiver.store_dir).await?["pairing"], true);
    receiver.stop().await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn senders_list_json_gives_each_senders_folders_bytes_quota_and_connection(
) -> anyhow::Result<()> {
    let dir = tempfile::tempdir()?;
    let store_dir = dir.path().join("store");
    let identity = Identity::load_or_create(&dir.path().join("rstate"))?;
    let store = {
        let store_dir = store_dir.clone();
        tokio::task::spawn_blocking(move || Store::open(&store_dir)).await??
    };
    let admission = Admission {
        allow: vec![],
        pairing_secret: Some(SECRET.as_bytes().to_vec()),
    };
    let receiver = Receiver::bind_with(identity, store, "127.0.0.1:0".parse()?, 8, admission)?
        .with_quota(Some(10_000));
    let addr = receiver.local_addr()?;
    let token = CancellationToken::new();
    let task = tokio::spawn(receiver.serve(token.clone()));

    // lap: 1,000 bytes, replaced by 400 (1,000 old), plus 100 in "photos".
    let lap = TestSender::new(dir.path(), "lap")?;
    let config = config_for(&lap, addr, SECRET)?;
    tree::write(&lap.source, "a", vec![1u8; 1000])?;
    send_config(&config).await?;
    tree::write(&lap.source, "a", vec![2u8; 400])?;
    send_config(&config).await?;
    let photos = TestSender::new(dir.path(), "lap-photos")?;
    tree::write(&photos.source, "p", vec![3u8; 100])?;
    let photos_config = SenderConfig {
        source: Some(photos.source.clone()),
        state: Some(lap.state.clone()),
        name: Some("lap".into()),
        folder: Some("photos".into()),
        ..config.clone()
    };
    send_config(&photos_config).await?;
    // desk: one empty run, and connected now.
    let desk = TestSender::new(dir.path(), "desk")?;
    send_config(&config_for(&desk, addr, SECRET)?).await?;
    let held = hold_slot(&desk.state, addr, "desk").await?;

    let deadline = Instant::now() + PICKED_UP;
    let list = loop {
        let list = list_json(&store_dir).await?;
        if sender(&list, "desk")["connected"] == true || Instant::now() >= deadline {
            break list;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    };
    assert_eq!(list["receiver_running"], true);
    assert_eq!(list["pairing"], true);
    assert_eq!(list["pairing_secret"], true);
    assert_eq!(list["quota"], 10_000);
    let l = sender(&list, "lap");
    let lap_id = Identity::load_or_create(&lap.state)?.id.to_string();
    assert_eq!(l["device"], lap_id.as_str());
    assert_eq!(l["folders"], serde_json::json!(["docs", "photos"]));
    assert_eq!(l["current_bytes"], 500);
    assert_eq!(l["old_bytes"], 1000);
    assert_eq!(l["stored_bytes"], 1500);
    assert_eq!(l["quota_used_percent"], 15.0);
    assert_eq!(l["last_run"]["folder"], "photos");
    assert_eq!(l["last_run"]["result"], "complete");
    assert_eq!(l["revoked"], false);
    assert_eq!(l["connected"], false);
    let d = sender(&list, "desk");
    assert_eq!(d["connected"], true, "{list}");
    assert_eq!(d["current_bytes"], 0);
    assert_eq!(d["folders"], serde_json::json!(["docs"]));

    // The text form names both, and who is connected.
    let text = ferry_ok(&[
        "senders",
        "list",
        "--store",
        store_dir.to_str().unwrap_or_default(),
    ])
    .await?;
    assert!(text.contains("desk [connected]"), "{text}");
    assert!(text.contains("lap [not connected]"), "{text}");
    assert!(text.contains("15% of the"), "{text}");

    // Stopped, the receiver leaves no live record: nobody is connected.
    drop(held);
    token.cancel();
    task.await?;
    let list = list_json(&store_dir).await?;
    assert_eq!(list["receiver_running"], false);
    assert_eq!(sender(&list, "desk")["connected"], false);
    assert_eq!(list["quota"], serde_json::Value::Null);
    Ok(())
}
