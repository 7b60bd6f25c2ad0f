//! Applying a logged event to an account: the one place its balances and
//! withdrawals change for good (`transfers.rs` only holds and releases
//! funds for the instant of a transfer). Used live, once `rules.rs` or
//! `transfers.rs` decided, and by recovery's replay. Each event is first
//! checked against the state (a log that disagrees with it is refused, not
//! applied), and every application ends with the invariant check of the
//! balance it touched.
//!
//! A withdrawal's status changes only in [`AccountState::set_status`] (or
//! its creation), which also keeps the lock bookkeeping that follows the
//! statuses, apart from the balance arithmetic around it, and its
//! `updated_at`. Every event is applied with its logged time (`at`): a
//! withdrawal's `created_at` and `updated_at` are the times of its events,
//! so replay rebuilds exactly the times the live engine had, and so is a
//! key's first use, which its expiry goes by. A key expiry
//! ([`Event::IdempotencyKeysExpired`]) touches no balance: `keys.rs`
//! applies it.

use crate::domain::event::Event;
use crate::domain::ids::{AccountId, IdempotencyKey, TransactionId};
use crate::domain::money::{Currency, CurrencyCode, Units};
use crate::domain::time::UnixMs;
use crate::domain::withdrawal::{WithdrawalRecord, WithdrawalStatus};

use super::{credit, entry_in, AccountState, ApplyError, BalanceEntry, KeyRecord, KeyUse};

/// Why an event does not fit the state it is applied to.
type Refusal = &'static str;

const NOT_LOCKING: Refusal = "no such withdrawal holding a lock (pending or processing)";

impl AccountState {
    /// Applies a logged event, stamped `at`, to this account (its owner's
    /// side, the receiving side of a transfer, or both). Used live and by
    /// recovery.
    pub fn apply(&mut self, event: &Event, at: UnixMs) -> Result<(), ApplyError> {
        let account = self.id;
        let fail = |reason: String| ApplyError {
            account,
            event: format!("{event:?}"),
            reason,
        };
        if let Event::IdempotencyKeysExpired { account, before } = event {
            // Keys only: no balance to check.
            if *account != self.id {
                return Err(fail("the event does not concern this account".into()));
            }
            self.keys_expired(*before);
            return Ok(());
        }
        let touched = self.change(event, at).map_err(|r| fail(r.to_string()))?;
        self.check_balance(touched)
            .map_err(|violation| fail(format!("applying it broke an invariant: {violation}")))
    }

    /// [`apply`](Self::apply) before its invariant check; answers the
    /// currency it touched.
    fn change(&mut self, event: &Event, at: UnixMs) -> Result<CurrencyCode, Refusal> {
        let tx = event
            .transaction_id()
            .ok_or("a payout record changes no account")?;
        let owner = tx.account() == self.id;
        match event {
            Event::Deposited {
                currency,
                amount,
                key,
                ..
            } if owner => self.deposited(tx, *currency, *amount, key, at),
            Event::WithdrawalRequested {
                currency,
                amount,
                key,
                ..
            } if owner => self.withdrawal_requested(tx, *currency, *amount, key, at),
            Event::WithdrawalCompleted { .. } if owner => {
                let index = self.find(tx, WithdrawalStatus::holds_lock, NOT_LOCKING)?;
                self.end_lock(index, WithdrawalStatus::Completed, at)
            }
            Event::WithdrawalFailed { reason, .. } if owner => {
                let index = self.find(tx, WithdrawalStatus::holds_lock, NOT_LOCKING)?;
                let reason = reason.clone();
                self.end_lock(index, WithdrawalStatus::Failed { reason }, at)
            }
            Event::WithdrawalCancelled { .. } if owner => {
                let index = self.find(tx, is_pending, "only a pending one can be cancelled")?;
                self.end_lock(index, WithdrawalStatus::Cancelled, at)
            }
            Event::Transferred { to, .. } if owner && *to == self.id => {
                Err("a transfer cannot go to its own source account")
            }
            Event::Transferred {
                to,
                currency,
                amount,
                key,
                ..
            } if owner => self.transferred_out(tx, *to, *currency, *amount, key, at),
            Event::Transferred {
                to,
                currency,
                amount,
                ..
            } if *to == self.id => self.transferred_in(*currency, *amount),
            Event::WithdrawalClaimed { payout_id, .. } if owner => {
                let index = self.find(tx, is_pending, "only a pending one can be claimed")?;
                let payout_id = *payout_id;
                self.set_status(index, WithdrawalStatus::Processing { payout_id }, at)
            }
            Event::WithdrawalReleased { .. } if owner => {
                let index =
                    self.find(tx, is_processing, "only a processing one can be released")?;
                self.set_status(index, WithdrawalStatus::Pending, at)
            }
            Event::WithdrawalReturned { reason, .. } if owner => {
                let index = self.find(tx, is_completed, "only a completed one can be returned")?;
                self.returned(index, reason, at)
            }
            _ => Err("the event does not concern this account"),
        }
    }

