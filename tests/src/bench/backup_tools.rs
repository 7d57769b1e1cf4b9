//! restic and borg, the backup tools a Ferry user would otherwise pick, each
//! to a local repository and over ssh (restic over sftp, borg to `borg
//! serve`) to the bench's sshd. restic's repositories use a fixed password
//! file (restic always encrypts); borg's are `--encryption none`. Caches and
//! borg's state live under the bench's work directory, wiped with the
//! repositories before each first backup.
//!
//! A run is checked by restoring its snapshot (archive) into a scratch
//! directory and comparing it with the source, metadata too.

use std::ffi::OsStr;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};

use anyhow::{bail, Context};

use super::process::{self, drop_caches};
use super::report::Sample;
use super::tools::{remove_tree, SshLogin, Sshd};

/// restic's sftp server program on Debian (package openssh-sftp-server).
pub const SFTP_SERVER: &str = "/usr/lib/openssh/sftp-server";

/// Whether `program arg` runs (`restic version`, `borg --version`).
pub fn installed(program: &str, arg: &str) -> bool {
    Command::new(program)
        .arg(arg)
        .stdin(Stdio::null())
        .output()
        .map(|o| o.status.success())
        .unwrap_or(false)
}

/// Runs `command` untimed, failing with its stderr.
pub fn untimed(mut command: Command, what: &str) -> anyhow::Result<String> {
    let out = command
        .stdin(Stdio::null())
        .output()
        .with_context(|| format!("running {what}"))?;
    if !out.status.success() {
        bail!(
            "{what} failed ({}): {}",
            out.status,
            String::from_utf8_lossy(&out.stderr).trim()
        );
    }
    Ok(String::from_utf8_lossy(&out.stdout).into_owned())
}

/// Where a restored tree of `source` lands under `target`: restic and borg
/// both keep the absolute path, borg without its leading `/`.
pub fn restored(target: &Path, source: &Path) -> PathBuf {
    target.join(source.strip_prefix("/").unwrap_or(source))
}

/// Fails unless the summary says `files` files were backed up.
pub fn check_files(tool: &str, counted: u64, files: usize) -> anyhow::Result<()> {
    if counted != files as u64 {
        bail!("{tool} backed up {counted} files, the set has {files}");
    }
    Ok(())
}

/// What `restic backup --json` ends with: files seen, bytes added.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ResticSummary {
    /// New + changed + unmodified files.
    pub files: u64,
    /// Bytes added to the repository (after deduplication).
    pub data_added: u64,
}

/// Parses the `"message_type":"summary"` line of `restic backup --json`.
pub fn parse_restic_summary(stdout: &str) -> anyhow::Result<ResticSummary> {
    let summary: serde_json::Value = stdout
        .lines()
        .rev()
        .filter_map(|l| serde_json::from_str::<serde_json::Value>(l).ok())
        .find(|v| v["message_type"] == "summary")
        .with_context(|| format!("no summary in restic's output: {stdout:?}"))?;
    let field = |name: &str| {
        summary[name]
            .as_u64()
            .with_context(|| format!("no {name} in restic's summary {summary}"))
    };
    Ok(ResticSummary {
        files: field("files_new")? + field("files_changed")? + field("files_unmodified")?,
        data_added: field("data_added")?,
    })
}

/// What `borg create --json` says of the archive: files, deduplicated size.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct BorgSummary {
    /// Files in the archive.
    pub files: u64,
    /// Bytes this archive added to the repository.
    pub deduplicated: u64,
}

/// Parses `borg create --json`'s stdout.
pub fn parse_borg_summary(stdout: &str) -> anyhow::Result<BorgSummary> {
    let json: serde_json::Value = serde_json::from_str(stdout.trim())
        .with_context(|| format!("borg create --json printed no JSON: {stdout:?}"))?;
    let stats = &json["archive"]["stats"];
    let field = |name: &str| {
        stats[name]
            .as_u64()
            .with_context(|| format!("no archive.stats.{name} in borg's JSON"))
    };
    Ok(BorgSummary {
        files: field("nfiles")?,
        deduplicated: field("deduplicated_size")?,
    })
}

/// Where a repository is reached from: this machine or over ssh.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Via {
    /// A local directory.
    Local,
    /// The bench's sshd (restic: sftp; borg: `borg serve`).
    Ssh,
}

impl Via {
    fn dir(self) -> &'static str {
        match self {
            Via::Local => "local",
            Via::Ssh => "ssh",
        }
    }
}

/// restic and borg with their repositories under one directory.
pub struct BackupTools {
    dir: PathBuf,
    password: PathBuf,
    archives: std::cell::Cell<u32>,
}

impl BackupTools {
    /// Prepares `dir` (restic's password file).
    pub fn setup(dir: &Path) -> anyhow::Result<BackupTools> {
        remove_tree(dir)?;
        std::fs::create_dir_all(dir)?;
        let password = dir.join("restic-password");
        std::fs::write(&password, "ferry-bench\n")?;
        Ok(BackupTools {
            dir: dir.to_path_buf(),
            password,
            archives: std::cell::Cell::new(0),
        })
    }

