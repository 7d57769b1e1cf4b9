//! # ferry-gui: the launcher
//!
//! A window to set up and run Ferry: choose the receiver or sender role,
//! fill in the form (checked as it is typed), Start / Stop, and watch what
//! the agent does. The agent runs in-process through `ferry-agent`; settings
//! persist in `$XDG_CONFIG_HOME/ferry/launcher.toml`, and "Save as config
//! file" writes the TOML that `ferry receive|send --config` runs headless.
//!
//! ## Layout
//!
//! - [`form`]: the forms as typed, their checks, and the agent configs.
//! - [`exclusions`]: counting what the sender's exclude patterns leave out.
//! - [`settings`]: what persists between launches, and the secret files.
//! - [`agent`]: running a receiver or sender task, and its event stream.
//! - [`senders`]: the receiver's Senders view state: the list and the
//!   admin's actions.
//! - [`app`]: the launcher's state and actions, without a window (it does
//!   not know the panels: [`ui`] draws it and is what eframe runs).
//! - [`backups`]: the sender's Backups view (browse, restore), without a window.
//! - [`ui`]: the panels that draw it.

pub mod agent;
pub mod app;
pub mod backups;
pub mod exclusions;
pub mod form;
pub mod senders;
pub mod settings;
pub mod ui;

pub use app::LauncherApp;
