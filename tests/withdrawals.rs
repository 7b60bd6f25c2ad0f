//! The withdrawal state machine through the public `Ledger` handle: a
//! request locks the amount, completing burns it, failing or cancelling
//! releases it; a repeated terminal update returns the current state, a
//! conflicting one is an invalid transition; the per-account cap on pending
//! withdrawals; and the pending burn under concurrent callers.

mod common;

use burnledger::domain::withdrawal::{StatusKind, TransitionAction};
use burnledger::{
    Config, Decimal, LedgerError, Operation, TransactionId, Withdrawal, WithdrawalOutcome,
    WithdrawalStatus,
};

use common::{
    act, assert_balance, clean_audit, code, complete, concurrently, dec, request_withdrawal,
    snapshot, uncapped, with_ledger,
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

// ---------------------------------------------------------------------------
// The withdrawal state machine
// ---------------------------------------------------------------------------

#[tokio::test]
async fn request_withdrawal_locks_the_amount_and_reports_it_pending() {
    with_ledger(Config::for_tests(), |ledger| async move {
        ledger.deposit(1, "USD", dec("100"), None).await.unwrap();
        let w = request_withdrawal(&ledger, 1, "USD", "30.25").await;
        assert_eq!(w.account, 1);
        assert_eq!(w.transaction_id.account(), 1);
        assert_eq!(w.currency, code("USD"));
        assert_eq!(w.amount, dec("30.25"));
        assert_eq!(w.status, WithdrawalStatus::Pending);
        assert_eq!(ledger.withdrawal(w.transaction_id).await.unwrap(), w);
        assert_balance(&ledger, 1, "USD", ["69.75", "30.25", "100"]).await;
    })
    .await;
}

#[tokio::test]
async fn completing_a_pending_withdrawal_removes_the_locked_amount_from_the_total() {
    // A clock that stands still: completing keeps every field, the time
    // of the last change included.
    let still = Config {
        clock: burnledger::clock::ManualClock::new().shared(),
        ..Config::for_tests()
    };
    with_ledger(still, |ledger| async move {
        ledger.deposit(1, "USD", dec("100"), None).await.unwrap();
        let w = request_withdrawal(&ledger, 1, "USD", "30").await;
        let done = complete(&ledger, w.transaction_id).await;
        assert_eq!(
            done,
            Withdrawal {
                status: WithdrawalStatus::Completed,
                // Paid in full: what a completion reports it paid.
                paid: Some(dec("30.00")),
                ..w.clone()
            }
        );
        assert_eq!(ledger.withdrawal(w.transaction_id).await.unwrap(), done);
        assert_balance(&ledger, 1, "USD", ["70", "0", "70"]).await;
        let audit = clean_audit(&ledger).await;
        assert_eq!(audit.withdrawals_by_status["completed"], 1);
        assert_eq!(audit.withdrawals_by_status["pending"], 0);
    })
    .await;
}

#[tokio::test]
async fn failing_a_pending_withdrawal_returns_the_amount_to_available_and_keeps_the_reason() {
    with_ledger(Config::for_tests(), |ledger| async move {
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
    })
    .await;
}

#[tokio::test]
async fn cancelling_a_pending_withdrawal_returns_the_amount_to_available() {
    with_ledger(Config::for_tests(), |ledger| async move {
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
    })
    .await;
}

#[tokio::test]
async fn repeating_the_terminal_update_returns_the_current_state_and_changes_nothing() {
    with_ledger(Config::for_tests(), |ledger| async move {
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
    })
    .await;
}

#[tokio::test]
async fn conflicting_updates_of_terminal_withdrawals_are_invalid_transitions() {
    with_ledger(Config::for_tests(), |ledger| async move {
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
    })
    .await;
}

#[tokio::test]
async fn withdrawals_in_several_currencies_lock_and_release_each_currency_separately() {
    with_ledger(Config::for_tests(), |ledger| async move {
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
    })
    .await;
}

#[tokio::test]
async fn invalid_transition_reports_state_and_action_and_changes_nothing() {
    with_ledger(Config::for_tests(), |ledger| async move {
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
    })
    .await;
}

#[tokio::test]
async fn unknown_withdrawals_are_rejected_for_made_up_ids_and_for_other_transactions() {
    with_ledger(Config::for_tests(), |ledger| async move {
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
    })
    .await;
}

#[tokio::test]
async fn pending_withdrawals_are_capped_per_account_and_a_terminal_state_frees_a_slot() {
    with_ledger(Config::for_tests(), |ledger| async move {
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
    })
    .await;
}

// ---------------------------------------------------------------------------
// Concurrency of the pending burn
// ---------------------------------------------------------------------------

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn thousand_concurrent_withdrawals_of_one_against_a_hundred_lock_exactly_a_hundred() {
    with_ledger(uncapped(), |ledger| async move {
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
    })
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn racing_complete_and_cancel_on_one_withdrawal_let_exactly_one_win() {
    with_ledger(uncapped(), |ledger| async move {
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
    })
    .await;
}
