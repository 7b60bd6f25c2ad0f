//! Tests of the history store: every listing against a plain model of the
//! rows, paging in both orders, index moves on status changes, watermark
//! replays, entries grouped per balance across runs (pages, balances at an
//! LSN or a time, overlapping runs, the layouts stores wrote before), each
//! change after a key's first stored compactly and read back exactly (any
//! changes, their sizes), ingest's buffers kept from run to run (and freed
//! past their cap), the format marker (stamped, a newer one refused), bad
//! input at each boundary, and damaged stored values.

use std::collections::BTreeMap;

use super::*;
use crate::domain::ids::{AccountId, TransactionId};
use crate::domain::money::{CurrencyCode, Units};
use crate::domain::payouts::PayoutState;
use crate::domain::withdrawal::StatusKind;

fn usd() -> CurrencyCode {
    code("USD")
}

fn code(s: &str) -> CurrencyCode {
    CurrencyCode::new(s).unwrap_or_else(|e| panic!("{e}"))
}

fn open() -> (tempfile::TempDir, HistoryStore) {
    let dir = tempfile::tempdir().unwrap_or_else(|e| panic!("{e}"));
    let store = HistoryStore::open(dir.path()).unwrap_or_else(|e| panic!("{e}"));
    (dir, store)
}

fn ok<T>(r: Result<T, HistoryError>) -> T {
    r.unwrap_or_else(|e| panic!("{e}"))
}

/// A seeded xorshift generator, so failures replay.
struct Rng(u64);

impl Rng {
    fn below(&mut self, n: u64) -> u64 {
        self.0 ^= self.0 << 13;
        self.0 ^= self.0 >> 7;
        self.0 ^= self.0 << 17;
        self.0 % n
    }
}

fn withdrawal(account: AccountId, seq: u64, created: u64) -> WithdrawalRow {
    WithdrawalRow {
        tx: TransactionId::new(account, seq),
        account,
        currency: usd(),
        amount: 100,
        status: StatusKind::Pending,
        payout_id: None,
        reason: None,
        created_at_ms: created,
        updated_at_ms: created,
        extras: Default::default(),
    }
}

/// A varied set of withdrawals: 5 accounts, 2 currencies, every status,
/// 3 payouts, times with many ties.
fn varied_rows(n: u64) -> Vec<WithdrawalRow> {
    let mut rng = Rng(0x5eed);
    (0..n)
        .map(|i| {
            let mut row = withdrawal(rng.below(5), i + 1, 1_000 + rng.below(n / 3 + 1));
            row.currency = if rng.below(3) == 0 {
                code("EUR")
            } else {
                usd()
            };
            row.status = StatusKind::ALL[rng.below(6) as usize];
            row.payout_id = (row.status != StatusKind::Pending).then(|| 1 + rng.below(3));
            row
        })
        .collect()
}

fn ingest_rows(store: &HistoryStore, rows: &[WithdrawalRow], per_batch: usize) {
    let first = ok(store.applied_lsn()) + 1;
    for (i, chunk) in rows.chunks(per_batch).enumerate() {
        let changes: Vec<Change> = chunk.iter().cloned().map(Change::Withdrawal).collect();
        assert!(ok(store.ingest(first + i as u64, &changes)).applied);
    }
}

/// Every page of a listing, following `next`.
fn all_pages(store: &HistoryStore, q: &WithdrawalQuery<'_>) -> Vec<WithdrawalRow> {
    let mut out = Vec::new();
    let mut after: Option<String> = None;
    loop {
        let page = ok(store.withdrawals(&WithdrawalQuery {
            after: after.as_deref(),
            ..q.clone()
        }));
        assert!(page.items.len() <= q.limit);
        out.extend(page.items);
        match page.next {
            Some(next) => after = Some(next),
            None => return out,
        }
    }
}

/// What the listing must return, computed from the rows themselves.
fn model(rows: &[WithdrawalRow], q: &WithdrawalQuery<'_>) -> Vec<WithdrawalRow> {
    let mut out: Vec<WithdrawalRow> = rows
        .iter()
        .filter(|r| q.account.is_none_or(|a| r.account == a))
        .filter(|r| q.currency.is_none_or(|c| r.currency == c))
        .filter(|r| q.statuses.is_empty() || q.statuses.contains(&r.status))
        .filter(|r| q.payout_id.is_none_or(|p| r.payout_id == Some(p)))
        .filter(|r| q.created_from.is_none_or(|f| r.created_at_ms >= f))
        .filter(|r| q.created_to.is_none_or(|t| r.created_at_ms < t))
        .cloned()
        .collect();
    out.sort_by_key(|r| (r.created_at_ms, r.tx));
    if q.order == Order::Desc {
        out.reverse();
    }
    out
}

#[test]
fn every_filter_in_both_orders_pages_to_exactly_the_model() {
    let (_dir, store) = open();
    let rows = varied_rows(1_500);
    ingest_rows(&store, &rows, 400);
    let processing = [StatusKind::Processing];
    let open_ones = [StatusKind::Pending, StatusKind::Processing];
    let queries = [
        WithdrawalQuery {
            account: Some(2),
            ..Default::default()
        },
        WithdrawalQuery {
            account: Some(2),
            currency: Some(code("EUR")),
            ..Default::default()
        },
        WithdrawalQuery {
            account: Some(3),
            statuses: &open_ones,
            ..Default::default()
        },
        WithdrawalQuery {
            account: Some(4),
            created_from: Some(1_100),
            created_to: Some(1_300),
            ..Default::default()
        },
        WithdrawalQuery {
            account: Some(1),
            payout_id: Some(2),
            ..Default::default()
        },
        WithdrawalQuery {
            payout_id: Some(3),
            ..Default::default()
        },
        WithdrawalQuery {
            statuses: &processing,
            created_to: Some(1_250),
            ..Default::default()
        },
        WithdrawalQuery {
            statuses: &open_ones,
            currency: Some(usd()),
            ..Default::default()
        },
        WithdrawalQuery {
            created_from: Some(1_200),
            ..Default::default()
        },
        WithdrawalQuery::default(),
    ];
    for q in queries {
        for order in [Order::Asc, Order::Desc] {
            for limit in [1, 7, 1_000] {
                let q = WithdrawalQuery {
                    order,
                    limit,
                    ..q.clone()
                };
                let expected = model(&rows, &q);
                assert!(
                    !expected.is_empty(),
                    "a query that matches nothing proves little: {q:?}"
                );
                assert_eq!(all_pages(&store, &q), expected, "{q:?}");
            }
        }
    }
}

#[test]
fn a_time_range_is_from_inclusive_to_exclusive() {
    let (_dir, store) = open();
    let rows: Vec<_> = (1..=5).map(|i| withdrawal(1, i, 100 * i)).collect();
    ingest_rows(&store, &rows, 5);
    let q = WithdrawalQuery {
        account: Some(1),
        created_from: Some(200),
        created_to: Some(400),
        ..Default::default()
    };
    let got: Vec<u64> = ok(store.withdrawals(&q))
        .items
        .iter()
        .map(|r| r.created_at_ms)
        .collect();
    assert_eq!(got, vec![200, 300]);
    let empty = WithdrawalQuery {
        created_from: Some(300),
        created_to: Some(300),
        ..q
    };
    assert!(ok(store.withdrawals(&empty)).items.is_empty());
    let reversed = WithdrawalQuery {
        created_from: Some(301),
        created_to: Some(300),
        ..q
    };
    assert!(matches!(
        store.withdrawals(&reversed),
        Err(HistoryError::BadTimeRange { from: 301, to: 300 })
    ));
}

