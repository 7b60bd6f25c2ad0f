//! What an account withdrew recently, per currency: what the rolling
//! 24-hour and 30-day limits (`domain/policy.rs`) count.
//!
//! A withdrawal counts its amount from its request (at its `created_at`);
//! failing, cancelling or expiring it takes its amount back out, and
//! completing it for less takes out what was not paid. A return does not:
//! the money left, and came back by another way.
//!
//! Memory stays bounded by time, not by how many withdrawals there were:
//! the last day is kept exactly (one entry per distinct request time, so
//! the 24-hour window is exact to the millisecond), older requests in
//! one-minute buckets (so the 30-day window counts a request up to one
//! minute longer than 30 days: never less), and past 30 days nothing.
//! Entries move from the day to the buckets only when a request is applied,
//! at its logged time, so replay rebuilds exactly the same entries.
//!
//! A check costs what aged out of its window since the account's last
//! request, not how many requests the window holds: each part keeps its
//! total, so a check subtracts the (few) entries that no longer count —
//! an account withdrawing thousands of times a day is checked as fast as
//! one withdrawing once. Each part also keeps its first entry's time, so a
//! check in which nothing aged reads neither list.

use serde::{Deserialize, Serialize};

use crate::domain::money::{CurrencyCode, Units};
use crate::domain::policy::Window;
use crate::domain::time::UnixMs;

const MINUTE_MS: u64 = 60_000;

/// One account's recent withdrawals, per currency.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Usage {
    currencies: Vec<CurrencyUsage>,
}

#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(from = "StoredCurrencyUsage")]
struct CurrencyUsage {
    currency: CurrencyCode,
    /// Requests of the last day: (request time, amount still counted), by
    /// time, one entry per time.
    day: Vec<(UnixMs, Units)>,
    /// Older requests: (start of their minute, amount), by time.
    minutes: Vec<(UnixMs, Units)>,
    /// Requests at or before this moved to `minutes`.
    folded_to: UnixMs,
    /// The sums of `day`'s and of `minutes`' amounts, kept with them (not
    /// stored: rebuilt when read back).
    #[serde(skip)]
    day_total: Units,
    #[serde(skip)]
    minutes_total: Units,
    /// The times of `day`'s and of `minutes`' first entries and of `day`'s
    /// last, kept with them (not stored): a check asks only whether the
    /// oldest entry aged out, and a request only whether it shares the
    /// newest's time. Reading them here spares a cache miss on each list
    /// (most of what a limit check cost).
    #[serde(skip)]
    day_oldest: Option<UnixMs>,
    #[serde(skip)]
    minutes_oldest: Option<UnixMs>,
    #[serde(skip)]
    day_newest: Option<UnixMs>,
}

/// [`CurrencyUsage`] as snapshots keep it (format v7).
#[derive(Deserialize)]
struct StoredCurrencyUsage {
    currency: CurrencyCode,
    day: Vec<(UnixMs, Units)>,
    minutes: Vec<(UnixMs, Units)>,
    folded_to: UnixMs,
}

impl From<StoredCurrencyUsage> for CurrencyUsage {
    fn from(stored: StoredCurrencyUsage) -> Self {
        let mut usage = Self {
            day_total: total(&stored.day),
            minutes_total: total(&stored.minutes),
            currency: stored.currency,
            day: stored.day,
            minutes: stored.minutes,
            folded_to: stored.folded_to,
            day_oldest: None,
            minutes_oldest: None,
            day_newest: None,
        };
        usage.note_ends();
        usage
    }
}

impl Usage {
    pub fn is_empty(&self) -> bool {
        self.currencies.is_empty()
    }

    /// A withdrawal of `amount` in `currency` was requested at `at` (the
    /// request's logged time; requests of one account come in time order).
    pub fn add(&mut self, currency: CurrencyCode, at: UnixMs, amount: Units) {
        let usage = self.of_mut(currency);
        usage.fold(at);
        usage.day_total = usage.day_total.saturating_add(amount);
        match usage.day.last_mut() {
            Some((_, counted)) if usage.day_newest == Some(at) => {
                *counted = counted.saturating_add(amount)
            }
            _ => usage.day.push((at, amount)),
        }
        usage.day_oldest = usage.day_oldest.or(Some(at));
        usage.day_newest = Some(at);
    }

