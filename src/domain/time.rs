//! The ledger's time: [`UnixMs`], milliseconds since the Unix epoch, as the
//! engine stamps every logged event, the rule that makes a stamp
//! ([`UnixMs::stamp`]), and its RFC 3339 text.
//!
//! The engine reads its injected clock and stamps; the domain only ever
//! receives a time as a parameter, so replaying a log applies exactly the
//! times the live engine applied.
//!
//! `0` is [`UnixMs::UNKNOWN`]: the time of an event logged before on-disk
//! format v4, which carried none. The engine never stamps it (a clock
//! reading the epoch itself, or before it, stamps 1 ms), so "unknown" is
//! never mistaken for a real time. Times stop at [`UnixMs::MAX`], the last
//! millisecond RFC 3339 can write (year 9999).
//!
//! [`UnixMs::parse_rfc3339`] reads the text back (strictly; see its docs
//! for what it refuses and how it treats digits past the millisecond).

use std::fmt;

use serde::{Deserialize, Serialize};

/// Milliseconds since 1970-01-01T00:00:00Z (UTC, leap seconds not counted,
/// as Unix time). Encoded as a plain `u64`.
#[derive(
    Clone, Copy, Debug, Default, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize,
)]
#[serde(transparent)]
pub struct UnixMs(u64);

impl UnixMs {
    /// No time known: the event was logged before times were (format v4).
    pub const UNKNOWN: UnixMs = UnixMs(0);
    /// 9999-12-31T23:59:59.999Z: the last time RFC 3339's four-digit year
    /// can write; later clock readings are stamped as this.
    pub const MAX: UnixMs = UnixMs(253_402_300_799_999);

    /// `ms` as a time, held at most [`MAX`](Self::MAX).
    pub const fn from_millis(ms: u64) -> Self {
        if ms > Self::MAX.0 {
            Self::MAX
        } else {
            Self(ms)
        }
    }

    pub const fn as_millis(self) -> u64 {
        self.0
    }

    /// `None` for [`UNKNOWN`](Self::UNKNOWN).
    pub fn known(self) -> Option<UnixMs> {
        (self != Self::UNKNOWN).then_some(self)
    }

    /// The stamp that follows `last` when the clock reads `clock_ms`: the
    /// clock's time, but never before `last` (a wall clock stepped back
    /// must not make stamps go back), never [`UNKNOWN`](Self::UNKNOWN) and
    /// never past [`MAX`](Self::MAX).
    pub fn stamp(last: UnixMs, clock_ms: u64) -> UnixMs {
        Self::from_millis(clock_ms.max(1)).max(last)
    }

    /// The RFC 3339 text of this time in UTC with milliseconds, e.g.
    /// `2026-11-29T20:39:57.123Z` (also what `Display` writes).
    pub fn rfc3339(self) -> String {
        self.to_string()
    }

    /// Reads RFC 3339 text (also what `str::parse` does): `YYYY-MM-DDTHH:MM:SS[.fraction](Z|±HH:MM)`
    /// (`T` and `Z` may be lower case, as RFC 3339 allows), a real calendar
    /// date, hours 00-23, minutes and seconds 00-59 (a leap second `60`
    /// is refused: Unix time does not count them), an offset of at most
    /// ±23:59, which is applied. The fraction has 1 to 9 digits; digits
    /// past the third are dropped, so a time is the millisecond it falls
    /// in (`.1239` is `.123`), which is how it was stamped. The instant
    /// must lie from the epoch to [`MAX`](Self::MAX). Round-trips with
    /// `Display`.
    pub fn parse_rfc3339(text: &str) -> Result<UnixMs, TimeTextError> {
        let problem = |problem| TimeTextError::new(text, problem);
        let b = text.as_bytes();
        if b.len() > RFC3339_LEN_MAX {
            return Err(problem("it is longer than any RFC 3339 time"));
        }
        let (date, clock, rest) = split_date_time(b).ok_or(problem(SHAPE))?;
        let days = days_of_date(date).ok_or(problem("there is no such date"))?;
        let seconds_of_day = seconds_of_day(clock).ok_or(problem(
            "hours must be 00-23, minutes and seconds 00-59 (no leap second)",
        ))?;
        let (milli, offset) = split_fraction(rest).ok_or(problem(SHAPE))?;
        let offset_s = offset_seconds(offset).ok_or(problem(
            "the offset must be Z or ±HH:MM with hours 00-23 and minutes 00-59",
        ))?;
        let local_ms = (days * 86_400 + seconds_of_day) * 1_000 + milli;
        let utc_ms = local_ms - offset_s * 1_000;
        u64::try_from(utc_ms)
            .ok()
            .filter(|&ms| ms <= Self::MAX.0)
            .map(UnixMs)
            .ok_or(problem("it is before 1970-01-01T00:00:00Z or after 9999"))
    }
}

