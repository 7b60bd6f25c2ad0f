//! Admission control through the public `Ledger` handle: a shard admits a
//! bounded number of operations at once; a batch past the room left is
//! refused whole as `overloaded`, never half-applied, queued or lost; a
//! batch bound no shard could ever admit is refused at open.

mod common;

use burnledger::{Config, Decimal, Ledger, LedgerError, OpenError, WithdrawalStatus};
use common::{
    assert_balance, concurrently, dec, deposit_op, request_withdrawal, transfer_op, with_ledger,
    withdraw_op,
};

/// One shard that admits at most 4 operations at once, and batches of at
/// most that many (a larger batch could never be admitted).
fn tiny_shard() -> Config {
    Config {
        shards: 1,
        shard_in_flight_ops_max: 4,
        batch_ops_max: 4,
        ..Config::for_tests()
    }
}

/// A batch is admitted to a shard whole, so one larger than a shard's
/// in-flight bound would be refused `overloaded` forever: such a
/// configuration is refused at open, naming both settings.
#[tokio::test]
async fn a_batch_bound_past_the_shard_in_flight_bound_is_refused_at_open() {
    let config = Config {
        batch_ops_max: 5,
        ..tiny_shard()
    };
    match Ledger::open(config) {
        Err(OpenError::Config(message)) => assert!(
            message.contains("batch_ops_max (5)")
                && message.contains("shard_in_flight_ops_max (4)"),
            "{message}"
        ),
        Err(other) => panic!("refused for another reason: {other}"),
        Ok(_) => panic!("a batch bound no shard can admit was accepted"),
    }
}

/// The largest batch the configuration allows, all on one shard, is
/// admitted on an idle ledger.
#[tokio::test]
async fn a_batch_of_exactly_the_in_flight_bound_is_admitted_on_an_idle_shard() {
    with_ledger(tiny_shard(), |ledger| async move {
        ledger.deposit(1, "USD", dec("100"), None).await.unwrap();
        let w = request_withdrawal(&ledger, 1, "USD", "10").await;
        let batch = vec![
            deposit_op(1, "USD", "1"),
            deposit_op(2, "USD", "1"),
            withdraw_op(1, "USD", "1"),
            transfer_op(1, 3, "USD", "1"),
        ];
        let results = ledger.submit(batch).await;
        assert!(results.iter().all(Result::is_ok), "{results:?}");
        assert_balance(&ledger, 1, "USD", ["89", "11", "100"]).await;
        assert_balance(&ledger, 2, "USD", ["1", "0", "1"]).await;
        assert_balance(&ledger, 3, "USD", ["1", "0", "1"]).await;
        let status = ledger.withdrawal(w.transaction_id).await.unwrap().status;
        assert_eq!(status, WithdrawalStatus::Pending);
    })
    .await;
}

/// Batches of the in-flight bound on one shard, many at once: while one
/// runs, the others find no room and are refused whole as `overloaded`
/// (every operation refused, nothing of them applied); the room comes back.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_batch_finding_no_room_on_its_shard_is_refused_whole_as_overloaded() {
    with_ledger(tiny_shard(), |ledger| async move {
        let expected = LedgerError::Overloaded { shard: 0, limit: 4 };
        assert_eq!(expected.code(), "overloaded");
        assert!(expected.is_retryable());
        let mut refused = 0;
        for round in 0..20u64 {
            let tasks = concurrently(&ledger, 50, move |ledger, task| async move {
                // Two accounts of this task's own: what a refusal leaves is visible.
                let (a, b) = (
                    1_000 * (round + 1) + 2 * task as u64,
                    1_000 * (round + 1) + 2 * task as u64 + 1,
                );
                let batch = vec![
                    deposit_op(a, "USD", "10"),
                    deposit_op(b, "USD", "1"),
                    withdraw_op(a, "USD", "1"),
                    transfer_op(a, b, "USD", "2"),
                ];
                (a, b, ledger.submit(batch).await)
            })
            .await;
            for (a, b, results) in tasks {
                if results.iter().all(Result::is_ok) {
                    assert_balance(&ledger, a, "USD", ["7", "1", "8"]).await;
                    assert_balance(&ledger, b, "USD", ["3", "0", "3"]).await;
                    continue;
                }
                assert_eq!(
                    results,
                    vec![Err(expected.clone()); 4],
                    "half a batch admitted"
                );
                for account in [a, b] {
                    let balances = ledger.balances(account).await.unwrap();
                    assert!(balances.is_empty(), "a refused batch left {balances:?}");
                }
                refused += 1;
            }
            if refused > 0 {
                break;
            }
        }
        assert!(
            refused > 0,
            "full batches at once never found a shard without room"
        );
        // The refused batches gave their room back: a full batch runs.
        let results = ledger.submit(vec![deposit_op(1, "USD", "1"); 4]).await;
        assert!(results.iter().all(Result::is_ok), "{results:?}");
        assert_balance(&ledger, 1, "USD", ["4", "0", "4"]).await;
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
