//! The one place logged events become history [`Change`]s: an event is
//! applied to a copy of the state (accounts and payout records), then read
//! back from that copy as FULL rows — the withdrawal's whole row, one
//! entry per balance change with the balance after it, the deposit's or
//! transfer's transaction, the payout's whole row — so the store replaces
//! rows and never needs what it held before.
//!
//! An entry's `seq` is the LSN of the event that made it, its `part` the
//! number of the change among those the event made to that balance (a
//! completion burns what was paid, releases the rest and moves its fee,
//! perhaps all in one currency; a request locks the amount and the fee).
//! LSNs only grow, so (seq, part) numbers an account's entries in a
//! currency strictly increasingly; and an LSN is the same whether the copy
//! started from a snapshot or from the log's start, so a replay makes each
//! entry as it was (and the store skips those it holds: `history::ingest`).
//! Each entry's balance after it is the state's after the event for the
//! event's last change to that balance, and, for the ones before, that
//! balance with the later changes taken back ([`EntryKind::delta`]).
//!
//! What an event carries beyond currency and amount goes on its rows: a
//! withdrawal's extras (fee, destination, metadata, expiry, paid amount)
//! on its row, as its record keeps them; a deposit's or transfer's
//! metadata on its transaction; every entry keeps its operation's metadata.
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

use smallvec::SmallVec;

use crate::domain::account::AccountState;
use crate::domain::details::Metadata;
use crate::domain::event::Event;
use crate::domain::ids::{AccountId, TransactionId};
use crate::domain::money::{Currencies, Currency, Units};
use crate::domain::payouts::{apply_payout_event, payout_of, PayoutRecord, PayoutState};
use crate::domain::time::UnixMs;
use crate::domain::withdrawal::{StatusKind, WithdrawalRecord, WithdrawalStatus};
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
    let mut rows = Rows {
        lsn,
        at_ms: at.as_millis(),
        accounts,
        before: before.withdrawal,
        out,
        moves: Moves::new(),
    };
    let payer = before.payer;
    match event {
        Event::Deposited {
            tx,
            currency,
            amount,
            metadata,
            ..
        } => rows.deposit(*tx, *currency, *amount, metadata),
        Event::WithdrawalRequested { tx, .. }
        | Event::WithdrawalCompleted { tx, .. }
        | Event::WithdrawalFailed { tx, .. }
        | Event::WithdrawalCancelled { tx }
        | Event::WithdrawalReturned { tx, .. }
        | Event::WithdrawalClaimed { tx, .. }
        | Event::WithdrawalReleased { tx } => rows.withdrawal(*tx, payer, event),
        Event::Transferred {
            tx,
            to,
            currency,
            amount,
            metadata,
            ..
        } => rows.transfer(*tx, *to, *currency, *amount, metadata),
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
    rows.entries();
}

/// One event's balance changes: four at most (a completion burns,
/// releases the rest, and moves its fee out and in), kept inline rather
/// than in a buffer allocated per event.
type Moves = SmallVec<[Move; 4]>;

/// A balance an event changed: its account and currency.
type Balance = (AccountId, Currency);

/// One balance change an event made, in the order it made them.
struct Move {
    account: AccountId,
    tx: TransactionId,
    currency: Currency,
    kind: EntryKind,
    amount: Units,
    metadata: Option<Box<Metadata>>,
}

/// What one event's rows are made from.
struct Rows<'a, V, S> {
    lsn: u64,
    at_ms: u64,
    accounts: &'a HashMap<AccountId, V, S>,
    /// How the store indexes the event's withdrawal before it, if known.
    before: Option<Option<WithdrawalIndex>>,
    out: &'a mut Vec<Change>,
    /// The balance changes, made into entries last ([`Rows::entries`]).
    moves: Moves,
}