    fn repo(&self, tool: &str, via: Via, set: &str) -> PathBuf {
        self.dir.join(tool).join(via.dir()).join(set)
    }

    fn restic_cache(&self) -> PathBuf {
        self.dir.join("restic-cache")
    }

    fn borg_base(&self) -> PathBuf {
        self.dir.join("borg-base")
    }

    /// Empty repositories for `set` (both tools, both ways) and empty
    /// caches: the next backup is a first one.
    pub fn reset(&self, set: &str) -> anyhow::Result<()> {
        remove_tree(&self.borg_base())?;
        for via in [Via::Local, Via::Ssh] {
            self.reset_restic(via, set)?;
            let borg = self.repo("borg", via, set);
            remove_tree(&borg)?;
            if let Some(parent) = borg.parent() {
                std::fs::create_dir_all(parent)?;
            }
            let mut init = self.borg();
            init.args(["init", "--encryption", "none"]).arg(&borg);
            untimed(init, "borg init")?;
        }
        Ok(())
    }

    /// An empty restic repository for `set` reached `via`, and an empty
    /// restic cache: the next restic backup is a first one (borg's
    /// repositories are left alone, so borg need not be installed).
    pub fn reset_restic(&self, via: Via, set: &str) -> anyhow::Result<()> {
        remove_tree(&self.restic_cache())?;
        let restic = self.repo("restic", via, set);
        remove_tree(&restic)?;
        let mut init = self.restic(&restic);
        init.arg("init");
        untimed(init, "restic init")?;
        Ok(())
    }

    /// Removes every repository and cache.
    pub fn clear(&self) -> anyhow::Result<()> {
        remove_tree(&self.dir)
    }

    /// restic's common arguments, for a local repository.
    fn restic_args(&self, repo: &Path) -> Vec<std::ffi::OsString> {
        vec![
            "--repo".into(),
            repo.into(),
            "--password-file".into(),
            self.password.clone().into(),
            "--cache-dir".into(),
            self.restic_cache().into(),
        ]
    }

    fn restic(&self, repo: &Path) -> Command {
        let mut cmd = Command::new("restic");
        cmd.args(self.restic_args(repo)).arg("--quiet");
        cmd
    }

    /// `borg` with its state under the work directory and no questions.
    fn borg(&self) -> Command {
        let mut cmd = Command::new("borg");
        cmd.envs(self.borg_env());
        cmd
    }

    fn borg_env(&self) -> Vec<(&'static str, std::ffi::OsString)> {
        vec![
            ("BORG_BASE_DIR", self.borg_base().into()),
            ("BORG_UNKNOWN_UNENCRYPTED_REPO_ACCESS_IS_OK", "yes".into()),
            ("BORG_RELOCATED_REPO_ACCESS_IS_OK", "yes".into()),
        ]
    }

    /// One measured `restic backup` of `source` to the repository of `set`
    /// (caches dropped first), checked and then restored and compared.
    pub fn restic_run(
        &self,
        via: Via,
        set: &str,
        source: &Path,
        files: usize,
        sshd: Option<&Sshd>,
        scratch: &Path,
    ) -> anyhow::Result<Sample> {
        let repo = self.repo("restic", via, set);
        let backup = |sftp: Option<&SshLogin>| -> anyhow::Result<Sample> {
            let mut args = self.restic_args(&repo);
            if let Some(login) = sftp {
                args[1] = format!("sftp:{}:{}", login.target, repo.display()).into();
                args.push("--option".into());
                args.push(
                    format!("sftp.command={} {} {SFTP_SERVER}", login.ssh, login.target).into(),
                );
            }
            args.extend(["backup".into(), "--json".into(), source.into()]);
            let args: Vec<&OsStr> = args.iter().map(|a| a.as_os_str()).collect();
            let done = process::run_timed("restic", &args, &scratch.join("restic.time"))?;
            if !done.status.success() {
                bail!(
                    "restic backup failed ({}): {}",
                    done.status,
                    done.stderr.trim()
                );
            }
            let summary = parse_restic_summary(&done.stdout)?;
            check_files("restic", summary.files, files)?;
            Ok(Sample {
                wall_s: done.wall_s,
                client: Some(done.usage),
                ..Sample::default()
            })
        };
        let sample = match via {
            Via::Local => {
                drop_caches();
                backup(None)?
            }
            Via::Ssh => sshd
                .context("restic over sftp needs sshd")?
                .run_client(scratch, |login| backup(Some(login)))?,
        };
        let target = scratch.join("restic-restore");
        remove_tree(&target)?;
        let mut restore = self.restic(&repo);
        restore.args(["restore", "latest", "--target"]).arg(&target);
        untimed(restore, "restic restore")?;
        ferry_tests::tree::assert_same(source, &restored(&target, source))
            .with_context(|| format!("restic's restore ({}) differs from the source", via.dir()))?;
        remove_tree(&target)?;
        Ok(sample)
    }

