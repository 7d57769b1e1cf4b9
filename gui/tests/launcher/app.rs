//! The launcher driven through its accessibility tree with egui_kittest: no
//! display needed. The agent runs for real on loopback.

use std::path::Path;
use std::time::{Duration, Instant};

use eframe::egui;
use egui_kittest::kittest::{NodeT, Queryable};
use egui_kittest::Harness;
use ferry_agent::compress::CompressMode;
use ferry_agent::config::{ReceiverConfig, SenderConfig};
use ferry_gui::form::label;
use ferry_gui::settings::{generate_secret, Role};
use ferry_gui::ui::button;
use ferry_gui::LauncherApp;

use super::util::{self, is_disabled, path, runtime, sender_app, step_until};

fn harness(app: LauncherApp) -> Harness<'static, LauncherApp> {
    util::harness(app, [1000.0, 2000.0])
}

/// A receiver app with a valid form in `dir`.
fn receiver_app(dir: &Path, rt: &tokio::runtime::Runtime, secret: &str) -> LauncherApp {
    let mut app = LauncherApp::new(dir.join("rconfig"), rt.handle().clone());
    app.set_role(Role::Receiver);
    let f = &mut app.settings.receiver;
    f.host = "127.0.0.1".into();
    f.port = "0".into();
    f.store = path(&dir.join("store"));
    f.state = path(&dir.join("rstate"));
    f.pairing_secret = secret.into();
    app
}

#[test]
fn switching_roles_shows_the_other_form() {
    let dir = tempfile::tempdir().unwrap();
    let rt = runtime();
    let mut h = harness(LauncherApp::new(
        dir.path().join("config"),
        rt.handle().clone(),
    ));
    h.run();
    assert_eq!(h.state().role(), Role::Sender);
    assert!(h.query_by_label(label::SOURCE).is_some());
    assert!(h.query_by_label(label::STORE).is_none());
    h.get_by_label(button::RECEIVER).click();
    h.run();
    assert_eq!(h.state().role(), Role::Receiver);
    assert!(h.query_by_label(label::STORE).is_some());
    assert!(h.query_by_label(label::MAX_CLIENTS).is_some());
    assert!(h.query_by_label(label::SOURCE).is_none());
    h.get_by_label(button::SENDER).click();
    h.run();
    assert_eq!(h.state().role(), Role::Sender);
}

#[test]
fn an_invalid_port_disables_start_and_says_why() {
    let dir = tempfile::tempdir().unwrap();
    let rt = runtime();
    let mut app = receiver_app(dir.path(), &rt, "");
    app.settings.receiver.port.clear();
    let mut h = harness(app);
    h.run();
    h.get_by_label(label::PORT).focus();
    h.run();
    h.get_by_label(label::PORT).type_text("70000");
    h.run();
    assert_eq!(h.state().settings.receiver.port, "70000");
    assert!(is_disabled(&h, button::START));
    assert!(h
        .query_by_label_contains("Cannot start yet: Port: must be a number from 0 to 65535")
        .is_some());
    assert!(h
        .query_by_label("must be a number from 0 to 65535")
        .is_some());

    h.state_mut().settings.receiver.port.clear();
    h.run();
    h.get_by_label(label::PORT).focus();
    h.get_by_label(label::PORT).type_text("7000");
    h.run();
    assert_eq!(h.state().settings.receiver.port, "7000");
    assert!(!is_disabled(&h, button::START));
    assert!(h.query_by_label_contains("Cannot start yet").is_none());
}

#[test]
fn a_bad_bandwidth_limit_disables_start_and_says_why() {
    let dir = tempfile::tempdir().unwrap();
    let rt = runtime();
    let mut h = harness(receiver_app(dir.path(), &rt, ""));
    h.run();
    assert!(!is_disabled(&h, button::START));
    let field = h.get_by_label(label::LIMIT_RATE);
    assert!(
        field
            .accesskit_node()
            .description()
            .is_some_and(|d| d.contains(ferry_gui::form::LIMIT_RATE_EXAMPLE)),
        "the hover hint gives an example schedule"
    );
    field.focus();
    h.run();
    h.get_by_label(label::LIMIT_RATE)
        .type_text("25:00-18:00=1MB/s");
    h.run();
    assert_eq!(h.state().settings.receiver.limit_rate, "25:00-18:00=1MB/s");
    assert!(is_disabled(&h, button::START));
    assert!(h
        .query_by_label_contains("Cannot start yet: Bandwidth limit: \"25:00-18:00\"")
        .is_some());

    h.state_mut().settings.receiver.limit_rate.clear();
    h.run();
    h.get_by_label(label::LIMIT_RATE).focus();
    h.get_by_label(label::LIMIT_RATE)
        .type_text("08:00-18:00=2MB/s,10MB/s");
    h.run();
    assert!(!is_disabled(&h, button::START));
    assert!(h.query_by_label_contains("Cannot start yet").is_none());
    assert!(h.query_by_label_contains("Bandwidth limit:").is_none());
}

