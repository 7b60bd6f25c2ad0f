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
//! One thing a withdrawal's status does not keep: who paid it once it
//! finished (`Completed` and `Failed` name no payout). The live feed reads
//! the payout from the status just before the event that ends a payout's
//! claim ([`Before::read`]); a returned withdrawal's row names none, and
//! the store keeps the payout its completed row named (see
//! `history::ingest`). Rows made from a whole state ([`state_rows`]) find
//! it in the payout records instead, whose items keep each answer.
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
use crate::domain::event::{Event, ItemOutcome};
use crate::domain::ids::{AccountId, TransactionId};
use crate::domain::money::{Currencies, Currency, Units};
use crate::domain::payouts::{apply_payout_event, payout_of, PayoutRecord, PayoutState};
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
        Event::WithdrawalCompleted { tx, .. } => rows.withdrawal(*tx, payer, Some(EntryKind::Burn)),
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
        // Keys and controls are not history: no row.
        Event::IdempotencyKeysExpired { .. }
        | Event::AccountFrozen { .. }
        | Event::AccountUnfrozen { .. }
        | Event::AccountTierSet { .. } => {}
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

/// Every withdrawal row and payout row of a recovered state: what a store
/// that missed the log before that state (history lost, see recovery, and
/// `verify`'s replay from a snapshot) is given, so it lists every
/// withdrawal and payout memory holds, and a finished one can leave memory
/// without leaving the ledger. Rows only: the entries and transactions of
/// the missing log are gone. A finished withdrawal's row names the payout
/// whose item settled it ([`Payers`]), as the live feed's row did.
pub(crate) fn state_rows<'a, V, S>(
    accounts: &'a HashMap<AccountId, V, S>,
    payouts: &'a BTreeMap<u64, PayoutRecord>,
) -> impl Iterator<Item = Change> + 'a
where
    V: Borrow<AccountState>,
    S: BuildHasher,
{
    let payers = std::rc::Rc::new(Payers::from_records(payouts));
    let withdrawals = accounts.values().flat_map(move |account| {
        let account: &AccountState = account.borrow();
        let payers = std::rc::Rc::clone(&payers);
        account.withdrawals().map(move |(tx, record)| {
            let reason = match &record.status {
                WithdrawalStatus::Failed { reason } | WithdrawalStatus::Returned { reason } => {
                    Some(reason.clone())
                }
                _ => None,
            };
            let payout_id = record
                .status
                .payout_id()
                .or_else(|| payers.of(tx, record.status.kind()));
            Change::Withdrawal(WithdrawalRow {
                tx,
                account: tx.account(),
                currency: record.currency.code,
                amount: record.amount,
                status: record.status.kind(),
                payout_id,
                reason,
                created_at_ms: record.created_at.as_millis(),
                updated_at_ms: record.updated_at.as_millis(),
            })
        })
    });
    let payouts = payouts.values().map(|p| Change::Payout(payout_row(p)));
    withdrawals.chain(payouts)
}

/// Who settled each finished withdrawal, read from the payout records:
/// a withdrawal's status forgets its payout once it finishes, but the
/// payout's item keeps the answer. The live feed names the payout that
/// held the withdrawal just before it completed or failed
/// ([`Before::read`]); that payout's item is the one whose answer matches
/// the status (paid for completed — and returned, which was completed
/// first — failed for failed). Items released or never answered match
/// nothing, so a withdrawal a caller settled names no payout, as live.
struct Payers {
    /// tx → (payout, whether its item was paid).
    settled: HashMap<TransactionId, (u64, bool)>,
}

impl Payers {
    fn from_records(payouts: &BTreeMap<u64, PayoutRecord>) -> Self {
        let mut settled = HashMap::new();
        for record in payouts.values() {
            for item in &record.items {
                let Some(outcome) = &item.outcome else {
                    continue;
                };
                let paid = matches!(outcome, ItemOutcome::Paid);
                settled.insert(item.transaction_id, (record.payout_id, paid));
            }
        }
        Self { settled }
    }

