//! The sender's "Backups" view: where the backups are read from, the
//! folder's runs, a browser of the folder as of a run or a time, a file's
//! versions, and "Restore to…" with its progress and summary. Every widget
//! has a name for screen readers and egui_kittest ([`names`]).

use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::{Duration, UNIX_EPOCH};

use eframe::egui::{self, Button, Checkbox, Grid, ProgressBar, RichText, TextEdit, Ui};
use ferry_agent::summary::human_bytes;
use ferry_proto::{At, VersionKind};

use super::fields;
use crate::app::LauncherApp;
use crate::backups::{Backups, Loading, Origin, Row, RowKind};

/// Widget names, shared with the tests.
pub mod names {
    /// The tab that shows the view.
    pub const TAB: &str = "Backups";
    /// A store on this machine to read instead of the receiver.
    pub const STORE: &str = "Store on this machine";
    /// Load (or reload) the runs.
    pub const LOAD: &str = "Load backups";
    /// Browse the local keep-copies directory.
    pub const USE_COPIES: &str = "Use local copies";
    /// The date and time field.
    pub const AT: &str = "Date and time";
    /// Browse the folder as of the time typed.
    pub const SHOW_AT: &str = "Show the folder at this time";
    /// Where to restore.
    pub const RESTORE_TO: &str = "Restore to";
    /// Open the in-app folder chooser.
    pub const CHOOSE: &str = "Choose folder";
    /// Go up in the folder chooser.
    pub const CHOOSER_UP: &str = "Parent folder";
    /// Close the folder chooser.
    pub const CHOOSER_DONE: &str = "Use this folder";
    /// Restore over what exists at the destination.
    pub const OVERWRITE: &str = "Overwrite existing files (also allows restoring into the source)";
    /// Start the restore.
    pub const RESTORE: &str = "Restore to…";
    /// The restore's progress bar.
    pub const PROGRESS: &str = "Restore progress";
    /// Open the restored folder.
    pub const OPEN: &str = "Open folder";
    /// Said when the form or the store changed since the last load.
    pub const OUTDATED: &str = "The sender form or the store changed since these backups were \
        loaded: press \"Load backups\" to see the ones it names now";
    /// A run's button: `Run 7`.
    pub fn run(id: u64) -> String {
        format!("Run {id}")
    }
    /// A row's selection box: `Select sub/b.txt`.
    pub fn select(path: &str) -> String {
        format!("Select {path}")
    }
    /// A directory's expand button: `Expand sub`.
    pub fn expand(path: &str) -> String {
        format!("Expand {path}")
    }
    /// A file's versions button: `Show versions of sub/b.txt`.
    pub fn versions(path: &str) -> String {
        format!("Show versions of {path}")
    }
    /// A sub-folder in the chooser: `Go into docs`.
    pub fn go_into(name: &str) -> String {
        format!("Go into {name}")
    }
}

/// `ns` since the epoch as `YYYY-MM-DD HH:MM:SS` (UTC).
fn when_ns(ns: i64) -> String {
    when_ms(ns.div_euclid(1_000_000))
}

/// `ms` since the epoch as `YYYY-MM-DD HH:MM:SS` (UTC).
pub fn when_ms(ms: i64) -> String {
    let t = UNIX_EPOCH + Duration::from_millis(u64::try_from(ms).unwrap_or(0));
    humantime::format_rfc3339_seconds(t)
        .to_string()
        .replace('T', " ")
        .trim_end_matches('Z')
        .to_string()
}

/// Draws the view.
pub fn show(app: &mut LauncherApp, ui: &mut Ui) {
    let ctx = ui.ctx().clone();
    let b = &mut app.backups;
    b.set_notify(Arc::new(move || ctx.request_repaint()));
    b.poll();
    if b.busy() {
        ui.ctx().request_repaint_after(super::REFRESH);
    }
    if !b.is_loaded() {
        b.load(&app.settings.sender);
    }
    ui.heading("Backups of this folder");
    source_row(app, ui);
    if app.backups.outdated(&app.settings.sender) {
        ui.add(
            egui::Label::new(
                RichText::new(names::OUTDATED)
                    .strong()
                    .color(fields::error_color(ui)),
            )
            .wrap(),
        );
    }
    let b = &mut app.backups;
    if let Some(origin) = &b.origin {
        ui.label(format!("Reading from {}", origin.describe()));
    }
    if let Some(notice) = &b.notice {
        ui.add(egui::Label::new(RichText::new(notice).strong()).wrap());
    }
    if let Some(error) = b.error.clone() {
        fields::error_line(ui, &error);
    }
    super::unlock::show(b, ui);
    ui.separator();
    runs(b, ui);
    if let (Some(_), Some(why)) = (b.at, b.key.blocked()) {
        ui.separator();
        ui.weak(format!("Cannot browse yet: {why}"));
    } else if b.at.is_some() {
        ui.separator();
        browser(b, ui);
        versions(b, ui);
    }
    ui.separator();
    let source = app.settings.sender.source.clone();
    restore(&mut app.backups, ui, &source);
}

