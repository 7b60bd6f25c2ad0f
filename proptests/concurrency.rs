//! Concurrent operations: deposits, withdrawals and transfers on two or
//! three accounts, some under shared idempotency keys, all launched at
//! once. Whatever interleaving the engine picks, the outcome must be one a
//! serial execution could give:
//!
//! - every refusal is one of insufficient funds or an idempotency answer,
//!   and each is justified: an insufficient-funds refusal asked for more
//!   than the account held at its lowest (initial balance minus every
//!   successful debit); a conflict has a success under the same key with
//!   other parameters; an in-progress has a transfer under the same key
//!   with the same parameters;
//! - each idempotency key applied at most once, and every success under
//!   it reports that one transaction;
//! - the successful operations can be put in a serial order in which every
//!   debit was affordable;
//! - final balances are exactly the initial ones plus the effects of the
//!   successful operations (so nothing is lost, created or over-locked:
//!   conservation, locked = Σ pending withdrawals, nothing negative), the
//!   audit is clean, and a crash + reopen brings back the same state.
//!
//! `PROPTEST_CASES` sets the number of cases (default 256).

#[path = "../tests/common/observed.rs"]
mod observed;
mod support;

use std::collections::{BTreeMap, BTreeSet};
use std::sync::Arc;

use burnledger::{AccountExport, Ledger, LedgerError};
use proptest::prelude::*;
use proptest::test_runner::TestCaseError;

use support::{ledger_config, to_decimal, to_units};

type Acct = u64;
type Tx = (Acct, u64);
const ACCOUNTS: [Acct; 3] = [11, 12, 13];
const CURRENCIES: [(&str, u32, i128); 2] = [("USD", 2, 25), ("BTC", 8, 1_000_000)];

#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord)]
enum Kind {
    Deposit,
    Withdraw,
    Transfer,
}

/// One operation: `account` is the one it acts on (a transfer's source).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
struct Op {
    kind: Kind,
    account: usize,
    /// A transfer's receiver, as an offset to another account.
    to_offset: usize,
    currency: usize,
    steps: u8,
    key: Option<u8>,
}

#[derive(Clone, Debug)]
struct Case {
    accounts: usize,
    /// Initial deposits per (account, currency), in steps.
    initial: Vec<[u8; 2]>,
    ops: Vec<Op>,
}

fn op() -> impl Strategy<Value = Op> {
    let kind = prop_oneof![
        2 => Just(Kind::Deposit),
        3 => Just(Kind::Withdraw),
        4 => Just(Kind::Transfer),
    ];
    (
        kind,
        0usize..3,
        0usize..2,
        prop_oneof![4 => Just(0usize), 1 => Just(1usize)],
        1u8..=10,
        prop::option::weighted(0.4, 0u8..2),
    )
        .prop_map(|(kind, account, to_offset, currency, steps, key)| Op {
            kind,
            account,
            to_offset,
            currency,
            steps,
            key,
        })
}

fn case() -> impl Strategy<Value = Case> {
    (
        2usize..=3,
        prop::collection::vec([0u8..=20, 0u8..=20], 3),
        prop::collection::vec(op(), 2..=10),
        prop::collection::vec(any::<prop::sample::Index>(), 0..=3),
    )
        .prop_map(|(accounts, initial, mut ops, duplicates)| {
            // The same request sent twice at once, under one key.
            for pick in duplicates {
                let i = pick.index(ops.len());
                ops[i].key.get_or_insert(0);
                ops.push(ops[i]);
            }
            Case {
                accounts,
                initial,
                ops,
            }
        })
}

/// An operation with its accounts resolved and its amount in units.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
struct Concrete {
    kind: Kind,
    account: Acct,
    to: Option<Acct>,
    currency: usize,
    amount: i128,
    key: Option<u8>,
}

impl Concrete {
    fn of(op: &Op, accounts: usize) -> Self {
        let account = ACCOUNTS[op.account % accounts];
        let to = (op.kind == Kind::Transfer).then(|| {
            ACCOUNTS[(op.account % accounts + 1 + op.to_offset % (accounts - 1)) % accounts]
        });
        Self {
            kind: op.kind,
            account,
            to,
            currency: op.currency,
            amount: i128::from(op.steps) * CURRENCIES[op.currency].2,
            key: op.key,
        }
    }

    /// What an idempotency key is compared on.
    fn params(&self) -> (Kind, Option<Acct>, usize, i128) {
        (self.kind, self.to, self.currency, self.amount)
    }

