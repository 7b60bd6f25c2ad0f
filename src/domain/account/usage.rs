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
struct CurrencyUsage {
    currency: CurrencyCode,
    /// Requests of the last day: (request time, amount still counted), by
    /// time, one entry per time.
    day: Vec<(UnixMs, Units)>,
    /// Older requests: (start of their minute, amount), by time.
    minutes: Vec<(UnixMs, Units)>,
    /// Requests at or before this moved to `minutes`.
    folded_to: UnixMs,
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
        match usage.day.last_mut() {
            Some((time, counted)) if *time == at => *counted = counted.saturating_add(amount),
            _ => usage.day.push((at, amount)),
        }
    }

    /// The withdrawal of `currency` requested at `created_at` no longer
    /// counts `amount` of itself (failed, cancelled, expired, or paid
    /// less). Nothing happens if it aged past 30 days already.
    pub fn remove(&mut self, currency: CurrencyCode, created_at: UnixMs, amount: Units) {
        let Some(index) = self.currencies.iter().position(|u| u.currency == currency) else {
            return;
        };
        let usage = &mut self.currencies[index];
        let (entries, key) = if created_at <= usage.folded_to {
            (&mut usage.minutes, minute_of(created_at))
        } else {
            (&mut usage.day, created_at)
        };
        if let Ok(found) = entries.binary_search_by_key(&key, |&(time, _)| time) {
            let counted = &mut entries[found].1;
            *counted = counted.saturating_sub(amount).max(0);
            if *counted == 0 {
                entries.remove(found);
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
        let in_day: Units = usage
            .day
            .iter()
            .filter(|(time, _)| time.as_millis() > since)
            .map(|&(_, amount)| amount)
            .sum();
        if window == Window::Day {
            return in_day;
        }
        let in_minutes: Units = usage
            .minutes
            .iter()
            .filter(|(start, _)| start.as_millis() + MINUTE_MS > since)
            .map(|&(_, amount)| amount)
            .sum();
        in_day + in_minutes
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
        let aged = self
            .day
            .partition_point(|(time, _)| time.as_millis() <= day_start);
        for (time, amount) in self.day.drain(..aged) {
            let minute = minute_of(time);
            match self.minutes.last_mut() {
                Some((start, counted)) if *start == minute => {
                    *counted = counted.saturating_add(amount)
                }
                _ => self.minutes.push((minute, amount)),
            }
        }
        self.folded_to = self.folded_to.max(UnixMs::from_millis(day_start));
        let month_start = at.as_millis().saturating_sub(Window::Month.millis());
        let gone = self
            .minutes
            .partition_point(|(start, _)| start.as_millis() + MINUTE_MS <= month_start);
        self.minutes.drain(..gone);
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
