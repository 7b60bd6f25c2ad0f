//! One account's state and rules, as plain data with no runtime.
//!
//! The account actor only delivers messages here; recovery replays logged
//! events through [`AccountState::apply`]; tests call it directly. Every
//! operation first checks everything that could reject it, then builds the
//! event and applies it, so a rejection never changes anything.

use std::collections::HashMap;
use std::fmt;

use serde::de::{MapAccess, Visitor};
use serde::{Deserialize, Deserializer, Serialize, Serializer};

use crate::domain::event::Event;
use crate::domain::ids::{AccountId, IdempotencyKey, TransactionId};
use crate::domain::money::{Currency, CurrencyCode, Units, BALANCE_UNITS_MAX};
use crate::domain::receipts::{Balance, Deposit, Transfer};
use crate::domain::withdrawal::{
    decide_transition, Settler, Transition, TransitionAction, Withdrawal, WithdrawalRecord,
    WithdrawalStatus,
};
use crate::error::{AmountProblem, LedgerError};

/// An account's money in one currency, in minor units.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct BalanceEntry {
    pub currency: Currency,
    /// Spendable now.
    pub available: Units,
    /// Reserved by withdrawals that are pending.
    pub locked: Units,
    /// Reserved by outgoing transfers whose receiving side has not answered
    /// yet. Only ever non-zero for the instant of a live transfer; never logged
    /// nor snapshotted (snapshots are built from the log).
    #[serde(skip)]
    pub held: Units,
    /// Everything ever minted into this balance (deposits); for invariant 3.
    pub deposited: Units,
    /// Everything ever paid out of this balance (completed withdrawals).
    pub burned: Units,
}

impl BalanceEntry {
    fn new(currency: Currency) -> Self {
        Self {
            currency,
            available: 0,
            locked: 0,
            held: 0,
            deposited: 0,
            burned: 0,
        }
    }

    pub fn total(&self) -> Units {
        self.available + self.locked
    }

    pub fn view(&self) -> Balance {
        Balance {
            currency: self.currency.code,
            available: self.currency.to_decimal(self.available),
            locked: self.currency.to_decimal(self.locked),
            total: self.currency.to_decimal(self.total()),
        }
    }
}

/// What an idempotency key was first used for.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
enum KeyUse {
    Deposit {
        currency: CurrencyCode,
        amount: Units,
    },
    Withdrawal {
        currency: CurrencyCode,
        amount: Units,
    },
    Transfer {
        to: AccountId,
        currency: CurrencyCode,
        amount: Units,
    },
}

#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
struct KeyRecord {
    used_for: KeyUse,
    tx: TransactionId,
    /// A transfer under this key is between hold and finish.
    in_flight: bool,
}

/// An outgoing transfer between hold and finish.
#[derive(Clone, Debug, PartialEq, Eq)]
struct HeldTransfer {
    tx: TransactionId,
    to: AccountId,
    currency: Currency,
    amount: Units,
    key: Option<IdempotencyKey>,
}

/// The result of an operation: what to tell the caller and, unless the
/// operation was an idempotent replay or a no-op, the event to log.
#[derive(Debug)]
pub struct Effect<T> {
    pub output: T,
    pub event: Option<Event>,
}

/// The first step of a transfer at its source account.
#[derive(Debug)]
pub enum TransferHold {
    /// Funds are held under this id; the receiving side must be asked next.
    Held(TransactionId),
    /// The idempotency key was already used for this same transfer.
    Replayed(Transfer),
}

/// Why a logged event cannot be applied: the log disagrees with the state
/// it is replayed onto (corruption, or a bug).
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("event {event:?} cannot be applied to account {account}: {reason}")]
pub struct ApplyError {
    pub account: AccountId,
    pub event: String,
    pub reason: String,
}

/// An account's idempotency keys: foldhash, randomly seeded per process
/// (callers choose the keys), 8 bytes of hasher state instead of std's 16.
/// Serialized exactly like a std `HashMap`: serde writes the entries, never
/// the hasher.
type Map<K, V> = HashMap<K, V, foldhash::fast::RandomState>;

/// One account: balances per currency, withdrawals, idempotency keys.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct AccountState {
    id: AccountId,
    /// Sequence number the next transaction of this account gets.
    next_sequence: u64,
    /// Few currencies per account, so a small vector beats a map.
    balances: Vec<BalanceEntry>,
    /// Every withdrawal of this account by sequence number, terminal ones too,
    /// so phase 3 and queries work for the withdrawal's whole life.
    withdrawals: Withdrawals,
    /// Withdrawals currently holding a lock (pending), for the per-account cap.
    withdrawals_locking: u32,
    idempotency: Map<IdempotencyKey, KeyRecord>,
    /// Live-only, like `BalanceEntry::held`.
    #[serde(skip)]
    held_transfers: Vec<HeldTransfer>,
}

impl AccountState {
    pub fn new(id: AccountId) -> Self {
        Self {
            id,
            next_sequence: 1,
            balances: Vec::new(),
            withdrawals: Withdrawals::default(),
            withdrawals_locking: 0,
            idempotency: Map::default(),
            held_transfers: Vec::new(),
        }
    }

    pub fn id(&self) -> AccountId {
        self.id
    }

    /// Balance in one currency; zero if the account never held it.
    pub fn balance(&self, currency: Currency) -> BalanceEntry {
        self.balances
            .iter()
            .find(|b| b.currency.code == currency.code)
            .copied()
            .unwrap_or_else(|| BalanceEntry::new(currency))
    }

    /// Every currency this account has held.
    pub fn balances(&self) -> &[BalanceEntry] {
        &self.balances
    }

