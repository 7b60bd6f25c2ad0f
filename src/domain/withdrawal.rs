//! The withdrawal (pending burn) state machine, with no runtime attached.
//!
//! ```text
//! pending ──claim (a payout)──▶ processing ──complete──▶ completed ──return──▶ returned
//!    │  ▲                           │ └───fail──────▶ failed
//!    │  └──release (never sent)─────┘
//!    ├──complete / fail (a caller, external mode: the host paid it)──▶ completed / failed
//!    └──cancel──▶ cancelled  (only before a payout claims it)
//! ```
//! Completed removes the locked amount from the total (a partial completion
//! only what was paid, the rest returning to available), and moves the fee,
//! if any, to the fee account; failed and cancelled return amount and fee
//! to available; returned (the bank sent a paid withdrawal back) credits
//! what was paid to available again. A pending withdrawal past its expiry
//! fails with reason `expired` (the engine's sweep asks; never one
//! processing). Failed, cancelled and returned never
//! change; completed only to returned. Repeating the update that produced
//! the current state is a no-op that reports it; any other update is an
//! invalid transition.
//!
//! # Who may settle a withdrawal
//! When the engine makes payouts (a payment service, mode batched or
//! immediate), phase 3 belongs to its payouts. A withdrawal a payout
//! claimed (`processing` under payout `P`) is completed or failed only by
//! `P`'s answers from the payment service, or by an operator's explicit,
//! logged resolution of `P`'s item (`resolve_payout_item`). A caller's
//! outcome (`complete_withdrawal`, the HTTP status endpoint, a batch's
//! `CompleteWithdrawal`) is refused with `payout_in_flight`, naming `P` —
//! and also while the withdrawal is still `pending`, queued for the next
//! payout (no payout named): the bank has not paid it, so it must not be
//! burned, and a payout may still pay it, so it must not be released; a
//! caller who wants it gone cancels it. So the bank's payments are exactly
//! the completed withdrawals. (Repeating the outcome a payout already gave
//! is answered, as any repeat, and changes nothing.) In external mode (the
//! host pays) nothing is ever claimed and callers settle everything. See
//! [`Settler`].
//!
//! # Where finished withdrawals go
//! A finished withdrawal leaves memory once a [`WithdrawalHistory`] holds
//! it (or, on a ledger without one, past its retention); commands and
//! reads that need it find it there again (see `domain/account/forget.rs`
//! and the engine's `recall.rs`).

use rust_decimal::Decimal;
use serde::{Deserialize, Serialize};
use std::fmt;

use crate::domain::details::{Destination, Metadata, WithdrawalDetails};
use crate::domain::ids::{AccountId, TransactionId};
pub use crate::domain::kept_extras::KeptExtras;
use crate::domain::money::{Currency, CurrencyCode, Units};
use crate::domain::time::UnixMs;

/// Where a withdrawal is in its life.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub enum WithdrawalStatus {
    /// Amount locked; waiting for a payout or an outcome.
    Pending,
    /// The payment service paid it; the locked amount left the total.
    Completed,
    /// The payment service refused it; the amount is available again.
    Failed { reason: String },
    /// Cancelled before any payout claimed it; the amount is available again.
    Cancelled,
    /// Claimed by a payout and sent (or about to be sent) to the payment
    /// service; still locked. (Added after format v1: variants only ever
    /// go at the end, so old logs and snapshots still decode.)
    Processing { payout_id: u64 },
    /// Paid, then sent back by the bank: the amount is available again.
    Returned { reason: String },
}

impl WithdrawalStatus {
    pub fn kind(&self) -> StatusKind {
        match self {
            Self::Pending => StatusKind::Pending,
            Self::Completed => StatusKind::Completed,
            Self::Failed { .. } => StatusKind::Failed,
            Self::Cancelled => StatusKind::Cancelled,
            Self::Processing { .. } => StatusKind::Processing,
            Self::Returned { .. } => StatusKind::Returned,
        }
    }

    /// Whether the amount is still locked for this withdrawal.
    pub fn holds_lock(&self) -> bool {
        matches!(self, Self::Pending | Self::Processing { .. })
    }

    /// The payout carrying this withdrawal, while it is processing.
    pub fn payout_id(&self) -> Option<u64> {
        match self {
            Self::Processing { payout_id } => Some(*payout_id),
            _ => None,
        }
    }
}

/// A status without its data, for errors and counters.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum StatusKind {
    Pending,
    Completed,
    Failed,
    Cancelled,
    Processing,
    Returned,
}

impl StatusKind {
    /// Every state, in the order of the state machine.
    pub const ALL: [StatusKind; 6] = [
        StatusKind::Pending,
        StatusKind::Processing,
        StatusKind::Completed,
        StatusKind::Failed,
        StatusKind::Cancelled,
        StatusKind::Returned,
    ];

    pub fn as_str(self) -> &'static str {
        match self {
            Self::Pending => "pending",
            Self::Completed => "completed",
            Self::Failed => "failed",
            Self::Cancelled => "cancelled",
            Self::Processing => "processing",
            Self::Returned => "returned",
        }
    }
}

