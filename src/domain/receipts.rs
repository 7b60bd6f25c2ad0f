//! What successful operations return to callers, with `Decimal` amounts.

use rust_decimal::Decimal;

use crate::domain::details::Metadata;
use crate::domain::ids::{AccountId, TransactionId};
use crate::domain::money::CurrencyCode;
use crate::domain::withdrawal::Withdrawal;

/// A credited deposit.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Deposit {
    pub transaction_id: TransactionId,
    pub account: AccountId,
    pub currency: CurrencyCode,
    pub amount: Decimal,
    pub metadata: Metadata,
}

/// A completed transfer between two accounts.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Transfer {
    pub transaction_id: TransactionId,
    pub from: AccountId,
    pub to: AccountId,
    pub currency: CurrencyCode,
    pub amount: Decimal,
    pub metadata: Metadata,
}

/// One account's balance in one currency; `total = available + locked`.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Balance {
    pub currency: CurrencyCode,
    pub available: Decimal,
    pub locked: Decimal,
    pub total: Decimal,
}

/// The result of one operation of a batch.
// A withdrawal (with its fee, destination and metadata) is larger than a
// deposit or transfer receipt; answers are short-lived and boxing would
// cost an allocation per withdrawal answered.
#[allow(clippy::large_enum_variant)]
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Outcome {
    Deposited(Deposit),
    Withdrawal(Withdrawal),
    Transferred(Transfer),
}