    pub fn withdrawal(&self, tx: TransactionId) -> Result<Withdrawal, LedgerError> {
        self.withdrawal_record(tx).map(|record| record.view(tx))
    }

    /// One withdrawal as the account keeps it.
    pub fn withdrawal_record_of(&self, tx: TransactionId) -> Option<&WithdrawalRecord> {
        self.withdrawal_record(tx).ok()
    }

    /// All withdrawals with their ids, oldest first.
    pub fn withdrawals(&self) -> impl Iterator<Item = (TransactionId, &WithdrawalRecord)> + '_ {
        self.withdrawals
            .iter()
            .map(|(seq, record)| (TransactionId::new(self.id, seq), record))
    }

    /// Reads what applying an event of `tx` to this account reads first —
    /// its first balance, the withdrawal's slot — and returns a value
    /// computed from it. Replay calls it for events a few places ahead of
    /// the one it applies, so that the cache misses of several accounts
    /// overlap instead of coming one after another; the value only keeps
    /// the reads from being optimized away.
    pub(crate) fn warm(&self, tx: TransactionId) -> u64 {
        let balance = self.balances.first().map_or(0, |b| b.available as u64);
        let withdrawal = self
            .withdrawals
            .warm(tx.sequence())
            .map_or(0, |record| record.amount as u64);
        balance ^ withdrawal
    }

    /// Like [`warm`](Self::warm), for what [`check_invariants`] reads: the
    /// first balance, the first and the last withdrawal.
    ///
    /// [`check_invariants`]: Self::check_invariants
    pub(crate) fn warm_all(&self) -> u64 {
        let balance = self.balances.first().map_or(0, |b| b.available as u64);
        let amount =
            |record: Option<&(u64, WithdrawalRecord)>| record.map_or(0, |(_, r)| r.amount as u64);
        balance ^ amount(self.withdrawals.0.first()) ^ amount(self.withdrawals.0.last())
    }

    /// Phase 0: credit `amount` to available.
    pub fn deposit(
        &mut self,
        currency: Currency,
        amount: Units,
        key: Option<IdempotencyKey>,
    ) -> Result<Effect<Deposit>, LedgerError> {
        let used_for = KeyUse::Deposit {
            currency: currency.code,
            amount,
        };
        if let Some(tx) = self.replayed_key(key.as_ref(), used_for)? {
            return Ok(Effect {
                output: self.deposit_receipt(tx, currency, amount),
                event: None,
            });
        }
        self.check_credit_fits(currency, amount)?;
        let tx = self.take_transaction_id();
        let event = Event::Deposited {
            tx,
            currency,
            amount,
            key,
        };
        self.apply_checked(&event)?;
        Ok(Effect {
            output: self.deposit_receipt(tx, currency, amount),
            event: Some(event),
        })
    }

    /// Phase 1: create a pending burn, moving `amount` available → locked.
    pub fn request_withdrawal(
        &mut self,
        currency: Currency,
        amount: Units,
        key: Option<IdempotencyKey>,
        pending_max: u32,
    ) -> Result<Effect<Withdrawal>, LedgerError> {
        let used_for = KeyUse::Withdrawal {
            currency: currency.code,
            amount,
        };
        if let Some(tx) = self.replayed_key(key.as_ref(), used_for)? {
            // The first result: the withdrawal as it was created.
            let first = WithdrawalRecord {
                currency,
                amount,
                status: WithdrawalStatus::Pending,
            };
            return Ok(Effect {
                output: first.view(tx),
                event: None,
            });
        }
        if self.withdrawals_locking >= pending_max {
            return Err(LedgerError::TooManyPendingWithdrawals {
                account: self.id,
                limit: pending_max,
            });
        }
        self.check_available(currency, amount)?;
        let tx = self.take_transaction_id();
        let event = Event::WithdrawalRequested {
            tx,
            currency,
            amount,
            key,
        };
        self.apply_checked(&event)?;
        Ok(Effect {
            output: self.withdrawal(tx)?,
            event: Some(event),
        })
    }

    /// Phase 3 (complete or fail) and cancel, by transaction id, as a
    /// caller of a ledger whose host pays (external mode).
    pub fn update_withdrawal(
        &mut self,
        tx: TransactionId,
        action: TransitionAction,
        failure_reason: &str,
    ) -> Result<Effect<Withdrawal>, LedgerError> {
        let caller = Settler::Caller { engine_pays: false };
        self.update_withdrawal_by(tx, action, failure_reason, caller)
    }

    /// Phase 3 (complete or fail) and cancel, by transaction id, asked by
    /// `by`: a payout's claim on the withdrawal refuses anyone but that
    /// payout (see [`crate::domain::withdrawal`]'s rule of who may settle).
    pub fn update_withdrawal_by(
        &mut self,
        tx: TransactionId,
        action: TransitionAction,
        failure_reason: &str,
        by: Settler,
    ) -> Result<Effect<Withdrawal>, LedgerError> {
        let record = self.withdrawal_record(tx)?;
        let (from, record_currency, record_amount) =
            (record.status.kind(), record.currency, record.amount);
        let settles = matches!(action, TransitionAction::Complete | TransitionAction::Fail);
        match (by, record.status.payout_id()) {
            // The engine pays: phase 3 is its payouts' alone, for a claimed
            // withdrawal and for one still queued for a payout.
            (Settler::Caller { engine_pays: true }, owner)
                if settles && record.status.holds_lock() =>
            {
                return Err(LedgerError::PayoutInFlight {
                    transaction_id: tx,
                    payout_id: owner,
                });
            }
            // A payout settles only what it claimed (a pending withdrawal
            // is nobody's yet, one processing elsewhere is another's).
            (Settler::Payout { payout_id }, owner)
                if record.status.holds_lock() && owner != Some(payout_id) =>
            {
                return Err(LedgerError::InvalidTransition {
                    transaction_id: tx,
                    from,
                    action,
                });
            }
            _ => {}
        }
        match decide_transition(from, action) {
            Transition::Forbidden => Err(LedgerError::InvalidTransition {
                transaction_id: tx,
                from,
                action,
            }),
            Transition::AlreadyThere => Ok(Effect {
                output: self.withdrawal(tx)?,
                event: None,
            }),
            Transition::Apply => {
                let event = match action {
                    TransitionAction::Complete => Event::WithdrawalCompleted { tx },
                    TransitionAction::Fail => Event::WithdrawalFailed {
                        tx,
                        reason: failure_reason.to_string(),
                    },
                    TransitionAction::Cancel => Event::WithdrawalCancelled { tx },
                    TransitionAction::Return => {
                        self.check_credit_fits(record_currency, record_amount)?;
                        Event::WithdrawalReturned {
                            tx,
                            reason: failure_reason.to_string(),
                        }
                    }
                    TransitionAction::Release => Event::WithdrawalReleased { tx },
                    TransitionAction::Claim => {
                        return Err(LedgerError::Internal {
                            reason: "a claim needs its payout id: use claim_withdrawal".into(),
                        })
                    }
                };
                self.apply_checked(&event)?;
                Ok(Effect {
                    output: self.withdrawal(tx)?,
                    event: Some(event),
                })
            }
        }
    }

    /// A payout takes a pending withdrawal (pending → processing).
    pub fn claim_withdrawal(
        &mut self,
        tx: TransactionId,
        payout_id: u64,
    ) -> Result<Effect<Withdrawal>, LedgerError> {
        let from = self.withdrawal_record(tx)?.status.kind();
        match decide_transition(from, TransitionAction::Claim) {
            Transition::Apply => {
                let event = Event::WithdrawalClaimed { tx, payout_id };
                self.apply_checked(&event)?;
                Ok(Effect {
                    output: self.withdrawal(tx)?,
                    event: Some(event),
                })
            }
            _ => Err(LedgerError::InvalidTransition {
                transaction_id: tx,
                from,
                action: TransitionAction::Claim,
            }),
        }
    }

    /// Transfer, step 1 at the source: hold the funds so nothing else can
    /// spend them while the receiving account is asked.
    pub fn hold_transfer(
        &mut self,
        to: AccountId,
        currency: Currency,
        amount: Units,
        key: Option<IdempotencyKey>,
    ) -> Result<TransferHold, LedgerError> {
        let used_for = KeyUse::Transfer {
            to,
            currency: currency.code,
            amount,
        };
        if let Some(tx) = self.replayed_key(key.as_ref(), used_for)? {
            return Ok(TransferHold::Replayed(Transfer {
                transaction_id: tx,
                from: self.id,
                to,
                currency: currency.code,
                amount: currency.to_decimal(amount),
            }));
        }
        self.check_available(currency, amount)?;
        let tx = self.take_transaction_id();
        let entry = self.entry_mut(currency);
        entry.available -= amount;
        entry.held += amount;
        if let Some(key) = &key {
            self.idempotency.insert(
                key.clone(),
                KeyRecord {
                    used_for,
                    tx,
                    in_flight: true,
                },
            );
        }
        self.held_transfers.push(HeldTransfer {
            tx,
            to,
            currency,
            amount,
            key,
        });
        Ok(TransferHold::Held(tx))
    }

    /// Transfer, step 2 at the receiving account: credit it and return the
    /// one event that records both sides.
    pub fn receive_transfer(
        &mut self,
        tx: TransactionId,
        currency: Currency,
        amount: Units,
        key: Option<IdempotencyKey>,
    ) -> Result<Event, LedgerError> {
        self.check_credit_fits(currency, amount)?;
        let event = Event::Transferred {
            tx,
            to: self.id,
            currency,
            amount,
            key,
        };
        self.apply_checked(&event)?;
        Ok(event)
    }

    /// Transfer, step 3 at the source: the receiving side answered. On
    /// success the held funds leave for good; otherwise they are released.
    pub fn finish_transfer(
        &mut self,
        tx: TransactionId,
        received: bool,
    ) -> Result<Transfer, LedgerError> {
        let index = self
            .held_transfers
            .iter()
            .position(|h| h.tx == tx)
            .ok_or_else(|| LedgerError::InvalidInput {
                reason: format!("no transfer {tx} is held on account {}", self.id),
            })?;
        let held = self.held_transfers.swap_remove(index);
        let entry = self.entry_mut(held.currency);
        entry.held -= held.amount;
        entry.available += held.amount;
        if let Some(key) = &held.key {
            self.idempotency.remove(key);
        }
        let receipt = Transfer {
            transaction_id: tx,
            from: self.id,
            to: held.to,
            currency: held.currency.code,
            amount: held.currency.to_decimal(held.amount),
        };
        if received {
            // The receiving side logged the event; apply our side of it.
            self.apply_checked(&Event::Transferred {
                tx,
                to: held.to,
                currency: held.currency,
                amount: held.amount,
                key: held.key,
            })?;
        }
        Ok(receipt)
    }

    /// Applies a logged event to this account (its owner's side, the
    /// receiving side of a transfer, or both). Used live and by recovery.
    pub fn apply(&mut self, event: &Event) -> Result<(), ApplyError> {
        let id = self.id;
        let fail = |reason: &str| ApplyError {
            account: id,
            event: format!("{event:?}"),
            reason: reason.to_string(),
        };
        let Some(tx) = event.transaction_id() else {
            return Err(fail("a payout record changes no account"));
        };
        let owner = tx.account() == self.id;
        match event {
            Event::Deposited {
                currency,
                amount,
                key,
                ..
            } if owner => {
                let entry = self.entry_mut(*currency);
                let available =
                    credit(entry.available, *amount).ok_or_else(|| fail("balance overflow"))?;
                let deposited = entry
                    .deposited
                    .checked_add(*amount)
                    .ok_or_else(|| fail("deposited total overflow"))?;
                entry.available = available;
                entry.deposited = deposited;
                self.note_transaction(
                    tx,
                    key,
                    KeyUse::Deposit {
                        currency: currency.code,
                        amount: *amount,
                    },
                );
            }
            Event::WithdrawalRequested {
                currency,
                amount,
                key,
                ..
            } if owner => {
                // One search: where it goes is kept while the balance is
                // checked (a different field), then filled.
                let Err(slot) = self.withdrawals.search(tx.sequence()) else {
                    return Err(fail("a withdrawal with this id already exists"));
                };
                let entry = entry_in(&mut self.balances, *currency);
                if entry.available < *amount {
                    return Err(fail("available is below the withdrawal amount"));
                }
                entry.available -= amount;
                entry.locked += amount;
                let record = WithdrawalRecord {
                    currency: *currency,
                    amount: *amount,
                    status: WithdrawalStatus::Pending,
                };
                self.withdrawals.insert_at(slot, tx.sequence(), record);
                self.withdrawals_locking += 1;
                self.note_transaction(
                    tx,
                    key,
                    KeyUse::Withdrawal {
                        currency: currency.code,
                        amount: *amount,
                    },
                );
            }
            Event::WithdrawalCompleted { .. } if owner => {
                self.end_lock(tx, WithdrawalStatus::Completed)
                    .map_err(&fail)?;
            }
            Event::WithdrawalFailed { reason, .. } if owner => {
                let status = WithdrawalStatus::Failed {
                    reason: reason.clone(),
                };
                self.end_lock(tx, status).map_err(&fail)?;
            }
            Event::WithdrawalCancelled { .. } if owner => {
                if !matches!(self.withdrawal_status(tx), Some(WithdrawalStatus::Pending)) {
                    return Err(fail("only a pending withdrawal can be cancelled"));
                }
                self.end_lock(tx, WithdrawalStatus::Cancelled)
                    .map_err(&fail)?;
            }
            Event::Transferred {
                to,
                currency,
                amount,
                key,
                ..
            } if owner || *to == self.id => {
                if owner && *to == self.id {
                    return Err(fail("a transfer cannot go to its own source account"));
                }
                let entry = self.entry_mut(*currency);
                if owner {
                    if entry.available < *amount {
                        return Err(fail("available is below the transfer amount"));
                    }
                    entry.available -= amount;
                    self.note_transaction(
                        tx,
                        key,
                        KeyUse::Transfer {
                            to: *to,
                            currency: currency.code,
                            amount: *amount,
                        },
                    );
                } else {
                    entry.available =
                        credit(entry.available, *amount).ok_or_else(|| fail("balance overflow"))?;
                }
            }
            Event::WithdrawalClaimed { payout_id, .. } if owner => {
                if !matches!(self.withdrawal_status(tx), Some(WithdrawalStatus::Pending)) {
                    return Err(fail("only a pending withdrawal can be claimed"));
                }
                self.set_status(
                    tx,
                    WithdrawalStatus::Processing {
                        payout_id: *payout_id,
                    },
                );
            }
            Event::WithdrawalReleased { .. } if owner => {
                if !matches!(
                    self.withdrawal_status(tx),
                    Some(WithdrawalStatus::Processing { .. })
                ) {
                    return Err(fail("only a processing withdrawal can be released"));
                }
                self.set_status(tx, WithdrawalStatus::Pending);
            }
            Event::WithdrawalReturned { reason, .. } if owner => {
                let record = self
                    .withdrawals
                    .get(tx.sequence())
                    .filter(|r| r.status == WithdrawalStatus::Completed)
                    .ok_or_else(|| fail("only a completed withdrawal can be returned"))?;
                let (currency, amount) = (record.currency, record.amount);
                let entry = self.entry_mut(currency);
                let available =
                    credit(entry.available, amount).ok_or_else(|| fail("balance overflow"))?;
                let deposited = entry
                    .deposited
                    .checked_add(amount)
                    .ok_or_else(|| fail("deposited total overflow"))?;
                entry.available = available;
                entry.deposited = deposited;
                self.set_status(
                    tx,
                    WithdrawalStatus::Returned {
                        reason: reason.clone(),
                    },
                );
            }
            _ => return Err(fail("the event does not concern this account")),
        }
        Ok(())
    }

    /// Checks invariants 1 and 2 of the design on this account.
    pub fn check_invariants(&self) -> Result<(), String> {
        // What the withdrawals holding a lock add up to, per balance entry
        // (same index); on the stack for the usual few currencies.
        let mut few = [0 as Units; 4];
        let mut many = Vec::new();
        let locked_by_withdrawals: &mut [Units] = match few.get_mut(..self.balances.len()) {
            Some(few) => few,
            None => {
                many.resize(self.balances.len(), 0);
                &mut many
            }
        };
        let mut locking = 0u32;
        let mut never_held = None;
        for (_, record) in self.withdrawals.iter() {
            if !record.status.holds_lock() {
                continue;
            }
            locking += 1;
            let code = record.currency.code;
            match self.balances.iter().position(|b| b.currency.code == code) {
                Some(index) => {
                    let sum = &mut locked_by_withdrawals[index];
                    *sum = sum.checked_add(record.amount).ok_or_else(|| {
                        format!("account {}: pending {code} withdrawals overflow", self.id)
                    })?;
                }
                None => never_held = never_held.or(Some(code)),
            }
        }
        if locking != self.withdrawals_locking {
            return Err(format!(
                "account {}: {} withdrawals hold a lock but the counter says {}",
                self.id, locking, self.withdrawals_locking
            ));
        }
        for (entry, &expected) in self.balances.iter().zip(locked_by_withdrawals.iter()) {
            let code = entry.currency.code;
            if entry.available < 0 || entry.locked < 0 || entry.held < 0 {
                return Err(format!(
                    "account {} {code}: negative balance {entry:?}",
                    self.id
                ));
            }
            if entry.locked != expected {
                return Err(format!(
                    "account {} {code}: locked {} but pending withdrawals sum to {expected}",
                    self.id, entry.locked
                ));
            }
        }
        if let Some(code) = never_held {
            return Err(format!(
                "account {}: withdrawals lock {code} it never held",
                self.id
            ));
        }
        Ok(())
    }

    // ---- helpers ----

    /// `Some(tx)` if `key` was used before for exactly `used_for`; an error
    /// if it was used for something else or is still in flight.
    fn replayed_key(
        &self,
        key: Option<&IdempotencyKey>,
        used_for: KeyUse,
    ) -> Result<Option<TransactionId>, LedgerError> {
        let Some(key) = key else { return Ok(None) };
        match self.idempotency.get(key) {
            None => Ok(None),
            Some(record) if record.used_for != used_for => Err(LedgerError::IdempotencyConflict {
                key: key.to_string(),
            }),
            Some(record) if record.in_flight => Err(LedgerError::IdempotencyInProgress {
                key: key.to_string(),
            }),
            Some(record) => Ok(Some(record.tx)),
        }
    }

    fn note_transaction(
        &mut self,
        tx: TransactionId,
        key: &Option<IdempotencyKey>,
        used_for: KeyUse,
    ) {
        self.next_sequence = self.next_sequence.max(tx.sequence().saturating_add(1));
        if let Some(key) = key {
            self.idempotency.insert(
                key.clone(),
                KeyRecord {
                    used_for,
                    tx,
                    in_flight: false,
                },
            );
        }
    }

    fn take_transaction_id(&mut self) -> TransactionId {
        let tx = TransactionId::new(self.id, self.next_sequence);
        self.next_sequence += 1;
        tx
    }

    fn deposit_receipt(&self, tx: TransactionId, currency: Currency, amount: Units) -> Deposit {
        Deposit {
            transaction_id: tx,
            account: self.id,
            currency: currency.code,
            amount: currency.to_decimal(amount),
        }
    }

    fn check_available(&self, currency: Currency, amount: Units) -> Result<(), LedgerError> {
        let available = self.balance(currency).available;
        if available < amount {
            return Err(LedgerError::InsufficientFunds {
                currency: currency.code,
                available: currency.to_decimal(available),
                requested: currency.to_decimal(amount),
            });
        }
        Ok(())
    }

    fn check_credit_fits(&self, currency: Currency, amount: Units) -> Result<(), LedgerError> {
        let entry = self.balance(currency);
        let fits = entry
            .total()
            .checked_add(entry.held)
            .and_then(|t| credit(t, amount))
            .is_some();
        if !fits {
            return Err(LedgerError::InvalidAmount {
                amount: currency.to_decimal(amount),
                currency: currency.code,
                problem: AmountProblem::BalanceAboveMaximum {
                    maximum: currency.to_decimal(BALANCE_UNITS_MAX),
                },
            });
        }
        Ok(())
    }

    fn withdrawal_record(&self, tx: TransactionId) -> Result<&WithdrawalRecord, LedgerError> {
        if tx.account() != self.id {
            return Err(LedgerError::UnknownWithdrawal { transaction_id: tx });
        }
        self.withdrawals
            .get(tx.sequence())
            .ok_or(LedgerError::UnknownWithdrawal { transaction_id: tx })
    }

    /// Ends a withdrawal's lock with its terminal `status`: completed burns
    /// the locked amount, failed and cancelled return it to available. One
    /// search; everything is checked before anything changes.
    fn end_lock(
        &mut self,
        tx: TransactionId,
        status: WithdrawalStatus,
    ) -> Result<(), &'static str> {
        let record = self
            .withdrawals
            .get_mut(tx.sequence())
            .ok_or("unknown withdrawal")?;
        if !record.status.holds_lock() {
            return Err("the withdrawal is not pending");
        }
        let amount = record.amount;
        let entry = entry_in(&mut self.balances, record.currency);
        if entry.locked < amount {
            return Err("locked is below the withdrawal amount");
        }
        if status == WithdrawalStatus::Completed {
            entry.burned = entry
                .burned
                .checked_add(amount)
                .ok_or("burned total overflow")?;
        } else {
            entry.available += amount;
        }
        entry.locked -= amount;
        self.withdrawals_locking -= 1;
        record.status = status;
        Ok(())
    }

    fn withdrawal_status(&self, tx: TransactionId) -> Option<&WithdrawalStatus> {
        self.withdrawals.get(tx.sequence()).map(|r| &r.status)
    }

    fn set_status(&mut self, tx: TransactionId, status: WithdrawalStatus) {
        if let Some(record) = self.withdrawals.get_mut(tx.sequence()) {
            record.status = status;
        }
    }

    fn entry_mut(&mut self, currency: Currency) -> &mut BalanceEntry {
        entry_in(&mut self.balances, currency)
    }

    /// Applies an event that this account's own checks just allowed. A
    /// failure here means those checks and `apply` disagree: a bug, reported
    /// rather than hidden.
    fn apply_checked(&mut self, event: &Event) -> Result<(), LedgerError> {
        self.apply(event).map_err(|e| LedgerError::Internal {
            reason: e.to_string(),
        })
    }
}

