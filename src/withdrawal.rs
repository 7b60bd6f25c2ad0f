//! The withdrawal (pending burn) state machine, with no runtime attached.
//!
//! ```text
//! pending ──complete──▶ completed   (locked amount leaves the total)
//!    │  └──fail──────▶ failed      (locked amount returns to available)
//!    └─────cancel────▶ cancelled   (locked amount returns to available)
//! ```
//! Terminal states never change. Repeating the update that produced the
//! current terminal state is a no-op that reports it; any other update of a
//! terminal withdrawal is an invalid transition.

use std::fmt;

use rust_decimal::Decimal;
use serde::{Deserialize, Serialize};

use crate::ids::{AccountId, TransactionId};
use crate::money::{Currency, CurrencyCode, Units};

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
}

impl WithdrawalStatus {
    pub fn kind(&self) -> StatusKind {
        match self {
            Self::Pending => StatusKind::Pending,
            Self::Completed => StatusKind::Completed,
            Self::Failed { .. } => StatusKind::Failed,
            Self::Cancelled => StatusKind::Cancelled,
        }
    }

    /// Whether the amount is still locked for this withdrawal.
    pub fn holds_lock(&self) -> bool {
        matches!(self, Self::Pending)
    }
}

/// A status without its data, for errors and counters.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum StatusKind {
    Pending,
    Completed,
    Failed,
    Cancelled,
}

impl StatusKind {
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Pending => "pending",
            Self::Completed => "completed",
            Self::Failed => "failed",
            Self::Cancelled => "cancelled",
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
}

impl TransitionAction {
    /// The state this action leads to.
    pub fn target(self) -> StatusKind {
        match self {
            Self::Complete => StatusKind::Completed,
            Self::Fail => StatusKind::Failed,
            Self::Cancel => StatusKind::Cancelled,
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
    match (from, action) {
        (StatusKind::Pending, _) => Transition::Apply,
        (terminal, action) if terminal == action.target() => Transition::AlreadyThere,
        _ => Transition::Forbidden,
    }
}

/// The outcome phase 3 reports for a withdrawal.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub enum WithdrawalOutcome {
    Completed,
    Failed { reason: String },
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
}

/// A withdrawal as an account keeps it (its id is the map key).
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct WithdrawalRecord {
    pub currency: Currency,
    pub amount: Units,
    pub status: WithdrawalStatus,
}

impl WithdrawalRecord {
    pub fn view(&self, transaction_id: TransactionId) -> Withdrawal {
        Withdrawal {
            transaction_id,
            account: transaction_id.account(),
            currency: self.currency.code,
            amount: self.currency.to_decimal(self.amount),
            status: self.status.clone(),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const ALL_STATES: [StatusKind; 4] = [
        StatusKind::Pending,
        StatusKind::Completed,
        StatusKind::Failed,
        StatusKind::Cancelled,
    ];
    const ALL_ACTIONS: [TransitionAction; 3] = [
        TransitionAction::Complete,
        TransitionAction::Fail,
        TransitionAction::Cancel,
    ];

    #[test]
    fn every_transition_is_decided_as_the_state_machine_says() {
        for from in ALL_STATES {
            for action in ALL_ACTIONS {
                let expected = if from == StatusKind::Pending {
                    Transition::Apply
                } else if from == action.target() {
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
}
