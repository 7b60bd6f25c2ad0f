//! The edge: what a caller asks, validated and turned into the commands
//! accounts run. Currencies are resolved against the ledger's registry,
//! amounts converted to minor units (or refused), sizes checked; nothing
//! here reads any account.

use rust_decimal::Decimal;

use crate::domain::ids::{AccountId, IdempotencyKey, TransactionId};
use crate::domain::money::{Currencies, CurrencyCode};
use crate::domain::withdrawal::{Settler, TransitionAction, WithdrawalOutcome};
use crate::engine::command::{AccountCommand, DepositCommand, TransferCommand, WithdrawalCommand};
use crate::error::LedgerError;
use crate::operation::{check_distinct, check_reason, Operation};

/// Validates operations for one ledger.
pub struct Edge<'a> {
    pub currencies: &'a Currencies,
    /// Whether the ledger pays withdrawals out itself: a caller's outcome
    /// is then refused while a payout owns the withdrawal.
    pub engine_pays: bool,
}

impl Edge<'_> {
    pub fn deposit(
        &self,
        currency: CurrencyCode,
        amount: Decimal,
        key: Option<IdempotencyKey>,
    ) -> Result<DepositCommand, LedgerError> {
        let currency = self.currencies.get_code(currency)?;
        Ok(DepositCommand {
            currency,
            amount: self.currencies.parse_amount(currency, amount)?,
            key,
        })
    }

    pub fn request_withdrawal(
        &self,
        currency: CurrencyCode,
        amount: Decimal,
        key: Option<IdempotencyKey>,
    ) -> Result<WithdrawalCommand, LedgerError> {
        let currency = self.currencies.get_code(currency)?;
        Ok(WithdrawalCommand::Request {
            currency,
            amount: self.currencies.parse_amount(currency, amount)?,
            key,
        })
    }

    pub fn complete_withdrawal(
        &self,
        tx: TransactionId,
        outcome: WithdrawalOutcome,
    ) -> Result<WithdrawalCommand, LedgerError> {
        let (action, reason) = match outcome {
            WithdrawalOutcome::Completed => (TransitionAction::Complete, String::new()),
            WithdrawalOutcome::Failed { reason } => (TransitionAction::Fail, reason),
        };
        check_reason("reason", &reason)?;
        Ok(self.update(tx, action, reason))
    }

    pub fn cancel_withdrawal(&self, tx: TransactionId) -> WithdrawalCommand {
        self.update(tx, TransitionAction::Cancel, String::new())
    }

    pub fn return_withdrawal(
        &self,
        tx: TransactionId,
        reason: String,
    ) -> Result<WithdrawalCommand, LedgerError> {
        check_reason("reason", &reason)?;
        Ok(self.update(tx, TransitionAction::Return, reason))
    }

    pub fn transfer(
        &self,
        from: AccountId,
        to: AccountId,
        currency: CurrencyCode,
        amount: Decimal,
        key: Option<IdempotencyKey>,
    ) -> Result<TransferCommand, LedgerError> {
        check_distinct(from, to)?;
        let currency = self.currencies.get_code(currency)?;
        Ok(TransferCommand {
            to,
            currency,
            amount: self.currencies.parse_amount(currency, amount)?,
            key,
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
                ..
            } => AccountCommand::Deposit(self.deposit(currency, amount, idempotency_key)?),
            Operation::RequestWithdrawal {
                currency,
                amount,
                idempotency_key,
                ..
            } => AccountCommand::Withdrawal(self.request_withdrawal(
                currency,
                amount,
                idempotency_key,
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
            } => AccountCommand::Transfer(self.transfer(
                from,
                to,
                currency,
                amount,
                idempotency_key,
            )?),
        };
        Ok((account, command))
    }

    /// A caller's withdrawal update, as the account sees it.
    fn update(
        &self,
        tx: TransactionId,
        action: TransitionAction,
        reason: String,
    ) -> WithdrawalCommand {
        WithdrawalCommand::Update {
            tx,
            action,
            reason,
            by: Settler::Caller {
                engine_pays: self.engine_pays,
            },
        }
    }
}
