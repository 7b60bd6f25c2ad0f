//! The one place logged events become history [`Change`]s: an event is
//! applied to a copy of the state (accounts and payout records), then read
//! back from that copy as FULL rows — the withdrawal's whole row, one
//! entry per balance change with the balance after it, the deposit's or
//! transfer's transaction, the payout's whole row — so the store replaces
//! rows and never needs what it held before.
//!
//! An entry's `seq` is the LSN of the event that made it. LSNs only grow,
//! and one event changes an account's balance in a currency at most once
//! (a transfer's two sides are two accounts: a transfer to its own source
//! is refused), so LSNs number an account's entries in a currency
//! strictly increasingly; and an LSN is the same whether the copy started
//! from a snapshot or from the log's start, so a replay writes each entry
//! under the key it had, never a second time under another.
//!
//! One thing the state does not keep: who paid a withdrawal once it
//! completed (its status `Completed` names no payout). The payout is read
//! from the status just before the event that ends a payout's claim
//! ([`Before::read`]); a returned withdrawal's row names none.
//!
//! The state before the event also says what the store holds for the row
//! the event changes (the row derived after that row's previous event): a
//! withdrawal's status and payout, a payout's state. Rows go out with it
//! ([`Change::WithdrawalFrom`], [`Change::PayoutFrom`]) so ingest need not
//! read the store. The one case the state cannot tell is a completed
//! withdrawal (who paid it is gone): that row goes out without it.

use std::borrow::{Borrow, BorrowMut};
use std::collections::{BTreeMap, HashMap};
use std::hash::BuildHasher;

use crate::domain::account::AccountState;
use crate::domain::event::Event;
use crate::domain::ids::{AccountId, TransactionId};
use crate::domain::money::{Currencies, Currency, Units};
use crate::domain::payouts::{apply_payout_event, PayoutRecord, PayoutState};
use crate::domain::time::UnixMs;
use crate::domain::withdrawal::{StatusKind, WithdrawalStatus};
use crate::storage::history::{
    Change, EntryKind, EntryRow, PayoutItemRow, PayoutRow, TransactionKind, TransactionRow,
    WithdrawalIndex, WithdrawalRow,
};
use crate::storage::recovery::apply_event;

/// Applies one logged event (LSN `lsn`, stamped `at`) to the accounts
/// and payout records, and, given `changes`, pushes the history rows it
/// made.
pub(crate) fn apply_logged<V, S>(
    state: (
        &mut HashMap<AccountId, V, S>,
        &mut BTreeMap<u64, PayoutRecord>,
    ),
    currencies: &Currencies,
    (lsn, event, at): (u64, &Event, UnixMs),
    changes: Option<&mut Vec<Change>>,
) -> Result<(), String>
where
    V: BorrowMut<AccountState> + From<AccountState>,
    S: BuildHasher,
{
    let (accounts, payouts) = state;
    let before = match changes {
        Some(_) => Before::read(accounts, payouts, event),
        None => Before::default(),
    };
    apply_event(accounts, currencies, event, at)?;
    apply_payout_event(payouts, event, at)?;
    if let Some(changes) = changes {
        derive((lsn, event, at), before, accounts, payouts, changes);
    }
    Ok(())
}

/// What the state said before an event, for the rows it makes.
#[derive(Default)]
struct Before {
    /// The payout holding the withdrawal the event is about to settle
    /// (afterwards its status forgets it).
    payer: Option<u64>,
    /// How the store indexes the event's withdrawal: `Some(None)` when it
    /// holds none yet, `None` when the state cannot tell.
    withdrawal: Option<Option<WithdrawalIndex>>,
    /// The state of the event's payout in the store (`None`: no row yet).
    payout: Option<PayoutState>,
}

