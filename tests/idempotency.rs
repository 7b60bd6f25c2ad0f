//! Black-box tests of idempotency keys through the public `Ledger` handle:
//! replays return the first result and change nothing, other parameters
//! conflict, keys are scoped to the account an operation acts on (a
//! transfer's source), and concurrent retries apply once.

mod common;

use std::fmt::Debug;

use burnledger::domain::withdrawal::TransitionAction;
use burnledger::{Deposit, Ledger, LedgerError, Outcome, Transfer, Withdrawal, WithdrawalStatus};

use common::{
    accounts_on_shard, act, assert_balance, assert_clean, balance, ceiling_currency, clean_audit,
    code, complete, concurrently, conflict, dec, deposit_op, deposited, keyed, open,
    open_with_currencies, request_withdrawal, snapshot, CEILING,
};

/// A deposit under the key `k`, which must succeed (applied or replayed).
async fn keyed_deposit(
    ledger: &Ledger,
    account: u64,
    currency: &str,
    amount: &str,
    k: &str,
) -> Deposit {
    ledger
        .deposit(account, currency, dec(amount), Some(k))
        .await
        .unwrap()
}

/// A withdrawal request under the key `k`, which must succeed (applied or
/// replayed).
async fn keyed_withdrawal(
    ledger: &Ledger,
    account: u64,
    currency: &str,
    amount: &str,
    k: &str,
) -> Withdrawal {
    ledger
        .request_withdrawal(account, currency, dec(amount), Some(k))
        .await
        .unwrap()
}

/// A transfer under the key `k`, which must succeed (applied or replayed).
async fn keyed_transfer(
    ledger: &Ledger,
    from: u64,
    to: u64,
    currency: &str,
    amount: &str,
    k: &str,
) -> Transfer {
    ledger
        .transfer(from, to, currency, dec(amount), Some(k))
        .await
        .unwrap()
}

/// Asserts that `result` was refused as a conflict on the key `k`.
#[track_caller]
fn assert_conflict<T: Debug>(result: Result<T, LedgerError>, k: &str, what: &str) {
    assert_eq!(result.unwrap_err(), conflict(k), "{what}");
}

// ---------------------------------------------------------------------------
// Deposits
// ---------------------------------------------------------------------------

#[tokio::test]
async fn a_replayed_deposit_returns_the_first_result_and_changes_nothing() {
    let ledger = open();
    let first = keyed_deposit(&ledger, 1, "USD", "25", "dep").await;
    assert_eq!(first.amount, dec("25"));
    let before = snapshot(&ledger, &[1], &[]).await;
    for amount in ["25", "25.00"] {
        let again = keyed_deposit(&ledger, 1, "USD", amount, "dep").await;
        assert_eq!(again, first, "replay with {amount}");
    }
    // More places than the currency has is refused before the key is read.
    let over_precise = ledger.deposit(1, "USD", dec("25.000"), Some("dep")).await;
    assert_eq!(over_precise.unwrap_err().code(), "invalid_amount");
    // The batch form replays the same key too.
    let results = ledger
        .submit(vec![keyed(deposit_op(1, "USD", "25"), "dep")])
        .await;
    assert_eq!(results, vec![Ok(Outcome::Deposited(first.clone()))]);
    assert_eq!(snapshot(&ledger, &[1], &[]).await, before);
    assert_balance(&ledger, 1, "USD", ["25", "0", "25"]).await;
    // A deposit without a key is never a replay.
    let other = ledger.deposit(1, "USD", dec("25"), None).await.unwrap();
    assert_ne!(other.transaction_id, first.transaction_id);
    assert_eq!(balance(&ledger, 1, "USD").await.2, dec("50"));
    ledger.shutdown().await;
}

#[tokio::test]
async fn a_deposit_key_reused_with_other_parameters_is_a_conflict() {
    let ledger = open();
    let first = keyed_deposit(&ledger, 1, "USD", "25", "dep").await;
    let before = snapshot(&ledger, &[1, 2], &[]).await;
    for (currency, amount) in [
        ("USD", "26"),
        ("USD", "24.99"),
        ("EUR", "25"),
        ("BTC", "25"),
    ] {
        assert_conflict(
            ledger.deposit(1, currency, dec(amount), Some("dep")).await,
            "dep",
            &format!("{amount} {currency}"),
        );
    }
    // The same key for another kind of operation on the account is a conflict too.
    assert_conflict(
        ledger
            .request_withdrawal(1, "USD", dec("25"), Some("dep"))
            .await,
        "dep",
        "a withdrawal",
    );
    assert_conflict(
        ledger.transfer(1, 2, "USD", dec("25"), Some("dep")).await,
        "dep",
        "a transfer",
    );
    assert_eq!(snapshot(&ledger, &[1, 2], &[]).await, before);
    // The key still answers with its first result.
    assert_eq!(keyed_deposit(&ledger, 1, "USD", "25", "dep").await, first);
    ledger.shutdown().await;
}