impl<V: Borrow<AccountState>, S: BuildHasher> Rows<'_, V, S> {
    fn account(&self, id: AccountId) -> Option<&AccountState> {
        self.accounts.get(&id).map(Borrow::borrow)
    }

    fn deposit(
        &mut self,
        tx: TransactionId,
        currency: Currency,
        amount: Units,
        metadata: &Option<Box<Metadata>>,
    ) {
        let account = tx.account();
        self.moved(account, tx, currency, EntryKind::Deposit, amount, metadata);
        self.transaction(
            tx,
            TransactionKind::Deposit,
            None,
            (currency, amount),
            metadata,
        );
    }

    fn transfer(
        &mut self,
        tx: TransactionId,
        to: AccountId,
        currency: Currency,
        amount: Units,
        metadata: &Option<Box<Metadata>>,
    ) {
        let from = tx.account();
        self.moved(from, tx, currency, EntryKind::TransferOut, amount, metadata);
        self.moved(to, tx, currency, EntryKind::TransferIn, amount, metadata);
        let kind = TransactionKind::Transfer;
        self.transaction(tx, kind, Some(to), (currency, amount), metadata);
    }

    /// The withdrawal's whole row and the balance changes `event` made.
    fn withdrawal(&mut self, tx: TransactionId, payer: Option<u64>, event: &Event) {
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
            extras: record.extras.clone(),
        };
        let record = record.clone();
        self.out.push(match self.before {
            Some(from) => Change::WithdrawalFrom { row, from },
            None => Change::Withdrawal(row),
        });
        self.withdrawal_moves(tx, &record, event);
    }

    /// What a withdrawal's event moved: its amount (locked, burned in full
    /// or in part with the rest released, released, returned) and its fee
    /// (locked, collected by the fee account, released).
    fn withdrawal_moves(&mut self, tx: TransactionId, record: &WithdrawalRecord, event: &Event) {
        use EntryKind::{Burn, FeeIn, FeeOut, Lock, Release, Return};
        let owner = tx.account();
        let (currency, amount, paid) = (record.currency, record.amount, record.paid());
        let fee = record.fee();
        let metadata = record.extras.metadata().and_then(|m| m.clone().boxed());
        let fee_moves = |rows: &mut Self, kinds: &[(AccountId, EntryKind)]| {
            if let Some(fee) = fee {
                for &(account, kind) in kinds {
                    rows.moved(account, tx, fee.currency, kind, fee.amount, &metadata);
                }
            }
        };
        match event {
            Event::WithdrawalRequested { .. } => {
                self.moved(owner, tx, currency, Lock, amount, &metadata);
                fee_moves(self, &[(owner, Lock)]);
            }
            Event::WithdrawalCompleted { fee: collected, .. } => {
                self.moved(owner, tx, currency, Burn, paid, &metadata);
                if paid < amount {
                    self.moved(owner, tx, currency, Release, amount - paid, &metadata);
                }
                match collected.map(|f| f.to) {
                    Some(to) if to != owner => fee_moves(self, &[(owner, FeeOut), (to, FeeIn)]),
                    Some(_) => fee_moves(self, &[(owner, Release)]),
                    None => {}
                }
            }
            Event::WithdrawalFailed { .. } | Event::WithdrawalCancelled { .. } => {
                self.moved(owner, tx, currency, Release, amount, &metadata);
                fee_moves(self, &[(owner, Release)]);
            }
            Event::WithdrawalReturned { .. } => {
                self.moved(owner, tx, currency, Return, paid, &metadata)
            }
            _ => {}
        }
    }

    /// Notes a balance change, made into an entry by [`Rows::entries`].
    fn moved(
        &mut self,
        account: AccountId,
        tx: TransactionId,
        currency: Currency,
        kind: EntryKind,
        amount: Units,
        metadata: &Option<Box<Metadata>>,
    ) {
        self.moves.push(Move {
            account,
            tx,
            currency,
            kind,
            amount,
            metadata: metadata.clone(),
        });
    }

    /// One entry per balance change, numbered (`part`) within its balance
    /// in the order they were made; the last change to a balance has the
    /// state's balance after the event, each one before it that balance
    /// with the changes after it taken back. The changes are read in place
    /// and each moved once, into its entry.
    fn entries(mut self) {
        let moves = std::mem::take(&mut self.moves);
        let afters = self.balances_after(&moves);
        let mut parts: SmallVec<[(Balance, u8); 4]> = SmallVec::new();
        for (m, after) in moves.into_iter().zip(afters) {
            // A change to an account the state lacks has no entry.
            let Some((available_after, locked_after)) = after else {
                continue;
            };
            let balance = (m.account, m.currency);
            let part = match parts.iter_mut().find(|(b, _)| *b == balance) {
                Some((_, part)) => {
                    *part = part.saturating_add(1);
                    *part
                }
                None => {
                    parts.push((balance, 0));
                    0
                }
            };
            self.out.push(Change::Entry(EntryRow {
                account: m.account,
                currency: m.currency.code,
                seq: self.lsn,
                tx: m.tx,
                kind: m.kind,
                amount: m.amount,
                at_ms: self.at_ms,
                available_after,
                locked_after,
                part,
                metadata: m.metadata,
            }));
        }
    }

    /// Each of `moves`' balance (available, locked) after it, in their
    /// order; `None` for one whose account is not in the state.
    fn balances_after(&self, moves: &[Move]) -> SmallVec<[Option<(Units, Units)>; 4]> {
        // Each balance's (available, locked) as the changes after the
        // current one left it.
        let mut now: SmallVec<[(Balance, (Units, Units)); 4]> = SmallVec::new();
        let mut afters: SmallVec<[Option<(Units, Units)>; 4]> = SmallVec::new();
        for m in moves.iter().rev() {
            let balance = (m.account, m.currency);
            let index = match now.iter().position(|(b, _)| *b == balance) {
                Some(index) => index,
                None => {
                    let Some(account) = self.account(m.account) else {
                        afters.push(None);
                        continue;
                    };
                    let state = account.balance(m.currency);
                    now.push((balance, (state.available, state.locked)));
                    now.len() - 1
                }
            };
            let (available, locked) = now[index].1;
            let (d_available, d_locked) = m.kind.delta(m.amount);
            now[index].1 = (
                available.saturating_sub(d_available),
                locked.saturating_sub(d_locked),
            );
            afters.push(Some((available, locked)));
        }
        afters.reverse();
        afters
    }

    fn transaction(
        &mut self,
        tx: TransactionId,
        kind: TransactionKind,
        to: Option<AccountId>,
        (currency, amount): (Currency, Units),
        metadata: &Option<Box<Metadata>>,
    ) {
        self.out.push(Change::Transaction(TransactionRow {
            tx,
            kind,
            account: tx.account(),
            to,
            currency: currency.code,
            amount,
            at_ms: self.at_ms,
            metadata: metadata.clone(),
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
                extras: record.extras.clone(),
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
                let paid = outcome.is_paid();
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
    use crate::storage::history::{HistoryStore, TransactionRecord};

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

    /// A store fed `runs`, each of `events` events (LSN 1 first).
    fn store_fed(runs: &[Vec<Change>], events: u64) -> (tempfile::TempDir, HistoryStore) {
        let dir = tempfile::tempdir().unwrap_or_else(|e| panic!("{e}"));
        let store = HistoryStore::open(dir.path()).unwrap_or_else(|e| panic!("{e}"));
        for (lsn, run) in (1..).map(|run| run * events).zip(runs) {
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
        let (_a, by_event) = store_fed(&per_event, 1);
        let (_b, by_reading) = store_fed(&read, 1);
        let (_c, in_one_run) = store_fed(&[per_event.concat()], per_event.len() as u64);
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

    /// Format v7's parts reach the store: a deposit's and a transfer's
    /// metadata (on their transactions and entries), a withdrawal's extras
    /// (on its row), a fee locked with the amount in the same currency and
    /// in another, a completion paid in part with its fee collected by the
    /// fee account (burn, release of the rest, fee out, fee in), a failed
    /// one's fee released. Every entry's balance after it is its account's
    /// entries added up, and the last one is the state's balance.
    #[test]
    fn fees_partial_completions_and_metadata_make_their_rows_and_entries() {
        use crate::domain::details::{Fee, FeeCollected, WithdrawalDetails};
        let currencies =
            Currencies::new(&[CurrencyConfig::new("USD", 2), CurrencyConfig::new("EUR", 2)])
                .unwrap_or_else(|e| panic!("{e}"));
        let get = |c| currencies.get(c).unwrap_or_else(|e| panic!("{e}"));
        let (usd, eur) = (get("USD"), get("EUR"));
        let metadata = Metadata::new([("order", "o-7")]).unwrap_or_else(|e| panic!("{e}"));
        let details = |fee| WithdrawalDetails {
            fee: Some(fee),
            metadata: metadata.clone(),
            ..WithdrawalDetails::default()
        };
        let fee_account = 9;
        let events = vec![
            Event::Deposited {
                tx: w(1),
                currency: usd,
                amount: 10_000,
                key: None,
                metadata: metadata.clone().boxed(),
            },
            Event::Deposited {
                tx: w(2),
                currency: eur,
                amount: 500,
                key: None,
                metadata: None,
            },
            Event::WithdrawalRequested {
                tx: w(3),
                currency: usd,
                amount: 3_000,
                key: None,
                details: details(Fee {
                    currency: usd,
                    amount: 100,
                })
                .boxed(),
            },
            Event::WithdrawalCompleted {
                tx: w(3),
                paid: Some(2_400),
                fee: Some(FeeCollected {
                    to: fee_account,
                    currency: usd,
                    amount: 100,
                }),
            },
            Event::WithdrawalRequested {
                tx: w(4),
                currency: usd,
                amount: 1_000,
                key: None,
                details: details(Fee {
                    currency: eur,
                    amount: 50,
                })
                .boxed(),
            },
            Event::WithdrawalFailed {
                tx: w(4),
                reason: "no".into(),
            },
            Event::Transferred {
                tx: w(5),
                to: 2,
                currency: usd,
                amount: 200,
                key: None,
                metadata: metadata.clone().boxed(),
            },
        ];
        let mut accounts: HashMap<AccountId, AccountState> = HashMap::new();
        let mut payouts = BTreeMap::new();
        let mut runs = Vec::new();
        for (lsn, event) in (1..).zip(&events) {
            let mut changes = Vec::new();
            let logged = (lsn, event, UnixMs::from_millis(1_000 + lsn));
            apply_logged(
                (&mut accounts, &mut payouts),
                &currencies,
                logged,
                Some(&mut changes),
            )
            .unwrap_or_else(|e| panic!("LSN {lsn}: {e}"));
            runs.push(changes);
        }
        let (_dir, store) = store_fed(&runs, 1);
        let entries = |account| {
            store
                .entries(account, None, None, 100)
                .unwrap_or_else(|e| panic!("{e}"))
                .items
        };
        let ours = entries(1);
        let shape: Vec<_> = ours
            .iter()
            .map(|e| {
                (
                    e.currency.as_str().to_owned(),
                    e.seq,
                    e.part,
                    e.kind,
                    e.amount,
                    e.available_after,
                    e.locked_after,
                )
            })
            .collect();
        use EntryKind::*;
        let row = |c: &str, seq, part, kind, amount, available, locked| {
            (c.to_owned(), seq, part, kind, amount, available, locked)
        };
        assert_eq!(
            shape,
            [
                row("EUR", 2, 0, Deposit, 500, 500, 0),
                row("EUR", 5, 0, Lock, 50, 450, 50),
                row("EUR", 6, 0, Release, 50, 500, 0),
                row("USD", 1, 0, Deposit, 10_000, 10_000, 0),
                row("USD", 3, 0, Lock, 3_000, 7_000, 3_000),
                row("USD", 3, 1, Lock, 100, 6_900, 3_100),
                row("USD", 4, 0, Burn, 2_400, 6_900, 700),
                row("USD", 4, 1, Release, 600, 7_500, 100),
                row("USD", 4, 2, FeeOut, 100, 7_500, 0),
                row("USD", 5, 0, Lock, 1_000, 6_500, 1_000),
                row("USD", 6, 0, Release, 1_000, 7_500, 0),
                row("USD", 7, 0, TransferOut, 200, 7_300, 0),
            ]
        );
        // Added up from zero, each account's entries give every balance
        // after, and end at the state's.
        for account in [1, 2, fee_account] {
            let mut sums: HashMap<CurrencyCode, (Units, Units)> = HashMap::new();
            for e in entries(account) {
                let (available, locked) = sums.entry(e.currency).or_default();
                let (da, dl) = e.kind.delta(e.amount);
                (*available, *locked) = (*available + da, *locked + dl);
                assert_eq!(
                    (e.available_after, e.locked_after),
                    (*available, *locked),
                    "{e:?}"
                );
            }
            for balance in accounts[&account].balances() {
                assert_eq!(
                    sums[&balance.currency.code],
                    (balance.available, balance.locked)
                );
            }
        }
        let fee_in = entries(fee_account);
        assert_eq!(fee_in.len(), 1);
        assert_eq!(
            (fee_in[0].kind, fee_in[0].amount, fee_in[0].tx),
            (FeeIn, 100, w(3))
        );
        assert_eq!(fee_in[0].metadata.as_deref(), Some(&metadata));
        assert_eq!(
            ours[4].metadata.as_deref(),
            Some(&metadata),
            "a withdrawal's entries"
        );
        assert_eq!(ours[0].metadata, None);
        let paid = store
            .withdrawal(w(3))
            .unwrap_or_else(|e| panic!("{e}"))
            .unwrap_or_else(|| panic!("stored"));
        let record = accounts[&1]
            .withdrawal_record_of(w(3))
            .unwrap_or_else(|| panic!("kept"))
            .clone();
        assert_eq!(paid.extras, record.extras);
        assert_eq!(paid.extras.paid(), Some(2_400));
        for tx in [w(1), w(5)] {
            let Some(TransactionRecord::Other(t)) =
                store.transaction(tx).unwrap_or_else(|e| panic!("{e}"))
            else {
                panic!("{tx} is stored");
            };
            assert_eq!(t.metadata.as_deref(), Some(&metadata), "{tx}");
        }
        // An entries cursor that ends in a part resumes right after it.
        let page = store
            .entries(1, None, None, 6)
            .unwrap_or_else(|e| panic!("{e}"));
        let rest = store
            .entries(1, None, page.next.as_deref(), 100)
            .unwrap_or_else(|e| panic!("{e}"));
        assert_eq!([page.items, rest.items].concat(), ours);
        assert_eq!(
            store
                .balance_at_lsn(1, usd.code, 4)
                .unwrap_or_else(|e| panic!("{e}")),
            (7_500, 0)
        );
    }
}