    /// The (account, currency) this operation takes available funds from.
    fn debits(&self) -> Option<(Acct, usize)> {
        (self.kind != Kind::Deposit).then_some((self.account, self.currency))
    }
}

/// What a success reported.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
struct Receipt {
    tx: Tx,
    kind: Kind,
    account: Acct,
    to: Option<Acct>,
    currency: usize,
    amount: i128,
}

type Answer = Result<Receipt, &'static str>;

fn currency_index(code: &str) -> usize {
    CURRENCIES
        .iter()
        .position(|(c, _, _)| *c == code)
        .unwrap_or(usize::MAX)
}

fn receipt_amount(amount: burnledger::Decimal, currency: usize) -> i128 {
    to_units(amount, CURRENCIES[currency].1).unwrap_or(i128::MIN)
}

async fn execute(ledger: &Ledger, op: Concrete) -> Answer {
    let (code, decimals, _) = CURRENCIES[op.currency];
    let amount = to_decimal(op.amount, decimals);
    let key = op.key.map(|k| format!("key-{k}"));
    let key = key.as_deref();
    let code_of = |e: LedgerError| e.code();
    match op.kind {
        Kind::Deposit => ledger
            .deposit(op.account, code, amount, key)
            .await
            .map(|d| {
                let currency = currency_index(d.currency.as_str());
                Receipt {
                    tx: (d.transaction_id.account(), d.transaction_id.sequence()),
                    kind: Kind::Deposit,
                    account: d.account,
                    to: None,
                    currency,
                    amount: receipt_amount(d.amount, currency),
                }
            })
            .map_err(code_of),
        Kind::Withdraw => ledger
            .request_withdrawal(op.account, code, amount, key)
            .await
            .map(|w| {
                let currency = currency_index(w.currency.as_str());
                Receipt {
                    tx: (w.transaction_id.account(), w.transaction_id.sequence()),
                    kind: Kind::Withdraw,
                    account: w.account,
                    to: None,
                    currency,
                    amount: receipt_amount(w.amount, currency),
                }
            })
            .map_err(code_of),
        Kind::Transfer => ledger
            .transfer(
                op.account,
                op.to.expect("a transfer has a receiver"),
                code,
                amount,
                key,
            )
            .await
            .map(|t| {
                let currency = currency_index(t.currency.as_str());
                Receipt {
                    tx: (t.transaction_id.account(), t.transaction_id.sequence()),
                    kind: Kind::Transfer,
                    account: t.from,
                    to: Some(t.to),
                    currency,
                    amount: receipt_amount(t.amount, currency),
                }
            })
            .map_err(code_of),
    }
}

/// Balances (available, locked) and withdrawals (amount, still pending)
/// as the engine holds them.
#[derive(Debug, PartialEq, Eq)]
struct State {
    balances: BTreeMap<(Acct, usize), (i128, i128)>,
    withdrawals: BTreeMap<Tx, (usize, i128, bool)>,
}

fn state_of(accounts: &[AccountExport]) -> State {
    let mut state = State {
        balances: BTreeMap::new(),
        withdrawals: BTreeMap::new(),
    };
    for account in accounts {
        for b in &account.balances {
            let currency = currency_index(b.currency.as_str());
            let available = receipt_amount(b.available, currency);
            let locked = receipt_amount(b.locked, currency);
            if (available, locked) != (0, 0) {
                state
                    .balances
                    .insert((account.id, currency), (available, locked));
            }
        }
        for w in &account.withdrawals {
            let tx = w.transaction_id;
            let currency = currency_index(w.currency.as_str());
            state.withdrawals.insert(
                (tx.account(), tx.sequence()),
                (
                    currency,
                    receipt_amount(w.amount, currency),
                    w.status == burnledger::WithdrawalStatus::Pending,
                ),
            );
        }
    }
    state
}

fn fail(message: impl Into<String>) -> TestCaseError {
    TestCaseError::fail(message.into())
}

/// Whether the successful operations can run one after another, from
/// `initial`, with every debit affordable when it runs (a search over the
/// subsets already run: the balances depend only on which ran).
fn serial_order_exists(initial: &BTreeMap<(Acct, usize), i128>, applied: &[Receipt]) -> bool {
    let n = applied.len();
    let full = (1usize << n) - 1;
    let mut reachable = vec![false; 1 << n];
    reachable[0] = true;
    for mask in 0..=full {
        if !reachable[mask] {
            continue;
        }
        let mut available = initial.clone();
        for (i, r) in applied.iter().enumerate() {
            if mask & (1 << i) != 0 {
                apply_available(&mut available, r);
            }
        }
        for (i, r) in applied.iter().enumerate() {
            if mask & (1 << i) != 0 {
                continue;
            }
            let affordable = r.kind == Kind::Deposit
                || available
                    .get(&(r.account, r.currency))
                    .copied()
                    .unwrap_or(0)
                    >= r.amount;
            if affordable {
                reachable[mask | (1 << i)] = true;
            }
        }
    }
    reachable[full]
}

