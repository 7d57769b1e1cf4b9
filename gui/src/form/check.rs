//! One field of the launcher's forms checked as typed: a host, a port, a
//! bandwidth limit, a period, a directory; cheap enough for every keystroke.

use std::net::IpAddr;
use std::path::{Path, PathBuf};
use std::time::Duration;

use ferry_agent::ratelimit::RateSchedule;

use super::Protect;

pub(crate) fn check_host(host: &str, empty_hint: &str) -> Result<(), String> {
    let host = host.trim();
    if host.is_empty() {
        return Err(empty_hint.to_string());
    }
    if host.parse::<IpAddr>().is_ok() {
        return Ok(());
    }
    let valid = host.len() <= 253
        && host.split('.').all(|part| {
            !part.is_empty()
                && part.len() <= 63
                && part.chars().all(|c| c.is_ascii_alphanumeric() || c == '-')
        });
    if valid {
        Ok(())
    } else {
        Err(format!("{host:?} is neither an IP address nor a host name"))
    }
}

/// The key file for `protect`: none for `Plain`; a key file (`ferry key
/// new`) for `Encrypted`; a public half (`ferry key public`) for
/// `WriteOnly`. Reads only the file's public half: no passphrase.
pub(crate) fn check_key_file(protect: Protect, key_file: &str) -> Result<(), String> {
    let path = key_file.trim();
    let needs = match protect {
        Protect::Plain => return Ok(()),
        Protect::Encrypted => "Encrypted needs the key file `ferry key new` wrote",
        Protect::WriteOnly => "Write-only needs the key's public half (`ferry key public`)",
    };
    if path.is_empty() {
        return Err(format!("is empty: {needs}"));
    }
    let (_, whole) = ferry_agent::keys::load_public(Path::new(path))
        .map_err(|e| ferry_agent::chain::chain(&e))?;
    match (protect, whole) {
        (Protect::Encrypted, false) => Err(format!(
            "holds only a public half: {needs} (or choose Write-only)"
        )),
        (Protect::WriteOnly, true) => Err(format!(
            "holds the whole key: a write-only sender must not; {needs}"
        )),
        _ => Ok(()),
    }
}

/// Parses a port; `allow_zero` for a listener where 0 means "any free port".
pub fn parse_port(text: &str, allow_zero: bool) -> Result<u16, String> {
    let low = if allow_zero { 0 } else { 1 };
    let hint = format!("must be a number from {low} to 65535");
    match text.trim().parse::<u32>() {
        Ok(n) if (low..=65535).contains(&n) => u16::try_from(n).map_err(|_| hint),
        Ok(_) => Err(hint),
        Err(_) if text.trim().is_empty() => Err(format!("is empty: {hint}")),
        Err(_) => Err(format!("{:?} {hint}", text.trim())),
    }
}

/// Checks a bandwidth limit as `--limit-rate` reads it: a rate such as
/// `10MB/s` or daily windows such as `08:00-18:00=2MB/s,10MB/s`. Empty is
/// no limit.
pub fn check_limit_rate(text: &str) -> Result<(), String> {
    optional(text, |text| {
        text.trim()
            .parse::<RateSchedule>()
            .map(|_| ())
            .map_err(|e| e.to_string())
    })
}

pub(crate) fn parse_max_clients(text: &str) -> Result<usize, String> {
    match text.trim().parse::<usize>() {
        Ok(n) if n >= 1 => Ok(n),
        _ => Err("must be a whole number, at least 1".into()),
    }
}

/// Parses a period such as `15m`; at least one second.
pub fn parse_period(text: &str) -> Result<Duration, String> {
    let text = text.trim();
    if text.is_empty() {
        return Err("is empty: say how often to run (examples: 30s, 15m, 1h)".into());
    }
    let every = humantime::parse_duration(text)
        .map_err(|e| format!("{text:?}: {e} (examples: 30s, 15m, 1h)"))?;
    if every < Duration::from_secs(1) {
        return Err("must be at least 1s".into());
    }
    Ok(every)
}

/// An existing, readable directory.
pub(crate) fn check_readable_dir(text: &str, what: &str) -> Result<(), String> {
    let text = text.trim();
    if text.is_empty() {
        return Err(format!("is empty: choose {what}"));
    }
    let path = Path::new(text);
    match std::fs::metadata(path) {
        Err(e) => Err(format!("{text}: {e}")),
        Ok(m) if !m.is_dir() => Err(format!("{text} is not a directory")),
        Ok(_) => std::fs::read_dir(path)
            .map(|_| ())
            .map_err(|e| format!("{text} cannot be read: {e}")),
    }
}

/// A directory that exists or can be created (its parent exists).
pub(crate) fn check_creatable_dir(text: &str, what: &str) -> Result<(), String> {
    let text = text.trim();
    if text.is_empty() {
        return Err(format!("is empty: choose {what}"));
    }
    let path = Path::new(text);
    match std::fs::metadata(path) {
        Ok(m) if m.is_dir() => Ok(()),
        Ok(_) => Err(format!("{text} is not a directory")),
        Err(_) => match path.parent().filter(|p| !p.as_os_str().is_empty()) {
            Some(parent) if parent.is_dir() => Ok(()),
            _ => Err(format!(
                "{text} does not exist and its parent directory is missing"
            )),
        },
    }
}

pub(crate) fn optional(
    text: &str,
    check: impl FnOnce(&str) -> Result<(), String>,
) -> Result<(), String> {
    if text.trim().is_empty() {
        Ok(())
    } else {
        check(text)
    }
}

pub(crate) fn opt_path(text: &str) -> Option<PathBuf> {
    let text = text.trim();
    (!text.is_empty()).then(|| PathBuf::from(text))
}

pub(crate) fn opt_string(text: &str) -> Option<String> {
    let text = text.trim();
    (!text.is_empty()).then(|| text.to_string())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ports_are_checked() {
        assert_eq!(parse_port("7878", false), Ok(7878));
        assert_eq!(parse_port(" 0 ", true), Ok(0));
        assert!(parse_port("0", false).is_err());
        assert!(parse_port("65536", true).unwrap_err().contains("65535"));
        assert!(parse_port("http", true).unwrap_err().contains("\"http\""));
        assert!(parse_port("", true).unwrap_err().contains("empty"));
    }

    #[test]
    fn periods_are_checked() {
        assert_eq!(parse_period("15m"), Ok(Duration::from_secs(900)));
        assert!(parse_period("soon").unwrap_err().contains("examples"));
        assert!(parse_period("10ms").is_err());
    }

    #[test]
    fn bandwidth_limits_are_checked_as_typed() {
        for ok in [
            "",
            "  ",
            "10MB/s",
            "512KiB/s",
            "08:00-18:00=2MB/s,10MB/s",
            "22:00-06:00=off",
            "off",
        ] {
            assert_eq!(check_limit_rate(ok), Ok(()), "{ok:?}");
        }
        let bad = check_limit_rate("25:00-18:00=1MB/s").unwrap_err();
        assert!(bad.contains("25:00"), "{bad}");
        assert!(bad.contains("examples"), "{bad}");
        assert!(check_limit_rate("fast").is_err());
        assert!(check_limit_rate("10MB/s,20MB/s").is_err());
    }
}
