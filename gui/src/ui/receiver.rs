//! The receiver's panel: where to listen, the bandwidth limit, where to
//! store, the pairing secret and this node's device id; while running, the
//! connected senders with live progress, recent runs and the last error.

use std::time::SystemTime;

use eframe::egui::{self, Grid, Ui};
use ferry_agent::summary::human_bytes;

use super::fields::{self, Browse};
use crate::app::LauncherApp;
use crate::form::label;
use crate::settings::generate_secret;

/// The receiver's form.
pub fn form(app: &mut LauncherApp, ui: &mut Ui) {
    let enabled = app.running.is_none();
    let v = app.settings.receiver.validate();
    ui.heading("Receive backups from other machines");
    Grid::new("receiver-form")
        .num_columns(2)
        .spacing([12.0, 6.0])
        .show(ui, |ui| {
            let f = &mut app.settings.receiver;
            fields::row(
                ui,
                label::HOST,
                &mut f.host,
                "0.0.0.0 = every interface",
                v.error(label::HOST),
                enabled,
                Browse::None,
            );
            fields::row(
                ui,
                label::PORT,
                &mut f.port,
                "7878 (0 = any free port)",
                v.error(label::PORT),
                enabled,
                Browse::None,
            );
            fields::row(
                ui,
                label::MAX_CLIENTS,
                &mut f.max_clients,
                "8",
                v.error(label::MAX_CLIENTS),
                enabled,
                Browse::None,
            );
            fields::row_with_tip(
                ui,
                label::LIMIT_RATE,
                &mut f.limit_rate,
                "optional: e.g. 10MB/s",
                Some(&fields::limit_rate_tip("Per sender connection")),
                v.error(label::LIMIT_RATE),
                enabled,
                Browse::None,
            );
            fields::row_with_tip(
                ui,
                label::STORE,
                &mut f.store,
                "/srv/ferry or s3://bucket/prefix",
                Some(STORE_TIP),
                v.error(label::STORE),
                enabled,
                Browse::Folder,
            );
            if f.in_bucket() {
                bucket_rows(ui, f, &v, enabled);
            }
            secret_row(ui, &mut f.pairing_secret, enabled, &mut app.error);
            fields::row(
                ui,
                label::STATE,
                &mut f.state,
                "default: ~/.local/state/ferry",
                v.error(label::STATE),
                enabled,
                Browse::Folder,
            );
            match app.device_id() {
                Ok(id) => fields::copyable(ui, "Device id", &id.to_string(), RECEIVER_ID_TIP),
                Err(e) => {
                    ui.label("Device id");
                    fields::error_line(ui, &e);
                    ui.end_row();
                }
            }
        });
}

/// What the Store field takes.
const STORE_TIP: &str = "A directory on this machine, or s3://BUCKET/PREFIX to keep the bytes in \
     an S3-compatible object store (the catalog then stays in the state directory).";

/// The bucket's settings, shown when the Store field names one.
fn bucket_rows(
    ui: &mut Ui,
    f: &mut crate::form::ReceiverForm,
    v: &crate::form::Validation,
    enabled: bool,
) {
    fields::row(
        ui,
        label::S3_ENDPOINT,
        &mut f.s3_endpoint,
        "http://10.0.0.5:8333 (empty: AWS)",
        v.error(label::S3_ENDPOINT),
        enabled,
        Browse::None,
    );
    fields::row(
        ui,
        label::S3_REGION,
        &mut f.s3_region,
        "optional",
        v.error(label::S3_REGION),
        enabled,
        Browse::None,
    );
    fields::row(
        ui,
        label::S3_KEY,
        &mut f.s3_access_key_id,
        "empty: AWS_ACCESS_KEY_ID or ~/.aws/credentials",
        v.error(label::S3_KEY),
        enabled,
        Browse::None,
    );
    let label_response = ui.label(label::S3_SECRET);
    ui.vertical(|ui| {
        ui.add_enabled(
            enabled,
            egui::TextEdit::singleline(&mut f.s3_secret_access_key)
                .password(true)
                .hint_text("with the access key id; kept in a file only you can read")
                .desired_width(ui.available_width().min(420.0)),
        )
        .labelled_by(label_response.id);
        if let Some(problem) = v.error(label::S3_SECRET) {
            fields::error_line(ui, problem);
        }
    });
    ui.end_row();
    ui.label("");
    ui.add_enabled(enabled, egui::Checkbox::new(&mut f.recover, label::RECOVER))
        .on_hover_text(
            "For a new state directory after this machine was lost: rebuild the catalog from \
         the newest copy in the bucket. Only for this start.",
        );
    ui.end_row();
}

