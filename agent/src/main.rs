//! `ferry`: the command line.

mod cli_history;

use std::path::PathBuf;
use std::process::ExitCode;

use anyhow::Context;
use clap::{Args, Parser, Subcommand};
use ferry_agent::config::{default_state_dir, ReceiverConfig, SenderConfig};
use ferry_agent::identity::Identity;
use ferry_agent::receiver::Receiver;
use ferry_agent::sender;
use ferry_agent::status::SenderStatus;
use ferry_agent::summary::{problem_lines, terminal_display};
use tokio_util::sync::CancellationToken;

/// Ferry: periodic, versioned, peer-to-peer file backup over QUIC.
#[derive(Parser)]
#[command(name = "ferry", version, about)]
struct Cli {
    /// Log format on stderr.
    #[arg(long, global = true, value_enum, default_value = "text")]
    log_format: LogFormat,
    /// More output: -v lists every file and logs INFO, -vv logs DEBUG.
    #[arg(short, long, global = true, action = clap::ArgAction::Count)]
    verbose: u8,
    /// Less output: errors and the summary only.
    #[arg(short, long, global = true, conflicts_with = "verbose")]
    quiet: bool,
    #[command(subcommand)]
    command: Command,
}

/// How much a command prints, from `-q` / `-v`.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) struct Verbosity {
    /// Number of `-v` given.
    pub verbose: u8,
    /// `-q` given.
    pub quiet: bool,
}

#[derive(Clone, Copy, clap::ValueEnum)]
enum LogFormat {
    Text,
    Json,
}

#[derive(Subcommand)]
enum Command {
    /// Print this machine's device id.
    Id {
        /// State directory (identity, index, known receivers).
        #[arg(long)]
        state: Option<PathBuf>,
    },
    /// Accept senders and store what they send.
    Receive(ReceiveArgs),
    /// Send a directory to a receiver, once or every period.
    Send(SendArgs),
    /// List runs: this sender's own, the receiver's record of them (--host),
    /// or every sender's (--store, on the receiver).
    History(cli_history::HistoryArgs),
    /// List every stored version of one file (asks the receiver).
    Versions(cli_history::VersionsArgs),
    /// Restore files as of a run or a time, from the receiver or the local
    /// keep-copies.
    Restore(cli_history::RestoreArgs),
    /// Re-hash a receiver store against its catalog; exits 1 on any mismatch.
    Verify(cli_history::VerifyArgs),
}

/// Options of `ferry receive`; each can also be set in the config file.
#[derive(Args)]
struct ReceiveArgs {
    /// TOML file with these settings (flags win over it).
    #[arg(long)]
    config: Option<PathBuf>,
    /// Address to listen on [default: 0.0.0.0].
    #[arg(long)]
    host: Option<String>,
    /// UDP port to listen on [default: 7878].
    #[arg(long)]
    port: Option<u16>,
    /// Senders served at once; the next one is told to retry later [default: 8].
    #[arg(long)]
    max_clients: Option<usize>,
    /// Directory where senders' files and their history are kept.
    #[arg(long)]
    store: Option<PathBuf>,
    /// File holding the secret that lets new senders pair with this receiver.
    #[arg(long)]
    pairing_secret_file: Option<PathBuf>,
    /// Device id of a sender to admit without pairing (repeatable).
    #[arg(long = "allow", value_name = "ID")]
    allow: Vec<String>,
    /// State directory (this receiver's identity).
    #[arg(long)]
    state: Option<PathBuf>,
    /// Retention: keep the newest N old versions of each file.
    #[arg(long)]
    keep_versions: Option<u32>,
    /// Retention: keep old versions younger than this (e.g. 90d); with
    /// --staggered, the maximum age.
    #[arg(long)]
    keep_for: Option<String>,
    /// Retention: thin old versions out with age (one per hour for a day,
    /// one per day for a month, one per week after).
    #[arg(long)]
    staggered: bool,
    /// How often retention is applied [default: 1h].
    #[arg(long)]
    prune_every: Option<String>,
    /// Most bytes stored per sender, current and old versions together
    /// (e.g. 100GiB, 1TB); a file that would go over is refused.
    #[arg(long)]
    quota: Option<String>,
    /// Bandwidth limit for each sender's connection, e.g. 10MB/s or, by local
    /// time of day, "08:00-18:00=2MB/s,10MB/s" (first matching window wins;
    /// windows may wrap midnight; 0 or off: no limit).
    #[arg(long, value_name = "SCHEDULE")]
    limit_rate: Option<String>,
}

