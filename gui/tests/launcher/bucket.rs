//! A receiver that keeps its bytes in a bucket, set up and started from the
//! launcher: a real S3 server (`s3s-fs` on 127.0.0.1), a real receiver and
//! a real sender on loopback.

use std::os::unix::fs::PermissionsExt;

use egui_kittest::kittest::Queryable;
use egui_kittest::Harness;
use ferry_gui::form::label;
use ferry_gui::settings::{generate_secret, Role, RECEIVER_S3_SECRET_FILE, SETTINGS_FILE};
use ferry_gui::ui::button;
use ferry_gui::LauncherApp;
use ferry_tests::s3::{S3Server, S3Target};

use super::util::{self, is_disabled, path, runtime, sender_app, step_until};

fn harness(app: LauncherApp) -> Harness<'static, LauncherApp> {
    util::harness(app, [1000.0, 2000.0])
}

fn type_into(h: &mut Harness<'_, LauncherApp>, name: &str, text: &str) {
    h.get_by_label(name).focus();
    h.get_by_label(name).type_text(text);
    h.run_steps(3);
}

#[test]
fn a_receiver_on_a_bucket_is_set_up_started_and_sent_to_from_the_launcher() {
    let server = S3Server::start().unwrap();
    let dir = tempfile::tempdir().unwrap();
    let rt = runtime();
    let secret = generate_secret().unwrap();
    let mut app = LauncherApp::new(dir.path().join("rconfig"), rt.handle().clone());
    app.set_role(Role::Receiver);
    let f = &mut app.settings.receiver;
    f.host = "127.0.0.1".into();
    f.port = "0".into();
    f.state = path(&dir.path().join("rstate"));
    f.pairing_secret = secret.clone();
    let mut rh = harness(app);
    rh.run();
    // A directory store asks nothing of a bucket.
    assert!(rh.query_by_label(label::S3_ENDPOINT).is_none());
    let url = format!("s3://{}/office", server.bucket());
    type_into(&mut rh, label::STORE, &url);
    type_into(&mut rh, label::S3_ENDPOINT, &server.endpoint());
    type_into(&mut rh, label::S3_KEY, server.access_key());
    // An access key without its secret: Start says why it cannot.
    rh.run();
    assert!(is_disabled(&rh, button::START));
    assert!(
        rh.query_all_by_label_contains("give the secret of the access key id")
            .count()
            >= 1
    );
    type_into(&mut rh, label::S3_SECRET, server.secret_key());
    rh.run();
    assert!(!is_disabled(&rh, button::START));
    rh.get_by_label(button::START).click();
    step_until(&mut rh, "the receiver to listen", |h| {
        h.state().receiver.addr.is_some()
    });
    let port = rh.state().receiver.addr.unwrap().port();

    let mut sh = harness(sender_app(dir.path(), &rt, &secret, port));
    sh.run();
    sh.get_by_label(button::START).click();
    step_until(&mut sh, "the run to complete", |h| {
        h.query_by_label("complete").is_some()
    });
    assert!(sh
        .query_by_label("2 sent, 0 unchanged, 0 deleted")
        .is_some());
    step_until(&mut rh, "the receiver's run", |h| {
        h.state().receiver.runs.len() == 1
    });
    // The content is in the bucket's packs; this machine holds the state.
    let packs = server
        .root()
        .join(server.bucket())
        .join("office/ferry/packs");
    let in_bucket = walkdir::WalkDir::new(&packs)
        .into_iter()
        .filter_map(Result::ok)
        .filter(|e| e.file_type().is_file())
        .count();
    assert!(in_bucket > 0, "no pack in {}", packs.display());
    assert!(!dir.path().join("rstate/store/laptop").exists());

    // The secret key is kept in a file only its owner reads, never in the
    // settings file.
    let config = rh.state().config_dir().to_owned();
    let settings = std::fs::read_to_string(config.join(SETTINGS_FILE)).unwrap();
    assert!(settings.contains(&url), "{settings}");
    assert!(!settings.contains(server.secret_key()), "{settings}");
    let kept = config.join(RECEIVER_S3_SECRET_FILE);
    assert_eq!(
        std::fs::read_to_string(&kept).unwrap().trim(),
        server.secret_key()
    );
    let mode = std::fs::metadata(&kept).unwrap().permissions().mode();
    assert_eq!(mode & 0o777, 0o600);

    for h in [&mut sh, &mut rh] {
        h.get_by_label(button::STOP).click();
        h.step();
        step_until(h, "the agent to stop", |h| h.state().running.is_none());
        assert_eq!(h.state().error, None);
    }

    // Saved as a service's config: the bucket's settings as `ferry receive`
    // reads them, readable by its owner only (the secret key is in it), and
    // without `recover`, which is for one start.
    let file = dir.path().join("out/receiver.toml");
    rh.state_mut().settings.receiver.recover = true;
    rh.state_mut()
        .config_file
        .insert(Role::Receiver, path(&file));
    rh.run();
    rh.get_by_label(button::SAVE_CONFIG).click();
    rh.run();
    assert_eq!(rh.state().error, None);
    let mode = std::fs::metadata(&file).unwrap().permissions().mode();
    assert_eq!(mode & 0o777, 0o600);
    let config = ferry_agent::config::ReceiverConfig::load(&file).unwrap();
    assert_eq!(config.recover, None);
    let settings = config.settings().unwrap();
    let bucket = settings.bucket.expect("a bucket store");
    assert_eq!(bucket.endpoint, Some(server.endpoint()));
    assert_eq!(
        bucket.secret_access_key.as_deref(),
        Some(server.secret_key())
    );
}