#[tokio::test]
async fn deposit_keys_are_scoped_to_their_account() {
    let ledger = open();
    let on_one = keyed_deposit(&ledger, 1, "USD", "25", "shared").await;
    // Same key, same parameters, other account: a new deposit.
    let on_two = keyed_deposit(&ledger, 2, "USD", "25", "shared").await;
    // Same key, other parameters, third account: no conflict either.
    let on_three = keyed_deposit(&ledger, 3, "EUR", "7", "shared").await;
    assert_eq!(on_two.account, 2);
    assert_eq!(on_three.account, 3);
    assert_ne!(on_one.transaction_id, on_two.transaction_id);
    assert_eq!(balance(&ledger, 1, "USD").await.2, dec("25"));
    assert_eq!(balance(&ledger, 2, "USD").await.2, dec("25"));
    assert_eq!(balance(&ledger, 3, "EUR").await.2, dec("7"));
    // Each account replays its own first result.
    assert_eq!(
        keyed_deposit(&ledger, 2, "USD", "25", "shared").await,
        on_two
    );
    assert_conflict(
        ledger.deposit(1, "EUR", dec("7"), Some("shared")).await,
        "shared",
        "other parameters on the first account",
    );
    assert_clean(&ledger).await;
    ledger.shutdown().await;
}

#[tokio::test]
async fn the_same_deposit_key_twice_in_one_batch_applies_once() {
    let ledger = open();
    let op = |amount: &str| keyed(deposit_op(1, "USD", amount), "batch-dep");
    let results = ledger.submit(vec![op("10"), op("10"), op("11")]).await;
    let first = deposited(&results[0]);
    assert_eq!(results[1], Ok(Outcome::Deposited(first.clone())));
    assert_eq!(results[2], Err(conflict("batch-dep")));
    assert_balance(&ledger, 1, "USD", ["10", "0", "10"]).await;
    assert_clean(&ledger).await;
    ledger.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn fifty_concurrent_deposits_with_one_key_apply_exactly_once() {
    let ledger = open();
    let results = concurrently(&ledger, 50, |ledger, _| async move {
        ledger.deposit(1, "USD", dec("12.34"), Some("once")).await
    })
    .await;
    let results: Vec<_> = results.into_iter().map(|r| r.unwrap()).collect();
    assert!(results.iter().all(|d| *d == results[0]), "{results:?}");
    assert_balance(&ledger, 1, "USD", ["12.34", "0", "12.34"]).await;
    let audit = clean_audit(&ledger).await;
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
    let first = keyed_withdrawal(&ledger, 1, "USD", "30", "wd").await;
    assert_eq!(first.status, WithdrawalStatus::Pending);
    let before = snapshot(&ledger, &[1], &[]).await;
    for _ in 0..3 {
        assert_eq!(keyed_withdrawal(&ledger, 1, "USD", "30", "wd").await, first);
    }
    assert_eq!(snapshot(&ledger, &[1], &[]).await, before);
    assert_balance(&ledger, 1, "USD", ["70", "30", "100"]).await;
    ledger.shutdown().await;
}

#[tokio::test]
async fn a_withdrawal_key_reused_with_other_parameters_is_a_conflict() {
    let ledger = open();
    ledger.deposit(1, "USD", dec("100"), None).await.unwrap();
    ledger.deposit(1, "EUR", dec("100"), None).await.unwrap();
    let first = keyed_withdrawal(&ledger, 1, "USD", "30", "wd").await;
    let before = snapshot(&ledger, &[1], &[]).await;
    for (currency, amount) in [("USD", "31"), ("USD", "29.99"), ("EUR", "30")] {
        assert_conflict(
            ledger
                .request_withdrawal(1, currency, dec(amount), Some("wd"))
                .await,
            "wd",
            &format!("{amount} {currency}"),
        );
    }
    assert_conflict(
        ledger.deposit(1, "USD", dec("30"), Some("wd")).await,
        "wd",
        "a deposit",
    );
    assert_eq!(snapshot(&ledger, &[1], &[]).await, before);
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
        let first = keyed_withdrawal(&ledger, 1, "USD", "10", &k).await;
        let tx = first.transaction_id;
        let ended = act(&ledger, tx, action, "declined").await.unwrap();
        assert_ne!(ended.status, WithdrawalStatus::Pending);
        let before = snapshot(&ledger, &[1], &[]).await;
        let replay = keyed_withdrawal(&ledger, 1, "USD", "10", &k).await;
        assert_eq!(
            replay, first,
            "{action}: the first result, as first returned"
        );
        assert_eq!(replay.status, WithdrawalStatus::Pending);
        // Nothing was locked again, and the withdrawal itself is unchanged.
        assert_eq!(snapshot(&ledger, &[1], &[]).await, before, "{action}");
        assert_eq!(ledger.withdrawal(tx).await.unwrap(), ended);
        assert_eq!(balance(&ledger, 1, "USD").await.1, dec("0"));
    }
    // 10 completed; the failed and the cancelled ones came back.
    assert_balance(&ledger, 1, "USD", ["90", "0", "90"]).await;
    ledger.shutdown().await;
}