/// Options of `ferry send`; each can also be set in the config file.
#[derive(Args)]
struct SendArgs {
    /// Where to send, as which sender (shared with history, versions, restore).
    #[command(flatten)]
    remote: cli_history::RemoteArgs,
    /// The directory to send.
    #[arg(long)]
    source: Option<PathBuf>,
    /// Run every period (e.g. 15m, 1h); without it, run once.
    #[arg(long)]
    every: Option<String>,
    /// Run once and exit, even if a period is configured.
    #[arg(long)]
    once: bool,
    /// Print each run's summary as one JSON object on stdout.
    #[arg(long)]
    json: bool,
    /// Keep a local copy of each file as last sent in this directory.
    #[arg(long)]
    keep_copies: Option<PathBuf>,
    /// File holding the receiver's pairing secret (needed on first contact only).
    #[arg(long)]
    pairing_secret_file: Option<PathBuf>,
    /// Store locally in this directory with an embedded receiver (instead of --host).
    #[arg(long)]
    store: Option<PathBuf>,
    /// Stop a run that would delete more than this share of the files sent
    /// before [default: 50].
    #[arg(long, value_name = "PERCENT")]
    max_delete_percent: Option<u8>,
    /// Let a run delete more than --max-delete-percent.
    #[arg(long)]
    allow_mass_delete: bool,
    /// Compress content with zstd: auto (what a sample shows to be
    /// compressible), on or off [default: auto].
    #[arg(long, value_name = "auto|on|off")]
    compress: Option<String>,
    /// Bandwidth limit for everything this sender sends, e.g. 10MB/s or, by
    /// local time of day, "08:00-18:00=2MB/s,10MB/s" (first matching window
    /// wins; windows may wrap midnight; 0 or off: no limit).
    #[arg(long, value_name = "SCHEDULE")]
    limit_rate: Option<String>,
}

impl ReceiveArgs {
    fn config(&self) -> anyhow::Result<ReceiverConfig> {
        let file = match &self.config {
            Some(path) => ReceiverConfig::load(path)?,
            None => ReceiverConfig::default(),
        };
        Ok(file.merge(ReceiverConfig {
            host: self.host.clone(),
            port: self.port,
            max_clients: self.max_clients,
            store: self.store.clone(),
            pairing_secret_file: self.pairing_secret_file.clone(),
            allow: self.allow.clone(),
            state: self.state.clone(),
            keep_versions: self.keep_versions,
            keep_for: self.keep_for.clone(),
            staggered: self.staggered.then_some(true),
            prune_every: self.prune_every.clone(),
            quota: self.quota.clone(),
            limit_rate: self.limit_rate.clone(),
        }))
    }
}

impl SendArgs {
    fn config(&self) -> anyhow::Result<SenderConfig> {
        Ok(self.remote.config()?.merge(SenderConfig {
            source: self.source.clone(),
            every: self.every.clone(),
            once: self.once.then_some(true),
            keep_copies: self.keep_copies.clone(),
            pairing_secret_file: self.pairing_secret_file.clone(),
            store: self.store.clone(),
            max_delete_percent: self.max_delete_percent,
            allow_mass_delete: self.allow_mass_delete.then_some(true),
            compress: self.compress.clone(),
            limit_rate: self.limit_rate.clone(),
            ..SenderConfig::default()
        }))
    }
}