#[test]
fn compression_is_chosen_by_label() {
    let dir = tempfile::tempdir().unwrap();
    let rt = runtime();
    let mut h = harness(sender_app(dir.path(), &rt, "", 7878));
    h.run();
    assert_eq!(h.state().settings.sender.compress, CompressMode::Auto);
    h.get_by_label(label::COMPRESS).click();
    h.run();
    h.get_by_label("Off").click();
    h.run();
    assert_eq!(h.state().settings.sender.compress, CompressMode::Off);
    assert!(!is_disabled(&h, button::START));
}

#[test]
fn watch_mode_is_a_checkbox_by_label() {
    let dir = tempfile::tempdir().unwrap();
    let rt = runtime();
    let mut h = harness(sender_app(dir.path(), &rt, "", 7878));
    h.run();
    assert!(!h.state().settings.sender.watch);
    h.get_by_label(label::WATCH).click();
    h.run();
    assert!(h.state().settings.sender.watch);
    assert!(!is_disabled(&h, button::START));
}

#[test]
fn a_sender_form_is_checked_as_typed() {
    let dir = tempfile::tempdir().unwrap();
    let rt = runtime();
    let mut app = sender_app(dir.path(), &rt, "", 7878);
    app.settings.sender.every.clear();
    let mut h = harness(app);
    h.run();
    h.get_by_label(label::EVERY).focus();
    h.get_by_label(label::EVERY).type_text("often");
    h.run();
    assert!(is_disabled(&h, button::START));
    assert!(h.query_by_label_contains("Period: \"often\"").is_some());
    h.state_mut().settings.sender.every.clear();
    h.run();
    h.get_by_label(label::EVERY).focus();
    h.get_by_label(label::EVERY).type_text("15m");
    h.run();
    assert!(!is_disabled(&h, button::START));
}

#[test]
fn receiver_and_sender_run_on_loopback_and_stop() {
    let dir = tempfile::tempdir().unwrap();
    let rt = runtime();
    let secret = generate_secret().unwrap();

    let mut rh = harness(receiver_app(dir.path(), &rt, &secret));
    rh.run();
    rh.get_by_label(button::START).click();
    step_until(&mut rh, "the receiver to listen", |h| {
        h.state().receiver.addr.is_some()
    });
    let port = rh.state().receiver.addr.unwrap().port();
    assert!(rh
        .query_by_label_contains("Listening on 127.0.0.1:")
        .is_some());
    assert!(
        is_disabled(&rh, button::RECEIVER),
        "roles are locked while running"
    );

    let mut sh = harness(sender_app(dir.path(), &rt, &secret, port));
    sh.run();
    assert!(sh.query_by_label("no runs yet").is_some());
    sh.get_by_label(button::START).click();
    step_until(&mut sh, "a history row", |h| !h.state().history.is_empty());
    // The phase turns idle just after the run is reported.
    step_until(&mut sh, "the run to be shown, and the sender idle", |h| {
        h.query_by_label("complete").is_some() && h.query_by_label_contains("Idle until").is_some()
    });
    let line = sh
        .state()
        .running
        .as_ref()
        .unwrap()
        .sender_status()
        .unwrap()
        .progress
        .snapshot();
    assert_eq!(line.entries_done, line.entries_total, "{line:?}");
    assert_eq!(line.bytes_done, 10_005, "{line:?}");
    let done = format!("{0}/{0} entries, 9.8 KiB / 9.8 KiB", line.entries_total);
    assert!(sh.query_by_label_contains(&done).is_some(), "{done}");
    assert!(sh.query_by_label_contains(", done").is_some());
    assert!(sh.query_by_label_contains("Idle until").is_some());
    assert!(sh
        .query_by_label("2 sent, 0 unchanged, 0 deleted")
        .is_some());
    // "Data" is the files' own size (10,005 bytes), the compressed figure
    // beside it.
    assert!(sh.query_by_label_contains("9.8 KiB (").is_some());
    assert!(sh.query_by_label_contains(" B on the wire)").is_some());
    assert_eq!(
        std::fs::read_to_string(dir.path().join("store/laptop/source/a.txt")).unwrap(),
        "alpha"
    );

    // Run now: a second run, nothing changed.
    sh.get_by_label(button::RUN_NOW).click();
    step_until(&mut sh, "a second history row", |h| {
        h.state().history.len() == 2
    });
    step_until(&mut sh, "the second row", |h| {
        h.query_all_by_label("complete").count() == 2
    });
    assert!(
        sh.query_by_label("0 sent, 3 unchanged, 0 deleted")
            .is_some(),
        "{:?}",
        sh.state().history
    );

    // Close the window while it runs (stops the agent and waits for it),
    // and start again from a fresh app: the settings and earlier runs are
    // back.
    let closing = Instant::now();
    sh.state_mut().shutdown();
    assert!(sh.state().running.is_none());
    assert!(closing.elapsed() < ferry_gui::app::SHUTDOWN_TIMEOUT);
    let config = sh.state().config_dir().to_owned();
    drop(sh);
    let mut sh = harness(LauncherApp::new(config, rt.handle().clone()));
    sh.run();
    assert_eq!(sh.state().settings.sender.name, "laptop");
    assert_eq!(sh.state().settings.sender.pairing_secret, secret);
    sh.get_by_label(button::START).click();
    step_until(&mut sh, "the earlier runs and a new one", |h| {
        h.state().history.len() == 3 && h.query_all_by_label("complete").count() == 3
    });
    assert_eq!(
        sh.query_all_by_label("0 sent, 3 unchanged, 0 deleted")
            .count(),
        2
    );
    assert!(sh
        .query_by_label("2 sent, 0 unchanged, 0 deleted")
        .is_some());

    step_until(&mut rh, "the receiver's recent runs", |h| {
        h.state().receiver.runs.len() == 3 && h.query_all_by_label("laptop").count() >= 3
    });

    for h in [&mut sh, &mut rh] {
        h.get_by_label(button::STOP).click();
        h.step();
        step_until(h, "the agent to stop", |h| h.state().running.is_none());
        h.step();
        assert!(h.query_by_label("Stopped").is_some());
        assert!(!is_disabled(h, button::START));
        assert_eq!(h.state().error, None);
    }
}

