//! Ingest: a run of committed log batches, as [`Change`]s, becomes one
//! atomic store batch together with the "applied up to LSN" watermark (the
//! last LSN of the run). A run whose LSN is at or below the watermark was
//! applied already and is skipped, so re-feeding the log after a crash
//! applies nothing twice. The watermark is kept in memory too (one writer
//! at a time), so ingest never reads it back.
//!
//! A store batch may hold each key once (its writes share one sequence
//! number), so the changes are first collapsed: per withdrawal and per
//! payout, what the store held before the run and the last row; entries,
//! per balance, one key for the changes of up to
//! [`entry_value::ENTRY_EVENTS_PER_KEY_MAX`] events ([`entry_value::encode_entry`]);
//! transactions, last one per key. Entries at or below the watermark are
//! stored already and skipped, so a run that overlaps what was applied
//! never stores an entry a second time, under another key. Only then are
//! keys written: the index keys the stored row had and the last row lacks
//! are removed, those it lacks are added, the others left alone (a
//! withdrawal created and completed in one run is one row, one status key,
//! no removal).
//!
//! The run's buffers (its entries, their places, its rows, its writes) are
//! kept for the next run, emptied ([`Kept`]): grown afresh each time, the
//! runs of a fee workload faulted in tens of MiB of new pages each (a
//! fifth of the writer's time went to the kernel clearing them).
//!
//! What the store held before: a `…From` change says it (the follower knew
//! the state before the event); for the others the stored row is read,
//! once per row per run. A store marked incomplete (the log it was fed
//! from had a gap: [`HistoryStore::mark_incomplete`]) may lack rows the
//! follower believes it holds, so it reads for every change. A returned
//! withdrawal's row (the state no longer says who paid it) keeps the
//! payout the row it replaces named.

use std::collections::hash_map::Entry;
use std::collections::HashMap;

use crate::domain::ids::{AccountId, TransactionId};
use crate::domain::payouts::PayoutState;
use crate::domain::withdrawal::StatusKind;

use super::entry_value;
use super::error::HistoryError;
use super::rows::{Change, EntryRow, PayoutRow, WithdrawalIndex, WithdrawalRow};
use super::schema::{self, Ks};
use super::HistoryStore;

/// What one [`HistoryStore::ingest`] did.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct IngestReport {
    /// False when the batch was at or below the watermark (a replay).
    pub applied: bool,
    /// Status changes for withdrawals or payouts the store does not hold
    /// (their creation predates what it was fed); skipped, with a warning.
    pub missing: usize,
}

impl HistoryStore {
    /// The LSN of the last batch ingested, 0 when none.
    pub fn applied_lsn(&self) -> Result<u64, HistoryError> {
        Ok(self.applied.load(std::sync::atomic::Ordering::Acquire))
    }

    /// How many entries ingest's kept buffer has room for.
    #[cfg(test)]
    pub(super) fn kept_entries_room(&self) -> usize {
        self.kept.lock().entries.capacity()
    }

    /// Records, for good, that the store lacks part of the log (its feed
    /// skipped a range): from now on ingest reads what the store holds
    /// instead of trusting what changes say of it.
    pub fn mark_incomplete(&self) -> Result<(), HistoryError> {
        let _one_writer = self.kept.lock();
        let meta = self.ks.get(Ks::Meta);
        meta.insert(schema::INCOMPLETE_KEY, [1u8])?;
        self.incomplete
            .store(true, std::sync::atomic::Ordering::Release);
        Ok(())
    }

    /// Whether [`Self::mark_incomplete`] was ever called on this store.
    pub(super) fn stored_incomplete(ks: &schema::Keyspaces) -> Result<bool, HistoryError> {
        Ok(ks.get(Ks::Meta).get(schema::INCOMPLETE_KEY)?.is_some())
    }

    /// The watermark as stored (read once, at open).
    pub(super) fn stored_watermark(ks: &schema::Keyspaces) -> Result<u64, HistoryError> {
        match ks.get(Ks::Meta).get(schema::WATERMARK_KEY)? {
            None => Ok(0),
            Some(bytes) => {
                let raw: [u8; 8] = bytes[..]
                    .try_into()
                    .map_err(|_| schema::corrupt("watermark"))?;
                Ok(u64::from_be_bytes(raw))
            }
        }
    }

