//! Who gets in: unknown senders, pairing, allow lists, names, and the
//! receiver's pinned identity.

use std::net::SocketAddr;
use std::path::Path;

use ferry_agent::identity::Identity;
use ferry_agent::receiver::Admission;
use ferry_agent::sender::{RunError, SenderError};
use ferry_agent::stream::Channel;
use ferry_agent::{tls, transport};
use ferry_proto::{Message, RefuseCode};
use ferry_tests::tree;

use crate::util::{send, send_config, TestReceiver, TestSender};

const SECRET: &str = "pairing secret for tests";

/// An admitted session that sends nothing more: it holds one client slot
/// until dropped.
pub struct SlotHolder {
    _endpoint: quinn::Endpoint,
    _conn: quinn::Connection,
    _control: Channel,
}

/// Connects as the sender whose state is `state`, says Hello as `name`, and
/// waits for Welcome.
pub async fn hold_slot(state: &Path, addr: SocketAddr, name: &str) -> anyhow::Result<SlotHolder> {
    let identity = Identity::load_or_create(state)?;
    let endpoint = transport::client_endpoint(&identity, addr)?;
    let conn = transport::connect(&endpoint, addr).await?;
    let (control, answer) = crate::util::hello(&conn, name, None).await?;
    match answer {
        Message::Welcome(_) => Ok(SlotHolder {
            _endpoint: endpoint,
            _conn: conn,
            _control: control,
        }),
        other => anyhow::bail!("expected Welcome, got {other:?}"),
    }
}

