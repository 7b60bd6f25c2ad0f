//! Random batches through `submit`, then a crash: the log must rebuild
//! exactly the state the live engine showed.
//!
//! The other properties mostly send one operation at a time. Inside one
//! batch, operations on different accounts run in parallel and a shard
//! hands its events to the log once per round, so the order events reach
//! the log is a batch-level matter: a deposit and a transfer of it to
//! another shard, in one batch, were once logged transfer first, and the
//! log no longer replayed. Here every case sends a few random batches of
//! deposits, withdrawal requests, completions, failures, cancels and
//! transfers over accounts on both shards, reads every balance and
//! withdrawal, drops the ledger without `shutdown` (so no final snapshot:
//! recovery replays the log), reopens it, and compares.

mod support;

use std::collections::BTreeMap;

use burnledger::{
    Balance, CurrencyCode, Decimal, Ledger, Operation, Outcome, TransactionId, Withdrawal,
    WithdrawalOutcome,
};
use proptest::prelude::*;
use support::{check, ledger_config, proptest_config, runtime};

/// Accounts 1–4: `shard_of` puts them on both of the test config's two
/// shards.
const ACCOUNTS: u64 = 4;

#[derive(Clone, Debug)]
enum Op {
    Deposit {
        account: u64,
        cents: i64,
    },
    Withdraw {
        account: u64,
        cents: i64,
    },
    /// Settle (complete, fail or cancel) the `pick`-th withdrawal known so
    /// far, if any.
    Settle {
        pick: usize,
        how: u8,
    },
    Transfer {
        from: u64,
        to: u64,
        cents: i64,
    },
}

fn op() -> impl Strategy<Value = Op> {
    let account = 1..=ACCOUNTS;
    let cents = 1i64..=500;
    prop_oneof![
        3 => (account.clone(), cents.clone()).prop_map(|(account, cents)| Op::Deposit { account, cents }),
        2 => (account.clone(), cents.clone()).prop_map(|(account, cents)| Op::Withdraw { account, cents }),
        2 => (any::<usize>(), 0u8..3).prop_map(|(pick, how)| Op::Settle { pick, how }),
        3 => (account.clone(), account, cents).prop_map(|(from, to, cents)| Op::Transfer { from, to, cents }),
    ]
}

fn usd() -> CurrencyCode {
    CurrencyCode::new("USD").expect("a currency code")
}

fn operation(op: &Op, withdrawals: &[TransactionId]) -> Option<Operation> {
    let amount = |cents: i64| Decimal::new(cents, 2);
    Some(match op {
        Op::Deposit { account, cents } => Operation::Deposit {
            account: *account,
            currency: usd(),
            amount: amount(*cents),
            idempotency_key: None,
            metadata: Default::default(),
        },
        Op::Withdraw { account, cents } => Operation::RequestWithdrawal {
            account: *account,
            currency: usd(),
            amount: amount(*cents),
            idempotency_key: None,
            options: Default::default(),
        },
        Op::Settle { pick, how } => {
            let transaction_id = *withdrawals.get(pick % withdrawals.len().max(1))?;
            match how {
                0 => Operation::CompleteWithdrawal {
                    transaction_id,
                    outcome: WithdrawalOutcome::Completed,
                },
                1 => Operation::CompleteWithdrawal {
                    transaction_id,
                    outcome: WithdrawalOutcome::Failed {
                        reason: "declined".into(),
                    },
                },
                _ => Operation::CancelWithdrawal { transaction_id },
            }
        }
        Op::Transfer { from, to, cents } if from != to => Operation::Transfer {
            from: *from,
            to: *to,
            currency: usd(),
            amount: amount(*cents),
            idempotency_key: None,
            metadata: Default::default(),
        },
        Op::Transfer { .. } => return None,
    })
}

/// Everything a reader can see: balances per account, withdrawals by id.
#[derive(Debug, PartialEq)]
struct Seen {
    balances: BTreeMap<u64, Vec<Balance>>,
    withdrawals: BTreeMap<TransactionId, Withdrawal>,
}

async fn look(ledger: &Ledger, withdrawals: &[TransactionId]) -> Result<Seen, TestCaseError> {
    let mut seen = Seen {
        balances: BTreeMap::new(),
        withdrawals: BTreeMap::new(),
    };
    for account in 1..=ACCOUNTS {
        let balances = ledger.balances(account).await;
        seen.balances.insert(
            account,
            balances.map_err(|e| TestCaseError::fail(e.to_string()))?,
        );
    }
    for &tx in withdrawals {
        let withdrawal = ledger.withdrawal(tx).await;
        seen.withdrawals.insert(
            tx,
            withdrawal.map_err(|e| TestCaseError::fail(e.to_string()))?,
        );
    }
    Ok(seen)
}

#[test]
fn random_batches_replay_from_the_log_to_exactly_the_state_they_left() {
    let runtime = runtime();
    let strategy = prop::collection::vec(prop::collection::vec(op(), 1..10), 1..6);
    check(
        "random batches replay to the state they left",
        proptest_config(64, file!()),
        strategy,
        |batches| {
            runtime.block_on(async {
                let dir = tempfile::tempdir().map_err(|e| TestCaseError::fail(e.to_string()))?;
                let open = || {
                    Ledger::open(ledger_config(dir.path(), 64, None))
                        .map_err(|e| TestCaseError::fail(e.to_string()))
                };
                let ledger = open()?;
                let mut withdrawals: Vec<TransactionId> = Vec::new();
                for batch in &batches {
                    let ops: Vec<Operation> = batch
                        .iter()
                        .filter_map(|op| operation(op, &withdrawals))
                        .collect();
                    // Refusals (insufficient funds, settled twice) are fine:
                    // this property is about what was accepted surviving.
                    for result in ledger.submit(ops).await {
                        if let Ok(Outcome::Withdrawal(w)) = result {
                            if !withdrawals.contains(&w.transaction_id) {
                                withdrawals.push(w.transaction_id);
                            }
                        }
                    }
                }
                let before = look(&ledger, &withdrawals).await?;
                drop(ledger);
                let reopened = open()?;
                let after = look(&reopened, &withdrawals).await?;
                prop_assert_eq!(&after, &before);
                let audit = reopened
                    .audit()
                    .await
                    .map_err(|e| TestCaseError::fail(e.to_string()))?;
                prop_assert!(audit.is_clean(), "{:?}", audit.violations);
                reopened.shutdown().await;
                Ok(())
            })
        },
    );
}
