//! Black-box tests of the core engine through the public `Ledger` handle:
//! every rejection and what it leaves behind, the withdrawal state machine,
//! limits, shutdown and the batch form.

mod common;

use burnledger::domain::withdrawal::{StatusKind, TransitionAction};
use burnledger::{
    AmountProblem, Config, CurrencyConfig, Decimal, IdempotencyKey, Ledger, LedgerError, Operation,
    TransactionId, Withdrawal, WithdrawalOutcome, WithdrawalStatus,
};

use common::{
    act, assert_balance, assert_clean, balance, ceiling_currency, clean_audit, code, complete,
    concurrently, conflict, dec, deposit_op, deposited, insufficient, join_all, open,
    open_uncapped, open_with_currencies, request_withdrawal, snapshot, spawn_each, transfer_op,
    transferred, withdraw_op, withdrawn, CEILING,
};

fn status_after(action: TransitionAction, reason: &str) -> WithdrawalStatus {
    match action {
        TransitionAction::Complete => WithdrawalStatus::Completed,
        TransitionAction::Fail => WithdrawalStatus::Failed {
            reason: reason.to_string(),
        },
        TransitionAction::Cancel => WithdrawalStatus::Cancelled,
        other => panic!("{other} is the payout actor's, not the API's"),
    }
}

/// Asserts that a deposit to account 1, a withdrawal from it and a transfer
/// from it to account 2, of `amount` in `currency`, are each refused with
/// `expected`.
async fn assert_refused_by_every_kind(
    ledger: &Ledger,
    currency: &str,
    amount: Decimal,
    expected: &LedgerError,
) {
    assert_eq!(
        &ledger.deposit(1, currency, amount, None).await.unwrap_err(),
        expected,
        "deposit {amount} in {currency:?}"
    );
    assert_eq!(
        &ledger
            .request_withdrawal(1, currency, amount, None)
            .await
            .unwrap_err(),
        expected,
        "withdrawal {amount} in {currency:?}"
    );
    assert_eq!(
        &ledger
            .transfer(1, 2, currency, amount, None)
            .await
            .unwrap_err(),
        expected,
        "transfer {amount} in {currency:?}"
    );
}

