//! The account's invariants (design §9, 1 and 2), checked two ways:
//! - after every change, on the balance it touched, in O(1) and in release
//!   builds ([`AccountState::check_balance`]): available, locked and held
//!   ≥ 0, available + locked + held within [`BALANCE_UNITS_MAX`], and
//!   locked == what the currency's lock-holding withdrawals (and their
//!   fees) add up to
//!   (kept per balance as `withdrawals_locked`, so no withdrawal is
//!   walked);
//! - over the whole account, from scratch, on demand
//!   ([`AccountState::check_invariants`], for `audit`, snapshots and
//!   tests): the same per balance, and the withdrawals walked to recount
//!   what they lock, which must match both `locked` and the kept sums; and
//!   no withdrawal updated before it was created (a shard's stamps never go
//!   back, and all of a withdrawal's events are its account's shard's).

use crate::domain::ids::AccountId;
use crate::domain::money::{CurrencyCode, Units, BALANCE_UNITS_MAX};
use crate::error::LedgerError;

use super::{AccountState, BalanceEntry};

/// What a walk over the withdrawals found: their locked sums per balance
/// (filled into the caller's slice), how many hold a lock, and the first
/// currency one of them locks that the account holds no balance in.
struct LockCount {
    locking: u32,
    never_held: Option<CurrencyCode>,
}

impl AccountState {
    /// Checks invariants 1 and 2 of the design on this account, and the
    /// withdrawals' times, walking every withdrawal.
    pub fn check_invariants(&self) -> Result<(), String> {
        self.check_times()?;
        // What the withdrawals holding a lock add up to, per balance entry
        // (same index); on the stack for the usual few currencies.
        let mut few = [0 as Units; 4];
        let mut many = Vec::new();
        let sums: &mut [Units] = match few.get_mut(..self.balances.len()) {
            Some(few) => few,
            None => {
                many.resize(self.balances.len(), 0);
                &mut many
            }
        };
        let count = self.count_locks(sums)?;
        if count.locking != self.withdrawals_locking {
            return Err(format!(
                "account {}: {} withdrawals hold a lock but the counter says {}",
                self.id, count.locking, self.withdrawals_locking
            ));
        }
        for (entry, &counted) in self.balances.iter().zip(sums.iter()) {
            check_entry(self.id, entry)?;
            if entry.locked != counted {
                return Err(format!(
                    "account {} {}: locked {} but pending withdrawals sum to {counted}",
                    self.id, entry.currency.code, entry.locked
                ));
            }
        }
        match count.never_held {
            Some(code) => Err(format!(
                "account {}: withdrawals lock {code} it never held",
                self.id
            )),
            None => Ok(()),
        }
    }

    /// No withdrawal was updated before it was created.
    fn check_times(&self) -> Result<(), String> {
        let backwards = self
            .withdrawals
            .iter()
            .find(|(_, w)| w.updated_at < w.created_at);
        match backwards {
            Some((seq, w)) => Err(format!(
                "account {}: withdrawal {} updated at {} before it was created at {}",
                self.id, seq, w.updated_at, w.created_at
            )),
            None => Ok(()),
        }
    }

    /// Checks the balance in `currency` after a change to it; O(1) once
    /// the entry is found among the account's few currencies. A currency
    /// the account never held has nothing to check.
    pub(super) fn check_balance(&self, currency: CurrencyCode) -> Result<(), String> {
        match self.balances.iter().find(|b| b.currency.code == currency) {
            Some(entry) => check_entry(self.id, entry),
            None => Ok(()),
        }
    }

    /// [`check_balance`](Self::check_balance) after a decision changed the
    /// state (`after` names it): a broken invariant is a bug, and the
    /// change is already made, so it is the engine's `internal` error.
    pub(super) fn verify_balance(
        &self,
        currency: CurrencyCode,
        after: &str,
    ) -> Result<(), LedgerError> {
        self.check_balance(currency)
            .map_err(|violation| LedgerError::Internal {
                reason: format!("an invariant broke after {after}: {violation}"),
            })
    }

    /// Sets every balance's `withdrawals_locked` to what the withdrawals
    /// lock in it (an account read back from a snapshot, which does not
    /// store the sums).
    pub(super) fn recount_withdrawals_locked(&mut self) -> Result<(), String> {
        let mut sums = vec![0; self.balances.len()];
        self.count_locks(&mut sums)?;
        for (entry, sum) in self.balances.iter_mut().zip(sums) {
            entry.withdrawals_locked = sum;
        }
        Ok(())
    }

    /// Walks the withdrawals, adding each lock-holding one's amount to
    /// `sums` at its balance's index.
    fn count_locks(&self, sums: &mut [Units]) -> Result<LockCount, String> {
        let mut count = LockCount {
            locking: 0,
            never_held: None,
        };
        for (_, record) in self.withdrawals.iter() {
            if !record.status.holds_lock() {
                continue;
            }
            count.locking += 1;
            let code = record.currency.code;
            let Some(index) = self.balances.iter().position(|b| b.currency.code == code) else {
                count.never_held = count.never_held.or(Some(code));
                continue;
            };
            let sum = &mut sums[index];
            *sum = sum.checked_add(record.amount).ok_or_else(|| {
                format!("account {}: pending {code} withdrawals overflow", self.id)
            })?;
            // Its fee is locked too, in its own currency's balance.
            if let Some(fee) = record.fee() {
                let code = fee.currency.code;
                let Some(index) = self.balances.iter().position(|b| b.currency.code == code) else {
                    count.never_held = count.never_held.or(Some(code));
                    continue;
                };
                let sum = &mut sums[index];
                *sum = sum
                    .checked_add(fee.amount)
                    .ok_or_else(|| format!("account {}: pending {code} fees overflow", self.id))?;
            }
        }
        Ok(count)
    }
}

/// Invariants 1 and 2 on one balance, and its ceiling.
fn check_entry(account: AccountId, entry: &BalanceEntry) -> Result<(), String> {
    let code = entry.currency.code;
    if entry.available < 0 || entry.locked < 0 || entry.held < 0 {
        return Err(format!(
            "account {account} {code}: negative balance {entry:?}"
        ));
    }
    let total = entry
        .available
        .checked_add(entry.locked)
        .and_then(|t| t.checked_add(entry.held));
    if total.is_none_or(|t| t > BALANCE_UNITS_MAX) {
        return Err(format!(
            "account {account} {code}: available + locked + held is above the ceiling of {BALANCE_UNITS_MAX}: {entry:?}"
        ));
    }
    if entry.locked != entry.withdrawals_locked {
        return Err(format!(
            "account {account} {code}: locked {} but its withdrawals lock {}",
            entry.locked, entry.withdrawals_locked
        ));
    }
    Ok(())
}
