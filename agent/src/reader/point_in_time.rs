//! "A date and time, or a duration ago", as `ferry restore --at` and the
//! launcher's "Date and time" take it: `2026-11-20 14:00` (UTC), a date,
//! RFC 3339, or `3h` / `2days` before now.

use std::time::{Duration, SystemTime, UNIX_EPOCH};

/// The text is neither a time nor a duration.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{text:?}: give a time like \"2026-11-20 14:00\" (UTC) or a duration ago like 3h")]
pub struct PointInTimeError {
    /// The text as given.
    pub text: String,
}

/// Parses `text` as a date and time (UTC; a date alone is its midnight) or
/// a duration before `now`; milliseconds since the Unix epoch (a time
/// before the epoch is 0).
pub fn parse_point_in_time(text: &str, now: SystemTime) -> Result<i64, PointInTimeError> {
    let t = text.trim();
    let candidates = [t.to_string(), format!("{t}:00"), format!("{t} 00:00:00")];
    let parsed = candidates
        .iter()
        .find_map(|c| humantime::parse_rfc3339_weak(c).ok())
        .or_else(|| {
            humantime::parse_duration(t)
                .ok()
                .and_then(|d| now.checked_sub(d))
        });
    let Some(at) = parsed else {
        return Err(PointInTimeError {
            text: text.to_string(),
        });
    };
    let ms = at
        .duration_since(UNIX_EPOCH)
        .unwrap_or(Duration::ZERO)
        .as_millis();
    Ok(i64::try_from(ms).unwrap_or(i64::MAX))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn now() -> SystemTime {
        UNIX_EPOCH + Duration::from_secs(2_000_000_000)
    }

    #[test]
    fn dates_times_and_rfc3339_are_utc() {
        let t = parse_point_in_time("2026-11-20 14:00", now()).unwrap();
        assert_eq!(
            t,
            parse_point_in_time("2026-11-20T14:00:00Z", now()).unwrap()
        );
        assert_eq!(t % 60_000, 0);
        assert_eq!(
            parse_point_in_time("2026-11-20", now()).unwrap() + 14 * 3_600_000,
            t
        );
        assert_eq!(
            parse_point_in_time("  2026-11-20 14:00 ", now()).unwrap(),
            t
        );
    }

    #[test]
    fn durations_are_before_now() {
        assert_eq!(
            parse_point_in_time("1h", now()).unwrap(),
            2_000_000_000_000 - 3_600_000
        );
        assert_eq!(
            parse_point_in_time("2days", now()).unwrap(),
            2_000_000_000_000 - 2 * 86_400_000
        );
    }

    #[test]
    fn anything_else_is_refused_with_the_text_and_an_example() {
        let e = parse_point_in_time("yesterday-ish", now()).unwrap_err();
        assert_eq!(e.text, "yesterday-ish");
        assert!(e.to_string().starts_with("\"yesterday-ish\": "), "{e}");
        assert!(e.to_string().contains("2026-11-20 14:00"), "{e}");
    }
}
