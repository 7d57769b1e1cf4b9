//! The sender's Backups view driven through its accessibility tree with
//! egui_kittest, against a real receiver on loopback (started in-process by
//! a receiver launcher, over QUIC) and a real store: browse a run, open a
//! file's versions, restore a selection and compare it with the source as
//! of that run, fall back to the local copies, and say what went wrong.

use std::collections::BTreeMap;
use std::os::unix::fs::{MetadataExt, PermissionsExt};
use std::path::{Path, PathBuf};
use std::sync::Mutex;
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use egui_kittest::kittest::{NodeT, Queryable};
use egui_kittest::Harness;
use ferry_gui::backups::Loading;
use ferry_gui::settings::{generate_secret, Role};
use ferry_gui::ui::backups::names;
use ferry_gui::ui::button;
use ferry_gui::LauncherApp;

use super::util::{self, is_disabled, path, runtime, DEADLINE};

fn harness(app: LauncherApp) -> Harness<'static, LauncherApp> {
    util::harness(app, [1000.0, 2400.0])
}

/// Steps the harness until `done` holds; on timeout, says where the view is.
fn step_until(
    h: &mut Harness<'_, LauncherApp>,
    what: &str,
    done: impl FnMut(&mut Harness<'_, LauncherApp>) -> bool,
) {
    util::step_until_says(h, done, |h| {
        let b = &h.state().backups;
        format!(
            "timed out waiting for {what}: at {:?}, runs {:?}, dirs {:?}, error {:?}, notice {:?}",
            b.at,
            b.runs.as_ref().map(|r| matches!(r, Loading::Ready(_))),
            b.dirs,
            b.error,
            b.notice
        )
    });
}

fn click(h: &mut Harness<'_, LauncherApp>, name: &str) {
    h.get_by_label(name).click();
    settle(h);
}

/// Lets a click or an edit take effect (the view keeps repainting while a
/// question is out, so the harness never settles then).
fn settle(h: &mut Harness<'_, LauncherApp>) {
    h.run_steps(3);
}

fn set_mtime(p: &Path, secs: u64) {
    let f = std::fs::File::open(p).unwrap();
    f.set_modified(UNIX_EPOCH + Duration::from_nanos(secs * 1_000_000_000 + 123_456_789))
        .unwrap();
}

fn write(p: &Path, bytes: &[u8], mode: u32, secs: u64) {
    std::fs::create_dir_all(p.parent().unwrap()).unwrap();
    std::fs::write(p, bytes).unwrap();
    std::fs::set_permissions(p, std::fs::Permissions::from_mode(mode)).unwrap();
    set_mtime(p, secs);
}

/// The source of run 1: files of several modes and mtimes, a folder with a
/// sub-folder, a file large enough to be sent in chunks.
fn source_tree(source: &Path) {
    let big: Vec<u8> = (0..3_000_000u32).map(|i| (i * 7 % 251) as u8).collect();
    write(&source.join("a.txt"), b"alpha", 0o640, 1_700_000_000);
    write(
        &source.join("sub/b.txt"),
        &[7u8; 10_000],
        0o600,
        1_700_000_100,
    );
    write(
        &source.join("sub/c.txt"),
        b"not restored",
        0o644,
        1_700_000_200,
    );
    write(&source.join("docs/x.md"), b"# x\n", 0o644, 1_700_000_300);
    write(
        &source.join("docs/deep/big.bin"),
        &big,
        0o755,
        1_700_000_400,
    );
    std::fs::set_permissions(
        source.join("docs/deep"),
        std::fs::Permissions::from_mode(0o750),
    )
    .unwrap();
    set_mtime(&source.join("docs/deep"), 1_700_000_500);
    set_mtime(&source.join("docs"), 1_700_000_600);
}

/// What a tree holds: per path, its kind, bytes, mode and mtime (ns).
type Snapshot = BTreeMap<String, (bool, Vec<u8>, u32, i64)>;

fn snapshot(root: &Path) -> Snapshot {
    fn walk(root: &Path, dir: &Path, out: &mut Snapshot) {
        for e in std::fs::read_dir(dir).unwrap() {
            let p = e.unwrap().path();
            let meta = std::fs::symlink_metadata(&p).unwrap();
            let rel = p.strip_prefix(root).unwrap().display().to_string();
            let mtime = meta.mtime() * 1_000_000_000 + meta.mtime_nsec();
            let mode = meta.mode() & 0o7777;
            if meta.is_dir() {
                out.insert(rel, (true, Vec::new(), mode, mtime));
                walk(root, &p, out);
            } else {
                out.insert(rel, (false, std::fs::read(&p).unwrap(), mode, mtime));
            }
        }
    }
    let mut out = Snapshot::new();
    walk(root, root, &mut out);
    out
}

/// A receiver launcher in `dir`, started and listening; returns its port.
pub(super) fn start_receiver(
    dir: &Path,
    rt: &tokio::runtime::Runtime,
    secret: &str,
) -> (LauncherApp, u16) {
    let mut app = LauncherApp::new(dir.join("rconfig"), rt.handle().clone());
    app.set_role(Role::Receiver);
    let f = &mut app.settings.receiver;
    f.host = "127.0.0.1".into();
    f.port = "0".into();
    f.store = path(&dir.join("store"));
    f.state = path(&dir.join("rstate"));
    f.pairing_secret = secret.into();
    app.start(std::sync::Arc::new(|| {}));
    let start = Instant::now();
    while app.receiver.addr.is_none() {
        assert!(start.elapsed() < DEADLINE, "the receiver did not start");
        std::thread::sleep(Duration::from_millis(20));
        app.poll();
    }
    let port = app.receiver.addr.unwrap().port();
    (app, port)
}

/// A sender launcher for `dir/source`, sending to `port`.
pub(super) fn sender_app(
    dir: &Path,
    rt: &tokio::runtime::Runtime,
    secret: &str,
    port: u16,
) -> LauncherApp {
    let mut app = LauncherApp::new(dir.join("sconfig"), rt.handle().clone());
    app.set_role(Role::Sender);
    let f = &mut app.settings.sender;
    f.host = "127.0.0.1".into();
    f.port = port.to_string();
    f.source = path(&dir.join("source"));
    f.every = "1h".into();
    f.name = "laptop".into();
    f.state = path(&dir.join("sstate"));
    f.keep_copies = path(&dir.join("copies"));
    f.pairing_secret = secret.into();
    app
}

/// Starts the sender and waits for `runs` runs in all.
pub(super) fn send(h: &mut Harness<'_, LauncherApp>, runs: usize) {
    if h.state().running.is_none() {
        click(h, button::START);
    } else {
        click(h, button::RUN_NOW);
    }
    step_until(h, "the run", |h| h.state().history.len() >= runs);
    assert!(
        h.state().history[0].outcome.is_ok(),
        "{:?}",
        h.state().history
    );
}

fn open_view(h: &mut Harness<'_, LauncherApp>) {
    click(h, names::TAB);
    click(h, names::LOAD);
}

#[test]
fn browse_a_run_and_restore_two_files_and_a_folder_as_they_were() {
    let dir = tempfile::tempdir().unwrap();
    let rt = runtime();
    let secret = generate_secret().unwrap();
    let source = dir.path().join("source");
    source_tree(&source);
    let as_of_run_1 = snapshot(&source);
    let (mut receiver, port) = start_receiver(dir.path(), &rt, &secret);
    let mut h = harness(sender_app(dir.path(), &rt, &secret, port));
    settle(&mut h);
    send(&mut h, 1);
    // Run 2 changes and deletes what run 1 stored.
    write(
        &source.join("a.txt"),
        b"alpha, edited",
        0o644,
        1_800_000_000,
    );
    std::fs::remove_file(source.join("sub/b.txt")).unwrap();
    write(
        &source.join("docs/x.md"),
        b"# x, edited\n",
        0o644,
        1_800_000_000,
    );
    write(&source.join("docs/new.txt"), b"new", 0o644, 1_800_000_000);
    send(&mut h, 2);

    open_view(&mut h);
    step_until(&mut h, "the runs and the newest run's root", |h| {
        h.query_by_label(&names::run(1)).is_some() && h.query_by_label("a.txt").is_some()
    });
    assert!(h.query_by_label(&names::run(2)).is_some());
    assert!(h
        .query_by_label_contains("Reading from the receiver at 127.0.0.1:")
        .is_some());
    assert!(h.query_by_label("The folder as of run 2").is_some());
    // Newest first: run 2's row comes before run 1's.
    let order: Vec<String> = h
        .query_all_by_label_contains("Run ")
        .filter_map(|n| n.accesskit_node().label())
        .collect();
    assert_eq!(order, ["Run 2", "Run 1"]);

    click(&mut h, &names::run(1));
    step_until(&mut h, "run 1's root", |h| {
        h.query_by_label("The folder as of run 1").is_some()
            && h.query_by_label(&names::expand("sub")).is_some()
    });
    assert!(h.query_by_label("5 B").is_some(), "a.txt's size at run 1");
    // Directories are listed when expanded, one at a time.
    assert!(h.query_by_label("b.txt").is_none());
    click(&mut h, &names::expand("sub"));
    step_until(&mut h, "sub's entries", |h| {
        h.query_by_label("b.txt").is_some()
    });
    assert!(h.query_by_label("c.txt").is_some());
    assert!(h.query_by_label("docs/new.txt").is_none());

    // A file's versions: the one of run 1, replaced in run 2.
    click(&mut h, &names::versions("a.txt"));
    step_until(&mut h, "a.txt's versions", |h| {
        h.query_by_label("replaced in run 2").is_some()
    });
    assert!(h.query_by_label("Versions of a.txt").is_some());
    assert!(h.query_by_label("current").is_some());

    // Restoring into the source itself is refused until "Overwrite".
    h.state_mut().backups.restore_to = path(&source);
    click(&mut h, &names::select("a.txt"));
    settle(&mut h);
    assert!(is_disabled(&h, names::RESTORE));
    assert!(h
        .query_by_label_contains("is the backed-up folder itself")
        .is_some());

    let dest = dir.path().join("restored");
    h.state_mut().backups.restore_to = path(&dest);
    click(&mut h, &names::select("sub/b.txt"));
    click(&mut h, &names::select("docs"));
    settle(&mut h);
    assert!(h.query_by_label("3 entries selected").is_some());
    click(&mut h, names::RESTORE);
    step_until(&mut h, "the restore's summary", |h| {
        h.query_by_label(names::OPEN).is_some()
    });
    assert!(h.query_by_label(names::PROGRESS).is_some());
    let summary = h.state().backups.restoring.as_ref().unwrap().result.clone();
    let summary = summary.unwrap().unwrap();
    // `docs` and `docs/deep`, each with its run-1 metadata.
    assert_eq!((summary.files, summary.dirs), (4, 2), "{summary:?}");
    assert!(summary.skipped.is_empty() && summary.problems.is_empty());
    let line = "Restored 4 files (2.9 MiB), 0 symlinks, 2 folders; 0 skipped; 0 failed";
    assert!(h.query_by_label(line).is_some(), "{line}");

    // Byte for byte, modes and mtimes included, as of run 1.
    let restored = snapshot(&dest);
    let chosen =
        |p: &str| p == "a.txt" || p == "sub/b.txt" || p == "docs" || p.starts_with("docs/");
    let expected: Snapshot = as_of_run_1.into_iter().filter(|(p, _)| chosen(p)).collect();
    let mut got = restored.clone();
    // `sub` is only the way to sub/b.txt: made, not restored.
    got.remove("sub");
    // Run 2 changed `docs` (a file was added, its mtime moved): it is
    // restored with its run-1 mode and mtime, as every entry is.
    assert_eq!(
        got.keys().collect::<Vec<_>>(),
        expected.keys().collect::<Vec<_>>()
    );
    assert!(got == expected, "the restore differs from run 1's state");

    // Open folder uses the desktop's opener (replaced here).
    static OPENED: Mutex<Option<PathBuf>> = Mutex::new(None);
    h.state_mut().backups.opener = |p| {
        *OPENED.lock().unwrap() = Some(p.to_path_buf());
        Ok(())
    };
    click(&mut h, names::OPEN);
    assert_eq!(OPENED.lock().unwrap().as_deref(), Some(dest.as_path()));

    // Restoring again skips what is there, and says so.
    click(&mut h, names::RESTORE);
    step_until(&mut h, "the second summary", |h| {
        h.query_by_label_contains("4 skipped; 0 failed").is_some()
    });
    assert!(h
        .query_by_label_contains("skipped a.txt: it exists at the destination")
        .is_some());

    // The receiver stops: the view says it cannot reach it, and reads the
    // local copies instead, saying so.
    h.state_mut().shutdown();
    receiver.shutdown();
    click(&mut h, names::LOAD);
    step_until(&mut h, "the fallback to the local copies", |h| {
        h.query_by_label_contains("Restoring from the local copies in")
            .is_some()
            && h.query_by_label(&names::expand("docs")).is_some()
    });
    assert!(h
        .query_by_label_contains("Cannot reach the receiver at 127.0.0.1:")
        .is_some());
    assert!(h.query_by_label("The folder as last sent").is_some());
    // The copies keep no history: a file's versions say where they are.
    click(&mut h, &names::expand("docs"));
    step_until(&mut h, "docs in the copies", |h| {
        h.query_by_label(&names::versions("docs/x.md")).is_some()
    });
    click(&mut h, &names::versions("docs/x.md"));
    step_until(&mut h, "the copies' answer", |h| {
        h.query_by_label_contains("earlier versions are on the receiver")
            .is_some()
    });
    click(&mut h, &names::select("docs"));
    let from_copies = dir.path().join("from-copies");
    h.state_mut().backups.restore_to = path(&from_copies);
    click(&mut h, names::RESTORE);
    step_until(&mut h, "the restore from copies", |h| {
        h.query_by_label(names::OPEN).is_some()
    });
    assert_eq!(
        std::fs::read(from_copies.join("docs/new.txt")).unwrap(),
        b"new"
    );
    assert_eq!(
        std::fs::read(from_copies.join("docs/x.md")).unwrap(),
        b"# x, edited\n"
    );
}

#[test]
fn a_local_store_is_browsed_and_a_time_picked() {
    let dir = tempfile::tempdir().unwrap();
    let rt = runtime();
    let source = dir.path().join("source");
    source_tree(&source);
    let store = dir.path().join("local-store");
    let config = ferry_agent::config::SenderConfig {
        source: Some(source.clone()),
        store: Some(store.clone()),
        once: Some(true),
        name: Some("laptop".into()),
        state: Some(dir.path().join("sstate")),
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

    let mut app = LauncherApp::new(dir.path().join("sconfig"), rt.handle().clone());
    app.set_role(Role::Sender);
    app.settings.sender.source = path(&source);
    app.settings.sender.name = "laptop".into();
    let mut h = harness(app);
    settle(&mut h);
    click(&mut h, names::TAB);
    h.get_by_label(names::STORE).focus();
    h.get_by_label(names::STORE).type_text(&path(&store));
    settle(&mut h);
    click(&mut h, names::LOAD);
    step_until(&mut h, "the store's run", |h| {
        h.query_by_label(&names::run(1)).is_some() && h.query_by_label("a.txt").is_some()
    });
    assert!(h
        .query_by_label_contains("Reading from the store")
        .is_some());

    // A date and time: now is after run 1.
    h.get_by_label(names::AT).focus();
    h.get_by_label(names::AT).type_text("1m");
    settle(&mut h);
    let later = SystemTime::now() + Duration::from_secs(3600);
    let text = humantime::format_rfc3339_seconds(later).to_string();
    h.state_mut().backups.at_text = text.trim_end_matches('Z').replace('T', " ");
    click(&mut h, names::SHOW_AT);
    step_until(&mut h, "the folder at that time", |h| {
        h.query_by_label_contains("The folder as of 2").is_some()
            && h.query_by_label(&names::expand("docs")).is_some()
    });
    click(&mut h, &names::expand("docs"));
    step_until(&mut h, "docs' entries", |h| {
        h.query_by_label(&names::expand("docs/deep")).is_some()
    });
    click(&mut h, &names::expand("docs/deep"));
    step_until(&mut h, "docs/deep's entries", |h| {
        h.query_by_label("big.bin").is_some()
    });
    // Collapsing hides the entries again.
    click(&mut h, &names::expand("docs"));
    assert!(h.query_by_label("big.bin").is_none());

    // A time before anything was sent: the receiver says so, in words.
    h.state_mut().backups.at_text = "2001-01-01 00:00".into();
    click(&mut h, names::SHOW_AT);
    step_until(&mut h, "no run by then", |h| {
        h.query_by_label_contains("has no run that ended by 2001-01-01")
            .is_some()
    });
    // A time that is not one says how to write one.
    h.state_mut().backups.at_text = "whenever".into();
    click(&mut h, names::SHOW_AT);
    assert!(h
        .query_by_label_contains("give a time like \"2026-11-20 14:00\"")
        .is_some());
}

#[test]
fn the_folder_chooser_picks_where_to_restore() {
    let dir = tempfile::tempdir().unwrap();
    let rt = runtime();
    std::fs::create_dir_all(dir.path().join("place/inner")).unwrap();
    let mut app = LauncherApp::new(dir.path().join("sconfig"), rt.handle().clone());
    app.set_role(Role::Sender);
    app.backups.restore_to = path(&dir.path().join("Documents-restored"));
    let mut h = harness(app);
    settle(&mut h);
    click(&mut h, names::TAB);
    click(&mut h, names::CHOOSE);
    assert!(h
        .query_by_label(&format!("In {}", dir.path().display()))
        .is_some());
    click(&mut h, &names::go_into("place"));
    click(&mut h, &names::go_into("inner"));
    click(&mut h, names::CHOOSER_UP);
    click(&mut h, names::CHOOSER_DONE);
    assert_eq!(
        h.state().backups.restore_to,
        path(&dir.path().join("place/Documents-restored"))
    );
    assert!(h.query_by_label(names::CHOOSER_DONE).is_none());
    // Nothing chosen to restore yet: the button says why it waits.
    assert!(is_disabled(&h, names::RESTORE));
    assert!(h
        .query_by_label_contains("pick a run or a date and time first")
        .is_some());
}

#[test]
fn errors_show_in_plain_words_in_the_view() {
    let dir = tempfile::tempdir().unwrap();
    let rt = runtime();
    let secret = generate_secret().unwrap();
    source_tree(&dir.path().join("source"));
    let (_receiver, port) = start_receiver(dir.path(), &rt, &secret);

    // Not paired: the receiver does not admit this sender.
    let mut h = harness(sender_app(dir.path(), &rt, "", port));
    settle(&mut h);
    open_view(&mut h);
    step_until(&mut h, "the refusal", |h| {
        h.query_by_label_contains("does not admit this sender")
            .is_some()
    });
    assert!(h.query_by_label("no runs shown").is_some());

    // Paired by a run, then asking about a folder it never sent.
    h.state_mut().settings.sender.pairing_secret = secret.clone();
    h.state_mut().backups.open = false;
    settle(&mut h);
    send(&mut h, 1);
    let other = dir.path().join("elsewhere");
    std::fs::create_dir(&other).unwrap();
    h.state_mut().shutdown();
    h.state_mut().settings.sender.source = path(&other);
    click(&mut h, names::TAB);
    // What is shown was asked about the other folder: the view says so.
    assert!(h.query_by_label(names::OUTDATED).is_some());
    click(&mut h, names::LOAD);
    assert!(h.query_by_label(names::OUTDATED).is_none());
    step_until(&mut h, "the wrong-folder notice", |h| {
        h.query_by_label_contains("No runs of this folder")
            .is_some()
    });
    // And nothing stale is left from an earlier answer.
    assert!(h.query_by_label("a.txt").is_none());

    // No receiver and no store: the view says what to give.
    h.state_mut().settings.sender.host.clear();
    click(&mut h, names::LOAD);
    assert!(h
        .query_by_label_contains("Give the receiver's host in the sender form")
        .is_some());
    assert!(h
        .query_by_label_contains("No runs of this folder")
        .is_none());

    // A receiver that does not answer, and no local copies to fall back on.
    let silent = std::net::UdpSocket::bind("127.0.0.1:0").unwrap();
    let silent_port = silent.local_addr().unwrap().port();
    let f = &mut h.state_mut().settings.sender;
    f.host = "127.0.0.1".into();
    f.port = silent_port.to_string();
    f.keep_copies.clear();
    click(&mut h, names::LOAD);
    let unreachable = format!("Cannot reach the receiver at 127.0.0.1:{silent_port}");
    step_until(&mut h, "the unreachable receiver", |h| {
        h.query_by_label_contains(&unreachable).is_some()
    });
    assert!(is_disabled(&h, names::USE_COPIES));
    drop(silent);

    // "Use local copies" reads them on demand, saying so.
    let copies = dir.path().join("copies");
    std::fs::create_dir_all(&copies).unwrap();
    std::fs::write(copies.join("kept.txt"), "kept").unwrap();
    h.state_mut().settings.sender.keep_copies = path(&copies);
    settle(&mut h);
    click(&mut h, names::USE_COPIES);
    step_until(&mut h, "the local copies", |h| {
        h.query_by_label("kept.txt").is_some()
    });
    assert!(h
        .query_by_label_contains("Reading from the local copies in")
        .is_some());
    assert!(h.query_by_label_contains(&unreachable).is_none());
}
