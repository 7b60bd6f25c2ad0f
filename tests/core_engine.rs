//! Black-box tests of the core engine through the public `Ledger` handle.

use std::str::FromStr;

use burnledger::{
    AmountProblem, Balance, Config, Decimal, IdempotencyKey, Ledger, LedgerError, Operation,
    Outcome, TransactionId, WithdrawalOutcome, WithdrawalStatus,
};

fn dec(s: &str) -> Decimal {
    Decimal::from_str(s).unwrap()
}

fn open() -> Ledger {
    Ledger::open(Config::for_tests()).unwrap()
}

/// A test ledger whose pending-withdrawal cap does not get in the way.
fn open_uncapped() -> Ledger {
    Ledger::open(Config {
        account_pending_withdrawals_max: 10_000,
        ..Config::for_tests()
    })
    .unwrap()
}

/// (available, locked, total) of one balance, as strings for easy reading.
async fn balance(ledger: &Ledger, account: u64, currency: &str) -> (Decimal, Decimal, Decimal) {
    let Balance {
        available,
        locked,
        total,
        ..
    } = ledger.balance(account, currency).await.unwrap();
    (available, locked, total)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn thousand_concurrent_withdrawals_of_one_against_a_hundred_lock_exactly_a_hundred() {
    let ledger = open_uncapped();
    ledger.deposit(1, "USD", dec("100"), None).await.unwrap();
    let mut tasks = Vec::new();
    for _ in 0..1000 {
        let ledger = ledger.clone();
        tasks.push(tokio::spawn(async move {
            ledger.request_withdrawal(1, "USD", dec("1"), None).await
        }));
    }
    let (mut ok, mut insufficient) = (0, 0);
    for task in tasks {
        match task.await.unwrap() {
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
    assert_eq!(
        balance(&ledger, 1, "USD").await,
        (dec("0"), dec("100"), dec("100"))
    );
    let audit = ledger.audit().await.unwrap();
    assert!(audit.is_clean(), "{:?}", audit.violations);
    ledger.shutdown().await;
}
