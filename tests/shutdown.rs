//! Shutdown through the public `Ledger` handle: after it, every call on
//! every clone is refused as `shutting_down` (even invalid input); under
//! load, every operation gets a result or `shutting_down`.

mod common;

use burnledger::{LedgerError, WithdrawalOutcome};

use common::{dec, deposit_op, join_all, open, open_uncapped, spawn_each};

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