    /// Applies the changes of the log batches ending at `lsn`, atomically
    /// with the watermark; skipped if `lsn` is at or below it. Not fsynced.
    /// Entries at or below the watermark are stored already and skipped;
    /// one past `lsn` is refused (a later run's group of that balance would
    /// replace its key), and nothing of the run is written. Changes given
    /// by value are moved into the store batch; borrowed ones are copied
    /// first.
    pub fn ingest<C: Into<Change>>(
        &self,
        lsn: u64,
        changes: impl IntoIterator<Item = C>,
    ) -> Result<IngestReport, HistoryError> {
        let mut kept = self.kept.lock();
        if lsn <= self.applied_lsn()? {
            return Ok(IngestReport::default());
        }
        let trust = !self.incomplete.load(std::sync::atomic::Ordering::Acquire);
        let mut run = Run::new(self, &mut kept, trust, lsn)?;
        let applied = run.apply_all(changes).and_then(|()| run.commit(lsn));
        let missing = run.missing;
        kept.empty();
        applied?;
        self.applied
            .store(lsn, std::sync::atomic::Ordering::Release);
        Ok(IngestReport {
            applied: true,
            missing,
        })
    }
}

/// A row as the store held it before the run, and as the run leaves it.
struct Moved<Before, Row> {
    /// `None`: the store held no row.
    before: Option<Before>,
    row: Row,
}

/// What a stored withdrawal row is indexed by.
#[derive(Clone, Copy, PartialEq, Eq)]
struct Indexed {
    account: u64,
    created_at_ms: u64,
    index: WithdrawalIndex,
}

impl Indexed {
    fn of(row: &WithdrawalRow) -> Self {
        Self {
            account: row.account,
            created_at_ms: row.created_at_ms,
            index: WithdrawalIndex {
                status: row.status,
                payout_id: row.payout_id,
            },
        }
    }
}

/// Where a run of entries goes in the order entries are written in,
/// (balance, seq, part) of its first, with the first's index among the
/// run's entries; the balance's currency as the number that orders as its
/// code does, so that comparing places, most of what sorting them costs,
/// is comparing integers. A run is an event's changes to one balance that
/// arrived one after the other in increasing part (a fee's lock after its
/// amount's, its leaving the account after the burn): one place for them
/// all, so a withdrawal with a fee sorts three places for its five entries
/// (its request's run, its completion's, the fee account's credit).
type Place = (AccountId, u64, u64, u8, usize);

/// The buffers one run fills and leaves empty for the next, with their
/// room: what a run holds is bounded by the history writer's ingests, so
/// they stop growing after the first few runs. One that grew past
/// [`KEPT_ROWS_MAX`] (a whole state fed at open) is freed instead.
#[derive(Default)]
pub(super) struct Kept {
    /// The run's entries, written at commit ([`Run::write_entries`]).
    entries: Vec<EntryRow>,
    places: Vec<Place>,
    withdrawals: HashMap<TransactionId, Moved<Indexed, WithdrawalRow>>,
    payouts: HashMap<u64, Moved<PayoutState, PayoutRow>>,
    /// Entries and transactions; the last of equal keys wins.
    writes: Writes,
}

/// The most entries, places, rows, or writes of one keyspace, kept room
/// for between runs: 262,144, as many changes as the history writer hands
/// one ingest at most. What stays allocated is then at most about 40 MiB
/// of entries (112 bytes) and places (40), and the rows' map (a row per
/// event at most, 65,536 events an ingest: about 15 MiB) and writes (48
/// bytes each, about five per withdrawal row) beside them.
pub(super) const KEPT_ROWS_MAX: usize = 1 << 18;

impl Kept {
    /// Empties every buffer (after a run that failed, too), freeing those
    /// grown past [`KEPT_ROWS_MAX`].
    fn empty(&mut self) {
        fn vec<T>(v: &mut Vec<T>) {
            v.clear();
            if v.capacity() > KEPT_ROWS_MAX {
                *v = Vec::new();
            }
        }
        fn map<K, V>(m: &mut HashMap<K, V>) {
            m.clear();
            if m.capacity() > KEPT_ROWS_MAX {
                *m = HashMap::new();
            }
        }
        vec(&mut self.entries);
        vec(&mut self.places);
        map(&mut self.withdrawals);
        map(&mut self.payouts);
        self.writes.0.iter_mut().for_each(vec);
    }
}

