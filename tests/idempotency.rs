//! Black-box tests of idempotency keys through the public `Ledger` handle:
//! replays return the first result and change nothing, other parameters
//! conflict, keys are scoped to the account an operation acts on (a
//! transfer's source), and concurrent retries apply once.

use std::str::FromStr;

use burnledger::actors::coordinator::shard_of;
use burnledger::withdrawal::TransitionAction;
use burnledger::{
    Balance, Config, CurrencyCode, CurrencyConfig, Decimal, IdempotencyKey, Ledger, LedgerError,
    Operation, Outcome, Withdrawal, WithdrawalOutcome, WithdrawalStatus,
};

fn dec(s: &str) -> Decimal {
    Decimal::from_str(s).unwrap()
}

fn code(s: &str) -> CurrencyCode {
    CurrencyCode::new(s).unwrap()
}

fn key(s: &str) -> Option<IdempotencyKey> {
    Some(IdempotencyKey::new(s).unwrap())
}

fn open() -> Ledger {
    Ledger::open(Config::for_tests()).unwrap()
}

fn conflict(k: &str) -> LedgerError {
    LedgerError::IdempotencyConflict { key: k.into() }
}

/// (available, locked, total) of one balance.
async fn balance(ledger: &Ledger, account: u64, currency: &str) -> (Decimal, Decimal, Decimal) {
    let Balance {
        available,
        locked,
        total,
        ..
    } = ledger.balance(account, currency).await.unwrap();
    (available, locked, total)
}

/// Every balance of some accounts plus the ledger-wide sums and withdrawal
/// counts: what a replay or a conflict must leave untouched.
async fn state(ledger: &Ledger, accounts: &[u64]) -> String {
    let mut shown = String::new();
    for &a in accounts {
        shown.push_str(&format!("{a}: {:?}\n", ledger.balances(a).await.unwrap()));
    }
    let audit = ledger.audit().await.unwrap();
    assert!(audit.is_clean(), "{:?}", audit.violations);
    shown.push_str(&format!(
        "{} accounts, {:?}, {:?}",
        audit.accounts, audit.totals, audit.withdrawals_by_status
    ));
    shown
}

async fn assert_clean(ledger: &Ledger) {
    let audit = ledger.audit().await.unwrap();
    assert!(audit.is_clean(), "{:?}", audit.violations);
}

// ---------------------------------------------------------------------------
// Deposits
// ---------------------------------------------------------------------------

#[tokio::test]
async fn a_replayed_deposit_returns_the_first_result_and_changes_nothing() {
    let ledger = open();
    let first = ledger
        .deposit(1, "USD", dec("25"), Some("dep"))
        .await
        .unwrap();
    assert_eq!(first.amount, dec("25"));
    let before = state(&ledger, &[1]).await;
    for amount in ["25", "25.00", "25.000"] {
        let again = ledger
            .deposit(1, "USD", dec(amount), Some("dep"))
            .await
            .unwrap();
        assert_eq!(again, first, "replay with {amount}");
    }
    // The batch form replays the same key too.
    let results = ledger
        .submit(vec![Operation::Deposit {
            account: 1,
            currency: code("USD"),
            amount: dec("25"),
            idempotency_key: key("dep"),
        }])
        .await;
    assert_eq!(results, vec![Ok(Outcome::Deposited(first.clone()))]);
    assert_eq!(state(&ledger, &[1]).await, before);
    assert_eq!(
        balance(&ledger, 1, "USD").await,
        (dec("25"), dec("0"), dec("25"))
    );
    // A deposit without a key is never a replay.
    let other = ledger.deposit(1, "USD", dec("25"), None).await.unwrap();
    assert_ne!(other.transaction_id, first.transaction_id);
    assert_eq!(balance(&ledger, 1, "USD").await.2, dec("50"));
    ledger.shutdown().await;
}

