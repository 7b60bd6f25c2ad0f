//! Reads: withdrawal listings (by account, by payout, or by status across
//! accounts), account entries, balances as of a time, transactions by id
//! and payouts. Each call reads one snapshot of the store, so a page is
//! consistent even while a batch is being ingested; paging across calls is
//! kept stable by the cursors (see `cursor.rs`).

use fjall::{Guard, Readable, Snapshot};

use crate::domain::ids::{AccountId, TransactionId};
use crate::domain::money::CurrencyCode;
use crate::domain::payouts::PayoutState;
use crate::domain::withdrawal::StatusKind;

use super::cursor::{self, CursorKind, KeyRange};
use super::error::HistoryError;
use super::rows::{BalanceAt, EntryRow, PayoutRow, TransactionRecord, WithdrawalRow};
use super::schema::{self, Ks, TIME_TX_LEN};
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
            .map(|v| schema::decode(&v, "transaction"))
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
        let mut scans = Vec::new();
        for (ks, prefix) in q.sources() {
            let range = cursor::scan_range(
                &prefix,
                TIME_TX_LEN,
                from.as_deref(),
                to.as_deref(),
                after.as_deref(),
                q.order,
            );
            if let Some(range) = range {
                scans.push(Scan::new(
                    range_iter(&snap, self.ks.get(ks), range, q.order),
                    prefix.len(),
                ));
            }
        }
        let mut merged = Merged {
            scans,
            order: q.order,
        };
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
        let prefix = schema::account_prefix(account);
        let range = cursor::scan_range(
            &prefix,
            16,
            from.as_deref(),
            to.as_deref(),
            after.as_deref(),
            Order::Asc,
        );
        let snap = self.db.snapshot();
        let scans = range.map(|r| {
            Scan::new(
                range_iter(&snap, self.ks.get(Ks::Entries), r, Order::Asc),
                prefix.len(),
            )
        });
        let mut merged = Merged {
            scans: scans.into_iter().collect(),
            order: Order::Asc,
        };
        let load = |_: &[u8], value: &[u8]| schema::decode(value, "entry").map(Some);
        let cursor_of = |e: &EntryRow| cursor::encode(CursorKind::Entries, &entry_suffix(e));
        collect_page(|| merged.next(), limit, load, cursor_of)
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
        while let Some(range) =
            cursor::scan_range(&prefix, 16, from.as_deref(), None, None, Order::Asc)
        {
            let Some(guard) = snap.range(entries, range).next() else {
                break;
            };
            let key = guard.key()?;
            let currency_key = key.get(8..16).ok_or_else(|| schema::corrupt("entry key"))?;
            let currency_prefix = [&prefix[..], currency_key].concat();
            for guard in snap.prefix(entries, &currency_prefix).rev() {
                let e: EntryRow = schema::decode(&guard.value()?, "entry")?;
                if e.at_ms <= at_ms {
                    out.push(BalanceAt {
                        currency: e.currency,
                        available: e.available_after,
                        locked: e.locked_after,
                        seq: e.seq,
                        at_ms: e.at_ms,
                    });
                    break;
                }
            }
            from = Some(next_currency(currency_key)?);
        }
        Ok(out)
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
            Some(state) => (
                Ks::PByState,
                schema::payout_state_key(state, 0)[..1].to_vec(),
            ),
            None => (Ks::Payouts, Vec::new()),
        };
        let snap = self.db.snapshot();
        let range = cursor::scan_range(&prefix, 8, None, None, after.as_deref(), q.order);
        let scans =
            range.map(|r| Scan::new(range_iter(&snap, self.ks.get(ks), r, q.order), prefix.len()));
        let mut merged = Merged {
            scans: scans.into_iter().collect(),
            order: q.order,
        };
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
    stored.map(|v| schema::decode(&v, "withdrawal")).transpose()
}

