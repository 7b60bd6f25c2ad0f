//! Admission control through the public `Ledger` handle: a shard admits a
//! bounded number of operations at once; a batch past the limit is refused
//! whole as `overloaded`, never half-applied, queued or lost.

mod common;

use burnledger::{Config, Decimal, LedgerError, Operation, WithdrawalOutcome};
use common::{
    assert_balance, concurrently, dec, deposit_op, request_withdrawal, snapshot, transfer_op,
    with_ledger, withdraw_op,
};

/// One shard that admits at most 4 operations at once.
fn tiny_shard() -> Config {
    Config {
        shards: 1,
        shard_in_flight_ops_max: 4,
        ..Config::for_tests()
    }
}

#[tokio::test]
async fn a_batch_larger_than_the_shard_in_flight_limit_is_refused_whole_as_overloaded() {
    with_ledger(tiny_shard(), |ledger| async move {
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
    })
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn concurrent_load_past_the_in_flight_limit_is_refused_never_lost_or_queued() {
    with_ledger(tiny_shard(), |ledger| async move {
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
    })
    .await;
}
