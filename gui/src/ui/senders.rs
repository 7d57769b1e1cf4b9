//! The receiver's Senders view: every sender known to the store with its
//! folders, last run, bytes stored, quota use and state; a Revoke / Allow
//! button per sender; the pairing switch; errors in plain words.

use eframe::egui::{Grid, Ui};
use ferry_agent::senders::SenderInfo;
use ferry_agent::summary::human_bytes;

use super::fields;
use crate::app::LauncherApp;
use crate::senders::LIST_EVERY;

/// Labels, shared with the tests.
pub mod label {
    /// The view's heading.
    pub const HEADING: &str = "Senders";
    /// The pairing switch.
    pub const PAIRING: &str = "Accept new senders (pairing)";

    /// The accessible name of a sender's Revoke button.
    pub fn revoke(name: &str) -> String {
        format!("Revoke {name}")
    }

    /// The accessible name of a revoked sender's Allow button.
    pub fn allow(name: &str) -> String {
        format!("Allow {name}")
    }
}

/// Draws the Senders view of the store in the receiver's form.
pub fn view(app: &mut LauncherApp, ui: &mut Ui) {
    let store = app.settings.receiver.local_store();
    app.senders.poll(&store);
    ui.ctx().request_repaint_after(if app.senders.is_busy() {
        super::REFRESH
    } else {
        LIST_EVERY
    });
    ui.add_space(6.0);
    ui.strong(label::HEADING);
    if let Some(error) = app.senders.error() {
        fields::error_line(ui, error);
    }
    if let Some(message) = &app.senders.message {
        ui.label(message.as_str());
    }
    let Some(report) = app.senders.report.clone() else {
        match &app.senders.hint {
            Some(hint) => ui.weak(hint.as_str()),
            None if app.senders.error().is_none() => ui.weak("reading…"),
            None => return,
        };
        return;
    };
    let mut pairing = report.pairing;
    if ui.checkbox(&mut pairing, label::PAIRING).changed() {
        app.senders.set_pairing(&store, pairing);
    }
    if report.pairing && report.pairing_secret == Some(false) {
        ui.weak("The running receiver has no pairing secret: only listed senders get in.");
    }
    ui.weak(if report.receiver_running {
        "A receiver is running on this store: changes apply within seconds."
    } else {
        "No receiver is running on this store: changes apply when it starts."
    });
    if report.senders.is_empty() {
        ui.weak("No senders yet.");
        return;
    }
    let mut clicked = None;
    Grid::new("senders")
        .striped(true)
        .num_columns(8)
        .show(ui, |ui| {
            for h in [
                "Name", "Device", "Folders", "Last run", "Stored", "Quota", "State", "",
            ] {
                ui.strong(h);
            }
            ui.end_row();
            for s in &report.senders {
                if let Some(action) = row(ui, s) {
                    clicked = Some(action);
                }
                ui.end_row();
            }
        });
    match clicked {
        Some((name, true)) => app.senders.revoke(&store, &name),
        Some((name, false)) => app.senders.allow(&store, &name),
        None => {}
    }
}

/// One sender's row; returns `(name, revoke?)` if its button was clicked.
fn row(ui: &mut Ui, s: &SenderInfo) -> Option<(String, bool)> {
    ui.label(&s.name);
    let short: String = s.device.chars().take(12).collect();
    ui.label(format!("{short}…")).on_hover_text(&s.device);
    // Each folder with its mode: `docs (encrypted, key ab12…)`.
    let folders: Vec<String> = if s.folder_modes.len() == s.folders.len() {
        s.folder_modes.iter().map(|m| m.label()).collect()
    } else {
        s.folders.clone()
    };
    ui.label(folders.join(", "));
    match &s.last_run {
        Some(r) => ui.label(format!(
            "{} {}",
            fields::clock_ms(r.finished_ms.unwrap_or(r.started_ms)),
            r.result
        )),
        None => ui.weak("none"),
    };
    ui.label(format!(
        "{} + {} old",
        human_bytes(s.current_bytes),
        human_bytes(s.old_bytes)
    ));
    match s.quota_used_percent {
        Some(p) => ui.label(format!("{p}%")),
        None => ui.weak("—"),
    };
    let state = match (s.revoked, s.connected) {
        (true, true) => "revoked (closing)",
        (true, false) => "revoked",
        (false, true) => "connected",
        (false, false) => "not connected",
    };
    ui.label(state);
    let (text, name, revoke) = if s.revoked {
        ("Allow", label::allow(&s.name), false)
    } else {
        ("Revoke", label::revoke(&s.name), true)
    };
    let clicked = ui
        .button(text)
        .accessible_name(name.as_str())
        .on_hover_text(if revoke {
            "Refuse this sender from now on; its files and history stay on this receiver"
        } else {
            "Admit this sender again"
        })
        .clicked();
    clicked.then(|| (s.name.clone(), revoke))
}
