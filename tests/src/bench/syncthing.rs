//! Syncthing (Debian's package) as a peer: two instances on 127.0.0.1 with
//! global and local discovery, relays, NAT traversal, usage and crash
//! reporting and upgrades off, introduced to each other by device id; one
//! folder, send-only on the first (the data set itself) and receive-only on
//! the second. Each measured run starts both instances fresh (each under
//! `/usr/bin/time`) with the folder paused on the sender, waits until they
//! are connected, drops the page cache, then, timed: unpauses the folder and
//! requests a scan over the REST API, and polls the receiver until it reports
//! the folder idle, nothing needed, the whole set in its global state and
//! its completion at 100 %. The receiving folder is then compared with the
//! source.
//!
//! Syncthing's folder marker is set to `.` (the folder root itself), so
//! nothing is written into the data set.

use std::ffi::OsStr;
use std::io::{Read, Write};
use std::net::TcpStream;
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use anyhow::{bail, Context};

use super::data::DataSet;
use super::process::{self, drop_caches, Server};
use super::report::Sample;
use super::tools::remove_tree;

const FOLDER: &str = "bench";
const API_KEY: &str = "ferry-bench-syncthing-api-key";
const READY: Duration = Duration::from_secs(60);
const POLL: Duration = Duration::from_millis(25);
/// Longest a sync may take (Syncthing needed ~18 s for 20,000 files here).
const SYNC_TIMEOUT: Duration = Duration::from_secs(1200);

/// Parses `syncthing generate`'s "Device ID: XXXXXXX-..." line.
pub fn parse_device_id(output: &str) -> anyhow::Result<String> {
    output
        .lines()
        .find_map(|l| l.split("Device ID:").nth(1))
        .map(|id| id.trim().to_string())
        .filter(|id| !id.is_empty() && id.chars().all(|c| c.is_ascii_alphanumeric() || c == '-'))
        .with_context(|| format!("no device id in syncthing generate's output: {output:?}"))
}

/// Whether `/rest/db/status` and `/rest/db/completion` (the receiver's own,
/// for the folder) say the whole set of `files` files has arrived: idle,
/// nothing needed, the global state holds the set, everything in it is in
/// sync here, completion 100 %. (Syncthing's byte counts include 128 bytes
/// per directory, so they are compared with each other, not with the set.)
pub fn in_sync(status: &serde_json::Value, completion: &serde_json::Value, files: u64) -> bool {
    status["state"] == "idle"
        && status["needTotalItems"].as_u64() == Some(0)
        && status["globalFiles"].as_u64() == Some(files)
        && status["inSyncFiles"].as_u64() == Some(files)
        && status["globalBytes"].as_u64().is_some()
        && status["inSyncBytes"] == status["globalBytes"]
        && completion["completion"].as_f64() == Some(100.0)
        && completion["needBytes"].as_u64() == Some(0)
}

/// Whether `/rest/system/connections` shows `device` connected.
pub fn connected(connections: &serde_json::Value, device: &str) -> bool {
    connections["connections"][device]["connected"] == true
}

/// Bytes in and out over all connections, from `/rest/system/connections`.
pub fn bytes_total(connections: &serde_json::Value) -> Option<u64> {
    let total = &connections["total"];
    Some(total["inBytesTotal"].as_u64()? + total["outBytesTotal"].as_u64()?)
}

/// Splits an HTTP response into its status code and body.
pub fn parse_http_response(response: &str) -> anyhow::Result<(u16, &str)> {
    let (head, body) = response
        .split_once("\r\n\r\n")
        .with_context(|| format!("no end of headers in {response:?}"))?;
    let code = head
        .lines()
        .next()
        .and_then(|l| l.split_whitespace().nth(1))
        .and_then(|c| c.parse().ok())
        .with_context(|| format!("no status line in {head:?}"))?;
    Ok((code, body))
}

/// One REST call over HTTP/1.0 (so the reply is neither chunked nor kept
/// alive): its status code and body.
fn http(port: u16, method: &str, path: &str, body: &str) -> anyhow::Result<(u16, String)> {
    let mut stream = TcpStream::connect(("127.0.0.1", port))
        .with_context(|| format!("connecting to Syncthing's API on port {port}"))?;
    stream.set_read_timeout(Some(Duration::from_secs(600)))?;
    write!(
        stream,
        "{method} {path} HTTP/1.0\r\nHost: 127.0.0.1\r\nX-API-Key: {API_KEY}\r\n\
         Content-Type: application/json\r\nContent-Length: {}\r\n\r\n{body}",
        body.len()
    )?;
    let mut response = String::new();
    stream.read_to_string(&mut response)?;
    let (code, body) = parse_http_response(&response)?;
    Ok((code, body.to_string()))
}