    /// The withdrawal of `currency` requested at `created_at` no longer
    /// counts `amount` of itself (failed, cancelled, expired, or paid
    /// less). Nothing happens if it aged past 30 days already.
    pub fn remove(&mut self, currency: CurrencyCode, created_at: UnixMs, amount: Units) {
        let Some(index) = self.currencies.iter().position(|u| u.currency == currency) else {
            return;
        };
        let usage = &mut self.currencies[index];
        let (entries, total, key) = if created_at <= usage.folded_to {
            (
                &mut usage.minutes,
                &mut usage.minutes_total,
                minute_of(created_at),
            )
        } else {
            (&mut usage.day, &mut usage.day_total, created_at)
        };
        if let Ok(found) = entries.binary_search_by_key(&key, |&(time, _)| time) {
            let counted = &mut entries[found].1;
            let left = counted.saturating_sub(amount).max(0);
            *total = total.saturating_sub(*counted - left);
            *counted = left;
            if *counted == 0 {
                entries.remove(found);
                usage.note_ends();
            }
        }
        if usage.day.is_empty() && usage.minutes.is_empty() {
            self.currencies.swap_remove(index);
        }
    }

    /// What withdrawals of `currency` requested within `window` before
    /// `at` still count.
    pub fn used(&self, currency: CurrencyCode, window: Window, at: UnixMs) -> Units {
        let Some(usage) = self.currencies.iter().find(|u| u.currency == currency) else {
            return 0;
        };
        let since = at.as_millis().saturating_sub(window.millis());
        let in_day = counted_since(&usage.day, usage.day_total, usage.day_oldest, |time| {
            time.as_millis() > since
        });
        if window == Window::Day {
            return in_day;
        }
        let in_minutes = counted_since(
            &usage.minutes,
            usage.minutes_total,
            usage.minutes_oldest,
            |start| start.as_millis() + MINUTE_MS > since,
        );
        in_day.saturating_add(in_minutes)
    }

    fn of_mut(&mut self, currency: CurrencyCode) -> &mut CurrencyUsage {
        let index = match self.currencies.iter().position(|u| u.currency == currency) {
            Some(index) => index,
            None => {
                self.currencies.push(CurrencyUsage {
                    currency,
                    day: Vec::new(),
                    minutes: Vec::new(),
                    folded_to: UnixMs::UNKNOWN,
                    day_total: 0,
                    minutes_total: 0,
                    day_oldest: None,
                    minutes_oldest: None,
                    day_newest: None,
                });
                self.currencies.len() - 1
            }
        };
        &mut self.currencies[index]
    }
}

impl CurrencyUsage {
    /// As of `at`: requests a day old or more go to their minute's bucket,
    /// buckets that ended 30 days ago or more go.
    fn fold(&mut self, at: UnixMs) {
        let day_start = at.as_millis().saturating_sub(Window::Day.millis());
        let aged = aged_prefix(&self.day, self.day_oldest, |time| {
            time.as_millis() <= day_start
        });
        for (time, amount) in self.day.drain(..aged) {
            self.day_total = self.day_total.saturating_sub(amount);
            self.minutes_total = self.minutes_total.saturating_add(amount);
            let minute = minute_of(time);
            match self.minutes.last_mut() {
                Some((start, counted)) if *start == minute => {
                    *counted = counted.saturating_add(amount)
                }
                _ => self.minutes.push((minute, amount)),
            }
        }
        if aged > 0 {
            // Before the month's check reads `minutes_oldest`: what moved
            // may have been the first of `minutes`.
            self.note_ends();
        }
        self.folded_to = self.folded_to.max(UnixMs::from_millis(day_start));
        let month_start = at.as_millis().saturating_sub(Window::Month.millis());
        let gone = aged_prefix(&self.minutes, self.minutes_oldest, |start| {
            start.as_millis() + MINUTE_MS <= month_start
        });
        for (_, amount) in self.minutes.drain(..gone) {
            self.minutes_total = self.minutes_total.saturating_sub(amount);
        }
        if gone > 0 {
            self.note_ends();
        }
    }

    /// Re-reads the kept ends from the lists, after a change that may have
    /// moved them other than by a request ([`Usage::add`] sets them
    /// itself, so the hot path never reads a list's ends).
    fn note_ends(&mut self) {
        self.day_oldest = self.day.first().map(|&(time, _)| time);
        self.minutes_oldest = self.minutes.first().map(|&(time, _)| time);
        self.day_newest = self.day.last().map(|&(time, _)| time);
    }
}

/// The sum of `entries`' amounts.
fn total(entries: &[(UnixMs, Units)]) -> Units {
    entries
        .iter()
        .fold(0, |sum: Units, &(_, amount)| sum.saturating_add(amount))
}

