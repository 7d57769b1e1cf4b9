//! `cargo run -p ferry-gui --example backups_timing -- [DIRS FILES [DATA]]`
//!
//! How fast the launcher's Backups view browses a large folder: makes a
//! folder of DIRS × FILES tiny files (default 400 × 500 = 200,000) in
//! `DATA/src` (default `<target dir>/backups-data`, kept between runs),
//! sends it once to a receiver in this process on 127.0.0.1, then drives
//! the view's state as the window would: "Load backups" until the newest
//! run's root is shown (session opened, runs and root listed), then each of
//! 20 directories expanded until its entries are shown. Everything runs off
//! the calling thread, which only polls, as the UI thread does. It prints
//! the figures and asserts no time.

use std::path::PathBuf;
use std::time::{Duration, Instant};

use anyhow::Context;
use ferry_agent::config::SenderConfig;
use ferry_agent::identity::Identity;
use ferry_agent::receiver::{Admission, Receiver};
use ferry_agent::status::SenderStatus;
use ferry_agent::store::Store;
use ferry_gui::backups::{Backups, Loading};
use ferry_gui::form::SenderForm;
use ferry_proto::RelPath;
use tokio_util::sync::CancellationToken;

fn ms(d: Duration) -> String {
    format!("{:.1} ms", d.as_secs_f64() * 1000.0)
}

/// Polls `view` as the UI thread does (every millisecond here) until
/// `done`; the time it took.
fn until(view: &mut Backups, mut done: impl FnMut(&Backups) -> bool) -> anyhow::Result<Duration> {
    let t = Instant::now();
    loop {
        view.poll();
        if done(view) {
            return Ok(t.elapsed());
        }
        if let Some(e) = &view.error {
            anyhow::bail!("the view failed: {e}");
        }
        anyhow::ensure!(t.elapsed() < Duration::from_secs(120), "no answer in 2 min");
        std::thread::sleep(Duration::from_millis(1));
    }
}

fn ready(view: &Backups, key: &str) -> bool {
    matches!(view.dirs.get(key), Some(Loading::Ready(_)))
}

fn main() -> anyhow::Result<()> {
    let args: Vec<String> = std::env::args().skip(1).collect();
    let dirs: usize = args.first().map_or(Ok(400), |a| a.parse())?;
    let files: usize = args.get(1).map_or(Ok(500), |a| a.parse())?;
    let exe = std::env::current_exe()?;
    // <target>/<profile>/examples/backups_timing
    let target = exe
        .parent()
        .and_then(|p| p.parent())
        .and_then(|p| p.parent())
        .context("where is the target directory?")?
        .to_path_buf();
    let data = args
        .get(2)
        .map(PathBuf::from)
        .unwrap_or_else(|| target.join("backups-data"));
    let src = data.join("src");
    if !src.join(format!("d{:04}", dirs - 1)).is_dir() {
        let t = Instant::now();
        for d in 0..dirs {
            let dir = src.join(format!("d{d:04}"));
            std::fs::create_dir_all(&dir)?;
            for f in 0..files {
                std::fs::write(dir.join(format!("f{f:05}.txt")), format!("{d} {f}\n"))?;
            }
        }
        println!("made {} files in {}", dirs * files, ms(t.elapsed()));
    }
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()?;

    // A receiver on this runtime, and the sender sending once.
    let _ = std::fs::remove_dir_all(data.join("store"));
    let _ = std::fs::remove_dir_all(data.join("sstate"));
    let identity = Identity::load_or_create(&data.join("rstate"))?;
    let store = Store::open(&data.join("store"))?;
    let secret = "backups timing";
    let receiver = rt.block_on(async {
        Receiver::bind_with(
            identity,
            store,
            "127.0.0.1:0".parse()?,
            8,
            Admission {
                allow: vec![],
                pairing_secret: Some(secret.as_bytes().to_vec()),
            },
        )
        .map_err(anyhow::Error::from)
    })?;
    let addr = receiver.local_addr()?;
    let token = CancellationToken::new();
    let task = rt.spawn(receiver.serve(token.clone()));
    std::fs::write(data.join("secret"), secret)?;
    let config = SenderConfig {
        host: Some(addr.ip().to_string()),
        port: Some(addr.port()),
        source: Some(src.clone()),
        name: Some("bench".into()),
        state: Some(data.join("sstate")),
        pairing_secret_file: Some(data.join("secret")),
        once: Some(true),
        ..Default::default()
    };
    let t = Instant::now();
    let summary = rt.block_on(ferry_agent::sender::run(
        config.settings()?,
        CancellationToken::new(),
        SenderStatus::new(),
        |_| {},
    ))?;
    println!(
        "sent {} files in {} (run {:?})",
        summary.files_sent,
        ms(t.elapsed()),
        summary.run_id
    );

    // The view, as the launcher's sender form would name this folder.
    let form = SenderForm {
        host: addr.ip().to_string(),
        port: addr.port().to_string(),
        source: src.display().to_string(),
        name: "bench".into(),
        state: data.join("sstate").display().to_string(),
        ..SenderForm::default()
    };
    let mut view = Backups::new(rt.handle().clone());
    view.load(&form);
    let first = until(&mut view, |v| ready(v, ""))?;
    let root = match view.dirs.get("") {
        Some(Loading::Ready(rows)) => rows.clone(),
        _ => Vec::new(),
    };
    println!(
        "Load backups -> the newest run's root shown ({} entries; connect, runs, root): {}",
        root.len(),
        ms(first)
    );
    let mut times = Vec::new();
    for row in root.iter().step_by((root.len() / 20).max(1)).take(20) {
        let key = row.path.to_string();
        let path = RelPath::from_bytes(key.as_bytes())?;
        view.toggle_dir(&path);
        times.push(until(&mut view, |v| ready(v, &key))?);
    }
    times.sort();
    if let (Some(a), Some(m), Some(z)) = (times.first(), times.get(times.len() / 2), times.last()) {
        println!(
            "expand a directory -> its {} entries shown ({} directories): min {} / median {} / max {}",
            files,
            times.len(),
            ms(*a),
            ms(*m),
            ms(*z)
        );
    }
    token.cancel();
    rt.block_on(task)?;
    Ok(())
}
