//! What the launcher says about a running sender, and what each role's form
//! offers, at the window's default size, through the accessibility tree.
//! The agent runs for real on loopback.

use std::path::Path;

use egui_kittest::kittest::{NodeT, Queryable};
use egui_kittest::Harness;
use ferry_agent::status::SenderPhase;
use ferry_gui::form::label;
use ferry_gui::settings::Role;
use ferry_gui::ui::{button, WINDOW_SIZE};
use ferry_gui::LauncherApp;

use super::util::{self, runtime, step_until};

fn harness(app: LauncherApp) -> Harness<'static, LauncherApp> {
    util::harness(app, WINDOW_SIZE)
}

/// A UDP port on loopback where nothing listens.
fn dead_port() -> u16 {
    let socket = std::net::UdpSocket::bind("127.0.0.1:0").unwrap();
    socket.local_addr().unwrap().port()
}

/// A sender app with a valid form in `dir`, sending to `port`.
fn sender_app(dir: &Path, rt: &tokio::runtime::Runtime, port: u16) -> LauncherApp {
    let source = dir.join("source");
    std::fs::create_dir_all(&source).unwrap();
    std::fs::write(source.join("a.txt"), "alpha").unwrap();
    let mut app = LauncherApp::new(dir.join("sconfig"), rt.handle().clone());
    app.set_role(Role::Sender);
    let f = &mut app.settings.sender;
    f.host = "127.0.0.1".into();
    f.port = port.to_string();
    f.source = source.display().to_string();
    f.every = "1h".into();
    f.name = "laptop".into();
    f.state = dir.join("sstate").display().to_string();
    app
}

fn phase(h: &Harness<'_, LauncherApp>) -> Option<SenderPhase> {
    let task = h.state().running.as_ref()?;
    Some(task.sender_status()?.phase())
}

fn assert_not_sending(h: &Harness<'_, LauncherApp>) {
    assert!(
        h.query_by_label_contains("Sending").is_none(),
        "says it is sending while it is not"
    );
    assert!(
        h.query_by_label("Run progress").is_none(),
        "shows a progress bar while nothing is sent"
    );
}

#[test]
fn a_sender_whose_receiver_is_down_says_it_is_retrying_and_why_not_sending() {
    let dir = tempfile::tempdir().unwrap();
    let rt = runtime();
    let port = dead_port();
    let mut h = harness(sender_app(dir.path(), &rt, port));
    h.run();
    h.get_by_label(button::START).click();
    let connecting = format!("Connecting to 127.0.0.1:{port}");
    step_until(&mut h, "the connecting status", |h| {
        h.query_by_label_contains(&connecting).is_some() || !h.state().history.is_empty()
    });
    assert_not_sending(&h);

    // A failed attempt is retried after about a second and the next one
    // connects again: wait for a frame that shows the failure, then check
    // that very frame (the tree and the app state stay as it drew them).
    let newest_failure = |h: &Harness<'_, LauncherApp>| match h.state().history.first() {
        Some(row) => row.outcome.clone().err(),
        None => None,
    };
    step_until(&mut h, "a frame showing the failed attempt", |h| {
        let retrying = h.query_by_label_contains("Retrying in").is_some()
            || h.query_by_label_contains("Retrying now").is_some();
        retrying && newest_failure(h).is_some_and(|e| h.query_all_by_label(&e).count() == 2)
    });
    let because = newest_failure(&h).unwrap();
    assert!(because.contains(&format!("127.0.0.1:{port}")), "{because}");
    if let Some(SenderPhase::Retrying { because: now, .. }) = phase(&h) {
        assert_eq!(now, because, "the status gives the last attempt's reason");
    }
    assert_not_sending(&h);
    // The reason is shown whole, in the status area and in the History row,
    // and fits in the window: wrapped, not cut off or elided.
    let width = WINDOW_SIZE[0];
    let shown: Vec<_> = h.query_all_by_label(&because).collect();
    assert_eq!(shown.len(), 2, "status and history show: {because}");
    for node in shown {
        let rect = node.rect();
        assert!(
            rect.left() >= 0.0 && rect.right() <= width,
            "{because:?} is drawn at {rect:?}, outside the {width}-point window"
        );
    }
    assert!(h.query_by_label_contains("…").is_none(), "nothing elided");
}

#[test]
fn the_sender_form_offers_no_generate_but_the_receiver_form_does() {
    let dir = tempfile::tempdir().unwrap();
    let rt = runtime();
    let mut h = harness(sender_app(dir.path(), &rt, 7878));
    h.run();
    assert!(h.query_by_label(label::SECRET).is_some());
    assert!(h.query_by_label("Generate").is_none());
    assert!(h.query_by_label("Generate pairing secret").is_none());
    assert!(h.query_by_label("Copy pairing secret").is_none());
    assert!(
        h.query_by_label_contains("receiver's admin").is_some(),
        "the sender is told where its secret comes from"
    );
    assert!(
        h.query_by_label_contains("to each sender").is_none(),
        "no receiver-oriented hint on the sender form"
    );

    let tip =
        |h: &Harness<'_, LauncherApp>| h.get_by_label("Device id").accesskit_node().description();
    assert!(
        tip(&h).is_some_and(|t| t.contains("give it to the receiver's admin")),
        "{:?}",
        tip(&h)
    );

    h.get_by_label(button::RECEIVER).click();
    h.run();
    assert!(h.query_by_label(label::STORE).is_some());
    assert!(
        tip(&h).is_some_and(|t| t.contains("Senders pin it")),
        "{:?}",
        tip(&h)
    );
    assert!(h.query_by_label("Generate pairing secret").is_some());
    assert!(h.query_by_label_contains("to each new sender").is_some());
}

#[test]
fn the_role_tabs_say_why_they_are_disabled() {
    let dir = tempfile::tempdir().unwrap();
    let rt = runtime();
    let mut h = harness(sender_app(dir.path(), &rt, dead_port()));
    h.run();
    assert!(h.query_by_label_contains("to switch roles").is_none());
    h.get_by_label(button::START).click();
    h.run();
    assert!(h.state().running.is_some());
    for tab in [button::RECEIVER, button::SENDER] {
        assert!(h.get_by_label(tab).accesskit_node().is_disabled(), "{tab}");
    }
    assert!(
        h.query_by_label("Stop the running sender to switch roles")
            .is_some(),
        "the disabled tabs say why"
    );
    h.state_mut().shutdown();
    h.run();
    assert!(!h
        .get_by_label(button::RECEIVER)
        .accesskit_node()
        .is_disabled());
    assert!(h.query_by_label_contains("to switch roles").is_none());
}
