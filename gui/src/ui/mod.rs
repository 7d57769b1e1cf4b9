//! The launcher's window: a role switch and text size on top, the shown
//! role's form, its actions (Start / Stop / Run now / Save as config file)
//! and what the running agent is doing.
//!
//! ## Layout
//!
//! - [`fields`]: labelled form rows with Browse buttons and problems, and
//!   the texts rows share (times of day, the bandwidth limit's hint).
//! - [`receiver`]: the receiver's form and live status.
//! - [`sender`]: the sender's form, progress and history.
//! - [`backups`]: the sender's Backups view: browse runs, restore.
//! - [`unlock`]: its key panel for an encrypted or write-only folder.
//! - [`senders`]: the receiver's Senders view (revoke, allow, pairing).

pub mod backups;
pub mod fields;
pub mod receiver;
pub mod sender;
pub mod senders;
pub mod unlock;

use std::sync::Arc;
use std::time::Duration;

use eframe::egui::{self, RichText, Ui};

use crate::app::LauncherApp;
use crate::settings::Role;

/// How often the window refreshes while an agent runs.
pub const REFRESH: Duration = Duration::from_millis(250);
/// The window's size when it opens (logical points); everything the
/// status area says must be readable at this size.
pub const WINDOW_SIZE: [f32; 2] = [820.0, 680.0];

/// Button labels, shared with the tests.
pub mod button {
    /// Start the shown role.
    pub const START: &str = "Start";
    /// Stop the running role.
    pub const STOP: &str = "Stop";
    /// Start the sender's next run now.
    pub const RUN_NOW: &str = "Run now";
    /// Write the TOML for headless use.
    pub const SAVE_CONFIG: &str = "Save as config file";
    /// Receiver role tab.
    pub const RECEIVER: &str = "Receiver";
    /// Sender role tab.
    pub const SENDER: &str = "Sender";
}

/// Draws the whole window and handles its input.
pub fn show(app: &mut LauncherApp, ui: &mut Ui) {
    app.poll();
    app.autosave();
    if app.running.is_some() {
        ui.ctx().request_repaint_after(REFRESH);
    }
    egui::Panel::top("roles").show(ui, |ui| top_bar(app, ui));
    egui::CentralPanel::default_margins().show(ui, |ui| {
        egui::ScrollArea::vertical()
            .auto_shrink([false, false])
            .show(ui, |ui| {
                if app.role() == Role::Sender && app.backups.open {
                    return backups::show(app, ui);
                }
                match app.role() {
                    Role::Receiver => receiver::form(app, ui),
                    Role::Sender => sender::form(app, ui),
                }
                ui.separator();
                actions(app, ui);
                ui.separator();
                match app.role() {
                    Role::Receiver => receiver::status(app, ui),
                    Role::Sender => sender::status(app, ui),
                }
                if app.role() == Role::Receiver {
                    ui.separator();
                    senders::view(app, ui);
                }
            });
    });
}

fn top_bar(app: &mut LauncherApp, ui: &mut Ui) {
    ui.horizontal(|ui| {
        ui.heading("Ferry");
        ui.separator();
        let locked = roles_locked(app);
        for (role, name) in [
            (Role::Receiver, button::RECEIVER),
            (Role::Sender, button::SENDER),
        ] {
            let tab = ui.add_enabled(
                locked.is_none(),
                egui::Button::selectable(app.role() == role, name),
            );
            let tab = match &locked {
                Some(why) => tab.on_disabled_hover_text(why.as_str()),
                None => tab,
            };
            if tab.clicked() {
                app.set_role(role);
            }
        }
        if app.role() == Role::Sender {
            let open = app.backups.open;
            if ui
                .add(egui::Button::selectable(open, backups::names::TAB))
                .on_hover_text("Browse this folder's backups and restore files")
                .clicked()
            {
                app.backups.open = !open;
            }
        }
        if let Some(why) = &locked {
            ui.weak(why.as_str());
        }
        ui.separator();
        let zoom = ui.ctx().zoom_factor();
        if ui.button("A-").accessible_name("Smaller text").clicked() {
            ui.ctx().set_zoom_factor((zoom - 0.1).max(0.6));
        }
        if ui.button("A+").accessible_name("Larger text").clicked() {
            ui.ctx().set_zoom_factor((zoom + 0.1).min(3.0));
        }
        ui.weak(format!("text {:.0}%", zoom * 100.0));
    });
}

/// Why the role tabs are disabled, or `None` when they are not.
pub fn roles_locked(app: &LauncherApp) -> Option<String> {
    let task = app.running.as_ref()?;
    let role = match task.role() {
        Role::Receiver => "receiver",
        Role::Sender => "sender",
    };
    Some(match task.is_stopping() {
        true => format!("The {role} is stopping; roles can be switched once it has"),
        false => format!("Stop the running {role} to switch roles"),
    })
}

fn actions(app: &mut LauncherApp, ui: &mut Ui) {
    let blocked = app.start_blocked();
    ui.horizontal_wrapped(|ui| {
        let start = ui.add_enabled(
            blocked.is_none(),
            egui::Button::new(RichText::new(button::START).strong()),
        );
        if start.clicked() {
            let ctx = ui.ctx().clone();
            app.start(Arc::new(move || ctx.request_repaint()));
        }
        let running = app.running.as_ref().is_some_and(|t| !t.is_stopping());
        if ui
            .add_enabled(running, egui::Button::new(button::STOP))
            .clicked()
        {
            app.stop();
        }
        if app.role() == Role::Sender
            && ui
                .add_enabled(running, egui::Button::new(button::RUN_NOW))
                .clicked()
        {
            app.run_now();
        }
    });
    if let (Some(reason), None) = (&blocked, &app.running) {
        fields::error_line(ui, &format!("Cannot start yet: {reason}"));
    }
    ui.add_space(4.0);
    ui.horizontal_wrapped(|ui| {
        let role = app.role();
        let path = app.config_file.entry(role).or_default();
        let label = ui.label("Config file");
        ui.add(egui::TextEdit::singleline(path).desired_width(ui.available_width().min(360.0)))
            .labelled_by(label.id);
        let save = ui
            .add_enabled(
                app.validation().is_ok(),
                egui::Button::new(button::SAVE_CONFIG),
            )
            .on_hover_text(match role {
                Role::Receiver => {
                    "Writes the TOML that `ferry receive --config FILE` runs headless"
                }
                Role::Sender => "Writes the TOML that `ferry send --config FILE` runs headless",
            });
        if save.clicked() {
            app.save_config_clicked();
        }
    });
    if let Some(message) = &app.message {
        ui.label(message);
    }
    if let Some(error) = app.error.clone() {
        fields::error_line(ui, &error);
    }
}

/// The launcher as eframe runs it: each frame draws the window; closing
/// it stops the running role.
impl eframe::App for LauncherApp {
    fn ui(&mut self, ui: &mut eframe::egui::Ui, _frame: &mut eframe::Frame) {
        show(self, ui);
    }

    fn on_exit(&mut self, _gl: Option<&eframe::glow::Context>) {
        self.shutdown();
    }
}
