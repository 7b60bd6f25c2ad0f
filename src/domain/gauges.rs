//! Gauges kept as the engine runs: withdrawals by currency and status
//! (how many, and their amount), accounts, running account actors. Reading
//! them ([`Ledger::gauges`](crate::Ledger::gauges), `/metrics`) costs one
//! small message per shard, the same at 10 accounts or 10 million.
//!
//! Each shard keeps its own [`WithdrawalGauges`] on its thread (in its
//! shard log): seeded once from the recovered account states when the
//! shard starts, then moved by
//! `execute` in `engine/command.rs`, the one function every
//! account command runs through, from what the withdrawal the command acts
//! on was before to what it is after. No event kind is special-cased, so a
//! new event or transition is counted without touching the gauges, as long
//! as its command names the withdrawal it acts on (`acts_on` in
//! `engine/command.rs`). They count the withdrawals memory holds: one
//! forgotten (`engine/horizon.rs`) leaves them, one put back from the
//! history (`engine/recall.rs`) comes back.
//!
//! Arithmetic: tallies are kept modulo 2^64 (counts) and 2^128 (amounts)
//! with wrapping operations, which are exact whenever the true value fits
//! — whatever the order of increments and decrements — and cannot panic.
//! A count always fits. An amount is a sum of `count` withdrawals of at
//! most [`BALANCE_UNITS_MAX`] (1e28) units each, so it fits while a tally
//! holds fewer than ≈ 1.7·10^10 withdrawals ([`AMOUNT_EXACT_COUNT_MAX`]):
//! more than an in-memory ledger can hold (tens of bytes each: some 700 GB
//! of records). [`Tally::amount_is_exact`] says so for each tally.

use std::collections::BTreeMap;

use crate::domain::account::AccountState;
use crate::domain::money::{Currency, CurrencyCode, Units, BALANCE_UNITS_MAX};
use crate::domain::withdrawal::{StatusKind, WithdrawalRecord};

/// Most withdrawals one tally may hold with its amount still exact: beyond
/// this, `count × BALANCE_UNITS_MAX` could exceed `i128::MAX`.
pub const AMOUNT_EXACT_COUNT_MAX: u64 = (Units::MAX / BALANCE_UNITS_MAX) as u64;

/// Withdrawals in one currency and status.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Tally {
    pub count: u64,
    /// Sum of their amounts, in the currency's minor units.
    pub amount: Units,
}

impl Tally {
    /// Whether `amount` is certainly the exact sum (see the module docs).
    pub fn amount_is_exact(&self) -> bool {
        self.count <= AMOUNT_EXACT_COUNT_MAX
    }

    fn add(&mut self, amount: Units) {
        self.count = self.count.wrapping_add(1);
        self.amount = self.amount.wrapping_add(amount);
    }

    fn remove(&mut self, amount: Units) {
        self.count = self.count.wrapping_sub(1);
        self.amount = self.amount.wrapping_sub(amount);
    }

    fn absorb(&mut self, other: Tally) {
        self.count = self.count.wrapping_add(other.count);
        self.amount = self.amount.wrapping_add(other.amount);
    }
}

/// One currency's withdrawals by status.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct CurrencyWithdrawals {
    pub currency: Currency,
    /// In the order of [`StatusKind::ALL`].
    by_status: [Tally; StatusKind::ALL.len()],
}

impl CurrencyWithdrawals {
    fn new(currency: Currency) -> Self {
        Self {
            currency,
            by_status: [Tally::default(); StatusKind::ALL.len()],
        }
    }

    pub fn get(&self, status: StatusKind) -> Tally {
        self.by_status[slot_of(status)]
    }

    /// Every status with its tally, in the order of [`StatusKind::ALL`].
    pub fn iter(&self) -> impl Iterator<Item = (StatusKind, Tally)> + '_ {
        StatusKind::ALL.into_iter().zip(self.by_status)
    }
}