/// The changes of one ingest, collapsed per row.
struct Run<'s> {
    store: &'s HistoryStore,
    /// Empty at the start of the run; filled by it.
    kept: &'s mut Kept,
    /// Whether a `…From` change's "before" is trusted (the store is not
    /// marked incomplete); if not, the stored row is read as for the others.
    trust: bool,
    /// The watermark before the run: entries at or below it are stored.
    applied: u64,
    /// The run's last LSN: no entry is past it.
    lsn: u64,
    missing: usize,
}

impl<'s> Run<'s> {
    fn new(
        store: &'s HistoryStore,
        kept: &'s mut Kept,
        trust: bool,
        lsn: u64,
    ) -> Result<Self, HistoryError> {
        // Empty already, unless a run panicked half-way.
        kept.empty();
        Ok(Self {
            store,
            kept,
            trust,
            applied: store.applied_lsn()?,
            lsn,
            missing: 0,
        })
    }

    fn apply_all<C: Into<Change>>(
        &mut self,
        changes: impl IntoIterator<Item = C>,
    ) -> Result<(), HistoryError> {
        changes
            .into_iter()
            .try_for_each(|change| self.apply(change.into()))
    }

    fn apply(&mut self, change: Change) -> Result<(), HistoryError> {
        let store = self.store;
        match change {
            Change::WithdrawalFrom { row, from } if self.trust => {
                let before = from.map(|index| Indexed {
                    index,
                    ..Indexed::of(&row)
                });
                set_row(&mut self.kept.withdrawals, row.tx, row, || Ok(before))
            }
            Change::WithdrawalFrom { mut row, .. } | Change::Withdrawal(mut row) => {
                // A returned withdrawal keeps the payout that paid it: it
                // stays on record (the state no longer says who paid, so
                // derive cannot name it).
                if row.payout_id.is_none() && row.status == StatusKind::Returned {
                    row.payout_id = self.withdrawal(row.tx)?.and_then(|held| held.payout_id);
                }
                let tx = row.tx;
                let read = || Ok(stored_withdrawal(store, tx)?.as_ref().map(Indexed::of));
                set_row(&mut self.kept.withdrawals, tx, row, read)
            }
            Change::WithdrawalStatus {
                tx,
                status,
                payout_id,
                reason,
                at_ms,
            } => {
                let Some(row) = self.withdrawal(tx)? else {
                    self.warn_missing("withdrawal", &tx);
                    return Ok(());
                };
                row.status = status;
                row.payout_id = payout_id.or(row.payout_id);
                row.reason = reason.or(row.reason.take());
                row.updated_at_ms = at_ms;
                Ok(())
            }
            Change::Entry(e) => self.entry(e),
            Change::Transaction(t) => {
                let key = schema::tx_key(t.tx).to_vec();
                let value = schema::encode_row(&t)?;
                self.kept.writes.put(Ks::Transactions, key, value);
                Ok(())
            }
            Change::PayoutFrom { row, from } if self.trust => {
                set_row(&mut self.kept.payouts, row.payout_id, row, || Ok(from))
            }
            Change::PayoutFrom { row, .. } | Change::Payout(row) => {
                let id = row.payout_id;
                let read = || Ok(stored_payout(store, id)?.map(|r| r.state));
                set_row(&mut self.kept.payouts, id, row, read)
            }
            Change::PayoutState {
                payout_id,
                state,
                settled_at_ms,
            } => {
                let Some(row) = self.payout(payout_id)? else {
                    self.warn_missing("payout", &payout_id);
                    return Ok(());
                };
                row.state = state;
                row.settled_at_ms = settled_at_ms.or(row.settled_at_ms);
                Ok(())
            }
        }
    }

    /// Holds `e` with the run's other entries, unless the store holds it
    /// already (its event is at or below the watermark: a run that
    /// overlaps what was applied writes only what is new, so an entry is
    /// never stored twice under two keys).
    fn entry(&mut self, e: EntryRow) -> Result<(), HistoryError> {
        if e.seq > self.lsn {
            return Err(HistoryError::Encode(format!(
                "an entry of event {} in a run up to LSN {}",
                e.seq, self.lsn
            )));
        }
        if e.seq > self.applied {
            self.kept.entries.push(e);
        }
        Ok(())
    }

