//! Shared helpers: a test receiver on `127.0.0.1:0`, sender settings, and a
//! tracing guard.

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Once};

use ferry_agent::config::{SenderConfig, SenderSettings};
use ferry_agent::identity::{DeviceId, Identity};
use ferry_agent::receiver::{Admission, Receiver};
use ferry_agent::sender::{self, SenderError};
use ferry_agent::status::SenderStatus;
use ferry_agent::store::Store;
use ferry_agent::summary::RunSummary;
use tokio_util::sync::CancellationToken;

/// Logs to the test's captured output when `FERRY_LOG` is set.
pub fn trace() {
    static INIT: Once = Once::new();
    INIT.call_once(|| {
        if let Ok(filter) = std::env::var("FERRY_LOG") {
            let _ = tracing_subscriber::fmt()
                .with_env_filter(filter)
                .with_test_writer()
                .try_init();
        }
    });
}

/// A receiver running in this process on 127.0.0.1.
pub struct TestReceiver {
    pub addr: SocketAddr,
    pub id: DeviceId,
    pub store_dir: PathBuf,
    pub state_dir: PathBuf,
    pub store: Arc<Store>,
    token: CancellationToken,
    task: tokio::task::JoinHandle<()>,
}

impl TestReceiver {
    /// Starts a receiver storing into `dir/store`, identity in `dir/rstate`.
    pub async fn start(
        dir: &Path,
        max_clients: usize,
        admission: Admission,
    ) -> anyhow::Result<TestReceiver> {
        Self::start_at(dir, "127.0.0.1:0".parse()?, max_clients, admission).await
    }

    /// Same, on a given address (to restart on the same port).
    pub async fn start_at(
        dir: &Path,
        addr: SocketAddr,
        max_clients: usize,
        admission: Admission,
    ) -> anyhow::Result<TestReceiver> {
        trace();
        let store_dir = dir.join("store");
        let state_dir = dir.join("rstate");
        let identity = Identity::load_or_create(&state_dir)?;
        let store = {
            let store_dir = store_dir.clone();
            tokio::task::spawn_blocking(move || Store::open(&store_dir)).await??
        };
        let receiver = Receiver::bind_with(identity, store, addr, max_clients, admission)?;
        let addr = receiver.local_addr()?;
        let id = receiver.id();
        let store = receiver.store();
        let token = CancellationToken::new();
        let task = tokio::spawn(receiver.serve(token.clone()));
        Ok(TestReceiver {
            addr,
            id,
            store_dir,
            state_dir,
            store,
            token,
            task,
        })
    }

    /// A receiver that admits senders with this pairing secret.
    pub async fn with_secret(dir: &Path, secret: &str) -> anyhow::Result<TestReceiver> {
        Self::start(
            dir,
            8,
            Admission {
                allow: vec![],
                pairing_secret: Some(secret.as_bytes().to_vec()),
            },
        )
        .await
    }

    /// Stops it and waits until it is down (the store is released).
    pub async fn stop(self) -> anyhow::Result<()> {
        self.token.cancel();
        drop(self.store);
        self.task.await?;
        Ok(())
    }

    /// Where sender `name`'s folder `folder` is mirrored.
    pub fn mirror(&self, name: &str, folder: &str) -> PathBuf {
        self.store_dir.join(name).join(folder)
    }
}

/// A sender's directories.
pub struct TestSender {
    pub source: PathBuf,
    pub state: PathBuf,
    pub name: String,
}

impl TestSender {
    /// `dir/<name>-src` as source and `dir/<name>-state` as state.
    pub fn new(dir: &Path, name: &str) -> anyhow::Result<TestSender> {
        let source = dir.join(format!("{name}-src"));
        std::fs::create_dir_all(&source)?;
        Ok(TestSender {
            source,
            state: dir.join(format!("{name}-state")),
            name: name.to_string(),
        })
    }

    /// Config for sending to `receiver` once, folder "docs".
    pub fn config(&self, receiver: &TestReceiver) -> SenderConfig {
        SenderConfig {
            host: Some(receiver.addr.ip().to_string()),
            port: Some(receiver.addr.port()),
            source: Some(self.source.clone()),
            name: Some(self.name.clone()),
            folder: Some("docs".into()),
            state: Some(self.state.clone()),
            once: Some(true),
            ..Default::default()
        }
    }

