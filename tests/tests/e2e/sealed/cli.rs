//! One person at a terminal: a scratch directory (the source `src`, the
//! pairing secret, a passphrase file, key files, the sender's state) and the
//! `ferry` commands they type against a receiver at an address. Shared by
//! the tests of protected folders.

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::process::{Command, Output, Stdio};

use crate::util::ferry_bin;

/// The pairing secret every receiver of these tests admits.
pub(crate) const SECRET: &str = "sealed folders pairing secret";
/// The passphrase of every key file of these tests.
pub(crate) const PASSPHRASE: &str = "a long and memorable passphrase";

/// A scratch directory and the receiver its commands talk to.
pub(crate) struct Cli {
    dir: PathBuf,
    addr: SocketAddr,
}

impl Cli {
    /// Writes `pairing` and `passphrase` into `dir` and makes `dir/src`.
    pub(crate) fn new(dir: &Path, addr: SocketAddr) -> anyhow::Result<Cli> {
        std::fs::write(dir.join("pairing"), SECRET)?;
        std::fs::write(dir.join("passphrase"), PASSPHRASE)?;
        std::fs::create_dir_all(dir.join("src"))?;
        Ok(Cli {
            dir: dir.to_path_buf(),
            addr,
        })
    }

    pub(crate) fn path(&self, rel: &str) -> PathBuf {
        self.dir.join(rel)
    }

    pub(crate) fn src(&self) -> PathBuf {
        self.path("src")
    }

    /// `ferry ARGS`, in the scratch directory, with no terminal.
    pub(crate) async fn run(&self, args: &[&str]) -> anyhow::Result<Output> {
        let args: Vec<String> = args.iter().map(|s| s.to_string()).collect();
        let cwd = self.dir.clone();
        Ok(tokio::task::spawn_blocking(move || {
            Command::new(ferry_bin())
                .args(&args)
                .current_dir(&cwd)
                .env("HOME", &cwd)
                .env_remove("XDG_STATE_HOME")
                .env_remove("FERRY_LOG")
                .env_remove("FERRY_PASSPHRASE_FILE")
                .stdin(Stdio::null())
                .output()
        })
        .await??)
    }

    /// `ferry ARGS`, which must exit 0; its stdout.
    pub(crate) async fn ok(&self, args: &[&str]) -> anyhow::Result<String> {
        let out = self.run(args).await?;
        assert_eq!(
            out.status.code(),
            Some(0),
            "ferry {args:?}:\n{}",
            String::from_utf8_lossy(&out.stderr)
        );
        Ok(String::from_utf8(out.stdout)?)
    }

    /// The flags that reach the receiver as sender `laptop`, folder
    /// `folder` (absolute paths: a spawned process may run elsewhere).
    pub(crate) fn remote(&self, folder: &str) -> Vec<String> {
        let state = self.path("state").display().to_string();
        [
            "--host",
            &self.addr.ip().to_string(),
            "--port",
            &self.addr.port().to_string(),
            "--name",
            "laptop",
            "--folder",
            folder,
            "--state",
            &state,
        ]
        .iter()
        .map(|s| s.to_string())
        .collect()
    }

    /// The arguments of `ferry send --once` of `src` into `folder` with
    /// `extra` flags.
    pub(crate) fn send_args(&self, folder: &str, extra: &[&str]) -> Vec<String> {
        let mut args: Vec<String> = vec!["send".into(), "--once".into()];
        args.extend(self.remote(folder));
        args.extend([
            "--source".to_string(),
            self.src().display().to_string(),
            "--pairing-secret-file".to_string(),
            self.path("pairing").display().to_string(),
        ]);
        args.extend(extra.iter().map(|s| s.to_string()));
        args
    }

    /// `ferry send --once` of `src` into `folder` with `extra` flags.
    pub(crate) async fn send(&self, folder: &str, extra: &[&str]) -> anyhow::Result<Output> {
        let args = self.send_args(folder, extra);
        let args: Vec<&str> = args.iter().map(String::as_str).collect();
        self.run(&args).await
    }

    /// `ferry restore` of `folder` to `to` with `extra` flags.
    pub(crate) async fn restore(
        &self,
        folder: &str,
        to: &str,
        extra: &[&str],
    ) -> anyhow::Result<Output> {
        let mut args: Vec<String> = vec!["restore".into(), "--to".into(), to.into()];
        args.extend(self.remote(folder));
        args.extend(extra.iter().map(|s| s.to_string()));
        let args: Vec<&str> = args.iter().map(String::as_str).collect();
        self.run(&args).await
    }

    /// `ferry key new` and `ferry key public` into `name` and `name.pub`.
    pub(crate) async fn keys(&self, name: &str) -> anyhow::Result<()> {
        self.ok(&[
            "key",
            "new",
            "--out",
            name,
            "--passphrase-file",
            "passphrase",
        ])
        .await?;
        let public = format!("{name}.pub");
        self.ok(&["key", "public", name, "--out", &public]).await?;
        Ok(())
    }
}

pub(crate) fn stderr(out: &Output) -> String {
    String::from_utf8_lossy(&out.stderr).into_owned()
}

pub(crate) fn assert_ok(out: &Output, what: &str) {
    assert_eq!(out.status.code(), Some(0), "{what}:\n{}", stderr(out));
}
