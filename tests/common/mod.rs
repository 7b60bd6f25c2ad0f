//! Helpers shared by the black-box test binaries of the `Ledger` handle
//! (`withdrawals`, `amounts`, `rejections`, `batch_form`, `admission`,
//! `shutdown`, `account_actors`, `idempotency`, `transfers`, ...): amounts
//! and codes from text; test ledgers and configurations, and the fixture
//! [`with_ledger`] (opens a ledger, runs the test's body, asserts the audit
//! clean, shuts down); balance getters and checks; the before/after state
//! capture that proves a rejection changed nothing; batch-operation
//! builders; running many calls at once; a seeded generator. Submodules: `serve` (the real
//! binary), `in_process` (the HTTP service on a ledger the test holds),
//! `nats` (a 3-node NATS JetStream cluster, feature `replication`);
//! `faults.rs` beside them (storage damage) is included by the recovery
//! tests directly.

// Every test binary compiles its own copy of this module and uses a
// different subset of it; what one binary leaves unused would otherwise
// warn as dead code there.
#![allow(dead_code)]

#[cfg(feature = "http")]
pub mod in_process;
#[cfg(feature = "replication")]
pub mod nats;
pub mod serve;

use std::collections::BTreeMap;
use std::future::Future;
use std::str::FromStr;

use burnledger::domain::audit::CurrencyTotals;
use burnledger::domain::ids::shard_of;
use burnledger::domain::money::Currency;
use burnledger::domain::withdrawal::TransitionAction;
use burnledger::{
    Audit, Balance, Config, CurrencyCode, CurrencyConfig, Decimal, Deposit, IdempotencyKey, Ledger,
    LedgerError, Operation, Outcome, TransactionId, Transfer, Withdrawal, WithdrawalOutcome,
};
use tokio::task::JoinHandle;

// ---------------------------------------------------------------------------
// Values from text
// ---------------------------------------------------------------------------

pub fn dec(s: &str) -> Decimal {
    Decimal::from_str(s).unwrap()
}

pub fn code(s: &str) -> CurrencyCode {
    CurrencyCode::new(s).unwrap()
}

pub fn key(s: &str) -> Option<IdempotencyKey> {
    Some(IdempotencyKey::new(s).unwrap())
}

/// The error for a key reused with other parameters.
pub fn conflict(k: &str) -> LedgerError {
    LedgerError::IdempotencyConflict { key: k.into() }
}

/// The error for asking `requested` when `available` is all there is.
pub fn insufficient(currency: &str, available: &str, requested: &str) -> LedgerError {
    LedgerError::InsufficientFunds {
        currency: code(currency),
        available: dec(available),
        requested: dec(requested),
        part: burnledger::error::FundsPart::Amount,
    }
}

// ---------------------------------------------------------------------------
// Test ledgers
// ---------------------------------------------------------------------------

pub fn open() -> Ledger {
    Ledger::open(Config::for_tests()).unwrap()
}

/// A test ledger whose pending-withdrawal cap does not get in the way.
pub fn open_uncapped() -> Ledger {
    Ledger::open(uncapped()).unwrap()
}

/// A test ledger with exactly these currencies.
pub fn open_with_currencies(currencies: Vec<CurrencyConfig>) -> Ledger {
    Ledger::open(with_currencies(currencies)).unwrap()
}

/// The test configuration with a pending-withdrawal cap that does not get
/// in the way.
pub fn uncapped() -> Config {
    Config {
        account_pending_withdrawals_max: 10_000,
        ..Config::for_tests()
    }
}

/// The test configuration with exactly these currencies.
pub fn with_currencies(currencies: Vec<CurrencyConfig>) -> Config {
    Config {
        currencies,
        ..Config::for_tests()
    }
}

/// The fixture of a test of the `Ledger` handle: opens a ledger with
/// `config`, runs `body` on it, then asserts the ledger's audit clean and
/// shuts it down — so the test itself states only its behaviour.
pub async fn with_ledger<Fut>(config: Config, body: impl FnOnce(Ledger) -> Fut)
where
    Fut: Future<Output = ()>,
{
    let ledger = Ledger::open(config).unwrap();
    body(ledger.clone()).await;
    assert_clean(&ledger).await;
    ledger.shutdown().await;
}

/// The balance ceiling: 1e28 minor units.
pub const CEILING: &str = "10000000000000000000000000000";

/// "PTS", a currency without decimals whose per-operation maximum is the
/// balance ceiling itself, so the ceiling can be reached in one deposit.
pub fn ceiling_currency() -> CurrencyConfig {
    CurrencyConfig {
        code: "PTS".into(),
        decimals: 0,
        amount_max: dec(CEILING),
    }
}

