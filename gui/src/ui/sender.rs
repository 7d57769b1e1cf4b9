//! The sender's panel: receiver address, source, period, bandwidth limit,
//! compression, copies, name and pairing secret (pasted, never generated
//! here); while running, what it is doing now (connecting, sending with the
//! run's progress, idle until the next run, or retrying and why) and the
//! history of runs.

use std::time::{Duration, SystemTime};

use eframe::egui::{Button, Checkbox, Grid, ProgressBar, TextEdit, Ui};
use ferry_agent::status::SenderPhase;
use ferry_agent::summary::{data_cell, human_bytes, ProgressSnapshot};

use super::fields::{self, Browse};
use crate::app::LauncherApp;
use crate::exclusions::{CountState, Counted, ExclusionCount};
use crate::form::{label, Protect, COMPRESS_CHOICES, PROTECT_CHOICES};

/// The sender's form.
pub fn form(app: &mut LauncherApp, ui: &mut Ui) {
    let enabled = app.running.is_none();
    let v = app.settings.sender.validate();
    let count = app.exclusion_count.clone();
    ui.heading("Back up a folder to a receiver");
    Grid::new("sender-form")
        .num_columns(2)
        .spacing([12.0, 6.0])
        .show(ui, |ui| {
            let f = &mut app.settings.sender;
            fields::row(
                ui,
                label::RECEIVER_HOST,
                &mut f.host,
                "backup.lan",
                v.error(label::RECEIVER_HOST),
                enabled,
                Browse::None,
            );
            fields::row(
                ui,
                label::RECEIVER_PORT,
                &mut f.port,
                "7878",
                v.error(label::RECEIVER_PORT),
                enabled,
                Browse::None,
            );
            fields::row(
                ui,
                label::SOURCE,
                &mut f.source,
                "the folder to back up",
                v.error(label::SOURCE),
                enabled,
                Browse::Folder,
            );
            exclude_row(ui, f, v.error(label::EXCLUDE), enabled, &count);
            fields::row(
                ui,
                label::EVERY,
                &mut f.every,
                "15m",
                v.error(label::EVERY),
                enabled,
                Browse::None,
            );
            ui.label("");
            ui.add_enabled(enabled, Checkbox::new(&mut f.watch, label::WATCH))
                .on_hover_text(
                    "Watch the source folder and send each change a few seconds after it \
                     is made; the period is then how often a full scan double-checks.",
                );
            ui.end_row();
            fields::row_with_tip(
                ui,
                label::LIMIT_RATE,
                &mut f.limit_rate,
                "optional: e.g. 10MB/s",
                Some(&fields::limit_rate_tip("For all of this sender's sending")),
                v.error(label::LIMIT_RATE),
                enabled,
                Browse::None,
            );
            fields::choice(
                ui,
                label::COMPRESS,
                &mut f.compress,
                &COMPRESS_CHOICES,
                "Auto compresses content a quick sample shows to be compressible; \
                 On tries every piece; Off never compresses. Content is sent \
                 compressed only when that makes it smaller.",
                enabled,
            );
            fields::choice(
                ui,
                label::PROTECT,
                &mut f.protect,
                &PROTECT_CHOICES,
                "Plain keeps a browsable copy on the receiver. Encrypted: the receiver \
                 keeps only ciphertext; this machine holds the key (and can restore). \
                 Write-only: this machine holds only the key's public half and cannot \
                 read back anything it sent. Fixed when the folder is first sent.",
                enabled,
            );
            if f.protect != Protect::Plain {
                fields::row(
                    ui,
                    label::KEY_FILE,
                    &mut f.key_file,
                    match f.protect {
                        Protect::WriteOnly => "the public half: ferry key public KEY --out FILE",
                        _ => "the key file: ferry key new --out FILE",
                    },
                    v.error(label::KEY_FILE),
                    enabled,
                    Browse::OpenFile,
                );
            }
            fields::row(
                ui,
                label::KEEP_COPIES,
                &mut f.keep_copies,
                "optional: local copies of what was sent",
                v.error(label::KEEP_COPIES),
                enabled,
                Browse::Folder,
            );
            fields::row(
                ui,
                label::NAME,
                &mut f.name,
                "default: this machine's host name",
                v.error(label::NAME),
                enabled,
                Browse::None,
            );
            secret_row(ui, &mut f.pairing_secret, enabled);
            fields::row(
                ui,
                label::RECEIVER_ID,
                &mut f.receiver_id,
                "optional: the receiver's device id (pinned on first contact)",
                v.error(label::RECEIVER_ID),
                enabled,
                Browse::None,
            );
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
                Ok(id) => fields::copyable(ui, "Device id", &id.to_string(), SENDER_ID_TIP),
                Err(e) => {
                    ui.label("Device id");
                    fields::error_line(ui, &e);
                    ui.end_row();
                }
            }
        });
}