/// The sum of the amounts of `entries` (by time, summing to
/// `total_of_all`, the first at `oldest`) whose time `counts`. Those that
/// do not are a prefix (aged out of the window): none when the oldest
/// counts (mostly: the lists are not read then), else whichever side is
/// shorter is summed.
fn counted_since(
    entries: &[(UnixMs, Units)],
    total_of_all: Units,
    oldest: Option<UnixMs>,
    counts: impl Fn(UnixMs) -> bool,
) -> Units {
    let aged = aged_prefix(entries, oldest, |time| !counts(time));
    if aged == 0 {
        return total_of_all;
    }
    if aged <= entries.len() / 2 {
        total_of_all.saturating_sub(total(&entries[..aged]))
    } else {
        total(&entries[aged..])
    }
}

/// How many of `entries` (by time, the first at `oldest`) from the front
/// are `aged`. Mostly none (an account's oldest entry is usually still in
/// its window), which the kept `oldest` tells without reading the list.
fn aged_prefix(
    entries: &[(UnixMs, Units)],
    oldest: Option<UnixMs>,
    aged: impl Fn(UnixMs) -> bool,
) -> usize {
    if oldest.is_some_and(&aged) {
        entries.partition_point(|&(time, _)| aged(time))
    } else {
        0
    }
}

fn minute_of(time: UnixMs) -> UnixMs {
    UnixMs::from_millis(time.as_millis() / MINUTE_MS * MINUTE_MS)
}

#[cfg(test)]
mod tests {
    use super::*;

    const HOUR: u64 = 3_600_000;
    const DAY: u64 = 24 * HOUR;

    fn usd() -> CurrencyCode {
        CurrencyCode::new("USD").unwrap()
    }

    fn at(ms: u64) -> UnixMs {
        UnixMs::from_millis(ms)
    }

    #[test]
    fn the_day_window_is_exact_to_the_millisecond() {
        let mut usage = Usage::default();
        let t0 = 100 * DAY + 12_345;
        usage.add(usd(), at(t0), 40);
        assert_eq!(usage.used(usd(), Window::Day, at(t0)), 40);
        assert_eq!(usage.used(usd(), Window::Day, at(t0 + DAY - 1)), 40);
        assert_eq!(usage.used(usd(), Window::Day, at(t0 + DAY)), 0);
        assert_eq!(usage.used(usd(), Window::Month, at(t0 + DAY)), 40);
    }

    #[test]
    fn the_month_window_counts_up_to_a_minute_longer_never_shorter() {
        let mut usage = Usage::default();
        let t0 = 100 * DAY + 30_000; // half a minute into its minute
        usage.add(usd(), at(t0), 7);
        usage.add(usd(), at(t0 + 2 * DAY), 1); // folds the first into minutes
        let month = 30 * DAY;
        assert_eq!(usage.used(usd(), Window::Month, at(t0 + month - 1)), 8);
        // Exactly 30 days on, its minute has not ended 30 days ago yet.
        assert_eq!(usage.used(usd(), Window::Month, at(t0 + month)), 8);
        assert_eq!(usage.used(usd(), Window::Month, at(t0 + month + 30_000)), 1);
    }

    #[test]
    fn removing_takes_the_amount_out_whether_folded_or_not() {
        let mut usage = Usage::default();
        let t0 = 100 * DAY;
        usage.add(usd(), at(t0), 10);
        usage.add(usd(), at(t0), 5);
        usage.add(usd(), at(t0 + 2 * DAY), 3);
        usage.remove(usd(), at(t0), 5); // folded into its minute
        assert_eq!(usage.used(usd(), Window::Month, at(t0 + 2 * DAY)), 13);
        usage.remove(usd(), at(t0 + 2 * DAY), 3); // still in the day
        assert_eq!(usage.used(usd(), Window::Day, at(t0 + 2 * DAY)), 0);
        usage.remove(usd(), at(t0), 10);
        assert!(usage.is_empty(), "{usage:?}");
    }

    /// What `used` answers, summed from every entry (the definition the
    /// kept totals must agree with).
    fn used_by_summing(usage: &Usage, window: Window, at: UnixMs) -> Units {
        let Some(u) = usage.currencies.iter().find(|u| u.currency == usd()) else {
            return 0;
        };
        let since = at.as_millis().saturating_sub(window.millis());
        let in_day: Units = (u.day.iter())
            .filter(|(time, _)| time.as_millis() > since)
            .map(|&(_, amount)| amount)
            .sum();
        let in_minutes: Units = (u.minutes.iter())
            .filter(|(start, _)| start.as_millis() + MINUTE_MS > since)
            .map(|&(_, amount)| amount)
            .sum();
        match window {
            Window::Day => in_day,
            Window::Month => in_day + in_minutes,
        }
    }