fn apply_available(available: &mut BTreeMap<(Acct, usize), i128>, r: &Receipt) {
    match r.kind {
        Kind::Deposit => *available.entry((r.account, r.currency)).or_default() += r.amount,
        Kind::Withdraw => *available.entry((r.account, r.currency)).or_default() -= r.amount,
        Kind::Transfer => {
            *available.entry((r.account, r.currency)).or_default() -= r.amount;
            let to = r.to.expect("a transfer has a receiver");
            *available.entry((to, r.currency)).or_default() += r.amount;
        }
    }
}

async fn run_case(case: Case) -> Result<(), TestCaseError> {
    let dir = tempfile::tempdir().map_err(|e| fail(e.to_string()))?;
    let open = || {
        Ledger::open(ledger_config(dir.path(), 1_000, None))
            .map_err(|e| fail(format!("Ledger::open failed: {e}")))
    };
    let ledger = open()?;
    let accounts = &ACCOUNTS[..case.accounts];

    // Serially: the initial balances.
    let mut initial: BTreeMap<(Acct, usize), i128> = BTreeMap::new();
    for (a, account) in accounts.iter().enumerate() {
        for (c, (code, decimals, step)) in CURRENCIES.iter().enumerate() {
            let units = i128::from(case.initial[a][c]) * step;
            if units > 0 {
                ledger
                    .deposit(*account, code, to_decimal(units, *decimals), None)
                    .await
                    .map_err(|e| fail(format!("initial deposit: {e}")))?;
                initial.insert((*account, c), units);
            }
        }
    }

    // All at once.
    let ops: Vec<Concrete> = case
        .ops
        .iter()
        .map(|op| Concrete::of(op, case.accounts))
        .collect();
    let start = Arc::new(tokio::sync::Barrier::new(ops.len()));
    let tasks: Vec<_> = ops
        .iter()
        .map(|op| {
            let (ledger, start, op) = (ledger.clone(), Arc::clone(&start), *op);
            tokio::spawn(async move {
                start.wait().await;
                execute(&ledger, op).await
            })
        })
        .collect();
    let mut answers: Vec<Answer> = Vec::with_capacity(tasks.len());
    for task in tasks {
        answers.push(
            task.await
                .map_err(|e| fail(format!("a task panicked: {e}")))?,
        );
    }
    if std::env::var_os("BURNLEDGER_PROPTEST_TRACE").is_some() {
        for (op, answer) in ops.iter().zip(&answers) {
            eprintln!("{:?} {:?} -> {:?}", op.kind, op.key, answer.map(|r| r.kind));
        }
    }
    let outcome = check(&ledger, &initial, &ops, &answers).await;
    let report = |e: TestCaseError| {
        let TestCaseError::Fail(reason) = e else {
            return e;
        };
        let lines: Vec<String> = ops
            .iter()
            .zip(&answers)
            .map(|(op, answer)| format!("{op:?} -> {answer:?}"))
            .collect();
        fail(format!(
            "{reason}\ninitial: {initial:?}\noperations:\n  {}",
            lines.join("\n  ")
        ))
    };
    let before = outcome.map_err(report)?;

    // A crash (no shutdown) and a reopen bring back the same state.
    drop(ledger);
    let reopened = open()?;
    let after = state_of(
        &observed::observed(&reopened)
            .await
            .map_err(|e| fail(e.to_string()))?,
    );
    reopened.shutdown().await;
    if after != before {
        return Err(report(fail(format!(
            "after a crash and reopen the state differs:\n  before: {before:?}\n  after:  {after:?}"
        ))));
    }
    Ok(())
}