/// The label of the button that counts what the patterns exclude.
pub const COUNT_EXCLUDED: &str = "Count excluded";

/// The exclude patterns (one a line) and, on demand, what they leave out of
/// the source (counted on a thread of its own).
fn exclude_row(
    ui: &mut Ui,
    f: &mut crate::form::SenderForm,
    problem: Option<&str>,
    enabled: bool,
    count: &ExclusionCount,
) {
    let label_response = ui.label(label::EXCLUDE);
    ui.vertical(|ui| {
        ui.add_enabled(
            enabled,
            TextEdit::multiline(&mut f.exclude)
                .hint_text("one pattern a line, as in .gitignore: node_modules/, *.log, !keep.log")
                .desired_rows(3)
                .desired_width(ui.available_width().min(420.0)),
        )
        .labelled_by(label_response.id);
        if let Some(problem) = problem {
            fields::error_line(ui, problem);
        }
        ui.horizontal(|ui| {
            let state = count.state();
            let counting = state == CountState::Counting;
            let can_count = !counting && problem.is_none() && !f.source.trim().is_empty();
            if ui
                .add_enabled(can_count, Button::new(COUNT_EXCLUDED))
                .clicked()
            {
                let repaint = ui.ctx().clone();
                count.start(&f.source, &f.exclude, move || repaint.request_repaint());
            }
            match state {
                CountState::Idle => {
                    ui.weak("also applies the .ferryignore files in the source");
                }
                CountState::Counting => {
                    ui.weak("counting…");
                }
                CountState::Done(c) if c.source == f.source && c.patterns == f.exclude => {
                    ui.label(exclusion_line(&c));
                }
                CountState::Done(_) => {
                    ui.weak("the patterns or the source changed: count again");
                }
                CountState::Failed(e) => fields::error_line(ui, &e),
            }
        });
    });
    ui.end_row();
}

/// `Excluded: 2 directories and 5 files; 130 entries to send`.
pub fn exclusion_line(c: &Counted) -> String {
    let plural = |n: u64, one: &str, many: &str| format!("{n} {}", if n == 1 { one } else { many });
    format!(
        "Excluded: {} and {} (what excluded directories hold is not counted); {} to send",
        plural(c.dirs, "directory", "directories"),
        plural(c.files, "file", "files"),
        plural(c.kept, "entry", "entries"),
    )
}

/// What the sender's device id is for.
pub const SENDER_ID_TIP: &str = "This sender's id. Without a pairing secret, give it to the \
     receiver's admin to list (ferry receive --allow ID).";

/// The hint in the sender's pairing secret field.
pub const SECRET_HINT: &str = "paste the secret from the receiver's admin";

/// The sender's pairing secret row: the sender pastes the secret the
/// receiver's admin generated; it makes none of its own.
pub fn secret_row(ui: &mut Ui, secret: &mut String, enabled: bool) {
    let label_response = ui.label(label::SECRET);
    ui.vertical(|ui| {
        ui.add_enabled(
            enabled,
            TextEdit::singleline(secret)
                .password(true)
                .hint_text(SECRET_HINT)
                .desired_width(ui.available_width().min(300.0)),
        )
        .labelled_by(label_response.id);
        ui.weak(
            "Needed until the receiver has paired with this sender (its first run), \
             unless the receiver's admin listed this device id. Kept in a file only you can read.",
        );
    });
    ui.end_row();
}

fn rounded(d: Duration) -> String {
    humantime::format_duration(Duration::from_secs(d.as_secs())).to_string()
}

/// The progress line: `3/10 files, 1.0 MiB / 4.0 MiB, 2.0 MiB/s, 2s left`.
pub fn progress_line(s: &ProgressSnapshot, elapsed: Duration) -> String {
    let secs = elapsed.as_secs_f64().max(0.001);
    let rate = s.bytes_done as f64 / secs;
    let left = s.bytes_total.saturating_sub(s.bytes_done);
    let eta = if left == 0 {
        "done".to_string()
    } else if rate >= 1.0 {
        format!(
            "{} left",
            rounded(Duration::from_secs_f64(left as f64 / rate))
        )
    } else {
        "time left unknown".to_string()
    };
    format!(
        "{}/{} entries, {} / {}, {}/s, {eta}",
        s.entries_done,
        s.entries_total,
        human_bytes(s.bytes_done),
        human_bytes(s.bytes_total),
        human_bytes(rate as u64),
    )
}

