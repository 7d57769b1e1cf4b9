//! Part of the `ferry` binary (not the library): `ferry key`, making folder
//! keys and handing out their public half.

use std::path::PathBuf;
use std::process::ExitCode;

use clap::{Args, Subcommand};
use ferry_agent::keys;

use crate::{cli_help, cli_read::out};

/// `ferry key`'s subcommands.
#[derive(Args)]
pub struct KeyArgs {
    #[command(subcommand)]
    command: KeyCommand,
}

#[derive(Subcommand)]
enum KeyCommand {
    /// Make a new folder key: a key file, its secret half sealed under a
    /// passphrase (asked twice on the terminal, or read from
    /// --passphrase-file / FERRY_PASSPHRASE_FILE).
    #[command(after_help = cli_help::KEY_NEW)]
    New {
        /// Where to write the key file (never over an existing file).
        #[arg(long, value_name = "FILE")]
        out: PathBuf,
        /// A file holding the passphrase (one trailing newline is not part
        /// of it) [default: $FERRY_PASSPHRASE_FILE, else asked].
        #[arg(long, value_name = "FILE")]
        passphrase_file: Option<PathBuf>,
    },
    /// Print the public half of a key file, or write it with --out: what a
    /// write-only sender holds (no passphrase needed).
    #[command(after_help = cli_help::KEY_PUBLIC)]
    Public {
        /// The key file (or a public file).
        #[arg(value_name = "FILE")]
        file: PathBuf,
        /// Write it to this file (never over an existing file) instead of
        /// printing it.
        #[arg(long, value_name = "FILE")]
        out: Option<PathBuf>,
    },
    /// Print the key id of a key file or a public file.
    #[command(after_help = cli_help::KEY_ID)]
    Id {
        /// The key file or public file.
        #[arg(value_name = "FILE")]
        file: PathBuf,
    },
}

/// Runs `ferry key …`.
pub async fn key(args: KeyArgs) -> anyhow::Result<ExitCode> {
    match args.command {
        KeyCommand::New {
            out: path,
            passphrase_file,
        } => {
            let passphrase = keys::passphrase_source(passphrase_file.as_deref());
            let file = path.clone();
            let public =
                ferry_agent::tasks::blocking(move || keys::create_key_file(&file, &passphrase))
                    .await??;
            let id = keys::short_key_id(&public.key_id());
            out(format_args!(
                "ferry: wrote the new folder key {id} to {}\n\
                 \n\
                 Losing this file or its passphrase loses the folder's data: nothing can\n\
                 open it without both. Keep a copy elsewhere (a USB stick, a password manager).\n\
                 A write-only sender gets only the public half: ferry key public {} --out folder.pub",
                path.display(),
                path.display(),
            ))?;
        }
        KeyCommand::Public { file, out: None } => {
            let (public, _) = keys::load_public(&file)?;
            // The text ends with its newline already.
            out(keys::public_file_text(&public).trim_end())?;
        }
        KeyCommand::Public {
            file,
            out: Some(to),
        } => {
            let (public, _) = keys::load_public(&file)?;
            keys::write_public_file(&to, &public)?;
            out(format_args!(
                "ferry: wrote the public half of {} (key {}) to {}",
                file.display(),
                keys::short_key_id(&public.key_id()),
                to.display()
            ))?;
        }
        KeyCommand::Id { file } => {
            let (public, _) = keys::load_public(&file)?;
            out(keys::key_id_hex(&public.key_id()))?;
        }
    }
    Ok(ExitCode::SUCCESS)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn new_then_public_then_id() {
        let dir = tempfile::tempdir().unwrap();
        let pass = dir.path().join("pass");
        std::fs::write(&pass, "pass phrase\n").unwrap();
        let key_file = dir.path().join("folder.key");
        let run = |command| key(KeyArgs { command });
        run(KeyCommand::New {
            out: key_file.clone(),
            passphrase_file: Some(pass.clone()),
        })
        .await
        .unwrap();
        let (public, whole) = keys::load_public(&key_file).unwrap();
        assert!(whole);
        let secret = keys::load_secret(&key_file, &keys::Passphrase::File(pass.clone())).unwrap();
        assert_eq!(secret.public(), public);
        let public_file = dir.path().join("folder.pub");
        run(KeyCommand::Public {
            file: key_file.clone(),
            out: Some(public_file.clone()),
        })
        .await
        .unwrap();
        assert_eq!(keys::load_public(&public_file).unwrap(), (public, false));
        run(KeyCommand::Id { file: public_file }).await.unwrap();
        // A second `new` over the same file is refused, the key kept.
        let before = std::fs::read(&key_file).unwrap();
        let err = run(KeyCommand::New {
            out: key_file.clone(),
            passphrase_file: Some(pass),
        })
        .await
        .unwrap_err();
        assert!(format!("{err:#}").contains("already exists"), "{err:#}");
        assert_eq!(std::fs::read(&key_file).unwrap(), before);
    }
}