    fn deposited(
        &mut self,
        tx: TransactionId,
        currency: Currency,
        amount: Units,
        key: &Option<IdempotencyKey>,
        at: UnixMs,
    ) -> Result<CurrencyCode, Refusal> {
        mint(self.entry_mut(currency), amount)?;
        let used_for = KeyUse::Deposit {
            currency: currency.code,
            amount,
        };
        self.note_transaction(tx, key, used_for, at);
        Ok(currency.code)
    }

    /// A new pending withdrawal: `amount` moves available → locked.
    fn withdrawal_requested(
        &mut self,
        tx: TransactionId,
        currency: Currency,
        amount: Units,
        key: &Option<IdempotencyKey>,
        at: UnixMs,
    ) -> Result<CurrencyCode, Refusal> {
        // One search: where it goes is kept while the balance is checked
        // (a different field), then filled.
        let Err(slot) = self.withdrawals.search(tx.sequence()) else {
            return Err("a withdrawal with this id already exists");
        };
        let entry = entry_in(&mut self.balances, currency);
        if entry.available < amount {
            return Err("available is below the withdrawal amount");
        }
        follow_lock(entry, &mut self.withdrawals_locking, amount, true)?;
        entry.available -= amount;
        entry.locked += amount;
        let record = WithdrawalRecord {
            currency,
            amount,
            status: WithdrawalStatus::Pending,
            created_at: at,
            updated_at: at,
        };
        self.withdrawals.insert_at(slot, tx.sequence(), record);
        let used_for = KeyUse::Withdrawal {
            currency: currency.code,
            amount,
        };
        self.note_transaction(tx, key, used_for, at);
        Ok(currency.code)
    }

    /// Ends the lock of the withdrawal at `index` with its terminal
    /// `status`: completed burns the locked amount, failed and cancelled
    /// return it to available.
    fn end_lock(
        &mut self,
        index: usize,
        status: WithdrawalStatus,
        at: UnixMs,
    ) -> Result<CurrencyCode, Refusal> {
        let record = self.withdrawals.at(index);
        let (currency, amount) = (record.currency, record.amount);
        let entry = entry_in(&mut self.balances, currency);
        if entry.locked < amount {
            return Err("locked is below the withdrawal amount");
        }
        if status == WithdrawalStatus::Completed {
            entry.burned = entry
                .burned
                .checked_add(amount)
                .ok_or("burned total overflow")?;
        } else {
            entry.available = credit(entry.available, amount).ok_or("balance overflow")?;
        }
        entry.locked -= amount;
        self.set_status(index, status, at)
    }

    /// The bank sent a completed withdrawal back: its amount is minted into
    /// available again.
    fn returned(
        &mut self,
        index: usize,
        reason: &str,
        at: UnixMs,
    ) -> Result<CurrencyCode, Refusal> {
        let record = self.withdrawals.at(index);
        let (currency, amount) = (record.currency, record.amount);
        mint(entry_in(&mut self.balances, currency), amount)?;
        let reason = reason.to_string();
        self.set_status(index, WithdrawalStatus::Returned { reason }, at)
    }

