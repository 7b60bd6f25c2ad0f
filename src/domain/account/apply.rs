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
//! statuses (the amount's and the fee's), apart from the balance
//! arithmetic around it, and its `updated_at`. A withdrawal's fee is
//! locked with its amount and released with it; a completion moves it to
//! the fee account the event names, whose side of the event is applied to
//! that account like a transfer's receiving side. What the limits count
//! (`usage.rs`) follows the same events: a request counts its amount; a
//! failure, a cancel or a partial completion takes back what left no
//! more. Every event is applied with its logged time (`at`): a
//! withdrawal's `created_at` and `updated_at` are the times of its events,
//! so replay rebuilds exactly the times the live engine had, and so is a
//! key's first use, which its expiry goes by. A key expiry
//! ([`Event::IdempotencyKeysExpired`]) touches no balance: `keys.rs`
//! applies it.

use crate::domain::details::{Fee, FeeCollected, Metadata, WithdrawalDetails};
use crate::domain::event::Event;
use crate::domain::ids::{IdempotencyKey, TransactionId};
use crate::domain::money::{Currency, CurrencyCode, Units};
use crate::domain::time::UnixMs;
use crate::domain::withdrawal::{KeptExtras, WithdrawalRecord, WithdrawalStatus};

use super::{credit, entry_in, AccountState, ApplyError, BalanceEntry, KeyRecord, KeyUse};

