//! [`RateSchedule`]: the text of `--limit-rate`, parsed. A default rate and
//! daily windows in local time, e.g. `08:00-18:00=2MB/s,10MB/s`.

use std::fmt;
use std::str::FromStr;

/// Minutes in a day; a minute of day is in `0..MINUTES_PER_DAY`.
pub const MINUTES_PER_DAY: u16 = 24 * 60;

/// Examples shown with every parse error.
const EXAMPLES: &str = "examples: 10MB/s, 512KiB/s, 08:00-18:00=2MB/s,10MB/s, 22:00-06:00=off";

/// Why a `--limit-rate` text was rejected. Each variant names the piece of the
/// text that is wrong.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ScheduleError {
    /// Nothing but commas and spaces.
    #[error("the rate schedule is empty: give a rate or daily windows ({EXAMPLES})")]
    Empty,
    /// One piece of the text is malformed.
    #[error("{piece:?}: {reason} ({EXAMPLES})")]
    Bad {
        /// The rule, window or rate that is wrong, as written.
        piece: String,
        /// What is wrong with it.
        reason: String,
    },
    /// More than one rule without a window.
    #[error("{second:?}: a second default rate (the first is {first:?}); give at most one rate without a time window ({EXAMPLES})")]
    TwoDefaults {
        /// The first default rate, as written.
        first: String,
        /// The second one, as written.
        second: String,
    },
}

fn bad(piece: &str, reason: impl Into<String>) -> ScheduleError {
    ScheduleError::Bad {
        piece: piece.to_string(),
        reason: reason.into(),
    }
}

/// A rate in bytes per second; `None` is no limit.
pub type Rate = Option<u64>;

/// A daily window in local time, `[start, end)` in minutes of the day; it
/// wraps midnight when `end <= start` (`22:00-06:00`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Window {
    /// First minute of the day inside the window.
    pub start: u16,
    /// First minute of the day after the window (1440 is midnight).
    pub end: u16,
    /// The rate inside the window.
    pub rate: Rate,
}

impl Window {
    /// True if `minute` (of the day) lies in this window.
    pub fn contains(&self, minute: u16) -> bool {
        if self.start < self.end {
            (self.start..self.end).contains(&minute)
        } else {
            minute >= self.start || minute < self.end
        }
    }
}

/// Bandwidth limits by time of day: the first window that holds the local
/// time gives the rate, else the default, else no limit.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct RateSchedule {
    /// Windows in the order written; the first match wins.
    pub windows: Vec<Window>,
    /// The rate outside every window; `None` (or unset): no limit.
    pub default: Rate,
}

impl RateSchedule {
    /// The same rate all day.
    pub fn constant(rate: Rate) -> RateSchedule {
        RateSchedule {
            windows: Vec::new(),
            default: rate,
        }
    }

    /// The rate at `minute` of the local day (taken modulo a day).
    pub fn rate_at(&self, minute: u16) -> Rate {
        let minute = minute % MINUTES_PER_DAY;
        match self.windows.iter().find(|w| w.contains(minute)) {
            Some(window) => window.rate,
            None => self.default,
        }
    }

    /// The rate now, by this machine's local time (`/etc/localtime` or `TZ`).
    pub fn rate_now(&self) -> Rate {
        self.rate_at(local_minute_of_day())
    }

    /// True if no rule limits anything: the limiter never waits.
    pub fn is_unlimited(&self) -> bool {
        self.default.is_none() && self.windows.iter().all(|w| w.rate.is_none())
    }
}

/// The current minute of the day in this machine's local time zone (UTC if
/// the zone cannot be read).
pub fn local_minute_of_day() -> u16 {
    let now = jiff::Zoned::now();
    // hour() is 0..=23 and minute() 0..=59: both fit and are non-negative.
    (now.hour().max(0) as u16) * 60 + now.minute().max(0) as u16
}

impl FromStr for RateSchedule {
    type Err = ScheduleError;