/// A status's place in [`CurrencyWithdrawals::by_status`]. Exhaustive, so
/// a new status cannot be left out.
fn slot_of(status: StatusKind) -> usize {
    match status {
        StatusKind::Pending => 0,
        StatusKind::Processing => 1,
        StatusKind::Completed => 2,
        StatusKind::Failed => 3,
        StatusKind::Cancelled => 4,
        StatusKind::Returned => 5,
    }
}

/// A withdrawal as the gauges count it: where its amount is tallied.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Counted {
    pub currency: Currency,
    pub amount: Units,
    pub status: StatusKind,
}

impl Counted {
    pub fn of(record: &WithdrawalRecord) -> Self {
        Self {
            currency: record.currency,
            amount: record.amount,
            status: record.status.kind(),
        }
    }
}

/// Withdrawals by currency and status: one shard's, or the whole ledger's.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct WithdrawalGauges {
    by_currency: BTreeMap<CurrencyCode, CurrencyWithdrawals>,
}

impl WithdrawalGauges {
    /// Counts every withdrawal of `accounts`: O(withdrawals), once, when a
    /// shard starts on its recovered accounts (or in a test's full scan).
    pub fn scan<'a>(accounts: impl IntoIterator<Item = &'a AccountState>) -> Self {
        let mut gauges = Self::default();
        for account in accounts {
            for (_, record) in account.withdrawals() {
                gauges.add(Counted::of(record));
            }
        }
        gauges
    }

    /// A withdrawal went from `before` (`None`: it did not exist) to
    /// `after`. A few integer operations; allocates only the first time a
    /// shard sees a currency.
    pub fn moved(&mut self, before: Option<Counted>, after: Option<Counted>) {
        if before == after {
            return;
        }
        if let Some(before) = before {
            self.tally_mut(before).remove(before.amount);
        }
        if let Some(after) = after {
            self.add(after);
        }
    }

    fn add(&mut self, counted: Counted) {
        self.tally_mut(counted).add(counted.amount);
    }

    fn tally_mut(&mut self, counted: Counted) -> &mut Tally {
        let currency = self
            .by_currency
            .entry(counted.currency.code)
            .or_insert_with(|| CurrencyWithdrawals::new(counted.currency));
        &mut currency.by_status[slot_of(counted.status)]
    }

    /// Adds another shard's gauges to these.
    pub fn absorb(&mut self, other: &WithdrawalGauges) {
        for (code, theirs) in &other.by_currency {
            let ours = self
                .by_currency
                .entry(*code)
                .or_insert_with(|| CurrencyWithdrawals::new(theirs.currency));
            for (tally, their_tally) in ours.by_status.iter_mut().zip(theirs.by_status) {
                tally.absorb(their_tally);
            }
        }
    }

    /// One currency and status; zero if never seen.
    pub fn get(&self, currency: &str, status: StatusKind) -> Tally {
        CurrencyCode::new(currency)
            .ok()
            .and_then(|code| self.by_currency.get(&code))
            .map(|c| c.get(status))
            .unwrap_or_default()
    }

    /// Every currency that has had a withdrawal, by code.
    pub fn currencies(&self) -> impl Iterator<Item = &CurrencyWithdrawals> + '_ {
        self.by_currency.values()
    }
}

/// What [`Ledger::gauges`](crate::Ledger::gauges) reports, summed over the
/// shards. Changes applied in memory count at once, before they are
/// durable, as with every other read of the ledger.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Gauges {
    /// Accounts the ledger holds.
    pub accounts: usize,
    /// Account actors running (idle ones are stopped; their state stays).
    pub account_actors_running: usize,
    /// Withdrawals by currency and status.
    pub withdrawals: WithdrawalGauges,
    /// Account states copied out since the ledger opened
    /// ([`Ledger::export_accounts`](crate::Ledger::export_accounts),
    /// [`Ledger::audit`](crate::Ledger::audit)): each such call costs
    /// O(accounts). Reading gauges never adds to it.
    pub account_states_copied: u64,
}

