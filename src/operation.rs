//! The operations a caller can submit, singly or in a batch, and the
//! checks on them that need nothing but the operation itself.

use std::time::Duration;

use rust_decimal::Decimal;

use crate::domain::details::{Destination, Metadata};
use crate::domain::ids::{AccountId, IdempotencyKey, TransactionId};
use crate::domain::money::CurrencyCode;
use crate::domain::withdrawal::{WithdrawalOutcome, FAILURE_REASON_LEN_MAX};
use crate::error::LedgerError;

/// One operation of a [`crate::Ledger::submit`] batch.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Operation {
    /// Credit `amount` to the account's available balance.
    Deposit {
        account: AccountId,
        currency: CurrencyCode,
        amount: Decimal,
        idempotency_key: Option<IdempotencyKey>,
        metadata: Metadata,
    },
    /// Phase 1: create a pending burn locking `amount` (and its fee).
    RequestWithdrawal {
        account: AccountId,
        currency: CurrencyCode,
        amount: Decimal,
        idempotency_key: Option<IdempotencyKey>,
        options: WithdrawalOptions,
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
        metadata: Metadata,
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

/// A withdrawal's fee as a caller asks it: a currency of the ledger (the
/// withdrawal's own or another) and an exact positive amount.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct FeeRequest {
    pub currency: CurrencyCode,
    pub amount: Decimal,
}

/// What a withdrawal request may carry beyond currency and amount; none
/// of it by default.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct WithdrawalOptions {
    /// Locked with the amount; moved to the fee account on completion.
    pub fee: Option<FeeRequest>,
    /// Where it is paid: handed to the payment service.
    pub destination: Option<Destination>,
    pub metadata: Metadata,
    /// While still pending this long after the request, it fails with
    /// reason `expired`.
    pub expires_in: Option<Duration>,
}

/// A free text (a failure or return reason, an operator's note) fits
/// [`FAILURE_REASON_LEN_MAX`] bytes; `field` names it in the error.
pub(crate) fn check_reason(field: &'static str, reason: &str) -> Result<(), LedgerError> {
    check_reason_max(field, reason, FAILURE_REASON_LEN_MAX)
}

/// A free text fits `max` bytes; `field` names it in the error.
pub(crate) fn check_reason_max(
    field: &'static str,
    reason: &str,
    max: usize,
) -> Result<(), LedgerError> {
    if reason.len() > max {
        return Err(LedgerError::ReasonTooLong {
            field,
            length: reason.len(),
            max,
        });
    }
    Ok(())
}

/// A transfer moves funds between two different accounts.
pub(crate) fn check_distinct(from: AccountId, to: AccountId) -> Result<(), LedgerError> {
    if from == to {
        return Err(LedgerError::SameAccountTransfer { account: from });
    }
    Ok(())
}
