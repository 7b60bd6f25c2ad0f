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
