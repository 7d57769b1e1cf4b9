//! Units as people write them in flags and config files: sizes such as
//! `100GiB` or `1TB`; and the times Ferry keeps (nanoseconds or
//! milliseconds from the Unix epoch) as system times and as text. A leaf:
//! it imports nothing of the crate, so that [`crate::config`],
//! [`crate::ratelimit`], the store and the commands can all use it.

use std::time::{Duration, SystemTime, UNIX_EPOCH};

/// The time `ns` nanoseconds from the Unix epoch (negative: before it).
pub fn system_time(ns: i64) -> SystemTime {
    let magnitude = Duration::from_nanos(ns.unsigned_abs());
    if ns >= 0 {
        UNIX_EPOCH + magnitude
    } else {
        UNIX_EPOCH - magnitude
    }
}

/// A time `ms` milliseconds from the Unix epoch as RFC 3339 text in UTC, to
/// the second (times before the epoch show as the epoch).
pub fn utc_seconds(ms: i64) -> String {
    let t = UNIX_EPOCH + Duration::from_millis(ms.max(0).unsigned_abs());
    humantime::format_rfc3339_seconds(t).to_string()
}

/// Examples shown with every size that does not parse.
const EXAMPLES: &str = "examples: 500MiB, 100GiB, 1TB, 4096";

/// Why a size was rejected; each variant quotes the text as given.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum SizeError {
    /// No number where the size starts.
    #[error("{text:?} is not a size ({EXAMPLES})")]
    NotANumber { text: String },
    /// A number followed by a unit that is not one of the known ones.
    #[error("{text:?} has an unknown unit {unit:?} ({EXAMPLES})")]
    UnknownUnit { text: String, unit: String },
    /// Zero, or more bytes than a `u64` holds.
    #[error("{text:?} is out of range: give at least one byte ({EXAMPLES})")]
    OutOfRange { text: String },
}

/// Parses a size such as `100GiB`, `10MiB`, `1TB`, `512k` or `4096` (bytes):
/// a whole or decimal number, then an optional unit, case-insensitive. `K`,
/// `M`, `G`, `T` with `iB` are powers of 1024, with `B` powers of 1000; a
/// bare letter is a power of 1024.
pub fn parse_size(text: &str) -> Result<u64, SizeError> {
    let t = text.trim();
    let split = t
        .find(|c: char| !(c.is_ascii_digit() || c == '.'))
        .unwrap_or(t.len());
    let (number, unit) = t.split_at(split);
    let number: f64 = number.parse().map_err(|_| SizeError::NotANumber {
        text: text.to_string(),
    })?;
    let unit = unit.trim().to_ascii_lowercase();
    let factor: u64 = match unit.as_str() {
        "" | "b" => 1,
        "k" | "kib" => 1 << 10,
        "m" | "mib" => 1 << 20,
        "g" | "gib" => 1 << 30,
        "t" | "tib" => 1 << 40,
        "kb" => 1_000,
        "mb" => 1_000_000,
        "gb" => 1_000_000_000,
        "tb" => 1_000_000_000_000,
        _ => {
            return Err(SizeError::UnknownUnit {
                text: text.to_string(),
                unit,
            })
        }
    };
    let bytes = (number * factor as f64).round();
    if !bytes.is_finite() || bytes < 1.0 || bytes >= u64::MAX as f64 {
        return Err(SizeError::OutOfRange {
            text: text.to_string(),
        });
    }
    // In range: checked just above.
    Ok(bytes as u64)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn negative_times() {
        assert_eq!(
            system_time(-1_500_000_000),
            UNIX_EPOCH - Duration::from_millis(1500)
        );
        assert_eq!(system_time(5), UNIX_EPOCH + Duration::from_nanos(5));
    }

    #[test]
    fn utc_seconds_to_the_second() {
        assert_eq!(utc_seconds(1_767_323_045_678), "2026-01-02T03:04:05Z");
        assert_eq!(utc_seconds(-5), "1970-01-01T00:00:00Z");
    }

    #[test]
    fn sizes_in_both_unit_families() {
        assert_eq!(parse_size("512k").unwrap(), 512 << 10);
        assert_eq!(parse_size("3MB").unwrap(), 3_000_000);
        assert_eq!(parse_size("1b").unwrap(), 1);
        assert_eq!(parse_size("0.5KiB").unwrap(), 512);
    }

    #[test]
    fn each_rejection_says_what_is_wrong_and_quotes_the_text() {
        let cases = [
            ("GiB", "is not a size"),
            ("10 parsecs", "unknown unit \"parsecs\""),
            ("0", "out of range"),
            ("1e30TB", "unknown unit"),
        ];
        for (text, says) in cases {
            let err = parse_size(text).unwrap_err().to_string();
            assert!(err.contains(says), "{text:?}: {err}");
            assert!(err.contains(&format!("{text:?}")), "{text:?}: {err}");
            assert!(err.contains("examples: 500MiB"), "{text:?}: {err}");
        }
    }
}