impl fmt::Display for StatusKind {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// An update asked of a withdrawal.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum TransitionAction {
    Complete,
    Fail,
    Cancel,
    /// A payout takes it (pending → processing).
    Claim,
    /// A claim whose payout was never sent is undone (processing → pending).
    Release,
    /// The bank returned a paid withdrawal (completed → returned).
    Return,
}

impl TransitionAction {
    /// The state this action leads to.
    pub fn target(self) -> StatusKind {
        match self {
            Self::Complete => StatusKind::Completed,
            Self::Fail => StatusKind::Failed,
            Self::Cancel => StatusKind::Cancelled,
            Self::Claim => StatusKind::Processing,
            Self::Release => StatusKind::Pending,
            Self::Return => StatusKind::Returned,
        }
    }
}

impl fmt::Display for TransitionAction {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.target().as_str())
    }
}

/// What an allowed action does.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Transition {
    /// Move to the action's target state.
    Apply,
    /// Already in the action's target state: report it, change nothing.
    AlreadyThere,
    /// Not allowed from this state: an invalid transition.
    Forbidden,
}

/// Decides what `action` does to a withdrawal in state `from`.
pub fn decide_transition(from: StatusKind, action: TransitionAction) -> Transition {
    use StatusKind as S;
    use TransitionAction as A;
    match (from, action) {
        (S::Pending, A::Complete | A::Fail | A::Cancel | A::Claim) => Transition::Apply,
        (S::Processing, A::Complete | A::Fail | A::Release) => Transition::Apply,
        (S::Completed, A::Return) => Transition::Apply,
        // Claiming or releasing is the payout actor's own bookkeeping:
        // repeating it is never a no-op the caller should rely on.
        (_, A::Claim | A::Release) => Transition::Forbidden,
        (state, action) if state == action.target() => Transition::AlreadyThere,
        _ => Transition::Forbidden,
    }
}

/// Who asks to complete or fail a withdrawal: decides whether a payout's
/// claim on it stands in the way (see the module docs).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Settler {
    /// A caller: the embedding API, HTTP, a batch. `engine_pays`: this
    /// ledger's payout actor makes payouts, so a withdrawal one of its
    /// payouts owns is refused (`payout_in_flight`).
    Caller { engine_pays: bool },
    /// Payout `payout_id`: the payment service's answer for one of its
    /// items, or an operator's resolution of it. Settles only a withdrawal
    /// that payout claimed (or repeats the outcome it already has).
    Payout { payout_id: u64 },
}

/// The outcome phase 3 reports for a withdrawal.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub enum WithdrawalOutcome {
    /// Paid in full.
    Completed,
    Failed {
        reason: String,
    },
    /// Paid, but only `paid` of the amount: that is burned, the rest
    /// released to available (the fee is collected whole). `paid` equal to
    /// the amount is a full completion.
    PartlyCompleted {
        paid: Decimal,
    },
}

/// Longest failure reason kept, in bytes.
pub const FAILURE_REASON_LEN_MAX: usize = 256;

/// A withdrawal as the API shows it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Withdrawal {
    pub transaction_id: TransactionId,
    pub account: AccountId,
    pub currency: CurrencyCode,
    pub amount: Decimal,
    pub status: WithdrawalStatus,
    /// The payout carrying it, while processing.
    pub payout_id: Option<u64>,
    /// When it was requested (the time of its `WithdrawalRequested` event);
    /// `None` if it was logged before times were (format v4).
    pub created_at: Option<UnixMs>,
    /// When its status last changed (the time of the event that changed
    /// it; `created_at` until then); `None` if unknown, as above.
    pub updated_at: Option<UnixMs>,
    /// What was paid, once completed (the amount, or less for a partial
    /// completion); `None` before.
    pub paid: Option<Decimal>,
    /// Its fee: locked with the amount, collected on completion.
    pub fee: Option<FeeView>,
    pub destination: Option<Destination>,
    pub metadata: Metadata,
    /// While still pending at this time, it fails with reason `expired`.
    pub expires_at: Option<UnixMs>,
}

/// A withdrawal's fee as the API shows it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct FeeView {
    pub currency: CurrencyCode,
    pub amount: Decimal,
}

/// A withdrawal as an account keeps it (its id is the map key).
///
/// The times are not in the record's own encoding: snapshots (format v4)
/// keep them beside it, so the records of v1 to v3 snapshots still decode
/// (with [`UnixMs::UNKNOWN`] times).
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct WithdrawalRecord {
    pub currency: Currency,
    pub amount: Units,
    pub status: WithdrawalStatus,
    #[serde(skip)]
    pub created_at: UnixMs,
    #[serde(skip)]
    pub updated_at: UnixMs,
    /// Its fee, destination, metadata, expiry and partly paid amount; kept
    /// beside the record by snapshots (format v7), like the times. A fee
    /// in its own currency is kept inline; the rest is shared, not copied,
    /// with the history rows made from the record (`kept_extras.rs`).
    #[serde(skip)]
    pub extras: KeptExtras,
}

