//! Form rows: a label, a text field labelled by it (so screen readers and
//! egui_kittest find it by name), an optional Browse button, and the field's
//! problem in plain words underneath; a labelled choice (a combo box); and
//! the texts rows share (times of day, the bandwidth limit's hint).

use std::time::{Duration, SystemTime, UNIX_EPOCH};

use eframe::egui::{self, Color32, RichText, TextEdit, Ui};

use crate::form::LIMIT_RATE_EXAMPLE;

/// Colour of problem text.
pub fn error_color(ui: &Ui) -> Color32 {
    ui.visuals().error_fg_color
}

/// Shows a problem line (labelled so tests and screen readers find it),
/// wrapped at the width left in the window: never cut off, even as the
/// last cell of a grid row.
pub fn error_line(ui: &mut Ui, text: &str) {
    ui.add(egui::Label::new(RichText::new(text).color(error_color(ui))).wrap());
}

/// What a row's Browse button picks.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Browse {
    /// No Browse button.
    None,
    /// An existing directory.
    Folder,
    /// A file to write.
    SaveFile,
    /// An existing file to read.
    OpenFile,
}

/// One row of a two-column form grid: label, then field (+ Browse) with its
/// problem below. Returns whether the text changed.
pub fn row(
    ui: &mut Ui,
    label: &str,
    value: &mut String,
    hint: &str,
    problem: Option<&str>,
    enabled: bool,
    browse: Browse,
) -> bool {
    row_with_tip(ui, label, value, hint, None, problem, enabled, browse)
}

/// [`row`] with a hover hint on the field (also its accessible description).
#[allow(clippy::too_many_arguments)]
pub fn row_with_tip(
    ui: &mut Ui,
    label: &str,
    value: &mut String,
    hint: &str,
    tip: Option<&str>,
    problem: Option<&str>,
    enabled: bool,
    browse: Browse,
) -> bool {
    let label_response = ui.label(label);
    let mut changed = false;
    ui.vertical(|ui| {
        ui.horizontal(|ui| {
            let edit = TextEdit::singleline(value)
                .hint_text(hint)
                .desired_width(ui.available_width().min(420.0));
            let mut response = ui.add_enabled(enabled, edit).labelled_by(label_response.id);
            if let Some(tip) = tip {
                response = response.on_hover_text(tip).on_disabled_hover_text(tip);
            }
            changed |= response.changed();
            if browse != Browse::None {
                let button = ui
                    .add_enabled(enabled, egui::Button::new("Browse…"))
                    .accessible_name(format!("Browse: {label}"));
                if button.clicked() {
                    if let Some(path) = pick(browse, value) {
                        *value = path;
                        changed = true;
                    }
                }
            }
        });
        if let Some(problem) = problem {
            error_line(ui, problem);
        }
    });
    ui.end_row();
    changed
}

/// Opens the platform's dialog (the XDG desktop portal, or zenity); `None`
/// when cancelled or when no dialog is available (typed paths always work).
fn pick(browse: Browse, current: &str) -> Option<String> {
    let mut dialog = rfd::FileDialog::new();
    let current = std::path::Path::new(current.trim());
    let start = if current.is_dir() {
        Some(current)
    } else {
        current.parent().filter(|p| p.is_dir())
    };
    if let Some(dir) = start {
        dialog = dialog.set_directory(dir);
    }
    let picked = match browse {
        Browse::Folder => dialog.pick_folder(),
        Browse::SaveFile => {
            if let Some(name) = current.file_name() {
                dialog = dialog.set_file_name(name.to_string_lossy());
            }
            dialog.save_file()
        }
        Browse::OpenFile => dialog.pick_file(),
        Browse::None => None,
    };
    picked.map(|p| p.display().to_string())
}

/// A read-only value with a Copy button (device ids, secrets); `tip` says
/// what it is for (hover hint and accessible description).
pub fn copyable(ui: &mut Ui, label: &str, value: &str, tip: &str) {
    let label_response = ui.label(label);
    ui.horizontal(|ui| {
        // A `&str` buffer: selectable, not editable.
        let mut shown = value;
        ui.add(
            TextEdit::singleline(&mut shown)
                .font(egui::TextStyle::Monospace)
                .interactive(true)
                .desired_width(ui.available_width().min(560.0)),
        )
        .labelled_by(label_response.id)
        .on_hover_text(tip);
        if ui
            .button("Copy")
            .on_hover_text("Copy to the clipboard")
            .accessible_name(format!("Copy {label}"))
            .clicked()
        {
            ui.ctx().copy_text(value.to_string());
        }
    });
    ui.end_row();
}

/// A choice among `choices` (value, name) as a combo box labelled by the row's
/// label. Returns whether the choice changed.
pub fn choice<T: Copy + PartialEq>(
    ui: &mut Ui,
    label: &str,
    value: &mut T,
    choices: &[(T, &str)],
    tip: &str,
    enabled: bool,
) -> bool {
    let label_response = ui.label(label);
    let selected = choices
        .iter()
        .find(|(v, _)| v == value)
        .map_or("", |(_, name)| *name);
    let mut changed = false;
    let combo = ui.add_enabled_ui(enabled, |ui| {
        egui::ComboBox::from_id_salt(label)
            .selected_text(selected)
            .show_ui(ui, |ui| {
                for (choice, name) in choices {
                    changed |= ui.selectable_value(value, *choice, *name).changed();
                }
            })
            .response
    });
    combo
        .inner
        .labelled_by(label_response.id)
        .on_hover_text(tip)
        .on_disabled_hover_text(tip);
    ui.end_row();
    changed
}

/// The bandwidth limit's hover hint, with an example schedule.
pub fn limit_rate_tip(scope: &str) -> String {
    format!(
        "{scope}. A rate such as 10MB/s, or daily windows in local time: \
         {LIMIT_RATE_EXAMPLE} is 2 MB/s from 08:00 to 18:00 and 10 MB/s \
         otherwise; =off in a window lifts the limit. Empty: no limit."
    )
}

/// `ms` since the epoch as `HH:MM:SS UTC`.
pub fn clock_ms(ms: i64) -> String {
    clock(UNIX_EPOCH + Duration::from_millis(u64::try_from(ms).unwrap_or(0)))
}

/// A time of day as `HH:MM:SS UTC`.
pub fn clock(t: SystemTime) -> String {
    let secs = t.duration_since(UNIX_EPOCH).unwrap_or_default().as_secs() % 86_400;
    format!(
        "{:02}:{:02}:{:02} UTC",
        secs / 3600,
        secs / 60 % 60,
        secs % 60
    )
}