/// An account's withdrawals by sequence number, as one vector sorted by it.
///
/// Sequence numbers are handed out in increasing order, so a new
/// withdrawal goes at the end; a lookup is a binary search. Compared with a
/// hash map this keeps an account's withdrawals in one allocation sized to
/// them (a map keeps up to twice the slots, plus control bytes), needs no
/// hashing, and walks them in order. Serialized exactly as the
/// `HashMap<u64, WithdrawalRecord>` it replaced: a map of its entries
/// (which a hash map wrote in no particular order), so snapshots read and
/// write the same bytes as before.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
struct Withdrawals(Vec<(u64, WithdrawalRecord)>);

impl Withdrawals {
    /// `Ok(index)` of `seq`, or `Err(index)` where it would go.
    fn search(&self, seq: u64) -> Result<usize, usize> {
        // The newest withdrawal is asked for most: try the end first.
        match self.0.last() {
            Some(&(last, _)) if last < seq => Err(self.0.len()),
            Some(&(last, _)) if last == seq => Ok(self.0.len() - 1),
            _ => self.0.binary_search_by_key(&seq, |(s, _)| *s),
        }
    }

    fn get(&self, seq: u64) -> Option<&WithdrawalRecord> {
        let index = self.search(seq).ok()?;
        Some(&self.0[index].1)
    }

