//! `cargo run -p ferry-tests --example browse_timing -- [--dirs N]
//! [--files N] [--data DIR] [--ferry-bin PATH]`
//!
//! How fast a large folder is browsed one directory at a time: makes a
//! folder of `dirs` × `files` tiny files (default 400 × 500 = 200,000) in
//! `DIR/src` (kept between runs), sends it once to a receiver in this
//! process on 127.0.0.1, then times `Client::list` over QUIC (the root, then
//! each of 20 directories), the same on the store read locally, and the
//! `ferry ls` process. It prints the figures and asserts no time.

use std::path::PathBuf;
use std::time::{Duration, Instant};

use anyhow::Context;
use clap::Parser;
use ferry_agent::config::SenderConfig;
use ferry_agent::identity::Identity;
use ferry_agent::reader::{Client, LocalStore, Remote};
use ferry_agent::receiver::{Admission, Receiver};
use ferry_agent::status::SenderStatus;
use ferry_agent::store::Store;
use ferry_proto::{At, Name, RelPath};
use tokio_util::sync::CancellationToken;

#[derive(Debug, Parser)]
struct Args {
    /// Directories at the folder's root.
    #[arg(long, default_value_t = 400)]
    dirs: usize,
    /// Files in each directory.
    #[arg(long, default_value_t = 500)]
    files: usize,
    /// Where the folder, the store and the states go [default:
    /// <target dir>/browse-data].
    #[arg(long)]
    data: Option<PathBuf>,
    /// The `ferry` binary to time `ferry ls` with [default: the one beside
    /// this example's profile directory].
    #[arg(long)]
    ferry_bin: Option<PathBuf>,
}

fn ms(d: Duration) -> String {
    format!("{:.1} ms", d.as_secs_f64() * 1000.0)
}

/// min / median / max of `times`.
fn spread(times: &mut [Duration]) -> String {
    times.sort();
    match (times.first(), times.get(times.len() / 2), times.last()) {
        (Some(a), Some(m), Some(z)) => {
            format!("min {} / median {} / max {}", ms(*a), ms(*m), ms(*z))
        }
        _ => "-".into(),
    }
}

