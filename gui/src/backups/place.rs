//! Where the Backups view asks and restores to: the origin the sender
//! form names, the default destination next to the source, the check that
//! keeps a restore out of the source, and "Date and time" parsed.

use std::path::{Path, PathBuf};
use std::time::SystemTime;

use ferry_agent::config::{default_name, default_state_dir, DEFAULT_PORT};
use ferry_agent::reader::{parse_point_in_time, LocalStore, Remote};
use ferry_proto::Name;

use super::Origin;
use crate::form::SenderForm;

pub(crate) fn optional_path(text: &str) -> Option<PathBuf> {
    Some(text.trim())
        .filter(|t| !t.is_empty())
        .map(PathBuf::from)
}

/// The folder name a sender of `source` sends to (its base name without
/// leading dots), as `ferry send` derives it.
fn folder_of(source: &str) -> Result<Name, String> {
    let source = Path::new(source.trim());
    let canonical = source
        .canonicalize()
        .unwrap_or_else(|_| source.to_path_buf());
    let name = canonical
        .file_name()
        .map(|n| n.to_string_lossy().trim_start_matches('.').to_string())
        .filter(|n| !n.is_empty())
        .unwrap_or_else(|| "root".to_string());
    Name::new(name).map_err(|e| format!("Source: {e}"))
}

/// Where to ask: the store typed, else the receiver the form names.
pub fn origin_of(form: &SenderForm, store_dir: &str) -> Result<Origin, String> {
    let name = match form.name.trim() {
        "" => default_name(),
        n => Name::new(n.to_string()).map_err(|e| format!("Sender name: {e}"))?,
    };
    let folder = match form.source.trim() {
        "" => None,
        s => Some(folder_of(s)?),
    };
    if let Some(root) = optional_path(store_dir) {
        return Ok(Origin::Store(LocalStore { root, name, folder }));
    }
    let host = form.host.trim();
    if host.is_empty() {
        return Err(
            "Give the receiver's host in the sender form, or a store on this machine above".into(),
        );
    }
    let Some(folder) = folder else {
        return Err("Give the source folder in the sender form: its backups are shown".into());
    };
    let port = match form.port.trim() {
        "" => DEFAULT_PORT,
        p => crate::form::parse_port(p, false).map_err(|e| format!("Receiver port: {e}"))?,
    };
    let receiver_id = match form.receiver_id.trim() {
        "" => None,
        id => Some(id.parse().map_err(|e| format!("Receiver id: {e}"))?),
    };
    Ok(Origin::Receiver(Remote {
        host: host.to_string(),
        port,
        receiver_id,
        state: optional_path(&form.state).unwrap_or_else(default_state_dir),
        name,
        folder,
    }))
}

/// A new folder next to the source: `NAME-restored-YYYYMMDD-HHMMSS`.
pub fn default_destination(form: &SenderForm, now: SystemTime) -> PathBuf {
    let source = Path::new(form.source.trim());
    let parent = source
        .parent()
        .filter(|p| !p.as_os_str().is_empty())
        .map(Path::to_path_buf)
        .or_else(|| std::env::var_os("HOME").map(PathBuf::from))
        .unwrap_or_else(|| PathBuf::from("."));
    let base = source
        .file_name()
        .map(|n| n.to_string_lossy().into_owned())
        .unwrap_or_else(|| "ferry".into());
    let stamp = humantime::format_rfc3339_seconds(now)
        .to_string()
        .replace(['-', ':'], "")
        .replace('T', "-")
        .trim_end_matches('Z')
        .to_string();
    parent.join(format!("{base}-restored-{stamp}"))
}

/// True if `dest` is the source folder or lies inside it.
pub fn inside_source(dest: &Path, source: &str) -> bool {
    let source = source.trim();
    if source.is_empty() {
        return false;
    }
    let real = |p: &Path| {
        // The nearest existing ancestor, resolved, plus what does not exist.
        let mut existing = p.to_path_buf();
        let mut rest = Vec::new();
        while !existing.exists() {
            match (
                existing.file_name().map(|n| n.to_owned()),
                existing.parent(),
            ) {
                (Some(name), Some(parent)) => {
                    rest.push(name);
                    existing = parent.to_path_buf();
                }
                _ => break,
            }
        }
        let mut out = existing.canonicalize().unwrap_or(existing);
        out.extend(rest.iter().rev());
        out
    };
    real(dest).starts_with(real(Path::new(source)))
}

/// Parses "Date and time": `2026-11-20 14:00` (UTC), RFC 3339, or a
/// duration ago (`3h`); ms since the Unix epoch.
pub fn parse_time(text: &str, now: SystemTime) -> Result<i64, String> {
    parse_point_in_time(text.trim(), now).map_err(|e| format!("Date and time {e}"))
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::{Duration, UNIX_EPOCH};

    #[test]
    fn times_are_dates_or_durations_ago() {
        let now = UNIX_EPOCH + Duration::from_secs(2_000_000_000);
        let t = parse_time("2026-11-20 14:00", now).unwrap();
        assert_eq!(t, parse_time("2026-11-20T14:00:00Z", now).unwrap());
        assert_eq!(
            parse_time("1h", now).unwrap(),
            2_000_000_000_000 - 3_600_000
        );
        assert!(parse_time("soonish", now)
            .unwrap_err()
            .contains("2026-11-20 14:00"));
    }

    #[test]
    fn the_default_destination_is_a_new_folder_next_to_the_source() {
        let form = SenderForm {
            source: "/home/ann/Documents".into(),
            ..SenderForm::default()
        };
        let now = UNIX_EPOCH + Duration::from_secs(1_790_000_000);
        let dest = default_destination(&form, now);
        assert_eq!(dest.parent(), Some(Path::new("/home/ann")));
        let name = dest.file_name().unwrap().to_string_lossy().into_owned();
        assert!(name.starts_with("Documents-restored-2026"), "{name}");
        assert!(!inside_source(&dest, &form.source));
    }

    #[test]
    fn the_source_and_folders_inside_it_are_recognised() {
        let dir = tempfile::tempdir().unwrap();
        let source = dir.path().join("src");
        std::fs::create_dir(&source).unwrap();
        let s = source.display().to_string();
        assert!(inside_source(&source, &s));
        assert!(inside_source(&source.join("new/deeper"), &s));
        assert!(inside_source(&dir.path().join("src/../src"), &s));
        assert!(!inside_source(&dir.path().join("src-restored"), &s));
    }
}
