//! Rejections through the public `Ledger` handle other than amounts and
//! withdrawal states: insufficient funds, unknown currencies, idempotency
//! conflicts and invalid input — each with its error and code, each
//! leaving everything unchanged.

mod common;

use burnledger::{
    Config, Decimal, IdempotencyKey, LedgerError, WithdrawalOutcome, WithdrawalStatus,
};
use common::{
    assert_balance, assert_refused_by_every_kind, balance, conflict, dec, deposit_op, insufficient,
    request_withdrawal, snapshot, transfer_op, with_ledger,
};

#[tokio::test]
async fn insufficient_funds_reports_available_and_requested_and_changes_nothing() {
    with_ledger(Config::for_tests(), |ledger| async move {
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
    })
    .await;
}

#[tokio::test]
async fn unknown_currencies_are_rejected_whether_well_formed_or_malformed() {
    with_ledger(Config::for_tests(), |ledger| async move {
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
    })
    .await;
}

#[tokio::test]
async fn idempotency_conflict_changes_nothing() {
    with_ledger(Config::for_tests(), |ledger| async move {
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
    })
    .await;
}

#[tokio::test]
async fn invalid_input_is_rejected_with_a_reason_and_changes_nothing() {
    with_ledger(Config::for_tests(), |ledger| async move {
        ledger.deposit(1, "USD", dec("100"), None).await.unwrap();
        let w = request_withdrawal(&ledger, 1, "USD", "10").await;
        let tx = w.transaction_id;
        let before = snapshot(&ledger, &[1, 2], &[tx]).await;

        // A transfer to its own source account.
        assert_eq!(
            ledger
                .transfer(1, 1, "USD", dec("1"), None)
                .await
                .unwrap_err(),
            LedgerError::SameAccountTransfer { account: 1 },
            "transfer to self",
        );
        assert!(matches!(
            ledger.submit(vec![transfer_op(1, 1, "USD", "1")]).await[..],
            [Err(LedgerError::SameAccountTransfer { account: 1 })]
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
            let too_long = LedgerError::ReasonTooLong {
                field: "reason",
                length: reason.len(),
                max: 256,
            };
            assert_eq!(
                too_long,
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
            let oversized = LedgerError::BatchTooLarge {
                count: max + 1,
                max,
            };
            assert_eq!(result.unwrap_err(), oversized, "oversized batch");
        }
        let error = LedgerError::BatchTooLarge { count: 2, max: 1 };
        assert_eq!(error.code(), "batch_too_large");
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
    })
    .await;
}

#[tokio::test]
async fn a_self_transfer_is_invalid_input_whatever_its_amount() {
    with_ledger(Config::for_tests(), |ledger| async move {
        assert!(matches!(
            ledger.transfer(1, 1, "USD", dec("0"), None).await,
            Err(LedgerError::SameAccountTransfer { .. })
        ));
    })
    .await;
}