#[tokio::main(flavor = "multi_thread", worker_threads = 2)]
async fn main() -> anyhow::Result<()> {
    let args = Args::parse();
    let exe = std::env::current_exe()?;
    // <target>/<profile>/examples/browse_timing
    let profile = exe
        .parent()
        .and_then(|p| p.parent())
        .context("where is the target directory?")?
        .to_path_buf();
    let data = args
        .data
        .clone()
        .unwrap_or_else(|| profile.parent().unwrap_or(&profile).join("browse-data"));
    let src = data.join("src");
    let total = args.dirs * args.files;
    if !src.join(format!("d{:04}", args.dirs - 1)).is_dir() {
        let t = Instant::now();
        for d in 0..args.dirs {
            let dir = src.join(format!("d{d:04}"));
            std::fs::create_dir_all(&dir)?;
            for f in 0..args.files {
                std::fs::write(dir.join(format!("f{f:05}.txt")), format!("{d} {f}\n"))?;
            }
        }
        println!("made {total} files in {}", ms(t.elapsed()));
    }

    // A receiver in this process, and the sender sending once.
    let _ = std::fs::remove_dir_all(data.join("store"));
    let _ = std::fs::remove_dir_all(data.join("sstate"));
    let identity = Identity::load_or_create(&data.join("rstate"))?;
    let store = Store::open(&data.join("store"))?;
    let secret = "browse timing";
    let receiver = Receiver::bind_with(
        identity,
        store,
        "127.0.0.1:0".parse()?,
        8,
        Admission {
            allow: vec![],
            pairing_secret: Some(secret.as_bytes().to_vec()),
        },
    )?;
    let addr = receiver.local_addr()?;
    let token = CancellationToken::new();
    let task = tokio::spawn(receiver.serve(token.clone()));
    std::fs::write(data.join("secret"), secret)?;
    let config = SenderConfig {
        host: Some(addr.ip().to_string()),
        port: Some(addr.port()),
        source: Some(src.clone()),
        name: Some("bench".into()),
        folder: Some("big".into()),
        state: Some(data.join("sstate")),
        pairing_secret_file: Some(data.join("secret")),
        once: Some(true),
        ..Default::default()
    };
    let t = Instant::now();
    let summary = ferry_agent::sender::run(
        config.settings()?,
        CancellationToken::new(),
        SenderStatus::new(),
        |_| {},
    )
    .await?;
    println!(
        "sent {} files in {} (run {:?})",
        summary.files_sent,
        ms(t.elapsed()),
        summary.run_id
    );
    let run = summary.run_id.context("no run id")?;

    // Client::list over QUIC.
    let remote = Remote {
        host: addr.ip().to_string(),
        port: addr.port(),
        receiver_id: None,
        state: data.join("sstate"),
        name: Name::new("bench")?,
        folder: Name::new("big")?,
    };
    let t = Instant::now();
    let mut client = Client::connect(&remote).await?;
    let connect = t.elapsed();
    let t = Instant::now();
    let root = client.list(At::Run(run), None).await?;
    let first = t.elapsed();
    println!(
        "QUIC: connect {}, first listing (root, {} entries, as of run {run}) {}",
        ms(connect),
        root.len(),
        ms(first)
    );
    let step = (args.dirs / 20).max(1);
    let picks: Vec<RelPath> = (0..args.dirs)
        .step_by(step)
        .map(|d| RelPath::from_bytes(format!("d{d:04}")))
        .collect::<Result<_, _>>()?;
    for at in [At::Run(run), At::Latest] {
        let mut times = Vec::new();
        let mut n = 0;
        for dir in &picks {
            let t = Instant::now();
            n = client.list(at, Some(dir)).await?.len();
            times.push(t.elapsed());
        }
        println!(
            "QUIC: each further directory ({n} entries, {} directories, {at:?}): {}",
            picks.len(),
            spread(&mut times)
        );
    }
    let t = Instant::now();
    let root = client.list(At::Latest, None).await?;
    println!(
        "QUIC: root again ({} entries, latest) {}",
        root.len(),
        ms(t.elapsed())
    );
    client.close().await;

    // The same store, read locally (`--store`) beside the running receiver.
    let t = Instant::now();
    let mut local = Client::open_store(&LocalStore {
        root: data.join("store"),
        name: Name::new("bench")?,
        folder: Some(Name::new("big")?),
    })
    .await?;
    let open = t.elapsed();
    let t = Instant::now();
    let root = local.list(At::Run(run), None).await?;
    println!(
        "local store: open {}, first listing (root, {} entries) {}",
        ms(open),
        root.len(),
        ms(t.elapsed())
    );
    let mut times = Vec::new();
    for dir in &picks {
        let t = Instant::now();
        local.list(At::Run(run), Some(dir)).await?;
        times.push(t.elapsed());
    }
    println!(
        "local store: each further directory: {}",
        spread(&mut times)
    );
    local.close().await;

    // The `ferry ls` process, start to exit.
    let bin = args
        .ferry_bin
        .clone()
        .unwrap_or_else(|| profile.join("ferry"));
    if bin.is_file() {
        let last = format!("d{:04}", args.dirs - 1);
        for dir in [None, Some("d0000"), Some(last.as_str())] {
            let mut cmd = std::process::Command::new(&bin);
            cmd.args([
                "ls",
                "--host",
                &addr.ip().to_string(),
                "--port",
                &addr.port().to_string(),
            ])
            .args([
                "--name",
                "bench",
                "--folder",
                "big",
                "--run",
                &run.to_string(),
            ])
            .arg("--state")
            .arg(data.join("sstate"))
            .args(dir);
            let t = Instant::now();
            let out = cmd.output()?;
            let took = t.elapsed();
            anyhow::ensure!(
                out.status.success(),
                "ferry ls: {}",
                String::from_utf8_lossy(&out.stderr)
            );
            println!(
                "`ferry ls --run {run} {}`: {} lines in {} (process start to exit)",
                dir.unwrap_or(""),
                out.stdout.iter().filter(|&&b| b == b'\n').count(),
                ms(took)
            );
        }
    } else {
        println!("no ferry binary at {}: `ferry ls` not timed", bin.display());
    }
    token.cancel();
    task.await?;
    Ok(())
}
