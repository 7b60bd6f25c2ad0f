//! What a caller observes of a ledger's accounts, whatever its memory
//! happens to hold: the export's balances, and every withdrawal the
//! ledger made, as `Ledger::withdrawal(tx)` answers it (from memory, or
//! from the history store once memory forgot it). Two ledgers that differ
//! only in which finished withdrawals they forgot observe the same.
//!
//! The withdrawals are those the export holds (taken with the balances,
//! so the two agree even while payouts move things in the background),
//! plus every other one the history lists, looked up by id: forgotten
//! ones, which are finished and never change again. A ledger without a
//! store lists none: its export holds all it still knows.

#![allow(dead_code)] // each test binary uses part of it

use std::collections::BTreeSet;

use burnledger::{AccountExport, Ledger, LedgerError, TransactionId, WithdrawalQuery};

/// Each account as exported, with its withdrawals replaced by every
/// withdrawal of it the ledger answers for, oldest first; sorted by id.
pub async fn observed_accounts(ledger: &Ledger) -> Vec<AccountExport> {
    observed(ledger).await.unwrap()
}

/// [`observed_accounts`], or the first error the ledger answered.
pub async fn observed(ledger: &Ledger) -> Result<Vec<AccountExport>, LedgerError> {
    let mut accounts = ledger.export_accounts().await?;
    accounts.sort_by_key(|a| a.id);
    let held = accounts.iter().flat_map(|a| &a.withdrawals);
    let held: BTreeSet<TransactionId> = held.map(|w| w.transaction_id).collect();
    let forgotten: BTreeSet<TransactionId> = listed(ledger).await?.into_iter().collect();
    for tx in forgotten.difference(&held) {
        let withdrawal = ledger.withdrawal(*tx).await?;
        let account = accounts.iter_mut().find(|a| a.id == tx.account());
        let account = account.unwrap_or_else(|| panic!("withdrawal {tx} of no account"));
        account.withdrawals.push(withdrawal);
    }
    for account in &mut accounts {
        account.withdrawals.sort_by_key(|w| w.transaction_id);
    }
    Ok(accounts)
}

/// Every withdrawal id the history lists; none without a history store.
async fn listed(ledger: &Ledger) -> Result<Vec<TransactionId>, LedgerError> {
    let mut ids = Vec::new();
    let mut after: Option<String> = None;
    loop {
        let query = WithdrawalQuery {
            after: after.as_deref(),
            limit: 1_000,
            ..WithdrawalQuery::default()
        };
        let page = match ledger.withdrawals(query).await {
            Ok(page) => page,
            Err(LedgerError::HistoryUnavailable { .. }) => return Ok(ids),
            Err(other) => return Err(other),
        };
        ids.extend(page.items.iter().map(|w| w.transaction_id));
        match page.next {
            Some(next) => after = Some(next),
            None => return Ok(ids),
        }
    }
}