    /// One measured `borg create` of `source` to the repository of `set`
    /// (caches dropped first), checked and then extracted and compared.
    pub fn borg_run(
        &self,
        via: Via,
        set: &str,
        source: &Path,
        files: usize,
        sshd: Option<&Sshd>,
        scratch: &Path,
    ) -> anyhow::Result<Sample> {
        let repo = self.repo("borg", via, set);
        let n = self.archives.get() + 1;
        self.archives.set(n);
        let archive = format!("run-{n}");
        let create = |ssh: Option<&SshLogin>| -> anyhow::Result<Sample> {
            let mut args: Vec<std::ffi::OsString> = Vec::new();
            let location = match ssh {
                None => format!("{}::{archive}", repo.display()),
                Some(login) => {
                    args.push("--rsh".into());
                    args.push(login.ssh.clone().into());
                    format!(
                        "ssh://{}:{}{}::{archive}",
                        login.target,
                        login.port,
                        repo.display()
                    )
                }
            };
            args.extend([
                "create".into(),
                "--json".into(),
                location.into(),
                source.into(),
            ]);
            // `env` sets borg's state directory and execs borg: the time
            // measured is borg's.
            let mut full: Vec<std::ffi::OsString> = self
                .borg_env()
                .into_iter()
                .map(|(k, v)| {
                    let mut kv = std::ffi::OsString::from(format!("{k}="));
                    kv.push(v);
                    kv
                })
                .collect();
            full.push("borg".into());
            full.extend(args);
            let full: Vec<&OsStr> = full.iter().map(|a| a.as_os_str()).collect();
            let done = process::run_timed("env", &full, &scratch.join("borg.time"))?;
            if !done.status.success() {
                bail!(
                    "borg create failed ({}): {}",
                    done.status,
                    done.stderr.trim()
                );
            }
            let summary = parse_borg_summary(&done.stdout)?;
            check_files("borg", summary.files, files)?;
            Ok(Sample {
                wall_s: done.wall_s,
                client: Some(done.usage),
                ..Sample::default()
            })
        };
        let sample = match via {
            Via::Local => {
                drop_caches();
                create(None)?
            }
            Via::Ssh => sshd
                .context("borg over ssh needs sshd")?
                .run_client(scratch, |login| create(Some(login)))?,
        };
        let target = scratch.join("borg-extract");
        remove_tree(&target)?;
        std::fs::create_dir_all(&target)?;
        let mut extract = self.borg();
        extract
            .arg("extract")
            .arg(format!("{}::{archive}", repo.display()))
            .current_dir(&target);
        untimed(extract, "borg extract")?;
        ferry_tests::tree::assert_same(source, &restored(&target, source))
            .with_context(|| format!("borg's extract ({}) differs from the source", via.dir()))?;
        remove_tree(&target)?;
        Ok(sample)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_restics_summary_after_status_lines() -> anyhow::Result<()> {
        let out = r#"{"message_type":"status","percent_done":0.5,"total_files":10}
{"message_type":"summary","files_new":7,"files_changed":2,"files_unmodified":1,"dirs_new":3,"dirs_changed":0,"dirs_unmodified":0,"data_blobs":9,"tree_blobs":4,"data_added":123456,"total_files_processed":10,"total_bytes_processed":200000,"total_duration":1.5,"snapshot_id":"abcd"}
"#;
        assert_eq!(
            parse_restic_summary(out)?,
            ResticSummary {
                files: 10,
                data_added: 123456
            }
        );
        assert!(parse_restic_summary(r#"{"message_type":"status"}"#).is_err());
        assert!(parse_restic_summary("Fatal: wrong password").is_err());
        Ok(())
    }

    #[test]
    fn parses_borgs_create_json() -> anyhow::Result<()> {
        let out = r#"{
    "archive": {
        "duration": 0.5,
        "id": "ab12",
        "name": "run-1",
        "stats": {
            "compressed_size": 1100,
            "deduplicated_size": 1000,
            "nfiles": 2000,
            "original_size": 2000000
        }
    },
    "repository": {"id": "cd34", "location": "/r"}
}
"#;
        assert_eq!(
            parse_borg_summary(out)?,
            BorgSummary {
                files: 2000,
                deduplicated: 1000
            }
        );
        assert!(parse_borg_summary(r#"{"archive": {}}"#).is_err());
        assert!(parse_borg_summary("").is_err());
        Ok(())
    }

    #[test]
    fn restored_trees_keep_the_absolute_path() {
        assert_eq!(
            restored(Path::new("/t"), Path::new("/data/small-2000")),
            Path::new("/t/data/small-2000")
        );
        assert!(check_files("restic", 3, 3).is_ok());
        assert!(check_files("restic", 2, 3).is_err());
    }
}
