//! `ferry`: the command line.

mod cli_help;
mod cli_history;
mod cli_key;
mod cli_ls;
mod cli_read;
mod cli_restore;
mod cli_senders;
mod cli_verify;
mod cli_versions;

use std::path::PathBuf;
use std::process::ExitCode;

use anyhow::Context;
use clap::{Args, Parser, Subcommand};
use ferry_agent::config::{default_state_dir, ReceiverConfig, SenderConfig};
use ferry_agent::identity::Identity;
use ferry_agent::receiver::Receiver;
use ferry_agent::sender;
use ferry_agent::status::SenderStatus;
use ferry_agent::summary::problem_lines;
use ferry_agent::terminal::Terminal;
use tokio_util::sync::CancellationToken;

/// Ferry: periodic, versioned, peer-to-peer file backup over QUIC.
#[derive(Parser)]
#[command(name = "ferry", version, about)]
struct Cli {
    /// Log format on stderr.
    #[arg(long, global = true, value_enum, default_value = "text")]
    log_format: LogFormat,
    /// More output: -v lists every file and logs INFO, -vv logs DEBUG
    /// (`ferry receive` and a periodic `ferry send` log INFO by default,
    /// DEBUG with -v, TRACE with -vv).
    #[arg(short, long, global = true, action = clap::ArgAction::Count)]
    verbose: u8,
    /// Less output: errors only; no progress bar and no summary line (the
    /// exit code tells how it went).
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
    #[command(after_help = cli_help::ID)]
    Id {
        /// State directory (identity, index, known receivers).
        #[arg(long)]
        state: Option<PathBuf>,
    },
    /// Accept senders and store what they send.
    #[command(override_usage = cli_help::RECEIVE_USAGE, after_help = cli_help::RECEIVE)]
    Receive(ReceiveArgs),
    /// Send a directory to a receiver, once or every period.
    #[command(override_usage = cli_help::SEND_USAGE, after_help = cli_help::SEND)]
    Send(SendArgs),
    /// List runs: this sender's own, the receiver's record of them (--host),
    /// or every sender's (--store, on the receiver).
    #[command(after_help = cli_help::HISTORY)]
    History(cli_history::HistoryArgs),
    /// List every stored version of one file (asks the receiver).
    #[command(after_help = cli_help::VERSIONS)]
    Versions(cli_versions::VersionsArgs),
    /// List one directory of the folder as of a run or a time (asks the
    /// receiver, or reads a local store).
    #[command(after_help = cli_help::LS)]
    Ls(cli_ls::LsArgs),
    /// Restore files as of a run or a time, from the receiver or the local
    /// keep-copies.
    #[command(after_help = cli_help::RESTORE)]
    Restore(cli_restore::RestoreArgs),
    /// Re-hash a receiver store against its catalog; exits 1 on any mismatch.
    #[command(after_help = cli_help::VERIFY)]
    Verify(cli_verify::VerifyArgs),
    /// Folder keys for --protect: make one, print its public half or its id.
    #[command(after_help = cli_help::KEY)]
    Key(cli_key::KeyArgs),
    /// On the receiver: list its senders, revoke or re-admit one, switch
    /// pairing on or off (while it runs).
    #[command(after_help = cli_help::SENDERS)]
    Senders(cli_senders::SendersArgs),
}

/// Options of `ferry receive`; each can also be set in the config file.
#[derive(Args)]
struct ReceiveArgs {
    /// TOML file with these settings (flags win over it).
    #[arg(short, long)]
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
    /// Directory where senders' files and their history are kept
    /// [required, here or in --config].
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
    /// With --store s3://BUCKET/PREFIX: the S3-compatible endpoint, e.g.
    /// http://127.0.0.1:8333 [default: AWS, or AWS_ENDPOINT_URL]. Keys come
    /// from AWS_ACCESS_KEY_ID / AWS_SECRET_ACCESS_KEY, the profile, or the
    /// config file.
    #[arg(long, value_name = "URL")]
    s3_endpoint: Option<String>,
    /// With a bucket store: its region [default: AWS_REGION, the profile's, us-east-1].
    #[arg(long)]
    s3_region: Option<String>,
    /// With a bucket store: the profile of ~/.aws/credentials to use.
    #[arg(long)]
    s3_profile: Option<String>,
    /// With a bucket store: virtual-host requests (BUCKET.host) instead of path-style.
    #[arg(long)]
    s3_virtual_host: bool,
    /// With a bucket store: rebuild this receiver's state (catalog) from the
    /// newest copy in the bucket; the state directory must not have one.
    #[arg(long)]
    recover: bool,
}

