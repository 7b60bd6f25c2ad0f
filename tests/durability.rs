//! Reopening a data folder gives back every acknowledged operation.
//!
//! States are compared as a caller observes them (balances, and every
//! withdrawal as looked up by id), not as memory holds them: either side
//! may have forgotten finished withdrawals its history store holds.

#[path = "common/observed.rs"]
mod observed;

use std::str::FromStr;

use burnledger::{Config, Decimal, Ledger, LedgerError, WithdrawalOutcome, WithdrawalStatus};

fn dec(s: &str) -> Decimal {
    Decimal::from_str(s).unwrap()
}

async fn state(ledger: &Ledger) -> Vec<burnledger::AccountExport> {
    observed::observed_accounts(ledger).await
}

/// Runs a little of everything and returns the withdrawal ids made.
async fn workload(ledger: &Ledger) -> Vec<burnledger::TransactionId> {
    let mut ids = Vec::new();
    for account in 0..20u64 {
        ledger
            .deposit(account, "USD", dec("100.00"), Some("open"))
            .await
            .unwrap();
        ledger
            .deposit(account, "BTC", dec("0.5"), None)
            .await
            .unwrap();
        let w = ledger
            .request_withdrawal(account, "USD", dec("10.01"), None)
            .await
            .unwrap();
        ids.push(w.transaction_id);
        ledger
            .transfer(account, (account + 1) % 20, "BTC", dec("0.1"), Some("t"))
            .await
            .unwrap();
    }
    for (i, id) in ids.iter().enumerate() {
        let outcome = match i % 3 {
            0 => {
                ledger
                    .complete_withdrawal(*id, WithdrawalOutcome::Completed)
                    .await
            }
            1 => {
                ledger
                    .complete_withdrawal(
                        *id,
                        WithdrawalOutcome::Failed {
                            reason: "closed".into(),
                        },
                    )
                    .await
            }
            _ => continue,
        };
        outcome.unwrap();
    }
    ids
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_clean_shutdown_and_reopen_restores_every_account_exactly() {
    let dir = tempfile::tempdir().unwrap();
    let ledger = Ledger::open(Config::for_tests_in(dir.path())).unwrap();
    let ids = workload(&ledger).await;
    let before = state(&ledger).await;
    ledger.shutdown().await;

    let reopened = Ledger::open(Config::for_tests_in(dir.path())).unwrap();
    let report = reopened.recovery_report().unwrap().clone();
    assert!(
        report.snapshot.is_some(),
        "shutdown leaves a snapshot: {report:?}"
    );
    assert_eq!(report.records_replayed, 0);
    assert_eq!(state(&reopened).await, before);
    assert_eq!(
        reopened.withdrawal(ids[0]).await.unwrap().status,
        WithdrawalStatus::Completed
    );
    // Sequence numbers continue: a new withdrawal never reuses an id.
    let next = reopened
        .request_withdrawal(2, "USD", dec("1"), None)
        .await
        .unwrap();
    assert!(!ids.contains(&next.transaction_id));
    // Idempotency keys survive too.
    let replay = reopened
        .deposit(0, "USD", dec("100.00"), Some("open"))
        .await
        .unwrap();
    assert_eq!(replay.amount, dec("100.00"));
    assert_eq!(
        reopened.balance(0, "USD").await.unwrap().total,
        before_total(&before, 0)
    );
    assert!(matches!(
        reopened.deposit(0, "USD", dec("1"), Some("open")).await,
        Err(LedgerError::IdempotencyConflict { .. })
    ));
    assert!(reopened.audit().await.unwrap().is_clean());
    reopened.shutdown().await;
}

fn before_total(accounts: &[burnledger::AccountExport], id: u64) -> Decimal {
    let account = accounts.iter().find(|a| a.id == id).unwrap();
    account.balance("USD").map_or(Decimal::ZERO, |b| b.total)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn dropping_without_shutdown_loses_nothing_acknowledged() {
    let dir = tempfile::tempdir().unwrap();
    let ledger = Ledger::open(Config::for_tests_in(dir.path())).unwrap();
    workload(&ledger).await;
    let before = state(&ledger).await;
    drop(ledger);

    let reopened = Ledger::open(Config::for_tests_in(dir.path())).unwrap();
    let report = reopened.recovery_report().unwrap().clone();
    assert!(report.records_replayed > 0, "{report:?}");
    assert_eq!(state(&reopened).await, before);
    reopened.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn snapshots_on_demand_and_by_event_count_replay_to_the_same_state() {
    let dir = tempfile::tempdir().unwrap();
    // for_tests snapshots every 1,000 events; this workload logs fewer, so
    // take one on demand halfway.
    let ledger = Ledger::open(Config::for_tests_in(dir.path())).unwrap();
    workload(&ledger).await;
    let taken = ledger
        .snapshot()
        .await
        .unwrap()
        .expect("something was logged");
    assert!(taken.lsn > 0);
    workload(&ledger).await;
    let before = state(&ledger).await;
    drop(ledger);

    let reopened = Ledger::open(Config::for_tests_in(dir.path())).unwrap();
    let report = reopened.recovery_report().unwrap().clone();
    assert_eq!(report.snapshot.as_ref().map(|s| s.lsn), Some(taken.lsn));
    assert!(report.records_replayed > 0);
    assert_eq!(state(&reopened).await, before);
    reopened.shutdown().await;
}
