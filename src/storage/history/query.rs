//! Reads: withdrawal listings (by account, by payout, or by status across
//! accounts), account entries, balances as of a time, transactions by id
//! and payouts. Each call reads one snapshot of the store, so a page is
//! consistent even while a batch is being ingested; paging across calls is
//! kept stable by the cursors (see `cursor.rs`).

use std::ops::Bound::{Excluded, Included};

use fjall::{Readable, Snapshot};

use crate::domain::ids::{AccountId, TransactionId};
use crate::domain::money::{CurrencyCode, Units};
use crate::domain::payouts::PayoutState;
use crate::domain::withdrawal::StatusKind;

use super::cursor::{self, CursorKind};
use super::entry_value;
use super::error::HistoryError;
use super::rows::{BalanceAt, EntryRow, PayoutRow, TransactionRecord, WithdrawalRow};
use super::scan::{collect_page, range_iter, Merged, Scan};
use super::schema::{self, Ks, ENTRY_SUFFIX_LEN, PAYOUT_ID_LEN, TIME_TX_LEN};
use super::HistoryStore;

/// The most rows one page may ask for.
pub const PAGE_LIMIT_MAX: usize = 1_000;

/// Listing order: by creation time (then transaction id) for withdrawals,
/// by id for payouts.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub enum Order {
    #[default]
    Asc,
    Desc,
}

/// One page of a listing; `next` resumes after its last item, `None` when
/// nothing follows.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Page<T> {
    pub items: Vec<T>,
    pub next: Option<String>,
}

/// A withdrawal listing. With `account`, that account's withdrawals; else
/// with `payout_id`, that payout's; else every account's, in `statuses`
/// (all statuses when empty). Times: `created_from <= created_at <
/// created_to`.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct WithdrawalQuery<'a> {
    pub account: Option<AccountId>,
    pub currency: Option<CurrencyCode>,
    pub statuses: &'a [StatusKind],
    pub created_from: Option<u64>,
    pub created_to: Option<u64>,
    pub payout_id: Option<u64>,
    pub after: Option<&'a str>,
    pub limit: usize,
    pub order: Order,
}

impl Default for WithdrawalQuery<'_> {
    fn default() -> Self {
        Self {
            account: None,
            currency: None,
            statuses: &[],
            created_from: None,
            created_to: None,
            payout_id: None,
            after: None,
            limit: 100,
            order: Order::Asc,
        }
    }
}

impl WithdrawalQuery<'_> {
    /// The filters the scanned index does not already apply.
    fn matches(&self, row: &WithdrawalRow) -> bool {
        self.account.is_none_or(|a| row.account == a)
            && self.currency.is_none_or(|c| row.currency == c)
            && (self.statuses.is_empty() || self.statuses.contains(&row.status))
            && self.payout_id.is_none_or(|p| row.payout_id == Some(p))
    }

    /// The indexes to scan, merged in (created, tx) order.
    fn sources(&self) -> Vec<(Ks, Vec<u8>)> {
        if let Some(account) = self.account {
            return vec![(Ks::WByAccount, schema::account_prefix(account))];
        }
        if let Some(payout_id) = self.payout_id {
            return vec![(Ks::WByPayout, schema::payout_prefix(payout_id))];
        }
        let statuses = if self.statuses.is_empty() {
            &StatusKind::ALL[..]
        } else {
            self.statuses
        };
        let mut prefixes: Vec<Vec<u8>> =
            statuses.iter().map(|s| schema::status_prefix(*s)).collect();
        prefixes.sort();
        prefixes.dedup();
        prefixes.into_iter().map(|p| (Ks::WByStatus, p)).collect()
    }

    /// The (created, tx) suffix bounds of the time range.
    fn time_bounds(&self) -> Result<SuffixBounds, HistoryError> {
        if let (Some(from), Some(to)) = (self.created_from, self.created_to) {
            if from > to {
                return Err(HistoryError::BadTimeRange { from, to });
            }
        }
        let at = |ms: u64| [&ms.to_be_bytes()[..], &[0u8; 16]].concat();
        Ok((self.created_from.map(at), self.created_to.map(at)))
    }
}

/// A payout listing, by id; `state` and `currency` filter it.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct PayoutQuery<'a> {
    pub state: Option<PayoutState>,
    pub currency: Option<CurrencyCode>,
    pub after: Option<&'a str>,
    pub limit: usize,
    pub order: Order,
}