// ---------------------------------------------------------------------------
// Concurrency of the pending burn
// ---------------------------------------------------------------------------

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn thousand_concurrent_withdrawals_of_one_against_a_hundred_lock_exactly_a_hundred() {
    let ledger = open_uncapped();
    ledger.deposit(1, "USD", dec("100"), None).await.unwrap();
    let results = concurrently(&ledger, 1000, |ledger, _| async move {
        ledger.request_withdrawal(1, "USD", dec("1"), None).await
    })
    .await;
    let (mut ok, mut insufficient) = (0, 0);
    for result in results {
        match result {
            Ok(w) => {
                assert_eq!(w.status, WithdrawalStatus::Pending);
                ok += 1;
            }
            Err(LedgerError::InsufficientFunds { .. }) => insufficient += 1,
            Err(LedgerError::TooManyPendingWithdrawals { .. }) => {
                panic!("cap hit: raise it for this test")
            }
            Err(other) => panic!("unexpected error {other}"),
        }
    }
    assert_eq!((ok, insufficient), (100, 900));
    assert_balance(&ledger, 1, "USD", ["0", "100", "100"]).await;
    assert_clean(&ledger).await;
    ledger.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn racing_complete_and_cancel_on_one_withdrawal_let_exactly_one_win() {
    let ledger = open_uncapped();
    ledger.deposit(7, "USD", dec("100"), None).await.unwrap();
    let mut ids = Vec::new();
    for _ in 0..50 {
        ids.push(
            request_withdrawal(&ledger, 7, "USD", "1")
                .await
                .transaction_id,
        );
    }
    let results = concurrently(&ledger, ids.len(), |a, i| {
        let (tx, b) = (ids[i], a.clone());
        async move {
            let complete = tokio::spawn(async move {
                a.complete_withdrawal(tx, WithdrawalOutcome::Completed)
                    .await
            });
            let cancel = tokio::spawn(async move { b.cancel_withdrawal(tx).await });
            (tx, complete.await.unwrap(), cancel.await.unwrap())
        }
    })
    .await;
    let mut completed = 0;
    for (tx, complete, cancel) in results {
        match (complete, cancel) {
            (Ok(w), Err(e)) => {
                assert_eq!(w.status, WithdrawalStatus::Completed);
                assert_eq!(
                    e,
                    LedgerError::InvalidTransition {
                        transaction_id: tx,
                        from: StatusKind::Completed,
                        action: TransitionAction::Cancel,
                    }
                );
                completed += 1;
            }
            (Err(e), Ok(w)) => {
                assert_eq!(w.status, WithdrawalStatus::Cancelled);
                assert_eq!(
                    e,
                    LedgerError::InvalidTransition {
                        transaction_id: tx,
                        from: StatusKind::Cancelled,
                        action: TransitionAction::Complete,
                    }
                );
            }
            other => panic!("exactly one of complete/cancel must win, got {other:?}"),
        }
    }
    // 100 deposited; every completed withdrawal burned 1, every cancelled one
    // returned 1 to available.
    let expected = Decimal::from(100 - completed);
    assert_balance(&ledger, 7, "USD", [expected, dec("0"), expected]).await;
    assert_clean(&ledger).await;
    ledger.shutdown().await;
}

// ---------------------------------------------------------------------------
// Every error kind, each leaving everything unchanged
// ---------------------------------------------------------------------------

#[tokio::test]
async fn insufficient_funds_reports_available_and_requested_and_changes_nothing() {
    let ledger = open();
    ledger.deposit(1, "USD", dec("100"), None).await.unwrap();
    let pending = request_withdrawal(&ledger, 1, "USD", "60").await;
    let before = snapshot(&ledger, &[1, 2], &[pending.transaction_id]).await;

    // Locked funds are not available: 40 left, 50 asked.
    let expected = insufficient("USD", "40", "50");
    assert_eq!(
        ledger
            .request_withdrawal(1, "USD", dec("50"), None)
            .await
            .unwrap_err(),
        expected
    );
    assert_eq!(
        ledger
            .transfer(1, 2, "USD", dec("50"), None)
            .await
            .unwrap_err(),
        expected
    );
    // A currency the account never held has nothing available.
    assert_eq!(
        ledger
            .request_withdrawal(1, "BTC", dec("0.00000001"), None)
            .await
            .unwrap_err(),
        insufficient("BTC", "0", "0.00000001")
    );
    // A never-seen account has nothing at all.
    assert_eq!(
        ledger
            .request_withdrawal(2, "USD", dec("0.01"), None)
            .await
            .unwrap_err(),
        insufficient("USD", "0", "0.01")
    );
    let error = ledger
        .request_withdrawal(1, "USD", dec("50"), None)
        .await
        .unwrap_err();
    assert_eq!(error.code(), "insufficient_funds");
    assert!(error.is_retryable());

    assert_eq!(
        snapshot(&ledger, &[1, 2], &[pending.transaction_id]).await,
        before
    );
    // Exactly what is available still works.
    request_withdrawal(&ledger, 1, "USD", "40").await;
    assert_balance(&ledger, 1, "USD", ["0", "100", "100"]).await;
    assert_clean(&ledger).await;
    ledger.shutdown().await;
}

#[tokio::test]
async fn invalid_amounts_are_rejected_with_their_problem_and_change_nothing() {
    let ledger = open();
    ledger.deposit(1, "USD", dec("100"), None).await.unwrap();
    ledger.deposit(1, "BTC", dec("1"), None).await.unwrap();
    let pending = request_withdrawal(&ledger, 1, "USD", "10").await;
    let before = snapshot(&ledger, &[1, 2], &[pending.transaction_id]).await;

    let cases: Vec<(&str, &str, AmountProblem)> = vec![
        ("USD", "0", AmountProblem::NotPositive),
        ("USD", "0.00", AmountProblem::NotPositive),
        ("USD", "-1", AmountProblem::NotPositive),
        ("USD", "-0.01", AmountProblem::NotPositive),
        (
            "USD",
            "0.001",
            AmountProblem::TooManyDecimals { decimals: 2 },
        ),
        (
            "USD",
            "10.005",
            AmountProblem::TooManyDecimals { decimals: 2 },
        ),
        (
            "BTC",
            "0.000000001",
            AmountProblem::TooManyDecimals { decimals: 8 },
        ),
        (
            "USD",
            "1000000000000.01",
            AmountProblem::AboveMaximum {
                maximum: dec("1000000000000"),
            },
        ),
        (
            "USD",
            "1000000000001",
            AmountProblem::AboveMaximum {
                maximum: dec("1000000000000"),
            },
        ),
        (
            "BTC",
            "1000000000000.00000001",
            AmountProblem::AboveMaximum {
                maximum: dec("1000000000000"),
            },
        ),
    ];
    for (currency, amount, problem) in cases {
        let expected = LedgerError::InvalidAmount {
            amount: dec(amount),
            currency: code(currency),
            problem,
        };
        assert_refused_by_every_kind(&ledger, currency, dec(amount), &expected).await;
        let batch = ledger
            .submit(vec![
                deposit_op(1, currency, amount),
                withdraw_op(1, currency, amount),
                transfer_op(1, 2, currency, amount),
            ])
            .await;
        assert_eq!(batch, vec![Err(expected.clone()); 3]);
        assert_eq!(expected.code(), "invalid_amount");
        assert!(!expected.is_retryable());
    }
    assert_eq!(
        snapshot(&ledger, &[1, 2], &[pending.transaction_id]).await,
        before
    );
    ledger.shutdown().await;
}

#[tokio::test]
async fn amounts_at_the_limits_are_accepted_exactly() {
    let ledger = open();
    // The per-operation maximum itself is allowed; trailing zeros past the
    // currency's decimals are not (the amount's scale is the caller's
    // claim about the currency, and a wrong claim is how money is misread).
    ledger
        .deposit(1, "USD", dec("1000000000000"), None)
        .await
        .unwrap();
    let refused = ledger.deposit(1, "USD", dec("12.500"), None).await;
    assert_eq!(refused.unwrap_err().code(), "invalid_amount");
    let d = ledger.deposit(1, "USD", dec("12.50"), None).await.unwrap();
    assert_eq!(d.amount, dec("12.5"));
    ledger
        .deposit(1, "BTC", dec("0.00000001"), None)
        .await
        .unwrap();
    let usd = "1000000000012.50";
    assert_balance(&ledger, 1, "USD", [usd, "0", usd]).await;
    assert_balance(&ledger, 1, "BTC", ["0.00000001", "0", "0.00000001"]).await;
    assert_eq!(
        ledger
            .balance(1, "USD")
            .await
            .unwrap()
            .available
            .to_string(),
        "1000000000012.50",
        "balances show the currency's decimals"
    );
    assert_clean(&ledger).await;
    ledger.shutdown().await;
}

#[tokio::test]
async fn per_currency_amount_max_is_enforced() {
    let ledger = open_with_currencies(vec![
        CurrencyConfig {
            code: "USD".into(),
            decimals: 2,
            amount_max: dec("100"),
        },
        CurrencyConfig::new("EUR", 2),
    ]);
    ledger.deposit(1, "USD", dec("100"), None).await.unwrap();
    let before = snapshot(&ledger, &[1], &[]).await;
    assert_eq!(
        ledger
            .deposit(1, "USD", dec("100.01"), None)
            .await
            .unwrap_err(),
        LedgerError::InvalidAmount {
            amount: dec("100.01"),
            currency: code("USD"),
            problem: AmountProblem::AboveMaximum {
                maximum: dec("100")
            },
        }
    );
    assert_eq!(snapshot(&ledger, &[1], &[]).await, before);
    // Other currencies keep the default limit.
    ledger.deposit(1, "EUR", dec("1000"), None).await.unwrap();
    ledger.shutdown().await;
}

/// USD and a currency whose per-operation maximum is the balance ceiling
/// itself, so the ceiling can be reached in one deposit.
fn open_with_ceiling_currency() -> Ledger {
    open_with_currencies(vec![CurrencyConfig::new("USD", 2), ceiling_currency()])
}

#[tokio::test]
async fn balance_above_maximum_is_refused_for_deposits_and_incoming_transfers() {
    let ledger = open_with_ceiling_currency();
    let ceiling = dec(CEILING);
    // Two accounts on different shards and two on the same shard as the full one.
    let full = 1u64;
    ledger.deposit(full, "PTS", ceiling, None).await.unwrap();
    let mut senders = Vec::new();
    for other in 2..40u64 {
        ledger.deposit(other, "PTS", dec("5"), None).await.unwrap();
        senders.push(other);
    }
    let mut accounts = vec![full];
    accounts.extend(&senders);
    let before = snapshot(&ledger, &accounts, &[]).await;

    let expected = LedgerError::InvalidAmount {
        amount: dec("1"),
        currency: code("PTS"),
        problem: AmountProblem::BalanceAboveMaximum { maximum: ceiling },
    };
    assert_eq!(
        ledger
            .deposit(full, "PTS", dec("1"), None)
            .await
            .unwrap_err(),
        expected
    );
    // The receiving side refuses; the source gets its funds back.
    for &sender in &senders {
        assert_eq!(
            ledger
                .transfer(sender, full, "PTS", dec("1"), None)
                .await
                .unwrap_err(),
            expected,
            "transfer from {sender}"
        );
    }
    assert_eq!(snapshot(&ledger, &accounts, &[]).await, before);

    // Once the full account has room again, the same credit goes through.
    let w = request_withdrawal(&ledger, full, "PTS", "1").await;
    // Locked funds still count toward the ceiling.
    assert_eq!(
        ledger
            .deposit(full, "PTS", dec("1"), None)
            .await
            .unwrap_err(),
        expected
    );
    complete(&ledger, w.transaction_id).await;
    ledger
        .transfer(senders[0], full, "PTS", dec("1"), None)
        .await
        .unwrap();
    assert_eq!(balance(&ledger, full, "PTS").await.2, ceiling);
    assert_clean(&ledger).await;
    ledger.shutdown().await;
}

#[tokio::test]
async fn unknown_currencies_are_rejected_whether_well_formed_or_malformed() {
    let ledger = open();
    ledger.deposit(1, "USD", dec("100"), None).await.unwrap();
    let before = snapshot(&ledger, &[1, 2], &[]).await;
    for currency in ["XYZ", "usd", "Usd", "", "TOOLONGCODE", "US D", "€"] {
        let expected = LedgerError::UnknownCurrency {
            currency: currency.to_string(),
        };
        assert_refused_by_every_kind(&ledger, currency, dec("1"), &expected).await;
        assert_eq!(
            ledger.balance(1, currency).await.unwrap_err(),
            expected,
            "balance in {currency:?}"
        );
        assert_eq!(expected.code(), "unknown_currency");
    }
    // Through the batch form, a well-formed but unconfigured code.
    assert_eq!(
        ledger.submit(vec![deposit_op(1, "XYZ", "1")]).await,
        vec![Err(LedgerError::UnknownCurrency {
            currency: "XYZ".into()
        })]
    );
    assert_eq!(snapshot(&ledger, &[1, 2], &[]).await, before);
    ledger.shutdown().await;
}

#[tokio::test]
async fn unknown_withdrawals_are_rejected_for_made_up_ids_and_for_other_transactions() {
    let ledger = open();
    let dep = ledger.deposit(1, "USD", dec("100"), None).await.unwrap();
    let tr = ledger.transfer(1, 2, "USD", dec("10"), None).await.unwrap();
    let pending = request_withdrawal(&ledger, 1, "USD", "10").await;
    let before = snapshot(&ledger, &[1, 2], &[pending.transaction_id]).await;

    let mut made_up = vec![
        // An account that never existed.
        TransactionId::new(0xdead_beef, 1),
        TransactionId::new(u64::MAX, u64::MAX),
        // An existing account, a sequence it never used.
        TransactionId::new(1, 999),
        // Ids of a deposit, of a transfer, and of the receiving account.
        dep.transaction_id,
        tr.transaction_id,
        TransactionId::new(2, pending.transaction_id.sequence()),
        "0123456789abcdef0123456789abcdef".parse().unwrap(),
    ];
    // Random ids (seeded, so a failure reproduces), on random accounts and
    // on the accounts that exist.
    let mut seed = 0x9e37_79b9_7f4a_7c15u64;
    for i in 0..30u64 {
        seed ^= seed << 13;
        seed ^= seed >> 7;
        seed ^= seed << 17;
        let account = if i % 3 == 0 { 1 + i % 2 } else { seed >> 1 };
        let tx = TransactionId::new(account, seed.rotate_left(17) | 1 << 40);
        made_up.push(tx);
    }
    for tx in made_up {
        let expected = LedgerError::UnknownWithdrawal { transaction_id: tx };
        for action in [
            TransitionAction::Complete,
            TransitionAction::Fail,
            TransitionAction::Cancel,
        ] {
            assert_eq!(
                act(&ledger, tx, action, "refused").await.unwrap_err(),
                expected,
                "{action} {tx:?}"
            );
        }
        assert_eq!(ledger.withdrawal(tx).await.unwrap_err(), expected);
        assert_eq!(expected.code(), "unknown_withdrawal");
    }
    assert_eq!(
        snapshot(&ledger, &[1, 2], &[pending.transaction_id]).await,
        before
    );
    ledger.shutdown().await;
}

#[tokio::test]
async fn invalid_transition_reports_state_and_action_and_changes_nothing() {
    let ledger = open();
    ledger.deposit(1, "USD", dec("100"), None).await.unwrap();
    let w = request_withdrawal(&ledger, 1, "USD", "30").await;
    let tx = w.transaction_id;
    complete(&ledger, tx).await;
    let before = snapshot(&ledger, &[1], &[tx]).await;
    let error = ledger.cancel_withdrawal(tx).await.unwrap_err();
    assert_eq!(
        error,
        LedgerError::InvalidTransition {
            transaction_id: tx,
            from: StatusKind::Completed,
            action: TransitionAction::Cancel,
        }
    );
    assert_eq!(error.code(), "invalid_transition");
    assert!(!error.is_retryable());
    assert_eq!(snapshot(&ledger, &[1], &[tx]).await, before);
    ledger.shutdown().await;
}

#[tokio::test]
async fn idempotency_conflict_changes_nothing() {
    let ledger = open();
    let first = ledger
        .deposit(1, "USD", dec("100"), Some("dep-1"))
        .await
        .unwrap();
    let before = snapshot(&ledger, &[1], &[]).await;
    let error = ledger
        .deposit(1, "USD", dec("101"), Some("dep-1"))
        .await
        .unwrap_err();
    assert_eq!(error, conflict("dep-1"));
    assert_eq!(error.code(), "idempotency_conflict");
    assert!(!error.is_retryable());
    assert_eq!(snapshot(&ledger, &[1], &[]).await, before);
    // The first result is still what the key gives.
    assert_eq!(
        ledger
            .deposit(1, "USD", dec("100"), Some("dep-1"))
            .await
            .unwrap(),
        first
    );
    assert_eq!(snapshot(&ledger, &[1], &[]).await, before);
    ledger.shutdown().await;
}

#[tokio::test]
async fn pending_withdrawals_are_capped_per_account_and_a_terminal_state_frees_a_slot() {
    let ledger = open();
    let cap = ledger.config().account_pending_withdrawals_max;
    assert_eq!(cap, 8);
    ledger.deposit(1, "USD", dec("100"), None).await.unwrap();
    ledger.deposit(2, "USD", dec("100"), None).await.unwrap();
    let mut pending = Vec::new();
    for _ in 0..cap {
        pending.push(
            ledger
                .request_withdrawal(1, "USD", dec("1"), None)
                .await
                .unwrap()
                .transaction_id,
        );
    }
    let before = snapshot(&ledger, &[1, 2], &pending).await;
    let expected = LedgerError::TooManyPendingWithdrawals {
        account: 1,
        limit: cap,
    };
    let error = ledger
        .request_withdrawal(1, "USD", dec("1"), None)
        .await
        .unwrap_err();
    assert_eq!(error, expected);
    assert_eq!(error.code(), "too_many_pending_withdrawals");
    assert!(error.is_retryable());
    // Any currency counts toward the same cap; funds do not matter.
    ledger.deposit(1, "EUR", dec("5"), None).await.unwrap();
    assert_eq!(
        ledger
            .request_withdrawal(1, "EUR", dec("1"), None)
            .await
            .unwrap_err(),
        expected
    );
    assert_eq!(
        ledger
            .request_withdrawal(1, "USD", dec("1000"), None)
            .await
            .unwrap_err(),
        expected,
        "the cap is checked before funds"
    );
    let mut after = snapshot(&ledger, &[1, 2], &pending).await;
    // Only the EUR deposit changed: drop it and compare the rest.
    after.balances[0].1.retain(|b| b.currency != code("EUR"));
    after.totals.remove(&code("EUR"));
    assert_eq!(after, before);

    // Another account is not affected.
    request_withdrawal(&ledger, 2, "USD", "1").await;

    // Each terminal state frees one slot, and only one.
    for (tx, action) in pending.iter().zip([
        TransitionAction::Complete,
        TransitionAction::Fail,
        TransitionAction::Cancel,
    ]) {
        act(&ledger, *tx, action, "refused").await.unwrap();
        request_withdrawal(&ledger, 1, "USD", "1").await;
        assert_eq!(
            ledger
                .request_withdrawal(1, "USD", dec("1"), None)
                .await
                .unwrap_err(),
            expected
        );
    }
    assert_clean(&ledger).await;
    ledger.shutdown().await;
}

/// One shard that admits at most 4 operations at once.
fn open_tiny_shard() -> Ledger {
    Ledger::open(Config {
        shards: 1,
        shard_in_flight_ops_max: 4,
        ..Config::for_tests()
    })
    .unwrap()
}

#[tokio::test]
async fn a_batch_larger_than_the_shard_in_flight_limit_is_refused_whole_as_overloaded() {
    let ledger = open_tiny_shard();
    ledger.deposit(1, "USD", dec("100"), None).await.unwrap();
    let w = request_withdrawal(&ledger, 1, "USD", "10").await;
    let before = snapshot(&ledger, &[1, 2, 3], &[w.transaction_id]).await;

    let batch = vec![
        deposit_op(1, "USD", "1"),
        deposit_op(2, "USD", "1"),
        withdraw_op(1, "USD", "1"),
        transfer_op(1, 3, "USD", "1"),
        Operation::CompleteWithdrawal {
            transaction_id: w.transaction_id,
            outcome: WithdrawalOutcome::Completed,
        },
    ];
    let expected = LedgerError::Overloaded { shard: 0, limit: 4 };
    let results = ledger.submit(batch.clone()).await;
    assert_eq!(results, vec![Err(expected.clone()); 5]);
    assert_eq!(expected.code(), "overloaded");
    assert!(expected.is_retryable());
    assert_eq!(
        snapshot(&ledger, &[1, 2, 3], &[w.transaction_id]).await,
        before
    );

    // The refused batch gave its room back: a batch of exactly the limit runs.
    let results = ledger.submit(batch[..4].to_vec()).await;
    assert!(results.iter().all(Result::is_ok), "{results:?}");
    assert_balance(&ledger, 1, "USD", ["89", "11", "100"]).await;
    assert_balance(&ledger, 2, "USD", ["1", "0", "1"]).await;
    assert_balance(&ledger, 3, "USD", ["1", "0", "1"]).await;
    assert_clean(&ledger).await;
    ledger.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn concurrent_load_past_the_in_flight_limit_is_refused_never_lost_or_queued() {
    let ledger = open_tiny_shard();
    let batches = concurrently(&ledger, 400, |ledger, _| async move {
        ledger
            .submit(vec![deposit_op(1, "USD", "1"), deposit_op(2, "USD", "1")])
            .await
    })
    .await;
    let (mut ok, mut overloaded) = (0u32, 0u32);
    for results in batches {
        // A batch is admitted to a shard whole or not at all.
        match results.as_slice() {
            [Ok(_), Ok(_)] => ok += 1,
            [Err(a), Err(b)] => {
                assert_eq!(a, &LedgerError::Overloaded { shard: 0, limit: 4 });
                assert_eq!(a, b);
                overloaded += 1;
            }
            other => panic!("half a batch admitted: {other:?}"),
        }
    }
    assert_eq!(ok + overloaded, 400);
    let applied = Decimal::from(ok);
    assert_balance(&ledger, 1, "USD", [applied, dec("0"), applied]).await;
    assert_balance(&ledger, 2, "USD", [applied, dec("0"), applied]).await;
    assert_clean(&ledger).await;
    ledger.shutdown().await;
}

#[tokio::test]
async fn after_shutdown_every_call_on_every_clone_is_refused_as_shutting_down() {
    let ledger = open();
    ledger.deposit(1, "USD", dec("100"), None).await.unwrap();
    let w = ledger
        .request_withdrawal(1, "USD", dec("10"), Some("w"))
        .await
        .unwrap();
    let tx = w.transaction_id;
    let clone = ledger.clone();
    ledger.shutdown().await;

    for l in [&ledger, &clone] {
        let sd = LedgerError::ShuttingDown;
        assert_eq!(l.deposit(1, "USD", dec("1"), None).await.unwrap_err(), sd);
        assert_eq!(l.deposit(9, "USD", dec("1"), None).await.unwrap_err(), sd);
        assert_eq!(
            l.request_withdrawal(1, "USD", dec("1"), None)
                .await
                .unwrap_err(),
            sd
        );
        // Even an idempotent replay: nothing answers any more.
        assert_eq!(
            l.request_withdrawal(1, "USD", dec("10"), Some("w"))
                .await
                .unwrap_err(),
            sd
        );
        assert_eq!(
            l.complete_withdrawal(tx, WithdrawalOutcome::Completed)
                .await
                .unwrap_err(),
            sd
        );
        assert_eq!(
            l.complete_withdrawal(tx, WithdrawalOutcome::Failed { reason: "x".into() })
                .await
                .unwrap_err(),
            sd
        );
        assert_eq!(l.cancel_withdrawal(tx).await.unwrap_err(), sd);
        assert_eq!(
            l.transfer(1, 2, "USD", dec("1"), None).await.unwrap_err(),
            sd
        );
        assert_eq!(l.withdrawal(tx).await.unwrap_err(), sd);
        assert_eq!(l.balance(1, "USD").await.unwrap_err(), sd);
        assert_eq!(l.balances(1).await.unwrap_err(), sd);
        assert_eq!(
            l.submit(vec![deposit_op(1, "USD", "1"), deposit_op(2, "EUR", "1")])
                .await,
            vec![Err(sd.clone()), Err(sd.clone())]
        );
        assert_eq!(l.audit().await.unwrap_err(), sd);
        assert_eq!(l.export_accounts().await.unwrap_err(), sd);
        assert_eq!(sd.code(), "shutting_down");
        assert!(!sd.is_retryable());
    }
    // Shutting down again is harmless.
    clone.shutdown().await;
    ledger.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn shutdown_under_load_answers_every_operation_with_a_result_or_shutting_down() {
    let ledger = open_uncapped();
    ledger.deposit(1, "USD", dec("1000"), None).await.unwrap();
    let tasks = spawn_each(&ledger, 500, |ledger, i| async move {
        let i = i as u64;
        match i % 3 {
            0 => ledger.deposit(i, "USD", dec("1"), None).await.map(|_| ()),
            1 => ledger
                .transfer(1, 1000 + i, "USD", dec("1"), None)
                .await
                .map(|_| ()),
            _ => ledger
                .request_withdrawal(1, "USD", dec("1"), None)
                .await
                .map(|_| ()),
        }
    });
    ledger.shutdown().await;
    for result in join_all(tasks).await {
        match result {
            Ok(()) | Err(LedgerError::ShuttingDown) => {}
            Err(other) => panic!("unexpected error during shutdown: {other:?}"),
        }
    }
    assert_eq!(
        ledger.deposit(1, "USD", dec("1"), None).await.unwrap_err(),
        LedgerError::ShuttingDown
    );
}

#[tokio::test]
async fn invalid_input_is_rejected_with_a_reason_and_changes_nothing() {
    let ledger = open();
    ledger.deposit(1, "USD", dec("100"), None).await.unwrap();
    let w = request_withdrawal(&ledger, 1, "USD", "10").await;
    let tx = w.transaction_id;
    let before = snapshot(&ledger, &[1, 2], &[tx]).await;
    let is_invalid_input = |e: LedgerError, what: &str| match e {
        LedgerError::InvalidInput { reason } => assert!(!reason.is_empty(), "{what}"),
        other => panic!("{what}: expected invalid_input, got {other:?}"),
    };

    // A transfer to its own source account.
    is_invalid_input(
        ledger
            .transfer(1, 1, "USD", dec("1"), None)
            .await
            .unwrap_err(),
        "transfer to self",
    );
    assert!(matches!(
        ledger.submit(vec![transfer_op(1, 1, "USD", "1")]).await[..],
        [Err(LedgerError::InvalidInput { .. })]
    ));

    // Idempotency keys: 1 to 128 bytes.
    let long_key = "k".repeat(129);
    for k in [long_key.as_str(), ""] {
        let bad_key = LedgerError::InvalidIdempotencyKey {
            length: k.len(),
            max: 128,
        };
        assert_eq!(
            ledger
                .deposit(1, "USD", dec("1"), Some(k))
                .await
                .unwrap_err(),
            bad_key,
            "deposit key",
        );
        assert_eq!(
            ledger
                .request_withdrawal(1, "USD", dec("1"), Some(k))
                .await
                .unwrap_err(),
            bad_key,
            "withdrawal key",
        );
        assert_eq!(
            ledger
                .transfer(1, 2, "USD", dec("1"), Some(k))
                .await
                .unwrap_err(),
            bad_key,
            "transfer key",
        );
        assert!(IdempotencyKey::new(k).is_err());
    }

    // A failure reason longer than 256 bytes, in ASCII and in multi-byte text.
    for reason in ["r".repeat(257), "é".repeat(129)] {
        is_invalid_input(
            ledger
                .complete_withdrawal(tx, WithdrawalOutcome::Failed { reason })
                .await
                .unwrap_err(),
            "long reason",
        );
    }

    // A batch larger than batch_ops_max: every op is refused.
    let max = ledger.config().batch_ops_max;
    assert_eq!(max, 1024);
    let results = ledger
        .submit(vec![deposit_op(1, "USD", "1"); max + 1])
        .await;
    assert_eq!(results.len(), max + 1);
    for result in results {
        is_invalid_input(result.unwrap_err(), "oversized batch");
    }
    let error = LedgerError::InvalidInput { reason: "x".into() };
    assert_eq!(error.code(), "invalid_input");
    assert!(!error.is_retryable());

    assert_eq!(snapshot(&ledger, &[1, 2], &[tx]).await, before);

    // The limits themselves are accepted.
    let max_key = "k".repeat(128);
    ledger
        .deposit(1, "USD", dec("1"), Some(&max_key))
        .await
        .unwrap();
    let reason = "r".repeat(256);
    let failed = ledger
        .complete_withdrawal(
            tx,
            WithdrawalOutcome::Failed {
                reason: reason.clone(),
            },
        )
        .await
        .unwrap();
    assert_eq!(failed.status, WithdrawalStatus::Failed { reason });
    let results = ledger.submit(vec![deposit_op(2, "USD", "1"); max]).await;
    assert!(results.iter().all(Result::is_ok));
    assert_eq!(
        balance(&ledger, 2, "USD").await.2,
        Decimal::from(max as u64)
    );
    assert_clean(&ledger).await;
    ledger.shutdown().await;
}

// ---------------------------------------------------------------------------
// The withdrawal state machine
// ---------------------------------------------------------------------------

#[tokio::test]
async fn request_withdrawal_locks_the_amount_and_reports_it_pending() {
    let ledger = open();
    ledger.deposit(1, "USD", dec("100"), None).await.unwrap();
    let w = request_withdrawal(&ledger, 1, "USD", "30.25").await;
    assert_eq!(w.account, 1);
    assert_eq!(w.transaction_id.account(), 1);
    assert_eq!(w.currency, code("USD"));
    assert_eq!(w.amount, dec("30.25"));
    assert_eq!(w.status, WithdrawalStatus::Pending);
    assert_eq!(ledger.withdrawal(w.transaction_id).await.unwrap(), w);
    assert_balance(&ledger, 1, "USD", ["69.75", "30.25", "100"]).await;
    assert_clean(&ledger).await;
    ledger.shutdown().await;
}

#[tokio::test]
async fn completing_a_pending_withdrawal_removes_the_locked_amount_from_the_total() {
    let ledger = open();
    ledger.deposit(1, "USD", dec("100"), None).await.unwrap();
    let w = request_withdrawal(&ledger, 1, "USD", "30").await;
    let done = complete(&ledger, w.transaction_id).await;
    assert_eq!(
        done,
        Withdrawal {
            status: WithdrawalStatus::Completed,
            ..w.clone()
        }
    );
    assert_eq!(ledger.withdrawal(w.transaction_id).await.unwrap(), done);
    assert_balance(&ledger, 1, "USD", ["70", "0", "70"]).await;
    let audit = clean_audit(&ledger).await;
    assert_eq!(audit.withdrawals_by_status["completed"], 1);
    assert_eq!(audit.withdrawals_by_status["pending"], 0);
    ledger.shutdown().await;
}

#[tokio::test]
async fn failing_a_pending_withdrawal_returns_the_amount_to_available_and_keeps_the_reason() {
    let ledger = open();
    ledger.deposit(1, "USD", dec("100"), None).await.unwrap();
    let w = request_withdrawal(&ledger, 1, "USD", "30").await;
    let failed = ledger
        .complete_withdrawal(
            w.transaction_id,
            WithdrawalOutcome::Failed {
                reason: "bank refused: account closed".into(),
            },
        )
        .await
        .unwrap();
    let expected = WithdrawalStatus::Failed {
        reason: "bank refused: account closed".into(),
    };
    assert_eq!(failed.status, expected);
    assert_eq!(
        ledger.withdrawal(w.transaction_id).await.unwrap().status,
        expected
    );
    assert_balance(&ledger, 1, "USD", ["100", "0", "100"]).await;
    assert_clean(&ledger).await;
    ledger.shutdown().await;
}

#[tokio::test]
async fn cancelling_a_pending_withdrawal_returns_the_amount_to_available() {
    let ledger = open();
    ledger.deposit(1, "BTC", dec("1"), None).await.unwrap();
    let w = request_withdrawal(&ledger, 1, "BTC", "0.25").await;
    assert_balance(&ledger, 1, "BTC", ["0.75", "0.25", "1"]).await;
    let cancelled = ledger.cancel_withdrawal(w.transaction_id).await.unwrap();
    assert_eq!(cancelled.status, WithdrawalStatus::Cancelled);
    assert_eq!(
        ledger.withdrawal(w.transaction_id).await.unwrap().status,
        WithdrawalStatus::Cancelled
    );
    assert_balance(&ledger, 1, "BTC", ["1", "0", "1"]).await;
    assert_clean(&ledger).await;
    ledger.shutdown().await;
}

#[tokio::test]
async fn repeating_the_terminal_update_returns_the_current_state_and_changes_nothing() {
    let ledger = open();
    ledger.deposit(1, "USD", dec("100"), None).await.unwrap();
    for action in [
        TransitionAction::Complete,
        TransitionAction::Fail,
        TransitionAction::Cancel,
    ] {
        let w = request_withdrawal(&ledger, 1, "USD", "10").await;
        let tx = w.transaction_id;
        let first = act(&ledger, tx, action, "first reason").await.unwrap();
        assert_eq!(first.status, status_after(action, "first reason"));
        let before = snapshot(&ledger, &[1], &[tx]).await;
        for _ in 0..3 {
            // A repeated failure keeps the first reason.
            let again = act(&ledger, tx, action, "second reason").await.unwrap();
            assert_eq!(again, first, "{action} repeated");
        }
        assert_eq!(snapshot(&ledger, &[1], &[tx]).await, before, "{action}");
    }
    // 10 completed; the failed and cancelled ones came back.
    assert_balance(&ledger, 1, "USD", ["90", "0", "90"]).await;
    assert_clean(&ledger).await;
    ledger.shutdown().await;
}

#[tokio::test]
async fn conflicting_updates_of_terminal_withdrawals_are_invalid_transitions() {
    let ledger = open();
    ledger.deposit(1, "USD", dec("100"), None).await.unwrap();
    let all = [
        TransitionAction::Complete,
        TransitionAction::Fail,
        TransitionAction::Cancel,
    ];
    let mut checked = 0;
    for terminal in all {
        let tx = ledger
            .request_withdrawal(1, "USD", dec("10"), None)
            .await
            .unwrap()
            .transaction_id;
        act(&ledger, tx, terminal, "first reason").await.unwrap();
        let before = snapshot(&ledger, &[1], &[tx]).await;
        for action in all.into_iter().filter(|a| *a != terminal) {
            assert_eq!(
                act(&ledger, tx, action, "late reason").await.unwrap_err(),
                LedgerError::InvalidTransition {
                    transaction_id: tx,
                    from: terminal.target(),
                    action,
                },
                "{} then {action}",
                terminal.target()
            );
            // Also through the batch form.
            let op = match action {
                TransitionAction::Complete => Operation::CompleteWithdrawal {
                    transaction_id: tx,
                    outcome: WithdrawalOutcome::Completed,
                },
                TransitionAction::Fail => Operation::CompleteWithdrawal {
                    transaction_id: tx,
                    outcome: WithdrawalOutcome::Failed {
                        reason: "late".into(),
                    },
                },
                TransitionAction::Cancel => Operation::CancelWithdrawal { transaction_id: tx },
                other => panic!("{other} is the payout actor's, not the API's"),
            };
            assert!(matches!(
                ledger.submit(vec![op]).await[..],
                [Err(LedgerError::InvalidTransition { .. })]
            ));
            checked += 1;
        }
        assert_eq!(
            snapshot(&ledger, &[1], &[tx]).await,
            before,
            "{}",
            terminal.target()
        );
        assert_eq!(
            ledger.withdrawal(tx).await.unwrap().status,
            status_after(terminal, "first reason")
        );
    }
    assert_eq!(checked, 6);
    assert_clean(&ledger).await;
    ledger.shutdown().await;
}

#[tokio::test]
async fn withdrawals_in_several_currencies_lock_and_release_each_currency_separately() {
    let ledger = open();
    ledger.deposit(1, "USD", dec("100"), None).await.unwrap();
    ledger.deposit(1, "BTC", dec("2"), None).await.unwrap();
    let usd = request_withdrawal(&ledger, 1, "USD", "40").await;
    let btc = request_withdrawal(&ledger, 1, "BTC", "0.5").await;
    assert_balance(&ledger, 1, "USD", ["60", "40", "100"]).await;
    assert_balance(&ledger, 1, "BTC", ["1.5", "0.5", "2"]).await;
    complete(&ledger, btc.transaction_id).await;
    ledger.cancel_withdrawal(usd.transaction_id).await.unwrap();
    assert_balance(&ledger, 1, "USD", ["100", "0", "100"]).await;
    assert_balance(&ledger, 1, "BTC", ["1.5", "0", "1.5"]).await;
    let balances = ledger.balances(1).await.unwrap();
    assert_eq!(balances.len(), 2);
    assert!(balances.iter().all(|b| b.total == b.available + b.locked));
    assert_eq!(ledger.balances(424242).await.unwrap(), vec![]);
    assert_clean(&ledger).await;
    ledger.shutdown().await;
}

// ---------------------------------------------------------------------------
// The batch form
// ---------------------------------------------------------------------------

#[tokio::test]
async fn a_batch_returns_one_result_per_operation_in_order() {
    let ledger = open();
    // Many accounts, so both shards take part.
    let ops: Vec<Operation> = (1..=40u64)
        .map(|a| deposit_op(a, "USD", &a.to_string()))
        .collect();
    let results = ledger.submit(ops).await;
    assert_eq!(results.len(), 40);
    for (i, result) in results.iter().enumerate() {
        let d = deposited(result);
        let account = i as u64 + 1;
        assert_eq!(d.account, account);
        assert_eq!(d.transaction_id.account(), account);
        assert_eq!(d.amount, Decimal::from(account));
    }
    assert!(ledger.submit(Vec::new()).await.is_empty());
    for a in 1..=40u64 {
        assert_eq!(balance(&ledger, a, "USD").await.0, Decimal::from(a));
    }
    assert_clean(&ledger).await;
    ledger.shutdown().await;
}

#[tokio::test]
async fn operations_on_one_account_in_a_batch_apply_in_the_given_order() {
    let ledger = open();
    // Deposit then withdraw on a brand-new account: the withdrawal sees the deposit.
    let results = ledger
        .submit(vec![
            deposit_op(10, "USD", "50"),
            withdraw_op(10, "USD", "50"),
            transfer_op(11, 12, "USD", "1"),
            deposit_op(11, "USD", "5"),
            transfer_op(11, 12, "USD", "5"),
            withdraw_op(11, "USD", "0.01"),
        ])
        .await;
    assert_eq!(results.len(), 6);
    deposited(&results[0]);
    let w = withdrawn(&results[1]);
    assert_eq!(w.status, WithdrawalStatus::Pending);
    assert_eq!(w.amount, dec("50"));
    // A transfer before the deposit that funds it fails; after it, it succeeds.
    assert_eq!(results[2], Err(insufficient("USD", "0", "1")));
    deposited(&results[3]);
    assert_eq!(transferred(&results[4]).amount, dec("5"));
    assert_eq!(results[5], Err(insufficient("USD", "0", "0.01")));
    assert_balance(&ledger, 10, "USD", ["0", "50", "50"]).await;
    assert_eq!(balance(&ledger, 11, "USD").await.2, dec("0"));
    assert_eq!(balance(&ledger, 12, "USD").await.2, dec("5"));

    // Withdraw, cancel, withdraw again — the last one sees the cancel.
    let tx = w.transaction_id;
    let results = ledger
        .submit(vec![
            Operation::CancelWithdrawal { transaction_id: tx },
            withdraw_op(10, "USD", "50"),
            withdraw_op(10, "USD", "0.01"),
        ])
        .await;
    assert_eq!(withdrawn(&results[0]).status, WithdrawalStatus::Cancelled);
    assert_eq!(withdrawn(&results[1]).status, WithdrawalStatus::Pending);
    assert!(matches!(
        results[2],
        Err(LedgerError::InsufficientFunds { .. })
    ));
    assert_clean(&ledger).await;
    ledger.shutdown().await;
}

#[tokio::test]
async fn a_bad_operation_in_a_batch_gets_its_own_error_while_the_others_succeed() {
    let ledger = open();
    ledger.deposit(1, "USD", dec("100"), None).await.unwrap();
    let pending = request_withdrawal(&ledger, 1, "USD", "10").await;
    complete(&ledger, pending.transaction_id).await;
    let unknown = TransactionId::new(777, 1);
    let results = ledger
        .submit(vec![
            deposit_op(1, "USD", "10"),
            deposit_op(1, "XYZ", "10"),
            deposit_op(2, "USD", "0"),
            transfer_op(1, 1, "USD", "1"),
            transfer_op(1, 3, "USD", "20"),
            Operation::CancelWithdrawal {
                transaction_id: unknown,
            },
            Operation::CancelWithdrawal {
                transaction_id: pending.transaction_id,
            },
            withdraw_op(4, "USD", "1"),
            deposit_op(4, "EUR", "3"),
            Operation::CompleteWithdrawal {
                transaction_id: pending.transaction_id,
                outcome: WithdrawalOutcome::Failed {
                    reason: "x".repeat(300),
                },
            },
            withdraw_op(1, "USD", "0.001"),
            withdraw_op(1, "USD", "5"),
        ])
        .await;
    assert_eq!(results.len(), 12);
    assert_eq!(deposited(&results[0]).amount, dec("10"));
    assert_eq!(
        results[1],
        Err(LedgerError::UnknownCurrency {
            currency: "XYZ".into()
        })
    );
    assert_eq!(
        results[2],
        Err(LedgerError::InvalidAmount {
            amount: dec("0"),
            currency: code("USD"),
            problem: AmountProblem::NotPositive,
        })
    );
    assert!(matches!(results[3], Err(LedgerError::InvalidInput { .. })));
    assert_eq!(transferred(&results[4]).to, 3);
    assert_eq!(
        results[5],
        Err(LedgerError::UnknownWithdrawal {
            transaction_id: unknown
        })
    );
    assert_eq!(
        results[6],
        Err(LedgerError::InvalidTransition {
            transaction_id: pending.transaction_id,
            from: StatusKind::Completed,
            action: TransitionAction::Cancel,
        })
    );
    assert_eq!(results[7], Err(insufficient("USD", "0", "1")));
    assert_eq!(deposited(&results[8]).amount, dec("3"));
    assert!(matches!(results[9], Err(LedgerError::InvalidInput { .. })));
    assert!(matches!(
        results[10],
        Err(LedgerError::InvalidAmount {
            problem: AmountProblem::TooManyDecimals { decimals: 2 },
            ..
        })
    ));
    assert_eq!(withdrawn(&results[11]).amount, dec("5"));

    // 100 - 10 (completed) + 10 - 20 (transfer) = 80, 5 of it locked.
    assert_balance(&ledger, 1, "USD", ["75", "5", "80"]).await;
    assert_eq!(ledger.balances(2).await.unwrap(), vec![]);
    assert_eq!(balance(&ledger, 3, "USD").await.0, dec("20"));
    assert_eq!(balance(&ledger, 4, "EUR").await.0, dec("3"));
    assert_eq!(balance(&ledger, 4, "USD").await.2, dec("0"));
    assert_eq!(
        ledger
            .withdrawal(pending.transaction_id)
            .await
            .unwrap()
            .status,
        WithdrawalStatus::Completed
    );
    assert_clean(&ledger).await;
    ledger.shutdown().await;
}

#[tokio::test]
async fn after_shutdown_even_invalid_input_is_refused_as_shutting_down() {
    let ledger = open();
    ledger.shutdown().await;
    let refused = |r: Result<_, LedgerError>| matches!(r, Err(LedgerError::ShuttingDown));
    assert!(refused(
        ledger.deposit(1, "usd", dec("1"), None).await.map(|_| ())
    ));
    assert!(refused(
        ledger.deposit(1, "USD", dec("0"), None).await.map(|_| ())
    ));
    assert!(refused(
        ledger
            .transfer(1, 1, "USD", dec("1"), None)
            .await
            .map(|_| ())
    ));
    assert!(refused(ledger.balance(1, "XYZ").await.map(|_| ())));
    let batch = ledger.submit(vec![]).await;
    assert!(batch.is_empty());
}

#[tokio::test]
async fn a_self_transfer_is_invalid_input_whatever_its_amount() {
    let ledger = open();
    assert!(matches!(
        ledger.transfer(1, 1, "USD", dec("0"), None).await,
        Err(LedgerError::InvalidInput { .. })
    ));
    ledger.shutdown().await;
}

#[tokio::test]
async fn eighteen_decimal_currencies_open_with_a_default_limit_under_the_ceiling() {
    let ledger = open_with_currencies(vec![CurrencyConfig::new("ETH", 18)]);
    let deposit = ledger
        .deposit(1, "ETH", dec("1.000000000000000001"), None)
        .await
        .unwrap();
    assert_eq!(deposit.amount, dec("1.000000000000000001"));
    ledger.shutdown().await;
}

#[tokio::test]
async fn idle_account_actors_stop_and_their_accounts_carry_on_where_they_were() {
    // The test config caps actors at 4 per shard and sweeps every 20 ms.
    let ledger = open();
    let deposits = (1..=50).map(|a| deposit_op(a, "USD", "3")).collect();
    assert!(ledger.submit(deposits).await.iter().all(Result::is_ok));
    let counts = ledger.account_counts().await.unwrap();
    assert_eq!(counts.accounts, 50);
    // One batch touched 50 accounts: the cap kept most actors stopped.
    assert!(counts.actors_running <= 2 * 5, "{counts:?}");
    // Idle for a few sweeps: every actor stops, every account stays.
    tokio::time::sleep(std::time::Duration::from_millis(200)).await;
    let counts = ledger.account_counts().await.unwrap();
    assert_eq!((counts.accounts, counts.actors_running), (50, 0));
    // A stopped actor's account is read from, and restarted with, its kept
    // state.
    assert_balance(&ledger, 7, "USD", ["3", "0", "3"]).await;
    let withdrawal = ledger
        .request_withdrawal(7, "USD", dec("1"), None)
        .await
        .unwrap();
    assert_balance(&ledger, 7, "USD", ["2", "1", "3"]).await;
    // (Its new actor may already be swept again on a slow machine.)
    assert!(ledger.account_counts().await.unwrap().actors_running <= 1);
    complete(&ledger, withdrawal.transaction_id).await;
    assert_balance(&ledger, 7, "USD", ["2", "0", "2"]).await;
    assert_clean(&ledger).await;
}