impl Before {
    fn read<V, S>(
        accounts: &HashMap<AccountId, V, S>,
        payouts: &BTreeMap<u64, PayoutRecord>,
        event: &Event,
    ) -> Self
    where
        V: Borrow<AccountState>,
        S: BuildHasher,
    {
        if let Some(payout_id) = payout_of(event) {
            let payout = payouts.get(&payout_id).map(PayoutRecord::state);
            return Self {
                payout,
                ..Self::default()
            };
        }
        let Some(tx) = event.transaction_id() else {
            return Self::default();
        };
        let record = accounts
            .get(&tx.account())
            .and_then(|a| a.borrow().withdrawal_record_of(tx));
        let payer = match event {
            Event::WithdrawalCompleted { .. } | Event::WithdrawalFailed { .. } => {
                record.and_then(|r| r.status.payout_id())
            }
            _ => None,
        };
        let withdrawal = match (event, record.map(|r| &r.status)) {
            (Event::WithdrawalRequested { .. }, None) => Some(None),
            (_, Some(WithdrawalStatus::Pending)) => Some(Some(WithdrawalIndex {
                status: StatusKind::Pending,
                payout_id: None,
            })),
            (_, Some(WithdrawalStatus::Processing { payout_id })) => Some(Some(WithdrawalIndex {
                status: StatusKind::Processing,
                payout_id: Some(*payout_id),
            })),
            _ => None,
        };
        Self {
            payer,
            withdrawal,
            payout: None,
        }
    }
}

/// The payout a payout event is about.
fn payout_of(event: &Event) -> Option<u64> {
    match event {
        Event::PayoutSubmitted { payout_id, .. }
        | Event::PayoutItemsSettled { payout_id, .. }
        | Event::PayoutItemResolved { payout_id, .. }
        | Event::PayoutMismatch { payout_id, .. } => Some(*payout_id),
        _ => None,
    }
}

/// Pushes the rows `event` (LSN `lsn`, stamped `at`, already applied)
/// made, read from the state after it (and `before` it).
fn derive<V, S>(
    (lsn, event, at): (u64, &Event, UnixMs),
    before: Before,
    accounts: &HashMap<AccountId, V, S>,
    payouts: &BTreeMap<u64, PayoutRecord>,
    out: &mut Vec<Change>,
) where
    V: Borrow<AccountState>,
    S: BuildHasher,
{
    let rows = Rows {
        lsn,
        at_ms: at.as_millis(),
        accounts,
        before: before.withdrawal,
        out,
    };
    let payer = before.payer;
    match event {
        Event::Deposited {
            tx,
            currency,
            amount,
            ..
        } => rows.deposit(*tx, *currency, *amount),
        Event::WithdrawalRequested { tx, .. } => rows.withdrawal(*tx, payer, Some(EntryKind::Lock)),
        Event::WithdrawalCompleted { tx } => rows.withdrawal(*tx, payer, Some(EntryKind::Burn)),
        Event::WithdrawalFailed { tx, .. } | Event::WithdrawalCancelled { tx } => {
            rows.withdrawal(*tx, payer, Some(EntryKind::Release))
        }
        Event::WithdrawalReturned { tx, .. } => {
            rows.withdrawal(*tx, payer, Some(EntryKind::Return))
        }
        Event::WithdrawalClaimed { tx, .. } | Event::WithdrawalReleased { tx } => {
            rows.withdrawal(*tx, payer, None)
        }
        Event::Transferred {
            tx,
            to,
            currency,
            amount,
            ..
        } => rows.transfer(*tx, *to, *currency, *amount),
        Event::PayoutSubmitted { payout_id, .. }
        | Event::PayoutItemsSettled { payout_id, .. }
        | Event::PayoutItemResolved { payout_id, .. }
        | Event::PayoutMismatch { payout_id, .. } => {
            if let Some(record) = payouts.get(payout_id) {
                let row = payout_row(record);
                let from = before.payout;
                rows.out.push(Change::PayoutFrom { row, from });
            }
        }
    }
}