fn source_row(app: &mut LauncherApp, ui: &mut Ui) {
    ui.horizontal_wrapped(|ui| {
        let label = ui.label(names::STORE);
        ui.add(
            TextEdit::singleline(&mut app.backups.store_dir)
                .hint_text("empty: ask the receiver in the sender form")
                .desired_width(260.0),
        )
        .labelled_by(label.id);
        if ui.button(names::LOAD).clicked() {
            app.backups.load(&app.settings.sender);
        }
        let has_copies = !app.settings.sender.keep_copies.trim().is_empty();
        if ui
            .add_enabled(has_copies, Button::new(names::USE_COPIES))
            .on_disabled_hover_text("The sender keeps no local copies (\"Keep copies in\")")
            .clicked()
        {
            app.backups.use_copies(&app.settings.sender);
        }
    });
}

fn runs(b: &mut Backups, ui: &mut Ui) {
    ui.strong("Runs");
    let mut picked = None;
    match &b.runs {
        None => {
            ui.weak("press \"Load backups\" to see this folder's runs");
        }
        Some(Loading::Pending) => {
            ui.label("Loading runs…");
        }
        Some(Loading::Failed(_)) => {
            ui.weak("no runs shown");
        }
        Some(Loading::Ready(runs)) if runs.is_empty() => {
            if let Some(Origin::Copies(_)) = b.origin {
                ui.weak("the local copies keep no runs: they hold the files as last sent");
            } else {
                ui.weak("no runs");
            }
        }
        Some(Loading::Ready(runs)) => {
            egui::ScrollArea::vertical()
                .id_salt("backup-runs")
                .max_height(180.0)
                .show(ui, |ui| {
                    Grid::new("backup-runs-grid")
                        .striped(true)
                        .num_columns(6)
                        .show(ui, |ui| {
                            for h in ["Run", "Started", "Result", "Files", "Data", "Failures"] {
                                ui.strong(h);
                            }
                            ui.end_row();
                            for r in runs {
                                let chosen = b.at == Some(At::Run(r.id));
                                if ui
                                    .add(Button::selectable(chosen, names::run(r.id)))
                                    .clicked()
                                {
                                    picked = Some(r.id);
                                }
                                ui.label(when_ms(r.started_ms));
                                ui.label(&r.status);
                                ui.label(format!(
                                    "{} sent, {} deleted",
                                    r.report.files_sent, r.report.files_deleted
                                ));
                                ui.label(human_bytes(r.report.bytes_file_data));
                                ui.label(r.report.errors.to_string());
                                ui.end_row();
                            }
                        });
                });
        }
    }
    if let Some(id) = picked {
        b.pick_run(id);
    }
    let copies = matches!(b.origin, Some(Origin::Copies(_)));
    ui.horizontal_wrapped(|ui| {
        let label = ui.label(names::AT);
        ui.add_enabled(
            !copies,
            TextEdit::singleline(&mut b.at_text)
                .hint_text("2026-11-20 14:00 (UTC) or 3h ago as 3h")
                .desired_width(200.0),
        )
        .labelled_by(label.id);
        let can = !copies && b.origin.is_some() && !b.at_text.trim().is_empty();
        if ui.add_enabled(can, Button::new(names::SHOW_AT)).clicked() {
            b.pick_time();
        }
    });
}

fn point(at: Option<At>) -> String {
    match at {
        Some(At::Run(id)) => format!("as of run {id}"),
        Some(At::Time(ms)) => format!("as of {} UTC", when_ms(ms)),
        Some(At::Latest) | None => "as last sent".into(),
    }
}

fn browser(b: &mut Backups, ui: &mut Ui) {
    ui.strong(format!("The folder {}", point(b.at)));
    if !b.unopened.is_empty() {
        fields::error_line(
            ui,
            &format!(
                "{} stored objects did not open (damaged, or sealed to another key) and are \
                 not listed; a restore reports them too:",
                b.unopened.len()
            ),
        );
        for line in b.unopened.iter().take(10) {
            ui.weak(line);
        }
    }
    let mut actions = Vec::new();
    egui::ScrollArea::vertical()
        .id_salt("backup-browser")
        .max_height(320.0)
        .show(ui, |ui| dir_rows(b, ui, "", 0, &mut actions));
    for action in actions {
        match action {
            Action::Toggle(path) => b.toggle_dir(&path),
            Action::Select(path) => b.toggle_selected(&path),
            Action::Versions(path) => b.show_versions(&path),
        }
    }
}