    /// The payout that settled `tx`, now `status`, if one did.
    fn of(&self, tx: TransactionId, status: StatusKind) -> Option<u64> {
        let (payout_id, paid) = *self.settled.get(&tx)?;
        let matches = match status {
            StatusKind::Completed | StatusKind::Returned => paid,
            StatusKind::Failed => !paid,
            _ => false,
        };
        matches.then_some(payout_id)
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

#[cfg(test)]
mod tests {
    use super::*;
    use crate::domain::event::ItemOutcome;
    use crate::domain::money::{CurrencyCode, CurrencyConfig};
    use crate::storage::history::HistoryStore;

    fn w(seq: u64) -> TransactionId {
        TransactionId::new(1, seq)
    }

    /// Every way a withdrawal moves: claimed, released and claimed again,
    /// paid, failed by its payout, cancelled, returned after it was paid,
    /// left pending; and payouts submitted and settled.
    fn events(usd: Currency) -> Vec<Event> {
        let requested = |seq| Event::WithdrawalRequested {
            tx: w(seq),
            currency: usd,
            amount: 100,
            key: None,
            details: None,
        };
        let claimed = |seq, payout_id| Event::WithdrawalClaimed {
            tx: w(seq),
            payout_id,
        };
        let submitted = |payout_id, seqs: &[u64]| Event::PayoutSubmitted {
            payout_id,
            currency: usd,
            items: seqs.iter().map(|s| (w(*s), 100)).collect(),
        };
        let settled = |payout_id, outcomes: Vec<(u64, ItemOutcome)>| Event::PayoutItemsSettled {
            payout_id,
            items: outcomes.into_iter().map(|(s, o)| (w(s), o)).collect(),
        };
        let failed = || ItemOutcome::Failed {
            reason: "refused".into(),
        };
        let mut out = vec![Event::Deposited {
            tx: w(1),
            currency: usd,
            amount: 10_000,
            key: None,
            metadata: None,
        }];
        out.extend((2..=7).map(requested));
        out.extend([
            claimed(2, 1),
            claimed(3, 1),
            Event::WithdrawalReleased { tx: w(3) },
            claimed(3, 2),
            claimed(5, 1),
            submitted(1, &[2, 5]),
            submitted(2, &[3]),
            settled(1, vec![(2, ItemOutcome::Paid), (5, ItemOutcome::Paid)]),
            Event::WithdrawalCompleted {
                tx: w(2),
                fee: None,
                paid: None,
            },
            Event::WithdrawalCompleted {
                tx: w(5),
                fee: None,
                paid: None,
            },
            settled(2, vec![(3, failed())]),
            Event::WithdrawalFailed {
                tx: w(3),
                reason: "refused".into(),
            },
            Event::WithdrawalCancelled { tx: w(4) },
            Event::WithdrawalReturned {
                tx: w(5),
                reason: "bounced".into(),
            },
            Event::WithdrawalCompleted {
                tx: w(7),
                fee: None,
                paid: None,
            },
        ]);
        out
    }

    /// Each event's changes, derived in order.
    fn derived() -> Vec<Vec<Change>> {
        let currencies =
            Currencies::new(&[CurrencyConfig::new("USD", 2)]).unwrap_or_else(|e| panic!("{e}"));
        let code = CurrencyCode::new("USD").unwrap_or_else(|e| panic!("{e}"));
        let usd = currencies.get_code(code).unwrap_or_else(|e| panic!("{e}"));
        let mut accounts: HashMap<AccountId, AccountState> = HashMap::new();
        let mut payouts = BTreeMap::new();
        let mut out = Vec::new();
        for (lsn, event) in (1..).zip(events(usd)) {
            let mut changes = Vec::new();
            let state = (&mut accounts, &mut payouts);
            let logged = (lsn, &event, UnixMs::from_millis(1_000 + lsn));
            apply_logged(state, &currencies, logged, Some(&mut changes))
                .unwrap_or_else(|e| panic!("LSN {lsn}: {e}"));
            out.push(changes);
        }
        out
    }

    /// The changes as ingest would take them if they said nothing of the
    /// store (it reads what it holds instead).
    fn read_based(changes: &[Change]) -> Vec<Change> {
        let forget = |change: &Change| match change {
            Change::WithdrawalFrom { row, .. } => Change::Withdrawal(row.clone()),
            Change::PayoutFrom { row, .. } => Change::Payout(row.clone()),
            other => other.clone(),
        };
        changes.iter().map(forget).collect()
    }

    fn store_fed(runs: &[Vec<Change>]) -> (tempfile::TempDir, HistoryStore) {
        let dir = tempfile::tempdir().unwrap_or_else(|e| panic!("{e}"));
        let store = HistoryStore::open(dir.path()).unwrap_or_else(|e| panic!("{e}"));
        for (lsn, run) in (1..).zip(runs) {
            store.ingest(lsn, run).unwrap_or_else(|e| panic!("{e}"));
        }
        (dir, store)
    }

    #[test]
    fn what_derive_says_the_store_holds_is_what_reading_it_finds() {
        let per_event = derived();
        let count = |f: fn(&Change) -> bool| per_event.iter().flatten().filter(|c| f(c)).count();
        // Every withdrawal row but the returned one's (who paid it is gone
        // from the state) says what the store holds; so does every payout's.
        assert_eq!(count(|c| matches!(c, Change::WithdrawalFrom { .. })), 16);
        assert_eq!(count(|c| matches!(c, Change::Withdrawal(_))), 1);
        assert_eq!(count(|c| matches!(c, Change::PayoutFrom { .. })), 4);
        let read: Vec<Vec<Change>> = per_event.iter().map(|c| read_based(c)).collect();
        let (_a, by_event) = store_fed(&per_event);
        let (_b, by_reading) = store_fed(&read);
        let (_c, in_one_run) = store_fed(&[per_event.concat()]);
        let expected = by_reading.index_keys();
        // Account and status keys of 6 withdrawals, payout keys of the 3
        // whose rows name a payout (the returned one keeps the payout that
        // paid it), state keys of 2 payouts.
        assert_eq!(expected.len(), 6 * 2 + 3 + 2, "{expected:?}");
        let returned = by_event.withdrawal(w(5)).unwrap().unwrap();
        assert_eq!(returned.status, StatusKind::Returned);
        assert_eq!(returned.payout_id, Some(1), "who paid it stays on record");
        assert_eq!(by_event.index_keys(), expected);
        assert_eq!(in_one_run.index_keys(), expected);
        for seq in 2..=7 {
            let row = |s: &HistoryStore| s.withdrawal(w(seq)).unwrap_or_else(|e| panic!("{e}"));
            assert_eq!(row(&by_event), row(&by_reading), "w{seq}");
            assert_eq!(row(&in_one_run), row(&by_reading), "w{seq}");
        }
    }
}