/// What a withdrawal record keeps beyond the plain withdrawal of format
/// v6: what its request carried, and what a partial completion paid.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Extras {
    pub details: WithdrawalDetails,
    /// Set by a completion that paid less than the amount.
    pub paid: Option<Units>,
}

impl WithdrawalRecord {
    pub fn view(&self, transaction_id: TransactionId) -> Withdrawal {
        let paid = match self.status {
            WithdrawalStatus::Completed | WithdrawalStatus::Returned { .. } => {
                Some(self.currency.to_decimal(self.paid()))
            }
            _ => None,
        };
        Withdrawal {
            transaction_id,
            account: transaction_id.account(),
            currency: self.currency.code,
            amount: self.currency.to_decimal(self.amount),
            payout_id: self.status.payout_id(),
            status: self.status.clone(),
            created_at: self.created_at.known(),
            updated_at: self.updated_at.known(),
            paid,
            fee: self.fee().map(|fee| FeeView {
                currency: fee.currency.code,
                amount: fee.currency.to_decimal(fee.amount),
            }),
            destination: self.extras.destination().cloned(),
            metadata: self.extras.metadata().cloned().unwrap_or_default(),
            expires_at: self.extras.expires_at(),
        }
    }

    /// What a completion paid (or would pay): the amount, unless a partial
    /// completion paid less.
    pub fn paid(&self) -> Units {
        self.extras.paid().unwrap_or(self.amount)
    }

    /// Its fee, if it has one.
    pub fn fee(&self) -> Option<crate::domain::details::Fee> {
        self.extras.fee(self.currency.code)
    }
}

/// Where the finished withdrawals that left memory are kept (the history
/// store of a data folder), as the engine sees it: how far each shard's
/// events are safely in it, and one withdrawal by id.
///
/// The engine forgets a shard's finished withdrawals last changed before
/// that shard's [`horizon`](Self::horizon), and asks
/// [`withdrawal`](Self::withdrawal) when a command or a read names one it
/// forgot: never on the shard's thread (the call may read disk).
pub trait WithdrawalHistory: Send + Sync + 'static {
    /// Every event of shard `shard` stamped strictly before this is in the
    /// history. [`UnixMs::UNKNOWN`] until it holds anything: nothing is
    /// forgotten. Called once per idle sweep and shard: keep it cheap.
    fn horizon(&self, shard: usize) -> UnixMs;

    /// Withdrawal `tx` as the history holds it (its latest state); `None`
    /// if it holds no withdrawal under that id; an error (said in words)
    /// if it could not be read, which the command or read that asked
    /// answers as `internal` (it changes nothing).
    fn withdrawal(&self, tx: TransactionId) -> Result<Option<WithdrawalRecord>, String>;
}

#[cfg(test)]
mod tests {
    use super::*;

    const ALL_STATES: [StatusKind; 6] = StatusKind::ALL;
    const ALL_ACTIONS: [TransitionAction; 6] = [
        TransitionAction::Complete,
        TransitionAction::Fail,
        TransitionAction::Cancel,
        TransitionAction::Claim,
        TransitionAction::Release,
        TransitionAction::Return,
    ];

    #[test]
    fn every_transition_is_decided_as_the_state_machine_says() {
        use StatusKind as S;
        use TransitionAction as A;
        // The whole table, written out: (from, action) pairs that apply, and
        // those that are a repeat of the current state.
        let applies = [
            (S::Pending, A::Complete),
            (S::Pending, A::Fail),
            (S::Pending, A::Cancel),
            (S::Pending, A::Claim),
            (S::Processing, A::Complete),
            (S::Processing, A::Fail),
            (S::Processing, A::Release),
            (S::Completed, A::Return),
        ];
        let repeats = [
            (S::Completed, A::Complete),
            (S::Failed, A::Fail),
            (S::Cancelled, A::Cancel),
            (S::Returned, A::Return),
        ];
        for from in ALL_STATES {
            for action in ALL_ACTIONS {
                let expected = if applies.contains(&(from, action)) {
                    Transition::Apply
                } else if repeats.contains(&(from, action)) {
                    Transition::AlreadyThere
                } else {
                    Transition::Forbidden
                };
                assert_eq!(
                    decide_transition(from, action),
                    expected,
                    "{from} + {action}"
                );
            }
        }
    }

    #[test]
    fn times_add_at_most_16_bytes_to_a_withdrawal_record() {
        // The record as it was before times, field for field.
        #[allow(dead_code)]
        struct Untimed {
            currency: Currency,
            amount: Units,
            status: WithdrawalStatus,
            extras: KeptExtras,
        }
        let (timed, untimed) = (
            std::mem::size_of::<WithdrawalRecord>(),
            std::mem::size_of::<Untimed>(),
        );
        assert!(
            timed <= untimed + 16,
            "{timed} B with times, {untimed} B without"
        );
    }

    #[test]
    fn cancel_after_payout_claim_is_forbidden() {
        assert_eq!(
            decide_transition(StatusKind::Processing, TransitionAction::Cancel),
            Transition::Forbidden
        );
    }
}