/// Checks the answers and the final state; returns the state.
async fn check(
    ledger: &Ledger,
    initial: &BTreeMap<(Acct, usize), i128>,
    ops: &[Concrete],
    answers: &[Answer],
) -> Result<State, TestCaseError> {
    // Successes: receipts must echo the operation.
    for (op, answer) in ops.iter().zip(answers) {
        if let Ok(r) = answer {
            let echoed = (r.kind, r.account, r.to, r.currency, r.amount)
                == (op.kind, op.account, op.to, op.currency, op.amount);
            if !echoed || r.tx.0 != op.account {
                return Err(fail(format!("receipt {r:?} does not match {op:?}")));
            }
        }
    }
    // Idempotency: per (account, key), at most one transaction, and every
    // success under the key reports it.
    let mut applied: BTreeMap<Tx, Receipt> = BTreeMap::new();
    let mut by_key: BTreeMap<(Acct, u8), BTreeSet<Tx>> = BTreeMap::new();
    for (op, answer) in ops.iter().zip(answers) {
        if let Ok(r) = answer {
            if let Some(previous) = applied.insert(r.tx, *r) {
                if previous != *r {
                    return Err(fail(format!(
                        "{:?} reported as {previous:?} and {r:?}",
                        r.tx
                    )));
                }
                if op.key.is_none() {
                    return Err(fail(format!("{:?} reported twice without a key", r.tx)));
                }
            }
            if let Some(key) = op.key {
                by_key.entry((op.account, key)).or_default().insert(r.tx);
            }
        }
    }
    if let Some((key, txs)) = by_key.iter().find(|(_, txs)| txs.len() > 1) {
        return Err(fail(format!(
            "key {key:?} applied {} times: {txs:?}",
            txs.len()
        )));
    }
    // Refusals: only these, and each justified.
    for (op, answer) in ops.iter().zip(answers) {
        let Err(code) = answer else { continue };
        let same_key = |r: &&Receipt| {
            op.key.is_some()
                && ops.iter().zip(answers).any(|(o, a)| {
                    o.key == op.key && o.account == op.account && a.as_ref().ok() == Some(*r)
                })
        };
        let justified = match *code {
            "insufficient_funds" => {
                let (account, currency) = op.debits().expect("only debits are refused");
                let debits: i128 = applied
                    .values()
                    .filter(|r| {
                        r.kind != Kind::Deposit && (r.account, r.currency) == (account, currency)
                    })
                    .map(|r| r.amount)
                    .sum();
                let lowest = initial.get(&(account, currency)).copied().unwrap_or(0) - debits;
                op.amount > lowest
            }
            "idempotency_conflict" => applied
                .values()
                .filter(same_key)
                .any(|r| (r.kind, r.to, r.currency, r.amount) != op.params()),
            "idempotency_in_progress" => applied.values().filter(same_key).any(|r| {
                r.kind == Kind::Transfer && (r.kind, r.to, r.currency, r.amount) == op.params()
            }),
            _ => false,
        };
        if !justified {
            return Err(fail(format!(
                "{op:?} was refused with {code}, which nothing explains"
            )));
        }
    }
    let applied: Vec<Receipt> = applied.into_values().collect();
    if !serial_order_exists(initial, &applied) {
        return Err(fail(
            "no serial order of the successful operations keeps every debit affordable",
        ));
    }
    // The final state: exactly the effects of the successes.
    let mut expected = State {
        balances: BTreeMap::new(),
        withdrawals: BTreeMap::new(),
    };
    let mut available = initial.clone();
    for r in &applied {
        apply_available(&mut available, r);
        if r.kind == Kind::Withdraw {
            expected
                .withdrawals
                .insert(r.tx, (r.currency, r.amount, true));
        }
    }
    let mut locked: BTreeMap<(Acct, usize), i128> = BTreeMap::new();
    for (tx, (currency, amount, _)) in &expected.withdrawals {
        *locked.entry((tx.0, *currency)).or_default() += amount;
    }
    let keys: BTreeSet<_> = available.keys().chain(locked.keys()).copied().collect();
    for key in keys {
        let entry = (
            available.get(&key).copied().unwrap_or(0),
            locked.get(&key).copied().unwrap_or(0),
        );
        if entry != (0, 0) {
            expected.balances.insert(key, entry);
        }
    }
    // As a caller observes it: finished withdrawals the history store
    // holds may have left memory (looked up by id instead).
    let exported = observed::observed(ledger)
        .await
        .map_err(|e| fail(format!("observing the accounts failed: {e}")))?;
    let state = state_of(&exported);
    if state != expected {
        return Err(fail(format!(
            "the final state is not the initial one plus the successes:\n  expected: {expected:?}\n  engine:   {state:?}"
        )));
    }
    let audit = ledger.audit().await.map_err(|e| fail(e.to_string()))?;
    if !audit.is_clean() {
        return Err(fail(format!("audit violations {:?}", audit.violations)));
    }
    Ok(state)
}

#[test]
fn concurrent_operations_are_explained_by_a_serial_order() {
    let rt = support::runtime();
    support::check(
        "concurrency",
        support::proptest_config(256, file!()),
        case(),
        |case| rt.block_on(run_case(case)),
    );
}
