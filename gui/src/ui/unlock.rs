//! The Backups view's key panel for a protected folder: what the folder
//! is ("This folder is encrypted (key ab12…)"), the key file (with
//! Browse…), the passphrase (a password field, never saved), "Unlock", and
//! why browsing and restoring wait until then.

use eframe::egui::{self, Button, Grid, RichText, Spinner, TextEdit, Ui};

use super::fields::{self, Browse};
use crate::backups::{Backups, KeyState};

/// Widget names, shared with the tests.
pub mod names {
    /// The folder's key file.
    pub const KEY_FILE: &str = "Folder key file";
    /// Its passphrase.
    pub const PASSPHRASE: &str = "Key file passphrase";
    /// Open the key.
    pub const UNLOCK: &str = "Unlock";
    /// Said while the key opens.
    pub const UNLOCKING: &str = "Opening the key…";
    /// Said once it is open.
    pub const UNLOCKED: &str = "Unlocked: real names are shown; restores open the objects";
}

/// Draws the panel when the folder is protected; nothing otherwise.
pub fn show(b: &mut Backups, ui: &mut Ui) {
    let Some(what) = b.key.describe() else {
        return;
    };
    ui.add(egui::Label::new(RichText::new(what).strong()).wrap());
    if let KeyState::Unlocked(_) = b.key.state {
        ui.label(names::UNLOCKED);
        return;
    }
    if let Some(hint) = &b.key.hint {
        ui.add(egui::Label::new(hint.as_str()).wrap());
    }
    let working = matches!(b.key.state, KeyState::Unlocking);
    let mut go = false;
    Grid::new("backup-key").num_columns(2).show(ui, |ui| {
        fields::row(
            ui,
            names::KEY_FILE,
            &mut b.key.key_file,
            "the key file: ferry key new --out FILE (not the public half)",
            None,
            !working,
            Browse::OpenFile,
        );
        let label = ui.label(names::PASSPHRASE);
        let field = ui
            .add_enabled(
                !working,
                TextEdit::singleline(&mut b.key.passphrase)
                    .password(true)
                    .desired_width(260.0),
            )
            .labelled_by(label.id);
        go = field.lost_focus() && ui.input(|i| i.key_pressed(egui::Key::Enter));
        ui.end_row();
    });
    ui.horizontal(|ui| {
        go |= ui
            .add_enabled(!working, Button::new(names::UNLOCK))
            .clicked();
        if working {
            ui.add(Spinner::new());
            ui.label(names::UNLOCKING);
        }
    });
    if let Some(e) = &b.key.error {
        fields::error_line(ui, e);
    }
    if go {
        b.unlock();
    }
}