#[test]
fn a_status_change_moves_the_row_between_status_listings() {
    let (_dir, store) = open();
    let row = withdrawal(7, 1, 50);
    ok(store.ingest(1, &[Change::Withdrawal(row.clone())]));
    let claim = Change::WithdrawalStatus {
        tx: row.tx,
        status: StatusKind::Processing,
        payout_id: Some(9),
        reason: None,
        at_ms: 60,
    };
    ok(store.ingest(2, &[claim]));
    let listed = |s: StatusKind| {
        let statuses = [s];
        ok(store.withdrawals(&WithdrawalQuery {
            statuses: &statuses,
            ..Default::default()
        }))
        .items
    };
    assert!(listed(StatusKind::Pending).is_empty());
    let status_keys = store.ks.get(schema::Ks::WByStatus).iter().count();
    assert_eq!(
        status_keys, 1,
        "the pending index key must go, not just be filtered out"
    );
    let now = ok(store.withdrawal(row.tx)).unwrap_or_else(|| panic!("row lost"));
    assert_eq!(listed(StatusKind::Processing), vec![now.clone()]);
    assert_eq!(
        (now.payout_id, now.updated_at_ms, now.created_at_ms),
        (Some(9), 60, 50)
    );
    let by_payout = ok(store.withdrawals(&WithdrawalQuery {
        payout_id: Some(9),
        ..Default::default()
    }))
    .items;
    assert_eq!(by_payout, vec![now]);
}

#[test]
fn one_batch_may_create_and_settle_the_same_withdrawal() {
    let (_dir, store) = open();
    let row = withdrawal(3, 1, 10);
    let status = |status, payout_id, reason: Option<&str>| Change::WithdrawalStatus {
        tx: row.tx,
        status,
        payout_id,
        reason: reason.map(str::to_owned),
        at_ms: 20,
    };
    let changes = [
        Change::Withdrawal(row.clone()),
        status(StatusKind::Processing, Some(4), None),
        status(StatusKind::Failed, None, Some("closed account")),
    ];
    ok(store.ingest(1, &changes));
    let got = ok(store.withdrawal(row.tx)).unwrap_or_else(|| panic!("row lost"));
    assert_eq!(
        (got.status, got.payout_id, got.reason.as_deref()),
        (StatusKind::Failed, Some(4), Some("closed account"))
    );
    for s in StatusKind::ALL {
        let statuses = [s];
        let n = ok(store.withdrawals(&WithdrawalQuery {
            statuses: &statuses,
            ..Default::default()
        }))
        .items
        .len();
        assert_eq!(n, usize::from(s == StatusKind::Failed), "{s}");
    }
}

#[test]
fn a_status_change_for_an_unknown_withdrawal_is_counted_and_skipped() {
    let (_dir, store) = open();
    let tx = TransactionId::new(1, 1);
    let change = Change::WithdrawalStatus {
        tx,
        status: StatusKind::Completed,
        payout_id: None,
        reason: None,
        at_ms: 5,
    };
    let report = ok(store.ingest(1, &[change]));
    assert_eq!(
        report,
        IngestReport {
            applied: true,
            missing: 1
        }
    );
    assert_eq!(ok(store.withdrawal(tx)), None);
    assert_eq!(ok(store.applied_lsn()), 1);
}

#[test]
fn a_state_change_for_an_unknown_payout_is_counted_and_skipped() {
    let (_dir, store) = open();
    let change = Change::PayoutState {
        payout_id: 4,
        state: PayoutState::Completed,
        settled_at_ms: Some(9),
    };
    assert_eq!(
        ok(store.ingest(1, &[change])),
        IngestReport {
            applied: true,
            missing: 1
        }
    );
    assert_eq!(ok(store.payout(4)), None);
    let all = ok(store.payouts(&PayoutQuery {
        limit: 10,
        ..Default::default()
    }));
    assert!(all.items.is_empty());
}

#[test]
fn a_store_folder_that_cannot_be_made_is_an_error_not_a_panic() {
    let dir = tempfile::tempdir().unwrap_or_else(|e| panic!("{e}"));
    std::fs::write(HistoryStore::dir_in(dir.path()), b"not a folder")
        .unwrap_or_else(|e| panic!("{e}"));
    assert!(matches!(
        HistoryStore::open(dir.path()),
        Err(HistoryError::Store(_))
    ));
}

/// The format marker as stored, if any.
fn stored_format(store: &HistoryStore) -> Option<Vec<u8>> {
    let meta = store.ks.get(schema::Ks::Meta);
    let marker = ok(meta.get(schema::FORMAT_KEY).map_err(HistoryError::from));
    marker.map(|v| v.to_vec())
}

/// Sets (or, with `None`, removes) the marker, as another build would have.
/// (Opened as fjall, not as a store: a store would refuse or re-stamp it.)
fn set_format(dir: &std::path::Path, marker: Option<&[u8]>) {
    let db = fjall::Database::builder(HistoryStore::dir_in(dir)).open();
    let db = ok(db.map_err(HistoryError::from));
    let ks = ok(schema::Keyspaces::open(&db));
    let meta = ks.get(schema::Ks::Meta);
    let written = match marker {
        Some(bytes) => meta.insert(schema::FORMAT_KEY, bytes),
        None => meta.remove(schema::FORMAT_KEY),
    };
    ok(written.map_err(HistoryError::from));
    ok(db
        .persist(fjall::PersistMode::SyncAll)
        .map_err(HistoryError::from));
}

#[test]
fn a_store_is_stamped_with_its_format_and_one_a_newer_build_wrote_is_refused() {
    let dir = tempfile::tempdir().unwrap_or_else(|e| panic!("{e}"));
    let stamp = FORMAT.to_be_bytes().to_vec();
    {
        let store = ok(HistoryStore::open(dir.path()));
        assert_eq!(stored_format(&store), None, "opening writes nothing");
        ok(store.stamp_format());
        assert_eq!(stored_format(&store), Some(stamp.clone()), "a new store");
        ok(store.ingest(5, &[Change::Withdrawal(withdrawal(1, 1, 10))]));
    }
    // A newer build's store: refused, untouched.
    set_format(dir.path(), Some(&(FORMAT + 1).to_be_bytes()));
    match HistoryStore::open(dir.path()) {
        Err(HistoryError::NewerFormat { found, reads }) => {
            assert_eq!((found, reads), (FORMAT + 1, FORMAT))
        }
        other => panic!("expected NewerFormat, got {:?}", other.err()),
    }
    // A store from before the marker (or an older format): read, and
    // stamped with this build's by the opener that writes.
    for older in [None, Some(&1u32.to_be_bytes()[..])] {
        set_format(dir.path(), older);
        let store = ok(HistoryStore::open(dir.path()));
        assert_eq!(
            stored_format(&store).as_deref(),
            older,
            "a read changes nothing"
        );
        ok(store.stamp_format());
        assert_eq!(stored_format(&store), Some(stamp.clone()), "{older:?}");
        assert_eq!(ok(store.applied_lsn()), 5);
        assert!(ok(store.withdrawal(TransactionId::new(1, 1))).is_some());
    }
    // A marker that is not a u32 may be a newer build's: refused too.
    set_format(dir.path(), Some(b"v2"));
    assert!(matches!(
        HistoryStore::open(dir.path()),
        Err(HistoryError::UnknownFormat { .. })
    ));
}