#[tokio::test]
async fn a_withdrawal_replay_at_the_pending_cap_returns_its_first_result() {
    let ledger = open();
    let cap = ledger.config().account_pending_withdrawals_max;
    ledger.deposit(1, "USD", dec("100"), None).await.unwrap();
    let mut firsts: Vec<Withdrawal> = Vec::new();
    for i in 0..cap {
        firsts.push(keyed_withdrawal(&ledger, 1, "USD", "1", &format!("cap-{i}")).await);
    }
    let before = snapshot(&ledger, &[1], &[]).await;
    for (i, first) in firsts.iter().enumerate() {
        assert_eq!(
            keyed_withdrawal(&ledger, 1, "USD", "1", &format!("cap-{i}")).await,
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
    assert_eq!(snapshot(&ledger, &[1], &[]).await, before);
    ledger.shutdown().await;
}

#[tokio::test]
async fn withdrawal_keys_are_scoped_to_their_account() {
    let ledger = open();
    ledger.deposit(1, "USD", dec("100"), None).await.unwrap();
    ledger.deposit(2, "USD", dec("100"), None).await.unwrap();
    let one = keyed_withdrawal(&ledger, 1, "USD", "10", "wd").await;
    let two = keyed_withdrawal(&ledger, 2, "USD", "10", "wd").await;
    let two_other = keyed_withdrawal(&ledger, 2, "USD", "20", "wd2").await;
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
    let w = keyed_withdrawal(&ledger, 1, "USD", "10", "later").await;
    assert_eq!(w.status, WithdrawalStatus::Pending);
    let t = keyed_transfer(&ledger, 1, 2, "USD", "10", "t").await;
    assert_eq!(t.amount, dec("10"));
    // Refused for an invalid amount: the key stays free for a valid one.
    assert!(matches!(
        ledger.deposit(3, "USD", dec("0"), Some("d")).await,
        Err(LedgerError::InvalidAmount { .. })
    ));
    ledger.deposit(3, "USD", dec("1"), Some("d")).await.unwrap();
    assert_balance(&ledger, 1, "USD", ["80", "10", "90"]).await;
    assert_eq!(balance(&ledger, 2, "USD").await.2, dec("10"));
    assert_eq!(balance(&ledger, 3, "USD").await.2, dec("1"));
    assert_clean(&ledger).await;
    ledger.shutdown().await;
}

#[tokio::test]
async fn a_transfer_refused_by_its_receiver_does_not_use_up_its_key() {
    let ledger = open_with_currencies(vec![ceiling_currency()]);
    let full = 1u64;
    let ceiling = dec(CEILING);
    ledger.deposit(full, "PTS", ceiling, None).await.unwrap();
    ledger.deposit(2, "PTS", dec("5"), None).await.unwrap();
    let before = snapshot(&ledger, &[1, 2], &[]).await;
    assert!(matches!(
        ledger.transfer(2, full, "PTS", dec("5"), Some("t")).await,
        Err(LedgerError::InvalidAmount { .. })
    ));
    assert_eq!(snapshot(&ledger, &[1, 2], &[]).await, before);
    // Make room, then the same key and parameters go through once.
    let w = request_withdrawal(&ledger, full, "PTS", "5").await;
    complete(&ledger, w.transaction_id).await;
    let t = keyed_transfer(&ledger, 2, full, "PTS", "5", "t").await;
    assert_eq!(keyed_transfer(&ledger, 2, full, "PTS", "5", "t").await, t);
    assert_eq!(balance(&ledger, 2, "PTS").await.2, dec("0"));
    assert_eq!(balance(&ledger, full, "PTS").await.2, ceiling);
    assert_clean(&ledger).await;
    ledger.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn fifty_concurrent_withdrawal_requests_with_one_key_lock_exactly_once() {
    let ledger = open();
    ledger.deposit(1, "USD", dec("100"), None).await.unwrap();
    let results = concurrently(&ledger, 50, |ledger, _| async move {
        ledger
            .request_withdrawal(1, "USD", dec("40"), Some("once"))
            .await
    })
    .await;
    let results: Vec<_> = results.into_iter().map(|r| r.unwrap()).collect();
    assert!(results.iter().all(|w| *w == results[0]), "{results:?}");
    assert_balance(&ledger, 1, "USD", ["60", "40", "100"]).await;
    let audit = clean_audit(&ledger).await;
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
    let first = keyed_transfer(&ledger, 1, 2, "USD", "40", "tr").await;
    let before = snapshot(&ledger, &[1, 2], &[]).await;
    for _ in 0..3 {
        assert_eq!(
            keyed_transfer(&ledger, 1, 2, "USD", "40", "tr").await,
            first
        );
    }
    assert_eq!(snapshot(&ledger, &[1, 2], &[]).await, before);
    // Even when the source could no longer afford it.
    ledger.transfer(1, 3, "USD", dec("60"), None).await.unwrap();
    let before_broke = snapshot(&ledger, &[1, 2, 3], &[]).await;
    assert_eq!(
        keyed_transfer(&ledger, 1, 2, "USD", "40", "tr").await,
        first
    );
    assert_eq!(snapshot(&ledger, &[1, 2, 3], &[]).await, before_broke);
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
    keyed_transfer(&ledger, 1, 2, "USD", "40", "tr").await;
    let before = snapshot(&ledger, &[1, 2, 3], &[]).await;
    for (to, currency, amount) in [
        (2, "USD", "41"),
        (2, "EUR", "40"),
        (3, "USD", "40"),
        (3, "EUR", "1"),
    ] {
        assert_conflict(
            ledger
                .transfer(1, to, currency, dec(amount), Some("tr"))
                .await,
            "tr",
            &format!("to {to}, {amount} {currency}"),
        );
    }
    assert_conflict(
        ledger
            .request_withdrawal(1, "USD", dec("40"), Some("tr"))
            .await,
        "tr",
        "a withdrawal",
    );
    assert_eq!(snapshot(&ledger, &[1, 2, 3], &[]).await, before);
    ledger.shutdown().await;
}

#[tokio::test]
async fn transfer_keys_are_scoped_to_the_source_account() {
    let ledger = open();
    ledger.deposit(1, "USD", dec("100"), None).await.unwrap();
    ledger.deposit(2, "USD", dec("100"), None).await.unwrap();
    let one_to_two = keyed_transfer(&ledger, 1, 2, "USD", "10", "tr").await;
    // The receiving account does not own the key: it may use it for its
    // own transfer (even to the same destination), withdrawal or deposit.
    let two_to_three = keyed_transfer(&ledger, 2, 3, "USD", "10", "tr").await;
    let two_to_one = keyed_transfer(&ledger, 2, 1, "USD", "25", "tr-back").await;
    keyed_withdrawal(&ledger, 2, "USD", "1", "tr-w").await;
    assert_ne!(one_to_two.transaction_id, two_to_three.transaction_id);
    assert_eq!(two_to_three.from, 2);
    assert_eq!(two_to_one.to, 1);
    // Replays stay with their own source.
    assert_eq!(
        keyed_transfer(&ledger, 2, 3, "USD", "10", "tr").await,
        two_to_three
    );
    assert_eq!(
        keyed_transfer(&ledger, 1, 2, "USD", "10", "tr").await,
        one_to_two
    );
    // A third account's deposit under the same key is its own.
    keyed_deposit(&ledger, 3, "USD", "10", "tr").await;
    assert_balance(&ledger, 1, "USD", ["115", "0", "115"]).await;
    assert_balance(&ledger, 2, "USD", ["74", "1", "75"]).await;
    assert_balance(&ledger, 3, "USD", ["20", "0", "20"]).await;
    assert_clean(&ledger).await;
    ledger.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn fifty_concurrent_transfers_with_one_key_apply_exactly_once() {
    let ledger = open();
    // Source and destination on different shards, so each transfer spends
    // time in flight between them.
    let from = accounts_on_shard(0, 1, 1)[0];
    let to = accounts_on_shard(1, 1, 1)[0];
    ledger.deposit(from, "USD", dec("100"), None).await.unwrap();
    let results = concurrently(&ledger, 50, |ledger, _| async move {
        ledger
            .transfer(from, to, "USD", dec("30"), Some("once"))
            .await
    })
    .await;
    let mut receipts = Vec::new();
    for result in results {
        match result {
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
        keyed_transfer(&ledger, from, to, "USD", "30", "once").await,
        receipts[0]
    );
    assert_balance(&ledger, from, "USD", ["70", "0", "70"]).await;
    assert_balance(&ledger, to, "USD", ["30", "0", "30"]).await;
    assert_clean(&ledger).await;
    ledger.shutdown().await;
}
