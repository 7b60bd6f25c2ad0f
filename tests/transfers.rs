//! Black-box tests of transfers through the public `Ledger` handle: moving
//! funds, refusals, account creation, shards, and conservation under
//! concurrency.

use std::collections::BTreeMap;
use std::str::FromStr;

use burnledger::actors::coordinator::shard_of;
use burnledger::{
    Balance, Config, CurrencyCode, Decimal, Ledger, LedgerError, Operation, Outcome, Transfer,
    WithdrawalOutcome, WithdrawalStatus,
};

fn dec(s: &str) -> Decimal {
    Decimal::from_str(s).unwrap()
}

fn code(s: &str) -> CurrencyCode {
    CurrencyCode::new(s).unwrap()
}

fn open() -> Ledger {
    Ledger::open(Config::for_tests()).unwrap()
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

async fn assert_clean(ledger: &Ledger) {
    let audit = ledger.audit().await.unwrap();
    assert!(audit.is_clean(), "{:?}", audit.violations);
}

async fn account_count(ledger: &Ledger) -> usize {
    ledger.audit().await.unwrap().accounts
}

/// `count` account ids on `shard` of a two-shard ledger, from `start` up.
fn accounts_on_shard(shard: usize, count: usize, start: u64) -> Vec<u64> {
    (start..)
        .filter(|&a| shard_of(a, 2) == shard)
        .take(count)
        .collect()
}

/// Small deterministic generator (xorshift64*), so failures reproduce.
struct Rng(u64);

impl Rng {
    fn next(&mut self) -> u64 {
        self.0 ^= self.0 >> 12;
        self.0 ^= self.0 << 25;
        self.0 ^= self.0 >> 27;
        self.0.wrapping_mul(0x2545_f491_4f6c_dd1d)
    }

    fn below(&mut self, n: u64) -> u64 {
        self.next() % n
    }
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
        }
    );
    assert_eq!(
        t.transaction_id.account(),
        1,
        "a transfer belongs to its source"
    );
    assert_eq!(
        balance(&ledger, 1, "USD").await,
        (dec("69.95"), dec("0"), dec("69.95"))
    );
    assert_eq!(
        balance(&ledger, 2, "USD").await,
        (dec("35.05"), dec("0"), dec("35.05"))
    );
    // The received funds are spendable right away, and nothing was minted.
    ledger
        .request_withdrawal(2, "USD", dec("35.05"), None)
        .await
        .unwrap();
    let audit = ledger.audit().await.unwrap();
    assert!(audit.is_clean(), "{:?}", audit.violations);
    let (_, usd) = &audit.totals[&code("USD")];
    assert_eq!(usd.total(), 10_500, "cents");
    assert_eq!(usd.deposited, 10_500);
    ledger.shutdown().await;
}

#[tokio::test]
async fn a_transfer_of_everything_available_leaves_zero_and_locked_funds_stay_put() {
    let ledger = open();
    ledger.deposit(1, "BTC", dec("1"), None).await.unwrap();
    let w = ledger
        .request_withdrawal(1, "BTC", dec("0.4"), None)
        .await
        .unwrap();
    ledger
        .transfer(1, 2, "BTC", dec("0.6"), None)
        .await
        .unwrap();
    assert_eq!(
        balance(&ledger, 1, "BTC").await,
        (dec("0"), dec("0.4"), dec("0.4"))
    );
    assert_eq!(
        balance(&ledger, 2, "BTC").await,
        (dec("0.6"), dec("0"), dec("0.6"))
    );
    // The lock is still whole and can complete.
    ledger
        .complete_withdrawal(w.transaction_id, WithdrawalOutcome::Completed)
        .await
        .unwrap();
    assert_eq!(
        balance(&ledger, 1, "BTC").await,
        (dec("0"), dec("0"), dec("0"))
    );
    assert_clean(&ledger).await;
    ledger.shutdown().await;
}