    #[test]
    fn kept_totals_and_fronts_answer_what_summing_every_entry_does_and_survive_a_snapshot() {
        let mut usage = Usage::default();
        let mut requested: Vec<(UnixMs, Units)> = Vec::new();
        let mut seed: u64 = 7;
        let mut next = |bound: u64| {
            seed = seed.wrapping_mul(6_364_136_223_846_793_005).wrapping_add(1);
            (seed >> 33) % bound
        };
        let mut now = 10 * DAY;
        for _ in 0..3_000 {
            // Steps from a millisecond to two days: requests pile up within
            // a day, fold into minutes and age past the month.
            now += match next(9) {
                0 | 1 => 1,
                2 | 3 => next(60_000),
                4 | 5 => next(6 * HOUR),
                6 | 7 => next(2 * DAY),
                _ => 30 * DAY + next(2 * DAY),
            };
            let amount = Units::from(next(1_000) + 1);
            if next(4) == 0 && !requested.is_empty() {
                let (created_at, amount) = requested[next(requested.len() as u64) as usize];
                usage.remove(usd(), created_at, amount / 2 + 1);
            } else {
                usage.add(usd(), at(now), amount);
                requested.push((at(now), amount));
            }
            for u in &usage.currencies {
                assert_eq!(u.day_oldest, u.day.first().map(|e| e.0), "kept day front");
                assert_eq!(u.minutes_oldest, u.minutes.first().map(|e| e.0));
                assert_eq!(u.day_newest, u.day.last().map(|e| e.0), "kept day end");
            }
            for window in [Window::Day, Window::Month] {
                for later in [0, next(3 * DAY)] {
                    let when = at(now + later);
                    let expected = used_by_summing(&usage, window, when);
                    assert_eq!(usage.used(usd(), window, when), expected, "{window:?}");
                }
            }
        }
        let config = bincode::config::standard();
        let bytes = bincode::serde::encode_to_vec(&usage, config).unwrap();
        let (read, _): (Usage, _) = bincode::serde::decode_from_slice(&bytes, config).unwrap();
        assert_eq!(read, usage, "the totals are rebuilt as they were kept");
    }

    #[test]
    fn removing_the_oldest_request_moves_the_kept_front() {
        let mut usage = Usage::default();
        let t0 = 100 * DAY;
        usage.add(usd(), at(t0), 5);
        usage.add(usd(), at(t0 + 10), 3);
        usage.remove(usd(), at(t0), 5);
        assert_eq!(usage.currencies[0].day_oldest, Some(at(t0 + 10)));
        // The front is what a check reads: at t0 + DAY the first request
        // would have aged out, the second still counts.
        assert_eq!(usage.used(usd(), Window::Day, at(t0 + DAY)), 3);
        usage.add(usd(), at(t0 + 2 * DAY), 1); // folds the second
        usage.remove(usd(), at(t0 + 10), 3);
        assert_eq!(usage.currencies[0].minutes_oldest, None);
        assert_eq!(usage.used(usd(), Window::Month, at(t0 + 2 * DAY)), 1);
    }

    #[test]
    fn a_request_a_month_after_the_last_drops_what_it_folds() {
        let mut usage = Usage::default();
        let t0 = 100 * DAY;
        usage.add(usd(), at(t0), 5);
        // Folds the first request into a bucket already past the month:
        // it goes at once, leaving only the new request.
        usage.add(usd(), at(t0 + 31 * DAY), 1);
        assert_eq!(usage.currencies[0].minutes, vec![]);
        usage.remove(usd(), at(t0 + 31 * DAY), 1);
        assert!(usage.is_empty(), "nothing left to keep: {usage:?}");
    }

    #[test]
    fn buckets_older_than_a_month_are_dropped_when_a_request_comes() {
        let mut usage = Usage::default();
        for day in 0..40 {
            usage.add(usd(), at(100 * DAY + day * DAY), 1);
        }
        let now = at(139 * DAY);
        // Days 110 to 139, and day 109's request, exactly 30 days old: its
        // minute has not ended 30 days ago.
        assert_eq!(usage.used(usd(), Window::Month, now), 31);
        let kept = &usage.currencies[0];
        assert!(kept.day.len() + kept.minutes.len() <= 31, "{kept:?}");
        // A removal of one already dropped changes nothing.
        usage.remove(usd(), at(100 * DAY), 1);
        assert_eq!(usage.used(usd(), Window::Month, now), 31);
    }
}