#[test]
fn a_replayed_lsn_is_skipped_even_after_reopening() {
    let dir = tempfile::tempdir().unwrap_or_else(|e| panic!("{e}"));
    let row = withdrawal(1, 1, 10);
    {
        let store = ok(HistoryStore::open(dir.path()));
        ok(store.ingest(5, &[Change::Withdrawal(row.clone())]));
    }
    let store = ok(HistoryStore::open(dir.path()));
    assert_eq!(ok(store.applied_lsn()), 5);
    // The log re-fed from an older point: LSNs up to 5 change nothing, even
    // if (wrongly) different.
    let changed = WithdrawalRow {
        amount: 999,
        ..row.clone()
    };
    for lsn in [1, 5] {
        let report = ok(store.ingest(lsn, &[Change::Withdrawal(changed.clone())]));
        assert_eq!(
            report,
            IngestReport {
                applied: false,
                missing: 0
            }
        );
    }
    assert_eq!(ok(store.withdrawal(row.tx)), Some(row));
    assert!(ok(store.ingest(6, &[Change::Withdrawal(changed.clone())])).applied);
    assert_eq!(ok(store.withdrawal(changed.tx)), Some(changed));
    assert_eq!(ok(store.applied_lsn()), 6);
}

#[test]
fn limits_outside_one_to_a_thousand_are_refused() {
    let (_dir, store) = open();
    ingest_rows(&store, &varied_rows(1_200), 1_200);
    for limit in [0, PAGE_LIMIT_MAX + 1] {
        let q = WithdrawalQuery {
            limit,
            ..Default::default()
        };
        assert!(matches!(
            store.withdrawals(&q),
            Err(HistoryError::BadLimit { .. })
        ));
        assert!(matches!(
            store.entries(1, None, None, limit),
            Err(HistoryError::BadLimit { .. })
        ));
        let p = PayoutQuery {
            limit,
            ..Default::default()
        };
        assert!(matches!(
            store.payouts(&p),
            Err(HistoryError::BadLimit { .. })
        ));
    }
    let full = ok(store.withdrawals(&WithdrawalQuery {
        limit: PAGE_LIMIT_MAX,
        ..Default::default()
    }));
    assert_eq!(full.items.len(), PAGE_LIMIT_MAX);
    assert!(full.next.is_some());
}

#[test]
fn malformed_cursors_are_a_clear_error_on_every_listing() {
    let (_dir, store) = open();
    ingest_rows(&store, &varied_rows(50), 50);
    let entries_cursor = "e".to_owned() + &"0".repeat(32);
    let bad = ["", "w", "wzz", "w00", "not a cursor", &entries_cursor];
    for after in bad {
        let q = WithdrawalQuery {
            after: Some(after),
            ..Default::default()
        };
        assert!(
            matches!(store.withdrawals(&q), Err(HistoryError::BadCursor { .. })),
            "{after:?}"
        );
        let p = PayoutQuery {
            after: Some(after),
            limit: 10,
            ..Default::default()
        };
        assert!(
            matches!(store.payouts(&p), Err(HistoryError::BadCursor { .. })),
            "{after:?}"
        );
    }
    let withdrawal_cursor = ok(store.withdrawals(&WithdrawalQuery {
        limit: 1,
        ..Default::default()
    }))
    .next;
    let withdrawal_cursor = withdrawal_cursor.unwrap_or_else(|| panic!("no cursor"));
    assert!(matches!(
        store.entries(1, None, Some(&withdrawal_cursor), 10),
        Err(HistoryError::BadCursor { .. })
    ));
}

#[test]
fn a_cut_stored_row_is_reported_not_panicked_on() {
    let (_dir, store) = open();
    let row = withdrawal(1, 1, 10);
    ok(store.ingest(1, &[Change::Withdrawal(row.clone())]));
    let key = schema::tx_key(row.tx);
    let ks = store.ks.get(schema::Ks::Withdrawals);
    let stored =
        ok(ks.get(key).map_err(HistoryError::from)).unwrap_or_else(|| panic!("not stored"));
    let cut = stored[..stored.len() - 1].to_vec();
    ok(ks.insert(key, cut).map_err(HistoryError::from));
    assert!(matches!(
        store.withdrawal(row.tx),
        Err(HistoryError::Corrupt { .. })
    ));
    let q = WithdrawalQuery {
        account: Some(1),
        ..Default::default()
    };
    assert!(matches!(
        store.withdrawals(&q),
        Err(HistoryError::Corrupt { .. })
    ));
}

/// Entries with running balances, made by the test from the kinds' meaning.
fn entries_for(account: AccountId, n: u64) -> Vec<EntryRow> {
    let mut rng = Rng(0xe17);
    let mut balances: BTreeMap<CurrencyCode, (Units, Units, u64)> = BTreeMap::new();
    (0..n)
        .map(|i| {
            let currency = if rng.below(2) == 0 {
                usd()
            } else {
                code("BTC")
            };
            let (avail, locked, seq) = balances.entry(currency).or_insert((0, 0, 0));
            let amount = Units::from(1 + rng.below(50) as u8);
            let kind = match rng.below(4) {
                0 => EntryKind::Deposit,
                1 if *avail >= amount => EntryKind::Lock,
                2 if *locked >= amount => EntryKind::Burn,
                3 if *locked >= amount => EntryKind::Release,
                _ => EntryKind::TransferIn,
            };
            let (da, dl) = delta(kind, amount);
            *avail += da;
            *locked += dl;
            *seq += 1;
            EntryRow {
                account,
                currency,
                seq: *seq,
                tx: TransactionId::new(account, i + 1),
                kind,
                amount,
                at_ms: 1_000 + i / 3,
                available_after: *avail,
                locked_after: *locked,
                part: 0,
                metadata: None,
            }
        })
        .collect()
}

/// A run's last LSN no entry of [`entries_for`] is past.
const LSN_PAST_EVERY_ENTRY: u64 = 1_000_000;

/// What an entry does to (available, locked).
fn delta(kind: EntryKind, amount: Units) -> (Units, Units) {
    kind.delta(amount)
}

/// Every entry of `account` (in `currency`, or all), read page after page
/// of at most `limit`.
fn entry_pages(
    store: &HistoryStore,
    account: AccountId,
    currency: Option<CurrencyCode>,
    limit: usize,
) -> Vec<EntryRow> {
    let mut got = Vec::new();
    let mut after: Option<String> = None;
    loop {
        let page = ok(store.entries(account, currency, after.as_deref(), limit));
        assert!(page.items.len() <= limit);
        got.extend(page.items);
        match page.next {
            Some(next) => after = Some(next),
            None => return got,
        }
    }
}