fn get_json(port: u16, path: &str) -> anyhow::Result<serde_json::Value> {
    let (code, body) = http(port, "GET", path, "")?;
    if code != 200 {
        bail!("GET {path}: HTTP {code}: {}", body.trim());
    }
    serde_json::from_str(&body).with_context(|| format!("GET {path}: not JSON: {body:?}"))
}

/// One instance's home, id and ports for a run.
struct Instance {
    home: PathBuf,
    id: String,
}

/// The two instances.
pub struct SyncthingPair {
    sender: Instance,
    receiver: Instance,
    /// The receiving folder.
    dest: PathBuf,
}

impl SyncthingPair {
    /// Generates both instances' keys under `dir`.
    pub fn setup(dir: &Path) -> anyhow::Result<SyncthingPair> {
        remove_tree(dir)?;
        std::fs::create_dir_all(dir)?;
        let generate = |name: &str| -> anyhow::Result<Instance> {
            let home = dir.join(name);
            let out = std::process::Command::new("syncthing")
                .arg("generate")
                .arg(format!("--home={}", home.display()))
                .args(["--no-default-folder", "--skip-port-probing"])
                .stdin(std::process::Stdio::null())
                .output()
                .context("running syncthing generate")?;
            if !out.status.success() {
                bail!(
                    "syncthing generate failed ({}): {}",
                    out.status,
                    String::from_utf8_lossy(&out.stderr).trim()
                );
            }
            let text = [out.stdout, out.stderr].concat();
            Ok(Instance {
                home,
                id: parse_device_id(&String::from_utf8_lossy(&text))?,
            })
        };
        Ok(SyncthingPair {
            sender: generate("sender")?,
            receiver: generate("receiver")?,
            dest: dir.join("dest"),
        })
    }

    /// Forgets everything synced: both databases and the receiving folder.
    pub fn reset(&self) -> anyhow::Result<()> {
        for instance in [&self.sender, &self.receiver] {
            for entry in std::fs::read_dir(&instance.home)? {
                let entry = entry?;
                if entry.file_type()?.is_dir() {
                    remove_tree(&entry.path())?;
                }
            }
        }
        remove_tree(&self.dest)?;
        std::fs::create_dir_all(&self.dest)?;
        Ok(())
    }

    /// Removes the receiving folder (its bytes) and the databases.
    pub fn clear(&self) -> anyhow::Result<()> {
        self.reset()?;
        remove_tree(&self.dest)
    }

    /// One measured sync of `set` as it is now (see the module doc), then
    /// the receiving folder compared with the set.
    pub fn run(&self, set: &DataSet, scratch: &Path) -> anyhow::Result<Sample> {
        let [gui_s, gui_r, sync_s, sync_r] = [(); 4].map(|()| process::free_tcp_port());
        let (gui_s, gui_r, sync_s, sync_r) = (gui_s?, gui_r?, sync_s?, sync_r?);
        std::fs::create_dir_all(&self.dest)?;
        let peers = [(&self.sender, sync_s), (&self.receiver, sync_r)];
        std::fs::write(
            self.sender.home.join("config.xml"),
            config(&peers, &set.root, "sendonly", true, gui_s, sync_s),
        )?;
        std::fs::write(
            self.receiver.home.join("config.xml"),
            config(&peers, &self.dest, "receiveonly", false, gui_r, sync_r),
        )?;
        let mut sender = spawn(&self.sender, "sender", scratch)?;
        let mut receiver = spawn(&self.receiver, "receiver", scratch)?;
        sender.wait_ready(READY, |_| process::tcp_listening(gui_s))?;
        receiver.wait_ready(READY, |_| process::tcp_listening(gui_r))?;
        wait_until(READY, "the instances to connect", || {
            Ok(connected(
                &get_json(gui_s, "/rest/system/connections")?,
                &self.receiver.id,
            ))
        })?;
        drop_caches();
        let started = Instant::now();
        let (code, body) = http(
            gui_s,
            "PATCH",
            &format!("/rest/config/folders/{FOLDER}"),
            r#"{"paused":false}"#,
        )?;
        if code != 200 {
            bail!("unpausing the folder: HTTP {code}: {}", body.trim());
        }
        // Refused while the folder is still starting: retry.
        wait_until(READY, "a scan request to be accepted", || {
            Ok(http(gui_s, "POST", &format!("/rest/db/scan?folder={FOLDER}"), "")?.0 == 200)
        })?;
        let files = set.files as u64;
        wait_until(SYNC_TIMEOUT, "the receiver to be in sync", || {
            let status = get_json(gui_r, &format!("/rest/db/status?folder={FOLDER}"))?;
            let completion = get_json(gui_r, &format!("/rest/db/completion?folder={FOLDER}"))?;
            Ok(in_sync(&status, &completion, files))
        })?;
        let wall_s = started.elapsed().as_secs_f64();
        let wire = bytes_total(&get_json(gui_s, "/rest/system/connections")?);
        let client = sender.stop()?;
        let server = receiver.stop()?;
        ferry_tests::tree::assert_same(&set.root, &self.dest)
            .context("Syncthing's receiving folder differs from the source")?;
        Ok(Sample {
            wall_s,
            wire_total: wire,
            client: Some(client),
            server: Some(server),
            ..Sample::default()
        })
    }
}