#[tokio::test]
async fn a_transfer_with_insufficient_funds_leaves_both_accounts_unchanged() {
    let ledger = open();
    ledger.deposit(1, "USD", dec("100"), None).await.unwrap();
    ledger.deposit(2, "USD", dec("7"), None).await.unwrap();
    let w = ledger
        .request_withdrawal(1, "USD", dec("60"), None)
        .await
        .unwrap();
    let before = (
        ledger.balances(1).await.unwrap(),
        ledger.balances(2).await.unwrap(),
        ledger.withdrawal(w.transaction_id).await.unwrap(),
        ledger.audit().await.unwrap().totals,
    );
    // Only 40 is available: locked funds cannot be transferred.
    for amount in ["40.01", "60", "100", "1000000000000"] {
        assert_eq!(
            ledger
                .transfer(1, 2, "USD", dec(amount), None)
                .await
                .unwrap_err(),
            LedgerError::InsufficientFunds {
                currency: code("USD"),
                available: dec("40"),
                requested: dec(amount),
            }
        );
    }
    // A currency the source never held.
    assert_eq!(
        ledger
            .transfer(1, 2, "EUR", dec("1"), None)
            .await
            .unwrap_err(),
        LedgerError::InsufficientFunds {
            currency: code("EUR"),
            available: dec("0"),
            requested: dec("1"),
        }
    );
    let after = (
        ledger.balances(1).await.unwrap(),
        ledger.balances(2).await.unwrap(),
        ledger.withdrawal(w.transaction_id).await.unwrap(),
        ledger.audit().await.unwrap().totals,
    );
    assert_eq!(after, before);
    assert_eq!(after.2.status, WithdrawalStatus::Pending);
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
    assert_eq!(
        balance(&ledger, 99, "USD").await,
        (dec("4"), dec("0"), dec("4"))
    );
    // The new account is a full account: it can withdraw and transfer.
    let w = ledger
        .request_withdrawal(99, "USD", dec("1"), None)
        .await
        .unwrap();
    ledger
        .complete_withdrawal(w.transaction_id, WithdrawalOutcome::Completed)
        .await
        .unwrap();
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
        LedgerError::InsufficientFunds {
            currency: code("USD"),
            available: dec("0"),
            requested: dec("1"),
        }
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
    let audit = ledger.audit().await.unwrap();
    assert!(audit.is_clean(), "{:?}", audit.violations);
    assert_eq!(audit.accounts, 16);
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
        ops.push(Operation::Transfer {
            from: a,
            to: next,
            currency: code("USD"),
            amount: dec("3"),
            idempotency_key: None,
        });
        ops.push(Operation::Transfer {
            from: a,
            to: next,
            currency: code("USD"),
            amount: dec("20"),
            idempotency_key: None,
        });
    }
    let results = ledger.submit(ops).await;
    assert_eq!(results.len(), 64);
    for (i, pair) in results.chunks(2).enumerate() {
        let from = accounts[i];
        match &pair[0] {
            Ok(Outcome::Transferred(t)) => {
                assert_eq!((t.from, t.amount), (from, dec("3")));
            }
            other => panic!("transfer of 3 from {from}: {other:?}"),
        }
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
    let mut tasks = Vec::new();
    for i in 0..2000 {
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
        let ledger = ledger.clone();
        tasks.push(tokio::spawn(async move {
            (
                from,
                to,
                amount,
                ledger.transfer(from, to, "USD", amount, None).await,
            )
        }));
    }
    let mut expected: BTreeMap<u64, Decimal> = accounts.iter().map(|&a| (a, initial)).collect();
    let (mut ok, mut insufficient) = (0, 0);
    let mut ids = std::collections::HashSet::new();
    for task in tasks {
        let (from, to, amount, result) = task.await.unwrap();
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
    let audit = ledger.audit().await.unwrap();
    assert!(audit.is_clean(), "{:?}", audit.violations);
    assert_eq!(audit.totals[&code("USD")].1.total(), 40_000);
    ledger.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn concurrent_transfers_and_withdrawals_across_many_accounts_keep_every_invariant() {
    let ledger = Ledger::open(Config {
        account_pending_withdrawals_max: 10_000,
        ..Config::for_tests()
    })
    .unwrap();
    let accounts: Vec<u64> = (1..=64).collect();
    assert!(accounts.iter().any(|&a| shard_of(a, 2) == 0));
    assert!(accounts.iter().any(|&a| shard_of(a, 2) == 1));
    for &a in &accounts {
        ledger.deposit(a, "EUR", dec("50"), None).await.unwrap();
    }
    let mut rng = Rng(0xfeed_beef_0042_0007);
    let mut tasks = Vec::new();
    for _ in 0..3000 {
        let from = accounts[rng.below(64) as usize];
        let to = accounts[rng.below(64) as usize];
        let amount = Decimal::new(1 + rng.below(2_000) as i64, 2);
        let kind = rng.below(4);
        let ledger = ledger.clone();
        tasks.push(tokio::spawn(async move {
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
        }));
    }
    let mut burned = Decimal::ZERO;
    for task in tasks {
        match task.await.unwrap() {
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
    let audit = ledger.audit().await.unwrap();
    assert!(audit.is_clean(), "{:?}", audit.violations);
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
    let mut tasks = Vec::new();
    for i in 0..1000 {
        let ledger = ledger.clone();
        let (from, to) = if i % 2 == 0 { (a, b) } else { (b, a) };
        tasks.push(tokio::spawn(async move {
            ledger.transfer(from, to, "USD", dec("1"), None).await
        }));
    }
    // 500 each way: neither side can ever drop below 500, so all succeed.
    for task in tasks {
        task.await.unwrap().unwrap();
    }
    assert_eq!(
        balance(&ledger, a, "USD").await,
        (dec("1000"), dec("0"), dec("1000"))
    );
    assert_eq!(
        balance(&ledger, b, "USD").await,
        (dec("1000"), dec("0"), dec("1000"))
    );
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
    let mut tasks = Vec::new();
    for i in 0..1000 {
        let ledger = ledger.clone();
        let to = sinks[i % sinks.len()];
        tasks.push(tokio::spawn(async move {
            ledger.transfer(source, to, "USD", dec("1"), None).await
        }));
    }
    let mut ok = 0;
    for task in tasks {
        match task.await.unwrap() {
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
    let transfer = || Operation::Transfer {
        from: 1,
        to: 2,
        currency: code("USD"),
        amount: dec("10"),
        idempotency_key: Some(burnledger::IdempotencyKey::new("k").unwrap()),
    };
    let results = ledger.submit(vec![transfer(), transfer()]).await;
    let ids: Vec<_> = results
        .into_iter()
        .map(|r| match r {
            Ok(Outcome::Transferred(t)) => t.transaction_id,
            other => panic!("expected the transfer and its replay, got {other:?}"),
        })
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
            Operation::Transfer {
                from: 2,
                to: 3,
                currency: code("USD"),
                amount: dec("5"),
                idempotency_key: None,
            },
            Operation::RequestWithdrawal {
                account: 2,
                currency: code("USD"),
                amount: dec("5"),
                idempotency_key: None,
            },
            Operation::Deposit {
                account: 2,
                currency: code("USD"),
                amount: dec("1"),
                idempotency_key: None,
            },
            Operation::RequestWithdrawal {
                account: 2,
                currency: code("USD"),
                amount: dec("1"),
                idempotency_key: None,
            },
        ])
        .await;
    assert!(matches!(results[0], Ok(Outcome::Transferred(_))));
    assert!(matches!(
        results[1],
        Err(LedgerError::InsufficientFunds { .. })
    ));
    assert!(matches!(results[2], Ok(Outcome::Deposited(_))));
    assert!(matches!(results[3], Ok(Outcome::Withdrawal(_))));
    assert_eq!(
        balance(&ledger, 2, "USD").await,
        (dec("0"), dec("1"), dec("1"))
    );
    assert_eq!(balance(&ledger, 3, "USD").await.0, dec("5"));
    assert_clean(&ledger).await;
}