    /// Writes the run's entries: per balance, the changes of up to
    /// [`entry_value::ENTRY_EVENTS_PER_KEY_MAX`] events under one key, the last
    /// one's ([`entry_value::encode_entry`]).
    fn write_entries(&mut self) -> Result<(), HistoryError> {
        let Kept {
            entries,
            places,
            writes,
            ..
        } = &mut *self.kept;
        // By balance, then (seq, part): each balance's changes in order.
        // What is sorted is each run's place and index, side by side:
        // sorting the rows moves 112 bytes each, sorting references to
        // them follows two pointers per comparison.
        places.extend(run_starts(entries));
        places.sort_unstable();
        let mut balance: Vec<&EntryRow> = Vec::new();
        for same in places.chunk_by(|a, b| (a.0, a.1) == (b.0, b.1)) {
            balance.clear();
            for place in same {
                balance.extend(same_run(&entries[place.4..]));
            }
            // Runs that overlap (a caller fed one event's changes apart,
            // out of order) are put in order here.
            if !balance.is_sorted_by_key(|e| (e.seq, e.part)) {
                balance.sort_by_key(|e| (e.seq, e.part));
            }
            for group in event_groups(&balance, entry_value::ENTRY_EVENTS_PER_KEY_MAX) {
                // Keyed by its last change (groups are never empty).
                if let [.., last] = group {
                    let key = schema::entry_row_key(last);
                    writes.put(Ks::Entries, key, entry_value::encode_entry(group)?);
                }
            }
        }
        Ok(())
    }

    fn warn_missing(&mut self, what: &str, id: &dyn std::fmt::Debug) {
        tracing::warn!(
            what,
            ?id,
            "history: a status change for a row the store does not hold; skipped"
        );
        self.missing += 1;
    }

    /// The withdrawal as this run leaves it so far, to change in place;
    /// read from the store (and remembered as what it held) when the run
    /// has not touched it.
    fn withdrawal(
        &mut self,
        tx: TransactionId,
    ) -> Result<Option<&mut WithdrawalRow>, HistoryError> {
        let moved = match self.kept.withdrawals.entry(tx) {
            Entry::Occupied(held) => held.into_mut(),
            Entry::Vacant(slot) => {
                let Some(row) = stored_withdrawal(self.store, tx)? else {
                    return Ok(None);
                };
                let before = Some(Indexed::of(&row));
                slot.insert(Moved { before, row })
            }
        };
        Ok(Some(&mut moved.row))
    }

    /// The payout as this run leaves it so far (see [`Self::withdrawal`]).
    fn payout(&mut self, payout_id: u64) -> Result<Option<&mut PayoutRow>, HistoryError> {
        let moved = match self.kept.payouts.entry(payout_id) {
            Entry::Occupied(held) => held.into_mut(),
            Entry::Vacant(slot) => {
                let Some(row) = stored_payout(self.store, payout_id)? else {
                    return Ok(None);
                };
                let before = Some(row.state);
                slot.insert(Moved { before, row })
            }
        };
        Ok(Some(&mut moved.row))
    }

    /// Writes the collapsed rows, their index keys and the watermark as one
    /// store batch.
    fn commit(&mut self, lsn: u64) -> Result<(), HistoryError> {
        self.write_entries()?;
        let Kept {
            withdrawals,
            payouts,
            writes,
            ..
        } = &mut *self.kept;
        for (tx, moved) in withdrawals.drain() {
            let old = moved.before.map(|b| index_keys(tx, &b)).unwrap_or_default();
            let new = index_keys(tx, &Indexed::of(&moved.row));
            for (space, key) in old.iter().filter(|k| !new.contains(k)) {
                writes.remove(*space, key.clone());
            }
            for (space, key) in new.into_iter().filter(|k| !old.contains(k)) {
                writes.put(space, key, Vec::new());
            }
            let value = schema::encode_row(&moved.row)?;
            writes.put(Ks::Withdrawals, schema::tx_key(tx).to_vec(), value);
        }
        for (id, moved) in payouts.drain() {
            let new = moved.row.state;
            if let Some(old) = moved.before.filter(|old| *old != new) {
                writes.remove(Ks::PByState, schema::payout_state_key(old, id).to_vec());
            }
            if moved.before != Some(new) {
                let key = schema::payout_state_key(new, id).to_vec();
                writes.put(Ks::PByState, key, Vec::new());
            }
            let value = schema::encode(&moved.row)?;
            writes.put(Ks::Payouts, id.to_be_bytes().to_vec(), value);
        }
        let watermark = lsn.to_be_bytes().to_vec();
        writes.put(Ks::Meta, schema::WATERMARK_KEY.to_vec(), watermark);
        writes.commit(self.store)
    }
}