/// The balances an event changed: one, or two for a withdrawal whose fee
/// is in another currency.
type Touched = (CurrencyCode, Option<CurrencyCode>);

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
        if let Some(account) = event.account_event_of() {
            // Keys or controls only: no balance to check.
            if account != self.id {
                return Err(fail("the event does not concern this account".into()));
            }
            match event {
                Event::IdempotencyKeysExpired { before, .. } => self.keys_expired(*before),
                _ => self.apply_control_event(event),
            }
            return Ok(());
        }
        let (touched, also) = self.change(event, at).map_err(|r| fail(r.to_string()))?;
        for currency in std::iter::once(touched).chain(also) {
            self.check_balance(currency).map_err(|violation| {
                fail(format!("applying it broke an invariant: {violation}"))
            })?;
        }
        Ok(())
    }

    /// [`apply`](Self::apply) before its invariant check; answers the
    /// currencies it touched.
    fn change(&mut self, event: &Event, at: UnixMs) -> Result<Touched, Refusal> {
        let one = |touched: Result<CurrencyCode, Refusal>| touched.map(|c| (c, None));
        let tx = event
            .transaction_id()
            .ok_or("a payout record changes no account")?;
        let owner = tx.account() == self.id;
        match event {
            Event::Deposited {
                currency,
                amount,
                key,
                metadata,
                ..
            } if owner => one(self.deposited(tx, *currency, *amount, key, metadata, at)),
            Event::WithdrawalRequested {
                currency,
                amount,
                key,
                details,
                ..
            } => {
                if !owner {
                    return Err("the event does not concern this account");
                }
                self.withdrawal_requested(tx, *currency, *amount, key, details.as_deref(), at)
            }
            Event::WithdrawalCompleted { paid, fee, .. } if owner => {
                let index = self.find(tx, WithdrawalStatus::holds_lock, NOT_LOCKING)?;
                self.completed(index, *paid, *fee, at)
            }
            Event::WithdrawalCompleted { fee: Some(fee), .. } if fee.to == self.id => {
                one(self.fee_received(fee))
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
            Event::Transferred { .. } if owner => one(self.transferred_out(event, at)),
            Event::Transferred {
                to,
                currency,
                amount,
                ..
            } if *to == self.id => one(self.transferred_in(*currency, *amount)),
            Event::WithdrawalClaimed { payout_id, .. } if owner => {
                let index = self.find(tx, is_pending, "only a pending one can be claimed")?;
                let payout_id = *payout_id;
                one(self.set_status(index, WithdrawalStatus::Processing { payout_id }, at))
            }
            Event::WithdrawalReleased { .. } if owner => {
                let index =
                    self.find(tx, is_processing, "only a processing one can be released")?;
                one(self.set_status(index, WithdrawalStatus::Pending, at))
            }
            Event::WithdrawalReturned { reason, .. } if owner => {
                let index = self.find(tx, is_completed, "only a completed one can be returned")?;
                one(self.returned(index, reason, at))
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
        metadata: &Option<Box<Metadata>>,
        at: UnixMs,
    ) -> Result<CurrencyCode, Refusal> {
        mint(self.entry_mut(currency), amount)?;
        let used_for = || KeyUse::deposit(currency.code, amount, metadata.as_deref());
        self.note_transaction(tx, key, used_for, at);
        Ok(currency.code)
    }

    /// A new pending withdrawal: `amount` moves available → locked, and
    /// its fee with it (in the fee's currency).
    fn withdrawal_requested(
        &mut self,
        tx: TransactionId,
        currency: Currency,
        amount: Units,
        key: &Option<IdempotencyKey>,
        details: Option<&WithdrawalDetails>,
        at: UnixMs,
    ) -> Result<Touched, Refusal> {
        // One search: where it goes is kept while the balance is checked
        // (a different field), then filled.
        let Err(slot) = self.withdrawals.search(tx.sequence()) else {
            return Err("a withdrawal with this id already exists");
        };
        let fee = details.and_then(|d| d.fee);
        self.check_lockable(currency, amount, fee)?;
        let entry = entry_in(&mut self.balances, currency);
        follow_lock(entry, &mut self.withdrawals_locking, amount, true)?;
        entry.available -= amount;
        entry.locked += amount;
        if let Some(fee) = fee {
            let entry = entry_in(&mut self.balances, fee.currency);
            follow_fee_lock(entry, fee.amount, true)?;
            entry.available -= fee.amount;
            entry.locked += fee.amount;
        }
        let record = WithdrawalRecord {
            currency,
            amount,
            status: WithdrawalStatus::Pending,
            created_at: at,
            updated_at: at,
            extras: KeptExtras::of_request(currency.code, details),
        };
        self.withdrawals.insert_at(slot, tx.sequence(), record);
        let used_for = || KeyUse::withdrawal(currency.code, amount, details, at);
        self.note_transaction(tx, key, used_for, at);
        self.count_withdrawal(currency.code, at, amount);
        Ok((currency.code, fee.map(|f| f.currency.code)))
    }

    /// Whether available covers `amount` and `fee` (together, when they
    /// share a currency).
    fn check_lockable(
        &self,
        currency: Currency,
        amount: Units,
        fee: Option<Fee>,
    ) -> Result<(), Refusal> {
        let same = fee.filter(|f| f.currency.code == currency.code);
        let needed = amount
            .checked_add(same.map_or(0, |f| f.amount))
            .ok_or("withdrawal amount and fee overflow")?;
        if self.balance(currency).available < needed {
            return Err("available is below the withdrawal amount (and fee)");
        }
        match fee.filter(|f| f.currency.code != currency.code) {
            Some(fee) if self.balance(fee.currency).available < fee.amount => {
                Err("available is below the withdrawal fee")
            }
            _ => Ok(()),
        }
    }

    /// Completes the withdrawal at `index`: `paid` (all of it if `None`)
    /// is burned, the rest of the amount released; the fee leaves for the
    /// fee account (or, if this is the fee account, back to available).
    fn completed(
        &mut self,
        index: usize,
        paid: Option<Units>,
        fee: Option<FeeCollected>,
        at: UnixMs,
    ) -> Result<Touched, Refusal> {
        let record = self.withdrawals.at(index);
        let (currency, amount, created_at) = (record.currency, record.amount, record.created_at);
        if record.fee()
            != fee.map(|f| Fee {
                currency: f.currency,
                amount: f.amount,
            })
        {
            return Err("the completion's fee is not the withdrawal's");
        }
        let paid = paid.unwrap_or(amount);
        if paid <= 0 || paid > amount {
            return Err("a completion pays more than 0 and at most the amount");
        }
        let entry = entry_in(&mut self.balances, currency);
        if entry.locked < amount {
            return Err("locked is below the withdrawal amount");
        }
        entry.burned = entry
            .burned
            .checked_add(paid)
            .ok_or("burned total overflow")?;
        entry.available = credit(entry.available, amount - paid).ok_or("balance overflow")?;
        entry.locked -= amount;
        if let Some(fee) = fee {
            let own = fee.to == self.id;
            let entry = entry_in(&mut self.balances, fee.currency);
            release_fee(entry, fee.amount, own)?;
        }
        if paid < amount {
            let record = self.withdrawals.at_mut(index);
            record.extras.set_paid(paid);
            self.uncount_withdrawal(currency.code, created_at, amount - paid);
        }
        let touched = self.set_status(index, WithdrawalStatus::Completed, at)?;
        Ok((touched, fee.map(|f| f.currency.code)))
    }

    /// The fee account's side of completion `tx`, live: its fee is
    /// credited, as [`apply`](Self::apply) does with the completion's event
    /// (which replay applies), without handing the whole event around.
    pub fn collect_fee(&mut self, tx: TransactionId, fee: &FeeCollected) -> Result<(), ApplyError> {
        let account = self.id;
        let fail = |reason: String| ApplyError {
            account,
            event: format!("fee {fee:?} of {tx}"),
            reason,
        };
        if fee.to != self.id || tx.account() == self.id {
            return Err(fail("the fee is not for this account".into()));
        }
        let currency = self.fee_received(fee).map_err(|r| fail(r.to_string()))?;
        self.check_balance(currency)
            .map_err(|violation| fail(format!("applying it broke an invariant: {violation}")))
    }

    /// The fee account's side of a completion: the fee is credited.
    fn fee_received(&mut self, fee: &FeeCollected) -> Result<CurrencyCode, Refusal> {
        let entry = self.entry_mut(fee.currency);
        entry.available = credit(entry.available, fee.amount).ok_or("balance overflow")?;
        Ok(fee.currency.code)
    }

    /// Ends the lock of the withdrawal at `index` with its terminal
    /// `status`, failed or cancelled: the amount and the fee return to
    /// available, and the amount stops counting towards the limits.
    fn end_lock(
        &mut self,
        index: usize,
        status: WithdrawalStatus,
        at: UnixMs,
    ) -> Result<Touched, Refusal> {
        let record = self.withdrawals.at(index);
        let (currency, amount, created_at, fee) = (
            record.currency,
            record.amount,
            record.created_at,
            record.fee(),
        );
        let entry = entry_in(&mut self.balances, currency);
        if entry.locked < amount {
            return Err("locked is below the withdrawal amount");
        }
        entry.available = credit(entry.available, amount).ok_or("balance overflow")?;
        entry.locked -= amount;
        if let Some(fee) = fee {
            release_fee(entry_in(&mut self.balances, fee.currency), fee.amount, true)?;
        }
        self.uncount_withdrawal(currency.code, created_at, amount);
        let touched = self.set_status(index, status, at)?;
        Ok((touched, fee.map(|f| f.currency.code)))
    }

    /// The bank sent a completed withdrawal back: what it paid is minted
    /// into available again (the fee stays with the fee account).
    fn returned(
        &mut self,
        index: usize,
        reason: &str,
        at: UnixMs,
    ) -> Result<CurrencyCode, Refusal> {
        let record = self.withdrawals.at(index);
        let (currency, paid) = (record.currency, record.paid());
        mint(entry_in(&mut self.balances, currency), paid)?;
        let reason = reason.to_string();
        self.set_status(index, WithdrawalStatus::Returned { reason }, at)
    }

    /// The source's side of a transfer (`event`): its amount leaves.
    fn transferred_out(&mut self, event: &Event, at: UnixMs) -> Result<CurrencyCode, Refusal> {
        let Event::Transferred {
            tx,
            to,
            currency,
            amount,
            key,
            metadata,
        } = event
        else {
            return Err("not a transfer");
        };
        let (tx, to, currency, amount) = (*tx, *to, *currency, *amount);
        let entry = self.entry_mut(currency);
        if entry.available < amount {
            return Err("available is below the transfer amount");
        }
        entry.available -= amount;
        let used_for = || KeyUse::transfer(to, currency.code, amount, metadata.as_deref());
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
            if let Some(fee) = record.fee() {
                follow_fee_lock(entry_in(&mut self.balances, fee.currency), fee.amount, now)?;
            }
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
        used_for: impl FnOnce() -> KeyUse,
        at: UnixMs,
    ) {
        self.next_sequence = self.next_sequence.max(tx.sequence().saturating_add(1));
        if let Some(key) = key {
            let record = KeyRecord {
                used_for: used_for(),
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

/// A fee starts or stops being locked: its balance's `withdrawals_locked`
/// follows (the count of locking withdrawals follows the amount's lock).
fn follow_fee_lock(entry: &mut BalanceEntry, fee: Units, starts: bool) -> Result<(), Refusal> {
    let sum = &mut entry.withdrawals_locked;
    *sum = if starts {
        sum.checked_add(fee)
    } else {
        sum.checked_sub(fee)
    }
    .ok_or("the withdrawals' lock bookkeeping overflowed")?;
    Ok(())
}

/// A locked fee leaves `locked`: back to available (`to_available`: a
/// failure, a cancel, or the fee account's own withdrawal), or out of the
/// account (to the fee account).
fn release_fee(entry: &mut BalanceEntry, fee: Units, to_available: bool) -> Result<(), Refusal> {
    if entry.locked < fee {
        return Err("locked is below the withdrawal fee");
    }
    if to_available {
        entry.available = credit(entry.available, fee).ok_or("balance overflow")?;
    }
    entry.locked -= fee;
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