impl HistoryStore {
    /// One withdrawal by id.
    pub fn withdrawal(&self, tx: TransactionId) -> Result<Option<WithdrawalRow>, HistoryError> {
        read_withdrawal(self, &self.db.snapshot(), tx)
    }

    /// Whatever `tx` names: a withdrawal, a deposit or a transfer.
    pub fn transaction(
        &self,
        tx: TransactionId,
    ) -> Result<Option<TransactionRecord>, HistoryError> {
        let snap = self.db.snapshot();
        if let Some(row) = read_withdrawal(self, &snap, tx)? {
            return Ok(Some(TransactionRecord::Withdrawal(row)));
        }
        let stored = snap.get(self.ks.get(Ks::Transactions), schema::tx_key(tx))?;
        let row = stored
            .map(|v| schema::decode_row(&v, "transaction"))
            .transpose()?;
        Ok(row.map(TransactionRecord::Other))
    }

    /// A page of withdrawals (see [`WithdrawalQuery`]).
    pub fn withdrawals(
        &self,
        q: &WithdrawalQuery<'_>,
    ) -> Result<Page<WithdrawalRow>, HistoryError> {
        check_limit(q.limit)?;
        let (from, to) = q.time_bounds()?;
        let after = q
            .after
            .map(|c| cursor::decode(CursorKind::Withdrawals, c))
            .transpose()?;
        let snap = self.db.snapshot();
        let (from, to, after) = (from.as_deref(), to.as_deref(), after.as_deref());
        let scans = q.sources().into_iter().filter_map(|(ks, prefix)| {
            let range = cursor::scan_range(&prefix, TIME_TX_LEN, from, to, after, q.order);
            self.scan(&snap, ks, prefix.len(), range, q.order)
        });
        let mut merged = Merged::new(scans.collect(), q.order);
        let load = |suffix: &[u8], _: &[u8]| -> Result<Option<WithdrawalRow>, HistoryError> {
            let tx = schema::tx_of_index_key(suffix)?;
            let row = read_withdrawal(self, &snap, tx)?
                .ok_or_else(|| schema::corrupt("withdrawal index entry"))?;
            Ok(q.matches(&row).then_some(row))
        };
        let cursor_of = |r: &WithdrawalRow| {
            cursor::encode(
                CursorKind::Withdrawals,
                &schema::time_tx(r.created_at_ms, r.tx),
            )
        };
        collect_page(|| merged.next(), q.limit, load, cursor_of)
    }

    /// A page of `account`'s entries, in `currency` or all (by currency,
    /// then seq), oldest first.
    pub fn entries(
        &self,
        account: AccountId,
        currency: Option<CurrencyCode>,
        after: Option<&str>,
        limit: usize,
    ) -> Result<Page<EntryRow>, HistoryError> {
        check_limit(limit)?;
        let after = after
            .map(|c| cursor::decode(CursorKind::Entries, c))
            .transpose()?;
        let (from, to) = currency.map_or((None, None), currency_bounds);
        // The page resumes at the cursor's seq: the key holding the
        // cursor's entry is there or after it, and may hold later changes
        // (see `entry_value::encode_entry`).
        let from = match (from, after.as_deref()) {
            (from, Some(after)) => {
                let at = after[..ENTRY_SUFFIX_LEN].to_vec();
                Some(match from {
                    Some(from) => from.max(at),
                    None => at,
                })
            }
            (from, None) => from,
        };
        let prefix = schema::account_prefix(account);
        let range = cursor::scan_range(
            &prefix,
            ENTRY_SUFFIX_LEN,
            from.as_deref(),
            to.as_deref(),
            None,
            Order::Asc,
        );
        let snap = self.db.snapshot();
        let Some(range) = range else {
            return Ok(Page {
                items: Vec::new(),
                next: None,
            });
        };
        let keys = snap.range(self.ks.get(Ks::Entries), range);
        entries_page(keys, after, limit)
    }