    fn transferred_out(
        &mut self,
        tx: TransactionId,
        to: AccountId,
        currency: Currency,
        amount: Units,
        key: &Option<IdempotencyKey>,
        at: UnixMs,
    ) -> Result<CurrencyCode, Refusal> {
        let entry = self.entry_mut(currency);
        if entry.available < amount {
            return Err("available is below the transfer amount");
        }
        entry.available -= amount;
        let used_for = KeyUse::Transfer {
            to,
            currency: currency.code,
            amount,
        };
        self.note_transaction(tx, key, used_for, at);
        Ok(currency.code)
    }

    fn transferred_in(
        &mut self,
        currency: Currency,
        amount: Units,
    ) -> Result<CurrencyCode, Refusal> {
        let entry = self.entry_mut(currency);
        entry.available = credit(entry.available, amount).ok_or("balance overflow")?;
        Ok(currency.code)
    }

    /// Sets the status of the withdrawal at `index` as of `at`, with the
    /// lock bookkeeping that follows it; answers the withdrawal's currency.
    fn set_status(
        &mut self,
        index: usize,
        status: WithdrawalStatus,
        at: UnixMs,
    ) -> Result<CurrencyCode, Refusal> {
        let record = self.withdrawals.at_mut(index);
        let (was, now) = (record.status.holds_lock(), status.holds_lock());
        if was != now {
            let entry = entry_in(&mut self.balances, record.currency);
            follow_lock(entry, &mut self.withdrawals_locking, record.amount, now)?;
        }
        record.status = status;
        record.updated_at = at;
        Ok(record.currency.code)
    }

    /// Where withdrawal `tx` is, if its status is `wanted`; else `refusal`.
    fn find(
        &self,
        tx: TransactionId,
        wanted: fn(&WithdrawalStatus) -> bool,
        refusal: Refusal,
    ) -> Result<usize, Refusal> {
        self.withdrawals
            .search(tx.sequence())
            .ok()
            .filter(|&index| wanted(&self.withdrawals.at(index).status))
            .ok_or(refusal)
    }

    /// Moves the next sequence number past `tx` and remembers its key,
    /// first used `at`.
    fn note_transaction(
        &mut self,
        tx: TransactionId,
        key: &Option<IdempotencyKey>,
        used_for: KeyUse,
        at: UnixMs,
    ) {
        self.next_sequence = self.next_sequence.max(tx.sequence().saturating_add(1));
        if let Some(key) = key {
            let record = KeyRecord {
                used_for,
                tx,
                in_flight: false,
                first_used: at,
            };
            self.idempotency.insert(key.clone(), record);
        }
    }
}

/// Mints `amount` into a balance: available and the deposited total.
fn mint(entry: &mut BalanceEntry, amount: Units) -> Result<(), Refusal> {
    let available = credit(entry.available, amount).ok_or("balance overflow")?;
    let deposited = entry
        .deposited
        .checked_add(amount)
        .ok_or("deposited total overflow")?;
    entry.available = available;
    entry.deposited = deposited;
    Ok(())
}

/// A withdrawal of `amount` in `entry`'s currency starts (`starts`) or
/// stops holding a lock: the balance's `withdrawals_locked` and the
/// account's count of locking withdrawals (`locking`) follow.
fn follow_lock(
    entry: &mut BalanceEntry,
    locking: &mut u32,
    amount: Units,
    starts: bool,
) -> Result<(), Refusal> {
    let overflow = "the withdrawals' lock bookkeeping overflowed";
    if starts {
        entry.withdrawals_locked = entry
            .withdrawals_locked
            .checked_add(amount)
            .ok_or(overflow)?;
        *locking = locking.checked_add(1).ok_or(overflow)?;
    } else {
        entry.withdrawals_locked = entry
            .withdrawals_locked
            .checked_sub(amount)
            .ok_or(overflow)?;
        *locking = locking.checked_sub(1).ok_or(overflow)?;
    }
    Ok(())
}

fn is_pending(status: &WithdrawalStatus) -> bool {
    matches!(status, WithdrawalStatus::Pending)
}

fn is_processing(status: &WithdrawalStatus) -> bool {
    matches!(status, WithdrawalStatus::Processing { .. })
}

fn is_completed(status: &WithdrawalStatus) -> bool {
    matches!(status, WithdrawalStatus::Completed)
}