enum Action {
    Toggle(ferry_proto::RelPath),
    Select(ferry_proto::RelPath),
    Versions(ferry_proto::RelPath),
}

fn dir_rows(b: &Backups, ui: &mut Ui, key: &str, depth: usize, actions: &mut Vec<Action>) {
    let indent = 18.0 * depth as f32;
    match b.dirs.get(key) {
        None => {}
        Some(Loading::Pending) => {
            ui.horizontal(|ui| {
                ui.add_space(indent);
                ui.weak("loading…");
            });
        }
        Some(Loading::Failed(e)) => {
            ui.horizontal(|ui| {
                ui.add_space(indent);
                fields::error_line(ui, e);
            });
        }
        Some(Loading::Ready(rows)) if rows.is_empty() => {
            ui.horizontal(|ui| {
                ui.add_space(indent);
                ui.weak("empty");
            });
        }
        Some(Loading::Ready(rows)) => {
            for row in rows {
                entry_row(b, ui, row, indent, actions);
                let path = row.path.to_string();
                if row.kind == RowKind::Dir && b.expanded.contains(&path) {
                    dir_rows(b, ui, &path, depth + 1, actions);
                }
            }
        }
    }
}

fn entry_row(b: &Backups, ui: &mut Ui, row: &Row, indent: f32, actions: &mut Vec<Action>) {
    let path = row.path.to_string();
    ui.horizontal(|ui| {
        ui.add_space(indent);
        let mut selected = b.selected.contains_key(&path);
        if ui
            .add(Checkbox::without_text(&mut selected))
            .accessible_name(names::select(&path))
            .clicked()
        {
            actions.push(Action::Select(row.path.clone()));
        }
        match &row.kind {
            RowKind::Dir => {
                let open = b.expanded.contains(&path);
                let arrow = if open { "-" } else { "+" };
                if ui
                    .add(Button::new(format!("{arrow} {}/", row.name)).frame(false))
                    .accessible_name(names::expand(&path))
                    .clicked()
                {
                    actions.push(Action::Toggle(row.path.clone()));
                }
            }
            RowKind::File { size } => {
                ui.label(&row.name);
                ui.weak(human_bytes(*size));
            }
            RowKind::Symlink { target } => {
                ui.label(format!("{} -> {target}", row.name));
            }
        }
        if row.mtime_ns != 0 {
            ui.weak(format!("modified {}", when_ns(row.mtime_ns)));
        }
        if let RowKind::File { .. } = row.kind {
            if ui
                .small_button("versions")
                .accessible_name(names::versions(&path))
                .clicked()
            {
                actions.push(Action::Versions(row.path.clone()));
            }
        }
    });
}

fn versions(b: &mut Backups, ui: &mut Ui) {
    let Some((path, shown)) = &b.versions else {
        return;
    };
    ui.add_space(4.0);
    ui.strong(format!("Versions of {path}"));
    match shown {
        Loading::Pending => {
            ui.label("Loading versions…");
        }
        Loading::Failed(e) => fields::error_line(ui, e),
        Loading::Ready(list) if list.is_empty() => {
            ui.weak("no versions stored");
        }
        Loading::Ready(list) => {
            Grid::new("backup-versions")
                .striped(true)
                .num_columns(4)
                .show(ui, |ui| {
                    for h in ["Stored by", "Size", "Modified", "Replaced"] {
                        ui.strong(h);
                    }
                    ui.end_row();
                    for v in list {
                        ui.label(format!("run {} ({})", v.run, when_ms(v.stored_ms)));
                        ui.label(match &v.kind {
                            VersionKind::File { size, .. } => human_bytes(*size),
                            VersionKind::Dir => "directory".into(),
                            VersionKind::Symlink { .. } => "symlink".into(),
                        });
                        ui.label(when_ns(v.mtime_ns));
                        ui.label(match (v.replaced_run, v.deleted) {
                            (None, _) => "current".to_string(),
                            (Some(r), true) => format!("deleted in run {r}"),
                            (Some(r), false) => format!("replaced in run {r}"),
                        });
                        ui.end_row();
                    }
                });
        }
    }
}

