//! Business rejections: one enum, in order of precedence.
//!
//! Every variant says what was wrong with enough detail for the caller to act,
//! and [`LedgerError::code`] gives the stable snake_case code the HTTP API and
//! the CLI show. A rejected operation changes nothing.

use rust_decimal::Decimal;

use crate::domain::ids::{AccountId, TransactionId};
use crate::domain::money::CurrencyCode;
use crate::domain::withdrawal::{StatusKind, TransitionAction};

/// Why an operation was refused.
#[non_exhaustive]
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum LedgerError {
    /// The ledger is closing or closed; nothing new is accepted.
    #[error("the ledger is shutting down; no new operations are accepted")]
    ShuttingDown,

    /// A write or fsync of the log failed earlier: memory and disk may
    /// differ, so every later write is refused until a restart recovers
    /// from the log.
    #[error(
        "the ledger is poisoned by a storage failure and refuses writes until restarted: {reason}"
    )]
    Poisoned { reason: String },

    /// Too many operations are in flight on one shard; retry after a pause.
    #[error("overloaded: shard {shard} already has {limit} operations in flight; retry later")]
    Overloaded { shard: usize, limit: usize },

    /// Malformed input that is not about an amount or currency (an oversized
    /// key or reason, a transfer to the same account, an oversized batch, ...).
    #[error("invalid input: {reason}")]
    InvalidInput { reason: String },

    #[error("unknown currency {currency:?}: it is not configured on this ledger")]
    UnknownCurrency { currency: String },

    #[error("invalid amount {amount} {currency}: {problem}")]
    InvalidAmount {
        amount: Decimal,
        currency: CurrencyCode,
        problem: AmountProblem,
    },

    #[error("unknown withdrawal {transaction_id}")]
    UnknownWithdrawal { transaction_id: TransactionId },

    #[error("unknown payout {payout_id}")]
    UnknownPayout { payout_id: u64 },

    /// The same idempotency key was used before with other parameters.
    #[error("idempotency key {key:?} was already used with different parameters")]
    IdempotencyConflict { key: String },

    /// The same idempotency key is being processed right now; retry to get
    /// its result.
    #[error("idempotency key {key:?} is still being processed; retry to get its result")]
    IdempotencyInProgress { key: String },

    #[error("withdrawal {transaction_id} is {from}; it cannot be {action}")]
    InvalidTransition {
        transaction_id: TransactionId,
        from: StatusKind,
        action: TransitionAction,
    },

    #[error("account {account} already has {limit} pending withdrawals; wait for payouts before requesting more")]
    TooManyPendingWithdrawals { account: AccountId, limit: u32 },

    /// The engine makes payouts, so a caller's outcome is refused: the
    /// withdrawal is being paid by payout `payout_id` (only that payout's
    /// answer, or an operator's resolution of the item with
    /// `resolve_payout_item`, settles it), or, with `payout_id: None`, it is
    /// still queued for the engine's next payout (cancel it to release the
    /// funds).
    #[error("withdrawal {transaction_id} {}", in_flight_text(*payout_id))]
    PayoutInFlight {
        transaction_id: TransactionId,
        payout_id: Option<u64>,
    },

    /// A resolution named an item that payout `payout_id` does not carry.
    #[error("payout {payout_id} has no item {transaction_id}")]
    NotInPayout {
        payout_id: u64,
        transaction_id: TransactionId,
    },

    /// A resolution named an item its payout already settled.
    #[error("item {transaction_id} of payout {payout_id} is already settled ({outcome})")]
    PayoutItemSettled {
        payout_id: u64,
        transaction_id: TransactionId,
        outcome: String,
    },

    /// A check inside the engine failed: a bug, reported instead of hidden.
    /// The operation may or may not have been applied; do not retry blindly.
    #[error("internal error (a bug in burnledger, please report it): {reason}")]
    Internal { reason: String },

    #[error("insufficient funds: {available} {currency} available, {requested} requested")]
    InsufficientFunds {
        currency: CurrencyCode,
        available: Decimal,
        requested: Decimal,
    },
}

fn in_flight_text(payout_id: Option<u64>) -> String {
    match payout_id {
        Some(id) => format!(
            "is being paid by payout {id}; only the payout's answer or an operator's resolution of the item settles it"
        ),
        None => "is queued for this ledger's own payouts; only a payout's answer settles it (cancel it to release the funds)".to_string(),
    }
}

/// What is wrong with an amount.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum AmountProblem {
    #[error("it must be greater than zero")]
    NotPositive,
    #[error("it has more than the currency's {decimals} decimal places")]
    TooManyDecimals { decimals: u8 },
    #[error("it is above the maximum of {maximum}")]
    AboveMaximum { maximum: Decimal },
    #[error("the resulting balance would exceed the maximum of {maximum}")]
    BalanceAboveMaximum { maximum: Decimal },
}

impl LedgerError {
    /// Stable snake_case code for APIs and logs.
    pub fn code(&self) -> &'static str {
        match self {
            Self::ShuttingDown => "shutting_down",
            Self::Poisoned { .. } => "poisoned",
            Self::Overloaded { .. } => "overloaded",
            Self::InvalidInput { .. } => "invalid_input",
            Self::UnknownCurrency { .. } => "unknown_currency",
            Self::InvalidAmount { .. } => "invalid_amount",
            Self::UnknownWithdrawal { .. } => "unknown_withdrawal",
            Self::UnknownPayout { .. } => "unknown_payout",
            Self::IdempotencyConflict { .. } => "idempotency_conflict",
            Self::IdempotencyInProgress { .. } => "idempotency_in_progress",
            Self::InvalidTransition { .. } => "invalid_transition",
            Self::TooManyPendingWithdrawals { .. } => "too_many_pending_withdrawals",
            Self::PayoutInFlight { .. } => "payout_in_flight",
            Self::NotInPayout { .. } => "not_in_payout",
            Self::PayoutItemSettled { .. } => "payout_item_settled",
            Self::Internal { .. } => "internal",
            Self::InsufficientFunds { .. } => "insufficient_funds",
        }
    }

    /// Whether the same request could succeed if sent again unchanged later.
    pub fn is_retryable(&self) -> bool {
        matches!(
            self,
            Self::Overloaded { .. }
                | Self::IdempotencyInProgress { .. }
                | Self::TooManyPendingWithdrawals { .. }
                | Self::InsufficientFunds { .. }
        )
    }
}
