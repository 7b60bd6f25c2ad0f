//! What [`Ledger::export_accounts`](crate::Ledger::export_accounts) hands
//! out: each account as a read-only view with `Decimal` amounts — its id,
//! its balances per currency and its withdrawals — built from the engine's
//! account state without exposing it (no idempotency records, sequence
//! counters or the records of transfers in flight).

use rust_decimal::Decimal;

use crate::domain::account::{AccountState, BalanceEntry};
use crate::domain::ids::AccountId;
use crate::domain::money::CurrencyCode;
use crate::domain::withdrawal::Withdrawal;

/// One account as exported.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct AccountExport {
    pub id: AccountId,
    /// Every currency the account has held, in the order it first held it.
    pub balances: Vec<AccountBalance>,
    /// The withdrawals the account holds in memory, oldest first: every
    /// pending and processing one, and the finished ones not yet forgotten.
    pub withdrawals: Vec<Withdrawal>,
}

/// An account's money in one currency; `total = available + locked`.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct AccountBalance {
    pub currency: CurrencyCode,
    /// Spendable now.
    pub available: Decimal,
    /// Reserved by pending withdrawals.
    pub locked: Decimal,
    pub total: Decimal,
    /// Reserved by outgoing transfers still in flight (zero on a quiet
    /// ledger).
    pub held: Decimal,
    /// Everything ever credited (deposits, transfers in, returns).
    pub deposited: Decimal,
    /// Everything ever paid out (completed withdrawals).
    pub burned: Decimal,
}

impl AccountExport {
    /// The view of `account`.
    pub fn of(account: &AccountState) -> Self {
        Self {
            id: account.id(),
            balances: account.balances().iter().map(AccountBalance::of).collect(),
            withdrawals: account
                .withdrawals()
                .map(|(tx, record)| record.view(tx))
                .collect(),
        }
    }

    /// The balance in `currency`; `None` if the account never held it.
    pub fn balance(&self, currency: &str) -> Option<&AccountBalance> {
        self.balances
            .iter()
            .find(|b| b.currency.as_str() == currency)
    }
}

impl AccountBalance {
    fn of(entry: &BalanceEntry) -> Self {
        let decimal = |units| entry.currency.to_decimal(units);
        Self {
            currency: entry.currency.code,
            available: decimal(entry.available),
            locked: decimal(entry.locked),
            total: decimal(entry.total()),
            held: decimal(entry.held),
            deposited: decimal(entry.deposited),
            burned: decimal(entry.burned),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::domain::ids::TransactionId;
    use crate::domain::money::usd;
    use crate::domain::time::UnixMs;
    use crate::domain::withdrawal::WithdrawalStatus;

    const T: UnixMs = UnixMs::from_millis(1_767_225_600_000);

    #[test]
    fn an_export_shows_the_balances_and_withdrawals_in_decimals() {
        let mut account = AccountState::new(7);
        account.deposit(usd(), 1_050, None, T).unwrap();
        let requested = account.request_withdrawal(usd(), 250, None, 8, T).unwrap();
        let tx: TransactionId = requested.output.transaction_id;

        let export = AccountExport::of(&account);
        assert_eq!(export.id, 7);
        let balance = export.balance("USD").unwrap();
        assert_eq!(
            (balance.available, balance.locked, balance.total),
            (
                Decimal::new(800, 2),
                Decimal::new(250, 2),
                Decimal::new(1050, 2)
            )
        );
        assert_eq!(
            (balance.held, balance.deposited, balance.burned),
            (Decimal::ZERO, Decimal::new(1050, 2), Decimal::ZERO)
        );
        assert!(export.balance("EUR").is_none());
        assert_eq!(export.withdrawals.len(), 1);
        assert_eq!(export.withdrawals[0].transaction_id, tx);
        assert_eq!(export.withdrawals[0].amount, Decimal::new(250, 2));
        assert_eq!(export.withdrawals[0].status, WithdrawalStatus::Pending);
    }
}