#[test]
fn entries_page_in_seq_order_per_currency() {
    let (_dir, store) = open();
    let entries = entries_for(4, 2_000);
    let noise = entries_for(5, 100);
    let changes: Vec<Change> = entries
        .iter()
        .chain(&noise)
        .cloned()
        .map(Change::Entry)
        .collect();
    ok(store.ingest(LSN_PAST_EVERY_ENTRY, &changes));
    for currency in [None, Some(usd()), Some(code("BTC"))] {
        let mut expected: Vec<EntryRow> = entries
            .iter()
            .filter(|e| currency.is_none_or(|c| e.currency == c))
            .cloned()
            .collect();
        expected.sort_by_key(|e| (schema::currency_bytes(e.currency), e.seq));
        let got = entry_pages(&store, 4, currency, 77);
        assert_eq!(got, expected, "{currency:?}");
    }
}

#[test]
fn the_balance_at_a_time_equals_folding_the_entries_up_to_it() {
    let (_dir, store) = open();
    let entries = entries_for(8, 900);
    let changes: Vec<Change> = entries.iter().cloned().map(Change::Entry).collect();
    ok(store.ingest(LSN_PAST_EVERY_ENTRY, &changes));
    for at in [0, 999, 1_000, 1_001, 1_150, 1_299, 1_300, 5_000] {
        let mut folded: BTreeMap<CurrencyCode, (Units, Units)> = BTreeMap::new();
        for e in entries.iter().filter(|e| e.at_ms <= at) {
            let (da, dl) = delta(e.kind, e.amount);
            let b = folded.entry(e.currency).or_default();
            *b = (b.0 + da, b.1 + dl);
        }
        let got: BTreeMap<CurrencyCode, (Units, Units)> = ok(store.balances_at(8, at))
            .into_iter()
            .map(|b| (b.currency, (b.available, b.locked)))
            .collect();
        assert_eq!(got, folded, "at {at}");
    }
    assert!(ok(store.balances_at(9, 5_000)).is_empty());
}

/// The entries one event (`seq`) makes: a withdrawal with a fee in its
/// own currency completing in part — burn, release, fee out on account 3
/// (parts 0, 1, 2; the fee part with metadata) — and the fee in on account
/// 9, listed in between as derive makes them.
fn one_events_parts(seq: u64) -> Vec<EntryRow> {
    let tx = TransactionId::new(3, seq);
    let entry = |account, kind, amount, part, available_after, locked_after| EntryRow {
        account,
        currency: usd(),
        seq,
        tx,
        kind,
        amount,
        at_ms: 1_000 + seq,
        available_after,
        locked_after,
        part,
        metadata: None,
    };
    let mut fee_out = entry(3, EntryKind::FeeOut, 1, 2, 40, 0);
    fee_out.metadata = crate::domain::details::Metadata::new([("k", "v")])
        .unwrap_or_else(|e| panic!("{e:?}"))
        .boxed();
    vec![
        entry(3, EntryKind::Burn, 24, 0, 35, 6),
        entry(3, EntryKind::Release, 5, 1, 40, 1),
        entry(9, EntryKind::FeeIn, 1, 0, 1, 0),
        fee_out,
    ]
}

/// A store that ingested [`one_events_parts`] of event `seq`, and those.
fn store_with_one_event(seq: u64) -> (tempfile::TempDir, HistoryStore, Vec<EntryRow>) {
    let (dir, store) = open();
    let parts = one_events_parts(seq);
    ok(store.ingest(
        seq,
        parts.iter().cloned().map(Change::Entry).collect::<Vec<_>>(),
    ));
    (dir, store, parts)
}

#[test]
fn an_events_changes_to_one_balance_share_one_key_and_list_in_part_order() {
    let (_dir, store, parts) = store_with_one_event(7);
    // One key per balance the event moved, not one per change.
    let keys = store.ks.get(schema::Ks::Entries).iter().count();
    assert_eq!(keys, 2);
    let mut payer: Vec<EntryRow> = parts.iter().filter(|e| e.account == 3).cloned().collect();
    payer.sort_by_key(|e| e.part);
    assert_eq!(ok(store.entries(3, None, None, 10)).items, payer);
    assert_eq!(
        ok(store.entries(9, Some(usd()), None, 10)).items,
        vec![parts[2].clone()]
    );
    // The balance after the event is its last part's.
    assert_eq!(ok(store.balance_at_lsn(3, usd(), 7)), (40, 0));
    let at: Vec<_> = ok(store.balances_at(3, 5_000))
        .into_iter()
        .map(|b| (b.available, b.locked))
        .collect();
    assert_eq!(at, vec![(40, 0)]);
}

#[test]
fn pages_that_stop_inside_a_key_resume_inside_it_never_repeating_or_skipping() {
    let (_dir, store) = open();
    let mut all = Vec::new();
    for seq in [4, 7, 9] {
        let parts = one_events_parts(seq);
        let changes: Vec<Change> = parts.iter().cloned().map(Change::Entry).collect();
        ok(store.ingest(seq, &changes));
        let mut payer: Vec<EntryRow> = parts.into_iter().filter(|e| e.account == 3).collect();
        payer.sort_by_key(|e| e.part);
        all.extend(payer);
    }
    for limit in 1..=4 {
        assert_eq!(
            entry_pages(&store, 3, Some(usd()), limit),
            all,
            "pages of {limit}"
        );
    }
}

#[test]
fn a_store_that_kept_each_part_under_its_own_key_reads_the_same() {
    let (_dir, store) = open();
    let parts = one_events_parts(7);
    // As stores before parts shared a key wrote them: key ++ part (when
    // not 0), the row and its trailing.
    let ks = store.ks.get(schema::Ks::Entries);
    for e in &parts {
        let mut key = schema::entry_row_key(e);
        if e.part > 0 {
            key.push(e.part);
        }
        let value = ok(schema::encode_row(e));
        ok(ks.insert(key, value).map_err(HistoryError::from));
    }
    let mut payer: Vec<EntryRow> = parts.iter().filter(|e| e.account == 3).cloned().collect();
    payer.sort_by_key(|e| e.part);
    assert_eq!(ok(store.entries(3, None, None, 10)).items, payer);
    let first = ok(store.entries(3, None, None, 1));
    let rest = ok(store.entries(3, None, first.next.as_deref(), 10));
    assert_eq!([first.items, rest.items].concat(), payer);
    assert_eq!(ok(store.balance_at_lsn(3, usd(), 7)), (40, 0));
}

/// Full encoding of each part (its row, then its trailing), one after the
/// other: how stores written before later parts were compact hold them.
fn every_part_in_full(parts: &[&EntryRow]) -> Vec<u8> {
    parts
        .iter()
        .flat_map(|p| {
            [
                schema::encode(*p),
                schema::encode(&(p.part, p.metadata.as_deref())),
            ]
        })
        .flat_map(ok)
        .collect()
}

