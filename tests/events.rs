//! The event feed through the public `Ledger` API (issue 15): every
//! logged record becomes one event, in LSN order, with the balances after
//! it in log order (checked against the history store's entries, which
//! replay makes); a subscription from any position sees the same events as
//! one from the start; `next` waits for durable events on the ledger's
//! clock; nothing the disk does not have is ever shown (a failing fsync);
//! named consumers' cursors are durable and hold the log back from
//! pruning up to the retention cap, past which they get `cursor_expired`;
//! withdrawals with fees (in their own currency and in another) ending
//! every way, partial completions, metadata, freezes and tiers show what
//! they carry, with balances exact for every account and currency, the
//! fee account's included (issue 16).

mod common;

use std::collections::HashMap;
use std::time::Duration;

use burnledger::clock::ManualClock;
use burnledger::domain::details::{Destination, Metadata};
use burnledger::domain::feed::{FeedBody, FeedEvent};
use burnledger::domain::policy::FreezeScope;
use burnledger::operation::{FeeRequest, WithdrawalOptions};
use burnledger::{Config, CurrencyCode, Decimal, Ledger, LedgerError, WithdrawalOutcome};
use common::dec;
use serde_json::json;

const NO_WAIT: Duration = Duration::ZERO;

fn config(dir: &std::path::Path) -> Config {
    Config {
        account_pending_withdrawals_max: 10_000,
        ..Config::for_tests_in(dir)
    }
}

/// Deposits, withdrawals ending every way, transfers, over a few accounts.
async fn workload(ledger: &Ledger, rounds: u64) {
    for round in 0..rounds {
        let a = 1 + round % 5;
        let b = 1 + (round + 1) % 5;
        ledger.deposit(a, "USD", dec("100.00"), None).await.unwrap();
        let w = ledger
            .request_withdrawal(a, "USD", dec("30.00"), None)
            .await
            .unwrap();
        match round % 3 {
            0 => {
                ledger
                    .complete_withdrawal(w.transaction_id, WithdrawalOutcome::Completed)
                    .await
                    .unwrap();
            }
            1 => {
                let failed = WithdrawalOutcome::Failed {
                    reason: "bank said no".into(),
                };
                ledger
                    .complete_withdrawal(w.transaction_id, failed)
                    .await
                    .unwrap();
            }
            _ => {
                ledger.cancel_withdrawal(w.transaction_id).await.unwrap();
            }
        }
        ledger
            .transfer(a, b, "USD", dec("10.00"), None)
            .await
            .unwrap();
    }
}