#[tokio::test]
async fn a_deposit_key_reused_with_other_parameters_is_a_conflict() {
    let ledger = open();
    let first = ledger
        .deposit(1, "USD", dec("25"), Some("dep"))
        .await
        .unwrap();
    let before = state(&ledger, &[1, 2]).await;
    for (currency, amount) in [
        ("USD", "26"),
        ("USD", "24.99"),
        ("EUR", "25"),
        ("BTC", "25"),
    ] {
        assert_eq!(
            ledger
                .deposit(1, currency, dec(amount), Some("dep"))
                .await
                .unwrap_err(),
            conflict("dep"),
            "{amount} {currency}"
        );
    }
    // The same key for another kind of operation on the account is a conflict too.
    assert_eq!(
        ledger
            .request_withdrawal(1, "USD", dec("25"), Some("dep"))
            .await
            .unwrap_err(),
        conflict("dep")
    );
    assert_eq!(
        ledger
            .transfer(1, 2, "USD", dec("25"), Some("dep"))
            .await
            .unwrap_err(),
        conflict("dep")
    );
    assert_eq!(state(&ledger, &[1, 2]).await, before);
    // The key still answers with its first result.
    assert_eq!(
        ledger
            .deposit(1, "USD", dec("25"), Some("dep"))
            .await
            .unwrap(),
        first
    );
    ledger.shutdown().await;
}

#[tokio::test]
async fn deposit_keys_are_scoped_to_their_account() {
    let ledger = open();
    let on_one = ledger
        .deposit(1, "USD", dec("25"), Some("shared"))
        .await
        .unwrap();
    // Same key, same parameters, other account: a new deposit.
    let on_two = ledger
        .deposit(2, "USD", dec("25"), Some("shared"))
        .await
        .unwrap();
    // Same key, other parameters, third account: no conflict either.
    let on_three = ledger
        .deposit(3, "EUR", dec("7"), Some("shared"))
        .await
        .unwrap();
    assert_eq!(on_two.account, 2);
    assert_eq!(on_three.account, 3);
    assert_ne!(on_one.transaction_id, on_two.transaction_id);
    assert_eq!(balance(&ledger, 1, "USD").await.2, dec("25"));
    assert_eq!(balance(&ledger, 2, "USD").await.2, dec("25"));
    assert_eq!(balance(&ledger, 3, "EUR").await.2, dec("7"));
    // Each account replays its own first result.
    assert_eq!(
        ledger
            .deposit(2, "USD", dec("25"), Some("shared"))
            .await
            .unwrap(),
        on_two
    );
    assert_eq!(
        ledger
            .deposit(1, "EUR", dec("7"), Some("shared"))
            .await
            .unwrap_err(),
        conflict("shared")
    );
    assert_clean(&ledger).await;
    ledger.shutdown().await;
}