fn read_payout(
    store: &HistoryStore,
    snap: &Snapshot,
    payout_id: u64,
) -> Result<Option<PayoutRow>, HistoryError> {
    let stored = snap.get(store.ks.get(Ks::Payouts), payout_id.to_be_bytes())?;
    stored.map(|v| schema::decode(&v, "payout")).transpose()
}

/// Takes (key suffix, value) pairs in order, loads each (`None`: filtered out) until
/// `limit` rows are found; `next` is set only if another row follows.
fn collect_page<T>(
    mut next_suffix: impl FnMut() -> Result<Option<Item>, HistoryError>,
    limit: usize,
    mut load: impl FnMut(&[u8], &[u8]) -> Result<Option<T>, HistoryError>,
    cursor_of: impl Fn(&T) -> String,
) -> Result<Page<T>, HistoryError> {
    let mut items = Vec::new();
    while let Some((suffix, value)) = next_suffix()? {
        let Some(row) = load(&suffix, &value)? else {
            continue;
        };
        if items.len() == limit {
            let next = items.last().map(&cursor_of);
            return Ok(Page { items, next });
        }
        items.push(row);
    }
    Ok(Page { items, next: None })
}

/// (key suffix after the scanned prefix, value).
type Item = (Vec<u8>, Vec<u8>);

/// Optional `from` (inclusive) and `to` (exclusive) key suffixes.
type SuffixBounds = (Option<Vec<u8>>, Option<Vec<u8>>);

type KeyIter<'a> = Box<dyn Iterator<Item = Guard> + 'a>;

fn range_iter<'a>(
    snap: &'a Snapshot,
    ks: &fjall::Keyspace,
    range: KeyRange,
    order: Order,
) -> KeyIter<'a> {
    let iter = snap.range(ks, range);
    match order {
        Order::Asc => Box::new(iter),
        Order::Desc => Box::new(iter.rev()),
    }
}

/// One index scan, yielding (key suffix after its prefix, value).
struct Scan<'a> {
    iter: KeyIter<'a>,
    prefix_len: usize,
    head: Option<Item>,
}

impl<'a> Scan<'a> {
    fn new(iter: KeyIter<'a>, prefix_len: usize) -> Self {
        Self {
            iter,
            prefix_len,
            head: None,
        }
    }

    fn peek(&mut self) -> Result<Option<&[u8]>, HistoryError> {
        if self.head.is_none() {
            if let Some(guard) = self.iter.next() {
                let (key, value) = guard.into_inner()?;
                let suffix = key
                    .get(self.prefix_len..)
                    .ok_or_else(|| schema::corrupt("index key"))?;
                self.head = Some((suffix.to_vec(), value.to_vec()));
            }
        }
        Ok(self.head.as_ref().map(|(s, _)| s.as_slice()))
    }

    fn take(&mut self) -> Result<Option<Item>, HistoryError> {
        self.peek()?;
        Ok(self.head.take())
    }
}

/// Several scans of one order, merged by key suffix.
struct Merged<'a> {
    scans: Vec<Scan<'a>>,
    order: Order,
}

impl Merged<'_> {
    fn next(&mut self) -> Result<Option<Item>, HistoryError> {
        let mut best: Option<(usize, Vec<u8>)> = None;
        for (i, scan) in self.scans.iter_mut().enumerate() {
            let Some(suffix) = scan.peek()? else { continue };
            let better = match &best {
                None => true,
                Some((_, b)) => match self.order {
                    Order::Asc => suffix < b.as_slice(),
                    Order::Desc => suffix > b.as_slice(),
                },
            };
            if better {
                best = Some((i, suffix.to_vec()));
            }
        }
        let Some((i, _)) = best else { return Ok(None) };
        self.scans[i].take()
    }
}

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

fn entry_suffix(e: &EntryRow) -> Vec<u8> {
    [
        &schema::currency_bytes(e.currency)[..],
        &e.seq.to_be_bytes(),
    ]
    .concat()
}
