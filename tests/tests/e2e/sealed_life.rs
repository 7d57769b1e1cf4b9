//! Protected folders through their life on a receiver, as a user runs them
//! with the real `ferry` binary over real QUIC on 127.0.0.1: the receiver's
//! retention and quota apply to an encrypted or write-only folder as to a
//! plain one and never cost what is kept; a byte inserted into a large file,
//! a MiB overwritten in it or a new name costs on the wire about what it
//! costs in a plain folder; a transfer cut by `kill -9` resumes. Every state
//! restores exactly with the key.

use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::path::PathBuf;
use std::time::Duration;

use anyhow::Context;
use ferry_tests::tree::{self, Node};

use crate::crash::{listening, Proc};
use crate::resume::wait_for_staging;
use crate::sealed::{assert_nothing_readable, assert_ok, stderr, write_tree, Cli, SECRET};
use crate::sync::pseudo_random;
use crate::util::{free_udp_port, poll_until, TestReceiver};

const KIB: u64 = 1024;
const MIB: usize = 1024 * 1024;

/// Sending into an encrypted folder (reads only the key's public half).
const ENCRYPTED: [&str; 4] = ["--protect", "encrypted", "--key-file", "folder.key"];
/// Sending into a write-only folder: the sender holds only the public half.
const WRITE_ONLY: [&str; 4] = ["--protect", "write-only", "--key-file", "folder.key.pub"];
/// Reading a protected folder: the key file and its passphrase.
const KEY: [&str; 4] = [
    "--key-file",
    "folder.key",
    "--passphrase-file",
    "passphrase",
];

type Snapshot = BTreeMap<Vec<u8>, Node>;

/// A scratch directory with a folder key, a `ferry receive` process of its
/// own (started with the flags a test needs) and the CLI that talks to it.
struct Life {
    dir: tempfile::TempDir,
    port: u16,
    cli: Cli,
}

impl Life {
    async fn new() -> anyhow::Result<Life> {
        let dir = tempfile::tempdir()?;
        let port = free_udp_port()?;
        let cli = Cli::new(dir.path(), SocketAddr::from(([127, 0, 0, 1], port)))?;
        cli.keys("folder.key").await?;
        Ok(Life { dir, port, cli })
    }

    fn store(&self) -> PathBuf {
        self.dir.path().join("store")
    }

    /// `ferry receive` with `extra` flags, once it listens.
    fn receiver(&self, what: &str, extra: &[&str]) -> anyhow::Result<Proc> {
        let d = self.dir.path();
        let store = self.store().display().to_string();
        let state = d.join("rstate").display().to_string();
        let secret = d.join("pairing").display().to_string();
        let port = self.port.to_string();
        let mut args = vec![
            "receive",
            "--host",
            "127.0.0.1",
            "--port",
            &port,
            "--store",
            &store,
            "--state",
            &state,
            "--pairing-secret-file",
            &secret,
        ];
        args.extend(extra);
        let args: Vec<&std::ffi::OsStr> = args.iter().map(std::ffi::OsStr::new).collect();
        tokio::task::block_in_place(|| listening(Proc::spawn(what, d, &args)?))
    }
}

/// `ferry send --once --json` into `folder`, which must succeed; its summary.
async fn send_json(cli: &Cli, folder: &str, flags: &[&str]) -> anyhow::Result<serde_json::Value> {
    let mut flags = flags.to_vec();
    flags.push("--json");
    let out = cli.send(folder, &flags).await?;
    assert_ok(&out, &format!("a run into {folder}"));
    Ok(serde_json::from_slice(&out.stdout)?)
}

/// The receiver's run number in a sender's summary, as `--run` takes it.
fn run_id(summary: &serde_json::Value) -> anyhow::Result<String> {
    Ok(summary["run_id"]
        .as_u64()
        .with_context(|| format!("no run id in {summary}"))?
        .to_string())
}

fn wire(summary: &serde_json::Value) -> anyhow::Result<u64> {
    summary["bytes_on_wire"]
        .as_u64()
        .with_context(|| format!("no bytes_on_wire in {summary}"))
}