    fn get_mut(&mut self, seq: u64) -> Option<&mut WithdrawalRecord> {
        let index = self.search(seq).ok()?;
        Some(&mut self.0[index].1)
    }

    /// Like [`get`](Self::get), for [`AccountState::warm`]: reads the
    /// entries a search for `seq` reads.
    fn warm(&self, seq: u64) -> Option<&WithdrawalRecord> {
        self.get(seq)
            .or_else(|| self.0.last().map(|(_, record)| record))
    }

    /// Puts `seq` at `index`, which [`search`](Self::search) gave for it.
    /// Grows by half when full rather than doubling: accounts hold a few
    /// withdrawals each, and millions of accounts stay in memory.
    fn insert_at(&mut self, index: usize, seq: u64, record: WithdrawalRecord) {
        debug_assert_eq!(self.search(seq), Err(index));
        if self.0.len() == self.0.capacity() {
            self.0.reserve_exact((self.0.len() / 2).max(2));
        }
        self.0.insert(index, (seq, record));
    }

    /// Oldest first.
    fn iter(&self) -> impl ExactSizeIterator<Item = (u64, &WithdrawalRecord)> + '_ {
        self.0.iter().map(|(seq, record)| (*seq, record))
    }
}

impl Serialize for Withdrawals {
    fn serialize<S: Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        serializer.collect_map(self.0.iter().map(|(seq, record)| (seq, record)))
    }
}

