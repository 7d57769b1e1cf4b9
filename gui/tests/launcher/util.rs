//! What every launcher test needs: a runtime, a harness, a bounded wait.

use std::path::Path;
use std::time::{Duration, Instant};

use egui_kittest::kittest::{NodeT, Queryable};
use egui_kittest::Harness;
use ferry_gui::LauncherApp;

/// Generous: a loaded 2-core CI machine (a handshake with nobody listening
/// alone takes 10 s to give up).
pub const DEADLINE: Duration = Duration::from_secs(90);

/// The runtime the launcher runs its agent on.
pub fn runtime() -> tokio::runtime::Runtime {
    tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .unwrap()
}

/// The launcher's whole window, `size` points large.
pub fn harness(
    app: LauncherApp,
    size: impl Into<eframe::egui::Vec2>,
) -> Harness<'static, LauncherApp> {
    Harness::builder().with_size(size).build_ui_state(
        |ui, app: &mut LauncherApp| ferry_gui::ui::show(app, ui),
        app,
    )
}

/// Steps the harness until `done` holds, failing after [`DEADLINE`] with
/// what `says` reads off the launcher then.
pub fn step_until_says(
    h: &mut Harness<'_, LauncherApp>,
    mut done: impl FnMut(&mut Harness<'_, LauncherApp>) -> bool,
    says: impl Fn(&Harness<'_, LauncherApp>) -> String,
) {
    let start = Instant::now();
    while !done(h) {
        assert!(start.elapsed() < DEADLINE, "{}", says(h));
        std::thread::sleep(Duration::from_millis(20));
        h.step();
    }
}

/// Steps the harness until `done` holds, failing after [`DEADLINE`].
pub fn step_until(
    h: &mut Harness<'_, LauncherApp>,
    what: &str,
    done: impl FnMut(&mut Harness<'_, LauncherApp>) -> bool,
) {
    step_until_says(h, done, |_| format!("timed out waiting for {what}"));
}

/// Whether the widget labelled `name` is disabled.
pub fn is_disabled(h: &Harness<'_, LauncherApp>, name: &str) -> bool {
    h.get_by_label(name).accesskit_node().is_disabled()
}

/// A path as a form field holds it.
pub fn path(p: &Path) -> String {
    p.display().to_string()
}

/// A sender app with a valid form in `dir`, sending `dir/source` (two
/// files) to `port` as `laptop` every hour.
pub fn sender_app(
    dir: &Path,
    rt: &tokio::runtime::Runtime,
    secret: &str,
    port: u16,
) -> LauncherApp {
    let source = dir.join("source");
    std::fs::create_dir_all(source.join("sub")).unwrap();
    std::fs::write(source.join("a.txt"), "alpha").unwrap();
    std::fs::write(source.join("sub/b.txt"), vec![7u8; 10_000]).unwrap();
    let mut app = LauncherApp::new(dir.join("sconfig"), rt.handle().clone());
    app.set_role(ferry_gui::settings::Role::Sender);
    let f = &mut app.settings.sender;
    f.host = "127.0.0.1".into();
    f.port = port.to_string();
    f.source = path(&source);
    f.every = "1h".into();
    f.name = "laptop".into();
    f.state = path(&dir.join("sstate"));
    f.pairing_secret = secret.into();
    app
}