    /// `account`'s balance in each currency as of `at_ms`: its last entry
    /// at or before then (currencies with no such entry are left out). Reads
    /// back from the newest entry, so it costs the entries made since.
    pub fn balances_at(
        &self,
        account: AccountId,
        at_ms: u64,
    ) -> Result<Vec<BalanceAt>, HistoryError> {
        let snap = self.db.snapshot();
        let entries = self.ks.get(Ks::Entries);
        let prefix = schema::account_prefix(account);
        let mut out = Vec::new();
        let mut from = None;
        while let Some(range) = cursor::scan_range(
            &prefix,
            ENTRY_SUFFIX_LEN,
            from.as_deref(),
            None,
            None,
            Order::Asc,
        ) {
            let Some(guard) = snap.range(entries, range).next() else {
                break;
            };
            let key = guard.key()?;
            let currency_key = key.get(8..16).ok_or_else(|| schema::corrupt("entry key"))?;
            let currency_prefix = [&prefix[..], currency_key].concat();
            if let Some(e) = last_entry_at(&snap, entries, &currency_prefix, at_ms)? {
                out.push(BalanceAt {
                    currency: e.currency,
                    available: e.available_after,
                    locked: e.locked_after,
                    seq: e.seq,
                    at_ms: e.at_ms,
                });
            }
            from = Some(next_currency(currency_key)?);
        }
        Ok(out)
    }

    /// `account`'s (available, locked) in `currency` just after the event
    /// at `lsn`: its last entry at or before that LSN (that event's last
    /// part); zero when it has none (no event before then moved that
    /// balance). That entry is under the last key at or before `lsn`, or
    /// under the first after it, with later events' changes.
    pub fn balance_at_lsn(
        &self,
        account: AccountId,
        currency: CurrencyCode,
        lsn: u64,
    ) -> Result<(Units, Units), HistoryError> {
        let snap = self.db.snapshot();
        let entries = self.ks.get(Ks::Entries);
        let from = schema::entry_key(account, currency, 0);
        let upto = [schema::entry_key(account, currency, lsn), vec![u8::MAX]].concat();
        let end = [
            schema::entry_key(account, currency, u64::MAX),
            vec![u8::MAX],
        ]
        .concat();
        let at_or_before = |e: &EntryRow| e.seq <= lsn;
        let after = snap
            .range(entries, (Excluded(upto.clone()), Included(end)))
            .next();
        let mut found = match after {
            Some(guard) => last_entry_where(guard, at_or_before)?,
            None => None,
        };
        if found.is_none() {
            if let Some(guard) = snap.range(entries, from..=upto).next_back() {
                found = last_entry_where(guard, at_or_before)?;
            }
        }
        Ok(found.map_or((0, 0), |e| (e.available_after, e.locked_after)))
    }

    /// One payout by id.
    pub fn payout(&self, payout_id: u64) -> Result<Option<PayoutRow>, HistoryError> {
        read_payout(self, &self.db.snapshot(), payout_id)
    }

    /// A page of payouts (see [`PayoutQuery`]).
    pub fn payouts(&self, q: &PayoutQuery<'_>) -> Result<Page<PayoutRow>, HistoryError> {
        check_limit(q.limit)?;
        let after = q
            .after
            .map(|c| cursor::decode(CursorKind::Payouts, c))
            .transpose()?;
        let (ks, prefix) = match q.state {
            Some(state) => (Ks::PByState, schema::payout_state_prefix(state)),
            None => (Ks::Payouts, Vec::new()),
        };
        let snap = self.db.snapshot();
        let range = cursor::scan_range(
            &prefix,
            PAYOUT_ID_LEN,
            None,
            None,
            after.as_deref(),
            q.order,
        );
        let scans = self.scan(&snap, ks, prefix.len(), range, q.order);
        let mut merged = Merged::new(scans.into_iter().collect(), q.order);
        let load = |suffix: &[u8], _: &[u8]| -> Result<Option<PayoutRow>, HistoryError> {
            let raw: [u8; 8] = suffix
                .try_into()
                .map_err(|_| schema::corrupt("payout key"))?;
            let row = read_payout(self, &snap, u64::from_be_bytes(raw))?
                .ok_or_else(|| schema::corrupt("payout index entry"))?;
            Ok((q.state.is_none_or(|s| row.state == s)
                && q.currency.is_none_or(|c| row.currency == c))
            .then_some(row))
        };
        let cursor_of =
            |r: &PayoutRow| cursor::encode(CursorKind::Payouts, &r.payout_id.to_be_bytes());
        collect_page(|| merged.next(), q.limit, load, cursor_of)
    }
}