impl<'de> Deserialize<'de> for Withdrawals {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        struct Entries;

        impl<'de> Visitor<'de> for Entries {
            type Value = Withdrawals;

            fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str("a map of withdrawals by sequence number")
            }

            fn visit_map<A: MapAccess<'de>>(self, mut map: A) -> Result<Withdrawals, A::Error> {
                // Like serde's own maps: trust a length hint only so far.
                let hint = map.size_hint().unwrap_or(0).min(4096);
                let mut entries: Vec<(u64, WithdrawalRecord)> = Vec::with_capacity(hint);
                while let Some(entry) = map.next_entry()? {
                    entries.push(entry);
                }
                // A hash map keeps the last of repeated keys; so does this
                // (the stable sort keeps them in order, then every run of
                // one key is reduced to its last entry).
                entries.sort_by_key(|(seq, _)| *seq);
                entries.reverse();
                entries.dedup_by_key(|(seq, _)| *seq);
                entries.reverse();
                Ok(Withdrawals(entries))
            }
        }

        deserializer.deserialize_map(Entries)
    }
}

/// The balance in `currency` among `balances`, added at zero if missing.
/// A free function so that callers can hold it next to a borrow of another
/// field. Grows the vector one entry at a time: most accounts hold one
/// currency, and `Vec`'s default first allocation (room for 4 entries of 96
/// bytes) would make that one balance cost four times its size.
fn entry_in(balances: &mut Vec<BalanceEntry>, currency: Currency) -> &mut BalanceEntry {
    let index = match balances
        .iter()
        .position(|b| b.currency.code == currency.code)
    {
        Some(index) => index,
        None => {
            balances.reserve_exact(1);
            balances.push(BalanceEntry::new(currency));
            balances.len() - 1
        }
    };
    &mut balances[index]
}