    /// Writes a pairing secret file and returns the config using it.
    pub fn with_secret(
        &self,
        receiver: &TestReceiver,
        secret: &str,
    ) -> anyhow::Result<SenderConfig> {
        let path = self.state.with_extension("secret");
        std::fs::write(&path, secret)?;
        Ok(SenderConfig {
            pairing_secret_file: Some(path),
            ..self.config(receiver)
        })
    }
}

/// Runs a sender with these settings until it is done.
pub async fn send(settings: SenderSettings) -> Result<RunSummary, SenderError> {
    sender::run(
        settings,
        CancellationToken::new(),
        SenderStatus::new(),
        |_| {},
    )
    .await
}

/// Runs a sender from a config, once.
pub async fn send_config(config: &SenderConfig) -> anyhow::Result<RunSummary> {
    Ok(send(config.settings()?).await?)
}

/// The `ferry` binary, built once per test process (`cargo build -p
/// ferry-agent --bin ferry`) into the target directory this test binary
/// lives in (`<target>/debug/deps/`).
pub fn ferry_bin() -> PathBuf {
    static BIN: std::sync::OnceLock<Result<PathBuf, String>> = std::sync::OnceLock::new();
    let result = BIN.get_or_init(|| {
        let exe = std::env::current_exe().map_err(|e| format!("current_exe: {e}"))?;
        // <target>/debug/deps/e2e-<hash>
        let profile_dir = exe
            .parent()
            .and_then(Path::parent)
            .ok_or_else(|| format!("unexpected test binary location {}", exe.display()))?;
        let target = profile_dir
            .parent()
            .ok_or_else(|| format!("unexpected test binary location {}", exe.display()))?;
        let mut cargo = ferry_tests::cargo::cargo();
        let status = cargo
            .args(["build", "-q", "-p", "ferry-agent", "--bin", "ferry"])
            .env("CARGO_TARGET_DIR", target)
            .current_dir(env!("CARGO_MANIFEST_DIR"))
            .status()
            .map_err(|e| format!("running cargo build: {e}"))?;
        if !status.success() {
            return Err(format!("cargo build of the ferry binary failed: {status}"));
        }
        let bin = profile_dir.join("ferry");
        if !bin.is_file() {
            return Err(format!("no ferry binary at {}", bin.display()));
        }
        Ok(bin)
    });
    match result {
        Ok(bin) => bin.clone(),
        Err(e) => panic!("{e}"),
    }
}

/// A UDP port on 127.0.0.1 that was free a moment ago.
pub fn free_udp_port() -> anyhow::Result<u16> {
    let socket = std::net::UdpSocket::bind("127.0.0.1:0")?;
    Ok(socket.local_addr()?.port())
}

/// Polls `check` every 20 ms until it returns `Some` or `timeout` passes.
pub fn poll_until<T>(
    timeout: std::time::Duration,
    mut check: impl FnMut() -> Option<T>,
) -> Option<T> {
    let deadline = std::time::Instant::now() + timeout;
    loop {
        if let Some(value) = check() {
            return Some(value);
        }
        if std::time::Instant::now() >= deadline {
            return None;
        }
        std::thread::sleep(std::time::Duration::from_millis(20));
    }
}

/// How long a test waits for the receiver's answer to a Hello.
const HELLO_ANSWER: std::time::Duration = std::time::Duration::from_secs(15);

/// Opens the control stream on `conn`, says Hello as `name` for folder
/// "docs" (with a pairing proof, if given) and returns the stream and the
/// receiver's answer.
pub async fn hello(
    conn: &quinn::Connection,
    name: &str,
    pairing: Option<[u8; 32]>,
) -> anyhow::Result<(ferry_agent::stream::Channel, ferry_proto::Message)> {
    use ferry_proto::{Hello, Message, Name};
    let mut control = ferry_agent::stream::Channel::new(conn.open_bi().await?);
    control
        .send
        .send(&Message::Hello(Hello {
            protocol: ferry_proto::PROTOCOL_VERSION,
            name: Name::new(name)?,
            folder: Name::new("docs")?,
            pairing,
            agent: "ferry tests".into(),
            last_run: None,
        }))
        .await?;
    let answer = tokio::time::timeout(HELLO_ANSWER, control.recv.recv_message()).await??;
    Ok((control, answer))
}