/// Why text is not an RFC 3339 time: the text (cut to 64 characters) and
/// what is wrong with it.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
#[error("time {shown:?} is not an RFC 3339 time such as 2026-11-29T20:39:57.123Z: {problem}")]
pub struct TimeTextError {
    pub shown: String,
    pub problem: &'static str,
}

impl TimeTextError {
    fn new(text: &str, problem: &'static str) -> Self {
        Self {
            shown: text.chars().take(64).collect(),
            problem,
        }
    }
}

const SHAPE: &str = "expected YYYY-MM-DDTHH:MM:SS, an optional fraction, then Z or ±HH:MM";

/// Longer than this is not a time: 19 for the date and clock, 10 for the
/// fraction, 6 for the offset.
const RFC3339_LEN_MAX: usize = 35;

/// `(date, clock, rest)`: `YYYY-MM-DD`, `HH:MM:SS` and what follows.
fn split_date_time(b: &[u8]) -> Option<(&[u8], &[u8], &[u8])> {
    let (date, rest) = b.split_at_checked(10)?;
    let (&t, rest) = rest.split_first()?;
    let (clock, rest) = rest.split_at_checked(8)?;
    let shaped = |s: &[u8], seps: &[(usize, u8)]| {
        s.iter()
            .enumerate()
            .all(|(i, c)| match seps.iter().find(|(at, _)| *at == i) {
                Some((_, sep)) => c == sep,
                None => c.is_ascii_digit(),
            })
    };
    (matches!(t, b'T' | b't')
        && shaped(date, &[(4, b'-'), (7, b'-')])
        && shaped(clock, &[(2, b':'), (5, b':')]))
    .then_some((date, clock, rest))
}

/// The number written by ASCII digits (checked by the caller).
fn number(digits: &[u8]) -> i64 {
    digits.iter().fold(0, |n, d| n * 10 + i64::from(d - b'0'))
}

/// Days from the epoch to `YYYY-MM-DD`, if that date exists.
fn days_of_date(date: &[u8]) -> Option<i64> {
    let (year, month, day) = (number(&date[..4]), number(&date[5..7]), number(&date[8..]));
    let leap = year % 4 == 0 && (year % 100 != 0 || year % 400 == 0);
    let month_len = match month {
        2 if leap => 29,
        2 => 28,
        4 | 6 | 9 | 11 => 30,
        1..=12 => 31,
        _ => return None,
    };
    (1..=month_len)
        .contains(&day)
        .then(|| days_from_civil(year, month, day))
}

/// `HH:MM:SS` in seconds, if each part is in range.
fn seconds_of_day(clock: &[u8]) -> Option<i64> {
    let (h, m, s) = (
        number(&clock[..2]),
        number(&clock[3..5]),
        number(&clock[6..]),
    );
    (h < 24 && m < 60 && s < 60).then_some(h * 3_600 + m * 60 + s)
}

/// `(milliseconds, offset)` from `[.fraction]` and what follows it.
fn split_fraction(rest: &[u8]) -> Option<(i64, &[u8])> {
    let Some(fraction) = rest.strip_prefix(b".") else {
        return Some((0, rest));
    };
    let digits = fraction.iter().take_while(|c| c.is_ascii_digit()).count();
    if !(1..=9).contains(&digits) {
        return None;
    }
    let milli = fraction[..digits]
        .iter()
        .chain(b"00")
        .take(3)
        .fold(0, |n, d| n * 10 + i64::from(d - b'0'));
    Some((milli, &fraction[digits..]))
}

