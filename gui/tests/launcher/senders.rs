//! The receiver's Senders view, through the accessibility tree: the list of
//! a real store, Revoke / Allow, the pairing switch, and errors in plain
//! words inside the view.

use std::path::Path;

use egui_kittest::kittest::Queryable;
use egui_kittest::Harness;
use ferry_agent::store::{read_access, RunEnding, Store};
use ferry_gui::settings::Role;
use ferry_gui::ui::senders::label;
use ferry_gui::LauncherApp;
use ferry_proto::{Name, RunReport};

use super::util::{self, runtime, step_until};

fn harness(app: LauncherApp) -> Harness<'static, LauncherApp> {
    util::harness(app, [1100.0, 2400.0])
}

/// A store with senders `lap` (a complete run of "docs") and `desk` (none).
fn store_with_senders(root: &Path) {
    let store = Store::open(root).unwrap();
    let lap = store
        .add_sender("lap-device", &Name::new("lap").unwrap())
        .unwrap();
    store
        .add_sender("desk-device", &Name::new("desk").unwrap())
        .unwrap();
    let ns = store.namespace(&lap, &Name::new("docs").unwrap());
    let run = store.begin_run(&ns).unwrap();
    store
        .finish_run(&ns, run, &RunReport::default(), 0, RunEnding::Complete)
        .unwrap();
}

/// The receiver's panel, its Store field set to `store`.
fn receiver_app(dir: &Path, rt: &tokio::runtime::Runtime, store: &Path) -> LauncherApp {
    let mut app = LauncherApp::new(dir.join("config"), rt.handle().clone());
    app.set_role(Role::Receiver);
    app.settings.receiver.store = store.display().to_string();
    app
}

#[test]
fn the_view_lists_the_stores_senders_and_revokes_and_allows_one() {
    let rt = runtime();
    let dir = tempfile::tempdir().unwrap();
    let store = dir.path().join("store");
    store_with_senders(&store);
    let mut h = harness(receiver_app(dir.path(), &rt, &store));
    step_until(&mut h, "the list", |h| {
        h.query_by_label(&label::revoke("lap")).is_some()
    });
    assert!(h.query_by_label(label::HEADING).is_some());
    assert!(h.query_by_label("desk").is_some());
    assert!(h.query_by_label(&label::revoke("desk")).is_some());
    assert!(h.query_by_label("docs").is_some());
    assert!(h.query_by_label_contains("complete").is_some());
    assert!(h
        .query_by_label_contains("No receiver is running")
        .is_some());

    h.get_by_label(&label::revoke("lap")).click();
    step_until(&mut h, "lap revoked", |h| {
        h.query_by_label(&label::allow("lap")).is_some()
    });
    assert!(h.query_by_label_contains("Revoked lap").is_some());
    assert!(h.query_by_label("revoked").is_some());
    let access = read_access(&store).unwrap();
    assert!(access.revoked.contains("lap-device"));
    assert!(!access.revoked.contains("desk-device"));

    h.get_by_label(&label::allow("lap")).click();
    step_until(&mut h, "lap allowed", |h| {
        h.query_by_label(&label::revoke("lap")).is_some()
    });
    assert!(h.query_by_label_contains("lap is admitted again").is_some());
    assert!(read_access(&store).unwrap().revoked.is_empty());
}

#[test]
fn the_pairing_switch_turns_pairing_off_and_on() {
    let rt = runtime();
    let dir = tempfile::tempdir().unwrap();
    let store = dir.path().join("store");
    store_with_senders(&store);
    let mut h = harness(receiver_app(dir.path(), &rt, &store));
    step_until(&mut h, "the switch", |h| {
        h.query_by_label(label::PAIRING).is_some()
    });
    h.get_by_label(label::PAIRING).click();
    step_until(&mut h, "pairing off", |h| {
        h.query_by_label_contains("Pairing is off").is_some()
    });
    assert!(read_access(&store).unwrap().pairing_off);
    h.get_by_label(label::PAIRING).click();
    step_until(&mut h, "pairing on", |h| {
        h.query_by_label_contains("Pairing is on").is_some()
    });
    assert!(!read_access(&store).unwrap().pairing_off);
}

#[test]
fn problems_show_in_plain_words_inside_the_view() {
    let rt = runtime();
    let dir = tempfile::tempdir().unwrap();
    // No store there yet: said, not an error.
    let missing = dir.path().join("not-yet");
    let mut h = harness(receiver_app(dir.path(), &rt, &missing));
    step_until(&mut h, "the hint", |h| {
        h.query_by_label_contains("There is no store at").is_some()
    });
    // A store whose catalog is not one: the reason, and no stale list.
    let bad = dir.path().join("bad");
    std::fs::create_dir_all(bad.join(".ferry")).unwrap();
    std::fs::write(
        bad.join(".ferry/catalog.db"),
        b"not a database at all, really",
    )
    .unwrap();
    h.state_mut().settings.receiver.store = bad.display().to_string();
    step_until(&mut h, "the error", |h| {
        h.query_by_label_contains("Could not read the senders of")
            .is_some()
    });
    assert!(h.query_by_label(label::PAIRING).is_none());
    // A good store again: the error goes, the list comes.
    let good = dir.path().join("good");
    store_with_senders(&good);
    h.state_mut().settings.receiver.store = good.display().to_string();
    step_until(&mut h, "the list", |h| {
        h.query_by_label(&label::revoke("lap")).is_some()
    });
    assert!(h.query_by_label_contains("Could not read").is_none());
}