/// `count` account ids on `shard` of a two-shard ledger, from `start` up.
pub fn accounts_on_shard(shard: usize, count: usize, start: u64) -> Vec<u64> {
    (start..)
        .filter(|&a| shard_of(a, 2) == shard)
        .take(count)
        .collect()
}

// ---------------------------------------------------------------------------
// Balances and the audit
// ---------------------------------------------------------------------------

/// (available, locked, total) of one balance.
pub async fn balance(ledger: &Ledger, account: u64, currency: &str) -> (Decimal, Decimal, Decimal) {
    let Balance {
        available,
        locked,
        total,
        ..
    } = ledger.balance(account, currency).await.unwrap();
    (available, locked, total)
}

/// An expected amount: text as [`dec`] reads it, or a `Decimal`.
pub trait Amount: Copy {
    fn amount(self) -> Decimal;
}

impl Amount for &str {
    fn amount(self) -> Decimal {
        dec(self)
    }
}

impl Amount for Decimal {
    fn amount(self) -> Decimal {
        self
    }
}

/// Asserts one balance is exactly `[available, locked, total]`.
pub async fn assert_balance(
    ledger: &Ledger,
    account: u64,
    currency: &str,
    expected: [impl Amount; 3],
) {
    let [available, locked, total] = expected.map(Amount::amount);
    assert_eq!(
        balance(ledger, account, currency).await,
        (available, locked, total),
        "(available, locked, total) of account {account} in {currency}"
    );
}

/// The ledger's audit, asserted clean.
pub async fn clean_audit(ledger: &Ledger) -> Audit {
    let audit = ledger.audit().await.unwrap();
    assert!(audit.is_clean(), "{:?}", audit.violations);
    audit
}

pub async fn assert_clean(ledger: &Ledger) {
    clean_audit(ledger).await;
}