#[tokio::test]
async fn the_same_deposit_key_twice_in_one_batch_applies_once() {
    let ledger = open();
    let op = |amount: &str| Operation::Deposit {
        account: 1,
        currency: code("USD"),
        amount: dec(amount),
        idempotency_key: key("batch-dep"),
    };
    let results = ledger.submit(vec![op("10"), op("10"), op("11")]).await;
    let Ok(Outcome::Deposited(first)) = &results[0] else {
        panic!("{results:?}")
    };
    assert_eq!(results[1], Ok(Outcome::Deposited(first.clone())));
    assert_eq!(results[2], Err(conflict("batch-dep")));
    assert_eq!(
        balance(&ledger, 1, "USD").await,
        (dec("10"), dec("0"), dec("10"))
    );
    assert_clean(&ledger).await;
    ledger.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn fifty_concurrent_deposits_with_one_key_apply_exactly_once() {
    let ledger = open();
    let mut tasks = Vec::new();
    for _ in 0..50 {
        let ledger = ledger.clone();
        tasks.push(tokio::spawn(async move {
            ledger.deposit(1, "USD", dec("12.34"), Some("once")).await
        }));
    }
    let mut results = Vec::new();
    for task in tasks {
        results.push(task.await.unwrap().unwrap());
    }
    assert!(results.iter().all(|d| *d == results[0]), "{results:?}");
    assert_eq!(
        balance(&ledger, 1, "USD").await,
        (dec("12.34"), dec("0"), dec("12.34"))
    );
    let audit = ledger.audit().await.unwrap();
    assert!(audit.is_clean(), "{:?}", audit.violations);
    assert_eq!(audit.totals[&code("USD")].1.deposited, 1234);
    ledger.shutdown().await;
}

// ---------------------------------------------------------------------------
// Withdrawals
// ---------------------------------------------------------------------------

#[tokio::test]
async fn a_replayed_withdrawal_request_returns_the_first_result_and_does_not_lock_again() {
    let ledger = open();
    ledger.deposit(1, "USD", dec("100"), None).await.unwrap();
    let first = ledger
        .request_withdrawal(1, "USD", dec("30"), Some("wd"))
        .await
        .unwrap();
    assert_eq!(first.status, WithdrawalStatus::Pending);
    let before = state(&ledger, &[1]).await;
    for _ in 0..3 {
        assert_eq!(
            ledger
                .request_withdrawal(1, "USD", dec("30"), Some("wd"))
                .await
                .unwrap(),
            first
        );
    }
    assert_eq!(state(&ledger, &[1]).await, before);
    assert_eq!(
        balance(&ledger, 1, "USD").await,
        (dec("70"), dec("30"), dec("100"))
    );
    ledger.shutdown().await;
}

#[tokio::test]
async fn a_withdrawal_key_reused_with_other_parameters_is_a_conflict() {
    let ledger = open();
    ledger.deposit(1, "USD", dec("100"), None).await.unwrap();
    ledger.deposit(1, "EUR", dec("100"), None).await.unwrap();
    let first = ledger
        .request_withdrawal(1, "USD", dec("30"), Some("wd"))
        .await
        .unwrap();
    let before = state(&ledger, &[1]).await;
    for (currency, amount) in [("USD", "31"), ("USD", "29.99"), ("EUR", "30")] {
        assert_eq!(
            ledger
                .request_withdrawal(1, currency, dec(amount), Some("wd"))
                .await
                .unwrap_err(),
            conflict("wd"),
            "{amount} {currency}"
        );
    }
    assert_eq!(
        ledger
            .deposit(1, "USD", dec("30"), Some("wd"))
            .await
            .unwrap_err(),
        conflict("wd")
    );
    assert_eq!(state(&ledger, &[1]).await, before);
    assert_eq!(
        ledger.withdrawal(first.transaction_id).await.unwrap(),
        first
    );
    ledger.shutdown().await;
}

#[tokio::test]
async fn a_withdrawal_replay_after_it_ended_returns_the_first_pending_result_and_does_not_lock_again(
) {
    let ledger = open();
    ledger.deposit(1, "USD", dec("100"), None).await.unwrap();
    for (i, action) in [
        TransitionAction::Complete,
        TransitionAction::Fail,
        TransitionAction::Cancel,
    ]
    .into_iter()
    .enumerate()
    {
        let k = format!("wd-{i}");
        let first = ledger
            .request_withdrawal(1, "USD", dec("10"), Some(&k))
            .await
            .unwrap();
        let tx = first.transaction_id;
        let ended = match action {
            TransitionAction::Complete => ledger
                .complete_withdrawal(tx, WithdrawalOutcome::Completed)
                .await
                .unwrap(),
            TransitionAction::Fail => ledger
                .complete_withdrawal(
                    tx,
                    WithdrawalOutcome::Failed {
                        reason: "declined".into(),
                    },
                )
                .await
                .unwrap(),
            TransitionAction::Cancel => ledger.cancel_withdrawal(tx).await.unwrap(),
            other => panic!("{other} is the payout actor's, not the API's"),
        };
        assert_ne!(ended.status, WithdrawalStatus::Pending);
        let before = state(&ledger, &[1]).await;
        let replay = ledger
            .request_withdrawal(1, "USD", dec("10"), Some(&k))
            .await
            .unwrap();
        assert_eq!(
            replay, first,
            "{action}: the first result, as first returned"
        );
        assert_eq!(replay.status, WithdrawalStatus::Pending);
        // Nothing was locked again, and the withdrawal itself is unchanged.
        assert_eq!(state(&ledger, &[1]).await, before, "{action}");
        assert_eq!(ledger.withdrawal(tx).await.unwrap(), ended);
        assert_eq!(balance(&ledger, 1, "USD").await.1, dec("0"));
    }
    // 10 completed; the failed and the cancelled ones came back.
    assert_eq!(
        balance(&ledger, 1, "USD").await,
        (dec("90"), dec("0"), dec("90"))
    );
    ledger.shutdown().await;
}

#[tokio::test]
async fn a_withdrawal_replay_at_the_pending_cap_returns_its_first_result() {
    let ledger = open();
    let cap = ledger.config().account_pending_withdrawals_max;
    ledger.deposit(1, "USD", dec("100"), None).await.unwrap();
    let mut firsts: Vec<Withdrawal> = Vec::new();
    for i in 0..cap {
        firsts.push(
            ledger
                .request_withdrawal(1, "USD", dec("1"), Some(&format!("cap-{i}")))
                .await
                .unwrap(),
        );
    }
    let before = state(&ledger, &[1]).await;
    for (i, first) in firsts.iter().enumerate() {
        assert_eq!(
            ledger
                .request_withdrawal(1, "USD", dec("1"), Some(&format!("cap-{i}")))
                .await
                .unwrap(),
            *first
        );
    }
    // A new key is refused by the cap.
    assert_eq!(
        ledger
            .request_withdrawal(1, "USD", dec("1"), Some("cap-new"))
            .await
            .unwrap_err(),
        LedgerError::TooManyPendingWithdrawals {
            account: 1,
            limit: cap
        }
    );
    assert_eq!(state(&ledger, &[1]).await, before);
    ledger.shutdown().await;
}

#[tokio::test]
async fn withdrawal_keys_are_scoped_to_their_account() {
    let ledger = open();
    ledger.deposit(1, "USD", dec("100"), None).await.unwrap();
    ledger.deposit(2, "USD", dec("100"), None).await.unwrap();
    let one = ledger
        .request_withdrawal(1, "USD", dec("10"), Some("wd"))
        .await
        .unwrap();
    let two = ledger
        .request_withdrawal(2, "USD", dec("10"), Some("wd"))
        .await
        .unwrap();
    let two_other = ledger
        .request_withdrawal(2, "USD", dec("20"), Some("wd2"))
        .await
        .unwrap();
    assert_ne!(one.transaction_id, two.transaction_id);
    assert_eq!(two.account, 2);
    assert_eq!(two_other.amount, dec("20"));
    assert_eq!(balance(&ledger, 1, "USD").await.1, dec("10"));
    assert_eq!(balance(&ledger, 2, "USD").await.1, dec("30"));
    assert_clean(&ledger).await;
    ledger.shutdown().await;
}

#[tokio::test]
async fn a_refused_operation_does_not_use_up_its_key() {
    let ledger = open();
    // Refused for lack of funds: the key stays free.
    assert!(matches!(
        ledger
            .request_withdrawal(1, "USD", dec("10"), Some("later"))
            .await,
        Err(LedgerError::InsufficientFunds { .. })
    ));
    assert!(matches!(
        ledger.transfer(1, 2, "USD", dec("10"), Some("t")).await,
        Err(LedgerError::InsufficientFunds { .. })
    ));
    ledger.deposit(1, "USD", dec("100"), None).await.unwrap();
    let w = ledger
        .request_withdrawal(1, "USD", dec("10"), Some("later"))
        .await
        .unwrap();
    assert_eq!(w.status, WithdrawalStatus::Pending);
    let t = ledger
        .transfer(1, 2, "USD", dec("10"), Some("t"))
        .await
        .unwrap();
    assert_eq!(t.amount, dec("10"));
    // Refused for an invalid amount: the key stays free for a valid one.
    assert!(matches!(
        ledger.deposit(3, "USD", dec("0"), Some("d")).await,
        Err(LedgerError::InvalidAmount { .. })
    ));
    ledger.deposit(3, "USD", dec("1"), Some("d")).await.unwrap();
    assert_eq!(
        balance(&ledger, 1, "USD").await,
        (dec("80"), dec("10"), dec("90"))
    );
    assert_eq!(balance(&ledger, 2, "USD").await.2, dec("10"));
    assert_eq!(balance(&ledger, 3, "USD").await.2, dec("1"));
    assert_clean(&ledger).await;
    ledger.shutdown().await;
}

#[tokio::test]
async fn a_transfer_refused_by_its_receiver_does_not_use_up_its_key() {
    let ledger = Ledger::open(Config {
        currencies: vec![CurrencyConfig {
            code: "PTS".into(),
            decimals: 0,
            amount_max: dec("10000000000000000000000000000"), // the balance ceiling
        }],
        ..Config::for_tests()
    })
    .unwrap();
    let full = 1u64;
    let ceiling = dec("10000000000000000000000000000");
    ledger.deposit(full, "PTS", ceiling, None).await.unwrap();
    ledger.deposit(2, "PTS", dec("5"), None).await.unwrap();
    let before = state(&ledger, &[1, 2]).await;
    assert!(matches!(
        ledger.transfer(2, full, "PTS", dec("5"), Some("t")).await,
        Err(LedgerError::InvalidAmount { .. })
    ));
    assert_eq!(state(&ledger, &[1, 2]).await, before);
    // Make room, then the same key and parameters go through once.
    let w = ledger
        .request_withdrawal(full, "PTS", dec("5"), None)
        .await
        .unwrap();
    ledger
        .complete_withdrawal(w.transaction_id, WithdrawalOutcome::Completed)
        .await
        .unwrap();
    let t = ledger
        .transfer(2, full, "PTS", dec("5"), Some("t"))
        .await
        .unwrap();
    assert_eq!(
        ledger
            .transfer(2, full, "PTS", dec("5"), Some("t"))
            .await
            .unwrap(),
        t
    );
    assert_eq!(balance(&ledger, 2, "PTS").await.2, dec("0"));
    assert_eq!(balance(&ledger, full, "PTS").await.2, ceiling);
    assert_clean(&ledger).await;
    ledger.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn fifty_concurrent_withdrawal_requests_with_one_key_lock_exactly_once() {
    let ledger = open();
    ledger.deposit(1, "USD", dec("100"), None).await.unwrap();
    let mut tasks = Vec::new();
    for _ in 0..50 {
        let ledger = ledger.clone();
        tasks.push(tokio::spawn(async move {
            ledger
                .request_withdrawal(1, "USD", dec("40"), Some("once"))
                .await
        }));
    }
    let mut results = Vec::new();
    for task in tasks {
        results.push(task.await.unwrap().unwrap());
    }
    assert!(results.iter().all(|w| *w == results[0]), "{results:?}");
    assert_eq!(
        balance(&ledger, 1, "USD").await,
        (dec("60"), dec("40"), dec("100"))
    );
    let audit = ledger.audit().await.unwrap();
    assert!(audit.is_clean(), "{:?}", audit.violations);
    assert_eq!(audit.withdrawals_by_status["pending"], 1);
    ledger.shutdown().await;
}

// ---------------------------------------------------------------------------
// Transfers
// ---------------------------------------------------------------------------

#[tokio::test]
async fn a_replayed_transfer_returns_the_first_result_and_changes_nothing() {
    let ledger = open();
    ledger.deposit(1, "USD", dec("100"), None).await.unwrap();
    let first = ledger
        .transfer(1, 2, "USD", dec("40"), Some("tr"))
        .await
        .unwrap();
    let before = state(&ledger, &[1, 2]).await;
    for _ in 0..3 {
        assert_eq!(
            ledger
                .transfer(1, 2, "USD", dec("40"), Some("tr"))
                .await
                .unwrap(),
            first
        );
    }
    assert_eq!(state(&ledger, &[1, 2]).await, before);
    // Even when the source could no longer afford it.
    ledger.transfer(1, 3, "USD", dec("60"), None).await.unwrap();
    let before_broke = state(&ledger, &[1, 2, 3]).await;
    assert_eq!(
        ledger
            .transfer(1, 2, "USD", dec("40"), Some("tr"))
            .await
            .unwrap(),
        first
    );
    assert_eq!(state(&ledger, &[1, 2, 3]).await, before_broke);
    assert_eq!(balance(&ledger, 1, "USD").await.2, dec("0"));
    assert_eq!(balance(&ledger, 2, "USD").await.2, dec("40"));
    assert_eq!(balance(&ledger, 3, "USD").await.2, dec("60"));
    ledger.shutdown().await;
}

#[tokio::test]
async fn a_transfer_key_reused_with_other_parameters_is_a_conflict() {
    let ledger = open();
    ledger.deposit(1, "USD", dec("100"), None).await.unwrap();
    ledger.deposit(1, "EUR", dec("100"), None).await.unwrap();
    ledger
        .transfer(1, 2, "USD", dec("40"), Some("tr"))
        .await
        .unwrap();
    let before = state(&ledger, &[1, 2, 3]).await;
    for (to, currency, amount) in [
        (2, "USD", "41"),
        (2, "EUR", "40"),
        (3, "USD", "40"),
        (3, "EUR", "1"),
    ] {
        assert_eq!(
            ledger
                .transfer(1, to, currency, dec(amount), Some("tr"))
                .await
                .unwrap_err(),
            conflict("tr"),
            "to {to}, {amount} {currency}"
        );
    }
    assert_eq!(
        ledger
            .request_withdrawal(1, "USD", dec("40"), Some("tr"))
            .await
            .unwrap_err(),
        conflict("tr")
    );
    assert_eq!(state(&ledger, &[1, 2, 3]).await, before);
    ledger.shutdown().await;
}

#[tokio::test]
async fn transfer_keys_are_scoped_to_the_source_account() {
    let ledger = open();
    ledger.deposit(1, "USD", dec("100"), None).await.unwrap();
    ledger.deposit(2, "USD", dec("100"), None).await.unwrap();
    let one_to_two = ledger
        .transfer(1, 2, "USD", dec("10"), Some("tr"))
        .await
        .unwrap();
    // The receiving account does not own the key: it may use it for its
    // own transfer (even to the same destination), withdrawal or deposit.
    let two_to_three = ledger
        .transfer(2, 3, "USD", dec("10"), Some("tr"))
        .await
        .unwrap();
    let two_to_one = ledger
        .transfer(2, 1, "USD", dec("25"), Some("tr-back"))
        .await
        .unwrap();
    ledger
        .request_withdrawal(2, "USD", dec("1"), Some("tr-w"))
        .await
        .unwrap();
    assert_ne!(one_to_two.transaction_id, two_to_three.transaction_id);
    assert_eq!(two_to_three.from, 2);
    assert_eq!(two_to_one.to, 1);
    // Replays stay with their own source.
    assert_eq!(
        ledger
            .transfer(2, 3, "USD", dec("10"), Some("tr"))
            .await
            .unwrap(),
        two_to_three
    );
    assert_eq!(
        ledger
            .transfer(1, 2, "USD", dec("10"), Some("tr"))
            .await
            .unwrap(),
        one_to_two
    );
    // A third account's deposit under the same key is its own.
    ledger
        .deposit(3, "USD", dec("10"), Some("tr"))
        .await
        .unwrap();
    assert_eq!(
        balance(&ledger, 1, "USD").await,
        (dec("115"), dec("0"), dec("115"))
    );
    assert_eq!(
        balance(&ledger, 2, "USD").await,
        (dec("74"), dec("1"), dec("75"))
    );
    assert_eq!(
        balance(&ledger, 3, "USD").await,
        (dec("20"), dec("0"), dec("20"))
    );
    assert_clean(&ledger).await;
    ledger.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn fifty_concurrent_transfers_with_one_key_apply_exactly_once() {
    let ledger = open();
    // Source and destination on different shards, so each transfer spends
    // time in flight between them.
    let from = (1..).find(|&a| shard_of(a, 2) == 0).unwrap();
    let to = (1..).find(|&a| shard_of(a, 2) == 1).unwrap();
    ledger.deposit(from, "USD", dec("100"), None).await.unwrap();
    let mut tasks = Vec::new();
    for _ in 0..50 {
        let ledger = ledger.clone();
        tasks.push(tokio::spawn(async move {
            ledger
                .transfer(from, to, "USD", dec("30"), Some("once"))
                .await
        }));
    }
    let mut receipts = Vec::new();
    for task in tasks {
        match task.await.unwrap() {
            Ok(t) => receipts.push(t),
            // A retry that arrives while the first is still in flight.
            Err(LedgerError::IdempotencyInProgress { key }) => assert_eq!(key, "once"),
            Err(other) => panic!("unexpected error {other:?}"),
        }
    }
    assert!(!receipts.is_empty());
    assert!(receipts.iter().all(|t| *t == receipts[0]), "{receipts:?}");
    // Once settled, every retry gets the first result.
    assert_eq!(
        ledger
            .transfer(from, to, "USD", dec("30"), Some("once"))
            .await
            .unwrap(),
        receipts[0]
    );
    assert_eq!(
        balance(&ledger, from, "USD").await,
        (dec("70"), dec("0"), dec("70"))
    );
    assert_eq!(
        balance(&ledger, to, "USD").await,
        (dec("30"), dec("0"), dec("30"))
    );
    assert_clean(&ledger).await;
    ledger.shutdown().await;
}
