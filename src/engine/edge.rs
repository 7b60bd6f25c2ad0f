//! The edge: what a caller asks, validated and turned into the commands
//! accounts run. Currencies are resolved against the ledger's registry,
//! amounts converted to minor units (or refused), sizes checked (reasons,
//! metadata, destinations, expiries); nothing here reads any account. The
//! one amount it cannot convert is a partial completion's paid amount: it
//! is in the withdrawal's currency, which only its account knows, so it
//! travels as a decimal and the account checks it.

use rust_decimal::Decimal;

use crate::domain::account::{Settlement, WithdrawalRequest};
use crate::domain::details::{Fee, Metadata, WithdrawalDetails};
use crate::domain::ids::{AccountId, IdempotencyKey, TransactionId};
use crate::domain::money::{Currencies, CurrencyCode};
use crate::domain::withdrawal::{Settler, TransitionAction, WithdrawalOutcome};
use crate::engine::command::{AccountCommand, DepositCommand, TransferCommand, WithdrawalCommand};
use crate::error::LedgerError;
use crate::operation::{check_distinct, check_reason, Operation, WithdrawalOptions};

/// Validates operations for one ledger.
pub struct Edge<'a> {
    pub currencies: &'a Currencies,
    /// Whether the ledger pays withdrawals out itself: a caller's outcome
    /// is then refused while a payout owns the withdrawal.
    pub engine_pays: bool,
    /// Longest `expires_in` a withdrawal may carry, in milliseconds.
    pub expiry_max_ms: u64,
}

impl Edge<'_> {
    pub fn deposit(
        &self,
        currency: CurrencyCode,
        amount: Decimal,
        key: Option<IdempotencyKey>,
        metadata: Metadata,
    ) -> Result<DepositCommand, LedgerError> {
        let currency = self.currencies.get_code(currency)?;
        metadata.check()?;
        Ok(DepositCommand {
            currency,
            amount: self.currencies.parse_amount(currency, amount)?,
            key,
            metadata,
        })
    }

    /// A withdrawal request: its currency and amount, then its fee (a
    /// configured currency, an exact positive amount), destination,
    /// metadata and expiry, each checked on its own.
    pub fn request_withdrawal(
        &self,
        currency: CurrencyCode,
        amount: Decimal,
        key: Option<IdempotencyKey>,
        options: WithdrawalOptions,
    ) -> Result<WithdrawalCommand, LedgerError> {
        let currency = self.currencies.get_code(currency)?;
        let amount = self.currencies.parse_amount(currency, amount)?;
        let fee = match options.fee {
            None => None,
            Some(fee) => {
                let fee_currency = self.currencies.get_code(fee.currency)?;
                Some(Fee {
                    currency: fee_currency,
                    amount: self.currencies.parse_amount(fee_currency, fee.amount)?,
                })
            }
        };
        if let Some(destination) = &options.destination {
            destination.check()?;
        }
        options.metadata.check()?;
        let expires_in = options.expires_in.map(|d| self.expiry_ms(d)).transpose()?;
        Ok(WithdrawalCommand::Request(Box::new(WithdrawalRequest {
            currency,
            amount,
            key,
            details: WithdrawalDetails {
                fee,
                destination: options.destination,
                metadata: options.metadata,
                expires_at: None,
            },
            expires_in,
        })))
    }

    /// An `expires_in` in milliseconds: at least 1 ms, at most the
    /// configured maximum.
    fn expiry_ms(&self, expires_in: std::time::Duration) -> Result<u64, LedgerError> {
        let ms = u64::try_from(expires_in.as_millis()).unwrap_or(u64::MAX);
        if ms == 0 || ms > self.expiry_max_ms {
            return Err(LedgerError::InvalidExpiry {
                problem: format!(
                    "expires_in must be 1 ms to {} ms, got {} ms",
                    self.expiry_max_ms,
                    expires_in.as_millis()
                ),
            });
        }
        Ok(ms)
    }

    pub fn complete_withdrawal(
        &self,
        tx: TransactionId,
        outcome: WithdrawalOutcome,
    ) -> Result<WithdrawalCommand, LedgerError> {
        let (action, reason, paid) = match outcome {
            WithdrawalOutcome::Completed => (TransitionAction::Complete, String::new(), None),
            WithdrawalOutcome::Failed { reason } => (TransitionAction::Fail, reason, None),
            WithdrawalOutcome::PartlyCompleted { paid } => {
                (TransitionAction::Complete, String::new(), Some(paid))
            }
        };
        check_reason("reason", &reason)?;
        // The paid amount is read in the withdrawal's currency, which only
        // its account knows: checked there.
        Ok(self.settle(tx, action, reason, paid))
    }

    pub fn cancel_withdrawal(&self, tx: TransactionId) -> WithdrawalCommand {
        self.settle(tx, TransitionAction::Cancel, String::new(), None)
    }

    pub fn return_withdrawal(
        &self,
        tx: TransactionId,
        reason: String,
    ) -> Result<WithdrawalCommand, LedgerError> {
        check_reason("reason", &reason)?;
        Ok(self.settle(tx, TransitionAction::Return, reason, None))
    }

    pub fn transfer(
        &self,
        from: AccountId,
        to: AccountId,
        currency: CurrencyCode,
        amount: Decimal,
        key: Option<IdempotencyKey>,
        metadata: Metadata,
    ) -> Result<TransferCommand, LedgerError> {
        check_distinct(from, to)?;
        let currency = self.currencies.get_code(currency)?;
        metadata.check()?;
        Ok(TransferCommand {
            to,
            currency,
            amount: self.currencies.parse_amount(currency, amount)?,
            key,
            metadata,
        })
    }

    /// Any operation of a batch, with the account whose shard runs it.
    pub fn command(&self, op: Operation) -> Result<(AccountId, AccountCommand), LedgerError> {
        let account = op.account();
        let command = match op {
            Operation::Deposit {
                currency,
                amount,
                idempotency_key,
                metadata,
                ..
            } => AccountCommand::Deposit(self.deposit(
                currency,
                amount,
                idempotency_key,
                metadata,
            )?),
            Operation::RequestWithdrawal {
                currency,
                amount,
                idempotency_key,
                options,
                ..
            } => AccountCommand::Withdrawal(self.request_withdrawal(
                currency,
                amount,
                idempotency_key,
                options,
            )?),
            Operation::CompleteWithdrawal {
                transaction_id,
                outcome,
            } => AccountCommand::Withdrawal(self.complete_withdrawal(transaction_id, outcome)?),
            Operation::ReturnWithdrawal {
                transaction_id,
                reason,
            } => AccountCommand::Withdrawal(self.return_withdrawal(transaction_id, reason)?),
            Operation::CancelWithdrawal { transaction_id } => {
                AccountCommand::Withdrawal(self.cancel_withdrawal(transaction_id))
            }
            Operation::Transfer {
                from,
                to,
                currency,
                amount,
                idempotency_key,
                metadata,
            } => AccountCommand::Transfer(self.transfer(
                from,
                to,
                currency,
                amount,
                idempotency_key,
                metadata,
            )?),
        };
        Ok((account, command))
    }

    /// A caller's withdrawal update, as the account sees it.
    fn settle(
        &self,
        tx: TransactionId,
        action: TransitionAction,
        reason: String,
        paid: Option<Decimal>,
    ) -> WithdrawalCommand {
        WithdrawalCommand::Update {
            tx,
            settlement: Settlement {
                action,
                reason,
                paid,
            },
            by: Settler::Caller {
                engine_pays: self.engine_pays,
            },
        }
    }
}