fn restore(b: &mut Backups, ui: &mut Ui, source: &str) {
    ui.strong("Restore");
    ui.label(match b.selected.len() {
        0 => "Nothing selected: tick files and folders above".to_string(),
        1 => "1 entry selected".to_string(),
        n => format!("{n} entries selected"),
    });
    ui.horizontal_wrapped(|ui| {
        let label = ui.label(names::RESTORE_TO);
        ui.add(TextEdit::singleline(&mut b.restore_to).desired_width(360.0))
            .labelled_by(label.id);
        if ui.button(names::CHOOSE).clicked() {
            b.chooser = Some(nearest_dir(Path::new(b.restore_to.trim())));
        }
    });
    chooser(b, ui);
    ui.checkbox(&mut b.overwrite, names::OVERWRITE);
    let blocked = b.restore_blocked(source);
    if ui
        .add_enabled(blocked.is_none(), Button::new(names::RESTORE))
        .clicked()
    {
        b.restore(source);
    }
    if let Some(why) = &blocked {
        ui.weak(format!("Cannot restore yet: {why}"));
    }
    let mut open = false;
    if let Some(r) = &b.restoring {
        let s = r.status.progress.snapshot();
        let fraction = match (&r.result, s.bytes_total, s.entries_total) {
            (Some(_), _, _) => 1.0,
            (None, 0, 0) => 0.0,
            (None, 0, total) => s.entries_done as f32 / total as f32,
            (None, total, _) => s.bytes_done as f32 / total as f32,
        };
        let label = ui.label(names::PROGRESS);
        ui.add(ProgressBar::new(fraction.clamp(0.0, 1.0)).show_percentage())
            .labelled_by(label.id);
        ui.label(format!("From {} into {}", r.from, r.dest.display()));
        match &r.result {
            None => {
                ui.label(format!(
                    "Restoring… {} entries, {}",
                    s.entries_done,
                    human_bytes(s.bytes_done)
                ));
            }
            Some(Err(e)) => fields::error_line(ui, &format!("The restore failed: {e}")),
            Some(Ok(summary)) => {
                let plural = |n: u64, one: &str, many: &str| {
                    format!("{n} {}", if n == 1 { one } else { many })
                };
                ui.label(format!(
                    "Restored {} ({}), {}, {}; {} skipped; {} failed",
                    plural(summary.files, "file", "files"),
                    human_bytes(summary.bytes),
                    plural(summary.links, "symlink", "symlinks"),
                    plural(summary.dirs, "folder", "folders"),
                    summary.skipped.len(),
                    summary.problems.len()
                ));
                for s in summary.skipped.iter().take(20) {
                    ui.weak(format!(
                        "skipped {s}: it exists at the destination (tick \"Overwrite\" to replace it)"
                    ));
                }
                for p in summary.problems.iter().take(20) {
                    fields::error_line(ui, &format!("failed {}: {}", p.path, p.message));
                }
                open = ui.button(names::OPEN).clicked();
            }
        }
    }
    if open {
        b.open_folder();
    }
}

/// The nearest existing directory at or above `p` (else the home folder).
fn nearest_dir(p: &Path) -> PathBuf {
    let mut at = Some(p);
    while let Some(dir) = at {
        if dir.is_dir() {
            return dir.to_path_buf();
        }
        at = dir.parent();
    }
    std::env::var_os("HOME")
        .map(PathBuf::from)
        .unwrap_or_else(|| PathBuf::from("/"))
}

/// The in-app folder chooser: the shown folder's sub-folders; picking one
/// goes into it, and "Use this folder" restores into a new folder there.
fn chooser(b: &mut Backups, ui: &mut Ui) {
    let Some(dir) = b.chooser.clone() else { return };
    let mut next = None;
    let mut done = false;
    ui.group(|ui| {
        ui.label(format!("In {}", dir.display()));
        ui.horizontal(|ui| {
            if ui
                .add_enabled(dir.parent().is_some(), Button::new(names::CHOOSER_UP))
                .clicked()
            {
                next = dir.parent().map(Path::to_path_buf);
            }
            done = ui.button(names::CHOOSER_DONE).clicked();
        });
        let mut subdirs: Vec<String> = std::fs::read_dir(&dir)
            .map(|read| {
                read.flatten()
                    .filter(|e| e.file_type().is_ok_and(|t| t.is_dir()))
                    .map(|e| e.file_name().to_string_lossy().into_owned())
                    .collect()
            })
            .unwrap_or_default();
        subdirs.sort();
        egui::ScrollArea::vertical()
            .id_salt("backup-chooser")
            .max_height(140.0)
            .show(ui, |ui| {
                for name in subdirs {
                    if ui
                        .add(Button::new(format!("{name}/")).frame(false))
                        .accessible_name(names::go_into(&name))
                        .clicked()
                    {
                        next = Some(dir.join(&name));
                    }
                }
            });
    });
    if let Some(next) = next {
        b.chooser = Some(next);
    }
    if done {
        // A new folder inside the one chosen, named as the default is.
        let typed = PathBuf::from(b.restore_to.trim());
        let name = typed
            .file_name()
            .map(|n| n.to_os_string())
            .unwrap_or_else(|| "restored".into());
        b.restore_to = dir.join(name).display().to_string();
        b.chooser = None;
    }
}
