//! Deciding each command on an account: deposit (phase 0), request a
//! withdrawal (phase 1), a payout's claim, phase 3 (in full or in part) /
//! cancel / return / release by transaction id, and a pending
//! withdrawal's expiry. Each checks everything that could refuse it, in
//! the order `crate::error` documents (idempotency key, a freeze, who may
//! settle, the state machine, the pending cap, the limits, funds, the
//! balance ceiling), then builds the event and applies it through
//! `apply.rs`, so a refusal changes nothing. Each takes the time (`at`)
//! the engine stamps the event with, and the [`Policy`] the ledger was
//! configured with (pending cap, limits, fee account). Also the checks
//! `transfers.rs` shares: a key's replay, available funds, room under the
//! ceiling.

use rust_decimal::Decimal;

use crate::domain::details::{FeeCollected, Metadata, WithdrawalDetails, EXPIRED_REASON};
use crate::domain::event::Event;
use crate::domain::ids::{AccountId, IdempotencyKey, TransactionId};
use crate::domain::money::{Currency, Units, BALANCE_UNITS_MAX};
use crate::domain::payouts::paid_units;
use crate::domain::policy::{FreezeScope, Policy};
use crate::domain::receipts::Deposit;
use crate::domain::time::UnixMs;
use crate::domain::withdrawal::{
    decide_transition, KeptExtras, Settler, Transition, TransitionAction, Withdrawal,
    WithdrawalRecord, WithdrawalStatus,
};
use crate::error::{AmountProblem, FundsPart, LedgerError};

use super::{credit, AccountState, Effect, KeyUse};

/// A withdrawal request in minor units, as the engine hands it to the
/// account. `details.expires_at` is ignored: the request's `expires_in`
/// (milliseconds) sets it from the time the request is made.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct WithdrawalRequest {
    pub currency: Currency,
    pub amount: Units,
    pub key: Option<IdempotencyKey>,
    pub details: WithdrawalDetails,
    pub expires_in: Option<u64>,
}

/// Phase 3 as asked: complete (`paid`: in part) or fail, cancel, return or
/// release, with the reason a failure or return gives.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Settlement {
    pub action: TransitionAction,
    pub reason: String,
    /// A completion that paid only this much of the amount (in the
    /// withdrawal's currency, read exactly there).
    pub paid: Option<Decimal>,
}

impl AccountState {
    /// Phase 0: credit `amount` to available.
    pub fn deposit(
        &mut self,
        currency: Currency,
        amount: Units,
        key: Option<IdempotencyKey>,
        at: UnixMs,
    ) -> Result<Effect<Deposit>, LedgerError> {
        self.deposit_with(currency, amount, key, Metadata::default(), at)
    }