fn refusal(result: Result<impl std::fmt::Debug, SenderError>) -> (RefuseCode, String) {
    match result {
        Err(SenderError::Run(RunError::Refused { code, message })) => (code, message),
        other => panic!("expected a refusal, got {other:?}"),
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_unknown_sender_is_refused_with_what_to_do() -> anyhow::Result<()> {
    let dir = tempfile::tempdir()?;
    let receiver = TestReceiver::with_secret(dir.path(), SECRET).await?;
    let sender = TestSender::new(dir.path(), "stranger")?;
    tree::write(&sender.source, "x", "x")?;
    let (code, message) = refusal(send(sender.config(&receiver).settings()?).await);
    assert_eq!(code, RefuseCode::UnknownSender);
    let id = Identity::load_or_create(&sender.state)?.id;
    assert!(message.contains(&id.to_string()), "{message}");
    assert!(
        message.contains("--allow") && message.contains("--pairing-secret-file"),
        "{message}"
    );
    // Nothing of it was recorded or written.
    assert!(receiver.store.sender_by_device(&id.to_string())?.is_none());
    assert!(!receiver.mirror("stranger", "docs").exists());
    receiver.stop().await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_wrong_pairing_secret_is_refused() -> anyhow::Result<()> {
    let dir = tempfile::tempdir()?;
    let receiver = TestReceiver::with_secret(dir.path(), SECRET).await?;
    let sender = TestSender::new(dir.path(), "guess")?;
    let (code, _) = refusal(
        send(
            sender
                .with_secret(&receiver, "not the secret")?
                .settings()?,
        )
        .await,
    );
    assert_eq!(code, RefuseCode::BadPairingSecret);
    receiver.stop().await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn pairing_once_lets_later_runs_in_without_the_secret() -> anyhow::Result<()> {
    let dir = tempfile::tempdir()?;
    let receiver = TestReceiver::with_secret(dir.path(), SECRET).await?;
    let sender = TestSender::new(dir.path(), "laptop")?;
    tree::write(&sender.source, "a", "1")?;
    send_config(&sender.with_secret(&receiver, SECRET)?).await?;
    tree::write(&sender.source, "b", "2")?;
    let later = send_config(&sender.config(&receiver)).await?;
    assert_eq!(later.files_sent, 1);
    tree::assert_same(&sender.source, &receiver.mirror("laptop", "docs"))?;
    receiver.stop().await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_allowed_device_needs_no_secret() -> anyhow::Result<()> {
    let dir = tempfile::tempdir()?;
    let sender = TestSender::new(dir.path(), "office")?;
    let id = Identity::load_or_create(&sender.state)?.id;
    let receiver = TestReceiver::start(
        dir.path(),
        4,
        Admission {
            allow: vec![id],
            pairing_secret: None,
        },
    )
    .await?;
    tree::write(&sender.source, "a", "1")?;
    assert_eq!(send_config(&sender.config(&receiver)).await?.files_sent, 1);
    receiver.stop().await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_name_belongs_to_one_device() -> anyhow::Result<()> {
    let dir = tempfile::tempdir()?;
    let receiver = TestReceiver::with_secret(dir.path(), SECRET).await?;
    let owner = TestSender::new(dir.path(), "laptop")?;
    tree::write(&owner.source, "mine", "mine")?;
    send_config(&owner.with_secret(&receiver, SECRET)?).await?;
    // Another device with the same name and even the right secret.
    let impostor = TestSender {
        state: dir.path().join("impostor-state"),
        ..TestSender::new(dir.path(), "laptop")?
    };
    let (code, message) = refusal(send(impostor.with_secret(&receiver, SECRET)?.settings()?).await);
    assert_eq!(code, RefuseCode::NameTaken, "{message}");
    assert_eq!(
        std::fs::read(receiver.mirror("laptop", "docs").join("mine"))?,
        b"mine"
    );
    receiver.stop().await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_changed_receiver_identity_is_a_hard_error() -> anyhow::Result<()> {
    let dir = tempfile::tempdir()?;
    let receiver = TestReceiver::with_secret(dir.path(), SECRET).await?;
    let addr = receiver.addr;
    let sender = TestSender::new(dir.path(), "laptop")?;
    tree::write(&sender.source, "a", "1")?;
    let config = sender.with_secret(&receiver, SECRET)?;
    send_config(&config).await?;
    let state = receiver.state_dir.clone();
    receiver.stop().await?;

    // Same store and address, new identity.
    std::fs::remove_dir_all(&state)?;
    let admission = Admission {
        allow: vec![],
        pairing_secret: Some(SECRET.into()),
    };
    let receiver = TestReceiver::start_at(dir.path(), addr, 8, admission).await?;
    let err = send(config.settings()?)
        .await
        .expect_err("a changed identity must not be accepted");
    let message = err.to_string();
    assert!(matches!(err, SenderError::Run(RunError::Pin(_))), "{err:?}");
    assert!(
        message.contains("receivers.toml") && message.contains("--receiver-id"),
        "{message}"
    );
    assert!(message.contains(&receiver.id.to_string()), "{message}");

    // The user may accept the new identity explicitly. It is a new receiver
    // as far as the sender's index goes, so everything is offered again.
    let accepted = ferry_agent::config::SenderConfig {
        receiver_id: Some(receiver.id.to_string()),
        ..config
    };
    tree::write(&sender.source, "b", "2")?;
    assert_eq!(send_config(&accepted).await?.errors, 0);
    tree::assert_same(&sender.source, &receiver.mirror("laptop", "docs"))?;
    receiver.stop().await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn pairing_proof_is_bound_to_the_tls_session() -> anyhow::Result<()> {
    // A proof computed for one connection is rejected on another: replaying
    // an observed Hello does not pair an attacker.
    let dir = tempfile::tempdir()?;
    let receiver = TestReceiver::with_secret(dir.path(), SECRET).await?;
    let identity = Identity::load_or_create(&dir.path().join("attacker"))?;
    let endpoint = transport::client_endpoint(&identity, receiver.addr)?;
    let first = transport::connect(&endpoint, receiver.addr).await?;
    let replayed = ferry_proto::pairing_proof(SECRET.as_bytes(), &tls::pairing_material(&first)?);
    let second = transport::connect(&endpoint, receiver.addr).await?;
    let (_control, answer) = crate::util::hello(&second, "attacker", Some(replayed)).await?;
    match answer {
        Message::Refused(r) => assert_eq!(r.code, RefuseCode::BadPairingSecret),
        other => panic!("replayed proof accepted: {other:?}"),
    }
    receiver.stop().await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_stranger_gets_the_same_answer_for_a_taken_and_a_free_name() -> anyhow::Result<()> {
    // Before: a taken name was answered NameTaken before the pairing proof
    // was checked, so anyone could list the receiver's sender names.
    let dir = tempfile::tempdir()?;
    let receiver = TestReceiver::with_secret(dir.path(), SECRET).await?;
    let owner = TestSender::new(dir.path(), "laptop")?;
    tree::write(&owner.source, "mine", "mine")?;
    send_config(&owner.with_secret(&receiver, SECRET)?).await?;
    let stranger_state = dir.path().join("stranger-state");
    let mut answers = Vec::new();
    for name in ["laptop", "no-such-sender"] {
        let stranger = TestSender {
            state: stranger_state.clone(),
            ..TestSender::new(dir.path(), name)?
        };
        let wrong = refusal(send(stranger.with_secret(&receiver, "a guess")?.settings()?).await);
        let none = refusal(send(stranger.config(&receiver).settings()?).await);
        answers.push((name, wrong, none));
    }
    let (_, taken_wrong, taken_none) = &answers[0];
    let (_, free_wrong, free_none) = &answers[1];
    assert_eq!(taken_wrong.0, RefuseCode::BadPairingSecret);
    assert_eq!(taken_wrong, free_wrong, "wrong secret: {answers:?}");
    assert_eq!(taken_none.0, RefuseCode::UnknownSender);
    assert_eq!(taken_none, free_none, "no secret: {answers:?}");
    receiver.stop().await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn look_alike_and_unprintable_names_are_refused_but_names_from_before_the_rule_keep_working(
) -> anyhow::Result<()> {
    let dir = tempfile::tempdir()?;
    let receiver = TestReceiver::with_secret(dir.path(), SECRET).await?;
    let owner = TestSender::new(dir.path(), "lap")?;
    tree::write(&owner.source, "a", "a")?;
    send_config(&owner.with_secret(&receiver, SECRET)?).await?;

    // New senders: full-width "ｌａｐ" (NFKC "lap"), a right-to-left
    // override, a zero-width joiner, a newline that would forge a log line.
    for name in [
        "ｌａｐ",
        "lap\u{202e}cod.exe",
        "l\u{200d}ap",
        "lap\nINFO forged",
    ] {
        let sender = TestSender::new(dir.path(), &format!("new-{}", name.len()))?;
        let sender = TestSender {
            name: name.into(),
            ..sender
        };
        tree::write(&sender.source, "x", "x")?;
        let (code, message) =
            refusal(send(sender.with_secret(&receiver, SECRET)?.settings()?).await);
        assert_eq!(code, RefuseCode::BadName, "{name:?}: {message}");
        assert!(message.contains("--name"), "{message}");
        let id = Identity::load_or_create(&sender.state)?.id;
        assert!(receiver.store.sender_by_device(&id.to_string())?.is_none());
        assert!(!receiver.store_dir.join(name).exists(), "{name:?}");
    }

    // A sender and a folder recorded before the rule (as an older Ferry
    // did) keep working; a new folder of that sender is checked.
    let old = TestSender::new(dir.path(), "old")?;
    let old = TestSender {
        name: "old\u{202e}name".into(),
        ..old
    };
    let id = Identity::load_or_create(&old.state)?.id;
    let record = receiver
        .store
        .add_sender(&id.to_string(), &ferry_proto::Name::new(old.name.clone())?)?;
    let legacy_folder = ferry_proto::Name::new("ｄｏｃｓ")?;
    let ns = receiver.store.namespace(&record, &legacy_folder);
    let run = receiver.store.begin_run(&ns)?;
    receiver.store.finish_run(
        &ns,
        run,
        &Default::default(),
        0,
        ferry_agent::store::RunEnding::Complete,
    )?;
    tree::write(&old.source, "kept", "kept")?;
    let legacy = ferry_agent::config::SenderConfig {
        folder: Some("ｄｏｃｓ".into()),
        ..old.config(&receiver)
    };
    let summary = send_config(&legacy).await?;
    assert_eq!((summary.errors, summary.files_sent), (0, 1), "{summary:?}");
    tree::assert_same(&old.source, &receiver.mirror(&old.name, "ｄｏｃｓ"))?;
    let new_folder = ferry_agent::config::SenderConfig {
        folder: Some("ｎｅｗ".into()),
        ..old.config(&receiver)
    };
    let (code, message) = refusal(send(new_folder.settings()?).await);
    assert_eq!(code, RefuseCode::BadName, "{message}");
    assert!(message.contains("--folder"), "{message}");
    receiver.stop().await
}