/// Adds to a balance, refusing to pass [`BALANCE_UNITS_MAX`].
fn credit(balance: Units, amount: Units) -> Option<Units> {
    balance
        .checked_add(amount)
        .filter(|&b| b <= BALANCE_UNITS_MAX)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::domain::money::usd;

    /// An account with 100.00 USD and one pending withdrawal of 30.00;
    /// also returns every event logged, to replay.
    fn funded() -> (AccountState, TransactionId, Vec<Event>) {
        let mut account = AccountState::new(7);
        let mut log = Vec::new();
        log.extend(account.deposit(usd(), 10_000, None).unwrap().event);
        let requested = account.request_withdrawal(usd(), 3_000, None, 10).unwrap();
        log.extend(requested.event);
        (account, requested.output.transaction_id, log)
    }

    fn replayed(log: &[Event]) -> AccountState {
        let mut account = AccountState::new(7);
        for event in log {
            account.apply(event).unwrap();
        }
        account
    }

    #[test]
    fn cancel_after_payout_claim_is_rejected_and_changes_nothing() {
        let (mut account, tx, _) = funded();
        account.claim_withdrawal(tx, 1).unwrap();
        let before = account.clone();
        let refused = account.update_withdrawal(tx, TransitionAction::Cancel, "");
        assert!(matches!(
            refused,
            Err(LedgerError::InvalidTransition {
                from: crate::domain::withdrawal::StatusKind::Processing,
                action: TransitionAction::Cancel,
                ..
            })
        ));
        assert_eq!(account, before);
    }

    #[test]
    fn only_the_owning_payout_settles_a_claimed_withdrawal_when_the_engine_pays() {
        use crate::domain::withdrawal::Settler;
        let caller = Settler::Caller { engine_pays: true };
        let (mut account, tx, _) = funded();
        // Pending: queued for the engine's payouts. A payout that did not
        // claim it cannot settle it, and neither can a caller (the bank has
        // not paid it; a payout still may); the host of an external-mode
        // ledger can (checked on a copy).
        let refused = account.update_withdrawal_by(
            tx,
            TransitionAction::Complete,
            "",
            Settler::Payout { payout_id: 5 },
        );
        assert!(matches!(
            refused,
            Err(LedgerError::InvalidTransition { .. })
        ));
        assert_eq!(
            account
                .update_withdrawal_by(tx, TransitionAction::Complete, "", caller)
                .unwrap_err(),
            LedgerError::PayoutInFlight {
                transaction_id: tx,
                payout_id: None
            }
        );
        let mut copy = account.clone();
        let host = Settler::Caller { engine_pays: false };
        assert!(copy
            .update_withdrawal_by(tx, TransitionAction::Complete, "", host)
            .is_ok());
        account.claim_withdrawal(tx, 5).unwrap();
        let before = account.clone();
        for action in [TransitionAction::Complete, TransitionAction::Fail] {
            let refused = account.update_withdrawal_by(tx, action, "x", caller);
            assert_eq!(
                refused.unwrap_err(),
                LedgerError::PayoutInFlight {
                    transaction_id: tx,
                    payout_id: Some(5)
                }
            );
            let other = Settler::Payout { payout_id: 6 };
            let refused = account.update_withdrawal_by(tx, action, "x", other);
            assert!(matches!(
                refused,
                Err(LedgerError::InvalidTransition { .. })
            ));
        }
        assert_eq!(account, before, "refusals change nothing");
        // The host pays (external mode): a caller settles it as before.
        let mut external = account.clone();
        let host = Settler::Caller { engine_pays: false };
        assert!(external
            .update_withdrawal_by(tx, TransitionAction::Fail, "x", host)
            .is_ok());
        // The owner settles it; repeating its outcome is a no-op.
        let owner = Settler::Payout { payout_id: 5 };
        let done = account
            .update_withdrawal_by(tx, TransitionAction::Complete, "", owner)
            .unwrap();
        assert!(done.event.is_some());
        let again = account
            .update_withdrawal_by(tx, TransitionAction::Complete, "", owner)
            .unwrap();
        assert!(again.event.is_none());
        let contradicted = account.update_withdrawal_by(tx, TransitionAction::Fail, "x", owner);
        assert!(matches!(
            contradicted,
            Err(LedgerError::InvalidTransition { .. })
        ));
    }

    #[test]
    fn a_claimed_withdrawal_stays_locked_and_completes_or_fails_like_a_pending_one() {
        let (mut account, tx, mut log) = funded();
        let claimed = account.claim_withdrawal(tx, 42).unwrap();
        assert_eq!(claimed.output.payout_id, Some(42));
        log.extend(claimed.event);
        assert_eq!(account.balance(usd()).locked, 3_000);
        let done = account
            .update_withdrawal(tx, TransitionAction::Complete, "")
            .unwrap();
        log.extend(done.event);
        let b = account.balance(usd());
        assert_eq!((b.available, b.locked, b.burned), (7_000, 0, 3_000));
        account.check_invariants().unwrap();
        assert_eq!(replayed(&log), account);
    }

    #[test]
    fn a_released_claim_is_pending_again_and_can_be_cancelled() {
        let (mut account, tx, mut log) = funded();
        log.extend(account.claim_withdrawal(tx, 1).unwrap().event);
        assert!(account.claim_withdrawal(tx, 2).is_err(), "claimed twice");
        log.extend(
            account
                .update_withdrawal(tx, TransitionAction::Release, "")
                .unwrap()
                .event,
        );
        log.extend(
            account
                .update_withdrawal(tx, TransitionAction::Cancel, "")
                .unwrap()
                .event,
        );
        assert_eq!(account.balance(usd()).available, 10_000);
        account.check_invariants().unwrap();
        assert_eq!(replayed(&log), account);
    }

    #[test]
    fn a_returned_withdrawal_credits_available_back_and_keeps_the_totals_exact() {
        let (mut account, tx, mut log) = funded();
        log.extend(
            account
                .update_withdrawal(tx, TransitionAction::Complete, "")
                .unwrap()
                .event,
        );
        assert!(account
            .update_withdrawal(tx, TransitionAction::Fail, "x")
            .is_err());
        let returned = account
            .update_withdrawal(tx, TransitionAction::Return, "account closed")
            .unwrap();
        log.extend(returned.event);
        assert_eq!(
            returned.output.status,
            WithdrawalStatus::Returned {
                reason: "account closed".into()
            }
        );
        let b = account.balance(usd());
        assert_eq!((b.available, b.locked), (10_000, 0));
        // total = deposited − burned: 100 = (100 + 30 returned) − 30 paid.
        assert_eq!(b.total(), b.deposited - b.burned);
        let again = account
            .update_withdrawal(tx, TransitionAction::Return, "account closed")
            .unwrap();
        assert!(again.event.is_none(), "a repeated return changes nothing");
        assert_eq!(replayed(&log), account);
    }

    fn record(amount: Units, status: WithdrawalStatus) -> WithdrawalRecord {
        WithdrawalRecord {
            currency: usd(),
            amount,
            status,
        }
    }

    #[test]
    fn withdrawals_encode_exactly_like_the_hash_map_they_replaced() {
        let config = bincode::config::standard();
        let entries = [
            (3, record(300, WithdrawalStatus::Completed)),
            (9, record(900, WithdrawalStatus::Pending)),
            (
                12,
                record(
                    1_200,
                    WithdrawalStatus::Failed {
                        reason: "no".into(),
                    },
                ),
            ),
        ];
        // One entry: the bytes are the same.
        let one = Withdrawals(entries[..1].to_vec());
        let map: HashMap<u64, WithdrawalRecord> = entries[..1].iter().cloned().collect();
        assert_eq!(
            bincode::serde::encode_to_vec(&one, config).unwrap(),
            bincode::serde::encode_to_vec(&map, config).unwrap()
        );
        // Several: a map's bytes (in its own order) read back sorted, and
        // ours read back as the same map.
        let map: HashMap<u64, WithdrawalRecord> = entries.iter().cloned().collect();
        let from_map = bincode::serde::encode_to_vec(&map, config).unwrap();
        let (read, _): (Withdrawals, _) =
            bincode::serde::decode_from_slice(&from_map, config).unwrap();
        assert_eq!(read, Withdrawals(entries.to_vec()));
        let ours = bincode::serde::encode_to_vec(&read, config).unwrap();
        let (as_map, _): (HashMap<u64, WithdrawalRecord>, _) =
            bincode::serde::decode_from_slice(&ours, config).unwrap();
        assert_eq!(as_map, map);
        assert_eq!(ours.len(), from_map.len());
    }

    #[test]
    fn a_repeated_withdrawal_key_keeps_the_last_entry_like_a_hash_map() {
        let config = bincode::config::standard();
        // Hand-made map bytes: 3 entries, key 5 twice.
        let mut bytes = vec![3];
        for (seq, amount) in [(5u64, 1), (2, 2), (5, 3)] {
            bytes.extend(bincode::serde::encode_to_vec(seq, config).unwrap());
            let entry = record(amount, WithdrawalStatus::Pending);
            bytes.extend(bincode::serde::encode_to_vec(&entry, config).unwrap());
        }
        let (map, _): (HashMap<u64, WithdrawalRecord>, _) =
            bincode::serde::decode_from_slice(&bytes, config).unwrap();
        let (ours, _): (Withdrawals, _) =
            bincode::serde::decode_from_slice(&bytes, config).unwrap();
        assert_eq!(ours.iter().map(|(seq, _)| seq).collect::<Vec<_>>(), [2, 5]);
        assert_eq!(ours.get(5), map.get(&5));
        assert_eq!(ours.get(5).map(|r| r.amount), Some(3));
    }

    #[test]
    fn withdrawals_logged_out_of_order_are_still_found() {
        let mut account = AccountState::new(7);
        account
            .apply(&Event::Deposited {
                tx: TransactionId::new(7, 1),
                currency: usd(),
                amount: 10_000,
                key: None,
            })
            .unwrap();
        for seq in [9, 4, 6, 2] {
            account
                .apply(&Event::WithdrawalRequested {
                    tx: TransactionId::new(7, seq),
                    currency: usd(),
                    amount: seq.into(),
                    key: None,
                })
                .unwrap();
        }
        let seqs: Vec<u64> = account.withdrawals().map(|(tx, _)| tx.sequence()).collect();
        assert_eq!(seqs, [2, 4, 6, 9]);
        for seq in [2, 4, 6, 9] {
            let tx = TransactionId::new(7, seq);
            assert_eq!(
                account.withdrawal(tx).unwrap().status,
                WithdrawalStatus::Pending
            );
            account.apply(&Event::WithdrawalCompleted { tx }).unwrap();
        }
        let again = Event::WithdrawalRequested {
            tx: TransactionId::new(7, 4),
            currency: usd(),
            amount: 1,
            key: None,
        };
        assert!(
            account.apply(&again).is_err(),
            "a withdrawal id is used once"
        );
        assert!(account.withdrawal(TransactionId::new(7, 5)).is_err());
        account.check_invariants().unwrap();
        assert_eq!(account.balance(usd()).burned, 21);
    }

    #[test]
    fn a_log_that_cancels_a_claimed_withdrawal_is_refused_on_replay() {
        let (_, tx, mut log) = funded();
        log.push(Event::WithdrawalClaimed { tx, payout_id: 1 });
        log.push(Event::WithdrawalCancelled { tx });
        let mut account = AccountState::new(7);
        let results: Vec<_> = log.iter().map(|e| account.apply(e)).collect();
        assert!(results[..3].iter().all(Result::is_ok));
        assert!(results[3].is_err());
    }
}
