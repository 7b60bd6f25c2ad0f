//! Payouts through the payment service: batching per currency, partial
//! failures, unknown outcomes and lost responses, crashes between the log
//! and the answer, and cancel racing a claim.
//!
//! Time is never waited for: payouts are driven by `run_payouts_now()`
//! (the interval tick is set far out) and the simulated bank answers with
//! zero latency, so these tests sleep nowhere.

use std::collections::{BTreeMap, HashMap};
use std::str::FromStr;

use burnledger::config::{PayoutMode, SharedPaymentService};
use burnledger::payment::{SimulatedBank, SimulatedBankConfig};
use burnledger::payouts::PayoutState;
use burnledger::{Config, Decimal, Ledger, LedgerError, TransactionId, WithdrawalStatus};

fn dec(s: &str) -> Decimal {
    Decimal::from_str(s).unwrap()
}

/// Batched payouts whose interval never fires during a test.
fn config_with(bank: &SimulatedBank) -> Config {
    Config {
        payout_mode: PayoutMode::Batched {
            interval_secs: 24 * 3600,
        },
        payment_service: Some(SharedPaymentService::new(bank.clone())),
        account_pending_withdrawals_max: 100,
        ..Config::for_tests()
    }
}

/// Funds `accounts` accounts in USD and BTC and requests one withdrawal of
/// each currency per account; returns (tx, currency, amount).
async fn request_withdrawals(ledger: &Ledger, accounts: u64) -> Vec<(TransactionId, &'static str, Decimal)> {
    let mut requested = Vec::new();
    for account in 0..accounts {
        ledger.deposit(account, "USD", dec("100"), None).await.unwrap();
        ledger.deposit(account, "BTC", dec("1"), None).await.unwrap();
        let usd = dec("10.25") + Decimal::from(account % 7);
        let w = ledger.request_withdrawal(account, "USD", usd, None).await.unwrap();
        requested.push((w.transaction_id, "USD", usd));
        let btc = dec("0.00012345");
        let w = ledger.request_withdrawal(account, "BTC", btc, None).await.unwrap();
        requested.push((w.transaction_id, "BTC", btc));
    }
    requested
}

/// Every withdrawal ended paid or failed, with the balance effect that
/// goes with it, and the bank paid each paid one exactly once and no
/// failed one at all.
async fn assert_settled_exactly(ledger: &Ledger, bank: &SimulatedBank, requested: &[(TransactionId, &str, Decimal)]) {
    let mut expected_total: HashMap<(u64, &str), Decimal> = HashMap::new();
    for (tx, currency, amount) in requested {
        let w = ledger.withdrawal(*tx).await.unwrap();
        let start = if *currency == "USD" { dec("100") } else { dec("1") };
        let total = expected_total.entry((tx.account(), currency)).or_insert(start);
        match w.status {
            WithdrawalStatus::Completed => {
                assert_eq!(bank.times_paid(*tx), 1, "{tx:?} completed, so paid exactly once");
                *total -= *amount;
            }
            WithdrawalStatus::Failed { .. } => {
                assert_eq!(bank.times_paid(*tx), 0, "{tx:?} failed, so never paid");
            }
            other => panic!("{tx:?} ended {other:?}"),
        }
    }
    for ((account, currency), total) in expected_total {
        let b = ledger.balance(account, currency).await.unwrap();
        assert_eq!((b.total, b.locked), (total, Decimal::ZERO), "account {account} {currency}");
    }
    let audit = ledger.audit().await.unwrap();
    assert!(audit.is_clean(), "{:?}", audit.violations);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn one_run_makes_one_submit_per_currency_per_chunk_and_settles_every_item() {
    let bank = SimulatedBank::new(SimulatedBankConfig {
        item_failure_per_mille: 200,
        max_items_per_payout: 40,
        seed: 7,
        ..SimulatedBankConfig::default()
    });
    let ledger = Ledger::open(config_with(&bank)).unwrap();
    let requested = request_withdrawals(&ledger, 100).await;
    let payouts = ledger.run_payouts_now().await.unwrap();
    // 100 USD items and 100 BTC items, at most 40 per call: 3 calls each.
    let calls = bank.submit_calls();
    let per_currency = |c: &str| calls.iter().filter(|(_, cur, _)| cur.as_str() == c).count();
    assert_eq!((per_currency("USD"), per_currency("BTC")), (3, 3), "{calls:?}");
    assert!(calls.iter().all(|(_, _, items)| *items <= 40));
    assert_eq!(payouts.len(), 6);
    assert!(payouts.iter().all(|p| p.state != PayoutState::Processing));
    let items: usize = payouts.iter().map(|p| p.items.len()).sum();
    assert_eq!(items, 200);
    assert_settled_exactly(&ledger, &bank, &requested).await;
    ledger.shutdown().await;
}