#[test]
fn later_parts_sharing_the_first_parts_event_are_stored_compactly_and_read_the_same() {
    let mut parts = one_events_parts(7);
    parts.retain(|e| e.account == 3);
    parts.sort_by_key(|e| e.part);
    // Parts 0 and 1 share transaction, time and metadata; part 2 has its
    // own metadata, stored with it as its event's differences.
    let compact = ok(entry_value::encode_entry(&parts[..2]));
    let full = every_part_in_full(&[&parts[0], &parts[1]]);
    assert!(
        compact.len() + 30 <= full.len(),
        "a later part takes {} bytes, in full {}",
        compact.len(),
        full.len()
    );
    assert_eq!(ok(entry_value::decode_entry(&compact)), parts[..2].to_vec());
    assert_eq!(
        ok(entry_value::decode_entry(&ok(entry_value::encode_entry(
            &parts
        )))),
        parts
    );
    // Stores written before, with every part in full or later parts as
    // `0xFF` then what differs, read the same.
    let all: Vec<&EntryRow> = parts.iter().collect();
    for old in [every_part_in_full(&all), with_later_parts(&all)] {
        let (_dir, store) = open();
        let ks = store.ks.get(schema::Ks::Entries);
        ok(ks
            .insert(schema::entry_row_key(&parts[0]), old)
            .map_err(HistoryError::from));
        assert_eq!(ok(store.entries(3, None, None, 10)).items, parts);
        assert_eq!(ok(store.balance_at_lsn(3, usd(), 7)), (40, 0));
    }
}

/// How stores written before compact changes hold an event's parts: the
/// first in full, each later one sharing its event as `0xFF` then (part,
/// kind, amount, available after, locked after); others in full.
fn with_later_parts(parts: &[&EntryRow]) -> Vec<u8> {
    let mut bytes = every_part_in_full(&parts[..1]);
    let mut full = parts[0];
    for &p in &parts[1..] {
        if (p.seq, p.tx, p.at_ms, &p.metadata) == (full.seq, full.tx, full.at_ms, &full.metadata) {
            let later = (p.part, p.kind, p.amount, p.available_after, p.locked_after);
            bytes.extend([0xFF].into_iter().chain(ok(schema::encode(&later))));
        } else {
            bytes.extend(every_part_in_full(&[p]));
            full = p;
        }
    }
    bytes
}

#[test]
fn changes_after_a_keys_first_are_stored_as_what_the_one_before_does_not_say() {
    // A fee account's credits: one a withdrawal, each another account's.
    let credits: Vec<EntryRow> = (1..=64u64)
        .map(|i| EntryRow {
            account: 10_001,
            currency: usd(),
            seq: 1_000_000 + 3 * i,
            tx: TransactionId::new(i * 97, 40 + i),
            kind: EntryKind::FeeIn,
            amount: 1,
            at_ms: 1_780_000_000_000 + i / 4,
            available_after: 5_000_000_000 + i as Units,
            locked_after: 0,
            part: 0,
            metadata: None,
        })
        .collect();
    let value = ok(entry_value::encode_entry(&credits));
    let lone = ok(entry_value::encode_entry(&credits[..1])).len();
    let each = (value.len() - lone) / 63;
    assert!(each <= 16, "a credit after the first takes {each} bytes");
    assert!(lone >= 3 * each, "in full it takes {lone}");
    assert_eq!(ok(entry_value::decode_entry(&value)), credits);
    // A fee locked with its amount: a few bytes.
    let mut parts = one_events_parts(7);
    parts.retain(|e| e.account == 3 && e.metadata.is_none());
    let value = ok(entry_value::encode_entry(&parts));
    let later = value.len() - ok(entry_value::encode_entry(&parts[..1])).len() - 2;
    assert!(later <= 8, "a later part takes {later} bytes");
}

#[test]
fn any_changes_of_one_balance_read_back_exactly_as_written() {
    let metadata = crate::domain::details::Metadata::new([("k", "v")])
        .unwrap_or_else(|e| panic!("{e:?}"))
        .boxed();
    let mut rng = Rng(0x5eed_1234_abcd);
    for _ in 0..2_000 {
        let mut changes: Vec<EntryRow> = Vec::new();
        let (mut seq, mut at_ms) = (rng.below(1 << 40), rng.below(1 << 42));
        let (mut available, mut locked): (Units, Units) = (rng.below(1 << 50) as Units, 0);
        for _ in 0..=rng.below(12) {
            let new_event = changes.is_empty() || rng.below(3) > 0;
            let part = match (new_event, changes.last()) {
                (false, Some(before)) => before.part + 1,
                _ => 0,
            };
            if new_event {
                let far = rng.below(8) == 0;
                seq += 1 + rng.below(if far { u64::MAX / 64 } else { 5 });
                // Times mostly grow, but nothing says they must.
                at_ms = match rng.below(10) {
                    0 => rng.below(u64::MAX),
                    1 => at_ms.saturating_sub(rng.below(1_000)),
                    _ => at_ms.saturating_add(rng.below(1_000)),
                };
            }
            let kind = EntryKind::ALL[rng.below(EntryKind::ALL.len() as u64) as usize];
            let amount = match rng.below(10) {
                0 => Units::MAX / 2 - rng.below(9) as Units,
                _ => rng.below(100_000) as Units,
            };
            let (da, dl) = kind.delta(amount);
            (available, locked) = (available.wrapping_add(da), locked.wrapping_add(dl));
            // Mostly the balance follows; sometimes the store lacks a change.
            if rng.below(6) == 0 {
                available = available.wrapping_add(rng.below(1_000) as Units);
            }
            let template = changes.last().filter(|_| !new_event);
            let account = 8;
            changes.push(EntryRow {
                account,
                currency: usd(),
                seq,
                tx: template.map_or_else(
                    || {
                        TransactionId::new(
                            if rng.below(2) == 0 {
                                account
                            } else {
                                rng.below(u64::MAX)
                            },
                            rng.below(u64::MAX),
                        )
                    },
                    |t| t.tx,
                ),
                kind,
                amount,
                at_ms,
                available_after: available,
                locked_after: locked,
                part,
                metadata: template.map_or_else(
                    || {
                        if rng.below(4) == 0 {
                            metadata.clone()
                        } else {
                            None
                        }
                    },
                    |t| t.metadata.clone(),
                ),
            });
        }
        let value = ok(entry_value::encode_entry(&changes));
        assert_eq!(ok(entry_value::decode_entry(&value)), changes);
    }
}

#[test]
fn an_events_entries_that_come_apart_in_a_run_are_stored_together_and_twins_refused() {
    let (_dir, store) = open();
    let mut parts = one_events_parts(7);
    let later = one_events_parts(8);
    // Event 7's parts on account 3 with event 8's between them.
    let apart: Vec<Change> = [parts.remove(0)]
        .into_iter()
        .chain(later)
        .chain(parts)
        .map(Change::Entry)
        .collect();
    ok(store.ingest(8, apart));
    let mut payer: Vec<EntryRow> = [one_events_parts(7), one_events_parts(8)]
        .concat()
        .into_iter()
        .filter(|e| e.account == 3)
        .collect();
    payer.sort_by_key(|e| (e.seq, e.part));
    assert_eq!(ok(store.entries(3, None, None, 10)).items, payer);
    // Two changes claiming one (seq, part) cannot be stored side by side:
    // the run is refused, nothing of it written.
    let twin = one_events_parts(9)[0].clone();
    assert!(matches!(
        entry_value::encode_entry(&[twin.clone(), twin.clone()]),
        Err(HistoryError::Encode(_))
    ));
    assert!(matches!(
        entry_value::encode_entry::<EntryRow>(&[]),
        Err(HistoryError::Encode(_))
    ));
    let twins = [Change::Entry(twin.clone()), Change::Entry(twin)];
    assert!(matches!(
        store.ingest(9, twins),
        Err(HistoryError::Encode(_))
    ));
    assert_eq!(ok(store.applied_lsn()), 8, "nothing was written");
    assert_eq!(ok(store.entries(3, None, None, 10)).items, payer);
}

