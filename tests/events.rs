//! The event feed through the public `Ledger` API (issue 15): every
//! logged record becomes one event, in LSN order, with the balances after
//! it in log order (checked against the history store's entries, which
//! replay makes); a subscription from any position sees the same events as
//! one from the start; `next` waits for durable events on the ledger's
//! clock; nothing the disk does not have is ever shown (a failing fsync);
//! named consumers' cursors are durable and hold the log back from
//! pruning up to the retention cap, past which they get `cursor_expired`.

mod common;

use std::collections::HashMap;
use std::time::Duration;

use burnledger::clock::ManualClock;
use burnledger::domain::feed::{FeedBody, FeedEvent};
use burnledger::{Config, Ledger, LedgerError, WithdrawalOutcome};
use common::dec;

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