    fn from_str(text: &str) -> Result<Self, Self::Err> {
        let mut schedule = RateSchedule::default();
        let mut default_text: Option<&str> = None;
        for rule in text.split(',').map(str::trim).filter(|r| !r.is_empty()) {
            match rule.split_once('=') {
                Some((window, rate)) => {
                    let (start, end) = parse_window(window.trim())?;
                    let rate = parse_rate(rate.trim())?;
                    schedule.windows.push(Window { start, end, rate });
                }
                None => {
                    if let Some(first) = default_text {
                        return Err(ScheduleError::TwoDefaults {
                            first: first.to_string(),
                            second: rule.to_string(),
                        });
                    }
                    schedule.default = parse_rate(rule)?;
                    default_text = Some(rule);
                }
            }
        }
        if schedule.windows.is_empty() && default_text.is_none() {
            return Err(ScheduleError::Empty);
        }
        Ok(schedule)
    }
}

/// `HH:MM-HH:MM` into minutes of the day.
fn parse_window(text: &str) -> Result<(u16, u16), ScheduleError> {
    let Some((start, end)) = text.split_once('-') else {
        return Err(bad(text, "a window is HH:MM-HH:MM"));
    };
    let start = parse_time(text, start.trim())?;
    let end = parse_time(text, end.trim())?;
    if start == MINUTES_PER_DAY {
        return Err(bad(text, "a window cannot start at 24:00; use 00:00"));
    }
    if start == end {
        return Err(bad(text, "the window is empty: start and end are the same"));
    }
    Ok((start, end))
}

/// `HH:MM` (00:00 to 24:00) into minutes of the day; `window` is named in
/// errors.
fn parse_time(window: &str, text: &str) -> Result<u16, ScheduleError> {
    let Some((hour, minute)) = text.split_once(':') else {
        return Err(bad(
            window,
            format!("{text:?} is not a time of day (HH:MM)"),
        ));
    };
    let number = |part: &str| -> Option<u16> {
        (!part.is_empty() && part.len() <= 2 && part.bytes().all(|b| b.is_ascii_digit()))
            .then(|| part.parse().ok())
            .flatten()
    };
    let Some(hour) = number(hour) else {
        return Err(bad(
            window,
            format!("{text:?} is not a time of day (HH:MM)"),
        ));
    };
    let Some(minute) = number(minute) else {
        return Err(bad(
            window,
            format!("{text:?} is not a time of day (HH:MM)"),
        ));
    };
    if hour > 24 {
        return Err(bad(window, "hour out of range (00 to 23)"));
    }
    if minute > 59 {
        return Err(bad(window, "minute out of range (00 to 59)"));
    }
    if hour == 24 && minute != 0 {
        return Err(bad(window, "hour out of range (24:00 is the latest time)"));
    }
    Ok(hour * 60 + minute)
}

/// A rate: `0`, `off`, `unlimited` (no limit), or a size as
/// [`crate::units::parse_size`] reads it with an optional `/s`.
pub fn parse_rate(text: &str) -> Result<Rate, ScheduleError> {
    let t = text.trim();
    let lower = t.to_ascii_lowercase();
    if matches!(lower.as_str(), "0" | "off" | "unlimited" | "none") {
        return Ok(None);
    }
    let size = lower.strip_suffix("/s").unwrap_or(&lower);
    if size.trim().is_empty() {
        return Err(bad(text, "a rate is a size per second, such as 10MB/s"));
    }
    crate::units::parse_size(size)
        .map(Some)
        .map_err(|e| bad(text, format!("not a rate: {e}")))
}

/// Writes a rate the way [`parse_rate`] reads it, in the largest unit that
/// divides it exactly.
pub fn format_rate(rate: Rate) -> String {
    let Some(bytes) = rate else {
        return "off".to_string();
    };
    const UNITS: [(u64, &str); 8] = [
        (1 << 40, "TiB"),
        (1_000_000_000_000, "TB"),
        (1 << 30, "GiB"),
        (1_000_000_000, "GB"),
        (1 << 20, "MiB"),
        (1_000_000, "MB"),
        (1 << 10, "KiB"),
        (1_000, "kB"),
    ];
    for (factor, unit) in UNITS {
        if bytes >= factor && bytes % factor == 0 {
            return format!("{}{unit}/s", bytes / factor);
        }
    }
    format!("{bytes}B/s")
}