/// Options of `ferry send`; each can also be set in the config file.
#[derive(Args)]
struct SendArgs {
    /// Where to send, as which sender (shared with history, versions, restore).
    #[command(flatten)]
    remote: cli_read::RemoteArgs,
    /// The directory to send [required, here or in --config].
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
    /// Store locally in this directory with an embedded receiver (instead of
    /// --host; one of the two is required, here or in --config).
    #[arg(long, conflicts_with = "host")]
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
    /// Do not send what matches this pattern (gitignore syntax, from the
    /// source root; repeatable). `.ferryignore` files in the source are
    /// always read, and win over these.
    #[arg(long, value_name = "PATTERN")]
    exclude: Vec<String>,
    /// Read exclude patterns from this file, one a line (gitignore syntax).
    #[arg(long, value_name = "FILE")]
    exclude_file: Option<PathBuf>,
    /// Do not send directories holding a valid CACHEDIR.TAG.
    #[arg(long)]
    exclude_caches: bool,
    /// Do not send directories holding an entry of this name (repeatable).
    #[arg(long, value_name = "NAME")]
    exclude_if_present: Vec<String>,
    /// Do not descend into other filesystems mounted inside the source (a
    /// mount point is sent as an empty directory).
    #[arg(long)]
    one_file_system: bool,
    /// Send changes as they happen: watch the source (inotify) and run for
    /// what changed; a full scan still runs every --every [default: 1h].
    #[arg(long, conflicts_with = "once")]
    watch: bool,
    /// With --watch: how long a changed file must be quiet before it is
    /// sent (a file still being written waits) [default: 2s].
    #[arg(long, value_name = "DURATION")]
    watch_delay: Option<String>,
    /// How the receiver keeps the folder, fixed when it is first sent:
    /// plain (a browsable mirror), encrypted (sealed objects; this machine
    /// holds the key and can restore) or write-only (sealed to a public
    /// file; this machine cannot read back what it sent) [default: plain].
    #[arg(long, value_name = "MODE", value_parser = ["plain", "encrypted", "write-only"])]
    protect: Option<String>,
    /// With --protect: the key file (`ferry key new`) for encrypted, its
    /// public file (`ferry key public`) for write-only. Sending reads only
    /// the public half: no passphrase is asked.
    #[arg(long, value_name = "FILE")]
    key_file: Option<PathBuf>,
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
            s3_endpoint: self.s3_endpoint.clone(),
            s3_region: self.s3_region.clone(),
            s3_profile: self.s3_profile.clone(),
            s3_virtual_host: self.s3_virtual_host.then_some(true),
            recover: self.recover.then_some(true),
            ..ReceiverConfig::default()
        }))
    }
}

impl SendArgs {
    /// Whether these flags and the config file make a periodic sender.
    fn periodic(&self) -> bool {
        self.config().is_ok_and(|c| {
            (c.every.is_some() || c.watch.unwrap_or(false)) && !c.once.unwrap_or(false)
        })
    }

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
            exclude: self.exclude.clone(),
            exclude_file: self.exclude_file.clone(),
            exclude_caches: self.exclude_caches.then_some(true),
            exclude_if_present: self.exclude_if_present.clone(),
            one_file_system: self.one_file_system.then_some(true),
            watch: self.watch.then_some(true),
            watch_delay: self.watch_delay.clone(),
            protect: self.protect.clone(),
            key_file: self.key_file.clone(),
            ..SenderConfig::default()
        }))
    }
}

impl Command {
    /// Whether this command runs until stopped, as a service whose logs are
    /// its output (`ferry receive`, a periodic `ferry send`), rather than once
    /// with a summary at the end.
    fn runs_as_service(&self) -> bool {
        match self {
            Command::Receive(_) => true,
            Command::Send(args) => args.periodic(),
            _ => false,
        }
    }
}

/// The log level from `-q`/`-v`: one-shot commands log warnings (their
/// summary is their output), services INFO; each `-v` one level more, `-q`
/// errors only.
fn log_level(verbosity: Verbosity, service: bool) -> &'static str {
    const LEVELS: [&str; 5] = ["error", "warn", "info", "debug", "trace"];
    if verbosity.quiet {
        return LEVELS[0];
    }
    let base = if service { 2 } else { 1 };
    LEVELS[(base + usize::from(verbosity.verbose)).min(LEVELS.len() - 1)]
}

