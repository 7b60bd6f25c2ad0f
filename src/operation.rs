//! The operations a caller can submit, singly or in a batch.

use rust_decimal::Decimal;

use crate::domain::ids::{AccountId, IdempotencyKey, TransactionId};
use crate::domain::money::CurrencyCode;
use crate::domain::withdrawal::WithdrawalOutcome;

/// One operation of a [`crate::Ledger::submit`] batch.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Operation {
    /// Credit `amount` to the account's available balance.
    Deposit {
        account: AccountId,
        currency: CurrencyCode,
        amount: Decimal,
        idempotency_key: Option<IdempotencyKey>,
    },
    /// Phase 1: create a pending burn locking `amount`.
    RequestWithdrawal {
        account: AccountId,
        currency: CurrencyCode,
        amount: Decimal,
        idempotency_key: Option<IdempotencyKey>,
    },
    /// Phase 3: the payment service's answer for a withdrawal.
    CompleteWithdrawal {
        transaction_id: TransactionId,
        outcome: WithdrawalOutcome,
    },
    /// Cancel a withdrawal that is still pending.
    CancelWithdrawal { transaction_id: TransactionId },
    /// The bank sent a completed withdrawal back: credit it to available.
    ReturnWithdrawal {
        transaction_id: TransactionId,
        reason: String,
    },
    /// Move available funds from one account to another.
    Transfer {
        from: AccountId,
        to: AccountId,
        currency: CurrencyCode,
        amount: Decimal,
        idempotency_key: Option<IdempotencyKey>,
    },
}

impl Operation {
    /// The account whose shard runs this operation.
    pub fn account(&self) -> AccountId {
        match self {
            Self::Deposit { account, .. } | Self::RequestWithdrawal { account, .. } => *account,
            Self::CompleteWithdrawal { transaction_id, .. }
            | Self::CancelWithdrawal { transaction_id }
            | Self::ReturnWithdrawal { transaction_id, .. } => transaction_id.account(),
            Self::Transfer { from, .. } => *from,
        }
    }
}