impl HistoryStore {
    /// A scan of `ks` over `range` (if not empty) from `snap`.
    fn scan<'a>(
        &self,
        snap: &'a Snapshot,
        ks: Ks,
        prefix_len: usize,
        range: Option<cursor::KeyRange>,
        order: Order,
    ) -> Option<Scan<'a>> {
        range.map(|r| Scan::new(range_iter(snap, self.ks.get(ks), r, order), prefix_len))
    }
}

/// Up to `limit` entries from the entry keys `keys` (ascending), each
/// key's parts in order. A page resumes inside the key it stopped in:
/// places at or before `after` (the cursor's) are skipped, and since
/// places only grow, no entry is returned twice.
fn entries_page(
    keys: impl Iterator<Item = fjall::Guard>,
    after: Option<Vec<u8>>,
    limit: usize,
) -> Result<Page<EntryRow>, HistoryError> {
    let mut items: Vec<EntryRow> = Vec::new();
    let mut floor = after;
    for guard in keys {
        for e in entry_value::decode_entry(&guard.value()?)? {
            let place = schema::entry_place(&e);
            if floor.as_ref().is_some_and(|floor| place <= *floor) {
                continue;
            }
            if items.len() == limit {
                let next = items
                    .last()
                    .map(|e| cursor::encode(CursorKind::Entries, &schema::entry_place(e)));
                return Ok(Page { items, next });
            }
            floor = Some(place);
            items.push(e);
        }
    }
    Ok(Page { items, next: None })
}

/// The last change in an entry key's value that `wanted` accepts: the
/// balance after it.
fn last_entry_where(
    guard: fjall::Guard,
    wanted: impl Fn(&EntryRow) -> bool,
) -> Result<Option<EntryRow>, HistoryError> {
    let value = guard.value()?;
    Ok(entry_value::decode_entry(&value)?
        .into_iter()
        .rev()
        .find(|e| wanted(e)))
}

/// The entry of `currency_prefix` (account ++ currency) with the highest
/// (seq, part) among those at or before `at_ms`.
fn last_entry_at(
    snap: &Snapshot,
    entries: &fjall::Keyspace,
    currency_prefix: &[u8],
    at_ms: u64,
) -> Result<Option<EntryRow>, HistoryError> {
    for guard in snap.prefix(entries, currency_prefix).rev() {
        if let Some(found) = last_entry_where(guard, |e| e.at_ms <= at_ms)? {
            return Ok(Some(found));
        }
    }
    Ok(None)
}

fn check_limit(limit: usize) -> Result<(), HistoryError> {
    if (1..=PAGE_LIMIT_MAX).contains(&limit) {
        Ok(())
    } else {
        Err(HistoryError::BadLimit {
            limit,
            max: PAGE_LIMIT_MAX,
        })
    }
}

fn read_withdrawal(
    store: &HistoryStore,
    snap: &Snapshot,
    tx: TransactionId,
) -> Result<Option<WithdrawalRow>, HistoryError> {
    let stored = snap.get(store.ks.get(Ks::Withdrawals), schema::tx_key(tx))?;
    stored
        .map(|v| schema::decode_row(&v, "withdrawal"))
        .transpose()
}

fn read_payout(
    store: &HistoryStore,
    snap: &Snapshot,
    payout_id: u64,
) -> Result<Option<PayoutRow>, HistoryError> {
    let stored = snap.get(store.ks.get(Ks::Payouts), payout_id.to_be_bytes())?;
    stored.map(|v| schema::decode(&v, "payout")).transpose()
}

/// Optional `from` (inclusive) and `to` (exclusive) key suffixes.
type SuffixBounds = (Option<Vec<u8>>, Option<Vec<u8>>);

/// The (currency, seq) suffix bounds of one currency's entries.
fn currency_bounds(currency: CurrencyCode) -> SuffixBounds {
    let code = schema::currency_bytes(currency);
    let from = [&code[..], &[0u8; 8]].concat();
    // Codes are ASCII, so the next code up never overflows.
    let next = u64::from_be_bytes(code).saturating_add(1).to_be_bytes();
    (Some(from), Some([&next[..], &[0u8; 8]].concat()))
}

/// The first (currency, seq) suffix past every entry of `currency_key`.
fn next_currency(currency_key: &[u8]) -> Result<Vec<u8>, HistoryError> {
    let raw: [u8; 8] = currency_key
        .try_into()
        .map_err(|_| schema::corrupt("entry key"))?;
    let next = u64::from_be_bytes(raw).saturating_add(1).to_be_bytes();
    Ok([&next[..], &[0u8; 8]].concat())
}