#[test]
fn an_events_changes_fed_out_of_part_order_are_stored_in_it() {
    let (_dir, store) = open();
    let parts = one_events_parts(7);
    // Account 3's burn (part 0), then its fee out (2), then its release (1):
    // the first two look like one run, the third overlaps it.
    let shuffled = [&parts[0], &parts[3], &parts[1], &parts[2]];
    ok(store.ingest(7, shuffled.map(|e| Change::Entry(e.clone()))));
    let mut payer: Vec<EntryRow> = parts.iter().filter(|e| e.account == 3).cloned().collect();
    payer.sort_by_key(|e| e.part);
    assert_eq!(ok(store.entries(3, None, None, 10)).items, payer);
    assert_eq!(
        ok(store.entries(9, None, None, 10)).items,
        vec![parts[2].clone()]
    );
}

/// One balance's entries (account 8, USD), seq 1..=n, every third event
/// changing it twice (a lock of amount and fee), at_ms rising every third.
fn one_balance(n: u64) -> Vec<EntryRow> {
    let mut out: Vec<EntryRow> = Vec::new();
    let (mut avail, mut locked): (Units, Units) = (1_000_000, 0);
    for seq in 1..=n {
        let kinds: &[EntryKind] = match seq % 3 {
            0 => &[EntryKind::Lock, EntryKind::Lock],
            1 => &[EntryKind::Deposit],
            _ => &[EntryKind::Release],
        };
        for (part, &kind) in kinds.iter().enumerate() {
            let amount = if kind == EntryKind::Release {
                locked.min(3)
            } else {
                2
            };
            let (da, dl) = delta(kind, amount);
            (avail, locked) = (avail + da, locked + dl);
            out.push(EntryRow {
                account: 8,
                currency: usd(),
                seq,
                tx: TransactionId::new(8, seq),
                kind,
                amount,
                at_ms: 1_000 + seq / 3,
                available_after: avail,
                locked_after: locked,
                part: part as u8,
                metadata: None,
            });
        }
    }
    out
}

#[test]
fn a_runs_changes_to_one_balance_share_keys_and_read_as_if_each_event_had_its_own() {
    let (_dir, store) = open();
    let all = one_balance(300);
    // Runs of 1, 2, … 40 events; the first key holds 64 events at most.
    let (mut from, mut size) = (1u64, 1u64);
    while from <= 300 {
        let to = (from + size - 1).min(300);
        let run: Vec<Change> = all
            .iter()
            .filter(|e| (from..=to).contains(&e.seq))
            .cloned()
            .map(Change::Entry)
            .collect();
        ok(store.ingest(to, run));
        (from, size) = (to + 1, if size == 40 { 200 } else { size + 1 });
    }
    let keys = store.ks.get(schema::Ks::Entries).iter().count();
    assert!(
        keys < 40,
        "{keys} keys for 300 events in {} changes",
        all.len()
    );
    for limit in [1, 2, 7, 64, 65, 1_000] {
        assert_eq!(
            entry_pages(&store, 8, Some(usd()), limit),
            all,
            "pages of {limit}"
        );
    }
    for lsn in 0..=301 {
        let last = all.iter().rfind(|e| e.seq <= lsn);
        let expected = last.map_or((0, 0), |e| (e.available_after, e.locked_after));
        assert_eq!(
            ok(store.balance_at_lsn(8, usd(), lsn)),
            expected,
            "at lsn {lsn}"
        );
    }
    for at in [0, 1_000, 1_001, 1_050, 1_099, 1_100, 9_999] {
        let last = all.iter().rfind(|e| e.at_ms <= at);
        let got = ok(store.balances_at(8, at))
            .first()
            .map(|b| (b.available, b.locked));
        assert_eq!(
            got,
            last.map(|e| (e.available_after, e.locked_after)),
            "at {at} ms"
        );
    }
}

/// The changes of `all` up to event `lsn`, as ingest takes them.
fn entries_upto(all: &[EntryRow], lsn: u64) -> Vec<Change> {
    (all.iter())
        .filter(|e| e.seq <= lsn)
        .cloned()
        .map(Change::Entry)
        .collect()
}

#[test]
fn a_run_that_overlaps_what_was_applied_stores_no_entry_twice() {
    let (_dir, store) = open();
    let all = one_balance(30);
    let upto = |lsn: u64| entries_upto(&all, lsn);
    ok(store.ingest(10, upto(10)));
    // The log fed again from its start, past the watermark.
    ok(store.ingest(30, upto(30)));
    assert_eq!(entry_pages(&store, 8, None, 1_000), all);
    let stored: usize = store
        .ks
        .get(schema::Ks::Entries)
        .iter()
        .map(|kv| ok(kv.into_inner().map_err(HistoryError::from)).1)
        .map(|value| ok(entry_value::decode_entry(&value)).len())
        .sum();
    assert_eq!(stored, all.len(), "each change stored once");
    assert_eq!(ok(store.balance_at_lsn(8, usd(), 10)), {
        let e = all.iter().rfind(|e| e.seq <= 10);
        e.map_or((0, 0), |e| (e.available_after, e.locked_after))
    });
}

/// Ingest keeps a run's room for the next (emptied), but frees room grown
/// past what the history writer hands one run (a whole state fed at open)
/// rather than keep it allocated for good; either way the next run stores
/// only its own entries.
#[test]
fn ingest_keeps_a_runs_room_for_the_next_but_not_an_outsized_one() {
    let (_dir, store) = open();
    let events = 200_000;
    let all = one_balance(events);
    assert!(all.len() > super::ingest::KEPT_ROWS_MAX);
    let between = |from: u64, to: u64| {
        let upto = entries_upto(&all, to);
        upto.into_iter().filter(move |c| match c {
            Change::Entry(e) => e.seq > from,
            _ => true,
        })
    };
    ok(store.ingest(100, between(0, 100)));
    let room = store.kept_entries_room();
    assert!(room >= entries_upto(&all, 100).len(), "kept: {room}");
    ok(store.ingest(events - 100, between(100, events - 100)));
    assert_eq!(store.kept_entries_room(), 0, "outsized room is freed");
    ok(store.ingest(events, between(events - 100, events)));
    assert!(store.kept_entries_room() > 0);
    let last = entry_pages(&store, 8, None, 500);
    let tail: Vec<_> = all
        .iter()
        .filter(|e| e.seq > events - 300)
        .cloned()
        .collect();
    assert_eq!(last[last.len() - tail.len()..], tail[..]);
}