fn spawn(instance: &Instance, name: &str, scratch: &Path) -> anyhow::Result<Server> {
    let home = format!("--home={}", instance.home.display());
    Server::spawn(
        &format!("syncthing {name}"),
        "syncthing",
        &[
            "serve".as_ref(),
            OsStr::new(&home),
            "--no-browser".as_ref(),
            "--no-restart".as_ref(),
            "--no-upgrade".as_ref(),
        ],
        &scratch.join(format!("syncthing-{name}.time")),
        &scratch.join(format!("syncthing-{name}.log")),
    )
}

/// Polls `done` every [`POLL`] until it holds; fails after `timeout`.
fn wait_until(
    timeout: Duration,
    what: &str,
    mut done: impl FnMut() -> anyhow::Result<bool>,
) -> anyhow::Result<()> {
    let deadline = Instant::now() + timeout;
    loop {
        if done()? {
            return Ok(());
        }
        if Instant::now() >= deadline {
            bail!("Syncthing: gave up waiting for {what} after {timeout:?}");
        }
        std::thread::sleep(POLL);
    }
}

/// One instance's config.xml: both devices (each at its loopback address),
/// the folder of type `kind` at `path`, the API on `gui`, listening on
/// `listen`, everything that reaches beyond the machine off.
fn config(
    peers: &[(&Instance, u16)],
    path: &Path,
    kind: &str,
    paused: bool,
    gui: u16,
    listen: u16,
) -> String {
    let folder_devices: String = peers
        .iter()
        .map(|(p, _)| format!("        <device id=\"{}\"></device>\n", p.id))
        .collect();
    let devices: String = peers
        .iter()
        .map(|(p, port)| {
            format!(
                "    <device id=\"{}\" name=\"{}\" compression=\"metadata\" introducer=\"false\">\n\
                 \x20       <address>tcp://127.0.0.1:{port}</address>\n\
                 \x20       <autoAcceptFolders>false</autoAcceptFolders>\n    </device>\n",
                p.id,
                p.home.file_name().unwrap_or_default().to_string_lossy()
            )
        })
        .collect();
    format!(
        r#"<configuration version="36">
    <folder id="{FOLDER}" label="{FOLDER}" path="{path}" type="{kind}" rescanIntervalS="86400" fsWatcherEnabled="false" ignorePerms="false" autoNormalize="true">
        <filesystemType>basic</filesystemType>
{folder_devices}        <minDiskFree unit="%">0</minDiskFree>
        <markerName>.</markerName>
        <paused>{paused}</paused>
    </folder>
{devices}    <gui enabled="true" tls="false" debugging="false">
        <address>127.0.0.1:{gui}</address>
        <apikey>{API_KEY}</apikey>
    </gui>
    <options>
        <listenAddress>tcp://127.0.0.1:{listen}</listenAddress>
        <globalAnnounceEnabled>false</globalAnnounceEnabled>
        <localAnnounceEnabled>false</localAnnounceEnabled>
        <relaysEnabled>false</relaysEnabled>
        <natEnabled>false</natEnabled>
        <urAccepted>-1</urAccepted>
        <autoUpgradeIntervalH>0</autoUpgradeIntervalH>
        <startBrowser>false</startBrowser>
        <crashReportingEnabled>false</crashReportingEnabled>
        <setLowPriority>false</setLowPriority>
        <minHomeDiskFree unit="%">0</minHomeDiskFree>
    </options>
</configuration>
"#,
        path = xml_escape(&path.to_string_lossy()),
    )
}