/// Asserts that a deposit to account 1, a withdrawal from it and a transfer
/// from it to account 2, of `amount` in `currency`, are each refused with
/// `expected`.
pub async fn assert_refused_by_every_kind(
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

/// Everything observable about some accounts and withdrawals, plus the
/// ledger-wide sums, so "a rejected operation changes nothing" can be
/// asserted as `before == after`.
#[derive(Debug)]
pub struct Snapshot {
    pub balances: Vec<(u64, Vec<Balance>)>,
    pub withdrawals: Vec<Withdrawal>,
    pub accounts: usize,
    pub totals: BTreeMap<CurrencyCode, (Currency, CurrencyTotals)>,
    pub withdrawals_by_status: BTreeMap<&'static str, u64>,
}

/// Equal when they print the same: as strict as comparing the values, and
/// also catches a decimal that kept its value but changed its scale.
impl PartialEq for Snapshot {
    fn eq(&self, other: &Self) -> bool {
        format!("{self:?}") == format!("{other:?}")
    }
}

/// Captures a [`Snapshot`]; the audit it is taken from must be clean.
pub async fn snapshot(
    ledger: &Ledger,
    accounts: &[u64],
    withdrawals: &[TransactionId],
) -> Snapshot {
    let mut balances = Vec::new();
    for &account in accounts {
        balances.push((account, ledger.balances(account).await.unwrap()));
    }
    let mut views = Vec::new();
    for &tx in withdrawals {
        views.push(ledger.withdrawal(tx).await.unwrap());
    }
    let audit = clean_audit(ledger).await;
    Snapshot {
        balances,
        withdrawals: views,
        accounts: audit.accounts,
        totals: audit.totals,
        withdrawals_by_status: audit.withdrawals_by_status,
    }
}

// ---------------------------------------------------------------------------
// Calls through the public API
// ---------------------------------------------------------------------------

/// Requests a withdrawal without a key, which must succeed.
pub async fn request_withdrawal(
    ledger: &Ledger,
    account: u64,
    currency: &str,
    amount: &str,
) -> Withdrawal {
    ledger
        .request_withdrawal(account, currency, dec(amount), None)
        .await
        .unwrap()
}

/// Completes a withdrawal as paid, which must succeed.
pub async fn complete(ledger: &Ledger, tx: TransactionId) -> Withdrawal {
    ledger
        .complete_withdrawal(tx, WithdrawalOutcome::Completed)
        .await
        .unwrap()
}

/// Applies a state-machine action through the public API.
pub async fn act(
    ledger: &Ledger,
    tx: TransactionId,
    action: TransitionAction,
    reason: &str,
) -> Result<Withdrawal, LedgerError> {
    match action {
        TransitionAction::Complete => {
            ledger
                .complete_withdrawal(tx, WithdrawalOutcome::Completed)
                .await
        }
        TransitionAction::Fail => {
            ledger
                .complete_withdrawal(
                    tx,
                    WithdrawalOutcome::Failed {
                        reason: reason.to_string(),
                    },
                )
                .await
        }
        TransitionAction::Cancel => ledger.cancel_withdrawal(tx).await,
        other => panic!("{other} is the payout actor's, not the API's"),
    }
}

// ---------------------------------------------------------------------------
// The batch form
// ---------------------------------------------------------------------------

pub fn deposit_op(account: u64, currency: &str, amount: &str) -> Operation {
    Operation::Deposit {
        account,
        currency: code(currency),
        amount: dec(amount),
        idempotency_key: None,
        metadata: Default::default(),
    }
}

pub fn withdraw_op(account: u64, currency: &str, amount: &str) -> Operation {
    Operation::RequestWithdrawal {
        account,
        currency: code(currency),
        amount: dec(amount),
        idempotency_key: None,
        options: Default::default(),
    }
}

pub fn transfer_op(from: u64, to: u64, currency: &str, amount: &str) -> Operation {
    Operation::Transfer {
        from,
        to,
        currency: code(currency),
        amount: dec(amount),
        idempotency_key: None,
        metadata: Default::default(),
    }
}

/// `op` with the idempotency key `k`.
pub fn keyed(mut op: Operation, k: &str) -> Operation {
    match &mut op {
        Operation::Deposit {
            idempotency_key, ..
        }
        | Operation::RequestWithdrawal {
            idempotency_key, ..
        }
        | Operation::Transfer {
            idempotency_key, ..
        } => *idempotency_key = key(k),
        other => panic!("{other:?} takes no idempotency key"),
    }
    op
}

pub fn deposited(result: &Result<Outcome, LedgerError>) -> &Deposit {
    match result {
        Ok(Outcome::Deposited(d)) => d,
        other => panic!("expected a deposit, got {other:?}"),
    }
}

pub fn withdrawn(result: &Result<Outcome, LedgerError>) -> &Withdrawal {
    match result {
        Ok(Outcome::Withdrawal(w)) => w,
        other => panic!("expected a withdrawal, got {other:?}"),
    }
}

pub fn transferred(result: &Result<Outcome, LedgerError>) -> &Transfer {
    match result {
        Ok(Outcome::Transferred(t)) => t,
        other => panic!("expected a transfer, got {other:?}"),
    }
}

// ---------------------------------------------------------------------------
// Many calls at once
// ---------------------------------------------------------------------------

/// Spawns `count` tasks, the `i`th running `task(its own clone of the
/// ledger, i)`. `task` itself is called here, in order, so it may draw from
/// a seeded generator; every task is spawned before any is awaited.
pub fn spawn_each<T, Fut>(
    ledger: &Ledger,
    count: usize,
    mut task: impl FnMut(Ledger, usize) -> Fut,
) -> Vec<JoinHandle<T>>
where
    Fut: Future<Output = T> + Send + 'static,
    T: Send + 'static,
{
    (0..count)
        .map(|i| tokio::spawn(task(ledger.clone(), i)))
        .collect()
}

/// Awaits every task, in order; a task that panicked fails the test.
pub async fn join_all<T>(tasks: Vec<JoinHandle<T>>) -> Vec<T> {
    let mut results = Vec::with_capacity(tasks.len());
    for task in tasks {
        results.push(task.await.unwrap());
    }
    results
}

/// [`spawn_each`], then [`join_all`]: the results in spawn order.
pub async fn concurrently<T, Fut>(
    ledger: &Ledger,
    count: usize,
    task: impl FnMut(Ledger, usize) -> Fut,
) -> Vec<T>
where
    Fut: Future<Output = T> + Send + 'static,
    T: Send + 'static,
{
    join_all(spawn_each(ledger, count, task)).await
}

/// Small deterministic generator (xorshift64*), seeded, so failures
/// reproduce.
pub struct Rng(pub u64);

impl Rng {
    pub fn next(&mut self) -> u64 {
        self.0 ^= self.0 >> 12;
        self.0 ^= self.0 << 25;
        self.0 ^= self.0 >> 27;
        self.0.wrapping_mul(0x2545_f491_4f6c_dd1d)
    }

    pub fn below(&mut self, n: u64) -> u64 {
        self.next() % n
    }

    pub fn pick<T: Copy>(&mut self, items: &[T]) -> T {
        items[self.below(items.len() as u64) as usize]
    }
}