    /// Phase 0 with the metadata the deposit keeps.
    pub fn deposit_with(
        &mut self,
        currency: Currency,
        amount: Units,
        key: Option<IdempotencyKey>,
        metadata: Metadata,
        at: UnixMs,
    ) -> Result<Effect<Deposit>, LedgerError> {
        let metadata = metadata.boxed();
        let used_for = || KeyUse::deposit(currency.code, amount, metadata.as_deref());
        if let Some(tx) = self.replayed_key(key.as_ref(), used_for)? {
            return Ok(Effect {
                output: self.deposit_receipt(tx, currency, amount, metadata.as_deref()),
                event: None,
            });
        }
        self.check_not_frozen(FreezeScope::All, at)?;
        self.check_credit_fits(currency, amount)?;
        let tx = self.take_transaction_id();
        let event = Event::Deposited {
            tx,
            currency,
            amount,
            key,
            metadata,
        };
        self.apply_checked(&event, at)?;
        let metadata = match &event {
            Event::Deposited { metadata, .. } => metadata.as_deref(),
            _ => None,
        };
        Ok(Effect {
            output: self.deposit_receipt(tx, currency, amount, metadata),
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
        at: UnixMs,
    ) -> Result<Effect<Withdrawal>, LedgerError> {
        let request = WithdrawalRequest {
            currency,
            amount,
            key,
            details: WithdrawalDetails::default(),
            expires_in: None,
        };
        self.request_withdrawal_with(request, &Policy::new(pending_max), at)
    }

    /// Phase 1 with a fee, destination, metadata or expiry, judged by
    /// `policy`: the amount and the fee are locked together (one event),
    /// or neither is.
    pub fn request_withdrawal_with(
        &mut self,
        request: WithdrawalRequest,
        policy: &Policy,
        at: UnixMs,
    ) -> Result<Effect<Withdrawal>, LedgerError> {
        let WithdrawalRequest {
            currency,
            amount,
            key,
            mut details,
            expires_in,
        } = request;
        if details.fee.is_some() && policy.fee_account.is_none() {
            return Err(LedgerError::FeesDisabled);
        }
        details.expires_at = expires_in.map(|ms| UnixMs::from_millis(at.as_millis() + ms));
        let details = details.boxed();
        let used_for = || KeyUse::withdrawal(currency.code, amount, details.as_deref(), at);
        if let Some(tx) = self.replayed_key(key.as_ref(), used_for)? {
            return Ok(Effect {
                output: self.first_result(tx, currency, amount, details),
                event: None,
            });
        }
        self.check_not_frozen(FreezeScope::Withdrawals, at)?;
        if self.withdrawals_locking >= policy.pending_withdrawals_max {
            return Err(LedgerError::TooManyPendingWithdrawals {
                account: self.id,
                limit: policy.pending_withdrawals_max,
            });
        }
        self.check_limits(policy, currency, amount, at)?;
        self.check_withdrawal_funds(currency, amount, details.as_deref())?;
        let tx = self.take_transaction_id();
        let event = Event::WithdrawalRequested {
            tx,
            currency,
            amount,
            key,
            details,
        };
        self.apply_withdrawal_event(tx, event, at)
    }

    /// A keyed request's replay answers its first result: the withdrawal
    /// as it was created.
    fn first_result(
        &self,
        tx: TransactionId,
        currency: Currency,
        amount: Units,
        details: Option<Box<WithdrawalDetails>>,
    ) -> Withdrawal {
        let made = self.withdrawals.get(tx.sequence());
        let created_at = made.map_or(UnixMs::UNKNOWN, |w| w.created_at);
        // The details as made (their expiry is a time, set when it was).
        let details = made
            .and_then(|w| w.extras.details(currency.code))
            .or(details.map(|d| *d));
        let extras = KeptExtras::of_request(currency.code, details.as_ref());
        let first = WithdrawalRecord {
            currency,
            amount,
            status: WithdrawalStatus::Pending,
            created_at,
            updated_at: created_at,
            extras,
        };
        first.view(tx)
    }

    /// Whether available covers the amount and the fee; if not, which of
    /// them falls short (the amount first; when both share a currency, the
    /// fee is short if the amount alone fits).
    fn check_withdrawal_funds(
        &self,
        currency: Currency,
        amount: Units,
        details: Option<&WithdrawalDetails>,
    ) -> Result<(), LedgerError> {
        self.check_available_for(currency, amount, FundsPart::Amount)?;
        let Some(fee) = details.and_then(|d| d.fee) else {
            return Ok(());
        };
        if fee.currency.code != currency.code {
            return self.check_available_for(fee.currency, fee.amount, FundsPart::Fee);
        }
        let both = amount.checked_add(fee.amount).unwrap_or(Units::MAX);
        let available = self.balance(currency).available;
        if available < both {
            return Err(LedgerError::InsufficientFunds {
                currency: currency.code,
                available: currency.to_decimal(available - amount),
                requested: currency.to_decimal(fee.amount),
                part: FundsPart::Fee,
            });
        }
        Ok(())
    }

    /// Phase 3 (complete or fail) and cancel, by transaction id, as a
    /// caller of a ledger whose host pays (external mode).
    pub fn update_withdrawal(
        &mut self,
        tx: TransactionId,
        action: TransitionAction,
        failure_reason: &str,
        at: UnixMs,
    ) -> Result<Effect<Withdrawal>, LedgerError> {
        let caller = Settler::Caller { engine_pays: false };
        self.update_withdrawal_by(tx, action, failure_reason, caller, at)
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
        at: UnixMs,
    ) -> Result<Effect<Withdrawal>, LedgerError> {
        let settlement = Settlement {
            action,
            reason: failure_reason.to_string(),
            paid: None,
        };
        self.settle_withdrawal(tx, settlement, None, by, at)
    }

    /// Phase 3 in full or in part, cancel, return or release of withdrawal
    /// `tx`, asked by `by`; a completion moves its fee to `fee_account`
    /// (with none configured, the fee is released to its owner instead).
    pub fn settle_withdrawal(
        &mut self,
        tx: TransactionId,
        settlement: Settlement,
        fee_account: Option<AccountId>,
        by: Settler,
        at: UnixMs,
    ) -> Result<Effect<Withdrawal>, LedgerError> {
        let action = settlement.action;
        let record = self.withdrawal_record(tx)?;
        check_settler(tx, action, &record.status, by)?;
        let from = record.status.kind();
        match decide_transition(from, action) {
            Transition::Forbidden => Err(LedgerError::InvalidTransition {
                transaction_id: tx,
                from,
                action,
            }),
            Transition::AlreadyThere => {
                if matches!(by, Settler::Caller { .. }) {
                    self.check_same_completion(tx, &settlement)?;
                }
                Ok(Effect {
                    output: self.withdrawal(tx)?,
                    event: None,
                })
            }
            Transition::Apply => {
                let event = self.transition_event(tx, &settlement, fee_account)?;
                self.apply_withdrawal_event(tx, event, at)
            }
        }
    }

    /// Fails withdrawal `tx` with reason `expired` if it is still pending
    /// and its expiry passed at `at`; otherwise (claimed by a payout since,
    /// settled, not expiring yet, forgotten) changes nothing and answers
    /// `None`. An unknown payout outcome is never released by a timer.
    pub fn expire_withdrawal(
        &mut self,
        tx: TransactionId,
        at: UnixMs,
    ) -> Result<Option<Effect<Withdrawal>>, LedgerError> {
        let Some(record) = self.withdrawal_record_of(tx) else {
            return Ok(None);
        };
        let due = record.extras.expires_at().is_some_and(|end| end <= at);
        if !due || record.status != WithdrawalStatus::Pending {
            return Ok(None);
        }
        let event = Event::WithdrawalFailed {
            tx,
            reason: EXPIRED_REASON.to_string(),
        };
        self.apply_withdrawal_event(tx, event, at).map(Some)
    }

    /// The pending withdrawals of this account that expire, with when.
    pub fn expiring(&self) -> impl Iterator<Item = (TransactionId, UnixMs)> + '_ {
        self.withdrawals().filter_map(|(tx, record)| {
            let end = record.extras.expires_at()?;
            (record.status == WithdrawalStatus::Pending).then_some((tx, end))
        })
    }

    /// A payout takes a pending withdrawal (pending → processing).
    pub fn claim_withdrawal(
        &mut self,
        tx: TransactionId,
        payout_id: u64,
        at: UnixMs,
    ) -> Result<Effect<Withdrawal>, LedgerError> {
        let from = self.withdrawal_record(tx)?.status.kind();
        match decide_transition(from, TransitionAction::Claim) {
            Transition::Apply => {
                let event = Event::WithdrawalClaimed { tx, payout_id };
                self.apply_withdrawal_event(tx, event, at)
            }
            _ => Err(LedgerError::InvalidTransition {
                transaction_id: tx,
                from,
                action: TransitionAction::Claim,
            }),
        }
    }

    /// The event of an allowed transition of withdrawal `tx`; a return
    /// must still fit under the ceiling, a partial completion pay more
    /// than 0 and at most the amount.
    fn transition_event(
        &self,
        tx: TransactionId,
        settlement: &Settlement,
        fee_account: Option<AccountId>,
    ) -> Result<Event, LedgerError> {
        let record = self.withdrawal_record(tx)?;
        let reason = || settlement.reason.clone();
        Ok(match settlement.action {
            TransitionAction::Complete => {
                let paid = self.check_paid(tx, record, settlement.paid)?;
                let fee = record.fee().map(|fee| FeeCollected {
                    to: fee_account.unwrap_or(self.id),
                    currency: fee.currency,
                    amount: fee.amount,
                });
                Event::WithdrawalCompleted { tx, paid, fee }
            }
            TransitionAction::Fail => Event::WithdrawalFailed {
                tx,
                reason: reason(),
            },
            TransitionAction::Cancel => Event::WithdrawalCancelled { tx },
            TransitionAction::Return => {
                self.check_credit_fits(record.currency, record.paid())?;
                Event::WithdrawalReturned {
                    tx,
                    reason: reason(),
                }
            }
            TransitionAction::Release => Event::WithdrawalReleased { tx },
            TransitionAction::Claim => {
                return Err(LedgerError::Internal {
                    reason: "a claim needs its payout id: use claim_withdrawal".into(),
                })
            }
        })
    }

    /// A completion's paid amount: `None` for the whole amount (a partial
    /// amount equal to it is the whole); refused unless above 0 and at most
    /// the amount.
    fn check_paid(
        &self,
        tx: TransactionId,
        record: &WithdrawalRecord,
        paid: Option<Decimal>,
    ) -> Result<Option<Units>, LedgerError> {
        let Some(paid) = paid else { return Ok(None) };
        match paid_units(record.currency, paid)? {
            paid if paid == record.amount => Ok(None),
            paid if paid > 0 && paid < record.amount => Ok(Some(paid)),
            paid => Err(LedgerError::InvalidPaidAmount {
                transaction_id: tx,
                amount: record.currency.to_decimal(record.amount),
                paid: record.currency.to_decimal(paid),
            }),
        }
    }

    /// A caller's completion repeated on a completed withdrawal must
    /// report what it paid (a bad amount is refused as it would be the
    /// first time). A payout's repeated answer is its run's to reconcile.
    fn check_same_completion(
        &self,
        tx: TransactionId,
        settlement: &Settlement,
    ) -> Result<(), LedgerError> {
        if settlement.action != TransitionAction::Complete {
            return Ok(());
        }
        let record = self.withdrawal_record(tx)?;
        let reported = self
            .check_paid(tx, record, settlement.paid)?
            .unwrap_or(record.amount);
        if reported == record.paid() {
            return Ok(());
        }
        Err(LedgerError::CompletedOtherwise {
            transaction_id: tx,
            paid: record.currency.to_decimal(record.paid()),
            reported: record.currency.to_decimal(reported),
        })
    }

    /// Applies a withdrawal's event a rule decided, stamped `at`, and
    /// answers the withdrawal as it is now.
    fn apply_withdrawal_event(
        &mut self,
        tx: TransactionId,
        event: Event,
        at: UnixMs,
    ) -> Result<Effect<Withdrawal>, LedgerError> {
        self.apply_checked(&event, at)?;
        Ok(Effect {
            output: self.withdrawal(tx)?,
            event: Some(event),
        })
    }

    /// Applies an event that this account's own checks just allowed. A
    /// failure here means those checks and `apply` disagree, or an
    /// invariant broke: a bug, reported rather than hidden.
    pub(super) fn apply_checked(&mut self, event: &Event, at: UnixMs) -> Result<(), LedgerError> {
        self.apply(event, at).map_err(|e| LedgerError::Internal {
            reason: e.to_string(),
        })
    }

    /// `Some(tx)` if `key` was used before for exactly `used_for`; an error
    /// if it was used for something else, is still in flight, or expired
    /// (only its fingerprint is left: whatever it was used for is gone).
    pub(super) fn replayed_key(
        &self,
        key: Option<&IdempotencyKey>,
        used_for: impl FnOnce() -> KeyUse,
    ) -> Result<Option<TransactionId>, LedgerError> {
        let Some(key) = key else { return Ok(None) };
        let Some(record) = self.idempotency.get(key) else {
            if self.key_expired(key) {
                return Err(LedgerError::IdempotencyKeyExpired {
                    key: key.to_string(),
                });
            }
            return Ok(None);
        };
        // What the use carried is fingerprinted (SHA-256) only here, when
        // a key was given and used before: unkeyed operations never pay it.
        if record.used_for != used_for() {
            return Err(LedgerError::IdempotencyConflict {
                key: key.to_string(),
            });
        }
        if record.in_flight {
            return Err(LedgerError::IdempotencyInProgress {
                key: key.to_string(),
            });
        }
        Ok(Some(record.tx))
    }

    pub(super) fn take_transaction_id(&mut self) -> TransactionId {
        let tx = TransactionId::new(self.id, self.next_sequence);
        self.next_sequence += 1;
        tx
    }

    pub(super) fn check_available(
        &self,
        currency: Currency,
        amount: Units,
    ) -> Result<(), LedgerError> {
        self.check_available_for(currency, amount, FundsPart::Amount)
    }

    fn check_available_for(
        &self,
        currency: Currency,
        amount: Units,
        part: FundsPart,
    ) -> Result<(), LedgerError> {
        let available = self.balance(currency).available;
        if available < amount {
            return Err(LedgerError::InsufficientFunds {
                currency: currency.code,
                available: currency.to_decimal(available),
                requested: currency.to_decimal(amount),
                part,
            });
        }
        Ok(())
    }

    /// Whether crediting `amount` keeps the balance (held funds included)
    /// under [`BALANCE_UNITS_MAX`].
    pub(super) fn check_credit_fits(
        &self,
        currency: Currency,
        amount: Units,
    ) -> Result<(), LedgerError> {
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

    fn deposit_receipt(
        &self,
        tx: TransactionId,
        currency: Currency,
        amount: Units,
        metadata: Option<&Metadata>,
    ) -> Deposit {
        Deposit {
            transaction_id: tx,
            account: self.id,
            currency: currency.code,
            amount: currency.to_decimal(amount),
            metadata: metadata.cloned().unwrap_or_default(),
        }
    }
}

/// Who may settle a withdrawal (design §6): while the engine pays, phase 3
/// of a withdrawal still holding a lock is its payouts' alone (queued for
/// one, or claimed by one); a payout settles only what it claimed (a
/// pending withdrawal is nobody's yet, one processing elsewhere is
/// another's).
fn check_settler(
    tx: TransactionId,
    action: TransitionAction,
    status: &WithdrawalStatus,
    by: Settler,
) -> Result<(), LedgerError> {
    let settles = matches!(action, TransitionAction::Complete | TransitionAction::Fail);
    let owner = status.payout_id();
    match by {
        Settler::Caller { engine_pays: true } if settles && status.holds_lock() => {
            Err(LedgerError::PayoutInFlight {
                transaction_id: tx,
                payout_id: owner,
            })
        }
        Settler::Payout { payout_id } if status.holds_lock() && owner != Some(payout_id) => {
            Err(LedgerError::InvalidTransition {
                transaction_id: tx,
                from: status.kind(),
                action,
            })
        }
        _ => Ok(()),
    }
}