fn xml_escape(s: &str) -> String {
    s.replace('&', "&amp;")
        .replace('"', "&quot;")
        .replace('<', "&lt;")
        .replace('>', "&gt;")
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn parses_the_device_id() -> anyhow::Result<()> {
        let out = "Device ID: JDFR26H-KP3VURC-W4JTQGI-YOJJKPA-MYUNKT7-7NJQJNY-BG4YTVW-7IIADAV\n\
                   04:53:53 INFO: We will skip creation of a default folder on first start\n";
        assert_eq!(
            parse_device_id(out)?,
            "JDFR26H-KP3VURC-W4JTQGI-YOJJKPA-MYUNKT7-7NJQJNY-BG4YTVW-7IIADAV"
        );
        assert!(parse_device_id("INFO: nothing here").is_err());
        assert!(parse_device_id("Device ID: \n").is_err());
        Ok(())
    }

    #[test]
    fn in_sync_needs_the_whole_set_idle_and_complete() {
        let expected = 3;
        let status = json!({"state": "idle", "needTotalItems": 0, "globalFiles": 3,
                            "globalBytes": 158, "inSyncFiles": 3, "inSyncBytes": 158,
                            "needBytes": 0});
        let done = json!({"completion": 100, "needBytes": 0, "needItems": 0});
        assert!(in_sync(&status, &done, expected));
        // Before the sender's index arrives the receiver is trivially "in
        // sync" with an empty global state: that must not count.
        let empty = json!({"state": "idle", "needTotalItems": 0, "globalFiles": 0,
                           "globalBytes": 0, "inSyncFiles": 0});
        assert!(!in_sync(&empty, &done, expected));
        let syncing = json!({"state": "syncing", "needTotalItems": 1, "globalFiles": 3,
                             "globalBytes": 158, "inSyncFiles": 2, "inSyncBytes": 100});
        assert!(!in_sync(&syncing, &done, expected));
        let bytes_short = json!({"state": "idle", "needTotalItems": 0, "globalFiles": 3,
                                 "globalBytes": 158, "inSyncFiles": 3, "inSyncBytes": 100});
        assert!(!in_sync(&bytes_short, &done, expected));
        let partial = json!({"completion": 66.6, "needBytes": 10});
        assert!(!in_sync(&status, &partial, expected));
    }

    #[test]
    fn reads_connections_and_http_replies() -> anyhow::Result<()> {
        let c = json!({"connections": {
            "AAA": {"connected": true, "inBytesTotal": 5, "outBytesTotal": 7},
            "BBB": {"connected": false}},
            "total": {"inBytesTotal": 100, "outBytesTotal": 23}});
        assert!(connected(&c, "AAA"));
        assert!(!connected(&c, "BBB"));
        assert!(!connected(&c, "CCC"));
        assert_eq!(bytes_total(&c), Some(123));
        assert_eq!(bytes_total(&json!({})), None);
        let reply = "HTTP/1.0 200 OK\r\nContent-Type: application/json\r\n\r\n{\"a\":1}";
        assert_eq!(parse_http_response(reply)?, (200, "{\"a\":1}"));
        assert_eq!(
            parse_http_response("HTTP/1.0 500 Internal Server Error\r\n\r\nfolder not running")?,
            (500, "folder not running")
        );
        assert!(parse_http_response("garbage").is_err());
        Ok(())
    }

    #[test]
    fn the_config_turns_everything_remote_off() {
        let a = Instance {
            home: PathBuf::from("/h/sender"),
            id: "AAA".into(),
        };
        let b = Instance {
            home: PathBuf::from("/h/receiver"),
            id: "BBB".into(),
        };
        let xml = config(
            &[(&a, 1), (&b, 2)],
            Path::new("/d&x"),
            "sendonly",
            true,
            3,
            1,
        );
        for part in [
            "<globalAnnounceEnabled>false<",
            "<localAnnounceEnabled>false<",
            "<relaysEnabled>false<",
            "<natEnabled>false<",
            "<urAccepted>-1<",
            "<address>tcp://127.0.0.1:2</address>",
            "<listenAddress>tcp://127.0.0.1:1</listenAddress>",
            "<address>127.0.0.1:3</address>",
            "path=\"/d&amp;x\" type=\"sendonly\"",
            "<paused>true</paused>",
            "<device id=\"BBB\"></device>",
        ] {
            assert!(xml.contains(part), "{part} not in\n{xml}");
        }
    }
}
