//! The history reads through the public `Ledger` API (issue 13): withdrawal
//! listings paged while another task writes (no duplicates, no gaps, a
//! stable order), every filter, time ranges and order, read-your-writes,
//! `balances_at` against a replay of the entries and against the live
//! balances seen at each time, transactions by id for every kind, and the
//! refusals (bad input by its code, a ledger without a history store).

mod common;

use std::collections::{BTreeMap, HashSet};
use std::time::Duration;

use burnledger::clock::{Clock, ManualClock, MANUAL_CLOCK_START_UNIX_MS};
use burnledger::config::{PayoutMode, SharedPaymentService};
use burnledger::domain::payouts::PayoutState;
use burnledger::domain::withdrawal::StatusKind;
use burnledger::payment::SimulatedBank;
use burnledger::{
    Balance, Config, CurrencyCode, Decimal, Entry, EntryKind, Ledger, LedgerError, Order, Page,
    PayoutQuery, Transaction, TransactionId, UnixMs, Withdrawal, WithdrawalOutcome,
    WithdrawalQuery,
};
use common::{dec, deposit_op, withdraw_op};

/// A durable ledger in `dir` whose host pays (external mode), with room
/// for thousands of pending withdrawals per account.
fn config(dir: &std::path::Path) -> Config {
    Config {
        account_pending_withdrawals_max: 100_000,
        ..Config::for_tests_in(dir)
    }
}

fn on_clock(dir: &std::path::Path, clock: &ManualClock) -> Config {
    Config {
        clock: clock.shared(),
        ..config(dir)
    }
}

fn at(offset_ms: u64) -> UnixMs {
    UnixMs::from_millis(MANUAL_CLOCK_START_UNIX_MS + offset_ms)
}

/// Every withdrawal `query` lists, page by page (`limit` a page).
async fn all_pages(ledger: &Ledger, query: WithdrawalQuery<'_>) -> Vec<Withdrawal> {
    let mut out = Vec::new();
    let mut after: Option<String> = None;
    loop {
        let page = ledger
            .withdrawals(WithdrawalQuery {
                after: after.as_deref(),
                ..query.clone()
            })
            .await
            .unwrap();
        assert!(page.items.len() <= query.limit);
        out.extend(page.items);
        match page.next {
            Some(next) => after = Some(next),
            None => return out,
        }
    }
}

fn ids(list: &[Withdrawal]) -> Vec<TransactionId> {
    list.iter().map(|w| w.transaction_id).collect()
}