/// Logs at `level` (`FERRY_LOG` overrides it) to stderr through `terminal`,
/// so that no line tears the progress bar.
fn init_logging(format: LogFormat, level: &str, terminal: Terminal) {
    let filter = tracing_subscriber::EnvFilter::try_from_env("FERRY_LOG")
        .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new(level));
    let builder = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_ansi(std::io::IsTerminal::is_terminal(&std::io::stderr()))
        .with_writer(terminal);
    match format {
        LogFormat::Text => builder.init(),
        LogFormat::Json => builder.json().init(),
    }
}

/// Cancels the returned token on Ctrl-C or SIGTERM.
///
/// The handlers are in place when this returns (a signal from then on is
/// seen), so call it before announcing anything a supervisor or a test
/// acts on: registered later, in the spawned task, a SIGINT sent right
/// after "receiver listening" was lost (the process never stopped) or
/// killed the process uncleanly.
fn shutdown_on_signal() -> CancellationToken {
    use tokio::signal::unix::{signal, SignalKind};
    let token = CancellationToken::new();
    let t = token.clone();
    let mut interrupt = signal(SignalKind::interrupt()).ok();
    let mut term = signal(SignalKind::terminate()).ok();
    tokio::spawn(async move {
        async fn next(signal: Option<&mut tokio::signal::unix::Signal>) {
            match signal {
                Some(s) => {
                    s.recv().await;
                }
                None => std::future::pending().await,
            }
        }
        tokio::select! {
            _ = next(interrupt.as_mut()) => {}
            _ = next(term.as_mut()) => {}
        }
        tracing::info!("stopping (signal received)");
        t.cancel();
    });
    token
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    let verbosity = Verbosity {
        verbose: cli.verbose,
        quiet: cli.quiet,
    };
    let terminal = Terminal::stderr(cli.quiet);
    init_logging(
        cli.log_format,
        log_level(verbosity, cli.command.runs_as_service()),
        terminal.clone(),
    );
    let runtime = match tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
    {
        Ok(rt) => rt,
        Err(e) => {
            cli_read::note(format_args!("ferry: cannot start: {e}"));
            return ExitCode::from(2);
        }
    };
    match runtime.block_on(run(cli.command, verbosity, terminal)) {
        Ok(code) => code,
        Err(e) => {
            cli_read::note(format_args!(
                "ferry: error: {}",
                ferry_agent::chain::chain(e.as_ref())
            ));
            ExitCode::from(2)
        }
    }
}