/// Everything the feed holds after `after`, up to the durable end.
async fn drain(ledger: &Ledger, after: u64) -> Vec<FeedEvent> {
    let mut subscription = ledger.subscribe(after).unwrap();
    let mut out = Vec::new();
    loop {
        let batch = subscription.next(7, NO_WAIT).await.unwrap();
        if batch.is_empty() {
            return out;
        }
        out.extend(batch);
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_record_is_one_event_in_order_with_the_balances_the_entries_hold() {
    let dir = tempfile::tempdir().unwrap();
    let ledger = Ledger::open(config(dir.path())).unwrap();
    workload(&ledger, 30).await;
    let events = drain(&ledger, 0).await;
    let lsns: Vec<u64> = events.iter().map(|e| e.lsn).collect();
    assert_eq!(
        lsns,
        (1..=lsns.len() as u64).collect::<Vec<_>>(),
        "consecutive from 1"
    );
    assert_eq!(
        events.len(),
        30 * 4,
        "deposit, request, its end, transfer each round"
    );
    let kinds = |name: &str| {
        events
            .iter()
            .filter(|e| serde_json::to_value(&e.body).unwrap()["type"] == name)
            .count()
    };
    assert_eq!(kinds("withdrawal.completed"), 10);
    assert_eq!(kinds("withdrawal.failed"), 10);
    assert_eq!(kinds("withdrawal.cancelled"), 10);
    assert_eq!(kinds("transferred"), 30);
    // Each balance an event shows is the history's entry for that LSN.
    let mut entries = HashMap::new();
    for account in 1..=5 {
        let page = ledger
            .entries(account, Some("USD"), None, 1_000)
            .await
            .unwrap();
        for e in page.items {
            entries.insert((e.account, e.seq), (e.available_after, e.locked_after));
        }
    }
    let mut shown = 0;
    for event in &events {
        assert!(event.balances_known, "{event:?}");
        for b in &event.balances {
            let (available, locked) = entries[&(b.account, event.lsn)];
            assert_eq!((b.available, b.locked), (available, locked), "{event:?}");
            assert_eq!(b.total, available + locked);
            shown += 1;
        }
    }
    assert_eq!(shown, entries.len(), "one balance per entry");
    // The last balance of each account is the live one.
    for account in 1..=5u64 {
        let last = events
            .iter()
            .flat_map(|e| &e.balances)
            .rfind(|b| b.account == account)
            .unwrap();
        let live = ledger.balance(account, "USD").await.unwrap();
        assert_eq!(last.available, live.available);
        assert_eq!(last.locked, live.locked);
    }
    ledger.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_subscription_from_any_position_sees_what_one_from_the_start_saw() {
    let dir = tempfile::tempdir().unwrap();
    let ledger = Ledger::open(config(dir.path())).unwrap();
    workload(&ledger, 40).await;
    let all = drain(&ledger, 0).await;
    for after in [1, 37, 79, 120, 159, 160] {
        let tail = drain(&ledger, after).await;
        assert_eq!(tail, all[after as usize..], "from {after}");
    }
    // The same after a restart (the reader starts from the files alone).
    ledger.shutdown().await;
    let reopened = Ledger::open(config(dir.path())).unwrap();
    assert_eq!(drain(&reopened, 55).await, all[55..]);
    reopened.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn next_waits_on_the_ledgers_clock_for_the_first_durable_event() {
    let dir = tempfile::tempdir().unwrap();
    let clock = ManualClock::new();
    let ledger = Ledger::open(Config {
        clock: clock.shared(),
        ..config(dir.path())
    })
    .unwrap();
    let mut subscription = ledger.subscribe(0).unwrap();
    let waiting = tokio::spawn(async move {
        let got = subscription.next(100, Duration::from_secs(30)).await;
        (got, subscription)
    });
    ledger.deposit(9, "USD", dec("5.00"), None).await.unwrap();
    let (got, mut subscription) = waiting.await.unwrap();
    let got = got.unwrap();
    assert_eq!(got.len(), 1);
    assert!(matches!(
        &got[0].body,
        FeedBody::Deposited { account: 9, .. }
    ));
    // Nothing more: the wait ends when the clock passes it, not before.
    let idle = tokio::spawn(async move { subscription.next(100, Duration::from_secs(30)).await });
    // The engine arms timers of its own on this clock, so which timer is
    // the wait's cannot be told: step the clock until the wait has seen
    // its 30 s pass (a poll bounded by a deadline).
    let deadline = std::time::Instant::now() + Duration::from_secs(20);
    while !idle.is_finished() && std::time::Instant::now() < deadline {
        clock.advance(Duration::from_secs(31));
        tokio::time::sleep(Duration::from_millis(1)).await;
    }
    assert_eq!(idle.await.unwrap().unwrap(), Vec::new());
    ledger.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_record_whose_fsync_failed_is_never_shown_though_its_bytes_are_in_the_file() {
    let dir = tempfile::tempdir().unwrap();
    let config = config(dir.path());
    let fail_point = config.wal_fail_point.clone();
    let ledger = Ledger::open(config).unwrap();
    ledger.deposit(1, "USD", dec("5.00"), None).await.unwrap();
    let wal = dir.path().join("wal");
    let size = |dir: &std::path::Path| -> u64 {
        std::fs::read_dir(dir)
            .unwrap()
            .map(|e| e.unwrap().metadata().unwrap().len())
            .sum()
    };
    let before = size(&wal);
    fail_point.fail_syncs(true);
    let refused = ledger.deposit(1, "USD", dec("7.00"), None).await;
    assert!(
        matches!(refused, Err(LedgerError::Poisoned { .. })),
        "{refused:?}"
    );
    assert!(size(&wal) > before, "the record's bytes reached the file");
    let events = drain(&ledger, 0).await;
    assert_eq!(events.len(), 1, "only the durable deposit: {events:?}");
    assert!(
        matches!(&events[0].body, FeedBody::Deposited { amount, .. } if *amount == dec("5.00"))
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn consumer_cursors_are_durable_and_checked() {
    let dir = tempfile::tempdir().unwrap();
    let ledger = Ledger::open(config(dir.path())).unwrap();
    workload(&ledger, 3).await;
    ledger.ack("mail", 5).await.unwrap();
    ledger.ack("audit", 2).await.unwrap();
    ledger.ack("mail", 7).await.unwrap();
    assert!(matches!(
        ledger.ack("mail", 13).await,
        Err(LedgerError::InvalidCursor { .. })
    ));
    assert!(matches!(
        ledger.ack("../etc", 1).await,
        Err(LedgerError::InvalidConsumer { .. })
    ));
    assert!(matches!(
        ledger.subscribe_consumer("nobody"),
        Err(LedgerError::UnknownConsumer { .. })
    ));
    let from_cursor = ledger.subscribe_consumer("mail").unwrap();
    assert_eq!(from_cursor.position(), 7);
    ledger.shutdown().await;
    let reopened = Ledger::open(config(dir.path())).unwrap();
    let cursors: Vec<(String, u64)> = reopened
        .consumers()
        .unwrap()
        .into_iter()
        .map(|c| (c.name, c.lsn))
        .collect();
    assert_eq!(cursors, vec![("audit".into(), 2), ("mail".into(), 7)]);
    assert!(reopened.remove_consumer("audit").await.unwrap());
    assert!(!reopened.remove_consumer("audit").await.unwrap());
    reopened.shutdown().await;
}

/// Writes until the log has several segments and snapshots prune it.
async fn fill_and_snapshot(ledger: &Ledger) {
    for _ in 0..6 {
        workload(ledger, 150).await;
        ledger.snapshot().await.unwrap();
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_consumer_holds_the_log_until_it_acknowledges_and_the_cap_expires_it() {
    let dir = tempfile::tempdir().unwrap();
    let ledger = Ledger::open(config(dir.path())).unwrap();
    ledger.deposit(1, "USD", dec("1.00"), None).await.unwrap();
    ledger.ack("slow", 1).await.unwrap();
    fill_and_snapshot(&ledger).await;
    // Held: the slow consumer still reads everything after its cursor.
    let tail = drain(&ledger, 1).await;
    assert_eq!(tail.first().map(|e| e.lsn), Some(2));
    ledger.shutdown().await;

    // The same with a byte cap smaller than one segment: past the cap the
    // log is pruned anyway, and the consumer is told its cursor expired.
    let capped_dir = tempfile::tempdir().unwrap();
    let capped = Ledger::open(Config {
        event_retention_bytes: 1,
        ..config(capped_dir.path())
    })
    .unwrap();
    capped.deposit(1, "USD", dec("1.00"), None).await.unwrap();
    capped.ack("slow", 1).await.unwrap();
    fill_and_snapshot(&capped).await;
    let oldest = match capped.subscribe_consumer("slow") {
        Err(LedgerError::CursorExpired { after: 1, oldest }) => oldest,
        other => panic!(
            "expected cursor_expired, got {:?}",
            other.map(|s| s.position())
        ),
    };
    assert!(oldest > 2);
    assert!(matches!(
        capped.ack("slow", 1).await,
        Err(LedgerError::CursorExpired { .. })
    ));
    // Resynchronising: read what is held, move the cursor to its end.
    let held = drain(&capped, oldest - 1).await;
    let end = held.last().unwrap().lsn;
    capped.ack("slow", end).await.unwrap();
    assert_eq!(capped.subscribe_consumer("slow").unwrap().position(), end);
    capped.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_subscription_as_a_stream_yields_each_event_as_it_becomes_durable() {
    use futures_util::StreamExt;
    let dir = tempfile::tempdir().unwrap();
    let ledger = Ledger::open(config(dir.path())).unwrap();
    ledger.deposit(1, "USD", dec("1.00"), None).await.unwrap();
    let stream = ledger.subscribe(0).unwrap().into_stream(2);
    let writer = ledger.clone();
    let writes = tokio::spawn(async move {
        for _ in 0..4 {
            writer.deposit(2, "USD", dec("2.00"), None).await.unwrap();
        }
    });
    let events: Vec<FeedEvent> = stream.take(5).map(|e| e.unwrap()).collect().await;
    writes.await.unwrap();
    let lsns: Vec<u64> = events.iter().map(|e| e.lsn).collect();
    assert_eq!(lsns, [1, 2, 3, 4, 5]);
    let last = &events[4].balances[0];
    assert_eq!((last.account, last.available), (2, dec("8.00")));
    ledger.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_waiting_subscription_reads_what_is_left_then_hears_of_the_shutdown() {
    let dir = tempfile::tempdir().unwrap();
    let ledger = Ledger::open(config(dir.path())).unwrap();
    ledger.deposit(1, "USD", dec("1.00"), None).await.unwrap();
    let mut subscription = ledger.subscribe(0).unwrap();
    // The wait is an hour on the system clock: only the shutdown ends it.
    let waiting = tokio::spawn(async move {
        let first = subscription.next(10, Duration::from_secs(3_600)).await;
        let then = subscription.next(10, Duration::from_secs(3_600)).await;
        (first, then)
    });
    ledger.shutdown().await;
    let (first, then) = waiting.await.unwrap();
    assert_eq!(
        first.unwrap().len(),
        1,
        "the event durable before the shutdown"
    );
    assert_eq!(then, Err(LedgerError::ShuttingDown));
}

// ---- issue 16: fees, partial completions, metadata and account controls ----

/// The fee account of [`exchange_config`].
const FEE_ACCOUNT: u64 = 99;

fn exchange_config(dir: &std::path::Path) -> Config {
    Config {
        fee_account: Some(FEE_ACCOUNT),
        ..config(dir)
    }
}

fn fee(currency: &str, amount: &str) -> Option<FeeRequest> {
    Some(FeeRequest {
        currency: CurrencyCode::new(currency).unwrap(),
        amount: dec(amount),
    })
}

/// Withdrawals with a fee in their own currency and in another, ending
/// completed, partly completed, failed and cancelled; deposits and
/// transfers with metadata; a freeze, its lifting and a tier.
async fn exchange_workload(ledger: &Ledger, rounds: u64) {
    for round in 0..rounds {
        let (a, b) = (1 + round % 4, 1 + (round + 1) % 4);
        let note = Metadata::new([("round", round.to_string())]).unwrap();
        ledger
            .deposit_with(a, "USD", dec("100.00"), None, note.clone())
            .await
            .unwrap();
        ledger.deposit(a, "BTC", dec("0.01"), None).await.unwrap();
        let (amount, fee) = match round % 4 {
            0 | 2 => ("30.00", fee("USD", "1.50")),
            _ => ("20.00", fee("BTC", "0.0001")),
        };
        let options = WithdrawalOptions {
            fee,
            destination: Some(Destination::new("iban", format!("DE{round}"), None).unwrap()),
            metadata: note.clone(),
            expires_in: None,
        };
        let w = ledger
            .request_withdrawal_with(a, "USD", dec(amount), None, options)
            .await
            .unwrap();
        let tx = w.transaction_id;
        match round % 4 {
            0 => {
                let done = WithdrawalOutcome::Completed;
                ledger.complete_withdrawal(tx, done).await.unwrap();
            }
            1 => {
                let part = WithdrawalOutcome::PartlyCompleted { paid: dec("12.50") };
                ledger.complete_withdrawal(tx, part).await.unwrap();
            }
            2 => {
                let failed = WithdrawalOutcome::Failed {
                    reason: "bank said no".into(),
                };
                ledger.complete_withdrawal(tx, failed).await.unwrap();
            }
            _ => {
                ledger.cancel_withdrawal(tx).await.unwrap();
            }
        }
        ledger
            .transfer_with(a, b, "USD", dec("10.00"), None, note)
            .await
            .unwrap();
        if round % 5 == 0 {
            let scope = FreezeScope::Withdrawals;
            ledger
                .freeze_account(b, scope, None, "review")
                .await
                .unwrap();
            ledger.unfreeze_account(b).await.unwrap();
        }
    }
}

/// Every balance an event shows of `accounts` is what the history's
/// entries say after that event's last change to it (one event may change
/// a balance in several parts: a fee locked with the amount, a completion
/// burning, releasing and moving a fee), every such event and balance
/// is shown once, and the last balance shown of every account and
/// currency is the live one (the fee account's too).
async fn check_balances(ledger: &Ledger, events: &[FeedEvent], accounts: &[u64]) {
    // (account, currency, seq) → the balance after each part, in order.
    let mut entries: HashMap<_, Vec<(u8, (Decimal, Decimal))>> = HashMap::new();
    for &account in accounts {
        for currency in ["USD", "BTC"] {
            let page = ledger
                .entries(account, Some(currency), None, 1_000)
                .await
                .unwrap();
            assert!(page.next.is_none(), "one page holds them all");
            for e in page.items {
                let key = (e.account, e.currency, e.seq);
                let after = (e.available_after, e.locked_after);
                entries.entry(key).or_default().push((e.part, after));
            }
        }
    }
    for (key, parts) in &entries {
        let numbers: Vec<u8> = parts.iter().map(|(part, _)| *part).collect();
        let expected: Vec<u8> = (0..).take(parts.len()).collect();
        assert_eq!(numbers, expected, "{key:?}: parts 0, 1, … in order");
    }
    assert!(
        entries.values().any(|parts| parts.len() > 1),
        "the workload changes some balance in several parts"
    );
    let mut shown = 0;
    for event in events {
        assert!(event.balances_known, "{event:?}");
        for b in &event.balances {
            assert_eq!(b.total, b.available + b.locked);
            if !accounts.contains(&b.account) {
                continue;
            }
            let parts = entries
                .get(&(b.account, b.currency, event.lsn))
                .unwrap_or_else(|| panic!("no entry for a balance shown: {event:?}"));
            let last = parts.last().map(|(_, after)| *after);
            assert_eq!(Some((b.available, b.locked)), last, "{event:?}");
            shown += 1;
        }
    }
    assert_eq!(
        shown,
        entries.len(),
        "every event's change to a balance shown"
    );
    for &account in accounts {
        for currency in ["USD", "BTC"] {
            let code = CurrencyCode::new(currency).unwrap();
            let last = events
                .iter()
                .flat_map(|e| &e.balances)
                .rfind(|b| b.account == account && b.currency == code);
            let live = ledger.balance(account, currency).await.unwrap();
            let shown = last.map_or((Decimal::ZERO, Decimal::ZERO), |b| (b.available, b.locked));
            assert_eq!(
                shown,
                (live.available, live.locked),
                "account {account} {currency}"
            );
        }
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn fees_partial_completions_and_controls_show_with_exact_balances() {
    let dir = tempfile::tempdir().unwrap();
    let ledger = Ledger::open(exchange_config(dir.path())).unwrap();
    ledger.set_account_tier(3, "vip").await.unwrap();
    exchange_workload(&ledger, 24).await;
    let events = drain(&ledger, 0).await;
    check_balances(&ledger, &events, &[1, 2, 3, 4]).await;
    // The fee account holds the fees of the completed withdrawals, no more.
    let fees: Decimal = (0..24u64)
        .filter(|round| round % 4 == 0)
        .map(|_| dec("1.50"))
        .sum();
    let collected = |currency: &str| {
        let code = CurrencyCode::new(currency).unwrap();
        events
            .iter()
            .flat_map(|e| &e.balances)
            .rfind(|b| b.account == FEE_ACCOUNT && b.currency == code)
            .map(|b| (b.available, b.locked))
    };
    assert_eq!(collected("USD"), Some((fees, Decimal::ZERO)));
    assert_eq!(
        collected("BTC"),
        Some((dec("0.0006"), Decimal::ZERO)),
        "6 partial completions"
    );
    let json: Vec<serde_json::Value> = events
        .iter()
        .map(|e| serde_json::to_value(e).unwrap())
        .collect();
    let of_type = |name: &str| -> Vec<&serde_json::Value> {
        json.iter().filter(|e| e["type"] == name).collect()
    };
    assert_eq!(of_type("account.tier_set")[0]["tier"], "vip");
    let frozen = of_type("account.frozen");
    assert_eq!(frozen.len(), 5);
    assert_eq!(
        (&frozen[0]["scope"], &frozen[0]["reason"]),
        (&json!("withdrawals"), &json!("review"))
    );
    assert_eq!(of_type("account.unfrozen").len(), 5);
    // The request carries what it was asked with.
    let requested = of_type("withdrawal.requested");
    assert_eq!(
        requested[0]["fee"],
        json!({"currency": "USD", "amount": "1.50"})
    );
    assert_eq!(
        requested[1]["fee"],
        json!({"currency": "BTC", "amount": "0.00010000"})
    );
    assert_eq!(requested[1]["destination"]["value"], "DE1");
    assert_eq!(requested[1]["metadata"], json!({"round": "1"}));
    assert!(requested[0].get("expires_at").is_none());
    assert_eq!(of_type("deposited")[0]["metadata"], json!({"round": "0"}));
    assert_eq!(of_type("transferred")[2]["metadata"], json!({"round": "2"}));
    // Completions say what was paid and where the fee went.
    let completed = of_type("withdrawal.completed");
    assert_eq!(completed.len(), 12);
    assert_eq!(completed[0]["paid"], "30.00");
    assert_eq!(
        completed[0]["fee"],
        json!({"to": FEE_ACCOUNT, "currency": "USD", "amount": "1.50"})
    );
    assert_eq!(
        (&completed[1]["amount"], &completed[1]["paid"]),
        (&json!("20.00"), &json!("12.50"))
    );
    assert_eq!(completed[1]["fee"]["currency"], "BTC");
    // A plain deposit (no metadata) reads as before.
    let plain = of_type("deposited")[1];
    assert_eq!(plain["currency"], "BTC");
    assert!(plain.get("metadata").is_none(), "{plain}");
    ledger.shutdown().await;
}

/// A subscription from the middle learns the balances before it, and the
/// fees and paid amounts of withdrawals made before it, from the history
/// store: it sees what one from the start sees.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_subscription_from_any_position_sees_fees_as_one_from_the_start() {
    let dir = tempfile::tempdir().unwrap();
    let ledger = Ledger::open(exchange_config(dir.path())).unwrap();
    exchange_workload(&ledger, 24).await;
    let events = drain(&ledger, 0).await;
    for after in [1, 40, 101] {
        assert_eq!(
            drain(&ledger, after).await,
            events[after as usize..],
            "from {after}"
        );
    }
    ledger.shutdown().await;
}

/// The fee account's last balance in the feed is its live one.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_fee_accounts_balance_in_the_feed_is_the_live_one() {
    let dir = tempfile::tempdir().unwrap();
    let ledger = Ledger::open(exchange_config(dir.path())).unwrap();
    exchange_workload(&ledger, 8).await;
    let events = drain(&ledger, 0).await;
    check_balances(&ledger, &events, &[1, 2, 3, 4, FEE_ACCOUNT]).await;
    ledger.shutdown().await;
}