/// `ferry restore` of `folder` into `to` with `flags`, which must succeed;
/// what it wrote.
async fn restored(cli: &Cli, folder: &str, to: &str, flags: &[&str]) -> anyhow::Result<Snapshot> {
    assert_ok(
        &cli.restore(folder, to, flags).await?,
        &format!("restore of {folder} {flags:?}"),
    );
    tree::snapshot(&cli.path(to))
}

/// How many versions (the current one included) `ferry versions` lists
/// for `path` of `folder`.
async fn versions(cli: &Cli, folder: &str, path: &str, flags: &[&str]) -> anyhow::Result<usize> {
    let mut args: Vec<String> = vec!["versions".into(), path.into(), "--json".into()];
    args.extend(cli.remote(folder));
    args.extend(flags.iter().map(|s| s.to_string()));
    let args: Vec<&str> = args.iter().map(String::as_str).collect();
    Ok(cli.ok(&args).await?.lines().count())
}

/// The file of [`write_tree`] that the retention test edits in each run.
const EDITED: &str = "letters/to-grandmother-october.txt";
/// The 3 MiB file of [`write_tree`].
const PELICAN: &str = "photos/holiday-kilimanjaro/img-0001-pelican.raw";

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn retention_prunes_an_encrypted_folder_and_what_is_kept_restores() -> anyhow::Result<()> {
    let life = Life::new().await?;
    let cli = &life.cli;
    let mut receiver = life.receiver("receiver", &[])?;
    write_tree(&cli.src(), 11)?;

    // Three runs, each with a new content of one file, into an encrypted
    // folder and, for comparison, a plain one.
    let (mut sealed_runs, mut plain_runs, mut states) = (vec![], vec![], vec![]);
    for round in 0..3u64 {
        if round > 0 {
            tree::write(&cli.src(), EDITED, pseudo_random(30_000, 900 + round))?;
        }
        states.push(tree::snapshot(&cli.src())?);
        sealed_runs.push(run_id(&send_json(cli, "docs", &ENCRYPTED).await?)?);
        plain_runs.push(run_id(&send_json(cli, "plain", &[]).await?)?);
    }
    assert_eq!(versions(cli, "docs", EDITED, &KEY).await?, 3);
    assert_eq!(versions(cli, "plain", EDITED, &[]).await?, 3);

    // The admin restarts the receiver keeping one old version per file: it
    // prunes at start.
    receiver.interrupt()?;
    tokio::task::block_in_place(|| receiver.exit_status(Duration::from_secs(20)))?;
    let receiver = life.receiver("pruning receiver", &["--keep-versions", "1"])?;
    let pruned = tokio::task::block_in_place(|| {
        poll_until(Duration::from_secs(30), || {
            receiver
                .stderr()
                .contains("pruned old versions")
                .then_some(())
        })
    });
    assert!(pruned.is_some(), "nothing pruned:\n{}", receiver.stderr());
    assert_eq!(versions(cli, "docs", EDITED, &KEY).await?, 2);
    assert_eq!(versions(cli, "plain", EDITED, &[]).await?, 2);

    // What is kept restores exactly: the latest state and the run before.
    assert_eq!(restored(cli, "docs", "latest", &KEY).await?, states[2]);
    let mut at_second = KEY.to_vec();
    at_second.extend(["--run", &sealed_runs[1]]);
    assert_eq!(
        restored(cli, "docs", "second", &at_second).await?,
        states[1]
    );

    // As of the first run, the pruned version is missing from both folders
    // alike (a restore leaves out what retention removed), and the rest of
    // that state is there, exactly.
    let mut at_first = KEY.to_vec();
    at_first.extend(["--run", &sealed_runs[0]]);
    let sealed_out = cli.restore("docs", "first-sealed", &at_first).await?;
    let plain_out = cli
        .restore("plain", "first-plain", &["--run", &plain_runs[0]])
        .await?;
    assert_eq!(
        sealed_out.status.code(),
        plain_out.status.code(),
        "encrypted:\n{}\nplain:\n{}",
        stderr(&sealed_out),
        stderr(&plain_out)
    );
    let first_sealed = tree::snapshot(&cli.path("first-sealed"))?;
    assert_eq!(first_sealed, tree::snapshot(&cli.path("first-plain"))?);
    let mut expected = states[0].clone();
    expected.remove(EDITED.as_bytes());
    assert_eq!(first_sealed, expected, "{}", stderr(&sealed_out));

    // The receiver's own check finds every object intact, without a key.
    let report = ferry_agent::store::verify(&life.store())?;
    assert!(report.findings.is_empty(), "{:?}", report.findings);
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_quota_too_small_fails_a_write_only_runs_files_and_loses_nothing_stored(
) -> anyhow::Result<()> {
    let life = Life::new().await?;
    let cli = &life.cli;
    // The first run (3.5 MiB, padded a little) fits; the next does not.
    let _receiver = life.receiver("receiver", &["--quota", "6MiB"])?;
    write_tree(&cli.src(), 12)?;
    let first_run = run_id(&send_json(cli, "vault", &WRITE_ONLY).await?)?;
    let first = tree::snapshot(&cli.src())?;

    // A new 3 MiB content of a stored file (its old version stays: 3 MiB
    // more) and a new 4 MiB file do not fit, whatever their order; a small
    // new file does.
    tree::write(&cli.src(), PELICAN, pseudo_random(3 * MIB + 17, 1_200))?;
    let heron = "photos/holiday-kilimanjaro/img-0003-heron.raw";
    tree::write(&cli.src(), heron, pseudo_random(4 * MIB, 1_201))?;
    let okapi = "new-arrival-okapi.txt";
    tree::write(&cli.src(), okapi, pseudo_random(5_000, 1_202))?;
    let mut flags = WRITE_ONLY.to_vec();
    flags.push("--json");
    let out = cli.send("vault", &flags).await?;
    assert_eq!(out.status.code(), Some(1), "{}", stderr(&out));
    let summary: serde_json::Value = serde_json::from_slice(&out.stdout)?;
    let problems = summary["problems"]
        .as_array()
        .with_context(|| format!("no problems in {summary}"))?;
    let mut refused: Vec<&str> = problems.iter().filter_map(|p| p["path"].as_str()).collect();
    refused.sort();
    assert_eq!(refused, [PELICAN, heron], "{summary}");
    for p in problems {
        let message = p["message"].as_str().unwrap_or_default();
        assert!(
            message.contains("sender laptop is over its quota of 6.0 MiB on this receiver")
                && message.contains("ask the admin to raise --quota or prune versions"),
            "{p}"
        );
    }

    // Nothing stored was lost: the latest state is the first run's and
    // the small new file, the first run restores as it was.
    let mut latest = first.clone();
    let okapi_node = tree::snapshot(&cli.src())?
        .remove(okapi.as_bytes())
        .context("the okapi vanished from the source")?;
    latest.insert(okapi.as_bytes().to_vec(), okapi_node);
    assert_eq!(restored(cli, "vault", "latest", &KEY).await?, latest);
    let mut at_first = KEY.to_vec();
    at_first.extend(["--run", &first_run]);
    assert_eq!(restored(cli, "vault", "first", &at_first).await?, first);
    Ok(())
}

/// The large file of the delta and resume tests.
const LARGE: usize = 32 * MIB;
/// A change to an encrypted folder may cost on the wire at most this many
/// times what it costs in a plain folder (the target)…
const OVER_PLAIN: f64 = 1.2;
/// … plus this much (the sealed headers of a run).
const OVER_PLAIN_EXTRA: u64 = 64 * KIB;

/// A receiver in this process with `big.bin` (32 MiB) and a small file
/// sent once into a plain folder and into an encrypted one.
struct Delta {
    _dir: tempfile::TempDir,
    receiver: TestReceiver,
    cli: Cli,
    first_run: String,
    first: Snapshot,
}

impl Delta {
    async fn new() -> anyhow::Result<Delta> {
        let dir = tempfile::tempdir()?;
        let receiver = TestReceiver::with_secret(dir.path(), SECRET).await?;
        let cli = Cli::new(dir.path(), receiver.addr)?;
        cli.keys("folder.key").await?;
        tree::write(&cli.src(), "big.bin", pseudo_random(LARGE, 7))?;
        tree::write(&cli.src(), "note.txt", "a small file")?;
        send_json(&cli, "plain", &[]).await?;
        let first_run = run_id(&send_json(&cli, "docs", &ENCRYPTED).await?)?;
        let first = tree::snapshot(&cli.src())?;
        Ok(Delta {
            _dir: dir,
            receiver,
            cli,
            first_run,
            first,
        })
    }

    fn big(&self) -> PathBuf {
        self.cli.src().join("big.bin")
    }

    /// Sends the changed source into the plain folder, then into the
    /// encrypted one; both versions of the encrypted folder must restore
    /// exactly, and the change must cost it about what it costs the plain
    /// folder.
    async fn resync(self, what: &str) -> anyhow::Result<()> {
        let plain = wire(&send_json(&self.cli, "plain", &[]).await?)?;
        tree::assert_same(&self.cli.src(), &self.receiver.mirror("laptop", "plain"))?;
        // The plain folder sends the change only: a baseline worth comparing.
        assert!(plain < LARGE as u64 / 4, "{what}: {plain} bytes, plain");
        let sealed = wire(&send_json(&self.cli, "docs", &ENCRYPTED).await?)?;

        let latest = restored(&self.cli, "docs", "latest", &KEY).await?;
        assert_eq!(latest, tree::snapshot(&self.cli.src())?, "{what}: latest");
        let mut at_first = KEY.to_vec();
        at_first.extend(["--run", &self.first_run]);
        let old = restored(&self.cli, "docs", "first", &at_first).await?;
        assert_eq!(old, self.first, "{what}: the first version");

        let most = (plain as f64 * OVER_PLAIN) as u64 + OVER_PLAIN_EXTRA;
        assert!(
            sealed <= most,
            "{what}: {sealed} bytes on the wire into the encrypted folder, \
             {plain} into the plain one (at most {most})"
        );
        self.receiver.stop().await
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn one_byte_inserted_at_the_start_of_an_encrypted_file_costs_what_it_costs_plain(
) -> anyhow::Result<()> {
    let d = Delta::new().await?;
    let mut data = vec![0x42];
    data.extend_from_slice(&std::fs::read(d.big())?);
    std::fs::write(d.big(), &data)?;
    d.resync("1 byte inserted at the start").await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn one_mib_overwritten_in_an_encrypted_file_costs_what_it_costs_plain() -> anyhow::Result<()>
{
    let d = Delta::new().await?;
    let mut data = std::fs::read(d.big())?;
    let mid = data.len() / 2;
    data[mid..mid + MIB].copy_from_slice(&pseudo_random(MIB, 99));
    std::fs::write(d.big(), &data)?;
    d.resync("1 MiB overwritten in the middle").await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_renamed_encrypted_file_costs_what_it_costs_plain() -> anyhow::Result<()> {
    let d = Delta::new().await?;
    std::fs::create_dir(d.cli.src().join("moved"))?;
    std::fs::rename(d.big(), d.cli.src().join("moved/renamed.bin"))?;
    d.resync("renamed").await
}

/// Staging size at which the resume test cuts the transfer.
const CUT_AT: u64 = 20 * MIB as u64;
/// What the receiver keeps of a cut transfer at least: its progress is made
/// durable every 16 MiB, so a cut past 16 MiB keeps that much (as for a
/// plain folder, `resume.rs`).
const KEPT_AT_LEAST: u64 = 16 * MIB as u64;
/// What a resend may cost beyond the bytes the receiver did not keep: the
/// padding of the sealed pieces and the protocol's framing.
const RESEND_SLACK: u64 = 2 * MIB as u64;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_encrypted_transfer_cut_by_killing_the_sender_resumes_and_restores_exactly(
) -> anyhow::Result<()> {
    let life = Life::new().await?;
    let cli = &life.cli;
    let mut receiver = life.receiver("receiver", &[])?;
    let mut contents = write_tree(&cli.src(), 13)?;
    send_json(cli, "docs", &ENCRYPTED).await?;
    let large = pseudo_random(LARGE, 21);
    tree::write(&cli.src(), "large.bin", &large)?;

    // A slow sender, killed once the receiver's staging file has grown.
    let key = cli.path("folder.key").display().to_string();
    let args = cli.send_args(
        "docs",
        &[
            "--protect",
            "encrypted",
            "--key-file",
            &key,
            "--limit-rate",
            "10MB/s",
        ],
    );
    let args: Vec<&std::ffi::OsStr> = args.iter().map(std::ffi::OsStr::new).collect();
    let mut sender = Proc::spawn("slow sender", life.dir.path(), &args)?;
    let staging = life.store().join(".ferry/staging");
    tokio::task::block_in_place(|| -> anyhow::Result<()> {
        wait_for_staging(&staging, CUT_AT)?;
        sender.kill9()
    })?;

    let resent = wire(&send_json(cli, "docs", &ENCRYPTED).await?)?;
    assert_eq!(
        restored(cli, "docs", "restored", &KEY).await?,
        tree::snapshot(&cli.src())?
    );
    // Nothing of the store is readable: the first run's files, and windows
    // of the large one at its start, around the cut and at its end.
    let cut = CUT_AT as usize;
    for at in [0, cut - 32 * 1024, LARGE - 64 * 1024] {
        contents.push(large[at..at + 64 * 1024].to_vec());
    }
    assert_nothing_readable(&life.store(), &contents)?;
    assert_eq!(
        tokio::task::block_in_place(|| receiver.wait_for(Duration::ZERO))?,
        None,
        "the receiver died:\n{}",
        receiver.stderr()
    );
    receiver.interrupt()?;
    tokio::task::block_in_place(|| receiver.exit_status(Duration::from_secs(20)))?;
    // Nothing is left to resume.
    assert_eq!(std::fs::read_dir(&staging)?.count(), 0);

    let most = LARGE as u64 - KEPT_AT_LEAST + RESEND_SLACK;
    assert!(
        resent <= most,
        "the resend took {resent} bytes on the wire for a {LARGE}-byte file of which \
         the receiver kept at least {KEPT_AT_LEAST} (at most {most})"
    );
    Ok(())
}

/// An encrypted folder on a receiver that keeps its bytes in a bucket (a
/// real `s3s-fs`): the bucket holds nothing readable (packs, catalog
/// copies), and the key restores the folder exactly, also after a change.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_encrypted_folder_on_a_bucket_store_restores_with_its_key() -> anyhow::Result<()> {
    use ferry_tests::s3::{S3Server, S3Target};
    let server = S3Server::start()?;
    let life = Life::new().await?;
    let cli = &life.cli;
    let d = life.dir.path();
    let config = d.join("receiver.toml");
    std::fs::write(
        &config,
        format!(
            "store = \"s3://{}/vaults\"\ns3-endpoint = \"{}\"\ns3-access-key-id = \"{}\"\ns3-secret-access-key = \"{}\"\n",
            server.bucket(),
            server.endpoint(),
            server.access_key(),
            server.secret_key()
        ),
    )?;
    let (state, secret, port) = (
        d.join("rstate").display().to_string(),
        d.join("pairing").display().to_string(),
        life.port.to_string(),
    );
    let args = [
        "receive",
        "--config",
        config.to_str().unwrap_or_default(),
        "--host",
        "127.0.0.1",
        "--port",
        &port,
        "--state",
        &state,
        "--pairing-secret-file",
        &secret,
    ];
    let args: Vec<&std::ffi::OsStr> = args.iter().map(std::ffi::OsStr::new).collect();
    let _receiver =
        tokio::task::block_in_place(|| listening(Proc::spawn("bucket receiver", d, &args)?))?;
    let contents = write_tree(&cli.src(), 4)?;
    send_json(cli, "vault", &ENCRYPTED).await?;
    assert_eq!(
        restored(cli, "vault", "back", &KEY).await?,
        tree::snapshot(&cli.src())?
    );
    tree::write(&cli.src(), EDITED, "a new letter, sealed in the bucket")?;
    send_json(cli, "vault", &ENCRYPTED).await?;
    assert_eq!(
        restored(cli, "vault", "back-again", &KEY).await?,
        tree::snapshot(&cli.src())?
    );
    assert_nothing_readable(&server.root(), &contents)?;
    Ok(())
}
