//! The Backups view on a protected folder, driven through its
//! accessibility tree: a real local store holding a folder the real sender
//! sealed (through `--store`), and a real receiver over QUIC holding a
//! folder a launcher sent write-only. Locked, the view says why and lists
//! nothing, never an object's opaque `hh/…` name, even when the sender
//! form names no source or no key (and the Senders view shows the folder's
//! mode); a wrong passphrase says so; unlocked with the key file and its
//! passphrase, the real names are listed, a file's versions shown, and a
//! restore gives back the files chosen.

use std::path::Path;

use egui_kittest::kittest::Queryable;
use egui_kittest::Harness;
use ferry_agent::keys::{self, Passphrase};
use ferry_gui::backups::{KeyState, Loading};
use ferry_gui::form::Protect;
use ferry_gui::settings::{generate_secret, Role};
use ferry_gui::ui::backups::names;
use ferry_gui::ui::unlock::names as key_names;
use ferry_gui::LauncherApp;
use ferry_proto::VersionKind;

use super::backups::{send, sender_app, start_receiver};
use super::util::{self, is_disabled, path, runtime};

fn step_until(
    h: &mut Harness<'_, LauncherApp>,
    what: &str,
    done: impl FnMut(&mut Harness<'_, LauncherApp>) -> bool,
) {
    util::step_until_says(h, done, |h| {
        let b = &h.state().backups;
        format!(
            "timed out waiting for {what}: key {:?} ({:?}), dirs {:?}, error {:?}, notice {:?}",
            b.key.state, b.key.error, b.dirs, b.error, b.notice
        )
    });
}

fn click(h: &mut Harness<'_, LauncherApp>, name: &str) {
    h.get_by_label(name).click();
    h.run_steps(3);
}

fn type_into(h: &mut Harness<'_, LauncherApp>, name: &str, text: &str) {
    h.get_by_label(name).focus();
    h.get_by_label(name).type_text(text);
    h.run_steps(3);
}

/// Sends `source` once into the store `store` as the sender `name` (`None`:
/// the default, the host name), sealed to the key file `key`.
fn send_sealed(
    dir: &Path,
    source: &Path,
    store: &Path,
    key: &Path,
    name: Option<&str>,
    rt: &tokio::runtime::Runtime,
) {
    let config = ferry_agent::config::SenderConfig {
        source: Some(source.to_path_buf()),
        store: Some(store.to_path_buf()),
        once: Some(true),
        name: name.map(str::to_string),
        state: Some(dir.join("sstate")),
        protect: Some("encrypted".into()),
        key_file: Some(key.to_path_buf()),
        ..Default::default()
    };
    let settings = config.settings().unwrap();
    rt.block_on(ferry_agent::sender::run(
        settings,
        tokio_util::sync::CancellationToken::new(),
        ferry_agent::status::SenderStatus::new(),
        |_| {},
    ))
    .unwrap();
}

/// `dir/papers` (a.txt, sub/b.txt, sub/c.txt) sent once by "laptop",
/// encrypted, into `dir/store`; returns the source, the store and the key
/// file (its passphrase: "correct horse").
fn sealed_store(
    dir: &Path,
    rt: &tokio::runtime::Runtime,
) -> (std::path::PathBuf, std::path::PathBuf, std::path::PathBuf) {
    sealed_store_of(dir, Some("laptop"), rt)
}

/// As [`sealed_store`], sent by the sender `name` (`None`: the host name).
fn sealed_store_of(
    dir: &Path,
    name: Option<&str>,
    rt: &tokio::runtime::Runtime,
) -> (std::path::PathBuf, std::path::PathBuf, std::path::PathBuf) {
    let source = dir.join("papers");
    std::fs::create_dir_all(source.join("sub")).unwrap();
    std::fs::write(source.join("a.txt"), b"alpha").unwrap();
    std::fs::write(source.join("sub/b.txt"), [7u8; 10_000]).unwrap();
    std::fs::write(source.join("sub/c.txt"), b"not restored").unwrap();
    let phrase = dir.join("phrase");
    std::fs::write(&phrase, "correct horse").unwrap();
    let key = dir.join("papers.key");
    keys::create_key_file(&key, &Passphrase::File(phrase)).unwrap();
    let store = dir.join("store");
    send_sealed(dir, &source, &store, &key, name, rt);
    (source, store, key)
}

#[test]
fn the_senders_view_shows_the_folders_mode() {
    let dir = tempfile::tempdir().unwrap();
    let rt = runtime();
    let (_, store, _) = sealed_store(dir.path(), &rt);
    let mut app = LauncherApp::new(dir.path().join("rconfig"), rt.handle().clone());
    app.set_role(Role::Receiver);
    app.settings.receiver.store = path(&store);
    let mut h = util::harness(app, [1100.0, 2400.0]);
    util::step_until(&mut h, "the folder's mode", |h| {
        h.query_by_label_contains("papers (encrypted, key ")
            .is_some()
    });
}

#[test]
fn an_encrypted_folder_is_locked_until_its_key_opens_then_browsed_and_restored() {
    let dir = tempfile::tempdir().unwrap();
    let rt = runtime();
    let (source, store, key) = sealed_store(dir.path(), &rt);

    let mut app = LauncherApp::new(dir.path().join("sconfig"), rt.handle().clone());
    app.set_role(Role::Sender);
    let f = &mut app.settings.sender;
    f.source = path(&source);
    f.name = "laptop".into();
    f.protect = Protect::Encrypted;
    f.key_file = path(&key);
    let mut h = util::harness(app, [1000.0, 2400.0]);
    h.run_steps(3);
    click(&mut h, names::TAB);
    type_into(&mut h, names::STORE, &path(&store));
    click(&mut h, names::LOAD);

    // Locked: the view says what the folder is and why it waits; nothing
    // is listed, and the restore is blocked.
    step_until(&mut h, "the locked folder", |h| {
        h.query_by_label_contains("This folder is encrypted (key ")
            .is_some()
            && h.query_by_label_contains("Cannot browse yet").is_some()
    });
    assert!(h.state().backups.dirs.is_empty(), "nothing listed");
    assert!(h.query_by_label("a.txt").is_none());
    assert!(is_disabled(&h, names::RESTORE));
    assert_eq!(h.state().backups.key.key_file, path(&key), "prefilled");

    // A wrong passphrase: said in words, still locked, the field wiped.
    type_into(&mut h, key_names::PASSPHRASE, "wrong horse");
    click(&mut h, key_names::UNLOCK);
    step_until(&mut h, "the wrong passphrase", |h| {
        h.query_by_label_contains("the passphrase does not open")
            .is_some()
    });
    assert!(matches!(h.state().backups.key.state, KeyState::Locked));
    assert!(h.state().backups.key.passphrase.is_empty());

    // The right one: the real names are listed.
    type_into(&mut h, key_names::PASSPHRASE, "correct horse");
    click(&mut h, key_names::UNLOCK);
    step_until(&mut h, "the real names", |h| {
        h.query_by_label("a.txt").is_some() && h.query_by_label(&names::expand("sub")).is_some()
    });
    assert!(h.query_by_label(key_names::UNLOCKED).is_some());
    click(&mut h, &names::expand("sub"));
    step_until(&mut h, "sub's entries", |h| {
        h.query_by_label("b.txt").is_some() && h.query_by_label("c.txt").is_some()
    });

    // A real path's versions are those of its object.
    click(&mut h, &names::versions("a.txt"));
    step_until(
        &mut h,
        "a.txt's versions",
        |h| matches!(&h.state().backups.versions, Some((_, Loading::Ready(v))) if v.len() == 1),
    );
    // Opened: its real path and size, not the padded object's.
    let Some((_, Loading::Ready(v))) = &h.state().backups.versions else {
        unreachable!()
    };
    assert_eq!(v[0].path.to_string(), "a.txt");
    assert!(
        matches!(v[0].kind, VersionKind::File { size: 5, .. }),
        "{v:?}"
    );

    // Restore a.txt and sub/b.txt: the files come back, c.txt does not.
    click(&mut h, &names::select("a.txt"));
    click(&mut h, &names::select("sub/b.txt"));
    let dest = dir.path().join("restored");
    h.state_mut().backups.restore_to = path(&dest);
    h.run_steps(3);
    click(&mut h, names::RESTORE);
    step_until(&mut h, "the restore's summary", |h| {
        h.query_by_label_contains("Restored 2 files").is_some()
    });
    assert_eq!(std::fs::read(dest.join("a.txt")).unwrap(), b"alpha");
    assert_eq!(
        std::fs::read(dest.join("sub/b.txt")).unwrap(),
        [7u8; 10_000]
    );
    assert!(!dest.join("sub/c.txt").exists());
}

#[test]
fn an_object_that_does_not_open_is_reported_and_the_rest_listed() {
    let dir = tempfile::tempdir().unwrap();
    let rt = runtime();
    let (source, store, key) = sealed_store(dir.path(), &rt);
    // Flip the last byte of a.txt's object.
    let (public, _) = keys::load_public(&key).unwrap();
    let a_txt = ferry_proto::RelPath::from_bytes(b"a.txt").unwrap();
    let object = public
        .opaque_path(&a_txt)
        .under(&store.join("laptop/papers"));
    let mut bytes = std::fs::read(&object).unwrap();
    *bytes.last_mut().unwrap() ^= 1;
    std::fs::write(&object, bytes).unwrap();

    let mut app = LauncherApp::new(dir.path().join("sconfig"), rt.handle().clone());
    app.set_role(Role::Sender);
    app.settings.sender.source = path(&source);
    app.settings.sender.name = "laptop".into();
    let mut h = util::harness(app, [1000.0, 2400.0]);
    h.run_steps(3);
    click(&mut h, names::TAB);
    type_into(&mut h, names::STORE, &path(&store));
    click(&mut h, names::LOAD);
    step_until(&mut h, "the locked folder", |h| {
        h.query_by_label(key_names::UNLOCK).is_some()
    });
    // Not prefilled: the sender form names no key file.
    assert_eq!(h.state().backups.key.key_file, "");
    type_into(&mut h, key_names::KEY_FILE, &path(&key));
    type_into(&mut h, key_names::PASSPHRASE, "correct horse");
    click(&mut h, key_names::UNLOCK);
    step_until(&mut h, "the damaged object reported", |h| {
        h.query_by_label_contains("1 stored objects did not open")
            .is_some()
    });
    assert_eq!(h.state().backups.unopened.len(), 1);
    // The rest is listed by its real names.
    let root = h.state().backups.dirs.get("").cloned();
    assert!(
        matches!(&root, Some(Loading::Ready(rows)) if rows.len() == 1 && rows[0].name == "sub"),
        "{root:?}"
    );
}

/// The folder's objects as the store names them (`hh/…`), for what the
/// view must never show.
fn opaque_names(key: &Path) -> Vec<String> {
    let (public, _) = keys::load_public(key).unwrap();
    ["a.txt", "sub", "sub/b.txt", "sub/c.txt"]
        .iter()
        .map(|p| {
            let p = ferry_proto::RelPath::from_bytes(p.as_bytes()).unwrap();
            public.opaque_path(&p).to_string()
        })
        .collect()
}

/// Fails if any row listed, or any widget, shows an object's opaque name.
fn assert_no_opaque_name(h: &Harness<'_, LauncherApp>, opaque: &[String]) {
    for o in opaque {
        let first = o.split('/').next().unwrap();
        assert!(
            h.query_by_label_contains(o).is_none() && h.query_by_label(first).is_none(),
            "{o} shown"
        );
    }
    for rows in h.state().backups.dirs.values() {
        if let Loading::Ready(rows) = rows {
            for row in rows {
                let shown = row.path.to_string();
                let is_opaque = |o: &String| *o == shown || o.split('/').next() == Some(&shown);
                assert!(!opaque.iter().any(is_opaque), "opaque row {shown} listed");
            }
        }
    }
}

/// Regression: a store opened from a launcher whose sender form is empty
/// (no source, no key, no name) was browsed as a plain folder, listing the
/// objects' opaque `hh/…` names. The view asks the store for the folder's
/// protection, stays locked until the key opens, then lists real names.
#[test]
fn a_store_opened_with_an_empty_form_is_locked_until_its_key_opens() {
    let dir = tempfile::tempdir().unwrap();
    let rt = runtime();
    let (_, store, key) = sealed_store_of(dir.path(), None, &rt);
    let opaque = opaque_names(&key);

    // A fresh launcher: nothing in the sender form.
    let mut app = LauncherApp::new(dir.path().join("sconfig"), rt.handle().clone());
    app.set_role(Role::Sender);
    assert!(app.settings.sender.source.is_empty() && app.settings.sender.key_file.is_empty());
    let mut h = util::harness(app, [1000.0, 2400.0]);
    h.run_steps(3);
    click(&mut h, names::TAB);
    type_into(&mut h, names::STORE, &path(&store));
    click(&mut h, names::LOAD);

    // Never an opaque name, not even for a frame.
    step_until(&mut h, "the locked folder", |h| {
        assert_no_opaque_name(h, &opaque);
        h.query_by_label_contains("This folder is encrypted (key ")
            .is_some()
            && h.query_by_label_contains("Cannot browse yet").is_some()
    });
    assert!(matches!(h.state().backups.key.state, KeyState::Locked));
    assert!(h.state().backups.dirs.is_empty(), "nothing listed");
    assert!(h.query_by_label(key_names::KEY_FILE).is_some());
    assert!(is_disabled(&h, names::RESTORE));
    assert_no_opaque_name(&h, &opaque);

    type_into(&mut h, key_names::KEY_FILE, &path(&key));
    type_into(&mut h, key_names::PASSPHRASE, "correct horse");
    click(&mut h, key_names::UNLOCK);
    step_until(&mut h, "the real names", |h| {
        h.query_by_label("a.txt").is_some() && h.query_by_label(&names::expand("sub")).is_some()
    });
    click(&mut h, &names::expand("sub"));
    step_until(&mut h, "sub's entries", |h| {
        h.query_by_label("b.txt").is_some() && h.query_by_label("c.txt").is_some()
    });
    assert_no_opaque_name(&h, &opaque);
}

/// Over QUIC: a folder a launcher sent write-only (it holds the public
/// half only) is read by a launcher whose form names the receiver and the
/// source but no protection or key: the receiver is asked for the folder's
/// protection (`Request::Protection`), the view is locked without an
/// opaque name, and the whole key file opens the real names.
#[test]
fn a_receivers_folder_is_locked_when_the_form_names_no_key() {
    let dir = tempfile::tempdir().unwrap();
    let rt = runtime();
    let secret = generate_secret().unwrap();
    let source = dir.path().join("source");
    std::fs::create_dir_all(source.join("sub")).unwrap();
    std::fs::write(source.join("a.txt"), b"alpha").unwrap();
    std::fs::write(source.join("sub/b.txt"), [7u8; 10_000]).unwrap();
    std::fs::write(source.join("sub/c.txt"), b"not restored").unwrap();
    let phrase = dir.path().join("phrase");
    std::fs::write(&phrase, "correct horse").unwrap();
    let key = dir.path().join("source.key");
    let public = keys::create_key_file(&key, &Passphrase::File(phrase)).unwrap();
    let pub_file = dir.path().join("source.pub");
    keys::write_public_file(&pub_file, &public).unwrap();
    let opaque = opaque_names(&key);

    let (_receiver, port) = start_receiver(dir.path(), &rt, &secret);
    let mut sending = sender_app(dir.path(), &rt, &secret, port);
    sending.settings.sender.protect = Protect::WriteOnly;
    sending.settings.sender.key_file = path(&pub_file);
    let mut s = util::harness(sending, [1000.0, 2400.0]);
    s.run_steps(3);
    send(&mut s, 1);
    // `s` stays alive: its sender keeps running, as a person's would.

    // Another launcher: where to ask, as whom, and which folder; no key.
    let mut app = LauncherApp::new(dir.path().join("vconfig"), rt.handle().clone());
    app.set_role(Role::Sender);
    let f = &mut app.settings.sender;
    f.host = "127.0.0.1".into();
    f.port = port.to_string();
    f.source = path(&source);
    f.name = "laptop".into();
    f.state = path(&dir.path().join("sstate"));
    let mut h = util::harness(app, [1000.0, 2400.0]);
    h.run_steps(3);
    click(&mut h, names::TAB);
    step_until(&mut h, "the locked folder", |h| {
        assert_no_opaque_name(h, &opaque);
        h.query_by_label_contains("This folder is write-only")
            .is_some()
            && h.query_by_label_contains("Cannot browse yet").is_some()
    });
    assert!(h
        .query_by_label_contains("Reading from the receiver at 127.0.0.1:")
        .is_some());
    assert!(h.state().backups.dirs.is_empty(), "nothing listed");
    assert_no_opaque_name(&h, &opaque);

    type_into(&mut h, key_names::KEY_FILE, &path(&key));
    type_into(&mut h, key_names::PASSPHRASE, "correct horse");
    click(&mut h, key_names::UNLOCK);
    step_until(&mut h, "the real names", |h| {
        h.query_by_label("a.txt").is_some() && h.query_by_label(&names::expand("sub")).is_some()
    });
    assert_no_opaque_name(&h, &opaque);
}
