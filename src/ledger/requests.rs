//! The `Ledger` calls that carry more than a currency and an amount: a
//! deposit's or transfer's metadata; a withdrawal's fee, destination,
//! metadata and expiry. The plain calls in `mod.rs` are these with none of
//! it.

use rust_decimal::Decimal;

use crate::domain::details::Metadata;
use crate::domain::ids::{AccountId, IdempotencyKey};
use crate::domain::money::CurrencyCode;
use crate::domain::receipts::{Deposit, Transfer};
use crate::domain::withdrawal::Withdrawal;
use crate::error::LedgerError;
use crate::operation::{check_distinct, WithdrawalOptions};

use super::Ledger;

impl Ledger {
    /// Credits `amount` to the account's available balance; the deposit
    /// keeps `metadata` (returned, listed, in its event).
    #[tracing::instrument(level = "debug", name = "ledger.deposit", skip_all, fields(account = account, currency = currency))]
    pub async fn deposit_with(
        &self,
        account: AccountId,
        currency: &str,
        amount: Decimal,
        idempotency_key: Option<&str>,
        metadata: Metadata,
    ) -> Result<Deposit, LedgerError> {
        self.check_open()?;
        let key = idempotency_key.map(IdempotencyKey::new).transpose()?;
        let currency = CurrencyCode::new(currency)?;
        let command = self.edge().deposit(currency, amount, key, metadata)?;
        self.router().execute_one(account, command).await
    }

    /// Phase 1 with `options`: locks `amount` and the fee (if any, in its
    /// own currency) together, or neither, judged by the account's freeze,
    /// its tier's limits and its funds; returns the withdrawal.
    #[tracing::instrument(level = "debug", name = "ledger.request_withdrawal", skip_all, fields(account = account, currency = currency))]
    pub async fn request_withdrawal_with(
        &self,
        account: AccountId,
        currency: &str,
        amount: Decimal,
        idempotency_key: Option<&str>,
        options: WithdrawalOptions,
    ) -> Result<Withdrawal, LedgerError> {
        self.check_open()?;
        let key = idempotency_key.map(IdempotencyKey::new).transpose()?;
        let currency = CurrencyCode::new(currency)?;
        let command = self
            .edge()
            .request_withdrawal(currency, amount, key, options)?;
        self.router().execute_one(account, command).await
    }

    /// Moves available funds between two accounts, keeping `metadata`.
    /// Both sides are one event: a crash keeps both or neither.
    #[tracing::instrument(level = "debug", name = "ledger.transfer", skip_all, fields(from = from, to = to, currency = currency))]
    pub async fn transfer_with(
        &self,
        from: AccountId,
        to: AccountId,
        currency: &str,
        amount: Decimal,
        idempotency_key: Option<&str>,
        metadata: Metadata,
    ) -> Result<Transfer, LedgerError> {
        self.check_open()?;
        let key = idempotency_key.map(IdempotencyKey::new).transpose()?;
        check_distinct(from, to)?;
        let currency = CurrencyCode::new(currency)?;
        let command = self
            .edge()
            .transfer(from, to, currency, amount, key, metadata)?;
        self.router().execute_one(from, command).await
    }
}