/// The offset east of UTC in seconds: `Z` or `±HH:MM`.
fn offset_seconds(offset: &[u8]) -> Option<i64> {
    match offset {
        b"Z" | b"z" => Some(0),
        [sign @ (b'+' | b'-'), h1, h2, b':', m1, m2]
            if [h1, h2, m1, m2].iter().all(|c| c.is_ascii_digit()) =>
        {
            let (h, m) = (number(&[*h1, *h2]), number(&[*m1, *m2]));
            let seconds = (h < 24 && m < 60).then_some(h * 3_600 + m * 60)?;
            Some(if *sign == b'-' { -seconds } else { seconds })
        }
        _ => None,
    }
}

/// Days from 1970-01-01 to a proleptic Gregorian date (Howard Hinnant's
/// `days_from_civil`, the inverse of [`civil_from_days`]).
fn days_from_civil(year: i64, month: i64, day: i64) -> i64 {
    let y = if month <= 2 { year - 1 } else { year };
    let era = y.div_euclid(400);
    let year_of_era = y - era * 400;
    let shifted_month = (month + 9) % 12; // 0 = March
    let day_of_year = (153 * shifted_month + 2) / 5 + day - 1;
    let day_of_era = year_of_era * 365 + year_of_era / 4 - year_of_era / 100 + day_of_year;
    era * 146_097 + day_of_era - 719_468
}

impl std::str::FromStr for UnixMs {
    type Err = TimeTextError;
    fn from_str(text: &str) -> Result<Self, Self::Err> {
        Self::parse_rfc3339(text)
    }
}

impl fmt::Display for UnixMs {
    /// RFC 3339, UTC, always three fractional digits.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let ms = self.0.min(Self::MAX.0);
        let (days, ms_of_day) = (ms / 86_400_000, ms % 86_400_000);
        let (year, month, day) = civil_from_days(days);
        let (hour, minute) = (ms_of_day / 3_600_000, ms_of_day / 60_000 % 60);
        let (second, milli) = (ms_of_day / 1_000 % 60, ms_of_day % 1_000);
        write!(
            f,
            "{year:04}-{month:02}-{day:02}T{hour:02}:{minute:02}:{second:02}.{milli:03}Z"
        )
    }
}