fn format_time(f: &mut fmt::Formatter<'_>, minute: u16) -> fmt::Result {
    write!(f, "{:02}:{:02}", minute / 60, minute % 60)
}

impl fmt::Display for RateSchedule {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let mut first = true;
        for window in &self.windows {
            if !first {
                f.write_str(",")?;
            }
            first = false;
            format_time(f, window.start)?;
            f.write_str("-")?;
            format_time(f, window.end)?;
            write!(f, "={}", format_rate(window.rate))?;
        }
        if !first && self.default.is_none() {
            return Ok(());
        }
        if !first {
            f.write_str(",")?;
        }
        f.write_str(&format_rate(self.default))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn at(h: u16, m: u16) -> u16 {
        h * 60 + m
    }

    fn parse(text: &str) -> RateSchedule {
        match text.parse() {
            Ok(s) => s,
            Err(e) => panic!("{text:?} did not parse: {e}"),
        }
    }

    #[test]
    fn rates_parse_with_units_and_off() {
        assert_eq!(parse_rate("10MB/s"), Ok(Some(10_000_000)));
        assert_eq!(parse_rate("10MiB/s"), Ok(Some(10 << 20)));
        assert_eq!(parse_rate("512k"), Ok(Some(512 << 10)));
        assert_eq!(parse_rate("1.5 MB/S"), Ok(Some(1_500_000)));
        assert_eq!(parse_rate("4096"), Ok(Some(4096)));
        for off in ["0", "off", "OFF", "unlimited", "none"] {
            assert_eq!(parse_rate(off), Ok(None), "{off}");
        }
        for wrong in ["", "/s", "fast", "10 parsecs/s", "-1MB/s", "10MB/h"] {
            assert!(parse_rate(wrong).is_err(), "{wrong:?} parsed");
        }
    }

    #[test]
    fn a_plain_rate_holds_all_day() {
        let s = parse("10MB/s");
        assert_eq!(s, RateSchedule::constant(Some(10_000_000)));
        for minute in [0, at(12, 0), MINUTES_PER_DAY - 1] {
            assert_eq!(s.rate_at(minute), Some(10_000_000));
        }
        assert!(!s.is_unlimited());
        assert!(parse("off").is_unlimited());
    }

    #[test]
    fn windows_then_default_then_unlimited() {
        let s = parse("08:00-18:00=2MB/s, 10MB/s");
        assert_eq!(s.rate_at(at(7, 59)), Some(10_000_000));
        assert_eq!(s.rate_at(at(8, 0)), Some(2_000_000));
        assert_eq!(s.rate_at(at(17, 59)), Some(2_000_000));
        assert_eq!(s.rate_at(at(18, 0)), Some(10_000_000));
        // Without a default, outside every window there is no limit.
        let s = parse("08:00-18:00=2MB/s");
        assert_eq!(s.rate_at(at(12, 0)), Some(2_000_000));
        assert_eq!(s.rate_at(at(20, 0)), None);
        assert!(!s.is_unlimited());
    }

    #[test]
    fn windows_wrap_midnight() {
        let s = parse("22:00-06:00=50MB/s,1MB/s");
        assert_eq!(s.rate_at(at(22, 0)), Some(50_000_000));
        assert_eq!(s.rate_at(at(23, 59)), Some(50_000_000));
        assert_eq!(s.rate_at(0), Some(50_000_000));
        assert_eq!(s.rate_at(at(5, 59)), Some(50_000_000));
        assert_eq!(s.rate_at(at(6, 0)), Some(1_000_000));
        assert_eq!(s.rate_at(at(21, 59)), Some(1_000_000));
        // Minutes past the day wrap too.
        assert_eq!(s.rate_at(MINUTES_PER_DAY + at(23, 0)), Some(50_000_000));
        // 24:00 closes a window at midnight.
        let s = parse("18:00-24:00=off,3MB/s");
        assert_eq!(s.rate_at(at(23, 59)), None);
        assert_eq!(s.rate_at(0), Some(3_000_000));
        let s = parse("00:00-24:00=1MB/s");
        assert_eq!(s.rate_at(0), Some(1_000_000));
        assert_eq!(s.rate_at(MINUTES_PER_DAY - 1), Some(1_000_000));
    }