#[test]
fn an_entry_past_its_runs_lsn_is_refused_and_nothing_written() {
    let (_dir, store) = open();
    let all = one_balance(6);
    let upto = |lsn: u64| entries_upto(&all, lsn);
    // Events 4 to 6 riding on a run that claims to end at LSN 3: a later
    // run's group would replace their key, and events 1 to 3 with it.
    assert!(matches!(
        store.ingest(3, upto(6)),
        Err(HistoryError::Encode(_))
    ));
    assert_eq!(ok(store.applied_lsn()), 0, "nothing was written");
    assert!(entry_pages(&store, 8, None, 100).is_empty());
    ok(store.ingest(3, upto(3)));
    ok(store.ingest(6, upto(6)));
    assert_eq!(entry_pages(&store, 8, None, 100), all);
}

#[test]
fn a_damaged_length_is_corrupt_not_an_allocation_that_aborts() {
    let (_dir, store, parts) = store_with_one_event(7);
    // Part 2 carries metadata {k: v}: its trailing is part, Some, one
    // pair, then the key's length. Damaged to 2^52, decoding would try to
    // allocate that much (and abort the process) were claims not capped.
    let with_metadata = &parts[3];
    let row_len = ok(schema::encode(with_metadata)).len();
    let mut damaged = ok(schema::encode_row(with_metadata));
    damaged.truncate(row_len + 3);
    damaged.extend([253, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0x0f, 0x00]);
    assert!(matches!(
        entry_value::decode_entry(&damaged),
        Err(HistoryError::Corrupt { .. })
    ));
    // The same in a stored withdrawal's reason.
    let mut failed = withdrawal(1, 2, 3);
    failed.reason = Some("r".into());
    let encoded = ok(schema::encode_row(&failed));
    // Without a reason the row ends None (0) and its two times (3, 3):
    // with one, the same prefix, then Some (1), the length, "r", the times.
    let some = ok(schema::encode_row(&withdrawal(1, 2, 3))).len() - 3;
    assert_eq!(encoded[some..], [1, 1, b'r', 3, 3]);
    let mut damaged = encoded[..=some].to_vec();
    damaged.extend([253, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0x0f, 0x00]);
    assert!(matches!(
        schema::decode_row::<WithdrawalRow>(&damaged, "withdrawal"),
        Err(HistoryError::Corrupt { .. })
    ));
    drop(store);
}

#[test]
fn a_damaged_entry_value_is_reported_not_panicked_on() {
    let (_dir, store, parts) = store_with_one_event(7);
    let ks = store.ks.get(schema::Ks::Entries);
    let key = schema::entry_row_key(&parts[0]);
    let stored =
        ok(ks.get(&key).map_err(HistoryError::from)).unwrap_or_else(|| panic!("not stored"));
    // Cut (after its full last part, or its compact one), empty, parts
    // out of order, and a compact part with no first part to complete it.
    let swapped = every_part_in_full(&[&parts[1], &parts[0]]);
    let two = ok(entry_value::encode_entry(&[
        parts[0].clone(),
        parts[1].clone(),
    ]));
    let lone_later = two[ok(entry_value::encode_entry(&parts[..1])).len() + 2..].to_vec();
    assert_eq!(lone_later.first(), Some(&0xFE), "part 1 is stored compact");
    let old_lone_later =
        with_later_parts(&[&parts[0], &parts[1]])[two.len() - lone_later.len()..].to_vec();
    assert_eq!(old_lone_later.first(), Some(&0xFF), "as stored before");
    // A compact change whose amount, moved onto the change before, overflows.
    let mut huge = parts[1].clone();
    huge.amount = Units::MAX;
    let overflowing = [
        ok(entry_value::encode_entry(&parts[..1])),
        [0xFE].to_vec(),
        ok(schema::encode(&(
            huge.part,
            huge.kind,
            huge.amount,
            None::<()>,
            None::<()>,
        ))),
    ]
    .concat();
    let damaged = [
        stored[..stored.len() - 1].to_vec(),
        two[..two.len() - 1].to_vec(),
        Vec::new(),
        swapped,
        lone_later,
        old_lone_later,
        overflowing,
    ];
    for damaged in damaged {
        ok(ks.insert(&key, damaged).map_err(HistoryError::from));
        assert!(matches!(
            store.entries(3, None, None, 10),
            Err(HistoryError::Corrupt { .. })
        ));
        assert!(matches!(
            store.balance_at_lsn(3, usd(), 7),
            Err(HistoryError::Corrupt { .. })
        ));
    }
}

#[test]
fn transactions_are_found_by_id_whatever_they_are() {
    let (_dir, store) = open();
    let deposit = TransactionRow {
        tx: TransactionId::new(1, 1),
        kind: TransactionKind::Deposit,
        account: 1,
        to: None,
        currency: usd(),
        amount: 500,
        at_ms: 3,
        metadata: None,
    };
    let transfer = TransactionRow {
        tx: TransactionId::new(1, 2),
        kind: TransactionKind::Transfer,
        account: 1,
        to: Some(2),
        currency: usd(),
        amount: 50,
        at_ms: 4,
        metadata: None,
    };
    let w = withdrawal(1, 3, 5);
    let changes = [
        Change::Transaction(deposit.clone()),
        Change::Transaction(transfer.clone()),
        Change::Withdrawal(w.clone()),
    ];
    ok(store.ingest(1, &changes));
    assert_eq!(
        ok(store.transaction(deposit.tx)),
        Some(TransactionRecord::Other(deposit))
    );
    assert_eq!(
        ok(store.transaction(transfer.tx)),
        Some(TransactionRecord::Other(transfer))
    );
    assert_eq!(
        ok(store.transaction(w.tx)),
        Some(TransactionRecord::Withdrawal(w))
    );
    assert_eq!(ok(store.transaction(TransactionId::new(1, 4))), None);
}

fn payout(id: u64, currency: CurrencyCode, state: PayoutState) -> PayoutRow {
    PayoutRow {
        payout_id: id,
        currency,
        state,
        submitted_at_ms: 10 * id,
        settled_at_ms: None,
        items: vec![PayoutItemRow {
            tx: TransactionId::new(id, 1),
            amount: 10,
        }],
    }
}