/// The proleptic Gregorian date `days` after 1970-01-01 (Howard Hinnant's
/// `civil_from_days`, for days on or after the epoch): eras of 400 years
/// (146,097 days) starting on March 1st, so the leap day is an era-year's
/// last.
fn civil_from_days(days: u64) -> (u64, u64, u64) {
    // Shift the epoch to 0000-03-01, an era's first day.
    let z = days + 719_468;
    let era = z / 146_097;
    let day_of_era = z % 146_097;
    let year_of_era =
        (day_of_era - day_of_era / 1_460 + day_of_era / 36_524 - day_of_era / 146_096) / 365;
    let day_of_year = day_of_era - (365 * year_of_era + year_of_era / 4 - year_of_era / 100);
    let shifted_month = (5 * day_of_year + 2) / 153; // 0 = March
    let day = day_of_year - (153 * shifted_month + 2) / 5 + 1;
    let month = if shifted_month < 10 {
        shifted_month + 3
    } else {
        shifted_month - 9
    };
    let year = year_of_era + era * 400 + u64::from(month <= 2);
    (year, month, day)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn text(ms: u64) -> String {
        UnixMs::from_millis(ms).rfc3339()
    }

    #[test]
    fn known_instants_are_written_as_rfc3339_with_milliseconds() {
        assert_eq!(text(0), "1970-01-01T00:00:00.000Z");
        assert_eq!(text(1), "1970-01-01T00:00:00.001Z");
        assert_eq!(text(86_399_999), "1970-01-01T23:59:59.999Z");
        // The manual clock's start, and the brief's example.
        assert_eq!(text(1_767_225_600_000), "2026-01-01T00:00:00.000Z");
        assert_eq!(text(1_795_984_797_123), "2026-11-29T20:39:57.123Z");
        // Leap days: a 400-year leap, a 4-year leap, no leap in 2100.
        assert_eq!(text(951_782_400_000), "2000-02-29T00:00:00.000Z");
        assert_eq!(text(1_709_164_800_000), "2024-02-29T00:00:00.000Z");
        assert_eq!(text(4_107_542_400_000), "2100-03-01T00:00:00.000Z");
        assert_eq!(text(253_402_300_799_999), "9999-12-31T23:59:59.999Z");
    }

    #[test]
    fn every_day_follows_the_one_before() {
        // Walks 1970..2500 day by day: the date advances by exactly one
        // calendar day each time, with February's length by the leap rule.
        let leap =
            |y: u64| (y.is_multiple_of(4) && !y.is_multiple_of(100)) || y.is_multiple_of(400);
        let month_len = |y, m| match m {
            2 if leap(y) => 29,
            2 => 28,
            4 | 6 | 9 | 11 => 30,
            _ => 31,
        };
        let mut expected = (1970, 1, 1);
        for days in 0..(530 * 366) {
            assert_eq!(civil_from_days(days), expected, "day {days}");
            let (y, m, d) = expected;
            expected = if d < month_len(y, m) {
                (y, m, d + 1)
            } else if m < 12 {
                (y, m + 1, 1)
            } else {
                (y + 1, 1, 1)
            };
        }
    }

    #[test]
    fn times_past_year_9999_are_held_at_the_last_writable_millisecond() {
        assert_eq!(UnixMs::from_millis(u64::MAX), UnixMs::MAX);
        assert_eq!(text(u64::MAX), "9999-12-31T23:59:59.999Z");
        // A decoded value past the maximum (a hand-made log) still writes.
        assert_eq!(UnixMs(u64::MAX).to_string(), "9999-12-31T23:59:59.999Z");
    }

    fn parse(text: &str) -> Result<u64, &'static str> {
        UnixMs::parse_rfc3339(text)
            .map(UnixMs::as_millis)
            .map_err(|e| e.problem)
    }

    #[test]
    fn rfc3339_text_reads_back_to_the_millisecond_it_names() {
        assert_eq!(parse("1970-01-01T00:00:00Z"), Ok(0));
        assert_eq!(parse("1970-01-01T00:00:00.001Z"), Ok(1));
        assert_eq!(parse("2026-11-29T20:39:57.123Z"), Ok(1_795_984_797_123));
        assert_eq!(parse("2026-11-29t20:39:57.123z"), Ok(1_795_984_797_123));
        assert_eq!(parse("9999-12-31T23:59:59.999Z"), Ok(UnixMs::MAX.0));
        // Fractions: shorter ones are tenths and hundredths; digits past
        // the millisecond are dropped (the millisecond it falls in).
        assert_eq!(parse("1970-01-01T00:00:01.5Z"), Ok(1_500));
        assert_eq!(parse("1970-01-01T00:00:01.05Z"), Ok(1_050));
        assert_eq!(parse("1970-01-01T00:00:01.123999999Z"), Ok(1_123));
    }

    #[test]
    fn leap_days_exist_only_in_leap_years() {
        assert_eq!(parse("2000-02-29T00:00:00Z"), Ok(951_782_400_000));
        assert_eq!(parse("2024-02-29T00:00:00Z"), Ok(1_709_164_800_000));
        assert_eq!(parse("2100-03-01T00:00:00Z"), Ok(4_107_542_400_000));
        for no_such_day in [
            "2100-02-29T00:00:00Z",
            "2023-02-29T00:00:00Z",
            "2024-02-30T00:00:00Z",
            "2024-04-31T00:00:00Z",
            "2024-13-01T00:00:00Z",
            "2024-00-10T00:00:00Z",
            "2024-01-00T00:00:00Z",
        ] {
            assert_eq!(
                parse(no_such_day),
                Err("there is no such date"),
                "{no_such_day}"
            );
        }
    }

    #[test]
    fn offsets_are_applied() {
        let utc = parse("2026-11-29T20:39:57.123Z");
        assert_eq!(parse("2026-11-29T22:39:57.123+02:00"), utc);
        assert_eq!(parse("2026-11-29T15:09:57.123-05:30"), utc);
        assert_eq!(
            parse("2026-11-30T20:38:57.123+23:59"),
            parse("2026-11-29T20:39:57.123Z")
        );
        assert_eq!(parse("2026-11-29T20:39:57.123-00:00"), utc);
        // Across a day, a month and a year.
        assert_eq!(parse("1970-01-01T01:00:00+01:00"), Ok(0));
        assert_eq!(parse("1969-12-31T23:00:00-01:00"), Ok(0));
        assert_eq!(
            parse("2025-01-01T00:30:00+01:00"),
            parse("2024-12-31T23:30:00Z")
        );
    }

    #[test]
    fn every_millisecond_written_reads_back() {
        let mut ms = 0u64;
        while ms <= UnixMs::MAX.0 {
            let at = UnixMs(ms);
            assert_eq!(UnixMs::parse_rfc3339(&at.to_string()), Ok(at), "{at}");
            // About 143 days and an odd number of milliseconds a step:
            // every month, day of month, and many hours and milliseconds.
            ms += 12_345_678_901;
        }
        assert_eq!(parse(&UnixMs::MAX.to_string()), Ok(UnixMs::MAX.0));
    }

    #[test]
    fn garbage_and_times_out_of_range_are_refused() {
        for garbage in [
            "",
            "now",
            "2026-11-29",
            "2026-11-29T20:39:57",
            "2026-11-29 20:39:57Z",
            "2026-11-29T20:39Z",
            "2026/11/29T20:39:57Z",
            "02026-11-29T20:39:57Z",
            "2026-1-29T20:39:57Z",
            "2026-11-29T20:39:57.Z",
            "2026-11-29T20:39:57.1234567890Z",
            "2026-11-29T20:39:57+0200",
            "2026-11-29T20:39:57+02",
            "2026-11-29T20:39:57Z ",
            " 2026-11-29T20:39:57Z",
            "2026-11-29T20:39:57ZZ",
            "+2026-11-29T20:39:57Z",
            "2026-11-29T20:39:5éZ",
            "１９７０-01-01T00:00:00Z",
        ] {
            assert!(UnixMs::parse_rfc3339(garbage).is_err(), "{garbage:?}");
        }
        assert!(parse("2026-11-29T24:00:00Z").is_err());
        assert!(parse("2026-11-29T23:60:00Z").is_err());
        assert!(parse("2016-12-31T23:59:60Z").is_err(), "no leap second");
        assert!(parse("2026-11-29T20:39:57+24:00").is_err());
        assert!(parse("2026-11-29T20:39:57+01:60").is_err());
        let range = "it is before 1970-01-01T00:00:00Z or after 9999";
        assert_eq!(parse("1969-12-31T23:59:59.999Z"), Err(range));
        assert_eq!(parse("1970-01-01T00:00:00+00:01"), Err(range));
        assert_eq!(parse("9999-12-31T23:59:59.999-00:01"), Err(range));
        assert_eq!(parse("0000-01-01T00:00:00Z"), Err(range));
        let long = UnixMs::parse_rfc3339(&"9".repeat(10_000)).unwrap_err();
        assert!(long.shown.len() <= 64 && long.to_string().contains("RFC 3339"));
    }

    #[test]
    fn a_stamp_never_goes_back_is_never_unknown_and_never_past_the_maximum() {
        let at = UnixMs::from_millis;
        assert_eq!(UnixMs::stamp(UnixMs::UNKNOWN, 5_000), at(5_000));
        assert_eq!(
            UnixMs::stamp(at(5_000), 4_000),
            at(5_000),
            "clock stepped back"
        );
        assert_eq!(UnixMs::stamp(at(5_000), 6_000), at(6_000));
        assert_eq!(UnixMs::stamp(UnixMs::UNKNOWN, 0), at(1), "the epoch itself");
        assert_eq!(UnixMs::stamp(at(9), u64::MAX), UnixMs::MAX);
        assert_eq!(UnixMs::UNKNOWN.known(), None);
        assert_eq!(at(1).known(), Some(at(1)));
    }
}