/// A key and its value, or `None` to remove it.
type Write = (Vec<u8>, Option<Vec<u8>>);

/// One store batch's writes, per keyspace.
#[derive(Default)]
struct Writes([Vec<Write>; Ks::ALL.len()]);

impl Writes {
    fn put(&mut self, ks: Ks, key: Vec<u8>, value: Vec<u8>) {
        self.0[ks.index()].push((key, Some(value)));
    }

    fn remove(&mut self, ks: Ks, key: Vec<u8>) {
        self.0[ks.index()].push((key, None));
    }

    /// Commits each keyspace's writes in key order, the last of equal keys
    /// only: in order, each insert into a memtable finds its place where the
    /// one before it went (cache-warm), where random order misses the cache
    /// at every step of the search. Leaves every keyspace's list empty.
    fn commit(&mut self, store: &HistoryStore) -> Result<(), HistoryError> {
        // Sized at once: the batch's slots are one large allocation, grown
        // by doubling it would be copied and faulted in again and again.
        let count = self.0.iter().map(Vec::len).sum();
        let mut batch = fjall::OwnedWriteBatch::with_capacity(store.db.clone(), count);
        for (ks, writes) in Ks::ALL.into_iter().zip(&mut self.0) {
            let keyspace = store.ks.get(ks);
            for (key, value) in last_per_key(ks, writes)? {
                match value {
                    Some(value) => batch.insert(keyspace, key, value),
                    None => batch.remove(keyspace, key),
                }
            }
        }
        batch.commit()?;
        Ok(())
    }
}

/// Sets the row of `id` in `rows` to `row`; `before` (what the store held)
/// is asked only when the run had not touched it yet.
fn set_row<K: std::hash::Hash + Eq, B, R>(
    rows: &mut HashMap<K, Moved<B, R>>,
    id: K,
    row: R,
    before: impl FnOnce() -> Result<Option<B>, HistoryError>,
) -> Result<(), HistoryError> {
    match rows.get_mut(&id) {
        Some(moved) => moved.row = row,
        None => {
            let before = before()?;
            rows.insert(id, Moved { before, row });
        }
    }
    Ok(())
}

fn stored_withdrawal(
    store: &HistoryStore,
    tx: TransactionId,
) -> Result<Option<WithdrawalRow>, HistoryError> {
    let stored = store.ks.get(Ks::Withdrawals).get(schema::tx_key(tx))?;
    stored
        .map(|v| schema::decode_row(&v, "withdrawal"))
        .transpose()
}

fn stored_payout(store: &HistoryStore, payout_id: u64) -> Result<Option<PayoutRow>, HistoryError> {
    let stored = store.ks.get(Ks::Payouts).get(payout_id.to_be_bytes())?;
    stored.map(|v| schema::decode(&v, "payout")).transpose()
}

/// The pairs of keyspace `ks` with the last value of each key, in key
/// order, taken out of `pairs`. An entry key written twice is an error, not
/// a replacement: it holds every change of its balance's events in the
/// run, so a second write would lose the first's.
fn last_per_key<V>(
    ks: Ks,
    pairs: &mut Vec<(Vec<u8>, V)>,
) -> Result<impl Iterator<Item = (Vec<u8>, V)> + '_, HistoryError> {
    // Stable: equal keys keep their order, so the last is the newest.
    pairs.sort_by(|a, b| a.0.cmp(&b.0));
    let repeated = pairs.windows(2).any(|pair| pair[0].0 == pair[1].0);
    if repeated && ks == Ks::Entries {
        return Err(HistoryError::Encode(
            "one run wrote an entry key twice".into(),
        ));
    }
    let mut pairs = pairs.drain(..).peekable();
    Ok(std::iter::from_fn(move || loop {
        let pair = pairs.next()?;
        // A later write of the same key replaces this one.
        if pairs.peek().is_none_or(|next| next.0 != pair.0) {
            return Some(pair);
        }
    }))
}