/// Funds `accounts` and requests `per_account` withdrawals of 1 USD on
/// each, in batches; returns them.
async fn withdrawals_on(ledger: &Ledger, accounts: &[u64], per_account: usize) -> Vec<Withdrawal> {
    let funding = accounts
        .iter()
        .map(|a| deposit_op(*a, "USD", "1000000"))
        .collect();
    for result in ledger.submit(funding).await {
        result.unwrap();
    }
    let mut made = Vec::new();
    for _ in 0..per_account {
        let ops = accounts
            .iter()
            .map(|a| withdraw_op(*a, "USD", "1"))
            .collect();
        for result in ledger.submit(ops).await {
            made.push(common::withdrawn(&result).clone());
        }
    }
    made
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn paging_while_another_task_writes_lists_each_withdrawal_once_in_a_stable_order() {
    let dir = tempfile::tempdir().unwrap();
    let ledger = Ledger::open(config(dir.path())).unwrap();
    let accounts: Vec<u64> = (1..=20).collect();
    let before = withdrawals_on(&ledger, &accounts, 150).await;
    assert_eq!(before.len(), 3_000);

    // Another task keeps writing: new withdrawals, and cancels of old ones
    // (a status change, which moves a row between status indexes).
    let writer = {
        let ledger = ledger.clone();
        let to_cancel: Vec<TransactionId> = ids(&before).into_iter().step_by(7).collect();
        tokio::spawn(async move {
            let mut written = 0;
            for (round, tx) in to_cancel.into_iter().enumerate() {
                ledger.cancel_withdrawal(tx).await.unwrap();
                let account = 1 + (round as u64 % 25);
                ledger
                    .deposit(account, "USD", dec("1"), None)
                    .await
                    .unwrap();
                ledger
                    .request_withdrawal(account, "USD", dec("1"), None)
                    .await
                    .unwrap();
                written += 1;
            }
            written
        })
    };
    let listings = [
        ("every account", WithdrawalQuery::default()),
        (
            "every account, pending or cancelled",
            WithdrawalQuery {
                status: &[StatusKind::Pending, StatusKind::Cancelled],
                ..WithdrawalQuery::default()
            },
        ),
        (
            "account 3",
            WithdrawalQuery {
                account: Some(3),
                ..WithdrawalQuery::default()
            },
        ),
    ];
    for (what, query) in listings {
        for order in [Order::Asc, Order::Desc] {
            let query = WithdrawalQuery {
                limit: 97,
                order,
                ..query.clone()
            };
            let listed = all_pages(&ledger, query.clone()).await;
            let seen: HashSet<TransactionId> = ids(&listed).into_iter().collect();
            assert_eq!(seen.len(), listed.len(), "{what} {order:?}: a duplicate");
            for w in before
                .iter()
                .filter(|w| query.account.is_none_or(|a| w.account == a))
            {
                assert!(
                    seen.contains(&w.transaction_id),
                    "{what} {order:?}: a gap at {w:?}"
                );
            }
            let keys: Vec<_> = listed
                .iter()
                .map(|w| (w.created_at, w.transaction_id))
                .collect();
            let mut sorted = keys.clone();
            sorted.sort_by_key(|(created, tx)| (*created, tx.account(), tx.sequence()));
            if order == Order::Desc {
                sorted.reverse();
            }
            assert_eq!(keys, sorted, "{what} {order:?}: out of order");
        }
    }
    let written = writer.await.unwrap();
    assert!(written > 400);

    // Once writes stop, paging agrees with one page per 1,000 and with the
    // live withdrawals.
    let small = all_pages(
        &ledger,
        WithdrawalQuery {
            limit: 13,
            ..WithdrawalQuery::default()
        },
    )
    .await;
    let large = all_pages(
        &ledger,
        WithdrawalQuery {
            limit: 1_000,
            ..WithdrawalQuery::default()
        },
    )
    .await;
    assert_eq!(small, large);
    assert_eq!(small.len(), before.len() + written);
    for w in small.iter().step_by(37) {
        assert_eq!(&ledger.withdrawal(w.transaction_id).await.unwrap(), w);
    }
    ledger.shutdown().await;
}

/// A ledger whose engine pays through a simulated bank, on a manual clock.
fn paying(dir: &std::path::Path, clock: &ManualClock) -> Config {
    Config {
        payout_mode: PayoutMode::Batched {
            interval_secs: 24 * 3600,
        },
        payment_service: Some(SharedPaymentService::new(SimulatedBank::default())),
        ..on_clock(dir, clock)
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_filter_lists_exactly_what_it_names() {
    let dir = tempfile::tempdir().unwrap();
    let clock = ManualClock::new();
    let ledger = Ledger::open(paying(dir.path(), &clock)).unwrap();
    for account in 1..=4 {
        ledger
            .deposit(account, "USD", dec("100"), None)
            .await
            .unwrap();
        ledger
            .deposit(account, "EUR", dec("100"), None)
            .await
            .unwrap();
    }
    let mut made = Vec::new();
    for round in 0..6u64 {
        for account in 1..=4 {
            let currency = if (account + round) % 2 == 0 {
                "USD"
            } else {
                "EUR"
            };
            let w = ledger
                .request_withdrawal(account, currency, dec("1"), None)
                .await
                .unwrap();
            made.push(w.transaction_id);
        }
        clock.advance(Duration::from_millis(10));
        if round == 2 {
            // The first 12 are paid by payouts (one per currency).
            let payouts = ledger.run_payouts_now().await.unwrap();
            assert_eq!(payouts.len(), 2);
        }
    }
    for tx in made.iter().skip(12).step_by(3) {
        ledger.cancel_withdrawal(*tx).await.unwrap();
    }
    let mut live = Vec::new();
    for tx in &made {
        live.push(ledger.withdrawal(*tx).await.unwrap());
    }
    let usd = CurrencyCode::new("USD").unwrap();
    let payout_of_first = ledger
        .payouts()
        .await
        .unwrap()
        .into_iter()
        .find(|p| p.items.iter().any(|i| i.transaction_id == made[0]))
        .unwrap();
    let in_first_payout: HashSet<TransactionId> = payout_of_first
        .items
        .iter()
        .map(|i| i.transaction_id)
        .collect();

    type Filter = Box<dyn Fn(&Withdrawal) -> bool>;
    let cases: Vec<(WithdrawalQuery<'static>, Filter)> = vec![
        (WithdrawalQuery::default(), Box::new(|_| true)),
        (
            WithdrawalQuery {
                account: Some(2),
                ..WithdrawalQuery::default()
            },
            Box::new(|w| w.account == 2),
        ),
        (
            WithdrawalQuery {
                currency: Some("USD"),
                ..WithdrawalQuery::default()
            },
            Box::new(move |w| w.currency == usd),
        ),
        (
            WithdrawalQuery {
                status: &[StatusKind::Completed],
                ..WithdrawalQuery::default()
            },
            Box::new(|w| w.status.kind() == StatusKind::Completed),
        ),
        (
            WithdrawalQuery {
                status: &[StatusKind::Pending, StatusKind::Cancelled],
                ..WithdrawalQuery::default()
            },
            Box::new(|w| matches!(w.status.kind(), StatusKind::Pending | StatusKind::Cancelled)),
        ),
        (
            WithdrawalQuery {
                account: Some(2),
                currency: Some("EUR"),
                status: &[StatusKind::Pending],
                ..WithdrawalQuery::default()
            },
            Box::new(move |w| {
                w.account == 2 && w.currency != usd && w.status.kind() == StatusKind::Pending
            }),
        ),
        (
            WithdrawalQuery {
                payout_id: Some(payout_of_first.payout_id),
                ..WithdrawalQuery::default()
            },
            Box::new(move |w| in_first_payout.contains(&w.transaction_id)),
        ),
        (
            WithdrawalQuery {
                created_from: Some(at(20)),
                ..WithdrawalQuery::default()
            },
            Box::new(|w| w.created_at >= Some(at(20))),
        ),
        (
            WithdrawalQuery {
                created_to: Some(at(20)),
                ..WithdrawalQuery::default()
            },
            Box::new(|w| w.created_at < Some(at(20))),
        ),
    ];
    for (query, keep) in cases {
        let mut expected: Vec<Withdrawal> = live.iter().filter(|w| keep(w)).cloned().collect();
        expected.sort_by_key(|w| {
            (
                w.created_at,
                w.transaction_id.account(),
                w.transaction_id.sequence(),
            )
        });
        assert!(!expected.is_empty(), "{query:?} names something");
        let listed = all_pages(
            &ledger,
            WithdrawalQuery {
                limit: 5,
                ..query.clone()
            },
        )
        .await;
        assert_eq!(listed, expected, "{query:?}");
    }
    ledger.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn time_ranges_run_from_created_from_up_to_but_not_including_created_to() {
    let dir = tempfile::tempdir().unwrap();
    let clock = ManualClock::new();
    let ledger = Ledger::open(on_clock(dir.path(), &clock)).unwrap();
    ledger.deposit(1, "USD", dec("100"), None).await.unwrap();
    let mut made = Vec::new();
    for _ in 0..5 {
        made.push(
            ledger
                .request_withdrawal(1, "USD", dec("1"), None)
                .await
                .unwrap(),
        );
        clock.advance(Duration::from_millis(10));
    }
    let range = |from: Option<u64>, to: Option<u64>| WithdrawalQuery {
        account: Some(1),
        created_from: from.map(at),
        created_to: to.map(at),
        ..WithdrawalQuery::default()
    };
    let cases = [
        (range(Some(10), Some(30)), &made[1..3]),
        (range(Some(10), Some(31)), &made[1..4]),
        (range(Some(9), Some(30)), &made[1..3]),
        (range(Some(11), Some(30)), &made[2..3]),
        (range(None, Some(20)), &made[0..2]),
        (range(Some(40), None), &made[4..5]),
        (range(Some(20), Some(20)), &made[0..0]),
        (range(Some(41), None), &made[0..0]),
        (range(None, None), &made[..]),
    ];
    for (query, expected) in cases {
        assert_eq!(
            all_pages(&ledger, query.clone()).await,
            expected,
            "{query:?}"
        );
    }
    let backwards = ledger
        .withdrawals(range(Some(30), Some(10)))
        .await
        .unwrap_err();
    assert_eq!(
        backwards,
        LedgerError::InvalidTimeRange {
            from: at(30),
            to: at(10)
        }
    );
    ledger.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn descending_order_is_ascending_reversed_page_by_page() {
    let dir = tempfile::tempdir().unwrap();
    let clock = ManualClock::new();
    let ledger = Ledger::open(on_clock(dir.path(), &clock)).unwrap();
    ledger.deposit(1, "USD", dec("100"), None).await.unwrap();
    ledger.deposit(2, "USD", dec("100"), None).await.unwrap();
    for i in 0..25u64 {
        ledger
            .request_withdrawal(1 + i % 2, "USD", dec("1"), None)
            .await
            .unwrap();
        if i % 3 == 0 {
            clock.advance(Duration::from_millis(1));
        }
    }
    let asc = all_pages(
        &ledger,
        WithdrawalQuery {
            limit: 4,
            ..WithdrawalQuery::default()
        },
    )
    .await;
    let mut desc = all_pages(
        &ledger,
        WithdrawalQuery {
            limit: 6,
            order: Order::Desc,
            ..WithdrawalQuery::default()
        },
    )
    .await;
    assert_eq!(asc.len(), 25);
    desc.reverse();
    assert_eq!(asc, desc);
    let first = ledger
        .withdrawals(WithdrawalQuery {
            limit: 1,
            order: Order::Desc,
            ..WithdrawalQuery::default()
        })
        .await
        .unwrap();
    assert_eq!(first.items, asc[24..]);
    assert!(first.next.is_some());
    ledger.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_withdrawal_acknowledged_is_in_its_accounts_listing_and_entries_at_once() {
    let dir = tempfile::tempdir().unwrap();
    let ledger = Ledger::open(config(dir.path())).unwrap();
    ledger.deposit(9, "USD", dec("1000"), None).await.unwrap();
    let newest = WithdrawalQuery {
        account: Some(9),
        limit: 1,
        order: Order::Desc,
        ..WithdrawalQuery::default()
    };
    for i in 0..200 {
        let w = ledger
            .request_withdrawal(9, "USD", dec("1"), None)
            .await
            .unwrap();
        let listed = ledger.withdrawals(newest.clone()).await.unwrap();
        assert_eq!(listed.items, std::slice::from_ref(&w), "round {i}");
        let done = if i % 2 == 0 {
            ledger.cancel_withdrawal(w.transaction_id).await.unwrap()
        } else {
            ledger
                .complete_withdrawal(w.transaction_id, WithdrawalOutcome::Completed)
                .await
                .unwrap()
        };
        let listed = ledger.withdrawals(newest.clone()).await.unwrap();
        assert_eq!(listed.items, [done], "round {i}");
        let found = ledger.transaction(w.transaction_id).await.unwrap();
        assert_eq!(found.transaction_id(), w.transaction_id);
    }
    let entries = all_entries(&ledger, 9, Some("USD")).await;
    // A deposit, then per round a lock and a release or a burn.
    assert_eq!(entries.len(), 1 + 2 * 200);
    let balance = ledger.balance(9, "USD").await.unwrap();
    let last = entries.last().unwrap();
    assert_eq!(
        (last.available_after, last.locked_after),
        (balance.available, balance.locked)
    );
    ledger.shutdown().await;
}

async fn all_entries(ledger: &Ledger, account: u64, currency: Option<&str>) -> Vec<Entry> {
    let mut out = Vec::new();
    let mut after: Option<String> = None;
    loop {
        let page: Page<Entry> = ledger
            .entries(account, currency, after.as_deref(), 7)
            .await
            .unwrap();
        out.extend(page.items);
        match page.next {
            Some(next) => after = Some(next),
            None => return out,
        }
    }
}

/// Available and locked after applying `e` to `(available, locked)`, by
/// what its kind means (amounts are positive; the kind gives the way).
fn replay(balance: (Decimal, Decimal), e: &Entry) -> (Decimal, Decimal) {
    let (available, locked) = balance;
    let amount = e.amount;
    match e.kind {
        EntryKind::Deposit | EntryKind::Return | EntryKind::TransferIn | EntryKind::FeeIn => {
            (available + amount, locked)
        }
        EntryKind::TransferOut => (available - amount, locked),
        EntryKind::Lock => (available - amount, locked + amount),
        EntryKind::Release => (available + amount, locked - amount),
        EntryKind::Burn | EntryKind::FeeOut => (available, locked - amount),
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn balances_at_a_time_are_the_entries_replayed_up_to_it_and_what_was_live_then() {
    let dir = tempfile::tempdir().unwrap();
    let clock = ManualClock::new();
    let config = Config {
        fee_account: Some(2),
        ..on_clock(dir.path(), &clock)
    };
    let ledger = Ledger::open(config).unwrap();
    let mut rng = common::Rng(7);
    let mut live_at: Vec<(UnixMs, Vec<Balance>)> = vec![(at(0), Vec::new())];
    let mut pending: Vec<TransactionId> = Vec::new();
    let mut completed: Vec<TransactionId> = Vec::new();
    for step in 1..=120u64 {
        clock.advance(Duration::from_millis(1 + rng.below(50)));
        let currency = rng.pick(&["USD", "EUR"]);
        match rng.below(6) {
            0 | 1 => drop(
                ledger
                    .deposit(1, currency, dec("7.25"), None)
                    .await
                    .unwrap(),
            ),
            2 => {
                // Every other one with a fee, collected by account 2.
                let fee = (step % 4 < 2).then(|| burnledger::operation::FeeRequest {
                    currency: CurrencyCode::new(currency).unwrap(),
                    amount: dec("0.15"),
                });
                let options = burnledger::operation::WithdrawalOptions {
                    fee,
                    ..Default::default()
                };
                if let Ok(w) = ledger
                    .request_withdrawal_with(1, currency, dec("3.10"), None, options)
                    .await
                {
                    pending.push(w.transaction_id);
                }
            }
            3 => {
                if let Some(tx) = pending.pop() {
                    let outcome = if step % 2 == 0 {
                        WithdrawalOutcome::Completed
                    } else {
                        WithdrawalOutcome::Failed {
                            reason: "closed".into(),
                        }
                    };
                    let done = ledger.complete_withdrawal(tx, outcome).await.unwrap();
                    if done.status.kind() == StatusKind::Completed {
                        completed.push(tx);
                    }
                }
            }
            4 => {
                let _ = ledger.transfer(1, 2, currency, dec("1.05"), None).await;
                let _ = ledger.transfer(2, 1, currency, dec("0.50"), None).await;
            }
            _ => {
                if let Some(tx) = completed.pop() {
                    ledger.return_withdrawal(tx, "bounced").await.unwrap();
                }
            }
        }
        let now = UnixMs::from_millis(clock.unix_ms());
        live_at.push((now, ledger.balances(1).await.unwrap()));
    }
    let entries = all_entries(&ledger, 1, None).await;
    // The fee account's entries hold the fees arriving.
    let fee_account = all_entries(&ledger, 2, None).await;
    let kinds: HashSet<EntryKind> = entries.iter().chain(&fee_account).map(|e| e.kind).collect();
    assert_eq!(
        kinds.len(),
        EntryKind::ALL.len(),
        "every kind of entry: {kinds:?}"
    );
    for (time, live) in &live_at {
        // Replay every entry at or before `time`, per currency.
        let mut replayed: BTreeMap<String, (Decimal, Decimal)> = BTreeMap::new();
        for e in entries.iter().filter(|e| e.at.is_some_and(|t| t <= *time)) {
            let before = replayed.entry(e.currency.to_string()).or_default();
            *before = replay(*before, e);
            assert_eq!(*before, (e.available_after, e.locked_after), "{e:?}");
        }
        let mut as_of: Vec<Balance> = ledger.balances_at(1, *time).await.unwrap();
        as_of.sort_by_key(|b| b.currency.to_string());
        let from_replay: Vec<(String, Decimal, Decimal)> =
            replayed.into_iter().map(|(c, (a, l))| (c, a, l)).collect();
        let shown: Vec<(String, Decimal, Decimal)> = as_of
            .iter()
            .map(|b| (b.currency.to_string(), b.available, b.locked))
            .collect();
        assert_eq!(shown, from_replay, "at {time}");
        let mut live = live.clone();
        live.sort_by_key(|b| b.currency.to_string());
        assert_eq!(as_of, live, "at {time}: as the live balances were then");
    }
    // Before anything happened: nothing.
    assert_eq!(
        ledger.balances_at(1, UnixMs::from_millis(1)).await.unwrap(),
        []
    );
    ledger.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_transaction_id_finds_its_deposit_transfer_or_withdrawal() {
    let dir = tempfile::tempdir().unwrap();
    let clock = ManualClock::new();
    let ledger = Ledger::open(on_clock(dir.path(), &clock)).unwrap();
    let deposit = ledger.deposit(1, "USD", dec("50"), None).await.unwrap();
    clock.advance(Duration::from_millis(5));
    let transfer = ledger.transfer(1, 2, "USD", dec("20"), None).await.unwrap();
    clock.advance(Duration::from_millis(5));
    let w = ledger
        .request_withdrawal(2, "USD", dec("7.5"), None)
        .await
        .unwrap();
    clock.advance(Duration::from_millis(5));
    let failed = ledger
        .complete_withdrawal(
            w.transaction_id,
            WithdrawalOutcome::Failed {
                reason: "bank, \"no\"".into(),
            },
        )
        .await
        .unwrap();
    assert_eq!(
        ledger.transaction(deposit.transaction_id).await.unwrap(),
        Transaction::Deposit {
            deposit: deposit.clone(),
            at: Some(at(0)),
            metadata: Default::default(),
        }
    );
    assert_eq!(
        ledger.transaction(transfer.transaction_id).await.unwrap(),
        Transaction::Transfer {
            transfer: transfer.clone(),
            at: Some(at(5)),
            metadata: Default::default(),
        }
    );
    assert_eq!(
        ledger.transaction(w.transaction_id).await.unwrap(),
        Transaction::Withdrawal(failed.clone())
    );
    let nowhere = TransactionId::new(77, 1);
    assert_eq!(
        ledger.transaction(nowhere).await.unwrap_err(),
        LedgerError::UnknownTransaction {
            transaction_id: nowhere
        }
    );
    ledger.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn payouts_are_paged_by_id_and_filtered_by_state_and_currency() {
    let dir = tempfile::tempdir().unwrap();
    let clock = ManualClock::new();
    let ledger = Ledger::open(paying(dir.path(), &clock)).unwrap();
    ledger.deposit(1, "USD", dec("100"), None).await.unwrap();
    ledger.deposit(1, "EUR", dec("100"), None).await.unwrap();
    for round in 0..5 {
        ledger
            .request_withdrawal(1, "USD", dec("1"), None)
            .await
            .unwrap();
        if round % 2 == 0 {
            ledger
                .request_withdrawal(1, "EUR", dec("1"), None)
                .await
                .unwrap();
        }
        ledger.run_payouts_now().await.unwrap();
    }
    let mut every = ledger.payouts().await.unwrap();
    every.sort_by_key(|p| p.payout_id);
    assert_eq!(every.len(), 8);
    let mut paged = Vec::new();
    let mut after: Option<String> = None;
    loop {
        let page = ledger
            .payouts_page(PayoutQuery {
                after: after.as_deref(),
                limit: 3,
                ..PayoutQuery::default()
            })
            .await
            .unwrap();
        paged.extend(page.items);
        match page.next {
            Some(next) => after = Some(next),
            None => break,
        }
    }
    assert_eq!(paged, every);
    let eur = ledger
        .payouts_page(PayoutQuery {
            currency: Some("EUR"),
            order: Order::Desc,
            ..PayoutQuery::default()
        })
        .await
        .unwrap();
    let mut expected: Vec<_> = every
        .iter()
        .filter(|p| p.currency.as_str() == "EUR")
        .cloned()
        .collect();
    expected.reverse();
    assert_eq!(eur.items, expected);
    let completed = ledger
        .payouts_page(PayoutQuery {
            state: Some(PayoutState::Completed),
            ..PayoutQuery::default()
        })
        .await
        .unwrap();
    assert_eq!(completed.items, every);
    let failed = ledger
        .payouts_page(PayoutQuery {
            state: Some(PayoutState::Failed),
            ..PayoutQuery::default()
        })
        .await
        .unwrap();
    assert_eq!(failed.items, []);
    ledger.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn bad_input_is_refused_by_its_code_and_changes_nothing() {
    let dir = tempfile::tempdir().unwrap();
    let ledger = Ledger::open(config(dir.path())).unwrap();
    let made = withdrawals_on(&ledger, &[1, 2], 3).await;
    let before = all_pages(&ledger, WithdrawalQuery::default()).await;
    assert_eq!(ids(&before).len(), made.len());
    let limit = |limit| WithdrawalQuery {
        limit,
        ..WithdrawalQuery::default()
    };
    for bad in [0, 1_001, usize::MAX] {
        assert_eq!(
            ledger.withdrawals(limit(bad)).await.unwrap_err(),
            LedgerError::InvalidLimit {
                limit: bad,
                max: 1_000
            }
        );
        assert_eq!(
            ledger.entries(1, None, None, bad).await.unwrap_err(),
            LedgerError::InvalidLimit {
                limit: bad,
                max: 1_000
            }
        );
        let payouts = PayoutQuery {
            limit: bad,
            ..PayoutQuery::default()
        };
        assert!(matches!(
            ledger.payouts_page(payouts).await,
            Err(LedgerError::InvalidLimit { .. })
        ));
    }
    assert_eq!(
        ledger.withdrawals(limit(1_000)).await.unwrap().items,
        before
    );
    let entries_cursor = ledger
        .entries(1, None, None, 1)
        .await
        .unwrap()
        .next
        .unwrap();
    let withdrawals_cursor = ledger.withdrawals(limit(1)).await.unwrap().next.unwrap();
    for cursor in [
        "",
        "garbage",
        "w00",
        &entries_cursor,
        &withdrawals_cursor.to_uppercase(),
    ] {
        let query = WithdrawalQuery {
            after: Some(cursor),
            ..WithdrawalQuery::default()
        };
        assert!(
            matches!(
                ledger.withdrawals(query).await,
                Err(LedgerError::InvalidCursor { .. })
            ),
            "{cursor:?}"
        );
    }
    assert!(matches!(
        ledger.entries(1, None, Some(&withdrawals_cursor), 10).await,
        Err(LedgerError::InvalidCursor { .. })
    ));
    let unknown = WithdrawalQuery {
        currency: Some("XYZ"),
        ..WithdrawalQuery::default()
    };
    assert_eq!(
        ledger.withdrawals(unknown).await.unwrap_err(),
        LedgerError::UnknownCurrency {
            currency: "XYZ".into()
        }
    );
    assert!(matches!(
        ledger.entries(1, Some("XYZ"), None, 10).await,
        Err(LedgerError::UnknownCurrency { .. })
    ));
    // Nothing changed.
    assert_eq!(all_pages(&ledger, WithdrawalQuery::default()).await, before);
    ledger.shutdown().await;
    // Closed: shutting_down before anything else.
    assert_eq!(
        ledger.withdrawals(limit(0)).await.unwrap_err(),
        LedgerError::ShuttingDown
    );
}

#[tokio::test]
async fn a_ledger_without_a_data_folder_answers_history_unavailable_after_judging_the_input() {
    let ledger = Ledger::open(Config::for_tests()).unwrap();
    ledger.deposit(1, "USD", dec("5"), None).await.unwrap();
    let unavailable = |e: LedgerError| matches!(e, LedgerError::HistoryUnavailable { .. });
    let q = WithdrawalQuery::default;
    assert!(unavailable(ledger.withdrawals(q()).await.unwrap_err()));
    assert!(unavailable(
        ledger.entries(1, None, None, 10).await.unwrap_err()
    ));
    assert!(unavailable(
        ledger
            .transaction(TransactionId::new(1, 1))
            .await
            .unwrap_err()
    ));
    assert!(unavailable(
        ledger.balances_at(1, UnixMs::MAX).await.unwrap_err()
    ));
    // It makes no payouts (external mode), so it lists none.
    let none = ledger.payouts_page(PayoutQuery::default()).await.unwrap();
    assert_eq!((none.items, none.next), (Vec::new(), None));
    // The input is judged first; the cursor is the store's to judge.
    let bad_limit = WithdrawalQuery { limit: 0, ..q() };
    assert!(matches!(
        ledger.withdrawals(bad_limit).await,
        Err(LedgerError::InvalidLimit { .. })
    ));
    let bad_currency = WithdrawalQuery {
        currency: Some("XYZ"),
        ..q()
    };
    assert!(matches!(
        ledger.withdrawals(bad_currency).await,
        Err(LedgerError::UnknownCurrency { .. })
    ));
    let backwards = WithdrawalQuery {
        created_from: Some(at(2)),
        created_to: Some(at(1)),
        ..q()
    };
    assert!(matches!(
        ledger.withdrawals(backwards).await,
        Err(LedgerError::InvalidTimeRange { .. })
    ));
    let bad_cursor = WithdrawalQuery {
        after: Some("garbage"),
        ..q()
    };
    assert!(unavailable(
        ledger.withdrawals(bad_cursor).await.unwrap_err()
    ));
    let e = ledger.withdrawals(q()).await.unwrap_err();
    assert_eq!(e.code(), "history_unavailable");
    assert!(e.is_operating() && !e.is_retryable());
    assert!(e.to_string().contains("no data folder"), "{e}");
    ledger.shutdown().await;
    assert_eq!(
        ledger.withdrawals(q()).await.unwrap_err(),
        LedgerError::ShuttingDown
    );
}

#[tokio::test]
async fn a_durable_ledger_with_its_history_turned_off_keeps_none_and_says_so() {
    let dir = tempfile::tempdir().unwrap();
    let off = Config {
        history: false,
        ..config(dir.path())
    };
    let ledger = Ledger::open(off).unwrap();
    ledger.deposit(1, "USD", dec("5"), None).await.unwrap();
    let e = ledger
        .withdrawals(WithdrawalQuery::default())
        .await
        .unwrap_err();
    assert_eq!(e.code(), "history_unavailable");
    assert!(e.to_string().contains("history turned off"), "{e}");
    assert!(!dir.path().join("history").exists());
    ledger.shutdown().await;

    // Turned on again, the store is built from what the log holds.
    let ledger = Ledger::open(config(dir.path())).unwrap();
    let entries = ledger.entries(1, None, None, 10).await.unwrap();
    assert_eq!(entries.items.len(), 1);
    ledger.shutdown().await;
}
