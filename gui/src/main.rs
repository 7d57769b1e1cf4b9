//! `ferry-gui`: opens the launcher window (glow renderer, X11 or Wayland).

use anyhow::Context as _;
use eframe::egui;
use ferry_gui::settings::default_config_dir;
use ferry_gui::LauncherApp;

fn main() -> anyhow::Result<()> {
    tracing_subscriber::fmt()
        .with_env_filter(
            tracing_subscriber::EnvFilter::try_from_default_env()
                .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("info")),
        )
        .init();
    // The agent's runtime, owned by the app for its whole life: two workers
    // are plenty for one receiver or sender.
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .thread_name("ferry-agent")
        .enable_all()
        .build()
        .context("cannot start the agent's runtime")?;
    let handle = runtime.handle().clone();
    let options = eframe::NativeOptions {
        renderer: eframe::Renderer::Glow,
        viewport: egui::ViewportBuilder::default()
            .with_title("Ferry")
            .with_app_id("ferry-gui")
            .with_inner_size(ferry_gui::ui::WINDOW_SIZE)
            .with_min_inner_size([480.0, 360.0]),
        ..Default::default()
    };
    eframe::run_native(
        "Ferry",
        options,
        Box::new(move |_cc| Ok(Box::new(LauncherApp::new(default_config_dir(), handle)))),
    )
    .map_err(|e| anyhow::anyhow!("cannot open the window: {e}"))?;
    runtime.shutdown_timeout(std::time::Duration::from_secs(2));
    Ok(())
}
