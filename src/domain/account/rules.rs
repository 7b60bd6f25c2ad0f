//! Deciding each command on an account: deposit (phase 0), request a
//! withdrawal (phase 1), a payout's claim, and phase 3 / cancel / return /
//! release by transaction id. Each checks everything that could refuse it,
//! in the order `crate::error` documents (idempotency key, who may settle,
//! the state machine, the pending cap, funds, the balance ceiling), then
//! builds the event and applies it through `apply.rs`, so a refusal
//! changes nothing. Each takes the time (`at`) the engine stamps the event
//! with. Also the checks `transfers.rs` shares: a key's replay, available
//! funds, room under the ceiling.

use crate::domain::event::Event;
use crate::domain::ids::{IdempotencyKey, TransactionId};
use crate::domain::money::{Currency, Units, BALANCE_UNITS_MAX};
use crate::domain::receipts::Deposit;
use crate::domain::time::UnixMs;
use crate::domain::withdrawal::{
    decide_transition, Settler, Transition, TransitionAction, Withdrawal, WithdrawalRecord,
    WithdrawalStatus,
};
use crate::error::{AmountProblem, LedgerError};

use super::{credit, AccountState, Effect, KeyUse};

impl AccountState {
    /// Phase 0: credit `amount` to available.
    pub fn deposit(
        &mut self,
        currency: Currency,
        amount: Units,
        key: Option<IdempotencyKey>,
        at: UnixMs,
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
        self.apply_checked(&event, at)?;
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
        at: UnixMs,
    ) -> Result<Effect<Withdrawal>, LedgerError> {
        let used_for = KeyUse::Withdrawal {
            currency: currency.code,
            amount,
        };
        if let Some(tx) = self.replayed_key(key.as_ref(), used_for)? {
            // The first result: the withdrawal as it was created.
            let created_at = self.withdrawals.get(tx.sequence()).map(|w| w.created_at);
            let created_at = created_at.unwrap_or(UnixMs::UNKNOWN);
            let first = WithdrawalRecord {
                currency,
                amount,
                status: WithdrawalStatus::Pending,
                created_at,
                updated_at: created_at,
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
        self.apply_withdrawal_event(tx, event, at)
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
        let record = self.withdrawal_record(tx)?;
        check_settler(tx, action, &record.status, by)?;
        let (from, currency, amount) = (record.status.kind(), record.currency, record.amount);
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
                let event = self.transition_event(tx, action, failure_reason, currency, amount)?;
                self.apply_withdrawal_event(tx, event, at)
            }
        }
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

    /// The event of an allowed transition of withdrawal `tx` (of `amount`
    /// in `currency`); a return must still fit under the ceiling.
    fn transition_event(
        &self,
        tx: TransactionId,
        action: TransitionAction,
        failure_reason: &str,
        currency: Currency,
        amount: Units,
    ) -> Result<Event, LedgerError> {
        let reason = || failure_reason.to_string();
        Ok(match action {
            TransitionAction::Complete => Event::WithdrawalCompleted { tx },
            TransitionAction::Fail => Event::WithdrawalFailed {
                tx,
                reason: reason(),
            },
            TransitionAction::Cancel => Event::WithdrawalCancelled { tx },
            TransitionAction::Return => {
                self.check_credit_fits(currency, amount)?;
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
        used_for: KeyUse,
    ) -> Result<Option<TransactionId>, LedgerError> {
        let Some(key) = key else { return Ok(None) };
        match self.idempotency.get(key) {
            None if self.key_expired(key) => Err(LedgerError::IdempotencyKeyExpired {
                key: key.to_string(),
            }),
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

    fn deposit_receipt(&self, tx: TransactionId, currency: Currency, amount: Units) -> Deposit {
        Deposit {
            transaction_id: tx,
            account: self.id,
            currency: currency.code,
            amount: currency.to_decimal(amount),
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