fn init_logging(format: LogFormat) {
    let filter = tracing_subscriber::EnvFilter::try_from_env("FERRY_LOG")
        .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("info"));
    let builder = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_ansi(std::io::IsTerminal::is_terminal(&std::io::stderr()))
        .with_writer(std::io::stderr);
    match format {
        LogFormat::Text => builder.init(),
        LogFormat::Json => builder.json().init(),
    }
}

/// Cancels the returned token on Ctrl-C or SIGTERM.
fn shutdown_on_signal() -> CancellationToken {
    let token = CancellationToken::new();
    let t = token.clone();
    tokio::spawn(async move {
        let mut term =
            tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()).ok();
        tokio::select! {
            _ = tokio::signal::ctrl_c() => {}
            _ = async { match term.as_mut() { Some(s) => { s.recv().await; } None => std::future::pending().await } } => {}
        }
        tracing::info!("stopping (signal received)");
        t.cancel();
    });
    token
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    init_logging(cli.log_format);
    let runtime = match tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
    {
        Ok(rt) => rt,
        Err(e) => {
            eprintln!("ferry: cannot start: {e}");
            return ExitCode::from(2);
        }
    };
    let verbosity = Verbosity {
        verbose: cli.verbose,
        quiet: cli.quiet,
    };
    match runtime.block_on(run(cli.command, verbosity)) {
        Ok(code) => code,
        Err(e) => {
            eprintln!("ferry: error: {}", ferry_agent::chain::chain(e.as_ref()));
            ExitCode::from(2)
        }
    }
}

async fn run(command: Command, verbosity: Verbosity) -> anyhow::Result<ExitCode> {
    let _ = verbosity; // each command's output follows it

    match command {
        Command::Id { state } => {
            let state = state.unwrap_or_else(default_state_dir);
            let identity = Identity::load_or_create(&state)
                .with_context(|| format!("loading the identity in {}", state.display()))?;
            println!("{}", identity.id);
            Ok(ExitCode::SUCCESS)
        }
        Command::Receive(args) => {
            let settings = args.config()?.settings()?;
            let receiver = Receiver::bind(&settings)?;
            tracing::info!(
                id = %receiver.id(), addr = %receiver.local_addr()?, store = %settings.store.display(),
                max_clients = settings.max_clients, quota = ?settings.quota,
                limit_rate = %settings.limit_rate.as_ref().map_or("off".to_string(), ToString::to_string),
                "receiver listening"
            );
            receiver.serve(shutdown_on_signal()).await;
            Ok(ExitCode::SUCCESS)
        }
        Command::History(args) => cli_history::history(args).await,
        Command::Versions(args) => cli_history::versions(args).await,
        Command::Restore(args) => cli_history::restore(args).await,
        Command::Verify(args) => cli_history::verify(args).await,
        Command::Send(args) => {
            let json = args.json;
            let settings = args.config()?.settings()?;
            let status = SenderStatus::new();
            let display = terminal_display(status.clone());
            let mut last_errors = 0;
            let result = sender::run(
                settings,
                shutdown_on_signal(),
                status,
                // A failed attempt is logged by the sender if it retries,
                // and printed below if it was the last.
                |result| {
                    if let Ok(summary) = result {
                        last_errors = summary.errors;
                        if json {
                            match serde_json::to_string(summary) {
                                Ok(line) => println!("{line}"),
                                Err(e) => tracing::error!("cannot print the summary: {e}"),
                            }
                        } else {
                            // One line per reason; -v: one per file.
                            let all = verbosity.verbose > 0;
                            for line in problem_lines(&summary.problems, all) {
                                eprintln!("ferry: {line}");
                            }
                            eprintln!("ferry: {}", summary.line());
                        }
                    }
                },
            )
            .await;
            if let Some(display) = display {
                display.finish().await;
            }
            match result {
                Ok(_) if last_errors == 0 => Ok(ExitCode::SUCCESS),
                Ok(_) => Ok(ExitCode::from(1)),
                Err(sender::SenderError::Run(sender::RunError::Stopped)) => Ok(ExitCode::SUCCESS),
                Err(e) => Err(e.into()),
            }
        }
    }
}