#[test]
fn payouts_page_by_state_and_currency_and_follow_state_changes() {
    let (_dir, store) = open();
    let mut rows: Vec<PayoutRow> = (1..=300)
        .map(|id| {
            let currency = if id % 3 == 0 { code("EUR") } else { usd() };
            payout(id, currency, PayoutState::ALL[(id % 5) as usize])
        })
        .collect();
    ok(store.ingest(
        1,
        rows.iter().cloned().map(Change::Payout).collect::<Vec<_>>(),
    ));
    // Settle every processing payout of USD.
    let mut settle = Vec::new();
    for r in rows
        .iter_mut()
        .filter(|r| r.state == PayoutState::Processing && r.currency == usd())
    {
        r.state = PayoutState::Completed;
        r.settled_at_ms = Some(7_000);
        settle.push(Change::PayoutState {
            payout_id: r.payout_id,
            state: r.state,
            settled_at_ms: Some(7_000),
        });
    }
    ok(store.ingest(2, &settle));
    let states = PayoutState::ALL.map(Some);
    for state in states.into_iter().chain([None]) {
        for currency in [None, Some(usd()), Some(code("EUR"))] {
            for order in [Order::Asc, Order::Desc] {
                let mut expected: Vec<PayoutRow> = rows
                    .iter()
                    .filter(|r| {
                        state.is_none_or(|s| r.state == s)
                            && currency.is_none_or(|c| r.currency == c)
                    })
                    .cloned()
                    .collect();
                if order == Order::Desc {
                    expected.reverse();
                }
                let mut got = Vec::new();
                let mut after: Option<String> = None;
                loop {
                    let q = PayoutQuery {
                        state,
                        currency,
                        after: after.as_deref(),
                        limit: 13,
                        order,
                    };
                    let page = ok(store.payouts(&q));
                    got.extend(page.items);
                    match page.next {
                        Some(n) => after = Some(n),
                        None => break,
                    }
                }
                assert_eq!(got, expected, "{state:?} {currency:?} {order:?}");
            }
        }
    }
    assert_eq!(ok(store.payout(3)), Some(rows[2].clone()));
}

/// Writes (tombstones included) each keyspace holds in its memtable: what
/// ingest wrote, while nothing was flushed.
fn writes_in(store: &HistoryStore, ks: schema::Ks) -> usize {
    store.ks.get(ks).approximate_len()
}

#[test]
fn a_withdrawal_created_and_settled_in_one_run_is_written_once() {
    let (_dir, store) = open();
    let created = withdrawal(3, 1, 10);
    let completed = WithdrawalRow {
        status: StatusKind::Completed,
        updated_at_ms: 20,
        ..created.clone()
    };
    let changes = [
        Change::Withdrawal(created.clone()),
        Change::Withdrawal(completed.clone()),
    ];
    ok(store.ingest(1, &changes));
    assert_eq!(ok(store.withdrawal(created.tx)), Some(completed));
    // One row, one account key, one status key: the pending key it had
    // within the run is never written, not even as a removal.
    assert_eq!(writes_in(&store, schema::Ks::Withdrawals), 1);
    assert_eq!(writes_in(&store, schema::Ks::WByAccount), 1);
    assert_eq!(writes_in(&store, schema::Ks::WByStatus), 1);
}

#[test]
fn a_later_status_change_writes_only_the_keys_that_move() {
    let (_dir, store) = open();
    let created = withdrawal(3, 1, 10);
    ok(store.ingest(1, &[Change::Withdrawal(created.clone())]));
    let completed = WithdrawalRow {
        status: StatusKind::Completed,
        updated_at_ms: 20,
        ..created.clone()
    };
    ok(store.ingest(2, &[Change::Withdrawal(completed.clone())]));
    assert_eq!(ok(store.withdrawal(created.tx)), Some(completed));
    // The account key stays as written by the first run; the status key
    // moves (one removal, one insert).
    assert_eq!(writes_in(&store, schema::Ks::WByAccount), 1);
    assert_eq!(writes_in(&store, schema::Ks::WByStatus), 3);
    assert_eq!(store.ks.get(schema::Ks::WByStatus).iter().count(), 1);
}

#[test]
fn changes_that_say_what_the_store_holds_move_its_keys() {
    let (_dir, store) = open();
    let created = withdrawal(3, 1, 10);
    let claimed = WithdrawalRow {
        status: StatusKind::Processing,
        payout_id: Some(9),
        ..created.clone()
    };
    let completed = WithdrawalRow {
        status: StatusKind::Completed,
        ..claimed.clone()
    };
    let from = |status, payout_id| Some(WithdrawalIndex { status, payout_id });
    let runs = [
        vec![Change::WithdrawalFrom {
            row: created.clone(),
            from: None,
        }],
        vec![Change::WithdrawalFrom {
            row: claimed,
            from: from(StatusKind::Pending, None),
        }],
        vec![Change::WithdrawalFrom {
            row: completed.clone(),
            from: from(StatusKind::Processing, Some(9)),
        }],
    ];
    for (lsn, changes) in (1..).zip(&runs) {
        ok(store.ingest(lsn, changes));
    }
    let listed = |q: WithdrawalQuery<'_>| ok(store.withdrawals(&q)).items;
    let statuses = [StatusKind::Completed];
    let by_status = WithdrawalQuery {
        statuses: &statuses,
        ..Default::default()
    };
    let by_payout = WithdrawalQuery {
        payout_id: Some(9),
        ..Default::default()
    };
    let by_account = WithdrawalQuery {
        account: Some(3),
        ..Default::default()
    };
    for q in [by_status, by_payout, by_account] {
        assert_eq!(listed(q), vec![completed.clone()]);
    }
    let index_keys = |ks| store.ks.get(ks).iter().count();
    assert_eq!(index_keys(schema::Ks::WByStatus), 1, "old status keys go");
    assert_eq!(index_keys(schema::Ks::WByPayout), 1);
}

#[test]
fn an_incomplete_store_reads_what_it_holds_instead_of_trusting_changes() {
    let dir = tempfile::tempdir().unwrap_or_else(|e| panic!("{e}"));
    let created = withdrawal(3, 1, 10);
    let completed = WithdrawalRow {
        status: StatusKind::Completed,
        ..created.clone()
    };
    {
        let store = ok(HistoryStore::open(dir.path()));
        ok(store.mark_incomplete());
    }
    // The store lacks the withdrawal (its creation was in the gap), while
    // the change says it holds it as pending: the mark, kept across a
    // reopen, makes ingest look, so every index key is written.
    let store = ok(HistoryStore::open(dir.path()));
    let change = Change::WithdrawalFrom {
        row: completed.clone(),
        from: Some(WithdrawalIndex {
            status: StatusKind::Pending,
            payout_id: None,
        }),
    };
    ok(store.ingest(1, &[change]));
    let by_account = WithdrawalQuery {
        account: Some(3),
        ..Default::default()
    };
    assert_eq!(ok(store.withdrawals(&by_account)).items, vec![completed]);
    assert_eq!(writes_in(&store, schema::Ks::WByStatus), 1, "no removal");
}

#[test]
fn a_payout_that_says_its_state_before_moves_its_state_key() {
    let (_dir, store) = open();
    let submitted = payout(4, usd(), PayoutState::Processing);
    let settled = payout(4, usd(), PayoutState::Completed);
    ok(store.ingest(
        1,
        &[Change::PayoutFrom {
            row: submitted,
            from: None,
        }],
    ));
    ok(store.ingest(
        2,
        &[Change::PayoutFrom {
            row: settled.clone(),
            from: Some(PayoutState::Processing),
        }],
    ));
    let in_state = |state| {
        ok(store.payouts(&PayoutQuery {
            state: Some(state),
            limit: 10,
            ..Default::default()
        }))
        .items
    };
    assert!(in_state(PayoutState::Processing).is_empty());
    assert_eq!(in_state(PayoutState::Completed), vec![settled]);
    assert_eq!(store.ks.get(schema::Ks::PByState).iter().count(), 1);
}
