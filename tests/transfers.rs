//! Black-box tests of transfers through the public `Ledger` handle: moving
//! funds, refusals, account creation, shards, and conservation under
//! concurrency.

mod common;

use std::collections::BTreeMap;

use burnledger::domain::ids::shard_of;
use burnledger::{
    Decimal, Ledger, LedgerError, Outcome, Transfer, WithdrawalOutcome, WithdrawalStatus,
};

use common::{
    accounts_on_shard, assert_balance, assert_clean, balance, clean_audit, code, complete,
    concurrently, dec, deposit_op, insufficient, keyed, open, open_uncapped, request_withdrawal,
    snapshot, transfer_op, transferred, withdraw_op, Rng,
};

async fn account_count(ledger: &Ledger) -> usize {
    ledger.audit().await.unwrap().accounts
}

#[tokio::test]
async fn a_transfer_moves_available_funds_from_source_to_destination() {
    let ledger = open();
    ledger.deposit(1, "USD", dec("100"), None).await.unwrap();
    ledger.deposit(2, "USD", dec("5"), None).await.unwrap();
    let t = ledger
        .transfer(1, 2, "USD", dec("30.05"), None)
        .await
        .unwrap();
    assert_eq!(
        t,
        Transfer {
            transaction_id: t.transaction_id,
            from: 1,
            to: 2,
            currency: code("USD"),
            amount: dec("30.05"),
            metadata: Default::default(),
        }
    );
    assert_eq!(
        t.transaction_id.account(),
        1,
        "a transfer belongs to its source"
    );
    assert_balance(&ledger, 1, "USD", ["69.95", "0", "69.95"]).await;
    assert_balance(&ledger, 2, "USD", ["35.05", "0", "35.05"]).await;
    // The received funds are spendable right away, and nothing was minted.
    request_withdrawal(&ledger, 2, "USD", "35.05").await;
    let audit = clean_audit(&ledger).await;
    let (_, usd) = &audit.totals[&code("USD")];
    assert_eq!(usd.total(), 10_500, "cents");
    assert_eq!(usd.deposited, 10_500);
    ledger.shutdown().await;
}

#[tokio::test]
async fn a_transfer_of_everything_available_leaves_zero_and_locked_funds_stay_put() {
    let ledger = open();
    ledger.deposit(1, "BTC", dec("1"), None).await.unwrap();
    let w = request_withdrawal(&ledger, 1, "BTC", "0.4").await;
    ledger
        .transfer(1, 2, "BTC", dec("0.6"), None)
        .await
        .unwrap();
    assert_balance(&ledger, 1, "BTC", ["0", "0.4", "0.4"]).await;
    assert_balance(&ledger, 2, "BTC", ["0.6", "0", "0.6"]).await;
    // The lock is still whole and can complete.
    complete(&ledger, w.transaction_id).await;
    assert_balance(&ledger, 1, "BTC", ["0", "0", "0"]).await;
    assert_clean(&ledger).await;
    ledger.shutdown().await;
}

#[tokio::test]
async fn a_transfer_with_insufficient_funds_leaves_both_accounts_unchanged() {
    let ledger = open();
    ledger.deposit(1, "USD", dec("100"), None).await.unwrap();
    ledger.deposit(2, "USD", dec("7"), None).await.unwrap();
    let w = request_withdrawal(&ledger, 1, "USD", "60").await;
    let before = snapshot(&ledger, &[1, 2], &[w.transaction_id]).await;
    // Only 40 is available: locked funds cannot be transferred.
    for amount in ["40.01", "60", "100", "1000000000000"] {
        assert_eq!(
            ledger
                .transfer(1, 2, "USD", dec(amount), None)
                .await
                .unwrap_err(),
            insufficient("USD", "40", amount)
        );
    }
    // A currency the source never held.
    assert_eq!(
        ledger
            .transfer(1, 2, "EUR", dec("1"), None)
            .await
            .unwrap_err(),
        insufficient("EUR", "0", "1")
    );
    let after = snapshot(&ledger, &[1, 2], &[w.transaction_id]).await;
    assert_eq!(after, before);
    assert_eq!(after.withdrawals[0].status, WithdrawalStatus::Pending);
    assert_clean(&ledger).await;
    ledger.shutdown().await;
}