impl Gauges {
    /// Adds another shard's gauges to these.
    pub fn absorb(&mut self, other: &Gauges) {
        self.accounts = self.accounts.saturating_add(other.accounts);
        self.account_actors_running = self
            .account_actors_running
            .saturating_add(other.account_actors_running);
        self.withdrawals.absorb(&other.withdrawals);
        self.account_states_copied = self
            .account_states_copied
            .saturating_add(other.account_states_copied);
    }
}

/// Accounts held and how many of them have a running actor (idle ones are
/// retired; their state stays): one shard's, or summed over the shards by
/// [`Ledger::account_counts`](crate::Ledger::account_counts).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct ShardCounts {
    pub accounts: usize,
    pub actors_running: usize,
}

/// Summed over the shards.
impl std::iter::Sum for ShardCounts {
    fn sum<I: Iterator<Item = Self>>(shards: I) -> Self {
        shards.fold(Self::default(), |total, shard| Self {
            accounts: total.accounts.saturating_add(shard.accounts),
            actors_running: total.actors_running.saturating_add(shard.actors_running),
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::domain::money::usd;

    fn counted(status: StatusKind, amount: Units) -> Counted {
        Counted {
            currency: usd(),
            amount,
            status,
        }
    }

    #[test]
    fn a_move_takes_the_amount_from_one_status_to_the_other() {
        let mut gauges = WithdrawalGauges::default();
        gauges.moved(None, Some(counted(StatusKind::Pending, 150)));
        gauges.moved(None, Some(counted(StatusKind::Pending, 50)));
        gauges.moved(
            Some(counted(StatusKind::Pending, 150)),
            Some(counted(StatusKind::Completed, 150)),
        );
        let pending = gauges.get("USD", StatusKind::Pending);
        assert_eq!((pending.count, pending.amount), (1, 50));
        let completed = gauges.get("USD", StatusKind::Completed);
        assert_eq!((completed.count, completed.amount), (1, 150));
        assert_eq!(gauges.get("EUR", StatusKind::Pending), Tally::default());
        // A move to the same place changes nothing.
        gauges.moved(
            Some(counted(StatusKind::Completed, 150)),
            Some(counted(StatusKind::Completed, 150)),
        );
        assert_eq!(gauges.get("USD", StatusKind::Completed), completed);
    }

    #[test]
    fn wrapping_tallies_are_exact_once_the_true_value_fits_again() {
        // Intermediate sums past i128::MAX wrap; the value read once the
        // true sum fits again is exact, whatever the order.
        let mut gauges = WithdrawalGauges::default();
        let big = Units::MAX / 2 + 1;
        gauges.moved(None, Some(counted(StatusKind::Pending, big)));
        gauges.moved(None, Some(counted(StatusKind::Pending, big)));
        gauges.moved(Some(counted(StatusKind::Pending, big)), None);
        let pending = gauges.get("USD", StatusKind::Pending);
        assert_eq!((pending.count, pending.amount), (1, big));
        assert!(pending.amount_is_exact());
        assert_eq!(AMOUNT_EXACT_COUNT_MAX, 17_014_118_346);
    }

    #[test]
    fn shards_add_up() {
        let mut one = WithdrawalGauges::default();
        one.moved(None, Some(counted(StatusKind::Failed, 7)));
        let mut two = WithdrawalGauges::default();
        two.moved(None, Some(counted(StatusKind::Failed, 5)));
        two.moved(None, Some(counted(StatusKind::Returned, 1)));
        let mut total = Gauges::default();
        for shard in [one, two] {
            total.absorb(&Gauges {
                accounts: 2,
                withdrawals: shard,
                ..Gauges::default()
            });
        }
        assert_eq!(total.accounts, 4);
        let failed = total.withdrawals.get("USD", StatusKind::Failed);
        assert_eq!((failed.count, failed.amount), (2, 12));
        assert_eq!(total.withdrawals.get("USD", StatusKind::Returned).count, 1);
    }
}