/// What one event's rows are made from.
struct Rows<'a, V, S> {
    lsn: u64,
    at_ms: u64,
    accounts: &'a HashMap<AccountId, V, S>,
    /// How the store indexes the event's withdrawal before it, if known.
    before: Option<Option<WithdrawalIndex>>,
    out: &'a mut Vec<Change>,
}

impl<V: Borrow<AccountState>, S: BuildHasher> Rows<'_, V, S> {
    fn account(&self, id: AccountId) -> Option<&AccountState> {
        self.accounts.get(&id).map(Borrow::borrow)
    }

    fn deposit(mut self, tx: TransactionId, currency: Currency, amount: Units) {
        self.entry(tx.account(), tx, currency, EntryKind::Deposit, amount);
        self.transaction(tx, TransactionKind::Deposit, None, currency, amount);
    }

    fn transfer(mut self, tx: TransactionId, to: AccountId, currency: Currency, amount: Units) {
        self.entry(tx.account(), tx, currency, EntryKind::TransferOut, amount);
        self.entry(to, tx, currency, EntryKind::TransferIn, amount);
        self.transaction(tx, TransactionKind::Transfer, Some(to), currency, amount);
    }

    /// The withdrawal's whole row and, for an event that moved its amount,
    /// the entry of `kind`.
    fn withdrawal(mut self, tx: TransactionId, payer: Option<u64>, kind: Option<EntryKind>) {
        let Some(record) = self
            .account(tx.account())
            .and_then(|a| a.withdrawal_record_of(tx))
        else {
            return;
        };
        let (reason, payout_id) = match &record.status {
            WithdrawalStatus::Failed { reason } | WithdrawalStatus::Returned { reason } => {
                (Some(reason.clone()), payer)
            }
            status => (None, status.payout_id().or(payer)),
        };
        let row = WithdrawalRow {
            tx,
            account: tx.account(),
            currency: record.currency.code,
            amount: record.amount,
            status: record.status.kind(),
            payout_id,
            reason,
            created_at_ms: record.created_at.as_millis(),
            updated_at_ms: record.updated_at.as_millis(),
        };
        let (currency, amount) = (record.currency, record.amount);
        self.out.push(match self.before {
            Some(from) => Change::WithdrawalFrom { row, from },
            None => Change::Withdrawal(row),
        });
        if let Some(kind) = kind {
            self.entry(tx.account(), tx, currency, kind, amount);
        }
    }

    /// `account`'s entry for this event, with its balance after it.
    fn entry(
        &mut self,
        account: AccountId,
        tx: TransactionId,
        currency: Currency,
        kind: EntryKind,
        amount: Units,
    ) {
        let Some(balance) = self.account(account).map(|a| a.balance(currency)) else {
            return;
        };
        self.out.push(Change::Entry(EntryRow {
            account,
            currency: currency.code,
            seq: self.lsn,
            tx,
            kind,
            amount,
            at_ms: self.at_ms,
            available_after: balance.available,
            locked_after: balance.locked,
        }));
    }

    fn transaction(
        &mut self,
        tx: TransactionId,
        kind: TransactionKind,
        to: Option<AccountId>,
        currency: Currency,
        amount: Units,
    ) {
        self.out.push(Change::Transaction(TransactionRow {
            tx,
            kind,
            account: tx.account(),
            to,
            currency: currency.code,
            amount,
            at_ms: self.at_ms,
        }));
    }
}

/// A payout record's whole row.
pub(crate) fn payout_row(record: &PayoutRecord) -> PayoutRow {
    PayoutRow {
        payout_id: record.payout_id,
        currency: record.currency.code,
        state: record.state(),
        submitted_at_ms: record.submitted_at.as_millis(),
        settled_at_ms: record.settled_at.known().map(|at| at.as_millis()),
        items: record
            .items
            .iter()
            .map(|item| PayoutItemRow {
                tx: item.transaction_id,
                amount: item.amount,
            })
            .collect(),
    }
}