#[tokio::test]
async fn a_transfer_to_a_never_seen_account_creates_it() {
    let ledger = open();
    ledger.deposit(1, "USD", dec("10"), None).await.unwrap();
    assert_eq!(account_count(&ledger).await, 1);
    assert_eq!(ledger.balances(99).await.unwrap(), vec![]);
    ledger.transfer(1, 99, "USD", dec("4"), None).await.unwrap();
    assert_eq!(account_count(&ledger).await, 2);
    assert_balance(&ledger, 99, "USD", ["4", "0", "4"]).await;
    // The new account is a full account: it can withdraw and transfer.
    let w = request_withdrawal(&ledger, 99, "USD", "1").await;
    complete(&ledger, w.transaction_id).await;
    ledger.transfer(99, 1, "USD", dec("3"), None).await.unwrap();
    assert_eq!(balance(&ledger, 99, "USD").await.2, dec("0"));
    assert_eq!(balance(&ledger, 1, "USD").await.2, dec("9"));
    assert_clean(&ledger).await;
    ledger.shutdown().await;
}

#[tokio::test]
async fn a_refused_transfer_from_a_never_seen_account_creates_no_account() {
    let ledger = open();
    assert_eq!(
        ledger
            .transfer(5, 6, "USD", dec("1"), None)
            .await
            .unwrap_err(),
        insufficient("USD", "0", "1")
    );
    assert_eq!(account_count(&ledger).await, 0);
    assert_eq!(ledger.balances(5).await.unwrap(), vec![]);
    assert_eq!(ledger.balances(6).await.unwrap(), vec![]);
    ledger.shutdown().await;
}

#[tokio::test]
async fn transfers_within_a_shard_and_across_shards_move_funds_exactly() {
    let ledger = open();
    let shard0 = accounts_on_shard(0, 8, 1);
    let shard1 = accounts_on_shard(1, 8, 1);
    // A ring alternating shards, then a ring staying on each shard.
    let mut ring: Vec<u64> = shard0
        .iter()
        .zip(&shard1)
        .flat_map(|(a, b)| [*a, *b])
        .collect();
    ring.extend(&shard0);
    ring.extend(&shard1);
    ring.push(ring[0]);
    ledger
        .deposit(ring[0], "USD", dec("100"), None)
        .await
        .unwrap();
    for hop in ring.windows(2) {
        let (from, to) = (hop[0], hop[1]);
        let t = ledger
            .transfer(from, to, "USD", dec("100"), None)
            .await
            .unwrap();
        assert_eq!((t.from, t.to), (from, to));
        assert_eq!(balance(&ledger, from, "USD").await.2, dec("0"), "{from}");
        assert_eq!(balance(&ledger, to, "USD").await.2, dec("100"), "{to}");
    }
    assert_eq!(balance(&ledger, ring[0], "USD").await.2, dec("100"));
    assert_eq!(clean_audit(&ledger).await.accounts, 16);
    ledger.shutdown().await;
}