/// What the receiver's device id is for.
pub const RECEIVER_ID_TIP: &str = "This receiver's id. Senders pin it on first contact, or \
     can be given it beforehand (their Receiver id field).";

/// The receiver's pairing secret row: editable, with Generate and Copy
/// buttons (the receiver's admin makes the secret and hands it to senders;
/// the sender's row is [`super::sender::secret_row`]).
pub fn secret_row(ui: &mut Ui, secret: &mut String, enabled: bool, error: &mut Option<String>) {
    let label_response = ui.label(label::SECRET);
    ui.vertical(|ui| {
        ui.horizontal(|ui| {
            ui.add_enabled(
                enabled,
                egui::TextEdit::singleline(secret)
                    .password(true)
                    .hint_text("empty: only listed senders get in")
                    .desired_width(ui.available_width().min(300.0)),
            )
            .labelled_by(label_response.id);
            if ui
                .add_enabled(enabled, egui::Button::new("Generate"))
                .accessible_name("Generate pairing secret")
                .clicked()
            {
                match generate_secret() {
                    Ok(s) => *secret = s,
                    Err(e) => *error = Some(ferry_agent::chain::chain(&e)),
                }
            }
            if ui
                .add_enabled(!secret.is_empty(), egui::Button::new("Copy"))
                .accessible_name("Copy pairing secret")
                .clicked()
            {
                ui.ctx().copy_text(secret.clone());
            }
        });
        ui.weak(
            "Generate a secret and give it to each new sender once; it is stored in a file only you can read.",
        );
    });
    ui.end_row();
}

/// What the running receiver is doing.
pub fn status(app: &mut LauncherApp, ui: &mut Ui) {
    let view = &app.receiver;
    match (&app.running, view.addr) {
        (Some(task), _) if task.is_stopping() => {
            ui.label("Stopping… (finishing in-flight files)");
        }
        (Some(_), Some(addr)) => {
            ui.label(format!("Listening on {addr}"));
        }
        (Some(_), None) => {
            ui.label("Starting…");
        }
        (None, _) => {
            ui.label("Stopped");
        }
    }
    if let Some(error) = view.status.as_ref().and_then(|s| s.last_error()) {
        fields::error_line(ui, &format!("Last problem: {error}"));
    }

    ui.add_space(6.0);
    ui.strong("Connected senders");
    let sessions = view
        .status
        .as_ref()
        .map(|s| s.sessions())
        .unwrap_or_default();
    if sessions.is_empty() {
        ui.weak("none");
    } else {
        Grid::new("sessions")
            .striped(true)
            .num_columns(5)
            .show(ui, |ui| {
                for h in ["Sender", "Folder", "Run", "Entries", "Received"] {
                    ui.strong(h);
                }
                ui.end_row();
                for s in &sessions {
                    let secs = SystemTime::now()
                        .duration_since(s.started)
                        .unwrap_or_default()
                        .as_secs_f64()
                        .max(0.001);
                    ui.label(&s.name);
                    ui.label(&s.folder);
                    ui.label(format!("#{}", s.run));
                    ui.label(s.entries.to_string());
                    ui.label(format!(
                        "{} ({}/s)",
                        human_bytes(s.bytes),
                        human_bytes((s.bytes as f64 / secs) as u64)
                    ));
                    ui.end_row();
                }
            });
    }

    ui.add_space(6.0);
    ui.strong("Recent runs");
    if view.runs.is_empty() {
        ui.weak("none yet");
        return;
    }
    Grid::new("receiver-runs")
        .striped(true)
        .num_columns(6)
        .show(ui, |ui| {
            for h in ["Run", "Sender", "Folder", "Started", "Result", "Received"] {
                ui.strong(h);
            }
            ui.end_row();
            for run in &view.runs {
                ui.label(format!("#{}", run.id));
                ui.label(run.sender.as_str());
                ui.label(run.folder.as_str());
                ui.label(fields::clock_ms(run.started_ms));
                ui.label(&run.status);
                ui.label(human_bytes(run.bytes_received));
                ui.end_row();
            }
        });
}