    #[test]
    fn the_first_matching_window_wins() {
        let s = parse("09:00-10:00=1MB/s,08:00-18:00=2MB/s,5MB/s");
        assert_eq!(s.rate_at(at(9, 30)), Some(1_000_000));
        assert_eq!(s.rate_at(at(8, 30)), Some(2_000_000));
        assert_eq!(s.rate_at(at(10, 0)), Some(2_000_000));
        let s = parse("08:00-18:00=2MB/s,09:00-10:00=1MB/s");
        assert_eq!(s.rate_at(at(9, 30)), Some(2_000_000));
        // A window can lift the limit.
        let s = parse("12:00-13:00=off,1MB/s");
        assert_eq!(s.rate_at(at(12, 30)), None);
        assert_eq!(s.rate_at(at(13, 0)), Some(1_000_000));
    }

    #[test]
    fn bad_schedules_name_the_bad_piece() {
        let cases = [
            ("25:00-18:00=1MB/s", "\"25:00-18:00\": hour out of range"),
            ("08:60-18:00=1MB/s", "\"08:60-18:00\": minute out of range"),
            ("24:30-01:00=1MB/s", "\"24:30-01:00\": hour out of range"),
            (
                "24:00-01:00=1MB/s",
                "\"24:00-01:00\": a window cannot start",
            ),
            ("8-18=1MB/s", "\"8-18\": \"8\" is not a time of day"),
            ("08:00=1MB/s", "\"08:00\": a window is HH:MM-HH:MM"),
            ("08:00-08:00=1MB/s", "\"08:00-08:00\": the window is empty"),
            ("08:00-18:00=fast", "\"fast\": not a rate"),
            ("08:00-18:00=", "\"\": a rate is a size per second"),
            ("1MB/s,2MB/s", "\"2MB/s\": a second default rate"),
            ("lots", "\"lots\": not a rate"),
            ("", "empty"),
            (" , ", "empty"),
        ];
        for (text, expected) in cases {
            match text.parse::<RateSchedule>() {
                Ok(s) => panic!("{text:?} parsed as {s:?}"),
                Err(e) => {
                    let message = e.to_string();
                    assert!(message.contains(expected), "{text:?}: {message}");
                    assert!(message.contains("examples"), "{text:?}: {message}");
                }
            }
        }
    }

    #[test]
    fn display_round_trips() {
        for text in [
            "10MB/s",
            "off",
            "512KiB/s",
            "1500B/s",
            "08:00-18:00=2MB/s,10MB/s",
            "22:00-06:00=50MB/s",
            "09:00-10:00=off,08:00-18:00=3MiB/s,1GB/s",
            "18:00-24:00=1kB/s,off",
        ] {
            let s = parse(text);
            let shown = s.to_string();
            assert_eq!(parse(&shown), s, "{text:?} shown as {shown:?}");
        }
        assert_eq!(parse("10000000").to_string(), "10MB/s");
        assert_eq!(
            parse("08:00-18:00=2mb/s, 10 MB/s").to_string(),
            "08:00-18:00=2MB/s,10MB/s"
        );
        assert_eq!(parse("22:00-06:00=1MiB").to_string(), "22:00-06:00=1MiB/s");
    }

    #[test]
    fn local_time_is_a_minute_of_the_day() {
        assert!(local_minute_of_day() < MINUTES_PER_DAY);
    }
}