#[test]
fn settings_survive_a_restart() {
    let dir = tempfile::tempdir().unwrap();
    let rt = runtime();
    let config = dir.path().join("config");
    let mut h = harness(LauncherApp::new(config.clone(), rt.handle().clone()));
    h.run();
    h.get_by_label(button::RECEIVER).click();
    h.run();
    h.state_mut().settings.receiver.host.clear();
    h.run();
    h.get_by_label(label::HOST).focus();
    h.get_by_label(label::HOST).type_text("127.0.0.1");
    h.run();
    h.get_by_label("Generate pairing secret").click();
    h.run();
    let before = h.state().settings.clone();
    assert_eq!(before.receiver.host, "127.0.0.1");
    assert_eq!(before.receiver.pairing_secret.len(), 64);
    // Window close.
    h.state_mut().shutdown();
    drop(h);

    let h = harness(LauncherApp::new(config, rt.handle().clone()));
    assert_eq!(h.state().settings, before);
    assert_eq!(h.state().role(), Role::Receiver);
    assert_eq!(h.state().error, None);
}

#[test]
fn saved_config_files_are_what_ferry_reads() {
    let dir = tempfile::tempdir().unwrap();
    let rt = runtime();
    let secret = generate_secret().unwrap();

    let mut app = receiver_app(dir.path(), &rt, &secret);
    app.settings.receiver.port = "9100".into();
    let file = dir.path().join("out/receiver.toml");
    app.config_file.insert(Role::Receiver, path(&file));
    let mut h = harness(app);
    h.run();
    h.get_by_label(button::SAVE_CONFIG).click();
    h.run();
    assert_eq!(h.state().error, None);
    assert!(h.query_by_label_contains("Saved ").is_some());
    let settings = ReceiverConfig::load(&file).unwrap().settings().unwrap();
    assert_eq!(settings.listen, "127.0.0.1:9100".parse().unwrap());
    assert_eq!(settings.pairing_secret, Some(secret.as_bytes().to_vec()));
    assert_eq!(settings.store, dir.path().join("store"));
    assert!(std::fs::read_to_string(&file)
        .unwrap()
        .contains("ferry receive --config"));

    let mut app = sender_app(dir.path(), &rt, &secret, 9100);
    app.settings.sender.limit_rate = "08:00-18:00=2MB/s,10MB/s".into();
    app.settings.sender.compress = CompressMode::Off;
    let file = dir.path().join("out/sender.toml");
    app.config_file.insert(Role::Sender, path(&file));
    let mut h = harness(app);
    h.run();
    h.get_by_label(button::SAVE_CONFIG).click();
    h.run();
    assert_eq!(h.state().error, None);
    let settings = SenderConfig::load(&file).unwrap().settings().unwrap();
    assert_eq!(settings.every, Some(Duration::from_secs(3600)));
    assert_eq!(settings.name.as_str(), "laptop");
    assert_eq!(settings.pairing_secret, Some(secret.as_bytes().to_vec()));
    assert_eq!(settings.compress, CompressMode::Off);
    let schedule = settings.limit_rate.unwrap();
    assert_eq!(schedule.rate_at(12 * 60), Some(2_000_000));
    assert_eq!(schedule.rate_at(20 * 60), Some(10_000_000));
}

