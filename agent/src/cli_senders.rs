//! `ferry senders`: the receiver admin's list of senders, revoking and
//! re-admitting one, and the pairing switch; on the receiver's machine,
//! while the receiver runs or not.

use std::path::PathBuf;
use std::process::ExitCode;

use anyhow::bail;
use clap::{Args, Subcommand, ValueEnum};
use ferry_agent::config::ReceiverConfig;
use ferry_agent::senders::{self, FolderMode, SenderInfo, SendersReport};
use ferry_agent::summary::human_bytes;
use ferry_agent::tasks::blocking;

use crate::cli_read::out;

/// `ferry senders`.
#[derive(Args)]
pub struct SendersArgs {
    #[command(subcommand)]
    command: SendersCommand,
}

/// Where the store is: `--store`, or the receiver's config file.
#[derive(Args)]
struct StoreArgs {
    /// The receiver's store directory (the one given to `ferry receive --store`).
    #[arg(long)]
    store: Option<PathBuf>,
    /// The receiver's TOML config file, to take its store from.
    #[arg(short, long, conflicts_with = "store")]
    config: Option<PathBuf>,
}

impl StoreArgs {
    fn root(&self) -> anyhow::Result<PathBuf> {
        if let Some(store) = &self.store {
            return Ok(store.clone());
        }
        if let Some(path) = &self.config {
            let config = ReceiverConfig::load(path)?;
            if let Some(store) = config.store {
                return Ok(store);
            }
            bail!("{} sets no store: give --store DIR", path.display());
        }
        bail!("give --store DIR (the receiver's store) or --config FILE (the receiver's config)")
    }
}

#[derive(Subcommand)]
enum SendersCommand {
    /// Every sender known to the receiver: folders, last run, bytes stored,
    /// quota use, revoked or not, connected now or not.
    List {
        #[command(flatten)]
        store: StoreArgs,
        /// One JSON object on stdout.
        #[arg(long)]
        json: bool,
    },
    /// Stop admitting a sender (its open connection is closed within
    /// seconds); its files and history stay, restorable with `ferry restore
    /// --store`.
    Revoke {
        /// The sender's name, as `ferry senders list` shows it.
        name: String,
        #[command(flatten)]
        store: StoreArgs,
    },
    /// Admit a revoked sender again.
    Allow {
        /// The sender's name, as `ferry senders list` shows it.
        name: String,
        #[command(flatten)]
        store: StoreArgs,
    },
    /// Switch pairing of new senders (with the pairing secret) on or off.
    Pairing {
        state: Switch,
        #[command(flatten)]
        store: StoreArgs,
    },
}

#[derive(Clone, Copy, ValueEnum)]
enum Switch {
    On,
    Off,
}

pub async fn senders(args: SendersArgs) -> anyhow::Result<ExitCode> {
    match args.command {
        SendersCommand::List { store, json } => {
            let root = store.root()?;
            let report = blocking(move || senders::list(&root)).await??;
            if json {
                out(serde_json::to_string(&report)?)?;
            } else {
                print_report(&report)?;
            }
        }
        SendersCommand::Revoke { name, store } => {
            let root = store.root()?;
            let shown = name.clone();
            let changed = blocking(move || senders::set_revoked(&root, &name, true)).await??;
            if changed {
                out(format!("revoked {shown}: a running receiver refuses it within seconds and closes its connection; its files stay (`ferry restore --store`); undo with `ferry senders allow {shown}`"))?;
            } else {
                out(format!("{shown} was already revoked"))?;
            }
        }
        SendersCommand::Allow { name, store } => {
            let root = store.root()?;
            let shown = name.clone();
            let changed = blocking(move || senders::set_revoked(&root, &name, false)).await??;
            if changed {
                out(format!("{shown} is admitted again"))?;
            } else {
                out(format!("{shown} was not revoked"))?;
            }
        }
        SendersCommand::Pairing { state, store } => {
            let root = store.root()?;
            let on = matches!(state, Switch::On);
            let live = blocking(move || {
                senders::set_pairing(&root, on)?;
                anyhow::Ok(senders::read_live(&root, senders::now_ms()))
            })
            .await??;
            match (on, live) {
                (false, _) => out("pairing is off: new senders are refused, even with the pairing secret; known senders keep working")?,
                (true, Some(l)) if !l.pairing_secret => out("pairing is on, but the running receiver has no pairing secret: start it with --pairing-secret-file to pair new senders")?,
                (true, _) => out("pairing is on: new senders with the pairing secret are admitted")?,
            }
        }
    }
    Ok(ExitCode::SUCCESS)
}

fn time(ms: i64) -> String {
    ferry_agent::units::utc_seconds(ms)
}

fn print_report(report: &SendersReport) -> anyhow::Result<()> {
    let running = if report.receiver_running {
        "a receiver is running on it"
    } else {
        "no receiver is running on it"
    };
    out(format!("store {} ({running})", report.store.display()))?;
    let pairing = match (report.pairing, report.pairing_secret) {
        (false, _) => "off (switched off by the admin)",
        (true, Some(false)) => "on, but the running receiver has no pairing secret",
        (true, _) => "on",
    };
    out(format!("pairing: {pairing}"))?;
    if report.senders.is_empty() {
        out("no senders yet")?;
    }
    for s in &report.senders {
        print_sender(s, report.quota)?;
    }
    Ok(())
}

fn print_sender(s: &SenderInfo, quota: Option<u64>) -> anyhow::Result<()> {
    let mut state = Vec::new();
    if s.revoked {
        state.push("REVOKED");
    }
    state.push(if s.connected {
        "connected"
    } else {
        "not connected"
    });
    out(format!("\n{} [{}]", s.name, state.join(", ")))?;
    out(format!("  device   {}", s.device))?;
    let folders: Vec<String> = s.folder_modes.iter().map(FolderMode::label).collect();
    out(format!("  folders  {}", folders.join(", ")))?;
    match &s.last_run {
        Some(r) => out(format!(
            "  last run {} ({} of {}, run {})",
            time(r.finished_ms.unwrap_or(r.started_ms)),
            r.result,
            r.folder,
            r.run
        ))?,
        None => out("  last run none")?,
    }
    let quota = match (quota, s.quota_used_percent) {
        (Some(q), Some(p)) => format!(", {p}% of the {} quota", human_bytes(q)),
        _ => String::new(),
    };
    out(format!(
        "  stored   {} current + {} old versions{quota}",
        human_bytes(s.current_bytes),
        human_bytes(s.old_bytes)
    ))?;
    Ok(())
}