/// What the running sender is doing, and its history.
pub fn status(app: &mut LauncherApp, ui: &mut Ui) {
    let status = app
        .running
        .as_ref()
        .and_then(|t| t.sender_status())
        .cloned();
    let stopping = app.running.as_ref().is_some_and(|t| t.is_stopping());
    let phase = status.as_ref().map(|s| s.phase());
    let now = SystemTime::now();
    let receiver = format!(
        "{}:{}",
        app.settings.sender.host.trim(),
        app.settings.sender.port.trim()
    );
    match (&phase, stopping) {
        (_, true) => {
            ui.label("Stopping… (finishing the current file)");
        }
        (None, _) | (Some(SenderPhase::Stopped), _) => {
            ui.label("Stopped");
        }
        (Some(SenderPhase::Starting), _) => {
            ui.label("Starting…");
        }
        (Some(SenderPhase::Connecting { .. }), _) => {
            ui.label(format!("Connecting to {receiver} and looking for changes…"));
        }
        (Some(SenderPhase::Running { .. }), _) => {
            ui.label(format!("Sending to {receiver}…"));
        }
        (Some(SenderPhase::Waiting { next_run }), _) => {
            match status.as_ref().and_then(|s| s.watching()) {
                Some(watching) => {
                    ui.label(format!(
                        "Watching {} directories; full scan at {} (in {})",
                        watching.directories,
                        fields::clock(*next_run),
                        rounded(next_run.duration_since(now).unwrap_or_default())
                    ));
                    ui.label(match watching.last_change_sent {
                        Some(at) => format!("Last change sent at {}", fields::clock(at)),
                        None => "No change sent yet".to_string(),
                    });
                }
                None => {
                    ui.label(format!(
                        "Idle until {} (next run in {})",
                        fields::clock(*next_run),
                        rounded(next_run.duration_since(now).unwrap_or_default())
                    ));
                }
            }
        }
        (Some(SenderPhase::Retrying { at, because }), _) => {
            ui.label(match at.duration_since(now) {
                Ok(left) if left.as_secs() > 0 => format!(
                    "Retrying in {} (at {}) because the last attempt failed:",
                    rounded(left),
                    fields::clock(*at)
                ),
                _ => "Retrying now; the last attempt failed:".to_string(),
            });
            fields::error_line(ui, because);
        }
    };
    // The bar shows the run being sent, or the last run while idle after
    // it ended well; never old figures while connecting or retrying.
    let shown = match (&status, &phase) {
        (Some(status), Some(SenderPhase::Running { started })) => Some((
            status,
            "Run progress",
            now.duration_since(*started).unwrap_or_default(),
        )),
        (Some(status), Some(SenderPhase::Waiting { .. })) => app
            .history
            .first()
            .and_then(|r| r.outcome.as_ref().ok())
            .map(|r| (status, "Last run", Duration::from_millis(r.duration_ms))),
        _ => None,
    };
    if let Some((status, name, elapsed)) = shown {
        let s = status.progress.snapshot();
        let fraction = match (s.bytes_total, s.entries_total) {
            (0, 0) => 1.0,
            (0, total) => s.entries_done as f32 / total as f32,
            (total, _) => s.bytes_done as f32 / total as f32,
        };
        let line = progress_line(&s, elapsed);
        let label = ui.label(name);
        ui.add(ProgressBar::new(fraction.clamp(0.0, 1.0)).show_percentage())
            .labelled_by(label.id);
        ui.label(line);
    }

    ui.add_space(6.0);
    ui.strong("History");
    if app.history.is_empty() {
        ui.weak("no runs yet");
        return;
    }
    Grid::new("sender-history")
        .striped(true)
        .num_columns(6)
        .show(ui, |ui| {
            for h in ["Finished", "Result", "Files", "Data", "Took", "Problems"] {
                ui.strong(h);
            }
            ui.end_row();
            for row in &app.history {
                ui.label(fields::clock(row.finished));
                match &row.outcome {
                    Ok(r) => {
                        ui.label(if r.errors == 0 {
                            "complete"
                        } else {
                            "complete with errors"
                        });
                        ui.label(format!(
                            "{} sent, {} unchanged, {} deleted",
                            r.files_sent, r.files_unchanged, r.files_deleted
                        ));
                        ui.label(data_cell(r.bytes_file_data, r.bytes_file_data_wire));
                        ui.label(format!("{:.1}s", r.duration_ms as f64 / 1000.0));
                        match r.problems.first() {
                            Some(p) => fields::error_line(
                                ui,
                                &format!("{}: {} ({} in all)", p.path, p.message, r.errors),
                            ),
                            None => {
                                ui.label("none");
                            }
                        }
                    }
                    Err(e) => {
                        ui.label("failed");
                        ui.label("");
                        ui.label("");
                        ui.label("");
                        fields::error_line(ui, e);
                    }
                }
                ui.end_row();
            }
        });
}