#[test]
fn tab_moves_between_fields_and_text_can_grow() {
    let dir = tempfile::tempdir().unwrap();
    let rt = runtime();
    let mut h = harness(receiver_app(dir.path(), &rt, ""));
    h.run();
    h.get_by_label(label::HOST).focus();
    h.run();
    assert!(h.get_by_label(label::HOST).is_focused());
    h.key_press(egui::Key::Tab);
    h.run();
    assert!(h.get_by_label(label::PORT).is_focused());

    let before = h.ctx.zoom_factor();
    for _ in 0..5 {
        h.get_by_label("Larger text").click();
        h.run();
    }
    assert!(
        h.ctx.zoom_factor() >= before + 0.4,
        "{}",
        h.ctx.zoom_factor()
    );
    assert!(h.query_by_label_contains("text 150%").is_some());
    // Still usable: the form and Start are there and valid.
    assert!(h.query_by_label(label::STORE).is_some());
    assert!(!is_disabled(&h, button::START));
}

#[test]
fn the_sender_form_counts_what_its_exclude_patterns_leave_out() {
    let dir = tempfile::tempdir().unwrap();
    let rt = runtime();
    let mut app = sender_app(dir.path(), &rt, "secret", 7878);
    let source = dir.path().join("source");
    std::fs::create_dir_all(source.join("node_modules/pkg")).unwrap();
    std::fs::write(source.join("node_modules/pkg/index.js"), "x").unwrap();
    std::fs::write(source.join("debug.log"), "x").unwrap();
    app.settings.sender.exclude = "node_modules/\n*.log\n".into();
    let mut h = harness(app);
    h.run();
    assert!(h.query_by_label(label::EXCLUDE).is_some());
    h.get_by_label(ferry_gui::ui::sender::COUNT_EXCLUDED)
        .click();
    // Counted on a thread of its own; the panel shows it once done.
    step_until(&mut h, "the exclusion count", |h| {
        h.query_by_label_contains("Excluded: 1 directory and 1 file")
            .is_some()
    });
    // a.txt, sub, sub/b.txt are sent.
    assert!(h.query_by_label_contains("3 entries to send").is_some());
    // The patterns go into the sender's config, one per line.
    let config = h.state().settings.sender.to_config(None).unwrap();
    assert_eq!(config.exclude, ["node_modules/", "*.log"]);
    // A changed pattern makes the count stale.
    h.state_mut().settings.sender.exclude.push_str("sub/\n");
    h.run();
    assert!(h.query_by_label_contains("count again").is_some());
}

#[test]
fn a_watching_sender_says_how_many_directories_it_watches_and_when_it_last_sent() {
    let dir = tempfile::tempdir().unwrap();
    let rt = runtime();
    let secret = generate_secret().unwrap();
    let mut rh = harness(receiver_app(dir.path(), &rt, &secret));
    rh.run();
    rh.get_by_label(button::START).click();
    step_until(&mut rh, "the receiver to listen", |h| {
        h.state().receiver.addr.is_some()
    });
    let port = rh.state().receiver.addr.unwrap().port();

    let mut app = sender_app(dir.path(), &rt, &secret, port);
    app.settings.sender.watch = true;
    let mut sh = harness(app);
    sh.run();
    sh.get_by_label(button::START).click();
    // The source holds itself and `sub`.
    step_until(&mut sh, "the watching status", |h| {
        h.query_by_label_contains("Watching 2 directories")
            .is_some()
    });
    assert!(sh.query_by_label("No change sent yet").is_some());
    std::fs::write(dir.path().join("source/sub/c.txt"), "new").unwrap();
    step_until(&mut sh, "the change sent", |h| {
        h.query_by_label_contains("Last change sent at").is_some()
    });
    assert_eq!(
        std::fs::read_to_string(dir.path().join("store/laptop/source/sub/c.txt")).unwrap(),
        "new"
    );
    sh.state_mut().shutdown();
    rh.state_mut().shutdown();
}
