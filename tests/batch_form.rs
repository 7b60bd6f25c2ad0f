//! The batch form (`Ledger::submit`) through the public handle: one
//! result per operation, in order; operations on one account apply in the
//! given order; a bad operation gets its own error while the others
//! succeed.

mod common;

use burnledger::domain::withdrawal::{StatusKind, TransitionAction};
use burnledger::{
    AmountProblem, Config, Decimal, LedgerError, Operation, TransactionId, WithdrawalOutcome,
    WithdrawalStatus,
};

use common::{
    assert_balance, balance, code, complete, dec, deposit_op, deposited, insufficient,
    request_withdrawal, transfer_op, transferred, with_ledger, withdraw_op, withdrawn,
};

#[tokio::test]
async fn a_batch_returns_one_result_per_operation_in_order() {
    with_ledger(Config::for_tests(), |ledger| async move {
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
    })
    .await;
}

#[tokio::test]
async fn operations_on_one_account_in_a_batch_apply_in_the_given_order() {
    with_ledger(Config::for_tests(), |ledger| async move {
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
    })
    .await;
}

#[tokio::test]
async fn a_bad_operation_in_a_batch_gets_its_own_error_while_the_others_succeed() {
    with_ledger(Config::for_tests(), |ledger| async move {
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
        assert!(matches!(
            results[3],
            Err(LedgerError::SameAccountTransfer { .. })
        ));
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
        assert!(matches!(results[9], Err(LedgerError::ReasonTooLong { .. })));
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
    })
    .await;
}