/// The index keys of a withdrawal indexed as `at`.
fn index_keys(tx: TransactionId, at: &Indexed) -> Vec<(Ks, Vec<u8>)> {
    let key = |prefix: Vec<u8>| schema::index_key(&prefix, at.created_at_ms, tx);
    let mut keys = vec![
        (Ks::WByAccount, key(schema::account_prefix(at.account))),
        (Ks::WByStatus, key(schema::status_prefix(at.index.status))),
    ];
    if let Some(payout_id) = at.index.payout_id {
        keys.push((Ks::WByPayout, key(schema::payout_prefix(payout_id))));
    }
    keys
}

/// The place of each run's first entry in `entries` ([`Place`]).
fn run_starts(entries: &[EntryRow]) -> impl Iterator<Item = Place> + '_ {
    let first = |(i, e): (usize, &EntryRow)| {
        let starts = i == 0 || !continues(&entries[i - 1], e);
        starts.then(|| (e.account, e.currency.order_key(), e.seq, e.part, i))
    };
    entries.iter().enumerate().filter_map(first)
}

/// The run that starts `entries`: its first entry and those that continue it.
fn same_run(entries: &[EntryRow]) -> impl Iterator<Item = &EntryRow> + '_ {
    let mut before: Option<&EntryRow> = None;
    entries.iter().take_while(move |e| {
        let in_run = before.is_none_or(|b| continues(b, e));
        before = Some(e);
        in_run
    })
}

/// Whether `e`, right after `before` in a run's entries, is the same
/// event's next change to the same balance.
fn continues(before: &EntryRow, e: &EntryRow) -> bool {
    (before.account, before.currency, before.seq) == (e.account, e.currency, e.seq)
        && before.part < e.part
}

/// `changes` (one balance's, in (seq, part) order) cut into runs of at
/// most `events` events, never inside an event.
fn event_groups<'a>(
    changes: &'a [&'a EntryRow],
    events: usize,
) -> impl Iterator<Item = &'a [&'a EntryRow]> {
    let mut rest = changes;
    std::iter::from_fn(move || {
        let by_event = rest.chunk_by(|a, b| a.seq == b.seq);
        let end: usize = by_event.take(events.max(1)).map(<[_]>::len).sum();
        let (group, after) = rest.split_at(end);
        rest = after;
        (!group.is_empty()).then_some(group)
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::domain::history::EntryKind;
    use crate::domain::history::EntryKind::{Burn, FeeIn, FeeOut, Lock};

    fn entry(account: AccountId, seq: u64, part: u8, kind: EntryKind) -> EntryRow {
        EntryRow {
            account,
            currency: crate::domain::money::usd().code,
            seq,
            tx: TransactionId::new(1, 1),
            kind,
            amount: 1,
            at_ms: 0,
            available_after: 0,
            locked_after: 0,
            part,
            metadata: None,
        }
    }

    /// The indexes of the entries that start runs.
    fn starts(entries: &[EntryRow]) -> Vec<usize> {
        run_starts(entries).map(|place| place.4).collect()
    }

    #[test]
    fn an_events_changes_to_one_balance_in_a_row_take_one_place() {
        // A fee withdrawal's request (lock, fee's lock) and completion
        // (burn, fee out; the fee account's credit).
        let entries = [
            entry(1, 7, 0, Lock),
            entry(1, 7, 1, Lock),
            entry(1, 8, 0, Burn),
            entry(1, 8, 1, FeeOut),
            entry(9, 8, 0, FeeIn),
        ];
        assert_eq!(starts(&entries), [0, 2, 4]);
        assert_eq!(same_run(&entries[0..]).count(), 2);
        assert_eq!(same_run(&entries[2..]).count(), 2);
        assert_eq!(same_run(&entries[4..]).count(), 1);
    }

    #[test]
    fn a_repeated_or_lower_part_starts_a_run_of_its_own() {
        let entries = [
            entry(1, 7, 0, Lock),
            entry(1, 7, 0, Lock),
            entry(1, 7, 2, Lock),
            entry(1, 7, 1, Lock),
            entry(2, 7, 2, Lock),
        ];
        assert_eq!(starts(&entries), [0, 1, 3, 4]);
        assert_eq!(same_run(&entries[1..]).count(), 2);
    }
}