async fn run(
    command: Command,
    verbosity: Verbosity,
    terminal: Terminal,
) -> anyhow::Result<ExitCode> {
    match command {
        Command::Id { state } => {
            let state = state.unwrap_or_else(default_state_dir);
            let identity = Identity::load_or_create(&state)
                .with_context(|| format!("loading the identity in {}", state.display()))?;
            cli_read::out(identity.id)?;
            Ok(ExitCode::SUCCESS)
        }
        Command::Receive(args) => {
            let settings = args.config()?.settings()?;
            let shutdown = shutdown_on_signal();
            let receiver = Receiver::bind(&settings)?;
            tracing::info!(
                id = %receiver.id(), addr = %receiver.local_addr()?,
                store = %settings.bucket.as_ref().map_or_else(|| settings.store.display().to_string(), |b| b.url()),
                max_clients = settings.max_clients,
                // Absent when there is none (an Option records nothing).
                quota = settings.quota,
                limit_rate = %settings.limit_rate.as_ref().map_or("off".to_string(), ToString::to_string),
                "receiver listening"
            );
            receiver.serve(shutdown).await;
            Ok(ExitCode::SUCCESS)
        }
        Command::History(args) => cli_history::history(args).await,
        Command::Versions(args) => cli_versions::versions(args).await,
        Command::Ls(args) => cli_ls::ls(args).await,
        Command::Restore(args) => cli_restore::restore(args, verbosity, &terminal).await,
        Command::Verify(args) => cli_verify::verify(args, &terminal).await,
        Command::Senders(args) => cli_senders::senders(args).await,
        Command::Key(args) => cli_key::key(args).await,
        Command::Send(args) => {
            let json = args.json;
            let settings = args.config()?.settings()?;
            let status = SenderStatus::new();
            let display = terminal.progress(status.clone());
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
                                Ok(line) => {
                                    if let Err(e) = cli_read::out(line) {
                                        tracing::error!("cannot print the summary: {e}");
                                    }
                                }
                                Err(e) => tracing::error!("cannot print the summary: {e}"),
                            }
                        } else {
                            // One line per reason; -v: one per file.
                            let all = verbosity.verbose > 0;
                            for line in problem_lines(&summary.problems, all) {
                                terminal.line(&format!("ferry: {line}"));
                            }
                            terminal.summary(&format!("ferry: {}", summary.line()));
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

#[cfg(test)]
mod tests {
    use super::*;
    use clap::CommandFactory;

    #[test]
    fn the_command_line_is_consistent() {
        Cli::command().debug_assert();
    }

    #[test]
    fn every_subcommand_has_examples() {
        let mut cli = Cli::command();
        for sub in cli.get_subcommands_mut() {
            let help = sub.render_long_help().to_string();
            assert!(help.contains("Examples:"), "{}: {help}", sub.get_name());
        }
    }

    #[test]
    fn one_shot_commands_log_warnings_and_services_info() {
        let v = |verbose, quiet| Verbosity { verbose, quiet };
        assert_eq!(log_level(v(0, false), false), "warn");
        assert_eq!(log_level(v(1, false), false), "info");
        assert_eq!(log_level(v(2, false), false), "debug");
        assert_eq!(log_level(v(9, false), false), "trace");
        assert_eq!(log_level(v(0, true), false), "error");
        assert_eq!(log_level(v(0, false), true), "info");
        assert_eq!(log_level(v(1, false), true), "debug");
        assert_eq!(log_level(v(0, true), true), "error");
    }

    #[test]
    fn a_send_is_a_service_only_when_periodic() {
        let parse = |args: &[&str]| Cli::try_parse_from(args).map(|c| c.command.runs_as_service());
        assert!(!parse(&["ferry", "send", "--source", "s", "--store", "d"]).unwrap());
        assert!(
            parse(&["ferry", "send", "--source", "s", "--store", "d", "--every", "1h"]).unwrap()
        );
        assert!(!parse(&["ferry", "send", "--every", "1h", "--once"]).unwrap());
        assert!(parse(&["ferry", "receive", "--store", "d"]).unwrap());
        assert!(!parse(&["ferry", "-v", "restore", "--to", "d"]).unwrap());
    }

    #[test]
    fn protect_and_key_file_reach_the_sender_config() {
        let parse = |args: &[&str]| Cli::try_parse_from(args);
        let cli = parse(&[
            "ferry",
            "send",
            "--source",
            "s",
            "--store",
            "d",
            "--protect",
            "encrypted",
            "--key-file",
            "folder.key",
        ])
        .unwrap();
        let Command::Send(args) = cli.command else {
            panic!("not send")
        };
        let config = args.config().unwrap();
        assert_eq!(config.protect.as_deref(), Some("encrypted"));
        assert_eq!(config.key_file, Some(PathBuf::from("folder.key")));
        let cli = parse(&["ferry", "send", "--protect", "write-only"]).unwrap();
        let Command::Send(args) = cli.command else {
            panic!("not send")
        };
        assert_eq!(
            args.config().unwrap().protect.as_deref(),
            Some("write-only")
        );
        assert!(parse(&["ferry", "send", "--protect", "secret"]).is_err());
        assert!(parse(&["ferry", "send", "--key-file"]).is_err());
    }

    #[test]
    fn key_subcommands_parse() {
        let parse = |args: &[&str]| Cli::try_parse_from(args).map(|_| ());
        parse(&["ferry", "key", "new", "--out", "f.key"]).unwrap();
        parse(&[
            "ferry",
            "key",
            "new",
            "--out",
            "f.key",
            "--passphrase-file",
            "p",
        ])
        .unwrap();
        parse(&["ferry", "key", "public", "f.key"]).unwrap();
        parse(&["ferry", "key", "public", "f.key", "--out", "f.pub"]).unwrap();
        parse(&["ferry", "key", "id", "f.pub"]).unwrap();
        assert!(parse(&["ferry", "key", "new"]).is_err());
        assert!(parse(&["ferry", "key", "public"]).is_err());
        assert!(parse(&["ferry", "key"]).is_err());
    }
}