#[tokio::test]
async fn a_batch_of_transfers_across_shards_returns_each_result_in_order() {
    let ledger = open();
    let accounts: Vec<u64> = (100..132).collect();
    for &a in &accounts {
        ledger.deposit(a, "USD", dec("10"), None).await.unwrap();
    }
    // Each account sends 3 to the next and asks for 20 from the one after.
    let mut ops = Vec::new();
    for (i, &a) in accounts.iter().enumerate() {
        let next = accounts[(i + 1) % accounts.len()];
        ops.push(transfer_op(a, next, "USD", "3"));
        ops.push(transfer_op(a, next, "USD", "20"));
    }
    let results = ledger.submit(ops).await;
    assert_eq!(results.len(), 64);
    for (i, pair) in results.chunks(2).enumerate() {
        let from = accounts[i];
        let t = transferred(&pair[0]);
        assert_eq!(
            (t.from, t.amount),
            (from, dec("3")),
            "transfer of 3 from {from}"
        );
        assert!(
            matches!(pair[1], Err(LedgerError::InsufficientFunds { .. })),
            "transfer of 20 from {from}: {:?}",
            pair[1]
        );
    }
    for &a in &accounts {
        assert_eq!(balance(&ledger, a, "USD").await.2, dec("10"), "{a}");
    }
    assert_clean(&ledger).await;
    ledger.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn concurrent_random_transfers_among_four_accounts_conserve_the_total_exactly() {
    let ledger = open();
    // Two accounts on each shard, so transfers are local and cross-shard.
    let mut accounts = accounts_on_shard(0, 2, 1);
    accounts.extend(accounts_on_shard(1, 2, 1));
    let initial = Decimal::from(100);
    for &a in &accounts {
        ledger.deposit(a, "USD", initial, None).await.unwrap();
    }
    let mut rng = Rng(0x5eed_1234_abcd_0001);
    let results = concurrently(&ledger, 2000, |ledger, i| {
        let from = accounts[rng.below(4) as usize];
        let to = loop {
            let to = accounts[rng.below(4) as usize];
            if to != from {
                break to;
            }
        };
        // Every 10th asks for more than exists anywhere: it must fail.
        let cents = if i % 10 == 0 {
            50_000
        } else {
            1 + rng.below(6_000)
        };
        let amount = Decimal::new(cents as i64, 2);
        async move {
            (
                from,
                to,
                amount,
                ledger.transfer(from, to, "USD", amount, None).await,
            )
        }
    })
    .await;
    let mut expected: BTreeMap<u64, Decimal> = accounts.iter().map(|&a| (a, initial)).collect();
    let (mut ok, mut insufficient) = (0, 0);
    let mut ids = std::collections::HashSet::new();
    for (from, to, amount, result) in results {
        match result {
            Ok(t) => {
                assert_eq!((t.from, t.to, t.amount), (from, to, amount));
                assert!(ids.insert(t.transaction_id), "duplicate id {t:?}");
                *expected.get_mut(&from).unwrap() -= amount;
                *expected.get_mut(&to).unwrap() += amount;
                ok += 1;
            }
            Err(LedgerError::InsufficientFunds {
                available,
                requested,
                ..
            }) => {
                assert_eq!(requested, amount);
                assert!(available < requested);
                assert!(available >= Decimal::ZERO);
                insufficient += 1;
            }
            Err(other) => panic!("unexpected error {other:?}"),
        }
    }
    assert_eq!(ok + insufficient, 2000);
    assert!(ok > 0);
    assert!(insufficient >= 200, "every 10th transfer is impossible");
    // Every successful transfer, and only those, moved money.
    let mut sum = Decimal::ZERO;
    for &a in &accounts {
        let (available, locked, total) = balance(&ledger, a, "USD").await;
        assert_eq!(available, expected[&a], "account {a}");
        assert_eq!(locked, Decimal::ZERO);
        assert!(total >= Decimal::ZERO);
        sum += total;
    }
    assert_eq!(sum, Decimal::from(400));
    let audit = clean_audit(&ledger).await;
    assert_eq!(audit.totals[&code("USD")].1.total(), 40_000);
    ledger.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn concurrent_transfers_and_withdrawals_across_many_accounts_keep_every_invariant() {
    let ledger = open_uncapped();
    let accounts: Vec<u64> = (1..=64).collect();
    assert!(accounts.iter().any(|&a| shard_of(a, 2) == 0));
    assert!(accounts.iter().any(|&a| shard_of(a, 2) == 1));
    for &a in &accounts {
        ledger.deposit(a, "EUR", dec("50"), None).await.unwrap();
    }
    let mut rng = Rng(0xfeed_beef_0042_0007);
    let results = concurrently(&ledger, 3000, |ledger, _| {
        let from = accounts[rng.below(64) as usize];
        let to = accounts[rng.below(64) as usize];
        let amount = Decimal::new(1 + rng.below(2_000) as i64, 2);
        let kind = rng.below(4);
        async move {
            match kind {
                // A withdrawal that is then paid, refused or cancelled.
                0 => match ledger.request_withdrawal(from, "EUR", amount, None).await {
                    Ok(w) => {
                        let tx = w.transaction_id;
                        let done = match to % 3 {
                            0 => ledger
                                .complete_withdrawal(tx, WithdrawalOutcome::Completed)
                                .await
                                .unwrap(),
                            1 => ledger
                                .complete_withdrawal(
                                    tx,
                                    WithdrawalOutcome::Failed {
                                        reason: "bank down".into(),
                                    },
                                )
                                .await
                                .unwrap(),
                            _ => ledger.cancel_withdrawal(tx).await.unwrap(),
                        };
                        Ok(matches!(done.status, WithdrawalStatus::Completed).then_some(amount))
                    }
                    Err(e) => Err(e),
                },
                _ if from == to => Ok(None),
                _ => ledger
                    .transfer(from, to, "EUR", amount, None)
                    .await
                    .map(|_| None),
            }
        }
    })
    .await;
    let mut burned = Decimal::ZERO;
    for result in results {
        match result {
            Ok(Some(paid)) => burned += paid,
            Ok(None) | Err(LedgerError::InsufficientFunds { .. }) => {}
            Err(other) => panic!("unexpected error {other:?}"),
        }
    }
    let mut sum = Decimal::ZERO;
    for &a in &accounts {
        let (available, locked, total) = balance(&ledger, a, "EUR").await;
        assert!(available >= Decimal::ZERO);
        assert_eq!(locked, Decimal::ZERO, "every withdrawal was settled");
        sum += total;
    }
    assert_eq!(sum, Decimal::from(64 * 50) - burned);
    let audit = clean_audit(&ledger).await;
    assert_eq!(audit.withdrawals_by_status["pending"], 0);
    ledger.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn opposite_transfers_between_two_shards_all_complete_without_deadlock() {
    let ledger = open();
    let a = accounts_on_shard(0, 1, 1)[0];
    let b = accounts_on_shard(1, 1, 1)[0];
    ledger.deposit(a, "USD", dec("1000"), None).await.unwrap();
    ledger.deposit(b, "USD", dec("1000"), None).await.unwrap();
    let results = concurrently(&ledger, 1000, |ledger, i| {
        let (from, to) = if i % 2 == 0 { (a, b) } else { (b, a) };
        async move { ledger.transfer(from, to, "USD", dec("1"), None).await }
    })
    .await;
    // 500 each way: neither side can ever drop below 500, so all succeed.
    for result in results {
        result.unwrap();
    }
    assert_balance(&ledger, a, "USD", ["1000", "0", "1000"]).await;
    assert_balance(&ledger, b, "USD", ["1000", "0", "1000"]).await;
    assert_clean(&ledger).await;
    ledger.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn concurrent_transfers_draining_one_account_never_overspend_it() {
    let ledger = open();
    let source = accounts_on_shard(0, 1, 1)[0];
    let sinks: Vec<u64> = accounts_on_shard(1, 4, 1)
        .into_iter()
        .chain(accounts_on_shard(0, 4, source + 1))
        .collect();
    ledger
        .deposit(source, "USD", dec("100"), None)
        .await
        .unwrap();
    let results = concurrently(&ledger, 1000, |ledger, i| {
        let to = sinks[i % sinks.len()];
        async move { ledger.transfer(source, to, "USD", dec("1"), None).await }
    })
    .await;
    let mut ok = 0;
    for result in results {
        match result {
            Ok(_) => ok += 1,
            Err(LedgerError::InsufficientFunds { .. }) => {}
            Err(other) => panic!("unexpected error {other:?}"),
        }
    }
    assert_eq!(ok, 100);
    assert_eq!(balance(&ledger, source, "USD").await.2, dec("0"));
    let mut received = Decimal::ZERO;
    for &s in &sinks {
        received += balance(&ledger, s, "USD").await.2;
    }
    assert_eq!(received, dec("100"));
    assert_clean(&ledger).await;
    ledger.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_batch_runs_a_keyed_transfer_and_its_replay_in_order() {
    let ledger = open();
    ledger.deposit(1, "USD", dec("100"), None).await.unwrap();
    let transfer = || keyed(transfer_op(1, 2, "USD", "10"), "k");
    let results = ledger.submit(vec![transfer(), transfer()]).await;
    // The transfer and its replay.
    let ids: Vec<_> = results
        .iter()
        .map(|r| transferred(r).transaction_id)
        .collect();
    assert_eq!(ids[0], ids[1], "the replay returns the first result");
    assert_eq!(balance(&ledger, 1, "USD").await.0, dec("90"));
    assert_clean(&ledger).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_operation_after_a_transfer_in_a_batch_sees_the_transfer_finished() {
    let ledger = open();
    ledger.deposit(2, "USD", dec("5"), None).await.unwrap();
    // The transfer out of 2 fails at the receiver only if it is over the
    // ceiling; here it succeeds, and the withdrawal after it in the same
    // batch must see the funds gone, as if run one after the other.
    let results = ledger
        .submit(vec![
            transfer_op(2, 3, "USD", "5"),
            withdraw_op(2, "USD", "5"),
            deposit_op(2, "USD", "1"),
            withdraw_op(2, "USD", "1"),
        ])
        .await;
    assert!(matches!(results[0], Ok(Outcome::Transferred(_))));
    assert!(matches!(
        results[1],
        Err(LedgerError::InsufficientFunds { .. })
    ));
    assert!(matches!(results[2], Ok(Outcome::Deposited(_))));
    assert!(matches!(results[3], Ok(Outcome::Withdrawal(_))));
    assert_balance(&ledger, 2, "USD", ["0", "1", "1"]).await;
    assert_eq!(balance(&ledger, 3, "USD").await.0, dec("5"));
    assert_clean(&ledger).await;
}

#[tokio::test]
async fn a_deposit_and_a_transfer_of_it_in_one_batch_replay_in_order_after_a_restart() {
    // Source and receiver on different shards: the receiver logs the
    // transfer while the source's deposit came from the same batch. The log
    // must hold the deposit first, or replay finds the source short.
    let tmp = tempfile::tempdir().unwrap();
    let from = accounts_on_shard(0, 1, 1)[0];
    let to = accounts_on_shard(1, 1, 1)[0];
    let ledger = Ledger::open(burnledger::Config::for_tests_in(tmp.path())).unwrap();
    let results = ledger
        .submit(vec![
            deposit_op(from, "USD", "5"),
            transfer_op(from, to, "USD", "5"),
            deposit_op(from, "USD", "2"),
            transfer_op(from, to, "USD", "2"),
        ])
        .await;
    assert!(results.iter().all(Result::is_ok), "{results:?}");
    // Crash-like: no shutdown, so no final snapshot; recovery replays the log.
    drop(ledger);
    let reopened = Ledger::open(burnledger::Config::for_tests_in(tmp.path())).unwrap();
    assert_eq!(reopened.recovery_report().unwrap().records_replayed, 4);
    assert_balance(&reopened, from, "USD", ["0", "0", "0"]).await;
    assert_balance(&reopened, to, "USD", ["7", "0", "7"]).await;
    assert_clean(&reopened).await;
}
